//! Existing interfaces attached by name (`vale-ctl -a vale0:eth0`) through an AF_PACKET
//! socket: a TPACKET_V2 receive ring for ordinary frames, reads for GSO super-frames.

use super::fd_io::{self, Fault};
use super::rings::ring_put;
use super::{
    AfterDetach, Attach, BURST, Backend, Direct, DrivenPort, MAX_FRAME, PortCounters, PortRings,
    Start, Status, Watcher,
};
use crate::error::{CtlError, PortError};
use crate::sys::{self, PacketRing, RingFrame};
use rustix::fd::OwnedFd;
use std::sync::Arc;

/// The control side: just the interface's name (the socket is opened on attach).
pub struct Nic {
    ifname: String,
}

impl Nic {
    pub fn create(ifname: &str) -> Result<Nic, CtlError> {
        Ok(Nic {
            ifname: ifname.to_string(),
        })
    }
}

impl Backend for Nic {
    fn kind(&self) -> &'static str {
        "nic"
    }

    fn attach(&self) -> Attach {
        Attach {
            hdr_len: sys::PACKET_VNET_HDR_LEN,
            direct: true,
        }
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let ifname = &self.ifname;
        let i = sys::if_index(ifname).ok_or_else(|| PortError::Gone(ifname.clone()))?;
        let dev = sys::packet_socket(i).map_err(|e| PortError::Io {
            what: format!("cannot open an AF_PACKET socket on {ifname}"),
            source: e,
            hint: " (valed needs CAP_NET_RAW)",
        })?;
        // 2048-byte slots for ordinary frames (super-frames come through the socket), or
        // plain reads if the kernel refuses a ring.
        let ring = PacketRing::new(&dev, 2048, 1024)
            .map_err(|e| tracing::warn!(interface = %ifname, "no receive ring, plain reads: {e}"))
            .ok();
        cx.watcher.add(&dev)?;
        Ok(Box::new(PacketIo {
            dev,
            ring,
            rings: cx.rings,
            counters: cx.counters,
            watcher: cx.watcher,
            name: ifname.clone(),
            closed: false,
            buf: vec![0u8; MAX_FRAME],
        }))
    }

    fn stop(&mut self) -> AfterDetach {
        AfterDetach::Forget
    }

    fn describe(&self) -> String {
        format!("AF_PACKET on {}", self.ifname)
    }

    fn status(&self) -> Status {
        Status {
            gone: sys::if_index(&self.ifname).is_none(),
            waiting: false,
        }
    }
}

/// The forwarding thread's side of an attached interface.
struct PacketIo {
    dev: OwnedFd,
    /// The socket's receive ring, if the kernel gave one.
    ring: Option<PacketRing>,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    name: String,
    /// The socket stopped working for good: out of the epoll set.
    closed: bool,
    buf: Vec<u8>,
}

impl PacketIo {
    /// Frames straight from the receive ring's shared memory (no system call per
    /// frame); super-frames the kernel queued on the socket instead are read with
    /// `read`.
    fn pull_ring(&mut self, need: u32) -> usize {
        let mut got = 0;
        while got < BURST && self.rings.tx.space() >= need {
            let Some(ring) = self.ring.as_mut() else {
                break;
            };
            let (tx, c) = (&self.rings.tx, &self.counters);
            let mut queued = false;
            let took = ring.take(|f| match f {
                RingFrame::Empty => {}
                RingFrame::Frame(b) => {
                    ring_put(tx, b);
                    c.count_in(b.len());
                }
                RingFrame::Queued => queued = true,
                RingFrame::Truncated => PortCounters::lost(&c.truncated, 1),
            });
            if !took {
                break;
            }
            if queued {
                // A pending socket error (ENETDOWN) is returned by the first read, which
                // clears it: read again, or the frame stays queued and every later one
                // would be read in place of the next.
                let r = match rustix::io::read(&self.dev, &mut self.buf) {
                    Err(e) if e != rustix::io::Errno::AGAIN => {
                        PortCounters::lost(&self.counters.read_errors, 1);
                        rustix::io::read(&self.dev, &mut self.buf)
                    }
                    r => r,
                };
                match r {
                    Ok(len) if len > 0 && len < MAX_FRAME => {
                        ring_put(&self.rings.tx, &self.buf[..len]);
                        self.counters.count_in(len);
                    }
                    Ok(_) | Err(_) => PortCounters::lost(&self.counters.truncated, 1),
                }
            }
            got += 1;
        }
        if got > 0 {
            self.rings.tx.txsync();
        }
        got
    }
}

impl DrivenPort for PacketIo {
    fn pull(&mut self) -> usize {
        let need = fd_io::fresh_tx(&self.rings);
        if self.closed {
            return 0;
        }
        if self.ring.is_some() {
            return self.pull_ring(need);
        }
        fd_io::read_frames(&self.dev, &self.rings, &self.counters, &mut self.buf).0
    }

    fn push(&mut self) -> usize {
        fd_io::write_frames(&self.dev, &self.rings, &self.counters, &mut self.buf, None)
    }

    fn send(&mut self, pkt: &Direct<'_>) -> bool {
        fd_io::write_direct(&self.dev, &self.counters, pkt)
    }

    fn fault(&mut self) {
        if !self.closed && fd_io::read_fault(&self.dev, &self.counters, &self.name) == Fault::Gone {
            self.closed = true;
            self.watcher.remove(&self.dev);
        }
    }
}
