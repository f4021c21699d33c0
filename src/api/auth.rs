//! Authentication and roles.
//!
//! Every route row in [`super::routes`] names the least [`Role`] it needs (or
//! [`Access::Open`]); [`require`] runs before the handler: it finds the caller from a bearer
//! token (or HTTP basic `name:token` for humans), answers 401 without or with an invalid
//! credential and 403 for a role that may not, and writes exactly one security event per
//! attempt (fail closed: 503 when it cannot). The [`Principal`] is then in the request
//! extensions for the handler.
//!
//! Tokens: users from `gridwatch users add` (argon2id hash in the database; a verified token
//! is cached for [`CACHE_TTL`] by its SHA-256 so argon2 does not run on every request), and
//! `[[api.tokens]]` from the config (compared by SHA-256 in constant time). Failed attempts
//! are counted per client IP; `max_failures` within `failure_window` lock the address out
//! for `lockout` (429).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::config::{ApiConfig, AuthMode};
use crate::eventlog::{AuditContext, AuditEntry, EventLog, split_token};
use crate::metrics::{Counter, Registry};

/// How long a verified user token is trusted without running argon2 again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything but users and the audit trail.
    Viewer,
    /// + acknowledge and shelve alarms.
    Operator,
    /// + maintenance records, work orders assigned to them.
    Crew,
    /// + exports (CSV), work orders for anyone, rule/threshold views.
    Engineer,
    /// + users and the audit trail.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 5] = [
        Role::Viewer,
        Role::Operator,
        Role::Crew,
        Role::Engineer,
        Role::Admin,
    ];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Crew => "crew",
            Role::Engineer => "engineer",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token (`/healthz`).
    Open,
    /// A token with at least this role.
    Role(Role),
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User or config-token name (`anonymous` with auth off).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Client address.
    pub address: String,
}

impl Principal {
    /// The audit context of this caller.
    pub fn audit(&self) -> AuditContext {
        AuditContext {
            actor: self.name.clone(),
            address: self.address.clone(),
        }
    }

    /// 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "needs role {} (you are {})",
                role.as_str(),
                self.role.as_str()
            )))
        }
    }
}

#[derive(Debug, Default)]
struct Failures {
    count: u32,
    window_start: Option<Instant>,
    locked_until: Option<Instant>,
}

/// The authenticator shared by every request.
pub struct Auth {
    mode: AuthMode,
    config_tokens: Vec<(String, Role, [u8; 32])>,
    cache: Mutex<HashMap<[u8; 32], (String, Role, Instant)>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    max_failures: u32,
    window: Duration,
    lockout: Duration,
    ok: Counter,
    failed: Counter,
    locked: Counter,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn sha256(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

enum Credential {
    Bearer(String),
    Basic(String, String),
}

impl Auth {
    /// Builds the authenticator from `[api]` (token values from the environment are read
    /// here; validation already checked they are set).
    pub fn new(cfg: &ApiConfig, metrics: &Registry) -> Auth {
        let config_tokens = cfg
            .tokens
            .iter()
            .filter_map(|t| {
                let hash = if let Some(tok) = &t.token {
                    Some(sha256(tok.as_bytes()))
                } else if let Some(var) = &t.token_env {
                    std::env::var(var).ok().map(|v| sha256(v.as_bytes()))
                } else {
                    t.token_sha256.as_deref().and_then(hex32)
                };
                hash.map(|h| (t.name.clone(), t.role, h))
            })
            .collect();
        let counter = |outcome: &'static str| {
            metrics.counter(
                "gridwatch_auth_attempts_total",
                "Authentication attempts by outcome.",
                &[("outcome", outcome)],
            )
        };
        Auth {
            mode: cfg.auth,
            config_tokens,
            cache: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            max_failures: cfg.max_failures,
            window: cfg.failure_window,
            lockout: cfg.lockout,
            ok: counter("ok"),
            failed: counter("failed"),
            locked: counter("locked_out"),
        }
    }

    /// Whether authentication is off.
    pub fn is_off(&self) -> bool {
        self.mode == AuthMode::Off
    }

    /// Drops cached verifications of `name`'s token (after the user was disabled).
    pub fn forget(&self, name: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (n, _, _)| n != name);
    }

    fn locked_for(&self, ip: IpAddr) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let until = map.get(&ip)?.locked_until?;
        let now = Instant::now();
        (until > now).then(|| (until - now).as_secs().max(1))
    }

    fn note_failure(&self, ip: IpAddr) -> bool {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let f = map.entry(ip).or_default();
        let now = Instant::now();
        if f.window_start
            .is_none_or(|s| now.duration_since(s) > self.window)
        {
            f.window_start = Some(now);
            f.count = 0;
        }
        f.count += 1;
        if f.count >= self.max_failures {
            f.locked_until = Some(now + self.lockout);
            f.count = 0;
            f.window_start = None;
            return true;
        }
        false
    }

    fn note_success(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&ip);
    }

    fn config_token(&self, token: &str) -> Option<(String, Role)> {
        let h = sha256(token.as_bytes());
        // Compare against every configured token so the time does not tell which matched.
        let mut found = None;
        for (name, role, stored) in &self.config_tokens {
            if bool::from(stored.ct_eq(&h)) {
                found = Some((name.clone(), *role));
            }
        }
        found
    }

    async fn user_token(
        &self,
        log: &Arc<EventLog>,
        token: &str,
    ) -> Result<Option<(String, Role)>, ApiError> {
        let key = sha256(token.as_bytes());
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((name, role, at)) = cache.get(&key)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(Some((name.clone(), *role)));
            }
        }
        let log = Arc::clone(log);
        let tok = token.to_string();
        let user = tokio::task::spawn_blocking(move || log.verify_token(&tok))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok(user.map(|u| {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.insert(key, (u.name.clone(), u.role, Instant::now()));
            (u.name, u.role)
        }))
    }

    /// Authenticates and authorises one request; writes its security event.
    pub async fn check(
        &self,
        log: &Arc<EventLog>,
        headers: &HeaderMap,
        addr: Option<SocketAddr>,
        need: Role,
        target: &str,
    ) -> Result<Principal, ApiError> {
        let address = addr
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        if self.is_off() {
            return Ok(Principal {
                name: "anonymous".into(),
                role: Role::Admin,
                address,
            });
        }
        let ip = addr.map(|a| a.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let event = |actor: &str, outcome: &str, detail: serde_json::Value| {
            let who = AuditContext {
                actor: actor.to_string(),
                address: address.clone(),
            };
            let entry = AuditEntry {
                category: "security",
                action: "auth".into(),
                target: target.to_string(),
                outcome: outcome.to_string(),
                before: None,
                after: None,
                detail,
            };
            let log = Arc::clone(log);
            async move {
                tokio::task::spawn_blocking(move || log.security(&who, entry))
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))?
                    .map_err(ApiError::from)
            }
        };
        if let Some(secs) = self.locked_for(ip) {
            self.locked.inc();
            event("-", "locked_out", serde_json::json!({})).await?;
            return Err(ApiError::LockedOut(secs));
        }
        let cred = match parse_credential(headers) {
            Ok(Some(c)) => c,
            Ok(None) => {
                self.failed.inc();
                event("-", "missing_credentials", serde_json::json!({})).await?;
                return Err(ApiError::Unauthorized("a bearer token is required".into()));
            }
            Err(msg) => {
                self.failed.inc();
                event("-", "malformed_credentials", serde_json::json!({})).await?;
                self.note_failure(ip);
                return Err(ApiError::Unauthorized(msg));
            }
        };
        let (presented, token, basic_user) = match &cred {
            Credential::Bearer(t) => (
                split_token(t)
                    .map(|(id, _)| format!("token:{id}"))
                    .unwrap_or_else(|| "-".into()),
                t.as_str(),
                None,
            ),
            Credential::Basic(u, p) => (format!("basic:{u}"), p.as_str(), Some(u.as_str())),
        };
        let found = match self.config_token(token) {
            Some(f) => Some(f),
            None => self.user_token(log, token).await?,
        };
        let found = found.filter(|(name, _)| basic_user.is_none_or(|u| u == name));
        let Some((name, role)) = found else {
            self.failed.inc();
            let locked = self.note_failure(ip);
            if locked {
                tracing::warn!(address = %address, "authentication lockout");
            }
            event(
                &presented,
                "invalid_credentials",
                serde_json::json!({ "locked_out": locked }),
            )
            .await?;
            return Err(ApiError::Unauthorized("invalid credentials".into()));
        };
        self.note_success(ip);
        let principal = Principal {
            name,
            role,
            address: address.clone(),
        };
        let allowed = principal.require(need);
        let outcome = if allowed.is_ok() { "ok" } else { "forbidden" };
        self.ok.inc();
        event(
            &principal.name,
            outcome,
            serde_json::json!({ "presented": presented, "role": role.as_str() }),
        )
        .await?;
        allowed.map(|()| principal)
    }
}

fn parse_credential(headers: &HeaderMap) -> Result<Option<Credential>, String> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "authorization header is not ASCII".to_string())?;
    if let Some(t) = value.strip_prefix("Bearer ") {
        let t = t.trim();
        if t.is_empty() || t.len() > 512 {
            return Err("malformed bearer token".into());
        }
        return Ok(Some(Credential::Bearer(t.to_string())));
    }
    if let Some(b) = value.strip_prefix("Basic ") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|_| "malformed basic credentials".to_string())?;
        let text = String::from_utf8(raw).map_err(|_| "malformed basic credentials".to_string())?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| "malformed basic credentials".to_string())?;
        return Ok(Some(Credential::Basic(u.to_string(), p.to_string())));
    }
    Err("unsupported authorization scheme (use Bearer)".into())
}

/// Middleware for one route: authenticate, authorise, put the [`Principal`] in the request.
pub async fn require(
    State((state, access)): State<(AppState, Access)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Access::Role(need) = access else {
        return next.run(req).await;
    };
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let target = format!("{} {}", req.method(), req.uri().path());
    match state
        .auth
        .check(&state.eventlog, req.headers(), addr, need, &target)
        .await
    {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
