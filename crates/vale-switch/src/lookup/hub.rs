//! The hub: every frame floods. The simplest lookup, and the model the learning bridge
//! is tested against.

use super::{Dest, Lookup, PacketInfo};
use crate::types::Timestamp;

/// A hub: every frame floods. The simplest lookup, and the model the learning bridge is
/// tested against.
#[derive(Debug, Default, Clone)]
pub struct Hub;

impl Lookup for Hub {
    fn lookup(&mut self, _pkt: &PacketInfo, _now: Timestamp) -> Dest {
        Dest::Flood
    }
    fn lookup_batch_shared(&self, _pkts: &[PacketInfo], out: &mut [Dest], _now: Timestamp) -> bool {
        out.fill(Dest::Flood);
        true
    }
    fn wants_maintenance(&self, _now: Timestamp) -> bool {
        false
    }
}
