//! Guest memory whose file its owner may still truncate: a SIGBUS there is caught.
//!
//! A vhost-user frontend hands valed its memory as files. valed seals them against
//! shrinking where it can; where it cannot and `vhost_trust_unsealed` says to accept
//! them anyway, the frontend may still truncate the file, and touching the mapping past
//! the new end raises SIGBUS, whose default action takes every switch down. So the
//! ranges of such mappings are listed here, in a fixed table the handler reads without
//! locks, and a SIGBUS inside one of them replaces that whole range with anonymous zero
//! pages and counts the fault: the access that faulted is retried and reads zeros, the
//! forwarding thread sees the count and cuts the frontend off. A SIGBUS anywhere else is
//! a real crash: the default action is restored and the signal raised again.
//!
//! The handler only loads and stores atomics and makes the `mmap` and `sigaction`
//! system calls (rustix's raw ones, libc's `sigaction` and `raise`), all
//! async-signal-safe; it allocates nothing and takes no lock.

use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Ranges watched at once: one per region of each connected guest (QEMU sends a few,
/// at most 8 per port), for hundreds of ports.
const SLOTS: usize = 1024;

/// One watched range, free while `start` is 0. Taken by setting `start`, then `end`;
/// released by clearing `end`, then `start`: the handler never sees a range that is
/// not wholly one guest's.
struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    faults: AtomicU64,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        faults: AtomicU64::new(0),
    }
}; SLOTS];
/// Faults caught in all ranges, ever: what the forwarding threads look at after
/// touching guest memory (one load) before they look for whose it was.
static CAUGHT: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Guest memory ranges under watch: while this lives, a SIGBUS inside one of them is
/// survived (the range becomes zero pages) and counted in `faults`.
#[derive(Debug)]
pub struct Watched {
    slots: Vec<usize>,
}

impl Watched {
    /// Watches `ranges` (address, length in bytes), installing the handler on first
    /// use. Fails when the handler cannot be installed or the table is full (the ranges
    /// would not be protected: the memory must not be used).
    pub fn new(ranges: impl IntoIterator<Item = (usize, usize)>) -> io::Result<Watched> {
        install()?;
        let mut w = Watched { slots: Vec::new() };
        for (start, len) in ranges {
            let end = start
                .checked_add(len)
                .filter(|_| start != 0 && len != 0)
                .ok_or_else(|| io::Error::other("bad guest memory range"))?;
            let i = claim(start).ok_or_else(|| {
                io::Error::other(format!("more than {SLOTS} guest memory regions at once"))
            })?;
            TABLE[i].faults.store(0, Ordering::Relaxed);
            TABLE[i].end.store(end, Ordering::Release);
            w.slots.push(i);
        }
        Ok(w)
    }

    /// SIGBUS faults caught in these ranges so far.
    pub fn faults(&self) -> u64 {
        self.slots
            .iter()
            .map(|&i| TABLE[i].faults.load(Ordering::Acquire))
            .sum()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        for &i in &self.slots {
            TABLE[i].end.store(0, Ordering::Release);
            TABLE[i].start.store(0, Ordering::Release);
        }
    }
}

/// Faults caught in any watched range since valed started.
pub fn caught() -> u64 {
    CAUGHT.load(Ordering::Acquire)
}

/// A free slot, taken for a range starting at `start`.
fn claim(start: usize) -> Option<usize> {
    (0..SLOTS).find(|&i| {
        TABLE[i]
            .start
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

/// The watched range `addr` falls in, if any: (slot, start, end).
fn find(addr: usize) -> Option<(usize, usize, usize)> {
    TABLE.iter().enumerate().find_map(|(i, s)| {
        let start = s.start.load(Ordering::Acquire);
        let end = s.end.load(Ordering::Acquire);
        (start != 0 && addr >= start && addr < end).then_some((i, start, end))
    })
}

/// Installs the SIGBUS handler, once for the process.
fn install() -> io::Result<()> {
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags); the
        // handler has the three-argument form SA_SIGINFO asks for, and does only
        // async-signal-safe work (the module's comment).
        let ok = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigbus as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut()) == 0
        };
        INSTALLED.store(ok, Ordering::Release);
    });
    if INSTALLED.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(io::Error::other("cannot install the SIGBUS handler"))
    }
}

/// The SIGBUS handler: a fault the kernel raised inside a watched range turns that
/// range into zero pages and is counted; anything else dies as it would have.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler; si_addr is
    // meaningful when the kernel itself raised the signal (si_code > 0).
    let addr = unsafe {
        match info.as_ref() {
            Some(i) if i.si_code > 0 => Some(i.si_addr() as usize),
            _ => None,
        }
    };
    if let Some((i, start, end)) = addr.and_then(find) {
        // SAFETY: [start, end) is a guest mapping valed made and still owns (its
        // `Watched` lives, and it is unwatched before it is unmapped); replacing it
        // with private zero pages keeps it mapped for whoever reads it.
        let zeroed = unsafe {
            rustix::mm::mmap_anonymous(
                start as *mut _,
                end - start,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE
                    | rustix::mm::MapFlags::FIXED
                    | rustix::mm::MapFlags::NORESERVE,
            )
        };
        if zeroed.is_ok() {
            TABLE[i].faults.fetch_add(1, Ordering::AcqRel);
            CAUGHT.fetch_add(1, Ordering::AcqRel);
            return;
        }
    }
    // SAFETY: restoring the default action and raising the signal again are
    // async-signal-safe; the signal is blocked while this handler runs, so it is
    // delivered (and the process ends with it) when the handler returns.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
        libc::raise(sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    /// A shared mapping of a 4-page memfd, as vm-memory makes for guest memory.
    fn guest_like() -> (rustix::fd::OwnedFd, *mut u8, usize) {
        let fd = rustix::fs::memfd_create("sigbus-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let len = 4 * 4096;
        rustix::fs::ftruncate(&fd, len as u64).unwrap();
        // SAFETY: a fresh mapping of our own file, unmapped at the end of the test.
        let p = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }
        .unwrap();
        (fd, p.cast(), len)
    }

    #[test]
    fn a_truncated_watched_mapping_reads_zeros_and_counts_the_fault() {
        let (fd, p, len) = guest_like();
        // SAFETY: p..p+len is mapped and ours.
        unsafe { p.add(3 * 4096).write_volatile(7) };
        let w = Watched::new([(p as usize, len)]).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        // SAFETY: still mapped; past the file's end now, which the handler repairs.
        let v = unsafe { p.add(3 * 4096).read_volatile() };
        assert_eq!(v, 0, "the truncated page reads as zeros");
        assert_eq!(w.faults(), 1);
        // The whole range was replaced: no second fault below the cut either.
        // SAFETY: as above.
        unsafe { p.add(2 * 4096).write_volatile(1) };
        assert_eq!(w.faults(), 1);
        drop(w);
        assert!(find(p as usize).is_none(), "unwatched once dropped");
        // SAFETY: unmapping our own mapping, no longer used.
        unsafe { rustix::mm::munmap(p.cast(), len).unwrap() };
    }

    #[test]
    fn ranges_are_checked() {
        assert!(Watched::new([(0, 4096)]).is_err());
        assert!(Watched::new([(4096, 0)]).is_err());
        assert!(Watched::new([(usize::MAX - 10, 4096)]).is_err());
    }
}
