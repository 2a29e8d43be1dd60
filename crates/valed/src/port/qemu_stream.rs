//! QEMU's `-netdev stream` over a unix socket (`vale-ctl qemu-stream`): each frame
//! after a 4-byte big-endian length. valed listens (the VM connects, and reconnects
//! after a restart) or connects to a VM listening.

use super::rings::{ring_put, ring_take};
use super::{
    AfterDetach, Attach, BURST, Backend, ControlEvent, DrivenPort, MAX_FRAME, PortCounters,
    PortRings, Start, Status, Watcher,
};
use crate::error::{CtlError, PortError};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::net::SocketFlags;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The control side: the listener and its file (`--listen`), and a connection not yet
/// handed to the forwarding thread.
pub struct QemuStream {
    listener: Option<(OwnedFd, PathBuf)>,
    conn: Option<OwnedFd>,
}

impl QemuStream {
    pub fn create(listen: Option<&str>, connect: Option<&str>) -> Result<QemuStream, CtlError> {
        match (listen, connect) {
            (Some(path), None) => {
                let l = crate::sys::stream_listen(path)
                    .map_err(|e| CtlError::Internal(format!("cannot listen on {path}: {e}")))?;
                Ok(QemuStream {
                    listener: Some((l, PathBuf::from(path))),
                    conn: None,
                })
            }
            (None, Some(path)) => {
                let conn =
                    crate::sys::stream_connect(path).map_err(|source| PortError::NoPeer {
                        path: path.to_string(),
                        source,
                    })?;
                Ok(QemuStream {
                    listener: None,
                    conn: Some(conn),
                })
            }
            _ => Err(CtlError::BadRequest(
                "qemu-stream takes one of --listen PATH or --connect PATH".into(),
            )),
        }
    }
}

impl Backend for QemuStream {
    fn kind(&self) -> &'static str {
        "qemu-stream"
    }

    fn attach(&self) -> Attach {
        Attach {
            hdr_len: 0,
            direct: false,
        }
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        let dev = self
            .conn
            .take()
            .ok_or_else(|| PortError::Refused("no VM is connected".into()))?;
        cx.watcher.add(&dev)?;
        Ok(Box::new(StreamIo {
            dev,
            rings: cx.rings,
            counters: cx.counters,
            watcher: cx.watcher,
            closed: false,
            out_armed: false,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            buf: vec![0u8; MAX_FRAME],
        }))
    }

    fn stop(&mut self) -> AfterDetach {
        AfterDetach::Forget
    }

    fn remove(&mut self) {
        if let Some((_, p)) = &self.listener {
            let _ = std::fs::remove_file(p);
        }
    }

    fn socket(&self) -> Option<&Path> {
        self.listener.as_ref().map(|(_, p)| p.as_path())
    }

    fn control_fd(&self) -> Option<BorrowedFd<'_>> {
        self.listener.as_ref().map(|(l, _)| l.as_fd())
    }

    /// A VM connected (or connected again after a restart).
    fn control_ready(&mut self) -> ControlEvent {
        let Some((l, _)) = &self.listener else {
            return ControlEvent::None;
        };
        match rustix::net::accept_with(l, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(c) => {
                self.conn = Some(c);
                ControlEvent::Connected
            }
            Err(_) => ControlEvent::None,
        }
    }

    fn status(&self) -> Status {
        Status {
            gone: false,
            waiting: self.listener.is_some(),
        }
    }

    fn describe(&self) -> String {
        match &self.listener {
            Some((_, p)) => format!("QEMU stream, listening on {}", p.display()),
            None => "QEMU stream, connected".into(),
        }
    }
}

/// The forwarding thread's side of one VM connection.
struct StreamIo {
    dev: OwnedFd,
    rings: PortRings,
    counters: Arc<PortCounters>,
    watcher: Watcher,
    /// The VM hung up: nothing moves until it reconnects (a new `StreamIo`).
    closed: bool,
    /// Registered for writability too (bytes the socket did not take wait).
    out_armed: bool,
    /// Bytes read but not yet a whole frame.
    rbuf: Vec<u8>,
    /// Bytes of frames the socket did not take yet.
    wbuf: Vec<u8>,
    buf: Vec<u8>,
}

impl StreamIo {
    fn hang_up(&mut self) {
        self.closed = true;
        self.watcher.remove(&self.dev);
    }

    /// Whole frames from `rbuf` into the TX ring while there is room; false if the
    /// stream is not QEMU's framing (then it was hung up).
    fn frames_out_of_rbuf(&mut self, got: &mut usize, need: u32) -> bool {
        let mut at = 0;
        let mut ok = true;
        while self.rbuf.len() - at >= 4 && self.rings.tx.space() >= need && *got < BURST {
            let h = &self.rbuf[at..at + 4];
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if len > MAX_FRAME || len == 0 {
                // Not QEMU's framing: hang up rather than guess.
                PortCounters::lost(&self.counters.read_errors, 1);
                ok = false;
                break;
            }
            if self.rbuf.len() - at < 4 + len {
                break;
            }
            let frame = &self.rbuf[at + 4..at + 4 + len];
            ring_put(&self.rings.tx, frame);
            self.counters.count_in(len);
            at += 4 + len;
            *got += 1;
        }
        self.rbuf.drain(..at);
        if !ok {
            self.hang_up();
        }
        ok
    }
}

impl DrivenPort for StreamIo {
    /// Reads what the socket has and injects every whole frame.
    fn pull(&mut self) -> usize {
        let need = super::fd_io::fresh_tx(&self.rings);
        if self.closed {
            return 0;
        }
        let mut got = 0;
        loop {
            if !self.frames_out_of_rbuf(&mut got, need) {
                break;
            }
            if got >= BURST || self.rings.tx.space() < need {
                break;
            }
            match rustix::io::read(&self.dev, &mut self.buf) {
                Ok(0) => {
                    self.hang_up();
                    break;
                }
                Ok(n) => self.rbuf.extend_from_slice(&self.buf[..n]),
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    PortCounters::lost(&self.counters.read_errors, 1);
                    self.hang_up();
                    break;
                }
            }
        }
        if got > 0 {
            self.rings.tx.txsync();
        }
        got
    }

    /// Writes pending bytes, then whole frames with their length, keeping what the
    /// socket does not take; a full socket leaves packets in the RX ring (whose own
    /// overflow the switch counts as `ring_full`).
    fn push(&mut self) -> usize {
        let rx = &self.rings.rx;
        rx.rxsync();
        if self.closed {
            // Nobody to send to: the packets are dropped, and counted.
            let mut frame = Vec::new();
            let mut n = 0;
            while rx.space() > 0 && n < BURST {
                ring_take(rx, &mut frame);
                n += 1;
            }
            if n > 0 {
                PortCounters::lost(&self.counters.no_peer, n as u64);
                rx.rxsync();
            }
            return 0;
        }
        let mut sent = 0;
        let mut frame = Vec::with_capacity(2048);
        loop {
            let pending = self.wbuf.len();
            if pending > 0 {
                match rustix::io::write(&self.dev, &self.wbuf) {
                    Ok(n) => {
                        self.wbuf.drain(..n);
                        if n < pending {
                            break;
                        }
                    }
                    Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => break,
                    Err(_) => {
                        PortCounters::lost(&self.counters.write_errors, 1);
                        self.hang_up();
                        break;
                    }
                }
            }
            let rx = &self.rings.rx;
            if sent >= BURST || rx.space() == 0 {
                break;
            }
            // The next packet, framed, into the pending buffer.
            ring_take(rx, &mut frame);
            sent += 1;
            if frame.len() > MAX_FRAME {
                // QEMU would drop the connection over it: counted, not sent.
                PortCounters::lost(&self.counters.truncated, 1);
                continue;
            }
            self.wbuf
                .extend_from_slice(&(frame.len() as u32).to_be_bytes());
            self.wbuf.extend_from_slice(&frame);
            self.counters.count_out(frame.len());
        }
        if sent > 0 {
            self.rings.rx.rxsync();
        }
        // Bytes the socket did not take: wake when it drains (the switch may stay quiet
        // until then), and stop asking once they are out.
        let waiting = !self.wbuf.is_empty();
        if waiting != self.out_armed && !self.closed && self.watcher.set_out(&self.dev, waiting) {
            self.out_armed = waiting;
        }
        sent
    }
}
