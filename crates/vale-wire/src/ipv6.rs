//! IPv6 fixed headers (RFC 8200 §3). Extension headers are the payload's business: the
//! next header field says what comes first.

use crate::{Error, IpProtocol, checksum};
use core::net::Ipv6Addr;

pub mod field {
    use crate::{Field, Rest};

    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    pub const PAYLOAD: Rest = 40..;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// An IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// The packet, if `buffer` holds the fixed header. Neither the version nor the payload
    /// length is checked (see [`crate::ipv4::Packet::new_checked`] for why).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        crate::check_len("IPv6", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW.start] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        (crate::u32_at(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    pub fn flow_label(&self) -> u32 {
        crate::u32_at(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// What follows the fixed header, extension headers included, in bytes.
    pub fn payload_len(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buffer.as_ref()[field::SRC_ADDR]))
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(addr(&self.buffer.as_ref()[field::DST_ADDR]))
    }

    /// The bytes after the fixed header, up to the payload length or the buffer's end.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[HEADER_LEN..(HEADER_LEN + usize::from(self.payload_len())).min(b.len())]
    }

    /// The pseudo-header sum of an upper-layer packet of `len` bytes that follows the
    /// fixed header directly (no extension headers).
    pub fn pseudo_sum(&self, len: u32) -> u32 {
        checksum::pseudo_ipv6(self.src_addr(), self.dst_addr(), self.next_header(), len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 6 with the given traffic class and flow label (cut to 20 bits).
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = 6 << 28 | u32::from(traffic_class) << 20 | flow_label & 0x000f_ffff;
        crate::put_u32(self.buffer.as_mut(), field::VER_TC_FLOW, v);
    }

    pub fn set_payload_len(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = p.0;
    }

    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// The payload, bounded as [`Packet::payload`] is.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

fn addr(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fe80::1 > ff02::1, TCP, hop limit 64, traffic class 0xb8, flow label 0x12345,
    /// 2 bytes of payload.
    static PACKET: [u8; 42] = [
        0x6b, 0x81, 0x23, 0x45, // version, traffic class, flow label
        0x00, 0x02, 0x06, 0x40, // payload length, TCP, hop limit
        0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // source
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // destination
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 2);
        assert_eq!(p.next_header(), IpProtocol::TCP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        assert!(Packet::new_checked(&PACKET[..39]).is_err());
    }

    #[test]
    fn construct() {
        let mut b = vec![0xa5; 42];
        let mut p = Packet::new_unchecked(&mut b);
        p.set_version_tc_flow(0xb8, 0x12345);
        p.set_payload_len(2);
        p.set_next_header(IpProtocol::TCP);
        p.set_hop_limit(64);
        p.set_src_addr(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
        p.set_dst_addr(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1));
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(&p.into_inner()[..], &PACKET[..]);
    }
}
