//! The virtio-net header that ports with offloads carry in front of each frame (netmap's
//! `virt_hdr_len`: TAP devices with `IFF_VNET_HDR`, packet sockets with
//! `PACKET_VNET_HDR`, later vhost-user), and what the switch does when a packet goes
//! from a port with a header to one without: it finishes the offloads in software, as
//! VALE's `bdg_mismatch_datapath` does: TCP segmentation (`gso_type` TCPv4/TCPv6) into
//! `gso_size` segments with their own IP and TCP headers and checksums, and checksum
//! completion (`NEEDS_CSUM`).
//!
//! Layout (virtio 1.0 `struct virtio_net_hdr`, little-endian): flags u8, gso_type u8,
//! hdr_len u16, gso_size u16, csum_start u16, csum_offset u16, then num_buffers u16 in the
//! 12-byte variant.

use thiserror::Error;

/// Header lengths a port may carry (netmap accepts the same three).
pub const HDR_LENS: [u16; 3] = [0, 10, 12];

pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_ECN: u8 = 0x80;
/// Most segments one packet may be cut into.
pub const MAX_SEGMENTS: usize = 256;

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
        if b.len() < 10 {
            return VnetHdr::default();
        }
        let u = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// Writes a header of `len` bytes (10 or 12; `num_buffers` = 1 in the 12-byte one).
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
        if len >= 12 {
            out.extend_from_slice(&1u16.to_le_bytes());
        }
        out.resize(out.len() + (len as usize).saturating_sub(12), 0);
    }

    pub fn is_plain(&self) -> bool {
        self.gso_type == GSO_NONE && self.flags & F_NEEDS_CSUM == 0
    }
}

/// Why a packet's offloads could not be finished (the packet is dropped and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OffloadError {
    #[error("checksum offsets outside the frame")]
    BadCsum,
    #[error("segmentation of an unsupported packet (gso_type {0:#x})")]
    Unsupported(u8),
    #[error("malformed headers for segmentation")]
    Malformed,
}

/// Ones' complement sum of `b` (big-endian 16-bit words) added to `sum`.
fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    if let [x] = chunks.remainder() {
        sum += (*x as u32) << 8;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum of `b`.
pub fn checksum(b: &[u8]) -> u16 {
    csum_fold(csum_add(0, b))
}

/// `NEEDS_CSUM`: the field at `csum_start + csum_offset` holds the pseudo-header sum;
/// sum from `csum_start` to the end and store the folded complement.
pub fn complete_csum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start + offset;
    if start >= frame.len() || at + 2 > frame.len() {
        return Err(OffloadError::BadCsum);
    }
    let mut c = csum_fold(csum_add(0, &frame[start..]));
    if c == 0 && offset == 6 {
        c = 0xffff; // UDP (its checksum sits at offset 6): a computed zero is sent as all ones
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Where the headers of an Ethernet/IP/TCP frame are.
struct Layers {
    l3: usize,
    l4: usize,
    payload: usize,
    v6: bool,
}

fn tcp_layers(f: &[u8]) -> Result<Layers, OffloadError> {
    let m = OffloadError::Malformed;
    let mut l3 = 14;
    let mut et = u16::from_be_bytes([*f.get(12).ok_or(m)?, *f.get(13).ok_or(m)?]);
    if et == 0x8100 || et == 0x88a8 {
        et = u16::from_be_bytes([*f.get(16).ok_or(m)?, *f.get(17).ok_or(m)?]);
        l3 = 18;
    }
    let (l4, proto, v6) = match et {
        0x0800 => {
            let ihl = (*f.get(l3).ok_or(m)? & 0x0f) as usize * 4;
            if ihl < 20 {
                return Err(m);
            }
            (l3 + ihl, *f.get(l3 + 9).ok_or(m)?, false)
        }
        0x86dd => (l3 + 40, *f.get(l3 + 6).ok_or(m)?, true),
        _ => return Err(m),
    };
    if proto != 6 {
        return Err(m);
    }
    let doff = (*f.get(l4 + 12).ok_or(m)? >> 4) as usize * 4;
    if doff < 20 || l4 + doff > f.len() {
        return Err(m);
    }
    Ok(Layers {
        l3,
        l4,
        payload: l4 + doff,
        v6,
    })
}

/// TCP/UDP checksum of a segment (`f`'s L4 part) with its pseudo-header.
fn l4_csum(f: &[u8], ly: &Layers, proto: u8) -> u16 {
    let l4len = f.len() - ly.l4;
    let mut sum = 0u32;
    if ly.v6 {
        sum = csum_add(sum, &f[ly.l3 + 8..ly.l3 + 40]);
    } else {
        sum = csum_add(sum, &f[ly.l3 + 12..ly.l3 + 20]);
    }
    sum += proto as u32;
    sum += l4len as u32 & 0xffff;
    sum += (l4len as u32) >> 16;
    csum_fold(csum_add(sum, &f[ly.l4..]))
}

/// Turns a frame that came with header `h` into plain frames (no header) and hands each
/// to `emit`: the frame itself (checksum completed if asked), or its TCP segments.
/// `work` is scratch space.
pub fn resolve(
    h: &VnetHdr,
    frame: &[u8],
    work: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<(), OffloadError> {
    let gso = h.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if h.flags & F_NEEDS_CSUM == 0 {
            emit(frame);
            return Ok(());
        }
        work.clear();
        work.extend_from_slice(frame);
        complete_csum(work, h.csum_start as usize, h.csum_offset as usize)?;
        emit(work);
        return Ok(());
    }
    if gso != GSO_TCPV4 && gso != GSO_TCPV6 {
        return Err(OffloadError::Unsupported(h.gso_type));
    }
    let ly = tcp_layers(frame)?;
    let mss = h.gso_size as usize;
    if mss == 0 {
        return Err(OffloadError::Malformed);
    }
    let data = &frame[ly.payload..];
    let hdrs = &frame[..ly.payload];
    let seq0 = u32::from_be_bytes([
        frame[ly.l4 + 4],
        frame[ly.l4 + 5],
        frame[ly.l4 + 6],
        frame[ly.l4 + 7],
    ]);
    let id0 = u16::from_be_bytes([frame[ly.l3 + 4], frame[ly.l3 + 5]]);
    let flags0 = frame[ly.l4 + 13];
    // One segment (a frame within the MSS) goes through the same path: its lengths and
    // checksums are made right.
    let n = data.len().div_ceil(mss).max(1);
    if n > MAX_SEGMENTS {
        // A 64 KiB packet cut at the smallest IPv4 MSS (536) is 123 segments; more is a
        // sender making the switch work for nothing.
        return Err(OffloadError::Malformed);
    }
    let chunks: Box<dyn Iterator<Item = &[u8]>> = if data.is_empty() {
        Box::new(std::iter::once(data))
    } else {
        Box::new(data.chunks(mss))
    };
    for (i, chunk) in chunks.enumerate() {
        work.clear();
        work.extend_from_slice(hdrs);
        work.extend_from_slice(chunk);
        let l3len = work.len() - ly.l3;
        if ly.v6 {
            work[ly.l3 + 4..ly.l3 + 6].copy_from_slice(&((l3len - 40) as u16).to_be_bytes());
        } else {
            work[ly.l3 + 2..ly.l3 + 4].copy_from_slice(&(l3len as u16).to_be_bytes());
            work[ly.l3 + 4..ly.l3 + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            work[ly.l3 + 10..ly.l3 + 12].copy_from_slice(&[0, 0]);
            let c = checksum(&work[ly.l3..ly.l4]);
            work[ly.l3 + 10..ly.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        work[ly.l4 + 4..ly.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        // FIN and PSH only on the last segment, CWR only on the first.
        let mut fl = flags0;
        if i + 1 < n {
            fl &= !0x09;
        }
        if i > 0 {
            fl &= !0x80;
        }
        work[ly.l4 + 13] = fl;
        work[ly.l4 + 16..ly.l4 + 18].copy_from_slice(&[0, 0]);
        let c = l4_csum(work, &ly, 6);
        work[ly.l4 + 16..ly.l4 + 18].copy_from_slice(&c.to_be_bytes());
        emit(work);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame with `payload` bytes, checksums correct.
    fn tcp4(payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 2..14 + 4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[14 + 4..14 + 6].copy_from_slice(&0x1234u16.to_be_bytes());
        f[14 + 8] = 64;
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
        let t = 34;
        f[t..t + 2].copy_from_slice(&5001u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&1000u32.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = flags;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let ly = tcp_layers(&f).unwrap();
        let c = l4_csum(&f, &ly, 6);
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn valid(f: &[u8]) -> bool {
        let ly = tcp_layers(f).unwrap();
        checksum(&f[ly.l3..ly.l4]) == 0 && l4_csum(f, &ly, 6) == 0
    }

    #[test]
    fn header_round_trips_in_both_sizes() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        for len in [10u16, 12] {
            let mut b = Vec::new();
            h.write(&mut b, len);
            assert_eq!(b.len(), len as usize);
            assert_eq!(VnetHdr::parse(&b), h);
        }
    }

    #[test]
    fn tso_cuts_a_super_frame_into_valid_segments() {
        let big = tcp4(4000, 0x18); // PSH|ACK
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut segs = Vec::new();
        resolve(&h, &big, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
        assert_eq!(segs.len(), 3);
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(valid(s), "segment {i} checksums");
            let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
            assert_eq!(seq, 1000 + (i * 1448) as u32);
            assert_eq!(u16::from_be_bytes([s[16], s[17]]) as usize, s.len() - 14);
            assert_eq!(u16::from_be_bytes([s[18], s[19]]), 0x1234 + i as u16);
            assert_eq!(s[47] & 0x08 != 0, i == 2, "PSH only on the last");
            data.extend_from_slice(&s[54..]);
        }
        assert_eq!(data, big[54..].to_vec(), "payload preserved in order");
    }

    #[test]
    fn needs_csum_is_completed_from_the_pseudo_header_seed() {
        let mut f = tcp4(100, 0x10);
        let ly = tcp_layers(&f).unwrap();
        // What a sender with checksum offload hands over: the pseudo-header sum only.
        let mut pseudo = 0u32;
        pseudo = csum_add(pseudo, &f[26..34]);
        pseudo += 6 + (f.len() - ly.l4) as u32;
        let seed = !csum_fold(pseudo);
        f[50..52].copy_from_slice(&seed.to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        let mut out = Vec::new();
        resolve(&h, &f, &mut Vec::new(), |s| out = s.to_vec()).unwrap();
        assert!(valid(&out));
        let bad = VnetHdr {
            csum_start: 9999,
            ..h
        };
        assert_eq!(
            resolve(&bad, &f, &mut Vec::new(), |_| {}),
            Err(OffloadError::BadCsum)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6,
            hdr_len: 0,
            gso_size: 1,
            csum_start: 0,
            csum_offset: 0,
        };
        for len in 0..120 {
            let f = vec![0x86u8; len];
            let _ = resolve(&h, &f, &mut Vec::new(), |_| {});
            let _ = resolve(
                &VnetHdr {
                    gso_type: GSO_TCPV4,
                    gso_size: 7,
                    ..h
                },
                &f,
                &mut Vec::new(),
                |_| {},
            );
        }
    }
}
