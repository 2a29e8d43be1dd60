//! A connected memif client's memory, mapped once its handshake is done: each region
//! sealed against shrinking first (or found sealed), then its size checked against the
//! file, then mapped; each ring checked (memif's cookie) and its indices zeroed, as the
//! server does before it sends CONNECTED.
//!
//! Sealing first is what makes the check hold: once `F_SEAL_SHRINK` is on the file,
//! nobody can make it shorter than it was when valed looked, so no access within the
//! checked size can fault. A region that cannot be sealed (a zero-copy client's memory:
//! DPDK's `nohuge` memfd carries `F_SEAL_SEAL` and nothing else, l2-peers.md §1.5) is
//! refused, with the reason sent to the client, unless `memif_trust_unsealed` says to
//! take it: its mapping is then watched (`sys::sigbus`), so a truncation becomes zero
//! pages and a counted fault instead of a SIGBUS that takes valed down.

use super::handshake::Setup;
use super::ring::{C2s, Placement, S2c};
use crate::sys::peer::PeerMem;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::SealFlags;
use std::sync::Arc;
use vale_wire::memif::RingLayout;

/// The client's regions, mapped, and its rings.
pub struct Conn {
    /// The unsealed regions' mappings under watch; dropped before they are unmapped
    /// (fields drop in order).
    pub watched: Option<crate::sys::sigbus::Watched>,
    pub regions: Vec<PeerMem>,
    pub c2s: Vec<C2s>,
    pub s2c: Vec<S2c>,
    /// The eventfds the client passed with its C2S rings: it writes one when it
    /// published frames (unless valed masked it). valed writes an S2C one after
    /// publishing (unless the client masked it): its own, relayed to the client's.
    pub c2s_kick: Vec<OwnedFd>,
    pub s2c_kick: Vec<OwnedFd>,
    /// Slots of each ring, for `vale-ctl list`.
    pub c2s_slots: u32,
    pub s2c_slots: u32,
    /// Relays valed's interrupts (`s2c_kick`, eventfds of valed's own) to the client's
    /// eventfds (`port::notify`): the forwarding thread never writes the client's.
    _notify: crate::port::notify::Pumps,
}

/// Seals `fd` against shrinking if it is not yet, then returns its size and whether it
/// is sealed. Memory that cannot be sealed is an error unless `trust`.
fn seal_then_size(fd: &OwnedFd, index: usize, trust: bool) -> Result<(u64, bool), String> {
    let sealed = match rustix::fs::fcntl_get_seals(fd) {
        Ok(seals) if seals.contains(SealFlags::SHRINK) => Ok(()),
        Ok(seals) => rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK).map_err(|e| {
            format!(
                "region {index} cannot be sealed against shrinking ({e}{})",
                if seals.contains(SealFlags::SEAL) {
                    ", F_SEAL_SEAL is set"
                } else {
                    ""
                }
            )
        }),
        Err(e) => Err(format!("region {index} is not a sealable memfd ({e})")),
    };
    if let Err(why) = &sealed {
        if !trust {
            return Err(format!(
                "{why}: valed maps only memory the client cannot shrink; use copy mode (zero-copy=no), or start valed with --memif-trust-unsealed"
            ));
        }
    }
    let st = rustix::fs::fstat(fd).map_err(|e| format!("region {index}: fstat: {e}"))?;
    Ok((st.st_size.max(0) as u64, sealed.is_ok()))
}

/// What backs a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// shmem (a memfd, /dev/shm).
    Shared,
    /// hugetlbfs (a memfd with MFD_HUGETLB, DPDK's huge pages).
    Huge,
}

/// Only memory: a file on a disk or a FUSE mount (which `memif_trust_unsealed` would
/// otherwise let through, not being a memfd) can block the forwarding thread in a page
/// fault for as long as its server likes.
fn memory_kind(fd: &OwnedFd, index: usize) -> Result<Memory, String> {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    const HUGETLBFS_MAGIC: u64 = 0x9584_58f6;
    let st = rustix::fs::fstatfs(fd).map_err(|e| format!("region {index}: fstatfs: {e}"))?;
    match st.f_type as u64 {
        TMPFS_MAGIC => Ok(Memory::Shared),
        HUGETLBFS_MAGIC => Ok(Memory::Huge),
        t => Err(format!(
            "region {index} is not shared memory (a file system of type {t:#x}): memif regions are memfds"
        )),
    }
}

/// A ring's interrupt descriptor must be an eventfd in counter mode: anything else (a
/// socket that stays readable, a pipe, a file on FUSE whose reads block whatever
/// O_NONBLOCK says, a semaphore eventfd that one read does not empty) would make the
/// forwarding thread spin or block.
fn check_eventfd(fd: &OwnedFd, ring: usize) -> Result<(), String> {
    use crate::port::notify::{Unfit, check};
    check(fd).map_err(|e| match e {
        Unfit::NotEventfd(what) => format!("Ring {ring}'s interrupt fd is not an eventfd ({what})"),
        Unfit::Semaphore => format!("Ring {ring}'s interrupt eventfd is a semaphore"),
    })
}

impl Conn {
    /// Maps what the handshake accepted; regions that cannot be sealed only if `trust`
    /// (then watched). The error is the reason sent in DISCONNECT.
    pub fn map(
        setup: Setup<OwnedFd>,
        trust: bool,
        held: &Arc<crate::port::notify::Held>,
    ) -> Result<Conn, String> {
        let mut regions = Vec::with_capacity(setup.regions.len());
        let mut unsealed = Vec::new();
        for (i, r) in setup.regions.into_iter().enumerate() {
            let (have, sealed) = seal_then_size(&r.fd, i, trust)?;
            if have < r.size {
                return Err(format!(
                    "region {i} is {have} bytes, not the {} ADD_REGION said",
                    r.size
                ));
            }
            let fs = memory_kind(&r.fd, i)?;
            let m = PeerMem::map(r.fd.as_fd(), r.size)
                .map_err(|e| format!("region {i}: mmap of {} bytes: {e}", r.size))?;
            if !sealed {
                tracing::warn!(
                    "memif region {i} ({} bytes) cannot be sealed; accepted (memif_trust_unsealed): a truncation disconnects the client",
                    r.size
                );
                unsealed.push(m.range());
            } else if fs == Memory::Huge {
                // Sealed against shrinking, but a hole punched in a huge-page file gives
                // its pages back, and the next touch can find none: watched too.
                unsealed.push(m.range());
            }
            // The mapping outlives the descriptor.
            regions.push(m);
        }
        // Watched before the rings are first touched below: a truncation that races
        // the checks above must find the watch in place.
        let watched = if unsealed.is_empty() {
            None
        } else {
            Some(
                crate::sys::sigbus::Watched::new(unsealed)
                    .map_err(|e| format!("cannot watch unsealed memory: {e}"))?,
            )
        };
        let at = |region: u16, offset: u32, log2_size: u8| Placement {
            region: usize::from(region),
            offset: offset as usize,
            log2_size,
        };
        let layout = RingLayout::X86;
        let mut c2s = Vec::new();
        let mut c2s_kick = Vec::new();
        let c2s_slots = 1u32 << setup.c2s[0].log2_size;
        let s2c_slots = 1u32 << setup.s2c[0].log2_size;
        // The client's eventfds share their files with it: it may clear O_NONBLOCK,
        // fill the counter, drain it first. So the forwarding thread reads its kicks
        // without waiting (`sys::read_eventfd_nowait`) and never writes its interrupts:
        // it writes eventfds of valed's own, relayed (`port::notify`).
        for (i, r) in setup.c2s.iter().chain(&setup.s2c).enumerate() {
            check_eventfd(&r.eventfd, i)?;
        }
        // Two per port: the last connection's may still be read to its end.
        let notify = crate::port::notify::Pumps::start("vale-memif-irq", held, 2)
            .map_err(|e| format!("cannot relay the interrupts: {e}"))?;
        for (i, r) in setup.c2s.into_iter().enumerate() {
            let mut ring = C2s::new(at(r.region, r.offset, r.log2_size), layout);
            ring.connect(&regions)
                .map_err(|e| format!("C2S ring {i}: {e}"))?;
            c2s.push(ring);
            c2s_kick.push(r.eventfd);
        }
        let mut s2c = Vec::new();
        let mut s2c_kick = Vec::new();
        for (i, r) in setup.s2c.into_iter().enumerate() {
            let mut ring = S2c::new(at(r.region, r.offset, r.log2_size), layout);
            ring.connect(&regions)
                .map_err(|e| format!("S2C ring {i}: {e}"))?;
            s2c.push(ring);
            let ours = notify
                .put(1, i as u8, crate::port::notify::Way::Out, r.eventfd)
                .map_err(|e| format!("cannot relay ring {i}'s interrupts: {e}"))?;
            s2c_kick.push(ours);
        }
        Ok(Conn {
            watched,
            regions,
            c2s,
            s2c,
            c2s_kick,
            s2c_kick,
            c2s_slots,
            s2c_slots,
            _notify: notify,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::handshake::{Region, Ring};
    use super::*;
    use rustix::fs::MemfdFlags;
    use vale_wire::memif::COOKIE;

    fn memfd(len: u64, flags: MemfdFlags) -> OwnedFd {
        let fd = rustix::fs::memfd_create("conn-test", MemfdFlags::CLOEXEC | flags).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        let m = PeerMem::map(fd.as_fd(), len).unwrap();
        for off in [0, 4096] {
            assert!(m.write(off, &COOKIE.to_le_bytes()));
        }
        fd
    }

    fn eventfd() -> OwnedFd {
        rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap()
    }

    fn setup(fd: OwnedFd, size: u64) -> Setup<OwnedFd> {
        Setup {
            id: 0,
            peer: "test".into(),
            if_name: "t0".into(),
            regions: vec![Region { fd, size }],
            c2s: vec![Ring {
                region: 0,
                offset: 0,
                log2_size: 4,
                eventfd: eventfd(),
            }],
            s2c: vec![Ring {
                region: 0,
                offset: 4096,
                log2_size: 4,
                eventfd: eventfd(),
            }],
        }
    }

    #[test]
    fn a_sealable_region_is_sealed_before_its_size_is_trusted() {
        let fd = memfd(1 << 16, MemfdFlags::ALLOW_SEALING);
        let keep = fd.try_clone().unwrap();
        let c = Conn::map(setup(fd, 1 << 16), false, &Arc::default()).unwrap();
        assert_eq!((c.c2s.len(), c.s2c.len(), c.c2s_slots), (1, 1, 16));
        assert!(
            rustix::fs::ftruncate(&keep, 100).is_err(),
            "the client can no longer shrink it"
        );
        assert!(
            rustix::fs::ftruncate(&keep, 1 << 17).is_ok(),
            "growing is harmless"
        );
    }

    #[test]
    fn regions_that_cannot_be_sealed_or_are_short_are_refused() {
        let e = Conn::map(
            setup(memfd(1 << 16, MemfdFlags::empty()), 1 << 16),
            false,
            &Arc::default(),
        )
        .err()
        .unwrap();
        assert!(e.contains("cannot be sealed against shrinking"), "{e}");
        let fd = memfd(1 << 16, MemfdFlags::ALLOW_SEALING);
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SEAL).unwrap();
        let e = Conn::map(setup(fd, 1 << 16), false, &Arc::default())
            .err()
            .unwrap();
        assert!(e.contains("F_SEAL_SEAL is set"), "{e}");
        let e = Conn::map(
            setup(memfd(8192, MemfdFlags::ALLOW_SEALING), 1 << 16),
            false,
            &Arc::default(),
        )
        .err()
        .unwrap();
        assert!(e.contains("region 0 is 8192 bytes, not the 65536"), "{e}");
        let f = std::fs::File::open("/dev/null").unwrap();
        let e = Conn::map(setup(f.into(), 4096), false, &Arc::default())
            .err()
            .unwrap();
        assert!(e.contains("not a sealable memfd"), "{e}");
    }

    /// Trusted or not, a region must be memory: a file on a disk (or a FUSE mount)
    /// could hold the forwarding thread in a page fault.
    #[test]
    fn a_region_that_is_a_file_on_a_disk_is_refused_even_when_trusted() {
        let dir = std::env::current_exe().unwrap();
        let path = dir
            .parent()
            .unwrap()
            .join(format!("memif-region-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(1 << 16).unwrap();
        let _ = std::fs::remove_file(&path);
        let fd: OwnedFd = f.into();
        let kind = rustix::fs::fstatfs(&fd).unwrap().f_type as u64;
        if kind == 0x0102_1994 {
            eprintln!("SKIP: the build directory is on tmpfs, which is memory");
            return;
        }
        let e = Conn::map(setup(fd, 1 << 16), true, &Arc::default())
            .err()
            .unwrap();
        assert!(e.contains("region 0 is not shared memory"), "{e}");
    }

    #[test]
    fn unsealable_memory_is_taken_only_when_trusted_and_then_watched() {
        let c = Conn::map(
            setup(memfd(1 << 16, MemfdFlags::empty()), 1 << 16),
            true,
            &Arc::default(),
        )
        .unwrap();
        assert!(c.watched.is_some(), "its mapping is under watch");
        let c = Conn::map(
            setup(memfd(1 << 16, MemfdFlags::ALLOW_SEALING), 1 << 16),
            true,
            &Arc::default(),
        )
        .unwrap();
        assert!(c.watched.is_none(), "sealed memory needs no watch");
    }

    /// A ring's interrupt fd that is not a counting eventfd is refused: a socket (it
    /// could stay readable), or an eventfd in semaphore mode (one read does not empty it).
    #[test]
    fn interrupt_fds_that_are_not_counting_eventfds_are_refused() {
        let region = || memfd(1 << 16, MemfdFlags::ALLOW_SEALING);
        let mut s = setup(region(), 1 << 16);
        let (a, _b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        s.s2c[0].eventfd = a;
        let e = Conn::map(s, true, &Arc::default()).err().unwrap();
        assert!(
            e.contains("Ring 1's interrupt fd is not an eventfd (socket:"),
            "{e}"
        );
        let mut s = setup(region(), 1 << 16);
        s.c2s[0].eventfd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::SEMAPHORE,
        )
        .unwrap();
        let e = Conn::map(s, true, &Arc::default()).err().unwrap();
        assert!(
            e.contains("Ring 0's interrupt eventfd is a semaphore"),
            "{e}"
        );
        assert!(Conn::map(setup(region(), 1 << 16), false, &Arc::default()).is_ok());
    }

    #[test]
    fn a_ring_without_the_cookie_is_refused() {
        let fd = memfd(1 << 16, MemfdFlags::ALLOW_SEALING);
        let m = PeerMem::map(fd.as_fd(), 1 << 16).unwrap();
        assert!(m.write(4096, &[0u8; 4]));
        let e = Conn::map(setup(fd, 1 << 16), false, &Arc::default())
            .err()
            .unwrap();
        assert!(e.starts_with("S2C ring 0: wrong cookie"), "{e}");
    }
}
