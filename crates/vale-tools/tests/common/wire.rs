//! Frames built by hand for tests against real peers, and the pcap files tcpdump
//! writes, read back. The checksums are computed here, not with vale-wire, whose code is
//! what the switch itself uses.

/// A frame from `src` to `dst` with `tags` (TPID, TCI; outermost first) and EtherType
/// `ethertype`: its Ethernet header and tags (the payload goes after).
pub fn eth(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// `n` bytes that differ from one frame (`seed`) and one position to the next.
pub fn pattern(seed: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| seed.wrapping_add((i * 7) as u8)).collect()
}

/// The ones' complement sum of `data` (big-endian 16-bit words) added to `acc`.
pub fn ones(mut acc: u32, data: &[u8]) -> u32 {
    for w in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// The checksum of a running sum: its fold, complemented.
pub fn csum(acc: u32) -> u16 {
    let mut s = acc;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

pub const IP_SRC: [u8; 4] = [10, 199, 9, 1];
pub const IP_DST: [u8; 4] = [10, 199, 9, 2];

/// An IPv4 header from `IP_SRC` to `IP_DST` carrying `l4_len` bytes of `proto`, its
/// checksum right.
pub fn ipv4(proto: u8, l4_len: usize, ident: u16) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    h.extend_from_slice(&ident.to_be_bytes());
    h.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&IP_SRC);
    h.extend_from_slice(&IP_DST);
    let c = csum(ones(0, &h));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// The running sum of the IPv4 pseudo-header of `len` bytes of `proto`.
pub fn pseudo(proto: u8, len: usize) -> u32 {
    let acc = ones(ones(0, &IP_SRC), &IP_DST);
    ones(acc, &[0, proto, (len >> 8) as u8, len as u8])
}

/// Whether the IPv4 header at `l3` and the TCP or UDP segment after it have correct
/// checksums.
pub fn checksums_ok(f: &[u8], l3: usize) -> bool {
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]));
    let l4 = &f[l3 + ihl..l3 + total];
    csum(ones(0, &f[l3..l3 + ihl])) == 0 && csum(ones(pseudo(f[l3 + 9], l4.len()), l4)) == 0
}

/// The frames of a pcap file (tcpdump -w, link type Ethernet), in order.
pub fn pcap_frames(file: &[u8]) -> Vec<Vec<u8>> {
    assert!(file.len() >= 24, "a pcap file has a 24-byte header");
    let magic = u32::from_le_bytes(file[..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |o: usize| {
        let b: [u8; 4] = file[o..o + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "link type Ethernet");
    let (mut at, mut out) = (24, Vec::new());
    // A record cut short is one tcpdump was still writing: left out.
    while at + 16 <= file.len() {
        let incl = u32_at(at + 8) as usize;
        if at + 16 + incl > file.len() {
            break;
        }
        out.push(file[at + 16..at + 16 + incl].to_vec());
        at += 16 + incl;
    }
    out
}
