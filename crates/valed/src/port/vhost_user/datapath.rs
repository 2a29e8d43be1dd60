//! The forwarding thread's side of a vhost-user port: guest TX chains into the port's
//! TX ring, the port's RX ring and direct deliveries into guest RX buffers, over the
//! split-ring walker (`split`): guest bytes are copied straight between guest buffers
//! and the port's ring buffers (or the sender's), the used index is stored once per
//! burst (TX) or per forwarding pass (RX), and the guest is signalled only when it asked
//! (EVENT_IDX's `used_event`, or VRING_AVAIL_F_NO_INTERRUPT without it).

use super::split::{SpanWriter, Split, Walk};
use super::*;
use crate::port::rings::{PortRings, ring_take};
use crate::port::{Direct, DrivenPort, Pairs, PortCounters};
use crate::sys::guest::{GuestMap, Span};
use std::collections::VecDeque;
use std::num::Wrapping;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use vale_abi::AppRing;
use vale_abi::layout::NS_MOREFRAG;
use vale_switch::offload::{self, VnetHdr};
use vhost_user_backend::VringT;
use virtio_bindings::bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::QueueT;

/// Frames for the guest's RX queue that did not fit yet, and what it accepts.
#[derive(Default)]
pub(super) struct Outbox {
    /// Features the frontend acknowledged (which offloads the guest takes).
    pub(super) acked: u64,
    /// Frames (12-byte header first), in order.
    pub(super) pending: VecDeque<Vec<u8>>,
    /// The memory they hold (their buffers' capacity: a reused buffer may be bigger
    /// than its frame).
    pending_bytes: usize,
    /// Frame buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// Scratch for software segmentation.
    work: Vec<u8>,
    /// The guest's RX avail index when a frame last found no room in its buffers: until
    /// it moves, waiting frames are no work (a stopped or starving guest must not keep
    /// the forwarding thread awake).
    pub(super) rx_seen: Option<u16>,
    /// Frames delivered into the guest's buffers of this pair, for `vale-ctl list`.
    pub(super) delivered: u64,
    /// Frames and bytes delivered that the port's counters do not have yet: added once
    /// per burst ([`Outbox::settle`]), not per frame, as the port's threads share them.
    owed: (u64, u64),
}

/// The RX walker's scratch: the spans of one frame's buffers and, per chain, its head
/// and its bytes.
#[derive(Default)]
pub(crate) struct Scratch {
    spans: Vec<Span>,
    chains: Vec<(u16, usize)>,
}

/// Most fragments of a packet handed over directly (netmap's `NETMAP_MAX_FRAGS`).
const MAX_PARTS: usize = 64;
/// Most frames waiting for guest RX buffers, and most bytes (each queue pair's): beyond
/// either, the switch's packets for the guest are dropped (`tx_error` on the port), as
/// a NIC with a full ring would. The bytes bound what a guest that takes TSO
/// super-frames of 64 KiB and never reads holds of valed's memory: 64 of them (some
/// 2900 frames of 1500 bytes, more than the 512 of 1500 bytes the count allows).
const MAX_PENDING: usize = 512;
const MAX_PENDING_BYTES: usize = 4 << 20;
/// How often the routes of RX rings are looked at when the pairs are served one by one.
const ROUTES_EVERY_NS: u64 = 1_000_000;

/// A vhost-user port as its forwarding threads drive it: guest TX chains into the
/// port's TX rings, the port's RX rings (and packets handed over directly) into guest RX
/// buffers, all in the forwarding pass: no thread hand-off between guest and switch.
/// Queue pair `i` is the port's TX ring `i` and RX ring `i`. On a switch of one thread
/// its lane's thread serves the whole port ([`DrivenPort`]); on a switch of several, a
/// port of several pairs has each served by its own thread ([`Pairs`]).
pub struct VhostIo {
    q: Arc<Queues>,
}

/// The port's queue pairs as the threads that serve them share them.
pub struct Queues {
    guest: GuestRef,
    /// The port's rings of each pair, and the pair's TX scratch.
    io: Vec<Mutex<RingIo>>,
    counters: Arc<PortCounters>,
    /// `sys::sigbus::caught()` when last looked at.
    caught_seen: AtomicU64,
    /// When pair 0's thread last looked at the routes (`lane::coarse_ns`), serving the
    /// pairs one by one: every pass would read-lock every RX queue, and wait for the
    /// threads writing into them.
    routed_at: AtomicU64,
}

/// The application side of one pair's rings (locked before the pair's [`Pair`]).
struct RingIo {
    tx: AppRing,
    rx: AppRing,
    /// The spans of the guest TX chain being read.
    segs: Vec<Span>,
}

impl VhostIo {
    /// Served over `rings`, one ring pair per queue pair of `guest`.
    pub fn new(guest: GuestRef, rings: Vec<PortRings>, counters: Arc<PortCounters>) -> VhostIo {
        let io = rings
            .into_iter()
            .map(|r| {
                Mutex::new(RingIo {
                    tx: r.tx,
                    rx: r.rx,
                    segs: Vec::new(),
                })
            })
            .collect();
        VhostIo {
            q: Arc::new(Queues {
                guest,
                io,
                counters,
                caught_seen: AtomicU64::new(crate::sys::sigbus::caught()),
                routed_at: AtomicU64::new(0),
            }),
        }
    }
}

/// What one guest TX chain was, read by [`pull_chain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chain {
    /// A frame (12-byte header first) of this many bytes, now in the port's TX ring.
    Frame(usize),
    /// More than the largest frame: dropped unread.
    TooBig,
    /// Not readable guest memory, or shorter than a header and an Ethernet header.
    Bad,
}

/// Reads the guest TX chain at `head` into the next slots of `ring` (the caller checked
/// there is room for the largest frame), its memory and length checked before a byte
/// is copied: a guest may describe gigabytes. `segs` is scratch.
pub(crate) fn pull_chain(
    m: &GuestMap,
    split: &Split,
    head: u16,
    segs: &mut Vec<Span>,
    ring: &AppRing,
) -> Chain {
    segs.clear();
    match split.walk(m, head, false, MAX_FRAME + VNET_HDR, segs) {
        Walk::Ok(n) if n >= VNET_HDR + 14 => {
            put_spans(ring, m, segs, n);
            Chain::Frame(n)
        }
        Walk::TooBig => Chain::TooBig,
        Walk::Ok(_) | Walk::Bad => Chain::Bad,
    }
}

/// Copies `total` bytes of guest memory (`spans`, in order) into the next free slots of
/// a TX ring, several with `NS_MOREFRAG` if they are more than a buffer, and moves
/// `head` past them: guest buffers to port buffers, no copy in between.
fn put_spans(ring: &AppRing, m: &GuestMap, spans: &[Span], total: usize) {
    let v = ring.view();
    let bufs = v.bufs().access();
    let bs = bufs.buf_size() as usize;
    let n = ring.num_slots();
    let parts = total.div_ceil(bs).max(1);
    let (mut i, mut at) = (0usize, 0usize);
    let mut h = ring.head();
    for x in 0..parts {
        let chunk = bs.min(total - x * bs);
        let s = v.read_slot(h);
        let mut filled = 0;
        while filled < chunk {
            let Some(&sp) = spans.get(i) else {
                break;
            };
            let k = (sp.len() - at).min(chunk - filled);
            if k == 0 {
                i += 1;
                at = 0;
                continue;
            }
            m.copy_to_buf(sp, at, k, bufs, s.buf_idx, filled);
            at += k;
            filled += k;
        }
        let flags = if x + 1 < parts { NS_MOREFRAG } else { 0 };
        v.write_len_flags(h, chunk as u16, flags);
        h = vale_abi::ring::next(h, n);
    }
    ring.advance(parts as u32);
}

/// What one TX burst moved and refused, for the port's counters.
#[derive(Default)]
struct TxCounts {
    frames: u64,
    bytes: u64,
    too_big: u64,
    bad: u64,
}

/// The RX queue as the walker fills it: where it is, its cursors, scratch.
pub(crate) struct Rx<'a> {
    pub(crate) m: &'a GuestMap,
    pub(crate) split: Split,
    pub(crate) q: &'a mut virtio_queue::Queue,
    pub(crate) sc: &'a mut Scratch,
}

/// Whether the frontend runs queue `vq` (set up and enabled).
pub(super) fn live(vq: &VringRwLock) -> bool {
    let st = vq.get_ref();
    st.get_queue().ready() && st.is_enabled()
}

/// Runs `f` on the RX queue of pair `p` (whose state is `pair`), if the frontend set it
/// up and started it and it lies in guest memory.
fn with_rx<R>(
    g: &Guest,
    pair: &mut Pair,
    p: usize,
    f: impl FnOnce(&mut Rx<'_>, &mut Outbox) -> R,
) -> Option<R> {
    let vq = g.vrings.as_ref()?.get(rx_queue(p))?;
    let m = g.map.as_ref()?;
    let mut st = vq.get_mut();
    if !st.get_queue().ready() || !st.is_enabled() {
        return None;
    }
    let q = st.get_queue_mut();
    let split = Split::of(m, q)?;
    pair.rx_split = Some(split);
    let Pair { out, scratch, .. } = pair;
    let mut rx = Rx {
        m,
        split,
        q,
        sc: scratch,
    };
    Some(f(&mut rx, out))
}

/// Stores the used index of pair `p`'s RX queue (one store for every entry written
/// since the last) and signals the guest if it asked to hear of them.
pub(super) fn publish_rx(g: &Guest, pair: &mut Pair, p: usize) {
    let (Some(vq), Some(m)) = (
        g.vrings.as_ref().and_then(|v| v.get(rx_queue(p))),
        g.map.as_ref(),
    ) else {
        return;
    };
    let want = {
        let st = vq.get_ref();
        let q = st.get_queue();
        let Some(split) = Split::of(m, q) else {
            return;
        };
        let now = q.next_used();
        split.publish_used_release(m, now);
        let old = pair.rx_since.replace(now);
        split.wants_signal(m, old, now)
    };
    if want {
        let _ = vq.signal_used_queue();
    }
}

/// Pair `p`'s TX queue -> `ring`, at most a burst ([`Queues::pull_pair`]); what moved
/// and what was refused added to `n`. Returns the chains taken.
fn pull_queue(
    g: &Guest,
    pair: &mut Pair,
    p: usize,
    ring: &AppRing,
    segs: &mut Vec<Span>,
    n: &mut TxCounts,
) -> usize {
    let (Some(vq), Some(m)) = (
        g.vrings.as_ref().and_then(|v| v.get(tx_queue(p))),
        g.map.as_ref(),
    ) else {
        return 0;
    };
    if pair.tx_broken {
        return 0;
    }
    let room = crate::port::rings::room(ring, MAX_FRAME + VNET_HDR);
    let mut moved = 0;
    let mut broken = false;
    let mut signal = false;
    {
        let mut st = vq.get_mut();
        if !st.get_queue().ready() || !st.is_enabled() {
            return 0;
        }
        let q = st.get_queue_mut();
        let split = Split::of(m, q);
        let avail = split.as_ref().and_then(|s| s.avail_idx_acquire(m));
        let (mut next, mut used) = (Wrapping(q.next_avail()), Wrapping(q.next_used()));
        match (split, avail) {
            (Some(split), Some(avail)) if (Wrapping(avail) - next).0 <= split.size() => {
                while moved < BURST && next.0 != avail {
                    if ring.space() < room {
                        ring.txsync();
                        if ring.space() < room {
                            break;
                        }
                    }
                    let Some(head) = split.avail_head(m, next.0) else {
                        broken = true;
                        break;
                    };
                    next += 1;
                    moved += 1;
                    match pull_chain(m, &split, head, segs, ring) {
                        Chain::TooBig => n.too_big += 1,
                        Chain::Bad => n.bad += 1,
                        Chain::Frame(len) => {
                            n.frames += 1;
                            pair.taken += 1;
                            n.bytes += (len - VNET_HDR) as u64;
                        }
                    }
                    // A head outside the table names no chain to give back.
                    if head < split.size() {
                        split.set_used(m, used.0, head, 0);
                        used += 1;
                    }
                }
                if moved > 0 {
                    q.set_next_avail(next.0);
                    q.set_next_used(used.0);
                    split.publish_used_release(m, used.0);
                    let old = pair.tx_since.replace(used.0);
                    signal = split.wants_signal(m, old, used.0);
                }
            }
            // The ring outside guest memory, or the avail index further ahead than the
            // ring holds (a broken or hostile driver): never to be done.
            _ => broken = true,
        }
    }
    if moved > 0 {
        ring.txsync();
        if signal {
            let _ = vq.signal_used_queue();
        }
    }
    if broken {
        pair.tx_broken = true;
        n.bad += 1;
    }
    moved
}

/// Where each of the port's RX rings goes ([`Guest::route`]): ring `i` to pair `i`
/// while the frontend runs its RX queue, else to the `i`-th (modulo) of those it runs.
/// A frontend that runs none gets nothing (the rings wait, as with one pair).
pub(super) fn reroute(g: &Guest) {
    let Some(vr) = &g.vrings else {
        return;
    };
    let n = g.pairs.len();
    let mut running = [0u16; MAX_QUEUE_PAIRS as usize];
    let mut k = 0;
    for p in 0..n.min(running.len()) {
        if vr.get(rx_queue(p)).is_some_and(live) {
            running[k] = p as u16;
            k += 1;
        }
    }
    for (i, r) in g.route.iter().enumerate() {
        let own = k == 0 || running[..k].contains(&(i as u16));
        r.store(
            if own { i as u16 } else { running[i % k] },
            Ordering::Relaxed,
        );
    }
}

/// The pair RX ring `i`'s packets go to.
fn route(g: &Guest, i: usize) -> usize {
    usize::from(g.route.get(i).map_or(0, |r| r.load(Ordering::Relaxed)))
}

/// What the forwarding threads do with the guest's queues; `DrivenPort` and `Pairs`
/// wrap each in the check for a truncation of guest memory. Locks: the guest (read),
/// then a pair's rings, then a pair's state, each for one burst.
impl Queues {
    fn io(&self, i: usize) -> Option<MutexGuard<'_, RingIo>> {
        Some(self.io.get(i)?.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Pair `p`'s guest TX queue -> the port's TX ring `p`, as much as the ring takes
    /// (the guest's buffers wait otherwise: backpressure, not drops), every chain's used
    /// entry written and the queue's used index stored once.
    fn pull_pair(&self, g: &Guest, p: usize, n: &mut TxCounts) -> usize {
        let (Some(mut io), Some(mut pr)) = (self.io(p), pair(g, p)) else {
            return 0;
        };
        let RingIo { tx, segs, .. } = &mut *io;
        pull_queue(g, &mut pr, p, tx, segs, n)
    }

    /// What one pull moved and refused, to the port's counters (once per pull: four
    /// atomic adds per frame were a tenth of it).
    fn count_tx(&self, n: &TxCounts) {
        let c = &*self.counters;
        for (counter, v) in [
            (&c.from_host, n.frames),
            (&c.from_host_bytes, n.bytes),
            (&c.truncated, n.too_big),
            (&c.read_errors, n.bad),
        ] {
            if v > 0 {
                counter.fetch_add(v, Ordering::Relaxed);
            }
        }
    }

    /// Every pair's TX queue (the whole port, one thread). With several pairs, where
    /// each RX ring's packets go is looked at first (once a pass). Returns the frames
    /// moved.
    fn pull_all(&self) -> usize {
        let g = read(&self.guest);
        if g.pairs.len() > 1 {
            reroute(&g);
        }
        let mut n = TxCounts::default();
        let moved = (0..self.io.len())
            .map(|p| self.pull_pair(&g, p, &mut n))
            .sum();
        self.count_tx(&n);
        moved
    }

    /// Pair `i`'s TX queue only; pair 0's thread also looks at the routes, at most
    /// once a millisecond.
    fn pull_one(&self, i: usize) -> usize {
        let g = read(&self.guest);
        if i == 0 && g.pairs.len() > 1 {
            let now = crate::lane::coarse_ns();
            if now.wrapping_sub(self.routed_at.load(Ordering::Relaxed)) >= ROUTES_EVERY_NS {
                self.routed_at.store(now, Ordering::Relaxed);
                reroute(&g);
            }
        }
        let mut n = TxCounts::default();
        let moved = self.pull_pair(&g, i, &mut n);
        self.count_tx(&n);
        moved
    }

    /// What the switch left in RX ring `i` (packets converted for the guest's header)
    /// and what waits for guest buffers -> guest RX buffers of pair `route[i]`, whose
    /// used index is then to be published (`rx_dirty`). Returns the frames delivered and
    /// that pair.
    fn push_ring(&self, g: &Guest, i: usize) -> (usize, usize) {
        let p = route(g, i);
        let (Some(io), Some(mut pr)) = (self.io(i), pair(g, p)) else {
            return (0, p);
        };
        let ring = &io.rx;
        let counters = &*self.counters;
        let mut sent = 0;
        let touched = with_rx(g, &mut pr, p, |rx, out| {
            let mut touched = false;
            ring.rxsync();
            loop {
                if out.pending.is_empty() {
                    if sent >= BURST || ring.space() == 0 {
                        break;
                    }
                    let mut f = out.spare.pop().unwrap_or_default();
                    ring_take(ring, &mut f);
                    out.stage(f, counters);
                    continue;
                }
                match deliver(out, rx, counters) {
                    Some(true) => sent += 1,
                    Some(false) => {}
                    None => break, // no guest buffers: the rest waits
                }
                touched = true;
            }
            out.settle(counters);
            ring.rxsync();
            touched
        });
        if touched == Some(true) {
            pr.rx_dirty = true;
        }
        (sent, p)
    }

    /// Pair `p`'s RX used index published if anything was written since the last time
    /// (direct deliveries included), the guest signalled if it asked.
    fn publish_pair(&self, g: &Guest, p: usize) {
        if let Some(mut pr) = pair(g, p) {
            if pr.rx_dirty {
                pr.rx_dirty = false;
                publish_rx(g, &mut pr, p);
            }
        }
    }

    /// Every RX ring (the whole port, one thread), then each queue's used index
    /// published once for everything added this pass. Returns the frames delivered.
    fn push_all(&self) -> usize {
        let g = read(&self.guest);
        let sent = (0..self.io.len()).map(|i| self.push_ring(&g, i).0).sum();
        for p in 0..g.pairs.len() {
            self.publish_pair(&g, p);
        }
        sent
    }

    /// RX ring `i` only, and the used index of the pair it went to.
    fn push_one(&self, i: usize) -> usize {
        let g = read(&self.guest);
        let (sent, p) = self.push_ring(&g, i);
        self.publish_pair(&g, p);
        sent
    }

    /// A packet handed over by the switch (the engine's direct delivery, same header
    /// length; a switch of one thread only): into guest RX buffers now, or queued
    /// behind what already waits.
    fn send_direct(&self, pkt: &Direct<'_>) -> bool {
        let (hdr, frags) = (pkt.hdr, pkt.frags);
        if frags.len() > MAX_PARTS {
            return false; // never from the engine (MAX_FRAGS)
        }
        let g = read(&self.guest);
        // The RX queue the engine's choice of RX ring goes to.
        let p = route(&g, usize::from(pkt.ring));
        let Some(mut pr) = pair(&g, p) else {
            return false;
        };
        let pr = &mut *pr;
        // Straight from the sender's buffers into guest buffers when nothing waits and
        // the guest takes the packet as it is (its offloads accepted).
        if pr.out.pending.is_empty() {
            let r = with_rx(&g, pr, p, |rx, out| {
                crate::sys::with_slices(frags, |parts| {
                    // The header: converted by the switch, or the sender's own at the
                    // start of the first fragment.
                    let first = parts.first().copied().unwrap_or(&[]);
                    let (h, first) = if hdr.len() == VNET_HDR {
                        (hdr, first)
                    } else if first.len() >= VNET_HDR {
                        first.split_at(VNET_HDR)
                    } else {
                        return None;
                    };
                    let sum = parts.iter().map(|p| p.len()).sum::<usize>();
                    let len = if hdr.is_empty() { sum } else { sum + VNET_HDR };
                    // Copied out once, then checked: the sender may rewrite `h`.
                    let mut hb = [0u8; VNET_HDR];
                    hb.copy_from_slice(h);
                    if len < VNET_HDR + 14 || !out.guest_takes(&VnetHdr::parse(&hb[..10])) {
                        return None;
                    }
                    if out.acked & (1 << F_GUEST_CSUM) == 0 {
                        hb[0] &= !offload::F_DATA_VALID;
                    }
                    let mut rest: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
                    rest[0] = first;
                    rest[1..parts.len()].copy_from_slice(&parts[1..]);
                    Some((rx.put(&mut hb, &rest[..parts.len()], out.mergeable()), len))
                })
            });
            match r.flatten() {
                Some((Put::Done, len)) => {
                    pr.rx_dirty = true;
                    pr.out.delivered += 1;
                    self.counters.to_host.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .to_host_bytes
                        .fetch_add((len - VNET_HDR) as u64, Ordering::Relaxed);
                    return true;
                }
                Some((Put::Bad, _)) => {
                    pr.rx_dirty = true;
                    self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Some((Put::NoRoom, _)) | None => {} // staged below
            }
        }
        // A full outbox first goes into buffers the guest added since it filled: the
        // switch hands a whole batch over before `push` looks again, and without this a
        // batch arriving just after the guest refilled was dropped while its buffers
        // stood empty (seen: 256 buffers free as frames were dropped).
        if pr.out.full() {
            flush(&g, pr, p, &self.counters);
            if pr.out.full() {
                return false;
            }
        }
        let mut f = pr.out.spare.pop().unwrap_or_default();
        f.clear();
        f.extend_from_slice(hdr);
        for fr in frags {
            let at = f.len();
            f.resize(at + fr.len(), 0);
            fr.copy_to(&mut f[at..]);
        }
        pr.out.stage(f, &self.counters);
        flush(&g, pr, p, &self.counters);
        true
    }

    /// Before the thread serving pair `p` sleeps: asks the guest to kick for new TX
    /// buffers (and for RX buffers, if frames wait for them); true if there is work
    /// already. Queues the frontend stopped (a paused VM) are no work, nor are frames
    /// waiting for RX buffers the guest has not added since they last found no room:
    /// either would keep the thread awake for as long as the guest stays that way.
    fn arm_pair(&self, g: &Guest, p: usize) -> bool {
        let Some(mut pr) = pair(g, p) else {
            return false;
        };
        // Through `g.map` only, as the passes: the crate's own memory (what its
        // `VringRwLock` calls use) is a new memory table's as soon as the frontend
        // sends one, before `update_memory` watches it for truncation.
        let (Some(vr), Some(m)) = (g.vrings.as_ref(), g.map.as_ref()) else {
            return false;
        };
        let mut work = false;
        if let Some(vq) = vr.get(tx_queue(p)).filter(|vq| !pr.tx_broken && live(vq)) {
            let st = vq.get_ref();
            let q = st.get_queue();
            if let Some(split) = Split::of(m, q) {
                let next = q.next_avail();
                if split.kick_past(m, next) == Some(true) {
                    match split.avail_idx_acquire(m) {
                        Some(i) if Wrapping(i) - Wrapping(next) > Wrapping(split.size()) => {
                            pr.tx_broken = true;
                            self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => work = true,
                    }
                }
            }
        }
        let mut retry = false;
        if !pr.out.pending.is_empty() {
            if let Some(vq) = vr.get(rx_queue(p)).filter(|vq| live(vq)) {
                let st = vq.get_ref();
                if let Some(split) = Split::of(m, st.get_queue()) {
                    match split.avail_idx_acquire(m) {
                        None => {}
                        // Buffers added since the last try: deliver them first.
                        Some(now) if Some(now) != pr.out.rx_seen => work = true,
                        Some(now) => {
                            // A kick when the guest adds any buffer: past `now`, not
                            // past `next_avail`, which would ask for a kick only past
                            // the buffers it has already added.
                            work |= split.kick_past(m, now).unwrap_or(false);
                            retry = !work;
                        }
                    }
                }
            }
        }
        // One more try: buffers added while the last one looked are behind `now` and
        // would bring no kick.
        if retry {
            let c = &*self.counters;
            let r = with_rx(g, &mut pr, p, |rx, out| {
                let r = deliver(out, rx, c).is_some();
                out.settle(c);
                r
            });
            if r == Some(true) {
                pr.rx_dirty = true;
                work = true;
            }
        }
        work
    }

    /// After the thread serving pair `p` woke: polling again, no kicks wanted. Only
    /// queues the frontend set up: one it never did (a pair it does not use) has its
    /// rings at guest address 0, where the used ring's flags would be written (without
    /// EVENT_IDX), into guest memory the queue does not own. Through `g.map`, as
    /// [`Queues::arm_pair`].
    fn disarm_pair(&self, g: &Guest, p: usize) {
        let (Some(vr), Some(m)) = (g.vrings.as_ref(), g.map.as_ref()) else {
            return;
        };
        for q in [rx_queue(p), tx_queue(p)] {
            if let Some(vq) = vr.get(q) {
                let st = vq.get_ref();
                let q = st.get_queue();
                if let Some(split) = Split::of(m, q).filter(|_| q.ready()) {
                    split.no_kicks(m);
                }
            }
        }
    }

    /// After guest memory was touched (and the guest's lock let go): if a truncation
    /// was caught anywhere since the last look (one atomic load when none was), whether
    /// it was this guest's, which is then counted and cut off.
    fn after_guest_memory(&self) {
        let now = crate::sys::sigbus::caught();
        if self.caught_seen.load(Ordering::Relaxed) != now
            && self.caught_seen.swap(now, Ordering::Relaxed) != now
        {
            write(&self.guest).check_faults(&self.counters);
        }
    }
}

impl DrivenPort for VhostIo {
    fn pull(&mut self) -> usize {
        let n = self.q.pull_all();
        self.q.after_guest_memory();
        n
    }

    fn push(&mut self) -> usize {
        let n = self.q.push_all();
        self.q.after_guest_memory();
        n
    }

    fn send(&mut self, pkt: &Direct<'_>) -> bool {
        let ok = self.q.send_direct(pkt);
        self.q.after_guest_memory();
        ok
    }

    fn arm(&mut self) -> bool {
        let work = {
            let g = read(&self.q.guest);
            // (Every pair armed: no short-circuit.)
            (0..g.pairs.len()).fold(false, |w, p| self.q.arm_pair(&g, p) | w)
        };
        self.q.after_guest_memory();
        work
    }

    fn disarm(&mut self) {
        {
            let g = read(&self.q.guest);
            for p in 0..g.pairs.len() {
                self.q.disarm_pair(&g, p);
            }
        }
        self.q.after_guest_memory();
    }

    /// A port of several queue pairs offers them to the threads of its switch.
    fn pairs(&self) -> Option<Arc<dyn Pairs>> {
        (self.q.io.len() > 1).then(|| self.q.clone() as Arc<dyn Pairs>)
    }
}

impl Pairs for Queues {
    fn count(&self) -> usize {
        self.io.len()
    }

    fn pull(&self, i: usize) -> usize {
        let n = self.pull_one(i);
        self.after_guest_memory();
        n
    }

    fn push(&self, i: usize) -> usize {
        let n = self.push_one(i);
        self.after_guest_memory();
        n
    }

    fn arm(&self, i: usize) -> bool {
        let work = self.arm_pair(&read(&self.guest), i);
        self.after_guest_memory();
        work
    }

    fn disarm(&self, i: usize) {
        self.disarm_pair(&read(&self.guest), i);
        self.after_guest_memory();
    }
}

/// Whether the guest's avail index is further ahead than its ring holds (a broken or
/// hostile driver): then "more to do" can never be done.
pub(crate) fn avail_beyond(q: &virtio_queue::Queue, mem: &GuestMemoryMmap) -> bool {
    match q.avail_idx(mem, std::sync::atomic::Ordering::Acquire) {
        Ok(i) => (i - std::num::Wrapping(q.next_avail())).0 > q.size(),
        Err(_) => true,
    }
}

/// What waits in pair `p`'s outbox -> its guest RX buffers, as many as there are
/// (none while the guest has not set that RX queue up, or has stopped it).
fn flush(g: &Guest, pair: &mut Pair, p: usize, c: &PortCounters) {
    // No buffers added since the first frame last found no room: it would find none
    // again. Looked at without the queue's lock (the ring where it last was), as this
    // runs for every frame handed over while the outbox is full.
    if let (Some(s), Some(m), Some(seen)) = (&pair.rx_split, &g.map, pair.out.rx_seen) {
        if pair.out.pending.is_empty() || s.avail_idx_acquire(m) == Some(seen) {
            return;
        }
    }
    let any = with_rx(g, pair, p, |rx, out| {
        let mut any = false;
        while !out.pending.is_empty() {
            match deliver(out, rx, c) {
                Some(_) => any = true,
                None => break,
            }
        }
        out.settle(c);
        any
    });
    if any == Some(true) {
        pair.rx_dirty = true;
    }
}

/// Offers the first pending frame to the guest: `Some(true)` delivered, `Some(false)`
/// dropped (counted), `None` no room (it stays first in line).
fn deliver(out: &mut Outbox, rx: &mut Rx<'_>, c: &PortCounters) -> Option<bool> {
    let mergeable = out.mergeable();
    let frame = out.pending.front_mut()?;
    let r = match rx.put_frame(frame, mergeable) {
        Put::Done => {
            out.delivered += 1;
            out.owed.0 += 1;
            out.owed.1 += (frame.len() - VNET_HDR) as u64;
            true
        }
        Put::Bad => {
            c.write_errors.fetch_add(1, Ordering::Relaxed);
            false
        }
        Put::NoRoom => {
            // Buffers the guest added while this looked are tried once more by `arm`.
            out.rx_seen = rx.split.avail_idx_acquire(rx.m);
            return None;
        }
    };
    if let Some(f) = out.pop() {
        out.recycle(f);
    }
    Some(r)
}

impl Outbox {
    /// Queues `f` behind what waits.
    fn push(&mut self, f: Vec<u8>) {
        self.pending_bytes += f.capacity();
        self.pending.push_back(f);
    }

    /// The first frame waiting, taken off.
    pub(super) fn pop(&mut self) -> Option<Vec<u8>> {
        let f = self.pending.pop_front()?;
        self.pending_bytes -= f.capacity();
        Some(f)
    }

    /// No more frames may wait ([`MAX_PENDING`], [`MAX_PENDING_BYTES`]).
    fn full(&self) -> bool {
        self.pending.len() >= MAX_PENDING || self.pending_bytes >= MAX_PENDING_BYTES
    }

    /// What [`deliver`] delivered, to the port's counters.
    fn settle(&mut self, c: &PortCounters) {
        let (n, b) = std::mem::take(&mut self.owed);
        if n > 0 {
            c.to_host.fetch_add(n, Ordering::Relaxed);
            c.to_host_bytes.fetch_add(b, Ordering::Relaxed);
        }
    }

    pub(super) fn recycle(&mut self, f: Vec<u8>) {
        if self.spare.len() < 64 {
            self.spare.push(f);
        }
    }

    /// Queues one packet from the port (12-byte header in front) for the guest, finishing
    /// offloads it did not negotiate: TCP segmentation and checksums.
    fn stage(&mut self, mut frame: Vec<u8>, counters: &PortCounters) {
        if frame.len() < VNET_HDR + 14 {
            counters.truncated.fetch_add(1, Ordering::Relaxed);
            self.recycle(frame);
            return;
        }
        let mut h = VnetHdr::parse(&frame[..VNET_HDR]);
        if self.guest_takes(&h) {
            if h.flags & offload::F_DATA_VALID != 0 && self.acked & (1 << F_GUEST_CSUM) == 0 {
                frame[0] &= !offload::F_DATA_VALID;
            }
            self.push(frame);
            return;
        }
        h.flags &= offload::F_NEEDS_CSUM; // what resolve looks at
        let (pending, bytes, spare) = (&mut self.pending, &mut self.pending_bytes, &mut self.spare);
        let r = offload::resolve(&h, &frame[VNET_HDR..], &mut self.work, |seg| {
            let mut f = spare.pop().unwrap_or_default();
            f.clear();
            f.resize(VNET_HDR, 0);
            f.extend_from_slice(seg);
            *bytes += f.capacity();
            pending.push_back(f);
        });
        if r.is_err() {
            counters.bad_offload.fetch_add(1, Ordering::Relaxed);
        }
        self.recycle(frame);
    }

    /// Whether the guest takes a packet in several RX buffers (`MRG_RXBUF`).
    fn mergeable(&self) -> bool {
        self.acked & (1u64 << VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    /// Whether the guest accepted the offloads header `h` asks of it.
    fn guest_takes(&self, h: &VnetHdr) -> bool {
        let has = |bit: u32| self.acked & (1u64 << bit) != 0;
        if h.flags & offload::F_NEEDS_CSUM != 0 && !has(F_GUEST_CSUM) {
            return false;
        }
        if h.gso_type & offload::GSO_ECN != 0 && !has(F_GUEST_ECN) {
            return false;
        }
        match h.gso_type & !offload::GSO_ECN {
            offload::GSO_NONE => true,
            offload::GSO_TCPV4 => has(F_GUEST_TSO4),
            offload::GSO_TCPV6 => has(F_GUEST_TSO6),
            _ => false,
        }
    }
}

/// What became of a frame offered to the guest's RX queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Done,
    /// Not enough guest buffers now; nothing was taken.
    NoRoom,
    /// The guest's buffers are not writable guest memory: dropped.
    Bad,
}

impl Rx<'_> {
    /// Writes `frame` (12-byte header first; its `num_buffers` is filled in here) into
    /// as many guest RX buffers as it takes.
    pub(crate) fn put_frame(&mut self, frame: &mut [u8], mergeable: bool) -> Put {
        let (h, rest) = frame.split_at(VNET_HDR);
        let mut hdr = [0u8; VNET_HDR];
        hdr.copy_from_slice(h);
        self.put(&mut hdr, &[rest], mergeable)
    }

    /// Writes a packet given as its 12-byte header (`num_buffers` is filled in here)
    /// and the parts that follow it into as many guest RX buffers as it takes, or into
    /// one buffer (chain) if the guest did not accept `MRG_RXBUF` (it reads no
    /// further). The used entries are written, each chain's after its bytes, and the
    /// queue's `next_used` moved past them, but the used index is not stored: the
    /// caller publishes once for all the frames of a pass ([`publish_rx`]), and a frame
    /// in several buffers is thus always seen whole (a guest that sees its first
    /// buffer, whose header says how many there are, before the others drops it: "rx
    /// error: N buffers out of M missing").
    pub(crate) fn put(
        &mut self,
        hdr: &mut [u8; VNET_HDR],
        parts: &[&[u8]],
        mergeable: bool,
    ) -> Put {
        let (m, split) = (self.m, self.split);
        let len = VNET_HDR + parts.iter().map(|p| p.len()).sum::<usize>();
        // A frame that needs more buffers than this can never fit: dropped, not waited for.
        let most = if mergeable {
            MAX_RX_BUFFERS.min(usize::from(split.size()))
        } else {
            1
        };
        let sc = &mut *self.sc;
        sc.spans.clear();
        sc.chains.clear();
        let mut next = Wrapping(self.q.next_avail());
        let Some(avail) = split.avail_idx_acquire(m) else {
            return Put::NoRoom;
        };
        let mut room = 0usize;
        let mut bad = false;
        while room < len && sc.chains.len() < most && next.0 != avail {
            let Some(head) = split.avail_head(m, next.0) else {
                break;
            };
            next += 1;
            let start = sc.spans.len();
            match split.walk(m, head, true, usize::MAX, &mut sc.spans) {
                Walk::Ok(n) if n > 0 => {
                    room += n;
                    sc.chains.push((head, n));
                }
                _ => {
                    // Not writable guest memory: returned unused, the frame dropped.
                    sc.spans.truncate(start);
                    sc.chains.push((head, 0));
                    bad = true;
                    break;
                }
            }
        }
        let mut used = Wrapping(self.q.next_used());
        if bad || room < len {
            if !bad && sc.chains.len() < most {
                return Put::NoRoom; // nothing taken: `next_avail` stays
            }
            for &(head, _) in &sc.chains {
                if head < split.size() {
                    split.set_used(m, used.0, head, 0);
                    used += 1;
                }
            }
            self.q.set_next_avail(next.0);
            self.q.set_next_used(used.0);
            return Put::Bad;
        }
        hdr[10..12].copy_from_slice(&(sc.chains.len() as u16).to_le_bytes());
        let mut w = SpanWriter::new(m, &sc.spans);
        w.put(&hdr[..]);
        for p in parts {
            w.put(p);
        }
        let mut left = len;
        for &(head, n) in &sc.chains {
            let wrote = n.min(left);
            left -= wrote;
            split.set_used(m, used.0, head, if w.ok { wrote as u32 } else { 0 });
            used += 1;
        }
        self.q.set_next_avail(next.0);
        self.q.set_next_used(used.0);
        Put::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 frame of `payload` bytes behind a 12-byte header asking for TSO at
    /// `mss` and checksum completion, as a guest or TAP would send it.
    fn tso_frame(payload: usize, mss: u16) -> Vec<u8> {
        let mut f = Vec::new();
        VnetHdr {
            flags: offload::F_NEEDS_CSUM,
            gso_type: offload::GSO_TCPV4,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        }
        .write(&mut f, VNET_HDR as u16);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let tot = (40 + payload) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&tot.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&5001u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18; // PSH ACK
        f.extend_from_slice(&tcp);
        f.extend((0..payload).map(|i| i as u8));
        f
    }

    fn tcp_ok(seg: &[u8]) -> bool {
        let ip = &seg[14..34];
        let l4 = &seg[34..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(l4);
        offload::checksum(ip) == 0 && offload::checksum(&pseudo) == 0
    }

    #[test]
    fn a_guest_without_tso_gets_segments_with_checksums() {
        let c = PortCounters::default();
        let mut o = Outbox::default();
        o.stage(tso_frame(3000, 1000), &c);
        assert_eq!(o.pending.len(), 3);
        let mut seq = Vec::new();
        for f in &o.pending {
            assert_eq!(&f[..VNET_HDR], &[0u8; VNET_HDR], "a plain header");
            let seg = &f[VNET_HDR..];
            assert_eq!(seg.len(), 14 + 40 + 1000);
            assert!(tcp_ok(seg), "IP and TCP checksums complete");
            seq.push(u32::from_be_bytes(seg[38..42].try_into().unwrap()));
        }
        assert_eq!(seq, [0, 1000, 2000]);
        assert_eq!(c.bad_offload.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_guest_with_tso_gets_the_super_frame_untouched() {
        let c = PortCounters::default();
        let mut o = Outbox {
            acked: 1 << F_GUEST_CSUM | 1 << F_GUEST_TSO4 | 1 << F_GUEST_TSO6,
            ..Default::default()
        };
        let f = tso_frame(3000, 1000);
        o.stage(f.clone(), &c);
        assert_eq!(o.pending.len(), 1);
        assert_eq!(o.pending[0], f);
        // Checksums taken, TSO not: the super-frame is cut.
        let mut o = Outbox {
            acked: 1 << F_GUEST_CSUM,
            ..Default::default()
        };
        o.stage(tso_frame(3000, 1500), &c);
        assert_eq!(o.pending.len(), 2);
    }

    #[test]
    fn frames_wait_for_the_guest_up_to_a_count_and_up_to_a_size() {
        let c = PortCounters::default();
        let tso = 1 << F_GUEST_CSUM | 1 << F_GUEST_TSO4;
        // Small frames: the count bounds them.
        let mut o = Outbox::default();
        let mut n = 0;
        while !o.full() {
            o.stage(tso_frame(100, 100), &c);
            n += 1;
        }
        assert_eq!(n, MAX_PENDING);
        // Super-frames a TSO guest takes whole: their bytes do, long before the count.
        let mut o = Outbox {
            acked: tso,
            ..Default::default()
        };
        let big = tso_frame(60_000, 1400);
        let mut n = 0;
        while !o.full() {
            o.stage(big.clone(), &c);
            n += 1;
        }
        assert!(
            (68..=72).contains(&n) && o.pending_bytes >= MAX_PENDING_BYTES,
            "{n} super-frames held"
        );
        // Taken off one by one, the bytes follow: room again, and none left at the end.
        let held: usize = o.pending.iter().map(Vec::capacity).sum();
        assert_eq!(o.pending_bytes, held);
        assert!(o.pop().is_some());
        assert!(!o.full());
        while o.pop().is_some() {}
        assert_eq!((o.pending.len(), o.pending_bytes), (0, 0));
        // Segmented for a guest without TSO, each segment counts.
        let mut o = Outbox::default();
        o.stage(big.clone(), &c);
        let segs: usize = o.pending.iter().map(Vec::capacity).sum();
        assert_eq!(o.pending_bytes, segs);
        assert_eq!(o.pending.len(), 60_000usize.div_ceil(1400));
    }

    #[test]
    fn malformed_offloads_and_runts_are_counted() {
        let c = PortCounters::default();
        let mut o = Outbox::default();
        let mut f = tso_frame(3000, 1000);
        f[VNET_HDR + 14] = 0x60; // not IPv4 any more
        o.stage(f, &c);
        o.stage(vec![0; VNET_HDR + 5], &c);
        assert!(o.pending.is_empty());
        assert_eq!(c.bad_offload.load(Ordering::Relaxed), 1);
        assert_eq!(c.truncated.load(Ordering::Relaxed), 1);
    }

    /// Guest memory with an RX queue of 8 entries: descriptor table at 0, avail ring at
    /// 0x100, used ring at 0x200, buffers from 0x1000; `bufs` writable buffers of
    /// `len` bytes each made available.
    fn rx_queue(bufs: u16, len: u32) -> (virtio_queue::Queue, GuestMemoryMmap) {
        use vm_memory::{Bytes, GuestAddress};
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let q = super::super::split::test_queue();
        for i in 0..bufs {
            let d = u64::from(i) * 16;
            let addr = 0x1000 + u64::from(i) * 0x800;
            mem.write_obj(addr.to_le(), GuestAddress(d)).unwrap();
            mem.write_obj(len.to_le(), GuestAddress(d + 8)).unwrap();
            mem.write_obj(2u16.to_le(), GuestAddress(d + 12)).unwrap(); // WRITE
            mem.write_obj(i.to_le(), GuestAddress(0x104 + 2 * u64::from(i)))
                .unwrap();
        }
        mem.write_obj(bufs.to_le(), GuestAddress(0x102)).unwrap();
        (q, mem)
    }

    #[test]
    fn a_frame_in_several_buffers_is_used_whole_with_its_buffer_count() {
        use vm_memory::{Bytes, GuestAddress};
        let (mut q, mem) = rx_queue(4, 64);
        let m = GuestMap::new(std::sync::Arc::new(mem.clone()));
        let split = Split::of(&m, &q).unwrap();
        let mut sc = Scratch::default();
        let mut rx = Rx {
            m: &m,
            split,
            q: &mut q,
            sc: &mut sc,
        };
        let mut f = vec![0xa5u8; VNET_HDR + 150];
        assert_eq!(rx.put_frame(&mut f, true), Put::Done);
        // 162 bytes in 64-byte buffers: three, all in the used ring behind one index,
        // stored when the pass publishes.
        let used_idx = || u16::from_le(mem.read_obj(GuestAddress(0x202)).unwrap());
        assert_eq!(used_idx(), 0, "not published by the put");
        assert_eq!(rx.q.next_used(), 3);
        assert_eq!(rx.q.next_avail(), 3);
        assert!(split.publish_used_release(&m, 3));
        assert_eq!(used_idx(), 3);
        let mut elems = Vec::new();
        for i in 0..3u64 {
            let id: u32 = mem.read_obj(GuestAddress(0x204 + 8 * i)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(0x208 + 8 * i)).unwrap();
            elems.push((u32::from_le(id), u32::from_le(len)));
        }
        assert_eq!(elems, [(0, 64), (1, 64), (2, 34)]);
        // The first buffer's header says how many there are, and the bytes follow.
        let num: u16 = mem.read_obj(GuestAddress(0x1000 + 10)).unwrap();
        assert_eq!(u16::from_le(num), 3);
        let mut b = [0u8; 64];
        mem.read_slice(&mut b, GuestAddress(0x1800)).unwrap();
        assert_eq!(b, [0xa5; 64], "the second buffer");
        // Too big for the one buffer left: no room, nothing taken; without MRG_RXBUF a
        // frame bigger than one buffer is dropped, its buffer returned empty.
        let mut big = vec![0u8; VNET_HDR + 200];
        assert_eq!(rx.put_frame(&mut big, true), Put::NoRoom);
        assert_eq!((rx.q.next_avail(), rx.q.next_used()), (3, 3));
        assert_eq!(rx.put_frame(&mut big, false), Put::Bad);
        assert_eq!((rx.q.next_avail(), rx.q.next_used()), (4, 4));
        let len: u32 = mem.read_obj(GuestAddress(0x208 + 8 * 3)).unwrap();
        assert_eq!(len, 0);
    }

    /// A guest TX chain whose buffer spans two regions of guest memory arrives whole in
    /// the port's TX ring, in two slots when it is more than one buffer.
    #[test]
    fn a_tx_chain_across_two_regions_lands_whole_in_the_port_ring() {
        use vale_abi::{Dir, PortGeometry, Region};
        use vm_memory::{Bytes, GuestAddress};
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x10000), 0x10000),
        ])
        .unwrap();
        let mut q = virtio_queue::Queue::new(8).unwrap();
        q.set_size(8);
        q.set_desc_table_address(Some(0), Some(0));
        q.set_avail_ring_address(Some(0x100), Some(0));
        q.set_used_ring_address(Some(0x200), Some(0));
        let frame: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        mem.write_slice(&frame, GuestAddress(0x10000 - 1000))
            .unwrap();
        let d = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            mem.write_obj(addr.to_le(), GuestAddress(16 * i)).unwrap();
            mem.write_obj(len.to_le(), GuestAddress(16 * i + 8))
                .unwrap();
            mem.write_obj(flags.to_le(), GuestAddress(16 * i + 12))
                .unwrap();
            mem.write_obj(next.to_le(), GuestAddress(16 * i + 14))
                .unwrap();
        };
        d(0, 0x10000 - 1000, 12, 1, 1);
        d(1, 0x10000 - 988, 2988, 0, 0);
        let m = GuestMap::new(std::sync::Arc::new(mem.clone()));
        let split = Split::of(&m, &q).unwrap();
        let g = PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            buf_size: 2048,
            ..Default::default()
        };
        let r = Region::create("vh-split-test", g).unwrap();
        let tx = AppRing::new(r.ring(Dir::Tx, 0).unwrap());
        let mut segs = Vec::new();
        assert_eq!(
            pull_chain(&m, &split, 0, &mut segs, &tx),
            Chain::Frame(3000)
        );
        assert_eq!(segs.len(), 3, "the second descriptor in two spans");
        assert_eq!(tx.head(), 2, "two slots");
        let v = tx.view();
        let (s0, s1) = (v.read_slot(0), v.read_slot(1));
        assert_eq!(
            (s0.len, s0.flags, s1.len, s1.flags),
            (2048, NS_MOREFRAG, 952, 0)
        );
        let mut got = vec![0u8; 3000];
        v.bufs().read(s0.buf_idx, &mut got[..2048]);
        v.bufs().read(s1.buf_idx, &mut got[2048..]);
        assert_eq!(got, frame);
        // Too short for a header and an Ethernet header: bad, nothing put.
        d(0, 0x1000, 20, 0, 0);
        assert_eq!(pull_chain(&m, &split, 0, &mut segs, &tx), Chain::Bad);
        assert_eq!(tx.head(), 2);
    }

    /// Guest memory for [`walker_cost`]: a queue of 256 at 0 (avail 0x1000, used
    /// 0x2000), its descriptor `i` a buffer of 2048 bytes at 0x10000 + 2048 i with
    /// `len` bytes and `flags`, every avail entry `i` naming descriptor `i`.
    fn bench_queue(len: u32, flags: u16) -> (virtio_queue::Queue, GuestMemoryMmap) {
        use vm_memory::{Bytes, GuestAddress};
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let q = super::super::split::test_queue_of(256, 0x1000, 0x2000);
        for i in 0..256u64 {
            mem.write_obj((0x10000 + 2048 * i).to_le(), GuestAddress(16 * i))
                .unwrap();
            mem.write_obj(len.to_le(), GuestAddress(16 * i + 8))
                .unwrap();
            mem.write_obj(flags.to_le(), GuestAddress(16 * i + 12))
                .unwrap();
            mem.write_obj((i as u16).to_le(), GuestAddress(0x1004 + 2 * i))
                .unwrap();
        }
        (q, mem)
    }

    /// The guest offers its 256 buffers once more.
    fn bench_refill(mem: &GuestMemoryMmap, round: u16) {
        use vm_memory::{Bytes, GuestAddress};
        mem.write_obj(round.wrapping_mul(256).to_le(), GuestAddress(0x1002))
            .unwrap();
    }

    /// What the walker costs per frame, guest RX (a frame into a buffer) and TX (a
    /// chain into the port's TX ring), beside the same work through virtio-queue's
    /// per-access `Queue` API and vm-memory (the path before `split`: a chain popped,
    /// its reader or writer, one used-index store per frame). One thread, no peers:
    /// the per-frame CPU cost of the queue work alone, not of a whole path.
    /// `cargo test --release -p valed --lib -- --ignored --nocapture walker_cost`
    #[test]
    #[ignore]
    fn walker_cost() {
        use std::io::{Read, Write};
        use std::time::Instant;
        use vale_abi::{Dir, PortGeometry, Region};
        const ROUNDS: u16 = 4000;
        let per = |t: Instant| t.elapsed().as_nanos() as f64 / (f64::from(ROUNDS) * 256.0);
        for len in [60usize, 1514] {
            let mut frame = vec![0x5au8; VNET_HDR + len];
            // RX, the walker.
            let (mut q, mem) = bench_queue(2048, 2);
            let m = GuestMap::new(std::sync::Arc::new(mem.clone()));
            let split = Split::of(&m, &q).unwrap();
            let mut sc = Scratch::default();
            let t = Instant::now();
            for r in 1..=ROUNDS {
                bench_refill(&mem, r);
                let mut rx = Rx {
                    m: &m,
                    split,
                    q: &mut q,
                    sc: &mut sc,
                };
                for _ in 0..256 {
                    assert_eq!(rx.put_frame(&mut frame, true), Put::Done);
                }
                split.publish_used_release(&m, rx.q.next_used());
            }
            let rx_new = per(t);
            // RX, virtio-queue.
            let (mut q, mem) = bench_queue(2048, 2);
            let t = Instant::now();
            for r in 1..=ROUNDS {
                bench_refill(&mem, r);
                for _ in 0..256 {
                    let c = q.pop_descriptor_chain(&mem).unwrap();
                    let head = c.head_index();
                    let mut w = c.writer(&mem).unwrap();
                    w.write_all(&frame).unwrap();
                    q.add_used(&mem, head, frame.len() as u32).unwrap();
                }
            }
            let rx_old = per(t);
            // TX, the walker, into a port ring rewound every round.
            let g = PortGeometry {
                tx_slots: 1024,
                rx_slots: 64,
                buf_size: 2048,
                ..Default::default()
            };
            let region = Region::create("vh-walker-cost", g).unwrap();
            let tx = AppRing::new(region.ring(Dir::Tx, 0).unwrap());
            let rewind = |tx: &AppRing| {
                let v = tx.view();
                v.set_head(0);
                v.set_cur(0);
                v.set_tail(1023);
            };
            let (mut q, mem) = bench_queue((VNET_HDR + len) as u32, 0);
            let m = GuestMap::new(std::sync::Arc::new(mem.clone()));
            let split = Split::of(&m, &q).unwrap();
            let mut segs = Vec::new();
            let t = Instant::now();
            for r in 1..=ROUNDS {
                bench_refill(&mem, r);
                rewind(&tx);
                let (mut next, mut used) = (Wrapping(q.next_avail()), Wrapping(q.next_used()));
                let avail = split.avail_idx_acquire(&m).unwrap();
                while next.0 != avail {
                    let head = split.avail_head(&m, next.0).unwrap();
                    next += 1;
                    let c = pull_chain(&m, &split, head, &mut segs, &tx);
                    assert_eq!(c, Chain::Frame(VNET_HDR + len));
                    split.set_used(&m, used.0, head, 0);
                    used += 1;
                }
                q.set_next_avail(next.0);
                q.set_next_used(used.0);
                split.publish_used_release(&m, used.0);
            }
            let tx_new = per(t);
            // TX, virtio-queue: read into a buffer, then into the ring.
            let (mut q, mem) = bench_queue((VNET_HDR + len) as u32, 0);
            let mut buf = Vec::with_capacity(MAX_FRAME + VNET_HDR);
            let t = Instant::now();
            for r in 1..=ROUNDS {
                bench_refill(&mem, r);
                rewind(&tx);
                while let Some(c) = q.pop_descriptor_chain(&mem) {
                    let head = c.head_index();
                    buf.clear();
                    c.reader(&mem).unwrap().read_to_end(&mut buf).unwrap();
                    crate::port::rings::ring_put(&tx, &buf);
                    q.add_used(&mem, head, 0).unwrap();
                }
            }
            let tx_old = per(t);
            println!(
                "walker_cost {len} B: RX {rx_new:.1} ns/frame (virtio-queue {rx_old:.1}), \
                 TX {tx_new:.1} ns/frame (virtio-queue {tx_old:.1})"
            );
        }
    }
}
