//! The client library of the userspace VALE switch: open a port by name from any
//! process and use netmap's rings on it.
//!
//! ```no_run
//! let port = vale::Port::open("vale0:a")?;
//! port.inject(&[0xff; 60]);
//! port.txsync()?;
//! # Ok::<(), vale::Error>(())
//! ```
//!
//! The daemon `valed` must be running; the socket is found as described in
//! [`default_socket_path`].
#![forbid(unsafe_code)]

mod port;
pub mod proto;
pub mod sock;

pub use port::{Interest, OpenOptions, Port, parse_conf};
pub use sock::default_socket_path;
pub use vale_abi::{AppRing, PortGeometry};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach valed at {}: {source}; is the daemon running? Start it with `valed` (or point VALE_SOCKET at its socket)",
        path.display()
    )]
    NotRunning {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{message}")]
    Daemon {
        kind: proto::ErrorKind,
        message: String,
    },
    #[error("invalid port name {0}")]
    BadName(String),
    #[error("valed closed the connection")]
    Disconnected,
    #[error("protocol error talking to valed: {0}")]
    Protocol(String),
    #[error("{0} failed: {1}")]
    Io(&'static str, #[source] std::io::Error),
    #[error("cannot map the port's memory: {0}")]
    Region(#[source] vale_abi::Error),
    #[error(
        "valed lays out port memory in version {daemon}, this library in version {library} \
         (version 2 moved the sync words out of netmap_ring.sem[]); use a valed and a \
         library from the same release"
    )]
    LayoutVersion { daemon: u32, library: u32 },
}

impl Error {
    /// Whether retrying later may help (the daemon is not there or went away).
    pub fn should_reconnect(&self) -> bool {
        matches!(self, Error::NotRunning { .. } | Error::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_suffix_is_parsed_like_libnetmap() {
        let (n, g) = parse_conf("vale0:a@conf:rings=2,tx-slots=512").unwrap();
        assert_eq!(n, "vale0:a");
        assert_eq!(
            (g.tx_rings, g.rx_rings, g.tx_slots, g.rx_slots),
            (Some(2), Some(2), Some(512), None)
        );
        assert_eq!(
            parse_conf("vale0:a").unwrap().1,
            proto::GeometryRequest::default()
        );
        for bad in [
            "vale0:a@x",
            "vale0:a@conf:rings",
            "vale0:a@conf:slots=x",
            "vale0:a@conf:color=1",
        ] {
            assert!(parse_conf(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn missing_daemon_says_how_to_start_it() {
        let opts = OpenOptions {
            socket: Some("/nonexistent/valed.sock".into()),
            ..Default::default()
        };
        let e = Port::open_with("vale0:a", &opts).unwrap_err();
        assert!(e.should_reconnect());
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/valed.sock") && msg.contains("Start it with `valed`"),
            "{msg}"
        );
    }
}
