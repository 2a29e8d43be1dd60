//! A write to an eventfd that another process shares (a local client's notify eventfd),
//! which can wait for a moment at most. `O_NONBLOCK` is the file's: the client may clear
//! it at any instant, and an eventfd it filled to its limit then makes a write wait
//! until it reads. valed puts the flag back before writing, but a client clearing it
//! again between that and the write would still hold the writer (the lane's forwarding
//! thread), so the write runs under a one-shot timer of the writing thread's own that
//! interrupts it (a signal with a handler that does nothing, installed without
//! `SA_RESTART`: the write returns `EINTR`).
//!
//! Only a write that sleeps is interrupted: one that completes does not sleep, and a
//! signal that comes after it is taken on the way out of the next system call (the
//! timer's disarming, which cannot fail with `EINTR`), interrupting nothing.
//!
//! Arming and disarming a timer costs two system calls (0.39 us here) on each wake-up.
//! A thread whose only sleeping system calls take `EINTR` in their stride (the lane's
//! forwarding threads: epoll_wait, thread parking; every descriptor they write or read
//! is non-blocking) says so once ([`tolerate_stray_timer`]): its timer then stays
//! armed, pushed out again when less than half its limit is left, and is never
//! disarmed; while it writes wake-ups the timer does not fire, and after its last one it
//! fires once, interrupting at most one sleep.

use rustix::fd::BorrowedFd;
use std::cell::RefCell;
use std::io;
use std::sync::Once;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// How long a write may wait: a client's eventfd that is full is readable already, so
/// the wake-up it would carry is not needed. Long enough that arming the timer seldom
/// makes it the thread's next one to expire: arming and disarming one cost 0.39 us
/// here at 20 ms, 0.7 to 0.9 us at 2 ms (the timer hardware reprogrammed, a VM exit).
pub const WRITE_LIMIT: Duration = Duration::from_millis(20);

static INSTALL: Once = Once::new();
/// The signal the timers send (0: none could be installed).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_timer(_: libc::c_int) {}

fn signal() -> libc::c_int {
    INSTALL.call_once(|| {
        // A real-time signal glibc leaves to programs, that nothing else in valed uses.
        let sig = libc::SIGRTMIN() + 5;
        // SAFETY: a zeroed sigaction is a valid value (empty mask, no flags: no
        // SA_RESTART, so a sleeping write returns EINTR); the handler has the one-argument
        // form and does nothing, which is async-signal-safe.
        let ok = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_timer as *const () as usize;
            libc::sigaction(sig, &sa, std::ptr::null_mut()) == 0
        };
        if ok {
            SIGNAL.store(sig, Ordering::Release);
        }
    });
    SIGNAL.load(Ordering::Acquire)
}

/// A POSIX timer that signals the thread that made it.
struct Timer(libc::timer_t);

impl Timer {
    fn new() -> Option<Timer> {
        let sig = signal();
        if sig == 0 {
            return None;
        }
        // SAFETY: a zeroed sigevent is valid; the fields set ask for `sig` sent to this
        // thread; timer_create writes the new timer's id into `t` on success.
        unsafe {
            let mut ev: libc::sigevent = std::mem::zeroed();
            ev.sigev_notify = libc::SIGEV_THREAD_ID;
            ev.sigev_signo = sig;
            ev.sigev_notify_thread_id = libc::gettid();
            let mut t: libc::timer_t = std::mem::zeroed();
            (libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut t) == 0).then_some(Timer(t))
        }
    }

    /// Arms the timer to fire once after `d`, or disarms it (`d` zero).
    fn set(&self, d: Duration) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: d.as_secs() as libc::time_t,
                tv_nsec: d.subsec_nanos().into(),
            },
        };
        // SAFETY: a timer this thread made and has not deleted; a valid itimerspec.
        unsafe { libc::timer_settime(self.0, 0, &spec, std::ptr::null_mut()) };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: made by timer_create, deleted once.
        unsafe { libc::timer_delete(self.0) };
    }
}

/// A thread's timer, and how its writes use it.
struct Guard {
    /// Made at the thread's first bounded write (`None` inside: none could be made, and
    /// writes are then plain).
    timer: Option<Option<Timer>>,
    /// Left armed between writes ([`tolerate_stray_timer`]); then when it fires.
    lazy: bool,
    fires: Option<Instant>,
}

thread_local! {
    static GUARD: RefCell<Guard> = const {
        RefCell::new(Guard {
            timer: None,
            lazy: false,
            fires: None,
        })
    };
}

/// The calling thread takes a stray `EINTR` from its sleeping system calls in its
/// stride: its bounded writes leave their timer armed (see the module).
pub fn tolerate_stray_timer() {
    GUARD.with(|g| g.borrow_mut().lazy = true);
}

/// Writes `v` to the eventfd `fd`, waiting at most about `limit` if its owner made it
/// wait: `Err(EINTR)` then.
pub fn write_eventfd_bounded(fd: BorrowedFd<'_>, v: u64, limit: Duration) -> io::Result<()> {
    let write = || {
        rustix::io::write(fd, &v.to_ne_bytes())
            .map(|_| ())
            .map_err(io::Error::from)
    };
    GUARD.with(|g| {
        let g = &mut *g.borrow_mut();
        let Some(timer) = g.timer.get_or_insert_with(Timer::new) else {
            return write();
        };
        if !g.lazy {
            timer.set(limit);
            let r = write();
            timer.set(Duration::ZERO);
            return r;
        }
        let now = Instant::now();
        if g.fires.is_none_or(|f| f < now + limit / 2) {
            timer.set(limit);
            g.fires = Some(now + limit);
        }
        write()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{EventfdFlags, eventfd};
    use rustix::fd::AsFd;

    #[test]
    fn a_write_to_a_full_blocking_eventfd_comes_back_interrupted() {
        let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        rustix::io::write(&fd, &(u64::MAX - 1).to_ne_bytes()).unwrap();
        let t = std::time::Instant::now();
        let r = write_eventfd_bounded(fd.as_fd(), 1, Duration::from_millis(20));
        assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EINTR)));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(15) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // One that has room completes, and the disarmed timer interrupts nothing after.
        let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        write_eventfd_bounded(fd.as_fd(), 1, Duration::from_millis(20)).unwrap();
        let t = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(50));
        let mut b = [0u8; 8];
        assert_eq!(rustix::io::read(&fd, &mut b), Ok(8));
        assert_eq!(u64::from_ne_bytes(b), 1);
    }

    /// A thread that tolerates a stray timer: its writes are bounded all the same, the
    /// timer is pushed out while it writes, and fires once after the last (a sleep is
    /// interrupted, here a poll, which returns EINTR).
    #[test]
    fn a_lazy_timer_bounds_each_write_and_fires_once_after_the_last() {
        std::thread::spawn(|| {
            tolerate_stray_timer();
            let limit = Duration::from_millis(40);
            let fd = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
            let t = std::time::Instant::now();
            while t.elapsed() < Duration::from_millis(200) {
                write_eventfd_bounded(fd.as_fd(), 1, limit).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
            // The last write armed it for at most `limit` from then: a long poll
            // comes back interrupted.
            let (r, _w) = rustix::pipe::pipe().unwrap();
            let mut p = [rustix::event::PollFd::new(&r, rustix::event::PollFlags::IN)];
            let t = std::time::Instant::now();
            let ts = rustix::event::Timespec {
                tv_sec: 2,
                tv_nsec: 0,
            };
            let got = rustix::event::poll(&mut p, Some(&ts));
            assert_eq!(got, Err(rustix::io::Errno::INTR));
            assert!(
                t.elapsed() < limit + Duration::from_millis(20),
                "{:?}",
                t.elapsed()
            );
            // And a write that sleeps is interrupted, its timer armed again.
            let full = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
            rustix::io::write(&full, &(u64::MAX - 1).to_ne_bytes()).unwrap();
            let r = write_eventfd_bounded(full.as_fd(), 1, limit);
            assert_eq!(r.map_err(|e| e.raw_os_error()), Err(Some(libc::EINTR)));
        })
        .join()
        .unwrap();
    }
}
