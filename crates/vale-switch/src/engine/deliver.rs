//! Pass 2: per destination, copy the batch's packets into its RX ring and publish the
//! new tail once; copies to monitors; the structs that describe a batch and a target.

use super::batch::{EMPTY_Q, Queue, Scratch};
use super::convert::{Conv, convert, shift_offsets};
use super::direct::{Egress, NoEgress, deliver_direct};
use super::{NIL, Notify, Port, PortTable, RingDir};
use crate::offload::VnetHdr;
use crate::stats::{DropReason, PortStats};
use crate::types::PortId;
use crate::vlan::{self, Edit, PortVlan};
use std::sync::Arc;
use vale_abi::layout::{MAX_FRAGS, NS_MOREFRAG, NS_RFRAGS_SHIFT};
use vale_abi::ring::next;
use vale_abi::{Bufs, Slots, copy_frame, copy_frame_pop, copy_frame_push};
use vale_wire::virtio_net::field;

/// What pass 2 delivers from: the batch's packets (in the scratch), the sender's
/// buffers, header length and ring, and the flood queue.
pub(super) struct Batch<'a> {
    pub(super) sc: &'a Scratch,
    pub(super) bufs: Bufs<'a>,
    pub(super) src: PortId,
    pub(super) hdr_len: u16,
    /// The sender's TX ring; it picks the receiver's RX ring.
    pub(super) ring: u16,
    pub(super) flood: Queue,
    /// The switch filters VLANs: copies go only to members of their VLAN, tagged as
    /// each destination's mode wants (not for the sender's TX monitors).
    pub(super) vlan: bool,
}

/// Whose VLAN mode decides what a target gets (when the batch filters VLANs).
pub(super) enum Tagging {
    /// The target port's own.
    Own,
    /// The port a monitor watches.
    Of(Arc<PortVlan>),
}

impl Batch<'_> {
    /// How packet `pi` must change for a port of VLAN mode `mode` (`None`: the batch
    /// does not filter VLANs); `None` if the port is not a member of its VLAN.
    #[inline(always)]
    pub(super) fn edit(&self, pi: u32, mode: Option<&PortVlan>) -> Option<Edit> {
        match mode {
            None => Some(Edit::Keep),
            Some(m) => match self.sc.shape {
                Some((vid, how, tci)) => m.egress(vid, how, tci),
                None => {
                    let vid = self.sc.infos[pi as usize].vid;
                    let (how, tci) = self.sc.vtags[pi as usize];
                    m.egress(vid, how, tci)
                }
            },
        }
    }
}

/// One destination of pass 2: its id, its port and its unicast queue.
pub(super) struct Target<'a> {
    pub(super) id: PortId,
    pub(super) port: &'a Port,
    pub(super) uq: Queue,
    /// The copies are a monitor's (counted in `mon_copies`, not `rx_copies`).
    pub(super) monitor: bool,
    pub(super) tagging: Tagging,
}

impl Target<'_> {
    /// The VLAN mode that filters and tags this target's copies, if the batch filters.
    #[inline(always)]
    pub(super) fn mode(&self, b: &Batch<'_>) -> Option<&PortVlan> {
        match (&self.tagging, b.vlan) {
            (_, false) => None,
            (Tagging::Own, true) => Some(&self.port.vlan),
            (Tagging::Of(m), true) => Some(m),
        }
    }
}

/// Where pass 2's side effects go: the conversion work space, the egress of direct
/// ports and the notifications.
pub(super) struct Out<'a> {
    pub(super) conv: &'a mut Conv,
    pub(super) egress: &'a mut dyn Egress,
    pub(super) notify: &'a mut Vec<Notify>,
    /// Several threads forward the switch: each RX ring takes exactly the slots it
    /// needs from its lease, and direct ports are filled through their RX rings.
    pub(super) shared: bool,
}

/// The RX ring being filled: its slots and buffers, the next slot and the free slots.
#[derive(Clone, Copy)]
pub(super) struct Fill<'a> {
    pub(super) slots: Slots<'a>,
    pub(super) bufs: Bufs<'a>,
    pub(super) at: u32,
    pub(super) space: u32,
}

/// What a monitor copies: the packets of `queue` (merged with the batch's flood queue)
/// that `port` sends (`Tx`) or is sent (`Rx`).
#[derive(Clone, Copy)]
pub(super) struct Seen {
    pub(super) port: PortId,
    pub(super) dir: RingDir,
    pub(super) queue: Queue,
}

/// Pass 2: per destination, its unicast queue merged with the flood queue, then the same
/// packets, in the same order, to its RX monitors.
#[inline(always)]
pub(super) fn deliver_all(b: &Batch<'_>, ports: &PortTable, out: &mut Out<'_>, st: &mut PortStats) {
    let n_uni = b.sc.dsts.len();
    let n_targets = if b.flood.head == NIL {
        n_uni
    } else {
        n_uni + ports.active.len()
    };
    for t in 0..n_targets {
        let (id, uq) = if t < n_uni {
            let d = b.sc.dsts[t];
            (d, b.sc.queues[d.0 as usize])
        } else {
            let a = ports.active[t - n_uni];
            if a == b.src || b.sc.queues[a.0 as usize].head != NIL {
                continue; // the sender, or already served with its unicast queue
            }
            (a, EMPTY_Q)
        };
        let Some(port) = ports.get(id) else {
            continue;
        };
        let t = Target {
            id,
            port,
            uq,
            monitor: false,
            tagging: Tagging::Own,
        };
        deliver(b, t, out, st);
        if !ports.monitors.is_empty() {
            let seen = Seen {
                port: id,
                dir: RingDir::Rx,
                queue: uq,
            };
            copy_to_monitors(b, ports, seen, out);
        }
    }
}

/// Copies to every monitor that watches what `seen` describes. They never go to an
/// egress and are not the sender's copies: only the monitor port counts them.
#[inline(never)]
pub(super) fn copy_to_monitors(b: &Batch<'_>, ports: &PortTable, seen: Seen, out: &mut Out<'_>) {
    let PortTable {
        slots, monitors, ..
    } = ports;
    // An RX monitor sees what its port gets, as its port gets it.
    let watched = match (b.vlan, slots.get(seen.port.0 as usize)) {
        (true, Some(Some(p))) => Some(Arc::clone(&p.vlan)),
        _ => None,
    };
    let mut out = Out {
        conv: out.conv,
        egress: &mut NoEgress,
        notify: out.notify,
        shared: out.shared,
    };
    for m in monitors.iter().filter(|m| m.watches(seen.port, seen.dir)) {
        if let Some(Some(port)) = slots.get(m.port.0 as usize) {
            let mut ignore = PortStats::default();
            let t = Target {
                id: m.port,
                port,
                uq: seen.queue,
                monitor: true,
                tagging: match &watched {
                    Some(w) => Tagging::Of(Arc::clone(w)),
                    None => Tagging::Own,
                },
            };
            // A monitor of a port that filters nothing sees nothing filtered.
            let b = &Batch {
                vlan: watched.is_some(),
                ..*b
            };
            deliver(b, t, &mut out, &mut ignore);
        }
    }
}

/// Copies packet `pi` into the destination slots at `fill.at`; returns its bytes, or
/// why it could not be delivered.
#[inline(always)]
pub(super) fn copy_packet(b: &Batch<'_>, pi: u32, fill: &mut Fill<'_>) -> Result<u64, DropReason> {
    let p = &b.sc.pkts[pi as usize];
    if p.nfrags as u32 > fill.space {
        return Err(DropReason::RingFull);
    }
    let (dslots, dbufs) = (fill.slots, fill.bufs);
    let n = dslots.len();
    let cnt = p.nfrags << NS_RFRAGS_SHIFT;
    if p.nfrags == 1 {
        if p.len as u32 > dbufs.buf_size() {
            return Err(DropReason::Oversize);
        }
        let t = fill.at;
        if !copy_frame(b.bufs, p.buf_idx, dbufs, dslots.buf_idx(t), p.len as usize) {
            return Err(DropReason::BadRxBuf);
        }
        dslots.write_len_flags(t, p.len, cnt);
        fill.at = next(t, n);
        fill.space -= 1;
        return Ok(p.len as u64);
    }
    let mut k = fill.at;
    for (x, f) in b.sc.frags_of(p).enumerate() {
        if f.len as u32 > dbufs.buf_size() {
            return Err(DropReason::Oversize);
        }
        if !copy_frame(b.bufs, f.buf_idx, dbufs, dslots.buf_idx(k), f.len as usize) {
            return Err(DropReason::BadRxBuf);
        }
        let more = if x + 1 < p.nfrags as usize {
            NS_MOREFRAG
        } else {
            0
        };
        dslots.write_len_flags(k, f.len, cnt | more);
        k = next(k, n);
    }
    fill.at = k;
    fill.space -= p.nfrags as u32;
    Ok(b.sc.infos[pi as usize].len as u64)
}

/// Copies packet `pi` into the slot at `fill.at` changed by `edit` (not `Keep`), the
/// sender's and the receiver's header lengths being the same: the tag is written while
/// copying (`copy_frame_push`, `copy_frame_pop`, or the copy and two bytes). Returns its
/// bytes or why it was not delivered, or `None` for a copy the slow path must make: a
/// frame of several slots, one whose new length does not fit one buffer, one too short
/// for its edit, or a buffer the copy refused (the slow path finds out which).
#[inline(always)]
pub(super) fn retag_packet(
    b: &Batch<'_>,
    pi: u32,
    edit: Edit,
    fill: &mut Fill<'_>,
) -> Option<Result<u64, DropReason>> {
    let p = &b.sc.pkts[pi as usize];
    if p.nfrags != 1 {
        return None;
    }
    if fill.space == 0 {
        return Some(Err(DropReason::RingFull));
    }
    let hl = b.hdr_len as usize;
    // Where the tag goes or is: after the MAC addresses.
    let at = hl + 12;
    let (len, t) = (p.len as usize, fill.at);
    let didx = fill.slots.buf_idx(t);
    let (sb, db) = (b.bufs, fill.bufs);
    let new_len = match edit {
        Edit::Push { tpid, tci } => {
            let [a, c] = tpid.to_be_bytes();
            let [d, e] = tci.to_be_bytes();
            if !copy_frame_push(sb, p.buf_idx, db, didx, len, at, [a, c, d, e]) {
                return None;
            }
            len + 4
        }
        Edit::Pop => {
            if !copy_frame_pop(sb, p.buf_idx, db, didx, len, at) {
                return None;
            }
            len - 4
        }
        Edit::SetVid(tci) => {
            if len < at + 4
                || len > db.buf_size() as usize
                || !copy_frame(sb, p.buf_idx, db, didx, len)
                || !db.write_at(didx, at + 2, &tci.to_be_bytes())
            {
                return None;
            }
            len
        }
        Edit::Keep => return None,
    };
    if hl > 0 {
        shift_header(db, didx, hl, vlan::delta(edit));
    }
    fill.slots
        .write_len_flags(t, new_len as u16, 1 << NS_RFRAGS_SHIFT);
    fill.at = next(t, fill.slots.len());
    fill.space -= 1;
    Some(Ok(new_len as u64))
}

/// Moves the frame offsets of the virtio-net header at the start of buffer `idx` (just
/// copied) by `by` bytes, for a tag put in or taken out behind it (as the slow path's
/// `shift_offsets`).
#[inline(never)]
fn shift_header(bufs: Bufs<'_>, idx: u32, hl: usize, by: i32) {
    let mut h = [0u8; 10];
    if by == 0 || hl < h.len() || !bufs.read(idx, &mut h) {
        return;
    }
    let mut vh = VnetHdr::parse(&h);
    let was = vh;
    shift_offsets(&mut vh, by);
    if vh != was {
        bufs.write_at(idx, field::HDR_LEN.start, &vh.hdr_len.to_le_bytes());
        bufs.write_at(idx, field::CSUM_START.start, &vh.csum_start.to_le_bytes());
    }
}

/// Writes one packet's bytes into the destination slots at `fill.at` (several slots with
/// `NS_MOREFRAG` if it is larger than a buffer).
pub(super) fn put_bytes(bytes: &[u8], fill: &mut Fill<'_>) -> Result<(), DropReason> {
    let bs = fill.bufs.buf_size() as usize;
    let nfr = bytes.len().div_ceil(bs).max(1);
    if nfr > MAX_FRAGS {
        return Err(DropReason::Oversize);
    }
    if nfr as u32 > fill.space {
        return Err(DropReason::RingFull);
    }
    let n = fill.slots.len();
    let cnt = (nfr as u16) << NS_RFRAGS_SHIFT;
    let mut k = fill.at;
    for (x, chunk) in bytes.chunks(bs).enumerate() {
        if !fill.bufs.write(fill.slots.buf_idx(k), chunk) {
            return Err(DropReason::BadRxBuf);
        }
        let more = if x + 1 < nfr { NS_MOREFRAG } else { 0 };
        fill.slots
            .write_len_flags(k, chunk.len() as u16, cnt | more);
        k = next(k, n);
    }
    fill.at = k;
    fill.space -= nfr as u32;
    Ok(())
}

/// Pass 2 for one destination: into its RX ring (or to the egress, if it is direct),
/// the new tail published once.
#[inline]
pub(super) fn deliver(b: &Batch<'_>, t: Target<'_>, out: &mut Out<'_>, st: &mut PortStats) {
    let nrx = t.port.rx.len();
    if nrx == 0 {
        // Unreachable (a geometry has at least one RX ring), but never uncounted.
        lose_all(b, t, DropReason::RingFull, st);
        return;
    }
    let dst_hl = t.port.hdr_len;
    // Direct ports take any sender: with the same header as it is, otherwise with the
    // header converted (they all carry one and accept offloads).
    if t.port.direct && !out.shared && (dst_hl == b.hdr_len || dst_hl >= 10) {
        deliver_direct(b, t, out.egress, out.conv, st);
        return;
    }
    // Without VLAN filtering the loop is the one it always was. With it, a batch of
    // one VLAN and tag shape (the usual case) gets one answer for the whole target:
    // nothing (not a member: no copies at all), the plain loop, or one edit for all.
    if !b.vlan {
        return deliver_ring::<false, ANY>(b, t, None, out, st);
    }
    match (b.sc.shape, t.mode(b)) {
        (Some((vid, how, tci)), Some(m)) => match m.egress(vid, how, tci) {
            None => {}
            Some(Edit::Keep) => deliver_ring::<false, ANY>(b, t, None, out, st),
            // One edit for every copy, between ports of one header length: a loop of
            // its own, where the edit is not looked at per copy.
            Some(e @ Edit::Push { .. }) if t.port.hdr_len == b.hdr_len => {
                deliver_ring::<true, PUSH>(b, t, Some(e), out, st)
            }
            Some(Edit::Pop) if t.port.hdr_len == b.hdr_len => {
                deliver_ring::<true, POP>(b, t, Some(Edit::Pop), out, st)
            }
            Some(e) => deliver_ring::<true, ANY>(b, t, Some(e), out, st),
        },
        _ => deliver_ring::<true, ANY>(b, t, None, out, st),
    }
}

/// `deliver_ring`'s edit kinds: any (looked at per copy), or every copy a push or a pop
/// between ports of one header length.
const ANY: u8 = 0;
const PUSH: u8 = 1;
const POP: u8 = 2;

/// [`deliver`] into the port's RX ring. Without `VLAN` every copy is kept as it is;
/// with it, every copy gets `fixed` if given, else its own edit (or none, for a port
/// not in its VLAN). With `KIND` `PUSH` or `POP`, `fixed` is that edit and the
/// receiver's header is the sender's.
#[inline(always)]
fn deliver_ring<const VLAN: bool, const KIND: u8>(
    b: &Batch<'_>,
    t: Target<'_>,
    fixed: Option<Edit>,
    out: &mut Out<'_>,
    st: &mut PortStats,
) {
    let nrx = t.port.rx.len();
    let dst_hl = t.port.hdr_len;
    let watched = match (&t.tagging, VLAN && fixed.is_none()) {
        (Tagging::Of(m), true) => Some(Arc::clone(m)),
        _ => None,
    };
    let Target {
        id,
        port,
        uq,
        monitor,
        tagging: _,
    } = t;
    let Port {
        rx, counters, vlan, ..
    } = port;
    let mode = match (&watched, VLAN && fixed.is_none()) {
        (_, false) => None,
        (Some(m), true) => Some(&**m),
        (None, true) => Some(&**vlan),
    };
    let rr = (b.ring as usize % nrx) as u16;
    let rk = &rx[rr as usize];
    // The receiver's counts, published once when its copies are done.
    let mut ds = PortStats::default();
    // Alone, the whole free space (the unused part goes back: the lease is always the
    // newest); shared, exactly what the copies take, so that other threads' leases
    // follow without a gap.
    let want = if out.shared {
        slots_needed::<VLAN>(b, uq, fixed, mode)
    } else {
        u32::MAX
    };
    let leased = rk.lease(want);
    if leased.reset {
        ds.ring_resets += 1;
    }
    let mut lease = leased.lease;
    let (start, space) = lease.as_ref().map_or((0, 0), |l| (l.start(), l.len()));
    let mut fill = Fill {
        slots: rk.view.slots(),
        bufs: rk.view.bufs().access(),
        at: start,
        space,
    };
    let (mut u, mut f) = (uq.head, b.flood.head);
    let (mut copies, mut dropped, mut delivered, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    // The tag a `PUSH` loop puts in, taken out of `fixed` once.
    let push = match fixed {
        Some(Edit::Push { tpid, tci }) => (tpid, tci),
        _ => (0, 0),
    };
    // The unicast and flood queues merged in batch order.
    while let Some(pi) = b.sc.next_merged(&mut u, &mut f) {
        // Not a member of the packet's VLAN: a flood that was never this port's copy.
        let edit = match (VLAN, KIND, fixed) {
            (false, ..) => Edit::Keep,
            (true, PUSH, _) => Edit::Push {
                tpid: push.0,
                tci: push.1,
            },
            (true, POP, _) => Edit::Pop,
            (true, _, Some(e)) => e,
            (true, _, None) => match b.edit(pi, mode) {
                Some(e) => e,
                None => continue,
            },
        };
        copies += 1;
        // A tag put in, taken out or given its VID, between ports of one header length,
        // is written while copying (one slot's frames; the rest go the slow way).
        if VLAN && edit != Edit::Keep && (KIND != ANY || dst_hl == b.hdr_len) {
            match retag_packet(b, pi, edit, &mut fill) {
                Some(Ok(n)) => {
                    delivered += 1;
                    bytes += n;
                    continue;
                }
                Some(Err(r)) => {
                    ds.drops[r as usize] += 1;
                    dropped += 1;
                    continue;
                }
                None => {}
            }
        }
        if dst_hl != b.hdr_len || edit != Edit::Keep {
            // The slow path gets a copy: were `fill`'s address to escape into it, the
            // fast path below would keep `fill` in memory instead of in registers.
            let mut slow = fill;
            let p = &b.sc.pkts[pi as usize];
            let r = convert(b, p, dst_hl, edit, out.conv, &mut slow);
            fill = slow;
            match r {
                Ok(c) => {
                    delivered += c.frames;
                    bytes += c.bytes;
                    // Segments that did not fit are drops at this port; the copy itself
                    // is dropped only if none of them did.
                    if let Some(r) = c.lost_why {
                        ds.drops[r as usize] += c.lost;
                    }
                    if c.frames + c.lost > 1 {
                        ds.rx_segmented += 1;
                        ds.rx_segments += c.frames + c.lost;
                    }
                    if c.frames == 0 {
                        dropped += 1;
                    }
                }
                Err(r) => {
                    ds.drops[r as usize] += 1;
                    dropped += 1;
                }
            }
            continue;
        }
        match copy_packet(b, pi, &mut fill) {
            Ok(n) => {
                delivered += 1;
                bytes += n;
            }
            Err(r) => {
                ds.drops[r as usize] += 1;
                dropped += 1;
            }
        }
    }
    if monitor {
        ds.mon_copies += copies;
    } else {
        ds.rx_copies += copies;
    }
    st.copies_dropped += dropped;
    if let Some(mut l) = lease.take() {
        let used = l.len() - fill.space;
        l.set_filled(used);
        if used > 0 {
            ds.rx_packets += delivered;
            ds.rx_bytes += bytes;
        }
        if l.complete() && rk.view.csb().sw_kick_needed() {
            out.notify.push(Notify {
                port: id,
                dir: RingDir::Rx,
                ring: rr,
            });
        }
    }
    counters.add(&ds);
}

/// The RX slots the copies of `uq` (merged with the flood queue) take, for a switch of
/// several threads: each packet's fragments, none for a port outside its VLAN. A copy
/// that is converted (headers, tags) is counted as its fragments: if it takes more, the
/// rest is dropped as `ring_full`; if fewer, the lease pads what it leaves unused.
#[inline(never)]
fn slots_needed<const VLAN: bool>(
    b: &Batch<'_>,
    uq: Queue,
    fixed: Option<Edit>,
    mode: Option<&PortVlan>,
) -> u32 {
    let (mut u, mut f) = (uq.head, b.flood.head);
    let mut want = 0u32;
    while let Some(pi) = b.sc.next_merged(&mut u, &mut f) {
        if VLAN && fixed.is_none() && b.edit(pi, mode).is_none() {
            continue;
        }
        want = want.saturating_add(u32::from(b.sc.pkts[pi as usize].nfrags));
    }
    want
}

/// Counts every copy of `t`'s queues (merged with the flood queue) as dropped for `why`.
#[cold]
fn lose_all(b: &Batch<'_>, t: Target<'_>, why: DropReason, st: &mut PortStats) {
    let (mut u, mut f) = (t.uq.head, b.flood.head);
    let mut ds = PortStats::default();
    let mode = t.mode(b);
    while let Some(pi) = b.sc.next_merged(&mut u, &mut f) {
        if b.edit(pi, mode).is_none() {
            continue;
        }
        if t.monitor {
            ds.mon_copies += 1;
        } else {
            ds.rx_copies += 1;
            st.copies_dropped += 1;
        }
        ds.drops[why as usize] += 1;
    }
    t.port.counters.add(&ds);
}
