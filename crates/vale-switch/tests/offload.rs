//! The software offloads against arbitrary input: nothing a port with a virtio-net header
//! sends can make the switch panic, and well-formed TCP super-frames always come out as
//! valid segments that carry the same bytes.

use proptest::prelude::*;
use vale_switch::offload::{self, VnetHdr};

fn tcp(v6: bool, payload: &[u8], flags: u8) -> (Vec<u8>, usize) {
    let (l3len, et) = if v6 { (40, 0x86ddu16) } else { (20, 0x0800) };
    let l4 = 14 + l3len;
    let mut f = vec![0u8; l4 + 20];
    f[12..14].copy_from_slice(&et.to_be_bytes());
    if v6 {
        f[14] = 0x60;
        f[14 + 6] = 6;
        f[14 + 7] = 64;
        f[14 + 8 + 15] = 1;
        f[14 + 24 + 15] = 2;
    } else {
        f[14] = 0x45;
        f[14 + 8] = 64;
        f[14 + 9] = 6;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
    }
    f[l4 + 4..l4 + 8].copy_from_slice(&0xfffff000u32.to_be_bytes()); // wraps
    f[l4 + 12] = 5 << 4;
    f[l4 + 13] = flags;
    f.extend_from_slice(payload);
    (f, l4)
}

/// TCP checksum of a segment, pseudo-header included: 0 when valid.
fn tcp_ok(s: &[u8], v6: bool, l4: usize) -> bool {
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&s[14 + 8..14 + 40]);
    } else {
        p.extend_from_slice(&s[14 + 12..14 + 20]);
    }
    let len = (s.len() - l4) as u32;
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 6]);
    p.extend_from_slice(&s[l4..]);
    offload::checksum(&p) == 0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_headers_and_frames_never_panic(
        flags in any::<u8>(), gso_type in any::<u8>(), hdr_len in any::<u16>(),
        gso_size in any::<u16>(), csum_start in any::<u16>(), csum_offset in any::<u16>(),
        frame in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        let h = VnetHdr { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset };
        let mut n = 0usize;
        let mut total = 0usize;
        let _ = offload::resolve(&h, &frame, &mut Vec::new(), |s| { n += 1; total += s.len(); });
        prop_assert!(n <= offload::MAX_SEGMENTS);
        prop_assert!(total <= frame.len() * 2 + offload::MAX_SEGMENTS * 200);
    }

    #[test]
    fn tcp_super_frames_become_valid_segments_with_the_same_bytes(
        v6 in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 1..20000),
        mss in 536u16..9000,
        fin in any::<bool>(),
    ) {
        let (f, l4) = tcp(v6, &payload, if fin { 0x19 } else { 0x18 });
        let h = VnetHdr {
            flags: offload::F_NEEDS_CSUM,
            gso_type: if v6 { offload::GSO_TCPV6 } else { offload::GSO_TCPV4 },
            hdr_len: (l4 + 20) as u16,
            gso_size: mss,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        let mut segs: Vec<Vec<u8>> = Vec::new();
        offload::resolve(&h, &f, &mut Vec::new(), |s| segs.push(s.to_vec())).unwrap();
        prop_assert_eq!(segs.len(), payload.len().div_ceil(mss as usize));
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            prop_assert!(s.len() <= l4 + 20 + mss as usize);
            prop_assert!(tcp_ok(s, v6, l4), "segment {} checksum", i);
            if !v6 {
                prop_assert_eq!(offload::checksum(&s[14..34]), 0);
            }
            let seq = u32::from_be_bytes(s[l4 + 4..l4 + 8].try_into().unwrap());
            prop_assert_eq!(seq, 0xfffff000u32.wrapping_add((i * mss as usize) as u32));
            let last = i + 1 == segs.len();
            prop_assert_eq!(s[l4 + 13] & 0x01 != 0, fin && last, "FIN only on the last");
            data.extend_from_slice(&s[l4 + 20..]);
        }
        prop_assert_eq!(data, payload);
    }
}
