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

    /// The same family, address and port (and IPv6 flow and scope).
    pub fn same(&self, o: &SockAddr) -> bool {
        match (self, o) {
            (SockAddr::V4(a), SockAddr::V4(b)) => {
                a.sin_port == b.sin_port && a.sin_addr.s_addr == b.sin_addr.s_addr
            }
            (SockAddr::V6(a), SockAddr::V6(b)) => {
                a.sin6_port == b.sin6_port
                    && a.sin6_addr.s6_addr == b.sin6_addr.s6_addr
                    && a.sin6_flowinfo == b.sin6_flowinfo
                    && a.sin6_scope_id == b.sin6_scope_id
            }
            _ => false,
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

/// Most bytes one read returns with `UDP_GRO`: a coalesced train is one IP packet.
const GRO_CAP: usize = 65536;
/// Control bytes per message: one `cmsghdr` with an `int` (`UDP_GRO`), aligned.
const CMSG_WORDS: usize = 4;

/// Buffers for up to [`MAX_BATCH`] received messages, and the datagrams the last
/// [`RecvBatch::recv`] put there, handed out one by one ([`RecvBatch::next`]): with
/// `UDP_GRO` on (see [`RecvBatch::enable_gro`]) one message may be a train of datagrams
/// the kernel coalesced, split here by the size it gives.
pub struct RecvBatch {
    buf: Vec<u8>,
    /// Largest datagram taken whole; longer ones are handed out as `truncated`.
    cap: usize,
    /// Bytes of `buf` per message: `cap`, or [`GRO_CAP`] with GRO.
    stride: usize,
    gro: bool,
    lens: Vec<usize>,
    truncated: Vec<bool>,
    /// The segment size of each message (0: one datagram).
    seg: Vec<usize>,
    names: Vec<libc::sockaddr_storage>,
    name_lens: Vec<libc::socklen_t>,
    ctl: Vec<[u64; CMSG_WORDS]>,
    /// Messages of the last read, and the next datagram: message and offset in it.
    got: usize,
    at: (usize, usize),
    /// Messages that came as a coalesced train, and the datagrams in them.
    pub trains: u64,
    pub train_datagrams: u64,
}

/// One received datagram.
pub struct Datagram<'a> {
    pub bytes: &'a [u8],
    /// The sender's IP, if the kernel gave one.
    pub from: Option<IpAddr>,
    /// It was longer than the buffer; `bytes` is its start.
    pub truncated: bool,
}

/// The `UDP_GRO` segment size in a received message's control data, if any.
fn gro_size(h: &libc::msghdr) -> Option<usize> {
    // SAFETY: `h` is a header the kernel filled in, whose `msg_control` (and
    // `msg_controllen`, which the kernel set to what it wrote) describes a buffer this
    // process owns; the CMSG_* macros walk only inside it, and the data of a
    // (SOL_UDP, UDP_GRO) message is an `int`, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP
                && (*c).cmsg_type == libc::UDP_GRO
                && (*c).cmsg_len as usize >= libc::CMSG_LEN(4) as usize
            {
                let v = core::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

impl RecvBatch {
    pub fn new(cap: usize) -> RecvBatch {
        // SAFETY: all-zero is a valid `sockaddr_storage` (family 0, plain bytes).
        let zero: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        RecvBatch {
            // Zeroed pages are mapped lazily: what is never received costs nothing.
            buf: vec![0u8; cap * MAX_BATCH],
            cap,
            stride: cap,
            gro: false,
            lens: vec![0; MAX_BATCH],
            truncated: vec![false; MAX_BATCH],
            seg: vec![0; MAX_BATCH],
            names: vec![zero; MAX_BATCH],
            name_lens: vec![0; MAX_BATCH],
            ctl: vec![[0; CMSG_WORDS]; MAX_BATCH],
            got: 0,
            at: (0, 0),
            trains: 0,
            train_datagrams: 0,
        }
    }

    /// Asks the kernel for coalesced trains (`UDP_GRO`, Linux 5.0) on `fd`, whose reads
    /// this batch makes; each message gets room for a whole train. False (and nothing
    /// changed) where the kernel refuses: datagrams then come one per message.
    pub fn enable_gro(&mut self, fd: BorrowedFd<'_>) -> bool {
        if set_int(fd, libc::UDP_GRO, 1).is_err() {
            return false;
        }
        self.gro = true;
        self.stride = GRO_CAP.max(self.cap);
        self.buf = vec![0u8; self.stride * MAX_BATCH];
        true
    }

    /// Datagrams of the last read not yet handed out (at least this many: a message not
    /// yet reached counts as one).
    pub fn pending(&self) -> usize {
        self.got - self.at.0.min(self.got)
    }

    /// Receives up to `max` (at most [`MAX_BATCH`]) messages waiting on `fd`, without
    /// blocking, once the last read's datagrams are all handed out (else it reads
    /// nothing). Returns how many messages; 0 when none waits.
    pub fn recv(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let n = max.min(MAX_BATCH);
        if n == 0 || self.pending() > 0 {
            return Ok(0);
        }
        self.got = 0;
        self.at = (0, 0);
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_BATCH];
        // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let base = self.buf.as_mut_ptr();
        for i in 0..n {
            iov[i] = libc::iovec {
                // SAFETY: `i * stride` is inside `buf`, which holds `MAX_BATCH * stride`
                // bytes.
                iov_base: unsafe { base.add(i * self.stride) }.cast(),
                iov_len: self.stride,
            };
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
            if self.gro {
                h.msg_control = self.ctl[i].as_mut_ptr().cast();
                h.msg_controllen = std::mem::size_of::<[u64; CMSG_WORDS]>() as _;
            }
        }
        // SAFETY: each of the `n` headers names one iovec over its own `stride` bytes of
        // `buf`, a `sockaddr_storage` of the size given and (with GRO) its own control
        // buffer, all owned by `self` or this frame and alive for the call; the kernel
        // writes only there and into the headers (lengths, flags). No timeout pointer.
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
            let len = (h.msg_len as usize).min(self.stride);
            self.lens[i] = len;
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.name_lens[i] = h.msg_hdr.msg_namelen;
            // A train: segments of this size, the last one shorter or equal. A size of
            // 0, or not smaller than the message, is one datagram.
            let seg = if self.gro {
                gro_size(&h.msg_hdr).unwrap_or(0)
            } else {
                0
            };
            self.seg[i] = if seg > 0 && seg < len { seg } else { 0 };
            if self.seg[i] > 0 {
                self.trains += 1;
                self.train_datagrams += len.div_ceil(seg) as u64;
            }
        }
        self.got = got;
        Ok(got)
    }

    /// The next datagram of the last read, if any is left.
    pub fn next(&mut self) -> Option<Datagram<'_>> {
        let (i, off) = self.at;
        if i >= self.got {
            return None;
        }
        let len = self.lens[i];
        let one = match self.seg[i] {
            0 => len,
            s => s.min(len - off),
        };
        self.at = if off + one >= len {
            (i + 1, 0)
        } else {
            (i, off + one)
        };
        let at = i * self.stride + off;
        let whole = one.min(self.cap);
        Some(Datagram {
            bytes: &self.buf[at..at + whole],
            from: ip_of(&self.names[i], self.name_lens[i]),
            truncated: self.truncated[i] || one > self.cap,
        })
    }
}

/// Sets an integer `SOL_UDP` option.
fn set_int(fd: BorrowedFd<'_>, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: `v` is an `int` that lives for the call, with its size given; the kernel
    // only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_UDP,
            opt,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether the kernel segments UDP datagrams for `fd` (`UDP_SEGMENT`, Linux 4.18): asked
/// once, as the option's current value.
pub fn gso_supported(fd: BorrowedFd<'_>) -> bool {
    let mut v: libc::c_int = 0;
    // SAFETY: UDP_SEGMENT gives an int.
    unsafe { super::getsockopt_at(fd, libc::SOL_UDP, libc::UDP_SEGMENT, &mut v) }.is_ok()
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
    let ones = [1u8; MAX_BATCH];
    send_runs(fd, msgs, &ones[..msgs.len().min(MAX_BATCH)])
}

/// Most datagrams in one train: the kernel's `UDP_MAX_SEGMENTS` (64 before Linux 6.9).
pub const MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one train: one IP packet's (65535 less the IP and UDP
/// headers), kept a little under for IPv6.
pub const MAX_TRAIN: usize = 65000;

/// Sends `msgs` (at most [`MAX_BATCH`]) on `fd` with one `sendmmsg`, without blocking,
/// in runs: each of `runs` says how many consecutive messages make one entry. A run of
/// one is a plain datagram; a longer one is a train the kernel cuts into its datagrams
/// (`UDP_SEGMENT` with the size of the first), so its messages must share `to`, be all
/// as long as the first but the last (which may be shorter), and stay within
/// [`MAX_SEGMENTS`] and [`MAX_TRAIN`]. Returns how many runs the kernel took, counting
/// from the first; an error means the first run was refused, all of it.
pub fn send_runs(fd: BorrowedFd<'_>, msgs: &[Outgoing<'_>], runs: &[u8]) -> io::Result<usize> {
    let mut iov = [[libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2]; MAX_BATCH];
    // SAFETY: all-zero is a valid `mmsghdr` (null pointers, zero lengths).
    let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
    let mut ctl = [[0u64; CMSG_WORDS]; MAX_BATCH];
    let n = msgs.len().min(MAX_BATCH);
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
    }
    // One pointer for every entry's iovecs, made once the array is filled.
    let iov_base = iov.as_mut_ptr();
    let (mut at, mut entries) = (0usize, 0usize);
    for &k in runs {
        let k = usize::from(k);
        if k == 0 || at + k > n {
            break;
        }
        let first = &msgs[at];
        let (name, len) = first.to.raw();
        let h = &mut hdrs[entries].msg_hdr;
        h.msg_name = name as *mut libc::c_void;
        h.msg_namelen = len;
        // The run's iovecs are consecutive: two per message, taken from the whole array
        // (the kernel reads 2k of them).
        // SAFETY: at < n <= MAX_BATCH: the offset stays inside `iov`, whose 2 * MAX_BATCH
        // iovecs are contiguous, and at + k <= n keeps the 2k read inside it too.
        h.msg_iov = unsafe { iov_base.add(at) }.cast::<libc::iovec>();
        h.msg_iovlen = 2 * k;
        if k > 1 {
            let seg = (first.hdr.len() + first.body.len()) as u16;
            let c = &mut ctl[entries];
            h.msg_control = c.as_mut_ptr().cast();
            // SAFETY: `c` is this entry's own buffer of CMSG_WORDS words, at least
            // CMSG_SPACE(2) bytes and aligned for a `cmsghdr`; FIRSTHDR of a header whose
            // control buffer is that large is non-null and points at its start, and the
            // data (a `u16`) lies inside it.
            unsafe {
                h.msg_controllen = libc::CMSG_SPACE(2) as _;
                let cm = libc::CMSG_FIRSTHDR(h);
                (*cm).cmsg_level = libc::SOL_UDP;
                (*cm).cmsg_type = libc::UDP_SEGMENT;
                (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                core::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), seg);
            }
        }
        at += k;
        entries += 1;
    }
    if entries == 0 {
        return Ok(0);
    }
    // SAFETY: each of the `entries` headers names its run's iovecs over live slices of
    // `msgs`, a socket address of the length given and (for a train) its own control
    // buffer, all borrowed or owned by this frame for the call; the kernel only reads
    // them (and writes `msg_len` into the headers, which this frame owns).
    let r = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            hdrs.as_mut_ptr(),
            entries as libc::c_uint,
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

    /// Receives into `batch` until something comes (a second at most).
    fn wait_recv(batch: &mut RecvBatch, rx: &UdpSocket, max: usize) -> usize {
        for _ in 0..200 {
            let n = batch.recv(rx.as_fd(), max).unwrap();
            if n > 0 {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        0
    }

    /// Every datagram the batch holds now: (bytes, truncated).
    fn drain(batch: &mut RecvBatch) -> Vec<(Vec<u8>, bool)> {
        std::iter::from_fn(|| batch.next().map(|d| (d.bytes.to_vec(), d.truncated))).collect()
    }

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
        assert_eq!(batch.pending(), 2);
        let d = batch.next().unwrap();
        assert_eq!(d.bytes, [&[0xaa, 0xbb][..], &[0u8; 10]].concat());
        assert_eq!(d.from, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(!d.truncated);
        assert_eq!(
            batch.recv(rx.as_fd(), 64).unwrap(),
            0,
            "one is left: no read"
        );
        let d = batch.next().unwrap();
        assert_eq!(d.bytes.len(), 12, "13 bytes into 12: cut, and said so");
        assert!(d.truncated);
        assert!(batch.next().is_none());
        assert_eq!(batch.recv(rx.as_fd(), 64).unwrap(), 3);
        assert_eq!(drain(&mut batch).len(), 3);
        assert_eq!(batch.recv(rx.as_fd(), 64).unwrap(), 0, "nothing waits");
    }

    /// A train of four (three of 100 bytes and one of 30) in one entry: a receiver
    /// without GRO gets four datagrams; one with GRO one read, split back into the four;
    /// beside it a plain datagram and a train of two to another receiver.
    #[test]
    fn trains_go_out_in_one_entry_and_come_back_split() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        if !gso_supported(tx.as_fd()) {
            eprintln!("SKIP: this kernel has no UDP_SEGMENT");
            return;
        }
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gro = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut gb = RecvBatch::new(100);
        assert!(gb.enable_gro(gro.as_fd()), "UDP_GRO (Linux 5.0)");
        let (to_plain, to_gro) = (
            SockAddr::new(plain.local_addr().unwrap()),
            SockAddr::new(gro.local_addr().unwrap()),
        );
        let bodies: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 98]).collect();
        let short = vec![9u8; 28];
        let msg = |to, body| Outgoing {
            to,
            hdr: &[0xaa, 0xbb],
            body,
        };
        let mut msgs: Vec<Outgoing<'_>> = Vec::new();
        for to in [&to_plain, &to_gro] {
            msgs.extend(bodies[..3].iter().map(|b| msg(to, &b[..])));
            msgs.push(msg(to, &short[..]));
        }
        msgs.push(msg(&to_gro, &bodies[3][..]));
        msgs.push(msg(&to_gro, &bodies[0][..]));
        msgs.push(msg(&to_gro, &bodies[1][..]));
        assert_eq!(send_runs(tx.as_fd(), &msgs, &[4, 4, 1, 2]).unwrap(), 4);
        let want = |b: &[u8]| ([&[0xaa, 0xbb][..], b].concat(), false);
        let mut pb = RecvBatch::new(100);
        let mut got = Vec::new();
        for _ in 0..4 {
            if wait_recv(&mut pb, &plain, 64) == 0 {
                break;
            }
            got.extend(drain(&mut pb));
        }
        let four: Vec<_> = [&bodies[0], &bodies[1], &bodies[2], &short]
            .iter()
            .map(|b| want(b))
            .collect();
        assert_eq!(
            got, four,
            "the kernel cut the train for a reader without GRO"
        );
        assert_eq!(pb.trains, 0);
        let mut got = Vec::new();
        let mut reads = 0;
        while got.len() < 7 && wait_recv(&mut gb, &gro, 64) > 0 {
            reads += 1;
            got.extend(drain(&mut gb));
        }
        let mut all = four.clone();
        all.extend([&bodies[3], &bodies[0], &bodies[1]].iter().map(|b| want(b)));
        assert_eq!(got, all, "split back as they were sent");
        assert!(
            gb.trains >= 1,
            "at least one coalesced read ({reads} reads)"
        );
    }

    /// A coalesced read is split only by the size the kernel gives, and a datagram over
    /// the batch's size in it is handed out cut and marked, the rest whole.
    #[test]
    fn a_train_of_datagrams_too_long_is_marked_and_the_rest_kept() {
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gro = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut gb = RecvBatch::new(64);
        if !gso_supported(tx.as_fd()) || !gb.enable_gro(gro.as_fd()) {
            eprintln!("SKIP: this kernel has no UDP_SEGMENT or UDP_GRO");
            return;
        }
        let to = SockAddr::new(gro.local_addr().unwrap());
        let big = vec![7u8; 98];
        let tail = vec![8u8; 10];
        let msgs = [
            Outgoing {
                to: &to,
                hdr: &[1, 2],
                body: &big,
            },
            Outgoing {
                to: &to,
                hdr: &[1, 2],
                body: &tail,
            },
        ];
        assert_eq!(send_runs(tx.as_fd(), &msgs, &[2]).unwrap(), 1);
        assert_eq!(wait_recv(&mut gb, &gro, 64), 1);
        let got = drain(&mut gb);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0.len(), 64, "100 bytes, cut to the batch's 64");
        assert!(got[0].1, "and marked");
        assert_eq!(got[1], ([&[1u8, 2][..], &tail[..]].concat(), false));
    }
}
