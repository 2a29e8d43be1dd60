//! The few system calls rustix does not wrap: creating a TAP device and binding an
//! AF_PACKET socket to an interface. Each `unsafe` block passes plain-old-data structs
//! that live across the call.

use rustix::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::io;
use vale_abi::Frag;

/// Most fragments one packet may have (netmap's limit), and a header in front.
pub const MAX_IOV: usize = 65;

/// Writes one packet, `hdr` (private bytes, may be empty) then fragments in the
/// switch's port buffers, to `fd` with one `writev`: the egress of direct (host) ports,
/// no copy in valed.
pub fn write_frags(fd: BorrowedFd<'_>, hdr: &[u8], frags: &[Frag<'_>]) -> io::Result<usize> {
    let parts = frags.len() + usize::from(!hdr.is_empty());
    if parts == 0 || parts > MAX_IOV {
        return Err(io::Error::other("packet with no or too many fragments"));
    }
    // SAFETY: iovec is plain old data; all-zero is valid.
    let mut iov: [libc::iovec; MAX_IOV] = unsafe { std::mem::zeroed() };
    let head = (!hdr.is_empty()).then_some((hdr.as_ptr(), hdr.len()));
    let all = head.into_iter().chain(frags.iter().map(Frag::raw_parts));
    for (e, (p, n)) in iov.iter_mut().zip(all) {
        *e = libc::iovec {
            iov_base: p as *mut libc::c_void,
            iov_len: n,
        };
    }
    // SAFETY: `hdr` is a live private slice; each `Frag` is valid for reads of its
    // length while its borrow lasts, which covers this call (the invariant `Frag` owes
    // to `vale_abi::Bufs::frag`). The kernel only reads the iovecs, and copies each byte
    // once: a client rewriting its buffer meanwhile changes only its own packet.
    let r = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), parts as libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Runs `f` on a packet given as fragments in a port's buffers, as byte slices (at most
/// 64, the engine's limit; callers check): for the vhost-user copy into guest memory,
/// whose writer (virtio-queue's `Writer`) takes `&[u8]`.
///
/// A named exception to vale-abi's rule "no `&[u8]` into memory another process writes"
/// (`vale_abi::ring`'s module doc): the sending client may rewrite these bytes while
/// `f` runs. Tearing is harmless here because `f` only copies the bytes into the guest's
/// buffers once, and whatever it decides on (the virtio-net header) it copies out first
/// and decides on the copy: a torn read changes only the sender's own packet.
pub fn with_slices<R>(frags: &[Frag<'_>], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let mut s: [&[u8]; 64] = [&[]; 64];
    let n = frags.len().min(64);
    for (d, frag) in s.iter_mut().zip(frags) {
        let (p, len) = frag.raw_parts();
        // SAFETY: `p` is valid for reads of `len` bytes while the fragment's borrow lasts
        // (`Frag`'s invariant), and the slices do not outlive `f`, which runs within it.
        // That the bytes may change underneath is the exception documented above.
        *d = unsafe { std::slice::from_raw_parts(p, len) };
    }
    f(&s[..n])
}

/// A non-blocking unix socket of `kind` bound to `path`. A stale socket file there is
/// replaced; any other kind of file is an error (valed never deletes what it did not
/// make).
fn bound_unix(path: &str, kind: rustix::net::SocketType) -> io::Result<OwnedFd> {
    let p = std::path::Path::new(path);
    if let Ok(m) = std::fs::symlink_metadata(p) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(io::Error::other(format!(
                "{path} exists and is not a socket"
            )));
        }
        std::fs::remove_file(p)?;
    }
    let fd = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        kind,
        rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &rustix::net::SocketAddrUnix::new(p)?)?;
    Ok(fd)
}

/// A unix datagram socket bound to `path` (see `bound_unix`).
pub fn dgram_bind(path: &str) -> io::Result<OwnedFd> {
    bound_unix(path, rustix::net::SocketType::DGRAM)
}

/// A unix stream socket listening at `path` (see `bound_unix`).
pub fn stream_listen(path: &str) -> io::Result<OwnedFd> {
    let fd = bound_unix(path, rustix::net::SocketType::STREAM)?;
    rustix::net::listen(&fd, 4)?;
    Ok(fd)
}

/// A unix stream socket connected to `path`, then made non-blocking.
pub fn stream_connect(path: &str) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&fd, &rustix::net::SocketAddrUnix::new(path)?)?;
    rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK)?;
    Ok(fd)
}

/// Whether descriptor `fd` (owned by the caller, open for the call) becomes readable
/// within `ms` milliseconds.
pub fn readable_within(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; poll only reads `fd`'s state.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// Interface names: what the kernel accepts (`dev_valid_name`), at most 15 bytes.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(format!(
            "interface name `{}` must be 1 to {} characters",
            name.escape_default(),
            libc::IFNAMSIZ - 1
        ));
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b <= b' ' || b >= 0x7f)
    {
        return Err(format!(
            "interface name `{}` may not be . or .. nor contain '/', ':', spaces or control characters",
            name.escape_default()
        ));
    }
    Ok(())
}

/// The interface's index in the daemon's network namespace, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn ifreq(name: &str, flags: libc::c_short) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r.ifr_ifru.ifru_flags = flags;
    r
}

/// Bytes of virtio-net header on TAP devices (`struct virtio_net_hdr_mrg_rxbuf`).
pub const TAP_VNET_HDR: u16 = 12;
/// Bytes of virtio-net header on packet sockets (`struct virtio_net_hdr`).
pub const PACKET_VNET_HDR_LEN: u16 = 10;
const PACKET_VNET_HDR: libc::c_int = 15;

/// Creates TAP interface `name`, non-blocking, with a 12-byte virtio-net header on every
/// frame and checksum/TSO offloads on, so TCP hands us (and takes from us) 64 KiB
/// super-frames instead of MTU-sized segments. The interface lives as long as the
/// returned descriptor: it is not made persistent in the kernel, so it goes away with
/// the daemon.
pub fn tap_create(name: &str) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        "/dev/net/tun",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    let mut r = ifreq(
        name,
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
    );
    // TUNSETIFF refuses an existing interface of another kind; for an existing TAP it
    // would attach to it, so the caller checks existence first.
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `r` is.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut r) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let hdr = TAP_VNET_HDR as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ as _, &hdr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes the flags as the argument value itself.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            offloads as libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// An AF_PACKET socket bound to interface `ifindex`, receiving every frame that arrives
/// on it (promiscuous, not the ones we send), non-blocking, with a 10-byte virtio-net
/// header in front of each frame (`PACKET_VNET_HDR`).
pub fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            proto as libc::c_int,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = ifindex as i32;
    // SAFETY: `sa` is a sockaddr_ll of the length passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex as i32,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    setsockopt(&fd, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
    // A 10-byte virtio-net header on every frame: GSO super-frames (veth, GRO) come with
    // their segmentation request instead of as over-long frames, and go out the same way.
    setsockopt(&fd, PACKET_VNET_HDR, &1i32)?;
    setsockopt(&fd, libc::PACKET_IGNORE_OUTGOING, &1i32)?;
    // Room for a burst of super-frames queued on the socket (those larger than a receive
    // ring slot): 4 MiB, past rmem_max when valed may (root).
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `size` is a c_int of the size passed, alive for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if rc == 0 {
            break;
        }
    }
    Ok(fd)
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    setsockopt_at(fd, libc::SOL_PACKET, opt, v)
}

/// setsockopt(2) of a plain value at `level` (AF_PACKET here, AF_XDP in `xsk`).
pub fn setsockopt_at<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` points to a `T` of the size passed, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// PACKET_MMAP (TPACKET_V2), kernel ABI (linux/if_packet.h).
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_COPY_THRESH: libc::c_int = 7;
const PACKET_VERSION: libc::c_int = 10;
const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_COPY: u32 = 1 << 1;

#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

/// What the next frame of a [`PacketRing`] holds.
pub enum RingFrame<'a> {
    /// Nothing has arrived.
    Empty,
    /// A frame: its 10-byte virtio-net header, then the Ethernet frame.
    Frame(&'a [u8]),
    /// A frame too large for a ring slot (a GSO super-frame): the kernel queued it whole
    /// on the socket instead; read it with `recv`.
    Queued,
    /// A frame the kernel could neither fit nor queue (the socket buffer was full).
    Truncated,
}

/// A TPACKET_V2 receive ring on an AF_PACKET socket: frames arrive in shared memory
/// with a per-frame status word, so a burst is read without a system call per frame
/// (and, unlike TPACKET_V3's blocks, each frame is handed over at once: no retire
/// timer). Frames larger than a slot (GSO super-frames) are queued whole on the socket
/// (`PACKET_COPY_THRESH`) and flagged in the ring.
pub struct PacketRing {
    base: *mut u8,
    len: usize,
    frame_size: usize,
    frame_nr: usize,
    next: usize,
}

// SAFETY: the mapping belongs to this value alone (one forwarding thread uses it).
unsafe impl Send for PacketRing {}

impl PacketRing {
    /// Sets up a ring of `frame_nr` slots of `frame_size` bytes (a multiple of 16 that
    /// divides the page size) on packet socket `fd` (which already has
    /// `PACKET_VNET_HDR`) and maps it.
    pub fn new(fd: &OwnedFd, frame_size: usize, frame_nr: usize) -> io::Result<PacketRing> {
        setsockopt(fd, PACKET_VERSION, &TPACKET_V2)?;
        setsockopt(fd, PACKET_COPY_THRESH, &1i32)?;
        let page = 4096usize;
        let req = TpacketReq {
            block_size: page as u32,
            block_nr: (frame_nr * frame_size / page) as u32,
            frame_size: frame_size as u32,
            frame_nr: frame_nr as u32,
        };
        setsockopt(fd, PACKET_RX_RING, &req)?;
        let len = frame_nr * frame_size;
        // SAFETY: maps the ring the kernel just allocated for this socket; the result is
        // checked, and unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketRing {
            base: base.cast(),
            len,
            frame_size,
            frame_nr,
            next: 0,
        })
    }

    fn status(&self, i: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: slot `i` < frame_nr starts inside the mapping, 16-byte aligned; its
        // first word is the status the kernel and we hand the slot over with.
        unsafe { &*(self.base.add(i * self.frame_size) as *const std::sync::atomic::AtomicU32) }
    }

    /// Looks at the next slot and hands what it holds to `f`; the slot goes back to the
    /// kernel afterwards. Returns false if nothing had arrived.
    pub fn take(&mut self, f: impl FnOnce(RingFrame<'_>)) -> bool {
        use std::sync::atomic::Ordering;
        let st = self.status(self.next).load(Ordering::Acquire);
        if st & TP_STATUS_USER == 0 {
            f(RingFrame::Empty);
            return false;
        }
        // SAFETY: the slot is ours until its status goes back to KERNEL; tpacket2_hdr
        // is tp_status, tp_len, tp_snaplen (u32), tp_mac (u16) ...
        let slot = unsafe {
            std::slice::from_raw_parts(self.base.add(self.next * self.frame_size), self.frame_size)
        };
        let u32_at =
            |o: usize| u32::from_ne_bytes([slot[o], slot[o + 1], slot[o + 2], slot[o + 3]]);
        let (len, snap) = (u32_at(4) as usize, u32_at(8) as usize);
        let mac = u16::from_ne_bytes([slot[12], slot[13]]) as usize;
        let hdr = PACKET_VNET_HDR_LEN as usize;
        if st & TP_STATUS_COPY != 0 {
            f(RingFrame::Queued);
        } else if snap < len || mac < hdr || mac + snap > self.frame_size {
            f(RingFrame::Truncated);
        } else {
            f(RingFrame::Frame(&slot[mac - hdr..mac + snap]));
        }
        self.status(self.next)
            .store(TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.frame_nr;
        true
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing uses any more.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(check_ifname("vi0").is_ok());
        assert!(check_ifname("a-b_c.d").is_ok());
        for bad in ["", "0123456789abcdef", "a/b", "a:b", "a b", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }
}
