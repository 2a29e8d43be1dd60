//! TAP devices valed creates: `/dev/net/tun` and its `TUNSETIFF`, `TUNSETVNETHDRSZ`
//! and `TUNSETOFFLOAD` ioctls.

use rustix::fd::{AsRawFd, OwnedFd};
use std::io;

/// `struct ifreq` (linux/if.h) as TUNSETIFF reads and writes it: the name, then
/// `ifr_flags` at the start of the union, the rest of which it does not use.
#[repr(C, align(8))]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

impl IfreqFlags {
    fn new(name: &str, flags: libc::c_short) -> IfreqFlags {
        let mut r = IfreqFlags {
            name: [0; libc::IFNAMSIZ],
            flags,
            _rest: [0; 22],
        };
        for (d, s) in r.name.iter_mut().zip(name.bytes()) {
            *d = s;
        }
        r
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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
    let mut r = IfreqFlags::new(
        name,
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
    );
    // TUNSETIFF refuses an existing interface of another kind; for an existing TAP it
    // would attach to it, so the caller checks existence first.
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` through the pointer: `r`
    // is one (its size asserted in the tests), live and exclusively borrowed for the
    // call; the kernel keeps no pointer to it.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF as _,
            &mut r as *mut IfreqFlags,
        )
    })?;
    let hdr = TAP_VNET_HDR as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer: `hdr`, live for the call.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETVNETHDRSZ as _,
            &hdr as *const libc::c_int,
        )
    })?;
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes the flags as the argument value itself: no memory.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            offloads as libc::c_ulong,
        )
    })?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn ifreq_flags_is_an_ifreq() {
        assert_eq!(size_of::<IfreqFlags>(), size_of::<libc::ifreq>());
        assert_eq!(size_of::<IfreqFlags>(), 40);
        assert_eq!(align_of::<IfreqFlags>(), align_of::<libc::ifreq>());
        assert_eq!(
            offset_of!(IfreqFlags, flags),
            offset_of!(libc::ifreq, ifr_ifru)
        );
        assert_eq!(offset_of!(IfreqFlags, flags), 16);
        let r = IfreqFlags::new("vi0", 0x1002);
        assert_eq!(&r.name[..4], b"vi0\0");
        assert_eq!(r.flags, 0x1002);
    }
}
