//! The forwarding thread: busy-polls every switch while traffic flows, sleeps in epoll
//! when idle (Snabb's breathe loop, netmap's need_kick): a busy switch runs on shared
//! memory alone, an idle one costs nothing.

use super::{DirectEgress, Lane, TABLES_EVERY_NS, Token};
use rustix::event::Timespec;
use rustix::event::epoll;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vale_switch::Notify;

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
        let moved = {
            let st = shared.lock();
            let mut driven = st.driven.lock().unwrap_or_else(|p| p.into_inner());
            let now = shared.now();
            let mut moved = 0;
            let mut shared_moved = 0;
            kicked.clear();
            faults.clear();
            // Driven ports: what their peers have goes into their TX rings first, so it
            // crosses the switch in this pass.
            for p in driven.values_mut() {
                moved += p.pull();
            }
            for (si, e) in st.registry.switches_indexed() {
                let mut egress = DirectEgress {
                    switch: si,
                    driven: &mut driven,
                };
                let m = fw.forward(&e.switch, now, &mut notes, &mut egress);
                if e.switch.threads() > 1 {
                    shared_moved += m;
                }
                moved += m;
                if !notes.is_empty() {
                    super::notify(&st.fds, si, &notes);
                    notes.clear();
                }
            }
            // ...and what the switch delivered to them goes out to their peers.
            for p in driven.values_mut() {
                moved += p.push();
            }
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
        let pending = {
            let st = shared.lock();
            let mut driven = st.driven.lock().unwrap_or_else(|p| p.into_inner());
            // (Every port armed: no short-circuit.)
            let mut pending = st.registry.switches().any(|e| e.switch.arm_kicks());
            // Going idle: what the tables counted since the last publication shows now,
            // not at the next wake-up.
            shared.stats.publish_tables(&st.registry);
            tables_published = Some(shared.now().0);
            for p in driven.values_mut() {
                pending |= p.arm();
                if let Some(d) = p.wake_within() {
                    wake = wake.min(d);
                }
            }
            pending
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
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&f.kick, &mut b);
            }
        }
        for e in st.registry.switches() {
            e.switch.disarm_kicks();
        }
        for p in driven.values_mut() {
            p.disarm();
        }
        drop(driven);
        drop(st);
        if !pending {
            spin.slept(since.elapsed());
        }
        idle.reset();
    }
    tracing::debug!("forwarding thread stops");
}

/// A helper of the lane's forwarding thread: worker `worker` (1-based) of every switch
/// of the lane with more than `worker` threads ([`vale_switch::Switch::set_threads`]).
/// It busy-polls those switches like the lane's own thread, with no driven ports (their
/// frames go through the RX rings), and when idle for `busy_poll` it parks until the
/// lane's thread sees work on such a switch again (or 100 ms pass).
pub fn run_helper(shared: Arc<Lane>, worker: usize, busy_poll: Duration) {
    let mut notes: Vec<Notify> = Vec::new();
    let mut fw = vale_switch::Forwarder::new();
    let mut idle = super::spin::Idle::default();
    while !shared.stop.load(Ordering::Acquire) {
        let moved = {
            let st = shared.lock();
            let now = shared.now();
            let mut moved = 0;
            for (si, e) in st.registry.switches_indexed() {
                if usize::from(e.switch.threads()) <= worker {
                    continue;
                }
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
            }
            moved
        };
        if moved > 0 {
            idle.reset();
            continue;
        }
        if idle.empty_pass(busy_poll).is_none() {
            continue;
        }
        shared.helper_parks();
        idle.reset();
    }
    tracing::debug!(worker, "forwarding helper stops");
}
