//! The sans-IO forwarding engine of the userspace VALE switch.
//!
//! - [`Switch`]: ports (each a [`vale_abi::Region`]) and per-port counters with drops by
//!   reason; a [`Forwarder`] (one per forwarding thread) runs VALE's two-pass batch
//!   forwarding over it.
//! - [`Lookup`]: the switching decision, pluggable; [`LearningBridge`] is the default,
//!   [`Hub`] and [`StaticMap`] are the trivial ones.
//! - [`Registry`]: switches by name, ports by `vale<sw>:<port>` name, and every limit as a
//!   setting.
//!
//! The engine does no I/O and reads no clock: the caller passes the time and gets back
//! the rings whose clients must be woken.
#![forbid(unsafe_code)]

mod engine;
pub mod lookup;
pub mod name;
pub mod offload;
pub mod registry;
pub mod stats;
mod types;
pub mod vlan;

pub use engine::{
    DEFAULT_BATCH, DEFAULT_MAX_PORTS, Egress, EngineError, Forwarder, MAX_BATCH, MAX_THREADS,
    NoEgress, Notify, Port, RingDir, Switch, SwitchConfig,
};
pub use lookup::{
    AddressTable, Dest, Fdb, FdbConfig, FdbStats, Hub, LearningBridge, Lookup, LookupKind,
    PacketInfo, StaticMap, TableRow,
};
pub use name::{NameError, PortName, quote_input};
pub use registry::{Closed, Limits, PortKey, Registry, RegistryError, SwitchEntry, SwitchVlan};
pub use stats::{DropReason, PortCounters, PortStats, broken_switch_law};
pub use types::{MacAddr, PortId, Timestamp};
/// What [`Egress::send`] is handed: views of the sender's buffers.
pub use vale_abi::Frag;
pub use vlan::{PortVlan, VidSet};
