//! The switch doing its job, in one process (the daemon comes with the next milestone):
//! three ports are opened by name on switch `vale0`, a broadcast teaches the switch where
//! a host lives, unicast then reaches only that port, a sleeping receiver's full ring
//! drops and counts, and a one-second run shows the forwarding rate.
//!
//! `cargo run --release -p vale-switch --example demo`

use std::time::{Duration, Instant};
use vale_abi::layout::NetmapSlot;
use vale_abi::{AppRing, Dir, Region};
use vale_switch::{DropReason, Forwarder, Limits, MacAddr, NoEgress, PortKey, Registry, Timestamp};

fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst.octets());
    f[6..12].copy_from_slice(&src.octets());
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// A client's view of one port: its own mapping of the region, as another process has.
struct Client {
    _region: Region,
    tx: AppRing,
    rx: AppRing,
}

impl Client {
    fn open(reg: &mut Registry, name: &str) -> (PortKey, Client) {
        let key = reg.open(name, None).expect("open port");
        let entry = reg.entry_mut(key).expect("switch");
        let port = entry.switch.port(key.port).expect("port");
        let fd = port.region().fd().try_clone_to_owned().expect("dup memfd");
        let region = Region::from_fd(fd, port.geometry()).expect("map region");
        let tx = AppRing::new(region.ring(Dir::Tx, 0).expect("tx ring"));
        let rx = AppRing::new(region.ring(Dir::Rx, 0).expect("rx ring"));
        (
            key,
            Client {
                _region: region,
                tx,
                rx,
            },
        )
    }

    /// Puts `count` copies of `f` on the TX ring (as much as fits) and syncs.
    fn send(&self, f: &[u8], count: u32) -> u32 {
        self.tx.txsync();
        let n = count.min(self.tx.space());
        let v = self.tx.view();
        for k in 0..n {
            let i = (self.tx.head() + k) % v.num_slots();
            let s = v.read_slot(i);
            v.bufs().write(s.buf_idx, f);
            v.write_slot(
                i,
                NetmapSlot {
                    buf_idx: s.buf_idx,
                    len: f.len() as u16,
                    flags: 0,
                    ptr: 0,
                },
            );
        }
        self.tx.advance(n);
        self.tx.txsync();
        n
    }

    /// Like pkt-gen: writes `f` into every TX slot once, so the rate loop below measures
    /// the switch, not the writing of frames.
    fn prefill(&self, f: &[u8]) {
        let v = self.tx.view();
        for i in 0..v.num_slots() {
            let s = v.read_slot(i);
            v.bufs().write(s.buf_idx, f);
            v.write_slot(
                i,
                NetmapSlot {
                    buf_idx: s.buf_idx,
                    len: f.len() as u16,
                    flags: 0,
                    ptr: 0,
                },
            );
        }
    }

    /// Sends the next `count` prefilled slots (as many as fit).
    fn push(&self, count: u32) {
        self.tx.txsync();
        self.tx.advance(count.min(self.tx.space()));
        self.tx.txsync();
    }

    /// Releases everything received; returns how many packets that was.
    fn drain(&self) -> u32 {
        self.rx.rxsync();
        let n = self.rx.space();
        self.rx.advance(n);
        self.rx.rxsync();
        n
    }
}

fn main() {
    let mut reg = Registry::new(Limits::default());
    let names = ["vale0:a", "vale0:b", "vale0:c"];
    let mut ports = Vec::new();
    for name in names {
        ports.push(Client::open(&mut reg, name));
    }
    let (ma, mb) = (
        MacAddr::new([2, 0, 0, 0, 0, 0xa]),
        MacAddr::new([2, 0, 0, 0, 0, 0xb]),
    );
    let t0 = Instant::now();
    let now = || Timestamp(t0.elapsed().as_nanos() as u64);
    let mut notify = Vec::new();
    // One forwarder (the per-thread work space) serves every switch.
    let mut fw = Forwarder::new();
    let mut forward = |reg: &mut Registry| {
        let mut n = 0;
        for e in reg.switches_mut() {
            while let k @ 1.. = fw.forward(&e.switch, now(), &mut notify, &mut NoEgress) {
                n += k;
            }
        }
        n
    };
    println!(
        "opened {} on switch vale0 (each port: one 4 MiB sealed memfd, netmap layout)",
        names.join(", ")
    );

    // b announces itself with a broadcast: everyone gets it, the switch learns b.
    ports[1].1.send(&frame(MacAddr::BROADCAST, mb, 60), 1);
    forward(&mut reg);
    println!(
        "broadcast from b (02:00:00:00:00:0b): a got {}, c got {}",
        ports[0].1.drain(),
        ports[2].1.drain()
    );
    // a sends unicast to b: only b gets it.
    ports[0].1.send(&frame(mb, ma, 60), 10);
    forward(&mut reg);
    println!(
        "10 unicast frames a -> b: b got {}, c got {} (learned, not flooded)",
        ports[1].1.drain(),
        ports[2].1.drain()
    );
    let sw = &reg.switch("vale0").expect("switch").switch;
    println!("\nvale0 forwarding table:");
    for e in sw
        .lookup()
        .table()
        .map(|t| t.rows(now()))
        .unwrap_or_default()
    {
        println!(
            "  {}  port {} ({})  age {} s",
            e.mac,
            e.port,
            sw.port(e.port).map_or("?", |p| p.name()),
            e.age_secs
        );
    }

    // b stops reading: its ring fills and the switch drops, counting why.
    for _ in 0..3 {
        ports[0].1.send(&frame(mb, ma, 60), 1000);
        forward(&mut reg);
    }
    let sw = &reg.switch("vale0").expect("switch").switch;
    let sb = sw.port(ports[1].0.port).expect("b").stats();
    println!(
        "\nb asleep, a sends 3000: b's ring holds {}, dropped ring_full = {}",
        sb.rx_packets - 10,
        sb.drop_count(DropReason::RingFull)
    );
    ports[1].1.drain();

    // One second of a -> b at full speed, for each frame size.
    for len in [60usize, 1514] {
        ports[0].1.prefill(&frame(mb, ma, len));
        let start = Instant::now();
        let mut delivered = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            ports[0].1.push(512);
            forward(&mut reg);
            delivered += ports[1].1.drain() as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "a -> b {len:>4}-byte frames: {:.3} Mpps ({:.3} Gbps) in {:.2} s, sender, switch and receiver on one core",
            delivered as f64 / secs / 1e6,
            delivered as f64 * len as f64 * 8.0 / secs / 1e9,
            secs
        );
    }
    println!("\nper-port counters:");
    let sw = &reg.switch("vale0").expect("switch").switch;
    for (id, p) in sw.ports() {
        let s = p.stats();
        println!(
            "  {:<8} port {id}: tx {:>10} rx {:>10} drops: ring_full {} no_dest {}",
            p.name(),
            s.tx_packets,
            s.rx_packets,
            s.drop_count(DropReason::RingFull),
            s.drop_count(DropReason::NoDest)
        );
    }
    for (key, _) in ports {
        reg.close(key).expect("close");
    }
    println!(
        "closed all ports: switch vale0 exists = {}",
        reg.switch("vale0").is_some()
    );
}
