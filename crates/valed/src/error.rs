//! valed's errors: why the daemon could not start, and why a control request was
//! refused (each mapped once to the protocol's error kind).

use std::path::PathBuf;
use vale::proto::{ErrorKind, Response};
use vale_switch::RegistryError;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another valed is already listening on {0}")]
    AlreadyRunning(PathBuf),
    #[error("{what} {path}: {source}")]
    Socket {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} failed: {1}")]
    Os(&'static str, #[source] std::io::Error),
    #[error("cannot serve metrics on {addr}: {source} (see valed --metrics)")]
    Metrics {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why a control request was refused. The message is what the client prints: it names
/// the input, the limit and the fix; [`CtlError::kind`] is what a program looks at.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The switch registry refused (names, limits, missing ports).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("malformed request ({len} bytes): {why}")]
    Malformed { len: usize, why: String },
    /// A request longer than valed reads in one message (the rest of it is lost).
    #[error("request too long: more than {max} bytes, the most valed reads in one message")]
    TooLong { max: usize },
    #[error("client speaks protocol {client}, valed speaks {daemon}; use matching versions")]
    Version { client: u32, daemon: u32 },
    /// A reply too large for one message, to a client that cannot ask for pages.
    #[error(
        "the {what} does not fit in one message and this client (control protocol 2) cannot \
         read it in pages; use a vale-ctl and client library of protocol {daemon}"
    )]
    Unpaged { what: &'static str, daemon: u32 },
    #[error("this connection already holds a port; open another connection")]
    AlreadyHolding,
    /// Only root or valed's own user may do `what`.
    #[error("{what}: only root or valed's own user may {action}")]
    Permission { what: String, action: &'static str },
    /// Port `port` was created by another uid, and its switch is not shared with this one.
    #[error(
        "{port} belongs to uid {owner}: only its owner, root or valed's own user may open it, unless its switch is shared (valed --share {switch}[:GROUP])"
    )]
    NotOwner {
        port: String,
        owner: u32,
        switch: String,
    },
    /// A request or argument that cannot be carried out as given.
    #[error("{0}")]
    BadRequest(String),
    /// A name (interface, port, switch) that is not acceptable.
    #[error("{0}")]
    BadName(String),
    /// It exists already.
    #[error("{0}")]
    Exists(String),
    /// It is in use.
    #[error("{0}")]
    Busy(String),
    /// It does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A limit would be exceeded.
    #[error("{0}")]
    Limit(String),
    /// A port could not be set up: what was being done, and the system's answer.
    #[error("{0}")]
    Port(#[from] PortError),
    /// A config file reload that could not make everything the file declares: what
    /// failed, by port, and what was done.
    #[error("{0}")]
    Unapplied(String),
    /// Something that should not happen inside the daemon.
    #[error("{0}")]
    Internal(String),
}

impl CtlError {
    /// The protocol's error kind for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CtlError::Registry(e) => match e {
                RegistryError::Name(_) | RegistryError::BadMonitor { .. } => ErrorKind::BadName,
                RegistryError::TooManySwitches { .. }
                | RegistryError::OverLimit { .. }
                | RegistryError::Engine { .. } => ErrorKind::Limit,
                RegistryError::NoSuchPort(_) | RegistryError::NoSuchSwitch(_) => {
                    ErrorKind::NotFound
                }
                RegistryError::Region { .. } => ErrorKind::Internal,
            },
            CtlError::Malformed { .. }
            | CtlError::TooLong { .. }
            | CtlError::AlreadyHolding
            | CtlError::BadRequest(_) => ErrorKind::BadRequest,
            CtlError::Version { .. } | CtlError::Unpaged { .. } => ErrorKind::Version,
            CtlError::Permission { .. } | CtlError::NotOwner { .. } => ErrorKind::Permission,
            CtlError::BadName(_) => ErrorKind::BadName,
            CtlError::Exists(_) => ErrorKind::Exists,
            CtlError::Busy(_) => ErrorKind::Busy,
            CtlError::NotFound(_) => ErrorKind::NotFound,
            CtlError::Limit(_) => ErrorKind::Limit,
            CtlError::Port(e) => e.kind(),
            CtlError::Unapplied(_) | CtlError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<CtlError> for Response {
    fn from(e: CtlError) -> Response {
        Response::Error {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Why a port's peer (interface, socket, VM) could not be reached or set up.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A system call failed while doing `what` (the message says what valed needs).
    #[error("{what}: {source}{hint}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
        /// What usually fixes it (" (valed needs CAP_NET_RAW)"), or empty.
        hint: &'static str,
    },
    /// Nobody listens where valed was told to connect.
    #[error("cannot connect to {path}: {source} (is QEMU listening there, server=on?)")]
    NoPeer {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The interface went away while it was being attached.
    #[error("{0} went away")]
    Gone(String),
    /// Set up refused for a reason that is not a system error.
    #[error("{0}")]
    Refused(String),
}

impl PortError {
    pub fn io(what: impl Into<String>, source: impl Into<std::io::Error>) -> PortError {
        PortError::Io {
            what: what.into(),
            source: source.into(),
            hint: "",
        }
    }

    /// The protocol's error kind: a missing peer is `NotFound`, the rest `Internal`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PortError::NoPeer { .. } => ErrorKind::NotFound,
            _ => ErrorKind::Internal,
        }
    }

    /// Whether a supervisor should try again later (the peer may come back), rather
    /// than give up (rust-vmm vhost's `should_reconnect`).
    pub fn should_reconnect(&self) -> bool {
        match self {
            PortError::NoPeer { .. } | PortError::Gone(_) => true,
            PortError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::Interrupted
            ),
            PortError::Refused(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_one_kind_and_keeps_its_message() {
        let cases: Vec<(CtlError, ErrorKind, &str)> = vec![
            (
                CtlError::Version {
                    client: 9,
                    daemon: 1,
                },
                ErrorKind::Version,
                "client speaks protocol 9, valed speaks 1; use matching versions",
            ),
            (
                CtlError::Unpaged {
                    what: "list",
                    daemon: 3,
                },
                ErrorKind::Version,
                "the list does not fit in one message and this client (control protocol 2) \
                 cannot read it in pages; use a vale-ctl and client library of protocol 3",
            ),
            (
                CtlError::TooLong { max: 262144 },
                ErrorKind::BadRequest,
                "request too long: more than 262144 bytes",
            ),
            (
                CtlError::Permission {
                    what: "vale0:a/t".into(),
                    action: "open monitors",
                },
                ErrorKind::Permission,
                "vale0:a/t: only root or valed's own user may open monitors",
            ),
            (
                RegistryError::NoSuchSwitch("vale9".into()).into(),
                ErrorKind::NotFound,
                "no switch `vale9` exists",
            ),
            (
                PortError::NoPeer {
                    path: "/x".into(),
                    source: std::io::ErrorKind::NotFound.into(),
                }
                .into(),
                ErrorKind::NotFound,
                "cannot connect to /x",
            ),
            (
                PortError::Gone("eth9".into()).into(),
                ErrorKind::Internal,
                "eth9 went away",
            ),
        ];
        for (e, kind, text) in cases {
            let r: Response = e.into();
            match r {
                Response::Error { kind: k, message } => {
                    assert_eq!(k, kind, "{message}");
                    assert!(message.starts_with(text), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn only_transient_port_errors_ask_for_a_reconnect() {
        assert!(PortError::Gone("x".into()).should_reconnect());
        assert!(PortError::io("connect", std::io::ErrorKind::ConnectionRefused).should_reconnect());
        assert!(!PortError::io("bind", std::io::ErrorKind::PermissionDenied).should_reconnect());
        assert!(!PortError::Refused("no".into()).should_reconnect());
    }
}
