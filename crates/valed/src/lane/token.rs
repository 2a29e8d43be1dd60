//! What woke a lane's forwarding thread: the epoll data of each descriptor in its set,
//! as an enum instead of bit tricks.

use vale_switch::{PortId, PortKey};

/// The epoll data of one descriptor in a lane's epoll set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The lane's own eventfd: a new port, a VM's kick, shutdown.
    Wake,
    /// A client's kick eventfd: its port has new TX work.
    Kick(PortKey),
    /// A descriptor of a port the lane drives (an interface, a socket, an AF_XDP queue):
    /// readable, or in error.
    Driven(PortKey),
}

const TAG_SHIFT: u32 = 62;
const KICK: u64 = 1;
const DRIVEN: u64 = 2;
/// Bits of the switch index (the port index takes the low 16).
const SWITCH_BITS: u32 = TAG_SHIFT - 16;

impl Token {
    pub fn into_u64(self) -> u64 {
        let key = |tag: u64, k: PortKey| {
            tag << TAG_SHIFT
                | ((k.switch as u64) & ((1 << SWITCH_BITS) - 1)) << 16
                | k.port.0 as u64
        };
        match self {
            Token::Wake => 0,
            Token::Kick(k) => key(KICK, k),
            Token::Driven(k) => key(DRIVEN, k),
        }
    }

    /// The token of epoll data this lane registered; `None` for anything else.
    pub fn from_u64(d: u64) -> Option<Token> {
        let key = PortKey {
            switch: ((d >> 16) & ((1 << SWITCH_BITS) - 1)) as usize,
            port: PortId(d as u16),
        };
        match d >> TAG_SHIFT {
            0 if d == 0 => Some(Token::Wake),
            KICK => Some(Token::Kick(key)),
            DRIVEN => Some(Token::Driven(key)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stay_apart() {
        let k = |s, p| PortKey {
            switch: s,
            port: PortId(p),
        };
        let all = [
            Token::Wake,
            Token::Kick(k(0, 0)),
            Token::Kick(k(7, 253)),
            Token::Driven(k(0, 0)),
            Token::Driven(k(65_535, u16::MAX)),
        ];
        for t in all {
            assert_eq!(Token::from_u64(t.into_u64()), Some(t), "{t:?}");
        }
        let mut raw: Vec<u64> = all.iter().map(|t| t.into_u64()).collect();
        raw.sort();
        raw.dedup();
        assert_eq!(raw.len(), all.len(), "distinct encodings");
        assert_eq!(Token::from_u64(3 << 62), None);
        assert_eq!(Token::from_u64(5), None, "tag 0 is only the wake fd");
    }
}
