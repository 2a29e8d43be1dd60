//! Model checks of VALE's lease with loom (run with `RUSTFLAGS="--cfg loom"`, see the
//! README). The code under test is `vale_abi::lease` itself, over loom's atomics; the
//! client's slots are loom cells, so a slot read before its writer's copy happens-before
//! the read is reported as a data race, besides the assertions below.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::AtomicU32;
use loom::thread;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use vale_abi::lease::{LeaseRing, Publish};

const N: u32 = 8;
const PAD: u32 = u32::MAX;

/// The client's side of an RX ring: the published tail and the slots (0: never written).
struct Client {
    hwtail: AtomicU32,
    /// The client's `head`: slots before it are handed back.
    head: AtomicU32,
    slots: Vec<UnsafeCell<u32>>,
}

// SAFETY (test): access to the cells is what loom checks; it reports any racy access.
unsafe impl Sync for Client {}

impl Publish for Client {
    fn publish_release(&self, _hwcur: u32, hwtail: u32) {
        self.hwtail.store(hwtail, Release);
    }
    fn pad(&self, from: u32, count: u32) {
        for k in 0..count {
            let i = ((from + k) % N) as usize;
            self.slots[i].with_mut(|p| unsafe { *p = PAD });
        }
    }
    fn reset(&self, hwcur: u32, hwtail: u32) {
        panic!("an honest client's ring was reset (hwcur {hwcur}, hwtail {hwtail})");
    }
}

struct Shared {
    ring: LeaseRing<AtomicU32>,
    client: Client,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        ring: LeaseRing::new(N),
        client: Client {
            hwtail: AtomicU32::new(0),
            head: AtomicU32::new(0),
            slots: (0..N).map(|_| UnsafeCell::new(0)).collect(),
        },
    })
}

/// One writer: lease `want` slots, write its marker into the first `fill`, complete
/// (or drop, if `by_drop`). Returns the slots it wrote.
fn writer(s: &Shared, marker: u32, want: u32, fill: u32, by_drop: bool) -> u32 {
    let Some(mut l) = s
        .ring
        .lease(want, || s.client.head.load(Acquire), &s.client)
        .lease
    else {
        return 0;
    };
    let fill = fill.min(l.len());
    for k in 0..fill {
        let i = ((l.start() + k) % N) as usize;
        s.client.slots[i].with_mut(|p| unsafe { *p = marker });
    }
    l.set_filled(fill);
    if by_drop {
        drop(l);
    } else {
        let _ = l.complete();
    }
    fill
}

/// The client looks at the ring `looks` times while the writers run: every slot before
/// the tail it sees is written (or padded), and the tail never goes back.
fn client_watches(s: &Shared, looks: usize) -> u32 {
    let mut seen = 0u32;
    for _ in 0..looks {
        let tail = s.client.hwtail.load(Acquire);
        assert!(tail >= seen, "tail went back: {seen} -> {tail}");
        for i in seen..tail {
            let v = s.client.slots[i as usize].with(|p| unsafe { *p });
            assert_ne!(v, 0, "slot {i} published before it was written");
        }
        seen = tail;
        thread::yield_now();
    }
    seen
}

/// After every writer finished: nothing lost, nothing unwritten.
fn settled(s: &Shared, written: u32) {
    let tail = s.client.hwtail.load(Relaxed);
    let mut real = 0;
    for i in 0..tail {
        let v = s.client.slots[i as usize].with(|p| unsafe { *p });
        assert_ne!(v, 0, "slot {i} published unwritten");
        real += u32::from(v != PAD);
    }
    assert_eq!(real, written, "every written slot is published, once");
    assert_eq!(s.ring.hwtail(), tail);
}

/// Two threads lease, copy and complete in every interleaving (so out of order too).
#[test]
fn two_writers_publish_in_reservation_order() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let t = thread::spawn(move || writer(&s2, 2, 2, 2, false));
        let a = writer(&s, 1, 2, 2, true);
        client_watches(&s, 1);
        let b = t.join().unwrap();
        settled(&s, a + b);
        assert_eq!(s.client.hwtail.load(Relaxed), 4);
    });
}

/// Three writers (one of them short: it fills one of its two slots); the client looks
/// once the main thread's own lease is done, while the other two may still be copying.
#[test]
fn three_writers_one_short_client_watching() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    // The spin lock and the words under it are many loom branches per writer.
    b.max_branches = 20_000;
    b.check(|| {
        let s = shared();
        let (s2, s3) = (s.clone(), s.clone());
        let t2 = thread::spawn(move || writer(&s2, 2, 2, 1, false));
        let t3 = thread::spawn(move || writer(&s3, 3, 2, 2, true));
        let a = writer(&s, 1, 1, 1, false);
        client_watches(&s, 1);
        let w = a + t2.join().unwrap() + t3.join().unwrap();
        settled(&s, w);
    });
}

/// A writer that wrote nothing (the newest lease) hands its slots back without
/// publishing anything, while another completes.
#[test]
fn an_empty_lease_is_given_back() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let t = thread::spawn(move || writer(&s2, 2, 3, 0, true));
        let a = writer(&s, 1, 2, 2, false);
        let seen = client_watches(&s, 1);
        assert!(seen == 0 || seen >= 2);
        t.join().unwrap();
        settled(&s, a);
        // Whatever the order, the 2 written slots are published; a pad of 3 only if the
        // empty lease was not the newest when it completed.
        let tail = s.client.hwtail.load(Relaxed);
        assert!(tail == 2 || tail == 5, "tail {tail}");
    });
}

/// The client hands back what it read while two writers lease: each writer's view of
/// `head` is taken under the lock, so neither mistakes an older `head` for a client
/// handing back slots it was never given (which would reset the ring).
#[test]
fn a_client_releasing_slots_is_never_reset() {
    loom::model(|| {
        let s = shared();
        // Two slots published and read before the writers start.
        let first = s.ring.lease(2, || 0, &s.client).lease.unwrap();
        for i in 0..2 {
            s.client.slots[i].with_mut(|p| unsafe { *p = 9 });
        }
        let mut first = first;
        first.set_filled(2);
        assert!(first.complete());
        let (s2, s3) = (s.clone(), s.clone());
        let t2 = thread::spawn(move || writer(&s2, 2, 1, 1, false));
        let t3 = thread::spawn(move || writer(&s3, 3, 1, 1, false));
        s.client.head.store(1, Release);
        s.client.head.store(2, Release);
        let w = t2.join().unwrap() + t3.join().unwrap();
        assert_eq!(s.client.hwtail.load(Relaxed), 2 + w);
    });
}
