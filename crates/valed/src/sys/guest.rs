//! vhost-user guest memory as the forwarding thread touches it: the frontend's regions
//! (mapped by the vhost crate at `SET_MEM_TABLE`) read once into a table of guest
//! address, length and host address, after which a guest address becomes a host one by
//! a bounds-checked search of at most a few regions, no per-access machinery. The
//! frontend may write any byte at any moment, so, as in `peer`, nothing here makes a
//! reference into it: atomic loads and stores for ring indices, raw copies for the rest.
//! A truncated memfd still raises SIGBUS on access, caught by `sigbus` as before (the
//! addresses are the same mappings it watches).

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// One region of guest memory: where it is for the guest and for valed.
struct Region {
    gpa: u64,
    len: usize,
    host: *mut u8,
}

/// The guest's memory regions, translated once. Keeps the mappings alive.
pub struct GuestMap {
    regions: Vec<Region>,
    _keep: Arc<GuestMemoryMmap>,
}

// SAFETY: the pointers are into mappings `_keep` owns (an `Arc`, shared with the vhost
// crate's thread); they are only used for atomic accesses and raw copies, which any
// thread may make, and the mappings live as long as the map.
unsafe impl Send for GuestMap {}
// SAFETY: as for `Send`: `&GuestMap` gives only atomic accesses and raw copies.
unsafe impl Sync for GuestMap {}

/// Guest memory `[off, off + len)` of one region, found by [`GuestMap::span`]. It
/// carries no pointer: every access is checked against the map's region again, so a
/// span kept past a memory change can only miss, never reach outside a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    region: u32,
    off: usize,
    len: usize,
}

impl Span {
    pub fn len(&self) -> usize {
        self.len
    }
}

impl GuestMap {
    /// The regions of `mem`, which the map keeps mapped.
    pub fn new(mem: Arc<GuestMemoryMmap>) -> GuestMap {
        let regions = mem
            .iter()
            .map(|r| Region {
                gpa: r.start_addr().0,
                len: r.size(),
                host: r.as_ptr(),
            })
            .collect();
        GuestMap {
            regions,
            _keep: mem,
        }
    }

    /// Host addresses and lengths of the regions (what `sigbus` watches).
    pub fn ranges(&self) -> Vec<(usize, usize)> {
        self.regions
            .iter()
            .map(|r| (r.host as usize, r.len))
            .collect()
    }

    /// Guest memory `[gpa, gpa + len)` if it lies inside one region.
    #[inline]
    pub fn span(&self, gpa: u64, len: usize) -> Option<Span> {
        let (i, r) = self
            .regions
            .iter()
            .enumerate()
            .find(|(_, r)| gpa >= r.gpa && gpa - r.gpa < r.len as u64)?;
        let off = (gpa - r.gpa) as usize;
        (len <= r.len - off).then_some(Span {
            region: i as u32,
            off,
            len,
        })
    }

    /// Guest memory `[gpa, gpa + len)` as the spans of the regions it crosses, in
    /// order, each given to `f`; false (after some spans, maybe) if any byte of it is
    /// not guest memory.
    #[inline]
    pub fn spans(&self, mut gpa: u64, mut len: u64, mut f: impl FnMut(Span)) -> bool {
        while len > 0 {
            let Some((i, r)) = self
                .regions
                .iter()
                .enumerate()
                .find(|(_, r)| gpa >= r.gpa && gpa - r.gpa < r.len as u64)
            else {
                return false;
            };
            let off = (gpa - r.gpa) as usize;
            let n = len.min((r.len - off) as u64);
            f(Span {
                region: i as u32,
                off,
                len: n as usize,
            });
            gpa += n;
            len -= n;
        }
        true
    }

    /// Where bytes `[at, at + n)` of `s` are, if they lie inside it and inside its
    /// region.
    #[inline(always)]
    fn ptr(&self, s: Span, at: usize, n: usize) -> Option<*mut u8> {
        let r = self.regions.get(s.region as usize)?;
        let end = at.checked_add(n)?;
        let abs = s.off.checked_add(end)?;
        if end > s.len || abs > r.len {
            return None;
        }
        // SAFETY: `s.off + at + n <= r.len` (checked), so the pointer stays inside the
        // region's mapping, which `_keep` keeps alive.
        Some(unsafe { r.host.add(s.off + at) })
    }

    /// The aligned `u16` at byte `at` of `s` (a ring index or entry), loaded with
    /// `order`; `None` if outside it or not aligned.
    #[inline(always)]
    pub fn load_u16(&self, s: Span, at: usize, order: Ordering) -> Option<u16> {
        let p = self.ptr(s, at, 2)?;
        if p as usize % 2 != 0 {
            return None;
        }
        // SAFETY: `p` is inside a live mapping (`ptr`) and aligned; an atomic is the
        // sound way to read memory another process writes.
        Some(u16::from_le(
            unsafe { &*p.cast::<AtomicU16>().cast_const() }.load(order),
        ))
    }

    /// Stores `v` at byte `at` of `s` with `order` (Release to publish what was
    /// written before). False if outside it or not aligned.
    #[inline(always)]
    pub fn store_u16(&self, s: Span, at: usize, v: u16, order: Ordering) -> bool {
        let Some(p) = self.ptr(s, at, 2).filter(|p| *p as usize % 2 == 0) else {
            return false;
        };
        // SAFETY: as in `load_u16`.
        unsafe { &*p.cast::<AtomicU16>().cast_const() }.store(v.to_le(), order);
        true
    }

    /// Copies `dst.len()` bytes from byte `at` of `s`. False (nothing copied) if the
    /// range is outside it.
    #[inline(always)]
    pub fn read(&self, s: Span, at: usize, dst: &mut [u8]) -> bool {
        let Some(p) = self.ptr(s, at, dst.len()) else {
            return false;
        };
        // SAFETY: the source is inside a live mapping (`ptr`), the destination is
        // valed's own buffer, and they cannot overlap (the mapping is not Rust memory).
        // The frontend may write the source meanwhile: the copy then holds a mix of old
        // and new bytes, which is all its own data can be when it misbehaves.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies `src` to byte `at` of `s`. False (nothing written) if the range is
    /// outside it.
    #[inline(always)]
    pub fn write(&self, s: Span, at: usize, src: &[u8]) -> bool {
        let Some(p) = self.ptr(s, at, src.len()) else {
            return false;
        };
        // SAFETY: as in `read`, the other way round.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        true
    }

    /// Copies `n` bytes from byte `at` of `s` to offset `off` of buffer `idx` of `bufs`
    /// (a port's own buffer), with no copy in between. False (nothing copied) if either
    /// range is invalid.
    #[inline(always)]
    pub fn copy_to_buf(
        &self,
        s: Span,
        at: usize,
        n: usize,
        bufs: vale_abi::Bufs<'_>,
        idx: u32,
        off: usize,
    ) -> bool {
        let Some(dst) = off.checked_add(n).and_then(|end| bufs.dst(idx, end)) else {
            return false;
        };
        let Some(p) = self.ptr(s, at, n) else {
            return false;
        };
        // SAFETY: the source is inside a live mapping (`ptr`); `dst..dst + off + n` lies
        // in a buffer of valed's own region (`Bufs::dst` checked `off + n`), which `bufs`
        // borrows and which is not guest memory. As in `read`, the frontend may change
        // the source meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(p, dst.add(off), n) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn addresses_are_translated_within_regions_and_refused_outside() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x10000), 0x1000),
        ])
        .unwrap();
        mem.write_obj(0xbeefu16.to_le(), GuestAddress(0x1002))
            .unwrap();
        let m = GuestMap::new(Arc::new(mem.clone()));
        let s = m.span(0x1000, 16).unwrap();
        assert_eq!(m.load_u16(s, 2, Ordering::Acquire), Some(0xbeef));
        assert_eq!(m.load_u16(s, 3, Ordering::Acquire), None, "unaligned");
        assert_eq!(m.load_u16(s, 15, Ordering::Acquire), None, "past the span");
        assert!(m.span(0xff0, 32).is_none(), "crosses two regions");
        assert!(m.span(0x2000, 1).is_none(), "a hole");
        assert!(m.span(u64::MAX, 2).is_none());
        assert!(m.span(0x10000, 0x1001).is_none(), "past the last region");
        let mut got = Vec::new();
        assert!(m.spans(0xff0, 32, |s| got.push(s.len())));
        assert_eq!(got, [16, 16], "split at the regions' border");
        assert!(!m.spans(0x1ff0, 32, |_| {}), "runs into a hole");
        assert!(!m.spans(u64::MAX - 4, 64, |_| {}), "no overflow");
        assert!(m.write(s, 4, b"vale"));
        assert!(!m.write(s, 14, b"vale"), "two bytes over");
        let mut b = [0u8; 4];
        assert!(m.read(s, 4, &mut b));
        assert_eq!(&b, b"vale");
        let mut w = [0u8; 4];
        mem.read_slice(&mut w, GuestAddress(0x1004)).unwrap();
        assert_eq!(&w, b"vale", "the guest sees it");
        assert!(m.store_u16(s, 0, 7, Ordering::Release));
        assert_eq!(
            mem.read_obj::<u16>(GuestAddress(0x1000)).unwrap(),
            7u16.to_le()
        );
        assert_eq!(m.ranges().len(), 3);
    }
}
