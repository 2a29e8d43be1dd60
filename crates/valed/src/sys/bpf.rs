//! bpf(2) as typed commands: an XSKMAP, loading an XDP program, attaching it through a
//! BPF link, and the eBPF instructions of the program that steers frames to the map.
//!
//! Kernel ABI: linux/bpf.h. Each command gets its own `#[repr(C)]` slice of
//! `union bpf_attr`, up to the last field valed sets, and is passed with that size (as
//! libbpf does): the kernel zeroes the rest. The layouts are asserted in the tests.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `offsetof(struct xdp_md, rx_queue_index)`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;

/// `bpf_attr` for `BPF_MAP_CREATE`.
#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

/// `bpf_attr` for `BPF_MAP_*_ELEM`: `key` and `value` are addresses of the map's key
/// and value sizes.
#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`: `insns` is the address
/// of `insn_cnt` instructions, `license` of a NUL-terminated string, `log_buf` of
/// `log_size` bytes the kernel writes the verifier's log into.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `bpf_attr` for `BPF_LINK_CREATE`, up to `flags`.
#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// bpf(2) with `attr` as the attributes of `cmd`.
///
/// # Safety
///
/// `A` must be `cmd`'s attribute struct, and every address stored in `attr` must be
/// valid, for the whole call, for what the kernel does with it under `cmd`: it reads
/// `ProgLoad`'s instructions and licence, writes its log buffer, and reads `MapElem`'s
/// key and value at the map's key and value sizes.
unsafe fn bpf<A>(cmd: libc::c_int, attr: &mut A) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is `size_of::<A>()` writable bytes for the call; the addresses
    // inside it are the caller's to vouch for (this function's contract).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut A).cast::<libc::c_void>(),
            std::mem::size_of::<A>(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// [`bpf`] for a command that returns a new descriptor.
///
/// # Safety
///
/// As for [`bpf`], and `cmd` must be one that returns a new descriptor on success
/// (`BPF_MAP_CREATE`, `BPF_PROG_LOAD`, `BPF_LINK_CREATE`).
unsafe fn bpf_fd<A>(cmd: libc::c_int, attr: &mut A) -> io::Result<OwnedFd> {
    // SAFETY: passed on from this function's contract.
    let r = unsafe { bpf(cmd, attr) }?;
    // SAFETY: `cmd` returned a new descriptor (this function's contract), which
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

/// An `XSKMAP` from receive queue (`u32`) to AF_XDP socket (`u32` descriptor).
pub struct XskMap(OwnedFd);

impl XskMap {
    /// A map for queues `0..queues`.
    pub fn create(queues: u32) -> io::Result<XskMap> {
        let mut attr = MapCreate {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: queues,
            map_flags: 0,
        };
        // SAFETY: `MapCreate` is BPF_MAP_CREATE's attribute struct; it holds no address.
        // It returns the map's new descriptor.
        unsafe { bpf_fd(BPF_MAP_CREATE, &mut attr) }.map(XskMap)
    }

    /// Steers queue `queue`'s frames to `sock`.
    pub fn insert(&self, queue: u32, sock: BorrowedFd<'_>) -> io::Result<()> {
        let (key, value) = (queue, sock.as_raw_fd() as u32);
        let mut attr = MapElem {
            map_fd: self.0.as_raw_fd() as u32,
            _pad: 0,
            key: &key as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        // SAFETY: `MapElem` is BPF_MAP_UPDATE_ELEM's attribute struct; `key` and `value`
        // are addresses of two live `u32`s, the key and value sizes `create` gave the
        // map, and `self.0` is that map.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map(drop)
    }

    /// `return bpf_redirect_map(&map, ctx->rx_queue_index, XDP_PASS);`: each frame to
    /// the socket of the queue it arrived on, or to the kernel's stack if there is none.
    pub fn redirect_program(&self) -> [Insn; 6] {
        redirect_program(self.0.as_raw_fd())
    }
}

fn redirect_program(map: RawFd) -> [Insn; 6] {
    [
        // r2 = ctx->rx_queue_index
        Insn::new(0x61, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        // r1 = the map: a 64-bit load over two instructions, the descriptor resolved to
        // the map by the kernel (BPF_PSEUDO_MAP_FD)
        Insn::new(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map),
        Insn::new(0, 0, 0, 0, 0),
        Insn::new(0xb7, 3, 0, 0, XDP_PASS), // r3 = XDP_PASS: no socket on the queue
        Insn::new(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        Insn::new(0x95, 0, 0, 0, 0), // exit
    ]
}

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`, 8 bytes).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn([u8; 8]);

impl Insn {
    /// Opcode, destination and source registers, offset, immediate. The registers
    /// share a byte as two 4-bit bitfields, the destination's first, which is the low
    /// nibble on the little-endian machines valed runs on.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        let o = off.to_ne_bytes();
        let i = imm.to_ne_bytes();
        Insn([
            code,
            (dst & 0xf) | (src << 4),
            o[0],
            o[1],
            i[0],
            i[1],
            i[2],
            i[3],
        ])
    }
}

/// Loads `insns` as an XDP program named `name` (at most 15 bytes are kept) under
/// `license`; on failure `log` holds the verifier's account, NUL-terminated.
pub fn prog_load_xdp(
    insns: &[Insn],
    license: &CStr,
    name: &str,
    log: &mut [u8],
) -> io::Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name[..15].iter_mut().zip(name.bytes()) {
        *d = s;
    }
    let too_big = |_| io::Error::from_raw_os_error(libc::E2BIG);
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: u32::try_from(insns.len()).map_err(too_big)?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).map_err(too_big)?,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP,
    };
    // SAFETY: `ProgLoad` is BPF_PROG_LOAD's attribute struct. `insns` addresses
    // `insn_cnt` instructions and `license` a NUL-terminated string, both borrowed for
    // the call; `log_buf` addresses `log_size` bytes of `log`, borrowed mutably for it.
    // It returns the program's new descriptor.
    unsafe { bpf_fd(BPF_PROG_LOAD, &mut attr) }
}

/// Where an XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpHook {
    /// In the driver, before it builds a socket buffer.
    Driver,
    /// The kernel's generic hook, for any interface.
    Generic,
}

/// Attaches XDP program `prog` to interface `ifindex` at `hook` through a BPF link:
/// closing the returned descriptor detaches it.
pub fn link_create_xdp(prog: BorrowedFd<'_>, ifindex: u32, hook: XdpHook) -> io::Result<OwnedFd> {
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: match hook {
            XdpHook::Driver => XDP_FLAGS_DRV_MODE,
            XdpHook::Generic => XDP_FLAGS_SKB_MODE,
        },
    };
    // SAFETY: `LinkCreate` is BPF_LINK_CREATE's attribute struct; it holds no address.
    // It returns the link's new descriptor.
    unsafe { bpf_fd(BPF_LINK_CREATE, &mut attr) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    #[cfg(target_endian = "little")]
    fn the_redirect_program_is_these_six_instructions() {
        #[rustfmt::skip]
        let want: [u8; 48] = [
            0x61, 0x12, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, // r2 = *(u32 *)(r1 + 16)
            0x18, 0x11, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, // r1 = map fd 7 (pseudo) ...
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // ... high half
            0xb7, 0x03, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // r3 = XDP_PASS
            0x85, 0x00, 0x00, 0x00, 0x33, 0x00, 0x00, 0x00, // call bpf_redirect_map
            0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
        ];
        let got: Vec<u8> = redirect_program(7).iter().flat_map(|i| i.0).collect();
        assert_eq!(got, want);
    }

    // Offsets and sizes from linux/bpf.h (`offsetof(union bpf_attr, ...)`).
    #[test]
    fn attribute_structs_match_linux_bpf_h() {
        assert_eq!(size_of::<MapCreate>(), 20);
        assert_eq!(offset_of!(MapCreate, map_type), 0);
        assert_eq!(offset_of!(MapCreate, key_size), 4);
        assert_eq!(offset_of!(MapCreate, value_size), 8);
        assert_eq!(offset_of!(MapCreate, max_entries), 12);
        assert_eq!(offset_of!(MapCreate, map_flags), 16);

        assert_eq!(size_of::<MapElem>(), 32);
        assert_eq!(offset_of!(MapElem, map_fd), 0);
        assert_eq!(offset_of!(MapElem, key), 8);
        assert_eq!(offset_of!(MapElem, value), 16);
        assert_eq!(offset_of!(MapElem, flags), 24);

        assert_eq!(size_of::<ProgLoad>(), 72);
        assert_eq!(offset_of!(ProgLoad, prog_type), 0);
        assert_eq!(offset_of!(ProgLoad, insn_cnt), 4);
        assert_eq!(offset_of!(ProgLoad, insns), 8);
        assert_eq!(offset_of!(ProgLoad, license), 16);
        assert_eq!(offset_of!(ProgLoad, log_level), 24);
        assert_eq!(offset_of!(ProgLoad, log_size), 28);
        assert_eq!(offset_of!(ProgLoad, log_buf), 32);
        assert_eq!(offset_of!(ProgLoad, kern_version), 40);
        assert_eq!(offset_of!(ProgLoad, prog_flags), 44);
        assert_eq!(offset_of!(ProgLoad, prog_name), 48);
        assert_eq!(offset_of!(ProgLoad, prog_ifindex), 64);
        assert_eq!(offset_of!(ProgLoad, expected_attach_type), 68);

        assert_eq!(size_of::<LinkCreate>(), 16);
        assert_eq!(offset_of!(LinkCreate, prog_fd), 0);
        assert_eq!(offset_of!(LinkCreate, target_ifindex), 4);
        assert_eq!(offset_of!(LinkCreate, attach_type), 8);
        assert_eq!(offset_of!(LinkCreate, flags), 12);

        assert_eq!(size_of::<Insn>(), 8);
    }
}
