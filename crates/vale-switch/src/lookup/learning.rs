//! The learning bridge and its forwarding database.
//!
//! VALE's table is 1024 direct-mapped entries: a collision silently evicts a live host,
//! entries never age, a detached port's entries linger, and the all-zero MAC matches every
//! empty bucket. This one is a bucketed hash (8 entries, one cache line, per bucket) with
//! a per-table seed: a full bucket refuses a new address (counted) instead of evicting a
//! live one, entries age out, moves are detected and counted, detach flushes, and an empty
//! entry never matches anything.

use super::{AddressTable, Dest, Lookup, PacketInfo, TableRow};
use crate::types::{MacAddr, PortId, Timestamp};

const WAYS: usize = 8;
const MAC_MASK: u64 = 0xffff_ffff_ffff;
/// A port's last learned source is re-learned (to refresh its age) at most this often.
const REFRESH_NS: u64 = 1_000_000_000;

/// Settings of a learning table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Maximum number of entries (rounded up to a power of two, at least 8).
    pub capacity: usize,
    /// Seconds after which an address not seen is forgotten (0 = never).
    pub max_age_secs: u32,
    /// Hash seed; the daemon passes a random one so that nobody can aim collisions.
    pub seed: u64,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            capacity: 8192,
            max_age_secs: 300,
            seed: 0x5bd1_e995_7f4a_7c15,
        }
    }
}

/// Counters of a learning table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdbStats {
    pub entries: u64,
    pub learned: u64,
    pub moves: u64,
    /// New addresses not learned because their bucket was full of live entries.
    pub refused: u64,
    pub aged: u64,
    pub flushed: u64,
}

/// What learning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    New,
    Refreshed,
    Moved { from: PortId },
    Refused,
}

/// The forwarding database, keyed by (address, VLAN). Entry encoding: `mac | (port + 1)
/// << 48`, 0 = empty, so no address, not even 00:00:00:00:00:00, can match an empty
/// entry; the entry's VID is in `vids` (0 on a switch without VLAN filtering), looked
/// at only when the address matches.
#[derive(Debug, Clone)]
pub struct Fdb {
    keys: Vec<u64>,
    vids: Vec<u16>,
    seen: Vec<u32>,
    bucket_mask: usize,
    seed: u64,
    max_age_secs: u32,
    stats: FdbStats,
    /// Rows are shown with their VLAN (the switch filters VLANs).
    vlans: bool,
}

impl Fdb {
    pub fn new(cfg: FdbConfig) -> Fdb {
        let cap = cfg.capacity.max(WAYS).next_power_of_two();
        Fdb {
            keys: vec![0; cap],
            vids: vec![0; cap],
            seen: vec![0; cap],
            bucket_mask: cap / WAYS - 1,
            seed: cfg.seed,
            max_age_secs: cfg.max_age_secs,
            stats: FdbStats::default(),
            vlans: false,
        }
    }

    pub fn capacity(&self) -> usize {
        self.keys.len()
    }

    pub fn stats(&self) -> &FdbStats {
        &self.stats
    }

    /// Whether [`AddressTable::rows`] shows each row's VLAN.
    pub fn show_vlans(&mut self, on: bool) {
        self.vlans = on;
    }

    #[inline(always)]
    fn bucket(&self, mac: MacAddr, vid: u16) -> usize {
        // murmur3's 64-bit finaliser: every input bit reaches the bucket bits.
        let mut h = (mac.to_u64() | (vid as u64) << 48) ^ self.seed;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        (h as usize & self.bucket_mask) * WAYS
    }

    /// The port that owns `mac` in VLAN 0 (a switch without VLAN filtering), if learned.
    #[inline(always)]
    pub fn get(&self, mac: MacAddr) -> Option<PortId> {
        self.get_in(mac, 0)
    }

    /// The port that owns `mac` in VLAN `vid`, if learned.
    #[inline(always)]
    pub fn get_in(&self, mac: MacAddr, vid: u16) -> Option<PortId> {
        self.find::<true>(mac, vid)
    }

    /// `get_in`; without `VLAN` (a table that learns only in VLAN 0) the entries' VIDs
    /// are not looked at.
    #[inline(always)]
    fn find<const VLAN: bool>(&self, mac: MacAddr, vid: u16) -> Option<PortId> {
        let vid = if VLAN { vid } else { 0 };
        let b = self.bucket(mac, vid);
        let m = mac.to_u64();
        for (&k, &v) in self.keys[b..b + WAYS].iter().zip(&self.vids[b..b + WAYS]) {
            if k & MAC_MASK == m && k >> 48 != 0 && (!VLAN || v == vid) {
                return Some(PortId((k >> 48) as u16 - 1));
            }
        }
        None
    }

    /// Learns that `mac` lives behind `port` (in VLAN 0).
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now: Timestamp) -> Learned {
        self.learn_in(mac, 0, port, now)
    }

    /// Learns that `mac` of VLAN `vid` lives behind `port`.
    pub fn learn_in(&mut self, mac: MacAddr, vid: u16, port: PortId, now: Timestamp) -> Learned {
        let b = self.bucket(mac, vid);
        let m = mac.to_u64();
        let key = m | (port.0 as u64 + 1) << 48;
        let now_s = now.secs() as u32;
        let mut free = None;
        for i in b..b + WAYS {
            let k = self.keys[i];
            if k >> 48 == 0 {
                free.get_or_insert(i);
                continue;
            }
            if k & MAC_MASK == m && self.vids[i] == vid {
                self.seen[i] = now_s;
                if k == key {
                    return Learned::Refreshed;
                }
                self.keys[i] = key;
                self.stats.moves += 1;
                return Learned::Moved {
                    from: PortId((k >> 48) as u16 - 1),
                };
            }
            if free.is_none() && self.expired(i, now_s) {
                free = Some(i);
                self.stats.aged += 1;
                self.stats.entries -= 1;
                self.keys[i] = 0;
            }
        }
        match free {
            Some(i) => {
                self.keys[i] = key;
                self.vids[i] = vid;
                self.seen[i] = now_s;
                self.stats.learned += 1;
                self.stats.entries += 1;
                Learned::New
            }
            None => {
                self.stats.refused += 1;
                Learned::Refused
            }
        }
    }

    fn expired(&self, i: usize, now_s: u32) -> bool {
        self.max_age_secs != 0 && now_s.wrapping_sub(self.seen[i]) >= self.max_age_secs
    }

    /// Forgets every address not seen for `max_age_secs`.
    pub fn age(&mut self, now: Timestamp) {
        let now_s = now.secs() as u32;
        for i in 0..self.keys.len() {
            if self.keys[i] != 0 && self.expired(i, now_s) {
                self.keys[i] = 0;
                self.stats.aged += 1;
                self.stats.entries -= 1;
            }
        }
    }

    /// Forgets every address behind `port`.
    pub fn flush_port(&mut self, port: PortId) {
        let tag = port.0 as u64 + 1;
        for k in self.keys.iter_mut() {
            if *k != 0 && *k >> 48 == tag {
                *k = 0;
                self.stats.flushed += 1;
                self.stats.entries -= 1;
            }
        }
    }

    /// Every entry, sorted by port, then VLAN, then address. `vlan` is `None` in a
    /// table that never learned outside VLAN 0 (a switch without VLAN filtering).
    pub fn dump(&self, now: Timestamp) -> Vec<TableRow> {
        self.dump_vlans(now, false)
    }

    /// [`Self::dump`], with every row's VLAN shown if `vlans` is set.
    pub fn dump_vlans(&self, now: Timestamp, vlans: bool) -> Vec<TableRow> {
        let now_s = now.secs() as u32;
        let mut v: Vec<TableRow> = self
            .keys
            .iter()
            .zip(&self.seen)
            .zip(&self.vids)
            .filter(|((k, _), _)| **k != 0)
            .map(|((k, s), vid)| TableRow {
                mac: MacAddr::from_u64(*k),
                vlan: vlans.then_some(*vid),
                port: PortId((k >> 48) as u16 - 1),
                age_secs: now_s.wrapping_sub(*s),
            })
            .collect();
        v.sort_by_key(|e| (e.port, e.vlan, e.mac));
        v
    }
}

impl AddressTable for Fdb {
    fn rows(&self, now: Timestamp) -> Vec<TableRow> {
        self.dump_vlans(now, self.vlans)
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("entries", s.entries),
            ("learned", s.learned),
            ("moves", s.moves),
            ("refused", s.refused),
            ("aged", s.aged),
            ("flushed", s.flushed),
        ]
    }
}

/// VALE's default lookup, improved: learn sources, forward known unicast, flood the rest.
#[derive(Debug, Clone)]
pub struct LearningBridge {
    fdb: Fdb,
    /// Per port: the last source learned and when (VALE's `last_smac`, with a time so the
    /// entry's age gets refreshed, and cleared on any move so a move back is learned).
    last: Vec<(u64, u64)>,
    next_age: u64,
    /// The switch filters VLANs: frames carry their VLAN in `PacketInfo::vid`.
    vlans: bool,
}

const NO_MAC: u64 = u64::MAX;

impl LearningBridge {
    pub fn new(cfg: FdbConfig) -> LearningBridge {
        LearningBridge {
            fdb: Fdb::new(cfg),
            last: Vec::new(),
            next_age: 0,
            vlans: false,
        }
    }

    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    #[inline(always)]
    fn destination<const VLAN: bool>(&self, dst: MacAddr, vid: u16) -> Dest {
        if dst.is_multicast() {
            return Dest::Flood;
        }
        match self.fdb.find::<VLAN>(dst, vid) {
            Some(p) => Dest::Port(p),
            None => Dest::Flood,
        }
    }

    /// `lookup_batch`'s loop; without `VLAN` every frame is in VLAN 0, and with `ONE`
    /// every frame is in VLAN `one` (its `vid` is not read).
    #[inline(always)]
    fn batch<const VLAN: bool, const ONE: bool>(
        &mut self,
        pkts: &[PacketInfo],
        out: &mut [Dest],
        now: Timestamp,
        one: u16,
    ) {
        // Addresses are 48 bits: each key packs its VLAN above them, so that filtering
        // VLANs compares one word per key, as not filtering does.
        let mut cache: Option<(u64, Dest)> = None;
        // A batch comes from one ring: usually one source address throughout.
        let mut learned: Option<(u64, PortId, u16)> = None;
        for (p, o) in pkts.iter().zip(out.iter_mut()) {
            let vid = match (VLAN, ONE) {
                (false, _) => 0,
                (true, true) => u64::from(one) << 48,
                (true, false) => u64::from(p.vid) << 48,
            };
            let key = (
                p.src.to_u64() | vid,
                p.src_port,
                p.slot_flags & vale_abi::layout::NS_NO_LEARN,
            );
            if learned != Some(key) {
                learned = Some(key);
                if self.learn(p, now) {
                    cache = None;
                }
            }
            let dk = p.dst.to_u64() | vid;
            *o = match cache {
                Some((k, d)) if k == dk => d,
                _ => {
                    let d = self.destination::<VLAN>(p.dst, (vid >> 48) as u16);
                    cache = Some((dk, d));
                    d
                }
            };
        }
    }

    /// `batch` without learning, for a batch whose sources are all learned and fresh;
    /// false (and `out` unfinished) as soon as one would be learned or refreshed.
    #[inline(always)]
    fn batch_shared<const VLAN: bool>(
        &self,
        pkts: &[PacketInfo],
        out: &mut [Dest],
        now: Timestamp,
    ) -> bool {
        let mut cache: Option<(MacAddr, u16, Dest)> = None;
        let mut checked: Option<(MacAddr, PortId, u16, u16)> = None;
        for (p, o) in pkts.iter().zip(out.iter_mut()) {
            let vid = if VLAN { p.vid } else { 0 };
            let key = (
                p.src,
                p.src_port,
                p.slot_flags & vale_abi::layout::NS_NO_LEARN,
                vid,
            );
            if checked != Some(key) {
                checked = Some(key);
                if self.would_learn(p, now) {
                    return false;
                }
            }
            *o = match cache {
                Some((m, v, d)) if m == p.dst && v == vid => d,
                _ => {
                    let d = self.destination::<VLAN>(p.dst, vid);
                    cache = Some((p.dst, vid, d));
                    d
                }
            };
        }
        true
    }

    /// Whether [`Self::learn`] would do anything but return at once for `pkt`.
    #[inline(always)]
    fn would_learn(&self, pkt: &PacketInfo, now: Timestamp) -> bool {
        if pkt.src.is_multicast() || pkt.no_learn() {
            return false;
        }
        let key = pkt.src.to_u64() | (pkt.vid as u64) << 48;
        match self.last.get(pkt.src_port.0 as usize) {
            Some(&(mac, when)) => mac != key || now.0.wrapping_sub(when) >= REFRESH_NS,
            None => true,
        }
    }

    /// Learns the source of `pkt`; returns true if the table changed.
    #[inline(always)]
    fn learn(&mut self, pkt: &PacketInfo, now: Timestamp) -> bool {
        if pkt.src.is_multicast() || pkt.no_learn() {
            return false;
        }
        let p = pkt.src_port.0 as usize;
        if p >= self.last.len() {
            self.last.resize(p + 1, (NO_MAC, 0));
        }
        // The last source, with its VLAN (a VID never sets the top bits NO_MAC has).
        let key = pkt.src.to_u64() | (pkt.vid as u64) << 48;
        let (mac, when) = self.last[p];
        if mac == key && now.0.wrapping_sub(when) < REFRESH_NS {
            return false;
        }
        match self.fdb.learn_in(pkt.src, pkt.vid, pkt.src_port, now) {
            Learned::Moved { .. } => {
                // Other ports may have this address cached as "already learned".
                self.last.iter_mut().for_each(|e| *e = (NO_MAC, 0));
                self.last[p] = (key, now.0);
                true
            }
            Learned::Refused => {
                self.last[p] = (NO_MAC, 0);
                false
            }
            Learned::New => {
                self.last[p] = (key, now.0);
                true
            }
            Learned::Refreshed => {
                self.last[p] = (key, now.0);
                false
            }
        }
    }
}

impl Default for LearningBridge {
    fn default() -> Self {
        LearningBridge::new(FdbConfig::default())
    }
}

impl Lookup for LearningBridge {
    #[inline]
    fn lookup(&mut self, pkt: &PacketInfo, now: Timestamp) -> Dest {
        self.learn(pkt, now);
        self.destination::<true>(pkt.dst, pkt.vid)
    }

    /// Like `lookup` per packet, with a one-entry destination cache for the batch
    /// (bursts mostly go to one host), dropped whenever learning changes the table.
    fn lookup_batch(&mut self, pkts: &[PacketInfo], out: &mut [Dest], now: Timestamp) {
        if self.vlans {
            self.batch::<true, false>(pkts, out, now, 0);
        } else {
            self.batch::<false, false>(pkts, out, now, 0);
        }
    }

    fn lookup_batch_in(&mut self, pkts: &[PacketInfo], out: &mut [Dest], now: Timestamp, vid: u16) {
        if self.vlans {
            self.batch::<true, true>(pkts, out, now, vid);
        } else {
            self.batch::<false, false>(pkts, out, now, 0);
        }
    }

    fn lookup_batch_shared(&self, pkts: &[PacketInfo], out: &mut [Dest], now: Timestamp) -> bool {
        if self.vlans {
            self.batch_shared::<true>(pkts, out, now)
        } else {
            self.batch_shared::<false>(pkts, out, now)
        }
    }

    fn wants_maintenance(&self, now: Timestamp) -> bool {
        now.0 >= self.next_age
    }

    fn vlan_filtering(&mut self, on: bool) {
        self.vlans = on;
        self.fdb.show_vlans(on);
    }

    fn port_detached(&mut self, port: PortId) {
        self.fdb.flush_port(port);
        if let Some(e) = self.last.get_mut(port.0 as usize) {
            *e = (NO_MAC, 0);
        }
    }

    fn table(&self) -> Option<&dyn AddressTable> {
        Some(&self.fdb)
    }

    fn maintain(&mut self, now: Timestamp) {
        if now.0 >= self.next_age {
            self.fdb.age(now);
            self.last.iter_mut().for_each(|e| *e = (NO_MAC, 0));
            self.next_age = now.0.saturating_add(REFRESH_NS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Locally administered unicast addresses 02:00:00:00:hi:lo.
    fn mac(i: u64) -> MacAddr {
        MacAddr::new([2, 0, 0, 0, (i >> 8) as u8, i as u8])
    }

    fn pkt(src_port: u16, src: MacAddr, dst: MacAddr) -> PacketInfo {
        PacketInfo {
            src_port: PortId(src_port),
            src_ring: 0,
            dst,
            src,
            ethertype: 0x0800,
            len: 60,
            slot_flags: 0,
            ..PacketInfo::default()
        }
    }

    #[test]
    fn zero_mac_never_matches_an_empty_entry() {
        let f = Fdb::new(FdbConfig::default());
        assert_eq!(f.get(MacAddr::ZERO), None);
        let mut lb = LearningBridge::default();
        let t = Timestamp::from_secs(1);
        assert_eq!(lb.lookup(&pkt(1, mac(1), MacAddr::ZERO), t), Dest::Flood);
    }

    #[test]
    fn a_batch_of_one_vlan_is_decided_as_each_frame_would_be() {
        // The same two hosts in VLANs 10 and 20, behind different ports: a batch of
        // VLAN 10 decided with its VLAN given once (`lookup_batch_in`) must learn and
        // forward exactly as the per-frame VLANs do, and never across VLANs.
        let t = Timestamp::from_secs(5);
        let in_vlan = |port: u16, src: u64, dst: u64, vid: u16| PacketInfo {
            vid,
            ..pkt(port, mac(src), mac(dst))
        };
        let mut once = LearningBridge::default();
        let mut each = LearningBridge::default();
        for lb in [&mut once, &mut each] {
            lb.vlan_filtering(true);
            // VLAN 20: host 2 behind port 3.
            lb.lookup(&in_vlan(3, 2, 1, 20), t);
        }
        let batch = [
            in_vlan(0, 1, 2, 10), // host 2 unknown in VLAN 10: flood
            in_vlan(1, 2, 1, 10), // host 1 learned behind port 0 in VLAN 10
            in_vlan(0, 1, 2, 10), // host 2 now behind port 1 in VLAN 10
        ];
        let (mut a, mut b) = ([Dest::Drop; 3], [Dest::Drop; 3]);
        once.lookup_batch_in(&batch, &mut a, t, 10);
        each.lookup_batch(&batch, &mut b, t);
        let want = [Dest::Flood, Dest::Port(PortId(0)), Dest::Port(PortId(1))];
        assert_eq!((a, b), (want, want));
        for lb in [&mut once, &mut each] {
            // Learned in VLAN 10 (frames of it find them there), and VLAN 20 still
            // finds host 2 behind port 3, and host 1 nowhere.
            assert_eq!(lb.lookup(&in_vlan(5, 9, 1, 10), t), Dest::Port(PortId(0)));
            assert_eq!(lb.lookup(&in_vlan(5, 9, 2, 10), t), Dest::Port(PortId(1)));
            assert_eq!(lb.lookup(&in_vlan(5, 9, 2, 20), t), Dest::Port(PortId(3)));
            assert_eq!(lb.lookup(&in_vlan(5, 9, 1, 20), t), Dest::Flood);
        }
    }

    #[test]
    fn learns_forwards_and_floods_multicast() {
        let mut lb = LearningBridge::default();
        let t = Timestamp::from_secs(10);
        assert_eq!(lb.lookup(&pkt(0, mac(1), mac(2)), t), Dest::Flood);
        assert_eq!(lb.lookup(&pkt(1, mac(2), mac(1)), t), Dest::Port(PortId(0)));
        assert_eq!(lb.lookup(&pkt(0, mac(1), mac(2)), t), Dest::Port(PortId(1)));
        assert_eq!(
            lb.lookup(&pkt(0, mac(1), MacAddr::BROADCAST), t),
            Dest::Flood
        );
        let mcast = MacAddr::new([1, 0, 0x5e, 0, 0, 1]);
        assert_eq!(lb.lookup(&pkt(0, mac(1), mcast), t), Dest::Flood);
        // A multicast source is never learned.
        lb.lookup(&pkt(2, mcast, mac(9)), t);
        assert_eq!(lb.fdb().get(mcast), None);
    }

    #[test]
    fn no_learn_flag_is_honoured() {
        let mut lb = LearningBridge::default();
        let mut p = pkt(3, mac(7), MacAddr::BROADCAST);
        p.slot_flags = vale_abi::layout::NS_NO_LEARN;
        lb.lookup(&p, Timestamp::from_secs(1));
        assert_eq!(lb.fdb().get(mac(7)), None);
    }

    #[test]
    fn moves_are_detected_including_a_move_back() {
        let mut lb = LearningBridge::default();
        let t = Timestamp::from_secs(5);
        lb.lookup(&pkt(0, mac(1), MacAddr::BROADCAST), t);
        lb.lookup(&pkt(1, mac(1), MacAddr::BROADCAST), t);
        assert_eq!(lb.fdb().get(mac(1)), Some(PortId(1)));
        // VALE's last_smac cache would skip this re-learn; ours does not.
        lb.lookup(&pkt(0, mac(1), MacAddr::BROADCAST), t);
        assert_eq!(lb.fdb().get(mac(1)), Some(PortId(0)));
        assert_eq!(lb.fdb().stats().moves, 2);
    }

    #[test]
    fn entries_age_out_unless_refreshed() {
        let mut lb = LearningBridge::new(FdbConfig {
            max_age_secs: 300,
            ..Default::default()
        });
        lb.lookup(
            &pkt(0, mac(1), MacAddr::BROADCAST),
            Timestamp::from_secs(100),
        );
        lb.lookup(
            &pkt(1, mac(2), MacAddr::BROADCAST),
            Timestamp::from_secs(100),
        );
        // mac(2) keeps talking; mac(1) falls silent.
        for s in (101..=400).step_by(10) {
            lb.lookup(&pkt(1, mac(2), MacAddr::BROADCAST), Timestamp::from_secs(s));
            lb.maintain(Timestamp::from_secs(s));
        }
        lb.maintain(Timestamp::from_secs(401));
        assert_eq!(lb.fdb().get(mac(1)), None, "silent for 300 s: aged out");
        assert_eq!(lb.fdb().get(mac(2)), Some(PortId(1)));
        assert_eq!(lb.fdb().stats().aged, 1);
    }

    #[test]
    fn full_bucket_refuses_instead_of_evicting() {
        let mut f = Fdb::new(FdbConfig {
            capacity: 8, // one bucket
            max_age_secs: 300,
            seed: 1,
        });
        let t = Timestamp::from_secs(1);
        for i in 0..8 {
            assert_eq!(f.learn(mac(i), PortId(i as u16), t), Learned::New);
        }
        assert_eq!(f.learn(mac(100), PortId(9), t), Learned::Refused);
        for i in 0..8 {
            assert_eq!(f.get(mac(i)), Some(PortId(i as u16)), "live entry kept");
        }
        assert_eq!(f.stats().refused, 1);
        // Once an entry has expired its slot is reused.
        assert_eq!(
            f.learn(mac(100), PortId(9), Timestamp::from_secs(400)),
            Learned::New
        );
        assert_eq!(f.get(mac(100)), Some(PortId(9)));
    }

    #[test]
    fn flush_port_forgets_only_that_port() {
        let mut lb = LearningBridge::default();
        let t = Timestamp::from_secs(1);
        for i in 0..50 {
            lb.lookup(&pkt((i % 3) as u16, mac(i), MacAddr::BROADCAST), t);
        }
        lb.port_detached(PortId(1));
        let d = lb.fdb().dump(t);
        assert_eq!(d.len(), 50 - 17);
        assert!(d.iter().all(|e| e.port != PortId(1)));
        assert_eq!(lb.fdb().stats().entries, 33);
    }

    #[test]
    fn capacity_is_bounded() {
        let mut f = Fdb::new(FdbConfig {
            capacity: 64,
            max_age_secs: 0,
            seed: 7,
        });
        let t = Timestamp::from_secs(1);
        for i in 0..10_000 {
            f.learn(mac(i), PortId(0), t);
        }
        assert!(f.dump(t).len() <= 64);
        assert_eq!(f.stats().entries as usize, f.dump(t).len());
        assert_eq!(f.stats().learned + f.stats().refused, 10_000);
    }

    #[test]
    fn table_view_shows_rows_and_named_counters() {
        let mut lb = LearningBridge::default();
        lb.lookup(
            &pkt(2, mac(5), MacAddr::BROADCAST),
            Timestamp::from_secs(10),
        );
        lb.lookup(
            &pkt(0, mac(9), MacAddr::BROADCAST),
            Timestamp::from_secs(10),
        );
        lb.lookup(
            &pkt(0, mac(3), MacAddr::BROADCAST),
            Timestamp::from_secs(12),
        );
        lb.lookup(
            &pkt(1, mac(3), MacAddr::BROADCAST),
            Timestamp::from_secs(13),
        );
        let t = lb.table().expect("a learning bridge has a table");
        let rows = t.rows(Timestamp::from_secs(15));
        let seen: Vec<_> = rows.iter().map(|r| (r.port.0, r.mac, r.age_secs)).collect();
        assert_eq!(
            seen,
            [(0, mac(9), 5), (1, mac(3), 2), (2, mac(5), 5)],
            "sorted by port, then address; the moved address once, where it went"
        );
        assert!(rows.iter().all(|r| r.vlan.is_none()));
        let c = t.counters();
        let names: Vec<&str> = c.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            ["entries", "learned", "moves", "refused", "aged", "flushed"]
        );
        let s = lb.fdb().stats();
        let want = [s.entries, s.learned, s.moves, s.refused, s.aged, s.flushed];
        assert_eq!(c.iter().map(|(_, v)| *v).collect::<Vec<_>>(), want);
        assert_eq!((s.entries, s.learned, s.moves), (3, 3, 1));
        // Through the boxed seam the engine and the registry use.
        let boxed: Box<dyn Lookup> = Box::new(lb.clone());
        assert_eq!(
            boxed.table().map(|t| t.rows(Timestamp::from_secs(15))),
            Some(rows)
        );
    }

    /// The shared-lock lookup of a switch of several threads: it decides a batch only
    /// when nothing is to be learned or refreshed, and then as `lookup_batch` does.
    #[test]
    fn shared_lookup_decides_only_learned_batches_and_agrees() {
        let mut lb = LearningBridge::default();
        let t = Timestamp::from_secs(10);
        let batch = [
            pkt(0, mac(1), mac(2)),
            pkt(0, mac(1), mac(2)),
            pkt(0, mac(1), MacAddr::BROADCAST),
        ];
        let mut out = [Dest::Drop; 3];
        assert!(!lb.lookup_batch_shared(&batch, &mut out, t), "mac 1 is new");
        lb.lookup_batch(&batch, &mut out, t);
        lb.lookup(&pkt(1, mac(2), mac(1)), t);
        let (mut want, mut got) = ([Dest::Drop; 3], [Dest::Drop; 3]);
        assert!(
            lb.lookup_batch_shared(&batch, &mut got, t),
            "all learned, fresh"
        );
        lb.clone().lookup_batch(&batch, &mut want, t);
        assert_eq!(got, want);
        assert_eq!(
            got,
            [Dest::Port(PortId(1)), Dest::Port(PortId(1)), Dest::Flood]
        );
        // A move (mac 1 now on port 2) is learning again.
        let moved = [pkt(2, mac(1), mac(2))];
        assert!(!lb.lookup_batch_shared(&moved, &mut got[..1], t));
        // So is a source grown old enough to be refreshed.
        let later = Timestamp(t.0 + REFRESH_NS);
        assert!(!lb.lookup_batch_shared(&batch, &mut got, later));
        assert!(!lb.wants_maintenance(Timestamp(0)) || lb.wants_maintenance(later));
    }
}
