//! The counters of a driven port (frames each way between its peer and its switch
//! port, and what was lost there), as relaxed atomics `vale-ctl list` reads at any time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One driven port's counters. "from host" is peer -> switch, "to host" switch -> peer,
/// whatever the peer is (an interface, a VM, a socket).
#[derive(Default)]
pub struct PortCounters {
    pub from_host: AtomicU64,
    pub from_host_bytes: AtomicU64,
    pub to_host: AtomicU64,
    pub to_host_bytes: AtomicU64,
    pub truncated: AtomicU64,
    pub write_errors: AtomicU64,
    pub read_errors: AtomicU64,
    pub bad_offload: AtomicU64,
    /// Frames the kernel dropped on an AF_XDP port's rings (received ones with no room
    /// or larger than a UMEM frame, sent descriptors it refused as invalid), or on an
    /// AF_PACKET port's socket (received ones with its ring or buffer full).
    pub kernel_drops: AtomicU64,
    /// Frames the switch sent while no peer was there to take them (a QEMU stream port
    /// whose VM hung up and has not come back), dropped.
    pub no_peer: AtomicU64,
    /// memif: descriptors naming bytes outside the client's regions (the frame or the
    /// buffer skipped).
    pub bad_desc: AtomicU64,
    /// memif: frames whose descriptor chain was longer than any frame, dropped.
    pub chain_too_long: AtomicU64,
    /// memif: peers (clients, or the server of a client port) that went away, or were
    /// cut off for what they did, after connecting; valed removing the port is not one.
    pub peer_disconnects: AtomicU64,
    /// vhost-user: times the frontend truncated guest memory under valed (a SIGBUS
    /// caught, `sys::sigbus`); each time it is cut off.
    pub memory_faults: AtomicU64,
    /// VXLAN: received datagrams dropped, by reason (`vale::proto::HostCounters`).
    pub vxlan_too_short: AtomicU64,
    pub vxlan_no_i_flag: AtomicU64,
    pub vxlan_reserved: AtomicU64,
    pub vxlan_foreign_vni: AtomicU64,
    /// VXLAN: datagrams another uplink of the socket read for this one while its
    /// inbox was full.
    pub vxlan_queue_full: AtomicU64,
    /// VXLAN: frames of the uplink's own VNI tagged with a mapped VNI's VLAN.
    pub vxlan_tagged_mapped: AtomicU64,
    /// Frames longer than the peer takes: a VXLAN datagram the underlay refused as
    /// larger than its MTU, a frame an interface refused (`EMSGSIZE`) or one longer
    /// than an AF_XDP port's interface MTU allows.
    pub too_big: AtomicU64,
    /// VXLAN: copies of a replicated frame one remote did not get.
    pub replica_drops: AtomicU64,
    /// VXLAN: datagrams sent.
    pub vxlan_datagrams: AtomicU64,
    /// VXLAN: trains of datagrams sent with one UDP GSO send, and coalesced reads
    /// (UDP GRO) received.
    pub gso_sends: AtomicU64,
    pub gro_reads: AtomicU64,
    /// The interface was deleted under the port (a TAP's).
    pub gone: AtomicBool,
}

/// Adds to a counter only the forwarding thread writes: a plain load and store, not a
/// locked read-modify-write.
#[inline]
pub fn bump(c: &AtomicU64, by: u64) {
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl PortCounters {
    /// One frame of `bytes` from the peer into the switch.
    #[inline]
    pub fn count_in(&self, bytes: usize) {
        self.count_in_many(1, bytes as u64);
    }

    /// `frames` frames of `bytes` in all from the peer (a pass's, counted once).
    #[inline]
    pub fn count_in_many(&self, frames: u64, bytes: u64) {
        bump(&self.from_host, frames);
        bump(&self.from_host_bytes, bytes);
    }

    /// One frame of `bytes` from the switch out to the peer.
    #[inline]
    pub fn count_out(&self, bytes: usize) {
        self.count_out_many(1, bytes as u64);
    }

    /// `frames` frames of `bytes` in all out to the peer (a pass's, counted once).
    #[inline]
    pub fn count_out_many(&self, frames: u64, bytes: u64) {
        bump(&self.to_host, frames);
        bump(&self.to_host_bytes, bytes);
    }

    /// Adds `n` to a loss counter. Losses are also counted from the vhost-user
    /// protocol thread, so this is a real atomic add.
    #[inline]
    pub fn lost(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> vale::proto::HostCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vale::proto::HostCounters {
            from_host: g(&self.from_host),
            from_host_bytes: g(&self.from_host_bytes),
            to_host: g(&self.to_host),
            to_host_bytes: g(&self.to_host_bytes),
            truncated: g(&self.truncated),
            write_errors: g(&self.write_errors),
            read_errors: g(&self.read_errors),
            bad_offload: g(&self.bad_offload),
            kernel_drops: g(&self.kernel_drops),
            no_peer: g(&self.no_peer),
            bad_desc: g(&self.bad_desc),
            chain_too_long: g(&self.chain_too_long),
            peer_disconnects: g(&self.peer_disconnects),
            memory_faults: g(&self.memory_faults),
            vxlan_too_short: g(&self.vxlan_too_short),
            vxlan_no_i_flag: g(&self.vxlan_no_i_flag),
            vxlan_reserved: g(&self.vxlan_reserved),
            vxlan_foreign_vni: g(&self.vxlan_foreign_vni),
            vxlan_queue_full: g(&self.vxlan_queue_full),
            vxlan_tagged_mapped: g(&self.vxlan_tagged_mapped),
            too_big: g(&self.too_big),
            replica_drops: g(&self.replica_drops),
            vxlan_datagrams: g(&self.vxlan_datagrams),
            gso_sends: g(&self.gso_sends),
            gro_reads: g(&self.gro_reads),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_bytes_are_counted_each_way() {
        let c = PortCounters::default();
        c.count_in(60);
        c.count_in(1514);
        c.count_out(42);
        PortCounters::lost(&c.write_errors, 3);
        let s = c.snapshot();
        assert_eq!((s.from_host, s.from_host_bytes), (2, 1574));
        assert_eq!((s.to_host, s.to_host_bytes), (1, 42));
        assert_eq!(s.write_errors, 3);
    }
}
