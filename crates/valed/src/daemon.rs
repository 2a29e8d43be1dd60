//! Starting and stopping the daemon: the control socket, one forwarding thread per lane,
//! and the shutdown order (host ports first, then the lanes, then the clients).

use crate::control::{Control, SetVerbosity};
use crate::error::StartError;
use crate::lane::{Lane, LaneState, Token};
use crate::settings::{Settings, Writer};
use rustix::event::{EventfdFlags, epoll};
use rustix::fd::OwnedFd;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vale_switch::Registry;

/// The socket's directory must be valed's user's or root's, and not open to others'
/// writes unless sticky (as /tmp is): in a directory another user owns or may write,
/// that user could replace the socket and have valed's clients talk to a daemon of
/// theirs (one who made `/tmp/vale-$UID` first, say).
fn safe_dir(dir: &Path) -> std::io::Result<()> {
    let st = rustix::fs::stat(dir)?;
    let me = rustix::process::geteuid().as_raw();
    match crate::settings::other_writer(&st) {
        None => Ok(()),
        Some(Writer::Owner(uid)) => Err(std::io::Error::other(format!(
            "it belongs to uid {uid}, not to valed's user ({me}) or root: its owner could replace the socket; remove it, or give another --socket"
        ))),
        Some(Writer::GroupOrOthers(mode)) => Err(std::io::Error::other(format!(
            "others may write in it (mode {mode:o}, not sticky) and so replace the socket; chmod go-w it, or give another --socket"
        ))),
    }
}

fn listen(path: &Path, mode: u32, group: Option<&str>) -> Result<OwnedFd, StartError> {
    let sock_err = |what, e: std::io::Error| StartError::Socket {
        what,
        path: path.to_path_buf(),
        source: e,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| sock_err("cannot create the directory of", e))?;
        safe_dir(dir).map_err(|e| sock_err("refusing the directory of", e))?;
    }
    if path.exists() {
        // A live daemon answers; a stale file from a crash does not.
        if vale::sock::connect(path).is_ok() {
            return Err(StartError::AlreadyRunning(path.to_path_buf()));
        }
        crate::sys::remove_socket_file(path)
            .map_err(|e| sock_err("cannot remove stale socket", e))?;
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| StartError::Os("socket", e.into()))?;
    // Clients pass no descriptors: refused at the source where the kernel can (on the
    // listener too, for what its connections inherit).
    crate::sys::closer::refuse_rights(&fd);
    let addr = SocketAddrUnix::new(path).map_err(|e| sock_err("bad socket path", e.into()))?;
    rustix::net::bind(&fd, &addr).map_err(|e| sock_err("cannot bind", e.into()))?;
    rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| sock_err("cannot set the mode of", e.into()))?;
    if let Some(g) = group {
        let gid = crate::settings::group_id(g)
            .map_err(|e| sock_err("bad group for", std::io::Error::other(e.to_string())))?;
        rustix::fs::chown(path, None, Some(rustix::process::Gid::from_raw(gid)))
            .map_err(|e| sock_err("cannot set the group of", e.into()))?;
    }
    rustix::net::listen(&fd, 128).map_err(|e| sock_err("cannot listen on", e.into()))?;
    Ok(fd)
}

/// One lane: its epoll set with the wake eventfd in it, and an empty registry.
fn new_lane(settings: &Settings) -> Result<Arc<Lane>, StartError> {
    let fwd_epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
        .map_err(|e| StartError::Os("epoll_create", e.into()))?;
    let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| StartError::Os("eventfd", e.into()))?;
    epoll::add(
        &fwd_epoll,
        &wake,
        epoll::EventData::new_u64(Token::Wake.into_u64()),
        epoll::EventFlags::IN,
    )
    .map_err(|e| StartError::Os("epoll_ctl", e.into()))?;
    let mut registry = Registry::new(settings.limits);
    for (sw, n) in &settings.switch_threads {
        // In range: the settings checked it.
        let _ = registry.set_threads(sw, *n);
    }
    let state = LaneState::new(registry);
    Ok(Arc::new(Lane::new(state, fwd_epoll, wake)))
}

/// Runs the daemon until `stop` is set (SIGINT/SIGTERM in the binary); when `reload` is
/// set (SIGHUP), the config file is read again and its port declarations applied.
/// Raises the soft limit on open descriptors to the hard one: each client costs a few
/// (its socket, a port's eventfds), and Linux's default soft limit of 1024 is below what
/// `--max-clients` allows.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current < l.maximum {
        let was = l.current;
        l.current = l.maximum;
        match setrlimit(Resource::Nofile, l) {
            Ok(()) => tracing::debug!(from = ?was, to = ?l.current, "raised RLIMIT_NOFILE"),
            Err(e) => tracing::debug!("cannot raise RLIMIT_NOFILE: {e}"),
        }
    }
}

pub fn run(
    mut settings: Settings,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    set_verbosity: SetVerbosity,
) -> Result<(), StartError> {
    settings.seed_fdb();
    raise_fd_limit();
    let metrics_listener = settings
        .metrics
        .as_ref()
        .map(|a| {
            crate::metrics::http::bind(a, settings.socket_mode, settings.socket_group.as_deref())
        })
        .transpose()?;
    let listener = listen(
        &settings.socket,
        settings.socket_mode,
        settings.socket_group.as_deref(),
    )?;
    let busy = Duration::from_micros(settings.busy_poll_us);
    // `--cpus auto`: the CPUs chosen are the threads' while they are busy (shown by
    // `vale-ctl settings`); an explicit list pins them for good.
    let mut auto = false;
    if settings.cpus.is_empty() && settings.auto_pin {
        let allowed = crate::settings::allowed_cpus();
        if let Some(c) = crate::settings::auto_cpus(settings.threads.max(1), &allowed) {
            tracing::info!(cpus = ?c, allowed = allowed.len(), "forwarding threads pinned while busy (--no-pin to leave them to the scheduler)");
            settings.cpus = c;
            auto = true;
        }
    }
    let mut lanes = Vec::new();
    let mut threads = Vec::new();
    for t in 0..settings.threads.max(1) {
        let lane = new_lane(&settings)?;
        let l2 = lane.clone();
        let cpu = (!settings.cpus.is_empty()).then(|| settings.cpus[t % settings.cpus.len()]);
        threads.push(
            std::thread::Builder::new()
                .name(crate::lane::worker_name(t, 0))
                .spawn(move || {
                    let mut when_busy = None;
                    match cpu {
                        Some(c) if auto => {
                            when_busy = crate::lane::forward::PinWhenBusy::new(c);
                        }
                        Some(c) => pin(t, c),
                        None => {}
                    }
                    crate::lane::forward::run(l2, busy, when_busy)
                })
                .map_err(|e| StartError::Os("spawn forwarding thread", e))?,
        );
        lanes.push(lane);
    }
    // Helpers for switches of several threads: each lane gets enough for the largest.
    let helpers = settings
        .switch_threads
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(1)
        - 1;
    for (l, lane) in lanes.iter().enumerate() {
        lane.ensure_helpers(usize::from(helpers), l, lanes.len(), &settings.cpus, busy)
            .map_err(|e| StartError::Os("spawn forwarding helper", e))?;
    }
    tracing::info!(socket = %settings.socket.display(), threads = lanes.len(), cpus = ?settings.cpus, "valed listening");
    let mut ctl = Control::new(lanes.clone(), settings, set_verbosity)?;
    ctl.create_declared();
    let metrics = match metrics_listener {
        Some(l) => {
            let board = Arc::new(crate::metrics::Board::new(
                lanes.iter().map(|l| l.stats.clone()).collect(),
            ));
            ctl.share_metrics(board.clone());
            let s = ctl.settings();
            let conns = crate::metrics::http::Conns {
                total: s.metrics_max_connections,
                per_peer: s.metrics_max_connections_per_client,
            };
            let server = crate::metrics::http::serve(l, board, conns)?;
            if let Some(a) = &ctl.settings().metrics {
                tracing::info!(metrics = %a, "serving GET /metrics");
            }
            Some(server)
        }
        None => None,
    };
    // The control socket has listened since `listen`: a client that connects now is
    // queued and served as soon as the loop below starts.
    crate::notify::notify(&format!(
        "READY=1\nSTATUS=listening on {}",
        ctl.settings().socket.display()
    ));
    let result = ctl.serve(&listener, &stop, &reload);
    crate::notify::notify("STOPPING=1");
    drop(metrics);
    tracing::info!(
        "shutting down: closing {} client connections",
        ctl.connections()
    );
    // Host ports first: their threads stop, TAP interfaces disappear.
    ctl.remove_all_hosts();
    for l in &lanes {
        l.stop.store(true, Ordering::Release);
        l.wake_forwarder();
    }
    for l in &lanes {
        l.join_helpers();
    }
    for t in threads {
        let _ = t.join();
    }
    let socket = ctl.settings().socket.clone();
    drop(ctl); // clients see the connection close
    let _ = crate::sys::remove_socket_file(&socket);
    let _ = std::fs::remove_dir(Settings::private_dir_of(&socket));
    result
}

/// Pins the calling forwarding thread to one CPU (checked against the affinity mask at
/// startup, so a failure here is unusual: it is logged, and the thread runs unpinned).
pub(crate) fn pin(thread: usize, cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    match rustix::thread::sched_setaffinity(None, &set) {
        Ok(()) => tracing::debug!(thread, cpu, "forwarding thread pinned"),
        Err(e) => tracing::warn!(thread, cpu, "cannot pin forwarding thread: {e}"),
    }
}
