//! The engine alone, over memfd regions in one process, with fixed amounts of work.
//!
//! - `engine_bench [RUNS] [CASE:LEN,...]` (default 7 runs, every case): each case RUNS
//!   times, prints the median, min and max of delivered Mpps and Gbit/s (frame bytes x
//!   8, no preamble or CRC), and per second of the thread's CPU time (steadier on a shared
//!   machine, where other processes take the CPU from it).
//! - `engine_bench profile CASE LEN ITERS`: one case for `valgrind --tool=callgrind`
//!   (CASE: unicast | broadcast | fanin | vlan-unicast | vlan-broadcast | vlan-fanin |
//!   vlan-push; ITERS bursts of 512 packets).
//!
//! The `vlan-` cases run on a switch with VLAN filtering on, every port an access port
//! of VLAN 10 (`vlan-push`: the receiver a trunk that tags every copy).
//!
//! `BUF_SIZE=2112` tries a buffer stride that is not a power of two. Pin it
//! (`taskset -c 1`) on a noisy machine.

use std::time::Instant;

#[path = "../benches/harness.rs"]
mod harness;

const CASES: [(&str, usize); 9] = [
    ("unicast", 60),
    ("vlan-unicast", 60),
    ("unicast", 1514),
    ("vlan-unicast", 1514),
    ("broadcast", 60),
    ("vlan-broadcast", 60),
    ("fanin", 60),
    ("vlan-fanin", 60),
    ("vlan-push", 60),
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
        "vlan-push" => {
            harness::Bench::vlan(1, 1, len, false, ("trunk 10 native 10 tagged", "access 10"))
        }
        "broadcast" => harness::Bench::with_geometry(1, 4, len, true, g),
        "fanin" => harness::Bench::with_geometry(4, 1, len, false, g),
        _ => harness::Bench::with_geometry(1, 1, len, false, g),
    }
}

fn thread_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Delivered packets per second over `iters` bursts, after a warm-up: per second of
/// wall time, and per second of this thread's CPU time (which other processes on a
/// shared machine do not dilute).
fn measure(case: &str, len: usize, iters: usize) -> (f64, f64) {
    let mut b = bench(case, len);
    for _ in 0..iters / 10 {
        b.iteration();
    }
    let copies = if case.ends_with("broadcast") { 4 } else { 1 };
    let (t, c) = (Instant::now(), thread_cpu());
    let mut n = 0;
    for _ in 0..iters {
        n += b.iteration();
    }
    let delivered = (n * copies) as f64;
    (
        delivered / t.elapsed().as_secs_f64(),
        delivered / (thread_cpu() - c),
    )
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
                let (w, c) = measure(case, len, iters);
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
