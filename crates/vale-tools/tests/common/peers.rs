//! Real peers the host and VXLAN tests share: the kernel's view of an interface in a
//! namespace, iperf3 between namespaces, and a private Open vSwitch (its own database,
//! sockets and logs in a folder of the test's).

use super::{have, path_str, peer_broken, wait_for};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// Runs a command (`args[0]` with the rest), for its output whatever its status.
pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed (`ip`, `sysctl`...); its standard output.
#[track_caller]
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The kernel's own (received, sent) packet counts of `ifname` in namespace `ns`.
pub fn link_counts(ns: &str, ifname: &str) -> (u64, u64) {
    let o = Command::new("ip")
        .args(["-n", ns, "-j", "-s", "link", "show", ifname])
        .output()
        .expect("ip");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("ip -j -s link show {ifname} in {ns}: {e}"));
    let s = &v[0]["stats64"];
    let n = |d: &str| s[d]["packets"].as_u64().unwrap_or_else(|| panic!("{v}"));
    (n("rx"), n("tx"))
}

/// The MAC address of `ifname` in namespace `ns`.
pub fn link_mac(ns: &str, ifname: &str) -> String {
    let o = Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", ifname])
        .output()
        .expect("ip");
    let s = String::from_utf8_lossy(&o.stdout);
    s.split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC for {ifname} in {ns}: {s}"))
        .to_string()
}

/// `count` pings 0.2 s apart from namespace `ns` to `dst`, with `extra` flags (`-W 1`,
/// `-M do -s 1472`), bounded at 20 s: whether they were answered.
pub fn ping_in(ns: &str, dst: &str, count: u32, extra: &[&str]) -> bool {
    let count = count.to_string();
    let mut a = vec![
        "20", "ip", "netns", "exec", ns, "ping", "-c", &count, "-i", "0.2",
    ];
    a.extend_from_slice(extra);
    a.push(dst);
    Command::new("timeout")
        .args(&a)
        .output()
        .expect("timeout ip netns exec ping")
        .status
        .success()
}

/// One iperf3 TCP stream of 2 s from namespace `client` to `server_ip` in namespace
/// `server`: the bytes received (`None`, SKIP printed, without iperf3).
pub fn iperf3(client: &str, server: &str, server_ip: &str) -> Option<u64> {
    iperf3_with(client, server, server_ip, &[])
}

/// [`iperf3`] with more client flags (`-P 8`).
pub fn iperf3_with(client: &str, server: &str, server_ip: &str, extra: &[&str]) -> Option<u64> {
    if !have("iperf3", "iperf3", "the iperf3 part") {
        return None;
    }
    let mut srv = Command::new("ip")
        .args([
            "netns", "exec", server, "iperf3", "-s", "-1", "-B", server_ip,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = wait_for(5.0, || {
        Command::new("ip")
            .args([
                "netns", "exec", server, "ss", "-Hltn", "sport", "=", ":5201",
            ])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    if !up {
        let _ = srv.kill();
        let _ = srv.wait();
        panic!("the iperf3 server in {server} did not listen");
    }
    // Bounded: a switch or uplink that stops forwarding must fail the test, not hang it.
    let mut a = vec![
        "netns", "exec", client, "iperf3", "-c", server_ip, "-t", "2", "-J",
    ];
    a.extend_from_slice(extra);
    let o = Command::new("timeout")
        .arg("30")
        .arg("ip")
        .args(&a)
        .output()
        .expect("timeout ip netns exec iperf3");
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(
        o.status.success(),
        "iperf3 {client} -> {server_ip}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("iperf3 -J");
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    eprintln!("iperf3 {client} -> {server_ip}: {:.2} Gbit/s", bps / 1e9);
    v["end"]["sum_received"]["bytes"].as_u64()
}

/// A private Open vSwitch: ovsdb-server and ovs-vswitchd (in a namespace) with their
/// database, sockets and logs in `dir`, stopped by the PIDs they wrote, and `dir`
/// removed, when dropped.
pub struct Ovs {
    pub dir: PathBuf,
    pids: Vec<String>,
}

impl Ovs {
    /// ovsdb-server, then ovs-vswitchd inside namespace `ns`; `Err` says which step
    /// failed.
    pub fn start(dir: PathBuf, ns: &str) -> Result<Ovs, String> {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut o = Ovs {
            dir,
            pids: Vec::new(),
        };
        let d = path_str(&o.dir).to_string();
        o.run(&[
            "ovsdb-tool",
            "create",
            &format!("{d}/conf.db"),
            "/usr/share/openvswitch/vswitch.ovsschema",
        ])?;
        o.run(&[
            "ovsdb-server",
            &format!("{d}/conf.db"),
            &format!("--remote=punix:{d}/db.sock"),
            &format!("--pidfile={d}/ovsdb-server.pid"),
            &format!("--unixctl={d}/ovsdb-server.ctl"),
            &format!("--log-file={d}/ovsdb-server.log"),
            "--detach",
        ])?;
        o.pid("ovsdb-server")?;
        o.vsctl(&["--no-wait", "init"])?;
        o.run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "ovs-vswitchd",
            &format!("unix:{d}/db.sock"),
            &format!("--pidfile={d}/ovs-vswitchd.pid"),
            &format!("--unixctl={d}/ovs-vswitchd.ctl"),
            &format!("--log-file={d}/ovs-vswitchd.log"),
            "--detach",
        ])?;
        o.pid("ovs-vswitchd")?;
        Ok(o)
    }

    /// [`Ovs::start`], or `None` once [`peer_broken`] has said why it did not start
    /// (the test then returns).
    pub fn started(dir: PathBuf, ns: &str) -> Option<Ovs> {
        Ovs::start(dir, ns)
            .map_err(|e| peer_broken(&format!("Open vSwitch did not start: {e}")))
            .ok()
    }

    fn pid(&mut self, daemon: &str) -> Result<(), String> {
        let f = self.dir.join(format!("{daemon}.pid"));
        let p = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        self.pids.push(p.trim().to_string());
        Ok(())
    }

    /// Runs an OVS tool with this instance's folders: its stdout, or why it failed.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        for k in ["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"] {
            c.env(k, &self.dir);
        }
        let o = c.output().map_err(|e| format!("{args:?}: {e}"))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        } else {
            Err(format!(
                "{args:?}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    /// `ovs-vsctl` against this instance's database.
    pub fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        let db = format!("--db=unix:{}/db.sock", path_str(&self.dir));
        let mut a = vec!["ovs-vsctl", "--timeout=10", &db];
        a.extend_from_slice(args);
        self.run(&a)
    }

    /// [`Ovs::vsctl`] that must work: panics with the error and ovs-vswitchd's log.
    pub fn vs(&self, args: &[&str]) -> String {
        self.vsctl(args)
            .unwrap_or_else(|e| panic!("ovs-vsctl: {e}\n{}", self.log()))
    }

    /// ovs-vswitchd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("ovs-vswitchd.log")).unwrap_or_default()
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for p in self.pids.iter().rev() {
            let _ = Command::new("kill").arg(p).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
