//! Views of one ring and of a region's buffers, and netmap's ring index arithmetic.
//!
//! A [`RingView`] knows its geometry from the switch's private layout, never from the
//! ring header, so a client scribbling over `num_slots` or `buf_ofs` changes nothing for
//! the switch. Every accessor is bounds-checked or clamps its index; none panics.
//!
//! # Memory another process writes
//!
//! A region is shared with its client, which may write any byte of it at any time. The
//! rules, after rust-vmm's `vm-memory` (`volatile_memory.rs`):
//!
//! - **No `&` or `&mut` into the region** for plain data: a reference promises the
//!   compiler that nobody else changes the bytes, which a client can break at will. The
//!   views here hold raw pointers and hand out only copies ([`Slots::read`],
//!   [`Bufs::header`], [`Bufs::read`], [`Frag::copy_to`]) and atomics (the sync words).
//! - **Slots and sync words are read with volatile loads or atomics, once**, into locals
//!   that the caller validates and then uses; nothing is read twice and trusted the
//!   second time.
//! - **Views are made only from checked positions**: a [`Bufs`] from a pool checked
//!   against the mapping, a [`Frag`] only by [`Bufs::frag`] from a valid buffer index
//!   with its offset and length inside the buffer, and each borrows what it points into,
//!   so it cannot outlive the mapping. Unsafe code relies on these types, never on the
//!   documentation of a safe trait or function that returns a pointer.
//!
//! **The one named exception: buffer bytes are copied with raw copies**
//! (`copy_nonoverlapping`, `read_unaligned`), not volatile ones, as netmap's own
//! `pkt_copy` does: a volatile copy would be a loop of single loads, several times the
//! cost of a 60-byte frame's one cache line. Rust's memory model does not bless a plain
//! copy that races another process's stores; we accept that deliberately, and bound what
//! it can do: the copy goes into private memory (or another buffer), never through a
//! reference the compiler reasons about, and
//! 1. a torn or changing read of a buffer changes only the bytes of the packet that the
//!    buffer's own client is sending, which that client could have written anyway;
//! 2. nothing read from a buffer is validated and then read again: what the switch
//!    decides on (the header it looks up, the virtio-net header it converts) is copied
//!    out once and used from the copy.

use crate::layout::*;
use crate::mem::Mapping;
use crate::sync::Csb;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// `nm_ring_next`: the slot after `i` in a ring of `n` slots.
#[inline(always)]
pub fn next(i: u32, n: u32) -> u32 {
    if i + 1 >= n { 0 } else { i + 1 }
}

/// Slots from `from` to `to` going forward, for indices already known to be `< n`.
#[inline(always)]
pub fn dist(from: u32, to: u32, n: u32) -> u32 {
    if to >= from { to - from } else { to + n - from }
}

/// `i + k` modulo `n`, for `i < n` and `k <= n`.
#[inline(always)]
pub fn add(i: u32, k: u32, n: u32) -> u32 {
    let s = i + k;
    if s >= n { s - n } else { s }
}

/// The buffers of one region.
#[derive(Clone)]
pub struct BufPool {
    _map: Arc<Mapping>,
    base: *mut u8,
    nbufs: u32,
    buf_size: u32,
}

// SAFETY: `base` points into `map`, which is Send + Sync and kept alive by the Arc; the
// pool itself has no interior state.
unsafe impl Send for BufPool {}
// SAFETY: as above.
unsafe impl Sync for BufPool {}

impl BufPool {
    pub(crate) fn new(map: Arc<Mapping>, offset: usize, nbufs: u32, buf_size: u32) -> BufPool {
        let bytes = nbufs as usize * buf_size as usize;
        // `is_valid` relies on this: with no usable buffer its range check would wrap.
        assert!(nbufs > RESERVED_BUFS, "layout bug: no usable buffers");
        let base = map
            .ptr(offset, bytes)
            .expect("layout bug: buffer pool outside the region");
        BufPool {
            _map: map,
            base,
            nbufs,
            buf_size,
        }
    }

    /// A copyable handle for hot loops: the compiler keeps its fields in registers.
    #[inline(always)]
    pub fn access(&self) -> Bufs<'_> {
        Bufs {
            base: self.base,
            nbufs: self.nbufs,
            buf_size: self.buf_size,
            _pool: PhantomData,
        }
    }

    pub fn nbufs(&self) -> u32 {
        self.nbufs
    }
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }
    pub fn is_valid(&self, idx: u32) -> bool {
        self.access().is_valid(idx)
    }
    pub fn header(&self, idx: u32) -> Option<[u64; 2]> {
        self.access().header(idx)
    }
    pub fn prefetch(&self, idx: u32) {
        self.access().prefetch(idx)
    }
    pub fn write(&self, idx: u32, data: &[u8]) -> bool {
        self.access().write(idx, data)
    }
    pub fn read(&self, idx: u32, out: &mut [u8]) -> bool {
        self.access().read(idx, out)
    }
}

/// Borrowed access to a region's buffers (see [`BufPool::access`]).
#[derive(Clone, Copy)]
pub struct Bufs<'a> {
    base: *mut u8,
    nbufs: u32,
    buf_size: u32,
    _pool: PhantomData<&'a BufPool>,
}

impl<'a> Bufs<'a> {
    #[inline(always)]
    pub fn nbufs(&self) -> u32 {
        self.nbufs
    }

    #[inline(always)]
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Whether a client may use buffer `idx` (0 and 1 are reserved).
    #[inline(always)]
    pub fn is_valid(&self, idx: u32) -> bool {
        // One compare: indices below RESERVED_BUFS wrap around to huge values.
        idx.wrapping_sub(RESERVED_BUFS) < self.nbufs.wrapping_sub(RESERVED_BUFS)
    }

    #[inline(always)]
    fn ptr(&self, idx: u32) -> Option<*mut u8> {
        if self.is_valid(idx) {
            // SAFETY: idx < nbufs, so the buffer lies inside the pool checked in
            // `BufPool::new`; the borrow of the pool keeps the mapping alive.
            Some(unsafe { self.base.add(idx as usize * self.buf_size as usize) })
        } else {
            None
        }
    }

    /// Where buffer `idx` starts, if it is valid and holds `len` bytes: the destination
    /// of a copy from memory that cannot be borrowed as a slice (a peer's shared memory,
    /// which valed copies from with raw copies only). Writing through it is the caller's
    /// `unsafe`, within `len` bytes.
    #[inline(always)]
    pub fn dst(&self, idx: u32, len: usize) -> Option<*mut u8> {
        self.ptr(idx).filter(|_| len <= self.buf_size as usize)
    }

    /// The `len` bytes at offset `off` of buffer `idx`, as a [`Frag`] (for I/O straight
    /// out of a buffer, such as `writev`), or `None` for an invalid index or a range
    /// that does not lie inside the buffer.
    #[inline(always)]
    pub fn frag(&self, idx: u32, off: usize, len: usize) -> Option<Frag<'a>> {
        let end = off.checked_add(len)?;
        if end > self.buf_size as usize {
            return None;
        }
        let p = self.ptr(idx)?;
        // SAFETY: `p` starts a buffer of `buf_size` bytes inside the pool and
        // off + len <= buf_size (checked above), so the result stays in that buffer.
        let ptr = unsafe { p.add(off) };
        Some(Frag {
            ptr,
            len,
            _pool: PhantomData,
        })
    }

    /// 16 bytes at offset `off` of buffer `idx` as two little-endian words (a frame
    /// behind a virtio-net header), or `None` for an invalid index or `off + 16 > 64`.
    #[inline(always)]
    pub fn header_at(&self, idx: u32, off: u16) -> Option<[u64; 2]> {
        if off as usize + 16 > 64 {
            return None;
        }
        let p = self.ptr(idx)?;
        // SAFETY: `p` starts a buffer of at least 64 bytes and off + 16 <= 64.
        let (a, b) = unsafe {
            let q = p.add(off as usize);
            (
                core::ptr::read_unaligned(q.cast::<u64>()),
                core::ptr::read_unaligned(q.add(8).cast::<u64>()),
            )
        };
        Some([u64::from_le(a), u64::from_le(b)])
    }

    /// The first 16 bytes of buffer `idx` as two little-endian words (bytes 0..8 and
    /// 8..16: the Ethernet header and 2 more), or `None` for an invalid index. Buffers
    /// are at least 64 bytes, so this never reads past one.
    #[inline(always)]
    pub fn header(&self, idx: u32) -> Option<[u64; 2]> {
        let p = self.ptr(idx)?;
        // SAFETY: `p` starts a buffer of at least 64 bytes inside the mapping; the bytes
        // are copied out, so a concurrent writer can only change what we see.
        let (a, b) = unsafe {
            (
                core::ptr::read_unaligned(p.cast::<u64>()),
                core::ptr::read_unaligned(p.add(8).cast::<u64>()),
            )
        };
        Some([u64::from_le(a), u64::from_le(b)])
    }

    /// Hints the CPU to fetch the start of buffer `idx` (clamped into the pool: a
    /// prefetch needs no validation, only an address that stays inside the mapping).
    #[inline(always)]
    pub fn prefetch(&self, idx: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let idx = idx.min(self.nbufs - 1);
            // SAFETY: idx < nbufs, so the address is inside the pool; prefetch never
            // faults and reads nothing architecturally.
            #[allow(unused_unsafe)]
            unsafe {
                let p = self.base.add(idx as usize * self.buf_size as usize);
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    p as *const i8,
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = idx;
    }

    /// Copies `data` into buffer `idx`; false if the index or length is invalid.
    pub fn write(&self, idx: u32, data: &[u8]) -> bool {
        match self.ptr(idx) {
            Some(p) if data.len() <= self.buf_size as usize => {
                // SAFETY: the buffer holds buf_size >= data.len() bytes; `data` is private.
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
                true
            }
            _ => false,
        }
    }

    /// Copies `data` into buffer `idx` at offset `off`; false if the index is invalid or
    /// the range does not lie inside the buffer.
    #[inline(always)]
    pub fn write_at(&self, idx: u32, off: usize, data: &[u8]) -> bool {
        match (self.ptr(idx), off.checked_add(data.len())) {
            (Some(p), Some(end)) if end <= self.buf_size as usize => {
                // SAFETY: off + data.len() <= buf_size, so the range stays inside the
                // buffer; `data` is private.
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p.add(off), data.len()) };
                true
            }
            _ => false,
        }
    }

    /// Copies the start of buffer `idx` into `out`; false if the index or length is invalid.
    pub fn read(&self, idx: u32, out: &mut [u8]) -> bool {
        match self.ptr(idx) {
            Some(p) if out.len() <= self.buf_size as usize => {
                // SAFETY: as in `write`, with the direction reversed.
                unsafe { core::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
                true
            }
            _ => false,
        }
    }
}

/// A view of `len` bytes inside one buffer of a region: one fragment of a packet, in the
/// spirit of vm-memory's `VolatileSlice`.
///
/// Invariant, established by [`Bufs::frag`] (or by [`Frag::private`], for memory the
/// caller owns): `ptr..ptr+len` lies inside one buffer of a mapped pool, and the borrow
/// `'a` of that pool keeps the mapping alive (or inside a private slice borrowed for `'a`). The bytes belong to the buffer's client, which may rewrite them at any
/// time (changing only its own packet), so they are never handed out as `&[u8]`: read
/// them with [`Frag::copy_to`], or pass [`Frag::raw_parts`] to the kernel.
#[derive(Clone, Copy)]
pub struct Frag<'a> {
    ptr: *const u8,
    len: usize,
    _pool: PhantomData<&'a BufPool>,
}

impl<'a> Frag<'a> {
    /// A fragment over private memory: a frame the switch built itself (a VLAN tag put
    /// in or taken out), handed on as a client's buffer would be.
    #[inline(always)]
    pub fn private(bytes: &'a [u8]) -> Frag<'a> {
        Frag {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
            _pool: PhantomData,
        }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies the start of the fragment into `out` (as much as fits); returns the bytes
    /// copied. A raw copy: see the module doc's exception.
    #[inline]
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let n = self.len.min(out.len());
        // SAFETY: `ptr..ptr+len` is readable for `'a` (the type's invariant; the empty
        // fragment copies 0 bytes from a non-null, aligned address) and n <= len; `out`
        // is private memory (no `&mut` into a region exists), so they are disjoint.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr, out.as_mut_ptr(), n) };
        n
    }

    /// The fragment without its first `n` bytes (the sender's virtio-net header), or
    /// `None` if it is shorter than `n`.
    #[inline(always)]
    pub fn skip(self, n: usize) -> Option<Frag<'a>> {
        let len = self.len.checked_sub(n)?;
        // SAFETY: n <= len, so the new start stays inside the same buffer (for the empty
        // fragment n is 0 and the pointer does not move).
        let ptr = unsafe { self.ptr.add(n) };
        Some(Frag {
            ptr,
            len,
            _pool: PhantomData,
        })
    }

    /// The fragment as an address and a length, for an `iovec`.
    ///
    /// The pointer is valid for reads of `len` bytes for as long as `'a` lasts (the
    /// type's invariant). The bytes may change under a concurrent writer, the client of
    /// the buffer, which only changes that sender's own packet; so do not make a `&[u8]`
    /// of them, hand them to something that copies them once (the kernel's `writev`).
    #[inline(always)]
    pub fn raw_parts(&self) -> (*const u8, usize) {
        (self.ptr, self.len)
    }
}

/// The empty fragment (a filler for arrays of fragments): it points at no buffer.
impl Default for Frag<'_> {
    #[inline(always)]
    fn default() -> Self {
        Frag {
            // A zero-length range needs only a non-null, aligned address.
            ptr: core::ptr::NonNull::<u8>::dangling().as_ptr(),
            len: 0,
            _pool: PhantomData,
        }
    }
}

impl core::fmt::Debug for Frag<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Frag")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

/// Copies a `len`-byte fragment from buffer `sidx` of `src` to buffer `didx` of `dst`.
/// Returns false (and copies nothing) if an index is invalid or `len` exceeds a buffer.
///
/// Short frames are copied in whole 64-byte lines, rounding `len` up as netmap's
/// `pkt_copy` does: buffer sizes are multiples of 64, so the rounded copy stays inside
/// both buffers, and a 60-byte frame costs one cache line.
#[inline(always)]
pub fn copy_frame(src: Bufs<'_>, sidx: u32, dst: Bufs<'_>, didx: u32, len: usize) -> bool {
    let (Some(s), Some(d)) = (src.ptr(sidx), dst.ptr(didx)) else {
        return false;
    };
    if len > src.buf_size as usize || len > dst.buf_size as usize {
        return false;
    }
    if s == d {
        return true; // the same buffer: nothing to move
    }
    if len <= 256 {
        // SAFETY: round_up(len, 64) <= both buffer sizes (multiples of 64 that are
        // >= len); two buffers are either the same (excluded above) or disjoint, even
        // across regions (each is its own mapping).
        unsafe { copy_whole_lines(s, d, len) };
    } else {
        // SAFETY: len <= both buffer sizes; distinct buffers never overlap.
        unsafe { core::ptr::copy_nonoverlapping(s, d, len) };
    }
    true
}

/// Copies `len` bytes as whole 64-byte lines (rounded up), as explicit loads and stores:
/// for a short frame a variable-length copy would become a call to memcpy, which costs
/// more than the frame itself.
///
/// # Safety
/// `round_up(len, 64)` bytes from `s` and from `d` lie inside two distinct buffers.
#[inline(always)]
unsafe fn copy_whole_lines(s: *const u8, d: *mut u8, len: usize) {
    let mut o = 0;
    while o < len {
        // SAFETY: o + 64 <= round_up(len, 64), inside both buffers (the caller's
        // promise); the buffers are distinct, so the line does not overlap.
        unsafe {
            let line = core::ptr::read_unaligned(s.add(o).cast::<[u8; 64]>());
            core::ptr::write_unaligned(d.add(o).cast::<[u8; 64]>(), line);
        }
        o += 64;
    }
}

/// Copies `len` bytes from `s` to `d` as `copy_frame` does, in whole 64-byte lines for
/// a short frame when both buffers have room for 256 bytes from `s` and `d` (`s_room`
/// and `d_room` bytes to their ends: the rounded-up copy stays inside), else exactly.
///
/// # Safety
/// `s..s+s_room` and `d..d+d_room` lie inside two distinct buffers, and
/// `len <= s_room.min(d_room)`.
#[inline(always)]
unsafe fn copy_lines(s: *const u8, d: *mut u8, len: usize, s_room: usize, d_room: usize) {
    if len <= 256 && s_room >= 256 && d_room >= 256 {
        // SAFETY: round_up(len, 64) <= 256 <= both rooms (the check above), which lie
        // inside two distinct buffers (the caller's promise).
        unsafe { copy_whole_lines(s, d, len) };
    } else {
        // SAFETY: len <= both rooms; distinct buffers never overlap.
        unsafe { core::ptr::copy_nonoverlapping(s, d, len) };
    }
}

/// Copies the first `n` bytes (a frame's MAC addresses and the virtio-net header before
/// them: 12 to 24 bytes) in 8-byte words, the last one overlapping, so that no call to
/// `memcpy` is made for a variable length this short.
///
/// # Safety
/// `s..s+n` and `d..d+n` lie inside two distinct buffers.
#[inline(always)]
unsafe fn copy_head(s: *const u8, d: *mut u8, n: usize) {
    if n == 12 {
        // The MAC addresses of a frame without a virtio-net header: a word and a half.
        // SAFETY: 0..8 and 8..12 lie inside both ranges of n = 12 bytes.
        unsafe {
            let w = core::ptr::read_unaligned(s.cast::<u64>());
            let x = core::ptr::read_unaligned(s.add(8).cast::<u32>());
            core::ptr::write_unaligned(d.cast::<u64>(), w);
            core::ptr::write_unaligned(d.add(8).cast::<u32>(), x);
        }
        return;
    }
    if n < 8 {
        // SAFETY: as the caller promises, for n bytes.
        unsafe { core::ptr::copy_nonoverlapping(s, d, n) };
        return;
    }
    let mut o = 0;
    while o + 8 < n {
        // SAFETY: o + 8 < n: inside both ranges.
        unsafe {
            let w = core::ptr::read_unaligned(s.add(o).cast::<u64>());
            core::ptr::write_unaligned(d.add(o).cast::<u64>(), w);
        }
        o += 8;
    }
    // SAFETY: n >= 8, so n - 8 .. n is inside both ranges.
    unsafe {
        let w = core::ptr::read_unaligned(s.add(n - 8).cast::<u64>());
        core::ptr::write_unaligned(d.add(n - 8).cast::<u64>(), w);
    }
}

/// [`copy_frame`] with 4 bytes (`tag`: a VLAN tag's TPID and TCI) put in at offset `at`
/// (after the MAC addresses, and the virtio-net header if the frame has one): the frame
/// is copied whole to 4 bytes into the destination, then its first `at` bytes to the
/// start and the tag after them, so a short frame still costs its lines and no more.
/// `len + 4` bytes land in `dst`. Returns false (and copies nothing) if an index is
/// invalid, the buffers are the same, `at > len`, or `len` (`len + 4`) exceeds the
/// source (destination) buffer.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn copy_frame_push(
    src: Bufs<'_>,
    sidx: u32,
    dst: Bufs<'_>,
    didx: u32,
    len: usize,
    at: usize,
    tag: [u8; 4],
) -> bool {
    let (Some(s), Some(d)) = (src.ptr(sidx), dst.ptr(didx)) else {
        return false;
    };
    let (sb, db) = (src.buf_size as usize, dst.buf_size as usize);
    if s == d || at > len || len > sb || len > db.saturating_sub(4) {
        return false;
    }
    // SAFETY: `s` and `d` start two distinct buffers (checked above; distinct buffers
    // never overlap, even across regions) of `sb` and `db` bytes; the body goes to
    // d+4 .. d+4+len with db - 4 bytes of room there, the head to d .. d+at and the tag
    // to d+at .. d+at+4, all inside d+len+4 <= d+db, and every read is below s+len.
    unsafe {
        copy_lines(s, d.add(4), len, sb, db - 4);
        copy_head(s, d, at);
        core::ptr::write_unaligned(d.add(at).cast::<[u8; 4]>(), tag);
    }
    true
}

/// [`copy_frame`] with the 4 bytes at offset `at` (a VLAN tag) taken out: the frame from
/// byte 4 on is copied to the start of the destination, then its first `at` bytes over
/// it. `len - 4` bytes land in `dst`. Returns false (and copies nothing) if an index is
/// invalid, the buffers are the same, `at + 4 > len`, or `len` exceeds the source buffer
/// (`len - 4` the destination's).
#[inline(always)]
pub fn copy_frame_pop(
    src: Bufs<'_>,
    sidx: u32,
    dst: Bufs<'_>,
    didx: u32,
    len: usize,
    at: usize,
) -> bool {
    let (Some(s), Some(d)) = (src.ptr(sidx), dst.ptr(didx)) else {
        return false;
    };
    let (sb, db) = (src.buf_size as usize, dst.buf_size as usize);
    if s == d || len < 4 || at > len - 4 || len > sb || len - 4 > db {
        return false;
    }
    // SAFETY: two distinct buffers of `sb` and `db` bytes (as in `copy_frame_push`);
    // the body is read from s+4 .. s+len (sb - 4 bytes of room from s+4) into
    // d .. d+len-4 <= d+db, the head from s .. s+at into d .. d+at, at + 4 <= len.
    unsafe {
        copy_lines(s.add(4), d, len - 4, sb - 4, db);
        copy_head(s, d, at);
    }
    true
}

/// One ring of a region, with trusted geometry.
#[derive(Clone)]
pub struct RingView {
    _map: Arc<Mapping>,
    hdr: *mut u8,
    /// The ring's [`SyncBlock`], in the region's sync area (not in the header).
    sync: *mut u8,
    slots: *mut NetmapSlot,
    num_slots: u32,
    bufs: BufPool,
}

// SAFETY: the raw pointers point into `map`, kept alive by the Arc; see BufPool.
unsafe impl Send for RingView {}
// SAFETY: as above.
unsafe impl Sync for RingView {}

impl RingView {
    pub(crate) fn new(
        map: Arc<Mapping>,
        offset: usize,
        sync_offset: usize,
        num_slots: u32,
        bufs: BufPool,
    ) -> Self {
        let bytes = NETMAP_RING_SIZE + num_slots as usize * NETMAP_SLOT_SIZE;
        let hdr = map
            .ptr(offset, bytes)
            .expect("layout bug: ring outside the region");
        debug_assert!(map.len() >= offset + bytes);
        assert!(
            sync_offset % 4 == 0,
            "layout bug: sync block not word-aligned"
        );
        let sync = map
            .ptr(sync_offset, SYNC_BLOCK_SIZE)
            .expect("layout bug: sync block outside the region");
        // SAFETY: the ring's slots follow its 256-byte header, inside the checked range.
        let slots = unsafe { hdr.add(NETMAP_RING_SIZE) }.cast::<NetmapSlot>();
        RingView {
            _map: map,
            hdr,
            sync,
            slots,
            num_slots,
            bufs,
        }
    }

    #[inline(always)]
    pub fn num_slots(&self) -> u32 {
        self.num_slots
    }

    #[inline(always)]
    pub fn bufs(&self) -> &BufPool {
        &self.bufs
    }

    /// A copyable handle to the slots for hot loops.
    #[inline(always)]
    pub fn slots(&self) -> Slots<'_> {
        Slots {
            slots: self.slots,
            num_slots: self.num_slots,
            _ring: PhantomData,
        }
    }

    /// A word of the ring header (`off::RING_*`).
    #[inline(always)]
    fn word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offsets are constants below NETMAP_RING_SIZE and 4-aligned; the header
        // is inside the mapping (checked in `new`) and the mapping outlives `&self`.
        unsafe { AtomicU32::from_ptr(self.hdr.add(offset).cast::<u32>()) }
    }

    /// A word of the ring's sync block (`sync_off::*`).
    #[inline(always)]
    fn sync_word(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: offsets are constants below SYNC_BLOCK_SIZE and 4-aligned; the block is
        // inside the mapping and 4-aligned (both checked in `new`), and the mapping
        // outlives `&self`.
        unsafe { AtomicU32::from_ptr(self.sync.add(offset).cast::<u32>()) }
    }

    /// The ring's sync words, in its [`SyncBlock`].
    #[inline(always)]
    pub fn csb(&self) -> Csb<'_, AtomicU32> {
        Csb {
            head: self.sync_word(sync_off::ATOK_HEAD),
            cur: self.sync_word(sync_off::ATOK_CUR),
            appl_need_kick: self.sync_word(sync_off::ATOK_NEED_KICK),
            hwcur: self.sync_word(sync_off::KTOA_HWCUR),
            hwtail: self.sync_word(sync_off::KTOA_HWTAIL),
            kern_need_kick: self.sync_word(sync_off::KTOA_NEED_KICK),
        }
    }

    /// Reads slot `i` once (an out-of-range `i` reads the last slot; callers keep `i`
    /// in range by construction).
    #[inline(always)]
    pub fn read_slot(&self, i: u32) -> NetmapSlot {
        self.slots().read(i)
    }

    /// Writes slot `i` whole.
    #[inline(always)]
    pub fn write_slot(&self, i: u32, slot: NetmapSlot) {
        self.slots().write(i, slot)
    }

    /// Writes `len` and `flags` of slot `i`, leaving `buf_idx` and `ptr` alone.
    #[inline(always)]
    pub fn write_len_flags(&self, i: u32, len: u16, flags: u16) {
        self.slots().write_len_flags(i, len, flags)
    }

    /// netmap's user-visible `head`.
    pub fn head(&self) -> u32 {
        self.word(off::RING_HEAD).load(Ordering::Relaxed)
    }
    /// netmap's user-visible `cur`.
    pub fn cur(&self) -> u32 {
        self.word(off::RING_CUR).load(Ordering::Relaxed)
    }
    /// netmap's user-visible `tail`.
    pub fn tail(&self) -> u32 {
        self.word(off::RING_TAIL).load(Ordering::Relaxed)
    }
    pub fn set_head(&self, v: u32) {
        self.word(off::RING_HEAD).store(v, Ordering::Relaxed)
    }
    pub fn set_cur(&self, v: u32) {
        self.word(off::RING_CUR).store(v, Ordering::Relaxed)
    }
    pub fn set_tail(&self, v: u32) {
        self.word(off::RING_TAIL).store(v, Ordering::Relaxed)
    }

    /// netmap's `netmap_ring_reinit`, done by the switch when a client broke the
    /// protocol: the user fields and the app's sync words go back to the switch's view.
    pub fn reinit(&self, hwcur: u32, hwtail: u32) {
        self.set_head(hwcur);
        self.set_cur(hwcur);
        self.set_tail(hwtail);
        self.csb().app_publish_release(hwcur, hwcur);
    }
}

/// Borrowed access to a ring's slots (see [`RingView::slots`]).
#[derive(Clone, Copy)]
pub struct Slots<'a> {
    slots: *mut NetmapSlot,
    num_slots: u32,
    _ring: PhantomData<&'a RingView>,
}

impl Slots<'_> {
    #[inline(always)]
    pub fn len(&self) -> u32 {
        self.num_slots
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.num_slots == 0
    }

    #[inline(always)]
    fn ptr(&self, i: u32) -> *mut NetmapSlot {
        let i = i.min(self.num_slots - 1);
        // SAFETY: i < num_slots, and the slot array was bounds-checked in RingView::new.
        unsafe { self.slots.add(i as usize) }
    }

    /// Reads slot `i` once; an out-of-range `i` reads the last slot.
    #[inline(always)]
    pub fn read(&self, i: u32) -> NetmapSlot {
        // SAFETY: in bounds (see `ptr`) and 8-aligned (rings are 128-aligned).
        unsafe { core::ptr::read_volatile(self.ptr(i)) }
    }

    /// Reads only `buf_idx` of slot `i`.
    #[inline(always)]
    pub fn buf_idx(&self, i: u32) -> u32 {
        // SAFETY: as in `read`; buf_idx is the slot's first field.
        unsafe { core::ptr::read_volatile(self.ptr(i).cast::<u32>()) }
    }

    /// Writes slot `i` whole.
    #[inline(always)]
    pub fn write(&self, i: u32, slot: NetmapSlot) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile(self.ptr(i), slot) }
    }

    /// Writes `len` and `flags` of slot `i`, leaving `buf_idx` and `ptr` alone.
    #[inline(always)]
    pub fn write_len_flags(&self, i: u32, len: u16, flags: u16) {
        let v = len as u32 | (flags as u32) << 16;
        // SAFETY: bytes 4..8 of an in-bounds, 8-aligned slot.
        unsafe { core::ptr::write_volatile(self.ptr(i).cast::<u8>().add(4).cast::<u32>(), v) }
    }
}

/// The application's side of one ring: netmap's user API (head, cur, tail, slots) and the
/// `txsync`/`rxsync` that exchange positions with the switch through the sync words.
#[derive(Clone)]
pub struct AppRing {
    view: RingView,
}

impl AppRing {
    pub fn new(view: RingView) -> AppRing {
        AppRing { view }
    }

    pub fn view(&self) -> &RingView {
        &self.view
    }

    pub fn num_slots(&self) -> u32 {
        self.view.num_slots
    }
    pub fn head(&self) -> u32 {
        self.view.head()
    }
    pub fn cur(&self) -> u32 {
        self.view.cur()
    }
    pub fn tail(&self) -> u32 {
        self.view.tail()
    }

    /// `nm_ring_space`: slots in `[head, tail)`.
    pub fn space(&self) -> u32 {
        let n = self.view.num_slots;
        dist(self.head().min(n - 1), self.tail().min(n - 1), n)
    }

    /// Advances `head` and `cur` by `k` slots (netmap: `ring->head = ring->cur = ...`).
    pub fn advance(&self, k: u32) {
        let n = self.view.num_slots;
        let h = add(self.head().min(n - 1), k.min(n), n);
        self.view.set_head(h);
        self.view.set_cur(h);
    }

    /// Publishes `head`/`cur` to the switch and refreshes `tail`. Returns whether the
    /// switch asked to be kicked (it is sleeping).
    pub fn sync(&self) -> bool {
        let csb = self.view.csb();
        csb.app_publish_release(self.head(), self.cur());
        let (_, hwtail) = csb.app_read_acquire();
        self.view.set_tail(hwtail);
        csb.app_kick_needed()
    }

    /// `NIOCTXSYNC` for this ring.
    pub fn txsync(&self) -> bool {
        self.sync()
    }

    /// `NIOCRXSYNC` for this ring.
    pub fn rxsync(&self) -> bool {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use crate::{PortGeometry, Region};

    fn pool() -> crate::BufPool {
        let g = PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            ..Default::default()
        };
        Region::create("vale0:frag", g).unwrap().bufs()
    }

    #[test]
    fn frag_is_made_only_inside_a_valid_buffer() {
        let pool = pool();
        let b = pool.access();
        let (last, size) = (b.nbufs() - 1, b.buf_size() as usize);
        assert!(b.frag(0, 0, 1).is_none(), "buffer 0 is reserved");
        assert!(b.frag(1, 0, 1).is_none(), "buffer 1 is reserved");
        assert!(b.frag(b.nbufs(), 0, 1).is_none(), "past the pool");
        assert!(b.frag(u32::MAX, 0, 1).is_none());
        assert_eq!(b.frag(last, 0, size).map(|f| f.len()), Some(size));
        assert_eq!(b.frag(2, size, 0).map(|f| f.is_empty()), Some(true));
        assert!(b.frag(2, 0, size + 1).is_none(), "longer than a buffer");
        assert!(b.frag(2, 1, size).is_none(), "runs into the next buffer");
        assert!(b.frag(2, usize::MAX, 2).is_none(), "offset + len overflows");
    }

    #[test]
    fn frag_copies_and_skips_a_prefix() {
        let pool = pool();
        let b = pool.access();
        let data: Vec<u8> = (0..100u8).collect();
        assert!(b.write(5, &data));
        let f = b.frag(5, 0, 100).unwrap();
        let mut out = [0xa5u8; 128];
        assert_eq!(f.copy_to(&mut out), 100);
        assert_eq!(&out[..100], &data[..]);
        assert_eq!(out[100], 0xa5, "nothing past the fragment");
        let mut short = [0u8; 10];
        assert_eq!(f.copy_to(&mut short), 10, "as much as fits");
        assert_eq!(short, data[..10]);

        let g = f.skip(12).unwrap();
        assert_eq!(g.len(), 88);
        let mut rest = [0u8; 88];
        assert_eq!(g.copy_to(&mut rest), 88);
        assert_eq!(&rest[..], &data[12..]);
        assert_eq!(g.raw_parts().0 as usize - f.raw_parts().0 as usize, 12);
        assert!(f.skip(100).unwrap().is_empty());
        assert!(f.skip(101).is_none(), "a prefix longer than the fragment");
        let empty = super::Frag::default();
        assert!(empty.is_empty() && empty.skip(0).is_some() && empty.skip(1).is_none());
        assert_eq!(empty.copy_to(&mut [0u8; 4]), 0);
        let at = b.frag(5, 40, 10).unwrap();
        let mut mid = [0u8; 10];
        at.copy_to(&mut mid);
        assert_eq!(mid, data[40..50]);
    }

    fn pool_of(name: &str, buf_size: u32) -> crate::BufPool {
        let g = PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            buf_size,
            ..Default::default()
        };
        Region::create(name, g).unwrap().bufs()
    }

    /// A frame of `len` bytes whose every byte differs from its neighbours'.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    /// Reads `n` bytes of buffer `idx`.
    fn bytes(b: &super::Bufs<'_>, idx: u32, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        assert!(b.read(idx, &mut v));
        v
    }

    /// Push and pop against the byte-by-byte answer, at every length where the copy
    /// changes shape (one line, a line and a byte, the line limit, whole copies) and at
    /// the buffer's limits; the buffers either side are never touched.
    #[test]
    fn tags_go_in_and_out_while_copying() {
        for bs in [64u32, 128, 2048] {
            let src_pool = pool_of("vale0:tagsrc", bs);
            let dst_pool = pool_of("vale0:tagdst", bs);
            let (s, d) = (src_pool.access(), dst_pool.access());
            let b = bs as usize;
            let lens = [
                12, 16, 17, 59, 60, 61, 63, 64, 65, 124, 127, 128, 129, 192, 252, 253, 256, 257,
                1514, 1518, 2044, 2048,
            ];
            for len in lens.into_iter().filter(|&l| l <= b) {
                for at in [12usize, 22, 24] {
                    let f = pattern(len);
                    assert!(s.write(5, &f));
                    for k in [9, 10, 11] {
                        assert!(d.write(k, &vec![0xa5; b]));
                    }
                    let tag = [0x81, 0x00, 0xe0, 0x0a];
                    let ok = super::copy_frame_push(s, 5, d, 10, len, at, tag);
                    assert_eq!(ok, at <= len && len + 4 <= b, "push {len} at {at} in {bs}");
                    if ok {
                        let want = [&f[..at], &tag[..], &f[at..]].concat();
                        assert_eq!(bytes(&d, 10, len + 4), want, "push {len} at {at} in {bs}");
                    } else {
                        assert_eq!(bytes(&d, 10, b), vec![0xa5; b], "refused: nothing copied");
                    }
                    let ok = super::copy_frame_pop(s, 5, d, 10, len, at);
                    assert_eq!(ok, at + 4 <= len, "pop {len} at {at} in {bs}");
                    if ok {
                        let want = [&f[..at], &f[at + 4..]].concat();
                        assert_eq!(bytes(&d, 10, len - 4), want, "pop {len} at {at} in {bs}");
                    }
                    for k in [9, 11] {
                        assert_eq!(bytes(&d, k, b), vec![0xa5; b], "buffer {k} untouched");
                    }
                }
            }
        }
    }

    #[test]
    fn tag_copies_refuse_bad_buffers() {
        let pool = pool();
        let b = pool.access();
        let n = b.nbufs();
        let tag = [0x81, 0, 0, 1];
        assert!(b.write(5, &pattern(60)));
        for (si, di) in [(0, 6), (1, 6), (n, 6), (5, 0), (5, n), (5, u32::MAX)] {
            assert!(!super::copy_frame_push(b, si, b, di, 60, 12, tag));
            assert!(!super::copy_frame_pop(b, si, b, di, 60, 12));
        }
        // In place is not a copy: refused, and the frame is as it was.
        assert!(!super::copy_frame_push(b, 5, b, 5, 60, 12, tag));
        assert!(!super::copy_frame_pop(b, 5, b, 5, 60, 12));
        assert_eq!(bytes(&b, 5, 60), pattern(60));
        // Longer than the source buffer, and an offset past the end.
        let bs = b.buf_size() as usize;
        assert!(!super::copy_frame_pop(b, 5, b, 6, bs + 1, 12));
        assert!(!super::copy_frame_push(b, 5, b, 6, 60, 61, tag));
        assert!(!super::copy_frame_pop(b, 5, b, 6, 60, usize::MAX - 2));
    }

    #[test]
    fn copy_frame_matches_a_byte_copy_at_every_edge_length() {
        let (sp, dp) = (pool(), pool());
        let (src, dst) = (sp.access(), dp.access());
        let size = src.buf_size() as usize;
        let data: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
        assert!(src.write(2, &data));
        let mut lens: Vec<usize> = (0..=130).collect();
        lens.extend([191, 192, 193, 255, 256, 257, 1514, size - 1, size]);
        for len in lens {
            assert!(dst.write(3, &vec![0xa5; size]));
            assert!(super::copy_frame(src, 2, dst, 3, len), "len {len}");
            let mut out = vec![0u8; size];
            assert!(dst.read(3, &mut out));
            assert_eq!(&out[..len], &data[..len], "len {len}");
            // Short frames are copied in whole lines; nothing past the last one.
            let end = if len <= 256 {
                len.div_ceil(64) * 64
            } else {
                len
            };
            assert!(
                out[end..].iter().all(|&b| b == 0xa5),
                "len {len}: past the copy"
            );
        }
        assert!(
            !super::copy_frame(src, 2, dst, 3, size + 1),
            "longer than a buffer"
        );
        assert!(
            !super::copy_frame(src, 1, dst, 3, 60),
            "reserved source buffer"
        );
        assert!(
            !super::copy_frame(src, 2, dst, dst.nbufs(), 60),
            "destination past the pool"
        );
    }
}
