//! The control thread: one epoll loop over the listening socket, the client connections
//! and the descriptors host ports ask it to watch, answering requests in order.
//!
//! - `conn`: connections, what their peers may do, replies;
//! - `dispatch`: a request to its handler, through one permission gate;
//! - `ports`: the port table across lanes (open, release, attach a driven port);
//! - `hosts`: ports valed drives itself (TAP, interfaces, QEMU, vhost-user);
//! - `query`: list, stats, fdb and settings, rendered from snapshots.

mod conn;
pub(crate) mod dispatch;
mod hosts;
mod ports;
mod query;

use crate::error::StartError;
use crate::lane::Lane;
use crate::settings::Settings;
use conn::Conns;
use hosts::HostPorts;
use ports::PortTable;
use rustix::event::{Timespec, epoll};
use rustix::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use vale::proto;

/// Callback the binary gives to change log verbosity at run time.
pub type SetVerbosity = Box<dyn Fn(u8) + Send>;

/// The epoll data of one descriptor in the control thread's set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CtlToken {
    /// The control socket: a client is connecting.
    Listener,
    /// A client connection, by id.
    Conn(u64),
    /// A descriptor a host port asked the control thread to watch (a QEMU stream
    /// port's listener), by the host port's id.
    Host(u64),
}

const TAG_SHIFT: u32 = 62;

impl CtlToken {
    fn into_u64(self) -> u64 {
        let id = |tag: u64, v: u64| tag << TAG_SHIFT | (v & ((1 << TAG_SHIFT) - 1));
        match self {
            CtlToken::Listener => 0,
            CtlToken::Conn(c) => id(1, c),
            CtlToken::Host(h) => id(2, h),
        }
    }

    fn from_u64(d: u64) -> Option<CtlToken> {
        let v = d & ((1 << TAG_SHIFT) - 1);
        match d >> TAG_SHIFT {
            0 if d == 0 => Some(CtlToken::Listener),
            1 => Some(CtlToken::Conn(v)),
            2 => Some(CtlToken::Host(v)),
            _ => None,
        }
    }
}

/// Everything the control thread owns.
pub struct Control {
    ports: PortTable,
    settings: Settings,
    conns: Conns,
    hosts: HostPorts,
    set_verbosity: SetVerbosity,
    /// The control thread's epoll set (connections, the listener, host ports' sockets).
    ep: OwnedFd,
    /// A descriptor kept in reserve: when the process runs out, it is closed so that a
    /// pending connection can be accepted and turned away, instead of the listener
    /// staying readable and the control thread spinning on EMFILE.
    spare: Option<OwnedFd>,
    /// When running out of descriptors was last logged (at most once a second).
    emfile_logged: Option<std::time::Instant>,
    /// What the metrics server reads (with `--metrics`), and a digest of the ports it
    /// was last given, so that it is republished only when they change.
    metrics: Option<(Arc<crate::metrics::Board>, u64)>,
}

impl Control {
    pub fn new(
        lanes: Vec<Arc<Lane>>,
        settings: Settings,
        set_verbosity: SetVerbosity,
    ) -> Result<Control, StartError> {
        Ok(Control {
            ports: PortTable::new(lanes, settings.limits, ports::Quota::of(&settings)),
            settings,
            conns: Conns::default(),
            hosts: HostPorts::default(),
            set_verbosity,
            ep: epoll::create(epoll::CreateFlags::CLOEXEC)
                .map_err(|e| StartError::Os("epoll_create", e.into()))?,
            spare: spare_fd(),
            emfile_logged: None,
            metrics: None,
        })
    }

    /// Keeps `board` told which ports exist (see `metrics`).
    pub fn share_metrics(&mut self, board: Arc<crate::metrics::Board>) {
        self.metrics = Some((board, 0));
        self.publish_metrics();
    }

    /// Republishes the ports to the metrics board if they changed since the last time:
    /// a walk over the port table and the host ports, hashing what a scrape shows.
    fn publish_metrics(&mut self) {
        use std::hash::{Hash, Hasher};
        let Some((board, last)) = &self.metrics else {
            return;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (lane, key, e) in self.ports.board() {
            (lane, key.switch, key.port.0, Arc::as_ptr(&e.counters)).hash(&mut h);
        }
        for (name, kind, attached, counters) in self.hosts.metrics_rows() {
            (name, kind, attached, Arc::as_ptr(counters)).hash(&mut h);
        }
        let digest = h.finish() | 1;
        if digest == *last {
            return;
        }
        let board = board.clone();
        let kinds: std::collections::HashMap<&str, &str> = self
            .hosts
            .metrics_rows()
            .filter_map(|(_, kind, attached, _)| Some((attached?, kind)))
            .collect();
        let ports = self
            .ports
            .board()
            .map(|(_, _, e)| crate::metrics::PortRow {
                switch: e.switch.clone(),
                port: e.name.clone(),
                kind: match kinds.get(e.name.as_str()) {
                    Some(k) => k.to_string(),
                    None if e.name.contains('/') => "monitor".into(),
                    None => "client".into(),
                },
                counters: e.counters.clone(),
            })
            .collect();
        let hosts = self
            .hosts
            .metrics_rows()
            .map(|(name, kind, _, counters)| crate::metrics::HostRow {
                name: name.to_string(),
                kind: kind.to_string(),
                counters: counters.clone(),
            })
            .collect();
        board.publish(crate::metrics::Snapshot { ports, hosts });
        self.metrics = Some((board, digest));
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Serves requests until `stop` is set.
    pub fn serve(&mut self, listener: &OwnedFd, stop: &AtomicBool) -> Result<(), StartError> {
        epoll::add(
            &self.ep,
            listener,
            epoll::EventData::new_u64(CtlToken::Listener.into_u64()),
            epoll::EventFlags::IN,
        )
        .map_err(|e| StartError::Os("epoll_ctl", e.into()))?;
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        let mut buf = vec![0u8; proto::MAX_MSG];
        let mut last_sweep = std::time::Instant::now();
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        while !stop.load(Ordering::Relaxed) {
            events.clear();
            match epoll::wait(
                &self.ep,
                rustix::buffer::spare_capacity(&mut events),
                Some(&tick),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(StartError::Os("epoll_wait", e.into())),
            }
            for ev in events.clone() {
                match CtlToken::from_u64(ev.data.u64()) {
                    Some(CtlToken::Listener) => self.accept(listener),
                    Some(CtlToken::Conn(id)) => self.ready(id, &mut buf),
                    Some(CtlToken::Host(id)) => self.host_ready(id),
                    None => {}
                }
            }
            self.publish_metrics();
            if last_sweep.elapsed().as_secs() >= 1 {
                last_sweep = std::time::Instant::now();
                self.close_silent();
            }
        }
        Ok(())
    }
}

/// A descriptor to hold in reserve (see `Control::spare`).
fn spare_fd() -> Option<OwnedFd> {
    rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_tokens_round_trip_and_stay_apart() {
        let all = [
            CtlToken::Listener,
            CtlToken::Conn(1),
            CtlToken::Conn((1 << 62) - 1),
            CtlToken::Host(0),
            CtlToken::Host(77),
        ];
        for t in all {
            assert_eq!(CtlToken::from_u64(t.into_u64()), Some(t), "{t:?}");
        }
        assert_eq!(CtlToken::from_u64(3 << 62), None);
        assert_ne!(CtlToken::Conn(5).into_u64(), CtlToken::Host(5).into_u64());
    }
}
