//! netmap's device protocol as programs see it: ioctl numbers, request types, modes and
//! flags, and the request structs with their exact x86-64 Linux layout (asserted below).
//! Written from the interface facts (names, values, layouts), none of netmap's code.

use core::mem::{offset_of, size_of};

/// API versions NIOCCTRL accepts.
pub const NETMAP_MIN_API: u16 = 14;
pub const NETMAP_MAX_API: u16 = 15;
/// The legacy NIOCREGIF/NIOCGINFO path refuses versions below this.
pub const NETMAP_LEGACY_MIN_API: u32 = 14;

/// `_IOWR('i', 151, struct nmreq_header)`.
pub const NIOCCTRL: u32 = 0xc058_6997;
/// `_IO('i', 148)`.
pub const NIOCTXSYNC: u32 = 0x6994;
/// `_IO('i', 149)`.
pub const NIOCRXSYNC: u32 = 0x6995;
/// `_IOWR('i', 145, struct nmreq)` (legacy).
pub const NIOCGINFO: u32 = 0xc03c_6991;
/// `_IOWR('i', 146, struct nmreq)` (legacy).
pub const NIOCREGIF: u32 = 0xc03c_6992;

// nmreq_header.nr_reqtype
pub const REQ_REGISTER: u16 = 1;
pub const REQ_PORT_INFO_GET: u16 = 2;
pub const REQ_VALE_ATTACH: u16 = 3;
pub const REQ_VALE_DETACH: u16 = 4;
pub const REQ_VALE_LIST: u16 = 5;
pub const REQ_PORT_HDR_SET: u16 = 6;
pub const REQ_PORT_HDR_GET: u16 = 7;
pub const REQ_VALE_NEWIF: u16 = 8;
pub const REQ_VALE_DELIF: u16 = 9;
pub const REQ_VALE_POLLING_ENABLE: u16 = 10;
pub const REQ_VALE_POLLING_DISABLE: u16 = 11;
pub const REQ_POOLS_INFO_GET: u16 = 12;
pub const REQ_SYNC_KLOOP_START: u16 = 13;
pub const REQ_SYNC_KLOOP_STOP: u16 = 14;
pub const REQ_CSB_ENABLE: u16 = 15;

/// `nr_mode` (new API; the low 4 bits of the legacy `nr_flags`).
pub const NR_REG_DEFAULT: u32 = 0;
pub const NR_REG_ALL_NIC: u32 = 1;
pub const NR_REG_SW: u32 = 2;
pub const NR_REG_NIC_SW: u32 = 3;
pub const NR_REG_ONE_NIC: u32 = 4;
pub const NR_REG_PIPE_MASTER: u32 = 5;
pub const NR_REG_PIPE_SLAVE: u32 = 6;
pub const NR_REG_NULL: u32 = 7;
pub const NR_REG_ONE_SW: u32 = 8;
pub const NR_REG_MASK: u32 = 0xf;

// nr_flags
pub const NR_MONITOR_TX: u64 = 0x100;
pub const NR_MONITOR_RX: u64 = 0x200;
pub const NR_ZCOPY_MON: u64 = 0x400;
pub const NR_EXCLUSIVE: u64 = 0x800;
pub const NR_RX_RINGS_ONLY: u64 = 0x2000;
pub const NR_TX_RINGS_ONLY: u64 = 0x4000;
pub const NR_ACCEPT_VNET_HDR: u64 = 0x8000;
pub const NR_DO_RX_POLL: u64 = 0x10000;
pub const NR_NO_TX_POLL: u64 = 0x20000;

/// Legacy `nr_ringid` bits.
pub const NETMAP_HW_RING: u16 = 0x4000;
pub const NETMAP_SW_RING: u16 = 0x2000;
pub const NETMAP_NO_TX_POLL: u16 = 0x1000;
pub const NETMAP_DO_RX_POLL: u16 = 0x8000;
pub const NETMAP_RING_MASK: u16 = 0x0fff;

/// `ni_flags`: the port has its own memory.
pub const NI_PRIV_MEM: u32 = 0x1;

/// `struct nmreq_header` (88 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NmreqHeader {
    pub nr_version: u16,
    pub nr_reqtype: u16,
    pub nr_reserved: u32,
    pub nr_name: [u8; 64],
    pub nr_options: u64,
    pub nr_body: u64,
}

/// `struct nmreq_register` (56 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NmreqRegister {
    pub nr_offset: u64,
    pub nr_memsize: u64,
    pub nr_tx_slots: u32,
    pub nr_rx_slots: u32,
    pub nr_tx_rings: u16,
    pub nr_rx_rings: u16,
    pub nr_host_tx_rings: u16,
    pub nr_host_rx_rings: u16,
    pub nr_mem_id: u16,
    pub nr_ringid: u16,
    pub nr_mode: u32,
    pub nr_extra_bufs: u32,
    pub nr_pad: u32,
    pub nr_flags: u64,
}

/// `struct nmreq_option` (24 bytes); an option's body follows it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NmreqOption {
    pub nro_next: u64,
    pub nro_reqtype: u32,
    pub nro_status: u32,
    pub nro_size: u64,
}

/// `struct nmreq_port_info_get` (32 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NmreqPortInfoGet {
    pub nr_memsize: u64,
    pub nr_tx_slots: u32,
    pub nr_rx_slots: u32,
    pub nr_tx_rings: u16,
    pub nr_rx_rings: u16,
    pub nr_host_tx_rings: u16,
    pub nr_host_rx_rings: u16,
    pub nr_mem_id: u16,
    pub pad: [u16; 3],
}

/// `struct nmreq_port_hdr` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NmreqPortHdr {
    pub nr_hdr_len: u32,
    pub pad: u32,
}

/// `struct nmreq_vale_list` (8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NmreqValeList {
    pub nr_bridge_idx: u16,
    pub pad: u16,
    pub nr_port_idx: u32,
}

/// `struct nmreq_pools_info` (64 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NmreqPoolsInfo {
    pub nr_memsize: u64,
    pub nr_mem_id: u16,
    pub pad: [u16; 3],
    pub nr_if_pool_offset: u64,
    pub nr_if_pool_objtotal: u32,
    pub nr_if_pool_objsize: u32,
    pub nr_ring_pool_offset: u64,
    pub nr_ring_pool_objtotal: u32,
    pub nr_ring_pool_objsize: u32,
    pub nr_buf_pool_offset: u64,
    pub nr_buf_pool_objtotal: u32,
    pub nr_buf_pool_objsize: u32,
}

/// Legacy `struct nmreq` (60 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Nmreq {
    pub nr_name: [u8; 16],
    pub nr_version: u32,
    pub nr_offset: u32,
    pub nr_memsize: u32,
    pub nr_tx_slots: u32,
    pub nr_rx_slots: u32,
    pub nr_tx_rings: u16,
    pub nr_rx_rings: u16,
    pub nr_ringid: u16,
    pub nr_cmd: u16,
    pub nr_arg1: u16,
    pub nr_arg2: u16,
    pub nr_arg3: u32,
    pub nr_flags: u32,
    pub spare2: u32,
}

/// Bytes of the body a request type carries (0: none), as netmap's `nmreq_size_by_type`
/// counts them: NIOCCTRL fails with EINVAL when a body is missing where one is expected,
/// or present where none is (DELIF, SYNC_KLOOP_STOP, CSB_ENABLE, unknown types).
pub fn body_size(reqtype: u16) -> usize {
    match reqtype {
        REQ_REGISTER => size_of::<NmreqRegister>(),
        REQ_PORT_INFO_GET => size_of::<NmreqPortInfoGet>(),
        REQ_VALE_ATTACH => 64, // nmreq_vale_attach: a nmreq_register, then port_index
        REQ_VALE_DETACH => 8,  // nmreq_vale_detach: port_index
        REQ_VALE_LIST => size_of::<NmreqValeList>(),
        REQ_PORT_HDR_SET | REQ_PORT_HDR_GET => size_of::<NmreqPortHdr>(),
        REQ_VALE_NEWIF => 16, // nmreq_vale_newif: slots, rings, mem id
        REQ_VALE_POLLING_ENABLE | REQ_VALE_POLLING_DISABLE => 16, // nmreq_vale_polling
        REQ_POOLS_INFO_GET => size_of::<NmreqPoolsInfo>(),
        REQ_SYNC_KLOOP_START => 8, // nmreq_sync_kloop_start: sleep_us
        _ => 0,
    }
}

/// Bytes of a `netmap_if` with room for `tx` and `rx` rings and their host
/// placeholders: 56, then one `ssize_t` per ring.
pub fn netmap_if_bytes(tx: u16, rx: u16) -> usize {
    vale_abi::layout::NETMAP_IF_SIZE + 8 * (tx as usize + 1 + rx as usize + 1)
}

const _: () = {
    assert!(size_of::<NmreqHeader>() == 88);
    assert!(offset_of!(NmreqHeader, nr_name) == 8);
    assert!(offset_of!(NmreqHeader, nr_options) == 72);
    assert!(offset_of!(NmreqHeader, nr_body) == 80);
    assert!(size_of::<NmreqRegister>() == 56);
    assert!(offset_of!(NmreqRegister, nr_tx_slots) == 16);
    assert!(offset_of!(NmreqRegister, nr_tx_rings) == 24);
    assert!(offset_of!(NmreqRegister, nr_host_tx_rings) == 28);
    assert!(offset_of!(NmreqRegister, nr_mem_id) == 32);
    assert!(offset_of!(NmreqRegister, nr_ringid) == 34);
    assert!(offset_of!(NmreqRegister, nr_mode) == 36);
    assert!(offset_of!(NmreqRegister, nr_extra_bufs) == 40);
    assert!(offset_of!(NmreqRegister, nr_flags) == 48);
    assert!(size_of::<NmreqOption>() == 24);
    assert!(offset_of!(NmreqOption, nro_status) == 12);
    assert!(size_of::<NmreqPortInfoGet>() == 32);
    assert!(offset_of!(NmreqPortInfoGet, nr_mem_id) == 24);
    assert!(size_of::<NmreqPortHdr>() == 8);
    assert!(size_of::<NmreqValeList>() == 8);
    assert!(offset_of!(NmreqValeList, nr_port_idx) == 4);
    assert!(size_of::<NmreqPoolsInfo>() == 64);
    assert!(offset_of!(NmreqPoolsInfo, nr_if_pool_offset) == 16);
    assert!(offset_of!(NmreqPoolsInfo, nr_ring_pool_offset) == 32);
    assert!(offset_of!(NmreqPoolsInfo, nr_buf_pool_offset) == 48);
    assert!(size_of::<Nmreq>() == 60);
    assert!(offset_of!(Nmreq, nr_version) == 16);
    assert!(offset_of!(Nmreq, nr_tx_rings) == 36);
    assert!(offset_of!(Nmreq, nr_ringid) == 40);
    assert!(offset_of!(Nmreq, nr_cmd) == 42);
    assert!(offset_of!(Nmreq, nr_arg2) == 46);
    assert!(offset_of!(Nmreq, nr_arg3) == 48);
    assert!(offset_of!(Nmreq, nr_flags) == 52);
    // The ioctl numbers are _IOWR/_IO of these sizes (Linux's asm-generic encoding).
    assert!(NIOCCTRL == (3 << 30) | ((size_of::<NmreqHeader>() as u32) << 16) | (0x69 << 8) | 151);
    assert!(NIOCREGIF == (3 << 30) | ((size_of::<Nmreq>() as u32) << 16) | (0x69 << 8) | 146);
    assert!(NIOCGINFO == (3 << 30) | ((size_of::<Nmreq>() as u32) << 16) | (0x69 << 8) | 145);
    assert!(NIOCTXSYNC == (0x69 << 8) | 148);
    assert!(NIOCRXSYNC == (0x69 << 8) | 149);
};

/// A NUL-terminated name in a fixed array, as UTF-8 (`None` if it is not). The last
/// byte is a NUL whatever the program wrote there, as netmap writes one before it reads
/// the name: a name that fills the array is cut by one byte.
pub fn name_of(raw: &[u8]) -> Option<&str> {
    let raw = &raw[..raw.len().saturating_sub(1)];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    std::str::from_utf8(&raw[..end]).ok()
}

/// `name` cut to at most `n` bytes (at a character boundary), as strlcpy cuts it.
pub fn cut(name: &str, n: usize) -> &str {
    let mut end = name.len().min(n);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// `name` into a fixed array, NUL-padded (false if it does not fit with its NUL).
pub fn put_name(raw: &mut [u8], name: &str) -> bool {
    if name.len() >= raw.len() {
        return false;
    }
    raw.fill(0);
    raw[..name.len()].copy_from_slice(name.as_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_to_their_nul_and_written_padded() {
        let mut raw = [0xa5u8; 16];
        assert!(put_name(&mut raw, "vale0:a"));
        assert_eq!(&raw[7..], &[0u8; 9]);
        assert_eq!(name_of(&raw), Some("vale0:a"));
        assert!(
            !put_name(&mut raw, "0123456789abcdef"),
            "no room for the NUL"
        );
        assert_eq!(
            name_of(&[b'x'; 4]),
            Some("xxx"),
            "no NUL: the last byte is one"
        );
        assert_eq!(name_of(&[0xff, 0]), None);
        assert_eq!(cut("vale0:0123456789abcdef", 15), "vale0:012345678");
        assert_eq!(cut("vale0:é", 7), "vale0:", "not inside a character");
    }

    #[test]
    fn bodies_are_expected_where_netmap_expects_them() {
        for t in [REQ_VALE_DELIF, REQ_SYNC_KLOOP_STOP, REQ_CSB_ENABLE, 0, 99] {
            assert_eq!(body_size(t), 0, "type {t} carries no body");
        }
        let sized = [
            (REQ_REGISTER, 56),
            (REQ_PORT_INFO_GET, 32),
            (REQ_VALE_ATTACH, 64),
            (REQ_VALE_DETACH, 8),
            (REQ_VALE_LIST, 8),
            (REQ_PORT_HDR_SET, 8),
            (REQ_PORT_HDR_GET, 8),
            (REQ_VALE_NEWIF, 16),
            (REQ_VALE_POLLING_ENABLE, 16),
            (REQ_VALE_POLLING_DISABLE, 16),
            (REQ_POOLS_INFO_GET, 64),
            (REQ_SYNC_KLOOP_START, 8),
        ];
        for (t, n) in sized {
            assert_eq!(body_size(t), n, "type {t}");
        }
    }

    #[test]
    fn an_if_has_room_for_its_rings_and_host_placeholders() {
        assert_eq!(netmap_if_bytes(1, 1), 56 + 8 * 4);
        assert_eq!(netmap_if_bytes(2, 3), 56 + 8 * 7);
    }
}
