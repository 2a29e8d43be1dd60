//! valed as a memif client: its own region and the two rings in it, as the server sees
//! them (l2-peers.md §1.5's copy-mode layout): the C2S ring, the S2C ring, then the C2S
//! buffers and the S2C buffers, one buffer per slot.
//!
//! The client owns every buffer, so valed knows where each lies: slot `j` of a ring
//! always uses buffer `j` of that ring. The server may still write any byte of the
//! region, so nothing is taken back from it but what memif lets it say: the index it
//! moves (`tail` on both rings), checked against what valed published or posted, and
//! on S2C each descriptor's length and `NEXT` flag, checked against the buffer size.
//! Where a descriptor says its bytes are is never read back: valed copies from the
//! buffer the slot owns.
//!
//! The region is a memfd sealed against shrinking and growing before the server sees
//! it, so no access faults whatever the server does with the descriptor.

use super::ring::{Broken, Chain, MAX_CHAIN, Refused, Src, Unsent, walk_chain};
use crate::sys::peer::PeerMem;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};
use vale_wire::memif::{COOKIE, DESC_FLAG_NEXT, DESC_LEN, Desc, RING_FLAG_MASK_INT, RingLayout};

/// The shape of valed's region: slots per ring (as log2) and bytes per buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub log2: u8,
    pub bsize: u32,
}

const L: RingLayout = RingLayout::X86;

impl Geometry {
    pub fn slots(&self) -> u16 {
        1 << self.log2
    }

    fn ring_bytes(&self) -> usize {
        L.ring_bytes(self.log2) as usize
    }

    /// Where the C2S (`c2s`) or S2C ring starts.
    pub fn ring_offset(&self, c2s: bool) -> usize {
        if c2s { 0 } else { self.ring_bytes() }
    }

    /// Where the buffer of `slot` of a ring lies.
    fn buffer(&self, c2s: bool, slot: u16) -> usize {
        let i = usize::from(slot & (self.slots() - 1))
            + if c2s { 0 } else { usize::from(self.slots()) };
        2 * self.ring_bytes() + i * self.bsize as usize
    }

    pub fn region_len(&self) -> usize {
        2 * self.ring_bytes() + 2 * usize::from(self.slots()) * self.bsize as usize
    }
}

/// One of valed's rings: where it is in the region.
struct Ring {
    geo: Geometry,
    c2s: bool,
}

impl Ring {
    fn at(&self, field: usize) -> usize {
        self.geo.ring_offset(self.c2s) + field
    }

    fn desc_at(&self, slot: u16) -> usize {
        self.at(L.descriptors()) + usize::from(slot & (self.geo.slots() - 1)) * DESC_LEN
    }

    /// The descriptor valed puts in `slot`: its own buffer, `length` bytes of it.
    fn put(&self, mem: &PeerMem, slot: u16, length: u32, more: bool) -> Result<(), Broken> {
        let d = Desc {
            flags: if more { DESC_FLAG_NEXT } else { 0 },
            region: 0,
            length,
            offset: self.geo.buffer(self.c2s, slot) as u32,
            metadata: 0,
        };
        mem.write(self.desc_at(slot), &d.encode())
            .then_some(())
            .ok_or(Broken::Header)
    }

    /// The length and `NEXT` flag the server wrote in `slot`.
    fn said(&self, mem: &PeerMem, slot: u16) -> Result<(u32, bool), Broken> {
        let mut b = [0u8; DESC_LEN];
        if !mem.read(self.desc_at(slot), &mut b) {
            return Err(Broken::Header);
        }
        let d = Desc::decode(&b);
        Ok((d.length, d.has_next()))
    }

    fn load(&self, mem: &PeerMem, field: usize) -> Result<u16, Broken> {
        mem.load_u16(self.at(field)).ok_or(Broken::Header)
    }

    fn store(&self, mem: &PeerMem, field: usize, v: u16) -> Result<(), Broken> {
        mem.store_u16(self.at(field), v)
            .then_some(())
            .ok_or(Broken::Header)
    }

    fn tail(&self, mem: &PeerMem) -> Result<u16, Broken> {
        self.load(mem, L.tail())
    }

    fn masked(&self, mem: &PeerMem) -> bool {
        self.load(mem, RingLayout::FLAGS)
            .is_ok_and(|f| f & RING_FLAG_MASK_INT != 0)
    }

    fn mask(&self, mem: &PeerMem, on: bool) -> Result<(), Broken> {
        let f = self.load(mem, RingLayout::FLAGS)?;
        let v = if on {
            f | RING_FLAG_MASK_INT
        } else {
            f & !RING_FLAG_MASK_INT
        };
        self.store(mem, RingLayout::FLAGS, v)
    }

    /// The server's `tail`, which may move from `seen` by at most `out` (what valed
    /// handed it and it has not given back).
    fn moved(&self, mem: &PeerMem, seen: u16, out: u16) -> Result<u16, Broken> {
        let t = self.tail(mem)?;
        let ahead = t.wrapping_sub(seen);
        if ahead > out {
            return Err(Broken::Index {
                what: if self.c2s { "C2S tail" } else { "S2C tail" },
                index: t,
                ours: seen,
                ahead,
                size: self.geo.slots(),
            });
        }
        Ok(ahead)
    }
}

/// valed's region, rings and eventfds as a memif client, and where it is on each ring.
pub struct Own {
    pub mem: PeerMem,
    geo: Geometry,
    c2s: Ring,
    s2c: Ring,
    /// C2S: the next slot valed fills (its `head`), and the server's `tail` when last read.
    tx_head: u16,
    tx_tail: u16,
    /// S2C: the next slot valed reads, and how far it posted buffers (its `head`).
    rx_next: u16,
    rx_head: u16,
    /// valed writes the C2S eventfd after publishing (unless the server masked the
    /// ring); the server writes the S2C one.
    pub c2s_kick: OwnedFd,
    pub s2c_kick: OwnedFd,
    /// The pieces of the frame being read.
    segs: Vec<(usize, usize, usize)>,
    /// Relays `c2s_kick` (valed's own) to the C2S eventfd the server has
    /// (`port::notify`): it shares that file and could make a write to it block.
    _notify: crate::port::notify::Pumps,
}

/// What the handshake sends with ADD_REGION and ADD_RING: the region's memfd and each
/// ring's eventfd (C2S, then S2C).
pub struct Offered {
    pub region: OwnedFd,
    pub c2s_kick: OwnedFd,
    pub s2c_kick: OwnedFd,
}

fn eventfd() -> std::io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

impl Own {
    /// A new region of `geo`'s shape, sealed, with both rings' cookies written and every
    /// descriptor pointing at its slot's buffer.
    pub fn create(
        geo: Geometry,
        held: &std::sync::Arc<crate::port::notify::Held>,
    ) -> std::io::Result<(Own, Offered)> {
        let fd = rustix::fs::memfd_create(
            "valed-memif",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, geo.region_len() as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let mem = PeerMem::map(fd.as_fd(), geo.region_len() as u64)?;
        // The eventfds go to the server, which shares their files: valed reads the
        // S2C one without waiting, and writes the C2S one through a relay of its own
        // (`port::notify`), as it does a client's.
        let (c2s_theirs, s2c_kick) = (eventfd()?, eventfd()?);
        let notify = crate::port::notify::Pumps::start("vale-memif-irq", held, 2)?;
        let c2s_kick = notify.put(0, 0, crate::port::notify::Way::Out, c2s_theirs.try_clone()?)?;
        let own = Own {
            mem,
            geo,
            c2s: Ring { geo, c2s: true },
            s2c: Ring { geo, c2s: false },
            tx_head: 0,
            tx_tail: 0,
            rx_next: 0,
            rx_head: 0,
            c2s_kick,
            s2c_kick,
            segs: Vec::with_capacity(MAX_CHAIN),
            _notify: notify,
        };
        for r in [&own.c2s, &own.s2c] {
            let ok = own
                .mem
                .write(r.at(RingLayout::COOKIE), &COOKIE.to_le_bytes());
            debug_assert!(ok);
            for slot in 0..geo.slots() {
                r.put(&own.mem, slot, geo.bsize, false)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
        }
        let offered = Offered {
            region: fd,
            c2s_kick: c2s_theirs,
            s2c_kick: own.s2c_kick.try_clone()?,
        };
        Ok((own, offered))
    }

    /// At CONNECTED: both rings' indices zeroed, every S2C buffer posted, and the S2C
    /// ring masked (valed polls it while it is busy).
    pub fn start(&mut self) -> Result<(), Broken> {
        for r in [&self.c2s, &self.s2c] {
            r.store(&self.mem, RingLayout::HEAD, 0)?;
            r.store(&self.mem, L.tail(), 0)?;
        }
        (self.tx_head, self.tx_tail, self.rx_next) = (0, 0, 0);
        self.rx_head = self.geo.slots();
        for slot in 0..self.rx_head {
            self.s2c.put(&self.mem, slot, self.geo.bsize, false)?;
        }
        self.s2c.store(&self.mem, RingLayout::HEAD, self.rx_head)?;
        self.s2c.mask(&self.mem, true)
    }

    /// Frames the server published on S2C and valed has not read.
    pub fn pending(&self) -> Result<u16, Broken> {
        self.s2c.moved(
            &self.mem,
            self.rx_next,
            self.rx_head.wrapping_sub(self.rx_next),
        )
    }

    /// Asks for the S2C eventfd (`on` false) before valed sleeps, or not.
    pub fn mask_interrupts(&self, on: bool) -> Result<(), Broken> {
        self.s2c.mask(&self.mem, on)
    }

    /// Up to `max` frames from S2C, each copied into `frame` and offered to `take` (as
    /// [`super::ring::C2s::recv`]); the buffers read are posted again at the end.
    pub fn recv(
        &mut self,
        max: usize,
        max_frame: usize,
        frame: &mut Vec<u8>,
        refused: &mut Refused,
        mut take: impl FnMut(&[u8]) -> bool,
    ) -> Result<usize, Broken> {
        self.recv_chains(max, max_frame, refused, |c| {
            c.gather(frame);
            take(frame)
        })
    }

    /// [`Own::recv`] without the copy: each frame offered as a [`Chain`] of its pieces
    /// in valed's buffers.
    pub fn recv_chains(
        &mut self,
        max: usize,
        max_frame: usize,
        refused: &mut Refused,
        mut take: impl FnMut(&Chain<'_>) -> bool,
    ) -> Result<usize, Broken> {
        let mut left = self.pending()?;
        let start = self.rx_next;
        let mut n = 0;
        while left > 0 && n < max {
            let (s2c, mem, geo, next) = (&self.s2c, &self.mem, self.geo, self.rx_next);
            let (used, total, bad) = walk_chain(left, max_frame, &mut self.segs, refused, |k| {
                let slot = next.wrapping_add(k);
                let (len, more) = s2c.said(mem, slot)?;
                // Where the bytes are is valed's own map; only the length is the server's.
                let piece = (len <= geo.bsize).then(|| (0, geo.buffer(false, slot), len as usize));
                Ok((piece, more))
            })?;
            if !bad
                && !take(&Chain::new(
                    std::slice::from_ref(&self.mem),
                    &self.segs,
                    total,
                ))
            {
                break;
            }
            self.rx_next = self.rx_next.wrapping_add(used);
            left -= used;
            n += usize::from(!bad);
        }
        let read = self.rx_next.wrapping_sub(start);
        if read > 0 {
            for k in 0..read {
                self.s2c.put(
                    &self.mem,
                    self.rx_head.wrapping_add(k),
                    self.geo.bsize,
                    false,
                )?;
            }
            self.rx_head = self.rx_head.wrapping_add(read);
            self.s2c.store(&self.mem, RingLayout::HEAD, self.rx_head)?;
        }
        Ok(n)
    }

    /// Copies `frame` into the next free C2S buffers (chained when it needs several);
    /// published by [`Own::publish`].
    pub fn send(&mut self, frame: &[u8]) -> Result<Result<(), Unsent>, Broken> {
        self.send_src(Src::Bytes(frame))
    }

    /// [`Own::send`] from any [`Src`].
    pub fn send_src(&mut self, frame: Src<'_>) -> Result<Result<(), Unsent>, Broken> {
        let bsize = self.geo.bsize as usize;
        let need = frame.len().max(1).div_ceil(bsize);
        if need > MAX_CHAIN {
            return Ok(Err(Unsent::TooLong));
        }
        let need = need as u16;
        let out = self.tx_head.wrapping_sub(self.tx_tail);
        if self.geo.slots() - out < need {
            // The server's tail is read only when the room known runs out.
            let back = self.c2s.moved(&self.mem, self.tx_tail, out)?;
            self.tx_tail = self.tx_tail.wrapping_add(back);
            if self.geo.slots() - (out - back) < need {
                return Ok(Err(Unsent::Full));
            }
        }
        // (An empty frame still takes a slot, of length 0.)
        for i in 0..usize::from(need) {
            let slot = self.tx_head.wrapping_add(i as u16);
            let at = i * bsize;
            let n = bsize.min(frame.len() - at);
            let ok = frame.copy_to(at, n, &self.mem, self.geo.buffer(true, slot));
            debug_assert!(ok, "valed's own buffer lies in its region");
            self.c2s
                .put(&self.mem, slot, n as u32, i + 1 < usize::from(need))?;
        }
        self.tx_head = self.tx_head.wrapping_add(need);
        Ok(Ok(()))
    }

    /// Hands the frames sent since the last call to the server (moves `head`), and
    /// kicks it unless it polls. Returns whether it was kicked.
    pub fn publish(&self) -> Result<bool, Broken> {
        self.c2s.store(&self.mem, RingLayout::HEAD, self.tx_head)?;
        // The head is visible before the flag is read: a server that clears MASK_INT
        // and then looks at the head (a store then a load, as valed's own `arm` does)
        // sees the head or gets the kick.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if self.c2s.masked(&self.mem) {
            return Ok(false);
        }
        let _ = rustix::io::write(&self.c2s_kick, &1u64.to_ne_bytes());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conn::Conn;
    use super::super::handshake::{Region, Ring as SRing, Setup};
    use super::*;

    const GEO: Geometry = Geometry {
        log2: 4,
        bsize: 256,
    };

    /// valed's client region, and valed's own server side mapping it (the server code
    /// is the reference for what a server sees).
    fn pair() -> (Own, Conn) {
        let (mut own, off) = Own::create(GEO, &Default::default()).unwrap();
        let setup = Setup {
            id: 0,
            peer: "valed".into(),
            if_name: "t".into(),
            regions: vec![Region {
                fd: off.region,
                size: GEO.region_len() as u64,
            }],
            c2s: vec![SRing {
                region: 0,
                offset: GEO.ring_offset(true) as u32,
                log2_size: GEO.log2,
                eventfd: off.c2s_kick,
            }],
            s2c: vec![SRing {
                region: 0,
                offset: GEO.ring_offset(false) as u32,
                log2_size: GEO.log2,
                eventfd: off.s2c_kick,
            }],
        };
        let conn = Conn::map(setup, false, &Default::default()).unwrap();
        own.start().unwrap();
        (own, conn)
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    #[test]
    fn the_region_is_sealed_and_laid_out_as_dpdk_does() {
        let (own, off) = Own::create(GEO, &Default::default()).unwrap();
        let seals = rustix::fs::fcntl_get_seals(&off.region).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        assert!(rustix::fs::ftruncate(&off.region, 10).is_err());
        assert_eq!(GEO.ring_offset(false), 128 + 16 * 16);
        assert_eq!(GEO.region_len(), 2 * (128 + 256) + 2 * 16 * 256);
        assert_eq!(own.mem.load_u32(0), Some(COOKIE));
        assert_eq!(own.mem.load_u32(GEO.ring_offset(false)), Some(COOKIE));
    }

    #[test]
    fn frames_go_both_ways_through_a_server_chained_when_longer_than_a_buffer() {
        let (mut own, mut conn) = pair();
        // valed (client) -> server, one short and one chained frame.
        let (a, b) = (frame(60, 1), frame(700, 2));
        assert_eq!(own.send(&a), Ok(Ok(())));
        assert_eq!(own.send(&b), Ok(Ok(())));
        assert_eq!(
            own.publish(),
            Ok(false),
            "the server polls C2S (it masked it)"
        );
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let mut r = Refused::default();
        let n = conn.c2s[0]
            .recv(&conn.regions, 64, 65536, &mut scratch, &mut r, |f| {
                got.push(f.to_vec());
                true
            })
            .unwrap();
        assert_eq!((n, r), (2, Refused::default()));
        assert_eq!(got, vec![a.clone(), b.clone()]);
        // server -> valed: the client posted all its S2C buffers at start.
        for f in [&b, &a] {
            assert_eq!(conn.s2c[0].send(&conn.regions, f), Ok(Ok(())));
        }
        conn.s2c[0].publish(&conn.regions).unwrap();
        assert_eq!(own.pending(), Ok(3 + 1));
        got.clear();
        let n = own
            .recv(64, 65536, &mut scratch, &mut r, |f| {
                got.push(f.to_vec());
                true
            })
            .unwrap();
        assert_eq!((n, r), (2, Refused::default()));
        assert_eq!(got, vec![b, a]);
        assert_eq!(own.pending(), Ok(0));
    }

    #[test]
    fn a_full_c2s_ring_waits_for_the_server_and_wraps() {
        let (mut own, mut conn) = pair();
        let f = frame(100, 3);
        for _ in 0..16 {
            assert_eq!(own.send(&f), Ok(Ok(())));
        }
        assert_eq!(own.send(&f), Ok(Err(Unsent::Full)));
        own.publish().unwrap();
        let mut r = Refused::default();
        let mut s = Vec::new();
        for round in 0..5 {
            let n = conn.c2s[0]
                .recv(&conn.regions, 64, 65536, &mut s, &mut r, |g| g == f)
                .unwrap();
            assert_eq!(n, 16, "round {round}");
            for _ in 0..16 {
                assert_eq!(own.send(&f), Ok(Ok(())));
            }
            own.publish().unwrap();
        }
        // And S2C the same: the server fills what was posted, valed reads and reposts.
        for _ in 0..5 {
            for _ in 0..16 {
                assert_eq!(conn.s2c[0].send(&conn.regions, &f), Ok(Ok(())));
            }
            assert_eq!(
                conn.s2c[0].send(&conn.regions, &f),
                Ok(Err(Unsent::Full)),
                "valed posted 16"
            );
            conn.s2c[0].publish(&conn.regions).unwrap();
            let n = own.recv(64, 65536, &mut s, &mut r, |g| g == f).unwrap();
            assert_eq!(n, 16);
        }
        assert_eq!(r, Refused::default());
    }

    #[test]
    fn what_a_hostile_server_writes_is_judged() {
        let (mut own, conn) = pair();
        let mem = &conn.regions[0];
        let s2c = GEO.ring_offset(false);
        let desc = |slot: usize| s2c + L.descriptors() + slot * DESC_LEN;
        // A tail beyond what valed posted breaks the ring.
        assert!(mem.store_u16(s2c + L.tail(), 17));
        assert!(matches!(own.pending(), Err(Broken::Index { .. })));
        // A length beyond the buffer is refused and counted; a chain past what was
        // published is too long; a rewritten offset is ignored (valed reads its own
        // buffer).
        let bad = Desc {
            flags: 0,
            region: 0,
            length: 257,
            offset: 0,
            metadata: 0,
        };
        assert!(mem.write(desc(0), &bad.encode()));
        let moved = Desc {
            length: 10,
            offset: 0,
            region: 9,
            ..bad
        };
        assert!(mem.write(desc(1), &moved.encode()));
        let open = Desc {
            flags: DESC_FLAG_NEXT,
            length: 10,
            ..bad
        };
        assert!(mem.write(desc(2), &open.encode()));
        assert!(mem.write(GEO.buffer(false, 1), b"0123456789"));
        assert!(mem.store_u16(s2c + L.tail(), 3));
        let mut r = Refused::default();
        let mut got = Vec::new();
        let mut s = Vec::new();
        let n = own
            .recv(64, 65536, &mut s, &mut r, |f| {
                got.push(f.to_vec());
                true
            })
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(got, vec![b"0123456789".to_vec()]);
        assert_eq!(
            r,
            Refused {
                bad_desc: 1,
                chain_too_long: 1
            }
        );
        // Every slot read was posted again, with valed's own offsets.
        assert_eq!(mem.load_u16(s2c + RingLayout::HEAD), Some(16 + 3));
        // A C2S tail the server moved past what valed published breaks that ring.
        for _ in 0..16 {
            assert_eq!(own.send(&[0u8; 10]), Ok(Ok(())));
        }
        assert!(mem.store_u16(GEO.ring_offset(true) + L.tail(), 17));
        assert!(matches!(own.send(&[0u8; 10]), Err(Broken::Index { .. })));
    }

    #[test]
    fn valed_kicks_only_a_server_that_does_not_poll() {
        let (mut own, conn) = pair();
        own.send(&[1u8; 60]).unwrap().unwrap();
        assert_eq!(own.publish(), Ok(false), "the server masked C2S at connect");
        conn.c2s[0].mask_interrupts(&conn.regions, false).unwrap();
        assert_eq!(own.publish(), Ok(true));
        // Relayed by both sides' notifier threads (valed's own eventfds each side).
        assert!(crate::sys::readable_within(conn.c2s_kick[0].as_fd(), 2000));
        let mut b = [0u8; 8];
        assert_eq!(rustix::io::read(&conn.c2s_kick[0], &mut b), Ok(8));
        // valed masks S2C while it polls, and clears the flag to be kicked.
        assert!(conn.s2c[0].masked(&conn.regions));
        own.mask_interrupts(false).unwrap();
        assert!(!conn.s2c[0].masked(&conn.regions));
    }
}
