//! vhost-user ports: a switch port served to QEMU (or DPDK's `net_virtio_user`) as a
//! virtio-net device over vhost-user, with the rust-vmm crates doing the protocol. The
//! crate's thread only handles the protocol and turns the guest's kicks into wake-ups;
//! the switch's forwarding thread serves the queues itself (`VhostIo`), like host ports:
//! guest TX chains go into the port's TX ring (12-byte virtio-net header in front, the
//! port's `hdr_len`) in the pass that forwards them, and packets for the guest go into
//! its RX buffers (several per packet if the guest accepted MRG_RXBUF, else one) straight from the sender's
//! buffers when the sender has the same header, or from the port's RX ring. Guest memory
//! is only touched through vm-memory, which checks every descriptor against the memory
//! table: a bad descriptor is a counted error on the port, never a crash.

use crate::host::Counters;
use rustix::fd::AsRawFd;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vale_abi::AppRing;
use vale_switch::offload::{self, VnetHdr};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Listener, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

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
    /// Frames on their way to the guest, and the features it acknowledged.
    out: Outbox,
    /// Used RX entries added since the guest was last signalled.
    rx_dirty: bool,
    /// The guest's TX avail index ran beyond its ring: counted once, queue ignored
    /// until the frontend sets it up again.
    tx_broken: bool,
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

    /// The frontend went away: nothing of it may be touched any more.
    pub fn forget(&mut self, counters: &Counters) {
        self.vrings = None;
        self.mem = None;
        self.rx_dirty = false;
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

/// The vhost crate's side: the protocol, the frontend's memory and queues, and kicks
/// turned into wake-ups of the forwarding thread, which moves the packets (`VhostIo`).
pub struct NetBackend {
    guest: GuestRef,
    lane: Arc<crate::state::Shared>,
}

impl NetBackend {
    pub fn new(guest: GuestRef, lane: Arc<crate::state::Shared>) -> NetBackend {
        NetBackend { guest, lane }
    }
}

/// Frames for the guest's RX queue that did not fit yet, and what it accepts.
#[derive(Default)]
struct Outbox {
    /// Features the frontend acknowledged (which offloads the guest takes).
    acked: u64,
    /// Frames (12-byte header first), in order.
    pending: VecDeque<Vec<u8>>,
    /// Frame buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// Scratch for software segmentation.
    work: Vec<u8>,
    /// The guest's RX avail index when a frame last found no room in its buffers: until
    /// it moves, waiting frames are no work (a stopped or starving guest must not keep
    /// the forwarding thread awake).
    rx_seen: Option<u16>,
}

/// Most fragments of a packet handed over directly (netmap's `NETMAP_MAX_FRAGS`).
const MAX_PARTS: usize = 64;
/// Most frames waiting for guest RX buffers; beyond, the switch's packets for the guest
/// are dropped (`tx_error` on the port), as a NIC with a full ring would.
const MAX_PENDING: usize = 512;

/// A vhost-user port as its forwarding thread drives it: guest TX chains into the
/// port's TX ring, the port's RX ring (and packets handed over directly) into guest RX
/// buffers, all in the forwarding pass: no thread hand-off between guest and switch.
pub struct VhostIo {
    pub guest: GuestRef,
    tx: AppRing,
    rx: AppRing,
    counters: Arc<Counters>,
    buf: Vec<u8>,
}

impl VhostIo {
    pub fn new(guest: GuestRef, tx: AppRing, rx: AppRing, counters: Arc<Counters>) -> VhostIo {
        VhostIo {
            guest,
            tx,
            rx,
            counters,
            buf: Vec::with_capacity(MAX_FRAME + VNET_HDR),
        }
    }

    /// Guest TX queue -> the port's TX ring, as much as the ring takes (the guest's
    /// buffers wait otherwise: backpressure, not drops). Returns the frames moved.
    pub fn pull(&mut self) -> usize {
        let mut g = lock(&self.guest);
        if g.tx_broken {
            return 0;
        }
        let Some((vq, mem)) = g.queue(TX) else {
            return 0;
        };
        let vq = &vq;
        let room =
            (MAX_FRAME + VNET_HDR).div_ceil(self.tx.view().bufs().buf_size() as usize) as u32;
        let c = &self.counters;
        let mut moved = 0;
        {
            let mut st = vq.get_mut();
            if !st.get_queue().ready() || !st.is_enabled() {
                return 0;
            }
            while moved < BURST {
                if self.tx.space() < room {
                    self.tx.txsync();
                    if self.tx.space() < room {
                        break;
                    }
                }
                let Some(chain) = st.get_queue_mut().pop_descriptor_chain(mem.clone()) else {
                    break;
                };
                let head = chain.head_index();
                self.buf.clear();
                // The chain's length first: a guest may describe gigabytes.
                let (ok, big) = match chain.clone().reader(&*mem) {
                    Ok(r) if r.available_bytes() > MAX_FRAME + VNET_HDR => (true, true),
                    Ok(mut r) => (r.read_to_end(&mut self.buf).is_ok(), false),
                    Err(_) => (false, false),
                };
                if big {
                    c.truncated.fetch_add(1, Ordering::Relaxed);
                } else if !ok || self.buf.len() < VNET_HDR + 14 {
                    c.read_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    crate::host::ring_put(&self.tx, &self.buf);
                    c.from_host.fetch_add(1, Ordering::Relaxed);
                    c.from_host_bytes
                        .fetch_add((self.buf.len() - VNET_HDR) as u64, Ordering::Relaxed);
                }
                let _ = st.add_used(head, 0);
                moved += 1;
            }
        }
        if moved > 0 {
            self.tx.txsync();
            if vq.needs_notification().unwrap_or(true) {
                let _ = vq.signal_used_queue();
            }
        } else if avail_beyond_ring(vq, &mem) {
            g.tx_broken = true;
            c.read_errors.fetch_add(1, Ordering::Relaxed);
        }
        moved
    }

    /// What the switch left in the port's RX ring (packets converted for the guest's
    /// header) and what waits for guest buffers -> guest RX buffers; signals the guest
    /// once for everything added this pass. Returns the frames delivered.
    pub fn push(&mut self) -> usize {
        let mut g = lock(&self.guest);
        let g = &mut *g;
        let Some((vq, mem)) = g.queue(RX) else {
            return 0;
        };
        let mut sent = 0;
        {
            let mut st = vq.get_mut();
            if !st.get_queue().ready() || !st.is_enabled() {
                return 0;
            }
            self.rx.rxsync();
            loop {
                if g.out.pending.is_empty() {
                    if sent >= BURST || self.rx.space() == 0 {
                        break;
                    }
                    let mut f = g.out.spare.pop().unwrap_or_default();
                    crate::host::ring_take(&self.rx, &mut f);
                    g.out.stage(f, &self.counters);
                    continue;
                }
                match deliver(&mut g.out, st.get_queue_mut(), &mem, &self.counters) {
                    Some(true) => sent += 1,
                    Some(false) => {}
                    None => break, // no guest buffers: the rest waits
                }
            }
            self.rx.rxsync();
        }
        if sent > 0 || g.rx_dirty {
            g.rx_dirty = false;
            if vq.needs_notification().unwrap_or(true) {
                let _ = vq.signal_used_queue();
            }
        }
        sent
    }

    /// A packet handed over by the switch (the engine's direct delivery, same header
    /// length): into guest RX buffers now, or queued behind what already waits.
    pub fn send(&self, hdr: &[u8], frags: &[vale_abi::Frag<'_>]) -> bool {
        if frags.len() > MAX_PARTS {
            return false; // never from the engine (MAX_FRAGS)
        }
        let mut g = lock(&self.guest);
        let g = &mut *g;
        // Straight from the sender's buffers into guest buffers when nothing waits and
        // the guest takes the packet as it is (its offloads accepted).
        if g.out.pending.is_empty() {
            if let Some((vq, mem)) = g.queue(RX) {
                let mut st = vq.get_mut();
                if st.get_queue().ready() && st.is_enabled() {
                    let out = &g.out;
                    let r = crate::sys::with_slices(frags, |parts| {
                        // The header: converted by the switch, or the sender's own at
                        // the start of the first fragment.
                        let first = parts.first().copied().unwrap_or(&[]);
                        let (h, first) = if hdr.len() == VNET_HDR {
                            (hdr, first)
                        } else if first.len() >= VNET_HDR {
                            first.split_at(VNET_HDR)
                        } else {
                            return None;
                        };
                        let sum = parts.iter().map(|p| p.len()).sum::<usize>();
                        let len = if hdr.is_empty() { sum } else { sum + VNET_HDR };
                        // Copied out once, then checked: the sender may rewrite `h`.
                        let mut hb = [0u8; VNET_HDR];
                        hb.copy_from_slice(h);
                        if len < VNET_HDR + 14 || !out.guest_takes(&VnetHdr::parse(&hb[..10])) {
                            return None;
                        }
                        if out.acked & (1 << F_GUEST_CSUM) == 0 {
                            hb[0] &= !offload::F_DATA_VALID;
                        }
                        let mut rest: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
                        rest[0] = first;
                        rest[1..parts.len()].copy_from_slice(&parts[1..]);
                        Some((
                            put_parts(
                                st.get_queue_mut(),
                                &mem,
                                &mut hb,
                                &rest[..parts.len()],
                                out.mergeable(),
                            ),
                            len,
                        ))
                    });
                    match r {
                        Some((Put::Done, len)) => {
                            g.rx_dirty = true;
                            self.counters.to_host.fetch_add(1, Ordering::Relaxed);
                            self.counters
                                .to_host_bytes
                                .fetch_add((len - VNET_HDR) as u64, Ordering::Relaxed);
                            return true;
                        }
                        Some((Put::Bad, _)) => {
                            g.rx_dirty = true;
                            self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                            return true;
                        }
                        Some((Put::NoRoom, _)) | None => {} // staged below
                    }
                }
            }
        }
        if g.out.pending.len() >= MAX_PENDING {
            return false;
        }
        let mut f = g.out.spare.pop().unwrap_or_default();
        f.clear();
        f.extend_from_slice(hdr);
        for p in frags {
            let at = f.len();
            f.resize(at + p.len(), 0);
            p.copy_to(&mut f[at..]);
        }
        g.out.stage(f, &self.counters);
        let Some((vq, mem)) = g.queue(RX) else {
            return true; // delivered when the guest sets its queues up (or dropped)
        };
        let mut st = vq.get_mut();
        if !st.get_queue().ready() || !st.is_enabled() {
            return true;
        }
        while !g.out.pending.is_empty() {
            match deliver(&mut g.out, st.get_queue_mut(), &mem, &self.counters) {
                Some(_) => g.rx_dirty = true,
                None => break,
            }
        }
        true
    }

    /// Before the forwarding thread sleeps: asks the guest to kick for new TX buffers
    /// (and for RX buffers, if frames wait for them); true if there is work already.
    /// Queues the frontend stopped (a paused VM) are no work, nor are frames waiting for
    /// RX buffers the guest has not added since they last found no room: either would
    /// keep the thread awake for as long as the guest stays that way.
    pub fn arm(&self) -> bool {
        let mut g = lock(&self.guest);
        let mut work = false;
        let live = |vq: &VringRwLock| {
            let st = vq.get_ref();
            st.get_queue().ready() && st.is_enabled()
        };
        if let Some((vq, mem)) = g.queue(TX) {
            if !g.tx_broken && live(&vq) && vq.enable_notification().unwrap_or(false) {
                if avail_beyond_ring(&vq, &mem) {
                    g.tx_broken = true;
                    self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    work = true;
                }
            }
        }
        if !g.out.pending.is_empty() {
            if let Some((vq, mem)) = g.queue(RX) {
                if live(&vq) {
                    let mut st = vq.get_mut();
                    let q = st.get_queue_mut();
                    match q.avail_idx(&*mem, std::sync::atomic::Ordering::Acquire) {
                        Err(_) => {}
                        // Buffers added since the last try: deliver them first.
                        Ok(now) if Some(now.0) != g.out.rx_seen => work = true,
                        Ok(now) => {
                            // A kick when the guest adds any buffer: with EVENT_IDX,
                            // `avail_event` is written from `next_avail`, which would ask
                            // for a kick only past the buffers it has already added.
                            let next = q.next_avail();
                            q.set_next_avail(now.0);
                            work |= q.enable_notification(&*mem).unwrap_or(false);
                            q.set_next_avail(next);
                            // One more try: buffers added while the last one looked are
                            // behind `now` and would bring no kick.
                            if !work && deliver(&mut g.out, q, &mem, &self.counters).is_some() {
                                g.rx_dirty = true;
                                work = true;
                            }
                        }
                    }
                }
            }
        }
        work
    }

    /// After the forwarding thread woke: polling again, no kicks wanted.
    pub fn disarm(&self) {
        let g = lock(&self.guest);
        if let Some(vr) = &g.vrings {
            for vq in vr {
                let _ = vq.disable_notification();
            }
        }
    }
}

/// Whether the guest's avail index is further ahead than its ring holds (a broken or
/// hostile driver): then "more to do" can never be done.
fn avail_beyond_ring(vq: &VringRwLock, mem: &GuestMemoryMmap) -> bool {
    let st = vq.get_ref();
    let q = st.get_queue();
    match q.avail_idx(mem, std::sync::atomic::Ordering::Acquire) {
        Ok(i) => (i - std::num::Wrapping(q.next_avail())).0 > q.size(),
        Err(_) => true,
    }
}

/// Offers the first pending frame to the guest: `Some(true)` delivered, `Some(false)`
/// dropped (counted), `None` no room (it stays first in line).
fn deliver(
    out: &mut Outbox,
    q: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    c: &Counters,
) -> Option<bool> {
    let mergeable = out.mergeable();
    let frame = out.pending.front_mut()?;
    let r = match put_frame(q, mem, frame, mergeable) {
        Put::Done => {
            c.to_host.fetch_add(1, Ordering::Relaxed);
            c.to_host_bytes
                .fetch_add((frame.len() - VNET_HDR) as u64, Ordering::Relaxed);
            true
        }
        Put::Bad => {
            c.write_errors.fetch_add(1, Ordering::Relaxed);
            false
        }
        Put::NoRoom => {
            // Buffers the guest added while this looked are tried once more by `arm`.
            out.rx_seen = q
                .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                .ok()
                .map(|i| i.0);
            return None;
        }
    };
    if let Some(f) = out.pending.pop_front() {
        out.recycle(f);
    }
    Some(r)
}

impl Outbox {
    fn recycle(&mut self, f: Vec<u8>) {
        if self.spare.len() < 64 {
            self.spare.push(f);
        }
    }

    /// Queues one packet from the port (12-byte header in front) for the guest, finishing
    /// offloads it did not negotiate: TCP segmentation and checksums.
    fn stage(&mut self, mut frame: Vec<u8>, counters: &Counters) {
        if frame.len() < VNET_HDR + 14 {
            counters.truncated.fetch_add(1, Ordering::Relaxed);
            self.recycle(frame);
            return;
        }
        let mut h = VnetHdr::parse(&frame[..VNET_HDR]);
        if self.guest_takes(&h) {
            if h.flags & offload::F_DATA_VALID != 0 && self.acked & (1 << F_GUEST_CSUM) == 0 {
                frame[0] &= !offload::F_DATA_VALID;
            }
            self.pending.push_back(frame);
            return;
        }
        h.flags &= offload::F_NEEDS_CSUM; // what resolve looks at
        let (pending, spare) = (&mut self.pending, &mut self.spare);
        let r = offload::resolve(&h, &frame[VNET_HDR..], &mut self.work, |seg| {
            let mut f = spare.pop().unwrap_or_default();
            f.clear();
            f.resize(VNET_HDR, 0);
            f.extend_from_slice(seg);
            pending.push_back(f);
        });
        if r.is_err() {
            counters.bad_offload.fetch_add(1, Ordering::Relaxed);
        }
        self.recycle(frame);
    }

    /// Whether the guest takes a packet in several RX buffers (`MRG_RXBUF`).
    fn mergeable(&self) -> bool {
        self.acked & (1u64 << VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    /// Whether the guest accepted the offloads header `h` asks of it.
    fn guest_takes(&self, h: &VnetHdr) -> bool {
        let has = |bit: u32| self.acked & (1u64 << bit) != 0;
        if h.flags & offload::F_NEEDS_CSUM != 0 && !has(F_GUEST_CSUM) {
            return false;
        }
        if h.gso_type & offload::GSO_ECN != 0 && !has(F_GUEST_ECN) {
            return false;
        }
        match h.gso_type & !offload::GSO_ECN {
            offload::GSO_NONE => true,
            offload::GSO_TCPV4 => has(F_GUEST_TSO4),
            offload::GSO_TCPV6 => has(F_GUEST_TSO6),
            _ => false,
        }
    }
}

/// What became of a frame offered to the guest's RX queue.
enum Put {
    Done,
    /// Not enough guest buffers now; nothing was taken.
    NoRoom,
    /// The guest's buffers are not writable guest memory: dropped.
    Bad,
}

/// Writes `frame` (12-byte header first; its `num_buffers` is filled in here) into as
/// many guest RX buffers as it takes.
fn put_frame(
    q: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    frame: &mut [u8],
    mergeable: bool,
) -> Put {
    let (h, rest) = frame.split_at(VNET_HDR);
    let mut hdr = [0u8; VNET_HDR];
    hdr.copy_from_slice(h);
    put_parts(q, mem, &mut hdr, &[rest], mergeable)
}

/// Writes a packet given as its 12-byte header (`num_buffers` is filled in here) and
/// the parts that follow it into as many guest RX buffers as it takes, or into one
/// buffer (chain) if the guest did not accept `MRG_RXBUF` (it reads no further).
fn put_parts(
    q: &mut virtio_queue::Queue,
    mem: &GuestMemoryMmap,
    hdr: &mut [u8; VNET_HDR],
    parts: &[&[u8]],
    mergeable: bool,
) -> Put {
    let len = VNET_HDR + parts.iter().map(|p| p.len()).sum::<usize>();
    // A frame that needs more buffers than this can never fit: dropped, not waited for.
    let most = if mergeable {
        MAX_RX_BUFFERS.min(q.size() as usize)
    } else {
        1
    };
    let mut chains = Vec::new();
    let mut room = 0usize;
    let mut bad = false;
    while room < len && chains.len() < most {
        let Some(c) = q.pop_descriptor_chain(mem) else {
            break;
        };
        let head = c.head_index();
        match c.writer(mem) {
            Ok(w) if w.available_bytes() > 0 => {
                room += w.available_bytes();
                chains.push((head, w));
            }
            _ => {
                // Not writable guest memory: returned unused, the frame dropped.
                let _ = q.add_used(mem, head, 0);
                bad = true;
                break;
            }
        }
    }
    if bad || room < len {
        if bad || chains.len() >= most {
            for (head, _) in chains {
                let _ = q.add_used(mem, head, 0);
            }
            return Put::Bad;
        }
        // Put them back for the next try.
        for _ in 0..chains.len() {
            q.go_to_previous_position();
        }
        return Put::NoRoom;
    }
    hdr[10..12].copy_from_slice(&(chains.len() as u16).to_le_bytes());
    let mut src = std::iter::once(&hdr[..])
        .chain(parts.iter().copied())
        .filter(|p| !p.is_empty());
    let mut cur: &[u8] = src.next().unwrap_or(&[]);
    let mut left = len;
    for (head, mut w) in chains {
        let mut n = w.available_bytes().min(left);
        let wrote = n;
        let mut ok = true;
        while n > 0 {
            if cur.is_empty() {
                cur = src.next().unwrap_or(&[]);
                if cur.is_empty() {
                    break;
                }
            }
            let k = cur.len().min(n);
            ok &= w.write_all(&cur[..k]).is_ok();
            cur = &cur[k..];
            n -= k;
        }
        left -= wrote;
        let _ = q.add_used(mem, head, if ok { wrote as u32 } else { 0 });
    }
    Put::Done
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
            // Offloads: the virtio-net header crosses the switch as the port's header;
            // ports that do not take them get them finished in software (the switch for
            // plain ports, `stage` for guests that did not accept them).
            | 1 << F_CSUM
            | 1 << F_GUEST_CSUM
            | 1 << F_GUEST_TSO4
            | 1 << F_GUEST_TSO6
            | 1 << F_GUEST_ECN
            | 1 << F_HOST_TSO4
            | 1 << F_HOST_TSO6
            | 1 << F_HOST_ECN
    }
    fn acked_features(&mut self, features: u64) {
        lock(&self.guest).out.acked = features;
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }
    fn set_event_idx(&mut self, _enabled: bool) {}
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        lock(&self.guest).mem = Some(mem);
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
        // A kick (or a ring enabled): the queues are the forwarding thread's to serve
        // from now on; wake it in case it sleeps.
        tracing::debug!(device_event, "vhost-user kick");
        {
            let mut g = lock(&self.guest);
            if g.vrings.is_none() {
                g.vrings = Some(vrings.to_vec());
            }
            if device_event == TX {
                g.tx_broken = false;
            }
        }
        self.lane.wake_forwarder();
        // Never an error: the crate would end the worker thread for good.
        Ok(())
    }
}

/// vhost-user requests the relay looks at.
const SET_FEATURES: u32 = 2;
const SET_MEM_TABLE: u32 = 5;
/// Memory slots (CONFIGURE_MEM_SLOTS, not offered): refused outright.
const ADD_MEM_REG: u32 = 37;
const REM_MEM_REG: u32 = 38;
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

/// Checks a `SET_MEM_TABLE` before the crate maps it: every region must lie inside its
/// file (the crate maps what it is told, and touching a mapping past the end of its file
/// kills the process with SIGBUS), and a memfd that allows sealing (QEMU's
/// memory-backend-memfd) is sealed against shrinking, so the frontend cannot cut guest
/// memory from under the mapping later. Files that cannot be sealed (hugetlbfs, /dev/shm,
/// memfds without MFD_ALLOW_SEALING) are accepted with a warning that valed trusts the
/// frontend not to truncate them.
fn check_mem_table(msg: &[u8], fds: &[rustix::fd::OwnedFd], port: &str) -> Result<(), String> {
    let body = &msg[12..];
    if body.len() < 8 {
        return Err("short memory table".into());
    }
    let n = u32::from_le_bytes(body[0..4].try_into().unwrap_or([0; 4])) as usize;
    if n == 0 || n > 8 || body.len() < 8 + 32 * n || fds.len() != n {
        return Err(format!(
            "memory table of {n} regions with {} descriptors",
            fds.len()
        ));
    }
    for (i, fd) in fds.iter().enumerate() {
        let r = &body[8 + 32 * i..8 + 32 * (i + 1)];
        let u = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap_or([0; 8]));
        let (size, offset) = (u(8), u(24));
        let st = rustix::fs::fstat(fd).map_err(|e| format!("region {i}: fstat: {e}"))?;
        let end = offset
            .checked_add(size)
            .ok_or_else(|| format!("region {i}: offset + size overflows"))?;
        if size == 0 || end > st.st_size as u64 {
            return Err(format!(
                "region {i}: bytes {offset}..{end} are not inside its file of {} bytes",
                st.st_size
            ));
        }
        use rustix::fs::SealFlags;
        let sealed = match rustix::fs::fcntl_get_seals(fd) {
            Ok(seals) if seals.contains(SealFlags::SHRINK) => true,
            Ok(seals) if !seals.contains(SealFlags::SEAL) => {
                rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK)
                    .map_err(|e| format!("region {i}: cannot seal it against shrinking: {e}"))?;
                true
            }
            _ => false,
        };
        if !sealed {
            tracing::warn!(
                port,
                "vhost-user: guest memory region {i} cannot be sealed against shrinking \
                 (not a memfd, or one created without MFD_ALLOW_SEALING): valed trusts \
                 the frontend not to truncate it"
            );
        }
    }
    Ok(())
}

/// Relays one frontend connection to the vhost crate's handler, holding back what the
/// crate would refuse from QEMU 7.2: a `SET_VRING_ENABLE` before `SET_FEATURES` (QEMU
/// disables rings early; rings start disabled anyway, so it is acknowledged here and
/// not passed on). Returns when either side hangs up.
fn relay(front: UnixStream, back: UnixStream, port: &str, counters: &Counters) {
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
        let refused = match req {
            SET_MEM_TABLE => check_mem_table(&msg, &fds, port).err(),
            ADD_MEM_REG | REM_MEM_REG => Some("memory slots were not offered".into()),
            _ => None,
        };
        if let Some(why) = refused {
            // The frontend sees the connection close; it may come back with a good one.
            tracing::warn!(port, "vhost-user frontend refused: {why}");
            counters.read_errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
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
    /// Serves `backend` on `path`: valed listens there (`client` false: QEMU's
    /// `-chardev socket,path=PATH`, DPDK's `net_virtio_user`), or valed connects to a
    /// frontend listening there (`client` true: QEMU's `server=on`, OVS's
    /// `dpdkvhostuserclient`), and again after it goes away. `private` is a socket path in
    /// a directory only valed can enter, where the vhost crate listens behind the relay.
    pub fn start(
        name: String,
        path: &str,
        client: bool,
        private: PathBuf,
        backend: NetBackend,
        counters: Arc<Counters>,
    ) -> std::io::Result<Worker> {
        let front_l = if client {
            None
        } else {
            Some(std::os::unix::net::UnixListener::from(
                crate::sys::stream_listen(path)?,
            ))
        };
        let mut listener = Listener::new(&private, true).map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>> =
            Arc::new(Mutex::new(None));
        let guest = backend.guest.clone();
        let backend = Arc::new(RwLock::new(backend));
        let front_now: Arc<Mutex<Option<UnixStream>>> = Arc::new(Mutex::new(None));
        let (stop2, shutdown2, front2) = (stop.clone(), shutdown.clone(), front_now.clone());
        let path = path.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("vale-vhost-{name}"))
            .spawn(move || {
                let mut warned = false;
                while !stop2.load(Ordering::Acquire) {
                    let front = match &front_l {
                        // Wait for a frontend without blocking in accept, so stop works.
                        Some(l) => {
                            if !crate::sys::readable_within(l.as_raw_fd(), 200) {
                                continue;
                            }
                            let Ok((front, _)) = l.accept() else {
                                continue;
                            };
                            front
                        }
                        // Connect to the frontend, retrying while it is not there.
                        None => match UnixStream::connect(&path) {
                            Ok(f) => {
                                warned = false;
                                f
                            }
                            Err(e) => {
                                if !warned {
                                    tracing::info!(port = %name, "vhost-user: waiting for {path}: {e}");
                                    warned = true;
                                }
                                for _ in 0..5 {
                                    if stop2.load(Ordering::Acquire) {
                                        break;
                                    }
                                    std::thread::sleep(Duration::from_millis(100));
                                }
                                continue;
                            }
                        },
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
                    if let Err(e) = d.start(&mut listener) {
                        tracing::warn!(port = %name, "vhost-user accept: {e}");
                        continue;
                    }
                    tracing::info!(port = %name, "vhost-user frontend connected");
                    *shutdown2.lock().unwrap_or_else(|p| p.into_inner()) = d.shutdown_handle();
                    let (n2, c2) = (name.clone(), counters.clone());
                    let relay = std::thread::spawn(move || relay(front, back, &n2, &c2));
                    let r = d.wait();
                    let _ = relay.join();
                    // Its queues and memory are gone with it.
                    lock(&guest).forget(&counters);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 frame of `payload` bytes behind a 12-byte header asking for TSO at
    /// `mss` and checksum completion, as a guest or TAP would send it.
    fn tso_frame(payload: usize, mss: u16) -> Vec<u8> {
        let mut f = Vec::new();
        VnetHdr {
            flags: offload::F_NEEDS_CSUM,
            gso_type: offload::GSO_TCPV4,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        }
        .write(&mut f, VNET_HDR as u16);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        let tot = (40 + payload) as u16;
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&tot.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&5001u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = 0x18; // PSH ACK
        f.extend_from_slice(&tcp);
        f.extend((0..payload).map(|i| i as u8));
        f
    }

    fn tcp_ok(seg: &[u8]) -> bool {
        let ip = &seg[14..34];
        let l4 = &seg[34..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&ip[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(l4);
        offload::checksum(ip) == 0 && offload::checksum(&pseudo) == 0
    }

    #[test]
    fn a_guest_without_tso_gets_segments_with_checksums() {
        let c = Counters::default();
        let mut o = Outbox::default();
        o.stage(tso_frame(3000, 1000), &c);
        assert_eq!(o.pending.len(), 3);
        let mut seq = Vec::new();
        for f in &o.pending {
            assert_eq!(&f[..VNET_HDR], &[0u8; VNET_HDR], "a plain header");
            let seg = &f[VNET_HDR..];
            assert_eq!(seg.len(), 14 + 40 + 1000);
            assert!(tcp_ok(seg), "IP and TCP checksums complete");
            seq.push(u32::from_be_bytes(seg[38..42].try_into().unwrap()));
        }
        assert_eq!(seq, [0, 1000, 2000]);
        assert_eq!(c.bad_offload.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_guest_with_tso_gets_the_super_frame_untouched() {
        let c = Counters::default();
        let mut o = Outbox {
            acked: 1 << F_GUEST_CSUM | 1 << F_GUEST_TSO4 | 1 << F_GUEST_TSO6,
            ..Default::default()
        };
        let f = tso_frame(3000, 1000);
        o.stage(f.clone(), &c);
        assert_eq!(o.pending.len(), 1);
        assert_eq!(o.pending[0], f);
        // Checksums taken, TSO not: the super-frame is cut.
        let mut o = Outbox {
            acked: 1 << F_GUEST_CSUM,
            ..Default::default()
        };
        o.stage(tso_frame(3000, 1500), &c);
        assert_eq!(o.pending.len(), 2);
    }

    #[test]
    fn malformed_offloads_and_runts_are_counted() {
        let c = Counters::default();
        let mut o = Outbox::default();
        let mut f = tso_frame(3000, 1000);
        f[VNET_HDR + 14] = 0x60; // not IPv4 any more
        o.stage(f, &c);
        o.stage(vec![0; VNET_HDR + 5], &c);
        assert!(o.pending.is_empty());
        assert_eq!(c.bad_offload.load(Ordering::Relaxed), 1);
        assert_eq!(c.truncated.load(Ordering::Relaxed), 1);
    }
}
