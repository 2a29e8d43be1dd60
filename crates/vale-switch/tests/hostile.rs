//! Never trust shared memory: a client that writes arbitrary bytes anywhere in its own
//! region (slots, indices, sync words, buffers, ring headers) while two other ports
//! exchange traffic. The engine must not panic or touch anything outside the regions,
//! the two honest ports must get all their frames intact and in order, and the counters
//! must stay conserved.

mod common;
use common::*;
use proptest::prelude::*;
use vale_abi::layout::{NETMAP_RING_SIZE, NETMAP_SLOT_SIZE, off, sync_off};
use vale_abi::{Dir, PortGeometry};
use vale_switch::*;

#[derive(Debug, Clone)]
enum Poke {
    /// Arbitrary bytes at an arbitrary offset.
    Raw(usize, Vec<u8>),
    /// A sync word or a user field of a ring: (tx?, which, value).
    Word(bool, usize, u32),
    /// A TX slot: (slot, buf_idx, len, flags).
    Slot(u32, u32, u16, u16),
    /// Publish head as the client would, to make the switch look at the slots.
    Publish(u32),
}

fn poke() -> impl Strategy<Value = Poke> {
    prop_oneof![
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(o, b)| Poke::Raw(o, b)),
        (
            any::<bool>(),
            0usize..9,
            prop_oneof![0u32..40, any::<u32>()]
        )
            .prop_map(|(t, w, v)| Poke::Word(t, w, v)),
        (
            0u32..16,
            prop_oneof![0u32..40, any::<u32>()],
            prop_oneof![0u16..300, any::<u16>()],
            prop_oneof![0u16..64, any::<u16>()]
        )
            .prop_map(|(s, b, l, f)| Poke::Slot(s, b, l, f)),
        (0u32..20).prop_map(Poke::Publish),
    ]
}

/// The words a client could aim at: (in the sync block rather than the ring header?,
/// offset).
const WORDS: [(bool, usize); 9] = [
    (false, off::RING_HEAD),
    (false, off::RING_CUR),
    (false, off::RING_TAIL),
    (true, sync_off::ATOK_HEAD),
    (true, sync_off::ATOK_CUR),
    (true, sync_off::ATOK_NEED_KICK),
    (true, sync_off::KTOA_HWCUR),
    (true, sync_off::KTOA_HWTAIL),
    (true, sync_off::KTOA_NEED_KICK),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn a_hostile_client_hurts_only_itself(steps in prop::collection::vec(prop::collection::vec(poke(), 0..12), 1..30)) {
        let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
        let honest = PortGeometry { tx_slots: 256, rx_slots: 256, ..Default::default() };
        let evil_g = PortGeometry { tx_slots: 16, rx_slots: 16, buf_size: 256, ..Default::default() };
        let a = sw.attach("vale0:a", vale_abi::Region::create("vale0:a", honest).unwrap()).unwrap();
        let b = sw.attach("vale0:b", vale_abi::Region::create("vale0:b", honest).unwrap()).unwrap();
        let (ca, cb) = (Client::attach(&sw, a), Client::attach(&sw, b));
        let (ma, mb) = (mac(0xa), mac(0xb));
        // The pair learn each other before the hostile port arrives, so it never receives
        // (and so can never replay) their frames: their traffic is unicast from here on.
        ca.send(&[frame(mb, ma, 0, 60)]);
        cb.send(&[frame(ma, mb, 0, 60)]);
        drain(&mut sw, t(0));
        assert_eq!((ca.recv().len(), cb.recv().len()), (1, 1));
        let e = sw.attach("vale0:evil", vale_abi::Region::create("vale0:evil", evil_g).unwrap()).unwrap();
        let ce = Client::attach(&sw, e);
        let (mut sent_ab, mut sent_ba) = (Vec::new(), Vec::new());
        let (mut got_ab, mut got_ba) = (Vec::new(), Vec::new());
        let evil_tx = ce.region.layout().ring_offset(Dir::Tx, 0).unwrap();
        let evil_rx = ce.region.layout().ring_offset(Dir::Rx, 0).unwrap();
        let evil_tx_sync = ce.region.layout().sync_block_offset(Dir::Tx, 0).unwrap();
        let evil_rx_sync = ce.region.layout().sync_block_offset(Dir::Rx, 0).unwrap();
        let mut tag = 0u64;
        for (k, pokes) in steps.iter().enumerate() {
            for p in pokes {
                match p {
                    Poke::Raw(o, bytes) => {
                        let o = o % ce.region.size();
                        let n = bytes.len().min(ce.region.size() - o);
                        ce.region.write_raw(o, &bytes[..n]);
                    }
                    Poke::Word(tx, w, v) => {
                        let (in_sync, o) = WORDS[*w];
                        let base = match (*tx, in_sync) {
                            (true, false) => evil_tx,
                            (false, false) => evil_rx,
                            (true, true) => evil_tx_sync,
                            (false, true) => evil_rx_sync,
                        };
                        ce.region.write_raw(base + o, &v.to_ne_bytes());
                    }
                    Poke::Slot(s, bi, len, flags) => {
                        let so = evil_tx + NETMAP_RING_SIZE + *s as usize * NETMAP_SLOT_SIZE;
                        let mut bytes = [0u8; 8];
                        bytes[..4].copy_from_slice(&bi.to_ne_bytes());
                        bytes[4..6].copy_from_slice(&len.to_ne_bytes());
                        bytes[6..].copy_from_slice(&flags.to_ne_bytes());
                        ce.region.write_raw(so, &bytes);
                    }
                    Poke::Publish(h) => ce.tx[0].view().csb().app_publish_release(*h, *h),
                }
            }
            // The honest pair: a few frames each way, sizes varying, some fragmented.
            for i in 0..8u64 {
                tag += 1;
                let len = 60 + ((tag * 97) % 1400) as usize;
                let f = frame(mb, ma, tag, len);
                prop_assert!(ca.queue(&f, 1 + (i % 3) as usize));
                sent_ab.push(f);
                tag += 1;
                let g = frame(ma, mb, tag, 60 + (tag % 64) as usize);
                prop_assert!(cb.queue(&g, 1));
                sent_ba.push(g);
            }
            ca.txsync();
            cb.txsync();
            drain(&mut sw, t(k as u64));
            let keep = |f: &Vec<u8>, src: MacAddr| f.len() >= 22 && f[6..12] == src.octets() && f[12..14] == [0x88, 0xb5];
            got_ab.extend(cb.recv_frames().into_iter().filter(|f| keep(f, ma)));
            got_ba.extend(ca.recv_frames().into_iter().filter(|f| keep(f, mb)));
        }
        let tags = |v: &[Vec<u8>]| v.iter().map(|f| (tag_of(f), f.len())).collect::<Vec<_>>();
        prop_assert_eq!(tags(&got_ab), tags(&sent_ab));
        prop_assert_eq!(tags(&got_ba), tags(&sent_ba));
        prop_assert!(got_ab == sent_ab && got_ba == sent_ba, "frame contents differ");
        let all: Vec<PortStats> = sw.ports().map(|(_, p)| p.stats().clone()).collect();
        for s in &all {
            prop_assert!(s.is_conserved(), "{:?}", s);
        }
        let copies: u64 = all.iter().map(|s| s.copies - s.copies_dropped).sum();
        let delivered: u64 = all.iter().map(|s| s.rx_packets).sum();
        prop_assert_eq!(copies, delivered);
        let dropped_at_dst: u64 = all.iter().map(|s| s.receiver_drops()).sum();
        let copies_dropped: u64 = all.iter().map(|s| s.copies_dropped).sum();
        prop_assert_eq!(dropped_at_dst, copies_dropped);
    }
}

#[test]
fn an_out_of_range_head_resets_the_ring_and_is_counted() {
    let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
    let g = PortGeometry {
        tx_slots: 64,
        rx_slots: 64,
        ..Default::default()
    };
    let a = sw
        .attach("vale0:a", vale_abi::Region::create("vale0:a", g).unwrap())
        .unwrap();
    let b = sw
        .attach("vale0:b", vale_abi::Region::create("vale0:b", g).unwrap())
        .unwrap();
    let (ca, cb) = (Client::attach(&sw, a), Client::attach(&sw, b));
    ca.send(&[frame(MacAddr::BROADCAST, mac(1), 1, 60)]);
    drain(&mut sw, t(1));
    // TX: head beyond the ring.
    ca.tx[0].view().csb().app_publish_release(1000, 1000);
    drain(&mut sw, t(1));
    assert_eq!(sw.port(a).unwrap().stats().ring_resets, 1);
    let v = ca.tx[0].view();
    assert_eq!(
        (v.head(), v.cur(), v.tail()),
        (1, 1, 0),
        "netmap_ring_reinit: head=cur=hwcur, tail=hwtail"
    );
    // RX: the client "releases" slots it was never given.
    cb.rx[0].view().csb().app_publish_release(30, 30);
    ca.send(&[frame(MacAddr::BROADCAST, mac(1), 2, 60)]);
    drain(&mut sw, t(1));
    assert_eq!(sw.port(b).unwrap().stats().ring_resets, 1);
    let got = cb.recv_frames();
    assert_eq!(got.len(), 2, "both frames delivered despite the reset");
    // cur behind head is illegal too.
    ca.queue(&frame(MacAddr::BROADCAST, mac(1), 3, 60), 1);
    let h = ca.tx[0].head();
    ca.tx[0].view().csb().app_publish_release(h, h - 1);
    drain(&mut sw, t(1));
    assert_eq!(sw.port(a).unwrap().stats().ring_resets, 2);
}
