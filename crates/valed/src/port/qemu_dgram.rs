//! QEMU's `-netdev dgram` over unix sockets (`vale-ctl qemu-dgram`): one Ethernet frame
//! per datagram, no header; valed binds the VM's `remote.path` and sends to its
//! `local.path`.

use super::fd_io::{self, Fault, ReadEnd};
use super::{
    AfterDetach, Attach, Backend, DrivenPort, MAX_FRAME, PortCounters, PortRings, Start, Watcher,
};
use crate::error::{CtlError, PortError};
use rustix::fd::OwnedFd;
use rustix::net::SocketAddrUnix;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The control side: the bound socket (until the port starts) and its file.
pub struct QemuDgram {
    dev: Option<OwnedFd>,
    path: PathBuf,
    peer: SocketAddrUnix,
}

impl QemuDgram {
    pub fn create(socket: &str, peer: &str) -> Result<QemuDgram, CtlError> {
        let peer = SocketAddrUnix::new(peer)
            .map_err(|e| CtlError::BadRequest(format!("--peer {peer}: {e}")))?;
        let dev = crate::sys::dgram_bind(socket).map_err(|e| {
            CtlError::Internal(format!("cannot bind a datagram socket at {socket}: {e}"))
        })?;
        Ok(QemuDgram {
            dev: Some(dev),
            path: PathBuf::from(socket),
            peer,
        })
    }
}

impl Backend for QemuDgram {
    fn kind(&self) -> &'static str {
        "qemu-dgram"
    }

    /// Not direct: every send needs the VM's address.
    fn attach(&self) -> Attach {
        Attach {
            hdr_len: 0,
            direct: false,
        }
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let dev = self
            .dev
            .take()
            .ok_or_else(|| PortError::Refused("the datagram socket is in use".into()))?;
        cx.watcher.add(&dev)?;
        Ok(Box::new(DgramIo {
            dev,
            peer: self.peer.clone(),
            rings: cx.rings,
            counters: cx.counters,
            watcher: cx.watcher,
            name: cx.name.to_string(),
            closed: false,
            buf: vec![0u8; MAX_FRAME],
        }))
    }

    fn stop(&mut self) -> AfterDetach {
        AfterDetach::Forget
    }

    fn remove(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }

    fn socket(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn describe(&self) -> String {
        format!(
            "QEMU dgram on {}, sending to {}",
            self.path.display(),
            self.peer
                .path()
                .map_or_else(String::new, |p| p.to_string_lossy().into_owned())
        )
    }
}

struct DgramIo {
    dev: OwnedFd,
    /// Where frames go: the VM's `local.path`.
    peer: SocketAddrUnix,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    name: String,
    closed: bool,
    buf: Vec<u8>,
}

impl DgramIo {
    fn close(&mut self) {
        self.closed = true;
        self.watcher.remove(&self.dev);
    }
}

impl DrivenPort for DgramIo {
    fn pull(&mut self) -> usize {
        if self.closed {
            fd_io::fresh_tx(&self.rings);
            return 0;
        }
        let (got, end) = fd_io::read_frames(&self.dev, &self.rings, &self.counters, &mut self.buf);
        if end == ReadEnd::Gone {
            self.close();
        }
        got
    }

    fn push(&mut self) -> usize {
        let peer = Some(&self.peer);
        fd_io::write_frames(&self.dev, &self.rings, &self.counters, &mut self.buf, peer)
    }

    fn fault(&mut self) {
        if !self.closed && fd_io::read_fault(&self.dev, &self.counters, &self.name) == Fault::Gone {
            self.close();
        }
    }
}
