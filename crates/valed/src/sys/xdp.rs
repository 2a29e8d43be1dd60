//! AF_XDP sockets: the socket, its UMEM and its four rings, and receiving and sending
//! frames through them (which queues to serve, and the XDP program, are `xsk`'s).
//!
//! Kernel ABI: linux/if_xdp.h. The kernel owns the rings' other index and the frames it
//! holds; everything read back from it (descriptor addresses and lengths) is checked
//! against the UMEM before use.

use super::Mmap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering, fence};

const AF_XDP: libc::c_int = 44;
const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_STATISTICS: libc::c_int = 7;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
const XDP_RING_NEED_WAKEUP: u32 = 1;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
const PGOFF_RX_RING: u64 = 0;
const PGOFF_TX_RING: u64 = 0x8000_0000;
const UMEM_PGOFF_FILL_RING: u64 = 0x1_0000_0000;
const UMEM_PGOFF_COMPLETION_RING: u64 = 0x1_8000_0000;

/// UMEM frame size.
pub const FRAME: usize = 4096;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct RingOffsets {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct MmapOffsets {
    rx: RingOffsets,
    tx: RingOffsets,
    fr: RingOffsets,
    cr: RingOffsets,
}

#[repr(C)]
struct UmemReg {
    addr: u64,
    len: u64,
    chunk_size: u32,
    headroom: u32,
    flags: u32,
    tx_metadata_len: u32,
}

#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}

/// The kernel's drop counters for one socket (`struct xdp_statistics`).
#[repr(C)]
#[derive(Default, Clone, Copy, Debug)]
pub struct Statistics {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

impl Statistics {
    /// Frames the kernel dropped: received ones it had no room for or that were too
    /// large for a frame (`rx_dropped`, which also counts what
    /// `rx_fill_ring_empty_descs` counts again), and descriptors we sent that it
    /// refused as invalid.
    pub fn lost(&self) -> u64 {
        self.rx_dropped
            .saturating_add(self.rx_ring_full)
            .saturating_add(self.tx_invalid_descs)
    }
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

fn setsockopt<T>(fd: &OwnedFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    crate::sys::setsockopt_at(fd, SOL_XDP, opt, v)
}

fn getsockopt<T: Default>(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is writable for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            opt,
            &mut v as *mut T as *mut libc::c_void,
            &mut len,
        )
    };
    if r < 0 { Err(last_err()) } else { Ok(v) }
}

/// One of a socket's four rings, mapped: `size` entries of `elem` bytes at `desc`,
/// and the producer and consumer indices and the flags word at their offsets.
struct Ring {
    map: Mmap,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    size: u32,
    elem: usize,
    /// Our side's index (the producer for fill and TX, the consumer for RX and
    /// completion), published with `publish`.
    ours: u32,
}

impl Ring {
    fn map(
        fd: &OwnedFd,
        off: &RingOffsets,
        size: u32,
        elem: usize,
        pgoff: u64,
    ) -> io::Result<Ring> {
        let len = off.desc as usize + size as usize * elem;
        let mut r = Ring {
            map: Mmap::shared(fd.as_fd(), len, pgoff, true)?,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: off.flags as usize,
            desc: off.desc as usize,
            size,
            elem,
            ours: 0,
        };
        r.ours = if pgoff == PGOFF_RX_RING || pgoff == UMEM_PGOFF_COMPLETION_RING {
            r.cons().load(Ordering::Relaxed)
        } else {
            r.prod().load(Ordering::Relaxed)
        };
        Ok(r)
    }

    /// The index or flags word at offset `at`.
    fn word(&self, at: usize) -> &AtomicU32 {
        // SAFETY: inside the mapping, 4-byte aligned (kernel offsets), alive with self.
        unsafe { &*self.map.as_ptr().add(at).cast::<AtomicU32>() }
    }

    fn prod(&self) -> &AtomicU32 {
        self.word(self.producer)
    }

    fn cons(&self) -> &AtomicU32 {
        self.word(self.consumer)
    }

    fn need_wakeup(&self) -> bool {
        self.word(self.flags).load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }

    fn entry(&self, i: u32) -> *mut u8 {
        let at = self.desc + (i & (self.size - 1)) as usize * self.elem;
        self.map.as_ptr().wrapping_add(at)
    }

    /// Consumer side: entries the kernel produced that we have not taken.
    fn ready(&self) -> u32 {
        self.prod()
            .load(Ordering::Acquire)
            .wrapping_sub(self.ours)
            .min(self.size)
    }

    /// Producer side: entries we may still fill.
    fn room(&self) -> u32 {
        self.size
            .wrapping_sub(self.ours.wrapping_sub(self.cons().load(Ordering::Acquire)))
            .min(self.size)
    }

    /// Consumer: gives `ours` back; producer: publishes up to `ours`.
    fn publish(&self, producer: bool) {
        if producer {
            self.prod().store(self.ours, Ordering::Release);
        } else {
            self.cons().store(self.ours, Ordering::Release);
        }
    }

    fn read_u64(&self, i: u32) -> u64 {
        // SAFETY: `entry` is inside the descriptor array; unaligned read is fine.
        unsafe { std::ptr::read_unaligned(self.entry(i) as *const u64) }
    }

    fn write_u64(&self, i: u32, v: u64) {
        // SAFETY: as `read_u64`.
        unsafe { std::ptr::write_unaligned(self.entry(i) as *mut u64, v) }
    }

    /// An RX/TX descriptor: address, length.
    fn read_desc(&self, i: u32) -> (u64, u32) {
        let p = self.entry(i);
        // SAFETY: 16-byte descriptors inside the array.
        unsafe {
            (
                std::ptr::read_unaligned(p as *const u64),
                std::ptr::read_unaligned(p.add(8) as *const u32),
            )
        }
    }

    fn write_desc(&self, i: u32, addr: u64, len: u32) {
        let p = self.entry(i);
        // SAFETY: as `read_desc`.
        unsafe {
            std::ptr::write_unaligned(p as *mut u64, addr);
            std::ptr::write_unaligned(p.add(8) as *mut u32, len);
            std::ptr::write_unaligned(p.add(12) as *mut u32, 0);
        }
    }
}

/// One AF_XDP socket, bound to one receive queue of an interface.
pub struct Xsk {
    // Rings before the socket and the UMEM: unmapped first.
    rx: Ring,
    tx: Ring,
    fill: Ring,
    comp: Ring,
    fd: OwnedFd,
    /// Unmapped after the socket is closed (fields drop in order).
    umem: Mmap,
    /// UMEM frames free for sending.
    free: Vec<u64>,
    /// Frames handed to the TX ring that the kernel has not taken yet.
    tx_queued: bool,
    pub zerocopy: bool,
    /// Frames the kernel took but did not send (copy mode, `EBUSY` from `sendto`:
    /// the interface dropped it); the caller counts and clears.
    pub tx_dropped: u64,
}

impl Xsk {
    pub fn new(ifindex: u32, queue: u32, frames: usize) -> io::Result<Xsk> {
        let ring = (frames / 2) as u32;
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(last_err());
        }
        // SAFETY: a descriptor we own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = frames * FRAME;
        let umem = Mmap::anonymous(len, true)?;
        let reg = UmemReg {
            addr: umem.as_ptr() as u64,
            len: len as u64,
            chunk_size: FRAME as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(&fd, XDP_UMEM_REG, &reg).map_err(|e| {
            // The kernel pins the UMEM, within RLIMIT_MEMLOCK unless CAP_IPC_LOCK.
            io::Error::new(
                e.kind(),
                format!(
                    "registering {} MiB of frames: {e} (locked memory: valed needs \
                         CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)",
                    len >> 20
                ),
            )
        })?;
        for opt in [
            XDP_UMEM_FILL_RING,
            XDP_UMEM_COMPLETION_RING,
            XDP_RX_RING,
            XDP_TX_RING,
        ] {
            setsockopt(&fd, opt, &ring)?;
        }
        let off: MmapOffsets = getsockopt(fd.as_fd(), XDP_MMAP_OFFSETS)?;
        let rx = Ring::map(&fd, &off.rx, ring, 16, PGOFF_RX_RING)?;
        let tx = Ring::map(&fd, &off.tx, ring, 16, PGOFF_TX_RING)?;
        let fill = Ring::map(&fd, &off.fr, ring, 8, UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(&fd, &off.cr, ring, 8, UMEM_PGOFF_COMPLETION_RING)?;
        let mut x = Xsk {
            rx,
            tx,
            fill,
            comp,
            fd,
            umem,
            free: (frames / 2..frames).map(|f| (f * FRAME) as u64).collect(),
            tx_queued: false,
            zerocopy: false,
            tx_dropped: 0,
        };
        // The first half of the frames waits in the fill ring for received frames.
        for f in 0..frames / 2 {
            x.fill.write_u64(x.fill.ours, (f * FRAME) as u64);
            x.fill.ours = x.fill.ours.wrapping_add(1);
        }
        x.fill.publish(true);
        let sa = SockaddrXdp {
            family: AF_XDP as u16,
            flags: XDP_USE_NEED_WAKEUP,
            ifindex,
            queue_id: queue,
            shared_umem_fd: 0,
        };
        // SAFETY: a sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                x.fd.as_raw_fd(),
                &sa as *const SockaddrXdp as *const libc::sockaddr,
                std::mem::size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(last_err());
        }
        x.zerocopy = getsockopt::<u32>(x.fd.as_fd(), XDP_OPTIONS)
            .is_ok_and(|o| o & XDP_OPTIONS_ZEROCOPY != 0);
        Ok(x)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The frame at `addr` (a UMEM offset from the kernel) of `len` bytes, if it lies
    /// inside the UMEM.
    fn frame(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        if end > self.umem.len() as u64 {
            return None;
        }
        // SAFETY: inside the UMEM mapping, which lives as long as self.
        Some(unsafe {
            std::slice::from_raw_parts(self.umem.as_ptr().add(addr as usize), len as usize)
        })
    }

    /// Up to `max` received frames, each handed to `f` (which may decline by returning
    /// false: the frame stays for the next call); their UMEM frames go back to the fill
    /// ring. Returns the frames taken and how many were malformed (outside the UMEM).
    pub fn recv(&mut self, max: usize, mut f: impl FnMut(&[u8]) -> bool) -> (usize, u64) {
        let ready = self.rx.ready().min(max as u32);
        if ready == 0 {
            // A zero-copy driver that found the fill ring empty waits to be woken
            // (copy mode never sets the flag); it may have set it after our last
            // look, and no frame will arrive to make us look again.
            if self.fill.need_wakeup() {
                self.wake_rx();
            }
            return (0, 0);
        }
        let (mut took, mut bad) = (0u32, 0u64);
        while took < ready {
            let (addr, len) = self.rx.read_desc(self.rx.ours);
            let good = match self.frame(addr, len) {
                Some(frame) => {
                    if !f(frame) {
                        break;
                    }
                    true
                }
                None => {
                    bad += 1;
                    false
                }
            };
            self.rx.ours = self.rx.ours.wrapping_add(1);
            // Its frame back to the fill ring (there is room: the ring holds every
            // frame of the receive half); an address outside the UMEM is not ours.
            if good {
                self.fill
                    .write_u64(self.fill.ours, addr & !(FRAME as u64 - 1));
                self.fill.ours = self.fill.ours.wrapping_add(1);
            }
            took += 1;
        }
        if took > 0 {
            self.rx.publish(false);
            self.fill.publish(true);
            // The flag is read after the producer index is visible (the driver sets
            // the flag, then looks at the index).
            fence(Ordering::SeqCst);
            if self.fill.need_wakeup() {
                self.wake_rx();
            }
        }
        (took as usize, bad)
    }

    fn wake_rx(&self) {
        // SAFETY: recvfrom(2) with no buffer: only wakes the driver.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Frames the kernel finished sending: their UMEM frames are free again.
    fn reclaim(&mut self) {
        let n = self.comp.ready();
        for _ in 0..n {
            let a = self.comp.read_u64(self.comp.ours) & !(FRAME as u64 - 1);
            self.comp.ours = self.comp.ours.wrapping_add(1);
            if a < self.umem.len() as u64 && self.free.len() < self.umem.len() / FRAME {
                self.free.push(a);
            }
        }
        if n > 0 {
            self.comp.publish(false);
        }
    }

    /// Queues one frame of `len` bytes for sending, written by `fill` into its UMEM
    /// frame; false (nothing queued) when the frame is too large or no frame or TX
    /// entry is free. `flush` sends what was queued.
    pub fn send(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        // (A zero-length descriptor is invalid: never completed, its frame would leak.)
        if len == 0 || len > FRAME {
            return false;
        }
        if self.free.is_empty() || self.tx.room() == 0 {
            self.reclaim();
        }
        if self.tx.room() == 0 {
            return false;
        }
        let Some(addr) = self.free.pop() else {
            return false;
        };
        // SAFETY: a free UMEM frame (not held by the kernel), FRAME bytes long.
        let buf =
            unsafe { std::slice::from_raw_parts_mut(self.umem.as_ptr().add(addr as usize), len) };
        fill(buf);
        self.tx.write_desc(self.tx.ours, addr, len as u32);
        self.tx.ours = self.tx.ours.wrapping_add(1);
        self.tx_queued = true;
        true
    }

    /// Publishes queued frames and has the kernel send them. A zero-copy driver is
    /// kicked once (it sends from its own context); in copy mode each `sendto` sends
    /// at most a batch (32) in the caller's context, so it is repeated while it makes
    /// progress.
    pub fn flush(&mut self) {
        if !self.tx_queued {
            return;
        }
        self.tx.publish(true);
        fence(Ordering::SeqCst);
        let pending = |x: &Xsk| x.tx.ours != x.tx.cons().load(Ordering::Acquire);
        for _ in 0..64 {
            if !self.tx.need_wakeup() {
                break;
            }
            let before = self.tx.cons().load(Ordering::Acquire);
            // SAFETY: sendto(2) with no data: only kicks the socket's TX ring.
            let r = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            let err = (r < 0).then(|| io::Error::last_os_error().raw_os_error());
            if err == Some(Some(libc::EBUSY)) {
                // Taken and completed, but the interface dropped it.
                self.tx_dropped += 1;
            }
            let progressed = self.tx.cons().load(Ordering::Acquire) != before;
            if self.zerocopy || !pending(self) || !progressed {
                break;
            }
            match err {
                None | Some(Some(libc::EAGAIN | libc::EBUSY | libc::EINTR)) => {}
                _ => break, // down or gone: what waits goes with a later flush
            }
        }
        self.tx_queued = pending(self);
        self.reclaim();
    }

    pub fn statistics(&self) -> Statistics {
        getsockopt(self.fd.as_fd(), XDP_STATISTICS).unwrap_or_default()
    }
}
