//! Direct delivery for one switch of a lane: packets for a driven port that takes them
//! straight from the senders' buffers (TAP, AF_PACKET, vhost-user) go to its `send`.

use super::PortMap;
use crate::port::{Direct, DrivenPort};
use vale_switch::{PortId, PortKey};

pub struct DirectEgress<'a> {
    pub switch: usize,
    pub driven: &'a mut PortMap<Box<dyn DrivenPort>>,
}

impl vale_switch::Egress for DirectEgress<'_> {
    fn send(&mut self, dst: PortId, ring: u16, hdr: &[u8], frags: &[vale_abi::Frag<'_>]) -> bool {
        let key = PortKey {
            switch: self.switch,
            port: dst,
        };
        self.driven
            .get_mut(&key)
            .is_some_and(|p| p.send(&Direct { ring, hdr, frags }))
    }
}
