//! Semantic checks that serde cannot express: references between sections, ranges, duplicates.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{
    Broken, Config, ConfigIssue, InfluxApi, MqttConfig, PayloadFormat, ProfileConfig, SourceKind,
    Transport,
};
use crate::sources::modbus::compiled::CompiledProfile;
use crate::sources::modbus::planner::PlanLimits;
use crate::sources::mqtt::topic::{Capture, TopicPattern};

/// More runtime threads than this is a typo, not a machine.
const MAX_WORKER_THREADS: usize = 1024;

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

    validate_api(config, origin, errors, warnings);

    if config.daemon.channel_capacity == 0 {
        errors.push(at(
            "daemon.channel_capacity".into(),
            "must be at least 1".into(),
        ));
    }

    if config.daemon.worker_threads > MAX_WORKER_THREADS {
        errors.push(at(
            "daemon.worker_threads".into(),
            format!("must be at most {MAX_WORKER_THREADS} (0 = one per CPU core)"),
        ));
    }

    if config.daemon.poll_threads > MAX_WORKER_THREADS {
        errors.push(at(
            "daemon.poll_threads".into(),
            format!("must be at most {MAX_WORKER_THREADS} (0 = poll on the shared runtime)"),
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
    if config.history.fields.len() > crate::history::MAX_FIELDS {
        errors.push(at(
            "history.fields".into(),
            format!(
                "at most {} chart fields (got {})",
                crate::history::MAX_FIELDS,
                config.history.fields.len()
            ),
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
        if influx.batch_max_bytes < 4096 {
            errors.push(at(
                "storage.influx.batch_max_bytes".into(),
                "must be at least 4096 (one wide line fits)".into(),
            ));
        }
        if influx.flush_interval.is_zero() {
            errors.push(at(
                "storage.influx.flush_interval".into(),
                "must be longer than zero".into(),
            ));
        }
    }

    if let Some(mqtt) = &config.mqtt {
        validate_mqtt(mqtt, &mut |k, m| errors.push(at(k, m)));
    }
    let spool = &config.storage.spool;
    if !(4096..=1 << 30).contains(&spool.segment_bytes) {
        errors.push(at(
            "storage.spool.segment_bytes".into(),
            "must be 4096 to 1073741824 (1 GiB)".into(),
        ));
    }
    if spool.max_bytes < spool.segment_bytes.saturating_mul(2) {
        errors.push(at(
            "storage.spool.max_bytes".into(),
            format!(
                "must be at least twice segment_bytes ({}), got {}",
                spool.segment_bytes, spool.max_bytes
            ),
        ));
    }
    if spool.fsync == Some(super::FsyncMode::EveryBatch) && spool.fsync_interval.is_some() {
        errors.push(at(
            "storage.spool.fsync_interval".into(),
            "only meaningful with fsync = \"interval\"".into(),
        ));
    }
    if spool.fsync_interval.is_some_and(|i| i.is_zero()) {
        errors.push(at(
            "storage.spool.fsync_interval".into(),
            "must be longer than zero".into(),
        ));
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
        match ep.transport {
            Transport::Tcp | Transport::RtuOverTcp => {
                if ep.address.is_empty() {
                    errors.push(at(
                        key("address"),
                        format!("required with transport = {:?}", ep.transport.as_str()),
                    ));
                } else if !valid_host_port(&ep.address) {
                    errors.push(at(
                        key("address"),
                        format!("expected host:port, got {:?}", ep.address),
                    ));
                }
                if ep.transport == Transport::Tcp && ep.device.is_some() {
                    errors.push(at(
                        key("device"),
                        "only used with transport = \"rtu\"".into(),
                    ));
                }
            }
            Transport::Rtu => {
                if ep.device.as_ref().is_none_or(|d| d.as_os_str().is_empty()) {
                    errors.push(at(
                        key("device"),
                        "required with transport = \"rtu\" (a serial device such as /dev/ttyUSB0)"
                            .into(),
                    ));
                }
                if !ep.address.is_empty() {
                    errors.push(at(
                        key("address"),
                        "not used with transport = \"rtu\" (set `device`)".into(),
                    ));
                }
                if !(7..=8).contains(&ep.data_bits) {
                    errors.push(at(key("data_bits"), "must be 7 or 8".into()));
                }
                if !(1..=2).contains(&ep.stop_bits) {
                    errors.push(at(key("stop_bits"), "must be 1 or 2".into()));
                }
            }
        }
        if ep.transport.is_bus() {
            if !(300..=4_000_000).contains(&ep.baud) {
                errors.push(at(
                    key("baud"),
                    format!("must be 300 to 4000000, got {}", ep.baud),
                ));
            }
            if ep.max_in_flight > 1 {
                errors.push(at(
                    key("max_in_flight"),
                    "an RS-485 bus carries one request at a time; must be 1".into(),
                ));
            }
            if ep.backoff_max.is_zero() {
                errors.push(at(key("backoff_max"), "must be longer than zero".into()));
            }
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
            Some(SourceKind::Mqtt) => {
                for (k, set) in [
                    ("endpoint", dev.endpoint.is_some()),
                    ("unit_id", dev.unit_id.is_some()),
                    ("profile", dev.profile.is_some()),
                ] {
                    if set {
                        errors.push(at(
                            key(k),
                            "only for Modbus devices (source = \"mqtt\")".into(),
                        ));
                    }
                }
                if config
                    .mqtt
                    .as_ref()
                    .is_none_or(|m| m.subscriptions.is_empty())
                {
                    warnings.push(at(
                        key("source"),
                        "an MQTT device, but no [[mqtt.subscriptions]] are configured".into(),
                    ));
                }
            }
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
    super::alarms::validate(config, origin, errors);
    validate_topology(config, origin, errors, warnings);
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

/// Checks `[mqtt]`; `err(key, message)` records one problem.
fn validate_mqtt(mqtt: &MqttConfig, err: &mut dyn FnMut(String, String)) {
    if !mqtt.broker.is_empty() && !valid_host_port(&mqtt.broker) {
        err(
            "mqtt.broker".into(),
            format!("expected host:port, got {:?}", mqtt.broker),
        );
    }
    if mqtt.client_id.trim().is_empty() {
        err(
            "mqtt.client_id".into(),
            "must be a non-empty, stable id (the persistent session is keyed on it)".into(),
        );
    }
    if !mqtt.password.is_empty() && mqtt.username.is_empty() {
        err("mqtt.password".into(), "set `username` too".into());
    }
    if let Some(tls) = &mqtt.tls
        && tls.client_cert.is_some() != tls.client_key.is_some()
    {
        err(
            "mqtt.tls".into(),
            "client_cert and client_key go together".into(),
        );
    }
    for (k, d) in [
        ("keep_alive", mqtt.keep_alive),
        ("reconnect_min", mqtt.reconnect_min),
        ("max_future_skew", mqtt.max_future_skew),
        ("max_age", mqtt.max_age),
    ] {
        if d.is_zero() {
            err(format!("mqtt.{k}"), "must be longer than zero".into());
        }
    }
    if mqtt.reconnect_max < mqtt.reconnect_min {
        err(
            "mqtt.reconnect_max".into(),
            "must not be shorter than reconnect_min".into(),
        );
    }
    if mqtt.offline_after == 0 {
        err("mqtt.offline_after".into(), "must be at least 1".into());
    }
    if mqtt.max_payload == 0 {
        err("mqtt.max_payload".into(), "must be at least 1".into());
    }
    if !mqtt.broker.is_empty() && mqtt.subscriptions.is_empty() {
        err(
            "mqtt.subscriptions".into(),
            "a broker without subscriptions receives nothing".into(),
        );
    }
    for (i, sub) in mqtt.subscriptions.iter().enumerate() {
        let key = |k: &str| format!("mqtt.subscriptions[{i}].{k}");
        let pattern = match TopicPattern::parse(&sub.pattern, sub.format != PayloadFormat::Line) {
            Ok(p) => Some(p),
            Err(e) => {
                err(key("pattern"), e.to_string());
                None
            }
        };
        if sub.kind.is_empty()
            || !sub
                .kind
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            err(
                key("kind"),
                format!("expected a word like \"meter\", got {:?}", sub.kind),
            );
        }
        if sub.expected_interval.is_zero() {
            err(key("expected_interval"), "must be longer than zero".into());
        }
        if sub.fields.len() > usize::from(u16::MAX) {
            err(key("fields"), "too many fields".into());
        }
        let has_field = pattern.as_ref().is_some_and(|p| p.has(Capture::Field));
        match sub.format {
            PayloadFormat::Json if sub.fields.is_empty() => {
                err(key("fields"), "required for format = \"json\"".into());
            }
            PayloadFormat::Number if !has_field && sub.fields.len() != 1 => err(
                key("pattern"),
                "format = \"number\" needs a {field} level, or exactly one entry in `fields`"
                    .into(),
            ),
            _ => {}
        }
        let mut names = BTreeSet::new();
        for (j, f) in sub.fields.iter().enumerate() {
            let fkey = |k: &str| format!("mqtt.subscriptions[{i}].fields[{j}].{k}");
            if f.name.is_empty() {
                err(fkey("name"), "must not be empty".into());
            } else if !names.insert(f.name.as_str()) {
                err(fkey("name"), format!("duplicate field name {:?}", f.name));
            }
            if f.path.is_empty() && (sub.format != PayloadFormat::Number || has_field) {
                err(fkey("path"), "must not be empty".into());
            }
            if !f.scale.is_finite() || f.scale == 0.0 {
                err(
                    fkey("scale"),
                    format!("must be a non-zero number, got {}", f.scale),
                );
            }
            if f.equals.is_some() && sub.format != PayloadFormat::Json {
                err(fkey("equals"), "only for format = \"json\"".into());
            }
        }
    }
}

fn valid_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// `[api]` and `[eventlog]`: auth only off on loopback, well-formed tokens, sane retention.
fn validate_api(
    config: &Config,
    origin: &str,
    errors: &mut Vec<ConfigIssue>,
    warnings: &mut Vec<ConfigIssue>,
) {
    use super::{AuthMode, Retention};
    let at = |key: String, message: String| ConfigIssue {
        file: origin.to_string(),
        key,
        message,
    };
    let api = &config.api;
    if api.auth == AuthMode::Off && !config.daemon.http_listen.ip().is_loopback() {
        errors.push(at(
            "api.auth".into(),
            format!(
                "\"off\" is allowed only when daemon.http_listen is a loopback address, not {}",
                config.daemon.http_listen
            ),
        ));
    }
    if api.max_failures == 0 {
        errors.push(at("api.max_failures".into(), "must be at least 1".into()));
    }
    let mut names = BTreeSet::new();
    for (i, t) in api.tokens.iter().enumerate() {
        let key = |k: &str| format!("api.tokens[{i}].{k}");
        if !crate::eventlog::valid_user_name(&t.name) {
            errors.push(at(key("name"), "1 to 64 of A-Z a-z 0-9 . _ -".into()));
        } else if !names.insert(t.name.as_str()) {
            errors.push(at(
                key("name"),
                format!("duplicate token name {:?}", t.name),
            ));
        }
        let given = [
            t.token.is_some(),
            t.token_env.is_some(),
            t.token_sha256.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if given != 1 {
            errors.push(at(
                key("token"),
                "give exactly one of token, token_env, token_sha256".into(),
            ));
        }
        if let Some(tok) = &t.token
            && tok.len() < 16
        {
            errors.push(at(key("token"), "must be at least 16 characters".into()));
        }
        if let Some(var) = &t.token_env {
            match std::env::var(var) {
                Ok(v) if v.len() >= 16 => {}
                Ok(_) => errors.push(at(
                    key("token_env"),
                    format!("${var} must hold at least 16 characters"),
                )),
                Err(_) => errors.push(at(key("token_env"), format!("${var} is not set"))),
            }
        }
        if let Some(h) = &t.token_sha256
            && !(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            errors.push(at(key("token_sha256"), "expected 64 hex digits".into()));
        }
    }
    let r = &config.eventlog.retention;
    for (name, v) in [
        ("device_status", r.device_status),
        ("alarm", r.alarm),
        ("maintenance", r.maintenance),
        ("system", r.system),
        ("audit", r.audit),
    ] {
        if v == Retention::For(std::time::Duration::ZERO) {
            errors.push(at(
                format!("eventlog.retention.{name}"),
                "must be longer than zero (or \"forever\")".into(),
            ));
        }
    }
    if let Retention::For(d) = r.audit
        && d.as_secs() < u64::try_from(crate::eventlog::schema::AUDIT_FLOOR_SECS).unwrap_or(0)
        && !d.is_zero()
    {
        warnings.push(at(
            "eventlog.retention.audit".into(),
            "below the 90-day floor for audit and security records; 90 days are kept".into(),
        ));
    }
    if config.eventlog.purge_interval.is_zero() {
        errors.push(at(
            "eventlog.purge_interval".into(),
            "must be longer than zero".into(),
        ));
    }
}

/// Parent cycles are errors; meters without a transformer above them are warnings.
fn validate_topology(
    config: &Config,
    origin: &str,
    errors: &mut Vec<ConfigIssue>,
    warnings: &mut Vec<ConfigIssue>,
) {
    let topology = crate::topology::Topology::from_devices(&config.devices);
    let index_of: HashMap<&str, usize> = config
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i))
        .collect();
    for p in topology.problems(&index_of) {
        let issue = ConfigIssue {
            file: origin.to_string(),
            key: match p.index {
                Some(i) => format!("devices[{i}].{}", p.key),
                None => "devices".into(),
            },
            message: p.message,
        };
        if p.fatal {
            errors.push(issue);
        } else {
            warnings.push(issue);
        }
    }
}
