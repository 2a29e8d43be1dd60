//! Writing a packet held as fragments in the switch's port buffers: one `writev` for
//! kernel-facing ports, byte slices for ports that copy (vhost-user).

use rustix::fd::{AsRawFd, BorrowedFd};
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
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
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
