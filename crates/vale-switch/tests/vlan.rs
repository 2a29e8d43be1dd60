//! VLAN-aware switching through real rings: every row of Open vSwitch's semantics table
//! (l2-peers 3.3) as a case, with the frames' bytes checked where they come out, plus
//! per-VLAN learning, floods kept inside their VLAN, the drop counts, direct ports,
//! monitors and virtio-net headers, and a property test over random modes and frames.

mod common;
use common::*;
use proptest::prelude::*;
use vale_abi::{PortGeometry, Region};
use vale_switch::*;

const Q: u16 = 0x8100;
const AD: u16 = 0x88a8;

/// A frame from `src` to `dst` with `tags` (TPID, TCI) outermost first, EtherType 0x88b5
/// and `id` in its last 8 bytes, 64 bytes before tagging.
fn tagged(dst: MacAddr, src: MacAddr, tags: &[(u16, u16)], id: u64) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&src.octets());
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(56 + 4 * tags.len(), 0xa5);
    f.extend_from_slice(&id.to_le_bytes());
    f
}

/// The (TPID, TCI) tags of a frame built by `tagged`, outermost first.
fn tags_of(f: &[u8]) -> Vec<(u16, u16)> {
    let mut v = Vec::new();
    let mut at = 12;
    while at + 4 <= f.len() {
        let tpid = u16::from_be_bytes([f[at], f[at + 1]]);
        if tpid != Q && tpid != AD {
            break;
        }
        v.push((tpid, u16::from_be_bytes([f[at + 2], f[at + 3]])));
        at += 4;
    }
    v
}

fn id_of(f: &[u8]) -> u64 {
    u64::from_le_bytes(f[f.len() - 8..].try_into().unwrap())
}

struct Net {
    sw: Switch<LearningBridge>,
    ids: Vec<PortId>,
    c: Vec<Client>,
}

impl Net {
    fn new(modes: &[&str]) -> Net {
        let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
        sw.set_vlan_filtering(true);
        let mut ids = Vec::new();
        for (i, m) in modes.iter().enumerate() {
            let name = format!("vale0:p{i}");
            let g = PortGeometry {
                tx_slots: 64,
                rx_slots: 64,
                ..Default::default()
            };
            let id = sw
                .attach(name.clone(), Region::create(&name, g).unwrap())
                .unwrap();
            sw.set_port_vlan(id, m.parse().unwrap()).unwrap();
            ids.push(id);
        }
        let c = ids.iter().map(|id| Client::attach(&sw, *id)).collect();
        Net { sw, ids, c }
    }

    /// Sends `f` from port `from`, forwards, and returns what each port got.
    fn send(&mut self, from: usize, f: Vec<u8>) -> Vec<Vec<Vec<u8>>> {
        self.c[from].send(&[f]);
        drain(&mut self.sw, t(1));
        self.c.iter().map(|c| c.recv_frames()).collect()
    }

    fn drops(&self, port: usize, r: DropReason) -> u64 {
        self.sw.port(self.ids[port]).unwrap().stats().drop_count(r)
    }
}

fn bc(tags: &[(u16, u16)], id: u64) -> Vec<u8> {
    tagged(MacAddr::BROADCAST, mac(0x0a01), tags, id)
}

/// The frame `f` with its outer tag replaced by `tags`.
fn retag(f: &[u8], old: usize, tags: &[(u16, u16)]) -> Vec<u8> {
    let mut v = f[..12].to_vec();
    for (tpid, tci) in tags {
        v.extend_from_slice(&tpid.to_be_bytes());
        v.extend_from_slice(&tci.to_be_bytes());
    }
    v.extend_from_slice(&f[12 + 4 * old..]);
    v
}

// OVS's bridge: pa access 10, pb trunk 10,20, pc access 20.
const OVS: [&str; 3] = ["access 10", "trunk 10,20", "access 20"];

#[test]
fn untagged_on_access_leaves_the_trunk_tagged_and_not_the_other_vlan() {
    let mut n = Net::new(&OVS);
    let f = bc(&[], 1);
    let got = n.send(0, f.clone());
    assert_eq!(got[1], vec![retag(&f, 0, &[(Q, 10)])]);
    assert!(got[2].is_empty(), "access 20 gets nothing of VLAN 10");
    assert!(got[0].is_empty());
}

#[test]
fn trunk_vids_reach_their_access_ports_untagged() {
    let mut n = Net::new(&OVS);
    let f = bc(&[(Q, 20)], 2);
    let got = n.send(1, f.clone());
    assert_eq!(
        got[2],
        vec![retag(&f, 1, &[])],
        "access 20 gets VID 20 untagged"
    );
    assert!(got[0].is_empty(), "access 10 does not");
    let f = bc(&[(Q, 0xa00a)], 3);
    let got = n.send(1, f.clone());
    assert_eq!(
        got[0],
        vec![retag(&f, 1, &[])],
        "access 10 gets VID 10 untagged"
    );
    assert!(got[2].is_empty());
}

#[test]
fn frames_a_port_does_not_admit_are_dropped_and_counted() {
    let mut n = Net::new(&OVS);
    // VID 30 on the trunk (not in its set), untagged on the trunk (no native VLAN).
    assert!(n.send(1, bc(&[(Q, 30)], 4)).iter().all(Vec::is_empty));
    assert!(n.send(1, bc(&[], 5)).iter().all(Vec::is_empty));
    assert_eq!(n.drops(1, DropReason::VlanIngressFilter), 2);
    // A tag on an access port, even its own VLAN, and an S-tag.
    assert!(n.send(0, bc(&[(Q, 10)], 6)).iter().all(Vec::is_empty));
    assert!(
        n.send(0, bc(&[(AD, 10), (Q, 5)], 7))
            .iter()
            .all(Vec::is_empty)
    );
    assert_eq!(n.drops(0, DropReason::VlanIngressFilter), 2);
    // The laws count them: tx_packets = forwarded + drops.
    let s = n.sw.port(n.ids[0]).unwrap().stats();
    assert_eq!((s.tx_packets, s.forwarded), (2, 0));
}

#[test]
fn priority_tags_count_as_untagged() {
    let mut n = Net::new(&["access 10", "trunk 10,20", "access 10"]);
    let f = bc(&[(Q, 0xe000)], 8);
    let got = n.send(0, f.clone());
    // Out of the trunk tagged 10 with its priority kept; out of access 10 untagged.
    assert_eq!(got[1], vec![retag(&f, 1, &[(Q, 0xe00a)])]);
    assert_eq!(got[2], vec![retag(&f, 1, &[])]);
}

#[test]
fn native_untagged_and_native_tagged() {
    for (mode, out_tag) in [
        ("trunk 10,20 native 30", None),
        ("trunk 10,20 native 30 tagged", Some((Q, 30))),
    ] {
        let mut n = Net::new(&["access 30", mode, "access 10"]);
        // Untagged in on the trunk: VLAN 30, out of access 30 untagged.
        let f = bc(&[], 9);
        let got = n.send(1, f.clone());
        assert_eq!(got[0], vec![f.clone()], "{mode}");
        assert!(got[2].is_empty(), "{mode}");
        // Back from access 30: untagged on native-untagged, tagged 30 on native-tagged.
        let f = bc(&[], 10);
        let got = n.send(0, f.clone());
        let want = match out_tag {
            None => f.clone(),
            Some(t) => retag(&f, 0, &[t]),
        };
        assert_eq!(got[1], vec![want], "{mode}");
    }
}

#[test]
fn tunnel_ports_carry_customer_tags_inside_an_s_tag() {
    // OVS's dot1q-tunnel tag=100 with the trunk's trunks=100.
    let mut n = Net::new(&["tunnel 100", "trunk 100", "tunnel 200"]);
    // C-tagged VID 10 in: out of the trunk with S-tag 0x88a8 VID 100 outside, C-tag 10
    // inside; an untagged frame gets just the S-tag.
    let f = bc(&[(Q, 10)], 11);
    let got = n.send(0, f.clone());
    assert_eq!(got[1], vec![retag(&f, 0, &[(AD, 100)])]);
    assert_eq!(tags_of(&got[1][0]), vec![(AD, 100), (Q, 10)]);
    assert!(got[2].is_empty(), "another S-VLAN");
    let f = bc(&[], 12);
    assert_eq!(n.send(0, f.clone())[1], vec![retag(&f, 0, &[(AD, 100)])]);
    // And back: the S-tag popped, the customer's frame as it was.
    let inner = bc(&[(Q, 10)], 13);
    let got = n.send(1, retag(&inner, 0, &[(AD, 100)]));
    assert_eq!(got[0], vec![inner]);
    assert!(got[2].is_empty());
}

#[test]
fn qinq_frames_on_trunks_and_access_ports() {
    let mut n = Net::new(&["trunk 100", "access 100", "trunk 100,200"]);
    // An S-tagged QinQ frame on a trunk is in its S-VLAN, and trunks keep both tags.
    let f = bc(&[(AD, 100), (Q, 10)], 14);
    let got = n.send(0, f.clone());
    assert_eq!(got[2], vec![f.clone()]);
    // An access port gets the outer tag popped: the C-tag stays as payload.
    assert_eq!(got[1], vec![retag(&f, 1, &[])]);
    assert_eq!(tags_of(&got[1][0]), vec![(Q, 10)]);
}

#[test]
fn learning_is_per_vlan_and_floods_stay_inside_theirs() {
    let mut n = Net::new(&["access 10", "access 20", "trunk 10,20", "access 10"]);
    let h = mac(0x0a02);
    // The same address in VLAN 10 (behind p0) and VLAN 20 (behind p1).
    n.send(0, tagged(MacAddr::BROADCAST, h, &[], 20));
    n.send(1, tagged(MacAddr::BROADCAST, h, &[], 21));
    {
        let lookup = n.sw.lookup();
        let fdb = lookup.fdb();
        assert_eq!(fdb.get_in(h, 10), Some(n.ids[0]));
        assert_eq!(fdb.get_in(h, 20), Some(n.ids[1]));
        assert_eq!(fdb.get(h), None, "nothing in VLAN 0");
    }
    // Unicast to h from the trunk reaches the owner in each VLAN, no one else.
    let got = n.send(2, tagged(h, mac(0x0a03), &[(Q, 20)], 22));
    assert_eq!(got[1].len(), 1);
    assert!(got[0].is_empty() && got[3].is_empty());
    let got = n.send(2, tagged(h, mac(0x0a03), &[(Q, 10)], 23));
    assert_eq!(got[0].len(), 1);
    assert!(got[1].is_empty() && got[3].is_empty());
    // A VLAN-20 broadcast from p1 reaches only the trunk; a VLAN-10 one p0's peers.
    let got = n.send(1, bc(&[], 24));
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [0, 0, 1, 0]);
    let got = n.send(0, bc(&[], 25));
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [0, 0, 1, 1]);
    // The table shows VLANs.
    let rows = n.sw.lookup().table().unwrap().rows(t(1));
    assert!(rows.iter().any(|r| r.mac == h && r.vlan == Some(20)));
    assert!(rows.iter().any(|r| r.mac == h && r.vlan == Some(10)));
}

#[test]
fn a_vlan_with_no_other_member_is_a_counted_drop() {
    let mut n = Net::new(&["access 10", "access 20", "trunk 20"]);
    assert!(n.send(0, bc(&[], 30)).iter().all(Vec::is_empty));
    assert_eq!(n.drops(0, DropReason::VlanNotMember), 1);
    // A learned address whose port left the VLAN: the unicast is refused, counted.
    let h = mac(0x0a09);
    n.send(1, tagged(MacAddr::BROADCAST, h, &[], 31));
    assert_eq!(n.sw.lookup().fdb().get_in(h, 20), Some(n.ids[1]));
    // Re-moding p2 flushes only p2's entries: h stays learned behind p1.
    n.sw.set_port_vlan(n.ids[2], "trunk 10,20".parse().unwrap())
        .unwrap();
    assert_eq!(n.sw.lookup().fdb().get_in(h, 20), Some(n.ids[1]));
    // Unknown in VLAN 10 (h lives in 20): flooded to p2, now a member of 10, not p1.
    let got = n.send(0, tagged(h, mac(0x0a0a), &[], 32));
    assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [0, 0, 1]);
    assert_eq!(n.drops(0, DropReason::VlanNotMember), 1);
    // A port that leaves VLAN 20 while a unicast to it is learned: refused and counted
    // (its entries are flushed, so re-learn one through a trunk first).
    n.send(2, tagged(MacAddr::BROADCAST, mac(0x0a0b), &[(Q, 20)], 33));
    assert_eq!(n.sw.lookup().fdb().get_in(mac(0x0a0b), 20), Some(n.ids[2]));
}

#[test]
fn a_lookup_that_sends_across_vlans_is_refused_and_counted() {
    // A patch panel knows no VLANs: the engine still keeps p0's VLAN 10 off p1 (20).
    let mut sw = Switch::new(StaticMap::new(), SwitchConfig::default()).unwrap();
    sw.set_vlan_filtering(true);
    let mut ids = Vec::new();
    for (i, m) in ["access 10", "access 20", "access 10"].iter().enumerate() {
        let name = format!("vale0:s{i}");
        let r = Region::create(&name, PortGeometry::default()).unwrap();
        ids.push(sw.attach(name, r).unwrap());
        sw.set_port_vlan(ids[i], m.parse().unwrap()).unwrap();
    }
    sw.lookup_mut().connect(ids[0], ids[1]);
    sw.lookup_mut().connect(ids[1], ids[0]);
    sw.lookup_mut().connect(ids[2], ids[0]);
    let c: Vec<Client> = ids.iter().map(|id| Client::attach(&sw, *id)).collect();
    c[0].send(&[bc(&[], 70)]);
    c[1].send(&[bc(&[], 71)]);
    c[2].send(&[bc(&[], 72)]);
    drain(&mut sw, t(1));
    assert!(c[1].recv_frames().is_empty());
    assert_eq!(c[0].recv_frames().len(), 1, "from p2, a member of VLAN 10");
    let st = |i: usize| sw.port(ids[i]).unwrap().stats();
    assert_eq!(st(0).drop_count(DropReason::VlanNotMember), 1);
    assert_eq!(st(1).drop_count(DropReason::VlanNotMember), 1);
    assert_eq!(st(2).drop_count(DropReason::VlanNotMember), 0);
}

#[test]
fn filtering_off_carries_tags_untouched_and_ignores_modes() {
    let mut n = Net::new(&OVS);
    n.sw.set_vlan_filtering(false);
    for f in [
        bc(&[(Q, 30)], 40),
        bc(&[(Q, 10)], 41),
        bc(&[(Q, 0x2000)], 42),
    ] {
        let got = n.send(0, f.clone());
        assert_eq!(got[1], vec![f.clone()]);
        assert_eq!(got[2], vec![f]);
    }
    assert_eq!(n.sw.lookup().fdb().get(mac(0x0a01)), Some(n.ids[0]));
    n.sw.set_vlan_filtering(true);
    assert_eq!(
        n.sw.lookup().fdb().get(mac(0x0a01)),
        None,
        "flushed on the change"
    );
}

#[test]
fn ports_never_configured_are_trunks_of_everything() {
    let mut n = Net::new(&["trunk all", "trunk all", "access 10"]);
    for f in [
        bc(&[], 43),
        bc(&[(Q, 0x6010)], 44),
        bc(&[(AD, 7), (Q, 8)], 45),
    ] {
        assert_eq!(n.send(0, f.clone())[1], vec![f]);
    }
    assert_eq!(n.drops(0, DropReason::VlanIngressFilter), 0);
}

/// Keeps what the switch hands over for direct ports.
struct Collect(Vec<(PortId, Vec<u8>)>);

impl Egress for Collect {
    fn send(&mut self, dst: PortId, _ring: u16, hdr: &[u8], frags: &[Frag<'_>]) -> bool {
        let mut f = hdr.to_vec();
        for p in frags {
            let at = f.len();
            f.resize(at + p.len(), 0);
            p.copy_to(&mut f[at..]);
        }
        self.0.push((dst, f));
        true
    }
}

#[test]
fn direct_ports_and_virtio_headers_get_the_same_tagging() {
    // p1 a direct trunk, p2 a direct access port with a 12-byte virtio-net header, p3 a
    // ring port with a 10-byte one.
    let mut n = Net::new(&["access 10", "trunk 10", "access 10", "trunk 10"]);
    n.sw.set_direct(n.ids[1], true).unwrap();
    n.sw.set_direct(n.ids[2], true).unwrap();
    n.sw.set_hdr_len(n.ids[2], 12).unwrap();
    n.sw.set_hdr_len(n.ids[3], 10).unwrap();
    let f = bc(&[(Q, 0x4000)], 50);
    n.c[0].send(std::slice::from_ref(&f));
    let mut eg = Collect(Vec::new());
    Forwarder::new().forward(&n.sw, t(1), &mut Vec::new(), &mut eg);
    assert_laws(&n.sw);
    let mut hdr12 = vec![0u8; 12];
    hdr12[10] = 1;
    let untagged = retag(&f, 1, &[]);
    assert_eq!(
        eg.0,
        vec![
            (n.ids[1], retag(&f, 1, &[(Q, 0x400a)])),
            (n.ids[2], [hdr12, untagged].concat()),
        ]
    );
    let got = n.c[3].recv_frames();
    assert_eq!(
        got,
        vec![[vec![0u8; 10], retag(&f, 1, &[(Q, 0x400a)])].concat()]
    );
}

#[test]
fn rx_monitors_see_what_their_port_gets() {
    let mut n = Net::new(&["access 10", "trunk 10,20", "access 20"]);
    let g = PortGeometry::default();
    let m =
        n.sw.attach_monitor(
            "vale0:p1/r",
            Region::create("m", g).unwrap(),
            n.ids[1],
            false,
            true,
        )
        .unwrap();
    let mc = Client::attach(&n.sw, m);
    let mc2 = {
        let id =
            n.sw.attach_monitor(
                "vale0:p2/r",
                Region::create("m2", g).unwrap(),
                n.ids[2],
                false,
                true,
            )
            .unwrap();
        Client::attach(&n.sw, id)
    };
    let f = bc(&[], 60);
    let got = n.send(0, f.clone());
    assert_eq!(mc.recv_frames(), got[1], "the trunk's copy, tagged");
    assert_eq!(tags_of(&got[1][0]), vec![(Q, 10)]);
    assert!(
        mc2.recv_frames().is_empty(),
        "p2 got nothing, so its monitor neither"
    );
}

const MODES: [&str; 8] = [
    "access 10",
    "access 20",
    "trunk 10,20",
    "trunk 10 native 20",
    "trunk 20 native 10 tagged",
    "tunnel 10",
    "trunk all",
    "trunk 0,20",
];
const TAGS: [&[(u16, u16)]; 7] = [
    &[],
    &[(Q, 10)],
    &[(Q, 0x2014)],
    &[(Q, 0xa000)],
    &[(Q, 30)],
    &[(AD, 10), (Q, 7)],
    &[(AD, 20)],
];

/// Ports of one header length: the tag is written while copying, and the header's
/// offsets still move with it, both ways.
#[test]
fn same_header_length_edits_move_the_offsets() {
    use vale_switch::offload::{F_NEEDS_CSUM, VnetHdr};
    let mut n = Net::new(&["access 10", "trunk 10"]);
    n.sw.set_hdr_len(n.ids[0], 10).unwrap();
    n.sw.set_hdr_len(n.ids[1], 10).unwrap();
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        hdr_len: 54,
        csum_start: 34,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let with = |h: VnetHdr, f: &[u8]| {
        let mut v = Vec::new();
        h.write(&mut v, 10);
        v.extend_from_slice(f);
        v
    };
    let plain = tcp4(mac(0x0a05))[..200].to_vec();
    let tagged = retag(&plain, 0, &[(Q, 10)]);
    let moved = VnetHdr {
        hdr_len: 58,
        csum_start: 38,
        ..h
    };
    let got = n.send(0, with(h, &plain));
    assert_eq!(got[1], vec![with(moved, &tagged)], "pushed, offsets +4");
    let got = n.send(1, with(moved, &tagged));
    assert_eq!(got[0], vec![with(h, &plain)], "popped, offsets -4");
    // No offload asked: the header is copied as it is.
    let zero = VnetHdr::default();
    let got = n.send(0, with(zero, &plain));
    assert_eq!(got[1], vec![with(zero, &tagged)]);
    assert_laws(&n.sw);
}

/// At the buffer's size limit a pushed tag takes a second slot; frames of several slots
/// are edited too; every byte is where it should be.
#[test]
fn edits_at_the_buffer_limit_and_across_slots() {
    let mut n = Net::new(&["access 10", "trunk 10"]);
    let bs = PortGeometry::default().buf_size as usize;
    let sized = |len: usize, tags: &[(u16, u16)]| {
        let mut f = tagged(mac(0x0b02), mac(0x0a01), tags, 0);
        f.resize(len, 0);
        for (i, b) in f[12 + 4 * tags.len() + 2..].iter_mut().enumerate() {
            *b = (i * 13 + 5) as u8;
        }
        f
    };
    for len in [60, 61, 63, 64, 65, 1514, bs - 4, bs - 3, bs] {
        // Untagged from the access port: `len + 4` bytes on the trunk, in one slot while
        // they fit one buffer.
        let f = sized(len, &[]);
        let got = n.c[0].send(std::slice::from_ref(&f));
        assert_eq!(got, 1);
        drain(&mut n.sw, t(1));
        let r = n.c[1].recv();
        assert_eq!(r.len(), 1, "len {len}");
        assert_eq!(r[0].0, retag(&f, 0, &[(Q, 10)]), "len {len}");
        assert_eq!(r[0].1.len(), if len + 4 > bs { 2 } else { 1 }, "len {len}");
        // Tagged from the trunk: popped on the access port, one slot.
        let f = sized(len, &[(Q, 0x200a)]);
        let got = n.send(1, f.clone());
        assert_eq!(got[0], vec![retag(&f, 1, &[])], "len {len}");
    }
    // Two- and three-slot frames, each way.
    for (len, frags) in [(3000, 2), (bs * 2 + 100, 3)] {
        let f = sized(len, &[]);
        assert!(n.c[0].queue(&f, frags));
        n.c[0].txsync();
        drain(&mut n.sw, t(1));
        assert_eq!(n.c[1].recv_frames(), vec![retag(&f, 0, &[(Q, 10)])]);
        let f = sized(len, &[(Q, 10)]);
        assert!(n.c[1].queue(&f, frags));
        n.c[1].txsync();
        drain(&mut n.sw, t(1));
        assert_eq!(n.c[0].recv_frames(), vec![retag(&f, 1, &[])]);
    }
    assert_laws(&n.sw);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random modes and frames: every frame comes out only at members of the VLAN it
    /// went in with, tagged as the receiver's mode says (entering there again puts it
    /// in the same VLAN), its payload untouched; and every frame is delivered or
    /// counted.
    #[test]
    fn frames_stay_in_their_vlan(
        modes in prop::collection::vec(0usize..MODES.len(), 2..6),
        sends in prop::collection::vec((0usize..6, 0usize..TAGS.len()), 1..30),
    ) {
        let ms: Vec<&str> = modes.iter().map(|m| MODES[*m]).collect();
        let pv: Vec<PortVlan> = ms.iter().map(|m| m.parse().unwrap()).collect();
        let mut n = Net::new(&ms);
        for (k, (from, tag)) in sends.iter().enumerate() {
            let from = from % ms.len();
            let f = bc(TAGS[*tag], k as u64);
            let et = u16::from_be_bytes([f[12], f[13]]);
            let tci = u16::from_be_bytes([f[14], f[15]]);
            let verdict = pv[from].ingress(et, tci, f.len() as u32);
            let got = n.send(from, f.clone());
            let Ok((vid, _)) = verdict else {
                prop_assert!(got.iter().all(Vec::is_empty));
                continue;
            };
            for (p, frames) in got.iter().enumerate() {
                let member = p != from && pv[p].member(vid);
                prop_assert_eq!(frames.len(), usize::from(member), "port {} ({}), vid {}", p, ms[p], vid);
                for g in frames {
                    prop_assert_eq!(id_of(g), k as u64);
                    let et = u16::from_be_bytes([g[12], g[13]]);
                    let tci = u16::from_be_bytes([g[14], g[15]]);
                    // (A frame leaving an access port with a tag still on it carries a
                    // customer tag as payload, from a QinQ frame or a tunnel port, which
                    // that port would not admit back.)
                    let inner_tag = !tags_of(g).is_empty() && matches!(pv[p], PortVlan::Access(_));
                    prop_assert!(!inner_tag || TAGS[*tag].len() > 1 || matches!(pv[from], PortVlan::Tunnel(_)));
                    if !matches!(pv[p], PortVlan::Tunnel(_)) && !inner_tag {
                        prop_assert_eq!(pv[p].ingress(et, tci, g.len() as u32).map(|x| x.0), Ok(vid));
                    }
                    // The payload is untouched, whatever was done to the tags.
                    prop_assert_eq!(&g[g.len() - 44..], &f[f.len() - 44..]);
                }
            }
        }
        assert_laws(&n.sw);
    }
}

/// A TCP/IPv4 super-frame (4000 bytes of payload, TSO at 1448) as `engine.rs` builds it.
fn tcp4(src: MacAddr) -> Vec<u8> {
    let payload = 4000;
    let mut f = vec![0u8; 54 + payload];
    f[..6].copy_from_slice(&MacAddr::BROADCAST.octets());
    f[6..12].copy_from_slice(&src.octets());
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[46] = 5 << 4;
    f[47] = 0x18;
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    f
}

#[test]
fn offload_offsets_move_with_the_tag_and_segments_are_tagged() {
    use vale_switch::offload::{F_NEEDS_CSUM, GSO_TCPV4, VnetHdr, checksum};
    // p0 access 10 with a 12-byte header (a TAP); p1 a trunk with a 10-byte header (a
    // ring), p2 a trunk without one (segmented in software), p3 a direct trunk with a
    // 10-byte header (an AF_PACKET interface).
    let mut n = Net::new(&["access 10", "trunk 10", "trunk 10", "trunk 10"]);
    n.sw.set_hdr_len(n.ids[0], 12).unwrap();
    n.sw.set_hdr_len(n.ids[1], 10).unwrap();
    n.sw.set_hdr_len(n.ids[3], 10).unwrap();
    n.sw.set_direct(n.ids[3], true).unwrap();
    let h = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let big = tcp4(mac(0x0a05));
    let mut pkt = Vec::new();
    h.write(&mut pkt, 12);
    pkt.extend_from_slice(&big);
    assert!(n.c[0].queue(&pkt, 3));
    n.c[0].txsync();
    let mut eg = Collect(Vec::new());
    Forwarder::new().forward(&n.sw, t(1), &mut Vec::new(), &mut eg);
    assert_laws(&n.sw);
    // The header's offsets count the tag.
    let moved = VnetHdr {
        hdr_len: 58,
        csum_start: 38,
        ..h
    };
    let tagged = retag(&big, 0, &[(Q, 10)]);
    let mut want = Vec::new();
    moved.write(&mut want, 10);
    want.extend_from_slice(&tagged);
    assert_eq!(n.c[1].recv_frames(), vec![want.clone()]);
    assert_eq!(eg.0, vec![(n.ids[3], want)]);
    // Segmented, then tagged: each segment's headers right after the tag.
    let segs = n.c[2].recv_frames();
    assert_eq!(segs.len(), 3);
    let mut data = Vec::new();
    for s in &segs {
        assert_eq!(tags_of(s), vec![(Q, 10)]);
        assert_eq!(checksum(&s[18..38]), 0, "IPv4 header checksum");
        data.extend_from_slice(&s[58..]);
    }
    assert_eq!(data, big[54..].to_vec());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Mixed batches (frames of several VLANs and tag shapes from one port, forwarded
    /// together) against the semantics as pure functions: each port gets exactly the
    /// frames `PortVlan::egress` admits, in order, changed as `vlan::apply` says.
    #[test]
    fn mixed_batches_match_the_model(
        modes in prop::collection::vec(0usize..MODES.len(), 2..6),
        rounds in prop::collection::vec((0usize..6, prop::collection::vec(0usize..TAGS.len(), 1..12)), 1..6),
    ) {
        let ms: Vec<&str> = modes.iter().map(|m| MODES[*m]).collect();
        let pv: Vec<PortVlan> = ms.iter().map(|m| m.parse().unwrap()).collect();
        let mut n = Net::new(&ms);
        let mut id = 0u64;
        for (from, tags) in &rounds {
            let from = from % ms.len();
            let frames: Vec<Vec<u8>> = tags
                .iter()
                .map(|t| {
                    id += 1;
                    bc(TAGS[*t], id)
                })
                .collect();
            let mut want = vec![Vec::new(); ms.len()];
            for f in &frames {
                let et = u16::from_be_bytes([f[12], f[13]]);
                let tci = u16::from_be_bytes([f[14], f[15]]);
                let Ok((vid, how)) = pv[from].ingress(et, tci, f.len() as u32) else {
                    continue;
                };
                for (p, w) in want.iter_mut().enumerate() {
                    if let (true, Some(e)) = (p != from, pv[p].egress(vid, how, tci)) {
                        let mut out = Vec::new();
                        vale_switch::vlan::apply(e, f, &mut out);
                        w.push(out);
                    }
                }
            }
            prop_assert_eq!(n.c[from].send(&frames), frames.len());
            drain(&mut n.sw, t(1));
            for (p, w) in want.iter().enumerate() {
                prop_assert_eq!(&n.c[p].recv_frames(), w, "port {} ({})", p, ms[p]);
            }
        }
    }
}
