//! The static port map (a patch panel): frames from one port go to another, whatever
//! their addresses.

use super::{Dest, Lookup, PacketInfo};
use crate::types::{PortId, Timestamp};

/// A static port map (a patch panel): frames from port A go to port B, whatever their
/// addresses; ports without an entry drop.
#[derive(Debug, Default, Clone)]
pub struct StaticMap {
    map: Vec<Option<PortId>>,
}

impl StaticMap {
    pub fn new() -> StaticMap {
        StaticMap::default()
    }

    /// Sends everything that enters on `from` to `to`.
    pub fn connect(&mut self, from: PortId, to: PortId) {
        let i = from.0 as usize;
        if self.map.len() <= i {
            self.map.resize(i + 1, None);
        }
        self.map[i] = Some(to);
    }
}

impl Lookup for StaticMap {
    fn lookup(&mut self, pkt: &PacketInfo, _now: Timestamp) -> Dest {
        match self.map.get(pkt.src_port.0 as usize) {
            Some(Some(p)) => Dest::Port(*p),
            _ => Dest::Drop,
        }
    }

    fn port_detached(&mut self, port: PortId) {
        for e in self.map.iter_mut() {
            if *e == Some(port) {
                *e = None;
            }
        }
        if let Some(e) = self.map.get_mut(port.0 as usize) {
            *e = None;
        }
    }
}
