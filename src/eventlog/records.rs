//! Current-state records kept beside the events: alarms, maintenance records, work orders.
//!
//! Alarms: the alarm engine (`src/alarms/`) owns the state machine and calls the
//! [`AlarmStore`] methods on transitions it decides (raise, escalate, clear); people
//! acknowledge and shelve through the API ([`EventLog::ack_alarm`], [`EventLog::shelve_alarm`],
//! audited). Every change records its event and is published to the live hub.
//! An alarm is *open* until it is both cleared and acknowledged (a cleared alarm nobody
//! acknowledged stays visible), so at most one open alarm exists per (device, rule).

use rusqlite::{Connection, Row, Transaction, params};
use serde::{Deserialize, Serialize};

use super::{AuditContext, Changed, Event, EventKind, EventLog, EventLogError, Page, SYSTEM};
use crate::hub::LiveEvent;
use crate::model::{Timestamp, now_ns};

/// One alarm as stored and shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AlarmRecord {
    /// Alarm id.
    pub id: i64,
    /// Device.
    pub device: String,
    /// Rule that raised it.
    pub rule: String,
    /// `info`, `warning`, `major`, `critical` (the alarm engine's words).
    pub severity: String,
    /// Text for people.
    pub message: String,
    /// `active`, `acknowledged`, `cleared` (cleared, not yet acknowledged) or `closed`.
    pub state: String,
    /// True while shelved (`shelved_until` in the future).
    pub shelved: bool,
    /// Raised (ns).
    pub raised_at: Timestamp,
    /// Last change (ns).
    pub updated_at: Timestamp,
    /// Cleared (ns).
    pub cleared_at: Option<Timestamp>,
    /// Who acknowledged.
    pub acked_by: Option<String>,
    /// When (ns).
    pub acked_at: Option<Timestamp>,
    /// Acknowledgement comment.
    pub ack_comment: Option<String>,
    /// Shelved until (ns).
    pub shelved_until: Option<Timestamp>,
    /// Who shelved.
    pub shelved_by: Option<String>,
    /// Shelving comment.
    pub shelve_comment: Option<String>,
    /// Rule detail (JSON).
    pub detail: serde_json::Value,
}

const ALARM_COLS: &str = "id, device, rule, severity, message, raised_at, updated_at, cleared_at, \
    acked_by, acked_at, ack_comment, shelved_until, shelved_by, shelve_comment, detail";

fn alarm_from_row(r: &Row<'_>) -> rusqlite::Result<AlarmRecord> {
    let cleared_at: Option<i64> = r.get(7)?;
    let acked_at: Option<i64> = r.get(9)?;
    let shelved_until: Option<i64> = r.get(11)?;
    let detail: String = r.get(14)?;
    let state = match (cleared_at.is_some(), acked_at.is_some()) {
        (false, false) => "active",
        (false, true) => "acknowledged",
        (true, false) => "cleared",
        (true, true) => "closed",
    };
    Ok(AlarmRecord {
        id: r.get(0)?,
        device: r.get(1)?,
        rule: r.get(2)?,
        severity: r.get(3)?,
        message: r.get(4)?,
        state: state.into(),
        shelved: shelved_until.is_some_and(|t| t > now_ns()),
        raised_at: r.get(5)?,
        updated_at: r.get(6)?,
        cleared_at,
        acked_by: r.get(8)?,
        acked_at,
        ack_comment: r.get(10)?,
        shelved_until,
        shelved_by: r.get(12)?,
        shelve_comment: r.get(13)?,
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    })
}

fn get_alarm(conn: &Connection, id: i64) -> Result<AlarmRecord, EventLogError> {
    super::optional(conn.query_row(
        &format!("SELECT {ALARM_COLS} FROM alarms WHERE id = ?1"),
        [id],
        alarm_from_row,
    ))?
    .ok_or_else(|| EventLogError::NotFound(format!("no alarm {id}")))
}

/// What the alarm engine needs from persistence. [`EventLog`] implements it on SQLite;
/// every method records the matching event and publishes the change to the live hub.
pub trait AlarmStore: Send + Sync {
    /// Raises an alarm for (device, rule), or returns the open one unchanged.
    fn raise_alarm(
        &self,
        device: &str,
        rule: &str,
        severity: &str,
        message: &str,
        detail: serde_json::Value,
    ) -> Result<AlarmRecord, EventLogError>;
    /// Changes the severity of an open alarm.
    fn escalate_alarm(&self, id: i64, severity: &str) -> Result<AlarmRecord, EventLogError>;
    /// The condition went away.
    fn clear_alarm(&self, id: i64) -> Result<AlarmRecord, EventLogError>;
    /// Every open alarm (to rebuild the engine's state at start-up).
    fn open_alarms(&self) -> Result<Vec<AlarmRecord>, EventLogError>;
}

impl EventLog {
    fn system_alarm_change(
        &self,
        id_or_key: impl FnOnce(
            &Transaction<'_>,
            Timestamp,
        ) -> Result<Option<(i64, &'static str, EventKind)>, EventLogError>,
    ) -> Result<AlarmRecord, EventLogError> {
        let (alarm, change) = {
            let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            let tx = conn.transaction()?;
            let now = now_ns();
            let Some((id, change, kind)) = id_or_key(&tx, now)? else {
                return Err(EventLogError::Conflict("nothing changed".into()));
            };
            let alarm = get_alarm(&tx, id)?;
            let detail = serde_json::json!({
                "alarm_id": alarm.id, "rule": alarm.rule, "severity": alarm.severity,
                "message": alarm.message,
            });
            self.insert_event(
                &tx,
                &Event {
                    ts: now,
                    kind,
                    device: Some(alarm.device.clone()),
                    actor: SYSTEM.into(),
                    detail,
                },
            )?;
            tx.commit()?;
            (alarm, change)
        };
        self.hub.publish(LiveEvent::Alarm {
            change: change.into(),
            alarm: Box::new(alarm.clone()),
        });
        Ok(alarm)
    }

    /// One alarm.
    pub fn alarm(&self, id: i64) -> Result<AlarmRecord, EventLogError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        get_alarm(&conn, id)
    }

    /// Open alarms (`active_only`) or all alarms raised in `[since, until)`, newest first.
    pub fn list_alarms(
        &self,
        active_only: bool,
        device: Option<&str>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<AlarmRecord>, EventLogError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare(&format!(
            "SELECT {ALARM_COLS} FROM alarms
             WHERE (?1 = 0 OR cleared_at IS NULL OR acked_at IS NULL)
               AND (?2 IS NULL OR device = ?2)
               AND (?3 IS NULL OR raised_at >= ?3)
               AND (?4 IS NULL OR raised_at < ?4)
             ORDER BY id DESC LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![
                i64::from(active_only),
                device,
                since,
                until,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            alarm_from_row,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Acknowledges an alarm (audited as `alarm.ack`). Returns once the acknowledgement is
    /// on disk. Acknowledging an acknowledged alarm is a conflict.
    pub fn ack_alarm(
        &self,
        who: &AuditContext,
        id: i64,
        comment: &str,
    ) -> Result<AlarmRecord, EventLogError> {
        self.change(who, "alarm.ack", &format!("alarm/{id}"), |tx, now| {
            let before = get_alarm(tx, id)?;
            if before.acked_at.is_some() {
                return Err(EventLogError::Conflict(format!(
                    "alarm {id} is already acknowledged"
                )));
            }
            tx.execute(
                "UPDATE alarms SET acked_by = ?1, acked_at = ?2, ack_comment = ?3, updated_at = ?2
                 WHERE id = ?4",
                params![who.actor, now, comment, id],
            )?;
            let after = get_alarm(tx, id)?;
            Ok(Changed {
                events: vec![Event {
                    ts: now,
                    kind: EventKind::AlarmAcknowledged,
                    device: Some(after.device.clone()),
                    actor: who.actor.clone(),
                    detail: serde_json::json!({ "alarm_id": id, "rule": after.rule, "comment": comment }),
                }],
                live: vec![LiveEvent::Alarm {
                    change: "acknowledged".into(),
                    alarm: Box::new(after.clone()),
                }],
                before: Some(serde_json::to_value(&before)?),
                after: Some(serde_json::to_value(&after)?),
                value: after,
            })
        })
    }

    /// Shelves an alarm until `until` (audited as `alarm.shelve`).
    pub fn shelve_alarm(
        &self,
        who: &AuditContext,
        id: i64,
        until: Timestamp,
        comment: &str,
    ) -> Result<AlarmRecord, EventLogError> {
        self.change(who, "alarm.shelve", &format!("alarm/{id}"), |tx, now| {
            if until <= now {
                return Err(EventLogError::Invalid(
                    "shelve expiry must be in the future".into(),
                ));
            }
            let before = get_alarm(tx, id)?;
            if before.state == "closed" {
                return Err(EventLogError::Conflict(format!("alarm {id} is closed")));
            }
            tx.execute(
                "UPDATE alarms SET shelved_until = ?1, shelved_by = ?2, shelve_comment = ?3,
                 updated_at = ?4 WHERE id = ?5",
                params![until, who.actor, comment, now, id],
            )?;
            let after = get_alarm(tx, id)?;
            Ok(Changed {
                events: vec![Event {
                    ts: now,
                    kind: EventKind::AlarmShelved,
                    device: Some(after.device.clone()),
                    actor: who.actor.clone(),
                    detail: serde_json::json!({
                        "alarm_id": id, "rule": after.rule, "until": until, "comment": comment
                    }),
                }],
                live: vec![LiveEvent::Alarm {
                    change: "shelved".into(),
                    alarm: Box::new(after.clone()),
                }],
                before: Some(serde_json::to_value(&before)?),
                after: Some(serde_json::to_value(&after)?),
                value: after,
            })
        })
    }
}

impl AlarmStore for EventLog {
    fn raise_alarm(
        &self,
        device: &str,
        rule: &str,
        severity: &str,
        message: &str,
        detail: serde_json::Value,
    ) -> Result<AlarmRecord, EventLogError> {
        let existing = {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            super::optional(conn.query_row(
                &format!(
                    "SELECT {ALARM_COLS} FROM alarms WHERE device = ?1 AND rule = ?2
                     AND (cleared_at IS NULL OR acked_at IS NULL)"
                ),
                params![device, rule],
                alarm_from_row,
            ))?
        };
        if let Some(a) = existing {
            return Ok(a);
        }
        self.system_alarm_change(|tx, now| {
            tx.execute(
                "INSERT INTO alarms (device, rule, severity, message, raised_at, updated_at, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
                params![device, rule, severity, message, now, detail.to_string()],
            )?;
            Ok(Some((
                tx.last_insert_rowid(),
                "raised",
                EventKind::AlarmRaised,
            )))
        })
    }

    fn escalate_alarm(&self, id: i64, severity: &str) -> Result<AlarmRecord, EventLogError> {
        self.system_alarm_change(|tx, now| {
            let n = tx.execute(
                "UPDATE alarms SET severity = ?1, updated_at = ?2 WHERE id = ?3 AND cleared_at IS NULL",
                params![severity, now, id],
            )?;
            Ok((n == 1).then_some((id, "escalated", EventKind::AlarmEscalated)))
        })
    }

    fn clear_alarm(&self, id: i64) -> Result<AlarmRecord, EventLogError> {
        self.system_alarm_change(|tx, now| {
            let n = tx.execute(
                "UPDATE alarms SET cleared_at = ?1, updated_at = ?1 WHERE id = ?2 AND cleared_at IS NULL",
                params![now, id],
            )?;
            Ok((n == 1).then_some((id, "cleared", EventKind::AlarmCleared)))
        })
    }

    fn open_alarms(&self) -> Result<Vec<AlarmRecord>, EventLogError> {
        self.list_alarms(true, None, None, None, usize::MAX >> 1)
    }
}

// ------------------------------------------------------------------ maintenance

/// What kind of maintenance was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceKind {
    /// Visual or thermographic inspection.
    Inspection,
    /// Repair.
    Repair,
    /// Replacement of the unit or a component.
    Replacement,
    /// Transformer oil sample (DGA).
    OilSample,
    /// Electrical test.
    Test,
}

impl MaintenanceKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceKind::Inspection => "inspection",
            MaintenanceKind::Repair => "repair",
            MaintenanceKind::Replacement => "replacement",
            MaintenanceKind::OilSample => "oil_sample",
            MaintenanceKind::Test => "test",
        }
    }
}

/// A maintenance record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MaintenanceRecord {
    /// Record id.
    pub id: i64,
    /// Device.
    pub device: String,
    /// Kind (`inspection`, `repair`, `replacement`, `oil_sample`, `test`).
    pub kind: String,
    /// `open` or `closed`.
    pub status: String,
    /// Crew that did the work.
    pub crew: String,
    /// Findings.
    pub findings: String,
    /// Parts used.
    pub parts: Vec<String>,
    /// Free-text notes.
    pub notes: String,
    /// Work order it belongs to.
    pub work_order_id: Option<i64>,
    /// When the work was done (ns).
    pub performed_at: Timestamp,
    /// Who created the record.
    pub created_by: String,
    /// Created (ns).
    pub created_at: Timestamp,
    /// Last update (ns).
    pub updated_at: Timestamp,
    /// Closed (ns).
    pub closed_at: Option<Timestamp>,
}

/// Fields of a new maintenance record.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewMaintenance {
    /// Device id.
    pub device: String,
    /// Kind.
    pub kind: MaintenanceKind,
    /// Crew.
    #[serde(default)]
    pub crew: String,
    /// Findings.
    #[serde(default)]
    pub findings: String,
    /// Parts used.
    #[serde(default)]
    pub parts: Vec<String>,
    /// Notes.
    #[serde(default)]
    pub notes: String,
    /// Work order.
    #[serde(default)]
    pub work_order_id: Option<i64>,
    /// When the work was done (ns; default now).
    #[serde(default)]
    pub performed_at: Option<Timestamp>,
}

/// Changes to a maintenance record; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceUpdate {
    /// Crew.
    pub crew: Option<String>,
    /// Findings.
    pub findings: Option<String>,
    /// Parts used (replaces the list).
    pub parts: Option<Vec<String>>,
    /// Notes.
    pub notes: Option<String>,
}

const MAINT_COLS: &str = "id, device, kind, status, crew, findings, parts, notes, work_order_id, \
    performed_at, created_by, created_at, updated_at, closed_at";

fn maint_from_row(r: &Row<'_>) -> rusqlite::Result<MaintenanceRecord> {
    let parts: String = r.get(6)?;
    Ok(MaintenanceRecord {
        id: r.get(0)?,
        device: r.get(1)?,
        kind: r.get(2)?,
        status: r.get(3)?,
        crew: r.get(4)?,
        findings: r.get(5)?,
        parts: serde_json::from_str(&parts).unwrap_or_default(),
        notes: r.get(7)?,
        work_order_id: r.get(8)?,
        performed_at: r.get(9)?,
        created_by: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
        closed_at: r.get(13)?,
    })
}

fn get_maint(conn: &Connection, id: i64) -> Result<MaintenanceRecord, EventLogError> {
    super::optional(conn.query_row(
        &format!("SELECT {MAINT_COLS} FROM maintenance WHERE id = ?1"),
        [id],
        maint_from_row,
    ))?
    .ok_or_else(|| EventLogError::NotFound(format!("no maintenance record {id}")))
}

fn maint_event(who: &AuditContext, now: Timestamp, action: &str, m: &MaintenanceRecord) -> Event {
    Event {
        ts: now,
        kind: EventKind::Maintenance,
        device: Some(m.device.clone()),
        actor: who.actor.clone(),
        detail: serde_json::json!({
            "action": action, "record_id": m.id, "kind": m.kind, "crew": m.crew,
            "findings": m.findings, "parts": m.parts, "notes": m.notes, "status": m.status,
        }),
    }
}

impl EventLog {
    /// Creates a maintenance record (audited as `maintenance.create`).
    pub fn add_maintenance(
        &self,
        who: &AuditContext,
        new: &NewMaintenance,
    ) -> Result<MaintenanceRecord, EventLogError> {
        self.change(who, "maintenance.create", "maintenance", |tx, now| {
            tx.execute(
                "INSERT INTO maintenance (device, kind, status, crew, findings, parts, notes,
                 work_order_id, performed_at, created_by, created_at, updated_at)
                 VALUES (?1, ?2, 'open', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
                params![
                    new.device,
                    new.kind.as_str(),
                    new.crew,
                    new.findings,
                    serde_json::to_string(&new.parts)?,
                    new.notes,
                    new.work_order_id,
                    new.performed_at.unwrap_or(now),
                    who.actor,
                    now
                ],
            )
            .map_err(|e| fk_error(e, "work_order_id: no such work order"))?;
            let after = get_maint(tx, tx.last_insert_rowid())?;
            Ok(Changed {
                events: vec![maint_event(who, now, "created", &after)],
                live: vec![],
                before: None,
                after: Some(serde_json::to_value(&after)?),
                value: after,
            })
        })
    }

    /// Updates (or with `close`, closes) a maintenance record. `only_creator`: crew may
    /// change only records they created.
    pub fn update_maintenance(
        &self,
        who: &AuditContext,
        id: i64,
        update: &MaintenanceUpdate,
        close: bool,
        only_creator: bool,
    ) -> Result<MaintenanceRecord, EventLogError> {
        let action = if close {
            "maintenance.close"
        } else {
            "maintenance.update"
        };
        self.change(who, action, &format!("maintenance/{id}"), |tx, now| {
            let before = get_maint(tx, id)?;
            if only_creator && before.created_by != who.actor {
                return Err(EventLogError::Forbidden(format!(
                    "maintenance record {id} belongs to {}",
                    before.created_by
                )));
            }
            if before.status == "closed" {
                return Err(EventLogError::Conflict(format!("maintenance record {id} is closed")));
            }
            tx.execute(
                "UPDATE maintenance SET crew = COALESCE(?1, crew), findings = COALESCE(?2, findings),
                 parts = COALESCE(?3, parts), notes = COALESCE(?4, notes), updated_at = ?5,
                 status = CASE WHEN ?6 THEN 'closed' ELSE status END,
                 closed_at = CASE WHEN ?6 THEN ?5 ELSE closed_at END
                 WHERE id = ?7",
                params![
                    update.crew,
                    update.findings,
                    update.parts.as_ref().map(serde_json::to_string).transpose()?,
                    update.notes,
                    now,
                    close,
                    id
                ],
            )?;
            let after = get_maint(tx, id)?;
            Ok(Changed {
                events: vec![maint_event(who, now, if close { "closed" } else { "updated" }, &after)],
                live: vec![],
                before: Some(serde_json::to_value(&before)?),
                after: Some(serde_json::to_value(&after)?),
                value: after,
            })
        })
    }

    /// Maintenance records, newest first; `cursor` continues after a record id.
    pub fn list_maintenance(
        &self,
        device: Option<&str>,
        cursor: Option<i64>,
        limit: usize,
    ) -> Result<Page<MaintenanceRecord>, EventLogError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare(&format!(
            "SELECT {MAINT_COLS} FROM maintenance WHERE (?1 IS NULL OR device = ?1)
             AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3"
        ))?;
        let lim = i64::try_from(limit).unwrap_or(1000);
        let rows = stmt.query_map(params![device, cursor, lim + 1], maint_from_row)?;
        let mut items = rows.collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|m| m.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// One maintenance record.
    pub fn maintenance(&self, id: i64) -> Result<MaintenanceRecord, EventLogError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        get_maint(&conn, id)
    }
}

fn fk_error(e: rusqlite::Error, msg: &str) -> EventLogError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            EventLogError::Invalid(msg.to_string())
        }
        _ => EventLogError::Sqlite(e),
    }
}

// ------------------------------------------------------------------ work orders

/// A work order: open → assigned → in_progress → closed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkOrder {
    /// Work order id.
    pub id: i64,
    /// Device.
    pub device: String,
    /// Alarm that caused it.
    pub alarm_id: Option<i64>,
    /// Short title.
    pub title: String,
    /// Description.
    pub description: String,
    /// `open`, `assigned`, `in_progress`, `closed`.
    pub state: String,
    /// Assigned crew user.
    pub assignee: Option<String>,
    /// How it was resolved.
    pub resolution: String,
    /// Who created it.
    pub created_by: String,
    /// Created (ns).
    pub created_at: Timestamp,
    /// Last change (ns).
    pub updated_at: Timestamp,
    /// Closed (ns).
    pub closed_at: Option<Timestamp>,
    /// Planned work: the scheduled outage window, ns.
    pub scheduled_start: Option<Timestamp>,
    /// End of the scheduled window, ns.
    pub scheduled_end: Option<Timestamp>,
    /// When the customer notice for the planned outage was published, ns.
    pub notice_sent_at: Option<Timestamp>,
}

/// Fields of a new work order.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkOrder {
    /// Device id.
    pub device: String,
    /// Title.
    pub title: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Alarm it is about.
    #[serde(default)]
    pub alarm_id: Option<i64>,
    /// Assign at once to this user.
    #[serde(default)]
    pub assignee: Option<String>,
    /// Planned work: start of the outage window (RFC 3339); customers below `device` get a
    /// notice ahead of it (`[locate] planned_notice_ahead`).
    #[serde(default)]
    pub scheduled_start: Option<String>,
    /// End of the window (RFC 3339), required with `scheduled_start`.
    #[serde(default)]
    pub scheduled_end: Option<String>,
}

impl NewWorkOrder {
    /// The scheduled window in ns, validated: both or neither, end after start.
    fn window(&self) -> Result<(Option<Timestamp>, Option<Timestamp>), EventLogError> {
        let parse = |name: &str, s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| {
                    EventLogError::Invalid(format!("{name}: expected an RFC 3339 time, got {s:?}"))
                })
        };
        match (&self.scheduled_start, &self.scheduled_end) {
            (None, None) => Ok((None, None)),
            (Some(a), Some(b)) => {
                let (a, b) = (parse("scheduled_start", a)?, parse("scheduled_end", b)?);
                if b <= a {
                    return Err(EventLogError::Invalid(
                        "scheduled_end must be after scheduled_start".into(),
                    ));
                }
                Ok((Some(a), Some(b)))
            }
            _ => Err(EventLogError::Invalid(
                "scheduled_start and scheduled_end go together".into(),
            )),
        }
    }
}

/// A change to a work order; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrderUpdate {
    /// New state: `assigned`, `in_progress` (or `closed`, same as the close route).
    pub state: Option<String>,
    /// Assignee (setting it on an open order makes it `assigned`).
    pub assignee: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Resolution text.
    pub resolution: Option<String>,
}

const WO_COLS: &str = "id, device, alarm_id, title, description, state, assignee, resolution, \
    created_by, created_at, updated_at, closed_at, scheduled_start, scheduled_end, notice_sent_at";

fn wo_from_row(r: &Row<'_>) -> rusqlite::Result<WorkOrder> {
    Ok(WorkOrder {
        id: r.get(0)?,
        device: r.get(1)?,
        alarm_id: r.get(2)?,
        title: r.get(3)?,
        description: r.get(4)?,
        state: r.get(5)?,
        assignee: r.get(6)?,
        resolution: r.get(7)?,
        created_by: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        closed_at: r.get(11)?,
        scheduled_start: r.get(12)?,
        scheduled_end: r.get(13)?,
        notice_sent_at: r.get(14)?,
    })
}

fn get_wo(conn: &Connection, id: i64) -> Result<WorkOrder, EventLogError> {
    super::optional(conn.query_row(
        &format!("SELECT {WO_COLS} FROM work_orders WHERE id = ?1"),
        [id],
        wo_from_row,
    ))?
    .ok_or_else(|| EventLogError::NotFound(format!("no work order {id}")))
}

/// Whether a work order may go from `from` to `to`.
pub fn work_order_transition_ok(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("open", "assigned")
            | ("assigned", "assigned")
            | ("assigned", "in_progress")
            | ("open" | "assigned" | "in_progress", "closed")
    )
}

fn wo_event(who: &AuditContext, now: Timestamp, action: &str, w: &WorkOrder) -> Event {
    Event {
        ts: now,
        kind: EventKind::WorkOrder,
        device: Some(w.device.clone()),
        actor: who.actor.clone(),
        detail: serde_json::json!({
            "action": action, "work_order_id": w.id, "state": w.state, "assignee": w.assignee,
            "alarm_id": w.alarm_id, "title": w.title,
        }),
    }
}

impl EventLog {
    /// Creates a work order (audited as `work_order.create`).
    pub fn add_work_order(
        &self,
        who: &AuditContext,
        new: &NewWorkOrder,
    ) -> Result<WorkOrder, EventLogError> {
        let (start, end) = new.window()?;
        self.change(who, "work_order.create", "work_order", |tx, now| {
            let state = if new.assignee.is_some() {
                "assigned"
            } else {
                "open"
            };
            tx.execute(
                "INSERT INTO work_orders (device, alarm_id, title, description, state, assignee,
                 created_by, created_at, updated_at, scheduled_start, scheduled_end)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10)",
                params![
                    new.device,
                    new.alarm_id,
                    new.title,
                    new.description,
                    state,
                    new.assignee,
                    who.actor,
                    now,
                    start,
                    end
                ],
            )
            .map_err(|e| fk_error(e, "alarm_id: no such alarm"))?;
            let after = get_wo(tx, tx.last_insert_rowid())?;
            Ok(Changed {
                events: vec![wo_event(who, now, "created", &after)],
                live: vec![],
                before: None,
                after: Some(serde_json::to_value(&after)?),
                value: after,
            })
        })
    }

    /// Open work orders with a scheduled window whose customer notice is due: the window
    /// starts within `ahead` of `now` (or has started) and has not ended.
    pub fn planned_notices_due(
        &self,
        now: Timestamp,
        ahead: i64,
    ) -> Result<Vec<WorkOrder>, EventLogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {WO_COLS} FROM work_orders WHERE scheduled_start IS NOT NULL
             AND notice_sent_at IS NULL AND state != 'closed'
             AND scheduled_start <= ?1 AND scheduled_end > ?2 ORDER BY scheduled_start, id"
        ))?;
        let rows = stmt.query_map(params![now.saturating_add(ahead), now], wo_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Open work orders whose scheduled window contains `now`.
    pub fn planned_windows(&self, now: Timestamp) -> Result<Vec<WorkOrder>, EventLogError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&format!(
            "SELECT {WO_COLS} FROM work_orders WHERE scheduled_start <= ?1
             AND scheduled_end > ?1 AND state != 'closed' ORDER BY id"
        ))?;
        let rows = stmt.query_map(params![now], wo_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Records that the planned-outage notice of work order `id` went out.
    pub fn mark_notice_sent(&self, id: i64, now: Timestamp) -> Result<(), EventLogError> {
        self.lock().execute(
            "UPDATE work_orders SET notice_sent_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// Updates or closes a work order. `only_assignee`: crew may change only orders assigned
    /// to them, and may not reassign.
    pub fn update_work_order(
        &self,
        who: &AuditContext,
        id: i64,
        update: &WorkOrderUpdate,
        close: bool,
        only_assignee: bool,
    ) -> Result<WorkOrder, EventLogError> {
        let action = if close {
            "work_order.close"
        } else {
            "work_order.update"
        };
        self.change(who, action, &format!("work_order/{id}"), |tx, now| {
            let before = get_wo(tx, id)?;
            if only_assignee {
                if before.assignee.as_deref() != Some(who.actor.as_str()) {
                    return Err(EventLogError::Forbidden(format!(
                        "work order {id} is not assigned to {}",
                        who.actor
                    )));
                }
                if update.assignee.is_some() {
                    return Err(EventLogError::Forbidden(
                        "crew cannot reassign work orders".into(),
                    ));
                }
            }
            let mut state = before.state.clone();
            if update.assignee.is_some() && state == "open" {
                state = "assigned".into();
            }
            let target = if close {
                Some("closed")
            } else {
                update.state.as_deref()
            };
            if let Some(to) = target {
                if !work_order_transition_ok(&state, to) {
                    return Err(EventLogError::Conflict(format!(
                        "work order {id} cannot go from {state} to {to}"
                    )));
                }
                if to == "assigned" && update.assignee.is_none() && before.assignee.is_none() {
                    return Err(EventLogError::Invalid("assigned needs an assignee".into()));
                }
                state = to.to_string();
            }
            if before.state == "closed" {
                return Err(EventLogError::Conflict(format!(
                    "work order {id} is closed"
                )));
            }
            tx.execute(
                "UPDATE work_orders SET state = ?1, assignee = COALESCE(?2, assignee),
                 description = COALESCE(?3, description), resolution = COALESCE(?4, resolution),
                 updated_at = ?5, closed_at = CASE WHEN ?1 = 'closed' THEN ?5 ELSE closed_at END
                 WHERE id = ?6",
                params![
                    state,
                    update.assignee,
                    update.description,
                    update.resolution,
                    now,
                    id
                ],
            )?;
            let after = get_wo(tx, id)?;
            Ok(Changed {
                events: vec![wo_event(
                    who,
                    now,
                    if close { "closed" } else { "updated" },
                    &after,
                )],
                live: vec![],
                before: Some(serde_json::to_value(&before)?),
                after: Some(serde_json::to_value(&after)?),
                value: after,
            })
        })
    }

    /// Work orders, newest first; `open_only` leaves closed ones out.
    pub fn list_work_orders(
        &self,
        device: Option<&str>,
        assignee: Option<&str>,
        open_only: bool,
        limit: usize,
    ) -> Result<Vec<WorkOrder>, EventLogError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare(&format!(
            "SELECT {WO_COLS} FROM work_orders WHERE (?1 IS NULL OR device = ?1)
             AND (?2 IS NULL OR assignee = ?2) AND (?3 = 0 OR state != 'closed')
             ORDER BY id DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![
                device,
                assignee,
                i64::from(open_only),
                i64::try_from(limit).unwrap_or(1000)
            ],
            wo_from_row,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// One work order.
    pub fn work_order(&self, id: i64) -> Result<WorkOrder, EventLogError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        get_wo(&conn, id)
    }
}
