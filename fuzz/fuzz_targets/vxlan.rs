//! What the network sends a VXLAN uplink: datagrams through the decoder, the VTEP
//! learning table and the flow hash (`valed::fuzzing::vxlan_datagrams`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    valed::fuzzing::vxlan_datagrams(data);
});
