//! Power-quality and supply-reliability KPIs, computed continuously from the readings.
//!
//! Per device and UTC day the engine keeps time against the voltage band of the configured
//! standard (`[alarms] standard`) and against the frequency band, and for transformers the
//! load and ageing integrals ([`indices::Band`], [`indices::Loading`]). Time, not samples: a
//! reading covers the interval until the next reading of the device, capped at
//! `[kpi] max_gap` (default 3 intervals) when data stop. While a device is interrupted its
//! voltage time is not counted (no supply is not a voltage-quality problem; it is counted
//! as an interruption).
//!
//! A device is *interrupted* from a reading whose highest phase voltage is below
//! `interruption_fraction` × nominal, or a last gasp, until a reading shows voltage again.
//! Fault localisation (or an operator) can add interruptions of devices that simply went
//! dark ([`KpiEngine::record_interruption`]); overlaps are merged when indices are computed.
//!
//! Day accumulators and finished interruptions are saved in the event database
//! (`kpi_daily`, `interruptions`), so a restart keeps the month and `gridwatch report` can
//! read them; figures for any scope and period come from [`query`].

pub mod indices;
pub mod report;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::detect::config::{AlarmsConfig, VoltageStandard};
use crate::devmap::DeviceMap;
use crate::eventlog::{EventLog, EventLogError};
use crate::model::{DeviceInfo, Known, Reading, Timestamp};
use crate::topology::{METER, Node, TRANSFORMER, Topology};
use indices::{Band, Class, Interruption, Loading, Reliability};

const NS_PER_S: i64 = 1_000_000_000;
const NS_PER_DAY: i64 = 86_400 * NS_PER_S;

/// `[kpi]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KpiConfig {
    /// Set false to compute no KPIs.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Longest time one reading stands for; unset = 3 of the device's intervals.
    #[serde(default, with = "humantime_serde")]
    pub max_gap: Option<Duration>,
    /// Below this fraction of nominal voltage (highest phase) the supply is interrupted
    /// (EN 50160: 5 % of the declared voltage).
    #[serde(default = "default_fraction")]
    pub interruption_fraction: f64,
    /// Interruptions shorter than this are momentary (IEEE 1366: 5 min).
    #[serde(default = "default_momentary", with = "humantime_serde")]
    pub momentary_limit: Duration,
    /// How often today's figures are saved and written to the store (`kpi` measurement).
    #[serde(default = "default_write_interval", with = "humantime_serde")]
    pub write_interval: Duration,
}

fn default_true() -> bool {
    true
}
fn default_fraction() -> f64 {
    0.05
}
fn default_momentary() -> Duration {
    Duration::from_secs(300)
}
fn default_write_interval() -> Duration {
    Duration::from_secs(900)
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            enabled: true,
            max_gap: None,
            interruption_fraction: default_fraction(),
            momentary_limit: default_momentary(),
            write_interval: default_write_interval(),
        }
    }
}

impl VoltageStandard {
    /// The band voltage compliance is measured against, % of nominal (low, high):
    /// GB/T 12325 220 V +7/−10, EN 50160 ±10, ANSI C84.1 Range A ±5.
    pub fn band_pct(self) -> (f64, f64) {
        match self {
            VoltageStandard::Gb12325 => (-10.0, 7.0),
            VoltageStandard::En50160 => (-10.0, 10.0),
            VoltageStandard::AnsiC841 => (-5.0, 5.0),
        }
    }
}

/// Everything kept for one device and one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DayAcc {
    /// Voltage against the standard's band.
    pub voltage: Band,
    /// Frequency against the configured band.
    pub frequency: Band,
    /// Transformer loading.
    pub loading: Loading,
}

impl DayAcc {
    /// Sums another day or device into this one.
    pub fn add(&mut self, o: &DayAcc) {
        self.voltage.add(&o.voltage);
        self.frequency.add(&o.frequency);
        self.loading.add(&o.loading);
    }
}

/// Days since the Unix epoch (UTC) of a timestamp.
pub fn day_of(ts: Timestamp) -> i64 {
    ts.div_euclid(NS_PER_DAY)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| day.to_string())
}

struct DevState {
    info: Arc<DeviceInfo>,
    last_ts: Option<Timestamp>,
    voltage: Option<Class>,
    frequency: Option<Class>,
    /// Load % and hot-spot (°C) of the last reading.
    load: Option<(f64, Option<f64>)>,
    /// Interrupted since, and why.
    down: Option<(Timestamp, &'static str)>,
    /// The last day marked in `dirty` since the last save (no set lookup per reading).
    dirty_day: Option<i64>,
}

/// The running KPI state (one per daemon; replays make their own).
pub struct KpiEngine {
    cfg: KpiConfig,
    band: (f64, f64),
    nominal_f: f64,
    band_f: f64,
    thermal: crate::detect::derived::ThermalParams,
    devices: DeviceMap<DevState>,
    /// Day accumulators by day, then device (looked up by `&str`, no key built per reading).
    days: BTreeMap<i64, DeviceMap<DayAcc>>,
    dirty: foldhash::HashSet<(i64, String)>,
    finished: Vec<Interruption>,
    /// Shared with fault localisation; copied only when a device registers at run time.
    topology: Arc<Topology>,
}

impl KpiEngine {
    /// An engine for the devices of `topology`, measuring against `alarms`' bands.
    pub fn new(cfg: &KpiConfig, alarms: &AlarmsConfig, topology: impl Into<Arc<Topology>>) -> Self {
        KpiEngine {
            cfg: cfg.clone(),
            band: alarms.standard.band_pct(),
            nominal_f: alarms.nominal_frequency,
            band_f: alarms.frequency_band_hz,
            thermal: alarms.thermal,
            devices: Default::default(),
            days: BTreeMap::new(),
            dirty: Default::default(),
            finished: Vec::new(),
            topology: topology.into(),
        }
    }

    /// Continues from saved day accumulators (today's, at start-up).
    pub fn restore(&mut self, rows: Vec<(i64, String, DayAcc)>) {
        for (day, device, acc) in rows {
            self.days.entry(day).or_default().insert_by_id(&device, acc);
        }
    }

    /// The network the engine aggregates over (devices that appear at run time included).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn cap_ns(&self, info: &DeviceInfo) -> i64 {
        match self.cfg.max_gap {
            Some(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            None => info.interval_ns.saturating_mul(3),
        }
    }

    /// Feeds one reading (in time order per device).
    pub fn on_reading(&mut self, r: &Reading) {
        let cap = self.cap_ns(&r.device);
        let topology = &mut self.topology;
        let st = self.devices.get_or_insert_with(&r.device, || {
            if topology.get(&r.device.id).is_none() {
                let d = &r.device;
                Arc::make_mut(topology).insert(Node {
                    customers: d.customers,
                    location: d.location.clone(),
                    ..Node::new(&d.id, &d.kind, &d.site, &d.feeder, d.parent.as_deref())
                });
            }
            DevState {
                info: Arc::clone(&r.device),
                last_ts: None,
                voltage: None,
                frequency: None,
                load: None,
                down: None,
                dirty_day: None,
            }
        });
        // 1. The time since the previous reading belongs to the previous state.
        if let Some(prev) = st.last_ts
            && r.ts > prev
        {
            let end = prev + (r.ts - prev).min(cap);
            let mut t = prev;
            while t < end {
                let day = day_of(t);
                let cut = ((day + 1) * NS_PER_DAY).min(end);
                let secs = (cut - t) as f64 / NS_PER_S as f64;
                let acc = self
                    .days
                    .entry(day)
                    .or_default()
                    .get_or_insert_with(&st.info, DayAcc::default);
                if let Some(c) = st.voltage {
                    acc.voltage.record(c, secs);
                }
                if let Some(c) = st.frequency {
                    acc.frequency.record(c, secs);
                }
                if let Some((load, hot)) = st.load {
                    acc.loading
                        .record(load, hot, self.thermal.reference_hot_spot_c, secs);
                }
                if st.dirty_day != Some(day) {
                    self.dirty.insert((day, st.info.id.clone()));
                    st.dirty_day = Some(day);
                }
                t = cut;
            }
        }
        if st.last_ts.is_some_and(|p| r.ts <= p) {
            return;
        }
        st.last_ts = Some(r.ts);

        // 2. This reading's state.
        let mut present = [0.0; 3];
        let mut n = 0;
        for v in Known::VOLTAGES.into_iter().filter_map(|k| r.known(k)) {
            present[n] = v;
            n += 1;
        }
        let phases = &present[..n];
        let nominal = r.device.nominal_voltage;
        let gasp = r.known(Known::LastGasp) == Some(1.0);
        let no_voltage = match (nominal, phases.is_empty()) {
            (Some(n), false) => Some(
                phases.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                    < self.cfg.interruption_fraction * n,
            ),
            _ => None,
        };
        match (st.down, gasp, no_voltage) {
            (None, true, _) => st.down = Some((r.ts, "last_gasp")),
            (None, false, Some(true)) => st.down = Some((r.ts, "voltage")),
            (Some((start, cause)), false, Some(false)) => {
                self.finished.push(Interruption {
                    device: st.info.id.clone(),
                    start,
                    end: r.ts,
                    customers: st.info.customers,
                    cause: cause.to_string(),
                });
                st.down = None;
            }
            _ => {}
        }
        let up = st.down.is_none();
        st.voltage = match (up, nominal) {
            (true, Some(n)) if !phases.is_empty() => {
                Some(indices::classify_voltage(phases, n, self.band))
            }
            _ => None,
        };
        st.frequency = r
            .get("frequency")
            .filter(|_| up)
            .map(|f| indices::classify_frequency(f, self.nominal_f, self.band_f));
        st.load = if r.device.kind == TRANSFORMER {
            crate::detect::derived::load_pct(r).map(|load| {
                let hot = r.known(Known::WindingTemp).or_else(|| {
                    r.known(Known::OilTemp).map(|oil| {
                        crate::detect::derived::hot_spot(oil, load / 100.0, &self.thermal)
                    })
                });
                (load, hot)
            })
        } else {
            None
        };
    }

    /// Adds an interruption found elsewhere (fault localisation: meters that went dark
    /// without a last gasp). Overlaps with the device's own records are merged later.
    pub fn record_interruption(&mut self, i: Interruption) {
        self.finished.push(i);
    }

    /// What changed since the last call, for saving: day accumulators and finished
    /// interruptions. Days before `keep_from` are dropped from memory afterwards.
    pub fn take_changes(&mut self, keep_from: i64) -> Changes {
        let days = self
            .dirty
            .drain()
            .filter_map(|(d, dev)| {
                let acc = *self.days.get(&d)?.get_by_id(&dev)?;
                Some((d, dev, acc))
            })
            .collect();
        for st in self.devices.values_mut() {
            st.dirty_day = None;
        }
        self.days.retain(|d, _| *d >= keep_from);
        Changes {
            days,
            interruptions: std::mem::take(&mut self.finished),
        }
    }

    /// Interruptions still going on, ending at `now` (for live figures).
    pub fn open_interruptions(&self, now: Timestamp) -> Vec<Interruption> {
        self.devices
            .values()
            .filter_map(|s| {
                s.down.map(|(start, cause)| Interruption {
                    device: s.info.id.clone(),
                    start,
                    end: now.max(start),
                    customers: s.info.customers,
                    cause: cause.to_string(),
                })
            })
            .collect()
    }

    /// Devices interrupted now.
    pub fn interrupted(&self) -> usize {
        self.devices.values().filter(|s| s.down.is_some()).count()
    }
}

/// Unsaved changes of the engine.
#[derive(Debug, Default)]
pub struct Changes {
    /// `(day, device, accumulators)`.
    pub days: Vec<(i64, String, DayAcc)>,
    /// Finished interruptions.
    pub interruptions: Vec<Interruption>,
}

/// Scope of a KPI query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One device.
    Device,
    /// A transformer and the meters it supplies.
    Transformer,
    /// A feeder (`id` = feeder name, or `site/feeder` when names repeat across sites).
    Feeder,
    /// A site (substation).
    Site,
    /// Everything.
    Network,
}

/// Figures of one transformer over the period.
#[derive(Debug, Clone, Serialize)]
pub struct TransformerLoading {
    /// Transformer id.
    pub transformer: String,
    /// Time-weighted average load, %.
    pub average_pct: Option<f64>,
    /// Peak load, %.
    pub peak_pct: f64,
    /// Hours above 100 % of rating.
    pub hours_over_100: f64,
    /// Loss of life, hours (IEEE C57.91 Σ F_AA·Δt).
    pub loss_of_life_h: f64,
    /// IEC 60076-7 relative ageing, hours.
    pub ageing_iec_h: f64,
}

/// Compliance figures with their inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Compliance {
    /// Rate, % (`None` without monitored time).
    pub compliance_pct: Option<f64>,
    /// Time above the band, s.
    pub t_over_s: f64,
    /// Time below the band, s.
    pub t_under_s: f64,
    /// Monitored time, s.
    pub t_total_s: f64,
}

impl From<Band> for Compliance {
    fn from(b: Band) -> Self {
        Compliance {
            compliance_pct: b.rate_pct(),
            t_over_s: b.t_over,
            t_under_s: b.t_under,
            t_total_s: b.t_total,
        }
    }
}

/// The answer to a KPI query.
#[derive(Debug, Clone, Serialize)]
pub struct KpiReport {
    /// Scope.
    pub scope: Scope,
    /// Scope id (empty for the network).
    pub id: String,
    /// Period start, ns (whole UTC days for compliance and loading).
    pub from: Timestamp,
    /// Period end, ns (exclusive).
    pub to: Timestamp,
    /// Devices in scope.
    pub devices: usize,
    /// Voltage compliance.
    pub voltage: Compliance,
    /// Frequency compliance.
    pub frequency: Compliance,
    /// Supply reliability of the customers in scope.
    pub reliability: Reliability,
    /// Interruptions in the period (clipped), oldest first.
    pub interruptions: Vec<Interruption>,
    /// Transformer loading.
    pub loading: Vec<TransformerLoading>,
}

/// Why a KPI query failed.
#[derive(Debug, thiserror::Error)]
pub enum KpiError {
    /// No such device, transformer, feeder or site.
    #[error("unknown {0:?} {1:?}")]
    UnknownScope(Scope, String),
    /// The event database failed.
    #[error(transparent)]
    Database(#[from] EventLogError),
}

/// Device ids in a scope.
pub fn scope_devices(t: &Topology, scope: Scope, id: &str) -> Result<Vec<String>, KpiError> {
    let ids: Vec<String> = match scope {
        Scope::Network => t.nodes().map(|n| n.id.clone()).collect(),
        Scope::Device => t.get(id).map(|n| vec![n.id.clone()]).unwrap_or_default(),
        Scope::Transformer => match t.get(id) {
            Some(n) if n.kind == TRANSFORMER => std::iter::once(n.id.clone())
                .chain(t.descendants(id).into_iter().map(|d| d.id.clone()))
                .collect(),
            _ => Vec::new(),
        },
        Scope::Feeder => {
            let (site, feeder) = match id.split_once('/') {
                Some((s, f)) => (Some(s), f),
                None => (None, id),
            };
            t.nodes()
                .filter(|n| n.feeder == feeder && site.is_none_or(|s| n.site == s))
                .map(|n| n.id.clone())
                .collect()
        }
        Scope::Site => t
            .nodes()
            .filter(|n| n.site == id)
            .map(|n| n.id.clone())
            .collect(),
    };
    if ids.is_empty() && scope != Scope::Network {
        return Err(KpiError::UnknownScope(scope, id.to_string()));
    }
    Ok(ids)
}

/// What the live engine adds to the saved figures.
#[derive(Debug, Default)]
pub struct Live {
    /// Unsaved day accumulators (they replace saved ones of the same day and device).
    pub days: Vec<(i64, String, DayAcc)>,
    /// Unsaved finished interruptions and the ones still going on.
    pub interruptions: Vec<Interruption>,
}

/// The KPIs of `scope`/`id` over `[from, to)` from the event database plus `live`.
/// Compliance and loading count whole UTC days (a day belongs to the period when it starts
/// in it); interruptions are clipped to the exact period.
#[allow(clippy::too_many_arguments)]
pub fn query(
    log: &EventLog,
    topology: &Topology,
    live: &Live,
    momentary_limit: Duration,
    scope: Scope,
    id: &str,
    from: Timestamp,
    to: Timestamp,
) -> Result<KpiReport, KpiError> {
    let saved = Saved::load(log, from, to)?;
    query_saved(&saved, topology, live, momentary_limit, scope, id)
}

/// What the event database holds for a period, read once for any number of scopes.
pub struct Saved {
    from: Timestamp,
    to: Timestamp,
    days: Vec<(i64, String, DayAcc)>,
    interruptions: Vec<Interruption>,
}

impl Saved {
    /// Day accumulators and interruptions of `[from, to)` (blocking).
    pub fn load(log: &EventLog, from: Timestamp, to: Timestamp) -> Result<Saved, KpiError> {
        let (d0, d1) = (day_of(from + NS_PER_DAY - 1), day_of(to + NS_PER_DAY - 1));
        Ok(Saved {
            from,
            to,
            days: log.kpi_days(d0, d1)?,
            interruptions: log.interruptions(from, to)?,
        })
    }
}

/// [`query`] over data already read: the `kpi` points of every feeder and site read the
/// database once, not once per scope (at 10,000 devices that was 10,000 rows per scope).
pub fn query_saved(
    saved: &Saved,
    topology: &Topology,
    live: &Live,
    momentary_limit: Duration,
    scope: Scope,
    id: &str,
) -> Result<KpiReport, KpiError> {
    let (from, to) = (saved.from, saved.to);
    let ids = scope_devices(topology, scope, id)?;
    let set: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let (d0, d1) = (day_of(from + NS_PER_DAY - 1), day_of(to + NS_PER_DAY - 1));
    let mut per: BTreeMap<(i64, String), DayAcc> = BTreeMap::new();
    for (day, dev, acc) in &saved.days {
        if set.contains(dev.as_str()) {
            per.insert((*day, dev.clone()), *acc);
        }
    }
    for (day, dev, acc) in &live.days {
        if (d0..d1).contains(day) && set.contains(dev.as_str()) {
            per.insert((*day, dev.clone()), *acc);
        }
    }
    let mut total = DayAcc::default();
    let mut by_tx: BTreeMap<String, Loading> = BTreeMap::new();
    for ((_, dev), acc) in &per {
        total.voltage.add(&acc.voltage);
        total.frequency.add(&acc.frequency);
        if topology.get(dev).is_some_and(|n| n.kind == TRANSFORMER) && acc.loading.t > 0.0 {
            by_tx.entry(dev.clone()).or_default().add(&acc.loading);
        }
    }
    // Customers: the meters in scope (a scope without meters counts its own devices).
    let nodes: Vec<&Node> = ids.iter().filter_map(|i| topology.get(i)).collect();
    let meters: Vec<&Node> = nodes.iter().copied().filter(|n| n.kind == METER).collect();
    let counted: Vec<&Node> = if meters.is_empty() { nodes } else { meters };
    let counted_ids: HashSet<&str> = counted.iter().map(|n| n.id.as_str()).collect();
    let served: u64 = counted.iter().map(|n| u64::from(n.customers)).sum();
    let mut list: Vec<Interruption> = saved
        .interruptions
        .iter()
        .chain(&live.interruptions)
        .filter(|i| counted_ids.contains(i.device.as_str()) && i.end > from && i.start < to)
        .cloned()
        .collect();
    list.sort_by(|a, b| (a.start, &a.device).cmp(&(b.start, &b.device)));
    list.dedup();
    let limit = i64::try_from(momentary_limit.as_nanos()).unwrap_or(i64::MAX);
    let reliability = indices::reliability(&list, served, from, to, limit);
    Ok(KpiReport {
        scope,
        id: id.to_string(),
        from,
        to,
        devices: ids.len(),
        voltage: total.voltage.into(),
        frequency: total.frequency.into(),
        reliability,
        interruptions: list,
        loading: by_tx
            .into_iter()
            .map(|(t, l)| TransformerLoading {
                transformer: t,
                average_pct: l.average_pct(),
                peak_pct: l.peak_pct,
                hours_over_100: l.t_over_100 / 3600.0,
                loss_of_life_h: l.loss_of_life_h,
                ageing_iec_h: l.ageing_iec_h,
            })
            .collect(),
    })
}

/// The engine as the daemon runs it, shared with the API.
pub struct KpiService {
    engine: Mutex<KpiEngine>,
    log: Arc<EventLog>,
    cfg: KpiConfig,
    /// Day of the last `kpi` points written (to close a finished day once).
    last_day: Mutex<Option<i64>>,
}

impl KpiService {
    /// Wraps `engine`, restoring today's saved figures from `log`.
    pub fn new(
        mut engine: KpiEngine,
        log: Arc<EventLog>,
        cfg: &KpiConfig,
        now: Timestamp,
    ) -> Result<Arc<Self>, EventLogError> {
        let today = day_of(now);
        engine.restore(log.kpi_days(today, today + 1)?);
        Ok(Arc::new(KpiService {
            engine: Mutex::new(engine),
            log,
            cfg: cfg.clone(),
            last_day: Mutex::new(Some(today)),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KpiEngine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feeds a reading.
    pub fn on_reading(&self, r: &Reading) {
        self.lock().on_reading(r);
    }

    /// [`on_reading`](Self::on_reading) for several readings, in order, under one lock.
    pub fn on_readings<'a>(&self, readings: impl IntoIterator<Item = &'a Arc<Reading>>) {
        let mut engine = self.lock();
        for r in readings {
            engine.on_reading(r);
        }
    }

    /// Adds an interruption found elsewhere (see [`KpiEngine::record_interruption`]).
    pub fn record_interruption(&self, i: Interruption) {
        self.lock().record_interruption(i);
    }

    /// Saves what changed (blocking: call from `spawn_blocking`).
    pub fn save(&self, now: Timestamp) -> Result<(), EventLogError> {
        let changes = self.lock().take_changes(day_of(now) - 1);
        self.log.save_kpi(&changes.days, &changes.interruptions)
    }

    /// KPIs of a scope over a period, live figures included (blocking).
    pub fn query(
        &self,
        scope: Scope,
        id: &str,
        from: Timestamp,
        to: Timestamp,
        now: Timestamp,
    ) -> Result<KpiReport, KpiError> {
        let (topology, live) = self.snapshot(now);
        query(
            &self.log,
            &topology,
            &live,
            self.cfg.momentary_limit,
            scope,
            id,
            from,
            to,
        )
    }

    /// The network and the figures not yet saved, copied under one lock.
    fn snapshot(&self, now: Timestamp) -> (Arc<Topology>, Live) {
        let e = self.lock();
        let days = e
            .days
            .iter()
            .flat_map(|(d, per)| per.iter().map(|(dev, a)| (*d, dev.to_string(), *a)))
            .collect();
        let mut interruptions = e.finished.clone();
        interruptions.extend(e.open_interruptions(now));
        (
            Arc::clone(&e.topology),
            Live {
                days,
                interruptions,
            },
        )
    }

    /// Today's figures so far of every feeder and site as `kpi` points (`period=today`,
    /// stamped `now`), and, on the first call of a new day, the previous day's final ones
    /// (`period=day`, stamped at that day's last nanosecond).
    pub fn lines(&self, now: Timestamp) -> String {
        let (topology, live) = self.snapshot(now);
        let today = day_of(now);
        let from = today * NS_PER_DAY;
        let mut out = String::new();
        let previous = {
            let mut last = self.last_day.lock().unwrap_or_else(|e| e.into_inner());
            let previous = last.filter(|d| *d < today);
            *last = Some(today);
            previous
        };
        let mut scopes: Vec<(Scope, String, String, String)> = Vec::new();
        let mut sites: Vec<String> = Vec::new();
        for key in topology.feeders().keys() {
            scopes.push((
                Scope::Feeder,
                format!("{}/{}", key.site, key.feeder),
                key.site.clone(),
                key.feeder.clone(),
            ));
            if !sites.contains(&key.site) {
                sites.push(key.site.clone());
            }
        }
        for s in sites {
            scopes.push((Scope::Site, s.clone(), s, String::new()));
        }
        let limit = self.cfg.momentary_limit;
        let load = |from, to| match Saved::load(&self.log, from, to) {
            Ok(saved) => Some(saved),
            Err(e) => {
                tracing::error!(error = %e, "cannot read saved KPI figures");
                None
            }
        };
        let yesterday = previous
            .map(|d| (d, (d + 1) * NS_PER_DAY))
            .and_then(|(d, end)| Some((load(d * NS_PER_DAY, end)?, end)));
        let today = load(from, now);
        for (scope, id, site, feeder) in scopes {
            if let Some((saved, end)) = &yesterday
                && let Ok(r) = query_saved(saved, &topology, &live, limit, scope, &id)
            {
                write_kpi_line(&mut out, &r, &site, &feeder, "day", end - 1);
            }
            if let Some(saved) = &today
                && let Ok(r) = query_saved(saved, &topology, &live, limit, scope, &id)
            {
                write_kpi_line(&mut out, &r, &site, &feeder, "today", now);
            }
        }
        out
    }
}

/// One `kpi` point: `kpi,feeder=..,id=..,period=..,scope=..,site=.. fields ts`.
pub fn write_kpi_line(
    out: &mut String,
    r: &KpiReport,
    site: &str,
    feeder: &str,
    period: &str,
    ts: Timestamp,
) {
    use crate::sinks::lineproto::{FieldValue, series_key, write_line};
    let scope = match r.scope {
        Scope::Device => "device",
        Scope::Transformer => "transformer",
        Scope::Feeder => "feeder",
        Scope::Site => "site",
        Scope::Network => "network",
    };
    let key = series_key(
        "kpi",
        &[
            ("feeder", feeder),
            ("id", &r.id),
            ("period", period),
            ("scope", scope),
            ("site", site),
        ],
    );
    let rel = &r.reliability;
    let mut fields: Vec<(&str, FieldValue)> = vec![
        ("voltage_t_over_s", FieldValue::F64(r.voltage.t_over_s)),
        ("voltage_t_under_s", FieldValue::F64(r.voltage.t_under_s)),
        ("voltage_t_total_s", FieldValue::F64(r.voltage.t_total_s)),
        (
            "frequency_t_total_s",
            FieldValue::F64(r.frequency.t_total_s),
        ),
        ("saifi", FieldValue::F64(rel.saifi)),
        ("saidi_min", FieldValue::F64(rel.saidi_min)),
        ("maifi", FieldValue::F64(rel.maifi)),
        ("rs1_pct", FieldValue::F64(rel.rs1_pct)),
        (
            "customers_served",
            FieldValue::I64(i64::try_from(rel.customers_served).unwrap_or(i64::MAX)),
        ),
    ];
    if let Some(v) = r.voltage.compliance_pct {
        fields.push(("voltage_compliance_pct", FieldValue::F64(v)));
    }
    if let Some(v) = r.frequency.compliance_pct {
        fields.push(("frequency_compliance_pct", FieldValue::F64(v)));
    }
    write_line(out, &key, &fields, ts);
}

/// Feeds readings to the service; saves every `write_interval` (and at the end) and
/// writes today's `kpi` points to the store through `lines`.
pub async fn run(
    mut rx: crate::pipeline::ReadingRx,
    service: Arc<KpiService>,
    lines: Option<mpsc::UnboundedSender<String>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(service.cfg.write_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // At shutdown only the save counts: the batcher may already have flushed its last batch.
    let save = |service: &Arc<KpiService>, points: bool| {
        let s = Arc::clone(service);
        tokio::task::spawn_blocking(move || {
            let now = crate::model::now_ns();
            if let Err(e) = s.save(now) {
                tracing::error!(error = %e, "cannot save KPI figures");
            }
            if points { s.lines(now) } else { String::new() }
        })
    };
    // Compliance is counted per reading time, not arrival time: taking readings in chunks
    // changes no figure and saves a wake-up (and a lock) per reading.
    let linger = std::time::Duration::from_millis(20);
    let mut chunk = crate::pipeline::Chunk::new();
    loop {
        tokio::select! {
            n = rx.recv_chunk(&mut chunk, 1024, linger) => {
                if n == 0 {
                    break;
                }
                service.on_readings(chunk.iter());
                chunk.clear();
            }
            _ = tick.tick() => {
                if let Ok(text) = save(&service, true).await
                    && let Some(tx) = &lines
                    && !text.is_empty()
                {
                    let _ = tx.send(text);
                }
            }
            _ = cancel.cancelled() => break,
        }
    }
    let _ = save(&service, false).await;
}

#[cfg(test)]
mod tests;
