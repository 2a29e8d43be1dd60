//! A peer's notification descriptors kept away from the data path (a vhost-user
//! frontend's kick, call and error eventfds; a memif peer's interrupt eventfds). Such a
//! descriptor shares its open file with the peer: the peer can make a plain read of it
//! block (an eventfd it drains first, after clearing `O_NONBLOCK`, a flag it shares) or
//! any write block (an eventfd it filled to its limit). Done on the forwarding thread
//! (or by the vhost crate holding a ring lock that thread takes), either would stop
//! every port of the switch, and the control thread after it.
//!
//! Reads valed makes itself never wait ([`crate::sys::read_eventfd_nowait`]); writes,
//! and the vhost crate's reads, go to eventfds of valed's own, which nobody else can
//! read, fill or make blocking, and one thread per connection passes the signals on
//! between them and the peer's. A peer that blocks that thread stalls only its own
//! notifications; once it is gone, the port's next connection unsticks the thread
//! (it reads the filled eventfd) before it gets one of its own.

use rustix::event::epoll;
use rustix::fd::{AsFd, OwnedFd};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Which way a pair passes signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// From the peer (a kick): its descriptor to ours, which valed reads.
    In,
    /// To the peer (a call, an error, an interrupt): ours, which valed writes, to its.
    Out,
}

struct Pair {
    way: Way,
    /// The peer's descriptor.
    theirs: Arc<OwnedFd>,
    /// Ours (non-blocking; valed's data path has a duplicate).
    ours: Arc<OwnedFd>,
}

type Pairs = Arc<Mutex<HashMap<u64, Pair>>>;

/// The notifier threads of one port: how many run, and the pairs of those whose
/// connection is gone, for the next connection to unstick.
#[derive(Default)]
pub(crate) struct Held {
    alive: AtomicUsize,
    gone: Mutex<Vec<Pairs>>,
}

impl Held {
    /// Reads, without waiting, each gone connection's `Out` descriptors that its
    /// notifier thread may sit writing to (the peer filled them): the write completes
    /// and the thread sees it is to stop. Only descriptors of gone peers, whose
    /// signals nobody wants.
    fn unstick(&self) {
        let mut gone = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        // A thread that ended emptied its pairs.
        gone.retain(|p| !p.lock().unwrap_or_else(|p| p.into_inner()).is_empty());
        for pairs in gone.iter() {
            let theirs: Vec<_> = {
                let pairs = pairs.lock().unwrap_or_else(|p| p.into_inner());
                pairs
                    .values()
                    .filter(|p| p.way == Way::Out)
                    .map(|p| p.theirs.clone())
                    .collect()
            };
            for fd in theirs {
                let _ = crate::sys::read_eventfd_nowait(fd.as_fd());
            }
        }
    }
}

/// The pairs of one peer connection, by (request or ring kind, queue), and the thread
/// that serves them.
pub(crate) struct Pumps {
    epoll: Arc<OwnedFd>,
    pairs: Pairs,
    stop: Arc<AtomicBool>,
    /// Wakes the thread to see `stop`.
    wake: Arc<OwnedFd>,
    held: Arc<Held>,
}

const WAKE: u64 = u64::MAX;

/// Why a peer's notification descriptor is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unfit {
    /// Not an eventfd: what `/proc` says it is (a pipe, a socket, "unknown").
    NotEventfd(String),
    /// An eventfd in semaphore mode (each read takes one, so the count can block).
    Semaphore,
}

/// Whether `fd` is fit to be a notification descriptor: a counting eventfd.
pub(crate) fn check(fd: &OwnedFd) -> Result<(), Unfit> {
    use rustix::fd::AsRawFd;
    let n = fd.as_raw_fd();
    let what = std::fs::read_link(format!("/proc/self/fd/{n}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if what != "anon_inode:[eventfd]" {
        let what = if what.is_empty() {
            "unknown".into()
        } else {
            what
        };
        return Err(Unfit::NotEventfd(what));
    }
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).unwrap_or_default();
    if info
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["eventfd-semaphore:", "1"])
    {
        return Err(Unfit::Semaphore);
    }
    Ok(())
}

impl Pumps {
    /// Starts the thread of a new connection of the port whose threads `held` counts,
    /// `max` of them at once. One that a gone peer still holds stuck in its own
    /// descriptors is unstuck and waited for, up to a second; then the new connection
    /// is refused, so that a peer cannot leave a thread behind for each connection.
    pub(crate) fn start(name: &str, held: &Arc<Held>, max: usize) -> std::io::Result<Pumps> {
        let t = std::time::Instant::now();
        // Any gone connection's thread still running is either ending anyway or stuck.
        held.unstick();
        while held.alive.load(Ordering::Acquire) >= max {
            if t.elapsed() > std::time::Duration::from_secs(1) {
                return Err(std::io::Error::other(
                    "a gone peer's notification descriptors still hold valed's notifier \
                     thread (an eventfd it keeps filling)",
                ));
            }
            held.unstick();
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
            held: held.clone(),
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
        held.alive.fetch_add(1, Ordering::AcqRel);
        let a = held.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                run(&ep, &pairs, &stop);
                // The peer's descriptors (shared with `Held::gone`), before the count
                // says gone.
                pairs.lock().unwrap_or_else(|p| p.into_inner()).clear();
                drop((pairs, wake));
                a.alive.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            held.alive.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(p)
    }

    /// The peer's `theirs` for `kind` (a request, a ring direction) of queue `queue`,
    /// replacing the one it had there: returns the descriptor for valed's side.
    pub(crate) fn put(
        &self,
        kind: u32,
        queue: u8,
        way: Way,
        theirs: OwnedFd,
    ) -> std::io::Result<OwnedFd> {
        // Non-blocking, a flag the duplicate shares: valed reads it only once readable
        // with nobody else reading, and writes it far from its limit.
        let ours = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        let for_crate = rustix::io::fcntl_dupfd_cloexec(&ours, 0)?;
        let key = u64::from(kind) << 8 | u64::from(queue);
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
        Way::In => p.theirs.as_fd(),
        Way::Out => p.ours.as_fd(),
    }
}

/// What `msg` (a vhost-user SET_VRING_KICK, CALL or ERR) passes on to the vhost crate
/// in place of the frontend's descriptor: ours, paired with it; other messages'
/// descriptors unchanged.
pub(crate) fn substitute(
    pumps: &Pumps,
    msg: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<Vec<OwnedFd>, String> {
    let req = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
    let way = match req {
        super::vhost_user::relay::SET_VRING_KICK => Way::In,
        super::vhost_user::relay::SET_VRING_CALL | super::vhost_user::relay::SET_VRING_ERR => {
            Way::Out
        }
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
    check(&theirs).map_err(|e| match e {
        Unfit::NotEventfd(what) => {
            format!("a notification descriptor that is not an eventfd ({what})")
        }
        Unfit::Semaphore => "a notification eventfd in semaphore mode".into(),
    })?;
    let ours = pumps
        .put(req, payload as u8, way, theirs)
        .map_err(|e| format!("cannot pair a notification descriptor: {e}"))?;
    Ok(vec![ours])
}

impl Drop for Pumps {
    fn drop(&mut self) {
        // The thread ends at its next look (at once, unless the peer has it stuck in
        // one of its own descriptors: then when it lets go, or the port's next
        // connection unsticks it); it holds what it uses.
        self.stop.store(true, Ordering::Release);
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
        let mut gone = self.held.gone.lock().unwrap_or_else(|p| p.into_inner());
        gone.push(self.pairs.clone());
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
            // writes the peer may make block.
            let (way, from, to) = {
                let pairs = pairs.lock().unwrap_or_else(|p| p.into_inner());
                let Some(p) = pairs.get(&key) else { continue };
                match p.way {
                    Way::In => (p.way, p.theirs.clone(), p.ours.clone()),
                    Way::Out => (p.way, p.ours.clone(), p.theirs.clone()),
                }
            };
            // Neither read waits (theirs is the peer's to make blocking). Ours is read
            // only here, so it holds what woke the thread; theirs may have been read
            // by the peer in between, and then there is nothing to pass on.
            if !crate::sys::read_eventfd_nowait(from.as_fd()).unwrap_or(false) && way == Way::In {
                continue;
            }
            // The one call that can wait, for as long as the peer keeps its eventfd
            // full (then `Held::unstick`).
            let _ = rustix::io::write(&*to, &1u64.to_ne_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_pump_thread_ends_at_once() {
        let held = Arc::new(Held::default());
        let alive = || held.alive.load(Ordering::Acquire);
        let p = Pumps::start("t", &held, 1).unwrap();
        assert_eq!(alive(), 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let t = std::time::Instant::now();
        drop(p);
        while alive() > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
}
