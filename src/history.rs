//! Recent readings for the API and the web page: the latest reading of every device and a
//! short, downsampled window of its key quantities for live charts.
//!
//! Fed by the pipeline as a lossy consumer: if the API side ever lags, it misses a refresh,
//! never a stored point. The window keeps only the configured key fields, as `f32`, at most one
//! sample per `resolution`, so ten thousand devices cost tens of megabytes, not gigabytes.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::model::{Reading, Timestamp};

/// `[history]`: what the API keeps in memory for charts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// How far back the chart window reaches.
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    /// Shortest spacing between two kept samples of one device.
    #[serde(default = "default_resolution", with = "humantime_serde")]
    pub resolution: Duration,
    /// Fields kept in the window (`load_pct` is derived as the overload rule derives it, from
    /// the device's `rated_kva`).
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
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
        }
    }
}

#[derive(Debug, Default)]
struct Window {
    samples: VecDeque<(Timestamp, Box<[f32]>)>,
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

/// Latest readings and chart windows by device id.
#[derive(Debug, Default)]
pub struct History {
    cfg: HistoryConfig,
    latest: RwLock<foldhash::HashMap<String, Arc<Reading>>>,
    windows: RwLock<foldhash::HashMap<String, Window>>,
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

    /// Stores `reading` if it is newer than what is known for its device.
    pub fn record(&self, reading: Arc<Reading>) {
        self.add_to_window(&reading);
        let mut map = self.latest.write().unwrap_or_else(|e| e.into_inner());
        // Replace in place: cloning the id for `insert` would allocate on every reading.
        match map.get_mut(&reading.device.id) {
            Some(old) if old.ts > reading.ts => {}
            Some(old) => *old = reading,
            None => {
                map.insert(reading.device.id.clone(), reading);
            }
        }
    }

    fn add_to_window(&self, r: &Reading) {
        let resolution = i64::try_from(self.cfg.resolution.as_nanos()).unwrap_or(i64::MAX);
        let window = i64::try_from(self.cfg.window.as_nanos()).unwrap_or(i64::MAX);
        let mut windows = self.windows.write().unwrap_or_else(|e| e.into_inner());
        // Looked up by &str first: `entry` needs an owned key, an allocation per reading.
        if !windows.contains_key(&r.device.id) {
            windows.insert(r.device.id.clone(), Window::default());
        }
        let Some(w) = windows.get_mut(&r.device.id) else {
            return;
        };
        let oldest = r.ts.saturating_sub(window);
        while w.samples.front().is_some_and(|(ts, _)| *ts < oldest) {
            w.samples.pop_front();
        }
        if let Some((last, _)) = w.samples.back()
            && r.ts < last.saturating_add(resolution)
        {
            return;
        }
        let row: Box<[f32]> = self
            .cfg
            .fields
            .iter()
            .map(|f| {
                let v = if f == "load_pct" {
                    // The same load % the overload rule uses, so chart and alarm agree.
                    crate::detect::derived::load_pct(r)
                } else {
                    r.get(f)
                };
                // Charts need ~4 significant digits; f32 halves the memory.
                v.map(|v| v as f32).unwrap_or(f32::NAN)
            })
            .collect();
        w.samples.push_back((r.ts, row));
    }

    /// The latest reading of `device`.
    pub fn latest(&self, device: &str) -> Option<Arc<Reading>> {
        let map = self.latest.read().unwrap_or_else(|e| e.into_inner());
        map.get(device).cloned()
    }

    /// The chart window of `device` (empty columns when nothing was recorded).
    pub fn window(&self, device: &str) -> WindowView {
        let windows = self.windows.read().unwrap_or_else(|e| e.into_inner());
        let fields = self.cfg.fields.clone();
        let mut view = WindowView {
            values: vec![Vec::new(); fields.len()],
            fields,
            ts: Vec::new(),
        };
        if let Some(w) = windows.get(device) {
            for (ts, row) in &w.samples {
                view.ts.push(*ts);
                for (col, v) in view.values.iter_mut().zip(row.iter()) {
                    col.push(v.is_finite().then_some(*v));
                }
            }
        }
        view
    }

    /// Consumes readings from the pipeline until it closes.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Arc<Reading>>) {
        // Charts are read by people: 20 ms late costs nothing, a wake-up per reading does.
        let linger = std::time::Duration::from_millis(20);
        let mut chunk = Vec::with_capacity(1024);
        while crate::pipeline::recv_chunk(&mut rx, &mut chunk, 1024, linger).await > 0 {
            for r in chunk.drain(..) {
                self.record(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::derived::load_pct;
    use crate::model::{DeviceInfo, FieldDef, Quality, Schema};

    fn reading(ts: Timestamp, v: f64, i: f64) -> Arc<Reading> {
        let device = Arc::new(
            DeviceInfo {
                id: "TX-1".into(),
                kind: "transformer".into(),
                site: "S".into(),
                feeder: "F".into(),
                parent: None,
                location: None,
                rated_kva: Some(630.0),
                nominal_voltage: Some(230.0),
                customers: 1,
                interval_ns: 1_000_000_000,
                lp_series: String::new(),
            }
            .finish(),
        );
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
}
