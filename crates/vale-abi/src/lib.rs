//! netmap-compatible port memory for the userspace VALE switch.
//!
//! - [`layout`]: `netmap_if`, `netmap_ring`, `netmap_slot` with netmap.h's exact layout.
//! - [`Region`]: a sealed memfd holding one port's `netmap_if`, rings and buffers.
//! - [`RingView`], [`BufPool`]: bounds-checked access to rings and buffers that another
//!   process writes concurrently (atomics and raw copies only, never references);
//!   [`Frag`], one packet fragment inside a buffer.
//! - [`sync`]: the app/switch sync protocol, over each ring's [`layout::SyncBlock`] in the
//!   region's sync area (`sem[128]` is left to the application).
//! - [`lease`]: VALE's lease, so that several forwarding threads fill one RX ring and
//!   the client sees the slots in reservation order.
//! - [`ring`]: ring index arithmetic and the application side of txsync/rxsync.
//!
//! Only `mem` (the mapping) and `ring` (the views over it) may use `unsafe`; the lint
//! below keeps it that way.
#![deny(unsafe_code)]

mod error;
pub mod layout;
pub mod lease;
#[allow(unsafe_code)]
mod mem;
pub mod region;
#[allow(unsafe_code)]
pub mod ring;
pub mod sync;

pub use error::{Error, Result};
pub use region::{Dir, PipeEnd, Populate, PortGeometry, Region, RegionLayout};
pub use ring::{
    AppRing, BufPool, Bufs, Frag, RingView, Slots, copy_frame, copy_frame_pop, copy_frame_push,
};
