//! The netmap ioctl structs as the LD_PRELOAD library decodes them (`struct
//! nmreq_header` with its option list and a `struct nmreq_register` body, and the legacy
//! `struct nmreq`): no panic, options always refused, and every request to valed a
//! REGISTER makes survives the wire (JSON) unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for req in vale_netmap::fuzzing::fuzz_requests(data) {
        let bytes = serde_json::to_vec(&req).expect("a request encodes");
        let back: vale::proto::Request = serde_json::from_slice(&bytes).expect("and decodes");
        assert_eq!(back, req, "the request changed on the wire");
    }
});
