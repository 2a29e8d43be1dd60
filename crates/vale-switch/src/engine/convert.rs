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

/// What `convert` wrote for one copy.
pub(super) struct Converted {
    /// Frames written (segments, if it was segmented).
    pub(super) frames: u64,
    pub(super) bytes: u64,
    /// Segments that did not fit, and why (the last reason).
    pub(super) lost: u64,
    pub(super) lost_why: Option<DropReason>,
}

/// The slow path between ports whose virtio-net header lengths differ: gathers the
/// packet, then resizes its header (both have one) or finishes its offloads in software
/// (only the source has one: TCP segmentation, checksums) or prepends an empty header
/// (only the destination has one). Returns the frames and bytes written and the
/// segments that did not fit, or why the copy was refused before any frame was made.
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
            // Checked in pass 0, so unreachable; a receiver's reason all the same (the
            // sender's law has counted the frame as forwarded already).
            return Err(DropReason::BadOffload);
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
        return Ok(Converted {
            frames: 1,
            bytes: out.len() as u64,
            lost: 0,
            lost_why: None,
        });
    }
    let mut c = Converted {
        frames: 0,
        bytes: 0,
        lost: 0,
        lost_why: None,
    };
    offload::resolve(&vh, frame, work, |f| match put_bytes(f, fill) {
        Ok(()) => {
            c.frames += 1;
            c.bytes += f.len() as u64;
        }
        Err(r) => {
            c.lost_why = Some(r);
            c.lost += 1;
        }
    })
    .map_err(|_| DropReason::BadOffload)?;
    Ok(c)
}
