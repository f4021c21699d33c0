//! `/api/v1/alarms`: the current alarms, acknowledge, shelve.
//!
//! No authentication yet (issue 5 wraps these routes with auth, roles and an audit trail):
//! the handlers take the acting user as an optional `by` in the body so that layer only has
//! to fill it in.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::alarms::AlarmError;
use crate::alarms::service::AlarmService;

/// Routes for the alarm API, to merge into the main router.
pub fn router(service: Arc<AlarmService>) -> Router {
    Router::new()
        .route("/api/v1/alarms", get(list))
        .route("/api/v1/alarms/{id}/ack", post(ack))
        .route("/api/v1/alarms/{id}/shelve", post(shelve))
        .with_state(service)
}

async fn list(State(s): State<Arc<AlarmService>>) -> Response {
    Json(s.list()).into_response()
}

/// Body of `POST .../ack` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Who acknowledges.
    #[serde(default)]
    pub by: Option<String>,
}

/// Body of `POST .../shelve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShelveRequest {
    /// How long, e.g. `"2h"`.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Who shelves.
    #[serde(default)]
    pub by: Option<String>,
}

fn error(e: AlarmError) -> Response {
    let status = match e {
        AlarmError::NotFound(_) => StatusCode::NOT_FOUND,
        AlarmError::BadShelve { .. } => StatusCode::BAD_REQUEST,
        AlarmError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

async fn ack(
    State(s): State<Arc<AlarmService>>,
    Path(id): Path<u64>,
    body: Option<Json<AckRequest>>,
) -> Response {
    let by = body.and_then(|Json(b)| b.by);
    match s.ack(id, by, crate::model::now_ns()) {
        Ok(a) => Json(a).into_response(),
        Err(e) => error(e),
    }
}

async fn shelve(
    State(s): State<Arc<AlarmService>>,
    Path(id): Path<u64>,
    Json(body): Json<ShelveRequest>,
) -> Response {
    match s.shelve(id, body.duration, body.by, crate::model::now_ns()) {
        Ok(a) => Json(a).into_response(),
        Err(e) => error(e),
    }
}
