//! The API's error type and its one mapping to HTTP status codes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::eventlog::EventLogError;

/// Everything a handler or the auth layer can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad filter, bad body, bad date).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or invalid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the role (or ownership) does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: valid but conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 429: too many failed authentications from this address.
    #[error("too many failed authentications; retry in {0} s")]
    LockedOut(u64),
    /// 503: the audit trail or the store cannot be written (fail closed).
    #[error("{0}")]
    Unavailable(String),
    /// 500: a defect or an unexpected store error (details only in the log).
    #[error("internal error")]
    Internal(String),
}

impl From<EventLogError> for ApiError {
    fn from(e: EventLogError) -> Self {
        match e {
            EventLogError::NotFound(m) => ApiError::NotFound(m),
            EventLogError::Conflict(m) => ApiError::Conflict(m),
            EventLogError::Invalid(m) => ApiError::BadRequest(m),
            EventLogError::Forbidden(m) => ApiError::Forbidden(m),
            e @ EventLogError::AuditFailed(_) => ApiError::Unavailable(e.to_string()),
            e @ (EventLogError::Sqlite(_) | EventLogError::Io { .. }) => {
                ApiError::Unavailable(format!("event store unavailable: {e}"))
            }
            e @ EventLogError::Json(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::LockedOut(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ApiError::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error answering a request");
        }
        let mut resp = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        match &self {
            ApiError::Unauthorized(_) => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"gridwatch\""),
                );
            }
            ApiError::LockedOut(secs) => {
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
    }
}
