//! Differential test (Snabb's two bridges): the learning bridge against a flooding hub
//! fed the same traffic. Learned deliveries are a subset of flooded ones, and a frame to
//! an address learned in an earlier round reaches exactly its port, and no other.

mod common;
use common::*;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use vale_abi::PortGeometry;
use vale_switch::*;

const PORTS: usize = 4;

struct Net<L: Lookup> {
    sw: Switch<L>,
    clients: Vec<Client>,
}

impl<L: Lookup> Net<L> {
    fn new(lookup: L, tag: &str) -> Net<L> {
        let mut sw = Switch::new(lookup, SwitchConfig::default()).unwrap();
        let g = PortGeometry {
            tx_slots: 256,
            rx_slots: 256,
            ..Default::default()
        };
        let mut clients = Vec::new();
        for i in 0..PORTS {
            let name = format!("vale{tag}:m{i}");
            let id = sw
                .attach(name.clone(), vale_abi::Region::create(&name, g).unwrap())
                .unwrap();
            clients.push(Client::attach(&sw, id));
        }
        Net { sw, clients }
    }

    /// Sends each port's frames, forwards, and returns tag -> receiving ports.
    fn round(&mut self, per_port: &[Vec<Vec<u8>>], now: u64) -> HashMap<u64, BTreeSet<usize>> {
        for (c, frames) in self.clients.iter().zip(per_port) {
            assert_eq!(c.send(frames), frames.len());
        }
        drain(&mut self.sw, t(now));
        let mut got: HashMap<u64, BTreeSet<usize>> = HashMap::new();
        for (p, c) in self.clients.iter().enumerate() {
            // Each receiver sees each sender's frames in the order they were sent,
            // unicast and flooded ones interleaved.
            let mut last: HashMap<Vec<u8>, u64> = HashMap::new();
            for f in c.recv_frames() {
                let prev = last.insert(f[6..12].to_vec(), tag_of(&f));
                assert!(
                    prev.is_none_or(|x| x < tag_of(&f)),
                    "out of order at port {p}"
                );
                assert!(
                    got.entry(tag_of(&f)).or_default().insert(p),
                    "duplicate delivery"
                );
            }
        }
        got
    }
}

/// Hosts: (port, mac). Two hosts per port.
fn host(h: usize) -> (usize, MacAddr) {
    (h % PORTS, mac(h as u16 + 1))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn learning_bridge_refines_the_hub(
        rounds in prop::collection::vec(
            prop::collection::vec((0usize..8, prop::option::weighted(0.8, 0usize..8)), 0..40),
            1..8,
        )
    ) {
        let mut lb = Net::new(LearningBridge::default(), "L");
        let mut hub = Net::new(Hub, "H");
        let mut learned: HashMap<MacAddr, usize> = HashMap::new();
        let mut tag = 0u64;
        for (r, round) in rounds.iter().enumerate() {
            let mut per_port = vec![Vec::new(); PORTS];
            let mut expect: Vec<(u64, usize, Option<usize>)> = Vec::new(); // tag, src port, known dst port
            let mut senders = Vec::new();
            for (src, dst) in round {
                let (sp, smac) = host(*src);
                let dmac = dst.map_or(MacAddr::BROADCAST, |d| host(d).1);
                tag += 1;
                per_port[sp].push(frame(dmac, smac, tag, 60));
                expect.push((tag, sp, dst.and_then(|_| learned.get(&dmac).copied())));
                senders.push((smac, sp));
            }
            let got_l = lb.round(&per_port, r as u64);
            let got_h = hub.round(&per_port, r as u64);
            for (tag, sp, known) in expect {
                let l = got_l.get(&tag).cloned().unwrap_or_default();
                let h = got_h.get(&tag).cloned().unwrap_or_default();
                let everyone: BTreeSet<usize> = (0..PORTS).filter(|p| *p != sp).collect();
                prop_assert_eq!(&h, &everyone, "the hub floods");
                prop_assert!(l.is_subset(&h), "learned {:?} not within flooded {:?}", l, h);
                prop_assert!(!l.contains(&sp), "reflected to the sender");
                match known {
                    Some(dp) if dp == sp => prop_assert!(l.is_empty(), "same-port unicast must be dropped"),
                    Some(dp) => prop_assert_eq!(l, BTreeSet::from([dp]), "learned unicast reaches exactly its port"),
                    None => {}
                }
            }
            for (m, p) in senders {
                learned.insert(m, p);
            }
        }
        for net_stats in lb.sw.ports().map(|(_, p)| p.stats().clone()) {
            prop_assert!(net_stats.is_conserved());
            prop_assert_eq!(net_stats.drop_count(DropReason::RingFull), 0);
        }
    }
}
