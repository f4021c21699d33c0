//! MQTT smart meters end to end: the real `gridwatch` binary subscribed to the test
//! mosquitto, the in-process meter simulator publishing, VictoriaMetrics as the store.
//! Broker restarts are in `mqtt_broker_restart.rs` (they would disturb these tests).
#![allow(clippy::unwrap_used)]

mod common;
mod mqtt_common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use mqtt_common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every message the simulator published is in the store, exactly once, with its values
/// and timestamp; every meter shows up in the API.
#[test]
fn five_hundred_meters_for_ten_seconds_all_land_in_the_store() {
    let s = services();
    let prefix = unique("mq500");
    let db = unique("gw_mqtt500");
    let port = free_port();
    let cfg = MqttDaemonConfig {
        broker: &s.mqtt,
        client_id: &unique("gw"),
        credentials: None,
        prefix: &prefix,
        vm: (&s.vm_url, &db),
        http_port: port,
        ts_format: "rfc3339",
    };
    let mut daemon = start_daemon(&cfg);
    wait_mqtt_connected(port, Duration::from_secs(20));

    let rt = runtime();
    let sim = rt.block_on(async {
        let sim = gridwatch_sim::start_mqtt(gridwatch_sim::MqttSimConfig {
            broker: s.mqtt.clone(),
            client_id: unique("sim"),
            meters: 500,
            interval: Duration::from_secs(1),
            topic_prefix: prefix.clone(),
            id_prefix: format!("{prefix}-"),
            record: true,
            ..gridwatch_sim::MqttSimConfig::default()
        })
        .unwrap();
        assert!(sim.wait_connected(Duration::from_secs(10)).await);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let records = sim.records();
        let total = sim.shutdown(Duration::from_secs(20)).await;
        (records, total)
    });
    let (records, total) = sim;
    assert_eq!(records.len() as u64, total);
    assert!(total >= 500 * 9, "only {total} messages in 10 s");
    eprintln!("simulator published {total} messages from 500 meters");

    // Every field of every message, exactly once.
    let series = vm_export_wait(
        &s.vm_url,
        &format!("{{db=\"{db}\"}}"),
        records.iter().map(|r| r.values.len()).sum::<usize>() + 2 * records.len(),
        Duration::from_secs(60),
    );
    let mut stored: HashMap<(String, String), HashMap<i64, f64>> = HashMap::new();
    let mut points = 0;
    let mut flag_points = 0;
    for sr in &series {
        let device = sr.labels.get("device").cloned().unwrap_or_default();
        let field = sr
            .name
            .strip_prefix("meter_")
            .unwrap_or(&sr.name)
            .to_string();
        // Event flags are written on every message (0 unless that event happened).
        if field == "last_gasp" || field == "power_restored" {
            assert!(
                sr.values.iter().all(|v| *v == 0.0),
                "{sr:?}: no outage was injected"
            );
            flag_points += sr.values.len();
            continue;
        }
        let m = stored.entry((device, field)).or_default();
        for (ts, v) in sr.timestamps_ms.iter().zip(&sr.values) {
            assert!(m.insert(*ts, *v).is_none(), "{sr:?}: duplicate timestamp");
            points += 1;
        }
    }
    let expected: usize = records.iter().map(|r| r.values.len()).sum();
    assert_eq!(points, expected, "points in the store vs fields published");
    assert_eq!(
        flag_points,
        2 * records.len(),
        "two event flags per message"
    );
    for r in &records {
        for (field, value) in &r.values {
            let got = stored
                .get(&(r.device.clone(), (*field).to_string()))
                .and_then(|m| m.get(&(r.ts_ns / 1_000_000)));
            assert_eq!(got, Some(value), "{} {field} at {}", r.device, r.ts_ns);
        }
    }
    let devices: std::collections::BTreeSet<&str> = series
        .iter()
        .filter_map(|s| s.labels.get("device").map(String::as_str))
        .collect();
    assert_eq!(devices.len(), 500);

    assert_eq!(
        metric(port, "gridwatch_mqtt_messages_total", "result=\"accepted\"") as u64,
        total
    );
    assert_eq!(
        metric(port, "gridwatch_mqtt_messages_total", "result=\"rejected\""),
        0.0
    );
    let api: Vec<serde_json::Value> = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/devices"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let online = api
        .iter()
        .filter(|d| d["id"].as_str().is_some_and(|id| id.starts_with(&prefix)))
        .filter(|d| d["kind"] == "meter" && d["values"]["voltage_a"].is_number())
        .count();
    assert_eq!(online, 500, "auto-registered meters with values in the API");
    daemon.terminate();
}

/// Messages published while gridwatch is stopped are delivered when it returns: the
/// broker keeps the persistent session (stable client id, clean session off, QoS 1).
#[test]
fn messages_published_while_stopped_arrive_after_restart() {
    let s = services();
    let prefix = unique("mqps");
    let db = unique("gw_mqtt_ps");
    let client_id = unique("gw_ps");
    let port = free_port();
    let cfg = MqttDaemonConfig {
        broker: &s.mqtt,
        client_id: &client_id,
        credentials: None,
        prefix: &prefix,
        vm: (&s.vm_url, &db),
        http_port: port,
        ts_format: "ms",
    };
    let mut daemon = start_daemon(&cfg);
    wait_mqtt_connected(port, Duration::from_secs(20));
    let status = daemon.terminate();
    assert!(status.success(), "{status}: {}", daemon.log());
    assert!(daemon.log().contains("mqtt source stopped"));

    // 100 meters × 100 timestamps = 10,000 distinct (device, ts).
    let base_ms = now_ns() / 1_000_000 - 200_000;
    let mut messages = Vec::with_capacity(10_000);
    for k in 0..100 {
        for m in 0..100 {
            let ts = base_ms + k * 1000;
            let v = 230.0 + (m as f64) / 10.0 + (k as f64) / 100.0;
            messages.push((
                format!("{prefix}/{prefix}-{m:03}/telemetry"),
                format!(r#"{{"ts":{ts},"v":{{"a":{v}}}}}"#),
            ));
        }
    }
    publish_all(
        &s.mqtt,
        &unique("pub"),
        None,
        messages,
        Duration::from_secs(60),
    );

    let mut daemon = start_daemon(&cfg);
    wait_mqtt_connected(port, Duration::from_secs(20));
    let series = vm_export_wait(
        &s.vm_url,
        &format!("meter_voltage_a{{db=\"{db}\"}}"),
        10_000,
        Duration::from_secs(60),
    );
    let n: usize = series.iter().map(|s| s.values.len()).sum();
    assert_eq!(n, 10_000);
    assert_eq!(series.len(), 100);
    // Spot-check values: meter 7 at k = 42.
    let s7 = series
        .iter()
        .find(|s| s.labels["device"] == format!("{prefix}-007"))
        .unwrap();
    let i = s7
        .timestamps_ms
        .iter()
        .position(|t| *t == base_ms + 42_000)
        .unwrap();
    assert!(approx_eq(s7.values[i], 230.0 + 0.7 + 0.42));
    eprintln!(
        "after restart: {n} points, {} duplicates dropped",
        metric(
            port,
            "gridwatch_mqtt_messages_total",
            "result=\"duplicate\""
        )
    );
    daemon.terminate();
}

fn auth_daemon(password: &str, port: u16, prefix: &str) -> Daemon {
    let s = services();
    let (user, _) = mqtt_credentials();
    let db = unique("gw_mqtt_auth");
    let cfg = MqttDaemonConfig {
        broker: &s.mqtt_auth,
        client_id: &unique("gw_auth"),
        credentials: Some((&user, password)),
        prefix,
        vm: (&s.vm_url, &db),
        http_port: port,
        ts_format: "rfc3339",
    };
    start_daemon(&cfg)
}

#[test]
fn right_credentials_connect_and_receive() {
    let s = services();
    let (user, pass) = mqtt_credentials();
    let port = free_port();
    let prefix = unique("mqauth");
    let mut daemon = auth_daemon(&pass, port, &prefix);
    wait_mqtt_connected(port, Duration::from_secs(20));
    let ready = http()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    publish_all(
        &s.mqtt_auth,
        &unique("pub"),
        Some((&user, &pass)),
        vec![(
            format!("{prefix}/MA-1/telemetry"),
            r#"{"v":{"a":231.5}}"#.to_string(),
        )],
        Duration::from_secs(10),
    );
    let v = wait_for("MA-1 in the API", Duration::from_secs(10), || {
        let d: serde_json::Value = http()
            .get(format!("http://127.0.0.1:{port}/api/v1/devices/MA-1"))
            .send()
            .ok()?
            .json()
            .ok()?;
        d["values"]["voltage_a"].as_f64()
    });
    assert_eq!(v, 231.5);
    daemon.terminate();
}

#[test]
fn wrong_credentials_are_a_clear_error_in_the_log_and_healthz() {
    let port = free_port();
    let mut daemon = auth_daemon("wrong-password", port, &unique("mqbad"));
    daemon.wait_for_log("broker refused the connection", Duration::from_secs(20));
    let log = daemon.log();
    assert!(log.contains("mqtt cannot connect"), "{log}");
    let h = wait_for("healthz", Duration::from_secs(10), || healthz(port));
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["sources"]["mqtt"]["connected"], false, "{h}");
    let error = h["sources"]["mqtt"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("broker refused the connection") && error.contains("mqtt.password"),
        "{error}"
    );
    let ready = http()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(metric(port, "gridwatch_mqtt_connects_total", "result=\"failed\"") >= 1.0);
    // Still alive and retrying with backoff, not exiting.
    assert!(daemon.try_wait().is_none());
    daemon.terminate();
}

/// Bad messages are rejected and counted per device; the good meter next to them is not
/// affected and the daemon keeps running.
#[test]
fn malformed_messages_are_counted_and_do_not_disturb_other_meters() {
    let s = services();
    let prefix = unique("mqbadin");
    let db = unique("gw_mqtt_bad");
    let port = free_port();
    let cfg = MqttDaemonConfig {
        broker: &s.mqtt,
        client_id: &unique("gw_bad"),
        credentials: None,
        prefix: &prefix,
        vm: (&s.vm_url, &db),
        http_port: port,
        ts_format: "rfc3339",
    };
    let mut daemon = start_daemon(&cfg);
    wait_mqtt_connected(port, Duration::from_secs(20));
    let bad = format!("{prefix}/BAD-1/telemetry");
    let good = format!("{prefix}/GOOD-1/telemetry");
    let future = chrono_like_rfc3339(now_ns() / 1_000_000_000 + 3600);
    let mut messages = vec![
        (bad.clone(), "{not json".to_string()),
        (bad.clone(), r#"{"v":{"a":"230"}}"#.to_string()),
        (
            bad.clone(),
            format!(r#"{{"ts":"{future}","v":{{"a":230}}}}"#),
        ),
        (
            bad.clone(),
            r#"{"ts":"1970-01-01T00:00:00Z","v":{"a":230}}"#.to_string(),
        ),
        (bad.clone(), r#"{"v":{"a":1e999}}"#.to_string()),
        (
            bad.clone(),
            String::from_utf8_lossy(&[0xff, 0x00, 0x13]).into_owned(),
        ),
    ];
    messages.push((good.clone(), r#"{"v":{"a":229.5}}"#.to_string()));
    publish_all(
        &s.mqtt,
        &unique("pub"),
        None,
        messages,
        Duration::from_secs(10),
    );
    wait_for("good meter value", Duration::from_secs(10), || {
        let d: serde_json::Value = http()
            .get(format!("http://127.0.0.1:{port}/api/v1/devices/GOOD-1"))
            .send()
            .ok()?
            .json()
            .ok()?;
        (d["values"]["voltage_a"] == 229.5).then_some(())
    });
    wait_for("6 rejections", Duration::from_secs(10), || {
        (metric(port, "gridwatch_mqtt_rejected_total", "device=\"BAD-1\"") == 6.0).then_some(())
    });
    for reason in ["bad_json", "wrong_type", "future_timestamp", "too_old"] {
        assert!(
            metric(
                port,
                "gridwatch_mqtt_rejected_total",
                &format!("device=\"BAD-1\",reason=\"{reason}\"")
            ) >= 1.0,
            "{reason}"
        );
    }
    let log = daemon.log();
    assert!(log.contains("mqtt message rejected"), "{log}");
    assert!(log.contains(&bad), "the log line names the topic: {log}");
    assert!(daemon.try_wait().is_none());
    daemon.terminate();
}

fn chrono_like_rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .to_rfc3339()
}
