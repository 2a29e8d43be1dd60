//! valed with real client processes (pkt-gen, vale-ctl) and library clients, each test
//! on its own daemon and socket.

mod common;
use common::*;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];
const BCAST: [u8; 6] = [0xff; 6];

fn received(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("Received "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in pkt-gen output:\n{out}"))
}

/// pkt-gen tx on vale0:a, pkt-gen rx on vale0:b, separate processes: every packet is
/// either received or counted as dropped.
/// The traffic tests measure drops: keep them from competing with each other for the
/// machine's two cores.
static TRAFFIC: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sender_receiver(n: u64, extra_tx: &[&str]) -> (u64, u64, u64) {
    let _one_at_a_time = TRAFFIC.lock().unwrap_or_else(|p| p.into_inner());
    let d = Daemon::start(&format!("pair{}", extra_tx.len()), &[]);
    // Hold a and b open so their counters outlive the pkt-gen processes. 4096 slots: 20
    // ms of slack at the paced rate if the receiver is descheduled on a busy machine.
    let _holder = d.open("vale0:b@conf:slots=4096");
    let _sender = d.open("vale0:a");
    let rx = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:b", "-f", "rx", "-W", "--duration", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let count = n.to_string();
    let tx = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:a", "-f", "tx", "-n", &count, "-l", "60"])
        .args(extra_tx)
        .output()
        .unwrap();
    assert!(
        tx.status.success(),
        "tx: {}",
        String::from_utf8_lossy(&tx.stderr)
    );
    assert!(
        stdout_of(&tx).contains(&format!("Sent {n} packets")),
        "{}",
        stdout_of(&tx)
    );
    let rx = rx.wait_with_output().unwrap();
    assert!(
        rx.status.success(),
        "rx: {}",
        String::from_utf8_lossy(&rx.stderr)
    );
    let got = received(&stdout_of(&rx));
    // pkt-gen's own counts against the daemon's: Sent = Received + drops.
    let st = d.assert_laws();
    assert_conserved(n, got, &st);
    let delivered = st.get("vale0:b", "rx_packets");
    let dropped = st.get("vale0:b", "ring_full");
    (got, delivered, dropped)
}

#[test]
fn ten_million_packets_are_received_or_counted() {
    let n = 10_000_000;
    let (got, delivered, dropped) = sender_receiver(n, &[]);
    assert_eq!(
        got, delivered,
        "the receiver read everything delivered to it"
    );
    assert_eq!(
        got + dropped,
        n,
        "received {got} + dropped {dropped} != sent {n}"
    );
}

#[test]
fn a_rate_the_receiver_follows_loses_nothing() {
    let n = 200_000;
    let (got, _, dropped) = sender_receiver(n, &["-R", "200000"]);
    assert_eq!((got, dropped), (n, 0));
}

#[test]
fn z_rewrites_every_frames_header_and_access_reads_every_byte() {
    let d = Daemon::start("touch", &[]);
    let b = d.open("vale0:b@conf:slots=4096");
    // 3000 frames: more than a ring (1024), so slots are reused and each use rewritten.
    let tx = d
        .cmd(PKT_GEN)
        .args([
            "-i",
            "vale0:a",
            "-f",
            "tx",
            "-z",
            "-n",
            "3000",
            "-s",
            "10.0.0.1:1000",
        ])
        .output()
        .unwrap();
    assert!(
        tx.status.success(),
        "{}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let got = drain(&b, 2.0);
    assert_eq!(got.len(), 3000);
    let port = |f: &Vec<u8>| u16::from_be_bytes([f[34], f[35]]);
    let wrong = (0..got.len()).find(|&i| port(&got[i]) != 1000 + i as u16);
    assert!(
        wrong.is_none(),
        "each frame carries the next source port: frame {wrong:?} has {:?}",
        wrong.map(|i| port(&got[i]))
    );
    assert!(
        got.iter().all(|f| f[36..] == got[0][36..]),
        "only the port changes"
    );

    // --access: the receiver's sum is over every byte of every frame it read.
    let rx = d
        .cmd(PKT_GEN)
        .args([
            "-i",
            "vale0:c",
            "-f",
            "rx",
            "--access",
            "-n",
            "50",
            "--duration",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let a = d.open("vale0:a");
    let t = Instant::now();
    while !d.ctl_json(&["stats"])["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "vale0:c")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pkt-gen rx did not open vale0:c"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let frames: Vec<Vec<u8>> = (0..50u32)
        .map(|i| {
            let mut f = frame(BCAST, A, i);
            f.resize(60 + i as usize * 17, 0);
            f[59..]
                .iter_mut()
                .enumerate()
                .for_each(|(k, x)| *x = k as u8 ^ i as u8);
            f
        })
        .collect();
    send(&a, &frames);
    let out = stdout_of(&rx.wait_with_output().unwrap());
    let want = frames.iter().fold(0u64, |acc, f| {
        f.chunks(8).fold(acc, |acc, c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            acc.wrapping_add(u64::from_le_bytes(w))
        })
    });
    assert!(
        out.contains(&format!("Sum of the bytes read: {want:#018x}")),
        "want {want:#018x}:\n{out}"
    );
}

#[test]
fn learning_through_the_daemon() {
    let d = Daemon::start("learn", &[]);
    let (a, b, c) = (d.open("vale0:a"), d.open("vale0:b"), d.open("vale0:c"));
    send(&c, &[frame(BCAST, C, 1)]);
    assert_eq!(drain(&a, 2.0).len(), 1);
    assert_eq!(drain(&b, 2.0).len(), 1);
    let unicast: Vec<_> = (0..100).map(|i| frame(C, A, 100 + i)).collect();
    send(&a, &unicast);
    assert_eq!(drain(&c, 2.0), unicast, "learned unicast reaches its port");
    assert!(drain(&b, 0.3).is_empty(), "b must not see unicast to c");
    // Sent: 1 flood (2 copies) + 100 unicast; received: 2 + 100.
    assert_conserved(2 + 100, 102, &d.assert_laws());
    let fdb = d.ctl_json(&["fdb", "vale0"]);
    let rows = fdb["entries"].as_array().unwrap();
    let has = |mac: &str, port: &str| rows.iter().any(|r| r["mac"] == mac && r["port"] == port);
    assert!(
        has("02:00:00:00:00:0c", "vale0:c") && has("02:00:00:00:00:0a", "vale0:a"),
        "{fdb}"
    );
    let text = stdout_of(&d.ctl(&["fdb", "vale0"]));
    assert!(
        text.contains("02:00:00:00:00:0c") && text.contains("vale0:c"),
        "{text}"
    );
}

#[test]
fn two_switches_are_isolated() {
    let d = Daemon::start("iso", &[]);
    let (a0, b0) = (d.open("vale0:a"), d.open("vale0:b"));
    let (a1, b1) = (d.open("vale1:a"), d.open("vale1:b"));
    send(
        &a0,
        &(0..50).map(|i| frame(BCAST, A, i)).collect::<Vec<_>>(),
    );
    // The isolated side works among itself at the same time.
    send(
        &b1,
        &(0..30)
            .map(|i| frame(BCAST, B, 500 + i))
            .collect::<Vec<_>>(),
    );
    assert_eq!(drain(&b0, 2.0).len(), 50);
    let on_vale1 = drain(&a1, 2.0);
    assert_eq!(on_vale1.len(), 30, "vale1's own traffic reaches its ports");
    assert!(
        on_vale1.iter().all(|f| f[6..12] == B),
        "vale1 must not see vale0's traffic"
    );
    assert!(drain(&b1, 0.3).is_empty() && drain(&a0, 0.3).is_empty());
    assert_conserved(80, 80, &d.assert_laws());
    let list = stdout_of(&d.ctl(&[]));
    assert!(
        list.contains("vale0:a bridge_idx") && list.contains("vale1:a bridge_idx"),
        "{list}"
    );
}

#[test]
fn a_killed_client_is_reclaimed_and_others_keep_forwarding() {
    let mut d = Daemon::start("kill", &[]);
    let (a, b) = (d.open("vale0:a"), d.open("vale0:b"));
    send(&a, &[frame(BCAST, A, 0)]);
    drain(&b, 2.0);
    let mut victim = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:k", "-f", "tx", "-D", "02:00:00:00:00:0b"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(5.0, || d.ports().contains(&"vale0:k".to_string())));
    std::thread::sleep(Duration::from_millis(200)); // mid-traffic
    victim.kill().unwrap(); // SIGKILL
    let t = Instant::now();
    victim.wait().unwrap();
    // Promptly (a poll's hang-up, not a timeout of many seconds), even on a busy
    // machine where each look starts a vale-ctl.
    assert!(
        wait_for(5.0, || !d.ports().contains(&"vale0:k".to_string())),
        "port gone within 5 s"
    );
    assert!(t.elapsed() < Duration::from_secs(6));
    drain(&b, 0.5);
    let frames: Vec<_> = (0..100).map(|i| frame(B, A, i)).collect();
    send(&a, &frames);
    assert_eq!(drain(&b, 2.0), frames, "a and b still forward");
    assert!(d.alive());
}

#[test]
fn a_hundred_kills_leak_nothing() {
    let mut d = Daemon::start("leak", &[]);
    let _keep = d.open("vale0:keep");
    let warm = |d: &Daemon| {
        let mut c = d
            .cmd(PKT_GEN)
            .args(["-i", "vale0:v", "-f", "tx"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_for(5.0, || d.ports().contains(&"vale0:v".to_string())));
        c.kill().unwrap();
        c.wait().unwrap();
        assert!(wait_for(10.0, || !d
            .ports()
            .contains(&"vale0:v".to_string())));
    };
    for _ in 0..3 {
        warm(&d); // let allocators settle before the baseline
    }
    // vale-ctl's own connection may still be open for a moment: take the settled value.
    let settled_fds = |d: &Daemon| {
        std::thread::sleep(Duration::from_millis(200));
        (0..5).map(|_| d.fd_count()).min().unwrap_or(0)
    };
    let (fds0, rss0) = (settled_fds(&d), d.rss_kib());
    for _ in 0..100 {
        warm(&d);
    }
    // Client sockets are closed on valed's closer thread: wait for it to catch up.
    let back = wait_for(5.0, || d.fd_count() <= fds0);
    let fds1 = settled_fds(&d);
    let rss1 = d.rss_kib();
    assert!(
        back,
        "open descriptors back to baseline: {fds1}, were {fds0}"
    );
    assert!(
        rss1 <= rss0 + 4096,
        "RSS grew from {rss0} KiB to {rss1} KiB"
    );
    assert!(d.alive());
}

#[test]
fn bad_names_and_limits_get_clear_errors() {
    let d = Daemon::start("limits", &["--max-ports", "2", "--max-switches", "1"]);
    let try_open = |name: &str| {
        vale::Port::open_with(
            name,
            &vale::OpenOptions {
                socket: Some(d.socket.clone()),
                ..Default::default()
            },
        )
        .map(|_| ())
        .unwrap_err()
        .to_string()
    };
    let e = try_open("vale0:abcdefghijklmnop");
    assert!(
        e.contains("22 characters") && e.contains("limit is 15"),
        "{e}"
    );
    assert!(try_open("eth0").contains("does not start with `vale`"));
    assert!(try_open("vale.a:0").contains("'.' at position 4"));
    let _p1 = d.open("vale0:a");
    let _p2 = d.open("vale0:b");
    let e = try_open("vale0:c");
    assert!(e.contains("2 ports"), "{e}");
    let e = try_open("vale1:a");
    assert!(
        e.contains("1 switches") && e.contains("--max-switches"),
        "{e}"
    );
    // pkt-gen reports the daemon's message and fails.
    let o = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:toolongportname", "-f", "rx"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("limit is 15"));
}

/// Protocol 2 opened regions with the sync words out of `sem[]`: a protocol-1 client
/// (which would look for them in `sem[]`) is refused before it gets a region, and the
/// `Opened` a current client gets names the layout.
#[test]
fn an_old_client_is_refused_and_opened_names_the_layout() {
    let d = Daemon::start("layoutver", &[]);
    let conn = vale::sock::connect(&d.socket).unwrap();
    let open = |version| vale::proto::Request::Open {
        version,
        name: "vale0:x".into(),
        geometry: Default::default(),
        exclusive: false,
    };
    let (r, fds) = vale::sock::call(&conn, &open(1)).unwrap();
    match r {
        vale::proto::Response::Error {
            kind: vale::proto::ErrorKind::Version,
            message,
        } => assert!(
            message.contains("protocol 1") && message.contains("speaks 3"),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(fds.is_empty(), "no region for a client of another layout");
    let (r, fds) = vale::sock::call(&conn, &open(vale::proto::VERSION)).unwrap();
    assert!(
        matches!(
            r,
            vale::proto::Response::Opened {
                layout_version: vale_abi::layout::LAYOUT_VERSION,
                ..
            }
        ),
        "{r:?}"
    );
    assert_eq!(fds.len(), vale::proto::OPEN_FDS);
}

#[test]
fn garbage_and_half_handshakes_leave_the_daemon_serving() {
    let mut d = Daemon::start("garbage", &[]);
    let conn = vale::sock::connect(&d.socket).unwrap();
    vale::sock::send(rustix::fd::AsFd::as_fd(&conn), b"\x00\xffnot json", &[]).unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = vale::sock::recv(rustix::fd::AsFd::as_fd(&conn), &mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        reply.contains("bad_request") && reply.contains("malformed request"),
        "{reply}"
    );
    // An unknown request, a wrong version, a second open on one connection.
    let (r, _) = vale::sock::call(
        &conn,
        &vale::proto::Request::Open {
            version: 99,
            name: "vale0:x".into(),
            geometry: Default::default(),
            exclusive: false,
        },
    )
    .unwrap();
    assert!(
        matches!(
            r,
            vale::proto::Response::Error {
                kind: vale::proto::ErrorKind::Version,
                ..
            }
        ),
        "{r:?}"
    );
    drop(conn);
    // A client that asks to open and hangs up before reading the answer.
    for _ in 0..20 {
        let c = vale::sock::connect(&d.socket).unwrap();
        let req = serde_json::to_vec(&vale::proto::Request::Open {
            version: vale::proto::VERSION,
            name: "vale0:h".into(),
            geometry: Default::default(),
            exclusive: false,
        })
        .unwrap();
        vale::sock::send(rustix::fd::AsFd::as_fd(&c), &req, &[]).unwrap();
        drop(c);
        let c2 = vale::sock::connect(&d.socket).unwrap();
        drop(c2); // connect and close without a word
    }
    assert!(
        wait_for(10.0, || !d.ports().contains(&"vale0:h".to_string())),
        "half-opened port reclaimed"
    );
    let (a, b) = (d.open("vale0:a"), d.open("vale0:b"));
    send(&a, &[frame(BCAST, A, 7)]);
    assert_eq!(drain(&b, 2.0).len(), 1);
    assert!(d.alive());
    let o = d.ctl(&["set", "bridge_batch", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("between 1 and 8192"));
    assert!(d.ctl(&["set", "bridge_batch", "64"]).status.success());
    assert!(stdout_of(&d.ctl(&["list"])).contains("bridge_batch 64"));
}

#[test]
fn ping_pong_reports_rtt() {
    let d = Daemon::start("ping", &[]);
    let pong = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:pong", "-f", "pong", "--duration", "30"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut pong = scopeguard(pong);
    assert!(wait_for(5.0, || d
        .ports()
        .contains(&"vale0:pong".to_string())));
    let o = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:ping", "-f", "ping", "-n", "200"])
        .output()
        .unwrap();
    let out = stdout_of(&o);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("RTT over 200 packets") || out.contains("RTT over 19"),
        "{out}"
    );
    assert!(out.contains("p50") && out.contains("p99"), "{out}");
    let _ = pong.0.kill();
}

struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(c: std::process::Child) -> Guard {
    Guard(c)
}

#[test]
fn shutdown_on_sigterm_tells_clients() {
    let mut d = Daemon::start("term", &[]);
    let p = d.open("vale0:a");
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(d.pid().to_string())
        .status();
    assert!(wait_for(5.0, || !d.alive()), "valed exits on SIGTERM");
    let e = p
        .poll(vale::Interest::RX, Some(Duration::from_secs(2)))
        .unwrap_err();
    assert!(e.should_reconnect(), "{e}");
    assert!(!d.socket.exists(), "socket removed");
}

#[test]
fn no_daemon_means_a_clear_error() {
    let o = std::process::Command::new(VALE_CTL)
        .env("VALE_SOCKET", "/nonexistent/vale.sock")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Start it with `valed`"));
    let o = std::process::Command::new(VALE_CTL)
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

/// The CPUs in the affinity list of each forwarding thread of `pid` (`Cpus_allowed_list`).
fn fwd_cpus(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.starts_with("vale-fwd") {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap();
            let l = status.lines().find(|l| l.starts_with("Cpus_allowed_list:"));
            out.push(l.unwrap().split_whitespace().nth(1).unwrap().to_string());
        }
    }
    out
}

#[test]
fn cpus_auto_pins_the_forwarding_thread_while_busy() {
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if ncpu < 2 {
        return skip("one CPU: valed leaves its forwarding thread unpinned");
    }
    let last = {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let l = s
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .unwrap();
        let list = l.split_whitespace().nth(1).unwrap().to_string();
        list.rsplit([',', '-']).next().unwrap().to_string()
    };
    let unpinned = |c: &Vec<String>| c.iter().all(|c| c.contains('-') || c.contains(','));
    let d = Daemon::start("autopin", &["--cpus", "auto"]);
    let settings = stdout_of(&d.ctl(&["settings"]));
    assert!(
        settings.lines().any(|l| l == format!("cpus = {last}")),
        "{settings}"
    );
    assert!(wait_for(5.0, || fwd_cpus(d.pid()).len() == 1));
    assert!(unpinned(&fwd_cpus(d.pid())), "idle: not pinned");
    // A steady stream (pkt-gen's full rate, well over 1 Mpps even in a debug build of
    // valed here) moves it to the last CPU; when the stream stops it goes back.
    let mut rx = d.cmd(PKT_GEN);
    let mut rx = rx
        .args(["-i", "vale0:r", "-f", "rx", "--duration", "9"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(5.0, || d.ports().iter().any(|p| p == "vale0:r")));
    let mut tx = d.cmd(PKT_GEN);
    let mut tx = tx
        .args(["-i", "vale0:s", "-f", "tx", "--duration", "5"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Any time in the sender's 5 s (the busy test binaries beside it slow both down).
    let pinned = wait_for(5.0, || fwd_cpus(d.pid()) == vec![last.clone()]);
    let fwd = d.counter("vale0:s", "forwarded");
    let _ = tx.wait();
    let back = wait_for(10.0, || unpinned(&fwd_cpus(d.pid())));
    let _ = rx.kill();
    let _ = rx.wait();
    assert!(
        pinned,
        "busy: pinned to CPU {last} ({fwd} frames forwarded)"
    );
    assert!(back, "the stream stopped: unpinned again");
    drop(d);
    // As many threads as CPUs: nothing to spare, nothing pinned, nothing shown.
    let all = format!("{ncpu}");
    let d = Daemon::start("autopin-all", &["--cpus", "auto", "--threads", &all]);
    // valed listens before its forwarding threads have named themselves.
    assert!(wait_for(5.0, || fwd_cpus(d.pid()).len() == ncpu));
    let got = fwd_cpus(d.pid());
    assert!(unpinned(&got), "{got:?}");
    drop(d);
    let d = Daemon::start("nopin", &[]);
    assert!(wait_for(5.0, || fwd_cpus(d.pid()).len() == 1));
    assert!(unpinned(&fwd_cpus(d.pid())), "--no-pin");
    let settings = stdout_of(&d.ctl(&["settings"]));
    assert!(settings.lines().any(|l| l == "cpus = none"), "{settings}");
}

#[test]
fn several_forwarding_threads_each_own_switches() {
    let d = Daemon::start(
        "threads",
        &[
            "--threads",
            "2",
            "--socket-group",
            "0",
            "--socket-mode",
            "0600",
            "--cpus",
            "0",
        ],
    );
    let settings = stdout_of(&d.ctl(&["settings"]));
    assert!(
        settings.contains("threads = 2")
            && settings.contains("socket_mode = 0600")
            && settings.contains("cpus = 0"),
        "{settings}"
    );
    // Both forwarding threads are pinned to CPU 0 (the list wraps around), once they
    // have named themselves (valed listens before that).
    assert!(wait_for(5.0, || fwd_cpus(d.pid()).len() == 2));
    let tasks = format!("/proc/{}/task", d.pid());
    let mut pinned = 0;
    for t in std::fs::read_dir(&tasks).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.starts_with("vale-fwd") {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap();
            assert!(
                status.contains("Cpus_allowed_list:\t0\n"),
                "{comm}: {status}"
            );
            pinned += 1;
        }
    }
    assert_eq!(pinned, 2, "two forwarding threads");
    let meta = std::fs::metadata(&d.socket).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!((meta.gid(), meta.permissions().mode() & 0o777), (0, 0o600));
    let ports: Vec<_> = [
        "vale0:a", "vale0:b", "vale1:a", "vale1:b", "vale2:a", "vale2:b",
    ]
    .iter()
    .map(|n| d.open(n))
    .collect();
    for (k, pair) in ports.chunks(2).enumerate() {
        let frames: Vec<_> = (0..300)
            .map(|i| frame(BCAST, A, (k * 1000 + i) as u32))
            .collect();
        send(&pair[0], &frames);
        assert_eq!(
            drain(&pair[1], 2.0),
            frames,
            "switch {k} forwards on its thread"
        );
    }
    for pair in ports.chunks(2) {
        assert!(
            drain(&pair[0], 0.2).is_empty(),
            "no traffic crosses switches"
        );
    }
    assert_conserved(900, 900, &d.assert_laws());
    let list = d.ctl_json(&["list"]);
    let mut idx: Vec<u64> = list["switches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["index"].as_u64().unwrap())
        .collect();
    idx.dedup();
    assert_eq!(idx.len(), 3, "bridge_idx unique across threads: {list}");
    let o = d
        .cmd(VALED)
        .args(["--threads", "0", "--socket", "/tmp/x.sock"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("threads 0 is out of range"));
    for (bad, msg) in [("1000", "not available"), ("2-1", "not like")] {
        let o = d
            .cmd(VALED)
            .args(["--cpus", bad, "--socket", "/tmp/x.sock"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains(msg), "{bad}");
    }
}

/// Records of a classic pcap file: (orig_len, bytes).
fn pcap_records(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert!(bytes.len() >= 24, "pcap header");
    assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1], "pcap magic");
    let mut out = Vec::new();
    let mut o = 24;
    while o + 16 <= bytes.len() {
        let incl = u32::from_le_bytes(bytes[o + 8..o + 12].try_into().unwrap()) as usize;
        out.push(bytes[o + 16..o + 16 + incl].to_vec());
        o += 16 + incl;
    }
    out
}

fn wait_port(d: &Daemon, name: &str) {
    assert!(
        wait_for(5.0, || d.ports().iter().any(|p| p == name)),
        "{name} never appeared: {:?}",
        d.ports()
    );
}

#[test]
fn capture_writes_pcap_of_what_a_port_sends_and_receives() {
    let d = Daemon::start("capture", &[]);
    let a = d.open("vale0:a");
    let b = d.open("vale0:b");
    let c = d.open("vale0:c");
    // b announces itself, so a's frames to b are unicast and c sees none of them.
    send(&b, &[frame(BCAST, B, 0)]);
    let announced = drain(&a, 5.0).len() + drain(&c, 5.0).len();
    let file = d.dir.join("b.pcap");
    let cap = d
        .cmd(VALE_CTL)
        .args([
            "capture",
            "vale0:b",
            "--dir",
            "rx",
            "-c",
            "5",
            "-w",
            path_str(&file),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_port(&d, "vale0:b/r");
    let frames: Vec<_> = (1..=5).map(|i| frame(B, A, i)).collect();
    send(&a, &frames);
    let out = cap.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("5 packets captured on vale0:b; 0 dropped"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let captured = pcap_records(&std::fs::read(&file).unwrap());
    assert_eq!(captured, frames);
    let at_b = drain(&b, 1.0);
    assert_eq!(at_b, frames, "b itself still gets every frame");
    assert!(drain(&c, 0.2).is_empty());
    // The monitor went away with its reader.
    assert!(wait_for(10.0, || !d
        .ports()
        .iter()
        .any(|p| p.contains('/'))));
    // Sent: the announcement's 2 copies, 5 unicast frames and their 5 monitor copies;
    // received by a and c, b, and in the capture file (which reported 0 dropped).
    let received = announced + at_b.len() + captured.len();
    assert_conserved(2 + 5 + 5, received as u64, &d.assert_laws());

    // tx side of a, as text lines on stdout.
    let cap = d
        .cmd(VALE_CTL)
        .args(["capture", "vale0:a", "--dir", "tx", "-c", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_port(&d, "vale0:a/t");
    send(&a, &[frame(B, A, 7), frame(BCAST, A, 8)]);
    let out = cap.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("02:00:00:00:00:0a > 02:00:00:00:00:0b, ethertype 0x88b5, length 60"),
        "{text}"
    );
    assert!(text.contains("> ff:ff:ff:ff:ff:ff"), "{text}");

    // Bad monitor names and missing ports are refused with clear words.
    let o = d.ctl(&["capture", "vale0:nope", "-c", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no port `vale0:nope`"));
    let o = d.ctl(&["capture", "vale0:a", "--dir", "sideways"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("use rx, tx or both"));
}

#[test]
fn a_capture_that_falls_behind_drops_its_copies_not_the_switchs_frames() {
    let d = Daemon::start("capture-slow", &["--socket-mode", "0666"]);
    let a = d.open("vale0:a");
    let b = d.open("vale0:b");
    // A monitor nobody reads (its ring fills up), opened through the library.
    let mon = d.open("vale0:b/r");
    send(&b, &[frame(BCAST, B, 0)]);
    let announced = drain(&a, 5.0).len() as u64;
    let frames: Vec<_> = (1..=3000).map(|i| frame(B, A, i)).collect();
    let mut got = Vec::new();
    for chunk in frames.chunks(500) {
        send(&a, chunk);
        got.extend(drain(&b, 1.0));
    }
    assert_eq!(got, frames, "the port itself loses nothing");
    // The monitor's counts are added after the pass that filled b's ring.
    d.counter_at("vale0:b/r", "ring_full", 3000 - 1023);
    let st = d.ctl_json(&["stats", "vale0:b/r"]);
    let c = &st["ports"][0]["counters"];
    assert_eq!(
        c["rx_packets"].as_u64().unwrap(),
        1023,
        "ring of 1024 slots: {c}"
    );
    assert_eq!(
        c["drops"]["ring_full"].as_u64().unwrap(),
        3000 - 1023,
        "{c}"
    );
    assert_eq!(d.counter("vale0:b", "ring_full"), 0);
    // Sent: 1 announcement, 3000 frames to b and as many copies to the monitor; the
    // monitor's reader finally reads what its ring kept.
    let read_late = drain(&mon, 1.0).len() as u64;
    assert_conserved(
        1 + 3000 + 3000,
        announced + 3000 + read_late,
        &d.assert_laws(),
    );
    let o = d.ctl(&["stats", "vale0:b/x"]);
    assert_eq!(o.status.code(), Some(1));
    let bad = vale::Port::open_with(
        "vale0:b/x",
        &vale::OpenOptions {
            socket: Some(d.socket.clone()),
            ..Default::default()
        },
    );
    assert!(bad.unwrap_err().to_string().contains("a monitor is PORT/t"));
    // Monitors see other clients' traffic: not for anyone the socket lets in.
    let root = rustix::process::geteuid().is_root();
    if !root {
        skip("the permission part needs root (to run a command as another uid)");
    }
    if root && have("setpriv", "util-linux", "the permission part") {
        let o = d
            .cmd("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", VALE_CTL])
            .args(["capture", "vale0:b", "-c", "1"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("only root or valed's own user"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn qemu_stream_and_dgram_ports_survive_hostile_peers() {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixDatagram, UnixStream};
    let d = Daemon::start("qemu-hostile", &[]);
    let rx = d.open("vale0:rx");
    let sock = d.dir.join("s.sock");
    let o = d.ctl(&["qemu-stream", "vale0:s", "--listen", path_str(&sock)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let host = |name: &str| d.host(name);
    // A peer that is not QEMU: an impossible length. valed hangs up and counts it.
    let mut bad = UnixStream::connect(&sock).unwrap();
    bad.write_all(&u32::MAX.to_be_bytes()).unwrap();
    bad.write_all(&[0u8; 64]).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 16];
    assert_eq!(
        bad.read(&mut b).unwrap_or(0),
        0,
        "valed closed the connection"
    );
    assert!(wait_for(10.0, || host("s")["counters"]["read_errors"] == 1));
    // A well-behaved peer on the same port: its frame (a broadcast) reaches vale0:rx,
    // split across writes as a stream may be.
    let mut good = UnixStream::connect(&sock).unwrap();
    let f = frame(BCAST, A, 42);
    let mut msg = (f.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&f);
    for chunk in msg.chunks(7) {
        good.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(drain(&rx, 2.0), vec![f.clone()]);
    // ...and what the switch sends it comes framed.
    send(&rx, &[frame(BCAST, B, 43)]);
    good.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut len = [0u8; 4];
    good.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    good.read_exact(&mut body).unwrap();
    assert_eq!(body, frame(BCAST, B, 43));
    // A packet larger than any frame QEMU takes (a netmap client may send 64 slots'
    // worth; QEMU would drop the connection): counted, not sent; the next one is.
    let mut huge = frame(BCAST, B, 45);
    huge.resize(100_000, 0);
    send(&rx, &[huge, frame(BCAST, B, 46)]);
    good.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    good.read_exact(&mut body).unwrap();
    assert_eq!(body, frame(BCAST, B, 46));
    assert_eq!(host("s")["counters"]["truncated"], 1);

    // Datagram port: runts and garbage are counted drops, the port keeps working.
    let ours = d.dir.join("d.sock");
    let theirs = d.dir.join("q.sock");
    let q = UnixDatagram::bind(&theirs).unwrap();
    let o = d.ctl(&[
        "qemu-dgram",
        "vale0:d",
        "--bind",
        path_str(&ours),
        "--peer",
        path_str(&theirs),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for junk in [&[1u8][..], &[0u8; 13][..]] {
        q.send_to(junk, &ours).unwrap();
    }
    q.send_to(&frame(BCAST, C, 44), &ours).unwrap();
    let got = drain(&rx, 2.0);
    assert!(got.contains(&frame(BCAST, C, 44)), "{got:?}");
    assert!(wait_for(10.0, || d.counter("vale0:d", "runt") == 2));
    assert!(d.ports().contains(&"vale0:s".to_string()));
}

/// A QEMU stream port whose VM reads slowly: frames wait in valed (the socket is full)
/// while the switch goes quiet; as soon as the VM reads, they follow without a pause.
/// valed once waited for other traffic or its 1-second idle timer after each socket
/// buffer's worth.
#[test]
fn a_stream_port_with_a_slow_reader_resumes_when_it_reads() {
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    let d = Daemon::start("qemu-slow", &[]);
    let sock = d.dir.join("s.sock");
    let o = d.ctl(&["qemu-stream", "vale0:s", "--listen", path_str(&sock)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut vm = UnixStream::connect(&sock).unwrap();
    assert!(wait_for(10.0, || d
        .ports()
        .contains(&"vale0:s".to_string())));
    let x = d.open("vale0:x");
    // 2000 frames of 1000 bytes (broadcasts: to the VM), far more than a socket holds.
    let frames: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| {
            let mut f = frame(BCAST, A, i);
            f.resize(1000, 0);
            f
        })
        .collect();
    for chunk in frames.chunks(200) {
        send(&x, chunk);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // the switch is idle now
    vm.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let (mut bytes, mut max_gap, mut last) = (0usize, Duration::ZERO, Instant::now());
    let mut b = vec![0u8; 1 << 16];
    while let Ok(n) = vm.read(&mut b) {
        if n == 0 {
            break;
        }
        max_gap = max_gap.max(last.elapsed());
        last = Instant::now();
        bytes += n;
    }
    eprintln!("largest pause while reading: {max_gap:?}");
    let sent = d.host("s")["counters"]["to_host"].as_u64().unwrap();
    assert!(sent > 1000, "valed framed {sent} frames for the VM");
    assert_eq!(bytes as u64, sent * 1004, "every frame valed sent arrived");
    // The fault this guards against paused for the idle timer's second; a busy test
    // machine may hold this reader off its CPU for a few hundred ms.
    assert!(
        max_gap < Duration::from_millis(700),
        "frames paused {max_gap:?} while the VM was reading"
    );
}

#[test]
fn pkt_gen_pins_itself_with_dash_a() {
    let d = Daemon::start("pin", &[]);
    let mut rx = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:p", "-f", "rx", "-a", "0", "--duration", "3"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(10.0, || d.ports().iter().any(|p| p == "vale0:p")));
    let status = std::fs::read_to_string(format!("/proc/{}/status", rx.id())).unwrap();
    assert!(status.contains("Cpus_allowed_list:\t0\n"), "{status}");
    let _ = rx.kill();
    let _ = rx.wait();
    let o = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:q", "-f", "rx", "-a", "100000", "-n", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("-a 100000"));
}

/// `qemu_dgram`, `qemu_stream` and `vhost_user` as older clients send them are the
/// `create` request under other names: they make the same ports.
#[test]
fn old_forms_of_the_create_request_still_make_ports() {
    let d = Daemon::start("oldforms", &[]);
    let dir = d.socket.parent().unwrap().to_path_buf();
    let conn = vale::sock::connect(&d.socket).unwrap();
    let raw = |j: String| {
        vale::sock::send(rustix::fd::AsFd::as_fd(&conn), j.as_bytes(), &[]).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = vale::sock::recv(rustix::fd::AsFd::as_fd(&conn), &mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let vs = dir.join("old-vhost.sock");
    let r = raw(format!(
        r#"{{"op":"vhost_user","port":"vale0:ov","socket":"{}"}}"#,
        vs.display()
    ));
    assert!(r.contains(r#""status":"done""#), "{r}");
    let qs = dir.join("old-stream.sock");
    let r = raw(format!(
        r#"{{"op":"qemu_stream","port":"vale0:os","listen":"{}"}}"#,
        qs.display()
    ));
    assert!(r.contains(r#""status":"done""#), "{r}");
    let list = d.ctl_json(&["list"]);
    let hosts = list["hosts"].as_array().unwrap();
    assert!(
        hosts
            .iter()
            .any(|h| h["kind"] == "vhost-user" && h["attached"] == "vale0:ov"),
        "{list}"
    );
    assert!(
        hosts
            .iter()
            .any(|h| h["kind"] == "qemu-stream" && h["waiting"] == "vale0:os"),
        "{list}"
    );
    assert!(vs.exists() && qs.exists(), "valed's sockets are there");
    // The same port again is refused whichever form asks.
    let r = raw(format!(
        r#"{{"op":"create","port":"vale0:ov","spec":{{"kind":"vhost-user","socket":"{}"}}}}"#,
        dir.join("other.sock").display()
    ));
    assert!(r.contains("exists"), "{r}");
    for p in ["vale0:ov", "vale0:os"] {
        let o = d.ctl(&["-d", p]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(!vs.exists() && !qs.exists(), "removed with their ports");
}

/// Two clients of one port each get their own notify eventfd: one draining its wake-ups
/// cannot take one meant for the other. With one eventfd shared by the port's clients,
/// the second client's wake-up here was gone (it then slept until its poll timed out).
#[test]
fn each_client_of_a_port_has_its_own_wake_up() {
    use rustix::event::{PollFd, PollFlags, poll};
    let d = Daemon::start("notify", &[]);
    let (x, y) = (d.open("vale0:n"), d.open("vale0:n"));
    let c = d.open("vale0:c");
    // Y is about to sleep for received frames: it asked for a kick and looked (nothing).
    y.rx_rings()[0].view().csb().app_arm_kick();
    send(&c, &[frame(BCAST, C, 1)]);
    let readable = |p: &vale::Port| {
        let fd = p.notify_fd();
        let mut f = [PollFd::new(&fd, PollFlags::IN)];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut f, Some(&now)).unwrap() == 1
    };
    assert!(wait_for(5.0, || readable(&y)), "the switch woke Y");
    // X wakes for its own reasons and drains its eventfd, as Port::poll does.
    let mut b = [0u8; 8];
    let _ = rustix::io::read(x.notify_fd(), &mut b);
    assert!(readable(&y), "X's drain took Y's wake-up");
    drop((x, y, c));
}

/// The addresses of [`learned_trio`]'s ports.
const TRIO: [[u8; 6]; 3] = [
    [2, 0, 0, 0, 0, 0xa],
    [2, 0, 0, 0, 0, 0xb],
    [2, 0, 0, 0, 0, 0xe],
];

/// Ports `vale0:a`, `b` and `h`, `b` and `h` learned by the switch at their [`TRIO`]
/// addresses.
fn learned_trio(d: &Daemon) -> (vale::Port, vale::Port, vale::Port) {
    let (a, b, h) = (d.open("vale0:a"), d.open("vale0:b"), d.open("vale0:h"));
    send(&b, &[frame(BCAST, TRIO[1], 0)]);
    send(&h, &[frame(BCAST, TRIO[2], 0)]);
    for p in [&a, &b, &h] {
        drain(p, 0.5);
    }
    (a, b, h)
}

/// A client shares its notify eventfd's file with valed: one that fills it to its limit
/// and clears O_NONBLOCK (the file's flag) made valed's next write of a wake-up wait,
/// and the switch with it (every port of the lane). valed puts the flag back first:
/// the bystanders forward, the control thread answers.
#[test]
fn a_client_that_fills_its_wake_up_eventfd_and_makes_it_blocking_holds_up_nothing() {
    let d = Daemon::start("notify-full", &[]);
    let (a, b, h) = learned_trio(&d);
    let [ma, mb, mh] = TRIO;
    let fd = h.notify_fd();
    rustix::io::write(fd, &(u64::MAX - 1).to_ne_bytes()).unwrap();
    rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::empty()).unwrap();
    // About to sleep for received frames: it asked for a kick.
    h.rx_rings()[0].view().csb().app_arm_kick();
    send(&a, &[frame(mh, ma, 1)]);
    std::thread::sleep(Duration::from_millis(200));
    let frames: Vec<_> = (0..100).map(|i| frame(mb, ma, 10 + i)).collect();
    send(&a, &frames);
    assert_eq!(
        drain(&b, 3.0).len(),
        100,
        "the bystanders forward:\n{}",
        d.log()
    );
    assert!(
        d.ctl(&["list"]).status.success(),
        "the control thread answers"
    );
    assert_eq!(drain(&h, 2.0).len(), 1, "the hostile client got its frame");
}

/// The same client racing valed: it clears O_NONBLOCK again and again, from a thread of
/// its own, so that some of valed's wake-up writes find it cleared between valed putting
/// it back and writing. Such a write waits a moment at most (a timer of the lane's
/// interrupts it), and the bystanders forward throughout.
#[test]
fn a_client_racing_to_make_its_full_wake_up_eventfd_blocking_holds_up_nothing() {
    let d = Daemon::start("notify-race", &[]);
    let (a, b, h) = learned_trio(&d);
    let [ma, mb, mh] = TRIO;
    rustix::io::write(h.notify_fd(), &(u64::MAX - 1).to_ne_bytes()).unwrap();
    let fd = rustix::io::fcntl_dupfd_cloexec(h.notify_fd(), 0).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let racer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && t.elapsed().as_secs() < 20 {
                let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::empty());
            }
        })
    };
    let mut got = 0;
    for i in 0..600 {
        // Asks for a wake-up each time, so that each frame for it is one more write;
        // takes what it got without reading its eventfd (which a poll would).
        h.rx_rings()[0].view().csb().app_arm_kick();
        send(&a, &[frame(mh, ma, i), frame(mb, ma, i)]);
        std::thread::sleep(Duration::from_millis(1));
        h.dispatch(0, |_| {});
        let _ = h.rxsync();
        got += b.dispatch(0, |_| {});
        let _ = b.rxsync();
    }
    got += drain(&b, 3.0).len();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    racer.join().unwrap();
    assert_eq!(got, 600, "the bystanders forward:\n{}", d.log());
    assert!(
        d.ctl(&["list"]).status.success(),
        "the control thread answers"
    );
}

/// A client that injects, publishes its TX ring once without a kick (the switch is
/// asleep and would not look) and exits still gets every frame delivered: the port's
/// last close forwards what its TX rings hold, as netmap forwards inside the sync.
#[test]
fn what_a_client_leaves_in_its_tx_ring_is_delivered_when_it_leaves() {
    let d = Daemon::start("leftover", &[]);
    let rx = d.open("vale0:r");
    let tx = d.open("vale0:t");
    // Let the forwarding thread go to sleep (busy-poll 200 us, then epoll).
    std::thread::sleep(Duration::from_millis(100));
    let n = 300u32;
    for i in 0..n {
        assert!(tx.inject(&frame(BCAST, A, i)));
    }
    // Head published, no kick sent: only the close can make the switch look.
    let _ = tx.tx_rings()[0].sync();
    drop(tx);
    // The receiver does nothing until the port is gone (its own syncs would kick).
    assert!(wait_for(5.0, || !d
        .ports()
        .contains(&"vale0:t".to_string())));
    let got = drain(&rx, 3.0);
    assert_eq!(
        got.len(),
        n as usize,
        "every frame left in the ring arrives"
    );
    let tags: Vec<u32> = got
        .iter()
        .map(|f| u32::from_be_bytes([f[14], f[15], f[16], f[17]]))
        .collect();
    assert_eq!(tags, (0..n).collect::<Vec<_>>(), "in order");
}

#[test]
fn a_big_port_is_faulted_in_beside_the_control_thread() {
    // 16 rings of 4096 slots each way with 8 KiB buffers: 1 GiB, which took about a
    // second to fault in before the answer, every other client waiting.
    let d = Daemon::start("bigport", &["--buf-size", "8192"]);
    let small = d.open("vale0:small");
    let big = d.open("vale0:big@conf:rings=16,slots=4096");
    // The answer came first: the buffers are still being faulted in, and meanwhile
    // another client is answered.
    // (The thread names itself when it first runs, which on a loaded machine may be
    // an instant after the answer: it is looked for a while.)
    let busy = || thread_ticks(d.pid(), "vale-fault-in").is_some();
    assert!(
        wait_for(5.0, busy),
        "the open returned before its buffers were faulted in"
    );
    // A client in this process (an exec of vale-ctl could take longer than the rest of
    // the fault-in on a loaded machine).
    let c = vale::sock::connect(&d.socket).unwrap();
    assert!(matches!(
        vale::sock::call(&c, &vale::proto::Request::Settings),
        Ok((vale::proto::Response::Settings { .. }, _))
    ));
    assert!(busy(), "a client was answered meanwhile");
    drop(c);
    // The port carries frames at once, and when it is done, as well.
    let frames: Vec<_> = (0..64).map(|i| frame(BCAST, A, i)).collect();
    send(&small, &frames);
    assert_eq!(drain(&big, 5.0), frames);
    assert!(wait_for(30.0, || !busy()), "the buffers were faulted in");
    send(&small, &frames);
    assert_eq!(drain(&big, 5.0), frames);
}

#[test]
fn clients_over_the_limit_are_turned_away_with_a_reason() {
    let mut d = Daemon::start("maxclients", &["--max-clients", "3"]);
    // Three clients, each served (so each is counted). The probe connections before
    // them (Start's, the vale-ctl below) may still count for a moment, until valed has
    // seen them go: try again until all three are served.
    assert!(wait_for(5.0, || d.ctl(&["list"]).status.success()));
    let three = || -> Result<Vec<_>, String> {
        (0..3)
            .map(|i| {
                let c = vale::sock::connect(&d.socket).map_err(|e| format!("{i}: {e}"))?;
                match vale::sock::call(&c, &vale::proto::Request::Settings) {
                    Ok((vale::proto::Response::Settings { .. }, _)) => Ok(c),
                    r => Err(format!("client {i}: {r:?}")),
                }
            })
            .collect()
    };
    let mut held = three();
    let t = std::time::Instant::now();
    while held.is_err() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        held = three();
    }
    let held = held.unwrap();
    let o = d.ctl(&["list"]);
    assert!(!o.status.success(), "a fourth client is refused");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--max-clients 3"),
        "the reason names the limit: {err}"
    );
    assert!(d.alive());
    drop(held);
    assert!(
        wait_for(5.0, || d.ctl(&["list"]).status.success()),
        "with the others gone, clients are served again"
    );
}

#[test]
fn running_out_of_descriptors_turns_clients_away_without_spinning() {
    if !have("prlimit", "util-linux", "the descriptor-limit test") {
        return;
    }
    // valed with 64 descriptors at most (it raises its soft limit to the hard one).
    let dir = std::env::temp_dir().join(format!("vale-test-{}-emfile", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("valed.sock");
    let log = std::fs::File::create(dir.join("valed.log")).unwrap();
    let mut child = Reaped(
        Command::new("prlimit")
            .args(["--nofile=64:64", VALED, "--socket"])
            .arg(&socket)
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(10.0, || vale::sock::connect(&socket).is_ok()));
    // A client served before the flood, which asks something during it.
    let early = vale::sock::connect(&socket).unwrap();
    rustix::net::sockopt::set_socket_timeout(
        &early,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(5)),
    )
    .unwrap();
    assert!(vale::sock::call(&early, &vale::proto::Request::Settings).is_ok());
    let mut held = Vec::new();
    for _ in 0..100 {
        match vale::sock::connect(&socket) {
            Ok(c) => held.push(c),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // Clients turned away for want of descriptors that send nothing and stay hold up
    // nobody: the control thread answers the early client meanwhile.
    assert!(
        vale::sock::call(&early, &vale::proto::Request::Settings).is_ok(),
        "the control thread is held by a client it turned away:\n{}",
        std::fs::read_to_string(dir.join("valed.log")).unwrap_or_default()
    );
    let cpu = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<String> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .map(String::from)
            .collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    };
    let c0 = cpu(child.0.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu(child.0.id()) - c0;
    assert!(
        used < 0.2,
        "valed used {used} CPU-seconds in one second with {} clients waiting",
        held.len()
    );
    let text = std::fs::read_to_string(dir.join("valed.log")).unwrap_or_default();
    assert!(text.contains("out of file descriptors"), "{text}");
    let warned = text.matches("out of file descriptors").count();
    assert!(
        warned <= 3,
        "the warning is rate-limited, said {warned} times"
    );
    drop(held);
    let ctl_ok = || {
        Command::new(VALE_CTL)
            .env("VALE_SOCKET", &socket)
            .arg("list")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        wait_for(5.0, ctl_ok),
        "served again once descriptors are free"
    );
    assert!(child.0.try_wait().unwrap().is_none(), "valed is still up");
    let _ = Command::new("kill").arg(child.0.id().to_string()).status();
    let _ = child.0.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// valed's open descriptors by number.
fn open_fds(pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// Opening a new port runs out of descriptors at each step in turn (valed's limit set
/// so that only `room` more fit: the region's memfd, the port's kick eventfd, the
/// hold's notify eventfd, the clones handed to the client): every failed open gives
/// back what it made, so valed's descriptors are what they were before.
#[test]
fn an_open_that_runs_out_of_descriptors_leaves_none_behind() {
    if !have("prlimit", "util-linux", "the descriptor-limit test") {
        return;
    }
    let d = Daemon::start("emfile-open", &[]);
    let pid = d.pid().to_string();
    // The switch stays (a port held), so each open makes only a port.
    let _keep = d.open("vale0:keep");
    let settled = || {
        let t = Instant::now();
        let mut last = open_fds(d.pid());
        while t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            let now = open_fds(d.pid());
            if now == last {
                return now;
            }
            last = now;
        }
        last
    };
    let base = settled();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let hard = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4).map(String::from))
        .unwrap();
    let mut failed = 0;
    for room in 1..=8 {
        // The lowest `room` free numbers are what valed may still open.
        let fds = settled();
        assert_eq!(fds, base, "after an open with room for {}", room - 1);
        let mut free = 0;
        let limit = (0u32..)
            .find(|n| {
                free += u32::from(!fds.contains(n));
                free == room
            })
            .unwrap()
            + 1;
        let set = |l: String| {
            let o = Command::new("prlimit")
                .args(["--pid", &pid, &format!("--nofile={l}:{hard}")])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        set(limit.to_string());
        let name = format!("vale0:p{room}");
        let r = vale::Port::open_with(
            &name,
            &vale::OpenOptions {
                socket: Some(d.socket.clone()),
                ..Default::default()
            },
        );
        set(hard.clone());
        match r {
            Err(e) => {
                failed += 1;
                eprintln!("room {room}: {e}");
            }
            Ok(p) => drop(p),
        }
    }
    assert!(failed >= 3, "the opens that ran out: {failed}");
    assert_eq!(settled(), base, "{}", d.log());
    assert!(d.ports().contains(&"vale0:keep".to_string()));
}

/// A daemon with `args` whose socket uid 65534 may reach (mode 0666, its directory
/// 0755), for the per-uid limit tests; None (with a SKIP) without root or setpriv.
fn open_to_nobody(tag: &str, args: &[&str]) -> Option<Daemon> {
    if !rustix::process::geteuid().is_root() {
        skip("the per-uid limit tests need root (to act as another uid)");
        return None;
    }
    if !have("setpriv", "util-linux", "the per-uid limit tests") {
        return None;
    }
    let d = Daemon::start(tag, &[args, &["--socket-mode", "0666"]].concat());
    let _ = std::fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    Some(d)
}

/// `pkt-gen -f rx` on `port` for `secs` seconds as uid 65534.
fn nobody_rx(d: &Daemon, port: &str, secs: &str) -> Command {
    let mut c = d.cmd("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", PKT_GEN])
        .args(["-i", port, "-f", "rx", "--duration", secs])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn one_uid_cannot_take_every_connection() {
    let Some(d) = open_to_nobody("peruid", &["--max-clients-per-uid", "2"]) else {
        return;
    };
    let as_nobody = |port: &str| nobody_rx(&d, port, "4");
    // Two receivers as uid 65534 hold a connection each; a third is refused.
    let mut a = as_nobody("vale0:a").spawn().unwrap();
    let mut b = as_nobody("vale0:b").spawn().unwrap();
    assert!(
        wait_for(5.0, || {
            let p = d.ports();
            p.contains(&"vale0:a".into()) && p.contains(&"vale0:b".into())
        }),
        "two clients of uid 65534 are served"
    );
    let third = as_nobody("vale0:c").output().unwrap();
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success(), "a third is refused");
    assert!(err.contains("--max-clients-per-uid 2"), "saying why: {err}");
    // Root is not held to it.
    assert!(d.ctl(&["list"]).status.success());
    let _ = Command::new("kill")
        .args([a.id().to_string(), b.id().to_string()])
        .status();
    let _ = (a.wait(), b.wait());
}

#[test]
fn one_uid_cannot_take_every_switch() {
    let Some(d) = open_to_nobody("peruid-sw", &["--max-switches-per-uid", "1"]) else {
        return;
    };
    let as_nobody = |port: &str, secs: &str| nobody_rx(&d, port, secs);
    // uid 65534 makes vale5 (its one switch) and holds a port there.
    let mut a = Reaped(as_nobody("vale5:a", "6").spawn().unwrap());
    assert!(
        wait_for(5.0, || d.ports().contains(&"vale5:a".into())),
        "{}",
        d.log()
    );
    // A second switch of its own is refused, saying why; another port on its switch
    // is not.
    let o = as_nobody("vale6:a", "1").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a second switch was made");
    assert!(
        err.contains("--max-switches-per-uid 1") && err.contains("vale5"),
        "saying why: {err}"
    );
    assert!(!d.ports().iter().any(|p| p.starts_with("vale6:")));
    let o = as_nobody("vale5:b", "1").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Root is not held to it, and a switch root made is open to the uid (it is not its
    // own).
    let r = d.open("vale6:r");
    let o = as_nobody("vale6:a", "1").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(r);
    let _ = Command::new("kill").arg(a.0.id().to_string()).status();
    let _ = a.0.wait();
    let o = d.ctl_json(&["settings"]);
    assert_eq!(o["settings"]["max_switches_per_uid"], "1", "{o}");
}

/// vale-ctl's answer to `args`, or None (the command killed) if none came in `secs`.
fn ctl_within(d: &Daemon, args: &[&str], secs: f64) -> Option<Output> {
    let mut c = d
        .cmd(VALE_CTL)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !wait_for(secs, || c.try_wait().unwrap().is_some()) {
        let _ = c.kill();
        let _ = c.wait();
        return None;
    }
    Some(c.wait_with_output().unwrap())
}

#[test]
fn a_peer_that_listens_but_never_accepts_holds_nothing_up() {
    use std::os::fd::AsFd;
    // A stopped VM: its socket listens (backlog 0: one connection may wait) and
    // nothing accepts. The queue full, connecting to it would block until it accepts.
    let d = Daemon::start("no-accept", &[]);
    let path = d.dir.join("stopped.sock");
    let l = rustix::net::socket(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::bind(&l, &rustix::net::SocketAddrUnix::new(&path).unwrap()).unwrap();
    rustix::net::listen(&l, 0).unwrap();
    let waiting = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let p = path_str(&path);
    for args in [
        vec!["qemu-stream", "vale0:q", "--connect", p],
        vec!["vhost-user", "vale0:v", "--path", p, "--client"],
    ] {
        let o = ctl_within(&d, &args, 10.0).expect("an answer, not a hang");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("does not accept"),
            "{args:?}: {err}"
        );
    }
    // With room for one: the port is made (that connection waits in the queue), its
    // thread's own connect finds the queue full and tries again, and the port is
    // removed at once.
    drop(waiting);
    let (_taken, _) = rustix::net::acceptfrom(l.as_fd()).unwrap();
    let o = ctl_within(
        &d,
        &["vhost-user", "vale0:v2", "--path", p, "--client"],
        10.0,
    )
    .expect("an answer");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(Duration::from_millis(300)); // its thread at its connect
    let o = ctl_within(&d, &["-d", "vale0:v2"], 10.0).expect("removed, not a hang");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ctl_within(&d, &["list"], 10.0).is_some_and(|o| o.status.success()));
    assert!(
        !d.ports().iter().any(|p| p.starts_with("vale0:")),
        "{:?}",
        d.ports()
    );
}

#[test]
fn a_file_where_a_socket_would_go_is_never_deleted() {
    let dir = std::env::temp_dir().join(format!("vale-precious-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for flag in ["--socket", "--metrics"] {
        let file = dir.join("precious.txt");
        std::fs::write(&file, "keep me").unwrap();
        let mut args = vec![flag.to_string(), path_str(&file).to_string()];
        if flag == "--metrics" {
            args.extend(["--socket".into(), path_str(&dir.join("v.sock")).to_string()]);
        }
        let mut c = Command::new(VALED)
            .args(&args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let refused = wait_for(10.0, || c.try_wait().unwrap().is_some());
        if !refused {
            let _ = c.kill();
        }
        let o = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            refused && !o.status.success(),
            "{flag}: valed started over a file"
        );
        assert!(err.contains("is not a socket"), "{flag}: {err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me", "{flag}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn frames_for_a_stream_port_whose_vm_hung_up_are_counted() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let d = Daemon::start("qemu-gone", &[]);
    let tx = d.open("vale0:tx");
    let sock = d.dir.join("s.sock");
    let o = d.ctl(&["qemu-stream", "vale0:s", "--listen", path_str(&sock)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A VM connects, gets a frame, and hangs up.
    let mut vm = UnixStream::connect(&sock).unwrap();
    let f = frame(BCAST, A, 1);
    let mut msg = (f.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&f);
    vm.write_all(&msg).unwrap(); // valed learns it is connected
    assert!(
        wait_for(5.0, || d.host("s")["counters"]["from_host"] == 1),
        "{}",
        d.host("s")
    );
    send(&tx, &[frame(BCAST, B, 2)]);
    vm.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut len = [0u8; 4];
    vm.read_exact(&mut len).unwrap();
    drop(vm);
    // valed sees the hang-up when it next polls the socket.
    std::thread::sleep(Duration::from_millis(300));
    // Frames the switch sends it now have nowhere to go: every one is counted (the
    // first as a failed write if valed had not yet seen the hang-up, on a busy machine).
    let frames: Vec<_> = (0..50).map(|i| frame(BCAST, B, 100 + i)).collect();
    send(&tx, &frames);
    let lost = || {
        let c = &d.host("s")["counters"];
        c["no_peer"].as_u64().unwrap_or(0) + c["write_errors"].as_u64().unwrap_or(0)
    };
    assert!(wait_for(5.0, || lost() == 50), "{}", d.host("s"));
    assert!(
        d.host("s")["counters"]["no_peer"].as_u64().unwrap_or(0) >= 49,
        "{}",
        d.host("s")
    );
    let stats = d.ctl(&["stats", "vale0:s"]);
    assert!(stats.status.success());
    // Sent: the VM's frame (to tx) and tx's 51 (to the VM); received: tx's and the one
    // the VM read; the other 50 are no_peer.
    let at_tx = drain(&tx, 1.0).len() as u64;
    assert_conserved(1 + 51, at_tx + 1, &d.assert_laws());
}

/// Raises this process's descriptor limit to its hard limit; false (with a SKIP) if that
/// is still under `need`.
fn enough_descriptors(need: u64, what: &str) -> bool {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
    let have = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if have < need {
        skip(&format!(
            "{what}: needs {need} descriptors, the hard limit is {have} (ulimit -Hn)"
        ));
        return false;
    }
    true
}

/// A switch as large as valed's limits allow by default in all (netmap's 8 switches of 254
/// ports, here on one switch with --max-ports 2032): `list`, `stats` and netmap's listing,
/// text and --json, name every port. (In one message, `list` stopped at ~1600 ports and
/// `stats` at ~500, and vale-ctl got EMSGSIZE.)
#[test]
fn list_and_stats_name_every_port_of_a_full_switch() {
    const PORTS: usize = 2032;
    if !enough_descriptors(PORTS as u64 * 4 + 256, "a switch of 2032 ports") {
        return;
    }
    let mut d = Daemon::start(
        "fullswitch",
        &[
            "--max-ports",
            "2032",
            "--max-clients",
            "4096",
            "--pipes",
            "0",
        ],
    );
    // Eight slots a ring: a port's region is a few pages.
    let names: Vec<String> = (0..PORTS).map(|i| format!("vale0:p{i}")).collect();
    let _held: Vec<vale::Port> = names
        .iter()
        .map(|n| d.open(&format!("{n}@conf:slots=8")))
        .collect();
    let over = vale::Port::open_with(
        "vale0:one_more@conf:slots=8",
        &vale::OpenOptions {
            socket: Some(d.socket.clone()),
            ..Default::default()
        },
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(over.contains("2032 ports"), "the switch is full: {over}");

    let list = d.ctl_json(&["list"]);
    let switches = list["switches"].as_array().unwrap();
    assert_eq!(switches.len(), 1, "one switch, reassembled from pages");
    let ports = switches[0]["ports"].as_array().unwrap();
    let listed: Vec<&str> = ports.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names, "every port once, in port order");
    assert!(
        ports
            .iter()
            .all(|p| p["clients"] == 1 && p["geometry"]["tx_slots"] == 8)
    );
    assert!(list.get("next").is_none(), "no paging left in the output");

    let text = stdout_of(&d.ctl(&["list"]));
    assert!(
        text.contains("(bridge_idx 0, bridge_batch 1024, 2032 ports)"),
        "{text:.300}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(" port_idx ")).count(),
        PORTS
    );
    let netmap = stdout_of(&d.ctl(&[]));
    assert_eq!(
        netmap.lines().count(),
        PORTS,
        "netmap's listing, a line a port"
    );
    assert!(netmap.ends_with("vale0:p2031 bridge_idx 0 port_idx 2031\n"));

    let stats = d.ctl_json(&["stats"]);
    let rows = stats["ports"].as_array().unwrap();
    let counted: Vec<&str> = rows.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(counted, names, "every port's counters once");
    assert!(
        rows.iter()
            .all(|p| p["counters"]["drops"]["ring_full"] == 0)
    );
    let text = d.ctl(&["stats"]);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = stdout_of(&text);
    assert_eq!(
        text.lines().filter(|l| l.contains("(port_idx ")).count(),
        PORTS
    );
    let one = d.ctl_json(&["stats", "vale0:p2031"]);
    assert_eq!(one["ports"].as_array().unwrap().len(), 1);

    // A client of protocol 2 asks without pages: a reply that does not fit in one
    // message is refused, saying why; one asking for a page of another version is told
    // both versions.
    let conn = vale::sock::connect(&d.socket).unwrap();
    let mut buf = vec![0u8; vale::proto::MAX_MSG];
    let mut ask = |req: &str| {
        vale::sock::send(rustix::fd::AsFd::as_fd(&conn), req.as_bytes(), &[]).unwrap();
        let (n, _) = vale::sock::recv(rustix::fd::AsFd::as_fd(&conn), &mut buf).unwrap();
        match serde_json::from_slice(&buf[..n]).unwrap() {
            vale::proto::Response::Error {
                kind: vale::proto::ErrorKind::Version,
                message,
            } => message,
            other => panic!("{req}: {other:?}"),
        }
    };
    for (req, what) in [(r#"{"op":"list"}"#, "list"), (r#"{"op":"stats"}"#, "stats")] {
        let e = ask(req);
        assert!(
            e.starts_with(&format!("the {what} does not fit in one message"))
                && e.contains("(control protocol 2) cannot read it in pages"),
            "{e}"
        );
    }
    let e = ask(r#"{"op":"list","page":{"version":2}}"#);
    assert!(e.contains("protocol 2, valed speaks 3"), "{e}");
    assert!(d.alive());
}

/// A client that sends requests and reads no reply: valed keeps the one reply its socket
/// has no room for, reads no more of its requests meanwhile, and serves everyone else;
/// when the client reads, every reply comes, in order. (valed used to hang up on it.)
#[test]
fn a_client_that_does_not_read_waits_alone_for_its_replies() {
    use vale::proto::{Request, Response};
    const PORTS: usize = 200;
    let mut d = Daemon::start("noread", &["--pipes", "0"]);
    let _held: Vec<vale::Port> = (0..PORTS)
        .map(|i| d.open(&format!("vale0:p{i}@conf:slots=8")))
        .collect();
    let conn = vale::sock::connect(&d.socket).unwrap();
    let fd = rustix::fd::AsFd::as_fd(&conn);
    rustix::net::sockopt::set_socket_timeout(
        fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(10)),
    )
    .unwrap();
    // Each reply is ~30 KB: the socket holds a few, the rest wait.
    let list = Request::List { page: None }.paged(None).unwrap();
    let req = serde_json::to_vec(&list).unwrap();
    let mut sent = 0;
    while sent < 64 {
        match rustix::net::send(fd, &req, rustix::net::SendFlags::DONTWAIT) {
            Ok(_) => sent += 1,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        wait_for(5.0, || d.log().contains("client is not reading")),
        "the socket filled: {}",
        d.log()
    );
    let t = Instant::now();
    let o = d.ctl(&["--json", "stats"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(t.elapsed() < Duration::from_secs(5), "others are served");
    let mut buf = vec![0u8; vale::proto::MAX_MSG];
    for i in 0..sent {
        let (n, _) = vale::sock::recv(fd, &mut buf).unwrap_or_else(|e| panic!("reply {i}: {e}"));
        assert!(n > 0, "valed hung up after {i} of {sent} replies");
        match serde_json::from_slice(&buf[..n]).unwrap() {
            Response::List {
                switches,
                next: None,
                ..
            } => assert_eq!(switches[0].ports.len(), PORTS, "reply {i}"),
            other => panic!("reply {i}: {other:?}"),
        }
    }
    let (r, _) = vale::sock::call(&conn, &Request::Settings).unwrap();
    assert!(matches!(r, Response::Settings { .. }), "{r:?}");
    let one = vale::sock::call(&conn, &Request::List { page: None })
        .unwrap()
        .0;
    assert!(matches!(one, Response::List { .. }));
    // A protocol-2 request (no pages) whose reply fits in one message gets it whole.
    vale::sock::send(fd, br#"{"op":"list"}"#, &[]).unwrap();
    let (n, _) = vale::sock::recv(fd, &mut buf).unwrap();
    match serde_json::from_slice(&buf[..n]).unwrap() {
        Response::List {
            switches,
            next: None,
            ..
        } => assert_eq!(switches[0].ports.len(), PORTS, "whole, in one message"),
        other => panic!("{other:?}"),
    }
    assert!(d.alive());
}

/// A learning table filled to its capacity (8192 entries by default: new sources until
/// every bucket is full, the rest refused) is dumped whole by `vale-ctl fdb`, text and
/// --json. (One message held ~2800 rows.)
#[test]
fn fdb_lists_every_address_of_a_full_table() {
    const CAPACITY: usize = 8192;
    const CHUNK: u32 = CAPACITY as u32;
    let d = Daemon::start("fullfdb", &[]);
    let (a, _b) = (d.open("vale0:a"), d.open("vale0:b@conf:slots=64"));
    let mac = |i: u32| {
        [
            2,
            0,
            (i >> 24) as u8,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        ]
    };
    // (entries, sources looked at)
    let counters = |v: &serde_json::Value| {
        let c = &v["counters"];
        (
            c["entries"].as_u64().unwrap(),
            c["learned"].as_u64().unwrap() + c["refused"].as_u64().unwrap(),
        )
    };
    // The buckets are seeded at random: four times the capacity fills nearly all, a
    // few more sources the last few slots.
    let mut sent = 0;
    while sent < 64 * CHUNK {
        let frames: Vec<_> = (sent..sent + CHUNK)
            .map(|i| frame(BCAST, mac(i), i))
            .collect();
        for f in frames.chunks(512) {
            send(&a, f);
        }
        sent += CHUNK;
        let mut now = (0, 0);
        assert!(
            wait_for(20.0, || {
                now = counters(&d.ctl_json(&["fdb", "vale0"]));
                now.1 == sent as u64
            }),
            "every source was looked at: {now:?} of {sent}"
        );
        if now.0 == CAPACITY as u64 {
            break;
        }
    }
    let fdb = d.ctl_json(&["fdb", "vale0"]);
    assert_eq!(counters(&fdb).0, CAPACITY as u64, "every bucket full");
    let rows = fdb["entries"].as_array().unwrap();
    assert_eq!(rows.len(), CAPACITY, "every entry, reassembled from pages");
    let sent: std::collections::HashSet<String> = (0..sent)
        .map(|i| mac(i).map(|b| format!("{b:02x}")).join(":"))
        .collect();
    let macs: std::collections::HashSet<&str> =
        rows.iter().map(|r| r["mac"].as_str().unwrap()).collect();
    assert_eq!(macs.len(), CAPACITY, "each address once");
    assert!(
        macs.iter().all(|m| sent.contains(*m)),
        "only addresses sent"
    );
    assert!(rows.iter().all(|r| r["port"] == "vale0:a"));
    // Each page is one message within the page size.
    let conn = vale::sock::connect(&d.socket).unwrap();
    let first = br#"{"op":"fdb","switch":"vale0","page":{"version":3}}"#;
    vale::sock::send(rustix::fd::AsFd::as_fd(&conn), first, &[]).unwrap();
    let mut buf = vec![0u8; vale::proto::MAX_MSG];
    let (n, _) = vale::sock::recv(rustix::fd::AsFd::as_fd(&conn), &mut buf).unwrap();
    assert!(n <= vale::proto::PAGE_BYTES, "{n}");
    let page: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    let rows_in_page = page["entries"].as_array().unwrap().len();
    assert!(
        rows_in_page > 100 && rows_in_page < CAPACITY,
        "{rows_in_page}"
    );
    assert!(page["next"].is_string(), "more follow");
    let text = d.ctl(&["fdb", "vale0"]);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = stdout_of(&text);
    assert!(
        text.starts_with("vale0: 8192 learned addresses\n"),
        "{text:.200}"
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(" vale0:a ")).count(),
        CAPACITY
    );
}

/// A command as uid `uid` (its own gid; `groups` supplementary) through setpriv.
fn as_uid(d: &Daemon, uid: u32, groups: &[u32], bin: &str) -> Command {
    let mut c = d.cmd("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        let g: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        c.arg(format!("--groups={}", g.join(",")));
    }
    c.arg(bin);
    c
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_port_belongs_to_the_uid_that_created_it() {
    if !rustix::process::geteuid().is_root() {
        skip("the ownership test needs root (to act as other uids)");
        return;
    }
    if !have("setpriv", "util-linux", "the ownership test") {
        return;
    }
    let d = Daemon::start(
        "owner",
        &[
            "--socket-mode",
            "0666",
            "--share",
            "vale1",
            "--share",
            "vale2:4242",
        ],
    );
    let _ = std::fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let tx = |uid: u32, groups: &[u32], port: &str| {
        as_uid(&d, uid, groups, PKT_GEN)
            .args(["-i", port, "-f", "tx", "-n", "10", "-l", "60"])
            .output()
            .unwrap()
    };
    // Root's port: another uid may neither send from it nor read its traffic.
    let root_port = d.open("vale0:r");
    let o = tx(65534, &[], "vale0:r");
    assert!(!o.status.success(), "uid 65534 opened root's port");
    assert!(
        stderr_of(&o).contains("vale0:r belongs to uid 0")
            && stderr_of(&o).contains("--share vale0"),
        "saying why: {}",
        stderr_of(&o)
    );
    // A port uid 65534 creates is its own: it receives what root sends on the switch,
    // root may open it, and a third uid may not.
    let rx = as_uid(&d, 65534, &[], PKT_GEN)
        .args(["-i", "vale0:n", "-f", "rx", "-n", "100", "--duration", "10"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(5.0, || d.ports().contains(&"vale0:n".into())));
    let frames: Vec<_> = (0..100).map(|i| frame(BCAST, A, i)).collect();
    send(&root_port, &frames);
    let out = rx.wait_with_output().unwrap();
    assert!(
        stdout_of(&out).contains("Received 100 packets"),
        "the owner's receiver works: {}",
        stdout_of(&out)
    );
    let mut hold = as_uid(&d, 65534, &[], PKT_GEN)
        .args(["-i", "vale0:n", "-f", "rx", "--duration", "10"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(5.0, || d.ports().contains(&"vale0:n".into())));
    let o = tx(65533, &[], "vale0:n");
    assert!(!o.status.success(), "uid 65533 opened uid 65534's port");
    assert!(
        stderr_of(&o).contains("vale0:n belongs to uid 65534"),
        "{}",
        stderr_of(&o)
    );
    // Its owner may open it again (a sender beside its receiver), and so may root.
    let o = tx(65534, &[], "vale0:n");
    assert!(o.status.success(), "the owner: {}", stderr_of(&o));
    drop(d.open("vale0:n"));
    let _ = Command::new("kill").arg(hold.id().to_string()).status();
    let _ = hold.wait();
    // A shared switch: anyone the socket lets in opens anyone's port.
    let _shared = d.open("vale1:r");
    let o = tx(65534, &[], "vale1:r");
    assert!(o.status.success(), "vale1 is shared: {}", stderr_of(&o));
    // Shared with a group: its members only.
    let _grouped = d.open("vale2:r");
    let o = tx(65534, &[], "vale2:r");
    assert!(!o.status.success(), "uid 65534 is not in group 4242");
    assert!(
        stderr_of(&o).contains("belongs to uid 0"),
        "{}",
        stderr_of(&o)
    );
    let o = tx(65534, &[4242], "vale2:r");
    assert!(o.status.success(), "a member of 4242: {}", stderr_of(&o));
    // Run-time settings apply to everyone: root's to change.
    let o = as_uid(&d, 65534, &[], VALE_CTL)
        .args(["set", "bridge_batch", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr_of(&o).contains("only root or valed's own user may change them"),
        "{}",
        stderr_of(&o)
    );
    // So do VLAN settings (what each port may reach); showing them is anyone's.
    let o = as_uid(&d, 65534, &[], VALE_CTL)
        .args(["vlan", "vale0", "--filtering", "on"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr_of(&o).contains("VLAN settings decide what every port of a switch may reach: only root or valed's own user may change them"),
        "{}",
        stderr_of(&o)
    );
    let o = as_uid(&d, 65534, &[], VALE_CTL)
        .args(["vlan", "vale0"])
        .output()
        .unwrap();
    assert!(
        stdout_of(&o).contains("vale0: vlan_filtering off"),
        "{}",
        stderr_of(&o)
    );
    let batch = || stdout_of(&d.ctl(&["settings"]));
    assert!(batch().contains("bridge_batch = 1024"), "{}", batch());
    assert!(d.ctl(&["set", "bridge_batch", "512"]).status.success());
    assert!(batch().contains("bridge_batch = 512"), "{}", batch());
    drop(root_port);
}

#[test]
fn a_waiting_qemu_port_cannot_be_taken_by_a_client() {
    let d = Daemon::start("reserved", &[]);
    let sock = d.dir.join("q.sock");
    let o = d.ctl(&["qemu-stream", "vale0:q", "--listen", path_str(&sock)]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let Err(err) = vale::Port::open_with(
        "vale0:q",
        &vale::OpenOptions {
            socket: Some(d.socket.clone()),
            ..Default::default()
        },
    ) else {
        panic!("a client opened a port reserved for a VM");
    };
    assert!(
        err.to_string().contains("reserved for host port q"),
        "{err}"
    );
    // The VM still gets it: it connects and its frame reaches the switch.
    let rx = d.open("vale0:rx");
    let mut vm = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let f = frame(BCAST, A, 7);
    let mut msg = (f.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&f);
    std::io::Write::write_all(&mut vm, &msg).unwrap();
    let got = drain(&rx, 2.0);
    assert_eq!(got, vec![f]);
    assert!(d.host("q")["attached"] == "vale0:q", "{}", d.host("q"));
}

#[test]
fn a_connection_that_says_nothing_is_closed_after_the_handshake_timeout() {
    use std::io::Read;
    let d = Daemon::start("silent", &["--handshake-timeout-s", "1"]);
    let fd = vale::sock::connect(&d.socket).unwrap();
    rustix::net::sockopt::set_socket_timeout(
        &fd,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(5)),
    )
    .unwrap();
    let mut f = std::fs::File::from(fd);
    // A client that has spoken is not closed for being idle afterwards.
    let talker = d.open("vale0:a");
    let t0 = Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = f.read(&mut buf).unwrap_or(0);
    let took = t0.elapsed().as_secs_f64();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("--handshake-timeout-s"), "told why: {msg}");
    assert!((0.5..4.0).contains(&took), "closed after {took:.1} s");
    assert_eq!(f.read(&mut buf).unwrap_or(0), 0, "and closed");
    std::thread::sleep(Duration::from_millis(2500));
    send(&talker, &[frame(BCAST, A, 1)]);
    assert!(d.ports().contains(&"vale0:a".into()));
    assert!(wait_for(10.0, || d.counter("vale0:a", "tx_packets") == 1));
}

/// A uid other than root's and valed's own has a share of the ports and of their memory,
/// and may not watch other clients' traffic; root is held to the total only.
#[test]
fn a_uid_is_held_to_its_share_of_ports_and_memory_and_may_not_watch_others() {
    if !rustix::process::geteuid().is_root() {
        skip("the quota test needs root (to act as another uid)");
        return;
    }
    if !have("setpriv", "util-linux", "the quota test") {
        return;
    }
    let open_as = |d: &Daemon, uid: u32, port: &str| {
        as_uid(d, uid, &[], PKT_GEN)
            .args(["-i", port, "-f", "tx", "-n", "1", "-l", "60"])
            .output()
            .unwrap()
    };
    let hold_as = |d: &Daemon, uid: u32, port: &str| {
        let c = as_uid(d, uid, &[], PKT_GEN)
            .args(["-i", port, "-f", "rx", "--duration", "20"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let p = port.to_string();
        assert!(wait_for(5.0, || d.ports().contains(&p)), "{port} opened");
        c
    };
    let open_mode = |d: &Daemon| {
        let _ =
            std::fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    };

    // Ports per uid: two held, the third refused naming the limit; root is not counted.
    let d = Daemon::start(
        "quota",
        &["--socket-mode", "0666", "--max-ports-per-uid", "2"],
    );
    open_mode(&d);
    let mut held = vec![hold_as(&d, 65534, "vale0:a"), hold_as(&d, 65534, "vale0:b")];
    let o = open_as(&d, 65534, "vale0:c");
    assert!(!o.status.success(), "a third port for uid 65534");
    assert!(
        stderr_of(&o).contains("uid 65534 has 2 ports, its limit (--max-ports-per-uid 2)"),
        "{}",
        stderr_of(&o)
    );
    assert!(!d.ports().contains(&"vale0:c".into()));
    let o = open_as(&d, 0, "vale0:c");
    assert!(o.status.success(), "root: {}", stderr_of(&o));
    // Its own ports it may still open again, and a closed one gives its place back.
    let o = open_as(&d, 65534, "vale0:a");
    assert!(o.status.success(), "its own port: {}", stderr_of(&o));
    let mut first = held.remove(0);
    let _ = first.kill();
    let _ = first.wait();
    assert!(wait_for(5.0, || !d.ports().contains(&"vale0:a".into())));
    let o = open_as(&d, 65534, "vale0:c2");
    assert!(o.status.success(), "a freed place: {}", stderr_of(&o));
    // Monitors and captures are root's: they see other clients' traffic.
    let o = open_as(&d, 65534, "vale0:b/rt");
    assert!(!o.status.success(), "uid 65534 monitored a port");
    assert!(
        stderr_of(&o).contains("monitors see other clients' traffic"),
        "{}",
        stderr_of(&o)
    );
    let o = as_uid(&d, 65534, &[], "timeout")
        .args(["5", VALE_CTL, "capture", "vale0:b", "-c", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "uid 65534 captured a port");
    assert!(
        stderr_of(&o).contains("only root or valed's own user"),
        "{}",
        stderr_of(&o)
    );
    for mut c in held {
        let _ = c.kill();
        let _ = c.wait();
    }

    // Memory per uid: a port bigger than the uid's share is refused, root's is not.
    let d = Daemon::start(
        "quota-mem",
        &[
            "--socket-mode",
            "0666",
            "--max-port-memory-per-uid-mib",
            "1",
        ],
    );
    open_mode(&d);
    let o = open_as(&d, 65534, "vale0:big");
    assert!(!o.status.success(), "uid 65534 went over its memory");
    assert!(
        stderr_of(&o).contains("over its limit (--max-port-memory-per-uid-mib 1)"),
        "{}",
        stderr_of(&o)
    );
    let o = open_as(&d, 0, "vale0:big");
    assert!(o.status.success(), "root: {}", stderr_of(&o));

    // Memory in all: root too.
    let d = Daemon::start("quota-all", &["--max-port-memory-mib", "1"]);
    let o = open_as(&d, 0, "vale0:big");
    assert!(!o.status.success(), "root went over the total");
    assert!(
        stderr_of(&o).contains("over its limit (--max-port-memory-mib 1)"),
        "{}",
        stderr_of(&o)
    );
    assert!(d.ports().is_empty(), "{:?}", d.ports());
}

/// `--socket-group` and `--socket-mode` decide who may connect: checked as a real
/// second uid (root passes any permission, so a root client would prove nothing), both
/// the refusal and the access the group gives.
#[test]
fn the_socket_group_decides_who_may_connect() {
    if !rustix::process::geteuid().is_root() {
        skip("the socket-group test needs root (to act as another uid)");
        return;
    }
    if !have("setpriv", "util-linux", "the socket-group test") {
        return;
    }
    let d = Daemon::start(
        "sockgroup",
        &["--socket-group", "4243", "--socket-mode", "0660"],
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(
        (meta.gid(), meta.permissions().mode() & 0o777),
        (4243, 0o660)
    );
    let outsider = as_uid(&d, 65534, &[], VALE_CTL)
        .arg("list")
        .output()
        .unwrap();
    assert!(
        !outsider.status.success(),
        "uid 65534 outside the group got in"
    );
    assert!(
        stderr_of(&outsider).contains("ermission denied"),
        "{}",
        stderr_of(&outsider)
    );
    let member = as_uid(&d, 65534, &[4243], VALE_CTL)
        .arg("list")
        .output()
        .unwrap();
    assert!(member.status.success(), "{}", stderr_of(&member));
    // A member opens a port and sends through it, as any client would.
    let rx = d.open("vale0:b");
    let tx = as_uid(&d, 65534, &[4243], PKT_GEN)
        .args(["-i", "vale0:a", "-f", "tx", "-n", "10", "-l", "60"])
        .output()
        .unwrap();
    assert!(tx.status.success(), "{}", stderr_of(&tx));
    assert_eq!(drain(&rx, 2.0).len(), 10);
}

/// valed refuses a socket directory another user owns, or one others may write in
/// without the sticky bit: there they could replace the socket and have valed's clients
/// talk to a daemon of theirs. A sticky one (as /tmp) and its own are fine.
#[test]
fn valed_refuses_a_socket_directory_others_could_replace_its_socket_in() {
    let base = dir_of("socket-dir");
    let start = |dir: &std::path::Path| {
        let sock = dir.join("valed.sock");
        let mut c = Command::new(VALED)
            .args(["-q", "--socket", path_str(&sock)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let up = wait_for(5.0, || {
            sock.exists() || c.try_wait().ok().flatten().is_some()
        });
        let up = up && sock.exists();
        let _ = c.kill();
        let o = c.wait_with_output().unwrap();
        (up, String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let theirs = base.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    rustix::fs::chown(&theirs, Some(rustix::process::Uid::from_raw(65534)), None).unwrap();
    let (up, err) = start(&theirs);
    assert!(!up && err.contains("belongs to uid 65534"), "{err}");
    let open = base.join("open");
    std::fs::create_dir_all(&open).unwrap();
    rustix::fs::chmod(&open, rustix::fs::Mode::from_raw_mode(0o777)).unwrap();
    let (up, err) = start(&open);
    assert!(
        !up && err.contains("others may write in it (mode 777"),
        "{err}"
    );
    rustix::fs::chmod(&open, rustix::fs::Mode::from_raw_mode(0o1777)).unwrap();
    let (up, err) = start(&open);
    assert!(up, "a sticky directory is fine: {err}");
    let mine = base.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    let (up, err) = start(&mine);
    assert!(up, "its own: {err}");
}
