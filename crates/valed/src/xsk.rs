//! AF_XDP for attached interfaces (`vale-ctl -a valeX:IF --xdp`).
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

use crate::sys::bpf::{
    BPF_LINK_CREATE, BPF_MAP_CREATE, BPF_MAP_TYPE_XSKMAP, BPF_MAP_UPDATE_ELEM, BPF_PROG_LOAD,
    BPF_PROG_TYPE_XDP, BPF_XDP, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, bpf, bpf_raw, program,
    put32, put64,
};
pub use crate::sys::xdp::FRAME;
use crate::sys::xdp::Xsk;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

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
    _map: OwnedFd,
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
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, BPF_MAP_TYPE_XSKMAP);
    put32(&mut attr, 4, 4);
    put32(&mut attr, 8, 4);
    put32(&mut attr, 12, queues);
    let map = bpf(BPF_MAP_CREATE, &mut attr)
        .map_err(|e| format!("cannot create an XSKMAP: {e} (needs CAP_BPF or root)"))?;
    let code = program(map.as_raw_fd());
    let license = b"Dual MIT/GPL\0";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u8; 128];
    put32(&mut attr, 0, BPF_PROG_TYPE_XDP);
    put32(&mut attr, 4, (code.len() / 8) as u32);
    put64(&mut attr, 8, code.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 24, 1);
    put32(&mut attr, 28, log.len() as u32);
    put64(&mut attr, 32, log.as_mut_ptr() as u64);
    attr[48..52].copy_from_slice(b"vale");
    put32(&mut attr, 68, BPF_XDP);
    let prog = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        format!(
            "cannot load the XDP program: {e}: {}",
            String::from_utf8_lossy(&log[..end]).trim()
        )
    })?;
    let mut socks = Vec::new();
    for q in 0..queues {
        let x = Xsk::new(ifindex, q, frames_for(queues)).map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                format!("{ifname} queue {q} already has an AF_XDP socket (another program's)")
            } else {
                format!("cannot bind an AF_XDP socket to {ifname} queue {q}: {e}")
            }
        })?;
        let (key, val) = (q, x.fd().as_raw_fd() as u32);
        let mut attr = [0u8; 128];
        put32(&mut attr, 0, map.as_raw_fd() as u32);
        put64(&mut attr, 8, &key as *const u32 as u64);
        put64(&mut attr, 16, &val as *const u32 as u64);
        bpf_raw(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map_err(|e| format!("cannot add the AF_XDP socket to the XSKMAP: {e}"))?;
        socks.push(x);
    }
    // The driver's own hook where it has one, the kernel's generic one otherwise.
    let mut link = Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    let mut native = false;
    for (flags, drv) in [(XDP_FLAGS_DRV_MODE, true), (XDP_FLAGS_SKB_MODE, false)] {
        let mut attr = [0u8; 128];
        put32(&mut attr, 0, prog.as_raw_fd() as u32);
        put32(&mut attr, 4, ifindex);
        put32(&mut attr, 8, BPF_XDP);
        put32(&mut attr, 12, flags);
        link = bpf(BPF_LINK_CREATE, &mut attr);
        native = drv;
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
