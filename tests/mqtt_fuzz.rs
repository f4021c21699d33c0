//! Thousands of random and malformed MQTT messages through the ingest stage: no panic, and
//! every message ends in exactly one counted outcome (accepted, rejected, duplicate or
//! unknown device); every rejection is also in the per-device rejection counter.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use gridwatch::config::{
    FieldMapping, MqttConfig, PayloadFormat, SubscriptionConfig, TimestampFormat,
};
use gridwatch::metrics::Registry;
use gridwatch::registry::DeviceRegistry;
use gridwatch::sources::mqtt::{Ingest, Outcome};
use gridwatch::status::StatusBoard;
use proptest::prelude::*;

fn field(path: &str, name: &str) -> FieldMapping {
    FieldMapping::new(path, name)
}

fn sub(pattern: &str, format: PayloadFormat, fields: Vec<FieldMapping>) -> SubscriptionConfig {
    SubscriptionConfig::new(pattern, format, fields, TimestampFormat::S)
}

fn ingest(auto_register: bool) -> (Ingest, Arc<Registry>) {
    let mut gasp = field("event", "last_gasp");
    gasp.equals = Some("last_gasp".into());
    let cfg = MqttConfig {
        broker: "127.0.0.1:1883".into(),
        auto_register,
        max_auto_devices: 50,
        subscriptions: vec![
            sub(
                "meters/{device}/telemetry",
                PayloadFormat::Json,
                vec![field("v.a", "voltage_a"), field("i.0", "current_a"), gasp],
            ),
            sub(
                "ami/{feeder}/{device}/{field}",
                PayloadFormat::Number,
                vec![],
            ),
            sub("lp/#", PayloadFormat::Line, vec![]),
        ],
        ..MqttConfig::default()
    };
    let metrics = Registry::new();
    let ing = Ingest::new(
        &cfg,
        DeviceRegistry::new(&[]),
        StatusBoard::new(&[], 0),
        Arc::clone(&metrics),
    )
    .unwrap();
    (ing, metrics)
}

fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Z]{1,3}-[0-9]{1,3}".prop_map(|d| format!("meters/{d}/telemetry")),
        ("[A-Z0-9]{1,3}", "[A-Z]{1,2}", "[a-z_]{1,10}")
            .prop_map(|(f, d, x)| format!("ami/{f}/{d}/{x}")),
        Just("lp/x".to_string()),
        "[ -~]{0,30}",
    ]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    let ts = 1_795_420_800i64;
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "[ -~]{0,80}".prop_map(String::into_bytes),
        (any::<f64>(), -5000i64..5000, any::<bool>()).prop_map(move |(v, dt, with_ts)| {
            let v = if v.is_finite() {
                v.to_string()
            } else {
                "null".into()
            };
            if with_ts {
                format!(r#"{{"ts":{},"v":{{"a":{v}}},"i":[1.5]}}"#, ts + dt)
            } else {
                format!(r#"{{"v":{{"a":{v}}},"event":"last_gasp"}}"#)
            }
            .into_bytes()
        }),
        (any::<f64>()).prop_map(|v| v.to_string().into_bytes()),
        (
            "[a-z]{1,5}",
            "[A-Z]{1,2}",
            any::<f64>(),
            proptest::option::of(0i64..3)
        )
            .prop_map(move |(m, d, v, t)| {
                let t = t
                    .map(|t| format!(" {}", (ts + t) * 1_000_000_000))
                    .unwrap_or_default();
                format!("{m},device={d} x={v}{t}\n{m} y=1i").into_bytes()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20))]

    #[test]
    fn every_message_ends_in_one_counted_outcome(
        auto in any::<bool>(),
        msgs in proptest::collection::vec((topic(), payload()), 200..400),
    ) {
        let (mut ing, metrics) = ingest(auto);
        let now = 1_795_420_800i64 * 1_000_000_000;
        let mut out = Vec::new();
        let mut rejected = 0u64;
        for (i, (t, p)) in msgs.iter().enumerate() {
            let before = out.len();
            let o = ing.handle(t, p, now + i as i64, &mut out);
            match o {
                Outcome::Accepted => prop_assert!(out.len() > before),
                _ => prop_assert_eq!(out.len(), before),
            }
            if matches!(o, Outcome::Rejected | Outcome::NoPattern) {
                rejected += 1;
            }
        }
        for r in &out {
            prop_assert!(r.values.iter().all(|(_, v)| v.is_finite()));
            prop_assert!(!r.values.is_empty());
        }
        prop_assert_eq!(metrics.counter_total("gridwatch_mqtt_messages_total"), msgs.len() as u64);
        prop_assert_eq!(metrics.counter_total("gridwatch_mqtt_rejected_total"), rejected);
    }
}
