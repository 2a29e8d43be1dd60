//! memif (DPDK's and VPP's shared-memory interface): the control messages and valed's
//! server handshake, then its C2S and S2C rings in a region the fuzzer wrote (see
//! `valed::fuzzing::memif_handshake` and `memif_rings` for what each checks). The first
//! byte picks which.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        valed::fuzzing::memif_handshake(rest);
    } else {
        valed::fuzzing::memif_rings(rest);
    }
});
