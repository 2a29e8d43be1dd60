//! The control protocol between clients (the library, `vale-ctl`) and `valed`.
//!
//! One JSON message per `SOCK_SEQPACKET` datagram, so message boundaries come from the
//! socket; file descriptors travel with `SCM_RIGHTS`. Every request names the protocol
//! version it speaks (`Open`) or is answered in the current one; unknown fields are
//! ignored, unknown requests answered with `Error { kind: BadRequest }`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Protocol version spoken by this library. 2: port regions in layout 2 (sync words out
/// of `sem[]`, see [`vale_abi::layout::LAYOUT_VERSION`]) and `Opened` says so.
pub const VERSION: u32 = 2;
/// Largest message either side sends or accepts.
pub const MAX_MSG: usize = 256 * 1024;
/// File descriptors that come with `Opened`: the region memfd, the kick eventfd
/// (client -> switch) and the notify eventfd (switch -> client).
pub const OPEN_FDS: usize = 3;

/// A port's shape, as requested (fields left out take the daemon's defaults) or as
/// granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct GeometryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_rings: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_rings: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_slots: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_slots: Option<u32>,
    /// Spare buffers: reserved when this open creates the port (netmap's
    /// `nr_extra_bufs`), and asked for by this open from the port's reserve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_bufs: Option<u32>,
}

impl GeometryRequest {
    pub fn is_empty(&self) -> bool {
        *self == GeometryRequest::default()
    }
}

/// The geometry of an open port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub tx_rings: u16,
    pub rx_rings: u16,
    pub tx_slots: u32,
    pub rx_slots: u32,
    pub buf_size: u32,
    /// Spare buffers after the rings' own (netmap's extra buffers); absent means none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub extra_bufs: u32,
    /// netmap pipes the port's region has room for; absent means none.
    #[serde(default, skip_serializing_if = "is_zero16")]
    pub pipes: u16,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero16(n: &u16) -> bool {
    *n == 0
}

/// The pipe endpoint an `Open` of `valeX:p{N` or `valeX:p}N` got: its place in the
/// port's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeInfo {
    /// Which of the region's pipes (`vale_abi::PipeEnd::pipe`).
    pub index: u16,
    /// The `}` side.
    pub slave: bool,
}

impl From<vale_abi::PortGeometry> for Geometry {
    fn from(g: vale_abi::PortGeometry) -> Self {
        Geometry {
            tx_rings: g.tx_rings,
            rx_rings: g.rx_rings,
            tx_slots: g.tx_slots,
            rx_slots: g.rx_slots,
            buf_size: g.buf_size,
            extra_bufs: g.extra_bufs,
            pipes: g.pipes,
        }
    }
}

impl From<Geometry> for vale_abi::PortGeometry {
    fn from(g: Geometry) -> Self {
        vale_abi::PortGeometry {
            tx_rings: g.tx_rings,
            rx_rings: g.rx_rings,
            tx_slots: g.tx_slots,
            rx_slots: g.rx_slots,
            buf_size: g.buf_size,
            extra_bufs: g.extra_bufs,
            pipes: g.pipes,
        }
    }
}

/// What kind of port valed drives for a `Create` request, and how to reach its peer.
/// A new port kind is one more variant here (and one module in valed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PortSpec {
    /// A TAP interface valed creates, named after the port (netmap's persistent port).
    Tap,
    /// The existing interface the port is named after: through AF_PACKET, or with
    /// `xdp` an XDP program and AF_XDP sockets.
    Interface {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        xdp: bool,
    },
    /// QEMU's `-netdev dgram` over unix sockets: valed binds `socket` (the VM's
    /// `remote.path`) and sends to `peer` (the VM's `local.path`).
    QemuDgram { socket: String, peer: String },
    /// QEMU's `-netdev stream` over a unix socket: valed listens at `listen` (the VM
    /// connects, `server=off`; it may reconnect) or connects to `connect` (the VM
    /// listens, `server=on`).
    QemuStream {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listen: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        connect: Option<String>,
    },
    /// A vhost-user virtio-net device on `socket`: valed listens (QEMU `-netdev
    /// vhost-user`, DPDK `net_virtio_user`) or, with `client`, connects to a frontend
    /// listening there (QEMU `server=on`, OVS `dpdkvhostuserclient`).
    VhostUser {
        socket: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        client: bool,
    },
}

impl PortSpec {
    /// The socket file valed itself creates or binds for this port, if any (no two
    /// ports may share one).
    pub fn socket(&self) -> Option<&str> {
        match self {
            PortSpec::QemuDgram { socket, .. } | PortSpec::VhostUser { socket, .. } => Some(socket),
            PortSpec::QemuStream { listen, .. } => listen.as_deref(),
            PortSpec::Tap | PortSpec::Interface { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Open (and create if needed) a port; the connection then holds it open.
    Open {
        version: u32,
        name: String,
        #[serde(default)]
        geometry: GeometryRequest,
        /// No other client may hold the port while this one does, and this open fails
        /// if one does (netmap's `NR_EXCLUSIVE`, here for the whole port).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        exclusive: bool,
    },
    /// Lets go of the port this connection holds, as closing the connection would (the
    /// connection may then open another).
    Close,
    /// Switches and their ports.
    List,
    /// Counters of one port, or of all.
    Stats {
        #[serde(default)]
        port: Option<String>,
    },
    /// A switch's learned addresses.
    Fdb { switch: String },
    /// Change a run-time setting (`bridge_batch`, `verbose`).
    Set { key: String, value: String },
    /// The daemon's settings.
    Settings,
    /// netmap's `vale-ctl -n NAME`: a persistent port, here a TAP interface NAME that
    /// valed creates and keeps until `HostRemove` (or until it exits).
    HostCreate { name: String },
    /// netmap's `vale-ctl -r NAME`: removes a persistent port that is not attached.
    HostRemove { name: String },
    /// netmap's `vale-ctl -a valeX:NAME`: attaches persistent port NAME, or the existing
    /// interface NAME (through AF_PACKET, or with `xdp` an XDP program and AF_XDP
    /// sockets), to switch valeX as port `valeX:NAME`.
    Attach {
        port: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        xdp: bool,
    },
    /// netmap's `vale-ctl -d valeX:NAME`: detaches it again; an interface is given back
    /// untouched, a persistent port stays for another attach.
    Detach { port: String },
    /// A port `valeX:NAME` that valed drives itself, of the kind `spec` says. Removed
    /// with `Detach`. (`QemuDgram`, `QemuStream` and `VhostUser` below are the same
    /// request in the form older clients send.)
    Create { port: String, spec: PortSpec },
    /// A port `valeX:NAME` for QEMU's `-netdev dgram` over unix sockets: valed binds
    /// `socket` (the VM's `remote.path`) and sends to `peer` (the VM's `local.path`).
    /// Removed with `Detach`.
    QemuDgram {
        port: String,
        socket: String,
        peer: String,
    },
    /// A port `valeX:NAME` for QEMU's `-netdev stream` over a unix socket: valed listens
    /// at `listen` (the VM connects, `server=off`; it may reconnect) or connects to
    /// `connect` (the VM listens, `server=on`). Removed with `Detach`.
    QemuStream {
        port: String,
        #[serde(default)]
        listen: Option<String>,
        #[serde(default)]
        connect: Option<String>,
    },
    /// A port `valeX:NAME` served as a vhost-user virtio-net device on `socket`: valed
    /// listens (QEMU `-netdev vhost-user`, DPDK `net_virtio_user` connect) or, with
    /// `client`, connects to a frontend listening there (QEMU `server=on`, OVS
    /// `dpdkvhostuserclient`). Removed with `Detach`.
    VhostUser {
        port: String,
        socket: String,
        #[serde(default)]
        client: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The message was not understood.
    BadRequest,
    /// The client speaks another protocol version.
    Version,
    /// A malformed port or switch name.
    BadName,
    /// A limit would be exceeded.
    Limit,
    /// No such port or switch.
    NotFound,
    /// Something failed inside the daemon.
    Internal,
    /// It exists already (netmap's EEXIST).
    Exists,
    /// It is in use (netmap's EBUSY): attached, or held by a client.
    Busy,
    /// The client may not do this (host ports: only root or valed's own user).
    Permission,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortSummary {
    pub name: String,
    pub index: u16,
    pub geometry: Geometry,
    /// Open connections holding the port.
    pub clients: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchInfo {
    pub name: String,
    pub index: usize,
    pub bridge_batch: usize,
    pub ports: Vec<PortSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Counters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub forwarded: u64,
    pub copies: u64,
    pub copies_dropped: u64,
    pub ring_resets: u64,
    /// Drops by reason (`ring_full`, `runt`, `bad_buf`, `bad_len`, `bad_frag`,
    /// `no_dest`, `oversize`, `bad_rx_buf`, `bad_offload`, `tx_error`).
    pub drops: BTreeMap<String, u64>,
}

/// A host port: a TAP interface valed created, or an interface attached by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The interface name.
    pub name: String,
    /// `tap` (created by valed), `nic` (an existing interface, through AF_PACKET),
    /// `nic-xdp` (one through XDP and AF_XDP), `qemu-stream` or `qemu-dgram` (a VM's
    /// `-netdev stream` / `dgram` socket), `vhost-user`.
    pub kind: String,
    /// The switch port it is attached as, `valeX:NAME`.
    #[serde(default)]
    pub attached: Option<String>,
    /// A QEMU stream port waiting for its VM to connect: the port it will be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The interface was deleted under the port: detach and remove it.
    #[serde(default)]
    pub gone: bool,
    pub counters: HostCounters,
}

/// Frames between a host port's interface and its switch port, and what was lost there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostCounters {
    /// Frames read from the interface into the switch.
    pub from_host: u64,
    pub from_host_bytes: u64,
    /// Frames written from the switch to the interface.
    pub to_host: u64,
    pub to_host_bytes: u64,
    /// Frames larger than the largest packet the port can carry, dropped.
    pub truncated: u64,
    /// Writes the interface refused (down, queue full), frames dropped.
    pub write_errors: u64,
    /// Failed reads (vhost-user: guest TX descriptors that are not readable guest
    /// memory, or malformed chains).
    pub read_errors: u64,
    /// Frames whose offloads (checksum, TSO) could not be finished for a peer that does
    /// not take them (malformed headers), dropped.
    #[serde(default)]
    pub bad_offload: u64,
    /// Frames the kernel dropped on an AF_XDP port's rings (`-a --xdp`): received ones
    /// with no room or larger than a 4 KiB frame, sent descriptors it refused.
    #[serde(default)]
    pub kernel_drops: u64,
    /// Frames sent to the port while its peer was gone (a QEMU stream port whose VM hung
    /// up), dropped.
    #[serde(default)]
    pub no_peer: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortStats {
    pub name: String,
    pub switch: String,
    pub index: u16,
    pub counters: Counters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdbRow {
    pub mac: String,
    pub port: String,
    pub index: u16,
    pub age_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The port is open; its fds come with this message (see [`OPEN_FDS`]).
    Opened {
        switch: String,
        port: String,
        index: u16,
        geometry: Geometry,
        /// The region's layout ([`vale_abi::layout::LAYOUT_VERSION`] of the daemon); a
        /// daemon from before the field mapped layout 1.
        #[serde(default = "layout_v1")]
        layout_version: u32,
        /// Spare buffers handed to this open, `[first index, count]`: its to use until it
        /// lets go of the port (then they go back to the port's reserve).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra: Option<[u32; 2]>,
        /// For a pipe endpoint (`valeX:p{N`, `}N`): which rings of the port's region are
        /// its; the region is the port's, the fds are the pipe's wake-ups (the second
        /// wakes the other end, the third is this end's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pipe: Option<PipeInfo>,
    },
    List {
        switches: Vec<SwitchInfo>,
        /// Host ports, attached or not.
        #[serde(default)]
        hosts: Vec<HostInfo>,
    },
    Stats {
        ports: Vec<PortStats>,
    },
    Fdb {
        switch: String,
        entries: Vec<FdbRow>,
        counters: BTreeMap<String, u64>,
    },
    Settings {
        settings: BTreeMap<String, String>,
    },
    Done {
        message: String,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

fn layout_v1() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_read_as_documented() {
        let r = Request::Open {
            version: VERSION,
            name: "vale0:a".into(),
            geometry: GeometryRequest {
                tx_slots: Some(512),
                ..Default::default()
            },
            exclusive: false,
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"op":"open","version":2,"name":"vale0:a","geometry":{"tx_slots":512}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        let list: Request = serde_json::from_str(r#"{"op":"list","extra":1}"#).unwrap();
        assert_eq!(list, Request::List);
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
    }

    #[test]
    fn opened_names_the_region_layout() {
        let r = Response::Opened {
            switch: "vale0".into(),
            port: "vale0:a".into(),
            index: 0,
            geometry: vale_abi::PortGeometry::default().into(),
            layout_version: vale_abi::layout::LAYOUT_VERSION,
            extra: None,
            pipe: None,
        };
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.ends_with(r#","layout_version":2}"#), "{j}");
        assert_eq!(serde_json::from_str::<Response>(&j).unwrap(), r);
        // An answer without the field comes from a daemon that kept the sync words in sem[].
        let old = r#"{"status":"opened","switch":"vale0","port":"vale0:a","index":0,
            "geometry":{"tx_rings":1,"rx_rings":1,"tx_slots":1024,"rx_slots":1024,"buf_size":2048}}"#;
        match serde_json::from_str::<Response>(old).unwrap() {
            Response::Opened { layout_version, .. } => assert_eq!(layout_version, 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_requests_carry_a_tagged_spec() {
        let r = Request::Create {
            port: "vale0:vm1".into(),
            spec: PortSpec::VhostUser {
                socket: "/run/vm1.sock".into(),
                client: false,
            },
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"op":"create","port":"vale0:vm1","spec":{"kind":"vhost-user","socket":"/run/vm1.sock"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        let s: PortSpec = serde_json::from_str(r#"{"kind":"qemu-stream","listen":"/a"}"#).unwrap();
        assert_eq!(s.socket(), Some("/a"));
        let s: PortSpec = serde_json::from_str(r#"{"kind":"interface","xdp":true}"#).unwrap();
        assert_eq!(s, PortSpec::Interface { xdp: true });
        assert!(serde_json::from_str::<PortSpec>(r#"{"kind":"memif"}"#).is_err());
    }
}
