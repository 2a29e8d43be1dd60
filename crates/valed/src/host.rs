//! Host ports: the Linux host on a switch. A host port is a TAP interface valed creates
//! (netmap's persistent port, `vale-ctl -n vi0`) or an existing interface attached by
//! name through an AF_PACKET socket (`vale-ctl -a vale0:eth0`). Attached, it is an
//! ordinary port of the switch whose "client" is the switch's own forwarding thread:
//! each pass it reads what the interface has into the port's TX ring (the application
//! side of the ring protocol, the same `AppRing` any client uses), forwards, and writes
//! what the switch delivered to the port's RX ring out to the interface. No thread
//! hand-offs and no wake-ups between the interface and the switch: a frame from the host
//! crosses the switch in the pass that read it.

use rustix::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use vale_abi::AppRing;
use vale_abi::layout::NS_MOREFRAG;
use vale_switch::PortKey;

/// Largest frame a host port reads: a 64 KiB IP packet with its Ethernet and
/// virtio-net headers.
pub const MAX_FRAME: usize = 65536 + 256;
/// Frames moved each way per host port per pass.
const BURST: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TAP interface valed created and owns.
    Tap,
    /// An existing interface, reached with an AF_PACKET socket while attached.
    Nic,
    /// QEMU's `-netdev dgram`: a unix datagram socket, one frame per datagram.
    QemuDgram,
    /// QEMU's `-netdev stream`: a unix stream socket, each frame after a 4-byte
    /// big-endian length.
    QemuStream,
    /// A vhost-user socket (QEMU `-netdev vhost-user`, DPDK `net_virtio_user`).
    VhostUser,
    /// An existing interface whose received frames an XDP program steers to AF_XDP
    /// sockets while it is attached (`-a valeX:IF --xdp`).
    Xdp,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tap => "tap",
            Kind::Nic => "nic",
            Kind::QemuDgram => "qemu-dgram",
            Kind::QemuStream => "qemu-stream",
            Kind::VhostUser => "vhost-user",
            Kind::Xdp => "nic-xdp",
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub from_host: AtomicU64,
    pub from_host_bytes: AtomicU64,
    pub to_host: AtomicU64,
    pub to_host_bytes: AtomicU64,
    pub truncated: AtomicU64,
    pub write_errors: AtomicU64,
    pub read_errors: AtomicU64,
    pub bad_offload: AtomicU64,
    /// Frames the kernel dropped on an AF_XDP port's rings: received ones with no room
    /// or larger than a UMEM frame, sent descriptors it refused as invalid.
    pub kernel_drops: AtomicU64,
    /// The interface was deleted under the port (a TAP's).
    pub gone: std::sync::atomic::AtomicBool,
}

impl Counters {
    pub fn snapshot(&self) -> vale::proto::HostCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vale::proto::HostCounters {
            from_host: g(&self.from_host),
            from_host_bytes: g(&self.from_host_bytes),
            to_host: g(&self.to_host),
            to_host_bytes: g(&self.to_host_bytes),
            truncated: g(&self.truncated),
            write_errors: g(&self.write_errors),
            read_errors: g(&self.read_errors),
            bad_offload: g(&self.bad_offload),
            kernel_drops: g(&self.kernel_drops),
        }
    }
}

/// One host port, as the control thread knows it.
pub struct Host {
    pub kind: Kind,
    /// TAP: the device (the interface exists while valed holds it).
    pub tap: Option<OwnedFd>,
    /// Where it is attached: `(valeX:NAME, lane, key)`.
    pub attached: Option<(String, usize, PortKey)>,
    pub counters: Arc<Counters>,
    /// A socket file valed created for it (removed with it).
    pub socket: Option<std::path::PathBuf>,
    /// A stream port waiting for its VM to connect: the switch port it will be.
    pub pending_port: Option<String>,
    /// A vhost-user port's serving thread.
    pub vhost: Option<crate::vhost::Worker>,
}

/// Copies one frame into the next free slots of a TX ring (the caller checked there is
/// room), several with `NS_MOREFRAG` if it is larger than a buffer, and moves `head`
/// past them.
pub fn ring_put(ring: &AppRing, frame: &[u8]) {
    let v = ring.view();
    let bs = v.bufs().buf_size() as usize;
    let n = ring.num_slots();
    let parts = frame.len().div_ceil(bs).max(1);
    let mut h = ring.head();
    for x in 0..parts {
        let chunk = &frame[(x * bs).min(frame.len())..((x + 1) * bs).min(frame.len())];
        let s = v.read_slot(h);
        v.bufs().write(s.buf_idx, chunk);
        let flags = if x + 1 < parts { NS_MOREFRAG } else { 0 };
        v.write_len_flags(h, chunk.len() as u16, flags);
        h = vale_abi::ring::next(h, n);
    }
    ring.advance(parts as u32);
}

/// The next packet of an RX ring, from `head`: the slots it takes and its length
/// (a chain cut short by the ring's end is taken as it is).
pub fn ring_peek(ring: &AppRing) -> (u32, usize) {
    let v = ring.view();
    let (n, space) = (ring.num_slots(), ring.space());
    let (mut used, mut len, mut h) = (0u32, 0usize, ring.head());
    loop {
        let s = v.read_slot(h);
        len += s.len as usize;
        used += 1;
        h = vale_abi::ring::next(h, n);
        if s.flags & NS_MOREFRAG == 0 || used >= space {
            return (used, len);
        }
    }
}

/// Copies the `used` slots from `head` (a packet `ring_peek` measured) into `dst`, which
/// is as long as the packet.
pub fn ring_copy(ring: &AppRing, used: u32, dst: &mut [u8]) {
    let v = ring.view();
    let n = ring.num_slots();
    let (mut at, mut h) = (0usize, ring.head());
    for _ in 0..used {
        let s = v.read_slot(h);
        let l = (s.len as usize).min(dst.len() - at);
        v.bufs().read(s.buf_idx, &mut dst[at..at + l]);
        at += l;
        h = vale_abi::ring::next(h, n);
    }
}

/// Takes the next packet of an RX ring (fragments joined) into `out`, and moves `head`
/// past it.
pub fn ring_take(ring: &AppRing, out: &mut Vec<u8>) {
    let (used, len) = ring_peek(ring);
    out.clear();
    out.resize(len, 0);
    ring_copy(ring, used, out);
    ring.advance(used);
}

/// The egress of direct ports for one switch of a lane: packets for a host port are
/// written to its interface straight from the sender's buffers.
pub struct HostEgress<'a> {
    pub switch: usize,
    pub hosts: &'a std::collections::HashMap<PortKey, HostIo>,
    /// vhost-user ports: packets go into the guest's RX buffers.
    pub vhosts: &'a std::collections::HashMap<PortKey, crate::vhost::VhostIo>,
}

impl vale_switch::Egress for HostEgress<'_> {
    fn send(&mut self, dst: vale_switch::PortId, hdr: &[u8], frags: &[vale_abi::Frag<'_>]) -> bool {
        let key = PortKey {
            switch: self.switch,
            port: dst,
        };
        let Some(h) = self.hosts.get(&key) else {
            return self.vhosts.get(&key).is_some_and(|v| v.send(hdr, frags));
        };
        // A converted header goes first, as one more fragment.
        use rustix::fd::AsFd;
        match crate::sys::write_frags(h.dev.as_fd(), hdr, frags) {
            Ok(n) => {
                h.counters.to_host.fetch_add(1, Ordering::Relaxed);
                h.counters
                    .to_host_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
                true
            }
            Err(_) => {
                h.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// An attached host port, as its forwarding thread drives it.
pub struct HostIo {
    /// The interface: a TAP device or a packet socket, non-blocking.
    pub dev: OwnedFd,
    /// The application side of the port's rings.
    pub tx: AppRing,
    pub rx: AppRing,
    pub counters: Arc<Counters>,
    /// Where frames go for an unconnected datagram socket (QEMU's `local.path`).
    pub peer: Option<rustix::net::SocketAddrUnix>,
    /// QEMU stream framing: bytes read but not yet a whole frame, and bytes of a frame
    /// the socket did not take yet. `None` for devices that keep frame boundaries.
    stream: Option<(Vec<u8>, Vec<u8>)>,
    /// The device is gone: a stream's VM hung up (nothing moves until it reconnects),
    /// or a TAP's interface was deleted (for good).
    closed: bool,
    /// The interface, for messages.
    name: String,
    /// The device's data in the forwarding thread's epoll set, and whether it is
    /// registered for writability too (a stream port with bytes the socket did not take).
    ev_data: u64,
    out_armed: bool,
    /// Scratch for one frame.
    buf: Vec<u8>,
    /// Attached interfaces: the packet socket's TPACKET_V2 receive ring, if it could be
    /// set up (plain reads otherwise).
    ring: Option<crate::sys::PacketRing>,
    /// Attached with `--xdp`: the program and the AF_XDP sockets, one per receive
    /// queue (dropping them gives the interface back).
    xsk: Option<crate::xsk::Attached>,
    /// Passes over the AF_XDP sockets, and when the kernel's drop counters were last
    /// read.
    xsk_polls: u32,
    xsk_stats_at: std::time::Instant,
}

impl HostIo {
    pub fn new(
        dev: OwnedFd,
        tx: AppRing,
        rx: AppRing,
        counters: Arc<Counters>,
        peer: Option<rustix::net::SocketAddrUnix>,
        stream: bool,
    ) -> HostIo {
        HostIo {
            dev,
            tx,
            rx,
            counters,
            peer,
            stream: stream.then(|| (Vec::new(), Vec::new())),
            closed: false,
            name: String::new(),
            ev_data: 0,
            out_armed: false,
            buf: vec![0u8; MAX_FRAME],
            ring: None,
            xsk: None,
            xsk_polls: 0,
            xsk_stats_at: std::time::Instant::now(),
        }
    }

    /// Names the interface in messages; `ev_data` is the device's data in the
    /// forwarding thread's epoll set.
    pub fn named(mut self, name: &str, ev_data: u64) -> HostIo {
        self.name = name.to_string();
        self.ev_data = ev_data;
        self
    }

    /// The forwarding thread's epoll reported an error on the device (level-triggered:
    /// left alone, it would wake the thread at once, forever). A socket's pending error
    /// (`ENETDOWN` when an attached interface goes down or away) is read, which clears
    /// it, and counted; a TAP reports errors only once its interface is deleted, and is
    /// then done for. Stream ports see their hang-up in `pull`.
    pub fn device_error(&mut self, epoll: &OwnedFd) {
        if self.stream.is_some() || self.closed {
            return;
        }
        match rustix::net::sockopt::socket_error(&self.dev) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(interface = %self.name, "host port: {e}");
            }
            Err(_) => self.gone(epoll),
        }
    }

    /// The TAP's interface was deleted: out of the epoll set, nothing read from it
    /// again (what the switch sends it is counted as `write_errors`).
    fn gone(&mut self, epoll: &OwnedFd) {
        if !self.closed {
            tracing::warn!(
                interface = %self.name,
                "host port's interface was deleted; `vale-ctl -d` and `-r` it, `-n` makes a new one"
            );
            self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.gone.store(true, Ordering::Relaxed);
        self.closed = true;
        let _ = rustix::event::epoll::delete(epoll, &self.dev);
    }

    /// Reads an attached interface's frames from a TPACKET_V2 ring from now on.
    pub fn with_ring(mut self, ring: Option<crate::sys::PacketRing>) -> HostIo {
        self.ring = ring;
        self
    }

    /// Reads and writes an attached interface through AF_XDP sockets from now on.
    pub fn with_xsk(mut self, x: crate::xsk::Attached) -> HostIo {
        self.xsk = Some(x);
        self
    }

    /// AF_XDP: frames from the sockets' receive rings into the TX ring, each as one
    /// slot or a few (a received frame is at most a UMEM frame less the kernel's 256
    /// bytes of headroom). The first socket served turns each pass, so a busy queue
    /// cannot starve the others (a zero-copy NIC drops what waits, uncounted).
    fn pull_xsk(&mut self) -> usize {
        let Some(x) = self.xsk.as_mut() else {
            return 0;
        };
        let bs = self.tx.view().bufs().buf_size() as usize;
        let room = crate::xsk::FRAME.div_ceil(bs) as u32;
        let (tx, c) = (&self.tx, &self.counters);
        let mut got = 0;
        let nq = x.socks.len();
        self.xsk_polls = self.xsk_polls.wrapping_add(1);
        let first = self.xsk_polls as usize % nq.max(1);
        for i in 0..nq {
            let s = &mut x.socks[(first + i) % nq];
            let (n, bad) = s.recv(BURST - got, |f| {
                if tx.space() < room {
                    return false;
                }
                ring_put(tx, f);
                c.from_host.fetch_add(1, Ordering::Relaxed);
                c.from_host_bytes
                    .fetch_add(f.len() as u64, Ordering::Relaxed);
                true
            });
            c.read_errors.fetch_add(bad, Ordering::Relaxed);
            got += n;
        }
        // The kernel's drop counters, about once a second (a system call per socket;
        // the clock is read only on idle passes and every 1024th).
        if (got == 0 || self.xsk_polls % 1024 == 0)
            && self.xsk_stats_at.elapsed() >= std::time::Duration::from_secs(1)
        {
            self.xsk_stats_at = std::time::Instant::now();
            let lost: u64 = x.socks.iter().map(|s| s.statistics().lost()).sum();
            c.kernel_drops.store(lost, Ordering::Relaxed);
        }
        if got > 0 {
            self.tx.txsync();
        }
        got
    }

    /// AF_XDP: every packet the switch delivered (up to a burst) copied into a UMEM
    /// frame of the first socket and sent; a packet that does not fit a frame is
    /// `truncated`, one with no free frame (the interface is slower than the switch)
    /// a `write_errors`.
    fn push_xsk(&mut self) -> usize {
        let Some(x) = self.xsk.as_mut() else {
            return 0;
        };
        let Some(sock) = x.socks.first_mut() else {
            return 0;
        };
        let c = &self.counters;
        self.rx.rxsync();
        let mut sent = 0;
        while sent < BURST && self.rx.space() > 0 {
            let (used, len) = ring_peek(&self.rx);
            let rx = &self.rx;
            let ok = len <= crate::xsk::FRAME && sock.send(len, |dst| ring_copy(rx, used, dst));
            self.rx.advance(used);
            sent += 1;
            if ok {
                c.to_host.fetch_add(1, Ordering::Relaxed);
                c.to_host_bytes.fetch_add(len as u64, Ordering::Relaxed);
            } else if len > crate::xsk::FRAME {
                c.truncated.fetch_add(1, Ordering::Relaxed);
            } else {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        sock.flush();
        if sock.tx_dropped > 0 {
            // Counted as sent above; the interface dropped them.
            let n = std::mem::take(&mut sock.tx_dropped);
            c.to_host.fetch_sub(n, Ordering::Relaxed);
            c.write_errors.fetch_add(n, Ordering::Relaxed);
        }
        if sent > 0 {
            self.rx.rxsync();
        }
        sent
    }

    /// A stream port's VM connected again: a new connection, empty buffers.
    pub fn reconnect(&mut self, dev: OwnedFd) {
        self.dev = dev;
        self.stream = Some((Vec::new(), Vec::new()));
        self.closed = false;
        self.out_armed = false;
    }

    /// Puts one frame into the TX ring (the caller checked there is room).
    fn inject(&mut self, frame_at: std::ops::Range<usize>, from_stream: bool) {
        let frame = if from_stream {
            &self.stream.as_ref().map_or(&self.buf, |s| &s.0)[frame_at]
        } else {
            &self.buf[frame_at]
        };
        ring_put(&self.tx, frame);
        self.counters.from_host.fetch_add(1, Ordering::Relaxed);
        self.counters
            .from_host_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
    }

    /// Attached interfaces with a receive ring: frames straight from the ring's shared
    /// memory (no system call per frame); super-frames the kernel queued on the socket
    /// instead are read with `read`.
    fn pull_ring(&mut self, room: u32) -> usize {
        use crate::sys::RingFrame;
        let mut got = 0;
        while got < BURST && self.tx.space() >= room {
            let Some(ring) = self.ring.as_mut() else {
                break;
            };
            let (tx, c) = (&self.tx, &self.counters);
            let mut queued = false;
            let took = ring.take(|f| match f {
                RingFrame::Empty => {}
                RingFrame::Frame(b) => {
                    ring_put(tx, b);
                    c.from_host.fetch_add(1, Ordering::Relaxed);
                    c.from_host_bytes
                        .fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                RingFrame::Queued => queued = true,
                RingFrame::Truncated => {
                    c.truncated.fetch_add(1, Ordering::Relaxed);
                }
            });
            if !took {
                break;
            }
            if queued {
                // A pending socket error (ENETDOWN) is returned by the first read, which
                // clears it: read again, or the frame stays queued and every later one
                // would be read in place of the next.
                let r = match rustix::io::read(&self.dev, &mut self.buf) {
                    Err(e) if e != rustix::io::Errno::AGAIN => {
                        self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                        rustix::io::read(&self.dev, &mut self.buf)
                    }
                    r => r,
                };
                match r {
                    Ok(len) if len > 0 && len < MAX_FRAME => self.inject(0..len, false),
                    Ok(_) | Err(_) => {
                        self.counters.truncated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            got += 1;
        }
        if got > 0 {
            self.tx.txsync();
        }
        got
    }

    /// Stream ports: reads what the socket has and injects every whole frame.
    fn pull_stream(&mut self, epoll: &OwnedFd) -> usize {
        if self.closed {
            return 0;
        }
        let bs = self.tx.view().bufs().buf_size() as usize;
        let room = MAX_FRAME.div_ceil(bs) as u32;
        let mut got = 0;
        loop {
            // Whole frames first.
            loop {
                let Some((rbuf, _)) = &self.stream else {
                    return got;
                };
                if rbuf.len() < 4 || self.tx.space() < room || got >= BURST {
                    break;
                }
                let len = u32::from_be_bytes([rbuf[0], rbuf[1], rbuf[2], rbuf[3]]) as usize;
                if len > MAX_FRAME || len == 0 {
                    // Not QEMU's framing: hang up rather than guess.
                    self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    self.hang_up(epoll);
                    return got;
                }
                if rbuf.len() < 4 + len {
                    break;
                }
                self.inject(4..4 + len, true);
                if let Some((rbuf, _)) = &mut self.stream {
                    rbuf.drain(..4 + len);
                }
                got += 1;
            }
            if got >= BURST || self.tx.space() < room {
                break;
            }
            match rustix::io::read(&self.dev, &mut self.buf) {
                Ok(0) => {
                    self.hang_up(epoll);
                    break;
                }
                Ok(n) => {
                    if let Some((rbuf, _)) = &mut self.stream {
                        rbuf.extend_from_slice(&self.buf[..n]);
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    self.counters.read_errors.fetch_add(1, Ordering::Relaxed);
                    self.hang_up(epoll);
                    break;
                }
            }
        }
        if got > 0 {
            self.tx.txsync();
        }
        got
    }

    fn hang_up(&mut self, epoll: &OwnedFd) {
        self.closed = true;
        let _ = rustix::event::epoll::delete(epoll, &self.dev);
    }

    /// Stream ports: writes pending bytes, then whole frames with their length, keeping
    /// what the socket does not take; a full socket leaves packets in the RX ring (whose
    /// own overflow the switch counts as `ring_full`).
    fn push_stream(&mut self, epoll: &OwnedFd) -> usize {
        self.rx.rxsync();
        if self.closed {
            // Nobody to send to: give the slots back.
            let k = self.rx.space();
            if k > 0 {
                self.rx.advance(k);
                self.rx.rxsync();
            }
            return 0;
        }
        let mut sent = 0;
        loop {
            let pending = self.stream.as_ref().map_or(0, |s| s.1.len());
            if pending > 0 {
                let r = match &self.stream {
                    Some((_, w)) => rustix::io::write(&self.dev, w),
                    None => return sent,
                };
                match r {
                    Ok(n) => {
                        if let Some((_, w)) = &mut self.stream {
                            w.drain(..n);
                        }
                        if n < pending {
                            break;
                        }
                    }
                    Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => break,
                    Err(_) => {
                        self.counters.write_errors.fetch_add(1, Ordering::Relaxed);
                        self.hang_up(epoll);
                        break;
                    }
                }
            }
            if sent >= BURST || self.rx.space() == 0 {
                break;
            }
            // The next packet, framed, into the pending buffer.
            let mut frame = Vec::with_capacity(2048);
            ring_take(&self.rx, &mut frame);
            sent += 1;
            if frame.len() > MAX_FRAME {
                // QEMU would drop the connection over it: counted, not sent.
                self.counters.truncated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some((_, w)) = &mut self.stream {
                w.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                w.extend_from_slice(&frame);
            }
            self.counters.to_host.fetch_add(1, Ordering::Relaxed);
            self.counters
                .to_host_bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        if sent > 0 {
            self.rx.rxsync();
        }
        // Bytes the socket did not take: wake when it drains (the switch may stay quiet
        // until then), and stop asking once they are out.
        let waiting = self.stream.as_ref().is_some_and(|s| !s.1.is_empty());
        if waiting != self.out_armed && !self.closed {
            use rustix::event::epoll;
            let flags = if waiting {
                epoll::EventFlags::IN | epoll::EventFlags::OUT
            } else {
                epoll::EventFlags::IN
            };
            let data = epoll::EventData::new_u64(self.ev_data);
            if epoll::modify(epoll, &self.dev, data, flags).is_ok() {
                self.out_armed = waiting;
            }
        }
        sent
    }

    /// Interface -> TX ring: up to a burst of frames, each copied into as many slots as
    /// it needs (`NS_MOREFRAG`), then published. Returns the frames read.
    pub fn pull(&mut self, epoll: &OwnedFd) -> usize {
        let bs = self.tx.view().bufs().buf_size() as usize;
        let room = MAX_FRAME.div_ceil(bs) as u32;
        // `tail` is only as new as the last sync: the switch may have taken the ring
        // since (a pass that found no room and did not sync would wait forever).
        if self.tx.space() < room {
            self.tx.txsync();
        }
        if self.stream.is_some() {
            return self.pull_stream(epoll);
        }
        if self.closed {
            return 0;
        }
        if self.xsk.is_some() {
            return self.pull_xsk();
        }
        let c = self.counters.clone();
        let mut got = 0;
        if self.ring.is_some() {
            return self.pull_ring(room);
        }
        while got < BURST && self.tx.space() >= room {
            match rustix::io::read(&self.dev, &mut self.buf) {
                Ok(0) => break,
                Ok(len) if len >= MAX_FRAME => {
                    c.truncated.fetch_add(1, Ordering::Relaxed);
                    got += 1; // a flood of these must not hold the pass
                }
                Ok(len) => {
                    self.inject(0..len, false);
                    got += 1;
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::BADFD) => {
                    self.gone(epoll); // the TAP's interface was deleted
                    break;
                }
                Err(_) => {
                    // An interface that went down: count and try again on a later
                    // pass.
                    c.read_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        if got > 0 {
            self.tx.txsync();
        }
        got
    }

    /// RX ring -> interface: every packet the switch delivered (up to a burst), each
    /// written whole, then the slots given back. Returns the frames written.
    pub fn push(&mut self, epoll: &OwnedFd) -> usize {
        if self.stream.is_some() {
            return self.push_stream(epoll);
        }
        if self.xsk.is_some() {
            return self.push_xsk();
        }
        let c = &self.counters;
        self.rx.rxsync();
        let mut sent = 0;
        while sent < BURST && self.rx.space() > 0 {
            let (used, len) = ring_peek(&self.rx);
            let whole = len <= self.buf.len();
            if whole {
                ring_copy(&self.rx, used, &mut self.buf[..len]);
            }
            self.rx.advance(used);
            sent += 1;
            if !whole {
                // Larger than any frame the interface takes: counted, not cut short.
                c.truncated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let r = match &self.peer {
                Some(a) => rustix::net::sendto(
                    &self.dev,
                    &self.buf[..len],
                    rustix::net::SendFlags::empty(),
                    a,
                ),
                None => rustix::io::write(&self.dev, &self.buf[..len]),
            };
            match r {
                Ok(_) => {
                    c.to_host.fetch_add(1, Ordering::Relaxed);
                    c.to_host_bytes.fetch_add(len as u64, Ordering::Relaxed);
                }
                Err(_) => {
                    c.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if sent > 0 {
            self.rx.rxsync();
        }
        sent
    }
}
