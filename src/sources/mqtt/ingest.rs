//! From one MQTT message to readings: topic → device, payload → values, checks, dedup.
//!
//! [`Ingest::handle`] is synchronous and knows nothing about the connection, so tests and
//! the fuzzer drive it directly. Every message ends in exactly one outcome, each a named
//! event (log + counter in `gridwatch_mqtt_messages_total{result}`):
//!
//! - `accepted`: at least one point became a reading;
//! - `rejected`: malformed or implausible (reason in `gridwatch_mqtt_rejected_total{device,
//!   reason}`, and a log line naming topic and reason at most every 10 s per device);
//! - `duplicate`: every point repeats a `(device, subscription, timestamp)` already accepted.
//!   This is what a QoS 1 redelivery after a reconnect looks like; the copy is dropped;
//! - `unknown_device`: the device is not configured and `auto_register` is off (or full).
//!
//! Ordering: a point older than the device's newest is accepted and stored under its own
//! timestamp (the store orders by time; history keeps the newest). Duplicates are found
//! among the last [`DEDUP_WINDOW`] accepted timestamps of a device; an older repeat than
//! that is stored again, which the store turns into an overwrite of the same point.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{MqttConfig, PayloadFormat};
use crate::metrics::{Counter, Registry};
use crate::model::{DeviceInfo, FieldDef, Quality, Reading, Schema, Timestamp, now_ns};
use crate::registry::DeviceRegistry;
use crate::status::{Liveness, StatusBoard};

use super::payload::{Mapping, Point, Reject, Values, check_window};
use super::topic::{PatternError, TopicPattern};

/// Accepted timestamps remembered per device for duplicate detection. The duplicates are
/// QoS 1 redeliveries of messages not yet acknowledged, and the broker keeps at most its
/// in-flight window of those per connection (mosquitto: 20), so 64 per device covers them
/// while 10,000 meters cost about 10 MB.
pub const DEDUP_WINDOW: usize = 64;

/// Most fields a device may report by name (number / line without `fields`).
const MAX_NAMED_FIELDS: usize = 256;

/// Longest device id accepted from a topic or tag.
const MAX_DEVICE_ID: usize = 128;

/// Minimum time between two rejection log lines for one device.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Readings were produced.
    Accepted,
    /// Malformed or implausible.
    Rejected,
    /// Already seen.
    Duplicate,
    /// Not a known device.
    UnknownDevice,
    /// The topic matches no subscription pattern (counted as rejected, reason `no_pattern`).
    NoPattern,
}

/// A subscription compiled for matching.
#[derive(Debug)]
pub struct Subscription {
    /// Topic → device.
    pub pattern: TopicPattern,
    /// The MQTT filter subscribed to.
    pub filter: String,
    mapping: Mapping,
    kind: String,
    site: String,
    feeder: String,
    interval_ns: i64,
}

struct DeviceState {
    info: Arc<DeviceInfo>,
    /// Per subscription: the schema of values that arrive by name.
    named: HashMap<usize, Arc<Schema>>,
    /// Recently accepted `(ts, subscription)`.
    recent: Recent,
    last_arrival: Timestamp,
    offline: bool,
    /// The status board's handle of the device: a message from an online meter only
    /// stores its time there.
    live: Arc<Liveness>,
}

/// The newest [`DEDUP_WINDOW`] accepted `(timestamp, subscription)` pairs of a device,
/// sorted. Readings arrive in time order nearly always, so an insert is a push at the back
/// and the oldest leaves at the front; 16 bytes a pair, allocated as the device fills it.
#[derive(Debug, Default)]
struct Recent(VecDeque<(Timestamp, u32)>);

impl Recent {
    /// Adds the pair; false if it is already there (a duplicate).
    fn insert(&mut self, ts: Timestamp, sub: usize) -> bool {
        let key = (ts, u32::try_from(sub).unwrap_or(u32::MAX));
        let at = match self.0.back() {
            Some(last) if *last < key => self.0.len(),
            None => 0,
            Some(_) => match self.0.binary_search(&key) {
                Ok(_) => return false,
                Err(at) => at,
            },
        };
        if at == 0 && self.0.len() >= DEDUP_WINDOW {
            // Older than the whole window: stored again, as before the window filled.
            return true;
        }
        self.0.insert(at, key);
        if self.0.len() > DEDUP_WINDOW {
            self.0.pop_front();
        }
        true
    }
}

struct Counters {
    accepted: Counter,
    rejected: Counter,
    duplicate: Counter,
    unknown: Counter,
    registered: Counter,
    points: Counter,
}

/// Why the subscriptions could not be compiled (validation normally reports it first).
#[derive(Debug, thiserror::Error)]
#[error("mqtt.subscriptions[{index}].pattern: {source}")]
pub struct SubscriptionError {
    /// Index in `mqtt.subscriptions`.
    pub index: usize,
    /// What is wrong.
    pub source: PatternError,
}

/// The message-to-reading stage of the MQTT source.
pub struct Ingest {
    subs: Vec<Subscription>,
    registry: Arc<DeviceRegistry>,
    status: Arc<StatusBoard>,
    metrics: Arc<Registry>,
    counters: Counters,
    devices: foldhash::HashMap<String, DeviceState>,
    auto_register: bool,
    auto_left: usize,
    offline_after: i64,
    max_future: i64,
    max_age: i64,
    last_log: HashMap<String, (Instant, u64)>,
    points: Vec<Point>,
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Ingest {
    /// Compiles the subscriptions of `cfg`.
    pub fn new(
        cfg: &MqttConfig,
        registry: Arc<DeviceRegistry>,
        status: Arc<StatusBoard>,
        metrics: Arc<Registry>,
    ) -> Result<Ingest, SubscriptionError> {
        let mut subs = Vec::with_capacity(cfg.subscriptions.len());
        for (index, s) in cfg.subscriptions.iter().enumerate() {
            let pattern = TopicPattern::parse(&s.pattern, s.format != PayloadFormat::Line)
                .map_err(|source| SubscriptionError { index, source })?;
            let filter = if s.topic.is_empty() {
                pattern.filter()
            } else {
                s.topic.clone()
            };
            subs.push(Subscription {
                pattern,
                filter,
                mapping: Mapping::new(s, cfg.max_payload),
                kind: s.kind.clone(),
                site: s.site.clone(),
                feeder: s.feeder.clone(),
                interval_ns: ns(s.expected_interval),
            });
        }
        let msg = |result: &str| {
            metrics.counter(
                "gridwatch_mqtt_messages_total",
                "MQTT messages by outcome.",
                &[("result", result)],
            )
        };
        let counters = Counters {
            accepted: msg("accepted"),
            rejected: msg("rejected"),
            duplicate: msg("duplicate"),
            unknown: msg("unknown_device"),
            registered: metrics.counter(
                "gridwatch_mqtt_devices_registered_total",
                "Devices registered on their first MQTT message (auto_register).",
                &[],
            ),
            points: metrics.counter(
                "gridwatch_mqtt_points_total",
                "Readings produced from MQTT messages.",
                &[],
            ),
        };
        Ok(Ingest {
            subs,
            registry,
            status,
            metrics,
            counters,
            devices: Default::default(),
            auto_register: cfg.auto_register,
            auto_left: cfg.max_auto_devices,
            offline_after: i64::from(cfg.offline_after.max(1)),
            max_future: ns(cfg.max_future_skew),
            max_age: ns(cfg.max_age),
            last_log: HashMap::new(),
            points: Vec::new(),
        })
    }

    /// The compiled subscriptions (their `filter`s are what the client subscribes to).
    pub fn subscriptions(&self) -> &[Subscription] {
        &self.subs
    }

    /// Turns one message into readings appended to `out`; `now` is its arrival time.
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Vec<Reading>,
    ) -> Outcome {
        let outcome = self.handle_inner(topic, payload, now, out);
        match outcome {
            Outcome::Accepted => self.counters.accepted.inc(),
            Outcome::Rejected | Outcome::NoPattern => self.counters.rejected.inc(),
            Outcome::Duplicate => self.counters.duplicate.inc(),
            Outcome::UnknownDevice => self.counters.unknown.inc(),
        }
        outcome
    }

    fn handle_inner(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Vec<Reading>,
    ) -> Outcome {
        let Some((sub_index, caps)) = self
            .subs
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.pattern.matches(topic).map(|c| (i, c)))
        else {
            self.reject(
                "",
                topic,
                "no_pattern",
                "topic matches no subscription pattern",
            );
            return Outcome::NoPattern;
        };
        let sub = &self.subs[sub_index];
        let mut points = std::mem::take(&mut self.points);
        points.clear();
        if let Err(e) = sub.mapping.parse(payload, caps.field, &mut points) {
            self.points = points;
            let device = caps.device.to_string();
            self.reject(&device, topic, e.reason(), &e.to_string());
            return Outcome::Rejected;
        }
        // Check every point first: a message is taken whole or not at all.
        for p in &points {
            let device = p.device.as_deref().unwrap_or(caps.device);
            let bad = if device.is_empty() {
                Some(Reject::NoDevice)
            } else if device.len() > MAX_DEVICE_ID || device.chars().any(char::is_control) {
                Some(Reject::BadDevice)
            } else {
                p.ts.and_then(|ts| check_window(ts, now, self.max_future, self.max_age).err())
            };
            if let Some(e) = bad {
                let device = device.to_string();
                self.points = points;
                self.reject(&device, topic, e.reason(), &e.to_string());
                return Outcome::Rejected;
            }
        }
        let (mut accepted, mut duplicates, mut unknown) = (0usize, 0usize, 0usize);
        for p in points.drain(..) {
            let device_id = p.device.as_deref().unwrap_or(caps.device);
            // One lookup for a known device (every message but its first).
            let state = match self.devices.get_mut(device_id) {
                Some(state) => state,
                None => {
                    if !self.admit(device_id, sub_index, &caps) {
                        unknown += 1;
                        continue;
                    }
                    let Some(state) = self.devices.get_mut(device_id) else {
                        unknown += 1;
                        continue;
                    };
                    state
                }
            };
            let ts = p.ts.unwrap_or(now);
            if !state.recent.insert(ts, sub_index) {
                duplicates += 1;
                continue;
            }
            state.last_arrival = now;
            state.offline = false;
            let (schema, values) = match p.values {
                Values::Mapped(v) => (Arc::clone(self.subs[sub_index].mapping.schema()), v),
                Values::Named(v) => {
                    let schema = state
                        .named
                        .entry(sub_index)
                        .or_insert_with(|| Arc::new(Schema::default()));
                    let mut ids = Vec::with_capacity(v.len());
                    for (name, x) in v {
                        let id = match schema.id_of(&name) {
                            Some(id) => id,
                            None if schema.fields.len() < MAX_NAMED_FIELDS => {
                                let mut grown = Schema::clone(schema);
                                let Some(id) = grown.push(FieldDef::new(name, None)) else {
                                    continue;
                                };
                                *schema = Arc::new(grown);
                                id
                            }
                            None => continue,
                        };
                        ids.push((id, x));
                    }
                    (Arc::clone(schema), ids)
                }
            };
            self.status.success_at(&state.info, &state.live, now, true);
            out.push(Reading {
                device: Arc::clone(&state.info),
                ts,
                schema,
                values,
                quality: Quality::Good,
            });
            accepted += 1;
        }
        self.points = points;
        if accepted > 0 {
            self.counters.points.add(accepted as u64);
            Outcome::Accepted
        } else if duplicates > 0 {
            Outcome::Duplicate
        } else {
            let _ = unknown;
            let device = caps.device.to_string();
            self.log_limited(&device, || {
                tracing::warn!(topic, device = %device, "mqtt message for an unknown device dropped (auto_register is off or full)");
            });
            Outcome::UnknownDevice
        }
    }

    /// Finds `id` in the registry or registers it; false if it stays unknown.
    fn admit(&mut self, id: &str, sub_index: usize, caps: &super::topic::Captures<'_>) -> bool {
        let sub = &self.subs[sub_index];
        let info = match self.registry.get(id) {
            Some(info) => info,
            None if self.auto_register && self.auto_left > 0 => {
                let info = DeviceInfo {
                    id: id.to_string(),
                    kind: sub.kind.clone(),
                    site: caps.site.unwrap_or(&sub.site).to_string(),
                    feeder: caps.feeder.unwrap_or(&sub.feeder).to_string(),
                    parent: caps.parent.map(str::to_string),
                    location: None,
                    rated_kva: None,
                    nominal_voltage: None,
                    customers: 1,
                    interval_ns: sub.interval_ns,
                    lp_series: String::new(),
                    slot: crate::model::Slot::NONE,
                }
                .finish();
                let (info, new) = self.registry.insert(Arc::new(info));
                if new {
                    self.auto_left -= 1;
                    self.counters.registered.inc();
                    tracing::info!(device = %info.id, kind = %info.kind, site = %info.site, feeder = %info.feeder, "mqtt device registered");
                }
                info
            }
            None => return false,
        };
        let live = self.status.liveness(&info, now_ns());
        self.devices.insert(
            id.to_string(),
            DeviceState {
                info,
                named: HashMap::new(),
                recent: Recent::default(),
                last_arrival: 0,
                offline: false,
                live,
            },
        );
        true
    }

    /// Marks devices silent for `offline_after` expected intervals as offline; returns how
    /// many went offline in this sweep.
    pub fn sweep(&mut self, now: Timestamp) -> usize {
        let mut changed = 0;
        for state in self.devices.values_mut() {
            if state.offline || state.last_arrival == 0 {
                continue;
            }
            let limit = state.info.interval_ns.saturating_mul(self.offline_after);
            let silent = now.saturating_sub(state.last_arrival);
            if silent > limit {
                state.offline = true;
                let error = format!("no message for {} s", silent / 1_000_000_000);
                if self.status.failure(&state.info, now, &error, 1).is_some() {
                    tracing::warn!(device = %state.info.id, silent_s = silent / 1_000_000_000, "mqtt device silent; offline");
                }
                changed += 1;
            }
        }
        changed
    }

    fn reject(&mut self, device: &str, topic: &str, reason: &'static str, detail: &str) {
        self.metrics
            .counter(
                "gridwatch_mqtt_rejected_total",
                "Rejected MQTT messages by device and reason.",
                &[("device", device), ("reason", reason)],
            )
            .inc();
        self.log_limited(device, || {
            tracing::warn!(topic, device, reason, detail, "mqtt message rejected");
        });
    }

    /// Runs `log` unless this device logged within [`LOG_EVERY`]; the suppressed count is
    /// in the counters.
    fn log_limited(&mut self, device: &str, log: impl FnOnce()) {
        let now = Instant::now();
        if self.last_log.len() > 10_000 {
            self.last_log.clear();
        }
        match self.last_log.get_mut(device) {
            Some((at, suppressed)) if now.duration_since(*at) < LOG_EVERY => {
                *suppressed += 1;
            }
            Some(entry) => {
                if entry.1 > 0 {
                    tracing::warn!(
                        device,
                        suppressed = entry.1,
                        "similar mqtt log lines suppressed"
                    );
                }
                *entry = (now, 0);
                log();
            }
            None => {
                self.last_log.insert(device.to_string(), (now, 0));
                log();
            }
        }
    }
}

#[cfg(test)]
mod tests;
