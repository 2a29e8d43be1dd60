//! The copy ceiling: two threads on two CPUs move packets through one shared SPSC ring,
//! one copy per packet (the producer writes each frame into a 2048-byte slot buffer, the
//! consumer reads its header), no lookup, no switching. It bounds what any switch that
//! copies can do on this machine.
//!
//! `copy-ceiling LEN SECS [BATCH]` prints `copy-ceiling len=.. : X Mpps Y Gbit/s`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vale_abi::{Dir, PortGeometry, Region};

/// Ring size (a power of two: indices are masked, not divided).
const N: u64 = 1024;

#[repr(align(128))]
struct Padded(AtomicU64);

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu % rustix::thread::CpuSet::MAX_CPU);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let len: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let batch: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    // The ring's buffers live in a memfd region, as ours do.
    let g = PortGeometry {
        tx_slots: 1024,
        rx_slots: 2,
        ..Default::default()
    };
    let region = Arc::new(Region::create("copy-ceiling", g).expect("region"));
    let head = Arc::new(Padded(AtomicU64::new(0)));
    let tail = Arc::new(Padded(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let producer = {
        let (region, head, tail, stop) = (region.clone(), head.clone(), tail.clone(), stop.clone());
        std::thread::spawn(move || {
            pin(0);
            let ring = region.ring(Dir::Tx, 0).expect("ring");
            let bufs = ring.bufs().access();
            let slots = ring.slots();
            let idx: Vec<u32> = (0..N as u32).map(|i| slots.buf_idx(i)).collect();
            // A pool of source frames, like a generator's.
            let pool: Vec<Vec<u8>> = (0..64u8).map(|k| vec![k; len]).collect();
            let (mut h, mut t_cache) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                if h - t_cache + batch > N {
                    t_cache = tail.0.load(Ordering::Acquire);
                    if h - t_cache + batch > N {
                        std::hint::spin_loop();
                        continue;
                    }
                }
                for i in 0..batch {
                    let s = ((h + i) & (N - 1)) as usize;
                    bufs.write(idx[s], &pool[((h + i) & 63) as usize]);
                }
                h += batch;
                head.0.store(h, Ordering::Release);
            }
        })
    };
    pin(if cpus > 1 { 1 } else { 0 });
    let ring = region.ring(Dir::Tx, 0).expect("ring");
    let bufs = ring.bufs().access();
    let slots = ring.slots();
    let idx: Vec<u32> = (0..N as u32).map(|i| slots.buf_idx(i)).collect();
    let (mut t, mut h_cache, mut acc) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    loop {
        if t == h_cache {
            h_cache = head.0.load(Ordering::Acquire);
            if t == h_cache {
                if (t & 0xfff) == 0 && Instant::now() >= end {
                    break;
                }
                std::hint::spin_loop();
                continue;
            }
        }
        let k = (h_cache - t).min(batch);
        for i in 0..k {
            let s = ((t + i) & (N - 1)) as usize;
            acc = acc.wrapping_add(bufs.header(idx[s]).map_or(0, |w| w[0]));
        }
        t += k;
        tail.0.store(t, Ordering::Release);
        if (t & 0xffff) < k && Instant::now() >= end {
            break;
        }
    }
    let el = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = producer.join();
    println!(
        "copy-ceiling len={len} batch={batch}: {:.2} Mpps {:.2} Gbit/s over {el:.2}s (check {})",
        t as f64 / el / 1e6,
        t as f64 * len as f64 * 8.0 / el / 1e9,
        acc % 10
    );
}
