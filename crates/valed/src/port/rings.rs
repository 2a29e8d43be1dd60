//! A driven port's side of its rings: frames into the TX ring (as many slots as they
//! take, `NS_MOREFRAG`), packets out of the RX ring, for every kind alike.

use vale_abi::AppRing;
use vale_abi::layout::NS_MOREFRAG;

/// The application side of a driven port's rings (TX ring 0, RX ring 0).
pub struct PortRings {
    pub tx: AppRing,
    pub rx: AppRing,
}

/// Slots the largest frame of `max` bytes takes in `ring`'s buffers: the room a pull
/// needs before it reads one more frame.
pub fn room(ring: &AppRing, max: usize) -> u32 {
    max.div_ceil(ring.view().bufs().buf_size() as usize) as u32
}

/// Copies one frame into the next free slots of a TX ring (the caller checked there is
/// room), several with `NS_MOREFRAG` if it is larger than a buffer, and moves `head`
/// past them.
pub fn ring_put(ring: &AppRing, frame: &[u8]) {
    let v = ring.view();
    let bs = v.bufs().buf_size() as usize;
    let n = ring.num_slots();
    let parts = frame.len().div_ceil(bs).max(1);
    let mut h = ring.head();
    for x in 0..parts {
        let chunk = &frame[(x * bs).min(frame.len())..((x + 1) * bs).min(frame.len())];
        let s = v.read_slot(h);
        v.bufs().write(s.buf_idx, chunk);
        let flags = if x + 1 < parts { NS_MOREFRAG } else { 0 };
        v.write_len_flags(h, chunk.len() as u16, flags);
        h = vale_abi::ring::next(h, n);
    }
    ring.advance(parts as u32);
}

/// The next packet of an RX ring, from `head`: the slots it takes and its length
/// (a chain cut short by the ring's end is taken as it is).
pub fn ring_peek(ring: &AppRing) -> (u32, usize) {
    peek_at(ring.view(), ring.head(), ring.space())
}

/// [`ring_peek`] from a position of the caller's, with `space` slots ready from it (a
/// pass that moves `head` once at its end).
#[inline]
pub fn peek_at(v: &vale_abi::RingView, head: u32, space: u32) -> (u32, usize) {
    let n = v.num_slots();
    let (mut used, mut len, mut h) = (0u32, 0usize, head);
    loop {
        let s = v.read_slot(h);
        len += s.len as usize;
        used += 1;
        h = vale_abi::ring::next(h, n);
        if s.flags & NS_MOREFRAG == 0 || used >= space {
            return (used, len);
        }
    }
}

/// Copies the `used` slots from `head` (a packet `ring_peek` measured) into `dst`, which
/// is as long as the packet.
pub fn ring_copy(ring: &AppRing, used: u32, dst: &mut [u8]) {
    copy_at(ring.view(), ring.head(), used, dst)
}

/// [`ring_copy`] from a position of the caller's.
pub fn copy_at(v: &vale_abi::RingView, head: u32, used: u32, dst: &mut [u8]) {
    let n = v.num_slots();
    let (mut at, mut h) = (0usize, head);
    for _ in 0..used {
        let s = v.read_slot(h);
        let l = (s.len as usize).min(dst.len() - at);
        v.bufs().read(s.buf_idx, &mut dst[at..at + l]);
        at += l;
        h = vale_abi::ring::next(h, n);
    }
}

/// Takes the next packet of an RX ring (fragments joined) into `out`, and moves `head`
/// past it.
pub fn ring_take(ring: &AppRing, out: &mut Vec<u8>) {
    let (used, len) = ring_peek(ring);
    out.clear();
    out.resize(len, 0);
    ring_copy(ring, used, out);
    ring.advance(used);
}

#[cfg(test)]
mod tests {
    use super::*;
    use vale_abi::{Dir, PortGeometry, Region};

    fn ring(slots: u32, buf_size: u32) -> (Region, AppRing) {
        let g = PortGeometry {
            tx_slots: slots,
            rx_slots: slots,
            buf_size,
            ..Default::default()
        };
        let r = Region::create("rings-test", g).unwrap();
        let tx = AppRing::new(r.ring(Dir::Tx, 0).unwrap());
        (r, tx)
    }

    /// Lets the same ring be read back: `[from, from + k)` becomes the readable part.
    fn rewind(r: &AppRing, from: u32, k: u32) {
        let v = r.view();
        v.set_head(from);
        v.set_cur(from);
        v.set_tail(vale_abi::ring::add(from, k, r.num_slots()));
    }

    #[test]
    fn a_frame_larger_than_a_buffer_takes_a_chain_and_comes_back_whole() {
        let (_r, tx) = ring(64, 2048);
        let frame: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(room(&tx, frame.len()), 3);
        let before = tx.head();
        ring_put(&tx, &frame);
        assert_eq!(tx.head(), before + 3, "three slots");
        let v = tx.view();
        let flags: Vec<u16> = (0..3).map(|i| v.read_slot(before + i).flags).collect();
        assert_eq!(flags, [NS_MOREFRAG, NS_MOREFRAG, 0]);
        assert_eq!(v.read_slot(before + 2).len, 5000 - 4096);
        rewind(&tx, before, 3);
        assert_eq!(ring_peek(&tx), (3, 5000));
        let mut out = vec![0xa5; 10];
        ring_take(&tx, &mut out);
        assert_eq!(out, frame);
        assert_eq!(tx.space(), 0, "head moved past the packet");
    }

    #[test]
    fn frames_wrap_around_the_ring_end() {
        let (_r, tx) = ring(8, 2048);
        // Move head near the end first.
        tx.advance(6);
        let frame = vec![0x5a; 3000];
        ring_put(&tx, &frame);
        assert_eq!(tx.head(), 0, "wrapped");
        rewind(&tx, 6, 2);
        let mut out = Vec::new();
        ring_take(&tx, &mut out);
        assert_eq!(out, frame);
    }

    #[test]
    fn a_chain_cut_short_by_the_ring_end_is_taken_as_it_is() {
        let (_r, tx) = ring(8, 2048);
        ring_put(&tx, &[1u8; 5000]); // three slots, MOREFRAG on two
        rewind(&tx, 0, 2); // only two of them readable
        assert_eq!(ring_peek(&tx), (2, 4096));
        let mut out = Vec::new();
        ring_take(&tx, &mut out);
        assert_eq!(out.len(), 4096);
        assert_eq!(tx.space(), 0);
    }

    #[test]
    fn an_empty_frame_still_takes_one_slot() {
        let (_r, tx) = ring(8, 2048);
        ring_put(&tx, &[]);
        assert_eq!(tx.head(), 1);
        assert_eq!(tx.view().read_slot(0).len, 0);
    }
}
