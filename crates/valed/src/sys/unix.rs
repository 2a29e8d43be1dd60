//! Unix sockets for the control socket and QEMU ports, and interface names and indices
//! as the kernel sees them.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::io;

/// Removes the socket file at `path`, if there is one; any other kind of file there
/// is an error, and stays (valed never deletes what it did not make).
pub fn remove_socket_file(p: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(p),
        Ok(_) => Err(io::Error::other(format!(
            "{} exists and is not a socket",
            p.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A non-blocking unix socket of `kind` bound to `path`. A stale socket file there is
/// replaced; any other kind of file is an error (valed never deletes what it did not
/// make).
fn bound_unix(path: &str, kind: rustix::net::SocketType) -> io::Result<OwnedFd> {
    let p = std::path::Path::new(path);
    remove_socket_file(p)?;
    let fd = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        kind,
        rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &rustix::net::SocketAddrUnix::new(p)?)?;
    Ok(fd)
}

/// A unix datagram socket bound to `path` (see `bound_unix`).
pub fn dgram_bind(path: &str) -> io::Result<OwnedFd> {
    bound_unix(path, rustix::net::SocketType::DGRAM)
}

/// A unix stream socket listening at `path` (see `bound_unix`).
pub fn stream_listen(path: &str) -> io::Result<OwnedFd> {
    let fd = bound_unix(path, rustix::net::SocketType::STREAM)?;
    rustix::net::listen(&fd, 4)?;
    Ok(fd)
}

/// A unix seqpacket socket listening at `path` (see `bound_unix`), or with
/// `abstract_name` at that name in the abstract namespace (bound with its exact length,
/// as DPDK does).
pub fn seqpacket_listen(path: &str, abstract_name: bool) -> io::Result<OwnedFd> {
    let fd = if abstract_name {
        let fd = rustix::net::socket_with(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        let addr = rustix::net::SocketAddrUnix::new_abstract_name(path.as_bytes())?;
        rustix::net::bind(&fd, &addr)?;
        fd
    } else {
        bound_unix(path, rustix::net::SocketType::SEQPACKET)?
    };
    rustix::net::listen(&fd, 16)?;
    Ok(fd)
}

/// A non-blocking unix stream socket connected to `path`, without waiting: a peer that
/// listens but does not accept (a stopped VM, its queue full) is an error at once, not
/// a connect that blocks the caller until it accepts.
pub fn stream_connect(path: &str) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC | rustix::net::SocketFlags::NONBLOCK,
        None,
    )?;
    match rustix::net::connect(&fd, &rustix::net::SocketAddrUnix::new(path)?) {
        Ok(()) => Ok(fd),
        Err(rustix::io::Errno::AGAIN) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "it listens but does not accept connections (its queue is full)",
        )),
        Err(e) => Err(e.into()),
    }
}

/// [`stream_connect`], as a blocking std stream (for code that reads and writes it in
/// blocking calls once connected).
pub fn stream_connect_blocking(path: &str) -> io::Result<std::os::unix::net::UnixStream> {
    let fd = stream_connect(path)?;
    rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::empty())?;
    Ok(fd.into())
}

/// Whether `fd` becomes readable within `ms` milliseconds (negative: no limit).
pub fn readable_within(fd: BorrowedFd<'_>, ms: i32) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let ts = (ms >= 0).then(|| Timespec {
        tv_sec: (ms / 1000).into(),
        tv_nsec: ((ms % 1000) * 1_000_000).into(),
    });
    let mut p = [PollFd::new(&fd, PollFlags::IN)];
    matches!(rustix::event::poll(&mut p, ts.as_ref()), Ok(n) if n > 0)
        && p[0].revents().contains(PollFlags::IN)
}

/// An interface name the kernel would refuse.
#[derive(Debug, thiserror::Error)]
pub enum IfnameError {
    #[error("interface name `{}` must be 1 to {max} characters", name.escape_default())]
    Length { name: String, max: usize },
    #[error(
        "interface name `{}` may not be . or .. nor contain '/', ':', spaces or control characters",
        name.escape_default()
    )]
    Chars { name: String },
}

/// Interface names: what the kernel accepts (`dev_valid_name`), at most 15 bytes.
pub fn check_ifname(name: &str) -> Result<(), IfnameError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(IfnameError::Length {
            name: name.to_string(),
            max: libc::IFNAMSIZ - 1,
        });
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b <= b' ' || b >= 0x7f)
    {
        return Err(IfnameError::Chars {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// The interface's index in the daemon's network namespace, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    // SIOCGIFINDEX answers on any socket, for the namespace the socket was made in (the
    // daemon's), as glibc's if_nametoindex does it.
    let s = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ok()?;
    let i = rustix::net::netdevice::name_to_index(&s, name).ok()?;
    (i != 0).then_some(i)
}

/// The credentials of a unix socket's peer (`SO_PEERCRED`): pid, uid, gid. Read into
/// the kernel's own struct: its pid is 0 when the peer's process has no number in this
/// pid namespace (a client in another container), which rustix's `UCred` (a non-zero
/// pid) cannot hold.
pub fn peer_cred(fd: &impl AsFd) -> Option<(i32, u32, u32)> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    // SAFETY: SO_PEERCRED gives a `ucred`, three integers any bytes make.
    let n =
        unsafe { super::getsockopt_at(fd.as_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, &mut c) };
    (n.ok() == Some(std::mem::size_of::<libc::ucred>())).then_some((c.pid, c.uid, c.gid))
}

/// The peer's supplementary groups as the kernel recorded them at connect
/// (`SO_PEERGROUPS`), or `None` where the kernel cannot say.
pub fn peer_groups(fd: &OwnedFd) -> Option<Vec<u32>> {
    let mut groups = [0 as libc::gid_t; 256];
    // SAFETY: SO_PEERGROUPS gives an array of gid_t (cut to the room given; ERANGE when
    // the peer has more), integers any bytes make.
    let n = unsafe {
        super::getsockopt_at(
            fd.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            &mut groups,
        )
    }
    .ok()?;
    Some(groups[..n / std::mem::size_of::<libc::gid_t>()].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(check_ifname("vi0").is_ok());
        assert!(check_ifname("a-b_c.d").is_ok());
        for bad in ["", "0123456789abcdef", "a/b", "a:b", "a b", ".", ".."] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_has_an_index_and_bad_names_have_none() {
        // Every network namespace has `lo`, and it is made first.
        assert_eq!(if_index("lo"), Some(1));
        for bad in ["vale-no-such0", "0123456789abcdef", "a\0b", ""] {
            assert_eq!(if_index(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn readable_within_sees_a_datagram_and_times_out_without_one() {
        use std::os::fd::AsFd;
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert!(!readable_within(b.as_fd(), 0));
        let t = std::time::Instant::now();
        assert!(!readable_within(b.as_fd(), 20));
        assert!(t.elapsed() >= std::time::Duration::from_millis(20));
        a.send(b"x").unwrap();
        assert!(readable_within(b.as_fd(), 1000));
    }
}
