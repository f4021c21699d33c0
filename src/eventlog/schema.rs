//! Versioned migrations of the event database, applied in order at start-up.
//!
//! `PRAGMA user_version` holds the number of migrations applied; each migration runs in its
//! own transaction together with the version bump, so a crash mid-way leaves the previous
//! version intact. Never edit a released migration: append a new one.

use rusqlite::Connection;

/// Audit records younger than this cannot be deleted, whatever the retention settings say
/// (NERC CIP-007 R4.3 asks for 90 days of security event logs). Enforced twice: by the
/// purge and by a trigger in the database itself.
pub const AUDIT_FLOOR_SECS: i64 = 90 * 24 * 3600;

/// The migrations, oldest first. Index + 1 is the schema version after it.
pub const MIGRATIONS: &[&str] = &[
    // 1: events, audit trail, alarms, maintenance, work orders, users.
    r#"
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    ts      INTEGER NOT NULL,            -- ns since epoch
    kind    TEXT NOT NULL,               -- EventKind::as_str
    class   TEXT NOT NULL,               -- retention class
    device  TEXT,
    site    TEXT,
    feeder  TEXT,
    actor   TEXT NOT NULL,               -- user name or 'system'
    detail  TEXT NOT NULL DEFAULT '{}'   -- JSON
);
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_device ON events(device, id);
CREATE INDEX events_class_ts ON events(class, ts);

CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       INTEGER NOT NULL,
    category TEXT NOT NULL,              -- 'change' or 'security'
    actor    TEXT NOT NULL,              -- user, token id, or '-' when none was presented
    address  TEXT NOT NULL,
    action   TEXT NOT NULL,              -- e.g. 'alarm.ack', 'auth'
    target   TEXT NOT NULL DEFAULT '',
    outcome  TEXT NOT NULL,              -- 'ok', 'denied', 'invalid_token', ...
    before   TEXT,                       -- JSON
    after    TEXT,                       -- JSON
    detail   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_ts ON audit(ts);
CREATE TRIGGER audit_append_only BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_keep_90_days BEFORE DELETE ON audit
WHEN OLD.ts > (CAST(strftime('%s', 'now') AS INTEGER) - 7776000) * 1000000000
BEGIN
    SELECT RAISE(ABORT, 'audit records younger than 90 days cannot be deleted');
END;

CREATE TABLE alarms (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    device         TEXT NOT NULL,
    rule           TEXT NOT NULL,
    severity       TEXT NOT NULL,
    message        TEXT NOT NULL DEFAULT '',
    raised_at      INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    cleared_at     INTEGER,
    acked_by       TEXT,
    acked_at       INTEGER,
    ack_comment    TEXT,
    shelved_until  INTEGER,
    shelved_by     TEXT,
    shelve_comment TEXT,
    detail         TEXT NOT NULL DEFAULT '{}'
);
-- At most one open alarm per (device, rule): open = not both cleared and acknowledged.
CREATE UNIQUE INDEX alarms_open_key ON alarms(device, rule)
    WHERE cleared_at IS NULL OR acked_at IS NULL;
CREATE INDEX alarms_raised ON alarms(raised_at);

CREATE TABLE maintenance (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    device        TEXT NOT NULL,
    kind          TEXT NOT NULL,
    status        TEXT NOT NULL,         -- 'open' or 'closed'
    crew          TEXT NOT NULL DEFAULT '',
    findings      TEXT NOT NULL DEFAULT '',
    parts         TEXT NOT NULL DEFAULT '[]',
    notes         TEXT NOT NULL DEFAULT '',
    work_order_id INTEGER REFERENCES work_orders(id),
    performed_at  INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    closed_at     INTEGER
);
CREATE INDEX maintenance_device ON maintenance(device, id);

CREATE TABLE work_orders (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device      TEXT NOT NULL,
    alarm_id    INTEGER REFERENCES alarms(id),
    title       TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,           -- open, assigned, in_progress, closed
    assignee    TEXT,
    resolution  TEXT NOT NULL DEFAULT '',
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    closed_at   INTEGER
);
CREATE INDEX work_orders_device ON work_orders(device, id);

CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    token_id    TEXT NOT NULL UNIQUE,
    token_hash  TEXT NOT NULL,           -- argon2id PHC string of the token secret
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);
"#,
    // 2: the alarm engine's live state (one JSON document per current alarm), replacing
    // the alarms.json file so that one database holds everything that must survive.
    r#"
CREATE TABLE alarm_state (
    id   INTEGER PRIMARY KEY,   -- the engine's alarm id
    body TEXT NOT NULL          -- the alarm as JSON (src/alarms/mod.rs `Alarm`)
);
"#,
    // 3: KPI accumulators per device and UTC day, and supply interruptions (src/kpi).
    r#"
CREATE TABLE kpi_daily (
    day    INTEGER NOT NULL,    -- days since 1970-01-01 (UTC)
    device TEXT NOT NULL,
    body   TEXT NOT NULL,       -- src/kpi `DayAcc` as JSON
    PRIMARY KEY (day, device)
);

CREATE TABLE interruptions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    device    TEXT NOT NULL,
    start_ns  INTEGER NOT NULL,
    end_ns    INTEGER NOT NULL,
    customers INTEGER NOT NULL,
    cause     TEXT NOT NULL
);
CREATE INDEX interruptions_time ON interruptions(start_ns);
"#,
    // 4: planned work: a work order's scheduled window, and when its customer notice went
    // out (src/detect/locate.rs).
    r#"
ALTER TABLE work_orders ADD COLUMN scheduled_start INTEGER;
ALTER TABLE work_orders ADD COLUMN scheduled_end INTEGER;
ALTER TABLE work_orders ADD COLUMN notice_sent_at INTEGER;
"#,
];

/// Applies every migration newer than the database; returns the resulting version.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
        tracing::info!(version = i + 1, "event database migrated");
    }
    Ok(MIGRATIONS.len().max(current))
}
