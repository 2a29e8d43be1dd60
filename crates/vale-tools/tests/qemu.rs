//! Real QEMU guests (TCG) on the switch. Each VM's NIC is a QEMU `-netdev tap` whose
//! host side valed attaches by name (`vale-ctl -a vale1:IF`, AF_PACKET), the way a
//! host's existing interface joins a switch. The guest is built from Debian packages by
//! `scripts/build-guest`. Needs root, /dev/net/tun, qemu-system-x86_64, busybox and
//! iperf3 (for the guest image), and apt package lists; prints SKIP otherwise.
//!
//! Each guest prints its own interface counters when its traffic is over (`T_COUNTS`);
//! the tests hold them against what valed counted at the guest's port, and against
//! every drop the daemon counted. The guests send nothing of their own (no IPv6,
//! static ARP entries: `t_neigh`), so the counts can be exact.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for TAP devices".into());
    }
    for (cmd, pkg) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("iperf3", "iperf3"),
        ("cpio", "cpio"),
    ] {
        if !have(cmd, pkg, "QEMU guests") {
            return Some(format!("{cmd} not installed (apt-get install {pkg})"));
        }
    }
    None
}

/// Builds (or finds) the guest; `Err` is a reason to skip.
fn guest() -> Result<PathBuf, String> {
    // One build per test binary; the script itself also locks against other processes.
    static BUILT: std::sync::Mutex<Option<Result<PathBuf, String>>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = built.as_ref() {
        return r.clone();
    }
    let r = build_guest();
    *built = Some(r.clone());
    r
}

fn build_guest() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cache = root.join("target/guest");
    let o = Command::new(root.join("scripts/build-guest"))
        .arg(&cache)
        .output()
        .map_err(|e| format!("scripts/build-guest: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "scripts/build-guest failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(cache)
}

struct Vm {
    child: Child,
    log: PathBuf,
    tap: Option<String>,
    /// The guest's second serial port (a unix socket QEMU listens on): a line written
    /// there ends a `t_go=1` or `t_hold=1` guest's wait.
    ctl: PathBuf,
    ctl_conn: Option<std::os::unix::net::UnixStream>,
}

/// A guest's own counts of its interface (`/sys/class/net/eth0/statistics`), from the
/// `T_COUNTS` line it prints once they have stopped moving. virtio-net counts in
/// `rx_packets` every frame it takes off its receive queue, those it then drops
/// itself (`rx_dropped`, `rx_length_errors`: a frame whose buffers are not all there)
/// included; `tx_packets` counts each frame the device has taken (a TSO super-frame
/// once, as valed does).
#[derive(Debug, Clone, Default)]
struct GuestCounts {
    rx_packets: u64,
    tx_packets: u64,
    /// The whole line, for messages.
    line: String,
}

impl GuestCounts {
    fn parse(log: &str) -> Option<GuestCounts> {
        let line = log.lines().rev().find(|l| l.contains("T_COUNTS"))?;
        let mut g = GuestCounts {
            line: line.trim().to_string(),
            ..Default::default()
        };
        let mut seen = 0;
        for w in line.split_whitespace() {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let v: u64 = v.parse().ok()?;
            match k {
                "rx_packets" => g.rx_packets = v,
                "tx_packets" => g.tx_packets = v,
                _ => continue,
            }
            seen += 1;
        }
        (seen == 2).then_some(g)
    }
}

/// What valed (and, for a tap, the host's kernel) counted at a guest's port.
#[derive(Debug, Clone, Copy, Default)]
struct PortView {
    /// Frames read from the guest's side (`from_host`), and those the kernel dropped
    /// before valed could read them (`kernel_drops`: a tap attached through AF_PACKET).
    took: u64,
    /// Frames valed handed to the guest's side (`to_host`).
    handed: u64,
    /// Of those, the ones a tap's kernel then dropped (QEMU not reading: the tap's
    /// `tx_dropped`); 0 for the other kinds, where QEMU or the guest's ring pushes back
    /// and valed counts what it cannot hand over.
    lost: u64,
}

/// [`PortView`] of the host port attached (or waiting) as `port`, `tap` its interface.
fn port_view(d: &Daemon, port: &str, tap: Option<&str>) -> PortView {
    let hosts = d.hosts();
    let h = hosts
        .iter()
        .find(|h| h["attached"] == port || h["waiting"] == port)
        .unwrap_or_else(|| panic!("no host port at {port}: {hosts:?}"));
    let c = &h["counters"];
    let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("no {k} in {c}"));
    PortView {
        took: n("from_host") + n("kernel_drops"),
        handed: n("to_host"),
        lost: tap.map_or(0, |t| tap_counts(t).2),
    }
}

/// A guest's own counts against its port's since `before` (read before the guest sent
/// anything): every frame the guest says it sent, valed took from its port; every
/// frame valed handed to the port the guest says it received (its drops among them,
/// see [`GuestCounts`]), or (a tap) the host's kernel dropped on the way. Exact: the
/// guest sends nothing of its own, printed its counts once they stood still, and has
/// powered off. Valed's side is read again for up to 3 s, for a frame it was still
/// reading when the guest went.
#[track_caller]
fn assert_guest_counts(
    d: &Daemon,
    who: &str,
    g: &GuestCounts,
    port: &str,
    tap: Option<&str>,
    before: PortView,
) {
    let t = Instant::now();
    loop {
        let now = port_view(d, port, tap);
        let (took, handed, lost) = (
            now.took - before.took,
            now.handed - before.handed,
            now.lost - before.lost,
        );
        let ok = g.tx_packets == took && g.rx_packets + lost == handed;
        if ok {
            eprintln!(
                "{who} at {port}: sent {took}, received {handed}: {}",
                g.line
            );
            return;
        }
        if t.elapsed() > Duration::from_secs(3) {
            eprintln!("{who} at {port}: {:?}", d.hosts());
            assert_eq!(
                g.tx_packets,
                took,
                "{who}: frames it says it sent != frames valed took from {port}: {g:?}, \
                 {before:?} -> {now:?}\nvaled:\n{}",
                d.log()
            );
            assert_eq!(
                g.rx_packets + lost,
                handed,
                "{who}: frames it received (+ the tap's drops {lost}) != frames valed \
                 handed to {port}: {g:?}, {before:?} -> {now:?}\nvaled:\n{}",
                d.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a VM's NIC reaches the host.
enum Net<'a> {
    /// `-netdev tap` with this interface name.
    Tap(&'a str),
    /// `-netdev dgram` over unix sockets: (the VM's local path, valed's path).
    Dgram(&'a str, &'a str),
    /// `-netdev stream` connecting to valed's unix socket.
    Stream(&'a str),
    /// `-netdev stream` listening (`server=on`) for valed to connect.
    StreamServer(&'a str),
    /// `-netdev vhost-user` on valed's socket (guest memory shared through a memfd).
    VhostUser(&'a str),
    /// `-netdev vhost-user` with QEMU listening (`server=on`) for valed to connect.
    VhostUserServer(&'a str),
    /// `-netdev vhost-user` on valed's socket with this many queue pairs
    /// (`queues=N`, the device `mq=on`).
    VhostUserMq(&'a str, u16),
}

impl Vm {
    fn start(
        dir: &std::path::Path,
        cache: &std::path::Path,
        net: Net<'_>,
        mac: u8,
        cmdline: &str,
    ) -> Vm {
        Vm::start_smp(dir, cache, net, mac, cmdline, 1)
    }

    /// [`Vm::start`] with `cpus` guest CPUs.
    fn start_smp(
        dir: &std::path::Path,
        cache: &std::path::Path,
        net: Net<'_>,
        mac: u8,
        cmdline: &str,
        cpus: u8,
    ) -> Vm {
        let (name, netdev) = match net {
            Net::Tap(t) => (
                t.to_string(),
                format!("tap,id=n0,ifname={t},script=no,downscript=no"),
            ),
            Net::Stream(path) => (
                format!("stream{mac}"),
                format!("stream,id=n0,server=off,addr.type=unix,addr.path={path}"),
            ),
            Net::StreamServer(path) => (
                format!("stream{mac}"),
                format!("stream,id=n0,server=on,addr.type=unix,addr.path={path}"),
            ),
            Net::VhostUser(path) => (format!("vhost{mac}"), format!("vhost-user:{path}")),
            Net::VhostUserServer(path) => (
                format!("vhost{mac}"),
                format!("vhost-user:{path},server=on"),
            ),
            Net::VhostUserMq(path, n) => (
                format!("vhost{mac}"),
                format!("vhost-user:{path};queues={n}"),
            ),
            Net::Dgram(local, remote) => (
                format!("dgram{mac}"),
                format!(
                    "dgram,id=n0,local.type=unix,local.path={local},remote.type=unix,remote.path={remote}"
                ),
            ),
        };
        if let Net::Tap(t) = net {
            // Persistent, so that its counters outlive the guest (QEMU deletes a tap it
            // created when it exits); deleted on drop.
            let _ = Command::new("ip").args(["link", "del", t]).output();
            let made = Command::new("ip")
                .args(["tuntap", "add", "dev", t, "mode", "tap"])
                .status()
                .unwrap();
            assert!(made.success(), "ip tuntap add {t}");
        }
        let log = dir.join(format!("{name}.log"));
        let ctl = dir.join(format!("{name}.ctl"));
        let _ = std::fs::remove_file(&ctl);
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "256", "-M", "pc"])
            .arg("-smp")
            .arg(cpus.to_string())
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-serial")
            .arg(format!("unix:{},server=on,wait=off", ctl.display()))
            .arg("-kernel")
            .arg(cache.join("vmlinuz"))
            .arg("-initrd")
            .arg(cache.join("initramfs.gz"))
            .arg("-append")
            // no_timer_check: on a busy host, the kernel's check of the emulated
            // IO-APIC timer can fail under TCG and panic the boot.
            .arg(format!(
                "console=ttyS0 quiet panic=-1 no_timer_check {cmdline}"
            ))
            .args(vm_net_args(&netdev, mac))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu");
        let Net::Tap(tap) = net else {
            return Vm {
                child,
                log,
                tap: None,
                ctl,
                ctl_conn: None,
            };
        };
        let vm = Vm {
            child,
            log,
            tap: Some(tap.to_string()),
            ctl,
            ctl_conn: None,
        };
        assert!(
            wait_for(10.0, || Command::new("ip")
                .args(["link", "show", tap])
                .output()
                .is_ok_and(|o| o.status.success())),
            "QEMU did not create {tap}"
        );
        // The host's own stack stays silent on it (no IPv6 router solicitations): the
        // tap's kernel counters then count only the guest's frames and valed's.
        let quiet = Command::new("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{tap}.disable_ipv6=1")])
            .status()
            .unwrap();
        assert!(quiet.success());
        let ok = Command::new("ip")
            .args(["link", "set", tap, "up"])
            .status()
            .unwrap();
        assert!(ok.success());
        vm
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the guest says `marker` (up to 2 minutes: TCG guests boot slowly on
    /// a busy machine).
    fn wait_says(&self, marker: &str) {
        assert!(
            wait_for(120.0, || self.log().contains(marker)),
            "the guest never said {marker}:\n{}",
            self.log()
        );
    }

    /// Ends the guest's wait once it says it waits (`marker`), with a line on its
    /// second serial port.
    fn tell(&mut self, marker: &str) {
        use std::io::Write;
        self.wait_says(marker);
        let ctl = &self.ctl;
        // One connection for the guest's life: QEMU takes one client at a time, and
        // reads what it holds when the UART has room.
        let s = self.ctl_conn.get_or_insert_with(|| {
            std::os::unix::net::UnixStream::connect(ctl)
                .unwrap_or_else(|e| panic!("{}: {e}", ctl.display()))
        });
        s.write_all(b"go\n").unwrap();
    }

    /// Starts a `t_go=1` guest's role: its peers are up.
    fn go(&mut self) {
        self.tell("T_READY");
    }

    /// Ends a `t_hold=1` guest's wait: the others' traffic is over.
    fn release(&mut self) {
        self.tell("T_HOLD");
    }

    /// Waits for the guest to power off and returns its own counts (`T_COUNTS`).
    fn counts(&mut self, secs: u64) -> GuestCounts {
        let log = self.wait(secs);
        GuestCounts::parse(&log).unwrap_or_else(|| panic!("no T_COUNTS from the guest:\n{log}"))
    }

    /// Waits for the guest to power off (its role done).
    fn wait(&mut self, secs: u64) -> String {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.log()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(t) = &self.tap {
            let _ = Command::new("ip").args(["link", "del", t]).output();
        }
    }
}

/// The kernel's own counts of a VM's tap: (frames from the guest, frames to the guest
/// including those the kernel dropped because QEMU did not read them, those dropped).
fn tap_counts(tap: &str) -> (u64, u64, u64) {
    let o = Command::new("ip")
        .args(["-j", "-s", "link", "show", tap])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let s = &v[0]["stats64"];
    let n = |d: &str, k: &str| s[d][k].as_u64().unwrap_or_else(|| panic!("{tap}: {v}"));
    let dropped = n("tx", "dropped");
    (n("rx", "packets"), n("tx", "packets") + dropped, dropped)
}

/// Guests' frames into valed (sent) and valed's to them (received) over `taps`, since
/// the counts `base` were read.
fn guest_totals(taps: &[&str], base: &[(u64, u64)]) -> (u64, u64) {
    taps.iter().zip(base).fold((0, 0), |(s, r), (t, (s0, r0))| {
        let (s1, r1, _) = tap_counts(t);
        (s + s1 - s0, r + r1 - r0)
    })
}

/// QEMU arguments for the VM's NIC. vhost-user needs the guest's memory in a shared
/// memfd, and `vectors=0` (QEMU 7.2 under TCG crashes with MSI-X on vhost-user).
/// memory-backend-memfd seals it against shrinking itself (`seal=on`, its default), so
/// valed takes it without `--vhost-trust-unsealed`.
/// A vhost-user netdev may end in `;queues=N` (several queue pairs, the device `mq=on`).
fn vm_net_args(netdev: &str, mac: u8) -> Vec<String> {
    let dev = format!("virtio-net-pci,netdev=n0,mac=52:54:00:12:34:{mac:02x}");
    match netdev.strip_prefix("vhost-user:") {
        Some(rest) => {
            let (path, queues) = match rest.split_once(";queues=") {
                Some((path, n)) => (path, Some(n)),
                None => (rest, None),
            };
            let (netdev, mq) = match queues {
                Some(n) => (format!("vhost-user,id=n0,chardev=c0,queues={n}"), ",mq=on"),
                None => ("vhost-user,id=n0,chardev=c0".to_string(), ""),
            };
            vec![
                "-object".into(),
                "memory-backend-memfd,id=mem,size=256M,share=on".into(),
                "-numa".into(),
                "node,memdev=mem".into(),
                "-chardev".into(),
                format!("socket,id=c0,path={path}"),
                "-netdev".into(),
                netdev,
                "-device".into(),
                format!("{dev}{mq},vectors=0"),
            ]
        }
        None => vec!["-netdev".into(), netdev.into(), "-device".into(), dev],
    }
}

/// The guest, or `None` after printing why the test is skipped.
fn ready() -> Option<PathBuf> {
    if let Some(r) = skip_reason() {
        skip(&r);
        return None;
    }
    match guest() {
        Ok(c) => Some(c),
        Err(r) => {
            // QEMU and the packages are there (checked above): a guest that does not
            // build is a failure under VALE_TEST_STRICT=1, not a skip.
            peer_broken(&r);
            None
        }
    }
}

#[test]
fn qemu_guests_on_one_switch_talk_and_another_switch_is_apart() {
    let Some(cache) = ready() else {
        return;
    };
    let d = Daemon::start("qemu", &[]);
    let tag = std::process::id() % 10000;
    let (ta, tb, tc) = (
        format!("vq{tag}a"),
        format!("vq{tag}b"),
        format!("vq{tag}c"),
    );
    // A answers (and serves iperf3), B pings it and runs iperf3 against it, C (on
    // another switch) tries to ping it.
    let mut a = Vm::start(
        &d.dir,
        &cache,
        Net::Tap(&ta),
        1,
        "t_ip=10.55.0.1/24 t_role=server",
    );
    let mut b = Vm::start(
        &d.dir,
        &cache,
        Net::Tap(&tb),
        2,
        "t_ip=10.55.0.2/24 t_role=pingclient t_peer=10.55.0.1 t_wait=4 t_count=3",
    );
    let mut c = Vm::start(
        &d.dir,
        &cache,
        Net::Tap(&tc),
        3,
        "t_ip=10.55.0.3/24 t_role=ping t_peer=10.55.0.1 t_wait=4 t_count=2",
    );
    // A client on vale2 with C: C's side of the isolation works (its frames reach it).
    let w = d.open("vale2:w");
    for (sw, t) in [("vale1", &ta), ("vale1", &tb), ("vale2", &tc)] {
        let o = d.ctl(&["-a", &format!("{sw}:{t}")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // The guests' frames are counted by their taps from here, as by valed.
    let taps = [&*ta, &*tb, &*tc];
    let base: Vec<_> = taps
        .iter()
        .map(|t| {
            let (s, r, _) = tap_counts(t);
            (s, r)
        })
        .collect();
    let log_b = b.wait(90);
    let log_c = c.wait(60);
    assert!(
        log_b.contains("T_PING_OK"),
        "B pings A through vale1:\n{log_b}\nA:\n{}",
        a.log()
    );
    assert!(log_b.contains("T_IPERF_OK"), "B's iperf3 to A:\n{log_b}");
    assert!(
        log_c.contains("T_PING_FAIL"),
        "C on vale2 must not reach A:\n{log_c}"
    );
    let fdb = stdout_of(&d.ctl(&["fdb", "vale1"]));
    for mac in ["52:54:00:12:34:01", "52:54:00:12:34:02"] {
        assert!(fdb.contains(mac), "{mac} learned on vale1: {fdb}");
    }
    let at_w = drain(&w, 1.0);
    let c_mac = [0x52, 0x54, 0, 0x12, 0x34, 3];
    assert!(
        at_w.iter().any(|f| f[6..12] == c_mac),
        "C's frames reach the other port of its own switch"
    );
    // Two ports per switch: each frame makes one copy.
    let seen = at_w.len() as u64;
    d.assert_conserved_with(|| {
        let (sent, got) = guest_totals(&taps, &base);
        (sent, got + seen)
    });
    // A guest going away: detach, and the switch goes on.
    for (sw, t) in [("vale1", &ta), ("vale1", &tb), ("vale2", &tc)] {
        let o = d.ctl(&["-d", &format!("{sw}:{t}")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    drop(a.wait(0));
}

#[test]
fn qemu_netdev_dgram_ports_and_a_tap_guest_share_a_switch() {
    let Some(cache) = ready() else {
        return;
    };
    let d = Daemon::start("qemu-dgram", &[]);
    let dir = d.dir.clone();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let tag = std::process::id() % 10000;
    let ta = format!("vd{tag}a");
    // B and C reach the switch with -netdev dgram (plain frames, no offloads): valed
    // binds its socket first, the VM binds its own and sends to valed's.
    for (port, ours, theirs) in [
        ("vale1:db", p("vb.sock"), p("qb.sock")),
        ("vale2:dc", p("vc.sock"), p("qc.sock")),
    ] {
        let o = d.ctl(&["qemu-dgram", port, "--bind", &ours, "--peer", &theirs]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (qb, vb, qc, vc) = (p("qb.sock"), p("vb.sock"), p("qc.sock"), p("vc.sock"));
    let (base_b, base_c) = (
        port_view(&d, "vale1:db", None),
        port_view(&d, "vale2:dc", None),
    );
    // B serves until told that A is done (t_hold), then reports its counts.
    let mut b = Vm::start(
        &dir,
        &cache,
        Net::Dgram(&qb, &vb),
        2,
        "t_ip=10.56.0.2/24 t_role=server t_neigh=3 t_hold=1",
    );
    let mut c = Vm::start(
        &dir,
        &cache,
        Net::Dgram(&qc, &vc),
        3,
        "t_ip=10.56.0.3/24 t_role=ping t_peer=10.56.0.2 t_count=2 t_neigh=3 t_go=1",
    );
    // A is on a tap with offloads: its TCP leaves as 64 KiB super-frames, which the
    // switch must cut to MSS-sized frames for B's plain datagram port.
    let mut a = Vm::start(
        &dir,
        &cache,
        Net::Tap(&ta),
        1,
        "t_ip=10.56.0.1/24 t_role=pingclient t_peer=10.56.0.2 t_count=3 t_neigh=3 t_go=1",
    );
    let port_a = format!("vale1:{ta}");
    let o = d.ctl(&["-a", &port_a]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // (A is still booting: it has sent nothing yet.)
    let base_a = port_view(&d, &port_a, Some(&ta));
    // Traffic once every guest is up.
    for vm in [&a, &b, &c] {
        vm.wait_says("T_UP");
    }
    a.go();
    c.go();
    let log_a = a.wait(90);
    let log_c = c.wait(60);
    assert!(
        log_a.contains("T_PING_OK"),
        "A pings B:\n{log_a}\nB:\n{}",
        b.log()
    );
    assert!(
        log_a.contains("T_IPERF_OK"),
        "A's iperf3 to B:\n{log_a}\nB:\n{}",
        b.log()
    );
    assert!(
        log_c.contains("T_PING_FAIL"),
        "C on vale2 must not reach B:\n{log_c}"
    );
    let list = d.ctl_json(&["list"]);
    let hosts = list["hosts"].as_array().unwrap();
    assert!(
        hosts
            .iter()
            .any(|h| h["kind"] == "qemu-dgram" && h["attached"] == "vale1:db")
    );
    // Each guest's own counts against its port's.
    b.release();
    let (ga, gb, gc) = (
        GuestCounts::parse(&log_a).expect("A's counts"),
        b.counts(60),
        GuestCounts::parse(&log_c).expect("C's counts"),
    );
    assert_guest_counts(&d, "A", &ga, &port_a, Some(&ta), base_a);
    assert_guest_counts(&d, "B", &gb, "vale1:db", None, base_b);
    assert_guest_counts(&d, "C", &gc, "vale2:dc", None, base_c);
    // And all together: what the guests sent (each frame one copy: vale1 has two
    // ports, vale2 one), plus the segments A's TSO super-frames were cut into for B's
    // plain datagram port, = what they received (and the tap's kernel dropped on the
    // way to A) + every drop the daemon counted (C's frames, with nobody else on vale2:
    // `no_dest`).
    let st = d.assert_laws();
    assert!(st.get("vale1:db", "rx_segmented") > 0, "{st:?}");
    let lost_at_tap = port_view(&d, &port_a, Some(&ta)).lost - base_a.lost;
    let sent = ga.tx_packets + gb.tx_packets + gc.tx_packets;
    let got = ga.rx_packets + gb.rx_packets + gc.rx_packets;
    assert_conserved(sent, got + lost_at_tap, &st);
    assert!(gc.tx_packets > 0 && st.get("vale2:dc", "no_dest") == gc.tx_packets);
    // Removing a QEMU port removes its socket too.
    let o = d.ctl(&["-d", "vale1:db"]);
    assert!(o.status.success());
    assert!(!std::path::Path::new(&vb).exists());
    drop(b.wait(0));
}

#[test]
fn qemu_netdev_stream_ports_and_a_vm_that_comes_back() {
    let Some(cache) = ready() else {
        return;
    };
    let d = Daemon::start("qemu-stream", &[]);
    let dir = d.dir.clone();
    let (sa, sb) = (
        dir.join("sa.sock").to_str().unwrap().to_string(),
        dir.join("sb.sock").to_str().unwrap().to_string(),
    );
    for (port, path) in [("vale1:sa", &sa), ("vale1:sb", &sb)] {
        let o = d.ctl(&["qemu-stream", port, "--listen", path]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let hosts = d.hosts();
    assert!(
        hosts
            .iter()
            .any(|h| h["kind"] == "qemu-stream" && h["waiting"] == "vale1:sa"),
        "{hosts:?}"
    );
    let o = d.ctl(&["qemu-stream", "vale1:sa", "--listen", &sa]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists already"));
    let o = d.ctl(&["qemu-stream", "vale1:sc", "--listen", &sa]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already the socket"));
    let own = d.socket.to_str().unwrap().to_string();
    let o = d.ctl(&["qemu-stream", "vale1:sd", "--listen", &own]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be a port's socket"));
    assert!(d.socket.exists(), "valed's own socket untouched");
    let (base_a, base_b) = (
        port_view(&d, "vale1:sa", None),
        port_view(&d, "vale1:sb", None),
    );
    // A serves every other VM of the test, until told they are done (t_hold).
    let mut a = Vm::start(
        &dir,
        &cache,
        Net::Stream(&sa),
        1,
        "t_ip=10.57.0.1/24 t_role=server t_neigh=4 t_hold=1",
    );
    let mut b = Vm::start(
        &dir,
        &cache,
        Net::Stream(&sb),
        2,
        "t_ip=10.57.0.2/24 t_role=pingclient t_peer=10.57.0.1 t_count=3 t_neigh=4 t_go=1",
    );
    a.wait_says("T_UP");
    b.go();
    let log_b = b.wait(90);
    assert!(
        log_b.contains("T_PING_OK"),
        "B pings A:\n{log_b}\nA:\n{}\nvaled:\n{}",
        a.log(),
        d.log()
    );
    assert!(log_b.contains("T_IPERF_OK"), "B's iperf3 to A:\n{log_b}");
    assert!(d.ports().contains(&"vale1:sb".to_string()));
    let gb = GuestCounts::parse(&log_b).expect("B's counts");
    assert_guest_counts(&d, "B", &gb, "vale1:sb", None, base_b);
    // B is gone: its port stays and waits; a new B connects to the same port.
    drop(b);
    let base_b2 = port_view(&d, "vale1:sb", None);
    let mut b2 = Vm::start(
        &dir,
        &cache,
        Net::Stream(&sb),
        3,
        "t_ip=10.57.0.3/24 t_role=ping t_peer=10.57.0.1 t_wait=2 t_count=2 t_neigh=4",
    );
    // C listens (server=on) and valed connects to it (--connect).
    let qc = dir.join("qc.sock").to_str().unwrap().to_string();
    let mut c = Vm::start(
        &dir,
        &cache,
        Net::StreamServer(&qc),
        4,
        "t_ip=10.57.0.4/24 t_role=ping t_peer=10.57.0.1 t_wait=3 t_count=2 t_neigh=4",
    );
    assert!(wait_for(10.0, || std::path::Path::new(&qc).exists()));
    let o = d.ctl(&["qemu-stream", "vale1:sc", "--connect", &qc]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // (C is still booting: it has sent nothing yet.)
    let base_c = port_view(&d, "vale1:sc", None);
    let log = b2.wait(60);
    assert!(
        log.contains("T_PING_OK"),
        "the restarted VM reaches A again:\n{log}\nvaled:\n{}",
        d.log()
    );
    let log_c = c.wait(60);
    assert!(
        log_c.contains("T_PING_OK"),
        "valed connected to C:\n{log_c}"
    );
    let o = d.ctl(&["qemu-stream", "vale1:sx", "--connect", "/nonexistent.sock"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect"));
    // Each guest's own counts against its port's, B2's since B left; A's once the
    // others are done.
    let gb2 = GuestCounts::parse(&log).expect("B2's counts");
    assert_guest_counts(&d, "B2", &gb2, "vale1:sb", None, base_b2);
    let gc = GuestCounts::parse(&log_c).expect("C's counts");
    assert_guest_counts(&d, "C", &gc, "vale1:sc", None, base_c);
    a.release();
    let ga = a.counts(60);
    assert_guest_counts(&d, "A", &ga, "vale1:sa", None, base_a);
    // Through VMs coming and going, every frame the ports took is delivered or counted;
    // and all together, what the guests sent = what they received + the daemon's drops.
    // Each frame makes one copy: the guests speak only to A or answer, so every frame
    // goes to a learned address, or (B's first, before A has said anything) is flooded
    // while vale1 has only A's port and B's.
    let st = d.assert_laws();
    let guests = [&ga, &gb, &gb2, &gc];
    let sent = guests.iter().map(|g| g.tx_packets).sum();
    let got = guests.iter().map(|g| g.rx_packets).sum();
    assert_conserved(sent, got, &st);
    let o = d.ctl(&["-d", "vale1:sb"]);
    assert!(o.status.success());
    assert!(!std::path::Path::new(&sb).exists(), "its socket is removed");
    drop(a.wait(0));
    // A port still waiting for its VM leaves no socket behind when valed stops.
    let se = dir.join("se.sock");
    let o = d.ctl(&["qemu-stream", "vale1:se", "--listen", se.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(se.exists());
    let mut d = d;
    let _ = Command::new("kill")
        .args(["-TERM", &d.pid().to_string()])
        .status();
    assert!(wait_for(5.0, || !d.alive()), "valed stops");
    assert!(!se.exists(), "its socket removed on shutdown");
}

#[test]
fn qemu_guests_over_vhost_user() {
    let Some(cache) = ready() else {
        return;
    };
    let d = Daemon::start("qemu-vhost", &[]);
    let dir = d.dir.clone();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (va, vb, vc) = (p("va.sock"), p("vb.sock"), p("vc.sock"));
    // A and C: valed listens, QEMU connects.
    for (port, path) in [("vale1:va", &va), ("vale2:vc", &vc)] {
        let o = d.ctl(&["vhost-user", port, "--path", path]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // B: QEMU listens (server=on) and waits for valed to connect (--client).
    let o = d.ctl(&["vhost-user", "vale1:vb", "--path", &vb, "--client"]);
    assert!(!o.status.success(), "--client with nobody listening fails");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot connect"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (base_a, base_c) = (
        port_view(&d, "vale1:va", None),
        port_view(&d, "vale2:vc", None),
    );
    // A serves every other VM of the test, until told they are done (t_hold).
    let mut a = Vm::start(
        &dir,
        &cache,
        Net::VhostUser(&va),
        1,
        "t_ip=10.59.0.1/24 t_role=server t_neigh=5 t_hold=1",
    );
    let mut b = Vm::start(
        &dir,
        &cache,
        Net::VhostUserServer(&vb),
        2,
        "t_ip=10.59.0.2/24 t_role=pingclient t_peer=10.59.0.1 t_count=3 t_neigh=5 t_go=1",
    );
    assert!(
        wait_for(10.0, || std::path::Path::new(&vb).exists()),
        "QEMU listens on {vb}"
    );
    let o = d.ctl(&["vhost-user", "vale1:vb", "--path", &vb, "--client"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // (B is still booting: it has sent nothing yet.)
    let base_b = port_view(&d, "vale1:vb", None);
    let mut c = Vm::start(
        &dir,
        &cache,
        Net::VhostUser(&vc),
        3,
        "t_ip=10.59.0.3/24 t_role=ping t_peer=10.59.0.1 t_wait=4 t_count=2 t_neigh=5",
    );
    a.wait_says("T_UP");
    b.go();
    let log_b = b.wait(90);
    let log_c = c.wait(60);
    assert!(
        log_b.contains("T_PING_OK"),
        "B pings A over vhost-user:\n{log_b}\nA:\n{}\n{}\n{}",
        a.log(),
        stdout_of(&d.ctl(&["list"])),
        d.log()
    );
    assert!(log_b.contains("T_IPERF_OK"), "B's iperf3 to A:\n{log_b}");
    assert!(
        log_c.contains("T_PING_FAIL"),
        "C on vale2 must not reach A:\n{log_c}"
    );
    // B's and C's own counts against their ports' (C alone on vale2: its frames are
    // the switch's `no_dest`, and nothing comes back).
    let g = GuestCounts::parse(&log_b).expect("B's counts");
    assert_guest_counts(&d, "B", &g, "vale1:vb", None, base_b);
    let g = GuestCounts::parse(&log_c).expect("C's counts");
    assert_guest_counts(&d, "C", &g, "vale2:vc", None, base_c);
    assert!(g.tx_packets > 0 && d.counter("vale2:vc", "no_dest") == g.tx_packets);
    // TCP crossed as super-frames: the guests negotiated TSO and the virtio-net header
    // went through the switch (segmented frames would average under 1514 bytes).
    let st = d.ctl_json(&["stats", "vale1:vb"]);
    let c = &st["ports"][0]["counters"];
    let (pk, by) = (
        c["tx_packets"].as_u64().unwrap(),
        c["tx_bytes"].as_u64().unwrap(),
    );
    eprintln!("B sent {pk} frames, {} bytes on average", by / pk.max(1));
    assert!(
        pk > 0 && by / pk > 3000,
        "B's frames average {} bytes ({pk} packets): no TSO through the switch",
        by / pk.max(1)
    );
    // B is gone; B2 on the same socket (valed connects again) is killed in the middle
    // of its iperf3; B3 comes back on the port and reaches A: the switch, A and the port
    // are unaffected.
    drop(b);
    let b2 = Vm::start(
        &dir,
        &cache,
        Net::VhostUserServer(&vb),
        4,
        "t_ip=10.59.0.4/24 t_role=pingclient t_peer=10.59.0.1 t_wait=3 t_count=2 t_time=30 \
         t_neigh=5",
    );
    let mid = wait_for(60.0, || {
        let l = b2.log();
        l.contains("T_PING_OK") && l.contains("bits/sec")
    });
    assert!(
        mid,
        "B2 pings A and its iperf3 runs:\n{}\n{}",
        b2.log(),
        d.log()
    );
    let sent = d.counter("vale1:vb", "tx_packets");
    drop(b2);
    // The laws hold exactly once traffic stops (host and port counters are two reads).
    d.assert_laws();
    // (B2, killed, reports no counts; B3's are held against the port's since then.)
    let base_b3 = port_view(&d, "vale1:vb", None);
    let mut b3 = Vm::start(
        &dir,
        &cache,
        Net::VhostUserServer(&vb),
        5,
        "t_ip=10.59.0.5/24 t_role=ping t_peer=10.59.0.1 t_wait=3 t_count=2 t_neigh=5",
    );
    let log = b3.wait(60);
    assert!(
        log.contains("T_PING_OK"),
        "a VM restarted after one killed mid-traffic:\n{log}\n{}",
        d.log()
    );
    assert!(
        d.counter("vale1:vb", "tx_packets") > sent,
        "B3's frames cross"
    );
    let g = GuestCounts::parse(&log).expect("B3's counts");
    assert_guest_counts(&d, "B3", &g, "vale1:vb", None, base_b3);
    // A's, once the others are done: its frames to and from B2 too (what valed could
    // not hand to B2 once it was killed is valed's to count, not A's).
    a.release();
    let g = a.counts(60);
    assert_guest_counts(&d, "A", &g, "vale1:va", None, base_a);
}

/// Guests on vhost-user ports of two queue pairs (`--queues 2`; QEMU `queues=2`, the
/// device `mq=on`): QEMU sets up every pair and the guest runs one per CPU: A (one CPU)
/// one, so what the switch has for the other goes to the pair it runs; B (two CPUs)
/// both. They ping each other and run iperf3, every frame accounted for.
#[test]
fn qemu_guests_on_vhost_user_ports_of_two_queue_pairs() {
    guests_on_two_pair_ports("qemu-vhostmq", &[]);
}

/// The same on a switch of two threads (`--switch-threads vale1=2`): each port's pair 0
/// is the lane's thread's and pair 1 its helper's (the lane's while the helper is
/// parked), and A's unrun pair 1 ring, the helper's, goes into pair 0's queue.
#[test]
fn qemu_guests_on_two_pair_ports_of_a_switch_of_two_threads() {
    guests_on_two_pair_ports("qemu-vhostmq2t", &["--switch-threads", "vale1=2"]);
}

fn guests_on_two_pair_ports(name: &str, args: &[&str]) {
    let Some(cache) = ready() else {
        return;
    };
    let d = Daemon::start(name, args);
    let dir = d.dir.clone();
    let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let (va, vb) = (p("va.sock"), p("vb.sock"));
    for (port, path) in [("vale1:va", &va), ("vale1:vb", &vb)] {
        let o = d.ctl(&["vhost-user", port, "--path", path, "--queues", "2"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (base_a, base_b) = (
        port_view(&d, "vale1:va", None),
        port_view(&d, "vale1:vb", None),
    );
    let mut a = Vm::start(
        &dir,
        &cache,
        Net::VhostUserMq(&va, 2),
        1,
        "t_ip=10.61.0.1/24 t_role=server t_neigh=5 t_hold=1",
    );
    let mut b = Vm::start_smp(
        &dir,
        &cache,
        Net::VhostUserMq(&vb, 2),
        2,
        "t_ip=10.61.0.2/24 t_role=pingclient t_peer=10.61.0.1 t_count=3 t_neigh=5 t_go=1",
        2,
    );
    a.wait_says("T_UP");
    let about = d.host("vale1:va")["about"]
        .as_str()
        .unwrap_or("")
        .to_string();
    eprintln!("A's port with its guest up: {about}");
    // Linux's virtio-net runs as many pairs as the guest has CPUs: A one, B two.
    assert!(
        about.contains("2 queue pairs (1 running; "),
        "A's port with its guest up: {about}"
    );
    b.wait_says("T_UP");
    let about_b = d.host("vale1:vb")["about"]
        .as_str()
        .unwrap_or("")
        .to_string();
    eprintln!("B's port with its guest up: {about_b}");
    assert!(
        about_b.contains("2 queue pairs (2 running; "),
        "B's port with its guest up: {about_b}"
    );
    b.go();
    let log_b = b.wait(90);
    assert!(
        log_b.contains("T_PING_OK") && log_b.contains("T_IPERF_OK"),
        "B pings A and runs iperf3 over two-pair ports:\n{log_b}\nA:\n{}\n{}\n{}",
        a.log(),
        stdout_of(&d.ctl(&["list"])),
        d.log()
    );
    let g = GuestCounts::parse(&log_b).expect("B's counts");
    assert_guest_counts(&d, "B", &g, "vale1:vb", None, base_b);
    a.release();
    let g = a.counts(60);
    assert_guest_counts(&d, "A", &g, "vale1:va", None, base_a);
    d.assert_laws();
}
