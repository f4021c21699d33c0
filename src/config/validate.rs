//! Semantic checks that serde cannot express: references between sections, ranges, duplicates.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Broken, Config, ConfigIssue, InfluxApi, ProfileConfig, SourceKind};
use crate::sources::modbus::compiled::CompiledProfile;
use crate::sources::modbus::planner::PlanLimits;

/// Appends every problem of `config` to `errors`, and non-fatal ones to `warnings`.
pub(super) fn validate(
    config: &Config,
    profiles: &BTreeMap<String, ProfileConfig>,
    broken: &Broken,
    origin: &str,
    errors: &mut Vec<ConfigIssue>,
    warnings: &mut Vec<ConfigIssue>,
) {
    let at = |key: String, message: String| ConfigIssue {
        file: origin.to_string(),
        key,
        message,
    };

    if config.daemon.channel_capacity == 0 {
        errors.push(at(
            "daemon.channel_capacity".into(),
            "must be at least 1".into(),
        ));
    }

    if config.history.resolution.is_zero() {
        errors.push(at(
            "history.resolution".into(),
            "must be longer than zero".into(),
        ));
    }
    if config.history.window < config.history.resolution {
        errors.push(at(
            "history.window".into(),
            "must be at least one resolution long".into(),
        ));
    }

    if let Some(influx) = &config.storage.influx {
        if let Err(e) = reqwest::Url::parse(&influx.url) {
            errors.push(at(
                "storage.influx.url".into(),
                format!("invalid URL {:?}: {e}", influx.url),
            ));
        }
        match influx.api {
            InfluxApi::V2 => {
                for (key, value) in [("org", &influx.org), ("bucket", &influx.bucket)] {
                    if value.is_empty() {
                        errors.push(at(
                            format!("storage.influx.{key}"),
                            "required with api = \"v2\"".into(),
                        ));
                    }
                }
            }
            InfluxApi::V1 => {
                if influx.db.is_empty() {
                    errors.push(at(
                        "storage.influx.db".into(),
                        "required with api = \"v1\"".into(),
                    ));
                }
            }
        }
        if influx.batch_size == 0 {
            errors.push(at(
                "storage.influx.batch_size".into(),
                "must be at least 1".into(),
            ));
        }
        if influx.flush_interval.is_zero() {
            errors.push(at(
                "storage.influx.flush_interval".into(),
                "must be longer than zero".into(),
            ));
        }
    }

    let mut endpoints: HashMap<&str, usize> = HashMap::new();
    for (i, ep) in config.modbus.endpoints.iter().enumerate() {
        let key = |k: &str| format!("modbus.endpoints[{i}].{k}");
        if endpoints.insert(ep.name.as_str(), i).is_some() {
            errors.push(at(
                key("name"),
                format!("duplicate endpoint name {:?}", ep.name),
            ));
        }
        if !valid_host_port(&ep.address) {
            errors.push(at(
                key("address"),
                format!("expected host:port, got {:?}", ep.address),
            ));
        }
        if ep.timeout.is_zero() {
            errors.push(at(key("timeout"), "must be longer than zero".into()));
        }
        if ep.max_in_flight == 0 {
            errors.push(at(key("max_in_flight"), "must be at least 1".into()));
        }
        if !(1..=125).contains(&ep.max_registers) {
            errors.push(at(
                key("max_registers"),
                "must be 1 to 125 (the Modbus limit for one read)".into(),
            ));
        }
        if !(1..=2000).contains(&ep.max_bits) {
            errors.push(at(
                key("max_bits"),
                "must be 1 to 2000 (the Modbus limit for one read)".into(),
            ));
        }
        if ep.offline_after == 0 {
            errors.push(at(key("offline_after"), "must be at least 1".into()));
        }
    }

    // A profile is checked once, against the tightest limits of any endpoint using it.
    let mut checked_profiles = BTreeSet::new();
    let ids: BTreeSet<&str> = config.devices.iter().map(|d| d.id.as_str()).collect();
    let mut seen_ids = BTreeSet::new();
    let mut seen_units: HashMap<(&str, u8), usize> = HashMap::new();
    for (i, dev) in config.devices.iter().enumerate() {
        let key = |k: &str| format!("devices[{i}].{k}");
        if dev.id.trim().is_empty() {
            errors.push(at(key("id"), "must not be empty".into()));
        } else if !seen_ids.insert(dev.id.as_str()) {
            errors.push(at(key("id"), format!("duplicate device id {:?}", dev.id)));
        }
        if dev.kind.is_empty()
            || !dev
                .kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            errors.push(at(
                key("kind"),
                format!(
                    "expected a word like \"transformer\" or \"meter\", got {:?}",
                    dev.kind
                ),
            ));
        }
        if dev.interval.is_zero() {
            errors.push(at(key("interval"), "must be longer than zero".into()));
        }
        for (k, v) in [
            ("rated_kva", dev.rated_kva),
            ("nominal_voltage", dev.nominal_voltage),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                errors.push(at(key(k), format!("must be a positive number, got {v}")));
            }
        }
        if let Some(parent) = &dev.parent {
            if !ids.contains(parent.as_str()) && !broken.devices.contains(parent) {
                errors.push(at(key("parent"), format!("unknown device {parent:?}")));
            } else if parent == &dev.id {
                errors.push(at(
                    key("parent"),
                    "a device cannot be its own parent".into(),
                ));
            }
        }
        match dev.source_kind() {
            None => errors.push(at(
                key("source"),
                "set `endpoint` (Modbus) or `source`".into(),
            )),
            Some(SourceKind::Modbus) => {
                let endpoint = match &dev.endpoint {
                    None => {
                        errors.push(at(key("endpoint"), "required for a Modbus device".into()));
                        None
                    }
                    Some(name) => match endpoints.get(name.as_str()) {
                        Some(&e) => Some(&config.modbus.endpoints[e]),
                        None => {
                            if !broken.endpoints.contains(name) {
                                errors.push(at(
                                    key("endpoint"),
                                    format!("unknown endpoint {name:?}"),
                                ));
                            }
                            None
                        }
                    },
                };
                match dev.unit_id {
                    None => errors.push(at(key("unit_id"), "required for a Modbus device".into())),
                    Some(0) => errors.push(at(
                        key("unit_id"),
                        "0 is the broadcast address, which never answers reads".into(),
                    )),
                    Some(unit) => {
                        if let Some(ep) = &dev.endpoint
                            && let Some(other) = seen_units.insert((ep.as_str(), unit), i)
                        {
                            errors.push(at(
                                key("unit_id"),
                                format!(
                                    "unit {unit} on endpoint {ep:?} is already used by devices[{other}]"
                                ),
                            ));
                        }
                    }
                }
                match &dev.profile {
                    None => errors.push(at(key("profile"), "required for a Modbus device".into())),
                    Some(name) => match profiles.get(name) {
                        None => {
                            errors.push(at(key("profile"), format!("unknown profile {name:?}")))
                        }
                        Some(profile) => {
                            let limits = endpoint
                                .map(|ep| PlanLimits {
                                    max_registers: ep.max_registers,
                                    max_bits: ep.max_bits,
                                    max_gap: profile.max_gap,
                                })
                                .unwrap_or_else(|| PlanLimits {
                                    max_gap: profile.max_gap,
                                    ..PlanLimits::default()
                                });
                            if checked_profiles.insert(name.as_str())
                                && let Err(e) = CompiledProfile::compile(name, profile, &limits)
                            {
                                errors.push(at(format!("profiles.{name}"), e.to_string()));
                            }
                        }
                    },
                }
            }
        }
    }
    if config.devices.is_empty() {
        warnings.push(at("devices".into(), "no devices configured".into()));
    }
    let builtin = |name: &str| {
        super::profile::BUILTIN_PROFILES
            .iter()
            .any(|(n, _)| *n == name)
    };
    for name in profiles.keys().filter(|n| !builtin(n)) {
        let used = config
            .devices
            .iter()
            .any(|d| d.profile.as_deref() == Some(name));
        if !used {
            warnings.push(at(
                format!("profiles.{name}"),
                "not used by any device".into(),
            ));
        }
    }
}

fn valid_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
