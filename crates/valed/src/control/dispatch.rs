//! A request to its handler: one arm per request, one permission gate in front of
//! everything that touches the host's network, and the open of a client's port.

use super::Control;
use super::conn::Reply;
use super::ports::{Wants, Who};
use super::query;
use crate::error::CtlError;
use vale::proto::{self, GeometryRequest, PortSpec, Request, Response};
use vale_abi::PortGeometry;

/// Requests that create or attach network interfaces (or sockets valed serves VMs on).
fn touches_host(req: &Request) -> bool {
    matches!(
        req,
        Request::HostCreate { .. }
            | Request::HostRemove { .. }
            | Request::Attach { .. }
            | Request::Detach { .. }
            | Request::Create { .. }
            | Request::QemuDgram { .. }
            | Request::QemuStream { .. }
            | Request::VhostUser { .. }
            | Request::Reload
    )
}

/// `valeX:p{ID` / `valeX:p}ID` as (`valeX:p`, `ID`, slave); `None` for other names.
/// The id is an identifier, as in netmap (`[A-Za-z0-9_]`, at least one).
pub(crate) fn split_pipe(name: &str) -> Result<Option<(&str, &str, bool)>, CtlError> {
    let Some(at) = name.find(['{', '}']) else {
        return Ok(None);
    };
    let (parent, id) = (&name[..at], &name[at + 1..]);
    let ok = !id.is_empty()
        && id.len() <= 15
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok || parent.contains('/') {
        return Err(CtlError::BadRequest(format!(
            "`{}`: a netmap pipe is PORT{{ID or PORT}}ID, ID of letters, digits and _",
            vale_switch::quote_input(name)
        )));
    }
    Ok(Some((parent, id, name.as_bytes()[at] == b'}')))
}

fn done(message: String) -> Result<Reply, CtlError> {
    Ok(Response::Done { message }.into())
}

impl Control {
    pub(super) fn handle(&mut self, id: u64, req: Request) -> Result<Reply, CtlError> {
        if touches_host(&req) && !self.may_touch_host(id) {
            return Err(CtlError::Permission {
                what: "host ports create and attach network interfaces".into(),
                action: "do that",
            });
        }
        if matches!(req, Request::ConfigDump) && !self.may_touch_host(id) {
            return Err(CtlError::Permission {
                what: "the running configuration holds every port's sockets and secrets".into(),
                action: "read it",
            });
        }
        if matches!(req, Request::VlanSet { .. }) && !self.may_touch_host(id) {
            return Err(CtlError::Permission {
                what: "VLAN settings decide what every port of a switch may reach".into(),
                action: "change them",
            });
        }
        if matches!(req, Request::Set { .. }) && !self.may_touch_host(id) {
            return Err(CtlError::Permission {
                what: "run-time settings apply to every switch and client".into(),
                action: "change them",
            });
        }
        match req {
            Request::Open {
                version,
                name,
                geometry,
                exclusive,
            } => self.open(id, version, &name, geometry, exclusive),
            Request::Close => {
                let held = self.conns.get_mut(id).and_then(|c| c.port.take());
                match held {
                    Some(h) => {
                        self.ports.release(h);
                        done("closed".into())
                    }
                    None => Err(CtlError::BadRequest("this connection holds no port".into())),
                }
            }
            Request::List { page } => {
                let ask = self.page_ask(id, page)?;
                let (after, ports_done) = ask.port_after("list")?;
                let ports = query::ports_after(&self.ports, after)
                    .take(if ports_done { 0 } else { usize::MAX })
                    .map(query::snap);
                let hosts = self.hosts.info_after(ask.host_after());
                let batch = self.settings.limits.batch;
                let r = query::list_page(ports, hosts, batch, ask.budget);
                ask.answer("list", r).map(Reply::from)
            }
            Request::Stats { port, page } => {
                let ask = self.page_ask(id, page)?;
                let (after, _) = ask.port_after("stats")?;
                let ports = query::ports_after(&self.ports, after)
                    .filter(|(_, e)| port.as_deref().is_none_or(|n| n == e.name))
                    .map(query::snap);
                let first = ask.after.is_none();
                let r = query::stats_page(ports, port.as_deref(), first, ask.budget)?;
                ask.answer("stats", r).map(Reply::from)
            }
            Request::Fdb { switch, page } => {
                let ask = self.page_ask(id, page)?;
                let hosts = &self.hosts;
                let r = query::fdb_page(
                    &self.ports,
                    &switch,
                    ask.fdb_after()?,
                    ask.budget,
                    |port, mac, vlan| hosts.peer_of(port, mac, vlan),
                )?;
                ask.answer("fdb", r).map(Reply::from)
            }
            Request::Set { key, value } => self.set(&key, &value).map(done)?,
            Request::Vlan { switch } => Ok(self.vlan_show(&switch)?.into()),
            Request::VlanSet {
                target,
                filtering,
                mode,
            } => self
                .vlan_set(&target, filtering, mode.as_deref())
                .map(done)?,
            Request::Reload => self.reload().map(done)?,
            Request::ConfigDump => done(self.dump()),
            Request::Settings => {
                Ok(query::settings(&self.settings, self.ports.lanes().len()).into())
            }
            Request::HostCreate { name, queues } => self.host_create(&name, queues).map(done)?,
            Request::HostRemove { name } => self.host_remove(&name).map(done)?,
            Request::Attach { port, xdp } => self.attach(&port, xdp).map(done)?,
            Request::Detach { port } => self.detach(&port).map(done)?,
            Request::Create { port, spec } => self.create(&port, &spec).map(done)?,
            // The forms older clients send.
            Request::QemuDgram { port, socket, peer } => self
                .create(&port, &PortSpec::QemuDgram { socket, peer })
                .map(done)?,
            Request::QemuStream {
                port,
                listen,
                connect,
            } => self
                .create(&port, &PortSpec::QemuStream { listen, connect })
                .map(done)?,
            Request::VhostUser {
                port,
                socket,
                client,
            } => self
                .create(
                    &port,
                    &PortSpec::VhostUser {
                        socket,
                        client,
                        queues: 1,
                    },
                )
                .map(done)?,
        }
    }

    /// A paged request's page, sized for connection `id`'s socket.
    fn page_ask(&self, id: u64, page: Option<proto::Page>) -> Result<query::PageAsk, CtlError> {
        let (page_bytes, max_msg) = self
            .conns
            .get(id)
            .map_or((proto::PAGE_BYTES, proto::PAGE_BYTES), |c| {
                (c.page_bytes, c.max_msg)
            });
        query::PageAsk::new(page, page_bytes, max_msg)
    }

    fn open(
        &mut self,
        id: u64,
        version: u32,
        name: &str,
        req: GeometryRequest,
        exclusive: bool,
    ) -> Result<Reply, CtlError> {
        if version != proto::VERSION {
            return Err(CtlError::Version {
                client: version,
                daemon: proto::VERSION,
            });
        }
        if self.conns.get(id).is_some_and(|c| c.port.is_some()) {
            return Err(CtlError::AlreadyHolding);
        }
        if name.contains('/') && !self.may_touch_host(id) {
            return Err(CtlError::Permission {
                what: format!("{name}: monitors see other clients' traffic"),
                action: "open them",
            });
        }
        // A netmap pipe endpoint: `valeX:p{ID` (master) or `valeX:p}ID` (slave) lives in
        // port valeX:p's memory; the port is opened (created) for it.
        let (name, pipe) = match split_pipe(name)? {
            Some((parent, id, slave)) => (parent, Some((id.to_string(), slave))),
            None => (name, None),
        };
        match self.hosts.claims(name) {
            Some((h, false)) => {
                return Err(CtlError::Busy(format!(
                    "{name} is host port {h}, served by valed itself; detach it first (vale-ctl -d {name})"
                )));
            }
            Some((h, true)) => {
                return Err(CtlError::Busy(format!(
                    "{name} is reserved for host port {h}, which waits for its peer; remove it first (vale-ctl -d {name})"
                )));
            }
            None => {}
        }
        let who = self.who(id);
        if !who.privileged {
            if let Some(owner) = self.ports.owner(name).filter(|o| *o != who.uid) {
                if !self.shared_with(id, name) {
                    let switch = name.split(':').next().unwrap_or(name).to_string();
                    tracing::info!(
                        port = name,
                        owner,
                        uid = who.uid,
                        "refused to open another uid's port"
                    );
                    return Err(CtlError::NotOwner {
                        port: name.to_string(),
                        owner,
                        switch,
                    });
                }
            }
        }
        let d = self.settings.limits.default_geometry;
        let g = PortGeometry {
            tx_rings: req.tx_rings.unwrap_or(d.tx_rings),
            rx_rings: req.rx_rings.unwrap_or(d.rx_rings),
            tx_slots: req.tx_slots.unwrap_or(d.tx_slots),
            rx_slots: req.rx_slots.unwrap_or(d.rx_slots),
            buf_size: d.buf_size,
            // netmap gives fewer than asked when the pool cannot hold them.
            extra_bufs: req
                .extra_bufs
                .unwrap_or(0)
                .min(self.settings.limits.max_extra_bufs),
            pipes: d.pipes,
        };
        let wants = Wants {
            extra_bufs: req.extra_bufs.unwrap_or(0),
            exclusive,
            pipe,
        };
        let a = self.ports.acquire_with(name, g, wants, who)?;
        if let Some(c) = self.conns.get_mut(id) {
            c.port = Some(a.held);
        }
        Ok(Reply {
            resp: a.opened,
            fds: vec![a.memfd, a.kick, a.notify],
        })
    }

    /// Who connection `id`'s peer is, for ownership and quotas.
    fn who(&self, id: u64) -> Who {
        let c = self.conns.get(id);
        Who {
            uid: c.and_then(|c| c.uid).unwrap_or(u32::MAX),
            privileged: self.may_touch_host(id),
        }
    }

    /// Whether port `name`'s switch is shared with connection `id`'s peer (declared
    /// with `--share SWITCH`, or `--share SWITCH:GROUP` and the peer is in the group).
    fn shared_with(&self, id: u64, name: &str) -> bool {
        let switch = name.split(':').next().unwrap_or(name);
        let gids = self.conns.get(id).map_or(&[][..], |c| &c.gids[..]);
        self.settings
            .shared
            .iter()
            .filter(|s| s.switch == switch)
            .any(|s| s.group.is_none_or(|g| gids.contains(&g)))
    }

    /// `vale-ctl set KEY VALUE`.
    fn set(&mut self, key: &str, value: &str) -> Result<String, CtlError> {
        match key {
            "bridge_batch" => {
                let Ok(n) = value.parse::<usize>() else {
                    return Err(CtlError::BadRequest(format!(
                        "bridge_batch `{}` is not a number",
                        vale_switch::quote_input(value)
                    )));
                };
                let mut result = Ok(());
                for l in self.ports.lanes() {
                    result = result.and(l.lock_ctl().registry.set_batch(n));
                }
                result.map_err(|e| CtlError::BadRequest(e.to_string()))?;
                self.settings.limits.batch = n;
                tracing::info!("bridge_batch set to {n}");
                Ok(format!("bridge_batch = {n}"))
            }
            "verbose" => match value.parse::<u8>() {
                Ok(v) => {
                    self.settings.verbose = v;
                    (self.set_verbosity)(v);
                    Ok(format!("verbose = {v}"))
                }
                Err(_) => Err(CtlError::BadRequest(format!(
                    "verbose `{}` is not a number 0..=255",
                    vale_switch::quote_input(value)
                ))),
            },
            "switch_threads" => {
                let (sw, n) = crate::settings::parse_switch_threads(value)
                    .map_err(|e| CtlError::BadRequest(e.to_string()))?;
                let lanes = self.ports.lanes().len();
                let busy = std::time::Duration::from_micros(self.settings.busy_poll_us);
                for (i, l) in self.ports.lanes().iter().enumerate() {
                    l.ensure_helpers(usize::from(n) - 1, i, lanes, &self.settings.cpus, busy)
                        .map_err(|e| {
                            CtlError::Internal(format!("cannot start a forwarding helper: {e}"))
                        })?;
                }
                let mut result = Ok(());
                for l in self.ports.lanes() {
                    result = result.and(l.lock_ctl().registry.set_threads(&sw, n));
                    // Queue pairs may have moved to another thread, which must look at
                    // them (and arm them before it sleeps): each looks again now.
                    l.wake_forwarder();
                    l.wake_helpers();
                }
                result.map_err(|e| CtlError::BadRequest(e.to_string()))?;
                let list = &mut self.settings.switch_threads;
                list.retain(|(s, _)| *s != sw);
                list.push((sw.clone(), n));
                tracing::info!(switch = %sw, threads = n, "switch threads set");
                Ok(format!("switch_threads {sw} = {n}"))
            }
            other => Err(CtlError::BadRequest(format!(
                "unknown setting `{}`; settable at run time: bridge_batch, switch_threads, verbose",
                vale_switch::quote_input(other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_that_reaches_the_host_is_gated() {
        let gated = [
            r#"{"op":"host_create","name":"vi0"}"#,
            r#"{"op":"host_remove","name":"vi0"}"#,
            r#"{"op":"attach","port":"vale0:eth0"}"#,
            r#"{"op":"detach","port":"vale0:eth0"}"#,
            r#"{"op":"qemu_dgram","port":"vale0:q","socket":"/a","peer":"/b"}"#,
            r#"{"op":"qemu_stream","port":"vale0:q","listen":"/a"}"#,
            r#"{"op":"vhost_user","port":"vale0:v","socket":"/a"}"#,
            r#"{"op":"create","port":"vale0:v","spec":{"kind":"tap"}}"#,
        ];
        for j in gated {
            let r: Request = serde_json::from_str(j).unwrap();
            assert!(touches_host(&r), "{j}");
        }
        for j in [
            r#"{"op":"list"}"#,
            r#"{"op":"stats"}"#,
            r#"{"op":"fdb","switch":"vale0"}"#,
            r#"{"op":"settings"}"#,
            r#"{"op":"open","version":3,"name":"vale0:a"}"#,
        ] {
            let r: Request = serde_json::from_str(j).unwrap();
            assert!(!touches_host(&r), "{j}");
        }
    }
}
