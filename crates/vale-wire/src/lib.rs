//! Packet formats of the userspace VALE switch, in one place, after smoltcp's `wire`.
//!
//! Each header is a view over bytes: `ethernet::Frame<T>`, `vlan::Tag<T>`,
//! `ipv4::Packet<T>` and so on, with `T: AsRef<[u8]>` to read and
//! `T: AsRef<[u8]> + AsMut<[u8]>` to write. A view costs nothing: it is the buffer with
//! field accessors, and each field's byte range is a constant in the module's `field`.
//!
//! The panic contract (smoltcp's): `new_checked` checks that every accessor of the view
//! finds its bytes, and after it succeeds none of them panics. Use it for anything a peer
//! sent. `new_unchecked` is for buffers the caller sized itself (emitting a header), where
//! a short buffer is a bug and a panic says so.
//!
//! [`checksum`] is the one Internet checksum of the workspace (RFC 1071), with the
//! pseudo-headers of TCP and UDP over IPv4 and IPv6 and the incremental update of RFC 1624.
//! [`virtio_net`] is the header that ports with offloads carry in front of each frame.
#![forbid(unsafe_code)]

pub mod checksum;
pub mod ethernet;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod memif;
pub mod tcp;
pub mod udp;
pub mod virtio_net;
pub mod vlan;
pub mod vxlan;

pub use ethernet::EtherType;
pub use ip::IpProtocol;

/// A field's byte range within its header.
pub type Field = core::ops::Range<usize>;
/// The bytes from a header's end to the end of the buffer.
pub type Rest = core::ops::RangeFrom<usize>;

/// Why bytes could not be read as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before the header (or the options its length field announces).
    #[error("{header} header needs {need} bytes, the buffer has {len}")]
    Truncated {
        header: &'static str,
        len: usize,
        need: usize,
    },
    /// A field holds a value its format rules out.
    #[error("{header} {field} is {value:#x}; {want}")]
    BadField {
        header: &'static str,
        field: &'static str,
        value: u32,
        want: &'static str,
    },
}

/// `Ok` when `buf` holds `need` bytes of `header`.
pub(crate) fn check_len(header: &'static str, buf: &[u8], need: usize) -> Result<(), Error> {
    if buf.len() < need {
        return Err(Error::Truncated {
            header,
            len: buf.len(),
            need,
        });
    }
    Ok(())
}

pub(crate) fn u16_at(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}

pub(crate) fn u32_at(b: &[u8], f: Field) -> u32 {
    u32::from_be_bytes([b[f.start], b[f.start + 1], b[f.start + 2], b[f.start + 3]])
}

pub(crate) fn put_u16(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], f: Field, v: u32) {
    b[f].copy_from_slice(&v.to_be_bytes());
}
