//! bpf(2): the commands that load and attach the XDP program and fill its XSKMAP, and
//! the eBPF instruction encoding.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

pub const BPF_MAP_CREATE: libc::c_int = 0;
pub const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
pub const BPF_PROG_LOAD: libc::c_int = 5;
pub const BPF_LINK_CREATE: libc::c_int = 28;
pub const BPF_MAP_TYPE_XSKMAP: u32 = 17;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
pub const BPF_XDP: u32 = 37;
pub const BPF_FUNC_REDIRECT_MAP: i32 = 51;
pub const XDP_PASS: i32 = 2;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

pub fn bpf_raw(cmd: libc::c_int, attr: &mut [u8]) -> io::Result<i64> {
    // SAFETY: `attr` is a zeroed bpf_attr-sized buffer filled for `cmd`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 { Err(last_err()) } else { Ok(r) }
}

/// bpf(2) commands that return a new descriptor.
pub fn bpf(cmd: libc::c_int, attr: &mut [u8]) -> io::Result<OwnedFd> {
    let r = bpf_raw(cmd, attr)?;
    // SAFETY: bpf(2) returned a new descriptor, ours from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

pub fn put32(a: &mut [u8], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

pub fn put64(a: &mut [u8], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// One eBPF instruction: opcode, dst and src registers, offset, immediate.
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (dst & 0xf) | (src << 4);
    b[2..4].copy_from_slice(&off.to_ne_bytes());
    b[4..8].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// `return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);`
pub fn program(map_fd: i32) -> Vec<u8> {
    [
        insn(0x61, 2, 1, 16, 0),       // r2 = *(u32 *)(r1 + 16): rx_queue_index
        insn(0x18, 1, 1, 0, map_fd),   // r1 = the map (BPF_PSEUDO_MAP_FD) ...
        insn(0, 0, 0, 0, 0),           // ... (second half of the 64-bit load)
        insn(0xb7, 3, 0, 0, XDP_PASS), // r3 = XDP_PASS: no socket on the queue
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(0x95, 0, 0, 0, 0), // exit
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(program(7), want);
    }
}
