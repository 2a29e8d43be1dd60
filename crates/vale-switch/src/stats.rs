//! Per-port counters. Every frame a port's client sends is accounted for:
//!
//! `tx_packets = forwarded + runt + bad_buf + bad_len + bad_frag + no_dest`
//!
//! and every destination copy of a forwarded frame is either delivered (counted in the
//! destination's `rx_packets`) or dropped (counted in the destination's `ring_full` /
//! `oversize` / `bad_rx_buf` / `bad_offload` / `tx_error` and in the sender's
//! `copies_dropped`):
//!
//! `copies = copies_delivered + copies_dropped`.

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
    /// Counted on the destination: a direct port's interface refused the frame (host
    /// ports; see `Switch::set_direct`).
    TxError = 9,
}

impl DropReason {
    pub const ALL: [DropReason; 10] = [
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
    pub tx_packets: u64,
    /// Bytes of the frames in `forwarded`.
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames of this port that had at least one destination.
    pub forwarded: u64,
    /// Destination copies of this port's forwarded frames (1 per unicast, N per flood).
    pub copies: u64,
    /// Of `copies`, those a destination dropped.
    pub copies_dropped: u64,
    /// Drops by [`DropReason`], indexed by `reason as usize`.
    pub drops: [u64; 10],
    /// Times a ring of this port was reset because the client broke the ring protocol.
    pub ring_resets: u64,
}

impl PortStats {
    /// Adds the counts of `d` (one batch's) to these.
    #[inline]
    pub(crate) fn add(&mut self, d: &PortStats) {
        self.tx_packets += d.tx_packets;
        self.tx_bytes += d.tx_bytes;
        self.rx_packets += d.rx_packets;
        self.rx_bytes += d.rx_bytes;
        self.forwarded += d.forwarded;
        self.copies += d.copies;
        self.copies_dropped += d.copies_dropped;
        for (a, b) in self.drops.iter_mut().zip(d.drops) {
            *a += b;
        }
        self.ring_resets += d.ring_resets;
    }

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

    /// The sender-side conservation law holds.
    pub fn is_conserved(&self) -> bool {
        self.tx_packets == self.forwarded + self.sender_drops()
            && self.copies >= self.copies_dropped
    }
}
