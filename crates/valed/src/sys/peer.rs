//! Memory another process shares with valed and may write at any moment (a memif
//! client's regions): mapped `MAP_SHARED` from the descriptor it sent, and touched only
//! through bounds-checked copies and atomic loads and stores, never through references,
//! since the peer can change any byte while valed reads it.

use super::Mmap;
use rustix::fd::BorrowedFd;
use std::io;
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};

/// One peer region, unmapped when dropped.
pub struct PeerMem {
    map: Mmap,
}

impl PeerMem {
    /// The first `len` bytes of the file behind `fd`, shared. The caller checked the
    /// file is at least that long (and sealed, or trusted not to shrink).
    pub fn map(fd: BorrowedFd<'_>, len: u64) -> io::Result<PeerMem> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(PeerMem {
            map: Mmap::shared(fd, len, 0, false)?,
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Where the mapping is (address, length), to watch it for a truncation
    /// (`sys::sigbus`).
    pub fn range(&self) -> (usize, usize) {
        (self.map.as_ptr() as usize, self.map.len())
    }

    /// Whether `[off, off + n)` lies inside the region.
    fn fits(&self, off: usize, n: usize) -> bool {
        off.checked_add(n).is_some_and(|end| end <= self.map.len())
    }

    /// The aligned `T`-sized atomic at `off`, if it lies inside the region.
    fn atomic<T>(&self, off: usize) -> Option<*const T> {
        let size = std::mem::size_of::<T>();
        if !self.fits(off, size) || off % std::mem::align_of::<T>() != 0 {
            return None;
        }
        // SAFETY: `off + size` is within the mapping (checked above), so the pointer
        // stays inside the same allocation.
        let p = unsafe { self.map.as_ptr().add(off) };
        Some(p.cast::<T>().cast_const())
    }

    /// The `u16` at `off` (a ring's head or tail), with acquire ordering: what the peer
    /// wrote before publishing it is visible after. `None` when out of bounds or not
    /// aligned.
    pub fn load_u16(&self, off: usize) -> Option<u16> {
        let p = self.atomic::<AtomicU16>(off)?;
        // SAFETY: `p` is aligned and inside the mapping, which lives as long as `self`;
        // an atomic is the sound way to read memory another process writes.
        Some(unsafe { &*p }.load(Ordering::Acquire))
    }

    /// Stores `v` at `off` with release ordering (what valed wrote before is visible to
    /// the peer once it sees `v`). False when out of bounds or not aligned.
    pub fn store_u16(&self, off: usize, v: u16) -> bool {
        let Some(p) = self.atomic::<AtomicU16>(off) else {
            return false;
        };
        // SAFETY: as in `load_u16`.
        unsafe { &*p }.store(v, Ordering::Release);
        true
    }

    /// The `u32` at `off` (a ring's cookie), relaxed.
    pub fn load_u32(&self, off: usize) -> Option<u32> {
        let p = self.atomic::<AtomicU32>(off)?;
        // SAFETY: as in `load_u16`.
        Some(unsafe { &*p }.load(Ordering::Relaxed))
    }

    /// Copies `dst.len()` bytes from `off` into `dst`. False (and `dst` untouched) when
    /// the range is outside the region.
    pub fn read(&self, off: usize, dst: &mut [u8]) -> bool {
        if !self.fits(off, dst.len()) {
            return false;
        }
        // SAFETY: the source range is inside the mapping (checked), the destination is
        // valed's own buffer, and they cannot overlap (the mapping is not Rust memory).
        // The peer may write the source meanwhile: the copy then holds some mix of old
        // and new bytes, which is all a frame can be when its sender misbehaves; no
        // reference to the shared bytes is ever made.
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), dst.as_mut_ptr(), dst.len())
        };
        true
    }

    /// Appends the `n` bytes at `off` to `out`. False (and `out` untouched) when the
    /// range is outside the region. (What [`PeerMem::read`] does, without zeroing the
    /// room first.)
    pub fn append(&self, off: usize, n: usize, out: &mut Vec<u8>) -> bool {
        if !self.fits(off, n) {
            return false;
        }
        out.reserve(n);
        let at = out.len();
        // SAFETY: the source range is inside the mapping (checked); `reserve` made room
        // for `n` more bytes after `at`, which the copy fills entirely before `set_len`
        // counts them; the regions cannot overlap (as in `read`).
        unsafe {
            std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), out.as_mut_ptr().add(at), n);
            out.set_len(at + n);
        }
        true
    }

    /// Copies the `n` bytes at `off` into the start of buffer `idx` of `bufs` (a port's
    /// own buffer), with no copy in between. False (and nothing copied) when the range is
    /// outside the region, or the buffer index or length is invalid.
    pub fn copy_to_buf(&self, off: usize, n: usize, bufs: vale_abi::Bufs<'_>, idx: u32) -> bool {
        let Some(dst) = bufs.dst(idx, n) else {
            return false;
        };
        if !self.fits(off, n) {
            return false;
        }
        // SAFETY: the source range is inside the mapping (checked); `dst` holds `n` bytes
        // of a buffer of valed's own region, which `bufs` borrows (alive), and which is
        // not this mapping. As in `read`, the peer may change the source meanwhile.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), dst, n) };
        true
    }

    /// Copies bytes `at..at + n` of `frag` (a fragment of a port's buffer) to `off`. False
    /// (and nothing written) when either range is outside its memory.
    pub fn copy_from_frag(
        &self,
        off: usize,
        frag: &vale_abi::Frag<'_>,
        at: usize,
        n: usize,
    ) -> bool {
        if at.checked_add(n).is_none_or(|end| end > frag.len()) || !self.fits(off, n) {
            return false;
        }
        let (p, _) = frag.raw_parts();
        // SAFETY: `p..p + len` is readable while the fragment's pool is borrowed (Frag's
        // invariant) and `at + n <= len`; the destination is inside the mapping (checked),
        // which is not the port's region.
        unsafe { std::ptr::copy_nonoverlapping(p.add(at), self.map.as_ptr().add(off), n) };
        true
    }

    /// Copies `src` to `off`. False (and nothing written) when the range is outside the
    /// region.
    pub fn write(&self, off: usize, src: &[u8]) -> bool {
        if !self.fits(off, src.len()) {
            return false;
        }
        // SAFETY: as in `read`, the other way round.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.map.as_ptr().add(off), src.len())
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(len: u64) -> rustix::fd::OwnedFd {
        let fd = rustix::fs::memfd_create("peer-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        fd
    }

    #[test]
    fn accesses_inside_the_region_work_and_outside_it_are_refused() {
        use rustix::fd::AsFd;
        let fd = memfd(4096);
        let m = PeerMem::map(fd.as_fd(), 4096).unwrap();
        let twin = PeerMem::map(fd.as_fd(), 4096).unwrap();
        assert_eq!(m.len(), 4096);
        assert!(m.store_u16(6, 0xbeef));
        assert_eq!(
            twin.load_u16(6),
            Some(0xbeef),
            "shared, as the peer sees it"
        );
        assert_eq!(m.load_u16(7), None, "unaligned");
        assert_eq!(m.load_u16(4095), None, "past the end");
        assert!(!m.store_u16(4096, 1));
        assert!(m.write(4000, &[7u8; 96]));
        assert!(!m.write(4001, &[7u8; 96]), "one byte over");
        let mut b = [0u8; 96];
        assert!(twin.read(4000, &mut b));
        assert_eq!(b, [7u8; 96]);
        assert!(!m.read(usize::MAX - 4, &mut b), "no overflow");
        let mut v = vec![1u8, 2];
        assert!(m.append(4000, 3, &mut v));
        assert_eq!(v, [1, 2, 7, 7, 7]);
        assert!(!m.append(4095, 2, &mut v));
        assert_eq!(v.len(), 5, "untouched on refusal");
        assert_eq!(b, [7u8; 96], "untouched on refusal");
        assert_eq!(m.load_u32(4092), Some(0x0707_0707));
        assert!(PeerMem::map(fd.as_fd(), 0).is_err());
    }
}
