//! The forwarding thread: busy-polls every switch while traffic flows, sleeps in epoll
//! when idle (Snabb's breathe loop, netmap's need_kick): a busy switch runs on shared
//! memory alone, an idle one costs nothing.

use crate::state::Shared;
use rustix::event::Timespec;
use rustix::event::epoll;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use vale_switch::Notify;

/// Epoll data of the wake eventfd; kick fds carry `1 + switch << 16 | port`, host-port
/// devices the same with `HOST` set.
pub const WAKE: u64 = 0;
pub const HOST: u64 = 1 << 63;

pub fn key_data(k: vale_switch::PortKey) -> u64 {
    1 + ((k.switch as u64) << 16 | k.port.0 as u64)
}

/// The port of an epoll key (`key_data`, without the `HOST` bit).
fn port_key(d: u64) -> vale_switch::PortKey {
    vale_switch::PortKey {
        switch: ((d - 1) >> 16) as usize,
        port: vale_switch::PortId(((d - 1) & 0xffff) as u16),
    }
}

pub fn run(shared: Arc<Shared>, busy_poll: Duration) {
    let mut notes: Vec<Notify> = Vec::new();
    let mut fw = vale_switch::Forwarder::new();
    let mut wake_fds: Vec<u64> = Vec::new();
    let mut host_errors: Vec<u64> = Vec::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut idle_since: Option<Instant> = None;
    let mut empty_passes = 0u32;
    while !shared.stop.load(Ordering::Acquire) {
        let moved = {
            let mut st = shared.lock();
            let now = shared.now();
            let mut moved = 0;
            wake_fds.clear();
            host_errors.clear();
            let st = &mut *st;
            // Host ports: what their interfaces have goes into their TX rings first,
            // so it crosses the switch in this pass.
            for h in st.hosts.values_mut() {
                moved += h.pull(&shared.epoll);
            }
            for v in st.vhosts.values_mut() {
                moved += v.pull();
            }
            for (si, e) in st.registry.switches_indexed_mut() {
                let mut egress = crate::host::HostEgress {
                    switch: si,
                    hosts: &st.hosts,
                    vhosts: &st.vhosts,
                };
                moved += fw.forward(&mut e.switch, now, &mut notes, &mut egress);
                for n in notes.drain(..) {
                    let key = vale_switch::PortKey {
                        switch: si,
                        port: n.port,
                    };
                    if let Some(f) = st.fds.get(&key) {
                        let _ = rustix::io::write(&f.notify, &1u64.to_ne_bytes());
                    }
                }
            }
            // ...and what the switch delivered to them goes out to their interfaces.
            for h in st.hosts.values_mut() {
                moved += h.push(&shared.epoll);
            }
            for v in st.vhosts.values_mut() {
                moved += v.push();
            }
            moved
        };
        if moved > 0 {
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
        if since.elapsed() < busy_poll {
            std::hint::spin_loop();
            continue;
        }
        // Idle: ask every client to kick, look once more, then sleep.
        let pending = {
            let st = shared.lock();
            // (Every port armed: no short-circuit.)
            let mut pending = st.registry.switches().any(|e| e.switch.arm_kicks());
            for v in st.vhosts.values() {
                pending |= v.arm();
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
            match epoll::wait(
                &shared.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&ts),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => tracing::error!("epoll_wait failed: {e}"),
            }
            let mut b = [0u8; 8];
            for ev in &events {
                let d = ev.data.u64();
                if d == WAKE {
                    let _ = rustix::io::read(&shared.wake, &mut b);
                } else if d & HOST != 0 {
                    // A host port's interface has frames: the next pass reads them.
                    // An error condition stays until handled (below).
                    let flags = ev.flags;
                    if flags.intersects(epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
                        host_errors.push(d & !HOST);
                    }
                } else {
                    wake_fds.push(d);
                }
            }
        }
        let mut st = shared.lock();
        for &d in &host_errors {
            if let Some(h) = st.hosts.get_mut(&port_key(d)) {
                h.device_error(&shared.epoll);
            }
        }
        for d in &wake_fds {
            if let Some(f) = st.fds.get(&port_key(*d)) {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&f.kick, &mut b);
            }
        }
        for e in st.registry.switches() {
            e.switch.disarm_kicks();
        }
        for v in st.vhosts.values() {
            v.disarm();
        }
        drop(st);
        idle_since = None;
        empty_passes = 0;
    }
    tracing::debug!("forwarding thread stops");
}
