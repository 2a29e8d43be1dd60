//! `valed`, the userspace VALE switch daemon, as a library: the binary parses flags and
//! calls [`run`].
//!
//! One control thread serves the unix socket (requests in order, one connection per
//! open port: the port lives while a connection holds it); one forwarding thread runs
//! every switch's engine, busy-polling while traffic flows and sleeping in epoll on the
//! ports' kick eventfds when idle (`--threads N`: each switch on one of N). Host ports
//! (TAP interfaces valed creates, existing interfaces attached through AF_PACKET) are
//! driven by their switch's forwarding thread.

// `unsafe` only in `sys`: the system calls rustix does not wrap, and the memory valed
// shares with the kernel (AF_PACKET and AF_XDP rings, UMEM).
#![deny(unsafe_code)]

mod forward;
mod host;
mod server;
pub mod settings;
mod state;
#[allow(unsafe_code)]
mod sys;
mod vhost;
mod xsk;

pub use server::{SetVerbosity, StartError, run};
pub use settings::{ConfigFile, Settings};
