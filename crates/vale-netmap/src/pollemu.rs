//! netmap's poll over descriptors some of which are ours: every netmap descriptor txsyncs
//! its TX rings (unless NO_TX_POLL) and, if it asks for input, rxsyncs; readiness is
//! "tail moved past cur"; ordinary descriptors in the same call are served by one real
//! poll; nothing ready means arming the rings' kicks, looking once more, and sleeping in
//! the real poll on the ports' notify eventfds, with no lost wake-up and no busy loop.
//! Threads polling one descriptor share its notify eventfd: the one that drains it
//! passes the wake-up on to the others through their own eventfds.

use crate::dev::{Device, Hidden, high_dup};
use libc::{
    POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, POLLRDHUP, POLLRDNORM, POLLWRNORM, pollfd,
};
use rustix::event::EventfdFlags;
use rustix::fd::AsFd;
use rustix::process::Pid;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vale_abi::Dir;

const WANT_RX: i16 = POLLIN | POLLRDNORM;
const WANT_TX: i16 = POLLOUT | POLLWRNORM;
/// What the connection to valed says when valed is gone.
const GONE: i16 = POLLHUP | POLLERR | POLLRDHUP | POLLNVAL;

/// The real poll the emulation sleeps in: the descriptors, and a timeout (`None`:
/// none). Returns what poll(2) returns; errno is left as it set it.
pub trait Sleeper {
    fn poll(&mut self, fds: &mut [pollfd], timeout: Option<Duration>) -> i32;
}

/// Syncs and checks one netmap descriptor; returns its revents.
fn check(dev: &Device, events: i16) -> i16 {
    let Some(p) = dev.port() else {
        return POLLERR; // not registered
    };
    let (want_rx, want_tx) = (events & WANT_RX != 0, events & WANT_TX != 0);
    let mut ok = true;
    if !p.no_tx_poll || want_tx {
        ok &= p.sync(Dir::Tx);
    }
    if want_rx {
        ok &= p.sync(Dir::Rx);
    }
    let mut rev = 0;
    if want_tx && p.ready(Dir::Tx) {
        rev |= events & WANT_TX;
    }
    if want_rx && p.ready(Dir::Rx) {
        rev |= events & WANT_RX;
    }
    if !ok {
        rev |= POLLERR;
    }
    rev
}

fn arm(dev: &Device, events: i16, on: bool) {
    if let Some(p) = dev.port() {
        if events & WANT_RX != 0 {
            p.arm(Dir::Rx, on);
        }
        if events & WANT_TX != 0 {
            p.arm(Dir::Tx, on);
        }
    }
}

/// poll(2) over `fds`, where `devs[i]` is the device behind `fds[i]` if it is ours.
/// Returns the number of descriptors with events, or -1 (errno set by the sleeper).
pub fn poll(
    fds: &mut [pollfd],
    devs: &[Option<Arc<Device>>],
    timeout: Option<Duration>,
    sleeper: &mut dyn Sleeper,
) -> i32 {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut last_look = timeout == Some(Duration::ZERO);
    loop {
        let mut ready = 0;
        for (f, d) in fds.iter_mut().zip(devs) {
            if let Some(d) = d {
                f.revents = check(d, f.events);
                ready += i32::from(f.revents != 0);
            }
        }
        let others: Vec<usize> = (0..fds.len()).filter(|&i| devs[i].is_none()).collect();
        if ready > 0 || last_look {
            return ready + poll_others(fds, &others, sleeper);
        }
        // From here until it wakes, this thread may need a wake-up that another thread
        // drains from a notify eventfd they share.
        let waiting = Waiting::new(devs);
        // Ask every waited ring for a kick, then look once more (vale_abi::sync).
        for (f, d) in fds.iter().zip(devs) {
            if let Some(d) = d {
                arm(d, f.events, true);
            }
        }
        let mut again = 0;
        for (f, d) in fds.iter_mut().zip(devs) {
            if let Some(d) = d {
                f.revents = check(d, f.events);
                again += i32::from(f.revents != 0);
            }
        }
        let disarm = |fds: &[pollfd]| {
            for (f, d) in fds.iter().zip(devs) {
                if let Some(d) = d {
                    arm(d, f.events, false);
                }
            }
        };
        if again > 0 {
            disarm(fds);
            return again + poll_others(fds, &others, sleeper);
        }
        // Sleep: the ordinary descriptors, then each netmap one's notify eventfd and its
        // connection (valed hanging up).
        let mut set: Vec<pollfd> = others.iter().map(|&i| fds[i]).collect();
        let mut slots = Vec::new();
        for (i, d) in devs.iter().enumerate() {
            if let Some(p) = d.as_ref().and_then(|d| d.port()) {
                use rustix::fd::AsRawFd;
                slots.push((i, set.len()));
                set.push(pollfd {
                    fd: p.notify.as_raw_fd(),
                    events: POLLIN,
                    revents: 0,
                });
                // Only a hang-up (HUP, ERR and RDHUP are reported whatever is asked):
                // the connection is readable whenever another thread's NIOCCTRL is
                // answered on it, which says nothing about valed going away.
                set.push(pollfd {
                    fd: d.as_ref().map_or(-1, |d| d.conn.as_raw_fd()),
                    events: POLLRDHUP,
                    revents: 0,
                });
            }
        }
        let own_at = waiting.me.as_ref().map(|me| {
            use rustix::fd::AsRawFd;
            set.push(pollfd {
                fd: me.as_raw_fd(),
                events: POLLIN,
                revents: 0,
            });
            set.len() - 1
        });
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let rc = sleeper.poll(&mut set, left);
        disarm(fds);
        if rc < 0 {
            return rc; // EINTR and the rest, as poll(2) reports them
        }
        let mut hung = 0;
        for (i, at) in slots {
            if set[at].revents != 0 {
                if let Some(d) = devs[i].as_ref() {
                    let mut b = [0u8; 8];
                    let drained = d
                        .port()
                        .is_some_and(|p| rustix::io::read(&p.notify, &mut b) == Ok(8));
                    if drained {
                        d.wake_others(waiting.me.as_ref());
                    }
                }
            }
            if set[at + 1].revents & GONE != 0 {
                fds[i].revents = POLLERR | POLLHUP;
                hung += 1;
            }
        }
        if let (Some(at), Some(me)) = (own_at, waiting.me.as_ref()) {
            if set[at].revents != 0 {
                let mut b = [0u8; 8];
                let _ = rustix::io::read(&**me, &mut b);
            }
        }
        drop(waiting);
        let mut other_events = 0;
        for (k, &i) in others.iter().enumerate() {
            fds[i].revents = set[k].revents;
            other_events += i32::from(set[k].revents != 0);
        }
        if hung > 0 {
            return hung + other_events;
        }
        // Something moved, another descriptor is ready, or time is up: one last look.
        last_look = other_events > 0 || deadline.is_some_and(|d| Instant::now() >= d);
    }
}

thread_local! {
    static OWN: RefCell<Option<(Pid, Arc<Hidden>)>> = const { RefCell::new(None) };
}

/// This thread's wake-up eventfd, for wake-ups another thread passes on (see
/// [`Device::wake_others`]): made on first use, close-on-exec and above the program's
/// descriptors; a forked child makes its own. None if it cannot be made (then a
/// drained wake-up may be missed until the poll's timeout, as before).
fn own_wake() -> Option<Arc<Hidden>> {
    let pid = rustix::process::getpid();
    OWN.try_with(|own| {
        let mut own = own.borrow_mut();
        if let Some((_, fd)) = own.as_ref().filter(|(p, _)| *p == pid) {
            return Some(fd.clone());
        }
        let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
        let fd = rustix::event::eventfd(0, flags).ok()?;
        let fd = Arc::new(high_dup(fd.as_fd()).ok()?);
        *own = Some((pid, fd.clone()));
        Some(fd)
    })
    .ok()
    .flatten()
}

/// This thread's wake-up eventfd as a forked child inherits it (made by the parent's
/// thread that forked), for the child's list of the library's descriptors.
pub fn inherited_wake() -> Option<i32> {
    OWN.try_with(|own| {
        own.borrow()
            .as_ref()
            .map(|(_, fd)| rustix::fd::AsRawFd::as_raw_fd(&**fd))
    })
    .ok()
    .flatten()
}

/// A thread counted among the waiters of every registered device of a poll, for as
/// long as it lives.
struct Waiting<'a> {
    devs: &'a [Option<Arc<Device>>],
    me: Option<Arc<Hidden>>,
}

impl<'a> Waiting<'a> {
    fn new(devs: &'a [Option<Arc<Device>>]) -> Waiting<'a> {
        let me = own_wake();
        if let Some(me) = &me {
            for d in devs.iter().flatten() {
                d.wait_begin(me);
            }
        }
        Waiting { devs, me }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(me) = &self.me {
            for d in self.devs.iter().flatten() {
                d.wait_end(me);
            }
        }
    }
}

/// The ordinary descriptors, polled without waiting; their revents go into `fds`.
fn poll_others(fds: &mut [pollfd], others: &[usize], sleeper: &mut dyn Sleeper) -> i32 {
    if others.is_empty() {
        return 0;
    }
    let mut set: Vec<pollfd> = others.iter().map(|&i| fds[i]).collect();
    let rc = sleeper.poll(&mut set, Some(Duration::ZERO));
    let mut n = 0;
    for (k, &i) in others.iter().enumerate() {
        fds[i].revents = if rc > 0 { set[k].revents } else { 0 };
        n += i32::from(fds[i].revents != 0);
    }
    n
}
