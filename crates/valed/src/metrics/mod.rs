//! Prometheus metrics: what a scrape reads, and the text it gets (exposition format
//! 0.0.4, written by hand: `promtool check metrics` lints it, and it needs no crate).
//!
//! A scrape never takes a lane's lock. It reads a [`Snapshot`] that the control thread
//! republishes whenever its port table or host ports change: names and the `Arc`s of
//! the counter blocks the forwarders publish into (relaxed atomics, one writer each;
//! the same blocks `vale-ctl stats` and `list` read). The forwarding threads' own
//! counters and their switches' learning-table counters come from each lane's
//! [`LaneStats`], which the forwarder publishes without ever waiting for a reader.
//!
//! - `http`: the tiny HTTP/1.1 server on its own thread.

pub mod http;

use crate::lane::LaneStats;
use crate::port::PortCounters as HostCounters;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use vale_switch::{DropReason, PortCounters};

/// One switch port as a scrape sees it.
pub struct PortRow {
    pub switch: String,
    pub port: String,
    /// `client` (an application's port), `monitor`, or the kind of the host port
    /// attached as it (`tap`, `nic`, `vhost-user`, ...).
    pub kind: String,
    pub counters: Arc<PortCounters>,
}

/// One host port (a port valed drives: TAP, interface, VM, memif).
pub struct HostRow {
    pub name: String,
    pub kind: String,
    pub counters: Arc<HostCounters>,
}

/// The ports that exist, as of the control thread's last change.
#[derive(Default)]
pub struct Snapshot {
    pub ports: Vec<PortRow>,
    pub hosts: Vec<HostRow>,
}

/// What the control thread shares with the metrics server.
pub struct Board {
    snapshot: Mutex<Arc<Snapshot>>,
    lanes: Vec<Arc<LaneStats>>,
}

impl Board {
    pub fn new(lanes: Vec<Arc<LaneStats>>) -> Board {
        Board {
            snapshot: Mutex::new(Arc::new(Snapshot::default())),
            lanes,
        }
    }

    /// The control thread: these are the ports now.
    pub fn publish(&self, s: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }

    /// The ports now (the lock is held only to clone an `Arc`).
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The whole scrape, in the text format.
    pub fn render(&self) -> String {
        let snap = self.snapshot();
        let mut t = Text::default();
        t.family(
            "vale_build_info",
            "gauge",
            "valed's version, as a label; always 1.",
        );
        t.sample(&[("version", env!("CARGO_PKG_VERSION"))], 1);
        render_ports(&mut t, &snap.ports);
        render_tables(&mut t, &self.lanes, &snap.ports);
        render_threads(&mut t, &self.lanes);
        render_hosts(&mut t, &snap.hosts);
        t.out
    }
}

fn render_ports(t: &mut Text, ports: &[PortRow]) {
    let stats: Vec<_> = ports.iter().map(|p| p.counters.snapshot()).collect();
    let labels = |p: &PortRow| {
        [
            ("switch", p.switch.clone()),
            ("port", p.port.clone()),
            ("kind", p.kind.clone()),
        ]
    };
    type Get = fn(&vale_switch::PortStats) -> u64;
    let families: [(&str, &str, Get); 5] = [
        (
            "vale_port_tx_packets_total",
            "Frames the port's clients sent into the switch (read from its TX rings, whatever became of them).",
            |s| s.tx_packets,
        ),
        (
            "vale_port_tx_bytes_total",
            "Bytes of the frames the port sent that had a destination.",
            |s| s.tx_bytes,
        ),
        (
            "vale_port_rx_packets_total",
            "Frames the switch delivered into the port's RX rings.",
            |s| s.rx_packets,
        ),
        (
            "vale_port_rx_bytes_total",
            "Bytes of the frames delivered into the port's RX rings.",
            |s| s.rx_bytes,
        ),
        (
            "vale_port_ring_resets_total",
            "Times a ring of the port was reset because its client broke the ring protocol.",
            |s| s.ring_resets,
        ),
    ];
    if ports.is_empty() {
        return;
    }
    for (name, help, get) in families {
        t.family(name, "counter", help);
        for (p, s) in ports.iter().zip(&stats) {
            t.sample(&labels(p), get(s));
        }
    }
    t.family(
        "vale_port_drops_total",
        "counter",
        "Frames (or destination copies of frames) dropped, by reason: runt, bad_buf, bad_len, bad_frag and no_dest on the sending port; ring_full, oversize, bad_rx_buf, bad_offload and tx_error on the destination.",
    );
    for (p, s) in ports.iter().zip(&stats) {
        let [a, b, c] = labels(p);
        for r in DropReason::ALL {
            let reason = ("reason", r.name().to_string());
            t.sample(&[a.clone(), b.clone(), c.clone(), reason], s.drop_count(r));
        }
    }
    t.family(
        "vale_switch_ports",
        "gauge",
        "Ports of the switch, monitors included.",
    );
    let mut per_switch: Vec<(&str, u64)> = Vec::new();
    for p in ports {
        match per_switch.iter_mut().find(|(s, _)| *s == p.switch) {
            Some((_, n)) => *n += 1,
            None => per_switch.push((&p.switch, 1)),
        }
    }
    for (s, n) in per_switch {
        t.sample(&[("switch", s)], n);
    }
}

/// What each learning-table counter means; a lookup with other counters gets a
/// generic help line.
fn table_help(name: &str) -> &'static str {
    match name {
        "learned" => "Addresses the switch learned.",
        "moves" => "Learned addresses seen again behind another port.",
        "refused" => "New addresses not learned because their bucket was full of live entries.",
        "aged" => "Learned addresses forgotten after --fdb-max-age seconds unseen.",
        "flushed" => "Learned addresses forgotten because their port left.",
        _ => "A counter of the switch's address table.",
    }
}

/// Learning-table counters per switch, as the forwarders last published them (at most
/// about a second old). Only switches that still have ports are shown.
fn render_tables(t: &mut Text, lanes: &[Arc<LaneStats>], ports: &[PortRow]) {
    let mut tables = Vec::new();
    for l in lanes {
        let snap = l.tables.lock().unwrap_or_else(|p| p.into_inner()).clone();
        tables.extend(snap);
    }
    tables.retain(|s| ports.iter().any(|p| p.switch == s.switch));
    let mut names: Vec<&'static str> = Vec::new();
    for s in &tables {
        for (n, _) in &s.counters {
            if !names.contains(n) {
                names.push(n);
            }
        }
    }
    for n in names {
        let safe: String = n
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        if n == "entries" {
            t.family(
                "vale_fdb_entries",
                "gauge",
                "Addresses in the switch's learning table.",
            );
        } else {
            let name = format!("vale_fdb_{safe}_total");
            t.family(&name, "counter", table_help(n));
        }
        for s in &tables {
            if let Some((_, v)) = s.counters.iter().find(|(m, _)| *m == n) {
                t.sample(&[("switch", s.switch.as_str())], *v);
            }
        }
    }
}

fn render_threads(t: &mut Text, lanes: &[Arc<LaneStats>]) {
    let id: Vec<String> = (0..lanes.len()).map(|i| i.to_string()).collect();
    t.family(
        "vale_thread_busy_seconds_total",
        "counter",
        "Seconds the forwarding thread was awake (forwarding or polling), not asleep in epoll.",
    );
    for (i, l) in lanes.iter().enumerate() {
        t.sample_f64(&[("thread", id[i].as_str())], l.busy_secs());
    }
    type Get = fn(&LaneStats) -> u64;
    let families: [(&str, &str, Get); 2] = [
        (
            "vale_thread_passes_total",
            "Forwarding passes over the thread's switches that moved frames.",
            |l| l.passes.load(std::sync::atomic::Ordering::Relaxed),
        ),
        (
            "vale_thread_wakeups_total",
            "Times the forwarding thread slept in epoll and woke up.",
            |l| l.wakeups.load(std::sync::atomic::Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in families {
        t.family(name, "counter", help);
        for (i, l) in lanes.iter().enumerate() {
            t.sample(&[("thread", id[i].as_str())], get(l));
        }
    }
}

fn render_hosts(t: &mut Text, hosts: &[HostRow]) {
    if hosts.is_empty() {
        return;
    }
    let stats: Vec<_> = hosts.iter().map(|h| h.counters.snapshot()).collect();
    let labels = |h: &HostRow| [("host", h.name.clone()), ("kind", h.kind.clone())];
    type Get = fn(&vale::proto::HostCounters) -> u64;
    let families: [(&str, &str, Get); 5] = [
        (
            "vale_host_port_in_packets_total",
            "Frames from the host port's peer (interface, VM, memif or QEMU socket) into its switch port.",
            |c| c.from_host,
        ),
        (
            "vale_host_port_in_bytes_total",
            "Bytes of the frames from the host port's peer into its switch port.",
            |c| c.from_host_bytes,
        ),
        (
            "vale_host_port_out_packets_total",
            "Frames from the switch out to the host port's peer.",
            |c| c.to_host,
        ),
        (
            "vale_host_port_out_bytes_total",
            "Bytes of the frames from the switch out to the host port's peer.",
            |c| c.to_host_bytes,
        ),
        (
            "vale_host_port_peer_disconnects_total",
            "memif peers that went away, or were cut off, after connecting (not valed removing the port).",
            |c| c.peer_disconnects,
        ),
    ];
    for (name, help, get) in families {
        t.family(name, "counter", help);
        for (h, s) in hosts.iter().zip(&stats) {
            t.sample(&labels(h), get(s));
        }
    }
    let errors: [(&str, Get); 17] = [
        ("truncated", |c| c.truncated),
        ("write_errors", |c| c.write_errors),
        ("read_errors", |c| c.read_errors),
        ("bad_offload", |c| c.bad_offload),
        ("kernel_drops", |c| c.kernel_drops),
        ("no_peer", |c| c.no_peer),
        ("bad_desc", |c| c.bad_desc),
        ("chain_too_long", |c| c.chain_too_long),
        ("memory_faults", |c| c.memory_faults),
        ("too_big", |c| c.too_big),
        ("replica_drops", |c| c.replica_drops),
        ("vxlan_too_short", |c| c.vxlan_too_short),
        ("vxlan_no_i_flag", |c| c.vxlan_no_i_flag),
        ("vxlan_reserved", |c| c.vxlan_reserved),
        ("vxlan_foreign_vni", |c| c.vxlan_foreign_vni),
        ("vxlan_queue_full", |c| c.vxlan_queue_full),
        ("vxlan_tagged_mapped", |c| c.vxlan_tagged_mapped),
    ];
    t.family(
        "vale_host_port_errors_total",
        "counter",
        "Errors and losses between a host port and its peer, by kind (the counters of vale-ctl list).",
    );
    for (h, s) in hosts.iter().zip(&stats) {
        let [a, b] = labels(h);
        for (e, get) in errors {
            t.sample(&[a.clone(), b.clone(), ("error", e.to_string())], get(s));
        }
    }
    t.family(
        "vale_host_port_gone",
        "gauge",
        "1 if the host port's interface was deleted under it.",
    );
    for h in hosts {
        let gone = h.counters.gone.load(std::sync::atomic::Ordering::Relaxed);
        t.sample(&labels(h), u64::from(gone));
    }
}

/// The text format, a family at a time: `# HELP` and `# TYPE` name the samples.
#[derive(Default)]
struct Text {
    out: String,
    family: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self.family = name.to_string();
    }

    fn labels<K: AsRef<str>, V: AsRef<str>>(&mut self, labels: &[(K, V)]) {
        self.out.push_str(&self.family.clone());
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k.as_ref());
            self.out.push_str("=\"");
            escape_label(&mut self.out, v.as_ref());
            self.out.push('"');
        }
        self.out.push('}');
    }

    fn sample<K: AsRef<str>, V: AsRef<str>>(&mut self, labels: &[(K, V)], v: u64) {
        self.labels(labels);
        let _ = writeln!(self.out, " {v}");
    }

    fn sample_f64<K: AsRef<str>, V: AsRef<str>>(&mut self, labels: &[(K, V)], v: f64) {
        self.labels(labels);
        let _ = writeln!(self.out, " {v}");
    }
}

/// A label value as the text format quotes it: `\`, `"` and newlines escaped.
fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut t = Text::default();
        t.family("vale_x_total", "counter", "a \\ b\nc");
        t.sample(&[("port", "a\"b\\c\nd")], 7);
        assert_eq!(
            t.out,
            "# HELP vale_x_total a \\\\ b\\nc\n# TYPE vale_x_total counter\n\
             vale_x_total{port=\"a\\\"b\\\\c\\nd\"} 7\n"
        );
    }

    /// The forwarder holds its lane's lock for as long as it likes: a scrape is answered
    /// anyway, with the lane's thread counters.
    #[test]
    fn a_scrape_is_answered_while_the_forwarder_holds_its_lock() {
        use crate::lane::{Lane, LaneState};
        use rustix::event::{EventfdFlags, epoll};
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let limits = vale_switch::Limits::default();
        let lane = Arc::new(Lane::new(
            LaneState::new(vale_switch::Registry::new(limits)),
            ep,
            wake,
        ));
        let board = Arc::new(Board::new(vec![lane.stats.clone()]));
        let held = lane.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let b = board.clone();
        std::thread::spawn(move || tx.send(b.render()).unwrap());
        let text = rx.recv_timeout(std::time::Duration::from_secs(5));
        drop(held);
        let text = text.expect("a scrape while the lane's lock is held");
        assert!(
            text.contains("vale_thread_passes_total{thread=\"0\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn every_drop_reason_is_a_sample_of_one_family() {
        let c = Arc::new(PortCounters::default());
        let board = Board::new(Vec::new());
        board.publish(Snapshot {
            ports: vec![PortRow {
                switch: "vale0".into(),
                port: "vale0:a".into(),
                kind: "client".into(),
                counters: c,
            }],
            hosts: Vec::new(),
        });
        let text = board.render();
        let drops: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("vale_port_drops_total{"))
            .collect();
        assert_eq!(drops.len(), DropReason::ALL.len(), "{text}");
        assert!(drops[0].contains("reason=\"ring_full\"") && drops[0].ends_with(" 0"));
        assert_eq!(
            text.matches("# TYPE vale_port_drops_total counter").count(),
            1
        );
        assert!(text.contains("vale_build_info{version=\""));
        assert!(text.contains("vale_switch_ports{switch=\"vale0\"} 1"));
    }
}
