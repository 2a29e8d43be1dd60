//! vhost-user ports against a real vhost-user frontend: DPDK's `net_virtio_user` in
//! `dpdk-testpmd` (no VM, no hugepages). Needs dpdk-testpmd (package dpdk-dev) and root;
//! prints SKIP otherwise.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root for dpdk-testpmd".into());
    }
    if Command::new("sh")
        .args(["-c", "command -v dpdk-testpmd"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        return Some("dpdk-testpmd not installed (apt-get install dpdk-dev)".into());
    }
    None
}

/// Runs testpmd on `sock` in `mode` (txonly / rxonly) for `secs` seconds while `during`
/// runs; returns its output.
fn testpmd(sock: &str, mode: &str, secs: u64, during: impl FnOnce()) -> String {
    let script = format!(
        "sleep 3; echo 'set fwd {mode}'; echo start; sleep {secs}; echo 'show port stats all'; echo stop; sleep 1; echo quit"
    );
    let cmd = format!(
        "({script}) | timeout 60 dpdk-testpmd -l 0-1 --no-pci --no-huge -m 1024 --file-prefix=vt{} \
         --vdev=net_virtio_user0,path={sock},queues=1 -- -i --nb-cores=1 --total-num-mbufs=4096",
        std::process::id()
    );
    let child = Command::new("sh")
        .args(["-c", &cmd])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    during();
    let o = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn stat(out: &str, key: &str) -> u64 {
    out.split(key)
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn testpmd_virtio_user_exchanges_traffic_through_a_vhost_user_port() {
    if let Some(r) = skip_reason() {
        eprintln!("SKIP: {r}");
        return;
    }
    let d = Daemon::start("vhost", &[]);
    let sock = d.dir.join("vm.sock").to_str().unwrap().to_string();
    let o = d.ctl(&["vhost-user", "vale0:vm", "--path", &sock]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rx = d.open("vale0:rx");

    // Guest -> switch: testpmd transmits (txonly), a client port receives.
    let out = testpmd(&sock, "txonly", 2, || {});
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
    drop(rx);

    // Switch -> guest, with the frontend connecting again (a restarted VM).
    let tx = d.open("vale0:tx");
    let frames: Vec<_> = (0..3000u32).map(|i| frame([0xff; 6], A_MAC, i)).collect();
    let out = testpmd(&sock, "rxonly", 3, || {
        for chunk in frames.chunks(100) {
            send(&tx, chunk);
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let to_vm = d.counter("vale0:vm", "rx_packets");
    let rx_pkts = stat(&out, "RX-packets:");
    assert!(to_vm >= 2900, "the switch delivered {to_vm} of 3000\n{out}");
    assert!(
        rx_pkts >= 2900,
        "testpmd received {rx_pkts} of 3000\n{out}\n{}",
        d.log()
    );
    let list = d.ctl_json(&["list"]);
    assert!(
        list["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["kind"] == "vhost-user" && h["attached"] == "vale0:vm")
    );
    // Removing the port removes its socket.
    let o = d.ctl(&["-d", "vale0:vm"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!std::path::Path::new(&sock).exists());
}

const A_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
