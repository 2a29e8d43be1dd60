//! VLAN settings (`vale-ctl vlan`, `[[vlan]]` in the config file): kept by name in every
//! lane's registry, so that whichever lane forwards a switch, and whenever its ports are
//! created, they apply.

use super::Control;
use crate::error::CtlError;
use crate::settings::DeclaredVlan;
use std::collections::BTreeMap;
use vale::proto::Response;
use vale_switch::{PortName, PortVlan, SwitchVlan, quote_input};

/// `vale-ctl vlan` spells the default mode `none`.
pub(crate) fn parse_mode(mode: &str) -> Result<Option<PortVlan>, String> {
    match mode.trim() {
        "none" | "default" => Ok(None),
        m => m.parse().map(Some),
    }
}

impl Control {
    /// The registries' VLAN settings (the same in every lane).
    pub(super) fn vlan_settings(&self) -> BTreeMap<String, SwitchVlan> {
        self.ports
            .lanes()
            .first()
            .map(|l| l.lock_ctl().registry.vlans().clone())
            .unwrap_or_default()
    }

    /// `vale-ctl vlan valeX`: whether it filters, and its ports' modes.
    pub(super) fn vlan_show(&self, switch: &str) -> Result<Response, CtlError> {
        let bad = || {
            CtlError::BadRequest(format!(
                "`{}` is not a switch name like vale0",
                quote_input(switch)
            ))
        };
        PortName::parse(&format!("{switch}:x"), usize::MAX).map_err(|_| bad())?;
        if switch.contains(':') {
            return Err(bad());
        }
        let cfg = self.vlan_settings().remove(switch).unwrap_or_default();
        let mut ports: BTreeMap<String, String> = BTreeMap::new();
        for l in self.ports.lanes() {
            let st = l.lock_ctl();
            if let Some(e) = st.registry.switch(switch) {
                for (_, p) in e.switch.ports() {
                    ports.insert(p.name().to_string(), p.vlan().to_string());
                }
            }
        }
        for (name, m) in &cfg.ports {
            ports.insert(name.clone(), m.to_string());
        }
        Ok(Response::Vlan {
            switch: switch.to_string(),
            filtering: cfg.filtering,
            ports,
        })
    }

    /// `vale-ctl vlan valeX --filtering on|off`, `vale-ctl vlan valeX:Y --access 10`...
    pub(super) fn vlan_set(
        &mut self,
        target: &str,
        filtering: Option<bool>,
        mode: Option<&str>,
    ) -> Result<String, CtlError> {
        match (filtering, mode) {
            (Some(on), None) => {
                if target.contains(':') {
                    return Err(CtlError::BadRequest(format!(
                        "`{}`: VLAN filtering is a switch's (vale0), not a port's",
                        quote_input(target)
                    )));
                }
                PortName::parse(&format!("{target}:x"), usize::MAX)
                    .map_err(|e| CtlError::Registry(e.into()))?;
                for l in self.ports.lanes() {
                    l.lock_ctl().registry.set_vlan_filtering(target, on);
                }
                let on = if on { "on" } else { "off" };
                tracing::info!("{target}: vlan_filtering {on}");
                Ok(format!("{target}: vlan_filtering {on}"))
            }
            (None, Some(m)) => {
                let mode = parse_mode(m).map_err(CtlError::BadRequest)?;
                if !target.contains(':') {
                    return Err(CtlError::BadRequest(format!(
                        "`{}`: a VLAN mode is a port's (vale0:a), not a switch's",
                        quote_input(target)
                    )));
                }
                for l in self.ports.lanes() {
                    l.lock_ctl().registry.set_port_vlan(target, mode.clone())?;
                }
                let shown = mode.unwrap_or_default().to_string();
                tracing::info!("{target}: vlan {shown}");
                Ok(format!("{target}: {shown}"))
            }
            _ => Err(CtlError::BadRequest(
                "a VLAN change sets either a switch's filtering or a port's mode".into(),
            )),
        }
    }

    /// Makes the switches the config file's `[[vlan]]` tables name exactly as declared,
    /// and those the file declared before (`settings.vlans`) but names no more as they
    /// were before any: filtering off, every port in the default mode. The others keep
    /// what they have. Returns what changed, a line each.
    pub(super) fn apply_vlans(&mut self, want: &[DeclaredVlan]) -> Vec<String> {
        let have = self.vlan_settings();
        let dropped = self
            .settings
            .vlans
            .iter()
            .filter(|v| !want.iter().any(|d| d.switch == v.switch))
            .map(|v| (v.switch.clone(), SwitchVlan::default()));
        let targets: Vec<(String, SwitchVlan)> = want
            .iter()
            .map(|d| {
                let new = SwitchVlan {
                    filtering: d.filtering,
                    ports: d.ports.iter().cloned().collect(),
                };
                (d.switch.clone(), new)
            })
            .chain(dropped)
            .collect();
        let mut lines = Vec::new();
        for (switch, new) in targets {
            let old = have.get(&switch).cloned().unwrap_or_default();
            if old == new {
                continue;
            }
            // Names were checked on load against the daemon's own limit, so a refusal
            // here is not expected; one would still be said, not lost.
            let mut refused: Vec<String> = Vec::new();
            let mut refuse = |name: &str, e: vale_switch::RegistryError| {
                let line = format!("{switch}: {name}'s VLAN mode not set: {e}");
                if !refused.contains(&line) {
                    refused.push(line);
                }
            };
            for l in self.ports.lanes() {
                let mut st = l.lock_ctl();
                let r = &mut st.registry;
                if old.filtering != new.filtering {
                    r.set_vlan_filtering(&switch, new.filtering);
                }
                for name in old.ports.keys().filter(|n| !new.ports.contains_key(*n)) {
                    if let Err(e) = r.set_port_vlan(name, None) {
                        refuse(name, e);
                    }
                }
                for (name, m) in &new.ports {
                    if old.ports.get(name) != Some(m) {
                        if let Err(e) = r.set_port_vlan(name, Some(m.clone())) {
                            refuse(name, e);
                        }
                    }
                }
            }
            lines.extend(refused);
            if new == SwitchVlan::default() && !want.iter().any(|d| d.switch == switch) {
                lines.push(format!(
                    "{switch}: no longer declared: vlan_filtering off, every port in the default mode"
                ));
                continue;
            }
            lines.push(format!(
                "{}: vlan_filtering {}, {} port modes",
                switch,
                if new.filtering { "on" } else { "off" },
                new.ports.len()
            ));
        }
        lines
    }
}
