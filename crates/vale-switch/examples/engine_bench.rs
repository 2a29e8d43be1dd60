//! The engine alone, over memfd regions in one process, with fixed amounts of work.
//!
//! - `engine_bench [RUNS] [CASE:LEN,...]` (default 7 runs, every case): each case RUNS
//!   times, prints the median, min and max of delivered Mpps and Gbit/s (frame bytes x
//!   8, no preamble or CRC), and per second of the thread's CPU time (steadier on a shared
//!   machine, where other processes take the CPU from it).
//! - `engine_bench profile CASE LEN ITERS`: one case for `valgrind --tool=callgrind`
//!   (CASE: unicast | broadcast | fanin | vlan-unicast | vlan-broadcast | vlan-fanin |
//!   vlan-push | vlan-pop; ITERS bursts of 512 packets).
//!
//! The `vlan-` cases run on a switch with VLAN filtering on, every port an access port
//! of VLAN 10 (`vlan-push`: the receiver a trunk that tags every copy; `vlan-pop`: the
//! sender a trunk of VLAN 10 sending tagged frames, each copy's tag taken out).
//!
//! - `engine_bench pair RUNS CASE LEN CASE LEN ...`: the first case against each of the
//!   others, measured in turn (A B C A B C ...), and each one's ratio to the first in
//!   the same turn: on a shared machine the ratio of neighbours is what holds still.
//!   Rates per second of the thread's own CPU time (`/proc/thread-self/schedstat`),
//!   which other processes' time does not inflate, besides wall-clock Mpps.
//!
//! `BUF_SIZE=2112` tries a buffer stride that is not a power of two. Pin it
//! (`taskset -c 1`) on a noisy machine.

use std::time::{Duration, Instant};

#[path = "../benches/harness.rs"]
mod harness;

const CASES: [(&str, usize); 12] = [
    ("unicast", 60),
    ("vlan-unicast", 60),
    ("unicast", 1514),
    ("vlan-unicast", 1514),
    ("broadcast", 60),
    ("vlan-broadcast", 60),
    ("fanin", 60),
    ("vlan-fanin", 60),
    ("vlan-push", 60),
    ("vlan-pop", 64),
    ("vlan-push", 1514),
    ("vlan-pop", 1518),
];

fn bench(case: &str, len: usize) -> harness::Bench {
    let g = vale_abi::PortGeometry {
        buf_size: std::env::var("BUF_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2048),
        ..Default::default()
    };
    let access = ("access 10", "access 10");
    match case {
        "vlan-unicast" => harness::Bench::vlan(1, 1, len, false, access),
        "vlan-broadcast" => harness::Bench::vlan(1, 4, len, true, access),
        "vlan-fanin" => harness::Bench::vlan(4, 1, len, false, access),
        "vlan-pop" => harness::Bench::vlan_pop(len),
        "vlan-push" => {
            harness::Bench::vlan(1, 1, len, false, ("trunk 10 native 10 tagged", "access 10"))
        }
        "broadcast" => harness::Bench::with_geometry(1, 4, len, true, g),
        "fanin" => harness::Bench::with_geometry(4, 1, len, false, g),
        _ => harness::Bench::with_geometry(1, 1, len, false, g),
    }
}

/// This thread's time on a CPU so far (`/proc/thread-self/schedstat`), if the kernel
/// says: unlike the wall clock, it does not count the time other processes ran.
fn cpu_time() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Delivered packets per second over `iters` bursts, after a warm-up, and the same per
/// second of this thread's CPU time (the wall clock's figure where the kernel does not
/// say).
fn measure_both(case: &str, len: usize, iters: usize) -> (f64, f64) {
    let mut b = bench(case, len);
    for _ in 0..iters / 10 {
        b.iteration();
    }
    let copies = if case.ends_with("broadcast") { 4 } else { 1 };
    let (t, c) = (Instant::now(), cpu_time());
    let mut n = 0;
    for _ in 0..iters {
        n += b.iteration();
    }
    let wall = t.elapsed();
    let cpu = match (c, cpu_time()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    let n = (n * copies) as f64;
    (n / wall.as_secs_f64(), n / cpu.as_secs_f64())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("profile") {
        let case = args.get(2).map_or("unicast", String::as_str);
        let len = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(60);
        let iters: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(2000);
        let mut b = bench(case, len);
        let n: usize = (0..iters).map(|_| b.iteration()).sum();
        println!("{case} len {len}: {n} packets taken from TX rings");
        return;
    }
    if args.get(1).map(String::as_str) == Some("pair") {
        return pair(&args[2..]);
    }
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(7);
    let only: Option<Vec<(String, usize)>> = args.get(2).map(|l| {
        l.split(',')
            .filter_map(|c| {
                let (case, len) = c.split_once(':')?;
                Some((case.to_string(), len.parse().ok()?))
            })
            .collect()
    });
    println!(
        "{:<18} {:>5} {:>10} {:>10} {:>10} {:>12}   per CPU-second: median [min-max]",
        "case", "len", "median", "min", "max", "Gbit/s (med)"
    );
    for (case, len) in CASES {
        if let Some(o) = &only
            && !o.iter().any(|(c, l)| c == case && *l == len)
        {
            continue;
        }
        let iters = if len > 1000 { 20_000 } else { 50_000 };
        let (mut v, mut cpu): (Vec<f64>, Vec<f64>) = (0..runs)
            .map(|_| {
                let (w, c) = measure_both(case, len, iters);
                (w / 1e6, c / 1e6)
            })
            .unzip();
        v.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let med = v[v.len() / 2];
        let name = match case {
            "unicast" => "unicast 1->1",
            "broadcast" => "broadcast 1->4",
            "fanin" => "fan-in 4->1",
            "vlan-unicast" => "vlan unicast",
            "vlan-broadcast" => "vlan broadcast",
            "vlan-fanin" => "vlan fan-in",
            "vlan-pop" => "vlan pop tag",
            _ => "vlan push tag",
        };
        println!(
            "{name:<18} {len:>5} {med:>7.1} Mpps {:>5.1} Mpps {:>5.1} Mpps {:>9.1}   cpu {:.1} [{:.1}-{:.1}]",
            v[0],
            v[v.len() - 1],
            med * 1e6 * len as f64 * 8.0 / 1e9,
            cpu[cpu.len() / 2],
            cpu[0],
            cpu[cpu.len() - 1],
        );
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `pair RUNS CASE LEN CASE LEN ...`: turns of every case, each case's Mpps and its
/// ratio to the first case's in the same turn; medians and ranges over the turns.
fn pair(args: &[String]) {
    let runs: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(7);
    let cases: Vec<(String, usize)> = args[1..]
        .chunks(2)
        .filter_map(|c| Some((c.first()?.clone(), c.get(1)?.parse().ok()?)))
        .collect();
    if cases.len() < 2 {
        eprintln!("usage: engine_bench pair RUNS CASE LEN CASE LEN [CASE LEN ...]");
        return;
    }
    let mut mpps = vec![Vec::new(); cases.len()];
    let mut ratios = vec![Vec::new(); cases.len()];
    let mut wall = vec![Vec::new(); cases.len()];
    for _ in 0..runs {
        let turn: Vec<(f64, f64)> = cases
            .iter()
            .map(|(c, len)| {
                let iters = if *len > 1000 { 20_000 } else { 50_000 };
                let (w, cpu) = measure_both(c, *len, iters);
                (w / 1e6, cpu / 1e6)
            })
            .collect();
        for (i, (w, cpu)) in turn.iter().enumerate() {
            mpps[i].push(*cpu);
            wall[i].push(*w);
            ratios[i].push(cpu / turn[0].1);
        }
    }
    println!(
        "{:<16} {:>5} {:>11} {:>17} {:>6} {:>11} {:>10}",
        "case", "len", "Mpps/CPU-s", "[min-max]", "ratio", "[min-max]", "wall Mpps"
    );
    for (i, (c, len)) in cases.iter().enumerate() {
        let (m, r, w) = (
            median(&mut mpps[i]),
            median(&mut ratios[i]),
            median(&mut wall[i]),
        );
        println!(
            "{c:<16} {len:>5} {m:>11.1} [{:>6.1}-{:>6.1}] {r:>6.2} [{:.2}-{:.2}] {w:>10.1}",
            mpps[i][0],
            mpps[i][runs - 1],
            ratios[i][0],
            ratios[i][runs - 1]
        );
    }
}
