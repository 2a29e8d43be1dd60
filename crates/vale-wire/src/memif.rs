//! memif, the shared-memory packet interface of DPDK and FD.io VPP, protocol version 2.0:
//! the control messages exchanged on its unix socket, and the layout of its rings and
//! descriptors in the shared regions.
//!
//! Every control message is exactly [`MSG_LEN`] (128) bytes, packed and little-endian
//! (memif runs between processes of one host), its type a `u16` at offset 0; peers
//! disconnect on any other length. The client (DPDK's and VPP's default role) owns all
//! memory: it sends the regions (each with its memfd in `SCM_RIGHTS`) and the rings
//! placed in them, in both directions: C2S (client to server) and S2C. The server reads
//! C2S rings and fills the buffers the client posted on S2C rings.
//!
//! ```text
//! server                      client
//!   HELLO (limits, versions) ->
//!                           <- INIT (version, id, mode, secret, name)
//!   ACK                      ->
//!                           <- ADD_REGION index size   (+ fd), once per region
//!   ACK                      ->
//!                           <- ADD_RING flags index region offset log2 (+ eventfd)
//!   ACK                      ->
//!                           <- CONNECT if_name
//!   CONNECTED if_name        ->
//!   DISCONNECT code reason  <-> (either side, at any time)
//! ```
//!
//! DPDK's client waits for each ACK; VPP's sends everything at once. Decoding here checks
//! lengths and known types only: what a field's value means for a connection (a region
//! index out of order, a ring outside its region) is the caller's to judge.

use crate::Error;

/// Every message's length.
pub const MSG_LEN: usize = 128;
/// The one protocol version this module speaks: 2.0, as `major << 8 | minor`.
pub const VERSION: u16 = 0x0200;
/// The cookie at the start of every ring.
pub const COOKIE: u32 = 0x03E3_1F20;
/// Application and interface names: NUL-padded, at most 32 bytes.
pub const NAME_LEN: usize = 32;
/// The optional secret: NUL-terminated unless it is 24 bytes long.
pub const SECRET_LEN: usize = 24;
/// A disconnect reason: NUL-padded, at most 96 bytes.
pub const REASON_LEN: usize = 96;
/// Largest ring, as log2 of its slots, that DPDK and VPP advertise (16384 slots).
pub const MAX_LOG2_RING_SIZE: u8 = 14;

/// Interface mode 0, the only one valed serves (DPDK supports no other; 1 is IP, 2 is
/// punt/inject).
pub const MODE_ETHERNET: u8 = 0;
/// ADD_RING flag: the ring carries frames from client to server.
pub const RING_FLAG_C2S: u16 = 1;
/// Ring flag: the reader polls; the writer need not signal its eventfd.
pub const RING_FLAG_MASK_INT: u16 = 1;
/// Descriptor flag: the frame goes on in the next descriptor.
pub const DESC_FLAG_NEXT: u16 = 1;

/// Message types (`memif_msg_type_t`).
pub mod kind {
    pub const NONE: u16 = 0;
    pub const ACK: u16 = 1;
    pub const HELLO: u16 = 2;
    pub const INIT: u16 = 3;
    pub const ADD_REGION: u16 = 4;
    pub const ADD_RING: u16 = 5;
    pub const CONNECT: u16 = 6;
    pub const CONNECTED: u16 = 7;
    pub const DISCONNECT: u16 = 8;
}

/// Byte offsets within a message (the type at 0, then the body).
pub mod field {
    use crate::Field;

    pub const TYPE: Field = 0..2;

    pub const HELLO_NAME: Field = 2..34;
    pub const HELLO_MIN_VERSION: Field = 34..36;
    pub const HELLO_MAX_VERSION: Field = 36..38;
    pub const HELLO_MAX_REGION: Field = 38..40;
    pub const HELLO_MAX_C2S_RING: Field = 40..42;
    pub const HELLO_MAX_S2C_RING: Field = 42..44;
    pub const HELLO_MAX_LOG2_RING_SIZE: usize = 44;

    pub const INIT_VERSION: Field = 2..4;
    pub const INIT_ID: Field = 4..8;
    pub const INIT_MODE: usize = 8;
    pub const INIT_SECRET: Field = 9..33;
    pub const INIT_NAME: Field = 33..65;

    pub const REGION_INDEX: Field = 2..4;
    pub const REGION_SIZE: Field = 4..12;

    pub const RING_FLAGS: Field = 2..4;
    pub const RING_INDEX: Field = 4..6;
    pub const RING_REGION: Field = 6..8;
    pub const RING_OFFSET: Field = 8..12;
    pub const RING_LOG2_SIZE: usize = 12;
    pub const RING_PRIVATE_HDR_SIZE: Field = 13..15;

    pub const IF_NAME: Field = 2..34;

    pub const DISCONNECT_CODE: Field = 2..6;
    pub const DISCONNECT_REASON: Field = 6..102;
}

/// A NUL-padded byte string of at most `N` bytes, as memif carries names and secrets.
/// Bytes after the first NUL are dropped on decoding; encoding cuts at `N`.
#[derive(Clone, PartialEq, Eq)]
pub struct FixedStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> FixedStr<N> {
    /// `s`, cut to `N` bytes (at a byte, not a character, boundary: memif's strings
    /// are bytes).
    pub fn new(s: &[u8]) -> FixedStr<N> {
        let s = &s[..s.len().min(N)];
        let s = &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())];
        let mut bytes = [0u8; N];
        bytes[..s.len()].copy_from_slice(s);
        FixedStr {
            len: s.len() as u8,
            bytes,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// For logs: invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl<const N: usize> core::fmt::Debug for FixedStr<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

/// The server's greeting: what it accepts. `max_*` are highest *indices* (a client makes
/// `max + 1` rings at most), not counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub name: FixedStr<NAME_LEN>,
    pub min_version: u16,
    pub max_version: u16,
    pub max_region: u16,
    pub max_c2s_ring: u16,
    pub max_s2c_ring: u16,
    pub max_log2_ring_size: u8,
}

/// The client's request for interface `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    pub version: u16,
    pub id: u32,
    pub mode: u8,
    pub secret: FixedStr<SECRET_LEN>,
    pub name: FixedStr<NAME_LEN>,
}

/// A shared-memory region; its memfd comes with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddRegion {
    pub index: u16,
    pub size: u64,
}

/// A ring, placed at `offset` in region `region`, of `1 << log2_size` descriptors; its
/// eventfd comes with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddRing {
    pub flags: u16,
    pub index: u16,
    pub region: u16,
    pub offset: u32,
    pub log2_size: u8,
    /// Bytes of private metadata per slot; DPDK and VPP send 0 and refuse others.
    pub private_hdr_size: u16,
}

impl AddRing {
    /// The ring carries frames from client to server.
    pub fn is_c2s(&self) -> bool {
        self.flags & RING_FLAG_C2S != 0
    }
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Ack,
    Hello(Hello),
    Init(Init),
    AddRegion(AddRegion),
    AddRing(AddRing),
    Connect {
        if_name: FixedStr<NAME_LEN>,
    },
    Connected {
        if_name: FixedStr<NAME_LEN>,
    },
    Disconnect {
        code: u32,
        reason: FixedStr<REASON_LEN>,
    },
}

fn le16(b: &[u8], f: crate::Field) -> u16 {
    u16::from_le_bytes([b[f.start], b[f.start + 1]])
}

fn le32(b: &[u8], f: crate::Field) -> u32 {
    u32::from_le_bytes(b[f].try_into().unwrap())
}

fn le64(b: &[u8], f: crate::Field) -> u64 {
    u64::from_le_bytes(b[f].try_into().unwrap())
}

fn put_le(b: &mut [u8], f: crate::Field, v: &[u8]) {
    b[f].copy_from_slice(v);
}

impl Msg {
    /// The message in `buf`, which must be exactly [`MSG_LEN`] bytes (what one
    /// SOCK_SEQPACKET datagram holds). Type `NONE` and unknown types are errors.
    pub fn decode(buf: &[u8]) -> Result<Msg, Error> {
        if buf.len() != MSG_LEN {
            return Err(Error::BadField {
                header: "memif",
                field: "message size",
                value: buf.len() as u32,
                want: "every memif message is 128 bytes",
            });
        }
        let b = buf;
        Ok(match le16(b, field::TYPE) {
            kind::ACK => Msg::Ack,
            kind::HELLO => Msg::Hello(Hello {
                name: FixedStr::new(&b[field::HELLO_NAME]),
                min_version: le16(b, field::HELLO_MIN_VERSION),
                max_version: le16(b, field::HELLO_MAX_VERSION),
                max_region: le16(b, field::HELLO_MAX_REGION),
                max_c2s_ring: le16(b, field::HELLO_MAX_C2S_RING),
                max_s2c_ring: le16(b, field::HELLO_MAX_S2C_RING),
                max_log2_ring_size: b[field::HELLO_MAX_LOG2_RING_SIZE],
            }),
            kind::INIT => Msg::Init(Init {
                version: le16(b, field::INIT_VERSION),
                id: le32(b, field::INIT_ID),
                mode: b[field::INIT_MODE],
                secret: FixedStr::new(&b[field::INIT_SECRET]),
                name: FixedStr::new(&b[field::INIT_NAME]),
            }),
            kind::ADD_REGION => Msg::AddRegion(AddRegion {
                index: le16(b, field::REGION_INDEX),
                size: le64(b, field::REGION_SIZE),
            }),
            kind::ADD_RING => Msg::AddRing(AddRing {
                flags: le16(b, field::RING_FLAGS),
                index: le16(b, field::RING_INDEX),
                region: le16(b, field::RING_REGION),
                offset: le32(b, field::RING_OFFSET),
                log2_size: b[field::RING_LOG2_SIZE],
                private_hdr_size: le16(b, field::RING_PRIVATE_HDR_SIZE),
            }),
            kind::CONNECT => Msg::Connect {
                if_name: FixedStr::new(&b[field::IF_NAME]),
            },
            kind::CONNECTED => Msg::Connected {
                if_name: FixedStr::new(&b[field::IF_NAME]),
            },
            kind::DISCONNECT => Msg::Disconnect {
                code: le32(b, field::DISCONNECT_CODE),
                reason: FixedStr::new(&b[field::DISCONNECT_REASON]),
            },
            t => {
                return Err(Error::BadField {
                    header: "memif",
                    field: "message type",
                    value: u32::from(t),
                    want: "ACK, HELLO, INIT, ADD_REGION, ADD_RING, CONNECT, CONNECTED or DISCONNECT (1-8)",
                });
            }
        })
    }

    /// The message's type number.
    pub fn kind(&self) -> u16 {
        match self {
            Msg::Ack => kind::ACK,
            Msg::Hello(_) => kind::HELLO,
            Msg::Init(_) => kind::INIT,
            Msg::AddRegion(_) => kind::ADD_REGION,
            Msg::AddRing(_) => kind::ADD_RING,
            Msg::Connect { .. } => kind::CONNECT,
            Msg::Connected { .. } => kind::CONNECTED,
            Msg::Disconnect { .. } => kind::DISCONNECT,
        }
    }

    /// The 128 bytes on the wire.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        put_le(&mut b, field::TYPE, &self.kind().to_le_bytes());
        match self {
            Msg::Ack => {}
            Msg::Hello(h) => {
                put_le(&mut b, field::HELLO_NAME, &h.name.bytes);
                put_le(
                    &mut b,
                    field::HELLO_MIN_VERSION,
                    &h.min_version.to_le_bytes(),
                );
                put_le(
                    &mut b,
                    field::HELLO_MAX_VERSION,
                    &h.max_version.to_le_bytes(),
                );
                put_le(&mut b, field::HELLO_MAX_REGION, &h.max_region.to_le_bytes());
                put_le(
                    &mut b,
                    field::HELLO_MAX_C2S_RING,
                    &h.max_c2s_ring.to_le_bytes(),
                );
                put_le(
                    &mut b,
                    field::HELLO_MAX_S2C_RING,
                    &h.max_s2c_ring.to_le_bytes(),
                );
                b[field::HELLO_MAX_LOG2_RING_SIZE] = h.max_log2_ring_size;
            }
            Msg::Init(i) => {
                put_le(&mut b, field::INIT_VERSION, &i.version.to_le_bytes());
                put_le(&mut b, field::INIT_ID, &i.id.to_le_bytes());
                b[field::INIT_MODE] = i.mode;
                put_le(&mut b, field::INIT_SECRET, &i.secret.bytes);
                put_le(&mut b, field::INIT_NAME, &i.name.bytes);
            }
            Msg::AddRegion(r) => {
                put_le(&mut b, field::REGION_INDEX, &r.index.to_le_bytes());
                put_le(&mut b, field::REGION_SIZE, &r.size.to_le_bytes());
            }
            Msg::AddRing(r) => {
                put_le(&mut b, field::RING_FLAGS, &r.flags.to_le_bytes());
                put_le(&mut b, field::RING_INDEX, &r.index.to_le_bytes());
                put_le(&mut b, field::RING_REGION, &r.region.to_le_bytes());
                put_le(&mut b, field::RING_OFFSET, &r.offset.to_le_bytes());
                b[field::RING_LOG2_SIZE] = r.log2_size;
                put_le(
                    &mut b,
                    field::RING_PRIVATE_HDR_SIZE,
                    &r.private_hdr_size.to_le_bytes(),
                );
            }
            Msg::Connect { if_name } | Msg::Connected { if_name } => {
                put_le(&mut b, field::IF_NAME, &if_name.bytes);
            }
            Msg::Disconnect { code, reason } => {
                put_le(&mut b, field::DISCONNECT_CODE, &code.to_le_bytes());
                put_le(&mut b, field::DISCONNECT_REASON, &reason.bytes);
            }
        }
        b
    }

    /// A DISCONNECT with `reason` (cut to 96 bytes), code 0 as DPDK and VPP send it.
    pub fn disconnect(reason: &str) -> Msg {
        Msg::Disconnect {
            code: 0,
            reason: FixedStr::new(reason.as_bytes()),
        }
    }
}

/// Where things are in a ring (`memif_ring_t`) whose writer uses `cacheline`-byte cache
/// lines (64 on x86; 128 for libmemif on some ARM builds): cookie, flags and head on the
/// first line, tail alone on the second, descriptors from the third.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    pub cacheline: usize,
}

impl RingLayout {
    /// x86's layout, which DPDK and VPP use on this architecture.
    pub const X86: RingLayout = RingLayout { cacheline: 64 };

    pub const COOKIE: usize = 0;
    pub const FLAGS: usize = 4;
    pub const HEAD: usize = 6;

    pub const fn tail(&self) -> usize {
        self.cacheline
    }

    pub const fn descriptors(&self) -> usize {
        2 * self.cacheline
    }

    /// Bytes of a ring of `1 << log2_size` descriptors, header included.
    pub const fn ring_bytes(&self, log2_size: u8) -> u64 {
        self.descriptors() as u64 + ((DESC_LEN as u64) << log2_size)
    }
}

/// A descriptor's length in the ring.
pub const DESC_LEN: usize = 16;

/// One buffer descriptor (`memif_desc_t`): 16 bytes, little-endian.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    pub flags: u16,
    pub region: u16,
    pub length: u32,
    pub offset: u32,
    pub metadata: u32,
}

impl Desc {
    #[inline]
    pub fn decode(b: &[u8; DESC_LEN]) -> Desc {
        // Two words, split: no bounds checks and no byte-at-a-time work (the data plane
        // decodes a descriptor per frame).
        let (lo, hi) = (
            u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        );
        Desc {
            flags: lo as u16,
            region: (lo >> 16) as u16,
            length: (lo >> 32) as u32,
            offset: hi as u32,
            metadata: (hi >> 32) as u32,
        }
    }

    /// The first 8 bytes of the encoding: flags, region and length (what a sender
    /// writes back into a buffer the receiver posted).
    #[inline]
    pub fn encode_head(&self) -> [u8; 8] {
        (u64::from(self.flags) | u64::from(self.region) << 16 | u64::from(self.length) << 32)
            .to_le_bytes()
    }

    #[inline]
    pub fn encode(&self) -> [u8; DESC_LEN] {
        let mut b = [0u8; DESC_LEN];
        put_le(&mut b, 0..2, &self.flags.to_le_bytes());
        put_le(&mut b, 2..4, &self.region.to_le_bytes());
        put_le(&mut b, 4..8, &self.length.to_le_bytes());
        put_le(&mut b, 8..12, &self.offset.to_le_bytes());
        put_le(&mut b, 12..16, &self.metadata.to_le_bytes());
        b
    }

    /// The frame goes on in the next descriptor.
    #[inline]
    pub fn has_next(&self) -> bool {
        self.flags & DESC_FLAG_NEXT != 0
    }

    /// The byte range this descriptor names in a region of `region_len` bytes, or `None`
    /// when it does not lie inside it. Peers are not trusted: check every descriptor on
    /// every read.
    #[inline]
    pub fn bytes_in(&self, region_len: u64) -> Option<core::ops::Range<usize>> {
        let start = u64::from(self.offset);
        let end = start + u64::from(self.length);
        (end <= region_len).then_some(start as usize..end as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_and_their_head_is_the_first_8_bytes() {
        let d = Desc {
            flags: DESC_FLAG_NEXT,
            region: 0x0203,
            length: 0x0405_0607,
            offset: 0x0809_0a0b,
            metadata: 0x0c0d_0e0f,
        };
        let b = d.encode();
        assert_eq!(
            b,
            [1, 0, 3, 2, 7, 6, 5, 4, 0xb, 0xa, 9, 8, 0xf, 0xe, 0xd, 0xc]
        );
        assert_eq!(Desc::decode(&b), d);
        assert_eq!(d.encode_head(), b[..8]);
    }

    /// INIT as DPDK 22.11's client sends it (l2-peers.md §1.5), built byte by byte from
    /// the offsets of `memif_msg_init_t`.
    fn dpdk_init() -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[0] = 3;
        b[2..4].copy_from_slice(&0x0200u16.to_le_bytes());
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        b[8] = 0;
        b[9..12].copy_from_slice(b"abc");
        b[33..46].copy_from_slice(b"DPDK 22.11.11");
        b
    }

    #[test]
    fn init_decodes_at_dpdks_offsets_and_encodes_back_byte_for_byte() {
        let wire = dpdk_init();
        let m = Msg::decode(&wire).unwrap();
        let Msg::Init(i) = &m else { panic!("{m:?}") };
        assert_eq!((i.version, i.id, i.mode), (VERSION, 7, MODE_ETHERNET));
        assert_eq!(i.secret.as_bytes(), b"abc");
        assert_eq!(i.name.as_bytes(), b"DPDK 22.11.11");
        assert_eq!(m.encode(), wire);
    }

    #[test]
    fn every_message_round_trips() {
        let name = FixedStr::new(b"net_memif0");
        let all = [
            Msg::Ack,
            Msg::Hello(Hello {
                name: FixedStr::new(b"valed"),
                min_version: VERSION,
                max_version: VERSION,
                max_region: 255,
                max_c2s_ring: 255,
                max_s2c_ring: 255,
                max_log2_ring_size: 14,
            }),
            Msg::AddRegion(AddRegion {
                index: 1,
                size: 536_870_912,
            }),
            Msg::AddRing(AddRing {
                flags: RING_FLAG_C2S,
                index: 0,
                region: 0,
                offset: 16_512,
                log2_size: 10,
                private_hdr_size: 0,
            }),
            Msg::Connect {
                if_name: name.clone(),
            },
            Msg::Connected { if_name: name },
            Msg::disconnect("ID not found"),
        ];
        for m in all {
            let wire = m.encode();
            assert_eq!(u16::from_le_bytes([wire[0], wire[1]]), m.kind());
            assert_eq!(Msg::decode(&wire).unwrap(), m);
        }
    }

    #[test]
    fn add_region_size_is_a_u64_at_offset_4() {
        let m = Msg::AddRegion(AddRegion {
            index: 2,
            size: 0x0102_0304_0506_0708,
        });
        let w = m.encode();
        assert_eq!(&w[2..4], &[2, 0]);
        assert_eq!(&w[4..12], &[8, 7, 6, 5, 4, 3, 2, 1]);
    }

    #[test]
    fn wrong_sizes_and_types_are_errors_that_say_why() {
        let e = Msg::decode(&[0u8; 127]).unwrap_err();
        assert!(e.to_string().contains("128 bytes"), "{e}");
        assert!(Msg::decode(&[0u8; 129]).is_err());
        assert!(Msg::decode(&[]).is_err());
        let e = Msg::decode(&[0u8; 128]).unwrap_err();
        assert!(e.to_string().contains("message type is 0x0"), "{e}");
        let mut b = [0u8; 128];
        b[0] = 9;
        assert!(Msg::decode(&b).is_err());
    }

    #[test]
    fn names_stop_at_the_first_nul_and_are_cut_to_their_field() {
        let s: FixedStr<4> = FixedStr::new(b"ab\0cd");
        assert_eq!(s.as_bytes(), b"ab");
        let s: FixedStr<4> = FixedStr::new(b"abcdef");
        assert_eq!(s.as_bytes(), b"abcd");
        let secret: FixedStr<SECRET_LEN> = FixedStr::new(&[b'x'; 24]);
        assert_eq!(secret.as_bytes().len(), 24, "a 24-byte secret needs no NUL");
        let m = Msg::disconnect(&"why".repeat(50));
        let Msg::Disconnect { reason, .. } = Msg::decode(&m.encode()).unwrap() else {
            panic!()
        };
        assert_eq!(reason.as_bytes().len(), REASON_LEN);
    }

    #[test]
    fn ring_layout_matches_a_dpdk_copy_mode_region() {
        // l2-peers.md §1.5: 1 C2S + 1 S2C ring of 1024, 2048-byte buffers: the S2C ring
        // at 16,512 and the buffers from 33,024, region 4,227,328 bytes.
        let l = RingLayout::X86;
        assert_eq!(l.ring_bytes(10), 16_512);
        assert_eq!(2 * l.ring_bytes(10), 33_024);
        assert_eq!(2 * l.ring_bytes(10) + 2048 * 2048, 4_227_328);
        assert_eq!((l.tail(), l.descriptors()), (64, 128));
        assert_eq!(RingLayout { cacheline: 128 }.ring_bytes(0), 256 + 16);
    }

    #[test]
    fn descriptors_round_trip_and_are_bounds_checked() {
        let d = Desc {
            flags: DESC_FLAG_NEXT,
            region: 1,
            length: 1024,
            offset: 4096,
            metadata: 0,
        };
        assert_eq!(Desc::decode(&d.encode()), d);
        assert!(d.has_next());
        assert_eq!(d.bytes_in(5120), Some(4096..5120));
        assert_eq!(d.bytes_in(5119), None);
        let huge = Desc {
            offset: u32::MAX,
            length: u32::MAX,
            ..d
        };
        let end = 2 * u64::from(u32::MAX);
        assert_eq!(huge.bytes_in(end), Some(u32::MAX as usize..end as usize));
        assert_eq!(huge.bytes_in(1 << 20), None);
    }
}
