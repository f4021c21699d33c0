//! gridwatch survives a broker restart: it reconnects, subscribes again (the restarted
//! mosquitto runs without persistence, so the session is gone), counts the gap, and loses
//! nothing published after the broker is back. In its own test binary because restarting
//! the shared broker disturbs every other test using it.
#![allow(clippy::unwrap_used)]

mod common;
mod mqtt_common;

use std::time::Duration;

use common::*;
use mqtt_common::*;

#[test]
fn broker_restart_reconnects_resubscribes_and_loses_nothing_after() {
    let s = services();
    let prefix = unique("mqrs");
    let db = unique("gw_mqtt_rs");
    let port = free_port();
    let cfg = MqttDaemonConfig {
        broker: &s.mqtt,
        client_id: &unique("gw_rs"),
        credentials: None,
        prefix: &prefix,
        vm: (&s.vm_url, &db),
        http_port: port,
        ts_format: "ms",
    };
    let mut daemon = start_daemon(&cfg);
    wait_mqtt_connected(port, Duration::from_secs(20));

    let batch = |from: i64, n: i64| -> Vec<(String, String)> {
        let base = now_ns() / 1_000_000;
        (0..n)
            .map(|k| {
                (
                    format!("{prefix}/RS-{:02}/telemetry", k % 10),
                    format!(
                        r#"{{"ts":{},"v":{{"a":{}}}}}"#,
                        base - 60_000 + from + k,
                        230 + k % 7
                    ),
                )
            })
            .collect()
    };
    publish_all(
        &s.mqtt,
        &unique("pub"),
        None,
        batch(0, 100),
        Duration::from_secs(10),
    );
    vm_export_wait(
        &s.vm_url,
        &format!("meter_voltage_a{{db=\"{db}\"}}"),
        100,
        Duration::from_secs(30),
    );

    mosquitto_restart();
    // Back means subscribed again: only then is anything published guaranteed to reach us
    // (the restarted broker has no session to queue into).
    wait_for(
        "mqtt reconnected after the restart",
        Duration::from_secs(30),
        || {
            (metric(port, "gridwatch_mqtt_connection_lost_total", "") >= 1.0
                && metric(port, "gridwatch_mqtt_connected", "") == 1.0)
                .then_some(())
        },
    );
    wait_mqtt_connected(port, Duration::from_secs(5));
    assert!(metric(port, "gridwatch_mqtt_disconnected_seconds", "") > 0.0);
    daemon.wait_for_log("mqtt reconnected and resubscribed", Duration::from_secs(5));

    publish_all(
        &s.mqtt,
        &unique("pub"),
        None,
        batch(1000, 500),
        Duration::from_secs(20),
    );
    let series = vm_export_wait(
        &s.vm_url,
        &format!("meter_voltage_a{{db=\"{db}\"}}"),
        600,
        Duration::from_secs(30),
    );
    let n: usize = series.iter().map(|s| s.values.len()).sum();
    assert_eq!(
        n, 600,
        "100 before the restart + 500 after, nothing lost or doubled"
    );
    assert!(daemon.try_wait().is_none());
    daemon.terminate();
}
