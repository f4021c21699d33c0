//! The Grafana dashboards parse, and every measurement and field a panel queries is one that
//! gridwatch writes. What gridwatch writes is derived from the code, not from a list kept by
//! hand: the demo fleet's profiles compiled as the daemon compiles them, the MQTT field
//! mappings, and a real `alarm` line from the alarm encoder.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gridwatch::alarms::service::write_alarm_line;
use gridwatch::alarms::{Alarm, AlarmEvent, EventKind};
use gridwatch::config::{self, profile::BUILTIN_PROFILES};
use gridwatch::sources::modbus::compiled::CompiledProfile;
use gridwatch::sources::modbus::planner::PlanLimits;

type Written = BTreeMap<String, BTreeSet<String>>;

/// Tag keys gridwatch writes (never fields).
const TAGS: &[&str] = &["device", "kind", "site", "feeder", "rule", "severity"];

fn written() -> Written {
    let mut out = Written::new();
    let demo = config::load_str(
        gridwatch::demo::DEMO_CONFIG,
        "demo.toml",
        Path::new("."),
        &BUILTIN_PROFILES,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for d in &demo.config.devices {
        let fields = out.entry(d.kind.clone()).or_default();
        if let Some(name) = &d.profile {
            let p = CompiledProfile::compile(name, &demo.profiles[name], &PlanLimits::default())
                .unwrap();
            fields.extend(p.schema.fields.iter().map(|f| f.name.clone()));
        }
    }
    if let Some(mqtt) = &demo.config.mqtt {
        for s in &mqtt.subscriptions {
            let fields = out.entry(s.kind.clone()).or_default();
            fields.extend(s.fields.iter().map(|f| f.name.clone()));
        }
    }
    let alarm: Alarm = serde_json::from_value(serde_json::json!({
        "id": 1, "device": "TX-1", "kind": "transformer", "site": "S", "feeder": "F",
        "location": null, "rule": "oil_temp_high", "description": "d", "action": "a",
        "severity": "critical", "state": "active", "value": 99.0, "limit": 95.0, "unit": "degC",
        "since": 1, "last_change": 1, "cleared_at": null, "acked_at": null, "acked_by": null,
        "shelved_until": null, "shelved_by": null, "flapping": false, "condition": true
    }))
    .unwrap();
    let mut line = String::new();
    write_alarm_line(
        &mut line,
        &AlarmEvent {
            kind: EventKind::Raised,
            alarm,
            at: 1,
            reading_ts: None,
            notify: true,
        },
    );
    for l in influxdb_line_protocol::parse_lines(&line) {
        let l = l.unwrap();
        let fields = out.entry(l.series.measurement.to_string()).or_default();
        fields.extend(l.field_set.iter().map(|(k, _)| k.to_string()));
    }
    out
}

/// Every `"..."` in `s`.
fn quoted(s: &str) -> Vec<String> {
    s.split('"').skip(1).step_by(2).map(String::from).collect()
}

/// What an InfluxQL query reads: (measurement, fields).
fn influxql_refs(q: &str) -> (String, Vec<String>) {
    let measurement = q
        .split("FROM \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    // Drop `AS "alias"` clauses: an alias names a result column, not a stored field.
    let mut rest = q.to_string();
    while let Some(i) = rest.find(" AS \"") {
        let end = rest[i + 5..]
            .find('"')
            .map(|j| i + 5 + j + 1)
            .unwrap_or(rest.len());
        rest.replace_range(i..end, "");
    }
    let fields = quoted(&rest)
        .into_iter()
        .filter(|w| *w != measurement && !TAGS.contains(&w.as_str()))
        .collect();
    (measurement, fields)
}

fn between<'a>(s: &'a str, start: &str, end: char) -> Vec<&'a str> {
    s.split(start)
        .skip(1)
        .filter_map(|r| r.split(end).next())
        .collect()
}

/// What a Flux query reads: (measurement, fields).
fn flux_refs(q: &str) -> (String, Vec<String>) {
    let measurement = between(q, "r._measurement == \"", '"')[0].to_string();
    let mut fields: Vec<String> = between(q, "r._field == \"", '"')
        .into_iter()
        .map(String::from)
        .collect();
    // After a pivot, fields are read as record members.
    for part in q.split("r.").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.starts_with('_') && !TAGS.contains(&name.as_str()) && !name.is_empty() {
            fields.push(name);
        }
    }
    (measurement, fields)
}

/// What a PromQL query reads: (measurement, field) for every `measurement_field` metric.
fn promql_refs(q: &str, written: &Written) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // `{__name__=~"transformer_current_(a|b|c)"}` names several metrics at once.
    for pat in between(q, "__name__=~\"", '"') {
        let (stem, alts) = pat.split_once('(').unwrap();
        for alt in alts.trim_end_matches(')').split('|') {
            out.push(format!("{stem}{alt}"));
        }
    }
    let mut rest = q.to_string();
    while let Some(i) = rest.find("__name__=~\"") {
        let end = rest[i + 11..]
            .find('"')
            .map(|j| i + 11 + j + 1)
            .unwrap_or(rest.len());
        rest.replace_range(i..end, "");
    }
    let tokens = rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    out.extend(tokens.map(String::from));
    out.into_iter()
        .filter_map(|t| {
            written.keys().find_map(|m| {
                t.strip_prefix(&format!("{m}_"))
                    .map(|f| (m.clone(), f.to_string()))
            })
        })
        .collect()
}

fn dashboards() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for lang in ["influxql", "flux", "promql"] {
        for e in std::fs::read_dir(Path::new("dashboards/grafana").join(lang)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    files
}

fn queries(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            for key in ["query", "expr"] {
                if let Some(q) = t[key].as_str() {
                    out.push(q.to_string());
                }
            }
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        for q in [
            a["query"].as_str(),
            a["expr"].as_str(),
            a["target"]["query"].as_str(),
        ]
        .into_iter()
        .flatten()
        {
            out.push(q.to_string());
        }
    }
    out
}

#[test]
fn every_dashboard_queries_only_what_gridwatch_writes() {
    let written = written();
    assert!(written["transformer"].contains("oil_temp"), "{written:?}");
    assert!(written["meter"].contains("voltage_a"));
    assert!(written["alarm"].contains("active"));
    let files = dashboards();
    assert_eq!(
        files.len(),
        9,
        "three dashboards in three query languages: {files:?}"
    );
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let d: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            d["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with("gridwatch-")),
            "{}",
            file.display()
        );
        let lang = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(
            vars.contains(&"datasource"),
            "{}: no datasource variable",
            file.display()
        );
        for q in queries(&d) {
            let refs: Vec<(String, String)> = match lang {
                "influxql" if q.starts_with("SHOW") => continue,
                "influxql" => {
                    let (m, f) = influxql_refs(&q);
                    f.into_iter().map(|f| (m.clone(), f)).collect()
                }
                "flux" if q.contains("schema.") => continue,
                "flux" => {
                    let (m, f) = flux_refs(&q);
                    f.into_iter().map(|f| (m.clone(), f)).collect()
                }
                _ => promql_refs(&q, &written),
            };
            assert!(
                !refs.is_empty(),
                "{}: cannot tell what {q:?} reads",
                file.display()
            );
            for (m, f) in refs {
                let fields = written.get(&m).unwrap_or_else(|| {
                    panic!("{}: unknown measurement {m:?} in {q:?}", file.display())
                });
                assert!(
                    fields.contains(&f),
                    "{}: {m} has no field {f:?} (query {q:?})",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} references checked");
}

#[test]
fn the_checker_catches_a_field_gridwatch_does_not_write() {
    let written = written();
    let (m, f) =
        influxql_refs("SELECT mean(\"oil_temperature\") FROM \"transformer\" WHERE $timeFilter");
    assert!(!written[&m].contains(&f[0]));
    let refs = promql_refs("max(meter_voltage_x{device=\"a\"})", &written);
    assert_eq!(refs, vec![("meter".to_string(), "voltage_x".to_string())]);
    assert!(!written["meter"].contains("voltage_x"));
}
