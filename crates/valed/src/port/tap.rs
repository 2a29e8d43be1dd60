//! Persistent ports (`vale-ctl -n vi0`): a TAP interface valed creates and keeps, with
//! a 12-byte virtio-net header and TSO offloads, so TCP hands the switch 64 KiB frames.

use super::fd_io::{self, Fault, ReadEnd};
use super::{
    AfterDetach, Attach, Backend, Direct, DrivenPort, MAX_FRAME, PortCounters, PortRings, Start,
    Watcher,
};
use crate::error::{CtlError, PortError};
use crate::sys;
use rustix::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The control side: the TAP device (the interface exists while valed holds it).
pub struct Tap {
    fd: OwnedFd,
}

impl Tap {
    pub fn create(name: &str) -> Result<Tap, CtlError> {
        sys::check_ifname(name).map_err(|e| CtlError::BadName(e.to_string()))?;
        if name.starts_with("vale") {
            return Err(CtlError::BadName(format!(
                "{name}: a persistent port's name may not start with `vale` (that names a switch port)"
            )));
        }
        if sys::if_index(name).is_some() {
            return Err(CtlError::Exists(format!(
                "{name} already exists (see `ip link` and `vale-ctl list`)"
            )));
        }
        let fd = sys::tap_create(name).map_err(|e| {
            CtlError::Internal(format!(
                "cannot create TAP interface {name}: {e} (valed needs CAP_NET_ADMIN and /dev/net/tun)"
            ))
        })?;
        tracing::info!(interface = name, "persistent port (TAP) created");
        Ok(Tap { fd })
    }
}

impl Backend for Tap {
    fn kind(&self) -> &'static str {
        "tap"
    }

    fn attach(&self) -> Attach {
        Attach {
            hdr_len: sys::TAP_VNET_HDR,
            direct: true,
        }
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let dev = self
            .fd
            .try_clone()
            .map_err(|e| PortError::io("dup the TAP descriptor", e))?;
        cx.watcher.add(&dev)?;
        Ok(Box::new(TapIo {
            dev,
            rings: cx.rings,
            counters: cx.counters,
            watcher: cx.watcher,
            name: cx.name.to_string(),
            gone: false,
            buf: vec![0u8; MAX_FRAME],
        }))
    }

    fn stop(&mut self) -> AfterDetach {
        AfterDetach::Keep
    }

    fn persistent(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "TAP interface".into()
    }
}

/// The forwarding thread's side of an attached TAP.
struct TapIo {
    /// A twin of the backend's descriptor.
    dev: OwnedFd,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    name: String,
    /// The interface was deleted: nothing is read from it again.
    gone: bool,
    buf: Vec<u8>,
}

impl TapIo {
    /// The TAP's interface was deleted: out of the epoll set, nothing read from it
    /// again (what the switch sends it is counted as `write_errors`).
    fn gone(&mut self) {
        if !self.gone {
            tracing::warn!(
                interface = %self.name,
                "host port's interface was deleted; `vale-ctl -d` and `-r` it, `-n` makes a new one"
            );
            PortCounters::lost(&self.counters.read_errors, 1);
        }
        self.counters.gone.store(true, Ordering::Relaxed);
        self.gone = true;
        self.watcher.remove(&self.dev);
    }
}

impl DrivenPort for TapIo {
    fn pull(&mut self) -> usize {
        if self.gone {
            fd_io::fresh_tx(&self.rings);
            return 0;
        }
        let (got, end) = fd_io::read_frames(&self.dev, &self.rings, &self.counters, &mut self.buf);
        if end == ReadEnd::Gone {
            self.gone();
        }
        got
    }

    fn push(&mut self) -> usize {
        fd_io::write_frames(&self.dev, &self.rings, &self.counters, &mut self.buf, None)
    }

    fn send(&mut self, pkt: &Direct<'_>) -> bool {
        fd_io::write_direct(&self.dev, &self.counters, pkt)
    }

    /// A TAP reports errors only once its interface is deleted, and is then done for.
    fn fault(&mut self) {
        if !self.gone && fd_io::read_fault(&self.dev, &self.counters, &self.name) == Fault::Gone {
            self.gone();
        }
    }
}

impl Drop for TapIo {
    fn drop(&mut self) {
        // The backend keeps the device open, so closing this twin leaves it in the set.
        self.watcher.remove(&self.dev);
    }
}
