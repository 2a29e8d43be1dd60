//! VXLAN uplinks (`vale-ctl vxlan`) against real peers: the Linux kernel's `vxlan`
//! devices and a second valed, each VTEP in its own network namespace joined by veths
//! (the underlay), with hosts (namespaces holding a TAP port of valed's switch, or a
//! kernel vxlan device) pinging, ARPing and running iperf3 across. valed runs inside its
//! namespace (`ip netns exec`), so its VXLAN socket is bound there. Needs root,
//! /dev/net/tun, `ip` and the kernel's vxlan; prints SKIP otherwise. Every namespace
//! made here is removed, also on failure (the veths go with them).
//!
//! One trap of veths, handled here as OVS users must (reference l2-peers.md §2.5): a
//! kernel vxlan device leaves the *inner* TCP checksum to the lower device's offload,
//! and a veth never computes it, so a userspace VTEP reading the datagram from a UDP
//! socket gets frames whose TCP checksums are unfinished. `ethtool -K <veth> tx off` on
//! the kernel peer's side makes the kernel finish them (a real NIC does it anyway).

mod common;
use common::peers::{
    Ovs, iperf3, iperf3_with, link_counts as counts, link_mac as mac, ok, ping_in, run,
};
use common::*;
use std::process::{Command, Stdio};

/// Why these tests cannot run here, if they cannot: probed once per test binary (the
/// tests run in parallel, and each probing with the same namespace name made the others'
/// `ip netns add` fail with "File exists", read as "no vxlan").
fn skip_reason() -> Option<String> {
    static ONCE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(probe).clone()
}

fn probe() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for network namespaces, veths and TAP devices".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    if !have("ip", "iproute2", "VXLAN uplinks") || !have("ethtool", "ethtool", "VXLAN uplinks") {
        return Some("no `ip` or `ethtool`".into());
    }
    let ns = format!("vxprobe{}", std::process::id());
    let _ = run(&["ip", "netns", "add", &ns]);
    let o = run(&[
        "ip", "-n", &ns, "link", "add", "vxp", "type", "vxlan", "id", "1", "dstport", "4789",
    ]);
    let _ = run(&["ip", "netns", "del", &ns]);
    if !o.status.success() {
        return Some(format!(
            "the kernel has no vxlan devices: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    None
}

macro_rules! need_net {
    () => {
        if let Some(r) = skip_reason() {
            skip(&r);
            return;
        }
    };
}

/// The namespaces of one test, deleted on drop (their veths, TAPs and vxlan devices
/// with them).
struct Net {
    tag: String,
    namespaces: Vec<String>,
}

impl Net {
    fn new(test: &str) -> Net {
        // Interface names have 15 characters at most: "vx" + test + 4 digits + a suffix.
        Net {
            tag: format!("vx{test}{}", std::process::id() % 10000),
            namespaces: Vec::new(),
        }
    }

    fn name(&self, what: &str) -> String {
        format!("{}{what}", self.tag)
    }

    /// A namespace, loopback up; IPv6 off unless `v6` (router solicitations and MLD
    /// reports at random moments would land in the counts).
    fn ns(&mut self, what: &str, v6: bool) -> String {
        let n = self.name(what);
        let _ = run(&["ip", "netns", "del", &n]);
        ok(&["ip", "netns", "add", &n]);
        self.namespaces.push(n.clone());
        ok(&["ip", "-n", &n, "link", "set", "lo", "up"]);
        let off = if v6 { "0" } else { "1" };
        for conf in ["all", "default"] {
            ok(&[
                "ip",
                "netns",
                "exec",
                &n,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{conf}.disable_ipv6={off}"),
            ]);
        }
        n
    }

    /// A veth from `a` in namespace `na` to `b` in `nb`, both up with their addresses.
    fn wire(&self, (na, a, aa): (&str, &str, &str), (nb, b, ba): (&str, &str, &str)) {
        ok(&[
            "ip", "link", "add", a, "netns", na, "type", "veth", "peer", "name", b, "netns", nb,
        ]);
        for (ns, i, addr) in [(na, a, aa), (nb, b, ba)] {
            if !addr.is_empty() {
                addr_add(ns, i, addr);
            }
            ok(&["ip", "-n", ns, "link", "set", i, "up"]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.namespaces {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

fn addr_add(ns: &str, ifname: &str, addr: &str) {
    if addr.contains(':') {
        ok(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname, "nodad"]);
    } else {
        ok(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname]);
    }
}

fn ping(ns: &str, dst: &str, count: u32) -> bool {
    ping_in(ns, dst, count, &["-W", "2"])
}

/// `count` pings of `size` bytes from `ns` to `dst` with DF set (`-M do`): whether
/// they were answered.
fn ping_df(ns: &str, dst: &str, count: u32, size: u32) -> bool {
    ping_in(
        ns,
        dst,
        count,
        &["-W", "1", "-M", "do", "-s", &size.to_string()],
    )
}

/// A kernel vxlan device `name` in `ns` with `args` after `id VNI dstport 4789`, the
/// lower veth's checksum offload off (module doc), and the overlay address `addr`.
fn kernel_vtep(ns: &str, lower: &str, name: &str, vni: u32, args: &[&str], addr: &str) {
    let vni = vni.to_string();
    let mut a = vec![
        "ip", "-n", ns, "link", "add", name, "type", "vxlan", "id", &vni, "dstport", "4789",
    ];
    a.extend_from_slice(args);
    a.extend_from_slice(&["dev", lower]);
    ok(&a);
    ok(&[
        "ip", "netns", "exec", ns, "ethtool", "-K", lower, "tx", "off",
    ]);
    addr_add(ns, name, addr);
    ok(&["ip", "-n", ns, "link", "set", name, "up"]);
}

/// A TAP port of `d`'s switch vale0 (made in valed's namespace `dns`), moved into `host`
/// with `addr` and the overlay MTU.
fn tap_host(d: &Daemon, dns: &str, tap: &str, host: &str, addr: &str, mtu: u32) {
    tap_host_on(d, "vale0", dns, tap, host, addr, mtu)
}

/// [`tap_host`] on switch `sw`.
fn tap_host_on(d: &Daemon, sw: &str, dns: &str, tap: &str, host: &str, addr: &str, mtu: u32) {
    ctl_ok(d, &["-n", tap]);
    ctl_ok(d, &["-a", &format!("{sw}:{tap}")]);
    ok(&["ip", "-n", dns, "link", "set", tap, "netns", host]);
    addr_add(host, tap, addr);
    ok(&[
        "ip",
        "-n",
        host,
        "link",
        "set",
        tap,
        "mtu",
        &mtu.to_string(),
        "up",
    ]);
}

/// The VXLAN host port's entry of `vale-ctl list`.
fn uplink(d: &Daemon) -> serde_json::Value {
    d.host("vale0:up")
}

fn hc(d: &Daemon, key: &str) -> u64 {
    uplink(d)["counters"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {}", uplink(d)))
}

/// valed in namespace V with vale0:up, a kernel vxlan in K, a host H behind valed's
/// switch (a TAP), underlay V <-> K over one veth; IPv6 underlay with `v6`, multicast
/// `group` mode with `group`.
struct KernelPeer {
    // Declared first, dropped first: valed stops before its namespace goes.
    d: Daemon,
    k: String,
    h: String,
    tap: String,
    _net: Net,
}

fn kernel_peer(test: &str, v6: bool, group: bool) -> KernelPeer {
    let mut net = Net::new(test);
    let (v, k, h) = (net.ns("v", v6), net.ns("k", v6), net.ns("h", false));
    let (vu, ku, tap) = (net.name("u"), net.name("k"), net.name("t"));
    let (vip, kip, plen) = if v6 {
        ("fd00:18::1", "fd00:18::2", "/64")
    } else {
        ("198.18.0.1", "198.18.0.2", "/24")
    };
    net.wire(
        (&v, &vu, &format!("{vip}{plen}")),
        (&k, &ku, &format!("{kip}{plen}")),
    );
    let mcast = if v6 { "ff05::101" } else { "239.1.1.1" };
    let kargs: Vec<&str> = if group {
        vec!["group", mcast, "ttl", "1"]
    } else {
        vec!["local", kip, "remote", vip]
    };
    kernel_vtep(&k, &ku, "vx0", 42, &kargs, "198.19.0.2/24");
    let d = Daemon::start_in(&v, &format!("{test}-v"), &[]);
    let overlay = if v6 { 1430 } else { 1450 };
    tap_host(&d, &v, &tap, &h, "198.19.0.1/24", overlay);
    let mut a = vec!["vxlan", "vale0:up", "--vni", "42", "--local", vip];
    if group {
        a.extend_from_slice(&["--group", mcast, "--dev", &vu]);
    } else {
        a.extend_from_slice(&["--remote", kip]);
    }
    ctl_ok(&d, &a);
    KernelPeer {
        d,
        k,
        h,
        tap,
        _net: net,
    }
}

#[test]
fn a_kernel_vxlan_peer_pings_arps_and_carries_iperf3_both_ways_counted_exactly() {
    need_net!();
    let p = kernel_peer("a", false, false);
    let d = &p.d;
    assert!(ping(&p.h, "198.19.0.2", 3), "ping across:\n{}", d.log());
    // ARP both ways: the kernel's neighbour resolved our host, our host the kernel's
    // device, and each VTEP learned the other's MAC behind the other's address.
    let hmac = mac(&p.h, &p.tap);
    let kmac = mac(&p.k, "vx0");
    let neigh = ok(&["ip", "-n", &p.k, "neigh", "show", "198.19.0.1"]);
    assert!(neigh.contains(&hmac), "{neigh} lacks {hmac}");
    let fdb = ok(&["bridge", "-n", &p.k, "fdb", "show", "dev", "vx0"]);
    assert!(
        fdb.contains(&format!("{hmac} dst 198.18.0.1")),
        "the kernel learned our host behind us: {fdb}"
    );
    let about = uplink(d)["about"].as_str().unwrap_or_default().to_string();
    assert!(
        about.contains(&format!("{kmac} via 198.18.0.2")),
        "we learned the kernel's MAC: {about}"
    );
    assert!(
        about.contains("overlay MTU 1450 (underlay 1500 - 50)"),
        "{about}"
    );
    let text = ctl_ok(d, &["list"]);
    assert!(
        text.contains("vxlan vale0:up") && text.contains("1 VTEPs learned"),
        "{text}"
    );

    // The kernel counts a TSO super-frame as one packet before it cuts it: with
    // segmentation done before vx0, its counts are frames on the wire, as ours.
    ok(&[
        "ip", "netns", "exec", &p.k, "ethtool", "-K", "vx0", "tso", "off", "gso", "off",
    ]);
    if let Some(b) = iperf3(&p.h, &p.k, "198.19.0.2") {
        assert!(b > 1_000_000, "iperf3 to the kernel: {b} bytes");
        // The TAP's super-frames, cut by the switch, left in trains (UDP GSO); the
        // kernel's vxlan counts each of their datagrams (checked below).
        assert!(hc(d, "gso_sends") > 0, "{}", uplink(d)["counters"]);
    }
    if let Some(b) = iperf3(&p.k, &p.h, "198.19.0.1") {
        assert!(b > 1_000_000, "iperf3 from the kernel: {b} bytes");
    }
    // Every datagram the kernel's vx0 sent was one frame into the switch, and every
    // frame we sent one datagram it received (one remote: no replication), once the
    // last in flight have landed.
    let balanced = wait_for(10.0, || {
        let (krx, ktx) = counts(&p.k, "vx0");
        ktx == hc(d, "from_host") && krx == hc(d, "vxlan_datagrams")
    });
    let (krx, ktx) = counts(&p.k, "vx0");
    assert!(
        balanced,
        "kernel vx0 sent {ktx} / received {krx}; our uplink: {}",
        uplink(d)["counters"]
    );
    assert_eq!(hc(d, "vxlan_datagrams"), hc(d, "to_host"));
    d.assert_laws();

    // Frames larger than the overlay MTU are counted, never fragmented nor cut.
    ok(&["ip", "-n", &p.h, "link", "set", &p.tap, "mtu", "1500"]);
    let (krx0, _) = counts(&p.k, "vx0");
    let _ = ping_df(&p.h, "198.19.0.2", 2, 1472);
    assert!(wait_for(10.0, || hc(d, "too_big") == 2), "{}", uplink(d));
    assert_eq!(
        counts(&p.k, "vx0").0,
        krx0,
        "nothing of them reached the kernel"
    );
}

/// The `vale-ctl fdb` row of `mac` on `d`'s vale0 (JSON), if it has one.
fn fdb_row(d: &Daemon, mac: &str) -> Option<serde_json::Value> {
    d.ctl_json(&["fdb", "vale0"])["entries"]
        .as_array()?
        .iter()
        .find(|e| e["mac"] == mac)
        .cloned()
}

/// `vale-ctl fdb` names the remote VTEP behind each address learned on the uplink (the
/// kernel vx0's MAC behind its underlay address), and the new one when the MAC moves to
/// another VTEP (a second kernel namespace, on another underlay subnet, with the same
/// MAC and overlay address).
#[test]
fn the_fdb_shows_the_vtep_each_address_was_learned_from_and_follows_a_move() {
    need_net!();
    let mut p = kernel_peer("f", false, false);
    let v = p._net.name("v");
    let k2 = p._net.ns("k2", false);
    let (vu2, ku2) = (p._net.name("w"), p._net.name("j"));
    p._net
        .wire((&v, &vu2, "198.18.1.1/24"), (&k2, &ku2, "198.18.1.2/24"));
    ok(&[
        "ip",
        "-n",
        &k2,
        "route",
        "add",
        "198.18.0.0/24",
        "via",
        "198.18.1.1",
    ]);
    let d = &p.d;
    assert!(ping(&p.h, "198.19.0.2", 2), "ping across:\n{}", d.log());
    let kmac = mac(&p.k, "vx0");
    let hmac = mac(&p.h, &p.tap);
    let row = fdb_row(d, &kmac).unwrap_or_else(|| panic!("{kmac} not learned"));
    assert_eq!(row["port"], "vale0:up", "{row}");
    assert_eq!(row["vtep"], "198.18.0.2", "{row}");
    assert!(row.get("vni").is_none(), "one VNI: none shown: {row}");
    let host = fdb_row(d, &hmac).unwrap_or_else(|| panic!("{hmac} not learned"));
    assert!(host.get("vtep").is_none(), "a TAP port has no VTEP: {host}");
    let text = ctl_ok(d, &["fdb", "vale0"]);
    assert!(
        text.lines().next().is_some()
            && text.lines().nth(1).is_some_and(|l| l.contains("vtep"))
            && text
                .lines()
                .any(|l| l.contains(&kmac) && l.contains("vale0:up") && l.contains("198.18.0.2")),
        "{text}"
    );

    // The MAC moves: K's device goes, K2's comes with the same MAC and address, and
    // speaks first (its ARP floods to us: learned behind 198.18.1.2).
    ok(&["ip", "-n", &p.k, "link", "del", "vx0"]);
    let vni = "42".to_string();
    ok(&[
        "ip",
        "-n",
        &k2,
        "link",
        "add",
        "vx0",
        "address",
        &kmac,
        "type",
        "vxlan",
        "id",
        &vni,
        "dstport",
        "4789",
        "local",
        "198.18.1.2",
        "remote",
        "198.18.0.1",
        "dev",
        &ku2,
    ]);
    ok(&[
        "ip", "netns", "exec", &k2, "ethtool", "-K", &ku2, "tx", "off",
    ]);
    addr_add(&k2, "vx0", "198.19.0.2/24");
    ok(&["ip", "-n", &k2, "link", "set", "vx0", "up"]);
    assert!(
        ping(&k2, "198.19.0.1", 2),
        "from the moved MAC: {}\n{}\n{}",
        uplink(d),
        ctl_ok(d, &["fdb", "vale0"]),
        ok(&["ip", "-n", &k2, "-s", "link", "show", "vx0"])
    );
    let moved = wait_for(10.0, || {
        fdb_row(d, &kmac).is_some_and(|r| r["vtep"] == "198.18.1.2")
    });
    assert!(moved, "{:?}", fdb_row(d, &kmac));
    assert!(
        ping(&p.h, "198.19.0.2", 2),
        "to the moved MAC:\n{}",
        d.log()
    );
    d.assert_laws();
}

/// The `[[port]]` entries of two uplinks on UDP 198.18.0.1:4789, VNI 42 on vale0 and
/// VNI 43 on vale1 (learning on VNI 43's as `learning43` says).
fn two_uplinks_toml(learning43: bool) -> String {
    format!(
        "[[port]]\nname = \"vale0:v42\"\nkind = \"vxlan\"\nvni = 42\nlocal = \"198.18.0.1\"\nremote = [\"198.18.0.2\"]\n\n\
         [[port]]\nname = \"vale1:v43\"\nkind = \"vxlan\"\nvni = 43\nlocal = \"198.18.0.1\"\nremote = [\"198.18.0.2\"]\nlearning = {learning43}\n"
    )
}

/// Counter `key` of the host port attached as `port`.
fn host_counter(d: &Daemon, port: &str, key: &str) -> u64 {
    d.host(port)["counters"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {}", d.host(port)))
}

/// The UDP sockets bound to port 4789 in `ns`.
fn vxlan_sockets(ns: &str) -> usize {
    ok(&[
        "ip", "netns", "exec", ns, "ss", "-Hunl", "sport", "=", ":4789",
    ])
    .lines()
    .count()
}

/// Namespace `v` has one VXLAN socket, and `port`'s uplink says it shares it.
fn one_socket_for_both(d: &Daemon, v: &str, port: &str) {
    assert_eq!(vxlan_sockets(v), 1, "one socket for both uplinks");
    let about = d.host(port)["about"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        about.contains("its socket shared with 1 more uplinks"),
        "{about}"
    );
}

/// Namespaces `v` (valed's) and `k` (the kernel's, with vxlan devices for VNIs 42 and
/// 43 over 198.18.0.0/24), hosts `h` and `h2` for the two switches, and the names of
/// their TAP interfaces, in that order.
fn two_vnis(net: &mut Net) -> (String, String, String, String, String, String) {
    let (v, k) = (net.ns("v", false), net.ns("k", false));
    let (h, h2) = (net.ns("h", false), net.ns("h2", false));
    let (ku, tap, tap2) = (net.name("k"), net.name("t"), net.name("r"));
    net.wire(
        (&v, &net.name("u"), "198.18.0.1/24"),
        (&k, &ku, "198.18.0.2/24"),
    );
    let kargs = ["local", "198.18.0.2", "remote", "198.18.0.1"];
    kernel_vtep(&k, &ku, "vx0", 42, &kargs, "198.19.0.2/24");
    kernel_vtep(&k, &ku, "vx1", 43, &kargs, "198.20.0.2/24");
    (v, k, h, h2, tap, tap2)
}

/// One uplink per VNI, all on one local address and port (declared in the config
/// file, each on its own switch and forwarding thread): valed opens one socket for both
/// and hands each datagram to the uplink of its VNI. Against a kernel with a vxlan
/// device per VNI, each reaches only its own switch, counted exactly; a reload that
/// changes one leaves the other alone; with one removed the other still forwards and
/// the removed one's VNI is counted foreign; the socket goes with the last.
#[test]
fn uplinks_of_several_vnis_share_one_udp_socket() {
    need_net!();
    let mut net = Net::new("s");
    let (v, k, h, h2, tap, tap2) = two_vnis(&mut net);
    let dir = std::env::temp_dir().join(format!("vale-test-vxs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("valed.toml");
    std::fs::write(&file, two_uplinks_toml(true)).unwrap();
    let d = Daemon::start_in(
        &v,
        "vxs-v",
        &["--config", path_str(&file), "--threads", "2"],
    );
    assert!(
        wait_for(10.0, || d
            .hosts()
            .iter()
            .filter(|h| h["kind"] == "vxlan")
            .count()
            == 2),
        "{}",
        d.log()
    );
    tap_host_on(&d, "vale0", &v, &tap, &h, "198.19.0.1/24", 1450);
    tap_host_on(&d, "vale1", &v, &tap2, &h2, "198.20.0.1/24", 1450);
    one_socket_for_both(&d, &v, "vale0:v42");

    let exact = |what: &str| {
        // Every datagram of each kernel device was one frame into its own uplink's
        // switch (none into the other's), and every datagram an uplink sent reached
        // the device of its VNI.
        let balanced = wait_for(10.0, || {
            [("vx0", "vale0:v42"), ("vx1", "vale1:v43")]
                .iter()
                .all(|(dev, up)| {
                    let (krx, ktx) = counts(&k, dev);
                    let c = &d.host(up)["counters"];
                    c["from_host"] == ktx && c["vxlan_datagrams"] == krx
                })
        });
        assert!(
            balanced,
            "{what}: vx0 {:?} vx1 {:?}; v42 {}; v43 {}",
            counts(&k, "vx0"),
            counts(&k, "vx1"),
            d.host("vale0:v42")["counters"],
            d.host("vale1:v43")["counters"]
        );
    };
    assert!(ping(&h, "198.19.0.2", 3), "VNI 42:\n{}", d.log());
    assert!(ping(&h2, "198.20.0.2", 3), "VNI 43:\n{}", d.log());
    assert!(
        ping(&k, "198.20.0.1", 3),
        "VNI 43 from the kernel:\n{}",
        d.log()
    );
    exact("both");
    for up in ["vale0:v42", "vale1:v43"] {
        for c in ["vxlan_foreign_vni", "vxlan_queue_full"] {
            assert_eq!(host_counter(&d, up, c), 0, "{up} {c}");
        }
    }
    assert!(host_counter(&d, "vale0:v42", "from_host") >= 4);
    assert!(host_counter(&d, "vale1:v43", "from_host") >= 7);

    // A reload that changes VNI 43's entry makes it again; VNI 42's is not touched.
    std::fs::write(&file, two_uplinks_toml(false)).unwrap();
    let r = ctl_ok(&d, &["reload"]);
    assert!(
        r.contains("created vale1:v43") && !r.contains("vale0:v42"),
        "{r}"
    );
    assert!(
        d.host("vale1:v43")["about"]
            .as_str()
            .is_some_and(|a| a.contains("no learning")),
        "{}",
        d.host("vale1:v43")
    );
    assert!(
        ping(&h2, "198.20.0.2", 3),
        "VNI 43 after the reload:\n{}",
        d.log()
    );
    assert!(
        ping(&h, "198.19.0.2", 2),
        "VNI 42 after the reload:\n{}",
        d.log()
    );
    assert_eq!(vxlan_sockets(&v), 1);

    // VNI 42's uplink goes: VNI 43's still forwards, and what the kernel sends in VNI
    // 42 now is foreign to the socket (counted on its remaining uplink).
    ctl_ok(&d, &["-d", "vale0:v42"]);
    assert!(ping(&h2, "198.20.0.2", 3), "VNI 43 alone:\n{}", d.log());
    assert!(!ping(&k, "198.19.0.1", 2), "VNI 42 has no uplink now");
    assert!(host_counter(&d, "vale1:v43", "vxlan_foreign_vni") > 0);
    assert_eq!(vxlan_sockets(&v), 1);
    ctl_ok(&d, &["-d", "vale1:v43"]);
    assert!(
        wait_for(10.0, || vxlan_sockets(&v) == 0),
        "the socket closes with its last uplink"
    );
    d.assert_laws();
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An uplink refused after it took its place on a shared socket (its source ports are
/// another uplink's) or before (its address is not this host's) leaves nothing behind
/// there: the same VNI on the socket is then made, and each VNI's traffic reaches its
/// own switch through the one socket.
#[test]
fn a_refused_uplink_leaves_its_shared_socket_as_it_was() {
    need_net!();
    let mut net = Net::new("r");
    let (v, k, h, h2, tap, tap2) = two_vnis(&mut net);
    let d = Daemon::start_in(&v, "vxr-v", &["--threads", "2"]);
    tap_host_on(&d, "vale0", &v, &tap, &h, "198.19.0.1/24", 1450);
    tap_host_on(&d, "vale1", &v, &tap2, &h2, "198.20.0.1/24", 1450);
    let up = |port, vni, local, ports| {
        [
            "vxlan",
            port,
            "--vni",
            vni,
            "--local",
            local,
            "--remote",
            "198.18.0.2",
            "--src-ports",
            ports,
        ]
    };
    ctl_ok(&d, &up("vale0:v42", "42", "198.18.0.1", "49152-49153"));
    let e = ctl_err(&d, &up("vale1:v43", "43", "198.18.0.1", "49153-49154"));
    assert!(
        e.contains("cannot bind UDP source port 198.18.0.1 49153"),
        "{e}"
    );
    let e = ctl_err(&d, &up("vale1:v43", "43", "198.18.0.9", "49160-49161"));
    assert!(e.contains("must be an address of this host"), "{e}");
    ctl_ok(&d, &up("vale1:v43", "43", "198.18.0.1", "49160-49161"));
    one_socket_for_both(&d, &v, "vale1:v43");
    assert!(ping(&h2, "198.20.0.2", 3), "VNI 43:\n{}", d.log());
    assert!(
        ping(&k, "198.20.0.1", 3),
        "VNI 43 from the kernel:\n{}",
        d.log()
    );
    assert!(ping(&h, "198.19.0.2", 3), "VNI 42:\n{}", d.log());
    for up in ["vale0:v42", "vale1:v43"] {
        for c in ["vxlan_foreign_vni", "vxlan_queue_full"] {
            assert_eq!(host_counter(&d, up, c), 0, "{up} {c}");
        }
    }
    d.assert_laws();
}

#[test]
fn an_ipv6_underlay_and_a_multicast_group_reach_the_kernel_too() {
    need_net!();
    {
        let p = kernel_peer("6", true, false);
        assert!(ping(&p.h, "198.19.0.2", 3), "over IPv6:\n{}", p.d.log());
        let about = uplink(&p.d)["about"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(about.contains("on [fd00:18::1]:4789"), "{about}");
        assert!(
            about.contains("overlay MTU 1430 (underlay 1500 - 70)"),
            "{about}"
        );
        assert!(about.contains("via fd00:18::2"), "{about}");
    }
    let p = kernel_peer("m", false, true);
    assert!(ping(&p.h, "198.19.0.2", 3), "group mode:\n{}", p.d.log());
    let about = uplink(&p.d)["about"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(about.contains("group 239.1.1.1 on"), "{about}");
    // Once learned, unicast goes to the VTEP itself, as the kernel's did.
    assert!(about.contains("via 198.18.0.2"), "{about}");
    let fdb = ok(&["bridge", "-n", &p.k, "fdb", "show", "dev", "vx0"]);
    assert!(
        fdb.contains("dst 198.18.0.1"),
        "the kernel learned us: {fdb}"
    );
}

/// An IPv6 link-local underlay (`--local fe80::1%IF`): the zone names the link that
/// the uplink's sockets are bound on and send over (without it the kernel cannot tell
/// which link fe80::2 is on), the kernel's vxlan device is the peer across it.
#[test]
fn a_link_local_ipv6_underlay_with_a_zone_reaches_the_kernel() {
    need_net!();
    let mut net = Net::new("l");
    let (v, k, h) = (net.ns("v", true), net.ns("k", true), net.ns("h", false));
    let (vu, ku, tap) = (net.name("u"), net.name("k"), net.name("t"));
    net.wire((&v, &vu, "fe80::1/64"), (&k, &ku, "fe80::2/64"));
    let kargs = ["local", "fe80::2", "remote", "fe80::1"];
    kernel_vtep(&k, &ku, "vx0", 42, &kargs, "198.19.0.2/24");
    let d = Daemon::start_in(&v, "vxl-v", &[]);
    tap_host(&d, &v, &tap, &h, "198.19.0.1/24", 1430);
    let up = ["vxlan", "vale0:up", "--vni", "42", "--remote", "fe80::2"];
    let e = ctl_err(&d, &[&up[..], &["--local", "fe80::1"]].concat());
    assert!(
        e.contains("name its interface as its zone (fe80::1%eth0)"),
        "{e}"
    );
    let local = format!("fe80::1%{vu}");
    ctl_ok(&d, &[&up[..], &["--local", &local]].concat());
    assert!(ping(&h, "198.19.0.2", 3), "over fe80::/10:\n{}", d.log());
    let about = uplink(&d)["about"].as_str().unwrap_or_default().to_string();
    let index = ok(&[
        "ip",
        "netns",
        "exec",
        &v,
        "cat",
        &format!("/sys/class/net/{vu}/ifindex"),
    ]);
    assert!(
        about.contains(&format!("on [fe80::1%{}]:4789", index.trim())),
        "{about}"
    );
    assert!(
        about.contains("overlay MTU 1430 (underlay 1500 - 70)"),
        "{about}"
    );
    assert!(about.contains("via fe80::2"), "{about}");
    assert_eq!(hc(&d, "write_errors"), 0);
}

/// Sends datagrams built in Python from namespace `ns` to `to`:4789, one per line of
/// `cases` (hex), then `flood` random ones.
const SEND_PY: &str = r#"
import os, socket, sys
to = sys.argv[1]; flood = int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for line in sys.stdin:
    s.sendto(bytes.fromhex(line.strip()), (to, 4789))
for i in range(flood):
    try:
        s.sendto(os.urandom(8 + i % 100), (to, 4789))
    except BlockingIOError:
        pass
"#;

/// Sends the datagrams on stdin (hex, one a line) from namespace `ns` to `to`:4789 as
/// one train (`UDP_SEGMENT` with the first one's size; all as long but the last): the
/// kernel cuts it into them, or hands it whole to a receiver with `UDP_GRO`.
const SEND_TRAIN_PY: &str = r#"
import socket, sys
to = sys.argv[1]
ds = [bytes.fromhex(l.strip()) for l in sys.stdin if l.strip()]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, len(ds[0]))  # UDP_SEGMENT
s.sendto(b"".join(ds), (to, 4789))
"#;

fn send_py(ns: &str, to: &str, cases: &[Vec<u8>], flood: usize) {
    send_script(ns, SEND_PY, to, cases, flood)
}

fn send_script(ns: &str, script: &str, to: &str, cases: &[Vec<u8>], flood: usize) {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args([
            "netns", "exec", ns, "timeout", "30", "python3", "-c", script, to,
        ])
        .arg(flood.to_string())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for f in cases {
        input += &f.iter().map(|b| format!("{b:02x}")).collect::<String>();
        input += "\n";
    }
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
}

#[test]
fn malformed_headers_are_dropped_by_reason_and_a_garbage_flood_stalls_nothing() {
    need_net!();
    if !have("python3", "python3", "the malformed-header sender") {
        return;
    }
    let mut net = Net::new("b");
    let (v, s, h) = (net.ns("v", false), net.ns("s", false), net.ns("h", false));
    net.wire(
        (&v, &net.name("u"), "198.18.0.1/24"),
        (&s, &net.name("s"), "198.18.0.2/24"),
    );
    let metrics = std::env::temp_dir().join(format!("vale-test-vxb-{}.sock", std::process::id()));
    let d = Daemon::start_in(&v, "vxb-v", &["--metrics", path_str(&metrics)]);
    let tap = net.name("t");
    tap_host(&d, &v, &tap, &h, "198.19.0.1/24", 1450);
    ctl_ok(
        &d,
        &[
            "vxlan",
            "vale0:up",
            "--vni",
            "42",
            "--local",
            "198.18.0.1",
            "--remote",
            "198.18.0.2",
        ],
    );
    // A broadcast frame of EtherType 0x88b5 behind each header.
    let frame: Vec<u8> = [
        &[0xff; 6][..],
        &[2, 0, 0, 0, 0, 9],
        &[0x88, 0xb5],
        &[0u8; 46],
    ]
    .concat();
    let with = |h: [u8; 8]| [&h[..], &frame].concat();
    let cases = vec![
        with([0x08, 0, 0, 0, 0, 0, 42, 0]),           // valid
        with([0x00, 0, 0, 0, 0, 0, 42, 0]),           // I flag clear
        with([0x0c, 0, 0, 0, 0, 0, 42, 0]),           // a reserved flag bit
        with([0x88, 0, 0, 0, 0, 0, 42, 0]),           // another
        with([0x08, 0, 0, 0, 0, 0, 42, 0x01]),        // the last reserved byte
        with([0x08, 0, 0, 0, 0, 0x04, 0x13, 0]),      // VNI 1043
        vec![0x08, 0, 0, 0, 0, 0, 42, 0, 0xff, 0xff], // too short for a frame
    ];
    send_py(&s, "198.18.0.1", &cases, 0);
    let want = [
        ("from_host", 1),
        ("vxlan_no_i_flag", 1),
        ("vxlan_reserved", 3),
        ("vxlan_foreign_vni", 1),
        ("vxlan_too_short", 1),
    ];
    let got = || want.iter().all(|&(k, n)| hc(&d, k) == n);
    assert!(wait_for(10.0, got), "{}", uplink(&d)["counters"]);
    // The one valid frame reached the host (the TAP's receive count).
    assert!(
        wait_for(10.0, || counts(&h, &tap).0 == 1),
        "{:?}",
        counts(&h, &tap)
    );
    let text = ctl_ok(&d, &["list"]);
    assert!(
        text.contains("dropped: too_short 1 no_i_flag 1 reserved 3 foreign_vni 1"),
        "{text}"
    );
    // The one valid frame's source was learned behind its sender, and its age goes on
    // while nothing arrives.
    // Ages are whole seconds since the port started, so a second's boundary may fall
    // between the learning and the first look.
    let about = || uplink(&d)["about"].as_str().unwrap_or_default().to_string();
    let age = || -> Option<u64> {
        let a = about();
        let rest = a.split("02:00:00:00:00:09 via 198.18.0.2 (").nth(1)?;
        rest.split(" s)").next()?.parse().ok()
    };
    let a0 = age().unwrap_or_else(|| panic!("not learned: {}", about()));
    assert!(a0 <= 1, "learned a moment ago: {}", about());
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let a1 = age().unwrap_or_else(|| panic!("forgotten: {}", about()));
    assert!(
        (a0 + 2..=a0 + 3).contains(&a1),
        "2.1 s later, from {a0} s: {}",
        about()
    );
    // And in the metrics, by reason.
    if have("curl", "curl", "the metrics part") {
        let o = run(&[
            "curl",
            "-sS",
            "--unix-socket",
            path_str(&metrics),
            "http://valed/metrics",
        ]);
        let body = String::from_utf8_lossy(&o.stdout);
        for (e, n) in [
            ("vxlan_reserved", 3),
            ("vxlan_no_i_flag", 1),
            ("vxlan_foreign_vni", 1),
        ] {
            let line = format!(
                "vale_host_port_errors_total{{host=\"up\",kind=\"vxlan\",error=\"{e}\"}} {n}"
            );
            assert!(body.contains(&line), "{line} in:\n{body}");
        }
    }

    // The same datagrams as one train (the too-short one last): each counted by its
    // own reason again, whether the kernel cut the train or we split a coalesced read.
    let reads = hc(&d, "gro_reads");
    send_script(&s, SEND_TRAIN_PY, "198.18.0.1", &cases, 0);
    let twice = || want.iter().all(|&(k, n)| hc(&d, k) == 2 * n);
    assert!(wait_for(10.0, twice), "{}", uplink(&d)["counters"]);
    assert_eq!(hc(&d, "gro_reads"), reads + 1, "one coalesced read");
    assert!(wait_for(10.0, || counts(&h, &tap).0 == 2));

    // 100000 random datagrams: counted, the switch unharmed, a valid frame still passes.
    send_py(&s, "198.18.0.1", &[], 100_000);
    let valid = vec![cases[0].clone()];
    send_py(&s, "198.18.0.1", &valid, 0);
    assert!(
        wait_for(10.0, || hc(&d, "from_host") >= 3),
        "{}",
        uplink(&d)["counters"]
    );
    let mut d = d;
    assert!(d.alive(), "valed survived:\n{}", d.log());
    let c = &uplink(&d)["counters"];
    let dropped: u64 = [
        "vxlan_no_i_flag",
        "vxlan_reserved",
        "vxlan_foreign_vni",
        "vxlan_too_short",
    ]
    .iter()
    .map(|k| c[k].as_u64().unwrap_or(0))
    .sum();
    eprintln!("after the flood: {c}");
    assert!(dropped > 6, "garbage counted: {c}");
    d.assert_laws();
    drop(d);
    let _ = std::fs::remove_file(&metrics);
}

#[test]
fn two_valeds_joined_only_by_vxlan_form_one_segment() {
    need_net!();
    let mut net = Net::new("c");
    let (v1, v2) = (net.ns("v1", false), net.ns("v2", false));
    let (h1, h2) = (net.ns("h1", false), net.ns("h2", false));
    net.wire(
        (&v1, &net.name("u1"), "198.18.0.1/24"),
        (&v2, &net.name("u2"), "198.18.0.2/24"),
    );
    let d1 = Daemon::start_in(&v1, "vxc-1", &[]);
    let d2 = Daemon::start_in(&v2, "vxc-2", &[]);
    let (t1, t2) = (net.name("t1"), net.name("t2"));
    tap_host(&d1, &v1, &t1, &h1, "198.19.0.1/24", 1450);
    tap_host(&d2, &v2, &t2, &h2, "198.19.0.2/24", 1450);
    for (d, l, r) in [
        (&d1, "198.18.0.1", "198.18.0.2"),
        (&d2, "198.18.0.2", "198.18.0.1"),
    ] {
        ctl_ok(
            d,
            &[
                "vxlan",
                "vale0:up",
                "--vni",
                "7",
                "--local",
                l,
                "--remote",
                r,
                "--src-ports",
                "40000-40003",
            ],
        );
    }
    assert!(
        ping(&h1, "198.19.0.2", 3),
        "valed to valed:\n{}\n{}",
        d1.log(),
        d2.log()
    );
    let (m1, m2) = (mac(&h1, &t1), mac(&h2, &t2));
    let a1 = uplink(&d1)["about"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let a2 = uplink(&d2)["about"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(a1.contains(&format!("{m2} via 198.18.0.2")), "{a1}");
    assert!(a2.contains(&format!("{m1} via 198.18.0.1")), "{a2}");
    assert!(a1.contains("source ports 40000-40003"), "{a1}");
    // What reaches the wire, seen by tcpdump on the receiving VTEP's underlay.
    let dump = have("tcpdump", "tcpdump", "the wire check").then(|| {
        let file = d2.dir.join("underlay.pcap");
        let mut c = Command::new("ip")
            .args([
                "netns",
                "exec",
                &v2,
                "tcpdump",
                "-i",
                &net.name("u2"),
                "-Q",
                "in",
            ])
            .args([
                "--immediate-mode",
                "-nn",
                "-U",
                "-s",
                "128",
                "-c",
                "100000",
                "-w",
            ])
            .arg(&file)
            .arg("udp dst port 4789")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let mut err = std::io::BufReader::new(c.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
            assert!(n > 0, "tcpdump exited before listening");
        }
        (c, err, file)
    });
    // Eight TCP flows, one UDP source port each by their hash: all eight on one of the
    // four ports is a 1 in 16384 chance (four flows made it 1 in 64, seen once).
    if let Some(b) = iperf3_with(&h1, &h2, "198.19.0.2", &["-P", "8"]) {
        assert!(b > 1_000_000, "iperf3 valed to valed: {b} bytes");
    }
    if let Some((mut c, _err, file)) = dump {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let _ = c.wait();
        let frames = wire::pcap_frames(&std::fs::read(&file).unwrap());
        assert!(frames.len() > 100, "{} datagrams captured", frames.len());
        let mut ports = std::collections::BTreeSet::new();
        for f in &frames {
            assert_eq!(f[12..14], [0x08, 0x00], "IPv4 underlay");
            assert_eq!(f[20] & 0x40, 0x40, "DF set");
            assert_eq!(f[23], 17, "UDP");
            ports.insert(u16::from_be_bytes([f[34], f[35]]));
            assert_eq!(f[36..38], 4789u16.to_be_bytes());
            assert_eq!(f[42..50], [0x08, 0, 0, 0, 0, 0, 7, 0], "RFC 7348's header");
        }
        assert!(
            ports.iter().all(|p| (40000..=40003).contains(p)) && ports.len() >= 2,
            "source ports from the range, flows spread: {ports:?}"
        );
    }
    // TSO super-frames from the TAP were cut to the overlay MTU before they left.
    assert!(
        d1.stats().sum("rx_segmented") > 0,
        "segmented on the way in"
    );
    assert_eq!(hc(&d1, "too_big"), 0);
    // A super-frame's segments left in trains (UDP GSO), and came in as trains the
    // kernel kept whole across the veth (UDP GRO), split here into their datagrams.
    assert!(hc(&d1, "gso_sends") > 0, "{}", uplink(&d1)["counters"]);
    assert!(hc(&d2, "gro_reads") > 0, "{}", uplink(&d2)["counters"]);
    assert!(
        wait_for(10.0, || hc(&d2, "from_host") == hc(&d1, "vxlan_datagrams")),
        "what one sent the other got: {} / {}",
        uplink(&d1)["counters"],
        uplink(&d2)["counters"]
    );
    d1.assert_laws();
    d2.assert_laws();
}

#[test]
fn head_end_replication_floods_to_every_remote_and_unicast_reaches_only_its_host() {
    need_net!();
    let mut net = Net::new("d");
    let (u, v) = (net.ns("u", false), net.ns("v", false));
    let (b, c, h) = (net.ns("b", false), net.ns("c", false), net.ns("h", false));
    // The underlay: a bridge in U with one veth to each of the three VTEPs.
    ok(&["ip", "-n", &u, "link", "add", "br0", "type", "bridge"]);
    ok(&["ip", "-n", &u, "link", "set", "br0", "up"]);
    let vteps = [(&v, "1"), (&b, "2"), (&c, "3")];
    for (ns, x) in vteps {
        let (ul, nl) = (net.name(&format!("p{x}")), net.name(&format!("l{x}")));
        net.wire((&u, &ul, ""), (ns, &nl, &format!("198.18.0.{x}/24")));
        ok(&["ip", "-n", &u, "link", "set", &ul, "master", "br0"]);
    }
    // Kernel VTEPs as in l2-peers.md §2.2: learning, an all-zeros entry per peer.
    for (ns, x, others) in [(&b, "2", ["1", "3"]), (&c, "3", ["1", "2"])] {
        let local = format!("198.18.0.{x}");
        kernel_vtep(
            ns,
            &net.name(&format!("l{x}")),
            "vx0",
            43,
            &["local", &local],
            &format!("198.19.0.{x}/24"),
        );
        for o in others {
            ok(&[
                "bridge",
                "-n",
                ns,
                "fdb",
                "append",
                "00:00:00:00:00:00",
                "dev",
                "vx0",
                "dst",
                &format!("198.18.0.{o}"),
            ]);
        }
    }
    let d = Daemon::start_in(&v, "vxd-v", &[]);
    let tap = net.name("t");
    tap_host(&d, &v, &tap, &h, "198.19.0.1/24", 1450);
    ctl_ok(
        &d,
        &[
            "vxlan",
            "vale0:up",
            "--vni",
            "43",
            "--local",
            "198.18.0.1",
            "--remote",
            "198.18.0.2",
            "--remote",
            "198.18.0.3",
        ],
    );
    let hmac = mac(&h, &tap);
    let (b0, c0) = (counts(&b, "vx0").0, counts(&c, "vx0").0);
    // The first ping's ARP request is a broadcast: both remotes get it.
    assert!(ping(&h, "198.19.0.2", 1), "{}", d.log());
    assert!(counts(&c, "vx0").0 > c0, "the broadcast reached C");
    assert!(counts(&b, "vx0").0 > b0, "and B");
    for ns in [&b, &c] {
        let fdb = ok(&["bridge", "-n", ns, "fdb", "show", "dev", "vx0"]);
        assert!(
            fdb.contains(&format!("{hmac} dst 198.18.0.1")),
            "{ns}: {fdb}"
        );
    }
    assert!(hc(&d, "vxlan_datagrams") > hc(&d, "to_host"), "replicated");
    // Learned: unicast to B's host goes to B alone.
    let about = uplink(&d)["about"].as_str().unwrap_or_default().to_string();
    assert!(
        about.contains(&format!("{} via 198.18.0.2", mac(&b, "vx0"))),
        "{about}"
    );
    let (b1, c1) = (counts(&b, "vx0").0, counts(&c, "vx0").0);
    assert!(ping(&h, "198.19.0.2", 10), "{}", d.log());
    let (b2, c2) = (counts(&b, "vx0").0, counts(&c, "vx0").0);
    assert!(b2 >= b1 + 10, "B got the pings: {b1} -> {b2}");
    assert_eq!(c2, c1, "C got none of them");
    // And C's host is reached through C alone.
    assert!(ping(&h, "198.19.0.3", 3), "{}", d.log());
    // At most the ARP broadcast and, should B's kernel probe H's entry meanwhile, the
    // answer to its probe; flooded, the three pings would have come too.
    let b3 = counts(&b, "vx0").0;
    assert!(
        b3 <= b2 + 2,
        "B got only the ARP broadcast of C's: {b2} -> {b3}"
    );
    d.assert_laws();
}

/// A private Open vSwitch instance (its database, its ovs-vswitchd in a namespace, the
/// userspace datapath), as in l2-peers.md §2.5; its daemons stopped by PID on drop.
#[test]
fn open_vswitch_userspace_is_a_peer_both_ways() {
    need_net!();
    if !have(
        "ovs-vswitchd",
        "openvswitch-switch",
        "the Open vSwitch peer",
    ) {
        return;
    }
    let mut net = Net::new("o");
    let (v, o, h) = (net.ns("v", false), net.ns("o", false), net.ns("h", false));
    let (vu, ou) = (net.name("u"), net.name("o"));
    net.wire((&v, &vu, "198.18.0.1/24"), (&o, &ou, ""));
    // OVS reads the underlay through AF_PACKET and drops datagrams whose outer UDP
    // checksum the veth left unfinished (`datapath_drop_tunnel_pop_error`): OVS's own
    // documented workaround, on the sending side's veth.
    ok(&["ip", "netns", "exec", &v, "ethtool", "-K", &vu, "tx", "off"]);
    let dir = std::env::temp_dir().join(format!("vale-test-ovs-{}", std::process::id()));
    let Some(ovs) = Ovs::started(dir, &o) else {
        return;
    };
    let vs = |args: &[&str]| ovs.vs(args);
    // The userspace datapath routes and ARPs itself: the endpoint address sits on the
    // bridge that holds the underlay port.
    vs(&[
        "add-br",
        "br-phy",
        "--",
        "set",
        "bridge",
        "br-phy",
        "datapath_type=netdev",
        "--",
        "add-port",
        "br-phy",
        &ou,
    ]);
    addr_add(&o, "br-phy", "198.18.0.4/24");
    ok(&["ip", "-n", &o, "link", "set", "br-phy", "up"]);
    vs(&[
        "add-br",
        "br-int",
        "--",
        "set",
        "bridge",
        "br-int",
        "datapath_type=netdev",
        "--",
        "add-port",
        "br-int",
        "vx3",
        "--",
        "set",
        "interface",
        "vx3",
        "type=vxlan",
        "options:remote_ip=198.18.0.1",
        "options:key=42",
    ]);
    addr_add(&o, "br-int", "198.19.0.4/24");
    ok(&["ip", "-n", &o, "link", "set", "br-int", "mtu", "1450", "up"]);
    let d = Daemon::start_in(&v, "vxo-v", &[]);
    let tap = net.name("t");
    tap_host(&d, &v, &tap, &h, "198.19.0.1/24", 1450);
    ctl_ok(
        &d,
        &[
            "vxlan",
            "vale0:up",
            "--vni",
            "42",
            "--local",
            "198.18.0.1",
            "--remote",
            "198.18.0.4",
        ],
    );
    // OVS's first ping may wait for its own ARP of the underlay.
    assert!(
        ping(&h, "198.19.0.4", 5),
        "to OVS:\n{}\n{}",
        d.log(),
        ovs.log()
    );
    let about = uplink(&d)["about"].as_str().unwrap_or_default().to_string();
    assert!(
        about.contains(&format!("{} via 198.18.0.4", mac(&o, "br-int"))),
        "{about}"
    );
    if let Some(b) = iperf3(&h, &o, "198.19.0.4") {
        assert!(b > 1_000_000, "iperf3 to OVS: {b} bytes");
    }
    if let Some(b) = iperf3(&o, &h, "198.19.0.1") {
        assert!(b > 1_000_000, "iperf3 from OVS: {b} bytes");
    }
    d.assert_laws();
    drop(d);
    drop(ovs);
}

#[track_caller]
fn ctl_err(d: &Daemon, args: &[&str]) -> String {
    let o = d.ctl(args);
    assert_eq!(o.status.code(), Some(1), "vale-ctl {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn vxlan_ports_are_declared_refused_with_reasons_removed_and_made_again() {
    need_net!();
    let mut net = Net::new("e");
    let (v, k) = (net.ns("v", false), net.ns("k", false));
    net.wire(
        (&v, &net.name("u"), "198.18.0.1/24"),
        (&k, &net.name("k"), "198.18.0.2/24"),
    );
    // Declared in the config file: made at start, dumped back as it was written.
    let dir = std::env::temp_dir().join(format!("vale-test-vxe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("valed.toml");
    std::fs::write(
        &file,
        "[[port]]\nname = \"vale0:up\"\nkind = \"vxlan\"\nvni = 42\nlocal = \"198.18.0.1\"\nremote = [\"198.18.0.2\", \"198.18.0.3\"]\n",
    )
    .unwrap();
    let d = Daemon::start_in(&v, "vxe-v", &["--config", path_str(&file)]);
    assert!(
        wait_for(10.0, || d.hosts().iter().any(|h| h["kind"] == "vxlan")),
        "{}",
        d.log()
    );
    let about = uplink(&d)["about"].as_str().unwrap_or_default().to_string();
    assert!(about.contains("remotes 198.18.0.2 198.18.0.3"), "{about}");
    // A kernel from 5.0 on offers both (UDP_SEGMENT 4.18, UDP_GRO 5.0): the port uses
    // them.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let major: u32 = release
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 5 {
        assert!(about.contains("UDP GSO and GRO"), "{about}");
    } else {
        eprintln!("SKIP: the offloads check needs Linux 5.0 (this is {release})");
    }
    let dump = ctl_ok(&d, &["config", "dump"]);
    assert!(
        dump.contains("kind = \"vxlan\"")
            && dump.contains("remote = [\"198.18.0.2\", \"198.18.0.3\"]")
            && dump.contains("vni = 42"),
        "{dump}"
    );
    // Refused, each with its reason: a VNI of the socket taken, the port bound in a
    // way this uplink cannot share, a port a kernel vxlan device holds, and bad values.
    ok(&[
        "ip",
        "-n",
        &v,
        "link",
        "add",
        "vxk",
        "type",
        "vxlan",
        "id",
        "7",
        "dstport",
        "4790",
        "local",
        "198.18.0.1",
        "remote",
        "198.18.0.2",
    ]);
    ok(&["ip", "-n", &v, "link", "set", "vxk", "up"]);
    let u = net.name("u");
    let remote = ["--remote", "198.18.0.2"];
    let cases: [(&str, &str, &[&str], &str); 6] = [
        (
            "42",
            "198.18.0.1",
            &remote,
            "VNI 42 on UDP 198.18.0.1:4789 is VXLAN port `up`'s already",
        ),
        (
            "43",
            "198.18.0.1",
            &["--group", "239.1.1.1", "--dev", &u],
            "cannot bind UDP 0.0.0.0:4789: VXLAN port `up` has UDP 198.18.0.1:4789",
        ),
        (
            "43",
            "198.18.0.1",
            &["--port", "4790", "--remote", "198.18.0.2"],
            "cannot bind UDP 198.18.0.1 port 4790",
        ),
        ("16777216", "198.18.0.1", &remote, "does not fit in 24 bits"),
        ("1", "198.18.0.1", &[], "needs --remote IP"),
        (
            "1",
            "198.18.0.9",
            &remote,
            "must be an address of this host",
        ),
    ];
    for (vni, local, rest, says) in cases {
        let mut a = vec!["vxlan", "vale1:up2", "--vni", vni, "--local", local];
        a.extend_from_slice(rest);
        let e = ctl_err(&d, &a);
        assert!(e.contains(says), "vale-ctl {a:?}: {e}");
    }
    // Removed: the port and its socket go, and the same port can be made again.
    ctl_ok(&d, &["-d", "vale0:up"]);
    assert!(!d.ports().contains(&"vale0:up".to_string()));
    assert!(d.hosts().iter().all(|h| h["kind"] != "vxlan"));
    ctl_ok(
        &d,
        &[
            "vxlan",
            "vale1:up2",
            "--vni",
            "43",
            "--local",
            "198.18.0.1",
            "--remote",
            "198.18.0.2",
            "--no-learning",
            "--no-offloads",
        ],
    );
    let h = d.host("vale1:up2");
    let about = h["about"].as_str().unwrap_or_default();
    assert!(
        about.contains("no learning") && about.contains("offloads off"),
        "{h}"
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A VXLAN uplink carries one VLAN of a VLAN-aware switch (the VNI <-> VID map): the
/// uplink is an access port of that VLAN, so VLAN 10's frames leave untagged in VNI 42
/// and what arrives in VNI 42 joins VLAN 10. With the uplink moved to VLAN 20, the host
/// in VLAN 10 no longer reaches the kernel's side, and the switch says why.
#[test]
fn a_vxlan_uplink_carries_one_vlan_of_a_vlan_aware_switch() {
    need_net!();
    let p = kernel_peer("w", false, false);
    let d = &p.d;
    let host = format!("vale0:{}", p.tap);
    ctl_ok(d, &["vlan", "vale0", "--filtering", "on"]);
    ctl_ok(d, &["vlan", &host, "--access", "10"]);
    ctl_ok(d, &["vlan", "vale0:up", "--access", "10"]);
    // The kernel's vx0 is no VLAN device: it answers only untagged frames, so the ping
    // also shows the tag was taken off into VNI 42 and none put on the way back.
    assert!(
        ping(&p.h, "198.19.0.2", 3),
        "VLAN 10 over VNI 42:\n{}",
        d.log()
    );
    let fdb = ctl_ok(d, &["fdb", "vale0"]);
    assert!(
        fdb.lines()
            .any(|l| l.contains(&mac(&p.k, "vx0")) && l.contains("10")),
        "the kernel's MAC learned in VLAN 10: {fdb}"
    );
    // The uplink now carries VLAN 20: VLAN 10's host is cut off from VNI 42.
    ctl_ok(d, &["vlan", "vale0:up", "--access", "20"]);
    let before = d.counter(&host, "vlan_not_member") + d.counter(&host, "no_dest");
    assert!(
        !ping(&p.h, "198.19.0.2", 2),
        "VLAN 10 must not reach VNI 42 now"
    );
    let after = d.counter(&host, "vlan_not_member") + d.counter(&host, "no_dest");
    assert!(
        after > before,
        "the switch counted the frames it kept in VLAN 10"
    );
    // And back: traffic resumes.
    ctl_ok(d, &["vlan", "vale0:up", "--access", "10"]);
    assert!(ping(&p.h, "198.19.0.2", 3), "{}", d.log());
    // The overlay MTU holds the frame as it leaves: a full-size frame of the overlay
    // (1464 bytes) fits untagged, but as a trunk the uplink pushes a tag and the
    // datagram is 4 bytes over the underlay's MTU: counted `too_big`, never cut.
    let big0 = hc(d, "too_big");
    assert!(
        ping_df(&p.h, "198.19.0.2", 2, 1422),
        "1464 bytes untagged fit the overlay MTU"
    );
    ctl_ok(d, &["vlan", "vale0:up", "--trunk", "10"]);
    assert!(!ping_df(&p.h, "198.19.0.2", 2, 1422), "tagged, they do not");
    assert!(
        wait_for(10.0, || hc(d, "too_big") == big0 + 2),
        "{}",
        uplink(d)
    );
    d.assert_laws();
}

/// Several VNIs on one UDP socket, each carrying one VLAN (`--map VNI:VID`): on a
/// VLAN-aware switch the uplink is a trunk of VLANs 10 (native, in `--vni` 42) and 20
/// (in VNI 43); two kernel vxlan devices, VNIs 42 and 43 on the kernel's one socket, each
/// reach only the host of their VLAN.
#[test]
fn one_uplink_carries_several_vnis_each_mapped_to_a_vlan() {
    need_net!();
    let mut p = kernel_peer("n", false, false);
    let (v, ku) = (p._net.name("v"), p._net.name("k"));
    let h2 = p._net.ns("h2", false);
    let tap2 = p._net.name("s");
    let d = &p.d;
    kernel_vtep(
        &p.k,
        &ku,
        "vx1",
        43,
        &["local", "198.18.0.2", "remote", "198.18.0.1"],
        "198.20.0.2/24",
    );
    ctl_ok(d, &["-d", "vale0:up"]);
    let o = d.ctl(&[
        "vxlan",
        "vale0:up",
        "--vni",
        "42",
        "--local",
        "198.18.0.1",
        "--remote",
        "198.18.0.2",
        "--map",
        "42:20",
    ]);
    assert!(!o.status.success(), "--vni itself cannot be mapped");
    ctl_ok(
        d,
        &[
            "vxlan",
            "vale0:up",
            "--vni",
            "42",
            "--local",
            "198.18.0.1",
            "--remote",
            "198.18.0.2",
            "--map",
            "43:20",
        ],
    );
    assert!(
        uplink(d)["about"]
            .as_str()
            .is_some_and(|a| a.contains("VNI 43 = VLAN 20")),
        "{}",
        uplink(d)
    );
    tap_host(d, &v, &tap2, &h2, "198.20.0.1/24", 1450);
    ctl_ok(d, &["vlan", "vale0", "--filtering", "on"]);
    ctl_ok(d, &["vlan", &format!("vale0:{}", p.tap), "--access", "10"]);
    ctl_ok(d, &["vlan", &format!("vale0:{tap2}"), "--access", "20"]);
    ctl_ok(
        d,
        &["vlan", "vale0:up", "--trunk", "10,20", "--native", "10"],
    );
    let (rx0, _) = counts(&p.k, "vx0");
    let (rx1, _) = counts(&p.k, "vx1");
    // VLAN 20's host reaches VNI 43's device; nothing of it reaches VNI 42's.
    assert!(
        ping(&h2, "198.20.0.2", 3),
        "VLAN 20 over VNI 43:\n{}",
        d.log()
    );
    assert_eq!(counts(&p.k, "vx0").0, rx0, "VNI 42 saw none of VLAN 20");
    let (rx1b, _) = counts(&p.k, "vx1");
    assert!(rx1b >= rx1 + 3, "VNI 43 got the pings");
    // And VLAN 10's (the native, untagged in VNI 42) reaches VNI 42's only.
    assert!(
        ping(&p.h, "198.19.0.2", 3),
        "VLAN 10 over VNI 42:\n{}",
        d.log()
    );
    assert_eq!(counts(&p.k, "vx1").0, rx1b, "VNI 43 saw none of VLAN 10");
    let fdb = ctl_ok(d, &["fdb", "vale0"]);
    for (dev, vid) in [("vx0", "10"), ("vx1", "20")] {
        let m = mac(&p.k, dev);
        assert!(
            fdb.lines()
                .any(|l| l.contains(&m) && l.split_whitespace().any(|w| w == vid)),
            "{dev}'s MAC learned in VLAN {vid}: {fdb}"
        );
    }
    // Each address names its VTEP and, the uplink carrying two, its VNI.
    for (dev, vni) in [("vx0", 42), ("vx1", 43)] {
        let m = mac(&p.k, dev);
        let r = fdb_row(d, &m).unwrap_or_else(|| panic!("{m} not learned"));
        assert_eq!(
            (&r["vtep"], &r["vni"]),
            (&"198.18.0.2".into(), &vni.into()),
            "{r}"
        );
    }
    assert_eq!(hc(d, "vxlan_foreign_vni"), 0);
    // A remote in VNI 42 that tags its frames with VID 20 does not get into VLAN 20,
    // and so into VNI 43: dropped, counted. A VID no VNI is mapped to passes as before.
    assert_eq!(hc(d, "vxlan_tagged_mapped"), 0);
    let tagged = |tpid: [u8; 2], vid: u8| -> Vec<u8> {
        [
            &[0x08, 0, 0, 0, 0, 0, 42, 0][..],
            &[0xff; 6],
            &[2, 0, 0, 0, 0, 0x77],
            &tpid,
            &[0, vid],
            &[0x88, 0xb5],
            &[0u8; 46],
        ]
        .concat()
    };
    let (from0, rx1c) = (hc(d, "from_host"), counts(&p.k, "vx1").0);
    send_py(
        &p.k,
        "198.18.0.1",
        &[
            tagged([0x81, 0x00], 20),
            tagged([0x81, 0x00], 20),
            tagged([0x88, 0xa8], 20),
            tagged([0x81, 0x00], 30),
        ],
        0,
    );
    assert!(
        wait_for(10.0, || hc(d, "vxlan_tagged_mapped") == 3
            && hc(d, "from_host") == from0 + 1),
        "{}",
        uplink(d)["counters"]
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        counts(&p.k, "vx1").0,
        rx1c,
        "nothing of it was flooded into VNI 43"
    );
    d.assert_laws();
}
