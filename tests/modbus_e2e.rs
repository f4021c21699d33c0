//! End to end: the real `gridwatch` binary polls the in-process Modbus simulator and writes to
//! the real stores started by scripts/test.sh; what the store holds is compared with what the
//! simulator served, value by value.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::sim::{Sim, fleet_config};
use common::*;
use gridwatch_sim::{Profile, Served};

/// What the simulator served, per (device, field), in order: (value, raw integer if any).
type Expected = BTreeMap<(String, String), Vec<(f64, Option<i64>)>>;

fn expected_from(sim: &Sim, tag: &str, served: &[Served]) -> Expected {
    let names: HashMap<u8, String> = sim
        .h()
        .units()
        .into_iter()
        .map(|u| (u.unit, format!("{tag}-{}", u.device_id)))
        .collect();
    let mut out = Expected::new();
    for s in served {
        let device = &names[&s.unit];
        let raw: HashMap<&str, i64> = s.raw.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        for (field, value) in &s.fields {
            out.entry((device.clone(), field.clone()))
                .or_default()
                .push((*value, raw.get(field.as_str()).copied()));
        }
    }
    out
}

/// Register definition of `field` for the device's profile (the simulator's own parser).
fn register<'a>(
    profiles: &'a [Profile],
    profile: &str,
    field: &str,
) -> &'a gridwatch_sim::profile::Register {
    profiles
        .iter()
        .find(|p| p.name == profile)
        .and_then(|p| p.register(field))
        .unwrap_or_else(|| panic!("{profile} has no register {field}"))
}

/// Integer registers compare exactly on the raw value; floats bit for bit (`exact`) or to
/// VictoriaMetrics' 12 significant digits.
fn assert_same(
    what: &str,
    reg: &gridwatch_sim::profile::Register,
    stored: f64,
    served: (f64, Option<i64>),
    exact: bool,
) {
    match served.1 {
        Some(raw) if reg.data_type.is_integer() => {
            let sf = reg
                .scale_factor
                .as_deref()
                .map(gridwatch_sim::modbus::scale_factor_value)
                .unwrap_or(0);
            let step = reg.scale * 10f64.powi(i32::from(sf));
            let back = ((stored - reg.offset) / step).round() as i64;
            assert_eq!(
                back, raw,
                "{what}: stored {stored} decodes to raw {back}, simulator served raw {raw}"
            );
        }
        // A scaled float is compared on the register's own value: `raw / 1000` (the daemon)
        // and `raw * 0.001` (the simulator) may differ in the last bit of the f64.
        _ if exact && (reg.scale != 1.0 || reg.offset != 0.0) => {
            let unscale = |v: f64| ((v - reg.offset) / reg.scale) as f32;
            assert_eq!(
                unscale(stored),
                unscale(served.0),
                "{what}: stored {stored}, served {}",
                served.0
            );
        }
        _ if exact => assert_eq!(
            stored.to_bits(),
            served.0.to_bits(),
            "{what}: stored {stored}, served {}",
            served.0
        ),
        _ => assert!(
            approx_eq(stored, served.0),
            "{what}: stored {stored}, served {}",
            served.0
        ),
    }
}

/// Runs the fleet for a few seconds, stops the simulator answering, then stops the daemon with
/// SIGTERM (which flushes) and returns what was served.
fn run_fleet(sim: &Sim, config: &str) -> Vec<Served> {
    let dir = Daemon::temp_dir();
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, config).unwrap();
    let mut daemon = Daemon::spawn_in(dir, &["run", "--config", path.to_str().unwrap()], &[]);
    daemon.wait_for_log("gridwatch running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(4));
    sim.silence();
    // Replies already on the wire still arrive; give them time to land before stopping.
    std::thread::sleep(Duration::from_millis(800));
    let served = sim.h().served();
    let status = daemon.terminate();
    assert!(
        status.success(),
        "daemon exit {status}; log:\n{}",
        daemon.log()
    );
    assert!(!daemon.log().contains("panicked"), "{}", daemon.log());
    served
}

#[test]
fn victoriametrics_v2_holds_exactly_what_the_simulator_served() {
    let svc = services();
    let sim = Sim::start(2, 4);
    let tag = unique("e2ev2");
    let storage = format!(
        r#"[storage.influx]
url = "{}"
api = "v2"
org = "grid"
bucket = "telemetry"
flush_interval = "200ms""#,
        svc.vm_url
    );
    let config = fleet_config(&sim, &tag, "500ms", &storage, "/tmp/unused-gw");
    let served = run_fleet(&sim, &config);
    let expected = expected_from(&sim, &tag, &served);
    let profiles = gridwatch_sim::builtin_profiles().unwrap();
    let units = sim.h().units();

    vm_flush(&svc.vm_url);
    let series = vm_export(&svc.vm_url, &format!("{{device=~\"{tag}-.*\"}}"));
    let mut stored: HashMap<(String, String), &VmSeries> = HashMap::new();
    for s in &series {
        // Alarm events name the device too (`alarm,device=..`): the silenced simulator can
        // raise one before the daemon stops. They are not samples.
        if s.name.starts_with("alarm_") {
            continue;
        }
        let device = s.labels["device"].clone();
        let kind = &s.labels["kind"];
        let field = s
            .name
            .strip_prefix(&format!("{kind}_"))
            .unwrap_or_else(|| panic!("series {} of {device} is not {kind}_*", s.name))
            .to_string();
        assert_eq!(
            s.labels["site"], "Substation 7",
            "tag with a space survives escaping"
        );
        assert_eq!(
            s.labels["feeder"], "F07, north",
            "tag with a comma survives escaping"
        );
        stored.insert((device, field), s);
    }
    assert!(
        expected.len() > 60,
        "too little served: {} series",
        expected.len()
    );
    for ((device, field), want) in &expected {
        let unit = units
            .iter()
            .find(|u| device.ends_with(&u.device_id))
            .unwrap();
        let reg = register(&profiles, &unit.profile, field);
        let got = stored
            .get(&(device.clone(), field.clone()))
            .unwrap_or_else(|| panic!("no series for {device} {field}"));
        assert_eq!(
            got.values.len(),
            want.len(),
            "{device} {field}: point count"
        );
        assert!(
            got.timestamps_ms.windows(2).all(|w| w[0] < w[1]),
            "{device} {field}: in order"
        );
        for (i, (v, w)) in got.values.iter().zip(want).enumerate() {
            assert_same(&format!("{device} {field}[{i}]"), reg, *v, *w, false);
        }
    }
    assert_eq!(
        stored.len(),
        expected.len(),
        "no series beyond what was served"
    );
}

#[test]
fn influxdb1_v1_holds_exactly_what_the_simulator_served() {
    let svc = services();
    let sim = Sim::start(1, 2);
    let tag = unique("e2ev1");
    let db = unique("gw_e2e");
    influx1_create_db(&svc.influx1_url, &db);
    let storage = format!(
        r#"[storage.influx]
url = "{}"
api = "v1"
db = "{db}"
flush_interval = "200ms""#,
        svc.influx1_url
    );
    let config = fleet_config(&sim, &tag, "500ms", &storage, "/tmp/unused-gw");
    let served = run_fleet(&sim, &config);
    let expected = expected_from(&sim, &tag, &served);
    let profiles = gridwatch_sim::builtin_profiles().unwrap();
    let units = sim.h().units();
    assert!(
        expected.len() > 40,
        "too little served: {} series",
        expected.len()
    );
    for ((device, field), want) in &expected {
        let unit = units
            .iter()
            .find(|u| device.ends_with(&u.device_id))
            .unwrap();
        let reg = register(&profiles, &unit.profile, field);
        let points = influx1_points(&svc.influx1_url, &db, unit.kind.as_str(), field, device);
        assert_eq!(points.len(), want.len(), "{device} {field}: point count");
        for (i, ((_, v), w)) in points.iter().zip(want).enumerate() {
            assert_same(&format!("{device} {field}[{i}]"), reg, *v, *w, true);
        }
    }
}

/// `http://` + the `http_listen` address of a `fleet_config`.
fn http_base(config: &str) -> String {
    let listen = config
        .lines()
        .find(|l| l.starts_with("http_listen"))
        .and_then(|l| l.split('"').nth(1))
        .expect("http_listen in the config");
    format!("http://{listen}")
}

/// Starts the daemon on `config` and waits until it runs.
fn start_daemon(config: &str) -> Daemon {
    let dir = Daemon::temp_dir();
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, config).unwrap();
    let mut daemon = Daemon::spawn_in(dir, &["run", "--config", path.to_str().unwrap()], &[]);
    daemon.wait_for_log("gridwatch running", Duration::from_secs(20));
    daemon
}

fn device_status(http: &str, device: &str) -> String {
    let list: serde_json::Value = http_client()
        .get(format!("{http}/api/v1/devices"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == device)
        .map(|d| d["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn http_client() -> reqwest::blocking::Client {
    http()
}

/// Timestamps (ns) of every telemetry line of `device` in the daily line-protocol files
/// (alarm lines, which name the device too, are not samples).
fn lp_timestamps(dir: &std::path::Path, device: &str) -> Vec<i64> {
    let mut out = Vec::new();
    let needle = format!(",device={device},");
    for entry in std::fs::read_dir(dir.join("telemetry")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text
            .lines()
            .filter(|l| l.contains(&needle) && !l.starts_with("alarm,"))
        {
            let ts = line.rsplit(' ').next().unwrap().parse::<i64>().unwrap();
            out.push(ts);
        }
    }
    out.sort_unstable();
    out
}

#[test]
fn dead_unit_goes_offline_and_back_while_the_others_keep_their_rate() {
    let sim = Sim::start(1, 3);
    let tag = unique("dead");
    let data = tempfile::tempdir().unwrap();
    let config = fleet_config(&sim, &tag, "1s", "", data.path().to_str().unwrap());
    let http = http_base(&config);
    let mut daemon = start_daemon(&config);
    let units = sim.h().units();
    let dead = &units[1];
    let dead_id = format!("{tag}-{}", dead.device_id);
    wait_for("all devices online", Duration::from_secs(10), || {
        units
            .iter()
            .all(|u| device_status(&http, &format!("{tag}-{}", u.device_id)) == "online")
            .then_some(())
    });

    let interval = Duration::from_secs(1);
    let fault_at = std::time::Instant::now();
    let window_start = now_ns();
    sim.h().set_fault(dead.unit, gridwatch_sim::Fault::Dead);
    wait_for("dead unit offline", interval * 3, || {
        (device_status(&http, &dead_id) == "offline").then_some(())
    });
    let offline_after = fault_at.elapsed();
    // The daemon's own metrics show the timeouts behind it.
    let timeouts = metric(&http, "gridwatch_modbus_timeouts_total", "sim");
    assert!(
        timeouts >= 2.0,
        "gridwatch_modbus_timeouts_total {timeouts}"
    );
    // Keep it dead a while longer to measure the others' rate.
    let window = Duration::from_secs(6);
    std::thread::sleep(window.saturating_sub(offline_after));
    let window_end = now_ns();
    sim.h().clear_fault(dead.unit);
    wait_for("dead unit back online", interval * 3, || {
        (device_status(&http, &dead_id) == "online").then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let status = daemon.terminate();
    assert!(status.success(), "{}", daemon.log());

    let polls_in_window = (window.as_secs_f64() / interval.as_secs_f64()).floor() as usize;
    for u in units.iter().filter(|u| u.unit != dead.unit) {
        let id = format!("{tag}-{}", u.device_id);
        let ts = lp_timestamps(data.path(), &id);
        let in_window = ts
            .iter()
            .filter(|t| **t >= window_start && **t < window_end)
            .count();
        assert!(
            in_window + 1 >= polls_in_window,
            "{id}: {in_window} samples during the {window:?} outage of a neighbour, expected {polls_in_window}"
        );
    }
    let dead_samples = lp_timestamps(data.path(), &dead_id);
    let during = dead_samples
        .iter()
        .filter(|t| **t > window_start + 400_000_000 && **t < window_end)
        .count();
    assert_eq!(during, 0, "no samples stored while the unit was dead");
    assert!(
        dead_samples.iter().any(|t| *t > window_end),
        "samples again after the unit came back"
    );
}

/// The daemon's `/metrics` page, parsed.
fn scrape(base: &str) -> prometheus_parse::Scrape {
    let text = http_client()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let lines: Vec<Result<String, std::io::Error>> =
        text.lines().map(|l| Ok(l.to_string())).collect();
    prometheus_parse::Scrape::parse(lines.into_iter()).unwrap()
}

/// The value of a counter, gauge or untyped sample.
fn sample_value(s: &prometheus_parse::Sample) -> f64 {
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => 0.0,
    }
}

fn metric(base: &str, name: &str, label: &str) -> f64 {
    scrape(base)
        .samples
        .iter()
        .filter(|s| s.metric == name && s.labels.values().any(|v| v == label))
        .map(sample_value)
        .sum()
}

#[test]
fn exception_responses_are_counted_and_logged_per_device() {
    let sim = Sim::start(1, 1);
    let tag = unique("exc");
    let data = tempfile::tempdir().unwrap();
    let config = fleet_config(&sim, &tag, "500ms", "", data.path().to_str().unwrap());
    let port = config
        .lines()
        .find(|l| l.starts_with("http_listen"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let http = format!("http://127.0.0.1:{port}");
    let dir = Daemon::temp_dir();
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, &config).unwrap();
    let mut daemon = Daemon::spawn_in(dir, &["run", "--config", path.to_str().unwrap()], &[]);
    daemon.wait_for_log("gridwatch running", Duration::from_secs(20));
    let units = sim.h().units();
    let faulty = format!("{tag}-{}", units[1].device_id);
    let healthy = format!("{tag}-{}", units[0].device_id);
    wait_for("online", Duration::from_secs(10), || {
        (device_status(&http, &faulty) == "online").then_some(())
    });

    // Exception 4 (server device failure) on every read of the meter.
    sim.h()
        .set_fault(units[1].unit, gridwatch_sim::Fault::Exception(4));
    wait_for("exceptions counted", Duration::from_secs(10), || {
        (metric(&http, "gridwatch_modbus_device_exceptions_total", &faulty) >= 3.0).then_some(())
    });
    wait_for("faulty device offline", Duration::from_secs(5), || {
        (device_status(&http, &faulty) == "offline").then_some(())
    });
    let list: serde_json::Value = http_client()
        .get(format!("{http}/api/v1/devices/{faulty}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let err = list["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("exception"), "last_error {err:?}");
    assert_eq!(
        device_status(&http, &healthy),
        "online",
        "the other unit is unaffected"
    );
    assert_eq!(
        metric(&http, "gridwatch_modbus_device_exceptions_total", &healthy),
        0.0
    );
    assert!(metric(&http, "gridwatch_modbus_exceptions_total", "sim") >= 3.0);
    let warnings = daemon.log().matches("modbus exception").count();
    assert!(warnings >= 1, "{}", daemon.log());

    sim.h().clear_fault(units[1].unit);
    wait_for("back online", Duration::from_secs(5), || {
        (device_status(&http, &faulty) == "online").then_some(())
    });
    assert!(daemon.terminate().success());
}

/// The unlabelled sample `name` from `/metrics`.
fn plain_metric(base: &str, name: &str) -> Option<f64> {
    scrape(base)
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.is_empty())
        .map(sample_value)
}

/// A daemon with `daemon_lines` added to `[daemon]` and `max_in_flight` connections to the
/// simulator reports `workers` runtime workers and `poll_threads` polling threads in
/// `/metrics`, and polls every device at its interval.
fn polls_every_device_with(
    daemon_lines: &str,
    max_in_flight: u32,
    workers: f64,
    poll_threads: f64,
) {
    let sim = Sim::start(1, 3);
    let tag = unique("threads");
    let data = tempfile::tempdir().unwrap();
    let config = fleet_config(&sim, &tag, "100ms", "", data.path().to_str().unwrap())
        .replacen("[daemon]\n", &format!("[daemon]\n{daemon_lines}\n"), 1)
        .replacen(
            "timeout = \"300ms\"\n",
            &format!("timeout = \"300ms\"\nmax_in_flight = {max_in_flight}\n"),
            1,
        );
    assert!(config.contains(daemon_lines), "{config}");
    assert!(config.contains("max_in_flight"), "{config}");
    let http = http_base(&config);
    let mut daemon = start_daemon(&config);
    assert_eq!(
        plain_metric(&http, "gridwatch_runtime_worker_threads"),
        Some(workers)
    );
    assert_eq!(
        plain_metric(&http, "gridwatch_modbus_poll_threads"),
        Some(poll_threads)
    );
    for u in sim.h().units() {
        let id = format!("{tag}-{}", u.device_id);
        wait_for(&format!("{id} online"), Duration::from_secs(10), || {
            (device_status(&http, &id) == "online").then_some(())
        });
    }
    let before = plain_metric(&http, "gridwatch_readings_total").unwrap_or(0.0);
    std::thread::sleep(Duration::from_secs(1));
    let after = plain_metric(&http, "gridwatch_readings_total").unwrap_or(0.0);
    // Three units at 100 ms: about 30 readings a second.
    assert!(after - before >= 15.0, "{before} -> {after}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}

#[test]
fn one_worker_thread_polls_every_device() {
    // The default: the connection on one polling thread of its own.
    polls_every_device_with("worker_threads = 1", 1, 1.0, 1.0);
}

#[test]
fn connections_on_the_shared_runtime_poll_every_device() {
    polls_every_device_with("worker_threads = 2\npoll_threads = 0", 1, 2.0, 0.0);
}

#[test]
fn connections_dealt_over_two_polling_threads_poll_every_device() {
    // Three connections (one unit each) over two threads; asking for more threads than
    // connections starts one per connection.
    polls_every_device_with("worker_threads = 2\npoll_threads = 2", 3, 2.0, 2.0);
    polls_every_device_with("worker_threads = 2\npoll_threads = 8", 3, 2.0, 3.0);
}

#[test]
fn chart_windows_stay_within_history_max_bytes_through_the_api() {
    let sim = Sim::start(1, 4);
    let tag = unique("hist");
    let data = tempfile::tempdir().unwrap();
    // 4 s at 100 ms is 41 rows per device; 2,000 bytes for four devices allow ~10 rows of
    // 8 + 4 × (fields) bytes each, so the budget, not the resolution, spaces the samples.
    let max_bytes = 2000u64;
    let config = fleet_config(&sim, &tag, "100ms", "", data.path().to_str().unwrap())
        + &format!(
            "\n[history]\nwindow = \"4s\"\nresolution = \"100ms\"\nmax_bytes = {max_bytes}\n"
        );
    let http = http_base(&config);
    let mut daemon = start_daemon(&config);
    // Twice the window, so every window has filled and rolled.
    std::thread::sleep(Duration::from_secs(8));
    let held = plain_metric(&http, "gridwatch_history_bytes")
        .expect("gridwatch_history_bytes in /metrics");
    assert!(
        held > 0.0 && held <= max_bytes as f64,
        "history holds {held} bytes, budget {max_bytes}"
    );
    let ms = 1_000_000i64;
    for u in sim.h().units() {
        let id = format!("{tag}-{}", u.device_id);
        let w: serde_json::Value = http_client()
            .get(format!("{http}/api/v1/devices/{id}/history"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let ts: Vec<i64> = w["ts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        let fields = w["values"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.as_array().unwrap().iter().any(|v| !v.is_null()))
            .count() as i64;
        assert!(fields > 0, "{id}: no chart field reported: {w}");
        // Rows the budget allows this device: a quarter of it over its row size.
        let allowed = max_bytes as i64 / 4 / (8 + 4 * fields);
        assert!(
            ts.len() >= 3 && ts.len() as i64 <= allowed + 1,
            "{id}: {} rows, budget allows {allowed}: {ts:?}",
            ts.len()
        );
        // Still the whole window back, at wider spacing than the configured 100 ms.
        let span = ts.last().unwrap() - ts.first().unwrap();
        assert!(span >= 2500 * ms, "{id}: span {span} ns: {ts:?}");
        assert!(
            ts.windows(2).all(|p| p[1] - p[0] >= 200 * ms),
            "{id}: samples closer than the budget's spacing: {ts:?}"
        );
    }
    let status = daemon.terminate();
    assert!(status.success(), "{}", daemon.log());
    assert!(
        daemon
            .log()
            .contains("chart samples are spaced further apart"),
        "{}",
        daemon.log()
    );
}
