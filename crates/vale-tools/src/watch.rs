//! `vale-ctl stats --watch`: per-port rates between two reads of the counters, drawn
//! as an aligned table (redrawn in place on a terminal, a block per interval
//! otherwise), or a JSON object per interval.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vale::proto::PortStats;
use vale_switch::stats::DropReason;

/// The shortest and longest refresh interval `--watch` takes, in seconds.
pub const MIN_SECS: f64 = 0.1;
pub const MAX_SECS: f64 = 3600.0;

/// One port's rates over an interval, per second. tx and rx are the client's view, as
/// in `vale-ctl stats`: tx what the port sent into the switch, rx what it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    pub name: String,
    /// None for a port that appeared during the interval (nothing to compare with).
    pub per_sec: Option<[f64; 6]>,
}

/// Column order of [`Rates::per_sec`] and their headings.
pub const COLUMNS: [&str; 6] = [
    "TX PKT/S",
    "TX B/S",
    "TX DROP/S",
    "RX PKT/S",
    "RX B/S",
    "RX DROP/S",
];
const JSON_KEYS: [&str; 6] = [
    "tx_packets_per_s",
    "tx_bytes_per_s",
    "tx_drops_per_s",
    "rx_packets_per_s",
    "rx_bytes_per_s",
    "rx_drops_per_s",
];

/// Drops a port counts as a sender (tx: runt, bad_buf, no_dest...) and as a
/// destination (rx: ring_full, oversize...). A reason this build does not know counts
/// as rx.
fn drops(p: &PortStats) -> (u64, u64) {
    let mut tx = 0u64;
    let mut rx = 0u64;
    for (k, v) in &p.counters.drops {
        let on_sender = DropReason::ALL
            .iter()
            .find(|r| r.name() == k)
            .is_some_and(|r| r.on_sender());
        if on_sender {
            tx = tx.saturating_add(*v);
        } else {
            rx = rx.saturating_add(*v);
        }
    }
    (tx, rx)
}

fn totals(p: &PortStats) -> [u64; 6] {
    let c = &p.counters;
    let (txd, rxd) = drops(p);
    [c.tx_packets, c.tx_bytes, txd, c.rx_packets, c.rx_bytes, rxd]
}

/// Rates of each port of `cur` against `prev`, `secs` apart. A port is matched by name
/// and index, so one closed and opened again in between counts as new; a counter that
/// went backwards gives 0.
pub fn rates(prev: &[PortStats], cur: &[PortStats], secs: f64) -> Vec<Rates> {
    let secs = secs.max(1e-9);
    cur.iter()
        .map(|p| {
            let before = prev.iter().find(|q| q.name == p.name && q.index == p.index);
            Rates {
                name: p.name.clone(),
                per_sec: before.map(|q| {
                    let (a, b) = (totals(q), totals(p));
                    std::array::from_fn(|i| b[i].saturating_sub(a[i]) as f64 / secs)
                }),
            }
        })
        .collect()
}

/// A rate for a person: `0` when nothing happened, else three significant digits and
/// a K/M/G/T suffix (base 1000, as pkt-gen's report): `0.5`, `12.0`, `740 K`,
/// `1.23 M`.
pub fn human(x: f64) -> String {
    if x <= 0.0 || !x.is_finite() {
        return "0".into();
    }
    let units = ["", " K", " M", " G", " T"];
    let mut v = x;
    let mut u = 0;
    // Round first so that 999.7 K becomes 1.00 M, not "1000 K".
    while u + 1 < units.len() && round3(v) >= 1000.0 {
        v /= 1000.0;
        u += 1;
    }
    let digits = if v < 10.0 {
        if u == 0 { 1 } else { 2 }
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.digits$}{}", units[u])
}

fn round3(v: f64) -> f64 {
    if v < 10.0 {
        (v * 100.0).round() / 100.0
    } else if v < 100.0 {
        (v * 10.0).round() / 10.0
    } else {
        v.round()
    }
}

/// The table: a heading line, the column names, a row per port, aligned.
pub fn table(heading: &str, rows: &[Rates]) -> String {
    let w = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut s = format!("{heading}\n{:<w$}", "PORT");
    for c in COLUMNS {
        s.push_str(&format!(" {c:>10}"));
    }
    s.push('\n');
    for r in rows {
        s.push_str(&format!("{:<w$}", r.name));
        match &r.per_sec {
            Some(v) => {
                for x in v {
                    s.push_str(&format!(" {:>10}", human(*x)));
                }
            }
            None => s.push_str(&format!(" {:>10}", "(new)")),
        }
        s.push('\n');
    }
    if rows.is_empty() {
        s.push_str("(no ports)\n");
    }
    s
}

/// One JSON object (one line) per refresh.
pub fn json_line(refresh: u64, secs: f64, rows: &[Rates]) -> String {
    let ports: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("name".into(), r.name.clone().into());
            if let Some(v) = &r.per_sec {
                for (k, x) in JSON_KEYS.iter().zip(v) {
                    o.insert((*k).into(), (*x).into());
                }
            }
            serde_json::Value::Object(o)
        })
        .collect();
    serde_json::json!({ "refresh": refresh, "interval_s": secs, "ports": ports }).to_string()
}

pub struct Options {
    /// Seconds between refreshes.
    pub secs: f64,
    /// Refreshes before returning (None: until `stop`).
    pub count: Option<u64>,
    pub json: bool,
    /// Redraw in place (clear the screen before each table): stdout is a terminal.
    pub redraw: bool,
}

/// Checks `--watch SECS` and makes it a duration.
pub fn interval(secs: f64) -> Result<Duration, String> {
    if !(MIN_SECS..=MAX_SECS).contains(&secs) {
        return Err(format!(
            "the interval must be between {MIN_SECS} and {MAX_SECS} seconds, not {secs}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Reads the counters with `fetch` every interval and writes the rates to `out` until
/// `count` refreshes are done or `stop` is set (Ctrl-C). A reader that went away
/// (`vale-ctl stats --watch | head`) ends it quietly.
pub fn run(
    o: &Options,
    mut fetch: impl FnMut() -> Result<Vec<PortStats>, String>,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<(), String> {
    let every = interval(o.secs)?;
    let mut prev = fetch()?;
    let mut prev_at = Instant::now();
    let start = prev_at;
    let mut refresh = 0u64;
    while o.count.is_none_or(|n| refresh < n) {
        let wake = prev_at + every;
        while Instant::now() < wake {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(
                wake.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        let cur = fetch()?;
        let at = Instant::now();
        let secs = at.duration_since(prev_at).as_secs_f64();
        let rows = rates(&prev, &cur, secs);
        refresh += 1;
        let text = if o.json {
            json_line(refresh, secs, &rows) + "\n"
        } else {
            let heading = format!(
                "stats --watch {}: refresh {refresh}{} at {:.1} s, rates over the last {secs:.2} s{}",
                o.secs,
                o.count.map_or(String::new(), |n| format!(" of {n}")),
                at.duration_since(start).as_secs_f64(),
                if o.count.is_none() {
                    " (Ctrl-C to stop)"
                } else {
                    ""
                }
            );
            let t = table(&heading, &rows);
            // Home and clear on a terminal; elsewhere one block after another.
            if o.redraw {
                format!("\x1b[H\x1b[2J{t}")
            } else {
                format!("{t}\n")
            }
        };
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(format!("writing the rates: {e}")),
        }
        prev = cur;
        prev_at = at;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vale::proto::Counters;

    fn port(name: &str, index: u16, tx: u64, rx: u64, drops: &[(&str, u64)]) -> PortStats {
        PortStats {
            name: name.into(),
            switch: "vale0".into(),
            index,
            counters: Counters {
                tx_packets: tx,
                tx_bytes: tx * 60,
                rx_packets: rx,
                rx_bytes: rx * 60,
                drops: drops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn human_units() {
        assert_eq!(human(0.0), "0");
        assert_eq!(human(-3.0), "0");
        assert_eq!(human(f64::NAN), "0");
        assert_eq!(human(0.5), "0.5");
        assert_eq!(human(12.0), "12.0");
        assert_eq!(human(999.0), "999");
        assert_eq!(human(999.7), "1.00 K");
        assert_eq!(human(740_000.0), "740 K");
        assert_eq!(human(1_234_567.0), "1.23 M");
        assert_eq!(human(45_600_000_000.0), "45.6 G");
        assert_eq!(human(7e15), "7000 T");
    }

    #[test]
    fn rates_split_drops_by_side_and_mark_new_ports() {
        let prev = vec![
            port("vale0:a", 0, 100, 0, &[("no_dest", 1)]),
            port("vale0:b", 1, 0, 50, &[("ring_full", 2)]),
            port("vale0:c", 2, 7, 7, &[]),
        ];
        let cur = vec![
            port("vale0:a", 0, 300, 0, &[("no_dest", 5), ("runt", 1)]),
            port("vale0:b", 1, 0, 250, &[("ring_full", 12), ("oversize", 2)]),
            port("vale0:c", 2, 7, 7, &[]),
            port("vale0:d", 3, 9, 9, &[]),
        ];
        let r = rates(&prev, &cur, 2.0);
        assert_eq!(r[0].per_sec, Some([100.0, 6000.0, 2.5, 0.0, 0.0, 0.0]));
        assert_eq!(r[1].per_sec, Some([0.0, 0.0, 0.0, 100.0, 6000.0, 6.0]));
        assert_eq!(r[2].per_sec, Some([0.0; 6]));
        assert_eq!(r[3].per_sec, None);
        // Reopened under the same name (another index), or counters that went back.
        let again = vec![port("vale0:a", 4, 1, 0, &[]), port("vale0:c", 2, 0, 0, &[])];
        let r = rates(&prev, &again, 1.0);
        assert_eq!(r[0].per_sec, None);
        assert_eq!(r[1].per_sec, Some([0.0; 6]));
    }

    #[test]
    fn the_table_is_aligned() {
        let rows = vec![
            Rates {
                name: "vale0:a".into(),
                per_sec: Some([1_234_567.0, 74_074_020.0, 0.0, 0.0, 0.0, 3.0]),
            },
            Rates {
                name: "vale0:longer_name".into(),
                per_sec: Some([0.0; 6]),
            },
            Rates {
                name: "vale0:n".into(),
                per_sec: None,
            },
        ];
        let t = table("heading", &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "heading");
        assert_eq!(
            lines[1],
            "PORT                TX PKT/S     TX B/S  TX DROP/S   RX PKT/S     RX B/S  RX DROP/S"
        );
        assert_eq!(
            lines[2],
            "vale0:a               1.23 M     74.1 M          0          0          0        3.0"
        );
        assert_eq!(lines[3].len(), lines[1].len());
        assert!(lines[4].ends_with("(new)"), "{t}");
        assert!(table("h", &[]).contains("(no ports)"));
    }

    #[test]
    fn json_lines_carry_every_rate() {
        let rows = vec![Rates {
            name: "vale0:a".into(),
            per_sec: Some([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        }];
        let v: serde_json::Value = serde_json::from_str(&json_line(3, 1.5, &rows)).unwrap();
        assert_eq!(v["refresh"], 3);
        assert_eq!(v["ports"][0]["rx_drops_per_s"], 6.0);
        assert_eq!(v["ports"][0]["tx_bytes_per_s"], 2.0);
    }

    #[test]
    fn intervals_outside_the_limits_are_refused() {
        assert!(interval(0.0).unwrap_err().contains("between 0.1 and 3600"));
        assert!(interval(f64::NAN).is_err());
        assert!(interval(1e9).is_err());
        assert_eq!(interval(0.5).unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn run_stops_after_count_and_never_redraws_into_a_pipe() {
        let mut n = 0u64;
        let fetch = || {
            n += 1;
            Ok(vec![port("vale0:a", 0, n * 10, 0, &[])])
        };
        let mut out = Vec::new();
        let o = Options {
            secs: 0.1,
            count: Some(2),
            json: false,
            redraw: false,
        };
        run(&o, fetch, &AtomicBool::new(false), &mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.matches("PORT").count(), 2, "{s}");
        assert!(!s.contains('\x1b'), "{s}");
        assert!(s.contains("refresh 2 of 2"), "{s}");
        // Stopped (Ctrl-C) before the first refresh: nothing written.
        let mut out = Vec::new();
        let o = Options { count: None, ..o };
        run(&o, || Ok(vec![]), &AtomicBool::new(true), &mut out).unwrap();
        assert!(out.is_empty());
    }
}
