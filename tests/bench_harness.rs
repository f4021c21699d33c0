//! The load harness at tiny scale: `gridwatch-sim`'s load server (2 gateways × 3 unit ids,
//! the bench-50 map) and the config it generates drive the real daemon, and every poll
//! succeeds. This checks that `scripts/bench.sh` has working parts; it measures nothing
//! (timing belongs in the benchmark, never in `cargo test`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use gridwatch_sim::load::{self, DaemonLayout, LoadConfig, LoadHandle};

struct Harness {
    rt: tokio::runtime::Runtime,
    handle: Option<LoadHandle>,
}

impl Harness {
    fn start(gateways: u16, units: u8) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt
            .block_on(load::start_load(LoadConfig {
                ip: "127.0.0.1".parse().unwrap(),
                gateways,
                units,
                base_port: 0,
                profile: gridwatch_sim::Profile::parse("bench-50", load::BENCH_50).unwrap(),
            }))
            .unwrap();
        Harness {
            rt,
            handle: Some(handle),
        }
    }

    fn h(&self) -> &LoadHandle {
        self.handle.as_ref().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

fn metrics(base: &str) -> BTreeMap<String, f64> {
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        // Sum over label sets we do not ask for: `name{result="ok",...}` keeps its result.
        let name = key.split('{').next().unwrap_or(key);
        let result = key
            .split("result=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .map(|r| format!("{name}:{r}"))
            .unwrap_or_else(|| name.to_string());
        *out.entry(result).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

#[test]
fn load_harness_devices_are_all_polled_completely() {
    let harness = Harness::start(2, 3);
    let dir = Daemon::temp_dir();
    let port = free_port();
    let profiles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
    let mut config = format!(
        "[api]\nauth = \"off\"\n\n[daemon]\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{port}\"\nprofile_dirs = [\"{}\"]\n\n",
        dir.path().join("data").display(),
        profiles.display()
    );
    config.push_str(&load::daemon_config(&DaemonLayout {
        addrs: harness.h().addrs(),
        units: 3,
        profile: "bench-50",
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(500),
    }));
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, config).unwrap();
    let mut daemon = Daemon::spawn_in(dir, &["run", "--config", path.to_str().unwrap()], &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{base}/metrics"), Duration::from_secs(20));

    // Three polls per device at least; the wait is generous, nothing here is a speed check.
    let m = wait_for("18 successful polls", Duration::from_secs(30), || {
        let m = metrics(&base);
        (m.get("gridwatch_modbus_polls_total:ok")
            .copied()
            .unwrap_or(0.0)
            >= 18.0)
            .then_some(m)
    });
    for bad in [
        "gridwatch_modbus_polls_total:partial",
        "gridwatch_modbus_polls_total:failed",
        "gridwatch_modbus_timeouts_total",
        "gridwatch_modbus_transport_errors_total",
        "gridwatch_modbus_exceptions_total",
    ] {
        assert_eq!(m.get(bad).copied().unwrap_or(0.0), 0.0, "{bad} in {m:?}");
    }
    assert!(harness.h().requests() >= 18);

    assert!(daemon.terminate().success(), "{}", daemon.log());
    // Every device reached the store with all 50 values in every line.
    let mut lines_per_device: BTreeMap<String, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(daemon.dir().join("data/telemetry")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let device = line
                .split("device=")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap()
                .to_string();
            let fields = line.split(' ').nth(1).unwrap().split(',').count();
            assert_eq!(fields, 50, "{line}");
            *lines_per_device.entry(device).or_default() += 1;
        }
    }
    let expected: Vec<String> = (0..2)
        .flat_map(|g| (1..=3).map(move |u| load::device_id(g, u)))
        .collect();
    assert_eq!(
        lines_per_device.keys().cloned().collect::<Vec<_>>(),
        expected,
        "{lines_per_device:?}"
    );
    assert!(
        lines_per_device.values().all(|&n| n >= 3),
        "{lines_per_device:?}"
    );
}
