//! Real QEMU guests (TCG) on the switch. Each VM's NIC is a QEMU `-netdev tap` whose
//! host side valed attaches by name (`vale-ctl -a vale1:IF`, AF_PACKET), the way a
//! host's existing interface joins a switch. The guest is built from Debian packages by
//! `scripts/build-guest`. Needs root, /dev/net/tun, qemu-system-x86_64, busybox and
//! iperf3 (for the guest image), and apt package lists; prints SKIP otherwise.

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
        if Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!("{cmd} not installed (apt-get install {pkg})"));
        }
    }
    None
}

/// Builds (or finds) the guest; `Err` is a reason to skip.
fn guest() -> Result<PathBuf, String> {
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
    tap: String,
}

impl Vm {
    fn start(
        dir: &std::path::Path,
        cache: &std::path::Path,
        tap: &str,
        mac: u8,
        cmdline: &str,
    ) -> Vm {
        let log = dir.join(format!("{tap}.log"));
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-m", "256", "-smp", "1", "-M", "pc"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", log.display()))
            .arg("-kernel")
            .arg(cache.join("vmlinuz"))
            .arg("-initrd")
            .arg(cache.join("initramfs.gz"))
            .arg("-append")
            .arg(format!("console=ttyS0 quiet panic=-1 {cmdline}"))
            .arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:{mac:02x}"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start qemu");
        let vm = Vm {
            child,
            log,
            tap: tap.to_string(),
        };
        assert!(
            wait_for(10.0, || Command::new("ip")
                .args(["link", "show", tap])
                .output()
                .is_ok_and(|o| o.status.success())),
            "QEMU did not create {tap}"
        );
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
        let _ = Command::new("ip").args(["link", "del", &self.tap]).output();
    }
}

#[test]
fn qemu_guests_on_one_switch_talk_and_another_switch_is_apart() {
    if let Some(r) = skip_reason() {
        eprintln!("SKIP: {r}");
        return;
    }
    let cache = match guest() {
        Ok(c) => c,
        Err(r) => {
            eprintln!("SKIP: {r}");
            return;
        }
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
    let mut a = Vm::start(&d.dir, &cache, &ta, 1, "t_ip=10.55.0.1/24 t_role=server");
    let mut b = Vm::start(
        &d.dir,
        &cache,
        &tb,
        2,
        "t_ip=10.55.0.2/24 t_role=pingclient t_peer=10.55.0.1 t_wait=4 t_count=3",
    );
    let mut c = Vm::start(
        &d.dir,
        &cache,
        &tc,
        3,
        "t_ip=10.55.0.3/24 t_role=ping t_peer=10.55.0.1 t_wait=4 t_count=2",
    );
    for (sw, t) in [("vale1", &ta), ("vale1", &tb), ("vale2", &tc)] {
        let o = d.ctl(&["-a", &format!("{sw}:{t}")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
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
    // A guest going away: detach, and the switch goes on.
    for (sw, t) in [("vale1", &ta), ("vale1", &tb), ("vale2", &tc)] {
        let o = d.ctl(&["-d", &format!("{sw}:{t}")]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    drop(a.wait(0));
}
