//! Pass 2: per destination, copy the batch's packets into its RX ring and publish the
//! new tail once; copies to monitors; the structs that describe a batch and a target.

use super::batch::{EMPTY_Q, Queue, Scratch};
use super::convert::{Conv, convert};
use super::direct::{Egress, NoEgress, deliver_direct};
use super::{NIL, Notify, Port, PortTable, RingDir};
use crate::stats::{DropReason, PortStats};
use crate::types::PortId;
use crate::vlan::{Edit, PortVlan};
use std::sync::Arc;
use vale_abi::layout::{MAX_FRAGS, NS_MOREFRAG, NS_RFRAGS_SHIFT};
use vale_abi::ring::next;
use vale_abi::{Bufs, Slots, copy_frame};

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
            Some(m) => {
                let vid = self.sc.infos[pi as usize].vid;
                let (how, tci) = self.sc.vtags[pi as usize];
                m.egress(vid, how, tci)
            }
        }
    }
}

/// One destination of pass 2: its id, its port and its unicast queue.
pub(super) struct Target<'a> {
    pub(super) id: PortId,
    pub(super) port: &'a mut Port,
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
pub(super) fn deliver_all(
    b: &Batch<'_>,
    ports: &mut PortTable,
    out: &mut Out<'_>,
    st: &mut PortStats,
) {
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
        let Some(port) = ports.get_mut(id) else {
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
pub(super) fn copy_to_monitors(
    b: &Batch<'_>,
    ports: &mut PortTable,
    seen: Seen,
    out: &mut Out<'_>,
) {
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
    };
    for m in monitors.iter().filter(|m| m.watches(seen.port, seen.dir)) {
        if let Some(Some(port)) = slots.get_mut(m.port.0 as usize) {
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
    if t.port.direct && (dst_hl == b.hdr_len || dst_hl >= 10) {
        deliver_direct(b, t, out.egress, out.conv, st);
        return;
    }
    // Without VLAN filtering the loop is the one it always was. With it, a batch of
    // one VLAN and tag shape (the usual case) gets one answer for the whole target:
    // nothing (not a member: no copies at all), the plain loop, or one edit for all.
    if !b.vlan {
        return deliver_ring::<false>(b, t, None, out, st);
    }
    match (b.sc.shape, t.mode(b)) {
        (Some((vid, how, tci)), Some(m)) => match m.egress(vid, how, tci) {
            None => {}
            Some(Edit::Keep) => deliver_ring::<false>(b, t, None, out, st),
            Some(e) => deliver_ring::<true>(b, t, Some(e), out, st),
        },
        _ => deliver_ring::<true>(b, t, None, out, st),
    }
}

/// [`deliver`] into the port's RX ring. Without `VLAN` every copy is kept as it is;
/// with it, every copy gets `fixed` if given, else its own edit (or none, for a port
/// not in its VLAN).
#[inline(always)]
fn deliver_ring<const VLAN: bool>(
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
    let rk = &mut rx[rr as usize];
    // The receiver's counts, published once when its copies are done.
    let mut ds = PortStats::default();
    if !rk.refresh() {
        ds.ring_resets += 1;
    }
    let mut fill = Fill {
        slots: rk.view.slots(),
        bufs: rk.view.bufs().access(),
        at: rk.hwtail,
        space: rk.space(),
    };
    let (mut u, mut f) = (uq.head, b.flood.head);
    let (mut copies, mut dropped, mut delivered, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    // The unicast and flood queues merged in batch order.
    while let Some(pi) = b.sc.next_merged(&mut u, &mut f) {
        // Not a member of the packet's VLAN: a flood that was never this port's copy.
        let edit = match (VLAN, fixed) {
            (false, _) => Edit::Keep,
            (true, Some(e)) => e,
            (true, None) => match b.edit(pi, mode) {
                Some(e) => e,
                None => continue,
            },
        };
        copies += 1;
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
    let end = fill.at;
    if end != rk.hwtail {
        ds.rx_packets += delivered;
        ds.rx_bytes += bytes;
        if rk.publish(end) {
            out.notify.push(Notify {
                port: id,
                dir: RingDir::Rx,
                ring: rr,
            });
        }
    }
    counters.add(&ds);
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
