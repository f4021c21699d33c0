//! `gridwatch report` over a simulated month (issue 10 acceptance): the simulator's fleet
//! model generates 30 days of 15-minute readings with injected, known events — two hours of
//! under-voltage, one hour of over-voltage, a 90-minute supply loss on a meter with four
//! customers, a 2-minute last-gasp interruption — `gridwatch replay --kpi` stores their KPIs
//! and `gridwatch report --format json` must print exactly the figures computed here by
//! hand from the definitions (GB/T 12325 band, IEEE 1366, DL/T 836 RS-1).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use gridwatch::sinks::lineproto::{FieldValue, series_key, write_line};
use gridwatch_sim::model::Fleet;
use gridwatch_sim::{Fault, FleetParams, UnitKind, builtin_profiles};

/// 2026-06-01T00:00:00Z.
const START_S: i64 = 1_780_272_000;
const STEP_S: i64 = 900;
const DAYS: i64 = 30;
const STEPS: i64 = DAYS * 86_400 / STEP_S;

fn params() -> FleetParams {
    FleetParams {
        transformers: 2,
        meters: 6,
        meter_profile: "sdm630".into(),
        seed: 11,
        nominal_voltage: 230.0,
        rated_kva: 630.0,
    }
}

fn config(fleet: &Fleet, data: &std::path::Path) -> String {
    let mut c = format!(
        "[daemon]\ndata_dir = {:?}\n\n[[modbus.endpoints]]\nname = \"sim\"\naddress = \"127.0.0.1:1502\"\n\n",
        data.display().to_string()
    );
    for u in fleet.units() {
        let (kind, rated) = match u.kind {
            UnitKind::Transformer => ("transformer", 630.0),
            UnitKind::Meter => ("meter", gridwatch_sim::model::METER_RATED_KVA),
        };
        // MT-0005 supplies a small block of four customers.
        let customers = if u.device_id == "MT-0005" { 4 } else { 1 };
        c.push_str(&format!(
            "[[devices]]\nid = \"{}\"\nkind = \"{kind}\"\nsite = \"Sim\"\nfeeder = \"F1\"\nendpoint = \"sim\"\nunit_id = {}\nprofile = \"{}\"\ninterval = \"15m\"\nrated_kva = {rated}\nnominal_voltage = 230.0\ncustomers = {customers}\n",
            u.device_id, u.unit, u.profile
        ));
        if let Some(p) = u.parent_unit {
            c.push_str(&format!("parent = \"TX-{p:04}\"\n"));
        }
        c.push('\n');
    }
    c
}

struct Lp {
    fields: HashMap<String, BTreeSet<String>>,
    keys: HashMap<u8, (String, String)>,
    lines: Vec<(i64, String)>,
}

impl Lp {
    fn new(fleet: &Fleet) -> Self {
        let fields = builtin_profiles()
            .unwrap()
            .into_iter()
            .map(|p| (p.name.clone(), p.fields().map(|r| r.name.clone()).collect()))
            .collect();
        let keys = fleet
            .units()
            .into_iter()
            .map(|u| {
                let kind = u.kind.as_str();
                let tags = [
                    ("device", u.device_id.as_str()),
                    ("feeder", "F1"),
                    ("kind", kind),
                    ("site", "Sim"),
                ];
                (u.unit, (series_key(kind, &tags), u.profile.clone()))
            })
            .collect();
        Lp {
            fields,
            keys,
            lines: Vec::new(),
        }
    }

    fn write(&mut self, unit: u8, t_s: i64, values: &[(&str, f64)]) {
        let (key, profile) = &self.keys[&unit];
        let names = &self.fields[profile];
        let fields: Vec<(&str, FieldValue)> = values
            .iter()
            .filter(|(n, _)| names.contains(*n) || *n == "last_gasp")
            .map(|(n, v)| (*n, FieldValue::F64(*v)))
            .collect();
        let mut line = String::new();
        write_line(&mut line, key, &fields, t_s * 1_000_000_000);
        self.lines.push((t_s, line));
    }

    fn text(mut self) -> String {
        self.lines.sort_by_key(|l| l.0);
        self.lines.into_iter().map(|l| l.1).collect()
    }
}

fn gridwatch(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "gridwatch {args:?}: {stderr}");
    eprintln!("{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!(
        (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        "{what}: {a} != {b}"
    );
}

#[test]
fn the_report_of_a_replayed_month_has_the_hand_computed_figures() {
    let mut fleet = Fleet::new(params()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("gridwatch.toml");
    std::fs::write(&cfg_path, config(&fleet, &dir.path().join("data"))).unwrap();
    let at = |day: i64, h: i64, m: i64| START_S + day * 86_400 + h * 3600 + m * 60;
    // (unit, fault, from, to); meter MT-000n is unit n: MT-0003 under-voltage 2 h on
    // day 4; MT-0004 over-voltage 1 h on day 9; MT-0005 supply lost 08:00–09:30 day 14.
    let faults = [
        (3u8, Fault::UnderVoltage, at(4, 10, 0), at(4, 12, 0)),
        (4, Fault::OverVoltage, at(9, 0, 0), at(9, 1, 0)),
        (5, Fault::SupplyLost, at(14, 8, 0), at(14, 9, 30)),
    ];
    // MT-0006: a last gasp at 14:00 on day 19, power back at 14:02.
    let (gasp, back) = (at(19, 14, 0), at(19, 14, 2));
    let mut lp = Lp::new(&fleet);
    let units: Vec<u8> = fleet.units().iter().map(|u| u.unit).collect();
    for n in 0..STEPS {
        let t = START_S + n * STEP_S;
        for (unit, fault, from, to) in faults {
            fleet.set_fault(unit, (t >= from && t < to).then_some(fault));
        }
        for &u in &units {
            let q = fleet.sample(u, t as f64).unwrap();
            if u == 6 && t == gasp {
                lp.write(u, t, &[("last_gasp", 1.0)]);
                let q2 = fleet.sample(u, back as f64).unwrap();
                lp.write(u, back, &q2.0);
            } else {
                lp.write(u, t, &q.0);
            }
        }
    }
    let file = dir.path().join("month.lp");
    std::fs::write(&file, lp.text()).unwrap();
    let cfg = cfg_path.to_str().unwrap();
    gridwatch(&["replay", "--kpi", "--config", cfg, file.to_str().unwrap()]);
    let json = gridwatch(&[
        "report",
        "--config",
        cfg,
        "--from",
        "2026-06-01",
        "--to",
        "2026-07-01",
        "--format",
        "json",
    ]);
    let reports: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let net = &reports[0];
    assert_eq!(net["scope"], "network");
    let f = |v: &serde_json::Value| v.as_f64().unwrap();

    // Voltage: 8 devices × 2879 intervals of 900 s (the last reading has no successor),
    // minus MT-0005's 6 interrupted intervals (08:00–09:30, readings at 08:00..09:15) and
    // MT-0006's 2 minutes after its last gasp. Under: 8 readings × 900 s; over: 4 × 900 s.
    let t_total = 8.0 * 2879.0 * 900.0 - 6.0 * 900.0 - 120.0;
    let (t_under, t_over) = (7200.0, 3600.0);
    let v = &net["voltage"];
    close(f(&v["t_total_s"]), t_total, "T_total");
    close(f(&v["t_under_s"]), t_under, "T_under");
    close(f(&v["t_over_s"]), t_over, "T_over");
    close(
        f(&v["compliance_pct"]),
        (1.0 - (t_under + t_over) / t_total) * 100.0,
        "voltage compliance",
    );
    close(f(&net["frequency"]["compliance_pct"]), 100.0, "frequency");

    // Reliability: 9 customers (5 meters × 1, MT-0005 × 4). Sustained: MT-0005, 90 min,
    // 4 customers. Momentary: MT-0006, 2 min, 1 customer. 30 days = 720 h.
    let r = &net["reliability"];
    assert_eq!(r["customers_served"], 9);
    close(f(&r["saifi"]), 4.0 / 9.0, "SAIFI");
    close(f(&r["saidi_min"]), 4.0 * 90.0 / 9.0, "SAIDI");
    close(f(&r["caidi_min"]), 90.0, "CAIDI");
    close(f(&r["maifi"]), 1.0 / 9.0, "MAIFI");
    let customer_h = 4.0 * 1.5 + 2.0 / 60.0;
    close(
        f(&r["rs1_pct"]),
        (1.0 - customer_h / 9.0 / 720.0) * 100.0,
        "RS-1",
    );
    let list = net["interruptions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:#?}");
    assert_eq!(list[0]["device"], "MT-0005");
    assert_eq!(list[0]["cause"], "voltage");
    assert_eq!(list[1]["cause"], "last_gasp");

    // Every transformer has a loading row; nothing here is over 100 %.
    let loading = net["loading"].as_array().unwrap();
    assert_eq!(loading.len(), 2, "{loading:#?}");
    assert!(loading.iter().all(|t| f(&t["hours_over_100"]) == 0.0));
    assert!(loading.iter().all(|t| f(&t["loss_of_life_h"]) > 0.0));

    // Site and feeder rows cover the same fleet: the same figures.
    for r in &reports[1..] {
        close(
            f(&r["voltage"]["t_total_s"]),
            t_total,
            "site/feeder T_total",
        );
        close(f(&r["reliability"]["saidi_min"]), 40.0, "site/feeder SAIDI");
    }
    // The Markdown report an engineer hands in says the same.
    let md = gridwatch(&[
        "report",
        "--config",
        cfg,
        "--from",
        "2026-06-01",
        "--to",
        "2026-07-01",
    ]);
    assert!(md.contains("| network | all | 9 |"), "{md}");
    assert!(
        md.contains("| MT-0005 | 2026-06-15 08:00:00 | 2026-06-15 09:30:00 | 90.0 | 4 | voltage |"),
        "{md}"
    );
}
