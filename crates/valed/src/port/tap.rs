//! Persistent ports (`vale-ctl -n vi0 [--queues N]`): a TAP interface valed creates and
//! keeps, with a 12-byte virtio-net header and TSO offloads, so TCP hands the switch
//! 64 KiB frames. With several queues it is a multiqueue TAP (`IFF_MULTI_QUEUE`), one
//! descriptor per queue: queue `i` is the switch port's TX ring `i` and RX ring `i`,
//! each behind its own lock, so the threads of a switch of several serve them in
//! parallel ([`Pairs`]).

use super::fd_io::{self, Fault, ReadEnd};
use super::{
    AfterDetach, Attach, Backend, Direct, DrivenPort, MAX_FRAME, Pairs, PortCounters, PortRings,
    Start, Watcher,
};
use crate::error::{CtlError, PortError};
use crate::sys;
use rustix::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The control side: the TAP device's queues (the interface exists while valed holds
/// them).
pub struct Tap {
    fds: Vec<OwnedFd>,
    /// Each queue's own counters, with several (the port's counters are their sum);
    /// empty with one queue, which counts into the port's directly.
    per_queue: Vec<Arc<PortCounters>>,
}

impl Tap {
    /// What [`Tap::create`] refuses before it asks the system: a queue count out of
    /// range, a name that is no interface name or names a switch port.
    pub fn check(name: &str, queues: u16) -> Result<(), CtlError> {
        if !(1..=sys::MAX_TAP_QUEUES).contains(&queues) {
            return Err(CtlError::BadRequest(format!(
                "--queues {queues}: a TAP port has 1 to {} queues (one descriptor, and one \
                 TX and one RX ring of the port, each)",
                sys::MAX_TAP_QUEUES
            )));
        }
        sys::check_ifname(name).map_err(|e| CtlError::BadName(e.to_string()))?;
        if name.starts_with("vale") {
            return Err(CtlError::BadName(format!(
                "{name}: a persistent port's name may not start with `vale` (that names a switch port)"
            )));
        }
        Ok(())
    }

    /// TAP interface `name` with `queues` queues (1 to [`sys::MAX_TAP_QUEUES`]).
    pub fn create(name: &str, queues: u16) -> Result<Tap, CtlError> {
        Tap::check(name, queues)?;
        if sys::if_index(name).is_some() {
            return Err(CtlError::Exists(format!(
                "{name} already exists (see `ip link` and `vale-ctl list`)"
            )));
        }
        let fds = sys::tap_create(name, queues).map_err(|e| {
            if e.kind() == std::io::ErrorKind::Unsupported {
                CtlError::BadRequest(format!(
                    "cannot create TAP interface {name} with {queues} queues: {e}; without \
                     --queues it has one"
                ))
            } else if queues > 1 {
                CtlError::Internal(format!(
                    "cannot create TAP interface {name} with {queues} queues: {e} (valed needs \
                     CAP_NET_ADMIN and /dev/net/tun, and a kernel with multiqueue TAP devices; \
                     without --queues it has one)"
                ))
            } else {
                CtlError::Internal(format!(
                    "cannot create TAP interface {name}: {e} (valed needs CAP_NET_ADMIN and /dev/net/tun)"
                ))
            }
        })?;
        tracing::info!(interface = name, queues, "persistent port (TAP) created");
        let per_queue = if queues > 1 {
            (0..queues).map(|_| Arc::default()).collect()
        } else {
            Vec::new()
        };
        Ok(Tap { fds, per_queue })
    }
}

impl Backend for Tap {
    fn kind(&self) -> &'static str {
        "tap"
    }

    fn attach(&self) -> Attach {
        Attach {
            hdr_len: sys::TAP_VNET_HDR,
            direct: true,
        }
    }

    /// One ring each way per queue (the host ports' shape otherwise).
    fn geometry(&self, limits: &vale_switch::Limits) -> Result<vale_abi::PortGeometry, CtlError> {
        let g = super::host_geometry(limits)?;
        let n = self.fds.len() as u16;
        Ok(vale_abi::PortGeometry {
            tx_rings: n,
            rx_rings: n,
            ..g
        })
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let mut rings = vec![cx.rings];
        rings.extend(cx.more_rings);
        if rings.len() != self.fds.len() {
            return Err(PortError::Refused(format!(
                "{} ring pairs for {} TAP queues",
                rings.len(),
                self.fds.len()
            )));
        }
        let mut queues = Vec::with_capacity(rings.len());
        for (i, (fd, rings)) in self.fds.iter().zip(rings).enumerate() {
            let dev = fd
                .try_clone()
                .map_err(|e| PortError::io("dup the TAP descriptor", e))?;
            let counters = self.per_queue.get(i).unwrap_or(&cx.counters).clone();
            queues.push(Mutex::new(Queue {
                dev,
                rings,
                buf: vec![0u8; MAX_FRAME],
                gone: false,
                // Folded from where the queue's counters stand: they outlive attachments,
                // and the port's hold what they counted before.
                folded: folded_now(&counters),
                counters,
            }));
        }
        let io = Arc::new(Queues {
            queues,
            multi: self.fds.len() > 1,
            port: cx.counters,
            watcher: cx.watcher,
            name: cx.name.to_string(),
            warned: AtomicBool::new(false),
        });
        // Into the set once the queues are there to drop out of it again (`Queues::drop`).
        for q in &io.queues {
            io.watcher.add(&lock(q).dev)?;
        }
        Ok(Box::new(TapIo { io }))
    }

    fn stop(&mut self) -> AfterDetach {
        AfterDetach::Keep
    }

    fn persistent(&self) -> bool {
        true
    }

    /// "TAP interface"; with several queues, how many and each one's frames each way
    /// ("TAP interface, 2 queues (from_host/to_host per queue: q0 120/118, q1 7/9)"),
    /// which shows how the kernel spreads its flows.
    fn describe(&self) -> String {
        if self.per_queue.is_empty() {
            return "TAP interface".into();
        }
        let per: Vec<String> = self
            .per_queue
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let s = c.snapshot();
                format!("q{i} {}/{}", s.from_host, s.to_host)
            })
            .collect();
        format!(
            "TAP interface, {} queues (from_host/to_host per queue: {})",
            self.per_queue.len(),
            per.join(", ")
        )
    }
}

/// The counters a queue's own are folded into the port's by: those its loops write.
const FOLDED: usize = 8;

fn folded_fields(c: &PortCounters) -> [&AtomicU64; FOLDED] {
    [
        &c.from_host,
        &c.from_host_bytes,
        &c.to_host,
        &c.to_host_bytes,
        &c.truncated,
        &c.write_errors,
        &c.read_errors,
        &c.too_big,
    ]
}

fn folded_now(c: &PortCounters) -> [u64; FOLDED] {
    folded_fields(c).map(|f| f.load(Ordering::Relaxed))
}

/// One queue of the TAP: its descriptor, its pair of rings and its scratch buffer.
struct Queue {
    /// A twin of the backend's descriptor of this queue.
    dev: OwnedFd,
    rings: PortRings,
    buf: Vec<u8>,
    /// The interface was deleted: nothing is read from this queue again.
    gone: bool,
    /// Where its loops count: the port's counters with one queue; with several, the
    /// queue's own (only this queue's lock holder writes them, as `bump` wants), which
    /// [`Queues::fold`] adds to the port's.
    counters: Arc<PortCounters>,
    /// What of `counters` the port's counters hold already ([`folded_fields`]).
    folded: [u64; FOLDED],
}

/// Every queue, each behind its own lock: the lane's thread serves them all through
/// [`TapIo`], or on a switch of several threads each worker its own ([`Pairs`]).
struct Queues {
    queues: Vec<Mutex<Queue>>,
    /// Several queues: each counts into its own counters, folded into `port`.
    multi: bool,
    port: Arc<PortCounters>,
    watcher: Watcher,
    name: String,
    /// The interface's deletion was logged and counted (once for all its queues).
    warned: AtomicBool,
}

/// A queue's lock; a thread that panicked holding it left the queue as usable as any
/// (its rings are the switch's to check).
fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queues {
    /// What queue `q`'s loops counted since the last fold goes into the port's counters
    /// (with several queues; with one they counted there).
    fn fold(&self, q: &mut Queue) {
        if !self.multi {
            return;
        }
        let port = folded_fields(&self.port);
        for ((f, p), done) in folded_fields(&q.counters)
            .into_iter()
            .zip(port)
            .zip(q.folded.iter_mut())
        {
            let now = f.load(Ordering::Relaxed);
            if now != *done {
                p.fetch_add(now.wrapping_sub(*done), Ordering::Relaxed);
                *done = now;
            }
        }
    }

    /// Queue `q`'s descriptor no longer refers to the interface (it was deleted): out
    /// of the epoll set, nothing read from it again (what the switch sends it is
    /// counted as `write_errors`).
    fn gone(&self, q: &mut Queue) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                interface = %self.name,
                "host port's interface was deleted; `vale-ctl -d` and `-r` it, `-n` makes a new one"
            );
            PortCounters::lost(&self.port.read_errors, 1);
        }
        self.port.gone.store(true, Ordering::Relaxed);
        q.gone = true;
        self.watcher.remove(&q.dev);
    }

    fn pull_one(&self, i: usize) -> usize {
        let mut q = lock(&self.queues[i]);
        if q.gone {
            fd_io::fresh_tx(&q.rings);
            return 0;
        }
        let q = &mut *q;
        let (got, end) = fd_io::read_frames(&q.dev, &q.rings, &q.counters, &mut q.buf);
        if end == ReadEnd::Gone {
            self.gone(q);
        }
        self.fold(q);
        got
    }

    fn push_one(&self, i: usize) -> usize {
        let mut q = lock(&self.queues[i]);
        let q = &mut *q;
        let sent = fd_io::write_frames(&q.dev, &q.rings, &q.counters, &mut q.buf, None);
        if sent > 0 {
            self.fold(q);
        }
        sent
    }

    /// epoll reported ERR or HUP on one of the queues' descriptors (it does not say
    /// which): each that reports it now is looked at. A TAP reports errors only once its
    /// interface is deleted, and is then done for.
    fn fault(&self) {
        use rustix::event::{PollFd, PollFlags, Timespec};
        for m in &self.queues {
            let mut q = lock(m);
            if q.gone {
                continue;
            }
            let now = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            let mut p = [PollFd::new(&q.dev, PollFlags::IN)];
            let bad = matches!(rustix::event::poll(&mut p, Some(&now)), Ok(n) if n > 0)
                && p[0]
                    .revents()
                    .intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL);
            if bad && fd_io::read_fault(&q.dev, &q.counters, &self.name) == Fault::Gone {
                self.gone(&mut q);
            }
            self.fold(&mut q);
        }
    }
}

impl Pairs for Queues {
    fn count(&self) -> usize {
        self.queues.len()
    }

    fn pull(&self, i: usize) -> usize {
        self.pull_one(i)
    }

    fn push(&self, i: usize) -> usize {
        self.push_one(i)
    }

    /// A TAP's descriptors wake the lane through epoll whatever the thread does.
    fn arm(&self, _i: usize) -> bool {
        false
    }

    fn disarm(&self, _i: usize) {}
}

impl Drop for Queues {
    fn drop(&mut self) {
        // The backend keeps the device open, so closing these twins leaves them in the
        // set.
        for q in &self.queues {
            self.watcher.remove(&lock(q).dev);
        }
    }
}

/// The forwarding thread's side of an attached TAP.
struct TapIo {
    io: Arc<Queues>,
}

impl DrivenPort for TapIo {
    fn pull(&mut self) -> usize {
        (0..self.io.queues.len()).map(|i| self.io.pull_one(i)).sum()
    }

    fn push(&mut self) -> usize {
        (0..self.io.queues.len()).map(|i| self.io.push_one(i)).sum()
    }

    /// Into the queue of the RX ring the engine chose.
    fn send(&mut self, pkt: &Direct<'_>) -> bool {
        let n = self.io.queues.len();
        let mut q = lock(&self.io.queues[usize::from(pkt.ring) % n]);
        let q = &mut *q;
        let taken = fd_io::write_direct(&q.dev, &q.counters, pkt);
        self.io.fold(q);
        taken
    }

    fn fault(&mut self) {
        self.io.fault();
    }

    /// A TAP of several queues offers them to the threads of its switch.
    fn pairs(&self) -> Option<Arc<dyn Pairs>> {
        (self.io.queues.len() > 1).then(|| self.io.clone() as Arc<dyn Pairs>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_outside_one_to_sixteen_are_refused_with_the_range() {
        for bad in [0, sys::MAX_TAP_QUEUES + 1, u16::MAX] {
            let Err(e) = Tap::create("vq0", bad) else {
                panic!("--queues {bad} accepted");
            };
            assert_eq!(e.kind(), vale::proto::ErrorKind::BadRequest);
            let m = e.to_string();
            assert!(m.contains(&format!("--queues {bad}")), "{m}");
            assert!(m.contains("1 to 16 queues"), "{m}");
        }
    }

    /// What the queues' own counters gained goes into the port's once, whichever
    /// queue's lock holder folds it, and a fold with nothing new adds nothing.
    #[test]
    fn queue_counters_fold_into_the_port_once() {
        let port = Arc::new(PortCounters::default());
        let own: Vec<Arc<PortCounters>> = (0..2).map(|_| Arc::default()).collect();
        // Counted before this attachment: already in the port's.
        own[1].count_in(100);
        port.count_in(100);
        let g = vale_abi::PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            ..Default::default()
        };
        let region = vale_abi::Region::create("tap-fold-test", g).unwrap();
        let rings = || PortRings {
            tx: vale_abi::AppRing::new(region.ring(vale_abi::Dir::Tx, 0).unwrap()),
            rx: vale_abi::AppRing::new(region.ring(vale_abi::Dir::Rx, 0).unwrap()),
        };
        let ep = Arc::new(
            rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC).unwrap(),
        );
        let null = || {
            rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDWR,
                rustix::fs::Mode::empty(),
            )
            .unwrap()
        };
        let io = Queues {
            queues: own
                .iter()
                .map(|c| {
                    Mutex::new(Queue {
                        dev: null(),
                        rings: rings(),
                        buf: Vec::new(),
                        gone: false,
                        folded: folded_now(c),
                        counters: c.clone(),
                    })
                })
                .collect(),
            multi: true,
            port: port.clone(),
            watcher: Watcher::new(ep, 1),
            name: "t".into(),
            warned: AtomicBool::new(false),
        };
        own[0].count_in(60);
        own[0].count_out(42);
        own[1].count_out(1514);
        PortCounters::lost(&own[1].write_errors, 2);
        for i in 0..2 {
            io.fold(&mut lock(&io.queues[i]));
            io.fold(&mut lock(&io.queues[i]));
        }
        let s = port.snapshot();
        assert_eq!((s.from_host, s.from_host_bytes), (2, 160));
        assert_eq!((s.to_host, s.to_host_bytes), (2, 1556));
        assert_eq!(s.write_errors, 2);
    }
}
