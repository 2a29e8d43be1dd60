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
    Ok(fd)
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

/// Receives one message into `buf`; returns its length (0 = peer closed) and any
/// descriptors that came with it. A message longer than `buf` is an error.
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
        return Err(std::io::Error::other("message too long"));
    }
    Ok((msg.bytes, fds))
}

/// One request, one response.
pub fn call(fd: &impl AsFd, req: &Request) -> Result<(Response, Vec<OwnedFd>), Error> {
    let bytes = serde_json::to_vec(req).map_err(|e| Error::Protocol(e.to_string()))?;
    let mut buf = vec![0u8; MAX_MSG];
    if let Err(e) = send(fd.as_fd(), &bytes, &[]) {
        // valed may have turned this connection away (too many clients) with a reason
        // waiting in the socket: that is the answer. (Only once it hung up: then the
        // read cannot block.)
        let hung_up = e.raw_os_error() == Some(rustix::io::Errno::PIPE.raw_os_error());
        if let Some(Ok((n, _))) = hung_up.then(|| recv(fd.as_fd(), &mut buf)) {
            if let Ok(resp @ Response::Error { .. }) = serde_json::from_slice(&buf[..n]) {
                return Ok((resp, Vec::new()));
            }
        }
        return Err(Error::Io("send to valed", e));
    }
    let (n, fds) = recv(fd.as_fd(), &mut buf).map_err(|e| Error::Io("receive from valed", e))?;
    if n == 0 {
        return Err(Error::Disconnected);
    }
    let resp: Response =
        serde_json::from_slice(&buf[..n]).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok((resp, fds))
}
