//! The OS-facing, `unsafe` part: sealed memfds and the shared mapping. Nothing outside
//! this module and `ring.rs` dereferences a pointer into a region.

use crate::{Error, Result};
use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;
use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// Creates a memfd of `size` bytes and seals its size, so the peer it is handed to cannot
/// shrink it under the switch's mapping (which would turn a copy into SIGBUS).
pub(crate) fn sealed_memfd(name: &str, size: usize) -> Result<OwnedFd> {
    let label: String = format!("vale:{name}")
        .chars()
        .filter(|c| *c != '\0')
        .take(240)
        .collect();
    let fd = rustix::fs::memfd_create(label, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| Error::Os("memfd_create", e.into()))?;
    rustix::fs::ftruncate(&fd, size as u64).map_err(|e| Error::Os("ftruncate", e.into()))?;
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .map_err(|e| Error::Os("fcntl(F_ADD_SEALS)", e.into()))?;
    Ok(fd)
}

pub(crate) fn file_size(fd: BorrowedFd<'_>) -> Result<u64> {
    let st = rustix::fs::fstat(fd).map_err(|e| Error::Os("fstat", e.into()))?;
    Ok(st.st_size as u64)
}

/// A `MAP_SHARED` read-write mapping of a whole region.
///
/// Invariant: `base..base+len` stays mapped until `drop`; every accessor bounds-checks its
/// offset against `len`. The memory may be written by another process at any time, so
/// no `&`/`&mut` to plain data in it is ever created, only atomics and raw copies.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through atomics or raw
// byte copies that tolerate concurrent writers (see the type's invariant).
unsafe impl Send for Mapping {}
// SAFETY: as above; no method hands out a non-atomic reference.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize, populate: bool) -> Result<Mapping> {
        let flags = MapFlags::SHARED;
        // SAFETY: a fresh mapping at an address of the kernel's choice cannot alias any
        // Rust object; `len` is the file size, checked by the callers.
        let p = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                flags,
                fd,
                0,
            )
        }
        .map_err(|e| Error::Os("mmap", e.into()))?;
        // Ask for transparent huge pages: under nested paging a TLB miss per 4 KiB of
        // buffers is a large part of a packet's cost. The kernel only honours it where
        // shmem THP is enabled (/sys/kernel/mm/transparent_hugepage/shmem_enabled set to
        // `advise` or `always`); elsewhere it is a no-op, so the result is ignored.
        // SAFETY: advice on the mapping just created; it changes no contents.
        let _ = unsafe { rustix::mm::madvise(p, len, rustix::mm::Advice::LinuxHugepage) };
        if populate {
            // Fault everything in now (after the THP advice), not on the data path.
            // SAFETY: as above; populating writes no data.
            let _ = unsafe { rustix::mm::madvise(p, len, rustix::mm::Advice::LinuxPopulateWrite) };
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or(Error::Os("mmap", std::io::Error::other("null mapping")))?;
        Ok(Mapping { base, len })
    }

    /// Faults `offset..offset + len` in now (rounded out to pages), so the data path
    /// does not.
    pub(crate) fn populate(&self, offset: usize, len: usize) {
        let start = offset / 4096 * 4096;
        let end = (offset + len).div_ceil(4096) * 4096;
        if len == 0 || end > self.len {
            return;
        }
        // SAFETY: a range inside this mapping; populating writes no data.
        let _ = unsafe {
            rustix::mm::madvise(
                self.base.as_ptr().add(start).cast(),
                end - start,
                rustix::mm::Advice::LinuxPopulateWrite,
            )
        };
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Pointer to `offset` if `offset + n` lies inside the mapping.
    pub(crate) fn ptr(&self, offset: usize, n: usize) -> Option<*mut u8> {
        let end = offset.checked_add(n)?;
        if end > self.len {
            return None;
        }
        // SAFETY: offset + n <= len, so the result stays inside the mapping.
        Some(unsafe { self.base.as_ptr().add(offset) })
    }

    pub(crate) fn write_bytes(&self, offset: usize, data: &[u8]) -> bool {
        match self.ptr(offset, data.len()) {
            Some(p) => {
                // SAFETY: `p..p+data.len()` is inside the mapping (checked by `ptr`), and
                // `data` is private memory, so the ranges cannot overlap.
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
                true
            }
            None => false,
        }
    }

    pub(crate) fn read_bytes(&self, offset: usize, out: &mut [u8]) -> bool {
        match self.ptr(offset, out.len()) {
            Some(p) => {
                // SAFETY: as in `write_bytes`, with the roles of the ranges swapped.
                unsafe { core::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
                true
            }
            None => false,
        }
    }

    /// The 32-bit word at `offset` as an atomic. Panics only on a layout bug (offsets
    /// come from [`crate::RegionLayout`], never from shared memory).
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        let p = self
            .ptr(offset, 4)
            .filter(|p| (*p as usize) % 4 == 0)
            .expect("layout bug: sync word out of range or misaligned");
        // SAFETY: `p` is 4-aligned and inside the mapping, which outlives `&self`; all
        // accesses to sync words, in both processes, are atomic.
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }
    }

    pub(crate) fn write_u32(&self, offset: usize, v: u32) {
        self.atomic_u32(offset)
            .store(v, core::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base..base+len` was returned by mmap in `new` and is unmapped once;
        // every user holds an `Arc<Mapping>`, so none is left.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
