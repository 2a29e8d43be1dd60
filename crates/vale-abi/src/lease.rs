//! VALE's lease (netmap's `nkr_hwlease` and `nkr_leases[]`): several forwarding threads
//! fill one RX ring at once, and the client sees the slots in reservation order.
//!
//! A thread reserves free slots under a tiny lock ([`LeaseRing::lease`]: index arithmetic
//! only), copies its frames into them without the lock, and completes the [`Lease`]
//! (explicitly, or by dropping it). Completion records where the lease ended; the
//! completion that finds every earlier lease done publishes `hwtail` through all the
//! completed ones in one step, so the client never sees a slot that is still being
//! written, and `hwtail` only moves forward. The lock also covers the publication: two
//! threads' stores of `hwtail` could otherwise land in the wrong order.
//!
//! Generic over the atomic word, as [`crate::sync`] is, so that loom model-checks this
//! very code (`tests/loom.rs`). Every field is such a word: the lock's `Acquire`/`Release`
//! orders them, and `Relaxed` accesses suffice inside it.

use crate::ring::{add, dist};
use crate::sync::SyncWord;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// The atomic word of the lease state, and the lock that guards it.
pub trait LeaseWord: SyncWord {
    /// The tiny lock held for the index arithmetic.
    type Lock: Sync;
    type Guard<'a>
    where
        Self: 'a;
    fn new(v: u32) -> Self;
    fn new_lock() -> Self::Lock;
    fn lock(l: &Self::Lock) -> Self::Guard<'_>;
}

/// The lock of the real forwarder: a spin lock (held for a few dozen instructions).
pub struct SpinLock(core::sync::atomic::AtomicBool);

pub struct SpinGuard<'a>(&'a SpinLock);

impl Drop for SpinGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        (self.0).0.store(false, Release);
    }
}

impl LeaseWord for core::sync::atomic::AtomicU32 {
    type Lock = SpinLock;
    type Guard<'a> = SpinGuard<'a>;
    fn new(v: u32) -> Self {
        core::sync::atomic::AtomicU32::new(v)
    }
    fn new_lock() -> SpinLock {
        SpinLock(core::sync::atomic::AtomicBool::new(false))
    }
    #[inline(always)]
    fn lock(l: &SpinLock) -> SpinGuard<'_> {
        let mut spins = 0u32;
        while l
            .0
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            // A holder preempted on a busy machine: give it the CPU rather than spin
            // through a time slice.
            if spins < 64 {
                core::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            spins = spins.saturating_add(1);
        }
        SpinGuard(l)
    }
}

/// Under loom, the lock is loom's mutex: a spin lock with two waiters makes loom explore
/// them yielding to each other for ever. What loom checks is everything else: the index
/// arithmetic, the completion array and the order of publication.
#[cfg(loom)]
impl LeaseWord for loom::sync::atomic::AtomicU32 {
    type Lock = loom::sync::Mutex<()>;
    type Guard<'a> = loom::sync::MutexGuard<'a, ()>;
    fn new(v: u32) -> Self {
        loom::sync::atomic::AtomicU32::new(v)
    }
    fn new_lock() -> Self::Lock {
        loom::sync::Mutex::new(())
    }
    fn lock(l: &Self::Lock) -> Self::Guard<'_> {
        l.lock().unwrap()
    }
}

/// The ring the leases fill, as the lease needs it. Each method runs under the lease's
/// lock, so calls are in reservation order and never overlap.
pub trait Publish {
    /// Makes the slots before `hwtail` visible to the client (a `Release` store).
    fn publish_release(&self, hwcur: u32, hwtail: u32);
    /// Writes `count` slots from `from` as empty (length 0): a lease that could not fill
    /// what it reserved while a later one was outstanding must still publish them.
    fn pad(&self, from: u32, count: u32);
    /// The client handed back slots it was never given: reset its ring to the switch's
    /// view (`hwcur`, `hwtail`).
    fn reset(&self, hwcur: u32, hwtail: u32);
}

/// A port's RX ring, filled by the switch: publication through its sync block.
impl Publish for crate::RingView {
    #[inline]
    fn publish_release(&self, hwcur: u32, hwtail: u32) {
        self.csb().sw_publish_release(hwcur, hwtail);
    }
    fn pad(&self, from: u32, count: u32) {
        let (slots, n) = (self.slots(), self.num_slots());
        for k in 0..count {
            slots.write_len_flags(add(from, k, n), 0, 0);
        }
    }
    fn reset(&self, hwcur: u32, hwtail: u32) {
        self.reinit(hwcur, hwtail);
    }
}

/// "No end recorded yet" in the completion array.
const OPEN: u32 = u32::MAX;

/// The lease state of one RX ring of `n` slots: the switch's side of it.
pub struct LeaseRing<W: LeaseWord> {
    lock: W::Lock,
    n: u32,
    /// First slot the client has not released.
    hwcur: W,
    /// Next slot to hand out.
    hwlease: W,
    /// Slots before it are published.
    hwtail: W,
    /// The oldest lease not yet published, and the next lease's index (both mod `n`).
    first: W,
    next: W,
    /// Per lease index: where the lease ended once completed, [`OPEN`] before.
    ends: Box<[W]>,
}

/// Slots `start..start + n` of a ring, reserved by one thread until it completes them.
#[must_use = "a lease publishes its slots when completed or dropped"]
pub struct Lease<'a, W: LeaseWord, P: Publish + ?Sized> {
    ring: &'a LeaseRing<W>,
    out: &'a P,
    idx: u32,
    start: u32,
    n: u32,
    /// Slots written so far, from `start` (see [`Lease::set_filled`]).
    filled: u32,
    done: bool,
}

/// What [`LeaseRing::lease`] found.
pub struct Leased<'a, W: LeaseWord, P: Publish + ?Sized> {
    /// The reservation; `None` if nothing was asked for or the ring is full.
    pub lease: Option<Lease<'a, W, P>>,
    /// The client's `head` was out of range and its ring was reset.
    pub reset: bool,
}

impl<W: LeaseWord> LeaseRing<W> {
    /// The lease state of an empty ring of `n` slots (`n >= 2`).
    pub fn new(n: u32) -> LeaseRing<W> {
        LeaseRing {
            lock: W::new_lock(),
            n,
            hwcur: W::new(0),
            hwlease: W::new(0),
            hwtail: W::new(0),
            first: W::new(0),
            next: W::new(0),
            ends: (0..n).map(|_| W::new(OPEN)).collect(),
        }
    }

    #[inline(always)]
    fn locked(&self) -> W::Guard<'_> {
        W::lock(&self.lock)
    }

    /// Reserves up to `want` free slots. `head` reads the client's `head` (an
    /// `Acquire` load, unvalidated), under the lock: the slots before it that were
    /// published are free again; a `head` outside `hwcur..=hwtail` resets the client's
    /// ring instead (`Leased::reset`). Read before the lock, a thread's `head` could be
    /// older than the one another thread has just taken back, and look like a client
    /// handing back slots it was never given.
    #[inline]
    pub fn lease<'a, P: Publish + ?Sized>(
        &'a self,
        want: u32,
        head: impl FnOnce() -> u32,
        out: &'a P,
    ) -> Leased<'a, W, P> {
        let n = self.n;
        let _g = self.locked();
        let head = head();
        let hwcur = self.hwcur.load(Relaxed);
        let hwtail = self.hwtail.load(Relaxed);
        let reset = head >= n || dist(hwcur, head, n) > dist(hwcur, hwtail, n);
        let hwcur = if reset {
            out.reset(hwcur, hwtail);
            hwcur
        } else {
            self.hwcur.store(head, Relaxed);
            head
        };
        let start = self.hwlease.load(Relaxed);
        let k = want.min(n - 1 - dist(hwcur, start, n));
        if k == 0 {
            return Leased { lease: None, reset };
        }
        let idx = self.next.load(Relaxed);
        self.ends[idx as usize].store(OPEN, Relaxed);
        self.next.store(add(idx, 1, n), Relaxed);
        self.hwlease.store(add(start, k, n), Relaxed);
        let lease = Lease {
            ring: self,
            out,
            idx,
            start,
            n: k,
            filled: 0,
            done: false,
        };
        Leased {
            lease: Some(lease),
            reset,
        }
    }

    /// The published tail (for tests and statistics; the forwarder uses leases).
    pub fn hwtail(&self) -> u32 {
        let _g = self.locked();
        self.hwtail.load(Relaxed)
    }

    /// Records where lease `l` ended and publishes every completed lease from the oldest
    /// one on. Returns true if `hwtail` moved.
    fn complete<P: Publish + ?Sized>(&self, l: &Lease<'_, W, P>) -> bool {
        let n = self.n;
        let _g = self.locked();
        let mut end = add(l.start, l.filled, n);
        let next = self.next.load(Relaxed);
        if l.filled < l.n {
            if add(l.idx, 1, n) == next {
                // Nothing was handed out after it: the unused slots go back...
                self.hwlease.store(end, Relaxed);
                if l.filled == 0 {
                    // ...and so does its index, so that every open index holds a slot.
                    // Were it not also the oldest, an older lease is still open
                    // (each completion publishes up to the first open one).
                    self.next.store(l.idx, Relaxed);
                    return false;
                }
            } else {
                l.out.pad(end, l.n - l.filled);
                end = add(l.start, l.n, n);
            }
        }
        self.ends[l.idx as usize].store(end, Relaxed);
        let mut first = self.first.load(Relaxed);
        let mut tail = None;
        while first != next {
            let e = self.ends[first as usize].load(Relaxed);
            if e == OPEN {
                break;
            }
            tail = Some(e);
            first = add(first, 1, n);
        }
        self.first.store(first, Relaxed);
        match tail {
            Some(t) if t != self.hwtail.load(Relaxed) => {
                self.hwtail.store(t, Relaxed);
                // Under the lock, so the client's `hwtail` moves in this order too.
                l.out.publish_release(self.hwcur.load(Relaxed), t);
                true
            }
            _ => false,
        }
    }
}

impl<W: LeaseWord, P: Publish + ?Sized> Lease<'_, W, P> {
    /// The first slot of the lease.
    pub fn start(&self) -> u32 {
        self.start
    }
    /// How many slots it holds.
    pub fn len(&self) -> u32 {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// The copier wrote the first `filled` slots (at most [`Self::len`]); the rest are
    /// given back, or padded if a later lease is outstanding.
    pub fn set_filled(&mut self, filled: u32) {
        self.filled = filled.min(self.n);
    }

    /// Completes the lease: returns true if this moved the client's `hwtail` (then the
    /// caller checks whether the client asked for a kick).
    pub fn complete(mut self) -> bool {
        self.done = true;
        self.finish()
    }

    fn finish(&self) -> bool {
        self.ring.complete(self)
    }
}

impl<W: LeaseWord, P: Publish + ?Sized> Drop for Lease<'_, W, P> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU32;
    use std::sync::atomic::AtomicU64;

    /// A client's ring: its published words and its slots, each a marker (0: never written).
    struct Client {
        hwtail: AtomicU32,
        hwcur: AtomicU32,
        resets: AtomicU32,
        slots: Vec<AtomicU64>,
    }

    const PAD: u64 = u64::MAX;

    impl Client {
        fn new(n: u32) -> Client {
            Client {
                hwtail: AtomicU32::new(0),
                hwcur: AtomicU32::new(0),
                resets: AtomicU32::new(0),
                slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            }
        }
    }

    impl Publish for Client {
        fn publish_release(&self, hwcur: u32, hwtail: u32) {
            self.hwcur.store(hwcur, Relaxed);
            self.hwtail.store(hwtail, Release);
        }
        fn pad(&self, from: u32, count: u32) {
            let n = self.slots.len() as u32;
            for k in 0..count {
                self.slots[add(from, k, n) as usize].store(PAD, Relaxed);
            }
        }
        fn reset(&self, _hwcur: u32, _hwtail: u32) {
            self.resets.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn out_of_order_completion_publishes_in_reservation_order() {
        let c = Client::new(8);
        let r = LeaseRing::<AtomicU32>::new(8);
        let a = r.lease(3, || 0, &c).lease.unwrap();
        let mut b = r.lease(3, || 0, &c).lease.unwrap();
        assert_eq!((a.start(), a.len(), b.start(), b.len()), (0, 3, 3, 3));
        // One slot stays empty: 7 usable, 6 leased.
        let d = r.lease(5, || 0, &c).lease.unwrap();
        assert_eq!((d.start(), d.len()), (6, 1));
        assert!(r.lease(1, || 0, &c).lease.is_none(), "ring full");
        b.set_filled(3);
        assert!(!b.complete(), "b waits for a");
        assert_eq!(c.hwtail.load(Acquire), 0);
        let mut a = a;
        a.set_filled(3);
        assert!(a.complete(), "a publishes itself and b");
        assert_eq!(c.hwtail.load(Acquire), 6);
        drop(d); // dropped with nothing written: the newest lease gives its slot back
        assert_eq!(r.hwtail(), 6);
        // The client releases 4 slots: they are free again.
        let e = r.lease(10, || 4, &c).lease.unwrap();
        assert_eq!((e.start(), e.len()), (6, 5));
    }

    #[test]
    fn a_short_lease_gives_back_or_pads() {
        let c = Client::new(16);
        let r = LeaseRing::<AtomicU32>::new(16);
        let mut a = r.lease(4, || 0, &c).lease.unwrap();
        let mut b = r.lease(4, || 0, &c).lease.unwrap();
        // b is the newest: its unused slots go back.
        b.set_filled(1);
        assert!(!b.complete());
        // a is not: its unused slots are padded and published.
        a.set_filled(2);
        assert!(a.complete());
        assert_eq!(c.hwtail.load(Acquire), 5);
        assert_eq!(c.slots[2].load(Relaxed), PAD);
        assert_eq!(c.slots[3].load(Relaxed), PAD);
        let n = r.lease(1, || 0, &c).lease.unwrap();
        assert_eq!(n.start(), 5, "b's three unused slots were given back");
    }

    #[test]
    fn a_head_out_of_range_resets_the_client() {
        let c = Client::new(8);
        let r = LeaseRing::<AtomicU32>::new(8);
        let mut a = r.lease(2, || 0, &c).lease.unwrap();
        a.set_filled(2);
        assert!(a.complete());
        let l = r.lease(1, || 5, &c);
        assert!(l.reset, "head 5 was never published");
        assert_eq!(c.resets.load(Relaxed), 1);
        assert_eq!(l.lease.unwrap().start(), 2);
        assert!(r.lease(1, || 9, &c).reset, "head beyond the ring");
    }

    /// Real threads: four writers leasing random sizes, a client reading and releasing.
    /// The client never sees an unwritten slot, each writer's markers arrive in order,
    /// and nothing is lost.
    #[test]
    fn stress_four_writers_one_reader() {
        const N: u32 = 64;
        const PER: u64 = 20_000;
        let c = std::sync::Arc::new(Client::new(N));
        let r = std::sync::Arc::new(LeaseRing::<AtomicU32>::new(N));
        let head = std::sync::Arc::new(AtomicU32::new(0));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let writers: Vec<_> = (1..=4u64)
            .map(|t| {
                let (c, r, head) = (c.clone(), r.clone(), head.clone());
                std::thread::spawn(move || {
                    let mut seq = 0u64;
                    let mut rng = t.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    while seq < PER && std::time::Instant::now() < deadline {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let want = (rng % 7 + 1) as u32;
                        let Some(mut l) = r.lease(want, || head.load(Acquire), &*c).lease else {
                            std::thread::yield_now();
                            continue;
                        };
                        // Sometimes fill only part of it.
                        let fill = if rng % 5 == 0 { l.len() / 2 } else { l.len() };
                        for k in 0..fill {
                            seq += 1;
                            c.slots[add(l.start(), k, N) as usize].store(t << 32 | seq, Relaxed);
                        }
                        l.set_filled(fill);
                        if rng % 3 == 0 {
                            drop(l);
                        } else {
                            let _ = l.complete();
                        }
                    }
                    seq
                })
            })
            .collect();
        let mut last = [0u64; 5];
        let (mut at, mut seen, mut prev_tail) = (0u32, 0u64, 0u32);
        let mut total_moved = 0u64;
        loop {
            let tail = c.hwtail.load(Acquire);
            // A tail that went back would hand out slots read (and zeroed) already:
            // the assertion below catches it.
            total_moved += u64::from(dist(prev_tail, tail, N));
            prev_tail = tail;
            while at != tail {
                let m = c.slots[at as usize].swap(0, Relaxed);
                assert_ne!(m, 0, "slot {at} published before it was written");
                if m != PAD {
                    let (t, s) = ((m >> 32) as usize, m & 0xffff_ffff);
                    assert_eq!(s, last[t] + 1, "writer {t}'s frames out of order");
                    last[t] = s;
                    seen += 1;
                }
                at = add(at, 1, N);
            }
            head.store(at, Release);
            if writers.iter().all(|w| w.is_finished()) && c.hwtail.load(Acquire) == at {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "stress test timed out"
            );
            std::thread::yield_now();
        }
        let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(seen, written, "every written slot reached the client");
        assert!(
            written >= 4 * PER,
            "the writers finished before the deadline"
        );
        assert!(total_moved >= written);
        assert_eq!(
            c.resets.load(Relaxed),
            0,
            "an honest client's ring was reset"
        );
    }
}
