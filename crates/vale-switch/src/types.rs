//! Small value types shared by the engine, the lookups and the registry.

use std::fmt;

/// Index of a port inside its switch (netmap's `bdg_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortId(pub u16);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Monotonic time passed in by the caller, in nanoseconds from any fixed origin. The
/// engine never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const fn from_secs(s: u64) -> Timestamp {
        Timestamp(s * 1_000_000_000)
    }
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms * 1_000_000)
    }
    pub const fn secs(self) -> u64 {
        self.0 / 1_000_000_000
    }
}

/// A 48-bit Ethernet address, stored as netmap loads it: byte 0 in the low byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(u64);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr(0xffff_ffff_ffff);
    pub const ZERO: MacAddr = MacAddr(0);

    pub const fn new(b: [u8; 6]) -> MacAddr {
        MacAddr(
            b[0] as u64
                | (b[1] as u64) << 8
                | (b[2] as u64) << 16
                | (b[3] as u64) << 24
                | (b[4] as u64) << 32
                | (b[5] as u64) << 40,
        )
    }

    /// From the low 48 bits of a little-endian load.
    #[inline(always)]
    pub const fn from_u64(v: u64) -> MacAddr {
        MacAddr(v & 0xffff_ffff_ffff)
    }

    #[inline(always)]
    pub const fn to_u64(self) -> u64 {
        self.0
    }

    pub fn octets(self) -> [u8; 6] {
        let b = self.0.to_le_bytes();
        [b[0], b[1], b[2], b[3], b[4], b[5]]
    }

    /// Group bit (broadcast or multicast).
    #[inline(always)]
    pub const fn is_multicast(self) -> bool {
        self.0 & 1 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.octets();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<MacAddr, String> {
        let mut b = [0u8; 6];
        let mut parts = s.split(':');
        for byte in b.iter_mut() {
            let p = parts
                .next()
                .ok_or_else(|| format!("MAC address `{s}` has fewer than 6 octets"))?;
            *byte = u8::from_str_radix(p, 16)
                .ok()
                .filter(|_| !p.is_empty() && p.len() <= 2)
                .ok_or_else(|| format!("MAC address `{s}`: `{p}` is not a hex octet"))?;
        }
        if parts.next().is_some() {
            return Err(format!("MAC address `{s}` has more than 6 octets"));
        }
        Ok(MacAddr::new(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_classifies() {
        let m: MacAddr = "02:00:00:00:00:0a".parse().unwrap();
        assert_eq!(m.octets(), [2, 0, 0, 0, 0, 10]);
        assert_eq!(m.to_string(), "02:00:00:00:00:0a");
        assert!(!m.is_multicast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(
            "01:00:5e:00:00:01"
                .parse::<MacAddr>()
                .unwrap()
                .is_multicast()
        );
        let le = u64::from_le_bytes([2, 0, 0, 0, 0, 10, 0xee, 0xff]);
        assert_eq!(MacAddr::from_u64(le), m);
        for bad in [
            "",
            "1:2:3",
            "01:02:03:04:05:06:07",
            "zz:00:00:00:00:00",
            "001:0:0:0:0:0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
