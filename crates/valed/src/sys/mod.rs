//! All of valed's `unsafe`: the system calls rustix does not wrap, and the memory valed
//! shares with the kernel. Here: `Mmap`, the one mapping type, and `setsockopt_at`.
//!
//! - `tun`: TAP devices (the TUN ioctls);
//! - `packet`: AF_PACKET sockets (`sockaddr_ll`, `PACKET_*` options), `recvmsg` with
//!   `PACKET_AUXDATA` (the VLAN tag the kernel took out of a frame), the
//!   TPACKET_V2 receive ring and the socket's drop count (`PACKET_STATISTICS`);
//! - `xdp`: AF_XDP sockets, their UMEM and rings;
//! - `bpf`: bpf(2) commands and the XDP program;
//! - `iov`: a packet's fragments to `writev` or to byte slices;
//! - `unix`: unix sockets, and interface names and indices;
//! - `peer`: memory another process shares and may write at any time (memif regions);
//! - `udp`: `recvmmsg`/`sendmmsg` batches of UDP datagrams (VXLAN uplinks);
//! - `sigbus`: vhost-user guest memory a frontend may truncate, its SIGBUS caught;
//! - `guest`: vhost-user guest memory, its regions translated once, touched by
//!   bounds-checked atomics and copies.
//!
//! rustix does the rest: the sockets themselves, AF_XDP's options and address, poll,
//! mmap, the receive buffer, interface indices. Every `unsafe` block names the
//! invariant it relies on and where that is established; a function whose caller must
//! uphold something is an `unsafe fn` with a `# Safety` section.

use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd};
use rustix::mm::{MapFlags, ProtFlags};
use std::io;

pub mod bounded;
pub mod bpf;
pub mod closer;
pub mod guest;
mod iov;
mod packet;
pub mod peer;
pub mod sigbus;
mod tun;
pub mod udp;
mod unix;
pub mod xdp;

pub use iov::{with_slices, write_frags};
pub use packet::{
    PACKET_VNET_HDR_LEN, PacketRing, RingFrame, packet_drops, packet_socket, recv_frame,
};
pub use tun::{MAX_TAP_QUEUES, TAP_VNET_HDR, tap_create};
pub use unix::{
    check_ifname, dgram_bind, if_index, peer_cred, peer_groups, readable_within,
    remove_socket_file, seqpacket_listen, stream_connect, stream_connect_blocking, stream_listen,
};

/// setsockopt(2) of `v` as option `opt` at `level`, for the options rustix does not
/// wrap (AF_PACKET's).
///
/// # Safety
///
/// Option `opt` must take its value by value, as a `T`: the kernel reads
/// `size_of::<T>()` bytes at `v` and keeps nothing that points back into this process.
/// An option whose value names memory the kernel then reads or writes (XDP_UMEM_REG's
/// frames, for one) needs its own wrapper that says what that memory must do.
pub unsafe fn setsockopt_at<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` is a live `T` of the size passed, read during the call only; the
    // kernel follows nothing inside it (this function's contract).
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

/// getsockopt(2) of option `opt` at `level` into `v`, for the options rustix does not
/// wrap (or wraps in a type that cannot hold every value the kernel gives): the bytes
/// the kernel wrote (it cuts its copy to `size_of::<T>()`).
///
/// # Safety
///
/// Option `opt` must give its value as a `T` (or a prefix of one), every bit pattern of
/// which is a valid `T`: the kernel writes at most `size_of::<T>()` bytes at `v`.
pub unsafe fn getsockopt_at<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    v: &mut T,
) -> io::Result<usize> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a live `T` of the size passed, written during the call only, and
    // any bytes the kernel writes make a valid `T` (this function's contract).
    let rc =
        unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, (v as *mut T).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

/// Closes descriptor number `fd`, which a library was handed as a raw number and
/// leaves open for ever (vhost-user-backend's worker exit eventfds), once whatever used
/// it is gone. The caller owns the number: nothing else closes it.
pub fn close_abandoned(fd: i32) {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller's contract: an open descriptor that nothing else will close
    // or use from now on, so taking ownership of it here is sound.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

/// Reads an eventfd that another process shares (a peer's notification descriptor)
/// without ever blocking: `O_NONBLOCK` is the file's, which the peer may clear at any
/// time, so the read asks for no waiting itself (`RWF_NOWAIT`, which current kernels
/// honour for eventfds: 6.18 here). Where the kernel does not, the file is made
/// non-blocking first (a peer could clear that in between). `Ok(false)`: nothing was signalled.
pub fn read_eventfd_nowait(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut b = [0u8; 8];
    // Offset -1: the file's own position (an eventfd has none to move).
    let r = rustix::io::preadv2(
        fd,
        &mut [io::IoSliceMut::new(&mut b)],
        u64::MAX,
        rustix::io::ReadWriteFlags::NOWAIT,
    );
    let r = match r {
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            let _ = rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK);
            rustix::io::read(fd, &mut b)
        }
        r => r,
    };
    match r {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::AGAIN) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A memory mapping valed made, unmapped when dropped: an AF_PACKET or AF_XDP ring
/// shared with the kernel, or an AF_XDP UMEM.
///
/// It hands out raw pointers only, never `&`/`&mut` to its bytes: the kernel writes into
/// these mappings whenever it holds a slot, so only the ring code that knows a region
/// has been handed over may make a reference to it, and only while it holds the `Mmap`.
pub struct Mmap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: an `Mmap` is the ownership of an address range, not of data living in one
// thread; it gives out only raw pointers, whose users carry their own obligations.
unsafe impl Send for Mmap {}
// SAFETY: as for `Send`: `&Mmap` offers nothing but the address and the length.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// `len` bytes of zeroed private memory, faulted in now if `populate`.
    pub fn anonymous(len: usize, populate: bool) -> io::Result<Mmap> {
        let flags = MapFlags::PRIVATE | populate_flag(populate);
        // SAFETY: a new mapping at an address the kernel picks (no MAP_FIXED), so it
        // overlaps nothing Rust knows of; this `Mmap` owns it until `drop`.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
            )
        }?;
        Ok(Mmap {
            ptr: ptr.cast(),
            len,
        })
    }

    /// `len` bytes of what `fd` maps at `offset` (a ring the kernel allocated for a
    /// socket), shared with the kernel, faulted in now if `populate`.
    pub fn shared(fd: BorrowedFd<'_>, len: usize, offset: u64, populate: bool) -> io::Result<Mmap> {
        let flags = MapFlags::SHARED | populate_flag(populate);
        // SAFETY: as in `anonymous`: a new mapping at an address the kernel picks; the
        // kernel refuses a `len` beyond what the socket has at `offset`.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                offset,
            )
        }?;
        Ok(Mmap {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The first byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

fn populate_flag(populate: bool) -> MapFlags {
    if populate {
        MapFlags::POPULATE
    } else {
        MapFlags::empty()
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping the constructor made, unmapped once; whatever
        // pointed into it borrowed or owned this `Mmap`, so nothing uses it any more.
        // An error (there is none for a valid mapping) leaves nothing to do.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `[start, start + len)` is exactly one line of /proc/self/maps.
    fn mapped(start: usize, len: usize) -> bool {
        let want = format!("{:x}-{:x} ", start, start + len);
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .any(|l| l.starts_with(&want))
    }

    /// Whether one line of /proc/self/maps covers `[start, start + len)` (the kernel
    /// merges a new anonymous mapping with a neighbour of the same kind, which other
    /// tests running at the same time may have made).
    fn covered(start: usize, len: usize) -> bool {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.split_once('-'))
            .filter_map(|(a, b)| {
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            })
            .any(|(lo, hi)| lo <= start && start + len <= hi)
    }

    #[test]
    fn an_anonymous_mapping_is_zeroed_writable_and_gone_when_dropped() {
        // An odd size, so that no other test's mapping at the same address looks like it.
        let len = 7 * 4096;
        let m = Mmap::anonymous(len, true).unwrap();
        assert_eq!(m.len(), len);
        let start = m.as_ptr() as usize;
        assert_eq!(start % 4096, 0);
        assert!(covered(start, len));
        // SAFETY: both offsets are inside the `len` bytes just mapped, which nothing
        // else knows of; raw reads and writes, no reference.
        unsafe {
            assert_eq!(m.as_ptr().add(len - 1).read(), 0);
            m.as_ptr().add(len - 1).write(0xa5);
            assert_eq!(m.as_ptr().add(len - 1).read(), 0xa5);
        }
        drop(m);
        assert!(!mapped(start, len));
    }

    #[test]
    fn a_shared_mapping_shows_what_is_written_through_the_descriptor() {
        use rustix::fd::AsFd;
        use rustix::fs::{MemfdFlags, ftruncate, memfd_create};
        let fd = memfd_create("vale-mmap-test", MemfdFlags::CLOEXEC).unwrap();
        ftruncate(&fd, 2 * 4096).unwrap();
        let m = Mmap::shared(fd.as_fd(), 4096, 4096, false).unwrap();
        rustix::io::pwrite(&fd, b"vale", 4096 + 10).unwrap();
        let mut got = [0u8; 4];
        // SAFETY: bytes 10..14 of the 4096 just mapped; only this test reaches the
        // memfd, and its write is done.
        unsafe { std::ptr::copy_nonoverlapping(m.as_ptr().add(10), got.as_mut_ptr(), 4) };
        assert_eq!(&got, b"vale");
    }

    #[test]
    fn a_mapping_the_kernel_refuses_is_an_error() {
        assert!(Mmap::anonymous(0, false).is_err());
    }
}
