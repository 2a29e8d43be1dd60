//! `valed`, the userspace VALE switch daemon, as a library: the binary parses flags and
//! calls [`run`].
//!
//! One control thread serves the unix socket (requests in order, one connection per
//! open port: the port lives while a connection holds it); one forwarding thread runs
//! every switch's engine, busy-polling while traffic flows and sleeping in epoll on the
//! ports' kick eventfds when idle.
#![forbid(unsafe_code)]

mod forward;
mod server;
pub mod settings;
mod state;

pub use server::{SetVerbosity, StartError, run};
pub use settings::{ConfigFile, Settings};
