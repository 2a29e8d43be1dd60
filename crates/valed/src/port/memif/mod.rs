//! memif ports (DPDK's and VPP's shared-memory interface, protocol 2.0): in progress.
//! What exists so far is the server's handshake (`handshake`), checked without I/O; the
//! socket, the mapping of the client's regions and the data path come next (issue 15).
// The backend that drives the handshake is not written yet.
#![cfg_attr(not(test), allow(dead_code))]

pub mod handshake;
pub mod ring;
