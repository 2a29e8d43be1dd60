//! memif ports (`vale-ctl memif`): a switch port served to DPDK and VPP applications over
//! memif, their shared-memory interface (protocol 2.0), with valed as the server, or
//! (`--client`) as a client of a memif server such as VPP's.
//!
//! - `handshake`: the server's side of the control protocol, without I/O;
//! - `client`: the client's side: one thread per port dials the server, hands it valed's
//!   own region (`own`), and dials again when the server comes back;
//! - `server`: one thread per socket (several ids, each its own port, may share one):
//!   accepts clients, runs their handshakes, maps what they offer (`conn`) and hands the
//!   connection to the port;
//! - `ring`: the client's rings, read and written without trusting them;
//! - `io`: the port's data plane, run by its switch's forwarding thread, the same for
//!   both roles.
//!
//! Copy mode: frames are copied between the client's buffers and the switch's. The
//! client's regions must be sealed against shrinking (copy-mode DPDK clients seal
//! theirs; valed seals what it can), so no access can fault; a zero-copy client's
//! memory cannot be sealed and is refused with a reason the client logs, unless
//! `--memif-trust-unsealed`: then its mappings are watched, and a truncation is counted
//! (`memory_faults`) and disconnects the client instead of killing valed.

mod client;
mod conn;
pub mod handshake;
mod io;
pub mod own;
pub mod ring;
mod server;

use super::{AfterDetach, Attach, Backend, DrivenPort, Start, Status};
use crate::error::{CtlError, PortError};
use server::{PeerInfo, Registration, Slot, SocketKey};
use std::path::Path;
use std::sync::Arc;

/// The control side of a memif port.
pub struct Memif {
    name: String,
    key: SocketKey,
    id: u32,
    secret: String,
    trust_unsealed: bool,
    /// valed dials the server at `key` instead of serving there.
    client: bool,
    role: Option<Role>,
}

/// A started port: registered on its socket's server thread, or dialing. (Dropping
/// the registration or the dialer disconnects the peer.)
enum Role {
    Server(Arc<Slot>, #[allow(dead_code)] Registration),
    Client(Arc<Slot<own::Own>>, #[allow(dead_code)] client::Dialer),
}

impl Memif {
    /// What [`Memif::create`] refuses: a socket name too long for `sun_path`, a secret
    /// too long for the protocol's field.
    pub fn check(socket: &str, secret: &str) -> Result<(), CtlError> {
        if socket.is_empty() || socket.len() > 107 {
            return Err(CtlError::BadRequest(format!(
                "memif socket `{}` must be 1 to 107 bytes",
                socket.escape_default()
            )));
        }
        if secret.len() > vale_wire::memif::SECRET_LEN || secret.contains('\0') {
            return Err(CtlError::BadRequest(format!(
                "a memif secret is at most {} bytes, without NUL",
                vale_wire::memif::SECRET_LEN
            )));
        }
        Ok(())
    }

    /// A memif port serving interface `id` on `socket` (a file, or with `abstract_name`
    /// a name in the abstract namespace), to clients that give `secret` (empty: none);
    /// with `client`, connecting to a server there as interface `id`, giving `secret`.
    pub fn create(
        name: &str,
        socket: &str,
        abstract_name: bool,
        id: u32,
        secret: &str,
        client: bool,
        trust_unsealed: bool,
    ) -> Result<Memif, CtlError> {
        Memif::check(socket, secret)?;
        Ok(Memif {
            name: name.to_string(),
            key: SocketKey {
                path: socket.to_string(),
                abstract_name,
            },
            id,
            secret: secret.to_string(),
            trust_unsealed,
            client,
            role: None,
        })
    }
}

impl Backend for Memif {
    fn kind(&self) -> &'static str {
        "memif"
    }

    fn attach(&self) -> Attach {
        Attach {
            hdr_len: 0,
            direct: false,
        }
    }

    fn start(&mut self, cx: Start<'_>) -> Result<Box<dyn DrivenPort>, PortError> {
        if self.client {
            let slot = Slot::new(cx.name, &self.secret, false, cx.counters.clone(), cx.waker);
            let dialer = client::start(self.key.clone(), self.id, slot.clone())
                .map_err(PortError::Refused)?;
            self.role = Some(Role::Client(slot.clone(), dialer));
            tracing::info!(port = %self.name, socket = %self.key, id = self.id, "memif client port ready");
            return Ok(Box::new(io::MemifIo::new(slot, cx.rings, cx.watcher)));
        }
        let slot = Slot::new(
            cx.name,
            &self.secret,
            self.trust_unsealed,
            cx.counters.clone(),
            cx.waker,
        );
        let reg = server::register(&self.key, self.id, slot.clone()).map_err(PortError::Refused)?;
        self.role = Some(Role::Server(slot.clone(), reg));
        tracing::info!(port = %self.name, socket = %self.key, id = self.id, "memif port ready");
        Ok(Box::new(io::MemifIo::new(slot, cx.rings, cx.watcher)))
    }

    fn stop(&mut self) -> AfterDetach {
        self.role = None;
        AfterDetach::Forget
    }

    fn socket(&self) -> Option<&Path> {
        (!self.key.abstract_name && !self.client).then(|| Path::new(&self.key.path))
    }

    fn shares_socket(&self) -> bool {
        !self.client
    }

    fn status(&self) -> Status {
        Status::default()
    }

    fn describe(&self) -> String {
        fn connected(p: &PeerInfo) -> String {
            format!(
                "connected to {} ({}), C2S {}x{}, S2C {}x{}",
                p.app, p.if_name, p.c2s.0, p.c2s.1, p.s2c.0, p.s2c.1
            )
        }
        match &self.role {
            Some(Role::Client(slot, _)) => {
                let at = format!("memif client, id {} of {}", self.id, self.key);
                match (slot.peer(), slot.note()) {
                    (Some(p), _) => format!("{at}: {}", connected(&p)),
                    (None, Some(why)) => format!("{at}: connecting ({why})"),
                    (None, None) => format!("{at}: connecting"),
                }
            }
            role => {
                let at = format!("memif id {} on {}", self.id, self.key);
                let peer = match role {
                    Some(Role::Server(slot, _)) => slot.peer(),
                    _ => None,
                };
                match peer {
                    Some(p) => format!("{at}: {}", connected(&p)),
                    None => format!("{at}: waiting for a client"),
                }
            }
        }
    }
}
