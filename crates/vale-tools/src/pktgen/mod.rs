//! pkt-gen: netmap's traffic generator and sink, over the userspace VALE switch.
//!
//! Functions (`-f`): `tx`, `rx`, `txseq`/`rxseq` (a big-endian sequence number in each
//! frame, gaps reported), `ping`/`pong` (RTT). Like netmap's pkt-gen, `tx` writes its
//! frame into every slot once and then only moves `head`, so it measures the switch,
//! not frame building; it prints netmap's report line every `-T` ms and a summary.

pub mod frame;
mod pace;

use clap::Parser;
use frame::{Addrs, SEQ_OFF, TS_OFF};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vale::{Interest, OpenOptions, Port};
use vale_abi::layout::{NS_MOREFRAG, NetmapSlot};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "pkt-gen",
    version,
    about = "netmap's pkt-gen for the userspace VALE switch",
    after_help = "Examples:\n  \
        pkt-gen -i vale0:b -f rx &          # a receiver on port b of switch vale0...\n  \
        pkt-gen -i vale0:a -f tx -l 1514    # ...and a sender on port a\n  \
        pkt-gen -i vale0:a -f tx -n 1000000 -R 100000 -D 02:00:00:00:00:01\n  \
        pkt-gen -i vale0:pong -f pong & pkt-gen -i vale0:ping -f ping -n 1000"
)]
pub struct Options {
    /// Port to use, e.g. vale0:a (netmap's `@conf:rings=N,slots=N` accepted)
    #[arg(short = 'i', value_name = "PORT")]
    pub port: String,
    /// Function: tx, rx, txseq, rxseq, ping, pong
    #[arg(short = 'f', default_value = "tx")]
    pub function: String,
    /// Frame length in bytes, without CRC
    #[arg(short = 'l', default_value_t = 60)]
    pub len: usize,
    /// Packets to send or receive (0 = until interrupted)
    #[arg(short = 'n', default_value_t = 0)]
    pub count: u64,
    /// Burst: packets per sync
    #[arg(short = 'b', default_value_t = 512)]
    pub burst: u32,
    /// Rate limit in packets per second (0 = none): batches of rate/4000 frames (at
    /// least 1, at most -b) at absolute deadlines, sleeping in between
    #[arg(short = 'R', default_value_t = 0)]
    pub rate: u64,
    /// Destination MAC [default: ff:ff:ff:ff:ff:ff, i.e. flood]
    #[arg(short = 'D', value_name = "MAC")]
    pub dst_mac: Option<String>,
    /// Source MAC [default: 02:00:00:00:00:NN from the port index]
    #[arg(short = 'S', value_name = "MAC")]
    pub src_mac: Option<String>,
    /// Source IP[:PORT]
    #[arg(short = 's', default_value = "10.0.0.1:1234")]
    pub src_ip: String,
    /// Destination IP[:PORT]
    #[arg(short = 'd', default_value = "10.1.0.1:1234")]
    pub dst_ip: String,
    /// Seconds to wait before starting (netmap: wait for link)
    #[arg(short = 'w', default_value_t = 0)]
    pub wait: u64,
    /// rx: exit when no traffic arrives for a second (after the first packet)
    #[arg(short = 'W')]
    pub exit_idle: bool,
    /// Report interval in milliseconds
    #[arg(short = 'T', default_value_t = 1000)]
    pub report_ms: u64,
    /// Fragments (slots) per packet, 1..=63
    #[arg(short = 'F', default_value_t = 1)]
    pub frags: u32,
    /// Stop after this many seconds (0 = no limit)
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Pin to this CPU (netmap's -a)
    #[arg(short = 'a', value_name = "CPU")]
    pub cpu: Option<usize>,
    /// ping/pong: spin on the ring instead of sleeping in poll() (lowest latency; burns
    /// the core; give each process its own core with taskset)
    #[arg(long)]
    pub busy: bool,
    /// tx: rewrite each frame's header as it goes out, with the next UDP source port
    /// (netmap's -z varies the source address and port at random; this counts the port
    /// up, so the frame needs no new checksum), as DPDK's txonly writes every header
    #[arg(short = 'z')]
    pub vary_src: bool,
    /// rx: read every byte of every frame received (and sum them), as a receiver that
    /// looks at its packets does; without it rx reads only the slots
    #[arg(long)]
    pub access: bool,
    /// valed's socket [default: as valed; VALE_SOCKET overrides]
    #[arg(long)]
    pub socket: Option<std::path::PathBuf>,
}

/// netmap's `norm()`: three decimals and a K/M/G/T unit, base 1000.
pub fn norm(x: f64) -> String {
    let units = ["", "K", "M", "G", "T"];
    let mut v = x;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.3} {}", units[u])
}

/// The once-per-interval report, in netmap's words.
struct Report {
    start: Instant,
    last: Instant,
    last_pkts: u64,
    last_bytes: u64,
    last_events: u64,
    interval: Duration,
    min_space: u32,
}

impl Report {
    fn new(interval: Duration) -> Report {
        let now = Instant::now();
        Report {
            start: now,
            last: now,
            last_pkts: 0,
            last_bytes: 0,
            last_events: 0,
            interval,
            min_space: 99999,
        }
    }

    fn tick(&mut self, pkts: u64, bytes: u64, events: u64) {
        let now = Instant::now();
        let dt = now - self.last;
        if dt < self.interval {
            return;
        }
        let us = dt.as_micros().max(1) as f64;
        let dp = (pkts - self.last_pkts) as f64;
        let db = (bytes - self.last_bytes) as f64;
        let de = (events - self.last_events).max(1) as f64;
        let t = now.duration_since(self.start).as_secs_f64();
        println!(
            "{:03}.{:06} main_thread [2661] {}pps ({}pkts {}bps in {} usec) {:.2} avg_batch {} min_space",
            (t as u64) % 1000,
            (t.fract() * 1e6) as u64,
            norm(dp * 1e6 / us),
            norm(dp),
            norm(db * 8.0 * 1e6 / us),
            us as u64,
            dp / de,
            self.min_space
        );
        self.last = now;
        self.last_pkts = pkts;
        self.last_bytes = bytes;
        self.last_events = events;
        self.min_space = 99999;
    }

    fn summary(&self, verb: &str, pkts: u64, bytes: u64, events: u64) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let each = bytes.checked_div(pkts).unwrap_or(0);
        println!(
            "{verb} {pkts} packets {bytes} bytes {events} events {each} bytes each in {secs:.2} seconds."
        );
        println!(
            "Speed: {}pps Bandwidth: {}bps (raw {}bps). Average batch: {:.2} pkts",
            norm(pkts as f64 / secs),
            norm(bytes as f64 * 8.0 / secs),
            norm((bytes + 24 * pkts) as f64 * 8.0 / secs),
            pkts as f64 / events.max(1) as f64
        );
    }
}

struct Ctx {
    opts: Options,
    port: Port,
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl Ctx {
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// Runs pkt-gen; returns the process exit code.
pub fn run(opts: Options, stop: Arc<AtomicBool>) -> Result<(), String> {
    if let Some(cpu) = opts.cpu {
        let mut set = rustix::thread::CpuSet::new();
        if cpu >= rustix::thread::CpuSet::MAX_CPU {
            return Err(format!("-a {cpu}: no such CPU"));
        }
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set)
            .map_err(|e| format!("-a {cpu}: cannot pin to that CPU: {e}"))?;
    }
    if !(1..=63).contains(&opts.frags) {
        return Err(format!(
            "-F {}: fragments must be between 1 and 63",
            opts.frags
        ));
    }
    if !(14..=65535).contains(&opts.len) {
        return Err(format!(
            "-l {}: frame length must be between 14 and 65535",
            opts.len
        ));
    }
    if opts.burst == 0 {
        return Err("-b 0: the burst must be at least 1".into());
    }
    let port = Port::open_with(
        &opts.port,
        &OpenOptions {
            socket: opts.socket.clone(),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let bs = port.geometry().buf_size as usize;
    if opts.len.div_ceil(opts.frags as usize) > bs {
        return Err(format!(
            "-l {} in {} fragment(s) does not fit {}-byte buffers; use -F {} or a port with larger buffers",
            opts.len,
            opts.frags,
            bs,
            opts.len.div_ceil(bs)
        ));
    }
    if opts.wait > 0 {
        std::thread::sleep(Duration::from_secs(opts.wait));
    }
    let deadline = (opts.duration > 0).then(|| Instant::now() + Duration::from_secs(opts.duration));
    let ctx = Ctx {
        opts,
        port,
        stop,
        deadline,
    };
    match ctx.opts.function.as_str() {
        "tx" => tx(&ctx, false),
        "txseq" => tx(&ctx, true),
        "rx" => rx(&ctx, false),
        "rxseq" => rx(&ctx, true),
        "ping" => ping(&ctx),
        "pong" => pong(&ctx),
        f => Err(format!(
            "-f {f}: unknown function; use tx, rx, txseq, rxseq, ping or pong"
        )),
    }
}

fn addrs(ctx: &Ctx) -> Result<Addrs, String> {
    let o = &ctx.opts;
    let dst_mac = match &o.dst_mac {
        Some(m) => frame::parse_mac(m)?,
        None => [0xff; 6],
    };
    let src_mac = match &o.src_mac {
        Some(m) => frame::parse_mac(m)?,
        None => {
            let i = ctx.port.index();
            [2, 0, 0, 0, (i >> 8) as u8, i as u8]
        }
    };
    Ok(Addrs {
        dst_mac,
        src_mac,
        src: frame::parse_ip_port(&o.src_ip, 1234)?,
        dst: frame::parse_ip_port(&o.dst_ip, 1234)?,
    })
}

/// Writes the frame's `k`-th fragment into slot `i`.
fn put(ring: &vale_abi::AppRing, i: u32, f: &[u8], frags: u32, k: u32) {
    let v = ring.view();
    let chunk = f.len().div_ceil(frags as usize);
    let part = &f[(k as usize * chunk).min(f.len())..((k as usize + 1) * chunk).min(f.len())];
    let s = v.read_slot(i);
    v.bufs().write(s.buf_idx, part);
    let flags = if k + 1 < frags { NS_MOREFRAG } else { 0 };
    v.write_slot(
        i,
        NetmapSlot {
            buf_idx: s.buf_idx,
            len: part.len() as u16,
            flags,
            ptr: 0,
        },
    );
}

fn tx(ctx: &Ctx, seq: bool) -> Result<(), String> {
    let o = &ctx.opts;
    let f = frame::build(&addrs(ctx)?, o.len);
    let a = addrs(ctx)?;
    println!(
        "Sending on {}: {} queues, 1 threads and 1 cpus.",
        ctx.port.name(),
        ctx.port.tx_rings().len()
    );
    println!(
        "{}.{}.{}.{} -> {}.{}.{}.{} ({} -> {})",
        a.src.0[0],
        a.src.0[1],
        a.src.0[2],
        a.src.0[3],
        a.dst.0[0],
        a.dst.0[1],
        a.dst.0[2],
        a.dst.0[3],
        mac_str(&a.src_mac),
        mac_str(&a.dst_mac)
    );
    let frags = o.frags;
    let simple = frags == 1 && !seq;
    if simple {
        for r in ctx.port.tx_rings() {
            for i in 0..r.num_slots() {
                put(r, i, &f, 1, 0);
            }
        }
    }
    let mut rep = Report::new(Duration::from_millis(o.report_ms));
    let (mut sent, mut events, mut seqno) = (0u64, 0u64, 0u32);
    let mut pacer = (o.rate > 0).then(|| pace::Pacer::new(o.rate, o.burst as u64, pace::now_ns()));
    // netmap's line: the batch per wake and the time between wakes.
    let (n, every) = pacer.as_ref().map_or((o.burst as u64, 0.0), |p| {
        (p.batch(), p.batch() as f64 / o.rate as f64)
    });
    println!("Sending {n} packets every  {every:.9} s");
    let mut buf = f.clone();
    // -z: the header that is rewritten into every frame, and its next source port.
    let mut hdr = f[..f.len().min(frame::HEADER_LEN)].to_vec();
    let mut sport = a.src.1;
    while !ctx.done() && (o.count == 0 || sent < o.count) {
        let mut want = o.burst as u64;
        if o.count > 0 {
            want = want.min(o.count - sent);
        }
        if let Some(p) = pacer.as_mut() {
            let now = pace::now_ns();
            let allowed = p.allowance(now);
            if allowed == 0 {
                pace::sleep_until(p.due());
                rep.tick(sent, sent * o.len as u64, events);
                continue;
            }
            want = want.min(allowed);
        }
        let mut progressed = false;
        for r in ctx.port.tx_rings() {
            let space = r.space();
            rep.min_space = rep.min_space.min(space);
            let pkts = (space / frags).min(want as u32);
            if pkts == 0 {
                continue;
            }
            if simple && o.vary_src {
                let v = r.view();
                let mut h = r.head();
                for _ in 0..pkts {
                    frame::set_src_port(&mut hdr, sport);
                    sport = sport.wrapping_add(1);
                    v.bufs().write(v.read_slot(h).buf_idx, &hdr);
                    h = vale_abi::ring::next(h, r.num_slots());
                }
            }
            if !simple {
                let mut h = r.head();
                for _ in 0..pkts {
                    if seq {
                        buf[SEQ_OFF..SEQ_OFF + 4].copy_from_slice(&seqno.to_be_bytes());
                        seqno = seqno.wrapping_add(1);
                    }
                    for k in 0..frags {
                        put(r, h, &buf, frags, k);
                        h = vale_abi::ring::next(h, r.num_slots());
                    }
                }
            }
            r.advance(pkts * frags);
            sent += pkts as u64;
            if let Some(p) = pacer.as_mut() {
                p.sent(pkts as u64);
            }
            want -= pkts as u64;
            events += 1;
            progressed = true;
            if want == 0 {
                break;
            }
        }
        ctx.port.txsync().map_err(|e| e.to_string())?;
        if !progressed {
            ctx.port
                .poll(Interest::TX, Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
        }
        rep.tick(sent, sent * o.len as u64, events);
    }
    // Like netmap: wait until the switch has taken everything (TX rings empty again).
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2)
        && ctx
            .port
            .tx_rings()
            .iter()
            .any(|r| r.space() + 1 < r.num_slots())
    {
        ctx.port.txsync().map_err(|e| e.to_string())?;
        let _ = ctx.port.poll(Interest::TX, Some(Duration::from_millis(10)));
    }
    rep.summary("Sent", sent, sent * o.len as u64, events);
    Ok(())
}

fn rx(ctx: &Ctx, seq: bool) -> Result<(), String> {
    let o = &ctx.opts;
    println!(
        "Receiving from {}: {} queues, 1 threads and 1 cpus.",
        ctx.port.name(),
        ctx.port.rx_rings().len()
    );
    let mut rep = Report::new(Duration::from_millis(o.report_ms));
    let (mut pkts, mut bytes, mut events) = (0u64, 0u64, 0u64);
    let mut last_rx: Option<Instant> = None;
    let mut expect: Option<u32> = None;
    let (mut gaps, mut printed) = (0u64, 0u32);
    let mut hdr = [0u8; SEQ_OFF + 4];
    let mut in_packet = false;
    // --access: each frame is copied out of its buffer and summed.
    let mut frame_buf = vec![0u8; ctx.port.geometry().buf_size as usize];
    let mut sum = 0u64;
    while !ctx.done() && (o.count == 0 || pkts < o.count) {
        let ready = ctx
            .port
            .poll(Interest::RX, Some(Duration::from_millis(100)))
            .map_err(|e| e.to_string())?;
        if ready {
            for r in ctx.port.rx_rings() {
                let space = r.space();
                if space == 0 {
                    continue;
                }
                let v = r.view();
                let mut h = r.head();
                for _ in 0..space {
                    let s = v.read_slot(h);
                    bytes += s.len as u64;
                    if o.access {
                        let n = (s.len as usize).min(frame_buf.len());
                        if v.bufs().read(s.buf_idx, &mut frame_buf[..n]) {
                            sum = vale_wire::checksum::word_sum(sum, &frame_buf[..n]);
                        }
                    }
                    if seq
                        && !in_packet
                        && v.bufs()
                            .read(s.buf_idx, &mut hdr[..(s.len as usize).min(SEQ_OFF + 4)])
                        && s.len as usize >= SEQ_OFF + 4
                    {
                        let got = u32::from_be_bytes([
                            hdr[SEQ_OFF],
                            hdr[SEQ_OFF + 1],
                            hdr[SEQ_OFF + 2],
                            hdr[SEQ_OFF + 3],
                        ]);
                        if let Some(e) = expect {
                            if got != e {
                                gaps += 1;
                                if printed < 10 {
                                    println!("Sequence GAP: exp {e} found {got}");
                                    printed += 1;
                                }
                            }
                        }
                        expect = Some(got.wrapping_add(1));
                    }
                    in_packet = s.flags & NS_MOREFRAG != 0;
                    if !in_packet {
                        pkts += 1;
                    }
                    h = vale_abi::ring::next(h, r.num_slots());
                }
                r.advance(space);
                events += 1;
            }
            ctx.port.rxsync().map_err(|e| e.to_string())?;
            last_rx = Some(Instant::now());
        } else if o.exit_idle && last_rx.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        rep.tick(pkts, bytes, events);
    }
    rep.summary("Received", pkts, bytes, events);
    if o.access {
        println!("Sum of the bytes read: {sum:#018x}");
    }
    if seq {
        println!("Sequence gaps: {gaps}");
    }
    Ok(())
}

fn mac_str(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn ping(ctx: &Ctx) -> Result<(), String> {
    let o = &ctx.opts;
    let mut f = frame::build(&addrs(ctx)?, o.len.max(TS_OFF + 8));
    let t0 = Instant::now();
    let mut rtts: Vec<u64> = Vec::new();
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let mut win: Vec<u64> = Vec::new();
    while !ctx.done() && (o.count == 0 || sent < o.count) {
        let seq = sent as u32;
        let ts = t0.elapsed().as_nanos() as u64;
        f[SEQ_OFF..SEQ_OFF + 4].copy_from_slice(&seq.to_be_bytes());
        f[TS_OFF..TS_OFF + 8].copy_from_slice(&ts.to_be_bytes());
        while !ctx.port.inject(&f) {
            ctx.port
                .poll(Interest::TX, Some(Duration::from_millis(100)))
                .map_err(|e| e.to_string())?;
        }
        ctx.port.txsync().map_err(|e| e.to_string())?;
        sent += 1;
        let wait_until = Instant::now() + Duration::from_secs(1);
        let mut got = false;
        while !got && Instant::now() < wait_until && !ctx.done() {
            wait_rx(ctx, wait_until.saturating_duration_since(Instant::now()))?;
            ctx.port.dispatch(0, |p| {
                if p.len() >= TS_OFF + 8 && p[SEQ_OFF..SEQ_OFF + 4] == seq.to_be_bytes() {
                    let sent_ts =
                        u64::from_be_bytes(p[TS_OFF..TS_OFF + 8].try_into().unwrap_or_default());
                    let rtt = (t0.elapsed().as_nanos() as u64).saturating_sub(sent_ts);
                    rtts.push(rtt);
                    win.push(rtt);
                    got = true;
                }
            });
            ctx.port.rxsync().map_err(|e| e.to_string())?;
        }
        if !got {
            lost += 1;
        }
        if last_report.elapsed() >= Duration::from_millis(o.report_ms) && !win.is_empty() {
            let min = win.iter().min().copied().unwrap_or(0);
            let av = win.iter().sum::<u64>() / win.len() as u64;
            println!("count {} RTT: min {min} av {av} ns", win.len());
            win.clear();
            last_report = Instant::now();
        }
    }
    if rtts.is_empty() {
        return Err(format!(
            "no replies to {sent} pings (is `pkt-gen -f pong` running on the switch?)"
        ));
    }
    rtts.sort_unstable();
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize];
    println!(
        "RTT over {} packets: min {} av {} ns; p50 {} p90 {} p99 {} max {} ns; lost {lost}",
        rtts.len(),
        rtts[0],
        rtts.iter().sum::<u64>() / rtts.len() as u64,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        rtts[rtts.len() - 1]
    );
    Ok(())
}

/// Waits until some RX ring holds a packet or `timeout` passes: in poll(), or with
/// `--busy` by spinning on the ring (no syscall, no wake-up).
fn wait_rx(ctx: &Ctx, timeout: Duration) -> Result<bool, String> {
    if !ctx.opts.busy {
        return ctx
            .port
            .poll(Interest::RX, Some(timeout))
            .map_err(|e| e.to_string());
    }
    let end = Instant::now() + timeout;
    loop {
        ctx.port.rxsync().map_err(|e| e.to_string())?;
        if ctx.port.rx_rings().iter().any(|r| r.space() > 0) {
            return Ok(true);
        }
        for _ in 0..64 {
            std::hint::spin_loop();
        }
        if Instant::now() >= end {
            return Ok(false);
        }
    }
}

fn pong(ctx: &Ctx) -> Result<(), String> {
    let o = &ctx.opts;
    let mut replied = 0u64;
    println!("Replying on {}", ctx.port.name());
    while !ctx.done() && (o.count == 0 || replied < o.count) {
        if !wait_rx(ctx, Duration::from_millis(100))? {
            continue;
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        ctx.port.dispatch(0, |p| {
            let mut r = p.to_vec();
            frame::swap_addrs(&mut r);
            out.push(r);
        });
        ctx.port.rxsync().map_err(|e| e.to_string())?;
        for r in out {
            while !ctx.port.inject(&r) {
                ctx.port
                    .poll(Interest::TX, Some(Duration::from_millis(100)))
                    .map_err(|e| e.to_string())?;
            }
            replied += 1;
        }
        ctx.port.txsync().map_err(|e| e.to_string())?;
    }
    println!("Replied to {replied} packets");
    Ok(())
}
