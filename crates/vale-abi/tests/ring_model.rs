//! The ring protocol against a queue model (proptest): whatever the interleaving of
//! client and switch steps, items come out in order, none is lost or duplicated, the
//! producer never gets more room than `num_slots - 1` minus what is in flight, and the
//! consumer never sees an item that was not published.

use proptest::prelude::*;
use std::collections::VecDeque;
use vale_abi::ring::{dist, next};
use vale_abi::{AppRing, Dir, PortGeometry, Region, RingView};

#[derive(Debug, Clone)]
enum Op {
    App(u32),
    AppSync,
    Switch(u32),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            (1u32..20).prop_map(Op::App),
            Just(Op::AppSync),
            (1u32..20).prop_map(Op::Switch),
        ],
        1..200,
    )
}

fn region(slots: u32) -> Region {
    let g = PortGeometry {
        tx_slots: slots,
        rx_slots: slots,
        buf_size: 64,
        ..Default::default()
    };
    Region::create("vale0:model", g).unwrap()
}

fn put(v: &RingView, i: u32, item: u64) {
    let s = v.read_slot(i);
    assert!(v.bufs().write(s.buf_idx, &item.to_le_bytes()));
}

fn get(v: &RingView, i: u32) -> u64 {
    let s = v.read_slot(i);
    let mut b = [0u8; 8];
    assert!(v.bufs().read(s.buf_idx, &mut b));
    u64::from_le_bytes(b)
}

proptest! {
    /// TX: the client produces, the switch consumes (VALE semantics: the switch frees
    /// what it consumed at once, tail = hwcur - 1).
    #[test]
    fn tx_ring_matches_queue_model(slots in 2u32..18, ops in ops()) {
        let r = region(slots);
        let app = AppRing::new(r.ring(Dir::Tx, 0).unwrap());
        let sw = r.ring(Dir::Tx, 0).unwrap();
        let n = slots;
        let (mut written, mut hwcur) = (0u64, 0u32);
        let mut unpublished: VecDeque<u64> = VecDeque::new();
        let mut published: VecDeque<u64> = VecDeque::new();
        for op in ops {
            match op {
                Op::App(k) => {
                    let room = app.space();
                    let in_flight = (unpublished.len() + published.len()) as u32;
                    prop_assert!(room <= n - 1 - in_flight, "room {} in flight {}", room, in_flight);
                    for _ in 0..k.min(room) {
                        put(app.view(), app.head(), written);
                        unpublished.push_back(written);
                        written += 1;
                        app.advance(1);
                    }
                }
                Op::AppSync => {
                    app.txsync();
                    published.extend(unpublished.drain(..));
                    let in_flight = published.len() as u32;
                    prop_assert_eq!(app.space(), n - 1 - in_flight);
                }
                Op::Switch(k) => {
                    let (head, _) = sw.csb().sw_read_acquire();
                    prop_assert!(head < n);
                    let pending = dist(hwcur, head, n);
                    prop_assert_eq!(pending as usize, published.len());
                    for _ in 0..k.min(pending) {
                        let want = published.pop_front().unwrap();
                        prop_assert_eq!(get(&sw, hwcur), want);
                        hwcur = next(hwcur, n);
                    }
                    let tail = if hwcur == 0 { n - 1 } else { hwcur - 1 };
                    sw.csb().sw_publish_release(hwcur, tail);
                }
            }
        }
    }

    /// RX: the switch produces into free slots, the client consumes and releases.
    #[test]
    fn rx_ring_matches_queue_model(slots in 2u32..18, ops in ops()) {
        let r = region(slots);
        let app = AppRing::new(r.ring(Dir::Rx, 0).unwrap());
        let sw = r.ring(Dir::Rx, 0).unwrap();
        let n = slots;
        let (mut produced, mut hwcur, mut hwtail) = (0u64, 0u32, 0u32);
        let mut visible: VecDeque<u64> = VecDeque::new(); // published, not yet synced by app
        let mut held: VecDeque<u64> = VecDeque::new(); // in [head, tail) for the app
        let mut consumed_unreleased = 0u32;
        for op in ops {
            match op {
                Op::Switch(k) => {
                    let (head, _) = sw.csb().sw_read_acquire();
                    prop_assert!(dist(hwcur, head, n) <= dist(hwcur, hwtail, n));
                    hwcur = head;
                    let space = n - 1 - dist(hwcur, hwtail, n);
                    let in_ring = (visible.len() + held.len()) as u32 + consumed_unreleased;
                    prop_assert_eq!(space, n - 1 - in_ring);
                    for _ in 0..k.min(space) {
                        put(&sw, hwtail, produced);
                        visible.push_back(produced);
                        produced += 1;
                        hwtail = next(hwtail, n);
                    }
                    sw.csb().sw_publish_release(hwcur, hwtail);
                }
                Op::AppSync => {
                    app.rxsync();
                    consumed_unreleased = 0;
                    held.extend(visible.drain(..));
                    prop_assert_eq!(app.space() as usize, held.len());
                }
                Op::App(k) => {
                    let avail = app.space();
                    prop_assert!(avail as usize <= held.len());
                    for _ in 0..k.min(avail) {
                        let want = held.pop_front().unwrap();
                        prop_assert_eq!(get(app.view(), app.head()), want);
                        app.advance(1);
                        consumed_unreleased += 1;
                    }
                }
            }
        }
    }
}
