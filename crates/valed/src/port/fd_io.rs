//! The loops every descriptor-backed port shares: frames read from a descriptor into the
//! TX ring, packets from the RX ring written to it, a direct delivery written with one
//! `writev`, and what an error condition on the descriptor means.

use super::rings::{ring_copy, ring_peek, ring_put, room};
use super::{BURST, Direct, MAX_FRAME, PortCounters, PortRings};
use rustix::fd::{AsFd, OwnedFd};

/// How a read loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// Nothing more to read, no room, or a burst done.
    Done,
    /// The descriptor no longer refers to an interface (a deleted TAP's reads fail with
    /// `EBADFD`).
    Gone,
}

/// Makes sure the TX ring's `tail` is fresh when it looks full: the switch may have
/// emptied it since the last sync (a pass that found no room and did not sync would
/// wait forever). Returns the room one largest frame needs.
pub fn fresh_tx(rings: &PortRings) -> u32 {
    let need = room(&rings.tx, MAX_FRAME);
    if rings.tx.space() < need {
        rings.tx.txsync();
    }
    need
}

/// Descriptor -> TX ring: up to a burst of frames (one per read, the way TAP devices,
/// packet and datagram sockets deliver them), each copied into as many slots as it
/// needs, then published. Returns the frames read and how the loop ended.
pub fn read_frames(
    dev: &OwnedFd,
    rings: &PortRings,
    c: &PortCounters,
    buf: &mut [u8],
) -> (usize, ReadEnd) {
    let need = fresh_tx(rings);
    let mut got = 0;
    let mut end = ReadEnd::Done;
    while got < BURST && rings.tx.space() >= need {
        match rustix::io::read(dev, &mut *buf) {
            Ok(0) => break,
            Ok(len) if len >= MAX_FRAME => {
                PortCounters::lost(&c.truncated, 1);
                got += 1; // a flood of these must not hold the pass
            }
            Ok(len) => {
                ring_put(&rings.tx, &buf[..len]);
                c.count_in(len);
                got += 1;
            }
            Err(rustix::io::Errno::AGAIN) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::BADFD) => {
                end = ReadEnd::Gone;
                break;
            }
            Err(_) => {
                // An interface that went down: count and try again on a later pass.
                PortCounters::lost(&c.read_errors, 1);
                break;
            }
        }
    }
    if got > 0 {
        rings.tx.txsync();
    }
    (got, end)
}

/// RX ring -> descriptor: every packet the switch delivered (up to a burst), each
/// written whole (to `peer` for an unconnected datagram socket), then the slots given
/// back. Returns the frames written.
pub fn write_frames(
    dev: &OwnedFd,
    rings: &PortRings,
    c: &PortCounters,
    buf: &mut [u8],
    peer: Option<&rustix::net::SocketAddrUnix>,
) -> usize {
    let rx = &rings.rx;
    rx.rxsync();
    let mut sent = 0;
    while sent < BURST && rx.space() > 0 {
        let (used, len) = ring_peek(rx);
        let whole = len <= buf.len();
        if whole {
            ring_copy(rx, used, &mut buf[..len]);
        }
        rx.advance(used);
        sent += 1;
        if !whole {
            // Larger than any frame the interface takes: counted, not cut short.
            PortCounters::lost(&c.truncated, 1);
            continue;
        }
        let r = match peer {
            Some(a) => rustix::net::sendto(dev, &buf[..len], rustix::net::SendFlags::empty(), a),
            None => rustix::io::write(dev, &buf[..len]),
        };
        match r {
            Ok(_) => c.count_out(len),
            Err(_) => PortCounters::lost(&c.write_errors, 1),
        }
    }
    if sent > 0 {
        rx.rxsync();
    }
    sent
}

/// A direct delivery: the packet written to `dev` with one `writev` straight from the
/// sender's buffers (a converted header first, as one more fragment).
pub fn write_direct(dev: &OwnedFd, c: &PortCounters, pkt: &Direct<'_>) -> bool {
    match crate::sys::write_frags(dev.as_fd(), pkt.hdr, pkt.frags) {
        Ok(n) => {
            c.count_out(n);
            true
        }
        Err(_) => {
            PortCounters::lost(&c.write_errors, 1);
            false
        }
    }
}

/// What an error condition on a port's socket was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing pending (any more).
    None,
    /// A pending socket error (`ENETDOWN` when an attached interface goes down or away),
    /// read, which clears it, and counted.
    Cleared,
    /// Not a socket that can report errors: a TAP whose interface was deleted.
    Gone,
}

/// epoll reported ERR or HUP on `dev` (level-triggered: left alone, it would wake the
/// forwarding thread at once, forever): reads the socket's pending error.
pub fn read_fault(dev: &OwnedFd, c: &PortCounters, name: &str) -> Fault {
    match rustix::net::sockopt::socket_error(dev) {
        Ok(Ok(())) => Fault::None,
        Ok(Err(e)) => {
            PortCounters::lost(&c.read_errors, 1);
            tracing::warn!(interface = %name, "host port: {e}");
            Fault::Cleared
        }
        Err(_) => Fault::Gone,
    }
}
