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
const SET_VRING_KICK: u32 = 12;
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
}

/// Checks a `SET_MEM_TABLE` before the crate maps it: every region must lie inside its
/// file (the crate maps what it is told, and touching a mapping past the end of its file
/// kills the process with SIGBUS), and a memfd that allows sealing (QEMU's
/// memory-backend-memfd) is sealed against shrinking, so the frontend cannot cut guest
/// memory from under the mapping later. Files that cannot be sealed (hugetlbfs, /dev/shm,
/// memfds without MFD_ALLOW_SEALING) are accepted with a warning that valed trusts the
/// frontend not to truncate them.
fn check_mem_table(
    msg: &[u8],
    fds: &[rustix::fd::OwnedFd],
    port: &str,
) -> Result<(), MemTableError> {
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
        use rustix::fs::SealFlags;
        let sealed = match rustix::fs::fcntl_get_seals(fd) {
            Ok(seals) if seals.contains(SealFlags::SHRINK) => true,
            Ok(seals) if !seals.contains(SealFlags::SEAL) => {
                rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK)
                    .map_err(|e| MemTableError::Seal(i, e.into()))?;
                true
            }
            _ => false,
        };
        if !sealed {
            tracing::warn!(
                port,
                "vhost-user: guest memory region {i} cannot be sealed against shrinking \
                 (not a memfd, or one created without MFD_ALLOW_SEALING): valed trusts \
                 the frontend not to truncate it"
            );
        }
    }
    Ok(())
}

/// What the relay does with one message from the frontend.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Close the connection: the message would have the crate map memory it must not.
    Refuse(MemTableError),
    /// Held back and acknowledged here: the reply to send the frontend, if it asked.
    Answer(Option<Vec<u8>>),
    /// Passed on to the crate, followed by a message of our own if any.
    Pass { then: Option<Vec<u8>> },
}

/// What the relay has learnt of one frontend connection.
#[derive(Debug, Default)]
pub(crate) struct Frontend {
    features_set: bool,
    protocol_acked: bool,
}

/// A message header and `u64` body (a reply, or a request with one value).
fn message(req: u32, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(12 + body.len());
    m.extend_from_slice(&req.to_le_bytes());
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&(body.len() as u32).to_le_bytes());
    m.extend_from_slice(body);
    m
}

impl Frontend {
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
            SET_MEM_TABLE => check_mem_table(msg, fds, port).err(),
            ADD_MEM_REG | REM_MEM_REG => Some(MemTableError::Slots),
            _ => None,
        };
        if let Some(why) = refused {
            return Verdict::Refuse(why);
        }
        if req == SET_FEATURES {
            self.features_set = true;
            if msg.len() >= 20 {
                let f = u64::from_le_bytes(msg[12..20].try_into().unwrap_or([0; 8]));
                self.protocol_acked = f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
            }
        }
        if req == SET_VRING_ENABLE && !self.features_set {
            let reply = (flags & FLAG_NEED_REPLY != 0)
                .then(|| message(req, FLAG_VERSION | FLAG_REPLY, &0u64.to_le_bytes()));
            return Verdict::Answer(reply);
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

/// Relays one frontend connection to the vhost crate's handler, each message as
/// [`Frontend::inspect`] decides. Returns when either side hangs up.
pub(super) fn relay(front: UnixStream, back: UnixStream, port: &str, counters: &PortCounters) {
    use rustix::fd::AsFd;
    let front_w = Arc::new(Mutex::new(front.try_clone().ok()));
    let back_r = back.try_clone().ok();
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
    let mut state = Frontend::default();
    while let Ok(Some((msg, fds))) = read_msg(&front) {
        match state.inspect(&msg, &fds, port) {
            Verdict::Refuse(why) => {
                // The frontend sees the connection close; it may come back with a good one.
                tracing::warn!(port, "vhost-user frontend refused: {why}");
                counters.read_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Verdict::Answer(reply) => {
                let g = front_w.lock().unwrap_or_else(|p| p.into_inner());
                if let (Some(f), Some(reply)) = (g.as_ref(), reply) {
                    let _ = vale::sock::send(f.as_fd(), &reply, &[]);
                }
            }
            Verdict::Pass { then } => {
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
            Verdict::Refuse(MemTableError::Outside { .. })
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
            Verdict::Refuse(MemTableError::Slots)
        ));
    }
}
