//! `vale-ctl list`, `stats`, `fdb` and `settings`. The first three answer a page at a
//! time: rows in a fixed order, as many as fit in the page's bytes, and a [`Cursor`] (the
//! last row's place) that the next page starts after, so valed keeps nothing between
//! pages. Ports are read from the port table's board (no lane's lock) only when a page
//! takes them; pages are rendered by plain functions (tested here without a daemon).

use super::ports::{BoardEntry, PortTable};
use crate::error::CtlError;
use crate::settings::Settings;
use std::collections::BTreeMap;
use vale::proto::{
    self, FdbRow, Geometry, HostInfo, PortStats as StatsRow, PortSummary, Response, SwitchInfo,
};
use vale_switch::{DropReason, MacAddr, PortId, PortStats};

/// Where a port sorts in `list` and `stats`: by switch (its display index), ports before
/// their monitors (`vale0:a/t`), then by port index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    pub switch: usize,
    pub monitor: bool,
    pub port: u16,
}

/// Where an `fdb` row sorts: by port, VLAN, address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbPlace {
    pub port: PortId,
    pub vlan: Option<u16>,
    pub mac: MacAddr,
}

/// Where a page ended: the `next` a page gives the client, which it sends back as the
/// `after` of the page it asks for next. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// `list`, `stats`: after this port.
    Port(Place),
    /// `list`: after this host port (the switches' ports are done).
    Host(String),
    /// `fdb`: after this row.
    Fdb(FdbPlace),
}

/// Bytes of a page kept for the longest cursor its `next` can hold (a host port's name
/// is at most 15 bytes, a port's place a few numbers).
const CURSOR_ROOM: usize = 64;

impl Cursor {
    pub fn encode(&self) -> String {
        match self {
            Cursor::Port(p) => format!("p.{}.{}.{}", p.switch, u8::from(p.monitor), p.port),
            Cursor::Host(name) => format!("h.{name}"),
            Cursor::Fdb(f) => format!(
                "f.{}.{}.{:x}",
                f.port.0,
                f.vlan.map_or_else(|| "-".to_string(), |v| v.to_string()),
                f.mac.to_u64()
            ),
        }
    }

    pub fn parse(s: &str) -> Result<Cursor, CtlError> {
        let bad = || {
            CtlError::BadRequest(format!(
                "page cursor `{}` is not one valed gave",
                vale_switch::quote_input(s)
            ))
        };
        if let Some(name) = s.strip_prefix("h.") {
            return Ok(Cursor::Host(name.to_string()));
        }
        let f: Vec<&str> = s.split('.').collect();
        match f[..] {
            ["p", switch, monitor, port] => Ok(Cursor::Port(Place {
                switch: switch.parse().map_err(|_| bad())?,
                monitor: match monitor {
                    "0" => false,
                    "1" => true,
                    _ => return Err(bad()),
                },
                port: port.parse().map_err(|_| bad())?,
            })),
            ["f", port, vlan, mac] => {
                let mac = u64::from_str_radix(mac, 16)
                    .ok()
                    .filter(|m| *m >> 48 == 0)
                    .ok_or_else(bad)?;
                Ok(Cursor::Fdb(FdbPlace {
                    port: PortId(port.parse().map_err(|_| bad())?),
                    vlan: match vlan {
                        "-" => None,
                        v => Some(v.parse().map_err(|_| bad())?),
                    },
                    mac: MacAddr::from_u64(mac),
                }))
            }
            _ => Err(bad()),
        }
    }
}

/// What a paged request asks for: where its page starts, and how many bytes it may have.
#[derive(Debug)]
pub struct PageAsk {
    pub after: Option<Cursor>,
    pub budget: usize,
    /// The client cannot ask for pages (protocol 2): the reply must be whole.
    whole: bool,
}

impl PageAsk {
    /// A request's `page` on a connection whose pages may have `page_bytes` and whose
    /// messages `max_msg` (what a protocol-2 reply gets in one).
    pub fn new(
        page: Option<proto::Page>,
        page_bytes: usize,
        max_msg: usize,
    ) -> Result<PageAsk, CtlError> {
        match page {
            None => Ok(PageAsk {
                after: None,
                budget: max_msg,
                whole: true,
            }),
            Some(p) if p.version != proto::VERSION => Err(CtlError::Version {
                client: p.version,
                daemon: proto::VERSION,
            }),
            Some(p) => Ok(PageAsk {
                after: p.after.as_deref().map(Cursor::parse).transpose()?,
                budget: page_bytes,
                whole: false,
            }),
        }
    }

    /// The answer to give: the page; to a client without pages, the error saying the
    /// reply does not fit in one message when it does not.
    pub fn answer(&self, what: &'static str, r: Response) -> Result<Response, CtlError> {
        if self.whole && r.next_page().is_some() {
            return Err(CtlError::Unpaged {
                what,
                daemon: proto::VERSION,
            });
        }
        Ok(r)
    }

    fn wrong(&self, what: &str) -> CtlError {
        let c = self.after.as_ref().map(Cursor::encode).unwrap_or_default();
        CtlError::BadRequest(format!(
            "page cursor `{}` is not one of a `{what}` reply",
            vale_switch::quote_input(&c)
        ))
    }

    /// Where a `list` or `stats` page starts among the ports (`None`: at the first), and
    /// whether they are all listed already (a `list` page after a host port).
    pub fn port_after(&self, what: &str) -> Result<(Option<Place>, bool), CtlError> {
        match &self.after {
            None => Ok((None, false)),
            Some(Cursor::Port(p)) => Ok((Some(*p), false)),
            Some(Cursor::Host(_)) if what == "list" => Ok((None, true)),
            Some(_) => Err(self.wrong(what)),
        }
    }

    /// Where a `list` page starts among the host ports.
    pub fn host_after(&self) -> Option<&str> {
        match &self.after {
            Some(Cursor::Host(h)) => Some(h),
            _ => None,
        }
    }

    /// Where an `fdb` page starts.
    pub fn fdb_after(&self) -> Result<Option<FdbPlace>, CtlError> {
        match &self.after {
            None => Ok(None),
            Some(Cursor::Fdb(f)) => Ok(Some(*f)),
            Some(_) => Err(self.wrong("fdb")),
        }
    }
}

/// The bytes of a page left for rows. The first row always goes in (a page that took
/// none would never end), so a page is over its budget only by one row larger than it.
struct Room {
    left: usize,
    rows: usize,
}

impl Room {
    /// `budget` bytes in all, of which `envelope` are not rows.
    fn new(budget: usize, envelope: usize) -> Room {
        Room {
            left: budget.saturating_sub(envelope + CURSOR_ROOM),
            rows: 0,
        }
    }

    /// Whether a row of `bytes` fits; if it does, it takes its room (and a comma's).
    fn take(&mut self, bytes: usize) -> bool {
        let need = bytes + 1;
        if self.rows > 0 && need > self.left {
            return false;
        }
        self.left = self.left.saturating_sub(need);
        self.rows += 1;
        true
    }
}

/// How many bytes `v` takes in JSON, written nowhere.
fn json_len(v: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    // Writing to a counter cannot fail, nor can our types' serialisation.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// One port as `list` and `stats` see it.
#[derive(Debug, Clone)]
pub struct PortSnap {
    pub place: Place,
    /// Its switch's name.
    pub switch: String,
    pub name: String,
    pub geometry: Geometry,
    /// Open connections holding it.
    pub clients: u32,
    pub stats: PortStats,
}

/// The open ports after `after`, in listing order, from the port table's board: no
/// lane's lock is taken, the forwarders go on. Use [`snap`] on those a page takes.
pub fn ports_after(
    ports: &PortTable,
    after: Option<Place>,
) -> impl Iterator<Item = (Place, &BoardEntry)> {
    let mut places: Vec<(Place, &BoardEntry)> = ports
        .board()
        .map(|(lane, key, e)| {
            let place = Place {
                switch: ports.bridge_idx(lane, key.switch),
                monitor: e.name.contains('/'),
                port: key.port.0,
            };
            (place, e)
        })
        .filter(|(p, _)| after.is_none_or(|a| *p > a))
        .collect();
    places.sort_unstable_by_key(|(p, _)| *p);
    places.into_iter()
}

/// A port of the board, read now (its counters are live).
pub fn snap((place, e): (Place, &BoardEntry)) -> PortSnap {
    PortSnap {
        place,
        switch: e.switch.clone(),
        name: e.name.clone(),
        geometry: e.geometry,
        clients: e.clients,
        stats: e.counters.snapshot(),
    }
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
        rx_copies: s.rx_copies,
        rx_segmented: s.rx_segmented,
        rx_segments: s.rx_segments,
        mon_copies: s.mon_copies,
        ring_resets: s.ring_resets,
        drops: DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), s.drop_count(*r)))
            .collect(),
    }
}

fn summary(p: &PortSnap) -> PortSummary {
    PortSummary {
        name: p.name.clone(),
        index: p.place.port,
        geometry: p.geometry,
        clients: p.clients,
    }
}

/// A page of `vale-ctl list`: the switches of the `ports` that fit in `budget` bytes, each
/// with those of its ports, then the `hosts` that fit after them.
pub fn list_page(
    ports: impl Iterator<Item = PortSnap>,
    hosts: impl Iterator<Item = HostInfo>,
    batch: usize,
    budget: usize,
) -> Response {
    let empty = Response::List {
        switches: Vec::new(),
        hosts: Vec::new(),
        next: None,
    };
    let mut room = Room::new(budget, json_len(&empty));
    let head = |p: &PortSnap| SwitchInfo {
        name: p.switch.clone(),
        index: p.place.switch,
        bridge_batch: batch,
        ports: Vec::new(),
    };
    let mut switches: Vec<SwitchInfo> = Vec::new();
    let mut last = None;
    let mut ports = ports.peekable();
    while let Some(p) = ports.next_if(|p| {
        let new = switches.last().is_none_or(|s| s.index != p.place.switch);
        let head_len = if new { json_len(&head(p)) + 1 } else { 0 };
        room.take(json_len(&summary(p)) + head_len)
    }) {
        if switches.last().is_none_or(|s| s.index != p.place.switch) {
            switches.push(head(&p));
        }
        if let Some(s) = switches.last_mut() {
            s.ports.push(summary(&p));
        }
        last = Some(Cursor::Port(p.place));
    }
    let mut shown = Vec::new();
    let mut hosts = hosts.peekable();
    if ports.peek().is_none() {
        while let Some(h) = hosts.next_if(|h| room.take(json_len(h))) {
            last = Some(Cursor::Host(h.name.clone()));
            shown.push(h);
        }
    }
    let more = ports.peek().is_some() || hosts.peek().is_some();
    Response::List {
        switches,
        hosts: shown,
        next: last.filter(|_| more).map(|c| c.encode()),
    }
}

/// A page of `vale-ctl stats [PORT]`: the counters of the `ports` that fit in `budget`
/// bytes (those named `port`, if given). No port of that name at all is an error.
pub fn stats_page(
    ports: impl Iterator<Item = PortSnap>,
    port: Option<&str>,
    first: bool,
    budget: usize,
) -> Result<Response, CtlError> {
    let row = |p: &PortSnap| StatsRow {
        name: p.name.clone(),
        switch: p.switch.clone(),
        index: p.place.port,
        counters: counters(&p.stats),
    };
    let empty = Response::Stats {
        ports: Vec::new(),
        next: None,
    };
    let mut room = Room::new(budget, json_len(&empty));
    let mut rows = Vec::new();
    let mut last = None;
    let mut ports = ports
        .filter(|p| port.is_none_or(|n| n == p.name))
        .peekable();
    while let Some(p) = ports.next_if(|p| room.take(json_len(&row(p)))) {
        rows.push(row(&p));
        last = Some(Cursor::Port(p.place));
    }
    let more = ports.peek().is_some();
    match port {
        Some(n) if first && rows.is_empty() => Err(CtlError::NotFound(format!(
            "no port `{}` is open (see `vale-ctl list`)",
            vale_switch::quote_input(n)
        ))),
        _ => Ok(Response::Stats {
            ports: rows,
            next: last.filter(|_| more).map(|c| c.encode()),
        }),
    }
}

/// A page of `vale-ctl fdb SWITCH`: the switch's learned addresses after `after` that fit
/// in `budget` bytes, and the table's counters. `peer` says where an address learned
/// on a port (by name) lives beyond it (a VXLAN uplink's remote VTEP), joined here so
/// the data plane keeps one table per port and no more.
pub fn fdb_page(
    ports: &PortTable,
    switch: &str,
    after: Option<FdbPlace>,
    budget: usize,
    peer: impl Fn(&str, [u8; 6], Option<u16>) -> Option<crate::port::Peer>,
) -> Result<Response, CtlError> {
    let missing = || {
        CtlError::NotFound(format!(
            "no switch `{}` exists (see `vale-ctl list`)",
            vale_switch::quote_input(switch)
        ))
    };
    let lane = ports
        .lanes()
        .iter()
        .find(|l| l.lock_ctl().registry.switch(switch).is_some())
        .ok_or_else(missing)?;
    // Under the lane's lock only what must be: the table's rows, its counters and the
    // names of the ports they name. Sorting and sizing happen after, so that a client
    // paging through a big table in a loop does not hold up the lane's forwarding.
    let (rows, counters, name, names) = {
        let st = lane.lock_ctl();
        let now = lane.now();
        let e = st.registry.switch(switch).ok_or_else(missing)?;
        let lookup = e.switch.lookup();
        let table = lookup.table();
        let rows = table.map(|t| t.rows(now)).unwrap_or_default();
        let counters: BTreeMap<String, u64> = table
            .map(|t| t.counters())
            .unwrap_or_default()
            .into_iter()
            .map(|(name, v)| (name.to_string(), v))
            .collect();
        let mut names = std::collections::HashMap::new();
        for r in &rows {
            names.entry(r.port).or_insert_with(|| {
                e.switch
                    .port(r.port)
                    .map_or_else(|| "?".to_string(), |p| p.name().to_string())
            });
        }
        (rows, counters, e.name.clone(), names)
    };
    let place = |r: &vale_switch::TableRow| FdbPlace {
        port: r.port,
        vlan: r.vlan,
        mac: r.mac,
    };
    let mut rows = rows;
    rows.retain(|r| after.is_none_or(|a| place(r) > a));
    rows.sort_unstable_by_key(place);
    let row = |r: &vale_switch::TableRow| {
        let port = names.get(&r.port).cloned().unwrap_or_else(|| "?".into());
        let beyond = peer(&port, r.mac.octets(), r.vlan);
        FdbRow {
            mac: r.mac.to_string(),
            vlan: r.vlan,
            port,
            index: r.port.0,
            age_secs: r.age_secs,
            vtep: beyond.map(|b| b.vtep.to_string()),
            vni: beyond.and_then(|b| b.vni),
        }
    };
    let mut page = Response::Fdb {
        switch: name,
        entries: Vec::new(),
        counters,
        next: None,
    };
    let mut room = Room::new(budget, json_len(&page));
    let mut taken = Vec::new();
    let mut last = None;
    let mut rows = rows.into_iter().peekable();
    while let Some(r) = rows.next_if(|r| room.take(json_len(&row(r)))) {
        taken.push(row(&r));
        last = Some(Cursor::Fdb(place(&r)));
    }
    let more = rows.peek().is_some();
    if let Response::Fdb { entries, next, .. } = &mut page {
        *entries = taken;
        *next = last.filter(|_| more).map(|c| c.encode());
    }
    Ok(page)
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
            "max_switches_per_uid".to_string(),
            s.switches_per_uid().to_string(),
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
        (
            "vhost_trust_unsealed".to_string(),
            s.vhost_trust_unsealed.to_string(),
        ),
        (
            "memif_trust_unsealed".to_string(),
            s.memif_trust_unsealed.to_string(),
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
            "switch_threads".to_string(),
            s.switch_threads
                .iter()
                .map(|(sw, n)| format!("{sw}={n}"))
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "cpus".to_string(),
            if s.cpus.is_empty() && !s.auto_pin {
                "none".to_string()
            } else {
                s.cpus
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            },
        ),
        (
            "metrics_max_connections".to_string(),
            s.metrics_max_connections.to_string(),
        ),
        (
            "metrics_max_connections_per_client".to_string(),
            s.metrics_max_connections_per_client.to_string(),
        ),
        (
            "metrics".to_string(),
            s.metrics
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
    ]);
    Response::Settings { settings }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(switch: usize, name: &str, index: u16, tx: u64) -> PortSnap {
        let mut stats = PortStats {
            tx_packets: tx,
            forwarded: tx - 1,
            ..Default::default()
        };
        stats.drops[DropReason::NoDest as usize] = 1;
        PortSnap {
            place: Place {
                switch,
                monitor: name.contains('/'),
                port: index,
            },
            switch: name.split(':').next().unwrap().into(),
            name: name.into(),
            geometry: Geometry {
                tx_rings: 1,
                rx_rings: 1,
                tx_slots: 1024,
                rx_slots: 1024,
                buf_size: 2112,
                extra_bufs: 0,
                pipes: 0,
            },
            clients: 1,
            stats,
        }
    }

    fn snap() -> Vec<PortSnap> {
        vec![
            port(0, "vale0:a", 0, 10),
            port(0, "vale0:b", 1, 20),
            port(1, "vale1:a", 0, 5),
        ]
    }

    fn host(name: &str) -> HostInfo {
        HostInfo {
            name: name.into(),
            kind: "tap".into(),
            attached: None,
            waiting: None,
            gone: false,
            about: String::new(),
            counters: Default::default(),
        }
    }

    const WHOLE: usize = usize::MAX;

    #[test]
    fn stats_of_all_ports_or_one_and_a_clear_error_for_none() {
        let s = snap;
        let Ok(Response::Stats { ports, next: None }) =
            stats_page(s().into_iter(), None, true, WHOLE)
        else {
            panic!()
        };
        assert_eq!(ports.len(), 3);
        let Ok(Response::Stats { ports, next: None }) =
            stats_page(s().into_iter(), Some("vale0:b"), true, WHOLE)
        else {
            panic!()
        };
        assert_eq!(ports.len(), 1);
        let c = &ports[0].counters;
        assert_eq!((c.tx_packets, c.forwarded), (20, 19));
        assert_eq!(c.drops["no_dest"], 1);
        assert_eq!(c.drops.len(), DropReason::ALL.len(), "every reason named");
        let e = stats_page(s().into_iter(), Some("vale0:\u{7}"), true, WHOLE).unwrap_err();
        assert_eq!(e.kind(), proto::ErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            "no port `vale0:\\u{7}` is open (see `vale-ctl list`)"
        );
    }

    #[test]
    fn list_keeps_switch_order_batches_and_clients() {
        let Response::List {
            switches,
            hosts,
            next: None,
        } = list_page(snap().into_iter(), std::iter::empty(), 64, WHOLE)
        else {
            panic!()
        };
        assert!(hosts.is_empty());
        let names: Vec<_> = switches.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["vale0", "vale1"]);
        assert_eq!(switches[1].bridge_batch, 64);
        assert_eq!(switches[0].ports[1].name, "vale0:b");
        assert_eq!(switches[0].ports[1].clients, 1);
    }

    /// Many ports on a few switches, monitors after ports, and host ports.
    fn big() -> (Vec<PortSnap>, Vec<HostInfo>) {
        let mut ports = Vec::new();
        for (sw, n) in [(0, 300), (1, 1), (4, 200)] {
            for i in 0..n {
                ports.push(port(sw, &format!("vale{sw}:p{i}"), i, 1 + i as u64));
            }
            ports.push(port(sw, &format!("vale{sw}:p0/t"), n, 1));
        }
        ports.sort_by_key(|p| p.place);
        let hosts = (0..40).map(|i| host(&format!("vi{i:02}"))).collect();
        (ports, hosts)
    }

    /// Asks for pages as a client does, each of what valed would give after the last
    /// cursor, and checks each is one message within `budget`, and all but the last more
    /// than half full.
    fn page_through(
        budget: usize,
        mut page: impl FnMut(Option<Cursor>) -> Response,
    ) -> (Response, usize) {
        let check = |p: &Response| {
            let len = serde_json::to_vec(p).unwrap().len();
            assert!(len <= budget, "a page of {len} bytes, over {budget}");
            if p.next_page().is_some() {
                assert!(len > budget / 2, "a page of {len} bytes of {budget}");
            }
        };
        let mut whole = page(None);
        check(&whole);
        let mut pages = 1;
        while let Some(next) = whole.next_page().map(str::to_owned) {
            let p = page(Some(Cursor::parse(&next).unwrap()));
            check(&p);
            assert_ne!(p.next_page(), Some(next.as_str()), "a page moves on");
            whole.append(p).unwrap();
            pages += 1;
        }
        (whole, pages)
    }

    #[test]
    fn pages_of_list_and_stats_hold_every_row_once_within_the_budget() {
        let (ports, hosts) = big();
        let after = |c: &Option<Cursor>| {
            let (port_after, host_after, ports_done) = match c {
                None => (None, None, false),
                Some(Cursor::Port(p)) => (Some(*p), None, false),
                Some(Cursor::Host(h)) => (None, Some(h.clone()), true),
                Some(other) => panic!("{other:?}"),
            };
            let ports: Vec<PortSnap> = ports
                .iter()
                .filter(|p| !ports_done && port_after.is_none_or(|a| p.place > a))
                .cloned()
                .collect();
            let hosts: Vec<HostInfo> = hosts
                .iter()
                .filter(|h| host_after.as_ref().is_none_or(|a| h.name > *a))
                .cloned()
                .collect();
            (ports, hosts)
        };
        let one = list_page(
            ports.clone().into_iter(),
            hosts.clone().into_iter(),
            8,
            WHOLE,
        );
        for budget in [4096, 9000, proto::PAGE_BYTES] {
            let (paged, n) = page_through(budget, |c| {
                let (p, h) = after(&c);
                list_page(p.into_iter(), h.into_iter(), 8, budget)
            });
            assert_eq!(paged, one, "{budget}-byte pages");
            assert!(n > 1, "{budget}: {n} pages");
        }
        let Response::List { switches, .. } = &one else {
            panic!()
        };
        assert_eq!(switches.len(), 3);
        assert_eq!(switches[0].ports.len(), 301);
        assert_eq!(switches[0].ports[300].name, "vale0:p0/t", "monitors last");

        let one = stats_page(ports.clone().into_iter(), None, true, WHOLE).unwrap();
        let (paged, n) = page_through(4096, |c| {
            let (p, _) = after(&c);
            stats_page(p.into_iter(), None, c.is_none(), 4096).unwrap()
        });
        assert_eq!(paged, one);
        assert!(n > 30, "a dozen rows a page: {n}");
    }

    #[test]
    fn a_page_has_at_least_one_row_and_says_when_it_is_the_last() {
        // A budget smaller than a row: one row a page, never none.
        let Response::List { switches, next, .. } =
            list_page(snap().into_iter(), std::iter::empty(), 8, 10)
        else {
            panic!()
        };
        assert_eq!(switches[0].ports.len(), 1);
        assert_eq!(next.as_deref(), Some("p.0.0.0"));
        // Exactly the rows there are: no `next`, no empty page after.
        let Response::List { next, .. } =
            list_page(snap().into_iter(), [host("vi0")].into_iter(), 8, WHOLE)
        else {
            panic!()
        };
        assert_eq!(next, None);
        let Response::List { hosts, next, .. } = list_page(
            std::iter::empty(),
            [host("vi0"), host("vi1")].into_iter(),
            8,
            10,
        ) else {
            panic!()
        };
        assert_eq!((hosts.len(), next.as_deref()), (1, Some("h.vi0")));
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let all = [
            Cursor::Port(Place {
                switch: 7,
                monitor: true,
                port: 2031,
            }),
            Cursor::Host("vi.0".into()),
            Cursor::Fdb(FdbPlace {
                port: PortId(3),
                vlan: None,
                mac: MacAddr::new([2, 0, 0, 0, 0x12, 0x34]),
            }),
            Cursor::Fdb(FdbPlace {
                port: PortId(0),
                vlan: Some(100),
                mac: MacAddr::BROADCAST,
            }),
        ];
        for c in all {
            assert_eq!(Cursor::parse(&c.encode()).unwrap(), c, "{}", c.encode());
        }
        for bad in [
            "",
            "p",
            "p.1.2.3",
            "p.1.0",
            "p.x.0.1",
            "f.1.-.1000000000000",
            "q.1",
        ] {
            let e = Cursor::parse(bad).unwrap_err();
            assert_eq!(e.kind(), proto::ErrorKind::BadRequest, "{bad}");
            assert!(e.to_string().contains("not one valed gave"), "{e}");
        }
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
                let ports = ports_after(&table, None).map(super::snap);
                tx.send(stats_page(ports, None, true, WHOLE).map(|r| match r {
                    Response::Stats { ports, .. } => ports.len(),
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
        // A page after the first port has the second only.
        let first = ports_after(&table, None).next().unwrap().0;
        let rest: Vec<_> = ports_after(&table, Some(first))
            .map(|(_, e)| e.name.clone())
            .collect();
        assert_eq!(rest, ["vale0:b"]);
    }

    #[test]
    fn settings_name_every_flag() {
        let Response::Settings { settings: m } = settings(&Settings::default(), 3) else {
            panic!()
        };
        assert_eq!(m["threads"], "3");
        assert_eq!(m["socket_mode"], "0660");
        assert_eq!(m["buf_size"], "2112");
        assert_eq!(m["cpus"], "none", "not pinned unless told");
        assert_eq!(m["max_extra_bufs"], "4096");
        assert_eq!(m["pipes"], "2");
        assert_eq!(m["max_clients"], "1024");
        assert_eq!(m["max_ports_per_uid"], "64");
        assert_eq!(m["share"], "");
        assert_eq!(m["vhost_trust_unsealed"], "false");
        assert_eq!(m["metrics"], "");
        assert_eq!(m["switch_threads"], "");
        assert_eq!(m["metrics_max_connections"], "8");
        assert_eq!(m["metrics_max_connections_per_client"], "2");
        assert_eq!(m["max_switches_per_uid"], "4", "half of 8");
        assert_eq!(m.len(), 34);
    }
}
