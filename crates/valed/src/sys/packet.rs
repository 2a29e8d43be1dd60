//! AF_PACKET sockets on existing interfaces: the socket, its `PACKET_*` options and
//! the TPACKET_V2 receive ring.
//!
//! Kernel ABI: linux/if_packet.h (libc's copies of its numbers and structs).

use super::{Mmap, setsockopt_at};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use std::io;
use std::mem::offset_of;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes of virtio-net header on packet sockets (`struct virtio_net_hdr`).
pub const PACKET_VNET_HDR_LEN: u16 = 10;

/// The `SOL_PACKET` options valed sets that take an `int`.
#[repr(i32)]
#[derive(Clone, Copy)]
enum IntOption {
    Version = libc::PACKET_VERSION,
    CopyThresh = libc::PACKET_COPY_THRESH,
    VnetHdr = libc::PACKET_VNET_HDR,
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

// Where a slot's `struct tpacket2_hdr` keeps what the ring reads.
const TP_STATUS: usize = offset_of!(libc::tpacket2_hdr, tp_status);
const TP_LEN: usize = offset_of!(libc::tpacket2_hdr, tp_len);
const TP_SNAPLEN: usize = offset_of!(libc::tpacket2_hdr, tp_snaplen);
const TP_MAC: usize = offset_of!(libc::tpacket2_hdr, tp_mac);

/// The header fields of a slot the kernel has handed over.
#[derive(Debug, PartialEq, Eq)]
struct SlotHeader {
    /// The frame's length on the wire.
    len: usize,
    /// How much of it is in the slot.
    snaplen: usize,
    /// Where in the slot the Ethernet header starts (the virtio-net header ends).
    mac: usize,
}

impl SlotHeader {
    /// Reads the header at the start of `slot` (at least a `tpacket2_hdr` long).
    fn read(slot: &[u8]) -> SlotHeader {
        let u32_at =
            |o: usize| u32::from_ne_bytes([slot[o], slot[o + 1], slot[o + 2], slot[o + 3]]);
        SlotHeader {
            len: u32_at(TP_LEN) as usize,
            snaplen: u32_at(TP_SNAPLEN) as usize,
            mac: u16::from_ne_bytes([slot[TP_MAC], slot[TP_MAC + 1]]) as usize,
        }
    }
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
    /// `frame_nr` slots of `frame_size` bytes, slot `i` at `i * frame_size`.
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
        set_int(
            fd,
            IntOption::Version,
            libc::tpacket_versions::TPACKET_V2 as _,
        )?;
        set_int(fd, IntOption::CopyThresh, 1)?;
        let page = 4096usize;
        let req = libc::tpacket_req {
            tp_block_size: page as u32,
            tp_block_nr: (frame_nr * frame_size / page) as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: frame_nr as u32,
        };
        // SAFETY: PACKET_RX_RING takes a `tpacket_req` by value; the ring it makes is
        // the kernel's memory, reached only through the mapping below.
        unsafe { setsockopt_at(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req) }?;
        // The kernel took the request only if `frame_size` is a multiple of
        // TPACKET_ALIGNMENT (16), at least a header long, and the `frame_nr` slots
        // fill `tp_block_nr` whole blocks: slot `i` is then at `i * frame_size` of a
        // ring `frame_nr * frame_size` long, which it refuses to map any longer.
        let map = Mmap::shared(fd.as_fd(), frame_nr * frame_size, 0, false)?;
        Ok(PacketRing {
            map,
            frame_size,
            frame_nr,
            next: 0,
        })
    }

    /// The status word of slot `next`.
    fn status(&self) -> &AtomicU32 {
        // SAFETY: `next` < frame_nr (it wraps modulo frame_nr; with no slots the
        // mapping in `new` fails), so the slot starts inside the mapping, 16-byte
        // aligned (see `new`); its first word is the status the kernel and we hand the slot over with,
        // only ever accessed atomically, and it lives as long as `self.map`.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(self.next * self.frame_size + TP_STATUS)
                .cast::<AtomicU32>()
        }
    }

    /// Looks at the next slot and hands what it holds to `f`; the slot goes back to the
    /// kernel afterwards. Returns false if nothing had arrived.
    pub fn take(&mut self, f: impl FnOnce(RingFrame<'_>)) -> bool {
        let st = self.status().load(Ordering::Acquire);
        if st & libc::TP_STATUS_USER == 0 {
            f(RingFrame::Empty);
            return false;
        }
        // SAFETY: slot `next` lies inside the mapping (see `status`), and it is ours:
        // with TP_STATUS_USER set (the Acquire load above) the kernel does not touch it
        // until we store TP_STATUS_KERNEL below, after the last use of `slot` (`f`
        // cannot keep it: the borrow ends with the call).
        let slot = unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.next * self.frame_size),
                self.frame_size,
            )
        };
        let h = SlotHeader::read(slot);
        let hdr = PACKET_VNET_HDR_LEN as usize;
        if st & libc::TP_STATUS_COPY != 0 {
            f(RingFrame::Queued);
        } else if h.snaplen < h.len || h.mac < hdr || h.mac + h.snaplen > self.frame_size {
            f(RingFrame::Truncated);
        } else {
            f(RingFrame::Frame(&slot[h.mac - hdr..h.mac + h.snaplen]));
        }
        self.status()
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.frame_nr;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    // The numbers of linux/if_packet.h.
    #[test]
    fn tpacket_v2_layout_matches_linux_if_packet_h() {
        assert_eq!(size_of::<libc::tpacket2_hdr>(), 32);
        assert_eq!(TP_STATUS, 0);
        assert_eq!(TP_LEN, 4);
        assert_eq!(TP_SNAPLEN, 8);
        assert_eq!(TP_MAC, 12);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_net), 14);
        assert_eq!(size_of::<libc::tpacket_req>(), 16);
        assert_eq!(libc::tpacket_versions::TPACKET_V2 as i32, 1);
        assert_eq!(
            (
                libc::TP_STATUS_KERNEL,
                libc::TP_STATUS_USER,
                libc::TP_STATUS_COPY
            ),
            (0, 1, 2)
        );
        assert_eq!(IntOption::Version as i32, 10);
        assert_eq!(IntOption::CopyThresh as i32, 7);
        assert_eq!(IntOption::VnetHdr as i32, 15);
        assert_eq!(IntOption::IgnoreOutgoing as i32, 23);
        assert_eq!(libc::PACKET_RX_RING, 5);
    }

    #[test]
    fn slot_header_reads_its_fields_where_the_kernel_puts_them() {
        let mut slot = [0xa5u8; 64];
        slot[4..8].copy_from_slice(&1514u32.to_ne_bytes());
        slot[8..12].copy_from_slice(&60u32.to_ne_bytes());
        slot[12..14].copy_from_slice(&42u16.to_ne_bytes());
        assert_eq!(
            SlotHeader::read(&slot),
            SlotHeader {
                len: 1514,
                snaplen: 60,
                mac: 42
            }
        );
    }
}
