//! A real valed per test, on its own socket, stopped (and checked) at the end.
#![allow(dead_code)]

pub mod peers;
pub mod wire;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const VALED: &str = env!("CARGO_BIN_EXE_valed");
pub const VALE_CTL: &str = env!("CARGO_BIN_EXE_vale-ctl");
pub const PKT_GEN: &str = env!("CARGO_BIN_EXE_pkt-gen");

pub struct Daemon {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
}

/// The directory of the daemon started as `tag` (made, emptied, when it starts).
pub fn dir_of(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vale-test-{}-{tag}", std::process::id()))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = dir_of(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Daemon {
    pub fn start(tag: &str, extra: &[&str]) -> Daemon {
        Daemon::start_cmd(tag, extra, Command::new(VALED))
    }

    /// A valed inside network namespace `ns` (`ip netns exec`, which execs valed: the
    /// child's PID is valed's), its control socket a file as usual. Its TAP ports and
    /// sockets are made in `ns`.
    pub fn start_in(ns: &str, tag: &str, extra: &[&str]) -> Daemon {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, VALED]);
        Daemon::start_cmd(tag, extra, c)
    }

    /// A valed run by `wrapper` (a program and its arguments, then valed's path and
    /// flags), e.g. under valgrind; the child's PID is valed's where the wrapper execs
    /// or, as valgrind does, runs it in its own process.
    pub fn start_under(wrapper: &[&str], tag: &str, extra: &[&str]) -> Daemon {
        let mut c = Command::new(wrapper[0]);
        c.args(&wrapper[1..]).arg(VALED);
        Daemon::start_cmd(tag, extra, c)
    }

    fn start_cmd(tag: &str, extra: &[&str], mut cmd: Command) -> Daemon {
        let dir = temp_dir(tag);
        let socket = dir.join("valed.sock");
        let log = std::fs::File::create(dir.join("valed.log")).unwrap();
        let child = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("-v")
            // Tests run side by side: pinned (`--cpus auto`), every daemon's forwarding
            // thread would share the last CPU; `--no-pin` keeps them apart should the
            // default change. A test of pinning passes `--cpus`.
            .arg("--no-pin")
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn valed");
        let d = Daemon { child, dir, socket };
        d.wait_ready();
        d
    }

    fn wait_ready(&self) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if vale::sock::connect(&self.socket).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("valed did not start: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("valed.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens a port through the library, as any client process would.
    pub fn open(&self, name: &str) -> vale::Port {
        vale::Port::open_with(
            name,
            &vale::OpenOptions {
                socket: Some(self.socket.clone()),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("open {name}: {e}"))
    }

    pub fn cmd(&self, bin: &str) -> Command {
        let mut c = Command::new(bin);
        c.env("VALE_SOCKET", &self.socket);
        c
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.cmd(VALE_CTL)
            .args(args)
            .output()
            .expect("run vale-ctl")
    }

    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.ctl(&a);
        assert!(
            o.status.success(),
            "vale-ctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("json")
    }

    /// The host ports (`vale-ctl list`'s `hosts`).
    pub fn hosts(&self) -> Vec<serde_json::Value> {
        let v = self.ctl_json(&["list"]);
        v["hosts"].as_array().cloned().unwrap_or_default()
    }

    /// One host port, by interface name or by the port it is attached as.
    pub fn host(&self, which: &str) -> serde_json::Value {
        let hosts = self.hosts();
        hosts
            .iter()
            .find(|h| h["name"] == which || h["attached"] == which)
            .cloned()
            .unwrap_or_else(|| panic!("no host port {which}: {hosts:?}"))
    }

    /// Names of the ports that exist now.
    pub fn ports(&self) -> Vec<String> {
        let v = self.ctl_json(&["list"]);
        v["switches"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect()
    }

    pub fn counter(&self, port: &str, key: &str) -> u64 {
        let v = self.ctl_json(&["stats", port]);
        let c = &v["ports"][0]["counters"];
        c[key]
            .as_u64()
            .or_else(|| c["drops"][key].as_u64())
            .unwrap_or_else(|| panic!("no counter {key} in {c}"))
    }

    /// `key` of `port` once it reads `want`, or what it reads after 5 s: the sender's
    /// and receivers' counts are added after a pass's frames are in their rings, so
    /// a peer may have them a moment before the counters do.
    pub fn counter_at(&self, port: &str, key: &str, want: u64) -> u64 {
        let mut v = self.counter(port, key);
        let t = Instant::now();
        while v != want && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
            v = self.counter(port, key);
        }
        v
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// valed's CPU-seconds (user + system) so far.
    pub fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// valed's CPU-seconds over the next `secs` (a daemon left alone should use none).
    pub fn idle_cpu(&self, secs: f64) -> f64 {
        let t0 = self.cpu_secs();
        std::thread::sleep(Duration::from_secs_f64(secs));
        self.cpu_secs() - t0
    }

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU ticks (user + system) of valed's thread named `name`, if it has one.
pub fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        return Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?);
    }
    None
}

/// Whether one of process `pid`'s threads named `name` sits in write(2) (system call 1
/// on x86-64, the first field of /proc's `syscall`).
pub fn thread_in_write(pid: u32, name: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let call = std::fs::read_to_string(t.path().join("syscall")).unwrap_or_default();
            comm.trim() == name && call.starts_with("1 ")
        })
}

/// Waits for `cond` up to `secs`.
pub fn wait_for(secs: f64, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

pub fn frame(dst: [u8; 6], src: [u8; 6], tag: u32) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&tag.to_be_bytes());
    f
}

/// Receives everything pending on a port for up to `secs`.
pub fn drain(p: &vale::Port, secs: f64) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        if p.poll(vale::Interest::RX, Some(Duration::from_millis(50)))
            .unwrap()
        {
            p.dispatch(0, |f| got.push(f.to_vec()));
            p.rxsync().unwrap();
        } else if !got.is_empty() {
            break;
        }
    }
    got
}

pub fn send(p: &vale::Port, frames: &[Vec<u8>]) {
    for f in frames {
        while !p.inject(f) {
            p.poll(vale::Interest::TX, Some(Duration::from_millis(100)))
                .unwrap();
        }
    }
    p.txsync().unwrap();
}

pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A check that cannot run on this machine: says why on stderr and counts it in the file
/// `$VALE_SKIP_LOG` (scripts/test prints the count and the reasons in its closing line;
/// cargo hides a passing test's output).
pub fn skip(reason: &str) {
    eprintln!("SKIP: {reason}");
    if let Some(path) = std::env::var_os("VALE_SKIP_LOG") {
        use std::io::Write;
        let name = std::thread::current().name().unwrap_or("?").to_string();
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
        {
            let _ = writeln!(f, "{name}: {reason}");
        }
    }
}

/// Whether `VALE_TEST_STRICT=1` (.ci/run, after installing every peer): there a peer
/// that is missing or does not work fails the test instead of skipping it.
pub fn strict() -> bool {
    std::env::var("VALE_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// A peer that is installed but failed to get ready (a QEMU guest that did not build):
/// skipped here (see [`skip`]), a failure under `VALE_TEST_STRICT=1`, where nothing
/// excuses it.
pub fn peer_broken(reason: &str) {
    if strict() {
        panic!("{reason}; under VALE_TEST_STRICT=1 a peer that does not work is a failure");
    }
    skip(reason);
}

/// Whether program `cmd` (Debian package `pkg`) is installed. If not, the check that
/// needs it is skipped (see [`skip`]), except under `VALE_TEST_STRICT=1`, which `.ci/run`
/// sets after installing every such package: there a missing one fails the test.
pub fn have(cmd: &str, pkg: &str, what: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let reason = format!("{what}: `{cmd}` not installed (apt-get install {pkg})");
        if strict() {
            panic!("{reason}; .ci/run installs it, so its absence is a failure here");
        }
        skip(&reason);
    }
    found
}

/// Every port's counters and every host port's, read at one moment (`vale-ctl --json
/// stats` and `list`): what the daemon says about the frames it was given.
#[derive(Debug, Clone)]
pub struct Stats {
    /// (port name, its `counters`), monitors included.
    pub ports: Vec<(String, serde_json::Value)>,
    /// `vale-ctl list`'s `hosts`.
    pub hosts: Vec<serde_json::Value>,
}

/// A counter of a `counters` object, top level or by drop reason (0 if absent).
fn num(c: &serde_json::Value, key: &str) -> u64 {
    c[key]
        .as_u64()
        .or_else(|| c["drops"][key].as_u64())
        .unwrap_or(0)
}

/// The drop reasons counted on the destination (`DropReason::on_sender` false).
const RECEIVER_DROPS: [&str; 5] = [
    "ring_full",
    "oversize",
    "bad_rx_buf",
    "bad_offload",
    "tx_error",
];
/// The drop reasons counted on the sender.
const SENDER_DROPS: [&str; 7] = [
    "runt",
    "bad_buf",
    "bad_len",
    "bad_frag",
    "no_dest",
    "vlan_ingress_filter",
    "vlan_not_member",
];
/// A host port's losses of frames between its peer and its switch port (`read_errors`
/// is not one: it counts failed reads, such as a peer hanging up, not frames; nor is a
/// VXLAN port's `replica_drops`, copies of a frame that did leave).
const HOST_DROPS: [&str; 11] = [
    "truncated",
    "write_errors",
    "kernel_drops",
    "no_peer",
    "too_big",
    "vxlan_too_short",
    "vxlan_no_i_flag",
    "vxlan_reserved",
    "vxlan_foreign_vni",
    "vxlan_queue_full",
    "vxlan_tagged_mapped",
];

impl Stats {
    /// One port's `counters` (panics with the list if there is none).
    pub fn port(&self, name: &str) -> &serde_json::Value {
        self.ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .unwrap_or_else(|| panic!("no port {name} in {:?}", self.ports))
    }

    /// One counter of one port.
    pub fn get(&self, port: &str, key: &str) -> u64 {
        num(self.port(port), key)
    }

    /// A counter summed over every port (and host port, for host counters).
    pub fn sum(&self, key: &str) -> u64 {
        let ports: u64 = self.ports.iter().map(|(_, c)| num(c, key)).sum();
        let hosts: u64 = self.hosts.iter().map(|h| num(&h["counters"], key)).sum();
        ports + hosts
    }

    /// Every frame or copy the daemon dropped, by any reason, anywhere.
    pub fn drops(&self) -> u64 {
        let on = |keys: &[&str]| keys.iter().map(|k| self.sum(k)).sum::<u64>();
        // bad_offload is both a port's drop reason and a host counter: `sum` adds both.
        on(&RECEIVER_DROPS) + on(&SENDER_DROPS) + on(&HOST_DROPS)
    }

    /// The frames segmentation added: each segmented copy became `rx_segments` frames.
    pub fn segments_added(&self) -> u64 {
        self.sum("rx_segments")
            .saturating_sub(self.sum("rx_segmented"))
    }

    /// The first conservation law the counters break (see `vale_switch::stats`): each
    /// port's as a sender and as a receiver, then each switch's (every copy a sender
    /// made was handed to a destination), then each host port's (every frame read from
    /// its peer was sent into its switch port).
    pub fn broken_law(&self) -> Option<String> {
        let mut switches: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for (name, c) in &self.ports {
            let n = |k: &str| num(c, k);
            // A reason these lists do not know would leave its drops out of the laws.
            let known = |k: &String| {
                SENDER_DROPS.contains(&k.as_str()) || RECEIVER_DROPS.contains(&k.as_str())
            };
            if let Some(k) = c["drops"]
                .as_object()
                .and_then(|d| d.keys().find(|k| !known(k)))
            {
                return Some(format!(
                    "{name}: drop reason `{k}` is in neither SENDER_DROPS nor RECEIVER_DROPS (tests/common)"
                ));
            }
            let sdrops: u64 = SENDER_DROPS.iter().map(|k| n(k)).sum();
            if n("tx_packets") != n("forwarded") + sdrops {
                return Some(format!(
                    "{name}: tx_packets != forwarded + sender drops: {c}"
                ));
            }
            let rdrops: u64 = RECEIVER_DROPS.iter().map(|k| n(k)).sum();
            let handed = n("rx_copies") + n("mon_copies") + n("rx_segments");
            if handed != n("rx_packets") + rdrops + n("rx_segmented") {
                return Some(format!(
                    "{name}: rx_copies + mon_copies - rx_segmented + rx_segments \
                     != rx_packets + receiver drops: {c}"
                ));
            }
            let sw = switches
                .entry(name.split(':').next().unwrap_or(""))
                .or_default();
            sw.0 += n("copies");
            sw.1 += n("rx_copies");
        }
        for (sw, (copies, rx_copies)) in switches {
            if copies != rx_copies {
                return Some(format!(
                    "switch {sw}: its ports made {copies} copies and were handed {rx_copies}"
                ));
            }
        }
        for h in &self.hosts {
            let (Some(port), c) = (h["attached"].as_str(), &h["counters"]) else {
                continue;
            };
            let Some((_, pc)) = self.ports.iter().find(|(n, _)| n == port) else {
                continue;
            };
            if num(c, "from_host") != num(pc, "tx_packets") {
                return Some(format!(
                    "host port {}: from_host != tx_packets of {port}: {c} / {pc}",
                    h["name"]
                ));
            }
            // What the switch delivered to the port went out, or was lost and counted
            // there, or still waits (in its RX ring, or a guest's queue).
            let out = [
                "to_host",
                "truncated",
                "write_errors",
                "no_peer",
                "bad_offload",
                "too_big",
            ];
            let out: u64 = out.iter().map(|k| num(c, k)).sum();
            if out > num(pc, "rx_packets") {
                return Some(format!(
                    "host port {}: more frames out or lost ({out}) than {port} was \
                     delivered: {c} / {pc}",
                    h["name"]
                ));
            }
        }
        None
    }
}

impl Daemon {
    /// Every port's and host port's counters now.
    pub fn stats(&self) -> Stats {
        let v = self.ctl_json(&["stats"]);
        let ports = v["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["counters"].clone())))
            .collect();
        Stats {
            ports,
            hosts: self.hosts(),
        }
    }

    /// Checks the conservation laws over every port of the daemon (its ports must all
    /// still exist: hold a sender's port open if the sender exits) and returns the
    /// counters it checked. The counters are read while the forwarders run: it waits up
    /// to a second for a batch in flight to be published.
    #[track_caller]
    pub fn assert_laws(&self) -> Stats {
        let mut st = self.stats();
        let t = Instant::now();
        while let Some(law) = st.broken_law() {
            if t.elapsed() > Duration::from_secs(1) {
                panic!("conservation law broken: {law}\nvaled log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
            st = self.stats();
        }
        st
    }
}

/// The law that tests across processes: the frames the senders' own counts say they
/// sent, times the copies each makes (`sent`, monitors' copies included), plus those
/// segmentation added, equal the frames the receivers' own counts say they got
/// (`received`: pkt-gen's `Received`, frames in a capture file, a kernel interface's
/// counter) plus every drop the daemon counted.
#[track_caller]
pub fn assert_conserved(sent: u64, received: u64, st: &Stats) {
    let (added, drops) = (st.segments_added(), st.drops());
    assert_eq!(
        sent + added,
        received + drops,
        "sent {sent} + segments added {added} != received {received} + daemon drops {drops}: {st:?}"
    );
}

impl Daemon {
    /// [`assert_conserved`] where the peers' own counts move on their own (kernel
    /// interface counters, a guest's): `counts` reads (sent, received) now; the daemon's
    /// laws and the balance must hold at one reading within 3 seconds.
    #[track_caller]
    pub fn assert_conserved_with(&self, mut counts: impl FnMut() -> (u64, u64)) -> Stats {
        let t = Instant::now();
        loop {
            let (sent, received) = counts();
            let st = self.stats();
            let law = st.broken_law();
            let balanced = sent + st.segments_added() == received + st.drops();
            if law.is_none() && balanced {
                return st;
            }
            if t.elapsed() > Duration::from_secs(3) {
                if let Some(law) = law {
                    panic!("conservation law broken: {law}");
                }
                assert_conserved(sent, received, &st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `vale-ctl ARGS` against `d`, which must succeed: its standard output (else the test
/// fails with vale-ctl's error and valed's log).
#[track_caller]
pub fn ctl_ok(d: &Daemon, args: &[&str]) -> String {
    let o = d.ctl(args);
    assert!(
        o.status.success(),
        "vale-ctl {args:?}: {}\nvaled log:\n{}",
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    stdout_of(&o)
}

/// A child process killed (and reaped) when this goes, a failed assertion included.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
