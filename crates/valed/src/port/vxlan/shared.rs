//! The receiving socket of VXLAN uplinks: one UDP socket per (bound address, port),
//! shared by every uplink on it, as Linux shares one socket among the `vxlan` devices
//! of a `dstport`. The natural deployment is one uplink per VNI, all on UDP 4789 of
//! one address; two sockets on it would not work (the second bind fails, and with
//! `SO_REUSEPORT` the kernel would hand each datagram to either at random).
//!
//! Whichever uplink's forwarding thread reads a batch keeps its own VNIs' datagrams
//! and queues the others' in their uplink's inbox (bounded, `vxlan_queue_full` when it
//! overflows), waking that uplink's lane; its next pass takes them. Datagrams no uplink
//! of the socket takes (malformed, or of a VNI none has) are counted on the socket's
//! oldest uplink, so the counts do not depend on which thread read them.

use super::Conf;
use crate::error::CtlError;
use crate::port::{PortCounters, Waker};
use rustix::fd::OwnedFd;
use rustix::net::sockopt;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

/// Datagrams one uplink's inbox holds for it (a burst of a few receive batches).
const INBOX_CAP: usize = 1024;

/// Every socket open, to find the one an uplink shares.
static SOCKETS: Mutex<Vec<Weak<RxSocket>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A multicast group joined on a socket: the group, the local address, the ifindex.
type Group = (IpAddr, IpAddr, u32);

/// One receiving socket and the uplinks on it.
pub struct RxSocket {
    /// The address and port it is bound to.
    pub bound: SocketAddr,
    pub fd: OwnedFd,
    members: RwLock<Vec<Member>>,
    /// The multicast groups joined on it (group, local address, ifindex) with how many
    /// uplinks use each.
    groups: Mutex<Vec<(Group, usize)>>,
    /// Whether reads on it come as coalesced trains (`UDP_GRO`): a socket's choice,
    /// made by the first uplink that reads it (its `offloads`), which every other
    /// uplink on it follows, since one reading trains it did not ask for would see them
    /// as truncated datagrams.
    pub gro: std::sync::OnceLock<bool>,
}

struct Member {
    id: u64,
    /// The host port's name, for messages.
    name: String,
    /// The VNIs it takes: `--vni`, then `--map`'s.
    vnis: Vec<u32>,
    /// Where others put its datagrams, once it runs.
    inbox: Option<Arc<Inbox>>,
}

/// Datagrams read by another uplink's thread for this one, with their senders.
pub struct Inbox {
    queue: Mutex<Queue>,
    /// How many are queued, read without the lock on every pass of the owner.
    len: AtomicUsize,
    waker: Waker,
    pub counters: Arc<PortCounters>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<(Option<IpAddr>, Vec<u8>)>,
    /// Buffers of taken datagrams, used again.
    spare: Vec<Vec<u8>>,
}

impl Inbox {
    pub fn new(waker: Waker, counters: Arc<PortCounters>) -> Inbox {
        Inbox {
            queue: Mutex::default(),
            len: AtomicUsize::new(0),
            waker,
            counters,
        }
    }

    /// Queues a copy of `datagram` and wakes its uplink's lane; counts it
    /// `vxlan_queue_full` if the inbox is full.
    fn put(&self, from: Option<IpAddr>, datagram: &[u8]) {
        let Ok(mut q) = self.queue.lock() else {
            return;
        };
        if q.items.len() >= INBOX_CAP {
            PortCounters::lost(&self.counters.vxlan_queue_full, 1);
            return;
        }
        let mut b = q.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(datagram);
        q.items.push_back((from, b));
        self.len.store(q.items.len(), Ordering::Release);
        drop(q);
        self.waker.wake();
    }

    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Hands up to `max` queued datagrams to `f`, oldest first; returns how many.
    pub fn take(&self, max: usize, mut f: impl FnMut(Option<IpAddr>, &[u8])) -> usize {
        let Ok(mut q) = self.queue.lock() else {
            return 0;
        };
        let mut n = 0;
        while n < max {
            let Some((from, b)) = q.items.pop_front() else {
                break;
            };
            f(from, &b);
            q.spare.push(b);
            n += 1;
        }
        self.len.store(q.items.len(), Ordering::Release);
        n
    }
}

impl RxSocket {
    /// A datagram the reading uplink does not take (of `vni`, if it has one): into the
    /// inbox of the uplink that has the VNI, or counted as `reason` on the socket's
    /// oldest running uplink (`own` if none runs). Counted with an atomic add, since
    /// another thread may count there too.
    pub fn other(
        &self,
        vni: Option<u32>,
        from: Option<IpAddr>,
        datagram: &[u8],
        own: &PortCounters,
        reason: fn(&PortCounters) -> &AtomicU64,
    ) {
        let Ok(m) = self.members.read() else {
            PortCounters::lost(reason(own), 1);
            return;
        };
        if let Some(v) = vni
            && let Some(inbox) = m
                .iter()
                .find(|x| x.vnis.contains(&v))
                .and_then(|x| x.inbox.as_ref())
        {
            inbox.put(from, datagram);
            return;
        }
        let oldest = m.iter().find_map(|x| x.inbox.as_ref());
        PortCounters::lost(reason(oldest.map_or(own, |i| &i.counters)), 1);
    }

    /// How many uplinks share it.
    pub fn members(&self) -> usize {
        self.members.read().map_or(0, |m| m.len())
    }
}

/// One uplink's place on its socket. Dropping it frees its VNIs and multicast group;
/// the socket closes when the last uplink's place and data plane are gone.
pub struct Membership {
    pub sock: Arc<RxSocket>,
    id: u64,
    group: Option<Group>,
}

impl Membership {
    /// The uplink runs: others' threads may now queue its datagrams.
    pub fn set_inbox(&self, inbox: Arc<Inbox>) {
        if let Ok(mut m) = self.sock.members.write()
            && let Some(x) = m.iter_mut().find(|x| x.id == self.id)
        {
            x.inbox = Some(inbox);
        }
    }

    /// The uplink stopped: its datagrams are counted as nobody's again.
    pub fn clear_inbox(&self) {
        if let Ok(mut m) = self.sock.members.write()
            && let Some(x) = m.iter_mut().find(|x| x.id == self.id)
        {
            x.inbox = None;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Ok(mut m) = self.sock.members.write() {
            m.retain(|x| x.id != self.id);
        }
        if let Some(g) = self.group {
            leave_group(&self.sock, g);
        }
    }
}

fn io(what: &str, e: std::io::Error) -> CtlError {
    CtlError::Internal(format!("VXLAN {what}: {e}"))
}

/// Takes a place for uplink `name` made with `c` on the socket its address and port
/// name: the one open already, or a new one. Refused with a reason when another uplink
/// there has one of its VNIs, or the port is bound in a way this one cannot share.
pub fn join(name: &str, c: &Conf) -> Result<Membership, CtlError> {
    let mut all = SOCKETS
        .lock()
        .map_err(|_| io("sockets", std::io::Error::other("poisoned")))?;
    all.retain(|w| w.strong_count() > 0);
    // A group's datagrams are addressed to the group, not to `local`: the port is bound
    // on every address then (and a link-local `local` on its link).
    let bound = c.at(
        if c.group.is_some() {
            super::unspecified(c.local.is_ipv4())
        } else {
            c.local
        },
        c.port,
    );
    let live: Vec<Arc<RxSocket>> = all.iter().filter_map(Weak::upgrade).collect();
    let vnis: Vec<u32> = std::iter::once(c.vni)
        .chain(c.map.iter().map(|m| m.0))
        .collect();
    let sock = match live.iter().find(|s| s.bound == bound) {
        Some(s) => {
            let m = s
                .members
                .read()
                .map_err(|_| io("sockets", std::io::Error::other("poisoned")))?;
            for x in m.iter() {
                if let Some(v) = vnis.iter().find(|v| x.vnis.contains(v)) {
                    return Err(CtlError::Exists(format!(
                        "VNI {v} on UDP {bound} is VXLAN port `{}`'s already: each VNI of a socket goes to one uplink (pick another --vni, or carry it with --map on `{}`)",
                        x.name, x.name
                    )));
                }
            }
            s.clone()
        }
        None => {
            if let Some(s) = live.iter().find(|s| {
                s.bound.port() == bound.port()
                    && s.bound.is_ipv4() == bound.is_ipv4()
                    && (s.bound.ip().is_unspecified() || bound.ip().is_unspecified())
            }) {
                let who = s
                    .members
                    .read()
                    .ok()
                    .and_then(|m| m.first().map(|x| x.name.clone()))
                    .unwrap_or_default();
                return Err(CtlError::Busy(format!(
                    "cannot bind UDP {bound}: VXLAN port `{who}` has UDP {} (an uplink with --group takes the port on every address, one without only on --local): give the uplinks on port {} a --group each, or none",
                    s.bound,
                    bound.port()
                )));
            }
            let s = Arc::new(RxSocket {
                bound,
                fd: open_rx(bound)?,
                members: RwLock::new(Vec::new()),
                groups: Mutex::new(Vec::new()),
                gro: std::sync::OnceLock::new(),
            });
            all.push(Arc::downgrade(&s));
            s
        }
    };
    let group = match c.group {
        Some(g) => {
            let key = (g, c.local, c.dev.as_ref().map_or(c.scope, |d| d.1));
            join_group(&sock, key)?;
            Some(key)
        }
        None => None,
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut m) = sock.members.write() {
        m.push(Member {
            id,
            name: name.to_string(),
            vnis,
            inbox: None,
        });
    }
    Ok(Membership { sock, id, group })
}

fn open_rx(bound: SocketAddr) -> Result<OwnedFd, CtlError> {
    let rx = super::udp_socket(if bound.is_ipv4() {
        rustix::net::AddressFamily::INET
    } else {
        rustix::net::AddressFamily::INET6
    })
    .map_err(|e| io("socket", e))?;
    if bound.is_ipv6() {
        sockopt::set_ipv6_v6only(&rx, true).map_err(|e| io("IPV6_V6ONLY", e.into()))?;
    }
    rustix::net::bind(&rx, &bound).map_err(|e| {
        let why = match e {
            rustix::io::Errno::ADDRINUSE => {
                " (a kernel vxlan device with this dstport in this network namespace, or another program, uses it)"
            }
            rustix::io::Errno::ADDRNOTAVAIL => " (--local must be an address of this host)",
            _ => "",
        };
        CtlError::Busy(format!(
            "cannot bind UDP {} port {}: {e}{why}",
            bound.ip(),
            bound.port()
        ))
    })?;
    // Bursts from several remotes at once: room for a few thousand datagrams.
    let _ = sockopt::set_socket_recv_buffer_size_force(&rx, 4 << 20)
        .or_else(|_| sockopt::set_socket_recv_buffer_size(&rx, 4 << 20));
    Ok(rx)
}

fn join_group(s: &RxSocket, key: Group) -> Result<(), CtlError> {
    let mut gs = s
        .groups
        .lock()
        .map_err(|_| io("groups", std::io::Error::other("poisoned")))?;
    if let Some(g) = gs.iter_mut().find(|g| g.0 == key) {
        g.1 += 1;
        return Ok(());
    }
    let (g, local, ifindex) = key;
    let r = match (g, local) {
        (IpAddr::V4(g), IpAddr::V4(l)) => {
            sockopt::set_ip_add_membership_with_ifindex(&s.fd, &g, &l, ifindex)
        }
        (IpAddr::V6(g), _) => sockopt::set_ipv6_add_membership(&s.fd, &g, ifindex),
        _ => Ok(()),
    };
    r.map_err(|e| io(&format!("joining group {g}"), e.into()))?;
    gs.push((key, 1));
    Ok(())
}

fn leave_group(s: &RxSocket, key: Group) {
    let Ok(mut gs) = s.groups.lock() else {
        return;
    };
    let Some(i) = gs.iter().position(|g| g.0 == key) else {
        return;
    };
    gs[i].1 -= 1;
    if gs[i].1 > 0 {
        return;
    }
    gs.remove(i);
    let (g, local, ifindex) = key;
    let _ = match (g, local) {
        (IpAddr::V4(g), IpAddr::V4(l)) => {
            sockopt::set_ip_drop_membership_with_ifindex(&s.fd, &g, &l, ifindex)
        }
        (IpAddr::V6(g), _) => sockopt::set_ipv6_drop_membership(&s.fd, &g, ifindex),
        _ => Ok(()),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An uplink's conf on 127.0.0.1:`port` (nothing is sent: only bound).
    fn conf(vni: u32, port: u16, map: &[&str]) -> Conf {
        let map: Vec<String> = map.iter().map(|s| s.to_string()).collect();
        Conf::parse(
            vni,
            "127.0.0.1",
            port,
            &["127.0.0.2".into()],
            None,
            None,
            true,
            None,
        )
        .and_then(|c| c.with_map(&map))
        .unwrap()
    }

    /// A UDP port of 127.0.0.1 that was free a moment ago.
    fn free_port() -> u16 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    }

    fn waker() -> Waker {
        let fd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        Waker(Arc::new(fd))
    }

    #[test]
    fn uplinks_share_a_socket_by_vni_and_it_closes_with_the_last() {
        let port = free_port();
        let a = join("a", &conf(42, port, &[])).unwrap();
        let b = join("b", &conf(43, port, &["44:20"])).unwrap();
        assert!(Arc::ptr_eq(&a.sock, &b.sock), "one socket for both");
        assert_eq!(a.sock.members(), 2);
        let e = join("c", &conf(44, port, &[])).err().unwrap().to_string();
        assert!(
            e.contains("VNI 44 on UDP 127.0.0.1:") && e.contains("VXLAN port `b`'s already"),
            "{e}"
        );
        // Datagrams of b's VNIs go to b's inbox once it runs; nobody's are counted on
        // the oldest running uplink.
        let (ca, cb) = (
            Arc::new(PortCounters::default()),
            Arc::new(PortCounters::default()),
        );
        let own = PortCounters::default();
        let foreign: fn(&PortCounters) -> &AtomicU64 = |c| &c.vxlan_foreign_vni;
        b.sock.other(Some(43), None, b"x", &own, foreign);
        assert_eq!(
            own.vxlan_foreign_vni.load(Ordering::Relaxed),
            1,
            "b does not run yet"
        );
        a.set_inbox(Arc::new(Inbox::new(waker(), ca.clone())));
        let ib = Arc::new(Inbox::new(waker(), cb.clone()));
        b.set_inbox(ib.clone());
        let from = Some(IpAddr::from([127, 0, 0, 2]));
        b.sock.other(Some(44), from, b"dgram", &own, foreign);
        b.sock.other(Some(45), None, b"x", &own, foreign);
        b.sock.other(None, None, b"x", &own, |c| &c.vxlan_too_short);
        assert_eq!(ca.vxlan_foreign_vni.load(Ordering::Relaxed), 1);
        assert_eq!(ca.vxlan_too_short.load(Ordering::Relaxed), 1);
        let mut got = Vec::new();
        assert_eq!(ib.take(8, |f, d| got.push((f, d.to_vec()))), 1);
        assert_eq!(got, vec![(from, b"dgram".to_vec())]);
        assert!(ib.is_empty());
        // A full inbox counts what it cannot hold.
        for _ in 0..INBOX_CAP + 3 {
            b.sock.other(Some(43), None, b"x", &own, foreign);
        }
        assert_eq!(cb.vxlan_queue_full.load(Ordering::Relaxed), 3);
        assert_eq!(ib.take(usize::MAX, |_, _| ()), INBOX_CAP);
        // a leaves: b keeps the socket; b leaves: the port is free again.
        let sock = Arc::downgrade(&a.sock);
        drop(a);
        assert_eq!(b.sock.members(), 1);
        drop(b);
        assert!(sock.upgrade().is_none(), "closed with the last uplink");
        let again = join("a", &conf(42, port, &[])).unwrap();
        assert_eq!(again.sock.members(), 1);
    }
}
