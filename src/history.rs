//! Recent readings for the API and the web page: the latest reading of every device and a
//! short, downsampled window of its key quantities for live charts.
//!
//! Fed by the pipeline as a lossy consumer: if the API side ever lags, it misses a refresh,
//! never a stored point. The window keeps only the configured key fields, as `f32`, at most one
//! sample per `resolution`, and all windows together stay within `max_bytes`: with many
//! devices a window keeps its length and its samples spread out, so memory does not grow
//! with uptime (10,000 meters × 8 fields over an hour at 10 s would be ~144 MB).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::devmap::DeviceMap;
use crate::metrics::{Gauge, Registry};
use crate::model::{Reading, Timestamp};

/// `[history]`: what the API keeps in memory for charts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// How far back the chart window reaches.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// At most one kept sample of a device per this much of the clock.
    #[serde(default = "default_resolution", with = "humantime_serde")]
    pub resolution: Duration,
    /// Fields kept in the window (`load_pct` is derived as the overload rule derives it, from
    /// the device's `rated_kva`).
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Most bytes all chart windows hold together; beyond it the samples of every window are
    /// spaced further apart than `resolution` (the window still reaches `window` back).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_max_bytes() -> u64 {
    32 << 20
}

fn default_window() -> Duration {
    Duration::from_secs(3600)
}

fn default_resolution() -> Duration {
    Duration::from_secs(10)
}

fn default_fields() -> Vec<String> {
    [
        "voltage_a",
        "voltage_b",
        "voltage_c",
        "current_a",
        "current_b",
        "current_c",
        "active_power",
        "load_pct",
        "oil_temp",
        "winding_temp",
        "frequency",
    ]
    .map(String::from)
    .to_vec()
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            window: default_window(),
            resolution: default_resolution(),
            fields: default_fields(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// A device's chart window in columns, holding only the configured fields this device
/// reports (a meter has no oil temperature): a row of one value costs 12 bytes, not a
/// timestamp plus every configured field. Columns grow with the rows up to the window's
/// row count, never beyond.
#[derive(Debug, Default)]
struct Window {
    ts: VecDeque<Timestamp>,
    /// (index into the configured fields, values; NaN where a reading lacked the field).
    cols: Vec<(usize, VecDeque<f32>)>,
}

/// Appends `v`, growing the buffer in steps that never pass `max` elements.
fn push_capped<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    if q.len() == q.capacity() {
        let room = max.saturating_sub(q.len()).max(1);
        q.reserve_exact(q.len().max(4).min(room));
    }
    q.push_back(v);
}

impl Window {
    /// Bytes of the rows held: a timestamp and one `f32` per kept column.
    fn bytes(&self) -> u64 {
        self.ts.len() as u64 * self.row_bytes()
    }

    fn row_bytes(&self) -> u64 {
        8 + 4 * self.cols.len() as u64
    }

    fn shrink_to(&mut self, rows: usize) {
        self.ts.shrink_to(rows);
        for (_, c) in &mut self.cols {
            c.shrink_to(rows);
        }
    }

    fn pop_front(&mut self) {
        self.ts.pop_front();
        for (_, c) in &mut self.cols {
            c.pop_front();
        }
    }

    /// Adds a row; `values[i]` is configured field `i` (NaN = not in this reading).
    fn push(&mut self, ts: Timestamp, values: &[f32], max_rows: usize) {
        for (field, v) in values.iter().enumerate() {
            if v.is_nan() || self.cols.iter().any(|(f, _)| *f == field) {
                continue;
            }
            // A field seen for the first time: earlier rows did not have it.
            let mut col = VecDeque::new();
            col.resize(self.ts.len(), f32::NAN);
            self.cols.push((field, col));
            self.cols.sort_by_key(|(f, _)| *f);
        }
        push_capped(&mut self.ts, ts, max_rows);
        for (field, col) in &mut self.cols {
            push_capped(col, values[*field], max_rows);
        }
    }
}

/// A device's chart window in columns: timestamps and one value column per field
/// (`null` where the device did not report the field).
#[derive(Debug, Serialize)]
pub struct WindowView {
    /// Field names, in column order.
    pub fields: Vec<String>,
    /// Sample times, ns since epoch.
    pub ts: Vec<Timestamp>,
    /// One column per field.
    pub values: Vec<Vec<Option<f32>>>,
}

/// Most chart fields kept (more configured ones are ignored; the default is 11).
pub const MAX_FIELDS: usize = 32;

/// Latest readings and chart windows by device id.
#[derive(Debug, Default)]
pub struct History {
    cfg: HistoryConfig,
    latest: RwLock<DeviceMap<Arc<Reading>>>,
    windows: RwLock<Windows>,
    /// `gridwatch_history_bytes`: what the windows hold.
    bytes_gauge: Gauge,
    /// Set once the budget first spaced samples out (logged once).
    spread_logged: AtomicBool,
}

/// The windows of all devices and the bytes they hold together.
#[derive(Debug, Default)]
struct Windows {
    map: DeviceMap<Window>,
    bytes: u64,
}

/// Rows a device's window may hold: the configured `window / resolution` (+1), fewer when
/// `devices` windows of `row_bytes` rows would pass `max_bytes` (never fewer than 2, so a
/// chart always has a line).
fn rows_allowed(full: u64, max_bytes: u64, devices: u64, row_bytes: u64) -> u64 {
    let fair = max_bytes / devices.max(1) / row_bytes.max(1);
    full.min(fair.max(2))
}

impl History {
    /// An empty history with the default window.
    pub fn new() -> Arc<Self> {
        Self::with_config(HistoryConfig::default())
    }

    /// An empty history keeping `cfg.fields` over `cfg.window`.
    pub fn with_config(cfg: HistoryConfig) -> Arc<Self> {
        Arc::new(History {
            cfg,
            ..History::default()
        })
    }

    /// [`History::with_config`] that reports `gridwatch_history_bytes` in `metrics`.
    pub fn with_metrics(cfg: HistoryConfig, metrics: &Registry) -> Arc<Self> {
        Arc::new(History {
            cfg,
            bytes_gauge: metrics.gauge(
                "gridwatch_history_bytes",
                "Bytes the chart windows hold (capped by history.max_bytes).",
                &[],
            ),
            ..History::default()
        })
    }

    /// Bytes all chart windows hold (timestamps and values).
    pub fn window_bytes(&self) -> u64 {
        self.windows.read().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// Stores `reading` if it is newer than what is known for its device.
    pub fn record(&self, reading: Arc<Reading>) {
        self.add_to_window(&reading);
        let mut map = self.latest.write().unwrap_or_else(|e| e.into_inner());
        let old = map.get_or_insert_with(&reading.device, || Arc::clone(&reading));
        if old.ts <= reading.ts {
            *old = reading;
        }
    }

    fn add_to_window(&self, r: &Reading) {
        let resolution = i64::try_from(self.cfg.resolution.as_nanos()).unwrap_or(i64::MAX);
        let window = i64::try_from(self.cfg.window.as_nanos()).unwrap_or(i64::MAX);
        let full_rows = u64::try_from(window / resolution.max(1))
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let mut guard = self.windows.write().unwrap_or_else(|e| e.into_inner());
        let Windows { map, bytes } = &mut *guard;
        // A device's first row is sized as if it were not there yet: one off, once.
        let devices = (map.len() as u64).max(1);
        let w = map.get_or_insert_with(&r.device, Window::default);
        let before = w.bytes();
        let rows = rows_allowed(full_rows, self.cfg.max_bytes, devices, w.row_bytes());
        // Fewer rows than the window has slots: the same time span, samples further apart.
        let spacing = if rows < full_rows {
            let rows = i64::try_from(rows).unwrap_or(i64::MAX);
            (window / (rows - 1).max(1)).max(resolution)
        } else {
            resolution
        }
        // `resolution = "0s"` keeps every reading; the clock slots below divide by it.
        .max(1);
        let oldest = r.ts.saturating_sub(window);
        while w.ts.front().is_some_and(|ts| *ts < oldest) {
            w.pop_front();
        }
        // One row per `spacing` slot of the clock (not per `spacing` after the last row: at
        // a spacing just above the reading interval that would keep every other reading).
        let keep = w.ts.back().is_none_or(|last| {
            r.ts > *last && r.ts.div_euclid(spacing) != last.div_euclid(spacing)
        });
        // Room for the new row within `rows` (devices that joined may have cut the window).
        let limit = if keep { rows - 1 } else { rows };
        while w.ts.len() as u64 > limit {
            w.pop_front();
        }
        let rows_usize = usize::try_from(rows).unwrap_or(usize::MAX);
        if w.ts.capacity() > rows_usize.saturating_mul(2).saturating_add(4) {
            // Give the memory back, not just the rows.
            w.shrink_to(rows_usize);
        }
        if keep {
            let mut row = [f32::NAN; MAX_FIELDS];
            for (slot, f) in row.iter_mut().zip(&self.cfg.fields) {
                let v = if f == "load_pct" {
                    // The same load % the overload rule uses, so chart and alarm agree.
                    crate::detect::derived::load_pct(r)
                } else {
                    r.get(f)
                };
                // Charts need ~4 significant digits; f32 halves the memory.
                *slot = v.map_or(f32::NAN, |v| v as f32);
            }
            let n = self.cfg.fields.len().min(MAX_FIELDS);
            w.push(r.ts, &row[..n], rows_usize);
        }
        *bytes = (*bytes + w.bytes()).saturating_sub(before);
        self.bytes_gauge.set(*bytes as f64);
        if spacing > resolution && !self.spread_logged.swap(true, Ordering::Relaxed) {
            tracing::info!(
                devices,
                max_bytes = self.cfg.max_bytes,
                resolution_s = spacing as f64 / 1e9,
                "history windows reach history.max_bytes: chart samples are spaced further apart"
            );
        }
    }

    /// The latest reading of `device`.
    pub fn latest(&self, device: &str) -> Option<Arc<Reading>> {
        let map = self.latest.read().unwrap_or_else(|e| e.into_inner());
        map.get_by_id(device).cloned()
    }

    /// The chart window of `device` (empty columns when nothing was recorded).
    pub fn window(&self, device: &str) -> WindowView {
        let windows = self.windows.read().unwrap_or_else(|e| e.into_inner());
        let windows = &windows.map;
        let fields = self.cfg.fields.clone();
        let mut view = WindowView {
            values: vec![Vec::new(); fields.len()],
            fields,
            ts: Vec::new(),
        };
        if let Some(w) = windows.get_by_id(device) {
            view.ts.extend(w.ts.iter().copied());
            for col in &mut view.values {
                col.resize(w.ts.len(), None);
            }
            for (field, values) in &w.cols {
                if let Some(col) = view.values.get_mut(*field) {
                    for (out, v) in col.iter_mut().zip(values) {
                        *out = v.is_finite().then_some(*v);
                    }
                }
            }
        }
        view
    }

    /// Consumes readings from the pipeline until it closes.
    pub async fn run(self: Arc<Self>, mut rx: crate::pipeline::ReadingRx) {
        // Charts are read by people: 20 ms late costs nothing, a wake-up per reading does.
        let linger = std::time::Duration::from_millis(20);
        let mut chunk = crate::pipeline::Chunk::new();
        while rx.recv_chunk(&mut chunk, 1024, linger).await > 0 {
            for r in chunk.iter() {
                self.record(Arc::clone(r));
            }
            chunk.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::derived::load_pct;
    use crate::model::{DeviceInfo, FieldDef, Quality, Schema};

    fn reading(ts: Timestamp, v: f64, i: f64) -> Arc<Reading> {
        let device = Arc::new(DeviceInfo {
            rated_kva: Some(630.0),
            nominal_voltage: Some(230.0),
            ..DeviceInfo::for_test("TX-1", "transformer")
        });
        let names = [
            "voltage_a",
            "voltage_b",
            "voltage_c",
            "current_a",
            "current_b",
            "current_c",
        ];
        let schema = Arc::new(Schema::new(
            names.iter().map(|n| FieldDef::new(*n, None)).collect(),
        ));
        let values = (0..6u16)
            .map(|id| (id, if id < 3 { v } else { i }))
            .collect();
        Arc::new(Reading {
            device,
            ts,
            schema,
            values,
            quality: Quality::Good,
        })
    }

    #[test]
    fn load_pct_is_apparent_power_over_rating() {
        // 3 × 230 V × 913 A = 629.97 kVA on a 630 kVA unit.
        let pct = load_pct(&reading(0, 230.0, 913.0)).unwrap();
        assert!((pct - 99.995).abs() < 0.01, "{pct}");
    }

    #[test]
    fn window_downsamples_and_expires() {
        let h = History::with_config(HistoryConfig {
            window: Duration::from_secs(60),
            resolution: Duration::from_secs(10),
            fields: vec!["voltage_a".into(), "oil_temp".into(), "load_pct".into()],
            ..HistoryConfig::default()
        });
        let s = 1_000_000_000i64;
        for t in 0..200 {
            h.record(reading(t * s, 230.0 + t as f64, 100.0));
        }
        let w = h.window("TX-1");
        // One sample per 10 s, the last 60 s: t = 140, 150, ..., 190.
        assert_eq!(w.ts, (14..20).map(|k| k * 10 * s).collect::<Vec<_>>());
        assert_eq!(w.values[0].first().copied().flatten(), Some(370.0));
        assert!(
            w.values[1].iter().all(Option::is_none),
            "oil_temp never reported"
        );
        assert!(w.values[2].iter().all(Option::is_some), "load_pct derived");
        assert_eq!(h.latest("TX-1").unwrap().ts, 199 * s);
    }

    #[test]
    fn window_keeps_only_reported_fields_and_adds_new_ones_later() {
        let h = History::with_config(HistoryConfig {
            window: Duration::from_secs(3600),
            resolution: Duration::from_secs(10),
            fields: vec!["oil_temp".into(), "voltage_a".into(), "current_a".into()],
            ..HistoryConfig::default()
        });
        let s = 1_000_000_000i64;
        for t in 0..3 {
            h.record(reading(t * 10 * s, 230.0, 100.0));
        }
        {
            let windows = h.windows.read().unwrap();
            let w = windows.map.get_by_id("TX-1").unwrap();
            let kept: Vec<usize> = w.cols.iter().map(|(f, _)| *f).collect();
            assert_eq!(kept, vec![1, 2], "no column for oil_temp");
            assert!(w.ts.capacity() <= 361, "capacity {}", w.ts.capacity());
        }
        // A reading that also has oil_temp: the column appears, empty for earlier rows.
        let mut r = Reading::clone(&reading(30 * s, 231.0, 101.0));
        let mut fields = r.schema.fields.clone();
        fields.push(FieldDef::new("oil_temp", None));
        r.schema = Arc::new(Schema::new(fields));
        r.values.push((6, 55.5));
        h.record(Arc::new(r));
        let w = h.window("TX-1");
        assert_eq!(w.fields, ["oil_temp", "voltage_a", "current_a"]);
        assert_eq!(w.values[0], vec![None, None, None, Some(55.5)]);
        assert_eq!(
            w.values[1],
            vec![Some(230.0), Some(230.0), Some(230.0), Some(231.0)]
        );
        assert_eq!(w.values[2][3], Some(101.0));
    }

    fn meter(id: &str, ts: Timestamp) -> Arc<Reading> {
        let r = reading(ts, 230.0, 10.0);
        let device = Arc::new(DeviceInfo::for_test(id, "meter"));
        Arc::new(Reading {
            device,
            ..Reading::clone(&r)
        })
    }

    #[test]
    fn windows_of_many_devices_stay_within_max_bytes_and_keep_their_span() {
        let s = 1_000_000_000i64;
        // Two fields per row: 8 + 2 × 4 = 16 bytes. 50 devices × 361 rows would be 289 KB.
        let h = History::with_config(HistoryConfig {
            window: Duration::from_secs(3600),
            resolution: Duration::from_secs(10),
            fields: vec!["voltage_a".into(), "current_a".into()],
            max_bytes: 50 * 16 * 40,
        });
        let ids: Vec<String> = (0..50).map(|i| format!("M-{i}")).collect();
        for t in 0..7200 {
            for id in &ids {
                h.record(meter(id, t * s));
            }
        }
        assert!(h.window_bytes() <= 50 * 16 * 40, "{}", h.window_bytes());
        for id in &ids {
            let w = h.window(id);
            assert!(
                w.ts.len() <= 40 && w.ts.len() >= 39,
                "{id}: {} rows",
                w.ts.len()
            );
            // Still the whole hour back, at ~92 s instead of 10 s.
            let span = w.ts.last().unwrap() - w.ts.first().unwrap();
            assert!(span >= 3500 * s && span <= 3600 * s, "{id}: span {span}");
            assert!(w.ts.windows(2).all(|p| p[1] - p[0] >= 92 * s));
        }
    }

    #[test]
    fn few_devices_keep_the_configured_resolution() {
        let s = 1_000_000_000i64;
        let h = History::with_config(HistoryConfig {
            window: Duration::from_secs(600),
            resolution: Duration::from_secs(10),
            fields: vec!["voltage_a".into()],
            max_bytes: 1 << 20,
        });
        for t in 0..1200 {
            h.record(meter("A", t * s));
            h.record(meter("B", t * s));
        }
        let w = h.window("A");
        // t = 600, 610, ..., 1190: the last 600 s at 10 s.
        assert_eq!(w.ts.len(), 60);
        assert!(w.ts.windows(2).all(|p| p[1] - p[0] == 10 * s));
        // 2 windows × 60 rows × (8 + 4) bytes.
        assert_eq!(h.window_bytes(), 2 * 60 * 12);
    }

    #[test]
    fn more_devices_later_shrink_the_windows_already_there() {
        let s = 1_000_000_000i64;
        let h = History::with_config(HistoryConfig {
            window: Duration::from_secs(1000),
            resolution: Duration::from_secs(1),
            fields: vec!["voltage_a".into()],
            // 1000 rows of 12 bytes: one full window.
            max_bytes: 12_000,
        });
        for t in 0..2000 {
            h.record(meter("first", t * s));
        }
        let rows = h.window("first").ts.len();
        assert!((990..=1000).contains(&rows), "{rows}");
        for t in 2000..2010 {
            for i in 0..10 {
                h.record(meter(&format!("late-{i}"), t * s));
            }
            h.record(meter("first", t * s));
        }
        // Eleven devices share the budget: 12,000 / 11 / 12 = 90 rows each.
        assert!(h.window("first").ts.len() <= 90);
        let windows = h.windows.read().unwrap();
        let cap = windows.map.get_by_id("first").unwrap().ts.capacity();
        assert!(cap <= 2 * 91 + 4, "capacity {cap}");
        drop(windows);
        assert!(h.window_bytes() <= 12_000, "{}", h.window_bytes());
    }

    #[test]
    fn zero_resolution_keeps_every_reading() {
        let h = History::with_config(HistoryConfig {
            window: Duration::from_secs(10),
            resolution: Duration::ZERO,
            fields: vec!["voltage_a".into()],
            ..HistoryConfig::default()
        });
        let s = 1_000_000_000i64;
        for t in 0..5 {
            h.record(meter("Z", t * s));
        }
        assert_eq!(h.window("Z").ts, (0..5).map(|t| t * s).collect::<Vec<_>>());
    }

    #[test]
    fn rows_allowed_splits_the_budget_but_keeps_two() {
        assert_eq!(rows_allowed(361, 32 << 20, 100, 40), 361);
        assert_eq!(rows_allowed(361, 32 << 20, 10_000, 40), 83);
        assert_eq!(rows_allowed(361, 100, 10_000, 40), 2);
        assert_eq!(rows_allowed(361, 32 << 20, 0, 0), 361);
    }

    #[test]
    fn window_buffers_never_grow_past_the_window() {
        let h = History::with_config(HistoryConfig {
            window: Duration::from_secs(100),
            resolution: Duration::from_secs(1),
            fields: vec!["voltage_a".into()],
            ..HistoryConfig::default()
        });
        let s = 1_000_000_000i64;
        for t in 0..1000 {
            h.record(reading(t * s, 230.0, 1.0));
        }
        let windows = h.windows.read().unwrap();
        let w = windows.map.get_by_id("TX-1").unwrap();
        assert_eq!(w.ts.len(), 101);
        assert!(w.ts.capacity() <= 101 + 4, "capacity {}", w.ts.capacity());
        assert!(w.cols[0].1.capacity() <= 101 + 4);
    }
}
