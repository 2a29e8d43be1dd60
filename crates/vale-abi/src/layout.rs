//! netmap's shared-memory structures, byte for byte.
//!
//! These mirror `struct netmap_if`, `struct netmap_ring` and `struct netmap_slot` from
//! netmap's `sys/net/netmap.h` (API 14) on x86-64 Linux. They exist to fix the layout: the
//! code never makes a reference to a live instance in shared memory (a peer may write it
//! at any time); it uses [`core::mem::offset_of!`] on these types to find fields and reads
//! them with atomics or volatile loads.
//!
//! Beyond netmap's structures, each ring has a [`SyncBlock`]: the words the application
//! and the switch exchange positions through (netmap's CSB). They live in a sync area of
//! the region after the rings (see [`crate::RegionLayout::sync_block_offset`]), never in
//! the ring header: `sem[128]` belongs to the application, and netmap programs use it.

use core::mem::{offset_of, size_of};

/// Version of the region layout: what lives where beyond netmap's own structures.
/// 1: sync words in `netmap_ring.sem[]`. 2: sync words in a per-ring [`SyncBlock`] after
/// the rings, `sem[]` left to the application. Both sides of a port must agree.
pub const LAYOUT_VERSION: u32 = 2;

/// `NS_BUF_CHANGED`: the slot's `buf_idx` was changed by the user.
pub const NS_BUF_CHANGED: u16 = 0x0001;
/// `NS_REPORT`: ask for a completion report (no effect on switch ports).
pub const NS_REPORT: u16 = 0x0002;
/// `NS_FORWARD`: host/NIC transparent forwarding (not used by the switch).
pub const NS_FORWARD: u16 = 0x0004;
/// `NS_NO_LEARN`: the switch must not learn the source MAC of this frame.
pub const NS_NO_LEARN: u16 = 0x0008;
/// `NS_INDIRECT`: payload at the user address in `ptr` (meaningless across processes).
pub const NS_INDIRECT: u16 = 0x0010;
/// `NS_MOREFRAG`: another slot of the same packet follows.
pub const NS_MOREFRAG: u16 = 0x0020;
/// `NS_RFRAGS(slot)`: on RX rings the fragment count lives in the high byte of `flags`.
pub const NS_RFRAGS_SHIFT: u16 = 8;
/// Longest `NS_MOREFRAG` chain accepted (netmap's `NETMAP_MAX_FRAGS`).
pub const MAX_FRAGS: usize = 64;

/// `netmap_ring.dir` of a TX ring.
pub const NR_TX: u16 = 0;
/// `netmap_ring.dir` of an RX ring.
pub const NR_RX: u16 = 1;

/// Buffers 0 and 1 of every region are reserved, as in netmap.
pub const RESERVED_BUFS: u32 = 2;

/// `struct netmap_slot` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetmapSlot {
    pub buf_idx: u32,
    pub len: u16,
    pub flags: u16,
    pub ptr: u64,
}

/// `struct timeval` as netmap's ring header embeds it (x86-64 Linux).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

/// `struct netmap_ring` header (256 bytes); `num_slots` slots follow it.
#[repr(C, align(128))]
#[derive(Debug, Clone, Copy)]
pub struct NetmapRing {
    pub buf_ofs: i64,
    pub num_slots: u32,
    pub nr_buf_size: u32,
    pub ringid: u16,
    pub dir: u16,
    pub head: u32,
    pub cur: u32,
    pub tail: u32,
    pub flags: u32,
    pub ts: Timeval,
    pub offset_mask: u64,
    pub buf_align: u64,
    /// The application's (netmap: "opaque room for a mutex or similar object"); the
    /// switch neither reads nor writes it.
    pub sem: Sem,
}

/// `char sem[128] __attribute__((__aligned__(NM_CACHE_ALIGN)))`.
#[repr(C, align(128))]
#[derive(Debug, Clone, Copy)]
pub struct Sem(pub [u8; 128]);

/// `struct netmap_if` without its flexible `ring_ofs[]` (56 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NetmapIf {
    pub ni_name: [u8; 16],
    pub ni_version: u32,
    pub ni_flags: u32,
    pub ni_tx_rings: u32,
    pub ni_rx_rings: u32,
    pub ni_bufs_head: u32,
    pub ni_host_tx_rings: u32,
    pub ni_host_rx_rings: u32,
    pub ni_spare1: [u32; 3],
    // ssize_t ring_ofs[] follows at offset 56.
}

/// `struct nm_csb_atok`: the application-to-switch cache line, the first half of a
/// [`SyncBlock`].
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, Default)]
pub struct CsbAtok {
    pub head: u32,
    pub cur: u32,
    pub appl_need_kick: u32,
    pub sync_flags: u32,
    pub pad: [u32; 12],
}

/// `struct nm_csb_ktoa`: the switch-to-application cache line, the second half of a
/// [`SyncBlock`].
#[repr(C, align(64))]
#[derive(Debug, Clone, Copy, Default)]
pub struct CsbKtoa {
    pub hwcur: u32,
    pub hwtail: u32,
    pub kern_need_kick: u32,
    pub pad: [u32; 13],
}

/// One ring's sync words (128 bytes): [`CsbAtok`], written by the application, then
/// [`CsbKtoa`], written by the switch, each on its own cache line so neither side's
/// stores invalidate the line the other writes.
#[repr(C, align(128))]
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncBlock {
    pub atok: CsbAtok,
    pub ktoa: CsbKtoa,
}

/// Size of one ring's [`SyncBlock`].
pub const SYNC_BLOCK_SIZE: usize = size_of::<SyncBlock>();

/// Size of `struct netmap_if` before `ring_ofs[]`.
pub const NETMAP_IF_SIZE: usize = size_of::<NetmapIf>();
/// Size of the ring header before `slot[]`.
pub const NETMAP_RING_SIZE: usize = size_of::<NetmapRing>();
/// Size of one slot.
pub const NETMAP_SLOT_SIZE: usize = size_of::<NetmapSlot>();

/// Byte offsets of the fields the switch and the client library touch.
pub mod off {
    use super::*;
    pub const IF_RING_OFS: usize = NETMAP_IF_SIZE;
    pub const RING_HEAD: usize = offset_of!(NetmapRing, head);
    pub const RING_CUR: usize = offset_of!(NetmapRing, cur);
    pub const RING_TAIL: usize = offset_of!(NetmapRing, tail);
    /// The application's scratch area (the switch never touches it).
    pub const RING_SEM: usize = offset_of!(NetmapRing, sem);
}

/// Byte offsets of the sync words within a ring's [`SyncBlock`].
pub mod sync_off {
    use super::*;
    pub const ATOK: usize = offset_of!(SyncBlock, atok);
    pub const KTOA: usize = offset_of!(SyncBlock, ktoa);
    pub const ATOK_HEAD: usize = ATOK + offset_of!(CsbAtok, head);
    pub const ATOK_CUR: usize = ATOK + offset_of!(CsbAtok, cur);
    pub const ATOK_NEED_KICK: usize = ATOK + offset_of!(CsbAtok, appl_need_kick);
    pub const KTOA_HWCUR: usize = KTOA + offset_of!(CsbKtoa, hwcur);
    pub const KTOA_HWTAIL: usize = KTOA + offset_of!(CsbKtoa, hwtail);
    pub const KTOA_NEED_KICK: usize = KTOA + offset_of!(CsbKtoa, kern_need_kick);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Numbers from netmap.h (API 14) for x86-64, as computed by the C compiler.
    #[test]
    fn slot_layout_matches_netmap_h() {
        assert_eq!(size_of::<NetmapSlot>(), 16);
        assert_eq!(offset_of!(NetmapSlot, buf_idx), 0);
        assert_eq!(offset_of!(NetmapSlot, len), 4);
        assert_eq!(offset_of!(NetmapSlot, flags), 6);
        assert_eq!(offset_of!(NetmapSlot, ptr), 8);
    }

    #[test]
    fn ring_layout_matches_netmap_h() {
        assert_eq!(size_of::<NetmapRing>(), 256);
        assert_eq!(core::mem::align_of::<NetmapRing>(), 128);
        assert_eq!(offset_of!(NetmapRing, buf_ofs), 0);
        assert_eq!(offset_of!(NetmapRing, num_slots), 8);
        assert_eq!(offset_of!(NetmapRing, nr_buf_size), 12);
        assert_eq!(offset_of!(NetmapRing, ringid), 16);
        assert_eq!(offset_of!(NetmapRing, dir), 18);
        assert_eq!(offset_of!(NetmapRing, head), 20);
        assert_eq!(offset_of!(NetmapRing, cur), 24);
        assert_eq!(offset_of!(NetmapRing, tail), 28);
        assert_eq!(offset_of!(NetmapRing, flags), 32);
        assert_eq!(offset_of!(NetmapRing, ts), 40);
        assert_eq!(size_of::<Timeval>(), 16);
        assert_eq!(offset_of!(NetmapRing, offset_mask), 56);
        assert_eq!(offset_of!(NetmapRing, buf_align), 64);
        assert_eq!(offset_of!(NetmapRing, sem), 128);
        // A 1024-slot ring is 16640 bytes, a 4096-slot ring 65792 (netmap's numbers).
        assert_eq!(NETMAP_RING_SIZE + 1024 * NETMAP_SLOT_SIZE, 16640);
        assert_eq!(NETMAP_RING_SIZE + 4096 * NETMAP_SLOT_SIZE, 65792);
    }

    #[test]
    fn if_layout_matches_netmap_h() {
        assert_eq!(size_of::<NetmapIf>(), 56);
        assert_eq!(offset_of!(NetmapIf, ni_name), 0);
        assert_eq!(offset_of!(NetmapIf, ni_version), 16);
        assert_eq!(offset_of!(NetmapIf, ni_flags), 20);
        assert_eq!(offset_of!(NetmapIf, ni_tx_rings), 24);
        assert_eq!(offset_of!(NetmapIf, ni_rx_rings), 28);
        assert_eq!(offset_of!(NetmapIf, ni_bufs_head), 32);
        assert_eq!(offset_of!(NetmapIf, ni_host_tx_rings), 36);
        assert_eq!(offset_of!(NetmapIf, ni_host_rx_rings), 40);
        assert_eq!(offset_of!(NetmapIf, ni_spare1), 44);
        assert_eq!(off::IF_RING_OFS, 56);
    }

    #[test]
    fn sync_block_is_two_cache_lines_atok_then_ktoa() {
        assert_eq!(size_of::<CsbAtok>(), 64);
        assert_eq!(size_of::<CsbKtoa>(), 64);
        assert_eq!(SYNC_BLOCK_SIZE, 128);
        assert_eq!(core::mem::align_of::<SyncBlock>(), 128);
        assert_eq!(sync_off::ATOK, 0);
        assert_eq!(sync_off::KTOA, 64);
        assert_eq!(sync_off::ATOK_HEAD, 0);
        assert_eq!(sync_off::ATOK_CUR, 4);
        assert_eq!(sync_off::ATOK_NEED_KICK, 8);
        assert_eq!(offset_of!(CsbAtok, sync_flags), 12);
        assert_eq!(sync_off::KTOA_HWCUR, 64);
        assert_eq!(sync_off::KTOA_HWTAIL, 68);
        assert_eq!(sync_off::KTOA_NEED_KICK, 72);
        // Each side writes only its own line.
        for w in [
            sync_off::ATOK_HEAD,
            sync_off::ATOK_CUR,
            sync_off::ATOK_NEED_KICK,
        ] {
            assert_eq!(w / 64, 0);
        }
        for w in [
            sync_off::KTOA_HWCUR,
            sync_off::KTOA_HWTAIL,
            sync_off::KTOA_NEED_KICK,
        ] {
            assert_eq!(w / 64, 1);
        }
        const { assert!(sync_off::KTOA_NEED_KICK + 4 <= SYNC_BLOCK_SIZE) };
        assert_eq!(LAYOUT_VERSION, 2);
    }

    #[test]
    fn flag_values_match_netmap_h() {
        assert_eq!(
            [
                NS_BUF_CHANGED,
                NS_REPORT,
                NS_FORWARD,
                NS_NO_LEARN,
                NS_INDIRECT,
                NS_MOREFRAG
            ],
            [0x1, 0x2, 0x4, 0x8, 0x10, 0x20]
        );
    }
}
