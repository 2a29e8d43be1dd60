//! AF_XDP for attached interfaces (`vale-ctl -a valeX:IF --xdp`): the policy, which
//! queues get a socket and how many frames, and the attach sequence and its messages.
//!
//! A five-instruction XDP program hands every frame the interface receives on queue `q`
//! to our AF_XDP socket for `q` (an `XSKMAP`), and to the kernel's stack when there is
//! none. The program is attached through a BPF link: closing the link's descriptor
//! (detach, or valed exiting in any way) detaches it, so the interface is given back
//! as it was. Each socket has its own UMEM of 4 KiB frames (`frames_for`: half for
//! the fill ring, half for sending); the kernel picks zero-copy where the driver
//! supports it and copies otherwise.
//!
//! Kernel ABI: linux/if_xdp.h, linux/bpf.h; the mechanism is in `sys::xdp` and
//! `sys::bpf`.

use crate::sys::bpf::{self, XdpHook, XskMap};
pub use crate::sys::xdp::FRAME;
use crate::sys::xdp::{NewError, Xsk};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// UMEM frames per socket: half wait in the fill ring for received frames, half are
/// for sending; each of the four rings has room for half. 16 MiB per socket for up to
/// four receive queues, 8 MiB each beyond (a NIC with many queues).
fn frames_for(queues: u32) -> usize {
    if queues <= 4 { 4096 } else { 2048 }
}
/// Receive queues served at most (one socket each).
const MAX_QUEUES: u32 = 64;

/// An XDP program steering an interface's frames to our sockets, attached through a
/// BPF link (detached when this is dropped), and the sockets.
pub struct Attached {
    pub socks: Vec<Xsk>,
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: XskMap,
    /// The driver runs the program itself (not the kernel's generic hook).
    pub native: bool,
}

/// The interface's receive queues, as sysfs lists them (at least 1).
fn rx_queues(ifname: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// What the user is told when queue `q`'s socket (of `frames` frames) cannot be made.
fn socket_error(ifname: &str, q: u32, frames: usize, e: NewError) -> String {
    match e {
        NewError::Umem(e) => format!(
            "cannot bind an AF_XDP socket to {ifname} queue {q}: registering {} MiB of \
             frames: {e} (locked memory: valed needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)",
            (frames * FRAME) >> 20
        ),
        NewError::Other(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            format!("{ifname} queue {q} already has an AF_XDP socket (another program's)")
        }
        NewError::Other(e) => format!("cannot bind an AF_XDP socket to {ifname} queue {q}: {e}"),
    }
}

/// Steers `ifname`'s received frames to new AF_XDP sockets, one per receive queue.
pub fn attach(ifname: &str, ifindex: u32) -> Result<Attached, String> {
    let queues = rx_queues(ifname);
    if queues > MAX_QUEUES {
        // Frames on the others would bypass the switch without a word.
        return Err(format!(
            "{ifname} has {queues} receive queues; --xdp serves at most {MAX_QUEUES} \
             (fewer with `ethtool -L {ifname} combined {MAX_QUEUES}`), or attach without --xdp"
        ));
    }
    let map = XskMap::create(queues)
        .map_err(|e| format!("cannot create an XSKMAP: {e} (needs CAP_BPF or root)"))?;
    let mut log = vec![0u8; 4096];
    let prog = bpf::prog_load_xdp(&map.redirect_program(), c"Dual MIT/GPL", "vale", &mut log)
        .map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            format!(
                "cannot load the XDP program: {e}: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            )
        })?;
    let mut socks = Vec::new();
    for q in 0..queues {
        let frames = frames_for(queues);
        let x = Xsk::new(ifindex, q, frames).map_err(|e| socket_error(ifname, q, frames, e))?;
        map.insert(q, x.fd())
            .map_err(|e| format!("cannot add the AF_XDP socket to the XSKMAP: {e}"))?;
        socks.push(x);
    }
    // The driver's own hook where it has one, the kernel's generic one otherwise.
    let mut link = Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    let mut native = false;
    for hook in [XdpHook::Driver, XdpHook::Generic] {
        link = bpf::link_create_xdp(prog.as_fd(), ifindex, hook);
        native = hook == XdpHook::Driver;
        // A driver may refuse its own hook for its configuration (MTU, LRO: EINVAL,
        // ERANGE, ...): the generic hook still works. Busy means another program.
        match &link {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) => continue,
            _ => break,
        }
    }
    let link = link.map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            format!("{ifname} already has an XDP program (see `ip link show {ifname}`)")
        }
        _ => format!("cannot attach the XDP program to {ifname}: {e}"),
    })?;
    Ok(Attached {
        socks,
        _link: link,
        _prog: prog,
        _map: map,
        native,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_name_the_queue_and_the_fix() {
        let os = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            socket_error("eth0", 2, 4096, NewError::Umem(os(libc::ENOBUFS))),
            "cannot bind an AF_XDP socket to eth0 queue 2: registering 16 MiB of frames: \
             No buffer space available (os error 105) (locked memory: valed needs \
             CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)"
        );
        // A UMEM error is about memory even when its errno is EBUSY.
        assert!(socket_error("eth0", 0, 2048, NewError::Umem(os(libc::EBUSY))).contains("8 MiB"));
        assert_eq!(
            socket_error("eth0", 1, 4096, NewError::Other(os(libc::EBUSY))),
            "eth0 queue 1 already has an AF_XDP socket (another program's)"
        );
        assert_eq!(
            socket_error("eth0", 1, 4096, NewError::Other(os(libc::EINVAL))),
            "cannot bind an AF_XDP socket to eth0 queue 1: Invalid argument (os error 22)"
        );
    }

    #[test]
    fn frames_for_many_queues_are_fewer() {
        assert_eq!(frames_for(1) * FRAME, 16 << 20);
        assert_eq!(frames_for(4), 4096);
        assert_eq!(frames_for(5), 2048);
    }
}
