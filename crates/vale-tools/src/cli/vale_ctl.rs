//! vale-ctl's command line. netmap's flags (`-l -n -a -d -r -h`) live at the top level,
//! where `-h` keeps netmap's meaning (attach with the host stack) and help is `--help`;
//! each subcommand takes `-h` and `--help` (added by [`command`]).

use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;

/// Control the userspace VALE switch. Without a command (or with -l), lists ports the
/// way netmap's vale-ctl does.
#[derive(Parser, Debug)]
#[command(
    name = "vale-ctl",
    version,
    disable_help_flag = true,
    after_help = "Examples:\n  \
        vale-ctl                        # netmap's listing: vale0:a bridge_idx 0 port_idx 0\n  \
        vale-ctl -n vi0 && vale-ctl -a vale0:vi0   # a TAP interface on switch vale0\n  \
        vale-ctl -n vi1 --queues 4      # a multiqueue TAP: 4 queues, 4 rings each way\n  \
        vale-ctl stats --watch 1        # per-port rates every second\n  \
        vale-ctl help vhost-user        # or: vale-ctl vhost-user --help\n\n\
        -h is netmap's host-stack flag here (see its message); help is --help, or -h after a command."
)]
pub struct Args {
    /// valed's socket [default: as valed; VALE_SOCKET overrides]
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Machine-readable output (read commands)
    #[arg(long, global = true)]
    pub json: bool,
    /// netmap's -l: list all ports, or print the indices of one
    #[arg(short = 'l', value_name = "PORT", num_args = 0..=1, default_missing_value = "")]
    pub list_port: Option<String>,
    /// Create a persistent port: a TAP interface IF that the OS sees (netmap's -n)
    #[arg(short = 'n', value_name = "IF")]
    pub new_if: Option<String>,
    /// With -n: a multiqueue TAP of N queues, 1 to 16 (IFF_MULTI_QUEUE): the kernel
    /// spreads flows over them, queue i is the switch port's TX and RX ring i, and the
    /// threads of a switch of several (valed --switch-threads) serve them in parallel
    #[arg(long, value_name = "N", requires = "new_if")]
    pub queues: Option<u16>,
    /// Attach persistent port or existing interface IF to switch valeX as port valeX:IF
    #[arg(short = 'a', value_name = "valeX:IF")]
    pub attach: Option<String>,
    /// With -a on an existing interface: steer its received frames to the switch with an
    /// XDP program and AF_XDP sockets (zero-copy where the driver supports it) instead
    /// of AF_PACKET; the host stack no longer sees them while it is attached
    #[arg(long, requires = "attach")]
    pub xdp: bool,
    /// Detach valeX:IF again (an interface is given back untouched)
    #[arg(short = 'd', value_name = "valeX:IF")]
    pub detach: Option<String>,
    /// Remove persistent port IF (it must be detached)
    #[arg(short = 'r', value_name = "IF")]
    pub remove: Option<String>,
    /// netmap's -h (attach an interface and its host stack): see the message
    #[arg(short = 'h', value_name = "valeX:IF")]
    pub host_stack: Option<String>,
    /// Print help (netmap's -h means something else here)
    #[arg(long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

/// `vale-ctl config ...`.
#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Check FILE as valed would read it (settings and [[port]] declarations), with
    /// errors that name the line; valed need not run
    #[command(after_help = "Examples:\n  vale-ctl config check /etc/vale/valed.toml")]
    Check {
        /// The TOML file
        file: PathBuf,
    },
    /// Print the running state (settings and every host port) as a config file that
    /// recreates it
    #[command(
        after_help = "Examples:\n  vale-ctl config dump > valed.toml && valed --config valed.toml"
    )]
    Dump,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Switches, their ports, ring configuration and clients
    ///
    /// One line per switch (bridge_idx, bridge_batch, ports), one per port (port_idx,
    /// rings x slots each way, buffer size, clients), then the host ports (TAP,
    /// attached interfaces, QEMU, vhost-user, memif) with their counters.
    #[command(after_help = "Examples:\n  vale-ctl list\n  vale-ctl --json list")]
    List,
    /// Counters of one port or all, with drops by reason; --watch for rates
    ///
    /// tx and rx are the client's view, as in netmap: tx is what the port sent into the
    /// switch, rx what the switch delivered to it. With --watch, redraws a table of
    /// rates (packets/s, bytes/s and drops/s each way) every SECS seconds until Ctrl-C
    /// or --count refreshes; when stdout is not a terminal it prints one block per
    /// interval instead of redrawing (with --json: one JSON object per line).
    #[command(after_help = "Examples:\n  \
        vale-ctl stats                  # every port\n  \
        vale-ctl stats vale0:a\n  \
        vale-ctl stats --watch          # rates, redrawn every second\n  \
        vale-ctl stats --watch 5 --count 12 > rates.txt")]
    Stats {
        /// Only this port, e.g. vale0:a
        port: Option<String>,
        /// Show rates, refreshed every SECS seconds
        #[arg(
            long,
            value_name = "SECS",
            num_args = 0..=1,
            default_missing_value = "1",
            value_parser = watch_secs
        )]
        watch: Option<f64>,
        /// With --watch: stop after N refreshes [default: until Ctrl-C]
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// A switch's learned MAC addresses
    ///
    /// Each address with the port it was learned on and its age, then the table's
    /// counters (learned, moved, aged out).
    #[command(after_help = "Examples:\n  vale-ctl fdb vale0")]
    Fdb {
        /// The switch, e.g. vale0
        switch: String,
    },
    /// A switch's VLAN settings: show them, or change them (root or valed's user)
    ///
    /// With a switch (vale0) and no flag: whether it filters VLANs and every port's
    /// mode. --filtering on makes it VLAN-aware (802.1Q, with Open vSwitch's semantics):
    /// learning per (MAC, VLAN), floods kept inside their VLAN, tags pushed and popped
    /// per port. With a port (vale0:a), sets its mode: --access VID (untagged; tagged
    /// frames dropped), --trunk [VIDS] (tagged; all VLANs without a list; --native VID
    /// for untagged frames, --native-tagged to send that VLAN tagged too), --tunnel
    /// S-VID (802.1ad customer port: frames, tagged or not, carried in S-VLAN S-VID with
    /// a 0x88a8 tag on trunks), --none (the default: a trunk of every VLAN). Settings
    /// are kept by name: a port opened later gets its mode. With filtering off, tags are
    /// carried untouched.
    #[command(after_help = "Examples:\n  \
        vale-ctl vlan vale0 --filtering on\n  \
        vale-ctl vlan vale0:a --access 10\n  \
        vale-ctl vlan vale0:up --trunk 10,20 --native 1 --native-tagged\n  \
        vale-ctl vlan vale0:cust --tunnel 100\n  \
        vale-ctl vlan vale0:a --none\n  \
        vale-ctl vlan vale0                # filtering, and each port's mode")]
    Vlan {
        /// A switch (vale0), or a port (vale0:a) to set the mode of
        target: String,
        /// Switch: filter VLANs (on) or carry tags untouched (off)
        #[arg(long, value_name = "on|off", value_parser = on_off, group = "change")]
        filtering: Option<bool>,
        /// Port: access port of VLAN VID (1..=4094)
        #[arg(long, value_name = "VID", group = "change")]
        access: Option<u16>,
        /// Port: trunk of VIDS (e.g. 10,20,30-39; every VLAN if none are given)
        #[arg(long, value_name = "VIDS", num_args = 0..=1, default_missing_value = "all", group = "change")]
        trunk: Option<String>,
        /// With --trunk: untagged frames belong to VLAN VID (and leave untagged)
        #[arg(long, value_name = "VID", requires = "trunk")]
        native: Option<u16>,
        /// With --native: frames of the native VLAN leave tagged
        #[arg(long, requires = "native")]
        native_tagged: bool,
        /// Port: 802.1ad tunnel (customer) port of S-VLAN S-VID
        #[arg(long, value_name = "S-VID", group = "change")]
        tunnel: Option<u16>,
        /// Port: back to the default mode (a trunk of every VLAN)
        #[arg(long, group = "change")]
        none: bool,
    },
    /// Change a run-time setting: bridge_batch N | switch_threads SWITCH=N | verbose N
    ///
    /// bridge_batch: packets per forwarding pass, 1..=8192 (valed --bridge-batch).
    /// switch_threads: switch SWITCH forwarded by N threads at once, 1..=256 (valed
    /// --switch-threads).
    /// verbose: valed's log level, 0 (warnings) to 3 (trace).
    #[command(
        after_help = "Examples:\n  vale-ctl set bridge_batch 64\n  vale-ctl set switch_threads vale0=4\n  vale-ctl set verbose 2"
    )]
    Set {
        /// bridge_batch, switch_threads or verbose
        key: String,
        /// The new value
        value: String,
    },
    /// The daemon's settings
    ///
    /// Every limit and default valed runs with, one `key = value` a line.
    #[command(after_help = "Examples:\n  vale-ctl settings\n  vale-ctl --json settings")]
    Settings,
    /// Read valed's config file again and apply its [[port]] declarations (as SIGHUP)
    ///
    /// Ports the file no longer declares, or declares differently, are removed; new ones
    /// are created; the others are not touched. Nothing changes if the file has an
    /// error. Other settings take effect when valed starts again.
    #[command(after_help = "Examples:\n  \
        vale-ctl reload\n  \
        vale-ctl config check /etc/vale/valed.toml && vale-ctl reload\n  \
        systemctl reload valed       # the same, by SIGHUP")]
    Reload,
    /// Check a config file, or print the running state as one
    #[command(after_help = "Examples:\n  \
        vale-ctl config check /etc/vale/valed.toml\n  \
        vale-ctl config dump > /etc/vale/valed.toml")]
    Config {
        #[command(subcommand)]
        what: ConfigCmd,
    },
    /// A port for a QEMU VM's `-netdev dgram` (unix datagram sockets)
    ///
    /// valed binds --bind (the VM's remote.path) and sends to --peer (the VM's
    /// local.path). `vale-ctl -d PORT` removes it.
    #[command(after_help = "Examples:\n  \
        vale-ctl qemu-dgram vale1:vm2 --bind /run/vale/vm2.sock --peer /run/vale/vm2-qemu.sock\n  \
        qemu-system-x86_64 ... -netdev dgram,id=n0,local.type=unix,local.path=/run/vale/vm2-qemu.sock,remote.type=unix,remote.path=/run/vale/vm2.sock")]
    QemuDgram {
        /// The switch port, e.g. vale1:vm1
        port: String,
        /// Socket valed binds
        #[arg(long, value_name = "PATH")]
        bind: String,
        /// The VM's socket
        #[arg(long, value_name = "PATH")]
        peer: String,
    },
    /// A port for a QEMU VM's `-netdev stream` (unix stream socket)
    ///
    /// valed listens at --listen (the VM connects with server=off, and may reconnect)
    /// or connects to --connect (the VM listens, server=on). `vale-ctl -d PORT` removes
    /// it.
    #[command(after_help = "Examples:\n  \
        vale-ctl qemu-stream vale1:vm1 --listen /run/vale/vm1.sock\n  \
        qemu-system-x86_64 ... -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/run/vale/vm1.sock")]
    QemuStream {
        /// The switch port, e.g. vale1:vm1
        port: String,
        /// Socket valed listens on
        #[arg(long, value_name = "PATH", conflicts_with = "connect")]
        listen: Option<String>,
        /// Socket of a VM listening (server=on)
        #[arg(long, value_name = "PATH")]
        connect: Option<String>,
    },
    /// A port served as a vhost-user virtio-net device (QEMU, DPDK)
    ///
    /// valed listens on --path (QEMU `-chardev socket,path=PATH -netdev vhost-user`,
    /// DPDK `net_virtio_user0,path=PATH`) and serves whoever connects, again after it
    /// goes away; with --client valed connects to a frontend listening there (QEMU
    /// `server=on`, OVS `dpdkvhostuserclient`) and reconnects when it comes back.
    /// `vale-ctl -d PORT` removes it. (The vhost-user socket is --path: --socket names
    /// valed's control socket.) With --queues N the device offers N queue pairs (QEMU
    /// `-netdev vhost-user,queues=N`, DPDK `queues=N`): pair i is the switch port's TX
    /// and RX ring i; pairs the frontend does not run are left alone.
    #[command(after_help = "Examples:\n  \
        vale-ctl vhost-user vale1:vm1 --path /run/vale/vm1.sock\n  \
        vale-ctl vhost-user vale1:vm2 --path /run/vale/vm2.sock --queues 4\n  \
        vale-ctl vhost-user vale2:c --path /run/vale/c.sock --client\n  \
        vale-ctl -d vale1:vm1")]
    VhostUser {
        /// The switch port, e.g. vale1:vm1
        port: String,
        /// The vhost-user socket
        #[arg(long, value_name = "PATH")]
        path: String,
        /// Connect to a frontend listening on --path instead of listening there
        #[arg(long)]
        client: bool,
        /// Queue pairs the device offers, 1 to 16 (each a TX and an RX ring of the port)
        #[arg(long, value_name = "N", default_value_t = 1)]
        queues: u16,
    },
    /// A port for a DPDK or VPP application over memif, valed the server or the client
    ///
    /// The client that connects to --path naming interface --id is this port (DPDK
    /// `--vdev=net_memif0,role=client,id=N,socket=PATH,socket-abstract=no`). Several
    /// memif ports may share a socket, each with its own id. Copy mode; a client whose
    /// memory cannot be sealed against shrinking (DPDK zero-copy=yes) is refused unless
    /// valed runs with --memif-trust-unsealed. With --client, valed connects to a memif
    /// server on --path instead (VPP, DPDK role=server), and again whenever it comes
    /// back. `vale-ctl -d PORT` removes it.
    #[command(after_help = "Examples:\n  \
        vale-ctl memif vale0:m --path /run/vale/memif.sock --id 7\n  \
        dpdk-testpmd --vdev=net_memif0,role=client,id=7,socket=/run/vale/memif.sock,socket-abstract=no ...\n  \
        vale-ctl memif vale0:v --path /run/vpp/memif.sock --client   # VPP or testpmd role=server")]
    Memif {
        /// The switch port, e.g. vale0:m
        port: String,
        /// The memif socket: valed listens on it, or with --client connects to it
        /// (`--socket` is vale-ctl's own: the control socket)
        #[arg(long = "path", value_name = "PATH")]
        path: String,
        /// The interface id the client names
        #[arg(long, default_value_t = 0)]
        id: u32,
        /// A secret the client must give (at most 24 bytes)
        #[arg(long)]
        secret: Option<String>,
        /// Listen on PATH in the abstract namespace (DPDK's socket-abstract=yes, its
        /// default) instead of as a file
        #[arg(long = "abstract")]
        abstract_name: bool,
        /// Connect to a memif server listening on PATH instead of serving there
        #[arg(long)]
        client: bool,
    },
    /// A VXLAN uplink (RFC 7348): the switch's frames for one VNI to other hosts' VTEPs
    ///
    /// One switch port per VNI, interoperable with Linux's `vxlan` devices and Open
    /// vSwitch. Broadcast, multicast and unknown unicast go to every --remote (head-end
    /// replication) and to --group, if given; with learning (the default) the VTEP behind
    /// each inner MAC is learned from the outer source address, aged after 300 s, and
    /// shown by `vale-ctl list`. Datagrams leave with DF set: give the hosts behind the
    /// switch an MTU of the underlay's minus 50 (70 over IPv6; `vale-ctl list` states
    /// it); larger frames are counted as too_big. `vale-ctl -d PORT` removes it.
    #[command(after_help = "Examples:\n  \
        vale-ctl vxlan vale0:up --vni 42 --local 198.18.0.1 --remote 198.18.0.2 --remote 198.18.0.3\n  \
        ip link add vx0 type vxlan id 42 dstport 4789 local 198.18.0.2 remote 198.18.0.1   # the peer\n  \
        vale-ctl vxlan vale0:mc --vni 44 --local 198.18.0.1 --group 239.1.1.1 --dev eth0\n  \
        vale-ctl vxlan vale0:up --vni 42 --local 198.18.0.1 --remote 198.18.0.2 --map 43:20 44:30   # VLANs 20, 30 in VNIs 43, 44\n  \
        vale-ctl -d vale0:up")]
    Vxlan {
        /// The switch port, e.g. vale0:up
        port: String,
        /// The VXLAN network identifier (24 bits)
        #[arg(long)]
        vni: u32,
        /// This host's underlay address (IPv4 or IPv6), where remotes send; an IPv6
        /// link-local one with its link as zone (fe80::1%eth0)
        #[arg(long, value_name = "IP")]
        local: String,
        /// The UDP port, ours and the remotes'
        #[arg(long = "port", value_name = "PORT", default_value_t = 4789)]
        udp_port: u16,
        /// A remote VTEP; repeat (or list several) for head-end replication
        #[arg(long, value_name = "IP", num_args = 1..)]
        remote: Vec<String>,
        /// A multicast group for broadcast and unknown unicast
        #[arg(long, value_name = "MCAST")]
        group: Option<String>,
        /// The interface the group is joined on
        #[arg(long, value_name = "IF", requires = "group")]
        dev: Option<String>,
        /// Do not learn VTEPs: every frame goes to every remote and the group
        #[arg(long)]
        no_learning: bool,
        /// UDP source ports to pick from by flow hash, LO-HI (at most 64) [default: 8
        /// ports from the kernel's ephemeral range]
        #[arg(long, value_name = "LO-HI")]
        src_ports: Option<String>,
        /// No UDP GSO on transmit or GRO on receive: every datagram its own send and
        /// read (by default a flow's segments go as one train where the kernel offers it)
        #[arg(long)]
        no_offloads: bool,
        /// Another VNI on the same UDP socket, carrying one VLAN: frames of VLAN VID leave
        /// untagged in VNI, what arrives in VNI enters tagged VID (--vni carries the
        /// untagged frames); repeat for more
        #[arg(long, value_name = "VNI:VID", num_args = 1..)]
        map: Vec<String>,
    },
    /// Watch a port (netmap's monitor ports PORT/t, /r): pcap for tcpdump, or a line per frame
    ///
    /// A slow reader never slows the switch: the monitor drops and counts, and the
    /// closing line says how many it missed.
    #[command(after_help = "Examples:\n  \
        vale-ctl capture vale0:a                        # a line per frame until Ctrl-C\n  \
        vale-ctl capture vale0:a --dir rx -c 100 -w a.pcap && tcpdump -nr a.pcap\n  \
        vale-ctl capture vale0:vi0 -w - | tcpdump -nr - icmp")]
    Capture {
        /// The port to watch, e.g. vale0:a
        port: String,
        /// What to see: rx (what the port receives), tx (what it sends), or both
        #[arg(long, default_value = "both")]
        dir: String,
        /// Write pcap to FILE, or to stdout with `-` (`... -w - | tcpdump -nr -`)
        #[arg(short = 'w', value_name = "FILE")]
        file: Option<String>,
        /// Stop after COUNT frames
        #[arg(short = 'c', value_name = "COUNT", default_value_t = 0)]
        count: u64,
        /// Stop after SECS seconds
        #[arg(long, value_name = "SECS")]
        duration: Option<f64>,
    },
}

// `vale-ctl generate`: parsed apart from the rest so that it stays out of the help,
// the man pages and the completions it writes (it is for packagers, not users).
#[derive(Parser, Debug)]
#[command(
    name = "vale-ctl generate",
    bin_name = "vale-ctl generate",
    version,
    about = "Write the man pages or shell completions of valed, vale-ctl and pkt-gen"
)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: Generate,
}

#[derive(Subcommand, Debug)]
pub enum Generate {
    /// Man pages of valed, vale-ctl (one per subcommand too) and pkt-gen, into DIR
    #[command(after_help = "Examples:\n  vale-ctl generate man /usr/local/share/man/man8")]
    Man {
        /// Directory to write them to (created if missing)
        dir: PathBuf,
    },
    /// Completions of valed, vale-ctl and pkt-gen for SHELL, into DIR
    #[command(
        after_help = "Examples:\n  vale-ctl generate completions bash /etc/bash_completion.d"
    )]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
        /// Directory to write them to (created if missing)
        dir: PathBuf,
    },
}

/// `on` or `off` (also true/false, 1/0).
fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(format!("`{s}` is not on or off")),
    }
}

/// `--watch SECS`: a number of seconds within the limits, and a hint for the likely
/// mistake of naming the port after `--watch`.
fn watch_secs(s: &str) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|_| {
        format!(
            "`{s}` is not a number of seconds (to watch one port, name it before --watch: \
             vale-ctl stats {s} --watch)"
        )
    })?;
    crate::watch::interval(secs).map(|_| secs)
}

/// vale-ctl's command, with `-h`/`--help` on every subcommand (the top level's `-h` is
/// netmap's, so clap's own help flag is disabled there and, being a global setting,
/// everywhere below; this puts it back).
pub fn command() -> clap::Command {
    with_sub_help(Args::command())
}

fn with_sub_help(cmd: clap::Command) -> clap::Command {
    cmd.mut_subcommands(|sc| {
        with_sub_help(sc).arg(
            clap::Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Print help (see more with '--help')"),
        )
    })
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Ctl(Box<Args>),
    Generate(Generate),
}

/// Parses the process's arguments; exits with clap's message (status 2) on a usage
/// error, or after printing help or the version.
pub fn parse() -> Invocation {
    use clap::FromArgMatches;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "generate") {
        return Invocation::Generate(GenerateArgs::parse_from(&argv[1..]).what);
    }
    let mut m = command().get_matches_from(argv);
    Invocation::Ctl(Box::new(
        Args::from_arg_matches_mut(&mut m).unwrap_or_else(|e| e.exit()),
    ))
}
