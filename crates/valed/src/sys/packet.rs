//! AF_PACKET sockets on existing interfaces: the socket, its `PACKET_*` options and
//! the TPACKET_V2 receive ring.

use super::{Mmap, setsockopt_at};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use std::io;

/// Bytes of virtio-net header on packet sockets (`struct virtio_net_hdr`).
pub const PACKET_VNET_HDR_LEN: u16 = 10;
const PACKET_VNET_HDR: libc::c_int = 15;

/// The `SOL_PACKET` options valed sets that take an `int`.
#[repr(i32)]
#[derive(Clone, Copy)]
enum IntOption {
    Version = PACKET_VERSION,
    CopyThresh = PACKET_COPY_THRESH,
    VnetHdr = PACKET_VNET_HDR,
    IgnoreOutgoing = libc::PACKET_IGNORE_OUTGOING,
}

fn set_int(fd: &OwnedFd, opt: IntOption, v: libc::c_int) -> io::Result<()> {
    // SAFETY: each `IntOption` takes an int by value; the kernel keeps nothing.
    unsafe { setsockopt_at(fd, libc::SOL_PACKET, opt as libc::c_int, &v) }
}

/// An AF_PACKET socket bound to interface `ifindex`, receiving every frame that arrives
/// on it (promiscuous, not the ones we send), non-blocking, with a 10-byte virtio-net
/// header in front of each frame (`PACKET_VNET_HDR`).
pub fn packet_socket(ifindex: u32) -> io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, eth, sockopt};
    let fd = rustix::net::socket_with(
        AddressFamily::PACKET,
        SocketType::RAW,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(eth::ALL),
    )?;
    // rustix has no sockaddr_ll.
    let sa = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: the kernel reads a `sockaddr_ll` of the length passed from `sa`, which
    // lives across the call, and keeps nothing of it.
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
    // SAFETY: PACKET_ADD_MEMBERSHIP takes a `packet_mreq` by value.
    unsafe { setsockopt_at(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq) }?;
    // A 10-byte virtio-net header on every frame: GSO super-frames (veth, GRO) come with
    // their segmentation request instead of as over-long frames, and go out the same way.
    set_int(&fd, IntOption::VnetHdr, 1)?;
    set_int(&fd, IntOption::IgnoreOutgoing, 1)?;
    // Room for a burst of super-frames queued on the socket (those larger than a receive
    // ring slot): 4 MiB, past rmem_max when valed may (root).
    let size = 4 << 20;
    if sockopt::set_socket_recv_buffer_size_force(&fd, size).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(&fd, size);
    }
    Ok(fd)
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
    map: Mmap,
    frame_size: usize,
    frame_nr: usize,
    next: usize,
}

impl PacketRing {
    /// Sets up a ring of `frame_nr` slots of `frame_size` bytes (a multiple of 16 that
    /// divides the page size) on packet socket `fd` (which already has
    /// `PACKET_VNET_HDR`) and maps it.
    pub fn new(fd: &OwnedFd, frame_size: usize, frame_nr: usize) -> io::Result<PacketRing> {
        set_int(fd, IntOption::Version, TPACKET_V2)?;
        set_int(fd, IntOption::CopyThresh, 1)?;
        let page = 4096usize;
        let req = TpacketReq {
            block_size: page as u32,
            block_nr: (frame_nr * frame_size / page) as u32,
            frame_size: frame_size as u32,
            frame_nr: frame_nr as u32,
        };
        // SAFETY: PACKET_RX_RING takes a `tpacket_req` by value; the ring it makes is
        // the kernel's memory, reached only through the mapping below.
        unsafe { setsockopt_at(fd, libc::SOL_PACKET, PACKET_RX_RING, &req) }?;
        let map = Mmap::shared(fd.as_fd(), frame_nr * frame_size, 0, false)?;
        Ok(PacketRing {
            map,
            frame_size,
            frame_nr,
            next: 0,
        })
    }

    fn status(&self, i: usize) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: slot `i` < frame_nr starts inside the mapping, 16-byte aligned; its
        // first word is the status the kernel and we hand the slot over with.
        unsafe {
            &*(self.map.as_ptr().add(i * self.frame_size) as *const std::sync::atomic::AtomicU32)
        }
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
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.next * self.frame_size),
                self.frame_size,
            )
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
