//! Existing interfaces attached by name (`vale-ctl -a vale0:eth0`) through an AF_PACKET
//! socket: a TPACKET_V2 receive ring for ordinary frames, reads for GSO super-frames.
//!
//! The kernel hands packet sockets each received frame without its outer VLAN tag,
//! which it gives beside the frame (the ring slot's header, `PACKET_AUXDATA`); the tag
//! is put back here, so that tagged frames cross the switch as they were on the wire
//! (a QinQ frame would otherwise lose its S-tag). Frames sent keep their tags in the
//! data, which the kernel sends as it is.
//!
//! Frames the kernel drops because the ring (or, without one, the socket buffer) is
//! full are counted as `kernel_drops`, read from the socket (`PACKET_STATISTICS`, one
//! system call) when a slot says there were some, before the forwarding thread
//! sleeps, about once a second while it is busy, and at detach.

use super::fd_io::{self, Fault};
use super::rings::ring_put;
use super::{
    AfterDetach, Attach, BURST, Backend, Direct, DrivenPort, MAX_FRAME, PortCounters, PortRings,
    Start, Status, Watcher,
};
use crate::error::{CtlError, PortError};
use crate::sys::{self, PacketRing, RingFrame};
use rustix::fd::OwnedFd;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vale_wire::vlan::{Outer, TAG_LEN};
use vale_wire::{ethernet, virtio_net};

/// The control side: just the interface's name (the socket is opened on attach).
pub struct Nic {
    ifname: String,
    /// The interface's index when it was attached: one deleted and made again under
    /// the same name is another interface, which the port's socket is not on.
    ifindex: Option<u32>,
}

impl Nic {
    pub fn create(ifname: &str) -> Result<Nic, CtlError> {
        Ok(Nic {
            ifname: ifname.to_string(),
            ifindex: None,
        })
    }
}

impl Backend for Nic {
    fn kind(&self) -> &'static str {
        "nic"
    }

    fn attach(&self) -> Attach {
        Attach {
            hdr_len: sys::PACKET_VNET_HDR_LEN,
            direct: true,
        }
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let ifname = &self.ifname;
        let i = sys::if_index(ifname).ok_or_else(|| PortError::Gone(ifname.clone()))?;
        self.ifindex = Some(i);
        let dev = sys::packet_socket(i).map_err(|e| PortError::Io {
            what: format!("cannot open an AF_PACKET socket on {ifname}"),
            source: e,
            hint: " (valed needs CAP_NET_RAW)",
        })?;
        // 2048-byte slots for ordinary frames (super-frames come through the socket), or
        // plain reads if the kernel refuses a ring.
        let ring = PacketRing::new(&dev, 2048, 1024)
            .map_err(|e| tracing::warn!(interface = %ifname, "no receive ring, plain reads: {e}"))
            .ok();
        cx.watcher.add(&dev)?;
        Ok(Box::new(PacketIo {
            dev,
            ring,
            rings: cx.rings,
            counters: cx.counters,
            watcher: cx.watcher,
            name: ifname.clone(),
            closed: false,
            buf: vec![0u8; TAG_LEN + MAX_FRAME],
            passes: 0,
            drops_at: Instant::now(),
        }))
    }

    fn stop(&mut self) -> AfterDetach {
        AfterDetach::Forget
    }

    fn describe(&self) -> String {
        format!("AF_PACKET on {}", self.ifname)
    }

    fn status(&self) -> Status {
        Status {
            gone: gone(&self.ifname, self.ifindex),
            waiting: false,
        }
    }
}

/// Whether interface `ifname`, attached when its index was `at`, is gone: no
/// interface of that name, or another one (deleted and made again).
pub(super) fn gone(ifname: &str, at: Option<u32>) -> bool {
    match (sys::if_index(ifname), at) {
        (None, _) => true,
        (Some(now), Some(then)) => now != then,
        (Some(_), None) => false,
    }
}

/// The forwarding thread's side of an attached interface.
struct PacketIo {
    dev: OwnedFd,
    /// The socket's receive ring, if the kernel gave one.
    ring: Option<PacketRing>,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    name: String,
    /// The socket stopped working for good: out of the epoll set.
    closed: bool,
    /// A frame read from the socket, or copied out of the ring to take its tag back:
    /// [`TAG_LEN`] bytes of room for the tag, then up to [`MAX_FRAME`] bytes (which
    /// the tag must then still fit).
    buf: Vec<u8>,
    /// Passes over the socket, and when the kernel's drop count was last read.
    passes: u32,
    drops_at: Instant,
}

/// Puts the outer VLAN tag `tag` that the kernel took out of a received frame back
/// after its two addresses, in place. `buf` holds [`TAG_LEN`] bytes of room, then the
/// virtio-net header and the frame, `len` bytes in all; returns where the frame, with
/// its header and tag, now lies. The header's offsets into the frame that lie past the
/// tag (`csum_start`, `hdr_len`; the kernel counted them without it) move with it.
fn restore_tag(buf: &mut [u8], len: usize, tag: Option<Outer>) -> Range<usize> {
    let hdr = sys::PACKET_VNET_HDR_LEN as usize;
    let at = hdr + ethernet::field::ETHERTYPE.start;
    let Some(tag) = tag.filter(|_| len >= at) else {
        return TAG_LEN..TAG_LEN + len;
    };
    buf.copy_within(TAG_LEN..TAG_LEN + at, 0);
    buf[at..at + 2].copy_from_slice(&tag.tpid.0.to_be_bytes());
    buf[at + 2..at + TAG_LEN].copy_from_slice(&tag.tci.0.to_be_bytes());
    let h = virtio_net::VnetHdr::parse(&buf[..hdr]);
    // A frame of 64 KiB has no header past 65531: saturating leaves such an offset
    // outside the frame, which the switch drops and counts (`bad_offload`).
    let moved = |o: u16| o.saturating_add(TAG_LEN as u16).to_le_bytes();
    if h.flags & virtio_net::F_NEEDS_CSUM != 0 {
        buf[virtio_net::field::CSUM_START].copy_from_slice(&moved(h.csum_start));
    }
    if h.hdr_len != 0 {
        buf[virtio_net::field::HDR_LEN].copy_from_slice(&moved(h.hdr_len));
    }
    0..len + TAG_LEN
}

impl PacketIo {
    /// Adds the frames the kernel dropped on the socket since the last read (the read
    /// resets its count) to `kernel_drops`.
    fn read_drops(&mut self) {
        self.drops_at = Instant::now();
        if let Ok(n) = sys::packet_drops(&self.dev) {
            PortCounters::lost(&self.counters.kernel_drops, u64::from(n));
        }
    }

    /// Frames straight from the receive ring's shared memory (no system call per
    /// frame); super-frames the kernel queued on the socket instead are read with
    /// `recvmsg`.
    fn pull_ring(&mut self, need: u32) -> usize {
        let mut got = 0;
        while got < BURST && self.rings.tx.space() >= need {
            let Some(ring) = self.ring.as_mut() else {
                break;
            };
            let (tx, c, buf) = (&self.rings.tx, &self.counters, &mut self.buf);
            let mut queued = false;
            let took = ring.take(|f| match f {
                RingFrame::Empty => {}
                RingFrame::Frame { frame, tag: None } => {
                    ring_put(tx, frame);
                    c.count_in(frame.len());
                }
                RingFrame::Frame { frame, tag } => {
                    // A slot is far smaller than `buf`.
                    buf[TAG_LEN..TAG_LEN + frame.len()].copy_from_slice(frame);
                    let f = restore_tag(buf, frame.len(), tag);
                    ring_put(tx, &buf[f.clone()]);
                    c.count_in(f.len());
                }
                RingFrame::Queued => queued = true,
                RingFrame::Truncated => PortCounters::lost(&c.truncated, 1),
            });
            if !took {
                break;
            }
            if queued {
                // A pending socket error (ENETDOWN) is returned by the first read, which
                // clears it: read again, or the frame stays queued and every later one
                // would be read in place of the next.
                let r = match self.recv() {
                    Err(e) if e != rustix::io::Errno::AGAIN => {
                        PortCounters::lost(&self.counters.read_errors, 1);
                        self.recv()
                    }
                    r => r,
                };
                if r.is_err() {
                    PortCounters::lost(&self.counters.truncated, 1);
                }
            }
            got += 1;
        }
        if got > 0 {
            self.rings.tx.txsync();
        }
        got
    }

    /// Without a ring: up to a burst of frames read from the socket.
    fn pull_socket(&mut self, need: u32) -> usize {
        let mut got = 0;
        while got < BURST && self.rings.tx.space() >= need {
            match self.recv() {
                Ok(()) => got += 1,
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    // An interface that went down: count and try again on a later pass.
                    PortCounters::lost(&self.counters.read_errors, 1);
                    break;
                }
            }
        }
        if got > 0 {
            self.rings.tx.txsync();
        }
        got
    }

    /// Reads the next frame queued on the socket into the TX ring (the caller checked
    /// there is room), its tag put back; one longer than [`MAX_FRAME`] with its tag is
    /// counted as `truncated`. Errors: nothing was read.
    fn recv(&mut self) -> rustix::io::Result<()> {
        let r = sys::recv_frame(&self.dev, &mut self.buf[TAG_LEN..])?;
        let hdr = sys::PACKET_VNET_HDR_LEN as usize;
        let tag_len = if r.tag.is_some() { TAG_LEN } else { 0 };
        if r.len < hdr || r.len + tag_len > MAX_FRAME {
            PortCounters::lost(&self.counters.truncated, 1);
            return Ok(());
        }
        let f = restore_tag(&mut self.buf, r.len, r.tag);
        ring_put(&self.rings.tx, &self.buf[f.clone()]);
        self.counters.count_in(f.len());
        Ok(())
    }
}

impl DrivenPort for PacketIo {
    fn pull(&mut self) -> usize {
        let need = fd_io::fresh_tx(&self.rings);
        if self.closed {
            return 0;
        }
        let got = if self.ring.is_some() {
            self.pull_ring(need)
        } else {
            self.pull_socket(need)
        };
        // The kernel's drop count: at once when a slot says it dropped some, else
        // about once a second while busy (the clock read every 1024th pass; `arm`
        // reads it before the thread sleeps).
        self.passes = self.passes.wrapping_add(1);
        let losing = self.ring.as_mut().is_some_and(|r| r.losing());
        if losing || (self.passes % 1024 == 0 && self.drops_at.elapsed() >= Duration::from_secs(1))
        {
            self.read_drops();
        }
        got
    }

    fn push(&mut self) -> usize {
        let buf = &mut self.buf[..MAX_FRAME];
        fd_io::write_frames(&self.dev, &self.rings, &self.counters, buf, None)
    }

    fn send(&mut self, pkt: &Direct<'_>) -> bool {
        fd_io::write_direct(&self.dev, &self.counters, pkt)
    }

    /// The thread is going to sleep: what the kernel dropped is counted first, so an
    /// idle port's `kernel_drops` is up to date.
    fn arm(&mut self) -> bool {
        if !self.closed {
            self.read_drops();
        }
        false
    }

    fn fault(&mut self) {
        if !self.closed && fd_io::read_fault(&self.dev, &self.counters, &self.name) == Fault::Gone {
            self.closed = true;
            self.watcher.remove(&self.dev);
        }
    }
}

impl Drop for PacketIo {
    /// Detached: the last drops the kernel counted.
    fn drop(&mut self) {
        self.read_drops();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vale_wire::EtherType;
    use vale_wire::vlan::Tci;

    /// TSO over IPv4 at MSS 1448, checksum from byte 34 (field at +16), 54 bytes of
    /// headers: what the kernel says of an untagged TCP super-frame.
    const TSO: [u8; 10] = [0x01, 0x01, 0x36, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];
    const MACS: [u8; 12] = [1, 2, 3, 4, 5, 6, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16];

    /// Four bytes of room (0xa5, so that a forgotten byte shows), `hdr`, the addresses,
    /// IPv4 and a short payload: 10 + 18 bytes after the room.
    fn received(hdr: [u8; 10]) -> Vec<u8> {
        let mut b = vec![0xa5; TAG_LEN];
        b.extend_from_slice(&hdr);
        b.extend_from_slice(&MACS);
        b.extend_from_slice(&[0x08, 0x00, 0xaa, 0xbb, 0xcc, 0xdd]);
        b
    }

    #[test]
    fn the_s_tag_goes_back_after_the_addresses_and_the_offsets_past_it_move() {
        let mut b = received(TSO);
        let len = b.len() - TAG_LEN;
        let s_tag = Outer {
            tpid: EtherType::QINQ,
            tci: Tci::new(0, false, 100),
        };
        let f = restore_tag(&mut b, len, Some(s_tag));
        assert_eq!(f, 0..len + TAG_LEN);
        let want: Vec<u8> = [
            &[0x01, 0x01, 0x3a, 0x00, 0xa8, 0x05, 0x26, 0x00, 0x10, 0x00][..], // 58, 38
            &MACS,
            &[0x88, 0xa8, 0x00, 0x64],
            &[0x08, 0x00, 0xaa, 0xbb, 0xcc, 0xdd],
        ]
        .concat();
        assert_eq!(&b[f], &want[..]);
    }

    #[test]
    fn a_plain_header_stays_as_it_is_and_an_untagged_frame_is_not_touched() {
        let mut b = received([0; 10]);
        let len = b.len() - TAG_LEN;
        let c_tag = Outer {
            tpid: EtherType::VLAN,
            tci: Tci::new(3, false, 10),
        };
        let f = restore_tag(&mut b, len, Some(c_tag));
        assert_eq!(&b[f.start..f.start + 10], &[0; 10], "no offsets to move");
        assert_eq!(&b[f.start + 22..f.start + 26], &[0x81, 0x00, 0x60, 0x0a]);

        let mut b = received(TSO);
        let before = b.clone();
        let f = restore_tag(&mut b, len, None);
        assert_eq!(f, TAG_LEN..TAG_LEN + len);
        assert_eq!(b, before);
    }

    #[test]
    fn a_frame_without_its_addresses_is_left_untagged() {
        let mut b = received(TSO);
        b.truncate(TAG_LEN + 10 + 11);
        let before = b.clone();
        let tag = Outer {
            tpid: EtherType::VLAN,
            tci: Tci(10),
        };
        assert_eq!(restore_tag(&mut b, 21, Some(tag)), TAG_LEN..TAG_LEN + 21);
        assert_eq!(b, before);
    }
}
