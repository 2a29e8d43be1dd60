//! The lookup seam (VALE's `bdg_ops.lookup`, mSwitch's modules): given a frame, where does
//! it go? The engine calls it once per batch with every frame's header, so a boxed
//! implementation costs one indirect call per batch, not per packet.

mod hub;
pub mod learning;
mod static_map;

pub use hub::Hub;
pub use learning::{Fdb, FdbConfig, FdbStats, LearningBridge};
pub use static_map::StaticMap;

use crate::types::{MacAddr, PortId, Timestamp};
use vale_abi::layout::NS_NO_LEARN;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// To one port (never back to the sender: the engine drops that as `no_dest`).
    Port(PortId),
    /// To every other port of the switch.
    Flood,
    /// Nowhere (counted as `no_dest`).
    Drop,
}

/// What a lookup sees of a frame: copied out of shared memory and validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketInfo {
    pub src_port: PortId,
    pub src_ring: u16,
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
    /// Total frame length over all fragments.
    pub len: u32,
    /// Slot flags of the first fragment (`NS_NO_LEARN`, ...).
    pub slot_flags: u16,
    /// The frame's VLAN on a switch with `vlan_filtering` on (see [`crate::vlan`]),
    /// else 0. Learning tables key their entries by (address, `vid`).
    pub vid: u16,
}

impl PacketInfo {
    /// The frame must not teach the switch its source address (`NS_NO_LEARN`).
    pub fn no_learn(&self) -> bool {
        self.slot_flags & NS_NO_LEARN != 0
    }

    /// Parses the first 14 bytes of a frame, given as two little-endian words (bytes
    /// 0..8 and 8..16).
    #[inline(always)]
    pub fn from_header(
        hdr: [u64; 2],
        src_port: PortId,
        src_ring: u16,
        len: u32,
        flags: u16,
    ) -> Self {
        let [w0, w1] = hdr;
        PacketInfo {
            src_port,
            src_ring,
            dst: MacAddr::from_u64(w0),
            src: MacAddr::from_u64(w0 >> 48 | w1 << 16),
            ethertype: u16::from_be((w1 >> 32) as u16),
            len,
            slot_flags: flags,
            vid: 0,
        }
    }

    /// The same from the frame's bytes.
    pub fn from_bytes(
        frame: &[u8; 16],
        src_port: PortId,
        src_ring: u16,
        len: u32,
        flags: u16,
    ) -> Self {
        let w0 = u64::from_le_bytes(frame[..8].try_into().unwrap_or_default());
        let w1 = u64::from_le_bytes(frame[8..].try_into().unwrap_or_default());
        PacketInfo::from_header([w0, w1], src_port, src_ring, len, flags)
    }
}

/// A switching decision function. Implementations keep their own state (tables, rules)
/// and get the time from the caller.
pub trait Lookup: Send + Sync {
    /// Decides one frame.
    fn lookup(&mut self, pkt: &PacketInfo, now: Timestamp) -> Dest;

    /// Decides a batch; `out` has the same length as `pkts`.
    fn lookup_batch(&mut self, pkts: &[PacketInfo], out: &mut [Dest], now: Timestamp) {
        for (p, o) in pkts.iter().zip(out.iter_mut()) {
            *o = self.lookup(p, now);
        }
    }

    /// Decides a batch whose frames are all in VLAN `vid` (each one's
    /// [`PacketInfo::vid`] says so too): a lookup may take the VLAN once for the batch
    /// (default: [`Self::lookup_batch`]).
    fn lookup_batch_in(&mut self, pkts: &[PacketInfo], out: &mut [Dest], now: Timestamp, vid: u16) {
        let _ = vid;
        self.lookup_batch(pkts, out, now);
    }

    /// Decides a batch without changing anything, if it can: `false` means deciding it
    /// would change the lookup's state (learning), and [`Self::lookup_batch`] must. The
    /// threads of a switch forwarded by several run this under a shared lock, and take
    /// the exclusive one only when it says `false` (default: always).
    fn lookup_batch_shared(
        &self,
        _pkts: &[PacketInfo],
        _out: &mut [Dest],
        _now: Timestamp,
    ) -> bool {
        false
    }

    /// Whether [`Self::maintain`] has work to do at `now` (asked under the shared lock
    /// before the exclusive one is taken; default: always).
    fn wants_maintenance(&self, _now: Timestamp) -> bool {
        true
    }

    /// A port left the switch: forget everything about it. (Also called when a port's
    /// VLAN mode changes, and for every port when the switch's VLAN filtering does.)
    fn port_detached(&mut self, _port: PortId) {}

    /// The switch turned VLAN filtering on or off: [`PacketInfo::vid`] now names the
    /// frames' VLANs (or is always 0).
    fn vlan_filtering(&mut self, _on: bool) {}

    /// Periodic housekeeping (aging); called at least once per forwarding pass.
    fn maintain(&mut self, _now: Timestamp) {}

    /// The address table this lookup learns, for `vale-ctl fdb`; `None` if it has none.
    fn table(&self) -> Option<&dyn AddressTable> {
        None
    }
}

/// Which lookup a switch gets when it is created: a choice per switch
/// (`Registry::set_lookup`), [`LookupKind::Learning`] unless told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum LookupKind {
    /// VALE's learning bridge: learn sources, forward known unicast, flood the rest.
    #[default]
    Learning,
    /// A hub: every frame floods.
    Hub,
}

impl LookupKind {
    pub const ALL: [LookupKind; 2] = [LookupKind::Learning, LookupKind::Hub];

    /// A new lookup of this kind; `fdb` sizes the table of those that learn.
    pub fn build(self, fdb: FdbConfig) -> Box<dyn Lookup> {
        match self {
            LookupKind::Learning => Box::new(LearningBridge::new(fdb)),
            LookupKind::Hub => Box::new(Hub),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LookupKind::Learning => "learning",
            LookupKind::Hub => "hub",
        }
    }
}

impl std::fmt::Display for LookupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LookupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<LookupKind, String> {
        LookupKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = LookupKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "lookup `{}` is not one of {}",
                    s.escape_default(),
                    names.join(", ")
                )
            })
    }
}

/// One row of an address table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRow {
    pub mac: MacAddr,
    /// The 802.1Q VLAN the address lives in, for lookups that keep one table per VLAN;
    /// `None` for one that ignores VLANs.
    pub vlan: Option<u16>,
    pub port: PortId,
    /// Seconds since the address was last seen.
    pub age_secs: u32,
}

/// What the control plane sees of a lookup's address table, whatever its layout: its
/// rows and its counters by name.
pub trait AddressTable {
    /// Every row, sorted by port, then VLAN, then address.
    fn rows(&self, now: Timestamp) -> Vec<TableRow>;

    /// The table's counters (`entries`, `learned`, ...), each once, in a fixed order.
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

impl<T: Lookup + ?Sized> Lookup for Box<T> {
    fn lookup(&mut self, pkt: &PacketInfo, now: Timestamp) -> Dest {
        (**self).lookup(pkt, now)
    }
    fn lookup_batch(&mut self, pkts: &[PacketInfo], out: &mut [Dest], now: Timestamp) {
        (**self).lookup_batch(pkts, out, now)
    }
    fn lookup_batch_in(&mut self, pkts: &[PacketInfo], out: &mut [Dest], now: Timestamp, vid: u16) {
        (**self).lookup_batch_in(pkts, out, now, vid)
    }
    fn lookup_batch_shared(&self, pkts: &[PacketInfo], out: &mut [Dest], now: Timestamp) -> bool {
        (**self).lookup_batch_shared(pkts, out, now)
    }
    fn wants_maintenance(&self, now: Timestamp) -> bool {
        (**self).wants_maintenance(now)
    }
    fn port_detached(&mut self, port: PortId) {
        (**self).port_detached(port)
    }
    fn vlan_filtering(&mut self, on: bool) {
        (**self).vlan_filtering(on)
    }
    fn maintain(&mut self, now: Timestamp) {
        (**self).maintain(now)
    }
    fn table(&self) -> Option<&dyn AddressTable> {
        (**self).table()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_are_parsed() {
        let mut f = [0xa5u8; 16];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0x0b]);
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        f[14..16].copy_from_slice(&[0xe0, 0x0a]);
        let p = PacketInfo::from_bytes(&f, PortId(3), 1, 60, 0);
        assert_eq!(p.vid, 0);
        assert_eq!(p.dst, MacAddr::BROADCAST);
        assert_eq!(p.src, MacAddr::new([2, 0, 0, 0, 0, 0x0b]));
        assert_eq!(p.ethertype, 0x0806);
        assert_eq!((p.src_port, p.src_ring, p.len), (PortId(3), 1, 60));
    }

    #[test]
    fn lookups_without_a_table_show_none() {
        let boxed: Box<dyn Lookup> = Box::new(Hub);
        assert!(Hub.table().is_none() && boxed.table().is_none());
        assert!(StaticMap::new().table().is_none());
    }
}
