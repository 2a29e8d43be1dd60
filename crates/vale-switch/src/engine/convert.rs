//! The slow path between ports whose virtio-net header lengths differ: resize the
//! header, or finish the offloads in software (see `offload`).

use super::batch::Pkt;
use super::deliver::{Batch, Fill, put_bytes};
use crate::offload::{self, VnetHdr};
use crate::stats::DropReason;

/// Work space of the slow path between ports with different header lengths.
#[derive(Default)]
pub(super) struct Conv {
    pub(super) pkt: Vec<u8>,
    pub(super) out: Vec<u8>,
    pub(super) work: Vec<u8>,
}

/// What `convert` wrote: frames, bytes, and segments that did not fit (why, how many).
pub(super) type Converted = (u64, u64, Option<(DropReason, u64)>);

/// The slow path between ports whose virtio-net header lengths differ: gathers the
/// packet, then resizes its header (both have one) or finishes its offloads in software
/// (only the source has one: TCP segmentation, checksums) or prepends an empty header
/// (only the destination has one). Returns the frames and bytes written, and the
/// segments that did not fit (with why), when some did.
#[inline(never)]
pub(super) fn convert(
    b: &Batch<'_>,
    p: &Pkt,
    dst_hl: u16,
    conv: &mut Conv,
    fill: &mut Fill<'_>,
) -> Result<Converted, DropReason> {
    let Conv { pkt, out, work } = conv;
    pkt.clear();
    for f in b.sc.frags_of(p) {
        let start = pkt.len();
        pkt.resize(start + f.len as usize, 0);
        if !b.bufs.read(f.buf_idx, &mut pkt[start..]) {
            return Err(DropReason::BadBuf);
        }
    }
    let hl = (b.hdr_len as usize).min(pkt.len());
    let (h, frame) = pkt.split_at(hl);
    let vh = VnetHdr::parse(h);
    if dst_hl > 0 {
        out.clear();
        vh.write(out, dst_hl);
        out.extend_from_slice(frame);
        put_bytes(out, fill)?;
        return Ok((1, out.len() as u64, None));
    }
    let (mut frames, mut nbytes, mut err, mut lost) = (0u64, 0u64, None, 0u64);
    offload::resolve(&vh, frame, work, |f| match put_bytes(f, fill) {
        Ok(()) => {
            frames += 1;
            nbytes += f.len() as u64;
        }
        Err(r) => {
            err = Some(r);
            lost += 1;
        }
    })
    .map_err(|_| DropReason::BadOffload)?;
    match err {
        Some(r) if frames == 0 => Err(r),
        Some(r) => Ok((frames, nbytes, Some((r, lost)))),
        None => Ok((frames, nbytes, None)),
    }
}
