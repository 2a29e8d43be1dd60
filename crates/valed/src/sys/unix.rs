//! Unix sockets for the control socket and QEMU ports, and interface names and indices
//! as the kernel sees them.

use rustix::fd::OwnedFd;
use std::io;

/// A non-blocking unix socket of `kind` bound to `path`. A stale socket file there is
/// replaced; any other kind of file is an error (valed never deletes what it did not
/// make).
fn bound_unix(path: &str, kind: rustix::net::SocketType) -> io::Result<OwnedFd> {
    let p = std::path::Path::new(path);
    if let Ok(m) = std::fs::symlink_metadata(p) {
        use std::os::unix::fs::FileTypeExt;
        if !m.file_type().is_socket() {
            return Err(io::Error::other(format!(
                "{path} exists and is not a socket"
            )));
        }
        std::fs::remove_file(p)?;
    }
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

/// A unix stream socket connected to `path`, then made non-blocking.
pub fn stream_connect(path: &str) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&fd, &rustix::net::SocketAddrUnix::new(path)?)?;
    rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK)?;
    Ok(fd)
}

/// Whether descriptor `fd` (owned by the caller, open for the call) becomes readable
/// within `ms` milliseconds.
pub fn readable_within(fd: std::os::fd::RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; poll only reads `fd`'s state.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// Interface names: what the kernel accepts (`dev_valid_name`), at most 15 bytes.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(format!(
            "interface name `{}` must be 1 to {} characters",
            name.escape_default(),
            libc::IFNAMSIZ - 1
        ));
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b <= b' ' || b >= 0x7f)
    {
        return Err(format!(
            "interface name `{}` may not be . or .. nor contain '/', ':', spaces or control characters",
            name.escape_default()
        ));
    }
    Ok(())
}

/// The interface's index in the daemon's network namespace, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
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
}
