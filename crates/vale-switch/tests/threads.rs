//! One switch forwarded by several threads at once (`Switch::set_threads`): real
//! threads running `Forwarder::forward_worker` while this thread plays the clients.
//! Every frame arrives once, in its sender's order, or is counted; the laws hold.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vale_abi::PortGeometry;
use vale_switch::*;

const PAIRS: usize = 4;
const PER_SENDER: u64 = 20_000;

fn switch(threads: u16) -> (Switch<LearningBridge>, Vec<Client>) {
    let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
    sw.set_threads(threads).unwrap();
    let g = PortGeometry {
        tx_slots: 128,
        rx_slots: 128,
        ..Default::default()
    };
    let ids: Vec<_> = (0..2 * PAIRS)
        .map(|i| {
            let name = format!("vale0:p{i}");
            let r = vale_abi::Region::create(&name, g).unwrap();
            sw.attach(name, r).unwrap()
        })
        .collect();
    let clients = ids.iter().map(|id| Client::attach(&sw, *id)).collect();
    (sw, clients)
}

/// Runs `workers` forwarding threads over `sw` while `clients` runs here, then checks
/// the laws and that every worker forwarded some of the frames. `clients` gets a
/// function to call with how far its traffic is (frames sent by its slowest sender):
/// in the first part only worker 0 forwards, in the next only worker 1, and so on, and
/// in the last part all of them at once. So every worker takes part whatever the
/// scheduler does (on a loaded 2-vCPU machine one may otherwise not run at all while
/// the traffic lasts), and the last part runs them side by side.
fn with_workers<L: Lookup>(sw: &Switch<L>, workers: usize, clients: impl FnOnce(&dyn Fn(u64))) {
    let stop = AtomicBool::new(false);
    // Which worker may forward: one of them, or all (`workers`).
    let turn = AtomicUsize::new(0);
    let progress = |sent: u64| {
        let part = (sent * (workers as u64 + 1) / PER_SENDER) as usize;
        turn.store(part.min(workers), Ordering::Relaxed);
    };
    let moved: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..workers)
            .map(|w| {
                let (stop, turn) = (&stop, &turn);
                s.spawn(move || {
                    let (mut fw, mut notes, mut moved) = (Forwarder::new(), Vec::new(), 0);
                    while !stop.load(Ordering::Relaxed) {
                        let whose = turn.load(Ordering::Relaxed);
                        if whose != w && whose != workers {
                            std::thread::yield_now();
                            continue;
                        }
                        let n = fw.forward_worker(sw, w, t(1), &mut notes, &mut NoEgress);
                        if n == 0 {
                            std::thread::yield_now();
                        }
                        moved += n;
                        notes.clear();
                    }
                    moved
                })
            })
            .collect();
        clients(&progress);
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_laws(sw);
    assert!(
        moved.iter().all(|m| *m > 0),
        "frames each worker forwarded: {moved:?}"
    );
}

/// Sends `PER_SENDER` frames from each of `senders` (tagged `sender << 32 | seq`) to
/// `dst(sender)`, reading every port as it goes; returns what each port received.
/// `progress` hears how many frames the slowest sender has sent.
fn traffic(
    c: &[Client],
    senders: &[usize],
    dst: impl Fn(usize) -> MacAddr,
    progress: &dyn Fn(u64),
) -> Vec<Vec<u64>> {
    let mut next = vec![0u64; c.len()];
    let mut got = vec![Vec::new(); c.len()];
    let deadline = Instant::now() + Duration::from_secs(60);
    while senders.iter().any(|s| next[*s] < PER_SENDER) {
        assert!(Instant::now() < deadline, "traffic did not finish");
        progress(senders.iter().map(|s| next[*s]).min().unwrap_or(0));
        for &s in senders {
            let n = (PER_SENDER - next[s]).min(64);
            let frames: Vec<_> = (next[s]..next[s] + n)
                .map(|k| frame(dst(s), mac(s as u16), (s as u64) << 32 | k, 60))
                .collect();
            next[s] += c[s].send(&frames) as u64;
        }
        for (p, cl) in c.iter().enumerate() {
            got[p].extend(cl.recv_frames().iter().map(|f| tag_of(f)));
        }
    }
    // The last frames (all workers at it): until nothing more arrives for a while.
    progress(PER_SENDER);
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(1) {
        for (p, cl) in c.iter().enumerate() {
            let f = cl.recv_frames();
            if !f.is_empty() {
                quiet = Instant::now();
            }
            got[p].extend(f.iter().map(|f| tag_of(f)));
        }
    }
    got
}

/// `got` holds, per sender, an increasing run of its own sequence numbers (nothing twice,
/// nothing out of order); returns how many of each sender's frames it holds.
fn in_order(got: &[u64], port: usize) -> Vec<u64> {
    let mut last = vec![None::<u64>; 2 * PAIRS];
    let mut n = vec![0u64; 2 * PAIRS];
    for tag in got {
        let (s, k) = ((tag >> 32) as usize, tag & 0xffff_ffff);
        assert!(
            last[s].is_none_or(|l| k > l),
            "port {port}: sender {s}'s frame {k} after {last:?}"
        );
        last[s] = Some(k);
        n[s] += 1;
    }
    n
}

#[test]
fn two_threads_four_pairs_unicast_in_order_and_counted() {
    let (sw, c) = switch(2);
    // Each receiver p(2i+1) announces itself, so that p(2i) -> p(2i+1) is unicast.
    for i in 0..PAIRS {
        c[2 * i + 1].send(&[frame(MacAddr::BROADCAST, mac(100 + i as u16), 0, 60)]);
    }
    let mut fw = Forwarder::new();
    while fw.forward(&sw, t(1), &mut Vec::new(), &mut NoEgress) > 0 {}
    for cl in &c {
        cl.recv_frames();
    }
    let before: Vec<_> = (0..2 * PAIRS)
        .map(|p| sw.port(PortId(p as u16)).unwrap().stats())
        .collect();
    let senders: Vec<usize> = (0..PAIRS).map(|i| 2 * i).collect();
    let mut got = Vec::new();
    with_workers(&sw, 2, |progress| {
        got = traffic(&c, &senders, |s| mac(100 + (s / 2) as u16), progress);
    });
    for i in 0..PAIRS {
        let (a, b) = (2 * i, 2 * i + 1);
        let n = in_order(&got[b], b);
        let st = sw.port(PortId(b as u16)).unwrap().stats();
        let full = st.drops[DropReason::RingFull as usize]
            - before[b].drops[DropReason::RingFull as usize];
        assert_eq!(n[a] + full, PER_SENDER, "port {b}: received + ring_full");
        assert_eq!(
            n.iter().sum::<u64>(),
            n[a],
            "port {b} got only its sender's frames"
        );
        assert_eq!(st.rx_packets - before[b].rx_packets, n[a]);
        assert!(got[a].is_empty(), "nothing came back to sender {a}");
    }
}

#[test]
fn two_threads_broadcast_in_order_and_counted() {
    let (sw, c) = switch(2);
    let senders = [0usize, 3];
    let mut got = Vec::new();
    with_workers(&sw, 2, |progress| {
        got = traffic(&c, &senders, |_| MacAddr::BROADCAST, progress);
    });
    for (p, g) in got.iter().enumerate() {
        let n = in_order(g, p);
        let st = sw.port(PortId(p as u16)).unwrap().stats();
        let full = st.drops[DropReason::RingFull as usize];
        let expect: u64 = senders
            .iter()
            .filter(|s| **s != p)
            .map(|_| PER_SENDER)
            .sum();
        assert_eq!(n.iter().sum::<u64>() + full, expect, "port {p}");
        assert_eq!(st.rx_packets, n.iter().sum::<u64>(), "port {p}");
    }
}
