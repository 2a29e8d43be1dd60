//! What the metrics server is told of the ports that exist: a snapshot of names and
//! counter blocks, republished whenever the port table or the host ports change.

use super::Control;
use std::sync::Arc;

impl Control {
    /// Keeps `board` told which ports exist (see `metrics`).
    pub fn share_metrics(&mut self, board: Arc<crate::metrics::Board>) {
        self.metrics = Some((board, 0));
        self.publish_metrics();
    }

    /// Republishes the ports to the metrics board if they changed since the last time:
    /// a walk over the port table and the host ports, hashing what a scrape shows.
    pub(super) fn publish_metrics(&mut self) {
        use std::hash::{Hash, Hasher};
        let Some((board, last)) = &self.metrics else {
            return;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (lane, key, e) in self.ports.board() {
            (lane, key.switch, key.port.0, Arc::as_ptr(&e.counters)).hash(&mut h);
        }
        for (name, kind, attached, counters) in self.hosts.metrics_rows() {
            (name, kind, attached, Arc::as_ptr(counters)).hash(&mut h);
        }
        let digest = h.finish() | 1;
        if digest == *last {
            return;
        }
        let board = board.clone();
        let kinds: std::collections::HashMap<&str, &str> = self
            .hosts
            .metrics_rows()
            .filter_map(|(_, kind, attached, _)| Some((attached?, kind)))
            .collect();
        let ports = self
            .ports
            .board()
            .map(|(_, _, e)| crate::metrics::PortRow {
                switch: e.switch.clone(),
                port: e.name.clone(),
                kind: match kinds.get(e.name.as_str()) {
                    Some(k) => k.to_string(),
                    None if e.name.contains('/') => "monitor".into(),
                    None => "client".into(),
                },
                counters: e.counters.clone(),
            })
            .collect();
        let hosts = self
            .hosts
            .metrics_rows()
            .map(|(name, kind, _, counters)| crate::metrics::HostRow {
                name: name.to_string(),
                kind: kind.to_string(),
                counters: counters.clone(),
            })
            .collect();
        board.publish(crate::metrics::Snapshot { ports, hosts });
        self.metrics = Some((board, digest));
    }
}
