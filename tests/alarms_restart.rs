//! Alarm state survives a daemon restart: the same alarm (same id) is listed after the
//! restart, it is not raised a second time while its condition holds, and it clears through
//! the normal hysteresis once the fault is gone.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use gridwatch_sim::{Fault, ModbusSimConfig};
use tokio_util::sync::CancellationToken;

fn config(modbus: &str, http: u16, data: &str) -> String {
    format!(
        r#"
[api]
auth = "off"

[daemon]
data_dir = "{data}"
http_listen = "127.0.0.1:{http}"

[[modbus.endpoints]]
name = "sim"
address = "{modbus}"

[[devices]]
id = "TX-0001"
kind = "transformer"
site = "Sim"
feeder = "F1"
endpoint = "sim"
unit_id = 1
profile = "transformer-monitor"
interval = "1s"
rated_kva = 630
nominal_voltage = 230.0
"#
    )
}

fn alarms(port: u16) -> Vec<serde_json::Value> {
    http()
        .get(format!("http://127.0.0.1:{port}/api/v1/alarms"))
        .send()
        .ok()
        .and_then(|r| r.json().ok())
        .unwrap_or_default()
}

fn start(
    rt: &tokio::runtime::Runtime,
    text: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), gridwatch::DaemonError>>,
) {
    let loaded = gridwatch::config::load_str(
        text,
        "<test>",
        std::path::Path::new("."),
        &gridwatch::config::profile::BUILTIN_PROFILES,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stop = CancellationToken::new();
    let task = rt.spawn(gridwatch::run(loaded, stop.clone()));
    (stop, task)
}

#[test]
fn alarm_state_survives_a_restart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt
        .block_on(gridwatch_sim::start_modbus(ModbusSimConfig {
            transformers: 1,
            meters: 0,
            ..ModbusSimConfig::default()
        }))
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let text = config(
        &sim.local_addr().to_string(),
        http_port,
        &data.path().display().to_string(),
    );

    sim.set_fault(1, Fault::OverTemperature);
    let (stop, task) = start(&rt, &text);
    let before = wait_for("oil alarm", Duration::from_secs(30), || {
        alarms(http_port)
            .into_iter()
            .find(|a| a["rule"] == "oil_temp_high")
    });
    stop.cancel();
    rt.block_on(task).unwrap().unwrap();

    let (stop, task) = start(&rt, &text);
    wait_for("api after restart", Duration::from_secs(10), || {
        http()
            .get(format!("http://127.0.0.1:{http_port}/healthz"))
            .send()
            .ok()
    });
    // Past the rule delay with the fault still on: the same alarm, not a new one.
    std::thread::sleep(Duration::from_secs(12));
    let after: Vec<_> = alarms(http_port)
        .into_iter()
        .filter(|a| a["rule"] == "oil_temp_high")
        .collect();
    assert_eq!(after.len(), 1, "{after:#?}");
    assert_eq!(after[0]["id"], before["id"]);
    assert_eq!(after[0]["raised_at"], before["raised_at"]);
    assert_eq!(after[0]["state"], "active");

    sim.clear_fault(1);
    wait_for("cleared after restart", Duration::from_secs(30), || {
        alarms(http_port)
            .into_iter()
            .find(|a| a["rule"] == "oil_temp_high" && a["state"] == "cleared")
    });
    stop.cancel();
    rt.block_on(task).unwrap().unwrap();
    rt.block_on(sim.shutdown());
}
