//! `valed`, the userspace VALE switch daemon, as a library: the binary parses flags and
//! calls [`run`].
//!
//! One control thread serves the unix socket (requests in order, one connection per
//! open port: the port lives while a connection holds it); one forwarding thread per
//! lane runs its switches' engines, busy-polling while traffic flows and sleeping in
//! epoll on the ports' kick eventfds when idle (`--threads N`: each switch on one of N).
//! Host ports (TAP interfaces valed creates, existing interfaces attached through
//! AF_PACKET or AF_XDP, QEMU sockets, vhost-user) are driven by their switch's
//! forwarding thread.
//!
//! - `daemon`: start and shutdown; `control`: the control thread; `lane`: a forwarding
//!   thread and what it owns; `error`: why requests are refused; `metrics`: the
//!   Prometheus endpoint (`--metrics`); `notify`: systemd's readiness protocol.

// `unsafe` only in `sys`: the system calls rustix does not wrap, and the memory valed
// shares with the kernel (AF_PACKET and AF_XDP rings, UMEM).
#![deny(unsafe_code)]

mod control;
mod daemon;
mod error;
/// Entry points for the fuzz targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing;
mod lane;
pub mod log;
mod metrics;
mod notify;
mod port;
pub mod settings;
#[allow(unsafe_code)]
mod sys;

pub use control::SetVerbosity;
pub use daemon::run;
pub use error::StartError;
pub use port::probe_af_xdp;
pub use settings::{ConfigFile, Declared, MetricsAddr, Settings, SettingsError};
