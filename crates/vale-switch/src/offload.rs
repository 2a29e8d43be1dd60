//! What the switch does when a packet goes from a port with a virtio-net header (netmap's
//! `virt_hdr_len`: TAP devices with `IFF_VNET_HDR`, packet sockets with
//! `PACKET_VNET_HDR`, later vhost-user) to one without: it finishes the offloads in
//! software, as VALE's `bdg_mismatch_datapath` does: TCP segmentation (`gso_type`
//! TCPv4/TCPv6) into `gso_size` segments with their own IP and TCP headers and
//! checksums, and checksum completion (`NEEDS_CSUM`).
//!
//! The header itself and the packet formats live in `vale-wire`; the names below are
//! re-exported so that `offload::VnetHdr`, `offload::checksum` and the flag constants
//! stay where the engine and valed look for them.

use thiserror::Error;
use vale_wire::tcp::flags;
use vale_wire::{EtherType, IpProtocol, checksum, ethernet, ipv4, ipv6, tcp, udp, vlan};

pub use vale_wire::checksum::of as checksum;
pub use vale_wire::virtio_net::{
    F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, HDR_LENS, VnetHdr,
};

/// Most segments one packet may be cut into.
pub const MAX_SEGMENTS: usize = 256;

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

/// `NEEDS_CSUM`: the field at `csum_start + csum_offset` holds the pseudo-header sum;
/// sum from `csum_start` to the end and store the folded complement.
pub fn complete_csum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let at = start + offset;
    if start >= frame.len() || at + 2 > frame.len() {
        return Err(OffloadError::BadCsum);
    }
    let mut c = checksum::fold(checksum::sum(0, &frame[start..]));
    if c == 0 && offset == udp::field::CHECKSUM.start {
        c = 0xffff; // UDP: a computed zero is sent as all ones (zero means "none")
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

/// Most tags in front of the IP header of a frame to segment: QinQ's S-tag and C-tag
/// (a QinQ super-frame from an attached interface has both: valed puts back the outer
/// tag the kernel takes out).
const MAX_TAGS: usize = 2;

/// The layers of a TCP frame, up to [`MAX_TAGS`] 802.1Q/ad tags allowed. The checked
/// views make sure every header, options included, lies inside the frame, so `resolve`
/// may index them.
fn tcp_layers(f: &[u8]) -> Result<Layers, OffloadError> {
    let m = |_| OffloadError::Malformed;
    let eth = ethernet::Frame::new_checked(f).map_err(m)?;
    let (mut l3, mut et) = (ethernet::HEADER_LEN, eth.ethertype());
    for _ in 0..MAX_TAGS {
        if !et.is_vlan() {
            break;
        }
        et = vlan::Tag::new_checked(&f[l3..]).map_err(m)?.ethertype();
        l3 += vlan::HEADER_LEN;
    }
    let (l4, proto, v6) = match et {
        EtherType::IPV4 => {
            let ip = ipv4::Packet::new_checked(&f[l3..]).map_err(m)?;
            (l3 + ip.header_len(), ip.protocol(), false)
        }
        EtherType::IPV6 => {
            let ip = ipv6::Packet::new_checked(&f[l3..]).map_err(m)?;
            (l3 + ipv6::HEADER_LEN, ip.next_header(), true)
        }
        _ => return Err(OffloadError::Malformed),
    };
    if proto != IpProtocol::TCP {
        return Err(OffloadError::Malformed);
    }
    let seg = tcp::Packet::new_checked(&f[l4..]).map_err(m)?;
    Ok(Layers {
        l3,
        l4,
        payload: l4 + seg.header_len(),
        v6,
    })
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
    let seg0 = tcp::Packet::new_unchecked(&frame[ly.l4..]);
    let (seq0, flags0) = (seg0.seq_number(), seg0.flags());
    let id0 = ipv4::Packet::new_unchecked(&frame[ly.l3..]).ident();
    // One segment (a frame within the MSS) goes through the same path: its lengths and
    // checksums are made right.
    let n = data.len().div_ceil(mss).max(1);
    if n > MAX_SEGMENTS {
        // A 64 KiB packet cut at the smallest IPv4 MSS (536) is 123 segments; more is a
        // sender making the switch work for nothing.
        return Err(OffloadError::Malformed);
    }
    for i in 0..n {
        let chunk = &data[(i * mss).min(data.len())..((i + 1) * mss).min(data.len())];
        work.clear();
        work.extend_from_slice(hdrs);
        work.extend_from_slice(chunk);
        let (net, seg) = work.split_at_mut(ly.l4);
        let (net, seg_len) = (&mut net[ly.l3..], seg.len());
        let l3len = net.len() + seg_len;
        let pseudo = if ly.v6 {
            let mut ip = ipv6::Packet::new_unchecked(net);
            ip.set_payload_len((l3len - ipv6::HEADER_LEN) as u16);
            ip.pseudo_sum(seg_len as u32)
        } else {
            let mut ip = ipv4::Packet::new_unchecked(net);
            ip.set_total_len(l3len as u16);
            ip.set_ident(id0.wrapping_add(i as u16));
            ip.fill_checksum();
            ip.pseudo_sum(seg_len as u32)
        };
        let mut seg = tcp::Packet::new_unchecked(seg);
        seg.set_seq_number(seq0.wrapping_add((i * mss) as u32));
        // FIN and PSH only on the last segment, CWR only on the first.
        let mut fl = flags0;
        if i + 1 < n {
            fl &= !(flags::FIN | flags::PSH);
        }
        if i > 0 {
            fl &= !flags::CWR;
        }
        seg.set_flags(fl);
        seg.fill_checksum(pseudo);
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
        let c = l4_csum(&f, &ly);
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// The TCP checksum over a segment and its pseudo-header: 0 when valid.
    fn l4_csum(f: &[u8], ly: &Layers) -> u16 {
        let len = (f.len() - ly.l4) as u32;
        let pseudo = if ly.v6 {
            ipv6::Packet::new_unchecked(&f[ly.l3..]).pseudo_sum(len)
        } else {
            ipv4::Packet::new_unchecked(&f[ly.l3..]).pseudo_sum(len)
        };
        checksum::fold(checksum::sum(pseudo, &f[ly.l4..]))
    }

    fn valid(f: &[u8]) -> bool {
        let ly = tcp_layers(f).unwrap();
        checksum(&f[ly.l3..ly.l4]) == 0 && l4_csum(f, &ly) == 0
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

    /// `f` with `tags` (TPID, TCI; outermost first) after its addresses.
    fn tagged(f: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
        let mut t = f[..12].to_vec();
        for (tpid, tci) in tags {
            t.extend_from_slice(&tpid.to_be_bytes());
            t.extend_from_slice(&tci.to_be_bytes());
        }
        t.extend_from_slice(&f[12..]);
        t
    }

    #[test]
    fn tso_keeps_one_or_two_tags_on_every_segment_and_refuses_three() {
        let plain = tcp4(3000, 0x18);
        let h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1448,
            ..Default::default()
        };
        let c_tag = (0x8100, 0x600a);
        let s_tag = (0x88a8, 100);
        for tags in [&[c_tag][..], &[s_tag, c_tag]] {
            let big = tagged(&plain, tags);
            let hl = 12 + 4 * tags.len();
            let mut segs = Vec::new();
            resolve(&h, &big, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
            assert_eq!(segs.len(), 3, "{} tags", tags.len());
            let mut data = Vec::new();
            for s in &segs {
                assert_eq!(s[..hl], big[..hl], "addresses and tags");
                assert!(valid(s));
                data.extend_from_slice(&s[hl + 42..]);
            }
            assert_eq!(data, plain[54..]);
        }
        let three = tagged(&plain, &[s_tag, s_tag, c_tag]);
        assert_eq!(
            resolve(&h, &three, &mut Vec::new(), |_| {}),
            Err(OffloadError::Malformed)
        );
    }

    #[test]
    fn needs_csum_is_completed_from_the_pseudo_header_seed() {
        let mut f = tcp4(100, 0x10);
        let ly = tcp_layers(&f).unwrap();
        // What a sender with checksum offload hands over: the pseudo-header sum only.
        let pseudo = checksum::sum(0, &f[26..34]) + 6 + (f.len() - ly.l4) as u32;
        let seed = !checksum::fold(pseudo);
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
