//! The engine benchmark's setup, shared by `benches/engine.rs` and
//! `examples/engine_profile.rs` (fixed iteration counts for callgrind).
#![allow(dead_code)]

use vale_abi::layout::NetmapSlot;
use vale_abi::{AppRing, Dir, PortGeometry, Region};
use vale_switch::{
    Forwarder, LearningBridge, MacAddr, NoEgress, PortId, PortVlan, Switch, SwitchConfig, Timestamp,
};

pub const BURST: u32 = 512;

pub struct Bench {
    pub sw: Switch<LearningBridge>,
    pub fw: Forwarder,
    pub tx: Vec<(PortId, AppRing)>,
    pub rx: Vec<AppRing>,
}

fn mac(i: u8) -> MacAddr {
    MacAddr::new([2, 0, 0, 0, 0, i])
}

fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = vec![0x5au8; len];
    f[..6].copy_from_slice(&dst.octets());
    f[6..12].copy_from_slice(&src.octets());
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// `frame` with an 802.1Q tag of VID `vid`, `len` bytes in all.
fn tagged_frame(dst: MacAddr, src: MacAddr, len: usize, vid: u16) -> Vec<u8> {
    let mut f = frame(dst, src, len);
    f[12..18].copy_from_slice(&[0x81, 0x00, (vid >> 8) as u8, vid as u8, 0x08, 0x00]);
    f
}

impl Bench {
    /// `senders` ports send `len`-byte frames to `dst` (None: to the first receiver's
    /// address, learned beforehand); `receivers` ports drain.
    pub fn new(senders: usize, receivers: usize, len: usize, broadcast: bool) -> Bench {
        Bench::with_geometry(senders, receivers, len, broadcast, PortGeometry::default())
    }

    pub fn with_geometry(
        senders: usize,
        receivers: usize,
        len: usize,
        broadcast: bool,
        g: PortGeometry,
    ) -> Bench {
        Bench::build(senders, receivers, len, broadcast, g, None, None)
    }

    /// The same on a switch with VLAN filtering on: receivers in VLAN mode `rx`, senders
    /// in `tx` (untagged frames; a mode that tags them makes every copy an edit).
    pub fn vlan(
        senders: usize,
        receivers: usize,
        len: usize,
        broadcast: bool,
        (rx, tx): (&str, &str),
    ) -> Bench {
        let modes = Some((rx.parse().unwrap(), tx.parse().unwrap()));
        Bench::build(
            senders,
            receivers,
            len,
            broadcast,
            PortGeometry::default(),
            modes,
            None,
        )
    }

    /// One sender on a trunk of VLAN 10 sends frames tagged 10 to one receiver, an
    /// access port of VLAN 10: every copy has its tag popped.
    pub fn vlan_pop(len: usize) -> Bench {
        let modes = Some(("access 10".parse().unwrap(), "trunk 10".parse().unwrap()));
        Bench::build(1, 1, len, false, PortGeometry::default(), modes, Some(10))
    }

    fn build(
        senders: usize,
        receivers: usize,
        len: usize,
        broadcast: bool,
        g: PortGeometry,
        vlan: Option<(PortVlan, PortVlan)>,
        tag: Option<u16>,
    ) -> Bench {
        let mut sw = Switch::new(LearningBridge::default(), SwitchConfig::default()).unwrap();
        sw.set_vlan_filtering(vlan.is_some());
        let mut open = |name: String| {
            let r = Region::create(&name, g).unwrap();
            sw.attach(name, r).unwrap()
        };
        let rx_ids: Vec<PortId> = (0..receivers)
            .map(|i| open(format!("vale0:r{i}")))
            .collect();
        let tx_ids: Vec<PortId> = (0..senders).map(|i| open(format!("vale0:t{i}"))).collect();
        if let Some((rx, tx)) = &vlan {
            for id in &rx_ids {
                sw.set_port_vlan(*id, rx.clone()).unwrap();
            }
            for id in &tx_ids {
                sw.set_port_vlan(*id, tx.clone()).unwrap();
            }
        }
        let ring =
            |id: PortId, d: Dir| AppRing::new(sw.port(id).unwrap().region().ring(d, 0).unwrap());
        let rx: Vec<AppRing> = rx_ids.iter().map(|id| ring(*id, Dir::Rx)).collect();
        let tx: Vec<(PortId, AppRing)> =
            tx_ids.iter().map(|id| (*id, ring(*id, Dir::Tx))).collect();
        // Receiver 0 announces itself so unicast to it is learned.
        let r0 = ring(rx_ids[0], Dir::Tx);
        let hello = frame(MacAddr::BROADCAST, mac(200), 60);
        prefill(&r0, &hello);
        r0.advance(1);
        r0.txsync();
        let mut b = Bench {
            sw,
            fw: Forwarder::new(),
            tx,
            rx,
        };
        let (sw, fw) = (&mut b.sw, &mut b.fw);
        fw.forward_ring(
            sw,
            rx_ids[0],
            0,
            Timestamp(1),
            &mut Vec::new(),
            &mut NoEgress,
        );
        b.release();
        let dst = if broadcast {
            MacAddr::BROADCAST
        } else {
            mac(200)
        };
        for (k, (_, r)) in b.tx.iter().enumerate() {
            let f = match tag {
                Some(vid) => tagged_frame(dst, mac(k as u8 + 1), len, vid),
                None => frame(dst, mac(k as u8 + 1), len),
            };
            prefill(r, &f);
        }
        b
    }

    fn switch(&mut self) -> usize {
        let mut ev = Vec::new();
        let mut n = 0;
        for (id, _) in &self.tx {
            n += self
                .fw
                .forward_ring(&self.sw, *id, 0, Timestamp(1), &mut ev, &mut NoEgress);
        }
        n
    }

    fn release(&self) {
        for r in &self.rx {
            r.rxsync();
            r.advance(r.space());
            r.rxsync();
        }
    }

    pub fn iteration(&mut self) -> usize {
        // Fan-in shares one receiver ring: the senders together send one burst.
        let burst = BURST / self.tx.len() as u32;
        for (_, r) in &self.tx {
            r.advance(burst);
            r.txsync();
        }
        let n = self.switch();
        self.release();
        n
    }
}

fn prefill(r: &AppRing, f: &[u8]) {
    let v = r.view();
    for i in 0..r.num_slots() {
        let s = v.read_slot(i);
        v.bufs().write(s.buf_idx, f);
        v.write_slot(
            i,
            NetmapSlot {
                buf_idx: s.buf_idx,
                len: f.len() as u16,
                flags: 0,
                ptr: 0,
            },
        );
    }
}
