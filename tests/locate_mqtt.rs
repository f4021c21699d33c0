//! Fault localisation end to end (issue 10): simulated MQTT meters under three transformers
//! on two feeders, a real mosquitto, a real subscriber on the crew alert topics and the
//! outage topics. Tripping a transformer (its meters send last gasps and fall silent)
//! gives exactly one located alarm on that transformer — no per-meter alert reaches the
//! crews — and a customer outage notice listing its meters; tripping a whole feeder gives
//! one alarm on the feeder; two meters losing the same phase give one alarm naming the
//! transformer's phase; restoration clears them and says so; planned work is announced.
#![allow(clippy::unwrap_used)]

mod common;
mod mqtt_common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gridwatch_sim::{MeterFault, MqttSimConfig};
use mqtt_common::METER_FIELDS;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

const INTERVAL_MS: u64 = 500;

/// Meters 1–3 under T1 and 4–6 under T2 (feeder F1), 7–8 under T3 (feeder F2).
fn parent(n: usize) -> &'static str {
    match n {
        1..=3 => "T1",
        4..=6 => "T2",
        _ => "T3",
    }
}

fn config(ids: &[String], mqtt: &str, prefix: &str, http: u16, data: &str) -> String {
    let mut c = format!(
        r#"
[api]
auth = "off"

[daemon]
data_dir = "{data}"
http_listen = "127.0.0.1:{http}"

[mqtt]
broker = "{mqtt}"
client_id = "{prefix}-gw"
clean_session = true
reconnect_min = "100ms"
reconnect_max = "1s"

[[mqtt.subscriptions]]
pattern = "{prefix}/{{device}}/telemetry"
format = "json"
kind = "meter"
expected_interval = "{INTERVAL_MS}ms"
timestamp = {{ path = "ts", format = "rfc3339" }}
{METER_FIELDS}

[notify.mqtt]
broker = "{mqtt}"
topic_prefix = "{prefix}/alerts"
outage_prefix = "{prefix}/outages"
client_id = "{prefix}-alerts"

[locate]
settle = "3s"
planned_notice_ahead = "90m"
planned_check = "500ms"
"#
    );
    // The transformers are only topology here (no monitor reports): a long interval keeps
    // them from looking silent.
    for (tx, feeder) in [("T1", "F1"), ("T2", "F1"), ("T3", "F2")] {
        c.push_str(&format!(
            "\n[[devices]]\nid = \"{prefix}-{tx}\"\nkind = \"transformer\"\nsite = \"Sim\"\nfeeder = \"{feeder}\"\nsource = \"mqtt\"\ninterval = \"1h\"\nlocation = \"kiosk {tx}\"\n"
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        let n = i + 1;
        let tx = parent(n);
        let feeder = if tx == "T3" { "F2" } else { "F1" };
        c.push_str(&format!(
            "\n[[devices]]\nid = \"{id}\"\nkind = \"meter\"\nsite = \"Sim\"\nfeeder = \"{feeder}\"\nsource = \"mqtt\"\ninterval = \"{INTERVAL_MS}ms\"\nnominal_voltage = 230.0\nparent = \"{prefix}-{tx}\"\ncustomers = {n}\n"
        ));
    }
    c
}

/// Every message on `filter`, (topic, payload), collected in the background.
fn subscribe(broker: &str, filter: &str) -> Arc<Mutex<Vec<(String, String)>>> {
    let (host, port) = host_port(broker);
    let mut opts = MqttOptions::new(unique("locsub"), host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut conn) = Client::new(opts, 100);
    client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = Arc::clone(&got);
    std::thread::spawn(move || {
        let _keep = client;
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => g.lock().unwrap().push((
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).to_string(),
                )),
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    got
}

fn active_alarms(port: u16) -> Vec<(String, String)> {
    let list: Vec<serde_json::Value> = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/alarms"))
        .send()
        .ok()
        .and_then(|r| r.json().ok())
        .unwrap_or_default();
    list.iter()
        .filter(|a| a["state"] == "active")
        .map(|a| {
            (
                a["device"].as_str().unwrap_or("").to_string(),
                a["rule"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn notices(got: &Arc<Mutex<Vec<(String, String)>>>) -> Vec<(String, serde_json::Value)> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(t, p)| (t.clone(), serde_json::from_str(p).unwrap()))
        .collect()
}

#[test]
fn a_tripped_transformer_and_a_tripped_feeder_are_each_one_located_alarm() {
    let s = services();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = unique("locate");
    let sim_cfg = MqttSimConfig {
        broker: s.mqtt.clone(),
        client_id: unique("locsim"),
        meters: 8,
        interval: Duration::from_millis(INTERVAL_MS),
        topic_prefix: prefix.clone(),
        id_prefix: format!("{prefix}-M"),
        ..MqttSimConfig::default()
    };
    let ids: Vec<String> = (1..=8).map(|n| format!("{prefix}-M{n:04}")).collect();
    let alerts = subscribe(&s.mqtt, &format!("{prefix}/alerts/#"));
    let outages = subscribe(&s.mqtt, &format!("{prefix}/outages/#"));
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config(
        &ids,
        &s.mqtt,
        &prefix,
        port,
        &data.path().display().to_string(),
    );
    let daemon = InProcess::start(&rt, &text);
    mqtt_common::wait_mqtt_connected(port, Duration::from_secs(20));
    let sim = rt.block_on(async {
        let sim = gridwatch_sim::start_mqtt(sim_cfg.clone()).unwrap();
        assert!(sim.wait_connected(Duration::from_secs(10)).await);
        sim
    });
    std::thread::sleep(Duration::from_secs(4));
    assert!(active_alarms(port).is_empty(), "{:?}", active_alarms(port));

    // 1. T1 trips: meters 1–3 send last gasps and fall silent.
    let t1 = format!("{prefix}-T1");
    let start = Instant::now();
    for m in &ids[0..3] {
        assert!(sim.set_fault(m, MeterFault::Outage));
    }
    let located = wait_for("the located T1 alarm", Duration::from_secs(20), || {
        let a = active_alarms(port);
        a.contains(&(t1.clone(), "outage_transformer".into()))
            .then_some(a)
    });
    eprintln!("located after {:?}", start.elapsed());
    // Let any per-meter alarm that would escape show up (comm loss comes 2.5 s later).
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        active_alarms(port),
        [(t1.clone(), "outage_transformer".to_string())],
        "first seen: {located:?}"
    );
    let crew: BTreeSet<String> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(
        crew,
        BTreeSet::from([format!("{prefix}/alerts/Sim/{t1}/outage_transformer")]),
        "only the located alarm reaches the crew topic"
    );
    let alert: serde_json::Value = serde_json::from_str(&alerts.lock().unwrap()[0].1).unwrap();
    assert_eq!(alert["value"], 3.0, "{alert}");
    assert_eq!(alert["location"], "kiosk T1", "{alert}");
    let n = notices(&outages);
    let (topic, first) = &n[0];
    assert_eq!(topic, &format!("{prefix}/outages/Sim/F1"));
    assert_eq!(first["event"], "started");
    assert_eq!(first["outage"]["element"], t1.as_str());
    let meters: BTreeSet<&str> = first["outage"]["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["device"].as_str().unwrap())
        .collect();
    assert_eq!(meters, ids[0..3].iter().map(String::as_str).collect());
    assert_eq!(first["outage"]["customers"], 1 + 2 + 3);
    // The same outage, children included, on the API.
    let board: serde_json::Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/outages"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(board["active"][0]["element"], t1.as_str(), "{board}");
    assert!(
        board["active"][0]["meters"][0]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "last_gasp"),
        "{board}"
    );

    // Restoration: power back on all three → the alarm clears, the notice says restored.
    for m in &ids[0..3] {
        assert!(sim.clear_fault(m));
    }
    wait_for("T1 restored", Duration::from_secs(20), || {
        notices(&outages)
            .iter()
            .any(|(_, n)| n["event"] == "restored" && n["outage"]["element"] == t1.as_str())
            .then_some(())
    });
    wait_for("no active alarm", Duration::from_secs(10), || {
        active_alarms(port).is_empty().then_some(())
    });

    // 2. The whole feeder F1 trips (meters 1–6): one alarm on the feeder.
    alerts.lock().unwrap().clear();
    let feeder = "Sim/F1".to_string();
    for m in &ids[0..6] {
        assert!(sim.set_fault(m, MeterFault::Outage));
    }
    wait_for("the located feeder alarm", Duration::from_secs(20), || {
        active_alarms(port)
            .contains(&(feeder.clone(), "outage_feeder".into()))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        active_alarms(port),
        [(feeder.clone(), "outage_feeder".to_string())]
    );
    let crew: Vec<String> = alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(t, _)| t.clone())
        .collect();
    assert!(
        crew.iter().all(|t| t.ends_with("/outage_feeder")),
        "only the feeder alarm is raised to crews: {crew:?}"
    );
    let last = notices(&outages).pop().unwrap().1;
    assert_eq!(last["outage"]["element"], feeder.as_str());
    assert_eq!(last["outage"]["meters"].as_array().unwrap().len(), 6);
    assert_eq!(last["outage"]["customers"], 21);
    for m in &ids[0..6] {
        assert!(sim.clear_fault(m));
    }
    wait_for("feeder restored", Duration::from_secs(20), || {
        active_alarms(port).is_empty().then_some(())
    });

    // 3. Two of T2's meters lose phase B (an LV fuse; T2 has no monitor of its own): one
    // alarm on T2 naming the phase, not two meter alarms.
    let t2 = format!("{prefix}-T2");
    for m in &ids[3..5] {
        assert!(sim.set_fault(m, MeterFault::PhaseLoss(gridwatch_sim::Phase::B)));
    }
    wait_for("the located phase alarm", Duration::from_secs(25), || {
        active_alarms(port)
            .contains(&(t2.clone(), "lv_phase_loss_b".into()))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        active_alarms(port),
        [(t2.clone(), "lv_phase_loss_b".to_string())]
    );
    for m in &ids[3..5] {
        assert!(sim.clear_fault(m));
    }
    wait_for("phase restored", Duration::from_secs(20), || {
        active_alarms(port).is_empty().then_some(())
    });

    // 4. Planned work on T3 (feeder F2) in one hour: its customers get a notice now (90 min
    // ahead); work in three hours gets none yet; the API lists the planned outage.
    let at = |mins: u64| {
        let t = std::time::SystemTime::now() + Duration::from_secs(mins * 60);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    let t3 = format!("{prefix}-T3");
    for (title, start, end) in [
        ("replace T3 LV board", 60, 180),
        ("paint T3 kiosk", 180, 240),
    ] {
        let status = http()
            .post(format!("http://127.0.0.1:{port}/api/v1/work-orders"))
            .json(&serde_json::json!({
                "device": t3, "title": title,
                "scheduled_start": at(start), "scheduled_end": at(end),
            }))
            .send()
            .unwrap()
            .status();
        assert!(status.is_success(), "{status}");
    }
    let planned = wait_for("the planned notice", Duration::from_secs(10), || {
        notices(&outages)
            .into_iter()
            .find(|(_, n)| n["event"] == "planned")
    });
    assert_eq!(planned.0, format!("{prefix}/outages/Sim/F2"));
    let o = &planned.1["outage"];
    assert_eq!(o["element"], t3.as_str());
    assert_eq!(o["action"], "replace T3 LV board");
    assert_eq!(o["customers"], 7 + 8);
    assert_eq!(o["meters"].as_array().unwrap().len(), 2);
    std::thread::sleep(Duration::from_secs(2));
    let n_planned = notices(&outages)
        .iter()
        .filter(|(_, n)| n["event"] == "planned")
        .count();
    assert_eq!(
        n_planned, 1,
        "one notice, once; the later work is not due yet"
    );
    let board: serde_json::Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/outages"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(board["planned"].as_array().unwrap().len(), 1, "{board}");
    assert!(
        board["planned"][0]["planned_work_order"].is_number(),
        "{board}"
    );
    // A window must be a window.
    let bad = http()
        .post(format!("http://127.0.0.1:{port}/api/v1/work-orders"))
        .json(&serde_json::json!({
            "device": t3, "title": "x", "scheduled_start": at(60), "scheduled_end": at(30),
        }))
        .send()
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    daemon.stop(&rt);
    rt.block_on(sim.shutdown(Duration::from_secs(5)));
}
