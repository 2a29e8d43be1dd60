//! `netmap_ring.sem[128]` is the application's: netmap documents it as "opaque room for a
//! mutex or similar object", and real programs use it (`lb` keeps a 12-byte struct there
//! on its RX and TX rings). Here every client writes garbage over every byte of every
//! ring's `sem[]`, between each step of the protocol and from a second thread all along,
//! while three multi-ring ports exchange unicast and broadcast traffic. Every frame must
//! arrive, intact, exactly once, with no drop and no ring reset counted, and the garbage
//! must still be there at the end (the switch never writes `sem[]`).
//!
//! The test uses only the netmap layout (`ring_offset + off::RING_SEM`), not where the
//! sync words are, so it runs unchanged on a layout that kept them in `sem[]`, and fails
//! there: the garbage overwrites `head`, `hwtail` and the kick words.

mod common;
use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use vale_abi::layout::off;
use vale_abi::{Dir, PortGeometry, Region};
use vale_switch::*;

/// xorshift64*: deterministic garbage.
struct Garbage(u64);
impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// 128 bytes: random, or one of the values most likely to look like an index.
    fn sem(&mut self) -> [u8; 128] {
        let mut b = [0u8; 128];
        match self.next() % 4 {
            0 => b = [0xff; 128],
            1 => {
                // Small words: plausible head/cur/tail/need_kick values.
                let v = (self.next() % 64) as u32;
                for w in b.chunks_mut(4) {
                    w.copy_from_slice(&v.to_ne_bytes());
                }
            }
            _ => {
                for w in b.chunks_mut(8) {
                    w.copy_from_slice(&self.next().to_ne_bytes());
                }
            }
        }
        b
    }
}

/// Every ring's `sem[]` of a region, as netmap_user.h finds the rings.
fn sem_offsets(r: &Region) -> Vec<usize> {
    let g = r.geometry();
    let tx = (0..g.tx_rings).map(|i| r.layout().ring_offset(Dir::Tx, i));
    let rx = (0..g.rx_rings).map(|i| r.layout().ring_offset(Dir::Rx, i));
    tx.chain(rx)
        .map(|o| o.expect("ring exists") + off::RING_SEM)
        .collect()
}

/// Writes garbage over every `sem[]` of `r`; returns what it wrote, per ring.
fn scribble(r: &Region, g: &mut Garbage) -> Vec<[u8; 128]> {
    sem_offsets(r)
        .into_iter()
        .map(|o| {
            let b = g.sem();
            assert!(r.write_raw(o, &b));
            b
        })
        .collect()
}

/// (sender, tag, len) of a received frame, or `usize::MAX` as the sender if it is not,
/// byte for byte, a frame that was sent.
fn identify(f: &[u8], macs: &[MacAddr], sent: &HashMap<u64, Vec<u8>>) -> (usize, u64, usize) {
    let src = macs
        .iter()
        .position(|m| f.len() >= 22 && f[6..12] == m.octets());
    match src {
        Some(s) if sent.get(&tag_of(f)).map(Vec::as_slice) == Some(f) => (s, tag_of(f), f.len()),
        _ => (usize::MAX, 0, f.len()),
    }
}

#[test]
fn garbage_in_every_sem_loses_no_frame() {
    let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
    let geo = PortGeometry {
        tx_rings: 2,
        rx_rings: 2,
        tx_slots: 128,
        rx_slots: 512,
        ..Default::default()
    };
    let names = ["vale0:a", "vale0:b", "vale0:c"];
    let ids: Vec<PortId> = names
        .iter()
        .map(|&n| sw.attach(n, Region::create(n, geo).unwrap()).unwrap())
        .collect();
    let clients: Vec<Client> = ids.iter().map(|&id| Client::attach(&sw, id)).collect();
    let macs: Vec<MacAddr> = (0..3).map(|i| mac(0x10 + i)).collect();

    // A second thread, with its own mapping of each region as another thread of the
    // application would have, scribbling over every sem[] until the traffic is done.
    let stop = Arc::new(AtomicBool::new(false));
    let scribbler = {
        let stop = stop.clone();
        let regions: Vec<Region> = clients
            .iter()
            .map(|c| {
                let fd = c.region.fd().try_clone_to_owned().unwrap();
                Region::from_fd(fd, geo).unwrap()
            })
            .collect();
        std::thread::spawn(move || {
            let mut g = Garbage(0x9e37_79b9_7f4a_7c15);
            let mut passes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for r in &regions {
                    scribble(r, &mut g);
                }
                passes += 1;
            }
            passes
        })
    };

    let mut g = Garbage(0xdead_beef_cafe_f00d);
    // expected[d]: (src, tag, len) of each frame port d must receive; got[d] likewise.
    let mut expected: Vec<Vec<(usize, u64, usize)>> = vec![Vec::new(); 3];
    let mut got: Vec<Vec<(usize, u64, usize)>> = vec![Vec::new(); 3];
    let mut frames_by_tag = HashMap::new();
    let mut tag = 0u64;
    let rounds = 200;
    for round in 0..rounds {
        for (s, c) in clients.iter().enumerate() {
            for r in 0..geo.tx_rings as usize {
                for k in 0..6u64 {
                    tag += 1;
                    // Round 0 announces every address by broadcast; afterwards mostly
                    // learned unicast, with a broadcast now and then.
                    let bcast = round == 0 || (tag % 11 == 0);
                    let d = (s + 1 + (k as usize % 2)) % 3;
                    let dst = if bcast { MacAddr::BROADCAST } else { macs[d] };
                    let len = 60 + ((tag * 131) % 1454) as usize;
                    let f = frame(dst, macs[s], tag, len);
                    let frags = 1 + (tag % 3) as usize;
                    assert!(c.queue_on(r, &f, frags), "room on the TX ring");
                    for (dd, e) in expected.iter_mut().enumerate() {
                        if dd != s && (bcast || dd == d) {
                            e.push((s, tag, len));
                        }
                    }
                    frames_by_tag.insert(tag, f);
                }
            }
        }
        // Garbage between each step of the protocol: after the slots are written,
        // after txsync, after the switch ran, after rxsync.
        for c in &clients {
            scribble(&c.region, &mut g);
        }
        for c in &clients {
            c.txsync();
            scribble(&c.region, &mut g);
        }
        drain(&mut sw, t(round));
        for (d, c) in clients.iter().enumerate() {
            scribble(&c.region, &mut g);
            for f in c.recv_frames() {
                got[d].push(identify(&f, &macs, &frames_by_tag));
            }
        }
        for c in &clients {
            scribble(&c.region, &mut g);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let passes = scribbler.join().unwrap();
    assert!(passes > 0, "the scribbler ran");
    // Whatever the TX rings still hold (none should) and whatever is left to receive.
    for c in &clients {
        c.txsync();
    }
    drain(&mut sw, t(rounds));
    for (d, c) in clients.iter().enumerate() {
        for f in c.recv_frames() {
            got[d].push(identify(&f, &macs, &frames_by_tag));
        }
    }

    for d in 0..3 {
        let bad = got[d].iter().filter(|x| x.0 == usize::MAX).count();
        assert_eq!(
            bad, 0,
            "{}: frames that were never sent, or damaged",
            names[d]
        );
        assert_eq!(
            got[d].len(),
            expected[d].len(),
            "{}: frames received vs sent to it",
            names[d]
        );
        // Tags are unique: equal sorted lists mean each frame exactly once.
        let mut g = got[d].clone();
        let mut e = expected[d].clone();
        g.sort();
        e.sort();
        assert_eq!(
            g, e,
            "{}: exactly the frames sent to it, once each",
            names[d]
        );
    }
    let total: usize = expected.iter().map(Vec::len).sum();
    let mut delivered = 0;
    for (id, name) in ids.iter().zip(names) {
        let s = sw.port(*id).unwrap().stats().clone();
        assert_eq!(s.ring_resets, 0, "{name}: no ring was reset: {s:?}");
        assert_eq!(
            s.drops,
            [0; DropReason::COUNT],
            "{name}: nothing dropped: {s:?}"
        );
        assert!(s.is_conserved(), "{name}: {s:?}");
        delivered += s.rx_packets as usize;
    }
    assert_eq!(delivered, total, "the switch counted each delivery once");
    // The switch left sem[] alone: garbage written now (the scribbler has stopped) is
    // still there after every ring is synced and the switch has run again.
    let mut buf = [0u8; 128];
    let mut g = Garbage(1);
    let wrote: Vec<Vec<[u8; 128]>> = clients
        .iter()
        .map(|c| scribble(&c.region, &mut g))
        .collect();
    for c in &clients {
        c.txsync();
        for r in &c.rx {
            r.rxsync();
        }
    }
    drain(&mut sw, t(rounds + 1));
    for (c, w) in clients.iter().zip(&wrote) {
        for (o, w) in sem_offsets(&c.region).into_iter().zip(w) {
            assert!(c.region.read_raw(o, &mut buf));
            assert_eq!(&buf, w, "sem[] at {o} untouched by syncs and the switch");
        }
    }
}
