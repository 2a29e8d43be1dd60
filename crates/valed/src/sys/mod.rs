//! The few system calls rustix does not wrap: creating a TAP device and binding an
//! AF_PACKET socket to an interface. Each `unsafe` block passes plain-old-data structs
//! that live across the call.

use rustix::fd::{AsRawFd, OwnedFd};
use std::io;

pub mod bpf;
mod iov;
mod packet;
mod tun;
mod unix;
pub mod xdp;

pub use iov::{MAX_IOV, with_slices, write_frags};
pub use packet::{PACKET_VNET_HDR_LEN, PacketRing, RingFrame, packet_socket};
pub use tun::{TAP_VNET_HDR, tap_create};
pub use unix::{
    check_ifname, dgram_bind, if_index, readable_within, stream_connect, stream_listen,
};

/// setsockopt(2) of a plain value at `level` (AF_PACKET here, AF_XDP in `xsk`).
pub fn setsockopt_at<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` points to a `T` of the size passed, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
