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
fn read_msg(s: &UnixStream) -> std::io::Result<Option<(Vec<u8>, Vec<rustix::fd::OwnedFd>)>> {
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
enum MemTableError {
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

/// Sends the frontend a reply to `req` carrying `value` (0: done, else failed).
fn reply(front: &Mutex<Option<UnixStream>>, req: u32, value: u64) {
    use rustix::fd::AsFd;
    let mut m = Vec::with_capacity(20);
    m.extend_from_slice(&req.to_le_bytes());
    m.extend_from_slice(&(FLAG_VERSION | FLAG_REPLY).to_le_bytes());
    m.extend_from_slice(&8u32.to_le_bytes());
    m.extend_from_slice(&value.to_le_bytes());
    let g = front.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = g.as_ref() {
        let _ = vale::sock::send(f.as_fd(), &m, &[]);
    }
}

/// Relays one frontend connection to the vhost crate's handler, holding back what the
/// crate would refuse from QEMU 7.2: a `SET_VRING_ENABLE` before `SET_FEATURES` (QEMU
/// disables rings early; rings start disabled anyway, so it is acknowledged here and
/// not passed on). Returns when either side hangs up.
pub(super) fn relay(
    front: UnixStream,
    back: UnixStream,
    port: &str,
    counters: &PortCounters,
    trust_unsealed: bool,
) {
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
    let mut features_set = false;
    let mut protocol_acked = false;
    while let Ok(Some((msg, fds))) = read_msg(&front) {
        let req = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
        let flags = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
        let refused = match req {
            SET_MEM_TABLE => check_mem_table(&msg, &fds, port, trust_unsealed).err(),
            ADD_MEM_REG | REM_MEM_REG => Some(MemTableError::Slots),
            _ => None,
        };
        if let Some(why) = refused {
            // The frontend gets a failure reply if it asked for one, then sees the
            // connection close; it may come back with a good one.
            tracing::warn!(port, "vhost-user frontend refused: {why}");
            if flags & FLAG_NEED_REPLY != 0 {
                reply(&front_w, req, 1);
            }
            counters.read_errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        if req == SET_FEATURES {
            features_set = true;
            if msg.len() >= 20 {
                let f = u64::from_le_bytes(msg[12..20].try_into().unwrap_or([0; 8]));
                protocol_acked = f & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0;
            }
        }
        if req == SET_VRING_ENABLE && !features_set {
            if flags & FLAG_NEED_REPLY != 0 {
                reply(&front_w, req, 0);
            }
            continue;
        }
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if vale::sock::send(back.as_fd(), &msg, &borrowed).is_err() {
            break;
        }
        // QEMU 7.2 (one queue pair) never enables its rings once protocol features are
        // negotiated, expecting them to run once kicked: enable each ring as its kick
        // arrives (no reply asked, so none comes back).
        if req == SET_VRING_KICK && protocol_acked && msg.len() >= 20 {
            let index = msg[12] as u32;
            let mut en = Vec::with_capacity(20);
            en.extend_from_slice(&SET_VRING_ENABLE.to_le_bytes());
            en.extend_from_slice(&FLAG_VERSION.to_le_bytes());
            en.extend_from_slice(&8u32.to_le_bytes());
            en.extend_from_slice(&index.to_le_bytes());
            en.extend_from_slice(&1u32.to_le_bytes());
            if vale::sock::send(back.as_fd(), &en, &[]).is_err() {
                break;
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
