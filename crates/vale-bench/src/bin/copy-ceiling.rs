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
//! `copy-ceiling LEN SECS [BATCH [BUF_SIZE [COPY_CPU READ_CPU]]]` prints
//! `copy-ceiling len=.. : X Mpps Y Gbit/s ...; copier Z Mpps per CPU-second`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use vale_abi::{Dir, PortGeometry, Region, copy_frame};

/// Ring size (a power of two: indices are masked, not divided).
const N: u64 = 1024;

/// How many slots the receiver's ring is ahead of the sender's (see the copier).
const DST_SHIFT: u32 = 3;

#[repr(align(128))]
struct Padded(AtomicU64);

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu % rustix::thread::CpuSet::MAX_CPU);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// CPU seconds the calling thread has used: on a shared machine the copier's copies per
/// CPU-second is the figure to hold against valed's forwarding thread's.
fn thread_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, default: T) -> T {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
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
            // Frame k goes to the receiver's slot k + DST_SHIFT: with both regions of one
            // layout, slot k of each sits at the same offset in its 4 KiB page, and a copy
            // between two such addresses (4K aliasing: every load seems to depend on the
            // store just made) ran at 1.5-20 Mpps per CPU-second at 1514 B against
            // 18.6-33.9 shifted (docs/perf-logs/2026-12-04-2vcpu-ceiling-aliasing.txt).
            // A ceiling takes the better arrangement.
            let didx: Vec<u32> = (0..N as u32)
                .map(|i| dr.slots().buf_idx((i + DST_SHIFT) % N as u32))
                .collect();
            let (mut h, mut t_cache, mut bad) = (0u64, 0u64, 0u64);
            let cpu0 = thread_cpu();
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
            (bad, h, thread_cpu() - cpu0)
        })
    };
    pin(read_cpu);
    let (mut t, mut h_cache, mut spins) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    loop {
        h_cache = h_cache.max(head.0.load(Ordering::Acquire));
        if t < h_cache {
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
    let (bad, copied, cpu) = copier.join().unwrap_or((u64::MAX, 0, 0.0));
    if bad != 0 {
        eprintln!(
            "copy-ceiling: {bad} copies refused (length {len} over {buf_size}-byte buffers?)"
        );
        std::process::exit(1);
    }
    println!(
        "copy-ceiling len={len} batch={batch} buf_size={buf_size} cpus={copy_cpu},{read_cpu}: {:.2} Mpps {:.2} Gbit/s over {el:.2}s; copier {:.2} Mpps per CPU-second",
        t as f64 / el / 1e6,
        t as f64 * len as f64 * 8.0 / el / 1e9,
        copied as f64 / cpu.max(1e-9) / 1e6,
    );
}
