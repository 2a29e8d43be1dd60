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
use std::sync::atomic::AtomicU16;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use vhost_user_backend::VringRwLock;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};

/// virtio-net header with `num_buffers` (VERSION_1 / MRG_RXBUF).
pub const VNET_HDR: usize = 12;
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
const F_MQ: u32 = 22;

/// Most queue pairs a port offers (`vale-ctl vhost-user --queues`): a switch port's
/// rings are bounded by `max_rings` (16 by default) anyway, and each pair takes a deep RX
/// ring of the port's memory.
pub const MAX_QUEUE_PAIRS: u16 = 16;

/// What the vhost crate's thread learns about the frontend, for the forwarding threads
/// that move the packets: the queues, the guest's memory and what it accepted. Behind a
/// read-write lock ([`GuestRef`]): the data path reads it (one pass at a time, each
/// queue pair behind its own lock, so threads serving different pairs never wait for
/// each other), the protocol thread changes it (memory tables, queues set up, the
/// frontend gone).
pub struct Guest {
    /// The queues (RX, TX of pair 0, then of pair 1, ...), once the frontend has set
    /// them up (cleared when it goes).
    vrings: Option<Vec<VringRwLock>>,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    /// The same memory as the forwarding thread walks it: its regions translated once.
    map: Option<crate::sys::guest::GuestMap>,
    /// Each queue pair's state: pair `i` is queues `2i` (RX) and `2i + 1` (TX), and the
    /// port's TX ring `i` and RX ring `i`.
    pairs: Vec<Mutex<Pair>>,
    /// For each of the port's RX rings, the pair whose RX queue takes what it holds:
    /// its own while the frontend runs it, else one that it runs (a frontend may use
    /// fewer pairs than offered). Updated once per pass (by pair 0's thread), with
    /// several pairs only; read by every pair's.
    route: Vec<AtomicU16>,
    /// The guest memory's ranges, watched for truncation, and the faults already counted.
    watched: Option<crate::sys::sigbus::Watched>,
    faults_seen: u64,
    /// The frontend's connection, shut down when it truncates its memory.
    front: Option<std::os::unix::net::UnixStream>,
}

/// One queue pair's state, as the forwarding thread keeps it between passes.
#[derive(Default)]
struct Pair {
    /// Where its RX queue's rings were last found in guest memory.
    rx_split: Option<split::Split>,
    /// Frames on their way to its RX queue, and the features the guest acknowledged.
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
    /// Scratch for the RX walker (the spans and chains of one frame's buffers).
    scratch: datapath::Scratch,
    /// Frames taken from its TX queue, for `vale-ctl list` (delivered ones: `out`).
    taken: u64,
}

impl Pair {
    /// The frontend set its queues up (again): nothing known of where they were.
    fn set_up(&mut self) {
        self.rx_since = None;
        self.tx_since = None;
        self.rx_split = None;
        self.out.rx_seen = None;
    }
}

/// The RX queue of pair `p`, and its TX queue.
fn rx_queue(p: usize) -> usize {
    2 * p
}
fn tx_queue(p: usize) -> usize {
    2 * p + 1
}

impl Guest {
    /// A guest of `pairs` queue pairs (1 to [`MAX_QUEUE_PAIRS`]), none set up yet.
    pub fn new(pairs: u16) -> Guest {
        let n = usize::from(pairs.clamp(1, MAX_QUEUE_PAIRS));
        Guest {
            vrings: None,
            mem: None,
            map: None,
            pairs: (0..n).map(|_| Mutex::new(Pair::default())).collect(),
            route: (0..n as u16).map(AtomicU16::new).collect(),
            watched: None,
            faults_seen: 0,
            front: None,
        }
    }

    /// The memory the crate mapped for the frontend, its ranges watched for truncation
    /// before anyone may touch them (the old memory's unwatched first). The forwarding
    /// threads touch guest memory through `map` only: the crate's own handle (`mem`,
    /// which its `VringRwLock` calls use) shows the new table from the moment the crate
    /// mapped it, before this runs.
    fn set_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        let map = crate::sys::guest::GuestMap::new(mem.memory().into_inner());
        // The old ranges' watch goes before their mapping: a fault repaired in a range
        // no longer mapped would map over whatever lives there by then.
        self.watched = None;
        self.mem = None;
        self.map = None;
        self.watched = Some(crate::sys::sigbus::Watched::new(map.ranges())?);
        self.faults_seen = 0;
        self.map = Some(map);
        self.mem = Some(mem);
        // Where a queue's rings were found is a place in the old table.
        for p in &mut self.pairs {
            p.get_mut().unwrap_or_else(|e| e.into_inner()).rx_split = None;
        }
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
        // Unwatched before the mapping may go, as in `set_memory`.
        self.watched = None;
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
        // Unwatched before the mapping may go, as in `set_memory`.
        self.watched = None;
        self.vrings = None;
        self.mem = None;
        self.map = None;
        self.front = None;
        for p in &mut self.pairs {
            let p = p.get_mut().unwrap_or_else(|e| e.into_inner());
            p.set_up();
            p.rx_dirty = false;
            p.tx_broken = false;
            let n = p.out.pending.len() as u64;
            counters.write_errors.fetch_add(n, Ordering::Relaxed);
            while let Some(f) = p.out.pop() {
                p.out.recycle(f);
            }
        }
    }

    /// Each pair's frames from the guest and to it, as `vale-ctl list` shows them.
    fn pair_counts(&self) -> Vec<(u64, u64)> {
        (0..self.pairs.len())
            .filter_map(|p| pair(self, p).map(|p| (p.taken, p.out.delivered)))
            .collect()
    }

    /// How many queue pairs the frontend runs (either queue ready and enabled).
    fn pairs_running(&self) -> usize {
        let Some(vr) = &self.vrings else {
            return 0;
        };
        (0..self.pairs.len())
            .filter(|&p| {
                [rx_queue(p), tx_queue(p)]
                    .iter()
                    .any(|&q| vr.get(q).is_some_and(datapath::live))
            })
            .count()
    }
}

pub type GuestRef = Arc<RwLock<Guest>>;

/// The guest for the data path (never taken twice by one thread: a writer waiting
/// would deadlock it).
fn read(g: &GuestRef) -> RwLockReadGuard<'_, Guest> {
    g.read().unwrap_or_else(|p| p.into_inner())
}

/// The guest for the protocol thread's changes.
fn write(g: &GuestRef) -> RwLockWriteGuard<'_, Guest> {
    g.write().unwrap_or_else(|p| p.into_inner())
}

/// Queue pair `p`'s state.
fn pair(g: &Guest, p: usize) -> Option<MutexGuard<'_, Pair>> {
    Some(g.pairs.get(p)?.lock().unwrap_or_else(|e| e.into_inner()))
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
    /// Queue pairs offered: the switch port has as many rings each way.
    queues: u16,
    /// What the forwarding thread serves, once started (for `describe`).
    guest: Option<GuestRef>,
}

/// A port offers 1 to [`MAX_QUEUE_PAIRS`] queue pairs.
pub fn check_queues(queues: u16) -> Result<(), CtlError> {
    if !(1..=MAX_QUEUE_PAIRS).contains(&queues) {
        return Err(CtlError::BadRequest(format!(
            "--queues {queues}: a vhost-user port offers 1 to {MAX_QUEUE_PAIRS} queue \
             pairs (one per frontend queue pair it may use, e.g. DPDK's queues=N)"
        )));
    }
    Ok(())
}

impl VhostUser {
    /// valed listens at `socket` (QEMU `-chardev socket,path=PATH` without `server=on`,
    /// DPDK `net_virtio_user0,path=PATH`) or, with `client`, connects to a frontend
    /// listening there (QEMU `server=on`, OVS `dpdkvhostuserclient`); a frontend that goes
    /// away may come back. `private_dir` is where the crate's own socket goes; with
    /// `trust_unsealed`, guest memory that cannot be sealed is accepted. The device
    /// offers `queues` queue pairs (1 to [`MAX_QUEUE_PAIRS`]).
    pub fn create(
        name: &str,
        socket: &str,
        client: bool,
        queues: u16,
        private_dir: &Path,
        trust_unsealed: bool,
    ) -> Result<VhostUser, CtlError> {
        check_queues(queues)?;
        if client {
            // Say now if nobody listens there; later losses are retried quietly.
            crate::sys::stream_connect(socket).map_err(|source| PortError::NoPeer {
                path: socket.to_string(),
                source,
            })?;
        }
        Ok(VhostUser {
            name: name.to_string(),
            socket: PathBuf::from(socket),
            client,
            private: private_socket(private_dir, name)?,
            server: None,
            trust_unsealed,
            queues,
            guest: None,
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

    /// One ring each way per queue pair (the host ports' shape otherwise).
    fn geometry(&self, limits: &vale_switch::Limits) -> Result<vale_abi::PortGeometry, CtlError> {
        let g = super::host_geometry(limits)?;
        Ok(vale_abi::PortGeometry {
            tx_rings: self.queues,
            rx_rings: self.queues,
            ..g
        })
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let guest: GuestRef = Arc::new(RwLock::new(Guest::new(self.queues)));
        let mut rings = vec![cx.rings];
        rings.extend(cx.more_rings);
        if rings.len() != usize::from(self.queues) {
            return Err(PortError::Refused(format!(
                "{} ring pairs for {} queue pairs",
                rings.len(),
                self.queues
            )));
        }
        let socket = self.socket.display().to_string();
        let server = ProtocolServer::start(
            self.name.clone(),
            &socket,
            self.client,
            self.trust_unsealed,
            self.private.clone(),
            NetBackend::new(guest.clone(), cx.waker, self.queues),
            cx.counters.clone(),
        )
        .map_err(|e| PortError::Refused(format!("cannot serve vhost-user at {socket}: {e}")))?;
        self.server = Some(server);
        self.guest = Some(guest.clone());
        tracing::info!(port = %self.name, socket, client = self.client, queues = self.queues, "vhost-user port ready");
        Ok(Box::new(VhostIo::new(guest, rings, cx.counters)))
    }

    fn stop(&mut self) -> AfterDetach {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
        self.guest = None;
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

    /// Where, and with several queue pairs how many the frontend runs ("vhost-user on
    /// PATH, 4 queue pairs (2 running)").
    fn describe(&self) -> String {
        let at = if self.client {
            format!("vhost-user, connecting to {}", self.socket.display())
        } else {
            format!("vhost-user on {}", self.socket.display())
        };
        if self.queues == 1 {
            return format!("{at}, 1 queue pair");
        }
        let Some(g) = self.guest.as_ref() else {
            return format!("{at}, {} queue pairs (0 running)", self.queues);
        };
        let g = read(g);
        let per: Vec<String> = g
            .pair_counts()
            .iter()
            .enumerate()
            .map(|(i, (from, to))| format!("p{i} {from}/{to}"))
            .collect();
        format!(
            "{at}, {} queue pairs ({} running; from_host/to_host per pair: {})",
            self.queues,
            g.pairs_running(),
            per.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_user_backend::VringT;

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("vale-vhost-{tag}-{}", std::process::id()))
    }

    #[test]
    fn queue_pairs_outside_one_to_sixteen_are_refused_with_the_range() {
        let d = dir("q");
        for bad in [0, MAX_QUEUE_PAIRS + 1, u16::MAX] {
            let Err(e) = VhostUser::create("vm", "/nonexistent/vm.sock", false, bad, &d, false)
            else {
                panic!("--queues {bad} accepted");
            };
            assert_eq!(e.kind(), vale::proto::ErrorKind::BadRequest);
            let m = e.to_string();
            assert!(m.contains(&format!("--queues {bad}")), "{m}");
            assert!(m.contains("1 to 16 queue pairs"), "{m}");
        }
        let mut l = vale_switch::Limits::default();
        l.default_geometry.buf_size = 2112;
        let host = super::super::host_geometry(&l).unwrap();
        for ok in [1, 4, MAX_QUEUE_PAIRS] {
            let v = VhostUser::create("vm", "/nonexistent/vm.sock", false, ok, &d, false).unwrap();
            let g = v.geometry(&l).unwrap();
            assert_eq!(
                (g.tx_rings, g.rx_rings),
                (ok, ok),
                "a ring each way per pair"
            );
            assert_eq!(
                (g.tx_slots, g.rx_slots, g.buf_size),
                (host.tx_slots, host.rx_slots, host.buf_size)
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Guest `pairs` pairs whose RX queues in `running` are set up and enabled.
    fn guest_running(pairs: u16, running: &[usize]) -> Guest {
        let mut g = Guest::new(pairs);
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let vrings: Vec<VringRwLock> = (0..2 * usize::from(pairs))
            .map(|_| VringRwLock::new(mem.clone(), 256).unwrap())
            .collect();
        for &p in running {
            vrings[rx_queue(p)].set_queue_ready(true);
            vrings[rx_queue(p)].set_enabled(true);
        }
        g.vrings = Some(vrings);
        g
    }

    #[test]
    fn rx_rings_of_pairs_the_frontend_does_not_run_go_to_pairs_it_runs() {
        let route = |pairs, running: &[usize]| {
            let g = guest_running(pairs, running);
            datapath::reroute(&g);
            g.route
                .iter()
                .map(|r| r.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            route(4, &[0, 1, 2, 3]),
            [0, 1, 2, 3],
            "each ring its own pair"
        );
        assert_eq!(
            route(4, &[0, 1]),
            [0, 1, 0, 1],
            "DPDK queues=2 on a 4-pair port"
        );
        assert_eq!(route(2, &[0]), [0, 0], "queues=1 on a 2-pair port");
        assert_eq!(route(4, &[0, 2]), [0, 2, 2, 2]);
        assert_eq!(route(3, &[]), [0, 1, 2], "none running: the rings wait");
        // Set up but disabled (SET_VRING_ENABLE 0) is not running.
        let g = guest_running(2, &[0, 1]);
        if let Some(v) = &g.vrings {
            v[rx_queue(1)].set_enabled(false);
        }
        datapath::reroute(&g);
        let route: Vec<u16> = g.route.iter().map(|r| r.load(Ordering::Relaxed)).collect();
        assert_eq!(route, [0, 0]);
        assert_eq!(g.pairs_running(), 1);
    }
}
