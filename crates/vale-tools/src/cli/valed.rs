//! valed's command line, and the settings it makes.

use clap::Parser;
use std::path::PathBuf;
use valed::{ConfigFile, Settings};

/// The userspace VALE switch: switches and ports appear when clients open
/// `vale<switch>:<port>` names, and each switch is a learning bridge.
#[derive(Parser, Debug)]
#[command(
    name = "valed",
    version,
    after_help = "Examples:\n  \
        valed                                   # /run/vale/valed.sock as root\n  \
        valed -v --max-switches 64 --slots 2048\n  \
        valed --config /etc/vale/valed.toml --threads 2 --cpus 2,3\n  \
        valed --metrics 127.0.0.1:9417          # then: curl 127.0.0.1:9417/metrics\n  \
        pkt-gen -i vale0:b -f rx & pkt-gen -i vale0:a -f tx   # then clients open ports by name"
)]
pub struct Args {
    /// Unix socket to listen on [default: /run/vale/valed.sock as root, else
    /// $XDG_RUNTIME_DIR/vale/valed.sock; VALE_SOCKET overrides]
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Mode of the socket file, octal (who may connect)
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// TOML file with any of these settings (flags win), e.g. `max_switches = 64`; it and
    /// its directory must be valed's user's or root's and not writable by group or others
    /// (a sticky directory may be)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace); change at run time with `vale-ctl set verbose N`
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log only warnings and errors
    #[arg(short, long)]
    pub quiet: bool,
    /// Switches at once [default: 8]
    #[arg(long)]
    pub max_switches: Option<usize>,
    /// Ports per switch [default: 254]
    #[arg(long)]
    pub max_ports: Option<u16>,
    /// Rings per direction a port may ask for [default: 16]
    #[arg(long)]
    pub max_rings: Option<u16>,
    /// Slots per ring a port may ask for [default: 4096]
    #[arg(long)]
    pub max_slots: Option<u32>,
    /// Largest buffer size [default: 65472]
    #[arg(long)]
    pub max_buf_size: Option<u32>,
    /// Spare buffers a port may reserve for its clients (netmap's extra buffers, asked by the open that creates it; more is clamped) [default: 4096]
    #[arg(long)]
    pub max_extra_bufs: Option<u32>,
    /// netmap pipes (valeX:p{N and valeX:p}N) each new port has room for, 0..=64; their memory is faulted in only when used [default: 2]
    #[arg(long)]
    pub pipes: Option<u16>,
    /// Client connections at once; more are refused with a message saying so [default: 1024]
    #[arg(long)]
    pub max_clients: Option<usize>,
    /// Client connections at once from one uid (root and valed's own user count against --max-clients only) [default: 256]
    #[arg(long)]
    pub max_clients_per_uid: Option<usize>,
    /// Ports at once created by one uid (root and valed's own user: no limit) [default: 64]
    #[arg(long)]
    pub max_ports_per_uid: Option<usize>,
    /// Memory of all ports together, MiB (a port costs its region, rings and buffers) [default: half the machine's memory]
    #[arg(long, value_name = "MIB")]
    pub max_port_memory_mib: Option<u64>,
    /// Memory of the ports one uid created, MiB (root and valed's own user count against the total only) [default: a quarter of --max-port-memory-mib]
    #[arg(long, value_name = "MIB")]
    pub max_port_memory_per_uid_mib: Option<u64>,
    /// Switches one uid's ports may make (root and valed's own user: no limit) [default: half of --max-switches]
    #[arg(long, value_name = "N")]
    pub max_switches_per_uid: Option<usize>,
    /// A switch whose ports any client may open, or with :GROUP any member of GROUP, whoever created them (elsewhere a port is its creator's, root's and valed's); repeat for more
    #[arg(long, value_name = "SWITCH[:GROUP]")]
    pub share: Vec<String>,
    /// Seconds a connection may stay silent after connecting before valed closes it, 0 = no limit [default: 30]
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout_s: Option<u64>,
    /// Accept vhost-user guest memory that cannot be sealed against shrinking (DPDK --no-huge or hugepages, QEMU memory-backend-file): the frontend is trusted not to truncate it (a truncation is survived, the port cut off) [default: refused]
    #[arg(long)]
    pub vhost_trust_unsealed: bool,
    /// Accept memif regions that cannot be sealed against shrinking (DPDK zero-copy=yes clients): the client is trusted not to truncate them (a truncation is survived, the client disconnected) [default: refused]
    #[arg(long)]
    pub memif_trust_unsealed: bool,
    /// Longest port name [default: 15]
    #[arg(long)]
    pub max_name_len: Option<usize>,
    /// Packets per forwarding pass (netmap's bridge_batch), 1..=8192 [default: 1024]
    #[arg(long)]
    pub bridge_batch: Option<usize>,
    /// Rings per direction of ports that ask for nothing else [default: 1]
    #[arg(long)]
    pub rings: Option<u16>,
    /// Slots per ring of ports that ask for nothing else [default: 1024]
    #[arg(long)]
    pub slots: Option<u32>,
    /// Buffer size of new ports, a multiple of 64 (larger for jumbo frames; netmap's is 2048) [default: 2112]
    #[arg(long)]
    pub buf_size: Option<u32>,
    /// Entries of each switch's learning table, 1..=16777216 [default: 8192]
    #[arg(long)]
    pub fdb_size: Option<usize>,
    /// Seconds before an unused learned address is forgotten, 0 = never [default: 300]
    #[arg(long)]
    pub fdb_max_age: Option<u32>,
    /// Most microseconds the forwarding thread keeps polling after the last packet (it
    /// polls less while packets come further apart than this) [default: 200]
    #[arg(long)]
    pub busy_poll_us: Option<u64>,
    /// Forwarding threads; each switch is forwarded by one of them (new switches go to
    /// the least loaded) [default: 1]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Forward switch SWITCH with N threads at once, e.g. vale0=4 (repeatable): its
    /// lane's thread and N-1 helpers, which sleep while idle [default: 1 per switch]
    #[arg(long, value_name = "SWITCH=N")]
    pub switch_threads: Vec<String>,
    /// Group owning the socket file, name or number [default: the daemon's group]
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Pin forwarding thread t to the t-th CPU of this list, e.g. 2,3 or 4-7 (wraps
    /// around if shorter than --threads); `none`: not pinned; `auto`: each thread on
    /// one of the last CPUs valed may use while it forwards a steady stream (>= 1
    /// Mpps), if it may use more CPUs than --threads [default: none]
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Leave the forwarding threads to the scheduler: `--cpus none`, the default (an
    /// explicit `--cpus` list or `auto` wins)
    #[arg(long)]
    pub no_pin: bool,
    /// Serve Prometheus metrics (GET /metrics) on IP:PORT (e.g. 127.0.0.1:9417) or on a
    /// unix socket path [default: off]
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Metrics connections served at once, 1..=1024; more are answered 503 [default: 8]
    #[arg(long, value_name = "N")]
    pub metrics_max_connections: Option<usize>,
    /// Of those, what one client (an IP address; on a unix socket, a uid) may hold, at
    /// most --metrics-max-connections [default: 2]
    #[arg(long, value_name = "N")]
    pub metrics_max_connections_per_client: Option<usize>,
}

/// The settings these flags ask for: the `--config` file's, then the flags over them,
/// validated.
pub fn settings(a: &Args) -> Result<Settings, valed::SettingsError> {
    let mut s = Settings::default();
    if let Some(path) = &a.config {
        // Port names as long as the daemon will take (`--max-name-len` over the file's).
        let file = ConfigFile::load_trusted(path, a.max_name_len)?;
        file.apply(&mut s)?;
        s.ports = file.ports;
        s.vlans = file.vlans;
        s.config = Some(path.clone());
    }
    let flags = ConfigFile {
        socket: a.socket.clone(),
        socket_mode: a.socket_mode.clone(),
        max_switches: a.max_switches,
        max_ports: a.max_ports,
        max_rings: a.max_rings,
        max_slots: a.max_slots,
        max_buf_size: a.max_buf_size,
        max_extra_bufs: a.max_extra_bufs,
        pipes: a.pipes,
        max_clients: a.max_clients,
        max_clients_per_uid: a.max_clients_per_uid,
        max_ports_per_uid: a.max_ports_per_uid,
        max_port_memory_mib: a.max_port_memory_mib,
        max_port_memory_per_uid_mib: a.max_port_memory_per_uid_mib,
        max_switches_per_uid: a.max_switches_per_uid,
        share: (!a.share.is_empty()).then(|| a.share.clone()),
        handshake_timeout_s: a.handshake_timeout_s,
        vhost_trust_unsealed: a.vhost_trust_unsealed.then_some(true),
        memif_trust_unsealed: a.memif_trust_unsealed.then_some(true),
        max_name_len: a.max_name_len,
        bridge_batch: a.bridge_batch,
        rings: a.rings,
        slots: a.slots,
        buf_size: a.buf_size,
        fdb_size: a.fdb_size,
        fdb_max_age: a.fdb_max_age,
        verbose: None,
        busy_poll_us: a.busy_poll_us,
        threads: a.threads,
        switch_threads: (!a.switch_threads.is_empty()).then(|| a.switch_threads.clone()),
        socket_group: a.socket_group.clone(),
        cpus: a
            .cpus
            .clone()
            .or_else(|| a.no_pin.then(|| "none".to_string())),
        metrics: a.metrics.clone(),
        metrics_max_connections: a.metrics_max_connections,
        metrics_max_connections_per_client: a.metrics_max_connections_per_client,
        ..Default::default()
    };
    flags.apply(&mut s)?;
    if a.quiet {
        s.verbose = 0;
    } else if a.verbose > 0 {
        s.verbose = 1 + a.verbose;
    }
    s.validate()?;
    Ok(s)
}
