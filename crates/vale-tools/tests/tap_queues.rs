//! Multiqueue TAP ports (`vale-ctl -n IF --queues N`) against the real kernel: two of
//! them on one switch, each moved into a network namespace this test creates, TCP flows
//! of iperf3 spread by the kernel over their queues, on a switch of one thread and of
//! two. Needs root, /dev/net/tun and `ip`; prints SKIP otherwise. Every namespace made
//! here is removed, also on failure.

mod common;
use common::peers::{iperf3_with, link_counts, ok, ping_in, run};
use common::*;
use std::time::{Duration, Instant};

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for network namespaces and TAP devices".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".into());
    }
    if !have("ip", "iproute2", "multiqueue TAP ports") {
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

/// The namespaces of one test, deleted on drop (the TAPs in them go with valed).
struct Spaces(Vec<String>);

impl Spaces {
    fn add(&mut self, name: String) -> String {
        let _ = run(&["ip", "netns", "del", &name]);
        ok(&["ip", "netns", "add", &name]);
        self.0.push(name.clone());
        ok(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        // No IPv6: router solicitations at random moments would land in the counts.
        for conf in ["all", "default"] {
            let key = format!("net.ipv6.conf.{conf}.disable_ipv6=1");
            ok(&["ip", "netns", "exec", &name, "sysctl", "-qw", &key]);
        }
        name
    }
}

impl Drop for Spaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = run(&["ip", "netns", "del", n]);
        }
    }
}

/// Moves `ifname` into `ns`, gives it `addr` and brings it up.
fn place(ifname: &str, ns: &str, addr: &str) {
    ok(&["ip", "link", "set", ifname, "netns", ns]);
    ok(&["ip", "-n", ns, "addr", "add", addr, "dev", ifname]);
    ok(&["ip", "-n", ns, "link", "set", ifname, "up"]);
}

/// Each queue's (from_host, to_host) as `vale-ctl list` says them: "TAP interface, 2
/// queues (from_host/to_host per queue: q0 120/118, q1 7/9)".
fn per_queue(about: &str) -> Vec<(u64, u64)> {
    let Some((_, list)) = about.split_once("per queue: ") else {
        panic!("no queues in {about:?}");
    };
    list.trim_end_matches(')')
        .split(", ")
        .enumerate()
        .map(|(i, q)| {
            let (name, counts) = q.split_once(' ').unwrap_or_else(|| panic!("{about:?}"));
            assert_eq!(name, format!("q{i}"), "{about:?}");
            let (f, t) = counts
                .split_once('/')
                .unwrap_or_else(|| panic!("{about:?}"));
            (f.parse().unwrap(), t.parse().unwrap())
        })
        .collect()
}

/// How many queues carried at least 1 % of the frames the kernel sent (a queue that
/// took only a flow's first frames, before the kernel's flow table moved it to the
/// queue its replies came in on, or a few pings, does not count).
fn carrying(queues: &[(u64, u64)]) -> usize {
    let all: u64 = queues.iter().map(|q| q.0).sum();
    queues.iter().filter(|q| q.0 * 100 >= all.max(1)).count()
}

/// Two TAP ports of `qa` and `qb` queues on switch vale0 of a valed started with
/// `extra`, each in its own namespace; pings and iperf3 -P 8 between them (again with
/// new flows while all took one queue, at most 3 rounds): every frame is counted, each
/// port's queues add up to its counters, and more than one queue of each carried
/// frames. (Eight flows, not four: the kernel picks a flow's queue by hash, and with two
/// queues in play all of four flows and iperf3's control connection take the same one
/// in one run of 16; all of nine, in one of 256.)
fn two_multiqueue_taps(tag: &str, extra: &[&str], qa: u16, qb: u16) {
    let id = std::process::id() % 10000;
    let mut spaces = Spaces(Vec::new());
    let d = Daemon::start(tag, extra);
    let (ta, tb) = (format!("{tag}{id}a"), format!("{tag}{id}b"));
    for (t, q) in [(&ta, qa), (&tb, qb)] {
        ctl_ok(&d, &["-n", t, "--queues", &q.to_string()]);
        ctl_ok(&d, &["-a", &format!("vale0:{t}")]);
    }
    let (na, nb) = (
        spaces.add(format!("{tag}{id}A")),
        spaces.add(format!("{tag}{id}B")),
    );
    place(&ta, &na, "10.199.9.1/24");
    place(&tb, &nb, "10.199.9.2/24");
    // The kernel's view: one interface of several queues.
    for (ns, t, q) in [(&na, &ta, qa), (&nb, &tb, qb)] {
        let link = ok(&["ip", "-n", ns, "-d", "link", "show", t]);
        assert!(link.contains("multi_queue"), "{t}: {link}");
        // (`ip netns exec` mounts the namespace's own sysfs.)
        let n = ok(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("ls /sys/class/net/{t}/queues | grep -c tx-"),
        ]);
        assert_eq!(n.trim(), q.to_string(), "{t}: a kernel TX queue per queue");
    }
    // The switch port: a ring each way per queue.
    let list = d.ctl_json(&["list"]);
    for (t, q) in [(&ta, qa), (&tb, qb)] {
        let p = list["switches"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == format!("vale0:{t}").as_str())
            .unwrap_or_else(|| panic!("no vale0:{t} in {list}"));
        assert_eq!(p["geometry"]["tx_rings"], q, "{p}");
        assert_eq!(p["geometry"]["rx_rings"], q, "{p}");
    }
    assert!(
        ping_in(&na, "10.199.9.2", 3, &["-W", "1"]),
        "A pings B\n{}",
        d.log()
    );
    assert!(ping_in(&nb, "10.199.9.1", 3, &["-W", "1"]), "B pings A");

    let mut rounds = 0;
    loop {
        rounds += 1;
        let bytes = iperf3_with(&na, &nb, "10.199.9.2", &["-P", "8"]).expect("iperf3");
        assert!(bytes > 1_000_000, "iperf3 -P 8 moved {bytes} bytes");
        assert!(
            ping_in(&na, "10.199.9.2", 2, &["-W", "1"]),
            "A still reaches B"
        );
        let spread = [&ta, &tb]
            .iter()
            .all(|t| carrying(&per_queue(d.host(t)["about"].as_str().unwrap())) > 1);
        if spread || rounds == 3 {
            break;
        }
    }
    if extra.contains(&"--switch-threads") {
        // The switch's second thread, which serves queue 1 of each port while it runs,
        // ran.
        let ticks = thread_ticks(d.pid(), "vale-fwd0.1");
        assert!(ticks.is_some_and(|t| t > 0), "helper ticks {ticks:?}");
    }
    // Every frame the two kernels handed to valed reached the other or is counted.
    let ifs = [(&*na, &*ta), (&*nb, &*tb)];
    d.assert_conserved_with(|| {
        ifs.iter().fold((0, 0), |(s, r), (ns, i)| {
            let (rx, tx) = link_counts(ns, i);
            (s + tx, r + rx)
        })
    });
    // Each port's queues add up to its counters (read until the two readings agree:
    // the forwarders may still be finishing a burst), and the kernel used several.
    let text = stdout_of(&d.ctl(&["list"]));
    for (t, q) in [(&ta, qa), (&tb, qb)] {
        let t0 = Instant::now();
        let (h, queues) = loop {
            let h = d.host(t);
            let queues = per_queue(h["about"].as_str().unwrap());
            let sum = queues
                .iter()
                .fold((0, 0), |(f, o), (qf, qo)| (f + qf, o + qo));
            let c = &h["counters"];
            let port = (
                c["from_host"].as_u64().unwrap(),
                c["to_host"].as_u64().unwrap(),
            );
            if sum == port || t0.elapsed() > Duration::from_secs(3) {
                assert_eq!(sum, port, "{t}: the queues' frames are the port's: {h}");
                break (h, queues);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(queues.len(), usize::from(q), "{h}");
        let about = h["about"].as_str().unwrap();
        assert!(
            about.starts_with(&format!("TAP interface, {q} queues")),
            "{about}"
        );
        assert!(text.contains(about), "vale-ctl list shows it: {text}");
        let used = carrying(&queues);
        eprintln!("{t}: {about} ({used} queues carried flows; {rounds} rounds)");
        assert!(
            used > 1,
            "{t}: one queue carried (nearly) every frame in {rounds} rounds of iperf3 -P 8: {about}"
        );
        let c = &h["counters"];
        for k in ["truncated", "write_errors", "read_errors"] {
            assert_eq!(c[k], 0, "{t}: {k}: {h}");
        }
    }
    drop(d);
    for (ns, t) in [(&na, &ta), (&nb, &tb)] {
        assert!(
            !run(&["ip", "-n", ns, "link", "show", t]).status.success(),
            "{t} gone with valed"
        );
    }
}

#[test]
fn multiqueue_taps_spread_tcp_flows_over_their_queues() {
    need_host!();
    if !have("iperf3", "iperf3", "multiqueue TAP flows") {
        return;
    }
    // Four queues talking to two: what comes in on TX ring 3 leaves by RX ring 1.
    two_multiqueue_taps("vq", &[], 4, 2);
}

#[test]
fn multiqueue_taps_on_a_switch_of_two_threads() {
    need_host!();
    if !have("iperf3", "iperf3", "multiqueue TAP flows") {
        return;
    }
    two_multiqueue_taps("vw", &["--switch-threads", "vale0=2"], 2, 2);
}

/// A queue count out of range is refused with the range, and makes no interface; a
/// TAP of one queue is the TAP it always was.
#[test]
fn tap_queue_counts_out_of_range_are_refused() {
    need_host!();
    let d = Daemon::start("tapq-bad", &[]);
    let t = format!("vx{}", std::process::id() % 10000);
    for bad in ["0", "17", "65535"] {
        let o = d.ctl(&["-n", &t, "--queues", bad]);
        assert_eq!(o.status.code(), Some(1), "--queues {bad} accepted");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(&format!("--queues {bad}")), "{e}");
        assert!(e.contains("1 to 16 queues"), "{e}");
        assert!(
            !run(&["ip", "link", "show", &t]).status.success(),
            "no {t} made"
        );
    }
    // Not a number of queues at all, or without -n: vale-ctl's own refusal.
    assert!(!d.ctl(&["-n", &t, "--queues", "-1"]).status.success());
    let o = d.ctl(&["--queues", "2"]);
    assert!(!o.status.success(), "--queues without -n");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("-n"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(d.hosts().is_empty(), "{:?}", d.hosts());
    ctl_ok(&d, &["-n", &t, "--queues", "1"]);
    let h = d.host(&t);
    assert_eq!(h["about"], "TAP interface", "{h}");
    let link = ok(&["ip", "-d", "link", "show", &t]);
    assert!(!link.contains("multi_queue"), "{link}");
    ctl_ok(&d, &["-r", &t]);
}

/// A multiqueue TAP's interface deleted under the switch: every queue's descriptor
/// reports it, the port says gone, the daemon stays idle, and the port detaches.
#[test]
fn a_multiqueue_tap_deleted_under_the_switch_leaves_the_daemon_idle() {
    need_host!();
    let id = std::process::id() % 10000;
    let mut spaces = Spaces(Vec::new());
    let d = Daemon::start("tapq-gone", &[]);
    let (ta, tb) = (format!("vd{id}a"), format!("vd{id}b"));
    ctl_ok(&d, &["-n", &ta, "--queues", "4"]);
    ctl_ok(&d, &["-n", &tb]);
    for t in [&ta, &tb] {
        ctl_ok(&d, &["-a", &format!("vale0:{t}")]);
    }
    let (na, nb) = (
        spaces.add(format!("vd{id}A")),
        spaces.add(format!("vd{id}B")),
    );
    place(&ta, &na, "10.199.8.1/24");
    place(&tb, &nb, "10.199.8.2/24");
    assert!(
        ping_in(&na, "10.199.8.2", 2, &["-W", "1"]),
        "A pings B\n{}",
        d.log()
    );
    ok(&["ip", "-n", &na, "link", "del", &ta]);
    let cpu = d.idle_cpu(2.0);
    assert!(
        cpu < 0.3,
        "valed used {cpu:.2} CPU-s in 2 s after {ta} was deleted"
    );
    let h = d.host(&ta);
    assert_eq!(h["gone"], true, "{h}");
    assert_eq!(h["counters"]["read_errors"], 1, "counted once: {h}");
    // Traffic toward it is counted (while its port exists, the laws hold), not a
    // problem; it detaches and goes.
    let _ = ping_in(&nb, "10.199.8.1", 1, &["-W", "1"]);
    d.assert_laws();
    ctl_ok(&d, &["-d", &format!("vale0:{ta}")]);
    ctl_ok(&d, &["-r", &ta]);
    assert!(d.hosts().iter().all(|h| h["name"] != ta.as_str()));
}
