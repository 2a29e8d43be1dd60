//! Library side of the vale binaries: pkt-gen's frame builder, options and loops.
#![forbid(unsafe_code)]

pub mod pktgen;
