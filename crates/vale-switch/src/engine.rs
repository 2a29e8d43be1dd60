//! The forwarding engine: VALE's two-pass batch over port regions, sans IO.
//!
//! One call of [`Switch::forward_ring`] takes up to `batch` packets from one TX ring:
//! - pass 0 reads each slot once into private scratch, validates it (buffer index, length,
//!   fragment chain) and copies the header out (the hardware prefetchers follow the
//!   ring's regular stride: software prefetch measured slower here);
//! - pass 1 copies the headers out, asks the [`Lookup`] for the whole batch at once and
//!   threads each packet onto its destination's queue (or the flood queue), in the batch
//!   array itself, without allocating;
//! - pass 2, per destination: refresh the receiver's released slots, copy the packets
//!   (its unicast queue merged with the flood queue in batch order) into free RX slots,
//!   publish the new tail once, and report a notification if the receiver asked for one.
//!
//! A full RX ring drops (counted), never blocks. Nothing read from shared memory is used
//! before it is checked, and a bad ring only ever costs its own port.

use crate::lookup::{Dest, Lookup, PacketInfo};
use crate::offload::{self, VnetHdr};
use crate::stats::{DropReason, PortStats};
use crate::types::{PortId, Timestamp};
use thiserror::Error;
use vale_abi::layout::{MAX_FRAGS, NS_INDIRECT, NS_MOREFRAG, NS_RFRAGS_SHIFT};
use vale_abi::ring::{dist, next};
use vale_abi::{Bufs, Dir, Frag, PortGeometry, Region, RingView, Slots, copy_frame};

/// Largest batch accepted for `bridge_batch`.
pub const MAX_BATCH: usize = 8192;
/// netmap's default `bridge_batch`.
pub const DEFAULT_BATCH: usize = 1024;
/// netmap's port index space per switch.
pub const DEFAULT_MAX_PORTS: u16 = 254;
const ETH_HLEN: u16 = 14;
const NIL: u32 = u32::MAX;

/// Settings of one switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchConfig {
    pub max_ports: u16,
    pub batch: usize,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            max_ports: DEFAULT_MAX_PORTS,
            batch: DEFAULT_BATCH,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("switch is full: it already has {limit} ports (raise the ports-per-switch limit)")]
    SwitchFull { limit: u16 },
    #[error("bridge_batch {0} is out of range; it must be between 1 and {MAX_BATCH}")]
    BadBatch(usize),
    #[error("no port {0}")]
    NoTarget(PortId),
    #[error("virtio-net header length {0} is not 0, 10 or 12")]
    BadHdrLen(u16),
}

/// Where packets for *direct* ports go (see [`Switch::set_direct`]): instead of being
/// copied into the port's RX ring, each packet is handed over as the sender's fragments,
/// to be written out (valed writes them to the host port's interface with `writev`).
pub trait Egress {
    /// Sends one packet out of port `dst`: `hdr`, then the fragments `frags`, views of
    /// the sender's buffers that borrow them for this call only. `hdr` is empty when
    /// sender and destination carry the same virtio-net header (it is then at the start
    /// of `frags`); otherwise it is the destination's header, converted from the
    /// sender's, and `frags` start after the sender's header. Returns false if the
    /// packet could not be sent (counted as `tx_error` on `dst`).
    fn send(&mut self, dst: PortId, hdr: &[u8], frags: &[Frag<'_>]) -> bool;
}

/// No direct ports: every destination gets copies in its RX ring.
pub struct NoEgress;

impl Egress for NoEgress {
    fn send(&mut self, _dst: PortId, _hdr: &[u8], _frags: &[Frag<'_>]) -> bool {
        false
    }
}

/// "Kick this ring's client": it asked to be woken (`appl_need_kick`) and the switch
/// moved its tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Notify {
    pub port: PortId,
    pub dir: RingDir,
    pub ring: u16,
}

/// [`Dir`] with an ordering, for sorting notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RingDir {
    Tx,
    Rx,
}

struct TxKring {
    view: RingView,
    /// Next slot the switch will read; the client owns everything else.
    hwcur: u32,
}

struct RxKring {
    view: RingView,
    /// First slot the client has not yet released.
    hwcur: u32,
    /// Next slot the switch will write.
    hwtail: u32,
}

/// A port attached to a switch: its region, the switch's private ring state, counters.
pub struct Port {
    name: String,
    region: Region,
    tx: Vec<TxKring>,
    rx: Vec<RxKring>,
    stats: PortStats,
    /// Bytes of virtio-net header in front of each packet (0, 10 or 12; netmap's
    /// `virt_hdr_len`).
    hdr_len: u16,
    /// Packets for this port go to the [`Egress`] instead of its RX ring (when the
    /// sender's header length matches; otherwise they are converted into the ring).
    direct: bool,
}

impl Port {
    fn new(name: String, region: Region) -> Port {
        let g = region.geometry();
        let tx = (0..g.tx_rings)
            .filter_map(|i| region.ring(Dir::Tx, i))
            .map(|view| TxKring { view, hwcur: 0 })
            .collect();
        let rx = (0..g.rx_rings)
            .filter_map(|i| region.ring(Dir::Rx, i))
            .map(|view| RxKring {
                view,
                hwcur: 0,
                hwtail: 0,
            })
            .collect();
        Port {
            name,
            region,
            tx,
            rx,
            stats: PortStats::default(),
            hdr_len: 0,
            direct: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn region(&self) -> &Region {
        &self.region
    }
    pub fn geometry(&self) -> PortGeometry {
        self.region.geometry()
    }
    pub fn stats(&self) -> &PortStats {
        &self.stats
    }
    /// Bytes of virtio-net header in front of each packet.
    pub fn hdr_len(&self) -> u16 {
        self.hdr_len
    }
    /// Gives the region back (on detach).
    pub fn into_region(self) -> Region {
        self.region
    }
}

/// A fragment after the first one of a multi-slot packet, as its slot named it.
#[derive(Clone, Copy, Default)]
struct SlotFrag {
    buf_idx: u32,
    len: u16,
}

/// A valid packet of the batch (invalid ones are counted and never stored). The first
/// fragment is kept inline: most packets have only one.
#[derive(Clone, Copy, Default)]
struct Pkt {
    buf_idx: u32,
    len: u16,
    /// Fragments in all, 1..=64.
    nfrags: u16,
    /// Index in `Scratch::frags` of the second fragment, if any.
    more: u32,
    /// Next packet on the same destination queue.
    next: u32,
}

#[derive(Clone, Copy)]
struct Queue {
    head: u32,
    tail: u32,
}

const EMPTY_Q: Queue = Queue {
    head: NIL,
    tail: NIL,
};

/// Per-batch work space, allocated once. `pkts`, `infos` and `dests` are parallel.
struct Scratch {
    pkts: Vec<Pkt>,
    infos: Vec<PacketInfo>,
    dests: Vec<Dest>,
    frags: Vec<SlotFrag>,
    queues: Vec<Queue>,
    flood: Queue,
    dsts: Vec<PortId>,
}

impl Scratch {
    fn new(batch: usize, ports: usize) -> Scratch {
        Scratch {
            pkts: vec![Pkt::default(); batch],
            infos: vec![PacketInfo::default(); batch],
            dests: vec![Dest::Drop; batch],
            frags: Vec::with_capacity(MAX_FRAGS * 4),
            queues: vec![EMPTY_Q; ports],
            flood: EMPTY_Q,
            dsts: Vec::with_capacity(ports),
        }
    }

    /// The next packet of a destination's unicast queue (`u`) merged with the flood
    /// queue (`b`) in batch order, advancing whichever it came from.
    #[inline(always)]
    fn next_merged(&self, u: &mut u32, b: &mut u32) -> Option<u32> {
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
    fn frags_of<'a>(&'a self, p: &Pkt) -> impl Iterator<Item = SlotFrag> + 'a {
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
    fn enqueue(&mut self, q: Option<PortId>, pi: u32) {
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

/// A copy monitor (netmap's `vale0:a/t`, `/r`, `/rt`): its own port, whose RX ring
/// receives a copy of every packet the target sends (`tx`) or is sent (`rx`). A slow
/// reader only loses copies (counted as `ring_full` on the monitor port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Monitor {
    port: PortId,
    /// `None` once the target is gone.
    target: Option<PortId>,
    tx: bool,
    rx: bool,
}

/// One switch: its ports, its lookup and its scratch space.
pub struct Switch<L: Lookup = Box<dyn Lookup>> {
    ports: Vec<Option<Port>>,
    active: Vec<PortId>,
    /// Monitor ports (netmap's `/t`, `/r`): in `ports`, never in `active`.
    monitors: Vec<Monitor>,
    lookup: L,
    cfg: SwitchConfig,
    sc: Scratch,
    conv: Conv,
    rr: usize,
}

/// Work space of the slow path between ports with different header lengths.
#[derive(Default)]
struct Conv {
    pkt: Vec<u8>,
    out: Vec<u8>,
    work: Vec<u8>,
}

impl<L: Lookup> Switch<L> {
    pub fn new(lookup: L, cfg: SwitchConfig) -> Result<Switch<L>, EngineError> {
        if cfg.batch == 0 || cfg.batch > MAX_BATCH {
            return Err(EngineError::BadBatch(cfg.batch));
        }
        let n = cfg.max_ports as usize;
        let sc = Scratch::new(cfg.batch, n);
        Ok(Switch {
            ports: (0..n).map(|_| None).collect(),
            active: Vec::new(),
            monitors: Vec::new(),
            lookup,
            cfg,
            sc,
            conv: Conv::default(),
            rr: 0,
        })
    }

    pub fn config(&self) -> SwitchConfig {
        self.cfg
    }

    /// Changes `bridge_batch` (1..=8192).
    pub fn set_batch(&mut self, batch: usize) -> Result<(), EngineError> {
        if batch == 0 || batch > MAX_BATCH {
            return Err(EngineError::BadBatch(batch));
        }
        self.cfg.batch = batch;
        self.sc = Scratch::new(batch, self.cfg.max_ports as usize);
        Ok(())
    }

    pub fn lookup(&self) -> &L {
        &self.lookup
    }

    pub fn lookup_mut(&mut self) -> &mut L {
        &mut self.lookup
    }

    /// Attaches a port at the lowest free index.
    pub fn attach(
        &mut self,
        name: impl Into<String>,
        region: Region,
    ) -> Result<PortId, EngineError> {
        let Some(i) = self.ports.iter().position(Option::is_none) else {
            return Err(EngineError::SwitchFull {
                limit: self.cfg.max_ports,
            });
        };
        let id = PortId(i as u16);
        self.ports[i] = Some(Port::new(name.into(), region));
        self.active.push(id);
        Ok(id)
    }

    /// Attaches a monitor of port `target`: a port whose RX ring gets a copy of what
    /// `target` sends (`tx`) and/or receives (`rx`). It takes a port index but is never
    /// a destination of forwarding, and its TX rings are not read.
    pub fn attach_monitor(
        &mut self,
        name: impl Into<String>,
        region: Region,
        target: PortId,
        tx: bool,
        rx: bool,
    ) -> Result<PortId, EngineError> {
        if !self.active.contains(&target) {
            return Err(EngineError::NoTarget(target));
        }
        let Some(i) = self.ports.iter().position(Option::is_none) else {
            return Err(EngineError::SwitchFull {
                limit: self.cfg.max_ports,
            });
        };
        let id = PortId(i as u16);
        self.ports[i] = Some(Port::new(name.into(), region));
        self.monitors.push(Monitor {
            port: id,
            target: Some(target),
            tx,
            rx,
        });
        Ok(id)
    }

    /// Sets how many bytes of virtio-net header port `id`'s packets carry (0, 10 or 12,
    /// netmap's `NETMAP_REQ_PORT_HDR_SET`). Packets between ports that disagree are
    /// converted: headers resized, or offloads finished in software (see `offload`).
    pub fn set_hdr_len(&mut self, id: PortId, len: u16) -> Result<(), EngineError> {
        if !crate::offload::HDR_LENS.contains(&len) {
            return Err(EngineError::BadHdrLen(len));
        }
        match self.ports.get_mut(id.0 as usize) {
            Some(Some(p)) => {
                p.hdr_len = len;
                Ok(())
            }
            _ => Err(EngineError::NoTarget(id)),
        }
    }

    /// Makes port `id` direct: its packets are handed to the [`Egress`] given to
    /// [`Switch::forward_with`] straight from the senders' buffers, one copy fewer
    /// than through its RX ring (valed's host ports).
    pub fn set_direct(&mut self, id: PortId, direct: bool) -> Result<(), EngineError> {
        match self.ports.get_mut(id.0 as usize) {
            Some(Some(p)) => {
                p.direct = direct;
                Ok(())
            }
            _ => Err(EngineError::NoTarget(id)),
        }
    }

    /// Monitor ports: (monitor, target if still there).
    pub fn monitors(&self) -> impl Iterator<Item = (PortId, Option<PortId>)> + '_ {
        self.monitors.iter().map(|m| (m.port, m.target))
    }

    /// Detaches a port (or a monitor): the lookup forgets it, its monitors see nothing
    /// more, and its region is handed back.
    pub fn detach(&mut self, id: PortId) -> Option<Port> {
        let port = self.ports.get_mut(id.0 as usize)?.take()?;
        self.active.retain(|p| *p != id);
        self.monitors.retain(|m| m.port != id);
        for m in &mut self.monitors {
            if m.target == Some(id) {
                m.target = None;
            }
        }
        self.lookup.port_detached(id);
        Some(port)
    }

    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(id.0 as usize)?.as_ref()
    }

    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.active
            .iter()
            .copied()
            .find(|p| self.port(*p).is_some_and(|x| x.name == name))
    }

    /// Attached ports in attach order.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &Port)> {
        self.active
            .iter()
            .filter_map(|p| self.port(*p).map(|x| (*p, x)))
    }

    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// One forwarding pass: one batch from every TX ring of every port, starting from a
    /// rotating port so no port always goes first. Returns the packets consumed.
    pub fn forward(&mut self, now: Timestamp, notify: &mut Vec<Notify>) -> usize {
        self.forward_with(now, notify, &mut NoEgress)
    }

    /// [`Switch::forward`] with an [`Egress`] for direct ports.
    pub fn forward_with(
        &mut self,
        now: Timestamp,
        notify: &mut Vec<Notify>,
        egress: &mut dyn Egress,
    ) -> usize {
        self.lookup.maintain(now);
        let n = self.active.len();
        if n == 0 {
            return 0;
        }
        self.rr = (self.rr + 1) % n;
        let mut total = 0;
        for k in 0..n {
            let id = self.active[(self.rr + k) % n];
            let rings = self.port(id).map_or(0, |p| p.tx.len());
            for r in 0..rings {
                total += self.forward_ring_with(id, r as u16, now, notify, egress);
            }
        }
        total
    }

    /// Forwards one batch from TX ring `ring` of port `src`. Returns the packets consumed.
    pub fn forward_ring(
        &mut self,
        src: PortId,
        ring: u16,
        now: Timestamp,
        notify: &mut Vec<Notify>,
    ) -> usize {
        self.forward_ring_with(src, ring, now, notify, &mut NoEgress)
    }

    /// [`Switch::forward_ring`] with an [`Egress`] for direct ports.
    pub fn forward_ring_with(
        &mut self,
        src: PortId,
        ring: u16,
        now: Timestamp,
        notify: &mut Vec<Notify>,
        egress: &mut dyn Egress,
    ) -> usize {
        let Switch {
            ports,
            active,
            monitors,
            lookup,
            cfg,
            sc,
            conv,
            ..
        } = self;
        let Some(Some(port)) = ports.get_mut(src.0 as usize) else {
            return 0;
        };
        let Some(kr) = port.tx.get_mut(ring as usize) else {
            return 0;
        };

        // Where has the client got to? Read once, validate against private state.
        let n = kr.view.num_slots();
        let hwcur = kr.hwcur;
        let prev = |i: u32| if i == 0 { n - 1 } else { i - 1 };
        let (head, cur) = kr.view.csb().sw_read_acquire();
        if head >= n || cur >= n || dist(hwcur, cur, n) < dist(hwcur, head, n) {
            port.stats.ring_resets += 1;
            kr.view.reinit(hwcur, prev(hwcur));
            return 0;
        }
        let mut pending = dist(hwcur, head, n);
        if pending == 0 {
            return 0;
        }
        let src_hl = port.hdr_len;

        // Pass 0: read every slot once, validate it, copy the header out. Invalid
        // packets are counted here and go no further.
        let pool = kr.view.bufs().clone();
        let bufs = pool.access();
        let slots = kr.view.slots();
        let buf_size = bufs.buf_size();
        let mut st = PortStats::default();
        let mut np = 0usize;
        let mut j = hwcur;
        let start = hwcur;
        sc.frags.clear();
        while pending > 0 && np < cfg.batch {
            let s = slots.read(j);
            j = next(j, n);
            pending -= 1;
            // `header` validates the buffer index; INDIRECT is checked below.
            let hdr = if src_hl == 0 {
                bufs.header(s.buf_idx)
            } else {
                bufs.header_at(s.buf_idx, src_hl)
            };
            let mut verdict = if s.flags & NS_INDIRECT != 0 || hdr.is_none() {
                Some(DropReason::BadBuf)
            } else if s.len as u32 > buf_size {
                Some(DropReason::BadLen)
            } else if s.len < ETH_HLEN + src_hl {
                Some(DropReason::Runt)
            } else {
                None
            };
            let mut nfrags = 1u32;
            let mut len = s.len as u32;
            let more = sc.frags.len() as u32;
            if s.flags & NS_MOREFRAG != 0 {
                (nfrags, len, verdict) = gather_chain(
                    slots,
                    bufs,
                    &mut j,
                    &mut pending,
                    &mut sc.frags,
                    len,
                    verdict,
                );
            }
            let hdr = match (verdict, hdr) {
                (None, Some(h)) => h,
                (v, _) => {
                    let r = v.unwrap_or(DropReason::BadBuf);
                    st.drops[r as usize] += 1;
                    sc.frags.truncate(more as usize);
                    continue;
                }
            };
            sc.infos[np] = PacketInfo::from_header(hdr, src, ring, len, s.flags);
            sc.pkts[np] = Pkt {
                buf_idx: s.buf_idx,
                len: s.len,
                nfrags: nfrags as u16,
                more,
                next: NIL,
            };
            np += 1;
        }
        let taken = dist(start, j, n) as u64;

        // Pass 1: one lookup call for the batch, then thread each packet onto its
        // destination's queue (or the flood queue).
        lookup.lookup_batch(&sc.infos[..np], &mut sc.dests[..np], now);
        let others = active.len().saturating_sub(1);
        sc.dsts.clear();
        sc.flood = EMPTY_Q;
        for pi in 0..np {
            let q = match sc.dests[pi] {
                // A port with a non-empty queue was checked when its queue started.
                Dest::Port(q)
                    if q != src
                        && (sc.queues.get(q.0 as usize).is_some_and(|x| x.head != NIL)
                            || ports.get(q.0 as usize).is_some_and(Option::is_some)) =>
                {
                    Some(q)
                }
                Dest::Flood if others > 0 => None,
                _ => {
                    st.drops[DropReason::NoDest as usize] += 1;
                    continue;
                }
            };
            st.forwarded += 1;
            st.tx_bytes += sc.infos[pi].len as u64;
            sc.enqueue(q, pi as u32);
        }
        st.tx_packets = st.forwarded + st.sender_drops();

        // TX monitors of the sender: a copy of every valid packet of the batch.
        if !monitors.is_empty() {
            for m in monitors.iter().filter(|m| m.tx && m.target == Some(src)) {
                if let Some(Some(mport)) = ports.get_mut(m.port.0 as usize) {
                    deliver_seq(sc, conv, src_hl, bufs, ring, np, m.port, mport, notify);
                }
            }
        }

        // Pass 2: per destination, its unicast queue merged with the flood queue.
        let flood = sc.flood;
        let n_uni = sc.dsts.len();
        let n_targets = if flood.head == NIL {
            n_uni
        } else {
            n_uni + active.len()
        };
        for t in 0..n_targets {
            let (dst, uq) = if t < n_uni {
                let d = sc.dsts[t];
                (d, sc.queues[d.0 as usize])
            } else {
                let a = active[t - n_uni];
                if a == src || sc.queues[a.0 as usize].head != NIL {
                    continue; // the sender, or already served with its unicast queue
                }
                (a, EMPTY_Q)
            };
            let Some(Some(dport)) = ports.get_mut(dst.0 as usize) else {
                continue;
            };
            deliver(
                sc, conv, egress, src_hl, bufs, ring, uq, flood, dst, dport, &mut st, notify,
            );
            // RX monitors of the destination: the same packets, in the same order.
            if !monitors.is_empty() {
                for m in monitors.iter().filter(|m| m.rx && m.target == Some(dst)) {
                    if let Some(Some(mport)) = ports.get_mut(m.port.0 as usize) {
                        // Copies to a monitor are not the sender's copies.
                        let mut ignore = PortStats::default();
                        deliver(
                            sc,
                            conv,
                            &mut NoEgress,
                            src_hl,
                            bufs,
                            ring,
                            uq,
                            flood,
                            m.port,
                            mport,
                            &mut ignore,
                            notify,
                        );
                    }
                }
            }
        }
        for d in &sc.dsts {
            sc.queues[d.0 as usize] = EMPTY_Q;
        }

        // The TX slots are free again: publish and maybe wake the sender.
        if let Some(Some(port)) = ports.get_mut(src.0 as usize) {
            let s = &mut port.stats;
            s.tx_packets += st.tx_packets;
            s.tx_bytes += st.tx_bytes;
            s.forwarded += st.forwarded;
            s.copies += st.copies;
            s.copies_dropped += st.copies_dropped;
            for (a, b) in s.drops.iter_mut().zip(st.drops) {
                *a += b;
            }
            if let Some(kr) = port.tx.get_mut(ring as usize) {
                kr.hwcur = j;
                let csb = kr.view.csb();
                csb.sw_publish_release(j, prev(j));
                if csb.sw_kick_needed() {
                    notify.push(Notify {
                        port: src,
                        dir: RingDir::Tx,
                        ring,
                    });
                }
            }
        }
        taken as usize
    }

    /// Before sleeping: asks every client to kick on new TX work. Returns true if work
    /// arrived meanwhile (then the caller should [`Self::disarm_kicks`] and go on).
    pub fn arm_kicks(&self) -> bool {
        let mut pending = false;
        for (_, p) in self.ports() {
            for kr in &p.tx {
                let csb = kr.view.csb();
                csb.sw_arm_kick();
                let (head, _) = csb.sw_read_acquire();
                pending |= head != kr.hwcur;
            }
        }
        pending
    }

    /// Busy again: clients need not kick.
    pub fn disarm_kicks(&self) {
        for (_, p) in self.ports() {
            for kr in &p.tx {
                kr.view.csb().sw_disarm_kick();
            }
        }
    }
}

/// The rest of an `NS_MOREFRAG` chain after its first slot: taken whole, whatever
/// happens to it. Returns the fragment count, the total length and the verdict.
#[inline(never)]
fn gather_chain(
    slots: Slots<'_>,
    bufs: Bufs<'_>,
    j: &mut u32,
    pending: &mut u32,
    frags: &mut Vec<SlotFrag>,
    mut len: u32,
    mut verdict: Option<DropReason>,
) -> (u32, u32, Option<DropReason>) {
    let n = slots.len();
    let mut nfrags = 1u32;
    loop {
        if *pending == 0 {
            return (nfrags, len, Some(DropReason::BadFrag)); // unfinished at head
        }
        let f = slots.read(*j);
        *j = next(*j, n);
        *pending -= 1;
        nfrags += 1;
        if verdict.is_none() {
            verdict = if nfrags as usize > MAX_FRAGS {
                Some(DropReason::BadFrag)
            } else if f.flags & NS_INDIRECT != 0 || !bufs.is_valid(f.buf_idx) {
                Some(DropReason::BadBuf)
            } else if f.len as u32 > bufs.buf_size() {
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

/// Copies one packet into the destination slots starting at `t`; returns the slot after
/// it, or why it could not be delivered.
#[inline(always)]
fn copy_packet(
    sc: &Scratch,
    p: &Pkt,
    sbufs: Bufs<'_>,
    dslots: Slots<'_>,
    dbufs: Bufs<'_>,
    t: u32,
) -> Result<u32, DropReason> {
    let n = dslots.len();
    let cnt = p.nfrags << NS_RFRAGS_SHIFT;
    if p.nfrags == 1 {
        if p.len as u32 > dbufs.buf_size() {
            return Err(DropReason::Oversize);
        }
        if !copy_frame(sbufs, p.buf_idx, dbufs, dslots.buf_idx(t), p.len as usize) {
            return Err(DropReason::BadRxBuf);
        }
        dslots.write_len_flags(t, p.len, cnt);
        return Ok(next(t, n));
    }
    let mut k = t;
    for (x, f) in sc.frags_of(p).enumerate() {
        if f.len as u32 > dbufs.buf_size() {
            return Err(DropReason::Oversize);
        }
        if !copy_frame(sbufs, f.buf_idx, dbufs, dslots.buf_idx(k), f.len as usize) {
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
    Ok(k)
}

/// A copy of the batch's first `np` valid packets, in order, to a monitor port.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn deliver_seq(
    sc: &mut Scratch,
    conv: &mut Conv,
    src_hl: u16,
    sbufs: Bufs<'_>,
    src_ring: u16,
    np: usize,
    dst: PortId,
    dport: &mut Port,
    notify: &mut Vec<Notify>,
) {
    // Thread the batch onto one temporary queue: pass 1's links are restored after.
    let saved: Vec<u32> = sc.pkts[..np].iter().map(|p| p.next).collect();
    for i in 0..np {
        sc.pkts[i].next = if i + 1 < np { (i + 1) as u32 } else { NIL };
    }
    let all = if np == 0 {
        EMPTY_Q
    } else {
        Queue {
            head: 0,
            tail: (np - 1) as u32,
        }
    };
    let mut ignore = PortStats::default();
    deliver(
        sc,
        conv,
        &mut NoEgress,
        src_hl,
        sbufs,
        src_ring,
        all,
        EMPTY_Q,
        dst,
        dport,
        &mut ignore,
        notify,
    );
    for (p, n) in sc.pkts[..np].iter_mut().zip(saved) {
        p.next = n;
    }
}

/// Pass 2 for a direct destination: each packet handed to the egress as the sender's
/// fragments, in batch order.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn deliver_direct(
    sc: &Scratch,
    egress: &mut dyn Egress,
    sbufs: Bufs<'_>,
    src_hl: u16,
    uq: Queue,
    flood: Queue,
    dst: PortId,
    dport: &mut Port,
    st: &mut PortStats,
) {
    let (mut u, mut b) = (uq.head, flood.head);
    let dst_hl = dport.hdr_len;
    let ds = &mut dport.stats;
    let mut frags = [Frag::default(); MAX_FRAGS];
    let mut hdr: [u8; 16];
    while let Some(pi) = sc.next_merged(&mut u, &mut b) {
        let p = &sc.pkts[pi as usize];
        st.copies += 1;
        let mut k = 0;
        let mut total = 0u64;
        for f in sc.frags_of(p) {
            // Validated in pass 0; `frag` checks the index and length again.
            let view = sbufs.frag(f.buf_idx, 0, f.len as usize);
            if let (Some(view), Some(slot)) = (view, frags.get_mut(k)) {
                *slot = view;
                k += 1;
                total += f.len as u64;
            }
        }
        let mut ok = k == p.nfrags as usize;
        let mut h: &[u8] = &[];
        if ok && dst_hl != src_hl {
            // The destination's header: the sender's first 10 bytes (or none: zeros),
            // `num_buffers` 1 in a 12-byte one; the frame follows the sender's header,
            // which lies in its first fragment (refused otherwise).
            let sh = src_hl as usize;
            hdr = [0u8; 16];
            if sh > 0 {
                match sc
                    .frags_of(p)
                    .next()
                    .and_then(|f| sbufs.header_at(f.buf_idx, 0))
                {
                    Some([a, b2]) if frags[0].len() >= sh => {
                        hdr[..8].copy_from_slice(&a.to_le_bytes());
                        hdr[8..].copy_from_slice(&b2.to_le_bytes());
                        hdr[10..].fill(0);
                    }
                    _ => ok = false,
                }
            }
            if dst_hl >= 12 {
                hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
            }
            match frags[0].skip(sh) {
                Some(f) => frags[0] = f,
                None => ok = false,
            }
            total = total - sh as u64 + dst_hl as u64;
            h = &hdr[..dst_hl as usize];
        }
        if ok && egress.send(dst, h, &frags[..k]) {
            ds.rx_packets += 1;
            ds.rx_bytes += total;
        } else {
            ds.drops[DropReason::TxError as usize] += 1;
            st.copies_dropped += 1;
        }
    }
}

/// What `convert` wrote: frames, bytes, and segments that did not fit (why, how many).
type Converted = (u64, u64, Option<(DropReason, u64)>);

/// The slow path between ports whose virtio-net header lengths differ: gathers the
/// packet, then resizes its header (both have one) or finishes its offloads in software
/// (only the source has one: TCP segmentation, checksums) or prepends an empty header
/// (only the destination has one). Returns the frames and bytes written, and the
/// segments that did not fit (with why), when some did.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn convert(
    sc: &Scratch,
    conv: &mut Conv,
    p: &Pkt,
    src_hl: u16,
    dst_hl: u16,
    sbufs: Bufs<'_>,
    dslots: Slots<'_>,
    dbufs: Bufs<'_>,
    t: &mut u32,
    space: &mut u32,
) -> Result<Converted, DropReason> {
    let Conv { pkt, out, work } = conv;
    pkt.clear();
    for f in sc.frags_of(p) {
        let start = pkt.len();
        pkt.resize(start + f.len as usize, 0);
        if !sbufs.read(f.buf_idx, &mut pkt[start..]) {
            return Err(DropReason::BadBuf);
        }
    }
    let hl = (src_hl as usize).min(pkt.len());
    let (h, frame) = pkt.split_at(hl);
    let vh = VnetHdr::parse(h);
    if dst_hl > 0 {
        out.clear();
        vh.write(out, dst_hl);
        out.extend_from_slice(frame);
        put_bytes(out, dslots, dbufs, t, space)?;
        return Ok((1, out.len() as u64, None));
    }
    let (mut frames, mut nbytes, mut err, mut lost) = (0u64, 0u64, None, 0u64);
    offload::resolve(&vh, frame, work, |f| {
        match put_bytes(f, dslots, dbufs, t, space) {
            Ok(()) => {
                frames += 1;
                nbytes += f.len() as u64;
            }
            Err(r) => {
                err = Some(r);
                lost += 1;
            }
        }
    })
    .map_err(|_| DropReason::BadOffload)?;
    match err {
        Some(r) if frames == 0 => Err(r),
        Some(r) => Ok((frames, nbytes, Some((r, lost)))),
        None => Ok((frames, nbytes, None)),
    }
}

/// Writes one packet's bytes into the destination slots at `t` (several slots with
/// `NS_MOREFRAG` if it is larger than a buffer), advancing `t` and `space`.
fn put_bytes(
    bytes: &[u8],
    dslots: Slots<'_>,
    dbufs: Bufs<'_>,
    t: &mut u32,
    space: &mut u32,
) -> Result<(), DropReason> {
    let bs = dbufs.buf_size() as usize;
    let nfr = bytes.len().div_ceil(bs).max(1);
    if nfr > MAX_FRAGS {
        return Err(DropReason::Oversize);
    }
    if nfr as u32 > *space {
        return Err(DropReason::RingFull);
    }
    let n = dslots.len();
    let cnt = (nfr as u16) << NS_RFRAGS_SHIFT;
    let mut k = *t;
    for (x, chunk) in bytes.chunks(bs).enumerate() {
        if !dbufs.write(dslots.buf_idx(k), chunk) {
            return Err(DropReason::BadRxBuf);
        }
        let more = if x + 1 < nfr { NS_MOREFRAG } else { 0 };
        dslots.write_len_flags(k, chunk.len() as u16, cnt | more);
        k = next(k, n);
    }
    *t = k;
    *space -= nfr as u32;
    Ok(())
}

/// Pass 2 for one destination.
#[allow(clippy::too_many_arguments)]
#[inline]
fn deliver(
    sc: &Scratch,
    conv: &mut Conv,
    egress: &mut dyn Egress,
    src_hl: u16,
    sbufs: Bufs<'_>,
    src_ring: u16,
    uq: Queue,
    flood: Queue,
    dst: PortId,
    dport: &mut Port,
    st: &mut PortStats,
    notify: &mut Vec<Notify>,
) {
    let nrx = dport.rx.len();
    if nrx == 0 {
        return;
    }
    let dst_hl = dport.hdr_len;
    // Direct ports take any sender: with the same header as it is, otherwise with the
    // header converted (they all carry one and accept offloads).
    if dport.direct && (dst_hl == src_hl || dst_hl >= 10) {
        deliver_direct(sc, egress, sbufs, src_hl, uq, flood, dst, dport, st);
        return;
    }
    let rr = (src_ring as usize % nrx) as u16;
    let rk = &mut dport.rx[rr as usize];
    let ds = &mut dport.stats;
    let n = rk.view.num_slots();

    // What has the client released? It may only hand back what it was given.
    let csb = rk.view.csb();
    let (head, _) = csb.sw_read_acquire();
    if head >= n || dist(rk.hwcur, head, n) > dist(rk.hwcur, rk.hwtail, n) {
        ds.ring_resets += 1;
        rk.view.reinit(rk.hwcur, rk.hwtail);
    } else {
        rk.hwcur = head;
    }
    let mut space = n - 1 - dist(rk.hwcur, rk.hwtail, n);
    let dslots = rk.view.slots();
    let dbufs = rk.view.bufs().access();
    let mut t = rk.hwtail;
    let (mut u, mut b) = (uq.head, flood.head);
    let (mut copies, mut dropped, mut delivered, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    // The unicast and flood queues merged in batch order.
    while let Some(pi) = sc.next_merged(&mut u, &mut b) {
        let p = &sc.pkts[pi as usize];
        copies += 1;
        if dst_hl != src_hl {
            match convert(
                sc, conv, p, src_hl, dst_hl, sbufs, dslots, dbufs, &mut t, &mut space,
            ) {
                Ok((frames, nbytes, lost)) => {
                    delivered += frames;
                    bytes += nbytes;
                    // Segments of one packet that did not all fit: the lost ones are
                    // drops at this port (the copy itself was delivered).
                    if let Some((r, k)) = lost {
                        ds.drops[r as usize] += k;
                    }
                }
                Err(r) => {
                    ds.drops[r as usize] += 1;
                    dropped += 1;
                }
            }
            continue;
        }
        if p.nfrags as u32 > space {
            ds.drops[DropReason::RingFull as usize] += 1;
            dropped += 1;
            continue;
        }
        match copy_packet(sc, p, sbufs, dslots, dbufs, t) {
            Ok(k) => {
                t = k;
                space -= p.nfrags as u32;
                delivered += 1;
                bytes += if p.nfrags == 1 {
                    p.len as u64
                } else {
                    sc.infos[pi as usize].len as u64
                };
            }
            Err(r) => {
                ds.drops[r as usize] += 1;
                dropped += 1;
            }
        }
    }
    st.copies += copies;
    st.copies_dropped += dropped;
    if t != rk.hwtail {
        rk.hwtail = t;
        ds.rx_packets += delivered;
        ds.rx_bytes += bytes;
        csb.sw_publish_release(rk.hwcur, t);
        if csb.sw_kick_needed() {
            notify.push(Notify {
                port: dst,
                dir: RingDir::Rx,
                ring: rr,
            });
        }
    }
}
