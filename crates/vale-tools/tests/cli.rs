//! Help that helps: every command's `--help`, the man pages and shell completions made
//! from the same clap definitions (checked with real `man`, `bash`, `zsh`, `fish`), and
//! `vale-ctl stats --watch` against a running valed with pkt-gen traffic.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// What a person types to use `a`: `--long`, else `-s`, else the positional's name.
fn spelling(a: &clap::Arg) -> String {
    if let Some(l) = a.get_long() {
        format!("--{l}")
    } else if let Some(s) = a.get_short() {
        format!("-{s}")
    } else {
        a.get_value_names()
            .and_then(|v| v.first().map(|n| n.to_string()))
            .unwrap_or_else(|| a.get_id().as_str().to_uppercase())
    }
}

/// The arguments of `cmd` a user sees (clap's own `--help`/`--version` included once
/// they are built; `help` added by `vale_ctl::command` too).
fn visible_args(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set())
        .map(spelling)
        .collect()
}

fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env("VALE_SOCKET", "/nonexistent/vc-help.sock")
        .output()
        .unwrap_or_else(|e| panic!("run {bin} {args:?}: {e}"))
}

fn ok_stdout(bin: &str, args: &[&str]) -> String {
    let o = run(bin, args);
    assert!(
        o.status.success(),
        "{bin} {args:?} exited {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    stdout_of(&o)
}

#[test]
fn every_vale_ctl_subcommand_has_help_with_its_options_and_examples() {
    let cmd = vale_tools::cli::vale_ctl::command();
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    assert!(subs.len() >= 10, "{} subcommands", subs.len());
    let top = ok_stdout(VALE_CTL, &["--help"]);
    for sc in &subs {
        let name = sc.get_name();
        let about = sc.get_about().expect("a one-line summary").to_string();
        assert!(
            !about.contains('\n'),
            "{name}: summary of one line: {about:?}"
        );
        assert!(
            top.contains(name) && top.contains(&about),
            "vale-ctl --help lists {name} with its summary:\n{top}"
        );
        for how in [vec![name, "--help"], vec![name, "-h"], vec!["help", name]] {
            let out = ok_stdout(VALE_CTL, &how);
            assert!(
                out.starts_with(&about),
                "{how:?} starts with the summary:\n{out}"
            );
            assert!(
                out.contains(&format!("Usage: vale-ctl {name}")),
                "{how:?}:\n{out}"
            );
            assert!(
                out.contains(&format!("Examples:\n  vale-ctl {name}")),
                "{how:?} shows an example of {name}:\n{out}"
            );
            for a in visible_args(sc) {
                assert!(out.contains(&a), "{how:?} mentions {a}:\n{out}");
            }
        }
    }
    // The top level: netmap's flags, and -h is still netmap's (a value, its message).
    for a in visible_args(&cmd) {
        assert!(top.contains(&a), "vale-ctl --help mentions {a}:\n{top}");
    }
    let o = run(VALE_CTL, &["-h", "vale0:eth0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("host-stack port (IF^)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(run(VALE_CTL, &["-h"]).status.code(), Some(2));
    // A usage error inside a subcommand points at its help.
    let o = run(VALE_CTL, &["vhost-user", "vale1:vm1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--path <PATH>"));
}

#[test]
fn valed_and_pkt_gen_help_lists_every_flag() {
    for (bin, cmd) in [
        (VALED, vale_tools::cli::valed_command()),
        (PKT_GEN, vale_tools::cli::pkt_gen_command()),
    ] {
        for how in ["--help", "-h"] {
            let out = ok_stdout(bin, &[how]);
            assert!(out.contains("Examples:"), "{bin} {how}:\n{out}");
            for a in visible_args(&cmd) {
                assert!(out.contains(&a), "{bin} {how} mentions {a}:\n{out}");
            }
        }
    }
    // pkt-gen keeps netmap's single-letter flags.
    let out = ok_stdout(PKT_GEN, &["--help"]);
    for f in [
        "-i", "-f", "-l", "-n", "-b", "-R", "-D", "-S", "-s", "-d", "-w", "-W", "-T", "-F", "-a",
    ] {
        assert!(out.contains(&format!("  {f} ")), "pkt-gen {f}:\n{out}");
    }
}

fn temp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("vc-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The pages `generate man` should write: each program, and each vale-ctl subcommand
/// (and theirs: `vale-ctl-config-check`).
fn expected_pages() -> Vec<(String, clap::Command)> {
    fn add(prefix: &str, cmd: &clap::Command, section: &str, v: &mut Vec<(String, clap::Command)>) {
        for sc in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = format!("{prefix}-{}", sc.get_name());
            add(&name, sc, section, v);
            v.push((format!("{name}.{section}"), sc.clone()));
        }
    }
    let mut v = Vec::new();
    for (cmd, section) in vale_tools::cli::programs() {
        let name = cmd.get_name().to_string();
        add(&name, &cmd, section, &mut v);
        v.push((format!("{name}.{section}"), cmd));
    }
    v
}

#[test]
fn man_pages_render_with_every_flag() {
    let dir = temp("man");
    let out = ok_stdout(VALE_CTL, &["generate", "man", path_str(&dir)]);
    let pages = expected_pages();
    assert_eq!(out.lines().count(), pages.len(), "{out}");
    let have_man = have("man", "man-db", "rendering the man pages");
    for (file, cmd) in &pages {
        let path = dir.join(file);
        let roff = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(roff.starts_with(".ie") || roff.starts_with(".TH"), "{file}");
        for section in [
            ".TH ",
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH EXAMPLES",
        ] {
            assert!(roff.contains(section), "{file} has {section}:\n{roff}");
        }
        if !have_man {
            continue;
        }
        let o = Command::new("man")
            .args(["--warnings", "-l", "-P", "cat"])
            .arg(&path)
            .env("MANWIDTH", "250")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let text = stdout_of(&o);
        let warnings = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && warnings.is_empty(),
            "man -l {file}: {warnings}"
        );
        for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXAMPLES"] {
            assert!(
                text.contains(&format!("\n{heading}\n")),
                "{file} renders {heading}:\n{text}"
            );
        }
        for a in visible_args(cmd) {
            assert!(text.contains(&a), "{file} lists {a}:\n{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asks bash's completion function of `script` what it offers after `words` (the last
/// one being completed), as bash does on TAB.
fn bash_complete(script: &Path, words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let prog = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; _vale__ctl vale-ctl '{}' '{prev}'; \
         echo \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[cword]
    );
    let o = Command::new("bash").args(["-c", &prog]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stdout_of(&o).trim().to_string()
}

#[test]
fn completions_generate_for_each_shell_and_complete_subcommands_and_their_flags() {
    let dir = temp("comp");
    let subs: Vec<String> = vale_tools::cli::vale_ctl::command()
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for (shell, file, check) in [
        ("bash", "vale-ctl.bash", "bash"),
        ("zsh", "_vale-ctl", "zsh"),
        ("fish", "vale-ctl.fish", "fish"),
    ] {
        let out = ok_stdout(
            VALE_CTL,
            &["generate", "completions", shell, path_str(&dir)],
        );
        assert_eq!(out.lines().count(), 3, "valed, vale-ctl, pkt-gen: {out}");
        let path = dir.join(file);
        let script = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        for s in &subs {
            assert!(script.contains(s.as_str()), "{file} completes {s}");
        }
        if check != "bash" && !have(check, check, &format!("checking the {shell} completions")) {
            continue;
        }
        for p in out.lines() {
            let o = Command::new(check).arg("-n").arg(p).output().unwrap();
            assert!(
                o.status.success(),
                "{check} -n {p}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    // bash and fish really complete: a subcommand, and a subcommand's own flag (which
    // clap_complete's bash script alone gets wrong for a hyphenated binary name).
    let bash = dir.join("vale-ctl.bash");
    assert_eq!(bash_complete(&bash, &["vale-ctl", "vh"]), "vhost-user");
    assert_eq!(
        bash_complete(&bash, &["vale-ctl", "stats", "--w"]),
        "--watch"
    );
    assert_eq!(
        bash_complete(&bash, &["vale-ctl", "capture", "vale0:a", "--d"]),
        "--dir --duration"
    );
    if have("fish", "fish", "running the fish completions") {
        let prog = format!(
            "source '{}'; complete -C 'vale-ctl stats --w'; complete -C 'vale-ctl qemu-s'",
            dir.join("vale-ctl.fish").display()
        );
        let o = Command::new("fish").args(["-c", &prog]).output().unwrap();
        let out = stdout_of(&o);
        assert!(
            out.contains("--watch\t") && out.contains("qemu-stream\t"),
            "{out}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The value of column `col` in each row of the last table in `out`, by port name.
fn last_table(out: &str) -> Vec<(String, Vec<String>)> {
    let block = out.rsplit("\nPORT ").next().unwrap_or("");
    let mut lines = block.lines();
    let header = format!("PORT {}", lines.next().unwrap_or(""));
    let ends: Vec<usize> = vale_tools::watch::COLUMNS
        .iter()
        .map(|c| {
            header
                .find(c)
                .unwrap_or_else(|| panic!("{c} in {header:?}"))
                + c.len()
        })
        .collect();
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let name = l.split_whitespace().next().unwrap_or("").to_string();
            let cols = ends
                .iter()
                .map(|e| l.get(e - 10..*e).unwrap_or("").trim().to_string())
                .collect();
            (name, cols)
        })
        .collect()
}

#[test]
fn stats_watch_shows_the_rates_of_busy_ports_and_zero_for_an_idle_one() {
    let d = Daemon::start("vcwatch", &[]);
    let _idle = d.open("vale0:idle");
    let pong = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:pong", "-f", "pong", "--duration", "60"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _pong = Guard(pong);
    assert!(wait_for(5.0, || d
        .ports()
        .contains(&"vale0:pong".to_string())));
    // Unicast to a MAC pong answers from: once learned, idle sees nothing more.
    let ping = d
        .cmd(PKT_GEN)
        .args(["-i", "vale0:ping", "-f", "ping", "-D", "02:00:00:00:00:bb"])
        .args(["--duration", "60", "-l", "100"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _ping = Guard(ping);
    // (`counter` insists the port exists: wait for pkt-gen to open it first.)
    assert!(wait_for(5.0, || d
        .ports()
        .contains(&"vale0:ping".to_string())));
    assert!(wait_for(10.0, || d.counter("vale0:ping", "rx_packets") > 10));
    let idle_before = d.counter("vale0:idle", "rx_packets");

    let o = d.ctl(&["stats", "--watch", "1", "--count", "2"]);
    let out = stdout_of(&o);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        out.matches("\nPORT ").count() + out.starts_with("PORT ") as usize,
        2,
        "{out}"
    );
    assert!(out.contains("refresh 2 of 2"), "{out}");
    assert!(
        !out.contains('\x1b'),
        "no screen control into a pipe:\n{out}"
    );
    let rows = last_table(&out);
    let row = |p: &str| {
        rows.iter()
            .find(|r| r.0 == p)
            .map(|r| r.1.clone())
            .unwrap_or_else(|| panic!("no row {p}:\n{out}"))
    };
    for busy in ["vale0:ping", "vale0:pong"] {
        let r = row(busy);
        // tx and rx packets and bytes move; nothing is dropped.
        for (i, v) in r.iter().enumerate() {
            let want_zero = i == 2 || i == 5;
            assert_eq!(v == "0", want_zero, "{busy} column {i} is {v:?}:\n{out}");
        }
    }
    assert_eq!(row("vale0:idle"), vec!["0"; 6], "{out}");
    assert_eq!(d.counter("vale0:idle", "rx_packets"), idle_before);

    // One port, as JSON lines.
    let o = d.ctl(&[
        "--json",
        "stats",
        "vale0:ping",
        "--watch",
        "0.5",
        "--count",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(stdout_of(&o).trim()).expect("one JSON line");
    assert_eq!(v["ports"].as_array().map(|a| a.len()), Some(1), "{v}");
    assert!(
        v["ports"][0]["tx_packets_per_s"].as_f64() > Some(0.0),
        "{v}"
    );
    assert_eq!(v["ports"][0]["tx_drops_per_s"].as_f64(), Some(0.0), "{v}");

    // On a terminal the table is redrawn in place (script(1) gives it one).
    if have("script", "bsdutils", "stats --watch on a terminal") {
        let line = format!(
            "{VALE_CTL} --socket {} stats --watch 0.3 --count 2",
            path_str(&d.socket)
        );
        let o = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .output()
            .unwrap();
        let out = stdout_of(&o);
        assert!(o.status.success(), "{out}");
        assert_eq!(out.matches("\x1b[H\x1b[2J").count(), 2, "{out:?}");
    }

    // Bad input: a usage error that says what is wrong.
    let o = d.ctl(&["stats", "--watch", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("between 0.1 and 3600 seconds"));
    let o = d.ctl(&["stats", "--watch", "vale0:ping"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("vale-ctl stats vale0:ping --watch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = d.ctl(&["stats", "--count", "2"]);
    assert_eq!(o.status.code(), Some(2), "--count needs --watch");
}

struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
