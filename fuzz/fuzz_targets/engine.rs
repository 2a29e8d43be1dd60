//! A port region's contents fed to the engine: a switch with two honest ports and one
//! whose client writes fuzz bytes anywhere in its own region (ring head/cur/tail, sync
//! words, slots: buffer indices, lengths, flags, fragment chains; buffers), between
//! forwarding passes. Optionally the hostile port carries a virtio-net header (the
//! engine converts and segments), a monitor watches an honest port, and the switch
//! filters VLANs (the hostile port in any mode, its frames tagged as it likes), and the
//! switch may be one of several threads (its RX rings then filled by exact leases).
//!
//! Checked: no panic; the honest pair's unicast frames all arrive, intact and in order
//! (unless the hostile port took over the receiver's address, as a learning bridge allows);
//! every packet taken from the hostile ring (counted from the ring) and from the honest
//! sender is forwarded or counted as dropped; every port's counters are conserved, and
//! (without conversion or monitors) every copy
//! is either delivered or counted as dropped at its destination.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vale_abi::layout::{
    NETMAP_RING_SIZE, NETMAP_SLOT_SIZE, NS_MOREFRAG, NetmapSlot, off, sync_off,
};
use vale_abi::{AppRing, Dir, PortGeometry, Region};
use vale_switch::*;

/// One client's own mapping of its port's region.
struct Client {
    region: Region,
    tx: AppRing,
    rx: AppRing,
}

impl Client {
    fn attach<L: Lookup>(sw: &Switch<L>, id: PortId) -> Client {
        let port = sw.port(id).expect("attached");
        let fd = port.region().fd().try_clone_to_owned().expect("dup");
        let region = Region::from_fd(fd, port.geometry()).expect("map");
        let tx = AppRing::new(region.ring(Dir::Tx, 0).expect("tx ring"));
        let rx = AppRing::new(region.ring(Dir::Rx, 0).expect("rx ring"));
        Client { region, tx, rx }
    }

    /// Queues and publishes one frame in one slot; false if the ring is full.
    fn send(&self, frame: &[u8]) -> bool {
        self.tx.txsync();
        if self.tx.space() == 0 {
            return false;
        }
        let (v, h) = (self.tx.view(), self.tx.head());
        let s = v.read_slot(h);
        assert!(v.bufs().write(s.buf_idx, frame));
        let slot = NetmapSlot {
            buf_idx: s.buf_idx,
            len: frame.len() as u16,
            flags: 0,
            ptr: 0,
        };
        v.write_slot(h, slot);
        self.tx.advance(1);
        self.tx.txsync();
        true
    }

    /// Every complete packet on the RX ring.
    fn recv(&self) -> Vec<Vec<u8>> {
        let (ring, mut out, mut cur) = (&self.rx, Vec::new(), Vec::new());
        ring.rxsync();
        let v = ring.view();
        while ring.space() > 0 {
            let s = v.read_slot(ring.head());
            let mut buf = vec![0u8; s.len as usize];
            assert!(
                v.bufs().read(s.buf_idx, &mut buf),
                "switch published a bad slot"
            );
            cur.extend_from_slice(&buf);
            ring.advance(1);
            if s.flags & NS_MOREFRAG == 0 {
                out.push(std::mem::take(&mut cur));
            }
        }
        assert!(cur.is_empty(), "switch published half a packet");
        ring.rxsync();
        out
    }
}

fn mac(i: u8) -> MacAddr {
    MacAddr::new([2, 0, 0, 0, 0, i])
}

fn frame(dst: MacAddr, src: MacAddr, tag: u32, len: usize) -> Vec<u8> {
    let mut f = vec![tag as u8; len.max(18)];
    f[..6].copy_from_slice(&dst.octets());
    f[6..12].copy_from_slice(&src.octets());
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f[14..18].copy_from_slice(&tag.to_le_bytes());
    f
}

/// Fuzz bytes, read as little-endian numbers; zeros past the end.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        let n = N.min(self.0.len());
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
}

/// Ring-header and sync-block words the hostile client may aim at: (in the sync block?,
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

/// Runs the switch until it moves nothing; always at time 0, so nothing ages out.
fn drain<L: Lookup>(sw: &mut Switch<L>, now: u64) {
    let (mut ev, mut fw) = (Vec::new(), Forwarder::new());
    for _ in 0..64 {
        if fw.forward(sw, Timestamp::from_secs(now), &mut ev, &mut NoEgress) == 0 {
            break;
        }
    }
}

/// The packets the switch takes from the hostile port's TX ring, counted from the ring
/// itself rather than from the engine's counters: before each drain the switch's
/// published `hwcur` is overwritten with a mark; after it, the slots between the last
/// `hwcur` and the new one are what the switch read (it never writes TX slots, and
/// nothing else runs meanwhile), one packet per slot that ends a chain and one for a
/// chain left unfinished at the head.
struct TakenCount {
    sync: usize,
    hwcur: u32,
    packets: u64,
}

impl TakenCount {
    const MARK: u32 = u32::MAX;

    fn before(&self, c: &Client) {
        c.region
            .write_raw(self.sync + sync_off::KTOA_HWCUR, &Self::MARK.to_ne_bytes());
    }

    fn after(&mut self, c: &Client) {
        let mut w = [0u8; 4];
        assert!(c.region.read_raw(self.sync + sync_off::KTOA_HWCUR, &mut w));
        let new = u32::from_ne_bytes(w);
        if new == Self::MARK {
            return; // nothing released
        }
        let v = c.tx.view();
        let n = v.num_slots();
        assert!(new < n, "switch published hwcur {new} of {n}");
        let mut i = self.hwcur;
        let mut open = false;
        while i != new {
            open = v.read_slot(i).flags & NS_MOREFRAG != 0;
            self.packets += u64::from(!open);
            i = (i + 1) % n;
        }
        self.packets += u64::from(open);
        self.hwcur = new;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let setup = b.u8();
    let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
    // The batch byte's top bit: a switch of two threads (this one thread forwarding as
    // worker 0): exact leases, claimed TX rings.
    let batch = b.u8();
    let _ = sw.set_batch(1 + (batch as usize % 64));
    let _ = sw.set_threads(1 + u16::from(batch >> 7));
    let honest = PortGeometry {
        tx_slots: 64,
        rx_slots: 64,
        ..Default::default()
    };
    let evil_g = PortGeometry {
        tx_slots: 16,
        rx_slots: 16,
        buf_size: 256,
        ..Default::default()
    };
    let attach = |sw: &mut Switch<_>, name: &str, g| {
        sw.attach(name, Region::create(name, g).expect("memfd"))
            .expect("attach")
    };
    let a = attach(&mut sw, "vale0:a", honest);
    let pb = attach(&mut sw, "vale0:b", honest);
    // VLAN filtering: the pair on access ports of VLAN 10, the hostile port in a mode
    // of the input's choosing (its frames tagged as it likes).
    let vlan = setup & 0x8 != 0;
    let modes = ["access 10", "access 20", "trunk all", "trunk 10 native 10", "tunnel 10"];
    let evil_mode: PortVlan = modes[(setup >> 4) as usize % modes.len()]
        .parse()
        .expect("a mode");
    if vlan {
        sw.set_vlan_filtering(true);
        for p in [a, pb] {
            sw.set_port_vlan(p, PortVlan::Access(10)).expect("attached");
        }
    }
    let pair_vid = if vlan { 10 } else { 0 };
    let (ca, cb) = (Client::attach(&sw, a), Client::attach(&sw, pb));
    let (ma, mb) = (mac(0xa), mac(0xb));
    // The pair learn each other first: from here on their traffic is unicast, which the
    // hostile port never sees (and so cannot replay).
    assert!(ca.send(&frame(mb, ma, 0, 60)) && cb.send(&frame(ma, mb, 0, 60)));
    drain(&mut sw, 0);
    assert_eq!((ca.recv().len(), cb.recv().len()), (1, 1));
    let e = attach(&mut sw, "vale0:evil", evil_g);
    let hdr = [0u16, 10, 12][(setup % 3) as usize];
    sw.set_hdr_len(e, hdr).expect("valid length");
    if vlan {
        sw.set_port_vlan(e, evil_mode).expect("attached");
    }
    let monitor = setup & 0x4 != 0;
    if monitor {
        let r = Region::create("vale0:mon", honest).expect("memfd");
        sw.attach_monitor("vale0:a/rt", r, a, true, true)
            .expect("monitor");
    }
    let ce = Client::attach(&sw, e);
    let l = ce.region.layout();
    let (etx, erx) = (
        l.ring_offset(Dir::Tx, 0).unwrap(),
        l.ring_offset(Dir::Rx, 0).unwrap(),
    );
    let (etx_sync, erx_sync) = (
        l.sync_block_offset(Dir::Tx, 0).unwrap(),
        l.sync_block_offset(Dir::Rx, 0).unwrap(),
    );
    let mut taken = TakenCount {
        sync: etx_sync,
        hwcur: 0,
        packets: 0,
    };
    let run = |sw: &mut Switch<LearningBridge>, taken: &mut TakenCount| {
        taken.before(&ce);
        drain(sw, 0);
        taken.after(&ce);
    };
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    let mut step = 0u64;
    while !b.0.is_empty() && step < 256 {
        step += 1;
        match b.u8() % 8 {
            0 => {
                // Raw bytes anywhere in the region.
                let o = b.u32() as usize % ce.region.size();
                let n = (b.u8() as usize % 32).min(ce.region.size() - o);
                let bytes = b.take::<32>();
                ce.region.write_raw(o, &bytes[..n]);
            }
            1 => {
                let (w, v) = (b.u8(), b.u32());
                let (in_sync, o) = WORDS[w as usize % WORDS.len()];
                let base = match (w & 0x80 != 0, in_sync) {
                    (true, false) => etx,
                    (false, false) => erx,
                    (true, true) => etx_sync,
                    (false, true) => erx_sync,
                };
                ce.region.write_raw(base + o, &v.to_ne_bytes());
            }
            2 | 3 => {
                // A TX slot: (slot, buf_idx, len, flags).
                let s = b.u8() as usize % 16;
                let (bi, len, flags) = (b.u32() % 64, b.u16(), b.u16());
                let mut slot = [0u8; 8];
                slot[..4].copy_from_slice(&bi.to_ne_bytes());
                slot[4..6].copy_from_slice(&(len % 512).to_ne_bytes());
                slot[6..].copy_from_slice(&flags.to_ne_bytes());
                ce.region
                    .write_raw(etx + NETMAP_RING_SIZE + s * NETMAP_SLOT_SIZE, &slot);
            }
            4 => {
                let (h, c) = (b.u8() as u32 % 20, b.u8() as u32 % 20);
                ce.tx.view().csb().app_publish_release(h, c);
            }
            5 => {
                // The RX side: release (or claim) slots.
                let h = b.u8() as u32 % 20;
                ce.rx.view().csb().app_publish_release(h, h);
            }
            _ => {
                // The honest pair talk, then the switch runs.
                let len = 60 + b.u16() as usize % 1400;
                let f = frame(mb, ma, step as u32, len);
                if ca.send(&f) {
                    sent.push(f);
                }
                run(&mut sw, &mut taken);
                got.extend(cb.recv().into_iter().filter(|f| f[6..12] == ma.octets()));
                ca.recv();
            }
        }
    }
    run(&mut sw, &mut taken);
    got.extend(cb.recv().into_iter().filter(|f| f[6..12] == ma.octets()));
    // Every packet taken from a ring is forwarded or counted as dropped: the hostile
    // port's (counted from its ring) and the honest sender's (counted as it sent them).
    let es = sw.port(e).expect("attached").stats();
    assert_eq!(
        es.forwarded + es.sender_drops(),
        taken.packets,
        "hostile port: {es:?}"
    );
    let as_ = sw.port(a).expect("attached").stats();
    assert_eq!(
        as_.forwarded + as_.sender_drops(),
        1 + sent.len() as u64,
        "{as_:?}"
    );
    // The hostile client may forge frames with the honest sender's address (extra frames
    // at b), or claim b's address (then the bridge rightly sends a's frames to it): only
    // while b still owns its address, and its ring never overflowed (segments of a
    // hostile super-frame may fill it), must every one of a's frames arrive, in order.
    let b_dropped = sw.port(pb).expect("attached").stats().receiver_drops();
    if sw.lookup().fdb().get_in(mb, pair_vid) == Some(pb) && b_dropped == 0 {
        let mut it = got.iter();
        for (i, f) in sent.iter().enumerate() {
            assert!(
                it.any(|g| g == f),
                "frame {i} of {} from a never reached b",
                sent.len()
            );
        }
    }
    let all: Vec<PortStats> = sw.ports().map(|(_, p)| p.stats()).collect();
    for s in &all {
        assert!(s.is_conserved(), "{s:?}");
    }
    if hdr == 0 && !monitor {
        let copies: u64 = all.iter().map(|s| s.copies - s.copies_dropped).sum();
        let delivered: u64 = all.iter().map(|s| s.rx_packets).sum();
        assert_eq!(
            copies, delivered,
            "copies neither delivered nor counted: {all:?}"
        );
        let at_dst: u64 = all.iter().map(|s| s.receiver_drops()).sum();
        let dropped: u64 = all.iter().map(|s| s.copies_dropped).sum();
        assert_eq!(at_dst, dropped);
    }
});
