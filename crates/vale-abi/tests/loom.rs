//! Model checks of the sync protocol with loom (run with `RUSTFLAGS="--cfg loom"`, see the
//! README). The protocol code under test is `vale_abi::sync::Csb` itself, instantiated
//! with loom's atomics; slot contents are loom cells, so a missing happens-before edge
//! between a writer and a reader is reported as a data race.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::AtomicU32;
use loom::thread;
use vale_abi::sync::Csb;

#[derive(Default)]
struct Words {
    head: AtomicU32,
    cur: AtomicU32,
    appl_need_kick: AtomicU32,
    hwcur: AtomicU32,
    hwtail: AtomicU32,
    kern_need_kick: AtomicU32,
}

impl Words {
    fn csb(&self) -> Csb<'_, AtomicU32> {
        Csb {
            head: &self.head,
            cur: &self.cur,
            appl_need_kick: &self.appl_need_kick,
            hwcur: &self.hwcur,
            hwtail: &self.hwtail,
            kern_need_kick: &self.kern_need_kick,
        }
    }
}

struct Shared {
    w: Words,
    slot: UnsafeCell<u64>,
}

// SAFETY (test): access to `slot` is what loom checks; it reports any racy access.
unsafe impl Sync for Shared {}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        w: Words::default(),
        slot: UnsafeCell::new(0),
    })
}

/// TX: a slot written before `head` is published is seen whole by the switch, and the
/// client reuses it only after the switch has published that it consumed it.
#[test]
fn tx_slot_ownership_round_trip() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let app = thread::spawn(move || {
            s2.slot.with_mut(|p| unsafe { *p = 42 });
            s2.w.csb().app_publish_release(1, 1);
            // Wait until the switch frees the slot, then reuse it.
            loop {
                let (_, hwtail) = s2.w.csb().app_read_acquire();
                if hwtail == 1 {
                    break;
                }
                thread::yield_now();
            }
            s2.slot.with_mut(|p| unsafe { *p = 7 });
        });
        loop {
            let (head, _) = s.w.csb().sw_read_acquire();
            if head == 1 {
                break;
            }
            thread::yield_now();
        }
        let v = s.slot.with(|p| unsafe { *p });
        assert_eq!(v, 42);
        s.w.csb().sw_publish_release(1, 1);
        app.join().unwrap();
    });
}

/// RX: a slot the switch fills before publishing `hwtail` is seen whole by the client.
#[test]
fn rx_publication_is_ordered() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let sw = thread::spawn(move || {
            s2.slot.with_mut(|p| unsafe { *p = 99 });
            s2.w.csb().sw_publish_release(0, 1);
        });
        let (_, hwtail) = s.w.csb().app_read_acquire();
        if hwtail == 1 {
            assert_eq!(s.slot.with(|p| unsafe { *p }), 99);
        }
        sw.join().unwrap();
    });
}

/// No lost wake-up, switch side: if the switch decides to sleep, the client's later
/// publication sees `kern_need_kick` and kicks.
#[test]
fn switch_sleep_never_misses_a_kick() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let app = thread::spawn(move || {
            let csb = s2.w.csb();
            csb.app_publish_release(1, 1);
            csb.app_kick_needed()
        });
        let csb = s.w.csb();
        csb.sw_arm_kick();
        let (head, _) = csb.sw_read_acquire();
        let sleeps = head == 0;
        let kicked = app.join().unwrap();
        assert!(
            !sleeps || kicked,
            "switch slept with work pending and no kick"
        );
    });
}

/// No lost wake-up, client side: a client waiting for RX is kicked by the publication
/// it did not see before sleeping.
#[test]
fn client_sleep_never_misses_a_kick() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let sw = thread::spawn(move || {
            let csb = s2.w.csb();
            csb.sw_publish_release(0, 1);
            csb.sw_kick_needed()
        });
        let csb = s.w.csb();
        csb.app_arm_kick();
        let (_, hwtail) = csb.app_read_acquire();
        let sleeps = hwtail == 0;
        let kicked = sw.join().unwrap();
        assert!(
            !sleeps || kicked,
            "client slept with packets pending and no kick"
        );
    });
}

/// `cur` is written before `head`, so the switch never sees a head newer than cur.
#[test]
fn head_never_overtakes_cur() {
    loom::model(|| {
        let s = shared();
        let s2 = s.clone();
        let app = thread::spawn(move || {
            s2.w.csb().app_publish_release(1, 1);
            s2.w.csb().app_publish_release(2, 2);
        });
        let (head, cur) = s.w.csb().sw_read_acquire();
        assert!(cur >= head, "head {head} cur {cur}");
        app.join().unwrap();
    });
}
