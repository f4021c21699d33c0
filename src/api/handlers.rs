//! Handlers of the event-log side of the API: readiness, alarms, events, maintenance, work
//! orders, users, the audit trail and the live stream. Every store call runs on the
//! blocking pool ([`blocking`]); every bad input becomes a 400 with a message.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::auth::{Principal, Role};
use super::error::ApiError;
use crate::eventlog::{
    EventKind, EventLog, EventLogError, EventQuery, MAX_PAGE, MaintenanceUpdate, NewMaintenance,
    NewWorkOrder, WorkOrderUpdate,
};
use crate::model::{Timestamp, now_ns};
use crate::sinks::Buffer;
use crate::status::DeviceStatus;

/// Longest accepted filter string (device, site, feeder, ...).
const MAX_FILTER_LEN: usize = 256;
/// Longest accepted comment or note.
const MAX_TEXT_LEN: usize = 10_000;
/// Longest shelving.
const MAX_SHELVE: Duration = Duration::from_secs(30 * 86_400);
/// Most rows one CSV export returns.
const MAX_EXPORT: usize = 100_000;

/// Runs a store call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    log: &Arc<EventLog>,
    f: impl FnOnce(&EventLog) -> Result<T, EventLogError> + Send + 'static,
) -> Result<T, ApiError> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || f(&log))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("body: {}", e.body_text())))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("path: {}", e.body_text())))
}

fn filter(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.len() > MAX_FILTER_LEN => Err(ApiError::BadRequest(format!(
            "{name}: longer than {MAX_FILTER_LEN} characters"
        ))),
        Some(s) if s.is_empty() => Ok(None),
        other => Ok(other),
    }
}

fn text(name: &str, s: &str) -> Result<(), ApiError> {
    if s.len() > MAX_TEXT_LEN {
        Err(ApiError::BadRequest(format!(
            "{name}: longer than {MAX_TEXT_LEN} characters"
        )))
    } else {
        Ok(())
    }
}

/// Parses an RFC 3339 time or a duration ago (`"7d"`, `"90m"`).
pub fn parse_time(name: &str, s: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t
            .timestamp_nanos_opt()
            .ok_or_else(|| ApiError::BadRequest(format!("{name}: {s:?} is out of range")));
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(now.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))),
        Err(_) => Err(ApiError::BadRequest(format!(
            "{name}: expected an RFC 3339 time or a duration like \"7d\", got {s:?}"
        ))),
    }
}

fn limit(v: Option<usize>) -> Result<usize, ApiError> {
    match v.unwrap_or(100) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(ApiError::BadRequest(format!(
            "limit: {n} is not within 1 to {MAX_PAGE}"
        ))),
    }
}

fn cursor(v: Option<String>) -> Result<Option<i64>, ApiError> {
    v.filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::BadRequest(format!("cursor: invalid {s:?}")))
        })
        .transpose()
}

// ------------------------------------------------------------------ readiness

/// Readiness for supervisors: event store reachable, sources connected, spool depth.
/// 503 while not ready. (Kept in its own function: the spool may add its own fields.)
pub async fn readyz(State(s): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    let store = blocking(&s.eventlog, |l| l.ping()).await;
    if let Err(e) = &store {
        reasons.push(format!("event store failing: {e}"));
    }
    if s.eventlog.audit_degraded() {
        reasons.push("audit trail cannot be written".to_string());
    }
    let counts = s.status.counts();
    let n = |st: DeviceStatus| counts.get(&st).copied().unwrap_or(0);
    let (online, degraded, offline, unknown) = (
        n(DeviceStatus::Online),
        n(DeviceStatus::Degraded),
        n(DeviceStatus::Offline),
        n(DeviceStatus::Unknown),
    );
    if !s.devices.is_empty() && offline == s.devices.len() {
        reasons.push("no device answers (all offline)".to_string());
    }
    let sources = s.sources.snapshot();
    for (name, src) in &sources {
        if !src.connected {
            reasons.push(format!("source {name} disconnected"));
        }
    }
    let mut telemetry = serde_json::Value::Null;
    let mut spool = serde_json::Value::Null;
    if let Some(h) = &s.sink {
        if !h.store_ok() {
            reasons.push(format!(
                "store failing: {}",
                h.last_error().unwrap_or_default()
            ));
        }
        telemetry = serde_json::json!({
            "ok": h.store_ok(),
            "consecutive_failures": h.consecutive_failures(),
            "last_error": h.last_error(),
        });
        spool = match &h.buffer {
            Buffer::Spool(sp) => {
                if sp.is_full() {
                    reasons.push("spool full".to_string());
                }
                serde_json::json!({
                    "enabled": true,
                    "pending_points": sp.pending_points(),
                    "pending_batches": sp.pending_batches(),
                    "bytes": sp.disk_bytes(),
                    "max_bytes": sp.max_bytes(),
                    "full": sp.is_full(),
                })
            }
            Buffer::Memory(_) => serde_json::json!({
                "enabled": false,
                "pending_points": h.buffer.pending_points(),
            }),
        };
    }
    let ready = reasons.is_empty();
    let body = serde_json::json!({
        "ready": ready,
        "reasons": reasons,
        "devices": {"online": online, "degraded": degraded, "offline": offline, "unknown": unknown},
        "sources": sources,
        "event_store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
        "store": telemetry,
        "spool": spool,
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// Who the caller is: name and role (the web page shows only the buttons the role may use).
pub async fn whoami(Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "name": p.name, "role": p.role.as_str() }))
}

// ------------------------------------------------------------------ alarms

/// Query of `GET /api/v1/alarms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmParams {
    active: Option<bool>,
    device: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

/// Open alarms or alarm history.
pub async fn list_alarms(
    State(s): State<AppState>,
    q: Result<Query<AlarmParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let now = now_ns();
    let since = q
        .since
        .as_deref()
        .map(|t| parse_time("since", t, now))
        .transpose()?;
    let until = q
        .until
        .as_deref()
        .map(|t| parse_time("until", t, now))
        .transpose()?;
    let device = filter("device", q.device)?;
    let limit = limit(q.limit)?;
    let active = q.active.unwrap_or(true);
    let alarms = blocking(&s.eventlog, move |l| {
        l.list_alarms(active, device.as_deref(), since, until, limit)
    })
    .await?;
    Ok(Json(alarms).into_response())
}

/// One alarm.
pub async fn get_alarm(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    Ok(Json(blocking(&s.eventlog, move |l| l.alarm(id)).await?).into_response())
}

/// Body of an acknowledgement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    #[serde(default)]
    comment: String,
}

/// Acknowledges an alarm; the answer comes after the acknowledgement is on disk.
pub async fn ack_alarm(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<AckRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    let b = body(b)?;
    text("comment", &b.comment)?;
    let who = p.audit();
    let alarm = blocking(&s.eventlog, move |l| l.ack_alarm(&who, id, &b.comment)).await?;
    // The acknowledgement is on disk with its audit record; now the live engine follows.
    if let Some(engine) = &s.alarms {
        engine.ack_by_key(&alarm.device, &alarm.rule, Some(p.name.clone()), now_ns());
    }
    Ok(Json(alarm).into_response())
}

/// Body of a shelving: `until` (RFC 3339) or `for` (duration), and a comment.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShelveRequest {
    #[serde(default)]
    comment: String,
    until: Option<String>,
    #[serde(rename = "for")]
    duration: Option<String>,
}

/// Shelves an alarm until a time.
pub async fn shelve_alarm(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<ShelveRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    let b = body(b)?;
    text("comment", &b.comment)?;
    let now = now_ns();
    let until = match (&b.until, &b.duration) {
        (Some(t), None) => chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| ApiError::BadRequest(format!("until: not an RFC 3339 time: {t:?}")))?,
        (None, Some(d)) => {
            let d = humantime::parse_duration(d)
                .map_err(|e| ApiError::BadRequest(format!("for: {e}")))?;
            if d > MAX_SHELVE {
                return Err(ApiError::BadRequest("for: at most 30 days".into()));
            }
            now.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of until, for".into(),
            ));
        }
    };
    if until.saturating_sub(now) > i64::try_from(MAX_SHELVE.as_nanos()).unwrap_or(i64::MAX) {
        return Err(ApiError::BadRequest("until: at most 30 days ahead".into()));
    }
    let who = p.audit();
    let alarm = blocking(&s.eventlog, move |l| {
        l.shelve_alarm(&who, id, until, &b.comment)
    })
    .await?;
    if let Some(engine) = &s.alarms {
        let ns = until.saturating_sub(now_ns()).max(0);
        engine.shelve_by_key(
            &alarm.device,
            &alarm.rule,
            Duration::from_nanos(u64::try_from(ns).unwrap_or(0)),
            Some(p.name.clone()),
            now_ns(),
        );
    }
    Ok(Json(alarm).into_response())
}

// ------------------------------------------------------------------ events

/// Query of `GET /api/v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    device: Option<String>,
    site: Option<String>,
    feeder: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
    format: Option<String>,
}

/// Events, filtered, newest first; JSON pages or a CSV export.
pub async fn list_events(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<EventParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => {
            return Err(ApiError::BadRequest(format!(
                "format: expected json or csv, got {f:?}"
            )));
        }
    };
    if csv {
        p.require(Role::Engineer)?;
    }
    let now = now_ns();
    let mut kinds = Vec::new();
    for k in q
        .kind
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|k| !k.is_empty())
    {
        kinds.push(
            EventKind::parse(k.trim())
                .ok_or_else(|| ApiError::BadRequest(format!("kind: unknown event kind {k:?}")))?,
        );
    }
    let mut eq = EventQuery {
        device: filter("device", q.device)?,
        site: filter("site", q.site)?,
        feeder: filter("feeder", q.feeder)?,
        kinds,
        since: q
            .since
            .as_deref()
            .map(|t| parse_time("since", t, now))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|t| parse_time("until", t, now))
            .transpose()?,
        cursor: cursor(q.cursor)?,
        limit: limit(q.limit)?,
    };
    if !csv {
        let page = blocking(&s.eventlog, move |l| l.query_events(&eq)).await?;
        return Ok(Json(page).into_response());
    }
    // The export walks every page of the filter (up to MAX_EXPORT rows).
    let explicit_limit = q.limit.is_some();
    let rows = blocking(&s.eventlog, move |l| {
        let mut out = Vec::new();
        let wanted = if explicit_limit { eq.limit } else { MAX_EXPORT };
        eq.limit = MAX_PAGE.min(wanted);
        loop {
            let page = l.query_events(&eq)?;
            out.extend(page.items);
            match page.next_cursor.and_then(|c| c.parse().ok()) {
                Some(c) if out.len() < wanted => eq.cursor = Some(c),
                _ => break,
            }
        }
        out.truncate(wanted);
        Ok(out)
    })
    .await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let write = |w: &mut csv::Writer<Vec<u8>>| -> Result<(), csv::Error> {
        w.write_record([
            "id", "time", "ts", "kind", "device", "site", "feeder", "actor", "detail",
        ])?;
        for e in &rows {
            w.write_record([
                e.id.to_string(),
                e.time.clone(),
                e.ts.to_string(),
                e.kind.clone(),
                e.device.clone().unwrap_or_default(),
                e.site.clone().unwrap_or_default(),
                e.feeder.clone().unwrap_or_default(),
                e.actor.clone(),
                e.detail.to_string(),
            ])?;
        }
        w.flush()?;
        Ok(())
    };
    write(&mut w).map_err(|e| ApiError::Internal(e.to_string()))?;
    let bytes = w
        .into_inner()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"events.csv\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

// ------------------------------------------------------------------ maintenance

/// Query of `GET /api/v1/maintenance`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceParams {
    device: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// Maintenance records.
pub async fn list_maintenance(
    State(s): State<AppState>,
    q: Result<Query<MaintenanceParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let device = filter("device", q.device)?;
    let cursor = cursor(q.cursor)?;
    let limit = limit(q.limit)?;
    let page = blocking(&s.eventlog, move |l| {
        l.list_maintenance(device.as_deref(), cursor, limit)
    })
    .await?;
    Ok(Json(page).into_response())
}

/// One maintenance record.
pub async fn get_maintenance(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    Ok(Json(blocking(&s.eventlog, move |l| l.maintenance(id)).await?).into_response())
}

fn known_device(s: &AppState, id: &str) -> Result<(), ApiError> {
    if s.devices.get(id).is_some() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "device: unknown device {id:?}"
        )))
    }
}

/// Creates a maintenance record.
pub async fn add_maintenance(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    b: Result<Json<NewMaintenance>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    known_device(&s, &b.device)?;
    for (n, v) in [
        ("crew", &b.crew),
        ("findings", &b.findings),
        ("notes", &b.notes),
    ] {
        text(n, v)?;
    }
    let who = p.audit();
    let rec = blocking(&s.eventlog, move |l| l.add_maintenance(&who, &b)).await?;
    Ok((StatusCode::CREATED, Json(rec)).into_response())
}

async fn change_maintenance(
    s: AppState,
    p: Principal,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<MaintenanceUpdate>, JsonRejection>,
    close: bool,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    let b = body(b)?;
    for v in [&b.crew, &b.findings, &b.notes].into_iter().flatten() {
        text("text", v)?;
    }
    let only_creator = p.role < Role::Engineer;
    let who = p.audit();
    let rec = blocking(&s.eventlog, move |l| {
        l.update_maintenance(&who, id, &b, close, only_creator)
    })
    .await?;
    Ok(Json(rec).into_response())
}

/// Updates a maintenance record.
pub async fn update_maintenance(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<MaintenanceUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    change_maintenance(s, p, id, b, false).await
}

/// Closes a maintenance record.
pub async fn close_maintenance(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<MaintenanceUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    change_maintenance(s, p, id, b, true).await
}

// ------------------------------------------------------------------ work orders

/// Query of `GET /api/v1/work-orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkOrderParams {
    device: Option<String>,
    assignee: Option<String>,
    open: Option<bool>,
    limit: Option<usize>,
}

/// Work orders.
pub async fn list_work_orders(
    State(s): State<AppState>,
    q: Result<Query<WorkOrderParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let device = filter("device", q.device)?;
    let assignee = filter("assignee", q.assignee)?;
    let limit = limit(q.limit)?;
    let open = q.open.unwrap_or(false);
    let list = blocking(&s.eventlog, move |l| {
        l.list_work_orders(device.as_deref(), assignee.as_deref(), open, limit)
    })
    .await?;
    Ok(Json(list).into_response())
}

/// One work order.
pub async fn get_work_order(
    State(s): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    Ok(Json(blocking(&s.eventlog, move |l| l.work_order(id)).await?).into_response())
}

/// Creates a work order.
pub async fn add_work_order(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    b: Result<Json<NewWorkOrder>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    known_device(&s, &b.device)?;
    text("title", &b.title)?;
    text("description", &b.description)?;
    let who = p.audit();
    let wo = blocking(&s.eventlog, move |l| l.add_work_order(&who, &b)).await?;
    Ok((StatusCode::CREATED, Json(wo)).into_response())
}

async fn change_work_order(
    s: AppState,
    p: Principal,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<WorkOrderUpdate>, JsonRejection>,
    close: bool,
) -> Result<Response, ApiError> {
    let id = path(id)?;
    let b = body(b)?;
    for v in [&b.description, &b.resolution].into_iter().flatten() {
        text("text", v)?;
    }
    if let Some(st) = &b.state
        && !matches!(st.as_str(), "assigned" | "in_progress" | "closed")
    {
        return Err(ApiError::BadRequest(format!(
            "state: expected assigned, in_progress or closed, got {st:?}"
        )));
    }
    let close = close || b.state.as_deref() == Some("closed");
    let only_assignee = p.role < Role::Engineer;
    let who = p.audit();
    let wo = blocking(&s.eventlog, move |l| {
        l.update_work_order(&who, id, &b, close, only_assignee)
    })
    .await?;
    Ok(Json(wo).into_response())
}

/// Assigns, starts or edits a work order.
pub async fn update_work_order(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<WorkOrderUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    change_work_order(s, p, id, b, false).await
}

/// Closes a work order.
pub async fn close_work_order(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<i64>, PathRejection>,
    b: Result<Json<WorkOrderUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    change_work_order(s, p, id, b, true).await
}

// ------------------------------------------------------------------ users and audit

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    role: Role,
}

/// Users (never their token hashes).
pub async fn list_users(State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(blocking(&s.eventlog, |l| l.users()).await?).into_response())
}

/// Creates a user; the answer holds the token, which is not stored anywhere.
pub async fn add_user(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    b: Result<Json<NewUser>, JsonRejection>,
) -> Result<Response, ApiError> {
    let b = body(b)?;
    let who = p.audit();
    let created = blocking(&s.eventlog, move |l| l.add_user(&who, &b.name, b.role)).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Disables a user.
pub async fn disable_user(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = path(name)?;
    let who = p.audit();
    let n = name.clone();
    let user = blocking(&s.eventlog, move |l| l.disable_user(&who, &n)).await?;
    s.auth.forget(&name);
    Ok(Json(user).into_response())
}

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    category: Option<String>,
    limit: Option<usize>,
}

/// Audit and security records (read-only: the API has no route that edits or deletes them).
pub async fn list_audit(
    State(s): State<AppState>,
    q: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let cat = match q.category.as_deref() {
        None | Some("") => None,
        Some(c @ ("change" | "security")) => Some(c.to_string()),
        Some(c) => {
            return Err(ApiError::BadRequest(format!(
                "category: expected change or security, got {c:?}"
            )));
        }
    };
    let limit = limit(q.limit)?;
    Ok(
        Json(blocking(&s.eventlog, move |l| l.audit_records(cat.as_deref(), limit)).await?)
            .into_response(),
    )
}

// ------------------------------------------------------------------ live stream

/// Query of `GET /api/v1/stream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    readings: Option<String>,
}

/// Server-Sent Events: every alarm and device status change, and the readings of the
/// devices named in `readings`. A subscriber that falls behind gets a `lagged` event with
/// the number of messages it lost.
pub async fn stream(
    State(s): State<AppState>,
    q: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let q = query(q)?;
    let chosen: HashSet<String> = q
        .readings
        .unwrap_or_default()
        .split(',')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    for d in &chosen {
        if s.devices.get(d).is_none() {
            return Err(ApiError::BadRequest(format!(
                "readings: unknown device {d:?}"
            )));
        }
    }
    let events = s.hub.subscribe();
    let readings = (!chosen.is_empty()).then(|| s.hub.subscribe_readings());
    let state = (events, readings, chosen);
    let stream = futures::stream::unfold(state, |(mut ev, mut rd, chosen)| async move {
        loop {
            let got = match &mut rd {
                Some(r) => tokio::select! {
                    x = ev.recv() => x,
                    x = r.recv() => x,
                },
                None => ev.recv().await,
            };
            let out = match got {
                Ok(e) => {
                    if matches!(*e, crate::hub::LiveEvent::Reading { .. })
                        && !chosen.contains(e.device())
                    {
                        continue;
                    }
                    SseEvent::default()
                        .event(e.name())
                        .json_data(&*e)
                        .unwrap_or_else(|_| SseEvent::default().event("error"))
                }
                Err(RecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
                Err(RecvError::Closed) => return None,
            };
            return Some((Ok(out), (ev, rd, chosen)));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

// ------------------------------------------------------------------ KPIs

/// Query of `GET /api/v1/kpi`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KpiParams {
    scope: Option<crate::kpi::Scope>,
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// A KPI period bound: a date (`2026-11-01`, midnight UTC), an RFC 3339 time or a
/// duration back from now.
fn parse_bound(name: &str, s: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
            .ok_or_else(|| ApiError::BadRequest(format!("{name}: {s:?} is out of range")));
    }
    parse_time(name, s, now)
}

/// KPIs of a device, transformer, feeder, site or the network over a period (default:
/// today so far).
pub async fn kpi(
    State(s): State<AppState>,
    q: Result<Query<KpiParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let Some(service) = s.kpi.clone() else {
        return Err(ApiError::NotFound(
            "KPIs are off ([kpi] enabled = false)".into(),
        ));
    };
    let now = now_ns();
    let day = 86_400 * 1_000_000_000;
    let from = match q.from.as_deref() {
        Some(t) => parse_bound("from", t, now)?,
        None => now.div_euclid(day) * day,
    };
    let to = match q.to.as_deref() {
        Some(t) => parse_bound("to", t, now)?,
        None => now,
    };
    if to <= from {
        return Err(ApiError::BadRequest("`to` must be after `from`".into()));
    }
    let scope = q.scope.unwrap_or(crate::kpi::Scope::Network);
    let id = q.id.unwrap_or_default();
    if scope != crate::kpi::Scope::Network && id.is_empty() {
        return Err(ApiError::BadRequest(format!("scope {scope:?} needs an id")));
    }
    let report = tokio::task::spawn_blocking(move || service.query(scope, &id, from, to, now))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            crate::kpi::KpiError::UnknownScope(..) => ApiError::NotFound(e.to_string()),
            crate::kpi::KpiError::Database(e) => ApiError::from(e),
        })?;
    Ok(Json(report).into_response())
}

// ------------------------------------------------------------------ outages

/// Located outages: active ones with their affected meters and customers (the children of
/// the located alarm), then recently restored ones — what a customer-service system reads.
pub async fn outages(State(s): State<AppState>) -> Result<Response, ApiError> {
    let Some(board) = s.outages.clone() else {
        return Err(ApiError::NotFound(
            "fault localisation is off ([alarms] or [locate] disabled)".into(),
        ));
    };
    let b = board.lock().unwrap_or_else(|e| e.into_inner());
    let (active, recent) = b.snapshot();
    let planned = b.planned();
    drop(b);
    Ok(
        Json(serde_json::json!({ "active": active, "planned": planned, "recent": recent }))
            .into_response(),
    )
}
