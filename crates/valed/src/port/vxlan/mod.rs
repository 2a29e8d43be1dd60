//! VXLAN uplinks (RFC 7348, `vale-ctl vxlan`): one switch port per VNI whose frames
//! travel in UDP datagrams to other VTEPs (Linux's `vxlan` devices, Open vSwitch,
//! another valed), so that switches on several hosts form one Ethernet segment.
//!
//! valed receives on one socket bound to the VXLAN port and sends from a small pool of
//! sockets, one per UDP source port, picked by a hash of the inner flow. Broadcast,
//! multicast and unknown unicast go to every remote (head-end replication) and to the
//! multicast group, if one is set; with learning, the VTEP behind each inner source
//! address is learned from the outer source address, and unicast to it goes there
//! alone. Datagrams are sent with DF set (`IP_PMTUDISC_DO`): a frame too large for the
//! underlay is counted (`too_big`), never fragmented or cut.

mod io;
mod shared;
pub mod vtep;

use super::{AfterDetach, Attach, Backend, DrivenPort, Start};
use crate::error::{CtlError, PortError};
use crate::sys::udp::SockAddr;
use rustix::fd::OwnedFd;
use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use vale_abi::PortGeometry;
use vale_switch::Limits;

/// Source-port sockets when `src_ports` does not say.
const DEFAULT_SOURCE_PORTS: usize = 8;
/// Most source-port sockets (`src_ports` ranges larger than this are refused).
const MAX_SOURCE_PORTS: usize = 64;
/// Learned addresses one port keeps, and how long (Linux's `ageing 300`).
const VTEP_CAPACITY: usize = 4096;
const VTEP_MAX_AGE: u64 = 300;
/// Largest datagram received whole; longer ones are counted `truncated`. Inner frames
/// up to this size less the VXLAN header are sent.
pub const DATAGRAM_CAP: usize = 16384;
/// Learned addresses `vale-ctl list` names (the count is always given).
const SHOWN_VTEPS: usize = 32;

/// What a VXLAN port was made with, checked.
#[derive(Debug, Clone)]
pub struct Conf {
    pub vni: u32,
    pub local: IpAddr,
    pub port: u16,
    pub remotes: Vec<IpAddr>,
    /// The interface its IPv6 link-local addresses are on (their zone, `fe80::1%eth0`),
    /// by index; 0 if it has none.
    pub scope: u32,
    pub group: Option<IpAddr>,
    pub dev: Option<(String, u32)>,
    pub learning: bool,
    /// An inclusive range, or the kernel's choice.
    pub src_ports: Option<(u16, u16)>,
    /// More VNIs on the socket, each with the VLAN it carries.
    pub map: Vec<(u32, u16)>,
    /// UDP GSO and GRO where the kernel offers them.
    pub offloads: bool,
}

fn bad(msg: String) -> CtlError {
    CtlError::BadRequest(msg)
}

fn parse_ip(what: &str, s: &str) -> Result<IpAddr, CtlError> {
    s.parse().map_err(|_| {
        bad(format!(
            "{what} `{}` is not an IPv4 or IPv6 address",
            s.escape_default()
        ))
    })
}

fn link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v) if v.is_unicast_link_local())
}

/// An address, and for an IPv6 link-local one with a zone (`fe80::1%eth0`, or the
/// interface's index, `fe80::1%2`) the index of its interface.
fn parse_scoped(what: &str, s: &str) -> Result<(IpAddr, Option<u32>), CtlError> {
    let Some((a, zone)) = s.split_once('%') else {
        return Ok((parse_ip(what, s)?, None));
    };
    let ip = parse_ip(what, a)?;
    if !link_local(ip) {
        return Err(bad(format!(
            "{what} `{}`: a zone (%IF) goes only with an IPv6 link-local address (fe80::/10)",
            s.escape_default()
        )));
    }
    let index = match zone.parse::<u32>() {
        Ok(i) if i > 0 => Some(i),
        _ => crate::sys::if_index(zone),
    };
    let index = index.ok_or_else(|| {
        CtlError::NotFound(format!(
            "{what} `{}`: no interface `{}` here (see `ip link`)",
            s.escape_default(),
            zone.escape_default()
        ))
    })?;
    Ok((ip, Some(index)))
}

impl Conf {
    /// Checks a `PortSpec::Vxlan`'s fields, with messages that name the field and the fix.
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        vni: u32,
        local: &str,
        port: u16,
        remote: &[String],
        group: Option<&str>,
        dev: Option<&str>,
        learning: bool,
        src_ports: Option<&str>,
    ) -> Result<Conf, CtlError> {
        if vni > vale_wire::vxlan::MAX_VNI {
            return Err(bad(format!(
                "--vni {vni} does not fit in 24 bits (0..=16777215)"
            )));
        }
        if port == 0 {
            return Err(bad(
                "--port 0: the VXLAN port is 4789 unless you pick another".into(),
            ));
        }
        let (local, mut scope) = parse_scoped("--local", local)?;
        if local.is_unspecified() || local.is_multicast() {
            return Err(bad(format!(
                "--local {local}: name this host's own underlay address (the one the remotes send to)"
            )));
        }
        let same = |what: &str, a: IpAddr| {
            if a.is_ipv4() != local.is_ipv4() {
                Err(bad(format!(
                    "{what} {a} and --local {local} are not of one IP version"
                )))
            } else {
                Ok(a)
            }
        };
        let mut remotes = Vec::new();
        for r in remote {
            let (a, zone) = parse_scoped("--remote", r)?;
            let a = same("--remote", a)?;
            match (scope, zone) {
                (Some(s), Some(z)) if s != z => {
                    return Err(bad(format!(
                        "--remote {r} is on interface {z} and {} on interface {s}: an uplink's link-local addresses are on one link",
                        if link_local(local) {
                            "--local"
                        } else {
                            "another --remote"
                        }
                    )));
                }
                (None, Some(z)) => scope = Some(z),
                _ => {}
            }
            if a.is_multicast() || a.is_unspecified() {
                return Err(bad(format!(
                    "--remote {a} is not a VTEP's address (a multicast group goes in --group)"
                )));
            }
            if a == local {
                return Err(bad(format!(
                    "--remote {a} is --local: each flood would come back to this uplink"
                )));
            }
            if !remotes.contains(&a) {
                remotes.push(a);
            }
        }
        let group = match group {
            None => None,
            Some(g) => {
                let a = same("--group", parse_ip("--group", g)?)?;
                if !a.is_multicast() {
                    return Err(bad(format!("--group {a} is not a multicast address")));
                }
                Some(a)
            }
        };
        if scope.is_none()
            && let Some(a) = std::iter::once(local)
                .chain(remotes.iter().copied())
                .find(|&a| link_local(a))
        {
            return Err(bad(format!(
                "{a} is an IPv6 link-local address: name its interface as its zone ({a}%eth0)"
            )));
        }
        if remotes.is_empty() && group.is_none() {
            return Err(bad(
                "a VXLAN port needs --remote IP (one per VTEP) or --group MCAST --dev IF: where broadcast and unknown unicast go".into(),
            ));
        }
        let dev = match dev {
            None => None,
            Some(d) => {
                crate::sys::check_ifname(d).map_err(|e| bad(format!("--dev {d}: {e}")))?;
                let idx = crate::sys::if_index(d).ok_or_else(|| {
                    CtlError::NotFound(format!("--dev {d}: no such interface (see `ip link`)"))
                })?;
                Some((d.to_string(), idx))
            }
        };
        let src_ports = match src_ports {
            None => None,
            Some(r) => {
                let range = r
                    .split_once('-')
                    .and_then(|(a, b)| {
                        Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                    })
                    .filter(|&(a, b)| a > 0 && a <= b)
                    .ok_or_else(|| {
                        bad(format!(
                            "--src-ports `{}` is not a range LO-HI of UDP ports (e.g. 49152-49159)",
                            r.escape_default()
                        ))
                    })?;
                let n = usize::from(range.1 - range.0) + 1;
                if n > MAX_SOURCE_PORTS {
                    return Err(CtlError::Limit(format!(
                        "--src-ports {r} is {n} ports; the limit is {MAX_SOURCE_PORTS} (one socket each)"
                    )));
                }
                Some(range)
            }
        };
        Ok(Conf {
            vni,
            local,
            port,
            remotes,
            scope: scope.unwrap_or(0),
            group,
            dev,
            learning,
            src_ports,
            map: Vec::new(),
            offloads: true,
        })
    }

    /// The `VNI:VID` entries of `--map`: each VNI (not --vni) and each VLAN (1-4094)
    /// once.
    pub fn with_map(mut self, map: &[String]) -> Result<Conf, CtlError> {
        for m in map {
            let e = m
                .split_once(':')
                .and_then(|(a, b)| {
                    Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u16>().ok()?))
                })
                .filter(|&(vni, vid)| vni <= vale_wire::vxlan::MAX_VNI && (1..=4094).contains(&vid))
                .ok_or_else(|| {
                    bad(format!(
                        "--map `{}` is not VNI:VID (a 24-bit VNI and a VLAN 1-4094, e.g. 43:20)",
                        m.escape_default()
                    ))
                })?;
            if e.0 == self.vni || self.map.iter().any(|x| x.0 == e.0) {
                return Err(bad(format!("--map {m}: VNI {} is mapped already", e.0)));
            }
            if self.map.iter().any(|x| x.1 == e.1) {
                return Err(bad(format!("--map {m}: VLAN {} is mapped already", e.1)));
            }
            self.map.push(e);
        }
        Ok(self)
    }

    /// With `false`, no UDP GSO or GRO: a datagram per send and per read.
    pub fn with_offloads(mut self, on: bool) -> Conf {
        self.offloads = on;
        self
    }

    fn family(&self) -> AddressFamily {
        if self.local.is_ipv4() {
            AddressFamily::INET
        } else {
            AddressFamily::INET6
        }
    }

    /// `ip`'s socket address on `port`, with the uplink's zone if `ip` is link-local
    /// (without it the kernel cannot tell which link it is on).
    pub fn at(&self, ip: IpAddr, port: u16) -> SocketAddr {
        match ip {
            IpAddr::V6(v) if link_local(ip) => {
                SocketAddr::V6(std::net::SocketAddrV6::new(v, port, 0, self.scope))
            }
            _ => SocketAddr::new(ip, port),
        }
    }

    /// The socket address the port sends to for VTEP `ip`.
    pub fn dest(&self, ip: IpAddr) -> SockAddr {
        SockAddr::new(self.at(ip, self.port))
    }

    /// IP, UDP and VXLAN headers around each frame (and the outer Ethernet header is
    /// not in the MTU): 50 bytes over IPv4, 70 over IPv6.
    pub fn overhead(&self) -> u32 {
        if self.local.is_ipv4() { 50 } else { 70 }
    }

    /// The underlay's MTU towards the remotes: `--dev`'s, or the route's to the first
    /// remote (or the group), as the kernel reports it for a connected socket.
    fn underlay_mtu(&self) -> Option<u32> {
        if let Some((d, _)) = &self.dev {
            return std::fs::read_to_string(format!("/sys/class/net/{d}/mtu"))
                .ok()?
                .trim()
                .parse()
                .ok();
        }
        let to = self.remotes.first().copied().or(self.group)?;
        let s = udp_socket(self.family()).ok()?;
        rustix::net::connect(&s, &self.at(to, self.port)).ok()?;
        if to.is_ipv4() {
            sockopt::ip_mtu(&s).ok()
        } else {
            sockopt::ipv6_mtu(&s).ok()
        }
    }
}

fn udp_socket(family: AddressFamily) -> std::io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        family,
        SocketType::DGRAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        Some(ipproto::UDP),
    )?)
}

fn unspecified(v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

/// Opens and binds the port's sending sockets, one per source port: errors (a source
/// port taken, the address is not this host's) reach `vale-ctl` when the port is made.
fn open_tx(c: &Conf) -> Result<Vec<OwnedFd>, CtlError> {
    let io = |what: &str, e: std::io::Error| CtlError::Internal(format!("VXLAN {what}: {e}"));
    let v4 = c.local.is_ipv4();
    let ports: Vec<u16> = match c.src_ports {
        Some((lo, hi)) => (lo..=hi).collect(),
        None => vec![0; DEFAULT_SOURCE_PORTS],
    };
    let mut tx = Vec::with_capacity(ports.len());
    for p in ports {
        let s = udp_socket(c.family()).map_err(|e| io("socket", e))?;
        if !v4 {
            sockopt::set_ipv6_v6only(&s, true).map_err(|e| io("IPV6_V6ONLY", e.into()))?;
        }
        rustix::net::bind(&s, &c.at(c.local, p)).map_err(|e| {
            CtlError::Busy(format!(
                "cannot bind UDP source port {} {p}: {e} (uplinks on one address need --src-ports ranges apart)",
                c.local
            ))
        })?;
        // DF set: a datagram too large for the path fails with EMSGSIZE (counted as
        // `too_big`) instead of leaving in fragments; RFC 7348 §4.3 forbids those.
        if v4 {
            sockopt::set_ip_mtu_discover(&s, sockopt::Ipv4PathMtuDiscovery::DO)
        } else {
            sockopt::set_ipv6_mtu_discover(&s, sockopt::Ipv6PathMtuDiscovery::DO)
        }
        .map_err(|e| io("IP_MTU_DISCOVER", e.into()))?;
        let _ = sockopt::set_socket_send_buffer_size(&s, 1 << 20);
        if let Some(g) = c.group {
            // On --dev, else on the local address's link (its zone; 0 for IPv4 and
            // global IPv6 addresses: the route decides).
            let ifindex = c.dev.as_ref().map_or(c.scope, |d| d.1);
            // Our own group datagrams must not come back to our receiving socket.
            let r = match (g, c.local) {
                (IpAddr::V4(g), IpAddr::V4(l)) => {
                    sockopt::set_ip_multicast_if_with_ifindex(&s, &g, &l, ifindex)
                        .and_then(|()| sockopt::set_ip_multicast_loop(&s, false))
                }
                _ => sockopt::set_ipv6_multicast_if(&s, ifindex)
                    .and_then(|()| sockopt::set_ipv6_multicast_loop(&s, false)),
            };
            r.map_err(|e| io("multicast options", e.into()))?;
        }
        tx.push(s);
    }
    Ok(tx)
}

/// What the data plane shows the control thread: the learned table of each of the
/// port's VNIs (as `io::Fate::net`, rows by address) when it changes, and at most once
/// a second besides, with when (the port's clock and its reading).
#[derive(Default)]
pub struct Shown {
    pub vteps: Vec<Vec<vtep::Row>>,
    pub at: Option<(std::time::Instant, u64)>,
    /// Whether the data plane sends with UDP GSO and receives with GRO, once started.
    pub offloads: Option<(bool, bool)>,
}

impl Shown {
    /// Seconds since the rows were published.
    fn later(&self) -> Option<u64> {
        let (t0, at) = self.at?;
        Some(t0.elapsed().as_secs().saturating_sub(at))
    }

    /// The rows as they are now: ages moved on since they were published, the expired
    /// left out (an idle port publishes nothing).
    fn now(&self) -> Vec<vtep::Row> {
        let Some(later) = self.later() else {
            return Vec::new();
        };
        self.vteps
            .iter()
            .flatten()
            .map(|r| vtep::Row {
                age_secs: r.age_secs + later,
                ..r.clone()
            })
            .filter(|r| r.age_secs <= VTEP_MAX_AGE)
            .collect()
    }

    /// The VTEP `mac` was learned behind in VNI number `net`, if it is still live.
    fn find(&self, net: usize, mac: &[u8; 6]) -> Option<IpAddr> {
        let later = self.later()?;
        let rows = self.vteps.get(net)?;
        let r = &rows[rows.binary_search_by_key(mac, |r| r.mac).ok()?];
        (r.age_secs + later <= VTEP_MAX_AGE).then_some(r.vtep)
    }
}

/// The control side of a VXLAN port.
pub struct Vxlan {
    conf: Arc<Conf>,
    /// Its place on the receiving socket it may share with other uplinks.
    rx: shared::Membership,
    tx: Option<Vec<OwnedFd>>,
    shown: Arc<Mutex<Shown>>,
}

impl Vxlan {
    /// Host port `name`'s uplink: its place on the receiving socket of its address and
    /// port (shared with the uplinks there), and its sending sockets.
    pub fn create(name: &str, conf: Conf) -> Result<Vxlan, CtlError> {
        let rx = shared::join(name, &conf)?;
        let tx = open_tx(&conf)?;
        Ok(Vxlan {
            conf: Arc::new(conf),
            rx,
            tx: Some(tx),
            shown: Default::default(),
        })
    }
}

impl Backend for Vxlan {
    fn kind(&self) -> &'static str {
        "vxlan"
    }

    /// No virtio-net header: the switch segments TSO super-frames and finishes
    /// checksums before they reach this port, and every frame is one datagram.
    fn attach(&self) -> Attach {
        Attach {
            hdr_len: 0,
            direct: false,
        }
    }

    /// A TX ring deep enough for a whole receive batch of the largest datagrams.
    fn geometry(&self, limits: &Limits) -> Result<PortGeometry, CtlError> {
        let g = super::host_geometry(limits)?;
        let per = DATAGRAM_CAP.div_ceil(g.buf_size as usize) as u32;
        let want = (per * (crate::sys::udp::MAX_BATCH as u32 + 1)).next_power_of_two();
        Ok(PortGeometry {
            tx_slots: want.min(limits.max_slots).max(g.tx_slots),
            ..g
        })
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        if self.tx.is_none() {
            return Err(PortError::Refused("the VXLAN sockets are in use".into()));
        }
        // A descriptor of its own for the shared socket: each uplink's lane watches it
        // under the uplink's token (epoll keys on the descriptor).
        let rx = rustix::io::fcntl_dupfd_cloexec(&self.rx.sock.fd, 0)
            .map_err(|e| PortError::io("dup", e))?;
        cx.watcher.add(&rx)?;
        // Taken only once nothing can fail: a start refused keeps the sockets for the next.
        let tx = self.tx.take().unwrap_or_default();
        let inbox = Arc::new(shared::Inbox::new(cx.waker.clone(), cx.counters.clone()));
        self.rx.set_inbox(inbox.clone());
        Ok(Box::new(io::VxlanIo::new(
            self.conf.clone(),
            (self.rx.sock.clone(), rx, inbox),
            tx,
            cx,
            self.shown.clone(),
        )))
    }

    fn stop(&mut self) -> AfterDetach {
        self.rx.clear_inbox();
        AfterDetach::Forget
    }

    /// The VTEP an address of the switch's table was learned behind: looked up in the
    /// VNI its VLAN maps to (without VLANs, in each VNI in turn), by the control thread
    /// in what the data plane last published.
    fn peer_of(&self, mac: [u8; 6], vlan: Option<u16>) -> Option<super::Peer> {
        let c = &self.conf;
        let mapped = vlan.and_then(|v| c.map.iter().position(|m| m.1 == v));
        let nets: Vec<usize> = match (vlan, mapped) {
            (_, Some(i)) => vec![i + 1],
            (Some(_), None) => vec![0],
            (None, None) => (0..=c.map.len()).collect(),
        };
        let shown = self.shown.lock().ok()?;
        nets.into_iter().find_map(|net| {
            let vtep = shown.find(net, &mac)?;
            Some(super::Peer {
                vtep,
                vni: (!c.map.is_empty()).then(|| if net == 0 { c.vni } else { c.map[net - 1].0 }),
            })
        })
    }

    fn describe(&self) -> String {
        let c = &self.conf;
        let mut s = format!("VNI {} on {}", c.vni, c.at(c.local, c.port));
        let others = self.rx.sock.members().saturating_sub(1);
        if others > 0 {
            s += &format!(" (its socket shared with {others} more uplinks)");
        }
        for (vni, vid) in &c.map {
            s += &format!(", VNI {vni} = VLAN {vid}");
        }
        if !c.remotes.is_empty() {
            let r: Vec<String> = c.remotes.iter().map(IpAddr::to_string).collect();
            s += &format!(", remotes {} (head-end replication)", r.join(" "));
        }
        if let Some(g) = c.group {
            s += &format!(", group {g}");
            if let Some((d, _)) = &c.dev {
                s += &format!(" on {d}");
            }
        }
        s += if c.learning {
            ", learning (aging 300 s)"
        } else {
            ", no learning"
        };
        match c.underlay_mtu() {
            Some(m) => {
                s += &format!(
                    ", overlay MTU {} (underlay {m} - {})",
                    m.saturating_sub(c.overhead()),
                    c.overhead()
                )
            }
            None => s += ", overlay MTU unknown (no route to the remotes)",
        }
        match c.src_ports {
            Some((lo, hi)) => s += &format!(", source ports {lo}-{hi}"),
            None => s += &format!(", {DEFAULT_SOURCE_PORTS} source ports"),
        }
        let offloads = self.shown.lock().ok().and_then(|g| g.offloads);
        s += match (c.offloads, offloads) {
            (false, _) => ", offloads off",
            (true, None) => "",
            (true, Some((true, true))) => ", UDP GSO and GRO",
            (true, Some((true, false))) => ", UDP GSO (no GRO)",
            (true, Some((false, true))) => ", UDP GRO (no GSO)",
            (true, Some((false, false))) => ", no UDP GSO or GRO from the kernel",
        };
        if c.learning {
            let shown = self.shown.lock().map(|g| g.now()).unwrap_or_default();
            s += &format!("; {} VTEPs learned", shown.len());
            for (i, r) in shown.iter().enumerate() {
                if i == SHOWN_VTEPS {
                    s += &format!(" (and {} more)", shown.len() - SHOWN_VTEPS);
                    break;
                }
                let m = r.mac;
                s += &format!(
                    "{} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} via {} ({} s)",
                    if i == 0 { ":" } else { "," },
                    m[0],
                    m[1],
                    m[2],
                    m[3],
                    m[4],
                    m[5],
                    r.vtep,
                    r.age_secs
                );
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(local: &str, remote: &[&str], group: Option<&str>) -> Result<Conf, CtlError> {
        let r: Vec<String> = remote.iter().map(|s| s.to_string()).collect();
        Conf::parse(42, local, 4789, &r, group, None, true, None)
    }

    #[test]
    fn bad_specs_are_refused_with_the_field_and_the_fix() {
        let e = |r: Result<Conf, CtlError>| r.unwrap_err().to_string();
        assert!(e(conf("198.18.0.1", &[], None)).contains("needs --remote IP"));
        assert!(e(conf("nope", &["198.18.0.2"], None)).contains("--local `nope` is not"));
        assert!(e(conf("0.0.0.0", &["198.18.0.2"], None)).contains("own underlay address"));
        assert!(e(conf("198.18.0.1", &["fd00::2"], None)).contains("not of one IP version"));
        assert!(e(conf("198.18.0.1", &["239.1.1.1"], None)).contains("goes in --group"));
        assert!(e(conf("198.18.0.1", &[], Some("198.18.0.9"))).contains("not a multicast"));
        assert!(e(conf("198.18.0.1", &["198.18.0.1"], None)).contains("is --local"));
        let big = Conf::parse(
            1 << 24,
            "198.18.0.1",
            4789,
            &["198.18.0.2".into()],
            None,
            None,
            true,
            None,
        );
        assert!(e(big).contains("24 bits"));
        let range = |r: &str| {
            Conf::parse(
                1,
                "198.18.0.1",
                4789,
                &["198.18.0.2".into()],
                None,
                None,
                true,
                Some(r),
            )
        };
        assert!(e(range("9-1")).contains("not a range LO-HI"));
        assert!(e(range("1000-1100")).contains("the limit is 64"));
        assert_eq!(
            range("49152-49159").unwrap().src_ports,
            Some((49152, 49159))
        );
        let c = conf(
            "198.18.0.1",
            &["198.18.0.2", "198.18.0.2", "198.18.0.3"],
            None,
        )
        .unwrap();
        assert_eq!(c.remotes.len(), 2, "a remote named twice gets one copy");
        assert_eq!(c.overhead(), 50);
        assert_eq!(conf("fd00::1", &["fd00::2"], None).unwrap().overhead(), 70);
    }

    #[test]
    fn a_link_local_address_keeps_its_zone_into_the_socket_address() {
        let e = |r: Result<Conf, CtlError>| r.unwrap_err().to_string();
        let lo = crate::sys::if_index("lo").unwrap();
        let c = conf("fe80::1%lo", &["fe80::2", "fd00::9"], None).unwrap();
        assert_eq!(c.scope, lo);
        let at = |c: &Conf, ip: &str| c.at(ip.parse().unwrap(), 4789);
        assert_eq!(
            at(&c, "fe80::1").to_string(),
            format!("[fe80::1%{lo}]:4789")
        );
        assert_eq!(
            at(&c, "fe80::2").to_string(),
            format!("[fe80::2%{lo}]:4789")
        );
        assert_eq!(
            at(&c, "fd00::9").to_string(),
            "[fd00::9]:4789",
            "not link-local"
        );
        let SockAddr::V6(d) = c.dest("fe80::2".parse().unwrap()) else {
            panic!("IPv6")
        };
        assert_eq!((d.sin6_scope_id, u16::from_be(d.sin6_port)), (lo, 4789));
        // The zone of a remote, by index, when --local is not link-local.
        let c = conf("fd00::1", &["fe80::2%7"], None).unwrap();
        assert_eq!(at(&c, "fe80::2").to_string(), "[fe80::2%7]:4789");
        assert!(e(conf("fe80::1", &["fe80::2"], None)).contains("name its interface"));
        assert!(e(conf("fd00::1", &["fe80::2"], None)).contains("fe80::2 is an IPv6 link-local"));
        assert!(e(conf("fd00::1%lo", &["fd00::2"], None)).contains("only with an IPv6 link-local"));
        assert!(
            e(conf("fe80::1%vxnosuch0", &["fe80::2"], None)).contains("no interface `vxnosuch0`")
        );
        assert!(e(conf("fe80::1%lo", &["fe80::2%999"], None)).contains("on one link"));
        assert!(e(conf("198.18.0.1%lo", &["198.18.0.2"], None)).contains("only with an IPv6"));
    }
}
