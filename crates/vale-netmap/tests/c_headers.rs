//! Our C headers (`include/net/netmap.h`, `include/net/netmap_user.h`) against the
//! Rust side, byte for byte: `tests/c/layout.c` prints every size, offset and value
//! the headers declare, and this compares them with `src/abi.rs` and
//! `vale_abi::layout`. Then the C checks themselves (`tests/c/compile_all.sh`) must
//! pass. Both need a C compiler (`$CC`, else `cc`); without one they print SKIP.

use std::collections::HashMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use vale_netmap::abi;

use vale_abi::layout;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_headers")
        .join(name);
    std::fs::create_dir_all(&dir).expect("scratch directory under CARGO_TARGET_TMPDIR");
    dir
}

/// The C compiler to use, or `None` after counting a SKIP for `test` (in the file
/// `$VALE_SKIP_LOG`, which scripts/test counts). Under `VALE_TEST_STRICT=1` (.ci/run,
/// which installs gcc) a missing compiler fails the test instead.
fn c_compiler(test: &str) -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let found = Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let reason = format!("{test}: no C compiler `{cc}` (apt-get install gcc, or set CC)");
        if std::env::var("VALE_TEST_STRICT").is_ok_and(|v| v == "1") {
            panic!("{reason}; .ci/run installs it, so its absence is a failure here");
        }
        eprintln!("SKIP: {reason}");
        if let Some(path) = std::env::var_os("VALE_SKIP_LOG") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
            {
                let _ = writeln!(f, "{reason}");
            }
        }
    }
    found.then_some(cc)
}

/// "kind name" -> value, from layout.c's output lines "kind name value".
fn c_facts(cc: &str) -> HashMap<String, u64> {
    let exe = scratch("layout").join("layout");
    let include = manifest_dir().join("include");
    let source = manifest_dir().join("tests/c/layout.c");
    let built = Command::new(cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run the C compiler");
    assert!(
        built.status.success(),
        "{cc} failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    // layout.c exits 1 when a value differs from the numbers it knows; the
    // comparison below names every difference, so only its output matters here.
    let ran = Command::new(&exe).output().expect("run layout");
    let text = String::from_utf8(ran.stdout).expect("layout prints ASCII");
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let (kind, name, value) = (it.next()?, it.next()?, it.next()?);
            Some((format!("{kind} {name}"), value.parse().ok()?))
        })
        .collect()
}

struct Compare {
    facts: HashMap<String, u64>,
    wrong: Vec<String>,
    checked: usize,
}

impl Compare {
    fn fact(&mut self, kind: &str, name: &str, rust: u64) {
        self.checked += 1;
        let key = format!("{kind} {name}");
        match self.facts.get(&key) {
            Some(&c) if c == rust => {}
            Some(&c) => self.wrong.push(format!("{key}: C header {c}, Rust {rust}")),
            None => self.wrong.push(format!("{key}: not printed by layout.c")),
        }
    }
}

macro_rules! size {
    ($cmp:expr, $c:literal, $t:ty) => {
        $cmp.fact("size", $c, size_of::<$t>() as u64)
    };
}

macro_rules! offsets {
    ($cmp:expr, $c:literal, $t:ty, [$($f:ident),* $(,)?]) => {
        $( $cmp.fact("offset", concat!($c, ".", stringify!($f)), offset_of!($t, $f) as u64); )*
    };
}

macro_rules! consts {
    ($cmp:expr, [$($c:literal = $v:expr),* $(,)?]) => {
        $( $cmp.fact("const", $c, u64::from($v)); )*
    };
}

#[test]
fn the_c_headers_match_the_rust_layouts_and_values() {
    let Some(cc) = c_compiler("the_c_headers_match_the_rust_layouts_and_values") else {
        return;
    };
    let mut cmp = Compare {
        facts: c_facts(&cc),
        wrong: Vec::new(),
        checked: 0,
    };

    size!(cmp, "netmap_slot", layout::NetmapSlot);
    offsets!(
        cmp,
        "netmap_slot",
        layout::NetmapSlot,
        [buf_idx, len, flags, ptr]
    );
    size!(cmp, "netmap_ring", layout::NetmapRing);
    cmp.fact(
        "align",
        "netmap_ring",
        align_of::<layout::NetmapRing>() as u64,
    );
    offsets!(
        cmp,
        "netmap_ring",
        layout::NetmapRing,
        [
            buf_ofs,
            num_slots,
            nr_buf_size,
            ringid,
            dir,
            head,
            cur,
            tail,
            flags,
            ts,
            offset_mask,
            buf_align,
            sem,
        ]
    );
    cmp.fact(
        "offset",
        "netmap_ring.slot",
        layout::NETMAP_RING_SIZE as u64,
    );
    size!(cmp, "netmap_if", layout::NetmapIf);
    offsets!(
        cmp,
        "netmap_if",
        layout::NetmapIf,
        [
            ni_name,
            ni_version,
            ni_flags,
            ni_tx_rings,
            ni_rx_rings,
            ni_bufs_head,
            ni_host_tx_rings,
            ni_host_rx_rings,
            ni_spare1,
        ]
    );
    cmp.fact(
        "offset",
        "netmap_if.ring_ofs",
        layout::off::IF_RING_OFS as u64,
    );
    size!(cmp, "nm_csb_atok", layout::CsbAtok);
    offsets!(
        cmp,
        "nm_csb_atok",
        layout::CsbAtok,
        [head, cur, appl_need_kick, sync_flags]
    );
    size!(cmp, "nm_csb_ktoa", layout::CsbKtoa);
    offsets!(
        cmp,
        "nm_csb_ktoa",
        layout::CsbKtoa,
        [hwcur, hwtail, kern_need_kick]
    );

    size!(cmp, "nmreq_header", abi::NmreqHeader);
    offsets!(
        cmp,
        "nmreq_header",
        abi::NmreqHeader,
        [
            nr_version,
            nr_reqtype,
            nr_reserved,
            nr_name,
            nr_options,
            nr_body,
        ]
    );
    size!(cmp, "nmreq_register", abi::NmreqRegister);
    offsets!(
        cmp,
        "nmreq_register",
        abi::NmreqRegister,
        [
            nr_offset,
            nr_memsize,
            nr_tx_slots,
            nr_rx_slots,
            nr_tx_rings,
            nr_rx_rings,
            nr_host_tx_rings,
            nr_host_rx_rings,
            nr_mem_id,
            nr_ringid,
            nr_mode,
            nr_extra_bufs,
            nr_flags,
        ]
    );
    size!(cmp, "nmreq_option", abi::NmreqOption);
    offsets!(
        cmp,
        "nmreq_option",
        abi::NmreqOption,
        [nro_next, nro_reqtype, nro_status, nro_size]
    );
    size!(cmp, "nmreq_port_info_get", abi::NmreqPortInfoGet);
    offsets!(
        cmp,
        "nmreq_port_info_get",
        abi::NmreqPortInfoGet,
        [
            nr_memsize,
            nr_tx_slots,
            nr_rx_slots,
            nr_tx_rings,
            nr_rx_rings,
            nr_host_tx_rings,
            nr_host_rx_rings,
            nr_mem_id,
        ]
    );
    size!(cmp, "nmreq_port_hdr", abi::NmreqPortHdr);
    offsets!(cmp, "nmreq_port_hdr", abi::NmreqPortHdr, [nr_hdr_len]);
    size!(cmp, "nmreq_vale_list", abi::NmreqValeList);
    offsets!(
        cmp,
        "nmreq_vale_list",
        abi::NmreqValeList,
        [nr_bridge_idx, nr_port_idx]
    );
    size!(cmp, "nmreq_pools_info", abi::NmreqPoolsInfo);
    offsets!(
        cmp,
        "nmreq_pools_info",
        abi::NmreqPoolsInfo,
        [
            nr_memsize,
            nr_mem_id,
            nr_if_pool_offset,
            nr_if_pool_objtotal,
            nr_if_pool_objsize,
            nr_ring_pool_offset,
            nr_ring_pool_objtotal,
            nr_ring_pool_objsize,
            nr_buf_pool_offset,
            nr_buf_pool_objtotal,
            nr_buf_pool_objsize,
        ]
    );
    size!(cmp, "nmreq", abi::Nmreq);
    offsets!(
        cmp,
        "nmreq",
        abi::Nmreq,
        [
            nr_name,
            nr_version,
            nr_offset,
            nr_memsize,
            nr_tx_slots,
            nr_rx_slots,
            nr_tx_rings,
            nr_rx_rings,
            nr_ringid,
            nr_cmd,
            nr_arg1,
            nr_arg2,
            nr_arg3,
            nr_flags,
            spare2,
        ]
    );

    consts!(
        cmp,
        [
            "NETMAP_MIN_API" = abi::NETMAP_MIN_API,
            "NETMAP_MAX_API" = abi::NETMAP_MAX_API,
            "NETMAP_API" = abi::NETMAP_LEGACY_MIN_API,
            "NIOCCTRL" = abi::NIOCCTRL,
            "NIOCTXSYNC" = abi::NIOCTXSYNC,
            "NIOCRXSYNC" = abi::NIOCRXSYNC,
            "NIOCGINFO" = abi::NIOCGINFO,
            "NIOCREGIF" = abi::NIOCREGIF,
            "NETMAP_REQ_REGISTER" = abi::REQ_REGISTER,
            "NETMAP_REQ_PORT_INFO_GET" = abi::REQ_PORT_INFO_GET,
            "NETMAP_REQ_VALE_ATTACH" = abi::REQ_VALE_ATTACH,
            "NETMAP_REQ_VALE_DETACH" = abi::REQ_VALE_DETACH,
            "NETMAP_REQ_VALE_LIST" = abi::REQ_VALE_LIST,
            "NETMAP_REQ_PORT_HDR_SET" = abi::REQ_PORT_HDR_SET,
            "NETMAP_REQ_PORT_HDR_GET" = abi::REQ_PORT_HDR_GET,
            "NETMAP_REQ_VALE_NEWIF" = abi::REQ_VALE_NEWIF,
            "NETMAP_REQ_VALE_DELIF" = abi::REQ_VALE_DELIF,
            "NETMAP_REQ_VALE_POLLING_ENABLE" = abi::REQ_VALE_POLLING_ENABLE,
            "NETMAP_REQ_VALE_POLLING_DISABLE" = abi::REQ_VALE_POLLING_DISABLE,
            "NETMAP_REQ_POOLS_INFO_GET" = abi::REQ_POOLS_INFO_GET,
            "NETMAP_REQ_SYNC_KLOOP_START" = abi::REQ_SYNC_KLOOP_START,
            "NETMAP_REQ_SYNC_KLOOP_STOP" = abi::REQ_SYNC_KLOOP_STOP,
            "NETMAP_REQ_CSB_ENABLE" = abi::REQ_CSB_ENABLE,
            "NR_REG_DEFAULT" = abi::NR_REG_DEFAULT,
            "NR_REG_ALL_NIC" = abi::NR_REG_ALL_NIC,
            "NR_REG_SW" = abi::NR_REG_SW,
            "NR_REG_NIC_SW" = abi::NR_REG_NIC_SW,
            "NR_REG_ONE_NIC" = abi::NR_REG_ONE_NIC,
            "NR_REG_PIPE_MASTER" = abi::NR_REG_PIPE_MASTER,
            "NR_REG_PIPE_SLAVE" = abi::NR_REG_PIPE_SLAVE,
            "NR_REG_NULL" = abi::NR_REG_NULL,
            "NR_REG_ONE_SW" = abi::NR_REG_ONE_SW,
            "NR_REG_MASK" = abi::NR_REG_MASK,
            "NR_MONITOR_TX" = abi::NR_MONITOR_TX,
            "NR_MONITOR_RX" = abi::NR_MONITOR_RX,
            "NR_ZCOPY_MON" = abi::NR_ZCOPY_MON,
            "NR_EXCLUSIVE" = abi::NR_EXCLUSIVE,
            "NR_RX_RINGS_ONLY" = abi::NR_RX_RINGS_ONLY,
            "NR_TX_RINGS_ONLY" = abi::NR_TX_RINGS_ONLY,
            "NR_ACCEPT_VNET_HDR" = abi::NR_ACCEPT_VNET_HDR,
            "NR_DO_RX_POLL" = abi::NR_DO_RX_POLL,
            "NR_NO_TX_POLL" = abi::NR_NO_TX_POLL,
            "NETMAP_HW_RING" = abi::NETMAP_HW_RING,
            "NETMAP_SW_RING" = abi::NETMAP_SW_RING,
            "NETMAP_NO_TX_POLL" = abi::NETMAP_NO_TX_POLL,
            "NETMAP_DO_RX_POLL" = abi::NETMAP_DO_RX_POLL,
            "NETMAP_RING_MASK" = abi::NETMAP_RING_MASK,
            "NI_PRIV_MEM" = abi::NI_PRIV_MEM,
            "NS_BUF_CHANGED" = layout::NS_BUF_CHANGED,
            "NS_REPORT" = layout::NS_REPORT,
            "NS_FORWARD" = layout::NS_FORWARD,
            "NS_NO_LEARN" = layout::NS_NO_LEARN,
            "NS_INDIRECT" = layout::NS_INDIRECT,
            "NS_MOREFRAG" = layout::NS_MOREFRAG,
            "NS_PORT_SHIFT" = layout::NS_RFRAGS_SHIFT,
            "NETMAP_MAX_FRAGS" = layout::MAX_FRAGS as u64,
        ]
    );

    assert!(
        cmp.wrong.is_empty(),
        "{} of {} facts differ between the C headers and the Rust side:\n  {}",
        cmp.wrong.len(),
        cmp.checked,
        cmp.wrong.join("\n  ")
    );
}

#[test]
fn the_c_header_checks_build_clean_and_pass() {
    if c_compiler("the_c_header_checks_build_clean_and_pass").is_none() {
        return;
    }
    let script = manifest_dir().join("tests/c/compile_all.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(scratch("compile_all"))
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{} failed:\n{}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
