//! Library side of the vale binaries: their command lines (and the man pages and
//! completions made from them), pkt-gen's frame builder, options and loops; vale-ctl's
//! capture (monitor ports to pcap) and `stats --watch`.
#![forbid(unsafe_code)]

pub mod capture;
pub mod cli;
pub mod pktgen;
pub mod watch;
