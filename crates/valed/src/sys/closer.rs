//! Closing what a client may have chosen so that closing it blocks: descriptors it
//! passed with a message, and its own socket (whose queue may hold more). The last close
//! of a file runs its release in the closing thread: a TCP socket with `SO_LINGER` and
//! unsent data waits out its linger time there, a file on a FUSE mount waits for its
//! server's `flush`. On the control thread that would stall every client, so these go to
//! a thread of their own. valed also asks the kernel not to pass descriptors to its
//! control socket at all ([`refuse_rights`], Linux 6.16 and later); this covers the
//! kernels before that.

use rustix::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

/// Descriptors waiting to be closed, at most: past that (the closing thread is stuck
/// on a hostile file) they are closed where they are, as before.
const QUEUE: usize = 4096;

fn sender() -> Option<&'static SyncSender<Vec<OwnedFd>>> {
    static TX: OnceLock<Option<SyncSender<Vec<OwnedFd>>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Vec<OwnedFd>>(QUEUE);
        std::thread::Builder::new()
            .name("vale-closer".into())
            .spawn(move || {
                for fds in rx {
                    drop(fds);
                }
            })
            .ok()?;
        Some(tx)
    })
    .as_ref()
}

/// Closes `fds` on the closing thread (or here, if it cannot take them).
pub fn discard(fds: Vec<OwnedFd>) {
    if fds.is_empty() {
        return;
    }
    match sender() {
        Some(tx) => match tx.try_send(fds) {
            Ok(()) => {}
            Err(TrySendError::Full(f)) | Err(TrySendError::Disconnected(f)) => drop(f),
        },
        None => drop(fds),
    }
}

/// Asks the kernel to refuse descriptors sent to this socket (`SO_PASSRIGHTS` off: a
/// sender's `SCM_RIGHTS` then fails with `EPERM`). Linux 6.16 and later; elsewhere it
/// does nothing and [`discard`] is what protects the control thread.
pub fn refuse_rights(fd: &OwnedFd) {
    const SO_PASSRIGHTS: libc::c_int = 83;
    let off: libc::c_int = 0;
    // SAFETY: a valid socket, and a c_int option value of the size given.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PASSRIGHTS,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The credentials of a unix socket's peer (`SO_PEERCRED`): pid, uid, gid. Read into
/// the kernel's own struct: its pid is 0 when the peer's process has no number in this
/// pid namespace (a client in another container), which rustix's `UCred` (a non-zero
/// pid) cannot hold.
pub fn peer_cred(fd: &OwnedFd) -> Option<(i32, u32, u32)> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket; `c` and `len` describe a writable ucred.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<libc::ucred>()).then_some((c.pid, c.uid, c.gid))
}

/// The peer's supplementary groups as the kernel recorded them at connect
/// (`SO_PEERGROUPS`), or `None` where the kernel cannot say.
pub fn peer_groups(fd: &OwnedFd) -> Option<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    for _ in 0..4 {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: a valid socket; `groups` holds `len` writable bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Some(groups);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) || n <= groups.len()
        {
            return None;
        }
        groups.resize(n, 0);
    }
    None
}
