//! UDP headers (RFC 768).

use crate::{Error, checksum};

pub mod field {
    use crate::{Field, Rest};

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD: Rest = 8..;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A UDP datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// The datagram, if `buffer` holds the header. The length field is not checked;
    /// [`Packet::payload`] is clamped to the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        crate::check_len("UDP", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn src_port(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Header and payload, in bytes.
    pub fn len(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Whether the checksum over the whole buffer is right, given the network layer's
    /// pseudo-header sum; a zero checksum (none sent, IPv4 only) counts as right.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        self.checksum() == 0 || checksum::fold(checksum::sum(pseudo, self.buffer.as_ref())) == 0
    }

    /// The bytes after the header, up to the length field or the buffer's end.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[HEADER_LEN..usize::from(self.len()).clamp(HEADER_LEN, b.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    pub fn set_dst_port(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    pub fn set_len(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes the checksum over the whole buffer with the network layer's
    /// pseudo-header sum and stores it; a computed 0 is sent as 0xffff, since 0 means
    /// "no checksum".
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::fold(checksum::sum(pseudo, self.buffer.as_ref()));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// The payload, bounded as [`Packet::payload`] is.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len()).clamp(HEADER_LEN, self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IpProtocol;
    use core::net::Ipv4Addr;

    /// 1234 > 4321, 4 bytes of payload, checksum over 10.0.0.1 > 10.0.0.2.
    static DATAGRAM: [u8; 12] = [
        0x04, 0xd2, 0x10, 0xe1, // ports
        0x00, 0x0c, 0x00, 0x00, // length, checksum (filled in below)
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];

    fn pseudo() -> u32 {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        checksum::pseudo_ipv4(s, d, IpProtocol::UDP, 12)
    }

    fn golden() -> [u8; 12] {
        let mut g = DATAGRAM;
        g[6..8].copy_from_slice(&[0x5e, 0x87]);
        g
    }

    #[test]
    fn deconstruct() {
        let g = golden();
        let p = Packet::new_checked(&g[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (1234, 4321));
        assert_eq!(p.len(), 12);
        assert!(!p.is_empty());
        assert_eq!(p.checksum(), 0x5e87);
        assert!(p.verify_checksum(pseudo()));
        assert!(!p.verify_checksum(pseudo() + 1));
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert!(Packet::new_checked(&g[..7]).is_err());
    }

    #[test]
    fn construct() {
        let mut b = vec![0xa5; 12];
        let mut p = Packet::new_unchecked(&mut b);
        p.set_src_port(1234);
        p.set_dst_port(4321);
        p.set_len(12);
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        p.fill_checksum(pseudo());
        assert_eq!(&p.into_inner()[..], &golden()[..]);
    }

    #[test]
    fn a_computed_zero_is_sent_as_all_ones() {
        // Choose the payload so that the sum folds to 0xffff (checksum 0).
        let mut b = DATAGRAM;
        b[8..12].copy_from_slice(&[0, 0, 0, 0]);
        let c = checksum::fold(checksum::sum(pseudo(), &b));
        b[8..10].copy_from_slice(&c.to_be_bytes());
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.fill_checksum(pseudo());
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(pseudo()));
    }
}
