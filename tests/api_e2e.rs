//! The real binary with auth on: an acknowledgement survives kill -9, and the engineers' CLI
//! round trip (add a maintenance record, list it, export CSV, parse the CSV back).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use gridwatch::eventlog::AlarmStore;

fn config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("gridwatch.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[daemon]
data_dir = "{data}"
http_listen = "127.0.0.1:{port}"

[[modbus.endpoints]]
name = "nowhere"
address = "127.0.0.1:{dead}"
timeout = "100ms"

[[devices]]
id = "TX-0701"
kind = "transformer"
site = "Substation 7"
feeder = "F07"
endpoint = "nowhere"
unit_id = 1
profile = "transformer-monitor"
"#,
            data = dir.join("data").display(),
            dead = free_port(),
        ),
    )
    .unwrap();
    path
}

fn cli(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(Daemon::bin())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn add_user(cfg: &str, name: &str, role: &str) -> String {
    let (ok, out, err) = cli(
        &["users", "add", name, "--role", role, "--config", cfg],
        &[],
    );
    assert!(ok, "users add: {err}");
    out.trim().to_string()
}

#[test]
fn acknowledgement_survives_kill_9_and_cli_round_trip() {
    let dir = Daemon::temp_dir();
    let port = free_port();
    let cfg_path = config(dir.path(), port);
    let cfg = cfg_path.to_str().unwrap().to_string();
    let engineer = add_user(&cfg, "erin", "engineer");
    let operator = add_user(&cfg, "otto", "operator");
    // An alarm in the store, as the alarm engine would raise it.
    let alarm_id = {
        let log = gridwatch::eventlog::EventLog::open(
            &dir.path().join("data"),
            &gridwatch::config::EventLogConfig::default(),
            &[],
            gridwatch::hub::Hub::new(),
            &gridwatch::metrics::Registry::new(),
        )
        .unwrap();
        log.raise_alarm(
            "TX-0701",
            "oil_temp_high",
            "major",
            "oil 98 C",
            serde_json::json!({}),
        )
        .unwrap()
        .id
    };
    let base = format!("http://127.0.0.1:{port}");
    let mut daemon = Daemon::spawn(&["run", "--config", &cfg]);
    wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(20));

    let resp = http().get(format!("{base}/api/v1/alarms")).send().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http()
        .post(format!("{base}/api/v1/alarms/{alarm_id}/ack"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({ "comment": "crew dispatched" }))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text());
    daemon.kill();

    let data = dir.path().join("data");
    let log = gridwatch::eventlog::EventLog::open(
        &data,
        &gridwatch::config::EventLogConfig::default(),
        &[],
        gridwatch::hub::Hub::new(),
        &gridwatch::metrics::Registry::new(),
    )
    .unwrap();
    let alarm = log.alarm(alarm_id).unwrap();
    assert_eq!(alarm.acked_by.as_deref(), Some("otto"));
    assert_eq!(alarm.ack_comment.as_deref(), Some("crew dispatched"));
    drop(log);

    // Restart and use the CLI against it.
    let mut daemon = Daemon::spawn(&["run", "--config", &cfg]);
    wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(20));
    let env = [
        ("GRIDWATCH_URL", base.as_str()),
        ("GRIDWATCH_TOKEN", engineer.as_str()),
    ];
    let note = "bushing oil, \"weeping\"; torqued, see photo #3";
    let (ok, out, err) = cli(
        &[
            "maintenance",
            "add",
            "--device",
            "TX-0701",
            "--kind",
            "inspection",
            "--note",
            note,
            "--crew",
            "north-2",
        ],
        &env,
    );
    assert!(ok, "{err}");
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = added[0]["id"].as_i64().unwrap();
    let (ok, out, err) = cli(&["maintenance", "list", "--device", "TX-0701"], &env);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["id"].as_i64(), Some(id));
    assert_eq!(listed[0]["notes"], note);
    let (ok, out, err) = cli(
        &[
            "events",
            "--device",
            "TX-0701",
            "--since",
            "7d",
            "--kind",
            "maintenance",
            "--csv",
        ],
        &env,
    );
    assert!(ok, "{err}");
    let mut rdr = csv::Reader::from_reader(out.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{out}");
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][col("device")], "TX-0701");
    assert_eq!(&rows[0][col("actor")], "erin");
    let detail: serde_json::Value = serde_json::from_str(&rows[0][col("detail")]).unwrap();
    assert_eq!(detail["notes"], note);
    assert_eq!(detail["record_id"].as_i64(), Some(id));
    // An operator may not export.
    let (ok, _, err) = cli(
        &["events", "--csv"],
        &[
            ("GRIDWATCH_URL", base.as_str()),
            ("GRIDWATCH_TOKEN", operator.as_str()),
        ],
    );
    assert!(!ok && err.contains("403"), "{err}");
    let (ok, out, err) = cli(&["alarms", "--active"], &env);
    assert!(ok, "{err}");
    assert!(out.contains("oil_temp_high"), "{out}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
