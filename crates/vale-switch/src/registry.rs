//! Switches by name and ports by `vale<sw>:<port>` name, with every limit a setting.
//!
//! A switch exists while it has ports: the first open of `valeX:Y` creates switch `valeX`
//! and port `Y`, the last close of its last port removes it. Opening an existing port
//! again shares it (netmap lets several descriptors bind one VALE port); ring and slot
//! requests only count for the open that creates the port, as in netmap.

use crate::engine::{EngineError, Switch, SwitchConfig};
use crate::lookup::{FdbConfig, Lookup, LookupKind};
use crate::name::{DEFAULT_MAX_NAME_LEN, NameError, PortName};
use crate::types::PortId;
use crate::vlan::PortVlan;
use std::collections::BTreeMap;
use thiserror::Error;
use vale_abi::{PortGeometry, Region};

/// Every limit of the original, as a setting with netmap's value as default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Switches at once (netmap's `max_bridges`, 8).
    pub max_switches: usize,
    /// Ports per switch (netmap's `NM_BDG_MAXPORTS`, 254).
    pub max_ports: u16,
    /// Rings per direction per port (netmap: 16).
    pub max_rings: u16,
    /// Slots per ring (netmap: 4096).
    pub max_slots: u32,
    /// Buffer size in bytes (netmap's `buf_size` parameter tops out at 65536).
    pub max_buf_size: u32,
    /// Characters in a port name (15, netmap's 16-byte name with its NUL).
    pub max_name_len: usize,
    /// Spare buffers a port may reserve for its clients (netmap's extra buffers,
    /// `nr_extra_bufs`, asked by the open that creates the port; more is clamped).
    pub max_extra_bufs: u32,
    /// Default `bridge_batch` for new switches (1024).
    pub batch: usize,
    /// Geometry of ports whose opener asks for nothing in particular.
    pub default_geometry: PortGeometry,
    /// Learning table of new switches.
    pub fdb: FdbConfig,
    /// Lookup of new switches that were given none of their own (see
    /// [`Registry::set_lookup`]).
    pub lookup: LookupKind,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_switches: 8,
            max_ports: crate::DEFAULT_MAX_PORTS,
            max_rings: 16,
            max_slots: 4096,
            max_buf_size: vale_abi::region::ABI_MAX_BUF_SIZE,
            max_name_len: DEFAULT_MAX_NAME_LEN,
            max_extra_bufs: 4096,
            batch: crate::DEFAULT_BATCH,
            default_geometry: PortGeometry::default(),
            fdb: FdbConfig::default(),
            lookup: LookupKind::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum RegistryError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(
        "cannot create switch `{switch}`: {limit} switches exist already, the limit (see `valed --max-switches`)"
    )]
    TooManySwitches { switch: String, limit: usize },
    #[error("cannot add port `{port}`: {source}")]
    Engine { port: String, source: EngineError },
    #[error(
        "cannot create port `{port}`: {what} is {value}; the limit is {limit} (see `valed --{flag}`)"
    )]
    OverLimit {
        port: String,
        what: &'static str,
        value: u64,
        limit: u64,
        flag: &'static str,
    },
    #[error("cannot create port `{port}`: {source}")]
    Region {
        port: String,
        source: vale_abi::Error,
    },
    #[error("no port `{0}` is open")]
    NoSuchPort(String),
    #[error("no switch `{0}` exists")]
    NoSuchSwitch(String),
    #[error(
        "`{name}`: a monitor is PORT/t (what PORT sends), PORT/r (what it receives) or PORT/rt (both)"
    )]
    BadMonitor { name: String },
}

/// Identifies an open port: its switch slot and its index on that switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub switch: usize,
    pub port: PortId,
}

/// What closing one open of a port did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Other opens hold the port: it stays.
    StillOpen,
    /// That was its last open: the port was detached (its addresses flushed), and its
    /// switch removed if it was the last port.
    PortRemoved,
}

/// A named switch and the open count of each of its ports.
pub struct SwitchEntry {
    pub name: String,
    pub switch: Switch<Box<dyn Lookup>>,
    refs: Vec<u32>,
    lookup: LookupKind,
}

impl SwitchEntry {
    /// The kind of lookup the switch was created with.
    pub fn lookup_kind(&self) -> LookupKind {
        self.lookup
    }

    /// A port just attached: its first open.
    fn first_open(&mut self, port: PortId) {
        let i = port.0 as usize;
        if self.refs.len() <= i {
            self.refs.resize(i + 1, 0);
        }
        self.refs[i] = 1;
    }
}

/// The VLAN settings of one switch (by name, so they outlive its ports): whether it
/// filters, and the modes of its ports by full name (`valeX:Y`); a port not named has
/// the default mode, a trunk of every VLAN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SwitchVlan {
    pub filtering: bool,
    pub ports: BTreeMap<String, PortVlan>,
}

/// All switches.
pub struct Registry {
    limits: Limits,
    switches: Vec<Option<SwitchEntry>>,
    /// Lookups chosen per switch name, for when that switch is created.
    lookups: Vec<(String, LookupKind)>,
    /// VLAN settings per switch name, applied when the switch and its ports are created.
    vlans: BTreeMap<String, SwitchVlan>,
    /// Forwarding threads per switch name (1 if not named), applied when it is created.
    threads: BTreeMap<String, u16>,
}

impl Registry {
    pub fn new(limits: Limits) -> Registry {
        Registry {
            limits,
            switches: Vec::new(),
            lookups: Vec::new(),
            vlans: BTreeMap::new(),
            threads: BTreeMap::new(),
        }
    }

    /// Has switch `switch` forwarded by `threads` threads at once (1..=256), now if it
    /// exists and whenever it is created.
    pub fn set_threads(&mut self, switch: &str, threads: u16) -> Result<(), EngineError> {
        if threads == 0 || threads > crate::engine::MAX_THREADS {
            return Err(EngineError::BadThreads(threads));
        }
        self.threads.insert(switch.to_string(), threads);
        if let Some(e) = self.switch_mut(switch) {
            e.switch.set_threads(threads)?;
        }
        Ok(())
    }

    /// The forwarding threads switch `switch` has, or gets when it is created.
    pub fn threads_for(&self, switch: &str) -> u16 {
        self.threads.get(switch).copied().unwrap_or(1)
    }

    /// Turns VLAN filtering of switch `switch` on or off, now if it exists and whenever
    /// it is created. The switch's learned addresses are flushed.
    pub fn set_vlan_filtering(&mut self, switch: &str, on: bool) {
        let e = self.vlans.entry(switch.to_string()).or_default();
        e.filtering = on;
        if e == &SwitchVlan::default() {
            self.vlans.remove(switch);
        }
        if let Some(sw) = self.switch_mut(switch) {
            sw.switch.set_vlan_filtering(on);
        }
    }

    /// Gives port `port` (`valeX:Y`) VLAN mode `mode` (`None`: the default, a trunk of
    /// every VLAN), now if it is open and whenever it is created. Its learned
    /// addresses are flushed.
    pub fn set_port_vlan(
        &mut self,
        port: &str,
        mode: Option<PortVlan>,
    ) -> Result<(), RegistryError> {
        let pn = PortName::parse(port, self.limits.max_name_len)?;
        let e = self.vlans.entry(pn.switch().to_string()).or_default();
        match &mode {
            Some(m) => e.ports.insert(pn.to_string(), m.clone()),
            None => e.ports.remove(pn.as_str()),
        };
        if e == &SwitchVlan::default() {
            self.vlans.remove(pn.switch());
        }
        if let Some(key) = self.find(pn.as_str()) {
            if let Some(sw) = self.entry_mut(key) {
                sw.switch
                    .set_port_vlan(key.port, mode.unwrap_or_default())
                    .map_err(|source| RegistryError::Engine {
                        port: pn.to_string(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// The VLAN settings of switch `switch` (the defaults if it has none).
    pub fn vlan_of(&self, switch: &str) -> SwitchVlan {
        self.vlans.get(switch).cloned().unwrap_or_default()
    }

    /// Every switch's VLAN settings that differ from the defaults, by switch name.
    pub fn vlans(&self) -> &BTreeMap<String, SwitchVlan> {
        &self.vlans
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Gives switch `switch` a lookup of `kind` whenever it is created from now on
    /// (switches are created by the first open of one of their ports). A switch that
    /// exists keeps the lookup, and the table, it has until its last port goes.
    pub fn set_lookup(&mut self, switch: &str, kind: LookupKind) {
        match self.lookups.iter_mut().find(|(n, _)| n == switch) {
            Some(e) => e.1 = kind,
            None => self.lookups.push((switch.to_string(), kind)),
        }
    }

    /// The lookup switch `switch` gets when it is created.
    pub fn lookup_for(&self, switch: &str) -> LookupKind {
        self.lookups
            .iter()
            .find(|(n, _)| n == switch)
            .map_or(self.limits.lookup, |e| e.1)
    }

    /// Whether geometry `g` is within the limits for port `port` (the error names the
    /// setting that allows more).
    pub fn check_geometry(&self, port: &str, g: &PortGeometry) -> Result<(), RegistryError> {
        let l = &self.limits;
        let checks: [(&'static str, u64, u64, &'static str); 6] = [
            (
                "tx_rings",
                g.tx_rings as u64,
                l.max_rings as u64,
                "max-rings",
            ),
            (
                "rx_rings",
                g.rx_rings as u64,
                l.max_rings as u64,
                "max-rings",
            ),
            (
                "tx_slots",
                g.tx_slots as u64,
                l.max_slots as u64,
                "max-slots",
            ),
            (
                "rx_slots",
                g.rx_slots as u64,
                l.max_slots as u64,
                "max-slots",
            ),
            (
                "buf_size",
                g.buf_size as u64,
                l.max_buf_size as u64,
                "max-buf-size",
            ),
            (
                "extra_bufs",
                g.extra_bufs as u64,
                l.max_extra_bufs as u64,
                "max-extra-bufs",
            ),
        ];
        for (what, value, limit, flag) in checks {
            if value > limit {
                return Err(RegistryError::OverLimit {
                    port: port.to_string(),
                    what,
                    value,
                    limit,
                    flag,
                });
            }
        }
        g.validate().map_err(|source| RegistryError::Region {
            port: port.to_string(),
            source,
        })
    }

    fn find_switch(&self, name: &str) -> Option<usize> {
        self.switches
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.name == name))
    }

    /// Opens `name`, creating its switch and port as needed. `geometry` (or the default
    /// one) is used only when the port is created.
    pub fn open(
        &mut self,
        name: &str,
        geometry: Option<PortGeometry>,
    ) -> Result<PortKey, RegistryError> {
        self.open_with(name, geometry, None)
    }

    /// Whether opening `name` would create a port (and so a region): a monitor always
    /// does, an existing port does not.
    pub fn would_create(&self, name: &str) -> bool {
        name.contains('/') || self.find(name).is_none()
    }

    /// [`open`](Self::open), with the region for a new port made beforehand (by
    /// [`Region::create`] with the same geometry), so that the caller need not hold a
    /// lock the forwarder waits on while the kernel faults its memory in. Without one,
    /// or for a port that exists, it behaves as `open`.
    pub fn open_with(
        &mut self,
        name: &str,
        geometry: Option<PortGeometry>,
        region: Option<Region>,
    ) -> Result<PortKey, RegistryError> {
        if let Some((target, flags)) = name.split_once('/') {
            return self.open_monitor(name, target, flags, geometry, region);
        }
        let pn = PortName::parse(name, self.limits.max_name_len)?;
        if let Some(si) = self.find_switch(pn.switch()) {
            if let Some(e) = self.switches[si].as_mut() {
                if let Some(p) = e.switch.port_by_name(pn.as_str()) {
                    e.refs[p.0 as usize] += 1;
                    return Ok(PortKey {
                        switch: si,
                        port: p,
                    });
                }
            }
        }
        let g = geometry.unwrap_or(self.limits.default_geometry);
        self.check_geometry(pn.as_str(), &g)?;
        let si = match self.find_switch(pn.switch()) {
            Some(si) => si,
            None => self.create_switch(pn.switch())?,
        };
        let created = self.switches[si]
            .as_ref()
            .is_some_and(|e| e.switch.is_empty());
        let result = self.add_port(si, &pn, g, region);
        if result.is_err() && created {
            self.switches[si] = None; // do not leave an empty switch behind
        }
        result
    }

    /// netmap's monitor names: `vale0:a/t`, `/r`, `/rt` (`/tr`). Every open makes a new
    /// monitor of the open port `target`; it goes away with its last close.
    fn open_monitor(
        &mut self,
        name: &str,
        target: &str,
        flags: &str,
        geometry: Option<PortGeometry>,
        region: Option<Region>,
    ) -> Result<PortKey, RegistryError> {
        let bad = || RegistryError::BadMonitor {
            name: name.chars().flat_map(char::escape_default).collect(),
        };
        let (tx, rx) = (flags.contains('t'), flags.contains('r'));
        if flags.is_empty() || flags.len() > 2 || flags.chars().any(|c| c != 't' && c != 'r') {
            return Err(bad());
        }
        let pn = PortName::parse(target, self.limits.max_name_len)?;
        let key = self
            .find(pn.as_str())
            .ok_or_else(|| RegistryError::NoSuchPort(pn.to_string()))?;
        let g = geometry.unwrap_or(self.limits.default_geometry);
        self.check_geometry(name, &g)?;
        let max_ports = self.limits.max_ports as usize;
        let entry = self.switches[key.switch]
            .as_mut()
            .ok_or_else(|| RegistryError::NoSuchSwitch(pn.switch().to_string()))?;
        if entry.switch.len() + entry.switch.monitors().count() >= max_ports {
            return Err(RegistryError::Engine {
                port: name.to_string(),
                source: EngineError::SwitchFull {
                    limit: self.limits.max_ports,
                },
            });
        }
        let region = match region.filter(|r| r.geometry() == g) {
            Some(r) => r,
            None => Region::create(name, g).map_err(|source| RegistryError::Region {
                port: name.to_string(),
                source,
            })?,
        };
        let port = entry
            .switch
            .attach_monitor(name, region, key.port, tx, rx)
            .map_err(|source| RegistryError::Engine {
                port: name.to_string(),
                source,
            })?;
        entry.first_open(port);
        Ok(PortKey {
            switch: key.switch,
            port,
        })
    }

    fn add_port(
        &mut self,
        si: usize,
        pn: &PortName,
        g: PortGeometry,
        region: Option<Region>,
    ) -> Result<PortKey, RegistryError> {
        let entry = self.switches[si]
            .as_mut()
            .ok_or_else(|| RegistryError::NoSuchSwitch(pn.switch().to_string()))?;
        if entry.switch.len() >= self.limits.max_ports as usize {
            return Err(RegistryError::Engine {
                port: pn.to_string(),
                source: EngineError::SwitchFull {
                    limit: self.limits.max_ports,
                },
            });
        }
        let region = match region.filter(|r| r.geometry() == g) {
            Some(r) => r,
            None => Region::create(pn.as_str(), g).map_err(|source| RegistryError::Region {
                port: pn.to_string(),
                source,
            })?,
        };
        let port =
            entry
                .switch
                .attach(pn.as_str(), region)
                .map_err(|source| RegistryError::Engine {
                    port: pn.to_string(),
                    source,
                })?;
        entry.first_open(port);
        let mode = self
            .vlans
            .get(pn.switch())
            .and_then(|v| v.ports.get(pn.as_str()));
        if let Some(m) = mode {
            // A port that was just attached exists.
            let _ = entry.switch.set_port_vlan(port, m.clone());
        }
        Ok(PortKey { switch: si, port })
    }

    fn create_switch(&mut self, name: &str) -> Result<usize, RegistryError> {
        let live = self.switches.iter().filter(|s| s.is_some()).count();
        if live >= self.limits.max_switches {
            return Err(RegistryError::TooManySwitches {
                switch: name.to_string(),
                limit: self.limits.max_switches,
            });
        }
        let kind = self.lookup_for(name);
        let lookup = kind.build(self.limits.fdb);
        let cfg = SwitchConfig {
            max_ports: self.limits.max_ports,
            batch: self.limits.batch,
        };
        let mut switch = Switch::new(lookup, cfg).map_err(|source| RegistryError::Engine {
            port: name.to_string(),
            source,
        })?;
        if self.vlans.get(name).is_some_and(|v| v.filtering) {
            switch.set_vlan_filtering(true);
        }
        // In range: `set_threads` checked it.
        let _ = switch.set_threads(self.threads_for(name));
        let entry = SwitchEntry {
            name: name.to_string(),
            switch,
            refs: Vec::new(),
            lookup: kind,
        };
        match self.switches.iter().position(Option::is_none) {
            Some(i) => {
                self.switches[i] = Some(entry);
                Ok(i)
            }
            None => {
                self.switches.push(Some(entry));
                Ok(self.switches.len() - 1)
            }
        }
    }

    /// Closes one open of a port. The last close detaches it (its addresses are flushed)
    /// and the last port's removal removes the switch.
    pub fn close(&mut self, key: PortKey) -> Result<Closed, RegistryError> {
        let Some(Some(e)) = self.switches.get_mut(key.switch) else {
            return Err(RegistryError::NoSuchPort(format!("{key:?}")));
        };
        let Some(r) = e.refs.get_mut(key.port.0 as usize).filter(|r| **r > 0) else {
            return Err(RegistryError::NoSuchPort(format!(
                "{}:{}",
                e.name, key.port
            )));
        };
        *r -= 1;
        if *r > 0 {
            return Ok(Closed::StillOpen);
        }
        e.switch.detach(key.port);
        // A switch lives while it has ports or monitors (whose clients still hold keys).
        if e.switch.is_empty() && e.switch.monitors().next().is_none() {
            self.switches[key.switch] = None;
        }
        Ok(Closed::PortRemoved)
    }

    /// Finds an open port by full name.
    pub fn find(&self, name: &str) -> Option<PortKey> {
        let pn = PortName::parse(name, usize::MAX).ok()?;
        let si = self.find_switch(pn.switch())?;
        let port = self.switches[si].as_ref()?.switch.port_by_name(name)?;
        Some(PortKey { switch: si, port })
    }

    pub fn switch(&self, name: &str) -> Option<&SwitchEntry> {
        self.switches[self.find_switch(name)?].as_ref()
    }

    pub fn switch_mut(&mut self, name: &str) -> Option<&mut SwitchEntry> {
        let i = self.find_switch(name)?;
        self.switches[i].as_mut()
    }

    /// The switch of port `key`.
    pub fn entry(&self, key: PortKey) -> Option<&SwitchEntry> {
        self.switches.get(key.switch)?.as_ref()
    }

    pub fn entry_mut(&mut self, key: PortKey) -> Option<&mut SwitchEntry> {
        self.switches.get_mut(key.switch)?.as_mut()
    }

    /// Live switches.
    pub fn switches(&self) -> impl Iterator<Item = &SwitchEntry> {
        self.switches.iter().flatten()
    }

    pub fn switches_mut(&mut self) -> impl Iterator<Item = &mut SwitchEntry> {
        self.switches.iter_mut().flatten()
    }

    /// Live switches with their slot index (the `switch` of a [`PortKey`]).
    pub fn switches_indexed_mut(&mut self) -> impl Iterator<Item = (usize, &mut SwitchEntry)> {
        self.switches
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| s.as_mut().map(|s| (i, s)))
    }

    pub fn switches_indexed(&self) -> impl Iterator<Item = (usize, &SwitchEntry)> {
        self.switches
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// Changes `bridge_batch` on every switch and for switches created later.
    pub fn set_batch(&mut self, batch: usize) -> Result<(), EngineError> {
        if batch == 0 || batch > crate::MAX_BATCH {
            return Err(EngineError::BadBatch(batch));
        }
        for e in self.switches_mut() {
            e.switch.set_batch(batch)?;
        }
        self.limits.batch = batch;
        Ok(())
    }

    /// How many opens a port has.
    pub fn open_count(&self, key: PortKey) -> u32 {
        self.switches
            .get(key.switch)
            .and_then(|s| s.as_ref())
            .and_then(|e| e.refs.get(key.port.0 as usize).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_settings_outlive_ports_and_switches() {
        let mut r = Registry::new(Limits::default());
        r.set_vlan_filtering("vale3", true);
        r.set_port_vlan("vale3:a", Some(PortVlan::Access(10)))
            .unwrap();
        let k = r.open("vale3:a", None).unwrap();
        let b = r.open("vale3:b", None).unwrap();
        let sw = &r.switch("vale3").unwrap().switch;
        assert!(sw.vlan_filtering());
        assert_eq!(sw.port(k.port).unwrap().vlan(), &PortVlan::Access(10));
        assert_eq!(sw.port(b.port).unwrap().vlan(), &PortVlan::default());
        // Changed while open: applied at once.
        r.set_port_vlan("vale3:b", Some(PortVlan::Tunnel(7)))
            .unwrap();
        let sw = &r.switch("vale3").unwrap().switch;
        assert_eq!(sw.port(b.port).unwrap().vlan(), &PortVlan::Tunnel(7));
        // The switch goes and comes back with its settings.
        r.close(k).unwrap();
        r.close(b).unwrap();
        assert!(r.switch("vale3").is_none());
        let k = r.open("vale3:a", None).unwrap();
        let sw = &r.switch("vale3").unwrap().switch;
        assert!(sw.vlan_filtering());
        assert_eq!(sw.port(k.port).unwrap().vlan(), &PortVlan::Access(10));
        // Back to the defaults: nothing left to remember.
        r.set_port_vlan("vale3:a", None).unwrap();
        r.set_port_vlan("vale3:b", None).unwrap();
        r.set_vlan_filtering("vale3", false);
        assert!(r.vlans().is_empty());
        assert!(!r.switch("vale3").unwrap().switch.vlan_filtering());
        assert!(
            r.set_port_vlan("vale3:b/t", None).is_err(),
            "not a port name"
        );
    }

    fn small() -> Limits {
        Limits {
            default_geometry: PortGeometry {
                tx_slots: 64,
                rx_slots: 64,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn switch_lives_while_it_has_ports() {
        let mut r = Registry::new(small());
        let a = r.open("vale0:a", None).unwrap();
        let b = r.open("vale0:b", None).unwrap();
        assert_eq!(a.switch, b.switch);
        assert_eq!(r.switch("vale0").unwrap().switch.len(), 2);
        // A second open shares the port.
        assert_eq!(r.open("vale0:a", None).unwrap(), a);
        assert_eq!(r.open_count(a), 2);
        assert_eq!(r.close(a).unwrap(), Closed::StillOpen);
        assert_eq!(r.close(a).unwrap(), Closed::PortRemoved);
        assert!(r.find("vale0:a").is_none());
        assert_eq!(r.close(b).unwrap(), Closed::PortRemoved);
        assert!(
            r.switch("vale0").is_none(),
            "switch gone with its last port"
        );
        assert!(r.close(b).is_err());
    }

    #[test]
    fn switch_limit_is_a_setting_with_a_clear_error() {
        let mut r = Registry::new(Limits {
            max_switches: 2,
            ..small()
        });
        r.open("vale0:a", None).unwrap();
        r.open("vale1:a", None).unwrap();
        let e = r.open("vale2:a", None).unwrap_err().to_string();
        assert!(
            e.contains("`vale2`") && e.contains("2 switches") && e.contains("--max-switches"),
            "{e}"
        );
        // Existing switches still take ports.
        r.open("vale1:b", None).unwrap();
        assert!(r.switch("vale2").is_none());
    }

    #[test]
    fn port_limit_is_a_setting_with_a_clear_error() {
        let mut r = Registry::new(Limits {
            max_ports: 3,
            ..small()
        });
        for p in ["a", "b", "c"] {
            r.open(&format!("vale0:{p}"), None).unwrap();
        }
        let e = r.open("vale0:d", None).unwrap_err().to_string();
        assert!(e.contains("vale0:d") && e.contains("3 ports"), "{e}");
        let k = r.find("vale0:b").unwrap();
        r.close(k).unwrap();
        let d = r.open("vale0:d", None).unwrap();
        assert_eq!(d.port, k.port, "the freed index is reused");
    }

    #[test]
    fn geometry_limits_are_checked() {
        let mut r = Registry::new(small());
        let too_many_rings = PortGeometry {
            tx_rings: 17,
            ..Default::default()
        };
        let e = r
            .open("vale0:a", Some(too_many_rings))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tx_rings is 17; the limit is 16") && e.contains("--max-rings"),
            "{e}"
        );
        assert!(
            r.switch("vale0").is_none(),
            "failed open leaves no switch behind"
        );
        let big = PortGeometry {
            tx_slots: 8192,
            ..Default::default()
        };
        assert!(r.open("vale0:a", Some(big)).is_err());
        let mut r2 = Registry::new(Limits {
            max_slots: 8192,
            ..small()
        });
        let k = r2.open("vale0:a", Some(big)).unwrap();
        let e = r2.entry_mut(k).unwrap();
        assert_eq!(e.switch.port(k.port).unwrap().geometry().tx_slots, 8192);
    }

    #[test]
    fn name_errors_pass_through() {
        let mut r = Registry::new(small());
        let e = r
            .open("vale0:abcdefghijklmnop", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit is 15"), "{e}");
        let mut r = Registry::new(Limits {
            max_name_len: 31,
            ..small()
        });
        assert!(r.open("vale0:abcdefghijklmnop", None).is_ok());
    }

    #[test]
    fn lookup_is_chosen_per_switch() {
        let mut r = Registry::new(small());
        r.set_lookup("vale1", LookupKind::Hub);
        let a = r.open("vale0:a", None).unwrap();
        r.open("vale1:a", None).unwrap();
        let learning = r.switch("vale0").unwrap();
        assert_eq!(learning.lookup_kind(), LookupKind::Learning, "the default");
        assert!(learning.switch.lookup().table().is_some());
        let hub = r.switch("vale1").unwrap();
        assert_eq!(hub.lookup_kind(), LookupKind::Hub);
        assert!(hub.switch.lookup().table().is_none());
        // A live switch keeps its lookup; the choice applies when it is next created.
        r.set_lookup("vale0", LookupKind::Hub);
        assert_eq!(
            r.switch("vale0").unwrap().lookup_kind(),
            LookupKind::Learning
        );
        r.close(a).unwrap();
        r.open("vale0:a", None).unwrap();
        assert_eq!(r.switch("vale0").unwrap().lookup_kind(), LookupKind::Hub);
        // The default for every other switch is a setting too.
        let mut r = Registry::new(Limits {
            lookup: LookupKind::Hub,
            ..small()
        });
        r.set_lookup("vale3", LookupKind::Learning);
        r.open("vale2:a", None).unwrap();
        r.open("vale3:a", None).unwrap();
        assert_eq!(r.lookup_for("vale9"), LookupKind::Hub);
        assert_eq!(r.switch("vale2").unwrap().lookup_kind(), LookupKind::Hub);
        assert_eq!(
            r.switch("vale3").unwrap().lookup_kind(),
            LookupKind::Learning
        );
        assert_eq!("hub".parse::<LookupKind>(), Ok(LookupKind::Hub));
        let e = "vlan".parse::<LookupKind>().unwrap_err();
        assert!(e.contains("`vlan`") && e.contains("learning, hub"), "{e}");
    }
}
