//! Host ports: the Linux host on a switch. A host port is a TAP interface valed creates
//! (netmap's persistent port, `vale-ctl -n vi0`) or an existing interface attached by
//! name through an AF_PACKET socket (`vale-ctl -a vale0:eth0`). Attached, it is an
//! ordinary port of the switch whose client is a thread of valed: the thread moves
//! frames between the interface's descriptor and the port's rings with the same client
//! API any application uses, so the forwarding engine treats it like every other port.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use vale::{Interest, Port};
use vale_switch::PortKey;

/// Largest frame a host port reads: a 64 KiB IP packet with its Ethernet and
/// virtio-net headers.
pub const MAX_FRAME: usize = 65536 + 256;
/// Frames moved each way per wake-up before looking at the other direction.
const BURST: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TAP interface valed created and owns.
    Tap,
    /// An existing interface, reached with an AF_PACKET socket while attached.
    Nic,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tap => "tap",
            Kind::Nic => "nic",
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub from_host: AtomicU64,
    pub from_host_bytes: AtomicU64,
    pub to_host: AtomicU64,
    pub to_host_bytes: AtomicU64,
    pub truncated: AtomicU64,
    pub write_errors: AtomicU64,
    pub read_errors: AtomicU64,
}

impl Counters {
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
        }
    }
}

/// One host port.
pub struct Host {
    pub kind: Kind,
    /// TAP: the device (the interface exists while valed holds it).
    pub tap: Option<OwnedFd>,
    pub attached: Option<Attachment>,
    pub counters: Arc<Counters>,
}

/// A host port on a switch: its switch port and the thread that serves it.
pub struct Attachment {
    /// `valeX:NAME`.
    pub port: String,
    pub lane: usize,
    pub key: PortKey,
    /// Dropping the write end of this pipe tells the thread to stop.
    hangup: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl Attachment {
    /// Starts the thread that moves frames between `dev` and `port`.
    pub fn start(
        port_name: String,
        lane: usize,
        key: PortKey,
        make_port: impl FnOnce(OwnedFd) -> Result<Port, vale::Error>,
        dev: OwnedFd,
        counters: Arc<Counters>,
    ) -> Result<Attachment, String> {
        let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| format!("pipe: {e}"))?;
        let port = make_port(rd).map_err(|e| format!("cannot map {port_name}: {e}"))?;
        let name = port_name.clone();
        let thread = std::thread::Builder::new()
            .name(format!(
                "vale-host-{}",
                name.rsplit(':').next().unwrap_or("")
            ))
            .spawn(move || {
                if let Err(e) = serve(&port, &dev, &counters) {
                    tracing::warn!(port = %name, "host port stopped: {e}");
                }
            })
            .map_err(|e| format!("cannot start the thread of {port_name}: {e}"))?;
        Ok(Attachment {
            port: port_name,
            lane,
            key,
            hangup: Some(wr),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (it stops within one poll).
    pub fn stop(&mut self) {
        self.hangup = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The host port's client loop: interface -> TX ring, RX ring -> interface; sleeps in
/// poll when neither has anything. Returns when valed hangs up (detach, shutdown).
fn serve(port: &Port, dev: &OwnedFd, c: &Counters) -> Result<(), vale::Error> {
    let mut buf = vec![0u8; MAX_FRAME];
    let bs = port.geometry().buf_size as usize;
    // Read from the interface only when the largest frame fits in the TX ring.
    let room = MAX_FRAME.div_ceil(bs) as u32;
    loop {
        let mut work = false;
        // Host -> switch.
        let mut got = 0;
        while got < BURST && port.tx_rings().iter().any(|r| r.space() >= room) {
            match rustix::io::read(dev, &mut buf) {
                Ok(0) => break,
                Ok(n) if n >= MAX_FRAME => {
                    c.truncated.fetch_add(1, Ordering::Relaxed);
                }
                Ok(n) => {
                    if port.inject(&buf[..n]) {
                        got += 1;
                        c.from_host.fetch_add(1, Ordering::Relaxed);
                        c.from_host_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => {
                    // A TAP nobody has brought up, an interface that went down: count
                    // and look again after the next wake-up.
                    c.read_errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        if got > 0 {
            port.txsync()?;
            work = true;
        }
        // Switch -> host.
        port.rxsync()?;
        let sent = port.dispatch(BURST, |frame| match rustix::io::write(dev, frame) {
            Ok(_) => {
                c.to_host.fetch_add(1, Ordering::Relaxed);
                c.to_host_bytes
                    .fetch_add(frame.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                c.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        if sent > 0 {
            port.rxsync()?;
            work = true;
        }
        if work {
            continue;
        }
        // Nothing either way: sleep until the switch delivers, the TX ring has room
        // again, or the interface has a frame.
        let tx_room = port.tx_rings().iter().any(|r| r.space() >= room);
        let want = Interest {
            rx: true,
            tx: !tx_room,
        };
        let dev_fd = [dev.as_fd()];
        let extra: &[BorrowedFd<'_>] = if tx_room { &dev_fd } else { &[] };
        port.poll_with(want, extra, Some(Duration::from_secs(1)))?;
    }
}
