//! The forwarding thread: busy-polls every switch while traffic flows, sleeps in epoll
//! when idle (Snabb's breathe loop, netmap's need_kick): a busy switch runs on shared
//! memory alone, an idle one costs nothing.

use super::{DirectEgress, Lane, TABLES_EVERY_NS, Token};
use crate::port::{DrivenPort, Pairs};
use rustix::event::Timespec;
use rustix::event::epoll;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vale_switch::{Notify, PortKey};

/// `valed --cpus auto`: the thread moves to its own CPU only while it forwards a steady
/// stream (at least [`BUSY_PPS`] over a window of [`BUSY_WINDOW`]), and back to every CPU
/// it may use when the rate has stayed under half that for [`UNPIN_AFTER`]. Pinned, the scheduler moves busy
/// clients off its CPU; unpinned, a wake-up can land on the CPU of whoever woke it (on a
/// VM a wake-up across CPUs costs several times one on the same CPU), so sleeping
/// ping/pong clients keep their latency.
pub struct PinWhenBusy {
    cpu: usize,
    allowed: rustix::thread::CpuSet,
    pinned: bool,
    /// Since when the rate has been under half of `BUSY_PPS`, while pinned.
    low_since: Option<Instant>,
}

const BUSY_PPS: u64 = 1_000_000;
const BUSY_WINDOW: Duration = Duration::from_millis(2);
const UNPIN_AFTER: Duration = Duration::from_millis(200);

impl PinWhenBusy {
    /// For the calling thread (its affinity now is what it returns to).
    pub fn new(cpu: usize) -> Option<PinWhenBusy> {
        let allowed = rustix::thread::sched_getaffinity(None).ok()?;
        Some(PinWhenBusy {
            cpu,
            allowed,
            pinned: false,
            low_since: None,
        })
    }

    /// `pkts` more packets forwarded; decides at the end of each window.
    #[inline]
    fn account(&mut self, pkts: u64, window: &mut (Option<Instant>, u64)) {
        window.1 += pkts;
        let t0 = *window.0.get_or_insert_with(Instant::now);
        let el = t0.elapsed();
        if el < BUSY_WINDOW {
            return;
        }
        let rate = window.1 as f64 / el.as_secs_f64();
        let now = t0 + el;
        if rate >= BUSY_PPS as f64 / 2.0 {
            self.low_since = None;
            if !self.pinned && rate >= BUSY_PPS as f64 {
                self.set(true);
            }
        } else if self.pinned {
            // Unpinned only after a while under half the rate: a stream with pauses
            // (a sender descheduled for milliseconds) must not move the thread to and fro.
            let since = *self.low_since.get_or_insert(t0);
            if now.duration_since(since) >= UNPIN_AFTER {
                self.set(false);
                self.low_since = None;
            }
        }
        *window = (None, 0);
    }

    fn set(&mut self, pin: bool) {
        let set = if pin {
            let mut one = rustix::thread::CpuSet::new();
            one.set(self.cpu);
            one
        } else {
            self.allowed
        };
        match rustix::thread::sched_setaffinity(None, &set) {
            Ok(()) => self.pinned = pin,
            Err(e) => tracing::debug!(cpu = self.cpu, pin, "cannot change affinity: {e}"),
        }
    }
}

pub fn run(shared: Arc<Lane>, busy_poll: Duration, mut when_busy: Option<PinWhenBusy>) {
    // Its sleeps (epoll_wait) take EINTR in their stride: see sys::bounded.
    crate::sys::bounded::tolerate_stray_timer();
    let mut notes: Vec<Notify> = Vec::new();
    let mut fw = vale_switch::Forwarder::new();
    let mut kicked: Vec<vale_switch::PortKey> = Vec::new();
    let mut faults: Vec<vale_switch::PortKey> = Vec::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut idle = super::spin::Idle::default();
    let mut wait_errors = 0u32;
    let mut tables_published: Option<u64> = None;
    // For `when_busy`: the current window (its start, its packets) and the packets not
    // yet counted in it (the clock is read every 8 busy passes, and before sleeping).
    let mut window = (None::<Instant>, 0u64);
    let (mut window_pkts, mut busy_passes) = (0u64, 0u32);
    let mut spin = super::spin::Spin::new(busy_poll);
    while !shared.stop.load(Ordering::Acquire) {
        shared.beat(0);
        let moved = {
            let st = shared.lock();
            let mut driven = st.driven.lock().unwrap_or_else(|p| p.into_inner());
            let now = shared.now();
            let mut moved = 0;
            let mut shared_moved = 0;
            let mut several = false;
            kicked.clear();
            faults.clear();
            // Driven ports: what their peers have goes into their TX rings first, so it
            // crosses the switch in this pass (on a switch of several threads, only the
            // queue pairs this thread serves).
            moved += each_driven(&shared, &st, &mut driven, |q, i| q.pull(i), |_, p| p.pull());
            for (si, e) in st.registry.switches_indexed() {
                let mut egress = DirectEgress {
                    switch: si,
                    driven: &mut driven,
                };
                let m = fw.forward(&e.switch, now, &mut notes, &mut egress);
                if e.switch.threads() > 1 {
                    shared_moved += m;
                    several = true;
                }
                moved += m;
                if !notes.is_empty() {
                    super::notify(&st.fds, si, &notes);
                    notes.clear();
                }
            }
            // ...and what the switch delivered to them goes out to their peers. Which
            // pairs are this thread's is read after the frames it delivered are stored
            // (a helper about to park stores its flag, then pushes once more: either it
            // sees those frames or this thread sees it parked).
            if several && !st.pairs.is_empty() {
                std::sync::atomic::fence(Ordering::SeqCst);
            }
            moved += each_driven(&shared, &st, &mut driven, |q, i| q.push(i), |_, p| p.push());
            // Switches of several threads have work: wake their helpers.
            if shared_moved > 0 {
                shared.wake_helpers();
            }
            if tables_published.is_none_or(|t| now.0.wrapping_sub(t) >= TABLES_EVERY_NS) {
                shared.stats.publish_tables(&st.registry);
                tables_published = Some(now.0);
            }
            moved
        };
        if moved > 0 {
            let passes = &shared.stats.passes;
            passes.store(passes.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            idle.reset();
            if let Some(p) = when_busy.as_mut() {
                window_pkts += moved as u64;
                busy_passes = busy_passes.wrapping_add(1);
                if busy_passes % 8 == 0 {
                    p.account(std::mem::take(&mut window_pkts), &mut window);
                }
            }
            continue;
        }
        let Some(since) = idle.empty_pass(spin.budget()) else {
            continue;
        };
        // Idle: ask every client to kick, look once more, then sleep (at least once a
        // second, so aging runs on an idle switch, or sooner if a port asks).
        let mut wake = Duration::from_secs(1);
        shared.lane_sleeps(true);
        let pending = {
            let st = shared.lock();
            let mut driven = st.driven.lock().unwrap_or_else(|p| p.into_inner());
            // (Every port armed: no short-circuit.)
            let mut pending = st.registry.switches().any(|e| e.switch.arm_kicks());
            // Going idle: what the tables counted since the last publication shows now,
            // not at the next wake-up.
            shared.stats.publish_tables(&st.registry);
            tables_published = Some(shared.now().0);
            let armed = each_driven(
                &shared,
                &st,
                &mut driven,
                |q, i| usize::from(q.arm(i)),
                |_, p| usize::from(p.arm()),
            );
            pending |= armed > 0;
            for p in driven.values_mut() {
                if let Some(d) = p.wake_within() {
                    wake = wake.min(d);
                }
            }
            // What a helper forwarded into driven ports' RX rings before it saw this
            // thread going to sleep goes out now (after that, it wakes this thread).
            let several = |k: PortKey| st.registry.entry(k).is_some_and(|e| e.switch.threads() > 1);
            let late = each_driven(
                &shared,
                &st,
                &mut driven,
                |q, i| q.push(i),
                |k, p| if several(k) { p.push() } else { 0 },
            );
            pending || late > 0
        };
        if !pending {
            if let Some(p) = when_busy.as_mut() {
                p.account(std::mem::take(&mut window_pkts), &mut window);
            }
            events.clear();
            let ts = Timespec {
                tv_sec: wake.as_secs() as i64,
                tv_nsec: i64::from(wake.subsec_nanos()),
            };
            shared.stats.sleep_begins();
            let woke = epoll::wait(
                &*shared.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&ts),
            );
            shared.stats.sleep_ends();
            shared.lane_sleeps(false);
            match woke {
                Ok(_) | Err(rustix::io::Errno::INTR) => wait_errors = 0,
                Err(e) => {
                    // Logged once per run of failures (and every 1000th), and paced: a
                    // call that keeps failing must neither flood the log nor spin.
                    if wait_errors % 1000 == 0 {
                        tracing::error!(error = %e, failures = wait_errors + 1, "epoll_wait failed");
                    }
                    wait_errors = wait_errors.wrapping_add(1);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let mut b = [0u8; 8];
            for ev in &events {
                match Token::from_u64(ev.data.u64()) {
                    Some(Token::Wake) => {
                        let _ = rustix::io::read(&*shared.wake, &mut b);
                    }
                    // A driven port's interface has frames: the next pass reads them.
                    // An error condition stays until handled (below).
                    Some(Token::Driven(k)) => {
                        let flags = ev.flags;
                        if flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
                            faults.push(k);
                        }
                    }
                    Some(Token::Kick(k)) => kicked.push(k),
                    None => {}
                }
            }
        }
        let st = shared.lock();
        let mut driven = st.driven.lock().unwrap_or_else(|p| p.into_inner());
        for k in &faults {
            if let Some(p) = driven.get_mut(k) {
                p.fault();
            }
        }
        for k in &kicked {
            if let Some(f) = st.fds.get(k) {
                // The client shares the file: it may have read the kick itself, after
                // clearing O_NONBLOCK, and a plain read would then wait for the next.
                let _ = crate::sys::read_eventfd_nowait(rustix::fd::AsFd::as_fd(&f.kick));
            }
        }
        for e in st.registry.switches() {
            e.switch.disarm_kicks();
        }
        let disarm = |q: &dyn Pairs, i| {
            q.disarm(i);
            0
        };
        each_driven(&shared, &st, &mut driven, disarm, |_, p| {
            p.disarm();
            0
        });
        drop(driven);
        drop(st);
        if !pending {
            spin.slept(since.elapsed());
        }
        shared.lane_sleeps(false);
        idle.reset();
    }
    tracing::debug!("forwarding thread stops");
}

/// Over the lane's driven ports, for its own thread (worker 0): `pair` on each queue
/// pair it serves of a port of several on a switch of several threads
/// ([`Lane::serves`]), `whole` on every other port; the sum of what they return (each
/// one called: no short-circuit).
fn each_driven(
    shared: &Lane,
    st: &super::LaneState,
    driven: &mut super::PortMap<Box<dyn DrivenPort>>,
    mut pair: impl FnMut(&dyn Pairs, usize) -> usize,
    mut whole: impl FnMut(PortKey, &mut Box<dyn DrivenPort>) -> usize,
) -> usize {
    let mut n = 0;
    for (k, p) in driven.iter_mut() {
        match st.shared_pairs(*k) {
            Some((pairs, t)) => {
                for i in (0..pairs.count()).filter(|&i| shared.serves(0, i, t)) {
                    n += pair(&**pairs, i);
                }
            }
            None => n += whole(*k, p),
        }
    }
    n
}

/// A helper of the lane's forwarding thread: worker `worker` (1-based) of every switch
/// of the lane with more than `worker` threads ([`vale_switch::Switch::set_threads`]).
/// It busy-polls those switches like the lane's own thread, with the queue pairs of
/// their driven ports that are its own ([`Lane::serves`]; other driven ports' frames
/// go through their RX rings), and when idle for `busy_poll` it arms its pairs and
/// parks until the lane's thread sees work on such a switch again (or 100 ms pass);
/// while it is parked, the lane's thread serves its pairs.
pub fn run_helper(shared: Arc<Lane>, worker: usize, busy_poll: Duration) {
    // Its sleeps (thread parking) take EINTR in their stride: see sys::bounded.
    crate::sys::bounded::tolerate_stray_timer();
    let mut notes: Vec<Notify> = Vec::new();
    let mut fw = vale_switch::Forwarder::new();
    let mut idle = super::spin::Idle::default();
    shared.set_parked(worker, false);
    while !shared.stop.load(Ordering::Acquire) {
        shared.beat(worker);
        let moved = {
            let st = shared.lock();
            let now = shared.now();
            let mut moved = 0;
            for (si, e) in st.registry.switches_indexed() {
                let t = usize::from(e.switch.threads());
                if t <= worker {
                    continue;
                }
                moved += own_pairs(&st, si, worker, t, |p, i| p.pull(i));
                moved += fw.forward_worker(
                    &e.switch,
                    worker,
                    now,
                    &mut notes,
                    &mut vale_switch::NoEgress,
                );
                if !notes.is_empty() {
                    super::notify(&st.fds, si, &notes);
                    notes.clear();
                }
                moved += own_pairs(&st, si, worker, t, |p, i| p.push(i));
            }
            moved
        };
        if moved > 0 {
            shared.after_helper_pass();
            idle.reset();
            continue;
        }
        if idle.empty_pass(busy_poll).is_none() {
            continue;
        }
        // Parked, its pairs are the lane's thread's: first marked so (the lane's thread
        // serves them from its next pass), then pushed once more (frames another thread
        // delivered to their RX rings after this one's last push and before it saw the
        // mark: the lane's thread reads the mark only after storing them), then armed
        // (a kick wakes the lane's thread, which serves them and wakes this one): no
        // frame waits for the timeout.
        shared.set_parked(worker, true);
        std::sync::atomic::fence(Ordering::SeqCst);
        let pending = each_own_pair(&shared, worker, |p, i| p.push(i) + usize::from(p.arm(i))) > 0;
        if !pending {
            shared.helper_parks();
        }
        shared.set_parked(worker, false);
        each_own_pair(&shared, worker, |p, i| {
            p.disarm(i);
            0
        });
        idle.reset();
    }
    shared.set_parked(worker, true);
    tracing::debug!(worker, "forwarding helper stops");
}

/// `f` on each queue pair of switch `si` (of `threads`) that is worker `worker`'s own;
/// the sum of what it returns.
fn own_pairs(
    st: &super::LaneState,
    si: usize,
    worker: usize,
    threads: usize,
    mut f: impl FnMut(&dyn Pairs, usize) -> usize,
) -> usize {
    let mut n = 0;
    for (k, p) in &st.pairs {
        if k.switch == si {
            for i in (worker..p.count()).step_by(threads) {
                n += f(&**p, i);
            }
        }
    }
    n
}

/// [`own_pairs`] over every switch of the lane that `worker` serves.
fn each_own_pair(
    shared: &Lane,
    worker: usize,
    mut f: impl FnMut(&dyn Pairs, usize) -> usize,
) -> usize {
    let st = shared.lock();
    let mut n = 0;
    for (si, e) in st.registry.switches_indexed() {
        let t = usize::from(e.switch.threads());
        if t > worker {
            n += own_pairs(&st, si, worker, t, &mut f);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::super::{Lane, LaneState};
    use crate::port::{DrivenPort, Pairs};
    use rustix::event::{EventfdFlags, epoll};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use vale_switch::Registry;

    /// Queue pairs whose peer has `left[i]` frames for pair `i`, one per pull, and who
    /// took each (pair, thread name): the lane's scheduling alone, no peer involved.
    #[derive(Default)]
    struct Work {
        left: [AtomicU64; 2],
        by: Mutex<HashMap<(usize, String), u64>>,
    }

    impl Work {
        fn taken(&self, pair: usize, thread: &str) -> u64 {
            let by = self.by.lock().unwrap();
            by.get(&(pair, thread.to_string())).copied().unwrap_or(0)
        }
    }

    impl Pairs for Work {
        fn count(&self) -> usize {
            2
        }
        fn pull(&self, i: usize) -> usize {
            let took = self.left[i]
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if took {
                let name = std::thread::current().name().unwrap_or("").to_string();
                *self.by.lock().unwrap().entry((i, name)).or_default() += 1;
            }
            usize::from(took)
        }
        fn push(&self, _: usize) -> usize {
            0
        }
        fn arm(&self, i: usize) -> bool {
            self.left[i].load(Ordering::SeqCst) > 0
        }
        fn disarm(&self, _: usize) {}
    }

    /// The port as the lane holds it: on a switch of two threads only its pairs are used.
    struct Port(Arc<dyn Pairs>);

    impl DrivenPort for Port {
        fn pull(&mut self) -> usize {
            panic!("a port of several pairs on a switch of several threads is served by pair")
        }
        fn push(&mut self) -> usize {
            panic!("a port of several pairs on a switch of several threads is served by pair")
        }
        fn pairs(&self) -> Option<Arc<dyn Pairs>> {
            Some(self.0.clone())
        }
    }

    /// A driven port served whole (a TAP, say): counts the lane's looks at its RX ring.
    struct Whole(Arc<AtomicU64>);

    impl DrivenPort for Whole {
        fn pull(&mut self) -> usize {
            0
        }
        fn push(&mut self) -> usize {
            self.0.fetch_add(1, Ordering::SeqCst);
            0
        }
    }

    const BUSY: Duration = Duration::from_micros(200);

    fn wait(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A lane of one switch of two threads with a port of two pairs (`work`) and, with
    /// `whole`, a port served whole; its thread and one helper running, the helper
    /// polling for `helper_busy` before it parks.
    fn lane_with(
        work: Arc<dyn Pairs>,
        whole: Option<Arc<AtomicU64>>,
        helper_busy: Duration,
    ) -> (Arc<Lane>, std::thread::JoinHandle<()>) {
        let mut reg = Registry::new(vale_switch::Limits::default());
        reg.set_threads("vale0", 2).unwrap();
        let g = vale_abi::PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            ..Default::default()
        };
        let mut open = |name: &str| {
            let region = vale_abi::Region::create(name, g).unwrap();
            reg.open_with(name, Some(g), Some(region)).unwrap()
        };
        let (a, b) = (open("vale0:a"), open("vale0:b"));
        let mut st = LaneState::new(reg);
        st.set_driven(a, Some(Box::new(Port(work))));
        if let Some(w) = whole {
            st.set_driven(b, Some(Box::new(Whole(w))));
        }
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let wake =
            rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        epoll::add(
            &ep,
            &wake,
            epoll::EventData::new_u64(super::Token::Wake.into_u64()),
            epoll::EventFlags::IN,
        )
        .unwrap();
        let lane = Arc::new(Lane::new(st, ep, wake));
        let busy = Duration::from_micros(200);
        let l = lane.clone();
        let main = std::thread::Builder::new()
            .name("vale-fwd0".into())
            .spawn(move || super::run(l, busy, None))
            .unwrap();
        lane.ensure_helpers(1, 0, 1, &[], helper_busy).unwrap();
        (lane, main)
    }

    fn stop(lane: Arc<Lane>, main: std::thread::JoinHandle<()>) {
        lane.stop.store(true, Ordering::Release);
        lane.wake_forwarder();
        lane.join_helpers();
        main.join().unwrap();
    }

    /// What a busy helper forwards into a ring only the lane's thread drains (a port
    /// served whole) is not left there while that thread sleeps: each pass of the
    /// helper that moved frames wakes it. (Asleep until its 1 s timeout, it would look
    /// once or twice in the 300 ms below.)
    #[test]
    fn a_helpers_frames_for_the_lanes_rings_wake_the_lanes_thread() {
        let work = Arc::new(Work::default());
        let looks = Arc::new(AtomicU64::new(0));
        let (lane, main) = lane_with(work.clone(), Some(looks.clone()), BUSY);
        // Work for pair 1 only, until the helper (not the lane's thread) serves it.
        work.left[1].store(u64::MAX / 2, Ordering::SeqCst);
        lane.wake_forwarder();
        wait("the helper serves pair 1", || !lane.serves(0, 1, 2));
        // The lane's thread has nothing of its own: it goes to sleep meanwhile.
        std::thread::sleep(Duration::from_millis(50));
        let before = looks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        let seen = looks.load(Ordering::SeqCst) - before;
        let still_helper = !lane.serves(0, 1, 2);
        work.left[1].store(0, Ordering::SeqCst);
        stop(lane, main);
        assert!(still_helper, "the helper kept pair 1");
        assert!(
            seen >= 10,
            "the lane's thread looked at the port {seen} times in 300 ms"
        );
    }

    /// On a switch of two threads, pair 0 is the lane's thread's and pair 1 its
    /// helper's; while the helper is parked, the lane's thread serves pair 1 (and wakes
    /// the helper), so a kick never waits for the helper's timeout.
    #[test]
    fn each_pair_is_served_by_its_own_thread_and_a_parked_helpers_by_the_lane() {
        let work = Arc::new(Work::default());
        let (lane, main) = lane_with(work.clone(), None, BUSY);

        // Both threads running: each takes its own pair.
        for n in &work.left {
            n.store(2_000_000, Ordering::SeqCst);
        }
        lane.wake_forwarder();
        wait("the pairs' frames taken", || {
            work.left.iter().all(|n| n.load(Ordering::SeqCst) == 0)
        });
        assert_eq!(work.taken(0, "vale-fwd0"), 2_000_000, "pair 0: the lane's");
        assert_eq!(work.taken(0, "vale-fwd0.1"), 0, "never the helper's");
        let helper = work.taken(1, "vale-fwd0.1");
        assert!(helper > 0, "the helper served pair 1");
        assert_eq!(helper + work.taken(1, "vale-fwd0"), 2_000_000);

        // The helper parked (so marked): a kick for pair 1 is served by the lane's
        // thread at once. (Retried if the helper's timeout woke it just then.)
        let mut lane_took = 0;
        for _ in 0..3 {
            wait("the helper parks", || lane.serves(0, 1, 2));
            let before = work.taken(1, "vale-fwd0");
            work.left[1].store(1000, Ordering::SeqCst);
            lane.wake_forwarder();
            wait("pair 1's frames taken", || {
                work.left[1].load(Ordering::SeqCst) == 0
            });
            lane_took = work.taken(1, "vale-fwd0") - before;
            if lane_took > 0 {
                break;
            }
        }
        assert!(
            lane_took > 0,
            "the lane's thread served a parked helper's pair"
        );
        stop(lane, main);
    }

    /// Pair 1's RX ring, filled by another thread just after the helper's last push
    /// before it parks (the lane's thread forwarding into it, say): `push(1)` finds
    /// the frame and says when. The helper polls for no time at all, so its 64th empty
    /// pass in a row is its last before parking (`spin::Idle`); the frame lands just
    /// after that pass's look.
    #[derive(Default)]
    struct LateFrame {
        waiting: Mutex<Option<Instant>>,
        looks: AtomicU64,
        waited: Mutex<Vec<Duration>>,
    }

    impl Pairs for LateFrame {
        fn count(&self) -> usize {
            2
        }
        fn pull(&self, _: usize) -> usize {
            0
        }
        fn push(&self, i: usize) -> usize {
            if i != 1 {
                return 0;
            }
            let mut w = self.waiting.lock().unwrap();
            if let Some(t) = w.take() {
                self.waited.lock().unwrap().push(t.elapsed());
                self.looks.store(0, Ordering::SeqCst); // a pass that moved: idle anew
                return 1;
            }
            let helper = std::thread::current().name() == Some("vale-fwd0.1");
            if helper && self.looks.fetch_add(1, Ordering::SeqCst) + 1 == 64 {
                *w = Some(Instant::now());
            }
            0
        }
        fn arm(&self, _: usize) -> bool {
            false // as a TAP queue's: its RX ring is not looked at
        }
        fn disarm(&self, _: usize) {
            self.looks.store(0, Ordering::SeqCst); // after a park: idle anew
        }
    }

    /// A frame delivered to a helper's pair just before the helper parks goes out at
    /// once, not after the helper's 100 ms park (nor the lane's thread's 1 s sleep):
    /// the helper pushes its pairs once more after marking itself parked.
    #[test]
    fn a_frame_for_a_helpers_pair_just_before_it_parks_is_not_left_waiting() {
        let late = Arc::new(LateFrame::default());
        let (lane, main) = lane_with(late.clone(), None, Duration::ZERO);
        wait("five late frames pushed", || {
            late.waited.lock().unwrap().len() >= 5
        });
        stop(lane, main);
        // Left waiting, each would wait out the 100 ms park; four of five in well
        // under that (one may lose its CPU on a busy machine).
        let waited = late.waited.lock().unwrap().clone();
        assert!(
            waited
                .iter()
                .filter(|w| **w < Duration::from_millis(50))
                .count()
                >= 4,
            "frames waited {waited:?}"
        );
    }
}
