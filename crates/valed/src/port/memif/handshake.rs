//! The server side of memif's handshake, as a state machine without I/O: messages (and
//! the descriptor each may carry) in, replies or a refusal out, and at CONNECT the whole
//! setup the client offered, checked.
//!
//! Everything the client says is judged here, before any of it is mapped or used:
//! version and mode, the interface id and its secret, region and ring indices (memif
//! wants them sequential from 0), ring sizes against what HELLO advertised, and each
//! ring's place inside its region. A refusal carries the reason sent in DISCONNECT; the
//! texts are DPDK's where DPDK has one, since peers print them.
//!
//! The client may wait for each ACK (DPDK) or send everything at once (VPP): each
//! message is judged on its own, in order.

use vale_wire::memif::{
    AddRegion, AddRing, FixedStr, Hello, Init, MAX_LOG2_RING_SIZE, MODE_ETHERNET, Msg, RingLayout,
    SECRET_LEN, VERSION,
};

/// What the server accepts, advertised in HELLO (as highest indices, memif's way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// Regions per interface.
    pub regions: u16,
    /// Rings per direction.
    pub rings: u16,
    /// Largest ring, as log2 of its slots.
    pub max_log2: u8,
}

impl Offer {
    /// HELLO for this offer, naming the server `name`.
    pub fn hello(&self, name: &str) -> Msg {
        Msg::Hello(Hello {
            name: FixedStr::new(name.as_bytes()),
            min_version: VERSION,
            max_version: VERSION,
            max_region: self.regions.saturating_sub(1),
            max_c2s_ring: self.rings.saturating_sub(1),
            max_s2c_ring: self.rings.saturating_sub(1),
            max_log2_ring_size: self.max_log2.min(MAX_LOG2_RING_SIZE),
        })
    }
}

/// How the server knows an interface id (the caller's table of memif ports on this
/// socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// No memif port has this id on this socket.
    Unknown,
    /// Its port already has a client.
    Busy,
    /// Free, with the secret a client must give (empty: none).
    Free { secret: FixedStr<SECRET_LEN> },
}

/// A region the client offered: its memfd and the size it claims (checked against the
/// file when it is mapped).
#[derive(Debug)]
pub struct Region<F> {
    pub fd: F,
    pub size: u64,
}

/// A ring the client placed in one of its regions, with its interrupt eventfd.
#[derive(Debug)]
pub struct Ring<F> {
    pub region: u16,
    pub offset: u32,
    pub log2_size: u8,
    pub eventfd: F,
}

/// A connection's memory and rings, checked, at CONNECT.
#[derive(Debug)]
pub struct Setup<F> {
    pub id: u32,
    /// The client application's name (INIT) and its interface's (CONNECT).
    pub peer: String,
    pub if_name: String,
    pub regions: Vec<Region<F>>,
    pub c2s: Vec<Ring<F>>,
    pub s2c: Vec<Ring<F>>,
}

/// What a message leads to.
#[derive(Debug)]
pub enum Step<F> {
    /// Send this reply and go on.
    Reply(Msg),
    /// Send CONNECTED and start forwarding with this setup.
    Connected(Msg, Setup<F>),
    /// The client hung up, saying why.
    PeerDisconnected(String),
}

/// Why the client is turned away: the reason goes in DISCONNECT and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

enum State<F> {
    /// HELLO sent; INIT expected.
    Hello,
    /// INIT accepted for `id`; regions, rings and CONNECT expected.
    Setup { id: u32, peer: String, acc: Acc<F> },
    /// CONNECTED sent, or the handshake failed.
    Done,
}

struct Acc<F> {
    regions: Vec<Region<F>>,
    c2s: Vec<Ring<F>>,
    s2c: Vec<Ring<F>>,
}

/// One client's handshake.
pub struct Handshake<F> {
    offer: Offer,
    layout: RingLayout,
    state: State<F>,
}

impl<F> Handshake<F> {
    /// A handshake after HELLO for `offer` was sent (see [`Offer::hello`]).
    pub fn new(offer: Offer) -> Handshake<F> {
        Handshake {
            offer,
            layout: RingLayout::X86,
            state: State::Hello,
        }
    }

    /// The interface id INIT named, once accepted.
    pub fn id(&self) -> Option<u32> {
        match &self.state {
            State::Setup { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The next message from the client, with the descriptor that came with it.
    /// `known` says what the server knows of an interface id. After a refusal the
    /// handshake is over: send the reason in DISCONNECT and close.
    pub fn on_message(
        &mut self,
        msg: Msg,
        fd: Option<F>,
        known: impl FnOnce(u32) -> Known,
    ) -> Result<Step<F>, Refusal> {
        let state = std::mem::replace(&mut self.state, State::Done);
        let step = match (state, msg) {
            (_, Msg::Disconnect { reason, .. }) => {
                return Ok(Step::PeerDisconnected(reason.to_string_lossy()));
            }
            (State::Hello, Msg::Init(init)) => {
                let id = init.id;
                let peer = check_init(&init, known(id))?;
                self.state = State::Setup {
                    id,
                    peer,
                    acc: Acc {
                        regions: Vec::new(),
                        c2s: Vec::new(),
                        s2c: Vec::new(),
                    },
                };
                Step::Reply(Msg::Ack)
            }
            (State::Setup { id, peer, mut acc }, Msg::AddRegion(r)) => {
                self.add_region(&mut acc, r, fd)?;
                self.state = State::Setup { id, peer, acc };
                Step::Reply(Msg::Ack)
            }
            (State::Setup { id, peer, mut acc }, Msg::AddRing(r)) => {
                self.add_ring(&mut acc, r, fd)?;
                self.state = State::Setup { id, peer, acc };
                Step::Reply(Msg::Ack)
            }
            (State::Setup { id, peer, acc }, Msg::Connect { if_name }) => {
                if acc.c2s.is_empty() || acc.s2c.is_empty() {
                    return refuse("CONNECT before a ring each way (ADD_RING)");
                }
                let setup = Setup {
                    id,
                    peer,
                    if_name: if_name.to_string_lossy(),
                    regions: acc.regions,
                    c2s: acc.c2s,
                    s2c: acc.s2c,
                };
                let reply = Msg::Connected {
                    if_name: FixedStr::new(format!("vale{id}").as_bytes()),
                };
                Step::Connected(reply, setup)
            }
            (_, m) => return refuse(format!("Unexpected message (type {})", m.kind())),
        };
        Ok(step)
    }

    fn add_region(&self, acc: &mut Acc<F>, r: AddRegion, fd: Option<F>) -> Result<(), Refusal> {
        let Some(fd) = fd else {
            return refuse("Missing region fd");
        };
        if usize::from(r.index) != acc.regions.len() {
            return refuse(format!(
                "Invalid region index {} (expected {})",
                r.index,
                acc.regions.len()
            ));
        }
        if acc.regions.len() >= usize::from(self.offer.regions) {
            return refuse(format!("too many regions (at most {})", self.offer.regions));
        }
        if r.size == 0 {
            return refuse(format!("region {} is empty", r.index));
        }
        acc.regions.push(Region { fd, size: r.size });
        Ok(())
    }

    fn add_ring(&self, acc: &mut Acc<F>, r: AddRing, fd: Option<F>) -> Result<(), Refusal> {
        let Some(eventfd) = fd else {
            return refuse("Missing interrupt fd");
        };
        let Some(region) = acc.regions.get(usize::from(r.region)) else {
            return refuse(format!("Invalid region index {} for ring", r.region));
        };
        if r.private_hdr_size != 0 {
            return refuse("private headers not supported");
        }
        if r.log2_size > self.offer.max_log2.min(MAX_LOG2_RING_SIZE) {
            return refuse(format!(
                "ring of 2^{} slots: at most 2^{} (HELLO)",
                r.log2_size, self.offer.max_log2
            ));
        }
        if r.offset % 4 != 0 {
            return refuse(format!("ring offset {} is not 4-byte aligned", r.offset));
        }
        let end = u64::from(r.offset) + self.layout.ring_bytes(r.log2_size);
        if end > region.size {
            return refuse(format!(
                "ring at {}..{end} outside region {} of {} bytes",
                r.offset, r.region, region.size
            ));
        }
        let rings = if r.is_c2s() {
            &mut acc.c2s
        } else {
            &mut acc.s2c
        };
        if usize::from(r.index) != rings.len() {
            return refuse(format!(
                "Invalid ring index {} (expected {})",
                r.index,
                rings.len()
            ));
        }
        if rings.len() >= usize::from(self.offer.rings) {
            return refuse(format!(
                "too many rings (at most {} each way)",
                self.offer.rings
            ));
        }
        rings.push(Ring {
            region: r.region,
            offset: r.offset,
            log2_size: r.log2_size,
            eventfd,
        });
        Ok(())
    }
}

/// INIT against what the server knows of its id; the peer's name if accepted.
fn check_init(init: &Init, known: Known) -> Result<String, Refusal> {
    if init.version != VERSION {
        return refuse(format!(
            "Incompatible memif version {}.{} (valed speaks 2.0)",
            init.version >> 8,
            init.version & 0xff
        ));
    }
    if init.mode != MODE_ETHERNET {
        return refuse("Only ethernet mode supported");
    }
    match known {
        Known::Unknown => refuse("ID not found"),
        Known::Busy => refuse("Already connected"),
        Known::Free { secret } => {
            if !secret.is_empty() {
                if init.secret.is_empty() {
                    return refuse("Secret required");
                }
                if init.secret != secret {
                    return refuse("Incorrect secret");
                }
            }
            Ok(init.name.to_string_lossy())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vale_wire::memif::RING_FLAG_C2S;

    const OFFER: Offer = Offer {
        regions: 4,
        rings: 2,
        max_log2: 12,
    };

    fn init(id: u32, secret: &str) -> Msg {
        Msg::Init(Init {
            version: VERSION,
            id,
            mode: MODE_ETHERNET,
            secret: FixedStr::new(secret.as_bytes()),
            name: FixedStr::new(b"DPDK 22.11.11"),
        })
    }

    fn free(secret: &str) -> impl FnOnce(u32) -> Known {
        let secret = FixedStr::new(secret.as_bytes());
        move |id| {
            if id == 7 {
                Known::Free { secret }
            } else {
                Known::Unknown
            }
        }
    }

    fn region(index: u16, size: u64) -> Msg {
        Msg::AddRegion(AddRegion { index, size })
    }

    fn ring(c2s: bool, index: u16, region: u16, offset: u32, log2: u8) -> Msg {
        Msg::AddRing(AddRing {
            flags: if c2s { RING_FLAG_C2S } else { 0 },
            index,
            region,
            offset,
            log2_size: log2,
            private_hdr_size: 0,
        })
    }

    fn acked(h: &mut Handshake<u32>, m: Msg, fd: Option<u32>) {
        match h.on_message(m, fd, free("")) {
            Ok(Step::Reply(Msg::Ack)) => {}
            other => panic!("{other:?}"),
        }
    }

    fn refused(h: &mut Handshake<u32>, m: Msg, fd: Option<u32>, known: Known) -> String {
        match h.on_message(m, fd, |_| known) {
            Err(Refusal(why)) => why,
            other => panic!("accepted: {other:?}"),
        }
    }

    /// DPDK's copy-mode client (l2-peers.md §1.5): one region of rings and buffers, a
    /// ring of 1024 each way.
    #[test]
    fn a_dpdk_copy_mode_client_connects_with_its_region_and_rings() {
        let mut h = Handshake::new(OFFER);
        acked(&mut h, init(7, ""), None);
        assert_eq!(h.id(), Some(7));
        acked(&mut h, region(0, 4_227_328), Some(10));
        acked(&mut h, ring(true, 0, 0, 0, 10), Some(11));
        acked(&mut h, ring(false, 0, 0, 16_512, 10), Some(12));
        let if_name = FixedStr::new(b"net_memif0");
        match h.on_message(Msg::Connect { if_name }, None, free("")) {
            Ok(Step::Connected(Msg::Connected { .. }, s)) => {
                assert_eq!(
                    (s.id, s.peer.as_str(), s.if_name.as_str()),
                    (7, "DPDK 22.11.11", "net_memif0")
                );
                assert_eq!(
                    (s.regions.len(), s.regions[0].fd, s.regions[0].size),
                    (1, 10, 4_227_328)
                );
                assert_eq!((s.c2s[0].offset, s.c2s[0].eventfd), (0, 11));
                assert_eq!(
                    (s.s2c[0].region, s.s2c[0].offset, s.s2c[0].log2_size),
                    (0, 16_512, 10)
                );
            }
            other => panic!("{other:?}"),
        }
        // Nothing but DISCONNECT after CONNECTED.
        let why = refused(&mut h, Msg::Ack, None, Known::Unknown);
        assert!(why.starts_with("Unexpected message"), "{why}");
    }

    #[test]
    fn init_is_refused_with_the_reasons_peers_print() {
        let cases: [(Msg, Known, &str); 6] = [
            (init(9, ""), Known::Unknown, "ID not found"),
            (init(7, ""), Known::Busy, "Already connected"),
            (
                init(7, ""),
                Known::Free {
                    secret: FixedStr::new(b"abc"),
                },
                "Secret required",
            ),
            (
                init(7, "xyz"),
                Known::Free {
                    secret: FixedStr::new(b"abc"),
                },
                "Incorrect secret",
            ),
            (
                Msg::Init(Init {
                    version: 0x0100,
                    ..match init(7, "") {
                        Msg::Init(i) => i,
                        _ => unreachable!(),
                    }
                }),
                Known::Free {
                    secret: FixedStr::new(b""),
                },
                "Incompatible memif version 1.0",
            ),
            (
                Msg::Init(Init {
                    mode: 1,
                    ..match init(7, "") {
                        Msg::Init(i) => i,
                        _ => unreachable!(),
                    }
                }),
                Known::Free {
                    secret: FixedStr::new(b""),
                },
                "Only ethernet mode supported",
            ),
        ];
        for (m, known, want) in cases {
            let mut h: Handshake<u32> = Handshake::new(OFFER);
            let why = refused(&mut h, m, None, known);
            assert!(why.starts_with(want), "{why} for {want}");
        }
        let mut h: Handshake<u32> = Handshake::new(OFFER);
        match h.on_message(init(7, "abc"), None, free("abc")) {
            Ok(Step::Reply(Msg::Ack)) => {}
            other => panic!("the right secret: {other:?}"),
        }
    }

    #[test]
    fn regions_and_rings_out_of_order_too_many_or_outside_their_region_are_refused() {
        let setup = || {
            let mut h = Handshake::new(OFFER);
            acked(&mut h, init(7, ""), None);
            acked(&mut h, region(0, 33_024), Some(1));
            h
        };
        let k = || Known::Unknown;
        let cases: [(Msg, Option<u32>, &str); 10] = [
            (region(1, 100), None, "Missing region fd"),
            (
                region(2, 100),
                Some(2),
                "Invalid region index 2 (expected 1)",
            ),
            (region(1, 0), Some(2), "region 1 is empty"),
            (ring(true, 0, 0, 0, 10), None, "Missing interrupt fd"),
            (
                ring(true, 0, 1, 0, 10),
                Some(2),
                "Invalid region index 1 for ring",
            ),
            (
                ring(true, 1, 0, 0, 10),
                Some(2),
                "Invalid ring index 1 (expected 0)",
            ),
            (ring(true, 0, 0, 0, 13), Some(2), "ring of 2^13 slots"),
            (
                ring(true, 0, 0, 16_516, 10),
                Some(2),
                "ring at 16516..33028 outside region 0",
            ),
            (
                ring(true, 0, 0, 2, 4),
                Some(2),
                "ring offset 2 is not 4-byte aligned",
            ),
            (
                Msg::Connect {
                    if_name: FixedStr::new(b"x"),
                },
                None,
                "CONNECT before a ring each way",
            ),
        ];
        for (m, fd, want) in cases {
            let mut h = setup();
            let why = refused(&mut h, m, fd, k());
            assert!(why.starts_with(want), "{why:?} for {want:?}");
        }
        // A private header per slot is not supported.
        let mut h = setup();
        let m = Msg::AddRing(AddRing {
            flags: RING_FLAG_C2S,
            index: 0,
            region: 0,
            offset: 0,
            log2_size: 4,
            private_hdr_size: 8,
        });
        assert_eq!(
            refused(&mut h, m, Some(2), k()),
            "private headers not supported"
        );
        // At most `regions` regions and `rings` rings each way.
        let mut h = setup();
        for i in 1..4 {
            acked(&mut h, region(i, 1 << 20), Some(2));
        }
        let why = refused(&mut h, region(4, 1 << 20), Some(2), k());
        assert!(why.starts_with("too many regions (at most 4)"), "{why}");
        let mut h = setup();
        acked(&mut h, region(1, 1 << 20), Some(2));
        for i in 0..2 {
            acked(&mut h, ring(false, i, 1, u32::from(i) * 4096, 6), Some(3));
        }
        let why = refused(&mut h, ring(false, 2, 1, 8192, 6), Some(3), k());
        assert!(
            why.starts_with("too many rings (at most 2 each way)"),
            "{why}"
        );
    }

    #[test]
    fn messages_out_of_turn_are_refused_and_a_disconnect_is_heard_at_any_time() {
        let mut h: Handshake<u32> = Handshake::new(OFFER);
        let why = refused(&mut h, region(0, 100), Some(1), Known::Unknown);
        assert!(why.starts_with("Unexpected message (type 4)"), "{why}");
        let mut h: Handshake<u32> = Handshake::new(OFFER);
        let why = refused(&mut h, OFFER.hello("x"), None, Known::Unknown);
        assert!(why.starts_with("Unexpected message (type 2)"), "{why}");
        let mut h: Handshake<u32> = Handshake::new(OFFER);
        acked(&mut h, init(7, ""), None);
        let why = refused(&mut h, init(7, ""), None, Known::Busy);
        assert!(why.starts_with("Unexpected message (type 3)"), "{why}");
        let mut h: Handshake<u32> = Handshake::new(OFFER);
        match h.on_message(Msg::disconnect("bye"), None, free("")) {
            Ok(Step::PeerDisconnected(why)) => assert_eq!(why, "bye"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hello_advertises_highest_indices_and_caps_the_ring_size() {
        let Msg::Hello(h) = Offer {
            regions: 1,
            rings: 1,
            max_log2: 20,
        }
        .hello("valed") else {
            panic!()
        };
        assert_eq!((h.max_region, h.max_c2s_ring, h.max_s2c_ring), (0, 0, 0));
        assert_eq!(h.max_log2_ring_size, MAX_LOG2_RING_SIZE);
        assert_eq!((h.min_version, h.max_version), (VERSION, VERSION));
        assert_eq!(h.name.as_bytes(), b"valed");
    }
}
