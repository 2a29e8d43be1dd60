//! The copy ceiling: what our best path (`pair` through valed, pinned) would do if the
//! switch did nothing but copy. One thread, pinned where valed's forwarding thread is,
//! copies each frame from a sender's buffer to a receiver's buffer with the switch's own
//! routine (`vale_abi::copy_frame`), between two memfd regions with valed's default
//! geometry (1024 slots, 2112-byte buffers), and publishes the receiver's ring index in
//! batches; a second thread, pinned where the `pair` client is, only moves the ring's
//! tail, as `pair` does (it reads no frame). No validation, lookup or slot bookkeeping:
//! anything the switch does on top of this costs time, so ours at or above this figure
//! means the ceiling is wrong.
//!
//! With `--touch` the reader also reads every byte of every frame (as `pair --touch`'s
//! receiver does): the ceiling of the like-for-like row.
//!
//! `copy-ceiling LEN SECS [BATCH [BUF_SIZE [COPY_CPU READ_CPU]]] [--touch]` prints
//! `copy-ceiling len=.. : X Mpps Y Gbit/s`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vale_abi::{Dir, PortGeometry, Region, copy_frame};

/// Ring size (a power of two: indices are masked, not divided).
const N: u64 = 1024;

#[repr(align(128))]
struct Padded(AtomicU64);

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu % rustix::thread::CpuSet::MAX_CPU);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let touch = args.iter().any(|a| a == "--touch");
    args.retain(|a| a != "--touch");
    let len: usize = arg(&args, 1, 60);
    let secs: f64 = arg(&args, 2, 2.0);
    let batch: u64 = arg(&args, 3, 256u64).clamp(1, N);
    let buf_size: u32 = arg(&args, 4, 2112);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let copy_cpu: usize = arg(&args, 5, 0);
    let read_cpu: usize = arg(&args, 6, if cpus > 1 { 1 } else { 0 });
    let g = PortGeometry {
        tx_slots: N as u32,
        rx_slots: N as u32,
        buf_size,
        ..Default::default()
    };
    // The sender's port, its TX buffers written once (as pkt-gen and `pair` do), and the
    // receiver's port.
    let src = Arc::new(Region::create("copy-ceiling-tx", g).expect("region"));
    let dst = Arc::new(Region::create("copy-ceiling-rx", g).expect("region"));
    let frame: Vec<u8> = (0..len).map(|i| i as u8).collect();
    {
        let ring = src.ring(Dir::Tx, 0).expect("ring");
        let (bufs, slots) = (ring.bufs().access(), ring.slots());
        for i in 0..N as u32 {
            assert!(
                bufs.write(slots.buf_idx(i), &frame),
                "frame too long for the buffers"
            );
        }
    }
    let head = Arc::new(Padded(AtomicU64::new(0)));
    let tail = Arc::new(Padded(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let copier = {
        let (src, dst, head, tail, stop) = (
            src.clone(),
            dst.clone(),
            head.clone(),
            tail.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || {
            pin(copy_cpu);
            let (sr, dr) = (
                src.ring(Dir::Tx, 0).expect("ring"),
                dst.ring(Dir::Rx, 0).expect("ring"),
            );
            let (sb, db) = (sr.bufs().access(), dr.bufs().access());
            let sidx: Vec<u32> = (0..N as u32).map(|i| sr.slots().buf_idx(i)).collect();
            let didx: Vec<u32> = (0..N as u32).map(|i| dr.slots().buf_idx(i)).collect();
            let (mut h, mut t_cache, mut bad) = (0u64, 0u64, 0u64);
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
                    bad += u64::from(!copy_frame(sb, sidx[s], db, didx[s], len));
                }
                h += batch;
                head.0.store(h, Ordering::Release);
            }
            bad
        })
    };
    pin(read_cpu);
    let rr = dst.ring(Dir::Rx, 0).expect("ring");
    let rb = rr.bufs().access();
    let ridx: Vec<u32> = (0..N as u32).map(|i| rr.slots().buf_idx(i)).collect();
    let mut scratch = vec![0u8; len];
    let mut sum = 0u64;
    let (mut t, mut h_cache, mut spins) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    loop {
        h_cache = h_cache.max(head.0.load(Ordering::Acquire));
        if t < h_cache {
            if touch {
                for k in t..h_cache {
                    rb.read(ridx[(k & (N - 1)) as usize], &mut scratch);
                    sum = scratch.chunks(8).fold(sum, |acc, c| {
                        let mut w = [0u8; 8];
                        w[..c.len()].copy_from_slice(c);
                        acc.wrapping_add(u64::from_le_bytes(w))
                    });
                }
            }
            t = h_cache;
            tail.0.store(t, Ordering::Release);
        } else {
            std::hint::spin_loop();
        }
        spins += 1;
        if spins % 1024 == 0 && Instant::now() >= end {
            break;
        }
    }
    let el = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let bad = copier.join().unwrap_or(u64::MAX);
    if bad != 0 {
        eprintln!(
            "copy-ceiling: {bad} copies refused (length {len} over {buf_size}-byte buffers?)"
        );
        std::process::exit(1);
    }
    println!(
        "copy-ceiling len={len} batch={batch} buf_size={buf_size} cpus={copy_cpu},{read_cpu}{}: {:.2} Mpps {:.2} Gbit/s over {el:.2}s (sum {sum:#x})",
        if touch { " touch" } else { "" },
        t as f64 / el / 1e6,
        t as f64 * len as f64 * 8.0 / el / 1e9,
    );
}
