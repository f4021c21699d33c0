//! `[mqtt]`: the broker connection and the subscriptions that turn messages into readings.
//!
//! Every key is documented in `config/gridwatch.toml`; defaults live in the `default_*`
//! functions below. Semantic checks (pattern syntax, broker address, field names) are in
//! `validate.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1 (default; every broker speaks it).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.
    #[serde(rename = "5")]
    V5,
}

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `host:port` of the broker (1883 plain, 8883 usually TLS). Empty = no MQTT source
    /// (`gridwatch demo` then starts its own broker).
    #[serde(default)]
    pub broker: String,
    /// Client id. Keep it stable: the broker keys the persistent session on it, so messages
    /// published while gridwatch restarts are kept for this id only.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name (empty = anonymous).
    #[serde(default)]
    pub username: String,
    /// Password (or `GRIDWATCH__MQTT__PASSWORD`).
    #[serde(default)]
    pub password: String,
    /// TLS settings; without this table the connection is plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// Keep-alive interval: the broker drops the connection after 1.5× this without traffic.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Start a fresh session on every connect. Leave it `false` (the default) so the broker
    /// queues QoS 1 messages while gridwatch is away and delivers them when it returns.
    #[serde(default)]
    pub clean_session: bool,
    /// MQTT 5 only: how long the broker keeps the session after a disconnect.
    #[serde(default = "default_session_expiry", with = "humantime_serde")]
    pub session_expiry: Duration,
    /// First wait before reconnecting; doubles (with jitter) up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Messages stamped further than this in the future (device clock ahead) are rejected.
    #[serde(default = "default_max_future_skew", with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Messages stamped older than this are rejected (a meter with a reset clock sends 1970).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// Register devices that are not in `[[devices]]` when their first message arrives
    /// (`false`: such messages are counted as `unknown_device` and dropped).
    #[serde(default)]
    pub auto_register: bool,
    /// Most devices `auto_register` may add; beyond this, messages count as `unknown_device`
    /// (protects memory against a flood of made-up topics).
    #[serde(default = "default_max_auto_devices")]
    pub max_auto_devices: usize,
    /// A device with no message for this many expected intervals shows `offline`.
    #[serde(default = "default_offline_after")]
    pub offline_after: u32,
    /// Largest payload accepted, in bytes (the broker may enforce a smaller one).
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// `[[mqtt.subscriptions]]`: topic filters and how their payloads map to fields.
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file with the CA certificate(s) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate (chain) for brokers that require client authentication.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// A JSON object; `fields` says which values to take.
    #[default]
    Json,
    /// One plain number per message (`230.1`); the field comes from `{field}` in the pattern.
    Number,
    /// InfluxDB line protocol, one or more lines.
    Line,
}

/// Unit of a timestamp in the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampFormat {
    /// RFC 3339 string, e.g. `2026-11-23T10:00:00.250Z` (default).
    #[default]
    Rfc3339,
    /// Seconds since the epoch (may have a fraction).
    S,
    /// Milliseconds since the epoch.
    Ms,
    /// Microseconds since the epoch.
    Us,
    /// Nanoseconds since the epoch.
    Ns,
}

/// `timestamp = { path, format }`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// Where the timestamp is: a dotted path (`ts`, `meta.time`) or a JSON pointer
    /// (`/meta/time`). A message without it is stamped with its arrival time.
    #[serde(default = "default_ts_path")]
    pub path: String,
    /// `rfc3339` (default), `s`, `ms`, `us` or `ns`.
    #[serde(default)]
    pub format: TimestampFormat,
}

impl Default for TimestampConfig {
    fn default() -> Self {
        TimestampConfig {
            path: default_ts_path(),
            format: TimestampFormat::default(),
        }
    }
}

/// One field taken from a payload.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// JSON: dotted path (`v.a`) or JSON pointer (`/v/a`). Number: the `{field}` topic
    /// segment. Line: the line-protocol field key.
    pub path: String,
    /// Field name written to the store (`voltage_a`, ...).
    pub name: String,
    /// Multiplier applied to the value (e.g. `0.001` for Wh → kWh).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Engineering unit shown by the API.
    #[serde(default)]
    pub unit: Option<String>,
    /// Event flag: when set, the value at `path` must be a string (or null) and the field is
    /// written as `1.0` when it equals this and `0.0` otherwise, e.g. `event = "last_gasp"` →
    /// `last_gasp = 1` on the last-gasp message and `0` on the others (so the alarm clears).
    #[serde(default)]
    pub equals: Option<String>,
}

impl FieldMapping {
    /// `path` → `name`, unscaled, no unit, not an event flag.
    pub fn new(path: &str, name: &str) -> Self {
        FieldMapping {
            path: path.into(),
            name: name.into(),
            scale: 1.0,
            unit: None,
            equals: None,
        }
    }
}

/// `[[mqtt.subscriptions]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// How topics map to devices: `/`-separated levels where `{device}` (required),
    /// `{site}`, `{feeder}`, `{parent}` and `{field}` capture a level, `+` or `{_}` match any
    /// one level, and a final `#` matches the rest.
    pub pattern: String,
    /// MQTT topic filter to subscribe to; derived from `pattern` (captures become `+`) when
    /// empty.
    #[serde(default)]
    pub topic: String,
    /// Payload format: `json` (default), `number` or `line`.
    #[serde(default)]
    pub format: PayloadFormat,
    /// Kind of auto-registered devices (the line-protocol measurement).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Site of auto-registered devices when the pattern has no `{site}`.
    #[serde(default)]
    pub site: String,
    /// Feeder of auto-registered devices when the pattern has no `{feeder}`.
    #[serde(default)]
    pub feeder: String,
    /// Fields to take. Required for `json`; optional for `number` and `line` (without it every
    /// numeric value is taken under its own name, unscaled).
    #[serde(default)]
    pub fields: Vec<FieldMapping>,
    /// Where the message's timestamp is (JSON), and its unit (JSON and line protocol).
    #[serde(default)]
    pub timestamp: TimestampConfig,
    /// How often a device on this subscription reports; a device silent for
    /// `offline_after` × this shows `offline`. Declared devices use their own `interval`.
    #[serde(default = "default_expected_interval", with = "humantime_serde")]
    pub expected_interval: Duration,
}

impl SubscriptionConfig {
    /// A `meter` subscription on `pattern` with the timestamp at `ts` in `format`, no
    /// site/feeder defaults, a 1 s expected interval.
    pub fn new(
        pattern: &str,
        format: PayloadFormat,
        fields: Vec<FieldMapping>,
        ts_format: TimestampFormat,
    ) -> Self {
        SubscriptionConfig {
            pattern: pattern.into(),
            topic: String::new(),
            format,
            kind: "meter".into(),
            site: String::new(),
            feeder: String::new(),
            fields,
            timestamp: TimestampConfig {
                path: "ts".into(),
                format: ts_format,
            },
            expected_interval: Duration::from_secs(1),
        }
    }
}

fn default_client_id() -> String {
    "gridwatch".to_string()
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn default_session_expiry() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}

fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

fn default_max_future_skew() -> Duration {
    Duration::from_secs(600)
}

fn default_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_max_auto_devices() -> usize {
    100_000
}

fn default_offline_after() -> u32 {
    3
}

fn default_max_payload() -> usize {
    64 * 1024
}

fn default_ts_path() -> String {
    "ts".to_string()
}

fn default_scale() -> f64 {
    1.0
}

fn default_kind() -> String {
    "meter".to_string()
}

fn default_expected_interval() -> Duration {
    Duration::from_secs(60)
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            broker: String::new(),
            client_id: default_client_id(),
            username: String::new(),
            password: String::new(),
            tls: None,
            protocol: MqttProtocol::default(),
            keep_alive: default_keep_alive(),
            clean_session: false,
            session_expiry: default_session_expiry(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            max_future_skew: default_max_future_skew(),
            max_age: default_max_age(),
            auto_register: false,
            max_auto_devices: default_max_auto_devices(),
            offline_after: default_offline_after(),
            max_payload: default_max_payload(),
            subscriptions: Vec::new(),
        }
    }
}
