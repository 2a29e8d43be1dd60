//! A fixed amount of engine work, for instruction counts under callgrind:
//! `valgrind --tool=callgrind target/release/examples/engine_profile unicast 60 2000`
//! (case: unicast | broadcast | fanin; frame length; iterations of 512 packets).

#[path = "../benches/harness.rs"]
mod harness;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map_or("unicast", String::as_str);
    let len: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(60);
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2000);
    // BUF_SIZE=2112 tries a buffer stride that is not a power of two.
    let g = vale_abi::PortGeometry {
        buf_size: std::env::var("BUF_SIZE")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2048),
        ..Default::default()
    };
    let mut b = match case {
        "broadcast" => harness::Bench::with_geometry(1, 4, len, true, g),
        "fanin" => harness::Bench::with_geometry(4, 1, len, false, g),
        _ => harness::Bench::with_geometry(1, 1, len, false, g),
    };
    let mut n = 0;
    for _ in 0..iters {
        n += b.iteration();
    }
    println!("{case} len {len}: {n} packets taken from TX rings");
}
