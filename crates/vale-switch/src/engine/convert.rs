//! The slow path between ports whose virtio-net header lengths differ: resize the
//! header, or finish the offloads in software (see `offload`).

use super::batch::Pkt;
use super::deliver::{Batch, Fill, put_bytes};
use crate::offload::{self, VnetHdr};
use crate::stats::DropReason;
use crate::vlan::{self, Edit};

/// Work space of the slow path between ports with different header lengths.
#[derive(Default)]
pub(super) struct Conv {
    pub(super) pkt: Vec<u8>,
    pub(super) out: Vec<u8>,
    pub(super) work: Vec<u8>,
    /// A frame with its VLAN tag changed.
    pub(super) tag: Vec<u8>,
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
/// (only the destination has one); and changes its VLAN tag as `edit` says. Returns the
/// frames and bytes written and the segments that did not fit, or why the copy was
/// refused before any frame was made.
#[inline(never)]
pub(super) fn convert(
    b: &Batch<'_>,
    p: &Pkt,
    dst_hl: u16,
    edit: Edit,
    conv: &mut Conv,
    fill: &mut Fill<'_>,
) -> Result<Converted, DropReason> {
    let Conv {
        pkt,
        out,
        work,
        tag,
    } = conv;
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
    let mut vh = VnetHdr::parse(h);
    if dst_hl > 0 {
        out.clear();
        let frame = if edit == Edit::Keep {
            frame
        } else {
            // The offsets the offloads name move with the tag.
            shift_offsets(&mut vh, vlan::delta(edit));
            vlan::apply(edit, frame, tag);
            &tag[..]
        };
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
    // Offloads are finished on the frame as it came (the segmenter parses it), then
    // each segment gets its tag changed.
    offload::resolve(&vh, frame, work, |f| {
        match put_bytes(
            if edit == Edit::Keep {
                f
            } else {
                vlan::apply(edit, f, tag);
                tag
            },
            fill,
        ) {
            Ok(()) => {
                c.frames += 1;
                c.bytes += f.len() as u64;
            }
            Err(r) => {
                c.lost_why = Some(r);
                c.lost += 1;
            }
        }
    })
    .map_err(|_| DropReason::BadOffload)?;
    Ok(c)
}

/// Moves a virtio-net header's frame offsets (checksum start, header length) by `by`
/// bytes, for a tag put in or taken out in front of them.
pub(super) fn shift_offsets(vh: &mut VnetHdr, by: i32) {
    let add = |x: u16| (x as i32 + by).clamp(0, u16::MAX as i32) as u16;
    if vh.flags & offload::F_NEEDS_CSUM != 0 {
        vh.csum_start = add(vh.csum_start);
    }
    if vh.hdr_len != 0 {
        vh.hdr_len = add(vh.hdr_len);
    }
}
