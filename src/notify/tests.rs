use super::config::CrewConfig;
use super::*;
use crate::alarms::{Alarm, AlarmEvent, AlarmState, EventKind};

fn alarm() -> Alarm {
    Alarm {
        id: 3,
        device: "TX-1".into(),
        kind: "transformer".into(),
        site: "Sub/7".into(),
        feeder: "F07".into(),
        location: Some("kiosk K7".into()),
        rule: "oil_temp_high".into(),
        description: "Top-oil temperature high".into(),
        action: "check oil level and cooling fans".into(),
        severity: Severity::Critical,
        state: AlarmState::Active,
        value: 100.5,
        limit: 95.0,
        unit: "degC".into(),
        since: 1_700_000_000_000_000_000,
        last_change: 1_700_000_000_000_000_000,
        cleared_at: None,
        acked_at: None,
        acked_by: None,
        shelved_until: None,
        shelved_by: None,
        flapping: false,
        condition: true,
        transitions: Default::default(),
    }
}

fn crew(name: &str, feeders: &[&str], min: Option<Severity>) -> CrewConfig {
    CrewConfig {
        name: name.into(),
        contact: String::new(),
        sites: vec![],
        feeders: feeders.iter().map(|s| s.to_string()).collect(),
        min_severity: min,
    }
}

#[test]
fn message_carries_what_a_crew_needs_and_is_routed() {
    let crews = [
        crew("north", &["F07"], None),
        crew("south", &["F09"], None),
        crew("standby", &[], Some(Severity::Critical)),
    ];
    let ev = AlarmEvent {
        kind: EventKind::Raised,
        alarm: alarm(),
        at: 5,
        reading_ts: Some(4),
        notify: true,
    };
    let m = message(&ev, &crews, 9);
    assert_eq!(m.crews, ["north", "standby"]);
    assert_eq!(m.location.as_deref(), Some("kiosk K7"));
    assert_eq!(m.action, "check oil level and cooling fans");
    assert_eq!((m.value, m.limit), (100.5, 95.0));
    assert_eq!((m.reading_ts_ns, m.published_ts_ns), (Some(4), 9));
    assert_eq!(m.since, "2023-11-14T22:13:20+00:00");
    assert!(topic_holds_alarm(&ev));
    let cleared = AlarmEvent {
        kind: EventKind::Cleared,
        ..ev
    };
    assert!(!topic_holds_alarm(&cleared));
}

#[test]
fn topic_escapes_mqtt_wildcards() {
    assert_eq!(
        mqtt::alert_topic("gridwatch/alerts/", "Sub/7", "TX+1", "oil#"),
        "gridwatch/alerts/Sub_7/TX_1/oil_"
    );
}

#[test]
fn signature_is_hmac_sha256_hex() {
    // RFC 4231 test case 2.
    assert_eq!(
        webhook::sign(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}
