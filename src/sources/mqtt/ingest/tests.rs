use super::*;
use crate::config::{FieldMapping, SubscriptionConfig, TimestampConfig, TimestampFormat};
use crate::status::DeviceStatus;

const S: i64 = 1_000_000_000;
const NOW: i64 = 1_795_420_800 * S;

fn cfg(auto_register: bool) -> MqttConfig {
    MqttConfig {
        broker: "127.0.0.1:1883".into(),
        auto_register,
        subscriptions: vec![
            SubscriptionConfig {
                pattern: "meters/{device}/telemetry".into(),
                topic: String::new(),
                format: PayloadFormat::Json,
                kind: "meter".into(),
                site: "S7".into(),
                feeder: String::new(),
                fields: vec![FieldMapping {
                    path: "v.a".into(),
                    name: "voltage_a".into(),
                    scale: 1.0,
                    unit: Some("V".into()),
                    equals: None,
                }],
                timestamp: TimestampConfig {
                    path: "ts".into(),
                    format: TimestampFormat::S,
                },
                expected_interval: Duration::from_secs(1),
            },
            SubscriptionConfig {
                pattern: "ami/{feeder}/{device}/{field}".into(),
                topic: String::new(),
                format: PayloadFormat::Number,
                kind: "meter".into(),
                site: String::new(),
                feeder: String::new(),
                fields: vec![],
                timestamp: TimestampConfig::default(),
                expected_interval: Duration::from_secs(10),
            },
        ],
        ..MqttConfig::default()
    }
}

fn setup(
    auto: bool,
    known: &[&str],
) -> (Ingest, Arc<DeviceRegistry>, Arc<StatusBoard>, Arc<Registry>) {
    let devices: Vec<Arc<DeviceInfo>> = known
        .iter()
        .map(|id| {
            Arc::new(
                DeviceInfo {
                    site: "declared".into(),
                    parent: Some("TX-1".into()),
                    nominal_voltage: Some(230.0),
                    ..DeviceInfo::for_test(id, "meter")
                }
                .finish(),
            )
        })
        .collect();
    let registry = DeviceRegistry::new(&devices);
    let status = StatusBoard::new(&devices, 0);
    let metrics = Registry::new();
    let ingest = Ingest::new(
        &cfg(auto),
        Arc::clone(&registry),
        Arc::clone(&status),
        Arc::clone(&metrics),
    )
    .unwrap();
    (ingest, registry, status, metrics)
}

fn msg(ts: i64, v: f64) -> String {
    format!(r#"{{"ts":{ts},"v":{{"a":{v}}}}}"#)
}

fn result_count(m: &Registry, result: &str) -> u64 {
    m.render()
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "gridwatch_mqtt_messages_total{{result=\"{result}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn declared_device_reading_duplicates_and_out_of_order() {
    let (mut ing, _, status, metrics) = setup(false, &["MT-1"]);
    let mut out = Vec::new();
    let t = 1_795_420_790;
    assert_eq!(
        ing.handle(
            "meters/MT-1/telemetry",
            msg(t, 230.1).as_bytes(),
            NOW,
            &mut out
        ),
        Outcome::Accepted
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ts, t * S);
    assert_eq!(out[0].get("voltage_a"), Some(230.1));
    assert_eq!(
        out[0].device.site, "declared",
        "declared metadata wins over the subscription's"
    );
    assert_eq!(out[0].device.parent.as_deref(), Some("TX-1"));
    // QoS 1 redelivery: same device and timestamp.
    assert_eq!(
        ing.handle(
            "meters/MT-1/telemetry",
            msg(t, 230.1).as_bytes(),
            NOW,
            &mut out
        ),
        Outcome::Duplicate
    );
    // Older but new: accepted with its own timestamp.
    assert_eq!(
        ing.handle(
            "meters/MT-1/telemetry",
            msg(t - 5, 229.0).as_bytes(),
            NOW,
            &mut out
        ),
        Outcome::Accepted
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].ts, (t - 5) * S);
    assert_eq!(
        status.get("MT-1").map(|s| s.status),
        Some(DeviceStatus::Online)
    );
    assert_eq!(result_count(&metrics, "accepted"), 2);
    assert_eq!(result_count(&metrics, "duplicate"), 1);
}

#[test]
fn unknown_devices_are_counted_or_registered() {
    let (mut ing, registry, _, metrics) = setup(false, &[]);
    let mut out = Vec::new();
    assert_eq!(
        ing.handle(
            "meters/MT-9/telemetry",
            msg(1_795_420_790, 1.0).as_bytes(),
            NOW,
            &mut out
        ),
        Outcome::UnknownDevice
    );
    assert!(out.is_empty());
    assert_eq!(result_count(&metrics, "unknown_device"), 1);
    assert!(registry.get("MT-9").is_none());

    let (mut ing, registry, status, metrics) = setup(true, &[]);
    assert_eq!(
        ing.handle("ami/F9/MT-9/voltage_a", b"231.5", NOW, &mut out),
        Outcome::Accepted
    );
    assert_eq!(
        ing.handle("ami/F9/MT-9/current_a", b"3.25", NOW + 1, &mut out),
        Outcome::Accepted
    );
    let info = registry.get("MT-9").unwrap();
    assert_eq!(
        (info.feeder.as_str(), info.kind.as_str(), info.interval_ns),
        ("F9", "meter", 10 * S)
    );
    assert!(
        info.lp_series.starts_with("meter,device=MT-9"),
        "{}",
        info.lp_series
    );
    assert_eq!(out[0].get("voltage_a"), Some(231.5));
    assert_eq!(out[1].get("current_a"), Some(3.25));
    assert_eq!(out[1].ts, NOW + 1, "arrival time without a timestamp");
    assert_eq!(
        status.get("MT-9").map(|s| s.status),
        Some(DeviceStatus::Online)
    );
    assert_eq!(
        metrics.counter_total("gridwatch_mqtt_devices_registered_total"),
        1
    );
}

#[test]
fn bad_messages_are_rejected_per_device_and_others_unaffected() {
    let (mut ing, _, _, metrics) = setup(false, &["MT-1", "MT-2"]);
    let mut out = Vec::new();
    let t = 1_795_420_790;
    for (topic, payload) in [
        ("meters/MT-1/telemetry", "{not json".to_string()),
        ("meters/MT-1/telemetry", r#"{"v":{"a":"x"}}"#.to_string()),
        ("meters/MT-1/telemetry", msg(t + 3600, 1.0)),
        ("meters/MT-1/telemetry", msg(0, 1.0)),
        ("elsewhere/MT-1", msg(t, 1.0)),
    ] {
        assert_ne!(
            ing.handle(topic, payload.as_bytes(), NOW, &mut out),
            Outcome::Accepted,
            "{payload}"
        );
    }
    assert_eq!(
        ing.handle(
            "meters/MT-2/telemetry",
            msg(t, 230.0).as_bytes(),
            NOW,
            &mut out
        ),
        Outcome::Accepted
    );
    assert_eq!(out.len(), 1);
    assert_eq!(result_count(&metrics, "rejected"), 5);
    let text = metrics.render();
    for reason in ["bad_json", "wrong_type", "future_timestamp", "too_old"] {
        assert!(
            text.contains(&format!(
                "gridwatch_mqtt_rejected_total{{device=\"MT-1\",reason=\"{reason}\"}} 1"
            )),
            "{reason}: {text}"
        );
    }
    assert!(text.contains("gridwatch_mqtt_rejected_total{device=\"\",reason=\"no_pattern\"} 1"));
}

#[test]
fn silent_devices_go_offline_after_expected_intervals() {
    let (mut ing, _, status, _) = setup(false, &["MT-1"]);
    let mut out = Vec::new();
    ing.handle(
        "meters/MT-1/telemetry",
        msg(1_795_420_790, 1.0).as_bytes(),
        NOW,
        &mut out,
    );
    assert_eq!(
        ing.sweep(NOW + 3 * S),
        0,
        "3 intervals of 1 s is not yet more than 3"
    );
    assert_eq!(ing.sweep(NOW + 3 * S + 1), 1);
    assert_eq!(
        status.get("MT-1").map(|s| s.status),
        Some(DeviceStatus::Offline)
    );
    assert_eq!(ing.sweep(NOW + 10 * S), 0, "reported once");
    ing.handle(
        "meters/MT-1/telemetry",
        msg(1_795_420_791, 1.0).as_bytes(),
        NOW + 11 * S,
        &mut out,
    );
    assert_eq!(
        status.get("MT-1").map(|s| s.status),
        Some(DeviceStatus::Online)
    );
}

#[test]
fn recent_window_finds_repeats_in_any_order_and_forgets_the_oldest() {
    let mut r = Recent::default();
    let n = DEDUP_WINDOW as i64;
    // In order, then a late one in the middle: all new.
    for ts in (0..n).map(|i| i * 10) {
        assert!(r.insert(ts, 0));
    }
    assert!(r.insert(55, 0));
    // Repeats anywhere in the window are duplicates; another subscription is not.
    assert!(!r.insert(55, 0));
    assert!(!r.insert((n - 1) * 10, 0));
    assert!(!r.insert(30, 0));
    assert!(r.insert(30, 1));
    // The window holds DEDUP_WINDOW pairs: the two inserts above pushed out 0 and 10.
    assert_eq!(r.0.len(), DEDUP_WINDOW);
    assert!(r.insert(0, 0), "the oldest left the window");
    assert!(
        r.0.iter().zip(r.0.iter().skip(1)).all(|(a, b)| a < b),
        "sorted"
    );
}
