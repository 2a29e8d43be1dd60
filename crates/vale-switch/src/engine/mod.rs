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

mod batch;
mod convert;
mod deliver;
mod direct;
mod forwarder;

pub use direct::{Egress, NoEgress};
pub use forwarder::Forwarder;

use crate::lookup::Lookup;
use crate::stats::{PortCounters, PortStats, broken_switch_law};
use crate::types::PortId;
use crate::vlan::{Members, PortVlan};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use thiserror::Error;
use vale_abi::lease::{LeaseRing, Leased};
use vale_abi::ring::dist;
use vale_abi::{Dir, PortGeometry, Region, RingView};

/// Largest batch accepted for `bridge_batch`.
pub const MAX_BATCH: usize = 8192;
/// netmap's default `bridge_batch`.
pub const DEFAULT_BATCH: usize = 1024;
/// Most forwarding threads one switch may have.
pub const MAX_THREADS: u16 = 256;
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
    #[error("{0} forwarding threads for one switch: it must be between 1 and {MAX_THREADS}")]
    BadThreads(u16),
    #[error("virtio-net header length {0} is not 0, 10 or 12")]
    BadHdrLen(u16),
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
    /// Next slot the switch will read; the client owns everything else. Written only by
    /// the thread forwarding the ring (see `busy`).
    hwcur: AtomicU32,
    /// On a switch forwarded by several threads: a thread is reading the ring. The
    /// first to claim it in a pass forwards it, the others pass it by.
    busy: AtomicBool,
}

impl TxKring {
    /// Slots the client has published past `hwcur`, or `None` if it broke the ring
    /// protocol: the ring is then reset to the switch's view (the caller counts it).
    #[inline(always)]
    fn published(&self) -> Option<u32> {
        // Read once, validate against private state.
        let n = self.view.num_slots();
        let hwcur = self.hwcur.load(Relaxed);
        let (head, cur) = self.view.csb().sw_read_acquire();
        if head >= n || cur >= n || dist(hwcur, cur, n) < dist(hwcur, head, n) {
            self.view.reinit(hwcur, prev(hwcur, n));
            return None;
        }
        Some(dist(hwcur, head, n))
    }

    /// Whether the client has published anything (one load, nothing validated).
    #[inline(always)]
    fn has_news(&self) -> bool {
        self.view.csb().head.load(Relaxed) != self.hwcur.load(Relaxed)
    }

    /// Gives the slots before `to` back to the client; true if it asked for a kick.
    #[inline(always)]
    fn release(&self, to: u32) -> bool {
        self.hwcur.store(to, Relaxed);
        let csb = self.view.csb();
        csb.sw_publish_release(to, prev(to, self.view.num_slots()));
        csb.sw_kick_needed()
    }
}

/// Claims a TX ring for one pass of one thread; released on drop.
struct Claim<'a>(&'a AtomicBool);

impl<'a> Claim<'a> {
    #[inline(always)]
    fn take(flag: &'a AtomicBool) -> Option<Claim<'a>> {
        // Not `then_some`: a Claim built and dropped would release the holder's claim.
        (!flag.swap(true, Acquire)).then(|| Claim(flag))
    }
}

impl Drop for Claim<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0.store(false, Release);
    }
}

/// An RX ring: the switch's side of it is the lease state ([`vale_abi::lease`]), so
/// that every thread forwarding the switch can fill it.
struct RxKring {
    view: RingView,
    lease: LeaseRing<AtomicU32>,
}

impl RxKring {
    /// Reserves up to `want` free slots, first taking back those the client released
    /// (a client handing back more than it was given has its ring reset: `reset`).
    #[inline(always)]
    fn lease(&self, want: u32) -> Leased<'_, AtomicU32, RingView> {
        self.lease
            .lease(want, || self.view.csb().sw_read_acquire().0, &self.view)
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
    /// Written only by the forwarder, through `&mut Port`; read by anyone with a handle.
    counters: Arc<PortCounters>,
    /// Bytes of virtio-net header in front of each packet (0, 10 or 12; netmap's
    /// `virt_hdr_len`).
    hdr_len: u16,
    /// Packets for this port go to the [`Egress`] instead of its RX ring (when the
    /// sender's header length matches; otherwise they are converted into the ring).
    direct: bool,
    /// Its VLAN mode, used while the switch filters VLANs (an `Arc`, so that a monitor
    /// of the port can hold it while the port is borrowed).
    vlan: Arc<PortVlan>,
}

impl Port {
    fn new(name: String, region: Region) -> Port {
        let g = region.geometry();
        let tx = (0..g.tx_rings)
            .filter_map(|i| region.ring(Dir::Tx, i))
            .map(|view| TxKring {
                view,
                hwcur: AtomicU32::new(0),
                busy: AtomicBool::new(false),
            })
            .collect();
        let rx = (0..g.rx_rings)
            .filter_map(|i| region.ring(Dir::Rx, i))
            .map(|view| RxKring {
                lease: LeaseRing::new(view.num_slots()),
                view,
            })
            .collect();
        Port {
            name,
            region,
            tx,
            rx,
            counters: Arc::default(),
            hdr_len: 0,
            direct: false,
            vlan: Arc::default(),
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
    /// A snapshot of the port's counters.
    pub fn stats(&self) -> PortStats {
        self.counters.snapshot()
    }
    /// A handle on the port's counters, to read them later without the switch (and
    /// without stopping its forwarder). It outlives the port, frozen at its last counts.
    pub fn counters(&self) -> Arc<PortCounters> {
        Arc::clone(&self.counters)
    }
    /// Bytes of virtio-net header in front of each packet.
    pub fn hdr_len(&self) -> u16 {
        self.hdr_len
    }
    /// Its VLAN mode (used while the switch filters VLANs).
    pub fn vlan(&self) -> &PortVlan {
        &self.vlan
    }
    /// Gives the region back (on detach).
    pub fn into_region(self) -> Region {
        self.region
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
    /// Read-locked once per batch for the whole batch's lookup, write-locked when it
    /// learns (see [`Lookup::lookup_batch_shared`]).
    lookup: RwLock<L>,
    cfg: SwitchConfig,
    /// Port the next pass starts from (see [`Forwarder::forward`]).
    rr: AtomicUsize,
    /// Forwarding threads that forward this switch at once (see [`Self::set_threads`]).
    threads: u16,
    /// The counts of the ports that were detached, summed: the switch's law still
    /// balances the copies they made or were handed.
    departed: PortStats,
    /// VLAN filtering on: the member count of each VLAN (see [`crate::vlan`]).
    vlan: Option<Members>,
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
            lookup: RwLock::new(lookup),
            cfg,
            rr: AtomicUsize::new(0),
            threads: 1,
            departed: PortStats::default(),
            vlan: None,
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

    /// The lookup, read-locked (the forwarders lock it once per batch).
    pub fn lookup(&self) -> RwLockReadGuard<'_, L> {
        self.lookup.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lookup_mut(&mut self) -> &mut L {
        self.lookup.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// How many forwarding threads forward this switch at once (1..=256; 1 by
    /// default). With more than one, each TX ring is read by one thread at a time and
    /// the RX rings are filled through leases (see [`Forwarder::forward_worker`]).
    pub fn set_threads(&mut self, threads: u16) -> Result<(), EngineError> {
        if threads == 0 || threads > MAX_THREADS {
            return Err(EngineError::BadThreads(threads));
        }
        self.threads = threads;
        Ok(())
    }

    pub fn threads(&self) -> u16 {
        self.threads
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
        self.recount_vlans();
        Ok(id)
    }

    /// Turns VLAN filtering on or off (see [`crate::vlan`]). Either way the lookup
    /// forgets what it learned: its table's keys change meaning.
    pub fn set_vlan_filtering(&mut self, on: bool) {
        if on == self.vlan.is_some() {
            return;
        }
        self.vlan = on.then(|| Members::new(std::iter::empty()));
        for p in self.ports.active.clone() {
            self.lookup_mut().port_detached(p);
        }
        self.lookup_mut().vlan_filtering(on);
        self.recount_vlans();
    }

    pub fn vlan_filtering(&self) -> bool {
        self.vlan.is_some()
    }

    /// Sets port `id`'s VLAN mode; the addresses learned behind it are forgotten.
    pub fn set_port_vlan(&mut self, id: PortId, mode: PortVlan) -> Result<(), EngineError> {
        let p = self.ports.get_mut(id).ok_or(EngineError::NoTarget(id))?;
        if *p.vlan != mode {
            p.vlan = Arc::new(mode);
            self.lookup_mut().port_detached(id);
            self.recount_vlans();
        }
        Ok(())
    }

    /// The member counts follow the forwarding ports and their modes.
    fn recount_vlans(&mut self) {
        if self.vlan.is_some() {
            let t = &self.ports;
            let modes = t.active.iter().filter_map(|p| t.get(*p)).map(|p| &*p.vlan);
            self.vlan = Some(Members::new(modes));
        }
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
        self.lookup_mut().port_detached(id);
        self.departed.absorb(&port.stats());
        self.recount_vlans();
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

    /// The first conservation law (see `stats`) that the counters of this switch's
    /// ports, monitors included, break, as a sentence with the figures; `None` if every
    /// frame its ports sent is delivered or counted. Exact between passes.
    pub fn broken_law(&self) -> Option<String> {
        let all = self
            .ports
            .slots
            .iter()
            .flatten()
            .map(|p| (p.name(), p.stats()));
        let departed = std::iter::once(("(detached ports)", self.departed.clone()));
        broken_switch_law(all.chain(departed))
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
                pending |= head != kr.hwcur.load(Relaxed);
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
