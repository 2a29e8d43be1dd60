//! A MAC flood: 10^6 distinct source addresses into one port. The learning table stays
//! within its configured size, refuses (and counts) what does not fit instead of
//! evicting, and the hosts it knew before are still reached by unicast, not flooded.

use super::*;

const K: [u8; 6] = [2, 0, 0, 0, 0xfd, 0xb]; // a known host
const H: [u8; 6] = [2, 0, 0, 0, 0xfd, 0xc]; // another, that talks to K
const F: [u8; 6] = [2, 0, 0, 0, 0xfd, 0xf]; // the flooder's own address
const BCAST: [u8; 6] = [0xff; 6];
const SOURCES: u64 = 1_000_000;
const FDB_SIZE: u64 = 4096;

/// The `i`th flood source: locally administered unicast, distinct for every `i` < 2^40.
fn source(i: u64) -> [u8; 6] {
    let v = i.wrapping_mul(0x9e37_79b9_7f4b) & 0xff_ffff_ffff;
    let b = v.to_be_bytes();
    [0x06, b[3], b[4], b[5], b[6], b[7]]
}

/// Sends `SOURCES` frames to the flooder's own address (learned on its port: no
/// destination, so the flood costs the switch lookups, not copies), each from another
/// source.
fn flood(f: &vale::Port) {
    let mut fr = frame(F, [0; 6], 0);
    for i in 0..SOURCES {
        fr[6..12].copy_from_slice(&source(i));
        while !f.inject(&fr) {
            f.txsync().unwrap();
            f.poll(vale::Interest::TX, Some(Duration::from_millis(100)))
                .unwrap();
        }
        if i % 256 == 255 {
            f.txsync().unwrap();
        }
    }
    f.txsync().unwrap();
}

fn fdb_counter(v: &serde_json::Value, k: &str) -> u64 {
    v["counters"][k]
        .as_u64()
        .unwrap_or_else(|| panic!("no fdb counter {k}: {}", v["counters"]))
}

#[test]
fn a_mac_flood_fills_a_bounded_table_and_known_hosts_are_still_reached() {
    let _one = serialise();
    let mut d = Daemon::start("hostile-macflood", &["--fdb-size", &FDB_SIZE.to_string()]);
    let (k, h, o) = (d.open("vale0:k"), d.open("vale0:h"), d.open("vale0:o"));
    let f = d.open("vale0:f@conf:slots=4096");
    for (p, mac) in [(&k, K), (&h, H), (&f, F)] {
        send(p, &[frame(BCAST, mac, 0)]);
    }
    for p in [&k, &h, &o, &f] {
        drain(p, 0.3);
    }
    let before = settled(&d);
    let t = std::time::Instant::now();
    flood(&f);
    assert!(
        wait_for(10.0, || d.counter("vale0:f", "tx_packets") == SOURCES + 1),
        "the switch took every flood frame"
    );
    let secs = t.elapsed().as_secs_f64();
    let fdb = d.ctl_json(&["fdb", "vale0"]);
    let (entries, learned, refused) = (
        fdb_counter(&fdb, "entries"),
        fdb_counter(&fdb, "learned"),
        fdb_counter(&fdb, "refused"),
    );
    let rows = fdb["entries"].as_array().unwrap();
    let at = |mac: &str| {
        rows.iter()
            .find(|r| r["mac"] == mac)
            .map(|r| r["port"].as_str().unwrap_or("").to_string())
    };
    // The known hosts keep their entries and are reached by unicast only.
    let unicast: Vec<_> = (0..100).map(|i| frame(K, H, 1000 + i)).collect();
    send(&h, &unicast);
    let got = drain(&k, 2.0);
    let leaked = drain(&o, 0.5).len();
    let no_dest = d.counter("vale0:f", "no_dest");
    let after = settled(&d);
    figure(
        "MAC flood",
        &format!(
            "{SOURCES} distinct sources in {secs:.1} s; fdb --fdb-size {FDB_SIZE}: entries \
             {entries}, learned {learned}, refused {refused}; flooder no_dest {no_dest}"
        ),
        &format!(
            "known host got {} of 100 unicast frames, a bystander {leaked}",
            got.len()
        ),
        before,
        after,
    );
    assert!(
        entries <= FDB_SIZE && rows.len() as u64 == entries,
        "the table stays within its size: {entries} entries, {} rows",
        rows.len()
    );
    assert!(
        entries > FDB_SIZE / 2,
        "the flood filled the table: {entries}"
    );
    assert_eq!(
        learned + refused,
        SOURCES + 3,
        "every source was learned or refused (and counted)"
    );
    assert!(refused >= SOURCES - FDB_SIZE, "refusals counted: {refused}");
    assert_eq!(
        no_dest, SOURCES,
        "frames to the flooder itself are counted, not delivered"
    );
    assert_eq!(
        at("02:00:00:00:fd:0b").as_deref(),
        Some("vale0:k"),
        "K still known"
    );
    assert_eq!(
        at("02:00:00:00:fd:0c").as_deref(),
        Some("vale0:h"),
        "H still known"
    );
    assert_eq!(got, unicast, "the known host gets its unicast frames");
    assert_eq!(leaked, 0, "unicast to a known host is not flooded");
    assert!(d.alive());
}
