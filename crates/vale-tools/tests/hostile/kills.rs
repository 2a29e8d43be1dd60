//! 100 SIGKILLs of clients in the middle of their traffic: pairs of pkt-gen (a sender
//! and a receiver) killed while frames flow. Their ports go, valed's descriptors come
//! back to the baseline and its memory stays flat, and a bystander port still works.

use super::*;

const PAIRS: usize = 50;
/// RSS slack: allocator caches and a grown port table may keep a few pages.
const RSS_SLACK_KIB: u64 = 4096;

/// Spawns pkt-gen `f` on `port`, output discarded.
fn pkt_gen(d: &Daemon, port: &str, f: &str) -> Child {
    d.cmd(PKT_GEN)
        .args(["-i", port, "-f", f])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `tx` has sent and `rx` has received frames (mid-traffic).
fn flowing(d: &Daemon, tx: &str, rx: &str) -> bool {
    wait_for(5.0, || {
        let v = d.ctl_json(&["stats"]);
        let n = |name: &str, k: &str| {
            v["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name)
                .and_then(|p| p["counters"][k].as_u64())
                .unwrap_or(0)
        };
        n(tx, "tx_packets") > 0 && n(rx, "rx_packets") > 0
    })
}

fn sigkill(c: &mut Child) {
    c.kill().unwrap(); // SIGKILL
    c.wait().unwrap();
}

/// One pair: started, seen flowing, both killed. Returns whether traffic was seen.
fn kill_a_pair(d: &Daemon, i: usize) -> bool {
    let (tx, rx) = (format!("vale0:t{i}"), format!("vale0:r{i}"));
    let mut r = pkt_gen(d, &rx, "rx");
    let mut t = pkt_gen(d, &tx, "tx");
    let seen = flowing(d, &tx, &rx);
    sigkill(&mut t);
    sigkill(&mut r);
    seen
}

#[test]
fn a_hundred_clients_killed_mid_traffic_leave_nothing_behind() {
    let _one = serialise();
    let mut d = Daemon::start("hostile-kills", &[]);
    let keep = d.open("vale0:keep");
    for i in 0..2 {
        kill_a_pair(&d, 1000 + i); // let allocators settle before the baseline
    }
    assert!(wait_for(3.0, || d.ports() == ["vale0:keep"]));
    let before = settled(&d);
    let mut flowed = 0;
    for i in 0..PAIRS {
        flowed += kill_a_pair(&d, i) as usize;
    }
    assert!(
        wait_for(5.0, || d.ports() == ["vale0:keep"]),
        "every killed client's port is gone: {:?}",
        d.ports()
    );
    assert!(wait_for(5.0, || d.fd_count() <= before.fds));
    let after = settled(&d);
    // The bystander still gets flooded frames from a new client.
    let other = d.open("vale0:new");
    drain(&keep, 0.5); // what the killed senders flooded to it
    send(&other, &[frame([0xff; 6], [2, 0, 0, 0, 0x4b, 1], 9)]);
    let got = drain(&keep, 2.0).len();
    figure(
        "SIGKILLs",
        &format!(
            "{} clients SIGKILLed mid-traffic ({flowed} of {PAIRS} pairs seen flowing)",
            2 * PAIRS
        ),
        &format!(
            "ports left {:?}; bystander got {got} of 1 frame after",
            d.ports()
        ),
        before,
        after,
    );
    assert_eq!(flowed, PAIRS, "every pair was killed mid-traffic");
    assert_eq!(after.fds, before.fds, "descriptors back to the baseline");
    assert!(
        after.rss_kib <= before.rss_kib + RSS_SLACK_KIB,
        "RSS grew from {} KiB to {} KiB (slack {RSS_SLACK_KIB} KiB)",
        before.rss_kib,
        after.rss_kib
    );
    assert_eq!(got, 1, "the bystander still receives");
    assert!(d.alive());
}
