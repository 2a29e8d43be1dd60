//! The C entry points: libc's `open`, `ioctl`, `mmap`, `close`, `dup`, `fcntl`, `poll`
//! and `select` families and `epoll_ctl`, taken over for `/dev/netmap` and its descriptors only; every
//! other path and descriptor goes to the next definition (libc) at the cost of one
//! atomic load while no netmap descriptor is open.
//!
//! The variadic ones (`open`, `openat`, `ioctl`, `fcntl`) are defined with their one
//! optional argument as a fixed one: on x86-64 and aarch64 Linux an integer or pointer
//! variadic argument travels in the same register as a fixed one, so the callee reads
//! what the caller passed (umockdev's preload does the same).

use crate::abi::*;
use crate::dev::{Device, NmResult, errno_of, from_legacy, from_register};
use crate::pollemu::{self, Sleeper};
use libc::{c_char, c_int, c_uint, c_ulong, c_void, nfds_t, off_t, pollfd, size_t};
use rustix::fd::AsFd;
use rustix::io::Errno;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::Duration;
use vale::proto::{Request, Response};
use vale_abi::Dir;

// ---- the next definitions (libc's) ------------------------------------------------

macro_rules! next {
    ($name:ident: fn($($a:ty),*) -> $r:ty) => {
        pub fn $name() -> Option<unsafe extern "C" fn($($a),*) -> $r> {
            static P: OnceLock<usize> = OnceLock::new();
            let p = *P.get_or_init(|| {
                let sym = concat!(stringify!($name), "\0");
                // SAFETY: `sym` is a NUL-terminated symbol name; RTLD_NEXT asks for the
                // definition after this library's in the lookup order (libc's).
                unsafe { libc::dlsym(libc::RTLD_NEXT, sym.as_ptr().cast()) as usize }
            });
            // SAFETY: a non-null result of dlsym for this symbol is libc's function of
            // exactly this C signature (declared as glibc declares it).
            (p != 0).then(|| unsafe {
                std::mem::transmute::<usize, unsafe extern "C" fn($($a),*) -> $r>(p)
            })
        }
    };
}

/// libc's definitions, looked up once each.
mod real {
    use libc::{c_char, c_int, c_uint, c_ulong, c_void, nfds_t, off_t, pollfd, size_t};
    use std::sync::OnceLock;

    next!(open: fn(*const c_char, c_int, c_uint) -> c_int);
    next!(open64: fn(*const c_char, c_int, c_uint) -> c_int);
    next!(openat: fn(c_int, *const c_char, c_int, c_uint) -> c_int);
    next!(openat64: fn(c_int, *const c_char, c_int, c_uint) -> c_int);
    next!(__open_2: fn(*const c_char, c_int) -> c_int);
    next!(__open64_2: fn(*const c_char, c_int) -> c_int);
    next!(__openat_2: fn(c_int, *const c_char, c_int) -> c_int);
    next!(__openat64_2: fn(c_int, *const c_char, c_int) -> c_int);
    next!(ioctl: fn(c_int, c_ulong, *mut c_void) -> c_int);
    next!(mmap: fn(*mut c_void, size_t, c_int, c_int, c_int, off_t) -> *mut c_void);
    next!(mmap64: fn(*mut c_void, size_t, c_int, c_int, c_int, off_t) -> *mut c_void);
    next!(close: fn(c_int) -> c_int);
    next!(dup: fn(c_int) -> c_int);
    next!(dup2: fn(c_int, c_int) -> c_int);
    next!(dup3: fn(c_int, c_int, c_int) -> c_int);
    next!(fcntl: fn(c_int, c_int, c_ulong) -> c_int);
    next!(fcntl64: fn(c_int, c_int, c_ulong) -> c_int);
    next!(poll: fn(*mut pollfd, nfds_t, c_int) -> c_int);
    next!(ppoll: fn(*mut pollfd, nfds_t, *const libc::timespec, *const libc::sigset_t) -> c_int);
    next!(select: fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *mut libc::timeval) -> c_int);
    next!(epoll_ctl: fn(c_int, c_int, c_int, *mut libc::epoll_event) -> c_int);
    next!(pselect: fn(c_int, *mut libc::fd_set, *mut libc::fd_set, *mut libc::fd_set, *const libc::timespec, *const libc::sigset_t) -> c_int);
}

fn set_errno(e: Errno) {
    // SAFETY: __errno_location returns the calling thread's errno, valid for its life.
    unsafe { *libc::__errno_location() = e.raw_os_error() };
}

fn fail<T>(e: Errno, v: T) -> T {
    set_errno(e);
    v
}

/// Runs `f`, turning a panic into `on_panic` with errno EIO: no unwinding into C.
fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| fail(Errno::IO, on_panic))
}

// ---- which descriptors are ours ----------------------------------------------------

static OPEN: AtomicUsize = AtomicUsize::new(0);
static TABLE: LazyLock<RwLock<HashMap<c_int, Arc<Device>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Descriptors below this have a bit saying whether they may be ours, so that calls on
/// every other descriptor cost a load or two, never the table's lock.
const MARKED: usize = 4096;
static MARK: [AtomicU64; MARKED / 64] = [const { AtomicU64::new(0) }; MARKED / 64];

/// Whether `fd` may be a netmap descriptor (false for certain otherwise).
fn maybe_ours(fd: c_int) -> bool {
    if OPEN.load(Ordering::Acquire) == 0 || fd < 0 {
        return false;
    }
    let i = fd as usize;
    i >= MARKED || MARK[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
}

fn mark(fd: c_int, on: bool) {
    let i = fd as usize;
    if fd >= 0 && i < MARKED {
        if on {
            MARK[i / 64].fetch_or(1 << (i % 64), Ordering::Release);
        } else {
            MARK[i / 64].fetch_and(!(1 << (i % 64)), Ordering::Release);
        }
    }
}

/// The device behind `fd`, if it is a netmap descriptor.
fn lookup(fd: c_int) -> Option<Arc<Device>> {
    if !maybe_ours(fd) {
        return None;
    }
    TABLE
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&fd)
        .cloned()
}

/// What the forking thread holds across a fork: another thread in the table or the
/// mappings' lists when a program forks would leave them locked for ever in the child
/// (whose first `close` of a netmap descriptor would then hang).
type ForkHold = (
    std::sync::RwLockWriteGuard<'static, HashMap<c_int, Arc<Device>>>,
    crate::dev::ForkHold,
);

thread_local! {
    static FORK_HOLD: std::cell::RefCell<Option<ForkHold>> = const { std::cell::RefCell::new(None) };
}

/// The process whose table this is: a child that shares its parent's memory (vfork,
/// `clone(CLONE_VM)`, as CPython's subprocess and posix_spawn make) and closes
/// descriptors before its exec must not forget the parent's.
static OWNER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

fn owner() -> bool {
    let o = OWNER.load(Ordering::Relaxed);
    o == 0 || o == rustix::process::getpid().as_raw_nonzero().get()
}

extern "C" fn before_fork() {
    let t = TABLE.write().unwrap_or_else(|p| p.into_inner());
    let hold = (t, crate::dev::fork_hold());
    let _ = FORK_HOLD.try_with(|h| *h.borrow_mut() = Some(hold));
}

extern "C" fn in_parent() {
    let _ = FORK_HOLD.try_with(|h| h.borrow_mut().take());
}

extern "C" fn in_child() {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    OWNER.store(pid, Ordering::Relaxed);
    let _ = FORK_HOLD.try_with(|h| {
        if let Some((t, mut hold)) = h.borrow_mut().take() {
            hold.in_child(t.values().map(|d| &**d), pollemu::inherited_wake());
        }
    });
}

/// Installs the fork handlers, once, when the first netmap descriptor opens.
fn hold_across_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        OWNER.store(
            rustix::process::getpid().as_raw_nonzero().get(),
            Ordering::Relaxed,
        );
        // SAFETY: three handlers that take and release the library's own locks, on
        // the forking thread (pthread_atfork's contract).
        unsafe { libc::pthread_atfork(Some(before_fork), Some(in_parent), Some(in_child)) };
    });
}

fn insert(fd: c_int, d: Arc<Device>) {
    hold_across_forks();
    let mut t = TABLE.write().unwrap_or_else(|p| p.into_inner());
    mark(fd, true);
    if t.insert(fd, d).is_none() {
        OPEN.fetch_add(1, Ordering::Release);
    }
}

fn forget(fd: c_int) -> Option<Arc<Device>> {
    if !maybe_ours(fd) || !owner() {
        return None;
    }
    let mut t = TABLE.write().unwrap_or_else(|p| p.into_inner());
    let d = t.remove(&fd);
    if d.is_some() {
        mark(fd, false);
        OPEN.fetch_sub(1, Ordering::Release);
    }
    d
}

// ---- open ---------------------------------------------------------------------------

const DEVICE: &[u8] = b"/dev/netmap";

/// Whether `path` names the netmap device.
fn is_device(path: *const c_char) -> bool {
    if path.is_null() {
        return false;
    }
    // SAFETY: open's contract: `path` is a NUL-terminated string.
    let p = unsafe { std::ffi::CStr::from_ptr(path) };
    p.to_bytes() == DEVICE
}

/// Says once on stderr why /dev/netmap cannot be opened (when the first open fails, or
/// whenever VALE_DEBUG is set).
fn say_not_running(e: &vale::Error) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var_os("VALE_DEBUG").is_some() || !SAID.swap(true, Ordering::Relaxed) {
        eprintln!("vale-netmap: /dev/netmap is valed: {e}");
    }
}

/// `open("/dev/netmap")`: a connection to valed stands for the device. Without valed,
/// ENOENT, as without netmap's module.
fn open_device() -> c_int {
    let path = vale::default_socket_path();
    let conn = match vale::sock::connect(&path) {
        Ok(c) => c,
        Err(e) => {
            say_not_running(&e);
            return fail(Errno::NOENT, -1);
        }
    };
    // The application's descriptor is not close-on-exec (netmap's is not); our twin is,
    // and sits high so it does not surprise programs that count descriptors.
    let twin = match crate::dev::high_dup(conn.as_fd()) {
        Ok(t) => t,
        Err(e) => return fail(e, -1),
    };
    let _ = rustix::io::fcntl_setfd(&conn, rustix::io::FdFlags::empty());
    let fd = rustix::fd::IntoRawFd::into_raw_fd(conn);
    insert(fd, Arc::new(Device::new(twin)));
    fd
}

/// The open family: the path `/dev/netmap` is the device, every other goes to libc's
/// function of the same name with the arguments unchanged.
macro_rules! interpose_open {
    ($($name:ident($($arg:ident: $ty:ty),*) path = $path:ident;)*) => {$(
        /// # Safety
        /// As libc's function of this name. Only an absolute `/dev/netmap` is the device
        /// (every known program passes that).
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> c_int {
            guard(-1, || {
                if is_device($path) {
                    return open_device();
                }
                // SAFETY: the caller's arguments, passed on unchanged.
                real::$name().map_or_else(|| fail(Errno::NOSYS, -1), |f| unsafe { f($($arg),*) })
            })
        }
    )*};
}

interpose_open! {
    open(path: *const c_char, flags: c_int, mode: c_uint) path = path;
    open64(path: *const c_char, flags: c_int, mode: c_uint) path = path;
    openat(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) path = path;
    openat64(dir: c_int, path: *const c_char, flags: c_int, mode: c_uint) path = path;
    // glibc's fortified (_FORTIFY_SOURCE) entry points.
    __open_2(path: *const c_char, flags: c_int) path = path;
    __open64_2(path: *const c_char, flags: c_int) path = path;
    __openat_2(dir: c_int, path: *const c_char, flags: c_int) path = path;
    __openat64_2(dir: c_int, path: *const c_char, flags: c_int) path = path;
}

// ---- ioctl --------------------------------------------------------------------------

/// Reads a `T` the application passed by pointer.
///
/// # Safety
/// `p` points to a readable `T` (the ioctl's contract; the kernel would answer EFAULT,
/// here a bad pointer faults in the application that passed it).
unsafe fn read_in<T: Copy>(p: u64) -> NmResult<T> {
    if p == 0 {
        return Err(Errno::INVAL);
    }
    // SAFETY: the caller's contract; unaligned, as C code may pack it anywhere.
    Ok(unsafe { std::ptr::read_unaligned(p as *const T) })
}

/// Writes a `T` back through the application's pointer.
///
/// # Safety
/// As [`read_in`], writable.
unsafe fn write_out<T: Copy>(p: u64, v: &T) {
    // SAFETY: the caller's contract.
    unsafe { std::ptr::write_unaligned(p as *mut T, *v) }
}

/// NIOCCTRL's options: each is answered EOPNOTSUPP (its status written back, as the
/// kernel does after a failure); a request that carries any fails with EOPNOTSUPP.
///
/// # Safety
/// `first` is 0 or the application's pointer to its first option.
unsafe fn refuse_options(first: u64) -> NmResult<()> {
    let mut at = first;
    let mut n = 0;
    while at != 0 {
        n += 1;
        if n > 64 {
            return Err(Errno::INVAL); // a loop, not a list
        }
        // SAFETY: an option header the application linked in (the caller's contract).
        let mut o: NmreqOption = unsafe { read_in(at)? };
        if o.nro_reqtype == 0 {
            return Err(Errno::INVAL);
        }
        o.nro_status = Errno::OPNOTSUPP.raw_os_error() as u32;
        // SAFETY: as above, writable.
        unsafe { write_out(at, &o) };
        at = o.nro_next;
    }
    if n > 0 { Err(Errno::OPNOTSUPP) } else { Ok(()) }
}

fn done(r: NmResult<()>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => fail(e, -1),
    }
}

/// valed's answer to a request that only says done or why not.
fn call_done(dev: &Device, req: &Request) -> NmResult<()> {
    match dev.call(req)?.0 {
        Response::Done { .. } => Ok(()),
        Response::Error { kind, .. } => Err(errno_of(kind)),
        _ => Err(Errno::IO),
    }
}

/// A port's place and shape in valed's listing: (switch index, port index, geometry).
fn find_port(dev: &Device, name: &str) -> NmResult<(usize, u16, vale::proto::Geometry)> {
    match dev.call(&Request::List { page: None })?.0 {
        Response::List { switches, .. } => switches
            .iter()
            .flat_map(|s| s.ports.iter().map(move |p| (s.index, p)))
            .find(|(_, p)| p.name == name)
            .map(|(b, p)| (b, p.index, p.geometry))
            .ok_or(Errno::NXIO),
        Response::Error { kind, .. } => Err(errno_of(kind)),
        _ => Err(Errno::IO),
    }
}

fn memsize_of(g: vale::proto::Geometry) -> u64 {
    let g: vale_abi::PortGeometry = g.into();
    let region = vale_abi::RegionLayout::new(g).map_or(0, |l| l.size);
    (region + crate::dev::prefix_len(g.tx_rings, g.rx_rings)) as u64
}

/// NIOCCTRL.
///
/// # Safety
/// `arg` points to the application's `struct nmreq_header` and what it links to.
unsafe fn nioctrl(dev: &Device, arg: *mut c_void) -> NmResult<()> {
    let hp = arg as u64;
    // SAFETY: the caller's contract.
    let mut h: NmreqHeader = unsafe { read_in(hp)? };
    if !(NETMAP_MIN_API..=NETMAP_MAX_API).contains(&h.nr_version) || h.nr_reserved != 0 {
        return Err(Errno::INVAL);
    }
    // A body exactly where the type has one (netmap's `nmreq_copyin`): every handler
    // below may then read or write through a non-null `nr_body`.
    if (body_size(h.nr_reqtype) > 0) != (h.nr_body != 0) {
        return Err(Errno::INVAL);
    }
    // SAFETY: the options the application linked from its header.
    unsafe { refuse_options(h.nr_options)? };
    let name = name_of(&h.nr_name).ok_or(Errno::INVAL)?.to_string();
    let body = h.nr_body;
    let r = match h.nr_reqtype {
        REQ_REGISTER => {
            // SAFETY: a REGISTER's body is a `struct nmreq_register`.
            let mut b: NmreqRegister = unsafe { read_in(body)? };
            let reply = dev.register(&from_register(&name, &b))?;
            let g = reply.geometry;
            b.nr_offset = reply.offset;
            b.nr_memsize = reply.memsize;
            b.nr_tx_slots = g.tx_slots;
            b.nr_rx_slots = g.rx_slots;
            b.nr_tx_rings = g.tx_rings;
            b.nr_rx_rings = g.rx_rings;
            b.nr_host_tx_rings = 0;
            b.nr_host_rx_rings = 0;
            b.nr_mem_id = reply.mem_id;
            b.nr_extra_bufs = reply.extra_bufs;
            // SAFETY: as read above.
            unsafe { write_out(body, &b) };
            Ok(())
        }
        REQ_PORT_HDR_GET => {
            // VALE client ports carry no virtio-net header.
            let b = NmreqPortHdr::default();
            // SAFETY: the body (non-null: checked above) is a `struct nmreq_port_hdr`.
            unsafe { write_out(body, &b) };
            Ok(())
        }
        REQ_PORT_HDR_SET => {
            // SAFETY: the body (non-null: checked above) is a `struct nmreq_port_hdr`.
            let b: NmreqPortHdr = unsafe { read_in(body)? };
            if b.nr_hdr_len == 0 {
                Ok(())
            } else {
                Err(Errno::INVAL)
            }
        }
        REQ_PORT_INFO_GET => {
            let (g, memsize, mem_id) = match dev.port() {
                Some(p) if name.is_empty() || name == p.name => {
                    (p.geometry().into(), p.memsize as u64, p.mem_id)
                }
                _ => {
                    let (_, _, g) = find_port(dev, &name)?;
                    (g, memsize_of(g), 0)
                }
            };
            let g: vale::proto::Geometry = g;
            let b = NmreqPortInfoGet {
                nr_memsize: memsize,
                nr_tx_slots: g.tx_slots,
                nr_rx_slots: g.rx_slots,
                nr_tx_rings: g.tx_rings,
                nr_rx_rings: g.rx_rings,
                nr_mem_id: mem_id,
                ..Default::default()
            };
            // SAFETY: the body (non-null: checked above) is a `struct nmreq_port_info_get`.
            unsafe { write_out(body, &b) };
            Ok(())
        }
        REQ_POOLS_INFO_GET => {
            let p = dev.port().ok_or(Errno::INVAL)?;
            let l = p.region.layout();
            let g = l.geometry;
            let ring0 = l.ring_offset(Dir::Tx, 0).unwrap_or(0);
            let b = NmreqPoolsInfo {
                nr_memsize: p.memsize as u64,
                nr_mem_id: p.mem_id,
                nr_if_pool_offset: 0,
                nr_if_pool_objtotal: 1,
                nr_if_pool_objsize: p.prefix.len as u32,
                nr_ring_pool_offset: (p.prefix.len + ring0) as u64,
                nr_ring_pool_objtotal: (g.tx_rings + g.rx_rings) as u32,
                nr_ring_pool_objsize: vale_abi::region::ring_bytes(g.tx_slots.max(g.rx_slots))
                    as u32,
                nr_buf_pool_offset: (p.prefix.len + l.buf_offset) as u64,
                nr_buf_pool_objtotal: l.nbufs,
                nr_buf_pool_objsize: g.buf_size,
                ..Default::default()
            };
            // SAFETY: the body (non-null: checked above) is a `struct nmreq_pools_info`.
            unsafe { write_out(body, &b) };
            Ok(())
        }
        REQ_VALE_LIST => {
            // SAFETY: the body is a `struct nmreq_vale_list`.
            let mut b: NmreqValeList = unsafe { read_in(body)? };
            let r = vale_list(dev, &name, &mut b, &mut h.nr_name);
            if r.is_ok() {
                // SAFETY: as read above.
                unsafe { write_out(body, &b) };
            }
            r
        }
        REQ_VALE_NEWIF => call_done(dev, &Request::HostCreate { name, queues: 1 }),
        REQ_VALE_DELIF => call_done(dev, &Request::HostRemove { name }),
        REQ_VALE_ATTACH => call_done(
            dev,
            &Request::Attach {
                port: name,
                xdp: false,
            },
        ),
        REQ_VALE_DETACH => call_done(dev, &Request::Detach { port: name }),
        REQ_VALE_POLLING_ENABLE
        | REQ_VALE_POLLING_DISABLE
        | REQ_SYNC_KLOOP_START
        | REQ_SYNC_KLOOP_STOP
        | REQ_CSB_ENABLE => Err(Errno::OPNOTSUPP),
        _ => Err(Errno::INVAL),
    };
    // The header goes back whatever happened (a LIST fills in the name).
    // SAFETY: the caller's contract.
    unsafe { write_out(hp, &h) };
    r
}

/// VALE_LIST: a named port's place, or with an empty name the next port at or after
/// (bridge, port), its name written into the header; ENOENT past the last.
fn vale_list(dev: &Device, name: &str, b: &mut NmreqValeList, out: &mut [u8; 64]) -> NmResult<()> {
    if !name.is_empty() {
        let (bi, pi, _) = find_port(dev, name)?;
        b.nr_bridge_idx = bi as u16;
        b.nr_port_idx = pi as u32;
        return Ok(());
    }
    let Response::List { switches, .. } = dev.call(&Request::List { page: None })?.0 else {
        return Err(Errno::IO);
    };
    let at = (b.nr_bridge_idx as usize, b.nr_port_idx);
    let next = switches
        .iter()
        .flat_map(|s| {
            s.ports
                .iter()
                .map(move |p| ((s.index, p.index as u32), &p.name))
        })
        .filter(|(k, _)| *k >= at)
        .min_by_key(|(k, _)| *k);
    let ((bi, pi), n) = next.ok_or(Errno::NOENT)?;
    b.nr_bridge_idx = bi as u16;
    b.nr_port_idx = pi;
    if !put_name(out, n) {
        return Err(Errno::NAMETOOLONG);
    }
    Ok(())
}

/// The legacy NIOCREGIF (register; the old bridge commands are not offered) and
/// NIOCGINFO.
///
/// # Safety
/// `arg` points to the application's `struct nmreq`.
unsafe fn legacy(dev: &Device, cmd: u32, arg: *mut c_void) -> NmResult<()> {
    let p = arg as u64;
    // SAFETY: the caller's contract.
    let mut r: Nmreq = unsafe { read_in(p)? };
    if r.nr_version < NETMAP_LEGACY_MIN_API {
        return Err(Errno::INVAL);
    }
    let (mut extra, mut offset) = (0, 0);
    let (g, memsize, mem_id) = if cmd == NIOCREGIF {
        if r.nr_cmd != 0 {
            return Err(Errno::OPNOTSUPP);
        }
        let reply = dev.register(&from_legacy(&r)?)?;
        extra = reply.extra_bufs;
        offset = reply.offset as u32;
        (reply.geometry.into(), reply.memsize, reply.mem_id)
    } else {
        let name = name_of(&r.nr_name).ok_or(Errno::INVAL)?.to_string();
        match dev.port() {
            Some(p) if name.is_empty() || name == p.name => {
                offset = p.nifp_off as u32;
                (p.geometry().into(), p.memsize as u64, p.mem_id)
            }
            _ => {
                let (_, _, g) = find_port(dev, &name)?;
                (g, memsize_of(g), 0)
            }
        }
    };
    let g: vale::proto::Geometry = g;
    r.nr_offset = offset;
    r.nr_memsize = u32::try_from(memsize).map_err(|_| Errno::NOMEM)?;
    r.nr_tx_slots = g.tx_slots;
    r.nr_rx_slots = g.rx_slots;
    r.nr_tx_rings = g.tx_rings;
    r.nr_rx_rings = g.rx_rings;
    r.nr_arg2 = mem_id;
    r.nr_arg3 = extra;
    // SAFETY: as read above.
    unsafe { write_out(p, &r) };
    Ok(())
}

/// # Safety
/// As ioctl(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
    guard(-1, || {
        let Some(dev) = lookup(fd) else {
            // SAFETY: the caller's arguments, passed on unchanged.
            return real::ioctl().map_or_else(
                || fail(Errno::NOSYS, -1),
                |f| unsafe { f(fd, request, arg) },
            );
        };
        // The kernel compares 32 bits: a request kept in an int arrives sign-extended.
        match request as u32 {
            NIOCTXSYNC => done(dev.sync(Dir::Tx).map(|_| ())),
            NIOCRXSYNC => done(dev.sync(Dir::Rx).map(|_| ())),
            // SAFETY: NIOCCTRL's argument is a `struct nmreq_header`.
            NIOCCTRL => done(unsafe { nioctrl(&dev, arg) }),
            // SAFETY: the legacy requests' argument is a `struct nmreq`.
            c @ (NIOCREGIF | NIOCGINFO) => done(unsafe { legacy(&dev, c, arg) }),
            // The kernel's own ioctls on any file. O_NONBLOCK means nothing to netmap
            // and would be shared with the twin (one open file), whose requests must
            // block for their answers: accepted, not passed on.
            FIONBIO => 0,
            // SAFETY: the caller's arguments; these change only this descriptor's flag.
            FIOCLEX | FIONCLEX => real::ioctl().map_or_else(
                || fail(Errno::NOSYS, -1),
                |f| unsafe { f(fd, request, arg) },
            ),
            _ => fail(Errno::OPNOTSUPP, -1),
        }
    })
}

// ---- mmap, close, dup ---------------------------------------------------------------

/// The mapping of a registered descriptor: its own `netmap_if` first, then the port's
/// region (rings and buffers, valed's shared memory, no copy), one range of `memsize`
/// bytes of which the program maps `len` from `off` (netmap's mmap: any page-aligned
/// window within it), where it asks (`addr`, MAP_FIXED and MAP_FIXED_NOREPLACE as the
/// kernel honours them), and unmaps as one.
fn map_device(
    dev: &Device,
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    off: off_t,
) -> *mut c_void {
    use rustix::mm::{MapFlags, ProtFlags};
    let Some(p) = dev.port() else {
        return fail(Errno::INVAL, libc::MAP_FAILED);
    };
    let page = 4096;
    let Ok(off) = usize::try_from(off) else {
        return fail(Errno::INVAL, libc::MAP_FAILED);
    };
    if len == 0 || off % page != 0 || off >= p.memsize || len > p.memsize - off {
        return fail(Errno::INVAL, libc::MAP_FAILED);
    }
    let fixed = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE);
    let reserve =
        MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::from_bits_retain(fixed as u32);
    let prot = ProtFlags::from_bits_truncate(prot as u32);
    // SAFETY: an anonymous reservation where the kernel picks (or, with MAP_FIXED,
    // where the program said, replacing what it had there, as for netmap's mmap).
    let base = match unsafe { rustix::mm::mmap_anonymous(addr, len, ProtFlags::empty(), reserve) } {
        Ok(b) => b,
        Err(e) => return fail(e, libc::MAP_FAILED),
    };
    let pieces = [
        (0usize, p.prefix.len, p.prefix.fd.as_fd()),
        (p.prefix.len, p.region.size(), p.region.fd()),
    ];
    for (at, n, fd) in pieces {
        // The part of this piece inside the window [off, off + len).
        let (from, to) = (at.max(off), (at + n).min(off + len));
        if from >= to {
            continue;
        }
        // SAFETY: `base + (from - off) .. + (to - from)` lies inside the reservation
        // just made, which only this call knows of; MAP_FIXED replaces that part of it
        // and nothing else.
        let r = unsafe {
            rustix::mm::mmap(
                base.cast::<u8>().add(from - off).cast(),
                to - from,
                prot,
                MapFlags::SHARED | MapFlags::FIXED,
                fd,
                (from - at) as u64,
            )
        };
        if let Err(e) = r {
            // SAFETY: the reservation made above, not handed out yet.
            let _ = unsafe { rustix::mm::munmap(base, len) };
            return fail(e, libc::MAP_FAILED);
        }
    }
    base
}

/// # Safety
/// As mmap(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    guard(libc::MAP_FAILED, || match lookup(fd) {
        Some(d) => map_device(&d, addr, len, prot, flags, off),
        // SAFETY: the caller's arguments, passed on unchanged.
        None => real::mmap().map_or_else(
            || fail(Errno::NOSYS, libc::MAP_FAILED),
            |f| unsafe { f(addr, len, prot, flags, fd, off) },
        ),
    })
}

/// # Safety
/// As mmap(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    guard(libc::MAP_FAILED, || match lookup(fd) {
        Some(d) => map_device(&d, addr, len, prot, flags, off),
        // SAFETY: the caller's arguments, passed on unchanged.
        None => real::mmap64().map_or_else(
            || fail(Errno::NOSYS, libc::MAP_FAILED),
            |f| unsafe { f(addr, len, prot, flags, fd, off) },
        ),
    })
}

/// # Safety
/// As close(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    guard(-1, || {
        // The device lives while any duplicate of the descriptor does (an Arc each).
        drop(forget(fd));
        // SAFETY: the caller's argument, passed on unchanged.
        real::close().map_or_else(|| fail(Errno::NOSYS, -1), |f| unsafe { f(fd) })
    })
}

/// Forgets the netmap descriptors in `first..=last` (they are being closed).
fn forget_range(first: u32, last: u32) {
    if OPEN.load(Ordering::Acquire) == 0 || !owner() {
        return;
    }
    let gone: Vec<Arc<Device>> = {
        let mut t = TABLE.write().unwrap_or_else(|p| p.into_inner());
        let fds: Vec<c_int> = t
            .keys()
            .copied()
            .filter(|&fd| (first..=last).contains(&(fd as u32)))
            .collect();
        fds.iter()
            .filter_map(|fd| {
                let d = t.remove(fd)?;
                mark(*fd, false);
                OPEN.fetch_sub(1, Ordering::Release);
                Some(d)
            })
            .collect()
    };
    // Their devices close their own descriptors (the last duplicate gone), not under
    // the table's lock.
    drop(gone);
}

/// close_range(2) over `first..=last` but for the library's own descriptors, which
/// their owners close. Once closed, the netmap descriptors in the range are forgotten
/// (their devices then close what they hold), unless the range was only made
/// close-on-exec, or closed in a table of this thread's own (CLOSE_RANGE_UNSHARE: the
/// other threads keep them), or this is a child sharing its parent's memory (vfork:
/// the table is the parent's, whose descriptors stay open).
fn close_range_keeping(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let known = libc::CLOSE_RANGE_CLOEXEC | libc::CLOSE_RANGE_UNSHARE;
    if first > last || flags as c_uint & !known != 0 {
        return fail(Errno::INVAL, -1);
    }
    let r = close_range_around_kept(first, last, flags);
    if r == 0 && flags as c_uint & known == 0 {
        forget_range(first, last);
    }
    r
}

fn close_range_around_kept(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    crate::dev::while_kept(first, last, |kept| {
        let mut from = u64::from(first);
        let pieces = kept.iter().map(|&k| k as u64).chain([u64::from(last) + 1]);
        for k in pieces {
            if k > from {
                // SAFETY: close_range(2) with the caller's flags over part of its range.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_close_range,
                        from as c_uint,
                        (k - 1) as c_uint,
                        flags as c_uint,
                    )
                };
                if r < 0 {
                    return -1; // errno is the kernel's
                }
            }
            from = k + 1;
        }
        0
    })
}

/// # Safety
/// As close_range(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    guard(-1, || close_range_keeping(first, last, flags))
}

/// The open descriptors at or above `low` (from /proc/self/fd, the listing's own left
/// out), or every number up to the descriptor limit if /proc cannot be read.
fn open_from(low: c_int) -> Vec<c_int> {
    use rustix::fs::{Mode, OFlags};
    let listed = rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .and_then(|fd| {
        let own = rustix::fd::AsRawFd::as_raw_fd(&fd);
        let mut dir = rustix::fs::Dir::new(fd).ok()?;
        let mut v = Vec::new();
        while let Some(e) = dir.read() {
            let e = e.ok()?;
            if let Some(n) = e.file_name().to_str().ok().and_then(|n| n.parse().ok()) {
                if n >= low && n != own {
                    v.push(n);
                }
            }
        }
        Some(v)
    });
    listed.unwrap_or_else(|| {
        let max = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20)
            .min(1 << 20) as c_int;
        (low..max).collect()
    })
}

/// # Safety
/// As closefrom(3).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn closefrom(low: c_int) {
    guard((), || {
        let low = low.max(0);
        if close_range_keeping(low as c_uint, c_uint::MAX, 0) == 0 {
            return;
        }
        // A kernel without close_range (before 5.9), or a filter that refuses it: each
        // open descriptor, as glibc's fallback does, but for the library's own.
        crate::dev::while_kept(low as c_uint, c_uint::MAX, |kept| {
            let open = open_from(low);
            for fd in open
                .into_iter()
                .filter(|fd| kept.binary_search(fd).is_err())
            {
                if let Some(f) = real::close() {
                    // SAFETY: closing a descriptor number the program asked to close.
                    unsafe { f(fd) };
                }
            }
        });
        forget_range(low as c_uint, c_uint::MAX);
    })
}

/// A duplicate of a netmap descriptor is the same device.
fn dup_done(old: c_int, new: c_int) -> c_int {
    if new >= 0 {
        if let Some(d) = lookup(old).filter(|_| owner()) {
            insert(new, d);
        }
    }
    new
}

/// # Safety
/// As dup(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    guard(-1, || {
        // SAFETY: the caller's argument, passed on unchanged.
        let new = real::dup().map_or_else(|| fail(Errno::NOSYS, -1), |f| unsafe { f(fd) });
        dup_done(fd, new)
    })
}

/// # Safety
/// As dup2(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    guard(-1, || {
        if old != new {
            drop(forget(new)); // dup2 closes `new` first
        }
        // SAFETY: the caller's arguments, passed on unchanged.
        let r = real::dup2().map_or_else(|| fail(Errno::NOSYS, -1), |f| unsafe { f(old, new) });
        dup_done(old, r)
    })
}

/// # Safety
/// As dup3(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    guard(-1, || {
        if old != new {
            drop(forget(new));
        }
        // SAFETY: the caller's arguments, passed on unchanged.
        let r =
            real::dup3().map_or_else(|| fail(Errno::NOSYS, -1), |f| unsafe { f(old, new, flags) });
        dup_done(old, r)
    })
}

/// F_SETFL's flags for `fd`: a netmap descriptor keeps O_NONBLOCK off, as for FIONBIO
/// (the twin shares its open file and must block for valed's answers; netmap ignores
/// the flag).
fn setfl_arg(fd: c_int, cmd: c_int, arg: c_ulong) -> c_ulong {
    if cmd == libc::F_SETFL && lookup(fd).is_some() {
        arg & !(libc::O_NONBLOCK as c_ulong)
    } else {
        arg
    }
}

/// # Safety
/// As fcntl(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    guard(-1, || {
        let arg = setfl_arg(fd, cmd, arg);
        // SAFETY: the caller's arguments, passed on unchanged but for O_NONBLOCK.
        let r =
            real::fcntl().map_or_else(|| fail(Errno::NOSYS, -1), |f| unsafe { f(fd, cmd, arg) });
        if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
            dup_done(fd, r)
        } else {
            r
        }
    })
}

/// # Safety
/// As fcntl(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    guard(-1, || {
        let arg = setfl_arg(fd, cmd, arg);
        // SAFETY: the caller's arguments, passed on unchanged but for O_NONBLOCK.
        let r =
            real::fcntl64().map_or_else(|| fail(Errno::NOSYS, -1), |f| unsafe { f(fd, cmd, arg) });
        if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
            dup_done(fd, r)
        } else {
            r
        }
    })
}

// ---- poll and select ----------------------------------------------------------------

/// The real poll, sleeping with the caller's signal mask when it gave one (ppoll).
struct Real {
    sigmask: *const libc::sigset_t,
}

impl Sleeper for Real {
    fn poll(&mut self, fds: &mut [pollfd], timeout: Option<Duration>) -> i32 {
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
        // SAFETY: `fds` is a live array of its length; `tsp` is null or a live timespec;
        // the signal mask is the caller's (or null).
        real::ppoll().map_or_else(
            || fail(Errno::NOSYS, -1),
            |f| unsafe { f(fds.as_mut_ptr(), fds.len() as nfds_t, tsp, self.sigmask) },
        )
    }
}

/// Whether any descriptor of the array is ours, and which.
fn devices_of(fds: &[pollfd]) -> Option<Vec<Option<Arc<Device>>>> {
    if !fds.iter().any(|f| maybe_ours(f.fd)) {
        return None; // no allocation, no lock: an ordinary poll
    }
    let devs: Vec<_> = fds.iter().map(|f| lookup(f.fd)).collect();
    devs.iter().any(Option::is_some).then_some(devs)
}

fn timeout_ms(ms: c_int) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

/// # Safety
/// As poll(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    guard(-1, || {
        let arr = if fds.is_null() || nfds == 0 {
            &mut [][..]
        } else {
            // SAFETY: poll's contract: `fds` points to `nfds` pollfds.
            unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) }
        };
        match devices_of(arr) {
            Some(devs) => pollemu::poll(
                arr,
                &devs,
                timeout_ms(timeout),
                &mut Real {
                    sigmask: std::ptr::null(),
                },
            ),
            None => {
                // SAFETY: the caller's arguments, passed on unchanged.
                real::poll().map_or_else(
                    || fail(Errno::NOSYS, -1),
                    |f| unsafe { f(fds, nfds, timeout) },
                )
            }
        }
    })
}

/// # Safety
/// As glibc's `__poll_chk` (poll with _FORTIFY_SOURCE).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: c_int,
    _len: size_t,
) -> c_int {
    // SAFETY: as poll.
    unsafe { poll(fds, nfds, timeout) }
}

/// # Safety
/// As ppoll(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    guard(-1, || {
        let arr = if fds.is_null() || nfds == 0 {
            &mut [][..]
        } else {
            // SAFETY: ppoll's contract: `fds` points to `nfds` pollfds.
            unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) }
        };
        match devices_of(arr) {
            Some(devs) => {
                let timeout = (!tmo.is_null()).then(|| {
                    // SAFETY: a non-null timeout points to a timespec (ppoll's contract).
                    let t = unsafe { *tmo };
                    Duration::new(
                        t.tv_sec.max(0) as u64,
                        t.tv_nsec.clamp(0, 999_999_999) as u32,
                    )
                });
                pollemu::poll(arr, &devs, timeout, &mut Real { sigmask })
            }
            // SAFETY: the caller's arguments, passed on unchanged.
            None => real::ppoll().map_or_else(
                || fail(Errno::NOSYS, -1),
                |f| unsafe { f(fds, nfds, tmo, sigmask) },
            ),
        }
    })
}

/// # Safety
/// As glibc's `__ppoll_chk`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    tmo: *const libc::timespec,
    sigmask: *const libc::sigset_t,
    _len: size_t,
) -> c_int {
    // SAFETY: as ppoll.
    unsafe { ppoll(fds, nfds, tmo, sigmask) }
}

/// select over sets some of whose descriptors are ours: done as a poll over the
/// descriptors in the sets, the sets rewritten from the result.
///
/// # Safety
/// The sets are null or point to `fd_set`s; `nfds` is at most FD_SETSIZE.
unsafe fn select_emu(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout: Option<Duration>,
    sigmask: *const libc::sigset_t,
) -> Option<c_int> {
    if OPEN.load(Ordering::Acquire) == 0 {
        return None;
    }
    let n = nfds.clamp(0, libc::FD_SETSIZE as c_int);
    // SAFETY: the sets are null or live fd_sets (the caller's contract).
    let isset = |s: *mut libc::fd_set, fd: c_int| !s.is_null() && unsafe { libc::FD_ISSET(fd, s) };
    let mut fds = Vec::new();
    for fd in 0..n {
        let mut ev = 0;
        if isset(r, fd) {
            ev |= POLLIN_;
        }
        if isset(w, fd) {
            ev |= POLLOUT_;
        }
        if isset(e, fd) {
            ev |= libc::POLLPRI;
        }
        if ev != 0 {
            fds.push(pollfd {
                fd,
                events: ev,
                revents: 0,
            });
        }
    }
    let devs = devices_of(&fds)?;
    let rc = pollemu::poll(&mut fds, &devs, timeout, &mut Real { sigmask });
    if rc < 0 {
        return Some(rc);
    }
    for s in [r, w, e] {
        if !s.is_null() {
            // SAFETY: a live fd_set.
            unsafe { libc::FD_ZERO(s) };
        }
    }
    let mut count = 0;
    for f in &fds {
        let mark = |s: *mut libc::fd_set, on: bool| {
            if on && !s.is_null() {
                // SAFETY: a live fd_set, fd < FD_SETSIZE.
                unsafe { libc::FD_SET(f.fd, s) };
                1
            } else {
                0
            }
        };
        let bad = f.revents & (libc::POLLERR | libc::POLLHUP) != 0;
        count += mark(
            r,
            f.events & POLLIN_ != 0 && (f.revents & POLLIN_ != 0 || bad),
        );
        count += mark(
            w,
            f.events & POLLOUT_ != 0 && (f.revents & POLLOUT_ != 0 || bad),
        );
        count += mark(
            e,
            f.events & libc::POLLPRI != 0 && f.revents & libc::POLLPRI != 0,
        );
    }
    Some(count)
}

const POLLIN_: i16 = libc::POLLIN;
const FIONBIO: u32 = libc::FIONBIO as u32;
const FIOCLEX: u32 = libc::FIOCLEX as u32;
const FIONCLEX: u32 = libc::FIONCLEX as u32;
const POLLOUT_: i16 = libc::POLLOUT;

/// # Safety
/// As select(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tv: *mut libc::timeval,
) -> c_int {
    guard(-1, || {
        let timeout = (!tv.is_null()).then(|| {
            // SAFETY: a non-null timeval (select's contract).
            let t = unsafe { *tv };
            Duration::new(
                t.tv_sec.max(0) as u64,
                (t.tv_usec.clamp(0, 999_999) * 1000) as u32,
            )
        });
        // SAFETY: the caller's sets.
        if let Some(rc) = unsafe { select_emu(nfds, r, w, e, timeout, std::ptr::null()) } {
            if !tv.is_null() {
                // Linux writes back the time left; a poll-based select reports none.
                // SAFETY: as read above.
                unsafe {
                    (*tv).tv_sec = 0;
                    (*tv).tv_usec = 0;
                }
            }
            return rc;
        }
        // SAFETY: the caller's arguments, passed on unchanged.
        real::select().map_or_else(
            || fail(Errno::NOSYS, -1),
            |f| unsafe { f(nfds, r, w, e, tv) },
        )
    })
}

/// # Safety
/// As pselect(2).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    ts: *const libc::timespec,
    sigmask: *const libc::sigset_t,
) -> c_int {
    guard(-1, || {
        let timeout = (!ts.is_null()).then(|| {
            // SAFETY: a non-null timespec (pselect's contract).
            let t = unsafe { *ts };
            Duration::new(
                t.tv_sec.max(0) as u64,
                t.tv_nsec.clamp(0, 999_999_999) as u32,
            )
        });
        // SAFETY: the caller's sets.
        if let Some(rc) = unsafe { select_emu(nfds, r, w, e, timeout, sigmask) } {
            return rc;
        }
        // SAFETY: the caller's arguments, passed on unchanged.
        real::pselect().map_or_else(
            || fail(Errno::NOSYS, -1),
            |f| unsafe { f(nfds, r, w, e, ts, sigmask) },
        )
    })
}

// ---- epoll ----------------------------------------------------------------------------

/// # Safety
/// As epoll_ctl(2).
///
/// A netmap descriptor cannot be watched by epoll: what makes it ready is ring state
/// the library computes in poll, never its socket, so an epoll_wait on it would sleep
/// for ever. It is refused as a regular file is (EPERM), which programs take as "use
/// poll"; every other descriptor goes to libc.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut libc::epoll_event,
) -> c_int {
    guard(-1, || {
        if (op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD) && lookup(fd).is_some() {
            return fail(Errno::PERM, -1);
        }
        // SAFETY: the caller's arguments, passed on unchanged.
        real::epoll_ctl().map_or_else(
            || fail(Errno::NOSYS, -1),
            |f| unsafe { f(epfd, op, fd, event) },
        )
    })
}

// ---- fuzzing ------------------------------------------------------------------------

/// The netmap request structs from raw bytes, as an application's pointers deliver them
/// to `ioctl`: what `nioctrl` and `legacy` read before they ask valed anything (the
/// header's checks, the option list, the name, a REGISTER's body and the request it
/// becomes). The option list is laid out from the bytes with real pointers between its
/// entries (loops included), so `refuse_options` walks it as it walks an application's.
/// Returns the requests to valed that the REGISTERs (new and legacy) would make.
pub fn fuzz_requests(data: &[u8]) -> Vec<Request> {
    let hdr_len = size_of::<NmreqHeader>();
    let reg_len = size_of::<NmreqRegister>();
    let opt_len = size_of::<NmreqOption>();
    let mut out = Vec::new();
    if data.len() < hdr_len + reg_len {
        return out;
    }
    let (h, rest) = data.split_at(hdr_len);
    let (body, opts) = rest.split_at(reg_len);
    // SAFETY: a header's worth of bytes; any bit pattern is a valid header.
    let mut h: NmreqHeader = unsafe { std::ptr::read_unaligned(h.as_ptr().cast()) };
    // SAFETY: as above, a REGISTER body's worth.
    let b: NmreqRegister = unsafe { std::ptr::read_unaligned(body.as_ptr().cast()) };
    // SAFETY: as above, a legacy request's worth (it is shorter than header + body).
    let legacy_req: Nmreq = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let mut list: Vec<NmreqOption> = opts
        .chunks_exact(opt_len)
        .take(80)
        // SAFETY: an option's worth of bytes; any bit pattern is a valid option.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) })
        .collect();
    let at = |list: &[NmreqOption], v: u64| -> u64 {
        if v == 0 || list.is_empty() {
            0
        } else {
            std::ptr::from_ref(&list[v as usize % list.len()]) as u64
        }
    };
    for i in 0..list.len() {
        list[i].nro_next = at(&list, list[i].nro_next);
    }
    h.nr_options = at(&list, h.nr_options);
    let version_ok =
        (NETMAP_MIN_API..=NETMAP_MAX_API).contains(&h.nr_version) && h.nr_reserved == 0;
    // SAFETY: 0 or a pointer into `list`, whose entries link only to its own entries.
    let opts_ok = unsafe { refuse_options(h.nr_options) };
    if !list.is_empty() && h.nr_options != 0 {
        assert!(opts_ok.is_err(), "options are refused, never ignored");
        assert!(list.iter().any(|o| o.nro_status != 0 || o.nro_reqtype == 0));
    }
    if version_ok && opts_ok.is_ok() && h.nr_reqtype == REQ_REGISTER {
        if let Some(name) = name_of(&h.nr_name) {
            out.extend(crate::dev::open_request(&from_register(name, &b)));
        }
    }
    if let Ok(r) = from_legacy(&legacy_req) {
        out.extend(crate::dev::open_request(&r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::EventfdFlags;
    use rustix::fd::OwnedFd;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use std::sync::mpsc;
    use std::time::Instant;
    use vale_abi::{PortGeometry, Region};

    /// A registered device without valed: the switch's side of its region, the notify
    /// eventfd as valed holds it, and the other end of the connection.
    fn device() -> (Arc<Device>, Region, OwnedFd, OwnedFd) {
        let g = PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            ..Default::default()
        };
        let sw = Region::create("vale0:t", g).unwrap();
        let memfd = rustix::io::fcntl_dupfd_cloexec(sw.fd(), 0).unwrap();
        let ev = || rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK);
        let (kick, notify) = (ev().unwrap(), ev().unwrap());
        let notify_sw = rustix::io::fcntl_dupfd_cloexec(&notify, 0).unwrap();
        let (conn, peer) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let dev = Arc::new(Device::new(crate::dev::Hidden::new(conn)));
        let req = crate::dev::RegisterReq {
            name: "vale0:t".into(),
            mode: NR_REG_ALL_NIC,
            ringid: 0,
            flags: 0,
            geometry: Default::default(),
            mem_id: 0,
        };
        dev.bind(&req, g, (0, 0), None, vec![memfd, kick, notify])
            .unwrap();
        (dev, sw, notify_sw, peer)
    }

    fn real_sleep(fds: &mut [pollfd], timeout: Option<Duration>) -> i32 {
        Real {
            sigmask: std::ptr::null(),
        }
        .poll(fds, timeout)
    }

    /// The real poll, saying so each time before it sleeps.
    struct Telling(mpsc::Sender<()>);

    impl Sleeper for Telling {
        fn poll(&mut self, fds: &mut [pollfd], timeout: Option<Duration>) -> i32 {
            let _ = self.0.send(());
            real_sleep(fds, timeout)
        }
    }

    /// The real poll, after running `.0` once, when the poll first goes to sleep.
    struct Meanwhile<F: FnMut()>(Option<F>);

    impl<F: FnMut()> Sleeper for Meanwhile<F> {
        fn poll(&mut self, fds: &mut [pollfd], timeout: Option<Duration>) -> i32 {
            if let Some(mut f) = self.0.take() {
                f();
            }
            real_sleep(fds, timeout)
        }
    }

    /// The real poll, counting its calls.
    struct Counting<'a>(&'a AtomicUsize);

    impl Sleeper for Counting<'_> {
        fn poll(&mut self, fds: &mut [pollfd], timeout: Option<Duration>) -> i32 {
            self.0.fetch_add(1, Ordering::Relaxed);
            real_sleep(fds, timeout)
        }
    }

    fn want_rx() -> [pollfd; 1] {
        [pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }]
    }

    #[test]
    fn a_wake_up_one_thread_drains_reaches_the_others_asleep_on_the_descriptor() {
        let (dev, sw, notify, _peer) = device();
        // Thread A sleeps in poll on the descriptor.
        let (said, asleep) = mpsc::channel();
        let a_dev = dev.clone();
        let mut a = Some(std::thread::spawn(move || {
            let t = Some(Duration::from_secs(5));
            pollemu::poll(&mut want_rx(), &[Some(a_dev)], t, &mut Telling(said))
        }));
        asleep.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100)); // in ppoll by now
        // Thread B has armed and looked once more (nothing), and is about to sleep when
        // the switch delivers a frame and kicks; A wakes first and drains the eventfd.
        let t0 = Instant::now();
        let rc = pollemu::poll(
            &mut want_rx(),
            &[Some(dev.clone())],
            Some(Duration::from_secs(3)),
            &mut Meanwhile(Some(|| {
                sw.ring(Dir::Rx, 0).unwrap().csb().sw_publish_release(0, 1);
                rustix::io::write(&notify, &1u64.to_ne_bytes()).unwrap();
                let a = a.take().unwrap().join().unwrap();
                assert_eq!(a, 1, "A woke to the frame");
            })),
        );
        assert_eq!(rc, 1, "B sees the frame");
        let slept = t0.elapsed();
        assert!(
            slept < Duration::from_secs(1),
            "B slept {slept:?} on the eventfd A drained"
        );
    }

    #[test]
    fn threads_asleep_on_one_descriptor_pass_a_wake_up_on_once_not_back_and_forth() {
        let (dev, _sw, notify, _peer) = device();
        let sleeps = AtomicUsize::new(0);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let t = Some(Duration::from_millis(600));
                    let rc = pollemu::poll(
                        &mut want_rx(),
                        &[Some(dev.clone())],
                        t,
                        &mut Counting(&sleeps),
                    );
                    assert_eq!(rc, 0, "nothing arrived");
                });
            }
            // A kick with nothing behind it (a spurious one): each thread wakes, looks,
            // sleeps again; none wakes another for ever.
            std::thread::sleep(Duration::from_millis(200));
            rustix::io::write(&notify, &1u64.to_ne_bytes()).unwrap();
        });
        assert!(t0.elapsed() >= Duration::from_millis(590));
        let n = sleeps.load(Ordering::Relaxed);
        assert!(n <= 3 * 4, "{n} sleeps for one kick in three threads");
    }
}
