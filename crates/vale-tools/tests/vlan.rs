//! VLAN settings through a real valed: `vale-ctl vlan` (show, set, errors), frames
//! between client ports of a VLAN-aware switch with `vale-ctl fdb` showing each
//! address's VLAN and `vale-ctl stats` the drops by reason, and `[[vlan]]` in the config
//! file (at start, `config check` with the line of a mistake, `config dump` round trip,
//! reload). Frames through attached interfaces (AF_PACKET and AF_XDP) are in host.rs.

mod common;
use common::*;
use std::path::PathBuf;

fn ctl_err(d: &Daemon, args: &[&str]) -> String {
    let o = d.ctl(args);
    assert!(!o.status.success(), "vale-ctl {args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vale-vlan-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A frame with `tags` (TPID, TCI) and `id` in its payload.
fn tagged(dst: [u8; 6], src: [u8; 6], tags: &[(u16, u16)], id: u32) -> Vec<u8> {
    let mut f = wire::eth(dst, src, tags, 0x88b5);
    f.extend_from_slice(&id.to_be_bytes());
    f.resize(f.len().max(60), 0xa5);
    f
}

#[test]
fn vale_ctl_vlan_sets_shows_and_the_switch_follows() {
    let d = Daemon::start("vlan-ctl", &[]);
    // Set by name before the ports exist.
    assert!(ctl_ok(&d, &["vlan", "vale4", "--filtering", "on"]).contains("vlan_filtering on"));
    ctl_ok(&d, &["vlan", "vale4:a", "--access", "10"]);
    ctl_ok(
        &d,
        &[
            "vlan",
            "vale4:t",
            "--trunk",
            "10,20",
            "--native",
            "30",
            "--native-tagged",
        ],
    );
    ctl_ok(&d, &["vlan", "vale4:c", "--access", "20"]);
    let a = d.open("vale4:a");
    let t = d.open("vale4:t");
    let c = d.open("vale4:c");
    let show = ctl_ok(&d, &["vlan", "vale4"]);
    for want in [
        "vale4: vlan_filtering on",
        "vale4:a          access 10",
        "vale4:t          trunk 10,20 native 30 tagged",
    ] {
        assert!(show.contains(want), "{show}");
    }
    let j = d.ctl_json(&["vlan", "vale4"]);
    assert_eq!(j["filtering"], true);
    assert_eq!(j["ports"]["vale4:c"], "access 20");

    // Untagged from a: the trunk gets it tagged 10, c (VLAN 20) nothing.
    const A: [u8; 6] = [2, 0, 0, 0, 0x0a, 1];
    let f = tagged([0xff; 6], A, &[], 1);
    send(&a, std::slice::from_ref(&f));
    let got = drain(&t, 1.0);
    let mut want = f[..12].to_vec();
    want.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    want.extend_from_slice(&f[12..]);
    assert_eq!(got, vec![want]);
    assert!(drain(&c, 0.3).is_empty(), "VLAN 20 sees nothing of VLAN 10");
    // Tagged on an access port, VID 40 on the trunk: dropped, counted by reason.
    send(&a, &[tagged([0xff; 6], A, &[(0x8100, 10)], 2)]);
    send(
        &t,
        &[tagged([0xff; 6], [2, 0, 0, 0, 0x0b, 1], &[(0x8100, 40)], 3)],
    );
    assert!(wait_for(10.0, || d
        .counter("vale4:a", "vlan_ingress_filter")
        == 1
        && d.counter("vale4:t", "vlan_ingress_filter") == 1));
    let stats = ctl_ok(&d, &["stats", "vale4:a"]);
    assert!(
        stats.contains("vlan_ingress_filter 1") && stats.contains("vlan_not_member 0"),
        "{stats}"
    );
    // The native VLAN: untagged into the trunk is VLAN 30, whose only member it is.
    send(&t, &[tagged([0xff; 6], [2, 0, 0, 0, 0x0b, 2], &[], 4)]);
    assert!(wait_for(10.0, || d.counter("vale4:t", "vlan_not_member") == 1));
    // fdb shows each address's VLAN.
    let fdb = d.ctl_json(&["fdb", "vale4"]);
    let rows = fdb["entries"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["mac"] == "02:00:00:00:0a:01" && r["vlan"] == 10 && r["port"] == "vale4:a"),
        "{fdb}"
    );
    assert!(ctl_ok(&d, &["fdb", "vale4"]).contains(" vlan "));
    d.assert_laws();

    // Mistakes: each named, nothing changed.
    for (args, says) in [
        (
            &["vlan", "vale4:a", "--access", "4095"][..],
            "not a VLAN id 1..=4094",
        ),
        (&["vlan", "vale4:a", "--trunk", "20-10"], "runs backwards"),
        (&["vlan", "vale4", "--access", "10"], "not a switch's"),
        (&["vlan", "vale4:a", "--filtering", "on"], "not a port's"),
        (&["vlan", "vale4", "--filtering", "maybe"], "not on or off"),
        (&["vlan", "vale4:a", "--native", "3"], "--trunk"),
        (
            &["vlan", "vale4:a", "--access", "3", "--tunnel", "4"],
            "cannot be used with",
        ),
    ] {
        let e = ctl_err(&d, args);
        assert!(e.contains(says), "vale-ctl {args:?}: {e}");
    }
    assert!(ctl_ok(&d, &["vlan", "vale4"]).contains("vale4:a          access 10"));
    // Back to the default, then filtering off: tags carried untouched.
    assert!(ctl_ok(&d, &["vlan", "vale4:a", "--none"]).contains("trunk all"));
    ctl_ok(&d, &["vlan", "vale4", "--filtering", "off"]);
    let f = tagged([0xff; 6], A, &[(0x8100, 77)], 5);
    send(&a, std::slice::from_ref(&f));
    assert_eq!(drain(&c, 1.0), vec![f]);
    assert!(ctl_ok(&d, &["vlan", "vale4"]).contains("vlan_filtering off"));
}

#[test]
fn vlan_tables_in_the_config_file_apply_at_start_check_and_dump_back() {
    let dir = dir("cfg");
    let file = dir.join("valed.toml");
    std::fs::write(
        &file,
        "[[vlan]]\nswitch = \"vale5\"\nfiltering = true\n\
         ports = { \"vale5:a\" = \"access 10\", b = \"trunk 10,20 native 30\", \"vale5:q\" = \"tunnel 100\" }\n",
    )
    .unwrap();
    let o = std::process::Command::new(VALE_CTL)
        .args(["config", "check", path_str(&file)])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("1 [[vlan]] switch"),
        "{out}"
    );
    let d = Daemon::start("vlan-cfg", &["--config", path_str(&file)]);
    let j = d.ctl_json(&["vlan", "vale5"]);
    assert_eq!(j["filtering"], true, "{j}");
    assert_eq!(j["ports"]["vale5:b"], "trunk 10,20 native 30", "{j}");
    assert_eq!(j["ports"]["vale5:q"], "tunnel 100", "{j}");
    // The running state, changed at run time, dumps as a file that brings it back.
    ctl_ok(&d, &["vlan", "vale6", "--filtering", "on"]);
    ctl_ok(&d, &["vlan", "vale6:x", "--trunk"]);
    let dump = ctl_ok(&d, &["config", "dump"]);
    assert_eq!(dump.matches("[[vlan]]").count(), 2, "{dump}");
    let file2 = dir.join("dump.toml");
    let no_socket = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with("socket ="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(&file2, no_socket(&dump)).unwrap();
    let d2 = Daemon::start("vlan-cfg2", &["--config", path_str(&file2)]);
    assert_eq!(
        no_socket(&ctl_ok(&d2, &["config", "dump"])),
        no_socket(&dump)
    );
    assert_eq!(
        d2.ctl_json(&["vlan", "vale6"])["ports"]["vale6:x"],
        "trunk all"
    );

    // A reload makes the switches the file names as declared.
    std::fs::write(
        &file,
        "[[vlan]]\nswitch = \"vale5\"\nports = { \"vale5:a\" = \"access 11\" }\n",
    )
    .unwrap();
    let r = ctl_ok(&d, &["reload"]);
    assert!(r.contains("vale5: vlan_filtering off, 1 port modes"), "{r}");
    let j = d.ctl_json(&["vlan", "vale5"]);
    assert_eq!(j["filtering"], false, "{j}");
    assert_eq!(j["ports"]["vale5:a"], "access 11", "{j}");
    assert!(j["ports"].get("vale5:b").is_none(), "{j}");

    // Mistakes name their line.
    for (text, says) in [
        (
            "\n\n[[vlan]]\nswitch = \"vale5\"\nports = { a = \"access 0\" }\n",
            "line 3: [[vlan]] vale5:a: access VLAN `0`",
        ),
        (
            "[[vlan]]\nswitch = \"vale5:a\"\n",
            "line 1: [[vlan]] needs switch",
        ),
        (
            "[[vlan]]\nswitch = \"vale5\"\nfilter = true\n",
            "`filter` is not a key",
        ),
        (
            "[[vlan]]\nswitch = \"vale5\"\nports = { \"vale6:a\" = \"access 3\" }\n",
            "is not on switch vale5",
        ),
        (
            "[[vlan]]\nswitch = \"vale5\"\n[[vlan]]\nswitch = \"vale5\"\n",
            "line 3: [[vlan]] vale5 is declared already, on line 1",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let o = std::process::Command::new(VALE_CTL)
            .args(["config", "check", path_str(&file)])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains(says), "{text}: {e}");
    }
}
