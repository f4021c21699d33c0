use std::time::Duration;

use super::*;
use crate::detect::config::{AlarmsConfig, Level, RuleConfig, RuleType};
use crate::detect::{Rule, RuleSet};
use crate::model::DeviceInfo;

const S: i64 = 1_000_000_000;

fn rule() -> Arc<Rule> {
    let user = [RuleConfig {
        id: "x_high".into(),
        rule_type: Some(RuleType::Threshold),
        field: Some("x".into()),
        levels: Some(vec![Level {
            severity: Severity::Warning,
            raise: 1.0,
            clear: None,
            delay: None,
        }]),
        ..RuleConfig::default()
    }];
    let a = AlarmsConfig {
        builtin_rules: false,
        ..AlarmsConfig::default()
    };
    let set = RuleSet::build(&a, &user).unwrap_or_default();
    Arc::clone(&set.rules()[0])
}

fn dev() -> Arc<DeviceInfo> {
    Arc::new(DeviceInfo {
        id: "TX-1".into(),
        kind: "transformer".into(),
        site: "S7".into(),
        feeder: "F07".into(),
        parent: None,
        location: Some("kiosk K7".into()),
        rated_kva: None,
        nominal_voltage: None,
        customers: 1,
        interval_ns: S,
        lp_series: String::new(),
        slot: crate::model::Slot::NONE,
    })
}

fn det(change: Change, severity: Severity, ts_s: i64) -> Detection {
    Detection {
        device: dev(),
        rule: rule(),
        change,
        severity,
        value: 2.0,
        limit: 1.0,
        ts: ts_s * S,
    }
}

fn manager() -> AlarmManager {
    let settings = AlarmSettings {
        flapping_transitions: 5,
        flapping_window_ns: 600 * S,
        max_shelve_ns: 3600 * S,
    };
    AlarmManager::new(settings, Arc::new(store::MemoryStore)).unwrap_or_else(|e| panic!("{e}"))
}

fn kinds(ev: &[AlarmEvent]) -> Vec<(EventKind, bool)> {
    ev.iter().map(|e| (e.kind, e.notify)).collect()
}

#[test]
fn lifecycle_active_ack_clear_and_cleared_unacked() {
    let mut m = manager();
    let ev = m.apply(&det(Change::Raise, Severity::Warning, 0));
    assert_eq!(kinds(&ev), [(EventKind::Raised, true)]);
    let id = ev[0].alarm.id;
    // Deduplication: a second raise of the same key is not a new alarm.
    assert!(
        m.apply(&det(Change::Raise, Severity::Warning, 1))
            .is_empty()
    );
    let ev = m.apply(&det(Change::Escalate, Severity::Critical, 2));
    assert_eq!(kinds(&ev), [(EventKind::Escalated, true)]);
    assert_eq!(m.list()[0].severity, Severity::Critical);
    // Active → acknowledged → cleared: gone.
    let ev = m.ack(id, Some("op".into()), 3 * S).unwrap_or_default();
    assert_eq!(ev[0].alarm.state, AlarmState::Acknowledged);
    let ev = m.apply(&det(Change::Clear, Severity::Critical, 4));
    assert_eq!(
        kinds(&ev),
        [(EventKind::Cleared, true), (EventKind::Removed, true)]
    );
    assert!(m.list().is_empty());

    // Cleared before anyone acknowledged: stays visible until acknowledged.
    let ev = m.apply(&det(Change::Raise, Severity::Warning, 10));
    let id = ev[0].alarm.id;
    m.apply(&det(Change::Clear, Severity::Warning, 11));
    assert_eq!(m.list()[0].state, AlarmState::ClearedUnacked);
    let ev = m.ack(id, None, 12 * S).unwrap_or_default();
    assert_eq!(
        kinds(&ev),
        [(EventKind::Acknowledged, true), (EventKind::Removed, true)]
    );
    assert!(m.list().is_empty());
    assert!(matches!(
        m.ack(id, None, 13 * S),
        Err(AlarmError::NotFound(_))
    ));
}

#[test]
fn flapping_becomes_one_alarm_and_clears_after_a_quiet_window() {
    let mut m = manager();
    let mut notified = Vec::new();
    for i in 0..10 {
        let change = if i % 2 == 0 {
            Change::Raise
        } else {
            Change::Clear
        };
        for e in m.apply(&det(change, Severity::Warning, i * 10)) {
            notified.push(e.kind);
        }
    }
    // raise, clear, raise, clear, then the 5th transition → flapping; nothing after.
    assert_eq!(
        notified,
        [
            EventKind::Raised,
            EventKind::Cleared,
            EventKind::Raised,
            EventKind::Cleared,
            EventKind::Flapping
        ]
    );
    let a = &m.list()[0];
    assert!(a.flapping && a.state == AlarmState::Active && !a.condition);
    // Quiet for less than the window: still flapping.
    assert!(m.tick(90 * S + 599 * S).is_empty());
    let ev = m.tick(90 * S + 600 * S);
    assert_eq!(kinds(&ev), [(EventKind::Cleared, true)]);
    assert_eq!(m.list()[0].state, AlarmState::ClearedUnacked);
    assert!(!m.list()[0].flapping);
}

#[test]
fn shelving_hides_notifications_until_it_expires() {
    let mut m = manager();
    let id = m.apply(&det(Change::Raise, Severity::Warning, 0))[0]
        .alarm
        .id;
    assert!(matches!(
        m.shelve(id, 7200 * S, None, S),
        Err(AlarmError::BadShelve { .. })
    ));
    let ev = m
        .shelve(id, 60 * S, Some("op".into()), S)
        .unwrap_or_default();
    assert_eq!(ev[0].alarm.shelved_until, Some(61 * S));
    let ev = m.apply(&det(Change::Escalate, Severity::Critical, 30));
    assert_eq!(kinds(&ev), [(EventKind::Escalated, false)]);
    assert!(m.tick(60 * S).is_empty());
    let ev = m.tick(61 * S);
    assert_eq!(kinds(&ev), [(EventKind::Unshelved, true)]);
    assert_eq!(ev[0].alarm.severity, Severity::Critical);
}

#[tokio::test(start_paused = true)]
async fn shelving_expiry_on_the_tokio_clock() {
    // The daemon drives `tick` from a tokio interval; with a paused clock the expiry is exact.
    {
        let start = tokio::time::Instant::now();
        let now = || (tokio::time::Instant::now() - start).as_nanos() as i64;
        let mut m = manager();
        let id = m.apply(&det(Change::Raise, Severity::Warning, 0))[0]
            .alarm
            .id;
        m.shelve(id, 30 * S, None, now()).unwrap_or_default();
        let mut seen = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        for _ in 0..40 {
            tick.tick().await;
            for e in m.tick(now()) {
                seen.push((e.kind, now() / S));
            }
        }
        assert_eq!(seen, [(EventKind::Unshelved, 30)]);
    }
}

#[test]
fn state_survives_a_restart_through_the_file_store() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(store::FileStore::new(dir.path().join("sub/alarms.json")));
    let settings = AlarmSettings {
        flapping_transitions: 5,
        flapping_window_ns: 600 * S,
        max_shelve_ns: 3600 * S,
    };
    let mut m = AlarmManager::new(settings, store.clone()).unwrap_or_else(|e| panic!("{e}"));
    let id = m.apply(&det(Change::Raise, Severity::Critical, 0))[0]
        .alarm
        .id;
    m.ack(id, Some("op".into()), S).unwrap_or_default();
    let before = m.list();
    drop(m);
    let mut m = AlarmManager::new(settings, store).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.list(), before);
    assert_eq!(
        m.active_conditions(),
        [("TX-1".to_string(), "x_high".to_string(), Severity::Critical)]
    );
    // New alarms continue the id sequence.
    let mut d = det(Change::Raise, Severity::Warning, 5);
    d.device = Arc::new(DeviceInfo {
        id: "TX-2".into(),
        ..(*dev()).clone()
    });
    assert_eq!(m.apply(&d)[0].alarm.id, id + 1);
}

#[test]
fn alarm_line_for_the_tsdb() {
    let mut m = manager();
    let ev = m.apply(&det(Change::Raise, Severity::Warning, 7));
    let mut buf = String::new();
    service::write_alarm_line(&mut buf, &ev[0]);
    assert_eq!(
        buf,
        "alarm,device=TX-1,feeder=F07,kind=transformer,rule=x_high,severity=warning,site=S7 \
         event=\"raised\",active=1i,value=2.0,limit=1.0,id=1i 7000000000\n"
    );
}

/// The event database in `dir` (opened again by each call, as after a restart).
fn open_event_log(dir: &std::path::Path) -> Arc<crate::eventlog::EventLog> {
    crate::eventlog::EventLog::open(
        dir,
        &crate::config::EventLogConfig::default(),
        &[],
        crate::hub::Hub::new(),
        &crate::metrics::Registry::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn state_lives_in_the_event_log_and_an_old_state_file_is_imported_once() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let settings = AlarmSettings {
        flapping_transitions: 5,
        flapping_window_ns: 600 * S,
        max_shelve_ns: 3600 * S,
    };
    // An older daemon left its state in a JSON file.
    let file = store::FileStore::new(dir.path().join("alarms.json"));
    let mut old =
        AlarmManager::new(settings, Arc::new(file.clone())).unwrap_or_else(|e| panic!("{e}"));
    old.apply(&det(Change::Raise, Severity::Critical, 0));
    let before = old.list();
    drop(old);

    let open = || open_event_log(dir.path());
    let db = store::EventLogStore::new(open());
    assert_eq!(db.import_file(&file).unwrap_or_default(), 1);
    assert!(!dir.path().join("alarms.json").exists());
    assert!(dir.path().join("alarms.json.imported").exists());
    // A second start does not import again.
    assert_eq!(db.import_file(&file).unwrap_or(99), 0);
    let mut m = AlarmManager::new(settings, Arc::new(db)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.list(), before);
    m.ack(before[0].id, Some("op".into()), S)
        .unwrap_or_default();
    let acked = m.list();
    drop(m);

    // Reopened database: the acknowledgement is there.
    let m = AlarmManager::new(settings, Arc::new(store::EventLogStore::new(open())))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.list(), acked);
    assert_eq!(m.list()[0].state, AlarmState::Acknowledged);
}

/// Records what each save wrote, to check that a change writes only what changed.
#[derive(Default)]
struct CountingStore {
    writes: std::sync::Mutex<Vec<(usize, usize)>>,
}

impl store::AlarmStore for CountingStore {
    fn load(&self) -> Result<Vec<Alarm>, StoreError> {
        Ok(Vec::new())
    }
    fn save(&self, alarms: &[Alarm]) -> Result<(), StoreError> {
        self.save_changes(alarms, &[])
    }
    fn save_changes(&self, changed: &[Alarm], removed: &[u64]) -> Result<(), StoreError> {
        let mut w = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        w.push((changed.len(), removed.len()));
        Ok(())
    }
}

fn storm(n: usize, change: Change, ts_s: i64) -> Vec<Detection> {
    (0..n)
        .map(|i| {
            let mut d = det(change, Severity::Warning, ts_s);
            d.device = Arc::new(DeviceInfo {
                id: format!("MT-{i:05}"),
                ..(*dev()).clone()
            });
            d
        })
        .collect()
}

#[test]
fn an_alarm_storm_writes_what_changed_once_per_burst() {
    let settings = AlarmSettings {
        flapping_transitions: 5,
        flapping_window_ns: 600 * S,
        max_shelve_ns: 3600 * S,
    };
    let store = Arc::new(CountingStore::default());
    let mut m = AlarmManager::new(settings, store.clone()).unwrap_or_else(|e| panic!("{e}"));
    // 2,000 meters raise at once (a frequency excursion is system-wide): one write of 2,000.
    let raised = m.apply_all(&storm(2000, Change::Raise, 1));
    assert_eq!(raised.len(), 2000);
    // One meter clears: one write of that one alarm, not of the 2,000 on the list.
    m.apply(&storm(1, Change::Clear, 2)[0]);
    // Acknowledging the cleared alarm removes it: one deletion.
    let id = m.list()[0].id;
    m.ack(id, Some("op".into()), 3 * S).unwrap_or_default();
    // Nothing changed: nothing written.
    m.tick(4 * S);
    let writes = store
        .writes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(writes, [(2000, 0), (1, 0), (0, 1)]);
    assert_eq!(m.list().len(), 1999);
}

#[test]
fn incremental_saves_leave_the_database_equal_to_the_list() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let open = || open_event_log(dir.path());
    let settings = AlarmSettings {
        flapping_transitions: 5,
        flapping_window_ns: 600 * S,
        max_shelve_ns: 3600 * S,
    };
    let mut m = AlarmManager::new(settings, Arc::new(store::EventLogStore::new(open())))
        .unwrap_or_else(|e| panic!("{e}"));
    m.apply_all(&storm(50, Change::Raise, 1));
    m.apply_all(&storm(10, Change::Clear, 2));
    let first = m.list()[0].id;
    m.ack(first, Some("op".into()), 3 * S).unwrap_or_default();
    m.shelve(m.list()[20].id, 60 * S, Some("op".into()), 3 * S)
        .unwrap_or_default();
    // Still active (the cleared ones are MT-00000..09).
    let mut escalated: Vec<Detection> = storm(25, Change::Escalate, 4)
        .into_iter()
        .skip(20)
        .collect();
    for d in &mut escalated {
        d.severity = Severity::Critical;
    }
    m.apply_all(&escalated);
    let expected = m.list();
    drop(m);
    let m = AlarmManager::new(settings, Arc::new(store::EventLogStore::new(open())))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.list(), expected);
    assert_eq!(expected.len(), 49);
}
