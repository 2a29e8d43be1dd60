//! Ports valed drives itself, behind two seams: [`DrivenPort`], the data plane its
//! lane's forwarding thread calls each pass, and [`Backend`], the control plane the
//! control thread owns. Each kind is one module; [`create`] is the one place that
//! knows them all.

mod afpacket;
pub mod counters;
pub mod fd_io;
pub mod memif;
pub(crate) mod notify;
pub mod qemu_dgram;
pub mod qemu_stream;
pub mod rings;
pub mod tap;
pub mod vhost_user;
pub mod vxlan;
mod xdp;

pub use counters::PortCounters;
pub use rings::PortRings;
pub use xdp::probe as probe_af_xdp;

use crate::error::{CtlError, PortError};
use rustix::event::epoll;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use vale::proto::PortSpec;
use vale_abi::PortGeometry;
use vale_switch::Limits;

/// Frames moved each way per driven port per pass (a VM's guest queues take more:
/// `vhost_user`).
pub const BURST: usize = 64;
/// Largest frame a driven port reads or writes: a 64 KiB IP packet with its Ethernet
/// and virtio-net headers.
pub const MAX_FRAME: usize = 65536 + 256;

/// A packet handed over straight from the sender's buffers (`Switch::set_direct`).
pub struct Direct<'a> {
    /// The destination's RX ring the engine chose (the sender's TX ring modulo the
    /// destination's RX rings): a vhost-user port of several queue pairs delivers into
    /// that pair's RX queue; ports of one ring ignore it.
    pub ring: u16,
    /// The destination's virtio-net header when it differs from the sender's, else
    /// empty (the sender's header is then at the start of the first fragment).
    pub hdr: &'a [u8],
    /// The frame, in the sender's buffers for the duration of the call.
    pub frags: &'a [vale_abi::Frag<'a>],
}

/// The data-plane half of a port whose client is the forwarding thread itself. Every
/// method runs on the lane's thread under its lock; none may block.
pub trait DrivenPort: Send {
    /// Peer -> the port's TX ring: at most a burst, then `txsync` if anything moved.
    /// Returns the frames taken (the pass's "moved").
    fn pull(&mut self) -> usize;
    /// The port's RX ring -> peer: at most a burst, then `rxsync` if anything moved.
    /// Returns the frames handed on.
    fn push(&mut self) -> usize;
    /// A direct delivery; false means dropped (the engine counts `tx_error`). Called
    /// only for ports attached with `Attach { direct: true, .. }`.
    fn send(&mut self, _pkt: &Direct<'_>) -> bool {
        false
    }
    /// The lane is about to sleep: ask the peer to kick. Returns true if work is
    /// already waiting (the lane then does not sleep).
    fn arm(&mut self) -> bool {
        false
    }
    /// After [`DrivenPort::arm`] found nothing waiting: the longest the lane may sleep
    /// (`None`: until a kick, or the lane's own timeout). For a port whose peer makes
    /// room without saying so (a memif receiver never kicks its sender), while frames
    /// wait for that room.
    fn wake_within(&mut self) -> Option<std::time::Duration> {
        None
    }
    /// The lane woke: polling again, no kicks wanted.
    fn disarm(&mut self) {}
    /// epoll reported ERR or HUP on one of this port's descriptors.
    fn fault(&mut self) {}
    /// The port's queue pairs, for a port of several that the threads of a switch of
    /// several threads serve in parallel ([`Pairs`]); `None` (every port of one pair):
    /// the lane's thread serves the whole port through the methods above. Asked once,
    /// when the port starts.
    fn pairs(&self) -> Option<Arc<dyn Pairs>> {
        None
    }
}

/// The queue pairs of a driven port of several (a vhost-user port's, a multiqueue
/// TAP's): pair `i` is the peer's queue pair `i`, the port's TX ring `i` and RX ring
/// `i`. On a switch of several threads, pair `i` is served by worker `i % threads`
/// (the lane's thread is worker 0, and also serves the pairs of a helper that is
/// parked), as OVS-DPDK gives each receive queue one PMD thread: each pair behind its
/// own lock, so threads serving different pairs never wait for each other. On a
/// switch of one thread the lane's thread serves the whole port through
/// [`DrivenPort`] and these are not called. None may block beyond a pair's lock, held
/// by another thread only for one burst.
pub trait Pairs: Send + Sync {
    /// How many pairs.
    fn count(&self) -> usize;
    /// Before a pass serves pair `i`'s TX ring and RX ring: [`DrivenPort::pull`] for
    /// that pair only (the peer's queue `i` -> TX ring `i`).
    fn pull(&self, i: usize) -> usize;
    /// After the pass: RX ring `i` -> the peer ([`DrivenPort::push`] for that ring;
    /// what it holds may go to another of the peer's queues if the peer does not run
    /// queue `i`).
    fn push(&self, i: usize) -> usize;
    /// The thread serving pair `i` is about to sleep ([`DrivenPort::arm`]).
    fn arm(&self, i: usize) -> bool;
    /// It woke ([`DrivenPort::disarm`]).
    fn disarm(&self, i: usize);
}

/// How a port of some kind sits on its switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach {
    /// virtio-net header bytes on its frames: TAP 12, AF_PACKET 10, vhost-user 12,
    /// else 0.
    pub hdr_len: u16,
    /// Deliveries go to [`DrivenPort::send`] from the senders' buffers.
    pub direct: bool,
}

/// Registers a driven port's descriptors in its lane's epoll set under the port's
/// token (readable: the forwarding thread wakes; ERR/HUP: [`DrivenPort::fault`]).
pub struct Watcher {
    epoll: Arc<OwnedFd>,
    token: u64,
}

impl Watcher {
    pub fn new(epoll: Arc<OwnedFd>, token: u64) -> Watcher {
        Watcher { epoll, token }
    }

    pub fn add(&self, fd: impl AsFd) -> Result<(), PortError> {
        epoll::add(
            &*self.epoll,
            fd,
            epoll::EventData::new_u64(self.token),
            epoll::EventFlags::IN,
        )
        .map_err(|e| PortError::io("epoll_ctl", e))
    }

    /// Also wake when `fd` becomes writable (`out`), or stop asking.
    pub fn set_out(&self, fd: impl AsFd, out: bool) -> bool {
        let flags = if out {
            epoll::EventFlags::IN | epoll::EventFlags::OUT
        } else {
            epoll::EventFlags::IN
        };
        epoll::modify(
            &*self.epoll,
            fd,
            epoll::EventData::new_u64(self.token),
            flags,
        )
        .is_ok()
    }

    /// Takes `fd` out of the set. Closing a descriptor does this by itself only when no
    /// other descriptor refers to the same file (a TAP's has a twin in its backend).
    pub fn remove(&self, fd: impl AsFd) {
        let _ = epoll::delete(&*self.epoll, fd);
    }
}

/// Wakes a lane's forwarding thread from another thread (a VM's kick arrives in the
/// vhost-user protocol thread).
#[derive(Clone)]
pub struct Waker(pub(crate) Arc<OwnedFd>);

impl Waker {
    pub fn wake(&self) {
        let _ = rustix::io::write(&*self.0, &1u64.to_ne_bytes());
    }
}

/// What [`Backend::start`] is given.
pub struct Start<'a> {
    /// The application side of the port's rings (TX ring 0, RX ring 0).
    pub rings: PortRings,
    /// Its further ring pairs (TX ring `i`, RX ring `i` from 1), for a geometry of
    /// several (a vhost-user port's queue pairs); empty for every other kind.
    pub more_rings: Vec<PortRings>,
    /// The port's counters (`vale-ctl list` reads them).
    pub counters: Arc<PortCounters>,
    /// Where the port's descriptors go to wake its lane.
    pub watcher: Watcher,
    pub waker: Waker,
    /// The host port's name, for messages.
    pub name: &'a str,
}

/// What happens to a backend once its port left the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterDetach {
    /// It stays for another attach (a TAP valed created: `vale-ctl -n`).
    Keep,
    /// It is gone with the port.
    Forget,
}

/// The control descriptor of a backend became readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlEvent {
    /// Nothing to do.
    None,
    /// A peer connected: attach the port if it is not, or start its driver again.
    Connected,
}

/// What `vale-ctl list` says about a host port besides its counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Its interface is gone.
    pub gone: bool,
    /// It waits for a peer before it joins its switch.
    pub waiting: bool,
}

/// The control-plane half of one port kind.
pub trait Backend: Send {
    /// The kind as `vale-ctl list` prints it: "tap", "nic", "nic-xdp", "qemu-dgram",
    /// "qemu-stream", "vhost-user", "memif", "vxlan".
    fn kind(&self) -> &'static str;
    fn attach(&self) -> Attach;
    /// Ring shape: [`host_geometry`], with one ring each way per queue pair for a
    /// vhost-user port.
    fn geometry(&self, limits: &Limits) -> Result<PortGeometry, CtlError> {
        host_geometry(limits)
    }
    /// Builds the data-plane half, without the lane's lock held (it may set up rings,
    /// load programs, start threads).
    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError>;
    /// The port left its switch: undo what `start` did outside the lane.
    fn stop(&mut self) -> AfterDetach;
    /// Removed for good: socket files valed created go.
    fn remove(&mut self) {}
    /// Whether `vale-ctl -r` may remove it (a persistent port: it outlives detaching).
    fn persistent(&self) -> bool {
        false
    }
    /// A socket file valed made for this port (no other port may use it, unless both
    /// [`share`](Backend::shares_socket) it).
    fn socket(&self) -> Option<&Path> {
        None
    }
    /// Ports of this kind may serve on one socket together (memif: one id each).
    fn shares_socket(&self) -> bool {
        false
    }
    /// A descriptor the control thread watches for this port.
    fn control_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// That descriptor is readable.
    fn control_ready(&mut self) -> ControlEvent {
        ControlEvent::None
    }
    fn status(&self) -> Status {
        Status::default()
    }
    /// Where its peer is, in a few words ("AF_PACKET on eth0", "vhost-user on PATH").
    fn describe(&self) -> String;
    /// Where the switch's address `mac` (in `vlan`), learned on this port, lives beyond
    /// it, if the port knows (a VXLAN uplink: the remote VTEP). For `vale-ctl fdb`.
    fn peer_of(&self, _mac: [u8; 6], _vlan: Option<u16>) -> Option<Peer> {
        None
    }
}

/// A learned address's place beyond its port ([`Backend::peer_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The remote VTEP (the outer source address) it was learned from.
    pub vtep: std::net::IpAddr,
    /// The VNI, when the uplink carries several.
    pub vni: Option<u32>,
}

/// What [`create`] would refuse of host port `name` made as `spec` without asking the
/// system (a queue count out of range, a name that is no interface name, a secret too
/// long, a VXLAN address that is no address): the config file's checks, so that a file
/// such a port is in is refused before anything is removed for it.
pub fn check(name: &str, spec: &PortSpec) -> Result<(), CtlError> {
    match spec {
        PortSpec::Tap { queues } => tap::Tap::check(name, *queues),
        PortSpec::Interface { .. } => {
            crate::sys::check_ifname(name).map_err(|e| CtlError::BadName(e.to_string()))
        }
        PortSpec::QemuDgram { .. } => Ok(()),
        PortSpec::QemuStream { listen, connect } => match (listen, connect) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            _ => Err(CtlError::BadRequest(
                "qemu-stream takes one of listen = PATH or connect = PATH".into(),
            )),
        },
        PortSpec::VhostUser { queues, .. } => vhost_user::check_queues(*queues),
        PortSpec::Memif { socket, secret, .. } => {
            memif::Memif::check(socket, secret.as_deref().unwrap_or(""))
        }
        PortSpec::Vxlan {
            vni,
            local,
            port,
            remote,
            group,
            dev,
            learning,
            src_ports,
            map,
            ..
        } => {
            // The device's index is the system's to say, when the port is made.
            if let Some(d) = dev {
                crate::sys::check_ifname(d)
                    .map_err(|e| CtlError::BadRequest(format!("dev {d}: {e}")))?;
            }
            vxlan::Conf::parse(
                *vni,
                local,
                *port,
                remote,
                group.as_deref(),
                None,
                *learning,
                src_ports.as_deref(),
            )?
            .with_map(map)
            .map(drop)
        }
    }
}

/// A new backend of the kind `spec` names, for host port `name`. This is the only
/// place that knows every kind.
/// A backend may put sockets only valed uses in `settings.private_dir()`.
pub fn create(
    name: &str,
    spec: &PortSpec,
    settings: &crate::Settings,
) -> Result<Box<dyn Backend>, CtlError> {
    let private_dir = &settings.private_dir();
    Ok(match spec {
        PortSpec::Tap { queues } => Box::new(tap::Tap::create(name, *queues)?),
        PortSpec::Interface { xdp: false } => Box::new(afpacket::Nic::create(name)?),
        PortSpec::Interface { xdp: true } => Box::new(xdp::Xdp::create(name)?),
        PortSpec::QemuDgram { socket, peer } => {
            Box::new(qemu_dgram::QemuDgram::create(socket, peer)?)
        }
        PortSpec::QemuStream { listen, connect } => Box::new(qemu_stream::QemuStream::create(
            listen.as_deref(),
            connect.as_deref(),
        )?),
        PortSpec::VhostUser {
            socket,
            client,
            queues,
        } => Box::new(vhost_user::VhostUser::create(
            name,
            socket,
            *client,
            *queues,
            private_dir,
            settings.vhost_trust_unsealed,
        )?),
        PortSpec::Memif {
            socket,
            abstract_name,
            id,
            secret,
            client,
        } => Box::new(memif::Memif::create(
            name,
            socket,
            *abstract_name,
            *id,
            secret.as_deref().unwrap_or(""),
            *client,
            settings.memif_trust_unsealed,
        )?),
        PortSpec::Vxlan {
            vni,
            local,
            port,
            remote,
            group,
            dev,
            learning,
            src_ports,
            offloads,
            map,
        } => Box::new(vxlan::Vxlan::create(
            name,
            vxlan::Conf::parse(
                *vni,
                local,
                *port,
                remote,
                group.as_deref(),
                dev.as_deref(),
                *learning,
                src_ports.as_deref(),
            )?
            .with_map(map)?
            .with_offloads(*offloads),
        )?),
    })
}

/// Host, QEMU and vhost-user ports: one ring each way. The RX ring is deep, since a
/// 64 KiB super-frame takes 32 slots and the interface may not keep up with a burst.
/// The TX ring is filled by the forwarding thread and emptied by the switch in the same
/// pass, so room for seven of the largest frames is enough, and its buffers stay in the
/// CPU's cache (TAP iperf3: forwarding thread 10 % less CPU per GB than with 4096
/// slots, docs/performance.md section 3). Ports whose rings cannot hold one largest
/// frame are refused instead of stalling.
pub fn host_geometry(l: &Limits) -> Result<PortGeometry, CtlError> {
    /// Slots of the RX ring (bounded by `--max-slots`).
    const RX_SLOTS: u32 = 4096;
    /// The TX ring has this many times the slots of the largest frame: 256 with
    /// 2112-byte buffers, room for seven such frames (one slot stays empty, netmap's
    /// rule).
    const TX_FRAMES: u32 = 8;
    let g = l.default_geometry;
    let frame = (MAX_FRAME as u32).div_ceil(g.buf_size);
    if l.max_slots <= frame {
        return Err(CtlError::Limit(format!(
            "host ports need rings of more than {frame} slots ({}-byte buffers, frames up to {MAX_FRAME} bytes); max_slots is {}",
            g.buf_size, l.max_slots
        )));
    }
    Ok(PortGeometry {
        tx_rings: 1,
        rx_rings: 1,
        tx_slots: (TX_FRAMES * frame).min(l.max_slots),
        rx_slots: l.max_slots.min(RX_SLOTS).max(g.rx_slots),
        ..g
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rings_hold_seven_largest_frames_and_small_limits_are_refused() {
        let mut l = Limits::default();
        l.default_geometry.buf_size = 2112;
        let g = host_geometry(&l).unwrap();
        assert_eq!((g.tx_rings, g.rx_rings), (1, 1));
        assert_eq!(g.tx_slots, 8 * 32);
        assert_eq!(g.rx_slots, 4096);
        (l.max_slots, l.default_geometry.rx_slots) = (512, 512);
        let g = host_geometry(&l).unwrap();
        assert_eq!((g.tx_slots, g.rx_slots), (256, 512));
        l.max_slots = 32;
        let e = host_geometry(&l).unwrap_err();
        assert_eq!(e.kind(), vale::proto::ErrorKind::Limit);
        assert!(e.to_string().contains("more than 32 slots"), "{e}");
        assert!(e.to_string().contains("max_slots is 32"), "{e}");
    }
}
