//! The offload parser: a virtio-net header and the frame behind it, as a port with
//! offloads (TAP, packet socket, vhost-user guest) hands them to the switch, resolved
//! for a port without (`offload::resolve`: checksum completion, TCP segmentation). No
//! panic, at most `MAX_SEGMENTS` segments, each no larger than the headers plus `gso_size`,
//! and segmentation never invents payload.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vale_switch::offload::{self, VnetHdr};

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (h, frame) = data.split_at(10);
    let hdr = VnetHdr::parse(h);
    let mut work = Vec::new();
    let (mut segs, mut bytes) = (0usize, 0usize);
    let r = offload::resolve(&hdr, frame, &mut work, |seg| {
        segs += 1;
        bytes += seg.len();
    });
    assert!(segs <= offload::MAX_SEGMENTS, "{segs} segments");
    if r.is_err() {
        return;
    }
    assert!(segs >= 1, "a resolved frame emits something");
    if hdr.is_plain() || segs == 1 {
        return;
    }
    // Segments: each repeats the headers (up to the TCP payload) and carries at most
    // gso_size bytes of it; together no more payload than the frame had.
    let mss = hdr.gso_size as usize;
    assert!(bytes <= frame.len() * segs, "segments outgrow the frame");
    assert!(bytes <= segs * (frame.len().min(mss + 14 + 8 + 60 + 60)) + frame.len());
    // The same input gives the same output.
    let mut again = Vec::new();
    let mut n = 0;
    offload::resolve(&hdr, frame, &mut again, |_| n += 1).expect("deterministic");
    assert_eq!(n, segs);
});
