//! Passes 0 and 1 of a batch: read, validate and gather the TX slots once, then thread
//! each packet onto its destination's queue; and the scratch space they work in.

use super::{ETH_HLEN, NIL, PortTable};
use crate::lookup::{Dest, PacketInfo};
use crate::stats::{DropReason, PortStats};
use crate::types::PortId;
use crate::vlan::{Members, PortVlan, TPID_8021AD, TPID_8021Q, VlanIn};
use vale_abi::layout::{MAX_FRAGS, NS_INDIRECT, NS_MOREFRAG, NetmapSlot};
use vale_abi::ring::next;
use vale_abi::{Bufs, Slots};

/// A frame's VLAN and how it came in, or why its port does not admit it.
type Verdict = Result<(u16, VlanIn), DropReason>;

/// A fragment after the first one of a multi-slot packet, as its slot named it.
#[derive(Clone, Copy, Default)]
pub(super) struct SlotFrag {
    pub(super) buf_idx: u32,
    pub(super) len: u16,
}

/// A valid packet of the batch (invalid ones are counted and never stored). The first
/// fragment is kept inline: most packets have only one.
#[derive(Clone, Copy, Default)]
pub(super) struct Pkt {
    pub(super) buf_idx: u32,
    pub(super) len: u16,
    /// Fragments in all, 1..=64.
    pub(super) nfrags: u16,
    /// Index in `Scratch::frags` of the second fragment, if any.
    pub(super) more: u32,
    /// Next packet on the same destination queue.
    pub(super) next: u32,
}

#[derive(Clone, Copy)]
pub(super) struct Queue {
    pub(super) head: u32,
    pub(super) tail: u32,
}

pub(super) const EMPTY_Q: Queue = Queue {
    head: NIL,
    tail: NIL,
};

/// Per-batch work space, allocated once. `pkts`, `infos`, `vtags` and `dests` are
/// parallel.
pub(super) struct Scratch {
    pub(super) pkts: Vec<Pkt>,
    pub(super) infos: Vec<PacketInfo>,
    /// With VLAN filtering: how each packet came in and its outer TCI, for the egress
    /// tagging (written only then, and only for a batch without one `shape`).
    pub(super) vtags: Vec<(VlanIn, u16)>,
    /// With VLAN filtering: the (VID, how, TCI) every packet of the batch shares, if
    /// they all do.
    pub(super) shape: Option<(u16, VlanIn, u16)>,
    pub(super) dests: Vec<Dest>,
    /// With VLAN filtering: each packet's bytes 12..16 as loaded (EtherType and TCI),
    /// which pass 0 classifies after its loop.
    pub(super) raw: Vec<u32>,
    pub(super) frags: Vec<SlotFrag>,
    pub(super) queues: Vec<Queue>,
    pub(super) flood: Queue,
    pub(super) dsts: Vec<PortId>,
    /// Pass 1's queue links while the TX monitors' copy threads the batch in order.
    pub(super) saved: Vec<u32>,
}

/// The TX ring a batch is read from, as pass 0 reads it: each slot once.
#[derive(Clone, Copy)]
pub(super) struct Reader<'a> {
    pub(super) slots: Slots<'a>,
    pub(super) bufs: Bufs<'a>,
    /// Next slot to read.
    pub(super) at: u32,
    /// Slots published and not yet read.
    pub(super) pending: u32,
}

impl Reader<'_> {
    #[inline(always)]
    pub(super) fn next(&mut self) -> Option<NetmapSlot> {
        if self.pending == 0 {
            return None;
        }
        let s = self.slots.read(self.at);
        self.at = next(self.at, self.slots.len());
        self.pending -= 1;
        Some(s)
    }
}

/// Who sends a batch, and how much of it one pass takes.
pub(super) struct Sender<'a> {
    pub(super) id: PortId,
    pub(super) ring: u16,
    pub(super) hdr_len: u16,
    /// `bridge_batch`.
    pub(super) limit: usize,
    /// Its VLAN mode, if the switch filters VLANs.
    pub(super) vlan: Option<&'a PortVlan>,
}

impl Scratch {
    pub(super) fn new() -> Scratch {
        Scratch {
            pkts: Vec::new(),
            infos: Vec::new(),
            vtags: Vec::new(),
            shape: None,
            dests: Vec::new(),
            raw: Vec::new(),
            frags: Vec::with_capacity(MAX_FRAGS * 4),
            queues: Vec::new(),
            flood: EMPTY_Q,
            dsts: Vec::new(),
            saved: Vec::new(),
        }
    }

    /// Makes room for a switch's batch and port count. It only ever grows: a forwarder
    /// that has seen its switches allocates nothing more.
    #[inline(always)]
    pub(super) fn fit(&mut self, batch: usize, ports: usize) {
        if self.pkts.len() < batch || self.queues.len() < ports {
            self.grow(batch, ports);
        }
    }

    #[cold]
    pub(super) fn grow(&mut self, batch: usize, ports: usize) {
        if self.pkts.len() < batch {
            self.pkts.resize(batch, Pkt::default());
            self.infos.resize(batch, PacketInfo::default());
            self.vtags.resize(batch, (VlanIn::Untagged, 0));
            self.dests.resize(batch, Dest::Drop);
            self.raw.resize(batch, 0);
            self.saved.reserve(batch);
        }
        if self.queues.len() < ports {
            // Every queue is empty between batches, so new ones are too.
            self.queues.resize(ports, EMPTY_Q);
            self.dsts.reserve(ports);
        }
    }

    /// Pass 0: reads up to `snd.limit` packets, each slot once, validates them and copies
    /// their headers out (with VLAN filtering, each one's VLAN from the sender's mode).
    /// Invalid packets, and those the sender's VLAN mode does not admit, are counted in
    /// `st` and go no further. Returns how many packets were kept.
    #[inline(always)]
    pub(super) fn gather<const VLAN: bool>(
        &mut self,
        rd: &mut Reader<'_>,
        snd: &Sender<'_>,
        st: &mut PortStats,
    ) -> usize {
        let buf_size = rd.bufs.buf_size();
        let mut np = 0usize;
        // The arrays as slices of the batch's size (`fit` made them at least that):
        // their bounds are then values the loop keeps, not fields it reloads after
        // every store, and the stores below need no checks.
        let Scratch {
            pkts,
            infos,
            raw,
            frags,
            ..
        } = self;
        let limit = snd.limit.min(pkts.len()).min(infos.len()).min(raw.len());
        let (pkts, infos, raw) = (&mut pkts[..limit], &mut infos[..limit], &mut raw[..limit]);
        frags.clear();
        while np < limit {
            let Some(s) = rd.next() else {
                break;
            };
            // Counted here, before any verdict, so that the sender's law can fail.
            st.tx_packets += 1;
            // `header` validates the buffer index; INDIRECT is checked below.
            let hdr = if snd.hdr_len == 0 {
                rd.bufs.header(s.buf_idx)
            } else {
                rd.bufs.header_at(s.buf_idx, snd.hdr_len)
            };
            let mut verdict = if s.flags & NS_INDIRECT != 0 || hdr.is_none() {
                Some(DropReason::BadBuf)
            } else if s.len as u32 > buf_size {
                Some(DropReason::BadLen)
            } else if s.len < ETH_HLEN + snd.hdr_len {
                Some(DropReason::Runt)
            } else {
                None
            };
            let mut nfrags = 1u32;
            let mut len = s.len as u32;
            let more = frags.len() as u32;
            if s.flags & NS_MOREFRAG != 0 {
                // On a copy: were `rd`'s address to escape into the chain's (cold)
                // call, the loop would keep it in memory instead of in registers.
                let mut chain = *rd;
                (nfrags, len, verdict) = gather_chain(&mut chain, frags, len, verdict);
                *rd = chain;
            }
            let hdr = match (verdict, hdr) {
                (None, Some(h)) => h,
                (v, _) => {
                    let r = v.unwrap_or(DropReason::BadBuf);
                    st.drops[r as usize] += 1;
                    frags.truncate(more as usize);
                    continue;
                }
            };
            if VLAN {
                // Bytes 12..16 of the header already loaded: EtherType and TCI, which
                // the sender's mode classifies once the loop is done (see `classify`).
                raw[np] = (hdr[1] >> 32) as u32;
            }
            infos[np] = PacketInfo::from_header(hdr, snd.id, snd.ring, len, s.flags);
            pkts[np] = Pkt {
                buf_idx: s.buf_idx,
                len: s.len,
                nfrags: nfrags as u16,
                more,
                next: NIL,
            };
            np += 1;
        }
        match (VLAN, snd.vlan) {
            (true, Some(mode)) if np > 0 => self.classify(np, mode, snd.hdr_len, st),
            _ => {
                self.shape = None;
                np
            }
        }
    }

    /// The end of pass 0 with VLAN filtering: each packet's VLAN from the sender's
    /// mode, with the packets that mode does not admit counted in `st` and taken out
    /// of the batch (before the lookup can learn from them). A batch mostly repeats one
    /// header shape (EtherType and TCI, and long enough for a tag if it has one): then
    /// one verdict decides it and `shape` says so; otherwise each packet is classified
    /// (the last verdict kept) and `vtags` gets how each came in. Returns how many
    /// packets are left.
    #[inline(always)]
    fn classify(&mut self, np: usize, mode: &PortVlan, hdr_len: u16, st: &mut PortStats) -> usize {
        let raw = &self.raw[..np];
        let r0 = raw[0];
        // An OR of differences: no early exit, so that it vectorises.
        let same = raw.iter().fold(0, |acc, &r| acc | (r ^ r0)) == 0;
        let ethertype = u16::from_be(r0 as u16);
        let tci = u16::from_be((r0 >> 16) as u16);
        let short = |i: &PacketInfo| i.len < 18 + u32::from(hdr_len);
        // Only a tag needs room for itself: the lengths matter for a tagged shape.
        let tagged = ethertype == TPID_8021Q || ethertype == TPID_8021AD;
        if same && !(tagged && self.infos[..np].iter().any(short)) {
            return match mode.ingress(ethertype, tci, 18) {
                Ok((vid, how)) => {
                    self.shape = Some((vid, how, tci));
                    self.infos[..np].iter_mut().for_each(|i| i.vid = vid);
                    np
                }
                Err(r) => {
                    st.drops[r as usize] += np as u64;
                    self.shape = None;
                    0
                }
            };
        }
        self.classify_mixed(np, mode, hdr_len, st)
    }

    /// [`Self::classify`] for a batch of several header shapes: each packet on its
    /// own, the last verdict kept; the admitted ones are moved down over the dropped.
    #[cold]
    #[inline(never)]
    fn classify_mixed(
        &mut self,
        np: usize,
        mode: &PortVlan,
        hdr_len: u16,
        st: &mut PortStats,
    ) -> usize {
        let mut last: Option<((u32, bool), Verdict)> = None;
        // The first admitted packet's (VID, how, TCI), and whether all others match it.
        let mut first: Option<(u16, VlanIn, u16)> = None;
        let mut uniform = true;
        let mut kept = 0usize;
        for i in 0..np {
            let r = self.raw[i];
            let flen = self.infos[i].len.saturating_sub(u32::from(hdr_len));
            let key = (r, flen < 18);
            let verdict = match last {
                Some((k, v)) if k == key => v,
                _ => {
                    let ethertype = u16::from_be(r as u16);
                    let tci = u16::from_be((r >> 16) as u16);
                    let v = mode.ingress(ethertype, tci, flen);
                    last = Some((key, v));
                    v
                }
            };
            let (vid, how) = match verdict {
                Ok(v) => v,
                Err(reason) => {
                    st.drops[reason as usize] += 1;
                    continue;
                }
            };
            // The TCI matters only for a tag (bytes 14..16 of an untagged frame are
            // its payload's).
            let tci = match how {
                VlanIn::Priority | VlanIn::Tagged => u16::from_be((r >> 16) as u16),
                VlanIn::Untagged | VlanIn::Tunnel => 0,
            };
            match first {
                None => first = Some((vid, how, tci)),
                Some(f) if f != (vid, how, tci) => uniform = false,
                Some(_) => {}
            }
            self.vtags[kept] = (how, tci);
            self.infos[kept] = PacketInfo {
                vid,
                ..self.infos[i]
            };
            self.pkts[kept] = self.pkts[i];
            kept += 1;
        }
        self.shape = first.filter(|_| uniform);
        kept
    }

    /// Pass 1, after the lookup filled `dests`: threads each packet onto its
    /// destination's queue (or the flood queue). Packets with nowhere to go are counted
    /// in `st`, and so are the copies the others make (pass 2 counts them again, on the
    /// destinations, for the switch's law).
    ///
    /// With `vlan`, every packet of the batch is in the one VLAN given (the batch has
    /// one `shape`): a unicast goes only to a member, checked once per destination as
    /// its queue starts, and a flood makes one copy per other member.
    #[inline(always)]
    pub(super) fn route<const VLAN: bool>(
        &mut self,
        np: usize,
        src: PortId,
        ports: &PortTable,
        vlan: Option<(&Members, u16)>,
        st: &mut PortStats,
    ) {
        let me = usize::from(ports.active.contains(&src));
        let (others, vid) = match (VLAN, vlan) {
            // The sender is a member of every VLAN it admits.
            (true, Some((m, vid))) => ((m.of(vid) as usize).saturating_sub(me), vid),
            _ => (ports.active.len() - me, 0),
        };
        self.dsts.clear();
        self.flood = EMPTY_Q;
        for pi in 0..np {
            let q = match self.dests[pi] {
                // A port with a non-empty queue was checked when its queue started.
                Dest::Port(q)
                    if q != src && self.queues.get(q.0 as usize).is_some_and(|x| x.head != NIL) =>
                {
                    Some(q)
                }
                Dest::Port(q) if q != src && !VLAN && ports.is_attached(q) => Some(q),
                Dest::Port(q) if q != src && VLAN => match ports.get(q) {
                    Some(p) if p.vlan.member(vid) => Some(q),
                    Some(_) => {
                        st.drops[DropReason::VlanNotMember as usize] += 1;
                        continue;
                    }
                    None => {
                        st.drops[DropReason::NoDest as usize] += 1;
                        continue;
                    }
                },
                Dest::Flood if others > 0 => None,
                Dest::Flood if VLAN => {
                    st.drops[DropReason::VlanNotMember as usize] += 1;
                    continue;
                }
                _ => {
                    st.drops[DropReason::NoDest as usize] += 1;
                    continue;
                }
            };
            st.forwarded += 1;
            st.copies += if q.is_some() { 1 } else { others as u64 };
            st.tx_bytes += self.infos[pi].len as u64;
            self.enqueue(q, pi as u32);
        }
    }

    /// Pass 1 with VLAN filtering on, for a batch of several VLANs or tag shapes: as
    /// [`Self::route`], but a unicast goes only to a member of the frame's VLAN and a
    /// flood makes one copy per other member of it.
    #[inline(never)]
    pub(super) fn route_vlan(
        &mut self,
        np: usize,
        src: PortId,
        ports: &PortTable,
        members: &Members,
        st: &mut PortStats,
    ) {
        // The sender is a member of every VLAN it admits.
        let me = u16::from(ports.active.contains(&src));
        self.dsts.clear();
        self.flood = EMPTY_Q;
        // The last unicast destination found a member, and of which VLAN.
        let mut member: Option<(PortId, u16)> = None;
        // Counted in locals, added once (`st` is behind a pointer here).
        let (mut forwarded, mut copies, mut bytes) = (0u64, 0u64, 0u64);
        let (mut not_member, mut no_dest) = (0u64, 0u64);
        for pi in 0..np.min(self.infos.len()).min(self.dests.len()) {
            let info = &self.infos[pi];
            let (vid, len) = (info.vid, info.len);
            let (q, n) = match self.dests[pi] {
                Dest::Port(q) if member == Some((q, vid)) => (Some(q), 1),
                Dest::Port(q) if q != src => match ports.get(q) {
                    Some(p) if p.vlan.member(vid) => {
                        member = Some((q, vid));
                        (Some(q), 1)
                    }
                    Some(_) => {
                        not_member += 1;
                        continue;
                    }
                    None => {
                        no_dest += 1;
                        continue;
                    }
                },
                Dest::Flood => match members.of(vid).saturating_sub(me) {
                    0 => {
                        not_member += 1;
                        continue;
                    }
                    n => (None, n as u64),
                },
                _ => {
                    no_dest += 1;
                    continue;
                }
            };
            forwarded += 1;
            copies += n;
            bytes += len as u64;
            self.enqueue(q, pi as u32);
        }
        st.forwarded += forwarded;
        st.copies += copies;
        st.tx_bytes += bytes;
        st.drops[DropReason::VlanNotMember as usize] += not_member;
        st.drops[DropReason::NoDest as usize] += no_dest;
    }

    /// Empties the unicast queues pass 1 filled.
    #[inline(always)]
    pub(super) fn clear_queues(&mut self) {
        for d in &self.dsts {
            self.queues[d.0 as usize] = EMPTY_Q;
        }
    }

    /// Threads the batch's first `np` packets onto one queue in batch order (for the TX
    /// monitors), saving pass 1's links for [`Self::unthread`].
    pub(super) fn thread_all(&mut self, np: usize) -> Queue {
        self.saved.clear();
        self.saved.extend(self.pkts[..np].iter().map(|p| p.next));
        for i in 0..np {
            self.pkts[i].next = if i + 1 < np { (i + 1) as u32 } else { NIL };
        }
        if np == 0 {
            EMPTY_Q
        } else {
            Queue {
                head: 0,
                tail: (np - 1) as u32,
            }
        }
    }

    /// Restores the links [`Self::thread_all`] saved.
    pub(super) fn unthread(&mut self, np: usize) {
        for (p, n) in self.pkts[..np].iter_mut().zip(&self.saved) {
            p.next = *n;
        }
    }

    /// The next packet of a destination's unicast queue (`u`) merged with the flood
    /// queue (`b`) in batch order, advancing whichever it came from.
    #[inline(always)]
    pub(super) fn next_merged(&self, u: &mut u32, b: &mut u32) -> Option<u32> {
        let q = if *u < *b {
            u
        } else if *b != NIL {
            b
        } else {
            return None;
        };
        let x = *q;
        *q = self.pkts[x as usize].next;
        Some(x)
    }

    /// The fragments of packet `p`, the inline first one included, in order.
    #[inline(always)]
    pub(super) fn frags_of<'a>(&'a self, p: &Pkt) -> impl Iterator<Item = SlotFrag> + 'a {
        let rest = self
            .frags
            .get(p.more as usize..p.more as usize + p.nfrags as usize - 1)
            .unwrap_or(&[]);
        std::iter::once(SlotFrag {
            buf_idx: p.buf_idx,
            len: p.len,
        })
        .chain(rest.iter().copied())
    }

    #[inline(always)]
    pub(super) fn enqueue(&mut self, q: Option<PortId>, pi: u32) {
        let queue = match q {
            Some(p) => &mut self.queues[p.0 as usize],
            None => &mut self.flood,
        };
        if queue.head == NIL {
            queue.head = pi;
            if let Some(p) = q {
                self.dsts.push(p);
            }
        } else {
            self.pkts[queue.tail as usize].next = pi;
        }
        queue.tail = pi;
    }
}

/// The rest of an `NS_MOREFRAG` chain after its first slot: taken whole, whatever
/// happens to it. Returns the fragment count, the total length and the verdict.
#[inline(never)]
pub(super) fn gather_chain(
    rd: &mut Reader<'_>,
    frags: &mut Vec<SlotFrag>,
    mut len: u32,
    mut verdict: Option<DropReason>,
) -> (u32, u32, Option<DropReason>) {
    let mut nfrags = 1u32;
    loop {
        let Some(f) = rd.next() else {
            return (nfrags, len, Some(DropReason::BadFrag)); // unfinished at head
        };
        nfrags += 1;
        if verdict.is_none() {
            verdict = if nfrags as usize > MAX_FRAGS {
                Some(DropReason::BadFrag)
            } else if f.flags & NS_INDIRECT != 0 || !rd.bufs.is_valid(f.buf_idx) {
                Some(DropReason::BadBuf)
            } else if f.len as u32 > rd.bufs.buf_size() {
                Some(DropReason::BadLen)
            } else {
                frags.push(SlotFrag {
                    buf_idx: f.buf_idx,
                    len: f.len,
                });
                len += f.len as u32;
                None
            };
        }
        if f.flags & NS_MOREFRAG == 0 {
            return (nfrags, len, verdict);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_grows_to_the_largest_switch_and_never_shrinks() {
        let mut sc = Scratch::new();
        sc.fit(16, 3);
        assert_eq!((sc.pkts.len(), sc.queues.len()), (16, 3));
        sc.fit(1024, 254);
        let p = sc.pkts.as_ptr();
        sc.fit(16, 3);
        sc.fit(1024, 254);
        sc.fit(512, 300);
        let lens = (
            sc.pkts.len(),
            sc.infos.len(),
            sc.dests.len(),
            sc.queues.len(),
        );
        assert_eq!(lens, (1024, 1024, 1024, 300));
        assert_eq!(sc.pkts.as_ptr(), p, "the batch arrays were not reallocated");
        assert!(sc.queues.iter().all(|q| q.head == NIL && q.tail == NIL));
        assert!(sc.dsts.capacity() >= 300 && sc.saved.capacity() >= 1024);
    }
}
