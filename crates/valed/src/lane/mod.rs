//! A lane: one forwarding thread, the switches it owns, its epoll set and its lock,
//! shared by the control thread (which adds and removes ports) and the forwarder.

mod egress;
pub mod forward;
mod token;

pub use token::Token;

use crate::port::{DrivenPort, Waker, Watcher};
pub use egress::DirectEgress;
use rustix::fd::OwnedFd;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use vale_switch::{PortKey, Registry, Timestamp};

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
            let _ = rustix::io::write(f, &1u64.to_ne_bytes());
        }
    }
}

/// What the lane's lock guards: its switches, the eventfds of their ports, and the
/// ports its forwarding thread drives itself.
pub struct LaneState {
    pub registry: Registry,
    pub fds: HashMap<PortKey, PortFds>,
    /// Ports of this lane's switches whose client is its forwarding thread (host ports,
    /// VMs): their data-plane halves.
    pub driven: HashMap<PortKey, Box<dyn DrivenPort>>,
}

/// Wakes the clients the engine asked to wake (`Notify`s of switch `si`).
pub fn notify(fds: &HashMap<PortKey, PortFds>, si: usize, notes: &[vale_switch::Notify]) {
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
            fds: HashMap::new(),
            driven: HashMap::new(),
        }
    }
}

/// Shared between threads. The forwarding thread takes the lock for one pass at a time;
/// the control thread raises `ctl_waiting` so the forwarder steps aside promptly.
pub struct Lane {
    state: Mutex<LaneState>,
    ctl_waiting: AtomicBool,
    pub stop: AtomicBool,
    /// The forwarder's epoll set: kick eventfds of all ports, driven ports' descriptors,
    /// and `wake`.
    pub epoll: Arc<OwnedFd>,
    /// Written to wake the forwarder (new port, a VM's kick, shutdown).
    pub wake: Arc<OwnedFd>,
    started: u64,
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
            state: Mutex::new(state),
            ctl_waiting: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            epoll: Arc::new(epoll),
            wake: Arc::new(wake),
            started: coarse_ns(),
        }
    }

    /// For the forwarding thread.
    pub fn lock(&self) -> MutexGuard<'_, LaneState> {
        while self.ctl_waiting.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// For the control thread: get the lock ahead of the forwarder.
    pub fn lock_ctl(&self) -> CtlGuard<'_> {
        self.ctl_waiting.store(true, Ordering::Release);
        let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
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
    g: Option<MutexGuard<'a, LaneState>>,
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
