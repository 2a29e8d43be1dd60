//! The vhost crate's side of a vhost-user port: features, memory, and kicks turned into
//! wake-ups of the forwarding thread, which moves the packets (`datapath`).

use super::*;
use crate::port::Waker;
use vhost::vhost_user::VhostUserVirtioFeatures;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::VhostUserBackendMut;
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

/// The vhost crate's side: the protocol, the frontend's memory and queues, and kicks
/// turned into wake-ups of the forwarding thread, which moves the packets (`VhostIo`).
pub struct NetBackend {
    pub(super) guest: GuestRef,
    lane: Waker,
    /// The queue pairs offered (`--queues`).
    pairs: u16,
    /// The exit eventfds the crate's worker threads were given and never close
    /// (vhost-user-backend 0.24 registers the consumer's raw descriptor in its epoll
    /// and forgets it; one per frontend connection): closed once that connection's
    /// daemon is gone (`sys::close_abandoned`).
    pub(super) exit_fds: std::sync::Mutex<Vec<i32>>,
}

impl NetBackend {
    pub fn new(guest: GuestRef, lane: Waker, pairs: u16) -> NetBackend {
        NetBackend {
            guest,
            lane,
            pairs,
            exit_fds: std::sync::Mutex::default(),
        }
    }
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    /// An RX and a TX queue per pair: what the crate answers `GET_QUEUE_NUM` with
    /// (in pairs) and the queues it lets the frontend set up.
    fn num_queues(&self) -> usize {
        2 * usize::from(self.pairs)
    }
    fn max_queue_size(&self) -> usize {
        1024
    }
    fn features(&self) -> u64 {
        // PROTOCOL_FEATURES: DPDK's virtio_user sends SET_VRING_ENABLE, which the vhost
        // crate accepts only with it. (QEMU 7.2 sends that message before it acks its
        // features, which the crate refuses: see docs/vhost-user-plan.md.)
        1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_NET_F_MRG_RXBUF
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            // Offloads: the virtio-net header crosses the switch as the port's header;
            // ports that do not take them get them finished in software (the switch for
            // plain ports, `stage` for guests that did not accept them).
            | 1 << F_CSUM
            | 1 << F_GUEST_CSUM
            | 1 << F_GUEST_TSO4
            | 1 << F_GUEST_TSO6
            | 1 << F_GUEST_ECN
            | 1 << F_HOST_TSO4
            | 1 << F_HOST_TSO6
            | 1 << F_HOST_ECN
            // Several queue pairs: QEMU passes MQ to the guest only if the device has
            // it (DPDK's virtio_user runs its pairs regardless). One pair offers what
            // it always did.
            | u64::from(self.pairs > 1) << F_MQ
    }
    fn acked_features(&mut self, features: u64) {
        let mut g = write(&self.guest);
        for p in &mut g.pairs {
            p.get_mut().unwrap_or_else(|e| e.into_inner()).out.acked = features;
        }
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }
    fn set_event_idx(&mut self, _enabled: bool) {}
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        write(&self.guest).set_memory(mem)
    }
    /// `GET_VRING_BASE`: the frontend stops a queue and reads where the device is in
    /// it. RX entries written this pass but not yet published (`push` publishes once
    /// per pass) are published now, under the guest's lock (so not in the middle of a
    /// pass): the frontend then reads a used index that counts every buffer taken.
    fn stop_vring(&mut self, queue_index: u32) -> std::io::Result<()> {
        let g = read(&self.guest);
        let q = queue_index as usize;
        if q % 2 == 0 {
            if let Some(mut p) = pair(&g, q / 2) {
                if p.rx_dirty {
                    p.rx_dirty = false;
                    datapath::publish_rx(&g, &mut p, q / 2);
                }
            }
        }
        Ok(())
    }
    fn exit_event(&self, _thread: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (c, n) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        use std::os::fd::AsRawFd;
        self.exit_fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c.as_raw_fd());
        Some((c, n))
    }
    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> std::io::Result<()> {
        // A kick (or a ring enabled): the queues are the forwarding thread's to serve
        // from now on; wake it in case it sleeps.
        tracing::debug!(device_event, "vhost-user kick");
        {
            // Only with memory mapped for them: a kick the last frontend's worker
            // thread handles after that frontend was forgotten (or cut off) must not
            // leave its dead queues for the next one. (Looked at under the read lock
            // first: every kick comes here, and a writer waits for every pass.)
            let set_up = |g: &Guest| g.vrings.is_none() && g.mem.is_some();
            if set_up(&read(&self.guest)) {
                let mut g = write(&self.guest);
                if set_up(&g) {
                    g.vrings = Some(vrings.to_vec());
                    for p in &mut g.pairs {
                        p.get_mut().unwrap_or_else(|e| e.into_inner()).set_up();
                    }
                }
            }
            // A TX queue kicked: its pair's TX queue is looked at again.
            let q = usize::from(device_event);
            if q % 2 == 1 {
                if let Some(mut p) = pair(&read(&self.guest), q / 2) {
                    p.tx_broken = false;
                }
            }
        }
        self.lane.wake();
        // Never an error: the crate would end the worker thread for good.
        Ok(())
    }
}
