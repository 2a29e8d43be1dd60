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
}

impl NetBackend {
    pub fn new(guest: GuestRef, lane: Waker) -> NetBackend {
        NetBackend { guest, lane }
    }
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
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
    }
    fn acked_features(&mut self, features: u64) {
        lock(&self.guest).out.acked = features;
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }
    fn set_event_idx(&mut self, _enabled: bool) {}
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        lock(&self.guest).set_memory(mem)
    }
    /// `GET_VRING_BASE`: the frontend stops a queue and reads where the device is in
    /// it. RX entries written this pass but not yet published (`push` publishes once
    /// per pass) are published now, under the guest's lock (so not in the middle of a
    /// pass): the frontend then reads a used index that counts every buffer taken.
    fn stop_vring(&mut self, queue_index: u32) -> std::io::Result<()> {
        let mut g = lock(&self.guest);
        if queue_index == u32::from(RX) && g.rx_dirty {
            g.rx_dirty = false;
            datapath::publish_rx(&mut g);
        }
        Ok(())
    }
    fn exit_event(&self, _thread: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
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
            let mut g = lock(&self.guest);
            // Only with memory mapped for them: a kick the last frontend's worker
            // thread handles after that frontend was forgotten (or cut off) must not
            // leave its dead queues for the next one.
            if g.vrings.is_none() && g.mem.is_some() {
                g.vrings = Some(vrings.to_vec());
                g.rx_since = None;
                g.tx_since = None;
                g.rx_split = None;
                g.out.rx_seen = None;
            }
            if device_event == TX {
                g.tx_broken = false;
            }
        }
        self.lane.wake();
        // Never an error: the crate would end the worker thread for good.
        Ok(())
    }
}
