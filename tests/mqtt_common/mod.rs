//! Helpers shared by the MQTT integration tests: a daemon config with one JSON meter
//! subscription, `/healthz` polling, and a blocking QoS 1 publisher that returns once the
//! broker acknowledged every message. Use with `mod common; mod mqtt_common;`.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::common::*;

/// The JSON field mapping of the simulator's payload (same as `config/demo.toml`).
pub const METER_FIELDS: &str = r#"fields = [
  { path = "v.a", name = "voltage_a", unit = "V" },
  { path = "v.b", name = "voltage_b", unit = "V" },
  { path = "v.c", name = "voltage_c", unit = "V" },
  { path = "i.a", name = "current_a", unit = "A" },
  { path = "i.b", name = "current_b", unit = "A" },
  { path = "i.c", name = "current_c", unit = "A" },
  { path = "p_kw", name = "active_power", unit = "kW" },
  { path = "pf", name = "power_factor" },
  { path = "f", name = "frequency", unit = "Hz" },
  { path = "e_imp_kwh", name = "energy_import", unit = "kWh" },
  { path = "clock", name = "meter_time", unit = "s" },
  { path = "event", name = "last_gasp", equals = "last_gasp" },
  { path = "event", name = "power_restored", equals = "power_restored" },
]"#;

/// What a test daemon needs to differ in.
pub struct MqttDaemonConfig<'a> {
    /// Broker host:port.
    pub broker: &'a str,
    /// Stable client id (the persistent session).
    pub client_id: &'a str,
    /// `(user, password)`.
    pub credentials: Option<(&'a str, &'a str)>,
    /// Topics are `{prefix}/{device}/telemetry`.
    pub prefix: &'a str,
    /// VictoriaMetrics base URL and v1 db.
    pub vm: (&'a str, &'a str),
    /// HTTP port.
    pub http_port: u16,
    /// Timestamp format of the payloads (`rfc3339`, `ms`, ...).
    pub ts_format: &'a str,
}

/// The daemon's TOML config.
pub fn daemon_config(c: &MqttDaemonConfig<'_>, data_dir: &std::path::Path) -> String {
    let creds = match c.credentials {
        Some((u, p)) => format!("username = {u:?}\npassword = {p:?}\n"),
        None => String::new(),
    };
    format!(
        r#"
[api]
auth = "off"

[daemon]
data_dir = {data_dir:?}
http_listen = "127.0.0.1:{port}"

[storage.influx]
url = {vm_url:?}
api = "v1"
db = {db:?}
batch_size = 5000
flush_interval = "200ms"

[mqtt]
broker = {broker:?}
client_id = {client_id:?}
{creds}auto_register = true
reconnect_min = "100ms"
reconnect_max = "1s"

[[mqtt.subscriptions]]
pattern = "{prefix}/{{device}}/telemetry"
format = "json"
kind = "meter"
expected_interval = "1s"
timestamp = {{ path = "ts", format = "{ts_format}" }}
{fields}
"#,
        data_dir = data_dir.display().to_string(),
        port = c.http_port,
        vm_url = c.vm.0,
        db = c.vm.1,
        broker = c.broker,
        client_id = c.client_id,
        prefix = c.prefix,
        ts_format = c.ts_format,
        fields = METER_FIELDS,
    )
}

/// Writes the config into a fresh temp dir and starts `gridwatch run` on it.
pub fn start_daemon(c: &MqttDaemonConfig<'_>) -> Daemon {
    let dir = Daemon::temp_dir();
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, daemon_config(c, &dir.path().join("data"))).unwrap();
    let path = path.display().to_string();
    Daemon::spawn_in(dir, &["run", "--config", &path], &[])
}

/// `GET /healthz` as JSON (None while the daemon is not answering yet).
pub fn healthz(port: u16) -> Option<serde_json::Value> {
    let resp = http()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .ok()?;
    assert_eq!(resp.status().as_u16(), 200, "healthz must stay 200");
    resp.json().ok()
}

/// Waits until `/healthz` says the MQTT source is connected and subscribed.
pub fn wait_mqtt_connected(port: u16, timeout: Duration) {
    wait_for("mqtt connected in /healthz", timeout, || {
        let h = healthz(port)?;
        (h["sources"]["mqtt"]["connected"] == true).then_some(())
    });
}

/// One metric value from `/metrics` (sum over label sets whose text contains `labels`).
pub fn metric(port: u16, name: &str, labels: &str) -> f64 {
    let text = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split([' ', '{']).next() == Some(name) && (labels.is_empty() || l.contains(labels))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Publishes every `(topic, payload)` with QoS 1 and returns once the broker acknowledged
/// all of them (panics after `timeout`).
pub fn publish_all(
    broker: &str,
    client_id: &str,
    credentials: Option<(&str, &str)>,
    messages: Vec<(String, String)>,
    timeout: Duration,
) {
    let (host, port) = host_port(broker);
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(10))
        .set_inflight(100);
    if let Some((u, p)) = credentials {
        opts.set_credentials(u, p);
    }
    let (client, mut connection) = Client::new(opts, 1000);
    let n = messages.len();
    let publisher = std::thread::spawn(move || {
        for (topic, payload) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .unwrap();
        }
        client
    });
    let deadline = std::time::Instant::now() + timeout;
    let mut acked = 0;
    while acked < n {
        assert!(
            std::time::Instant::now() < deadline,
            "only {acked} of {n} publishes acknowledged after {timeout:?}"
        );
        match connection.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => panic!("publisher connection failed: {e}"),
        }
    }
    let client = publisher.join().unwrap();
    let _ = client.disconnect();
    for _ in 0..10 {
        if !matches!(
            connection.recv_timeout(Duration::from_millis(100)),
            Ok(Ok(_))
        ) {
            break;
        }
    }
}
