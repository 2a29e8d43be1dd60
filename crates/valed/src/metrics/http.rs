//! The metrics server: `GET /metrics` over HTTP/1.1 on a TCP address or a unix socket,
//! one short-lived thread per connection and at most [`Conns::total`] at once, each with
//! a deadline for reading its request and one for taking its reply. A slow or hostile
//! scraper holds one of those threads for a few seconds at most, never the daemon.

use super::Board;
use crate::error::StartError;
use crate::settings::MetricsAddr;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How many connections are served at once (`--metrics-max-connections`,
/// `--metrics-max-connections-per-client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conns {
    /// In all; more are answered 503 and closed.
    pub total: usize,
    /// Of those, what one peer (an IP address; on a unix socket, a uid) may hold, so
    /// that a client that sends its request a byte at a time cannot take every slot
    /// from the scrapers: a Prometheus server scrapes a target one request at a time.
    pub per_peer: usize,
}
/// The longest request head (request line and headers) read.
pub const MAX_REQUEST: usize = 8192;
/// How long a client has to send its request, and to take its reply.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// A bound metrics address, not served yet (bound first, so that an address in use
/// stops valed before anything else starts).
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// A running metrics server: it stops, and removes its socket file, when dropped.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` (a unix socket gets the control socket's `mode` and `group`).
pub fn bind(addr: &MetricsAddr, mode: u32, group: Option<&str>) -> Result<Listener, StartError> {
    let err = |source: std::io::Error| StartError::Metrics {
        addr: addr.to_string(),
        source,
    };
    let listener = match addr {
        MetricsAddr::Tcp(a) => Listener::Tcp(TcpListener::bind(a).map_err(err)?),
        MetricsAddr::Unix(p) => {
            if p.exists() {
                // A live server answers; a stale file from a crash does not.
                if UnixStream::connect(p).is_ok() {
                    return Err(err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another server is listening there",
                    )));
                }
                crate::sys::remove_socket_file(p).map_err(err)?;
            }
            let l = UnixListener::bind(p).map_err(err)?;
            rustix::fs::chmod(p, rustix::fs::Mode::from_raw_mode(mode))
                .map_err(|e| err(e.into()))?;
            if let Some(g) = group {
                let g = crate::settings::group_id(g)
                    .map_err(|e| err(std::io::Error::other(e.to_string())))?;
                rustix::fs::chown(p, None, Some(rustix::process::Gid::from_raw(g)))
                    .map_err(|e| err(e.into()))?;
            }
            Listener::Unix(l, p.clone())
        }
    };
    match &listener {
        Listener::Tcp(l) => l.set_nonblocking(true),
        Listener::Unix(l, _) => l.set_nonblocking(true),
    }
    .map_err(err)?;
    Ok(listener)
}

/// Serves `board` on `listener` from a thread of its own, `conns` at once.
pub fn serve(listener: Listener, board: Arc<Board>, conns: Conns) -> Result<Server, StartError> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("vale-metrics".into())
        .spawn(move || accept_loop(listener, board, conns, &s2))
        .map_err(|e| StartError::Os("spawn metrics thread", e))?;
    Ok(Server {
        stop,
        thread: Some(thread),
    })
}

/// Who a connection is from, for [`Conns::per_peer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Peer {
    Ip(std::net::IpAddr),
    Uid(u32),
}

/// The connections being served, in all and by peer, and how many may be.
struct Active {
    most: Conns,
    total: usize,
    by_peer: std::collections::HashMap<Peer, usize>,
}

impl Active {
    /// Takes a slot for `peer`, or says why there is none.
    fn take(&mut self, peer: &Option<Peer>) -> Result<(), &'static str> {
        if self.total >= self.most.total {
            return Err("too many scrapes at once\n");
        }
        if let Some(p) = peer {
            let n = self.by_peer.entry(p.clone()).or_default();
            if *n >= self.most.per_peer {
                return Err("too many scrapes at once from this client\n");
            }
            *n += 1;
        }
        self.total += 1;
        Ok(())
    }

    fn give_back(&mut self, peer: &Option<Peer>) {
        self.total -= 1;
        if let Some(p) = peer {
            if let Some(n) = self.by_peer.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.by_peer.remove(p);
                }
            }
        }
    }
}

fn accept_loop(listener: Listener, board: Arc<Board>, most: Conns, stop: &AtomicBool) {
    let active = Arc::new(std::sync::Mutex::new(Active {
        most,
        total: 0,
        by_peer: Default::default(),
    }));
    let mut accept_errors = 0u32;
    while !stop.load(Ordering::Acquire) {
        let fd = match &listener {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        };
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        let tick = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 200_000_000,
        };
        if !matches!(rustix::event::poll(&mut fds, Some(&tick)), Ok(n) if n > 0) {
            continue;
        }
        let conn = match &listener {
            Listener::Tcp(l) => l
                .accept()
                .map(|(s, a)| (Stream::Tcp(s), Some(Peer::Ip(a.ip())))),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| {
                let uid = crate::sys::peer_cred(&s).map(|c| Peer::Uid(c.1));
                (Stream::Unix(s), uid)
            }),
        };
        let (mut conn, peer) = match conn {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // Out of descriptors, most likely: logged once per run of failures, and
                // paced so that the loop does not spin on it.
                if accept_errors == 0 {
                    tracing::warn!("metrics: cannot accept a connection: {e}");
                }
                accept_errors = accept_errors.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        accept_errors = 0;
        if conn.set_nonblocking(false).is_err() {
            continue;
        }
        let slot = active.lock().unwrap_or_else(|p| p.into_inner()).take(&peer);
        if let Err(why) = slot {
            // Best effort, without waiting: the client may not be reading.
            let _ = conn.set_write_timeout(Some(Duration::from_millis(100)));
            let _ = conn.write_all(&response(503, why, &[]));
            continue;
        }
        let (b, a, p) = (board.clone(), active.clone(), peer.clone());
        let spawned = std::thread::Builder::new()
            .name("vale-metrics-conn".into())
            .spawn(move || {
                handle(&mut conn, &b);
                a.lock().unwrap_or_else(|p| p.into_inner()).give_back(&p);
            });
        if spawned.is_err() {
            active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .give_back(&peer);
        }
    }
    if let Listener::Unix(_, p) = &listener {
        let _ = crate::sys::remove_socket_file(p);
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }
    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What became of a request head.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Complete: its method and path.
    Request { method: String, path: String },
    /// Longer than [`MAX_REQUEST`].
    TooLong,
    /// Not finished by the deadline (or the client stopped sending).
    Timeout,
    /// Not HTTP.
    Bad,
}

/// Reads a request head within [`READ_DEADLINE`] in all (not per read: a client that
/// sends a byte a second gets no more time than one that sends nothing).
fn read_head(s: &mut Stream) -> Head {
    let start = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_end(&buf) {
            return parse_head(&buf[..end]);
        }
        if buf.len() > MAX_REQUEST {
            return Head::TooLong;
        }
        let left = READ_DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return Head::Timeout;
        }
        match s.read(&mut chunk) {
            Ok(0) => {
                return if buf.is_empty() {
                    Head::Timeout
                } else {
                    Head::Bad
                };
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Head::Timeout,
        }
    }
}

/// Where the head ends (the blank line), if it has.
fn find_end(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = b.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Head {
    let Ok(text) = std::str::from_utf8(head) else {
        return Head::Bad;
    };
    let line = text.lines().next().unwrap_or("");
    let mut f = line.split(' ');
    match (f.next(), f.next(), f.next(), f.next()) {
        (Some(m), Some(target), Some(v), None)
            if !m.is_empty() && v.starts_with("HTTP/1.") && target.starts_with('/') =>
        {
            let path = target.split('?').next().unwrap_or(target);
            Head::Request {
                method: m.to_string(),
                path: path.to_string(),
            }
        }
        _ => Head::Bad,
    }
}

fn response(code: u16, body: &str, extra: &[&str]) -> Vec<u8> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let ctype = if code == 200 {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut r = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.push_str(body);
    r.into_bytes()
}

/// Writes all of `b` within [`WRITE_DEADLINE`] in all.
fn write_within(s: &mut Stream, b: &[u8]) {
    let start = Instant::now();
    let mut done = 0;
    while done < b.len() {
        let left = WRITE_DEADLINE.saturating_sub(start.elapsed());
        if left.is_zero() || s.set_write_timeout(Some(left)).is_err() {
            return;
        }
        match s.write(&b[done..]) {
            Ok(0) => return,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// One connection: one request, one answer, then closed.
fn handle(s: &mut Stream, board: &Board) {
    let reply = match read_head(s) {
        Head::Request { method, path } => match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/metrics") => {
                let mut r = response(200, &board.render(), &[]);
                if method == "HEAD" {
                    let end = find_end(&r).map_or(r.len(), |e| e + 4);
                    r.truncate(end);
                }
                r
            }
            ("GET" | "HEAD", _) => response(404, "valed serves only /metrics\n", &[]),
            _ => response(
                405,
                "only GET (and HEAD) of /metrics\n",
                &["Allow: GET, HEAD"],
            ),
        },
        Head::TooLong => response(
            431,
            &format!("request head over {MAX_REQUEST} bytes\n"),
            &[],
        ),
        Head::Timeout => response(
            408,
            &format!("no whole request within {} s\n", READ_DEADLINE.as_secs()),
            &[],
        ),
        Head::Bad => response(400, "not an HTTP/1.x request\n", &[]),
    };
    write_within(s, &reply);
    // Closing with unread input would reset a TCP connection, and the client could lose
    // the answer (a request refused as too long is still being sent): say we are done,
    // then read and discard a little of what is left, briefly.
    s.shutdown_write();
    let until = Instant::now() + Duration::from_millis(500);
    let mut sink = [0u8; 4096];
    for _ in 0..64 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request over a real socket pair, answered by `handle`.
    fn ask(req: &[u8]) -> String {
        let (a, b) = UnixStream::pair().unwrap();
        let board = Board::new(Vec::new());
        let t = std::thread::spawn(move || handle(&mut Stream::Unix(b), &board));
        let mut a = a;
        a.write_all(req).unwrap();
        let mut out = String::new();
        a.read_to_string(&mut out).unwrap();
        t.join().unwrap();
        out
    }

    #[test]
    fn metrics_other_paths_and_methods() {
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("\r\n\r\n# HELP vale_build_info "), "{ok}");
        let body = ok.split_once("\r\n\r\n").unwrap().1;
        assert!(ok.contains(&format!("Content-Length: {}\r\n", body.len())));
        let q = ask(b"GET /metrics?x=1 HTTP/1.0\n\n");
        assert!(q.starts_with("HTTP/1.1 200"), "{q}");
        let head = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(ask(b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        let post = ask(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"));
        assert!(ask(b"hello\r\n\r\n").starts_with("HTTP/1.1 400"));
        assert!(ask(b"GET metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));
        let mut huge = b"GET /".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 3 * MAX_REQUEST));
        assert!(ask(&huge).starts_with("HTTP/1.1 431"));
    }

    #[test]
    fn a_half_request_times_out() {
        let (a, b) = UnixStream::pair().unwrap();
        let t0 = Instant::now();
        let t = std::thread::spawn(move || handle(&mut Stream::Unix(b), &Board::new(Vec::new())));
        let mut a = a;
        a.write_all(b"GET /metr").unwrap();
        let mut out = String::new();
        a.read_to_string(&mut out).unwrap();
        t.join().unwrap();
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        let took = t0.elapsed();
        assert!(
            took >= READ_DEADLINE && took < READ_DEADLINE * 2,
            "{took:?}"
        );
    }
}
