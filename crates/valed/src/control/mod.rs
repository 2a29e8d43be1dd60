//! The control thread: one epoll loop over the listening socket, the client connections
//! and the descriptors host ports ask it to watch, answering requests in order.
//!
//! - `conn`: connections, what their peers may do, replies;
//! - `dispatch`: a request to its handler, through one permission gate;
//! - `ports`: the port table across lanes (open, release, attach a driven port);
//! - `hosts`: ports valed drives itself (TAP, interfaces, QEMU, vhost-user);
//! - `query`: list, stats, fdb and settings, rendered from snapshots;
//! - `vlan`: VLAN settings of switches and ports (`vale-ctl vlan`, `[[vlan]]`);
//! - `metrics`: the snapshot of ports the metrics server reads.

mod conn;
pub(crate) mod dispatch;
mod hosts;
mod metrics;
mod ports;
mod query;
mod vlan;
mod watchdog;

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
    /// The listener is out of the epoll set: out of descriptors, with none in reserve.
    listener_paused: bool,
    /// When running out of descriptors was last logged (at most once a second).
    emfile_logged: Option<std::time::Instant>,
    /// Ports the config file declared and valed created: switch port -> spec.
    declared: std::collections::BTreeMap<String, proto::PortSpec>,
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
            listener_paused: false,
            emfile_logged: None,
            declared: Default::default(),
            metrics: None,
        })
    }

    /// Creates the ports the settings' config file declares (at start).
    pub fn create_declared(&mut self) {
        let vlans = self.settings.vlans.clone();
        for line in self.apply_vlans(&vlans) {
            tracing::info!("config: {line}");
        }
        let want = self.settings.ports.clone();
        if want.is_empty() {
            return;
        }
        let (done, failed) = self.apply_declared(&want);
        for line in done {
            tracing::info!("config: {line}");
        }
        for line in failed {
            tracing::error!("config: {line}");
        }
    }

    /// Reads the config file again and applies its `[[port]]` and `[[vlan]]`
    /// declarations (SIGHUP, `vale-ctl reload`). Other settings take effect at the next
    /// start, except those `vale-ctl set` changes at run time. Nothing changes if the
    /// file has an error.
    pub fn reload(&mut self) -> Result<String, crate::error::CtlError> {
        let Some(path) = self.settings.config.clone() else {
            return Err(crate::error::CtlError::BadRequest(
                "valed was started without --config: there is no file to reload".into(),
            ));
        };
        let file = crate::settings::ConfigFile::load_trusted(
            &path,
            Some(self.settings.limits.max_name_len),
        )
        .map_err(|e| crate::error::CtlError::BadRequest(e.to_string()))?;
        let mut check = self.settings.clone();
        file.apply(&mut check)
            .and_then(|()| check.validate())
            .map_err(|e| crate::error::CtlError::BadRequest(e.to_string()))?;
        let mut lines = self.apply_vlans(&file.vlans);
        let (done, failed) = self.apply_declared(&file.ports);
        lines.extend(done);
        self.settings.ports = file.ports;
        self.settings.vlans = file.vlans;
        for l in &lines {
            tracing::info!("config reload: {l}");
        }
        for l in &failed {
            tracing::error!("config reload: {l}");
        }
        if !failed.is_empty() {
            return Err(crate::error::CtlError::Unapplied(format!(
                "reloaded {} but not all of it:\n  {}\ndone:\n  {}",
                path.display(),
                failed.join("\n  "),
                lines.join("\n  ")
            )));
        }
        Ok(format!(
            "reloaded {}:\n  {}\n(settings other than [[port]] and [[vlan]] take effect when valed starts again; `vale-ctl set` changes bridge_batch and verbose now)",
            path.display(),
            lines.join("\n  ")
        ))
    }

    /// `vale-ctl config dump`: the running state as a config file that recreates it.
    pub fn dump(&self) -> String {
        let proto::Response::Settings { settings } =
            query::settings(&self.settings, self.ports.lanes().len())
        else {
            return String::new();
        };
        crate::settings::dump(&settings, &self.host_specs(), &self.vlan_settings())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Serves requests until `stop` is set.
    pub fn serve(
        &mut self,
        listener: &OwnedFd,
        stop: &AtomicBool,
        reload: &AtomicBool,
    ) -> Result<(), StartError> {
        self.watch_listener(listener)
            .map_err(|e| StartError::Os("epoll_ctl", e.into()))?;
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        let mut buf = vec![0u8; proto::MAX_MSG];
        let mut last_sweep = std::time::Instant::now();
        let mut dog = watchdog::Watchdog::from_env();
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
            self.resume_listener(listener);
            self.publish_metrics();
            if reload.swap(false, Ordering::AcqRel) {
                match self.reload() {
                    Ok(m) => tracing::info!("SIGHUP: {m}"),
                    Err(e @ crate::error::CtlError::Unapplied(_)) => {
                        tracing::error!("SIGHUP: {e}")
                    }
                    Err(e) => tracing::error!("SIGHUP: config not reloaded: {e}"),
                }
            }
            if last_sweep.elapsed().as_secs() >= 1 {
                last_sweep = std::time::Instant::now();
                self.close_silent();
            }
            if let Some(d) = dog.as_mut() {
                d.tick(self.ports.lanes());
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
