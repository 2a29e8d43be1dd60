//! A memif port's data plane, run by its switch's forwarding thread, the same for both
//! roles: frames the peer sent (C2S when valed serves, S2C when it is the client) into
//! the port's TX ring, the port's RX ring into the peer's buffers. With no peer
//! connected, frames for the port are dropped and counted (`no_peer`).
//!
//! Interrupts follow memif's rules: while the forwarding thread polls, every ring valed
//! receives from has MASK_INT set, so a busy peer writes no eventfd; before the thread
//! sleeps it clears the flag and looks at the rings once more (a frame published in
//! between is seen either by that look or by the peer's kick). After filling the peer's
//! buffers valed writes the ring's eventfd unless the peer masked it (it polls).
//!
//! Both are a store followed by a load of another word (flag then index, index then
//! flag), which x86 itself reorders (a store waits in the store buffer while a later
//! load reads memory): without a full fence between them each side can read the other's
//! old word, the sender skips its kick and the receiver sleeps on a frame, until the
//! lane's 1-second timeout. valed puts a `SeqCst` fence in both places. A peer may not:
//! DPDK's `eth_memif_tx` stores the index and reads the flag with none (22.11 and
//! later), so its load can see MASK_INT still set while its index is not yet visible to
//! valed's look. Its store becomes visible once its store buffer drains (well under a
//! microsecond), so before sleeping valed looks again for [`RECHECK`].
//!
//! The other way round there is no kick at all: a memif receiver never tells its
//! sender it made room. Frames that found the peer's ring full wait in the port's RX
//! ring; while they do, the lane sleeps at most [`STALLED_FIRST`], then twice as long
//! each time the peer still made no room (up to [`STALLED_MAX`]), instead of its 1-second
//! timeout (seen: a testpmd server descheduled under load filled its ring, and the rest
//! of a burst reached it a ring's worth per second).

use super::conn::Conn;
use super::own::Own;
use super::ring::{Broken, Chain, Refused, Src, Unsent};
use super::server::Slot;
use crate::port::rings::{copy_at, peek_at, ring_peek, ring_put, room};
use crate::port::{BURST, DrivenPort, MAX_FRAME, PortCounters, PortRings, Watcher};
use rustix::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

/// How long valed keeps looking at the rings after clearing MASK_INT before it lets the
/// lane sleep: longer than a peer's store of its index can stay invisible after that
/// peer read the flag without a fence (see the module's comment).
pub const RECHECK: Duration = Duration::from_micros(5);
/// The longest first sleep while frames wait for room in the peer's ring (epoll's
/// granularity).
pub const STALLED_FIRST: Duration = Duration::from_millis(1);
/// The longest sleep while a peer keeps its ring full (it may never empty it).
pub const STALLED_MAX: Duration = Duration::from_millis(128);

/// One connection's rings as the data plane uses them, whichever side owns the memory.
pub trait Link: Send + 'static {
    /// The eventfds the peer writes when it published frames (valed watches them).
    fn kicks(&self) -> &[OwnedFd];
    /// Up to `max` frames the peer published, each offered to `take` where it lies
    /// (which returns false when it has no room: the frame stays for the next call).
    fn recv(
        &mut self,
        max: usize,
        refused: &mut Refused,
        take: impl FnMut(&Chain<'_>) -> bool,
    ) -> Result<usize, Broken>;
    /// Whether frames wait to be read.
    fn pending(&self) -> Result<bool, Broken>;
    /// Copies `frame` into the peer's next free buffers.
    fn send(&mut self, frame: Src<'_>) -> Result<Result<(), Unsent>, Broken>;
    /// Hands what [`Link::send`] wrote to the peer, kicking it unless it polls.
    fn publish(&mut self) -> Result<(), Broken>;
    /// Sets (valed polls) or clears (valed wants a kick) MASK_INT on the rings valed
    /// receives from.
    fn mask(&self, on: bool) -> Result<(), Broken>;
    /// Truncations caught in the peer's memory (only memory valed does not own).
    fn faults(&self) -> u64 {
        0
    }
}

impl Link for Conn {
    fn kicks(&self) -> &[OwnedFd] {
        &self.c2s_kick
    }

    fn recv(
        &mut self,
        max: usize,
        refused: &mut Refused,
        mut take: impl FnMut(&Chain<'_>) -> bool,
    ) -> Result<usize, Broken> {
        let mut moved = 0;
        for ring in &mut self.c2s {
            moved += ring.recv_chains(&self.regions, max - moved, MAX_FRAME, refused, &mut take)?;
            if moved >= max {
                break;
            }
        }
        Ok(moved)
    }

    fn pending(&self) -> Result<bool, Broken> {
        for ring in &self.c2s {
            if ring.pending(&self.regions)? > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn send(&mut self, frame: Src<'_>) -> Result<Result<(), Unsent>, Broken> {
        match self.s2c.first_mut() {
            Some(ring) => ring.send_src(&self.regions, frame),
            None => Ok(Err(Unsent::Full)),
        }
    }

    fn publish(&mut self) -> Result<(), Broken> {
        let Some(ring) = self.s2c.first() else {
            return Ok(());
        };
        ring.publish(&self.regions)?;
        // The tail before the flag is read (a store then a load: see the module).
        fence(Ordering::SeqCst);
        if !ring.masked(&self.regions) {
            let _ = rustix::io::write(&self.s2c_kick[0], &1u64.to_ne_bytes());
        }
        Ok(())
    }

    fn mask(&self, on: bool) -> Result<(), Broken> {
        for ring in &self.c2s {
            ring.mask_interrupts(&self.regions, on)?;
        }
        Ok(())
    }

    fn faults(&self) -> u64 {
        self.watched.as_ref().map_or(0, |w| w.faults())
    }
}

impl Link for Own {
    fn kicks(&self) -> &[OwnedFd] {
        std::slice::from_ref(&self.s2c_kick)
    }

    fn recv(
        &mut self,
        max: usize,
        refused: &mut Refused,
        take: impl FnMut(&Chain<'_>) -> bool,
    ) -> Result<usize, Broken> {
        self.recv_chains(max, MAX_FRAME, refused, take)
    }

    fn pending(&self) -> Result<bool, Broken> {
        Ok(Own::pending(self)? > 0)
    }

    fn send(&mut self, frame: Src<'_>) -> Result<Result<(), Unsent>, Broken> {
        self.send_src(frame)
    }

    fn publish(&mut self) -> Result<(), Broken> {
        Own::publish(self).map(|_| ())
    }

    fn mask(&self, on: bool) -> Result<(), Broken> {
        self.mask_interrupts(on)
    }
}

pub struct MemifIo<L: Link> {
    slot: Arc<Slot<L>>,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    /// The slot generation `conn` belongs to.
    seen: u64,
    conn: Option<L>,
    /// Passes spent reading what a peer that went had published (bounded).
    closing: u32,
    /// `sys::sigbus::caught()` when last looked at.
    caught_seen: u64,
    frame: Vec<u8>,
    /// Frames wait in the RX ring for room the peer has not made: the longest the lane
    /// may sleep now.
    stalled: Option<Duration>,
}

impl<L: Link> Drop for MemifIo<L> {
    fn drop(&mut self) {
        // The peer holds the same open files as these eventfds: closing valed's copies
        // would leave them in the lane's epoll set, waking it for a port that is gone.
        self.drop_conn();
    }
}

impl<L: Link> MemifIo<L> {
    pub fn new(slot: Arc<Slot<L>>, rings: PortRings, watcher: Watcher) -> MemifIo<L> {
        MemifIo {
            counters: slot.counters.clone(),
            slot,
            rings,
            watcher,
            seen: 0,
            conn: None,
            closing: 0,
            caught_seen: crate::sys::sigbus::caught(),
            frame: Vec::with_capacity(MAX_FRAME),
            stalled: None,
        }
    }

    /// Whether the connection held is the slot's current one (its peer is there).
    fn current(&self) -> bool {
        self.conn.is_some() && self.slot.generation() == self.seen
    }

    /// Picks up a new connection, or lets go of one whose peer went: once the frames
    /// it published before going are read (its memory stays mapped until then), or
    /// after a bounded number of passes.
    fn refresh(&mut self) {
        /// Passes a closing connection is read for: room for a full ring of the largest
        /// size (16384 slots) at a burst per pass, and some.
        const CLOSING_PASSES: u32 = 16384 / BURST as u32 + 64;
        let g = self.slot.generation();
        if g == self.seen {
            return;
        }
        if let Some(c) = &self.conn {
            if c.pending().unwrap_or(false) && self.closing < CLOSING_PASSES {
                self.closing += 1;
                return;
            }
        }
        self.closing = 0;
        self.seen = g;
        self.drop_conn();
        if let Some(c) = self.slot.take(g) {
            for fd in c.kicks() {
                let _ = self.watcher.add(fd);
            }
            self.conn = Some(c);
        }
    }

    fn drop_conn(&mut self) {
        if let Some(c) = self.conn.take() {
            for fd in c.kicks() {
                self.watcher.remove(fd);
            }
        }
    }

    /// The rings cannot be used: the peer is disconnected with the reason.
    fn broken(&mut self, e: Broken) {
        PortCounters::lost(&self.counters.read_errors, 1);
        // A connection whose peer already went (read to its end while a new one may
        // be waiting) is let go quietly: the slot's disconnect would end the new one.
        let current = self.current();
        self.drop_conn();
        if current {
            self.slot.broken(e.to_string());
        }
    }

    /// After the peer's memory was touched: if a truncation was caught anywhere since
    /// the last look (one atomic load when none was) and it was in this peer's memory,
    /// the fault is counted and the peer cut off. Its mapping is zero pages from then
    /// on, so nothing read from it afterwards can fault again.
    fn after_peer_memory(&mut self) {
        let now = crate::sys::sigbus::caught();
        if now == self.caught_seen {
            return;
        }
        self.caught_seen = now;
        let faults = self.conn.as_ref().map_or(0, |c| c.faults());
        if faults > 0 {
            PortCounters::lost(&self.counters.memory_faults, faults);
            let current = self.current();
            self.drop_conn();
            if current {
                self.slot
                    .broken("the client's memory was truncated under valed".into());
            }
        }
    }

    fn count(&self, r: Refused) {
        if r.bad_desc > 0 {
            PortCounters::lost(&self.counters.bad_desc, r.bad_desc);
        }
        if r.chain_too_long > 0 {
            PortCounters::lost(&self.counters.chain_too_long, r.chain_too_long);
        }
    }

    /// Nobody to deliver to: what is in the RX ring is dropped and counted.
    fn drain_rx(&mut self) {
        let rx = &self.rings.rx;
        rx.rxsync();
        let mut n = 0u64;
        while rx.space() > 0 {
            let (used, _) = ring_peek(rx);
            rx.advance(used);
            n += 1;
        }
        if n > 0 {
            PortCounters::lost(&self.counters.no_peer, n);
            rx.rxsync();
        }
    }
}

/// Puts frame `f` into the port's TX ring (which has room for it): a frame of one piece
/// that fits a slot is copied straight from the peer's memory, others through `scratch`.
fn put_chain(tx: &vale_abi::AppRing, f: &Chain<'_>, scratch: &mut Vec<u8>) {
    let v = tx.view();
    if let Some((mem, start)) = f.single() {
        let h = tx.head();
        let s = v.read_slot(h);
        if mem.copy_to_buf(start, f.len(), v.bufs().access(), s.buf_idx) {
            v.write_len_flags(h, f.len() as u16, 0);
            tx.advance(1);
            return;
        }
    }
    f.gather(scratch);
    ring_put(tx, scratch);
}

/// One pass's frames into the port's TX ring, in a batch: the ring's space, `head` and
/// buffer size are read once, a frame of one piece that fits a slot goes straight from
/// the peer's memory into the next slot, and `head` (with the port's counters) is
/// written once at the end ([`TxBatch::finish`]) instead of once a frame. Other frames
/// go through [`put_chain`], after the slots written so far are handed over.
struct TxBatch<'a> {
    tx: &'a vale_abi::AppRing,
    bufs: vale_abi::Bufs<'a>,
    buf_size: usize,
    num_slots: u32,
    /// The next slot to fill, and the free slots from it.
    head: u32,
    space: u32,
    /// Slots filled since `head` was last written to the ring.
    filled: u32,
    frames: u64,
    bytes: u64,
}

impl<'a> TxBatch<'a> {
    fn new(tx: &'a vale_abi::AppRing) -> TxBatch<'a> {
        let bufs = tx.view().bufs().access();
        TxBatch {
            tx,
            bufs,
            buf_size: bufs.buf_size() as usize,
            num_slots: tx.num_slots(),
            head: tx.head(),
            space: tx.space(),
            filled: 0,
            frames: 0,
            bytes: 0,
        }
    }

    /// Takes `f`, or returns false (nothing taken) when the ring has no room for it.
    #[inline(always)]
    fn put(&mut self, f: &Chain<'_>, scratch: &mut Vec<u8>) -> bool {
        let len = f.len();
        if len <= self.buf_size {
            if self.space == 0 {
                return false;
            }
            if let Some((mem, start)) = f.single() {
                let v = self.tx.view();
                let s = v.read_slot(self.head);
                if mem.copy_to_buf(start, len, self.bufs, s.buf_idx) {
                    v.write_len_flags(self.head, len as u16, 0);
                    self.head = vale_abi::ring::next(self.head, self.num_slots);
                    self.space -= 1;
                    self.filled += 1;
                    self.count(len);
                    return true;
                }
            }
        }
        if self.space < room(self.tx, len).max(1) {
            return false;
        }
        self.hand_over();
        put_chain(self.tx, f, scratch);
        self.head = self.tx.head();
        self.space = self.tx.space();
        self.count(len);
        true
    }

    #[inline]
    fn count(&mut self, len: usize) {
        self.frames += 1;
        self.bytes += len as u64;
    }

    /// Writes `head` (and `cur`) past the slots filled so far.
    fn hand_over(&mut self) {
        if self.filled > 0 {
            self.tx.advance(self.filled);
            self.filled = 0;
        }
    }

    /// Hands the batch to the ring and counts it; returns the frames taken.
    fn finish(mut self, counters: &PortCounters) -> u64 {
        self.hand_over();
        if self.frames > 0 {
            counters.count_in_many(self.frames, self.bytes);
        }
        self.frames
    }
}

impl<L: Link> DrivenPort for MemifIo<L> {
    fn pull(&mut self) -> usize {
        self.refresh();
        let Some(c) = &mut self.conn else {
            return 0;
        };
        let tx = &self.rings.tx;
        if tx.space() < room(tx, MAX_FRAME) {
            tx.txsync();
        }
        let frame = &mut self.frame;
        let mut refused = Refused::default();
        let mut batch = TxBatch::new(tx);
        let r = c.recv(BURST, &mut refused, |f| batch.put(f, frame));
        batch.finish(&self.counters);
        let moved = *r.as_ref().unwrap_or(&0);
        if moved > 0 {
            tx.txsync();
        }
        self.count(refused);
        if let Err(e) = r {
            self.broken(e);
        }
        self.after_peer_memory();
        moved
    }

    fn push(&mut self) -> usize {
        self.refresh();
        if !self.current() {
            self.stalled = None;
            self.drain_rx();
            return 0;
        }
        let rx = &self.rings.rx;
        rx.rxsync();
        let Some(c) = &mut self.conn else {
            return 0;
        };
        let mut sent = 0;
        let mut broke = None;
        let mut full = false;
        // The ring's positions are read once and `head` written once, after the loop.
        let v = rx.view();
        let num_slots = rx.num_slots();
        let (mut head, mut space) = (rx.head(), rx.space());
        let (mut taken, mut bytes, mut bad) = (0u32, 0u64, 0usize);
        while sent < BURST && space > 0 {
            let (used, len) = peek_at(v, head, space);
            let one = (used == 1)
                .then(|| v.bufs().access().frag(v.read_slot(head).buf_idx, 0, len))
                .flatten();
            let src = match one {
                // A frame in one slot is copied straight from it.
                Some(f) => Src::Frag(f),
                None => {
                    self.frame.clear();
                    self.frame.resize(len, 0);
                    copy_at(v, head, used, &mut self.frame);
                    Src::Bytes(&self.frame)
                }
            };
            match c.send(src) {
                Ok(Ok(())) => {
                    bytes += len as u64;
                    sent += 1;
                }
                // The peer has no buffer free: the packet waits in the RX ring (whose
                // own overflow the switch counts as ring_full).
                Ok(Err(Unsent::Full)) => {
                    full = true;
                    break;
                }
                // The frame is tried again with the next buffer; the bad ones count
                // against the burst, so a client that keeps posting them cannot keep
                // the forwarding thread here.
                Ok(Err(Unsent::BadDesc)) => {
                    PortCounters::lost(&self.counters.bad_desc, 1);
                    bad += 1;
                    if sent + bad >= BURST {
                        break;
                    }
                    continue;
                }
                Ok(Err(Unsent::TooLong)) => {
                    PortCounters::lost(&self.counters.chain_too_long, 1);
                }
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
            head = vale_abi::ring::add(head, used, num_slots);
            space -= used;
            taken += used;
        }
        if taken > 0 {
            rx.advance(taken);
        }
        if sent > 0 {
            self.counters.count_out_many(sent as u64, bytes);
        }
        // Buffers given back empty go back to the client with the frames sent.
        if sent > 0 || bad > 0 {
            if let Err(e) = c.publish() {
                broke = Some(e);
            }
        }
        rx.rxsync();
        if !full {
            self.stalled = None;
        } else if sent > 0 || self.stalled.is_none() {
            self.stalled = Some(STALLED_FIRST);
        }
        if let Some(e) = broke {
            self.stalled = None;
            self.broken(e);
        }
        self.after_peer_memory();
        sent
    }

    /// Asks the peer to kick (clears MASK_INT on the rings valed receives from), then
    /// looks again, for [`RECHECK`].
    fn arm(&mut self) -> bool {
        self.refresh();
        let Some(c) = &self.conn else {
            return false;
        };
        let waiting = c.mask(false).is_err() || {
            // The cleared flag is visible before the indices are read.
            fence(Ordering::SeqCst);
            let t0 = Instant::now();
            loop {
                match c.pending() {
                    Ok(false) if t0.elapsed() < RECHECK => std::hint::spin_loop(),
                    Ok(false) => break false,
                    _ => break true,
                }
            }
        };
        self.after_peer_memory();
        waiting
    }

    /// While frames wait for the peer to make room: the next sleep's limit, each one
    /// twice the last that found none.
    fn wake_within(&mut self) -> Option<Duration> {
        let d = self.stalled?;
        self.stalled = Some((d * 2).min(STALLED_MAX));
        Some(d)
    }

    fn disarm(&mut self) {
        if let Some(c) = &self.conn {
            let _ = c.mask(true);
            // The kicks that woke the thread: the peer's eventfds, read without waiting
            // (it may have drained them itself, after clearing O_NONBLOCK).
            for fd in c.kicks() {
                let _ = crate::sys::read_eventfd_nowait(fd.as_fd());
            }
        }
        self.after_peer_memory();
    }
}
