//! Alarms end to end against the MQTT meter simulator (issue 4 acceptance, MQTT variant of
//! `alarms_scenario.rs`): the daemon runs in-process, subscribed on the test mosquitto
//! (`GRIDWATCH_TEST_MQTT`) to the simulator's topics, with its meters declared in
//! `[[devices]]`. One fault per meter; every fault raises exactly the expected
//! (device, rule, severity) set within its deadline, the healthy control meter raises
//! nothing, and every alarm reaches `cleared` after the faults end.
#![allow(clippy::unwrap_used)]

mod common;
mod mqtt_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use gridwatch_sim::{MeterFault, MqttSimConfig, Phase};
use mqtt_common::METER_FIELDS;

/// Publish interval of the simulator and `interval` of every declared meter.
const INTERVAL_MS: u64 = 500;

fn fleet_config(meters: &[String], mqtt: &str, prefix: &str, http: u16, data: &str) -> String {
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

# Overrides of the built-in library, only where a default would make the test slow.
# energy_decreasing stays active 15 min after the register stops going backwards; 3 s here.
[[rules]]
id = "energy_decreasing"
delay_off = "3s"

# stuck_reading: 180 identical reads by default (3 min at 1 s); 16 reads = 8 s here. The
# healthy meters' voltage moves at 0.1 V resolution from one read to the next, as a real
# meter's does, so only the frozen one raises it.
[[rules]]
id = "stuck_reading"
levels = [{{ severity = "warning", raise = 16.0, clear = 2.0 }}]
"#
    );
    for id in meters {
        c.push_str(&format!(
            "\n[[devices]]\nid = \"{id}\"\nkind = \"meter\"\nsite = \"Sim\"\nfeeder = \"F1\"\nsource = \"mqtt\"\ninterval = \"{INTERVAL_MS}ms\"\nnominal_voltage = 230.0\n"
        ));
    }
    c
}

fn alarms(port: u16) -> Vec<serde_json::Value> {
    let url = format!("http://127.0.0.1:{port}/api/v1/alarms");
    match http().get(&url).send() {
        Ok(r) if r.status().is_success() => r.json().unwrap_or_default(),
        _ => Vec::new(),
    }
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
fn injected_mqtt_meter_faults_raise_exactly_the_expected_alarms_and_clear() {
    let s = services();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let prefix = unique("mqalarm");
    let sim_cfg = MqttSimConfig {
        broker: s.mqtt.clone(),
        client_id: unique("sim"),
        meters: 9,
        interval: Duration::from_millis(INTERVAL_MS),
        topic_prefix: prefix.clone(),
        id_prefix: format!("{prefix}-"),
        ..MqttSimConfig::default()
    };
    let ids: Vec<String> = (1..=sim_cfg.meters)
        .map(|n| format!("{}{n:04}", sim_cfg.id_prefix))
        .collect();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = fleet_config(
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

    // Normal operation first: nothing raised (longer than every rule delay).
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        alarms(port).is_empty(),
        "alarms in normal operation: {:#?}",
        alarms(port)
    );

    let m = |n: usize| ids[n - 1].clone();
    // Meter 8 is the healthy control.
    let faults = [
        (1, MeterFault::Outage),
        (2, MeterFault::PhaseLoss(Phase::B)),
        (3, MeterFault::Sag),
        (4, MeterFault::Swell),
        (5, MeterFault::EnergyBackwards),
        (6, MeterFault::ClockSkew(1200)),
        (7, MeterFault::NeutralLoss),
        (9, MeterFault::Stuck),
    ];
    let k = |n: usize, r: &str, s: &str| (m(n), r.to_string(), s.to_string());
    // Severities from src/detect/library.toml with the default standard (GB/T 12325:
    // +7 % / −10 %, warning only). Deadlines: rule delay + intervals + polling slack.
    let expected: BTreeMap<Key, Duration> = [
        // last_gasp message: critical, delay 0.
        (k(1, "last_gasp", "critical"), 3),
        // ... then silence: 5 missed intervals (2.5 s) → comm_loss warning; the library
        // does not suppress comm_loss by last_gasp, so both are active.
        (k(1, "comm_loss", "warning"), 6),
        // phase_loss: critical, delay_on 5 s.
        (k(2, "phase_loss", "critical"), 10),
        // Sag 0.85 pu = −15 % < −10 %: voltage_low warning, default delay 10 s.
        (k(3, "voltage_low", "warning"), 15),
        // Swell 1.11 pu = +11 % > +7 %: voltage_high warning, default delay 10 s.
        (k(4, "voltage_high", "warning"), 15),
        // energy_decreasing: warning, delay 0.
        (k(5, "energy_decreasing", "warning"), 3),
        // The meter's clock 20 min ahead of the reading time (`clock` vs `ts`): beyond
        // the 900 s critical level of clock_drift, delay 0. The readings themselves are
        // stamped by the head-end, so they keep flowing (no comm_loss).
        (k(6, "clock_drift", "critical"), 3),
        // neutral_loss: critical, delay_on 5 s; it suppresses voltage_high/low and
        // voltage_unbalance on the same meter.
        (k(7, "neutral_loss", "critical"), 10),
        // Frozen values: 16 identical reads at 0.5 s, delay 0.
        (k(9, "stuck_reading", "warning"), 12),
    ]
    .into_iter()
    .map(|(k, s)| (k, Duration::from_secs(s)))
    .collect();

    let start = Instant::now();
    for (n, f) in faults {
        assert!(sim.set_fault(&m(n), f));
    }
    let mut seen_at: BTreeMap<Key, Duration> = BTreeMap::new();
    let mut extra: BTreeSet<Key> = BTreeSet::new();
    let check = |seen_at: &mut BTreeMap<Key, Duration>, extra: &mut BTreeSet<Key>| {
        for a in alarms(port) {
            let key = key(&a);
            if expected.contains_key(&key) {
                seen_at.entry(key).or_insert(start.elapsed());
            } else {
                extra.insert(key);
            }
        }
    };
    while start.elapsed() < Duration::from_secs(20) && seen_at.len() < expected.len() {
        check(&mut seen_at, &mut extra);
        std::thread::sleep(Duration::from_millis(200));
    }
    // A few more seconds: late extras (e.g. a second severity) would show up now.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(5) {
        check(&mut seen_at, &mut extra);
        std::thread::sleep(Duration::from_millis(200));
    }
    let list = alarms(port);
    eprintln!("raised at: {seen_at:#?}");
    assert!(extra.is_empty(), "unexpected alarms {extra:#?}\n{list:#?}");
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
    assert!(
        list.iter().all(|a| a["device"] != m(8).as_str()),
        "control meter alarmed"
    );
    let low = list.iter().find(|a| a["rule"] == "voltage_low").unwrap();
    assert_eq!(low["detail"]["limit"], -10.0);
    assert!(low["detail"]["value"].as_f64().unwrap() < -10.0, "{low}");

    // The faults end: every alarm clears (stays listed as cleared until acknowledged).
    let cleared_start = Instant::now();
    for (n, _) in faults {
        assert!(sim.clear_fault(&m(n)));
    }
    loop {
        let l = alarms(port);
        if l.len() == expected.len() && l.iter().all(|a| a["state"] == "cleared") {
            break;
        }
        let open: Vec<(Key, String)> = l
            .iter()
            .filter(|a| a["state"] != "cleared")
            .map(|a| (key(a), a["state"].as_str().unwrap_or("").to_string()))
            .collect();
        let listed: BTreeSet<Key> = l.iter().map(key).collect();
        assert!(
            cleared_start.elapsed() < Duration::from_secs(30),
            "not cleared 30 s after the faults ended: open {open:#?}; listed but not \
             expected {:#?}; expected but not listed {:#?}",
            listed
                .iter()
                .filter(|k| !expected.contains_key(*k))
                .collect::<Vec<_>>(),
            expected
                .keys()
                .filter(|k| !listed.contains(*k))
                .collect::<Vec<_>>(),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("all cleared after {:?}", cleared_start.elapsed());
    let after: BTreeSet<Key> = alarms(port).iter().map(key).collect();
    assert_eq!(after, expected.keys().cloned().collect::<BTreeSet<_>>());

    daemon.stop(&rt);
    rt.block_on(sim.shutdown(Duration::from_secs(5)));
}
