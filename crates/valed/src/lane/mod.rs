//! A lane: one forwarding thread, the switches it owns, its epoll set and its lock,
//! shared by the control thread (which adds and removes ports) and the forwarder.

mod egress;
pub mod forward;
mod spin;
mod token;

pub use token::Token;

use crate::port::{DrivenPort, Pairs, Waker, Watcher};
pub use egress::DirectEgress;
use rustix::fd::OwnedFd;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use vale_switch::{PortKey, Registry, Timestamp};

/// A map keyed by (switch, port), as the lane keeps its ports' eventfds and driven
/// halves: the forwarding thread looks a driven port up for every frame it hands over
/// directly, so the key (two small integers of valed's own, never a peer's) is hashed
/// by a multiply instead of SipHash.
pub type PortMap<V> = HashMap<PortKey, V, BuildHasherDefault<KeyHasher>>;

/// [`PortMap`]'s hasher: each integer written is mixed in by one multiply (by an odd
/// constant, so distinct ports of a switch never share the low bits a table indexes
/// by; the high bits, which hashbrown compares, take in every bit written).
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The eventfds of one port: `kick` (any client wakes the switch), and one `notify`
/// per hold on the port (the switch wakes its clients). A notify eventfd each: with one
/// shared, a client draining it would take a wake-up meant for another client that was
/// about to sleep on it.
pub struct PortFds {
    pub kick: OwnedFd,
    /// (hold id, eventfd) of every hold on the port.
    pub notify: Vec<(u64, OwnedFd)>,
}

impl PortFds {
    /// Wakes every client of the port.
    pub fn notify_all(&self) {
        for (_, f) in &self.notify {
            notify_client(f);
        }
    }
}

/// What the lane's lock guards: its switches, the eventfds of their ports, and the
/// ports its forwarding thread drives itself.
pub struct LaneState {
    pub registry: Registry,
    pub fds: PortMap<PortFds>,
    /// Ports of this lane's switches whose client is its forwarding thread (host ports,
    /// VMs): their data-plane halves. Only the lane's own thread (and the control
    /// thread) touch them, under this lock; its helpers never do.
    pub driven: Mutex<PortMap<Box<dyn DrivenPort>>>,
    /// The queue pairs of driven ports of several ([`DrivenPort::pairs`]): on a switch
    /// of several threads, pair `i` is served by worker `i % threads`
    /// ([`Lane::serves`]), the lane's thread and its helpers alike.
    pub pairs: PortMap<Arc<dyn Pairs>>,
}

/// Writes a client's notify eventfd, which it shares: a client that filled it to its
/// limit and cleared `O_NONBLOCK` (the file's flag) would make the write wait, holding
/// the lane. So the flag is put back first when it is gone (one more system call, only
/// when a client is about to sleep), and a client that clears it again in the instant
/// before the write holds the lane for [`crate::sys::bounded::WRITE_LIMIT`] at most, its
/// wake-up skipped (its eventfd, full, is readable anyway).
pub fn notify_client(f: &OwnedFd) {
    use rustix::fd::AsFd;
    use rustix::fs::OFlags;
    if let Ok(fl) = rustix::fs::fcntl_getfl(f) {
        if !fl.contains(OFlags::NONBLOCK) {
            let _ = rustix::fs::fcntl_setfl(f, fl | OFlags::NONBLOCK);
        }
    }
    let limit = crate::sys::bounded::WRITE_LIMIT;
    let _ = crate::sys::bounded::write_eventfd_bounded(f.as_fd(), 1, limit);
}

/// Wakes the clients the engine asked to wake (`Notify`s of switch `si`).
pub fn notify(fds: &PortMap<PortFds>, si: usize, notes: &[vale_switch::Notify]) {
    for n in notes {
        let key = PortKey {
            switch: si,
            port: n.port,
        };
        if let Some(f) = fds.get(&key) {
            f.notify_all();
        }
    }
}

impl LaneState {
    pub fn new(registry: Registry) -> LaneState {
        LaneState {
            registry,
            fds: PortMap::default(),
            driven: Mutex::new(PortMap::default()),
            pairs: PortMap::default(),
        }
    }

    /// Driven port `key`'s pairs and its switch's threads, if it is a port of several
    /// pairs on a switch of several threads (whose pairs are served one by one).
    pub fn shared_pairs(&self, key: PortKey) -> Option<(&Arc<dyn Pairs>, usize)> {
        if self.pairs.is_empty() {
            return None;
        }
        let pairs = self.pairs.get(&key)?;
        let t = usize::from(self.registry.entry(key)?.switch.threads());
        (t > 1).then_some((pairs, t))
    }

    /// A driven port started (its pairs kept if it offers them) or left.
    pub fn set_driven(
        &mut self,
        key: PortKey,
        port: Option<Box<dyn DrivenPort>>,
    ) -> Option<Box<dyn DrivenPort>> {
        match port {
            Some(p) => {
                match p.pairs() {
                    Some(pairs) => self.pairs.insert(key, pairs),
                    None => self.pairs.remove(&key),
                };
                self.driven_mut().insert(key, p)
            }
            None => {
                self.pairs.remove(&key);
                self.driven_mut().remove(&key)
            }
        }
    }

    /// The driven ports, for the control thread (which holds the lane exclusively).
    pub fn driven_mut(&mut self) -> &mut PortMap<Box<dyn DrivenPort>> {
        self.driven.get_mut().unwrap_or_else(|p| p.into_inner())
    }
}

/// Shared between threads. The forwarding thread and its helpers (for switches of
/// several threads) read-lock the state for one pass at a time; the control thread
/// write-locks it, and raises `ctl_waiting` so that the forwarders step aside promptly.
pub struct Lane {
    state: RwLock<LaneState>,
    /// The helpers' threads (helper `h` is the `h`-th), to unpark and to join; and how
    /// many of them are parked.
    helpers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    parked: std::sync::atomic::AtomicUsize,
    /// Per worker (1-based; helpers not started count as parked): whether helper `h`
    /// is parked, when the lane's thread serves the queue pairs that are `h`'s.
    parked_by: Box<[AtomicBool]>,
    ctl_waiting: AtomicBool,
    /// Per worker (0: the lane's thread, `h`: helper `h`): its loops so far, for the
    /// watchdog ([`Lane::beat`], [`Lane::beats`]).
    beats: Box<[Beat]>,
    /// The lane's thread is going to sleep or asleep in epoll ([`Lane::lane_sleeps`]).
    lane_asleep: AtomicBool,
    pub stop: AtomicBool,
    /// The forwarder's epoll set: kick eventfds of all ports, driven ports' descriptors,
    /// and `wake`.
    pub epoll: Arc<OwnedFd>,
    /// Written to wake the forwarder (new port, a VM's kick, shutdown).
    pub wake: Arc<OwnedFd>,
    started: u64,
    /// What the forwarder publishes for metrics, read without the lock.
    pub stats: Arc<LaneStats>,
}

/// The thread name of worker `worker` (0: the lane's own thread, `h`: its helper `h`)
/// of lane `lane`: `vale-fwd0`, `vale-fwd0.1`.
pub fn worker_name(lane: usize, worker: usize) -> String {
    match worker {
        0 => format!("vale-fwd{lane}"),
        h => format!("vale-fwd{lane}.{h}"),
    }
}

/// A worker's loop count, on a cache line of its own (each worker writes its own at
/// every pass).
#[repr(align(128))]
struct Beat(AtomicU64);

/// One switch's address-table counters as its forwarder last published them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSnap {
    pub switch: String,
    /// The lookup's counters by name (`entries`, `learned`, ...); empty for a lookup
    /// without a table.
    pub counters: Vec<(&'static str, u64)>,
}

/// A forwarding thread's own counters, and its switches' table counters, for readers
/// that must not take the lane's lock (the metrics server). One writer, the forwarder.
#[derive(Debug)]
pub struct LaneStats {
    /// Passes that moved at least one frame (relaxed load and store: one writer).
    pub passes: AtomicU64,
    /// Times the forwarder slept in epoll and woke up.
    pub wakeups: AtomicU64,
    /// A seqlock over the two sleep fields: odd while the forwarder changes them.
    seq: AtomicU64,
    /// Nanoseconds spent asleep in epoll, over the sleeps that ended.
    asleep_ns: AtomicU64,
    /// When the sleep going on now began (ns since `started`, plus 1), 0 when awake.
    asleep_since: AtomicU64,
    /// The most busy time a reader was shown, in ns.
    busy_shown: AtomicU64,
    started: std::time::Instant,
    /// The switches' table counters, published every [`TABLES_EVERY_NS`] while the
    /// forwarder is busy, and each time it goes idle. The forwarder only ever `try_lock`s it: a reader holding it
    /// costs the forwarder one publication, never a wait.
    pub tables: Mutex<Vec<TableSnap>>,
}

/// How often a busy forwarder publishes its switches' table counters.
pub const TABLES_EVERY_NS: u64 = 100_000_000;

impl LaneStats {
    fn new() -> LaneStats {
        LaneStats {
            passes: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            asleep_ns: AtomicU64::new(0),
            asleep_since: AtomicU64::new(0),
            busy_shown: AtomicU64::new(0),
            started: std::time::Instant::now(),
            tables: Mutex::new(Vec::new()),
        }
    }

    fn elapsed_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The forwarder's writes of the sleep fields, inside the seqlock, given the time
    /// read inside it too: read before, a reader between that read and the write could
    /// count the time since as awake, and a later reader as asleep (busy time going back).
    fn write_sleep(&self, f: impl FnOnce(u64, &AtomicU64, &AtomicU64)) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        let now = self.elapsed_ns() + 1;
        f(now, &self.asleep_ns, &self.asleep_since);
        self.seq.store(s + 2, Ordering::Release);
    }

    /// The forwarder: it is about to sleep in epoll.
    pub fn sleep_begins(&self) {
        self.write_sleep(|now, _, since| since.store(now, Ordering::Relaxed));
    }

    /// The forwarder: it woke up.
    pub fn sleep_ends(&self) {
        self.write_sleep(|now, asleep, since| {
            let began = since.load(Ordering::Relaxed);
            if began != 0 {
                let total = asleep.load(Ordering::Relaxed) + now.saturating_sub(began);
                asleep.store(total, Ordering::Relaxed);
            }
            since.store(0, Ordering::Relaxed);
        });
        self.wakeups
            .store(self.wakeups.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Seconds the forwarder was awake (polling or forwarding, not asleep in epoll)
    /// since it started: what its CPU time would be if nothing preempted it. Never less
    /// than what an earlier call returned (a counter does not go back).
    pub fn busy_secs(&self) -> f64 {
        let ns = self.busy_ns();
        let shown = self.busy_shown.fetch_max(ns, Ordering::AcqRel).max(ns);
        shown as f64 / 1e9
    }

    fn busy_ns(&self) -> u64 {
        // The forwarder holds the seqlock for a few instructions twice per sleep; one
        // preempted inside it holds readers up until it runs again: they yield, then
        // sleep, and after about a second leave the sleep in progress out (the value
        // can then be high, never lower than one shown before: `busy_shown`).
        for i in 0..2000u32 {
            let s1 = self.seq.load(Ordering::Acquire);
            let asleep = self.asleep_ns.load(Ordering::Relaxed);
            let since = self.asleep_since.load(Ordering::Relaxed);
            let now = self.elapsed_ns() + 1;
            std::sync::atomic::fence(Ordering::Acquire);
            if s1 % 2 == 1 || self.seq.load(Ordering::Relaxed) != s1 {
                if i < 1000 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                continue;
            }
            let current = if since != 0 {
                now.saturating_sub(since)
            } else {
                0
            };
            return (now - 1).saturating_sub(asleep + current);
        }
        let asleep = self.asleep_ns.load(Ordering::Acquire);
        self.elapsed_ns().saturating_sub(asleep)
    }

    /// Publishes the switches' table counters if no reader holds them now.
    pub fn publish_tables(&self, registry: &Registry) {
        let mut t = match self.tables.try_lock() {
            Ok(t) => t,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        {
            t.clear();
            t.extend(registry.switches().map(|e| {
                TableSnap {
                    switch: e.name.clone(),
                    counters: e
                        .switch
                        .lookup()
                        .table()
                        .map(|t| t.counters())
                        .unwrap_or_default(),
                }
            }));
        }
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a plain memory read in the vDSO (no TSC read),
/// a few milliseconds of resolution, plenty for FDB aging.
pub fn coarse_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

impl Lane {
    pub fn new(state: LaneState, epoll: OwnedFd, wake: OwnedFd) -> Lane {
        Lane {
            state: RwLock::new(state),
            helpers: Mutex::new(Vec::new()),
            parked: std::sync::atomic::AtomicUsize::new(0),
            parked_by: (0..=usize::from(vale_switch::MAX_THREADS))
                .map(|_| AtomicBool::new(true))
                .collect(),
            ctl_waiting: AtomicBool::new(false),
            beats: (0..=usize::from(vale_switch::MAX_THREADS))
                .map(|_| Beat(AtomicU64::new(0)))
                .collect(),
            lane_asleep: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            epoll: Arc::new(epoll),
            wake: Arc::new(wake),
            started: coarse_ns(),
            stats: Arc::new(LaneStats::new()),
        }
    }

    /// For the forwarding thread and its helpers.
    pub fn lock(&self) -> RwLockReadGuard<'_, LaneState> {
        while self.ctl_waiting.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts helpers until this lane (number `index` of `lanes`) has `want` of them,
    /// for switches of up to `want + 1` threads. Helper `h` is pinned to
    /// `cpus[(h * lanes + index) % len]` (after the lanes' own threads), if `cpus` is
    /// not empty.
    pub fn ensure_helpers(
        self: &Arc<Self>,
        want: usize,
        index: usize,
        lanes: usize,
        cpus: &[usize],
        busy: std::time::Duration,
    ) -> std::io::Result<()> {
        let mut hs = self.helpers.lock().unwrap_or_else(|p| p.into_inner());
        while hs.len() < want {
            let h = hs.len() + 1;
            let t = h * lanes + index;
            let cpu = (!cpus.is_empty()).then(|| cpus[t % cpus.len()]);
            let lane = self.clone();
            let th = std::thread::Builder::new()
                .name(worker_name(index, h))
                .spawn(move || {
                    if let Some(c) = cpu {
                        crate::daemon::pin(t, c);
                    }
                    forward::run_helper(lane, h, busy)
                })?;
            hs.push(th);
        }
        Ok(())
    }

    /// After `stop`: wakes the helpers and waits for them to end.
    pub fn join_helpers(&self) {
        let hs = std::mem::take(&mut *self.helpers.lock().unwrap_or_else(|p| p.into_inner()));
        for h in &hs {
            h.thread().unpark();
        }
        for h in hs {
            let _ = h.join();
        }
    }

    /// Worker `worker` (0: the lane's thread) goes round its loop once more: it is
    /// not stuck. Each worker goes round at least once a second however idle (its
    /// sleeps are bounded: 1 s in epoll, 100 ms parked), so one whose count stays put
    /// for longer is held up somewhere (`control::watchdog`).
    pub fn beat(&self, worker: usize) {
        if let Some(Beat(b)) = self.beats.get(worker) {
            b.store(b.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// Each running worker's thread name and loops so far: the lane's thread, then
    /// its helpers.
    pub fn beats(&self, index: usize) -> Vec<(String, u64)> {
        let helpers = self.helpers.lock().unwrap_or_else(|p| p.into_inner()).len();
        (0..=helpers)
            .filter_map(|w| {
                let n = self.beats.get(w)?.0.load(Ordering::Relaxed);
                Some((worker_name(index, w), n))
            })
            .collect()
    }

    /// A helper, idle: parks until woken (or 100 ms, so a lost wake-up costs little).
    pub fn helper_parks(&self) {
        self.parked.fetch_add(1, Ordering::SeqCst);
        std::thread::park_timeout(std::time::Duration::from_millis(100));
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether the calling worker (0: the lane's thread) serves queue pair `i` of a port
    /// on a switch of `threads`: its own (`i % threads`), and the lane's thread also
    /// those of a helper that is parked.
    pub fn serves(&self, worker: usize, i: usize, threads: usize) -> bool {
        let home = i % threads;
        home == worker
            || (worker == 0
                && self
                    .parked_by
                    .get(home)
                    .is_none_or(|p| p.load(Ordering::SeqCst)))
    }

    /// The lane's thread is about to sleep (`true`; it then pushes its driven ports
    /// once more before it sleeps) or woke. A helper forwards into RX rings that only
    /// the lane's thread drains (driven ports served whole, pairs that are the lane's):
    /// after a pass that moved frames it wakes a lane's thread that sleeps
    /// ([`Lane::after_helper_pass`]). Both sides are SeqCst: either the helper sees the
    /// flag, or the lane's last push sees the helper's frames.
    pub fn lane_sleeps(&self, asleep: bool) {
        self.lane_asleep.store(asleep, Ordering::SeqCst);
        // (The ring loads that follow must not pass the store.)
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// A helper's pass moved frames: wakes the lane's thread if it sleeps.
    pub fn after_helper_pass(&self) {
        // (The ring stores before must not pass the load.)
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.lane_asleep.load(Ordering::SeqCst) {
            self.lane_asleep.store(false, Ordering::SeqCst);
            self.wake_forwarder();
        }
    }

    /// Helper `worker` stops (`true`: its pairs are the lane's thread's until it
    /// serves them again) or starts serving its pairs.
    pub fn set_parked(&self, worker: usize, parked: bool) {
        if let Some(p) = self.parked_by.get(worker) {
            p.store(parked, Ordering::SeqCst);
        }
    }

    /// The lane's thread saw work on a switch of several threads: wake parked helpers.
    pub fn wake_helpers(&self) {
        if self.parked.load(Ordering::Relaxed) == 0 {
            return;
        }
        // Never blocks the lane's thread: a control thread starting helpers holds this.
        if let Ok(hs) = self.helpers.try_lock() {
            for h in hs.iter() {
                h.thread().unpark();
            }
        }
    }

    /// For the control thread: get the lock ahead of the forwarder.
    pub fn lock_ctl(&self) -> CtlGuard<'_> {
        self.ctl_waiting.store(true, Ordering::Release);
        let g = self.state.write().unwrap_or_else(|p| p.into_inner());
        CtlGuard {
            g: Some(g),
            lane: self,
        }
    }

    /// Switch time for aging: cheap enough to read once per forwarding pass.
    pub fn now(&self) -> Timestamp {
        Timestamp(coarse_ns().saturating_sub(self.started))
    }

    pub fn wake_forwarder(&self) {
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }

    /// A handle that wakes this lane from any thread.
    pub fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// Registers driven port `key`'s descriptors in this lane's epoll set.
    pub fn watcher(&self, key: PortKey) -> Watcher {
        Watcher::new(self.epoll.clone(), Token::Driven(key).into_u64())
    }
}

pub struct CtlGuard<'a> {
    g: Option<RwLockWriteGuard<'a, LaneState>>,
    lane: &'a Lane,
}

impl std::ops::Deref for CtlGuard<'_> {
    type Target = LaneState;
    fn deref(&self) -> &LaneState {
        self.g.as_ref().expect("guard present until drop")
    }
}

impl std::ops::DerefMut for CtlGuard<'_> {
    fn deref_mut(&mut self) -> &mut LaneState {
        self.g.as_mut().expect("guard present until drop")
    }
}

impl Drop for CtlGuard<'_> {
    fn drop(&mut self) {
        self.g = None;
        self.lane.ctl_waiting.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_seconds_leave_out_sleeps_and_never_go_back() {
        let s = Arc::new(LaneStats::new());
        s.sleep_begins();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let asleep = s.busy_secs();
        s.sleep_ends();
        assert!(asleep < 0.1, "a sleep is not busy time: {asleep}");
        assert_eq!(s.wakeups.load(Ordering::Relaxed), 1);
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(100) {
            std::hint::spin_loop();
        }
        assert!(s.busy_secs() >= asleep + 0.09, "awake time counts");
        // A reader racing a forwarder that sleeps and wakes as fast as it can.
        let w = s.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let writer = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                w.sleep_begins();
                w.sleep_ends();
            }
        });
        let mut last = 0.0;
        for _ in 0..200_000 {
            let now = s.busy_secs();
            assert!(now >= last, "busy seconds went back: {last} -> {now}");
            last = now;
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }

    #[test]
    fn tables_are_published_for_readers_without_the_lane_lock() {
        let limits = vale_switch::Limits::default();
        let mut reg = Registry::new(limits);
        let g = vale_abi::PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            ..Default::default()
        };
        let region = vale_abi::Region::create("vale0:a", g).unwrap();
        reg.open_with("vale0:a", Some(g), Some(region)).unwrap();
        let s = LaneStats::new();
        s.publish_tables(&reg);
        let t = s.tables.lock().unwrap().clone();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].switch, "vale0");
        assert!(
            t[0].counters
                .iter()
                .any(|(n, v)| *n == "entries" && *v == 0)
        );
        // A reader holding the copy: the forwarder skips a publication, never waits.
        let held = s.tables.lock().unwrap();
        s.publish_tables(&Registry::new(limits));
        drop(held);
        assert_eq!(s.tables.lock().unwrap().len(), 1, "skipped, not blocked");
    }

    #[test]
    fn port_keys_of_a_switch_fill_a_table_without_collisions() {
        use std::hash::BuildHasher;
        let b = BuildHasherDefault::<KeyHasher>::default();
        for switch in [0usize, 1, 7, 4095] {
            // The low 8 bits (a 256-bucket table's index) differ for ports 0..256.
            let mut low: Vec<u64> = (0..256u16)
                .map(|p| {
                    b.hash_one(PortKey {
                        switch,
                        port: vale_switch::PortId(p),
                    }) & 0xff
                })
                .collect();
            low.sort_unstable();
            low.dedup();
            assert_eq!(low.len(), 256, "switch {switch}");
        }
        let mut m: PortMap<u32> = PortMap::default();
        for s in 0..4 {
            for p in 0..300u16 {
                let key = PortKey {
                    switch: s,
                    port: vale_switch::PortId(p),
                };
                m.insert(key, (s as u32) << 16 | u32::from(p));
            }
        }
        assert_eq!(m.len(), 1200);
        let k = PortKey {
            switch: 3,
            port: vale_switch::PortId(299),
        };
        assert_eq!(m.get(&k), Some(&(3 << 16 | 299)));
    }
}
