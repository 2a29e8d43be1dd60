//! `SOCK_SEQPACKET` messages with file descriptors, and where the daemon's socket is.

use crate::Error;
use crate::proto::{MAX_MSG, Request, Response};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 8;

/// Where `valed` listens: `$VALE_SOCKET`, else `/run/vale/valed.sock` for root, else
/// `$XDG_RUNTIME_DIR/vale/valed.sock` (or `/tmp/vale-$UID/valed.sock` without one).
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VALE_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        return PathBuf::from("/run/vale/valed.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(d) => PathBuf::from(d).join("vale/valed.sock"),
        None => PathBuf::from(format!("/tmp/vale-{}/valed.sock", uid.as_raw())),
    }
}

/// Connects to the daemon, with an error that says how to start it.
pub fn connect(path: &Path) -> Result<OwnedFd, Error> {
    let not_running = |e: std::io::Error| Error::NotRunning {
        path: path.to_path_buf(),
        source: e,
    };
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::Io("socket", e.into()))?;
    let addr = SocketAddrUnix::new(path).map_err(|e| not_running(e.into()))?;
    rustix::net::connect(&fd, &addr).map_err(|e| not_running(e.into()))?;
    fallback_dir_is_ours(path)?;
    Ok(fd)
}

/// The per-user fallback in /tmp (no `$VALE_SOCKET`, no `$XDG_RUNTIME_DIR`) is a name
/// anyone could have taken first: its directory must be this user's (or root's) and
/// closed to others' writes, else another user could be serving the socket, and its
/// memory and answers are not to be used. A socket named any other way is the user's
/// choice (a shared daemon of another user, say).
fn fallback_dir_is_ours(path: &Path) -> Result<(), Error> {
    let me = rustix::process::geteuid();
    if me.is_root() || !path.starts_with("/tmp") || path != default_socket_path() {
        return Ok(());
    }
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let st = rustix::fs::stat(dir).map_err(|e| Error::Io("stat", e.into()))?;
    if (st.st_uid == me.as_raw() || st.st_uid == 0) && st.st_mode & 0o022 == 0 {
        return Ok(());
    }
    Err(Error::Io(
        "connect",
        std::io::Error::other(format!(
            "{} belongs to uid {} (mode {:o}), so another user may be serving {}: remove it, or set VALE_SOCKET or XDG_RUNTIME_DIR",
            dir.display(),
            st.st_uid,
            st.st_mode & 0o7777,
            path.display()
        )),
    ))
}

/// Sends one message with optional descriptors.
pub fn send(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many descriptors for one message",
        ));
    }
    let n = rustix::net::sendmsg(
        fd,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n != bytes.len() {
        return Err(std::io::Error::other("short send"));
    }
    Ok(())
}

/// Why [`recv`] failed when the message was longer than its buffer (see [`is_too_long`]).
#[derive(Debug)]
struct TooLong;

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("message too long")
    }
}

impl std::error::Error for TooLong {}

/// Whether `e` is [`recv`]'s error for a message longer than its buffer (the rest of the
/// message is gone; the connection itself is fine and may be answered).
pub fn is_too_long(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooLong>())
}

/// Receives one message into `buf`; returns its length (0 = peer closed) and any
/// descriptors that came with it. A message longer than `buf` is an error
/// ([`is_too_long`]), its descriptors closed.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        fd,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if msg.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            TooLong,
        ));
    }
    Ok((msg.bytes, fds))
}

/// One request, one response; a reply that comes in pages (`list`, `stats`, `fdb`) is
/// asked for page by page and handed back whole, as one response (see
/// [`crate::proto::Page`]).
pub fn call(fd: &impl AsFd, req: &Request) -> Result<(Response, Vec<OwnedFd>), Error> {
    let mut buf = vec![0u8; MAX_MSG];
    let Some(first) = req.paged(None) else {
        return call_one(fd.as_fd(), req, &mut buf);
    };
    let (mut whole, _) = call_one(fd.as_fd(), &first, &mut buf)?;
    while let Some(after) = whole.next_page().map(str::to_owned) {
        let Some(next) = req.paged(Some(after.clone())) else {
            break;
        };
        let (page, _) = call_one(fd.as_fd(), &next, &mut buf)?;
        if let Response::Error { .. } = page {
            return Ok((page, Vec::new()));
        }
        if page.next_page() == Some(after.as_str()) {
            return Err(Error::Protocol(format!(
                "valed sent the page after `{after}` again"
            )));
        }
        whole.append(page).map_err(Error::Protocol)?;
    }
    Ok((whole, Vec::new()))
}

/// One message out, one back.
fn call_one(
    fd: BorrowedFd<'_>,
    req: &Request,
    buf: &mut [u8],
) -> Result<(Response, Vec<OwnedFd>), Error> {
    let bytes = serde_json::to_vec(req).map_err(|e| Error::Protocol(e.to_string()))?;
    if let Err(e) = send(fd, &bytes, &[]) {
        // valed may have turned this connection away (too many clients) with a reason
        // waiting in the socket: that is the answer. (Only once it hung up: then the
        // read cannot block.)
        let hung_up = e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error());
        if let Some(Ok((n, _))) = hung_up.then(|| recv(fd, buf)) {
            if let Ok(resp @ Response::Error { .. }) = serde_json::from_slice(&buf[..n]) {
                return Ok((resp, Vec::new()));
            }
        }
        return Err(Error::Io("send to valed", e));
    }
    let (n, fds) = recv(fd, buf).map_err(|e| Error::Io("receive from valed", e))?;
    if n == 0 {
        return Err(Error::Disconnected);
    }
    let resp: Response =
        serde_json::from_slice(&buf[..n]).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok((resp, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{PortStats, Request, Response};

    fn row(name: &str) -> PortStats {
        PortStats {
            name: name.into(),
            switch: "vale0".into(),
            index: 0,
            counters: Default::default(),
        }
    }

    /// A daemon on the other end of a socket pair that answers `pages` in turn, and
    /// what it was asked.
    fn serve(pages: Vec<Response>) -> (OwnedFd, std::thread::JoinHandle<Vec<Request>>) {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let t = std::thread::spawn(move || {
            let mut asked = Vec::new();
            let mut buf = vec![0u8; MAX_MSG];
            for p in pages {
                let (n, _) = recv(b.as_fd(), &mut buf).unwrap();
                asked.push(serde_json::from_slice(&buf[..n]).unwrap());
                send(b.as_fd(), &serde_json::to_vec(&p).unwrap(), &[]).unwrap();
            }
            asked
        });
        (a, t)
    }

    #[test]
    fn call_asks_for_every_page_and_returns_the_whole_reply() {
        let page = |names: &[&str], next: Option<&str>| Response::Stats {
            ports: names.iter().map(|n| row(n)).collect(),
            next: next.map(String::from),
        };
        let (conn, server) = serve(vec![
            page(&["vale0:a", "vale0:b"], Some("c1")),
            page(&["vale0:c"], Some("c2")),
            page(&["vale0:d"], None),
        ]);
        let req = Request::Stats {
            port: None,
            page: None,
        };
        let (r, fds) = call(&conn, &req).unwrap();
        assert!(fds.is_empty());
        assert_eq!(r, page(&["vale0:a", "vale0:b", "vale0:c", "vale0:d"], None));
        let afters: Vec<_> = server
            .join()
            .unwrap()
            .into_iter()
            .map(|r| match r {
                Request::Stats { page: Some(p), .. } => {
                    assert_eq!(p.version, crate::proto::VERSION);
                    p.after
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(afters, [None, Some("c1".into()), Some("c2".into())]);
    }

    #[test]
    fn an_error_or_a_repeated_page_ends_the_call() {
        let more = Response::Stats {
            ports: vec![row("vale0:a")],
            next: Some("c1".into()),
        };
        let gone = Response::Error {
            kind: crate::proto::ErrorKind::Version,
            message: "no".into(),
        };
        let (conn, _server) = serve(vec![more.clone(), gone.clone()]);
        let req = Request::Stats {
            port: None,
            page: None,
        };
        let (r, _) = call(&conn, &req).unwrap();
        assert_eq!(r, gone, "an error on a later page is the answer");
        let (conn, _server) = serve(vec![more.clone(), more]);
        let e = call(&conn, &req).unwrap_err().to_string();
        assert!(e.contains("page after `c1` again"), "{e}");
    }
}
