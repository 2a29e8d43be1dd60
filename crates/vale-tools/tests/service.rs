//! valed as a service: its Prometheus endpoint scraped with real `curl` and linted with
//! real `promtool`, hostile scrapers, systemd's readiness protocol, the unit file, and
//! logs fit for journald.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A valed serving metrics on 127.0.0.1, and where.
fn with_metrics(tag: &str) -> (Daemon, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(tag, &["--metrics", &addr]);
    (d, addr)
}

/// `curl -sS` with `args`: (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn scrape(addr: &str) -> String {
    let (code, body) = curl(&[&format!("http://{addr}/metrics")]);
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the sample `name{...}` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|(_, v)| v.parse().ok())
}

fn port_counter(text: &str, name: &str, port: &str) -> u64 {
    sample(text, name, &[("port", port)]).unwrap_or_else(|| panic!("no {name} of {port}:\n{text}"))
        as u64
}

/// `promtool check metrics` of `text`: its exit status and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), said)
}

#[test]
fn metrics_count_exactly_the_frames_pkt_gen_sent_and_pass_promtool() {
    if !have("curl", "curl", "metrics scrape") || !have("promtool", "prometheus", "metrics lint") {
        return;
    }
    let (d, addr) = with_metrics("vb-metrics");
    // Held open so that their counters outlive the pkt-gen processes.
    let _b = d.open("vale0:b@conf:slots=4096");
    let _a = d.open("vale0:a");
    let before = scrape(&addr);
    let (ok, said) = promtool(&before);
    assert!(ok, "promtool: {said}\n{before}");
    for (m, p) in [
        ("vale_port_tx_packets_total", "vale0:a"),
        ("vale_port_rx_packets_total", "vale0:b"),
    ] {
        assert_eq!(port_counter(&before, m, p), 0, "{m} {p} before any traffic");
    }
    let n: u64 = 20_000;
    let rx = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:b", "-f", "rx", "-W", "--duration", "60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let tx = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:a", "-f", "tx", "-l", "60", "-R", "100000"])
        .args(["-n", &n.to_string(), "-S", "02:00:00:00:0b:0a"])
        .output()
        .unwrap();
    assert!(
        tx.status.success(),
        "{}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let rx = rx.wait_with_output().unwrap();
    assert!(rx.status.success());

    let after = scrape(&addr);
    let (ok, said) = promtool(&after);
    assert!(ok, "promtool: {said}\n{after}");
    let st = d.assert_laws();
    let ring_full = st.get("vale0:b", "ring_full");
    assert_eq!(
        port_counter(&after, "vale_port_tx_packets_total", "vale0:a"),
        n
    );
    assert_eq!(
        port_counter(&after, "vale_port_tx_bytes_total", "vale0:a"),
        60 * n
    );
    let delivered = port_counter(&after, "vale_port_rx_packets_total", "vale0:b");
    assert_eq!(delivered + ring_full, n, "delivered or dropped: {after}");
    assert_eq!(
        delivered,
        st.get("vale0:b", "rx_packets"),
        "the same as vale-ctl stats"
    );
    assert_eq!(
        port_counter(&after, "vale_port_rx_bytes_total", "vale0:b"),
        60 * delivered
    );
    let drop = |reason: &str| {
        sample(
            &after,
            "vale_port_drops_total",
            &[("port", "vale0:b"), ("reason", reason)],
        )
        .unwrap() as u64
    };
    assert_eq!(drop("ring_full"), ring_full);
    assert_eq!(drop("no_dest"), 0);
    assert_eq!(
        after
            .lines()
            .filter(|l| l.starts_with("vale_port_drops_total{") && l.contains("port=\"vale0:a\""))
            .count(),
        vale_switch::DropReason::ALL.len(),
        "every reason a sample of one family"
    );
    assert_eq!(
        sample(&after, "vale_port_rx_packets_total", &[("port", "vale0:a")]),
        Some(0.0),
        "nothing comes back to the sender"
    );
    assert!(after.contains("kind=\"client\""), "{after}");
    assert_eq!(
        sample(&after, "vale_switch_ports", &[("switch", "vale0")]),
        Some(2.0)
    );
    // The learning table learned the sender's address (published when the forwarder
    // goes idle).
    assert!(
        wait_for(3.0, || {
            let t = scrape(&addr);
            sample(&t, "vale_fdb_entries", &[("switch", "vale0")]) >= Some(1.0)
                && sample(&t, "vale_fdb_learned_total", &[("switch", "vale0")]) >= Some(1.0)
        }),
        "{}",
        scrape(&addr)
    );
    assert!(sample(&after, "vale_thread_passes_total", &[("thread", "0")]) > Some(0.0));
    let busy = sample(&after, "vale_thread_busy_seconds_total", &[("thread", "0")]).unwrap();
    assert!(busy > 0.0, "{after}");
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        sample(&after, "vale_build_info", &[("version", v)]),
        Some(1.0)
    );
    // A counter never goes back: a second scrape has at least the first one's values.
    let again = scrape(&addr);
    let busy2 = sample(&again, "vale_thread_busy_seconds_total", &[("thread", "0")]).unwrap();
    assert!(busy2 >= busy);
}

#[test]
fn host_ports_show_their_kind_and_errors() {
    if !have("curl", "curl", "metrics scrape") {
        return;
    }
    if rustix::process::geteuid().as_raw() != 0 {
        skip("host-port metrics: TAP interfaces need root");
        return;
    }
    let (d, addr) = with_metrics("vb-mhost");
    let o = d.ctl(&["-n", "vbm0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = d.ctl(&["-a", "vale0:vbm0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = scrape(&addr);
    let (ok, said) = if have("promtool", "prometheus", "metrics lint") {
        promtool(&t)
    } else {
        (true, String::new())
    };
    assert!(ok, "promtool: {said}\n{t}");
    assert!(
        sample(
            &t,
            "vale_port_tx_packets_total",
            &[("port", "vale0:vbm0"), ("kind", "tap")]
        )
        .is_some(),
        "{t}"
    );
    for e in ["write_errors", "read_errors", "truncated"] {
        assert_eq!(
            sample(
                &t,
                "vale_host_port_errors_total",
                &[("host", "vbm0"), ("error", e)]
            ),
            Some(0.0),
            "{t}"
        );
    }
    assert_eq!(
        sample(&t, "vale_host_port_gone", &[("host", "vbm0")]),
        Some(0.0)
    );
    let _ = d.ctl(&["-d", "vale0:vbm0"]);
    let _ = d.ctl(&["-r", "vbm0"]);
    let t = scrape(&addr);
    assert!(
        !t.contains("vbm0"),
        "a removed host port leaves the scrape: {t}"
    );
}

/// Sends `req` on a new connection and reads what comes back until the server closes.
fn raw(addr: &str, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A slow client, sending half a request from a loopback address of its own
/// (127.0.0.N): Ok while the server holds it, Err with what it answered if refused.
fn slow_from(addr: &str, n: u8) -> Result<TcpStream, String> {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    let from = std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(127, 0, 0, n), 0);
    rustix::net::bind(&fd, &from).unwrap();
    let to: std::net::SocketAddr = addr.parse().unwrap();
    rustix::net::connect(&fd, &to).unwrap();
    let mut s = TcpStream::from(fd);
    s.write_all(b"GET /").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 512];
    match s.read(&mut b) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            s.set_nonblocking(false).unwrap();
            Ok(s)
        }
        r => Err(format!(
            "{:?}",
            r.map(|n| String::from_utf8_lossy(&b[..n]).into_owned())
        )),
    }
}

#[test]
fn hostile_scrapers_get_errors_and_valed_keeps_serving() {
    if !have("curl", "curl", "metrics scrape") {
        return;
    }
    let (d, addr) = with_metrics("vb-mhostile");
    let url = format!("http://{addr}/metrics");
    // A slow client sends half a request and waits: others are served meanwhile, and
    // it is told off after the deadline.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    let t0 = Instant::now();
    let (code, _) = curl(&[&url]);
    assert_eq!(code, 200, "served beside a slow client");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut out = String::new();
    let _ = slow.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // A huge request line, other methods, other paths.
    let huge = format!("http://{addr}/{}", "a".repeat(100_000));
    assert_eq!(curl(&[&huge]).0, 431);
    assert_eq!(curl(&["-X", "POST", "-d", "x=1", &url]).0, 405);
    assert_eq!(curl(&["-X", "DELETE", &url]).0, 405);
    assert_eq!(curl(&[&format!("http://{addr}/")]).0, 404);
    assert!(raw(&addr, b"\x16\x03\x01\x00\xa5garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    // A connection served just before may still hold a slot for up to half a second
    // (it reads what its client left unsent).
    std::thread::sleep(Duration::from_millis(700));
    // One client holds two at most: its third is refused at once, and another
    // client's scrape is served meanwhile.
    let mut held: Vec<TcpStream> = (0..2).map(|_| slow_from(&addr, 1).unwrap()).collect();
    let third = slow_from(&addr, 1).unwrap_err();
    assert!(
        third.contains("503") && third.contains("from this client"),
        "{third}"
    );
    let (code, _) = curl(&["--interface", "127.0.0.2", &url]);
    assert_eq!(
        code, 200,
        "another client served beside one holding its share"
    );
    // More slow clients than the server takes at once (8), each from its own address:
    // the one over gets 503 at once, and once their deadline passes, scrapes are
    // served again.
    std::thread::sleep(Duration::from_millis(700));
    for n in 3..9 {
        held.push(slow_from(&addr, n).unwrap_or_else(|e| panic!("slow client 127.0.0.{n}: {e}")));
    }
    let over = slow_from(&addr, 9).unwrap_err();
    assert!(over.contains("503") && over.contains("at once"), "{over}");
    assert!(
        wait_for(10.0, || curl(&[&url]).0 == 200),
        "scrapes served again after the slow clients' deadline"
    );
    drop(held);
    // A client that connects and goes away, many times over.
    for _ in 0..50 {
        drop(TcpStream::connect(&addr).unwrap());
    }
    assert_eq!(curl(&[&url]).0, 200);
    // The daemon itself never noticed.
    let o = d.ctl(&["list"]);
    assert!(o.status.success());
}

#[test]
fn metrics_connection_limits_are_settings() {
    if !have("curl", "curl", "metrics scrape") {
        return;
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(
        "vb-mconns",
        &[
            "--metrics",
            &addr,
            "--metrics-max-connections",
            "3",
            "--metrics-max-connections-per-client",
            "1",
        ],
    );
    let s = d.ctl_json(&["settings"]);
    assert_eq!(s["settings"]["metrics_max_connections"], "3", "{s}");
    assert_eq!(
        s["settings"]["metrics_max_connections_per_client"], "1",
        "{s}"
    );
    // One client holds one: its second is refused at once.
    let mut held = vec![slow_from(&addr, 1).unwrap()];
    let second = slow_from(&addr, 1).unwrap_err();
    assert!(
        second.contains("503") && second.contains("from this client"),
        "{second}"
    );
    // Three clients hold three: the fourth is refused, not the default's eighth.
    for n in 2..4 {
        held.push(slow_from(&addr, n).unwrap_or_else(|e| panic!("client 127.0.0.{n}: {e}")));
    }
    let over = slow_from(&addr, 4).unwrap_err();
    assert!(over.contains("503") && over.contains("at once"), "{over}");
    drop(held);
    assert!(
        wait_for(10.0, || curl(&[&format!("http://{addr}/metrics")]).0 == 200),
        "served again once they went"
    );
    // Out of range, or more per client than in all: valed says which and does not start.
    for (args, what) in [
        (
            &["--metrics-max-connections", "0"][..],
            "metrics_max_connections",
        ),
        (
            &[
                "--metrics-max-connections",
                "2",
                "--metrics-max-connections-per-client",
                "3",
            ][..],
            "metrics_max_connections_per_client",
        ),
    ] {
        let o = d
            .cmd(VALED)
            .args(args)
            .args(["--socket", "/tmp/x.sock"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("{what} ")) && err.contains("out of range"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn metrics_on_a_unix_socket_and_an_address_in_use() {
    if !have("curl", "curl", "metrics scrape") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("vb-munix-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("metrics.sock");
    let d = Daemon::start("vb-munix", &["--metrics", path_str(&path)]);
    let (code, body) = curl(&["--unix-socket", path_str(&path), "http://valed/metrics"]);
    assert_eq!(code, 200);
    assert!(body.contains("vale_build_info"));
    let o = d.ctl(&["settings"]);
    assert!(stdout_of(&o).contains(path_str(&path)), "{}", stdout_of(&o));
    // A second valed cannot serve metrics where the first does.
    let o = Command::new(VALED)
        .args([
            "--socket",
            path_str(&dir.join("other.sock")),
            "--metrics",
            path_str(&path),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot serve metrics on"), "{err}");
    assert!(!dir.join("other.sock").exists(), "it did not start at all");
    drop(d);
    assert!(!path.exists(), "the socket file goes with valed");
    let o = Command::new(VALED)
        .args(["--metrics", "localhost:80"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("IP:PORT"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A valed this test started, killed if the test ends before it stops.
struct Valed(std::process::Child);

impl Drop for Valed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// valed started as systemd would (NOTIFY_SOCKET set), with `args`.
fn notified(dir: &std::path::Path, notify: &str, args: &[&str]) -> Valed {
    notified_with(dir, notify, args, &[])
}

/// The same, with more of the manager's variables (`envs`).
fn notified_with(
    dir: &std::path::Path,
    notify: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Valed {
    let log = std::fs::File::create(dir.join("valed.log")).unwrap();
    Valed(
        Command::new(VALED)
            .arg("--socket")
            .arg(dir.join("valed.sock"))
            .args(args)
            .env("NOTIFY_SOCKET", notify)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// One thread of another process stopped (ptrace: only that thread stops), until
/// dropped.
struct ThreadStopped(libc::pid_t);

impl ThreadStopped {
    fn new(tid: libc::pid_t) -> ThreadStopped {
        // SAFETY: plain ptrace and waitpid calls on a thread of a child of ours.
        unsafe {
            let r = libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0);
            assert_eq!(
                r,
                0,
                "PTRACE_SEIZE {tid}: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
            let mut st = 0;
            assert_eq!(libc::waitpid(tid, &mut st, libc::__WALL), tid);
        }
        ThreadStopped(tid)
    }
}

impl Drop for ThreadStopped {
    fn drop(&mut self) {
        // SAFETY: as in `new`; the thread is in its ptrace stop.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
    }
}

/// The thread of process `pid` named `name`.
fn thread_named(pid: u32, name: &str) -> Option<libc::pid_t> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| t.file_name().to_str()?.parse().ok())?
        })
}

/// The datagrams `rx` gets within `secs`.
fn datagrams(rx: &UnixDatagram, secs: f64) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut out = Vec::new();
    let mut b = [0u8; 1024];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        rx.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = rx.recv(&mut b) {
            out.push(String::from_utf8_lossy(&b[..n]).into_owned());
        }
    }
    out
}

/// A fresh directory for a test's sockets and log: /tmp/vb-TAG-PID.
fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vb-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_watchdog_is_fed_while_every_forwarding_thread_runs_and_not_while_one_is_stuck() {
    let dir = fresh_dir("watchdog");
    let path = dir.join("notify.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let notify = path_str(&path).to_string();
    let d = notified_with(&dir, &notify, &[], &[("WATCHDOG_USEC", "1000000")]);
    let pid = d.0.id();
    let first = datagrams(&rx, 2.6);
    assert!(first.iter().any(|m| m.contains("READY=1")), "{first:?}");
    let fed = |ms: &[String]| ms.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!((3..=7).contains(&fed(&first)), "fed every 0.5 s: {first:?}");
    // The forwarding thread stopped (as if stuck in a system call): named, and the
    // watchdog is no longer fed.
    let tid = thread_named(pid, "vale-fwd0").expect("valed's forwarding thread");
    let stopped = ThreadStopped::new(tid);
    let during = datagrams(&rx, 4.0);
    let told = during
        .iter()
        .position(|m| m.starts_with("STATUS=") && m.contains("vale-fwd0"))
        .unwrap_or_else(|| panic!("the stuck thread named in the status: {during:?}"));
    assert_eq!(
        fed(&during[told..]),
        0,
        "not fed once it is stuck: {during:?}"
    );
    let quiet = datagrams(&rx, 1.5);
    assert_eq!(fed(&quiet), 0, "{quiet:?}");
    let log = std::fs::read_to_string(dir.join("valed.log")).unwrap();
    assert!(
        log.contains("vale-fwd0 has not gone round its loop"),
        "{log}"
    );
    // Going again: said so, and fed again.
    drop(stopped);
    let after = datagrams(&rx, 2.0);
    assert!(after.iter().any(|m| m == "STATUS=forwarding"), "{after:?}");
    assert!(fed(&after) >= 2, "fed again: {after:?}");
    let o = Command::new(VALE_CTL)
        .arg("list")
        .env("VALE_SOCKET", dir.join("valed.sock"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(d);
    // A watchdog meant for another process (WATCHDOG_PID) is not fed.
    let d = notified_with(
        &dir,
        &notify,
        &[],
        &[("WATCHDOG_USEC", "1000000"), ("WATCHDOG_PID", "1")],
    );
    let other = datagrams(&rx, 2.0);
    assert!(other.iter().any(|m| m.contains("READY=1")), "{other:?}");
    assert_eq!(fed(&other), 0, "{other:?}");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ready_comes_once_the_control_socket_accepts_and_stopping_on_sigterm() {
    let dir = fresh_dir("notify");
    let socket = dir.join("valed.sock");
    let path = dir.join("notify.sock");
    let abstract_name = format!("vb-notify-{}", std::process::id());
    for notify in [path_str(&path).to_string(), format!("@{abstract_name}")] {
        let rx = match notify.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let a = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
                UnixDatagram::bind_addr(&a).unwrap()
            }
            None => UnixDatagram::bind(&path).unwrap(),
        };
        rx.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut child = notified(&dir, &notify, &["--metrics", &addr]);
        let mut b = [0u8; 512];
        let n = rx.recv(&mut b).expect("READY=1 within 15 s");
        // At once, before anything else: the control socket must take a request.
        let accepted = vale::sock::connect(&socket).is_ok();
        let metrics_up = TcpStream::connect(&addr).is_ok();
        let msg = String::from_utf8_lossy(&b[..n]).into_owned();
        assert!(msg.lines().any(|l| l == "READY=1"), "{msg}");
        assert!(accepted, "READY=1 came before the control socket accepted");
        assert!(
            metrics_up,
            "READY=1 came before the metrics address listened"
        );
        let o = Command::new(VALE_CTL)
            .arg("list")
            .env("VALE_SOCKET", &socket)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let _ = Command::new("kill")
            .args(["-TERM", &child.0.id().to_string()])
            .status();
        let n = rx.recv(&mut b).expect("STOPPING=1 after SIGTERM");
        assert_eq!(&b[..n], b"STOPPING=1");
        let st = child.0.wait().unwrap();
        assert!(st.success(), "{st:?}");
        let _ = std::fs::remove_file(&path);
    }
    // Without a service manager listening, valed starts anyway and says why it could not
    // tell it.
    let mut child = notified(&dir, path_str(&dir.join("nobody.sock")), &[]);
    assert!(wait_for(10.0, || vale::sock::connect(&socket).is_ok()));
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    assert!(child.0.wait().unwrap().success());
    let log = std::fs::read_to_string(dir.join("valed.log")).unwrap();
    assert!(log.contains("cannot tell the service manager"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    if !have("systemd-analyze", "systemd", "unit file check") {
        return;
    }
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../contrib/valed.service");
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(text.contains("Type=notify"));
    // verify wants the ExecStart binary to exist: the one built here stands in for the
    // installed /usr/local/bin/valed; nothing else changes.
    let dir = std::env::temp_dir().join(format!("vb-unit-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let copy = dir.join("valed.service");
    std::fs::write(&copy, text.replace("/usr/local/bin/valed", VALED)).unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    // Only what concerns our unit: verify also reports on the host's other units.
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("valed")).collect();
    assert!(
        o.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

#[test]
fn logs_are_plain_lines_when_stderr_is_not_a_terminal() {
    let d = Daemon::start("vb-logs", &[]);
    let _a = d.open("vale0:a");
    let o = d.ctl(&["-n", "vale0"]); // refused: a name for a host port may not start with vale
    assert!(!o.status.success());
    let _ = d.ctl(&["stats", "vale0:nope"]);
    drop(_a);
    drop(d.open("vale0:b"));
    let log = d.log();
    assert!(
        !log.contains('\x1b'),
        "ANSI escapes in a log that is a file:\n{log:?}"
    );
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 4, "{log}");
    for l in &lines {
        // A timestamp, a level, a message: one event per line.
        let mut f = l.split_whitespace();
        let (ts, level) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        assert!(
            ts.len() > 20 && ts.ends_with('Z') && ts.as_bytes()[4] == b'-',
            "{l:?}"
        );
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level),
            "{l:?} in\n{log}"
        );
    }
}

/// Every metric the Grafana dashboard in docs/ queries is one a scrape has (with a host
/// port where root can make one, so that the host families are there too).
#[test]
fn the_dashboard_queries_only_metrics_valed_serves() {
    if !have("curl", "curl", "metrics scrape") {
        return;
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana-valed.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut names: Vec<String> = Vec::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("vale_") {
            let n: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + n.len()..];
            names.push(n);
        }
    }
    assert!(names.len() >= 10, "{names:?}");
    let (d, addr) = with_metrics("vb-mdash");
    let _a = d.open("vale0:a");
    let root = rustix::process::geteuid().as_raw() == 0;
    if root {
        assert!(d.ctl(&["-n", "vbg0"]).status.success());
    }
    let wanted: Vec<String> = names
        .into_iter()
        .filter(|n| root || !n.starts_with("vale_host_port_"))
        .collect();
    let missing = |text: &str| -> Vec<String> {
        wanted
            .iter()
            .filter(|n| !text.contains(&format!("# TYPE {n} ")))
            .cloned()
            .collect()
    };
    // The learning tables' families come with the forwarder's first publication after
    // the switch appears (when it next goes idle).
    let mut text = scrape(&addr);
    wait_for(3.0, || {
        text = scrape(&addr);
        missing(&text).is_empty()
    });
    if root {
        let _ = d.ctl(&["-r", "vbg0"]);
    }
    let gone = missing(&text);
    assert!(
        gone.is_empty(),
        "the dashboard asks for {gone:?}, which valed does not serve:\n{text}"
    );
}

/// The value of `Key=` in the unit file.
fn unit_key(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in contrib/valed.service"))
        .to_string()
}

/// A network namespace and a valed of one test, gone on drop.
struct CapsRun {
    ns: String,
    valed: Option<Valed>,
}

impl Drop for CapsRun {
    fn drop(&mut self) {
        self.valed = None;
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// valed as uid/gid 65534 in namespace `ns` with only `caps` (setpriv's `,+net_admin,...`
/// form), as the unit runs it, and RLIMIT_MEMLOCK set to `memlock` bytes if given.
fn valed_with(ns: &str, dir: &std::path::Path, caps: &str, memlock: Option<u64>) -> Valed {
    let socket = dir.join("valed.sock");
    let _ = std::fs::remove_file(&socket);
    let log = std::fs::File::create(dir.join("valed.log")).unwrap();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    if let Some(m) = memlock {
        c.arg("prlimit").arg(format!("--memlock={m}:{m}")).arg("--");
    }
    let (inh, amb, bnd) = (
        format!("--inh-caps=-all{caps}"),
        format!("--ambient-caps=-all{caps}"),
        format!("--bounding-set=-all{caps}"),
    );
    c.args([
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ])
    .args([&inh, &amb, &bnd])
    .arg(VALED)
    .arg("--socket")
    .arg(&socket)
    .stdout(Stdio::null())
    .stderr(log);
    let v = Valed(c.spawn().unwrap());
    assert!(
        wait_for(10.0, || vale::sock::connect(&socket).is_ok()),
        "valed with {caps} did not start: {}",
        std::fs::read_to_string(dir.join("valed.log")).unwrap_or_default()
    );
    v
}

/// `vale-ctl ARGS` against the valed in `dir`: (success, stderr).
fn ctl_in(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let o = Command::new(VALE_CTL)
        .args(args)
        .env("VALE_SOCKET", dir.join("valed.sock"))
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn the_units_capabilities_are_what_host_ports_need_and_each_is_needed() {
    if rustix::process::geteuid().as_raw() != 0 {
        skip("capability check: needs root (setpriv, network namespaces)");
        return;
    }
    if !have("setpriv", "util-linux", "capability check")
        || !have("prlimit", "util-linux", "capability check")
        || !have("ip", "iproute2", "capability check")
    {
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/valed.service"
    ))
    .unwrap();
    let caps: Vec<String> = unit_key(&unit, "AmbientCapabilities")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        unit_key(&unit, "CapabilityBoundingSet"),
        caps.join(" "),
        "the bounding set is the ambient set"
    );
    let setpriv = |without: Option<&str>| -> String {
        caps.iter()
            .filter(|c| Some(c.as_str()) != without)
            .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect()
    };
    let tag = std::process::id() % 10000;
    let mut run = CapsRun {
        ns: format!("vbcaps{tag}"),
        valed: None,
    };
    let (tap, va, vb) = (
        format!("vbk{tag}t"),
        format!("vbk{tag}a"),
        format!("vbk{tag}b"),
    );
    let ip = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().unwrap();
        assert!(
            o.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let _ = Command::new("ip").args(["netns", "del", &run.ns]).status();
    ip(&["netns", "add", &run.ns]);
    ip(&[
        "-n", &run.ns, "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ]);
    ip(&["-n", &run.ns, "link", "set", &va, "up"]);
    ip(&["-n", &run.ns, "link", "set", &vb, "up"]);
    let dir = std::env::temp_dir().join(format!("vb-caps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // valed's uid must be able to make its socket there, and own the directory (as the
    // unit's RuntimeDirectory is): valed refuses one others may write in.
    rustix::fs::chown(
        &dir,
        Some(rustix::process::Uid::from_raw(65534)),
        Some(rustix::process::Gid::from_raw(65534)),
    )
    .unwrap();
    let xdp = match valed::probe_af_xdp() {
        Ok(()) => true,
        Err(e) => {
            skip(&format!("capability check of --xdp: no AF_XDP here: {e}"));
            false
        }
    };
    let tap_on = format!("vale0:{tap}");
    let packet_on = format!("vale1:{va}");
    let xdp_on = format!("vale2:{vb}");
    // Everything host ports do, with exactly the unit's capabilities.
    run.valed = Some(valed_with(&run.ns, &dir, &setpriv(None), None));
    let status = std::fs::read_to_string(format!(
        "/proc/{}/status",
        run.valed.as_ref().unwrap().0.id()
    ))
    .unwrap();
    assert!(status.contains("Uid:\t65534"), "{status}");
    for (what, args) in [
        ("a TAP", vec!["-n", tap.as_str()]),
        ("attaching the TAP", vec!["-a", &tap_on]),
        ("an AF_PACKET attach", vec!["-a", &packet_on]),
    ]
    .into_iter()
    .chain(xdp.then(|| ("an AF_XDP attach", vec!["-a", xdp_on.as_str(), "--xdp"])))
    {
        let (ok, err) = ctl_in(&dir, &args);
        assert!(ok, "{what} with the unit's capabilities {caps:?}: {err}");
    }
    // Without each of them, what needs it fails, and the message names what is missing.
    let needs = |cap: &str| -> Option<(Vec<&str>, &str)> {
        match cap {
            "CAP_NET_ADMIN" => Some((vec!["-n", tap.as_str()], "CAP_NET_ADMIN")),
            "CAP_NET_RAW" => Some((vec!["-a", packet_on.as_str()], "CAP_NET_RAW")),
            "CAP_BPF" => Some((vec!["-a", xdp_on.as_str(), "--xdp"], "CAP_BPF")),
            "CAP_IPC_LOCK" => Some((vec!["-a", xdp_on.as_str(), "--xdp"], "CAP_IPC_LOCK")),
            _ => None,
        }
    };
    for cap in &caps {
        let Some((args, named)) = needs(cap) else {
            panic!("{cap} is in the unit, but no check here shows what needs it");
        };
        if args.contains(&"--xdp") && !xdp {
            continue;
        }
        // The default 8 MiB of locked memory, less than one AF_XDP socket's frames.
        let memlock = (cap == "CAP_IPC_LOCK").then_some(8 << 20);
        run.valed = None;
        run.valed = Some(valed_with(&run.ns, &dir, &setpriv(Some(cap)), memlock));
        let (ok, err) = ctl_in(&dir, &args);
        assert!(!ok, "{args:?} worked without {cap}: is it needed?");
        assert!(err.contains(named), "without {cap}: {err}");
    }
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
}
