//! A connection flood: uid 65534 and root open connections until valed refuses them.
//! valed keeps answering root, does not spin, keeps forwarding, and its descriptors
//! return to their baseline when the flood closes.

use super::*;
use rustix::fd::OwnedFd;
use vale::proto::{ErrorKind, Request, Response};

const A: [u8; 6] = [2, 0, 0, 0, 0xf1, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0xf1, 0xb];
const MAX_CLIENTS: usize = 160;
const PER_UID: usize = 40;

/// Opens served connections (each asks for the settings, so it counts as a client and
/// is not closed as silent) until one is refused; returns them and the refusal.
fn open_until_refused(socket: &std::path::Path, at_most: usize) -> (Vec<OwnedFd>, String) {
    let mut held = Vec::new();
    for _ in 0..at_most {
        let Ok(c) = vale::sock::connect(socket) else {
            return (held, "connect failed".into());
        };
        match vale::sock::call(&c, &Request::Settings) {
            Ok((Response::Settings { .. }, _)) => held.push(c),
            Ok((
                Response::Error {
                    kind: ErrorKind::Limit,
                    message,
                },
                _,
            )) => return (held, message),
            other => return (held, format!("unexpected answer: {other:?}")),
        }
    }
    (held, "never refused".into())
}

/// The flood as another uid: reports how many connections it holds and why the next
/// was refused, holds them until released.
#[test]
#[ignore = "a helper process of the connection-flood scenario"]
fn child_flooder() {
    if !is_child("flood::child_flooder") {
        return;
    }
    let (held, why) = open_until_refused(&vale::sock::default_socket_path(), 10_000);
    println!("HOSTILE {} {why}", held.len());
    wait_for_release();
}

/// valed's CPU share over the next second.
fn cpu_share(d: &Daemon) -> f64 {
    d.idle_cpu(1.0)
}

fn forwards(a: &vale::Port, b: &vale::Port) -> bool {
    send(a, &[frame(B, A, 3)]);
    drain(b, 2.0).len() == 1
}

#[test]
fn a_connection_flood_is_refused_without_spinning_and_leaves_nothing_behind() {
    let _one = serialise();
    if !can_be_nobody("the connection flood") {
        return;
    }
    let mut d = Daemon::start(
        "hostile-flood",
        &[
            "--max-clients",
            &MAX_CLIENTS.to_string(),
            "--max-clients-per-uid",
            &PER_UID.to_string(),
            "--socket-mode",
            "0666",
        ],
    );
    let _ = std::fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let (a, b) = (d.open("vale0:a"), d.open("vale0:b"));
    send(&b, &[frame([0xff; 6], B, 0)]);
    drain(&a, 0.5);
    let before = settled(&d);

    // uid 65534 floods: held to its own limit, root still served.
    let mut nobody = Helper::start(&d, "flood::child_flooder", &as_nobody(), &[]);
    let report = nobody.report();
    let (n, why) = report.split_once(' ').unwrap();
    let nobody_held: usize = n.parse().unwrap();
    assert_eq!(nobody_held, PER_UID, "uid 65534 gets its limit: {report}");
    assert!(
        why.contains("--max-clients-per-uid"),
        "refused saying why: {why}"
    );
    assert!(ctl_ok(&d), "root is served while uid 65534 floods");
    assert!(forwards(&a, &b), "forwarding goes on during the flood");

    // Root floods too, up to the total limit.
    let (mut root_held, root_why) = open_until_refused(&d.socket, 10_000);
    assert!(
        root_why.contains(&format!("--max-clients {MAX_CLIENTS}")),
        "the total limit refuses, saying why: {root_why}"
    );
    let flooded = settled(&d);
    let cpu = cpu_share(&d);
    assert!(
        cpu < 0.3,
        "valed used {cpu:.2} CPU-seconds in one second of a full flood"
    );
    let full = d.ctl(&["list"]);
    let refusal = String::from_utf8_lossy(&full.stderr).into_owned();
    assert!(
        !full.status.success() && refusal.contains("--max-clients"),
        "at the limit, root's vale-ctl is answered with the reason: {refusal}"
    );
    assert!(forwards(&a, &b), "forwarding goes on at the limit");
    root_held.truncate(root_held.len().saturating_sub(4));
    assert!(
        wait_for(3.0, || ctl_ok(&d)),
        "with a few connections closed, root is served again"
    );
    let total = nobody_held + root_held.len() + 4;
    drop(root_held);
    nobody.finish();
    assert!(
        wait_for(5.0, || d.fd_count() <= before.fds),
        "descriptors back to the baseline"
    );
    let after = settled(&d);
    figure(
        "connection flood",
        &format!(
            "{total} connections held ({nobody_held} as uid 65534, refused at its limit), \
             refused at --max-clients {MAX_CLIENTS}; valed {cpu:.2} CPU-s per s flooded, \
             {} fds flooded",
            flooded.fds
        ),
        "bystander frames 3 sent, 3 received",
        before,
        after,
    );
    assert_eq!(after.fds, before.fds);
    assert!(d.alive());
}
