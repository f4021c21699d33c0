#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::RetentionConfig;

fn open(dir: &Path, retention: RetentionConfig) -> Arc<EventLog> {
    let cfg = EventLogConfig {
        retention,
        ..EventLogConfig::default()
    };
    EventLog::open(dir, &cfg, &[], Hub::new(), &Registry::new()).unwrap()
}

fn who(actor: &str) -> AuditContext {
    AuditContext {
        actor: actor.into(),
        address: "127.0.0.1:1".into(),
    }
}

const DAY: i64 = 86_400 * 1_000_000_000;

#[test]
fn migrations_are_applied_once_and_reopen_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), RetentionConfig::default()));
    let log = open(dir.path(), RetentionConfig::default());
    let v: i64 = log
        .read(|c| {
            c.query_row("PRAGMA user_version", [], |r| r.get(0))
                .map(Some)
        })
        .unwrap()
        .unwrap();
    assert_eq!(v, i64::try_from(schema::MIGRATIONS.len()).unwrap());
    let mode: String = log
        .read(|c| {
            c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .map(Some)
        })
        .unwrap()
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn short_audit_retention_keeps_records_younger_than_90_days() {
    let dir = tempfile::tempdir().unwrap();
    let retention = RetentionConfig {
        audit: Retention::For(Duration::from_secs(86_400)),
        device_status: Retention::For(Duration::from_secs(86_400)),
        ..RetentionConfig::default()
    };
    let log = open(dir.path(), retention);
    let now = now_ns();
    {
        let conn = log.lock();
        for (age_days, action) in [(30, "young"), (89, "almost"), (100, "old")] {
            conn.execute(
                "INSERT INTO audit (ts, category, actor, address, action, outcome)
                 VALUES (?1, 'security', 'x', 'a', ?2, 'ok')",
                params![now - age_days * DAY, action],
            )
            .unwrap();
        }
        // The database itself refuses to delete a young audit record.
        assert!(
            conn.execute("DELETE FROM audit WHERE action = 'young'", [])
                .is_err()
        );
        assert!(
            conn.execute("UPDATE audit SET actor = 'y' WHERE action = 'old'", [])
                .is_err()
        );
    }
    log.record(Event {
        ts: now - 2 * DAY,
        kind: EventKind::DeviceOffline,
        device: Some("TX-1".into()),
        actor: SYSTEM.into(),
        detail: serde_json::json!({}),
    })
    .unwrap();
    let report = log.purge(now).unwrap();
    let left: Vec<String> = log
        .audit_records(None, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(left, ["almost", "young"], "{report:?}");
    assert!(report.removed.contains(&("audit".into(), 1)));
    assert!(report.removed.contains(&("device_status".into(), 1)));
}

#[test]
fn ack_writes_one_audit_record_with_before_and_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), RetentionConfig::default());
    let a = log
        .raise_alarm(
            "TX-1",
            "oil_temp_high",
            "major",
            "oil 98 °C",
            serde_json::json!({}),
        )
        .unwrap();
    // Raising again returns the open alarm.
    assert_eq!(
        log.raise_alarm("TX-1", "oil_temp_high", "major", "", serde_json::json!({}))
            .unwrap()
            .id,
        a.id
    );
    let acked = log.ack_alarm(&who("olga"), a.id, "crew sent").unwrap();
    assert_eq!(acked.state, "acknowledged");
    let audit = log.audit_records(Some("change"), 10).unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].actor, "olga");
    assert_eq!(audit[0].action, "alarm.ack");
    assert_eq!(
        audit[0].before.as_ref().unwrap()["acked_by"],
        serde_json::Value::Null
    );
    assert_eq!(audit[0].after.as_ref().unwrap()["acked_by"], "olga");
    assert!(matches!(
        log.ack_alarm(&who("olga"), a.id, ""),
        Err(EventLogError::Conflict(_))
    ));
    let cleared = log.clear_alarm(a.id).unwrap();
    assert_eq!(cleared.state, "closed");
    let kinds: Vec<String> = log
        .query_events(&EventQuery {
            limit: 10,
            ..EventQuery::default()
        })
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        ["alarm_cleared", "alarm_acknowledged", "alarm_raised"]
    );
}

#[test]
fn audit_failure_refuses_the_change_and_raises_a_system_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), RetentionConfig::default());
    let a = log
        .raise_alarm("TX-1", "r", "minor", "", serde_json::json!({}))
        .unwrap();
    log.lock()
        .execute_batch(
            "CREATE TRIGGER break_audit BEFORE INSERT ON audit
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
    let err = log.ack_alarm(&who("olga"), a.id, "x").unwrap_err();
    assert!(matches!(err, EventLogError::AuditFailed(_)), "{err}");
    assert!(log.alarm(a.id).unwrap().acked_at.is_none());
    assert!(log.audit_degraded());
    let open = log.open_alarms().unwrap();
    assert!(
        open.iter()
            .any(|a| a.rule == "audit_write_failed" && a.device == "gridwatch")
    );
}

#[test]
fn tokens_verify_only_with_the_right_secret_and_while_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), RetentionConfig::default());
    let created = log
        .add_user(&who("admin"), "olga", crate::api::auth::Role::Operator)
        .unwrap();
    assert_eq!(
        log.verify_token(&created.token).unwrap().map(|u| u.name),
        Some("olga".to_string())
    );
    let mut wrong = created.token.clone();
    wrong.pop();
    wrong.push('x');
    assert!(log.verify_token(&wrong).unwrap().is_none());
    assert!(log.verify_token("gw_nothex_abc").unwrap().is_none());
    log.disable_user(&who("admin"), "olga").unwrap();
    assert!(log.verify_token(&created.token).unwrap().is_none());
    let stored: String = log
        .read(|c| {
            c.query_row("SELECT token_hash FROM users", [], |r| r.get(0))
                .map(Some)
        })
        .unwrap()
        .unwrap();
    assert!(stored.starts_with("$argon2id$"));
    assert!(!stored.contains(split_token(&created.token).unwrap().1));
}

#[test]
fn work_order_lifecycle_and_crew_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), RetentionConfig::default());
    let wo = log
        .add_work_order(
            &who("eve"),
            &NewWorkOrder {
                device: "TX-1".into(),
                title: "check oil".into(),
                description: String::new(),
                alarm_id: None,
                assignee: Some("carl".into()),
                scheduled_start: None,
                scheduled_end: None,
            },
        )
        .unwrap();
    assert_eq!(wo.state, "assigned");
    let start = WorkOrderUpdate {
        state: Some("in_progress".into()),
        ..WorkOrderUpdate::default()
    };
    assert!(matches!(
        log.update_work_order(&who("dan"), wo.id, &start, false, true),
        Err(EventLogError::Forbidden(_))
    ));
    let wo = log
        .update_work_order(&who("carl"), wo.id, &start, false, true)
        .unwrap();
    assert_eq!(wo.state, "in_progress");
    let wo = log
        .update_work_order(&who("carl"), wo.id, &WorkOrderUpdate::default(), true, true)
        .unwrap();
    assert_eq!(wo.state, "closed");
    assert!(matches!(
        log.update_work_order(&who("carl"), wo.id, &start, false, true),
        Err(EventLogError::Conflict(_))
    ));
}
