//! `[alarms]` and `[[rules]]`: what the rule engine and the alarm state machine are told.
//!
//! Every limit of the built-in library is a default here or in [`super::library`], with its
//! source; `config/gridwatch.toml` documents the same keys for users.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::derived::ThermalParams;

/// Voltage standard whose band the `voltage_high` / `voltage_low` rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VoltageStandard {
    /// GB/T 12325-2008: 220 V single-phase +7 % / −10 % (applied to phase-to-neutral).
    #[default]
    Gb12325,
    /// EN 50160 LV: ±10 % (warning), +10 % / −15 % (critical).
    En50160,
    /// ANSI C84.1: Range A 0.95–1.05 pu (warning), Range B 0.917–1.058 pu (critical).
    #[serde(rename = "ansi_c84_1")]
    AnsiC841,
}

/// `[alarms]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmsConfig {
    /// Set false to run without rules and alarms.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Load the built-in rule library (then `[[rules]]` override or extend it).
    #[serde(default = "default_true")]
    pub builtin_rules: bool,
    /// Voltage standard for the band rules: `gb12325`, `en50160` or `ansi_c84_1`.
    #[serde(default)]
    pub standard: VoltageStandard,
    /// Nominal grid frequency, Hz.
    #[serde(default = "default_nominal_frequency")]
    pub nominal_frequency: f64,
    /// Allowed frequency deviation, Hz (GB/T 15945-2008: ±0.2 Hz; ±0.5 Hz small systems).
    #[serde(default = "default_frequency_band")]
    pub frequency_band_hz: f64,
    /// Default time a condition must hold before an alarm is raised (rules may override).
    #[serde(default = "default_delay", with = "humantime_serde")]
    pub delay_on: Duration,
    /// Default time a condition must be gone before an alarm clears (rules may override).
    #[serde(default = "default_delay", with = "humantime_serde")]
    pub delay_off: Duration,
    /// Raise/clear transitions of one alarm within `flapping_window` that make it "flapping".
    #[serde(default = "default_flapping_transitions")]
    pub flapping_transitions: u32,
    /// Window for flapping detection; a flapping alarm clears after a quiet window.
    #[serde(default = "default_flapping_window", with = "humantime_serde")]
    pub flapping_window: Duration,
    /// Missed intervals (of the device's `interval`) before a communication-loss alarm.
    #[serde(default = "default_stale_intervals")]
    pub stale_intervals: u32,
    /// Longest shelving an operator may ask for.
    #[serde(default = "default_max_shelve", with = "humantime_serde")]
    pub max_shelve: Duration,
    /// Alarm state file of older versions (relative paths are under `daemon.data_dir`):
    /// imported once into the event log, which keeps the state now.
    #[serde(default = "default_state_file")]
    pub state_file: PathBuf,
    /// Suppress voltage alarms on a device whose parent shows the same condition (one fault
    /// → one alarm on the faulted element).
    #[serde(default = "default_true")]
    pub correlate_upstream: bool,
    /// Transformer thermal constants for the hot-spot estimate.
    #[serde(default)]
    pub thermal: ThermalParams,
}

fn default_true() -> bool {
    true
}
fn default_nominal_frequency() -> f64 {
    50.0
}
fn default_frequency_band() -> f64 {
    0.2
}
fn default_delay() -> Duration {
    Duration::from_secs(10)
}
fn default_flapping_transitions() -> u32 {
    5
}
fn default_flapping_window() -> Duration {
    Duration::from_secs(600)
}
fn default_stale_intervals() -> u32 {
    5
}
fn default_max_shelve() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_state_file() -> PathBuf {
    PathBuf::from("alarms.json")
}

impl Default for AlarmsConfig {
    fn default() -> Self {
        AlarmsConfig {
            enabled: true,
            builtin_rules: true,
            standard: VoltageStandard::default(),
            nominal_frequency: default_nominal_frequency(),
            frequency_band_hz: default_frequency_band(),
            delay_on: default_delay(),
            delay_off: default_delay(),
            flapping_transitions: default_flapping_transitions(),
            flapping_window: default_flapping_window(),
            stale_intervals: default_stale_intervals(),
            max_shelve: default_max_shelve(),
            state_file: default_state_file(),
            correlate_upstream: true,
            thermal: ThermalParams::default(),
        }
    }
}

/// Alarm severity, lowest first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Needs attention during normal work.
    #[default]
    Warning,
    /// Needs a crew now.
    Critical,
}

impl Severity {
    /// `warning` / `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What a rule computes from the readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    /// The quantity against the levels (hysteresis raise/clear, delays).
    Threshold,
    /// Rise of the quantity over `window` against the levels.
    Rate,
    /// Missed reporting intervals against the levels (communication loss; wall clock).
    Stale,
    /// Consecutive identical non-zero values against the levels.
    Stuck,
    /// |z-score| of the quantity against its own EWMA mean/variance.
    Statistical,
    /// Drop of a counter between consecutive readings against the levels.
    Decreasing,
    /// Raised by fault localisation (`outage_transformer`, `outage_feeder`), never by
    /// readings; not accepted in `[[rules]]`.
    #[serde(skip)]
    Located,
}

/// Which way a level is crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Alarm when the value is at or above `raise`.
    #[default]
    Above,
    /// Alarm when the value is at or below `raise`.
    Below,
}

/// One severity level of a rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    /// `warning` or `critical`.
    pub severity: Severity,
    /// The value at which the level is reached.
    pub raise: f64,
    /// The value at which an active alarm clears (hysteresis); default `raise`.
    #[serde(default)]
    pub clear: Option<f64>,
    /// How long `raise` must hold for this level; default the rule's `delay_on`.
    #[serde(default, with = "humantime_serde")]
    pub delay: Option<Duration>,
}

/// `[[rules]]`: a rule, or an override of a built-in rule with the same `id` (only the keys
/// given replace the built-in's; with `devices` the override applies to those devices only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule id, part of the alarm key and the MQTT topic (`[a-z0-9_]`).
    pub id: String,
    /// `false` disables the rule (or the built-in of this id).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `threshold`, `rate`, `stale`, `stuck`, `statistical`, `decreasing`.
    #[serde(default, rename = "type")]
    pub rule_type: Option<RuleType>,
    /// The quantity: a reading field (`oil_temp`) or a derived one (`load_pct`, ...).
    #[serde(default)]
    pub field: Option<String>,
    /// Device kinds the rule applies to (default: all).
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// Device ids the rule applies to (default: all of `kinds`).
    #[serde(default)]
    pub devices: Option<Vec<String>>,
    /// `above` (default) or `below`.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Severity levels, lowest first.
    #[serde(default)]
    pub levels: Option<Vec<Level>>,
    /// Time the condition must hold before raising (default `[alarms] delay_on`).
    #[serde(default, with = "humantime_serde")]
    pub delay_on: Option<Duration>,
    /// Time the condition must be gone before clearing (default `[alarms] delay_off`).
    #[serde(default, with = "humantime_serde")]
    pub delay_off: Option<Duration>,
    /// `rate`: the window the rise is measured over.
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// `statistical`: EWMA weight of a new sample (0–1).
    #[serde(default)]
    pub alpha: Option<f64>,
    /// `statistical`: samples before the rule may fire.
    #[serde(default)]
    pub warmup: Option<u32>,
    /// `statistical`: smallest |value − mean| that counts, in the field's unit.
    #[serde(default)]
    pub min_deviation: Option<f64>,
    /// Rules on the same device whose condition suppresses this one (consequential alarms).
    #[serde(default)]
    pub suppressed_by: Option<Vec<String>>,
    /// Suppress on a device whose parent shows the same condition (see `correlate_upstream`).
    #[serde(default)]
    pub upstream: Option<bool>,
    /// One line for the operator: what is wrong.
    #[serde(default)]
    pub description: Option<String>,
    /// Suggested first action for the field crew.
    #[serde(default)]
    pub action: Option<String>,
    /// Unit of the value and limits, for messages.
    #[serde(default)]
    pub unit: Option<String>,
}

impl RuleConfig {
    /// Fills every key this entry leaves unset from `base`.
    pub fn merged_onto(&self, base: &RuleConfig) -> RuleConfig {
        macro_rules! pick {
            ($($f:ident),*) => { RuleConfig { id: self.id.clone(), $($f: self.$f.clone().or_else(|| base.$f.clone()),)* } };
        }
        pick!(
            enabled,
            rule_type,
            field,
            kinds,
            devices,
            direction,
            levels,
            delay_on,
            delay_off,
            window,
            alpha,
            warmup,
            min_deviation,
            suppressed_by,
            upstream,
            description,
            action,
            unit
        )
    }
}
