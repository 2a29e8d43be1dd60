//! vale-ctl: look at and configure the switches of a running valed.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use vale::proto::{PortSpec, Request, Response};
use vale_tools::cli::vale_ctl::{Args, Cmd, ConfigCmd, Generate, Invocation};
use vale_tools::{capture, cli, watch};

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
        args.new_if.clone().map(|name| Request::HostCreate {
            name,
            queues: args.queues.unwrap_or(1),
        }),
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
                            format!(" kernel_drops {} too_big {}", c.kernel_drops, c.too_big)
                        } else if h.kind == "vxlan" {
                            format!(
                                " too_big {} replica_drops {} datagrams {} gso_sends {} gro_reads {}\n    dropped: too_short {} no_i_flag {} reserved {} foreign_vni {} queue_full {} tagged_mapped {}\n    {}",
                                c.too_big,
                                c.replica_drops,
                                c.vxlan_datagrams,
                                c.gso_sends,
                                c.gro_reads,
                                c.vxlan_too_short,
                                c.vxlan_no_i_flag,
                                c.vxlan_reserved,
                                c.vxlan_foreign_vni,
                                c.vxlan_queue_full,
                                c.vxlan_tagged_mapped,
                                h.about
                            )
                        } else if h.kind == "memif" {
                            format!(
                                " no_peer {} bad_desc {} chain_too_long {} peer_disconnects {}\n    {}",
                                c.no_peer,
                                c.bad_desc,
                                c.chain_too_long,
                                c.peer_disconnects,
                                h.about
                            )
                        } else if h.kind == "vhost-user" {
                            // Where, and the queue pairs offered and running.
                            format!(" memory_faults {}\n    {}", c.memory_faults, h.about)
                        } else if h.kind == "tap" && h.about != "TAP interface" {
                            // A multiqueue TAP: its queues and each one's frames.
                            let big = if c.too_big > 0 {
                                format!(" too_big {}", c.too_big)
                            } else {
                                String::new()
                            };
                            format!("{big}\n    {}", h.about)
                        } else if c.no_peer > 0 {
                            format!(" no_peer {}", c.no_peer)
                        } else if c.memory_faults > 0 {
                            format!(" memory_faults {}", c.memory_faults)
                        } else if c.too_big > 0 {
                            format!(" too_big {}", c.too_big)
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
        Cmd::Stats {
            port,
            watch: Some(secs),
            count,
        } => {
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())
                    .map_err(|e| format!("signal handler: {e}"))?;
            }
            let stdout = std::io::stdout();
            let o = watch::Options {
                secs: *secs,
                count: *count,
                json: args.json,
                redraw: !args.json && std::io::IsTerminal::is_terminal(&stdout),
            };
            let fetch = || match call(
                args,
                &Request::Stats {
                    port: port.clone(),
                    page: None,
                },
            )? {
                Response::Stats { ports, .. } => Ok(ports),
                _ => Err("unexpected answer from valed".to_string()),
            };
            watch::run(&o, fetch, &stop, &mut stdout.lock())?;
        }
        Cmd::Stats { port, .. } => {
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
                // The VLAN column on a VLAN-aware switch, the VTEP one (and the VNI)
                // when an address was learned on a VXLAN uplink.
                let vlans = entries.iter().any(|e| e.vlan.is_some());
                let vteps = entries.iter().any(|e| e.vtep.is_some());
                let vnis = entries.iter().any(|e| e.vni.is_some());
                let mut head = format!("  {:<18}", "mac");
                if vlans {
                    head += &format!(" {:>4}", "vlan");
                }
                head += &format!(" {:<16} {:>8}", "port", "age (s)");
                if vteps {
                    head += &format!("  {:<15}", "vtep");
                }
                if vnis {
                    head += &format!(" {:>8}", "vni");
                }
                println!("{}", head.trim_end());
                for e in entries {
                    let mut l = format!("  {:<18}", e.mac);
                    if vlans {
                        l += &format!(" {:>4}", e.vlan.unwrap_or(0));
                    }
                    l += &format!(" {:<16} {:>8}", e.port, e.age_secs);
                    if vteps {
                        l += &format!("  {:<15}", e.vtep.as_deref().unwrap_or("-"));
                    }
                    if vnis {
                        l += &format!(" {:>8}", e.vni.map_or("-".into(), |v| v.to_string()));
                    }
                    println!("{}", l.trim_end());
                }
                let c: Vec<String> = counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
                println!("  {}", c.join(", "));
            }
        }
        Cmd::Vlan {
            target,
            filtering,
            access,
            trunk,
            native,
            native_tagged,
            tunnel,
            none,
        } => {
            let mode = match (access, trunk, tunnel, none) {
                (Some(v), ..) => Some(format!("access {v}")),
                (_, Some(vids), ..) => Some(match native {
                    None => format!("trunk {vids}"),
                    Some(n) if *native_tagged => format!("trunk {vids} native {n} tagged"),
                    Some(n) => format!("trunk {vids} native {n}"),
                }),
                (_, _, Some(s), _) => Some(format!("tunnel {s}")),
                (.., true) => Some("none".to_string()),
                _ => None,
            };
            let r = if filtering.is_none() && mode.is_none() {
                call(
                    args,
                    &Request::Vlan {
                        switch: target.clone(),
                    },
                )?
            } else {
                call(
                    args,
                    &Request::VlanSet {
                        target: target.clone(),
                        filtering: *filtering,
                        mode,
                    },
                )?
            };
            if args.json {
                print_json(&r);
            } else if let Response::Vlan {
                switch,
                filtering,
                ports,
            } = r
            {
                let on = if filtering { "on" } else { "off" };
                println!("{switch}: vlan_filtering {on}");
                for (p, m) in ports {
                    println!("  {p:<16} {m}");
                }
            } else if let Response::Done { message } = r {
                println!("{message}");
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
        Cmd::VhostUser {
            port,
            path,
            client,
            queues,
        } => {
            let r = call(
                args,
                &Request::Create {
                    port: port.clone(),
                    spec: PortSpec::VhostUser {
                        socket: path.clone(),
                        client: *client,
                        queues: *queues,
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
            client,
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
                        client: *client,
                    },
                },
            )?;
            if args.json {
                print_json(&r);
            }
        }
        Cmd::Vxlan {
            port,
            vni,
            local,
            udp_port,
            remote,
            group,
            dev,
            no_learning,
            src_ports,
            no_offloads,
            map,
        } => {
            let r = call(
                args,
                &Request::Create {
                    port: port.clone(),
                    spec: PortSpec::Vxlan {
                        vni: *vni,
                        local: local.clone(),
                        port: *udp_port,
                        remote: remote.clone(),
                        group: group.clone(),
                        dev: dev.clone(),
                        learning: !*no_learning,
                        src_ports: src_ports.clone(),
                        offloads: !*no_offloads,
                        map: map.clone(),
                    },
                },
            )?;
            if args.json {
                print_json(&r);
            } else if let Response::Done { message } = r {
                println!("{message}");
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
        Cmd::Reload => {
            let r = call(args, &Request::Reload)?;
            if args.json {
                print_json(&r);
            } else if let Response::Done { message } = r {
                println!("{message}");
            }
        }
        Cmd::Config {
            what: ConfigCmd::Check { file },
        } => {
            let f = valed::ConfigFile::load(file).map_err(|e| e.to_string())?;
            let mut s = valed::Settings::default();
            f.apply(&mut s)
                .and_then(|()| s.validate())
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let vlans = match f.vlans.len() {
                0 => String::new(),
                1 => ", 1 [[vlan]] switch".to_string(),
                n => format!(", {n} [[vlan]] switches"),
            };
            println!(
                "{}: ok ({} declared port{}{vlans})",
                file.display(),
                f.ports.len(),
                if f.ports.len() == 1 { "" } else { "s" },
            );
        }
        Cmd::Config {
            what: ConfigCmd::Dump,
        } => {
            let r = call(args, &Request::ConfigDump)?;
            if args.json {
                print_json(&r);
            } else if let Response::Done { message } = r {
                print!("{message}");
            }
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

/// `vale-ctl generate man DIR` / `generate completions SHELL DIR`: prints the paths.
fn generate(what: &Generate) -> Result<(), String> {
    let written = match what {
        Generate::Man { dir } => cli::write_man_pages(dir),
        Generate::Completions { shell, dir } => cli::write_completions(*shell, dir),
    }
    .map_err(|e| format!("generate: {e}"))?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let done = match cli::vale_ctl::parse() {
        Invocation::Ctl(args) => run(&args),
        Invocation::Generate(what) => generate(&what),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vale-ctl: {e}");
            ExitCode::from(1)
        }
    }
}
