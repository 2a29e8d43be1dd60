//! Host ports: ports whose client is valed's own forwarding thread, from creation to
//! removal, for every kind alike (each kind is a `port::Backend`; none is named here).

use super::conn::Held;
use super::{Control, CtlToken};
use crate::error::CtlError;
use crate::port::{self, AfterDetach, Attach, Backend, ControlEvent, PortCounters, Start};
use rustix::event::epoll;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use vale::proto::{HostInfo, PortSpec};
use vale_switch::PortKey;

/// One host port, as the control thread knows it.
pub struct HostPort {
    backend: Box<dyn Backend>,
    counters: Arc<PortCounters>,
    /// The switch port it joins when created with one (QEMU, vhost-user: `valeX:NAME`);
    /// a persistent port gets one with each attach.
    port: Option<String>,
    attached: Option<Attachment>,
    /// Its id among the control thread's tokens (for its control descriptor).
    id: u64,
    /// What made it (`vale-ctl config dump` writes it back).
    spec: PortSpec,
}

/// Where a host port is attached.
pub struct Attachment {
    /// The switch port, `valeX:NAME`.
    pub port: String,
    pub held: Held,
}

/// Host ports by name (an interface's, or the port part of `valeX:NAME`).
#[derive(Default)]
pub struct HostPorts {
    by_name: BTreeMap<String, HostPort>,
    by_id: HashMap<u64, String>,
    next_id: u64,
}

impl HostPorts {
    /// The host port attached as switch port `name`, if any.
    pub fn attached_as(&self, name: &str) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, h)| h.attached.as_ref().is_some_and(|a| a.port == name))
            .map(|(n, _)| n.as_str())
    }

    /// The host port that holds switch port `name`, or has it reserved while it waits
    /// for its peer (a QEMU or vhost-user port whose VM has not connected yet); with
    /// whether it waits.
    pub fn claims(&self, name: &str) -> Option<(&str, bool)> {
        if let Some(h) = self.attached_as(name) {
            return Some((h, false));
        }
        self.made_for(name).filter(|(_, waits)| *waits)
    }

    /// The host port made for switch port `name` that is attached nowhere, with
    /// whether it waits for its peer (else it was detached by hand and kept: a
    /// declared TAP after `vale-ctl -d`).
    fn made_for(&self, name: &str) -> Option<(&str, bool)> {
        self.by_name
            .iter()
            .find(|(_, h)| h.attached.is_none() && h.port.as_deref() == Some(name))
            .map(|(n, h)| (n.as_str(), h.backend.status().waiting))
    }

    /// [`HostPorts::made_for`] `name`, detached by hand and kept.
    fn detached_from(&self, name: &str) -> Option<String> {
        self.made_for(name)
            .filter(|(_, waits)| !*waits)
            .map(|(n, _)| n.to_string())
    }

    /// Where address `mac` (in `vlan`), learned on switch port `port`, lives beyond it,
    /// if `port` is a host port that knows ([`Backend::peer_of`]).
    pub fn peer_of(&self, port: &str, mac: [u8; 6], vlan: Option<u16>) -> Option<port::Peer> {
        let h = self
            .by_name
            .values()
            .find(|h| h.attached.as_ref().is_some_and(|a| a.port == port))?;
        h.backend.peer_of(mac, vlan)
    }

    /// Each host port's name, kind, the switch port it is attached as, and counters
    /// (for the metrics board).
    pub fn metrics_rows(
        &self,
    ) -> impl Iterator<Item = (&str, &'static str, Option<&str>, &Arc<PortCounters>)> {
        self.by_name.iter().map(|(n, h)| {
            (
                n.as_str(),
                h.backend.kind(),
                h.attached.as_ref().map(|a| a.port.as_str()),
                &h.counters,
            )
        })
    }

    /// What `vale-ctl list` shows of each host port after `after`, by name; each is read
    /// (its counters) only when the iterator reaches it.
    pub fn info_after<'a>(&'a self, after: Option<&str>) -> impl Iterator<Item = HostInfo> + 'a {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_string()));
        self.by_name.range((from, Bound::Unbounded)).map(|(n, h)| {
            let status = h.backend.status();
            HostInfo {
                name: n.clone(),
                kind: h.backend.kind().to_string(),
                attached: h.attached.as_ref().map(|a| a.port.clone()),
                waiting: (h.attached.is_none() && status.waiting)
                    .then(|| h.port.clone())
                    .flatten(),
                gone: status.gone || h.counters.gone.load(std::sync::atomic::Ordering::Relaxed),
                about: h.backend.describe(),
                counters: h.counters.snapshot(),
            }
        })
    }
}

/// What the lane must know before a driven port's half runs: its header length (set
/// first, so packets delivered into its RX rings meanwhile have the right header), and
/// the application side of its rings, a TX and an RX ring per pair (one pair for every
/// kind but a vhost-user port of several queue pairs).
fn prepare(
    st: &mut crate::lane::LaneState,
    key: PortKey,
    hdr_len: u16,
) -> Result<Vec<port::PortRings>, CtlError> {
    let vanished = || CtlError::Internal("port vanished".into());
    let e = st.registry.entry_mut(key).ok_or_else(vanished)?;
    e.switch
        .set_hdr_len(key.port, hdr_len)
        .map_err(|e| CtlError::Internal(e.to_string()))?;
    let region = e.switch.port(key.port).ok_or_else(vanished)?.region();
    let g = region.geometry();
    let pairs = g.tx_rings.min(g.rx_rings).max(1);
    (0..pairs)
        .map(|i| {
            match (
                region.ring(vale_abi::Dir::Tx, i),
                region.ring(vale_abi::Dir::Rx, i),
            ) {
                (Some(t), Some(r)) => Ok(port::PortRings {
                    tx: vale_abi::AppRing::new(t),
                    rx: vale_abi::AppRing::new(r),
                }),
                _ => Err(CtlError::Internal("port without rings".into())),
            }
        })
        .collect()
}

/// An interface to attach that is not there (`vale-ctl -a`, a declared `interface`).
fn no_interface(ifname: &str) -> CtlError {
    CtlError::NotFound(format!(
        "no interface {ifname}: create a persistent port with vale-ctl -n {ifname}, or name an existing interface"
    ))
}

impl Control {
    /// Every host port detached and removed (shutdown): their threads stop, TAP
    /// interfaces and socket files disappear.
    pub fn remove_all_hosts(&mut self) {
        let names: Vec<String> = self.hosts.by_name.keys().cloned().collect();
        for n in names {
            self.detach_host(&n);
            self.forget(&n);
        }
    }

    /// The port part of `port` (`valeX:NAME`).
    fn port_part(&self, port: &str) -> Result<String, CtlError> {
        let pn = vale_switch::PortName::parse(port, self.settings.limits.max_name_len)
            .map_err(vale_switch::RegistryError::from)?;
        Ok(pn.port().to_string())
    }

    /// Keeps a new host port and watches its control descriptor, if it has one.
    fn insert(
        &mut self,
        name: &str,
        mut backend: Box<dyn Backend>,
        port: Option<String>,
        spec: &PortSpec,
    ) -> Result<(), CtlError> {
        self.hosts.next_id += 1;
        let id = self.hosts.next_id;
        if let Some(fd) = backend.control_fd() {
            let r = epoll::add(
                &self.ep,
                fd,
                epoll::EventData::new_u64(CtlToken::Host(id).into_u64()),
                epoll::EventFlags::IN,
            );
            if let Err(e) = r {
                // Not kept: the socket file it made goes with it.
                backend.remove();
                return Err(CtlError::Internal(format!("epoll_ctl: {e}")));
            }
        }
        self.hosts.by_id.insert(id, name.to_string());
        self.hosts.by_name.insert(
            name.to_string(),
            HostPort {
                backend,
                counters: Default::default(),
                port,
                attached: None,
                id,
                spec: spec.clone(),
            },
        );
        Ok(())
    }

    /// Removes a host port for good (it is not attached): socket files go, its control
    /// descriptor leaves the control thread's set.
    fn forget(&mut self, name: &str) {
        let Some(mut h) = self.hosts.by_name.remove(name) else {
            return;
        };
        if let Some(fd) = h.backend.control_fd() {
            let _ = epoll::delete(&self.ep, fd);
        }
        self.hosts.by_id.remove(&h.id);
        h.backend.remove();
    }

    /// Joins host port `name` to its switch as `port`: the switch port is opened, the
    /// backend builds its data-plane half (outside the lane's lock), and the lane starts
    /// driving it.
    fn attach_driven(&mut self, name: &str, port: &str) -> Result<(), CtlError> {
        let h = self
            .hosts
            .by_name
            .get(name)
            .ok_or_else(|| CtlError::Internal(format!("host port {name} vanished")))?;
        let at = h.backend.attach();
        let a = self
            .ports
            .acquire(port, h.backend.geometry(&self.settings.limits)?)?;
        if let Err(e) = self.start_driven(name, a.held, at) {
            self.ports.release(a.held);
            return Err(e);
        }
        if let Some(h) = self.hosts.by_name.get_mut(name) {
            h.attached = Some(Attachment {
                port: port.to_string(),
                held: a.held,
            });
            tracing::info!(
                interface = name,
                port,
                kind = h.backend.kind(),
                "host port attached"
            );
        }
        Ok(())
    }

    /// Starts (or starts again: a VM that reconnected) the data-plane half of host port
    /// `name` on switch port `held`.
    fn start_driven(&mut self, name: &str, held: Held, at: Attach) -> Result<(), CtlError> {
        let lane = self.ports.lane(held.lane).clone();
        let key = held.key;
        let mut rings = prepare(&mut lane.lock_ctl(), key, at.hdr_len)?.into_iter();
        let first = rings
            .next()
            .ok_or_else(|| CtlError::Internal("port without rings".into()))?;
        let h = self
            .hosts
            .by_name
            .get_mut(name)
            .ok_or_else(|| CtlError::Internal(format!("host port {name} vanished")))?;
        let driven = h.backend.start(Start {
            rings: first,
            more_rings: rings.collect(),
            counters: h.counters.clone(),
            watcher: lane.watcher(key),
            waker: lane.waker(),
            name,
        })?;
        let old = {
            let mut st = lane.lock_ctl();
            st.registry
                .entry_mut(key)
                .ok_or_else(|| CtlError::Internal("port vanished".into()))?
                .switch
                .set_direct(key.port, at.direct)
                .map_err(|e| CtlError::Internal(e.to_string()))?;
            st.set_driven(key, Some(driven))
        };
        drop(old); // a replaced connection closes outside the lock
        lane.wake_forwarder();
        Ok(())
    }

    /// Takes a host port off its switch (its forwarding thread stops driving it) and
    /// removes its switch port; one that does not outlive that (anything but a
    /// persistent port) is removed too.
    fn detach_host(&mut self, name: &str) {
        let Some(h) = self.hosts.by_name.get_mut(name) else {
            return;
        };
        let Some(a) = h.attached.take() else {
            return;
        };
        let lane = self.ports.lane(a.held.lane).clone();
        let driven = lane.lock_ctl().set_driven(a.held.key, None);
        drop(driven);
        let after = h.backend.stop();
        self.ports.release(a.held);
        if after == AfterDetach::Forget {
            self.forget(name);
        }
        tracing::info!(interface = name, port = %a.port, "host port detached");
    }

    /// A new host port that joins switch port `port` (`vale-ctl qemu-dgram`,
    /// `qemu-stream`, `vhost-user`, and the `create` request for any kind): attached at
    /// once, or when its peer connects.
    pub(super) fn create(&mut self, port: &str, spec: &PortSpec) -> Result<String, CtlError> {
        let name = self.port_part(port)?;
        if let Some(h) = self.hosts.by_name.get(&name) {
            let kind = h.backend.kind();
            return Err(CtlError::Exists(
                match h.attached.as_ref().map(|a| &a.port).or(h.port.as_ref()) {
                    Some(p) if p == port => format!("{port} exists already (a {kind} port)"),
                    Some(p) => format!(
                        "{port}: host port {name} exists already as {p} (a {kind} port; see `vale-ctl list`): the name after `:` names the host port, which joins one switch"
                    ),
                    None => format!(
                        "{port}: host port {name} exists already, attached nowhere (a {kind} port; attach it with vale-ctl -a {port})"
                    ),
                },
            ));
        }
        if self.ports.exists(port) {
            return Err(CtlError::Exists(format!(
                "{port} exists already, a port opened by a client"
            )));
        }
        if matches!(spec, PortSpec::Interface { .. }) && crate::sys::if_index(&name).is_none() {
            return Err(no_interface(&name));
        }
        if let Some(path) = spec.socket() {
            self.check_socket_path(path, matches!(spec, PortSpec::Memif { .. }))?;
        }
        let backend = port::create(&name, spec, &self.settings)?;
        let waits = backend.status().waiting;
        let about = backend.describe();
        self.insert(&name, backend, Some(port.to_string()), spec)?;
        if waits {
            return Ok(format!("{port}: waiting ({about})"));
        }
        if let Err(e) = self.attach_driven(&name, port) {
            self.forget(&name);
            return Err(e);
        }
        Ok(format!("attached {name} as {port} ({about})"))
    }

    /// A socket path valed may create (and replace, if a stale socket is there);
    /// `shared`: the new port may serve on it beside others that share theirs (memif).
    fn check_socket_path(&self, path: &str, shared: bool) -> Result<(), CtlError> {
        let p = Path::new(path);
        if p.as_os_str().is_empty() || p == self.settings.socket {
            return Err(CtlError::BadRequest(format!(
                "`{path}` cannot be a port's socket"
            )));
        }
        if self
            .hosts
            .by_name
            .values()
            .any(|h| h.backend.socket() == Some(p) && !(shared && h.backend.shares_socket()))
        {
            return Err(CtlError::Exists(format!(
                "{path} is already the socket of another port"
            )));
        }
        Ok(())
    }

    /// `vale-ctl -n NAME [--queues N]`: a persistent port.
    pub(super) fn host_create(&mut self, name: &str, queues: u16) -> Result<String, CtlError> {
        if self.hosts.by_name.contains_key(name) {
            return Err(CtlError::Exists(format!(
                "{name} already exists (see `ip link` and `vale-ctl list`)"
            )));
        }
        let spec = PortSpec::Tap { queues };
        let backend = port::create(name, &spec, &self.settings)?;
        self.insert(name, backend, None, &spec)?;
        Ok(format!("created {name}"))
    }

    /// `vale-ctl -r NAME`.
    pub(super) fn host_remove(&mut self, name: &str) -> Result<String, CtlError> {
        match self.hosts.by_name.get(name) {
            None => Err(CtlError::NotFound(format!(
                "{name} is not a persistent port (create one with vale-ctl -n {name})"
            ))),
            Some(h) if !h.backend.persistent() => Err(CtlError::BadRequest(format!(
                "{name} is a {} port, not a persistent port; remove it with vale-ctl -d",
                h.backend.kind()
            ))),
            Some(h) if h.attached.is_some() => {
                let p = h.attached.as_ref().map_or("", |a| a.port.as_str());
                Err(CtlError::Busy(format!(
                    "{name} is attached as {p}; detach it first (vale-ctl -d {p})"
                )))
            }
            Some(_) => {
                self.forget(name);
                tracing::info!(interface = name, "persistent port removed");
                Ok(format!("removed {name}"))
            }
        }
    }

    /// `vale-ctl -a valeX:NAME [--xdp]`: persistent port NAME, or the existing interface
    /// NAME, joins switch valeX.
    pub(super) fn attach(&mut self, port: &str, xdp: bool) -> Result<String, CtlError> {
        let ifname = self.port_part(port)?;
        if let Some(h) = self.hosts.by_name.get(&ifname) {
            if let Some(a) = &h.attached {
                return Err(CtlError::Busy(format!(
                    "{ifname} is already attached as {}",
                    a.port
                )));
            }
            if xdp {
                return Err(CtlError::BadRequest(format!(
                    "--xdp is for existing interfaces; {ifname} is a {} port",
                    h.backend.kind()
                )));
            }
        } else if crate::sys::if_index(&ifname).is_none() {
            return Err(no_interface(&ifname));
        }
        if self.ports.exists(port) {
            return Err(CtlError::Busy(format!(
                "{port} is already a port opened by a client"
            )));
        }
        let new = !self.hosts.by_name.contains_key(&ifname);
        if new {
            let spec = PortSpec::Interface { xdp };
            let backend = port::create(&ifname, &spec, &self.settings)?;
            self.insert(&ifname, backend, None, &spec)?;
        }
        if let Err(e) = self.attach_driven(&ifname, port) {
            if new {
                self.forget(&ifname);
            }
            return Err(e);
        }
        Ok(format!("attached {ifname} as {port}"))
    }

    /// `vale-ctl -d valeX:NAME`.
    pub(super) fn detach(&mut self, port: &str) -> Result<String, CtlError> {
        // A port still waiting for its peer (or one detached by hand and kept).
        let waiting = self.hosts.made_for(port).map(|(n, _)| n.to_string());
        if let Some(n) = waiting {
            self.forget(&n);
            return Ok(format!("removed {port}"));
        }
        let Some(name) = self.hosts.attached_as(port).map(str::to_string) else {
            return Err(CtlError::NotFound(format!(
                "{port} is not an attached interface (see `vale-ctl list`)"
            )));
        };
        self.detach_host(&name);
        Ok(format!("detached {name} from {port}"))
    }

    /// Every host port as a config file would declare it: (switch port, spec), and the
    /// persistent ports that are attached nowhere (a file cannot declare those).
    pub(super) fn host_specs(&self) -> (Vec<(String, PortSpec)>, Vec<String>) {
        let mut declared = Vec::new();
        let mut loose = Vec::new();
        for (name, h) in &self.hosts.by_name {
            match h.attached.as_ref().map(|a| &a.port).or(h.port.as_ref()) {
                Some(p) => {
                    // A persistent TAP attached by `-a` is the file's `tap` port.
                    declared.push((p.clone(), h.spec.clone()));
                }
                None => loose.push(name.clone()),
            }
        }
        declared.sort_by(|a, b| a.0.cmp(&b.0));
        (declared, loose)
    }

    /// Brings the declared ports in step with `want` (at start, and on reload): ports
    /// the file no longer declares, or declares differently, are removed; new ones are
    /// created; the others are not touched. A port declared differently whose new
    /// declaration cannot be made is made again as it was. Returns what was done, a line
    /// each, and the lines of what could not be done.
    pub(super) fn apply_declared(
        &mut self,
        want: &[crate::settings::Declared],
    ) -> (Vec<String>, Vec<String>) {
        let mut done = Vec::new();
        let mut failed = Vec::new();
        let gone: Vec<(String, PortSpec)> = self
            .declared
            .iter()
            .filter(|(p, spec)| !want.iter().any(|d| &d.port == *p && &d.spec == *spec))
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect();
        // What a changed port was, to make it again if its new declaration fails.
        let mut before: BTreeMap<String, PortSpec> = BTreeMap::new();
        for (p, spec) in gone {
            self.declared.remove(&p);
            match self.remove_declared(&p, &spec) {
                Ok(()) => {
                    done.push(format!("removed {p}"));
                    before.insert(p, spec);
                }
                Err(e) => failed.push(format!("could not remove {p}: {e}")),
            }
        }
        let mut kept = 0;
        for d in want {
            if self.declared.get(&d.port) == Some(&d.spec) {
                if self.hosts.claims(&d.port).is_some() {
                    kept += 1;
                    continue;
                }
                // Detached by hand since and kept (a TAP): attached again, as the file
                // says it should be.
                if let Some(name) = self.hosts.detached_from(&d.port) {
                    match self.attach_driven(&name, &d.port) {
                        Ok(()) => done.push(format!("attached {} again (line {})", d.port, d.line)),
                        Err(e) => failed.push(format!(
                            "could not attach {} again (line {}): {e}",
                            d.port, d.line
                        )),
                    }
                    continue;
                }
                // Removed by hand since (`vale-ctl -d`): the file says it should be.
                self.declared.remove(&d.port);
            }
            match self.create(&d.port, &d.spec) {
                Ok(_) => {
                    self.declared.insert(d.port.clone(), d.spec.clone());
                    done.push(format!("created {} (line {})", d.port, d.line));
                }
                Err(e) => {
                    let mut line = format!("could not create {} (line {}): {e}", d.port, d.line);
                    if let Some(old) = before.remove(&d.port) {
                        match self.create(&d.port, &old) {
                            Ok(_) => {
                                line.push_str("; made again as it was declared before");
                                self.declared.insert(d.port.clone(), old);
                            }
                            Err(e) => {
                                line.push_str(&format!(", nor made again as it was: {e}"));
                            }
                        }
                    }
                    failed.push(line);
                }
            }
        }
        done.push(format!("{kept} declared port(s) unchanged"));
        (done, failed)
    }

    /// A declared port goes: detached (or no longer waited for), and a TAP it made is
    /// removed with it.
    fn remove_declared(&mut self, port: &str, spec: &PortSpec) -> Result<(), CtlError> {
        let name = self.port_part(port)?;
        let attached = self.hosts.attached_as(port).is_some()
            || self
                .hosts
                .by_name
                .get(&name)
                .is_some_and(|h| h.port.as_deref() == Some(port));
        if attached {
            self.detach(port)?;
        }
        // Only the TAP made for this declaration: one of that name made since by hand
        // (`vale-ctl -n`, attached elsewhere or nowhere) is not the file's to remove.
        let made_for_it = self.hosts.made_for(port).is_some_and(|(n, _)| n == name);
        if matches!(spec, PortSpec::Tap { .. }) && made_for_it {
            self.forget(&name);
        }
        Ok(())
    }

    /// A descriptor watched for host port `id` is readable: a peer connected. The port
    /// is attached with it, or (a VM that restarted) its driver starts again on it.
    pub(super) fn host_ready(&mut self, id: u64) {
        let Some(name) = self.hosts.by_id.get(&id).cloned() else {
            return;
        };
        let Some(h) = self.hosts.by_name.get_mut(&name) else {
            return;
        };
        if h.backend.control_ready() != ControlEvent::Connected {
            return;
        }
        let at = h.backend.attach();
        match (h.attached.as_ref().map(|a| a.held), h.port.clone()) {
            (Some(held), _) => match self.start_driven(&name, held, at) {
                Ok(()) => tracing::info!(port = %name, "peer reconnected"),
                Err(e) => tracing::warn!(port = %name, "cannot take the new connection: {e}"),
            },
            (None, Some(port)) => {
                if let Err(e) = self.attach_driven(&name, &port) {
                    tracing::warn!(port, "cannot attach the new connection: {e}");
                }
            }
            (None, None) => {}
        }
    }
}
