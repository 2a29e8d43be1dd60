//! The data plane of a VXLAN port: datagrams in batches (`recvmmsg`) into the switch
//! port's TX ring, frames from its RX ring out in batches (`sendmmsg`), each to the
//! VTEP learned for its destination or to every remote and the group.

use super::shared::{Inbox, RxSocket};
use super::vtep::{self, Reject, Vteps};
use super::{Conf, DATAGRAM_CAP, Shown, VTEP_CAPACITY, VTEP_MAX_AGE};
use crate::port::counters::bump;
use crate::port::rings::{ring_copy, ring_peek, ring_put, room};
use crate::port::{DrivenPort, PortCounters, PortRings, Start, Watcher};
use crate::sys::udp::{
    MAX_BATCH, MAX_SEGMENTS, MAX_TRAIN, Outgoing, RecvBatch, SockAddr, gso_supported, send_batch,
    send_runs,
};
use rustix::fd::{AsFd, OwnedFd};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use vale_wire::vxlan::HEADER_LEN;

/// Largest inner frame sent.
const FRAME_CAP: usize = DATAGRAM_CAP - HEADER_LEN;

/// One datagram queued by `push`: frame `frame` of the batch to `to`, from source-port
/// socket `sock`.
#[derive(Clone, Copy)]
struct Msg {
    sock: u16,
    frame: u16,
    to: SockAddr,
}

/// A placeholder destination for unused batch entries.
static NOWHERE: SockAddr = SockAddr::V4(libc::sockaddr_in {
    sin_family: 0,
    sin_port: 0,
    sin_addr: libc::in_addr { s_addr: 0 },
    sin_zero: [0; 8],
});

/// What became of one frame's copies.
#[derive(Clone, Copy, Default)]
struct Fate {
    len: u32,
    /// Copies of it sent and refused: one per remote at most, and a config file may
    /// name more than 65535.
    ok: u32,
    failed: u32,
    too_big: bool,
    /// Which of the port's VNIs it goes in: 0 the port's own, `1 + i` the `i`th of the
    /// map.
    net: u16,
}

pub struct VxlanIo {
    conf: Arc<Conf>,
    /// The receiving socket, maybe shared with other uplinks; `rx_sock` is this port's
    /// own descriptor of it (in its lane's epoll set), `inbox` where other uplinks'
    /// threads put the datagrams they read for this one.
    rx: Arc<RxSocket>,
    rx_sock: OwnedFd,
    inbox: Arc<Inbox>,
    tx_socks: Vec<OwnedFd>,
    /// Where broadcast, multicast and unknown unicast go: every remote, and the group.
    floods: Vec<SockAddr>,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    name: String,
    /// The VXLAN header of each of the port's VNIs (as [`Fate::net`]).
    hdrs: Vec<[u8; HEADER_LEN]>,
    ing: Ingress,
    recv: RecvBatch,
    /// The frames of one `push`, `FRAME_CAP` bytes each.
    frames: Vec<u8>,
    fates: Vec<Fate>,
    msgs: Vec<Msg>,
    shown: Arc<Mutex<Shown>>,
    /// Send a flow's equal datagrams as one train (UDP GSO), while the kernel takes it.
    gso: bool,
    t0: Instant,
    /// When the learned table was last published: the second, and the millisecond
    /// (since `t0`).
    published: u64,
    published_ms: u64,
    closed: bool,
}

/// What receiving changes: the learned VTEPs, and a buffer.
struct Ingress {
    /// The VTEPs learned in each VNI (as [`Fate::net`]).
    vteps: Vec<Vteps>,
    /// A received frame with the tag of its VLAN put in.
    tagged: Vec<u8>,
    /// The table learned or moved an address since it was last published.
    changed: bool,
}

/// What became of one received datagram.
enum Got {
    /// Its frame is in the switch port's TX ring.
    Put,
    /// Malformed (the counter to count it as) or of a VNI of no
    /// mapping here (`vni`): the socket's business.
    Other(Option<u32>, fn(&PortCounters) -> &AtomicU64),
}

/// The VID of a frame's outer 802.1Q or 802.1ad tag, if it has one.
fn tagged_vid(f: &[u8]) -> Option<u16> {
    let tpid = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    if tpid != 0x8100 && tpid != 0x88a8 {
        return None;
    }
    Some(u16::from_be_bytes([*f.get(14)?, *f.get(15)?]) & 0x0fff)
}

impl Ingress {
    /// Datagram `d` from `from`: its frame into `rings`' TX ring (tagged with its VLAN
    /// if it came in a mapped VNI), its source learned behind `from`.
    fn deliver(
        &mut self,
        conf: &Conf,
        rings: &PortRings,
        c: &PortCounters,
        now: u64,
        d: &[u8],
        from: Option<IpAddr>,
    ) -> Got {
        let (net, inner) = match vtep::decap_any(d) {
            Ok((vni, f)) if vni == conf.vni => (0, f),
            Ok((vni, f)) => match conf.map.iter().position(|m| m.0 == vni) {
                Some(i) => (i + 1, f),
                None => return Got::Other(Some(vni), |c| &c.vxlan_foreign_vni),
            },
            Err(r) => {
                let which: fn(&PortCounters) -> &AtomicU64 = match r {
                    Reject::TooShort => |c| &c.vxlan_too_short,
                    Reject::NoIFlag => |c| &c.vxlan_no_i_flag,
                    Reject::Reserved => |c| &c.vxlan_reserved,
                    Reject::ForeignVni => |c| &c.vxlan_foreign_vni,
                };
                return Got::Other(None, which);
            }
        };
        // A frame of the uplink's own VNI already tagged with a VLAN that a mapped VNI
        // carries would enter that VLAN, and so that VNI's segment: dropped, counted.
        if net == 0
            && !conf.map.is_empty()
            && tagged_vid(inner).is_some_and(|v| conf.map.iter().any(|m| m.1 == v))
        {
            return Got::Other(None, |c| &c.vxlan_tagged_mapped);
        }
        if conf.learning
            && let Some(from) = from
            && from != conf.local
        {
            let mut src = [0u8; 6];
            src.copy_from_slice(&inner[6..12]);
            self.changed |= self.vteps[net].learn(src, from, now);
        }
        let inner = if net == 0 {
            inner
        } else {
            // A mapped VNI's frame enters the switch tagged with its VLAN.
            let vid = conf.map[net - 1].1;
            self.tagged.clear();
            self.tagged.extend_from_slice(&inner[..12]);
            self.tagged
                .extend_from_slice(&[0x81, 0x00, (vid >> 8) as u8, vid as u8]);
            self.tagged.extend_from_slice(&inner[12..]);
            &self.tagged
        };
        ring_put(&rings.tx, inner);
        c.count_in(inner.len());
        Got::Put
    }
}

impl VxlanIo {
    pub(super) fn new(
        conf: Arc<Conf>,
        (rx, rx_sock, inbox): (Arc<RxSocket>, OwnedFd, Arc<Inbox>),
        tx_socks: Vec<OwnedFd>,
        cx: Start<'_>,
        shown: Arc<Mutex<Shown>>,
    ) -> VxlanIo {
        let mut floods: Vec<SockAddr> = conf.remotes.iter().map(|&r| conf.dest(r)).collect();
        let mut recv = RecvBatch::new(DATAGRAM_CAP);
        // Trains on both sides where the kernel offers them; plain datagrams else. On
        // a shared socket the first uplink's choice holds for all (`RxSocket::gro`).
        let fd = rx_sock.as_fd();
        let mut chose = false;
        let gro = *rx.gro.get_or_init(|| {
            chose = true;
            conf.offloads && recv.enable_gro(fd)
        });
        if gro && !chose {
            recv.enable_gro(fd);
        }
        let gso = conf.offloads && tx_socks.first().is_some_and(|s| gso_supported(s.as_fd()));
        if let Ok(mut s) = shown.lock() {
            s.offloads = Some((gso, gro));
        }
        floods.extend(conf.group.map(|g| conf.dest(g)));
        VxlanIo {
            hdrs: std::iter::once(conf.vni)
                .chain(conf.map.iter().map(|m| m.0))
                .map(vtep::header)
                .collect(),
            ing: Ingress {
                tagged: Vec::with_capacity(FRAME_CAP + 4),
                vteps: (0..=conf.map.len())
                    .map(|_| Vteps::new(VTEP_CAPACITY, VTEP_MAX_AGE))
                    .collect(),
                changed: false,
            },
            conf,
            rx,
            rx_sock,
            inbox,
            tx_socks,
            floods,
            rings: cx.rings,
            counters: cx.counters,
            watcher: cx.watcher,
            name: cx.name.to_string(),
            recv,
            gso,
            frames: vec![0u8; FRAME_CAP * MAX_BATCH],
            fates: vec![Fate::default(); MAX_BATCH],
            msgs: Vec::with_capacity(MAX_BATCH),
            shown,
            t0: Instant::now(),
            published: u64::MAX,
            published_ms: 0,
            closed: false,
        }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_secs()
    }

    /// The learned table for `vale-ctl list` and `fdb`: once a second, and when it
    /// changed, ten times a second at most while the port is busy (a MAC that flaps
    /// between VTEPs, an overlay loop, changes it every pass, and each publication
    /// sorts every row) and before its lane sleeps (`arm`); never waiting for the
    /// control thread.
    fn publish(&mut self, now: u64) {
        if now == self.published {
            if !self.ing.changed {
                return;
            }
            let ms = self.t0.elapsed().as_millis() as u64;
            if ms < self.published_ms.saturating_add(100) {
                return;
            }
        }
        self.publish_now(now);
    }

    fn publish_now(&mut self, now: u64) {
        if let Ok(mut s) = self.shown.try_lock() {
            s.vteps = self.ing.vteps.iter().map(|t| t.rows(now)).collect();
            s.at = Some((self.t0, now));
            self.published = now;
            self.published_ms = self.t0.elapsed().as_millis() as u64;
            self.ing.changed = false;
        }
    }

    /// Sends the queued datagrams, grouped by socket, and records each copy's fate.
    /// Every step sends at least one datagram or counts one as refused, so it ends.
    fn flush(&mut self) {
        // By socket, in queue order within each (one flow keeps its order).
        let mut order: [(u16, u16); MAX_BATCH] = [(0, 0); MAX_BATCH];
        let n = self.msgs.len();
        for (i, m) in self.msgs.iter().enumerate() {
            order[i] = (m.sock, i as u16);
        }
        order[..n].sort_unstable();
        let mut i = 0;
        while i < n {
            let sock = order[i].0;
            let mut j = i;
            while j < n && order[j].0 == sock {
                j += 1;
            }
            let mut out = [Outgoing {
                to: &NOWHERE,
                hdr: &[],
                body: &[],
            }; MAX_BATCH];
            let mut k = 0;
            for &(_, mi) in &order[i..j] {
                let m = &self.msgs[mi as usize];
                let f = m.frame as usize;
                let len = self.fates[f].len as usize;
                out[k] = Outgoing {
                    to: &m.to,
                    hdr: &self.hdrs[usize::from(self.fates[f].net)],
                    body: &self.frames[f * FRAME_CAP..f * FRAME_CAP + len],
                };
                k += 1;
            }
            let fd = self.tx_socks[usize::from(sock)].as_fd();
            let mut results: [Option<bool>; MAX_BATCH] = [None; MAX_BATCH];
            let mut big = [false; MAX_BATCH];
            let runs = if self.gso {
                trains(&out[..k])
            } else {
                Runs::singles(k)
            };
            let (mut r, mut at) = (0, 0);
            while r < runs.n {
                match send_runs(fd, &out[at..k], &runs.len[r..runs.n]) {
                    Ok(sent) if sent > 0 => {
                        for &len in &runs.len[r..r + sent] {
                            let len = usize::from(len);
                            results[at..at + len].fill(Some(true));
                            if len > 1 {
                                bump(&self.counters.gso_sends, 1);
                            }
                            at += len;
                        }
                        r += sent;
                    }
                    res => {
                        let len = usize::from(runs.len[r]);
                        if len > 1 {
                            // A train refused: its datagrams one by one, each with its
                            // own fate (EMSGSIZE is `too_big` per frame, as without
                            // GSO). A kernel or route that cannot segment is not asked
                            // again.
                            if let Err(e) = &res
                                && matches!(
                                    e.raw_os_error(),
                                    Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                                )
                            {
                                self.gso = false;
                                if let Ok(mut s) = self.shown.try_lock() {
                                    s.offloads = s.offloads.map(|(_, gro)| (false, gro));
                                }
                                tracing::info!(port = %self.name, "UDP GSO refused ({e}): datagrams go one by one");
                            }
                            send_singles(
                                fd,
                                &out[at..at + len],
                                &mut results[at..],
                                &mut big[at..],
                            );
                        } else {
                            results[at] = Some(false);
                            big[at] =
                                matches!(&res, Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE));
                        }
                        at += len;
                        r += 1;
                    }
                }
            }
            for (x, &(_, mi)) in order[i..j].iter().enumerate() {
                let f = &mut self.fates[usize::from(self.msgs[mi as usize].frame)];
                if results[x] == Some(true) {
                    f.ok += 1;
                } else {
                    f.failed += 1;
                    f.too_big |= big[x];
                }
            }
            i = j;
        }
        self.msgs.clear();
    }

    fn close(&mut self) {
        self.closed = true;
        self.watcher.remove(&self.rx_sock);
    }
}

/// How a socket's queued datagrams go out: `len[..n]` consecutive datagrams per
/// `sendmmsg` entry (1: plain, more: a train the kernel segments).
struct Runs {
    len: [u8; MAX_BATCH],
    n: usize,
}

impl Runs {
    fn singles(k: usize) -> Runs {
        Runs {
            len: [1; MAX_BATCH],
            n: k.min(MAX_BATCH),
        }
    }
}

/// Groups `out` into trains for UDP GSO: consecutive datagrams to one address with one
/// VXLAN header, all as long as the first but the last (a TSO super-frame's segments
/// are), within the kernel's limits.
fn trains(out: &[Outgoing<'_>]) -> Runs {
    let mut r = Runs {
        len: [0; MAX_BATCH],
        n: 0,
    };
    let mut i = 0;
    while i < out.len() {
        let first = &out[i];
        let seg = first.hdr.len() + first.body.len();
        let (mut j, mut total) = (i + 1, seg);
        while j < out.len() && j - i < MAX_SEGMENTS {
            let m = &out[j];
            let len = m.hdr.len() + m.body.len();
            if len > seg || total + len > MAX_TRAIN || !m.to.same(first.to) || m.hdr != first.hdr {
                break;
            }
            total += len;
            j += 1;
            if len < seg {
                break; // a shorter one ends the train
            }
        }
        r.len[r.n] = (j - i) as u8;
        r.n += 1;
        i = j;
    }
    r
}

/// Sends `out` a datagram per entry, writing each one's fate into `results` (and
/// whether the underlay refused it as too large into `big`). Every step sends at least
/// one or counts one as refused, so it ends.
fn send_singles(
    fd: rustix::fd::BorrowedFd<'_>,
    out: &[Outgoing<'_>],
    results: &mut [Option<bool>],
    big: &mut [bool],
) {
    let mut at = 0;
    while at < out.len() {
        match send_batch(fd, &out[at..]) {
            Ok(0) => {
                results[at] = Some(false);
                at += 1;
            }
            Ok(sent) => {
                results[at..at + sent].fill(Some(true));
                at += sent;
            }
            Err(e) => {
                results[at] = Some(false);
                big[at] = e.raw_os_error() == Some(libc::EMSGSIZE);
                at += 1;
            }
        }
    }
}

impl DrivenPort for VxlanIo {
    fn pull(&mut self) -> usize {
        let rings = &self.rings;
        let need = room(&rings.tx, DATAGRAM_CAP);
        if rings.tx.space() < need {
            rings.tx.txsync();
        }
        let fit = (rings.tx.space() / need.max(1)) as usize;
        if self.closed || fit == 0 {
            return 0;
        }
        let now = self.now();
        let c = &*self.counters;
        let mut put = 0;
        // First what other uplinks' threads read for this one.
        let mut queued = 0;
        if !self.inbox.is_empty() {
            let (ing, conf) = (&mut self.ing, &*self.conf);
            queued = self.inbox.take(fit.min(MAX_BATCH), |from, d| {
                match ing.deliver(conf, rings, c, now, d, from) {
                    Got::Put => put += 1,
                    // The maps changed meanwhile.
                    Got::Other(_, why) => PortCounters::lost(why(c), 1),
                }
            });
        }
        let fit = fit - queued;
        // What the last read left (a train split into more datagrams than fitted)
        // goes first; a new read only once it is all taken.
        if fit > 0 && self.recv.pending() == 0 {
            let trains = self.recv.trains;
            match self.recv.recv(self.rx_sock.as_fd(), fit.min(MAX_BATCH)) {
                Ok(_) => bump(&c.gro_reads, self.recv.trains - trains),
                Err(_) => PortCounters::lost(&c.read_errors, 1),
            }
        }
        let mut got = 0;
        while got < fit {
            let Some(d) = self.recv.next() else {
                break;
            };
            got += 1;
            if d.truncated {
                PortCounters::lost(&c.truncated, 1);
                continue;
            }
            match self.ing.deliver(&self.conf, rings, c, now, d.bytes, d.from) {
                Got::Put => put += 1,
                Got::Other(vni, why) => self.rx.other(vni, d.from, d.bytes, c, why),
            }
        }
        if put > 0 {
            rings.tx.txsync();
        }
        if self.conf.learning {
            self.publish(now);
        }
        // Garbage counts as work too: a flood of it is read a batch per pass, no more.
        got + queued
    }

    fn push(&mut self) -> usize {
        self.rings.rx.rxsync();
        let now = self.now();
        let mut taken = 0;
        while taken < MAX_BATCH && self.rings.rx.space() > 0 {
            let (used, len) = ring_peek(&self.rings.rx);
            if len > FRAME_CAP {
                self.rings.rx.advance(used);
                PortCounters::lost(&self.counters.truncated, 1);
                continue;
            }
            let f = taken;
            let buf = &mut self.frames[f * FRAME_CAP..f * FRAME_CAP + len];
            ring_copy(&self.rings.rx, used, buf);
            self.rings.rx.advance(used);
            taken += 1;
            // A frame of a mapped VLAN leaves untagged in that VLAN's VNI.
            let mut net = 0u16;
            let mut len = len;
            if len >= 18 && buf[12..14] == [0x81, 0x00] {
                let vid = u16::from_be_bytes([buf[14], buf[15]]) & 0x0fff;
                if let Some(i) = self.conf.map.iter().position(|m| m.1 == vid) {
                    buf.copy_within(16..len, 12);
                    len -= 4;
                    net = i as u16 + 1;
                }
            }
            let buf = &self.frames[f * FRAME_CAP..f * FRAME_CAP + len];
            self.fates[f] = Fate {
                len: len as u32,
                net,
                ..Fate::default()
            };
            if len < 14 {
                // The switch never delivers runts; counted all the same.
                self.fates[f].failed = 1;
                continue;
            }
            let sock = (vtep::flow_hash(buf) % self.tx_socks.len() as u32) as u16;
            let mut dst = [0u8; 6];
            dst.copy_from_slice(&buf[..6]);
            let known = if self.conf.learning && dst[0] & 1 == 0 {
                self.ing.vteps[usize::from(net)].lookup(&dst, now)
            } else {
                None
            };
            let copies = if known.is_some() {
                1
            } else {
                self.floods.len()
            };
            for d in 0..copies {
                let to = match known {
                    Some(ip) => self.conf.dest(ip),
                    None => self.floods[d],
                };
                if self.msgs.len() == MAX_BATCH {
                    // A frame's copies may span two sends; its buffer stays until both.
                    self.flush();
                }
                self.msgs.push(Msg {
                    sock,
                    frame: f as u16,
                    to,
                });
            }
        }
        if !self.msgs.is_empty() {
            self.flush();
        }
        let c = &*self.counters;
        for fate in &self.fates[..taken] {
            if fate.ok > 0 {
                c.count_out(fate.len as usize);
                bump(&c.vxlan_datagrams, u64::from(fate.ok));
                if fate.failed > 0 {
                    PortCounters::lost(&c.replica_drops, u64::from(fate.failed));
                }
            } else if fate.too_big {
                PortCounters::lost(&c.too_big, 1);
            } else if fate.failed > 0 {
                PortCounters::lost(&c.write_errors, 1);
            } else {
                // Nowhere to send it (cannot happen: a port has remotes or a group).
                PortCounters::lost(&c.no_peer, 1);
            }
        }
        if taken > 0 {
            self.rings.rx.rxsync();
        }
        taken
    }

    /// Datagrams queued by other uplinks' threads, or of a train not yet taken (the TX
    /// ring was full), are work waiting; not once the socket is closed (`pull` takes
    /// nothing then, and the lane would never sleep).
    fn arm(&mut self) -> bool {
        if self.ing.changed {
            let now = self.now();
            self.publish_now(now);
        }
        !self.closed && (!self.inbox.is_empty() || self.recv.pending() > 0)
    }

    fn fault(&mut self) {
        if !self.closed
            && crate::port::fd_io::read_fault(&self.rx_sock, &self.counters, &self.name)
                == crate::port::fd_io::Fault::Gone
        {
            self.close();
        }
    }
}

impl Drop for VxlanIo {
    /// Its descriptor leaves the lane's epoll set first: the socket stays open for the
    /// other uplinks on it, and epoll forgets a descriptor only with its file.
    fn drop(&mut self) {
        if !self.closed {
            self.watcher.remove(&self.rx_sock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    fn to(last: u8) -> SockAddr {
        SockAddr::new(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, last)),
            4789,
        ))
    }

    fn runs(out: &[Outgoing<'_>]) -> Vec<u8> {
        let r = trains(out);
        r.len[..r.n].to_vec()
    }

    #[test]
    fn trains_are_equal_datagrams_to_one_vtep_with_one_header() {
        let (a, b) = (to(2), to(3));
        let (h1, h2) = ([1u8; 8], [2u8; 8]);
        let big = vec![0u8; 1400];
        let short = vec![0u8; 600];
        let m = |to, hdr, body| Outgoing { to, hdr, body };
        // Three of one size and a shorter one: one train; the next starts over.
        let mut out = vec![m(&a, &h1[..], &big[..]); 3];
        out.push(m(&a, &h1, &short));
        out.push(m(&a, &h1, &big));
        assert_eq!(runs(&out), [4, 1]);
        // Another VTEP, another VNI's header, a longer datagram: each ends a train.
        let out = [
            m(&a, &h1, &big),
            m(&a, &h1, &big),
            m(&b, &h1, &big),
            m(&b, &h2, &big),
            m(&b, &h2, &short),
            m(&b, &h2, &big),
        ];
        assert_eq!(runs(&out), [2, 1, 2, 1]);
        // At most MAX_SEGMENTS datagrams, and MAX_TRAIN bytes.
        let small = [0u8; 52];
        let out = vec![m(&a, &h1[..], &small[..]); MAX_BATCH];
        assert_eq!(runs(&out), [64]);
        let per = MAX_TRAIN / (8 + 1400);
        let out = vec![m(&a, &h1[..], &big[..]); MAX_BATCH];
        let r = runs(&out);
        assert_eq!(r[0] as usize, per, "{r:?}");
        assert_eq!(r.iter().map(|&x| x as usize).sum::<usize>(), MAX_BATCH);
        assert!(r.iter().all(|&x| x as usize * 1408 <= MAX_TRAIN));
        assert_eq!(runs(&[]), [] as [u8; 0]);
    }
}
