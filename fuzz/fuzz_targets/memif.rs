//! memif (DPDK's and VPP's shared-memory interface): the control messages and valed's
//! server handshake, its C2S and S2C rings in a region the fuzzer wrote, and valed's own
//! region as a client under a server that scribbles on it (see
//! `valed::fuzzing::memif_handshake`, `memif_rings` and `memif_own` for what each
//! checks). The first byte picks which.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => valed::fuzzing::memif_handshake(rest),
        1 => valed::fuzzing::memif_rings(rest),
        _ => valed::fuzzing::memif_own(rest),
    }
});
