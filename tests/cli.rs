//! The command line: `gridwatch check` on good and bad configs, environment overrides, and
//! the demo serving its fleet.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn check(path: &std::path::Path, envs: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(Daemon::bin())
        .args(["check", "--config", path.to_str().unwrap()])
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_three_mistakes_with_key_paths_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[[modbus.endpoints]]
name = "gw"
address = "127.0.0.1:5020"
timeout = "soon"

[[devices]]
id = "TX-0701"
kind = "transformer"
endpoint = "gw"
unit_id = 1
profile = "tx-basic"

[[devices]]
id = "TX-0702"
kind = "transformer"
endpoint = "gw"
unit_id = 2
profile = "transformer-monitor"
rated_kva = -630
"#,
    )
    .unwrap();
    let (code, _, stderr) = check(&path, &[]);
    assert_eq!(code, 2, "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 3, "{stderr}");
    let file = path.display().to_string();
    for key in [
        "modbus.endpoints[0].timeout",
        "devices[0].profile: unknown profile \"tx-basic\"",
        "devices[1].rated_kva",
    ] {
        let want = format!("{file}: {key}");
        assert!(
            errors.iter().any(|e| e.contains(&want)),
            "no {want:?} in {stderr}"
        );
    }
}

#[test]
fn shipped_configs_are_valid() {
    for file in ["config/gridwatch.toml", "config/demo.toml"] {
        let (code, stdout, stderr) = check(std::path::Path::new(file), &[]);
        assert_eq!(code, 0, "{file}: {stderr}");
        assert!(stdout.contains("configuration is valid"), "{stdout}");
    }
}

#[test]
fn environment_overrides_the_file_and_its_errors_name_the_key() {
    let path = std::path::Path::new("config/gridwatch.toml");
    let (code, stdout, stderr) = check(
        path,
        &[("GRIDWATCH__DAEMON__HTTP_LISTEN", "127.0.0.1:9999")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("http: 127.0.0.1:9999"), "{stdout}");

    let (code, _, stderr) = check(path, &[("GRIDWATCH__STORAGE__INFLUX__BATCH_SIZE", "lots")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("storage.influx.batch_size"), "{stderr}");

    let (code, _, stderr) = check(
        path,
        &[("GRIDWATCH__STORAGE__INFLUX__BATCH_MAX_BYTES", "100")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("storage.influx.batch_max_bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("gridwatch.toml"),
        "names the file: {stderr}"
    );
}

#[test]
fn demo_serves_its_whole_fleet_online() {
    let port = free_port();
    let data = tempfile::tempdir().unwrap();
    let mut demo = Daemon::spawn(&[
        "demo",
        "--http",
        &format!("127.0.0.1:{port}"),
        "--duration",
        "60s",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let base = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{base}/healthz"), Duration::from_secs(20));
    // 10 transformers and 40 meters on Modbus, 100 meters over the embedded MQTT broker.
    let devices = wait_for("150 devices online", Duration::from_secs(20), || {
        let list: serde_json::Value = http()
            .get(format!("{base}/api/v1/devices"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let list = list.as_array()?.clone();
        (list.len() == 150 && list.iter().all(|d| d["status"] == "online")).then_some(list)
    });
    let tx = devices.iter().find(|d| d["id"] == "TX-0001").unwrap();
    let oil = tx["values"]["oil_temp"].as_f64().unwrap();
    assert!((-20.0..120.0).contains(&oil), "oil_temp {oil}");
    assert_eq!(tx["units"]["oil_temp"], "degC");
    let meter = devices.iter().find(|d| d["id"] == "MT-0012").unwrap();
    assert_eq!(meter["parent"], "TX-0002");
    let v = meter["values"]["voltage_a"].as_f64().unwrap();
    assert!((200.0..260.0).contains(&v), "voltage_a {v}");
    let mq = devices.iter().find(|d| d["id"] == "MQ-0001").unwrap();
    assert!(mq["parent"].as_str().unwrap().starts_with("TX-"));
    let v = mq["values"]["voltage_a"].as_f64().unwrap();
    assert!((200.0..260.0).contains(&v), "MQTT meter voltage_a {v}");
    let status = demo.terminate();
    assert!(status.success(), "{}", demo.log());
    let files: Vec<_> = std::fs::read_dir(data.path().join("telemetry"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1, "one daily line-protocol file");
}
