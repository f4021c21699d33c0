//! The HTTP API: health, devices with their status and latest values, metrics, and the
//! control-room web page.

pub mod web;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::history::History;
use crate::metrics::Registry;
use crate::model::{DeviceInfo, Timestamp};
use crate::status::{DeviceStatus, StatusBoard};

/// Everything the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// Configured devices in config order.
    pub devices: Arc<Vec<Arc<DeviceInfo>>>,
    /// Device status.
    pub status: Arc<StatusBoard>,
    /// Latest readings.
    pub history: Arc<History>,
    /// Daemon metrics.
    pub metrics: Arc<Registry>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/devices", get(list_devices))
        .route("/api/v1/devices/{id}", get(get_device))
        .route("/api/v1/devices/{id}/history", get(device_history))
        .merge(web::routes())
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn metrics(State(s): State<AppState>) -> Response {
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
        last_error: state.and_then(|s| s.last_error),
        values_ts: latest.as_ref().map(|r| r.ts),
        values,
        units,
    }
}

async fn list_devices(State(s): State<AppState>) -> Json<Vec<DeviceView>> {
    Json(s.devices.iter().map(|d| view(&s, d)).collect())
}

async fn get_device(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match s.devices.iter().find(|d| d.id == id) {
        Some(d) => Json(view(&s, d)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("unknown device {id:?}") })),
        )
            .into_response(),
    }
}

async fn device_history(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    if !s.devices.iter().any(|d| d.id == id) {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": format!("unknown device {id:?}") })),
        )
            .into_response();
    }
    Json(s.history.window(&id)).into_response()
}
