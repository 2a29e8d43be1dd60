//! AF_XDP sockets: the socket, its UMEM and its four rings, and receiving and sending
//! frames through them (which queues to serve, and the XDP program, are `xsk`'s).
//!
//! Kernel ABI: linux/if_xdp.h. The kernel owns the rings' other index and the frames it
//! holds; everything read back from it (descriptor addresses and lengths) is checked
//! against the UMEM before use.

use super::Mmap;
use rustix::io::Errno;
use rustix::net::xdp::{
    SocketAddrXdp, SocketAddrXdpFlags, XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING,
    XDP_UMEM_PGOFF_COMPLETION_RING, XDP_UMEM_PGOFF_FILL_RING, XdpOptionsFlags, XdpRingFlags,
    XdpRingOffset, XdpUmemReg, XdpUmemRegFlags,
};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, sockopt};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering, fence};

/// UMEM frame size.
pub const FRAME: usize = 4096;

/// The kernel's drop counters for one socket that [`Statistics::lost`] adds up (of
/// `struct xdp_statistics`; the last two are 0 before Linux 5.9).
#[derive(Default, Clone, Copy, Debug)]
pub struct Statistics {
    pub rx_dropped: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
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

/// Registers `umem` as `fd`'s frames, in `FRAME`-sized chunks.
///
/// # Safety
///
/// `umem` must stay mapped until `fd` is closed, and be reached meanwhile only through
/// raw pointers, except for frames the rings have handed over: the kernel pins its
/// pages here and writes received frames into them whenever it holds them. (rustix's
/// `set_xdp_umem_reg` is a safe function; this is where its precondition lives.)
unsafe fn register_umem(fd: &OwnedFd, umem: &Mmap) -> io::Result<()> {
    let reg = XdpUmemReg {
        addr: umem.as_ptr() as u64,
        len: umem.len() as u64,
        chunk_size: FRAME as u32,
        headroom: 0,
        flags: XdpUmemRegFlags::empty(),
        tx_metadata_len: 0,
    };
    Ok(sockopt::set_xdp_umem_reg(fd, reg)?)
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
        off: &XdpRingOffset,
        size: u32,
        elem: usize,
        pgoff: u64,
    ) -> io::Result<Ring> {
        // Before Linux 5.4 rings have no flags word (nor need_wakeup, which we bind with).
        let flags = off.flags.ok_or(Errno::NOTSUP)?;
        let len = off.desc as usize + size as usize * elem;
        let mut r = Ring {
            map: Mmap::shared(fd.as_fd(), len, pgoff, true)?,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: flags as usize,
            desc: off.desc as usize,
            size,
            elem,
            ours: 0,
        };
        r.ours = if pgoff == XDP_PGOFF_RX_RING || pgoff == XDP_UMEM_PGOFF_COMPLETION_RING {
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
        XdpRingFlags::from_bits_retain(self.word(self.flags).load(Ordering::Relaxed))
            .contains(XdpRingFlags::XDP_RING_NEED_WAKEUP)
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
        // Mapped before the socket exists, so that it is unmapped after the socket is
        // closed on every path (locals drop in reverse), as `register_umem` requires.
        let umem = Mmap::anonymous(frames * FRAME, true)?;
        let fd = rustix::net::socket_with(
            AddressFamily::XDP,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )?;
        // SAFETY: `umem` outlives `fd` here (declared first) and in `Xsk` (fields drop
        // in order, `umem` last); only `frame` and `send` reach into it, each at a frame
        // the rings hand over.
        unsafe { register_umem(&fd, &umem) }.map_err(|e| {
            // The kernel pins the UMEM, within RLIMIT_MEMLOCK unless CAP_IPC_LOCK.
            io::Error::new(
                e.kind(),
                format!(
                    "registering {} MiB of frames: {e} (locked memory: valed needs \
                         CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)",
                    umem.len() >> 20
                ),
            )
        })?;
        sockopt::set_xdp_umem_fill_ring_size(&fd, ring)?;
        sockopt::set_xdp_umem_completion_ring_size(&fd, ring)?;
        sockopt::set_xdp_rx_ring_size(&fd, ring)?;
        sockopt::set_xdp_tx_ring_size(&fd, ring)?;
        let off = sockopt::xdp_mmap_offsets(&fd)?;
        let rx = Ring::map(&fd, &off.rx, ring, 16, XDP_PGOFF_RX_RING)?;
        let tx = Ring::map(&fd, &off.tx, ring, 16, XDP_PGOFF_TX_RING)?;
        let fill = Ring::map(&fd, &off.fr, ring, 8, XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(&fd, &off.cr, ring, 8, XDP_UMEM_PGOFF_COMPLETION_RING)?;
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
        let sa = SocketAddrXdp::new(SocketAddrXdpFlags::XDP_USE_NEED_WAKEUP, ifindex, queue);
        rustix::net::bind(&x.fd, &sa)?;
        x.zerocopy = sockopt::xdp_options(&x.fd)
            .is_ok_and(|o| o.contains(XdpOptionsFlags::XDP_OPTIONS_ZEROCOPY));
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
        // A read of nothing: it only wakes the driver.
        let _ = rustix::net::recv(&self.fd, &mut [0u8; 0], RecvFlags::DONTWAIT);
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
            // A send of nothing: it only kicks the socket's TX ring.
            let err = rustix::net::send(&self.fd, &[], SendFlags::DONTWAIT).err();
            if err == Some(Errno::BUSY) {
                // Taken and completed, but the interface dropped it.
                self.tx_dropped += 1;
            }
            let progressed = self.tx.cons().load(Ordering::Acquire) != before;
            if self.zerocopy || !pending(self) || !progressed {
                break;
            }
            match err {
                None | Some(Errno::AGAIN | Errno::BUSY | Errno::INTR) => {}
                _ => break, // down or gone: what waits goes with a later flush
            }
        }
        self.tx_queued = pending(self);
        self.reclaim();
    }

    pub fn statistics(&self) -> Statistics {
        // Before Linux 5.9 (no `rx_ring_full`) rustix 1.1.6 fills `tx_invalid_descs`
        // with `rx_dropped`: counting it would count those drops twice.
        sockopt::xdp_statistics(&self.fd)
            .map(|s| Statistics {
                rx_dropped: s.rx_dropped,
                tx_invalid_descs: s.rx_ring_full.map_or(0, |_| s.tx_invalid_descs),
                rx_ring_full: s.rx_ring_full.unwrap_or(0),
            })
            .unwrap_or_default()
    }
}
