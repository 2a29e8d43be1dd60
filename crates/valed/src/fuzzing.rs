//! Entry points for the fuzz targets in `fuzz/`: the daemon's own decoders of what
//! clients and vhost-user frontends send, reachable without a running daemon. Not an
//! API: each takes raw fuzz bytes and panics only on a broken invariant.

use crate::control::dispatch::split_pipe;
use crate::port::vhost_user::VNET_HDR;
use crate::port::vhost_user::datapath::{Chain, Put, Rx, Scratch, avail_beyond, pull_chain};
use crate::port::vhost_user::relay::{Frontend, Verdict, read_msg};
use crate::port::vhost_user::split::Split;
use crate::sys::guest::GuestMap;
use rustix::fd::OwnedFd;
use vale::proto::Request;
use vale_switch::PortName;
use vale_switch::name::DEFAULT_MAX_NAME_LEN;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The port names a decoded control request carries, through the parsers the daemon
/// runs on them: the netmap pipe split (`valeX:p{ID`), then the name rules.
pub fn request_names(req: &Request) {
    let names: Vec<&str> = match req {
        Request::Open { name, .. }
        | Request::HostCreate { name, .. }
        | Request::HostRemove { name } => {
            vec![name]
        }
        Request::Stats { port, .. } => port.iter().map(String::as_str).collect(),
        Request::Attach { port, .. }
        | Request::Detach { port }
        | Request::Create { port, .. }
        | Request::QemuDgram { port, .. }
        | Request::QemuStream { port, .. }
        | Request::VhostUser { port, .. } => vec![port],
        _ => Vec::new(),
    };
    for n in names {
        let base = match split_pipe(n) {
            Ok(Some((parent, id, _))) => {
                assert!(!id.is_empty() && parent.len() < n.len());
                parent
            }
            Ok(None) => n,
            Err(_) => continue,
        };
        let base = base.split('/').next().unwrap_or(base);
        if let Ok(p) = PortName::parse(base, DEFAULT_MAX_NAME_LEN) {
            let again = PortName::parse(&p.to_string(), DEFAULT_MAX_NAME_LEN)
                .expect("a parsed name parses again");
            assert_eq!(p.to_string(), again.to_string());
        }
    }
}

/// Guest memory of the vhost-user target: the TX queue's descriptor table, avail and
/// used rings, the RX queue's, then buffers; the fuzz bytes fill it from address 0.
const GUEST_MEM: usize = 0x10000;
const TX_RING: u64 = 0;
const RX_RING: u64 = 0x300;
const CONTROL: usize = 4;

/// A split virtqueue of `size` entries at `base` (table, then avail at +0x100, used at
/// +0x180: room for 16 entries).
fn queue(size: u16, base: u64) -> Option<Queue> {
    let mut q = Queue::new(16).ok()?;
    q.set_size(size);
    let lo = |a: u64| Some(a as u32);
    q.set_desc_table_address(lo(base), Some(0));
    q.set_avail_ring_address(lo(base + 0x100), Some(0));
    q.set_used_ring_address(lo(base + 0x180), Some(0));
    q.set_ready(true);
    Some(q)
}

/// vhost-user descriptor chains as the forwarding thread walks them (`split`): the
/// guest's TX queue read chain by chain into a port's TX ring (`pull_chain`, as
/// `VhostIo::pull`), the RX queue filled with frames (`Rx::put_frame`, as `deliver`),
/// over guest memory in two adjacent regions whose every byte the fuzzer wrote:
/// descriptor addresses, lengths, flags, `next` links (loops), ring indices.
pub fn vhost_chains(data: &[u8]) {
    use std::num::Wrapping;
    if data.len() < CONTROL {
        return;
    }
    let (ctl, bytes) = data.split_at(CONTROL);
    let size = 1u16 << (ctl[0] % 5);
    let mergeable = ctl[1] & 1 != 0;
    let half = (GUEST_MEM / 2) as u64;
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), GUEST_MEM / 2),
        (GuestAddress(half), GUEST_MEM / 2),
    ]) else {
        return;
    };
    let n = bytes.len().min(GUEST_MEM);
    mem.write_slice(&bytes[..n], GuestAddress(0))
        .expect("inside guest memory");
    let (Some(tx), Some(mut rx)) = (queue(size, TX_RING), queue(size, RX_RING)) else {
        return;
    };
    let m = GuestMap::new(std::sync::Arc::new(mem.clone()));
    let (Some(ts), Some(rs)) = (Split::of(&m, &tx), Split::of(&m, &rx)) else {
        panic!("the rings lie inside guest memory");
    };
    let g = vale_abi::PortGeometry {
        tx_slots: 256,
        rx_slots: 256,
        buf_size: 2048,
        ..Default::default()
    };
    let Ok(region) = vale_abi::Region::create("vale-fuzz-vhost", g) else {
        return;
    };
    let Some(r) = region.ring(vale_abi::Dir::Tx, 0) else {
        return;
    };
    let ring = vale_abi::AppRing::new(r);
    let mut segs = Vec::new();
    let avail = ts.avail_idx_acquire(&m).expect("inside the ring");
    let mut next = Wrapping(tx.next_avail());
    // Room for the largest frame (33 slots of 2048 bytes) before each chain.
    while next.0 != avail && (Wrapping(avail) - next).0 <= size && ring.space() >= 40 {
        let head = ts.avail_head(&m, next.0).expect("inside the ring");
        next += 1;
        let before = ring.head();
        match pull_chain(&m, &ts, head, &mut segs, &ring) {
            Chain::Frame(n) => {
                assert!((VNET_HDR + 14..=65535 + 14 + VNET_HDR).contains(&n));
                assert_eq!(segs.iter().map(|s| s.len()).sum::<usize>(), n);
                let slots = ring.head().wrapping_sub(before) % ring.num_slots();
                assert_eq!(slots as usize, n.div_ceil(2048), "{n} bytes");
            }
            Chain::TooBig | Chain::Bad => assert_eq!(ring.head(), before, "nothing put"),
        }
    }
    let _ = avail_beyond(&tx, &mem);
    // Frames of the sizes the control bytes ask, until the guest has no room.
    let mut sc = Scratch::default();
    let mut rxq = Rx {
        m: &m,
        split: rs,
        q: &mut rx,
        sc: &mut sc,
    };
    for len in [ctl[2] as usize * 8, ctl[3] as usize * 64, 1514] {
        let mut f = vec![0x5a; VNET_HDR + len];
        let (before, taken) = (rxq.q.next_used(), rxq.q.next_avail());
        let r = rxq.put_frame(&mut f, mergeable);
        let used = rxq.q.next_used().wrapping_sub(before);
        let popped = rxq.q.next_avail().wrapping_sub(taken);
        assert!(used <= popped, "{used} used of {popped} taken");
        match r {
            Put::Done => assert!(used >= 1 && (mergeable || used == 1), "{used} used"),
            Put::NoRoom => {
                assert_eq!((used, popped), (0, 0), "no room: nothing taken");
                break;
            }
            Put::Bad => {}
        }
    }
}

/// A guest memory file as a frontend passes it with `SET_MEM_TABLE`: `kind` picks its
/// size (in pages) and whether it can be sealed.
fn mem_file(kind: u8) -> Option<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let flags = if kind & 0x80 != 0 {
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING
    } else {
        MemfdFlags::CLOEXEC
    };
    let fd = rustix::fs::memfd_create("vale-fuzz-guest", flags).ok()?;
    rustix::fs::ftruncate(&fd, u64::from(kind & 0x0f) * 4096).ok()?;
    if kind & 0x40 != 0 {
        let _ = rustix::fs::fcntl_add_seals(&fd, SealFlags::SEAL);
    }
    Some(fd)
}

/// vhost-user messages from a frontend, as the relay reads and judges them: the fuzz
/// bytes are the stream (12-byte headers with their sizes, payloads), read back with
/// `read_msg`; the first byte says how many guest memory files (0..=8) come with each
/// message and (its top bit) whether unsealable memory is trusted, the next eight what
/// the files are. A message is refused, answered or passed on;
/// a passed `SET_MEM_TABLE` names only memory inside its files, now sealed against
/// shrinking where they can be.
pub fn vhost_messages(data: &[u8]) {
    use std::io::Write;
    if data.len() < 9 {
        return;
    }
    let (ctl, stream) = data.split_at(9);
    let Ok((mut w, r)) = std::os::unix::net::UnixStream::pair() else {
        return;
    };
    // The whole stream is queued before reading (a fuzz input is at most a few KiB, well
    // under a socket's buffer), then the writer hangs up.
    if w.write_all(stream).is_err() {
        return;
    }
    drop(w);
    let nfds = (ctl[0] % 9) as usize;
    let mut state = Frontend::new(ctl[0] & 0x80 != 0);
    for _ in 0..64 {
        let Ok(Some((msg, _))) = read_msg(&r) else {
            break;
        };
        assert!(msg.len() >= 12 && msg.len() <= 12 + 64 * 1024);
        let fds: Vec<OwnedFd> = ctl[1..=nfds].iter().filter_map(|k| mem_file(*k)).collect();
        match state.inspect(&msg, &fds, "fuzz") {
            Verdict::Refuse { reply, .. } => {
                assert!(reply.is_none_or(|m| m.len() == 20));
                break;
            }
            Verdict::Answer(reply) => {
                if let Some(m) = reply {
                    assert_eq!(m.len(), 20);
                }
            }
            Verdict::Pass { then } => {
                assert!(then.as_ref().is_none_or(|m| m.len() == 20));
                if msg[..4] == 5u32.to_le_bytes() {
                    mem_table_fits(&msg, &fds);
                }
            }
        }
    }
}

/// A `SET_MEM_TABLE` the relay let through: every region inside its file.
fn mem_table_fits(msg: &[u8], fds: &[OwnedFd]) {
    let body = &msg[12..];
    for (i, fd) in fds.iter().enumerate() {
        let r = &body[8 + 32 * i..8 + 32 * (i + 1)];
        let u = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().expect("8 bytes"));
        let size = rustix::fs::fstat(fd).expect("fstat").st_size as u64;
        assert!(
            u(8) > 0 && u(24) + u(8) <= size,
            "region {i} outside its file"
        );
    }
}

/// memif's control messages and the server's handshake: `data` is a run of 129-byte
/// steps, each a byte saying whether a descriptor came with the message and what the
/// server knows of the id it names, then the 128-byte message. Every message decodes
/// to what it encodes to; whatever the handshake accepts at CONNECT is a setup whose
/// rings lie inside their regions.
pub fn memif_handshake(data: &[u8]) {
    use crate::port::memif::handshake::{Handshake, Known, Offer, Step};
    use vale_wire::memif::{FixedStr, MSG_LEN, Msg, RingLayout};
    const OFFER: Offer = Offer {
        regions: 4,
        rings: 2,
        max_log2: 12,
    };
    let mut hs: Handshake<u32> = Handshake::new(OFFER);
    for (n, step) in data.chunks(MSG_LEN + 1).enumerate() {
        let (ctl, bytes) = step.split_first().unwrap_or((&0, &[]));
        let Ok(m) = Msg::decode(bytes) else {
            assert!(
                bytes.len() != MSG_LEN
                    || !(1..=8).contains(&u16::from_le_bytes([bytes[0], bytes[1]]))
            );
            return;
        };
        assert_eq!(Msg::decode(&m.encode()).as_ref(), Ok(&m), "round trip");
        let fd = (ctl & 1 != 0).then_some(n as u32);
        let known = |_| match ctl >> 1 & 3 {
            0 => Known::Unknown,
            1 => Known::Busy,
            2 => Known::Free {
                secret: FixedStr::new(b""),
            },
            _ => Known::Free {
                secret: FixedStr::new(b"sesame"),
            },
        };
        match hs.on_message(m, fd, known) {
            Ok(Step::Reply(_)) => {}
            Ok(Step::Connected(_, s)) => {
                assert!(!s.c2s.is_empty() && !s.s2c.is_empty());
                assert!(s.regions.len() <= usize::from(OFFER.regions));
                assert!(s.c2s.len() <= usize::from(OFFER.rings));
                assert!(s.s2c.len() <= usize::from(OFFER.rings));
                for r in s.c2s.iter().chain(&s.s2c) {
                    let region = &s.regions[usize::from(r.region)];
                    let end = u64::from(r.offset) + RingLayout::X86.ring_bytes(r.log2_size);
                    assert!(end <= region.size && r.offset % 4 == 0);
                    assert!(r.log2_size <= OFFER.max_log2);
                }
                return;
            }
            Ok(Step::PeerDisconnected(_)) | Err(_) => return,
        }
    }
}

/// memif rings in a client region whose every byte the fuzzer wrote: valed reads a C2S
/// ring and fills an S2C ring there as the client keeps moving the heads. Frames read
/// are never longer than the largest frame, and nothing read or written panics or
/// leaves the region.
pub fn memif_rings(data: &[u8]) {
    use crate::port::memif::ring::{C2s, Placement, Refused, S2c};
    use crate::sys::peer::PeerMem;
    use rustix::fd::AsFd;
    use vale_wire::memif::{COOKIE, RingLayout};
    const LEN: usize = 1 << 16;
    const MAX_FRAME: usize = 9216;
    if data.len() < 8 {
        return;
    }
    let (cfg, body) = data.split_at(8);
    let log2 = cfg[0] % 8;
    let layout = RingLayout::X86;
    let c2s_at = usize::from(u16::from_le_bytes([cfg[1], cfg[2]])) & !3;
    let s2c_at = usize::from(u16::from_le_bytes([cfg[3], cfg[4]])) & !3;
    let Ok(fd) = rustix::fs::memfd_create("fuzz-memif", rustix::fs::MemfdFlags::CLOEXEC) else {
        return;
    };
    if rustix::fs::ftruncate(&fd, LEN as u64).is_err() {
        return;
    }
    let Ok(client) = PeerMem::map(fd.as_fd(), LEN as u64) else {
        return;
    };
    let Ok(mem) = PeerMem::map(fd.as_fd(), LEN as u64) else {
        return;
    };
    let regions = [mem];
    // The region as the fuzzer wrote it, with the cookies where the rings are.
    client.write(0, &body[..body.len().min(LEN)]);
    client.write(c2s_at, &COOKIE.to_le_bytes());
    client.write(s2c_at, &COOKIE.to_le_bytes());
    let at = |offset| Placement {
        region: 0,
        offset,
        log2_size: log2,
    };
    let mut c2s = C2s::new(at(c2s_at), layout);
    let mut s2c = S2c::new(at(s2c_at), layout);
    if c2s.connect(&regions).is_err() || s2c.connect(&regions).is_err() {
        return;
    }
    let mut refused = Refused::default();
    let mut frame = Vec::new();
    // The client's moves: new heads for both rings, from the config bytes.
    for round in 0..3u16 {
        let h = u16::from_le_bytes([cfg[5], cfg[6]]).wrapping_mul(round + 1);
        client.store_u16(c2s_at + RingLayout::HEAD, h);
        client.store_u16(s2c_at + RingLayout::HEAD, h ^ u16::from(cfg[7]));
        let mut got = 0usize;
        let r = c2s.recv(&regions, 64, MAX_FRAME, &mut frame, &mut refused, |f| {
            assert!(f.len() <= MAX_FRAME);
            got += 1;
            got % 7 != 0
        });
        if r.is_err() {
            return;
        }
        for len in [60usize, 1514, 9000, 0] {
            match s2c.send(&regions, &body[..len.min(body.len())]) {
                Ok(_) => {}
                Err(_) => return,
            }
        }
        if s2c.publish(&regions).is_err() {
            return;
        }
    }
}

/// valed's own region as a memif client, with a server that writes whatever the fuzzer
/// says over any of it (indices, flags, descriptors, buffers) between valed's reads and
/// writes: valed reads no frame longer than the largest, never sees more pending than
/// the ring holds, and nothing it does panics or leaves the region.
pub fn memif_own(data: &[u8]) {
    use crate::port::memif::own::{Geometry, Own};
    use crate::port::memif::ring::Refused;
    use crate::sys::peer::PeerMem;
    use rustix::fd::AsFd;
    const MAX_FRAME: usize = 9216;
    let Some((&cfg, mut rest)) = data.split_first() else {
        return;
    };
    let geo = Geometry {
        log2: 1 + cfg % 6,
        bsize: 64 << (cfg >> 6),
    };
    let Ok((mut own, offered)) = Own::create(geo, &Default::default()) else {
        return;
    };
    let len = geo.region_len() as u64;
    let Ok(server) = PeerMem::map(offered.region.as_fd(), len) else {
        return;
    };
    if own.start().is_err() {
        return;
    }
    let mut frame = Vec::new();
    let mut refused = Refused::default();
    // Each round: a write by the server (offset u16, length u8, bytes), then valed's
    // moves.
    while rest.len() >= 3 {
        let off = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % geo.region_len();
        let n = usize::from(rest[2]).min(rest.len() - 3);
        server.write(off, &rest[3..3 + n]);
        let op = rest.get(3 + n).copied().unwrap_or(0);
        rest = &rest[(3 + n + 1).min(rest.len())..];
        match own.pending() {
            Ok(p) => assert!(p <= geo.slots()),
            Err(_) => return,
        }
        let r = own.recv(64, MAX_FRAME, &mut frame, &mut refused, |f| {
            assert!(f.len() <= MAX_FRAME);
            op & 1 == 0
        });
        if r.is_err() {
            return;
        }
        let f = vec![op; usize::from(op) * 37 % 9001];
        if own.send(&f).is_err() || own.publish().is_err() {
            return;
        }
    }
}

/// VXLAN datagrams as the network sends them to an uplink (each a length byte, then
/// that many bytes): decapsulated for VNI 42, their sources learned into a small VTEP
/// table (so that it fills and sweeps), their flows hashed, their destinations looked
/// up. Whatever arrives, the decoder reads only inside the datagram, a frame it accepts
/// has its Ethernet header, and the table never outgrows its bound.
pub fn vxlan_datagrams(data: &[u8]) {
    use crate::port::vxlan::vtep::{Vteps, decap, flow_hash};
    const CAPACITY: usize = 8;
    let mut t = Vteps::new(CAPACITY, 3);
    let mut rest = data;
    let mut now = 0u64;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        let (d, next) = tail.split_at(n);
        rest = next;
        now += u64::from(n as u8 & 3);
        let _ = flow_hash(d);
        let Ok(inner) = decap(d, 42) else {
            continue;
        };
        assert!(inner.len() >= 14 && inner.len() + 8 == d.len());
        let (mut dst, mut src) = ([0u8; 6], [0u8; 6]);
        dst.copy_from_slice(&inner[..6]);
        src.copy_from_slice(&inner[6..12]);
        let vtep = std::net::IpAddr::from([198, 18, 0, inner[12]]);
        t.learn(src, vtep, now);
        let _ = t.lookup(&dst, now);
        let _ = flow_hash(inner);
        assert!(t.rows(now).len() <= CAPACITY);
    }
}
