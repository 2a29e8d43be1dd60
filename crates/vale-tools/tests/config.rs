//! Declared configuration: `[[port]]` entries in valed's TOML file that valed creates at
//! start, a reload (SIGHUP or `vale-ctl reload`) that applies only the difference,
//! `vale-ctl config check` with errors that name the line, and `vale-ctl config dump`
//! that recreates the running state. TAP ports need root (SKIP otherwise).

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A directory for a test's config file and sockets (the daemon's own directory is
/// made afresh when it starts).
fn cfg_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vale-cfg-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn ifindex(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
}

/// The switch ports of the host ports, sorted.
fn hosts(d: &Daemon) -> Vec<String> {
    let mut v: Vec<String> = d.ctl_json(&["list"])["hosts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|h| {
                    h["attached"]
                        .as_str()
                        .or(h["waiting"].as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A file declaring a TAP port and a vhost-user port on vale0 and a memif port on
/// vale1: valed creates all three at start; a reload after the file dropped the TAP
/// and added another removes the one and creates the other, leaving the vhost-user
/// and memif ports untouched (same socket files); a reload of a broken file changes
/// nothing and says which line is wrong; SIGHUP does what `vale-ctl reload` does.
#[test]
fn declared_ports_are_created_at_start_and_a_reload_applies_only_the_difference() {
    if !rustix::process::geteuid().is_root() {
        skip("declared TAP ports need root");
        return;
    }
    let dir = cfg_dir("reload");
    let file = dir.join("valed.toml");
    let vm = dir.join("vm.sock");
    let memif = dir.join("memif.sock");
    let entries = |tap: &str| {
        format!(
            "bridge_batch = 256\n\n\
             [[port]]\nname = \"vale0:{tap}\"\nkind = \"tap\"\n\n\
             [[port]]\nname = \"vale0:vm\"\nkind = \"vhost-user\"\nsocket = \"{}\"\n\n\
             [[port]]\nname = \"vale1:m\"\nkind = \"memif\"\nsocket = \"{}\"\nid = 4\nsecret = \"abc\"\n",
            vm.display(),
            memif.display()
        )
    };
    write(&file, &entries("vcfg0"));
    let d = Daemon::start("cfg-reload", &["--config", path_str(&file)]);
    let mut want = vec!["vale0:vcfg0", "vale0:vm", "vale1:m"];
    assert_eq!(hosts(&d), want, "{}", d.log());
    let tap0 = ifindex("vcfg0").expect("valed made the TAP interface");
    let (vm_ino, memif_ino) = (inode(&vm), inode(&memif));
    assert!(vm_ino != 0 && memif_ino != 0, "both sockets are there");
    assert!(
        d.log().contains("config: created vale0:vm (line 7)"),
        "{}",
        d.log()
    );

    // The TAP port changes name: one removed, one created, the rest untouched.
    write(&file, &entries("vcfg1"));
    let out = ctl_ok(&d, &["reload"]);
    assert!(out.contains("removed vale0:vcfg0"), "{out}");
    assert!(out.contains("created vale0:vcfg1 (line 3)"), "{out}");
    assert!(out.contains("2 declared port(s) unchanged"), "{out}");
    want[0] = "vale0:vcfg1";
    assert_eq!(hosts(&d), want);
    assert_eq!(
        ifindex("vcfg0"),
        None,
        "the TAP valed made for it went with it"
    );
    assert!(ifindex("vcfg1").is_some_and(|i| i != tap0));
    assert_eq!(
        (inode(&vm), inode(&memif)),
        (vm_ino, memif_ino),
        "unchanged ports keep their sockets"
    );

    // A declared port removed by hand comes back at the next reload.
    ctl_ok(&d, &["-d", "vale1:m"]);
    assert!(!hosts(&d).contains(&"vale1:m".to_string()));
    let out = ctl_ok(&d, &["reload"]);
    assert!(out.contains("created vale1:m"), "{out}");
    assert_eq!(hosts(&d), want);

    // A broken file: refused with its line, nothing changed.
    write(
        &file,
        &(entries("vcfg1") + "\n[[port]]\nname = \"vale0:x\"\nkind = \"tap\"\nsocket = \"/x\"\n"),
    );
    let o = d.ctl(&["reload"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 19") && err.contains("`socket` is not a key of a tap port"),
        "{err}"
    );
    assert_eq!(hosts(&d), want);

    // SIGHUP: the memif port's secret changes (so it is made again) and the vhost-user
    // port is dropped.
    write(
        &file,
        &format!(
            "[[port]]\nname = \"vale0:vcfg1\"\nkind = \"tap\"\n\n\
             [[port]]\nname = \"vale1:m\"\nkind = \"memif\"\nsocket = \"{}\"\nid = 4\nsecret = \"xyz\"\n",
            memif.display()
        ),
    );
    let tap1 = ifindex("vcfg1");
    let pid = d.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        wait_for(5.0, || hosts(&d) == ["vale0:vcfg1", "vale1:m"]),
        "{:?}\n{}",
        hosts(&d),
        d.log()
    );
    assert!(
        wait_for(10.0, || !vm.exists()),
        "the vhost-user socket went"
    );
    assert_eq!(ifindex("vcfg1"), tap1, "the TAP port was not touched");
    assert!(d.log().contains("SIGHUP: reloaded"), "{}", d.log());
    drop(d);
    assert_eq!(ifindex("vcfg1"), None, "valed's TAP goes when valed does");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vale-ctl config dump` writes a file that `config check` accepts and that brings a
/// new valed up in the same state (its own dump is the same text); ports made at run
/// time by vale-ctl are in it as well as declared ones.
#[test]
fn config_dump_recreates_the_running_state() {
    let dir = cfg_dir("dump");
    let a = Daemon::start("cfg-dump", &["--bridge-batch", "128", "--max-ports", "64"]);
    let vm = dir.join("vm.sock");
    ctl_ok(&a, &["vhost-user", "vale0:vm", "--path", path_str(&vm)]);
    let m = dir.join("m.sock");
    ctl_ok(
        &a,
        &[
            "memif",
            "vale2:m",
            "--path",
            path_str(&m),
            "--id",
            "9",
            "--secret",
            "q\"uote",
        ],
    );
    let dgram = (dir.join("d.sock"), dir.join("d-peer.sock"));
    ctl_ok(
        &a,
        &[
            "qemu-dgram",
            "vale1:d",
            "--bind",
            path_str(&dgram.0),
            "--peer",
            path_str(&dgram.1),
        ],
    );
    let dump = ctl_ok(&a, &["config", "dump"]);
    assert!(
        dump.contains("bridge_batch = 128\n") && dump.contains("max_ports = 64\n"),
        "{dump}"
    );
    assert_eq!(dump.matches("[[port]]").count(), 3, "{dump}");
    let file = dir.join("dump.toml");
    write(&file, &dump);
    let check = ctl_ok(&a, &["config", "check", path_str(&file)]);
    assert!(check.contains("ok (3 declared ports)"), "{check}");
    let before = hosts(&a);
    drop(a);
    // The dump names the first daemon's socket; the new one is told its own, which is
    // the only line that differs.
    let b = Daemon::start("cfg-dump2", &["--config", path_str(&file)]);
    assert_eq!(hosts(&b), before, "{}", b.log());
    let again = ctl_ok(&b, &["config", "dump"]);
    let no_socket = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("socket = "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(no_socket(&again), no_socket(&dump));
    std::thread::sleep(Duration::from_millis(100));
    b.assert_laws();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `vale-ctl config check` judges a file as valed would, naming the line of each
/// mistake, without a running valed.
#[test]
fn config_check_names_the_line_of_each_mistake() {
    let dir = cfg_dir("check");
    let file = dir.join("bad.toml");
    let check = |text: &str| {
        write(&file, text);
        let o = std::process::Command::new(VALE_CTL)
            .args([
                "--socket",
                "/nonexistent",
                "config",
                "check",
                path_str(&file),
            ])
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let port = |body: &str| format!("threads = 1\n\n[[port]]\n{body}\n");
    let cases = [
        (
            port("name = \"vale0:a\"\nkind = \"tap\"\nxdp = true"),
            "line 3",
            "`xdp` is not a key of a tap port",
        ),
        (
            port("name = \"vale0:a\"\nkind = \"bridge\""),
            "line 3",
            "kind `bridge` is not tap",
        ),
        (port("kind = \"tap\""), "line 3", "has no name"),
        (
            port("name = \"eth0\"\nkind = \"tap\""),
            "line 3",
            "name `eth0`",
        ),
        (port("name = \"vale0:a\""), "line 3", "vale0:a has no kind"),
        (
            port("name = \"vale0:a\"\nkind = \"vhost-user\""),
            "line 3",
            "missing field `socket`",
        ),
        (
            port("name = \"vale0:a\"\nkind = \"tap\"")
                + "\n[[port]]\nname = \"vale0:a\"\nkind = \"tap\"\n",
            "line 7",
            "vale0:a is declared already, on line 3",
        ),
        (
            "thread = 2\n".to_string(),
            "line 1",
            "unknown field `thread`",
        ),
        (
            "bridge_batch = 0\n".to_string(),
            "",
            "bridge_batch 0 is out of range",
        ),
    ];
    for (text, line, why) in &cases {
        let (ok, out) = check(text);
        assert!(!ok, "accepted:\n{text}");
        assert!(
            out.contains(line) && out.contains(why),
            "{why} at {line}?\n{out}\n---\n{text}"
        );
    }
    let (ok, out) = check(&port(
        "name = \"vale0:m\"\nkind = \"memif\"\nsocket = \"/run/m.sock\"\nid = 2\nclient = true",
    ));
    assert!(ok && out.contains("ok (1 declared port)"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reload whose changed port cannot be made keeps the port as it was: a queue count
/// out of range is refused with the file (by `config check` too), before anything is
/// removed; a port that fails only when it is made (a vhost-user client with nobody
/// listening) is made again as it was, and the reload fails, naming it.
#[test]
fn a_reload_that_cannot_make_a_changed_port_keeps_the_old_one() {
    let dir = cfg_dir("keep");
    let file = dir.join("valed.toml");
    let vm = dir.join("vm.sock");
    let root = rustix::process::geteuid().is_root();
    let entries = |queues: u16, client: bool| {
        let tap = if root {
            format!("[[port]]\nname = \"vale0:vcfgq0\"\nkind = \"tap\"\nqueues = {queues}\n\n")
        } else {
            String::new()
        };
        format!(
            "{tap}[[port]]\nname = \"vale0:vm\"\nkind = \"vhost-user\"\nsocket = \"{}\"\nclient = {client}\n",
            vm.display()
        )
    };
    write(&file, &entries(2, false));
    let d = Daemon::start("cfg-keep", &["--config", path_str(&file)]);
    let want = if root {
        vec!["vale0:vcfgq0", "vale0:vm"]
    } else {
        vec!["vale0:vm"]
    };
    assert_eq!(hosts(&d), want, "{}", d.log());
    let tap = ifindex("vcfgq0");

    // Out of range: refused up front, by `config check` and by the reload alike.
    let mut bad = entries(2, false).replace("client = false", "client = false\nqueues = 17");
    if root {
        bad = entries(17, false);
    }
    write(&file, &bad);
    let o = d.ctl(&["config", "check", path_str(&file)]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && err.contains("line 1"), "{err}");
    let o = d.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("line 1") && err.contains("1 to 16 queue"),
        "{err}"
    );
    assert_eq!(hosts(&d), want, "{}", d.log());
    assert_eq!(ifindex("vcfgq0"), tap, "the TAP was not touched");
    assert!(!d.log().contains("removed vale0"), "{}", d.log());

    // Refused only when made: the reload fails naming the port, which is back as it was.
    write(&file, &entries(2, true));
    let o = d.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("could not create vale0:vm") && err.contains("made again as it was"),
        "{err}"
    );
    assert_eq!(hosts(&d), want, "{}", d.log());
    assert!(wait_for(5.0, || vm.exists()), "the server socket is back");
    assert_eq!(ifindex("vcfgq0"), tap, "the TAP was not touched");
    // The next reload of the file as it was changes nothing and succeeds.
    write(&file, &entries(2, false));
    let out = ctl_ok(&d, &["reload"]);
    assert!(out.contains("declared port(s) unchanged"), "{out}");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `[[vlan]]` table dropped from the file and reloaded: its switch is as if it had
/// never been declared (filtering off, its ports, open or not, in the default mode) and
/// `config dump` writes no table for it; a table kept and a switch set at run time keep
/// what they have.
#[test]
fn a_vlan_table_removed_from_the_file_resets_its_switch_on_reload() {
    let dir = cfg_dir("vlan");
    let file = dir.join("valed.toml");
    let vale7 = "[[vlan]]\nswitch = \"vale7\"\nfiltering = true\n\
                 ports = { a = \"access 10\", b = \"trunk 10,20\" }\n\n";
    let vale8 = "[[vlan]]\nswitch = \"vale8\"\nports = { a = \"access 30\" }\n";
    write(&file, &format!("{vale7}{vale8}"));
    let d = Daemon::start("cfg-vlan", &["--config", path_str(&file)]);
    let _a = d.open("vale7:a");
    ctl_ok(&d, &["vlan", "vale9", "--filtering", "on"]);
    let j = d.ctl_json(&["vlan", "vale7"]);
    assert_eq!(j["filtering"], true, "{j}");
    assert_eq!(j["ports"]["vale7:a"], "access 10", "{j}");

    write(&file, vale8);
    let r = ctl_ok(&d, &["reload"]);
    assert!(r.contains("vale7: no longer declared"), "{r}");
    let j = d.ctl_json(&["vlan", "vale7"]);
    assert_eq!(j["filtering"], false, "{j}");
    assert_eq!(j["ports"]["vale7:a"], "trunk all", "the open port: {j}");
    assert!(j["ports"].get("vale7:b").is_none(), "{j}");
    assert_eq!(
        d.ctl_json(&["vlan", "vale8"])["ports"]["vale8:a"],
        "access 30"
    );
    assert_eq!(d.ctl_json(&["vlan", "vale9"])["filtering"], true);
    let dump = ctl_ok(&d, &["config", "dump"]);
    assert!(!dump.contains("vale7"), "{dump}");
    assert_eq!(
        dump.matches("[[vlan]]").count(),
        2,
        "vale8 and vale9: {dump}"
    );
    // Declared again: back as declared.
    write(&file, &format!("{vale7}{vale8}"));
    ctl_ok(&d, &["reload"]);
    assert_eq!(
        d.ctl_json(&["vlan", "vale7"])["ports"]["vale7:a"],
        "access 10"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// valed started with `--config FILE`, expected to refuse it: what it says (it is
/// killed, and the test fails, if it starts instead).
fn start_refused(dir: &Path, file: &Path) -> String {
    let mut c = std::process::Command::new(VALED)
        .args(["--socket", path_str(&dir.join("valed.sock"))])
        .args(["--config", path_str(file)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    wait_for(10.0, || {
        status = c.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        let _ = c.kill();
        let _ = c.wait();
        panic!("valed started with {}", file.display());
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.unwrap().code(), Some(2), "{err}");
    err
}

/// A config file others could change is refused at start and on reload, as valed's
/// socket directory is: writable by group or others, in a directory they may write
/// (unless it is sticky), or (as root) belonging to another user.
#[test]
fn a_config_file_others_may_change_is_refused_at_start_and_on_reload() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = cfg_dir("perm");
    let conf = dir.join("conf");
    std::fs::create_dir(&conf).unwrap();
    let file = conf.join("valed.toml");
    let vlan =
        |vid: u16| format!("[[vlan]]\nswitch = \"vale3\"\nports = {{ a = \"access {vid}\" }}\n");
    write(&file, &vlan(10));
    chmod(&file, 0o666);
    let err = start_refused(&dir, &file);
    assert!(
        err.contains(&format!("refusing config file {}", file.display()))
            && err.contains("group or others may write it (mode 666)")
            && err.contains("chmod go-w"),
        "{err}"
    );
    chmod(&file, 0o644);
    chmod(&conf, 0o777);
    let err = start_refused(&dir, &file);
    assert!(
        err.contains(&format!(
            "its directory {} (mode 777, not sticky)",
            conf.display()
        )),
        "{err}"
    );
    // Sticky, as /tmp: others may replace only their own files.
    chmod(&conf, 0o1777);
    let d = Daemon::start("cfg-perm", &["--config", path_str(&file)]);
    assert_eq!(
        d.ctl_json(&["vlan", "vale3"])["ports"]["vale3:a"],
        "access 10"
    );

    // On reload: refused, and nothing changes.
    write(&file, &vlan(20));
    chmod(&file, 0o620);
    let o = d.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && err.contains("mode 620"), "{err}");
    assert_eq!(
        d.ctl_json(&["vlan", "vale3"])["ports"]["vale3:a"],
        "access 10"
    );
    chmod(&file, 0o600);
    ctl_ok(&d, &["reload"]);
    assert_eq!(
        d.ctl_json(&["vlan", "vale3"])["ports"]["vale3:a"],
        "access 20"
    );
    if rustix::process::geteuid().is_root() {
        // Another user's file (nobody's).
        let nobody = Some(rustix::process::Uid::from_raw(65534));
        rustix::fs::chown(&file, nobody, None).unwrap();
        let o = d.ctl(&["reload"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success() && err.contains("belongs to uid 65534, not to valed's user (0)"),
            "{err}"
        );
        drop(d);
        let err = start_refused(&dir, &file);
        assert!(err.contains("belongs to uid 65534"), "{err}");
    } else {
        skip("another user's config file: chown needs root");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a declared port that cannot be made says names what is in the way: an
/// interface that is not there is "no interface", as `vale-ctl -a` says; a host port of
/// the same name made by vale-ctl on another switch is named with its switch port; a
/// file declaring one TAP on two switches is refused with the line of the first.
#[test]
fn a_declared_host_port_that_cannot_be_made_says_what_is_in_the_way() {
    let dir = cfg_dir("host");
    let file = dir.join("valed.toml");
    let vm = dir.join("vm.sock");
    write(
        &file,
        "[[port]]\nname = \"vale0:nosuch0\"\nkind = \"interface\"\n",
    );
    let d = Daemon::start("cfg-host", &["--config", path_str(&file)]);
    let a = d.ctl(&["-a", "vale0:nosuch0"]);
    let said = String::from_utf8_lossy(&a.stderr).into_owned();
    assert!(
        !a.status.success() && said.contains("no interface nosuch0"),
        "{said}"
    );
    assert!(
        wait_for(5.0, || {
            d.log().contains(
            "could not create vale0:nosuch0 (line 1): no interface nosuch0: create a persistent port"
        )
        }),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("went away"), "{}", d.log());

    ctl_ok(&d, &["vhost-user", "vale0:vm", "--path", path_str(&vm)]);
    write(
        &file,
        &format!(
            "[[port]]\nname = \"vale1:vm\"\nkind = \"vhost-user\"\nsocket = \"{}\"\n",
            dir.join("vm1.sock").display()
        ),
    );
    let o = d.ctl(&["reload"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success()
            && err.contains("could not create vale1:vm (line 1): vale1:vm: host port vm exists already as vale0:vm (a vhost-user port"),
        "{err}"
    );

    let tap = "kind = \"tap\"\n";
    write(
        &file,
        &format!("[[port]]\nname = \"vale0:rvt0\"\n{tap}\n[[port]]\nname = \"vale1:rvt0\"\n{tap}"),
    );
    let o = d.ctl(&["config", "check", path_str(&file)]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success()
            && err.contains(
                "line 5: [[port]] vale1:rvt0: TAP interface rvt0 is vale0:rvt0's already, on line 1"
            ),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A declared TAP detached by hand (`vale-ctl -d`, which keeps the interface) is
/// attached again by the next reload; removed by hand and made again by hand under
/// the same name on another switch, it is not the file's: a reload that drops it from
/// the file leaves that one attached.
#[test]
fn a_declared_tap_detached_by_hand_comes_back_and_one_made_by_hand_stays() {
    if !rustix::process::geteuid().is_root() {
        skip("declared TAP ports need root");
        return;
    }
    let dir = cfg_dir("tapback");
    let file = dir.join("valed.toml");
    write(&file, "[[port]]\nname = \"vale0:vcfgb\"\nkind = \"tap\"\n");
    let d = Daemon::start("cfg-tapback", &["--config", path_str(&file)]);
    assert_eq!(hosts(&d), ["vale0:vcfgb"], "{}", d.log());
    ctl_ok(&d, &["-d", "vale0:vcfgb"]);
    assert!(
        hosts(&d).is_empty(),
        "detached: attached nowhere, waiting for nothing"
    );
    assert!(ifindex("vcfgb").is_some(), "the TAP stays");
    let out = ctl_ok(&d, &["reload"]);
    assert!(out.contains("attached vale0:vcfgb again (line 1)"), "{out}");
    assert_eq!(hosts(&d), ["vale0:vcfgb"]);

    // Removed by hand (detached, then removed), made by hand on vale1.
    ctl_ok(&d, &["-d", "vale0:vcfgb"]);
    ctl_ok(&d, &["-d", "vale0:vcfgb"]);
    assert_eq!(ifindex("vcfgb"), None, "{}", d.log());
    ctl_ok(&d, &["-n", "vcfgb"]);
    ctl_ok(&d, &["-a", "vale1:vcfgb"]);
    assert_eq!(hosts(&d), ["vale1:vcfgb"]);
    write(&file, "bridge_batch = 256\n");
    let out = ctl_ok(&d, &["reload"]);
    assert_eq!(hosts(&d), ["vale1:vcfgb"], "{out}\n{}", d.log());
    assert!(ifindex("vcfgb").is_some(), "the TAP made by hand stays");
    // It is still ours to manage: detached and removed as any.
    ctl_ok(&d, &["-d", "vale1:vcfgb"]);
    ctl_ok(&d, &["-r", "vcfgb"]);
    assert_eq!(ifindex("vcfgb"), None);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Names in the file are checked against the limit the daemon runs with:
/// `--max-name-len` over the file's own `max_name_len`, at start and on reload.
#[test]
fn declared_names_are_checked_against_the_daemons_name_limit() {
    let dir = cfg_dir("namelen");
    let file = dir.join("valed.toml");
    let vm = dir.join("vm.sock");
    let name = "vale0:a_long_vhost_port_name";
    write(
        &file,
        &format!(
            "[[port]]\nname = \"{name}\"\nkind = \"vhost-user\"\nsocket = \"{}\"\n",
            vm.display()
        ),
    );
    let d = Daemon::start(
        "cfg-namelen",
        &["--config", path_str(&file), "--max-name-len", "32"],
    );
    assert_eq!(hosts(&d), [name], "{}", d.log());
    let out = ctl_ok(&d, &["reload"]);
    assert!(out.contains("1 declared port(s) unchanged"), "{out}");
    drop(d);
    // Without the flag the default (15) refuses it, and says so.
    let o = std::process::Command::new(VALED)
        .args(["--config", path_str(&file), "--socket"])
        .arg(dir.join("x.sock"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
