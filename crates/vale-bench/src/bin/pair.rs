//! One client process holding both ends of a flow through valed:
//! `pair SWITCH LEN SECS [RECEIVERS [TAG]]` opens `SWITCH:a` (sender) and `SWITCH:b`
//! (receiver; with RECEIVERS = N > 1, `SWITCH:b0` .. `SWITCH:b{N-1}` and the sender
//! broadcasts; with TAG, a number up to 255, `SWITCH:aTAG` and `SWITCH:bTAG`, with
//! their own addresses, so that several pairs share one switch), has the receivers announce their addresses (so `a`'s unicast to `b` is
//! learned), then for SECS fills `a`'s TX ring and drains every RX ring in one busy loop
//! that never sleeps. With valed's forwarding thread pinned to one core and this
//! process to another, the forwarding thread has a core to itself: its packets per
//! CPU-second are the switch's per-core figure without the scheduler in the way (on a
//! 2-vCPU machine, three busy processes would share two cores).
//!
//! Prints `sent N received M secs S`.

use std::time::{Duration, Instant};
use vale::Port;
use vale_abi::layout::NetmapSlot;
use vale_wire::{EtherType, ethernet};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = ethernet::Frame::new_unchecked(vec![0u8; len]);
    f.set_dst_addr(dst);
    f.set_src_addr(src);
    f.set_ethertype(EtherType::EXPERIMENTAL);
    f.into_inner()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(4..=6).contains(&args.len()) {
        eprintln!("usage: pair SWITCH LEN SECS [RECEIVERS [TAG]]");
        std::process::exit(2);
    }
    let nrx: usize = args.get(4).map_or(1, |v| v.parse().expect("RECEIVERS"));
    let tag: Option<u8> = args.get(5).map(|v| v.parse().expect("TAG (0 to 255)"));
    let (mut mac_a, mut mac_b) = (MAC_A, MAC_B);
    if let Some(t) = tag {
        (mac_a[3], mac_b[3]) = (t, t);
    }
    let suffix = tag.map_or(String::new(), |t| t.to_string());
    let (sw, len, secs): (&str, usize, f64) = (
        &args[1],
        args[2].parse().expect("LEN"),
        args[3].parse().expect("SECS"),
    );
    let open = |p: &str| {
        Port::open(&format!("{sw}:{p}")).unwrap_or_else(|e| {
            eprintln!("pair: {sw}:{p}: {e}");
            std::process::exit(1)
        })
    };
    let a = open(&format!("a{suffix}"));
    let rxs: Vec<Port> = if nrx == 1 {
        vec![open(&format!("b{suffix}"))]
    } else {
        (0..nrx).map(|i| open(&format!("b{i}"))).collect()
    };
    // The receivers speak first so that a's unicast to b is learned.
    for (i, b) in rxs.iter().enumerate() {
        let mut src = mac_b;
        src[4] = i as u8;
        assert!(b.inject(&frame([0xff; 6], src, 60)));
        b.txsync().expect("txsync");
    }
    std::thread::sleep(Duration::from_millis(50));
    for b in &rxs {
        b.rxsync().expect("rxsync");
        for r in b.rx_rings() {
            r.advance(r.space());
        }
        b.rxsync().expect("rxsync");
    }

    // Prefill every TX buffer once, as pkt-gen does.
    let f = frame(if nrx == 1 { mac_b } else { [0xff; 6] }, mac_a, len);
    let tx = &a.tx_rings()[0];
    let v = tx.view();
    let n = tx.num_slots();
    for i in 0..n {
        let s = v.read_slot(i);
        v.bufs().write(s.buf_idx, &f);
        v.write_slot(
            i,
            NetmapSlot {
                buf_idx: s.buf_idx,
                len: len as u16,
                flags: 0,
                ptr: 0,
            },
        );
    }
    let (mut sent, mut received) = (0u64, 0u64);
    let t0 = Instant::now();
    let end = Duration::from_secs_f64(secs);
    let mut spins = 0u32;
    loop {
        let k = tx.space();
        if k > 0 {
            tx.advance(k);
            sent += k as u64;
        }
        a.txsync().expect("txsync");
        for b in &rxs {
            b.rxsync().expect("rxsync");
            let rx = &b.rx_rings()[0];
            let r = rx.space();
            if r > 0 {
                rx.advance(r);
                received += r as u64;
            }
        }
        spins += 1;
        if spins % 1024 == 0 && t0.elapsed() >= end {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("sent {sent} received {received} secs {secs:.3}");
}
