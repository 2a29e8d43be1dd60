//! Ethernet II frames: destination and source MAC addresses, EtherType, payload (no
//! preamble, no FCS: what a port's slot holds).

use crate::Error;
use core::fmt;

/// The EtherType field (or, in a tagged frame, the TPID). Open, like [`crate::IpProtocol`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    pub const IPV4: EtherType = EtherType(0x0800);
    pub const ARP: EtherType = EtherType(0x0806);
    /// An 802.1Q customer tag follows.
    pub const VLAN: EtherType = EtherType(0x8100);
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// An 802.1ad service tag follows (QinQ's outer tag).
    pub const QINQ: EtherType = EtherType(0x88a8);
    /// IEEE 802 Local Experimental EtherType 1: test traffic that no stack takes for its
    /// own (pkt-gen's short frames, the bench's pair).
    pub const EXPERIMENTAL: EtherType = EtherType(0x88b5);

    /// Whether an 802.1Q or 802.1ad tag follows.
    pub fn is_vlan(self) -> bool {
        self == EtherType::VLAN || self == EtherType::QINQ
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EtherType::IPV4 => f.write_str("IPv4"),
            EtherType::ARP => f.write_str("ARP"),
            EtherType::VLAN => f.write_str("802.1Q"),
            EtherType::IPV6 => f.write_str("IPv6"),
            EtherType::QINQ => f.write_str("802.1ad"),
            EtherType(e) => write!(f, "ethertype 0x{e:04x}"),
        }
    }
}

pub mod field {
    use crate::{Field, Rest};

    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// An Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// The frame, if `buffer` holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Frame<T>, Error> {
        crate::check_len("Ethernet", buffer.as_ref(), HEADER_LEN)?;
        Ok(Frame { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::DESTINATION])
    }

    pub fn src_addr(&self) -> [u8; 6] {
        mac(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType right after the addresses: in a tagged frame, the outer tag's TPID
    /// (see [`crate::vlan`]).
    pub fn ethertype(&self) -> EtherType {
        EtherType(crate::u16_at(self.buffer.as_ref(), field::ETHERTYPE))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&a);
    }

    pub fn set_src_addr(&mut self, a: [u8; 6]) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&a);
    }

    pub fn set_ethertype(&mut self, e: EtherType) {
        crate::put_u16(self.buffer.as_mut(), field::ETHERTYPE, e.0);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Frame<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

fn mac(b: &[u8]) -> [u8; 6] {
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod tests {
    use super::*;

    static FRAME: [u8; 18] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // destination
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // source
        0x08, 0x00, // IPv4
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    #[test]
    fn deconstruct() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(f.src_addr(), [0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn construct() {
        let mut b = vec![0xa5; 18];
        let mut f = Frame::new_unchecked(&mut b);
        f.set_dst_addr([1, 2, 3, 4, 5, 6]);
        f.set_src_addr([0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        f.set_ethertype(EtherType::IPV4);
        f.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(&f.into_inner()[..], &FRAME[..]);
    }

    #[test]
    fn short_buffers_are_refused() {
        assert_eq!(
            Frame::new_checked(&FRAME[..13]).unwrap_err(),
            Error::Truncated {
                header: "Ethernet",
                len: 13,
                need: 14
            }
        );
        assert!(
            Frame::new_checked(&FRAME[..14])
                .unwrap()
                .payload()
                .is_empty()
        );
        assert_eq!(HEADER_LEN, 14);
    }

    #[test]
    fn ethertypes_print_by_name() {
        assert_eq!(EtherType::IPV6.to_string(), "IPv6");
        assert_eq!(EtherType(0x88b5).to_string(), "ethertype 0x88b5");
        assert!(EtherType::QINQ.is_vlan() && !EtherType::ARP.is_vlan());
    }
}
