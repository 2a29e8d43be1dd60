//! The thread serving one vhost-user port's protocol: it accepts (or connects to) a
//! frontend, runs the vhost crate's daemon on it behind the relay, and waits for the
//! next, until stopped.

use super::device::NetBackend;
use super::write;
use crate::port::PortCounters;
use rustix::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

/// The thread serving one vhost-user port: accepts a frontend on the socket, serves it
/// until it goes away, and waits for the next, until stopped.
pub struct ProtocolServer {
    stop: Arc<AtomicBool>,
    /// The connected frontend, shut down on stop.
    front: Arc<Mutex<Option<UnixStream>>>,
    shutdown: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProtocolServer {
    /// Serves `backend` on `path`: valed listens there (`client` false: QEMU's
    /// `-chardev socket,path=PATH`, DPDK's `net_virtio_user`), or valed connects to a
    /// frontend listening there (`client` true: QEMU's `server=on`, OVS's
    /// `dpdkvhostuserclient`), and again after it goes away. `private` is a socket path in
    /// a directory only valed can enter, where the vhost crate listens behind the relay.
    /// With `trust_unsealed`, guest memory that cannot be sealed is accepted.
    pub fn start(
        name: String,
        path: &str,
        client: bool,
        trust_unsealed: bool,
        private: PathBuf,
        backend: NetBackend,
        counters: Arc<PortCounters>,
    ) -> std::io::Result<ProtocolServer> {
        let front_l = if client {
            None
        } else {
            Some(std::os::unix::net::UnixListener::from(
                crate::sys::stream_listen(path)?,
            ))
        };
        let mut listener = Listener::new(&private, true).map_err(std::io::Error::other)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown: Arc<Mutex<Option<vhost_user_backend::ShutdownHandle>>> =
            Arc::new(Mutex::new(None));
        let guest = backend.guest.clone();
        let backend = Arc::new(RwLock::new(backend));
        let front_now: Arc<Mutex<Option<UnixStream>>> = Arc::new(Mutex::new(None));
        let (stop2, shutdown2, front2) = (stop.clone(), shutdown.clone(), front_now.clone());
        let path = path.to_string();
        // This port's notifier threads (one per frontend connection, `port::notify`).
        let notifiers = Arc::new(crate::port::notify::Held::default());
        let thread = std::thread::Builder::new()
            .name(format!("vale-vhost-{name}"))
            .spawn(move || {
                let mut warned = false;
                while !stop2.load(Ordering::Acquire) {
                    let front = match &front_l {
                        // Wait for a frontend without blocking in accept, so stop works.
                        Some(l) => {
                            if !crate::sys::readable_within(l.as_fd(), 200) {
                                continue;
                            }
                            let Ok((front, _)) = l.accept() else {
                                continue;
                            };
                            front
                        }
                        // Connect to the frontend, retrying while it is not there.
                        // Never blocking: a frontend that does not accept is
                        // tried again, and stop is seen meanwhile.
                        None => match crate::sys::stream_connect_blocking(&path) {
                            Ok(f) => {
                                warned = false;
                                f
                            }
                            Err(e) => {
                                if !warned {
                                    tracing::info!(port = %name, "vhost-user: waiting for {path}: {e}");
                                    warned = true;
                                }
                                for _ in 0..5 {
                                    if stop2.load(Ordering::Acquire) {
                                        break;
                                    }
                                    std::thread::sleep(Duration::from_millis(100));
                                }
                                continue;
                            }
                        },
                    };
                    *front2.lock().unwrap_or_else(|p| p.into_inner()) = front.try_clone().ok();
                    // The forwarding thread cuts it off if it truncates its memory.
                    write(&guest).front = front.try_clone().ok();
                    // Queue our end of the private socket, so the crate's accept is quick.
                    let back = match UnixStream::connect(&private) {
                        Ok(b) => b,
                        Err(e) => {
                            tracing::warn!(port = %name, "vhost-user: {e}");
                            continue;
                        }
                    };
                    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
                    let mut d = match VhostUserDaemon::new(name.clone(), backend.clone(), mem) {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::warn!(port = %name, "vhost-user: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                            continue;
                        }
                    };
                    if let Err(e) = d.start(&mut listener) {
                        tracing::warn!(port = %name, "vhost-user accept: {e}");
                        continue;
                    }
                    tracing::info!(port = %name, "vhost-user frontend connected");
                    *shutdown2.lock().unwrap_or_else(|p| p.into_inner()) = d.shutdown_handle();
                    let (n2, c2) = (name.clone(), counters.clone());
                    let alive = notifiers.clone();
                    let relay = std::thread::spawn(move || {
                        super::relay::relay(front, back, &n2, &c2, trust_unsealed, &alive)
                    });
                    let r = d.wait();
                    let _ = relay.join();
                    // Its worker threads stopped and joined: their exit eventfds, which
                    // the crate leaves open, are closed.
                    drop(d);
                    let abandoned = std::mem::take(
                        &mut *backend
                            .read()
                            .unwrap_or_else(|p| p.into_inner())
                            .exit_fds
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()),
                    );
                    abandoned.into_iter().for_each(crate::sys::close_abandoned);
                    // Its queues and memory are gone with it.
                    write(&guest).forget(&counters);
                    *shutdown2.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    tracing::info!(port = %name, "vhost-user frontend gone: {:?}", r.err());
                }
            })?;
        Ok(ProtocolServer {
            stop,
            front: front_now,
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(f) = self.front.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
        if let Some(h) = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.shutdown();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ProtocolServer {
    fn drop(&mut self) {
        self.stop();
    }
}
