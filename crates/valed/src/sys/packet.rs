//! AF_PACKET sockets on existing interfaces: the socket, its `PACKET_*` options, the
//! TPACKET_V2 receive ring, and `recvmsg` with the frame's `PACKET_AUXDATA`.
//!
//! Kernel ABI: linux/if_packet.h (libc's copies of its numbers and structs).
//!
//! The kernel takes the outer VLAN tag out of every frame an interface receives
//! (`skb_vlan_untag`, before packet sockets see it) and hands it over beside the frame:
//! in the ring slot's header, or in a `PACKET_AUXDATA` control message. Both readers
//! here return it as an [`Outer`] tag for the caller to put back.

use super::{Mmap, setsockopt_at};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use std::io;
use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, Ordering};
use vale_wire::EtherType;
use vale_wire::vlan::{Outer, Tci};

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
    Auxdata = libc::PACKET_AUXDATA,
}

fn set_int(fd: &OwnedFd, opt: IntOption, v: libc::c_int) -> io::Result<()> {
    // SAFETY: each `IntOption` takes an int by value; the kernel keeps nothing.
    unsafe { setsockopt_at(fd, libc::SOL_PACKET, opt as libc::c_int, &v) }
}

/// An AF_PACKET socket bound to interface `ifindex`, receiving every frame that arrives
/// on it (promiscuous, not the ones we send), non-blocking, with a 10-byte virtio-net
/// header in front of each frame (`PACKET_VNET_HDR`) and each read's VLAN tag in a
/// control message (`PACKET_AUXDATA`, see [`recv_frame`]).
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
    set_int(&fd, IntOption::Auxdata, 1)?;
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
const TP_VLAN_TCI: usize = offset_of!(libc::tpacket2_hdr, tp_vlan_tci);
const TP_VLAN_TPID: usize = offset_of!(libc::tpacket2_hdr, tp_vlan_tpid);

/// The tag the kernel took out of a frame, from the status word and the two fields of
/// a ring slot or of `struct tpacket_auxdata`. Kernels older than 3.14 give no TPID
/// (`TP_STATUS_VLAN_TPID_VALID` clear): the tag was 802.1Q's.
fn aux_tag(status: u32, tci: u16, tpid: u16) -> Option<Outer> {
    if status & libc::TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
        EtherType(tpid)
    } else {
        EtherType::VLAN
    };
    Some(Outer {
        tpid,
        tci: Tci(tci),
    })
}

/// The header fields of a slot the kernel has handed over.
#[derive(Debug, PartialEq, Eq)]
struct SlotHeader {
    /// The frame's length on the wire.
    len: usize,
    /// How much of it is in the slot.
    snaplen: usize,
    /// Where in the slot the Ethernet header starts (the virtio-net header ends).
    mac: usize,
    /// `tp_vlan_tci` and `tp_vlan_tpid`: the frame's outer tag, if the status says so.
    vlan_tci: u16,
    vlan_tpid: u16,
}

impl SlotHeader {
    /// Reads the header at the start of `slot` (at least a `tpacket2_hdr` long).
    fn read(slot: &[u8]) -> SlotHeader {
        let u32_at =
            |o: usize| u32::from_ne_bytes([slot[o], slot[o + 1], slot[o + 2], slot[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([slot[o], slot[o + 1]]);
        SlotHeader {
            len: u32_at(TP_LEN) as usize,
            snaplen: u32_at(TP_SNAPLEN) as usize,
            mac: u16_at(TP_MAC) as usize,
            vlan_tci: u16_at(TP_VLAN_TCI),
            vlan_tpid: u16_at(TP_VLAN_TPID),
        }
    }
}

/// What the next frame of a [`PacketRing`] holds.
pub enum RingFrame<'a> {
    /// Nothing has arrived.
    Empty,
    /// A frame: its 10-byte virtio-net header, then the Ethernet frame, less the outer
    /// VLAN tag, which the kernel took out and which is `tag`.
    Frame { frame: &'a [u8], tag: Option<Outer> },
    /// A frame too large for a ring slot (a GSO super-frame): the kernel queued it whole
    /// on the socket instead; read it with [`recv_frame`].
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
    /// A slot taken since [`PacketRing::losing`] was last asked said the kernel had
    /// dropped frames (`TP_STATUS_LOSING`) that [`packet_drops`] has not read yet.
    losing: bool,
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
        let map = match Mmap::shared(fd.as_fd(), frame_nr * frame_size, 0, false) {
            Ok(m) => m,
            Err(e) => {
                // The ring goes again: left set up, the kernel would fill it for no one
                // (ordinary frames lost, the socket readable for ever) while plain reads
                // find nothing.
                let none = libc::tpacket_req {
                    tp_block_size: 0,
                    tp_block_nr: 0,
                    tp_frame_size: 0,
                    tp_frame_nr: 0,
                };
                // SAFETY: as above; a request of no blocks frees the ring.
                let _ = unsafe { setsockopt_at(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &none) };
                return Err(e);
            }
        };
        Ok(PacketRing {
            map,
            frame_size,
            frame_nr,
            next: 0,
            losing: false,
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
        self.losing |= st & libc::TP_STATUS_LOSING != 0;
        if st & libc::TP_STATUS_COPY != 0 {
            f(RingFrame::Queued);
        } else if h.snaplen < h.len || h.mac < hdr || h.mac + h.snaplen > self.frame_size {
            f(RingFrame::Truncated);
        } else {
            f(RingFrame::Frame {
                frame: &slot[h.mac - hdr..h.mac + h.snaplen],
                tag: aux_tag(st, h.vlan_tci, h.vlan_tpid),
            });
        }
        self.status()
            .store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = (self.next + 1) % self.frame_nr;
        true
    }

    /// Whether a slot taken since the last call said the kernel had dropped frames on
    /// the socket that [`packet_drops`] has not read yet (the kernel flags every frame
    /// it hands over while its drop count is not zero).
    pub fn losing(&mut self) -> bool {
        std::mem::take(&mut self.losing)
    }
}

/// Frames the kernel dropped on packet socket `fd` since the last call, because its
/// receive ring or its socket buffer was full (`PACKET_STATISTICS`' `tp_drops`, which
/// the kernel resets on each read).
pub fn packet_drops(fd: &OwnedFd) -> io::Result<u32> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    // SAFETY: PACKET_STATISTICS gives a `tpacket_stats` (for a TPACKET_V2 socket
    // exactly one), two integers any bytes make.
    unsafe {
        super::getsockopt_at(
            fd.as_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut st,
        )
    }?;
    Ok(st.tp_drops)
}

/// What [`recv_frame`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The frame's whole length, virtio-net header included; more than the buffer
    /// means it was cut short.
    pub len: usize,
    /// The outer VLAN tag the kernel took out of it.
    pub tag: Option<Outer>,
}

/// Reads the next frame queued on packet socket `fd` (which has `PACKET_AUXDATA`) into
/// `buf`, with `recvmsg`: its length even if it did not fit (`MSG_TRUNC`), and its tag
/// from the control message. Should the control message be cut short (there is room
/// for it, and it is the only one asked for), the frame is reported as cut short too:
/// a tag is never lost unseen.
pub fn recv_frame(fd: &OwnedFd, buf: &mut [u8]) -> rustix::io::Result<Received> {
    // Room for one `tpacket_auxdata` message (CMSG_SPACE(20) is 40 on LP64), aligned
    // for its `cmsghdr`.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `msghdr` is plain integers and pointers, for which all zeros (null, no
    // length) is a valid value; the fields that matter are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: the kernel writes at most `iov_len` bytes at `iov_base` (all of `buf`,
    // borrowed mutably for the call) and at most `msg_controllen` bytes at
    // `msg_control` (`control`, on this stack frame), and updates `msg`, which lives
    // across the call; it keeps none of these pointers afterwards.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(rustix::io::Errno::from_raw_os_error(e));
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Ok(Received {
            len: (n as usize).max(buf.len() + 1),
            tag: None,
        });
    }
    let used = (msg.msg_controllen as usize).min(control.0.len());
    Ok(Received {
        len: n as usize,
        tag: auxdata_tag(&control.0[..used]),
    })
}

/// The tag in the `PACKET_AUXDATA` message among the control messages `control` (what
/// `recvmsg` filled in): `cmsghdr`s, each followed by its data, each padded to the
/// alignment of a `size_t`.
fn auxdata_tag(control: &[u8]) -> Option<Outer> {
    const ALIGN: usize = size_of::<usize>();
    let hdr = size_of::<libc::cmsghdr>();
    let aux = size_of::<libc::tpacket_auxdata>();
    let u32_at = |b: &[u8], o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let u16_at = |b: &[u8], o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let mut at = 0;
    while at + hdr <= control.len() {
        let c = &control[at..];
        let mut len = [0u8; ALIGN];
        len.copy_from_slice(&c[..ALIGN]);
        let len = usize::from_ne_bytes(len);
        let level = u32_at(c, offset_of!(libc::cmsghdr, cmsg_level)) as i32;
        let kind = u32_at(c, offset_of!(libc::cmsghdr, cmsg_type)) as i32;
        if len < hdr || len > c.len() {
            return None;
        }
        if level == libc::SOL_PACKET && kind == libc::PACKET_AUXDATA && len >= hdr + aux {
            let d = &c[hdr..];
            return aux_tag(
                u32_at(d, offset_of!(libc::tpacket_auxdata, tp_status)),
                u16_at(d, offset_of!(libc::tpacket_auxdata, tp_vlan_tci)),
                u16_at(d, offset_of!(libc::tpacket_auxdata, tp_vlan_tpid)),
            );
        }
        at += len.next_multiple_of(ALIGN);
    }
    None
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
        assert_eq!((TP_VLAN_TCI, TP_VLAN_TPID), (24, 26));
        assert_eq!(size_of::<libc::tpacket_auxdata>(), 20);
        assert_eq!(offset_of!(libc::tpacket_auxdata, tp_vlan_tci), 16);
        assert_eq!(offset_of!(libc::tpacket_auxdata, tp_vlan_tpid), 18);
        assert_eq!(
            (libc::TP_STATUS_VLAN_VALID, libc::TP_STATUS_VLAN_TPID_VALID),
            (0x10, 0x40)
        );
        assert_eq!(IntOption::Auxdata as i32, 8);
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
        assert_eq!((libc::PACKET_STATISTICS, libc::TP_STATUS_LOSING), (6, 4));
        assert_eq!(size_of::<libc::tpacket_stats>(), 8);
        assert_eq!(offset_of!(libc::tpacket_stats, tp_drops), 4);
    }

    #[test]
    fn slot_header_reads_its_fields_where_the_kernel_puts_them() {
        let mut slot = [0xa5u8; 64];
        slot[4..8].copy_from_slice(&1514u32.to_ne_bytes());
        slot[8..12].copy_from_slice(&60u32.to_ne_bytes());
        slot[12..14].copy_from_slice(&42u16.to_ne_bytes());
        slot[24..26].copy_from_slice(&0x600au16.to_ne_bytes());
        slot[26..28].copy_from_slice(&0x88a8u16.to_ne_bytes());
        assert_eq!(
            SlotHeader::read(&slot),
            SlotHeader {
                len: 1514,
                snaplen: 60,
                mac: 42,
                vlan_tci: 0x600a,
                vlan_tpid: 0x88a8,
            }
        );
    }

    #[test]
    fn a_tag_is_there_only_when_the_status_says_so_and_is_802_1q_without_a_tpid() {
        let s_tag = Outer {
            tpid: EtherType::QINQ,
            tci: Tci(100),
        };
        assert_eq!(
            aux_tag(0x51, 100, 0x88a8),
            Some(s_tag),
            "what this kernel sends"
        );
        assert_eq!(aux_tag(0x01, 100, 0x88a8), None);
        assert_eq!(
            aux_tag(0x11, 0x600a, 0),
            Some(Outer {
                tpid: EtherType::VLAN,
                tci: Tci::new(3, false, 10)
            }),
            "no TPID_VALID: 802.1Q"
        );
        // VID 0, PCP 0: a priority tag is still a tag.
        assert_eq!(aux_tag(0x51, 0, 0x8100).map(|t| t.tci), Some(Tci(0)));
    }

    /// `cmsghdr` (LP64: size_t len, int level, int type), then `tpacket_auxdata`.
    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let mut c = Vec::new();
        c.extend_from_slice(&(16 + data.len()).to_ne_bytes());
        c.extend_from_slice(&level.to_ne_bytes());
        c.extend_from_slice(&kind.to_ne_bytes());
        c.extend_from_slice(data);
        c.resize(c.len().next_multiple_of(8), 0xa5);
        c
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn auxdata_is_found_among_control_messages_and_garbage_reads_as_none() {
        let mut aux = Vec::new();
        for w in [0x51u32, 64, 64] {
            aux.extend_from_slice(&w.to_ne_bytes());
        }
        for h in [14u16, 14, 10, 0x8100] {
            aux.extend_from_slice(&h.to_ne_bytes());
        }
        let want = Some(Outer {
            tpid: EtherType::VLAN,
            tci: Tci(10),
        });
        let one = cmsg(libc::SOL_PACKET, libc::PACKET_AUXDATA, &aux);
        assert_eq!(one.len(), 40, "CMSG_SPACE(20)");
        assert_eq!(auxdata_tag(&one), want);
        // After another message (a timestamp, say), still found.
        let mut two = cmsg(libc::SOL_SOCKET, libc::SO_TIMESTAMP, &[0xa5; 16]);
        two.extend_from_slice(&one);
        assert_eq!(auxdata_tag(&two), want);
        // Untagged, short, or with a length that overruns: no tag, no panic.
        let mut plain = aux.clone();
        plain[0] = 0x01;
        assert_eq!(
            auxdata_tag(&cmsg(libc::SOL_PACKET, libc::PACKET_AUXDATA, &plain)),
            None
        );
        assert_eq!(auxdata_tag(&one[..30]), None);
        let mut bad = one.clone();
        bad[0] = 200;
        assert_eq!(auxdata_tag(&bad), None);
        for n in 0..one.len() {
            let _ = auxdata_tag(&one[..n]);
        }
        assert_eq!(auxdata_tag(&[]), None);
    }
}
