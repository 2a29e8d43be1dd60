//! Client connections: accepting them, reading one request at a time, replying (with
//! descriptors), and releasing the port a connection held when it closes.
//!
//! Sockets are non-blocking, so no client holds up the control thread. A reply is one
//! `SOCK_SEQPACKET` message, sent whole or not at all (no partial sends); one the
//! socket has no room for yet waits in its connection, which then reads no further
//! request until the reply is out (the socket says when it is writable). So a client
//! that does not read costs one reply's memory, never more, and only it waits.

use super::{Control, CtlToken};
use crate::error::CtlError;
use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use rustix::net::SocketFlags;
use std::collections::HashMap;
use vale::proto::{self, Request, Response};
use vale_switch::PortKey;

/// A port a connection holds open: the lane it lives on, and its key there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub lane: usize,
    pub key: PortKey,
    /// This hold's id among the port's holds (its notify eventfd).
    pub hold: u64,
    /// Spare buffers it was given, `(first, count)`: back to the port's reserve when it
    /// lets go.
    pub extra: Option<(u32, u32)>,
    /// Whether it holds the port exclusively.
    pub exclusive: bool,
    /// The netmap pipe endpoint it is, if it is one.
    pub pipe: Option<vale_abi::PipeEnd>,
}

pub struct Conn {
    fd: OwnedFd,
    /// The peer's user id (SO_PEERCRED), if the kernel told us.
    pub uid: Option<u32>,
    /// The peer's groups, primary and supplementary, when a shared switch names a group
    /// (read once, when it connects).
    pub gids: Vec<u32>,
    /// The port this connection holds open.
    pub port: Option<Held>,
    /// When it connected, until its first request (then `None`): a connection that
    /// stays silent is closed after the handshake timeout.
    pub silent_since: Option<std::time::Instant>,
    /// Largest message its socket sends (a message must fit in the send buffer whole).
    pub max_msg: usize,
    /// Bytes of a page of a paged reply: half the send buffer at most, so that a page
    /// still unread leaves room for the next.
    pub page_bytes: usize,
    /// The reply waiting for room in the socket.
    pending: Option<Outgoing>,
}

/// Replies longer than this that the socket refuses as too large are answered with an
/// error saying so (itself shorter).
const TOO_LARGE_LEN: usize = 512;

/// A reply encoded, with its descriptors.
struct Outgoing {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Conn {
    /// Host ports reach the host's network (a TAP in any namespace, any interface in
    /// promiscuous mode) and monitors see other clients' traffic: only root or the
    /// daemon's own user may use them, whoever else the socket's mode lets in.
    pub fn may_touch_host(&self) -> bool {
        let me = rustix::process::geteuid().as_raw();
        self.uid.is_some_and(|u| u == 0 || u == me)
    }
}

/// Open connections by id.
#[derive(Default)]
pub struct Conns {
    by_id: HashMap<u64, Conn>,
    next_id: u64,
}

impl Conns {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn get(&self, id: u64) -> Option<&Conn> {
        self.by_id.get(&id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.by_id.get_mut(&id)
    }
}

/// A reply: the response and the descriptors that go with it (an opened port's).
pub struct Reply {
    pub resp: Response,
    pub fds: Vec<OwnedFd>,
}

impl From<Response> for Reply {
    fn from(resp: Response) -> Reply {
        Reply {
            resp,
            fds: Vec::new(),
        }
    }
}

impl Control {
    /// The listener joins the control thread's epoll set (at start, and back from a
    /// pause).
    pub(super) fn watch_listener(&self, listener: &OwnedFd) -> rustix::io::Result<()> {
        epoll::add(
            &self.ep,
            listener,
            epoll::EventData::new_u64(CtlToken::Listener.into_u64()),
            epoll::EventFlags::IN,
        )
    }

    /// Out of descriptors with none in reserve: the listener leaves the control
    /// thread's set, so that clients waiting on it do not keep the thread spinning.
    fn pause_listener(&mut self, listener: &OwnedFd) {
        if !self.listener_paused && epoll::delete(&self.ep, listener).is_ok() {
            self.listener_paused = true;
            tracing::warn!(
                "out of file descriptors with none in reserve: not accepting clients until one is free"
            );
        }
    }

    /// From the control loop: a paused listener comes back once a descriptor can be
    /// held in reserve again.
    pub(super) fn resume_listener(&mut self, listener: &OwnedFd) {
        if !self.listener_paused {
            return;
        }
        if self.spare.is_none() {
            self.spare = super::spare_fd();
        }
        if self.spare.is_some() && self.watch_listener(listener).is_ok() {
            self.listener_paused = false;
            tracing::info!("accepting clients again");
        }
    }

    pub(super) fn accept(&mut self, listener: &OwnedFd) {
        loop {
            match rustix::net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
                Ok(fd) => {
                    crate::sys::closer::refuse_rights(&fd);
                    let cred = crate::sys::peer_cred(&fd);
                    let uid = cred.map(|(_, uid, _)| uid);
                    if let Some(why) = self.over_client_limit(uid) {
                        turn_away(&fd, &why);
                        crate::sys::closer::discard(vec![fd]);
                        continue;
                    }
                    self.conns.next_id += 1;
                    let id = self.conns.next_id;
                    if let Err(e) = epoll::add(
                        &self.ep,
                        &fd,
                        epoll::EventData::new_u64(CtlToken::Conn(id).into_u64()),
                        epoll::EventFlags::IN,
                    ) {
                        tracing::warn!(error = %e, "cannot watch a new connection");
                        continue;
                    }
                    tracing::debug!(conn = id, ?uid, "client connected");
                    let gids = match cred {
                        Some((_, _, gid))
                            if self.settings.shared.iter().any(|s| s.group.is_some()) =>
                        {
                            groups_of(&fd, gid)
                        }
                        _ => Vec::new(),
                    };
                    // Linux refuses (EMSGSIZE) a unix datagram longer than the send
                    // buffer less 32 bytes.
                    let sndbuf = rustix::net::sockopt::socket_send_buffer_size(&fd)
                        .unwrap_or(proto::PAGE_BYTES * 2);
                    let max_msg = sndbuf.saturating_sub(64).min(proto::MAX_MSG);
                    self.conns.by_id.insert(
                        id,
                        Conn {
                            fd,
                            uid,
                            gids,
                            port: None,
                            silent_since: Some(std::time::Instant::now()),
                            max_msg,
                            page_bytes: (sndbuf / 2).min(proto::PAGE_BYTES),
                            pending: None,
                        },
                    );
                }
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::CONNABORTED) => continue,
                Err(e @ (rustix::io::Errno::MFILE | rustix::io::Errno::NFILE)) => {
                    // Out of descriptors: free the reserve, take the connection and turn
                    // it away with a reason, take the reserve back. The listener is then
                    // no longer readable for it, so this thread does not spin.
                    let now = std::time::Instant::now();
                    if self
                        .emfile_logged
                        .is_none_or(|t| now.duration_since(t).as_secs() >= 1)
                    {
                        self.emfile_logged = Some(now);
                        tracing::warn!(
                            error = %e,
                            clients = self.conns.len(),
                            "out of file descriptors: turning clients away (raise the limit, or --max-clients)"
                        );
                    }
                    drop(self.spare.take());
                    // Non-blocking, as every client's: a client that sends nothing (or
                    // keeps its socket full) must not hold the control thread here.
                    let took = rustix::net::accept_with(
                        listener,
                        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                    );
                    if let Ok(fd) = &took {
                        crate::sys::closer::refuse_rights(fd);
                        turn_away(fd, "valed is out of file descriptors");
                    }
                    let turned_away = took.is_ok();
                    // Closed here, not by the closer thread: the reserve goes back into
                    // its place at once (closing a socket that holds nothing of ours
                    // cannot wait). Were it closed later, the next client accepted
                    // would take that place and leave no reserve.
                    drop(took);
                    self.spare = super::spare_fd();
                    if self.spare.is_none() {
                        // No reserve (something else took its place): the listener is
                        // readable for as long as clients wait, and every accept fails.
                        // It rests until a descriptor is free again (`resume_listener`).
                        self.pause_listener(listener);
                        return;
                    }
                    // Linux reports EMFILE before it looks for a pending connection: if
                    // there was none, stop here (the listener is not readable).
                    if !turned_away {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    /// Why a new connection from `uid` is refused, if it is.
    fn over_client_limit(&self, uid: Option<u32>) -> Option<String> {
        let (total, per_uid) = (self.settings.max_clients, self.settings.max_clients_per_uid);
        if self.conns.len() >= total {
            return Some(format!(
                "valed has {} clients, its limit (--max-clients {total})",
                self.conns.len()
            ));
        }
        let me = rustix::process::geteuid().as_raw();
        // A peer whose uid the kernel would not say counts as one more unprivileged
        // user (its connections share one bucket), not as unlimited.
        let uid = uid.unwrap_or(u32::MAX);
        if uid == 0 || uid == me {
            return None;
        }
        let mine = self
            .conns
            .by_id
            .values()
            .filter(|c| c.uid.unwrap_or(u32::MAX) == uid)
            .count();
        (mine >= per_uid).then(|| {
            format!("uid {uid} has {mine} connections to valed, its limit (--max-clients-per-uid {per_uid})")
        })
    }

    /// Connection `id` is readable (a request) or, while a reply waits, writable.
    pub(super) fn ready(&mut self, id: u64, buf: &mut [u8]) {
        match self.conns.get_mut(id).and_then(|c| c.pending.take()) {
            Some(out) => self.send(id, out, true),
            None => self.readable(id, buf),
        }
    }

    fn readable(&mut self, id: u64, buf: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        conn.silent_since = None;
        let n = match vale::sock::recv(conn.fd.as_fd(), buf) {
            // A message of no bytes reads as the end of the connection: told apart by
            // whether the peer hung up.
            Ok((0, fds)) if !hung_up(&conn.fd) => {
                crate::sys::closer::discard(fds);
                0
            }
            Ok((0, _)) => return self.disconnect(id),
            Ok((n, fds)) => {
                // Clients send no descriptors; any they do send are closed off this
                // thread (closing one can block: see sys::closer).
                crate::sys::closer::discard(fds);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            // The kernel dropped the rest of it; the connection is fine: say why.
            Err(e) if vale::sock::is_too_long(&e) => usize::MAX,
            Err(e) => {
                tracing::debug!(conn = id, "receive failed: {e}");
                return self.disconnect(id);
            }
        };
        let reply = match buf.get(..n).map(serde_json::from_slice::<Request>) {
            Some(Ok(req)) => self.handle(id, req),
            Some(Err(e)) => Err(CtlError::Malformed {
                len: n,
                why: brief(&e.to_string()),
            }),
            None => Err(CtlError::TooLong { max: buf.len() }),
        };
        let reply = reply.unwrap_or_else(|e| Reply::from(Response::from(e)));
        match serde_json::to_vec(&reply.resp) {
            Ok(bytes) => self.send(
                id,
                Outgoing {
                    bytes,
                    fds: reply.fds,
                },
                false,
            ),
            Err(e) => tracing::error!(error = %e, "cannot encode a response"),
        }
    }

    /// Sends `out`, or keeps it until the socket has room, reading nothing more from the
    /// connection meanwhile. `parked`: it was kept before (the connection waits for
    /// room, not for requests).
    fn send(&mut self, id: u64, out: Outgoing, parked: bool) {
        let Some(conn) = self.conns.by_id.get_mut(&id) else {
            return;
        };
        let borrowed: Vec<_> = out.fds.iter().map(|f| f.as_fd()).collect();
        let sent = vale::sock::send(conn.fd.as_fd(), &out.bytes, &borrowed);
        drop(borrowed);
        let watch = match sent {
            Ok(()) => parked.then_some(epoll::EventFlags::IN),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                conn.pending = Some(out);
                if !parked {
                    tracing::debug!(conn = id, "client is not reading: its reply waits");
                }
                (!parked).then_some(epoll::EventFlags::OUT)
            }
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::MSGSIZE.raw_os_error())
                    && out.bytes.len() > TOO_LARGE_LEN =>
            {
                let (len, max) = (out.bytes.len(), conn.max_msg);
                let resp = Response::from(CtlError::Internal(format!(
                    "the reply is {len} bytes, more than this connection's socket sends in \
                     one message ({max})"
                )));
                if let Ok(bytes) = serde_json::to_vec(&resp) {
                    let fds = Vec::new();
                    return self.send(id, Outgoing { bytes, fds }, parked);
                }
                return self.disconnect(id);
            }
            Err(e) => {
                tracing::debug!(conn = id, "reply failed: {e}");
                return self.disconnect(id);
            }
        };
        if let Some(flags) = watch {
            let data = epoll::EventData::new_u64(CtlToken::Conn(id).into_u64());
            if let Err(e) = epoll::modify(&self.ep, &conn.fd, data, flags) {
                tracing::warn!(conn = id, error = %e, "cannot watch a connection");
                self.disconnect(id);
            }
        }
    }

    /// Closes connections that said nothing within the handshake timeout of connecting
    /// (each takes a place under the client limits), telling them why.
    pub(super) fn close_silent(&mut self) {
        let t = self.settings.handshake_timeout_s;
        if t == 0 {
            return;
        }
        let limit = std::time::Duration::from_secs(t);
        let silent: Vec<u64> = self
            .conns
            .by_id
            .iter()
            .filter(|(_, c)| c.silent_since.is_some_and(|s| s.elapsed() >= limit))
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            if let Some(c) = self.conns.by_id.get(&id) {
                tracing::debug!(conn = id, uid = ?c.uid, "closing a connection silent for {t} s");
                turn_away(
                    &c.fd,
                    &format!("no request within {t} s of connecting (valed --handshake-timeout-s)"),
                );
            }
            self.disconnect(id);
        }
    }

    fn disconnect(&mut self, id: u64) {
        let Some(conn) = self.conns.by_id.remove(&id) else {
            return;
        };
        tracing::debug!(conn = id, "client disconnected");
        if let Some(h) = conn.port {
            self.ports.release(h);
        }
        // Its queue may hold descriptors it sent: closed off this thread.
        crate::sys::closer::discard(vec![conn.fd]);
    }

    /// Whether connection `id`'s peer may use host ports and monitors.
    pub(super) fn may_touch_host(&self, id: u64) -> bool {
        self.conns.get(id).is_some_and(Conn::may_touch_host)
    }
}

/// Whether a connection's peer hung up (what a read of 0 bytes means, unless the peer
/// sent a message of none).
fn hung_up(fd: &OwnedFd) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut p = [PollFd::new(fd, PollFlags::RDHUP)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut p, Some(&now)) {
        Ok(n) if n > 0 => p[0]
            .revents()
            .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
        Ok(_) => false,
        Err(_) => true,
    }
}

/// The parser's message about a malformed request, short whatever the input: it quotes
/// the offending value whole (`invalid type: string "...", expected ...`), so a long one
/// keeps its start and the verdict at its end.
fn brief(why: &str) -> String {
    const KEEP: usize = 120;
    if why.len() <= 2 * KEEP {
        return why.to_string();
    }
    let mut head = KEEP;
    while !why.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = why.len() - KEEP;
    while !why.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}...{}", &why[..head], &why[tail..])
}

/// A peer's groups: `gid` and the supplementary ones the kernel recorded when it
/// connected (`SO_PEERGROUPS`: not looked up by pid, which another process may have
/// taken by the time valed looks).
fn groups_of(fd: &OwnedFd, gid: u32) -> Vec<u32> {
    let mut out = vec![gid];
    out.extend(crate::sys::peer_groups(fd).unwrap_or_default());
    out
}

/// Tells a connection it is refused (the error is what its first request reads back)
/// and drops it.
fn turn_away(fd: &OwnedFd, why: &str) {
    tracing::debug!("refused a connection: {why}");
    let resp = Response::Error {
        kind: vale::proto::ErrorKind::Limit,
        message: why.to_string(),
    };
    if let Ok(bytes) = serde_json::to_vec(&resp) {
        let _ = vale::sock::send(fd.as_fd(), &bytes, &[]);
    }
    // A request already sent is read and dropped: closing with it unread would reset
    // the connection and lose the reason before the client reads it.
    let mut buf = [0u8; 512];
    for _ in 0..16 {
        match vale::sock::recv(fd.as_fd(), &mut buf) {
            Ok((n, fds)) if n > 0 => crate::sys::closer::discard(fds),
            _ => break,
        }
    }
}
