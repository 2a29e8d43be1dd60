//! VXLAN headers (RFC 7348 §5): 8 bytes in a UDP datagram to port 4789, in front of the
//! inner Ethernet frame. Flags (8 bits, of which only I, "the VNI is valid", is defined),
//! 24 reserved bits, the 24-bit VNI, 8 reserved bits.

use crate::Error;

pub mod field {
    use crate::{Field, Rest};

    pub const FLAGS: usize = 0;
    pub const RESERVED1: Field = 1..4;
    pub const VNI: Field = 4..7;
    pub const RESERVED2: usize = 7;
    pub const PAYLOAD: Rest = 8..;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// The IANA port for VXLAN.
pub const UDP_PORT: u16 = 4789;
/// The I flag: the VNI field is valid. RFC 7348 has it set in every packet.
pub const FLAG_I: u8 = 0x08;
/// VNIs are 24 bits.
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// A VXLAN packet: header and inner frame.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// The packet, if `buffer` holds the header. Its fields are not judged here; see
    /// [`Packet::check`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        crate::check_len("VXLAN", buffer.as_ref(), HEADER_LEN)?;
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn vni(&self) -> u32 {
        u24(&self.buffer.as_ref()[field::VNI])
    }

    /// The 24 reserved bits between the flags and the VNI.
    pub fn reserved1(&self) -> u32 {
        u24(&self.buffer.as_ref()[field::RESERVED1])
    }

    /// The 8 reserved bits after the VNI.
    pub fn reserved2(&self) -> u8 {
        self.buffer.as_ref()[field::RESERVED2]
    }

    /// What is wrong with the header, if anything: the I flag clear (the VNI means
    /// nothing), or reserved bits set (in the flags or either reserved field). RFC 7348
    /// has receivers ignore reserved bits; a strict endpoint, or a test of an emitter,
    /// can still ask. Reports the first fault in that order.
    pub fn check(&self) -> Result<(), Error> {
        let bad = |field, value, want| {
            Err(Error::BadField {
                header: "VXLAN",
                field,
                value,
                want,
            })
        };
        let f = self.flags();
        if f & FLAG_I == 0 {
            return bad("flags", u32::from(f), "want the I flag (0x08) set");
        }
        if f & !FLAG_I != 0 {
            return bad("flags", u32::from(f), "want only the I flag (0x08) set");
        }
        if self.reserved1() != 0 {
            return bad("reserved bits 8-31", self.reserved1(), "want 0");
        }
        if self.reserved2() != 0 {
            return bad("reserved bits 56-63", u32::from(self.reserved2()), "want 0");
        }
        Ok(())
    }

    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v;
    }

    /// The VNI, cut to 24 bits.
    pub fn set_vni(&mut self, vni: u32) {
        put_u24(&mut self.buffer.as_mut()[field::VNI], vni);
    }

    pub fn set_reserved1(&mut self, v: u32) {
        put_u24(&mut self.buffer.as_mut()[field::RESERVED1], v);
    }

    pub fn set_reserved2(&mut self, v: u8) {
        self.buffer.as_mut()[field::RESERVED2] = v;
    }

    /// The header an RFC 7348 sender writes: the I flag, the VNI, every reserved bit 0.
    pub fn set_header(&mut self, vni: u32) {
        self.set_flags(FLAG_I);
        self.set_reserved1(0);
        self.set_vni(vni);
        self.set_reserved2(0);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

fn put_u24(b: &mut [u8], v: u32) {
    b.copy_from_slice(&v.to_be_bytes()[1..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VNI 0x123456 and two bytes of inner frame.
    static PACKET: [u8; 10] = [
        0x08, 0x00, 0x00, 0x00, // flags (I), reserved
        0x12, 0x34, 0x56, 0x00, // VNI, reserved
        0xaa, 0xbb, // inner frame
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.flags(), FLAG_I);
        assert_eq!(p.vni(), 0x123456);
        assert_eq!((p.reserved1(), p.reserved2()), (0, 0));
        assert_eq!(p.check(), Ok(()));
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
        assert!(Packet::new_checked(&PACKET[..7]).is_err());
    }

    #[test]
    fn construct() {
        let mut b = vec![0xa5; 10];
        let mut p = Packet::new_unchecked(&mut b);
        p.set_header(0x123456);
        p.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(&p.into_inner()[..], &PACKET[..]);
        let mut b = PACKET;
        Packet::new_unchecked(&mut b[..]).set_vni(0x0100_0001);
        assert_eq!(&b[4..8], &[0x00, 0x00, 0x01, 0x00], "cut to 24 bits");
    }

    #[test]
    fn check_names_the_fault() {
        let fault = |i: usize, v: u8| {
            let mut b = PACKET;
            b[i] = v;
            match Packet::new_unchecked(&b[..]).check() {
                Err(Error::BadField { field, want, .. }) => format!("{field}: {want}"),
                other => format!("{other:?}"),
            }
        };
        assert_eq!(fault(0, 0x00), "flags: want the I flag (0x08) set");
        assert_eq!(fault(0, 0x0c), "flags: want only the I flag (0x08) set");
        assert_eq!(fault(2, 0x01), "reserved bits 8-31: want 0");
        assert_eq!(fault(7, 0x80), "reserved bits 56-63: want 0");
        let mut b = PACKET;
        b[0] = 0;
        assert_eq!(
            Packet::new_unchecked(&b[..])
                .check()
                .unwrap_err()
                .to_string(),
            "VXLAN flags is 0x0; want the I flag (0x08) set"
        );
    }
}
