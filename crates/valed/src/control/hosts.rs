//! Host ports: ports whose client is valed's own forwarding thread (TAP interfaces,
//! attached interfaces, QEMU dgram/stream sockets, vhost-user), from creation to
//! removal.

use super::conn::Held;
use super::ports::{Acquired, drive_port};
use super::{Control, CtlToken};
use crate::error::CtlError;
use crate::host::{HostIo, Kind};
use crate::lane::Token;
use crate::sys;
use rustix::event::epoll;
use rustix::fd::OwnedFd;
use rustix::net::{SocketAddrUnix, SocketFlags};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vale::proto::HostInfo;
use vale_abi::PortGeometry;

/// Slots of a host port's RX ring (bounded by `--max-slots`).
const HOST_SLOTS: u32 = 4096;
/// A host port's TX ring has this many times the slots of the largest frame
/// (`host_geometry`): 256 with 2112-byte buffers, room for seven such frames (one slot
/// stays empty, netmap's rule).
const HOST_TX_FRAMES: u32 = 8;

/// Host ports by interface (or port) name, and the descriptors the control thread
/// watches for them.
#[derive(Default)]
pub struct HostPorts {
    by_name: BTreeMap<String, Host>,
    /// QEMU `-netdev stream` listeners: id -> (host port name, socket).
    listeners: HashMap<u64, (String, OwnedFd)>,
    next_id: u64,
}

impl HostPorts {
    /// The host port (interface name) attached as switch port `name`, if any.
    pub fn attached_as(&self, name: &str) -> Option<&str> {
        self.by_name
            .iter()
            .find(|(_, h)| h.attached.as_ref().is_some_and(|a| a.port == name))
            .map(|(n, _)| n.as_str())
    }

    /// What `vale-ctl list` shows of each host port.
    pub fn info(&self) -> Vec<HostInfo> {
        self.by_name
            .iter()
            .map(|(n, h)| HostInfo {
                name: n.clone(),
                kind: h.kind.name().to_string(),
                attached: h.attached.as_ref().map(|a| a.port.clone()),
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
            .collect()
    }
}

/// One host port, as the control thread knows it.
pub struct Host {
    pub kind: Kind,
    /// TAP: the device (the interface exists while valed holds it).
    pub tap: Option<OwnedFd>,
    /// Where it is attached.
    pub attached: Option<Attachment>,
    pub counters: Arc<crate::host::Counters>,
    /// A socket file valed created for it (removed with it).
    pub socket: Option<std::path::PathBuf>,
    /// A stream port waiting for its VM to connect: the switch port it will be.
    pub pending_port: Option<String>,
    /// A vhost-user port's serving thread.
    pub vhost: Option<crate::vhost::Worker>,
}

/// Where a host port is attached.
pub struct Attachment {
    /// The switch port, `valeX:NAME`.
    pub port: String,
    pub held: Held,
}

impl Control {
    /// Every host port detached and forgotten (shutdown): their threads stop, TAP
    /// interfaces and socket files disappear.
    pub fn remove_all_hosts(&mut self) {
        let names: Vec<String> = self.hosts.by_name.keys().cloned().collect();
        for n in names {
            self.detach_host(&n);
            self.forget_host(&n); // socket files of QEMU ports, attached or still waiting
        }
        self.hosts.by_name.clear();
    }

    /// `vale-ctl -n NAME`.
    pub(super) fn host_create(&mut self, name: &str) -> Result<String, CtlError> {
        sys::check_ifname(name).map_err(CtlError::BadName)?;
        if name.starts_with("vale") {
            return Err(CtlError::BadName(format!(
                "{name}: a persistent port's name may not start with `vale` (that names a switch port)"
            )));
        }
        if self.hosts.by_name.contains_key(name) || sys::if_index(name).is_some() {
            return Err(CtlError::Exists(format!(
                "{name} already exists (see `ip link` and `vale-ctl list`)"
            )));
        }
        let fd = sys::tap_create(name).map_err(|e| {
            CtlError::Internal(format!(
                "cannot create TAP interface {name}: {e} (valed needs CAP_NET_ADMIN and /dev/net/tun)"
            ))
        })?;
        tracing::info!(interface = name, "persistent port (TAP) created");
        self.hosts.by_name.insert(
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
        Ok(format!("created {name}"))
    }

    /// `vale-ctl -r NAME`.
    pub(super) fn host_remove(&mut self, name: &str) -> Result<String, CtlError> {
        match self.hosts.by_name.get(name) {
            None => Err(CtlError::NotFound(format!(
                "{name} is not a persistent port (create one with vale-ctl -n {name})"
            ))),
            Some(h) if h.kind == Kind::Nic => Err(CtlError::BadRequest(format!(
                "{name} is an attached interface, not a persistent port; detach it with vale-ctl -d"
            ))),
            Some(h) if h.attached.is_some() => {
                let p = h.attached.as_ref().map_or("", |a| a.port.as_str());
                Err(CtlError::Busy(format!(
                    "{name} is attached as {p}; detach it first (vale-ctl -d {p})"
                )))
            }
            Some(_) => {
                self.hosts.by_name.remove(name);
                tracing::info!(interface = name, "persistent port removed");
                Ok(format!("removed {name}"))
            }
        }
    }

    /// The port part of `port` (`valeX:NAME`).
    fn port_part(&self, port: &str) -> Result<String, CtlError> {
        let pn = vale_switch::PortName::parse(port, self.settings.limits.max_name_len)
            .map_err(vale_switch::RegistryError::from)?;
        Ok(pn.as_str()[pn.switch().len() + 1..].to_string())
    }

    /// `vale-ctl -a valeX:NAME [--xdp]`.
    pub(super) fn attach(&mut self, port: &str, xdp: bool) -> Result<String, CtlError> {
        let ifname = self.port_part(port)?;
        if let Some(a) = self
            .hosts
            .by_name
            .get(&ifname)
            .and_then(|h| h.attached.as_ref())
        {
            return Err(CtlError::Busy(format!(
                "{ifname} is already attached as {}",
                a.port
            )));
        }
        let kind = match self.hosts.by_name.get(&ifname) {
            Some(h) if xdp => {
                return Err(CtlError::BadRequest(format!(
                    "--xdp is for existing interfaces; {ifname} is a {} port",
                    h.kind.name()
                )));
            }
            Some(h) => h.kind,
            None if sys::if_index(&ifname).is_some() && xdp => Kind::Xdp,
            None if sys::if_index(&ifname).is_some() => Kind::Nic,
            None => {
                return Err(CtlError::NotFound(format!(
                    "no interface {ifname}: create a persistent port with vale-ctl -n {ifname}, or name an existing interface"
                )));
            }
        };
        if self.ports.exists(port) {
            return Err(CtlError::Busy(format!(
                "{port} is already a port opened by a client"
            )));
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
            Kind::Tap => self.hosts.by_name[&ifname]
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
        let dev = dev.map_err(CtlError::Internal)?;
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
    ) -> Result<String, CtlError> {
        let ifname = ifname.to_string();
        let a: Acquired = self.ports.acquire(port, self.host_geometry()?)?;
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
            .by_name
            .get(&ifname)
            .map(|h| h.counters.clone())
            .unwrap_or_default();
        let shared = self.ports.lane(a.held.lane).clone();
        let key = a.held.key;
        let token = Token::Driven(key).into_u64();
        let started = (|| {
            let mut st = shared.lock_ctl();
            // Packets for it are written to the interface from the senders' buffers
            // (not for datagram sockets: those need an address on every send).
            let rings = drive_port(&mut st, key, hdr, matches!(kind, Kind::Tap | Kind::Nic))?;
            let epoll_err = |e: rustix::io::Errno| CtlError::Internal(format!("epoll_ctl: {e}"));
            epoll::add(
                &shared.epoll,
                &dev,
                epoll::EventData::new_u64(token),
                epoll::EventFlags::IN,
            )
            .map_err(epoll_err)?;
            // AF_XDP: every queue's socket wakes the thread.
            for s in xsk.iter().flat_map(|a| a.socks.iter().skip(1)) {
                epoll::add(
                    &shared.epoll,
                    s.fd(),
                    epoll::EventData::new_u64(token),
                    epoll::EventFlags::IN,
                )
                .map_err(epoll_err)?;
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
                rings.tx,
                rings.rx,
                counters.clone(),
                peer,
                kind == Kind::QemuStream,
            )
            .with_ring(ring)
            .named(&ifname, token);
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
            st.hosts.insert(key, io);
            Ok(())
        })();
        match started {
            Ok(()) => {
                shared.wake_forwarder();
                tracing::info!(interface = %ifname, port, kind = kind.name(), "host port attached");
                let h = self.hosts.by_name.entry(ifname.clone()).or_insert(Host {
                    kind,
                    tap: None,
                    attached: None,
                    counters,
                    socket: None,
                    pending_port: None,
                    vhost: None,
                });
                h.attached = Some(Attachment {
                    port: port.to_string(),
                    held: a.held,
                });
                Ok(format!("attached {ifname} as {port}"))
            }
            Err(e) => {
                self.ports.release(a.held);
                Err(e)
            }
        }
    }

    /// The port part of `port` (`valeX:NAME`) for a new QEMU or vhost-user port, if
    /// neither a host port nor a switch port has that name yet.
    fn new_port_name(&self, port: &str) -> Result<String, CtlError> {
        let name = self.port_part(port)?;
        if self.hosts.by_name.contains_key(&name) || self.ports.exists(port) {
            return Err(CtlError::Exists(format!("{port} exists already")));
        }
        Ok(name)
    }

    /// Host, QEMU and vhost-user ports: one ring each way. The RX ring is deep, since a
    /// 64 KiB super-frame takes 32 slots and the interface may not keep up with a
    /// burst. The TX ring is filled by the forwarding thread and emptied by the switch
    /// in the same pass, so room for seven of the largest frames is enough, and its
    /// buffers stay in the CPU's cache (TAP iperf3: forwarding thread 10 % less CPU per
    /// GB than with 4096 slots, docs/performance.md section 3). Ports whose rings cannot
    /// hold one largest frame are refused instead of stalling.
    fn host_geometry(&self) -> Result<PortGeometry, CtlError> {
        let l = &self.settings.limits;
        let g = l.default_geometry;
        let frame = (crate::host::MAX_FRAME as u32).div_ceil(g.buf_size);
        if l.max_slots <= frame {
            return Err(CtlError::Limit(format!(
                "host ports need rings of more than {frame} slots ({}-byte buffers, frames up to {} bytes); max_slots is {}",
                g.buf_size,
                crate::host::MAX_FRAME,
                l.max_slots
            )));
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
    fn check_socket_path(&self, path: &str) -> Result<(), CtlError> {
        let p = Path::new(path);
        if p.as_os_str().is_empty() || p == self.settings.socket {
            return Err(CtlError::BadRequest(format!(
                "`{path}` cannot be a QEMU port's socket"
            )));
        }
        if self
            .hosts
            .by_name
            .values()
            .any(|h| h.socket.as_deref() == Some(p))
        {
            return Err(CtlError::Exists(format!(
                "{path} is already the socket of another port"
            )));
        }
        Ok(())
    }

    /// `vale-ctl qemu-dgram valeX:NAME --socket PATH --peer PATH`: a port for QEMU's
    /// `-netdev dgram` (one Ethernet frame per datagram, no header): valed binds PATH
    /// and sends to the VM's `local.path`.
    pub(super) fn qemu_dgram(
        &mut self,
        port: &str,
        socket: &str,
        peer: &str,
    ) -> Result<String, CtlError> {
        self.check_socket_path(socket)?;
        let name = self.new_port_name(port)?;
        let peer_addr = SocketAddrUnix::new(peer)
            .map_err(|e| CtlError::BadRequest(format!("--peer {peer}: {e}")))?;
        let dev = sys::dgram_bind(socket).map_err(|e| {
            CtlError::Internal(format!("cannot bind a datagram socket at {socket}: {e}"))
        })?;
        self.hosts.by_name.insert(
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
        if r.is_err() {
            if let Some(h) = self.hosts.by_name.remove(&name) {
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
    pub(super) fn qemu_stream(
        &mut self,
        port: &str,
        listen: Option<String>,
        connect: Option<String>,
    ) -> Result<String, CtlError> {
        let name = self.new_port_name(port)?;
        match (listen, connect) {
            (Some(path), None) => {
                self.check_socket_path(&path)?;
                let l = sys::stream_listen(&path)
                    .map_err(|e| CtlError::Internal(format!("cannot listen on {path}: {e}")))?;
                self.hosts.next_id += 1;
                let id = self.hosts.next_id;
                epoll::add(
                    &self.ep,
                    &l,
                    epoll::EventData::new_u64(CtlToken::Host(id).into_u64()),
                    epoll::EventFlags::IN,
                )
                .map_err(|e| CtlError::Internal(format!("epoll_ctl: {e}")))?;
                self.hosts.listeners.insert(id, (name.clone(), l));
                self.hosts.by_name.insert(
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
                Ok(format!("{port}: waiting for QEMU on {path}"))
            }
            (None, Some(path)) => {
                let conn = sys::stream_connect(&path).map_err(|e| {
                    CtlError::NotFound(format!(
                        "cannot connect to {path}: {e} (is QEMU listening there, server=on?)"
                    ))
                })?;
                self.hosts.by_name.insert(
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
                if r.is_err() {
                    self.hosts.by_name.remove(&name);
                }
                r
            }
            _ => Err(CtlError::BadRequest(
                "qemu-stream takes one of --listen PATH or --connect PATH".into(),
            )),
        }
    }

    /// `vale-ctl vhost-user valeX:NAME --socket PATH [--client]`: the port as a
    /// vhost-user device; valed listens at PATH (QEMU `-chardev socket,path=PATH` without
    /// `server=on`, DPDK `net_virtio_user0,path=PATH`) or, with `client`, connects to a
    /// frontend listening there (QEMU `server=on`, OVS `dpdkvhostuserclient`); a frontend
    /// that goes away may come back.
    pub(super) fn vhost_user(
        &mut self,
        port: &str,
        socket: &str,
        client: bool,
    ) -> Result<String, CtlError> {
        let name = self.new_port_name(port)?;
        self.check_socket_path(socket)?;
        if client {
            // Say now if nobody listens there; later losses are retried quietly.
            if let Err(e) = std::os::unix::net::UnixStream::connect(socket) {
                return Err(CtlError::NotFound(format!(
                    "cannot connect to {socket}: {e} (is QEMU listening there, server=on?)"
                )));
            }
        }
        let private = self.private_socket()?;
        let a = self.ports.acquire(port, self.host_geometry()?)?;
        let key = a.held.key;
        // The forwarding thread serves the guest's queues itself (vhost.rs `VhostIo`):
        // the port carries the 12-byte header, and packets with one are handed over
        // directly.
        let counters: Arc<crate::host::Counters> = Default::default();
        let guest: crate::vhost::GuestRef = Default::default();
        let shared = self.ports.lane(a.held.lane).clone();
        let started = (|| {
            let mut st = shared.lock_ctl();
            let rings = drive_port(&mut st, key, crate::vhost::VNET_HDR as u16, true)?;
            st.vhosts.insert(
                key,
                crate::vhost::VhostIo::new(guest.clone(), rings.tx, rings.rx, counters.clone()),
            );
            Ok::<(), CtlError>(())
        })();
        if let Err(e) = started {
            self.ports.release(a.held);
            return Err(e);
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
                shared.lock_ctl().vhosts.remove(&key);
                self.ports.release(a.held);
                return Err(CtlError::Internal(format!(
                    "cannot serve vhost-user at {socket}: {e}"
                )));
            }
        };
        tracing::info!(port, socket, client, "vhost-user port ready");
        self.hosts.by_name.insert(
            name,
            Host {
                kind: Kind::VhostUser,
                tap: None,
                attached: Some(Attachment {
                    port: port.to_string(),
                    held: a.held,
                }),
                counters,
                // valed's own socket file (removed with the port); in client mode the
                // frontend's, left alone.
                socket: (!client).then(|| PathBuf::from(socket)),
                pending_port: None,
                vhost: Some(worker),
            },
        );
        Ok(if client {
            format!("{port}: vhost-user connected to {socket}")
        } else {
            format!("{port}: vhost-user on {socket}")
        })
    }

    /// A fresh socket path in a directory beside the control socket that only valed's
    /// user may enter: where the vhost crate listens behind a port's relay.
    fn private_socket(&mut self) -> Result<PathBuf, CtlError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let dir = crate::daemon::private_dir(&self.settings.socket);
        let fail = |e: std::io::Error| CtlError::Internal(format!("{}: {e}", dir.display()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(CtlError::Internal(format!(
                    "cannot create {}: {e}",
                    dir.display()
                )));
            }
        }
        let m = std::fs::symlink_metadata(&dir).map_err(fail)?;
        if !m.is_dir() || m.uid() != rustix::process::geteuid().as_raw() {
            return Err(CtlError::Internal(format!(
                "{} is not a directory of valed's user",
                dir.display()
            )));
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
        self.hosts.next_id += 1;
        Ok(dir.join(format!("{}.sock", self.hosts.next_id)))
    }

    /// A descriptor watched for host port `id` is readable: a VM connected to a
    /// stream listener. The port is attached with this connection, or (a VM that
    /// restarted) its connection is replaced.
    pub(super) fn host_ready(&mut self, id: u64) {
        let Some((name, l)) = self.hosts.listeners.get(&id) else {
            return;
        };
        let name = name.clone();
        let Ok(conn) = rustix::net::accept_with(l, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
        else {
            return;
        };
        let Some(h) = self.hosts.by_name.get(&name) else {
            return;
        };
        match (&h.attached, h.pending_port.clone()) {
            (Some(a), _) => {
                let Held { lane, key } = a.held;
                let shared = self.ports.lane(lane).clone();
                let mut st = shared.lock_ctl();
                if let Some(io) = st.hosts.get_mut(&key) {
                    let _ = epoll::delete(&shared.epoll, &io.dev);
                    if epoll::add(
                        &shared.epoll,
                        &conn,
                        epoll::EventData::new_u64(Token::Driven(key).into_u64()),
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
                if let Err(e) = self.attach_dev(&port, &name, Kind::QemuStream, conn, None, None) {
                    tracing::warn!(port, "cannot attach the QEMU connection: {e}");
                }
            }
            (None, None) => {}
        }
    }

    /// Drops a host entry that is not a TAP: its socket file and stream listener go too.
    fn forget_host(&mut self, name: &str) {
        if let Some(h) = self.hosts.by_name.remove(name) {
            if let Some(p) = h.socket {
                let _ = std::fs::remove_file(p);
            }
        }
        let ids: Vec<u64> = self
            .hosts
            .listeners
            .iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, l)) = self.hosts.listeners.remove(&id) {
                let _ = epoll::delete(&self.ep, &l);
            }
        }
    }

    /// `vale-ctl -d valeX:NAME`.
    pub(super) fn detach(&mut self, port: &str) -> Result<String, CtlError> {
        // A stream port still waiting for its VM.
        let waiting = self
            .hosts
            .by_name
            .iter()
            .find(|(_, h)| h.attached.is_none() && h.pending_port.as_deref() == Some(port))
            .map(|(n, _)| n.clone());
        if let Some(n) = waiting {
            self.forget_host(&n);
            return Ok(format!("removed {port}"));
        }
        let Some(ifname) = self.hosts.attached_as(port).map(str::to_string) else {
            return Err(CtlError::NotFound(format!(
                "{port} is not an attached interface (see `vale-ctl list`)"
            )));
        };
        self.detach_host(&ifname);
        Ok(format!("detached {ifname} from {port}"))
    }

    /// Takes a host port off its switch (its forwarding thread stops driving it) and
    /// removes its switch port; an attached interface (not a persistent port) is
    /// forgotten, its socket closed.
    fn detach_host(&mut self, ifname: &str) {
        let Some(h) = self.hosts.by_name.get_mut(ifname) else {
            return;
        };
        let Some(a) = h.attached.take() else {
            return;
        };
        if let Some(mut w) = h.vhost.take() {
            w.stop();
        }
        let kind = h.kind;
        {
            let shared = self.ports.lane(a.held.lane).clone();
            let mut st = shared.lock_ctl();
            if let Some(io) = st.hosts.remove(&a.held.key) {
                // The TAP's descriptor has a twin in `Host::tap`: remove it from epoll
                // explicitly, closing this one would not.
                let _ = epoll::delete(&shared.epoll, &io.dev);
            }
            st.vhosts.remove(&a.held.key);
        }
        if kind != Kind::Tap {
            self.forget_host(ifname);
        }
        self.ports.release(a.held);
        tracing::info!(interface = ifname, port = %a.port, "host port detached");
    }
}
