//! KPIs in the running daemon (issue 10): readings from the Modbus simulator, an injected
//! under-voltage and a short supply loss; the `kpi` points the daemon writes to a real
//! VictoriaMetrics equal what `GET /api/v1/kpi` answers, and both show the injected events.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::sim::{Sim, fleet_config};
use common::*;
use gridwatch_sim::Fault;

#[test]
fn kpi_points_in_the_store_equal_the_api_figures() {
    let s = services();
    let sim = Sim::start(1, 3);
    let tag = unique("kpi");
    let db = unique("gw_kpi");
    let data = tempfile::tempdir().unwrap();
    let storage = format!(
        "[storage.influx]\nurl = \"{}\"\napi = \"v1\"\ndb = \"{db}\"\nflush_interval = \"200ms\"\n\n[kpi]\nwrite_interval = \"1s\"\n",
        s.vm_url
    );
    let config = fleet_config(&sim, &tag, "500ms", &storage, data.path().to_str().unwrap())
        .replace(
            "interval = \"500ms\"\n",
            "interval = \"500ms\"\nnominal_voltage = 230.0\n",
        );
    let port = http_port_of(&config);
    let dir = Daemon::temp_dir();
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, &config).unwrap();
    let mut daemon = Daemon::spawn_in(dir, &["run", "--config", path.to_str().unwrap()], &[]);
    daemon.wait_for_log("gridwatch running", Duration::from_secs(20));

    // Normal, then 3 s of under-voltage on a meter, then 2 s of supply loss on another.
    std::thread::sleep(Duration::from_secs(3));
    let units = sim.h().units();
    let meters: Vec<u8> = units
        .iter()
        .filter(|u| u.kind == gridwatch_sim::UnitKind::Meter)
        .map(|u| u.unit)
        .collect();
    sim.h().set_fault(meters[0], Fault::UnderVoltage);
    std::thread::sleep(Duration::from_secs(3));
    sim.h().clear_fault(meters[0]);
    sim.h().set_fault(meters[1], Fault::SupplyLost);
    std::thread::sleep(Duration::from_secs(2));
    sim.h().clear_fault(meters[1]);
    std::thread::sleep(Duration::from_secs(2));
    // Silence: from now on the figures stand still (time only counts with readings), so
    // the next `kpi` points and the API must agree exactly.
    sim.silence();
    std::thread::sleep(Duration::from_secs(4));

    let feeder = "Substation 7/F07, north";
    let api: serde_json::Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/kpi"))
        .query(&[("scope", "feeder"), ("id", feeder)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    eprintln!("{api:#}");
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let v = &api["voltage"];
    assert!(f(&v["t_total_s"]) > 20.0, "{api}");
    // About 3 s under (polls at 500 ms); not a sample count.
    let under = f(&v["t_under_s"]);
    assert!((2.0..=4.5).contains(&under), "under {under}: {api}");
    assert_eq!(f(&v["t_over_s"]), 0.0);
    let rel = &api["reliability"];
    assert_eq!(rel["customers_served"], 3, "{api}");
    assert_eq!(rel["momentary_events"], 1, "{api}");
    assert_eq!(rel["sustained_events"], 0, "{api}");
    let outage = &api["interruptions"][0];
    assert_eq!(outage["cause"], "voltage");
    let secs = (outage["end"].as_i64().unwrap() - outage["start"].as_i64().unwrap()) as f64 / 1e9;
    assert!((1.0..=3.5).contains(&secs), "{outage}");

    // The store holds the same figures, as the `kpi` measurement of this feeder.
    let latest = |field: &str| -> f64 {
        let series = vm_export_wait(
            &s.vm_url,
            &format!("{{__name__=\"kpi_{field}\",db=\"{db}\",scope=\"feeder\"}}"),
            1,
            Duration::from_secs(20),
        );
        let s = series
            .iter()
            .find(|s| s.labels.get("id").map(String::as_str) == Some(feeder))
            .unwrap_or_else(|| panic!("no kpi_{field} for {feeder}: {series:?}"));
        *s.values.last().unwrap()
    };
    for (field, api_value) in [
        ("voltage_t_total_s", f(&v["t_total_s"])),
        ("voltage_t_under_s", under),
        ("voltage_compliance_pct", f(&v["compliance_pct"])),
        ("maifi", f(&rel["maifi"])),
        ("customers_served", 3.0),
    ] {
        let stored = latest(field);
        assert!(
            (stored - api_value).abs() <= 1e-9 * api_value.abs().max(1.0),
            "{field}: store {stored}, API {api_value}"
        );
    }
    // RS-1 depends on the period (today so far): ask for the period that ended when the
    // last point was written (ms in the store, so not to the last digit).
    let rs1 = vm_export_wait(
        &s.vm_url,
        &format!("{{__name__=\"kpi_rs1_pct\",db=\"{db}\",scope=\"feeder\"}}"),
        1,
        Duration::from_secs(20),
    );
    let rs1 = rs1
        .iter()
        .find(|s| s.labels.get("id").map(String::as_str) == Some(feeder))
        .unwrap();
    let (at_ms, stored) = (
        *rs1.timestamps_ms.last().unwrap(),
        *rs1.values.last().unwrap(),
    );
    let to = chrono_like(at_ms);
    let api_then: serde_json::Value = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/kpi"))
        .query(&[("scope", "feeder"), ("id", feeder), ("to", to.as_str())])
        .send()
        .unwrap()
        .json()
        .unwrap();
    let expect = f(&api_then["reliability"]["rs1_pct"]);
    assert!(stored < 100.0, "an interruption lowers RS-1: {stored}");
    assert!(
        (stored - expect).abs() < 1e-6,
        "rs1: store {stored}, API {expect}"
    );
    // Unknown scope ids are a 404 with the reason, not an empty report.
    let resp = http()
        .get(format!("http://127.0.0.1:{port}/api/v1/kpi"))
        .query(&[("scope", "feeder"), ("id", "nope")])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(daemon.terminate().success());
}

/// RFC 3339 (UTC, ms) of a Unix time in ms.
fn chrono_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap());
    let base = humantime::format_rfc3339_seconds(t).to_string();
    format!("{}.{:03}Z", base.trim_end_matches('Z'), ms.rem_euclid(1000))
}
