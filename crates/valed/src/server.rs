//! The control side of `valed`: the unix socket, one connection per client, requests
//! answered in order, ports held open by their connections.

use crate::forward::{self, HOST, key_data};
use crate::host::{Host, HostIo, Kind};
use crate::settings::Settings;
use crate::state::{PortFds, Shared, State};
use crate::sys;
use rustix::event::{EventfdFlags, Timespec, epoll};
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vale::proto::{
    self, Counters, ErrorKind, FdbRow, GeometryRequest, HostInfo, PortStats, PortSummary, Request,
    Response, SwitchInfo,
};
use vale_abi::PortGeometry;
use vale_switch::{DropReason, PortKey, Registry, RegistryError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another valed is already listening on {0}")]
    AlreadyRunning(PathBuf),
    #[error("{what} {path}: {source}")]
    Socket {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} failed: {1}")]
    Os(&'static str, #[source] std::io::Error),
}

struct Conn {
    fd: OwnedFd,
    /// The peer's user id (SO_PEERCRED), if the kernel told us.
    uid: Option<u32>,
    /// The lane (forwarding thread) and port this connection holds open.
    port: Option<(usize, PortKey)>,
}

const LISTENER: u64 = u64::MAX;
/// Slots of a host port's RX ring (bounded by `--max-slots`).
const HOST_SLOTS: u32 = 4096;
/// A host port's TX ring has this many times the slots of the largest frame
/// (`host_geometry`): 256 with 2112-byte buffers, room for seven such frames (one slot
/// stays empty, netmap's rule).
const HOST_TX_FRAMES: u32 = 8;

/// Callback the binary gives to change log verbosity at run time.
pub type SetVerbosity = Box<dyn Fn(u8) + Send>;

fn listen(path: &Path, mode: u32, group: Option<&str>) -> Result<OwnedFd, StartError> {
    let sock_err = |what, e: std::io::Error| StartError::Socket {
        what,
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| sock_err("cannot create the directory of", e))?;
    }
    if path.exists() {
        // A live daemon answers; a stale file from a crash does not.
        if vale::sock::connect(path).is_ok() {
            return Err(StartError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| sock_err("cannot remove stale socket", e))?;
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| StartError::Os("socket", e.into()))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| sock_err("bad socket path", e.into()))?;
    rustix::net::bind(&fd, &addr).map_err(|e| sock_err("cannot bind", e.into()))?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| sock_err("cannot set the mode of", e.into()))?;
    if let Some(g) = group {
        let gid = crate::settings::group_id(g)
            .map_err(|e| sock_err("bad group for", std::io::Error::other(e)))?;
        rustix::fs::chown(path, None, Some(rustix::process::Gid::from_raw(gid)))
            .map_err(|e| sock_err("cannot set the group of", e.into()))?;
    }
    rustix::net::listen(&fd, 128).map_err(|e| sock_err("cannot listen on", e.into()))?;
    Ok(fd)
}

/// Runs the daemon until `stop` is set (SIGINT/SIGTERM in the binary).
pub fn run(
    mut settings: Settings,
    stop: Arc<AtomicBool>,
    set_verbosity: SetVerbosity,
) -> Result<(), StartError> {
    settings.seed_fdb();
    let listener = listen(
        &settings.socket,
        settings.socket_mode,
        settings.socket_group.as_deref(),
    )?;
    let busy = Duration::from_micros(settings.busy_poll_us);
    let mut lanes = Vec::new();
    let mut threads = Vec::new();
    for t in 0..settings.threads.max(1) {
        let fwd_epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| StartError::Os("epoll_create", e.into()))?;
        let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| StartError::Os("eventfd", e.into()))?;
        epoll::add(
            &fwd_epoll,
            &wake,
            epoll::EventData::new_u64(forward::WAKE),
            epoll::EventFlags::IN,
        )
        .map_err(|e| StartError::Os("epoll_ctl", e.into()))?;
        let state = State {
            registry: Registry::new(settings.limits),
            fds: HashMap::new(),
            hosts: HashMap::new(),
            vhosts: HashMap::new(),
        };
        let shared = Arc::new(Shared::new(state, fwd_epoll, wake));
        let s2 = shared.clone();
        let cpu = (!settings.cpus.is_empty()).then(|| settings.cpus[t % settings.cpus.len()]);
        threads.push(
            std::thread::Builder::new()
                .name(format!("vale-fwd{t}"))
                .spawn(move || {
                    if let Some(c) = cpu {
                        pin(t, c);
                    }
                    forward::run(s2, busy)
                })
                .map_err(|e| StartError::Os("spawn forwarding thread", e))?,
        );
        lanes.push(shared);
    }
    tracing::info!(socket = %settings.socket.display(), threads = lanes.len(), cpus = ?settings.cpus, "valed listening");
    let mut ctl = Control {
        lanes: lanes.clone(),
        settings,
        conns: HashMap::new(),
        next_id: 1,
        set_verbosity,
        hosts: BTreeMap::new(),
        ep: epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| StartError::Os("epoll_create", e.into()))?,
        stream_listeners: HashMap::new(),
    };
    let result = ctl.serve(&listener, &stop);
    tracing::info!(
        "shutting down: closing {} client connections",
        ctl.conns.len()
    );
    // Host ports first: their threads stop, TAP interfaces disappear.
    let names: Vec<String> = ctl.hosts.keys().cloned().collect();
    for n in names {
        ctl.detach_host(&n);
        ctl.forget_host(&n); // socket files of QEMU ports, attached or still waiting
    }
    ctl.hosts.clear();
    for l in &lanes {
        l.stop.store(true, Ordering::Release);
        l.wake_forwarder();
    }
    for t in threads {
        let _ = t.join();
    }
    ctl.conns.clear(); // clients see the connection close
    let _ = std::fs::remove_file(&ctl.settings.socket);
    let _ = std::fs::remove_dir(private_dir(&ctl.settings.socket));
    result
}

/// A port whose client is the forwarding thread itself (host and vhost-user ports): its
/// virtio-net header length, whether packets are handed to it directly, and the
/// application side of its rings.
fn drive_port(
    st: &mut State,
    key: PortKey,
    hdr: u16,
    direct: bool,
) -> Result<(vale_abi::AppRing, vale_abi::AppRing), String> {
    let e = st
        .registry
        .entry_mut(key)
        .ok_or_else(|| "port vanished".to_string())?;
    e.switch
        .set_hdr_len(key.port, hdr)
        .map_err(|e| e.to_string())?;
    e.switch
        .set_direct(key.port, direct)
        .map_err(|e| e.to_string())?;
    let region = e
        .switch
        .port(key.port)
        .ok_or_else(|| "port vanished".to_string())?
        .region();
    match (
        region.ring(vale_abi::Dir::Tx, 0),
        region.ring(vale_abi::Dir::Rx, 0),
    ) {
        (Some(t), Some(r)) => Ok((vale_abi::AppRing::new(t), vale_abi::AppRing::new(r))),
        _ => Err("port without rings".to_string()),
    }
}

/// Where valed keeps sockets only it uses (vhost-user relays' back ends).
fn private_dir(control: &Path) -> PathBuf {
    let mut d = control.as_os_str().to_owned();
    d.push(".private");
    PathBuf::from(d)
}

/// One forwarding thread with the switches it owns (a switch lives on one thread).
struct Control {
    lanes: Vec<Arc<Shared>>,
    settings: Settings,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    set_verbosity: SetVerbosity,
    /// Host ports by interface name.
    hosts: BTreeMap<String, Host>,
    /// The control thread's epoll set (connections, the listener, QEMU stream listeners).
    ep: OwnedFd,
    /// QEMU `-netdev stream` listeners: epoll id -> (host port name, socket).
    stream_listeners: HashMap<u64, (String, OwnedFd)>,
}

/// Epoll ids of QEMU stream listeners start here (connections count up from 1).
const STREAM_BASE: u64 = 1 << 62;

/// A port opened for a client (or a host port): where it lives and what the client
/// needs to use it.
struct Acquired {
    lane: usize,
    key: PortKey,
    opened: Response,
    memfd: OwnedFd,
    kick: OwnedFd,
    notify: OwnedFd,
}

impl Control {
    fn serve(&mut self, listener: &OwnedFd, stop: &AtomicBool) -> Result<(), StartError> {
        let ep = self.ep.try_clone().map_err(|e| StartError::Os("dup", e))?;
        epoll::add(
            &ep,
            listener,
            epoll::EventData::new_u64(LISTENER),
            epoll::EventFlags::IN,
        )
        .map_err(|e| StartError::Os("epoll_ctl", e.into()))?;
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        let mut buf = vec![0u8; proto::MAX_MSG];
        let tick = Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        while !stop.load(Ordering::Relaxed) {
            events.clear();
            match epoll::wait(
                &ep,
                rustix::buffer::spare_capacity(&mut events),
                Some(&tick),
            ) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(StartError::Os("epoll_wait", e.into())),
            }
            for ev in events.clone() {
                let id = ev.data.u64();
                if id == LISTENER {
                    self.accept(&ep, listener);
                } else if id >= STREAM_BASE {
                    self.stream_accept(id);
                } else {
                    self.readable(id, &mut buf);
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, ep: &OwnedFd, listener: &OwnedFd) {
        loop {
            match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
                Ok(fd) => {
                    let id = self.next_id;
                    self.next_id += 1;
                    if let Err(e) = epoll::add(
                        ep,
                        &fd,
                        epoll::EventData::new_u64(id),
                        epoll::EventFlags::IN,
                    ) {
                        tracing::warn!("cannot watch a new connection: {e}");
                        continue;
                    }
                    let uid = rustix::net::sockopt::socket_peercred(&fd)
                        .ok()
                        .map(|c| c.uid.as_raw());
                    tracing::debug!(conn = id, ?uid, "client connected");
                    self.conns.insert(
                        id,
                        Conn {
                            fd,
                            uid,
                            port: None,
                        },
                    );
                }
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn readable(&mut self, id: u64, buf: &mut [u8]) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let r = vale::sock::recv(conn.fd.as_fd(), buf);
        let n = match r {
            Ok((0, _)) => return self.disconnect(id),
            Ok((n, fds)) => {
                drop(fds); // clients send no descriptors; close any they do send
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(conn = id, "receive failed: {e}");
                return self.disconnect(id);
            }
        };
        let (resp, fds) = match serde_json::from_slice::<Request>(&buf[..n]) {
            Ok(req) => self.handle(id, req),
            Err(e) => (
                error(
                    ErrorKind::BadRequest,
                    format!("malformed request ({n} bytes): {e}"),
                ),
                Vec::new(),
            ),
        };
        self.reply(id, &resp, &fds);
    }

    fn reply(&mut self, id: u64, resp: &Response, fds: &[OwnedFd]) {
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let bytes = match serde_json::to_vec(resp) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("cannot encode a response: {e}");
                return;
            }
        };
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if let Err(e) = vale::sock::send(conn.fd.as_fd(), &bytes, &borrowed) {
            tracing::debug!(conn = id, "reply failed: {e}");
            self.disconnect(id);
        }
    }

    fn disconnect(&mut self, id: u64) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        tracing::debug!(conn = id, "client disconnected");
        if let Some((lane, key)) = conn.port {
            self.release(lane, key);
        }
    }

    /// Drops one hold on a port; the port goes away with the last.
    fn release(&mut self, lane: usize, key: PortKey) {
        let shared = self.lanes[lane].clone();
        let mut st = shared.lock_ctl();
        let name = port_name(&st.registry, key);
        match st.registry.close(key) {
            Ok(vale_switch::Closed::PortRemoved) => {
                if let Some(f) = st.fds.remove(&key) {
                    let _ = epoll::delete(&shared.epoll, &f.kick);
                }
                tracing::info!(port = %name, "port removed (last client gone)");
            }
            Ok(vale_switch::Closed::StillOpen) => {}
            Err(e) => tracing::error!("closing {name}: {e}"),
        }
    }

    fn handle(&mut self, id: u64, req: Request) -> (Response, Vec<OwnedFd>) {
        match req {
            Request::Open {
                version,
                name,
                geometry,
            } => self.open(id, version, &name, geometry),
            Request::List => (self.list(), Vec::new()),
            Request::Stats { port } => (self.stats(port.as_deref()), Vec::new()),
            Request::Fdb { switch } => (self.fdb(&switch), Vec::new()),
            Request::Set { key, value } => (self.set(&key, &value), Vec::new()),
            Request::Settings => (self.settings(), Vec::new()),
            Request::HostCreate { .. }
            | Request::HostRemove { .. }
            | Request::Attach { .. }
            | Request::Detach { .. }
            | Request::QemuDgram { .. }
            | Request::QemuStream { .. }
            | Request::VhostUser { .. }
                if !self.may_touch_host(id) =>
            {
                (
                    error(
                        ErrorKind::Permission,
                        "host ports create and attach network interfaces: only root or valed's own user may do that".into(),
                    ),
                    Vec::new(),
                )
            }
            Request::HostCreate { name } => (self.host_create(&name), Vec::new()),
            Request::HostRemove { name } => (self.host_remove(&name), Vec::new()),
            Request::Attach { port, xdp } => (self.attach(&port, xdp), Vec::new()),
            Request::Detach { port } => (self.detach(&port), Vec::new()),
            Request::QemuDgram { port, socket, peer } => {
                (self.qemu_dgram(&port, &socket, &peer), Vec::new())
            }
            Request::QemuStream {
                port,
                listen,
                connect,
            } => (self.qemu_stream(&port, listen, connect), Vec::new()),
            Request::VhostUser {
                port,
                socket,
                client,
            } => (self.vhost_user(&port, &socket, client), Vec::new()),
        }
    }

    fn open(
        &mut self,
        id: u64,
        version: u32,
        name: &str,
        req: GeometryRequest,
    ) -> (Response, Vec<OwnedFd>) {
        if version != proto::VERSION {
            return (
                error(
                    ErrorKind::Version,
                    format!(
                        "client speaks protocol {version}, valed speaks {}; use matching versions",
                        proto::VERSION
                    ),
                ),
                Vec::new(),
            );
        }
        if self.conns.get(&id).is_some_and(|c| c.port.is_some()) {
            return (
                error(
                    ErrorKind::BadRequest,
                    "this connection already holds a port; open another connection".into(),
                ),
                Vec::new(),
            );
        }
        if name.contains('/') && !self.may_touch_host(id) {
            return (
                error(
                    ErrorKind::Permission,
                    format!(
                        "{name}: monitors see other clients' traffic: only root or valed's own user may open them"
                    ),
                ),
                Vec::new(),
            );
        }
        if let Some(h) = self.host_port(name) {
            return (
                error(
                    ErrorKind::Busy,
                    format!(
                        "{name} is host port {h}, served by valed itself; detach it first (vale-ctl -d {name})"
                    ),
                ),
                Vec::new(),
            );
        }
        let d = self.settings.limits.default_geometry;
        let g = PortGeometry {
            tx_rings: req.tx_rings.unwrap_or(d.tx_rings),
            rx_rings: req.rx_rings.unwrap_or(d.rx_rings),
            tx_slots: req.tx_slots.unwrap_or(d.tx_slots),
            rx_slots: req.rx_slots.unwrap_or(d.rx_slots),
            buf_size: d.buf_size,
        };
        match self.acquire(name, g) {
            Ok(a) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.port = Some((a.lane, a.key));
                }
                (a.opened, vec![a.memfd, a.kick, a.notify])
            }
            Err(e) => (e, Vec::new()),
        }
    }

    /// Host ports reach the host's network (a TAP in any namespace, any interface in
    /// promiscuous mode) and monitors see other clients' traffic: only root or the
    /// daemon's own user may use them, whoever else the socket's mode lets in.
    fn may_touch_host(&self, id: u64) -> bool {
        let me = rustix::process::geteuid().as_raw();
        self.conns
            .get(&id)
            .and_then(|c| c.uid)
            .is_some_and(|u| u == 0 || u == me)
    }

    /// The host port (interface name) attached as switch port `name`, if any.
    fn host_port(&self, name: &str) -> Option<&str> {
        self.hosts
            .iter()
            .find(|(_, h)| h.attached.as_ref().is_some_and(|a| a.0 == name))
            .map(|(n, _)| n.as_str())
    }

    /// Opens (creating if needed) port `name` and clones what a client needs.
    fn acquire(&mut self, name: &str, g: PortGeometry) -> Result<Acquired, Response> {
        let lane = self.lane_for(name)?;
        let shared = self.lanes[lane].clone();
        let mut st = shared.lock_ctl();
        let key = match st.registry.open(name, Some(g)) {
            Ok(k) => k,
            Err(e) => {
                tracing::info!("refused to open `{}`: {e}", name.escape_default());
                return Err(error(kind_of(&e), e.to_string()));
            }
        };
        let new = st.registry.open_count(key) == 1;
        if new {
            match make_fds(&shared, key) {
                Ok(f) => {
                    st.fds.insert(key, f);
                }
                Err(e) => {
                    let _ = st.registry.close(key);
                    return Err(error(ErrorKind::Internal, e));
                }
            }
        }
        let result = (|| {
            let e = st.registry.entry_mut(key)?;
            let port = e.switch.port(key.port)?;
            let memfd = port.region().fd().try_clone_to_owned().ok()?;
            let opened = Response::Opened {
                switch: e.name.clone(),
                port: port.name().to_string(),
                index: key.port.0,
                geometry: port.geometry().into(),
            };
            let f = st.fds.get(&key)?;
            let kick = f.kick.try_clone().ok()?;
            let notify = f.notify.try_clone().ok()?;
            Some(Acquired {
                lane,
                key,
                opened,
                memfd,
                kick,
                notify,
            })
        })();
        match result {
            Some(a) => {
                if new {
                    tracing::info!(port = name, "port created");
                }
                drop(st);
                shared.wake_forwarder();
                Ok(a)
            }
            None => {
                let _ = st.registry.close(key);
                Err(error(
                    ErrorKind::Internal,
                    format!("cannot hand out port `{name}`"),
                ))
            }
        }
    }

    /// `vale-ctl -n NAME`.
    fn host_create(&mut self, name: &str) -> Response {
        if let Err(e) = sys::check_ifname(name) {
            return error(ErrorKind::BadName, e);
        }
        if name.starts_with("vale") {
            return error(
                ErrorKind::BadName,
                format!(
                    "{name}: a persistent port's name may not start with `vale` (that names a switch port)"
                ),
            );
        }
        if self.hosts.contains_key(name) || sys::if_index(name).is_some() {
            return error(
                ErrorKind::Exists,
                format!("{name} already exists (see `ip link` and `vale-ctl list`)"),
            );
        }
        match sys::tap_create(name) {
            Ok(fd) => {
                tracing::info!(interface = name, "persistent port (TAP) created");
                self.hosts.insert(
                    name.to_string(),
                    Host {
                        kind: Kind::Tap,
                        tap: Some(fd),
                        attached: None,
                        counters: Default::default(),
                        socket: None,
                        pending_port: None,
                        vhost: None,
                    },
                );
                Response::Done {
                    message: format!("created {name}"),
                }
            }
            Err(e) => error(
                ErrorKind::Internal,
                format!(
                    "cannot create TAP interface {name}: {e} (valed needs CAP_NET_ADMIN and /dev/net/tun)"
                ),
            ),
        }
    }

    /// `vale-ctl -r NAME`.
    fn host_remove(&mut self, name: &str) -> Response {
        match self.hosts.get(name) {
            None => error(
                ErrorKind::NotFound,
                format!("{name} is not a persistent port (create one with vale-ctl -n {name})"),
            ),
            Some(h) if h.kind == Kind::Nic => error(
                ErrorKind::BadRequest,
                format!(
                    "{name} is an attached interface, not a persistent port; detach it with vale-ctl -d"
                ),
            ),
            Some(h) if h.attached.is_some() => error(
                ErrorKind::Busy,
                format!(
                    "{name} is attached as {}; detach it first (vale-ctl -d {})",
                    h.attached.as_ref().map_or("", |a| a.0.as_str()),
                    h.attached.as_ref().map_or("", |a| a.0.as_str())
                ),
            ),
            Some(_) => {
                self.hosts.remove(name);
                tracing::info!(interface = name, "persistent port removed");
                Response::Done {
                    message: format!("removed {name}"),
                }
            }
        }
    }

    /// `vale-ctl -a valeX:NAME [--xdp]`.
    fn attach(&mut self, port: &str, xdp: bool) -> Response {
        let pn = match vale_switch::PortName::parse(port, self.settings.limits.max_name_len) {
            Ok(p) => p,
            Err(e) => return error(ErrorKind::BadName, e.to_string()),
        };
        let ifname = pn.as_str()[pn.switch().len() + 1..].to_string();
        if let Some(h) = self.hosts.get(&ifname) {
            if let Some(a) = &h.attached {
                return error(
                    ErrorKind::Busy,
                    format!("{ifname} is already attached as {}", a.0),
                );
            }
        }
        let kind = match self.hosts.get(&ifname) {
            Some(h) if xdp => {
                return error(
                    ErrorKind::BadRequest,
                    format!(
                        "--xdp is for existing interfaces; {ifname} is a {} port",
                        h.kind.name()
                    ),
                );
            }
            Some(h) => h.kind,
            None if sys::if_index(&ifname).is_some() && xdp => Kind::Xdp,
            None if sys::if_index(&ifname).is_some() => Kind::Nic,
            None => {
                return error(
                    ErrorKind::NotFound,
                    format!(
                        "no interface {ifname}: create a persistent port with vale-ctl -n {ifname}, or name an existing interface"
                    ),
                );
            }
        };
        if self
            .lanes
            .iter()
            .any(|l| l.lock_ctl().registry.find(port).is_some())
        {
            return error(
                ErrorKind::Busy,
                format!("{port} is already a port opened by a client"),
            );
        }
        // The interface's descriptor, for the port's thread.
        let mut xsk = None;
        let dev = match kind {
            Kind::Xdp => match sys::if_index(&ifname) {
                Some(i) => crate::xsk::attach(&ifname, i).and_then(|a| {
                    let d = a.socks[0]
                        .fd()
                        .try_clone_to_owned()
                        .map_err(|e| e.to_string());
                    xsk = Some(a);
                    d
                }),
                None => Err(format!("{ifname} went away")),
            },
            Kind::Tap => self.hosts[&ifname]
                .tap
                .as_ref()
                .map(|f| f.try_clone())
                .transpose()
                .map_err(|e| e.to_string())
                .and_then(|f| f.ok_or_else(|| "TAP descriptor missing".to_string())),
            Kind::Nic => match sys::if_index(&ifname) {
                Some(i) => sys::packet_socket(i).map_err(|e| {
                    format!(
                        "cannot open an AF_PACKET socket on {ifname}: {e} (valed needs CAP_NET_RAW)"
                    )
                }),
                None => Err(format!("{ifname} went away")),
            },
            // Detached QEMU ports are removed, so this is not reached.
            Kind::QemuDgram | Kind::QemuStream | Kind::VhostUser => Err(format!(
                "{ifname} is a QEMU port: remove it with -d and create it again"
            )),
        };
        let dev = match dev {
            Ok(d) => d,
            Err(e) => return error(ErrorKind::Internal, e),
        };
        self.attach_dev(port, &ifname, kind, dev, None, xsk)
    }

    /// Attaches host port `ifname` of `kind`, reached through `dev`, as `port`.
    fn attach_dev(
        &mut self,
        port: &str,
        ifname: &str,
        kind: Kind,
        dev: OwnedFd,
        peer: Option<SocketAddrUnix>,
        mut xsk: Option<crate::xsk::Attached>,
    ) -> Response {
        let ifname = ifname.to_string();
        let a = match self.host_geometry().and_then(|g| self.acquire(port, g)) {
            Ok(a) => a,
            Err(e) => return e,
        };
        // The interface's frames carry a virtio-net header: tell the switch. The port's
        // rings are driven by the forwarding thread itself (see host.rs).
        let hdr = match kind {
            Kind::Tap => sys::TAP_VNET_HDR,
            Kind::Nic => sys::PACKET_VNET_HDR_LEN,
            Kind::QemuDgram | Kind::QemuStream | Kind::Xdp => 0,
            Kind::VhostUser => crate::vhost::VNET_HDR as u16,
        };
        let counters = self
            .hosts
            .get(&ifname)
            .map(|h| h.counters.clone())
            .unwrap_or_default();
        let shared = self.lanes[a.lane].clone();
        let started = (|| {
            let mut st = shared.lock_ctl();
            // Packets for it are written to the interface from the senders' buffers
            // (not for datagram sockets: those need an address on every send).
            let (tx, rx) = drive_port(&mut st, a.key, hdr, matches!(kind, Kind::Tap | Kind::Nic))?;
            epoll::add(
                &shared.epoll,
                &dev,
                epoll::EventData::new_u64(HOST | key_data(a.key)),
                epoll::EventFlags::IN,
            )
            .map_err(|e| format!("epoll_ctl: {e}"))?;
            // AF_XDP: every queue's socket wakes the thread.
            for s in xsk.iter().flat_map(|a| a.socks.iter().skip(1)) {
                epoll::add(
                    &shared.epoll,
                    s.fd(),
                    epoll::EventData::new_u64(HOST | key_data(a.key)),
                    epoll::EventFlags::IN,
                )
                .map_err(|e| format!("epoll_ctl: {e}"))?;
            }
            // Attached interfaces read through a TPACKET_V2 ring (2048-byte slots for
            // ordinary frames; super-frames come through the socket), or plainly if the
            // kernel refuses one.
            let ring = (kind == Kind::Nic)
                .then(|| {
                    sys::PacketRing::new(&dev, 2048, 1024)
                        .map_err(|e| tracing::warn!(interface = %ifname, "no receive ring, plain reads: {e}"))
                        .ok()
                })
                .flatten();
            let mut io = HostIo::new(
                dev,
                tx,
                rx,
                counters.clone(),
                peer,
                kind == Kind::QemuStream,
            )
            .with_ring(ring)
            .named(&ifname, HOST | key_data(a.key));
            if let Some(x) = xsk.take() {
                let zc = x.socks.iter().all(|s| s.zerocopy);
                tracing::info!(
                    interface = %ifname,
                    queues = x.socks.len(),
                    hook = if x.native { "driver" } else { "generic" },
                    copy = if zc { "zero-copy" } else { "copy" },
                    "AF_XDP"
                );
                if !x.native {
                    tracing::warn!(
                        interface = %ifname,
                        "no XDP in the driver: the kernel's generic hook runs after GRO, so \
                         merged frames larger than 3.8 KB are dropped (kernel_drops); \
                         `ethtool -K {ifname} gro off` avoids that"
                    );
                }
                io = io.with_xsk(x);
            }
            st.hosts.insert(a.key, io);
            Ok(())
        })();
        match started {
            Ok(()) => {
                shared.wake_forwarder();
                tracing::info!(interface = %ifname, port, kind = kind.name(), "host port attached");
                let h = self.hosts.entry(ifname.clone()).or_insert(Host {
                    kind,
                    tap: None,
                    attached: None,
                    counters,
                    socket: None,
                    pending_port: None,
                    vhost: None,
                });
                h.attached = Some((port.to_string(), a.lane, a.key));
                Response::Done {
                    message: format!("attached {ifname} as {port}"),
                }
            }
            Err(e) => {
                self.release(a.lane, a.key);
                error(ErrorKind::Internal, e)
            }
        }
    }

    /// `vale-ctl qemu-dgram valeX:NAME --socket PATH --peer PATH`: a port for QEMU's
    /// `-netdev dgram` (one Ethernet frame per datagram, no header): valed binds PATH
    /// and sends to the VM's `local.path`.
    /// The port part of `port` (`valeX:NAME`) for a new QEMU or vhost-user port, if
    /// neither a host port nor a switch port has that name yet.
    fn new_port_name(&self, port: &str) -> Result<String, Response> {
        let pn = vale_switch::PortName::parse(port, self.settings.limits.max_name_len)
            .map_err(|e| error(ErrorKind::BadName, e.to_string()))?;
        let name = pn.as_str()[pn.switch().len() + 1..].to_string();
        if self.hosts.contains_key(&name)
            || self
                .lanes
                .iter()
                .any(|l| l.lock_ctl().registry.find(port).is_some())
        {
            return Err(error(ErrorKind::Exists, format!("{port} exists already")));
        }
        Ok(name)
    }

    /// Host, QEMU and vhost-user ports: one ring each way. The RX ring is deep, since a
    /// 64 KiB super-frame takes 32 slots and the interface may not keep up with a
    /// burst. The TX ring is filled by the forwarding thread and emptied by the switch
    /// in the same pass, so room for seven of the largest frames is enough, and its buffers stay
    /// in the CPU's cache (TAP iperf3: forwarding thread 10 % less CPU per GB than with
    /// 4096 slots, docs/performance.md section 3). Ports whose rings cannot hold one
    /// largest frame are refused instead of stalling.
    fn host_geometry(&self) -> Result<PortGeometry, Response> {
        let l = &self.settings.limits;
        let g = l.default_geometry;
        let frame = (crate::host::MAX_FRAME as u32).div_ceil(g.buf_size);
        if l.max_slots <= frame {
            return Err(error(
                ErrorKind::Limit,
                format!(
                    "host ports need rings of more than {frame} slots ({}-byte buffers, frames up to {} bytes); max_slots is {}",
                    g.buf_size,
                    crate::host::MAX_FRAME,
                    l.max_slots
                ),
            ));
        }
        Ok(PortGeometry {
            tx_rings: 1,
            rx_rings: 1,
            tx_slots: (HOST_TX_FRAMES * frame).min(l.max_slots),
            rx_slots: l.max_slots.min(HOST_SLOTS).max(g.rx_slots),
            ..g
        })
    }

    /// A socket path valed may create (and replace, if a stale socket is there).
    fn check_socket_path(&self, path: &str) -> Result<(), Response> {
        let p = Path::new(path);
        if p.as_os_str().is_empty() || p == self.settings.socket {
            return Err(error(
                ErrorKind::BadRequest,
                format!("`{path}` cannot be a QEMU port's socket"),
            ));
        }
        if self.hosts.values().any(|h| h.socket.as_deref() == Some(p)) {
            return Err(error(
                ErrorKind::Exists,
                format!("{path} is already the socket of another port"),
            ));
        }
        Ok(())
    }

    fn qemu_dgram(&mut self, port: &str, socket: &str, peer: &str) -> Response {
        if let Err(e) = self.check_socket_path(socket) {
            return e;
        }
        let name = match self.new_port_name(port) {
            Ok(n) => n,
            Err(e) => return e,
        };
        let peer_addr = match SocketAddrUnix::new(peer) {
            Ok(a) => a,
            Err(e) => return error(ErrorKind::BadRequest, format!("--peer {peer}: {e}")),
        };
        let dev = match sys::dgram_bind(socket) {
            Ok(d) => d,
            Err(e) => {
                return error(
                    ErrorKind::Internal,
                    format!("cannot bind a datagram socket at {socket}: {e}"),
                );
            }
        };
        self.hosts.insert(
            name.clone(),
            Host {
                kind: Kind::QemuDgram,
                tap: None,
                attached: None,
                counters: Default::default(),
                socket: Some(PathBuf::from(socket)),
                pending_port: None,
                vhost: None,
            },
        );
        let r = self.attach_dev(port, &name, Kind::QemuDgram, dev, Some(peer_addr), None);
        if matches!(r, Response::Error { .. }) {
            if let Some(h) = self.hosts.remove(&name) {
                if let Some(p) = h.socket {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        r
    }

    /// `vale-ctl qemu-stream valeX:NAME --listen PATH | --connect PATH`: a port for QEMU's
    /// `-netdev stream` (a 4-byte big-endian length, then the frame). With `--listen`
    /// valed listens and the VM connects (`server=off`); a VM that restarts reconnects to
    /// the same port. With `--connect` valed connects to a VM listening (`server=on`).
    fn qemu_stream(
        &mut self,
        port: &str,
        listen: Option<String>,
        connect: Option<String>,
    ) -> Response {
        let name = match self.new_port_name(port) {
            Ok(n) => n,
            Err(e) => return e,
        };
        match (listen, connect) {
            (Some(path), None) => {
                if let Err(e) = self.check_socket_path(&path) {
                    return e;
                }
                let l = match sys::stream_listen(&path) {
                    Ok(l) => l,
                    Err(e) => {
                        return error(ErrorKind::Internal, format!("cannot listen on {path}: {e}"));
                    }
                };
                let id = STREAM_BASE + self.next_id;
                self.next_id += 1;
                if let Err(e) = epoll::add(
                    &self.ep,
                    &l,
                    epoll::EventData::new_u64(id),
                    epoll::EventFlags::IN,
                ) {
                    return error(ErrorKind::Internal, format!("epoll_ctl: {e}"));
                }
                self.stream_listeners.insert(id, (name.clone(), l));
                self.hosts.insert(
                    name,
                    Host {
                        kind: Kind::QemuStream,
                        tap: None,
                        attached: None,
                        counters: Default::default(),
                        socket: Some(PathBuf::from(&path)),
                        // Attached when the VM connects.
                        pending_port: Some(port.to_string()),
                        vhost: None,
                    },
                );
                Response::Done {
                    message: format!("{port}: waiting for QEMU on {path}"),
                }
            }
            (None, Some(path)) => {
                let conn = match sys::stream_connect(&path) {
                    Ok(c) => c,
                    Err(e) => {
                        return error(
                            ErrorKind::NotFound,
                            format!(
                                "cannot connect to {path}: {e} (is QEMU listening there, server=on?)"
                            ),
                        );
                    }
                };
                self.hosts.insert(
                    name.clone(),
                    Host {
                        kind: Kind::QemuStream,
                        tap: None,
                        attached: None,
                        counters: Default::default(),
                        socket: None,
                        pending_port: None,
                        vhost: None,
                    },
                );
                let r = self.attach_dev(port, &name, Kind::QemuStream, conn, None, None);
                if matches!(r, Response::Error { .. }) {
                    self.hosts.remove(&name);
                }
                r
            }
            _ => error(
                ErrorKind::BadRequest,
                "qemu-stream takes one of --listen PATH or --connect PATH".into(),
            ),
        }
    }

    /// `vale-ctl vhost-user valeX:NAME --socket PATH [--client]`: the port as a
    /// vhost-user device; valed listens at PATH (QEMU `-chardev socket,path=PATH` without
    /// `server=on`, DPDK `net_virtio_user0,path=PATH`) or, with `client`, connects to a
    /// frontend listening there (QEMU `server=on`, OVS `dpdkvhostuserclient`); a frontend
    /// that goes away may come back.
    fn vhost_user(&mut self, port: &str, socket: &str, client: bool) -> Response {
        let name = match self.new_port_name(port) {
            Ok(n) => n,
            Err(e) => return e,
        };
        if let Err(e) = self.check_socket_path(socket) {
            return e;
        }
        if client {
            // Say now if nobody listens there; later losses are retried quietly.
            if let Err(e) = std::os::unix::net::UnixStream::connect(socket) {
                return error(
                    ErrorKind::NotFound,
                    format!(
                        "cannot connect to {socket}: {e} (is QEMU listening there, server=on?)"
                    ),
                );
            }
        }
        let private = match self.private_socket() {
            Ok(p) => p,
            Err(e) => return error(ErrorKind::Internal, e),
        };
        let a = match self.host_geometry().and_then(|g| self.acquire(port, g)) {
            Ok(a) => a,
            Err(e) => return e,
        };
        let fail = |ctl: &mut Control, msg: String| {
            ctl.release(a.lane, a.key);
            error(ErrorKind::Internal, msg)
        };
        // The forwarding thread serves the guest's queues itself (vhost.rs `VhostIo`):
        // the port carries the 12-byte header, and packets with one are handed over
        // directly.
        let counters: Arc<crate::host::Counters> = Default::default();
        let guest: crate::vhost::GuestRef = Default::default();
        let shared = self.lanes[a.lane].clone();
        let started = (|| {
            let mut st = shared.lock_ctl();
            let (tx, rx) = drive_port(&mut st, a.key, crate::vhost::VNET_HDR as u16, true)?;
            st.vhosts.insert(
                a.key,
                crate::vhost::VhostIo::new(guest.clone(), tx, rx, counters.clone()),
            );
            Ok(())
        })();
        if let Err(e) = started {
            return fail(self, e);
        }
        let worker = match crate::vhost::Worker::start(
            name.clone(),
            socket,
            client,
            private,
            crate::vhost::NetBackend::new(guest, shared.clone()),
            counters.clone(),
        ) {
            Ok(w) => w,
            Err(e) => {
                shared.lock_ctl().vhosts.remove(&a.key);
                return fail(self, format!("cannot serve vhost-user at {socket}: {e}"));
            }
        };
        tracing::info!(port, socket, client, "vhost-user port ready");
        self.hosts.insert(
            name,
            Host {
                kind: Kind::VhostUser,
                tap: None,
                attached: Some((port.to_string(), a.lane, a.key)),
                counters,
                // valed's own socket file (removed with the port); in client mode the
                // frontend's, left alone.
                socket: (!client).then(|| PathBuf::from(socket)),
                pending_port: None,
                vhost: Some(worker),
            },
        );
        Response::Done {
            message: if client {
                format!("{port}: vhost-user connected to {socket}")
            } else {
                format!("{port}: vhost-user on {socket}")
            },
        }
    }

    /// A fresh socket path in a directory beside the control socket that only valed's
    /// user may enter: where the vhost crate listens behind a port's relay.
    fn private_socket(&mut self) -> Result<PathBuf, String> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let dir = private_dir(&self.settings.socket);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
        let m = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !m.is_dir() || m.uid() != rustix::process::geteuid().as_raw() {
            return Err(format!(
                "{} is not a directory of valed's user",
                dir.display()
            ));
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        self.next_id += 1;
        Ok(dir.join(format!("{}.sock", self.next_id)))
    }

    /// A VM connected to a stream listener: the port is attached with this connection,
    /// or (a VM that restarted) its connection is replaced.
    fn stream_accept(&mut self, id: u64) {
        let Some((name, l)) = self.stream_listeners.get(&id) else {
            return;
        };
        let name = name.clone();
        let conn = match rustix::net::accept_with(l, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(c) => c,
            Err(_) => return,
        };
        let Some(h) = self.hosts.get(&name) else {
            return;
        };
        match (&h.attached, h.pending_port.clone()) {
            (Some((_, lane, key)), _) => {
                let (lane, key) = (*lane, *key);
                let shared = self.lanes[lane].clone();
                let mut st = shared.lock_ctl();
                if let Some(io) = st.hosts.get_mut(&key) {
                    let _ = epoll::delete(&shared.epoll, &io.dev);
                    if epoll::add(
                        &shared.epoll,
                        &conn,
                        epoll::EventData::new_u64(HOST | key_data(key)),
                        epoll::EventFlags::IN,
                    )
                    .is_ok()
                    {
                        io.reconnect(conn);
                        tracing::info!(port = %name, "QEMU reconnected");
                    }
                }
                drop(st);
                shared.wake_forwarder();
            }
            (None, Some(port)) => {
                let r = self.attach_dev(&port, &name, Kind::QemuStream, conn, None, None);
                if let Response::Error { message, .. } = r {
                    tracing::warn!(port, "cannot attach the QEMU connection: {message}");
                }
            }
            (None, None) => {}
        }
    }

    /// Drops a host entry that is not a TAP: its socket file and stream listener go too.
    fn forget_host(&mut self, name: &str) {
        if let Some(h) = self.hosts.remove(name) {
            if let Some(p) = h.socket {
                let _ = std::fs::remove_file(p);
            }
        }
        let ids: Vec<u64> = self
            .stream_listeners
            .iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, l)) = self.stream_listeners.remove(&id) {
                let _ = epoll::delete(&self.ep, &l);
            }
        }
    }

    /// `vale-ctl -d valeX:NAME`.
    fn detach(&mut self, port: &str) -> Response {
        // A stream port still waiting for its VM.
        let waiting = self
            .hosts
            .iter()
            .find(|(_, h)| h.attached.is_none() && h.pending_port.as_deref() == Some(port))
            .map(|(n, _)| n.clone());
        if let Some(n) = waiting {
            self.forget_host(&n);
            return Response::Done {
                message: format!("removed {port}"),
            };
        }
        let Some(ifname) = self.host_port(port).map(str::to_string) else {
            return error(
                ErrorKind::NotFound,
                format!("{port} is not an attached interface (see `vale-ctl list`)"),
            );
        };
        self.detach_host(&ifname);
        Response::Done {
            message: format!("detached {ifname} from {port}"),
        }
    }

    /// Takes a host port off its switch (its forwarding thread stops driving it) and
    /// removes its switch port; an attached interface (not a persistent port) is
    /// forgotten, its socket closed.
    fn detach_host(&mut self, ifname: &str) {
        let Some(h) = self.hosts.get_mut(ifname) else {
            return;
        };
        let Some((port, lane, key)) = h.attached.take() else {
            return;
        };
        if let Some(mut w) = h.vhost.take() {
            w.stop();
        }
        let kind = h.kind;
        {
            let shared = self.lanes[lane].clone();
            let mut st = shared.lock_ctl();
            if let Some(io) = st.hosts.remove(&key) {
                // The TAP's descriptor has a twin in `Host::tap`: remove it from epoll
                // explicitly, closing this one would not.
                let _ = epoll::delete(&shared.epoll, &io.dev);
            }
            st.vhosts.remove(&key);
        }
        if kind != Kind::Tap {
            self.forget_host(ifname);
        }
        self.release(lane, key);
        tracing::info!(interface = ifname, port, "host port detached");
    }

    /// The lane that owns `name`'s switch, or the least loaded one for a new switch
    /// (after checking the daemon-wide switch limit).
    fn lane_for(&self, name: &str) -> Result<usize, Response> {
        // A monitor (`vale0:a/t`) lives with the port it watches.
        let base = name.split('/').next().unwrap_or(name);
        let pn = vale_switch::PortName::parse(base, self.settings.limits.max_name_len)
            .map_err(|e| error(ErrorKind::BadName, e.to_string()))?;
        let mut total = 0;
        let mut best = (usize::MAX, 0);
        for (i, l) in self.lanes.iter().enumerate() {
            let st = l.lock_ctl();
            if st.registry.switch(pn.switch()).is_some() {
                return Ok(i);
            }
            let n = st.registry.switches().count();
            total += n;
            if n < best.0 {
                best = (n, i);
            }
        }
        let limit = self.settings.limits.max_switches;
        if total >= limit {
            let e = RegistryError::TooManySwitches {
                switch: pn.switch().to_string(),
                limit,
            };
            return Err(error(ErrorKind::Limit, e.to_string()));
        }
        Ok(best.1)
    }

    /// The display index of a switch: unique across lanes.
    fn bridge_idx(&self, lane: usize, local: usize) -> usize {
        local * self.lanes.len() + lane
    }

    fn list(&self) -> Response {
        let mut switches = Vec::new();
        for (lane, l) in self.lanes.iter().enumerate() {
            let st = l.lock_ctl();
            for (si, e) in st.registry.switches_indexed() {
                switches.push(SwitchInfo {
                    name: e.name.clone(),
                    index: self.bridge_idx(lane, si),
                    bridge_batch: e.switch.config().batch,
                    ports: e
                        .switch
                        .ports()
                        .chain(
                            e.switch
                                .monitors()
                                .filter_map(|(m, _)| e.switch.port(m).map(|p| (m, p))),
                        )
                        .map(|(pid, p)| PortSummary {
                            name: p.name().to_string(),
                            index: pid.0,
                            geometry: p.geometry().into(),
                            clients: st.registry.open_count(PortKey {
                                switch: si,
                                port: pid,
                            }),
                        })
                        .collect(),
                });
            }
        }
        switches.sort_by_key(|s| s.index);
        let hosts = self
            .hosts
            .iter()
            .map(|(n, h)| HostInfo {
                name: n.clone(),
                kind: h.kind.name().to_string(),
                attached: h.attached.as_ref().map(|a| a.0.clone()),
                waiting: h
                    .attached
                    .is_none()
                    .then(|| h.pending_port.clone())
                    .flatten(),
                // A TAP says so itself; an existing interface is looked up by name.
                gone: h.counters.gone.load(std::sync::atomic::Ordering::Relaxed)
                    || (matches!(h.kind, Kind::Nic | Kind::Xdp) && sys::if_index(n).is_none()),
                counters: h.counters.snapshot(),
            })
            .collect();
        Response::List { switches, hosts }
    }

    fn stats(&self, port: Option<&str>) -> Response {
        let mut ports = Vec::new();
        for l in &self.lanes {
            let st = l.lock_ctl();
            for (_, e) in st.registry.switches_indexed() {
                let monitors = e
                    .switch
                    .monitors()
                    .filter_map(|(m, _)| e.switch.port(m).map(|p| (m, p)));
                for (pid, p) in e.switch.ports().chain(monitors) {
                    if port.is_some_and(|n| n != p.name()) {
                        continue;
                    }
                    let s = p.stats();
                    ports.push(PortStats {
                        name: p.name().to_string(),
                        switch: e.name.clone(),
                        index: pid.0,
                        counters: Counters {
                            tx_packets: s.tx_packets,
                            tx_bytes: s.tx_bytes,
                            rx_packets: s.rx_packets,
                            rx_bytes: s.rx_bytes,
                            forwarded: s.forwarded,
                            copies: s.copies,
                            copies_dropped: s.copies_dropped,
                            ring_resets: s.ring_resets,
                            drops: DropReason::ALL
                                .iter()
                                .map(|r| (r.name().to_string(), s.drop_count(*r)))
                                .collect(),
                        },
                    });
                }
            }
        }
        match port {
            Some(n) if ports.is_empty() => error(
                ErrorKind::NotFound,
                format!(
                    "no port `{}` is open (see `vale-ctl list`)",
                    n.escape_default()
                ),
            ),
            _ => Response::Stats { ports },
        }
    }

    fn fdb(&self, switch: &str) -> Response {
        let lane = self
            .lanes
            .iter()
            .find(|l| l.lock_ctl().registry.switch(switch).is_some())
            .unwrap_or(&self.lanes[0]);
        let st = lane.lock_ctl();
        let now = lane.now();
        let Some(e) = st.registry.switch(switch) else {
            return error(
                ErrorKind::NotFound,
                format!(
                    "no switch `{}` exists (see `vale-ctl list`)",
                    switch.escape_default()
                ),
            );
        };
        let table = e.switch.lookup().table();
        let entries = table
            .map(|t| t.rows(now))
            .unwrap_or_default()
            .into_iter()
            .map(|r| FdbRow {
                mac: r.mac.to_string(),
                port: e
                    .switch
                    .port(r.port)
                    .map_or_else(|| "?".into(), |p| p.name().to_string()),
                index: r.port.0,
                age_secs: r.age_secs,
            })
            .collect();
        let counters: BTreeMap<String, u64> = table
            .map(|t| t.counters())
            .unwrap_or_default()
            .into_iter()
            .map(|(name, v)| (name.to_string(), v))
            .collect();
        Response::Fdb {
            switch: e.name.clone(),
            entries,
            counters,
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Response {
        let bad = |why: String| error(ErrorKind::BadRequest, why);
        match key {
            "bridge_batch" => {
                let Ok(n) = value.parse::<usize>() else {
                    return bad(format!(
                        "bridge_batch `{}` is not a number",
                        value.escape_default()
                    ));
                };
                let mut result = Ok(());
                for l in &self.lanes {
                    result = result.and(l.lock_ctl().registry.set_batch(n));
                }
                match result {
                    Ok(()) => {
                        self.settings.limits.batch = n;
                        tracing::info!("bridge_batch set to {n}");
                        Response::Done {
                            message: format!("bridge_batch = {n}"),
                        }
                    }
                    Err(e) => bad(e.to_string()),
                }
            }
            "verbose" => match value.parse::<u8>() {
                Ok(v) => {
                    self.settings.verbose = v;
                    (self.set_verbosity)(v);
                    Response::Done {
                        message: format!("verbose = {v}"),
                    }
                }
                Err(_) => bad(format!(
                    "verbose `{}` is not a number 0..=255",
                    value.escape_default()
                )),
            },
            other => bad(format!(
                "unknown setting `{}`; settable at run time: bridge_batch, verbose",
                other.escape_default()
            )),
        }
    }

    fn settings(&self) -> Response {
        let s = &self.settings;
        let l = &s.limits;
        let g = l.default_geometry;
        let settings = BTreeMap::from([
            ("socket".to_string(), s.socket.display().to_string()),
            ("socket_mode".to_string(), format!("{:04o}", s.socket_mode)),
            ("max_switches".to_string(), l.max_switches.to_string()),
            ("max_ports".to_string(), l.max_ports.to_string()),
            ("max_rings".to_string(), l.max_rings.to_string()),
            ("max_slots".to_string(), l.max_slots.to_string()),
            ("max_buf_size".to_string(), l.max_buf_size.to_string()),
            ("max_name_len".to_string(), l.max_name_len.to_string()),
            ("bridge_batch".to_string(), l.batch.to_string()),
            ("rings".to_string(), g.tx_rings.to_string()),
            ("slots".to_string(), g.tx_slots.to_string()),
            ("buf_size".to_string(), g.buf_size.to_string()),
            ("fdb_size".to_string(), l.fdb.capacity.to_string()),
            ("fdb_max_age".to_string(), l.fdb.max_age_secs.to_string()),
            ("verbose".to_string(), s.verbose.to_string()),
            ("busy_poll_us".to_string(), s.busy_poll_us.to_string()),
            ("threads".to_string(), self.lanes.len().to_string()),
            (
                "cpus".to_string(),
                s.cpus
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]);
        Response::Settings { settings }
    }
}

fn error(kind: ErrorKind, message: String) -> Response {
    Response::Error { kind, message }
}

fn kind_of(e: &RegistryError) -> ErrorKind {
    match e {
        RegistryError::Name(_) | RegistryError::BadMonitor { .. } => ErrorKind::BadName,
        RegistryError::TooManySwitches { .. }
        | RegistryError::OverLimit { .. }
        | RegistryError::Engine { .. } => ErrorKind::Limit,
        RegistryError::NoSuchPort(_) | RegistryError::NoSuchSwitch(_) => ErrorKind::NotFound,
        RegistryError::Region { .. } => ErrorKind::Internal,
    }
}

fn port_name(reg: &Registry, key: PortKey) -> String {
    reg.switches_indexed()
        .find(|(si, _)| *si == key.switch)
        .and_then(|(_, e)| e.switch.port(key.port).map(|p| p.name().to_string()))
        .unwrap_or_else(|| format!("{}:{}", key.switch, key.port))
}

fn make_fds(shared: &Shared, key: PortKey) -> Result<PortFds, String> {
    let ev = || {
        rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| format!("eventfd failed: {e}"))
    };
    let f = PortFds {
        kick: ev()?,
        notify: ev()?,
    };
    epoll::add(
        &shared.epoll,
        &f.kick,
        epoll::EventData::new_u64(key_data(key)),
        epoll::EventFlags::IN,
    )
    .map_err(|e| format!("epoll_ctl failed: {e}"))?;
    Ok(f)
}

/// Pins the calling forwarding thread to one CPU (checked against the affinity mask at
/// startup, so a failure here is unusual: it is logged, and the thread runs unpinned).
fn pin(thread: usize, cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    match rustix::thread::sched_setaffinity(None, &set) {
        Ok(()) => tracing::debug!(thread, cpu, "forwarding thread pinned"),
        Err(e) => tracing::warn!(thread, cpu, "cannot pin forwarding thread: {e}"),
    }
}
