//! The Internet checksum (RFC 1071): the ones' complement of the ones' complement sum of
//! the data as big-endian 16-bit words, an odd last byte padded with zero. With it, the
//! pseudo-headers that TCP and UDP sum in over IPv4 (RFC 793, RFC 768) and IPv6 (RFC 8200
//! §8.1), and the incremental update of RFC 1624.
//!
//! A running sum is a `u32` that [`sum`] returns and takes back, so a checksum over
//! several pieces (pseudo-header, then header and payload) is
//! `fold(sum(sum(0, a), b))`. Every piece but the last must have an even length: the sum
//! pairs bytes from each piece's start.

use crate::IpProtocol;
use core::net::{Ipv4Addr, Ipv6Addr};

/// Adds `data` to the running sum `initial` (0 to start); [`fold`] turns the result into
/// the checksum.
pub fn sum(initial: u32, data: &[u8]) -> u32 {
    // The sum is independent of byte order (RFC 1071 §2(B)): add native-endian 32-bit
    // words (two 16-bit words each, since 2^16 = 1 in ones' complement arithmetic) and
    // swap once at the end. That is several times fewer operations than a big-endian
    // 16-bit word at a time, and this loop is what software TSO spends its time in.
    let mut acc = u64::from(u16::from_be(fold16(u64::from(initial))));
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_ne_bytes(tail));
    u32::from(u16::to_be(fold16(acc)))
}

/// A wrapping sum of `bytes` as little-endian 64-bit words (a short last word padded with
/// zeros), added to `acc`. No protocol's checksum: a receiver that must read every byte
/// of every frame (`pkt-gen -f rx --access`, the benchmark's `pair --touch`) folds its
/// frames into one so that the reads are neither skipped nor optimised away, at the
/// cost of one add per 8 bytes.
pub fn word_sum(acc: u64, bytes: &[u8]) -> u64 {
    let words = bytes.chunks_exact(8);
    let rest = words.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    words
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .fold(
            acc.wrapping_add(u64::from_le_bytes(last)),
            u64::wrapping_add,
        )
}

/// The checksum field's value for a running sum: folded to 16 bits and complemented.
pub fn fold(sum: u32) -> u16 {
    !fold16(u64::from(sum))
}

/// The Internet checksum of `data`. Over bytes that include a correct checksum field it
/// is 0, which is how a receiver verifies one.
pub fn of(data: &[u8]) -> u16 {
    fold(sum(0, data))
}

/// The running sum of the IPv4 pseudo-header of a TCP or UDP segment of `len` bytes
/// (header and payload).
pub fn pseudo_ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, len: u32) -> u32 {
    let s = sum(sum(0, &src.octets()), &dst.octets());
    s + u32::from(protocol.0) + (len & 0xffff) + (len >> 16)
}

/// The running sum of the IPv6 pseudo-header of an upper-layer packet of `len` bytes.
pub fn pseudo_ipv6(src: Ipv6Addr, dst: Ipv6Addr, next_header: IpProtocol, len: u32) -> u32 {
    let s = sum(sum(0, &src.octets()), &dst.octets());
    s + u32::from(next_header.0) + (len & 0xffff) + (len >> 16)
}

/// The new checksum after one 16-bit word it covers changes from `old` to `new`
/// (RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`), without summing the data again.
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
}

fn fold16(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_sum_reads_every_byte() {
        // Two words and a 3-byte tail: 0x0807060504030201 + 0x100f0e0d0c0b0a09 + 0x131211.
        let data: Vec<u8> = (1..=19).collect();
        let want = 0x0807_0605_0403_0201u64
            .wrapping_add(0x100f_0e0d_0c0b_0a09)
            .wrapping_add(0x0013_1211);
        assert_eq!(word_sum(5, &data), want + 5);
        // A change in any byte, the tail's included, changes the sum.
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x80;
            assert_ne!(word_sum(5, &d), want + 5, "byte {i}");
        }
        assert_eq!(word_sum(u64::MAX, &[1]), 0);
    }

    /// RFC 1071 to the letter: big-endian 16-bit words, summed and folded. The three
    /// checksums this crate replaced were all this loop.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = data
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    /// A deterministic byte stream (xorshift), so failures reproduce.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(of(&d), !0xddf2);
    }

    #[test]
    fn matches_the_reference_for_every_length_and_split() {
        for len in 0..300 {
            for seed in [1, 2, 3, 0xdead_beef] {
                let d = noise(seed + len as u64, len);
                assert_eq!(of(&d), reference(&d), "len {len} seed {seed}");
                // Any even split gives the same checksum.
                let mid = (len / 2) & !1;
                assert_eq!(fold(sum(sum(0, &d[..mid]), &d[mid..])), reference(&d));
            }
        }
        assert_eq!(of(&[0xff; 9000]), reference(&[0xff; 9000]));
        assert_eq!(of(&[]), 0xffff);
        assert_eq!(of(&[0; 7]), 0xffff);
    }

    #[test]
    fn a_correct_checksum_verifies_to_zero() {
        // An IPv4 header (RFC 791 example values) with its checksum 0xb861 in place.
        let ip = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(of(&ip), 0);
        let mut zeroed = ip;
        zeroed[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(of(&zeroed), 0xb861);
    }

    #[test]
    fn pseudo_headers_are_the_summed_bytes() {
        let (s4, d4) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 1, 2, 3));
        let mut p = Vec::new();
        p.extend_from_slice(&s4.octets());
        p.extend_from_slice(&d4.octets());
        p.extend_from_slice(&[0, 17, 0x05, 0xdc]);
        assert_eq!(
            fold(pseudo_ipv4(s4, d4, IpProtocol::UDP, 1500)),
            reference(&p)
        );
        let (s6, d6) = (
            Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0xffff, 2),
        );
        let mut p = Vec::new();
        p.extend_from_slice(&s6.octets());
        p.extend_from_slice(&d6.octets());
        p.extend_from_slice(&70000u32.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(
            fold(pseudo_ipv6(s6, d6, IpProtocol::TCP, 70000)),
            reference(&p)
        );
    }

    #[test]
    fn incremental_update_matches_a_recomputation() {
        for seed in 1..200u64 {
            let mut d = noise(seed, 20);
            d[10..12].copy_from_slice(&[0, 0]);
            let c = of(&d);
            let old = u16::from_be_bytes([d[4], d[5]]);
            let new = old.wrapping_add(seed as u16);
            d[4..6].copy_from_slice(&new.to_be_bytes());
            let fresh = of(&d);
            let upd = update(c, old, new);
            // Both are the same ones' complement number; only 0x0000 and 0xffff (its two
            // zeros) may differ, and RFC 1624's equation avoids producing -0 from +0.
            assert!(
                upd == fresh || (upd | fresh) == 0xffff && (upd & fresh) == 0,
                "seed {seed}: {upd:#x} vs {fresh:#x}"
            );
        }
    }
}
