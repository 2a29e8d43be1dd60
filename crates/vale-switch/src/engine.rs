//! The forwarding engine: VALE's two-pass batch over port regions, sans IO.
//!
//! One call of [`Forwarder::forward_ring`] takes up to `batch` packets from one TX ring of
//! a [`Switch`]:
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
use vale_abi::layout::{MAX_FRAGS, NS_INDIRECT, NS_MOREFRAG, NS_RFRAGS_SHIFT, NetmapSlot};
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

impl TxKring {
    /// Slots the client has published past `hwcur`, or `None` if it broke the ring
    /// protocol: the ring is then reset to the switch's view (the caller counts it).
    #[inline(always)]
    fn published(&self) -> Option<u32> {
        // Read once, validate against private state.
        let n = self.view.num_slots();
        let hwcur = self.hwcur;
        let (head, cur) = self.view.csb().sw_read_acquire();
        if head >= n || cur >= n || dist(hwcur, cur, n) < dist(hwcur, head, n) {
            self.view.reinit(hwcur, prev(hwcur, n));
            return None;
        }
        Some(dist(hwcur, head, n))
    }

    /// Gives the slots before `to` back to the client; true if it asked for a kick.
    #[inline(always)]
    fn release(&mut self, to: u32) -> bool {
        self.hwcur = to;
        let csb = self.view.csb();
        csb.sw_publish_release(to, prev(to, self.view.num_slots()));
        csb.sw_kick_needed()
    }
}

struct RxKring {
    view: RingView,
    /// First slot the client has not yet released.
    hwcur: u32,
    /// Next slot the switch will write.
    hwtail: u32,
}

impl RxKring {
    /// Takes back the slots the client released. It may only hand back what it was
    /// given: if it claims more, the ring is reset and this returns false.
    #[inline(always)]
    fn refresh(&mut self) -> bool {
        let n = self.view.num_slots();
        let (head, _) = self.view.csb().sw_read_acquire();
        if head >= n || dist(self.hwcur, head, n) > dist(self.hwcur, self.hwtail, n) {
            self.view.reinit(self.hwcur, self.hwtail);
            return false;
        }
        self.hwcur = head;
        true
    }

    /// Free slots between `hwtail` and the client's `hwcur` (one stays empty).
    #[inline(always)]
    fn space(&self) -> u32 {
        let n = self.view.num_slots();
        n - 1 - dist(self.hwcur, self.hwtail, n)
    }

    /// Publishes the slots before `to` to the client; true if it asked for a kick.
    #[inline(always)]
    fn publish(&mut self, to: u32) -> bool {
        self.hwtail = to;
        let csb = self.view.csb();
        csb.sw_publish_release(self.hwcur, to);
        csb.sw_kick_needed()
    }
}

/// The slot before `i` in a ring of `n`.
#[inline(always)]
fn prev(i: u32, n: u32) -> u32 {
    if i == 0 { n - 1 } else { i - 1 }
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
    /// Pass 1's queue links while the TX monitors' copy threads the batch in order.
    saved: Vec<u32>,
}

/// The TX ring a batch is read from, as pass 0 reads it: each slot once.
struct Reader<'a> {
    slots: Slots<'a>,
    bufs: Bufs<'a>,
    /// Next slot to read.
    at: u32,
    /// Slots published and not yet read.
    pending: u32,
}

impl Reader<'_> {
    #[inline(always)]
    fn next(&mut self) -> Option<NetmapSlot> {
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
struct Sender {
    id: PortId,
    ring: u16,
    hdr_len: u16,
    /// `bridge_batch`.
    limit: usize,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            pkts: Vec::new(),
            infos: Vec::new(),
            dests: Vec::new(),
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
    fn fit(&mut self, batch: usize, ports: usize) {
        if self.pkts.len() < batch || self.queues.len() < ports {
            self.grow(batch, ports);
        }
    }

    #[cold]
    fn grow(&mut self, batch: usize, ports: usize) {
        if self.pkts.len() < batch {
            self.pkts.resize(batch, Pkt::default());
            self.infos.resize(batch, PacketInfo::default());
            self.dests.resize(batch, Dest::Drop);
            self.saved.reserve(batch);
        }
        if self.queues.len() < ports {
            // Every queue is empty between batches, so new ones are too.
            self.queues.resize(ports, EMPTY_Q);
            self.dsts.reserve(ports);
        }
    }

    /// Pass 0: reads up to `snd.limit` packets, each slot once, validates them and copies
    /// their headers out. Invalid packets are counted in `st` and go no further. Returns
    /// how many packets were kept.
    #[inline(always)]
    fn gather(&mut self, rd: &mut Reader<'_>, snd: &Sender, st: &mut PortStats) -> usize {
        let buf_size = rd.bufs.buf_size();
        let mut np = 0usize;
        self.frags.clear();
        while np < snd.limit {
            let Some(s) = rd.next() else {
                break;
            };
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
            let more = self.frags.len() as u32;
            if s.flags & NS_MOREFRAG != 0 {
                (nfrags, len, verdict) = gather_chain(rd, &mut self.frags, len, verdict);
            }
            let hdr = match (verdict, hdr) {
                (None, Some(h)) => h,
                (v, _) => {
                    let r = v.unwrap_or(DropReason::BadBuf);
                    st.drops[r as usize] += 1;
                    self.frags.truncate(more as usize);
                    continue;
                }
            };
            self.infos[np] = PacketInfo::from_header(hdr, snd.id, snd.ring, len, s.flags);
            self.pkts[np] = Pkt {
                buf_idx: s.buf_idx,
                len: s.len,
                nfrags: nfrags as u16,
                more,
                next: NIL,
            };
            np += 1;
        }
        np
    }

    /// Pass 1, after the lookup filled `dests`: threads each packet onto its
    /// destination's queue (or the flood queue). Packets with nowhere to go are counted
    /// in `st`.
    #[inline(always)]
    fn route(&mut self, np: usize, src: PortId, ports: &PortTable, st: &mut PortStats) {
        let others = ports.active.len().saturating_sub(1);
        self.dsts.clear();
        self.flood = EMPTY_Q;
        for pi in 0..np {
            let q = match self.dests[pi] {
                // A port with a non-empty queue was checked when its queue started.
                Dest::Port(q)
                    if q != src
                        && (self.queues.get(q.0 as usize).is_some_and(|x| x.head != NIL)
                            || ports.is_attached(q)) =>
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
            st.tx_bytes += self.infos[pi].len as u64;
            self.enqueue(q, pi as u32);
        }
        st.tx_packets = st.forwarded + st.sender_drops();
    }

    /// Empties the unicast queues pass 1 filled.
    #[inline(always)]
    fn clear_queues(&mut self) {
        for d in &self.dsts {
            self.queues[d.0 as usize] = EMPTY_Q;
        }
    }

    /// Threads the batch's first `np` packets onto one queue in batch order (for the TX
    /// monitors), saving pass 1's links for [`Self::unthread`].
    fn thread_all(&mut self, np: usize) -> Queue {
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
    fn unthread(&mut self, np: usize) {
        for (p, n) in self.pkts[..np].iter_mut().zip(&self.saved) {
            p.next = *n;
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

impl Monitor {
    /// Whether it copies what `port` sends (`Tx`) or is sent (`Rx`).
    #[inline(always)]
    fn watches(&self, port: PortId, dir: RingDir) -> bool {
        self.target == Some(port)
            && match dir {
                RingDir::Tx => self.tx,
                RingDir::Rx => self.rx,
            }
    }
}

/// The ports of a switch by index (monitors included), the forwarding ones in attach
/// order, and the monitors.
#[derive(Default)]
struct PortTable {
    slots: Vec<Option<Port>>,
    active: Vec<PortId>,
    /// Monitor ports (netmap's `/t`, `/r`): in `slots`, never in `active`.
    monitors: Vec<Monitor>,
}

impl PortTable {
    #[inline(always)]
    fn get(&self, id: PortId) -> Option<&Port> {
        self.slots.get(id.0 as usize)?.as_ref()
    }

    #[inline(always)]
    fn get_mut(&mut self, id: PortId) -> Option<&mut Port> {
        self.slots.get_mut(id.0 as usize)?.as_mut()
    }

    #[inline(always)]
    fn is_attached(&self, id: PortId) -> bool {
        self.slots.get(id.0 as usize).is_some_and(Option::is_some)
    }

    /// Puts a new port at the lowest free index.
    fn insert(&mut self, port: Port, limit: u16) -> Result<PortId, EngineError> {
        let Some(i) = self.slots.iter().position(Option::is_none) else {
            return Err(EngineError::SwitchFull { limit });
        };
        self.slots[i] = Some(port);
        Ok(PortId(i as u16))
    }
}

/// One switch: its ports and its lookup. The work space of forwarding is a
/// [`Forwarder`]'s, one per forwarding thread.
pub struct Switch<L: Lookup = Box<dyn Lookup>> {
    ports: PortTable,
    lookup: L,
    cfg: SwitchConfig,
    /// Port the next pass starts from (see [`Forwarder::forward`]).
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
        Ok(Switch {
            ports: PortTable {
                slots: (0..n).map(|_| None).collect(),
                ..PortTable::default()
            },
            lookup,
            cfg,
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
        let id = self
            .ports
            .insert(Port::new(name.into(), region), self.cfg.max_ports)?;
        self.ports.active.push(id);
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
        if !self.ports.active.contains(&target) {
            return Err(EngineError::NoTarget(target));
        }
        let id = self
            .ports
            .insert(Port::new(name.into(), region), self.cfg.max_ports)?;
        self.ports.monitors.push(Monitor {
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
        let p = self.ports.get_mut(id).ok_or(EngineError::NoTarget(id))?;
        p.hdr_len = len;
        Ok(())
    }

    /// Makes port `id` direct: its packets are handed to the [`Egress`] given to
    /// [`Forwarder::forward`] straight from the senders' buffers, one copy fewer than
    /// through its RX ring (valed's host ports).
    pub fn set_direct(&mut self, id: PortId, direct: bool) -> Result<(), EngineError> {
        let p = self.ports.get_mut(id).ok_or(EngineError::NoTarget(id))?;
        p.direct = direct;
        Ok(())
    }

    /// Monitor ports: (monitor, target if still there).
    pub fn monitors(&self) -> impl Iterator<Item = (PortId, Option<PortId>)> + '_ {
        self.ports.monitors.iter().map(|m| (m.port, m.target))
    }

    /// Detaches a port (or a monitor): the lookup forgets it, its monitors see nothing
    /// more, and its region is handed back.
    pub fn detach(&mut self, id: PortId) -> Option<Port> {
        let t = &mut self.ports;
        let port = t.slots.get_mut(id.0 as usize)?.take()?;
        t.active.retain(|p| *p != id);
        t.monitors.retain(|m| m.port != id);
        for m in &mut t.monitors {
            if m.target == Some(id) {
                m.target = None;
            }
        }
        self.lookup.port_detached(id);
        Some(port)
    }

    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(id)
    }

    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        self.ports
            .active
            .iter()
            .copied()
            .find(|p| self.port(*p).is_some_and(|x| x.name == name))
    }

    /// Attached ports in attach order.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &Port)> {
        self.ports
            .active
            .iter()
            .filter_map(|p| self.port(*p).map(|x| (*p, x)))
    }

    pub fn len(&self) -> usize {
        self.ports.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.active.is_empty()
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
    /// ports go to `egress` ([`NoEgress`] if there are none). Returns the packets
    /// consumed.
    pub fn forward<L: Lookup>(
        &mut self,
        sw: &mut Switch<L>,
        now: Timestamp,
        notify: &mut Vec<Notify>,
        egress: &mut dyn Egress,
    ) -> usize {
        sw.lookup.maintain(now);
        let n = sw.ports.active.len();
        if n == 0 {
            return 0;
        }
        sw.rr = (sw.rr + 1) % n;
        let mut total = 0;
        for k in 0..n {
            let id = sw.ports.active[(sw.rr + k) % n];
            let rings = sw.port(id).map_or(0, |p| p.tx.len());
            for r in 0..rings {
                total += self.forward_ring(sw, id, r as u16, now, notify, egress);
            }
        }
        total
    }

    /// Forwards one batch from TX ring `ring` of port `src` of `sw`. Returns the packets
    /// consumed.
    pub fn forward_ring<L: Lookup>(
        &mut self,
        sw: &mut Switch<L>,
        src: PortId,
        ring: u16,
        now: Timestamp,
        notify: &mut Vec<Notify>,
        egress: &mut dyn Egress,
    ) -> usize {
        self.sc.fit(sw.cfg.batch, sw.ports.slots.len());
        let Forwarder { sc, conv } = self;
        let Switch {
            ports, lookup, cfg, ..
        } = sw;
        let Some(port) = ports.get_mut(src) else {
            return 0;
        };
        let hdr_len = port.hdr_len;
        let Some(kr) = port.tx.get_mut(ring as usize) else {
            return 0;
        };
        let pending = match kr.published() {
            Some(0) => return 0,
            Some(p) => p,
            None => {
                port.stats.ring_resets += 1;
                return 0;
            }
        };
        let (start, n) = (kr.hwcur, kr.view.num_slots());
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
        };
        let mut st = PortStats::default();
        let np = sc.gather(&mut rd, &snd, &mut st);
        let end = rd.at;

        // Pass 1: one lookup call for the batch, then the queues.
        lookup.lookup_batch(&sc.infos[..np], &mut sc.dests[..np], now);
        sc.route(np, src, ports, &mut st);

        let mut out = Out {
            conv,
            egress,
            notify,
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
            };
            let seen = Seen {
                port: src,
                dir: RingDir::Tx,
                queue: all,
            };
            copy_to_monitors(&b, ports, seen, &mut out);
            sc.unthread(np);
        }
        let b = Batch {
            sc,
            bufs,
            src,
            hdr_len,
            ring,
            flood: sc.flood,
        };
        deliver_all(&b, ports, &mut out, &mut st);
        sc.clear_queues();

        // The TX slots are free again: publish and maybe wake the sender.
        if let Some(port) = ports.get_mut(src) {
            port.stats.add(&st);
            if port
                .tx
                .get_mut(ring as usize)
                .is_some_and(|kr| kr.release(end))
            {
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

/// The rest of an `NS_MOREFRAG` chain after its first slot: taken whole, whatever
/// happens to it. Returns the fragment count, the total length and the verdict.
#[inline(never)]
fn gather_chain(
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

/// What pass 2 delivers from: the batch's packets (in the scratch), the sender's
/// buffers, header length and ring, and the flood queue.
struct Batch<'a> {
    sc: &'a Scratch,
    bufs: Bufs<'a>,
    src: PortId,
    hdr_len: u16,
    /// The sender's TX ring; it picks the receiver's RX ring.
    ring: u16,
    flood: Queue,
}

/// One destination of pass 2: its id, its port and its unicast queue.
struct Target<'a> {
    id: PortId,
    port: &'a mut Port,
    uq: Queue,
}

/// Where pass 2's side effects go: the conversion work space, the egress of direct
/// ports and the notifications.
struct Out<'a> {
    conv: &'a mut Conv,
    egress: &'a mut dyn Egress,
    notify: &'a mut Vec<Notify>,
}

/// The RX ring being filled: its slots and buffers, the next slot and the free slots.
struct Fill<'a> {
    slots: Slots<'a>,
    bufs: Bufs<'a>,
    at: u32,
    space: u32,
}

/// What a monitor copies: the packets of `queue` (merged with the batch's flood queue)
/// that `port` sends (`Tx`) or is sent (`Rx`).
#[derive(Clone, Copy)]
struct Seen {
    port: PortId,
    dir: RingDir,
    queue: Queue,
}

/// Pass 2: per destination, its unicast queue merged with the flood queue, then the same
/// packets, in the same order, to its RX monitors.
#[inline(always)]
fn deliver_all(b: &Batch<'_>, ports: &mut PortTable, out: &mut Out<'_>, st: &mut PortStats) {
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
        deliver(b, Target { id, port, uq }, out, st);
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
fn copy_to_monitors(b: &Batch<'_>, ports: &mut PortTable, seen: Seen, out: &mut Out<'_>) {
    let PortTable {
        slots, monitors, ..
    } = ports;
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
            };
            deliver(b, t, &mut out, &mut ignore);
        }
    }
}

/// Copies packet `pi` into the destination slots at `fill.at`; returns its bytes, or
/// why it could not be delivered.
#[inline(always)]
fn copy_packet(b: &Batch<'_>, pi: u32, fill: &mut Fill<'_>) -> Result<u64, DropReason> {
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

/// Pass 2 for a direct destination: each packet handed to the egress as the sender's
/// fragments, in batch order.
#[inline(never)]
fn deliver_direct(b: &Batch<'_>, t: Target<'_>, egress: &mut dyn Egress, st: &mut PortStats) {
    let (mut u, mut f) = (t.uq.head, b.flood.head);
    let dst_hl = t.port.hdr_len;
    let ds = &mut t.port.stats;
    let mut frags = [Frag::default(); MAX_FRAGS];
    while let Some(pi) = b.sc.next_merged(&mut u, &mut f) {
        let p = &b.sc.pkts[pi as usize];
        st.copies += 1;
        let mut k = 0;
        let mut total = 0u64;
        for f in b.sc.frags_of(p) {
            // Validated in pass 0; `frag` checks the index and length again.
            let view = b.bufs.frag(f.buf_idx, 0, f.len as usize);
            if let (Some(view), Some(slot)) = (view, frags.get_mut(k)) {
                *slot = view;
                k += 1;
                total += f.len as u64;
            }
        }
        let mut ok = k == p.nfrags as usize;
        let mut hdr = [0u8; 16];
        let mut hl = 0;
        if ok && dst_hl != b.hdr_len {
            match direct_header(b, p, dst_hl, &mut frags[0]) {
                Some(h) => {
                    hdr = h;
                    hl = dst_hl as usize;
                    total = total - b.hdr_len as u64 + dst_hl as u64;
                }
                None => ok = false,
            }
        }
        if ok && egress.send(t.id, &hdr[..hl], &frags[..k]) {
            ds.rx_packets += 1;
            ds.rx_bytes += total;
        } else {
            ds.drops[DropReason::TxError as usize] += 1;
            st.copies_dropped += 1;
        }
    }
}

/// The destination's header for a packet handed over directly between ports whose
/// header lengths differ: the sender's first 10 bytes (or zeros if it has none), with
/// `num_buffers` 1 in a 12-byte one. The frame follows the sender's header, which must
/// lie in the packet's `first` fragment (refused otherwise); `first` loses it.
#[inline]
fn direct_header(b: &Batch<'_>, p: &Pkt, dst_hl: u16, first: &mut Frag<'_>) -> Option<[u8; 16]> {
    let sh = b.hdr_len as usize;
    let mut hdr = [0u8; 16];
    if sh > 0 {
        let [w0, w1] = b
            .bufs
            .header_at(p.buf_idx, 0)
            .filter(|_| first.len() >= sh)?;
        hdr[..8].copy_from_slice(&w0.to_le_bytes());
        hdr[8..].copy_from_slice(&w1.to_le_bytes());
        hdr[10..].fill(0);
    }
    if dst_hl >= 12 {
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
    }
    *first = first.skip(sh)?;
    Some(hdr)
}

/// What `convert` wrote: frames, bytes, and segments that did not fit (why, how many).
type Converted = (u64, u64, Option<(DropReason, u64)>);

/// The slow path between ports whose virtio-net header lengths differ: gathers the
/// packet, then resizes its header (both have one) or finishes its offloads in software
/// (only the source has one: TCP segmentation, checksums) or prepends an empty header
/// (only the destination has one). Returns the frames and bytes written, and the
/// segments that did not fit (with why), when some did.
#[inline(never)]
fn convert(
    b: &Batch<'_>,
    p: &Pkt,
    dst_hl: u16,
    conv: &mut Conv,
    fill: &mut Fill<'_>,
) -> Result<Converted, DropReason> {
    let Conv { pkt, out, work } = conv;
    pkt.clear();
    for f in b.sc.frags_of(p) {
        let start = pkt.len();
        pkt.resize(start + f.len as usize, 0);
        if !b.bufs.read(f.buf_idx, &mut pkt[start..]) {
            return Err(DropReason::BadBuf);
        }
    }
    let hl = (b.hdr_len as usize).min(pkt.len());
    let (h, frame) = pkt.split_at(hl);
    let vh = VnetHdr::parse(h);
    if dst_hl > 0 {
        out.clear();
        vh.write(out, dst_hl);
        out.extend_from_slice(frame);
        put_bytes(out, fill)?;
        return Ok((1, out.len() as u64, None));
    }
    let (mut frames, mut nbytes, mut err, mut lost) = (0u64, 0u64, None, 0u64);
    offload::resolve(&vh, frame, work, |f| match put_bytes(f, fill) {
        Ok(()) => {
            frames += 1;
            nbytes += f.len() as u64;
        }
        Err(r) => {
            err = Some(r);
            lost += 1;
        }
    })
    .map_err(|_| DropReason::BadOffload)?;
    match err {
        Some(r) if frames == 0 => Err(r),
        Some(r) => Ok((frames, nbytes, Some((r, lost)))),
        None => Ok((frames, nbytes, None)),
    }
}

/// Writes one packet's bytes into the destination slots at `fill.at` (several slots with
/// `NS_MOREFRAG` if it is larger than a buffer).
fn put_bytes(bytes: &[u8], fill: &mut Fill<'_>) -> Result<(), DropReason> {
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
fn deliver(b: &Batch<'_>, t: Target<'_>, out: &mut Out<'_>, st: &mut PortStats) {
    let nrx = t.port.rx.len();
    if nrx == 0 {
        return;
    }
    let dst_hl = t.port.hdr_len;
    // Direct ports take any sender: with the same header as it is, otherwise with the
    // header converted (they all carry one and accept offloads).
    if t.port.direct && (dst_hl == b.hdr_len || dst_hl >= 10) {
        deliver_direct(b, t, out.egress, st);
        return;
    }
    let Target { id, port, uq } = t;
    let rr = (b.ring as usize % nrx) as u16;
    let rk = &mut port.rx[rr as usize];
    let ds = &mut port.stats;
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
        copies += 1;
        if dst_hl != b.hdr_len {
            match convert(b, &b.sc.pkts[pi as usize], dst_hl, out.conv, &mut fill) {
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
    st.copies += copies;
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
