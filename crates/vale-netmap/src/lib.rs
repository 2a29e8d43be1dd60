//! libvale_netmap: netmap's `/dev/netmap` in user space. Preloaded (or linked) into an
//! unmodified netmap program, it turns the device's open, ioctls, mmap and poll into
//! valed's ports, so the program joins a switch with no kernel module.
//!
//! `ffi` holds every entry point and all of the crate's `unsafe`; `dev` is one open of
//! the device (register, the per-descriptor `netmap_if`, netmap's sync rules); `pollemu`
//! is netmap's poll; `abi` the request structs with their exact layouts.

#![deny(unsafe_code)]

pub mod abi;
pub mod dev;
pub mod pollemu;

#[allow(unsafe_code)]
mod ffi;

/// Entry points for the fuzz targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::ffi::fuzz_requests;
}
