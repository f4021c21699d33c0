//! The event log: a SQLite database (`data_dir/gridwatch.db`, WAL) holding what happened to
//! the network and who did what.
//!
//! - **events**: alarm raised / escalated / acknowledged / shelved / cleared, device online /
//!   offline / degraded, maintenance records, work orders, config loaded, daemon started /
//!   stopped; each with time, device, actor (a user or `system`) and JSON detail. Written
//!   with [`EventLog::record`]; read with [`EventLog::query_events`] (cursor pagination).
//! - **audit**: every state-changing request (with before/after) and every authentication
//!   attempt. Append-only (a trigger refuses updates) and never deleted before 90 days (a
//!   second trigger, and the purge). A change and its audit record commit in one transaction:
//!   when the audit record cannot be written, the change is rolled back, the caller gets
//!   [`EventLogError::AuditFailed`] and a system alarm is raised (fail closed).
//! - **alarms**, **maintenance**, **work_orders**, **users**: current state, see
//!   [`records`] and [`users`].
//!
//! Every write commits with `synchronous = FULL`: when a method returns `Ok`, the change is
//! on disk and survives a kill -9 or a power cut. The connection is behind a mutex; callers on
//! the async runtime go through `spawn_blocking` (see `api::blocking`).

pub mod records;
pub mod schema;
pub mod users;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::config::{EventLogConfig, Retention};
use crate::hub::{Hub, LiveEvent};
use crate::metrics::{Counter, Registry};
use crate::model::{DeviceInfo, Timestamp, now_ns};

pub use records::*;
pub use users::*;

/// The actor of everything the daemon does by itself.
pub const SYSTEM: &str = "system";

/// File name of the database inside `data_dir`.
pub const DB_FILE: &str = "gridwatch.db";

/// Most events one query returns.
pub const MAX_PAGE: usize = 1000;

/// Why an event-log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    /// SQLite reported an error.
    #[error("event database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory could not be created.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this to this record (e.g. crew on another crew's work order).
    #[error("{0}")]
    Forbidden(String),
    /// The audit record could not be written, so the change was not made.
    #[error("audit trail unavailable, change refused: {0}")]
    AuditFailed(String),
    /// A stored JSON value did not parse.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// What kind of thing happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An alarm became active.
    AlarmRaised,
    /// An active alarm got a higher severity.
    AlarmEscalated,
    /// Someone acknowledged an alarm.
    AlarmAcknowledged,
    /// Someone shelved an alarm until a given time.
    AlarmShelved,
    /// The alarm condition went away.
    AlarmCleared,
    /// A device answers completely again.
    DeviceOnline,
    /// A device stopped answering.
    DeviceOffline,
    /// A device answers partly or failed a poll.
    DeviceDegraded,
    /// A maintenance record was created, updated or closed.
    Maintenance,
    /// A work order was created, assigned, started or closed.
    WorkOrder,
    /// The configuration was loaded.
    ConfigLoaded,
    /// The daemon started.
    DaemonStarted,
    /// The daemon stopped cleanly.
    DaemonStopped,
}

/// Retention classes: what `[eventlog.retention]` sets a lifetime for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventClass {
    /// Device online / offline / degraded.
    DeviceStatus,
    /// Alarm changes.
    Alarm,
    /// Maintenance records and work orders.
    Maintenance,
    /// Config loaded, daemon started / stopped.
    System,
}

impl EventClass {
    /// Every class.
    pub const ALL: [EventClass; 4] = [
        EventClass::DeviceStatus,
        EventClass::Alarm,
        EventClass::Maintenance,
        EventClass::System,
    ];

    /// The name used in the database and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::DeviceStatus => "device_status",
            EventClass::Alarm => "alarm",
            EventClass::Maintenance => "maintenance",
            EventClass::System => "system",
        }
    }
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 13] = [
        EventKind::AlarmRaised,
        EventKind::AlarmEscalated,
        EventKind::AlarmAcknowledged,
        EventKind::AlarmShelved,
        EventKind::AlarmCleared,
        EventKind::DeviceOnline,
        EventKind::DeviceOffline,
        EventKind::DeviceDegraded,
        EventKind::Maintenance,
        EventKind::WorkOrder,
        EventKind::ConfigLoaded,
        EventKind::DaemonStarted,
        EventKind::DaemonStopped,
    ];

    /// The name stored and accepted in filters (`alarm_raised`, `device_offline`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AlarmRaised => "alarm_raised",
            EventKind::AlarmEscalated => "alarm_escalated",
            EventKind::AlarmAcknowledged => "alarm_acknowledged",
            EventKind::AlarmShelved => "alarm_shelved",
            EventKind::AlarmCleared => "alarm_cleared",
            EventKind::DeviceOnline => "device_online",
            EventKind::DeviceOffline => "device_offline",
            EventKind::DeviceDegraded => "device_degraded",
            EventKind::Maintenance => "maintenance",
            EventKind::WorkOrder => "work_order",
            EventKind::ConfigLoaded => "config_loaded",
            EventKind::DaemonStarted => "daemon_started",
            EventKind::DaemonStopped => "daemon_stopped",
        }
    }

    /// The kind named `s`, if there is one.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Its retention class.
    pub fn class(self) -> EventClass {
        match self {
            EventKind::AlarmRaised
            | EventKind::AlarmEscalated
            | EventKind::AlarmAcknowledged
            | EventKind::AlarmShelved
            | EventKind::AlarmCleared => EventClass::Alarm,
            EventKind::DeviceOnline | EventKind::DeviceOffline | EventKind::DeviceDegraded => {
                EventClass::DeviceStatus
            }
            EventKind::Maintenance | EventKind::WorkOrder => EventClass::Maintenance,
            EventKind::ConfigLoaded | EventKind::DaemonStarted | EventKind::DaemonStopped => {
                EventClass::System
            }
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct Event {
    /// When it happened (ns since epoch).
    pub ts: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// The device it is about, if any.
    pub device: Option<String>,
    /// Who did it: a user name or [`SYSTEM`].
    pub actor: String,
    /// Structured detail (JSON object).
    pub detail: serde_json::Value,
}

impl Event {
    /// An event happening now, done by the daemon itself.
    pub fn system(kind: EventKind, device: Option<&str>, detail: serde_json::Value) -> Event {
        Event {
            ts: now_ns(),
            kind,
            device: device.map(str::to_string),
            actor: SYSTEM.to_string(),
            detail,
        }
    }
}

/// One stored event, as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventRow {
    /// Event id (increasing).
    pub id: i64,
    /// ns since epoch.
    pub ts: Timestamp,
    /// RFC 3339 time.
    pub time: String,
    /// Event kind.
    pub kind: String,
    /// Device, if any.
    pub device: Option<String>,
    /// Site of the device.
    pub site: Option<String>,
    /// Feeder of the device.
    pub feeder: Option<String>,
    /// User or `system`.
    pub actor: String,
    /// Structured detail.
    pub detail: serde_json::Value,
}

/// A filter over events; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only this device.
    pub device: Option<String>,
    /// Only devices of this site.
    pub site: Option<String>,
    /// Only devices on this feeder.
    pub feeder: Option<String>,
    /// Only these kinds (empty = all).
    pub kinds: Vec<EventKind>,
    /// Events at or after (ns).
    pub since: Option<Timestamp>,
    /// Events before (ns).
    pub until: Option<Timestamp>,
    /// Continue after this event id (from the previous page's `next_cursor`).
    pub cursor: Option<i64>,
    /// Page size, 1..=[`MAX_PAGE`].
    pub limit: usize,
}

/// A page of results, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Who makes a change or an authentication attempt, and from where.
#[derive(Debug, Clone)]
pub struct AuditContext {
    /// User name, token id, or `-` when no credential was presented.
    pub actor: String,
    /// Client address (`ip:port`), or `local` for the CLI.
    pub address: String,
}

/// One audit-trail entry to write.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// `change` or `security`.
    pub category: &'static str,
    /// Action name (`alarm.ack`, `auth`, `user.add`, ...).
    pub action: String,
    /// What it acted on (`alarm/12`, the request path, ...).
    pub target: String,
    /// `ok` or why not.
    pub outcome: String,
    /// State before (JSON), for changes.
    pub before: Option<serde_json::Value>,
    /// State after (JSON), for changes.
    pub after: Option<serde_json::Value>,
    /// Anything else worth keeping.
    pub detail: serde_json::Value,
}

/// One stored audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRow {
    /// Record id.
    pub id: i64,
    /// ns since epoch.
    pub ts: Timestamp,
    /// `change` or `security`.
    pub category: String,
    /// Who.
    pub actor: String,
    /// From where.
    pub address: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Outcome.
    pub outcome: String,
    /// Before.
    pub before: Option<serde_json::Value>,
    /// After.
    pub after: Option<serde_json::Value>,
    /// Detail.
    pub detail: serde_json::Value,
}

/// The result of a change function run by [`EventLog::change`].
#[derive(Debug)]
pub struct Changed<T> {
    /// What the caller gets back.
    pub value: T,
    /// State before (for the audit record).
    pub before: Option<serde_json::Value>,
    /// State after (for the audit record).
    pub after: Option<serde_json::Value>,
    /// Events to record in the same transaction.
    pub events: Vec<Event>,
    /// Messages for the live stream, published after the commit.
    pub live: Vec<LiveEvent>,
}

/// What a purge removed, per class.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    /// `(class, rows)`, including `audit`, `alarms`, `maintenance_records`, `work_orders`.
    pub removed: Vec<(String, usize)>,
}

struct Counters {
    recorded: Counter,
    audit: Counter,
    security: Counter,
    audit_failures: Counter,
    purged: Counter,
}

/// The event database. Share it as `Arc<EventLog>`.
pub struct EventLog {
    conn: Mutex<Connection>,
    /// device id → (site, feeder), stamped on events so they can be filtered by both.
    directory: HashMap<String, (String, String)>,
    retention: EventLogConfig,
    hub: Hub,
    counters: Counters,
    system_alarm: AtomicBool,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog").finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (creating if needed) `data_dir/gridwatch.db`, sets WAL mode and applies the
    /// migrations.
    pub fn open(
        data_dir: &Path,
        cfg: &EventLogConfig,
        devices: &[Arc<DeviceInfo>],
        hub: Hub,
        metrics: &Registry,
    ) -> Result<Arc<EventLog>, EventLogError> {
        std::fs::create_dir_all(data_dir).map_err(|source| EventLogError::Io {
            path: data_dir.display().to_string(),
            source,
        })?;
        let mut conn = open_connection(&data_dir.join(DB_FILE))?;
        schema::migrate(&mut conn)?;
        let counters = Counters {
            recorded: metrics.counter(
                "gridwatch_events_recorded_total",
                "Events written to the event log.",
                &[],
            ),
            audit: metrics.counter(
                "gridwatch_audit_records_total",
                "Audit records written.",
                &[("category", "change")],
            ),
            security: metrics.counter(
                "gridwatch_audit_records_total",
                "Audit records written.",
                &[("category", "security")],
            ),
            audit_failures: metrics.counter(
                "gridwatch_audit_write_failures_total",
                "Audit records that could not be written (the request was refused).",
                &[],
            ),
            purged: metrics.counter(
                "gridwatch_eventlog_purged_total",
                "Rows removed by the retention purge.",
                &[],
            ),
        };
        Ok(Arc::new(EventLog {
            conn: Mutex::new(conn),
            directory: devices
                .iter()
                .map(|d| (d.id.clone(), (d.site.clone(), d.feeder.clone())))
                .collect(),
            retention: cfg.clone(),
            hub,
            counters,
            system_alarm: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hub alarm changes are published into.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// True once an audit write failed since start-up (the system alarm is up).
    pub fn audit_degraded(&self) -> bool {
        self.system_alarm.load(Ordering::Relaxed)
    }

    /// Records one event; returns its id once it is on disk.
    pub fn record(&self, event: Event) -> Result<i64, EventLogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let id = self.insert_event(&tx, &event)?;
        tx.commit()?;
        Ok(id)
    }

    /// Records `events` in one transaction (durable when this returns): a burst of status
    /// changes costs one commit, not one each.
    pub fn record_all(&self, events: &[Event]) -> Result<(), EventLogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for e in events {
            self.insert_event(&tx, e)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_event(&self, tx: &Transaction<'_>, e: &Event) -> Result<i64, EventLogError> {
        let (site, feeder) = e
            .device
            .as_ref()
            .and_then(|d| self.directory.get(d))
            .map(|(s, f)| (Some(s.as_str()), Some(f.as_str())))
            .unwrap_or((None, None));
        tx.execute(
            "INSERT INTO events (ts, kind, class, device, site, feeder, actor, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                e.ts,
                e.kind.as_str(),
                e.kind.class().as_str(),
                e.device,
                site,
                feeder,
                e.actor,
                e.detail.to_string()
            ],
        )?;
        self.counters.recorded.inc();
        Ok(tx.last_insert_rowid())
    }

    fn insert_audit(
        &self,
        tx: &Transaction<'_>,
        who: &AuditContext,
        entry: &AuditEntry,
    ) -> rusqlite::Result<i64> {
        tx.execute(
            "INSERT INTO audit (ts, category, actor, address, action, target, outcome, before, after, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                now_ns(),
                entry.category,
                who.actor,
                who.address,
                entry.action,
                entry.target,
                entry.outcome,
                entry.before.as_ref().map(|v| v.to_string()),
                entry.after.as_ref().map(|v| v.to_string()),
                entry.detail.to_string()
            ],
        )?;
        Ok(tx.last_insert_rowid())
    }

    /// Runs `f` in a transaction, records its events and one `change` audit record
    /// (`action` on `target` with before/after) in the same transaction, commits, then
    /// publishes its live events. Fail closed: if the audit record cannot be written nothing
    /// is changed, the system alarm is raised and [`EventLogError::AuditFailed`] returned.
    pub fn change<T>(
        &self,
        who: &AuditContext,
        action: &str,
        target: &str,
        f: impl FnOnce(&Transaction<'_>, Timestamp) -> Result<Changed<T>, EventLogError>,
    ) -> Result<T, EventLogError> {
        let live = {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            let changed = f(&tx, now_ns())?;
            for e in &changed.events {
                self.insert_event(&tx, e)?;
            }
            let entry = AuditEntry {
                category: "change",
                action: action.to_string(),
                target: target.to_string(),
                outcome: "ok".into(),
                before: changed.before,
                after: changed.after,
                detail: serde_json::json!({}),
            };
            if let Err(e) = self.insert_audit(&tx, who, &entry) {
                drop(tx);
                drop(conn);
                return Err(self.audit_failed(action, &e.to_string()));
            }
            if let Err(e) = tx.commit() {
                drop(conn);
                return Err(self.audit_failed(action, &e.to_string()));
            }
            self.counters.audit.inc();
            (changed.value, changed.live)
        };
        for l in live.1 {
            self.hub.publish(l);
        }
        Ok(live.0)
    }

    /// Writes one security event (an authentication attempt or a lockout). Fail closed: the
    /// caller refuses the request on error.
    pub fn security(&self, who: &AuditContext, entry: AuditEntry) -> Result<(), EventLogError> {
        let result = {
            let mut conn = self.lock();
            conn.transaction().and_then(|tx| {
                self.insert_audit(&tx, who, &entry)?;
                tx.commit()
            })
        };
        match result {
            Ok(()) => {
                self.counters.security.inc();
                Ok(())
            }
            Err(e) => Err(self.audit_failed(&entry.action, &e.to_string())),
        }
    }

    /// Named event "audit write failed": log, count, raise the system alarm.
    fn audit_failed(&self, action: &str, error: &str) -> EventLogError {
        self.counters.audit_failures.inc();
        tracing::error!(action, error, "audit write failed; request refused");
        let first = !self.system_alarm.swap(true, Ordering::Relaxed);
        if first {
            match self.raise_alarm(
                "gridwatch",
                "audit_write_failed",
                "critical",
                &format!("the audit trail cannot be written: {error}"),
                serde_json::json!({ "action": action }),
            ) {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot store the audit-failure system alarm")
                }
            }
        }
        EventLogError::AuditFailed(error.to_string())
    }

    /// Whether the database answers (for `/readyz`).
    pub fn ping(&self) -> Result<(), EventLogError> {
        let conn = self.lock();
        conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
        Ok(())
    }

    /// Events matching `q`, newest first, one page.
    pub fn query_events(&self, q: &EventQuery) -> Result<Page<EventRow>, EventLogError> {
        if q.limit == 0 || q.limit > MAX_PAGE {
            return Err(EventLogError::Invalid(format!(
                "limit must be 1 to {MAX_PAGE}"
            )));
        }
        let mut sql = String::from(
            "SELECT id, ts, kind, device, site, feeder, actor, detail FROM events WHERE 1=1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        use rusqlite::types::Value as V;
        if let Some(d) = &q.device {
            push(&mut sql, " AND device = ?", V::Text(d.clone()));
        }
        if let Some(s) = &q.site {
            push(&mut sql, " AND site = ?", V::Text(s.clone()));
        }
        if let Some(f) = &q.feeder {
            push(&mut sql, " AND feeder = ?", V::Text(f.clone()));
        }
        if let Some(t) = q.since {
            push(&mut sql, " AND ts >= ?", V::Integer(t));
        }
        if let Some(t) = q.until {
            push(&mut sql, " AND ts < ?", V::Integer(t));
        }
        if let Some(c) = q.cursor {
            push(&mut sql, " AND id < ?", V::Integer(c));
        }
        if !q.kinds.is_empty() {
            sql.push_str(" AND kind IN (");
            for (i, k) in q.kinds.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                push(&mut sql, "?", V::Text(k.as_str().to_string()));
            }
            sql.push(')');
        }
        let limit = i64::try_from(q.limit).unwrap_or(1000);
        push(&mut sql, " ORDER BY id DESC LIMIT ?", V::Integer(limit + 1));
        let conn = self.lock();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
            let ts: i64 = r.get(1)?;
            let detail: String = r.get(7)?;
            Ok(EventRow {
                id: r.get(0)?,
                ts,
                time: rfc3339(ts),
                kind: r.get(2)?,
                device: r.get(3)?,
                site: r.get(4)?,
                feeder: r.get(5)?,
                actor: r.get(6)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            })
        })?;
        let mut items = rows.collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > q.limit {
            items.truncate(q.limit);
            items.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// Audit records, newest first (for tests and the admin view); `category` filters.
    pub fn audit_records(
        &self,
        category: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditRow>, EventLogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, ts, category, actor, address, action, target, outcome, before, after, detail
             FROM audit WHERE (?1 IS NULL OR category = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        let rows = stmt.query_map(
            params![category, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(AuditRow {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    category: r.get(2)?,
                    actor: r.get(3)?,
                    address: r.get(4)?,
                    action: r.get(5)?,
                    target: r.get(6)?,
                    outcome: r.get(7)?,
                    before: json(r.get(8)?),
                    after: json(r.get(9)?),
                    detail: json(r.get(10)?).unwrap_or(serde_json::Value::Null),
                })
            },
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Deletes what the retention settings say is old enough, as of `now`; audit records
    /// are kept at least 90 days whatever the settings. Logs what it removed.
    pub fn purge(&self, now: Timestamp) -> Result<PurgeReport, EventLogError> {
        let r = &self.retention.retention;
        let cutoff =
            |d: Duration| now.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let mut report = PurgeReport::default();
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for class in EventClass::ALL {
            if let Retention::For(d) = r.get(class) {
                let n = tx.execute(
                    "DELETE FROM events WHERE class = ?1 AND ts < ?2",
                    params![class.as_str(), cutoff(d)],
                )?;
                report.removed.push((class.as_str().to_string(), n));
            }
        }
        let floor = Duration::from_secs(u64::try_from(schema::AUDIT_FLOOR_SECS).unwrap_or(0));
        let audit_keep = match r.audit {
            Retention::Forever => None,
            Retention::For(d) => Some(d.max(floor)),
        };
        if let Some(d) = audit_keep {
            let n = tx.execute("DELETE FROM audit WHERE ts < ?1", params![cutoff(d)])?;
            report.removed.push(("audit".into(), n));
        }
        if let Retention::For(d) = r.alarm {
            let n = tx.execute(
                "DELETE FROM alarms WHERE cleared_at IS NOT NULL AND acked_at IS NOT NULL
                 AND updated_at < ?1
                 AND id NOT IN (SELECT alarm_id FROM work_orders WHERE alarm_id IS NOT NULL)",
                params![cutoff(d)],
            )?;
            report.removed.push(("alarms".into(), n));
        }
        if let Retention::For(d) = r.maintenance {
            let n = tx.execute(
                "DELETE FROM maintenance WHERE status = 'closed' AND updated_at < ?1",
                params![cutoff(d)],
            )?;
            report.removed.push(("maintenance_records".into(), n));
            let n = tx.execute(
                "DELETE FROM work_orders WHERE state = 'closed' AND updated_at < ?1
                 AND id NOT IN (SELECT work_order_id FROM maintenance WHERE work_order_id IS NOT NULL)",
                params![cutoff(d)],
            )?;
            report.removed.push(("work_orders".into(), n));
        }
        tx.commit()?;
        let total: usize = report.removed.iter().map(|(_, n)| n).sum();
        self.counters
            .purged
            .add(u64::try_from(total).unwrap_or(u64::MAX));
        let summary: Vec<String> = report
            .removed
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        tracing::info!(removed = total, detail = %summary.join(" "), "event log purged");
        Ok(report)
    }

    /// Runs [`EventLog::purge`] every `purge_interval` until `cancel`.
    pub async fn run_purge(self: Arc<Self>, cancel: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(self.retention.purge_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let log = Arc::clone(&self);
                    match tokio::task::spawn_blocking(move || log.purge(now_ns())).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "event log purge failed"),
                        Err(e) => tracing::warn!(error = %e, "event log purge task failed"),
                    }
                }
            }
        }
    }

    /// The alarm engine's saved state: `(id, JSON)` per current alarm, by id.
    pub fn alarm_state(&self) -> Result<Vec<(i64, String)>, EventLogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, body FROM alarm_state ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Replaces the alarm engine's saved state in one transaction.
    pub fn save_alarm_state(&self, alarms: &[(i64, String)]) -> Result<(), EventLogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute("DELETE FROM alarm_state", [])?;
        {
            let mut stmt = tx.prepare("INSERT INTO alarm_state (id, body) VALUES (?1, ?2)")?;
            for (id, body) in alarms {
                stmt.execute(rusqlite::params![id, body])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Upserts the alarm engine's changed alarms and deletes the removed ones, in one
    /// transaction (durable when this returns).
    pub fn update_alarm_state(
        &self,
        changed: &[(i64, String)],
        removed: &[i64],
    ) -> Result<(), EventLogError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare("DELETE FROM alarm_state WHERE id = ?1")?;
            for id in removed {
                delete.execute([id])?;
            }
            let mut upsert = tx.prepare(
                "INSERT INTO alarm_state (id, body) VALUES (?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET body = excluded.body",
            )?;
            for (id, body) in changed {
                upsert.execute(rusqlite::params![id, body])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Saves KPI day accumulators (replacing the same day and device) and finished
    /// interruptions, in one transaction.
    pub fn save_kpi(
        &self,
        days: &[(i64, String, crate::kpi::DayAcc)],
        interruptions: &[crate::kpi::indices::Interruption],
    ) -> Result<(), EventLogError> {
        if days.is_empty() && interruptions.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut put = tx.prepare(
                "INSERT INTO kpi_daily (day, device, body) VALUES (?1, ?2, ?3)
                 ON CONFLICT (day, device) DO UPDATE SET body = excluded.body",
            )?;
            for (day, device, acc) in days {
                let body = serde_json::to_string(acc).map_err(EventLogError::Json)?;
                put.execute(rusqlite::params![day, device, body])?;
            }
            let mut add = tx.prepare(
                "INSERT INTO interruptions (device, start_ns, end_ns, customers, cause)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for i in interruptions {
                add.execute(rusqlite::params![
                    i.device,
                    i.start,
                    i.end,
                    i.customers,
                    i.cause
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// KPI day accumulators of days `from_day..to_day`.
    pub fn kpi_days(
        &self,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<(i64, String, crate::kpi::DayAcc)>, EventLogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT day, device, body FROM kpi_daily WHERE day >= ?1 AND day < ?2 ORDER BY day, device",
        )?;
        let rows = stmt.query_map(rusqlite::params![from_day, to_day], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (day, device, body) = row?;
            match serde_json::from_str(&body) {
                Ok(acc) => out.push((day, device, acc)),
                Err(e) => tracing::warn!(day, device, error = %e, "unreadable KPI row skipped"),
            }
        }
        Ok(out)
    }

    /// Interruptions overlapping `[from, to)`, oldest first.
    pub fn interruptions(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<crate::kpi::indices::Interruption>, EventLogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT device, start_ns, end_ns, customers, cause FROM interruptions
             WHERE end_ns > ?1 AND start_ns < ?2 ORDER BY start_ns, id",
        )?;
        let rows = stmt.query_map(rusqlite::params![from, to], |r| {
            Ok(crate::kpi::indices::Interruption {
                device: r.get(0)?,
                start: r.get(1)?,
                end: r.get(2)?,
                customers: r.get(3)?,
                cause: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Reads one row with `f`, or `None`.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<Option<T>>,
    ) -> Result<Option<T>, EventLogError> {
        let conn = self.lock();
        Ok(f(&conn)?)
    }
}

/// Opens the database file with the pragmas every connection needs.
pub fn open_connection(path: &Path) -> Result<Connection, EventLogError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "event database is not in WAL mode");
    }
    // FULL: a commit is on disk before it returns (the kill -9 / power-cut promise).
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// RFC 3339 text of a ns timestamp.
pub fn rfc3339(ns: Timestamp) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `Some(v)` from an optional single-row query.
pub(crate) fn optional<T>(r: rusqlite::Result<T>) -> rusqlite::Result<Option<T>> {
    r.optional()
}
