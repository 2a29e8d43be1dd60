//! The frames pkt-gen sends: Ethernet + IPv4 + UDP, built once.

use vale_wire::{EtherType, IpProtocol, ethernet, ipv4, udp};

/// Where the UDP header starts: after Ethernet and an IPv4 header without options.
const UDP_AT: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;

/// A MAC address from `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "MAC address `{s}` must have 6 octets like 02:00:00:00:00:01"
        ));
    }
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16)
            .ok()
            .filter(|_| (1..=2).contains(&p.len()))
            .ok_or_else(|| format!("MAC address `{s}`: `{p}` is not a hex octet"))?;
    }
    Ok(m)
}

/// An IPv4 address with an optional port, `10.0.0.1[:1234]`.
pub fn parse_ip_port(s: &str, default_port: u16) -> Result<([u8; 4], u16), String> {
    let (ip, port) = match s.split_once(':') {
        Some((ip, p)) => (
            ip,
            p.parse()
                .map_err(|_| format!("`{p}` in `{s}` is not a UDP port"))?,
        ),
        None => (s, default_port),
    };
    let a: std::net::Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("`{ip}` is not an IPv4 address"))?;
    Ok((a.octets(), port))
}

/// Ethernet, IPv4 and UDP headers: what `-z` rewrites in every frame.
pub const HEADER_LEN: usize = UDP_AT + udp::HEADER_LEN;

/// Sets the UDP source port of a frame built by [`build`] (no-op for a frame too short
/// to be UDP). The UDP checksum is 0 ("none"), so nothing else changes.
pub fn set_src_port(f: &mut [u8], port: u16) {
    if f.len() >= HEADER_LEN && f[12..14] == [0x08, 0x00] {
        f[UDP_AT..UDP_AT + 2].copy_from_slice(&port.to_be_bytes());
    }
}

/// Where pkt-gen's sequence number and timestamp go (netmap: payload offset 42 and 46).
pub const SEQ_OFF: usize = 42;
pub const TS_OFF: usize = 46;

#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: ([u8; 4], u16),
    pub dst: ([u8; 4], u16),
}

/// A `len`-byte frame (no CRC). Frames of at least 42 bytes are IPv4/UDP; shorter ones
/// carry the local experimental EtherType.
pub fn build(a: &Addrs, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(ethernet::HEADER_LEN)];
    let mut eth = ethernet::Frame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(a.dst_mac);
    eth.set_src_addr(a.src_mac);
    if len < UDP_AT + udp::HEADER_LEN {
        eth.set_ethertype(EtherType::EXPERIMENTAL);
        return f;
    }
    eth.set_ethertype(EtherType::IPV4);
    let ip_len = (len - ethernet::HEADER_LEN).min(0xffff) as u16;
    let mut ip = ipv4::Packet::new_unchecked(eth.payload_mut());
    ip.set_version_and_header_len(ipv4::HEADER_LEN);
    ip.set_total_len(ip_len);
    ip.set_flags_and_frag_offset(true, false, 0);
    ip.set_ttl(64);
    ip.set_protocol(IpProtocol::UDP);
    ip.set_src_addr(a.src.0.into());
    ip.set_dst_addr(a.dst.0.into());
    ip.fill_checksum();
    // The UDP checksum stays 0 ("none"): the payload carries a changing sequence number
    // and timestamp, and netmap's pkt-gen leaves it out too.
    let mut u = udp::Packet::new_unchecked(ip.payload_mut());
    u.set_src_port(a.src.1);
    u.set_dst_port(a.dst.1);
    u.set_len(ip_len.saturating_sub(ipv4::HEADER_LEN as u16));
    for (i, b) in f.iter_mut().enumerate().skip(UDP_AT + udp::HEADER_LEN) {
        *b = b'a' + (i % 26) as u8; // netmap's payload is text too
    }
    f
}

/// Swaps MAC and IPv4 addresses, as pkt-gen's pong does.
pub fn swap_addrs(f: &mut [u8]) {
    if f.len() < ethernet::field::SOURCE.end {
        return;
    }
    let mut eth = ethernet::Frame::new_unchecked(&mut *f);
    let (dst, src) = (eth.dst_addr(), eth.src_addr());
    eth.set_dst_addr(src);
    eth.set_src_addr(dst);
    if eth.as_ref().len() >= UDP_AT && eth.ethertype() == EtherType::IPV4 {
        let mut ip = ipv4::Packet::new_unchecked(eth.payload_mut());
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_valid_udp_frame() {
        let a = Addrs {
            dst_mac: [0xff; 6],
            src_mac: [2, 0, 0, 0, 0, 1],
            src: ([10, 0, 0, 1], 1234),
            dst: ([10, 1, 0, 1], 4321),
        };
        let f = build(&a, 60);
        assert_eq!(f.len(), 60);
        assert_eq!(
            vale_wire::checksum::of(&f[14..34]),
            0,
            "IPv4 header checksum verifies"
        );
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 46);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 26);
        let mut g = f.clone();
        swap_addrs(&mut g);
        assert_eq!(&g[..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&g[26..30], &[10, 1, 0, 1]);
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
        assert_eq!(
            parse_ip_port("10.0.0.2:99", 1).unwrap(),
            ([10, 0, 0, 2], 99)
        );
    }

    #[test]
    fn set_src_port_changes_only_the_port() {
        let a = Addrs {
            dst_mac: [0xff; 6],
            src_mac: [2, 0, 0, 0, 0, 1],
            src: ([10, 0, 0, 1], 1234),
            dst: ([10, 1, 0, 1], 4321),
        };
        let f = build(&a, 60);
        let mut g = f.clone();
        set_src_port(&mut g, 0xbeef);
        assert_eq!(&g[34..36], &[0xbe, 0xef]);
        assert_eq!((&g[..34], &g[36..]), (&f[..34], &f[36..]));
        let mut short = build(&a, 20);
        let before = short.clone();
        set_src_port(&mut short, 1);
        assert_eq!(short, before, "a frame too short for UDP stays as it is");
    }

    /// `build` and `swap_addrs` as they were before vale-wire, offsets and checksum by
    /// hand: the frames on the wire must not change.
    fn build_by_hand(a: &Addrs, len: usize) -> Vec<u8> {
        fn csum(data: &[u8]) -> u16 {
            let mut s: u32 = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
                .sum();
            while s > 0xffff {
                s = (s & 0xffff) + (s >> 16);
            }
            !(s as u16)
        }
        let mut f = vec![0u8; len.max(14)];
        f[..6].copy_from_slice(&a.dst_mac);
        f[6..12].copy_from_slice(&a.src_mac);
        if len < 42 {
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            return f;
        }
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (len - 14).min(0xffff) as u16;
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&a.src.0);
        ip[16..20].copy_from_slice(&a.dst.0);
        let c = csum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let udp_len = ip_len.saturating_sub(20);
        f[34..36].copy_from_slice(&a.src.1.to_be_bytes());
        f[36..38].copy_from_slice(&a.dst.1.to_be_bytes());
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        for (i, b) in f.iter_mut().enumerate().skip(42) {
            *b = b'a' + (i % 26) as u8;
        }
        f
    }

    fn swap_by_hand(f: &mut [u8]) {
        if f.len() >= 12 {
            for i in 0..6 {
                f.swap(i, 6 + i);
            }
        }
        if f.len() >= 34 && f[12..14] == [0x08, 0x00] {
            for i in 0..4 {
                f.swap(26 + i, 30 + i);
            }
        }
    }

    #[test]
    fn frames_are_the_same_bytes_as_before_vale_wire() {
        let addrs = [
            Addrs {
                dst_mac: [0xff; 6],
                src_mac: [2, 0, 0, 0, 0, 1],
                src: ([10, 0, 0, 1], 1234),
                dst: ([10, 1, 0, 1], 4321),
            },
            Addrs {
                dst_mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                src_mac: [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54],
                src: ([192, 168, 255, 254], 65535),
                dst: ([255, 255, 255, 255], 0),
            },
        ];
        let lens = (0..=130).chain([1514, 9000, 65549, 65550, 70000]);
        for a in &addrs {
            for len in lens.clone() {
                let f = build(a, len);
                assert_eq!(f, build_by_hand(a, len), "{len}-byte frame");
                let (mut g, mut h) = (f.clone(), f);
                swap_addrs(&mut g);
                swap_by_hand(&mut h);
                assert_eq!(g, h, "{len}-byte frame swapped");
            }
        }
        // Runts and frames that are not IPv4 swap the same way too.
        for len in 0..40 {
            let mut g: Vec<u8> = (0..len as u8).collect();
            let mut h = g.clone();
            if len >= 14 {
                g[12..14].copy_from_slice(&[0x08, 0x00]);
                h[12..14].copy_from_slice(&[0x08, 0x00]);
            }
            swap_addrs(&mut g);
            swap_by_hand(&mut h);
            assert_eq!(g, h, "{len}-byte runt");
        }
    }
}
