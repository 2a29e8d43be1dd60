//! Entry points for the fuzz targets in `fuzz/`: the daemon's own decoders of what
//! clients and vhost-user frontends send, reachable without a running daemon. Not an
//! API: each takes raw fuzz bytes and panics only on a broken invariant.

use crate::control::dispatch::split_pipe;
use crate::port::vhost_user::VNET_HDR;
use crate::port::vhost_user::datapath::{Chain, Put, avail_beyond, put_frame, read_chain};
use crate::port::vhost_user::relay::{Frontend, Verdict, read_msg};
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
        | Request::HostCreate { name }
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

/// vhost-user descriptor chains as the forwarding thread walks them: the guest's TX
/// queue read chain by chain (`read_chain`, as `VhostIo::pull`), the RX queue filled with
/// frames (`put_frame`, as `deliver`), over guest memory whose every byte the fuzzer
/// wrote: descriptor addresses, lengths, flags, `next` links (loops), ring indices.
pub fn vhost_chains(data: &[u8]) {
    if data.len() < CONTROL {
        return;
    }
    let (ctl, bytes) = data.split_at(CONTROL);
    let size = 1u16 << (ctl[0] % 5);
    let mergeable = ctl[1] & 1 != 0;
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), GUEST_MEM)]) else {
        return;
    };
    let n = bytes.len().min(GUEST_MEM);
    mem.write_slice(&bytes[..n], GuestAddress(0))
        .expect("inside guest memory");
    let (Some(mut tx), Some(mut rx)) = (queue(size, TX_RING), queue(size, RX_RING)) else {
        return;
    };
    let mut buf = Vec::new();
    let mut moved = 0;
    while moved < 256 {
        let Some(chain) = tx.pop_descriptor_chain(&mem) else {
            break;
        };
        let head = chain.head_index();
        if read_chain(chain, &mem, &mut buf) == Chain::Frame {
            assert!((VNET_HDR + 14..=65535 + 14 + VNET_HDR).contains(&buf.len()));
        }
        let _ = tx.add_used(&mem, head, 0);
        moved += 1;
    }
    if moved == 0 {
        let _ = avail_beyond(&tx, &mem);
    }
    // Frames of the sizes the control bytes ask, until the guest has no room.
    for len in [ctl[2] as usize * 8, ctl[3] as usize * 64, 1514] {
        let mut f = vec![0x5a; VNET_HDR + len];
        let before = rx.next_used();
        let r = put_frame(&mut rx, &mem, &mut f, mergeable);
        let used = rx.next_used().wrapping_sub(before);
        match r {
            Put::Done => assert!(used >= 1 && (mergeable || used == 1), "{used} used"),
            Put::NoRoom => {
                assert_eq!(used, 0, "no room: nothing taken");
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
