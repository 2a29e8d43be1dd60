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

pub fn run(shared: Arc<Lane>, busy_poll: Duration) {
    let mut notes: Vec<Notify> = Vec::new();
    let mut fw = vale_switch::Forwarder::new();
    let mut kicked: Vec<vale_switch::PortKey> = Vec::new();
    let mut faults: Vec<vale_switch::PortKey> = Vec::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut idle_since: Option<Instant> = None;
    let mut empty_passes = 0u32;
    let mut wait_errors = 0u32;
    let mut tables_published: Option<u64> = None;
    let mut spin = super::spin::Spin::new(busy_poll);
    while !shared.stop.load(Ordering::Acquire) {
        let moved = {
            let mut st = shared.lock();
            let now = shared.now();
            let mut moved = 0;
            kicked.clear();
            faults.clear();
            let st = &mut *st;
            // Driven ports: what their peers have goes into their TX rings first, so it
            // crosses the switch in this pass.
            for p in st.driven.values_mut() {
                moved += p.pull();
            }
            for (si, e) in st.registry.switches_indexed_mut() {
                let mut egress = DirectEgress {
                    switch: si,
                    driven: &mut st.driven,
                };
                moved += fw.forward(&mut e.switch, now, &mut notes, &mut egress);
                if !notes.is_empty() {
                    super::notify(&st.fds, si, &notes);
                    notes.clear();
                }
            }
            // ...and what the switch delivered to them goes out to their peers.
            for p in st.driven.values_mut() {
                moved += p.push();
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
            idle_since = None;
            empty_passes = 0;
            continue;
        }
        // Read the clock only every 64 empty passes: a pass over idle rings costs tens of
        // nanoseconds, a precise clock read about as much.
        empty_passes = empty_passes.wrapping_add(1);
        if empty_passes % 64 != 0 {
            std::hint::spin_loop();
            continue;
        }
        // A client woken on this CPU (by a notify just sent) runs now rather than when
        // the scheduler next preempts this busy thread.
        std::thread::yield_now();
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < spin.budget() {
            std::hint::spin_loop();
            continue;
        }
        // Idle: ask every client to kick, look once more, then sleep.
        let pending = {
            let mut st = shared.lock();
            // (Every port armed: no short-circuit.)
            let mut pending = st.registry.switches().any(|e| e.switch.arm_kicks());
            // Going idle: what the tables counted since the last publication shows now,
            // not at the next wake-up.
            shared.stats.publish_tables(&st.registry);
            tables_published = Some(shared.now().0);
            for p in st.driven.values_mut() {
                pending |= p.arm();
            }
            pending
        };
        if !pending {
            events.clear();
            // Wake at least once a second so aging runs on an idle switch.
            let ts = Timespec {
                tv_sec: 1,
                tv_nsec: 0,
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
        let mut st = shared.lock();
        for k in &faults {
            if let Some(p) = st.driven.get_mut(k) {
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
        for p in st.driven.values_mut() {
            p.disarm();
        }
        drop(st);
        if !pending {
            spin.slept(since.elapsed());
        }
        idle_since = None;
        empty_passes = 0;
    }
    tracing::debug!("forwarding thread stops");
}
