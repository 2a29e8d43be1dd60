//! systemd's readiness protocol (`sd_notify(3)`), by hand: one datagram of
//! `KEY=VALUE` lines to the unix socket named by `$NOTIFY_SOCKET` (an abstract name
//! when it starts with `@`). Without the variable (not started by systemd with
//! `Type=notify`) it does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to the service manager, if there is one. A failure is
/// logged, not fatal: the daemon works the same, only systemd is not told.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        tracing::warn!(
            "cannot tell the service manager {state:?} through NOTIFY_SOCKET={}: {e}",
            path.to_string_lossy()
        );
    }
}

/// Sends `state` (`WATCHDOG=1`, a `STATUS=`) without waiting: a manager whose queue is
/// full misses it. False if it was not sent (no manager, or that).
pub fn notify_nowait(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    send_with(&path, state, None).is_ok()
}

/// How often the service manager wants `WATCHDOG=1` (systemd's `WatchdogSec=`, passed
/// as `$WATCHDOG_USEC`), if it wants it of this process (`$WATCHDOG_PID`, when set).
pub fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec))
}

const SEND_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    // A manager whose queue is full (or a stale NOTIFY_SOCKET of someone else's that
    // is never read) costs at most this, never a daemon that cannot start or stop.
    send_with(path, state, Some(SEND_LIMIT))
}

/// One datagram, waiting at most `limit` for room (`None`: not at all).
fn send_with(
    path: &std::ffi::OsStr,
    state: &str,
    limit: Option<std::time::Duration>,
) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    match limit {
        Some(l) => sock.set_write_timeout(Some(l))?,
        None => sock.set_nonblocking(true)?,
    }
    let bytes = path.as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?
        }
        None => sock.send_to(state.as_bytes(), path)?,
    };
    if sent != state.len() {
        return Err(std::io::Error::other("short datagram"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_datagram_to_a_path_or_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("vb-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=up").unwrap();
        let mut b = [0u8; 64];
        let n = rx.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"READY=1\nSTATUS=up");
        let _ = std::fs::remove_dir_all(&dir);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("vb-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = rx.recv(&mut b).unwrap();
        assert_eq!(&b[..n], b"STOPPING=1");
        assert!(send(std::ffi::OsStr::new("/nonexistent/vb.sock"), "READY=1").is_err());
    }

    #[test]
    fn a_manager_that_never_reads_costs_a_second_not_a_hang() {
        let name = format!("vb-notify-full-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        // Its queue filled (the kernel's per-socket datagram limit).
        let filler = UnixDatagram::unbound().unwrap();
        filler.set_nonblocking(true).unwrap();
        let mut queued = 0;
        while filler.send_to_addr(b"X", &addr).is_ok() && queued < 100_000 {
            queued += 1;
        }
        assert!(queued > 0 && queued < 100_000, "queue full after {queued}");
        let (tx, done) = std::sync::mpsc::channel();
        let at = format!("@{name}");
        std::thread::spawn(move || {
            let _ = tx.send(send(std::ffi::OsStr::new(&at), "READY=1"));
        });
        let r = done
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("send gave up by its limit");
        assert!(r.is_err(), "{r:?}");
        drop(rx);
    }
}
