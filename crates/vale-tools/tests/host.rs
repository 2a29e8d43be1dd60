//! Host ports against the real kernel: TAP interfaces valed creates (`vale-ctl -n`),
//! moved into network namespaces this test creates, and a veth end attached through
//! AF_PACKET (`vale-ctl -a vale2:IF`). Needs root, /dev/net/tun and `ip`; prints SKIP
//! otherwise. Every namespace and interface made here is removed, also on failure.

mod common;
use common::peers::{Ovs, iperf3, link_counts, link_mac, ok, ping_in, run};
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for network namespaces and TAP devices".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    if !have("ip", "iproute2", "host ports") {
        return Some("no `ip` command (apt-get install iproute2)".into());
    }
    None
}

macro_rules! need_host {
    () => {
        if let Some(r) = skip_reason() {
            skip(&r);
            return;
        }
    };
}

/// Namespaces and root-namespace interfaces of one test, deleted on drop.
struct Net {
    tag: String,
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Net {
    fn new(test: &str) -> Net {
        // Short: interface names have 15 characters at most.
        let tag = format!("{}{}", test, std::process::id() % 10000);
        Net {
            tag,
            namespaces: Vec::new(),
            links: Vec::new(),
        }
    }

    fn name(&self, what: &str) -> String {
        format!("{}{what}", self.tag)
    }

    fn ns(&mut self, what: &str) -> String {
        let n = self.name(what);
        let _ = run(&["ip", "netns", "del", &n]);
        ok(&["ip", "netns", "add", &n]);
        ok(&["ip", "-n", &n, "link", "set", "lo", "up"]);
        // No IPv6 on what is moved in: router solicitations and MLD reports, sent at
        // random moments after a link comes up, would land in captures and counts.
        for conf in ["all", "default"] {
            ok(&[
                "ip",
                "netns",
                "exec",
                &n,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{conf}.disable_ipv6=1"),
            ]);
        }
        self.namespaces.push(n.clone());
        n
    }

    /// A veth pair in this namespace, `a` up (deleted on drop).
    fn veth(&mut self, a: &str, b: &str) {
        let _ = run(&["ip", "link", "del", a]);
        ok(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
        self.links.push(a.to_string());
        // The root namespace's stack stays silent on `a` (no IPv6 solicitations), so
        // the frames its peer counts are the switch's.
        let key = format!("net.ipv6.conf.{}.disable_ipv6=1", a.replace('.', "/"));
        ok(&["sysctl", "-qw", &key]);
        ok(&["ip", "link", "set", a, "up"]);
    }

    /// Moves `ifname` into `ns`, gives it `addr` and brings it up.
    fn place(&self, ifname: &str, ns: &str, addr: &str) {
        ok(&["ip", "link", "set", ifname, "netns", ns]);
        ok(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname]);
        ok(&["ip", "-n", ns, "link", "set", ifname, "up"]);
    }

    /// (sent, received) by the kernel over `ifs` (namespace, interface): the frames they
    /// handed to valed and those valed wrote to them.
    fn totals(&self, ifs: &[(&str, &str)]) -> (u64, u64) {
        ifs.iter().fold((0, 0), |(s, r), (ns, i)| {
            let (rx, tx) = link_counts(ns, i);
            (s + tx, r + rx)
        })
    }

    fn ping(&self, ns: &str, dst: &str, count: u32) -> bool {
        ping_in(ns, dst, count, &["-W", "1"])
    }

    /// `ip` as a permanent neighbour on `ifname` in `ns`, at the address of `peer_if` in
    /// `peer_ns`: no ARP probes (the kernel's, some seconds after a neighbour learned
    /// from a request is first used) among frames a test counts.
    fn pin_neighbour(&self, ns: &str, ifname: &str, ip: &str, peer_ns: &str, peer_if: &str) {
        let br = ok(&["ip", "-n", peer_ns, "-br", "link", "show", "dev", peer_if]);
        let mac = br
            .split_whitespace()
            .nth(2)
            .expect("a link address")
            .to_string();
        ok(&[
            "ip",
            "-n",
            ns,
            "neigh",
            "replace",
            ip,
            "lladdr",
            &mac,
            "dev",
            ifname,
            "nud",
            "permanent",
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.namespaces {
            let _ = run(&["ip", "netns", "del", n]);
        }
        for l in &self.links {
            let _ = run(&["ip", "link", "del", l]);
        }
    }
}

fn ctl_err(d: &Daemon, args: &[&str]) -> String {
    let o = d.ctl(args);
    assert_eq!(o.status.code(), Some(1), "vale-ctl {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn if_exists(name: &str) -> bool {
    run(&["ip", "link", "show", name]).status.success()
}

#[test]
fn tap_ports_in_namespaces_talk_through_the_switch_and_nobody_else() {
    need_host!();
    let mut net = Net::new("vh");
    let d = Daemon::start("host-tap", &[]);
    let (ta, tb, tc) = (net.name("a"), net.name("b"), net.name("c"));
    for t in [&ta, &tb, &tc] {
        ctl_ok(&d, &["-n", t]);
        assert!(
            if_exists(t),
            "vale-ctl -n {t} makes an interface the OS sees"
        );
    }
    ctl_ok(&d, &["-a", &format!("vale0:{ta}")]);
    ctl_ok(&d, &["-a", &format!("vale0:{tb}")]);
    ctl_ok(&d, &["-a", &format!("vale1:{tc}")]);
    let td = net.name("d");
    ctl_ok(&d, &["-n", &td]);
    ctl_ok(&d, &["-a", &format!("vale1:{td}")]);
    let (na, nb, nc, nd) = (net.ns("A"), net.ns("B"), net.ns("C"), net.ns("D"));
    net.place(&ta, &na, "10.199.0.1/24");
    net.place(&tb, &nb, "10.199.0.2/24");
    net.place(&tc, &nc, "10.199.0.3/24");
    net.place(&td, &nd, "10.199.0.4/24");

    // ARP goes through the flood path, then unicast both ways.
    assert!(net.ping(&na, "10.199.0.2", 3), "A pings B\n{}", d.log());
    assert!(net.ping(&nb, "10.199.0.1", 3), "B pings A");
    let fdb = ctl_ok(&d, &["fdb", "vale0"]);
    for (ns, t) in [(&na, &ta), (&nb, &tb)] {
        let mac = link_mac(ns, t);
        assert!(
            fdb.contains(&mac) && fdb.contains(&format!("vale0:{t}")),
            "{mac} of {t} learned on vale0:{t}: {fdb}"
        );
    }
    // vale1 is another switch, which works among its own ports.
    assert!(
        !net.ping(&nc, "10.199.0.1", 2),
        "C on vale1 must not reach A on vale0"
    );
    assert!(net.ping(&nc, "10.199.0.4", 2), "C reaches D on vale1");
    let list = d.ctl_json(&["list"]);
    let hosts = list["hosts"].as_array().expect("hosts in list");
    assert_eq!(hosts.len(), 4, "{list}");
    let a = hosts.iter().find(|h| h["name"] == ta.as_str()).unwrap();
    assert_eq!(a["kind"], "tap");
    assert_eq!(a["attached"], format!("vale0:{ta}").as_str());
    assert!(a["counters"]["from_host"].as_u64().unwrap() >= 3);
    assert!(a["counters"]["to_host"].as_u64().unwrap() >= 3);

    // A TCP transfer (the kernel's own, through the switch), if iperf3 is installed.
    if let Some(bytes) = iperf3(&na, &nb, "10.199.0.2") {
        assert!(bytes > 1_000_000, "iperf3 moved {bytes} bytes");
    }
    // Every frame the four kernels handed to valed (two ports per switch: each makes one
    // copy) reached a kernel or is counted.
    let ifs = [(&*na, &*ta), (&*nb, &*tb), (&*nc, &*tc), (&*nd, &*td)];
    d.assert_conserved_with(|| net.totals(&ifs));

    // The daemon's exit takes its TAP interfaces with it.
    drop(d);
    for (ns, t) in [(&na, &ta), (&nb, &tb), (&nc, &tc), (&nd, &td)] {
        assert!(
            !run(&["ip", "-n", ns, "link", "show", t]).status.success(),
            "{t} gone with valed"
        );
    }
}

/// Host ports' TX rings have room for 7 super-frames (256 slots), RX rings here 512
/// (`--max-slots 512`): a pass that finds the TX ring full must still see the room the
/// switch makes. It did not once (the ring's `tail` was refreshed only after a read),
/// and TCP stalled for good within a second or two of iperf3. Rings that cannot hold one
/// largest frame are refused with a clear error.
#[test]
fn tap_ports_with_small_rings_keep_forwarding_under_tcp_load() {
    need_host!();
    let mut net = Net::new("vs");
    let d = Daemon::start("host-small", &["--max-slots", "512", "--slots", "256"]);
    let (ta, tb) = (net.name("a"), net.name("b"));
    for t in [&ta, &tb] {
        ctl_ok(&d, &["-n", t]);
        ctl_ok(&d, &["-a", &format!("vale0:{t}")]);
    }
    let (na, nb) = (net.ns("A"), net.ns("B"));
    net.place(&ta, &na, "10.199.2.1/24");
    net.place(&tb, &nb, "10.199.2.2/24");
    assert!(net.ping(&na, "10.199.2.2", 2), "A pings B\n{}", d.log());
    let list = d.ctl_json(&["list"]);
    let port = &list["switches"][0]["ports"][0];
    assert_eq!(port["geometry"]["tx_slots"], 256, "{list}");
    assert_eq!(port["geometry"]["rx_slots"], 512, "{list}");
    let tiny = Daemon::start("host-tiny", &["--max-slots", "32", "--slots", "32"]);
    let tc = net.name("c");
    ctl_ok(&tiny, &["-n", &tc]);
    let e = ctl_err(&tiny, &["-a", &format!("vale0:{tc}")]);
    assert!(
        e.contains("host ports need rings of more than 32 slots"),
        "{e}"
    );
    assert!(
        tiny.ports().is_empty(),
        "nothing attached: {:?}",
        tiny.ports()
    );

    for round in 0..3 {
        let Some(bytes) = iperf3(&na, &nb, "10.199.2.2") else {
            return;
        };
        assert!(
            bytes > 1_000_000,
            "round {round}: iperf3 moved {bytes} bytes"
        );
        assert!(
            net.ping(&na, "10.199.2.2", 2),
            "round {round}: A still reaches B after the transfer"
        );
    }
    let ifs = [(&*na, &*ta), (&*nb, &*tb)];
    d.assert_conserved_with(|| net.totals(&ifs));
}

/// Interfaces that go down, come back, or are deleted under a switch: a device in error
/// stays readable for epoll until the error is handled, so once a deleted TAP kept the
/// forwarding thread at 100 % of a CPU for good. Now: the daemon stays idle, the error
/// is counted and logged, traffic resumes when an interface comes back, and the port can
/// be detached and removed.
#[test]
fn interfaces_that_go_down_or_away_leave_the_daemon_idle() {
    need_host!();
    let mut net = Net::new("vg");
    let d = Daemon::start("host-gone", &[]);
    let (veth, peer, tap) = (net.name("x"), net.name("y"), net.name("t"));
    net.veth(&veth, &peer);
    let (nv, nt) = (net.ns("V"), net.ns("T"));
    net.place(&peer, &nv, "10.199.3.1/24");
    ctl_ok(&d, &["-n", &tap]);
    net.place(&tap, &nt, "10.199.3.2/24");
    ctl_ok(&d, &["-a", &format!("vale0:{veth}")]);
    ctl_ok(&d, &["-a", &format!("vale0:{tap}")]);
    assert!(net.ping(&nv, "10.199.3.2", 2), "V pings T\n{}", d.log());
    let base = d.idle_cpu(1.0);

    // The attached interface goes down (its socket gets ENETDOWN), then up again.
    ok(&["ip", "link", "set", &veth, "down"]);
    let down = d.idle_cpu(2.0);
    assert!(
        down < 0.3,
        "valed used {down:.2} CPU-s in 2 s with {veth} down"
    );
    ok(&["ip", "link", "set", &veth, "up"]);
    assert!(
        net.ping(&nv, "10.199.3.2", 3),
        "traffic resumes once {veth} is up again\n{}",
        d.log()
    );
    assert!(d.host(&veth)["counters"]["read_errors"].as_u64().unwrap() >= 1);

    // The TAP's interface is deleted under the switch.
    ok(&["ip", "-n", &nt, "link", "del", &tap]);
    let gone = d.idle_cpu(2.0);
    assert!(
        gone < 0.3,
        "valed used {gone:.2} CPU-s in 2 s after {tap} was deleted"
    );
    assert!(
        d.log().contains("interface was deleted"),
        "said so: {}",
        d.log()
    );
    assert_eq!(d.host(&tap)["gone"], true);
    let list = stdout_of(&d.ctl(&["list"]));
    assert!(list.contains("(interface gone)"), "{list}");
    // Traffic toward it is counted, not a problem; the port detaches and goes away.
    let _ = net.ping(&nv, "10.199.3.2", 1);
    ctl_ok(&d, &["-d", &format!("vale0:{tap}")]);
    ctl_ok(&d, &["-r", &tap]);

    // The attached interface is deleted too.
    ok(&["ip", "link", "del", &veth]);
    let del = d.idle_cpu(2.0);
    assert!(
        del < 0.3,
        "valed used {del:.2} CPU-s in 2 s after {veth} was deleted"
    );
    assert_eq!(d.host(&veth)["gone"], true);
    // Made again under the same name, it is another interface (the port's socket is
    // not on it): still gone.
    net.veth(&veth, &peer);
    assert_eq!(
        d.host(&veth)["gone"],
        true,
        "a new {veth} is not the one attached"
    );
    ctl_ok(&d, &["-d", &format!("vale0:{veth}")]);
    assert!(d.ports().is_empty(), "{:?}", d.ports());
    eprintln!(
        "valed CPU-s: idle {base:.2}, down {down:.2}, TAP gone {gone:.2}, veth gone {del:.2}"
    );
}

#[test]
fn a_veth_attached_by_name_reaches_a_tap_port() {
    need_host!();
    let mut net = Net::new("vv");
    let d = Daemon::start("host-veth", &[]);
    // A name with '-', as interfaces often have (`veth-a`, `br-lan`): attachable by name.
    let (veth, peer, tap) = (net.name("-x"), net.name("y"), net.name("t"));
    net.veth(&veth, &peer);
    let (nd, ne) = (net.ns("D"), net.ns("E"));
    net.place(&peer, &nd, "10.199.1.1/24");
    ctl_ok(&d, &["-n", &tap]);
    net.place(&tap, &ne, "10.199.1.2/24");
    ctl_ok(&d, &["-a", &format!("vale2:{veth}")]);
    ctl_ok(&d, &["-a", &format!("vale2:{tap}")]);
    assert!(
        net.ping(&nd, "10.199.1.2", 3),
        "veth side pings the TAP side\n{}",
        d.log()
    );
    assert!(net.ping(&ne, "10.199.1.1", 3), "and back");
    // TCP across the two kinds of host port: 64 KiB super-frames leave the TAP with a
    // 12-byte virtio-net header and enter the veth with a 10-byte one.
    if let Some(bytes) = iperf3(&ne, &nd, "10.199.1.1") {
        assert!(bytes > 1_000_000, "iperf3 veth <- TAP moved {bytes} bytes");
    }
    // And the other way: super-frames from the veth are too large for the receive
    // ring's slots and come through the socket instead, whole.
    if let Some(bytes) = iperf3(&nd, &ne, "10.199.1.2") {
        assert!(bytes > 1_000_000, "iperf3 veth -> TAP moved {bytes} bytes");
        let h = d.host(&veth);
        let c = &h["counters"];
        let (n, b) = (
            c["from_host"].as_u64().unwrap(),
            c["from_host_bytes"].as_u64().unwrap(),
        );
        assert!(
            n > 0 && b / n > 3000,
            "frames from the veth average {} bytes: {c}",
            b / n.max(1)
        );
        // What the kernel could neither fit in the ring nor queue is counted; with a
        // 4 MiB socket buffer that should be rare.
        let lost = c["truncated"].as_u64().unwrap();
        assert!(lost * 100 <= n, "{lost} of {n} frames lost: {c}");
    }
    assert_eq!(d.host(&veth)["kind"], "nic");
    // The veth's peer and the TAP, by their kernels' counts: all sent = received + drops.
    let ifs = [(&*nd, &*peer), (&*ne, &*tap)];
    d.assert_conserved_with(|| net.totals(&ifs));

    // Detach: the interface is given back untouched, the path is gone.
    ctl_ok(&d, &["-d", &format!("vale2:{veth}")]);
    assert!(if_exists(&veth), "{veth} still exists after -d");
    assert!(!d.ports().contains(&format!("vale2:{veth}")));
    assert!(!net.ping(&nd, "10.199.1.2", 2), "no path after detach");
    // And it can come back.
    ctl_ok(&d, &["-a", &format!("vale2:{veth}")]);
    assert!(net.ping(&nd, "10.199.1.2", 3), "attached again");
}

/// Whether `ifname` (in the root namespace) has an XDP program attached.
fn has_xdp(ifname: &str) -> bool {
    let o = run(&["ip", "link", "show", ifname]);
    String::from_utf8_lossy(&o.stdout).contains("prog/xdp")
}

#[test]
fn a_veth_attached_with_xdp_reaches_a_tap_port_and_is_given_back() {
    need_host!();
    let mut net = Net::new("vx");
    let mut d = Daemon::start("host-xdp", &[]);
    let (veth, peer, tap) = (net.name("x"), net.name("y"), net.name("t"));
    net.veth(&veth, &peer);
    let (nd, ne) = (net.ns("D"), net.ns("E"));
    net.place(&peer, &nd, "10.199.3.1/24");
    ctl_ok(&d, &["-n", &tap]);
    net.place(&tap, &ne, "10.199.3.2/24");
    // --xdp is for existing interfaces, not persistent ports.
    let e = ctl_err(&d, &["-a", &format!("vale3:{tap}"), "--xdp"]);
    assert!(e.contains("--xdp is for existing interfaces"), "{e}");
    ctl_ok(&d, &["-a", &format!("vale3:{tap}")]);
    // A kernel without BPF or AF_XDP (CONFIG_XDP_SOCKETS) cannot do this at all: asked
    // of the kernel itself (a socket, a map, a program), so that where it can, any
    // failure of `--xdp` fails the test.
    if let Err(e) = valed::probe_af_xdp() {
        skip(&format!("no AF_XDP here: {e}"));
        return;
    }
    let o = d.ctl(&["-a", &format!("vale3:{veth}"), "--xdp"]);
    assert!(
        o.status.success(),
        "-a --xdp: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    assert!(has_xdp(&veth), "an XDP program on {veth} while attached");
    // A veth is a software interface: vale-ctl says what that means for checksums.
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(note.contains("software interface"), "{note}");
    assert_eq!(d.host(&veth)["kind"], "nic-xdp");
    assert!(
        net.ping(&nd, "10.199.3.2", 3),
        "veth side pings the TAP side through AF_XDP\n{}",
        d.log()
    );
    assert!(net.ping(&ne, "10.199.3.1", 3), "and back");
    let c = d.host(&veth)["counters"].clone();
    assert!(
        c["from_host"].as_u64().unwrap() >= 3 && c["to_host"].as_u64().unwrap() >= 3,
        "{c}"
    );
    // TCP both ways. AF_XDP carries no offload metadata, so the veth's peer must
    // compute its checksums itself (a NIC's received frames always have them); the
    // switch cuts the TAP's super-frames into MTU-sized segments for the veth.
    if have("ethtool", "ethtool", "the AF_XDP TCP part") {
        let off = run(&[
            "ip", "netns", "exec", &nd, "ethtool", "-K", &peer, "tx", "off",
        ]);
        assert!(off.status.success(), "ethtool -K {peer} tx off failed");

        for (from, to, ip) in [(&ne, &nd, "10.199.3.1"), (&nd, &ne, "10.199.3.2")] {
            if let Some(bytes) = iperf3(from, to, ip) {
                assert!(
                    bytes > 1_000_000,
                    "iperf3 {from} -> {ip} moved {bytes} bytes"
                );
            }
        }
    }
    // Idle again: the sockets do not keep the forwarding thread awake.
    let cpu = d.idle_cpu(1.0);
    assert!(cpu < 0.2, "valed used {cpu:.2} CPU-s in 1 s of idle");
    // The veth's peer and the TAP by their kernels' counts (the TAP's super-frames cut
    // into segments for the veth): sent + segments added = received + drops.
    let ifs = [(&*nd, &*peer), (&*ne, &*tap)];
    d.assert_conserved_with(|| net.totals(&ifs));

    // Detach under a flood ping (bounded in count and time): the program is gone and
    // the interface works as before, e.g. through AF_PACKET.
    let mut flood = Command::new("ip")
        .args([
            "netns",
            "exec",
            &nd,
            "ping",
            "-f",
            "-c",
            "100000",
            "-w",
            "3",
            "10.199.3.2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ctl_ok(&d, &["-d", &format!("vale3:{veth}")]);
    let _ = flood.wait();
    assert!(d.alive(), "valed survives\n{}", d.log());
    assert!(!has_xdp(&veth), "the XDP program is detached with the port");
    assert!(!net.ping(&nd, "10.199.3.2", 2), "no path after detach");
    ctl_ok(&d, &["-a", &format!("vale3:{veth}")]);
    assert!(
        net.ping(&nd, "10.199.3.2", 3),
        "attached again through AF_PACKET"
    );
    ctl_ok(&d, &["-d", &format!("vale3:{veth}")]);

    // A daemon killed outright gives the interface back too: the program was attached
    // through a BPF link that closes with the process.
    ctl_ok(&d, &["-a", &format!("vale3:{veth}"), "--xdp"]);
    assert!(has_xdp(&veth));
    let _ = d.child.kill();
    let _ = d.child.wait();
    assert!(!d.alive());
    assert!(
        wait_for(3.0, || !has_xdp(&veth)),
        "the XDP program outlived valed"
    );
}

#[test]
fn host_port_commands_follow_netmaps_rules() {
    need_host!();
    let net = Net::new("ve");
    let d = Daemon::start("host-err", &["--socket-mode", "0666"]);
    // Anyone the socket lets in may open ports, but not create or attach interfaces.
    if have("setpriv", "util-linux", "the permission part") {
        let o = d
            .cmd("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", VALE_CTL])
            .args(["-n", &net.name("q")])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("only root or valed's own user"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!if_exists(&net.name("q")));
    }
    let t = net.name("p");
    ctl_ok(&d, &["-n", &t]);
    assert!(ctl_err(&d, &["-n", &t]).contains("already exists"));
    assert!(ctl_err(&d, &["-n", "lo"]).contains("already exists"));
    assert!(ctl_err(&d, &["-n", "vale9"]).contains("may not start with `vale`"));
    assert!(ctl_err(&d, &["-n", "this-name-is-too-long"]).contains("1 to 15"));
    assert!(ctl_err(&d, &["-a", "vale0:nosuchif0"]).contains("no interface nosuchif0"));
    ctl_ok(&d, &["-a", &format!("vale0:{t}")]);
    assert!(ctl_err(&d, &["-a", &format!("vale1:{t}")]).contains("already attached"));
    assert!(ctl_err(&d, &["-r", &t]).contains("detach it first"));
    // The switch port is valed's own: a client cannot open it.
    let o = d
        .cmd(PKT_GEN)
        .args(["-i", &format!("vale0:{t}"), "-f", "rx", "-n", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("served by valed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // -a on a port name a client holds is refused too.
    let _p = d.open("vale0:held");
    assert!(ctl_err(&d, &["-a", "vale0:held"]).contains("no interface held"));
    assert!(ctl_err(&d, &["-d", "vale0:held"]).contains("not an attached interface"));
    assert!(ctl_err(&d, &["-h", "vale0:eth0"]).contains("persistent port"));
    ctl_ok(&d, &["-d", &format!("vale0:{t}")]);
    ctl_ok(&d, &["-r", &t]);
    assert!(!if_exists(&t), "-r removes the interface");
    assert!(ctl_err(&d, &["-r", &t]).contains("not a persistent port"));
}

#[test]
fn detach_and_remove_while_traffic_flows() {
    need_host!();
    let mut net = Net::new("vf");
    let mut d = Daemon::start("host-flow", &[]);
    let (ta, tb) = (net.name("a"), net.name("b"));
    ctl_ok(&d, &["-n", &ta]);
    ctl_ok(&d, &["-n", &tb]);
    ctl_ok(&d, &["-a", &format!("vale0:{ta}")]);
    ctl_ok(&d, &["-a", &format!("vale0:{tb}")]);
    let (na, nb) = (net.ns("A"), net.ns("B"));
    net.place(&ta, &na, "10.199.2.1/24");
    net.place(&tb, &nb, "10.199.2.2/24");
    assert!(net.ping(&na, "10.199.2.2", 2));
    // A flood ping, bounded in count and time, while the ports go away under it.
    let mut flood = Command::new("ip")
        .args([
            "netns",
            "exec",
            &na,
            "ping",
            "-f",
            "-c",
            "200000",
            "-w",
            "4",
            "10.199.2.2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ctl_ok(&d, &["-d", &format!("vale0:{tb}")]);
    ctl_ok(&d, &["-r", &tb]);
    std::thread::sleep(Duration::from_millis(300));
    ctl_ok(&d, &["-d", &format!("vale0:{ta}")]);
    let _ = flood.wait();
    assert!(d.alive(), "valed survives\n{}", d.log());
    assert!(d.ports().is_empty(), "no ports left: {:?}", d.ports());
    assert!(
        !run(&["ip", "-n", &nb, "link", "show", &tb])
            .status
            .success()
    );
    // The remaining persistent port still works when attached again.
    ctl_ok(&d, &["-a", &format!("vale3:{ta}")]);
    assert!(d.ports().contains(&format!("vale3:{ta}")));
}

#[test]
fn capture_of_a_host_port_reads_back_in_tcpdump() {
    need_host!();
    if !have("tcpdump", "tcpdump", "capture read back by tcpdump") {
        return;
    }
    let mut net = Net::new("vc");
    let d = Daemon::start("host-cap", &[]);
    let (ta, tb) = (net.name("a"), net.name("b"));
    for t in [&ta, &tb] {
        ctl_ok(&d, &["-n", t]);
        ctl_ok(&d, &["-a", &format!("vale0:{t}")]);
    }
    let (na, nb) = (net.ns("A"), net.ns("B"));
    net.place(&ta, &na, "10.199.3.1/24");
    net.place(&tb, &nb, "10.199.3.2/24");
    assert!(net.ping(&na, "10.199.3.2", 1), "ARP resolved first");
    net.pin_neighbour(&na, &ta, "10.199.3.2", &nb, &tb);
    net.pin_neighbour(&nb, &tb, "10.199.3.1", &na, &ta);
    let port = format!("vale0:{ta}");
    let file = d.dir.join("ping.pcap");
    let file_s = file.to_str().unwrap().to_string();
    let cap = d
        .cmd(VALE_CTL)
        .args(["capture", &port, "-c", "4", "-w", &file_s])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(5.0, || d
        .ports()
        .iter()
        .any(|p| p.ends_with("/rt"))));
    assert!(net.ping(&na, "10.199.3.2", 2));
    let out = cap.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let td = run(&["tcpdump", "-n", "-r", &file_s]);
    let text = String::from_utf8_lossy(&td.stdout);
    assert!(
        text.contains("10.199.3.1 > 10.199.3.2: ICMP echo request"),
        "tcpdump -r:\n{text}{}",
        String::from_utf8_lossy(&td.stderr)
    );
    assert!(
        text.contains("10.199.3.2 > 10.199.3.1: ICMP echo reply"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 4, "{text}");
    if have("tshark", "tshark", "the tshark part") {
        let ts = run(&["tshark", "-n", "-r", &file_s]);
        let t = String::from_utf8_lossy(&ts.stdout);
        assert_eq!(
            t.lines().filter(|l| l.contains("ICMP")).count(),
            4,
            "tshark -r:\n{t}"
        );
    }

    // Live into tcpdump through a pipe.
    let sh = format!(
        "'{}' capture {port} -w - -c 2 | tcpdump -n -r - 2>/dev/null",
        VALE_CTL
    );
    let mut live = d
        .cmd("sh")
        .args(["-c", &sh])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(5.0, || d
        .ports()
        .iter()
        .any(|p| p.ends_with("/rt"))));
    assert!(net.ping(&na, "10.199.3.2", 1));
    let t0 = std::time::Instant::now();
    while live.try_wait().unwrap().is_none() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = live.kill();
    let out = live.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ICMP echo request") && text.contains("ICMP echo reply"),
        "{text}"
    );
    // The captures took copies, never frames: the kernels' own counts still balance.
    let ifs = [(&*na, &*ta), (&*nb, &*tb)];
    d.assert_conserved_with(|| net.totals(&ifs));
}

/// Sends frames out of an interface, read from stdin one a line: `r HEX` a frame, `v
/// HEX` a 10-byte virtio-net header and a frame (an AF_PACKET socket with
/// `PACKET_VNET_HDR`: offloads asked of the kernel, as a local TCP stack would).
const SEND_FRAMES_PY: &str = r#"
import socket, sys
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); raw.bind((sys.argv[1], 0))
vnet = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); vnet.setsockopt(263, 15, 1); vnet.bind((sys.argv[1], 0))
for line in sys.stdin:
    k, h = line.split()
    (vnet if k == "v" else raw).send(bytes.fromhex(h))
"#;

/// Sends `frames` (with a virtio-net header in front where the flag says so) out of
/// `ifname` in namespace `ns`, through [`SEND_FRAMES_PY`].
fn send_frames(ns: &str, ifname: &str, frames: &[(bool, Vec<u8>)]) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", SEND_FRAMES_PY, ifname])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut input = String::new();
    for (vnet, f) in frames {
        input.push_str(if *vnet { "v " } else { "r " });
        input.extend(f.iter().map(|b| format!("{b:02x}")));
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "sending into {ifname}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// tcpdump writing what `ifname` in `ns` receives to a file; stopped when dropped.
struct Tcpdump {
    child: std::process::Child,
    file: std::path::PathBuf,
    /// Held open: tcpdump's last words must not meet a closed pipe before it is done.
    _stderr: std::io::BufReader<std::process::ChildStderr>,
}

impl Tcpdump {
    fn start(ns: &str, ifname: &str, file: std::path::PathBuf) -> Tcpdump {
        use std::io::BufRead;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-i", ifname, "-Q", "in"])
            // Each frame as it comes: without --immediate-mode, libpcap hands frames
            // over a TPACKET_V3 block at a time, up to a second late, so a capture that
            // was not waited for could miss frames that had arrived (seen in CI).
            .args(["--immediate-mode", "-nn", "-U", "-s", "0", "-w"])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        // It says so once its socket is open: what arrives from then on is captured.
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                panic!("tcpdump on {ifname} in {ns} exited before listening");
            }
        }
        Tcpdump {
            child,
            file,
            _stderr: err,
        }
    }

    /// The frames captured so far whose source address is `src`.
    fn from(&self, src: [u8; 6]) -> Vec<Vec<u8>> {
        let file = std::fs::read(&self.file).unwrap_or_default();
        if file.len() < 24 {
            return Vec::new();
        }
        wire::pcap_frames(&file)
            .into_iter()
            .filter(|f| f.len() >= 12 && f[6..12] == src)
            .collect()
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Frames a client port receives from `src` until there are `n` of them, or `secs`
/// have passed.
fn recv_from(p: &vale::Port, src: [u8; 6], n: usize, secs: f64) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let t = std::time::Instant::now();
    while got.len() < n && t.elapsed().as_secs_f64() < secs {
        if p.poll(vale::Interest::RX, Some(Duration::from_millis(50)))
            .unwrap()
        {
            p.dispatch(0, |f| {
                if f.len() >= 12 && f[6..12] == src {
                    got.push(f.to_vec());
                }
            });
            p.rxsync().unwrap();
        }
    }
    got
}

fn hex(frames: &[Vec<u8>]) -> String {
    let line = |f: &Vec<u8>| {
        let h: String = f.iter().take(32).map(|b| format!("{b:02x}")).collect();
        format!("  {} bytes: {h}...\n", f.len())
    };
    frames.iter().map(line).collect()
}

/// `got` and `want`, and where each pair of frames first differs.
fn mismatch(got: &[Vec<u8>], want: &[Vec<u8>]) -> String {
    let mut s = format!("got:\n{}wanted:\n{}", hex(got), hex(want));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if let Some(at) = (0..g.len().max(w.len())).find(|&k| g.get(k) != w.get(k)) {
            s += &format!("  frame {i} differs from byte {at}\n");
        }
    }
    s
}

/// Tagged frames keep their tags across an interface attached through AF_PACKET (the
/// kernel hands the outer tag over beside the frame; valed puts it back), on both of
/// valed's receive paths: frames that fit a slot of the TPACKET ring, and those larger
/// (jumbo frames, a TSO super-frame) that are read from the socket. Virtio-net header
/// offsets move with the tag: a checksum the switch completes for a client comes out
/// right, and the kernel takes the super-frame sent on to the other veth. Frames the
/// switch sends out keep their tags too: tcpdump on the veth peers reads back exactly
/// the bytes sent, tags and all.
#[test]
fn vlan_tags_cross_an_af_packet_attach_both_ways_on_ring_and_socket_paths() {
    need_host!();
    if !have("tcpdump", "tcpdump", "tagged frames read back by tcpdump")
        || !have("python3", "python3", "raw tagged frames")
    {
        return;
    }
    use wire::{checksums_ok, csum, eth, ipv4, ones, pattern, pseudo};
    let mut net = Net::new("vq");
    let d = Daemon::start("host-vlan", &[]);
    let (xa, ya, xb, yb) = (
        net.name("xa"),
        net.name("ya"),
        net.name("xb"),
        net.name("yb"),
    );
    net.veth(&xa, &ya);
    net.veth(&xb, &yb);
    let (na, nb) = (net.ns("A"), net.ns("B"));
    // Jumbo frames: larger than a ring slot (2048 bytes), they come through the socket.
    for (x, y, ns) in [(&xa, &ya, &na), (&xb, &yb, &nb)] {
        ok(&["ip", "link", "set", x, "mtu", "9000"]);
        ok(&["ip", "link", "set", y, "mtu", "9000", "netns", ns]);
        ok(&["ip", "-n", ns, "link", "set", y, "up"]);
    }
    for i in [&xa, &xb] {
        ctl_ok(&d, &["-a", &format!("vale0:{i}")]);
    }
    let client = d.open("vale0:c");
    let cap_a = Tcpdump::start(&na, &ya, d.dir.join("a.pcap"));
    let cap_b = Tcpdump::start(&nb, &yb, d.dir.join("b.pcap"));

    const BCAST: [u8; 6] = [0xff; 6];
    const DST: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];
    const FROM_A: [u8; 6] = [2, 0, 0, 0, 0x0a, 1];
    const FROM_TSO: [u8; 6] = [2, 0, 0, 0, 0x0a, 2];
    const FROM_CLIENT: [u8; 6] = [2, 0, 0, 0, 0x0c, 1];
    let c_tag = [(0x8100, 0x600a)]; // PCP 3, VID 10
    let qinq = [(0x88a8, 100), (0x8100, 10)]; // S-VID 100, C-VID 10
    let raw = |src, tags: &[(u16, u16)], len: usize, seed| {
        let mut f = eth(BCAST, src, tags, 0x88b5);
        f.extend(pattern(seed, len - f.len()));
        f
    };

    // 1. Into the veth peer: untagged, 802.1Q and QinQ frames in ring slots, the two
    // tagged ones again as 4000-byte frames (socket), and UDP whose checksum is left to
    // offload (NEEDS_CSUM from byte 38, after the tag), small and large.
    let plain = [
        raw(FROM_A, &[], 60, 1),
        raw(FROM_A, &c_tag, 64, 2),
        raw(FROM_A, &qinq, 68, 3),
        raw(FROM_A, &c_tag, 4000, 4),
        raw(FROM_A, &qinq, 4000, 5),
    ];
    // (as sent, with the pseudo-header sum in the checksum field; as completed)
    let udp = |n: usize, seed| {
        let mut f = eth(DST, FROM_A, &c_tag, 0x0800);
        f.extend(ipv4(17, 8 + n, 1));
        f.extend_from_slice(&5000u16.to_be_bytes());
        f.extend_from_slice(&6000u16.to_be_bytes());
        f.extend_from_slice(&((8 + n) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend(pattern(seed, n));
        let mut full = f.clone();
        let c = match csum(ones(pseudo(17, 8 + n), &f[38..])) {
            0 => 0xffff,
            c => c,
        };
        full[44..46].copy_from_slice(&c.to_be_bytes());
        f[44..46].copy_from_slice(&(!csum(pseudo(17, 8 + n))).to_be_bytes());
        (f, full)
    };
    let (udp_small, udp_large) = (udp(100, 6), udp(3900, 7));
    // NEEDS_CSUM, no GSO, csum_start 38, csum_offset 6.
    let vnet_udp = [1u8, 0, 0, 0, 0, 0, 38, 0, 6, 0];
    let mut sent: Vec<(bool, Vec<u8>)> = plain.iter().map(|f| (false, f.clone())).collect();
    for (f, _) in [&udp_small, &udp_large] {
        sent.push((true, [&vnet_udp[..], f].concat()));
    }
    send_frames(&na, &ya, &sent);
    let want: Vec<Vec<u8>> = plain
        .iter()
        .cloned()
        .chain([udp_small.1.clone(), udp_large.1.clone()])
        .collect();
    let got = recv_from(&client, FROM_A, want.len(), 5.0);
    assert!(
        got == want,
        "the client, from the veth: {}valed log:\n{}",
        mismatch(&got, &want),
        d.log()
    );

    // 2. A TSO super-frame (this kernel has no VLAN devices to run a TCP stream over):
    // C-tag (PCP 5, VID 10), IPv4, TCP with 3000 bytes at MSS 1000. The veth hands it
    // to valed whole, untagged, with a virtio-net header counted without the tag; the
    // switch cuts it for the client.
    let l2 = eth(DST, FROM_TSO, &[(0x8100, 0xa00a)], 0x0800);
    let payload = pattern(9, 3000);
    let mut tso = l2.clone();
    tso.extend(ipv4(6, 20 + payload.len(), 0x1234));
    tso.extend_from_slice(&5001u16.to_be_bytes());
    tso.extend_from_slice(&40000u16.to_be_bytes());
    tso.extend_from_slice(&1000u32.to_be_bytes()); // seq
    tso.extend_from_slice(&1u32.to_be_bytes()); // ack
    tso.extend_from_slice(&[0x50, 0x18, 0xff, 0xff]); // 20 bytes, PSH|ACK, window
    tso.extend_from_slice(&(!csum(pseudo(6, 20 + payload.len()))).to_be_bytes());
    tso.extend_from_slice(&[0, 0]);
    tso.extend_from_slice(&payload);
    // NEEDS_CSUM, TCPv4, hdr_len 58, gso_size 1000, csum_start 38, csum_offset 16.
    let vnet_tso = [1u8, 1, 58, 0, 0xe8, 0x03, 38, 0, 16, 0];
    send_frames(&na, &ya, &[(true, [&vnet_tso[..], &tso].concat())]);
    let segs = recv_from(&client, FROM_TSO, 3, 5.0);
    assert_eq!(segs.len(), 3, "segments:\n{}{}", hex(&segs), d.log());
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s.len(), 18 + 20 + 20 + 1000, "segment {i}");
        assert_eq!(s[..18], l2[..], "segment {i} keeps its addresses and tag");
        assert!(checksums_ok(s, 18), "segment {i} checksums");
        let seq = u32::from_be_bytes(s[42..46].try_into().unwrap());
        assert_eq!(seq, 1000 + 1000 * i as u32, "segment {i}");
        assert_eq!(s[58..], payload[i * 1000..(i + 1) * 1000], "segment {i}");
    }

    // 3. Tagged frames from a client of the switch, out through both attached veths.
    let from_client = vec![
        raw(FROM_CLIENT, &[(0x8100, 0x200a)], 64, 10),
        raw(FROM_CLIENT, &qinq, 68, 11),
        raw(FROM_CLIENT, &[(0x8100, 0x000a)], 4000, 12),
        raw(FROM_CLIENT, &[], 60, 13),
    ];
    send(&client, &from_client);

    // What the veth peers read, tcpdump putting back the tag the kernel took out.
    let n_b = want.len() + from_client.len();
    wait_for(5.0, || {
        cap_b.from(FROM_A).len() + cap_b.from(FROM_CLIENT).len() >= n_b
            && !cap_b.from(FROM_TSO).is_empty()
            && cap_a.from(FROM_CLIENT).len() >= from_client.len()
    });
    // AF_PACKET to AF_PACKET: the frames and their offload requests pass as they are.
    let want_b: Vec<Vec<u8>> = sent
        .iter()
        .map(|(v, f)| f[if *v { 10 } else { 0 }..].to_vec())
        .collect();
    let got_b = cap_b.from(FROM_A);
    assert!(
        got_b == want_b,
        "{yb}, from the veth: {}",
        mismatch(&got_b, &want_b)
    );
    for (cap, y) in [(&cap_a, &ya), (&cap_b, &yb)] {
        let got = cap.from(FROM_CLIENT);
        assert!(
            got == from_client,
            "{y}, from the client: {}",
            mismatch(&got, &from_client)
        );
    }
    // The super-frame, sent on with its offsets moved (not moved, the kernel drops it):
    // whole, as it was sent (or, should a kernel cut it, in segments with the tag).
    let tso_b = cap_b.from(FROM_TSO);
    let data: Vec<u8> = tso_b
        .iter()
        .flat_map(|f| f.get(58..).unwrap_or(&[]).to_vec())
        .collect();
    assert!(
        tso_b == [tso.clone()]
            || tso_b.len() > 1 && tso_b.iter().all(|f| f[..18] == l2[..]) && data == payload,
        "{yb} got the super-frame as:\n{}",
        hex(&tso_b)
    );

    // tcpdump's own reading of the tags.
    let text = stdout_of(&run(&["tcpdump", "-nn", "-e", "-r", path_str(&cap_b.file)]));
    let qinq_line = text
        .lines()
        .find(|l| l.contains("02:00:00:00:0a:01") && l.contains("length 68"))
        .unwrap_or_else(|| panic!("no QinQ frame in tcpdump -e:\n{text}"));
    assert!(
        qinq_line.contains("802.1Q-QinQ")
            && qinq_line.contains("vlan 100")
            && qinq_line.contains("vlan 10,"),
        "{qinq_line}"
    );
    for (i, key) in [(&xa, "truncated"), (&xb, "write_errors")] {
        let c = &d.host(i)["counters"];
        assert_eq!(c[key], 0, "{i}: {c}");
    }
}

/// A VLAN-aware switch between veths in namespaces, the frames built by hand (this
/// kernel has no 802.1Q devices) and read back with tcpdump on the far side: an access
/// port (VLAN 10), an access port of VLAN 20, an 802.1ad tunnel port (S-VLAN 100), and
/// two trunks of 10, 20 and 100 with native VLAN 30, one attached through AF_PACKET
/// (whose outer tag the kernel hands over beside the frame; valed puts it back) and one
/// through AF_XDP (tags in the frame). Every row of OVS's table that applies is checked
/// byte for byte, and the two trunks agree: what each delivers, and what each is sent.
#[test]
fn vlan_aware_switch_between_af_packet_and_af_xdp_veths() {
    need_host!();
    if !have("tcpdump", "tcpdump", "VLAN frames read back by tcpdump")
        || !have("python3", "python3", "raw tagged frames")
    {
        return;
    }
    use wire::{eth, pattern};
    let mut net = Net::new("ve");
    let d = Daemon::start("host-vlan-aware", &[]);
    let xdp = match valed::probe_af_xdp() {
        Ok(()) => true,
        Err(e) => {
            skip(&format!(
                "no AF_XDP here ({e}): the second trunk is attached through AF_PACKET too"
            ));
            false
        }
    };
    // (veth end valed attaches, its peer, namespace, mode)
    let ports = [("a", "access 10"), ("c", "access 20"), ("q", "tunnel 100")];
    let trunk = "trunk 10,20,100 native 30";
    // Set by name before anything is attached: the ports get their modes when they come.
    ctl_ok(&d, &["vlan", "vale0", "--filtering", "on"]);
    let mut ends = Vec::new();
    for (w, mode) in ports.iter().chain(&[("p", trunk), ("x", trunk)]) {
        let (x, y) = (net.name(&format!("x{w}")), net.name(&format!("y{w}")));
        net.veth(&x, &y);
        let ns = net.ns(&w.to_uppercase());
        ok(&["ip", "link", "set", &y, "netns", &ns]);
        ok(&["ip", "-n", &ns, "link", "set", &y, "up"]);
        let port = format!("vale0:{x}");
        let words: Vec<&str> = mode.split_whitespace().collect();
        let mut args = vec!["vlan", &port];
        let vids;
        match words.as_slice() {
            ["access", v] => args.extend(["--access", v]),
            ["tunnel", v] => args.extend(["--tunnel", v]),
            ["trunk", v, "native", n] => {
                vids = v.to_string();
                args.extend(["--trunk", &vids, "--native", n]);
            }
            _ => unreachable!(),
        }
        ctl_ok(&d, &args);
        ends.push((x, y, ns));
    }
    for (i, (x, _, _)) in ends.iter().enumerate() {
        let port = format!("vale0:{x}");
        if i == 4 && xdp {
            ctl_ok(&d, &["-a", &port, "--xdp"]);
            assert_eq!(d.host(x)["kind"], "nic-xdp");
        } else {
            ctl_ok(&d, &["-a", &port]);
        }
    }
    let show = ctl_ok(&d, &["vlan", "vale0"]);
    assert!(
        show.contains(&format!("vale0:{}  ", ends[4].0)) && show.contains(trunk),
        "{show}"
    );
    let caps: Vec<Tcpdump> = ends
        .iter()
        .map(|(_, y, ns)| Tcpdump::start(ns, y, d.dir.join(format!("{y}.pcap"))))
        .collect();
    let [
        (_, ya, na),
        (_, _, _),
        (_, yq, nq),
        (_, yp, np),
        (_, yx, nx),
    ] = &ends[..]
    else {
        unreachable!()
    };
    const BC: [u8; 6] = [0xff; 6];
    const A: [u8; 6] = [2, 0, 0, 0, 0x0a, 1];
    const P: [u8; 6] = [2, 0, 0, 0, 0x0a, 2];
    const X: [u8; 6] = [2, 0, 0, 0, 0x0a, 3];
    const Q: [u8; 6] = [2, 0, 0, 0, 0x0a, 4];
    let frame = |src, tags: &[(u16, u16)], seed| {
        let mut f = eth(BC, src, tags, 0x88b5);
        f.extend(pattern(seed, 64 - f.len()));
        f
    };
    // The frame with its outer `old` tags replaced by `tags`.
    let retag = |f: &[u8], old: usize, tags: &[(u16, u16)]| {
        let mut v = eth(BC, f[6..12].try_into().unwrap(), tags, 0)[..12 + 4 * tags.len()].to_vec();
        v.extend_from_slice(&f[12 + 4 * old..]);
        v
    };
    let with_src = |f: &[u8], src: [u8; 6]| {
        let mut v = f.to_vec();
        v[6..12].copy_from_slice(&src);
        v
    };

    // 1. Into access 10: untagged leaves both trunks tagged 10; a priority tag (PCP 5)
    // leaves them tagged 10 with its priority; a tag on an access port is dropped.
    let a1 = frame(A, &[], 1);
    let a2 = frame(A, &[(0x8100, 0xa000)], 2);
    let a3 = frame(A, &[(0x8100, 10)], 3);
    send_frames(
        na,
        ya,
        &[(false, a1.clone()), (false, a2.clone()), (false, a3)],
    );
    // 2. Into the tunnel port: a C-tagged frame and an untagged one get an S-tag.
    let q1 = frame(Q, &[(0x8100, 0x2007)], 4);
    let q2 = frame(Q, &[], 5);
    send_frames(nq, yq, &[(false, q1.clone()), (false, q2.clone())]);
    // 3. Into each trunk, the same frames (but for the source address): VID 20, VID 10,
    // untagged (native 30), priority-tagged (native 30), VID 40 (not trunked: dropped),
    // QinQ S-VID 100 / C-VID 10 (the tunnel port's S-VLAN).
    let t_in = |src| {
        vec![
            frame(src, &[(0x8100, 0x4014)], 10),
            frame(src, &[(0x8100, 10)], 11),
            frame(src, &[], 12),
            frame(src, &[(0x8100, 0x6000)], 13),
            frame(src, &[(0x8100, 40)], 14),
            frame(src, &[(0x88a8, 100), (0x8100, 10)], 15),
        ]
    };
    for (src, ns, y) in [(P, np, yp), (X, nx, yx)] {
        let fs: Vec<(bool, Vec<u8>)> = t_in(src).into_iter().map(|f| (false, f)).collect();
        send_frames(ns, y, &fs);
    }
    let [cap_a, cap_c, cap_q, cap_p, cap_x] = &caps[..] else {
        unreachable!()
    };
    // Until every port has what it should get from both trunks (each trunk sends the
    // others one frame of VLAN 10, 20 and 100), then a while for what it should not.
    wait_for(5.0, || {
        [(cap_p, X), (cap_x, P)]
            .iter()
            .all(|(c, from)| c.from(*from).len() >= 5)
            && [cap_a, cap_c, cap_q]
                .iter()
                .all(|c| !c.from(P).is_empty() && !c.from(X).is_empty())
    });
    std::thread::sleep(Duration::from_millis(300)); // anything that should not come

    // Out of the trunks, from access 10 and the tunnel port: the same on both.
    let from_a = vec![
        retag(&a1, 0, &[(0x8100, 10)]),
        retag(&a2, 1, &[(0x8100, 0xa00a)]),
    ];
    let from_q = vec![
        retag(&q1, 0, &[(0x88a8, 100)]),
        retag(&q2, 0, &[(0x88a8, 100)]),
    ];
    for (cap, y) in [(cap_p, yp), (cap_x, yx)] {
        let (ga, gq) = (cap.from(A), cap.from(Q));
        assert!(
            ga == from_a,
            "{y}, from access 10: {}",
            mismatch(&ga, &from_a)
        );
        assert!(
            gq == from_q,
            "{y}, from the tunnel: {}",
            mismatch(&gq, &from_q)
        );
    }
    // What each trunk delivers, to the other trunk and to the access and tunnel ports.
    let t = t_in(P);
    let trunk_out = [
        t[0].clone(),
        t[1].clone(),
        t[2].clone(),
        retag(&t[3], 1, &[]),
        t[5].clone(),
    ];
    let want = [
        (cap_a, vec![retag(&t[1], 1, &[])]), // VID 10, untagged
        (cap_c, vec![retag(&t[0], 1, &[])]), // VID 20, untagged
        (cap_q, vec![retag(&t[5], 1, &[])]), // S-tag popped, the C-tag kept
    ];
    for (from, to, cap_to, y_to) in [(P, X, cap_x, yx), (X, P, cap_p, yp)] {
        let got = cap_to.from(from);
        let w: Vec<Vec<u8>> = trunk_out.iter().map(|f| with_src(f, from)).collect();
        assert!(
            got == w,
            "{y_to}, from the other trunk: {}",
            mismatch(&got, &w)
        );
        for (cap, w) in &want {
            let got = cap.from(from);
            let w: Vec<Vec<u8>> = w.iter().map(|f| with_src(f, from)).collect();
            assert!(
                got == w,
                "from trunk {from:x?} ({to:x?} agrees): {}",
                mismatch(&got, &w)
            );
        }
    }
    // Nothing crossed into another VLAN: VLAN 20's port saw nothing of A's or Q's.
    assert!(cap_c.from(A).is_empty() && cap_c.from(Q).is_empty());
    assert!(cap_a.from(Q).is_empty() && cap_q.from(A).is_empty());

    // The drops, by reason, on the ports that sent them.
    let drops = |x: &str| d.counter(&format!("vale0:{x}"), "vlan_ingress_filter");
    assert_eq!(drops(&ends[0].0), 1, "the tagged frame on access 10");
    assert_eq!(drops(&ends[3].0), 1, "VID 40 on the AF_PACKET trunk");
    assert_eq!(drops(&ends[4].0), 1, "VID 40 on the AF_XDP trunk");
    // Learned per VLAN: A in 10, each trunk's source in 20, 10, 30 and 100.
    let fdb = d.ctl_json(&["fdb", "vale0"]);
    let vlans_of = |mac: &str| -> Vec<u64> {
        let mut v: Vec<u64> = fdb["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["mac"] == mac)
            .filter_map(|r| r["vlan"].as_u64())
            .collect();
        v.sort();
        v
    };
    assert_eq!(vlans_of("02:00:00:00:0a:01"), [10], "{fdb}");
    assert_eq!(vlans_of("02:00:00:00:0a:02"), [10, 20, 30, 100], "{fdb}");
    assert_eq!(vlans_of("02:00:00:00:0a:03"), [10, 20, 30, 100], "{fdb}");
    assert_eq!(vlans_of("02:00:00:00:0a:04"), [100], "{fdb}");
    d.assert_laws();
}

/// A private Open vSwitch (ovsdb-server, and ovs-vswitchd in namespace `ns`, userspace
/// datapath) whose files live in `dir`; both daemons stopped by PID when dropped.
/// Open vSwitch's userspace datapath as the reference peer: two switches with the same
/// VLAN configuration, ours and OVS's (`tag=`, `trunks=`, `vlan_mode=native-untagged`,
/// `dot1q-tunnel` with `vlan-limit=2`), each between its own veths in namespaces; the
/// same hand-built frames go into both, and what every port's peer reads back (tcpdump)
/// must be the same bytes from both.
#[test]
fn vlan_aware_switch_agrees_with_open_vswitch() {
    need_host!();
    if !have("tcpdump", "tcpdump", "VLAN frames read back by tcpdump")
        || !have("python3", "python3", "raw tagged frames")
        || !have(
            "ovs-vswitchd",
            "openvswitch-switch",
            "OVS as the VLAN reference",
        )
        || !have(
            "ovsdb-tool",
            "openvswitch-switch",
            "OVS as the VLAN reference",
        )
    {
        return;
    }
    use wire::{eth, pattern};
    let mut net = Net::new("ve");
    let d = Daemon::start("host-vlan-ovs", &[]);
    // (role, our mode as vale-ctl flags, OVS's port columns)
    let roles: [(&str, &[&str], &[&str]); 5] = [
        ("a", &["--access", "10"], &["tag=10"]),
        ("c", &["--access", "20"], &["tag=20"]),
        ("d", &["--access", "30"], &["tag=30"]),
        (
            "q",
            &["--tunnel", "100"],
            &["vlan_mode=dot1q-tunnel", "tag=100"],
        ),
        (
            "p",
            &["--trunk", "10,20,100", "--native", "30"],
            &["vlan_mode=native-untagged", "tag=30", "trunks=10,20,100"],
        ),
    ];
    let o_ns = net.ns("O");
    let Some(ovs) = Ovs::started(d.dir.join("ovs"), &o_ns) else {
        return;
    };
    let vs = |args: &[&str]| ovs.vs(args);
    vs(&[
        "add-br",
        "brv",
        "--",
        "set",
        "bridge",
        "brv",
        "datapath_type=netdev",
    ]);
    vs(&["set", "Open_vSwitch", ".", "other_config:vlan-limit=2"]);
    ctl_ok(&d, &["vlan", "vale0", "--filtering", "on"]);
    // Per role: (our peer, its namespace), (OVS's peer, its namespace).
    let mut peers = Vec::new();
    for (r, ours, theirs) in roles {
        let mut pair = Vec::new();
        for side in ["v", "o"] {
            let (x, y) = (
                net.name(&format!("x{r}{side}")),
                net.name(&format!("y{r}{side}")),
            );
            net.veth(&x, &y);
            let ns = net.ns(&format!("{}{side}", r.to_uppercase()));
            ok(&["ip", "link", "set", &y, "netns", &ns]);
            ok(&["ip", "-n", &ns, "link", "set", &y, "up"]);
            if side == "v" {
                let port = format!("vale0:{x}");
                let mut args = vec!["vlan", &port];
                args.extend_from_slice(ours);
                ctl_ok(&d, &args);
                ctl_ok(&d, &["-a", &port]);
            } else {
                ok(&["ip", "link", "set", &x, "netns", &o_ns]);
                ok(&["ip", "-n", &o_ns, "link", "set", &x, "up"]);
                let mut args = vec!["add-port", "brv", &x, "--", "set", "port", &x];
                args.extend_from_slice(theirs);
                vs(&args);
            }
            pair.push((y, ns));
        }
        peers.push(pair);
    }
    // OVS has opened its ports once each has an OpenFlow port number.
    for (r, _, _) in roles {
        let x = net.name(&format!("x{r}o"));
        let up = wait_for(10.0, || {
            ovs.vsctl(&["get", "Interface", &x, "ofport"])
                .is_ok_and(|n| n.parse::<i64>().is_ok_and(|n| n > 0))
        });
        assert!(up, "OVS did not open {x}:\n{}", ovs.log());
    }
    let caps: Vec<[Tcpdump; 2]> = peers
        .iter()
        .map(|pair: &Vec<(String, String)>| {
            [0, 1].map(|k| {
                let (y, ns) = &pair[k];
                Tcpdump::start(ns, y, d.dir.join(format!("{y}.pcap")))
            })
        })
        .collect();

    const BC: [u8; 6] = [0xff; 6];
    const A: [u8; 6] = [2, 0, 0, 0, 0x0a, 1];
    const Q: [u8; 6] = [2, 0, 0, 0, 0x0a, 4];
    const P: [u8; 6] = [2, 0, 0, 0, 0x0a, 2];
    let frame = |src, tags: &[(u16, u16)], seed| {
        let mut f = eth(BC, src, tags, 0x88b5);
        f.extend(pattern(seed, 64 - f.len()));
        (false, f)
    };
    // The same frames into both switches: from the access port of VLAN 10, the tunnel
    // port, and the trunk, through every row of OVS's table.
    // (the role that sends, its frames as `send_frames` takes them)
    type Sends = Vec<(bool, Vec<u8>)>;
    let sends: [(usize, Sends); 3] = [
        (
            0,
            vec![
                frame(A, &[], 1),
                frame(A, &[(0x8100, 0xa000)], 2),
                frame(A, &[(0x8100, 10)], 3),
            ],
        ),
        (3, vec![frame(Q, &[(0x8100, 0x2007)], 4), frame(Q, &[], 5)]),
        (
            4,
            vec![
                frame(P, &[(0x8100, 0x4014)], 10),
                frame(P, &[(0x8100, 10)], 11),
                frame(P, &[], 12),
                frame(P, &[(0x8100, 0x6000)], 13),
                frame(P, &[(0x8100, 40)], 14),
                frame(P, &[(0x88a8, 100), (0x8100, 10)], 15),
            ],
        ),
    ];
    for (role, fs) in &sends {
        for (y, ns) in &peers[*role] {
            send_frames(ns, y, fs);
        }
    }
    // OVS's copies take longer (the first packet of a flow is an upcall to
    // ovs-vswitchd's handler threads), and longer still on a busy machine: wait until it
    // has delivered as many as ours everywhere, then a little more for any extra.
    let count = |cap: &Tcpdump| [A, Q, P].iter().map(|s| cap.from(*s).len()).sum::<usize>();
    wait_for(15.0, || {
        caps.iter()
            .all(|[ours, theirs]| count(ours) > 0 || count(theirs) > 0)
            && caps
                .iter()
                .all(|[ours, theirs]| count(theirs) >= count(ours))
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut seen = 0;
    for (i, (r, _, _)) in roles.iter().enumerate() {
        for src in [A, Q, P] {
            let [ours, theirs] = &caps[i];
            let (got, want) = (ours.from(src), theirs.from(src));
            seen += want.len();
            assert!(
                got == want,
                "port {r}, frames from {src:x?}: ours against OVS's: {}",
                mismatch(&got, &want)
            );
        }
    }
    assert!(
        seen >= 8,
        "OVS delivered only {seen} frames:\n{}",
        ovs.log()
    );
    d.assert_laws();
}

/// Stops (`STOP`) or resumes (`CONT`) process `pid`, and for a stop waits until it is
/// stopped (state `T`).
fn signal_process(pid: u32, sig: &str) {
    ok(&["kill", &format!("-{sig}"), &pid.to_string()]);
    if sig == "STOP" {
        let stopped = wait_for(5.0, || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        });
        assert!(stopped, "process {pid} did not stop");
    }
}

/// Frames the kernel drops at an AF_PACKET port's socket because its receive ring is
/// full (here: valed's forwarding thread does not run, valed being stopped with
/// SIGSTOP, while a namespace sends more frames than the ring's 1024 slots) are counted
/// as the host port's `kernel_drops`: exactly what the sender's kernel sent less what
/// valed read, and with them every frame is delivered or counted.
#[test]
fn frames_the_kernel_drops_at_an_af_packet_ring_are_counted() {
    need_host!();
    kernel_drops_are_counted(false, 1500);
}

/// The same through AF_XDP (`-a --xdp`): 2048 UMEM frames wait in the fill ring of the
/// veth's one queue, so 3000 frames overflow it (`XDP_STATISTICS`).
#[test]
fn frames_the_kernel_drops_at_an_af_xdp_socket_are_counted() {
    need_host!();
    if let Err(e) = valed::probe_af_xdp() {
        skip(&format!("no AF_XDP here: {e}"));
        return;
    }
    kernel_drops_are_counted(true, 3000);
}

/// `n` frames sent into a veth attached through AF_PACKET (or AF_XDP) while valed is
/// stopped: `kernel_drops` = what was sent less what valed then read, exactly.
fn kernel_drops_are_counted(xdp: bool, n: u32) {
    if !have("python3", "python3", "raw frames into a veth") {
        return;
    }
    let mut net = Net::new(if xdp { "vaX" } else { "va" });
    let d = Daemon::start(
        if xdp {
            "host-kdrops-xdp"
        } else {
            "host-kdrops"
        },
        &[],
    );
    let (x, y) = (net.name("kx"), net.name("ky"));
    net.veth(&x, &y);
    let ns = net.ns("K");
    ok(&["ip", "link", "set", &y, "netns", &ns]);
    ok(&["ip", "-n", &ns, "link", "set", &y, "up"]);
    let port = format!("vale0:{x}");
    if xdp {
        ctl_ok(&d, &["-a", &port, "--xdp"]);
    } else {
        ctl_ok(&d, &["-a", &port]);
    }
    // Room for every frame valed can read (AF_PACKET: 1024, AF_XDP: 2048) in the
    // receiver's ring.
    let r = vale::Port::open_with(
        "vale0:r",
        &vale::OpenOptions {
            socket: Some(d.socket.clone()),
            geometry: vale::proto::GeometryRequest {
                rx_slots: Some(4096),
                ..Default::default()
            },
        },
    )
    .unwrap();
    const SRC: [u8; 6] = [2, 0, 0, 0, 0x0a, 0x0d];
    let frames: Vec<_> = (0..n).map(|i| (false, frame([0xff; 6], SRC, i))).collect();
    let (_, sent0) = link_counts(&ns, &y);
    signal_process(d.pid(), "STOP");
    send_frames(&ns, &y, &frames);
    signal_process(d.pid(), "CONT");
    let got = recv_from(&r, SRC, n as usize, 3.0);
    let (_, sent1) = link_counts(&ns, &y);
    let sent = sent1 - sent0;
    assert!(sent >= u64::from(n), "{y} sent {sent} frames of {n}");
    // The count is read before the forwarding thread sleeps: wait for it.
    let from_host = |d: &Daemon| d.host(&x)["counters"]["from_host"].as_u64().unwrap();
    let drops = |d: &Daemon| d.host(&x)["counters"]["kernel_drops"].as_u64().unwrap();
    wait_for(3.0, || drops(&d) + from_host(&d) == sent);
    let (kernel_drops, read) = (drops(&d), from_host(&d));
    eprintln!("sent {sent}, valed read {read}, kernel_drops {kernel_drops}");
    assert!(
        read < sent,
        "the ring should have overflowed: valed read {read} of {sent}"
    );
    assert_eq!(
        kernel_drops,
        sent - read,
        "kernel_drops = what {y} sent less what valed read: {}",
        d.host(&x)
    );
    assert_eq!(got.len() as u64, read, "every frame valed read reached r");
    let st = d.assert_laws();
    assert_conserved(sent, got.len() as u64, &st);
    let list = stdout_of(&d.ctl(&["list"]));
    assert!(
        list.contains(&format!("kernel_drops {kernel_drops}")),
        "vale-ctl list shows it: {list}"
    );
}

/// MTU headroom for pushed tags: full-size frames (1514 bytes, what a 1500-MTU host
/// sends) from an access port and from a tunnel port, and a C-tagged full-size one
/// (1518) from the tunnel port, leave trunk ports 4 bytes longer (8 for the one tagged
/// twice). Each egress, checked against tcpdump on the peers (MTU 1500) and valed's
/// counters: a TAP takes them all whole; an AF_XDP veth those up to MTU + 18 whole,
/// whatever the tag, the longer counted `too_big`; an AF_PACKET veth the 802.1Q-tagged
/// one whole, while the kernel refuses (`EMSGSIZE`) the 802.1ad ones beyond MTU + 14,
/// counted `too_big`. Nothing is cut short.
#[test]
fn full_size_frames_that_get_a_tag_leave_trunks_whole_or_are_counted_too_big() {
    need_host!();
    if !have("tcpdump", "tcpdump", "tagged frames read back by tcpdump")
        || !have("python3", "python3", "raw frames")
    {
        return;
    }
    use wire::{eth, pattern};
    let mut net = Net::new("vxm");
    let d = Daemon::start("host-vlan-mtu", &[]);
    let xdp = match valed::probe_af_xdp() {
        Ok(()) => true,
        Err(e) => {
            skip(&format!(
                "no AF_XDP here ({e}): the AF_XDP trunk is left out"
            ));
            false
        }
    };
    ctl_ok(&d, &["vlan", "vale0", "--filtering", "on"]);
    // (port, peer, namespace) of: access 10, tunnel 100, then the trunks: AF_PACKET,
    // TAP, AF_XDP.
    let mut ends = Vec::new();
    for w in ["a", "q", "p", "t", "x"] {
        if w == "x" && !xdp {
            continue;
        }
        let ns = net.ns(&w.to_uppercase());
        let (x, y) = if w == "t" {
            let t = net.name("tt");
            ctl_ok(&d, &["-n", &t]);
            (t.clone(), t)
        } else {
            let (x, y) = (net.name(&format!("x{w}")), net.name(&format!("y{w}")));
            net.veth(&x, &y);
            (x, y)
        };
        ok(&["ip", "link", "set", &y, "netns", &ns]);
        ok(&["ip", "-n", &ns, "link", "set", &y, "up"]);
        let port = format!("vale0:{x}");
        let mode: &[&str] = match w {
            "a" => &["--access", "10"],
            "q" => &["--tunnel", "100"],
            _ => &["--trunk", "10,100"],
        };
        let mut args = vec!["vlan", port.as_str()];
        args.extend_from_slice(mode);
        ctl_ok(&d, &args);
        if w == "x" {
            ctl_ok(&d, &["-a", &port, "--xdp"]);
        } else {
            ctl_ok(&d, &["-a", &port]);
        }
        ends.push((x, y, ns));
    }
    let caps: Vec<Tcpdump> = ends[2..]
        .iter()
        .map(|(_, y, ns)| Tcpdump::start(ns, y, d.dir.join(format!("{y}.pcap"))))
        .collect();
    const BC: [u8; 6] = [0xff; 6];
    const A: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];
    const Q: [u8; 6] = [2, 0, 0, 0, 0x0b, 2];
    const Q2: [u8; 6] = [2, 0, 0, 0, 0x0b, 3];
    let full = |src, tags: &[(u16, u16)], seed| {
        let mut f = eth(BC, src, tags, 0x88b5);
        f.extend(pattern(seed, 1514 + 4 * tags.len() - f.len()));
        f
    };
    let push = |f: &[u8], tpid: u16, vid: u16| {
        let mut v = f[..12].to_vec();
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&vid.to_be_bytes());
        v.extend_from_slice(&f[12..]);
        v
    };
    let (a1, q1, q2) = (
        full(A, &[], 1),
        full(Q, &[], 2),
        full(Q2, &[(0x8100, 7)], 3),
    );
    let (a1t, q1t, q2t) = (
        push(&a1, 0x8100, 10),
        push(&q1, 0x88a8, 100),
        push(&q2, 0x88a8, 100),
    );
    assert_eq!((a1t.len(), q1t.len(), q2t.len()), (1518, 1518, 1522));
    send_frames(&ends[0].2, &ends[0].1, &[(false, a1)]);
    send_frames(&ends[1].2, &ends[1].1, &[(false, q1), (false, q2)]);
    // (frames from A, Q and Q2 that arrive whole; `too_big`) of each trunk.
    type Want = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>, u64);
    let wants: Vec<Want> = [
        (vec![a1t.clone()], vec![], vec![], 2),
        (vec![a1t.clone()], vec![q1t.clone()], vec![q2t], 0),
        (vec![a1t], vec![q1t], vec![], 1),
    ]
    .into_iter()
    .take(caps.len())
    .collect();
    let done = wait_for(5.0, || {
        caps.iter().zip(&wants).all(|(c, w)| {
            c.from(A).len() == w.0.len()
                && c.from(Q).len() == w.1.len()
                && c.from(Q2).len() == w.2.len()
        })
    });
    std::thread::sleep(Duration::from_millis(300)); // anything that should not come
    for ((cap, w), (x, y, _)) in caps.iter().zip(&wants).zip(&ends[2..]) {
        let h = d.host(x);
        for (src, want) in [(A, &w.0), (Q, &w.1), (Q2, &w.2)] {
            let got = cap.from(src);
            assert!(
                got == *want,
                "{y} ({}), from {src:x?} ({done}): {}",
                h["kind"],
                mismatch(&got, want)
            );
        }
        let c = &h["counters"];
        assert_eq!(
            (
                c["too_big"].as_u64(),
                c["write_errors"].as_u64(),
                c["truncated"].as_u64()
            ),
            (Some(w.3), Some(0), Some(0)),
            "{y} ({}): {c}",
            h["kind"]
        );
    }
    let list = ctl_ok(&d, &["list"]);
    assert!(
        list.lines()
            .any(|l| l.contains(&ends[2].0) && l.contains("kernel_drops 0 too_big 2")),
        "vale-ctl list names the reason: {list}"
    );
    d.assert_laws();
}
