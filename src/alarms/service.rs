//! The running alarm stage: the `rules` pipeline consumer feeds the rule engine, the alarm
//! manager turns detections into events, and events fan out to notifications and to the
//! TSDB (`alarm` measurement). The API calls [`AlarmService`] to list, acknowledge and shelve.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{Alarm, AlarmError, AlarmEvent, AlarmManager, EventKind};
use crate::detect::{Detection, Engine};
use crate::metrics::{Counter, Registry};
use crate::model::Timestamp;
use crate::sinks::lineproto::{self, FieldValue};

/// Appends the `alarm` line for `ev` (raises, escalations, clears, acknowledgements,
/// flapping) to `buf`; other events write nothing. Tags: device, feeder, kind, rule,
/// severity, site; fields: event (string), state, value, limit, id; time: the event time.
pub fn write_alarm_line(buf: &mut String, ev: &AlarmEvent) {
    if !matches!(
        ev.kind,
        EventKind::Raised
            | EventKind::Escalated
            | EventKind::Cleared
            | EventKind::Acknowledged
            | EventKind::Flapping
    ) {
        return;
    }
    let a = &ev.alarm;
    let key = lineproto::series_key(
        "alarm",
        &[
            ("device", &a.device),
            ("feeder", &a.feeder),
            ("kind", &a.kind),
            ("rule", &a.rule),
            ("severity", a.severity.as_str()),
            ("site", &a.site),
        ],
    );
    let active = !matches!(ev.kind, EventKind::Cleared);
    lineproto::write_line(
        buf,
        &key,
        &[
            ("event", FieldValue::Str(ev.kind.as_str())),
            ("active", FieldValue::I64(i64::from(active))),
            ("value", FieldValue::F64(a.value)),
            ("limit", FieldValue::F64(a.limit)),
            (
                "id",
                FieldValue::I64(i64::try_from(a.id).unwrap_or(i64::MAX)),
            ),
        ],
        ev.at,
    );
}

/// Shared handle on the alarm state.
pub struct AlarmService {
    manager: Mutex<AlarmManager>,
    events: Option<mpsc::UnboundedSender<AlarmEvent>>,
    lines: Option<mpsc::UnboundedSender<String>>,
    raised: Counter,
}

impl AlarmService {
    /// Wraps `manager`; events go to `events` (notifications) and `lines` (TSDB).
    pub fn new(
        manager: AlarmManager,
        events: Option<mpsc::UnboundedSender<AlarmEvent>>,
        lines: Option<mpsc::UnboundedSender<String>>,
        metrics: &Registry,
    ) -> Arc<Self> {
        Arc::new(AlarmService {
            manager: Mutex::new(manager),
            events,
            lines,
            raised: metrics.counter("gridwatch_alarms_raised_total", "Alarms raised.", &[]),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AlarmManager> {
        self.manager.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, events: Vec<AlarmEvent>) {
        for ev in events {
            if ev.kind == EventKind::Raised {
                self.raised.inc();
            }
            tracing::info!(
                event = ev.kind.as_str(),
                id = ev.alarm.id,
                device = %ev.alarm.device,
                rule = %ev.alarm.rule,
                severity = ev.alarm.severity.as_str(),
                value = ev.alarm.value,
                limit = ev.alarm.limit,
                "alarm"
            );
            if let Some(lines) = &self.lines {
                let mut buf = String::new();
                write_alarm_line(&mut buf, &ev);
                if !buf.is_empty() {
                    let _ = lines.send(buf);
                }
            }
            if let Some(tx) = &self.events {
                let _ = tx.send(ev);
            }
        }
    }

    /// Applies detections from the engine.
    pub fn apply(&self, detections: &[Detection]) {
        if detections.is_empty() {
            return;
        }
        let events = self.lock().apply_all(detections);
        self.emit(events);
    }

    /// Shelf expiry and flapping settling at `now`.
    pub fn tick(&self, now: Timestamp) {
        let events = self.lock().tick(now);
        self.emit(events);
    }

    /// Current alarms.
    pub fn list(&self) -> Vec<Alarm> {
        self.lock().list()
    }

    /// Acknowledges an alarm.
    pub fn ack(&self, id: u64, by: Option<String>, now: Timestamp) -> Result<Alarm, AlarmError> {
        let events = self.lock().ack(id, by, now)?;
        let alarm = events
            .first()
            .map(|e| e.alarm.clone())
            .ok_or(AlarmError::NotFound(id))?;
        self.emit(events);
        Ok(alarm)
    }

    /// Shelves an alarm for `duration`.
    pub fn shelve(
        &self,
        id: u64,
        duration: Duration,
        by: Option<String>,
        now: Timestamp,
    ) -> Result<Alarm, AlarmError> {
        let ns = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
        let events = self.lock().shelve(id, ns, by, now)?;
        let alarm = events
            .first()
            .map(|e| e.alarm.clone())
            .ok_or(AlarmError::NotFound(id))?;
        self.emit(events);
        Ok(alarm)
    }

    /// Acknowledges the alarm of (device, rule), if the engine has one; an acknowledgement
    /// recorded by the event log is applied here so notifications and state follow it.
    pub fn ack_by_key(&self, device: &str, rule: &str, by: Option<String>, now: Timestamp) {
        if let Some(id) = self.id_of(device, rule)
            && let Err(e) = self.ack(id, by, now)
        {
            tracing::warn!(device, rule, error = %e, "alarm engine did not take the acknowledgement");
        }
    }

    /// Shelves the alarm of (device, rule), if the engine has one.
    pub fn shelve_by_key(
        &self,
        device: &str,
        rule: &str,
        duration: Duration,
        by: Option<String>,
        now: Timestamp,
    ) {
        if let Some(id) = self.id_of(device, rule)
            && let Err(e) = self.shelve(id, duration, by, now)
        {
            tracing::warn!(device, rule, error = %e, "alarm engine did not take the shelving");
        }
    }

    fn id_of(&self, device: &str, rule: &str) -> Option<u64> {
        self.lock()
            .list()
            .into_iter()
            .find(|a| a.device == device && a.rule == rule)
            .map(|a| a.id)
    }

    /// Restores the engine's view of alarms that were active before a restart.
    pub fn restore_into(&self, engine: &mut Engine) {
        for (device, rule, severity) in self.lock().active_conditions() {
            engine.restore(&device, &rule, severity);
        }
    }
}

/// Most readings the rules task takes from its channel at once.
const RULES_CHUNK: usize = 256;

/// How long the rules task lets readings gather after the first: part of the alarm latency
/// that `scripts/bench-alarm.sh` measures (target p99 ≤ 50 ms), and one wake-up per chunk
/// instead of one per reading.
const RULES_LINGER: Duration = Duration::from_millis(5);

/// The `rules` consumer: evaluates every reading, and once a second checks communication
/// loss and alarm timers on the wall clock. Ends when the pipeline closes `rx` or on
/// `cancel`.
pub async fn run_rules(
    mut rx: crate::pipeline::ReadingRx,
    mut engine: Engine,
    mut locate: Option<Localisation>,
    service: Arc<AlarmService>,
    cancel: CancellationToken,
) {
    // The engine was built before the sources were started; no device could answer before.
    engine.start_timers(crate::model::now_ns());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Readings that queued up while the last ones were handled are taken together, so an
    // alarm storm (every meter of a region at once) saves the alarm state once per chunk.
    let mut chunk = crate::pipeline::Chunk::new();
    let mut detections = Vec::new();
    loop {
        tokio::select! {
            n = rx.recv_chunk(&mut chunk, RULES_CHUNK, RULES_LINGER) => {
                if n == 0 {
                    break;
                }
                for r in chunk.iter() {
                    let d = engine.on_reading(r);
                    match locate.as_mut() {
                        Some(l) => {
                            l.locator.observe(r);
                            detections.extend(l.locator.process(d));
                        }
                        None => detections.extend(d),
                    }
                }
                chunk.clear();
                service.apply(&detections);
                detections.clear();
            }
            _ = tick.tick() => {
                let now = crate::model::now_ns();
                let mut d = engine.tick(now);
                if let Some(l) = locate.as_mut() {
                    d = l.locator.process(d);
                    d.extend(l.locator.tick(now));
                    l.hand_over();
                }
                service.apply(&d);
                service.tick(now);
            }
            _ = cancel.cancelled() => break,
        }
    }
}

/// Fault localisation as the daemon runs it: the locator, where its outage notices go
/// (MQTT) and where restored outages' interruptions go (KPIs).
pub struct Localisation {
    /// The stage.
    pub locator: crate::detect::locate::Locator,
    /// Outage notices for the notifier.
    pub notices: Option<mpsc::UnboundedSender<crate::detect::locate::OutageNotice>>,
    /// The KPI engine.
    pub kpi: Option<Arc<crate::kpi::KpiService>>,
}

impl Localisation {
    fn hand_over(&mut self) {
        for n in self.locator.take_notices() {
            tracing::info!(
                event = ?n.event,
                element = %n.outage.element,
                meters = n.outage.meters.len(),
                customers = n.outage.customers,
                "outage"
            );
            if let Some(tx) = &self.notices {
                let _ = tx.send(n);
            }
        }
        for i in self.locator.take_interruptions() {
            if let Some(k) = &self.kpi {
                k.record_interruption(i);
            }
        }
    }
}
