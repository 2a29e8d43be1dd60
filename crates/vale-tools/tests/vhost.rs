//! vhost-user ports against a real vhost-user frontend: DPDK's `net_virtio_user` in
//! `dpdk-testpmd` (no VM, no hugepages). Needs dpdk-testpmd (package dpdk-dev) and root;
//! prints SKIP otherwise.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// testpmd's forwarding core spins: beside the other tests of this binary (each with a
/// valed and a frontend of its own) on a small machine it starved valed's forwarding
/// thread now and then, so these tests take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for dpdk-testpmd".into());
    }
    if !have("dpdk-testpmd", "dpdk-dev", "vhost-user against testpmd") {
        return Some("dpdk-testpmd not installed (apt-get install dpdk-dev)".into());
    }
    None
}

/// Runs testpmd on `sock` in `mode` (txonly / rxonly), forwarding for `secs` seconds
/// while `during` runs; returns its output. The commands are typed at its prompt one
/// at a time, each once testpmd has finished the last (its next `testpmd> `), so the
/// window starts when forwarding does. Its start-up (a GiB of memory set up) takes
/// one to over ten seconds on a loaded machine, and it connects to valed early in it:
/// commands timed from valed's log of the connection (as they once were) all waited in
/// the pipe when it got that slow, and `start`, `show port stats` and `stop` ran back
/// to back, forwarding for milliseconds (a "port took 256 packets" failure that looked
/// like a stalled queue, and frames sent to the guest before it forwarded).
fn testpmd(
    d: &Daemon,
    nth: usize,
    sock: &str,
    mode: &str,
    secs: u64,
    during: impl FnOnce(),
) -> String {
    testpmd_queues(d, nth, sock, mode, secs, 1, during)
}

/// [`testpmd`] with `queues` queue pairs (`queues=N`, `--txq=N --rxq=N`), each served
/// by its one forwarding core; its per-queue counts (`show port xstats 0`, after
/// `stop`) are in the output as `tx_q0_good_packets: N` and so on.
fn testpmd_queues(
    d: &Daemon,
    nth: usize,
    sock: &str,
    mode: &str,
    secs: u64,
    queues: u16,
    during: impl FnOnce(),
) -> String {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    // Line-buffered, so what a command prints is there when its prompt comes back.
    let mut child = Command::new("timeout")
        .args([
            "90",
            "stdbuf",
            "-oL",
            "dpdk-testpmd",
            "-l",
            "0-1",
            "--no-pci",
            "--no-huge",
            "-m",
            "1024",
        ])
        .arg(format!("--file-prefix=vt{}", std::process::id()))
        .arg(format!(
            "--vdev=net_virtio_user0,path={sock},queues={queues}"
        ))
        .args(["--", "-i", "--nb-cores=1", "--total-num-mbufs=4096"])
        .arg(format!("--txq={queues}"))
        .arg(format!("--rxq={queues}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Counting prompts says how many commands it has finished.
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = |mut r: Box<dyn Read + Send>, seen: Arc<Mutex<String>>| {
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n @ 1..) = r.read(&mut b) {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&b[..n]));
            }
        })
    };
    let out_t = reader(Box::new(child.stdout.take().unwrap()), seen.clone());
    let err = Arc::new(Mutex::new(String::new()));
    let err_t = reader(Box::new(child.stderr.take().unwrap()), err.clone());
    let mut stdin = child.stdin.take().unwrap();
    let pid = child.id();
    let prompts = || seen.lock().unwrap().matches("testpmd> ").count();
    // Types `line` (none: the start-up) and waits for the prompt that says it is done.
    let mut finished = 0;
    let mut run = |line: Option<&str>| {
        if let Some(l) = line {
            writeln!(stdin, "{l}").unwrap();
        }
        finished += 1;
        let done = wait_for(60.0, || prompts() >= finished);
        if !done {
            // Not left running for `timeout` to end (it passes the signal on).
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        assert!(
            done,
            "testpmd did not finish `{}`:\n{}{}\n{}",
            line.unwrap_or("its start-up"),
            seen.lock().unwrap(),
            err.lock().unwrap(),
            d.log()
        );
    };
    run(None);
    run(Some(&format!("set fwd {mode}")));
    run(Some("start"));
    let connected = d.log().matches("vhost-user frontend connected").count() >= nth;
    assert!(connected, "testpmd connected {nth} times: {}", d.log());
    during();
    std::thread::sleep(Duration::from_secs(secs));
    run(Some("show port stats all"));
    run(Some("stop"));
    run(Some("show port xstats 0"));
    if mode == "txonly" {
        // Frames it counted as sent may still wait in its TX ring, and once it quits
        // (its rings disabled) they never leave: it quits once the port has taken
        // them all (or after 10 s, for the caller's checks to tell).
        let sent = stat_last(&seen.lock().unwrap(), "TX-packets:");
        wait_for(10.0, || d.counter("vale0:vm", "tx_packets") >= sent);
    }
    // It prints its totals and leaves (`timeout` ends it if it hangs).
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    let _ = child.wait();
    // Its EAL runtime directory (`--file-prefix`), which testpmd leaves behind.
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/vt{}", std::process::id()));
    let _ = out_t.join();
    let _ = err_t.join();
    format!("{}{}", seen.lock().unwrap(), err.lock().unwrap())
}

fn stat(out: &str, key: &str) -> u64 {
    out.split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The last figure after `key` in testpmd's output (its closing statistics).
fn stat_last(out: &str, key: &str) -> u64 {
    out.rsplit(key)
        .next()
        .filter(|_| out.contains(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in testpmd's output:\n{out}"))
}

#[test]
fn testpmd_virtio_user_exchanges_traffic_through_a_vhost_user_port() {
    let _turn = turn();
    if let Some(r) = skip_reason() {
        skip(&r);
        return;
    }
    // testpmd --no-huge backs its memory with memfd_create("nohuge", 0): no
    // MFD_ALLOW_SEALING, so valed cannot seal it and refuses it unless trusted (DPDK's
    // hugepage files and MFD_HUGETLB memfds cannot be sealed either).
    let d = Daemon::start("vhost", &["--vhost-trust-unsealed"]);
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let o = d.ctl(&["vhost-user", "vale0:vm", "--path", &sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rx = d.open("vale0:rx");

    // Guest -> switch: testpmd transmits (txonly), a client port receives.
    let out = testpmd(&d, 1, &sock, "txonly", 3, || {});
    let got = d.counter("vale0:rx", "rx_packets");
    let full = d.counter("vale0:rx", "ring_full");
    let from_vm = d.counter("vale0:vm", "tx_packets");
    assert!(
        from_vm > 1000,
        "the port took {from_vm} packets\n{out}\n{}",
        d.log()
    );
    // Nobody reads vale0:rx: its ring fills, the rest is counted, nothing vanishes.
    assert_eq!(got, 1023);
    assert_eq!(
        got + full,
        from_vm,
        "every packet from the frontend accounted for"
    );
    // testpmd's own count of what it sent = what the receiver reads + the daemon's drops.
    let pmd_sent = stat_last(&out, "TX-packets:");
    // Guest TX waits for the switch rather than dropping (README): the port took every
    // frame testpmd counts as sent.
    assert_eq!(
        pmd_sent, from_vm,
        "testpmd sent {pmd_sent}, the port took {from_vm}"
    );
    let mut read = drain(&rx, 1.0).len() as u64;
    assert_conserved(pmd_sent, read, &d.assert_laws());

    // Switch -> guest, with the frontend connecting again (a restarted VM).
    let tx = d.open("vale0:tx");
    let frames: Vec<_> = (0..3000u32).map(|i| frame([0xff; 6], A_MAC, i)).collect();
    let to_host = || d.host("vale0:vm")["counters"]["to_host"].as_u64().unwrap();
    let out = testpmd(&d, 2, &sock, "rxonly", 3, || {
        // Paced by the guest, not by the clock: each 100 once it has taken all but a
        // ring (256) of those before. testpmd's poller, starved for 150 ms on a loaded
        // machine, once let most of a burst meet an empty ring and a full outbox (drops
        // counted, as they should be, but not what this checks).
        // (20 s in all: a guest that stops taking them is the checks' to report.)
        let base = to_host();
        let t = std::time::Instant::now();
        for (i, chunk) in frames.chunks(100).enumerate() {
            let before = (i * 100) as u64;
            let left = 20.0 - t.elapsed().as_secs_f64();
            wait_for(left.max(0.0), || to_host() - base + 256 >= before);
            send(&tx, chunk);
        }
    });
    let to_vm = d.counter("vale0:vm", "rx_packets");
    let rx_pkts = stat(&out, "RX-packets:");
    // Each of the 3000 frames flooded to the guest and to vale0:rx: testpmd's count and
    // the client's (the rest counted by the daemon), over both runs.
    read += drain(&rx, 1.0).len() as u64;
    let received = read + stat_last(&out, "RX-packets:");
    d.assert_conserved_with(|| (pmd_sent + 2 * 3000, received));
    assert!(to_vm >= 2900, "the switch delivered {to_vm} of 3000\n{out}");
    assert!(
        rx_pkts >= 2900,
        "testpmd received {rx_pkts} of 3000\n{out}\n{}",
        d.log()
    );
    assert_eq!(d.host("vale0:vm")["kind"], "vhost-user");
    // Removing the port removes its socket.
    let o = d.ctl(&["-d", "vale0:vm"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!std::path::Path::new(&sock).exists());
}

const A_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xa];

/// Puts `frames` on TX ring `ring` of `p`, waiting for room: the switch delivers what
/// TX ring `i` carries into RX ring `i` modulo the receiver's rings, and into a
/// vhost-user port's queue pair of that number.
fn send_on(p: &vale::Port, ring: usize, frames: &[Vec<u8>]) {
    let r = &p.tx_rings()[ring];
    for f in frames {
        while r.space() == 0 {
            p.txsync().unwrap();
            if r.space() == 0 {
                p.poll(vale::Interest::TX, Some(Duration::from_millis(100)))
                    .unwrap();
            }
        }
        let v = r.view();
        let h = r.head();
        v.bufs().write(v.read_slot(h).buf_idx, f);
        v.write_len_flags(h, f.len() as u16, 0);
        r.advance(1);
    }
    p.txsync().unwrap();
}

/// Sends `frames` from `p` to the guest on port vale0:vm, frame `i` on TX ring
/// `i % rings`, paced by the guest as the first test's are: each 100 once it has taken
/// all but a ring (256) of those before (20 s in all).
fn send_paced(d: &Daemon, p: &vale::Port, rings: usize, frames: &[Vec<u8>]) {
    let to_host = || d.host("vale0:vm")["counters"]["to_host"].as_u64().unwrap();
    let base = to_host();
    let t = std::time::Instant::now();
    for (i, chunk) in frames.chunks(100).enumerate() {
        let before = (i * 100) as u64;
        let left = 20.0 - t.elapsed().as_secs_f64();
        wait_for(left.max(0.0), || to_host() - base + 256 >= before);
        for r in 0..rings {
            let mine: Vec<_> = chunk.iter().skip(r).step_by(rings).cloned().collect();
            send_on(p, r, &mine);
        }
    }
}

/// A client on `port` (opened with `rings` rings each way, before it returns) that
/// counts what arrives on each RX ring until stopped, in a thread of its own.
struct RingCounter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<u64>>>,
}

impl RingCounter {
    fn start(d: &Daemon, port: &str, rings: usize) -> RingCounter {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (st, socket) = (stop.clone(), d.socket.clone());
        let name = format!("{port}@conf:rings={rings}");
        let (opened, ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let opts = vale::OpenOptions {
                socket: Some(socket),
                ..Default::default()
            };
            let p = vale::Port::open_with(&name, &opts).unwrap();
            let _ = opened.send(());
            let mut counts = vec![0u64; p.rx_rings().len()];
            loop {
                let last = st.load(Ordering::Acquire);
                p.rxsync().unwrap();
                for (c, r) in counts.iter_mut().zip(p.rx_rings()) {
                    let n = r.space();
                    *c += u64::from(n);
                    r.advance(n);
                }
                p.rxsync().unwrap();
                if last {
                    return counts;
                }
                let _ = p.poll(vale::Interest::RX, Some(Duration::from_millis(20)));
            }
        });
        ready.recv_timeout(Duration::from_secs(10)).unwrap();
        RingCounter {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it: the frames it read from each RX ring.
    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for RingCounter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// A process of ours, ended (SIGKILL) if a test fails before it leaves.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// pkt-gen -f rx on `port` (`@conf:` suffix allowed), once its port is there.
fn pkt_gen_rx(d: &Daemon, port: &str) -> Proc {
    let p = Proc(
        d.cmd(PKT_GEN)
            .args(["-i", port, "-f", "rx", "--duration", "120"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let name = port.split('@').next().unwrap().to_string();
    assert!(
        wait_for(10.0, || d.ports().contains(&name)),
        "pkt-gen opened no {name}"
    );
    p
}

/// Ends pkt-gen with SIGINT (as a user does); what it says it received.
fn pkt_gen_received(mut p: Proc) -> u64 {
    use std::io::Read;
    let pid = rustix::process::Pid::from_raw(p.0.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
    let _ = p.0.wait();
    let mut out = String::new();
    p.0.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    stat_last(&out, "Received ")
}

/// What the switch did with what testpmd sent into the port: once everything has
/// reached receiver `rx` (its `rx_packets` and `ring_full` add up to `sent`), both.
fn settled(d: &Daemon, rx: &str, sent: u64) -> (u64, u64) {
    let now = || (d.counter(rx, "rx_packets"), d.counter(rx, "ring_full"));
    wait_for(10.0, || {
        let (got, full) = now();
        got + full >= sent
    });
    now()
}

/// What `vale-ctl list` says of `vale0:vm` ("vhost-user on PATH, 2 queue pairs (1
/// running; from_host/to_host per pair: p0 5/7, p1 0/0)").
fn about(d: &Daemon) -> String {
    d.host("vale0:vm")["about"].as_str().unwrap().to_string()
}

/// The per-pair (from_host, to_host) frames of [`about`]'s line.
fn pair_counts(about: &str) -> Vec<(u64, u64)> {
    let per = about
        .split("per pair: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no per-pair counts in {about:?}"));
    per.trim_end_matches(')')
        .split(", ")
        .enumerate()
        .map(|(i, x)| {
            let (name, n) = x.split_once(' ').unwrap();
            assert_eq!(name, format!("p{i}"), "{about}");
            let (a, b) = n.split_once('/').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// A daemon (`args` added) with `vale0:vm`, a vhost-user port of two queue pairs, and
/// its socket.
fn two_pair_port(name: &str, args: &[&str]) -> (Daemon, String) {
    let mut all = vec!["--vhost-trust-unsealed"];
    all.extend_from_slice(args);
    let d = Daemon::start(name, &all);
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    ctl_ok(
        &d,
        &["vhost-user", "vale0:vm", "--path", &sock, "--queues", "2"],
    );
    (d, sock)
}

/// `--queues 2` and testpmd `queues=2`: its two TX queues (txonly) come out of the
/// port's TX rings 0 and 1 onto a two-ring client's RX rings 0 and 1, and onto pkt-gen's
/// receiver, every frame accounted for; frames from a client's TX ring 0 and 1 (and a
/// pkt-gen sender's ring 0) arrive on testpmd's RX queues 0 and 1 (rxonly), exactly.
#[test]
fn two_queue_pairs_carry_testpmds_traffic_on_both_queues_each_way() {
    two_pairs_each_way("vhostmq", &[]);
}

/// The same on a switch of two threads (`--switch-threads vale0=2`), where pair 0 is
/// served by the lane's thread and pair 1 by its helper (or by the lane's thread while
/// the helper is parked), each behind its own lock: every frame accounted for, each
/// queue's on its own ring.
#[test]
fn two_queue_pairs_on_a_switch_of_two_threads_carry_traffic_both_ways() {
    two_pairs_each_way("vhostmq2t", &["--switch-threads", "vale0=2"]);
}

fn two_pairs_each_way(name: &str, args: &[&str]) {
    let _turn = turn();
    if let Some(r) = skip_reason() {
        skip(&r);
        return;
    }
    let (d, sock) = two_pair_port(name, args);
    let list = d.ctl_json(&["list"]);
    let g = &list["switches"][0]["ports"][0]["geometry"];
    assert_eq!(
        (g["tx_rings"].as_u64(), g["rx_rings"].as_u64()),
        (Some(2), Some(2)),
        "a TX and an RX ring per pair: {list}"
    );
    assert!(
        about(&d).contains("2 queue pairs (0 running; "),
        "{}",
        about(&d)
    );

    // Guest -> switch.
    let rings = RingCounter::start(&d, "vale0:rc", 2);
    let pg = pkt_gen_rx(&d, "vale0:rx@conf:rings=2");
    let mut running = String::new();
    let out = testpmd_queues(&d, 1, &sock, "txonly", 3, 2, || running = about(&d));
    assert!(running.contains("2 queue pairs (2 running; "), "{running}");
    let pmd_sent = stat_last(&out, "TX-packets:");
    let q = [
        stat_last(&out, "tx_q0_good_packets:"),
        stat_last(&out, "tx_q1_good_packets:"),
    ];
    assert!(
        q[0] > 1000 && q[1] > 1000,
        "both TX queues carried traffic: {q:?}\n{out}"
    );
    assert_eq!(q[0] + q[1], pmd_sent, "{out}");
    // Each pair's frames from the guest, as `vale-ctl list` shows them: its queue's.
    assert_eq!(
        pair_counts(&about(&d)),
        [(q[0], 0), (q[1], 0)],
        "{}",
        about(&d)
    );
    let txq = q;
    assert_eq!(
        d.counter_at("vale0:vm", "tx_packets", pmd_sent),
        pmd_sent,
        "the port took every frame testpmd counted as sent\n{out}"
    );
    let (pg_got, pg_full) = settled(&d, "vale0:rx", pmd_sent);
    assert_eq!(
        pg_got + pg_full,
        pmd_sent,
        "pkt-gen's port: delivered + dropped"
    );
    let (rc_got, rc_full) = settled(&d, "vale0:rc", pmd_sent);
    assert_eq!(rc_got + rc_full, pmd_sent, "the counting client's port");
    // (While the receivers' ports, and their counts, are there.)
    d.assert_laws();
    // What is in pkt-gen's rings is read before it is told to stop.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        pkt_gen_received(pg),
        pg_got,
        "pkt-gen read all it was given"
    );
    let per_ring = rings.finish();
    assert_eq!(per_ring.iter().sum::<u64>(), rc_got);
    // Queue i's frames on RX ring i: exactly, unless some met a full ring (counted).
    for r in 0..2 {
        assert!(
            per_ring[r] <= q[r] && per_ring[r] + rc_full >= q[r],
            "RX ring {r}: {} of queue {r}'s {} ({rc_full} dropped in all)",
            per_ring[r],
            q[r]
        );
    }
    println!("txonly: queues {q:?}, client rings {per_ring:?}, drops {rc_full} / {pg_full}");

    // Switch -> guest: a client's TX ring 1 onto RX queue 1, ring 0 and pkt-gen's one
    // ring onto queue 0.
    let tx = d.open("vale0:tx@conf:rings=2");
    let frames: Vec<_> = (0..2000u32).map(|i| frame([0xff; 6], A_MAC, i)).collect();
    let out = testpmd_queues(&d, 2, &sock, "rxonly", 3, 2, || {
        send_paced(&d, &tx, 2, &frames);
        let o = d
            .cmd(PKT_GEN)
            .args(["-i", "vale0:pg", "-f", "tx", "-n", "1000", "-R", "2000"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    });
    let q = [
        stat_last(&out, "rx_q0_good_packets:"),
        stat_last(&out, "rx_q1_good_packets:"),
    ];
    let vm = d.stats();
    let lost = vm.port("vale0:vm");
    assert_eq!(
        (q[0], q[1], stat_last(&out, "RX-packets:")),
        (1000 + 1000, 1000, 3000),
        "testpmd's RX queues 0 and 1, and in all\nvale0:vm {lost}\n{out}"
    );
    // Exactly what the switch delivered. (No law over the whole switch now: the first
    // half's receivers left with their counts.)
    assert_eq!(vm.get("vale0:vm", "rx_packets"), 3000);
    assert_eq!(
        pair_counts(&about(&d)),
        [(txq[0], 2000), (txq[1], 1000)],
        "frames to the guest per pair"
    );
    ctl_ok(&d, &["-d", "vale0:vm"]);
    assert!(!std::path::Path::new(&sock).exists());
}

/// testpmd `queues=1` on a `--queues 2` port: it runs pair 0 alone, and what the switch
/// has for pair 1 (a client's TX ring 1) goes to its one RX queue; its TX queue's
/// frames all arrive.
#[test]
fn a_frontend_running_one_of_two_queue_pairs_gets_everything_on_it() {
    one_of_two_pairs("vhostmq1", &[]);
}

/// The same on a switch of two threads: RX ring 1 is the helper's, and what it holds
/// goes into pair 0's RX queue, the lane's thread's.
#[test]
fn one_of_two_queue_pairs_on_a_switch_of_two_threads_gets_everything_on_it() {
    one_of_two_pairs("vhostmq12t", &["--switch-threads", "vale0=2"]);
}

fn one_of_two_pairs(name: &str, args: &[&str]) {
    let _turn = turn();
    if let Some(r) = skip_reason() {
        skip(&r);
        return;
    }
    let (d, sock) = two_pair_port(name, args);

    let pg = pkt_gen_rx(&d, "vale0:rx");
    let mut running = String::new();
    let out = testpmd_queues(&d, 1, &sock, "txonly", 3, 1, || running = about(&d));
    assert!(running.contains("2 queue pairs (1 running; "), "{running}");
    let pmd_sent = stat_last(&out, "TX-packets:");
    assert!(pmd_sent > 1000, "{out}");
    assert_eq!(
        d.counter_at("vale0:vm", "tx_packets", pmd_sent),
        pmd_sent,
        "{out}"
    );
    let (got, full) = settled(&d, "vale0:rx", pmd_sent);
    assert_eq!(got + full, pmd_sent);
    d.assert_laws();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pkt_gen_received(pg), got);

    let tx = d.open("vale0:tx@conf:rings=2");
    let frames: Vec<_> = (0..2000u32).map(|i| frame([0xff; 6], A_MAC, i)).collect();
    let out = testpmd_queues(&d, 2, &sock, "rxonly", 3, 1, || {
        send_paced(&d, &tx, 2, &frames)
    });
    let vm = d.stats();
    assert_eq!(
        (
            stat_last(&out, "rx_q0_good_packets:"),
            stat_last(&out, "RX-packets:")
        ),
        (2000, 2000),
        "both rings' frames on its one queue\nvale0:vm {}\n{out}",
        vm.port("vale0:vm")
    );
    assert_eq!(vm.get("vale0:vm", "rx_packets"), 2000);
    // All of it from pair 0, and into it: pair 1 never ran.
    assert_eq!(pair_counts(&about(&d)), [(pmd_sent, 2000), (0, 0)]);
}

/// `--queues` outside 1 to 16 is refused with the range, and makes nothing; 16 makes
/// a port of 16 rings each way (no frontend needed).
#[test]
fn queue_counts_outside_the_limit_are_refused_and_sixteen_is_served() {
    let d = Daemon::start("vhostq", &[]);
    let sock = d.dir.join("q.sock").to_str().unwrap().to_string();
    for bad in ["0", "17"] {
        let o = d.ctl(&["vhost-user", "vale0:q", "--path", &sock, "--queues", bad]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "--queues {bad} accepted");
        assert!(
            err.contains(&format!("--queues {bad}")) && err.contains("1 to 16 queue pairs"),
            "{err}"
        );
    }
    assert!(d.hosts().is_empty() && d.ports().is_empty());
    assert!(!std::path::Path::new(&sock).exists());
    let o = d.ctl(&["vhost-user", "vale0:q", "--path", &sock, "--queues", "-1"]);
    assert!(
        !o.status.success(),
        "a negative count is not a number of pairs"
    );
    ctl_ok(
        &d,
        &["vhost-user", "vale0:q", "--path", &sock, "--queues", "16"],
    );
    let list = d.ctl_json(&["list"]);
    let g = &list["switches"][0]["ports"][0]["geometry"];
    assert_eq!(
        (g["tx_rings"].as_u64(), g["rx_rings"].as_u64()),
        (Some(16), Some(16))
    );
    let text = stdout_of(&d.ctl(&["list"]));
    assert!(text.contains("16 queue pairs (0 running; "), "{text}");
    ctl_ok(&d, &["-d", "vale0:q"]);
}

/// A hostile vhost-user frontend written here: speaks the protocol by hand over the
/// socket, with guest memory in a memfd it writes with pwrite, and puts bad descriptors,
/// bad memory tables and garbage in front of the port. Nothing in it may crash valed or
/// disturb other ports; each bad descriptor is counted on the port.
mod hostile {
    use rustix::fd::{AsFd, OwnedFd};
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    pub const GET_FEATURES: u32 = 1;
    pub const SET_FEATURES: u32 = 2;
    pub const SET_OWNER: u32 = 3;
    pub const SET_MEM_TABLE: u32 = 5;
    pub const SET_VRING_NUM: u32 = 8;
    pub const SET_VRING_ADDR: u32 = 9;
    pub const SET_VRING_BASE: u32 = 10;
    pub const GET_VRING_BASE: u32 = 11;
    pub const SET_VRING_KICK: u32 = 12;
    pub const SET_VRING_CALL: u32 = 13;
    /// Queue size, guest memory size, and where the frontend "maps" it.
    pub const QSIZE: u16 = 8;
    pub const MEM: u64 = 1 << 20;
    pub const VA: u64 = 0x7000_0000_0000;
    pub const F_NEXT: u16 = 1;
    pub const F_WRITE: u16 = 2;

    /// Where queue `q`'s parts live in guest memory (guest address = offset).
    pub fn desc(q: u16) -> u64 {
        q as u64 * 0x4000
    }
    pub fn avail(q: u16) -> u64 {
        desc(q) + 0x1000
    }
    pub fn used(q: u16) -> u64 {
        desc(q) + 0x2000
    }

    pub struct Front {
        pub s: UnixStream,
        pub mem: OwnedFd,
        kicks: Vec<OwnedFd>,
        _calls: Vec<OwnedFd>,
        next_avail: [u16; 2],
    }

    impl Front {
        /// A frontend whose guest memory valed can seal (QEMU's memory-backend-memfd).
        pub fn connect(path: &str) -> Front {
            Front::connect_with(path, rustix::fs::MemfdFlags::ALLOW_SEALING)
        }

        /// A frontend with guest memory made with `flags`: without ALLOW_SEALING, memory
        /// valed cannot seal (DPDK's `--no-huge` memfd).
        pub fn connect_with(path: &str, flags: rustix::fs::MemfdFlags) -> Front {
            let s = UnixStream::connect(path).expect("connect to the vhost-user socket");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mem =
                rustix::fs::memfd_create("guest", rustix::fs::MemfdFlags::CLOEXEC | flags).unwrap();
            rustix::fs::ftruncate(&mem, MEM).unwrap();
            let ev = || rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
            Front {
                s,
                mem,
                kicks: vec![ev(), ev()],
                _calls: vec![ev(), ev()],
                next_avail: [0; 2],
            }
        }

        pub fn send(&self, req: u32, payload: &[u8], fds: &[rustix::fd::BorrowedFd<'_>]) -> bool {
            self.send_flags(req, 1, payload, fds)
        }

        pub fn send_flags(
            &self,
            req: u32,
            flags: u32,
            payload: &[u8],
            fds: &[rustix::fd::BorrowedFd<'_>],
        ) -> bool {
            let mut m = Vec::new();
            m.extend_from_slice(&req.to_le_bytes());
            m.extend_from_slice(&flags.to_le_bytes());
            m.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            m.extend_from_slice(payload);
            vale::sock::send(self.s.as_fd(), &m, fds).is_ok()
        }

        pub fn get_features(&mut self) -> u64 {
            assert!(self.send(GET_FEATURES, &[], &[]));
            let mut r = [0u8; 20];
            self.s.read_exact(&mut r).expect("GET_FEATURES reply");
            u64::from_le_bytes(r[12..20].try_into().unwrap())
        }

        /// The memory table: one region of `size` bytes at `offset` in the memfd.
        pub fn mem_table(&self, size: u64, offset: u64) -> bool {
            let mut p = Vec::new();
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            for v in [0, size, VA, offset] {
                p.extend_from_slice(&v.to_le_bytes());
            }
            self.send(SET_MEM_TABLE, &p, &[self.mem.as_fd()])
        }

        /// The memory table as two regions of the memfd, split at guest address
        /// `at` (guest address = file offset in both, as before): the same bytes,
        /// mapped anew by valed, with the regions' border at `at`.
        pub fn mem_table_split(&self, at: u64) -> bool {
            let mut p = Vec::new();
            p.extend_from_slice(&2u32.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            for (gpa, size) in [(0, at), (at, MEM - at)] {
                for v in [gpa, size, VA + gpa, gpa] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
            }
            self.send(SET_MEM_TABLE, &p, &[self.mem.as_fd(), self.mem.as_fd()])
        }

        /// The whole memory table asking for a reply (NEED_REPLY): its value (0 done,
        /// else failed), or `None` if valed hung up without one.
        pub fn mem_table_replied(&mut self) -> Option<u64> {
            let mut p = Vec::new();
            p.extend_from_slice(&1u32.to_le_bytes());
            p.extend_from_slice(&0u32.to_le_bytes());
            for v in [0, MEM, VA, 0] {
                p.extend_from_slice(&v.to_le_bytes());
            }
            assert!(self.send_flags(SET_MEM_TABLE, 1 | 8, &p, &[self.mem.as_fd()]));
            let mut r = [0u8; 20];
            self.s.read_exact(&mut r).ok()?;
            assert_eq!(
                u32::from_le_bytes(r[0..4].try_into().unwrap()),
                SET_MEM_TABLE
            );
            Some(u64::from_le_bytes(r[12..20].try_into().unwrap()))
        }

        fn state(&self, req: u32, q: u32, num: u32) -> bool {
            let mut p = q.to_le_bytes().to_vec();
            p.extend_from_slice(&num.to_le_bytes());
            self.send(req, &p, &[])
        }

        /// Queue `q` at its place in guest memory (or at `desc_va` for its table).
        pub fn vring(&self, q: u16, desc_va: u64) -> bool {
            let mut ok = self.state(SET_VRING_NUM, q as u32, QSIZE as u32);
            let mut p = (q as u32).to_le_bytes().to_vec();
            p.extend_from_slice(&0u32.to_le_bytes());
            for v in [desc_va, VA + used(q), VA + avail(q), 0] {
                p.extend_from_slice(&v.to_le_bytes());
            }
            ok &= self.send(SET_VRING_ADDR, &p, &[]);
            ok &= self.state(SET_VRING_BASE, q as u32, 0);
            ok &= self.send(
                SET_VRING_CALL,
                &(q as u64).to_le_bytes(),
                &[self._calls[q as usize].as_fd()],
            );
            ok &= self.send(
                SET_VRING_KICK,
                &(q as u64).to_le_bytes(),
                &[self.kicks[q as usize].as_fd()],
            );
            ok
        }

        /// The whole handshake, both queues in place (no EVENT_IDX, no protocol features:
        /// rings run as soon as they are kicked), VERSION_1 and `more` features accepted.
        pub fn setup_with(&mut self, more: u64) {
            let f = self.get_features();
            assert!(f & 1 << 32 != 0, "VERSION_1 offered");
            assert_eq!(f & more, more, "{more:#x} offered");
            assert!(self.send(SET_OWNER, &[], &[]));
            assert!(self.send(SET_FEATURES, &(1u64 << 32 | more).to_le_bytes(), &[]));
            assert!(self.mem_table(MEM, 0));
            for q in [0, 1] {
                assert!(self.vring(q, VA + desc(q)));
            }
            self.kick(0);
            self.kick(1);
        }

        pub fn setup(&mut self) {
            self.setup_with(0)
        }

        pub fn write(&self, gpa: u64, bytes: &[u8]) {
            rustix::io::pwrite(&self.mem, bytes, gpa).unwrap();
        }

        pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
            let mut b = vec![0u8; len];
            rustix::io::pread(&self.mem, &mut b, gpa).unwrap();
            b
        }

        pub fn kick(&self, q: u16) {
            rustix::io::write(&self.kicks[q as usize], &1u64.to_le_bytes()).unwrap();
        }

        /// Descriptor `i` of queue `q`.
        pub fn set_desc(&self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let mut d = addr.to_le_bytes().to_vec();
            d.extend_from_slice(&len.to_le_bytes());
            d.extend_from_slice(&flags.to_le_bytes());
            d.extend_from_slice(&next.to_le_bytes());
            self.write(desc(q) + 16 * i as u64, &d);
        }

        /// Offers descriptor chain `head` on queue `q` (by `step` positions: a liar's
        /// avail index moves further than the ring holds) and kicks.
        pub fn offer(&mut self, q: u16, head: u16, step: u16) {
            self.post(q, head, step);
            self.kick(q);
        }

        /// Offers a chain without kicking.
        pub fn post(&mut self, q: u16, head: u16, step: u16) {
            let n = self.next_avail[q as usize];
            self.write(avail(q) + 4 + 2 * (n % QSIZE) as u64, &head.to_le_bytes());
            let n = n.wrapping_add(step);
            self.next_avail[q as usize] = n;
            self.write(avail(q) + 2, &n.to_le_bytes());
        }

        /// Queue `q`'s call descriptor replaced by `fd`.
        pub fn set_call(&self, q: u16, fd: rustix::fd::BorrowedFd<'_>) -> bool {
            self.send(SET_VRING_CALL, &(q as u64).to_le_bytes(), &[fd])
        }

        /// Queue `q`'s kick descriptor replaced by `fd`.
        pub fn set_kick(&self, q: u16, fd: rustix::fd::BorrowedFd<'_>) -> bool {
            self.send(SET_VRING_KICK, &(q as u64).to_le_bytes(), &[fd])
        }

        /// Stops queue `q` (GET_VRING_BASE): the device's position in it.
        pub fn stop(&mut self, q: u16) -> u32 {
            let mut p = (q as u32).to_le_bytes().to_vec();
            p.extend_from_slice(&0u32.to_le_bytes());
            assert!(self.send(GET_VRING_BASE, &p, &[]));
            let mut r = [0u8; 20];
            self.s.read_exact(&mut r).expect("GET_VRING_BASE reply");
            u32::from_le_bytes(r[16..20].try_into().unwrap())
        }

        /// Starts queue `q` again at `base`, as a resumed VM does (no kick).
        pub fn restart(&self, q: u16, base: u32) -> bool {
            let mut ok = self.state(SET_VRING_BASE, q as u32, base);
            ok &= self.send(
                SET_VRING_CALL,
                &(q as u64).to_le_bytes(),
                &[self._calls[q as usize].as_fd()],
            );
            ok &= self.send(
                SET_VRING_KICK,
                &(q as u64).to_le_bytes(),
                &[self.kicks[q as usize].as_fd()],
            );
            ok
        }

        /// Whether valed signalled queue `q` (its call eventfd) since the last look,
        /// waiting up to `ms` for it; the signal is consumed.
        pub fn called(&self, q: u16, ms: u64) -> bool {
            use rustix::event::{PollFd, PollFlags, Timespec, poll};
            let fd = &self._calls[q as usize];
            let t = Timespec {
                tv_sec: (ms / 1000) as i64,
                tv_nsec: (ms % 1000 * 1_000_000) as i64,
            };
            let mut f = [PollFd::new(fd, PollFlags::IN)];
            if poll(&mut f, Some(&t)).unwrap_or(0) != 1 {
                return false;
            }
            let mut b = [0u8; 8];
            rustix::io::read(fd, &mut b).is_ok()
        }

        pub fn used_idx(&self, q: u16) -> u16 {
            u16::from_le_bytes(self.read(used(q) + 2, 2).try_into().unwrap())
        }

        /// Used entry `n` of queue `q`: (descriptor, length).
        pub fn used_entry(&self, q: u16, n: u16) -> (u32, u32) {
            let b = self.read(used(q) + 4 + 8 * (n % QSIZE) as u64, 8);
            (
                u32::from_le_bytes(b[0..4].try_into().unwrap()),
                u32::from_le_bytes(b[4..8].try_into().unwrap()),
            )
        }

        pub fn wait_used(&self, q: u16, n: u16) -> bool {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if self.used_idx(q) == n {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        }

        /// Whether valed hung up on us within `secs`.
        pub fn hung_up(&mut self, secs: u64) -> bool {
            self.s
                .set_read_timeout(Some(Duration::from_secs(secs)))
                .unwrap();
            let mut b = [0u8; 64];
            loop {
                match self.s.read(&mut b) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                }
            }
        }
    }
}

/// The port's host counter `key` (vale-ctl list).
fn host_counter(d: &Daemon, port: &str, key: &str) -> u64 {
    d.host(port)["counters"][key].as_u64().unwrap()
}

/// Bystanders `vale0:x` and `vale0:y`, both learned by the switch (frames between them
/// are unicast).
fn bystander_pair(d: &Daemon) -> (vale::Port, vale::Port) {
    let (x, y) = (d.open("vale0:x"), d.open("vale0:y"));
    send(&y, &[frame(X_MAC, Y_MAC, 0)]);
    send(&x, &[frame(Y_MAC, X_MAC, 0)]);
    drain(&x, 0.5);
    drain(&y, 0.5);
    (x, y)
}

/// Bystander frame `tag` crosses from `x` to `y`.
fn crosses(x: &vale::Port, y: &vale::Port, tag: u32) {
    send(x, &[frame(Y_MAC, X_MAC, tag)]);
    let got = drain(y, 2.0);
    assert!(
        got.iter().any(|f| f[14..18] == tag.to_be_bytes()),
        "bystander frame {tag} crossed"
    );
}

#[test]
fn a_frontend_s_notification_descriptors_cannot_hold_up_the_switch() {
    let _turn = turn();
    use hostile::*;
    use rustix::fd::AsFd;
    let d = Daemon::start("vhost-irqfd", &[]);
    let (x, y) = bystander_pair(&d);
    let bystanders = |tag: u32| crosses(&x, &y, tag);
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let sock2 = d.dir.join("vm2.sock").to_str().unwrap().to_string();
    for (p, s) in [("vale0:vm", &sock), ("vale0:vm2", &sock2)] {
        let o = d.ctl(&["vhost-user", p, "--path", s]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let pkt = |tag: u32| {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&frame([0xff; 6], VM_MAC, tag));
        p
    };
    let buf = 0x10000u64;

    // TX queue 1's call eventfd filled to its limit, and blocking: valed's signal that
    // the frame was used would block in the write (it did, on the forwarding thread:
    // the bystanders froze, and the control thread behind it).
    let mut f = Front::connect(&sock);
    f.setup();
    let full = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    rustix::io::write(&full, &(u64::MAX - 1).to_ne_bytes()).unwrap();
    assert!(f.set_call(1, full.as_fd()));
    f.write(buf, &pkt(1));
    f.set_desc(1, 0, buf, 72, 0, 0);
    f.offer(1, 0, 1);
    assert!(f.wait_used(1, 1), "the frame is used:\n{}", d.log());
    // valed's signal for it is on its way: the port's notifier thread sits in the
    // write to the full eventfd (where the forwarding thread used to).
    let stuck_in_write = || thread_in_write(d.pid(), "vale-vhost-irq");
    assert!(
        wait_for(10.0, stuck_in_write),
        "the notifier holds the signal"
    );
    bystanders(1);
    assert!(
        d.ctl(&["list"]).status.success(),
        "the control thread answers"
    );

    // A kick that is a pipe (the crate's read of it blocks holding the ring's lock):
    // refused before it is used, the frontend cut off and counted.
    let mut g = Front::connect(&sock2);
    let feats = g.get_features();
    assert!(feats & 1 << 32 != 0);
    assert!(g.send(SET_OWNER, &[], &[]));
    assert!(g.send(SET_FEATURES, &(1u64 << 32).to_le_bytes(), &[]));
    assert!(g.mem_table(MEM, 0));
    let (pr, pw) = rustix::pipe::pipe().unwrap();
    assert!(g.set_kick(1, pr.as_fd()));
    assert!(g.hung_up(5), "a pipe for a kick: the frontend is cut off");
    assert!(host_counter(&d, "vale0:vm2", "read_errors") >= 1);
    rustix::io::write(&pw, b"x").unwrap();
    bystanders(2);

    // The first frontend goes, its filled eventfd still holding valed's notifier for
    // that port; the next connection unsticks it (reads the gone frontend's eventfd)
    // and is served, and frames flow.
    drop(f);
    std::thread::sleep(Duration::from_millis(200));
    assert!(stuck_in_write(), "held until the next connection");
    let mut h = Front::connect(&sock);
    h.setup();
    h.write(buf, &pkt(2));
    h.set_desc(1, 0, buf, 72, 0, 0);
    h.offer(1, 0, 1);
    assert!(h.wait_used(1, 1), "a new frontend is served:\n{}", d.log());
    assert!(h.called(1, 2000), "and its calls reach it");
    assert!(
        wait_for(5.0, || !stuck_in_write()),
        "the gone frontend's notifier ended"
    );
    bystanders(3);
    drop(h);

    // Connections that come and go leave no descriptor behind (the crate's worker
    // exit eventfds were never closed: one per connection).
    std::thread::sleep(Duration::from_millis(500));
    let fds0 = d.fd_count();
    for _ in 0..40 {
        let mut c = Front::connect(&sock2);
        let _ = c.get_features();
    }
    assert!(
        wait_for(10.0, || d.fd_count() <= fds0),
        "descriptors back to {fds0}: {}",
        d.fd_count()
    );
    bystanders(4);
}

#[test]
fn a_hostile_vhost_user_frontend_is_counted_and_never_crashes_valed() {
    let _turn = turn();
    use hostile::*;
    let mut d = Daemon::start("vhost-hostile", &[]);
    let r = d.open("vale0:r");
    // Bystanders on the same switch, forwarding throughout, learned before the VM's
    // port exists (nothing floods to it).
    let (x, y) = bystander_pair(&d);
    let bystanders = |tag: u32| crosses(&x, &y, tag);
    drain(&r, 0.2);
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let o = d.ctl(&["vhost-user", "vale0:vm", "--path", &sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let mut f = Front::connect(&sock);
    f.setup();
    let buf = 0x10000u64;
    let pkt = |tag: u32| {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&frame([0xff; 6], VM_MAC, tag));
        p
    };
    let from_vm = |r: &vale::Port, tag: u32| {
        drain(r, 2.0)
            .iter()
            .any(|f| f.len() == 60 && f[14..18] == tag.to_be_bytes())
    };

    // A good frame first: it crosses (header stripped for the plain port).
    f.write(buf, &pkt(1));
    f.set_desc(1, 0, buf, 72, 0, 0);
    f.offer(1, 0, 1);
    assert!(f.wait_used(1, 1), "the descriptor is used:\n{}", d.log());
    assert!(from_vm(&r, 1), "a good frame from the frontend arrives");

    // Bad TX descriptors: each returned to the guest, counted, nothing forwarded.
    let bad: [(u64, u32, u16, u16); 5] = [
        (0xdead_0000_0000, 72, 0, 0), // outside guest memory
        (MEM - 10, 72, 0, 0),         // runs past its end
        (buf, u32::MAX, 0, 0),        // an impossible length
        (buf, 72, F_WRITE, 0),        // write-only: nothing to read
        (buf, 0, F_NEXT, 200),        // a chain to a descriptor that does not exist
    ];
    for (k, &(addr, len, flags, next)) in bad.iter().enumerate() {
        f.set_desc(1, 1, addr, len, flags, next);
        f.offer(1, 1, 1);
        assert!(f.wait_used(1, 2 + k as u16), "bad descriptor {k} is used");
        assert_eq!(f.used_entry(1, 1 + k as u16), (1, 0));
    }
    assert_eq!(
        host_counter(&d, "vale0:vm", "read_errors"),
        bad.len() as u64
    );
    assert!(!from_vm(&r, 1), "nothing forwarded from bad descriptors");
    // A chain longer than any frame (512 KiB): not read at all, counted.
    f.set_desc(1, 1, buf, 512 << 10, 0, 0);
    f.offer(1, 1, 1);
    assert!(f.wait_used(1, 2 + bad.len() as u16));
    assert_eq!(host_counter(&d, "vale0:vm", "truncated"), 1);
    bystanders(10);

    // RX (the switch learned the VM's MAC from its frames: r's frames to it are unicast):
    // a buffer outside guest memory drops that frame (counted); a good one gets the next
    // frame with its header (num_buffers 1).
    f.set_desc(0, 0, 0xdead_0000_0000, 2048, F_WRITE, 0);
    f.offer(0, 0, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 20)]);
    assert!(f.wait_used(0, 1), "the bad RX buffer is returned");
    assert!(wait_for(10.0, || host_counter(
        &d,
        "vale0:vm",
        "write_errors"
    ) == 1));
    f.set_desc(0, 1, buf + 0x1000, 2048, F_WRITE, 0);
    f.offer(0, 1, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 21)]);
    assert!(f.wait_used(0, 2), "a good RX buffer is filled");
    assert_eq!(f.used_entry(0, 1), (1, 72));
    let got = f.read(buf + 0x1000, 72);
    assert_eq!(&got[10..12], &1u16.to_le_bytes(), "num_buffers");
    assert_eq!(&got[12 + 14..12 + 18], &21u32.to_be_bytes());
    // Without MRG_RXBUF a packet must fit one buffer (the guest reads no further): a
    // buffer too small for it is returned empty and the packet counted, not split.
    f.set_desc(0, 2, buf + 0x1000, 40, F_WRITE, 0);
    f.offer(0, 2, 1);
    f.set_desc(0, 3, buf + 0x2000, 2048, F_WRITE, 0);
    f.offer(0, 3, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 22)]);
    assert!(f.wait_used(0, 3), "the small buffer is returned");
    assert_eq!(f.used_entry(0, 2), (2, 0));
    assert!(wait_for(10.0, || host_counter(
        &d,
        "vale0:vm",
        "write_errors"
    ) == 2));
    send(&r, &[frame(VM_MAC, R_MAC, 23)]);
    assert!(f.wait_used(0, 4), "the next packet takes the next buffer");
    assert_eq!(f.used_entry(0, 3), (3, 72));

    // An avail index far ahead of the ring: the queue stops, nothing else does.
    f.offer(1, 0, 1000);
    std::thread::sleep(Duration::from_millis(200));
    bystanders(11);
    // ... and valed does not spin on it.
    let cpu = d.idle_cpu(1.0);
    assert!(cpu < 0.5, "valed used {cpu:.2} CPU-s in the second after");
    assert!(host_counter(&d, "vale0:vm", "read_errors") > bad.len() as u64);
    drop(f);

    // Memory tables that do not fit their file, and garbage: each connection refused,
    // the port serves the next frontend.
    let mut f = Front::connect(&sock);
    f.get_features();
    f.send(SET_OWNER, &[], &[]);
    f.mem_table(16 * MEM, 0); // 16 MiB of a 1 MiB memfd: SIGBUS if ever touched
    assert!(
        f.hung_up(5),
        "a memory table past the end of its file is refused"
    );
    let mut f = Front::connect(&sock);
    f.mem_table(MEM, MEM - 4096 + 1); // starts inside, ends outside
    assert!(f.hung_up(5), "a region ending past its file is refused");
    let mut f = Front::connect(&sock);
    let mut junk = vec![0xffu8; 12];
    junk[8..12].copy_from_slice(&(1u32 << 30).to_le_bytes());
    rustix::io::write(&f.s, &junk).unwrap();
    assert!(f.hung_up(5), "a message of 1 GiB is refused");
    let mut f = Front::connect(&sock);
    rustix::io::write(&f.s, &[7u8; 12]).unwrap();
    assert!(f.hung_up(5), "an unknown request is refused");
    let mut f = Front::connect(&sock);
    f.get_features();
    f.send(SET_OWNER, &[], &[]);
    f.send(SET_FEATURES, &(1u64 << 32).to_le_bytes(), &[]);
    f.mem_table(MEM, 0);
    f.vring(1, 0xdead_0000_0000); // a descriptor table outside guest memory
    assert!(f.hung_up(5), "a ring outside guest memory is refused");
    bystanders(12);

    // A well-behaved frontend after all that (taking packets in several buffers,
    // MRG_RXBUF): traffic flows, and its memory cannot be shrunk from under valed
    // (sealed when the table was accepted).
    let mut f = Front::connect(&sock);
    f.setup_with(1 << 15);
    f.write(buf, &pkt(30));
    f.set_desc(1, 0, buf, 72, 0, 0);
    f.offer(1, 0, 1);
    assert!(f.wait_used(1, 1));
    assert!(
        from_vm(&r, 30),
        "a good frontend after the bad ones is served"
    );
    assert!(
        rustix::fs::ftruncate(&f.mem, 4096).is_err(),
        "guest memory is sealed against shrinking"
    );
    assert!(d.alive(), "valed survived:\n{}", d.log());
    assert_eq!(host_counter(&d, "vale0:vm", "to_host"), 2);

    // A guest that starves its RX queue (one buffer too small for any frame, never
    // refilled) while frames wait for it: they wait, and valed sleeps meanwhile (it
    // once kept its forwarding thread awake for as long as the guest stayed so).
    f.set_desc(0, 0, buf + 0x1000, 20, F_WRITE, 0);
    f.offer(0, 0, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 40)]);
    std::thread::sleep(Duration::from_millis(300));
    let cpu = d.idle_cpu(1.0);
    assert!(
        cpu < 0.3,
        "valed used {cpu:.2} CPU-s while the guest starved RX"
    );
    // The guest adds a buffer: the waiting frame goes out in both (num_buffers 2).
    f.set_desc(0, 1, buf + 0x2000, 2048, F_WRITE, 0);
    f.offer(0, 1, 1);
    assert!(
        f.wait_used(0, 2),
        "the waiting frame is delivered:\n{}",
        d.log()
    );
    assert_eq!(f.used_entry(0, 0), (0, 20));
    assert_eq!(f.used_entry(0, 1), (1, 52));
    // The frontend stops its RX queue (GET_VRING_BASE: a paused VM) with a frame
    // waiting: no work until it starts the queue again.
    f.set_desc(0, 2, buf + 0x1000, 20, F_WRITE, 0);
    f.offer(0, 2, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 41)]);
    std::thread::sleep(Duration::from_millis(200));
    let base = f.stop(0);
    assert_eq!(base, 2, "the device stopped before the too-small buffer");
    std::thread::sleep(Duration::from_millis(300));
    let cpu = d.idle_cpu(1.0);
    assert!(
        cpu < 0.3,
        "valed used {cpu:.2} CPU-s with the RX queue stopped"
    );
    // The VM resumes with a big buffer posted meanwhile and no kick: the waiting frame
    // goes out at once, not at valed's idle timer.
    f.set_desc(0, 3, buf + 0x2000, 2048, F_WRITE, 0);
    f.post(0, 3, 1);
    let t = std::time::Instant::now();
    assert!(f.restart(0, base));
    assert!(
        f.wait_used(0, 4),
        "the waiting frame is delivered:\n{}",
        d.log()
    );
    // At valed's idle timer it would be a second; a busy machine may add a few
    // hundred ms of its own to the vhost-user round trips.
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "delivered {:?} after the ring restarted",
        t.elapsed()
    );
    bystanders(13);
    assert!(d.alive(), "valed survived:\n{}", d.log());
}

const VM_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x77];
const R_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x0e];
const X_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x31];
const Y_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x32];

/// Bystanders on the switch: `x` sends rounds of 16 frames to `y` and `y` counts what it
/// receives (`received`, as it goes), until `phase` is 1 (at most 2000 rounds); then
/// they report (sent, received) by their own counts and keep their ports open until
/// `phase` is 2, for the daemon's counters to be read.
fn bystander_traffic(
    socket: std::path::PathBuf,
    phase: std::sync::Arc<std::sync::atomic::AtomicU8>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> std::sync::mpsc::Receiver<(u64, u64)> {
    use std::sync::atomic::Ordering;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let open = |name: &str| {
            vale::Port::open_with(
                name,
                &vale::OpenOptions {
                    socket: Some(socket.clone()),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let (x, y) = (open("vale0:x"), open("vale0:y"));
        // The switch learns both first: their frames are unicast, never flooded.
        send(&y, &[frame(X_MAC, Y_MAC, 0)]);
        send(&x, &[frame(Y_MAC, X_MAC, 0)]);
        drain(&x, 0.3);
        drain(&y, 0.3);
        let (mut sent, mut got) = (0u64, 0u64);
        for round in 0..2000u32 {
            if phase.load(Ordering::Acquire) >= 1 {
                break;
            }
            let frames: Vec<_> = (0..16)
                .map(|k| frame(Y_MAC, X_MAC, round * 16 + k))
                .collect();
            send(&x, &frames);
            sent += 16;
            let want = got + 16;
            let t = std::time::Instant::now();
            while got < want && t.elapsed() < Duration::from_secs(2) {
                if y.poll(vale::Interest::RX, Some(Duration::from_millis(50)))
                    .unwrap()
                {
                    y.dispatch(0, |_| got += 1);
                    y.rxsync().unwrap();
                }
            }
            received.store(got, Ordering::Release);
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = tx.send((sent, got));
        let t = std::time::Instant::now();
        while phase.load(Ordering::Acquire) < 2 && t.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    rx
}

/// A polling driver (VRING_AVAIL_F_NO_INTERRUPT in its avail ring, as DPDK's sets) is not
/// signalled for the buffers valed uses; one that clears the flag is, once per burst.
#[test]
fn a_driver_that_polls_is_not_interrupted_and_one_that_waits_is() {
    let _turn = turn();
    use hostile::*;
    let d = Daemon::start("vhost-noint", &[]);
    let r = d.open("vale0:r");
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let o = d.ctl(&["vhost-user", "vale0:vm", "--path", &sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut f = Front::connect(&sock);
    f.setup();
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&frame([0xff; 6], VM_MAC, 1));
    f.write(0x10000, &p);
    // Polling on both queues: TX chains used, an RX buffer filled, no signal.
    for q in [0, 1] {
        f.write(avail(q), &1u16.to_le_bytes());
    }
    while f.called(0, 0) || f.called(1, 0) {} // what setup's kicks may have brought
    f.set_desc(1, 0, 0x10000, 72, 0, 0);
    f.offer(1, 0, 1);
    assert!(f.wait_used(1, 1), "the TX chain is used:\n{}", d.log());
    f.set_desc(0, 0, 0x20000, 2048, F_WRITE, 0);
    f.offer(0, 0, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 2)]);
    assert!(f.wait_used(0, 1), "the RX buffer is filled:\n{}", d.log());
    assert!(
        !f.called(1, 200),
        "a polling driver's TX queue is not signalled"
    );
    assert!(!f.called(0, 0), "nor its RX queue");
    // Waiting for interrupts: each queue signalled for what it used.
    for q in [0, 1] {
        f.write(avail(q), &0u16.to_le_bytes());
    }
    f.offer(1, 0, 1);
    assert!(f.wait_used(1, 2));
    assert!(f.called(1, 2000), "TX used, TX signalled");
    f.offer(0, 0, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 3)]);
    assert!(f.wait_used(0, 2));
    assert!(f.called(0, 2000), "RX used, RX signalled");
    assert_eq!(host_counter(&d, "vale0:vm", "to_host"), 2);
    assert_eq!(host_counter(&d, "vale0:vm", "from_host"), 2);
}

/// A frontend that sets up one of a port's two pairs: valed writes nothing where the
/// other pair's queues lie before they are set up (guest address 0, here the first
/// pair's descriptor table), however often its forwarding thread sleeps and wakes
/// (waking, it turns the guest's notifications off: the used ring's flags, without
/// EVENT_IDX, at an unset queue's address 0).
#[test]
fn queues_a_frontend_never_set_up_are_not_written() {
    let _turn = turn();
    use hostile::*;
    let d = Daemon::start("vhost-unset", &[]);
    let r = d.open("vale0:r");
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    ctl_ok(
        &d,
        &["vhost-user", "vale0:vm", "--path", &sock, "--queues", "2"],
    );
    let mut f = Front::connect(&sock);
    f.setup();
    assert_eq!(desc(0), 0, "queue 0's descriptor table at guest address 0");
    f.set_desc(0, 0, 0x20000, 2048, F_WRITE, 0);
    let before = f.read(0, 16);
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&frame([0xff; 6], VM_MAC, 1));
    f.write(0x10000, &p);
    // Each TX chain a kick that wakes a sleeping forwarding thread.
    for i in 0..5u16 {
        std::thread::sleep(Duration::from_millis(100));
        f.set_desc(1, i, 0x10000, 72, 0, 0);
        f.offer(1, i, 1);
        assert!(f.wait_used(1, i + 1), "TX chain {i} used:\n{}", d.log());
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        f.read(0, 16),
        before,
        "queue 0's descriptor 0 as the guest wrote it"
    );
    // And it still takes the frame it describes, at the address it says.
    f.offer(0, 0, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 2)]);
    assert!(f.wait_used(0, 1), "the RX buffer is filled:\n{}", d.log());
    assert_eq!(f.read(0x20000 + 12, 60), frame(VM_MAC, R_MAC, 2));
    assert_eq!(host_counter(&d, "vale0:vm", "from_host"), 5);
}

/// A frontend that replaces its memory table while frames are on their way (two regions
/// of the same bytes now, as a VM that hot-plugs memory): valed follows the new table,
/// and a TX frame and an RX buffer that span the two regions' border go through whole.
#[test]
fn a_frontend_that_moves_its_memory_table_under_traffic_is_followed_across_regions() {
    let _turn = turn();
    use hostile::*;
    let mut d = Daemon::start("vhost-memmove", &[]);
    let r = d.open("vale0:r");
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let o = d.ctl(&["vhost-user", "vale0:vm", "--path", &sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut f = Front::connect(&sock);
    f.setup();
    let pkt = |tag: u32| {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&frame([0xff; 6], VM_MAC, tag));
        p
    };
    // The frames r received, each matched whole against the frame of its tag.
    let tags = |r: &vale::Port| -> Vec<u32> {
        drain(r, 1.0)
            .iter()
            .filter(|g| g.len() >= 18)
            .map(|g| {
                let tag = u32::from_be_bytes(g[14..18].try_into().unwrap());
                assert_eq!(g, &frame([0xff; 6], VM_MAC, tag), "frame {tag} whole");
                tag
            })
            .collect()
    };
    let border = MEM / 2;
    // Frame 1 offered, then the table replaced before valed may have read it, then
    // frame 2 across the new border.
    f.write(0x10000, &pkt(1));
    f.set_desc(1, 0, 0x10000, 72, 0, 0);
    f.offer(1, 0, 1);
    assert!(f.mem_table_split(border));
    f.write(border - 30, &pkt(2));
    f.set_desc(1, 1, border - 30, 72, 0, 0);
    f.offer(1, 1, 1);
    assert!(f.wait_used(1, 2), "both TX chains used:\n{}", d.log());
    let mut got = tags(&r);
    got.sort();
    assert_eq!(got, [1, 2], "both frames crossed whole");
    // A chain of two descriptors, the second across the border, on the same table.
    f.write(border - 100, &pkt(3)[..12]);
    f.write(border - 10, &pkt(3)[12..]);
    f.set_desc(1, 2, border - 100, 12, F_NEXT, 3);
    f.set_desc(1, 3, border - 10, 60, 0, 0);
    f.offer(1, 2, 1);
    assert!(f.wait_used(1, 3));
    assert_eq!(tags(&r), [3]);
    // An RX buffer across the border gets the frame r sends to the VM.
    f.set_desc(0, 0, border - 20, 2048, F_WRITE, 0);
    f.offer(0, 0, 1);
    send(&r, &[frame(VM_MAC, R_MAC, 9)]);
    assert!(f.wait_used(0, 1), "the RX buffer is filled:\n{}", d.log());
    assert_eq!(f.used_entry(0, 0), (0, 72));
    let b = f.read(border - 20, 72);
    assert_eq!(&b[10..12], &1u16.to_le_bytes(), "num_buffers");
    assert_eq!(
        &b[12..],
        &frame(VM_MAC, R_MAC, 9)[..],
        "the frame whole, across the border"
    );
    for key in ["read_errors", "write_errors", "truncated"] {
        assert_eq!(host_counter(&d, "vale0:vm", key), 0, "{key}");
    }
    assert_eq!(host_counter(&d, "vale0:vm", "to_host"), 1);
    assert!(d.alive(), "valed survived:\n{}", d.log());
}

#[test]
fn guest_memory_that_cannot_be_sealed_is_refused_with_a_clear_error() {
    let _turn = turn();
    use hostile::*;
    let mut d = Daemon::start("vhost-unsealed", &[]);
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let o = d.ctl(&["vhost-user", "vale0:vm", "--path", &sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = d.open("vale0:r");

    // DPDK's kind of memory: a memfd made without MFD_ALLOW_SEALING.
    let mut f = Front::connect_with(&sock, rustix::fs::MemfdFlags::empty());
    f.get_features();
    f.send(SET_OWNER, &[], &[]);
    f.send(SET_FEATURES, &(1u64 << 32).to_le_bytes(), &[]);
    let reply = f.mem_table_replied();
    assert!(
        matches!(reply, Some(v) if v != 0),
        "a failure reply ({reply:?}):\n{}",
        d.log()
    );
    assert!(f.hung_up(5), "then the frontend is cut off");
    assert!(
        wait_for(10.0, || d
            .log()
            .contains("cannot be sealed against shrinking")),
        "valed says why:\n{}",
        d.log()
    );
    assert!(d.log().contains("--vhost-trust-unsealed"), "and what to do");
    assert_eq!(host_counter(&d, "vale0:vm", "read_errors"), 1);
    // valed sealed nothing it did not map: the frontend's file is as it was.
    assert!(rustix::fs::ftruncate(&f.mem, 4096).is_ok());

    // valed is up, and the port serves the next, sealable, frontend.
    let mut f = Front::connect(&sock);
    f.setup();
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&frame([0xff; 6], VM_MAC, 5));
    f.write(0x10000, &p);
    f.set_desc(1, 0, 0x10000, 72, 0, 0);
    f.offer(1, 0, 1);
    assert!(f.wait_used(1, 1), "served:\n{}", d.log());
    assert!(
        drain(&r, 2.0)
            .iter()
            .any(|g| g.len() == 60 && g[14..18] == 5u32.to_be_bytes()),
        "its frame crossed"
    );
    assert!(d.alive(), "valed survived:\n{}", d.log());
}

#[test]
fn sealable_guest_memory_cannot_be_shrunk_once_valed_took_it() {
    let _turn = turn();
    use hostile::*;
    use rustix::fs::SealFlags;
    let mut d = Daemon::start("vhost-sealed", &[]);
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let o = d.ctl(&["vhost-user", "vale0:vm", "--path", &sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut f = Front::connect(&sock);
    assert_eq!(
        rustix::fs::fcntl_get_seals(&f.mem).unwrap(),
        SealFlags::empty(),
        "the frontend's memfd starts unsealed"
    );
    f.setup();
    // The crate has mapped it once the rings are in place (GET_VRING_BASE answers).
    let base = f.stop(0);
    assert_eq!(base, 0);
    assert!(
        rustix::fs::fcntl_get_seals(&f.mem)
            .unwrap()
            .contains(SealFlags::SHRINK),
        "valed sealed it against shrinking"
    );
    assert_eq!(
        rustix::fs::ftruncate(&f.mem, 4096),
        Err(rustix::io::Errno::PERM),
        "the frontend can no longer truncate it"
    );
    // Growing is harmless, and still allowed.
    assert!(rustix::fs::ftruncate(&f.mem, 2 * MEM).is_ok());
    assert_eq!(host_counter(&d, "vale0:vm", "memory_faults"), 0);
    assert!(d.alive(), "valed survived:\n{}", d.log());
}

#[test]
fn a_trusted_frontend_that_truncates_its_memory_under_traffic_is_cut_off_and_counted() {
    let _turn = turn();
    use hostile::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
    let mut d = Daemon::start("vhost-truncate", &["--vhost-trust-unsealed"]);
    let settings = d.ctl_json(&["settings"]);
    assert_eq!(
        settings["settings"]["vhost_trust_unsealed"], "true",
        "{settings}"
    );
    let r = d.open("vale0:r");
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let o = d.ctl(&["vhost-user", "vale0:vm", "--path", &sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // r's address is learned before the bystanders open their ports: the VM's frames
    // to it are unicast, nothing floods to the bystanders.
    send(&r, &[frame([0xff; 6], R_MAC, 0)]);
    std::thread::sleep(Duration::from_millis(100));
    let (phase, received) = (Arc::new(AtomicU8::new(0)), Arc::new(AtomicU64::new(0)));
    let by = bystander_traffic(d.socket.clone(), phase.clone(), received.clone());
    assert!(
        wait_for(5.0, || received.load(Ordering::Acquire) > 0),
        "bystanders forward"
    );

    // Memory valed cannot seal, accepted (trusted), traffic both ways.
    let mut f = Front::connect_with(&sock, rustix::fs::MemfdFlags::empty());
    f.setup();
    assert!(
        wait_for(10.0, || d.log().contains("accepted (vhost_trust_unsealed)")),
        "{}",
        d.log()
    );
    let buf = 0x10000u64;
    for n in 0..50u16 {
        let mut p = vec![0u8; 12];
        p.extend_from_slice(&frame(R_MAC, VM_MAC, n as u32));
        f.write(buf, &p);
        f.set_desc(1, n % QSIZE, buf, 72, 0, 0);
        f.offer(1, n % QSIZE, 1);
        assert!(f.wait_used(1, n + 1), "frame {n} taken:\n{}", d.log());
    }
    assert!(wait_for(10.0, || host_counter(&d, "vale0:vm", "to_host")
        == 0
        && host_counter(&d, "vale0:vm", "from_host") == 50));
    let from_vm = drain(&r, 1.0).iter().filter(|g| g[6..12] == VM_MAC).count();
    assert_eq!(from_vm, 50, "the VM's frames crossed");
    // RX buffers posted, then the frontend cuts its memory to nothing and kicks: valed
    // next touches its rings past the file's end.
    for i in 0..4u16 {
        f.set_desc(0, i, buf + 0x1000 * (1 + i as u64), 2048, F_WRITE, 0);
        f.post(0, i, 1);
    }
    let t = std::time::Instant::now();
    rustix::fs::ftruncate(&f.mem, 0).unwrap();
    f.kick(0);
    f.kick(1);
    send(&r, &[frame(VM_MAC, R_MAC, 1), frame(VM_MAC, R_MAC, 2)]);
    assert!(
        wait_for(5.0, || host_counter(&d, "vale0:vm", "memory_faults") > 0),
        "the truncation is caught and counted:\n{}",
        d.log()
    );
    let caught = t.elapsed();
    assert!(f.hung_up(5), "the frontend is cut off:\n{}", d.log());
    let cut = t.elapsed();
    assert!(d.alive(), "no SIGBUS reached valed:\n{}", d.log());
    assert!(d.log().contains("truncated guest memory"), "{}", d.log());

    // The bystanders forwarded throughout, every frame by their own counts and the
    // daemon's (their learning frame included).
    let during = received.load(Ordering::Acquire);
    assert!(
        wait_for(10.0, || received.load(Ordering::Acquire) > during + 64),
        "bystanders keep forwarding after the fault"
    );
    phase.store(1, Ordering::Release);
    let (sent, got) = by.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(got, sent, "every bystander frame arrived");
    assert_eq!(d.counter_at("vale0:x", "tx_packets", sent + 1), sent + 1);
    assert_eq!(d.counter_at("vale0:y", "rx_packets", sent + 1), sent + 1);
    phase.store(2, Ordering::Release);
    eprintln!(
        "truncation: counted within {caught:?}, frontend cut off within {cut:?}; \
         bystanders {sent} sent, {got} received"
    );

    // valed lives on: the port serves a frontend with good memory.
    let mut f = Front::connect(&sock);
    f.setup();
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&frame([0xff; 6], VM_MAC, 99));
    f.write(buf, &p);
    f.set_desc(1, 0, buf, 72, 0, 0);
    f.offer(1, 0, 1);
    assert!(f.wait_used(1, 1), "the port serves again:\n{}", d.log());
    assert!(d.alive(), "valed survived:\n{}", d.log());
}
