//! `gridwatch replay`: runs the configured rules over a line-protocol file and reports the
//! alarms they would have raised, so engineers can tune thresholds before deploying them.
//!
//! Input is what the file sink writes: `kind,device=..,feeder=..,kind=..,site=.. f=v,... ts`
//! (other tags are ignored), in time order. Devices are matched to the config by the
//! `device` tag; unknown devices are built from the tags. A device's reporting interval is
//! the larger of its configured interval and the smallest gap between its lines (so a
//! downsampled export does not look like communication loss). Devices join at their first
//! line: one missing from the whole file is not reported, one that stops appearing is. Rules and alarm timers run on the
//! reading timestamps only (communication loss too), so a replay is deterministic.

use std::collections::HashMap;
use std::sync::Arc;

use crate::alarms::store::MemoryStore;
use crate::alarms::{AlarmEvent, AlarmManager, AlarmSettings};
use crate::config::LoadedConfig;
use crate::detect::{Engine, RuleError, RuleSet};
use crate::model::{DeviceInfo, FieldDef, Quality, Reading, Schema, Timestamp};

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The rules are invalid.
    #[error(transparent)]
    Rules(#[from] RuleError),
    /// A line does not parse.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// Alarm state could not be created.
    #[error(transparent)]
    Store(#[from] crate::alarms::store::StoreError),
}

/// What a replay found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    /// Every alarm event in order.
    pub events: Vec<AlarmEvent>,
    /// Readings evaluated.
    pub readings: usize,
    /// Distinct devices seen.
    pub devices: usize,
    /// Alarms still open at the end of the file.
    pub open_at_end: usize,
}

struct DeviceSlot {
    info: Arc<DeviceInfo>,
    schema: Arc<Schema>,
}

/// Replays `input` (line protocol) through the rules of `loaded`.
pub fn replay(loaded: &LoadedConfig, input: &str) -> Result<ReplayReport, ReplayError> {
    let cfg = &loaded.config;
    let rules = RuleSet::build(&cfg.alarms, &cfg.rules)?;
    let mut manager = AlarmManager::new(
        AlarmSettings::from_config(&cfg.alarms),
        Arc::new(MemoryStore),
    )?;
    let mut engine: Option<Engine> = None;
    // Fault localisation as in the daemon, on reading time.
    let mut locator = cfg.locate.enabled.then(|| {
        crate::detect::locate::Locator::new(
            &cfg.locate,
            crate::topology::Topology::from_devices(&cfg.devices),
        )
    });
    let mut report = ReplayReport::default();
    let mut last_tick: Timestamp = i64::MIN;
    report.devices = for_each_reading(loaded, input, |reading| {
        let ts = reading.ts;
        // Devices join at their first line: one that never appears in the file is not
        // reported as lost; one that stops appearing is.
        let engine = engine.get_or_insert_with(|| Engine::new(rules.clone(), &cfg.alarms, &[], ts));
        let mut found = engine.on_reading(reading);
        if let Some(l) = locator.as_mut() {
            l.observe(reading);
            found = l.process(found);
        }
        for d in found {
            report.events.extend(manager.apply(&d));
        }
        if ts >= last_tick.saturating_add(1_000_000_000) {
            last_tick = ts;
            let mut found = engine.tick(ts);
            if let Some(l) = locator.as_mut() {
                found = l.process(found);
                found.extend(l.tick(ts));
            }
            for d in found {
                report.events.extend(manager.apply(&d));
            }
            report.events.extend(manager.tick(ts));
        }
        report.readings += 1;
    })?;
    report.open_at_end = manager.list().iter().filter(|a| a.condition).count();
    Ok(report)
}

/// Turns every line of `input` into a [`Reading`] of the configured (or, from its tags,
/// an ad-hoc) device, in file order, and hands it to `f`; returns the number of devices.
pub fn for_each_reading(
    loaded: &LoadedConfig,
    input: &str,
    mut f: impl FnMut(&Arc<Reading>),
) -> Result<usize, ReplayError> {
    let configured: HashMap<String, Arc<DeviceInfo>> = crate::build_devices(loaded)
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect();
    let gaps = min_gaps(input);
    let mut slots: HashMap<String, DeviceSlot> = HashMap::new();
    for (n, parsed) in influxdb_line_protocol::parse_lines(input).enumerate() {
        let line = parsed.map_err(|e| ReplayError::Parse {
            line: n + 1,
            message: e.to_string(),
        })?;
        let Some(ts) = line.timestamp else { continue };
        let tag = |k: &str| {
            line.series.tag_set.as_ref().and_then(|t| {
                t.iter()
                    .find(|(key, _)| key.as_str() == k)
                    .map(|(_, v)| v.as_str().to_string())
            })
        };
        let Some(device) = tag("device") else {
            continue;
        };
        let slot = slots.entry(device.clone()).or_insert_with(|| {
            // A file sampled more coarsely than the configured poll interval (a downsampled
            // export) must not look like communication loss: the interval is at least the
            // file's own cadence.
            let gap = gaps.get(&device).copied();
            let configured = configured.get(&device).map(|d| match gap {
                Some(g) if g > d.interval_ns => Arc::new(DeviceInfo {
                    interval_ns: g,
                    ..(**d).clone()
                }),
                _ => Arc::clone(d),
            });
            let info = configured.unwrap_or_else(|| {
                Arc::new(
                    DeviceInfo {
                        id: device.clone(),
                        kind: tag("kind")
                            .unwrap_or_else(|| line.series.measurement.as_str().to_string()),
                        site: tag("site").unwrap_or_default(),
                        feeder: tag("feeder").unwrap_or_default(),
                        parent: None,
                        location: None,
                        rated_kva: None,
                        nominal_voltage: None,
                        customers: 1,
                        interval_ns: gap.unwrap_or(1_000_000_000),
                        lp_series: String::new(),
                        slot: crate::model::Slot::NONE,
                    }
                    .finish(),
                )
            });
            DeviceSlot {
                info,
                schema: Arc::new(Schema::default()),
            }
        });
        let mut values = Vec::with_capacity(line.field_set.len());
        for (key, value) in &line.field_set {
            let v = match value {
                influxdb_line_protocol::FieldValue::F64(v) => *v,
                influxdb_line_protocol::FieldValue::I64(v) => *v as f64,
                influxdb_line_protocol::FieldValue::U64(v) => *v as f64,
                influxdb_line_protocol::FieldValue::Boolean(b) => f64::from(u8::from(*b)),
                influxdb_line_protocol::FieldValue::String(_) => continue,
            };
            if !v.is_finite() {
                continue;
            }
            let id = match slot.schema.id_of(key.as_str()) {
                Some(id) => id,
                None => {
                    let mut s = (*slot.schema).clone();
                    let Some(id) = s.push(FieldDef::new(key.as_str(), None)) else {
                        continue;
                    };
                    slot.schema = Arc::new(s);
                    id
                }
            };
            values.push((id, v));
        }
        let reading = Arc::new(Reading {
            device: Arc::clone(&slot.info),
            ts,
            schema: Arc::clone(&slot.schema),
            values,
            quality: Quality::Good,
        });
        f(&reading);
    }
    Ok(slots.len())
}

/// Smallest positive timestamp gap per device: the reporting interval of unknown devices.
fn min_gaps(input: &str) -> HashMap<String, i64> {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut gaps: HashMap<String, i64> = HashMap::new();
    for line in influxdb_line_protocol::parse_lines(input).flatten() {
        let (Some(ts), Some(dev)) = (
            line.timestamp,
            line.series.tag_set.as_ref().and_then(|t| {
                t.iter()
                    .find(|(k, _)| k.as_str() == "device")
                    .map(|(_, v)| v.as_str().to_string())
            }),
        ) else {
            continue;
        };
        if let Some(prev) = last.insert(dev.clone(), ts) {
            let gap = ts - prev;
            if gap > 0 {
                let g = gaps.entry(dev).or_insert(gap);
                *g = (*g).min(gap);
            }
        }
    }
    gaps
}

/// One line per alarm event for people: time, event, severity, device, rule, value, limit.
pub fn format_event(ev: &AlarmEvent) -> String {
    let a = &ev.alarm;
    format!(
        "{} {:<9} {:<8} {} {} value={} limit={} {}{}",
        chrono::DateTime::from_timestamp_nanos(ev.at).format("%Y-%m-%dT%H:%M:%SZ"),
        ev.kind.as_str(),
        a.severity.as_str(),
        a.device,
        a.rule,
        round3(a.value),
        round3(a.limit),
        a.unit,
        if a.flapping { " (flapping)" } else { "" },
    )
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
