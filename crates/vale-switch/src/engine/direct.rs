//! Direct ports: packets handed to an [`Egress`] as the sender's fragments instead of
//! being copied into the port's RX ring (valed's host and vhost-user ports).

use super::batch::Pkt;
use super::convert::{Conv, shift_offsets};
use super::deliver::{Batch, Target};
use crate::offload::VnetHdr;
use crate::stats::{DropReason, PortStats};
use crate::types::PortId;
use crate::vlan::{self, Edit};
use vale_abi::Frag;
use vale_abi::layout::MAX_FRAGS;

/// Where packets for *direct* ports go (see
/// [`Switch::set_direct`](super::Switch::set_direct)): instead of being copied into the
/// port's RX ring, each packet is handed over as the sender's fragments, to be written
/// out (valed writes them to the host port's interface with `writev`).
pub trait Egress {
    /// Sends one packet out of port `dst`, as if into its RX ring `ring` (the ring a
    /// copy would have gone to: the sender's TX ring modulo `dst`'s RX rings): `hdr`,
    /// then the fragments `frags`, views of
    /// the sender's buffers that borrow them for this call only. `hdr` is empty when
    /// sender and destination carry the same virtio-net header (it is then at the start
    /// of `frags`); otherwise it is the destination's header, converted from the
    /// sender's, and `frags` start after the sender's header. Returns false if the
    /// packet could not be sent (counted as `tx_error` on `dst`).
    fn send(&mut self, dst: PortId, ring: u16, hdr: &[u8], frags: &[Frag<'_>]) -> bool;
}

/// No direct ports: every destination gets copies in its RX ring.
pub struct NoEgress;

impl Egress for NoEgress {
    fn send(&mut self, _dst: PortId, _ring: u16, _hdr: &[u8], _frags: &[Frag<'_>]) -> bool {
        false
    }
}

/// Pass 2 for a direct destination: each packet handed to the egress as the sender's
/// fragments, in batch order.
#[inline(never)]
pub(super) fn deliver_direct(
    b: &Batch<'_>,
    t: Target<'_>,
    egress: &mut dyn Egress,
    conv: &mut Conv,
    st: &mut PortStats,
) {
    let (mut u, mut f) = (t.uq.head, b.flood.head);
    let dst_hl = t.port.hdr_len;
    // The RX ring a copy would take (`deliver_ring`'s choice).
    let ring = (b.ring as usize % t.port.rx.len().max(1)) as u16;
    let mode = t.mode(b);
    // The receiver's counts, published once when its copies are done.
    let mut ds = PortStats::default();
    let mut frags = [Frag::default(); MAX_FRAGS];
    while let Some(pi) = b.sc.next_merged(&mut u, &mut f) {
        // Not a member of the packet's VLAN: a flood that was never this port's copy.
        let Some(edit) = b.edit(pi, mode) else {
            continue;
        };
        let p = &b.sc.pkts[pi as usize];
        if t.monitor {
            ds.mon_copies += 1;
        } else {
            ds.rx_copies += 1;
        }
        if edit != Edit::Keep {
            let sent = send_edited(b, p, (t.id, ring), dst_hl, edit, egress, conv);
            match sent {
                Some(n) => {
                    ds.rx_packets += 1;
                    ds.rx_bytes += n;
                }
                None => {
                    ds.drops[DropReason::TxError as usize] += 1;
                    if !t.monitor {
                        st.copies_dropped += 1;
                    }
                }
            }
            continue;
        }
        let mut k = 0;
        let mut total = 0u64;
        for f in b.sc.frags_of(p) {
            // Validated in pass 0; `frag` checks the index and length again.
            let view = b.bufs.frag(f.buf_idx, 0, f.len as usize);
            if let (Some(view), Some(slot)) = (view, frags.get_mut(k)) {
                *slot = view;
                k += 1;
                total += f.len as u64;
            }
        }
        let mut ok = k == p.nfrags as usize;
        let mut hdr = [0u8; 16];
        let mut hl = 0;
        if ok && dst_hl != b.hdr_len {
            match direct_header(b, p, dst_hl, &mut frags[0]) {
                Some(h) => {
                    hdr = h;
                    hl = dst_hl as usize;
                    total = total - b.hdr_len as u64 + dst_hl as u64;
                }
                None => ok = false,
            }
        }
        if ok && egress.send(t.id, ring, &hdr[..hl], &frags[..k]) {
            ds.rx_packets += 1;
            ds.rx_bytes += total;
        } else {
            ds.drops[DropReason::TxError as usize] += 1;
            if !t.monitor {
                st.copies_dropped += 1;
            }
        }
    }
    t.port.counters.add(&ds);
}

/// A direct delivery whose VLAN tag changes: the packet gathered, its tag changed (and
/// its header's offsets with it), handed on from private memory. Returns the bytes
/// sent, or `None` if the egress refused it.
#[cold]
fn send_edited(
    b: &Batch<'_>,
    p: &Pkt,
    (dst, ring): (crate::types::PortId, u16),
    dst_hl: u16,
    edit: Edit,
    egress: &mut dyn Egress,
    conv: &mut Conv,
) -> Option<u64> {
    let Conv { pkt, out, tag, .. } = conv;
    pkt.clear();
    for f in b.sc.frags_of(p) {
        let start = pkt.len();
        pkt.resize(start + f.len as usize, 0);
        if !b.bufs.read(f.buf_idx, &mut pkt[start..]) {
            return None;
        }
    }
    let sh = b.hdr_len as usize;
    let (h, frame) = pkt.split_at_checked(sh)?;
    let mut vh = VnetHdr::parse(h);
    shift_offsets(&mut vh, vlan::delta(edit));
    tag.clear();
    let mut hdr = [0u8; 16];
    let hl = if dst_hl as usize == sh {
        if sh > 0 {
            vh.write(tag, dst_hl);
        }
        0
    } else {
        out.clear();
        vh.write(out, dst_hl);
        let n = out.len().min(16);
        hdr[..n].copy_from_slice(&out[..n]);
        n
    };
    vlan::apply(edit, frame, out);
    tag.extend_from_slice(out);
    let frags = [Frag::private(tag)];
    egress
        .send(dst, ring, &hdr[..hl], &frags)
        .then_some((hl + tag.len()) as u64)
}

/// The destination's header for a packet handed over directly between ports whose
/// header lengths differ: the sender's first 10 bytes (or zeros if it has none), with
/// `num_buffers` 1 in a 12-byte one. The frame follows the sender's header, which must
/// lie in the packet's `first` fragment (refused otherwise); `first` loses it.
#[inline]
fn direct_header(b: &Batch<'_>, p: &Pkt, dst_hl: u16, first: &mut Frag<'_>) -> Option<[u8; 16]> {
    let sh = b.hdr_len as usize;
    let mut hdr = [0u8; 16];
    if sh > 0 {
        let [w0, w1] = b
            .bufs
            .header_at(p.buf_idx, 0)
            .filter(|_| first.len() >= sh)?;
        hdr[..8].copy_from_slice(&w0.to_le_bytes());
        hdr[8..].copy_from_slice(&w1.to_le_bytes());
        hdr[10..].fill(0);
    }
    if dst_hl >= 12 {
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
    }
    *first = first.skip(sh)?;
    Some(hdr)
}
