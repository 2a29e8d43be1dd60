//! The forwarding thread's side of a vhost-user port: guest TX chains into the port's
//! TX ring, the port's RX ring and direct deliveries into guest RX buffers.

use super::*;
use crate::port::rings::{PortRings, ring_put, ring_take};
use crate::port::{Direct, DrivenPort, PortCounters};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vale_abi::AppRing;
use vale_switch::offload::{self, VnetHdr};
use vhost_user_backend::VringT;
use virtio_bindings::bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::{QueueOwnedT, QueueT};

/// Frames for the guest's RX queue that did not fit yet, and what it accepts.
#[derive(Default)]
pub(super) struct Outbox {
    /// Features the frontend acknowledged (which offloads the guest takes).
    pub(super) acked: u64,
    /// Frames (12-byte header first), in order.
    pub(super) pending: VecDeque<Vec<u8>>,
    /// Frame buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// Scratch for software segmentation.
    work: Vec<u8>,
    /// The guest's RX avail index when a frame last found no room in its buffers: until
    /// it moves, waiting frames are no work (a stopped or starving guest must not keep
    /// the forwarding thread awake).
    rx_seen: Option<u16>,
}

/// Most fragments of a packet handed over directly (netmap's `NETMAP_MAX_FRAGS`).
const MAX_PARTS: usize = 64;
/// Most frames waiting for guest RX buffers; beyond, the switch's packets for the guest
/// are dropped (`tx_error` on the port), as a NIC with a full ring would.
const MAX_PENDING: usize = 512;

/// A vhost-user port as its forwarding thread drives it: guest TX chains into the
/// port's TX ring, the port's RX ring (and packets handed over directly) into guest RX
/// buffers, all in the forwarding pass: no thread hand-off between guest and switch.
pub struct VhostIo {
    guest: GuestRef,
    tx: AppRing,
    rx: AppRing,
    counters: Arc<PortCounters>,
    buf: Vec<u8>,
    /// `sys::sigbus::caught()` when last looked at.
    caught_seen: u64,
}

impl VhostIo {
    pub fn new(guest: GuestRef, rings: PortRings, counters: Arc<PortCounters>) -> VhostIo {
        VhostIo {
            guest,
            tx: rings.tx,
            rx: rings.rx,
            counters,
            buf: Vec::with_capacity(MAX_FRAME + VNET_HDR),
            caught_seen: crate::sys::sigbus::caught(),
        }
    }
}

/// What the forwarding thread does with the guest's queues; `DrivenPort` wraps each in
/// the check for a truncation of guest memory.
impl VhostIo {
    /// Guest TX queue -> the port's TX ring, as much as the ring takes (the guest's
    /// buffers wait otherwise: backpressure, not drops). Returns the frames moved.
    fn pull_tx(&mut self) -> usize {
        let mut g = lock(&self.guest);
        if g.tx_broken {
            return 0;
        }
        let Some((vq, mem)) = g.queue(TX) else {
            return 0;
        };
        let vq = &vq;
        let room =
            (MAX_FRAME + VNET_HDR).div_ceil(self.tx.view().bufs().buf_size() as usize) as u32;
        let c = &self.counters;
        let mut moved = 0;
        {
            let mut st = vq.get_mut();
            if !st.get_queue().ready() || !st.is_enabled() {
                return 0;
            }
            while moved < BURST {
                if self.tx.space() < room {
                    self.tx.txsync();
                    if self.tx.space() < room {
                        break;
                    }
                }
                let Some(chain) = st.get_queue_mut().pop_descriptor_chain(&*mem) else {
                    break;
                };
                let head = chain.head_index();
                match read_chain(chain, &mem, &mut self.buf) {
                    Chain::TooBig => c.truncated.fetch_add(1, Ordering::Relaxed),
                    Chain::Bad => c.read_errors.fetch_add(1, Ordering::Relaxed),
                    Chain::Frame => {
                        ring_put(&self.tx, &self.buf);
                        c.from_host_bytes
                            .fetch_add((self.buf.len() - VNET_HDR) as u64, Ordering::Relaxed);
                        c.from_host.fetch_add(1, Ordering::Relaxed)
                    }
                };
                let _ = st.add_used(head, 0);
                moved += 1;
            }
        }
        if moved > 0 {
            self.tx.txsync();
            if vq.needs_notification().unwrap_or(true) {
                let _ = vq.signal_used_queue();
            }
        } else if avail_beyond_ring(vq, &mem) {
            g.tx_broken = true;
            c.read_errors.fetch_add(1, Ordering::Relaxed);
        }
        moved
    }

    /// What the switch left in the port's RX ring (packets converted for the guest's
    /// header) and what waits for guest buffers -> guest RX buffers; signals the guest
    /// once for everything added this pass. Returns the frames delivered.
    fn push_rx(&mut self) -> usize {
        let mut g = lock(&self.guest);
        let g = &mut *g;
        let Some((vq, mem)) = g.queue(RX) else {
            return 0;
        };
        let mut sent = 0;
        {
            let mut st = vq.get_mut();
            if !st.get_queue().ready() || !st.is_enabled() {
                return 0;
            }
            self.rx.rxsync();
            loop {
                if g.out.pending.is_empty() {
                    if sent >= BURST || self.rx.space() == 0 {
                        break;
                    }
                    let mut f = g.out.spare.pop().unwrap_or_default();
                    ring_take(&self.rx, &mut f);
                    g.out.stage(f, &self.counters);
                    continue;
                }
                match deliver(&mut g.out, st.get_queue_mut(), &mem, &self.counters) {
                    Some(true) => sent += 1,
                    Some(false) => {}
                    None => break, // no guest buffers: the rest waits
                }
            }
            self.rx.rxsync();
        }
        if sent > 0 || g.rx_dirty {
            g.rx_dirty = false;
            let want = rx_wants_signal(vq.get_ref().get_queue(), &mem, &mut g.rx_since);
            if want {
                let _ = vq.signal_used_queue();
            }
        }
        sent
    }

    /// A packet handed over by the switch (the engine's direct delivery, same header
    /// length): into guest RX buffers now, or queued behind what already waits.
    fn send_direct(&mut self, pkt: &Direct<'_>) -> bool {
        let (hdr, frags) = (pkt.hdr, pkt.frags);
        if frags.len() > MAX_PARTS {
            return false; // never from the engine (MAX_FRAGS)
        }
        let mut g = lock(&self.guest);
        let g = &mut *g;
        // Straight from the sender's buffers into guest buffers when nothing waits and
        // the guest takes the packet as it is (its offloads accepted).
        if g.out.pending.is_empty() {
            if let Some((vq, mem)) = g.queue(RX) {
                let mut st = vq.get_mut();
                if st.get_queue().ready() && st.is_enabled() {
                    let out = &g.out;
                    let r = crate::sys::with_slices(frags, |parts| {
                        // The header: converted by the switch, or the sender's own at
                        // the start of the first fragment.
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
                        Some((
                            put_parts(
                                st.get_queue_mut(),
                                &mem,
                                &mut hb,
                                &rest[..parts.len()],
                                out.mergeable(),
                            ),
                            len,
                        ))
                    });
                    match r {
                        Some((Put::Done, len)) => {
                            g.rx_dirty = true;
                            self.counters.to_host.fetch_add(1, Ordering::Relaxed);
                            self.counters
                                .to_host_bytes
                                .fetch_add((len - VNET_HDR) as u64, Ordering::Relaxed);
                            return true;
                        }
                        Some((Put::Bad, _)) => {
                            g.rx_dirty = true;
                            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                            return true;
                        }
                        Some((Put::NoRoom, _)) | None => {} // staged below
                    }
                }
            }
        }
        // A full outbox first goes into buffers the guest added since it filled: the
        // switch hands a whole batch over before `push_rx` looks again, and without
        // this a batch arriving just after the guest refilled was dropped while its
        // buffers stood empty (seen: 256 buffers free as frames were dropped).
        if g.out.pending.len() >= MAX_PENDING {
            flush(g, &self.counters);
            if g.out.pending.len() >= MAX_PENDING {
                return false;
            }
        }
        let mut f = g.out.spare.pop().unwrap_or_default();
        f.clear();
        f.extend_from_slice(hdr);
        for p in frags {
            let at = f.len();
            f.resize(at + p.len(), 0);
            p.copy_to(&mut f[at..]);
        }
        g.out.stage(f, &self.counters);
        flush(g, &self.counters);
        true
    }

    /// Before the forwarding thread sleeps: asks the guest to kick for new TX buffers
    /// (and for RX buffers, if frames wait for them); true if there is work already.
    /// Queues the frontend stopped (a paused VM) are no work, nor are frames waiting for
    /// RX buffers the guest has not added since they last found no room: either would
    /// keep the thread awake for as long as the guest stays that way.
    fn arm_queues(&mut self) -> bool {
        let mut g = lock(&self.guest);
        let mut work = false;
        let live = |vq: &VringRwLock| {
            let st = vq.get_ref();
            st.get_queue().ready() && st.is_enabled()
        };
        if let Some((vq, mem)) = g.queue(TX) {
            if !g.tx_broken && live(&vq) && vq.enable_notification().unwrap_or(false) {
                if avail_beyond_ring(&vq, &mem) {
                    g.tx_broken = true;
                    self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    work = true;
                }
            }
        }
        if !g.out.pending.is_empty() {
            if let Some((vq, mem)) = g.queue(RX) {
                if live(&vq) {
                    let mut st = vq.get_mut();
                    let q = st.get_queue_mut();
                    match q.avail_idx(&*mem, std::sync::atomic::Ordering::Acquire) {
                        Err(_) => {}
                        // Buffers added since the last try: deliver them first.
                        Ok(now) if Some(now.0) != g.out.rx_seen => work = true,
                        Ok(now) => {
                            // A kick when the guest adds any buffer: with EVENT_IDX,
                            // `avail_event` is written from `next_avail`, which would ask
                            // for a kick only past the buffers it has already added.
                            let next = q.next_avail();
                            q.set_next_avail(now.0);
                            work |= q.enable_notification(&*mem).unwrap_or(false);
                            q.set_next_avail(next);
                            // One more try: buffers added while the last one looked are
                            // behind `now` and would bring no kick.
                            if !work && deliver(&mut g.out, q, &mem, &self.counters).is_some() {
                                g.rx_dirty = true;
                                work = true;
                            }
                        }
                    }
                }
            }
        }
        work
    }

    /// After the forwarding thread woke: polling again, no kicks wanted.
    fn disarm_queues(&mut self) {
        let g = lock(&self.guest);
        if let Some(vr) = &g.vrings {
            for vq in vr {
                let _ = vq.disable_notification();
            }
        }
    }
}

/// What a guest TX chain held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chain {
    /// A frame (12-byte header first) now in the buffer.
    Frame,
    /// More than the largest frame: dropped unread.
    TooBig,
    /// Not readable guest memory, or shorter than a header and an Ethernet header.
    Bad,
}

/// Reads a guest TX chain into `buf` (cleared first), its length checked before a byte
/// is copied: a guest may describe gigabytes.
pub(crate) fn read_chain(
    chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    buf: &mut Vec<u8>,
) -> Chain {
    buf.clear();
    let mut r = match chain.reader(mem) {
        Ok(r) if r.available_bytes() > MAX_FRAME + VNET_HDR => return Chain::TooBig,
        Ok(r) => r,
        Err(_) => return Chain::Bad,
    };
    if r.read_to_end(buf).is_ok() && buf.len() >= VNET_HDR + 14 {
        Chain::Frame
    } else {
        Chain::Bad
    }
}

impl DrivenPort for VhostIo {
    fn pull(&mut self) -> usize {
        let n = self.pull_tx();
        self.after_guest_memory();
        n
    }

    fn push(&mut self) -> usize {
        let n = self.push_rx();
        self.after_guest_memory();
        n
    }

    fn send(&mut self, pkt: &Direct<'_>) -> bool {
        let ok = self.send_direct(pkt);
        self.after_guest_memory();
        ok
    }

    fn arm(&mut self) -> bool {
        let work = self.arm_queues();
        self.after_guest_memory();
        work
    }

    fn disarm(&mut self) {
        self.disarm_queues();
        self.after_guest_memory();
    }
}

impl VhostIo {
    /// After guest memory was touched: if a truncation was caught anywhere since the
    /// last look (one atomic load when none was), whether it was this guest's, which is
    /// then counted and cut off.
    fn after_guest_memory(&mut self) {
        let now = crate::sys::sigbus::caught();
        if now != self.caught_seen {
            self.caught_seen = now;
            lock(&self.guest).check_faults(&self.counters);
        }
    }
}

/// Whether the guest's avail index is further ahead than its ring holds (a broken or
/// hostile driver): then "more to do" can never be done.
fn avail_beyond_ring(vq: &VringRwLock, mem: &GuestMemoryMmap) -> bool {
    avail_beyond(vq.get_ref().get_queue(), mem)
}

/// [`avail_beyond_ring`] of a queue.
pub(crate) fn avail_beyond(q: &virtio_queue::Queue, mem: &GuestMemoryMmap) -> bool {
    match q.avail_idx(mem, std::sync::atomic::Ordering::Acquire) {
        Ok(i) => (i - std::num::Wrapping(q.next_avail())).0 > q.size(),
        Err(_) => true,
    }
}

/// What waits in the outbox -> guest RX buffers, as many as there are (none while
/// the guest has not set its RX queue up, or has stopped it).
fn flush(g: &mut Guest, c: &PortCounters) {
    let Some((vq, mem)) = g.queue(RX) else {
        return;
    };
    let mut st = vq.get_mut();
    if !st.get_queue().ready() || !st.is_enabled() {
        return;
    }
    while !g.out.pending.is_empty() {
        match deliver(&mut g.out, st.get_queue_mut(), &mem, c) {
            Some(_) => g.rx_dirty = true,
            None => break,
        }
    }
}

/// Offers the first pending frame to the guest: `Some(true)` delivered, `Some(false)`
/// dropped (counted), `None` no room (it stays first in line).
fn deliver(
    out: &mut Outbox,
    q: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    c: &PortCounters,
) -> Option<bool> {
    let mergeable = out.mergeable();
    let frame = out.pending.front_mut()?;
    let r = match put_frame(q, mem, frame, mergeable) {
        Put::Done => {
            c.to_host.fetch_add(1, Ordering::Relaxed);
            c.to_host_bytes
                .fetch_add((frame.len() - VNET_HDR) as u64, Ordering::Relaxed);
            true
        }
        Put::Bad => {
            c.write_errors.fetch_add(1, Ordering::Relaxed);
            false
        }
        Put::NoRoom => {
            // Buffers the guest added while this looked are tried once more by `arm`.
            out.rx_seen = q
                .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                .ok()
                .map(|i| i.0);
            return None;
        }
    };
    if let Some(f) = out.pending.pop_front() {
        out.recycle(f);
    }
    Some(r)
}

impl Outbox {
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
            self.pending.push_back(frame);
            return;
        }
        h.flags &= offload::F_NEEDS_CSUM; // what resolve looks at
        let (pending, spare) = (&mut self.pending, &mut self.spare);
        let r = offload::resolve(&h, &frame[VNET_HDR..], &mut self.work, |seg| {
            let mut f = spare.pop().unwrap_or_default();
            f.clear();
            f.resize(VNET_HDR, 0);
            f.extend_from_slice(seg);
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

/// Writes `frame` (12-byte header first; its `num_buffers` is filled in here) into as
/// many guest RX buffers as it takes.
pub(crate) fn put_frame(
    q: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    frame: &mut [u8],
    mergeable: bool,
) -> Put {
    let (h, rest) = frame.split_at(VNET_HDR);
    let mut hdr = [0u8; VNET_HDR];
    hdr.copy_from_slice(h);
    put_parts(q, mem, &mut hdr, &[rest], mergeable)
}

/// Writes a packet given as its 12-byte header (`num_buffers` is filled in here) and
/// the parts that follow it into as many guest RX buffers as it takes, or into one
/// buffer (chain) if the guest did not accept `MRG_RXBUF` (it reads no further).
fn put_parts(
    q: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    hdr: &mut [u8; VNET_HDR],
    parts: &[&[u8]],
    mergeable: bool,
) -> Put {
    let len = VNET_HDR + parts.iter().map(|p| p.len()).sum::<usize>();
    // A frame that needs more buffers than this can never fit: dropped, not waited for.
    let most = if mergeable {
        MAX_RX_BUFFERS.min(q.size() as usize)
    } else {
        1
    };
    let mut chains = Vec::new();
    let mut room = 0usize;
    let mut bad = false;
    while room < len && chains.len() < most {
        let Some(c) = q.pop_descriptor_chain(mem) else {
            break;
        };
        let head = c.head_index();
        match c.writer(mem) {
            Ok(w) if w.available_bytes() > 0 => {
                room += w.available_bytes();
                chains.push((head, w));
            }
            _ => {
                // Not writable guest memory: returned unused, the frame dropped.
                let _ = q.add_used(mem, head, 0);
                bad = true;
                break;
            }
        }
    }
    if bad || room < len {
        if bad || chains.len() >= most {
            for (head, _) in chains {
                let _ = q.add_used(mem, head, 0);
            }
            return Put::Bad;
        }
        // Put them back for the next try.
        for _ in 0..chains.len() {
            q.go_to_previous_position();
        }
        return Put::NoRoom;
    }
    let n = chains.len();
    hdr[10..12].copy_from_slice(&(n as u16).to_le_bytes());
    let mut src = std::iter::once(&hdr[..])
        .chain(parts.iter().copied())
        .filter(|p| !p.is_empty());
    let mut cur: &[u8] = src.next().unwrap_or(&[]);
    let mut left = len;
    let mut used = [(0u16, 0u32); MAX_RX_BUFFERS];
    for (i, (head, mut w)) in chains.into_iter().enumerate() {
        let mut n = w.available_bytes().min(left);
        let wrote = n;
        let mut ok = true;
        while n > 0 {
            if cur.is_empty() {
                cur = src.next().unwrap_or(&[]);
                if cur.is_empty() {
                    break;
                }
            }
            let k = cur.len().min(n);
            ok &= w.write_all(&cur[..k]).is_ok();
            cur = &cur[k..];
            n -= k;
        }
        left -= wrote;
        used[i] = (head, if ok { wrote as u32 } else { 0 });
    }
    add_used_at_once(q, mem, &used[..n]);
    Put::Done
}

/// Gives the guest `used` (head, bytes written) in its used ring as one publication:
/// every element written, then the index stored once (Release). A frame in several
/// buffers must appear whole: a guest that sees its first buffer, whose header says
/// how many there are, before the others drops it ("rx error: N buffers out of M
/// missing", Linux's `rx_length_errors`) and takes the rest for frames of their own.
/// `Queue::add_used` stores the index after each element, so it is not used here.
fn add_used_at_once(q: &mut virtio_queue::Queue, mem: &GuestMemoryMmap, used: &[(u16, u32)]) {
    use vm_memory::{Bytes, GuestAddress};
    let (size, ring) = (q.size(), GuestAddress(q.used_ring()));
    let mut next = std::num::Wrapping(q.next_used());
    for &(head, len) in used {
        // The used ring: flags and index (2 bytes each), then `size` elements of a
        // little-endian 32-bit id (the chain's head) and length.
        let at = GuestAddress(ring.0 + 4 + 8 * u64::from(next.0 % size.max(1)));
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        if head >= size || mem.write_slice(&elem, at).is_err() {
            break;
        }
        next += 1;
    }
    q.set_next_used(next.0);
    let _ = mem.store(next.0.to_le(), GuestAddress(ring.0 + 2), Ordering::Release);
}

/// Whether the guest asked to hear of the RX buffers used since `*since` (the queue's
/// `next_used` at the last decision, which becomes the current one): without
/// EVENT_IDX always; with it when the `used_event` the guest wrote lies among the
/// entries added since (Linux's `vring_need_event`). `Queue::needs_notification`
/// counts only the entries `add_used` added, and [`add_used_at_once`] does not use
/// it. Not knowing (a first decision, more entries than the ring holds since, the ring
/// outside guest memory) is a signal: one too many costs the guest an interrupt, one
/// too few could leave it waiting for ever.
fn rx_wants_signal(
    q: &virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    since: &mut Option<u16>,
) -> bool {
    use std::num::Wrapping;
    use vm_memory::{Bytes, GuestAddress};
    let now = Wrapping(q.next_used());
    let Some(old) = since.replace(now.0).map(Wrapping) else {
        return true;
    };
    if !q.event_idx_enabled() || (now - old).0 > q.size() {
        return true;
    }
    // The elements and the index are stored before `used_event` is read (a guest that
    // moves it meanwhile then sees the new index).
    std::sync::atomic::fence(Ordering::SeqCst);
    // `used_event` follows the avail ring's flags, index and `size` 2-byte entries.
    let at = GuestAddress(q.avail_ring() + 4 + 2 * u64::from(q.size()));
    match mem.load::<u16>(at, Ordering::Relaxed) {
        Ok(ev) => now - Wrapping(u16::from_le(ev)) - Wrapping(1) < now - old,
        Err(_) => true,
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
        let mut q = virtio_queue::Queue::new(8).unwrap();
        q.set_size(8);
        q.set_desc_table_address(Some(0), Some(0));
        q.set_avail_ring_address(Some(0x100), Some(0));
        q.set_used_ring_address(Some(0x200), Some(0));
        q.set_ready(true);
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
        let mut f = vec![0xa5u8; VNET_HDR + 150];
        assert_eq!(put_frame(&mut q, &mem, &mut f, true), Put::Done);
        // 162 bytes in 64-byte buffers: three, all in the used ring behind one index.
        let used_idx: u16 = mem.read_obj(GuestAddress(0x202)).unwrap();
        assert_eq!(u16::from_le(used_idx), 3);
        assert_eq!(q.next_used(), 3);
        let mut elems = Vec::new();
        for i in 0..3u64 {
            let id: u32 = mem.read_obj(GuestAddress(0x204 + 8 * i)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(0x208 + 8 * i)).unwrap();
            elems.push((u32::from_le(id), u32::from_le(len)));
        }
        assert_eq!(elems, [(0, 64), (1, 64), (2, 34)]);
        // The first buffer's header says how many there are.
        let num: u16 = mem.read_obj(GuestAddress(0x1000 + 10)).unwrap();
        assert_eq!(u16::from_le(num), 3);
    }

    #[test]
    fn the_guest_is_signalled_when_its_used_event_was_passed() {
        use vm_memory::{Bytes, GuestAddress};
        let (mut q, mem) = rx_queue(4, 64);
        q.set_event_idx(true);
        // `used_event` after the avail ring's 8 entries.
        let used_event = |v: u16| mem.write_obj(v.to_le(), GuestAddress(0x104 + 16)).unwrap();
        let mut since = None;
        assert!(
            rx_wants_signal(&q, &mem, &mut since),
            "a first decision signals"
        );
        assert_eq!(since, Some(0));
        used_event(1);
        add_used_at_once(&mut q, &mem, &[(0, 60)]);
        assert!(
            !rx_wants_signal(&q, &mem, &mut since),
            "asked after entry 1 only"
        );
        add_used_at_once(&mut q, &mem, &[(1, 60), (2, 60)]);
        assert!(rx_wants_signal(&q, &mem, &mut since), "entry 1 was used");
        assert!(
            !rx_wants_signal(&q, &mem, &mut since),
            "nothing added since"
        );
        q.set_event_idx(false);
        assert!(
            rx_wants_signal(&q, &mem, &mut since),
            "without EVENT_IDX: always"
        );
    }
}
