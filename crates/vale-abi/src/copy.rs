//! The frame copy between two buffers, with the widest vector moves the CPU has.
//!
//! The binaries are built for generic x86-64 (SSE2), so wider moves are chosen at run
//! time: the CPU is asked once (`is_x86_feature_detected!`) and the answer kept in a
//! static; every copy then costs one relaxed load and a predictable branch. Other
//! architectures, and x86-64 CPUs without AVX2, keep the portable copy.
//!
//! `VALE_COPY=base` in the environment keeps the portable copy (to compare them, or to
//! rule the vector copy out); AVX2 is never chosen on a CPU without it. AVX-512 (one
//! 64-byte move per line) measured no better than AVX2 in the engine benchmark
//! (docs/performance.md), so it is not used.
//!
//! Every copy here moves whole 64-byte lines for frames of up to 256 bytes (netmap's
//! `pkt_copy` rounding), so the caller guarantees that `len` rounded up to 64 fits both
//! buffers; buffer sizes are multiples of 64 ([`crate::region::BUF_ALIGN`]). Longer
//! frames go to the C library's `memcpy`, which glibc already dispatches at run time.

use core::sync::atomic::{AtomicU8, Ordering};

/// Which short-frame copy [`crate::copy_frame`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CopyKind {
    /// Portable: 16-byte (SSE2) moves.
    Base,
    /// 32-byte AVX2 moves.
    Avx2,
}

impl CopyKind {
    pub fn name(self) -> &'static str {
        match self {
            CopyKind::Base => "base",
            CopyKind::Avx2 => "avx2",
        }
    }

    /// The kinds this CPU can run, narrowest first (for tests and benchmarks).
    pub fn available() -> Vec<CopyKind> {
        let best = detect();
        [CopyKind::Base, CopyKind::Avx2]
            .into_iter()
            .filter(|k| *k <= best)
            .collect()
    }
}

/// 0: not chosen yet; otherwise `CopyKind as u8 + 1`.
static KIND: AtomicU8 = AtomicU8::new(0);

/// The copy in use: the widest the CPU has, unless `VALE_COPY` asks for a narrower one.
#[inline(always)]
pub fn copy_kind() -> CopyKind {
    match KIND.load(Ordering::Relaxed) {
        1 => CopyKind::Base,
        2 => CopyKind::Avx2,
        _ => choose(),
    }
}

#[cold]
#[inline(never)]
fn choose() -> CopyKind {
    let best = detect();
    let asked = match std::env::var("VALE_COPY").as_deref() {
        Ok("base") => CopyKind::Base,
        _ => CopyKind::Avx2,
    };
    let k = asked.min(best);
    // Racing first users store the same value.
    KIND.store(k as u8 + 1, Ordering::Relaxed);
    k
}

fn detect() -> CopyKind {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            return CopyKind::Avx2;
        }
    }
    CopyKind::Base
}

/// Copies `len` bytes from `s` to `d` with the copy `kind`; frames of up to 256 bytes
/// are copied in whole 64-byte lines, longer ones by the C library's `memcpy` (glibc
/// picks its own vector width at run time, and measured faster than line loops here).
///
/// # Safety
///
/// `s` is readable and `d` writable for `len` rounded up to a multiple of 64 bytes, the
/// two ranges do not overlap, and `kind` is one the CPU runs ([`CopyKind::available`]).
#[inline(always)]
pub(crate) unsafe fn copy_with(kind: CopyKind, s: *const u8, d: *mut u8, len: usize) {
    if len > 256 {
        // SAFETY: len bytes are inside both ranges, which do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(s, d, len) };
        return;
    }
    match kind {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller's contract, len <= 256; the kind says the CPU has AVX2.
        CopyKind::Avx2 => unsafe { x86::short_avx2(s, d, len) },
        // SAFETY: the caller's contract, len <= 256.
        _ => unsafe { short_base(s, d, len) },
    }
}

/// The portable short copy (the only one before the vector kinds): whole lines, as
/// explicit loads and stores, since a variable-length copy here would become a call to
/// memcpy, which costs more than the frame itself.
///
/// # Safety
///
/// As [`copy_with`], and `len <= 256`.
#[inline(always)]
unsafe fn short_base(s: *const u8, d: *mut u8, len: usize) {
    let mut o = 0;
    while o < len {
        // SAFETY: o + 64 <= len rounded up to 64, inside both ranges (the caller's
        // contract), which do not overlap.
        unsafe {
            let line = core::ptr::read_unaligned(s.add(o).cast::<[u8; 64]>());
            core::ptr::write_unaligned(d.add(o).cast::<[u8; 64]>(), line);
        }
        o += 64;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// Lines 0..=3 of a frame of `len <= 256` bytes, each two 32-byte moves, without a
    /// loop (a 60-byte frame is two loads, two stores and one compare).
    ///
    /// # Safety
    ///
    /// As [`super::copy_with`], `len <= 256`; the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn short_avx2(s: *const u8, d: *mut u8, len: usize) {
        #[target_feature(enable = "avx2")]
        unsafe fn line(s: *const u8, d: *mut u8, i: usize) {
            // SAFETY: line i is copied only if len > 64 * i, so it lies inside len
            // rounded up to 64, inside both ranges (the caller's contract).
            unsafe {
                let a = _mm256_loadu_si256(s.add(i * 64).cast());
                let b = _mm256_loadu_si256(s.add(i * 64 + 32).cast());
                _mm256_storeu_si256(d.add(i * 64).cast(), a);
                _mm256_storeu_si256(d.add(i * 64 + 32).cast(), b);
            }
        }
        if len == 0 {
            return;
        }
        // SAFETY: line i only for len > 64 * i (see `line`).
        unsafe { line(s, d, 0) };
        if len > 64 {
            // SAFETY: as above.
            unsafe { line(s, d, 1) };
            if len > 128 {
                // SAFETY: as above.
                unsafe { line(s, d, 2) };
                if len > 192 {
                    // SAFETY: as above.
                    unsafe { line(s, d, 3) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind the CPU has, at every short length, around the 256-byte switch, at a
    /// full frame and a full buffer, from and to odd addresses, against a byte loop.
    #[test]
    fn copies_match_a_byte_copy() {
        let mut lens: Vec<usize> = (0..=130).collect();
        lens.extend([
            191, 192, 193, 255, 256, 257, 319, 320, 1514, 2047, 2048, 2112,
        ]);
        let src: Vec<u8> = (0..2112 + 128).map(|i| (i * 7 + 3) as u8).collect();
        for kind in CopyKind::available() {
            for &len in &lens {
                for (so, dof) in [(0, 0), (1, 0), (0, 1), (3, 7), (33, 17), (63, 64)] {
                    let round = len.div_ceil(64) * 64;
                    let mut dst = vec![0xa5u8; round + dof + 64];
                    // SAFETY: src has so + round bytes (so <= 63 + 128 slack), dst has
                    // dof + round; distinct vectors; the kind is available.
                    unsafe {
                        copy_with(kind, src.as_ptr().add(so), dst.as_mut_ptr().add(dof), len)
                    };
                    let what = format!("{} len {len} src+{so} dst+{dof}", kind.name());
                    assert_eq!(&dst[dof..dof + len], &src[so..so + len], "{what}");
                    assert!(dst[..dof].iter().all(|&b| b == 0xa5), "{what}: before");
                    assert!(
                        dst[dof + round..].iter().all(|&b| b == 0xa5),
                        "{what}: past the last line"
                    );
                    // Between len and the line's end: the source's bytes or untouched.
                    for i in len..round {
                        let b = dst[dof + i];
                        assert!(b == src[so + i] || b == 0xa5, "{what}: byte {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_chosen_kind_is_available() {
        assert!(CopyKind::available().contains(&copy_kind()));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::env::var_os("VALE_COPY").is_none() {
            assert!(copy_kind() >= CopyKind::Avx2);
        }
    }
}
