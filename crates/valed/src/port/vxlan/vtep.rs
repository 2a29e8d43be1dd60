//! The sans-IO half of a VXLAN uplink: what a received datagram holds (or why it is
//! dropped), which remote VTEP each inner address lives behind (learned, aged), and the
//! flow hash that picks a frame's UDP source port.

use std::collections::HashMap;
use std::net::IpAddr;
use vale_wire::{ethernet, vxlan};

/// Why a received datagram is not a frame for this port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Shorter than the VXLAN header and an Ethernet header.
    TooShort,
    /// The I flag is clear: the VNI means nothing.
    NoIFlag,
    /// A reserved flag or header bit is set (Linux drops these too, and RFC 7348 senders
    /// never set them).
    Reserved,
    /// Another VNI's frame.
    ForeignVni,
}

/// The inner Ethernet frame of a VXLAN datagram (the UDP payload) for `vni`, or why
/// there is none. Reads only inside `datagram`, whatever it holds.
pub fn decap(datagram: &[u8], vni: u32) -> Result<&[u8], Reject> {
    match decap_any(datagram)? {
        (v, f) if v == vni => Ok(f),
        _ => Err(Reject::ForeignVni),
    }
}

/// The VNI and inner frame of a VXLAN datagram, whatever its VNI, or why there is none.
pub fn decap_any(datagram: &[u8]) -> Result<(u32, &[u8]), Reject> {
    if datagram.len() < vxlan::HEADER_LEN + ethernet::HEADER_LEN {
        return Err(Reject::TooShort);
    }
    let p = vxlan::Packet::new_checked(datagram).map_err(|_| Reject::TooShort)?;
    if p.flags() & vxlan::FLAG_I == 0 {
        return Err(Reject::NoIFlag);
    }
    if p.check().is_err() {
        return Err(Reject::Reserved);
    }
    Ok((p.vni(), &datagram[vxlan::HEADER_LEN..]))
}

/// The VXLAN header this port puts in front of every frame: RFC 7348's exactly, the I
/// flag, the VNI, every reserved bit 0.
pub fn header(vni: u32) -> [u8; vxlan::HEADER_LEN] {
    let mut h = [0u8; vxlan::HEADER_LEN];
    vxlan::Packet::new_unchecked(&mut h[..]).set_header(vni);
    h
}

/// A hash of a frame's flow (for IP, the addresses, the protocol and, for TCP and UDP,
/// the ports; else the MAC addresses and EtherType), so that one flow always leaves
/// from one UDP source port (RFC 7348 §5: for ECMP and RSS on the way) and its
/// frames stay in order.
pub fn flow_hash(f: &[u8]) -> u32 {
    // FNV-1a over the chosen fields: cheap, and spreads well enough over a few ports.
    let mut h: u32 = 0x811c_9dc5;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
        }
    };
    let et = if f.len() >= 14 {
        u16::from_be_bytes([f[12], f[13]])
    } else {
        0
    };
    match et {
        0x0800 if f.len() >= 34 => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let proto = f[23];
            mix(&f[23..24]);
            mix(&f[26..34]);
            let frag = u16::from_be_bytes([f[20], f[21]]) & 0x3fff != 0;
            let l4 = 14 + ihl;
            if !frag && matches!(proto, 6 | 17) && ihl >= 20 && f.len() >= l4 + 4 {
                mix(&f[l4..l4 + 4]);
            }
        }
        0x86dd if f.len() >= 54 => {
            let nh = f[20];
            mix(&f[20..21]);
            mix(&f[22..54]);
            if matches!(nh, 6 | 17) && f.len() >= 58 {
                mix(&f[54..58]);
            }
        }
        _ => mix(&f[..f.len().min(14)]),
    }
    h
}

/// One learned address: the VTEP it was last seen behind, and when (seconds).
#[derive(Debug, Clone, Copy)]
struct Entry {
    vtep: IpAddr,
    seen: u64,
}

/// What `vale-ctl list` shows of one learned address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub mac: [u8; 6],
    pub vtep: IpAddr,
    pub age_secs: u64,
}

/// Inner source address -> remote VTEP, learned from outer source addresses (as Linux's
/// vxlan `learning`), each entry forgotten `max_age` seconds after it was last seen.
/// Bounded: when it is full, expired entries are swept (at most once a second) and an
/// address that still finds no room is not learned (its frames are flooded to every
/// remote, which still reaches it).
pub struct Vteps {
    map: HashMap<[u8; 6], Entry>,
    capacity: usize,
    max_age: u64,
    swept: u64,
}

impl Vteps {
    pub fn new(capacity: usize, max_age: u64) -> Vteps {
        Vteps {
            map: HashMap::new(),
            capacity,
            max_age,
            swept: u64::MAX,
        }
    }

    /// `mac` was the source of a frame from `vtep` at `now`. Group and broadcast
    /// addresses are never sources of a real frame and are not learned. Returns whether
    /// the table now says something new (an address learned, or moved to another VTEP).
    pub fn learn(&mut self, mac: [u8; 6], vtep: IpAddr, now: u64) -> bool {
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return false;
        }
        if let Some(e) = self.map.get_mut(&mac) {
            let moved = e.vtep != vtep || now.saturating_sub(e.seen) > self.max_age;
            *e = Entry { vtep, seen: now };
            return moved;
        }
        if self.map.len() >= self.capacity {
            if self.swept == now {
                return false;
            }
            self.swept = now;
            let max_age = self.max_age;
            self.map
                .retain(|_, e| now.saturating_sub(e.seen) <= max_age);
            if self.map.len() >= self.capacity {
                return false;
            }
        }
        self.map.insert(mac, Entry { vtep, seen: now });
        true
    }

    /// The VTEP behind unicast `mac`, if it was seen within `max_age` of `now`.
    pub fn lookup(&self, mac: &[u8; 6], now: u64) -> Option<IpAddr> {
        let e = self.map.get(mac)?;
        (now.saturating_sub(e.seen) <= self.max_age).then_some(e.vtep)
    }

    /// The live entries at `now`, by address.
    pub fn rows(&self, now: u64) -> Vec<Row> {
        let mut v: Vec<Row> = self
            .map
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.seen) <= self.max_age)
            .map(|(mac, e)| Row {
                mac: *mac,
                vtep: e.vtep,
                age_secs: now.saturating_sub(e.seen),
            })
            .collect();
        v.sort_by_key(|r| r.mac);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram as Linux's vxlan sends it for VNI 42 (tshark): the header, then a
    /// broadcast ARP frame's first bytes.
    fn datagram() -> Vec<u8> {
        let mut d = vec![0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00];
        d.extend_from_slice(&[0xff; 6]);
        d.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        d.extend_from_slice(&[0x08, 0x06]);
        d
    }

    #[test]
    fn the_header_is_rfc_7348s_exactly() {
        assert_eq!(header(42), [0x08, 0, 0, 0, 0, 0, 0x2a, 0]);
        assert_eq!(header(0xabcdef), [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
    }

    #[test]
    fn a_valid_datagram_gives_its_inner_frame() {
        let d = datagram();
        assert_eq!(decap(&d, 42), Ok(&d[8..]));
    }

    #[test]
    fn malformed_datagrams_are_rejected_by_reason() {
        let with = |i: usize, v: u8| {
            let mut d = datagram();
            d[i] = v;
            decap(&d, 42).map(|_| ())
        };
        assert_eq!(with(0, 0x00), Err(Reject::NoIFlag));
        assert_eq!(with(0, 0x0c), Err(Reject::Reserved), "a reserved flag bit");
        assert_eq!(with(0, 0x88), Err(Reject::Reserved));
        assert_eq!(with(1, 0x01), Err(Reject::Reserved));
        assert_eq!(
            with(7, 0x01),
            Err(Reject::Reserved),
            "the last reserved byte"
        );
        assert_eq!(with(6, 0x2b), Err(Reject::ForeignVni));
        let d = datagram();
        assert_eq!(decap(&d[..21], 42), Err(Reject::TooShort));
        assert_eq!(decap(&d[..22], 42).map(<[u8]>::len), Ok(14));
        assert_eq!(decap(&[], 42), Err(Reject::TooShort));
    }

    #[test]
    fn one_flow_hashes_alike_and_flows_differ() {
        // IPv4 UDP 10.0.0.1:10001 -> 10.0.0.2:7000, then with another destination port.
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..38].copy_from_slice(&[0x27, 0x11, 0x1b, 0x58]);
        let a = flow_hash(&f);
        let mut g = f.clone();
        g[0] = 0x99; // another MAC, the same flow
        g[40] = 0x77; // another payload
        assert_eq!(flow_hash(&g), a);
        g[37] = 0x59;
        assert_ne!(flow_hash(&g), a, "another port, another flow");
        // Any bytes at all hash without panicking.
        for n in 0..64 {
            flow_hash(&vec![0x45; n]);
            let mut v6 = vec![0x11; n];
            if n >= 14 {
                v6[12..14].copy_from_slice(&[0x86, 0xdd]);
            }
            flow_hash(&v6);
        }
    }

    #[test]
    fn vteps_are_learned_moved_aged_and_bounded() {
        let ip = |x: u8| IpAddr::from([198, 18, 0, x]);
        let m = |x: u8| [0x02, 0, 0, 0, 0, x];
        let mut t = Vteps::new(2, 300);
        assert!(t.learn(m(1), ip(2), 10), "new");
        assert_eq!(t.lookup(&m(1), 10), Some(ip(2)));
        assert!(!t.learn(m(1), ip(2), 11), "seen again: nothing new");
        assert!(t.learn(m(1), ip(3), 20), "moved");
        assert_eq!(t.lookup(&m(1), 20), Some(ip(3)), "moved");
        assert_eq!(t.lookup(&m(1), 320), Some(ip(3)));
        assert_eq!(t.lookup(&m(1), 321), None, "aged out");
        assert!(!t.learn([0xff; 6], ip(2), 20));
        assert!(!t.learn([0x01, 0, 0x5e, 0, 0, 1], ip(2), 20));
        assert_eq!(t.rows(20).len(), 1, "group addresses are not sources");
        t.learn(m(2), ip(2), 20);
        assert!(!t.learn(m(3), ip(2), 21));
        assert_eq!(t.lookup(&m(3), 21), None, "full, and nothing expired");
        assert!(t.learn(m(3), ip(2), 400));
        assert_eq!(t.lookup(&m(3), 400), Some(ip(2)), "the expired were swept");
        assert_eq!(
            t.rows(400),
            vec![Row {
                mac: m(3),
                vtep: ip(2),
                age_secs: 0
            }]
        );
    }
}
