//! TAP devices valed creates: `/dev/net/tun` and its `TUNSETIFF`, `TUNSETVNETHDRSZ`
//! and `TUNSETOFFLOAD` ioctls.

use rustix::fd::{AsRawFd, OwnedFd};
use std::io;

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
