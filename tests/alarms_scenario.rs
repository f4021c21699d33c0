//! Alarms end to end against the Modbus simulator: every injected fault raises exactly the
//! expected alarm(s) with the right severity within its deadline and clears after the fault
//! ends; the alert reaches a real MQTT subscriber on mosquitto (`GRIDWATCH_TEST_MQTT`) as a
//! retained message (emptied on clear) and a test HTTP server as a signed webhook; the
//! `alarm` measurement reaches the telemetry file; the API acknowledges.
//!
//! The fault injector is the only Modbus-specific part: an MQTT-meter variant only needs a
//! `FaultInjector` for the MQTT simulator and meters in the fleet config.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gridwatch_sim::{Fault, ModbusSimConfig, ModbusSimHandle, Phase, UnitInfo, UnitKind};

const SECRET: &str = "crew-secret";

/// Something that can inject and clear faults in simulated units.
trait FaultInjector {
    fn units(&self) -> Vec<UnitInfo>;
    fn set(&self, unit: u8, fault: Fault);
    fn clear(&self, unit: u8);
}

impl FaultInjector for ModbusSimHandle {
    fn units(&self) -> Vec<UnitInfo> {
        ModbusSimHandle::units(self)
    }
    fn set(&self, unit: u8, fault: Fault) {
        self.set_fault(unit, fault)
    }
    fn clear(&self, unit: u8) {
        self.clear_fault(unit)
    }
}

fn fleet_config(
    units: &[UnitInfo],
    modbus: &str,
    http: u16,
    data: &str,
    mqtt: &str,
    prefix: &str,
    hook: &str,
) -> String {
    let mut c = format!(
        r#"
[api]
auth = "off"

[daemon]
data_dir = "{data}"
http_listen = "127.0.0.1:{http}"

[notify.mqtt]
broker = "{mqtt}"
topic_prefix = "{prefix}"
client_id = "{prefix}"

[[notify.webhooks]]
name = "north-crew"
url = "{hook}"
secret = "{SECRET}"
timeout = "2s"
crews = ["north"]

[[crews]]
name = "north"
feeders = ["F1"]

[[crews]]
name = "standby"
min_severity = "critical"

[[modbus.endpoints]]
name = "sim"
address = "{modbus}"
max_in_flight = 4
timeout = "300ms"
"#
    );
    for u in units {
        let (kind, rated) = match u.kind {
            UnitKind::Transformer => ("transformer", 630.0),
            UnitKind::Meter => ("meter", gridwatch_sim::model::METER_RATED_KVA),
        };
        c.push_str(&format!(
            "[[devices]]\nid = \"{}\"\nkind = \"{kind}\"\nsite = \"Sim\"\nfeeder = \"F1\"\nendpoint = \"sim\"\nunit_id = {}\nprofile = \"{}\"\ninterval = \"1s\"\nrated_kva = {rated}\nnominal_voltage = 230.0\nlocation = \"pole {}\"\n",
            u.device_id, u.unit, u.profile, u.unit
        ));
        if let Some(p) = u.parent_unit {
            c.push_str(&format!("parent = \"TX-{p:04}\"\n"));
        }
    }
    c
}

/// A one-request-per-connection HTTP server recording (body JSON, signature valid).
/// Webhook bodies received, with whether their signature was valid.
type Hooks = Arc<Mutex<Vec<(serde_json::Value, bool)>>>;
/// MQTT messages received: (topic, payload).
type Msgs = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

fn webhook_server() -> (String, Hooks) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            let mut sig = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    match k.to_ascii_lowercase().as_str() {
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "x-gridwatch-signature" => sig = v.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let valid = sig == gridwatch::notify::webhook::sign(SECRET.as_bytes(), &body);
            if let Ok(v) = serde_json::from_slice(&body) {
                store.lock().unwrap().push((v, valid));
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// Retained/live MQTT messages under `prefix/#`: (topic, payload, retain).
fn mqtt_subscriber(addr: &str, prefix: &str) -> Msgs {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let (host, port) = host_port(addr);
    let mut o = MqttOptions::new(unique("alarm_sub"), host, port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(o, 100);
    client
        .subscribe(format!("{prefix}/#"), QoS::AtLeastOnce)
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&got);
    std::thread::spawn(move || {
        let _client = client;
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    store
                        .lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    got
}

fn alarms(http: u16) -> Vec<serde_json::Value> {
    let url = format!("http://127.0.0.1:{http}/api/v1/alarms");
    match http_client().get(&url).send() {
        Ok(r) if r.status().is_success() => r.json().unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn http_client() -> reqwest::blocking::Client {
    http()
}

type Key = (String, String, String);

fn key(a: &serde_json::Value) -> Key {
    (
        a["device"].as_str().unwrap_or("").to_string(),
        a["rule"].as_str().unwrap_or("").to_string(),
        a["severity"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn injected_faults_raise_exactly_the_expected_alarms_and_clear() {
    let s = services();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt
        .block_on(gridwatch_sim::start_modbus(ModbusSimConfig {
            transformers: 4,
            meters: 8,
            seed: 7,
            ..ModbusSimConfig::default()
        }))
        .unwrap();
    let units = FaultInjector::units(&sim);
    let data = tempfile::tempdir().unwrap();
    let http = free_port();
    let prefix = unique("gw_alerts");
    let (hook_url, hooks) = webhook_server();
    let mqtt_msgs = mqtt_subscriber(&s.mqtt, &prefix);
    let text = fleet_config(
        &units,
        &sim.local_addr().to_string(),
        http,
        &data.path().display().to_string(),
        &s.mqtt,
        &prefix,
        &hook_url,
    );
    let daemon = InProcess::start(&rt, &text);

    // Normal operation first: nothing raised.
    wait_for("api", Duration::from_secs(10), || {
        http_client()
            .get(format!("http://127.0.0.1:{http}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
    });
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        alarms(http).is_empty(),
        "alarms in normal operation: {:#?}",
        alarms(http)
    );

    // (unit, fault) — transformer voltage faults reach the meters below them; their alarms
    // stay on the transformer.
    let faults = [
        (1, Fault::OverTemperature),
        (2, Fault::PhaseLoss(Phase::B)),
        (3, Fault::UnderVoltage),
        (4, Fault::Overload),
        (5, Fault::Dead),
        (9, Fault::PhaseLoss(Phase::C)),
        (10, Fault::Exception(4)),
        (11, Fault::OverTemperature), // a meter has no oil: no alarm
        (12, Fault::OverVoltage),
    ];
    let k = |d: &str, r: &str, s: &str| (d.to_string(), r.to_string(), s.to_string());
    // Deadlines: the rule delays (10 s, phase loss 5 s, overload 60 s, comm loss 5
    // intervals) plus polling slack; a single meter's comm loss or phase loss also waits out
    // fault localisation's settle window (20 s by default: are its neighbours affected too?).
    let expected: BTreeMap<Key, Duration> = [
        (k("TX-0001", "oil_temp_high", "critical"), 20),
        (k("TX-0001", "winding_temp_high", "warning"), 20),
        // The transformer's phase loss, located on the phase (fault localisation).
        (k("TX-0002", "lv_phase_loss_b", "critical"), 15),
        (k("TX-0003", "voltage_low", "warning"), 20),
        (k("TX-0004", "transformer_overload", "warning"), 75),
        (k("MT-0005", "comm_loss", "warning"), 35),
        // A meter's own phase loss also waits out the settle window (same phase elsewhere?).
        (k("MT-0009", "phase_loss", "critical"), 35),
        (k("MT-0010", "comm_loss", "warning"), 35),
        (k("MT-0012", "voltage_high", "warning"), 20),
    ]
    .into_iter()
    .map(|(k, s)| (k, Duration::from_secs(s)))
    .collect();
    let start = Instant::now();
    for (u, f) in faults {
        sim.set(u, f);
    }
    let mut seen_at: BTreeMap<Key, Duration> = BTreeMap::new();
    let mut extra: BTreeSet<Key> = BTreeSet::new();
    while start.elapsed() < Duration::from_secs(80) && seen_at.len() < expected.len() {
        for a in alarms(http) {
            let key = key(&a);
            if expected.contains_key(&key) {
                seen_at.entry(key).or_insert(start.elapsed());
            } else {
                extra.insert(key);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let list = alarms(http);
    for a in &list {
        let key = key(a);
        if !expected.contains_key(&key) {
            extra.insert(key);
        }
    }
    assert!(extra.is_empty(), "unexpected alarms {extra:#?}");
    for (key, deadline) in &expected {
        let at = seen_at
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} not raised; alarms: {list:#?}"));
        assert!(
            at <= deadline,
            "{key:?} raised after {at:?}, deadline {deadline:?}"
        );
    }
    assert_eq!(list.len(), expected.len(), "one alarm per key: {list:#?}");
    let oil = list.iter().find(|a| a["rule"] == "oil_temp_high").unwrap();
    assert_eq!(oil["detail"]["location"], "pole 1");
    assert_eq!(oil["detail"]["limit"], 95.0);

    // MQTT: one retained state per alarm topic with what the crew needs.
    let topic = |d: &str, r: &str| format!("{prefix}/Sim/{d}/{r}");
    wait_for("mqtt alerts", Duration::from_secs(10), || {
        let msgs = mqtt_msgs.lock().unwrap();
        expected
            .keys()
            .all(|(d, r, _)| msgs.iter().any(|(t, p)| *t == topic(d, r) && !p.is_empty()))
            .then_some(())
    });
    {
        let msgs = mqtt_msgs.lock().unwrap();
        let (_, p) = msgs
            .iter()
            .find(|(t, _)| *t == topic("TX-0002", "lv_phase_loss_b"))
            .unwrap();
        let m: serde_json::Value = serde_json::from_slice(p).unwrap();
        assert_eq!(m["severity"], "critical");
        assert_eq!(m["feeder"], "F1");
        assert_eq!(m["location"], "pole 2");
        assert!(
            m["action"].as_str().unwrap().contains("fuse phase B"),
            "{m}"
        );
        assert_eq!(m["crews"], serde_json::json!(["north", "standby"]));
        assert!(m["reading_ts_ns"].as_i64().unwrap() <= m["published_ts_ns"].as_i64().unwrap());
        assert!(
            msgs.iter()
                .all(|(t, _)| expected.keys().any(|(d, r, _)| *t == topic(d, r))),
            "{:?}",
            msgs.iter().map(|m| &m.0).collect::<Vec<_>>()
        );
    }
    // Webhook: signed, one `raised` per alarm.
    wait_for("webhooks", Duration::from_secs(10), || {
        let got = hooks.lock().unwrap();
        (got.iter().filter(|(v, _)| v["event"] == "raised").count() >= expected.len()).then_some(())
    });
    assert!(
        hooks.lock().unwrap().iter().all(|(_, valid)| *valid),
        "bad signature"
    );

    // The fault ends: every alarm clears (stays listed as cleared until acknowledged).
    let cleared_start = Instant::now();
    for (u, _) in faults {
        sim.clear(u);
    }
    wait_for("all alarms cleared", Duration::from_secs(40), || {
        let l = alarms(http);
        (l.len() == expected.len() && l.iter().all(|a| a["state"] == "cleared")).then_some(())
    });
    eprintln!("cleared after {:?}", cleared_start.elapsed());
    // Retained topics emptied.
    wait_for("empty retained messages", Duration::from_secs(10), || {
        let msgs = mqtt_msgs.lock().unwrap();
        expected
            .keys()
            .all(|(d, r, _)| {
                msgs.iter()
                    .rev()
                    .find(|(t, _)| *t == topic(d, r))
                    .is_some_and(|(_, p)| p.is_empty())
            })
            .then_some(())
    });
    wait_for("cleared webhooks", Duration::from_secs(10), || {
        let got = hooks.lock().unwrap();
        (got.iter().filter(|(v, _)| v["event"] == "cleared").count() >= expected.len())
            .then_some(())
    });

    // Acknowledge one: it leaves the list.
    let id = alarms(http)[0]["id"].as_u64().unwrap();
    let r = http_client()
        .post(format!("http://127.0.0.1:{http}/api/v1/alarms/{id}/ack"))
        .json(&serde_json::json!({ "comment": "checked on site" }))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(alarms(http).len(), expected.len() - 1);
    let r = http_client()
        .post(format!("http://127.0.0.1:{http}/api/v1/alarms/999999/ack"))
        .json(&serde_json::json!({ "comment": "" }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    daemon.stop(&rt);
    // Alarm raises and clears reached the telemetry store (file sink here).
    let mut lp = String::new();
    for e in std::fs::read_dir(data.path().join("telemetry")).unwrap() {
        lp.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
    }
    let alarm_lines: Vec<&str> = lp.lines().filter(|l| l.starts_with("alarm,")).collect();
    assert!(
        alarm_lines
            .iter()
            .any(|l| l.contains("rule=phase_loss") && l.contains("event=\"raised\"")),
        "{alarm_lines:#?}"
    );
    assert!(
        alarm_lines.iter().any(|l| l.contains("event=\"cleared\"")),
        "{alarm_lines:#?}"
    );
    // The live state is in the event database, not in a side file.
    assert!(!data.path().join("alarms.json").exists());
    let db = rusqlite::Connection::open(data.path().join(gridwatch::eventlog::DB_FILE)).unwrap();
    let saved: i64 = db
        .query_row("SELECT count(*) FROM alarm_state", [], |r| r.get(0))
        .unwrap();
    assert!(saved > 0, "alarm state saved in the event database");
    rt.block_on(sim.shutdown());
}
