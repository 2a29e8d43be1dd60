//! Closing what a client may have chosen so that closing it blocks: descriptors it
//! passed with a message, and its own socket (whose queue may hold more). The last close
//! of a file runs its release in the closing thread: a TCP socket with `SO_LINGER` and
//! unsent data waits out its linger time there, a file on a FUSE mount waits for its
//! server's `flush`. On the control thread that would stall every client, so these go to
//! a thread of their own. valed also asks the kernel not to pass descriptors to its
//! control socket at all ([`refuse_rights`], Linux 6.16 and later); this covers the
//! kernels before that.

use rustix::fd::OwnedFd;
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
    // SAFETY: SO_PASSRIGHTS takes an int by value.
    let _ =
        unsafe { super::setsockopt_at(fd, libc::SOL_SOCKET, SO_PASSRIGHTS, &0 as &libc::c_int) };
}
