//! The thread that serves one memif socket: it listens, runs each client's handshake,
//! maps what a client offers once it is accepted, and hands the connection to the memif
//! port whose id the client named. Several ports (ids) share a socket, as in DPDK and
//! VPP; the thread lives while one of them is registered.
//!
//! The control messages are the only thing this thread does; the frames are moved by the
//! port's forwarding thread ([`super::io`]), which picks a new connection up from the
//! port's [`Slot`]. When a client goes (hangs up, sends DISCONNECT, or the forwarding
//! thread found its rings broken), the slot's generation moves on and the forwarding
//! thread drops the mapping at its next pass.

use super::conn::Conn;
use super::handshake::{Handshake, Known, Offer, Refusal, Step};
use crate::port::{PortCounters, Waker};
use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::SocketFlags;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use vale_wire::memif::{FixedStr, MSG_LEN, Msg, SECRET_LEN};

/// What valed accepts from a client, advertised in HELLO.
pub const OFFER: Offer = Offer {
    regions: 16,
    rings: 8,
    max_log2: 14,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a memif socket is: a file, or a name in the abstract namespace (DPDK's
/// default, bound with its exact length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketKey {
    pub path: String,
    pub abstract_name: bool,
}

impl std::fmt::Display for SocketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.abstract_name {
            write!(f, "@{}", self.path)
        } else {
            f.write_str(&self.path)
        }
    }
}

/// Who is connected to a memif port, for `vale-ctl list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client application's name (INIT) and its interface's (CONNECT).
    pub app: String,
    pub if_name: String,
    /// Rings each way, and slots per ring.
    pub c2s: (usize, u32),
    pub s2c: (usize, u32),
}

struct SlotInner<C> {
    /// A client has claimed the id (its INIT was accepted) and not gone yet.
    busy: bool,
    /// A connection mapped and waiting for the forwarding thread, with its generation.
    offer: Option<(u64, C)>,
    peer: Option<PeerInfo>,
    /// The forwarding thread found the connection's rings broken: why.
    broken: Option<String>,
    /// Why a client port is not connected (its last attempt), for `vale-ctl list`.
    note: Option<String>,
}

impl<C> Default for SlotInner<C> {
    fn default() -> Self {
        SlotInner {
            busy: false,
            offer: None,
            peer: None,
            broken: None,
            note: None,
        }
    }
}

/// One memif port's meeting point: the socket thread (valed the server) or the dialing
/// thread (valed the client, `C` = [`super::own::Own`]) puts connections in, the port's
/// forwarding thread takes them out, the control thread reads who is connected.
pub struct Slot<C = Conn> {
    pub port: String,
    secret: FixedStr<SECRET_LEN>,
    /// Map regions that cannot be sealed (`memif_trust_unsealed`).
    trust_unsealed: bool,
    pub counters: Arc<PortCounters>,
    waker: Waker,
    /// Moves on each time a client connects or goes.
    generation: AtomicU64,
    inner: Mutex<SlotInner<C>>,
    /// Wakes the socket (or dialing) thread (set when the slot is registered).
    server_wake: Mutex<Option<Arc<OwnedFd>>>,
    /// The port's interrupt relays (`port::notify`).
    pub notifiers: Arc<crate::port::notify::Held>,
}

impl<C> Slot<C> {
    pub fn new(
        port: &str,
        secret: &str,
        trust_unsealed: bool,
        counters: Arc<PortCounters>,
        waker: Waker,
    ) -> Arc<Slot<C>> {
        Arc::new(Slot {
            port: port.to_string(),
            secret: FixedStr::new(secret.as_bytes()),
            trust_unsealed,
            counters,
            waker,
            generation: AtomicU64::new(0),
            inner: Mutex::new(SlotInner::default()),
            server_wake: Mutex::new(None),
            notifiers: Arc::default(),
        })
    }

    /// Changes each time the connection does (a cheap check before [`Slot::take`]).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The connection of generation `generation`, if it is still the current one and
    /// nobody took it yet. A newer one is left for the next look (the caller read the
    /// generation before a client connected again), not dropped.
    pub fn take(&self, generation: u64) -> Option<C> {
        let mut g = lock(&self.inner);
        if !matches!(g.offer, Some((at, _)) if at == generation) {
            return None;
        }
        g.offer.take().map(|(_, c)| c)
    }

    /// Why the port is not connected, if known.
    pub fn note(&self) -> Option<String> {
        lock(&self.inner).note.clone()
    }

    pub(super) fn set_note(&self, note: Option<String>) {
        lock(&self.inner).note = note;
    }

    pub fn peer(&self) -> Option<PeerInfo> {
        lock(&self.inner).peer.clone()
    }

    /// The forwarding thread cannot use the connection any more: the socket thread
    /// disconnects the client, saying why.
    pub fn broken(&self, why: String) {
        lock(&self.inner).broken.get_or_insert(why);
        if let Some(w) = lock(&self.server_wake).as_ref() {
            let _ = rustix::io::write(&**w, &1u64.to_ne_bytes());
        }
    }

    /// The eventfd that wakes the thread that serves or dials for this slot.
    pub(super) fn set_wake(&self, wake: Arc<OwnedFd>) {
        *lock(&self.server_wake) = Some(wake);
    }

    /// The secret a client must give (server) or gives (client).
    pub(super) fn secret(&self) -> &FixedStr<SECRET_LEN> {
        &self.secret
    }

    fn known(&self) -> Known {
        if lock(&self.inner).busy {
            Known::Busy
        } else {
            Known::Free {
                secret: self.secret.clone(),
            }
        }
    }

    fn claim(&self) {
        lock(&self.inner).busy = true;
    }

    /// A client connected with `conn`: the forwarding thread takes it at its next pass.
    pub(super) fn connect(&self, conn: C, peer: PeerInfo) -> u64 {
        let mut g = lock(&self.inner);
        let generation = self.generation.load(Ordering::Relaxed) + 1;
        g.offer = Some((generation, conn));
        g.peer = Some(peer);
        g.broken = None;
        self.generation.store(generation, Ordering::Release);
        drop(g);
        self.waker.wake();
        generation
    }

    /// The client that claimed the id is gone; `peer_went`: it had connected and the
    /// connection ended for a reason other than valed removing the port (counted in
    /// `peer_disconnects`).
    pub(super) fn release(&self, peer_went: bool) {
        let mut g = lock(&self.inner);
        g.busy = false;
        g.offer = None;
        g.peer = None;
        g.broken = None;
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(g);
        if peer_went {
            PortCounters::lost(&self.counters.peer_disconnects, 1);
        }
        self.waker.wake();
    }

    pub(super) fn take_broken(&self) -> Option<String> {
        lock(&self.inner).broken.take()
    }
}

/// One socket's thread and the ports (ids) registered on it.
struct Server {
    key: SocketKey,
    ports: Mutex<HashMap<u32, Arc<Slot>>>,
    stop: AtomicBool,
    wake: Arc<OwnedFd>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Server {
    fn poke(&self) {
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }
}

/// The sockets served now.
static SERVERS: Mutex<Vec<(SocketKey, Weak<Server>)>> = Mutex::new(Vec::new());

/// A memif port registered on its socket; dropping it takes the port off (its client,
/// if any, is told) and stops the socket's thread after the last one.
pub struct Registration {
    server: Arc<Server>,
    id: u32,
}

/// Registers port `slot` as interface `id` on socket `key`, starting to serve the socket
/// if no other port does.
pub fn register(key: &SocketKey, id: u32, slot: Arc<Slot>) -> Result<Registration, String> {
    let mut all = lock(&SERVERS);
    all.retain(|(_, w)| w.strong_count() > 0);
    let server = match all
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, w)| w.upgrade())
    {
        Some(s) => s,
        None => {
            let s = start(key)?;
            all.push((key.clone(), Arc::downgrade(&s)));
            s
        }
    };
    let mut ports = lock(&server.ports);
    if let Some(other) = ports.get(&id) {
        return Err(format!(
            "memif id {id} on {key} is already port {}; give this one another --id",
            other.port
        ));
    }
    slot.set_wake(server.wake.clone());
    ports.insert(id, slot);
    drop(ports);
    Ok(Registration { server, id })
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut all = lock(&SERVERS);
        let last = {
            let mut ports = lock(&self.server.ports);
            ports.remove(&self.id);
            ports.is_empty()
        };
        self.server.poke();
        if !last {
            return;
        }
        all.retain(|(k, _)| *k != self.server.key);
        drop(all);
        self.server.stop.store(true, Ordering::Release);
        self.server.poke();
        if let Some(t) = lock(&self.server.thread).take() {
            let _ = t.join();
        }
        if !self.server.key.abstract_name {
            let _ = std::fs::remove_file(&self.server.key.path);
        }
    }
}

fn start(key: &SocketKey) -> Result<Arc<Server>, String> {
    let listener = crate::sys::seqpacket_listen(&key.path, key.abstract_name)
        .map_err(|e| format!("cannot listen on {key}: {e}"))?;
    let wake = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .map_err(|e| format!("eventfd: {e}"))?;
    let server = Arc::new(Server {
        key: key.clone(),
        ports: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
        wake: Arc::new(wake),
        thread: Mutex::new(None),
    });
    let s = server.clone();
    let t = std::thread::Builder::new()
        .name("vale-memif".into())
        .spawn(move || {
            if let Err(e) = serve(&s, listener) {
                tracing::error!(socket = %s.key, "memif socket thread stopped: {e}");
            }
        })
        .map_err(|e| format!("thread: {e}"))?;
    *lock(&server.thread) = Some(t);
    Ok(server)
}

const LISTENER: u64 = u64::MAX;
const WAKE: u64 = u64::MAX - 1;

/// One client of the socket.
struct Client {
    fd: OwnedFd,
    hs: Handshake<OwnedFd>,
    /// The port whose id it claimed, and whether it got as far as CONNECTED.
    claimed: Option<(Arc<Slot>, u32)>,
    connected: bool,
    /// When it was accepted: a handshake that takes longer than
    /// [`super::client::HANDSHAKE`] is ended (a client that claimed an id and stalled
    /// would keep the real one out).
    since: std::time::Instant,
}

/// Clients of one socket still in their handshake, at most: more are turned away, so
/// that connections that never finish cannot take every descriptor valed may open.
pub const MAX_HANDSHAKES: usize = 64;

fn send(fd: &OwnedFd, m: &Msg) -> bool {
    vale::sock::send(fd.as_fd(), &m.encode(), &[]).is_ok()
}

fn serve(server: &Server, listener: OwnedFd) -> std::io::Result<()> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    let data = epoll::EventData::new_u64;
    epoll::add(&ep, &listener, data(LISTENER), epoll::EventFlags::IN)?;
    epoll::add(&ep, &*server.wake, data(WAKE), epoll::EventFlags::IN)?;
    tracing::info!(socket = %server.key, "memif socket listening");
    let mut clients: HashMap<u64, Client> = HashMap::new();
    let mut next_token = 0u64;
    let mut events = Vec::with_capacity(32);
    let second = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    while !server.stop.load(Ordering::Acquire) {
        events.clear();
        match epoll::wait(
            &ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&second),
        ) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for ev in &events {
            match ev.data.u64() {
                LISTENER => accept(server, &listener, &ep, &mut clients, &mut next_token),
                WAKE => {
                    let mut b = [0u8; 8];
                    let _ = rustix::io::read(&*server.wake, &mut b);
                }
                t => {
                    if let Some(end) = client_ready(server, clients.get_mut(&t)) {
                        if let Some(c) = clients.remove(&t) {
                            close(&ep, c, end);
                        }
                    }
                }
            }
        }
        sweep(server, &ep, &mut clients);
    }
    for (_, c) in clients.drain() {
        close(&ep, c, End::Deleted);
    }
    Ok(())
}

fn accept(
    server: &Server,
    listener: &OwnedFd,
    ep: &OwnedFd,
    clients: &mut HashMap<u64, Client>,
    next: &mut u64,
) {
    loop {
        let fd = match rustix::net::accept_with(
            listener,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return,
            Err(e) => {
                tracing::warn!(socket = %server.key, "memif accept: {e}");
                return;
            }
        };
        if clients.values().filter(|c| !c.connected).count() >= MAX_HANDSHAKES {
            let _ = send(&fd, &Msg::disconnect("Too many clients in their handshake"));
            tracing::warn!(socket = %server.key, "memif client turned away: {MAX_HANDSHAKES} handshakes under way");
            continue;
        }
        if !send(&fd, &OFFER.hello("valed")) {
            continue;
        }
        let token = *next;
        *next += 1;
        if epoll::add(
            ep,
            &fd,
            epoll::EventData::new_u64(token),
            epoll::EventFlags::IN,
        )
        .is_err()
        {
            continue;
        }
        clients.insert(
            token,
            Client {
                fd,
                hs: Handshake::new(OFFER),
                claimed: None,
                connected: false,
                since: std::time::Instant::now(),
            },
        );
    }
}

/// How a client's connection ends.
enum End {
    /// It hung up or said DISCONNECT: nothing to tell it.
    Quiet,
    /// DISCONNECT with this reason, then close.
    Tell(String),
    /// Its port was removed: DISCONNECT saying so, and no peer disconnect counted.
    Deleted,
}

/// Handles what a client sent; `Some` when its connection ends.
fn client_ready(server: &Server, c: Option<&mut Client>) -> Option<End> {
    let c = c?;
    let mut buf = [0u8; 2 * MSG_LEN];
    loop {
        let (n, mut fds) = match vale::sock::recv(c.fd.as_fd(), &mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error().is_none() => {
                return Some(End::Tell(format!("Invalid message size ({e})")));
            }
            Err(_) => return Some(End::Quiet),
        };
        if n == 0 {
            return Some(End::Quiet);
        }
        let msg = match Msg::decode(&buf[..n]) {
            Ok(m) => m,
            Err(e) => return Some(End::Tell(e.to_string())),
        };
        let fd = (!fds.is_empty()).then(|| fds.swap_remove(0));
        let step = c.hs.on_message(msg, fd, |id| {
            lock(&server.ports)
                .get(&id)
                .map_or(Known::Unknown, |s| s.known())
        });
        match step {
            Err(Refusal(why)) => return Some(End::Tell(why)),
            Ok(Step::PeerDisconnected(why)) => {
                tracing::info!(socket = %server.key, "memif client disconnected: {why}");
                return Some(End::Quiet);
            }
            Ok(Step::Reply(m)) => {
                if c.claimed.is_none() {
                    if let Some(id) = c.hs.id() {
                        let slot = lock(&server.ports).get(&id).cloned();
                        if let Some(s) = slot {
                            s.claim();
                            c.claimed = Some((s, id));
                        }
                    }
                }
                if !send(&c.fd, &m) {
                    return Some(End::Quiet);
                }
            }
            Ok(Step::Connected(reply, setup)) => {
                let Some((slot, _)) = c.claimed.clone() else {
                    return Some(End::Tell("ID not found".into()));
                };
                let (id, app, if_name) = (setup.id, setup.peer.clone(), setup.if_name.clone());
                let (nc, ns) = (setup.c2s.len(), setup.s2c.len());
                let conn = match Conn::map(setup, slot.trust_unsealed, &slot.notifiers) {
                    Ok(conn) => conn,
                    Err(why) => return Some(End::Tell(why)),
                };
                let peer = PeerInfo {
                    app,
                    if_name,
                    c2s: (nc, conn.c2s_slots),
                    s2c: (ns, conn.s2c_slots),
                };
                if !send(&c.fd, &reply) {
                    return Some(End::Quiet);
                }
                tracing::info!(
                    port = %slot.port, socket = %server.key, id, peer = %peer.app,
                    interface = %peer.if_name, c2s = ?peer.c2s, s2c = ?peer.s2c,
                    "memif client connected"
                );
                slot.connect(conn, peer);
                c.connected = true;
            }
        }
    }
}

/// Clients whose port was removed or whose rings broke are disconnected.
fn sweep(server: &Server, ep: &OwnedFd, clients: &mut HashMap<u64, Client>) {
    let ports = lock(&server.ports);
    let mut ended = Vec::new();
    for (t, c) in clients.iter() {
        if !c.connected && c.since.elapsed() > super::client::HANDSHAKE {
            ended.push((*t, End::Tell("Handshake timed out".into())));
            continue;
        }
        let Some((slot, id)) = &c.claimed else {
            continue;
        };
        if !ports.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            ended.push((*t, End::Deleted));
        } else if let Some(why) = slot.take_broken() {
            ended.push((*t, End::Tell(why)));
        }
    }
    drop(ports);
    for (t, end) in ended {
        if let Some(c) = clients.remove(&t) {
            close(ep, c, end);
        }
    }
}

fn close(ep: &OwnedFd, c: Client, end: End) {
    let port = c
        .claimed
        .as_ref()
        .map_or("-", |(s, _)| s.port.as_str())
        .to_string();
    match &end {
        End::Tell(why) => {
            tracing::warn!(port, "memif client disconnected: {why}");
            let _ = send(&c.fd, &Msg::disconnect(why));
        }
        End::Deleted => {
            tracing::info!(port, "memif client disconnected: interface deleted");
            let _ = send(&c.fd, &Msg::disconnect("interface deleted"));
        }
        End::Quiet if c.connected => tracing::info!(port, "memif client went away"),
        End::Quiet => {}
    }
    let _ = epoll::delete(ep, &c.fd);
    if let Some((slot, _)) = &c.claimed {
        slot.release(c.connected && !matches!(end, End::Deleted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Arc<Slot<u32>> {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let waker = crate::port::Waker(Arc::new(fd));
        Slot::new("vale0:m", "", false, Arc::default(), waker)
    }

    fn peer() -> PeerInfo {
        PeerInfo {
            app: "test".into(),
            if_name: "m".into(),
            c2s: (1, 1024),
            s2c: (1, 1024),
        }
    }

    #[test]
    fn a_client_that_connects_again_between_a_look_and_a_take_is_not_lost() {
        let s = slot();
        assert_eq!(s.connect(1, peer()), 1);
        assert_eq!(s.take(s.generation()), Some(1));
        // The client goes; the forwarding thread reads the new generation ...
        s.release(true);
        let seen = s.generation();
        // ... and before it takes, the client is back.
        let now = s.connect(2, peer());
        assert_ne!(now, seen);
        assert_eq!(s.take(seen), None, "not the generation looked at");
        assert_eq!(
            s.take(s.generation()),
            Some(2),
            "still there for the next look"
        );
        assert_eq!(s.take(s.generation()), None, "taken once");
    }

    /// A connected client whose port valed removes is told so, and that is no peer
    /// disconnect; one that hangs up, or that valed cuts off for what it did, is one.
    #[test]
    fn only_a_client_going_counts_as_a_peer_disconnect() {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let counters = Arc::new(PortCounters::default());
        let s: Arc<Slot> = Slot::new(
            "vale0:m",
            "",
            false,
            counters.clone(),
            crate::port::Waker(Arc::new(fd)),
        );
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let ends = [
            End::Deleted,
            End::Quiet,
            End::Tell("S2C head 2000 slots ahead".into()),
        ];
        let mut told = Vec::new();
        for end in ends {
            let (ours, theirs) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::SEQPACKET,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            let c = Client {
                fd: ours,
                hs: Handshake::new(OFFER),
                claimed: Some((s.clone(), 0)),
                connected: true,
                since: std::time::Instant::now(),
            };
            close(&ep, c, end);
            told.push(counters.peer_disconnects.load(Ordering::Relaxed));
            let mut b = [0u8; 2 * MSG_LEN];
            if let Ok((n, _)) = vale::sock::recv(theirs.as_fd(), &mut b)
                && let Ok(Msg::Disconnect { reason, .. }) = Msg::decode(&b[..n])
            {
                told.push(u64::from(reason.to_string_lossy() == "interface deleted"));
            }
        }
        // Counts after each, with 1 after a DISCONNECT saying "interface deleted".
        assert_eq!(told, [0, 1, 1, 2, 0]);
    }
}
