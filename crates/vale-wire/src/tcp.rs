//! TCP headers (RFC 9293): ports, sequence and acknowledgment numbers, data offset,
//! flags, window, checksum, urgent pointer; options as an opaque run up to the data
//! offset.

use crate::{Error, checksum};

pub mod field {
    use crate::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset in 32-bit words (high nibble).
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// The header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// The flag bits of [`Packet::flags`].
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// A TCP segment.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// The segment, if `buffer` holds the whole header, options included, and the data
    /// offset is at least 5.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet { buffer };
        crate::check_len("TCP", p.buffer.as_ref(), HEADER_LEN)?;
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(Error::BadField {
                header: "TCP",
                field: "data offset",
                value: hl as u32 / 4,
                want: "at least 5 (20 bytes)",
            });
        }
        crate::check_len("TCP", p.buffer.as_ref(), hl)?;
        Ok(p)
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

    pub fn seq_number(&self) -> u32 {
        crate::u32_at(self.buffer.as_ref(), field::SEQ_NUM)
    }

    pub fn ack_number(&self) -> u32 {
        crate::u32_at(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// The header's length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// CWR through FIN (see [`flags`]); the AccECN bit sits with the data offset.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        crate::u16_at(self.buffer.as_ref(), field::URGENT)
    }

    /// Whether the checksum over the whole buffer (header and payload) is right, given
    /// the network layer's pseudo-header sum.
    pub fn verify_checksum(&self, pseudo: u32) -> bool {
        checksum::fold(checksum::sum(pseudo, self.buffer.as_ref())) == 0
    }

    /// The bytes after the header and its options.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    pub fn set_dst_port(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    pub fn set_seq_number(&mut self, v: u32) {
        crate::put_u32(self.buffer.as_mut(), field::SEQ_NUM, v);
    }

    pub fn set_ack_number(&mut self, v: u32) {
        crate::put_u32(self.buffer.as_mut(), field::ACK_NUM, v);
    }

    /// A header of `len` bytes (a multiple of 4, 20 to 60); the byte's low nibble (the
    /// reserved and AccECN bits) is kept.
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = ((len / 4) as u8) << 4 | *b & 0x0f;
    }

    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    pub fn set_window(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::WINDOW, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    pub fn set_urgent(&mut self, v: u16) {
        crate::put_u16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Computes the checksum over the whole buffer with the network layer's
    /// pseudo-header sum and stores it.
    pub fn fill_checksum(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = checksum::fold(checksum::sum(pseudo, self.buffer.as_ref()));
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
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

    /// 5001 > 40000, seq 1000, ack 2000, PSH|ACK, window 512, checksum over
    /// 10.0.0.1 > 10.0.0.2, urgent 0, 2 bytes of payload.
    static SEGMENT: [u8; 22] = [
        0x13, 0x89, 0x9c, 0x40, // ports
        0x00, 0x00, 0x03, 0xe8, // seq
        0x00, 0x00, 0x07, 0xd0, // ack
        0x50, 0x18, 0x02, 0x00, // data offset 5, PSH|ACK, window
        0x33, 0x8b, 0x00, 0x00, // checksum, urgent
        0xaa, 0xbb, // payload
    ];

    fn pseudo() -> u32 {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        checksum::pseudo_ipv4(s, d, IpProtocol::TCP, SEGMENT.len() as u32)
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&SEGMENT[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (5001, 40000));
        assert_eq!(p.seq_number(), 1000);
        assert_eq!(p.ack_number(), 2000);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.flags(), flags::PSH | flags::ACK);
        assert_eq!(p.window(), 512);
        assert_eq!(p.checksum(), 0x338b);
        assert_eq!(p.urgent(), 0);
        assert!(p.verify_checksum(pseudo()));
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn construct() {
        let mut b = vec![0xa5; 22];
        b[field::DATA_OFF] = 0; // the reserved nibble a sender leaves clear
        let mut p = Packet::new_unchecked(&mut b);
        p.set_src_port(5001);
        p.set_dst_port(40000);
        p.set_seq_number(1000);
        p.set_ack_number(2000);
        p.set_header_len(20);
        p.set_flags(flags::PSH | flags::ACK);
        p.set_window(512);
        p.set_urgent(0);
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        p.fill_checksum(pseudo());
        assert_eq!(&p.into_inner()[..], &SEGMENT[..]);
    }

    #[test]
    fn checked_views_refuse_what_would_panic() {
        assert!(Packet::new_checked(&SEGMENT[..19]).is_err());
        let mut b = SEGMENT;
        b[12] = 0x40;
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(Error::BadField { value: 4, .. })
        ));
        b[12] = 0x60; // 24 bytes of header in 22
        assert!(matches!(
            Packet::new_checked(&b[..]),
            Err(Error::Truncated {
                need: 24,
                len: 22,
                ..
            })
        ));
    }
}
