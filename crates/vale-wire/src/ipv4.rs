//! IPv4 headers (RFC 791): the fixed 20 bytes, options as an opaque run up to the IHL.

use crate::{Error, IpProtocol, checksum};
use core::net::Ipv4Addr;

pub mod field {
    use crate::Field;

    /// Version (high nibble) and IHL in 32-bit words (low nibble).
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    /// Flags (3 bits: reserved, DF, MF) and fragment offset in 8-byte units (13 bits).
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// The header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET: u16 = 0x1fff;

/// An IPv4 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// The packet, if `buffer` holds the whole header, options included, and the IHL is
    /// at least 5. The version and the total length are not checked: the total length of
    /// a TSO super-frame may be anything the sender left there (0 in a BIG TCP one), and
    /// [`Packet::payload`] is clamped to the buffer.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet { buffer };
        crate::check_len("IPv4", p.buffer.as_ref(), HEADER_LEN)?;
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(Error::BadField {
                header: "IPv4",
                field: "IHL",
                value: hl as u32 / 4,
                want: "at least 5 (20 bytes)",
            });
        }
        crate::check_len("IPv4", p.buffer.as_ref(), hl)?;
        Ok(p)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header's length in bytes (IHL × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        crate::u16_at(self.buffer.as_ref(), field::FLG_OFF) & DONT_FRAG != 0
    }

    pub fn more_frags(&self) -> bool {
        crate::u16_at(self.buffer.as_ref(), field::FLG_OFF) & MORE_FRAGS != 0
    }

    /// The fragment's offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (crate::u16_at(self.buffer.as_ref(), field::FLG_OFF) & FRAG_OFFSET) << 3
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    pub fn checksum(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(crate::u32_at(self.buffer.as_ref(), field::SRC_ADDR))
    }

    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(crate::u32_at(self.buffer.as_ref(), field::DST_ADDR))
    }

    /// Whether the header checksum (over the IHL's bytes) is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::of(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// The bytes after the header, up to the total length (so no Ethernet padding),
    /// or to the buffer's end where the total length is past it.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let hl = self.header_len();
        &b[hl..usize::from(self.total_len()).clamp(hl, b.len())]
    }

    /// The pseudo-header sum of this packet's TCP or UDP payload of `len` bytes.
    pub fn pseudo_sum(&self, len: u32) -> u32 {
        checksum::pseudo_ipv4(self.src_addr(), self.dst_addr(), self.protocol(), len)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 4 and a header of `len` bytes (a multiple of 4, 20 to 60).
    pub fn set_version_and_header_len(&mut self, len: usize) {
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ((len / 4) as u8 & 0x0f);
    }

    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    pub fn set_total_len(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    pub fn set_ident(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    /// Flags and fragment offset: `dont_frag`, `more_frags`, and the offset in bytes
    /// (a multiple of 8).
    pub fn set_flags_and_frag_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut v = (offset >> 3) & FRAG_OFFSET;
        if dont_frag {
            v |= DONT_FRAG;
        }
        if more_frags {
            v |= MORE_FRAGS;
        }
        crate::put_u16(self.buffer.as_mut(), field::FLG_OFF, v);
    }

    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.0;
    }

    pub fn set_checksum(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Computes the header checksum over the IHL's bytes and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::of(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }

    /// The payload, bounded as [`Packet::payload`] is.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let end = usize::from(self.total_len()).clamp(hl, self.buffer.as_ref().len());
        &mut self.buffer.as_mut()[hl..end]
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

    /// 10.0.0.1 > 10.0.0.2, UDP, DF, TTL 64, id 0x1234, 4 bytes of payload, then 2
    /// bytes of Ethernet padding.
    static PACKET: [u8; 26] = [
        0x45, 0x00, 0x00, 0x18, // version 4, IHL 5, total length 24
        0x12, 0x34, 0x40, 0x00, // id, DF
        0x40, 0x11, 0x14, 0x9f, // TTL 64, UDP, checksum
        0x0a, 0x00, 0x00, 0x01, // source
        0x0a, 0x00, 0x00, 0x02, // destination
        0xaa, 0xbb, 0xcc, 0xdd, // payload
        0x00, 0x00, // padding
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.dscp_ecn(), 0);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::UDP);
        assert_eq!(p.checksum(), 0x149f);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            p.payload(),
            &[0xaa, 0xbb, 0xcc, 0xdd],
            "padding is not payload"
        );
    }

    #[test]
    fn construct() {
        let mut b = vec![0xa5; 26];
        let mut p = Packet::new_unchecked(&mut b);
        p.set_version_and_header_len(20);
        p.set_dscp_ecn(0);
        p.set_total_len(24);
        p.set_ident(0x1234);
        p.set_flags_and_frag_offset(true, false, 0);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::UDP);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.fill_checksum();
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        let b = p.into_inner();
        assert_eq!(&b[..24], &PACKET[..24]);
        assert_eq!(
            &b[24..],
            &[0xa5, 0xa5],
            "past the total length is not touched"
        );
    }

    #[test]
    fn fragments() {
        let mut b = PACKET;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_flags_and_frag_offset(false, true, 1480);
        assert_eq!(&p.as_ref()[6..8], &[0x20, 0xb9]);
        assert!(!p.dont_frag() && p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
    }

    #[test]
    fn checked_views_refuse_what_would_panic() {
        assert!(matches!(
            Packet::new_checked(&PACKET[..19]),
            Err(Error::Truncated { need: 20, .. })
        ));
        let mut b = PACKET;
        b[0] = 0x44;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(Error::BadField {
                field: "IHL",
                value: 4,
                ..
            })
        ));
        b[0] = 0x47; // 28 bytes of header: options past a 26-byte buffer
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(Error::Truncated { need: 28, .. })
        ));
        // A total length past the buffer, or inside the header, is clamped.
        let mut b = PACKET;
        b[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap().payload().len(), 6);
        b[2..4].copy_from_slice(&0u16.to_be_bytes());
        assert!(Packet::new_checked(&b[..]).unwrap().payload().is_empty());
    }
}
