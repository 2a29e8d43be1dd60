//! TAP devices valed creates: `/dev/net/tun` and its `TUNGETFEATURES`, `TUNSETIFF`,
//! `TUNSETVNETHDRSZ` and `TUNSETOFFLOAD` ioctls, with one descriptor per queue.

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

/// Most queues of a TAP valed creates (`vale-ctl -n IF --queues N`): a switch port's
/// rings are bounded by `max_rings` (16 by default) anyway, as for vhost-user.
pub const MAX_TAP_QUEUES: u16 = 16;

fn open_tun() -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        "/dev/net/tun",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// `TUNSETIFF` on `fd` with `flags`: creates interface `name`, or (a multiqueue one that
/// exists) attaches `fd` to it as one more queue.
fn set_iff(fd: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<()> {
    let mut r = IfreqFlags::new(name, flags as libc::c_short);
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq` through the pointer: `r`
    // is one (its size asserted in the tests), live and exclusively borrowed for the
    // call; the kernel keeps no pointer to it.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF as _,
            &mut r as *mut IfreqFlags,
        )
    })
}

/// The `IFF_*` flags this kernel's TUN driver takes (`TUNGETFEATURES`).
fn features(fd: &OwnedFd) -> io::Result<libc::c_uint> {
    let mut f: libc::c_uint = 0;
    // SAFETY: TUNGETFEATURES writes one unsigned int through the pointer: `f`, live
    // and exclusively borrowed for the call.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNGETFEATURES as _,
            &mut f as *mut libc::c_uint,
        )
    })?;
    Ok(f)
}

/// Creates TAP interface `name`, non-blocking, with a 12-byte virtio-net header on every
/// frame and checksum/TSO offloads on, so TCP hands us (and takes from us) 64 KiB
/// super-frames instead of MTU-sized segments: one descriptor per queue. With more
/// than one queue the device is `IFF_MULTI_QUEUE` and each further descriptor is
/// attached by a `TUNSETIFF` of the same name; the kernel spreads the flows it sends
/// over the queues by hash, and remembers which queue each flow last came in on
/// (tun.c's flow table), so both directions of a flow share one. The interface lives as
/// long as the returned descriptors: it is not made persistent in the kernel, so it
/// goes away with the daemon.
pub fn tap_create(name: &str, queues: u16) -> io::Result<Vec<OwnedFd>> {
    let first = open_tun()?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if queues > 1 {
        let has = features(&first).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot ask the TUN driver for its features (TUNGETFEATURES): {e}"),
            )
        })?;
        if has & libc::IFF_MULTI_QUEUE as libc::c_uint == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's TUN driver has no multiqueue TAP devices (IFF_MULTI_QUEUE)",
            ));
        }
        flags |= libc::IFF_MULTI_QUEUE;
    }
    // TUNSETIFF refuses an existing interface of another kind; for an existing TAP it
    // would attach to it, so the caller checks existence first.
    set_iff(&first, name, flags)?;
    // The header size and the offloads are the device's, not a queue's (tun.c keeps
    // `vnet_hdr_sz` and the features in `struct tun_struct`; a queue attached later
    // takes them): set once, through the first queue.
    let hdr = TAP_VNET_HDR as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int through the pointer: `hdr`, live for the call.
    check(unsafe {
        libc::ioctl(
            first.as_raw_fd(),
            libc::TUNSETVNETHDRSZ as _,
            &hdr as *const libc::c_int,
        )
    })?;
    let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    // SAFETY: TUNSETOFFLOAD takes the flags as the argument value itself: no memory.
    check(unsafe {
        libc::ioctl(
            first.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            offloads as libc::c_ulong,
        )
    })?;
    let mut fds = vec![first];
    for q in 1..queues {
        let fd = open_tun()?;
        set_iff(&fd, name, flags).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("queue {q}: TUNSETIFF with IFF_MULTI_QUEUE: {e}"),
            )
        })?;
        fds.push(fd);
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// A multiqueue TAP is one interface of `IFF_MULTI_QUEUE` with a queue per
    /// descriptor, its header size and offloads set for all of them; it goes with them.
    #[test]
    fn a_tap_of_two_queues_is_one_multiqueue_interface() {
        if !rustix::process::geteuid().is_root() || !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("SKIP: needs root and /dev/net/tun");
            return;
        }
        let name = format!("vqt{}", std::process::id() % 100000);
        let fds = tap_create(&name, 2).unwrap();
        assert_eq!(fds.len(), 2);
        let sys = format!("/sys/class/net/{name}");
        let flags = std::fs::read_to_string(format!("{sys}/tun_flags")).unwrap();
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
        let want =
            (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE) as u32;
        assert_eq!(flags & want, want, "tun_flags {flags:#x}");
        let mut txq: Vec<String> = std::fs::read_dir(format!("{sys}/queues"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("tx-"))
            .collect();
        txq.sort();
        assert_eq!(txq, ["tx-0", "tx-1"], "a kernel TX queue per descriptor");
        for fd in &fds {
            let mut sz: libc::c_int = 0;
            // SAFETY: TUNGETVNETHDRSZ writes one int through the pointer: `sz`, live
            // and exclusively borrowed for the call.
            check(unsafe {
                libc::ioctl(
                    fd.as_raw_fd(),
                    libc::TUNGETVNETHDRSZ as _,
                    &mut sz as *mut libc::c_int,
                )
            })
            .unwrap();
            assert_eq!(sz, TAP_VNET_HDR as libc::c_int, "the device's header size");
        }
        drop(fds);
        assert!(
            !std::path::Path::new(&sys).exists(),
            "{name} gone with its queues"
        );
    }

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
