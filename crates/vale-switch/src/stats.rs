//! Per-port counters, and the laws that tie them together. Each counter is counted
//! where its event happens, independently of the others, so a law can fail: a frame
//! the engine loses without counting it breaks one of them.
//!
//! A port as a **sender** (`tx_packets` is counted when the engine reads a frame from
//! the port's TX ring, before it decides anything about it):
//!
//! `tx_packets = forwarded + runt + bad_buf + bad_len + bad_frag + no_dest
//!     + vlan_ingress_filter + vlan_not_member`
//!
//! Each forwarded frame makes `copies` (counted when it is routed: 1 per unicast, one
//! per other port for a flood), and each copy is handed to its destination, which
//! counts it in `rx_copies`. Copies to monitor ports are not the sender's: a monitor
//! counts what it is handed in `mon_copies`. A copy the destination must segment in
//! software (a TSO super-frame from a port with a virtio-net header to one without)
//! becomes `k` frames: the destination counts the copy in `rx_segmented` and its
//! segments in `rx_segments`. A port as a **receiver** then delivers or drops (by a
//! receiver reason) every frame it was handed:
//!
//! `rx_copies + mon_copies - rx_segmented + rx_segments =
//!     rx_packets + ring_full + oversize + bad_rx_buf + bad_offload + tx_error`
//!
//! and over a **switch** (between batches), every copy a sender made reached a
//! destination's count, so all frames are delivered or counted:
//!
//! `sum(copies) = sum(rx_copies)`, `sum(copies_dropped) <= sum(receiver drops)`
//!
//! (`copies_dropped` counts the copies of which nothing was delivered; a segmented
//! copy that lost only some of its segments is not one of them). [`PortStats::broken_law`]
//! checks the per-port laws, `Switch::broken_law` all three.
//!
//! A port's counters live in a [`PortCounters`] block of atomics that the forwarding
//! thread publishes once per batch and anyone holding its `Arc` reads without stopping
//! the forwarder (Snabb's shared-memory counters); [`PortStats`] is a snapshot of it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a frame (or one destination copy of it) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Counted on the destination: its RX ring had no room.
    RingFull = 0,
    /// Counted on the sender: first fragment shorter than an Ethernet header (14 bytes).
    Runt = 1,
    /// Counted on the sender: a slot named a reserved or out-of-range buffer, or used
    /// `NS_INDIRECT` (a pointer into the sender's address space).
    BadBuf = 2,
    /// Counted on the sender: a slot's `len` exceeds the buffer size.
    BadLen = 3,
    /// Counted on the sender: an `NS_MOREFRAG` chain longer than 64 slots or not
    /// finished at `head`.
    BadFrag = 4,
    /// Counted on the sender: the lookup found no destination (drop verdict, the sender
    /// itself, a missing port, or a flood with nobody else on the switch).
    NoDest = 5,
    /// Counted on the destination: a fragment is larger than its buffers.
    Oversize = 6,
    /// Counted on the destination: its own RX slot named an invalid buffer.
    BadRxBuf = 7,
    /// Counted on the destination: a packet from a port with a virtio-net header asked
    /// for offloads the switch could not finish for this port (malformed headers, an
    /// unsupported segmentation type, checksum offsets outside the frame).
    BadOffload = 8,
    /// Counted on the destination: a direct port did not take the frame (its
    /// [`Egress`](crate::Egress) refused it; see `Switch::set_direct`). A frame it takes
    /// and then cannot write is the port's own loss (valed's host `write_errors`).
    TxError = 9,
    /// Counted on the sender (a switch with `vlan_filtering` on): its port does not
    /// admit the frame: a tag on an access port, a VID outside a trunk's set, an
    /// untagged frame on a trunk without a native VLAN.
    VlanIngressFilter = 10,
    /// Counted on the sender (`vlan_filtering` on): the frame's destination is not a
    /// member of its VLAN, or no other port is (a flood with nowhere to go).
    VlanNotMember = 11,
}

impl DropReason {
    /// How many reasons there are (the length of [`PortStats::drops`]).
    pub const COUNT: usize = 12;
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::RingFull,
        DropReason::Runt,
        DropReason::BadBuf,
        DropReason::BadLen,
        DropReason::BadFrag,
        DropReason::NoDest,
        DropReason::Oversize,
        DropReason::BadRxBuf,
        DropReason::BadOffload,
        DropReason::TxError,
        DropReason::VlanIngressFilter,
        DropReason::VlanNotMember,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::RingFull => "ring_full",
            DropReason::Runt => "runt",
            DropReason::BadBuf => "bad_buf",
            DropReason::BadLen => "bad_len",
            DropReason::BadFrag => "bad_frag",
            DropReason::NoDest => "no_dest",
            DropReason::Oversize => "oversize",
            DropReason::BadRxBuf => "bad_rx_buf",
            DropReason::BadOffload => "bad_offload",
            DropReason::TxError => "tx_error",
            DropReason::VlanIngressFilter => "vlan_ingress_filter",
            DropReason::VlanNotMember => "vlan_not_member",
        }
    }

    /// Whether the drop is counted on the sending port (else on the destination).
    pub fn on_sender(self) -> bool {
        !matches!(
            self,
            DropReason::RingFull
                | DropReason::Oversize
                | DropReason::BadRxBuf
                | DropReason::BadOffload
                | DropReason::TxError
        )
    }
}

/// Counters of one port. "tx" and "rx" are from the client's point of view, as in
/// netmap: tx = frames the client sent into the switch, rx = frames delivered to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames read from this port's TX rings (each frame once, whatever became of it).
    pub tx_packets: u64,
    /// Bytes of the frames in `forwarded`.
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames of this port that had at least one destination.
    pub forwarded: u64,
    /// Destination copies of this port's forwarded frames (1 per unicast, N per flood).
    pub copies: u64,
    /// Of `copies`, those of which the destination delivered nothing.
    pub copies_dropped: u64,
    /// Copies of other ports' frames handed to this port as a destination.
    pub rx_copies: u64,
    /// Of `rx_copies`, those segmented in software (TSO) for this port.
    pub rx_segmented: u64,
    /// Segments the `rx_segmented` copies became (each then delivered or dropped).
    pub rx_segments: u64,
    /// Copies handed to this port as a monitor (netmap's `/t`, `/r`).
    pub mon_copies: u64,
    /// Drops by [`DropReason`], indexed by `reason as usize`.
    pub drops: [u64; DropReason::COUNT],
    /// Times a ring of this port was reset because the client broke the ring protocol.
    pub ring_resets: u64,
}

impl PortStats {
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Drops counted on this port as a sender.
    pub fn sender_drops(&self) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|r| r.on_sender())
            .map(|r| self.drops[*r as usize])
            .sum()
    }

    /// Drops counted on this port as a destination.
    pub fn receiver_drops(&self) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|r| !r.on_sender())
            .map(|r| self.drops[*r as usize])
            .sum()
    }

    /// Frames this port was handed to deliver: copies (its own and as a monitor), with
    /// each segmented copy counted as its segments.
    pub fn rx_frames(&self) -> u64 {
        (self.rx_copies + self.mon_copies + self.rx_segments).wrapping_sub(self.rx_segmented)
    }

    /// The first of this port's laws (see the module doc) that its counters break, as
    /// a sentence with the figures; `None` if they all hold.
    pub fn broken_law(&self) -> Option<String> {
        let drops = self.sender_drops();
        if self.tx_packets != self.forwarded + drops {
            return Some(format!(
                "tx_packets {} != forwarded {} + sender drops {drops}",
                self.tx_packets, self.forwarded
            ));
        }
        if self.copies < self.copies_dropped || self.rx_segments < self.rx_segmented {
            return Some(format!(
                "copies {} < copies_dropped {}, or rx_segments {} < rx_segmented {}",
                self.copies, self.copies_dropped, self.rx_segments, self.rx_segmented
            ));
        }
        let drops = self.receiver_drops();
        if self.rx_frames() != self.rx_packets + drops {
            return Some(format!(
                "rx_copies {} + mon_copies {} - rx_segmented {} + rx_segments {} != \
                 rx_packets {} + receiver drops {drops}",
                self.rx_copies,
                self.mon_copies,
                self.rx_segmented,
                self.rx_segments,
                self.rx_packets
            ));
        }
        None
    }

    /// Adds another port's counts to these (a sum of ports keeps their laws).
    pub fn absorb(&mut self, o: &PortStats) {
        let PortStats {
            tx_packets,
            tx_bytes,
            rx_packets,
            rx_bytes,
            forwarded,
            copies,
            copies_dropped,
            rx_copies,
            rx_segmented,
            rx_segments,
            mon_copies,
            drops,
            ring_resets,
        } = o;
        self.tx_packets += tx_packets;
        self.tx_bytes += tx_bytes;
        self.rx_packets += rx_packets;
        self.rx_bytes += rx_bytes;
        self.forwarded += forwarded;
        self.copies += copies;
        self.copies_dropped += copies_dropped;
        self.rx_copies += rx_copies;
        self.rx_segmented += rx_segmented;
        self.rx_segments += rx_segments;
        self.mon_copies += mon_copies;
        for (a, b) in self.drops.iter_mut().zip(drops) {
            *a += b;
        }
        self.ring_resets += ring_resets;
    }

    /// Both of the port's laws hold (see [`Self::broken_law`]).
    pub fn is_conserved(&self) -> bool {
        self.broken_law().is_none()
    }
}

/// The first law that ports' counters break, each port's own laws first, then the
/// switch's: every copy a sender counted reached a destination's count.
pub fn broken_switch_law<'a>(ports: impl Iterator<Item = (&'a str, PortStats)>) -> Option<String> {
    let (mut copies, mut rx_copies, mut dropped, mut rx_drops) = (0u64, 0u64, 0u64, 0u64);
    for (name, s) in ports {
        if let Some(law) = s.broken_law() {
            return Some(format!("port {name}: {law}"));
        }
        copies += s.copies;
        rx_copies += s.rx_copies;
        dropped += s.copies_dropped;
        rx_drops += s.receiver_drops();
    }
    if copies != rx_copies {
        return Some(format!(
            "the senders made {copies} copies, the destinations were handed {rx_copies}"
        ));
    }
    if dropped > rx_drops {
        return Some(format!(
            "the senders count {dropped} copies dropped, the destinations only {rx_drops} drops"
        ));
    }
    None
}

/// The counters of one port, readable by any thread while the forwarder runs.
///
/// Several writers: on a switch forwarded by several threads, any of them may add to a
/// port's counters, so an add is a relaxed read-modify-write (once per counter that
/// changed, per destination and batch: a few per thousand frames). Each counter read
/// is up to date as of some publication; a [`PortCounters::snapshot`] taken while a batch is being published may
/// have some of that batch's counts and not others, so the conservation laws hold
/// exactly only between batches (for instance under the lock that stops the forwarder).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct PortCounters {
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    forwarded: AtomicU64,
    copies: AtomicU64,
    copies_dropped: AtomicU64,
    rx_copies: AtomicU64,
    rx_segmented: AtomicU64,
    rx_segments: AtomicU64,
    mon_copies: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
    ring_resets: AtomicU64,
}

/// Adds `d` to a counter (see [`PortCounters`]).
#[inline(always)]
fn bump(c: &AtomicU64, d: u64) {
    if d != 0 {
        c.fetch_add(d, Relaxed);
    }
}

impl PortCounters {
    /// The counters now, as plain numbers.
    pub fn snapshot(&self) -> PortStats {
        PortStats {
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            forwarded: self.forwarded.load(Relaxed),
            copies: self.copies.load(Relaxed),
            copies_dropped: self.copies_dropped.load(Relaxed),
            rx_copies: self.rx_copies.load(Relaxed),
            rx_segmented: self.rx_segmented.load(Relaxed),
            rx_segments: self.rx_segments.load(Relaxed),
            mon_copies: self.mon_copies.load(Relaxed),
            drops: std::array::from_fn(|i| self.drops[i].load(Relaxed)),
            ring_resets: self.ring_resets.load(Relaxed),
        }
    }

    /// Publishes one batch's counts (the engine: whichever thread forwarded the batch).
    #[inline]
    pub(crate) fn add(&self, d: &PortStats) {
        bump(&self.tx_packets, d.tx_packets);
        bump(&self.tx_bytes, d.tx_bytes);
        bump(&self.rx_packets, d.rx_packets);
        bump(&self.rx_bytes, d.rx_bytes);
        bump(&self.forwarded, d.forwarded);
        bump(&self.copies, d.copies);
        bump(&self.copies_dropped, d.copies_dropped);
        bump(&self.rx_copies, d.rx_copies);
        bump(&self.rx_segmented, d.rx_segmented);
        bump(&self.rx_segments, d.rx_segments);
        bump(&self.mon_copies, d.mon_copies);
        for (c, v) in self.drops.iter().zip(d.drops) {
            bump(c, v);
        }
        bump(&self.ring_resets, d.ring_resets);
    }

    /// One ring reset (as [`Self::add`]).
    pub(crate) fn count_ring_reset(&self) {
        bump(&self.ring_resets, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch(k: u64) -> PortStats {
        let mut d = PortStats {
            tx_packets: 3 * k,
            tx_bytes: 180 * k,
            forwarded: 2 * k,
            copies: 2 * k,
            copies_dropped: k,
            ..PortStats::default()
        };
        d.drops[DropReason::NoDest as usize] = k;
        d
    }

    #[test]
    fn counters_add_batches_and_snapshot_plain_values() {
        let c = PortCounters::default();
        assert_eq!(c.snapshot(), PortStats::default());
        c.add(&batch(1));
        c.add(&batch(2));
        c.count_ring_reset();
        let s = c.snapshot();
        assert_eq!((s.tx_packets, s.tx_bytes, s.forwarded), (9, 540, 6));
        assert_eq!((s.copies, s.copies_dropped, s.ring_resets), (6, 3, 1));
        assert_eq!(s.drop_count(DropReason::NoDest), 3);
        assert_eq!(s.drop_count(DropReason::RingFull), 0);
        assert!(s.is_conserved());
    }

    #[test]
    fn each_law_names_what_breaks_it() {
        let ok = batch(1);
        assert_eq!(ok.broken_law(), None);
        let mut s = ok.clone();
        s.tx_packets += 1; // a frame read and then lost
        assert!(
            s.broken_law()
                .unwrap()
                .starts_with("tx_packets 4 != forwarded 2")
        );
        let mut s = ok.clone();
        s.rx_copies = 3; // handed 3, delivered 2, dropped 0
        s.rx_packets = 2;
        assert!(s.broken_law().unwrap().contains("rx_copies 3"));
        s.drops[DropReason::RingFull as usize] = 1;
        assert_eq!(s.broken_law(), None);
        s.rx_segmented = 1; // one of them became 4 segments, all delivered
        s.rx_segments = 4;
        assert!(s.broken_law().is_some());
        s.rx_packets += 3;
        assert_eq!(s.broken_law(), None);
        // Over a switch: ok's 2 copies went nowhere.
        let law = broken_switch_law([("a", ok.clone())].into_iter()).unwrap();
        assert!(
            law.contains("2 copies") && law.contains("handed 0"),
            "{law}"
        );
        let mut dst = PortStats {
            rx_copies: 2,
            rx_packets: 1,
            ..PortStats::default()
        };
        dst.drops[DropReason::RingFull as usize] = 1;
        assert_eq!(broken_switch_law([("a", ok), ("b", dst)].into_iter()), None);
    }

    #[test]
    fn counters_are_read_while_their_writer_runs() {
        let c = Arc::new(PortCounters::default());
        let reader = {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                let mut last = 0;
                for _ in 0..10_000 {
                    let now = c.snapshot().tx_packets;
                    assert!(now >= last, "a counter never goes back");
                    last = now;
                }
            })
        };
        for _ in 0..100_000 {
            c.add(&batch(1));
        }
        reader.join().unwrap();
        assert_eq!(c.snapshot(), {
            let mut want = batch(100_000);
            want.tx_packets = 300_000;
            want
        });
    }
}
