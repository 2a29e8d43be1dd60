//! A client that writes random values into every field of its own region at full speed
//! while two bystanders on the same switch exchange paced traffic.

use super::*;
use vale_abi::layout::{NETMAP_RING_SIZE, NETMAP_SLOT_SIZE, NS_MOREFRAG, off, sync_off};
use vale_abi::{Dir, Region};

const A: [u8; 6] = [2, 0, 0, 0, 0x5c, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0x5c, 0xb];
/// The source of b's frames to the scribbler. Not B: the scribbler's TX slots may name
/// the buffers its RX ring received them in and send them again, and the learning bridge
/// would then rightly move B to the scribbler's port (a client may claim any address).
const B2: [u8; 6] = [2, 0, 0, 0, 0x5c, 0xb2];
const BCAST: [u8; 6] = [0xff; 6];
const SCRIBBLE_SECS: f64 = 3.0;
/// The bystanders' pace: well within what a debug-build receiver follows on a busy
/// machine, with a 4096-slot ring as slack.
const RATE: u64 = 8000;
const SENT: u64 = 20_000;

/// A value for a field whose sane range is `[0, n)`: mostly in range (so the daemon's
/// deeper paths see plausible input), often just past it, sometimes anything at all.
fn plausible(rng: &mut Rng, n: u32) -> u32 {
    match rng.below(8) {
        0 | 1 => rng.next_u64() as u32,
        2 => n.wrapping_add(rng.below(4) as u32),
        _ => rng.below(n.max(1) as u64) as u32,
    }
}

fn put_u32(region: &Region, at: usize, v: u32) {
    region.write_raw(at, &v.to_ne_bytes());
}

/// Random slots over all of a ring: single slots and `NS_MOREFRAG` chains, some longer
/// than the 64-fragment limit, some never terminated.
fn scribble_slots(rng: &mut Rng, region: &Region, slots_at: usize, nslots: u32) {
    let (nbufs, bsz) = (region.layout().nbufs, region.geometry().buf_size);
    let mut i = 0;
    while i < nslots {
        let chain = if rng.below(4) == 0 {
            1 + rng.below(70) as u32
        } else {
            1
        };
        for k in 0..chain.min(nslots - i) {
            let last = k + 1 == chain;
            let mut flags = rng.next_u64() as u16;
            if rng.below(2) == 0 {
                flags = if last { 0 } else { NS_MOREFRAG };
            }
            let len = if rng.below(4) == 0 {
                rng.next_u64() as u16
            } else {
                plausible(rng, bsz + 1) as u16
            };
            let mut slot = [0u8; NETMAP_SLOT_SIZE];
            slot[..4].copy_from_slice(&plausible(rng, nbufs).to_ne_bytes());
            slot[4..6].copy_from_slice(&len.to_ne_bytes());
            slot[6..8].copy_from_slice(&flags.to_ne_bytes());
            slot[8..].copy_from_slice(&rng.next_u64().to_ne_bytes()); // ptr
            region.write_raw(slots_at + (i + k) as usize * NETMAP_SLOT_SIZE, &slot);
        }
        i += chain;
    }
}

/// One pass over every ring: its slots, its header (`head`/`cur`/`tail`, sometimes all
/// 256 bytes) and its sync words, both the application's and the switch's.
fn scribble_rings(rng: &mut Rng, region: &Region) {
    let layout = region.layout().clone();
    let g = layout.geometry;
    for (dir, rings, nslots) in [
        (Dir::Tx, g.tx_rings, g.tx_slots),
        (Dir::Rx, g.rx_rings, g.rx_slots),
    ] {
        for r in 0..rings {
            let (Some(ring), Some(sync)) =
                (layout.ring_offset(dir, r), layout.sync_block_offset(dir, r))
            else {
                continue;
            };
            scribble_slots(rng, region, ring + NETMAP_RING_SIZE, nslots);
            if rng.below(8) == 0 {
                let mut hdr = [0u8; NETMAP_RING_SIZE];
                rng.fill(&mut hdr);
                region.write_raw(ring, &hdr);
            }
            for f in [off::RING_HEAD, off::RING_CUR, off::RING_TAIL] {
                put_u32(region, ring + f, plausible(rng, nslots));
            }
            for f in [
                sync_off::ATOK_HEAD,
                sync_off::ATOK_CUR,
                sync_off::KTOA_HWCUR,
                sync_off::KTOA_HWTAIL,
            ] {
                put_u32(region, sync + f, plausible(rng, nslots));
            }
            for f in [sync_off::ATOK_NEED_KICK, sync_off::KTOA_NEED_KICK] {
                put_u32(region, sync + f, rng.next_u64() as u32);
            }
        }
    }
}

/// Random bytes into `n` random buffers (any of them, the reserved ones included).
fn scribble_buffers(rng: &mut Rng, region: &Region, n: usize) {
    let layout = region.layout();
    let bsz = region.geometry().buf_size as usize;
    let mut data = vec![0u8; bsz];
    for _ in 0..n {
        let idx = rng.below(layout.nbufs as u64) as usize;
        let len = 1 + rng.below(bsz as u64) as usize;
        rng.fill(&mut data[..len]);
        region.write_raw(layout.buf_offset + idx * bsz, &data[..len]);
    }
}

/// The scribbler process: opens `HOSTILE_PORT` and scribbles for `SCRIBBLE_SECS`,
/// syncing and kicking between passes; reports its passes, then holds the port (so its
/// counters can be read) until released.
#[test]
#[ignore = "a helper process of the scribbler scenario"]
fn child_scribbler() {
    if !is_child("scribble::child_scribbler") {
        return;
    }
    let name = std::env::var("HOSTILE_PORT").unwrap();
    let port = vale::Port::open_with(
        &name,
        &vale::OpenOptions {
            socket: Some(vale::sock::default_socket_path()),
            ..Default::default()
        },
    )
    .unwrap();
    let mut rng = Rng::seeded();
    println!("HOSTILE seed {:#x}", rng.seed());
    let t = std::time::Instant::now();
    let mut passes = 0u64;
    while t.elapsed().as_secs_f64() < SCRIBBLE_SECS {
        scribble_rings(&mut rng, port.region());
        scribble_buffers(&mut rng, port.region(), 64);
        // The library's syncs publish the scribbled head/cur and kick when asked.
        let _ = port.txsync();
        let _ = port.rxsync();
        let _ = port.poll(vale::Interest { rx: true, tx: true }, Some(Duration::ZERO));
        passes += 1;
    }
    println!("HOSTILE passes {passes}");
    wait_for_release();
}

/// What the bystander receiver saw: frames from the bystander sender, and others
/// (valid-looking frames the scribbler's garbage made, flooded to everyone). It also
/// floods a frame now and then, so that the switch delivers into the scribbler's
/// scribbled RX ring.
fn receive(b: &vale::Port, stop: &std::sync::atomic::AtomicBool) -> (u64, u64) {
    let (mut ours, mut foreign) = (0u64, 0u64);
    let mut idle_since = std::time::Instant::now();
    let mut flooded = std::time::Instant::now();
    loop {
        if !stop.load(std::sync::atomic::Ordering::Relaxed)
            && flooded.elapsed() > Duration::from_millis(5)
            && b.inject(&frame(BCAST, B2, 1))
        {
            b.txsync().unwrap();
            flooded = std::time::Instant::now();
        }
        if b.poll(vale::Interest::RX, Some(Duration::from_millis(5)))
            .unwrap()
        {
            b.dispatch(0, |f| {
                if f.len() >= 12 && f[6..12] == A {
                    ours += 1;
                } else {
                    foreign += 1;
                }
            });
            b.rxsync().unwrap();
            idle_since = std::time::Instant::now();
        } else if stop.load(std::sync::atomic::Ordering::Relaxed)
            && idle_since.elapsed() > Duration::from_millis(500)
        {
            return (ours, foreign);
        }
    }
}

fn sent_of(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("Sent "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in pkt-gen output:\n{out}"))
}

#[test]
fn a_client_scribbling_over_its_region_hurts_only_itself() {
    let _one = serialise();
    let mut d = Daemon::start("hostile-scribble", &[]);
    let b = d.open("vale0:b@conf:slots=4096");
    send(&b, &[frame(BCAST, B, 0)]); // the switch learns where B is
    let before = settled(&d);
    let mut scribbler = Helper::start(
        &d,
        "scribble::child_scribbler",
        &[],
        &[("HOSTILE_PORT", "vale0:s@conf:slots=256".into())],
    );
    let seed = scribbler.report();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, (ours, foreign, _b)) = std::thread::scope(|s| {
        let rx = s.spawn(|| {
            let (ours, foreign) = receive(&b, &stop);
            (ours, foreign, b)
        });
        let tx = d
            .cmd(PKT_GEN)
            .args(["-i", "vale0:a", "-f", "tx", "-l", "60"])
            .args(["-S", "02:00:00:00:5c:0a", "-D", "02:00:00:00:5c:0b"])
            .args(["-R", &RATE.to_string(), "-n", &SENT.to_string()])
            .output()
            .unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (tx, rx.join().unwrap())
    });
    assert!(
        tx.status.success(),
        "tx: {}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let passes = scribbler.report();
    let sent = sent_of(&stdout_of(&tx));
    assert!(
        d.alive(),
        "valed survived the scribbler ({seed}): {}",
        d.log()
    );
    let s = d.ctl_json(&["stats", "vale0:s"]);
    let c = &s["ports"][0]["counters"];
    let n = |k: &str| {
        c[k].as_u64()
            .or_else(|| c["drops"][k].as_u64())
            .unwrap_or(0)
    };
    let said = [
        "bad_buf",
        "bad_len",
        "bad_frag",
        "runt",
        "bad_rx_buf",
        "ring_resets",
        "ring_full",
        "no_dest",
    ]
    .map(|k| format!("{k} {}", n(k)))
    .join(", ");
    scribbler.finish();
    assert!(
        wait_for(3.0, || !d.ports().contains(&"vale0:s".to_string())),
        "the scribbler's port is reclaimed"
    );
    let after = settled(&d);
    // Whatever b dropped, of a's frames or of the scribbler's (an oversize fragment is
    // the sender's fault: the scribbler's port must refuse it, as bad_len).
    let b_drops: u64 = ["ring_full", "oversize", "bad_rx_buf", "bad_offload"]
        .iter()
        .map(|k| d.counter("vale0:b", k))
        .sum();
    let fdb = d.ctl_json(&["fdb", "vale0"]);
    let moves = fdb["counters"]["moves"].as_u64().unwrap_or(0);
    figure(
        "scribbler",
        &format!(
            "{passes} scribbles of every field ({seed}); scribbler counters: {said}, \
             forwarded {}; b also got {foreign} frames its garbage made valid; \
             fdb moves {moves}",
            n("forwarded")
        ),
        &format!("bystander sent {sent}, received {ours}, b's drops {b_drops}"),
        before,
        after,
    );
    assert_eq!(sent, SENT, "the bystander sender sent everything");
    assert_eq!(
        ours, sent,
        "the bystander receiver got every frame of the sender"
    );
    assert_eq!(
        b_drops, 0,
        "the bystander receiver dropped nothing, not even the scribbler's frames"
    );
    for k in ["bad_buf", "bad_len", "bad_frag", "bad_rx_buf"] {
        assert!(n(k) > 0, "the scribbler's {k} drops are counted: {c}");
    }
    assert!(
        n("ring_resets") > 0,
        "the scribbler's broken ring protocol is counted: {c}"
    );
    assert!(d.alive());
}
