//! API users: a name, a role and a bearer token of which only an argon2id hash is stored.
//!
//! Tokens look like `gw_<token id>_<secret>`: the token id (12 hex digits, not secret) finds
//! the row and names the token in security events; the secret (32 random bytes, base64url)
//! is verified against the salted argon2id hash. The token is shown once, at creation.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use rand::RngCore as _;
use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{AuditContext, Changed, EventLog, EventLogError};
use crate::api::auth::Role;
use crate::model::Timestamp;

/// A user as shown to admins (never with the hash).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Public id of the user's token.
    pub token_id: String,
    /// Created (ns).
    pub created_at: Timestamp,
    /// Disabled (ns), if it was.
    pub disabled_at: Option<Timestamp>,
}

/// A freshly created user with the one copy of its token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedUser {
    /// The user.
    pub user: User,
    /// The bearer token; it cannot be shown again.
    pub token: String,
}

/// Splits `gw_<id>_<secret>` into id and secret.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("gw_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty())
        .then_some((id, secret))
}

/// A valid user name: 1–64 of `[A-Za-z0-9._-]`.
pub fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn new_token() -> (String, String, String) {
    let mut rng = rand::rng();
    let mut id = [0u8; 6];
    rng.fill_bytes(&mut id);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    (format!("gw_{id}_{secret}"), id, secret)
}

fn hash_secret(secret: &str) -> Result<String, EventLogError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| EventLogError::Invalid(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| EventLogError::Invalid(format!("hashing: {e}")))
}

/// Whether `secret` matches the argon2 PHC string `hash` (the comparison inside argon2 is
/// constant-time).
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(1)?;
    Ok(User {
        name: r.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        token_id: r.get(2)?,
        created_at: r.get(3)?,
        disabled_at: r.get(4)?,
    })
}

impl EventLog {
    /// Creates a user with a new token (audited as `user.add`); the token is in the result
    /// and nowhere else.
    pub fn add_user(
        &self,
        who: &AuditContext,
        name: &str,
        role: Role,
    ) -> Result<CreatedUser, EventLogError> {
        if !valid_user_name(name) {
            return Err(EventLogError::Invalid(
                "user name: 1 to 64 of A-Z a-z 0-9 . _ -".into(),
            ));
        }
        let (token, id, secret) = new_token();
        let hash = hash_secret(&secret)?;
        self.change(who, "user.add", &format!("user/{name}"), |tx, now| {
            let exists: i64 =
                tx.query_row("SELECT COUNT(*) FROM users WHERE name = ?1", [name], |r| {
                    r.get(0)
                })?;
            if exists > 0 {
                return Err(EventLogError::Conflict(format!("user {name:?} exists")));
            }
            tx.execute(
                "INSERT INTO users (name, role, token_id, token_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, role.as_str(), id, hash, now],
            )?;
            let user = User {
                name: name.to_string(),
                role,
                token_id: id.clone(),
                created_at: now,
                disabled_at: None,
            };
            Ok(Changed {
                before: None,
                after: Some(serde_json::to_value(&user)?),
                events: vec![],
                live: vec![],
                value: CreatedUser {
                    user,
                    token: token.clone(),
                },
            })
        })
    }

    /// Disables a user (audited as `user.disable`); its token stops working at once.
    pub fn disable_user(&self, who: &AuditContext, name: &str) -> Result<User, EventLogError> {
        self.change(who, "user.disable", &format!("user/{name}"), |tx, now| {
            let get = |tx: &rusqlite::Transaction<'_>| {
                super::optional(tx.query_row(
                    "SELECT name, role, token_id, created_at, disabled_at FROM users WHERE name = ?1",
                    [name],
                    user_from_row,
                ))
            };
            let before = get(tx)?.ok_or_else(|| EventLogError::NotFound(format!("no user {name:?}")))?;
            if before.disabled_at.is_some() {
                return Err(EventLogError::Conflict(format!("user {name:?} is disabled")));
            }
            tx.execute("UPDATE users SET disabled_at = ?1 WHERE name = ?2", params![now, name])?;
            let after = get(tx)?.ok_or_else(|| EventLogError::NotFound(format!("no user {name:?}")))?;
            Ok(Changed {
                before: Some(serde_json::to_value(&before)?),
                after: Some(serde_json::to_value(&after)?),
                events: vec![],
                live: vec![],
                value: after,
            })
        })
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>, EventLogError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare(
            "SELECT name, role, token_id, created_at, disabled_at FROM users ORDER BY name",
        )?;
        let rows = stmt.query_map([], user_from_row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The enabled user whose token this is, checking the secret against the stored hash.
    pub fn verify_token(&self, token: &str) -> Result<Option<User>, EventLogError> {
        let Some((id, secret)) = split_token(token) else {
            return Ok(None);
        };
        let row = self.read(|c| {
            super::optional(c.query_row(
                "SELECT name, role, token_id, created_at, disabled_at, token_hash FROM users
                 WHERE token_id = ?1 AND disabled_at IS NULL",
                [id],
                |r| Ok((user_from_row(r)?, r.get::<_, String>(5)?)),
            ))
        })?;
        Ok(row.and_then(|(user, hash)| verify_secret(secret, &hash).then_some(user)))
    }
}
