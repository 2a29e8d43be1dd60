//! Library side of the vale binaries: pkt-gen's frame builder, options and loops;
//! vale-ctl's capture (monitor ports to pcap).
#![forbid(unsafe_code)]

pub mod capture;
pub mod pktgen;
