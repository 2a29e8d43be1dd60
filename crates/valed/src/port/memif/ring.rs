//! memif rings in a client's regions, read and written by valed as the server, trusting
//! nothing in them: indices that run beyond the ring break it (the connection is then
//! dropped), and every descriptor's region, offset and length is checked on every use
//! (a bad one is skipped and counted).
//!
//! Indices are free-running `u16`s, as in memif: a ring of `size` slots holds
//! `head - tail` (wrapping) descriptors, at most `size`. On a C2S ring the client
//! publishes frames by moving `head` and valed gives the buffers back by moving `tail`;
//! on an S2C ring the client posts empty buffers by moving `head`, and valed fills them
//! (each up to the length the client gave it, chained with `NEXT` when a frame is
//! longer) and publishes them by moving `tail`.

use crate::sys::peer::PeerMem;
use vale_wire::memif::{COOKIE, DESC_FLAG_NEXT, DESC_LEN, Desc, RING_FLAG_MASK_INT, RingLayout};

/// Descriptors one frame may take; a longer chain is refused (a 64 KiB frame in
/// 1 KiB buffers takes 65).
pub const MAX_CHAIN: usize = 128;

/// Where one ring lies: its region and offset, and its size.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub region: usize,
    pub offset: usize,
    pub log2_size: u8,
}

/// What went wrong on a ring that cannot be used any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error(
        "ring {what} index {index} is {ahead} slots ahead of valed's {ours} (the ring has {size})"
    )]
    Index {
        what: &'static str,
        index: u16,
        ours: u16,
        ahead: u16,
        size: u16,
    },
    #[error("ring header outside its region")]
    Header,
    #[error("wrong cookie {0:#x} on the ring (memif 2.0 rings start with 0x3e31f20)")]
    Cookie(u32),
}

/// Counts of what a pass refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Descriptors naming bytes outside every region.
    pub bad_desc: u64,
    /// Frames whose chain went on past [`MAX_CHAIN`] descriptors or past the largest
    /// frame.
    pub chain_too_long: u64,
}

struct Ring {
    at: Placement,
    layout: RingLayout,
}

impl Ring {
    fn size(&self) -> u16 {
        1 << self.at.log2_size
    }

    fn mem<'a>(&self, regions: &'a [PeerMem]) -> Result<&'a PeerMem, Broken> {
        regions.get(self.at.region).ok_or(Broken::Header)
    }

    fn head(&self, regions: &[PeerMem]) -> Result<u16, Broken> {
        self.mem(regions)?
            .load_u16(self.at.offset + RingLayout::HEAD)
            .ok_or(Broken::Header)
    }

    fn set_tail(&self, regions: &[PeerMem], v: u16) -> Result<(), Broken> {
        self.mem(regions)?
            .store_u16(self.at.offset + self.layout.tail(), v)
            .then_some(())
            .ok_or(Broken::Header)
    }

    fn desc_off(&self, slot: u16) -> usize {
        let i = usize::from(slot & (self.size().wrapping_sub(1)));
        self.at.offset + self.layout.descriptors() + i * DESC_LEN
    }

    fn desc(&self, regions: &[PeerMem], slot: u16) -> Result<Desc, Broken> {
        let mut b = [0u8; DESC_LEN];
        if !self.mem(regions)?.read(self.desc_off(slot), &mut b) {
            return Err(Broken::Header);
        }
        Ok(Desc::decode(&b))
    }

    /// Writes the first 8 bytes of descriptor `slot` (flags, region, length) from `d`.
    fn set_desc_head(&self, regions: &[PeerMem], slot: u16, d: &Desc) -> Result<(), Broken> {
        self.mem(regions)?
            .write(self.desc_off(slot), &d.encode_head())
            .then_some(())
            .ok_or(Broken::Header)
    }

    fn set_desc(&self, regions: &[PeerMem], slot: u16, d: &Desc) -> Result<(), Broken> {
        self.mem(regions)?
            .write(self.desc_off(slot), &d.encode())
            .then_some(())
            .ok_or(Broken::Header)
    }

    /// Descriptors between `ours` and the peer's `head`, checked against the ring's
    /// size.
    fn ahead(&self, regions: &[PeerMem], ours: u16, what: &'static str) -> Result<u16, Broken> {
        let head = self.head(regions)?;
        let ahead = head.wrapping_sub(ours);
        if ahead > self.size() {
            return Err(Broken::Index {
                what,
                index: head,
                ours,
                ahead,
                size: self.size(),
            });
        }
        Ok(ahead)
    }

    /// Sets or clears MASK_INT (valed polls this ring, or wants its eventfd).
    fn mask_interrupts(&self, regions: &[PeerMem], on: bool) -> Result<(), Broken> {
        let m = self.mem(regions)?;
        let off = self.at.offset + RingLayout::FLAGS;
        let flags = m.load_u16(off).ok_or(Broken::Header)?;
        let v = if on {
            flags | RING_FLAG_MASK_INT
        } else {
            flags & !RING_FLAG_MASK_INT
        };
        m.store_u16(off, v).then_some(()).ok_or(Broken::Header)
    }

    /// Checks the cookie the client wrote, and zeroes head and tail, as the server does
    /// before CONNECTED.
    fn reset(&self, regions: &[PeerMem]) -> Result<(), Broken> {
        let m = self.mem(regions)?;
        let cookie = m
            .load_u32(self.at.offset + RingLayout::COOKIE)
            .ok_or(Broken::Header)?;
        if cookie != COOKIE {
            return Err(Broken::Cookie(cookie));
        }
        let ok = m.store_u16(self.at.offset + RingLayout::HEAD, 0)
            && m.store_u16(self.at.offset + self.layout.tail(), 0);
        ok.then_some(()).ok_or(Broken::Header)
    }
}

/// The bytes a descriptor names, checked: `(region, range)`.
fn span(regions: &[PeerMem], d: &Desc) -> Option<(usize, std::ops::Range<usize>)> {
    let r = usize::from(d.region);
    let m = regions.get(r)?;
    Some((r, d.bytes_in(m.len() as u64)?))
}

/// One received frame where the peer put it: its pieces, each checked to lie inside its
/// region, not yet copied. The data plane copies a frame of one piece straight into a
/// slot, and gathers others ([`Chain::gather`]).
pub struct Chain<'a> {
    regions: &'a [PeerMem],
    /// (region, start, length) of each piece.
    segs: &'a [(usize, usize, usize)],
    len: usize,
}

impl<'a> Chain<'a> {
    pub fn new(regions: &'a [PeerMem], segs: &'a [(usize, usize, usize)], len: usize) -> Self {
        Chain { regions, segs, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The frame's bytes in `out` (cleared first).
    pub fn gather(&self, out: &mut Vec<u8>) {
        out.clear();
        for &(r, start, n) in self.segs {
            self.regions[r].append(start, n, out);
        }
    }

    /// A frame of one piece: its memory and where it starts (it is [`Chain::len`] long).
    pub fn single(&self) -> Option<(&'a PeerMem, usize)> {
        match self.segs {
            [(r, start, _)] => Some((&self.regions[*r], *start)),
            _ => None,
        }
    }
}

/// A frame to send: valed's own bytes, or a fragment of a port's buffer copied straight
/// from there.
#[derive(Clone, Copy)]
pub enum Src<'a> {
    Bytes(&'a [u8]),
    Frag(vale_abi::Frag<'a>),
}

impl Src<'_> {
    pub fn len(&self) -> usize {
        match self {
            Src::Bytes(b) => b.len(),
            Src::Frag(f) => f.len(),
        }
    }

    /// Copies bytes `at..at + n` of the frame to `off` in `mem`.
    pub fn copy_to(&self, at: usize, n: usize, mem: &PeerMem, off: usize) -> bool {
        match self {
            Src::Bytes(b) => b.get(at..at + n).is_some_and(|b| mem.write(off, b)),
            Src::Frag(f) => mem.copy_from_frag(off, f, at, n),
        }
    }
}

/// One frame's chain of descriptors, from the first of `left` published ones: each
/// descriptor's piece (`Some((region, start, len))`, or `None` when it names bytes
/// outside valed's reach) and whether the chain goes on, from `piece(k)` for the `k`th.
/// The pieces go in `segs`; what is refused is counted in `refused`. Returns the
/// descriptors it takes, the frame's length, and whether it is refused (`bad`): a bad
/// descriptor, more than `max_frame` bytes, or a chain past `left` or [`MAX_CHAIN`].
pub(super) fn walk_chain(
    left: u16,
    max_frame: usize,
    segs: &mut Vec<(usize, usize, usize)>,
    refused: &mut Refused,
    mut piece: impl FnMut(u16) -> Result<(Option<(usize, usize, usize)>, bool), Broken>,
) -> Result<(u16, usize, bool), Broken> {
    segs.clear();
    let (mut used, mut len, mut bad) = (0u16, 0usize, false);
    loop {
        let (p, more) = piece(used)?;
        used += 1;
        match p {
            Some(seg) if !bad => {
                if len + seg.2 > max_frame {
                    bad = true;
                    refused.chain_too_long += 1;
                } else {
                    len += seg.2;
                    segs.push(seg);
                }
            }
            Some(_) => {}
            None => {
                if !bad {
                    refused.bad_desc += 1;
                }
                bad = true;
            }
        }
        if !more {
            return Ok((used, len, bad));
        }
        if used >= left || usize::from(used) >= MAX_CHAIN {
            // A chain that runs past what the peer published, or longer than any frame:
            // what it published so far is given back, unread.
            if !bad {
                refused.chain_too_long += 1;
            }
            return Ok((used, len, true));
        }
    }
}

/// A C2S ring: frames from the client.
pub struct C2s {
    ring: Ring,
    /// The next descriptor valed reads; `tail` is moved here after each pass.
    next: u16,
    /// The pieces of the frame being read.
    segs: Vec<(usize, usize, usize)>,
}

impl C2s {
    pub fn new(at: Placement, layout: RingLayout) -> C2s {
        C2s {
            ring: Ring { at, layout },
            next: 0,
            segs: Vec::with_capacity(MAX_CHAIN),
        }
    }

    /// Zeroes the ring's indices and masks its interrupts (valed polls), at connect.
    pub fn connect(&mut self, regions: &[PeerMem]) -> Result<(), Broken> {
        self.next = 0;
        self.ring.reset(regions)?;
        self.ring.mask_interrupts(regions, true)
    }

    /// Asks for the client's eventfd (`on` false) before valed sleeps, or not.
    pub fn mask_interrupts(&self, regions: &[PeerMem], on: bool) -> Result<(), Broken> {
        self.ring.mask_interrupts(regions, on)
    }

    /// Frames waiting.
    pub fn pending(&self, regions: &[PeerMem]) -> Result<u16, Broken> {
        self.ring.ahead(regions, self.next, "C2S head")
    }

    /// Up to `max` frames, each copied into `frame` (cleared first) and offered to
    /// `take`, which returns false when it has no room for it: the frame then stays in
    /// the ring for the next call, and this one ends. Frames with a bad descriptor or too
    /// long a chain are skipped and counted. The buffers taken go back to the client
    /// (`tail` moves) at the end.
    pub fn recv(
        &mut self,
        regions: &[PeerMem],
        max: usize,
        max_frame: usize,
        frame: &mut Vec<u8>,
        refused: &mut Refused,
        mut take: impl FnMut(&[u8]) -> bool,
    ) -> Result<usize, Broken> {
        self.recv_chains(regions, max, max_frame, refused, |c| {
            c.gather(frame);
            take(frame)
        })
    }

    /// [`C2s::recv`] without the copy: each frame is offered as a [`Chain`] of checked
    /// pieces in the client's memory.
    pub fn recv_chains(
        &mut self,
        regions: &[PeerMem],
        max: usize,
        max_frame: usize,
        refused: &mut Refused,
        mut take: impl FnMut(&Chain<'_>) -> bool,
    ) -> Result<usize, Broken> {
        let mut left = self.pending(regions)?;
        let mut n = 0;
        while left > 0 && n < max {
            let (ring, next) = (&self.ring, self.next);
            // Most frames are one descriptor: offered with no chain walked. Anything
            // else (a chain, or a descriptor that is refused) takes the walk, which reads
            // the descriptor again and counts what it refuses. One call of `take` for
            // both, so that it is inlined.
            let d = ring.desc(regions, next)?;
            let one = (!d.has_next())
                .then(|| span(regions, &d))
                .flatten()
                .filter(|(_, b)| b.len() <= max_frame)
                .map(|(r, b)| [(r, b.start, b.len())]);
            let (used, len, bad, segs) = match &one {
                Some(seg) => (1, seg[0].2, false, &seg[..]),
                None => {
                    let (used, len, bad) =
                        walk_chain(left, max_frame, &mut self.segs, refused, |k| {
                            let d = ring.desc(regions, next.wrapping_add(k))?;
                            let piece =
                                span(regions, &d).map(|(r, range)| (r, range.start, range.len()));
                            Ok((piece, d.has_next()))
                        })?;
                    (used, len, bad, &self.segs[..])
                }
            };
            if !bad && !take(&Chain::new(regions, segs, len)) {
                break;
            }
            self.next = self.next.wrapping_add(used);
            left -= used;
            n += usize::from(!bad);
        }
        self.ring.set_tail(regions, self.next)?;
        Ok(n)
    }
}

/// Why a frame was not sent on an S2C ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsent {
    /// The client has not posted enough buffers for it.
    Full,
    /// A buffer it posted names bytes outside every region (it was given back empty).
    BadDesc,
    /// The frame needs more than [`MAX_CHAIN`] of the client's buffers.
    TooLong,
}

/// An S2C ring: frames to the client, in the buffers it posted.
pub struct S2c {
    ring: Ring,
    /// The next posted buffer valed fills; `tail` is set here by [`S2c::publish`].
    next: u16,
    /// Buffers known to be posted from `next` on (the client may have posted more).
    posted: u16,
    /// The descriptors of the frame being sent.
    descs: Vec<Desc>,
}

impl S2c {
    pub fn new(at: Placement, layout: RingLayout) -> S2c {
        S2c {
            ring: Ring { at, layout },
            next: 0,
            posted: 0,
            descs: Vec::with_capacity(MAX_CHAIN),
        }
    }

    /// Zeroes the ring's indices, at connect.
    pub fn connect(&mut self, regions: &[PeerMem]) -> Result<(), Broken> {
        self.next = 0;
        self.posted = 0;
        self.ring.reset(regions)
    }

    /// Whether the client asked not to be signalled (it polls).
    pub fn masked(&self, regions: &[PeerMem]) -> bool {
        self.ring
            .mem(regions)
            .ok()
            .and_then(|m| m.load_u16(self.ring.at.offset + RingLayout::FLAGS))
            .is_some_and(|f| f & RING_FLAG_MASK_INT != 0)
    }

    /// Copies `frame` into the next posted buffers (as many as it needs, chained).
    pub fn send(
        &mut self,
        regions: &[PeerMem],
        frame: &[u8],
    ) -> Result<Result<(), Unsent>, Broken> {
        self.send_src(regions, Src::Bytes(frame))
    }

    /// [`S2c::send`] from any [`Src`].
    pub fn send_src(
        &mut self,
        regions: &[PeerMem],
        frame: Src<'_>,
    ) -> Result<Result<(), Unsent>, Broken> {
        // Most frames fit the next posted buffer: one descriptor read and checked, the
        // frame copied, and its length and flags written back (region and offset stay
        // what the client posted).
        if self.posted == 0 {
            self.posted = self.ring.ahead(regions, self.next, "S2C head")?;
        }
        if self.posted > 0 {
            let d = self.ring.desc(regions, self.next)?;
            if d.length as usize >= frame.len().max(1) {
                if let Some((r, range)) = span(regions, &d) {
                    frame.copy_to(0, frame.len(), &regions[r], range.start);
                    let out = Desc {
                        length: frame.len() as u32,
                        flags: 0,
                        ..d
                    };
                    self.ring.set_desc_head(regions, self.next, &out)?;
                    self.next = self.next.wrapping_add(1);
                    self.posted -= 1;
                    return Ok(Ok(()));
                }
            }
        }
        // Measure first: the frame goes whole or not at all.
        let (mut room, mut used) = (0usize, 0u16);
        self.descs.clear();
        while room < frame.len().max(1) {
            if used >= self.posted {
                // What the client posted since valed last looked (its head is read only
                // when the buffers known to be posted run out: it is a cache line the
                // client writes).
                self.posted = self.ring.ahead(regions, self.next, "S2C head")?;
                if used >= self.posted {
                    return Ok(Err(Unsent::Full));
                }
            }
            if usize::from(used) >= MAX_CHAIN {
                return Ok(Err(Unsent::TooLong));
            }
            let d = self.ring.desc(regions, self.next.wrapping_add(used))?;
            if span(regions, &d).is_none() {
                // Unusable: it and those measured before it go back empty, so the ring
                // does not stall on it.
                for k in 0..=used {
                    let slot = self.next.wrapping_add(k);
                    let old = self.ring.desc(regions, slot)?;
                    let empty = Desc {
                        length: 0,
                        flags: 0,
                        ..old
                    };
                    self.ring.set_desc(regions, slot, &empty)?;
                }
                self.next = self.next.wrapping_add(used + 1);
                self.posted -= used + 1;
                return Ok(Err(Unsent::BadDesc));
            }
            self.descs.push(d);
            room += d.length as usize;
            used += 1;
        }
        let mut at = 0;
        for (i, d) in self.descs.iter().enumerate() {
            let n = (d.length as usize).min(frame.len() - at);
            let (r, range) = span(regions, d).expect("checked above");
            frame.copy_to(at, n, &regions[r], range.start);
            at += n;
            let last = i + 1 == usize::from(used);
            let out = Desc {
                length: n as u32,
                flags: if last { 0 } else { DESC_FLAG_NEXT },
                ..*d
            };
            self.ring
                .set_desc(regions, self.next.wrapping_add(i as u16), &out)?;
        }
        self.next = self.next.wrapping_add(used);
        self.posted -= used;
        Ok(Ok(()))
    }

    /// Hands the frames sent since the last call to the client (moves `tail`).
    pub fn publish(&self, regions: &[PeerMem]) -> Result<(), Broken> {
        self.ring.set_tail(regions, self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::{AsFd, OwnedFd};

    const LOG2: u8 = 4;
    const SLOTS: usize = 1 << LOG2;
    const BUF: usize = 256;
    const L: RingLayout = RingLayout::X86;

    /// A copy-mode region laid out as DPDK's client does (l2-peers.md §1.5): the C2S
    /// ring, the S2C ring, then the C2S buffers and the S2C buffers. Returns valed's
    /// mapping and the client's own view of the same file.
    struct Client {
        fd: OwnedFd,
        mem: Vec<PeerMem>,
        me: PeerMem,
        c2s_head: u16,
        s2c_head: u16,
    }

    fn ring_bytes() -> usize {
        L.ring_bytes(LOG2) as usize
    }

    fn c2s_at() -> Placement {
        Placement {
            region: 0,
            offset: 0,
            log2_size: LOG2,
        }
    }

    fn s2c_at() -> Placement {
        Placement {
            offset: ring_bytes(),
            ..c2s_at()
        }
    }

    fn buf(c2s: bool, j: usize) -> u32 {
        (2 * ring_bytes() + if c2s { 0 } else { SLOTS * BUF } + j * BUF) as u32
    }

    fn client() -> Client {
        let len = (2 * ring_bytes() + 2 * SLOTS * BUF) as u64;
        let fd = rustix::fs::memfd_create("memif-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        let mem = vec![PeerMem::map(fd.as_fd(), len).unwrap()];
        let me = PeerMem::map(fd.as_fd(), len).unwrap();
        for r in [c2s_at(), s2c_at()] {
            assert!(me.write(r.offset, &COOKIE.to_le_bytes()));
        }
        Client {
            fd,
            mem,
            me,
            c2s_head: 0,
            s2c_head: 0,
        }
    }

    impl Client {
        fn desc_at(&self, ring: Placement, slot: u16) -> usize {
            ring.offset + L.descriptors() + usize::from(slot) % SLOTS * DESC_LEN
        }

        fn put_desc(&self, ring: Placement, slot: u16, d: Desc) {
            assert!(self.me.write(self.desc_at(ring, slot), &d.encode()));
        }

        fn get_desc(&self, ring: Placement, slot: u16) -> Desc {
            let mut b = [0u8; DESC_LEN];
            assert!(self.me.read(self.desc_at(ring, slot), &mut b));
            Desc::decode(&b)
        }

        /// Sends a frame on C2S in buffers of `BUF` (chained when longer).
        fn send(&mut self, frame: &[u8]) {
            let parts: Vec<&[u8]> = frame.chunks(BUF).collect();
            for (i, p) in parts.iter().enumerate() {
                let slot = self.c2s_head;
                let off = buf(true, usize::from(slot) % SLOTS);
                assert!(self.me.write(off as usize, p));
                let flags = if i + 1 < parts.len() {
                    DESC_FLAG_NEXT
                } else {
                    0
                };
                self.put_desc(
                    c2s_at(),
                    slot,
                    Desc {
                        flags,
                        region: 0,
                        length: p.len() as u32,
                        offset: off,
                        metadata: 0,
                    },
                );
                self.c2s_head = slot.wrapping_add(1);
            }
            self.publish_c2s();
        }

        fn publish_c2s(&self) {
            assert!(self.me.store_u16(RingLayout::HEAD, self.c2s_head));
        }

        /// Posts `n` empty buffers on S2C.
        fn refill(&mut self, n: usize) {
            for _ in 0..n {
                let slot = self.s2c_head;
                self.put_desc(
                    s2c_at(),
                    slot,
                    Desc {
                        flags: 0,
                        region: 0,
                        length: BUF as u32,
                        offset: buf(false, usize::from(slot) % SLOTS),
                        metadata: 0,
                    },
                );
                self.s2c_head = slot.wrapping_add(1);
            }
            assert!(
                self.me
                    .store_u16(s2c_at().offset + RingLayout::HEAD, self.s2c_head)
            );
        }

        fn c2s_tail(&self) -> u16 {
            self.me.load_u16(L.tail()).unwrap()
        }

        /// The frames valed published on S2C from `from`, chains joined.
        fn received(&self, from: u16) -> Vec<Vec<u8>> {
            let tail = self.me.load_u16(s2c_at().offset + L.tail()).unwrap();
            let (mut out, mut cur, mut slot) = (Vec::new(), Vec::new(), from);
            while slot != tail {
                let d = self.get_desc(s2c_at(), slot);
                let mut b = vec![0u8; d.length as usize];
                assert!(b.is_empty() || self.me.read(d.offset as usize, &mut b));
                cur.extend_from_slice(&b);
                if !d.has_next() {
                    out.push(std::mem::take(&mut cur));
                }
                slot = slot.wrapping_add(1);
            }
            out
        }
    }

    fn recv_all(c2s: &mut C2s, c: &Client, refused: &mut Refused) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        c2s.recv(&c.mem, 64, 65_536, &mut scratch, refused, |f| {
            got.push(f.to_vec());
            true
        })
        .unwrap();
        got
    }

    #[test]
    fn a_ring_without_memifs_cookie_is_refused_at_connect() {
        let c = client();
        assert!(c.me.write(s2c_at().offset, &[0u8; 4]));
        let e = S2c::new(s2c_at(), L).connect(&c.mem).unwrap_err();
        assert_eq!(e, Broken::Cookie(0));
        assert!(C2s::new(c2s_at(), L).connect(&c.mem).is_ok());
    }

    #[test]
    fn frames_from_the_client_arrive_whole_and_their_buffers_go_back() {
        let mut c = client();
        let mut c2s = C2s::new(c2s_at(), L);
        c2s.connect(&c.mem).unwrap();
        assert_eq!(
            c.me.load_u16(RingLayout::FLAGS),
            Some(RING_FLAG_MASK_INT),
            "valed polls"
        );
        let small = vec![0x11u8; 60];
        let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect(); // four buffers
        c.send(&small);
        c.send(&big);
        assert_eq!(c2s.pending(&c.mem), Ok(5));
        let mut r = Refused::default();
        assert_eq!(recv_all(&mut c2s, &c, &mut r), vec![small, big]);
        assert_eq!(r, Refused::default());
        assert_eq!(c.c2s_tail(), 5, "buffers returned");
        // A frame the taker has no room for stays for the next call.
        c.send(&[7u8; 60]);
        let mut scratch = Vec::new();
        let n = c2s
            .recv(&c.mem, 64, 65_536, &mut scratch, &mut r, |_| false)
            .unwrap();
        assert_eq!((n, c.c2s_tail()), (0, 5));
        assert_eq!(recv_all(&mut c2s, &c, &mut r), vec![vec![7u8; 60]]);
        // Around the ring's end, many times.
        for i in 0..100u32 {
            let f = vec![i as u8; 60 + (i as usize * 37) % 600];
            c.send(&f);
            assert_eq!(recv_all(&mut c2s, &c, &mut r), vec![f]);
        }
        assert_eq!(c.c2s_tail(), c.c2s_head);
        // Before sleeping valed asks for the client's eventfd.
        c2s.mask_interrupts(&c.mem, false).unwrap();
        assert_eq!(c.me.load_u16(RingLayout::FLAGS), Some(0));
    }

    #[test]
    fn bad_descriptors_long_chains_and_runaway_heads_are_refused() {
        let mut c = client();
        let mut c2s = C2s::new(c2s_at(), L);
        c2s.connect(&c.mem).unwrap();
        let mut r = Refused::default();
        // A descriptor past the region's end, between two good frames.
        c.send(&[1u8; 60]);
        let slot = c.c2s_head;
        c.put_desc(
            c2s_at(),
            slot,
            Desc {
                region: 0,
                length: 64,
                offset: u32::MAX - 10,
                ..Desc::default()
            },
        );
        c.c2s_head += 1;
        c.publish_c2s();
        c.send(&[2u8; 60]);
        // And one naming a region that does not exist.
        let slot = c.c2s_head;
        c.put_desc(
            c2s_at(),
            slot,
            Desc {
                region: 3,
                length: 64,
                offset: 0,
                ..Desc::default()
            },
        );
        c.c2s_head += 1;
        c.publish_c2s();
        let got = recv_all(&mut c2s, &c, &mut r);
        assert_eq!(got, vec![vec![1u8; 60], vec![2u8; 60]]);
        assert_eq!(r.bad_desc, 2);
        assert_eq!(c.c2s_tail(), c.c2s_head, "bad ones given back too");
        // A chain that never ends (NEXT on everything published).
        for _ in 0..3 {
            let slot = c.c2s_head;
            c.put_desc(
                c2s_at(),
                slot,
                Desc {
                    flags: DESC_FLAG_NEXT,
                    length: 10,
                    offset: buf(true, 0),
                    ..Desc::default()
                },
            );
            c.c2s_head += 1;
        }
        c.publish_c2s();
        assert!(recv_all(&mut c2s, &c, &mut r).is_empty());
        assert_eq!(r.chain_too_long, 1);
        // A frame longer than the largest one allowed.
        c.send(&[3u8; 1000]);
        let mut scratch = Vec::new();
        let n = c2s
            .recv(&c.mem, 64, 500, &mut scratch, &mut r, |_| true)
            .unwrap();
        assert_eq!((n, r.chain_too_long), (0, 2));
        // A head more than a ring ahead breaks the ring.
        assert!(c.me.store_u16(RingLayout::HEAD, c.c2s_head.wrapping_add(SLOTS as u16 + 1)));
        let e = c2s.pending(&c.mem).unwrap_err();
        assert!(e.to_string().contains("17 slots ahead"), "{e}");
    }

    #[test]
    fn frames_to_the_client_fill_its_buffers_chained_and_wait_for_room() {
        let mut c = client();
        let mut s2c = S2c::new(s2c_at(), L);
        s2c.connect(&c.mem).unwrap();
        assert!(!s2c.masked(&c.mem), "the client wants its eventfd");
        let flags = s2c_at().offset + RingLayout::FLAGS;
        assert!(c.me.store_u16(flags, RING_FLAG_MASK_INT));
        assert!(s2c.masked(&c.mem), "the client polls");
        assert_eq!(
            s2c.send(&c.mem, &[1u8; 60]),
            Ok(Err(Unsent::Full)),
            "nothing posted"
        );
        c.refill(SLOTS);
        let big: Vec<u8> = (0..700u32).map(|i| (i * 3) as u8).collect(); // three buffers
        assert_eq!(s2c.send(&c.mem, &[1u8; 60]), Ok(Ok(())));
        assert_eq!(s2c.send(&c.mem, &big), Ok(Ok(())));
        assert!(c.received(0).is_empty(), "not published yet");
        s2c.publish(&c.mem).unwrap();
        assert_eq!(c.received(0), vec![vec![1u8; 60], big.clone()]);
        // 12 buffers left: a frame of 13 buffers does not fit, and takes none.
        assert_eq!(
            s2c.send(&c.mem, &vec![0u8; 13 * BUF]),
            Ok(Err(Unsent::Full))
        );
        assert_eq!(s2c.send(&c.mem, &vec![9u8; 12 * BUF]), Ok(Ok(())));
        s2c.publish(&c.mem).unwrap();
        assert_eq!(c.received(4), vec![vec![9u8; 12 * BUF]]);
        // A posted buffer outside the region is handed back empty and counted by the
        // caller; the next one works.
        c.refill(2);
        let slot = c.s2c_head.wrapping_sub(2);
        c.put_desc(
            s2c_at(),
            slot,
            Desc {
                length: BUF as u32,
                offset: u32::MAX - 5,
                ..Desc::default()
            },
        );
        assert_eq!(s2c.send(&c.mem, &[5u8; 60]), Ok(Err(Unsent::BadDesc)));
        assert_eq!(s2c.send(&c.mem, &[6u8; 60]), Ok(Ok(())));
        s2c.publish(&c.mem).unwrap();
        assert_eq!(c.received(slot), vec![vec![], vec![6u8; 60]]);
        // A bad buffer in the middle of a chain: the frame is not sent, and the buffers
        // measured for it go back empty too (none is published holding stale bytes).
        c.refill(2);
        let slot = c.s2c_head.wrapping_sub(1);
        c.put_desc(
            s2c_at(),
            slot,
            Desc {
                length: BUF as u32,
                offset: u32::MAX - 5,
                ..Desc::default()
            },
        );
        let from = c.s2c_head.wrapping_sub(2);
        assert_eq!(s2c.send(&c.mem, &[7u8; 300]), Ok(Err(Unsent::BadDesc)));
        s2c.publish(&c.mem).unwrap();
        assert_eq!(c.received(from), vec![Vec::<u8>::new(), Vec::new()]);
        // A head a ring and more ahead breaks it.
        assert!(c.me.store_u16(
            s2c_at().offset + RingLayout::HEAD,
            c.s2c_head.wrapping_add(40)
        ));
        assert!(matches!(s2c.send(&c.mem, &[1]), Err(Broken::Index { .. })));
        drop(c.fd);
    }
}
