//! The application/switch sync protocol (netmap's CSB idea), generic over the atomic word
//! so that loom can model-check exactly this code.
//!
//! Each ring has two cache lines in its [`crate::layout::SyncBlock`], in the region's sync
//! area after the rings (not in `netmap_ring.sem[]`, which is the application's): `atok`
//! (written by the application: `head`, `cur`, `appl_need_kick`) and `ktoa` (written by
//! the switch: `hwcur`, `hwtail`, `kern_need_kick`). Publication order:
//! - the application writes its slots and buffers, stores `cur`, then stores `head` with
//!   `Release`; the switch loads `head` with `Acquire`, then `cur`;
//! - the switch writes slots and buffers, stores `hwcur`, then `hwtail` with `Release`; the
//!   application loads `hwtail` with `Acquire`, then `hwcur`.
//!
//! Kicks: a side that wants to sleep sets its `need_kick` word, issues a `SeqCst` fence and
//! checks the ring again (Dekker style); the other side, after publishing, issues a
//! `SeqCst` fence and reads the peer's `need_kick`. At least one of them sees the other's
//! store, so no wake-up is lost, and while both are busy nobody makes a syscall.

use core::sync::atomic::Ordering;

/// A 32-bit word shared between the application and the switch.
pub trait SyncWord {
    fn load(&self, order: Ordering) -> u32;
    fn store(&self, val: u32, order: Ordering);
    /// A fence of the same memory model as the word (loom needs its own).
    fn fence(order: Ordering);
}

impl SyncWord for core::sync::atomic::AtomicU32 {
    #[inline(always)]
    fn load(&self, order: Ordering) -> u32 {
        core::sync::atomic::AtomicU32::load(self, order)
    }
    #[inline(always)]
    fn store(&self, val: u32, order: Ordering) {
        core::sync::atomic::AtomicU32::store(self, val, order)
    }
    #[inline(always)]
    fn fence(order: Ordering) {
        core::sync::atomic::fence(order)
    }
}

#[cfg(loom)]
impl SyncWord for loom::sync::atomic::AtomicU32 {
    fn load(&self, order: Ordering) -> u32 {
        loom::sync::atomic::AtomicU32::load(self, order)
    }
    fn store(&self, val: u32, order: Ordering) {
        loom::sync::atomic::AtomicU32::store(self, val, order)
    }
    fn fence(order: Ordering) {
        loom::sync::atomic::fence(order)
    }
}

/// The six sync words of one ring.
#[derive(Clone, Copy)]
pub struct Csb<'a, W> {
    pub head: &'a W,
    pub cur: &'a W,
    pub appl_need_kick: &'a W,
    pub hwcur: &'a W,
    pub hwtail: &'a W,
    pub kern_need_kick: &'a W,
}

impl<W: SyncWord> Csb<'_, W> {
    /// Application: make slots before `head` visible to the switch.
    #[inline]
    pub fn app_publish_release(&self, head: u32, cur: u32) {
        self.cur.store(cur, Ordering::Relaxed);
        self.head.store(head, Ordering::Release);
    }

    /// Application: the switch's latest `(hwcur, hwtail)`; slots before `hwtail` are
    /// readable (RX) or reusable (TX) after this returns.
    #[inline]
    pub fn app_read_acquire(&self) -> (u32, u32) {
        let hwtail = self.hwtail.load(Ordering::Acquire);
        let hwcur = self.hwcur.load(Ordering::Relaxed);
        (hwcur, hwtail)
    }

    /// Application, after [`Self::app_publish_release`]: must it kick the switch?
    #[inline]
    pub fn app_kick_needed(&self) -> bool {
        W::fence(Ordering::SeqCst);
        self.kern_need_kick.load(Ordering::Relaxed) != 0
    }

    /// Application, before sleeping: ask for a kick. Re-check the ring afterwards.
    #[inline]
    pub fn app_arm_kick(&self) {
        self.appl_need_kick.store(1, Ordering::Relaxed);
        W::fence(Ordering::SeqCst);
    }

    /// Application: busy again, no kick wanted.
    #[inline]
    pub fn app_disarm_kick(&self) {
        self.appl_need_kick.store(0, Ordering::Relaxed);
    }

    /// Switch: the application's `(head, cur)`, unvalidated. Slots before `head` are
    /// readable (TX) or reusable (RX) after this returns.
    #[inline]
    pub fn sw_read_acquire(&self) -> (u32, u32) {
        let head = self.head.load(Ordering::Acquire);
        let cur = self.cur.load(Ordering::Relaxed);
        (head, cur)
    }

    /// Switch: make slots before `hwtail` visible to the application.
    #[inline]
    pub fn sw_publish_release(&self, hwcur: u32, hwtail: u32) {
        self.hwcur.store(hwcur, Ordering::Relaxed);
        self.hwtail.store(hwtail, Ordering::Release);
    }

    /// Switch, after [`Self::sw_publish_release`]: must it kick the application?
    #[inline]
    pub fn sw_kick_needed(&self) -> bool {
        W::fence(Ordering::SeqCst);
        self.appl_need_kick.load(Ordering::Relaxed) != 0
    }

    /// Switch, before sleeping: ask for a kick. Re-check the ring afterwards.
    #[inline]
    pub fn sw_arm_kick(&self) {
        self.kern_need_kick.store(1, Ordering::Relaxed);
        W::fence(Ordering::SeqCst);
    }

    /// Switch: busy again, no kick wanted.
    #[inline]
    pub fn sw_disarm_kick(&self) {
        self.kern_need_kick.store(0, Ordering::Relaxed);
    }
}
