//! The frontend's notification descriptors kept away from the data path. A kick or
//! call descriptor is the frontend's file: it can make a read of it block (a pipe, or
//! an eventfd it drains first, after clearing `O_NONBLOCK`, a flag it shares) or a write
//! block (an eventfd it filled to its limit). The vhost crate reads kicks holding the
//! ring's lock that the forwarding thread takes, and the forwarding thread writes calls
//! itself: either would stop every port of the switch, and the control thread after it.
//!
//! So the crate gets eventfds of valed's own, which nobody else can read, fill or make
//! blocking, and one thread per connection passes the signals on between them and the
//! frontend's: a frontend that blocks that thread stalls only its own notifications.

use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Which way a pair passes signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Way {
    /// A kick: the frontend's descriptor to ours (which the crate reads).
    ToCrate,
    /// A call or an error: ours (which the crate writes) to the frontend's.
    ToFront,
}

struct Pair {
    way: Way,
    /// The frontend's descriptor.
    theirs: Arc<OwnedFd>,
    /// Ours (non-blocking; the crate has a duplicate, given to it in the message).
    ours: Arc<OwnedFd>,
}

/// The pairs of one frontend connection, by (request, queue), and the thread that
/// serves them.
pub(super) struct Pumps {
    epoll: Arc<OwnedFd>,
    pairs: Arc<Mutex<HashMap<u64, Pair>>>,
    stop: Arc<AtomicBool>,
    /// Wakes the thread to see `stop`.
    wake: Arc<OwnedFd>,
}

const WAKE: u64 = u64::MAX;

/// Why a frontend's notification descriptor is refused.
pub(super) fn check(fd: &OwnedFd) -> Result<(), String> {
    use rustix::fd::AsRawFd;
    let n = fd.as_raw_fd();
    let what = std::fs::read_link(format!("/proc/self/fd/{n}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if what != "anon_inode:[eventfd]" {
        return Err(format!(
            "a notification descriptor that is not an eventfd ({})",
            if what.is_empty() { "unknown" } else { &what }
        ));
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).unwrap_or_default();
    if info
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["eventfd-semaphore:", "1"])
    {
        return Err("a notification eventfd in semaphore mode".into());
    }
    Ok(())
}

impl Pumps {
    /// Starts the thread of a new connection. `alive` counts a port's threads: one the
    /// last frontend still holds stuck in its own descriptors is waited for up to a
    /// second, then the new connection is refused, so that a frontend cannot leave
    /// a thread behind for each connection it makes.
    pub(super) fn start(port: &str, alive: &Arc<AtomicUsize>) -> std::io::Result<Pumps> {
        let t = std::time::Instant::now();
        while alive.load(Ordering::Acquire) > 0 {
            if t.elapsed() > std::time::Duration::from_secs(1) {
                return Err(std::io::Error::other(
                    "the last frontend's notification descriptors still hold valed's \
                     notifier thread (an eventfd it filled, or drained first)",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let ep = Arc::new(epoll::create(epoll::CreateFlags::CLOEXEC)?);
        let wake = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        epoll::add(
            &*ep,
            &*wake,
            epoll::EventData::new_u64(WAKE),
            epoll::EventFlags::IN,
        )?;
        let p = Pumps {
            epoll: ep,
            pairs: Arc::default(),
            stop: Arc::default(),
            wake,
        };
        // The thread holds the wake-up eventfd too: closed by the last holder while its
        // event waits to be collected, epoll would forget the event (it did: the
        // thread slept out its second).
        let (ep, pairs, stop, wake) = (
            p.epoll.clone(),
            p.pairs.clone(),
            p.stop.clone(),
            p.wake.clone(),
        );
        alive.fetch_add(1, Ordering::AcqRel);
        let a = alive.clone();
        let spawned = std::thread::Builder::new()
            .name("vale-vhost-irq".into())
            .spawn(move || {
                run(&ep, &pairs, &stop);
                drop((pairs, wake)); // the frontend's descriptors, before the count says gone
                a.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            alive.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        let _ = port;
        Ok(p)
    }

    /// The frontend's `theirs` for request `req` of queue `queue`, replacing the one
    /// it had there: returns the descriptor to give the crate in its place.
    pub(super) fn put(
        &self,
        req: u32,
        queue: u8,
        way: Way,
        theirs: OwnedFd,
    ) -> std::io::Result<OwnedFd> {
        // Non-blocking, a flag the crate's duplicate shares: the crate reads it only
        // once readable with nobody else reading, and writes it far from its limit.
        let ours = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        let for_crate = rustix::io::fcntl_dupfd_cloexec(&ours, 0)?;
        let key = u64::from(req) << 8 | u64::from(queue);
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = pairs.remove(&key) {
            let _ = epoll::delete(&*self.epoll, watched(&old));
        }
        let pair = Pair {
            way,
            theirs: Arc::new(theirs),
            ours: Arc::new(ours),
        };
        epoll::add(
            &*self.epoll,
            watched(&pair),
            epoll::EventData::new_u64(key),
            epoll::EventFlags::IN,
        )?;
        pairs.insert(key, pair);
        Ok(for_crate)
    }
}

/// The descriptor a pair waits on: where its signals come from.
fn watched(p: &Pair) -> rustix::fd::BorrowedFd<'_> {
    match p.way {
        Way::ToCrate => p.theirs.as_fd(),
        Way::ToFront => p.ours.as_fd(),
    }
}

/// What `msg` (a SET_VRING_KICK, CALL or ERR) passes on to the crate in place of the
/// frontend's descriptor: ours, paired with it; other messages' descriptors unchanged.
pub(super) fn substitute(
    pumps: &Pumps,
    msg: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<Vec<OwnedFd>, String> {
    let req = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
    let way = match req {
        super::relay::SET_VRING_KICK => Way::ToCrate,
        super::relay::SET_VRING_CALL | super::relay::SET_VRING_ERR => Way::ToFront,
        _ => return Ok(fds),
    };
    // The payload: the queue in bits 0-7, bit 8 set for no descriptor (polling).
    let payload = msg
        .get(12..20)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    if fds.is_empty() || payload & 0x100 != 0 {
        return Ok(fds);
    }
    if fds.len() != 1 {
        return Err(format!(
            "a notification message with {} descriptors",
            fds.len()
        ));
    }
    let theirs = fds.into_iter().next().expect("one");
    check(&theirs)?;
    let ours = pumps
        .put(req, payload as u8, way, theirs)
        .map_err(|e| format!("cannot pair a notification descriptor: {e}"))?;
    Ok(vec![ours])
}

impl Drop for Pumps {
    fn drop(&mut self) {
        // The thread ends at its next look (at once, unless the frontend has it stuck
        // in one of its own descriptors: then when it lets go); it holds what it uses.
        self.stop.store(true, Ordering::Release);
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }
}

fn run(ep: &OwnedFd, pairs: &Mutex<HashMap<u64, Pair>>, stop: &AtomicBool) {
    let mut events = Vec::with_capacity(16);
    let second = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    while !stop.load(Ordering::Acquire) {
        events.clear();
        if epoll::wait(
            ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&second),
        )
        .is_err()
        {
            continue;
        }
        for e in &events {
            let key = e.data.u64();
            if key == WAKE {
                continue;
            }
            // The pair's descriptors held, so the lock is not held across reads and
            // writes the frontend may make block.
            let (way, from, to) = {
                let pairs = pairs.lock().unwrap_or_else(|p| p.into_inner());
                let Some(p) = pairs.get(&key) else { continue };
                match p.way {
                    Way::ToCrate => (p.way, p.theirs.clone(), p.ours.clone()),
                    Way::ToFront => (p.way, p.ours.clone(), p.theirs.clone()),
                }
            };
            let mut b = [0u8; 8];
            // Ours is only ever read here (and written by the crate): it is readable,
            // this read does not block. Theirs may, at the frontend's choice.
            if rustix::io::read(&*from, &mut b).is_err() && way == Way::ToCrate {
                continue;
            }
            let _ = rustix::io::write(&*to, &1u64.to_ne_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_pump_thread_ends_at_once() {
        let alive = Arc::new(AtomicUsize::new(0));
        let p = Pumps::start("t", &alive).unwrap();
        assert_eq!(alive.load(Ordering::Acquire), 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = std::time::Instant::now();
        drop(p);
        while alive.load(Ordering::Acquire) > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
}
