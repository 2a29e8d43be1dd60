//! Hostile clients against a real valed (issue 14, item 7): a client that scribbles over
//! its own region, garbage on the control socket, a connection flood, a MAC flood and
//! SIGKILLed clients. Each scenario asserts that the daemon survives, that bystanders
//! lose nothing, and that what the attacker did is counted, and prints one `hostile:`
//! figure line (inputs tried, loss, valed's descriptors and RSS before and after).
//!
//! The child processes some scenarios need (the scribbler, a flood as another uid) are
//! this binary again, running one of the `child_*` tests, which are ignored unless a
//! scenario starts them with the `HOSTILE_CHILD` variable set.

#[path = "../common/mod.rs"]
mod common;

mod control;
mod flood;
mod kills;
mod macflood;
mod scribble;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

/// The scenarios measure CPU, descriptors and loss: one at a time on a 2-core machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serialise() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// valed's open descriptors and resident memory at one moment.
#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    rss_kib: u64,
}

/// valed's usage once the short-lived connections of the checks (vale-ctl's) are gone:
/// the smallest descriptor count of a few samples.
fn settled(d: &Daemon) -> Usage {
    std::thread::sleep(Duration::from_millis(200));
    let fds = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            d.fd_count()
        })
        .min()
        .unwrap_or(0);
    Usage {
        fds,
        rss_kib: d.rss_kib(),
    }
}

/// Prints a scenario's figure line (cargo shows it with `--nocapture`).
fn figure(name: &str, inputs: &str, loss: &str, before: Usage, after: Usage) {
    println!(
        "hostile: {name}: {inputs}; loss: {loss}; valed fds {} -> {}, RSS {} -> {} KiB",
        before.fds, after.fds, before.rss_kib, after.rss_kib
    );
}

/// A small, fast, seeded generator (xorshift64*): the scenarios need volume, not
/// quality, and a failing run prints its seed.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng::new(t ^ (std::process::id() as u64) << 32)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn seed(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_ne_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// A child that is this test binary running test `name` (an ignored `child_*` one),
/// with its stdout piped for its `HOSTILE` lines and its stdin held: it exits when the
/// scenario closes it. `wrap` runs it through another program (setpriv) when not empty.
struct Helper {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Helper {
    fn start(d: &Daemon, name: &str, wrap: &[&str], env: &[(&str, String)]) -> Helper {
        let me = std::env::current_exe().expect("the test binary's path");
        let mut c = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = d.cmd(first);
                c.args(rest).arg(&me);
                c
            }
            None => d.cmd(me.to_str().unwrap()),
        };
        c.args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HOSTILE_CHILD", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start a helper process");
        let lines = BufReader::new(child.stdout.take().unwrap());
        Helper { child, lines }
    }

    /// What follows `HOSTILE ` in the next line the child prints with it (libtest may
    /// have begun the line with `test NAME ... `).
    fn report(&mut self) -> String {
        let mut l = String::new();
        loop {
            l.clear();
            match self.lines.read_line(&mut l) {
                Ok(0) | Err(_) => panic!("the helper process ended without reporting"),
                Ok(_) => {
                    if let Some((_, r)) = l.trim_end().split_once("HOSTILE ") {
                        return r.to_string();
                    }
                }
            }
        }
    }

    /// Closes its stdin (it lets go of what it holds and exits) and waits for it.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a helper: whether this process was started as helper `name` (else the ignored
/// test does nothing).
fn is_child(name: &str) -> bool {
    std::env::var("HOSTILE_CHILD").is_ok_and(|v| v == name)
}

/// In a helper: waits until the scenario closes our stdin.
fn wait_for_release() {
    let mut s = String::new();
    while std::io::stdin().read_line(&mut s).is_ok_and(|n| n > 0) {}
}

/// Runs `bin args` as uid/gid 65534 through setpriv.
fn as_nobody() -> [&'static str; 4] {
    [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
}

/// Whether the checks that act as another uid can run here (root and setpriv).
fn can_be_nobody(what: &str) -> bool {
    if !rustix::process::geteuid().is_root() {
        if std::env::var("VALE_TEST_STRICT").is_ok_and(|v| v == "1") {
            panic!("{what} needs root (to act as uid 65534)");
        }
        skip(&format!("{what} needs root (to act as uid 65534)"));
        return false;
    }
    have("setpriv", "util-linux", what)
}

fn ctl_ok(d: &Daemon) -> bool {
    d.ctl(&["list"]).status.success()
}
