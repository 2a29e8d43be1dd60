//! One switch forwarded by several threads at once (`valed --switch-threads vale0=2`):
//! four port pairs of real pkt-gen processes, every frame received or counted, unicast
//! and broadcast; and the helper thread really forwarded.

mod common;
use common::*;
use std::process::{Child, Stdio};

const PAIRS: usize = 4;
const N: u64 = 200_000;

fn mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0x3c, 0, i as u8]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn count(out: &str, what: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(what))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{what}` summary in pkt-gen output:\n{out}"))
}

fn rx(d: &Daemon, port: &str) -> Child {
    d.cmd(PKT_GEN)
        .args(["-i", port, "-f", "rx", "-W", "--duration", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn tx(d: &Daemon, port: &str, dst: Option<[u8; 6]>, src: [u8; 6]) -> Child {
    let n = N.to_string();
    let mut c = d.cmd(PKT_GEN);
    c.args(["-i", port, "-f", "tx", "-n", &n, "-l", "60", "-w", "1"])
        .args(["-S", &mac_str(src)]);
    if let Some(m) = dst {
        c.args(["-D", &mac_str(m)]);
    }
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn output_of(c: Child, what: &str) -> String {
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout_of(&o)
}

/// Four pairs a_i -> b_i through one switch of two threads, unicast (the switch learned
/// each b_i's address first): each b_i gets exactly its a_i's frames, received or
/// counted as ring_full, and the daemon's laws hold.
#[test]
fn one_switch_two_threads_unicast_counts_exact() {
    let d = Daemon::start("mc-uni", &["--switch-threads", "vale0=2"]);
    // Hold every port, so that its counters outlive pkt-gen; each b_i announces its
    // address, and what the announcements left in the rings is read.
    let holds: Vec<_> = (0..PAIRS)
        .flat_map(|i| [format!("vale0:a{i}"), format!("vale0:b{i}")])
        .map(|p| d.open(&p))
        .collect();
    for i in 0..PAIRS {
        send(&holds[2 * i + 1], &[frame([0xff; 6], mac(0x10 + i), 0)]);
    }
    for h in &holds {
        drain(h, 5.0); // each port gets some: waits for the first, not the whole 5 s
    }
    let before = d.stats();
    let rxs: Vec<_> = (0..PAIRS).map(|i| rx(&d, &format!("vale0:b{i}"))).collect();
    let txs: Vec<_> = (0..PAIRS)
        .map(|i| tx(&d, &format!("vale0:a{i}"), Some(mac(0x10 + i)), mac(i)))
        .collect();
    let sent: Vec<u64> = txs
        .into_iter()
        .map(|c| count(&output_of(c, "tx"), "Sent "))
        .collect();
    let got: Vec<u64> = rxs
        .into_iter()
        .map(|c| count(&output_of(c, "rx"), "Received "))
        .collect();
    let st = d.assert_laws();
    let delta = |p: &str, k: &str| st.get(p, k) - before.get(p, k);
    for i in 0..PAIRS {
        let (a, b) = (format!("vale0:a{i}"), format!("vale0:b{i}"));
        assert_eq!(sent[i], N);
        assert_eq!(delta(&a, "tx_packets"), N, "{a} sent");
        let (rx_p, full) = (delta(&b, "rx_packets"), delta(&b, "ring_full"));
        assert_eq!(rx_p + full, N, "{b}: delivered {rx_p} + ring_full {full}");
        assert_eq!(got[i], rx_p, "{b}: pkt-gen read everything delivered");
        // Unicast: no other port got a_i's frames.
        for j in (0..PAIRS).filter(|j| *j != i) {
            assert_eq!(delta(&format!("vale0:a{j}"), "rx_packets"), 0);
        }
    }
    // Every copy made (the frames, and the announcements' 2 * PAIRS - 1 copies each)
    // is delivered or counted.
    let copies = PAIRS as u64 * N + (PAIRS * (2 * PAIRS - 1)) as u64;
    assert_conserved(copies, st.sum("rx_packets"), &st);
    let helper = thread_ticks(d.pid(), "vale-fwd0.1").expect("valed has a helper thread");
    assert!(helper > 0, "the helper thread ran (CPU ticks {helper})");
    drop(holds);
}

/// Four senders broadcasting through one switch of two threads: every b_i gets a copy
/// of every frame, received or counted, and the daemon's laws hold.
#[test]
fn one_switch_two_threads_broadcast_counts_exact() {
    let d = Daemon::start("mc-bc", &["--switch-threads", "vale0=2"]);
    broadcast_exact(&d);
}

/// The same, the threads set at run time (`vale-ctl set switch_threads`); a bad value is
/// refused with the rule.
#[test]
fn switch_threads_set_at_run_time() {
    let d = Daemon::start("mc-set", &[]);
    assert!(
        thread_ticks(d.pid(), "vale-fwd0.1").is_none(),
        "no helper yet"
    );
    let o = d.ctl(&["set", "switch_threads", "vale0=0"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("N from 1 to 256"), "{err}");
    ctl_ok(&d, &["set", "switch_threads", "vale0=2"]);
    let settings = ctl_ok(&d, &["settings"]);
    assert!(settings.contains("switch_threads = vale0=2"), "{settings}");
    broadcast_exact(&d);
}

fn broadcast_exact(d: &Daemon) {
    let holds: Vec<_> = (0..PAIRS)
        .flat_map(|i| [format!("vale0:a{i}"), format!("vale0:b{i}")])
        .map(|p| d.open(&p))
        .collect();
    let rxs: Vec<_> = (0..PAIRS).map(|i| rx(d, &format!("vale0:b{i}"))).collect();
    let txs: Vec<_> = (0..PAIRS)
        .map(|i| tx(d, &format!("vale0:a{i}"), None, mac(i)))
        .collect();
    for c in txs {
        assert_eq!(count(&output_of(c, "tx"), "Sent "), N);
    }
    // pkt-gen -W leaves 1 s after the last frame it saw: a sender that started late
    // on a busy machine may deliver after that, into the ring that `holds` shares.
    let got: Vec<u64> = rxs
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let read = count(&output_of(c, "rx"), "Received ");
            read + drain(&holds[2 * i + 1], 0.3).len() as u64
        })
        .collect();
    let st = d.assert_laws();
    let total = PAIRS as u64 * N;
    for (i, got) in got.iter().enumerate() {
        let b = format!("vale0:b{i}");
        let (rx_p, full) = (st.get(&b, "rx_packets"), st.get(&b, "ring_full"));
        assert_eq!(
            rx_p + full,
            total,
            "{b}: delivered {rx_p} + ring_full {full}"
        );
        assert_eq!(*got, rx_p, "{b}: pkt-gen read everything delivered");
    }
    let mut unread = 0;
    for i in 0..PAIRS {
        let a = format!("vale0:a{i}");
        let (rx_p, full) = (st.get(&a, "rx_packets"), st.get(&a, "ring_full"));
        assert_eq!(rx_p + full, total - N, "{a}: everyone else's frames");
        unread += rx_p;
    }
    // Each frame is copied to the 2 * PAIRS - 1 other ports: read by pkt-gen, left in
    // a sender's ring, or counted.
    let copies = total * (2 * PAIRS as u64 - 1);
    assert_conserved(copies, got.iter().sum::<u64>() + unread, &st);
    let helper = thread_ticks(d.pid(), "vale-fwd0.1").expect("valed has a helper thread");
    assert!(helper > 0, "the helper thread ran (CPU ticks {helper})");
    drop(holds);
}
