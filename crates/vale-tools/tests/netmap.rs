//! Netmap programs in C, built against our headers and run under libvale_netmap.so
//! (LD_PRELOAD) against a real valed: the NIOCCTRL and legacy paths, per-descriptor
//! `netmap_if`, poll, errors, and traffic to and from our own Rust clients.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The preload library cargo built for these tests (a dev-dependency).
fn shim() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join("libvale_netmap.so"))
        .find(|p| p.exists())
        .expect("libvale_netmap.so next to the test binary (cargo builds it as a dev-dependency)")
}

fn netmap_crate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vale-netmap")
}

/// Compiles `tests/c/NAME.c` of vale-netmap once, with our headers only and warnings as
/// errors. None (with SKIP printed) where there is no C compiler.
fn program(name: &str) -> Option<PathBuf> {
    build(name, name, &["-pthread"])
}

/// Like [`program`], as `out`, with extra arguments for cc (after the source).
fn build(name: &str, out_name: &str, extra: &[&str]) -> Option<PathBuf> {
    static BUILT: OnceLock<std::sync::Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut b = built.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = b.iter().find(|(n, _)| n == out_name) {
        return Some(p.clone());
    }
    if !have("cc", "gcc", "the netmap programs in C") {
        return None;
    }
    let src = netmap_crate().join(format!("tests/c/{name}.c"));
    let dir = std::env::temp_dir().join(format!("vale-nm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(out_name);
    let o = Command::new("cc")
        .args(["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(netmap_crate().join("include"))
        .arg(&src)
        .args(extra)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cc {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    b.push((out_name.to_string(), out.clone()));
    Some(out)
}

/// A command for a C program under the shim, talking to `d`.
fn under_shim(d: &Daemon, prog: &Path) -> Command {
    let mut c = d.cmd(prog.to_str().unwrap());
    c.env("LD_PRELOAD", shim());
    c
}

fn run_ok(d: &Daemon, prog: &Path, args: &[&str]) -> String {
    let o = under_shim(d, prog).args(args).output().unwrap();
    let out = stdout_of(&o);
    assert!(
        o.status.success(),
        "{} {args:?} failed ({:?}):\n{out}\n{}\nvaled: {}",
        prog.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    out
}

/// Reads the child's stdout up to a line starting with `prefix`; returns the lines read.
fn read_until(r: &mut impl BufRead, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            panic!("no `{prefix}` line; got {lines:?}");
        }
        let done = l.starts_with(prefix);
        lines.push(l.trim_end().to_string());
        if done {
            return lines;
        }
    }
}

fn spawn(d: &Daemon, prog: &Path, args: &[&str]) -> Child {
    under_shim(d, prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sequence numbers of frames from nmtest/nmlegacy (bytes 14..18, native order).
fn seqs(frames: &[Vec<u8>]) -> Vec<u32> {
    frames
        .iter()
        .map(|f| u32::from_ne_bytes(f[14..18].try_into().unwrap()))
        .collect()
}

#[test]
fn every_error_path_answers_with_netmaps_errno() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-errors", &[]);
    let out = run_ok(&d, &nmtest, &["errors", "vale0:e"]);
    assert!(!out.contains("FAIL"), "{out}");
    // Every check in the program's source ran and said ok.
    let src = std::fs::read_to_string(netmap_crate().join("tests/c/nmtest.c")).unwrap();
    let body = &src
        [src.find("static int cmd_errors").unwrap()..src.find("static int bound_only").unwrap()];
    let checks = body.matches("check(").count();
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        checks,
        "{out}"
    );
    assert!(out.contains("failures 0"), "{out}");
}

#[test]
fn the_fds_the_library_hides_never_take_a_programs_low_numbers() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    // `prog 2>&-`: were a hidden memfd to land on fd 2, every write to stderr would go
    // over the netmap_if in shared memory.
    let d = Daemon::start("nm-lowfds", &[]);
    passes_and_sends_ten(&d, &nmtest, "lowfds", "vale0:low");
}

/// nmtest `args` ran every check and each passed; its output.
fn passes(d: &Daemon, nmtest: &Path, args: &[&str]) -> String {
    let out = run_ok(d, nmtest, args);
    assert!(!out.contains("FAIL") && out.contains("failures 0"), "{out}");
    out
}

/// nmtest `mode` on `port` passed, and `vale0:peer` (opened before) got the ten frames
/// (sequence 0 to 9) it sends at the end.
fn passes_and_sends_ten(d: &Daemon, nmtest: &Path, mode: &str, port: &str) {
    let peer = d.open("vale0:peer");
    let out = passes(d, nmtest, &[mode, port]);
    assert_eq!(
        seqs(&drain(&peer, 2.0)),
        (0..10).collect::<Vec<u32>>(),
        "{out}"
    );
}

#[test]
fn closefrom_and_close_range_spare_the_librarys_descriptors_and_mmap_takes_windows() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    // closefrom(3) before an exec, or close_range over a server's connections, closes
    // the numbers it covers: the netmap ones among them are forgotten (their numbers
    // are ordinary again), and the descriptors the library hides (>= 512) for the
    // ports that stay open are spared.
    let d = Daemon::start("nm-closefrom", &["--max-name-len", "31"]);
    passes_and_sends_ten(&d, &nmtest, "fds", "vale0:cf");
}

#[test]
fn a_child_forked_while_a_thread_holds_the_table_closes_its_descriptor() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-forks", &[]);
    passes(&d, &nmtest, &["forks", "vale0:fk"]);
}

#[test]
fn threads_sharing_a_descriptor_poll_and_ask_without_crossing_answers() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    // pkt-gen's threads: one sleeps in poll while another asks valed something on the
    // same descriptor. The answer is no hang-up, and no answer goes to the wrong asker.
    let d = Daemon::start("nm-threads", &[]);
    passes(&d, &nmtest, &["threads", "vale0:t"]);
}

#[test]
fn a_poll_learns_that_valed_went_away() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let mut d = Daemon::start("nm-hangup", &[]);
    let mut c = spawn(&d, &nmtest, &["hangup", "vale0:h"]);
    let mut out = BufReader::new(c.stdout.take().unwrap());
    read_until(&mut out, "ready");
    std::thread::sleep(Duration::from_millis(200)); // asleep in poll by now
    d.child.kill().unwrap();
    let lines = read_until(&mut out, "poll ");
    assert!(c.wait().unwrap().success(), "{lines:?}");
    let l = lines.last().unwrap();
    assert!(l.starts_with("poll 1 revents ERR HUP after"), "{lines:?}");
    let ms: f64 = l.split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!(ms < 5000.0, "woken by the hang-up, not the timeout: {l}");
}

#[test]
fn without_valed_the_device_is_missing_as_without_the_module() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let o = Command::new(&nmtest)
        .args(["tx", "vale0:a", "1", "ioctl"])
        .env("LD_PRELOAD", shim())
        .env("VALE_SOCKET", "/nonexistent/valed.sock")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No such file or directory"), "{err}");
    let said: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("vale-netmap:"))
        .collect();
    assert_eq!(said.len(), 1, "one line says to start valed: {err}");
    assert!(said[0].contains("valed"), "{err}");
}

#[test]
fn each_descriptor_sees_only_the_rings_it_bound() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-rings", &[]);
    let peer = d.open("vale1:peer");
    let mut c = spawn(&d, &nmtest, &["rings", "vale1:r"]);
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let lines = read_until(&mut out, "failures ");
    assert_eq!(lines.last().unwrap(), "failures 0", "{lines:#?}");
    // Both rings' frames crossed the switch.
    let got = drain(&peer, 2.0);
    let mut s = seqs(&got);
    s.sort();
    assert_eq!(
        s,
        vec![1000, 1001],
        "one frame from ring 0, one from ring 1"
    );
    // valed sees the C program's port, with the geometry it asked for.
    let v = d.ctl_json(&["list"]);
    let port = v["switches"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["ports"].as_array().unwrap().iter())
        .find(|p| p["name"] == "vale1:r")
        .cloned()
        .unwrap_or_else(|| panic!("vale1:r not listed: {v}"));
    assert_eq!(port["geometry"]["tx_rings"], 2, "{port}");
    assert_eq!(port["geometry"]["rx_rings"], 2, "{port}");
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success());
    assert!(
        wait_for(5.0, || !d.ports().contains(&"vale1:r".to_string())),
        "the port goes when the program's descriptors close"
    );
}

#[test]
fn what_a_program_syncs_right_before_it_exits_is_delivered() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-exit", &[]);
    let rx = d.open("vale2:rx");
    // 1000 frames, one NIOCTXSYNC, _exit without close: all of them arrive.
    let out = run_ok(&d, &nmtest, &["tx", "vale2:tx", "1000", "exit"]);
    assert!(out.contains("sent 1000"), "{out}");
    let got = drain(&rx, 3.0);
    assert_eq!(seqs(&got), (0..1000).collect::<Vec<u32>>());
}

#[test]
fn c_programs_and_rust_programs_exchange_frames_both_ways() {
    let (Some(nmtest), Some(legacy)) = (program("nmtest"), program("nmlegacy")) else {
        return;
    };
    let d = Daemon::start("nm-cross", &[]);
    // NIOCCTRL sender, synced by ioctl, to our pkt-gen -f rx.
    let rx = d
        .cmd(PKT_GEN)
        .args([
            "-i",
            "vale3:rust",
            "-f",
            "rx",
            "-n",
            "900",
            "--duration",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(10.0, || d.ports().contains(&"vale3:rust".into())));
    run_ok(&d, &nmtest, &["tx", "vale3:c", "900", "ioctl"]);
    let o = rx.wait_with_output().unwrap();
    assert!(
        stdout_of(&o).contains("Received 900 packets"),
        "{}",
        stdout_of(&o)
    );

    // Our pkt-gen -f tx to the C receiver (NIOCCTRL, poll), and to the legacy one.
    for (prog, args) in [
        (&nmtest, vec!["rx", "vale4:c", "800", "3000"]),
        (&legacy, vec!["rx", "vale4:c", "800", "3000"]),
    ] {
        let mut c = spawn(&d, prog, &args);
        let mut out = BufReader::new(c.stdout.take().unwrap());
        read_until(&mut out, if prog == &nmtest { "ready" } else { "opened" });
        let tx = d
            .cmd(PKT_GEN)
            .args(["-i", "vale4:rust", "-f", "tx", "-n", "800"])
            .output()
            .unwrap();
        assert!(tx.status.success());
        let lines = read_until(&mut out, "received ");
        assert!(c.wait().unwrap().success(), "{lines:?}");
        assert!(
            lines.last().unwrap().starts_with("received 800 bad_seq 0"),
            "{lines:?}"
        );
    }

    // Legacy C sender (nm_inject) to a Rust port: every frame, in order, 60 bytes.
    let port = d.open("vale5:rust");
    run_ok(&d, &legacy, &["tx", "vale5:c", "700"]);
    let got = drain(&port, 3.0);
    assert!(got.iter().all(|f| f.len() == 60));
    assert_eq!(seqs(&got), (0..700).collect::<Vec<u32>>());
}

#[test]
fn legacy_receiver_gets_timestamps_and_every_frame_from_a_legacy_sender() {
    let Some(legacy) = program("nmlegacy") else {
        return;
    };
    let d = Daemon::start("nm-legacy", &[]);
    let mut c = spawn(&d, &legacy, &["rx", "vale0:b", "1000", "3000"]);
    let mut out = BufReader::new(c.stdout.take().unwrap());
    read_until(&mut out, "opened vale0:b");
    run_ok(&d, &legacy, &["tx", "vale0:a", "1000"]);
    let lines = read_until(&mut out, "received ");
    assert!(c.wait().unwrap().success(), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "received 1000 bad_seq 0 ts 1000");
}

#[test]
fn two_descriptors_of_one_port_and_a_pipe_in_one_poll() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-poll2", &[]);
    let tx = d.open("vale6:tx");
    let mut c = spawn(&d, &nmtest, &["poll2", "vale6:p"]);
    let mut out = BufReader::new(c.stdout.take().unwrap());
    let before = read_until(&mut out, "waiting");
    assert!(!before.iter().any(|l| l.starts_with("FAIL")), "{before:#?}");
    std::thread::sleep(Duration::from_millis(100));
    send(&tx, &[frame([0xff; 6], [2, 0, 0, 0, 0, 9], 1)]);
    let after = read_until(&mut out, "failures ");
    assert!(c.wait().unwrap().success(), "{before:#?} {after:#?}");
    assert_eq!(after.last().unwrap(), "failures 0", "{after:#?}");
}

#[test]
fn poll_txsyncs_implicitly_unless_no_tx_poll() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-txpoll", &[]);
    let rx = d.open("vale7:rx");
    // Implicit txsync: poll(events = 0) after filling the ring sends.
    run_ok(&d, &nmtest, &["tx", "vale7:a", "500", "pollsync"]);
    assert_eq!(seqs(&drain(&rx, 3.0)), (0..500).collect::<Vec<u32>>());
    // NO_TX_POLL: a poll for input leaves the TX ring alone; one for output sends.
    let mut c = spawn(&d, &nmtest, &["notxpoll", "vale7:b", "300"]);
    let mut out = BufReader::new(c.stdout.take().unwrap());
    read_until(&mut out, "polled without txsync");
    assert!(
        drain(&rx, 0.5).is_empty(),
        "NO_TX_POLL: poll(POLLIN) sent nothing"
    );
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(b"g").unwrap();
    read_until(&mut out, "polled for output");
    assert_eq!(seqs(&drain(&rx, 3.0)), (0..300).collect::<Vec<u32>>());
    drop(stdin);
    assert!(c.wait().unwrap().success());
}

#[test]
fn a_program_linked_with_the_library_needs_no_preload() {
    let lib = shim();
    let dir = lib.parent().unwrap().to_str().unwrap().to_string();
    // What `pkg-config --libs vale-netmap` says, with the build directory as libdir.
    let flags = [
        format!("-L{dir}"),
        "-Wl,--push-state,--no-as-needed".into(),
        "-lvale_netmap".into(),
        "-Wl,--pop-state".into(),
        format!("-Wl,-rpath,{dir}"),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let Some(linked) = build("nmlegacy", "nmlegacy-linked", &flags) else {
        return;
    };
    let d = Daemon::start("nm-linked", &[]);
    let port = d.open("vale0:rust");
    let o = d
        .cmd(linked.to_str().unwrap())
        .args(["tx", "vale0:c", "600"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        stdout_of(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(seqs(&drain(&port, 3.0)), (0..600).collect::<Vec<u32>>());
}

#[test]
fn a_program_writing_over_sem_loses_nothing() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    // netmap leaves `ring->sem[]` to the application (lb keeps state there); this
    // receiver overwrites it on every ring before each poll while frames flow.
    let d = Daemon::start("nm-sem", &[]);
    let tx = d.open("vale0:tx");
    let mut c = spawn(&d, &nmtest, &["scribble", "vale0:c", "3000", "3000"]);
    let mut out = BufReader::new(c.stdout.take().unwrap());
    read_until(&mut out, "ready");
    for burst in 0..6u32 {
        let frames: Vec<Vec<u8>> = (0..500u32)
            .map(|i| {
                let mut f = frame([0xff; 6], [2, 0, 0, 0, 0, 7], 0);
                f[12..14].copy_from_slice(&[0x88, 0xb5]);
                f[14..18].copy_from_slice(&(burst * 500 + i).to_ne_bytes());
                f
            })
            .collect();
        send(&tx, &frames);
        std::thread::sleep(Duration::from_millis(150));
    }
    let lines = read_until(&mut out, "received ");
    assert!(c.wait().unwrap().success(), "{lines:?}\n{}", d.log());
    assert_eq!(lines.last().unwrap(), "received 3000 bad_seq 0");
}

#[test]
fn extra_buffers_are_reserved_listed_used_and_given_back() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-extra", &[]);
    let peer = d.open("vale0:peer");
    let out = run_ok(&d, &nmtest, &["extra", "vale0:x"]);
    assert!(!out.contains("FAIL") && out.contains("failures 0"), "{out}");
    // The frame sent from an extra buffer crossed the switch.
    assert_eq!(seqs(&drain(&peer, 2.0)), vec![4242], "{out}");
}

#[test]
fn an_exclusive_register_keeps_other_descriptors_out() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-excl", &[]);
    let out = run_ok(&d, &nmtest, &["exclusive", "vale0:x"]);
    assert!(!out.contains("FAIL") && out.contains("failures 0"), "{out}");
}

#[test]
fn a_pipe_carries_frames_between_its_ends_by_buffer_swap() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-pipe", &[]);
    let out = run_ok(&d, &nmtest, &["pipe", "vale0:p"]);
    assert!(!out.contains("FAIL") && out.contains("failures 0"), "{out}");
    // The pipe lives in its port's memory: the port exists while the pipe does.
    assert!(wait_for(5.0, || !d
        .ports()
        .contains(&"vale0:p".to_string())));
}

#[test]
fn two_processes_on_a_pipe_wake_each_other() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-pipe2", &[]);
    // 200000 frames through a 1024-slot pipe: the sender waits in poll for the
    // receiver to free slots and the receiver for frames, many times over; pipes hold
    // the sender back instead of dropping, so every frame arrives.
    let mut rx = spawn(&d, &nmtest, &["rx", "vale0:q}0", "200000", "5000"]);
    let mut out = BufReader::new(rx.stdout.take().unwrap());
    read_until(&mut out, "ready");
    let sent = run_ok(&d, &nmtest, &["tx", "vale0:q{0", "200000"]);
    assert!(sent.contains("sent 200000"), "{sent}");
    let lines = read_until(&mut out, "received ");
    assert!(rx.wait().unwrap().success(), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "received 200000 bad_seq 0");
}

#[test]
fn descriptors_asking_for_a_mapping_share_it_pipes_included() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-share", &[]);
    let out = run_ok(&d, &nmtest, &["share", "vale0:s"]);
    assert!(!out.contains("FAIL") && out.contains("failures 0"), "{out}");
}

#[test]
fn monitor_flags_watch_what_a_port_sends_and_receives() {
    let Some(nmtest) = program("nmtest") else {
        return;
    };
    let d = Daemon::start("nm-mon", &[]);
    let m = d.open("vale0:m");
    let other = d.open("vale0:o");
    let ours = |base: u32, n: u32| -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut f = frame([0xff; 6], [2, 0, 0, 0, 0, 5], 0);
                f[14..18].copy_from_slice(&(base + i).to_ne_bytes());
                f
            })
            .collect()
    };
    // NR_MONITOR_TX on vale0:m (valed's vale0:m/t) sees what m sends, NR_MONITOR_RX
    // (vale0:m/r) what m receives.
    for (flag, from) in [("montx", &m), ("monrx", &other)] {
        let mut c = spawn(&d, &nmtest, &["rx", "vale0:m", "200", "3000", flag]);
        let mut out = BufReader::new(c.stdout.take().unwrap());
        read_until(&mut out, "ready");
        send(from, &ours(0, 200));
        let lines = read_until(&mut out, "received ");
        assert!(c.wait().unwrap().success(), "{flag}: {lines:?}");
        assert_eq!(lines.last().unwrap(), "received 200 bad_seq 0", "{flag}");
        // A monitor gets copies: m itself still receives every frame sent to it (a plain
        // second client of m would have taken them from m's ring instead).
        let at_m = drain(&m, 1.0);
        if flag == "monrx" {
            assert_eq!(at_m.len(), 200, "m kept its frames");
        }
        drain(&other, 0.2);
    }
}
