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

/// Descriptor -> TX ring: up to a burst of frames (one per read, the way TAP devices
/// and datagram sockets deliver them), each copied into as many slots as it needs,
/// then published. Returns the frames read and how the loop ended. (An attached
/// interface's packet socket has its own reader, which puts back the VLAN tag.)
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
            Err(e) => PortCounters::lost(refused(c, Some(e)), 1),
        }
    }
    if sent > 0 {
        rx.rxsync();
    }
    sent
}

/// A direct delivery: the packet written to `dev` with one `writev` straight from the
/// sender's buffers (a converted header first, as one more fragment). Always taken:
/// a write the interface refuses is this port's loss, counted once, as `write_errors`
/// (once it was also the switch's `tx_error`, so one lost frame counted twice).
pub fn write_direct(dev: &OwnedFd, c: &PortCounters, pkt: &Direct<'_>) -> bool {
    match crate::sys::write_frags(dev.as_fd(), pkt.hdr, pkt.frags) {
        Ok(n) => c.count_out(n),
        Err(e) => PortCounters::lost(refused(c, rustix::io::Errno::from_io_error(&e)), 1),
    }
    true
}

/// The counter of a frame the interface refused with `e`: `too_big` for one longer than
/// its MTU allows (`EMSGSIZE`: an AF_PACKET socket takes MTU + 14 bytes, and 4 more for
/// an 802.1Q-tagged frame, so a full-size frame a trunk port tagged 802.1ad, or tagged
/// twice, is refused), else `write_errors`.
fn refused(c: &PortCounters, e: Option<rustix::io::Errno>) -> &std::sync::atomic::AtomicU64 {
    if e == Some(rustix::io::Errno::MSGSIZE) {
        &c.too_big
    } else {
        &c.write_errors
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

#[cfg(test)]
mod tests {
    use super::*;
    use vale_abi::{AppRing, Dir, PortGeometry, Region};

    /// A region's TX and RX ring 0, with the RX ring's first `k` slots made readable as
    /// the switch would (the test plays the switch).
    fn rings() -> (Region, PortRings) {
        let g = PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            ..Default::default()
        };
        let r = Region::create("fd-io-test", g).unwrap();
        let tx = AppRing::new(r.ring(Dir::Tx, 0).unwrap());
        let rx = AppRing::new(r.ring(Dir::Rx, 0).unwrap());
        (r, PortRings { tx, rx })
    }

    fn pair() -> (OwnedFd, OwnedFd) {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn frames_read_from_a_descriptor_land_in_the_tx_ring_whole_and_counted() {
        let (_r, rings) = rings();
        let (ours, peer) = pair();
        let big: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        for f in [&[0xa5u8; 60][..], &big[..]] {
            rustix::io::write(&peer, f).unwrap();
        }
        let c = PortCounters::default();
        let mut buf = vec![0u8; MAX_FRAME];
        let (got, end) = read_frames(&ours, &rings, &c, &mut buf);
        assert_eq!((got, end), (2, ReadEnd::Done));
        let s = c.snapshot();
        assert_eq!((s.from_host, s.from_host_bytes), (2, 5060));
        // One slot for the small frame, three (NS_MOREFRAG) for the large one.
        assert_eq!(rings.tx.head(), 4);
        // Nothing more to read: done, nothing counted.
        assert_eq!(read_frames(&ours, &rings, &c, &mut buf).0, 0);
    }

    #[test]
    fn packets_in_the_rx_ring_go_out_whole_and_the_slots_come_back() {
        let (_r, rings) = rings();
        let (ours, peer) = pair();
        // Play the switch: two packets in the RX ring, one of them in two slots.
        let v = rings.rx.view();
        let bs = v.bufs().buf_size() as usize;
        let frame: Vec<u8> = (0..bs + 100).map(|i| (i * 3) as u8).collect();
        let s0 = v.read_slot(0);
        v.bufs().write(s0.buf_idx, &frame[..bs]);
        v.write_len_flags(0, bs as u16, vale_abi::layout::NS_MOREFRAG);
        let s1 = v.read_slot(1);
        v.bufs().write(s1.buf_idx, &frame[bs..]);
        v.write_len_flags(1, 100, 0);
        let s2 = v.read_slot(2);
        v.bufs().write(s2.buf_idx, &[7u8; 60]);
        v.write_len_flags(2, 60, 0);
        v.csb().sw_publish_release(0, 3);
        let c = PortCounters::default();
        let mut buf = vec![0u8; MAX_FRAME];
        assert_eq!(write_frames(&ours, &rings, &c, &mut buf, None), 2);
        let mut got = vec![0u8; 8192];
        let n = rustix::io::read(&peer, &mut got).unwrap();
        assert_eq!(&got[..n], &frame[..]);
        let n = rustix::io::read(&peer, &mut got).unwrap();
        assert_eq!(&got[..n], &[7u8; 60]);
        assert_eq!(c.snapshot().to_host, 2);
        assert_eq!(rings.rx.head(), 3, "the slots are given back");
    }

    #[test]
    fn a_socket_without_an_error_says_so_and_a_fd_that_is_not_a_socket_is_gone() {
        let c = PortCounters::default();
        let (ours, peer) = pair();
        assert_eq!(read_fault(&ours, &c, "t"), Fault::None);
        drop(peer);
        // A datagram socket whose peer went reports no error; a descriptor that is not a
        // socket (a TAP's) cannot say, which means its interface is gone.
        let f = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        assert_eq!(read_fault(&f, &c, "t"), Fault::Gone);
        assert_eq!(c.snapshot().read_errors, 0);
    }
}
