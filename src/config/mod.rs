//! Configuration: typed structs, loading from TOML plus environment, and validation.
//!
//! Loading is two passes. The `config` crate merges the file with `GRIDWATCH__...`
//! environment overrides into one value tree; then every section and every array element is
//! deserialized on its own, so one bad device does not hide the errors of the next, and each
//! error carries the file and the full key path (`devices[3].profile: ...`). Semantic checks
//! (unknown profile or endpoint, duplicate ids) run after and are collected the same way.

mod alarms;
mod mqtt;
pub mod profile;
mod types;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use mqtt::*;
pub use profile::{DataType, ProfileConfig, RegisterConfig, Table, WordOrder};
pub use types::*;

/// One problem found in the configuration, located by file and key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file the problem is in (the main config or a profile file).
    pub file: String,
    /// Key path inside that file, e.g. `devices[3].profile`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// Every error found while loading a configuration (never empty).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// A validated configuration with every profile resolved.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// Where the configuration came from (a path, or `<demo>` for the embedded one).
    pub origin: String,
    /// The configuration itself.
    pub config: Config,
    /// All profiles by name: `[profiles.*]` plus those found in `daemon.profile_dirs`.
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// Problems that do not stop the daemon (printed by `gridwatch check`).
    pub warnings: Vec<ConfigIssue>,
}

/// Loads, merges with the environment and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigIssue {
            file: origin.clone(),
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&text, &origin, &base, &profile::BUILTIN_PROFILES)
}

/// Loads a configuration from TOML text; `base` resolves relative `profile_dirs`, and
/// `extra_profiles` (name, TOML text) fill in names that neither the config nor the
/// directories define.
pub fn load_str(
    text: &str,
    origin: &str,
    base: &Path,
    extra_profiles: &[(&str, &str)],
) -> Result<LoadedConfig, ConfigErrors> {
    let mut issues = Vec::new();
    let issue = |key: &str, message: String| ConfigIssue {
        file: origin.to_string(),
        key: key.to_string(),
        message,
    };
    let merged = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("GRIDWATCH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()
        .and_then(|c| c.try_deserialize::<config::Value>())
        .map_err(|e| ConfigErrors(vec![issue("", e.to_string())]))?;
    let mut root = merged
        .into_table()
        .map_err(|e| ConfigErrors(vec![issue("", e.to_string())]))?;

    let mut take = |key: &str| root.remove(key);
    let daemon: DaemonConfig = section(take("daemon"), "daemon", origin, &mut issues);
    let storage: StorageConfig = section(take("storage"), "storage", origin, &mut issues);
    let api: ApiConfig = section(take("api"), "api", origin, &mut issues);
    let eventlog: EventLogConfig = section(take("eventlog"), "eventlog", origin, &mut issues);
    let history: crate::history::HistoryConfig =
        section(take("history"), "history", origin, &mut issues);
    let kpi: crate::kpi::KpiConfig = section(take("kpi"), "kpi", origin, &mut issues);
    let locate: crate::detect::locate::LocateConfig =
        section(take("locate"), "locate", origin, &mut issues);
    let mut broken = Broken::default();
    let modbus_value = take("modbus");
    broken.endpoints = raw_names(
        modbus_value
            .as_ref()
            .and_then(|m| m.clone().into_table().ok())
            .and_then(|mut t| t.remove("endpoints")),
        "name",
    );
    let modbus = modbus_value
        .map(|v| modbus_section(v, origin, &mut issues))
        .unwrap_or_default();
    let mqtt = take("mqtt").map(|v| mqtt_section(v, origin, &mut issues));
    let devices_value = take("devices");
    broken.devices = raw_names(devices_value.clone(), "id");
    let devices: Vec<DeviceConfig> = array(devices_value, "devices", origin, &mut issues);
    let alarms = section(take("alarms"), "alarms", origin, &mut issues);
    let rules = array(take("rules"), "rules", origin, &mut issues);
    let notify = section(take("notify"), "notify", origin, &mut issues);
    let crews = array(take("crews"), "crews", origin, &mut issues);
    let mut profiles = BTreeMap::new();
    if let Some(v) = take("profiles") {
        match v.into_table() {
            Ok(table) => {
                for (name, value) in table {
                    broken.profiles.insert(name.clone());
                    let key = format!("profiles.{name}");
                    if let Some(p) = element::<ProfileConfig>(value, &key, origin, &mut issues) {
                        profiles.insert(name, p);
                    }
                }
            }
            Err(e) => issues.push(issue("profiles", e.to_string())),
        }
    }
    for key in root.keys() {
        issues.push(issue(key, "unknown section".to_string()));
    }

    for dir in &daemon.profile_dirs {
        let dir = if dir.is_absolute() {
            dir.clone()
        } else {
            base.join(dir)
        };
        load_profile_dir(&dir, &mut profiles, &mut issues);
    }

    for (name, text) in extra_profiles {
        let file = format!("<builtin>/{name}.toml");
        if let Some(p) = parse_profile_file(text, &file, &mut issues) {
            profiles.entry((*name).to_string()).or_insert(p);
        }
    }
    let config = Config {
        daemon,
        storage,
        modbus,
        mqtt,
        devices,
        alarms,
        rules,
        notify,
        crews,
        api,
        eventlog,
        history,
        kpi,
        locate,
    };
    // Names whose element failed to parse: references to them are not "unknown" as well.
    for ep in &config.modbus.endpoints {
        broken.endpoints.remove(&ep.name);
    }
    for d in &config.devices {
        broken.devices.remove(&d.id);
    }
    broken.profiles.retain(|p| !profiles.contains_key(p));
    let mut warnings = Vec::new();
    validate::validate(
        &config,
        &profiles,
        &broken,
        origin,
        &mut issues,
        &mut warnings,
    );
    if issues.is_empty() {
        Ok(LoadedConfig {
            origin: origin.to_string(),
            config,
            profiles,
            warnings,
        })
    } else {
        Err(ConfigErrors(issues))
    }
}

fn load_profile_dir(
    dir: &Path,
    profiles: &mut BTreeMap<String, ProfileConfig>,
    issues: &mut Vec<ConfigIssue>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            issues.push(ConfigIssue {
                file: dir.display().to_string(),
                key: String::new(),
                message: format!("cannot read profile directory: {e}"),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    for path in paths {
        let file = path.display().to_string();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                // A profile defined inline in the main config wins over a file of the same name.
                if let Some(p) = parse_profile_file(&text, &file, issues) {
                    profiles.entry(name.to_string()).or_insert(p);
                }
            }
            Err(e) => issues.push(ConfigIssue {
                file,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }),
        }
    }
}

/// Parses one profile file (`NAME.toml`), reporting errors with their key path.
pub fn parse_profile_file(
    text: &str,
    file: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<ProfileConfig> {
    let de = toml::Deserializer::new(text);
    match serde_path_to_error::deserialize::<_, ProfileConfig>(de) {
        Ok(p) => Some(p),
        Err(e) => {
            issues.push(ConfigIssue {
                file: file.to_string(),
                key: e.path().to_string(),
                message: e.inner().message().trim().to_string(),
            });
            None
        }
    }
}

/// Names of elements that were written in the file but failed to deserialize.
#[derive(Debug, Default)]
pub(crate) struct Broken {
    pub endpoints: std::collections::BTreeSet<String>,
    pub devices: std::collections::BTreeSet<String>,
    pub profiles: std::collections::BTreeSet<String>,
}

/// The `key` string of every table in an array value, whether or not the table is valid.
fn raw_names(value: Option<config::Value>, key: &str) -> std::collections::BTreeSet<String> {
    value
        .and_then(|v| v.into_array().ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|item| item.into_table().ok()?.remove(key)?.into_string().ok())
        .collect()
}

/// Deserializes an optional section, falling back to its default on error (after recording it).
fn section<T: DeserializeOwned + Default>(
    value: Option<config::Value>,
    key: &str,
    origin: &str,
    issues: &mut Vec<ConfigIssue>,
) -> T {
    match value {
        None => T::default(),
        Some(v) => element(v, key, origin, issues).unwrap_or_default(),
    }
}

/// Deserializes each element of an array on its own so that every bad element is reported.
fn array<T: DeserializeOwned>(
    value: Option<config::Value>,
    key: &str,
    origin: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<T> {
    let Some(value) = value else {
        return Vec::new();
    };
    match value.into_array() {
        Ok(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| element(v, &format!("{key}[{i}]"), origin, issues))
            .collect(),
        Err(e) => {
            issues.push(ConfigIssue {
                file: origin.to_string(),
                key: key.to_string(),
                message: e.to_string(),
            });
            Vec::new()
        }
    }
}

fn modbus_section(
    value: config::Value,
    origin: &str,
    issues: &mut Vec<ConfigIssue>,
) -> ModbusConfig {
    match value.into_table() {
        Ok(mut table) => {
            let endpoints = array(
                table.remove("endpoints"),
                "modbus.endpoints",
                origin,
                issues,
            );
            for key in table.keys() {
                issues.push(ConfigIssue {
                    file: origin.to_string(),
                    key: format!("modbus.{key}"),
                    message: "unknown field, expected `endpoints`".to_string(),
                });
            }
            ModbusConfig { endpoints }
        }
        Err(e) => {
            issues.push(ConfigIssue {
                file: origin.to_string(),
                key: "modbus".to_string(),
                message: e.to_string(),
            });
            ModbusConfig::default()
        }
    }
}

/// `[mqtt]`: the scalar keys as one struct, each subscription on its own (so every bad one
/// is reported with its index).
fn mqtt_section(value: config::Value, origin: &str, issues: &mut Vec<ConfigIssue>) -> MqttConfig {
    match value.into_table() {
        Ok(mut table) => {
            let subscriptions = array(
                table.remove("subscriptions"),
                "mqtt.subscriptions",
                origin,
                issues,
            );
            let rest = config::Value::new(None, config::ValueKind::Table(table));
            let mut mqtt: MqttConfig = element(rest, "mqtt", origin, issues).unwrap_or_default();
            mqtt.subscriptions = subscriptions;
            mqtt
        }
        Err(e) => {
            issues.push(ConfigIssue {
                file: origin.to_string(),
                key: "mqtt".to_string(),
                message: e.to_string(),
            });
            MqttConfig::default()
        }
    }
}

fn element<T: DeserializeOwned>(
    value: config::Value,
    key: &str,
    origin: &str,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner.is_empty() || inner == "." {
                key.to_string()
            } else {
                format!("{key}.{inner}")
            };
            issues.push(ConfigIssue {
                file: origin.to_string(),
                key: full,
                message: clean_message(&e.into_inner().to_string()),
            });
            None
        }
    }
}

/// The config crate appends ` for key `x`` to its messages; our key path already says it.
fn clean_message(msg: &str) -> String {
    match msg.rfind(" for key `") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests;
