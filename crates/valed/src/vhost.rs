//! vhost-user ports: a switch port served to QEMU (or DPDK's `net_virtio_user`) as a
//! virtio-net device over vhost-user, with the rust-vmm crates doing the protocol. The
//! backend is the port's client: guest TX buffers go into the port's TX ring (12-byte
//! virtio-net header in front, the port's `hdr_len`), the port's RX ring goes into
//! guest RX buffers (mergeable: a packet may take several). Guest memory is only
//! touched through vm-memory, which checks every descriptor against the memory table:
//! a bad descriptor is a counted error on the port, never a crash.

use crate::host::Counters;
use rustix::fd::AsRawFd;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Listener, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

/// virtio-net header with `num_buffers` (VERSION_1 / MRG_RXBUF).
pub const VNET_HDR: usize = 12;
const RX: u16 = 0;
const TX: u16 = 1;
/// Epoll id of the port's notify eventfd (ids must be above the queue count).
const NOTIFY: u16 = 3;
/// Packets delivered to the guest per event before the next look at the port's ring.
const BURST: usize = 256;

pub struct NetBackend {
    /// In a mutex only because `vale::Port` is not `Sync`; one worker thread uses it.
    port: Mutex<vale::Port>,
    /// The port's TX ring was full: guest TX resumes when the switch frees slots.
    tx_blocked: bool,
    mem: Option<GuestMemoryAtomic<GuestMemoryMmap>>,
    counters: Arc<Counters>,
}

impl NetBackend {
    pub fn new(port: vale::Port, counters: Arc<Counters>) -> NetBackend {
        NetBackend {
            port: Mutex::new(port),
            tx_blocked: false,
            mem: None,
            counters,
        }
    }

    /// Guest TX queue -> the port's TX ring.
    fn tx(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.mem.as_ref().map(|m| m.memory()) else {
            return;
        };
        self.tx_blocked = false;
        let port = self.port.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = Vec::with_capacity(65536 + VNET_HDR);
        let mut moved = 0;
        loop {
            let _ = vring.disable_notification();
            loop {
                // Room for the largest frame, or wait for the switch to free slots: the
                // port's notify fires then (its TX ring's kick is armed), and the guest's
                // buffers stay queued meanwhile (backpressure, not drops).
                let room =
                    (65536 + 2 * VNET_HDR).div_ceil(port.geometry().buf_size as usize) as u32;
                let tx = &port.tx_rings()[0];
                if tx.space() < room {
                    let _ = port.txsync();
                    if tx.space() < room {
                        tx.view().csb().app_arm_kick();
                        let _ = port.txsync();
                        if tx.space() < room {
                            self.tx_blocked = true;
                            break;
                        }
                        tx.view().csb().app_disarm_kick();
                    }
                }
                let mut st = vring.get_mut();
                let Some(chain) = st.get_queue_mut().pop_descriptor_chain(mem.clone()) else {
                    break;
                };
                let head = chain.head_index();
                buf.clear();
                let ok = chain
                    .clone()
                    .reader(&*mem)
                    .ok()
                    .is_some_and(|mut r| r.read_to_end(&mut buf).is_ok());
                if !ok || buf.len() < VNET_HDR + 14 {
                    self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                } else if port.inject(&buf) {
                    self.counters.from_host.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .from_host_bytes
                        .fetch_add((buf.len() - VNET_HDR) as u64, Ordering::Relaxed);
                } else {
                    // The switch is behind: the frame is dropped, as a NIC would.
                    self.counters.truncated.fetch_add(1, Ordering::Relaxed);
                }
                let _ = st.add_used(head, 0);
                moved += 1;
            }
            let _ = port.txsync();
            if self.tx_blocked {
                break; // resumed from the port's notify
            }
            // Until the queue stays empty with notifications back on (EVENT_IDX: the
            // guest kicks again only for buffers added after this).
            if !vring.enable_notification().unwrap_or(false) {
                break;
            }
        }
        if moved > 0 && vring.needs_notification().unwrap_or(true) {
            let _ = vring.signal_used_queue();
        }
    }

    /// The port's RX ring -> guest RX buffers; leaves packets in the ring when the guest
    /// has no buffers (its next RX kick brings us back). Arms the port's notify before
    /// returning with an empty ring.
    fn rx(&mut self, vring: &VringRwLock) {
        let Some(mem) = self.mem.as_ref().map(|m| m.memory()) else {
            return;
        };
        {
            let st = vring.get_mut();
            if !st.get_queue().ready() || !st.is_enabled() {
                return;
            }
        }
        let port = self.port.lock().unwrap_or_else(|p| p.into_inner());
        let mut sent = 0;
        let mut frame = Vec::with_capacity(2048);
        loop {
            let _ = port.rxsync();
            let ring = &port.rx_rings()[0];
            if ring.space() == 0 {
                // Nothing to deliver: ask the switch to kick us, then look once more.
                ring.view().csb().app_arm_kick();
                let _ = port.rxsync();
                if port.rx_rings()[0].space() == 0 {
                    break;
                }
                port.rx_rings()[0].view().csb().app_disarm_kick();
                continue;
            }
            if sent >= BURST {
                break;
            }
            // Peek at the packet: its length decides how many guest buffers it takes.
            frame.clear();
            port.dispatch(1, |f| frame.extend_from_slice(f));
            let _ = port.rxsync();
            if frame.len() < VNET_HDR {
                continue;
            }
            let mut st = vring.get_mut();
            let mut chains = Vec::new();
            let mut room = 0usize;
            while room < frame.len() && chains.len() < 64 {
                let Some(c) = st.get_queue_mut().pop_descriptor_chain(mem.clone()) else {
                    break;
                };
                let head = c.head_index();
                match c.writer(&*mem) {
                    Ok(w) => {
                        room += w.available_bytes();
                        chains.push((head, w));
                    }
                    Err(_) => {
                        let _ = st.add_used(head, 0);
                        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if room < frame.len() {
                // Not enough guest buffers: give back what we took and drop this one.
                for (head, _) in chains {
                    let _ = st.add_used(head, 0);
                }
                self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let nbuf = chains.len() as u16;
            frame[10..12].copy_from_slice(&nbuf.to_le_bytes());
            let mut rest = &frame[..];
            for (head, mut w) in chains {
                let n = w.available_bytes().min(rest.len());
                let ok = w.write_all(&rest[..n]).is_ok();
                rest = &rest[n..];
                let _ = st.add_used(head, if ok { n as u32 } else { 0 });
            }
            drop(st);
            self.counters.to_host.fetch_add(1, Ordering::Relaxed);
            self.counters
                .to_host_bytes
                .fetch_add((frame.len() - VNET_HDR) as u64, Ordering::Relaxed);
            sent += 1;
        }
        if sent > 0 && vring.needs_notification().unwrap_or(true) {
            let _ = vring.signal_used_queue();
        }
    }
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }
    fn max_queue_size(&self) -> usize {
        1024
    }
    fn features(&self) -> u64 {
        // PROTOCOL_FEATURES: DPDK's virtio_user sends SET_VRING_ENABLE, which the vhost
        // crate accepts only with it. (QEMU 7.2 sends that message before it acks its
        // features, which the crate refuses: see docs/vhost-user-plan.md.)
        1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_NET_F_MRG_RXBUF
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }
    fn set_event_idx(&mut self, _enabled: bool) {}
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }
    fn exit_event(&self, _thread: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }
    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> std::io::Result<()> {
        tracing::debug!(device_event, mem = self.mem.is_some(), "vhost-user event");
        match device_event {
            TX => {
                if let Some(v) = vrings.get(TX as usize) {
                    self.tx(v);
                }
            }
            RX | NOTIFY => {
                if device_event == NOTIFY {
                    {
                        let port = self.port.lock().unwrap_or_else(|p| p.into_inner());
                        let mut b = [0u8; 8];
                        let _ = rustix::io::read(port.notify_fd(), &mut b);
                        port.tx_rings()[0].view().csb().app_disarm_kick();
                    }
                    if self.tx_blocked {
                        if let Some(v) = vrings.get(TX as usize) {
                            self.tx(v);
                        }
                    }
                }
                if let Some(v) = vrings.get(RX as usize) {
                    self.rx(v);
                }
            }
            _ => {}
        }
        // Never an error: the crate would end the worker thread for good.
        Ok(())
    }
}

/// vhost-user requests the relay looks at.
const SET_FEATURES: u32 = 2;
const SET_VRING_KICK: u32 = 12;
const SET_VRING_ENABLE: u32 = 18;
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;

/// Reads one vhost-user message (12-byte header, then its payload) and the descriptors
/// sent with it; `None` when the peer hung up.
fn read_msg(s: &UnixStream) -> std::io::Result<Option<(Vec<u8>, Vec<rustix::fd::OwnedFd>)>> {
    use rustix::fd::AsFd;
    let mut hdr = [0u8; 12];
    let (n, fds) = vale::sock::recv(s.as_fd(), &mut hdr)?;
    if n == 0 {
        return Ok(None);
    }
    let mut r = s;
    if n < 12 {
        r.read_exact(&mut hdr[n..])?;
    }
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if size > 64 * 1024 {
        return Err(std::io::Error::other("vhost-user message too large"));
    }
    let mut msg = hdr.to_vec();
    msg.resize(12 + size, 0);
    r.read_exact(&mut msg[12..])?;
    Ok(Some((msg, fds)))
}

/// Relays one frontend connection to the vhost crate's handler, holding back what the
/// crate would refuse from QEMU 7.2: a `SET_VRING_ENABLE` before `SET_FEATURES` (QEMU
/// disables rings early; rings start disabled anyway, so it is acknowledged here and
/// not passed on). Returns when either side hangs up.
fn relay(front: UnixStream, back: UnixStream) {
    use rustix::fd::AsFd;
    let front_w = Arc::new(Mutex::new(front.try_clone().ok()));
    let back_r = back.try_clone().ok();
    let fw = front_w.clone();
    // Crate -> frontend: whole messages, so our own replies never interleave.
    let up = std::thread::spawn(move || {
        let Some(back_r) = back_r else { return };
        while let Ok(Some((msg, fds))) = read_msg(&back_r) {
            let g = fw.lock().unwrap_or_else(|p| p.into_inner());
            let Some(f) = g.as_ref() else { break };
            let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            if vale::sock::send(f.as_fd(), &msg, &borrowed).is_err() {
                break;
            }
        }
        let _ = back_r.shutdown(std::net::Shutdown::Both);
        // The crate hung up: so does the frontend's side (it may reconnect).
        if let Some(f) = fw.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
    });
    let mut features_set = false;
    let mut protocol_acked = false;
    while let Ok(Some((msg, fds))) = read_msg(&front) {
        let req = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
        let flags = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
        if req == SET_FEATURES {
            features_set = true;
            if msg.len() >= 20 {
                let f = u64::from_le_bytes(msg[12..20].try_into().unwrap_or([0; 8]));
                protocol_acked = f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
            }
        }
        if req == SET_VRING_ENABLE && !features_set {
            if flags & FLAG_NEED_REPLY != 0 {
                let mut reply = Vec::with_capacity(20);
                reply.extend_from_slice(&req.to_le_bytes());
                reply.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
                reply.extend_from_slice(&8u32.to_le_bytes());
                reply.extend_from_slice(&0u64.to_le_bytes());
                let g = front_w.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(f) = g.as_ref() {
                    let _ = vale::sock::send(f.as_fd(), &reply, &[]);
                }
            }
            continue;
        }
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if vale::sock::send(back.as_fd(), &msg, &borrowed).is_err() {
            break;
        }
        // QEMU 7.2 (one queue pair) never enables its rings once protocol features are
        // negotiated, expecting them to run once kicked: enable each ring as its kick
        // arrives (no reply asked, so none comes back).
        if req == SET_VRING_KICK && protocol_acked && msg.len() >= 20 {
            let index = msg[12] as u32;
            let mut en = Vec::with_capacity(20);
            en.extend_from_slice(&SET_VRING_ENABLE.to_le_bytes());
            en.extend_from_slice(&FLAG_VERSION.to_le_bytes());
            en.extend_from_slice(&8u32.to_le_bytes());
            en.extend_from_slice(&index.to_le_bytes());
            en.extend_from_slice(&1u32.to_le_bytes());
            if vale::sock::send(back.as_fd(), &en, &[]).is_err() {
                break;
            }
        }
    }
    let _ = back.shutdown(std::net::Shutdown::Both);
    let _ = front.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

/// The thread serving one vhost-user port: accepts a frontend on the socket, serves it
/// until it goes away, and waits for the next, until stopped.
pub struct Worker {
    stop: Arc<AtomicBool>,
    /// The connected frontend, shut down on stop.
    front: Arc<Mutex<Option<UnixStream>>>,
    shutdown: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    pub fn start(name: String, path: &str, backend: NetBackend) -> std::io::Result<Worker> {
        // Frontends connect to `path`; the crate serves a private socket beside it,
        // through `relay`.
        let front_l = std::os::unix::net::UnixListener::from(crate::sys::stream_listen(path)?);
        let private = format!("{path}.crate");
        let mut listener = Listener::new(&private, true).map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>> =
            Arc::new(Mutex::new(None));
        let backend = Arc::new(RwLock::new(backend));
        let front_now: Arc<Mutex<Option<UnixStream>>> = Arc::new(Mutex::new(None));
        let (stop2, shutdown2, front2) = (stop.clone(), shutdown.clone(), front_now.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vale-vhost-{name}"))
            .spawn(move || {
                while !stop2.load(Ordering::Acquire) {
                    // Wait for a frontend without blocking in accept, so stop works.
                    if !crate::sys::readable_within(front_l.as_raw_fd(), 200) {
                        continue;
                    }
                    let Ok((front, _)) = front_l.accept() else {
                        continue;
                    };
                    *front2.lock().unwrap_or_else(|p| p.into_inner()) = front.try_clone().ok();
                    // Queue our end of the private socket, so the crate's accept is quick.
                    let back = match UnixStream::connect(&private) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(port = %name, "vhost-user: {e}");
                            continue;
                        }
                    };
                    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
                    let mut d = match VhostUserDaemon::new(name.clone(), backend.clone(), mem) {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(port = %name, "vhost-user: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                            continue;
                        }
                    };
                    let notify = backend
                        .read()
                        .map(|b| {
                            b.port
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .notify_fd()
                                .as_raw_fd()
                        })
                        .unwrap_or(-1);
                    if let Some(h) = d.get_epoll_handlers().first() {
                        let _ = h.register_listener(notify, EventSet::IN, NOTIFY as u64);
                    }
                    if let Err(e) = d.start(&mut listener) {
                        tracing::warn!(port = %name, "vhost-user accept: {e}");
                        continue;
                    }
                    tracing::info!(port = %name, "vhost-user frontend connected");
                    *shutdown2.lock().unwrap_or_else(|p| p.into_inner()) = d.shutdown_handle();
                    let relay = std::thread::spawn(move || relay(front, back));
                    let r = d.wait();
                    let _ = relay.join();
                    *shutdown2.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::info!(port = %name, "vhost-user frontend gone: {:?}", r.err());
                }
            })?;
        Ok(Worker {
            stop,
            front: front_now,
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(f) = self.front.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.shutdown();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}
