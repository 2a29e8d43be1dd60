//! The forwarding thread's split-ring walker (virtio 1.x, 2.7): a queue's descriptor
//! table, avail and used rings found in guest memory once per burst, then read and
//! written by index math through [`GuestMap`]'s checked accesses, not through the vhost
//! crate's per-access `Queue` API. The queue's own cursors (`next_avail`, `next_used`)
//! stay in `virtio_queue::Queue`, read at the start of a burst and written back at its
//! end, so the vhost crate's `GET_VRING_BASE` and notification calls see them.
//!
//! Nothing the guest wrote is trusted: a descriptor's address and length are checked
//! against the region table (a descriptor may span adjacent regions), `next` links
//! against the table's size, chains against the ring's size (loops), and indirect
//! tables (not offered: VIRTIO_F_INDIRECT_DESC is not in our features) are refused.

use crate::sys::guest::{GuestMap, Span};
use std::num::Wrapping;
use std::sync::atomic::Ordering;
use virtio_queue::QueueT;

pub(crate) const F_NEXT: u16 = 1;
pub(crate) const F_WRITE: u16 = 2;
pub(crate) const F_INDIRECT: u16 = 4;
/// The driver asks for no interrupts (without EVENT_IDX).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// The device asks for no kicks (without EVENT_IDX).
const USED_F_NO_NOTIFY: u16 = 1;

/// A queue's three parts in guest memory, each inside one region.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Split {
    desc: Span,
    avail: Span,
    used: Span,
    size: u16,
    event_idx: bool,
}

/// One descriptor, as read (once) from the table.
#[derive(Clone, Copy, Debug)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// What walking one chain found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// Every descriptor is guest memory of the right direction; their bytes in total.
    Ok(usize),
    /// More bytes than the caller takes (the memory was checked first).
    TooBig,
    /// A descriptor outside guest memory, of the wrong direction, indirect, a link to
    /// no descriptor, a loop.
    Bad,
}

impl Split {
    /// Queue `q`'s parts, if its size is a power of two and each part lies inside one
    /// region of `m` (the used ring with `avail_event`, the avail ring with
    /// `used_event`: read and written whether or not EVENT_IDX was negotiated).
    pub(crate) fn of(m: &GuestMap, q: &virtio_queue::Queue) -> Option<Split> {
        let size = q.size();
        if size == 0 || !size.is_power_of_two() {
            return None;
        }
        let n = usize::from(size);
        Some(Split {
            desc: m.span(q.desc_table(), 16 * n)?,
            avail: m.span(q.avail_ring(), 6 + 2 * n)?,
            used: m.span(q.used_ring(), 6 + 8 * n)?,
            size,
            event_idx: q.event_idx_enabled(),
        })
    }

    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    /// The driver's avail index (Acquire: the entries and descriptors it published
    /// with it are visible after).
    #[inline]
    pub(crate) fn avail_idx_acquire(&self, m: &GuestMap) -> Option<u16> {
        m.load_u16(self.avail, 2, Ordering::Acquire)
    }

    /// The head of the chain in avail entry `i` (after an Acquire of the index).
    #[inline]
    pub(crate) fn avail_head(&self, m: &GuestMap, i: u16) -> Option<u16> {
        let at = 4 + 2 * usize::from(i & (self.size - 1));
        m.load_u16(self.avail, at, Ordering::Relaxed)
    }

    /// Writes used entry `i` (the chain's head, the bytes written to it); it becomes
    /// the guest's at the next [`Split::publish_used_release`] past it.
    #[inline]
    pub(crate) fn set_used(&self, m: &GuestMap, i: u16, head: u16, len: u32) -> bool {
        let at = 4 + 8 * usize::from(i & (self.size - 1));
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        m.write(self.used, at, &e)
    }

    /// Stores the used index (Release: every entry written before is visible to a
    /// guest that sees it).
    #[inline]
    pub(crate) fn publish_used_release(&self, m: &GuestMap, idx: u16) -> bool {
        m.store_u16(self.used, 2, idx, Ordering::Release)
    }

    /// Whether the guest asked to hear of the entries used from `old` to `now` (the
    /// used index at the last decision, if there was one since the queue was set up,
    /// and now, both published): none if nothing was used since; with EVENT_IDX when
    /// its `used_event` lies among them (Linux's `vring_need_event`), without it unless
    /// it set VRING_AVAIL_F_NO_INTERRUPT. Not knowing (a first decision with EVENT_IDX,
    /// more entries than the ring holds, a read that fails) is a signal: one too many
    /// costs the guest an interrupt, one too few could leave it waiting for ever.
    pub(crate) fn wants_signal(&self, m: &GuestMap, old: Option<u16>, now: u16) -> bool {
        if old == Some(now) {
            return false;
        }
        // The used index was stored before the guest's wish is read (a guest that
        // changes it meanwhile then sees the new index).
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.event_idx {
            return m
                .load_u16(self.avail, 0, Ordering::Relaxed)
                .is_none_or(|f| f & AVAIL_F_NO_INTERRUPT == 0);
        }
        let Some(old) = old else {
            return true;
        };
        let (old, now) = (Wrapping(old), Wrapping(now));
        if (now - old).0 > self.size {
            return true;
        }
        let at = 4 + 2 * usize::from(self.size);
        match m.load_u16(self.avail, at, Ordering::Relaxed) {
            Some(ev) => now - Wrapping(ev) - Wrapping(1) < now - old,
            None => true,
        }
    }

    /// Asks the driver to kick when it makes avail entries past `next` (the next one
    /// the device takes): with EVENT_IDX, `avail_event` set to `next`; without it,
    /// VRING_USED_F_NO_NOTIFY cleared. Then whether entries are there already (the
    /// avail index read after the wish is stored): `None` if the ring cannot be read.
    /// As `virtio_queue::Queue::enable_notification` does, but through the memory the
    /// forwarding thread watches for truncation.
    pub(crate) fn kick_past(&self, m: &GuestMap, next: u16) -> Option<bool> {
        let stored = if self.event_idx {
            m.store_u16(
                self.used,
                4 + 8 * usize::from(self.size),
                next,
                Ordering::Relaxed,
            )
        } else {
            m.store_u16(self.used, 0, 0, Ordering::Relaxed)
        };
        if !stored {
            return None;
        }
        // The wish is stored before the index is read (a driver that adds an entry
        // meanwhile then sees the wish, or the device sees the entry).
        std::sync::atomic::fence(Ordering::SeqCst);
        Some(m.load_u16(self.avail, 2, Ordering::Relaxed)? != next)
    }

    /// Asks the driver not to kick (the device polls): VRING_USED_F_NO_NOTIFY set
    /// without EVENT_IDX; with it, nothing (the driver kicks only at `avail_event`,
    /// which stays behind).
    pub(crate) fn no_kicks(&self, m: &GuestMap) {
        if !self.event_idx {
            m.store_u16(self.used, 0, USED_F_NO_NOTIFY, Ordering::Relaxed);
        }
    }

    fn desc(&self, m: &GuestMap, i: u16) -> Option<Desc> {
        let mut b = [0u8; 16];
        if i >= self.size || !m.read(self.desc, 16 * usize::from(i), &mut b) {
            return None;
        }
        let w = |o: usize, n: usize| {
            let mut x = [0u8; 8];
            x[..n].copy_from_slice(&b[o..o + n]);
            u64::from_le_bytes(x)
        };
        Some(Desc {
            addr: w(0, 8),
            len: w(8, 4) as u32,
            flags: w(12, 2) as u16,
            next: w(14, 2) as u16,
        })
    }

    /// Walks the chain from `head`, appending the guest memory of its descriptors to
    /// `out` as spans (a descriptor across two regions gives two). `write`: the device
    /// writes them (RX buffers), else reads them (TX frames); a descriptor of the other
    /// direction makes the chain bad. More than `max` bytes in all is [`Walk::TooBig`]
    /// once the whole chain was found to be guest memory.
    pub(crate) fn walk(
        &self,
        m: &GuestMap,
        head: u16,
        write: bool,
        max: usize,
        out: &mut Vec<Span>,
    ) -> Walk {
        let mut i = head;
        let mut total = 0u64;
        // A chain has at most `size` descriptors; more is a loop.
        for _ in 0..self.size {
            let Some(d) = self.desc(m, i) else {
                return Walk::Bad;
            };
            if d.flags & F_INDIRECT != 0 || (d.flags & F_WRITE != 0) != write {
                return Walk::Bad;
            }
            if !m.spans(d.addr, u64::from(d.len), |s| out.push(s)) {
                return Walk::Bad;
            }
            total += u64::from(d.len);
            if d.flags & F_NEXT == 0 {
                return if total > max as u64 {
                    Walk::TooBig
                } else {
                    Walk::Ok(total as usize)
                };
            }
            i = d.next;
        }
        Walk::Bad
    }
}

/// Streams bytes into a sequence of guest spans (the buffers of one or more chains, in
/// order).
pub(crate) struct SpanWriter<'a> {
    m: &'a GuestMap,
    spans: &'a [Span],
    i: usize,
    at: usize,
    /// Whether every byte so far landed.
    pub(crate) ok: bool,
}

impl<'a> SpanWriter<'a> {
    pub(crate) fn new(m: &'a GuestMap, spans: &'a [Span]) -> SpanWriter<'a> {
        SpanWriter {
            m,
            spans,
            i: 0,
            at: 0,
            ok: true,
        }
    }

    /// Writes `src` at the current place; what does not fit the spans is dropped
    /// (`ok` false).
    pub(crate) fn put(&mut self, mut src: &[u8]) {
        while !src.is_empty() {
            let Some(&s) = self.spans.get(self.i) else {
                self.ok = false;
                return;
            };
            let k = (s.len() - self.at).min(src.len());
            if k == 0 {
                self.i += 1;
                self.at = 0;
                continue;
            }
            self.ok &= self.m.write(s, self.at, &src[..k]);
            self.at += k;
            src = &src[k..];
        }
    }
}

/// A queue of 8 for tests, set up and ready: descriptor table at guest address 0, avail
/// ring at 0x100, used ring at 0x200.
#[cfg(test)]
pub(crate) fn test_queue() -> virtio_queue::Queue {
    test_queue_of(8, 0x100, 0x200)
}

/// A queue of `size` for tests, set up and ready: descriptor table at guest address 0,
/// the avail and used rings at `avail` and `used`.
#[cfg(test)]
pub(crate) fn test_queue_of(size: u16, avail: u32, used: u32) -> virtio_queue::Queue {
    let mut q = virtio_queue::Queue::new(size).unwrap();
    q.set_size(size);
    q.set_desc_table_address(Some(0), Some(0));
    q.set_avail_ring_address(Some(avail), Some(0));
    q.set_used_ring_address(Some(used), Some(0));
    q.set_ready(true);
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// A queue of 8 in one 64 KiB region (table 0, avail 0x100, used 0x200), and its
    /// memory, with the guest's view.
    fn ring(mem: &GuestMemoryMmap) -> (GuestMap, Split) {
        let q = test_queue();
        let m = GuestMap::new(Arc::new(mem.clone()));
        let s = Split::of(&m, &q).unwrap();
        (m, s)
    }

    fn set_desc(mem: &GuestMemoryMmap, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let d = 16 * u64::from(i);
        mem.write_obj(addr.to_le(), GuestAddress(d)).unwrap();
        mem.write_obj(len.to_le(), GuestAddress(d + 8)).unwrap();
        mem.write_obj(flags.to_le(), GuestAddress(d + 12)).unwrap();
        mem.write_obj(next.to_le(), GuestAddress(d + 14)).unwrap();
    }

    #[test]
    fn chains_are_walked_and_every_kind_of_bad_descriptor_refused() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x10000), 0x10000),
        ])
        .unwrap();
        let (m, s) = ring(&mem);
        let mut out = Vec::new();
        // Two descriptors, the second across the regions' border: three spans.
        set_desc(&mem, 0, 0x1000, 12, F_NEXT, 1);
        set_desc(&mem, 1, 0xff00, 0x200, 0, 0);
        assert_eq!(
            s.walk(&m, 0, false, 1 << 20, &mut out),
            Walk::Ok(12 + 0x200)
        );
        assert_eq!(
            out.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [12, 0x100, 0x100]
        );
        assert_eq!(
            s.walk(&m, 0, true, 1 << 20, &mut out),
            Walk::Bad,
            "not writable"
        );
        assert_eq!(s.walk(&m, 0, false, 100, &mut out), Walk::TooBig);
        set_desc(&mem, 1, 0x1ff00, 0x200, 0, 0);
        assert_eq!(
            s.walk(&m, 0, false, 1 << 20, &mut out),
            Walk::Bad,
            "past the end"
        );
        set_desc(&mem, 1, 0x1000, u32::MAX, 0, 0);
        assert_eq!(
            s.walk(&m, 0, false, 100, &mut out),
            Walk::Bad,
            "memory first"
        );
        set_desc(&mem, 1, 0x1000, 10, F_NEXT, 8);
        assert_eq!(
            s.walk(&m, 0, false, 1 << 20, &mut out),
            Walk::Bad,
            "no descriptor 8"
        );
        set_desc(&mem, 1, 0x1000, 10, F_NEXT, 0);
        assert_eq!(s.walk(&m, 0, false, 1 << 20, &mut out), Walk::Bad, "a loop");
        set_desc(&mem, 1, 0x1000, 16, F_INDIRECT, 0);
        assert_eq!(
            s.walk(&m, 0, false, 1 << 20, &mut out),
            Walk::Bad,
            "indirect"
        );
        assert_eq!(
            s.walk(&m, 9, false, 1 << 20, &mut out),
            Walk::Bad,
            "head past the table"
        );
    }

    #[test]
    fn used_entries_appear_behind_one_index_and_the_guest_wish_is_read() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let (m, s) = ring(&mem);
        mem.write_obj(5u16.to_le(), GuestAddress(0x104 + 2 * 3))
            .unwrap(); // entry 11 % 8
        mem.write_obj(4u16.to_le(), GuestAddress(0x102)).unwrap();
        assert_eq!(s.avail_idx_acquire(&m), Some(4));
        assert_eq!(
            s.avail_head(&m, 11),
            Some(5),
            "entries wrap at the ring size"
        );
        assert!(s.set_used(&m, 9, 3, 60));
        assert!(s.set_used(&m, 10, 4, 61));
        let idx = || u16::from_le(mem.read_obj(GuestAddress(0x202)).unwrap());
        assert_eq!(idx(), 0, "not published yet");
        assert!(s.publish_used_release(&m, 11));
        assert_eq!(idx(), 11);
        let e = |k: u64| {
            let id: u32 = mem.read_obj(GuestAddress(0x204 + 8 * k)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(0x208 + 8 * k)).unwrap();
            (u32::from_le(id), u32::from_le(len))
        };
        assert_eq!((e(1), e(2)), ((3, 60), (4, 61)));
        // Without EVENT_IDX: VRING_AVAIL_F_NO_INTERRUPT decides.
        assert!(s.wants_signal(&m, Some(9), 11));
        assert!(!s.wants_signal(&m, Some(11), 11), "nothing used since");
        mem.write_obj(1u16.to_le(), GuestAddress(0x100)).unwrap();
        assert!(!s.wants_signal(&m, Some(9), 11), "the guest polls");
        assert!(!s.wants_signal(&m, None, 11), "from the first decision on");
        // With it: `used_event` (after the avail ring's 8 entries) decides.
        let s = Split {
            event_idx: true,
            ..s
        };
        mem.write_obj(12u16.to_le(), GuestAddress(0x104 + 16))
            .unwrap();
        assert!(
            !s.wants_signal(&m, Some(9), 11),
            "asked after entry 12 only"
        );
        assert!(s.wants_signal(&m, Some(11), 13), "entry 12 was used");
        assert!(
            s.wants_signal(&m, Some(0), 100),
            "more than a ring since: signalled"
        );
    }

    /// Kicks asked for and refused as the vhost crate's queue does it (the forwarding
    /// thread's arm and disarm), byte for byte, with and without EVENT_IDX, with and
    /// without entries waiting.
    #[test]
    fn kicks_are_asked_for_and_refused_as_virtio_queue_does() {
        use virtio_queue::QueueT;
        for event_idx in [false, true] {
            for (avail, next) in [(4u16, 4u16), (5, 4), (0xffff, 0xfffe), (0, 0xffff)] {
                let theirs =
                    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
                let ours =
                    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
                let mut q = test_queue();
                q.set_event_idx(event_idx);
                q.set_next_avail(next);
                for mem in [&theirs, &ours] {
                    mem.write_obj(avail.to_le(), GuestAddress(0x102)).unwrap();
                    mem.write_obj(0x5a5au16, GuestAddress(0x200 + 4 + 8 * 8))
                        .unwrap();
                }
                let m = GuestMap::new(Arc::new(ours.clone()));
                let split = Split::of(&m, &q).unwrap();
                let used = |mem: &GuestMemoryMmap| {
                    let mut b = [0u8; 6 + 8 * 8];
                    mem.read_slice(&mut b, GuestAddress(0x200)).unwrap();
                    b
                };
                let what = format!("event_idx {event_idx}, avail {avail}, next {next}");
                split.no_kicks(&m);
                q.disable_notification(&theirs).unwrap();
                assert_eq!(used(&ours), used(&theirs), "refused: {what}");
                let said = split.kick_past(&m, next);
                assert_eq!(
                    said,
                    Some(q.enable_notification(&theirs).unwrap()),
                    "{what}"
                );
                assert_eq!(said, Some(avail != next), "{what}");
                assert_eq!(used(&ours), used(&theirs), "asked for: {what}");
            }
        }
    }

    #[test]
    fn a_span_writer_fills_spans_in_order_and_says_when_it_overran() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let m = GuestMap::new(Arc::new(mem.clone()));
        let spans = [
            m.span(0x1000, 3).unwrap(),
            m.span(0x2000, 0).unwrap(),
            m.span(0x3000, 4).unwrap(),
        ];
        let mut w = SpanWriter::new(&m, &spans);
        w.put(b"ab");
        w.put(b"cdef");
        assert!(w.ok);
        let mut b = [0u8; 4];
        mem.read_slice(&mut b[..3], GuestAddress(0x1000)).unwrap();
        assert_eq!(&b[..3], b"abc");
        mem.read_slice(&mut b[..3], GuestAddress(0x3000)).unwrap();
        assert_eq!(&b[..3], b"def");
        w.put(b"gh");
        assert!(!w.ok, "one byte more than the spans hold");
    }
}
