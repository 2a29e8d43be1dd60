//! vhost-user ports (`vale-ctl vhost-user`): a switch port served to QEMU (or DPDK's
//! `net_virtio_user`) as a virtio-net device over vhost-user, with the rust-vmm crates
//! doing the protocol.
//!
//! The crate's thread only handles the protocol and turns the guest's kicks into
//! wake-ups (`device`, behind the `relay` that papers over QEMU 7.2 and checks the
//! memory table, run by the protocol `server` thread); the switch's forwarding thread
//! serves the queues itself (`datapath`), like host ports: guest TX chains go into the
//! port's TX ring (12-byte virtio-net header in front, the port's `hdr_len`) in the pass
//! that forwards them, and packets for the guest go into its RX buffers (several per
//! packet if the guest accepted MRG_RXBUF, else one) straight from the sender's buffers
//! when the sender has the same header, or from the port's RX ring. The queues are
//! walked by valed's own split-ring code (`split`) over the guest's regions translated
//! once per memory table (`sys::guest`), which checks every descriptor against them: a
//! bad descriptor is a counted error on the port, never a crash. The memory itself is
//! sealed against shrinking before it is measured and mapped (`relay`), and watched for
//! truncation all the same (`sys::sigbus`): a frontend that cuts it from under valed is
//! counted (`memory_faults`) and disconnected, and valed lives on.

pub(crate) mod datapath;
mod device;
pub(crate) mod relay;
mod server;
pub(crate) mod split;

use super::{AfterDetach, Attach, Backend, DrivenPort, PortCounters, Start};
use crate::error::{CtlError, PortError};
use datapath::{Outbox, VhostIo};
use device::NetBackend;
use server::ProtocolServer;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use vhost_user_backend::VringRwLock;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// virtio-net header with `num_buffers` (VERSION_1 / MRG_RXBUF).
pub const VNET_HDR: usize = 12;
const RX: u16 = 0;
const TX: u16 = 1;
/// Packets delivered to the guest per event before the next look at the port's ring.
const BURST: usize = 256;
/// The largest frame a guest may send (a 64 KiB TSO frame), header not counted.
const MAX_FRAME: usize = 65535 + 14;
/// Most guest buffers one packet may take (a 64 KiB frame in 1.5 KiB buffers takes 44).
const MAX_RX_BUFFERS: usize = 128;
// virtio-net feature bits (virtio 1.x, 5.1.3).
const F_CSUM: u32 = 0;
const F_GUEST_CSUM: u32 = 1;
const F_GUEST_TSO4: u32 = 7;
const F_GUEST_TSO6: u32 = 8;
const F_GUEST_ECN: u32 = 9;
const F_HOST_TSO4: u32 = 11;
const F_HOST_TSO6: u32 = 12;
const F_HOST_ECN: u32 = 13;

/// What the vhost crate's thread learns about the frontend, for the forwarding thread
/// that moves the packets: the queues, the guest's memory and what it accepted.
#[derive(Default)]
pub struct Guest {
    /// The RX and TX queues, once the frontend has set them up (cleared when it goes).
    vrings: Option<Vec<VringRwLock>>,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// The same memory as the forwarding thread walks it: its regions translated once.
    map: Option<crate::sys::guest::GuestMap>,
    /// Where the RX queue's rings were last found in guest memory.
    rx_split: Option<split::Split>,
    /// Scratch for the RX walker (the spans and chains of one frame's buffers).
    scratch: datapath::Scratch,
    /// Frames on their way to the guest, and the features it acknowledged.
    out: Outbox,
    /// Used RX entries written since the used index was last published (and the guest
    /// maybe signalled): published once per pass, in `push`.
    rx_dirty: bool,
    /// The RX and TX queues' used index when valed last decided whether to signal the
    /// guest (`None`: not since its queues were set up); see `Split::wants_signal`.
    rx_since: Option<u16>,
    tx_since: Option<u16>,
    /// The guest's TX avail index ran beyond its ring: counted once, queue ignored
    /// until the frontend sets it up again.
    tx_broken: bool,
    /// The guest memory's ranges, watched for truncation, and the faults already counted.
    watched: Option<crate::sys::sigbus::Watched>,
    faults_seen: u64,
    /// The frontend's connection, shut down when it truncates its memory.
    front: Option<std::os::unix::net::UnixStream>,
}

impl Guest {
    /// Queue `q` and the guest's memory, if the frontend has set them up.
    fn queue(
        &self,
        q: u16,
    ) -> Option<(
        VringRwLock,
        vm_memory::GuestMemoryLoadGuard<GuestMemoryMmap>,
    )> {
        let vq = self.vrings.as_ref()?.get(q as usize)?.clone();
        Some((vq, self.mem.as_ref()?.memory()))
    }

    /// The memory the crate mapped for the frontend, its ranges watched for truncation
    /// before anyone may touch them (the old memory's unwatched first).
    fn set_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        let map = crate::sys::guest::GuestMap::new(mem.memory().into_inner());
        self.mem = None;
        self.map = None;
        self.watched = None;
        self.watched = Some(crate::sys::sigbus::Watched::new(map.ranges())?);
        self.faults_seen = 0;
        self.map = Some(map);
        self.mem = Some(mem);
        Ok(())
    }

    /// After guest memory was touched: if the frontend truncated it meanwhile (a SIGBUS
    /// caught, the range now zeros), counts it, stops serving the queues and cuts the
    /// frontend off (the protocol thread then forgets it). True if so.
    fn check_faults(&mut self, counters: &PortCounters) -> bool {
        let Some(n) = self.watched.as_ref().map(|w| w.faults()) else {
            return false;
        };
        if n == self.faults_seen {
            return false;
        }
        counters
            .memory_faults
            .fetch_add(n - self.faults_seen, Ordering::Relaxed);
        self.faults_seen = n;
        tracing::warn!(
            "vhost-user: the frontend truncated guest memory under valed ({n} regions \
             lost): disconnected"
        );
        self.vrings = None;
        self.mem = None;
        self.map = None;
        if let Some(f) = &self.front {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
        true
    }

    /// The frontend went away: nothing of it may be touched any more.
    pub fn forget(&mut self, counters: &PortCounters) {
        self.vrings = None;
        self.mem = None;
        self.map = None;
        self.watched = None;
        self.front = None;
        self.rx_dirty = false;
        self.rx_since = None;
        self.tx_since = None;
        self.rx_split = None;
        self.out.rx_seen = None;
        self.tx_broken = false;
        let n = self.out.pending.len() as u64;
        counters.write_errors.fetch_add(n, Ordering::Relaxed);
        while let Some(f) = self.out.pending.pop_front() {
            self.out.recycle(f);
        }
    }
}

pub type GuestRef = Arc<Mutex<Guest>>;

fn lock(g: &GuestRef) -> std::sync::MutexGuard<'_, Guest> {
    g.lock().unwrap_or_else(|p| p.into_inner())
}

/// The control side: the socket, the protocol thread once started.
pub struct VhostUser {
    name: String,
    socket: PathBuf,
    client: bool,
    /// Where the vhost crate listens behind the relay: a directory only valed enters.
    private: PathBuf,
    server: Option<ProtocolServer>,
    /// Accept guest memory that cannot be sealed (`vhost_trust_unsealed`).
    trust_unsealed: bool,
}

impl VhostUser {
    /// valed listens at `socket` (QEMU `-chardev socket,path=PATH` without `server=on`,
    /// DPDK `net_virtio_user0,path=PATH`) or, with `client`, connects to a frontend
    /// listening there (QEMU `server=on`, OVS `dpdkvhostuserclient`); a frontend that goes
    /// away may come back. `private_dir` is where the crate's own socket goes; with
    /// `trust_unsealed`, guest memory that cannot be sealed is accepted.
    pub fn create(
        name: &str,
        socket: &str,
        client: bool,
        private_dir: &Path,
        trust_unsealed: bool,
    ) -> Result<VhostUser, CtlError> {
        if client {
            // Say now if nobody listens there; later losses are retried quietly.
            std::os::unix::net::UnixStream::connect(socket).map_err(|source| {
                PortError::NoPeer {
                    path: socket.to_string(),
                    source,
                }
            })?;
        }
        Ok(VhostUser {
            name: name.to_string(),
            socket: PathBuf::from(socket),
            client,
            private: private_socket(private_dir, name)?,
            server: None,
            trust_unsealed,
        })
    }
}

/// A socket path for host port `name` in `dir`, a directory beside the control socket
/// that only valed's user may enter (made so if it is not).
fn private_socket(dir: &Path, name: &str) -> Result<PathBuf, CtlError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let fail = |e: std::io::Error| CtlError::Internal(format!("{}: {e}", dir.display()));
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(CtlError::Internal(format!(
                "cannot create {}: {e}",
                dir.display()
            )));
        }
    }
    let m = std::fs::symlink_metadata(dir).map_err(fail)?;
    if !m.is_dir() || m.uid() != rustix::process::geteuid().as_raw() {
        return Err(CtlError::Internal(format!(
            "{} is not a directory of valed's user",
            dir.display()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    Ok(dir.join(format!("{name}.sock")))
}

impl Backend for VhostUser {
    fn kind(&self) -> &'static str {
        "vhost-user"
    }

    /// The port carries the 12-byte header, and packets with one are handed over
    /// directly into guest buffers.
    fn attach(&self) -> Attach {
        Attach {
            hdr_len: VNET_HDR as u16,
            direct: true,
        }
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let guest: GuestRef = Default::default();
        let socket = self.socket.display().to_string();
        let server = ProtocolServer::start(
            self.name.clone(),
            &socket,
            self.client,
            self.trust_unsealed,
            self.private.clone(),
            NetBackend::new(guest.clone(), cx.waker),
            cx.counters.clone(),
        )
        .map_err(|e| PortError::Refused(format!("cannot serve vhost-user at {socket}: {e}")))?;
        self.server = Some(server);
        tracing::info!(port = %self.name, socket, client = self.client, "vhost-user port ready");
        Ok(Box::new(VhostIo::new(guest, cx.rings, cx.counters)))
    }

    fn stop(&mut self) -> AfterDetach {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
        AfterDetach::Forget
    }

    fn remove(&mut self) {
        if !self.client {
            let _ = std::fs::remove_file(&self.socket);
        }
    }

    /// valed's own socket file (removed with the port); in client mode the frontend's,
    /// left alone.
    fn socket(&self) -> Option<&Path> {
        (!self.client).then_some(self.socket.as_path())
    }

    fn describe(&self) -> String {
        if self.client {
            format!("vhost-user, connecting to {}", self.socket.display())
        } else {
            format!("vhost-user on {}", self.socket.display())
        }
    }
}
