//! Between the frontend and the vhost crate: whole messages relayed, what QEMU 7.2 sends
//! that the crate refuses held back, and the memory table checked before it is mapped.

use crate::port::PortCounters;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use vhost::vhost_user::VhostUserVirtioFeatures;

/// vhost-user requests the relay looks at.
const SET_FEATURES: u32 = 2;
const SET_MEM_TABLE: u32 = 5;
/// Memory slots (CONFIGURE_MEM_SLOTS, not offered): refused outright.
const ADD_MEM_REG: u32 = 37;
const REM_MEM_REG: u32 = 38;
pub(crate) const SET_VRING_KICK: u32 = 12;
pub(crate) const SET_VRING_CALL: u32 = 13;
pub(crate) const SET_VRING_ERR: u32 = 14;
const SET_VRING_ENABLE: u32 = 18;
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;

/// Reads one vhost-user message (12-byte header, then its payload) and the descriptors
/// sent with it; `None` when the peer hung up.
pub(crate) fn read_msg(
    s: &UnixStream,
) -> std::io::Result<Option<(Vec<u8>, Vec<rustix::fd::OwnedFd>)>> {
    use rustix::fd::AsFd;
    let mut hdr = [0u8; 12];
    let (n, fds) = vale::sock::recv(s.as_fd(), &mut hdr)?;
    if n == 0 {
        return Ok(None);
    }
    let mut r = s;
    if n < 12 {
        r.read_exact(&mut hdr[n..])?;
    }
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if size > 64 * 1024 {
        return Err(std::io::Error::other("vhost-user message too large"));
    }
    let mut msg = hdr.to_vec();
    msg.resize(12 + size, 0);
    r.read_exact(&mut msg[12..])?;
    Ok(Some((msg, fds)))
}

/// One frontend message in a line, for the debug log: its request, the queue it is
/// about and what it sets (a vhost-user session is a dozen of these, then only traffic).
fn summary(msg: &[u8], fds: usize) -> String {
    let word = |o: usize| {
        msg.get(o..o + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let quad = |o: usize| u64::from(word(o)) | u64::from(word(o + 4)) << 32;
    let req = word(0);
    let what = match req {
        1 => "GET_FEATURES".to_string(),
        SET_FEATURES => format!("SET_FEATURES {:#x}", quad(12)),
        3 => "SET_OWNER".to_string(),
        4 => "RESET_OWNER".to_string(),
        SET_MEM_TABLE => format!("SET_MEM_TABLE regions {}", word(12)),
        8 => format!("SET_VRING_NUM q{} num {}", word(12), word(16)),
        9 => format!(
            "SET_VRING_ADDR q{} desc {:#x} used {:#x} avail {:#x}",
            word(12),
            quad(20),
            quad(28),
            quad(36)
        ),
        10 => format!("SET_VRING_BASE q{} base {}", word(12), word(16)),
        11 => format!("GET_VRING_BASE q{}", word(12)),
        SET_VRING_KICK | 13 | 14 => format!(
            "SET_VRING_{} q{}{}",
            ["KICK", "CALL", "ERR"][(req - SET_VRING_KICK) as usize],
            word(12) & 0xff,
            if word(12) & 0x100 != 0 { " nofd" } else { "" }
        ),
        15 => "GET_PROTOCOL_FEATURES".to_string(),
        16 => format!("SET_PROTOCOL_FEATURES {:#x}", quad(12)),
        17 => "GET_QUEUE_NUM".to_string(),
        SET_VRING_ENABLE => format!("SET_VRING_ENABLE q{} {}", word(12), word(16)),
        39 => format!("SET_STATUS {:#x}", word(12)),
        40 => "GET_STATUS".to_string(),
        r => format!("request {r}"),
    };
    format!("{what} (flags {:#x}, {fds} fds)", word(4))
}

/// Why a frontend's memory messages were refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MemTableError {
    #[error("memory slots were not offered")]
    Slots,
    #[error("short memory table")]
    Short,
    #[error("memory table of {regions} regions with {fds} descriptors")]
    Count { regions: usize, fds: usize },
    #[error("region {0}: fstat: {1}")]
    Fstat(usize, #[source] std::io::Error),
    #[error("region {0}: offset + size overflows")]
    Overflow(usize),
    #[error("region {region}: bytes {offset}..{end} are not inside its file of {file} bytes")]
    Outside {
        region: usize,
        offset: u64,
        end: u64,
        file: u64,
    },
    #[error("region {0}: cannot seal it against shrinking: {1}")]
    Seal(usize, #[source] std::io::Error),
    #[error(
        "region {region}: guest memory that cannot be sealed against shrinking ({why}): \
         the frontend could truncate it under valed. Give the frontend sealable memory \
         (QEMU: -object memory-backend-memfd, sealed by default), or start valed with \
         --vhost-trust-unsealed (vhost_trust_unsealed = true) if it is trusted"
    )]
    Unsealed { region: usize, why: &'static str },
}

/// Whether a region's file now holds its size (sealed against shrinking).
#[derive(Debug, PartialEq, Eq)]
enum Sealing {
    Sealed,
    /// It cannot be sealed, and why.
    Unsealable(&'static str),
}

/// Seals `fd` against shrinking (F_SEAL_SHRINK) unless it is already: from then on its
/// size can only grow, so what `fstat` says next stays true for the mapping's life.
fn seal_shrink(fd: rustix::fd::BorrowedFd<'_>) -> std::io::Result<Sealing> {
    use rustix::fs::SealFlags;
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) if seals.contains(SealFlags::SHRINK) => Ok(Sealing::Sealed),
        Ok(seals) if seals.contains(SealFlags::SEAL) => Ok(Sealing::Unsealable(
            "a memfd without MFD_ALLOW_SEALING, a /dev/shm or hugetlbfs file, or one \
             sealed without F_SEAL_SHRINK",
        )),
        Ok(_) => {
            rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK)?;
            Ok(Sealing::Sealed)
        }
        Err(rustix::io::Errno::INVAL) => {
            Ok(Sealing::Unsealable("not a memfd nor a shared-memory file"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks a `SET_MEM_TABLE` before the crate maps it. Each region's file is sealed
/// against shrinking first, and only then measured: every region must lie inside its
/// file (the crate maps what it is told, and touching a mapping past the end of its
/// file raises SIGBUS), and measuring before sealing would let the frontend shrink the
/// file in between. A file that cannot be sealed (DPDK's memfds, hugetlbfs and /dev/shm
/// files) is refused unless `trust_unsealed`; then it is accepted with a warning, and a
/// truncation later is caught (`sys::sigbus`), cutting the frontend off.
fn check_mem_table(
    msg: &[u8],
    fds: &[rustix::fd::OwnedFd],
    port: &str,
    trust_unsealed: bool,
) -> Result<(), MemTableError> {
    use rustix::fd::AsFd;
    let body = &msg[12..];
    if body.len() < 8 {
        return Err(MemTableError::Short);
    }
    let n = u32::from_le_bytes(body[0..4].try_into().unwrap_or([0; 4])) as usize;
    if n == 0 || n > 8 || body.len() < 8 + 32 * n || fds.len() != n {
        return Err(MemTableError::Count {
            regions: n,
            fds: fds.len(),
        });
    }
    for (i, fd) in fds.iter().enumerate() {
        let r = &body[8 + 32 * i..8 + 32 * (i + 1)];
        let u = |o: usize| u64::from_le_bytes(r[o..o + 8].try_into().unwrap_or([0; 8]));
        let (size, offset) = (u(8), u(24));
        match seal_shrink(fd.as_fd()).map_err(|e| MemTableError::Seal(i, e))? {
            Sealing::Sealed => {}
            Sealing::Unsealable(why) if !trust_unsealed => {
                return Err(MemTableError::Unsealed { region: i, why });
            }
            Sealing::Unsealable(why) => tracing::warn!(
                port,
                "vhost-user: guest memory region {i} cannot be sealed against shrinking \
                 ({why}); accepted (vhost_trust_unsealed): a truncation cuts the frontend off"
            ),
        }
        let st = rustix::fs::fstat(fd).map_err(|e| MemTableError::Fstat(i, e.into()))?;
        let end = offset.checked_add(size).ok_or(MemTableError::Overflow(i))?;
        if size == 0 || end > st.st_size as u64 {
            return Err(MemTableError::Outside {
                region: i,
                offset,
                end,
                file: st.st_size as u64,
            });
        }
    }
    Ok(())
}

/// What the relay does with one message from the frontend.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Close the connection: the message would have the crate map memory it must not.
    /// The failure reply to send first, if the frontend asked for one.
    Refuse {
        why: MemTableError,
        reply: Option<Vec<u8>>,
    },
    /// Held back and acknowledged here: the reply to send the frontend, if it asked.
    Answer(Option<Vec<u8>>),
    /// Passed on to the crate, followed by a message of our own if any.
    Pass { then: Option<Vec<u8>> },
}

/// What the relay knows of one frontend connection.
#[derive(Debug, Default)]
pub(crate) struct Frontend {
    /// Guest memory that cannot be sealed is accepted (`--vhost-trust-unsealed`).
    trust_unsealed: bool,
    features_set: bool,
    protocol_acked: bool,
}

/// A message of a header and `body`.
fn message(req: u32, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + body.len());
    m.extend_from_slice(&req.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    m
}

/// A reply to `req` carrying `value` (0: done, else failed), if `flags` asked for one.
fn reply_to(req: u32, flags: u32, value: u64) -> Option<Vec<u8>> {
    (flags & FLAG_NEED_REPLY != 0)
        .then(|| message(req, FLAG_VERSION | FLAG_REPLY, &value.to_le_bytes()))
}

impl Frontend {
    pub(crate) fn new(trust_unsealed: bool) -> Frontend {
        Frontend {
            trust_unsealed,
            ..Frontend::default()
        }
    }

    /// Decides about one whole message (`msg`: the 12-byte header and its payload, as
    /// [`read_msg`] returns it) and the descriptors that came with it. The crate would
    /// refuse from QEMU 7.2 a `SET_VRING_ENABLE` before `SET_FEATURES` (QEMU disables
    /// rings early; rings start disabled anyway): it is acknowledged here and not passed
    /// on. QEMU 7.2 (one queue pair) never enables its rings once protocol features are
    /// negotiated, expecting them to run once kicked: each ring is enabled as its kick
    /// arrives (no reply asked, so none comes back).
    pub(crate) fn inspect(
        &mut self,
        msg: &[u8],
        fds: &[rustix::fd::OwnedFd],
        port: &str,
    ) -> Verdict {
        let word = |o: usize| u32::from_le_bytes([msg[o], msg[o + 1], msg[o + 2], msg[o + 3]]);
        let (req, flags) = (word(0), word(4));
        let refused = match req {
            SET_MEM_TABLE => check_mem_table(msg, fds, port, self.trust_unsealed).err(),
            ADD_MEM_REG | REM_MEM_REG => Some(MemTableError::Slots),
            _ => None,
        };
        if let Some(why) = refused {
            let reply = reply_to(req, flags, 1);
            return Verdict::Refuse { why, reply };
        }
        if req == SET_FEATURES {
            self.features_set = true;
            if msg.len() >= 20 {
                let f = u64::from_le_bytes(msg[12..20].try_into().unwrap_or([0; 8]));
                self.protocol_acked = f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
            }
        }
        if req == SET_VRING_ENABLE && !self.features_set {
            return Verdict::Answer(reply_to(req, flags, 0));
        }
        let then = (req == SET_VRING_KICK && self.protocol_acked && msg.len() >= 20).then(|| {
            let mut body = [0u8; 8];
            body[..4].copy_from_slice(&u32::from(msg[12]).to_le_bytes());
            body[4..].copy_from_slice(&1u32.to_le_bytes());
            message(SET_VRING_ENABLE, FLAG_VERSION, &body)
        });
        Verdict::Pass { then }
    }
}

/// Sends `m` to the frontend, if it is still there.
fn to_front(front: &Mutex<Option<UnixStream>>, m: &[u8]) {
    use rustix::fd::AsFd;
    let g = front.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = g.as_ref() {
        let _ = vale::sock::send(f.as_fd(), m, &[]);
    }
}

/// Relays one frontend connection to the vhost crate's handler, each message as
/// [`Frontend::inspect`] decides. Returns when either side hangs up.
pub(super) fn relay(
    front: UnixStream,
    back: UnixStream,
    port: &str,
    counters: &PortCounters,
    trust_unsealed: bool,
    notifiers: &Arc<crate::port::notify::Held>,
) {
    use rustix::fd::AsFd;
    let front_w = Arc::new(Mutex::new(front.try_clone().ok()));
    let back_r = back.try_clone().ok();
    let pumps = crate::port::notify::Pumps::start("vale-vhost-irq", notifiers, 1);
    let served = front_w.lock().unwrap_or_else(|p| p.into_inner()).is_some();
    let (true, Some(_), Ok(pumps)) = (served, &back_r, pumps.as_ref()) else {
        // Out of descriptors (or threads), or the last frontend's notifications still
        // stuck: the frontend sees the connection close and may come back, instead of
        // waiting for answers that never come.
        let why = pumps
            .err()
            .map_or("out of descriptors".to_string(), |e| e.to_string());
        tracing::warn!(port, "vhost-user: cannot serve the frontend: {why}");
        counters.read_errors.fetch_add(1, Ordering::Relaxed);
        let _ = back.shutdown(std::net::Shutdown::Both);
        let _ = front.shutdown(std::net::Shutdown::Both);
        return;
    };
    let fw = front_w.clone();
    // Crate -> frontend: whole messages, so our own replies never interleave.
    let up = std::thread::spawn(move || {
        let Some(back_r) = back_r else { return };
        while let Ok(Some((msg, fds))) = read_msg(&back_r) {
            let g = fw.lock().unwrap_or_else(|p| p.into_inner());
            let Some(f) = g.as_ref() else { break };
            let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            if vale::sock::send(f.as_fd(), &msg, &borrowed).is_err() {
                break;
            }
        }
        let _ = back_r.shutdown(std::net::Shutdown::Both);
        // The crate hung up: so does the frontend's side (it may reconnect).
        if let Some(f) = fw.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
    });
    let mut state = Frontend::new(trust_unsealed);
    while let Ok(Some((msg, fds))) = read_msg(&front) {
        tracing::debug!(port, "vhost-user frontend: {}", summary(&msg, fds.len()));
        match state.inspect(&msg, &fds, port) {
            Verdict::Refuse { why, reply } => {
                // The frontend gets a failure reply if it asked for one, then sees the
                // connection close; it may come back with a good one.
                tracing::warn!(port, "vhost-user frontend refused: {why}");
                if let Some(r) = reply {
                    to_front(&front_w, &r);
                }
                counters.read_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Verdict::Answer(reply) => {
                if let Some(r) = reply {
                    to_front(&front_w, &r);
                }
            }
            Verdict::Pass { then } => {
                // The frontend's notification descriptors stay with valed's pump; the
                // crate gets valed's own in their place.
                let fds = match crate::port::notify::substitute(pumps, &msg, fds) {
                    Ok(f) => f,
                    Err(why) => {
                        tracing::warn!(port, "vhost-user frontend refused: {why}");
                        counters.read_errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                };
                let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
                if vale::sock::send(back.as_fd(), &msg, &borrowed).is_err() {
                    break;
                }
                if let Some(m) = then {
                    if vale::sock::send(back.as_fd(), &m, &[]).is_err() {
                        break;
                    }
                }
            }
        }
    }
    let _ = back.shutdown(std::net::Shutdown::Both);
    let _ = front.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::OwnedFd;
    use rustix::fs::MemfdFlags;

    const MIB: u64 = 1 << 20;

    /// A SET_MEM_TABLE of one region: `size` bytes at `offset` of its file.
    fn table(size: u64, offset: u64) -> Vec<u8> {
        let mut m = SET_MEM_TABLE.to_le_bytes().to_vec();
        m.extend_from_slice(&FLAG_VERSION.to_le_bytes());
        m.extend_from_slice(&40u32.to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
        for v in [0, size, 0x7000_0000_0000, offset] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        m
    }

    fn memfd(flags: MemfdFlags) -> OwnedFd {
        let fd = rustix::fs::memfd_create("relay-test", MemfdFlags::CLOEXEC | flags).unwrap();
        rustix::fs::ftruncate(&fd, MIB).unwrap();
        fd
    }

    fn shrinkable(fd: &OwnedFd) -> bool {
        rustix::fs::ftruncate(fd, 4096).is_ok()
    }

    #[test]
    fn a_sealable_memfd_is_sealed_against_shrinking_and_accepted() {
        let fds = [memfd(MemfdFlags::ALLOW_SEALING)];
        check_mem_table(&table(MIB, 0), &fds, "t", false).unwrap();
        assert!(!shrinkable(&fds[0]));
    }

    /// Sealed before it is measured: a table refused for its size still leaves the
    /// file sealed (were it measured first, the frontend could shrink it in between).
    #[test]
    fn the_file_is_sealed_before_its_size_is_checked() {
        let fds = [memfd(MemfdFlags::ALLOW_SEALING)];
        let e = check_mem_table(&table(16 * MIB, 0), &fds, "t", false).unwrap_err();
        assert!(matches!(e, MemTableError::Outside { .. }), "{e}");
        assert!(!shrinkable(&fds[0]), "sealed although refused");
    }

    #[test]
    fn unsealable_memory_is_refused_unless_trusted() {
        // A memfd without MFD_ALLOW_SEALING (DPDK --no-huge), and one sealed against
        // further seals without F_SEAL_SHRINK.
        let closed = memfd(MemfdFlags::ALLOW_SEALING);
        rustix::fs::fcntl_add_seals(&closed, rustix::fs::SealFlags::SEAL).unwrap();
        for fd in [memfd(MemfdFlags::empty()), closed] {
            let fds = [fd];
            let e = check_mem_table(&table(MIB, 0), &fds, "t", false).unwrap_err();
            assert!(matches!(e, MemTableError::Unsealed { .. }), "{e}");
            assert!(e.to_string().contains("--vhost-trust-unsealed"), "{e}");
            check_mem_table(&table(MIB, 0), &fds, "t", true).unwrap();
            // Trusted or not, its size is still checked.
            assert!(check_mem_table(&table(2 * MIB, 0), &fds, "t", true).is_err());
        }
    }

    #[test]
    fn memory_sealed_already_by_its_owner_is_accepted() {
        // QEMU's memory-backend-memfd: GROW, SHRINK and SEAL set by QEMU itself.
        use rustix::fs::SealFlags;
        let fd = memfd(MemfdFlags::ALLOW_SEALING);
        rustix::fs::fcntl_add_seals(&fd, SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)
            .unwrap();
        check_mem_table(&table(MIB, 0), &[fd], "t", false).unwrap();
    }
}

#[cfg(test)]
mod inspect_tests {
    use super::*;

    fn req(r: u32, flags: u32, body: &[u8]) -> Vec<u8> {
        message(r, flags, body)
    }

    #[test]
    fn qemu_72s_early_ring_enable_is_answered_here_and_kicks_enable_rings() {
        let mut f = Frontend::default();
        let enable = req(SET_VRING_ENABLE, FLAG_VERSION | FLAG_NEED_REPLY, &[0; 8]);
        match f.inspect(&enable, &[], "t") {
            Verdict::Answer(Some(r)) => {
                assert_eq!(r, req(SET_VRING_ENABLE, FLAG_VERSION | FLAG_REPLY, &[0; 8]))
            }
            v => panic!("an enable before SET_FEATURES is answered here, got {v:?}"),
        }
        let features = VhostUserVirtioFeatures::PROTOCOL_FEATURES
            .bits()
            .to_le_bytes();
        assert!(matches!(
            f.inspect(&req(SET_FEATURES, FLAG_VERSION, &features), &[], "t"),
            Verdict::Pass { then: None }
        ));
        // After the features, an enable goes to the crate; a kick brings its own enable.
        assert!(matches!(
            f.inspect(&enable, &[], "t"),
            Verdict::Pass { then: None }
        ));
        let Verdict::Pass { then: Some(m) } = f.inspect(
            &req(SET_VRING_KICK, FLAG_VERSION, &[1, 0, 0, 0, 0, 0, 0, 0]),
            &[],
            "t",
        ) else {
            panic!("a kick after protocol features enables its ring");
        };
        assert_eq!(
            m,
            req(SET_VRING_ENABLE, FLAG_VERSION, &[1, 0, 0, 0, 1, 0, 0, 0])
        );
    }

    #[test]
    fn memory_tables_outside_their_files_and_memory_slots_are_refused() {
        use rustix::fs::MemfdFlags;
        let fd = rustix::fs::memfd_create("t", MemfdFlags::ALLOW_SEALING).unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        let table = |size: u64, offset: u64| {
            let mut b = Vec::new();
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            for v in [0u64, size, 0, offset] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            req(SET_MEM_TABLE, FLAG_VERSION, &b)
        };
        let mut f = Frontend::default();
        let fds = [fd];
        assert!(matches!(
            f.inspect(&table(4096, 1), &fds, "t"),
            Verdict::Refuse {
                why: MemTableError::Outside { .. },
                ..
            }
        ));
        assert!(matches!(
            f.inspect(&table(4096, 0), &fds, "t"),
            Verdict::Pass { then: None }
        ));
        let seals = rustix::fs::fcntl_get_seals(&fds[0]).unwrap();
        assert!(
            seals.contains(rustix::fs::SealFlags::SHRINK),
            "sealed once passed"
        );
        assert!(matches!(
            f.inspect(&req(ADD_MEM_REG, FLAG_VERSION, &[0; 40]), &[], "t"),
            Verdict::Refuse {
                why: MemTableError::Slots,
                ..
            }
        ));
    }
}
