//! The per-thread forwarder: the batch work space, and the loop that runs passes 0-2
//! over one TX ring of a switch, or over every ring of it.

use super::batch::{EMPTY_Q, Reader, Scratch, Sender};
use super::convert::Conv;
use super::deliver::{Batch, Out, Seen, copy_to_monitors, deliver_all};
use super::direct::Egress;
use super::{Claim, Notify, RingDir, Switch};
use crate::lookup::Lookup;
use crate::stats::PortStats;
use crate::types::{PortId, Timestamp};
use std::sync::atomic::Ordering::Relaxed;
use vale_abi::ring::dist;

/// The work space of forwarding: one per forwarding thread, reused for every switch it
/// forwards. It grows to the largest batch and port count it has seen and never
/// shrinks, so in the steady state a pass allocates nothing.
pub struct Forwarder {
    sc: Scratch,
    conv: Conv,
}

impl Default for Forwarder {
    fn default() -> Self {
        Forwarder::new()
    }
}

impl Forwarder {
    /// An empty forwarder: it takes its size from the first switch it forwards.
    pub fn new() -> Forwarder {
        Forwarder {
            sc: Scratch::new(),
            conv: Conv::default(),
        }
    }

    /// One forwarding pass over `sw`: one batch from every TX ring of every port,
    /// starting from a rotating port so no port always goes first. Packets for direct
    /// ports go to `egress` ([`NoEgress`](super::NoEgress) if there are none). Returns the packets
    /// consumed. On a switch of several threads this is [`Self::forward_worker`] as
    /// worker 0.
    pub fn forward<L: Lookup>(
        &mut self,
        sw: &Switch<L>,
        now: Timestamp,
        notify: &mut Vec<Notify>,
        egress: &mut dyn Egress,
    ) -> usize {
        self.forward_worker(sw, 0, now, notify, egress)
    }

    /// One pass of forwarding thread `worker` (0-based) of those forwarding `sw` at
    /// once ([`Switch::set_threads`]). Each TX ring is read by one thread at a time: the
    /// first to claim it in its pass; the workers start their passes at different ports
    /// so that they seldom meet. Worker 0 also runs the lookup's maintenance. Every
    /// RX ring is filled through its lease, so frames from several workers land in
    /// reservation order. Returns the packets consumed.
    pub fn forward_worker<L: Lookup>(
        &mut self,
        sw: &Switch<L>,
        worker: usize,
        now: Timestamp,
        notify: &mut Vec<Notify>,
        egress: &mut dyn Egress,
    ) -> usize {
        if worker == 0 && sw.lookup().wants_maintenance(now) {
            sw.lookup
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .maintain(now);
        }
        let n = sw.ports.active.len();
        if n == 0 {
            return 0;
        }
        let threads = usize::from(sw.threads.max(1));
        let rr = if worker == 0 {
            let r = (sw.rr.load(Relaxed) + 1) % n;
            sw.rr.store(r, Relaxed);
            r
        } else {
            (sw.rr.load(Relaxed) + worker * n / threads) % n
        };
        let mut total = 0;
        for k in 0..n {
            let id = sw.ports.active[(rr + k) % n];
            let rings = sw.port(id).map_or(0, |p| p.tx.len());
            for r in 0..rings {
                total += self.forward_ring(sw, id, r as u16, now, notify, egress);
            }
        }
        total
    }

    /// Forwards one batch from TX ring `ring` of port `src` of `sw` (unless another of
    /// the switch's threads is reading it now). Returns the packets consumed.
    pub fn forward_ring<L: Lookup>(
        &mut self,
        sw: &Switch<L>,
        src: PortId,
        ring: u16,
        now: Timestamp,
        notify: &mut Vec<Notify>,
        egress: &mut dyn Egress,
    ) -> usize {
        self.sc.fit(sw.cfg.batch, sw.ports.slots.len());
        let Forwarder { sc, conv } = self;
        let Switch {
            ports,
            lookup,
            cfg,
            vlan,
            ..
        } = sw;
        let vlan = vlan.as_ref();
        let shared = sw.threads > 1;
        let Some(port) = ports.get(src) else {
            return 0;
        };
        let hdr_len = port.hdr_len;
        let super::Port {
            tx,
            counters,
            vlan: mode,
            ..
        } = port;
        let Some(kr) = tx.get(ring as usize) else {
            return 0;
        };
        // Several threads: the ring is this one's for the batch, or it is left alone.
        let _claim = if shared {
            if !kr.has_news() {
                return 0;
            }
            match Claim::take(&kr.busy) {
                Some(c) => Some(c),
                None => return 0,
            }
        } else {
            None
        };
        let pending = match kr.published() {
            Some(0) => return 0,
            Some(p) => p,
            None => {
                counters.count_ring_reset();
                return 0;
            }
        };
        // Pass 0: the slots, each read once.
        let (start, n) = (kr.hwcur.load(Relaxed), kr.view.num_slots());
        let pool = kr.view.bufs().clone();
        let bufs = pool.access();
        let mut rd = Reader {
            slots: kr.view.slots(),
            bufs,
            at: start,
            pending,
        };
        let snd = Sender {
            id: src,
            ring,
            hdr_len,
            limit: cfg.batch,
            vlan: vlan.map(|_| &**mode),
        };
        let mut st = PortStats::default();
        let np = if snd.vlan.is_some() {
            sc.gather::<true>(&mut rd, &snd, &mut st)
        } else {
            sc.gather::<false>(&mut rd, &snd, &mut st)
        };
        let end = rd.at;

        // Pass 1: one lookup call for the batch, then the queues.
        if shared {
            lookup_shared(lookup, &sc.infos[..np], &mut sc.dests[..np], now);
        } else {
            let mut l = lookup.write().unwrap_or_else(|p| p.into_inner());
            match (vlan, sc.shape) {
                // One VLAN for the whole batch: the lookup may take it once.
                (Some(_), Some((vid, ..))) => {
                    l.lookup_batch_in(&sc.infos[..np], &mut sc.dests[..np], now, vid)
                }
                _ => l.lookup_batch(&sc.infos[..np], &mut sc.dests[..np], now),
            }
        }
        match (vlan, sc.shape) {
            (None, _) => sc.route::<false>(np, src, ports, None, &mut st),
            // One VLAN for the whole batch (the usual case): checks per destination.
            (Some(m), Some((vid, ..))) => sc.route::<true>(np, src, ports, Some((m, vid)), &mut st),
            (Some(m), None) => sc.route_vlan(np, src, ports, m, &mut st),
        }

        let mut out = Out {
            conv,
            egress,
            notify,
            shared,
        };
        // TX monitors of the sender: a copy of every valid packet of the batch.
        if ports.monitors.iter().any(|m| m.watches(src, RingDir::Tx)) {
            let all = sc.thread_all(np);
            let b = Batch {
                sc,
                bufs,
                src,
                hdr_len,
                ring,
                flood: EMPTY_Q,
                vlan: false,
            };
            let seen = Seen {
                port: src,
                dir: RingDir::Tx,
                queue: all,
            };
            copy_to_monitors(&b, ports, seen, &mut out);
            sc.unthread(np);
        }
        // Pass 2: the copies.
        let b = Batch {
            sc,
            bufs,
            src,
            hdr_len,
            ring,
            flood: sc.flood,
            vlan: vlan.is_some(),
        };
        deliver_all(&b, ports, &mut out, &mut st);
        sc.clear_queues();

        // The TX slots are free again: publish and maybe wake the sender.
        if let Some(port) = ports.get(src) {
            port.counters.add(&st);
            if port.tx.get(ring as usize).is_some_and(|kr| kr.release(end)) {
                out.notify.push(Notify {
                    port: src,
                    dir: RingDir::Tx,
                    ring,
                });
            }
        }
        dist(start, end, n) as usize
    }
}

/// A switch of several threads: the lookup under the shared lock, unless the batch
/// learns (then under the exclusive one).
#[inline(never)]
fn lookup_shared<L: Lookup>(
    lookup: &std::sync::RwLock<L>,
    infos: &[crate::lookup::PacketInfo],
    dests: &mut [crate::lookup::Dest],
    now: Timestamp,
) {
    let decided = lookup
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .lookup_batch_shared(infos, dests, now);
    if !decided {
        lookup
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .lookup_batch(infos, dests, now);
    }
}
