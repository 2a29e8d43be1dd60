//! UDP datagrams in batches, for VXLAN uplinks: `recvmmsg(2)` into fixed buffers with
//! each sender's address, and `sendmmsg(2)` of a header and a body per datagram, each to
//! its own address. (rustix wraps `sendmmsg` but not `recvmmsg`; both live here so that
//! the address conversions are in one place.)

use rustix::fd::{AsRawFd, BorrowedFd};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Most datagrams one call moves.
pub const MAX_BATCH: usize = 64;

/// A socket address in the kernel's layout, made once per destination.
#[derive(Clone, Copy)]
pub enum SockAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl SockAddr {
    pub fn new(a: SocketAddr) -> SockAddr {
        match a {
            SocketAddr::V4(a) => SockAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => SockAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    /// A pointer to the address and its length, for a `msghdr`.
    fn raw(&self) -> (*const libc::c_void, libc::socklen_t) {
        match self {
            SockAddr::V4(a) => (
                (a as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            SockAddr::V6(a) => (
                (a as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
        }
    }
}

/// The IP address of a `sockaddr_storage` the kernel filled in (`None`: not IPv4 or
/// IPv6, or shorter than its family's layout).
fn ip_of(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<IpAddr> {
    let len = len as usize;
    match i32::from(s.ss_family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: a `sockaddr_storage` is large and aligned enough for every socket
            // address type; the family and length say the kernel wrote a `sockaddr_in`
            // there, and every bit pattern is a valid one (plain integers).
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes())))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            // A v4-mapped sender on a dual-stack socket is the IPv4 peer it is.
            Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4))
        }
        _ => None,
    }
}

/// Buffers for up to [`MAX_BATCH`] received datagrams of up to `cap` bytes each, and
/// what the last [`RecvBatch::recv`] put there.
pub struct RecvBatch {
    buf: Vec<u8>,
    cap: usize,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    names: Vec<libc::sockaddr_storage>,
    name_lens: Vec<libc::socklen_t>,
}

/// One received datagram.
pub struct Datagram<'a> {
    pub bytes: &'a [u8],
    /// The sender's IP, if the kernel gave one.
    pub from: Option<IpAddr>,
    /// It was longer than the buffer; `bytes` is its start.
    pub truncated: bool,
}

impl RecvBatch {
    pub fn new(cap: usize) -> RecvBatch {
        // SAFETY: all-zero is a valid `sockaddr_storage` (family 0, plain bytes).
        let zero: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        RecvBatch {
            // Zeroed pages are mapped lazily: what is never received costs nothing.
            buf: vec![0u8; cap * MAX_BATCH],
            cap,
            lens: vec![0; MAX_BATCH],
            truncated: vec![false; MAX_BATCH],
            names: vec![zero; MAX_BATCH],
            name_lens: vec![0; MAX_BATCH],
        }
    }

    /// Receives up to `max` (at most [`MAX_BATCH`]) datagrams waiting on `fd`, without
    /// blocking. Returns how many; 0 when none waits.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let n = max.min(MAX_BATCH);
        if n == 0 {
            return Ok(0);
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_BATCH];
        // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let base = self.buf.as_mut_ptr();
        for i in 0..n {
            iov[i] = libc::iovec {
                // SAFETY: `i * cap` is inside `buf`, which holds `MAX_BATCH * cap` bytes.
                iov_base: unsafe { base.add(i * self.cap) }.cast(),
                iov_len: self.cap,
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: each of the `n` headers names one iovec over its own `cap` bytes of
        // `buf` and a `sockaddr_storage` of the size given, all owned by `self` or this
        // frame and alive for the call; the kernel writes only there and into the
        // headers (lengths, flags). No timeout pointer.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let got = r as usize;
        for (i, h) in hdrs.iter().enumerate().take(got) {
            self.lens[i] = (h.msg_len as usize).min(self.cap);
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.name_lens[i] = h.msg_hdr.msg_namelen;
        }
        Ok(got)
    }

    /// Datagram `i` of the last `recv` (`i` below what it returned).
    pub fn datagram(&self, i: usize) -> Datagram<'_> {
        let at = i * self.cap;
        Datagram {
            bytes: &self.buf[at..at + self.lens[i]],
            from: ip_of(&self.names[i], self.name_lens[i]),
            truncated: self.truncated[i],
        }
    }
}

/// One datagram to send: `hdr` then `body`, to `to`.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub to: &'a SockAddr,
    pub hdr: &'a [u8],
    pub body: &'a [u8],
}

/// Sends `msgs` (at most [`MAX_BATCH`]) on `fd` with one `sendmmsg`, without blocking.
/// Returns how many the kernel took, counting from the first; an error means the first
/// was refused (the caller counts it and goes on from the next).
pub fn send_batch(fd: BorrowedFd<'_>, msgs: &[Outgoing<'_>]) -> io::Result<usize> {
    let n = msgs.len().min(MAX_BATCH);
    if n == 0 {
        return Ok(0);
    }
    let mut iov = [[libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2]; MAX_BATCH];
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    for (i, m) in msgs.iter().take(n).enumerate() {
        iov[i] = [
            libc::iovec {
                iov_base: m.hdr.as_ptr() as *mut libc::c_void,
                iov_len: m.hdr.len(),
            },
            libc::iovec {
                iov_base: m.body.as_ptr() as *mut libc::c_void,
                iov_len: m.body.len(),
            },
        ];
        let (name, len) = m.to.raw();
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = name as *mut libc::c_void;
        h.msg_namelen = len;
        h.msg_iov = iov[i].as_mut_ptr();
        h.msg_iovlen = 2;
    }
    // SAFETY: each of the `n` headers names two iovecs over live slices of `msgs` and a
    // socket address of the length given, all borrowed for the call; the kernel only
    // reads them (and writes `msg_len` into the headers, which this frame owns).
    let r = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;
    use std::net::UdpSocket;

    #[test]
    fn datagrams_go_out_in_one_call_and_come_back_with_their_senders() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = SockAddr::new(rx.local_addr().unwrap());
        let bodies: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let msgs: Vec<Outgoing<'_>> = bodies
            .iter()
            .map(|b| Outgoing {
                to: &to,
                hdr: &[0xaa, 0xbb],
                body: b,
            })
            .collect();
        assert_eq!(send_batch(tx.as_fd(), &msgs).unwrap(), 5);
        let mut batch = RecvBatch::new(12);
        let mut got = 0;
        for _ in 0..100 {
            got += batch.recv(rx.as_fd(), 2).unwrap();
            if got > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, 2, "no more than asked for");
        let d = batch.datagram(0);
        assert_eq!(d.bytes, [&[0xaa, 0xbb][..], &[0u8; 10]].concat());
        assert_eq!(d.from, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!d.truncated);
        let d = batch.datagram(1);
        assert_eq!(d.bytes.len(), 12, "13 bytes into 12: cut, and said so");
        assert!(d.truncated);
        assert_eq!(batch.recv(rx.as_fd(), 64).unwrap(), 3);
        assert_eq!(batch.recv(rx.as_fd(), 64).unwrap(), 0, "nothing waits");
    }
}
