//! The control protocol as valed decodes it: one datagram from a client socket is a
//! JSON `Request` (`serde_json::from_slice`, as `control::conn` does). Any bytes: no
//! panic; a request that decodes encodes back to one that decodes the same, and its
//! port name goes through the name parser the registry uses. The client side's decoder
//! (`Response`, with `paged` replies appended) gets the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vale::proto::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        let bytes = serde_json::to_vec(&req).expect("a decoded request encodes");
        let back: Request = serde_json::from_slice(&bytes).expect("an encoded request decodes");
        assert_eq!(
            format!("{req:?}"),
            format!("{back:?}"),
            "round trip changed the request"
        );
        let _ = req.paged(Some("vale0:x".into()));
        valed::fuzzing::request_names(&req);
    }
    if let Ok(mut resp) = serde_json::from_slice::<Response>(data) {
        let _ = resp.next_page().map(str::len);
        let page = resp.clone();
        let _ = resp.append(page);
    }
});
