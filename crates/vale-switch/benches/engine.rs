//! Engine micro-benchmarks over real memfd regions in one process: the switch's work
//! only. Senders' TX slots are filled once (like pkt-gen, which builds its frame once and
//! never rewrites it), so an iteration is: the sender publishes 512 slots, the switch
//! forwards them, the receivers release what they got.
//!
//! `cargo bench -p vale-switch --bench engine`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

mod harness;
use harness::{BURST, Bench};

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    let cases: [(&str, usize, usize, usize, bool, u64); 4] = [
        ("unicast_1to1", 1, 1, 60, false, 1),
        ("unicast_1to1", 1, 1, 1514, false, 1),
        ("broadcast_1to4", 1, 4, 60, true, 4),
        ("fanin_4to1", 4, 1, 60, false, 1),
    ];
    for (name, s, r, len, bcast, copies) in cases {
        let mut b = Bench::new(s, r, len, bcast);
        // Throughput in delivered packets (one per copy).
        g.throughput(Throughput::Elements(
            (BURST / s as u32) as u64 * s as u64 * copies,
        ));
        g.bench_with_input(BenchmarkId::new(name, len), &len, |bench, _| {
            bench.iter(|| black_box(b.iteration()))
        });
        let st = b.sw.port(b.tx[0].0).unwrap().stats();
        assert_eq!(st.copies_dropped, 0, "{name}: the receivers kept up");
        assert_eq!(
            st.forwarded, st.tx_packets,
            "{name}: nothing dropped at the sender"
        );
    }
    // VLAN filtering on against off, in the same run: access ports of one VLAN (the
    // frames go through unchanged), and access to a trunk (every copy gets a tag).
    let access = ("access 10", "access 10");
    let push = ("trunk 10 native 10 tagged", "access 10");
    type Case<'a> = (&'a str, usize, usize, usize, bool, u64, (&'a str, &'a str));
    let vlan_cases: [Case; 5] = [
        ("vlan_unicast_1to1", 1, 1, 60, false, 1, access),
        ("vlan_unicast_1to1", 1, 1, 1514, false, 1, access),
        ("vlan_broadcast_1to4", 1, 4, 60, true, 4, access),
        ("vlan_fanin_4to1", 4, 1, 60, false, 1, access),
        ("vlan_push_1to1", 1, 1, 60, false, 1, push),
    ];
    for (name, s, r, len, bcast, copies, modes) in vlan_cases {
        let mut b = Bench::vlan(s, r, len, bcast, modes);
        g.throughput(Throughput::Elements(
            (BURST / s as u32) as u64 * s as u64 * copies,
        ));
        g.bench_with_input(BenchmarkId::new(name, len), &len, |bench, _| {
            bench.iter(|| black_box(b.iteration()))
        });
        let st = b.sw.port(b.tx[0].0).unwrap().stats();
        assert_eq!(st.copies_dropped, 0, "{name}: the receivers kept up");
        assert_eq!(st.forwarded, st.tx_packets, "{name}: nothing dropped");
        assert_eq!(st.copies, st.forwarded * copies, "{name}: every copy made");
    }
    // A trunk to an access port: every copy has its tag taken out.
    let mut b = Bench::vlan_pop(64);
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_with_input(BenchmarkId::new("vlan_pop_1to1", 64), &64, |bench, _| {
        bench.iter(|| black_box(b.iteration()))
    });
    let st = b.sw.port(b.tx[0].0).unwrap().stats();
    assert_eq!(st.copies_dropped, 0, "vlan_pop: the receivers kept up");
    assert_eq!(st.forwarded, st.tx_packets, "vlan_pop: nothing dropped");
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
