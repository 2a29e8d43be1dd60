//! One open of `/dev/netmap`, as the library keeps it: the connection to valed, and once
//! registered the port's region, the rings this descriptor bound, its own `netmap_if`,
//! and netmap's sync rules (prologue checks, tail restored, RX timestamps). No `unsafe`:
//! the entry points in `ffi` turn pointers into these types and back.

use crate::abi::*;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use vale::proto::{self, ErrorKind, GeometryRequest, Request, Response};
use vale_abi::layout::{NS_BUF_CHANGED, NS_MOREFRAG, NetmapSlot};
use vale_abi::ring::dist;
use vale_abi::{AppRing, Dir, PipeEnd, PortGeometry, Region, RingView};

/// What a REGISTER asks for, from either API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterReq {
    pub name: String,
    pub mode: u32,
    pub ringid: u16,
    pub flags: u64,
    pub geometry: GeometryRequest,
    /// The mapping the program wants this descriptor in (`nr_mem_id`, 0: any).
    pub mem_id: u16,
}

/// What a REGISTER answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterReply {
    pub memsize: u64,
    pub geometry: PortGeometry,
    pub mem_id: u16,
    /// Extra buffers obtained (`nr_extra_bufs` out), listed from `ni_bufs_head`.
    pub extra_bufs: u32,
    /// Where this descriptor's `netmap_if` is in the mapping (`nr_offset`).
    pub offset: u64,
}

/// The start of a mapping: the `netmap_if`s of the descriptors that share it (each in
/// its own slot), in a memfd, before the port's region. Descriptors share one when the
/// program asks for an existing mapping's `nr_mem_id` and it maps the same region (as
/// netmap's pipes and `@N` do); otherwise each has its own, with its own mem id.
pub struct Prefix {
    pub fd: Hidden,
    /// Bytes of the prefix (the region starts here in the mapping).
    pub len: usize,
    slot: usize,
    used: Mutex<Vec<bool>>,
    pub mem_id: u16,
    /// The region's file (device, inode): sharing is only for the same memory.
    region: (u64, u64),
}

/// `netmap_if`s a mapping has room for: the first descriptor's and this many more.
const SHARERS: usize = 8;

/// Bytes before the region in a new mapping of a port of `tx` and `rx` rings (what
/// REGISTER's `nr_memsize` adds to the region).
pub fn prefix_len(tx: u16, rx: u16) -> usize {
    page_up(netmap_if_bytes(tx, rx).max(netmap_if_bytes(1, 1))) * (1 + SHARERS)
}

/// Live prefixes, for REGISTERs that ask for an existing mapping.
static PREFIXES: Mutex<Vec<std::sync::Weak<Prefix>>> = Mutex::new(Vec::new());

/// The lowest descriptor number the library keeps for itself (netmap-abi §5.2).
const HIDDEN_FDS_FROM: i32 = 512;

/// The descriptors the library holds for itself, by number, so that a program's
/// `close_range` or `closefrom` passes over them: each is closed by its owner, when
/// what it serves goes away (a closed number would otherwise be closed again later,
/// whatever the program had opened under it by then).
static KEPT: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn kept() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` with the library's descriptors in `first..=last`, in order, none made or
/// closed meanwhile (a program's `close_range` issued inside `f` cannot close one that
/// another thread makes at that moment).
pub fn while_kept<R>(first: u32, last: u32, f: impl FnOnce(&[i32]) -> R) -> R {
    let (first, last) = (
        first.min(i32::MAX as u32) as i32,
        last.min(i32::MAX as u32) as i32,
    );
    let k = kept();
    let list: Vec<i32> = k.range(first..=last).copied().collect();
    f(&list)
}

/// Whether this process forked from one that had netmap descriptors open: a lock that
/// another thread of the parent held at the fork stays held here for ever, so the
/// locks a child may meet are tried, not waited for.
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `m` locked; in a forked child, only if it is free.
fn lock_here<T>(m: &Mutex<T>) -> Option<std::sync::MutexGuard<'_, T>> {
    if FORKED.load(Ordering::Relaxed) {
        match m.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    } else {
        Some(m.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A descriptor's number, in [`KEPT`] while this lives (for an owner that closes the
/// descriptor itself, before dropping this).
pub struct Kept(i32);

impl Drop for Kept {
    fn drop(&mut self) {
        kept().remove(&self.0);
    }
}

/// A descriptor of the library's own, its number in [`KEPT`] from before it is made
/// until after it is closed.
pub struct Hidden {
    fd: Option<OwnedFd>,
    n: i32,
}

impl Hidden {
    /// `fd`, made elsewhere, kept from now on.
    pub fn new(fd: OwnedFd) -> Hidden {
        let n = rustix::fd::AsRawFd::as_raw_fd(&fd);
        kept().insert(n);
        Hidden { fd: Some(fd), n }
    }

    /// For an owner that needs the descriptor itself: it drops the [`Kept`] after it.
    pub fn into_parts(mut self) -> (OwnedFd, Kept) {
        let fd = self
            .fd
            .take()
            .expect("a Hidden holds its descriptor until it drops");
        let n = self.n;
        std::mem::forget(self); // its descriptor taken: nothing left to close
        (fd, Kept(n))
    }

    fn fd(&self) -> &OwnedFd {
        self.fd
            .as_ref()
            .expect("a Hidden holds its descriptor until it drops")
    }
}

impl Drop for Hidden {
    fn drop(&mut self) {
        let mut k = kept();
        drop(self.fd.take());
        k.remove(&self.n);
    }
}

impl AsFd for Hidden {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.fd().as_fd()
    }
}

impl rustix::fd::AsRawFd for Hidden {
    fn as_raw_fd(&self) -> rustix::fd::RawFd {
        self.n
    }
}

/// A close-on-exec duplicate of `fd` at or above [`HIDDEN_FDS_FROM`], so that the
/// library's own descriptors never take the low numbers a program expects to get (or
/// has closed on purpose: with `2>&-`, a memfd landing on fd 2 would have every write
/// to stderr go over a `netmap_if`).
pub fn high_dup(fd: rustix::fd::BorrowedFd<'_>) -> NmResult<Hidden> {
    let mut k = kept();
    let new = rustix::io::fcntl_dupfd_cloexec(fd, HIDDEN_FDS_FROM).map_err(|_| Errno::MFILE)?;
    let n = rustix::fd::AsRawFd::as_raw_fd(&new);
    k.insert(n);
    Ok(Hidden { fd: Some(new), n })
}

/// `fd` moved to [`high_dup`]'s range, its low number given back.
fn hide(fd: OwnedFd) -> NmResult<Hidden> {
    high_dup(fd.as_fd())
}

/// What a forked child must not inherit locked: the library's tables, held by the
/// forking thread across the fork (`pthread_atfork`), in the order every other path
/// takes them.
pub struct ForkHold {
    _prefixes: std::sync::MutexGuard<'static, Vec<std::sync::Weak<Prefix>>>,
    kept: std::sync::MutexGuard<'static, BTreeSet<i32>>,
}

pub fn fork_hold() -> ForkHold {
    ForkHold {
        _prefixes: PREFIXES.lock().unwrap_or_else(|e| e.into_inner()),
        kept: kept(),
    }
}

impl ForkHold {
    /// In the child: the kept numbers are those of what this process can still close,
    /// the descriptors of `devices` (the table's) and of this thread's `wake`; another
    /// thread's (gone here, with whatever it held) are the program's to close.
    pub fn in_child<'a>(&mut self, devices: impl Iterator<Item = &'a Device>, wake: Option<i32>) {
        FORKED.store(true, Ordering::Relaxed);
        self.kept.clear();
        for d in devices {
            self.kept.extend(d.kept_fds());
        }
        self.kept.extend(wake);
    }
}

fn file_id(fd: rustix::fd::BorrowedFd<'_>) -> (u64, u64) {
    rustix::fs::fstat(fd).map_or((0, 0), |s| (s.st_dev, s.st_ino))
}

impl Prefix {
    /// A new mapping start for a region, slots of `slot` bytes.
    fn new(region: &Region, slot: usize) -> NmResult<std::sync::Arc<Prefix>> {
        let len = slot * (1 + SHARERS);
        let fd = rustix::fs::memfd_create(c"vale-netmap-if", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|_| Errno::NOMEM)?;
        let fd = hide(fd)?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|_| Errno::NOMEM)?;
        let mut all = PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        // Unique among the live ones: libnetmap takes a mapping it already has for a
        // descriptor whose mem id matches, so a reused id would have it read another
        // port's memory.
        let live: Vec<u16> = all
            .iter()
            .filter_map(|w| w.upgrade())
            .map(|p| p.mem_id)
            .collect();
        let p = std::sync::Arc::new(Prefix {
            fd,
            len,
            slot,
            used: Mutex::new(vec![false; 1 + SHARERS]),
            mem_id: next_mem_id(|id| live.contains(&id)).ok_or(Errno::NOMEM)?,
            region: file_id(region.fd()),
        });
        all.push(std::sync::Arc::downgrade(&p));
        Ok(p)
    }

    /// The live mapping with `mem_id`, if it maps `region`.
    fn find(mem_id: u16, region: &Region) -> Option<std::sync::Arc<Prefix>> {
        let id = file_id(region.fd());
        let all = PREFIXES.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter_map(std::sync::Weak::upgrade)
            .find(|p| p.mem_id == mem_id && p.region == id)
    }

    /// A free slot's byte offset, taken.
    fn take(&self, bytes: usize) -> Option<usize> {
        if bytes > self.slot {
            return None;
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let i = used.iter().position(|u| !u)?;
        used[i] = true;
        Some(i * self.slot)
    }

    fn give_back(&self, off: usize) {
        // In a forked child, left taken if the parent was taking one at the fork.
        if let Some(mut used) = lock_here(&self.used) {
            if let Some(u) = used.get_mut(off / self.slot) {
                *u = false;
            }
        }
    }
}

/// A netmap error: the errno the ioctl fails with.
pub type NmResult<T> = Result<T, Errno>;

/// The errno netmap programs expect for what valed said.
pub fn errno_of(kind: ErrorKind) -> Errno {
    match kind {
        ErrorKind::NotFound => Errno::NXIO,
        ErrorKind::Exists => Errno::EXIST,
        ErrorKind::Busy => Errno::BUSY,
        ErrorKind::Permission => Errno::PERM,
        ErrorKind::Limit => Errno::NOMEM,
        ErrorKind::BadName | ErrorKind::BadRequest => Errno::INVAL,
        ErrorKind::Version | ErrorKind::Internal => Errno::IO,
    }
}

/// One ring this descriptor bound, and what the "kernel" last told the application
/// about it (netmap's `rhead`/`rtail`), against which its head and cur are checked.
struct Bound {
    app: AppRing,
    /// Offset of the ring header in the region (for `ts`).
    at: usize,
    seen: Mutex<Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    head: u32,
    tail: u32,
}

/// A registered descriptor.
pub struct Port {
    pub name: String,
    pub region: Region,
    /// The start of its mapping, with this descriptor's `netmap_if` at `nifp_off`.
    pub prefix: std::sync::Arc<Prefix>,
    pub nifp_off: usize,
    pub memsize: usize,
    pub mem_id: u16,
    tx: Vec<Bound>,
    rx: Vec<Bound>,
    kick: Hidden,
    pub notify: Hidden,
    /// Poll does no implicit txsync (`NR_NO_TX_POLL`).
    pub no_tx_poll: bool,
    /// For a pipe endpoint that sends: the move of its frames to the peer.
    pipe: Option<PipeKernel>,
    /// The region's descriptor number, kept from `close_range` until the region (the
    /// field before) has closed it.
    _region_kept: Kept,
}

/// The sending half of a netmap pipe, run in the sender's txsync as netmap runs it in
/// the kernel: slots of this endpoint's TX ring trade buffers with free slots of the
/// peer's RX ring (zero copy), then both rings' positions are published. The peer is
/// another client: its head is read once and checked, a buffer index it left that is
/// not in the pool is never handed to this side.
struct PipeKernel {
    tx: RingView,
    peer_rx: RingView,
    bufs: vale_abi::BufPool,
    /// (tx hwcur, peer rx hwtail): the kernel's positions, kept here, not trusted from
    /// shared memory after the start.
    at: Mutex<(u32, u32)>,
}

impl PipeKernel {
    fn new(tx: RingView, peer_rx: RingView, bufs: vale_abi::BufPool) -> PipeKernel {
        let (nt, nr) = (tx.num_slots(), peer_rx.num_slots());
        let hwcur = tx.csb().app_read_acquire().0 % nt;
        let hwtail = peer_rx.csb().app_read_acquire().1 % nr;
        PipeKernel {
            tx,
            peer_rx,
            bufs,
            at: Mutex::new((hwcur, hwtail)),
        }
    }

    /// Moves what the sender published; returns whether to wake the peer.
    fn forward(&self) -> bool {
        let mut at = self.at.lock().unwrap_or_else(|p| p.into_inner());
        let mut wake = false;
        // Twice at most: if the peer was full, the kick is armed and its head read once
        // more, so slots it freed in between are not left waiting for a wake-up.
        for _ in 0..2 {
            let (moved, full) = self.forward_once(&mut at);
            wake |= moved;
            if !full {
                break;
            }
        }
        wake
    }

    /// One pass; returns (whether to wake the peer, whether it was full).
    fn forward_once(&self, at: &mut (u32, u32)) -> (bool, bool) {
        let (nt, nr) = (self.tx.num_slots(), self.peer_rx.num_slots());
        let (t_head, _) = self.tx.csb().sw_read_acquire();
        let (r_head, _) = self.peer_rx.csb().sw_read_acquire();
        if t_head >= nt {
            return (false, false); // the prologue reinitialised this ring
        }
        let (mut hwcur, mut hwtail) = *at;
        let pending = dist(hwcur, t_head, nt);
        // The peer may fill up to the slot before its head (a full ring keeps one).
        let room = if r_head < nr {
            dist(hwtail, (r_head + nr - 1) % nr, nr)
        } else {
            0
        };
        let k = pending.min(room);
        for _ in 0..k {
            let ts = self.tx.read_slot(hwcur);
            let rs = self.peer_rx.read_slot(hwtail);
            let flags = NS_BUF_CHANGED | (ts.flags & NS_MOREFRAG);
            if self.bufs.is_valid(rs.buf_idx) && self.bufs.is_valid(ts.buf_idx) {
                self.peer_rx.write_slot(
                    hwtail,
                    NetmapSlot {
                        buf_idx: ts.buf_idx,
                        len: ts.len,
                        flags,
                        ptr: 0,
                    },
                );
                self.tx.write_slot(
                    hwcur,
                    NetmapSlot {
                        buf_idx: rs.buf_idx,
                        len: ts.len,
                        flags: NS_BUF_CHANGED,
                        ptr: 0,
                    },
                );
            } else {
                // Either side left a buffer that is not one: the frame is dropped, each
                // side keeps its own buffer, the receiver sees an empty slot.
                self.peer_rx
                    .write_len_flags(hwtail, 0, ts.flags & NS_MOREFRAG);
            }
            hwcur = (hwcur + 1) % nt;
            hwtail = (hwtail + 1) % nr;
        }
        *at = (hwcur, hwtail);
        let rx = self.peer_rx.csb();
        rx.sw_publish_release(r_head.min(nr - 1), hwtail);
        self.tx
            .csb()
            .sw_publish_release(hwcur, (hwcur + nt - 1) % nt);
        let full = k < pending;
        if full {
            // The peer is full: ask it to wake this side when it frees slots.
            rx.sw_arm_kick();
        } else {
            rx.sw_disarm_kick();
        }
        (
            k > 0 && rx.sw_kick_needed(),
            full && rx.sw_read_acquire().0 != r_head,
        )
    }
}

/// One open of `/dev/netmap`.
pub struct Device {
    /// A twin of the descriptor the application holds: the connection to valed, which
    /// holds the port for as long as any twin is open.
    pub conn: Hidden,
    port: OnceLock<Port>,
    registering: Mutex<()>,
    /// One request and its answer at a time on `conn`: threads sharing the descriptor
    /// would otherwise read each other's answers.
    calling: Mutex<()>,
    /// The threads in a poll on this descriptor, from before they last look at the
    /// rings until they wake, by their own wake-up eventfd: they all sleep on the one
    /// notify eventfd, and whichever drains it passes the wake-up on to the others.
    waiters: Mutex<Vec<Arc<Hidden>>>,
}

/// Mem ids: unique per mapping handed out (libnetmap shares a mapping between
/// descriptors with the same id), never 0 (any) or 1 (netmap's global allocator), nor
/// one that is `taken` (still live after the count wrapped).
fn next_mem_id(taken: impl Fn(u16) -> bool) -> Option<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(2);
    (0..0x1_0000).find_map(|_| {
        let id = (NEXT.fetch_add(1, Ordering::Relaxed) % 0x1_0000) as u16;
        (id >= 2 && !taken(id)).then_some(id)
    })
}

fn page_up(n: usize) -> usize {
    n.div_ceil(4096) * 4096
}

/// The rings a mode binds in a direction of `n` rings (netmap's `interp_ringid`).
fn bound_rings(mode: u32, ringid: u16, n: u16) -> Vec<u16> {
    match mode {
        NR_REG_ONE_NIC => vec![if ringid < n { ringid } else { 0 }],
        _ => (0..n).collect(),
    }
}

impl Device {
    pub fn new(conn: Hidden) -> Device {
        Device {
            conn,
            port: OnceLock::new(),
            registering: Mutex::new(()),
            calling: Mutex::new(()),
            waiters: Mutex::new(Vec::new()),
        }
    }

    pub fn port(&self) -> Option<&Port> {
        self.port.get()
    }

    /// A thread that may sleep on this descriptor's notify eventfd, woken by `me`.
    pub fn wait_begin(&self, me: &Arc<Hidden>) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        w.push(me.clone());
    }

    /// That thread is awake (one [`Self::wait_begin`] undone).
    pub fn wait_end(&self, me: &Arc<Hidden>) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = w.iter().position(|x| Arc::ptr_eq(x, me)) {
            w.swap_remove(i);
        }
    }

    /// The calling thread (`me`, if it has a wake-up eventfd) drained the notify
    /// eventfd: every other thread that may be about to sleep on it is woken instead.
    pub fn wake_others(&self, me: Option<&Arc<Hidden>>) {
        let w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for x in w.iter().filter(|x| me.is_none_or(|me| !Arc::ptr_eq(x, me))) {
            let _ = rustix::io::write(&**x, &1u64.to_ne_bytes());
        }
    }

    /// One request to valed on this descriptor's connection.
    pub fn call(&self, req: &Request) -> NmResult<(Response, Vec<OwnedFd>)> {
        // In a forked child whose parent was mid-request at the fork: EIO, not a hang.
        let _one = lock_here(&self.calling).ok_or(Errno::IO)?;
        vale::sock::call(&self.conn, req).map_err(|_| Errno::IO)
    }

    /// The numbers of every descriptor this device holds for itself: its connection,
    /// its port's, its mapping's, and the wake-up eventfds of threads in its polls.
    pub fn kept_fds(&self) -> Vec<i32> {
        use rustix::fd::AsRawFd;
        let mut v = vec![self.conn.as_raw_fd()];
        if let Some(p) = self.port() {
            v.extend([
                p._region_kept.0,
                p.kick.as_raw_fd(),
                p.notify.as_raw_fd(),
                p.prefix.fd.as_raw_fd(),
            ]);
        }
        if let Ok(w) = self.waiters.try_lock() {
            v.extend(w.iter().map(|x| x.as_raw_fd()));
        }
        v
    }

    /// REGISTER: opens the port through valed and binds the rings the mode asks for.
    pub fn register(&self, req: &RegisterReq) -> NmResult<RegisterReply> {
        let _one = self.registering.lock().unwrap_or_else(|p| p.into_inner());
        if self.port.get().is_some() {
            return Err(Errno::BUSY);
        }
        let (resp, fds) = self.call(&open_request(req)?)?;
        let granted: (u32, u32);
        let pipe_end: Option<PipeEnd>;
        let g: PortGeometry = match resp {
            Response::Opened { layout_version, .. }
                if layout_version != vale_abi::layout::LAYOUT_VERSION =>
            {
                // Rings we would misread: say so once, fail as a broken device would.
                eprintln!(
                    "vale-netmap: valed maps layout {layout_version}, this library layout {}; use matching builds",
                    vale_abi::layout::LAYOUT_VERSION
                );
                let _ = self.call(&Request::Close);
                return Err(Errno::IO);
            }
            Response::Opened {
                geometry,
                extra,
                pipe,
                ..
            } => {
                granted = extra.map_or((0, 0), |[f, n]| (f, n));
                pipe_end = pipe.map(|p| PipeEnd {
                    pipe: p.index,
                    slave: p.slave,
                });
                geometry.into()
            }
            Response::Error { kind, .. } => return Err(errno_of(kind)),
            _ => return Err(Errno::IO),
        };
        // From here on a failure lets go of the port again, so that the descriptor may
        // register once more (as netmap's does after a failed REGISTER).
        self.bind(req, g, granted, pipe_end, fds).inspect_err(|_| {
            let _ = self.call(&Request::Close);
        })
    }

    /// The port valed opened, bound as `req` asks: its region from the first of `fds`
    /// (then the kick and notify eventfds), the rings, this descriptor's `netmap_if`.
    pub(crate) fn bind(
        &self,
        req: &RegisterReq,
        g: PortGeometry,
        granted: (u32, u32),
        pipe_end: Option<PipeEnd>,
        fds: Vec<OwnedFd>,
    ) -> NmResult<RegisterReply> {
        let [memfd, kick, notify]: [OwnedFd; proto::OPEN_FDS] =
            fds.try_into().map_err(|_| Errno::IO)?;
        let [memfd, kick, notify] = [hide(memfd), hide(kick), hide(notify)];
        let (memfd, kick, notify) = (memfd?, kick?, notify?);
        let (memfd, region_kept) = memfd.into_parts();
        let region = Region::from_fd(memfd, g).map_err(|_| Errno::IO)?;
        // The rings this descriptor sees, as the entries of its netmap_if: per direction
        // one entry per ring, Some(ring offset in the region) if it is bound. A pipe
        // endpoint is one ring each way, its own rings in the port's region.
        let (nt, nr) = match pipe_end {
            Some(_) => (1, 1),
            None => (g.tx_rings, g.rx_rings),
        };
        if req.mode == NR_REG_ONE_NIC && req.ringid >= nt && req.ringid >= nr {
            return Err(Errno::INVAL);
        }
        let entries = |dir: Dir, n: u16, off: u64| -> Vec<Option<usize>> {
            let ids = if req.flags & off != 0 {
                Vec::new()
            } else {
                bound_rings(req.mode, req.ringid, n)
            };
            let l = region.layout();
            (0..n)
                .map(|i| {
                    ids.contains(&i)
                        .then(|| match pipe_end {
                            Some(end) => l.pipe_ring_offset(end, dir),
                            None => l.ring_offset(dir, i),
                        })
                        .flatten()
                })
                .collect()
        };
        let tx_at = entries(Dir::Tx, nt, NR_RX_RINGS_ONLY);
        let rx_at = entries(Dir::Rx, nr, NR_TX_RINGS_ONLY);
        if !link_extra_bufs(&region, granted) {
            return Err(Errno::IO);
        }
        // The mapping: the one the program named, if it maps this region and has room,
        // else a new one (room for this port's netmap_if, or a pipe's, in every slot).
        let bytes = netmap_if_bytes(nt, nr);
        let shared = (req.mem_id != 0)
            .then(|| Prefix::find(req.mem_id, &region))
            .flatten()
            .and_then(|p| p.take(bytes).map(|off| (p, off)));
        let (prefix, nifp_off) = match shared {
            Some(s) => s,
            None => {
                let slot = prefix_len(g.tx_rings, g.rx_rings) / (1 + SHARERS);
                let p = Prefix::new(&region, slot)?;
                let off = p.take(bytes).ok_or(Errno::NOMEM)?;
                (p, off)
            }
        };
        let ni_name = format!("{}{}", req.name, monitor_suffix(req.flags));
        if let Err(e) = self.make_if(
            &region, &prefix, nifp_off, &tx_at, &rx_at, granted, &ni_name,
        ) {
            prefix.give_back(nifp_off);
            return Err(e);
        }
        let bind = |dir: Dir, at: &[Option<usize>]| -> Vec<Bound> {
            (0..at.len() as u16)
                .filter(|&i| at[i as usize].is_some())
                .filter_map(|i| {
                    let view = match pipe_end {
                        Some(end) => region.pipe_ring(end, dir)?,
                        None => region.ring(dir, i)?,
                    };
                    let app = AppRing::new(view);
                    let seen = Seen {
                        head: app.head(),
                        tail: app.tail(),
                    };
                    Some(Bound {
                        app,
                        at: at[i as usize]?,
                        seen: Mutex::new(seen),
                    })
                })
                .collect()
        };
        let (tx, rx) = (bind(Dir::Tx, &tx_at), bind(Dir::Rx, &rx_at));
        // A pipe's sender moves its frames into the peer's RX ring itself (netmap does
        // it in the sender's txsync), so a pipe endpoint is also the "kernel" of the
        // peer's RX ring.
        let pipe = match pipe_end {
            Some(end) if !tx.is_empty() => {
                let peer_rx = region.pipe_ring(end.peer(), Dir::Rx).ok_or(Errno::IO)?;
                Some(PipeKernel::new(
                    tx[0].app.view().clone(),
                    peer_rx,
                    region.bufs(),
                ))
            }
            _ => None,
        };
        let memsize = prefix.len + region.size();
        let port = Port {
            name: req.name.clone(),
            memsize,
            mem_id: prefix.mem_id,
            prefix,
            nifp_off,
            tx,
            rx,
            kick,
            notify,
            no_tx_poll: req.flags & NR_NO_TX_POLL != 0,
            pipe,
            region,
            _region_kept: region_kept,
        };
        let reply = RegisterReply {
            memsize: memsize as u64,
            geometry: g,
            mem_id: port.mem_id,
            extra_bufs: granted.1,
            offset: port.nifp_off as u64,
        };
        let _ = self.port.set(port);
        Ok(reply)
    }

    /// This descriptor's `netmap_if`, in a memfd that becomes the start of its mapping:
    /// the region's own header, with `ring_ofs[]` pointing (from offset 0 of the
    /// mapping) at the rings it bound and 0 for the others.
    #[allow(clippy::too_many_arguments)]
    fn make_if(
        &self,
        region: &Region,
        prefix: &Prefix,
        nifp_off: usize,
        tx: &[Option<usize>],
        rx: &[Option<usize>],
        extra: (u32, u32),
        name: &str,
    ) -> NmResult<()> {
        let mut nifp = vec![0u8; netmap_if_bytes(tx.len() as u16, rx.len() as u16)];
        let head = vale_abi::layout::NETMAP_IF_SIZE;
        if !region.read_raw(0, &mut nifp[..head]) {
            return Err(Errno::IO);
        }
        // ni_name: what this descriptor opened (a pipe's own name, not its port's), cut
        // to fit with its NUL as netmap's strlcpy cuts it.
        let mut ni_name = [0u8; 16];
        put_name(&mut ni_name, cut(name, 15));
        nifp[..16].copy_from_slice(&ni_name);
        nifp[NI_TX_RINGS..NI_TX_RINGS + 4].copy_from_slice(&(tx.len() as u32).to_ne_bytes());
        nifp[NI_RX_RINGS..NI_RX_RINGS + 4].copy_from_slice(&(rx.len() as u32).to_ne_bytes());
        // ni_bufs_head: this descriptor's extra buffers, or none.
        let head_idx = if extra.1 > 0 { extra.0 } else { 0 };
        nifp[NI_BUFS_HEAD..NI_BUFS_HEAD + 4].copy_from_slice(&head_idx.to_ne_bytes());
        let mut k = 0;
        let mut put = |v: i64| {
            nifp[head + 8 * k..head + 8 * (k + 1)].copy_from_slice(&v.to_ne_bytes());
            k += 1;
        };
        for ring_at in [tx, rx] {
            for at in ring_at {
                // Relative to this netmap_if; the region starts after the prefix.
                put(at.map_or(0, |at| (prefix.len + at) as i64 - nifp_off as i64));
            }
            put(0); // the host ring placeholder
        }
        let mut off = 0;
        while off < nifp.len() {
            let at = (nifp_off + off) as u64;
            off += rustix::io::pwrite(&prefix.fd, &nifp[off..], at).map_err(|_| Errno::IO)?;
        }
        Ok(())
    }

    fn registered(&self) -> NmResult<&Port> {
        self.port.get().ok_or(Errno::NXIO)
    }

    /// NIOCTXSYNC / NIOCRXSYNC. Returns false if a ring's head or cur was nonsense (the
    /// ring was then reinitialised, as netmap does).
    pub fn sync(&self, dir: Dir) -> NmResult<bool> {
        let p = self.registered()?;
        Ok(p.sync(dir))
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        self.prefix.give_back(self.nifp_off);
    }
}

impl Port {
    fn rings(&self, dir: Dir) -> &[Bound] {
        match dir {
            Dir::Tx => &self.tx,
            Dir::Rx => &self.rx,
        }
    }

    pub fn geometry(&self) -> PortGeometry {
        self.region.geometry()
    }

    /// Syncs every bound ring of `dir`: netmap's prologue (head within what was handed
    /// out, cur within head..tail, else the ring is reinitialised), then the exchange
    /// with the switch through shared memory (which also restores a `tail` the
    /// application overwrote), a kick only if the switch sleeps, and on RX the
    /// timestamp. Returns false if a ring had to be reinitialised.
    pub fn sync(&self, dir: Dir) -> bool {
        let mut ok = true;
        let mut kick = false;
        for r in self.rings(dir) {
            let mut seen = r.seen.lock().unwrap_or_else(|p| p.into_inner());
            let n = r.app.num_slots();
            let (head, cur) = (r.app.head(), r.app.cur());
            let fine = head < n
                && cur < n
                && dist(seen.head, head, n) <= dist(seen.head, seen.tail, n)
                && dist(head, cur, n) <= dist(head, seen.tail, n);
            if !fine {
                let v = r.app.view();
                v.set_head(seen.head);
                v.set_cur(seen.head);
                v.set_tail(seen.tail);
                ok = false;
                continue;
            }
            kick |= r.app.sync();
            if dir == Dir::Tx {
                if let Some(p) = &self.pipe {
                    kick |= p.forward();
                    r.app.sync(); // the tail the move freed
                }
            }
            *seen = Seen {
                head,
                tail: r.app.tail(),
            };
            if dir == Dir::Rx {
                self.stamp(r.at);
            }
        }
        if kick {
            let _ = rustix::io::write(&self.kick, &1u64.to_ne_bytes());
        }
        ok
    }

    /// `ring->ts`: the time of this rxsync (netmap stamps every rxsync by default).
    fn stamp(&self, ring_at: usize) {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let mut ts = [0u8; 16];
        ts[..8].copy_from_slice(&t.tv_sec.to_ne_bytes());
        ts[8..].copy_from_slice(&(t.tv_nsec / 1000).to_ne_bytes());
        self.region.write_raw(ring_at + TS_OFFSET, &ts);
    }

    /// Whether a bound ring of `dir` has `cur != tail` (poll's readiness rule).
    pub fn ready(&self, dir: Dir) -> bool {
        self.rings(dir).iter().any(|r| r.app.cur() != r.app.tail())
    }

    /// Asks the switch to kick when the rings of `dir` move (before sleeping), or
    /// stops asking.
    pub fn arm(&self, dir: Dir, on: bool) {
        for r in self.rings(dir) {
            if on {
                r.app.view().csb().app_arm_kick();
            } else {
                r.app.view().csb().app_disarm_kick();
            }
        }
    }

    pub fn bound(&self, dir: Dir) -> usize {
        self.rings(dir).len()
    }

    pub fn notify_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.notify.as_fd()
    }
}

/// Offsets of `ni_tx_rings` and `ni_rx_rings` in a `netmap_if`.
const NI_TX_RINGS: usize = core::mem::offset_of!(vale_abi::layout::NetmapIf, ni_tx_rings);
const NI_RX_RINGS: usize = core::mem::offset_of!(vale_abi::layout::NetmapIf, ni_rx_rings);

/// Offset of `ni_bufs_head` in a `netmap_if`.
const NI_BUFS_HEAD: usize = core::mem::offset_of!(vale_abi::layout::NetmapIf, ni_bufs_head);

/// Links extra buffers `first..first + count` into netmap's free list: each buffer's
/// first word is the next one's index, 0 ends the list.
fn link_extra_bufs(region: &Region, (first, count): (u32, u32)) -> bool {
    let l = region.layout();
    let (pool_first, pool_count) = l.extra_bufs();
    if count == 0 {
        return true;
    }
    // valed's answer is checked like any shared input: inside the region's reserve.
    if first < pool_first || first as u64 + count as u64 > pool_first as u64 + pool_count as u64 {
        return false;
    }
    let size = l.geometry.buf_size as usize;
    (0..count).all(|k| {
        let idx = first + k;
        let next = if k + 1 < count { idx + 1 } else { 0 };
        region.write_raw(l.buf_offset + idx as usize * size, &next.to_ne_bytes())
    })
}

/// Offset of `ts` in a ring header.
const TS_OFFSET: usize = core::mem::offset_of!(vale_abi::layout::NetmapRing, ts);

/// Turns a legacy `struct nmreq` (NIOCREGIF) into a REGISTER, as netmap's legacy path
/// does: mode from the low bits of `nr_flags` (DEFAULT reads the old ringid bits),
/// NO_TX_POLL from the ringid, host rings none.
pub fn from_legacy(r: &Nmreq) -> NmResult<RegisterReq> {
    if r.nr_version < NETMAP_LEGACY_MIN_API {
        return Err(Errno::INVAL);
    }
    let name = name_of(&r.nr_name).ok_or(Errno::INVAL)?.to_string();
    let mut mode = r.nr_flags & NR_REG_MASK;
    let ring = r.nr_ringid & NETMAP_RING_MASK;
    if mode == NR_REG_DEFAULT {
        mode = if r.nr_ringid & NETMAP_SW_RING != 0 {
            NR_REG_SW
        } else if r.nr_ringid & NETMAP_HW_RING != 0 {
            NR_REG_ONE_NIC
        } else {
            NR_REG_ALL_NIC
        };
    }
    // The legacy API names a pipe by mode and id; valed by name (`{N`, `}N`).
    let name = match mode {
        NR_REG_PIPE_MASTER | NR_REG_PIPE_SLAVE => {
            let side = if mode == NR_REG_PIPE_MASTER { '{' } else { '}' };
            mode = NR_REG_ALL_NIC;
            format!("{name}{side}{ring}")
        }
        _ => name,
    };
    let ring = if name.contains(['{', '}']) { 0 } else { ring };
    let mut flags = (r.nr_flags & !NR_REG_MASK) as u64;
    if r.nr_ringid & NETMAP_NO_TX_POLL != 0 {
        flags |= NR_NO_TX_POLL;
    }
    let some = |v: u32| (v != 0).then_some(v);
    let some16 = |v: u16| (v != 0).then_some(v);
    Ok(RegisterReq {
        name,
        mode,
        ringid: ring,
        flags,
        geometry: GeometryRequest {
            tx_rings: some16(r.nr_tx_rings),
            rx_rings: some16(r.nr_rx_rings),
            tx_slots: some(r.nr_tx_slots),
            rx_slots: some(r.nr_rx_slots),
            extra_bufs: some(r.nr_arg3),
        },
        mem_id: r.nr_arg2,
    })
}

/// A REGISTER body turned into our request.
/// valed's name suffix for the monitor a REGISTER's flags ask for (`/t`, `/r`, `/rt`).
fn monitor_suffix(flags: u64) -> &'static str {
    match (
        flags & (NR_MONITOR_TX | NR_ZCOPY_MON) != 0,
        flags & (NR_MONITOR_RX | NR_ZCOPY_MON) != 0,
    ) {
        (true, true) => "/rt",
        (true, false) => "/t",
        (false, true) => "/r",
        (false, false) => "",
    }
}

/// The request to valed that a REGISTER makes: VALE ports only (no NIC rings: attach
/// the interface to a switch with `vale-ctl -a`), no host rings, monitors by suffix.
pub fn open_request(req: &RegisterReq) -> NmResult<Request> {
    if !req.name.starts_with("vale") {
        return Err(Errno::NXIO);
    }
    match req.mode {
        NR_REG_ALL_NIC | NR_REG_ONE_NIC | NR_REG_NULL => {}
        _ => return Err(Errno::INVAL),
    }
    Ok(Request::Open {
        version: proto::VERSION,
        name: format!("{}{}", req.name, monitor_suffix(req.flags)),
        geometry: req.geometry,
        exclusive: req.flags & NR_EXCLUSIVE != 0,
    })
}

pub fn from_register(name: &str, b: &NmreqRegister) -> RegisterReq {
    let some = |v: u32| (v != 0).then_some(v);
    let some16 = |v: u16| (v != 0).then_some(v);
    RegisterReq {
        name: name.to_string(),
        mode: b.nr_mode,
        ringid: b.nr_ringid & NETMAP_RING_MASK,
        flags: b.nr_flags,
        geometry: GeometryRequest {
            tx_rings: some16(b.nr_tx_rings),
            rx_rings: some16(b.nr_rx_rings),
            tx_slots: some(b.nr_tx_slots),
            rx_slots: some(b.nr_rx_slots),
            extra_bufs: some(b.nr_extra_bufs),
        },
        mem_id: b.nr_mem_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_nic_binds_its_ring_or_ring_zero_where_there_are_fewer() {
        assert_eq!(bound_rings(NR_REG_ALL_NIC, 0, 3), vec![0, 1, 2]);
        assert_eq!(bound_rings(NR_REG_ONE_NIC, 1, 3), vec![1]);
        assert_eq!(bound_rings(NR_REG_ONE_NIC, 2, 1), vec![0]);
        assert_eq!(bound_rings(NR_REG_NULL, 0, 2), vec![0, 1]);
    }

    #[test]
    fn legacy_requests_read_as_netmap_reads_them() {
        let mut r = Nmreq {
            nr_version: 14,
            nr_flags: 0,
            nr_ringid: NETMAP_HW_RING | 3 | NETMAP_NO_TX_POLL,
            ..Default::default()
        };
        put_name(&mut r.nr_name, "vale0:a");
        let q = from_legacy(&r).unwrap();
        assert_eq!((q.mode, q.ringid), (NR_REG_ONE_NIC, 3));
        assert!(q.flags & NR_NO_TX_POLL != 0);
        assert_eq!(q.name, "vale0:a");
        r.nr_ringid = NETMAP_SW_RING;
        assert_eq!(from_legacy(&r).unwrap().mode, NR_REG_SW);
        r.nr_ringid = 0;
        r.nr_flags = NR_REG_ALL_NIC | NR_TX_RINGS_ONLY as u32;
        let q = from_legacy(&r).unwrap();
        assert_eq!(q.mode, NR_REG_ALL_NIC);
        assert_eq!(q.flags, NR_TX_RINGS_ONLY);
        r.nr_flags = NR_REG_PIPE_MASTER;
        r.nr_ringid = 3;
        let q = from_legacy(&r).unwrap();
        assert_eq!(
            (q.name.as_str(), q.mode, q.ringid),
            ("vale0:a{3", NR_REG_ALL_NIC, 0)
        );
        r.nr_flags = NR_REG_PIPE_SLAVE;
        assert_eq!(from_legacy(&r).unwrap().name, "vale0:a}3");
        r.nr_version = 13;
        assert_eq!(from_legacy(&r), Err(Errno::INVAL));
    }

    #[test]
    fn mem_ids_are_never_zero_or_one_nor_a_live_one_after_the_wrap() {
        // Ids 2..=9 stay live while the count goes round more than once.
        let live = |id: u16| (2..10).contains(&id);
        for _ in 0..140_000 {
            let id = next_mem_id(live).unwrap();
            assert!(id >= 10, "{id}");
        }
        assert_eq!(
            next_mem_id(|_| true),
            None,
            "every id live: none, not a hang"
        );
    }

    #[test]
    fn valeds_errors_become_netmaps_errnos() {
        assert_eq!(errno_of(ErrorKind::NotFound), Errno::NXIO);
        assert_eq!(errno_of(ErrorKind::Busy), Errno::BUSY);
        assert_eq!(errno_of(ErrorKind::BadName), Errno::INVAL);
    }
}
