//! The virtio-net header (virtio 1.0 §5.1.6, `struct virtio_net_hdr`) that ports with
//! offloads carry in front of each frame: netmap's `virt_hdr_len`, TAP devices with
//! `IFF_VNET_HDR`, packet sockets with `PACKET_VNET_HDR`, vhost-user.
//!
//! Little-endian, unlike everything else in this crate: flags u8, gso_type u8, hdr_len
//! u16, gso_size u16, csum_start u16, csum_offset u16, and in the 12-byte variant
//! (`VIRTIO_NET_F_MRG_RXBUF`, virtio 1.0) num_buffers u16.

pub mod field {
    use crate::Field;

    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Field = 2..4;
    pub const GSO_SIZE: Field = 4..6;
    pub const CSUM_START: Field = 6..8;
    pub const CSUM_OFFSET: Field = 8..10;
    /// Only in the 12-byte header.
    pub const NUM_BUFFERS: Field = 10..12;
}

/// The header without `num_buffers`.
pub const HEADER_LEN: usize = field::CSUM_OFFSET.end;
/// The header with `num_buffers`.
pub const HEADER_LEN_MRG: usize = field::NUM_BUFFERS.end;
/// Header lengths a port may carry (netmap accepts the same three).
pub const HDR_LENS: [u16; 3] = [0, HEADER_LEN as u16, HEADER_LEN_MRG as u16];

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum field holds the pseudo-header sum;
/// the sum from `csum_start` to the end is still to be added.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksums were verified already.
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
/// Or-ed into a TCP `gso_type`: the sender set ECN's CWR flag.
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the first 10 bytes (shorter input reads as no offload).
    pub fn parse(b: &[u8]) -> VnetHdr {
        if b.len() < HEADER_LEN {
            return VnetHdr::default();
        }
        let u = |f: crate::Field| u16::from_le_bytes([b[f.start], b[f.start + 1]]);
        VnetHdr {
            flags: b[field::FLAGS],
            gso_type: b[field::GSO_TYPE],
            hdr_len: u(field::HDR_LEN),
            gso_size: u(field::GSO_SIZE),
            csum_start: u(field::CSUM_START),
            csum_offset: u(field::CSUM_OFFSET),
        }
    }

    /// Appends a header of `len` bytes to `out` (10 or 12; `num_buffers` = 1 in the
    /// 12-byte one; anything past 12 is zeros).
    pub fn write(&self, out: &mut Vec<u8>, len: u16) {
        out.push(self.flags);
        out.push(self.gso_type);
        for v in [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if usize::from(len) >= HEADER_LEN_MRG {
            out.extend_from_slice(&1u16.to_le_bytes());
        }
        out.resize(
            out.len() + usize::from(len).saturating_sub(HEADER_LEN_MRG),
            0,
        );
    }

    /// No offload asked: the frame behind the header is complete as it is.
    pub fn is_plain(&self) -> bool {
        self.gso_type == GSO_NONE && self.flags & F_NEEDS_CSUM == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TSO over IPv4 at MSS 1448, checksum to finish from byte 34 (field at +16),
    /// 54 bytes of headers; then num_buffers 1.
    static HDR: [u8; 12] = [
        0x01, 0x01, // NEEDS_CSUM, TCPV4
        0x36, 0x00, // hdr_len 54
        0xa8, 0x05, // gso_size 1448
        0x22, 0x00, // csum_start 34
        0x10, 0x00, // csum_offset 16
        0x01, 0x00, // num_buffers 1
    ];

    fn tso() -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    #[test]
    fn parse_golden() {
        assert_eq!(VnetHdr::parse(&HDR), tso());
        assert_eq!(VnetHdr::parse(&HDR[..10]), tso());
        assert_eq!(
            VnetHdr::parse(&HDR[..9]),
            VnetHdr::default(),
            "short: no offload"
        );
        assert!(!tso().is_plain() && VnetHdr::default().is_plain());
    }

    #[test]
    fn write_golden_in_every_size() {
        // Appended after what the buffer already holds, which stays.
        for (len, want) in [(10u16, &HDR[..10]), (12, &HDR[..])] {
            let mut b = vec![0xa5];
            tso().write(&mut b, len);
            assert_eq!(b[0], 0xa5);
            assert_eq!(&b[1..], want, "{len}-byte header");
        }
        let mut b = Vec::new();
        tso().write(&mut b, 16);
        assert_eq!(&b[..12], &HDR[..]);
        assert_eq!(&b[12..], &[0; 4]);
        assert_eq!(HDR_LENS, [0, 10, 12]);
    }
}
