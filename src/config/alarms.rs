//! Checks of `[alarms]`, `[[rules]]`, `[notify]` and `[[crews]]`.

use std::collections::BTreeSet;

use super::{Config, ConfigIssue};
use crate::detect::{RuleError, RuleSet};

/// Appends every problem of the alarm sections to `errors`.
pub(super) fn validate(config: &Config, origin: &str, errors: &mut Vec<ConfigIssue>) {
    let at = |key: String, message: String| ConfigIssue {
        file: origin.to_string(),
        key,
        message,
    };
    let a = &config.alarms;
    if a.flapping_transitions < 2 {
        errors.push(at(
            "alarms.flapping_transitions".into(),
            "must be at least 2".into(),
        ));
    }
    if a.flapping_window.is_zero() {
        errors.push(at(
            "alarms.flapping_window".into(),
            "must be longer than zero".into(),
        ));
    }
    if a.stale_intervals == 0 {
        errors.push(at(
            "alarms.stale_intervals".into(),
            "must be at least 1".into(),
        ));
    }
    if !(a.frequency_band_hz.is_finite() && a.frequency_band_hz > 0.0) {
        errors.push(at(
            "alarms.frequency_band_hz".into(),
            "must be a positive number".into(),
        ));
    }
    if !(a.nominal_frequency.is_finite() && a.nominal_frequency > 0.0) {
        errors.push(at(
            "alarms.nominal_frequency".into(),
            "must be a positive number".into(),
        ));
    }
    if let Err(e) = RuleSet::build(a, &config.rules) {
        match e {
            RuleError::Invalid { index, reason, .. } => {
                errors.push(at(format!("rules[{index}]"), reason))
            }
            RuleError::Library(m) => errors.push(at("alarms.builtin_rules".into(), m)),
        }
    }
    let ids: BTreeSet<&str> = config.devices.iter().map(|d| d.id.as_str()).collect();
    for (i, r) in config.rules.iter().enumerate() {
        for d in r.devices.iter().flatten() {
            if !ids.contains(d.as_str()) {
                errors.push(at(
                    format!("rules[{i}].devices"),
                    format!("unknown device {d:?}"),
                ));
            }
        }
    }
    if let Some(m) = &config.notify.mqtt {
        let ok = m
            .broker
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            errors.push(at(
                "notify.mqtt.broker".into(),
                format!("expected host:port, got {:?}", m.broker),
            ));
        }
        if m.topic_prefix.is_empty() || m.topic_prefix.contains(['+', '#']) {
            errors.push(at(
                "notify.mqtt.topic_prefix".into(),
                "must be non-empty without + or #".into(),
            ));
        }
    }
    let mut crews = BTreeSet::new();
    for (i, c) in config.crews.iter().enumerate() {
        if !crews.insert(c.name.as_str()) {
            errors.push(at(
                format!("crews[{i}].name"),
                format!("duplicate crew {:?}", c.name),
            ));
        }
    }
    let mut hooks = BTreeSet::new();
    for (i, w) in config.notify.webhooks.iter().enumerate() {
        let key = |k: &str| format!("notify.webhooks[{i}].{k}");
        if !hooks.insert(w.name.as_str()) {
            errors.push(at(key("name"), format!("duplicate webhook {:?}", w.name)));
        }
        if let Err(e) = reqwest::Url::parse(&w.url) {
            errors.push(at(key("url"), format!("invalid URL {:?}: {e}", w.url)));
        }
        if w.timeout.is_zero() {
            errors.push(at(key("timeout"), "must be longer than zero".into()));
        }
        for c in &w.crews {
            if !crews.contains(c.as_str()) {
                errors.push(at(key("crews"), format!("unknown crew {c:?}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, profile::BUILTIN_PROFILES};

    const BASE: &str = r#"
[[modbus.endpoints]]
name = "gw"
address = "127.0.0.1:502"

[[devices]]
id = "TX-1"
kind = "transformer"
endpoint = "gw"
unit_id = 1
profile = "transformer-monitor"
"#;

    #[test]
    fn the_reference_config_loads() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gridwatch.toml"),
        )
        .unwrap_or_default();
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let loaded = load_str(&text, "gridwatch.toml", &base, &BUILTIN_PROFILES);
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }

    #[test]
    fn alarm_sections_report_errors_with_key_paths() {
        let text = format!(
            r#"{BASE}
[alarms]
standard = "en50160"
flapping_transitions = 1

[[rules]]
id = "oil_temp_high"
devices = ["TX-9"]

[[rules]]
id = "mine"
field = "x"

[notify.mqtt]
broker = "nohost"

[[notify.webhooks]]
name = "w"
url = "not a url"
crews = ["ghost"]
"#
        );
        let errors = match load_str(
            &text,
            "t.toml",
            std::path::Path::new("."),
            &BUILTIN_PROFILES,
        ) {
            Ok(_) => panic!("should fail"),
            Err(e) => e.0,
        };
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "alarms.flapping_transitions",
            "rules[1]",
            "rules[0].devices",
            "notify.mqtt.broker",
            "notify.webhooks[0].url",
            "notify.webhooks[0].crews",
        ] {
            assert!(keys.contains(&k), "{k} missing in {errors:#?}");
        }
    }
}
