//! vhost-user descriptor chains: the split-ring walker of valed's vhost-user datapath
//! (guest TX chains read, RX buffers filled) over a guest memory the fuzzer wrote whole:
//! descriptor tables, avail and used rings, buffers. See `valed::fuzzing::vhost_chains`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| valed::fuzzing::vhost_chains(data));
