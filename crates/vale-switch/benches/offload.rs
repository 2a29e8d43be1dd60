//! Software offload micro-benchmarks: what a TAP or VM port's super-frame costs the
//! switch when it goes to a port without a virtio-net header. The TSO case is the one
//! that matters (a 64 KiB TCP/IPv4 frame cut at 1448 bytes, 46 segments, every segment
//! checksummed); the checksum case is one 1514-byte frame with `NEEDS_CSUM`.
//!
//! `cargo bench -p vale-switch --bench offload`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vale_switch::offload::{self, VnetHdr};

/// Ethernet + IPv4 + TCP with `payload` bytes. The checksums are left as a sender with
/// offloads leaves them (the switch rewrites them anyway).
fn tcp4(payload: usize) -> Vec<u8> {
    let mut f = vec![0u8; 54 + payload];
    f[12] = 0x08;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload).min(0xffff) as u16).to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[38..42].copy_from_slice(&7u32.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = 0x18;
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    f
}

fn resolve(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload_resolve");
    // The largest IPv4 packet: 65535 bytes of IP, 65495 of TCP payload.
    let big = tcp4(65535 - 40);
    let tso = VnetHdr {
        flags: offload::F_NEEDS_CSUM,
        gso_type: offload::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut work = Vec::with_capacity(2048);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_with_input(BenchmarkId::new("tso4_1448", big.len()), &big, |b, f| {
        b.iter(|| {
            let mut n = 0usize;
            offload::resolve(&tso, black_box(f), &mut work, |s| {
                n += s[s.len() - 1] as usize
            })
            .unwrap();
            n
        })
    });
    let one = tcp4(1460);
    let csum = VnetHdr {
        flags: offload::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..Default::default()
    };
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_with_input(BenchmarkId::new("csum", one.len()), &one, |b, f| {
        b.iter(|| {
            let mut n = 0usize;
            offload::resolve(&csum, black_box(f), &mut work, |s| n += s[50] as usize).unwrap();
            n
        })
    });
    g.finish();
}

criterion_group!(benches, resolve);
criterion_main!(benches);
