//! AF_XDP sockets: the socket, its UMEM and its four rings, and receiving and sending
//! frames through them (which queues get one is `xsk`'s, the XDP program `bpf`'s).
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
use std::marker::PhantomData;
use std::mem::size_of;
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

/// What a ring holds: UMEM addresses (fill and completion rings) or descriptors (RX
/// and TX). Only plain integers, so whatever bytes the kernel leaves in an entry are a
/// valid value; implemented for `u64` and `libc::xdp_desc` alone.
trait Entry: Copy {}
impl Entry for u64 {}
impl Entry for libc::xdp_desc {}

/// The words of a ring besides its entries.
#[derive(Clone, Copy)]
enum Word {
    Producer,
    Consumer,
    Flags,
}

/// One of a socket's four rings, mapped: `size` entries of `T` at `desc`, and the
/// producer and consumer indices and the flags word at their offsets.
///
/// Invariants (checked in `new`): `size` is a power of two, so `i & (size - 1)` is an
/// entry; the entries and the three words lie inside `map`, the words 4-byte aligned.
struct Ring<T: Entry> {
    map: Mmap,
    producer: usize,
    consumer: usize,
    flags: usize,
    desc: usize,
    size: u32,
    /// Our side's index (the producer for fill and TX, the consumer for RX and
    /// completion), published with `publish`.
    ours: u32,
    _entry: PhantomData<T>,
}

impl<T: Entry> Ring<T> {
    /// Maps `fd`'s ring at `pgoff` of `size` entries (the size its ring-size
    /// setsockopt was given), laid out as the kernel's XDP_MMAP_OFFSETS say.
    fn map(fd: &OwnedFd, off: &XdpRingOffset, size: u32, pgoff: u64) -> io::Result<Ring<T>> {
        let len = (off.desc as usize)
            .checked_add(size as usize * size_of::<T>())
            .ok_or(Errno::INVAL)?;
        let map = Mmap::shared(fd.as_fd(), len, pgoff, true)?;
        let consumer = pgoff == XDP_PGOFF_RX_RING || pgoff == XDP_UMEM_PGOFF_COMPLETION_RING;
        Ring::new(map, off, size, consumer)
    }

    /// A ring over `map` (our side the `consumer` or the producer), once the layout
    /// the kernel gave is checked to fit it.
    fn new(map: Mmap, off: &XdpRingOffset, size: u32, consumer: bool) -> io::Result<Ring<T>> {
        // The kernel refuses any other size when the ring-size setsockopt succeeds; the
        // masking in `entry` stays in bounds for no other.
        if !size.is_power_of_two() {
            return Err(Errno::INVAL.into());
        }
        // Before Linux 5.4 rings have no flags word (nor need_wakeup, which we bind with).
        let flags = off.flags.ok_or(Errno::NOTSUP)?;
        let fits = |at: u64, n: usize| {
            (at as usize)
                .checked_add(n)
                .is_some_and(|end| end <= map.len())
        };
        let word = |at: u64| fits(at, 4) && at % 4 == 0;
        let entries = size as usize * size_of::<T>();
        if !(word(off.producer) && word(off.consumer) && word(flags) && fits(off.desc, entries)) {
            return Err(Errno::INVAL.into());
        }
        let mut r = Ring {
            map,
            producer: off.producer as usize,
            consumer: off.consumer as usize,
            flags: flags as usize,
            desc: off.desc as usize,
            size,
            ours: 0,
            _entry: PhantomData,
        };
        r.ours = if consumer { r.cons() } else { r.prod() }.load(Ordering::Relaxed);
        Ok(r)
    }

    /// One of the three words `new` checked.
    fn word(&self, w: Word) -> &AtomicU32 {
        let at = match w {
            Word::Producer => self.producer,
            Word::Consumer => self.consumer,
            Word::Flags => self.flags,
        };
        // SAFETY: `new` checked that `at..at + 4` lies inside the mapping and that `at`
        // is 4-aligned (the mapping is page-aligned); the word lives as long as
        // `self.map`, and both sides only ever access it atomically. That the word at
        // `at` is the index the kernel uses is the kernel's XDP_MMAP_OFFSETS, trusted:
        // were it wrong, only the ring protocol would break, and every address read
        // back is still checked against the UMEM.
        unsafe { &*self.map.as_ptr().add(at).cast::<AtomicU32>() }
    }

    fn prod(&self) -> &AtomicU32 {
        self.word(Word::Producer)
    }

    fn cons(&self) -> &AtomicU32 {
        self.word(Word::Consumer)
    }

    fn need_wakeup(&self) -> bool {
        XdpRingFlags::from_bits_retain(self.word(Word::Flags).load(Ordering::Relaxed))
            .contains(XdpRingFlags::XDP_RING_NEED_WAKEUP)
    }

    /// Entry `i` (a free-running index) of the array.
    fn entry(&self, i: u32) -> *mut T {
        let at = self.desc + (i & (self.size - 1)) as usize * size_of::<T>();
        self.map.as_ptr().wrapping_add(at).cast()
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

    /// Reads entry `i` (one the kernel produced: below the producer index `ready`
    /// loaded with Acquire).
    fn read(&self, i: u32) -> T {
        // SAFETY: `i & (size - 1)` < size (a power of two, checked in `new`), so the
        // entry lies inside `desc..desc + size * size_of::<T>()`, which `new` checked is
        // inside the mapping. It is read by an unaligned raw copy, never through a
        // reference, since the kernel writes neighbouring entries meanwhile; any bytes
        // are a valid `T` (`Entry`).
        unsafe { self.entry(i).read_unaligned() }
    }

    /// Writes entry `i` (one we may fill: `room` said so, or the ring protocol does).
    fn write(&self, i: u32, v: T) {
        // SAFETY: in bounds as in `read`; written by an unaligned raw copy, no
        // reference made. The kernel reads it only once `publish` moves the producer
        // index past it.
        unsafe { self.entry(i).write_unaligned(v) }
    }
}

/// One AF_XDP socket, bound to one receive queue of an interface.
pub struct Xsk {
    // Rings before the socket and the UMEM: unmapped first.
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
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

/// Why [`Xsk::new`] failed.
#[derive(Debug)]
pub enum NewError {
    /// Registering the UMEM: the kernel pins it, within RLIMIT_MEMLOCK unless the
    /// process has CAP_IPC_LOCK.
    Umem(io::Error),
    /// Any other step: the socket, its rings, binding it to the queue.
    Other(io::Error),
}

impl From<io::Error> for NewError {
    fn from(e: io::Error) -> NewError {
        NewError::Other(e)
    }
}

impl From<Errno> for NewError {
    fn from(e: Errno) -> NewError {
        NewError::Other(e.into())
    }
}

impl Xsk {
    /// A socket bound to queue `queue` of interface `ifindex`, with a UMEM of `frames`
    /// frames (half in the fill ring, half for sending; four rings of `frames / 2`).
    pub fn new(ifindex: u32, queue: u32, frames: usize) -> Result<Xsk, NewError> {
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
        unsafe { register_umem(&fd, &umem) }.map_err(NewError::Umem)?;
        sockopt::set_xdp_umem_fill_ring_size(&fd, ring)?;
        sockopt::set_xdp_umem_completion_ring_size(&fd, ring)?;
        sockopt::set_xdp_rx_ring_size(&fd, ring)?;
        sockopt::set_xdp_tx_ring_size(&fd, ring)?;
        let off = sockopt::xdp_mmap_offsets(&fd)?;
        let rx = Ring::map(&fd, &off.rx, ring, XDP_PGOFF_RX_RING)?;
        let tx = Ring::map(&fd, &off.tx, ring, XDP_PGOFF_TX_RING)?;
        let fill = Ring::map(&fd, &off.fr, ring, XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(&fd, &off.cr, ring, XDP_UMEM_PGOFF_COMPLETION_RING)?;
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
            x.fill.write(x.fill.ours, (f * FRAME) as u64);
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
    ///
    /// # Safety
    ///
    /// The kernel must not write those bytes while the slice lives: they must be a frame
    /// the RX ring handed over, not yet given back through the fill ring.
    unsafe fn frame(&self, addr: u64, len: u32) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        if end > self.umem.len() as u64 {
            return None;
        }
        // SAFETY: `addr..end` lies inside the UMEM mapping (checked above), which lives
        // as long as `self`; nobody writes it while the slice lives (the caller's
        // promise), so a shared slice over it is sound.
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
            let libc::xdp_desc { addr, len, .. } = self.rx.read(self.rx.ours);
            // SAFETY: the descriptor at `rx.ours` is one the kernel produced (`ready`), so
            // its frame is ours, trusting the kernel's ring protocol, until it goes back
            // to the fill ring below, after `f` returned and the slice is gone.
            let good = match unsafe { self.frame(addr, len) } {
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
                self.fill.write(self.fill.ours, addr & !(FRAME as u64 - 1));
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
            let a = self.comp.read(self.comp.ours) & !(FRAME as u64 - 1);
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
        // SAFETY: `free` holds only FRAME-aligned offsets below the UMEM's length (`new`,
        // and `reclaim`'s check), which is a multiple of FRAME, and `len` <= FRAME
        // (checked above): the bytes lie inside the mapping. A free frame is in neither
        // the fill nor the TX ring, so the kernel does not touch it until the descriptor
        // written below is published, after `fill` returned and `buf` is gone.
        let buf =
            unsafe { std::slice::from_raw_parts_mut(self.umem.as_ptr().add(addr as usize), len) };
        fill(buf);
        let desc = libc::xdp_desc {
            addr,
            len: len as u32,
            options: 0,
        };
        self.tx.write(self.tx.ours, desc);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    const LAYOUT: XdpRingOffset = XdpRingOffset {
        producer: 0,
        consumer: 64,
        desc: 256,
        flags: Some(128),
    };

    fn ring<T: Entry>(off: &XdpRingOffset, size: u32, consumer: bool) -> io::Result<Ring<T>> {
        Ring::new(Mmap::anonymous(4096, false)?, off, size, consumer)
    }

    // The numbers of linux/if_xdp.h.
    #[test]
    fn descriptors_match_linux_if_xdp_h() {
        assert_eq!(size_of::<libc::xdp_desc>(), 16);
        assert_eq!(offset_of!(libc::xdp_desc, addr), 0);
        assert_eq!(offset_of!(libc::xdp_desc, len), 8);
        assert_eq!(offset_of!(libc::xdp_desc, options), 12);
    }

    #[test]
    fn a_layout_that_does_not_fit_the_mapping_is_refused() {
        // (4096 - 256) / 8 = 480 addresses or 240 descriptors fit after `desc`.
        assert!(ring::<u64>(&LAYOUT, 256, false).is_ok());
        assert!(ring::<libc::xdp_desc>(&LAYOUT, 128, false).is_ok());
        assert!(
            ring::<u64>(&LAYOUT, 6, false).is_err(),
            "not a power of two"
        );
        assert!(ring::<u64>(&LAYOUT, 0, false).is_err(), "empty");
        assert!(
            ring::<u64>(&LAYOUT, 512, false).is_err(),
            "entries past the end"
        );
        assert!(
            ring::<libc::xdp_desc>(&LAYOUT, 256, false).is_err(),
            "entries past the end"
        );
        for bad in [
            XdpRingOffset {
                producer: 2,
                ..LAYOUT
            },
            XdpRingOffset {
                consumer: 4094,
                ..LAYOUT
            },
            XdpRingOffset {
                flags: Some(4096),
                ..LAYOUT
            },
            XdpRingOffset {
                flags: None,
                ..LAYOUT
            },
            XdpRingOffset {
                desc: u64::MAX - 8,
                ..LAYOUT
            },
        ] {
            assert!(ring::<u64>(&bad, 8, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_producer_fills_what_the_consumer_gave_back_and_wraps() {
        let mut r = ring::<u64>(&LAYOUT, 4, false).unwrap();
        // Start near the wrap of the free-running indices, as a long-lived ring is.
        r.prod().store(u32::MAX - 1, Ordering::Relaxed);
        r.cons().store(u32::MAX - 1, Ordering::Relaxed);
        r.ours = u32::MAX - 1;
        assert_eq!(r.room(), 4);
        for v in 10..14 {
            r.write(r.ours, v);
            r.ours = r.ours.wrapping_add(1);
        }
        assert_eq!(r.room(), 0);
        r.publish(true);
        assert_eq!(r.prod().load(Ordering::Relaxed), 2);
        // The entries went to slots (MAX - 1) & 3 = 2, 3, 0, 1.
        assert_eq!(
            [r.read(0), r.read(1), r.read(2), r.read(3)],
            [12, 13, 10, 11]
        );
        // The kernel takes two.
        r.cons().store(0, Ordering::Relaxed);
        assert_eq!(r.room(), 2);
    }

    #[test]
    fn a_consumer_sees_what_the_kernel_produced_at_most_a_ring() {
        let mut r = ring::<libc::xdp_desc>(&LAYOUT, 8, true).unwrap();
        assert_eq!(r.ready(), 0);
        let d = libc::xdp_desc {
            addr: 0x3000,
            len: 60,
            options: 0,
        };
        r.write(0, d);
        r.prod().store(1, Ordering::Release);
        assert_eq!(r.ready(), 1);
        let got = r.read(r.ours);
        assert_eq!((got.addr, got.len), (0x3000, 60));
        r.ours += 1;
        r.publish(false);
        assert_eq!(r.cons().load(Ordering::Relaxed), 1);
        // A producer index past a whole ring claims no more than a ring.
        r.prod().store(100, Ordering::Release);
        assert_eq!(r.ready(), 8);
        assert!(!r.need_wakeup());
        r.word(Word::Flags).store(1, Ordering::Relaxed);
        assert!(r.need_wakeup());
    }
}
