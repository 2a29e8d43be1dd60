//! IP protocol numbers: IPv4's `protocol` and IPv6's `next header` field.

use core::fmt;

/// An IANA protocol number. Open: any value is one, so an unknown protocol survives a
/// read and a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    pub const ICMP: IpProtocol = IpProtocol(0x01);
    pub const TCP: IpProtocol = IpProtocol(0x06);
    pub const UDP: IpProtocol = IpProtocol(0x11);
    pub const ICMPV6: IpProtocol = IpProtocol(0x3a);
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpProtocol::ICMP => f.write_str("ICMP"),
            IpProtocol::TCP => f.write_str("TCP"),
            IpProtocol::UDP => f.write_str("UDP"),
            IpProtocol::ICMPV6 => f.write_str("ICMPv6"),
            IpProtocol(p) => write!(f, "proto {p}"),
        }
    }
}
