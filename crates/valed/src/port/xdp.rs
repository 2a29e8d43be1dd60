//! Interfaces attached through AF_XDP (`vale-ctl -a valeX:IF --xdp`): the policy, which
//! queues get a socket and how many frames, the attach sequence and its messages, and
//! the forwarding thread's side (queue rotation, kernel drop counters).
//!
//! A five-instruction XDP program hands every frame the interface receives on queue `q`
//! to our AF_XDP socket for `q` (an `XSKMAP`), and to the kernel's stack when there is
//! none. The program is attached through a BPF link: closing the link's descriptor
//! (detach, or valed exiting in any way) detaches it, so the interface is given back
//! as it was. Each socket has its own UMEM of 4 KiB frames (`frames_for`: half for
//! the fill ring, half for sending); the kernel picks zero-copy where the driver
//! supports it and copies otherwise.
//!
//! Kernel ABI: linux/if_xdp.h, linux/bpf.h; the mechanism is in `sys::xdp` and
//! `sys::bpf`.

use super::rings::{ring_copy, ring_peek, ring_put, room};
use super::{
    AfterDetach, Attach, BURST, Backend, DrivenPort, PortCounters, PortRings, Start, Status,
    Watcher,
};
use crate::error::{CtlError, PortError};
use crate::sys::bpf::{self, XdpHook, XskMap};
pub use crate::sys::xdp::FRAME;
use crate::sys::xdp::{NewError, Xsk};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// UMEM frames per socket: half wait in the fill ring for received frames, half are
/// for sending; each of the four rings has room for half. 16 MiB per socket for up to
/// four receive queues, 8 MiB each beyond (a NIC with many queues).
fn frames_for(queues: u32) -> usize {
    if queues <= 4 { 4096 } else { 2048 }
}
/// Receive queues served at most (one socket each).
const MAX_QUEUES: u32 = 64;

/// An XDP program steering an interface's frames to our sockets, attached through a
/// BPF link (detached when this is dropped), and the sockets.
pub struct Attached {
    pub socks: Vec<Xsk>,
    _link: OwnedFd,
    _prog: OwnedFd,
    _map: XskMap,
    /// The driver runs the program itself (not the kernel's generic hook).
    pub native: bool,
}

/// The interface's receive queues, as sysfs lists them (at least 1).
fn rx_queues(ifname: &str) -> u32 {
    std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                .count() as u32
        })
        .unwrap_or(1)
        .max(1)
}

/// What the user is told when queue `q`'s socket (of `frames` frames) cannot be made.
fn socket_error(ifname: &str, q: u32, frames: usize, e: NewError) -> String {
    match e {
        NewError::Umem(e) => format!(
            "cannot bind an AF_XDP socket to {ifname} queue {q}: registering {} MiB of \
             frames: {e} (locked memory: valed needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)",
            (frames * FRAME) >> 20
        ),
        NewError::Other(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            format!("{ifname} queue {q} already has an AF_XDP socket (another program's)")
        }
        NewError::Other(e) if e.raw_os_error() == Some(libc::EPERM) => {
            format!(
                "cannot open an AF_XDP socket on {ifname} queue {q}: {e} (valed needs CAP_NET_RAW)"
            )
        }
        NewError::Other(e) => format!("cannot bind an AF_XDP socket to {ifname} queue {q}: {e}"),
    }
}

/// Steers `ifname`'s received frames to new AF_XDP sockets, one per receive queue.
pub fn attach(ifname: &str, ifindex: u32) -> Result<Attached, PortError> {
    let refused = PortError::Refused;
    let queues = rx_queues(ifname);
    if queues > MAX_QUEUES {
        // Frames on the others would bypass the switch without a word.
        return Err(refused(format!(
            "{ifname} has {queues} receive queues; --xdp serves at most {MAX_QUEUES} \
             (fewer with `ethtool -L {ifname} combined {MAX_QUEUES}`), or attach without --xdp"
        )));
    }
    let map = XskMap::create(queues).map_err(|e| {
        refused(format!(
            "cannot create an XSKMAP: {e} (valed needs CAP_BPF and CAP_NET_ADMIN, or root)"
        ))
    })?;
    let mut log = vec![0u8; 4096];
    let prog = bpf::prog_load_xdp(&map.redirect_program(), c"Dual MIT/GPL", "vale", &mut log)
        .map_err(|e| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            refused(format!(
                "cannot load the XDP program: {e}: {}",
                String::from_utf8_lossy(&log[..end]).trim()
            ))
        })?;
    let mut socks = Vec::new();
    for q in 0..queues {
        let frames = frames_for(queues);
        let x = Xsk::new(ifindex, q, frames)
            .map_err(|e| refused(socket_error(ifname, q, frames, e)))?;
        map.insert(q, x.fd())
            .map_err(|e| refused(format!("cannot add the AF_XDP socket to the XSKMAP: {e}")))?;
        socks.push(x);
    }
    // The driver's own hook where it has one, the kernel's generic one otherwise.
    let mut link = Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    let mut native = false;
    for hook in [XdpHook::Driver, XdpHook::Generic] {
        link = bpf::link_create_xdp(prog.as_fd(), ifindex, hook);
        native = hook == XdpHook::Driver;
        // A driver may refuse its own hook for its configuration (MTU, LRO: EINVAL,
        // ERANGE, ...): the generic hook still works. Busy means another program.
        match &link {
            Err(e) if !matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) => continue,
            _ => break,
        }
    }
    let link = link.map_err(|e| {
        refused(match e.raw_os_error() {
            Some(libc::EBUSY) | Some(libc::EEXIST) => {
                format!("{ifname} already has an XDP program (see `ip link show {ifname}`)")
            }
            _ => format!("cannot attach the XDP program to {ifname}: {e}"),
        })
    })?;
    Ok(Attached {
        socks,
        _link: link,
        _prog: prog,
        _map: map,
        native,
    })
}

/// The control side: the interface's name (program and sockets are made on attach).
pub struct Xdp {
    ifname: String,
    /// The interface's index when it was attached: one deleted and made again under
    /// the same name is another interface, which the port's socket is not on.
    ifindex: Option<u32>,
}

impl Xdp {
    pub fn create(ifname: &str) -> Result<Xdp, CtlError> {
        Ok(Xdp {
            ifname: ifname.to_string(),
            ifindex: None,
        })
    }
}

impl Backend for Xdp {
    fn kind(&self) -> &'static str {
        "nic-xdp"
    }

    /// No virtio-net header: the switch segments TAP super-frames for it. Not direct:
    /// each frame is copied into a UMEM frame from the RX ring.
    fn attach(&self) -> Attach {
        Attach {
            hdr_len: 0,
            direct: false,
        }
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let ifname = &self.ifname;
        let i = crate::sys::if_index(ifname).ok_or_else(|| PortError::Gone(ifname.clone()))?;
        self.ifindex = Some(i);
        let x = attach(ifname, i)?;
        // Every queue's socket wakes the thread.
        for s in &x.socks {
            cx.watcher.add(s.fd())?;
        }
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
        Ok(Box::new(XdpIo {
            x,
            rings: cx.rings,
            counters: cx.counters,
            watcher: cx.watcher,
            max_len: max_len(ifname).unwrap_or(usize::MAX),
            name: ifname.clone(),
            polls: 0,
            stats_at: Instant::now(),
            drops_at: Instant::now(),
        }))
    }

    fn stop(&mut self) -> AfterDetach {
        AfterDetach::Forget
    }

    fn describe(&self) -> String {
        format!("XDP and AF_XDP on {}", self.ifname)
    }

    fn status(&self) -> Status {
        Status {
            gone: super::afpacket::gone(&self.ifname, self.ifindex),
            waiting: false,
        }
    }
}

/// The forwarding thread's side: the program and the sockets (dropping them gives the
/// interface back).
struct XdpIo {
    x: Attached,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    name: String,
    /// Passes over the sockets; when the once-a-second look (drop counters and MTU)
    /// was last made, and when the drop counters were last read (`arm` reads them too).
    polls: u32,
    stats_at: Instant,
    drops_at: Instant,
    /// The longest frame the interface sends ([`max_len`]), read again once a second.
    max_len: usize,
}

/// The longest frame `ifname` takes: its MTU, the Ethernet header and one VLAN tag's
/// headroom, as the kernel allows a frame it forwards (`is_skb_forwardable`; a veth
/// drops longer ones, counted only in its own `tx_dropped`) and an AF_PACKET socket an
/// 802.1Q-tagged one.
fn max_len(ifname: &str) -> Option<usize> {
    let mtu: usize = std::fs::read_to_string(format!("/sys/class/net/{ifname}/mtu"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(mtu + 14 + 4)
}

impl XdpIo {
    /// `kernel_drops` from the sockets' counts (`XDP_STATISTICS`: totals since each
    /// socket was made): a system call per socket.
    fn read_drops(&mut self) {
        self.drops_at = Instant::now();
        let lost: u64 = self.x.socks.iter().map(|s| s.statistics().lost()).sum();
        self.counters.kernel_drops.store(lost, Ordering::Relaxed);
    }
}

impl DrivenPort for XdpIo {
    /// Frames from the sockets' receive rings into the TX ring, each as one slot or a
    /// few (a received frame is at most a UMEM frame less the kernel's 256 bytes of
    /// headroom). The first socket served turns each pass, so a busy queue cannot
    /// starve the others (a zero-copy NIC drops what waits, uncounted).
    fn pull(&mut self) -> usize {
        super::fd_io::fresh_tx(&self.rings);
        let need = room(&self.rings.tx, FRAME);
        let (tx, c) = (&self.rings.tx, &self.counters);
        let mut got = 0;
        let nq = self.x.socks.len();
        self.polls = self.polls.wrapping_add(1);
        let first = self.polls as usize % nq.max(1);
        for i in 0..nq {
            let s = &mut self.x.socks[(first + i) % nq];
            let (n, bad) = s.recv(BURST - got, |f| {
                if tx.space() < need {
                    return false;
                }
                ring_put(tx, f);
                c.count_in(f.len());
                true
            });
            PortCounters::lost(&c.read_errors, bad);
            got += n;
        }
        // The kernel's drop counters, about once a second (a system call per socket;
        // the clock is read only on idle passes and every 1024th), and before the
        // thread sleeps (`arm`).
        if (got == 0 || self.polls % 1024 == 0) && self.stats_at.elapsed() >= Duration::from_secs(1)
        {
            self.stats_at = Instant::now();
            self.read_drops();
            // The MTU (a file in sysfs) likewise.
            if let Some(m) = max_len(&self.name) {
                self.max_len = m;
            }
        }
        if got > 0 {
            self.rings.tx.txsync();
        }
        got
    }

    /// Every packet the switch delivered (up to a burst) copied into a UMEM frame of
    /// the first socket and sent; a packet that does not fit a frame is `truncated`,
    /// one longer than the interface's MTU allows ([`max_len`]: a full-size frame that
    /// a trunk port tagged fits, one tagged twice does not) `too_big`, one with no
    /// free frame (the interface is slower than the switch) a `write_errors`.
    fn push(&mut self) -> usize {
        let Some(sock) = self.x.socks.first_mut() else {
            return 0;
        };
        let (rx, c) = (&self.rings.rx, &self.counters);
        rx.rxsync();
        let mut sent = 0;
        while sent < BURST && rx.space() > 0 {
            let (used, len) = ring_peek(rx);
            let fits = len <= FRAME && len <= self.max_len;
            let ok = fits && sock.send(len, |dst| ring_copy(rx, used, dst));
            rx.advance(used);
            sent += 1;
            if ok {
                c.count_out(len);
            } else if len > FRAME {
                PortCounters::lost(&c.truncated, 1);
            } else if len > self.max_len {
                PortCounters::lost(&c.too_big, 1);
            } else {
                PortCounters::lost(&c.write_errors, 1);
            }
        }
        sock.flush();
        if sock.tx_dropped > 0 {
            // Counted as sent above; the interface dropped them.
            let n = std::mem::take(&mut sock.tx_dropped);
            c.to_host.fetch_sub(n, Ordering::Relaxed);
            PortCounters::lost(&c.write_errors, n);
        }
        if sent > 0 {
            rx.rxsync();
        }
        sent
    }

    /// The thread is going to sleep: the kernel's drop counts first, so an idle port's
    /// `kernel_drops` is up to date (at most every 100 ms: a lane that goes idle
    /// between every few frames must not pay a system call per socket each time;
    /// the lane wakes within a second, and reads them then).
    fn arm(&mut self) -> bool {
        if self.drops_at.elapsed() >= Duration::from_millis(100) {
            self.read_drops();
        }
        false
    }

    /// A socket in error (the interface went down or away): its pending error read,
    /// which clears it, and counted; one that cannot say leaves the epoll set.
    fn fault(&mut self) {
        for s in &self.x.socks {
            match rustix::net::sockopt::socket_error(s.fd()) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    PortCounters::lost(&self.counters.read_errors, 1);
                    tracing::warn!(interface = %self.name, "host port: {e}");
                }
                Err(_) => self.watcher.remove(s.fd()),
            }
        }
    }
}

/// Whether this kernel and this process can do what `-a IF --xdp` needs: an AF_XDP
/// socket, an XSKMAP and an XDP program loaded (attached nowhere). Tests ask this
/// instead of guessing from an error message; `Err` says which part is missing.
pub fn probe() -> Result<(), String> {
    rustix::net::socket_with(
        rustix::net::AddressFamily::XDP,
        rustix::net::SocketType::RAW,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("no AF_XDP socket: {e} (a kernel without CONFIG_XDP_SOCKETS)"))?;
    let map = XskMap::create(1).map_err(|e| format!("no XSKMAP: {e} (needs CAP_BPF)"))?;
    let mut log = vec![0u8; 4096];
    bpf::prog_load_xdp(
        &map.redirect_program(),
        c"Dual MIT/GPL",
        "vale_probe",
        &mut log,
    )
    .map_err(|e| format!("no XDP program: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_errors_name_the_queue_and_the_fix() {
        let os = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            socket_error("eth0", 2, 4096, NewError::Umem(os(libc::ENOBUFS))),
            "cannot bind an AF_XDP socket to eth0 queue 2: registering 16 MiB of frames: \
             No buffer space available (os error 105) (locked memory: valed needs \
             CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)"
        );
        // A UMEM error is about memory even when its errno is EBUSY.
        assert!(socket_error("eth0", 0, 2048, NewError::Umem(os(libc::EBUSY))).contains("8 MiB"));
        assert_eq!(
            socket_error("eth0", 1, 4096, NewError::Other(os(libc::EBUSY))),
            "eth0 queue 1 already has an AF_XDP socket (another program's)"
        );
        assert!(
            socket_error("eth0", 1, 4096, NewError::Other(os(libc::EPERM)))
                .ends_with("(valed needs CAP_NET_RAW)")
        );
        assert_eq!(
            socket_error("eth0", 1, 4096, NewError::Other(os(libc::EINVAL))),
            "cannot bind an AF_XDP socket to eth0 queue 1: Invalid argument (os error 22)"
        );
    }

    #[test]
    fn frames_for_many_queues_are_fewer() {
        assert_eq!(frames_for(1) * FRAME, 16 << 20);
        assert_eq!(frames_for(4), 4096);
        assert_eq!(frames_for(5), 2048);
    }
}
