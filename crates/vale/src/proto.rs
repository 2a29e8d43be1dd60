//! The control protocol between clients (the library, `vale-ctl`) and `valed`.
//!
//! One JSON message per `SOCK_SEQPACKET` datagram, so message boundaries come from the
//! socket; file descriptors travel with `SCM_RIGHTS`. Every request names the protocol
//! version it speaks (`Open`, and the [`Page`] of `list`, `stats` and `fdb`) or is
//! answered in the current one; unknown fields are ignored, unknown requests answered
//! with `Error { kind: BadRequest }`.
//!
//! Replies that grow with the configuration (`list`, `stats`, `fdb`) come in pages, each
//! one message of at most [`PAGE_BYTES`]: a request asks for the first page, or for the
//! one after the cursor the previous page ended with (`next`); the last page has no
//! `next`. valed keeps nothing between pages (the cursor is a place in the listing's
//! order, so a port or address present throughout is listed exactly once), and
//! [`crate::sock::call`] asks for every page and hands back the whole reply.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Protocol version spoken by this library. 2: port regions in layout 2 (sync words out
/// of `sem[]`, see [`vale_abi::layout::LAYOUT_VERSION`]) and `Opened` says so. 3: replies
/// to `list`, `stats` and `fdb` come in pages ([`Page`]).
pub const VERSION: u32 = 3;
/// Largest message either side sends or accepts.
pub const MAX_MSG: usize = 256 * 1024;
/// Most bytes of one page of a paged reply (valed sends less where the connection's
/// send buffer is smaller: a message must fit in it whole).
pub const PAGE_BYTES: usize = 64 * 1024;
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
    /// A TAP interface valed creates, named after the port (netmap's persistent port),
    /// with `queues` queues (1 to 16; 1 when absent): more than one makes it an
    /// `IFF_MULTI_QUEUE` device, queue `i` the switch port's TX and RX ring `i`.
    Tap {
        #[serde(default = "one", skip_serializing_if = "is_one")]
        queues: u16,
    },
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
    /// listening there (QEMU `server=on`, OVS `dpdkvhostuserclient`). The device
    /// offers `queues` queue pairs (1 to 16; 1 when absent), each the switch port's TX
    /// and RX ring of the same number.
    VhostUser {
        socket: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        client: bool,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        queues: u16,
    },
    /// A memif interface (DPDK's `net_memif`, VPP's memif) served on `socket`, a file or
    /// with `abstract_name` a name in the abstract namespace: valed is the server, and
    /// the client that names interface `id` (and gives `secret`, if one is set) is this
    /// port. Several memif ports may share a socket, each with its own id. With
    /// `client`, valed connects to a memif server there instead, as interface `id`
    /// (giving `secret`), and again whenever the server comes back.
    Memif {
        socket: String,
        #[serde(
            default,
            rename = "abstract",
            skip_serializing_if = "std::ops::Not::not"
        )]
        abstract_name: bool,
        #[serde(default)]
        id: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        client: bool,
    },
    /// A VXLAN uplink (RFC 7348): the switch's frames for VNI `vni`, carried in UDP
    /// datagrams between `local` (this host's underlay address) and `remote` VTEPs
    /// (head-end replication of broadcast, multicast and unknown unicast), or multicast
    /// `group` joined on interface `dev`. With `learning` (the default) the VTEP behind
    /// each inner source address is learned from the outer source address and unicast to
    /// it goes there alone. `src_ports` (`LO-HI`) bounds the flow-hashed UDP source
    /// ports; without it the kernel picks them from its ephemeral range.
    Vxlan {
        vni: u32,
        local: String,
        #[serde(default = "vxlan_port")]
        port: u16,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remote: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dev: Option<String>,
        #[serde(default = "yes")]
        learning: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        src_ports: Option<String>,
        /// UDP GSO on transmit and GRO on receive, where the kernel offers them (the
        /// default); off, every datagram is its own send and read.
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        offloads: bool,
        /// More VNIs on the same socket, each carrying one VLAN: `VNI:VID` entries. A
        /// frame of VLAN VID leaves untagged in VNI, and what arrives in VNI enters
        /// tagged VID; `vni` carries the untagged frames.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        map: Vec<String>,
    },
}

/// The IANA port for VXLAN.
fn vxlan_port() -> u16 {
    4789
}

fn is_true(b: &bool) -> bool {
    *b
}

fn one() -> u16 {
    1
}

fn is_one(n: &u16) -> bool {
    *n == 1
}

fn yes() -> bool {
    true
}

impl PortSpec {
    /// The socket file valed itself creates or binds for this port, if any (no two
    /// ports may share one).
    pub fn socket(&self) -> Option<&str> {
        match self {
            PortSpec::QemuDgram { socket, .. } | PortSpec::VhostUser { socket, .. } => Some(socket),
            PortSpec::QemuStream { listen, .. } => listen.as_deref(),
            PortSpec::Memif {
                socket,
                abstract_name: false,
                client: false,
                ..
            } => Some(socket),
            PortSpec::Memif { .. } => None,
            PortSpec::Tap { .. } | PortSpec::Interface { .. } | PortSpec::Vxlan { .. } => None,
        }
    }
}

/// Which page of a paged reply a request asks for: the first, or the one after `after`
/// (the `next` of the page before). A request without one (protocol 2) is answered in one
/// message, or refused with `Error { kind: Version }` when the reply does not fit in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The protocol version the client speaks ([`VERSION`]).
    pub version: u32,
    /// Where the previous page ended; opaque to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
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
    /// Switches and their ports, then host ports (paged).
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<Page>,
    },
    /// Counters of one port, or of all (paged).
    Stats {
        #[serde(default)]
        port: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<Page>,
    },
    /// A switch's learned addresses (paged).
    Fdb {
        switch: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<Page>,
    },
    /// Change a run-time setting (`bridge_batch`, `verbose`).
    Set { key: String, value: String },
    /// A switch's VLAN settings: whether it filters, and its ports' modes
    /// (`vale-ctl vlan valeX`).
    Vlan { switch: String },
    /// Changes VLAN settings (as privileged as `Set`): with `filtering`, whether switch
    /// `target` filters VLANs; with `mode`, the VLAN mode of port `target` (`access 10`,
    /// `trunk 10,20 native 30 tagged`, `tunnel 100`, or `none` for the default, a trunk
    /// of every VLAN). Kept by name: a switch or port created later gets them.
    VlanSet {
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filtering: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
    },
    /// Read the config file again and apply its `[[port]]` declarations (as SIGHUP).
    Reload,
    /// The running state as a config file (`Done { message }` holds it).
    ConfigDump,
    /// The daemon's settings.
    Settings,
    /// netmap's `vale-ctl -n NAME`: a persistent port, here a TAP interface NAME that
    /// valed creates and keeps until `HostRemove` (or until it exits), with `queues`
    /// queues (1 to 16; 1, when absent, is netmap's one-queue TAP).
    HostCreate {
        name: String,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        queues: u16,
    },
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
    /// Copies of other ports' frames handed to this port, segmented ones, the segments
    /// they became, and copies handed to it as a monitor (the laws in
    /// `vale_switch::stats`: `rx_copies + mon_copies - rx_segmented + rx_segments =
    /// rx_packets + receiver drops`; over a switch, copies = rx_copies).
    #[serde(default)]
    pub rx_copies: u64,
    #[serde(default)]
    pub rx_segmented: u64,
    #[serde(default)]
    pub rx_segments: u64,
    #[serde(default)]
    pub mon_copies: u64,
    pub ring_resets: u64,
    /// Drops by reason (`ring_full`, `runt`, `bad_buf`, `bad_len`, `bad_frag`,
    /// `no_dest`, `oversize`, `bad_rx_buf`, `bad_offload`, `tx_error`,
    /// `vlan_ingress_filter`, `vlan_not_member`).
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
    /// Where its peer is and how it is, in a few words ("memif id 7 on PATH: connected
    /// to DPDK 22.11.11 (net_memif0), C2S 1x1024, S2C 1x1024").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub about: String,
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
    /// Frames the kernel dropped on an attached interface's socket: on an AF_XDP port's
    /// rings (`-a --xdp`) received ones with no room or larger than a 4 KiB frame, sent
    /// descriptors it refused; on an AF_PACKET port's (`-a`) received ones with its
    /// receive ring or socket buffer full (`PACKET_STATISTICS`).
    #[serde(default)]
    pub kernel_drops: u64,
    /// Frames sent to the port while its peer was gone (a QEMU stream port whose VM hung
    /// up), dropped.
    #[serde(default)]
    pub no_peer: u64,
    /// memif: descriptors naming bytes outside the client's memory; the frame (or the
    /// posted buffer) was skipped.
    #[serde(default)]
    pub bad_desc: u64,
    /// memif: frames whose chain of descriptors was longer than the largest frame,
    /// dropped.
    #[serde(default)]
    pub chain_too_long: u64,
    /// memif: peers (clients, or the server of a client port) that went away, or were
    /// cut off for what they did, after connecting; valed removing the port is not one.
    #[serde(default)]
    pub peer_disconnects: u64,
    /// Times a vhost-user frontend truncated its guest memory under valed (caught, and
    /// the frontend cut off).
    #[serde(default)]
    pub memory_faults: u64,
    /// VXLAN: datagrams too short for the VXLAN and Ethernet headers, dropped.
    #[serde(default)]
    pub vxlan_too_short: u64,
    /// VXLAN: datagrams without the I flag (the VNI is not valid), dropped.
    #[serde(default)]
    pub vxlan_no_i_flag: u64,
    /// VXLAN: datagrams with reserved flag or header bits set, dropped (as Linux does).
    #[serde(default)]
    pub vxlan_reserved: u64,
    /// VXLAN: datagrams for a VNI no uplink on the UDP socket takes, dropped (counted on
    /// the socket's oldest uplink).
    #[serde(default)]
    pub vxlan_foreign_vni: u64,
    /// VXLAN: datagrams of this uplink's VNI that another uplink on its UDP socket read
    /// while this one's inbox was full (it fell behind), dropped.
    #[serde(default)]
    pub vxlan_queue_full: u64,
    /// VXLAN: frames in the uplink's own VNI tagged with a VLAN that another VNI is
    /// mapped to (`--map`), dropped: they would reach that VNI's segment.
    #[serde(default)]
    pub vxlan_tagged_mapped: u64,
    /// Frames too long for the peer, dropped: on a VXLAN uplink, a datagram over the
    /// underlay's MTU (`EMSGSIZE`: the uplink never fragments); on an attached
    /// interface, a frame over its MTU + 14 (+ 4 for one pushed VLAN tag: see the README's
    /// VLAN section), refused by the kernel (AF_PACKET) or by valed (AF_XDP).
    #[serde(default)]
    pub too_big: u64,
    /// VXLAN: copies of a replicated frame that could not be sent to one of the remotes
    /// while others took it (the frame itself counts as sent).
    #[serde(default)]
    pub replica_drops: u64,
    /// VXLAN: datagrams sent (a replicated frame is one per remote).
    #[serde(default)]
    pub vxlan_datagrams: u64,
    /// VXLAN: sends of a train of datagrams that the kernel segments (UDP GSO: a TSO
    /// super-frame's segments to one VTEP in one send); their datagrams are in
    /// `vxlan_datagrams` too.
    #[serde(default)]
    pub gso_sends: u64,
    /// VXLAN: reads that returned a train of datagrams the kernel coalesced (UDP GRO),
    /// each split and taken as its datagrams.
    #[serde(default)]
    pub gro_reads: u64,
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
    /// The address's VLAN, on a switch that filters VLANs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub port: String,
    pub index: u16,
    pub age_secs: u32,
    /// For an address learned on a VXLAN uplink: the remote VTEP (outer source IP) it
    /// was learned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<String>,
    /// And the VNI, when the uplink carries several (`--map`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
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
    /// A page of the listing: ports by switch, then host ports. A switch whose ports
    /// do not fit in one page is in several, each with some of its ports.
    List {
        switches: Vec<SwitchInfo>,
        /// Host ports, attached or not.
        #[serde(default)]
        hosts: Vec<HostInfo>,
        /// More follow: ask for the page after this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Stats {
        ports: Vec<PortStats>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Fdb {
        switch: String,
        entries: Vec<FdbRow>,
        /// The table's counters when this page was read.
        counters: BTreeMap<String, u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    Settings {
        settings: BTreeMap<String, String>,
    },
    /// A switch's VLAN settings (the answer to `Vlan`).
    Vlan {
        switch: String,
        filtering: bool,
        /// VLAN mode by port name: every port set by name (open or not) and every open
        /// port (`trunk all`, the default, for those never set).
        ports: BTreeMap<String, String>,
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

impl Request {
    /// This request for the page after `after` (`None`: the first), if its reply comes
    /// in pages.
    pub fn paged(&self, after: Option<String>) -> Option<Request> {
        let page = Some(Page {
            version: VERSION,
            after,
        });
        match self {
            Request::List { .. } => Some(Request::List { page }),
            Request::Stats { port, .. } => Some(Request::Stats {
                port: port.clone(),
                page,
            }),
            Request::Fdb { switch, .. } => Some(Request::Fdb {
                switch: switch.clone(),
                page,
            }),
            _ => None,
        }
    }
}

impl Response {
    /// Where the next page starts, if this is a page and more follow.
    pub fn next_page(&self) -> Option<&str> {
        match self {
            Response::List { next, .. }
            | Response::Stats { next, .. }
            | Response::Fdb { next, .. } => next.as_deref(),
            _ => None,
        }
    }

    /// Appends the page that follows this reply (its rows, and its `next`): a switch
    /// split between the two pages becomes one again. A page of another kind is an error.
    pub fn append(&mut self, page: Response) -> Result<(), String> {
        match (self, page) {
            (
                Response::List {
                    switches,
                    hosts,
                    next,
                },
                Response::List {
                    switches: more,
                    hosts: more_hosts,
                    next: then,
                },
            ) => {
                let mut more = more.into_iter();
                if let Some(first) = more.next() {
                    match switches.last_mut() {
                        Some(s) if s.index == first.index && s.name == first.name => {
                            s.ports.extend(first.ports)
                        }
                        _ => switches.push(first),
                    }
                }
                switches.extend(more);
                hosts.extend(more_hosts);
                *next = then;
            }
            (
                Response::Stats { ports, next },
                Response::Stats {
                    ports: more,
                    next: then,
                },
            ) => {
                ports.extend(more);
                *next = then;
            }
            (
                Response::Fdb {
                    switch,
                    entries,
                    counters,
                    next,
                },
                Response::Fdb {
                    switch: other,
                    entries: more,
                    counters: now,
                    next: then,
                },
            ) if *switch == other => {
                entries.extend(more);
                *counters = now;
                *next = then;
            }
            (whole, page) => {
                return Err(format!(
                    "a `{}` page does not continue a `{}` reply",
                    page.kind_name(),
                    whole.kind_name()
                ));
            }
        }
        Ok(())
    }

    fn kind_name(&self) -> &'static str {
        match self {
            Response::Opened { .. } => "opened",
            Response::List { .. } => "list",
            Response::Stats { .. } => "stats",
            Response::Fdb { .. } => "fdb",
            Response::Settings { .. } => "settings",
            Response::Vlan { .. } => "vlan",
            Response::Done { .. } => "done",
            Response::Error { .. } => "error",
        }
    }
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
            r#"{"op":"open","version":3,"name":"vale0:a","geometry":{"tx_slots":512}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        let list: Request = serde_json::from_str(r#"{"op":"list","extra":1}"#).unwrap();
        assert_eq!(list, Request::List { page: None });
        assert!(serde_json::from_str::<Request>(r#"{"op":"explode"}"#).is_err());
        let v = Request::VlanSet {
            target: "vale0:a".into(),
            filtering: None,
            mode: Some("access 10".into()),
        };
        let j = serde_json::to_string(&v).unwrap();
        assert_eq!(
            j,
            r#"{"op":"vlan_set","target":"vale0:a","mode":"access 10"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), v);
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
    fn a_tap_of_one_queue_travels_as_before_and_more_queues_as_queues() {
        // One queue: what older clients, daemons and files say.
        let one = PortSpec::Tap { queues: 1 };
        assert_eq!(serde_json::to_string(&one).unwrap(), r#"{"kind":"tap"}"#);
        assert_eq!(
            serde_json::from_str::<PortSpec>(r#"{"kind":"tap"}"#).unwrap(),
            one
        );
        let mq = PortSpec::Tap { queues: 4 };
        let j = serde_json::to_string(&mq).unwrap();
        assert_eq!(j, r#"{"kind":"tap","queues":4}"#);
        assert_eq!(serde_json::from_str::<PortSpec>(&j).unwrap(), mq);
        let r = Request::HostCreate {
            name: "vi0".into(),
            queues: 1,
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"op":"host_create","name":"vi0"}"#);
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        let r = Request::HostCreate {
            name: "vi0".into(),
            queues: 2,
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"op":"host_create","name":"vi0","queues":2}"#);
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
    }

    #[test]
    fn create_requests_carry_a_tagged_spec() {
        let r = Request::Create {
            port: "vale0:vm1".into(),
            spec: PortSpec::VhostUser {
                socket: "/run/vm1.sock".into(),
                client: false,
                queues: 1,
            },
        };
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(
            j,
            r#"{"op":"create","port":"vale0:vm1","spec":{"kind":"vhost-user","socket":"/run/vm1.sock"}}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        // Several queue pairs travel as `queues`; one, the default, as nothing (what
        // older daemons and files say).
        let mq = PortSpec::VhostUser {
            socket: "/s".into(),
            client: false,
            queues: 4,
        };
        let j = serde_json::to_string(&mq).unwrap();
        assert_eq!(j, r#"{"kind":"vhost-user","socket":"/s","queues":4}"#);
        assert_eq!(serde_json::from_str::<PortSpec>(&j).unwrap(), mq);
        let s: PortSpec = serde_json::from_str(r#"{"kind":"qemu-stream","listen":"/a"}"#).unwrap();
        assert_eq!(s.socket(), Some("/a"));
        let s: PortSpec = serde_json::from_str(r#"{"kind":"interface","xdp":true}"#).unwrap();
        assert_eq!(s, PortSpec::Interface { xdp: true });
        assert!(serde_json::from_str::<PortSpec>(r#"{"kind":"memif"}"#).is_err());
        let s: PortSpec =
            serde_json::from_str(r#"{"kind":"memif","socket":"/run/m.sock","abstract":true}"#)
                .unwrap();
        assert_eq!(
            s,
            PortSpec::Memif {
                socket: "/run/m.sock".into(),
                abstract_name: true,
                id: 0,
                secret: None,
                client: false,
            }
        );
        assert_eq!(s.socket(), None, "an abstract name is no file");
        let s: PortSpec =
            serde_json::from_str(r#"{"kind":"memif","socket":"/run/vpp.sock","client":true}"#)
                .unwrap();
        assert_eq!(s.socket(), None, "a server's socket is not valed's");
        assert!(serde_json::from_str::<PortSpec>(r#"{"kind":"bogus"}"#).is_err());
        let s: PortSpec = serde_json::from_str(
            r#"{"kind":"vxlan","vni":42,"local":"198.18.0.1","remote":["198.18.0.2"]}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            PortSpec::Vxlan {
                vni: 42,
                local: "198.18.0.1".into(),
                port: 4789,
                remote: vec!["198.18.0.2".into()],
                group: None,
                dev: None,
                learning: true,
                src_ports: None,
                offloads: true,
                map: vec![],
            },
            "the IANA port, learning and offloads by default"
        );
        assert_eq!(s.socket(), None);
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"kind":"vxlan","vni":42,"local":"198.18.0.1","port":4789,"remote":["198.18.0.2"],"learning":true}"#
        );
    }

    #[test]
    fn paged_requests_name_the_version_and_where_to_go_on() {
        let stats = Request::Stats {
            port: None,
            page: None,
        };
        let first = stats.paged(None).unwrap();
        assert_eq!(
            serde_json::to_string(&first).unwrap(),
            r#"{"op":"stats","port":null,"page":{"version":3}}"#
        );
        let fdb = Request::Fdb {
            switch: "vale0".into(),
            page: None,
        };
        assert_eq!(
            serde_json::to_string(&fdb.paged(Some("f.1.-.2".into())).unwrap()).unwrap(),
            r#"{"op":"fdb","switch":"vale0","page":{"version":3,"after":"f.1.-.2"}}"#
        );
        // What a protocol-2 client sends: no page.
        let old: Request = serde_json::from_str(r#"{"op":"fdb","switch":"vale0"}"#).unwrap();
        assert_eq!(old, fdb);
        assert_eq!(
            Request::Settings.paged(None),
            None,
            "settings is one message"
        );
        assert_eq!(Request::Close.paged(None), None);
    }

    fn port(name: &str, index: u16) -> PortSummary {
        PortSummary {
            name: name.into(),
            index,
            geometry: vale_abi::PortGeometry::default().into(),
            clients: 1,
        }
    }

    fn switch(name: &str, index: usize, ports: Vec<PortSummary>) -> SwitchInfo {
        SwitchInfo {
            name: name.into(),
            index,
            bridge_batch: 1024,
            ports,
        }
    }

    #[test]
    fn pages_of_a_list_make_one_list_again() {
        let whole = Response::List {
            switches: vec![
                switch("vale0", 0, vec![port("vale0:a", 0), port("vale0:b", 1)]),
                switch("vale1", 1, vec![port("vale1:a", 0)]),
            ],
            hosts: Vec::new(),
            next: None,
        };
        // vale0 split between the first two pages, vale1 in the second.
        let mut got = Response::List {
            switches: vec![switch("vale0", 0, vec![port("vale0:a", 0)])],
            hosts: Vec::new(),
            next: Some("p.0.0.0".into()),
        };
        assert_eq!(got.next_page(), Some("p.0.0.0"));
        got.append(Response::List {
            switches: vec![
                switch("vale0", 0, vec![port("vale0:b", 1)]),
                switch("vale1", 1, vec![port("vale1:a", 0)]),
            ],
            hosts: Vec::new(),
            next: None,
        })
        .unwrap();
        assert_eq!(got, whole);
        assert_eq!(got.next_page(), None);
        // The whole reply reads as before paging: no `next`.
        let j = serde_json::to_string(&got).unwrap();
        assert!(!j.contains("next"), "{j}");
        // A switch of the same name but another index (gone and made again) stays apart.
        got.append(Response::List {
            switches: vec![switch("vale1", 3, vec![port("vale1:a", 0)])],
            hosts: Vec::new(),
            next: None,
        })
        .unwrap();
        let Response::List { switches, .. } = &got else {
            panic!()
        };
        assert_eq!(switches.len(), 3);
    }

    #[test]
    fn pages_of_stats_and_fdb_append_and_others_do_not() {
        let row = |mac: &str| FdbRow {
            mac: mac.into(),
            vlan: None,
            port: "vale0:a".into(),
            index: 0,
            age_secs: 1,
            vtep: None,
            vni: None,
        };
        let fdb = |entries, learned, next: Option<&str>| Response::Fdb {
            switch: "vale0".into(),
            entries,
            counters: BTreeMap::from([("learned".to_string(), learned)]),
            next: next.map(String::from),
        };
        let mut got = fdb(vec![row("02:00:00:00:00:01")], 1, Some("x"));
        got.append(fdb(vec![row("02:00:00:00:00:02")], 2, None))
            .unwrap();
        assert_eq!(
            got,
            fdb(
                vec![row("02:00:00:00:00:01"), row("02:00:00:00:00:02")],
                2,
                None
            ),
            "rows in order, the latest counters"
        );
        let other_switch = Response::Fdb {
            switch: "vale1".into(),
            entries: Vec::new(),
            counters: BTreeMap::new(),
            next: None,
        };
        assert_eq!(
            got.append(other_switch).unwrap_err(),
            "a `fdb` page does not continue a `fdb` reply"
        );
        let mut stats = Response::Stats {
            ports: Vec::new(),
            next: Some("p.0.0.1".into()),
        };
        let e = stats.append(got).unwrap_err();
        assert_eq!(e, "a `fdb` page does not continue a `stats` reply");
    }
}
