//! A memif port's data plane, run by its switch's forwarding thread: C2S frames into the
//! port's TX ring, the port's RX ring into the client's S2C buffers. With no client
//! connected, frames for the port are dropped and counted (`no_peer`).
//!
//! Interrupts follow memif's rules: while the forwarding thread polls, every C2S ring
//! has MASK_INT set, so a busy client writes no eventfd; before the thread sleeps it
//! clears the flag and looks at the rings once more (a frame published in between is
//! seen either by that look or by the client's kick). After filling S2C buffers valed
//! writes the ring's eventfd unless the client masked it (it polls).

use super::conn::Conn;
use super::ring::{Broken, Refused, Unsent};
use super::server::Slot;
use crate::port::rings::{ring_peek, ring_put, room};
use crate::port::{BURST, DrivenPort, MAX_FRAME, PortCounters, PortRings, Watcher};
use std::sync::Arc;

pub struct MemifIo {
    slot: Arc<Slot>,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    /// The slot generation `conn` belongs to.
    seen: u64,
    conn: Option<Conn>,
    /// Passes spent reading what a client that went had published (bounded).
    closing: u32,
    /// `sys::sigbus::caught()` when last looked at.
    caught_seen: u64,
    frame: Vec<u8>,
}

impl MemifIo {
    pub fn new(slot: Arc<Slot>, rings: PortRings, watcher: Watcher) -> MemifIo {
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
        }
    }

    /// Whether the connection held is the slot's current one (its client is there).
    fn current(&self) -> bool {
        self.conn.is_some() && self.slot.generation() == self.seen
    }

    /// Picks up a new connection, or lets go of one whose client went: once the frames
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
            let left = c
                .c2s
                .iter()
                .any(|r| r.pending(&c.regions).is_ok_and(|n| n > 0));
            if left && self.closing < CLOSING_PASSES {
                self.closing += 1;
                return;
            }
        }
        self.closing = 0;
        self.seen = g;
        self.drop_conn();
        if let Some(c) = self.slot.take(g) {
            for fd in &c.c2s_kick {
                let _ = self.watcher.add(fd);
            }
            self.conn = Some(c);
        }
    }

    fn drop_conn(&mut self) {
        if let Some(c) = self.conn.take() {
            for fd in &c.c2s_kick {
                self.watcher.remove(fd);
            }
        }
    }

    /// The rings cannot be used: the client is disconnected with the reason.
    fn broken(&mut self, e: Broken) {
        PortCounters::lost(&self.counters.read_errors, 1);
        self.drop_conn();
        self.slot.broken(e.to_string());
    }

    /// After the client's memory was touched: if a truncation was caught anywhere since
    /// the last look (one atomic load when none was) and it was in this client's
    /// memory, the fault is counted and the client cut off. Its mapping is zero pages
    /// from then on, so nothing read from it afterwards can fault again.
    fn after_peer_memory(&mut self) {
        let now = crate::sys::sigbus::caught();
        if now == self.caught_seen {
            return;
        }
        self.caught_seen = now;
        let faults = self
            .conn
            .as_ref()
            .and_then(|c| c.watched.as_ref())
            .map_or(0, |w| w.faults());
        if faults > 0 {
            PortCounters::lost(&self.counters.memory_faults, faults);
            self.drop_conn();
            self.slot
                .broken("the client's memory was truncated under valed".into());
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

impl DrivenPort for MemifIo {
    fn pull(&mut self) -> usize {
        self.refresh();
        let Some(c) = &mut self.conn else {
            return 0;
        };
        let tx = &self.rings.tx;
        if tx.space() < room(tx, MAX_FRAME) {
            tx.txsync();
        }
        let counters = &self.counters;
        let mut refused = Refused::default();
        let mut moved = 0;
        let mut broke = None;
        for ring in &mut c.c2s {
            let r = ring.recv(
                &c.regions,
                BURST - moved,
                MAX_FRAME,
                &mut self.frame,
                &mut refused,
                |f| {
                    if tx.space() < room(tx, f.len()).max(1) {
                        return false;
                    }
                    ring_put(tx, f);
                    counters.count_in(f.len());
                    true
                },
            );
            match r {
                Ok(n) => moved += n,
                Err(e) => {
                    broke = Some(e);
                    break;
                }
            }
            if moved >= BURST {
                break;
            }
        }
        if moved > 0 {
            tx.txsync();
        }
        self.count(refused);
        if let Some(e) = broke {
            self.broken(e);
        }
        self.after_peer_memory();
        moved
    }

    fn push(&mut self) -> usize {
        self.refresh();
        if !self.current() {
            self.drain_rx();
            return 0;
        }
        let rx = &self.rings.rx;
        rx.rxsync();
        let Some(c) = &mut self.conn else {
            return 0;
        };
        let Some(ring) = c.s2c.first_mut() else {
            return 0;
        };
        let mut sent = 0;
        let mut broke = None;
        while sent < BURST && rx.space() > 0 {
            let (used, len) = ring_peek(rx);
            self.frame.clear();
            self.frame.resize(len, 0);
            crate::port::rings::ring_copy(rx, used, &mut self.frame);
            match ring.send(&c.regions, &self.frame) {
                Ok(Ok(())) => {
                    self.counters.count_out(len);
                    sent += 1;
                }
                // The client has not posted buffers: the packet waits in the RX ring
                // (whose own overflow the switch counts as ring_full).
                Ok(Err(Unsent::Full)) => break,
                Ok(Err(Unsent::BadDesc)) => {
                    PortCounters::lost(&self.counters.bad_desc, 1);
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
            rx.advance(used);
        }
        if sent > 0 {
            if let Err(e) = ring.publish(&c.regions) {
                broke = Some(e);
            } else if !ring.masked(&c.regions) {
                let _ = rustix::io::write(&c.s2c_kick[0], &1u64.to_ne_bytes());
            }
        }
        rx.rxsync();
        if let Some(e) = broke {
            self.broken(e);
        }
        self.after_peer_memory();
        sent
    }

    /// Asks the client to kick (clears MASK_INT on its C2S rings), then looks again.
    fn arm(&mut self) -> bool {
        self.refresh();
        let Some(c) = &self.conn else {
            return false;
        };
        let mut waiting = false;
        for ring in &c.c2s {
            if ring.mask_interrupts(&c.regions, false).is_err() {
                waiting = true;
                break;
            }
            waiting |= ring.pending(&c.regions).map_or(true, |n| n > 0);
        }
        self.after_peer_memory();
        waiting
    }

    fn disarm(&mut self) {
        if let Some(c) = &self.conn {
            for ring in &c.c2s {
                let _ = ring.mask_interrupts(&c.regions, true);
            }
            // The kicks that woke the thread.
            let mut b = [0u8; 8];
            for fd in &c.c2s_kick {
                let _ = rustix::io::read(fd, &mut b);
            }
        }
        self.after_peer_memory();
    }
}
