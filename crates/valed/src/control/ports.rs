//! The port table across lanes: which lane owns a switch, opening (creating) a port with
//! its eventfds, releasing it, and the board of open ports whose counters queries read
//! without taking any lane's lock.

use super::conn::Held;
use crate::error::CtlError;
use crate::lane::{Lane, LaneState, PortFds, Token};
use rustix::event::{EventfdFlags, epoll};
use rustix::fd::OwnedFd;
use std::collections::BTreeMap;
use std::sync::Arc;
use vale::proto::Response;
use vale_abi::PortGeometry;
use vale_switch::{Closed, Limits, PortKey, PortName, Registry, RegistryError};

/// A port opened for a client (or a driven port): where it lives and what the client
/// needs to use it.
pub struct Acquired {
    pub held: Held,
    pub opened: Response,
    pub memfd: OwnedFd,
    pub kick: OwnedFd,
    pub notify: OwnedFd,
}

/// What an open asks for beyond the port itself.
#[derive(Debug, Clone, Default)]
pub struct Wants {
    /// Spare buffers from the port's reserve (netmap's `nr_extra_bufs`; fewer may come).
    pub extra_bufs: u32,
    /// No other hold at the same time (netmap's `NR_EXCLUSIVE`, for the whole port).
    pub exclusive: bool,
    /// A netmap pipe endpoint of the port: its id and whether it is the slave (`}`).
    pub pipe: Option<(String, bool)>,
}

/// Who opens a port: the uid it will belong to if the open creates it, and whether the
/// per-uid limits bind it (not for root, valed's own user, or valed's driven ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    pub privileged: bool,
}

impl Who {
    /// valed itself (the ports it drives).
    pub fn daemon() -> Who {
        Who {
            uid: rustix::process::geteuid().as_raw(),
            privileged: true,
        }
    }
}

/// What new ports may add up to (valed's settings).
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub ports_per_uid: usize,
    /// Switches one uid's ports may have made.
    pub switches_per_uid: usize,
    pub memory: u64,
    pub memory_per_uid: u64,
}

impl Quota {
    pub fn of(s: &crate::Settings) -> Quota {
        Quota {
            ports_per_uid: s.max_ports_per_uid,
            switches_per_uid: s.switches_per_uid(),
            memory: s.max_port_memory_mib.saturating_mul(1 << 20),
            memory_per_uid: s.port_memory_per_uid_mib().saturating_mul(1 << 20),
        }
    }
}

/// A netmap pipe of a port: the region's pipe rings it uses, who holds each end, and
/// each end's wake-up eventfd (an end sleeps on its own and writes its peer's).
pub struct Pipe {
    pub index: u16,
    pub holds: [Option<u64>; 2],
    pub notify: [OwnedFd; 2],
}

/// One open port as the control thread knows it: enough for `list` and `stats`, and
/// its counters, which the forwarding thread publishes once per batch (Snabb's
/// shared-memory counters), so reading them never stops the forwarder.
pub struct BoardEntry {
    pub switch: String,
    pub name: String,
    pub geometry: vale::proto::Geometry,
    /// Holds on it (client connections, driven ports).
    pub clients: u32,
    pub counters: Arc<vale_switch::PortCounters>,
    /// Spare buffers not handed out, as `(first, count)` ranges.
    pub spare: Vec<(u32, u32)>,
    /// A hold has the port exclusively.
    pub exclusive: bool,
    /// Its netmap pipes in use, by id.
    pub pipes: std::collections::HashMap<String, Pipe>,
    /// Pipes its region has room for.
    pub pipe_room: u16,
    /// The uid that created it (valed's own for the ports it drives).
    pub owner: u32,
    /// Whether the per-uid limits count it (its creator was not privileged).
    pub counted: bool,
    /// Its region's size.
    pub bytes: u64,
}

impl BoardEntry {
    /// Up to `n` spare buffers, contiguous, from the first range that has any.
    fn take_spare(&mut self, n: u32) -> Option<(u32, u32)> {
        let r = self.spare.iter_mut().find(|r| r.1 > 0)?;
        let got = (r.0, n.min(r.1));
        *r = (r.0 + got.1, r.1 - got.1);
        self.spare.retain(|r| r.1 > 0);
        (got.1 > 0).then_some(got)
    }

    /// Gives spare buffers back, merging neighbouring ranges.
    fn give_back(&mut self, r: (u32, u32)) {
        self.spare.push(r);
        self.spare.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.spare.len());
        for &(first, n) in &self.spare {
            match merged.last_mut() {
                Some(last) if last.0 + last.1 == first => last.1 += n,
                _ => merged.push((first, n)),
            }
        }
        self.spare = merged;
    }
}

pub struct PortTable {
    lanes: Vec<Arc<Lane>>,
    /// The limits ports are checked against (names, switches, geometry).
    limits: Limits,
    /// What ports may add up to, in all and per uid.
    quota: Quota,
    /// Every open port, by lane and key (so in switch, then port index, order).
    board: BTreeMap<(usize, usize, u16), BoardEntry>,
    /// Ids of holds (each has its own notify eventfd).
    next_hold: u64,
    /// For what a port's last client left in its TX rings (see `release`).
    fw: vale_switch::Forwarder,
}

impl PortTable {
    pub fn new(lanes: Vec<Arc<Lane>>, limits: Limits, quota: Quota) -> PortTable {
        PortTable {
            lanes,
            limits,
            quota,
            board: BTreeMap::new(),
            next_hold: 0,
            fw: vale_switch::Forwarder::new(),
        }
    }

    /// Open ports: (lane, key) and what the board knows of each.
    pub fn board(&self) -> impl Iterator<Item = (usize, PortKey, &BoardEntry)> {
        self.board.iter().map(|(&(lane, switch, port), e)| {
            (
                lane,
                PortKey {
                    switch,
                    port: vale_switch::PortId(port),
                },
                e,
            )
        })
    }

    pub fn lanes(&self) -> &[Arc<Lane>] {
        &self.lanes
    }

    pub fn lane(&self, i: usize) -> &Arc<Lane> {
        &self.lanes[i]
    }

    /// Whether `name` is a port open on any lane.
    pub fn exists(&self, name: &str) -> bool {
        self.board.values().any(|e| e.name == name)
    }

    /// The uid that created open port `name`.
    pub fn owner(&self, name: &str) -> Option<u32> {
        self.board
            .values()
            .find(|e| e.name == name)
            .map(|e| e.owner)
    }

    /// Refuses a new port of `bytes` for `who` that would go over the port limits.
    fn check_quota(&self, name: &str, who: Who, bytes: u64) -> Result<(), CtlError> {
        let q = self.quota;
        let mib = |b: u64| b.div_ceil(1 << 20);
        let used: u64 = self.board.values().map(|e| e.bytes).sum();
        if used + bytes > q.memory {
            return Err(CtlError::Limit(format!(
                "{name}: its {} MiB would take valed's ports to {} MiB, over its limit (--max-port-memory-mib {})",
                mib(bytes),
                mib(used + bytes),
                q.memory >> 20
            )));
        }
        if who.privileged {
            return Ok(());
        }
        let (n, mine) = self
            .board
            .values()
            .filter(|e| e.counted && e.owner == who.uid)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.bytes));
        if n >= q.ports_per_uid {
            return Err(CtlError::Limit(format!(
                "{name}: uid {} has {n} ports, its limit (--max-ports-per-uid {})",
                who.uid, q.ports_per_uid
            )));
        }
        // A port on a switch that has none makes the switch. The switches that only
        // the uid's ports are on are counted, so that one user cannot take every
        // switch; one it shares with others' ports is not.
        let switch = name.split(':').next().unwrap_or(name);
        if !self.board.values().any(|e| e.switch == switch) {
            let mut theirs: Vec<&str> = self
                .board
                .values()
                .filter(|e| e.counted && e.owner == who.uid)
                .map(|e| e.switch.as_str())
                .filter(|sw| {
                    self.board
                        .values()
                        .filter(|e| e.switch == *sw)
                        .all(|e| e.counted && e.owner == who.uid)
                })
                .collect();
            theirs.sort_unstable();
            theirs.dedup();
            if theirs.len() >= q.switches_per_uid {
                return Err(CtlError::Limit(format!(
                    "{name}: cannot make switch {switch}: uid {} has {} switches of its own ({}), its limit (--max-switches-per-uid {})",
                    who.uid,
                    theirs.len(),
                    theirs.join(", "),
                    q.switches_per_uid,
                )));
            }
        }
        if mine + bytes > q.memory_per_uid {
            return Err(CtlError::Limit(format!(
                "{name}: its {} MiB would take uid {}'s ports to {} MiB, over its limit (--max-port-memory-per-uid-mib {})",
                mib(bytes),
                who.uid,
                mib(mine + bytes),
                q.memory_per_uid >> 20
            )));
        }
        Ok(())
    }

    /// The region for `name` if opening it creates a port, made (and faulted in, or for
    /// a big one set faulting in beside: [`fault_in`]) here,
    /// where no lane's lock is held, after the geometry and the quotas are checked.
    fn region_for(
        &self,
        lane: &Lane,
        name: &str,
        g: PortGeometry,
        who: Who,
    ) -> Result<Option<vale_abi::Region>, CtlError> {
        {
            let st = lane.lock_ctl();
            let creates = match name.split_once('/') {
                // A monitor of a port that is not there fails in the registry.
                Some((target, _)) => st.registry.find(target).is_some(),
                None => st.registry.find(name).is_none(),
            };
            if !creates {
                return Ok(None);
            }
            st.registry.check_geometry(name, &g)?;
        }
        let region_err = |source| RegistryError::Region {
            port: name.to_string(),
            source,
        };
        let bytes = vale_abi::RegionLayout::new(g).map_err(region_err)?.size as u64;
        self.check_quota(name, who, bytes)?;
        let (region, rest) = vale_abi::Region::create_lazy(name, g).map_err(region_err)?;
        fault_in(name, rest);
        Ok(Some(region))
    }

    /// The lane that owns `name`'s switch, or the least loaded one for a new switch
    /// (after checking the daemon-wide switch limit).
    fn lane_for(&self, name: &str) -> Result<usize, CtlError> {
        // A monitor (`vale0:a/t`) lives with the port it watches.
        let base = name.split('/').next().unwrap_or(name);
        let pn = PortName::parse(base, self.limits.max_name_len).map_err(RegistryError::from)?;
        let mut total = 0;
        let mut best = (usize::MAX, 0);
        for (i, l) in self.lanes.iter().enumerate() {
            let st = l.lock_ctl();
            if st.registry.switch(pn.switch()).is_some() {
                return Ok(i);
            }
            let n = st.registry.switches().count();
            total += n;
            if n < best.0 {
                best = (n, i);
            }
        }
        let limit = self.limits.max_switches;
        if total >= limit {
            return Err(RegistryError::TooManySwitches {
                switch: pn.switch().to_string(),
                limit,
            }
            .into());
        }
        Ok(best.1)
    }

    /// The display index of a switch: unique across lanes.
    pub fn bridge_idx(&self, lane: usize, local: usize) -> usize {
        local * self.lanes.len() + lane
    }

    /// Opens (creating if needed) port `name` and clones what a client needs.
    pub fn acquire(&mut self, name: &str, g: PortGeometry) -> Result<Acquired, CtlError> {
        self.acquire_with(name, g, Wants::default(), Who::daemon())
    }

    /// [`acquire`](Self::acquire), with spare buffers or exclusivity asked for.
    pub fn acquire_with(
        &mut self,
        name: &str,
        g: PortGeometry,
        wants: Wants,
        who: Who,
    ) -> Result<Acquired, CtlError> {
        let lane = self.lane_for(name)?;
        let shared = self.lanes[lane].clone();
        let region = self.region_for(&shared, name, g, who)?;
        let mut st = shared.lock_ctl();
        let key = match st.registry.open_with(name, Some(g), region) {
            Ok(k) => k,
            Err(e) => {
                tracing::info!("refused to open `{}`: {e}", vale_switch::quote_input(name));
                return Err(e.into());
            }
        };
        let new = st.registry.open_count(key) == 1;
        if new {
            match make_fds(&shared, key) {
                Ok(f) => {
                    st.fds.insert(key, f);
                }
                Err(e) => {
                    let _ = st.registry.close(key);
                    return Err(e);
                }
            }
        }
        // This hold's own notify eventfd (the lane keeps one, the client gets a twin).
        let notify = match eventfd() {
            Ok(n) => n,
            Err(e) => {
                abandon(&mut st, &shared, key);
                return Err(e);
            }
        };
        self.next_hold += 1;
        let hold = self.next_hold;
        let result = (|| {
            let e = st
                .registry
                .switches_indexed()
                .find(|(i, _)| *i == key.switch)?
                .1;
            let port = e.switch.port(key.port)?;
            let memfd = port.region().fd().try_clone_to_owned().ok()?;
            let opened = Response::Opened {
                switch: e.name.clone(),
                port: port.name().to_string(),
                index: key.port.0,
                geometry: port.geometry().into(),
                layout_version: vale_abi::layout::LAYOUT_VERSION,
                extra: None,
                pipe: None,
            };
            let (first, count) = port.region().layout().extra_bufs();
            let entry = BoardEntry {
                switch: e.name.clone(),
                name: port.name().to_string(),
                geometry: port.geometry().into(),
                clients: 0,
                counters: port.counters(),
                spare: if count > 0 {
                    vec![(first, count)]
                } else {
                    Vec::new()
                },
                exclusive: false,
                pipes: Default::default(),
                pipe_room: port.geometry().pipes,
                owner: who.uid,
                counted: !who.privileged,
                bytes: port.region().size() as u64,
            };
            let f = st.fds.get(&key)?;
            let kick = f.kick.try_clone().ok()?;
            let theirs = notify.try_clone().ok()?;
            Some((
                entry,
                Acquired {
                    held: Held {
                        lane,
                        key,
                        hold,
                        extra: None,
                        exclusive: wants.exclusive && wants.pipe.is_none(),
                        pipe: None,
                    },
                    opened,
                    memfd,
                    kick,
                    notify: theirs,
                },
            ))
        })();
        match result {
            Some((entry, mut a)) => {
                let slot = (lane, key.switch, key.port.0);
                let b = self.board.entry(slot).or_insert(entry);
                // A pipe end's rings are its own (and one holder each already): the
                // port's exclusivity is about the port's rings.
                let port_rings = wants.pipe.is_none();
                if port_rings && (b.exclusive || (wants.exclusive && b.clients > 0)) {
                    abandon(&mut st, &shared, key);
                    return Err(CtlError::Busy(format!(
                        "{name} is held {}",
                        if b.exclusive {
                            "exclusively by another client"
                        } else {
                            "by other clients; it cannot be held exclusively"
                        }
                    )));
                }
                if let Some((id, slave)) = &wants.pipe {
                    match take_pipe_end(b, id, *slave, hold) {
                        Ok((end, peer_notify, own_notify)) => {
                            a.held.pipe = Some(end);
                            a.kick = peer_notify;
                            a.notify = own_notify;
                            if let Response::Opened { pipe, .. } = &mut a.opened {
                                *pipe = Some(vale::proto::PipeInfo {
                                    index: end.pipe,
                                    slave: end.slave,
                                });
                            }
                        }
                        Err(e) => {
                            if b.clients == 0 {
                                self.board.remove(&slot);
                            }
                            abandon(&mut st, &shared, key);
                            return Err(e);
                        }
                    }
                }
                if port_rings {
                    b.exclusive = wants.exclusive;
                }
                if wants.extra_bufs > 0 {
                    a.held.extra = b.take_spare(wants.extra_bufs);
                    if let Response::Opened { extra, .. } = &mut a.opened {
                        *extra = a.held.extra.map(|(f, n)| [f, n]);
                    }
                }
                b.clients += 1;
                if let Some(f) = st.fds.get_mut(&key) {
                    f.notify.push((hold, notify));
                }
                if new {
                    tracing::info!(port = name, "port created");
                }
                drop(st);
                shared.wake_forwarder();
                Ok(a)
            }
            None => {
                abandon(&mut st, &shared, key);
                Err(CtlError::Internal(format!("cannot hand out port `{name}`")))
            }
        }
    }

    /// Drops one hold on a port; the port goes away with the last. What its last client
    /// left in its TX rings is forwarded first: netmap forwards inside the sender's
    /// sync, so a program that injects, syncs once and exits expects its packets to
    /// arrive, while here the forwarding thread may not have run since.
    pub fn release(&mut self, h: Held) {
        let shared = self.lanes[h.lane].clone();
        let mut st = shared.lock_ctl();
        let name = port_name(&st.registry, h.key);
        if let Some(f) = st.fds.get_mut(&h.key) {
            f.notify.retain(|(id, _)| *id != h.hold);
        }
        if st.registry.open_count(h.key) == 1 {
            drain(&mut self.fw, &mut st, &shared, h.key);
        }
        let slot = (h.lane, h.key.switch, h.key.port.0);
        if let Some(e) = self.board.get_mut(&slot) {
            e.clients = e.clients.saturating_sub(1);
            if h.exclusive {
                e.exclusive = false;
            }
            if let Some(r) = h.extra {
                e.give_back(r);
            }
            if let Some(end) = h.pipe {
                let side = end.slave as usize;
                e.pipes.retain(|_, p| {
                    if p.index == end.pipe && p.holds[side] == Some(h.hold) {
                        p.holds[side] = None;
                    }
                    p.holds.iter().any(Option::is_some)
                });
            }
        }
        match st.registry.close(h.key) {
            Ok(Closed::PortRemoved) => {
                self.board.remove(&slot);
                if let Some(f) = st.fds.remove(&h.key) {
                    let _ = epoll::delete(&shared.epoll, &f.kick);
                }
                tracing::info!(port = %name, "port removed (last client gone)");
            }
            Ok(Closed::StillOpen) => {}
            Err(e) => tracing::error!("closing {name}: {e}"),
        }
    }
}

/// Undoes an open that failed after the registry opened port `key`: its hold is closed
/// and, if that removed the port, its kick eventfd (made and watched by the lane when
/// the open created the port) goes too instead of staying in `st.fds`.
fn abandon(st: &mut LaneState, lane: &Lane, key: PortKey) {
    if let Ok(Closed::PortRemoved) = st.registry.close(key)
        && let Some(f) = st.fds.remove(&key)
    {
        let _ = epoll::delete(&lane.epoll, &f.kick);
    }
}

/// Takes end `slave` of pipe `id` of a port for `hold`: the pipe's place (the lowest
/// free one for a new pipe) and clones of the peer's and its own wake-up eventfds.
fn take_pipe_end(
    b: &mut BoardEntry,
    id: &str,
    slave: bool,
    hold: u64,
) -> Result<(vale_abi::PipeEnd, OwnedFd, OwnedFd), CtlError> {
    let name = format!("{}{}{id}", b.name, if slave { '}' } else { '{' });
    if !b.pipes.contains_key(id) {
        let index = (0..b.pipe_room)
            .find(|i| b.pipes.values().all(|p| p.index != *i))
            .ok_or_else(|| {
                CtlError::Limit(format!(
                    "{name}: port {} has room for {} pipes, all in use (valed --pipes N for more)",
                    b.name, b.pipe_room
                ))
            })?;
        let notify = [eventfd()?, eventfd()?];
        b.pipes.insert(
            id.to_string(),
            Pipe {
                index,
                holds: [None, None],
                notify,
            },
        );
    }
    let p = b.pipes.get_mut(id).expect("inserted above");
    let side = slave as usize;
    if p.holds[side].is_some() {
        return Err(CtlError::Busy(format!("{name} is already open")));
    }
    let clone = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| CtlError::Internal(format!("{name}: {e}")))
    };
    let peer = clone(&p.notify[1 - side])?;
    let own = clone(&p.notify[side])?;
    p.holds[side] = Some(hold);
    Ok((
        vale_abi::PipeEnd {
            pipe: p.index,
            slave,
        },
        peer,
        own,
    ))
}

pub fn port_name(reg: &Registry, key: PortKey) -> String {
    reg.switches_indexed()
        .find(|(si, _)| *si == key.switch)
        .and_then(|(_, e)| e.switch.port(key.port).map(|p| p.name().to_string()))
        .unwrap_or_else(|| format!("{}:{}", key.switch, key.port))
}

/// Forwards what port `key`'s TX rings still hold (its last client is leaving), a batch
/// at a time until they are empty; a monitor's TX rings are never read.
fn drain(fw: &mut vale_switch::Forwarder, st: &mut LaneState, lane: &Lane, key: PortKey) {
    let now = lane.now();
    let st = &mut *st;
    let Some(e) = st.registry.entry_mut(key) else {
        return;
    };
    if e.switch.monitors().any(|(m, _)| m == key.port) {
        return;
    }
    let Some(g) = e.switch.port(key.port).map(|p| p.geometry()) else {
        return;
    };
    let mut notes = Vec::new();
    let mut egress = crate::lane::DirectEgress {
        switch: key.switch,
        driven: st.driven.get_mut().unwrap_or_else(|p| p.into_inner()),
    };
    for r in 0..g.tx_rings {
        // A ring's worth at most (and a batch beyond): a client that keeps filling the
        // ring from another thread as it closes must not keep the lane here.
        let mut left = g.tx_slots as usize;
        while left > 0 {
            let n = fw.forward_ring(&e.switch, key.port, r, now, &mut notes, &mut egress);
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
    }
    crate::lane::notify(&st.fds, key.switch, &notes);
}

fn eventfd() -> Result<OwnedFd, CtlError> {
    rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| CtlError::Internal(format!("eventfd failed: {e}")))
}

fn make_fds(lane: &Lane, key: PortKey) -> Result<PortFds, CtlError> {
    let f = PortFds {
        kick: eventfd()?,
        notify: Vec::new(),
    };
    epoll::add(
        &lane.epoll,
        &f.kick,
        epoll::EventData::new_u64(Token::Kick(key).into_u64()),
        epoll::EventFlags::IN,
    )
    .map_err(|e| CtlError::Internal(format!("epoll_ctl failed: {e}")))?;
    Ok(f)
}

/// Buffers past this are faulted in on a thread of their own, not on the control
/// thread, where other clients wait (2 GiB took 3.3 s here; the default port's 2 MiB
/// well under a millisecond).
const FAULT_IN_BESIDE: usize = 64 << 20;

/// Faults in a new region's buffers: here if they are few, else on a short-lived
/// thread, so that the client has its port at once (a frame that comes first takes
/// its page fault on the data path) and other clients are answered meanwhile.
fn fault_in(name: &str, rest: vale_abi::Populate) {
    if rest.bytes() <= FAULT_IN_BESIDE {
        return rest.run();
    }
    let mib = rest.bytes() >> 20;
    let t = std::time::Instant::now();
    let port = name.to_string();
    let spawned = std::thread::Builder::new()
        .name("vale-fault-in".into())
        .spawn(move || {
            rest.run();
            tracing::debug!(
                port,
                mib,
                ms = t.elapsed().as_millis() as u64,
                "buffers faulted in"
            );
        });
    if let Err(e) = spawned {
        // No thread to spare: the pages fault in as frames first touch them.
        tracing::warn!(port = name, "buffers left to fault in on use: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane::LaneState;

    fn table(quota: Quota) -> PortTable {
        let limits = Limits::default();
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let wake = eventfd().unwrap();
        let lane = Arc::new(Lane::new(LaneState::new(Registry::new(limits)), ep, wake));
        PortTable::new(vec![lane], limits, quota)
    }

    const SMALL: PortGeometry = PortGeometry {
        tx_rings: 1,
        rx_rings: 1,
        tx_slots: 64,
        rx_slots: 64,
        buf_size: 2048,
        extra_bufs: 0,
        pipes: 0,
    };

    fn user(uid: u32) -> Who {
        Who {
            uid,
            privileged: false,
        }
    }

    /// Limits that bind none of these tests, each test tightening one.
    const LOOSE: Quota = Quota {
        ports_per_uid: 100,
        switches_per_uid: 8,
        memory: 1 << 40,
        memory_per_uid: 1 << 40,
    };

    /// A hold on open port `name` of lane 0 (the plain kind every open in these tests
    /// takes), to release one more.
    fn hold_of(t: &PortTable, name: &str) -> Held {
        let key = t.board().find(|(_, _, e)| e.name == name).unwrap().1;
        Held {
            lane: 0,
            key,
            hold: 0,
            extra: None,
            exclusive: false,
            pipe: None,
        }
    }

    fn open(t: &mut PortTable, name: &str, who: Who) -> Result<Held, String> {
        t.acquire_with(name, SMALL, Wants::default(), who)
            .map(|a| a.held)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn ports_per_uid_are_counted_by_creator_and_given_back() {
        let mut t = table(Quota {
            ports_per_uid: 2,
            ..LOOSE
        });
        let a = open(&mut t, "vale0:a", user(1000)).unwrap();
        open(&mut t, "vale0:b", user(1000)).unwrap();
        let err = open(&mut t, "vale0:c", user(1000)).unwrap_err();
        assert!(err.contains("uid 1000 has 2 ports"), "{err}");
        assert!(err.contains("--max-ports-per-uid 2"), "{err}");
        // Opening an existing port creates nothing; other uids and valed are not held
        // to uid 1000's count.
        open(&mut t, "vale0:a", user(1000)).unwrap();
        open(&mut t, "vale0:c", user(1001)).unwrap();
        open(&mut t, "vale0:d", Who::daemon()).unwrap();
        assert_eq!(t.owner("vale0:a"), Some(1000));
        assert_eq!(t.owner("vale0:c"), Some(1001));
        // A port gone (both holds of vale0:a) is one fewer.
        t.release(a);
        assert!(open(&mut t, "vale0:e", user(1000)).is_err());
        t.release(hold_of(&t, "vale0:a"));
        open(&mut t, "vale0:e", user(1000)).unwrap();
    }

    #[test]
    fn switches_made_by_one_uid_are_limited_and_given_back() {
        let mut t = table(Quota {
            switches_per_uid: 2,
            ..LOOSE
        });
        let a = open(&mut t, "vale0:a", user(1000)).unwrap();
        open(&mut t, "vale1:a", user(1000)).unwrap();
        let err = open(&mut t, "vale2:a", user(1000)).unwrap_err();
        assert!(err.contains("uid 1000 has 2 switches of its own"), "{err}");
        assert!(err.contains("--max-switches-per-uid 2"), "{err}");
        assert!(err.contains("vale0, vale1"), "says which it has: {err}");
        assert!(!t.exists("vale2:a"));
        // More ports on its switches, and ports on switches others made, are fine (a
        // switch shared with others' ports is not its own); other uids and valed are
        // not held to its count.
        open(&mut t, "vale0:b", user(1000)).unwrap();
        open(&mut t, "vale3:x", user(1001)).unwrap();
        open(&mut t, "vale3:a", user(1000)).unwrap();
        open(&mut t, "vale4:d", Who::daemon()).unwrap();
        // A switch whose last port of its went is one fewer: vale0 still has vale0:b.
        t.release(a);
        assert!(open(&mut t, "vale5:a", user(1000)).is_err());
        t.release(hold_of(&t, "vale0:b"));
        open(&mut t, "vale5:a", user(1000)).unwrap();
    }

    #[test]
    fn port_memory_is_limited_in_all_and_per_uid() {
        let one = vale_abi::RegionLayout::new(SMALL).unwrap().size as u64;
        let mut t = table(Quota {
            memory: 3 * one,
            memory_per_uid: 2 * one,
            ..LOOSE
        });
        open(&mut t, "vale0:a", user(1000)).unwrap();
        open(&mut t, "vale0:b", user(1000)).unwrap();
        let err = open(&mut t, "vale0:c", user(1000)).unwrap_err();
        assert!(err.contains("uid 1000's ports"), "{err}");
        assert!(err.contains("--max-port-memory-per-uid-mib"), "{err}");
        open(&mut t, "vale0:c", user(1001)).unwrap();
        // The total binds everyone, valed's own ports too.
        let err = open(&mut t, "vale0:d", Who::daemon()).unwrap_err();
        assert!(err.contains("--max-port-memory-mib"), "{err}");
        assert!(!t.exists("vale0:d"));
    }
}
