//! The HTTP API: health, devices with their status and latest values, metrics, alarms,
//! events, maintenance, work orders, users, the live stream, the OpenAPI document and the
//! control-room web page ([`web`], static files outside the route table: the page holds no
//! data, everything it shows comes through the authenticated API).
//!
//! Every route is one row of [`routes::table`]: method, path, least role, documentation and
//! handler. [`router`] builds the axum router from the table and the OpenAPI document is
//! generated from the same rows, so the two cannot drift. Authentication is [`auth`];
//! errors map to status codes in [`error::ApiError`].
//!
//! `/healthz` always answers 200 while the process runs (liveness) and reports each
//! connected source (`sources.mqtt: {connected, error, since}`); `/readyz` answers 503 while
//! a source is disconnected or the store is failing.

pub mod auth;
pub mod error;
pub mod handlers;
pub mod routes;
pub mod web;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;

use crate::history::History;
use crate::metrics::Registry;
use crate::model::{DeviceInfo, Timestamp};
use crate::registry::DeviceRegistry;
use crate::sinks::SinkHealth;
use crate::sources::SourceHealth;
use crate::status::{DeviceStatus, StatusBoard};

/// Everything the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Known devices: configured ones in config order, then MQTT devices as they appear.
    pub devices: Arc<DeviceRegistry>,
    /// Connection state of sources with a connection (MQTT).
    pub sources: Arc<SourceHealth>,
    /// Device status.
    pub status: Arc<StatusBoard>,
    /// Latest readings.
    pub history: Arc<History>,
    /// Daemon metrics.
    pub metrics: Arc<Registry>,
    /// Event log, alarms, maintenance, work orders, users, audit trail.
    pub eventlog: Arc<crate::eventlog::EventLog>,
    /// Authentication and lockout state.
    pub auth: Arc<auth::Auth>,
    /// Live events for `/api/v1/stream`.
    pub hub: crate::hub::Hub,
    /// The alarm engine, told about acknowledgements and shelving (None when alarms are off).
    pub alarms: Option<Arc<crate::alarms::service::AlarmService>>,
    /// The telemetry writer's health and queue, for `/readyz` (None: no telemetry sink).
    pub sink: Option<Arc<SinkHealth>>,
    /// The KPI engine (None when `[kpi]` is off).
    pub kpi: Option<Arc<crate::kpi::KpiService>>,
    /// Located outages (None when alarms or `[locate]` are off).
    pub outages: Option<Arc<std::sync::Mutex<crate::detect::locate::OutageBoard>>>,
}

/// Builds the router from [`routes::table`], each route behind its role check.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for row in routes::table() {
        let layer =
            axum::middleware::from_fn_with_state((state.clone(), row.spec.access), auth::require);
        router = router.route(row.spec.path, row.handler.route_layer(layer));
    }
    router.merge(web::routes()).with_state(state)
}

/// Liveness: the process answers (200), with the state of each connected source.
pub async fn healthz(State(s): State<AppState>) -> Json<serde_json::Value> {
    let sources = s.sources.snapshot();
    let status = if sources.values().all(|x| x.connected) {
        "ok"
    } else {
        "degraded"
    };
    Json(serde_json::json!({
        "status": status,
        "version": env!("CARGO_PKG_VERSION"),
        "sources": sources,
    }))
}

/// Prometheus metrics.
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// One device as the API shows it.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    /// Device id.
    pub id: String,
    /// Device kind.
    pub kind: String,
    /// Site.
    pub site: String,
    /// Feeder.
    pub feeder: String,
    /// Parent device.
    pub parent: Option<String>,
    /// Location text.
    pub location: Option<String>,
    /// `unknown`, `online`, `degraded` or `offline`.
    pub status: DeviceStatus,
    /// Last answer, ns since epoch.
    pub last_seen: Option<Timestamp>,
    /// Last answer, RFC 3339.
    pub last_seen_rfc3339: Option<String>,
    /// The last error while the device is failing.
    pub last_error: Option<String>,
    /// Bus health of a unit on an RTU or RTU-over-TCP endpoint (requests, timeouts, CRC
    /// errors, exceptions, backoff).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<crate::status::LinkHealth>,
    /// Timestamp of `values`, ns since epoch.
    pub values_ts: Option<Timestamp>,
    /// Latest value of each field.
    pub values: BTreeMap<String, f64>,
    /// Unit of each field that has one.
    pub units: BTreeMap<String, String>,
}

fn view(s: &AppState, d: &DeviceInfo) -> DeviceView {
    let state = s.status.get(&d.id);
    let latest = s.history.latest(&d.id);
    let mut values = BTreeMap::new();
    let mut units = BTreeMap::new();
    if let Some(r) = &latest {
        for (id, v) in &r.values {
            if let Some(f) = r.schema.fields.get(usize::from(*id)) {
                values.insert(f.name.clone(), *v);
                if let Some(u) = &f.unit {
                    units.insert(f.name.clone(), u.clone());
                }
            }
        }
    }
    let last_seen = state.as_ref().and_then(|s| s.last_seen);
    DeviceView {
        id: d.id.clone(),
        kind: d.kind.clone(),
        site: d.site.clone(),
        feeder: d.feeder.clone(),
        parent: d.parent.clone(),
        location: d.location.clone(),
        status: state
            .as_ref()
            .map(|s| s.status)
            .unwrap_or(DeviceStatus::Unknown),
        last_seen,
        last_seen_rfc3339: last_seen
            .map(|ns| chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339()),
        link: state.as_ref().and_then(|s| s.link.clone()),
        last_error: state.and_then(|s| s.last_error),
        values_ts: latest.as_ref().map(|r| r.ts),
        values,
        units,
    }
}

/// Every device.
pub async fn list_devices(State(s): State<AppState>) -> Json<Vec<DeviceView>> {
    Json(s.devices.list().iter().map(|d| view(&s, d)).collect())
}

/// One device with its latest values and open alarms.
pub async fn get_device(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.devices.get(&id) {
        Some(d) => {
            let log = Arc::clone(&s.eventlog);
            let dev = d.id.clone();
            let alarms = tokio::task::spawn_blocking(move || {
                log.list_alarms(true, Some(&dev), None, None, 1000)
            })
            .await;
            let alarms = match alarms {
                Ok(Ok(a)) => a,
                Ok(Err(e)) => return error::ApiError::from(e).into_response(),
                Err(e) => return error::ApiError::Internal(e.to_string()).into_response(),
            };
            let mut v = serde_json::to_value(view(&s, &d)).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert(
                    "active_alarms".into(),
                    serde_json::to_value(alarms).unwrap_or_default(),
                );
            }
            Json(v).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("unknown device {id:?}") })),
        )
            .into_response(),
    }
}

/// The chart window of one device.
pub async fn device_history(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if s.devices.get(&id).is_none() {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("unknown device {id:?}") })),
        )
            .into_response();
    }
    Json(s.history.window(&id)).into_response()
}
