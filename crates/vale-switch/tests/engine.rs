//! Behaviour of the forwarding engine over real memfd regions, driven the way clients
//! drive it: through their own mappings and the ring protocol.

mod common;
use common::*;
use vale_abi::PortGeometry;
use vale_abi::layout::{NS_MOREFRAG, NS_NO_LEARN};
use vale_switch::*;

fn geom(slots: u32) -> PortGeometry {
    PortGeometry {
        tx_slots: slots,
        rx_slots: slots,
        ..Default::default()
    }
}

fn bridge(ports: usize, slots: u32) -> (Switch<LearningBridge>, Vec<PortId>, Vec<Client>) {
    let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
    let mut ids = Vec::new();
    for i in 0..ports {
        let name = format!("vale0:p{i}");
        let r = vale_abi::Region::create(&name, geom(slots)).unwrap();
        ids.push(sw.attach(name, r).unwrap());
    }
    let clients = ids.iter().map(|id| Client::attach(&sw, *id)).collect();
    (sw, ids, clients)
}

#[test]
fn learned_unicast_reaches_only_its_port() {
    // netmap's test 007, with the negative case it never checked.
    let (mut sw, ids, c) = bridge(3, 64);
    let m2 = mac(2);
    c[2].send(&[frame(MacAddr::BROADCAST, m2, 1, 60)]);
    drain(&mut sw, t(1));
    assert_eq!(c[0].recv_frames().len(), 1, "broadcast reaches p0");
    assert_eq!(c[1].recv_frames().len(), 1, "broadcast reaches p1");
    assert!(
        c[2].recv_frames().is_empty(),
        "never reflected to the sender"
    );
    c[0].send(&[frame(m2, mac(0), 2, 60)]);
    drain(&mut sw, t(1));
    let got = c[2].recv_frames();
    assert_eq!(got.len(), 1);
    assert_eq!(tag_of(&got[0]), 2);
    assert!(
        c[1].recv_frames().is_empty(),
        "p1 must NOT see unicast to a MAC learned on p2"
    );
    assert!(c[0].recv_frames().is_empty());
    assert_eq!(sw.lookup().fdb().get(m2), Some(ids[2]));
    assert_eq!(sw.lookup().fdb().get(mac(0)), Some(ids[0]));
}

#[test]
fn unknown_unicast_and_multicast_flood_in_batch_order() {
    let (mut sw, _, c) = bridge(4, 128);
    let mut frames = Vec::new();
    for i in 0..40u64 {
        let dst = match i % 3 {
            0 => MacAddr::BROADCAST,
            1 => MacAddr::new([1, 0, 0x5e, 0, 0, 9]),
            _ => mac(900 + i as u16), // unknown
        };
        frames.push(frame(dst, mac(0), i, 60 + i as usize));
    }
    assert_eq!(c[0].send(&frames), 40);
    drain(&mut sw, t(1));
    for cl in &c[1..] {
        let got = cl.recv_frames();
        assert_eq!(
            got, frames,
            "every other port gets every frame, intact, in order"
        );
    }
    assert!(c[0].recv_frames().is_empty());
    let s = sw.port(PortId(0)).unwrap().stats();
    assert_eq!((s.tx_packets, s.forwarded, s.copies), (40, 40, 120));
}

#[test]
fn unicast_and_flood_to_one_port_keep_batch_order() {
    let (mut sw, _, c) = bridge(3, 256);
    // Teach the switch where mac(1) lives.
    c[1].send(&[frame(MacAddr::BROADCAST, mac(1), 0, 60)]);
    drain(&mut sw, t(1));
    c[0].recv();
    c[2].recv();
    let frames: Vec<_> = (1..=60u64)
        .map(|i| {
            let dst = if i % 2 == 0 {
                mac(1)
            } else {
                MacAddr::BROADCAST
            };
            frame(dst, mac(0), i, 64)
        })
        .collect();
    c[0].send(&frames);
    drain(&mut sw, t(1));
    let tags: Vec<u64> = c[1].recv_frames().iter().map(|f| tag_of(f)).collect();
    assert_eq!(tags, (1..=60).collect::<Vec<_>>(), "p1: merged in order");
    let tags2: Vec<u64> = c[2].recv_frames().iter().map(|f| tag_of(f)).collect();
    assert_eq!(
        tags2,
        (1..=60).step_by(2).collect::<Vec<_>>(),
        "p2: floods only"
    );
}

#[test]
fn a_flood_fills_each_receiver_as_far_as_it_can() {
    // Every copy of a flood is delivered or counted by reason: p1 takes all, p2 has
    // room for 23 (the rest ring_full), and p3 has a bad buffer index in the 6th slot
    // it would fill (that slot is not consumed, so every later copy is bad_rx_buf).
    let (mut sw, ids, c) = bridge(4, 64);
    let first: Vec<_> = (0..40u64)
        .map(|i| frame(MacAddr::BROADCAST, mac(0), i, 60))
        .collect();
    assert_eq!(c[0].send(&first), 40);
    drain(&mut sw, t(1));
    assert_eq!(c[1].recv_frames().len(), 40);
    assert_eq!(c[3].recv_frames().len(), 40);
    let v = c[3].rx[0].view();
    let mut s = v.read_slot(45);
    s.buf_idx = 0; // reserved: never a client's
    v.write_slot(45, s);
    let next: Vec<_> = (100..140u64)
        .map(|i| frame(MacAddr::BROADCAST, mac(0), i, 60 + (i as usize % 70)))
        .collect();
    assert_eq!(c[0].send(&next), 40);
    drain(&mut sw, t(2));
    assert_eq!(c[1].recv_frames(), next, "p1: all of them, intact");
    let p2: Vec<_> = c[2].recv_frames();
    assert_eq!(p2.len(), 63);
    assert_eq!(&p2[40..], &next[..23], "p2: as many as fitted, in order");
    assert_eq!(c[3].recv_frames(), &next[..5], "p3: up to the bad slot");
    let st = |i: usize| sw.port(ids[i]).unwrap().stats();
    assert_eq!(st(1).rx_packets, 80);
    assert_eq!(st(1).receiver_drops(), 0);
    assert_eq!(st(2).rx_packets, 63);
    assert_eq!(st(2).drop_count(DropReason::RingFull), 17);
    assert_eq!(st(3).rx_packets, 45);
    assert_eq!(st(3).drop_count(DropReason::BadRxBuf), 35);
    assert_eq!(st(3).drop_count(DropReason::RingFull), 0);
    assert_eq!(st(0).copies_dropped, 17 + 35);
    assert_laws(&sw);
}

#[test]
fn fragments_are_delivered_whole_with_netmaps_count() {
    let (mut sw, _, c) = bridge(2, 256);
    let big = frame(MacAddr::BROADCAST, mac(0), 7, 5000);
    assert!(c[0].queue(&big, 3));
    let small = frame(MacAddr::BROADCAST, mac(0), 8, 60);
    assert!(c[0].queue(&small, 1));
    c[0].txsync();
    drain(&mut sw, t(1));
    let got = c[1].recv();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, big);
    assert_eq!(
        got[0].1,
        vec![0x0300 | NS_MOREFRAG, 0x0300 | NS_MOREFRAG, 0x0300]
    );
    assert_eq!(
        got[1].1,
        vec![0x0100],
        "single-slot packet: count 1, as netmap writes"
    );
    let s = sw.port(PortId(0)).unwrap().stats();
    assert_eq!(s.tx_bytes, 5060);
    assert_eq!(sw.port(PortId(1)).unwrap().stats().rx_bytes, 5060);
}

#[test]
fn bad_fragment_chains_are_dropped_whole_and_counted() {
    let (mut sw, _, c) = bridge(2, 256);
    // 65 fragments: one too many.
    let f = frame(MacAddr::BROADCAST, mac(0), 1, 65 * 20);
    assert!(c[0].queue(&f, 65));
    // A chain whose last slot still says MOREFRAG at head: unfinished.
    let g = frame(MacAddr::BROADCAST, mac(0), 2, 100);
    assert!(c[0].put_slot(0, &g[..50], NS_MOREFRAG));
    assert!(c[0].put_slot(0, &g[50..], NS_MOREFRAG));
    c[0].txsync();
    drain(&mut sw, t(1));
    assert!(c[1].recv().is_empty());
    let s = sw.port(PortId(0)).unwrap().stats();
    assert_eq!(s.drop_count(DropReason::BadFrag), 2);
    assert_eq!(s.tx_packets, 2);
    assert!(s.is_conserved());
    // The ring is usable afterwards.
    c[0].send(&[frame(MacAddr::BROADCAST, mac(0), 3, 60)]);
    drain(&mut sw, t(1));
    assert_eq!(c[1].recv_frames().len(), 1);
}

#[test]
fn a_full_ring_drops_and_counts_and_conservation_holds() {
    let (mut sw, _, c) = bridge(2, 64);
    let frames: Vec<_> = (0..63u64).map(|i| frame(mac(1), mac(0), i, 60)).collect();
    // Receiver sleeps: its ring holds 63 (one slot always empty).
    for round in 0..3 {
        assert_eq!(c[0].send(&frames), 63, "round {round}");
        drain(&mut sw, t(1));
    }
    let s0 = sw.port(PortId(0)).unwrap().stats().clone();
    let s1 = sw.port(PortId(1)).unwrap().stats().clone();
    assert_eq!(s0.tx_packets, 189);
    assert_eq!(s1.rx_packets, 63);
    assert_eq!(s1.drop_count(DropReason::RingFull), 126);
    assert_eq!(s0.copies_dropped, 126);
    assert_eq!(s0.copies - s0.copies_dropped, s1.rx_packets);
    assert!(s0.is_conserved());
    let got = c[1].recv_frames();
    assert_eq!(got, frames, "the first ring-full of frames, intact");
    // Drained: room again.
    c[0].send(&frames[..10]);
    drain(&mut sw, t(1));
    assert_eq!(c[1].recv_frames().len(), 10);
}

#[test]
fn malformed_slots_are_dropped_by_reason() {
    let (mut sw, _, c) = bridge(2, 64);
    let v = c[0].tx[0].view().clone();
    let h = c[0].tx[0].head();
    let f = frame(MacAddr::BROADCAST, mac(0), 1, 60);
    c[0].queue(&f, 1);
    c[0].queue(&f[..13], 1); // runt
    c[0].queue(&f, 1);
    c[0].queue(&f, 1);
    c[0].queue(&f, 1);
    // Slot h+2: bad buffer index; h+3: reserved buffer 1; h+4: length over the buffer.
    let mut s = v.read_slot(h + 2);
    s.buf_idx = 1 << 30;
    v.write_slot(h + 2, s);
    let mut s = v.read_slot(h + 3);
    s.buf_idx = 1;
    v.write_slot(h + 3, s);
    let mut s = v.read_slot(h + 4);
    s.len = 4000;
    v.write_slot(h + 4, s);
    c[0].txsync();
    drain(&mut sw, t(1));
    assert_eq!(c[1].recv_frames(), vec![f]);
    let st = sw.port(PortId(0)).unwrap().stats();
    assert_eq!(st.drop_count(DropReason::Runt), 1);
    assert_eq!(st.drop_count(DropReason::BadBuf), 2);
    assert_eq!(st.drop_count(DropReason::BadLen), 1);
    assert_eq!(st.tx_packets, 5);
    assert!(st.is_conserved());
}

#[test]
fn no_learn_and_aging_through_the_engine() {
    let (mut sw, _, c) = bridge(3, 64);
    // NS_NO_LEARN: p2's address is not learned, so unicast to it still floods.
    let f = frame(MacAddr::BROADCAST, mac(2), 0, 60);
    assert!(c[2].put_slot(0, &f, NS_NO_LEARN));
    c[2].txsync();
    drain(&mut sw, t(10));
    assert_eq!(sw.lookup().fdb().get(mac(2)), None);
    c[2].send(std::slice::from_ref(&f));
    drain(&mut sw, t(10));
    assert!(sw.lookup().fdb().get(mac(2)).is_some());
    for cl in &c {
        cl.recv();
    }
    // 300 s of silence later the entry is gone and unicast floods again.
    c[0].send(&[frame(mac(2), mac(0), 1, 60)]);
    drain(&mut sw, t(100));
    assert!(c[1].recv().is_empty());
    assert_eq!(c[2].recv().len(), 1);
    drain(&mut sw, t(311));
    assert_eq!(sw.lookup().fdb().get(mac(2)), None, "aged out");
    c[0].send(&[frame(mac(2), mac(0), 2, 60)]);
    drain(&mut sw, t(311));
    assert_eq!(c[1].recv().len(), 1, "flooded after aging");
}

#[test]
fn detach_flushes_addresses_and_stops_delivery() {
    let (mut sw, ids, c) = bridge(3, 64);
    c[2].send(&[frame(MacAddr::BROADCAST, mac(2), 0, 60)]);
    drain(&mut sw, t(1));
    c[0].recv();
    c[1].recv();
    let gone = sw.detach(ids[2]).unwrap();
    assert_eq!(gone.name(), "vale0:p2");
    assert_eq!(sw.lookup().fdb().get(mac(2)), None);
    c[0].send(&[frame(mac(2), mac(0), 1, 60)]);
    drain(&mut sw, t(1));
    assert_eq!(
        c[1].recv().len(),
        1,
        "unknown again: flooded to the remaining port"
    );
    assert!(c[2].recv().is_empty());
    // The index is reused by the next port, which inherits nothing.
    let r = vale_abi::Region::create("vale0:new", geom(64)).unwrap();
    let id = sw.attach("vale0:new", r).unwrap();
    assert_eq!(id, ids[2]);
    let n = Client::attach(&sw, id);
    c[0].send(&[frame(mac(2), mac(0), 2, 60)]);
    drain(&mut sw, t(1));
    assert_eq!(
        n.recv().len(),
        1,
        "flooded, not delivered via a stale entry"
    );
    assert_eq!(c[1].recv().len(), 1);
}

#[test]
fn static_map_proves_the_lookup_seam() {
    let mut map = StaticMap::new();
    map.connect(PortId(0), PortId(2));
    map.connect(PortId(2), PortId(0));
    let mut sw: Switch<Box<dyn Lookup>> =
        Switch::new(Box::new(map) as Box<dyn Lookup>, SwitchConfig::default()).unwrap();
    let mut c = Vec::new();
    for i in 0..3 {
        let name = format!("vale1:s{i}");
        let r = vale_abi::Region::create(&name, geom(64)).unwrap();
        let id = sw.attach(name, r).unwrap();
        c.push(Client::attach(&sw, id));
    }
    c[0].send(&[frame(MacAddr::BROADCAST, mac(0), 1, 60)]);
    c[1].send(&[frame(MacAddr::BROADCAST, mac(1), 2, 60)]);
    drain(&mut sw, t(1));
    assert_eq!(
        c[2].recv_frames().len(),
        1,
        "patched 0 -> 2 regardless of address"
    );
    assert!(c[0].recv().is_empty(), "port 1 has no patch: dropped");
    assert_eq!(
        sw.port(PortId(1))
            .unwrap()
            .stats()
            .drop_count(DropReason::NoDest),
        1
    );
}

#[test]
fn hub_floods_everything() {
    let mut sw = Switch::new(Hub, SwitchConfig::default()).unwrap();
    let mut c = Vec::new();
    for i in 0..3 {
        let name = format!("vale2:h{i}");
        let id = sw
            .attach(
                name.clone(),
                vale_abi::Region::create(&name, geom(64)).unwrap(),
            )
            .unwrap();
        c.push(Client::attach(&sw, id));
    }
    c[1].send(&[frame(mac(0), mac(1), 1, 60)]);
    drain(&mut sw, t(1));
    assert_eq!(c[0].recv().len(), 1);
    assert_eq!(c[2].recv().len(), 1);
}

#[test]
fn a_lonely_flood_is_counted_as_no_destination() {
    let (mut sw, _, c) = bridge(1, 64);
    c[0].send(&[frame(MacAddr::BROADCAST, mac(0), 1, 60)]);
    drain(&mut sw, t(1));
    let s = sw.port(PortId(0)).unwrap().stats();
    assert_eq!(s.drop_count(DropReason::NoDest), 1);
    assert!(s.is_conserved());
}

#[test]
fn multi_ring_ports_map_source_ring_to_destination_ring() {
    let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
    let g4 = PortGeometry {
        tx_rings: 4,
        rx_rings: 4,
        tx_slots: 64,
        rx_slots: 64,
        buf_size: 2048,
        extra_bufs: 0,
        pipes: 0,
    };
    let a = sw
        .attach("vale0:a", vale_abi::Region::create("vale0:a", g4).unwrap())
        .unwrap();
    let b = sw
        .attach("vale0:b", vale_abi::Region::create("vale0:b", g4).unwrap())
        .unwrap();
    let one = sw
        .attach(
            "vale0:c",
            vale_abi::Region::create("vale0:c", geom(64)).unwrap(),
        )
        .unwrap();
    let (ca, cb, cc) = (
        Client::attach(&sw, a),
        Client::attach(&sw, b),
        Client::attach(&sw, one),
    );
    for r in 0..4 {
        assert!(ca.queue_on(r, &frame(MacAddr::BROADCAST, mac(0), r as u64, 60), 1));
    }
    ca.txsync();
    drain(&mut sw, t(1));
    for r in 0..4 {
        let ring = &cb.rx[r];
        ring.rxsync();
        assert_eq!(ring.space(), 1, "tx ring {r} lands on rx ring {r}");
    }
    assert_eq!(
        cc.recv().len(),
        4,
        "a one-ring port gets all four on its ring 0"
    );
}

#[test]
fn notifications_only_when_asked_for() {
    let (mut sw, ids, c) = bridge(2, 64);
    c[0].send(&[frame(MacAddr::BROADCAST, mac(0), 1, 60)]);
    let ev = drain(&mut sw, t(1));
    assert!(ev.is_empty(), "nobody asked for a kick");
    c[1].recv();
    c[1].arm_rx_kick();
    c[0].send(&[frame(MacAddr::BROADCAST, mac(0), 2, 60)]);
    let ev = drain(&mut sw, t(1));
    assert_eq!(
        ev,
        vec![Notify {
            port: ids[1],
            dir: RingDir::Rx,
            ring: 0
        }]
    );
    // The switch side: arming kicks reports pending work.
    assert!(!sw.arm_kicks());
    c[0].queue(&frame(MacAddr::BROADCAST, mac(0), 3, 60), 1);
    assert!(
        c[0].tx[0].txsync(),
        "client sees the switch asked for a kick"
    );
    assert!(sw.arm_kicks());
    sw.disarm_kicks();
    assert!(!c[0].tx[0].txsync());
}

#[test]
fn bridge_batch_limits_packets_per_pass() {
    let (mut sw, _, c) = bridge(2, 1024);
    sw.set_batch(16).unwrap();
    assert!(sw.set_batch(0).is_err() && sw.set_batch(8193).is_err());
    let frames: Vec<_> = (0..100u64)
        .map(|i| frame(MacAddr::BROADCAST, mac(0), i, 60))
        .collect();
    c[0].send(&frames);
    let mut ev = Vec::new();
    let mut fw = Forwarder::new();
    assert_eq!(fw.forward(&sw, t(1), &mut ev, &mut NoEgress), 16);
    drain(&mut sw, t(1));
    assert_eq!(c[1].recv_frames(), frames);
}

/// One forwarder serves switches of different sizes and batches in turn (valed forwards
/// every switch of a lane with one), each switch getting its own batch size.
#[test]
fn one_forwarder_serves_switches_of_different_sizes_and_batches() {
    let make = |ports: usize, cfg: SwitchConfig| {
        let mut sw = Switch::new(LearningBridge::default(), cfg).unwrap();
        let ids: Vec<PortId> = (0..ports)
            .map(|i| {
                let name = format!("vale{}:p{i}", cfg.max_ports);
                let r = vale_abi::Region::create(&name, geom(256)).unwrap();
                sw.attach(name, r).unwrap()
            })
            .collect();
        let clients: Vec<Client> = ids.iter().map(|id| Client::attach(&sw, *id)).collect();
        (sw, ids, clients)
    };
    let small_cfg = SwitchConfig {
        max_ports: 3,
        batch: 4,
    };
    let big_cfg = SwitchConfig {
        max_ports: 40,
        batch: 512,
    };
    let (small, _, sc) = make(3, small_cfg);
    let (big, bids, bc) = make(40, big_cfg);
    let frames = |n: u64| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| frame(MacAddr::BROADCAST, mac(0), i, 60))
            .collect()
    };
    sc[0].send(&frames(10));
    bc[0].send(&frames(100));
    // The last port of the big switch announces itself: unicast to it uses a queue
    // index the small switch does not have.
    bc[39].send(&[frame(MacAddr::BROADCAST, mac(39), 1000, 60)]);
    let mut fw = Forwarder::new();
    let mut ev = Vec::new();
    assert_eq!(fw.forward(&small, t(1), &mut ev, &mut NoEgress), 4);
    assert_eq!(fw.forward(&big, t(1), &mut ev, &mut NoEgress), 101);
    assert_eq!(fw.forward(&small, t(1), &mut ev, &mut NoEgress), 4);
    bc[0].send(&[frame(mac(39), mac(0), 2000, 60)]);
    assert_eq!(fw.forward(&big, t(1), &mut ev, &mut NoEgress), 1);
    assert_eq!(fw.forward(&small, t(1), &mut ev, &mut NoEgress), 2);
    assert_eq!(fw.forward(&small, t(1), &mut ev, &mut NoEgress), 0);
    for c in &sc[1..] {
        assert_eq!(c.recv_frames(), frames(10));
    }
    for c in &bc[1..39] {
        let got = c.recv_frames();
        assert_eq!(got.len(), 101, "100 from p0 and p39's broadcast");
        assert!(got.iter().all(|f| tag_of(f) != 2000), "unicast only to p39");
    }
    let last: Vec<u64> = bc[39].recv_frames().iter().map(|f| tag_of(f)).collect();
    assert_eq!(last.len(), 101);
    assert_eq!(last.last(), Some(&2000));
    assert_eq!(big.lookup().fdb().get(mac(39)), Some(bids[39]));
    for (_, p) in small.ports().chain(big.ports()) {
        assert!(p.stats().is_conserved());
    }
}

/// Switches of one registry with different lookups behave as their lookups say: a
/// learned unicast reaches only its port on a learning switch, every port on a hub.
#[test]
fn each_switch_forwards_with_the_lookup_chosen_for_it() {
    let mut reg = Registry::new(Limits {
        default_geometry: geom(64),
        ..Limits::default()
    });
    reg.set_lookup("vale1", LookupKind::Hub);
    let mut fw = Forwarder::new();
    for (sw, flooded) in [("vale0", false), ("vale1", true)] {
        let keys: Vec<PortKey> = ["a", "b", "c"]
            .iter()
            .map(|p| reg.open(&format!("{sw}:{p}"), None).unwrap())
            .collect();
        let e = reg.switch_mut(sw).unwrap();
        let c: Vec<Client> = keys
            .iter()
            .map(|k| Client::attach(&e.switch, k.port))
            .collect();
        c[1].send(&[frame(MacAddr::BROADCAST, mac(1), 1, 60)]);
        while fw.forward(&e.switch, t(1), &mut Vec::new(), &mut NoEgress) > 0 {}
        c[0].recv();
        c[2].recv();
        c[0].send(&[frame(mac(1), mac(0), 2, 60)]);
        while fw.forward(&e.switch, t(1), &mut Vec::new(), &mut NoEgress) > 0 {}
        assert_eq!(c[1].recv_frames().len(), 1, "{sw}");
        assert_eq!(c[2].recv_frames().len(), flooded as usize, "{sw}");
    }
}

#[test]
fn unicast_to_a_host_on_the_sending_port_is_dropped_not_reflected() {
    let (mut sw, _, c) = bridge(2, 64);
    // Two hosts behind port 0; the switch learns host 1 there.
    c[0].send(&[frame(MacAddr::BROADCAST, mac(1), 1, 60)]);
    drain(&mut sw, t(1));
    c[1].recv();
    c[0].send(&[frame(mac(1), mac(2), 2, 60)]);
    drain(&mut sw, t(1));
    assert!(c[0].recv().is_empty(), "never back to the sender");
    assert!(c[1].recv().is_empty(), "not flooded either");
    let s = sw.port(PortId(0)).unwrap().stats();
    assert_eq!(s.drop_count(DropReason::NoDest), 1);
}

/// Ethernet + IPv4 + TCP with `payload` bytes, checksums correct.
fn tcp4(dst: MacAddr, src: MacAddr, payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 54 + payload];
    f[..6].copy_from_slice(&dst.octets());
    f[6..12].copy_from_slice(&src.octets());
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[38..42].copy_from_slice(&7u32.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x18;
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    f
}

/// The header of a TCP/IPv4 super-frame built by `tcp4`: TSO at 1448 bytes, checksum
/// left to finish.
fn tso4() -> offload::VnetHdr {
    offload::VnetHdr {
        flags: offload::F_NEEDS_CSUM,
        gso_type: offload::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    }
}

fn vnet(h: offload::VnetHdr, len: u16) -> Vec<u8> {
    let mut v = Vec::new();
    h.write(&mut v, len);
    v
}

#[test]
fn virtio_net_headers_are_resized_stripped_or_finished_in_software() {
    let (mut sw, ids, c) = bridge(4, 256);
    // a: header 12 (a TAP with offloads), b: header 12, d: header 10, e: none.
    sw.set_hdr_len(ids[0], 12).unwrap();
    sw.set_hdr_len(ids[1], 12).unwrap();
    sw.set_hdr_len(ids[2], 10).unwrap();
    assert!(sw.set_hdr_len(ids[3], 11).is_err());
    let (a, b, d, e) = (&c[0], &c[1], &c[2], &c[3]);
    let big = tcp4(MacAddr::BROADCAST, mac(1), 4000);
    let gso = tso4();
    let mut pkt = vnet(gso, 12);
    pkt.extend_from_slice(&big);
    assert!(a.queue(&pkt, 3)); // 4066 bytes over three slots
    a.txsync();
    drain(&mut sw, t(0));
    // b has the same header: the super-frame crosses whole, header and all.
    assert_eq!(b.recv_frames(), vec![pkt.clone()]);
    // d has a 10-byte header: the same offload request, resized.
    let mut want_d = vnet(gso, 10);
    want_d.extend_from_slice(&big);
    assert_eq!(d.recv_frames(), vec![want_d]);
    // e has none: three MSS-sized segments with their own headers and checksums.
    let segs = e.recv_frames();
    assert_eq!(segs.len(), 3);
    let mut data = Vec::new();
    for s in &segs {
        assert_eq!(offload::checksum(&s[14..34]), 0, "IPv4 header checksum");
        assert!(s.len() <= 54 + 1448);
        data.extend_from_slice(&s[54..]);
    }
    assert_eq!(data, big[54..].to_vec());
    assert_eq!(sw.port(ids[3]).unwrap().stats().rx_packets, 3);

    // From a port without a header: receivers with one get an empty header first.
    let plain = frame(MacAddr::BROADCAST, mac(4), 9, 60);
    assert_eq!(e.send(std::slice::from_ref(&plain)), 1);
    drain(&mut sw, t(0));
    let mut want = vec![0u8; 10];
    want.extend_from_slice(&1u16.to_le_bytes());
    want.extend_from_slice(&plain);
    assert_eq!(a.recv_frames(), vec![want.clone()]);
    assert_eq!(b.recv_frames(), vec![want]);
    let mut want10 = vec![0u8; 10];
    want10.extend_from_slice(&plain);
    assert_eq!(d.recv_frames(), vec![want10]);

    // Offloads the switch cannot finish are dropped and counted on the destination.
    let mut bad = vnet(
        offload::VnetHdr {
            gso_type: offload::GSO_UDP,
            gso_size: 100,
            ..Default::default()
        },
        12,
    );
    bad.extend_from_slice(&tcp4(MacAddr::BROADCAST, mac(1), 300));
    assert!(a.queue(&bad, 1));
    a.txsync();
    drain(&mut sw, t(0));
    assert!(e.recv_frames().is_empty());
    assert_eq!(d.recv_frames().len(), 1, "header ports take it as it is");
    assert_eq!(
        sw.port(ids[3])
            .unwrap()
            .stats()
            .drop_count(DropReason::BadOffload),
        1
    );
    // Learning used the frame behind the header.
    let fdb = sw
        .lookup()
        .table()
        .map(|tb| tb.rows(t(0)))
        .unwrap_or_default();
    assert!(
        fdb.iter().any(|r| r.mac == mac(1) && r.port == ids[0]),
        "{fdb:?}"
    );
}

/// A super-frame segmented for a port without a header, into a ring that holds only
/// some of the segments: those that fit are delivered, the rest counted as `ring_full`
/// drops at that port (they once vanished uncounted when at least one fit).
#[test]
fn segments_that_do_not_fit_are_counted() {
    let (mut sw, ids, c) = bridge(2, 16);
    sw.set_hdr_len(ids[0], 12).unwrap();
    let (a, e) = (&c[0], &c[1]);
    let gso = tso4();
    // 12 segments each; e's RX ring holds 15 packets.
    for _ in 0..2 {
        let mut pkt = vnet(gso, 12);
        pkt.extend_from_slice(&tcp4(MacAddr::BROADCAST, mac(1), 12 * 1448));
        let frags = pkt.len().div_ceil(2048);
        assert!(a.queue(&pkt, frags));
        a.txsync();
        drain(&mut sw, t(0));
    }
    let st = sw.port(ids[1]).unwrap().stats();
    assert_eq!(st.rx_packets, 15);
    assert_eq!(st.drop_count(DropReason::RingFull), 9, "{st:?}");
    // Two copies, 24 segments: 15 delivered + 9 dropped (the receiver's law).
    assert_eq!((st.rx_copies, st.rx_segmented, st.rx_segments), (2, 2, 24));
    assert_eq!(sw.port(ids[0]).unwrap().stats().copies_dropped, 0);
    assert_eq!(e.recv_frames().len(), 15);
}

/// Keeps what the switch hands over for direct ports (and the RX ring it named).
struct Collect {
    got: Vec<(PortId, Vec<u8>)>,
    rings: Vec<(PortId, u16)>,
    accept: bool,
}

impl Collect {
    fn new(accept: bool) -> Collect {
        Collect {
            got: Vec::new(),
            rings: Vec::new(),
            accept,
        }
    }
}

impl Egress for Collect {
    fn send(&mut self, dst: PortId, ring: u16, hdr: &[u8], frags: &[Frag<'_>]) -> bool {
        let mut f = hdr.to_vec();
        for p in frags {
            let at = f.len();
            f.resize(at + p.len(), 0);
            p.copy_to(&mut f[at..]);
        }
        self.got.push((dst, f));
        self.rings.push((dst, ring));
        self.accept
    }
}

/// A direct port of several RX rings (a vhost-user port of several queue pairs) is
/// told the ring a copy would have gone to: the sender's TX ring modulo its RX rings,
/// as `multi_ring_ports_map_source_ring_to_destination_ring` has it for ring ports.
#[test]
fn direct_ports_are_told_the_rx_ring_of_each_packet() {
    let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
    let rings = |n: u16| PortGeometry {
        tx_rings: n,
        rx_rings: n,
        ..geom(64)
    };
    let mut attach = |name: &str, g| {
        sw.attach(name, vale_abi::Region::create(name, g).unwrap())
            .unwrap()
    };
    let (a, two, one) = (
        attach("vale0:a", rings(4)),
        attach("vale0:b", rings(2)),
        attach("vale0:c", rings(1)),
    );
    sw.set_direct(two, true).unwrap();
    sw.set_direct(one, true).unwrap();
    let ca = Client::attach(&sw, a);
    for r in 0..4 {
        assert!(ca.queue_on(r, &frame(MacAddr::BROADCAST, mac(0), r as u64, 60), 1));
    }
    ca.txsync();
    let mut eg = Collect::new(true);
    Forwarder::new().forward(&sw, t(1), &mut Vec::new(), &mut eg);
    assert_laws(&sw);
    let of = |p: PortId| -> Vec<u16> {
        eg.rings
            .iter()
            .filter(|(d, _)| *d == p)
            .map(|(_, r)| *r)
            .collect()
    };
    assert_eq!(
        of(two),
        [0, 1, 0, 1],
        "TX rings 0-3 onto RX rings 0, 1, 0, 1"
    );
    assert_eq!(of(one), [0, 0, 0, 0]);
}

#[test]
fn direct_ports_get_packets_from_the_senders_buffers_not_their_ring() {
    let (mut sw, ids, c) = bridge(3, 256);
    sw.set_direct(ids[1], true).unwrap();
    // A direct port whose header length differs from the sender's gets the packets
    // with a header of its own in front (here: an empty 12-byte one, num_buffers 1).
    sw.set_direct(ids[2], true).unwrap();
    sw.set_hdr_len(ids[2], 12).unwrap();
    let frames: Vec<_> = (0..5)
        .map(|i| frame(MacAddr::BROADCAST, mac(1), i, 60))
        .collect();
    assert_eq!(c[0].send(&frames), 5);
    let mut big = frame(MacAddr::BROADCAST, mac(1), 99, 5000);
    big.truncate(5000);
    assert!(c[0].queue(&big, 3));
    c[0].txsync();
    let mut eg = Collect::new(true);
    let mut fw = Forwarder::new();
    fw.forward(&sw, t(0), &mut Vec::new(), &mut eg);
    assert_laws(&sw);
    let with_hdr = |f: &Vec<u8>| {
        let mut v = vec![0u8; 12];
        v[10] = 1;
        v.extend_from_slice(f);
        v
    };
    let mut want: Vec<(PortId, Vec<u8>)> = Vec::new();
    for f in frames.iter().chain(std::iter::once(&big)) {
        want.push((ids[1], f.clone()));
        want.push((ids[2], with_hdr(f)));
    }
    want.sort_by_key(|(p, _)| p.0);
    let mut got = eg.got.clone();
    got.sort_by_key(|(p, _)| p.0);
    assert_eq!(got, want, "in batch order per port, fragments joined");
    assert!(
        c[1].recv_frames().is_empty() && c[2].recv_frames().is_empty(),
        "nothing in the direct ports' rings"
    );
    assert_eq!(sw.port(ids[1]).unwrap().stats().rx_packets, 6);
    assert_eq!(sw.port(ids[2]).unwrap().stats().rx_packets, 6);
    // And from a sender with a header to one without... is not direct: a port with no
    // header cannot take offloads, so the switch finishes them into its ring (tested
    // with the offload tests); a 10-byte header becomes a 12-byte one here.
    sw.set_hdr_len(ids[0], 10).unwrap();
    let mut h10 = vec![0u8; 10];
    h10[0] = 0; // no offload
    let mut pkt = h10.clone();
    pkt.extend_from_slice(&frames[0]);
    assert_eq!(c[0].send(&[pkt]), 1);
    eg.got.clear();
    fw.forward(&sw, t(0), &mut Vec::new(), &mut eg);
    assert_laws(&sw);
    let to2: Vec<_> = eg.got.iter().filter(|(p, _)| *p == ids[2]).collect();
    assert_eq!(to2.len(), 1);
    assert_eq!(
        to2[0].1,
        with_hdr(&frames[0]),
        "10-byte header resized to 12"
    );
    let to1: Vec<_> = eg.got.iter().filter(|(p, _)| *p == ids[1]).collect();
    assert_eq!(
        to1.len(),
        0,
        "ids[1] has no header: not direct from a 10-byte sender"
    );
    assert_eq!(
        c[1].recv_frames().len(),
        1,
        "converted into its ring instead"
    );
    sw.set_hdr_len(ids[0], 0).unwrap();
    sw.set_direct(ids[2], false).unwrap();
    // A refused send is a counted drop.
    eg = Collect::new(false);
    assert_eq!(c[0].send(&frames[..2]), 2);
    fw.forward(&sw, t(0), &mut Vec::new(), &mut eg);
    assert_laws(&sw);
    assert_eq!(eg.got.len(), 2);
    let st = sw.port(ids[1]).unwrap().stats();
    assert_eq!(st.drop_count(DropReason::TxError), 2);
    assert_eq!(st.rx_packets, 7); // 6 handed over, 1 through its ring
    let sst = sw.port(ids[0]).unwrap().stats();
    assert!(sst.is_conserved());
    assert_eq!(sst.copies_dropped, 2);
}

/// A port's counters can be read through their handle, without the switch: what a
/// control thread does while the forwarder keeps the switch.
#[test]
fn counters_handle_reads_without_the_switch() {
    let (mut sw, ids, c) = bridge(2, 64);
    let (tx, rx) = (
        sw.port(ids[0]).unwrap().counters(),
        sw.port(ids[1]).unwrap().counters(),
    );
    let frames: Vec<_> = (0..5)
        .map(|i| frame(MacAddr::BROADCAST, mac(0), i, 60))
        .collect();
    c[0].send(&frames);
    drain(&mut sw, t(1));
    let (s, r) = (tx.snapshot(), rx.snapshot());
    assert_eq!((s.tx_packets, s.forwarded, s.copies), (5, 5, 5));
    assert_eq!((r.rx_packets, r.rx_bytes), (5, 300));
    assert_eq!(
        sw.port(ids[1]).unwrap().stats(),
        r,
        "stats() is the same snapshot"
    );
    drop(sw.detach(ids[1]));
    assert_eq!(rx.snapshot().rx_packets, 5, "the handle outlives the port");
}

/// The laws with everything that once broke `copies = delivered + copies_dropped`: a
/// super-frame segmented for its destination and for a monitor of it (`/r`), whose ring
/// takes only some of the segments, and a TX monitor (`/t`) of the sender.
#[test]
fn segments_and_monitor_copies_balance_the_laws() {
    let (mut sw, ids, c) = bridge(3, 64);
    sw.set_hdr_len(ids[0], 12).unwrap();
    let mon = |sw: &mut Switch<LearningBridge>, name: &str, tx, rx, slots| {
        let r = vale_abi::Region::create(name, geom(slots)).unwrap();
        sw.attach_monitor(name, r, ids[1], tx, rx).unwrap()
    };
    let mr = mon(&mut sw, "vale0:p1/r", false, true, 16);
    let mt = mon(&mut sw, "vale0:p1/t", true, false, 64);
    let (mrc, mtc) = (Client::attach(&sw, mr), Client::attach(&sw, mt));
    // p0 -> broadcast (to p1 and p2), 12 segments each; p1 -> p0 one small frame.
    let mut pkt = vnet(tso4(), 12);
    pkt.extend_from_slice(&tcp4(MacAddr::BROADCAST, mac(0), 12 * 1448));
    for _ in 0..2 {
        assert!(c[0].queue(&pkt, pkt.len().div_ceil(2048)));
        c[0].txsync();
        drain(&mut sw, t(0));
    }
    c[1].send(&[frame(mac(0), mac(1), 7, 60)]);
    drain(&mut sw, t(0));
    let st = |id| sw.port(id).unwrap().stats();
    let (s0, s1, sr, stx) = (st(ids[0]), st(ids[1]), st(mr), st(mt));
    assert_eq!((s0.tx_packets, s0.copies, s0.copies_dropped), (2, 4, 0));
    assert_eq!((s1.rx_copies, s1.rx_segmented, s1.rx_segments), (2, 2, 24));
    assert_eq!(s1.rx_packets, 24);
    // The /r monitor: the same 24 segments into a ring of 15.
    assert_eq!((sr.mon_copies, sr.rx_segmented, sr.rx_segments), (2, 2, 24));
    assert_eq!(
        (sr.rx_packets, sr.drop_count(DropReason::RingFull)),
        (15, 9)
    );
    assert_eq!((stx.mon_copies, stx.rx_packets), (1, 1));
    assert_eq!(mrc.recv_frames().len(), 15);
    assert_eq!(mtc.recv_frames().len(), 1);
    assert_eq!(c[2].recv_frames().len(), 24);
}
