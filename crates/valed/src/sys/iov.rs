//! Writing a packet held as fragments in the switch's port buffers: one `writev` for
//! kernel-facing ports, byte slices for ports that copy (vhost-user).

use rustix::fd::{AsRawFd, BorrowedFd};
use std::io;

// Known debt: both functions are safe, yet dereference the pointer pairs they are
// given, trusting the promise documented on `vale_switch::Egress`, a safe trait; and
// `with_slices` makes `&[u8]` over buffers the sending client may rewrite. A
// `vale_abi::Frag<'a>`, made only from a checked buffer index, is to replace the pairs
// (design review 2.4) and make these sound by construction.

/// Most fragments one packet may have (netmap's limit), and a header in front.
pub const MAX_IOV: usize = 65;

/// Writes one packet, `hdr` (a converted virtio-net header, or empty) then fragments in
/// the switch's port buffers, to `fd` with one `writev`: the egress of direct (host)
/// ports, no copy in valed.
pub fn write_frags(
    fd: BorrowedFd<'_>,
    hdr: &[u8],
    frags: &[(*const u8, usize)],
) -> io::Result<usize> {
    let extra = usize::from(!hdr.is_empty());
    if frags.is_empty() || frags.len() + extra > MAX_IOV {
        return Err(io::Error::other("packet with no or too many fragments"));
    }
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_IOV];
    let hdr = (!hdr.is_empty()).then_some((hdr.as_ptr(), hdr.len()));
    for (e, &(p, n)) in iov.iter_mut().zip(hdr.iter().chain(frags)) {
        *e = libc::iovec {
            iov_base: p as *mut libc::c_void,
            iov_len: n,
        };
    }
    let count = frags.len() + extra;
    // SAFETY: `hdr` is a live slice; the engine hands out (address, length) pairs that
    // lie inside one buffer of a mapped port region each (`vale_switch::Egress`),
    // readable during this call; the kernel only reads them. A client rewriting its
    // buffer meanwhile changes only the bytes of its own packet.
    let r = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), count as libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Runs `f` on a packet given as fragments in a port's buffers, as byte slices (at most
/// 64, the engine's limit; callers check): for direct destinations that copy them on
/// (vhost-user guests).
pub fn with_slices<R>(frags: &[(*const u8, usize)], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    let mut s: [&[u8]; 64] = [&[]; 64];
    let n = frags.len().min(64);
    for (d, &(p, len)) in s.iter_mut().zip(frags) {
        // SAFETY: the engine hands out (address, length) pairs inside the sender's
        // buffers of a mapped port region, readable during this call
        // (`vale_switch::Egress`; the slices do not outlive `f`); a client rewriting
        // them meanwhile changes only the bytes of its own packet.
        *d = unsafe { std::slice::from_raw_parts(p, len) };
    }
    f(&s[..n])
}
