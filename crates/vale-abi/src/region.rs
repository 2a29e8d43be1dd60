//! A port region: one sealed memfd holding a `netmap_if`, its rings and its buffers, laid
//! out the way netmap lays out a private allocator, so that `NETMAP_TXRING`,
//! `NETMAP_RXRING` and `NETMAP_BUF` computed from the `netmap_if` at offset 0 find them.
//!
//! Layout (all offsets from the start of the region, which is also the `netmap_if`):
//! ```text
//!   0            netmap_if (56 bytes) + ring_ofs[(tx+1) + (rx+1)] (8 bytes each)
//!   128-aligned  tx rings 0..tx, then rx rings 0..rx: 256-byte header + 16*slots each
//!   128-aligned  sync area: a 128-byte SyncBlock per ring, tx 0..tx then rx 0..rx
//!   page-aligned buffers 0..nbufs of buf_size bytes (0 and 1 reserved)
//! ```
//! The sync area is ours, not netmap's: a netmap program finds everything it knows
//! through `netmap_if` and never looks there, and the switch never looks at `sem[]`
//! ([`crate::layout::LAYOUT_VERSION`] 2). With netmap's default geometry it fits in the
//! padding before the page-aligned buffers, so the region is no larger than before.
//! `ring_ofs[]` keeps netmap's placeholder for the host ring of each direction (offset 0,
//! "not bound"), so `NETMAP_RXRING(nifp, i)` indexes `ring_ofs[i + tx + 1]` as it does for
//! a netmap VALE port. Every slot starts out owning its own buffer, so
//! `nbufs = 2 + tx*tx_slots + rx*rx_slots` and the region holds nothing it does not need.

use crate::layout::*;
use crate::mem::Mapping;
use crate::ring::{BufPool, RingView};
use crate::{Error, Result};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Largest ring count per direction the layout accepts (netmap's `NETMAP_RING_MASK`).
pub const ABI_MAX_RINGS: u16 = 0x0fff;
/// Largest ring the layout accepts, in slots.
pub const ABI_MAX_SLOTS: u32 = 1 << 20;
/// Smallest usable ring (one slot is always kept empty).
pub const ABI_MIN_SLOTS: u32 = 2;
/// Buffer sizes are multiples of this (netmap's `NM_BUF_ALIGN`), so copies may round up.
pub const BUF_ALIGN: u32 = 64;
/// Largest buffer: `len` in a slot is 16 bits.
pub const ABI_MAX_BUF_SIZE: u32 = 65536 - BUF_ALIGN;
const PAGE: usize = 4096;
const RING_ALIGN: usize = 128;
/// Sync blocks are 128-aligned: two whole cache lines, and the adjacent-line prefetcher's
/// pair, so no block shares a line with a ring or another block.
const SYNC_ALIGN: usize = 128;

/// The shape of a port: ring counts, ring sizes, buffer size, and the spare buffers
/// reserved beside the rings' own (netmap's extra buffers, `nr_extra_bufs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortGeometry {
    pub tx_rings: u16,
    pub rx_rings: u16,
    pub tx_slots: u32,
    pub rx_slots: u32,
    pub buf_size: u32,
    /// Buffers after the rings' own, owned by no slot at creation: handed to the
    /// clients that ask for extra buffers (see [`RegionLayout::extra_bufs`]).
    pub extra_bufs: u32,
    /// netmap pipes (`valeX:p{N` / `valeX:p}N`) the region has room for: each a master
    /// and a slave endpoint of one TX and one RX ring, in this port's memory so that
    /// buffers move between the port's rings and the pipe's by index.
    pub pipes: u16,
}

/// One endpoint of a netmap pipe: its number and side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipeEnd {
    pub pipe: u16,
    /// The `}N` side (the `{N` side is the master).
    pub slave: bool,
}

impl PipeEnd {
    /// The other end of the same pipe.
    pub fn peer(self) -> PipeEnd {
        PipeEnd {
            slave: !self.slave,
            ..self
        }
    }
}

impl Default for PortGeometry {
    /// netmap's defaults for a VALE port: one ring each way, 1024 slots, 2048-byte buffers.
    fn default() -> Self {
        PortGeometry {
            tx_rings: 1,
            rx_rings: 1,
            tx_slots: 1024,
            rx_slots: 1024,
            buf_size: 2048,
            extra_bufs: 0,
            pipes: 0,
        }
    }
}

impl PortGeometry {
    /// Checks the limits the layout itself imposes (daemon settings are checked elsewhere).
    pub fn validate(&self) -> Result<()> {
        for (what, n) in [("tx_rings", self.tx_rings), ("rx_rings", self.rx_rings)] {
            if n == 0 || n > ABI_MAX_RINGS {
                return Err(Error::Geometry(format!(
                    "{what} is {n}; it must be between 1 and {ABI_MAX_RINGS}"
                )));
            }
        }
        for (what, n) in [("tx_slots", self.tx_slots), ("rx_slots", self.rx_slots)] {
            if !(ABI_MIN_SLOTS..=ABI_MAX_SLOTS).contains(&n) {
                return Err(Error::Geometry(format!(
                    "{what} is {n}; it must be between {ABI_MIN_SLOTS} and {ABI_MAX_SLOTS}"
                )));
            }
        }
        if self.buf_size < BUF_ALIGN
            || self.buf_size > ABI_MAX_BUF_SIZE
            || self.buf_size % BUF_ALIGN != 0
        {
            return Err(Error::Geometry(format!(
                "buf_size is {}; it must be a multiple of {BUF_ALIGN} between {BUF_ALIGN} and {ABI_MAX_BUF_SIZE}",
                self.buf_size
            )));
        }
        Ok(())
    }
}

/// Where everything lives in a region of a given geometry. Computed from the geometry
/// alone: the switch never reads offsets back from shared memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionLayout {
    pub geometry: PortGeometry,
    /// Byte offset of each ring: tx rings first, then rx rings, then for each pipe its
    /// master's TX and RX ring and its slave's TX and RX ring.
    pub ring_offsets: Vec<usize>,
    /// Byte offset of the sync area: one [`SyncBlock`] per ring, in the order of
    /// `ring_offsets`, right after the last ring.
    pub sync_offset: usize,
    /// Byte offset of buffer 0.
    pub buf_offset: usize,
    /// Number of buffers including the two reserved ones.
    pub nbufs: u32,
    /// Total bytes (a multiple of the page size).
    pub size: usize,
}

fn align_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

/// Bytes of one ring with `slots` slots, padded so the next header stays 128-aligned.
pub fn ring_bytes(slots: u32) -> usize {
    align_up(
        NETMAP_RING_SIZE + NETMAP_SLOT_SIZE * slots as usize,
        RING_ALIGN,
    )
}

impl RegionLayout {
    pub fn new(geometry: PortGeometry) -> Result<RegionLayout> {
        geometry.validate()?;
        let g = geometry;
        let nifp_bytes = NETMAP_IF_SIZE + 8 * (g.tx_rings as usize + 1 + g.rx_rings as usize + 1);
        let mut off = align_up(nifp_bytes, RING_ALIGN);
        let mut ring_offsets = Vec::with_capacity(g.tx_rings as usize + g.rx_rings as usize);
        for _ in 0..g.tx_rings {
            ring_offsets.push(off);
            off += ring_bytes(g.tx_slots);
        }
        for _ in 0..g.rx_rings {
            ring_offsets.push(off);
            off += ring_bytes(g.rx_slots);
        }
        for _ in 0..2 * g.pipes as usize {
            ring_offsets.push(off);
            off += ring_bytes(g.tx_slots);
            ring_offsets.push(off);
            off += ring_bytes(g.rx_slots);
        }
        let sync_offset = align_up(off, SYNC_ALIGN);
        off = sync_offset + SYNC_BLOCK_SIZE * ring_offsets.len();
        let buf_offset = align_up(off, PAGE);
        let nbufs = RESERVED_BUFS as u64
            + g.tx_rings as u64 * g.tx_slots as u64
            + g.rx_rings as u64 * g.rx_slots as u64
            + 2 * g.pipes as u64 * (g.tx_slots as u64 + g.rx_slots as u64)
            + g.extra_bufs as u64;
        let nbufs = u32::try_from(nbufs)
            .map_err(|_| Error::Geometry(format!("{nbufs} buffers do not fit a u32 index")))?;
        let size = align_up(buf_offset + nbufs as usize * g.buf_size as usize, PAGE);
        Ok(RegionLayout {
            geometry,
            ring_offsets,
            sync_offset,
            buf_offset,
            nbufs,
            size,
        })
    }

    /// Index of TX ring `i` or RX ring `i` in `ring_offsets` (and in the sync area).
    fn ring_index(&self, dir: Dir, i: u16) -> Option<usize> {
        let g = &self.geometry;
        match dir {
            Dir::Tx if i < g.tx_rings => Some(i as usize),
            Dir::Rx if i < g.rx_rings => Some(g.tx_rings as usize + i as usize),
            _ => None,
        }
    }

    /// Offset of TX ring `i` or RX ring `i`.
    pub fn ring_offset(&self, dir: Dir, i: u16) -> Option<usize> {
        self.ring_index(dir, i).map(|k| self.ring_offsets[k])
    }

    /// Offset of the [`SyncBlock`] of TX ring `i` or RX ring `i` (add
    /// [`sync_off`]`::*` for a word in it).
    pub fn sync_block_offset(&self, dir: Dir, i: u16) -> Option<usize> {
        self.ring_index(dir, i)
            .map(|k| self.sync_offset + k * SYNC_BLOCK_SIZE)
    }

    /// The spare buffers: indices `first..first + count`, after every ring's own.
    pub fn extra_bufs(&self) -> (u32, u32) {
        let e = self.geometry.extra_bufs;
        (self.nbufs - e, e)
    }

    /// Index in `ring_offsets` (and the sync area) of a pipe endpoint's ring.
    fn pipe_ring_index(&self, end: PipeEnd, dir: Dir) -> Option<usize> {
        let g = &self.geometry;
        if end.pipe >= g.pipes {
            return None;
        }
        let base = g.tx_rings as usize + g.rx_rings as usize;
        let k = 4 * end.pipe as usize + 2 * end.slave as usize + (dir == Dir::Rx) as usize;
        Some(base + k)
    }

    /// Offset of a pipe endpoint's TX or RX ring.
    pub fn pipe_ring_offset(&self, end: PipeEnd, dir: Dir) -> Option<usize> {
        self.pipe_ring_index(end, dir).map(|k| self.ring_offsets[k])
    }

    /// Offset of the [`SyncBlock`] of a pipe endpoint's ring.
    pub fn pipe_sync_block_offset(&self, end: PipeEnd, dir: Dir) -> Option<usize> {
        self.pipe_ring_index(end, dir)
            .map(|k| self.sync_offset + k * SYNC_BLOCK_SIZE)
    }

    /// Slots of a ring of direction `dir` (pipe rings have the port's).
    fn slots(&self, dir: Dir) -> u32 {
        match dir {
            Dir::Tx => self.geometry.tx_slots,
            Dir::Rx => self.geometry.rx_slots,
        }
    }

    /// First buffer index owned by slot 0 of ring `k` of `ring_offsets` at creation.
    fn first_buf_k(&self, k: usize) -> u32 {
        let g = &self.geometry;
        let (t, r) = (g.tx_rings as usize, g.rx_rings as usize);
        let (ts, rs) = (g.tx_slots as usize, g.rx_slots as usize);
        let before = if k < t {
            k * ts
        } else if k < t + r {
            t * ts + (k - t) * rs
        } else {
            let p = k - t - r; // pipe rings alternate TX, RX
            t * ts + r * rs + p.div_ceil(2) * ts + (p / 2) * rs
        };
        RESERVED_BUFS + before as u32
    }

    /// The buffers of the pipe rings, `(first, count)`: left out of the creator's
    /// pre-faulting, so a port pays for its pipes' memory only once they carry traffic.
    pub fn pipe_bufs(&self) -> (u32, u32) {
        let g = &self.geometry;
        let first = self.first_buf_k(g.tx_rings as usize + g.rx_rings as usize);
        (first, 2 * g.pipes as u32 * (g.tx_slots + g.rx_slots))
    }

    /// Ring `k` of `ring_offsets`: its direction and its id in the ring header (a pipe
    /// end's rings are ring 0 of that end).
    fn ring_kind(&self, k: usize) -> (Dir, u16) {
        let g = &self.geometry;
        let (t, r) = (g.tx_rings as usize, g.rx_rings as usize);
        if k < t {
            (Dir::Tx, k as u16)
        } else if k < t + r {
            (Dir::Rx, (k - t) as u16)
        } else if (k - t - r) % 2 == 0 {
            (Dir::Tx, 0)
        } else {
            (Dir::Rx, 0)
        }
    }
}

/// Direction of a ring, seen from the client (netmap's convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The client sends: the switch reads.
    Tx,
    /// The client receives: the switch writes.
    Rx,
}

/// A mapped port region.
pub struct Region {
    map: Arc<Mapping>,
    fd: OwnedFd,
    layout: Arc<RegionLayout>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("layout", &self.layout)
            .finish()
    }
}

/// The buffers of a region from [`Region::create_lazy`], to be faulted in. Faulting in
/// writes nothing, so it may run while the region carries frames; it stops early once
/// the region is gone.
pub struct Populate {
    map: Arc<Mapping>,
    ranges: Vec<(usize, usize)>,
}

impl Populate {
    /// Bytes left to fault in.
    pub fn bytes(&self) -> usize {
        self.ranges.iter().map(|r| r.1).sum()
    }

    pub fn run(self) {
        const STEP: usize = 16 << 20;
        for (at, len) in self.ranges {
            let mut done = 0;
            while done < len {
                if Arc::strong_count(&self.map) == 1 {
                    return; // every Region of it dropped: nobody will use these pages
                }
                let n = STEP.min(len - done);
                self.map.populate(at + done, n);
                done += n;
            }
        }
    }
}

impl Region {
    /// Creates, seals, maps and initialises a region for port `name` (the creator's side:
    /// the switch). The memfd can then be handed to the client.
    pub fn create(name: &str, geometry: PortGeometry) -> Result<Region> {
        let (region, rest) = Region::create_lazy(name, geometry)?;
        rest.run();
        Ok(region)
    }

    /// [`Region::create`] with the buffers not yet faulted in: what is returned beside
    /// the region does that, on any thread, while the region is already in use (a
    /// region of gigabytes takes seconds, which a switch's control thread should not
    /// spend with other clients waiting).
    pub fn create_lazy(name: &str, geometry: PortGeometry) -> Result<(Region, Populate)> {
        let layout = RegionLayout::new(geometry)?;
        let fd = crate::mem::sealed_memfd(name, layout.size)?;
        let map = Arc::new(Mapping::new(fd.as_fd(), layout.size, false)?);
        // The rings now; the buffers (not on the data path) but the pipes' later.
        let (pf, pn) = layout.pipe_bufs();
        let bs = geometry.buf_size as usize;
        let hole = (layout.buf_offset + pf as usize * bs, pn as usize * bs);
        map.populate(0, layout.buf_offset);
        let rest = Populate {
            map: map.clone(),
            ranges: vec![
                (layout.buf_offset, hole.0 - layout.buf_offset),
                (hole.0 + hole.1, layout.size - (hole.0 + hole.1)),
            ],
        };
        let region = Region {
            map,
            fd,
            layout: Arc::new(layout),
        };
        region.init(name);
        Ok((region, rest))
    }

    /// Maps a region received from the switch (the client's side). The file must be
    /// exactly the size the geometry calls for.
    pub fn from_fd(fd: OwnedFd, geometry: PortGeometry) -> Result<Region> {
        let layout = RegionLayout::new(geometry)?;
        let actual = crate::mem::file_size(fd.as_fd())?;
        if actual != layout.size as u64 {
            return Err(Error::SizeMismatch {
                expected: layout.size as u64,
                actual,
            });
        }
        let map = Mapping::new(fd.as_fd(), layout.size, false)?;
        Ok(Region {
            map: Arc::new(map),
            fd,
            layout: Arc::new(layout),
        })
    }

    fn init(&self, name: &str) {
        let g = self.layout.geometry;
        let mut ni_name = [0u8; 16];
        let n = name.len().min(15);
        ni_name[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.map.write_bytes(0, &ni_name);
        let words: [(usize, u32); 7] = [
            (16, 0),                 // ni_version
            (20, 0x1),               // ni_flags: NI_PRIV_MEM, each port has its own region
            (24, g.tx_rings as u32), // ni_tx_rings
            (28, g.rx_rings as u32), // ni_rx_rings
            (32, 0),                 // ni_bufs_head: no extra buffers
            (36, 1),                 // ni_host_tx_rings: netmap's placeholder
            (40, 1),                 // ni_host_rx_rings
        ];
        for (off, v) in words {
            self.map.write_u32(off, v);
        }
        // ring_ofs[]: tx rings, host tx placeholder (0), rx rings, host rx placeholder (0).
        let mut ofs: Vec<i64> = Vec::new();
        for i in 0..g.tx_rings {
            ofs.push(self.layout.ring_offset(Dir::Tx, i).unwrap_or(0) as i64);
        }
        ofs.push(0);
        for i in 0..g.rx_rings {
            ofs.push(self.layout.ring_offset(Dir::Rx, i).unwrap_or(0) as i64);
        }
        ofs.push(0);
        for (k, v) in ofs.iter().enumerate() {
            self.map
                .write_bytes(off::IF_RING_OFS + 8 * k, &v.to_ne_bytes());
        }
        // Every ring, the port's and its pipes': header, positions, and each slot owning
        // its own buffer.
        for (k, &r) in self.layout.ring_offsets.iter().enumerate() {
            let (dir, id) = self.layout.ring_kind(k);
            let slots = self.layout.slots(dir);
            let buf_ofs = self.layout.buf_offset as i64 - r as i64;
            self.map.write_bytes(r, &buf_ofs.to_ne_bytes());
            self.map.write_u32(r + 8, slots);
            self.map.write_u32(r + 12, g.buf_size);
            let dirword = if dir == Dir::Tx { NR_TX } else { NR_RX };
            self.map
                .write_u32(r + 16, id as u32 | (dirword as u32) << 16);
            // head = cur = 0; tail = slots-1 (TX: all free) or 0 (RX: empty).
            let tail = if dir == Dir::Tx { slots - 1 } else { 0 };
            self.map.write_u32(r + off::RING_TAIL, tail);
            let sb = self.layout.sync_offset + k * SYNC_BLOCK_SIZE;
            self.map.write_u32(sb + sync_off::KTOA_HWTAIL, tail);
            let first = self.layout.first_buf_k(k);
            for s in 0..slots {
                let so = r + NETMAP_RING_SIZE + s as usize * NETMAP_SLOT_SIZE;
                self.map.write_u32(so, first + s);
            }
        }
    }

    pub fn layout(&self) -> &RegionLayout {
        &self.layout
    }

    pub fn geometry(&self) -> PortGeometry {
        self.layout.geometry
    }

    /// The memfd, to pass to a client.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub fn size(&self) -> usize {
        self.layout.size
    }

    /// The region's buffers.
    pub fn bufs(&self) -> BufPool {
        BufPool::new(
            self.map.clone(),
            self.layout.buf_offset,
            self.layout.nbufs,
            self.layout.geometry.buf_size,
        )
    }

    /// A view of TX ring `i` or RX ring `i`.
    pub fn ring(&self, dir: Dir, i: u16) -> Option<RingView> {
        let off = self.layout.ring_offset(dir, i)?;
        let sync = self.layout.sync_block_offset(dir, i)?;
        let slots = match dir {
            Dir::Tx => self.layout.geometry.tx_slots,
            Dir::Rx => self.layout.geometry.rx_slots,
        };
        Some(RingView::new(
            self.map.clone(),
            off,
            sync,
            slots,
            self.bufs(),
        ))
    }

    /// A view of a pipe endpoint's TX or RX ring.
    pub fn pipe_ring(&self, end: PipeEnd, dir: Dir) -> Option<RingView> {
        let off = self.layout.pipe_ring_offset(end, dir)?;
        let sync = self.layout.pipe_sync_block_offset(end, dir)?;
        Some(RingView::new(
            self.map.clone(),
            off,
            sync,
            self.layout.slots(dir),
            self.bufs(),
        ))
    }

    /// Reads raw bytes of the region (tests, inspection).
    pub fn read_raw(&self, offset: usize, out: &mut [u8]) -> bool {
        self.map.read_bytes(offset, out)
    }

    /// Writes raw bytes anywhere in the region, as a client could. Tests use it to play
    /// a hostile client.
    pub fn write_raw(&self, offset: usize, data: &[u8]) -> bool {
        self.map.write_bytes(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_rings_and_their_buffers_have_places_of_their_own() {
        let g = PortGeometry {
            tx_rings: 2,
            rx_rings: 1,
            tx_slots: 64,
            rx_slots: 32,
            extra_bufs: 10,
            pipes: 3,
            ..Default::default()
        };
        let r = Region::create("vale0:p", g).unwrap();
        let l = r.layout();
        assert_eq!(l.ring_offsets.len(), 3 + 3 * 4);
        // Every buffer index appears in exactly one slot or the extra reserve.
        let mut seen = vec![0u8; l.nbufs as usize];
        let mut mark = |v: &RingView| {
            for s in 0..v.num_slots() {
                seen[v.read_slot(s).buf_idx as usize] += 1;
            }
        };
        for i in 0..2 {
            mark(&r.ring(Dir::Tx, i).unwrap());
        }
        mark(&r.ring(Dir::Rx, 0).unwrap());
        for pipe in 0..3 {
            for slave in [false, true] {
                let end = PipeEnd { pipe, slave };
                let tx = r.pipe_ring(end, Dir::Tx).unwrap();
                let rx = r.pipe_ring(end, Dir::Rx).unwrap();
                assert_eq!((tx.num_slots(), rx.num_slots()), (64, 32));
                assert_eq!((tx.tail(), rx.tail()), (63, 0), "TX all free, RX empty");
                mark(&tx);
                mark(&rx);
            }
        }
        assert!(
            r.pipe_ring(
                PipeEnd {
                    pipe: 3,
                    slave: false
                },
                Dir::Tx
            )
            .is_none()
        );
        let (ef, en) = l.extra_bufs();
        for i in ef..ef + en {
            seen[i as usize] += 1;
        }
        assert_eq!(&seen[..2], &[0, 0], "buffers 0 and 1 are reserved");
        assert!(seen[2..].iter().all(|&n| n == 1), "{seen:?}");
        // Rings and sync blocks do not overlap, and all lie before the buffers.
        let mut spans: Vec<(usize, usize)> = l
            .ring_offsets
            .iter()
            .enumerate()
            .map(|(k, &o)| {
                let slots = if k < 2 {
                    64
                } else if k < 3 {
                    32
                } else if (k - 3) % 2 == 0 {
                    64
                } else {
                    32
                };
                (o, o + ring_bytes(slots))
            })
            .collect();
        spans.push((
            l.sync_offset,
            l.sync_offset + SYNC_BLOCK_SIZE * l.ring_offsets.len(),
        ));
        spans.sort();
        assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "{spans:?}");
        assert!(spans.last().unwrap().1 <= l.buf_offset);
        let (pf, pn) = l.pipe_bufs();
        assert_eq!(pn, 2 * 3 * (64 + 32));
        assert_eq!(pf, 2 + 2 * 64 + 32);
    }

    /// What a C client computes with netmap_user.h, from the raw bytes alone.
    struct CView<'a>(&'a Region);
    impl CView<'_> {
        fn u32_at(&self, off: usize) -> u32 {
            let mut b = [0u8; 4];
            assert!(self.0.read_raw(off, &mut b));
            u32::from_ne_bytes(b)
        }
        fn i64_at(&self, off: usize) -> i64 {
            let mut b = [0u8; 8];
            assert!(self.0.read_raw(off, &mut b));
            i64::from_ne_bytes(b)
        }
        /// NETMAP_TXRING(nifp, i)
        fn txring(&self, i: usize) -> usize {
            self.i64_at(56 + 8 * i) as usize
        }
        /// NETMAP_RXRING(nifp, i)
        fn rxring(&self, i: usize) -> usize {
            let tx = self.u32_at(24) as usize;
            let host_tx = self.u32_at(36) as usize;
            self.i64_at(56 + 8 * (i + tx + host_tx)) as usize
        }
        /// NETMAP_BUF(ring, idx)
        fn buf(&self, ring: usize, idx: u32) -> usize {
            let buf_ofs = self.i64_at(ring);
            let bufsz = self.u32_at(ring + 12) as i64;
            (ring as i64 + buf_ofs + idx as i64 * bufsz) as usize
        }
    }

    #[test]
    fn default_port_is_sized_exactly() {
        let l = RegionLayout::new(PortGeometry::default()).unwrap();
        assert_eq!(l.nbufs, 2 + 1024 + 1024);
        // if (56 + 4*8 = 88 -> 128) + 2 rings of 16640 -> page aligned buffers.
        assert_eq!(l.ring_offsets, vec![128, 128 + 16640]);
        // The two sync blocks right after the rings, inside the padding to the buffers.
        assert_eq!(l.sync_offset, 128 + 2 * 16640);
        assert_eq!(l.sync_block_offset(Dir::Tx, 0), Some(33408));
        assert_eq!(l.sync_block_offset(Dir::Rx, 0), Some(33408 + 128));
        assert_eq!(l.sync_block_offset(Dir::Rx, 1), None);
        assert_eq!(l.buf_offset, 36864);
        assert_eq!(l.size, 36864 + 2050 * 2048);
        assert!(
            l.size < 5 << 20,
            "netmap's default VALE port takes ~40 MiB; ours ~4 MiB"
        );
    }

    #[test]
    fn netmap_user_macros_find_rings_and_buffers() {
        let g = PortGeometry {
            tx_rings: 3,
            rx_rings: 2,
            tx_slots: 100, // not a power of two, as netmap allows
            rx_slots: 64,
            buf_size: 2048,
            extra_bufs: 0,
            pipes: 0,
        };
        let r = Region::create("vale0:macro", g).unwrap();
        let c = CView(&r);
        let name = {
            let mut b = [0u8; 16];
            r.read_raw(0, &mut b);
            b
        };
        assert_eq!(&name[..12], b"vale0:macro\0");
        assert_eq!(c.u32_at(24), 3);
        assert_eq!(c.u32_at(28), 2);
        assert_eq!(
            c.u32_at(36),
            1,
            "one placeholder host tx ring, as netmap reports"
        );
        assert_eq!(c.u32_at(40), 1);
        assert_eq!(c.txring(3), 0, "host tx ring placeholder is not bound");
        assert_eq!(c.i64_at(56 + 8 * (3 + 1 + 2)), 0, "host rx placeholder");
        for i in 0..3u16 {
            let ro = c.txring(i as usize);
            assert_eq!(Some(ro), r.layout().ring_offset(Dir::Tx, i));
            assert_eq!(ro % 128, 0);
            assert_eq!(c.u32_at(ro + 8), 100, "num_slots");
            assert_eq!(c.u32_at(ro + 12), 2048, "nr_buf_size");
            assert_eq!(c.u32_at(ro + 16) & 0xffff, i as u32, "ringid");
            assert_eq!(c.u32_at(ro + 16) >> 16, NR_TX as u32, "dir");
            assert_eq!(c.u32_at(ro + 28), 99, "tx tail = num_slots - 1");
        }
        for i in 0..2u16 {
            let ro = c.rxring(i as usize);
            assert_eq!(Some(ro), r.layout().ring_offset(Dir::Rx, i));
            assert_eq!(c.u32_at(ro + 16) >> 16, NR_RX as u32);
            assert_eq!(c.u32_at(ro + 28), 0, "rx tail = 0");
        }
        // Every slot owns a distinct buffer, none of them reserved, and NETMAP_BUF of a
        // slot's buf_idx is where BufPool writes.
        let mut seen = std::collections::HashSet::new();
        for (dir, n, slots) in [(Dir::Tx, 3, 100), (Dir::Rx, 2, 64)] {
            for i in 0..n {
                let v = r.ring(dir, i).unwrap();
                let ro = r.layout().ring_offset(dir, i).unwrap();
                for s in 0..slots {
                    let slot = v.read_slot(s);
                    assert!(slot.buf_idx >= 2 && slot.buf_idx < r.layout().nbufs);
                    assert!(seen.insert(slot.buf_idx));
                    let tag = [s as u8, i as u8, 0xa5, 0x5a];
                    assert!(v.bufs().write(slot.buf_idx, &tag));
                    let mut got = [0u8; 4];
                    r.read_raw(c.buf(ro, slot.buf_idx), &mut got);
                    assert_eq!(got, tag);
                }
            }
        }
        assert_eq!(seen.len() as u32, r.layout().nbufs - 2);
    }

    #[test]
    fn sync_blocks_lie_between_the_rings_and_the_buffers() {
        let geometries = [
            PortGeometry::default(),
            PortGeometry {
                tx_rings: 3,
                rx_rings: 2,
                tx_slots: 100,
                rx_slots: 64,
                buf_size: 2048,
                extra_bufs: 0,
                pipes: 0,
            },
            // Many small rings: the sync area (73 blocks) pushes the buffers a page on.
            PortGeometry {
                tx_rings: 40,
                rx_rings: 33,
                tx_slots: 2,
                rx_slots: 3,
                buf_size: 64,
                extra_bufs: 0,
                pipes: 0,
            },
        ];
        for g in geometries {
            let l = RegionLayout::new(g).unwrap();
            let mut spans = Vec::new(); // (start, end, what)
            let rings = [
                (Dir::Tx, g.tx_rings, g.tx_slots),
                (Dir::Rx, g.rx_rings, g.rx_slots),
            ];
            for (dir, n, slots) in rings {
                for i in 0..n {
                    let r = l.ring_offset(dir, i).unwrap();
                    spans.push((r, r + NETMAP_RING_SIZE + NETMAP_SLOT_SIZE * slots as usize));
                    let s = l.sync_block_offset(dir, i).unwrap();
                    assert_eq!(s % 128, 0, "{g:?}: sync block {dir:?} {i} is 128-aligned");
                    assert!(s > r, "{g:?}: sync blocks come after the rings");
                    spans.push((s, s + SYNC_BLOCK_SIZE));
                }
                assert_eq!(l.sync_block_offset(dir, n), None);
            }
            let bufs = (
                l.buf_offset,
                l.buf_offset + l.nbufs as usize * g.buf_size as usize,
            );
            spans.push(bufs);
            spans.push((0, NETMAP_IF_SIZE + 8 * (l.ring_offsets.len() + 2)));
            spans.sort();
            for w in spans.windows(2) {
                assert!(w[0].1 <= w[1].0, "{g:?}: {:?} overlaps {:?}", w[0], w[1]);
            }
            let last_block = l.sync_offset + SYNC_BLOCK_SIZE * l.ring_offsets.len();
            assert!(last_block <= l.buf_offset, "{g:?}");
            assert!(bufs.1 <= l.size, "{g:?}: the region holds the buffers");
            assert_eq!(l.size % 4096, 0);
            // A region of this layout really has them (the memfd is l.size bytes).
            let r = Region::create("vale0:sync", g).unwrap();
            assert_eq!(r.size(), l.size);
            assert!(r.ring(Dir::Rx, g.rx_rings - 1).is_some());
        }
    }

    #[test]
    fn sync_words_are_in_the_sync_block_and_sem_is_left_alone() {
        let g = PortGeometry {
            tx_rings: 2,
            rx_rings: 2,
            tx_slots: 64,
            rx_slots: 32,
            buf_size: 2048,
            extra_bufs: 0,
            pipes: 0,
        };
        let r = Region::create("vale0:sem", g).unwrap();
        let c = CView(&r);
        for (dir, n, tail) in [(Dir::Tx, 2, 63), (Dir::Rx, 2, 0)] {
            for i in 0..n {
                let ro = r.layout().ring_offset(dir, i).unwrap();
                let so = r.layout().sync_block_offset(dir, i).unwrap();
                let mut sem = [0xa5u8; 128];
                assert!(r.read_raw(ro + off::RING_SEM, &mut sem));
                assert_eq!(sem, [0u8; 128], "the switch writes nothing into sem[]");
                assert_eq!(c.u32_at(so + sync_off::KTOA_HWTAIL), tail);
                // The words RingView's Csb uses are exactly these bytes.
                let v = r.ring(dir, i).unwrap();
                v.csb().app_publish_release(7, 9);
                v.csb().sw_publish_release(3, 5);
                assert_eq!(c.u32_at(so + sync_off::ATOK_HEAD), 7);
                assert_eq!(c.u32_at(so + sync_off::ATOK_CUR), 9);
                assert_eq!(c.u32_at(so + sync_off::KTOA_HWCUR), 3);
                assert_eq!(c.u32_at(so + sync_off::KTOA_HWTAIL), 5);
                v.csb().app_arm_kick();
                v.csb().sw_arm_kick();
                assert_eq!(c.u32_at(so + sync_off::ATOK_NEED_KICK), 1);
                assert_eq!(c.u32_at(so + sync_off::KTOA_NEED_KICK), 1);
                // And sem[] is still the application's: garbage there changes none of them.
                assert!(r.write_raw(ro + off::RING_SEM, &[0xffu8; 128]));
                assert_eq!(v.csb().sw_read_acquire(), (7, 9));
                assert_eq!(v.csb().app_read_acquire(), (3, 5));
                assert!(v.csb().sw_kick_needed() && v.csb().app_kick_needed());
            }
        }
    }

    #[test]
    fn geometry_limits_give_clear_errors() {
        let bad = [
            PortGeometry {
                tx_rings: 0,
                ..Default::default()
            },
            PortGeometry {
                rx_slots: 1,
                ..Default::default()
            },
            PortGeometry {
                buf_size: 100,
                ..Default::default()
            },
            PortGeometry {
                buf_size: 65536,
                ..Default::default()
            },
        ];
        for g in bad {
            let e = RegionLayout::new(g).unwrap_err().to_string();
            assert!(e.contains("must be"), "{e}");
        }
        let jumbo = PortGeometry {
            buf_size: 9216,
            ..Default::default()
        };
        assert!(RegionLayout::new(jumbo).is_ok());
    }

    #[test]
    fn client_maps_the_same_memory_and_cannot_shrink_it() {
        let g = PortGeometry::default();
        let r = Region::create("vale0:share", g).unwrap();
        let fd = r.fd().try_clone_to_owned().unwrap();
        assert!(rustix::fs::ftruncate(&fd, 4096).is_err(), "size is sealed");
        let client = Region::from_fd(fd, g).unwrap();
        let tx = client.ring(Dir::Tx, 0).unwrap();
        let idx = tx.read_slot(5).buf_idx;
        assert!(tx.bufs().write(idx, b"hello"));
        let mut out = [0u8; 5];
        assert!(r.bufs().read(idx, &mut out));
        assert_eq!(&out, b"hello");
        let other = PortGeometry { tx_slots: 512, ..g };
        let fd2 = r.fd().try_clone_to_owned().unwrap();
        assert!(matches!(
            Region::from_fd(fd2, other),
            Err(Error::SizeMismatch { .. })
        ));
    }

    #[test]
    fn accessors_reject_out_of_range_indices() {
        let r = Region::create("vale0:oob", PortGeometry::default()).unwrap();
        let b = r.bufs();
        assert!(!b.is_valid(0) && !b.is_valid(1) && !b.is_valid(b.nbufs()));
        assert!(b.header(u32::MAX).is_none());
        assert!(!b.write(2, &vec![0u8; 2049]));
        assert!(r.ring(Dir::Tx, 1).is_none());
        assert!(!r.write_raw(r.size() - 2, &[0; 4]));
        let v = r.ring(Dir::Rx, 0).unwrap();
        let _ = v.read_slot(u32::MAX); // clamps, never reads outside the ring
    }
}
