//! vale-ctl: look at and configure the switches of a running valed.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use vale::proto::{PortSpec, Request, Response};
use vale_tools::capture;

/// Control the userspace VALE switch. Without a command (or with -l), lists ports the
/// way netmap's vale-ctl does.
#[derive(Parser, Debug)]
#[command(name = "vale-ctl", version, disable_help_flag = true)]
struct Args {
    /// valed's socket [default: as valed; VALE_SOCKET overrides]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Machine-readable output (read commands)
    #[arg(long, global = true)]
    json: bool,
    /// netmap's -l: list all ports, or print the indices of one
    #[arg(short = 'l', value_name = "PORT", num_args = 0..=1, default_missing_value = "")]
    list_port: Option<String>,
    /// Create a persistent port: a TAP interface IF that the OS sees (netmap's -n)
    #[arg(short = 'n', value_name = "IF")]
    new_if: Option<String>,
    /// Attach persistent port or existing interface IF to switch valeX as port valeX:IF
    #[arg(short = 'a', value_name = "valeX:IF")]
    attach: Option<String>,
    /// With -a on an existing interface: steer its received frames to the switch with an
    /// XDP program and AF_XDP sockets (zero-copy where the driver supports it) instead
    /// of AF_PACKET; the host stack no longer sees them while it is attached
    #[arg(long, requires = "attach")]
    xdp: bool,
    /// Detach valeX:IF again (an interface is given back untouched)
    #[arg(short = 'd', value_name = "valeX:IF")]
    detach: Option<String>,
    /// Remove persistent port IF (it must be detached)
    #[arg(short = 'r', value_name = "IF")]
    remove: Option<String>,
    /// netmap's -h (attach an interface and its host stack): see the message
    #[arg(short = 'h', value_name = "valeX:IF")]
    host_stack: Option<String>,
    /// Print help
    #[arg(long = "help", action = clap::ArgAction::Help)]
    help: Option<bool>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Switches, their ports, ring configuration and clients
    List,
    /// Counters of one port or all, with drops by reason
    Stats { port: Option<String> },
    /// A switch's learned MAC addresses
    Fdb { switch: String },
    /// Change a run-time setting: bridge_batch N | verbose N
    Set { key: String, value: String },
    /// The daemon's settings
    Settings,
    /// A port for a QEMU VM's `-netdev dgram` (unix sockets): valed binds --bind (the
    /// VM's remote.path) and sends to --peer (the VM's local.path). `-d PORT` removes it
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
    /// A port for a QEMU VM's `-netdev stream` (unix socket): valed listens at --listen
    /// (the VM connects with server=off, and may reconnect) or connects to --connect
    /// (the VM listens, server=on). `-d PORT` removes it
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
    /// A port served as a vhost-user virtio-net device: valed listens on --path (QEMU
    /// `-chardev socket,path=PATH -netdev vhost-user`, DPDK `net_virtio_user0,path=PATH`)
    /// and serves whoever connects, again after it goes away; with --client valed
    /// connects to a frontend listening there (QEMU `server=on`, OVS
    /// `dpdkvhostuserclient`) and reconnects when it comes back. `-d PORT` removes it.
    /// (The vhost-user socket is --path: --socket names valed's control socket.)
    VhostUser {
        /// The switch port, e.g. vale1:vm1
        port: String,
        /// The vhost-user socket
        #[arg(long, value_name = "PATH")]
        path: String,
        /// Connect to a frontend listening on --path instead of listening there
        #[arg(long)]
        client: bool,
    },
    /// A port for a DPDK or VPP application over memif, valed the server: the client
    /// that connects to --socket naming interface --id is this port (DPDK
    /// `--vdev=net_memif0,role=client,id=N,socket=PATH,socket-abstract=no`). Several
    /// memif ports may share a socket, each with its own id. Copy mode; a client whose
    /// memory cannot be sealed against shrinking (DPDK zero-copy=yes) is refused.
    /// `-d PORT` removes it.
    Memif {
        /// The switch port, e.g. vale0:m
        port: String,
        /// The memif socket valed listens on
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
    },
    /// Watch a port (netmap's monitor ports PORT/t, /r): pcap for tcpdump, or a line
    /// per frame. A slow reader never slows the switch: the monitor drops and counts.
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

fn call(args: &Args, req: &Request) -> Result<Response, String> {
    let path = args
        .socket
        .clone()
        .unwrap_or_else(vale::default_socket_path);
    let conn = vale::sock::connect(&path).map_err(|e| e.to_string())?;
    let (resp, _) = vale::sock::call(&conn, req).map_err(|e| e.to_string())?;
    match resp {
        Response::Error { message, .. } => Err(message),
        r => Ok(r),
    }
}

fn print_json(r: &Response) {
    match serde_json::to_string_pretty(r) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("vale-ctl: {e}"),
    }
}

fn run(args: &Args) -> Result<(), String> {
    if let Some(p) = &args.host_stack {
        return Err(format!(
            "-h {p}: netmap's host-stack port (IF^) has no equivalent here: the interface's own traffic \
             already reaches the switch once it is attached with -a, and the host reaches the switch \
             through a persistent port: vale-ctl -n vi0; vale-ctl -a {}:vi0; then give vi0 an address",
            p.split(':').next().unwrap_or("vale0")
        ));
    }
    let host_ops: [Option<Request>; 4] = [
        args.new_if.clone().map(|name| Request::HostCreate { name }),
        args.attach.clone().map(|port| Request::Attach {
            port,
            xdp: args.xdp,
        }),
        args.detach.clone().map(|port| Request::Detach { port }),
        args.remove.clone().map(|name| Request::HostRemove { name }),
    ];
    let mut did = false;
    for req in host_ops.into_iter().flatten() {
        let r = call(args, &req)?;
        if args.json {
            print_json(&r);
        }
        did = true;
    }
    if let (Some(port), true) = (&args.attach, args.xdp) {
        let ifname = port.split_once(':').map_or("", |p| p.1);
        // A software interface (veth, ...) has no `device`: what local senders give it
        // may leave checksums to offload, and AF_XDP carries no flag saying so.
        if !ifname.is_empty()
            && std::path::Path::new(&format!("/sys/class/net/{ifname}")).exists()
            && !std::path::Path::new(&format!("/sys/class/net/{ifname}/device")).exists()
        {
            eprintln!(
                "vale-ctl: note: {ifname} is a software interface: frames local senders pass it \
                 with checksum offload (a veth peer's default) arrive through AF_XDP without \
                 their checksums; turn it off on the sender (ethtool -K PEER tx off) or attach \
                 without --xdp"
            );
        }
    }
    if did {
        return Ok(());
    }
    let cmd = match (&args.cmd, &args.list_port) {
        (Some(c), _) => c,
        (None, Some(p)) if !p.is_empty() => return list_one(args, p),
        (None, _) => return list_netmap(args),
    };
    match cmd {
        Cmd::List => {
            let r = call(args, &Request::List { page: None })?;
            if args.json {
                print_json(&r);
            } else if let Response::List {
                switches, hosts, ..
            } = r
            {
                if switches.is_empty() {
                    println!("no switches (a switch appears when a client opens vale<sw>:<port>)");
                }
                for s in switches {
                    println!(
                        "{} (bridge_idx {}, bridge_batch {}, {} ports)",
                        s.name,
                        s.index,
                        s.bridge_batch,
                        s.ports.len()
                    );
                    for p in s.ports {
                        let g = p.geometry;
                        println!(
                            "  {:<16} port_idx {:<3} tx {}x{} rx {}x{} buf {} clients {}",
                            p.name,
                            p.index,
                            g.tx_rings,
                            g.tx_slots,
                            g.rx_rings,
                            g.rx_slots,
                            g.buf_size,
                            p.clients
                        );
                    }
                }
                if !hosts.is_empty() {
                    println!("host ports");
                }
                for h in hosts {
                    let c = &h.counters;
                    println!(
                        "  {:<16} {} {:<16} from_host {} to_host {} truncated {} write_errors {} read_errors {} bad_offload {}{}",
                        h.name,
                        h.kind,
                        match (&h.attached, &h.waiting, h.gone) {
                            (Some(a), _, true) => format!("{a} (interface gone)"),
                            (Some(a), _, false) => a.clone(),
                            (None, Some(p), _) => format!("{p} (waiting for QEMU)"),
                            (None, None, _) => "(detached)".into(),
                        },
                        c.from_host,
                        c.to_host,
                        c.truncated,
                        c.write_errors,
                        c.read_errors,
                        c.bad_offload,
                        if h.kind == "nic-xdp" || h.kind == "nic" {
                            format!(" kernel_drops {}", c.kernel_drops)
                        } else if h.kind == "memif" {
                            format!(
                                " no_peer {} bad_desc {} chain_too_long {} peer_disconnects {}\n    {}",
                                c.no_peer,
                                c.bad_desc,
                                c.chain_too_long,
                                c.peer_disconnects,
                                h.about
                            )
                        } else if c.no_peer > 0 {
                            format!(" no_peer {}", c.no_peer)
                        } else if c.memory_faults > 0 {
                            format!(" memory_faults {}", c.memory_faults)
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
        Cmd::Stats { port } => {
            let r = call(
                args,
                &Request::Stats {
                    port: port.clone(),
                    page: None,
                },
            )?;
            if args.json {
                print_json(&r);
            } else if let Response::Stats { ports, .. } = r {
                for p in ports {
                    let c = &p.counters;
                    println!("{} (port_idx {})", p.name, p.index);
                    println!(
                        "  tx_packets {} tx_bytes {} forwarded {} copies {} copies_dropped {}",
                        c.tx_packets, c.tx_bytes, c.forwarded, c.copies, c.copies_dropped
                    );
                    println!(
                        "  rx_packets {} rx_bytes {} ring_resets {}",
                        c.rx_packets, c.rx_bytes, c.ring_resets
                    );
                    println!(
                        "  rx_copies {} rx_segmented {} rx_segments {} mon_copies {}",
                        c.rx_copies, c.rx_segmented, c.rx_segments, c.mon_copies
                    );
                    let drops: Vec<String> =
                        c.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    println!("  drops: {}", drops.join(", "));
                }
            }
        }
        Cmd::Fdb { switch } => {
            let r = call(
                args,
                &Request::Fdb {
                    switch: switch.clone(),
                    page: None,
                },
            )?;
            if args.json {
                print_json(&r);
            } else if let Response::Fdb {
                switch,
                entries,
                counters,
                ..
            } = r
            {
                println!("{switch}: {} learned addresses", entries.len());
                println!("  {:<18} {:<16} {:>8}", "mac", "port", "age (s)");
                for e in entries {
                    println!("  {:<18} {:<16} {:>8}", e.mac, e.port, e.age_secs);
                }
                let c: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!("  {}", c.join(", "));
            }
        }
        Cmd::Set { key, value } => {
            if let Response::Done { message } = call(
                args,
                &Request::Set {
                    key: key.clone(),
                    value: value.clone(),
                },
            )? {
                println!("{message}");
            }
        }
        Cmd::QemuDgram { port, bind, peer } => {
            let r = call(
                args,
                &Request::Create {
                    port: port.clone(),
                    spec: PortSpec::QemuDgram {
                        socket: bind.clone(),
                        peer: peer.clone(),
                    },
                },
            )?;
            if args.json {
                print_json(&r);
            }
        }
        Cmd::QemuStream {
            port,
            listen,
            connect,
        } => {
            let r = call(
                args,
                &Request::Create {
                    port: port.clone(),
                    spec: PortSpec::QemuStream {
                        listen: listen.clone(),
                        connect: connect.clone(),
                    },
                },
            )?;
            if args.json {
                print_json(&r);
            }
        }
        Cmd::VhostUser { port, path, client } => {
            let r = call(
                args,
                &Request::Create {
                    port: port.clone(),
                    spec: PortSpec::VhostUser {
                        socket: path.clone(),
                        client: *client,
                    },
                },
            )?;
            if args.json {
                print_json(&r);
            }
        }
        Cmd::Memif {
            port,
            path,
            id,
            secret,
            abstract_name,
        } => {
            let r = call(
                args,
                &Request::Create {
                    port: port.clone(),
                    spec: PortSpec::Memif {
                        socket: path.clone(),
                        abstract_name: *abstract_name,
                        id: *id,
                        secret: secret.clone(),
                    },
                },
            )?;
            if args.json {
                print_json(&r);
            }
        }
        Cmd::Capture {
            port,
            dir,
            file,
            count,
            duration,
        } => {
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())
                    .map_err(|e| format!("signal handler: {e}"))?;
            }
            let o = capture::Options {
                port: port.clone(),
                dir: capture::Direction::parse(dir)?,
                file: file.clone(),
                count: *count,
                duration: duration.map(Duration::from_secs_f64),
                socket: args.socket.clone(),
            };
            let s = capture::run(&o, stop)?;
            // The monitor's own counters: what its full ring made it miss.
            let dropped = match call(
                args,
                &Request::Stats {
                    port: Some(s.monitor.name().to_string()),
                    page: None,
                },
            ) {
                Ok(Response::Stats { ports, .. }) => ports
                    .iter()
                    .find(|p| p.index == s.monitor.index())
                    .and_then(|p| p.counters.drops.get("ring_full").copied()),
                _ => None,
            };
            eprintln!(
                "{} packets captured on {port}; {} dropped because the capture fell behind",
                s.captured,
                dropped.map_or("?".to_string(), |d| d.to_string())
            );
        }
        Cmd::Settings => {
            let r = call(args, &Request::Settings)?;
            if args.json {
                print_json(&r);
            } else if let Response::Settings { settings } = r {
                for (k, v) in settings {
                    println!("{k} = {v}");
                }
            }
        }
    }
    Ok(())
}

/// netmap's vale-ctl with no arguments: `vale0:a bridge_idx 0 port_idx 0`, a line a port.
fn list_netmap(args: &Args) -> Result<(), String> {
    let r = call(args, &Request::List { page: None })?;
    if args.json {
        print_json(&r);
    } else if let Response::List { switches, .. } = r {
        for s in switches {
            for p in s.ports {
                println!("{} bridge_idx {} port_idx {}", p.name, s.index, p.index);
            }
        }
    }
    Ok(())
}

/// netmap's `vale-ctl -l vale0:a`.
fn list_one(args: &Args, name: &str) -> Result<(), String> {
    let Response::List { switches, .. } = call(args, &Request::List { page: None })? else {
        return Err("unexpected answer from valed".into());
    };
    for s in &switches {
        if let Some(p) = s.ports.iter().find(|p| p.name == name) {
            if args.json {
                println!("{{\"bridge_idx\": {}, \"port_idx\": {}}}", s.index, p.index);
            } else {
                println!("bridge_idx: {}\nport_idx:   {}", s.index, p.index);
            }
            return Ok(());
        }
    }
    Err(format!(
        "failed to list {name}: no such port (see `vale-ctl list`)"
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vale-ctl: {e}");
            ExitCode::from(1)
        }
    }
}
