//! The daemon's settings: netmap's defaults, overridden by a TOML file, overridden by
//! flags (the binary merges them).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use vale_switch::{FdbConfig, Limits};

/// valed's buffer size for ports that ask for nothing else: netmap's 2048 plus one
/// cache line. A stride that is not a power of two spreads the buffers' first lines
/// (the ones the switch touches) over all cache sets instead of 1/32 of them: +4-6 %
/// end to end at 60 bytes, no change at 1514 (docs/performance.md).
pub const DEFAULT_BUF_SIZE: u32 = 2112;
/// Client connections at once (each costs a few descriptors: its socket, and for a port
/// its eventfds).
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// Client connections at once from one uid other than root and valed's own.
pub const DEFAULT_MAX_CLIENTS_PER_UID: usize = 256;
/// Ports at once created by one uid other than root and valed's own.
pub const DEFAULT_MAX_PORTS_PER_UID: usize = 64;
/// Seconds a new connection may stay silent before its first request.
pub const DEFAULT_HANDSHAKE_TIMEOUT_S: u64 = 30;
/// The most entries a switch's learning table may have (14 bytes each: 224 MiB).
pub const MAX_FDB_SIZE: usize = 1 << 24;
/// Metrics connections served at once, in all and from one client.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 8;
pub const DEFAULT_METRICS_MAX_CONNECTIONS_PER_CLIENT: usize = 2;
/// The most either may be set to (each connection is a thread while it is served).
pub const MAX_METRICS_CONNECTIONS: usize = 1024;
/// netmap pipes each new port has room for (netmap's VALE ports: 2). Their buffers are
/// faulted in only when used.
pub const DEFAULT_PIPES: u16 = 2;
/// Most pipes a port may have room for.
pub const MAX_PIPES: u16 = 64;

/// A setting that cannot be used, named with its value and what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {}: {why}", path.display())]
    Parse { path: PathBuf, why: String },
    #[error("config file {}, line {line}: [[port]] {why}", path.display())]
    Port {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("config file {}, line {line}: [[vlan]] {why}", path.display())]
    Vlan {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("refusing config file {}: {why}", path.display())]
    Untrusted { path: PathBuf, why: String },
    #[error("cpu list `{0}` is not like 2,3,8-11")]
    Cpus(String),
    #[error("socket mode `{0}` is not an octal mode like 0660")]
    Mode(String),
    #[error("socket group `{0}` is not a group name in /etc/group nor a number")]
    Group(String),
    #[error("{what} {value} is out of range; it must be between {min} and {max}")]
    OutOfRange {
        what: &'static str,
        value: usize,
        min: usize,
        max: usize,
    },
    #[error("cannot read this process's CPU affinity: {0}")]
    Affinity(#[source] std::io::Error),
    #[error("cpu {0} is not available to valed (see `taskset -p $$` and nproc)")]
    CpuUnavailable(usize),
    #[error("shared switch `{0}` is not SWITCH or SWITCH:GROUP (e.g. vale0 or vale0:netdev)")]
    Share(String),
    #[error(
        "metrics address `{0}` is neither IP:PORT (127.0.0.1:9417, [::1]:9417) nor a unix socket path (one with a `/`)"
    )]
    Metrics(String),
    #[error(
        "switch threads `{0}` is not SWITCH=N with a switch name (vale0) and N from 1 to 256 (e.g. vale0=2)"
    )]
    SwitchThreads(String),
    #[error("max_switches and max_ports must be at least 1")]
    NoSwitchesOrPorts,
    #[error("default port: {0}")]
    DefaultPort(#[source] vale_abi::Error),
    #[error(
        "the default port ({rings} rings, {slots} slots, {buf}-byte buffers) exceeds the limits ({max_rings} rings, {max_slots} slots, {max_buf} bytes)"
    )]
    DefaultOverLimit {
        rings: u16,
        slots: u32,
        buf: u32,
        max_rings: u16,
        max_slots: u32,
        max_buf: u32,
    },
}

/// Everything `valed` can be told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub socket: PathBuf,
    /// Mode of the socket file (who may connect): 0o660 by default.
    pub socket_mode: u32,
    pub limits: Limits,
    /// 0 = warnings, 1 = info, 2 = debug, 3+ = trace.
    pub verbose: u8,
    /// How long the forwarding thread keeps polling after the last packet before it
    /// sleeps in epoll, in microseconds.
    pub busy_poll_us: u64,
    /// Forwarding threads (lanes); each switch is forwarded by one of them, unless it is
    /// named in `switch_threads`.
    pub threads: usize,
    /// Switches forwarded by several threads at once: (switch, threads). Each lane gets
    /// as many helper threads as the largest of these needs (they sleep while idle).
    pub switch_threads: Vec<(String, u16)>,
    /// Group that owns the socket file (name or number); `None` = the daemon's group.
    pub socket_group: Option<String>,
    /// CPUs for the forwarding threads: thread `t` is pinned to `cpus[t % len]`; empty =
    /// not pinned (or `auto_pin`'s choice, filled in at startup).
    pub cpus: Vec<usize>,
    /// With `cpus` empty (`cpus = "auto"`): pin each forwarding thread to a CPU of its
    /// own, the last ones this process may use, while it forwards a steady stream, when
    /// it may use more CPUs than there are threads (so its clients keep at least one).
    /// Off by default: on the 2-vCPU machine it measured 0.97x [0.90-1.06] of leaving the
    /// threads to the scheduler (docs/performance.md section 12). See
    /// `lane::forward::PinWhenBusy`.
    pub auto_pin: bool,
    /// Client connections at once, in all and from one uid (root and valed's own user
    /// count against the total only).
    pub max_clients: usize,
    pub max_clients_per_uid: usize,
    /// Ports created at once by one uid (root and valed's own user: no limit).
    pub max_ports_per_uid: usize,
    /// Memory of all ports' regions together, in MiB (what a port costs is its region,
    /// faulted in when it is created).
    pub max_port_memory_mib: u64,
    /// The same for the ports one uid created (root and valed's own user count against
    /// the total only); `None`: a quarter of the total.
    pub max_port_memory_per_uid_mib: Option<u64>,
    /// Switches one uid's ports may make (a switch is made by the open of its first
    /// port; root and valed's own user: no limit); `None`: half of `max_switches`.
    pub max_switches_per_uid: Option<usize>,
    /// Switches whose ports any client (or any member of a group) may open, whoever
    /// created them; elsewhere a port belongs to the uid that created it.
    pub shared: Vec<SharedSwitch>,
    /// Seconds a connection may stay silent after connecting (0: for ever).
    pub handshake_timeout_s: u64,
    /// Accept vhost-user guest memory that cannot be sealed against shrinking (DPDK's
    /// `--no-huge` memfds, hugetlbfs files, `memory-backend-file`): the frontend is
    /// trusted not to truncate it. Off, such a memory table is refused; on, a truncation
    /// is still survived (the port is cut off and counts `memory_faults`).
    pub vhost_trust_unsealed: bool,
    /// Accept memif regions that cannot be sealed against shrinking (a zero-copy DPDK
    /// client's memory, `zero-copy=yes`): the client is trusted not to truncate them.
    /// Off, such a client is refused; on, a truncation is still survived (the client is
    /// disconnected and `memory_faults` counted).
    pub memif_trust_unsealed: bool,
    /// Where `GET /metrics` is served (Prometheus text format); `None`: nowhere.
    pub metrics: Option<MetricsAddr>,
    /// Metrics connections served at once; more are answered 503.
    pub metrics_max_connections: usize,
    /// Of those, what one client (an IP address; on a unix socket, a uid) may hold.
    pub metrics_max_connections_per_client: usize,
    /// Ports the config file declares: created at start, kept in step with the file on
    /// reload (SIGHUP, `vale-ctl reload`).
    pub ports: Vec<Declared>,
    /// VLAN settings the config file declares (`[[vlan]]`), applied at start and on
    /// reload.
    pub vlans: Vec<DeclaredVlan>,
    /// The config file, read again on reload.
    pub config: Option<PathBuf>,
}

/// Where valed serves its metrics: a TCP address or a unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl MetricsAddr {
    /// `IP:PORT`, or a path (anything with a `/`: `./metrics.sock`, `/run/vale/metrics.sock`).
    pub fn parse(s: &str) -> Result<MetricsAddr, SettingsError> {
        if s.contains('/') {
            return Ok(MetricsAddr::Unix(PathBuf::from(s)));
        }
        s.parse()
            .map(MetricsAddr::Tcp)
            .map_err(|_| SettingsError::Metrics(s.to_string()))
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddr::Tcp(a) => write!(f, "{a}"),
            MetricsAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A port the config file declares (`[[port]]`): the switch port and how to make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// `valeX:NAME`.
    pub port: String,
    pub spec: vale::proto::PortSpec,
    /// Where it is in the file, for messages.
    pub line: usize,
}

/// A switch's VLAN settings as the config file declares them (`[[vlan]]`):
///
/// ```toml
/// [[vlan]]
/// switch = "vale0"
/// filtering = true
/// ports = { "vale0:a" = "access 10", "vale0:b" = "trunk 10,20 native 30 tagged" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredVlan {
    pub switch: String,
    pub filtering: bool,
    /// Port modes by full port name.
    pub ports: Vec<(String, vale_switch::PortVlan)>,
    pub line: usize,
}

fn line_of(table: &toml::Spanned<toml::Table>, text: &str) -> usize {
    1 + text[..table.span().start.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
}

/// One `[[vlan]]` table as the file has it.
fn declared_vlan(
    table: &toml::Spanned<toml::Table>,
    text: &str,
    path: &Path,
    max_name_len: usize,
) -> Result<DeclaredVlan, SettingsError> {
    let line = line_of(table, text);
    let bad = |why: String| SettingsError::Vlan {
        path: path.to_path_buf(),
        line,
        why,
    };
    let t = table.get_ref();
    if let Some(k) = t
        .keys()
        .find(|k| !["switch", "filtering", "ports"].contains(&k.as_str()))
    {
        return Err(bad(format!(
            "`{}` is not a key of a [[vlan]] table (it takes: switch, filtering, ports)",
            k.escape_default()
        )));
    }
    let switch = match t.get("switch") {
        Some(toml::Value::String(n)) if !n.contains(':') => n.clone(),
        _ => return Err(bad("needs switch = \"valeX\" (a switch name)".into())),
    };
    vale_switch::PortName::parse(&format!("{switch}:x"), usize::MAX)
        .map_err(|e| bad(format!("switch `{}`: {e}", switch.escape_default())))?;
    let filtering = match t.get("filtering") {
        None => false,
        Some(toml::Value::Boolean(b)) => *b,
        Some(_) => return Err(bad(format!("{switch}: filtering must be true or false"))),
    };
    let mut ports = Vec::new();
    // Each port's full name, with the key that gave it.
    let mut keys: Vec<(String, String)> = Vec::new();
    match t.get("ports") {
        None => {}
        Some(toml::Value::Table(m)) => {
            for (name, mode) in m {
                let full = if name.contains(':') {
                    name.clone()
                } else {
                    format!("{switch}:{name}")
                };
                let pn = vale_switch::PortName::parse(&full, max_name_len)
                    .map_err(|e| bad(format!("port `{}`: {e}", full.escape_default())))?;
                if pn.switch() != switch {
                    return Err(bad(format!("port {full} is not on switch {switch}")));
                }
                let toml::Value::String(mode) = mode else {
                    return Err(bad(format!(
                        "{full}: the mode is a string like \"access 10\""
                    )));
                };
                let m: vale_switch::PortVlan =
                    mode.parse().map_err(|e| bad(format!("{full}: {e}")))?;
                // `vale0:a` and `a` name one port: which mode would win is no choice
                // of the writer's.
                if let Some(first) = keys.iter().find(|(f, _)| *f == full).map(|(_, k)| k) {
                    return Err(bad(format!(
                        "ports `{}` and `{}` are both {full}: give each port one mode",
                        first.escape_default(),
                        name.escape_default()
                    )));
                }
                keys.push((full.clone(), name.clone()));
                ports.push((full, m));
            }
        }
        Some(_) => {
            return Err(bad(format!(
                "{switch}: ports is a table of port = \"mode\", like {{ \"{switch}:a\" = \"access 10\" }}"
            )));
        }
    }
    Ok(DeclaredVlan {
        switch,
        filtering,
        ports,
        line,
    })
}

/// The keys a `[[port]]` of each kind may have besides `name` and `kind` (the fields of
/// [`vale::proto::PortSpec`], which is what the entry becomes).
fn port_keys(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "tap" => &["queues"],
        "interface" => &["xdp"],
        "qemu-dgram" => &["socket", "peer"],
        "qemu-stream" => &["listen", "connect"],
        "vhost-user" => &["socket", "client", "queues"],
        "memif" => &["socket", "abstract", "id", "secret", "client"],
        "vxlan" => &[
            "vni",
            "local",
            "port",
            "remote",
            "group",
            "dev",
            "learning",
            "src_ports",
            "offloads",
            "map",
        ],
        _ => return None,
    })
}

/// The UDP socket a VXLAN entry receives on (its address, `*` with a group, and port)
/// and the VNIs it takes there (`vni`, then `map`'s).
fn vxlan_socket(spec: &vale::proto::PortSpec) -> Option<(String, u16, Vec<u32>)> {
    let vale::proto::PortSpec::Vxlan {
        vni,
        local,
        port,
        group,
        map,
        ..
    } = spec
    else {
        return None;
    };
    let at = match group {
        Some(_) => "*".to_string(),
        None => local
            .parse::<std::net::IpAddr>()
            .map_or_else(|_| local.clone(), |a| a.to_string()),
    };
    let vnis = std::iter::once(*vni)
        .chain(
            map.iter()
                .filter_map(|m| m.split_once(':')?.0.trim().parse().ok()),
        )
        .collect();
    Some((at, *port, vnis))
}

/// Why VXLAN entry `d` cannot be made next to the entries before it: one of its VNIs
/// is another's on the same UDP socket (valed would refuse the second at start).
fn vni_taken(before: &[Declared], d: &Declared) -> Option<String> {
    let (at, port, vnis) = vxlan_socket(&d.spec)?;
    before.iter().find_map(|p| {
        let (at2, port2, vnis2) = vxlan_socket(&p.spec)?;
        let v = vnis.iter().find(|v| vnis2.contains(v))?;
        (at == at2 && port == port2).then(|| {
            format!(
                "{}: VNI {v} on UDP port {port} of {at} is {}'s already, on line {}: each VNI of a socket goes to one uplink",
                d.port, p.port, p.line
            )
        })
    })
}

/// Why entry `d` cannot be made next to the entries before it: its host port (the part
/// of its name after `:`: a TAP or an interface of that name, or the name valed keeps a
/// socket's port by) is another entry's already, on another switch.
fn host_taken(before: &[Declared], d: &Declared) -> Option<String> {
    let host = |p: &Declared| p.port.split_once(':').map_or("", |(_, h)| h).to_string();
    let name = host(d);
    let first = before.iter().find(|p| host(p) == name)?;
    let what = match (&first.spec, &d.spec) {
        (vale::proto::PortSpec::Tap { .. }, _) => format!("TAP interface {name}"),
        (vale::proto::PortSpec::Interface { .. }, _) => format!("interface {name}"),
        (_, vale::proto::PortSpec::Tap { .. } | vale::proto::PortSpec::Interface { .. }) => {
            format!("host port {name}")
        }
        _ => format!("host port name {name}"),
    };
    Some(format!(
        "{}: {what} is {}'s already, on line {}: the name after `:` names the host port, which joins one switch; give each declared port its own",
        d.port, first.port, first.line
    ))
}

/// One `[[port]]` table as the file has it, with where it starts.
fn declared(
    table: &toml::Spanned<toml::Table>,
    text: &str,
    path: &Path,
    max_name_len: usize,
) -> Result<Declared, SettingsError> {
    let line = 1 + text[..table.span().start.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count();
    let bad = |why: String| SettingsError::Port {
        path: path.to_path_buf(),
        line,
        why,
    };
    let t = table.get_ref();
    let name = match t.get("name") {
        Some(toml::Value::String(n)) => n.clone(),
        Some(_) => return Err(bad("name must be a string like \"vale0:tap0\"".into())),
        None => {
            return Err(bad(
                "has no name (the switch port, e.g. name = \"vale0:tap0\")".into(),
            ));
        }
    };
    vale_switch::PortName::parse(&name, max_name_len)
        .map_err(|e| bad(format!("name `{}`: {e}", name.escape_default())))?;
    let kind = match t.get("kind") {
        Some(toml::Value::String(k)) => k.clone(),
        _ => {
            return Err(bad(format!(
                "{name} has no kind (tap, interface, qemu-dgram, qemu-stream, vhost-user, memif or vxlan)"
            )));
        }
    };
    let Some(keys) = port_keys(&kind) else {
        return Err(bad(format!(
            "{name}: kind `{}` is not tap, interface, qemu-dgram, qemu-stream, vhost-user, memif or vxlan",
            kind.escape_default()
        )));
    };
    if let Some(k) = t
        .keys()
        .find(|k| !["name", "kind"].contains(&k.as_str()) && !keys.contains(&k.as_str()))
    {
        return Err(bad(format!(
            "{name}: `{}` is not a key of a {kind} port (it takes: name, kind{}{})",
            k.escape_default(),
            if keys.is_empty() { "" } else { ", " },
            keys.join(", ")
        )));
    }
    let mut rest = t.clone();
    rest.remove("name");
    let spec: vale::proto::PortSpec = toml::Value::Table(rest)
        .try_into()
        .map_err(|e: toml::de::Error| bad(format!("{name}: {}", e.message())))?;
    // What creating it would refuse, said now: a reload of a file with such a port
    // stops before it removes anything.
    let host = name.split_once(':').map_or(name.as_str(), |(_, p)| p);
    crate::port::check(host, &spec).map_err(|e| bad(format!("{name}: {e}")))?;
    Ok(Declared {
        port: name,
        spec,
        line,
    })
}

/// A switch declared shared: `vale0` (every client) or `vale0:netdev` (a group's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSwitch {
    pub switch: String,
    /// The group whose members may open each other's ports, by number.
    pub group: Option<u32>,
    /// As it was given (for `vale-ctl settings`).
    pub spec: String,
}

impl SharedSwitch {
    pub fn parse(spec: &str) -> Result<SharedSwitch, SettingsError> {
        let bad = || SettingsError::Share(spec.to_string());
        let (switch, group) = match spec.split_once(':') {
            Some((s, g)) => (s, Some(g)),
            None => (spec, None),
        };
        let ok = switch.starts_with("vale")
            && switch.len() > 4
            && switch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ok || group.is_some_and(str::is_empty) {
            return Err(bad());
        }
        Ok(SharedSwitch {
            switch: switch.to_string(),
            group: group.map(group_id).transpose()?,
            spec: spec.to_string(),
        })
    }
}

impl Settings {
    /// The per-uid port memory limit, in MiB.
    pub fn port_memory_per_uid_mib(&self) -> u64 {
        self.max_port_memory_per_uid_mib
            .unwrap_or(self.max_port_memory_mib / 4)
    }

    /// The per-uid switch limit: half the switches (at least one), unless set.
    pub fn switches_per_uid(&self) -> usize {
        self.max_switches_per_uid
            .unwrap_or((self.limits.max_switches / 2).max(1))
    }
}

/// Half of the machine's memory, in MiB (the default limit on port memory), or 8 GiB if
/// /proc/meminfo cannot say.
fn half_of_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(8192, |kib| kib / 1024 / 2)
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            socket: vale::default_socket_path(),
            socket_mode: 0o660,
            limits: Limits {
                default_geometry: vale_abi::PortGeometry {
                    buf_size: DEFAULT_BUF_SIZE,
                    pipes: DEFAULT_PIPES,
                    ..Limits::default().default_geometry
                },
                ..Limits::default()
            },
            verbose: 1,
            busy_poll_us: 200,
            threads: 1,
            switch_threads: Vec::new(),
            socket_group: None,
            cpus: Vec::new(),
            auto_pin: false,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_clients_per_uid: DEFAULT_MAX_CLIENTS_PER_UID,
            max_ports_per_uid: DEFAULT_MAX_PORTS_PER_UID,
            max_port_memory_mib: half_of_memory_mib(),
            max_port_memory_per_uid_mib: None,
            max_switches_per_uid: None,
            shared: Vec::new(),
            handshake_timeout_s: DEFAULT_HANDSHAKE_TIMEOUT_S,
            vhost_trust_unsealed: false,
            memif_trust_unsealed: false,
            metrics: None,
            metrics_max_connections: DEFAULT_METRICS_MAX_CONNECTIONS,
            metrics_max_connections_per_client: DEFAULT_METRICS_MAX_CONNECTIONS_PER_CLIENT,
            ports: Vec::new(),
            vlans: Vec::new(),
            config: None,
        }
    }
}

/// The TOML file: every key optional, same names as the flags (with `_`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub socket: Option<PathBuf>,
    pub socket_mode: Option<String>,
    pub max_switches: Option<usize>,
    pub max_ports: Option<u16>,
    pub max_rings: Option<u16>,
    pub max_slots: Option<u32>,
    pub max_buf_size: Option<u32>,
    pub max_extra_bufs: Option<u32>,
    pub pipes: Option<u16>,
    pub max_clients: Option<usize>,
    pub max_clients_per_uid: Option<usize>,
    pub max_ports_per_uid: Option<usize>,
    pub max_port_memory_mib: Option<u64>,
    pub max_port_memory_per_uid_mib: Option<u64>,
    pub max_switches_per_uid: Option<usize>,
    pub share: Option<Vec<String>>,
    pub handshake_timeout_s: Option<u64>,
    pub vhost_trust_unsealed: Option<bool>,
    pub memif_trust_unsealed: Option<bool>,
    pub max_name_len: Option<usize>,
    pub bridge_batch: Option<usize>,
    pub rings: Option<u16>,
    pub slots: Option<u32>,
    pub buf_size: Option<u32>,
    pub fdb_size: Option<usize>,
    pub fdb_max_age: Option<u32>,
    pub verbose: Option<u8>,
    pub busy_poll_us: Option<u64>,
    pub threads: Option<usize>,
    /// `["vale0=2"]`: see [`Settings::switch_threads`].
    pub switch_threads: Option<Vec<String>>,
    pub socket_group: Option<String>,
    pub cpus: Option<String>,
    pub metrics: Option<String>,
    pub metrics_max_connections: Option<usize>,
    pub metrics_max_connections_per_client: Option<usize>,
    /// `[[port]]` tables as written; [`ConfigFile::load`] turns them into `ports`.
    #[serde(default, rename = "port")]
    pub port_tables: Vec<toml::Spanned<toml::Table>>,
    #[serde(skip)]
    pub ports: Vec<Declared>,
    /// `[[vlan]]` tables as written; [`ConfigFile::load`] turns them into `vlans`.
    #[serde(default, rename = "vlan")]
    pub vlan_tables: Vec<toml::Spanned<toml::Table>>,
    #[serde(skip)]
    pub vlans: Vec<DeclaredVlan>,
}

/// Who besides valed's user and root could change a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// It belongs to this uid.
    Owner(u32),
    /// Its group or others may write it (a directory, and it is not sticky: in a sticky
    /// one, as /tmp, they may replace only their own files); its mode.
    GroupOrOthers(u32),
}

/// Who besides valed's user and root could change what `st` describes, if anyone.
pub fn other_writer(st: &rustix::fs::Stat) -> Option<Writer> {
    let me = rustix::process::geteuid().as_raw();
    let dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
    if st.st_uid != me && st.st_uid != 0 {
        Some(Writer::Owner(st.st_uid))
    } else if st.st_mode & 0o022 != 0 && !(dir && st.st_mode & 0o1000 != 0) {
        Some(Writer::GroupOrOthers(st.st_mode & 0o7777))
    } else {
        None
    }
}

/// Why valed's config file cannot be trusted: someone besides valed's user and root
/// could change it, or replace it in its directory, and so attach host interfaces,
/// share switches or read memif secrets through valed.
fn untrusted(file: &Path, st: &rustix::fs::Stat, is_dir: bool) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    let (what, fix) = if is_dir {
        (
            format!("its directory {}", file.display()),
            "replace the file",
        )
    } else {
        ("it".to_string(), "change what valed is told to do")
    };
    Some(match other_writer(st)? {
        Writer::Owner(uid) => format!(
            "{what} belongs to uid {uid}, not to valed's user ({me}) or root: its owner could {fix}; chown it"
        ),
        Writer::GroupOrOthers(mode) if is_dir => format!(
            "group or others may write in {what} (mode {mode:o}, not sticky) and so {fix}; chmod go-w it"
        ),
        Writer::GroupOrOthers(mode) => {
            format!("group or others may write {what} (mode {mode:o}) and so {fix}; chmod go-w it")
        }
    })
}

impl ConfigFile {
    /// The file at `path`, as valed reads it (at start and on reload): it and its
    /// directory (and the directory of the file a link leads to) must be valed's user's
    /// or root's and not writable by group or others (a directory may be, if sticky);
    /// then as [`ConfigFile::load`]. The file is checked as opened, so that what is
    /// read is what was checked. Port names are checked against `max_name_len` when
    /// given (the daemon's own, `--max-name-len` over the file's), else the file's.
    pub fn load_trusted(
        path: &Path,
        max_name_len: Option<usize>,
    ) -> Result<ConfigFile, SettingsError> {
        let read_err = |source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        };
        let refuse = |why| SettingsError::Untrusted {
            path: path.to_path_buf(),
            why,
        };
        let real = std::fs::canonicalize(path).map_err(read_err)?;
        let dir_of = |p: &Path| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut dirs = vec![dir_of(path)];
        if dir_of(&real) != dirs[0] {
            dirs.push(dir_of(&real));
        }
        for d in &dirs {
            let st = rustix::fs::stat(d).map_err(|e| read_err(e.into()))?;
            if let Some(why) = untrusted(d, &st, true) {
                return Err(refuse(why));
            }
        }
        let mut file = std::fs::File::open(path).map_err(read_err)?;
        let st = rustix::fs::fstat(&file).map_err(|e| read_err(e.into()))?;
        if let Some(why) = untrusted(path, &st, false) {
            return Err(refuse(why));
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).map_err(read_err)?;
        ConfigFile::parse(path, &text, max_name_len)
    }

    /// The file at `path`, parsed, its `[[port]]` entries checked (names, kinds, keys,
    /// no port declared twice); errors name the line.
    pub fn load(path: &Path) -> Result<ConfigFile, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ConfigFile::parse(path, &text, None)
    }

    /// `text`, the file at `path`, as [`ConfigFile::load`] takes it.
    fn parse(
        path: &Path,
        text: &str,
        max_name_len: Option<usize>,
    ) -> Result<ConfigFile, SettingsError> {
        let mut f: ConfigFile = toml::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
        let max_name_len = max_name_len
            .or(f.max_name_len)
            .unwrap_or(Settings::default().limits.max_name_len);
        for t in std::mem::take(&mut f.port_tables) {
            let d = declared(&t, text, path, max_name_len)?;
            if let Some(first) = f.ports.iter().find(|p| p.port == d.port) {
                return Err(SettingsError::Port {
                    path: path.to_path_buf(),
                    line: d.line,
                    why: format!("{} is declared already, on line {}", d.port, first.line),
                });
            }
            if let Some(why) = host_taken(&f.ports, &d) {
                return Err(SettingsError::Port {
                    path: path.to_path_buf(),
                    line: d.line,
                    why,
                });
            }
            if let Some(why) = vni_taken(&f.ports, &d) {
                return Err(SettingsError::Port {
                    path: path.to_path_buf(),
                    line: d.line,
                    why,
                });
            }
            f.ports.push(d);
        }
        for t in std::mem::take(&mut f.vlan_tables) {
            let d = declared_vlan(&t, text, path, max_name_len)?;
            if let Some(first) = f.vlans.iter().find(|v| v.switch == d.switch) {
                return Err(SettingsError::Vlan {
                    path: path.to_path_buf(),
                    line: d.line,
                    why: format!("{} is declared already, on line {}", d.switch, first.line),
                });
            }
            f.vlans.push(d);
        }
        Ok(f)
    }

    /// Applies the file's values over `s`.
    pub fn apply(&self, s: &mut Settings) -> Result<(), SettingsError> {
        let l = &mut s.limits;
        macro_rules! set {
            ($($field:ident => $target:expr),* $(,)?) => {
                $(if let Some(v) = self.$field.clone() { $target = v; })*
            };
        }
        set!(socket => s.socket, max_switches => l.max_switches, max_ports => l.max_ports,
             max_rings => l.max_rings, max_slots => l.max_slots, max_buf_size => l.max_buf_size,
             max_extra_bufs => l.max_extra_bufs,
             max_name_len => l.max_name_len, bridge_batch => l.batch,
             slots => l.default_geometry.tx_slots, buf_size => l.default_geometry.buf_size,
             fdb_size => l.fdb.capacity, fdb_max_age => l.fdb.max_age_secs,
             verbose => s.verbose, busy_poll_us => s.busy_poll_us, threads => s.threads,
             max_clients => s.max_clients, max_clients_per_uid => s.max_clients_per_uid,
             max_ports_per_uid => s.max_ports_per_uid,
             max_port_memory_mib => s.max_port_memory_mib,
             handshake_timeout_s => s.handshake_timeout_s,
             vhost_trust_unsealed => s.vhost_trust_unsealed,
             memif_trust_unsealed => s.memif_trust_unsealed,
             metrics_max_connections => s.metrics_max_connections,
             metrics_max_connections_per_client => s.metrics_max_connections_per_client);
        if let Some(m) = self.max_port_memory_per_uid_mib {
            s.max_port_memory_per_uid_mib = Some(m);
        }
        if let Some(n) = self.max_switches_per_uid {
            s.max_switches_per_uid = Some(n);
        }
        if let Some(list) = &self.share {
            s.shared = list
                .iter()
                .map(|x| SharedSwitch::parse(x))
                .collect::<Result<_, _>>()?;
        }
        if let Some(g) = &self.socket_group {
            s.socket_group = Some(g.clone());
        }
        if let Some(v) = self.slots {
            l.default_geometry.rx_slots = v;
        }
        if let Some(p) = self.pipes {
            if p > MAX_PIPES {
                return Err(SettingsError::OutOfRange {
                    what: "pipes",
                    value: p as usize,
                    min: 0,
                    max: MAX_PIPES as usize,
                });
            }
            l.default_geometry.pipes = p;
        }
        if let Some(r) = self.rings {
            l.default_geometry.tx_rings = r;
            l.default_geometry.rx_rings = r;
        }
        if let Some(c) = &self.cpus {
            (s.cpus, s.auto_pin) = match c.trim() {
                "auto" => (Vec::new(), true),
                "none" => (Vec::new(), false),
                list => (parse_cpus(list)?, false),
            };
        }
        if let Some(list) = &self.switch_threads {
            s.switch_threads = list
                .iter()
                .map(|x| parse_switch_threads(x))
                .collect::<Result<_, _>>()?;
        }
        if let Some(m) = &self.socket_mode {
            s.socket_mode = parse_mode(m)?;
        }
        if let Some(m) = &self.metrics {
            s.metrics = Some(MetricsAddr::parse(m)?);
        }
        Ok(())
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The running state as a config file that recreates it (`vale-ctl config dump`): the
/// settings (`vale-ctl settings`' map), then a `[[port]]` per host port; persistent
/// ports attached nowhere (`loose`), which a file cannot declare, as comments.
pub fn dump(
    settings: &std::collections::BTreeMap<String, String>,
    (ports, loose): &(Vec<(String, vale::proto::PortSpec)>, Vec<String>),
    vlans: &std::collections::BTreeMap<String, vale_switch::SwitchVlan>,
) -> String {
    let mut out = String::from(
        "# valed's running state (vale-ctl config dump): start valed with --config FILE to\n# recreate it.\n",
    );
    for (k, v) in settings {
        let line = match k.as_str() {
            "share" | "switch_threads" if v.is_empty() => continue,
            "cpus" if v.is_empty() => continue,
            "metrics" if v.is_empty() => continue,
            "share" | "switch_threads" => format!(
                "[{}]",
                v.split(',').map(toml_str).collect::<Vec<_>>().join(", ")
            ),
            "socket" | "socket_mode" | "cpus" | "socket_group" => toml_str(v),
            _ if v == "true" || v == "false" || v.parse::<u64>().is_ok() => v.clone(),
            _ => toml_str(v),
        };
        out.push_str(&format!("{k} = {line}\n"));
    }
    for (port, spec) in ports {
        out.push_str(&format!("\n[[port]]\nname = {}\n", toml_str(port)));
        let serde_json::Value::Object(m) = serde_json::to_value(spec).unwrap_or_default() else {
            continue;
        };
        // `kind` first, as people write it.
        let mut fields: Vec<_> = m.into_iter().collect();
        fields.sort_by_key(|(k, _)| k != "kind");
        for (k, v) in fields {
            let v = match v {
                serde_json::Value::String(s) => toml_str(&s),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Array(a) => {
                    let items: Vec<String> =
                        a.iter().filter_map(|x| x.as_str()).map(toml_str).collect();
                    format!("[{}]", items.join(", "))
                }
                _ => continue,
            };
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
    for (switch, v) in vlans {
        out.push_str(&format!(
            "\n[[vlan]]\nswitch = {}\nfiltering = {}\n",
            toml_str(switch),
            v.filtering
        ));
        if !v.ports.is_empty() {
            let modes: Vec<String> = v
                .ports
                .iter()
                .map(|(p, m)| format!("{} = {}", toml_str(p), toml_str(&m.to_string())))
                .collect();
            out.push_str(&format!("ports = {{ {} }}\n", modes.join(", ")));
        }
    }
    for name in loose {
        out.push_str(&format!(
            "\n# persistent port {name} is attached nowhere: a file cannot declare it (vale-ctl -n {name})\n"
        ));
    }
    out
}

/// The CPUs `auto_pin` gives `threads` forwarding threads, out of the CPUs this process
/// may use (`allowed`, ascending): the last `threads` of them, if that leaves at least
/// one for the clients; `None` (not pinned) otherwise. The last ones, because CPU 0
/// usually takes more of the machine's interrupts and housekeeping.
pub fn auto_cpus(threads: usize, allowed: &[usize]) -> Option<Vec<usize>> {
    (threads > 0 && allowed.len() > threads).then(|| allowed[allowed.len() - threads..].to_vec())
}

/// The CPUs this process may run on, ascending (empty if the kernel will not say).
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|c| set.is_set(*c))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// `vale0=2`: switch `vale0` forwarded by 2 threads at once (1 to 256).
pub fn parse_switch_threads(x: &str) -> Result<(String, u16), SettingsError> {
    let bad = || SettingsError::SwitchThreads(x.to_string());
    let (sw, n) = x.split_once('=').ok_or_else(bad)?;
    let n: u16 = n.trim().parse().map_err(|_| bad())?;
    let sw = sw.trim();
    let ok_name = sw.starts_with("vale")
        && sw.len() <= 15
        && sw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_name || n == 0 || n > vale_switch::MAX_THREADS {
        return Err(bad());
    }
    Ok((sw.to_string(), n))
}

/// Parses a CPU list such as `2,3,8-11` (the kernel's cpulist format).
pub fn parse_cpus(list: &str) -> Result<Vec<usize>, SettingsError> {
    let bad = || SettingsError::Cpus(list.to_string());
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        if a > b || b >= rustix::thread::CpuSet::MAX_CPU {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Parses an octal file mode such as `0660`.
pub fn parse_mode(m: &str) -> Result<u32, SettingsError> {
    u32::from_str_radix(m.trim_start_matches("0o"), 8)
        .ok()
        .filter(|v| *v <= 0o777)
        .ok_or_else(|| SettingsError::Mode(m.to_string()))
}

impl Settings {
    /// Checks values that would only fail later, with messages that name the setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let l = &self.limits;
        if l.batch == 0 || l.batch > vale_switch::MAX_BATCH {
            return Err(SettingsError::OutOfRange {
                what: "bridge_batch",
                value: l.batch,
                min: 1,
                max: vale_switch::MAX_BATCH,
            });
        }
        if self.threads == 0 || self.threads > 256 {
            return Err(SettingsError::OutOfRange {
                what: "threads",
                value: self.threads,
                min: 1,
                max: 256,
            });
        }
        let conns = self.metrics_max_connections;
        for (what, value, max) in [
            ("fdb_size", l.fdb.capacity, MAX_FDB_SIZE),
            ("metrics_max_connections", conns, MAX_METRICS_CONNECTIONS),
            (
                "metrics_max_connections_per_client",
                self.metrics_max_connections_per_client,
                conns,
            ),
        ] {
            if value == 0 || value > max {
                return Err(SettingsError::OutOfRange {
                    what,
                    value,
                    min: 1,
                    max,
                });
            }
        }
        if let Some(g) = &self.socket_group {
            group_id(g)?;
        }
        if !self.cpus.is_empty() {
            let allowed = rustix::thread::sched_getaffinity(None)
                .map_err(|e| SettingsError::Affinity(e.into()))?;
            if let Some(c) = self.cpus.iter().find(|c| !allowed.is_set(**c)) {
                return Err(SettingsError::CpuUnavailable(*c));
            }
        }
        if l.max_switches == 0 || l.max_ports == 0 {
            return Err(SettingsError::NoSwitchesOrPorts);
        }
        let g = l.default_geometry;
        g.validate().map_err(SettingsError::DefaultPort)?;
        if g.tx_rings > l.max_rings || g.tx_slots > l.max_slots || g.buf_size > l.max_buf_size {
            return Err(SettingsError::DefaultOverLimit {
                rings: g.tx_rings,
                slots: g.tx_slots,
                buf: g.buf_size,
                max_rings: l.max_rings,
                max_slots: l.max_slots,
                max_buf: l.max_buf_size,
            });
        }
        Ok(())
    }

    /// Where valed keeps sockets only it uses (vhost-user relays' back ends): a
    /// directory beside the control socket.
    pub fn private_dir(&self) -> PathBuf {
        Settings::private_dir_of(&self.socket)
    }

    pub fn private_dir_of(control: &Path) -> PathBuf {
        let mut d = control.as_os_str().to_owned();
        d.push(".private");
        PathBuf::from(d)
    }

    /// A random seed for the learning tables, so nobody can aim hash collisions.
    pub fn seed_fdb(&mut self) {
        let mut b = [0u8; 8];
        if rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).is_ok() {
            self.limits.fdb = FdbConfig {
                seed: u64::from_ne_bytes(b),
                ..self.limits.fdb
            };
        }
    }
}

/// A group name (from /etc/group) or number.
pub fn group_id(g: &str) -> Result<u32, SettingsError> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == g).then_some(gid)
        })
        .next()
        .ok_or_else(|| SettingsError::Group(g.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_overrides_defaults_and_rejects_typos() {
        let f: ConfigFile =
            toml::from_str("max_switches = 64\nslots = 2048\nsocket_mode = \"0600\"\n").unwrap();
        let mut s = Settings::default();
        f.apply(&mut s).unwrap();
        assert_eq!(s.limits.max_switches, 64);
        assert_eq!(s.limits.default_geometry.rx_slots, 2048);
        assert_eq!(s.socket_mode, 0o600);
        assert!(
            !s.vhost_trust_unsealed,
            "unsealable guest memory refused by default"
        );
        let f: ConfigFile = toml::from_str("vhost_trust_unsealed = true").unwrap();
        f.apply(&mut s).unwrap();
        assert!(s.vhost_trust_unsealed);
        assert!(!s.memif_trust_unsealed, "each kind trusted on its own");
        let f: ConfigFile = toml::from_str("memif_trust_unsealed = true").unwrap();
        f.apply(&mut s).unwrap();
        assert!(s.memif_trust_unsealed);
        assert!(toml::from_str::<ConfigFile>("max_switchez = 1").is_err());
        assert_eq!(s.metrics, None, "no metrics unless asked");
        let f: ConfigFile = toml::from_str("metrics = \"127.0.0.1:9417\"").unwrap();
        f.apply(&mut s).unwrap();
        assert_eq!(
            s.metrics,
            Some(MetricsAddr::Tcp(([127, 0, 0, 1], 9417).into()))
        );
        let f: ConfigFile = toml::from_str("metrics = \"/run/vale/metrics.sock\"").unwrap();
        f.apply(&mut s).unwrap();
        assert_eq!(
            s.metrics.as_ref().unwrap().to_string(),
            "/run/vale/metrics.sock"
        );
        let f: ConfigFile = toml::from_str("switch_threads = [\"vale0=4\", \"vale1=2\"]").unwrap();
        f.apply(&mut s).unwrap();
        assert_eq!(
            s.switch_threads,
            vec![("vale0".to_string(), 4), ("vale1".to_string(), 2)]
        );
        let f: ConfigFile = toml::from_str("switch_threads = [\"vale0=0\"]").unwrap();
        let e = f.apply(&mut s).unwrap_err().to_string();
        assert!(e.contains("N from 1 to 256"), "{e}");
        for bad in ["9417", "localhost:9417", "127.0.0.1", ""] {
            let e = MetricsAddr::parse(bad).unwrap_err().to_string();
            assert!(e.contains("IP:PORT"), "{bad}: {e}");
        }
        assert!(parse_mode("999").is_err());
        assert_eq!(parse_cpus("1,3-5").unwrap(), vec![1, 3, 4, 5]);
        assert_eq!(
            parse_switch_threads("vale0=4").unwrap(),
            ("vale0".to_string(), 4)
        );
        for bad in [
            "vale0",
            "vale0=0",
            "vale0=257",
            "x=2",
            "vale-0=2",
            "vale0=two",
        ] {
            assert!(parse_switch_threads(bad).is_err(), "{bad}");
        }
        // auto pinning: the last CPUs, and only with one left over for the clients.
        assert_eq!(auto_cpus(1, &[0, 1]), Some(vec![1]));
        assert_eq!(auto_cpus(2, &[0, 2, 5, 7]), Some(vec![5, 7]));
        assert_eq!(auto_cpus(1, &[3]), None, "1 CPU: nothing to spare");
        assert_eq!(auto_cpus(2, &[0, 1]), None, "as many threads as CPUs");
        assert_eq!(auto_cpus(1, &[]), None);
        for bad in ["", "a", "3-1", "1,,x", "99999"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
        s.limits.batch = 0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("bridge_batch")
        );
        // A learning table too big to allocate is refused at start, not when the first
        // switch is made (its allocation would end valed).
        let mut s = Settings::default();
        assert!(s.validate().is_ok());
        for bad in [0, MAX_FDB_SIZE + 1, 1 << 61, usize::MAX] {
            s.limits.fdb.capacity = bad;
            let e = s.validate().unwrap_err().to_string();
            assert!(
                e.contains("fdb_size") && e.contains("out of range"),
                "{bad}: {e}"
            );
        }
        s.limits.fdb.capacity = MAX_FDB_SIZE;
        assert!(s.validate().is_ok());
    }

    /// Writes `text` to `path` and loads it as a config file.
    fn load_text(path: &Path, text: &str) -> Result<ConfigFile, SettingsError> {
        std::fs::write(path, text).unwrap();
        ConfigFile::load(path)
    }

    /// What `dump` writes for one port and nothing else.
    fn dump_port(name: &str, spec: &vale::proto::PortSpec) -> String {
        dump(
            &Default::default(),
            &(vec![(name.into(), spec.clone())], vec![]),
            &Default::default(),
        )
    }

    #[test]
    fn a_port_valed_would_refuse_to_make_is_refused_with_its_line() {
        let dir = std::env::temp_dir().join(format!("vale-settings-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        let port = |name: &str, body: &str| {
            format!("threads = 1\n\n[[port]]\nname = \"{name}\"\n{body}\n")
        };
        let long = "s".repeat(25);
        let cases = [
            (
                port("vale0:rvt0", "kind = \"tap\"\nqueues = 17"),
                "1 to 16 queues",
            ),
            (
                port("vale0:rvt0", "kind = \"tap\"\nqueues = 0"),
                "1 to 16 queues",
            ),
            (
                port("vale0:valex", "kind = \"tap\""),
                "may not start with `vale`",
            ),
            (
                port(
                    "vale0:vm",
                    "kind = \"vhost-user\"\nsocket = \"/x\"\nqueues = 17",
                ),
                "1 to 16 queue pairs",
            ),
            (
                port(
                    "vale0:m",
                    &format!("kind = \"memif\"\nsocket = \"/x\"\nsecret = \"{long}\""),
                ),
                "secret is at most 24 bytes",
            ),
            (
                port(
                    "vale0:up",
                    "kind = \"vxlan\"\nvni = 1\nlocal = \"here\"\nremote = [\"198.18.0.2\"]",
                ),
                "--local `here` is not an IPv4 or IPv6 address",
            ),
            (port("vale0:q", "kind = \"qemu-stream\""), "one of listen"),
        ];
        for (text, why) in &cases {
            let e = load_text(&path, text).unwrap_err().to_string();
            assert!(
                e.contains("line 3: [[port]]") && e.contains(why),
                "{why}?\n{e}\n---\n{text}"
            );
        }
        let ok = port("vale0:rvt0", "kind = \"tap\"\nqueues = 16");
        assert_eq!(load_text(&path, &ok).unwrap().ports.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_vlan_table_gives_each_port_one_mode() {
        let dir = std::env::temp_dir().join(format!("vale-settings-vlan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        let vlan = |ports: &str| format!("[[vlan]]\nswitch = \"vale0\"\nports = {{ {ports} }}\n");
        let e = load_text(
            &path,
            &vlan("\"vale0:a\" = \"access 10\", a = \"access 20\""),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 1: [[vlan]] ports `a` and `vale0:a` are both vale0:a"),
            "{e}"
        );
        let f = load_text(
            &path,
            &vlan("\"vale0:a\" = \"access 10\", b = \"access 20\""),
        )
        .unwrap();
        let mut names: Vec<&str> = f.vlans[0].ports.iter().map(|(p, _)| p.as_str()).collect();
        names.sort();
        assert_eq!(names, ["vale0:a", "vale0:b"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_host_port_is_declared_on_one_switch() {
        let dir = std::env::temp_dir().join(format!("vale-settings-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        let port = |name: &str, kind: &str| format!("[[port]]\nname = \"{name}\"\n{kind}\n\n");
        let tap = "kind = \"tap\"";
        let vm = "kind = \"vhost-user\"\nsocket = \"/run/vm.sock\"";
        let vm2 = "kind = \"vhost-user\"\nsocket = \"/run/vm2.sock\"";
        for (text, says) in [
            (
                port("vale0:rvt0", tap) + &port("vale1:rvt0", tap),
                "line 5: [[port]] vale1:rvt0: TAP interface rvt0 is vale0:rvt0's already, on line 1",
            ),
            (
                port("vale0:eth9", "kind = \"interface\"") + &port("vale1:eth9", tap),
                "vale1:eth9: interface eth9 is vale0:eth9's already, on line 1",
            ),
            (
                port("vale0:vm", vm) + &port("vale1:vm", vm2),
                "vale1:vm: host port name vm is vale0:vm's already, on line 1",
            ),
        ] {
            let e = load_text(&path, &text).unwrap_err().to_string();
            assert!(e.contains(says), "{says}?\n{e}");
        }
        let ok = port("vale0:rvt0", tap) + &port("vale1:rvt1", tap) + &port("vale1:vm", vm);
        assert_eq!(load_text(&path, &ok).unwrap().ports.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_multiqueue_tap_is_declared_and_dumped_back() {
        let dir = std::env::temp_dir().join(format!("vale-settings-tapq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        let text = "[[port]]\nname = \"vale0:vi0\"\nkind = \"tap\"\nqueues = 2\n";
        let spec = load_text(&path, text).unwrap().ports[0].spec.clone();
        assert_eq!(spec, vale::proto::PortSpec::Tap { queues: 2 });
        let out = dump_port("vale0:vi0", &spec);
        assert!(out.contains("queues = 2"), "{out}");
        assert_eq!(load_text(&path, &out).unwrap().ports[0].spec, spec);
        // One queue, as before: no key, and a dump says nothing of it.
        let one = load_text(&path, &text.replace("queues = 2\n", ""))
            .unwrap()
            .ports[0]
            .spec
            .clone();
        assert_eq!(one, vale::proto::PortSpec::Tap { queues: 1 });
        assert!(!dump_port("vale0:vi0", &one).contains("queues"));
        let e = load_text(&path, &text.replace("queues = 2", "queues = \"two\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vale0:vi0"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_vhost_user_port_of_several_queue_pairs_is_declared_and_dumped_back() {
        let dir = std::env::temp_dir().join(format!("vale-settings-mq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        let text = "[[port]]\nname = \"vale0:vm\"\nkind = \"vhost-user\"\nsocket = \"/run/vm.sock\"\nqueues = 4\n";
        let spec = load_text(&path, text).unwrap().ports[0].spec.clone();
        let want = |queues| vale::proto::PortSpec::VhostUser {
            socket: "/run/vm.sock".into(),
            client: false,
            queues,
        };
        assert_eq!(spec, want(4));
        let out = dump_port("vale0:vm", &spec);
        assert!(out.contains("queues = 4"), "{out}");
        assert_eq!(load_text(&path, &out).unwrap().ports[0].spec, spec);
        // Without the key: one pair, and a dump says nothing of it.
        let spec = load_text(&path, &text.replace("queues = 4\n", ""))
            .unwrap()
            .ports[0]
            .spec
            .clone();
        assert_eq!(spec, want(1));
        let out = dump_port("vale0:vm", &spec);
        assert!(!out.contains("queues"), "{out}");
        // Not a number of pairs at all: refused with the line.
        let e = load_text(&path, &text.replace("queues = 4", "queues = -1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("vale0:vm"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_vxlan_port_is_declared_checked_and_dumped_back_alike() {
        let dir = std::env::temp_dir().join(format!("vale-settings-vx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.toml");
        let text = "[[port]]\nname = \"vale0:up\"\nkind = \"vxlan\"\nvni = 42\nlocal = \"198.18.0.1\"\nremote = [\"198.18.0.2\", \"198.18.0.3\"]\nlearning = false\n";
        let spec = load_text(&path, text).unwrap().ports[0].spec.clone();
        assert_eq!(
            spec,
            vale::proto::PortSpec::Vxlan {
                vni: 42,
                local: "198.18.0.1".into(),
                port: 4789,
                remote: vec!["198.18.0.2".into(), "198.18.0.3".into()],
                group: None,
                dev: None,
                learning: false,
                src_ports: None,
                offloads: true,
                map: vec![],
            }
        );
        let out = dump_port("vale0:up", &spec);
        assert!(
            out.contains("remote = [\"198.18.0.2\", \"198.18.0.3\"]"),
            "{out}"
        );
        assert_eq!(load_text(&path, &out).unwrap().ports[0].spec, spec, "{out}");
        let e = load_text(&path, &format!("{text}ttl = 3\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ttl` is not a key of a vxlan port"), "{e}");
        // Uplinks on one socket: each VNI once; another address or port is another
        // socket.
        let up = |name: &str, vni: u32, extra: &str| {
            format!(
                "[[port]]\nname = \"{name}\"\nkind = \"vxlan\"\nvni = {vni}\nlocal = \"198.18.0.1\"\nremote = [\"198.18.0.2\"]\n{extra}\n"
            )
        };
        let two = |b: String| {
            std::fs::write(
                &path,
                format!("{}{b}", up("vale0:v42", 42, "map = [\"44:20\"]")),
            )
            .unwrap();
            ConfigFile::load(&path).map(|f| f.ports.len())
        };
        assert_eq!(two(up("vale1:v43", 43, "")).unwrap(), 2);
        assert_eq!(two(up("vale1:v43", 42, "port = 4790")).unwrap(), 2);
        let e = two(up("vale1:v43", 44, "")).unwrap_err().to_string();
        assert!(
            e.contains("line 8: [[port]] vale1:v43: VNI 44 on UDP port 4789 of 198.18.0.1 is vale0:v42's already, on line 1"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
