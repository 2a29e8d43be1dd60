//! 802.1Q (C-tag) and 802.1ad (S-tag) VLAN tags.
//!
//! On the wire a tag sits between the source address and the EtherType: the TPID
//! (0x8100 or 0x88a8, in the Ethernet header's EtherType place), then the TCI (priority
//! code point, drop eligible indicator, VLAN id), then the EtherType of what follows.
//! [`Tag`] views the four bytes after the TPID: TCI and inner EtherType.
//!
//! [`outer`], [`insert`] and [`strip`] work on whole frames, for a VLAN-aware switch and
//! for restoring the tag that an AF_PACKET socket hands over out of band.

use crate::{Error, EtherType, ethernet};

pub mod field {
    use crate::{Field, Rest};

    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
    pub const PAYLOAD: Rest = 4..;
}

/// Bytes a tag adds to a frame: TPID and TCI (the inner EtherType takes the place of the
/// outer one).
pub const TAG_LEN: usize = 4;
/// What [`Tag`] covers: TCI and inner EtherType.
pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// Where the TPID sits in a frame: the Ethernet header's EtherType.
const TPID_AT: usize = ethernet::field::ETHERTYPE.start;

/// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Tci(pub u16);

impl Tci {
    /// VIDs 0 (priority tag, no VLAN) and 0xfff (reserved) are not VLANs.
    pub const MAX_VID: u16 = 0xffe;

    /// Values beyond their field widths are cut to them (`pcp & 7`, `vid & 0xfff`).
    pub fn new(pcp: u8, dei: bool, vid: u16) -> Tci {
        Tci(u16::from(pcp & 7) << 13 | u16::from(dei) << 12 | vid & 0x0fff)
    }

    pub fn pcp(self) -> u8 {
        (self.0 >> 13) as u8
    }

    pub fn dei(self) -> bool {
        self.0 & 0x1000 != 0
    }

    pub fn vid(self) -> u16 {
        self.0 & 0x0fff
    }
}

/// The TCI and inner EtherType of a tag: the four bytes after its TPID.
#[derive(Debug, Clone)]
pub struct Tag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Tag<T> {
    pub const fn new_unchecked(buffer: T) -> Tag<T> {
        Tag { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Tag<T>, Error> {
        crate::check_len("802.1Q", buffer.as_ref(), HEADER_LEN)?;
        Ok(Tag { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn tci(&self) -> Tci {
        Tci(crate::u16_at(self.buffer.as_ref(), field::TCI))
    }

    /// The EtherType of what follows the tag (another tag's TPID in QinQ).
    pub fn ethertype(&self) -> EtherType {
        EtherType(crate::u16_at(self.buffer.as_ref(), field::ETHERTYPE))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tag<T> {
    pub fn set_tci(&mut self, t: Tci) {
        crate::put_u16(self.buffer.as_mut(), field::TCI, t.0);
    }

    pub fn set_ethertype(&mut self, e: EtherType) {
        crate::put_u16(self.buffer.as_mut(), field::ETHERTYPE, e.0);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Tag<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A frame's outermost tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outer {
    /// [`EtherType::VLAN`] or [`EtherType::QINQ`].
    pub tpid: EtherType,
    pub tci: Tci,
}

/// The outermost tag of an Ethernet frame; `None` for an untagged frame, or one too
/// short to hold its tag.
pub fn outer(frame: &[u8]) -> Option<Outer> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let tpid = eth.ethertype();
    if !tpid.is_vlan() {
        return None;
    }
    let tag = Tag::new_checked(eth.payload()).ok()?;
    Some(Outer {
        tpid,
        tci: tag.tci(),
    })
}

/// Puts a tag in front of the frame's current EtherType (outside any tag already there,
/// as a QinQ provider bridge does). The frame needs its two addresses.
pub fn insert(frame: &mut Vec<u8>, tag: Outer) -> Result<(), Error> {
    crate::check_len("Ethernet addresses", frame, TPID_AT)?;
    let mut b = [0u8; TAG_LEN];
    b[..2].copy_from_slice(&tag.tpid.0.to_be_bytes());
    b[2..].copy_from_slice(&tag.tci.0.to_be_bytes());
    frame.splice(TPID_AT..TPID_AT, b);
    Ok(())
}

/// Takes the outermost tag out of the frame and returns it; an untagged (or truncated)
/// frame is left as it is.
pub fn strip(frame: &mut Vec<u8>) -> Option<Outer> {
    let tag = outer(frame)?;
    frame.drain(TPID_AT..TPID_AT + TAG_LEN);
    Some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with a C-tag: PCP 5, DEI clear, VID 100, IPv4 inside.
    static TAGGED: [u8; 20] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, // destination
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, // source
        0x81, 0x00, // TPID
        0xa0, 0x64, // TCI: PCP 5, VID 100
        0x08, 0x00, // IPv4
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn tci_fields() {
        let t = Tci(0xa064);
        assert_eq!((t.pcp(), t.dei(), t.vid()), (5, false, 100));
        assert_eq!(Tci::new(5, false, 100), t);
        assert_eq!(Tci::new(7, true, 0xfff), Tci(0xffff));
        assert_eq!(Tci::new(0xff, false, 0xffff), Tci(0xefff), "cut to width");
    }

    #[test]
    fn deconstruct() {
        let tag = Tag::new_checked(&TAGGED[14..]).unwrap();
        assert_eq!(tag.tci(), Tci::new(5, false, 100));
        assert_eq!(tag.ethertype(), EtherType::IPV4);
        assert_eq!(tag.payload(), &[0xaa, 0xbb]);
        assert!(Tag::new_checked(&TAGGED[14..17]).is_err());
    }

    #[test]
    fn construct() {
        let mut b = vec![0xa5; 6];
        let mut tag = Tag::new_unchecked(&mut b);
        tag.set_tci(Tci::new(5, false, 100));
        tag.set_ethertype(EtherType::IPV4);
        tag.payload_mut().copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(&tag.into_inner()[..], &TAGGED[14..]);
    }

    #[test]
    fn insert_and_strip_round_trip() {
        let mut untagged = TAGGED[..12].to_vec();
        untagged.extend_from_slice(&TAGGED[16..]);
        assert_eq!(outer(&untagged), None);
        let c_tag = Outer {
            tpid: EtherType::VLAN,
            tci: Tci::new(5, false, 100),
        };
        let mut f = untagged.clone();
        insert(&mut f, c_tag).unwrap();
        assert_eq!(f, TAGGED);
        assert_eq!(outer(&f), Some(c_tag));

        // QinQ: the S-tag goes outside the C-tag and comes off first.
        let s_tag = Outer {
            tpid: EtherType::QINQ,
            tci: Tci::new(0, true, 7),
        };
        insert(&mut f, s_tag).unwrap();
        assert_eq!(&f[12..18], &[0x88, 0xa8, 0x10, 0x07, 0x81, 0x00]);
        assert_eq!(strip(&mut f), Some(s_tag));
        assert_eq!(strip(&mut f), Some(c_tag));
        assert_eq!(f, untagged);
        assert_eq!(strip(&mut f), None);
        assert_eq!(f, untagged, "an untagged frame is left alone");
    }

    #[test]
    fn short_frames() {
        let mut runt = TAGGED[..15].to_vec(); // TPID, half a TCI
        assert_eq!(outer(&runt), None);
        assert_eq!(strip(&mut runt), None);
        assert_eq!(runt.len(), 15);
        let mut tiny = vec![0u8; 11];
        assert!(
            insert(
                &mut tiny,
                Outer {
                    tpid: EtherType::VLAN,
                    tci: Tci(1)
                }
            )
            .is_err()
        );
        let mut macs = vec![0u8; 12];
        insert(
            &mut macs,
            Outer {
                tpid: EtherType::VLAN,
                tci: Tci(1),
            },
        )
        .unwrap();
        assert_eq!(macs.len(), 16);
    }
}
