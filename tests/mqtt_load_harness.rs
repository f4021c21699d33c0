//! The MQTT load harness at tiny scale: `gridwatch-sim`'s mqtt-load publisher (20 meters over
//! 2 connections) and the daemon config it generates drive the real daemon through the
//! mosquitto of `scripts/test.sh`, and every published message is accepted into the pipeline
//! and stored. This checks that `scripts/bench-mqtt.sh` has working parts; it measures nothing
//! (timing belongs in the benchmark, never in `cargo test`).

#![allow(clippy::unwrap_used)]

mod common;
mod mqtt_common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use gridwatch_sim::mqtt_load::{self, DaemonLayout, MqttLoadConfig, Qos};
use mqtt_common::{metric, wait_mqtt_connected};

const METERS: u32 = 20;

fn every_message_is_accepted(qos: Qos, rate: u64, messages: u64) {
    let broker = env_or_fail("GRIDWATCH_TEST_MQTT");
    // Own topics and client ids: other tests share the broker.
    let prefix = unique("mlh");
    let dir = Daemon::temp_dir();
    let port = free_port();
    let mut config = format!(
        "[api]\nauth = \"off\"\n\n[daemon]\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{port}\"\n\n",
        dir.path().join("data").display(),
    );
    config.push_str(&mqtt_load::daemon_config(&DaemonLayout {
        broker: &broker,
        client_id: &unique("mlh_daemon"),
        topic_prefix: &prefix,
        id_prefix: "ML-",
        meters: METERS,
        meters_per_transformer: 10,
        auto_register: false,
    }));
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, config).unwrap();
    let mut daemon = Daemon::spawn_in(dir, &["run", "--config", path.to_str().unwrap()], &[]);
    wait_http_ok(
        &format!("http://127.0.0.1:{port}/metrics"),
        Duration::from_secs(20),
    );
    wait_mqtt_connected(port, Duration::from_secs(20));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let report = rt
        .block_on(mqtt_load::run(
            MqttLoadConfig {
                broker: broker.clone(),
                client_id: unique("mlh_pub"),
                meters: METERS,
                rate,
                // The message count ends the run; the duration only bounds a hang.
                duration: Duration::from_secs(60),
                messages,
                connections: 2,
                qos,
                topic_prefix: prefix.clone(),
                ..MqttLoadConfig::default()
            },
            tokio_util::sync::CancellationToken::new(),
        ))
        .unwrap();
    assert_eq!(report.published, messages, "{}", report.to_json());
    assert_eq!(report.connections, 2);
    if qos == Qos::AtLeastOnce {
        assert_eq!(report.acked, Some(messages), "{}", report.to_json());
    }

    let accepted = |port| metric(port, "gridwatch_mqtt_messages_total", "result=\"accepted\"");
    wait_for(
        "every published message accepted",
        Duration::from_secs(30),
        || (accepted(port) >= messages as f64).then_some(()),
    );
    // Nothing more arrives, and nothing went another way.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(accepted(port), messages as f64);
    for result in ["rejected", "duplicate", "unknown_device"] {
        assert_eq!(
            metric(
                port,
                "gridwatch_mqtt_messages_total",
                &format!("result=\"{result}\"")
            ),
            0.0,
            "{result}"
        );
    }
    assert_eq!(
        metric(port, "gridwatch_mqtt_points_total", ""),
        messages as f64
    );

    assert!(daemon.terminate().success(), "{}", daemon.log());
    // Stored: one line per message, every meter, all 13 mapped fields, no (device, ts) twice.
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(daemon.dir().join("data/telemetry")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let mut parts = line.split(' ');
            let series = parts.next().unwrap();
            let fields = parts.next().unwrap();
            let ts = parts.next().unwrap();
            assert_eq!(fields.split(',').count(), 13, "{line}");
            let device = series
                .split("device=")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap()
                .to_string();
            assert!(seen.insert((device, ts.to_string())), "twice: {line}");
        }
    }
    assert_eq!(seen.len() as u64, messages);
    let devices: BTreeSet<&str> = seen.iter().map(|(d, _)| d.as_str()).collect();
    let expected: BTreeSet<String> = (1..=METERS)
        .map(|n| mqtt_load::meter_id("ML-", n))
        .collect();
    assert_eq!(
        devices,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
}

#[test]
fn paced_qos0_messages_are_all_accepted() {
    every_message_is_accepted(Qos::AtMostOnce, 2000, 400);
}

#[test]
fn unpaced_qos1_messages_are_all_accepted() {
    every_message_is_accepted(Qos::AtLeastOnce, 0, 300);
}
