//! `gridwatch replay` over a simulated day: 24 h of normal operation raises no alarm, and
//! the same day with injected faults raises exactly the injected ones (and clears them).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use gridwatch::sinks::lineproto::{FieldValue, series_key, write_line};
use gridwatch_sim::model::Fleet;
use gridwatch_sim::{Fault, FleetParams, Phase, UnitKind, builtin_profiles, generate};

/// 2026-06-01T00:00:00Z.
const DAY_START_S: f64 = 1_780_272_000.0;
const STEP_S: f64 = 60.0;
const STEPS: usize = 24 * 60;

fn params() -> FleetParams {
    FleetParams {
        transformers: 4,
        meters: 8,
        meter_profile: "sdm630".into(),
        seed: 7,
        nominal_voltage: 230.0,
        rated_kva: 630.0,
    }
}

/// The daemon config describing the simulated fleet (polled every 60 s).
fn config(fleet: &Fleet) -> String {
    let mut c = String::from(
        "[daemon]\ndata_dir = \"./data\"\n\n[[modbus.endpoints]]\nname = \"sim\"\naddress = \"127.0.0.1:1502\"\n\n",
    );
    for u in fleet.units() {
        let (kind, rated) = match u.kind {
            UnitKind::Transformer => ("transformer", 630.0),
            UnitKind::Meter => ("meter", gridwatch_sim::model::METER_RATED_KVA),
        };
        c.push_str(&format!(
            "[[devices]]\nid = \"{}\"\nkind = \"{kind}\"\nsite = \"Sim\"\nfeeder = \"F1\"\nendpoint = \"sim\"\nunit_id = {}\nprofile = \"{}\"\ninterval = \"60s\"\nrated_kva = {rated}\nnominal_voltage = 230.0\n",
            u.device_id, u.unit, u.profile
        ));
        if let Some(p) = u.parent_unit {
            c.push_str(&format!("parent = \"TX-{p:04}\"\n"));
        }
        c.push('\n');
    }
    c
}

/// Line protocol as the file sink writes it: only the fields each profile maps.
struct LpWriter {
    fields: HashMap<String, BTreeSet<String>>,
    keys: HashMap<u8, (String, String)>,
    out: String,
}

impl LpWriter {
    fn new(fleet: &Fleet) -> Self {
        let fields = builtin_profiles()
            .unwrap()
            .into_iter()
            .map(|p| {
                let names = p.fields().map(|r| r.name.clone()).collect();
                (p.name.clone(), names)
            })
            .collect();
        let keys = fleet
            .units()
            .into_iter()
            .map(|u| {
                let kind = u.kind.as_str();
                let key = series_key(
                    kind,
                    &[
                        ("device", &u.device_id),
                        ("feeder", "F1"),
                        ("kind", kind),
                        ("site", "Sim"),
                    ],
                );
                (u.unit, (key, u.profile.clone()))
            })
            .collect();
        LpWriter {
            fields,
            keys,
            out: String::new(),
        }
    }

    fn write(&mut self, unit: u8, t: f64, values: &[(&'static str, f64)]) {
        let (key, profile) = &self.keys[&unit];
        let names = &self.fields[profile];
        let fields: Vec<(&str, FieldValue)> = values
            .iter()
            .filter(|(n, _)| names.contains(*n))
            .map(|(n, v)| (*n, FieldValue::F64(*v)))
            .collect();
        write_line(&mut self.out, key, &fields, (t * 1e9) as i64);
    }
}

/// Runs `gridwatch replay --json` and returns (event, device, rule, severity) per event.
fn replay(config: &str, lp: &str) -> Vec<(String, String, String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gridwatch.toml");
    let file = dir.path().join("day.lp");
    std::fs::write(&cfg, config).unwrap();
    std::fs::write(&file, lp).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["replay", "--json", "--config"])
        .arg(&cfg)
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    eprintln!("{stderr}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let a = &v["alarm"];
            (
                v["kind"].as_str().unwrap().to_string(),
                a["device"].as_str().unwrap().to_string(),
                a["rule"].as_str().unwrap().to_string(),
                a["severity"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_normal_simulated_day_raises_no_alarm() {
    let fleet = Fleet::new(params()).unwrap();
    let cfg = config(&fleet);
    let mut w = LpWriter::new(&fleet);
    for s in generate(fleet, DAY_START_S, STEP_S, STEPS) {
        w.write(s.unit, s.t, &s.values);
    }
    let events = replay(&cfg, &w.out);
    assert!(events.is_empty(), "alarms on a normal day: {events:#?}");
}

#[test]
fn a_faulted_day_raises_exactly_the_injected_faults() {
    let mut fleet = Fleet::new(params()).unwrap();
    let cfg = config(&fleet);
    let mut w = LpWriter::new(&fleet);
    let h = |h: f64| DAY_START_S + h * 3600.0;
    // (unit, fault, from, to): one fault at a time per unit, spread over the day.
    let faults: Vec<(u8, Option<Fault>, f64, f64)> = vec![
        (4, Some(Fault::Overload), h(2.0), h(3.0)),
        (8, Some(Fault::Dead), h(5.0), h(6.0)),
        (1, Some(Fault::OverTemperature), h(10.0), h(11.0)),
        (2, Some(Fault::PhaseLoss(Phase::B)), h(13.0), h(14.0)),
        (3, Some(Fault::UnderVoltage), h(15.0), h(16.0)),
        (9, Some(Fault::PhaseLoss(Phase::C)), h(20.0), h(21.0)),
        (12, Some(Fault::OverVoltage), h(22.0), h(23.0)),
    ];
    let units: Vec<u8> = fleet.units().iter().map(|u| u.unit).collect();
    for n in 0..STEPS {
        let t = DAY_START_S + STEP_S * n as f64;
        for (unit, fault, from, to) in &faults {
            let on = t >= *from && t < *to;
            fleet.set_fault(*unit, if on { *fault } else { None });
        }
        for &u in &units {
            let dead = fleet.fault(u) == Some(Fault::Dead);
            let q = fleet.sample(u, t).unwrap();
            if !dead {
                w.write(u, t, &q.0);
            }
        }
    }
    let events = replay(&cfg, &w.out);
    let raised: BTreeSet<(String, String, String)> = events
        .iter()
        .filter(|e| e.0 == "raised")
        .map(|e| (e.1.clone(), e.2.clone(), e.3.clone()))
        .collect();
    let expect = |d: &str, r: &str, s: &str| (d.to_string(), r.to_string(), s.to_string());
    let expected: BTreeSet<_> = [
        expect("TX-0004", "transformer_overload", "warning"),
        expect("MT-0008", "comm_loss", "warning"),
        expect("TX-0001", "oil_temp_high", "critical"),
        expect("TX-0001", "winding_temp_high", "warning"),
        // Located on the lost phase, as in the daemon.
        expect("TX-0002", "lv_phase_loss_b", "critical"),
        expect("TX-0003", "voltage_low", "warning"),
        expect("MT-0009", "phase_loss", "critical"),
        expect("MT-0012", "voltage_high", "warning"),
    ]
    .into_iter()
    .collect();
    assert_eq!(raised, expected, "all events: {events:#?}");
    // Exactly one raise per alarm (no chatter), no escalation, and every one cleared.
    let n_raised = events.iter().filter(|e| e.0 == "raised").count();
    assert_eq!(n_raised, expected.len(), "{events:#?}");
    let cleared: BTreeSet<_> = events
        .iter()
        .filter(|e| e.0 == "cleared")
        .map(|e| (e.1.clone(), e.2.clone(), e.3.clone()))
        .collect();
    assert_eq!(cleared, expected, "{events:#?}");
    assert!(
        events.iter().all(|e| e.0 == "raised" || e.0 == "cleared"),
        "{events:#?}"
    );
}
