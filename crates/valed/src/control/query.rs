//! `vale-ctl list`, `stats`, `fdb` and `settings`: a snapshot of the lanes' switches
//! is taken first, then rendered by plain functions (tested here without a daemon).

use super::ports::PortTable;
use crate::error::CtlError;
use crate::settings::Settings;
use std::collections::BTreeMap;
use vale::proto::{
    self, FdbRow, Geometry, HostInfo, PortStats as StatsRow, PortSummary, Response, SwitchInfo,
};
use vale_switch::{DropReason, PortStats};

/// One port of a switch as a query sees it.
#[derive(Debug, Clone)]
pub struct PortSnap {
    pub name: String,
    pub index: u16,
    pub geometry: Geometry,
    /// Open connections holding it.
    pub clients: u32,
    pub stats: PortStats,
}

/// One switch and its ports (monitors last).
#[derive(Debug, Clone)]
pub struct SwitchSnap {
    pub name: String,
    /// Display index, unique across lanes (`bridge_idx`).
    pub index: usize,
    pub batch: usize,
    pub ports: Vec<PortSnap>,
}

/// Every switch of every lane, sorted by display index, from the port table's board:
/// no lane's lock is taken, the forwarders go on.
pub fn snapshot(ports: &PortTable, batch: usize) -> Vec<SwitchSnap> {
    let mut out: Vec<SwitchSnap> = Vec::new();
    for (lane, key, e) in ports.board() {
        let index = ports.bridge_idx(lane, key.switch);
        let port = PortSnap {
            name: e.name.clone(),
            index: key.port.0,
            geometry: e.geometry,
            clients: e.clients,
            stats: e.counters.snapshot(),
        };
        match out.iter_mut().find(|s| s.index == index) {
            Some(s) => s.ports.push(port),
            None => out.push(SwitchSnap {
                name: e.switch.clone(),
                index,
                batch,
                ports: vec![port],
            }),
        }
    }
    for s in &mut out {
        // Ports by index, monitors (`vale0:a/t`) after them.
        s.ports.sort_by_key(|p| (p.name.contains('/'), p.index));
    }
    out.sort_by_key(|s| s.index);
    out
}

/// The protocol's counters of one port (the engine's, drops by reason name).
pub fn counters(s: &PortStats) -> proto::Counters {
    proto::Counters {
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        forwarded: s.forwarded,
        copies: s.copies,
        copies_dropped: s.copies_dropped,
        ring_resets: s.ring_resets,
        drops: DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), s.drop_count(*r)))
            .collect(),
    }
}

/// `vale-ctl list`: switches with their ports, and the host ports.
pub fn list(switches: &[SwitchSnap], hosts: Vec<HostInfo>) -> Response {
    Response::List {
        switches: switches
            .iter()
            .map(|s| SwitchInfo {
                name: s.name.clone(),
                index: s.index,
                bridge_batch: s.batch,
                ports: s
                    .ports
                    .iter()
                    .map(|p| PortSummary {
                        name: p.name.clone(),
                        index: p.index,
                        geometry: p.geometry,
                        clients: p.clients,
                    })
                    .collect(),
            })
            .collect(),
        hosts,
    }
}

/// `vale-ctl stats [PORT]`: every port's counters, or one port's.
pub fn stats(switches: &[SwitchSnap], port: Option<&str>) -> Result<Response, CtlError> {
    let ports: Vec<StatsRow> = switches
        .iter()
        .flat_map(|s| s.ports.iter().map(move |p| (s, p)))
        .filter(|(_, p)| port.is_none_or(|n| n == p.name))
        .map(|(s, p)| StatsRow {
            name: p.name.clone(),
            switch: s.name.clone(),
            index: p.index,
            counters: counters(&p.stats),
        })
        .collect();
    match port {
        Some(n) if ports.is_empty() => Err(CtlError::NotFound(format!(
            "no port `{}` is open (see `vale-ctl list`)",
            n.escape_default()
        ))),
        _ => Ok(Response::Stats { ports }),
    }
}

/// `vale-ctl fdb SWITCH`: the switch's learned addresses and the table's counters.
pub fn fdb(ports: &PortTable, switch: &str) -> Result<Response, CtlError> {
    let missing = || {
        CtlError::NotFound(format!(
            "no switch `{}` exists (see `vale-ctl list`)",
            switch.escape_default()
        ))
    };
    let lane = ports
        .lanes()
        .iter()
        .find(|l| l.lock_ctl().registry.switch(switch).is_some())
        .ok_or_else(missing)?;
    let st = lane.lock_ctl();
    let now = lane.now();
    let e = st.registry.switch(switch).ok_or_else(missing)?;
    let table = e.switch.lookup().table();
    let entries = table
        .map(|t| t.rows(now))
        .unwrap_or_default()
        .into_iter()
        .map(|r| FdbRow {
            mac: r.mac.to_string(),
            port: e
                .switch
                .port(r.port)
                .map_or_else(|| "?".into(), |p| p.name().to_string()),
            index: r.port.0,
            age_secs: r.age_secs,
        })
        .collect();
    let counters: BTreeMap<String, u64> = table
        .map(|t| t.counters())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, v)| (name.to_string(), v))
        .collect();
    Ok(Response::Fdb {
        switch: e.name.clone(),
        entries,
        counters,
    })
}

/// `vale-ctl settings`: every setting by its flag's name.
pub fn settings(s: &Settings, threads: usize) -> Response {
    let l = &s.limits;
    let g = l.default_geometry;
    let settings = BTreeMap::from([
        ("socket".to_string(), s.socket.display().to_string()),
        ("socket_mode".to_string(), format!("{:04o}", s.socket_mode)),
        ("max_switches".to_string(), l.max_switches.to_string()),
        ("max_ports".to_string(), l.max_ports.to_string()),
        ("max_rings".to_string(), l.max_rings.to_string()),
        ("max_slots".to_string(), l.max_slots.to_string()),
        ("max_buf_size".to_string(), l.max_buf_size.to_string()),
        ("max_extra_bufs".to_string(), l.max_extra_bufs.to_string()),
        ("pipes".to_string(), l.default_geometry.pipes.to_string()),
        ("max_clients".to_string(), s.max_clients.to_string()),
        (
            "max_clients_per_uid".to_string(),
            s.max_clients_per_uid.to_string(),
        ),
        (
            "max_ports_per_uid".to_string(),
            s.max_ports_per_uid.to_string(),
        ),
        (
            "max_port_memory_mib".to_string(),
            s.max_port_memory_mib.to_string(),
        ),
        (
            "max_port_memory_per_uid_mib".to_string(),
            s.port_memory_per_uid_mib().to_string(),
        ),
        (
            "share".to_string(),
            s.shared
                .iter()
                .map(|x| x.spec.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "handshake_timeout_s".to_string(),
            s.handshake_timeout_s.to_string(),
        ),
        ("max_name_len".to_string(), l.max_name_len.to_string()),
        ("bridge_batch".to_string(), l.batch.to_string()),
        ("rings".to_string(), g.tx_rings.to_string()),
        ("slots".to_string(), g.tx_slots.to_string()),
        ("buf_size".to_string(), g.buf_size.to_string()),
        ("fdb_size".to_string(), l.fdb.capacity.to_string()),
        ("fdb_max_age".to_string(), l.fdb.max_age_secs.to_string()),
        ("verbose".to_string(), s.verbose.to_string()),
        ("busy_poll_us".to_string(), s.busy_poll_us.to_string()),
        ("threads".to_string(), threads.to_string()),
        (
            "cpus".to_string(),
            s.cpus
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]);
    Response::Settings { settings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Vec<SwitchSnap> {
        let geometry = Geometry {
            tx_rings: 1,
            rx_rings: 1,
            tx_slots: 1024,
            rx_slots: 1024,
            buf_size: 2112,
            extra_bufs: 0,
            pipes: 0,
        };
        let port = |name: &str, index, tx| {
            let mut stats = PortStats {
                tx_packets: tx,
                forwarded: tx - 1,
                ..Default::default()
            };
            stats.drops[DropReason::NoDest as usize] = 1;
            PortSnap {
                name: name.into(),
                index,
                geometry,
                clients: 1,
                stats,
            }
        };
        vec![
            SwitchSnap {
                name: "vale0".into(),
                index: 0,
                batch: 1024,
                ports: vec![port("vale0:a", 0, 10), port("vale0:b", 1, 20)],
            },
            SwitchSnap {
                name: "vale1".into(),
                index: 1,
                batch: 64,
                ports: vec![port("vale1:a", 0, 5)],
            },
        ]
    }

    #[test]
    fn stats_of_all_ports_or_one_and_a_clear_error_for_none() {
        let s = snap();
        let Ok(Response::Stats { ports }) = stats(&s, None) else {
            panic!()
        };
        assert_eq!(ports.len(), 3);
        let Ok(Response::Stats { ports }) = stats(&s, Some("vale0:b")) else {
            panic!()
        };
        assert_eq!(ports.len(), 1);
        let c = &ports[0].counters;
        assert_eq!((c.tx_packets, c.forwarded), (20, 19));
        assert_eq!(c.drops["no_dest"], 1);
        assert_eq!(c.drops.len(), DropReason::ALL.len(), "every reason named");
        let e = stats(&s, Some("vale0:\u{7}")).unwrap_err();
        assert_eq!(e.kind(), proto::ErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            "no port `vale0:\\u{7}` is open (see `vale-ctl list`)"
        );
    }

    #[test]
    fn list_keeps_switch_order_batches_and_clients() {
        let Response::List { switches, hosts } = list(&snap(), Vec::new()) else {
            panic!()
        };
        assert!(hosts.is_empty());
        let names: Vec<_> = switches.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["vale0", "vale1"]);
        assert_eq!(switches[1].bridge_batch, 64);
        assert_eq!(switches[0].ports[1].name, "vale0:b");
        assert_eq!(switches[0].ports[1].clients, 1);
    }

    /// The board is what `list` and `stats` read: a lane whose forwarder holds its lock
    /// for as long as it likes does not hold them up, and the counters are live.
    #[test]
    fn stats_are_read_while_the_forwarder_holds_its_lock() {
        use crate::lane::{Lane, LaneState};
        use rustix::event::{EventfdFlags, epoll};
        use std::sync::Arc;
        let limits = vale_switch::Limits::default();
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let wake = rustix::event::eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        let lane = Arc::new(Lane::new(
            LaneState::new(vale_switch::Registry::new(limits)),
            ep,
            wake,
        ));
        let quota = super::super::ports::Quota::of(&Settings::default());
        let mut table = PortTable::new(vec![lane.clone()], limits, quota);
        let g = vale_abi::PortGeometry {
            tx_slots: 64,
            rx_slots: 64,
            ..Default::default()
        };
        let _a = table.acquire("vale0:a", g).unwrap();
        let _b = table.acquire("vale0:b", g).unwrap();
        let held = lane.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let snap = snapshot(&table, 1024);
                tx.send(stats(&snap, None).map(|r| match r {
                    Response::Stats { ports } => ports.len(),
                    _ => 0,
                }))
                .unwrap();
            });
            let got = rx.recv_timeout(std::time::Duration::from_secs(5));
            drop(held);
            assert_eq!(
                got.expect("stats answered while the lock was held")
                    .unwrap(),
                2
            );
        });
    }

    #[test]
    fn settings_name_every_flag() {
        let Response::Settings { settings: m } = settings(&Settings::default(), 3) else {
            panic!()
        };
        assert_eq!(m["threads"], "3");
        assert_eq!(m["socket_mode"], "0660");
        assert_eq!(m["buf_size"], "2112");
        assert_eq!(m["cpus"], "");
        assert_eq!(m["max_extra_bufs"], "4096");
        assert_eq!(m["pipes"], "2");
        assert_eq!(m["max_clients"], "1024");
        assert_eq!(m["max_ports_per_uid"], "64");
        assert_eq!(m["share"], "");
        assert_eq!(m.len(), 27);
    }
}
