//! End to end on Modbus RTU: the real `gridwatch` binary on one end of a `socat` pty pair
//! (a virtual RS-485 bus), the RTU simulator (`gridwatch_sim::start_rtu`) on the other, and
//! an RTU-over-TCP run against `start_rtu_over_tcp`. Values are compared exactly with what
//! the simulator served, through InfluxDB 1.x.
//!
//! The simulator paces its answers at the configured baud rate (the wire time of request
//! plus answer), so the pty has the capacity of a real bus and poll-rate figures mean
//! something. The tests share one lock: they measure rates and must not compete for the CPU.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use gridwatch::config::profile::BUILTIN_PROFILES;
use gridwatch::config::{Table, parse_profile_file};
use gridwatch::sources::modbus::compiled::CompiledProfile;
use gridwatch::sources::modbus::planner::PlanLimits;
use gridwatch_sim::{Fault, ModbusSimConfig, ModbusSimHandle, RtuLine, Served, UnitInfo};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bits per character at 8E1 (start, 8 data, parity, stop).
const BITS_PER_CHAR: u64 = 11;

// ------------------------------------------------------------------ the virtual bus

/// `socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B`: two ptys wired together.
struct PtyPair {
    child: Child,
    _dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
}

impl PtyPair {
    fn new() -> PtyPair {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("sim"), dir.path().join("gw"));
        let child = Command::new("socat")
            .arg("-d")
            .arg("-d")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("socat (Debian package socat, installed by scripts/test.sh): {e}")
            });
        wait_for("socat ptys", Duration::from_secs(5), || {
            (a.exists() && b.exists()).then_some(())
        });
        PtyPair {
            child,
            _dir: dir,
            a,
            b,
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ set-up helpers

fn sim_config(transformers: u16, meters: u16) -> ModbusSimConfig {
    ModbusSimConfig {
        transformers,
        meters,
        record: true,
        ..ModbusSimConfig::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The reads gridwatch plans for `profile`: (table, count) per request.
fn plan(profile: &str) -> Vec<(Table, u16)> {
    let (_, text) = BUILTIN_PROFILES
        .iter()
        .find(|(n, _)| *n == profile)
        .unwrap();
    let mut issues = Vec::new();
    let p = parse_profile_file(text, profile, &mut issues).unwrap();
    let limits = PlanLimits {
        max_registers: 125,
        max_bits: 2000,
        max_gap: p.max_gap,
    };
    let c = CompiledProfile::compile(profile, &p, &limits).unwrap();
    c.plan.requests.iter().map(|r| (r.table, r.count)).collect()
}

/// Characters on the wire for one poll of `profile`: 8 per request, 5 + data per answer.
fn poll_chars(profile: &str) -> (usize, u64) {
    let reqs = plan(profile);
    let chars = reqs
        .iter()
        .map(|(t, n)| {
            let data = match t {
                Table::Coil | Table::Discrete => u64::from(*n).div_ceil(8),
                _ => 2 * u64::from(*n),
            };
            8 + 5 + data
        })
        .sum();
    (reqs.len(), chars)
}

struct Setup {
    dir: tempfile::TempDir,
    http: String,
    db: String,
    ids: BTreeMap<u8, String>,
}

/// Writes a daemon config with `endpoint` (TOML lines of one `[[modbus.endpoints]]` named
/// `bus`) and one device per simulated unit, writing to InfluxDB 1.x.
fn daemon_config(units: &[UnitInfo], endpoint: &str, interval: Duration) -> (Setup, PathBuf) {
    let s = services();
    let db = unique("rtu");
    influx1_create_db(&s.influx1_url, &db);
    let dir = Daemon::temp_dir();
    let port = free_port();
    let mut toml = format!(
        "[api]\nauth = \"off\"\n\n[daemon]\ndata_dir = \"{}\"\nhttp_listen = \"127.0.0.1:{port}\"\n\n\
         [storage.influx]\nurl = \"{}\"\napi = \"v1\"\ndb = \"{db}\"\nflush_interval = \"200ms\"\n\n\
         [[modbus.endpoints]]\nname = \"bus\"\n{endpoint}\n",
        dir.path().join("data").display(),
        s.influx1_url
    );
    let mut ids = BTreeMap::new();
    for u in units {
        let id = format!("{db}_u{}", u.unit);
        toml.push_str(&format!(
            "\n[[devices]]\nid = \"{id}\"\nkind = \"{}\"\nendpoint = \"bus\"\nunit_id = {}\n\
             profile = \"{}\"\ninterval = \"{}ms\"\n",
            u.kind.as_str(),
            u.unit,
            u.profile,
            interval.as_millis()
        ));
        ids.insert(u.unit, id);
    }
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, toml).unwrap();
    (
        Setup {
            dir,
            http: format!("http://127.0.0.1:{port}"),
            db,
            ids,
        },
        path,
    )
}

fn start_daemon(setup: Setup, config: &Path) -> (Daemon, String, String, BTreeMap<u8, String>) {
    let Setup { dir, http, db, ids } = setup;
    let cfg = config.display().to_string();
    let mut d = Daemon::spawn_in(dir, &["run", "--config", &cfg], &[]);
    d.wait_for_log("gridwatch running", Duration::from_secs(20));
    (d, http, db, ids)
}

/// Every point of `device` in `measurement`: (time ns, field → value).
fn influx_rows(
    url: &str,
    db: &str,
    measurement: &str,
    device: &str,
) -> Vec<(i64, BTreeMap<String, f64>)> {
    let q = format!(
        "SELECT * FROM {} WHERE \"device\"={}",
        influxql_ident(measurement),
        influxql_string(device)
    );
    let v = influxql(url, db, &q);
    let Some(series) = v["results"][0]["series"][0].as_object() else {
        return Vec::new();
    };
    let cols: Vec<String> = series["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let row = row.as_array().unwrap();
            let ts = row[0].as_i64().unwrap();
            let fields = cols
                .iter()
                .zip(row)
                .skip(1)
                .filter_map(|(c, v)| v.as_f64().map(|x| (c.clone(), x)))
                .collect();
            (ts, fields)
        })
        .collect()
}

/// Asserts that every stored field value of `unit` is a value the simulator served for that
/// field (within the same poll); returns the number of points.
///
/// Equal within 1e-12 relative, i.e. a few ulp: gridwatch applies a decimal scale as an
/// exact division (raw 1822 / 10 = 182.2) where the simulator's record multiplies
/// (1822 × 0.1 = 182.20000000000002). Any decoding error is many orders of magnitude larger.
fn assert_stored_equals_served(
    url: &str,
    db: &str,
    unit: &UnitInfo,
    device: &str,
    served: &[Served],
) -> usize {
    let rows = influx_rows(url, db, unit.kind.as_str(), device);
    let mine: Vec<&Served> = served.iter().filter(|s| s.unit == unit.unit).collect();
    for (ts, fields) in &rows {
        let mut compared = 0;
        for (name, value) in fields {
            let candidates: Vec<f64> = mine
                .iter()
                // A reading is stamped when its first answer arrives; later requests of
                // the same poll are served a little after that.
                .filter(|s| s.at_ns <= *ts + 1_000_000_000)
                .flat_map(|s| s.fields.iter().filter(|(n, _)| n == name).map(|(_, v)| *v))
                .collect();
            if candidates.is_empty() {
                continue; // a tag-like column or a computed field
            }
            let same =
                |c: &f64| c == value || (c - value).abs() <= 1e-12 * c.abs().max(value.abs());
            assert!(
                candidates.iter().any(same),
                "{device} {name} = {value} at {ts} was never served (last served {:?})",
                candidates.last()
            );
            compared += 1;
        }
        assert!(
            compared > 0,
            "{device}: point at {ts} shares no field with the simulator"
        );
    }
    rows.len()
}

fn metrics_text(base: &str) -> String {
    http()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// Sum of the samples of `name` whose label text contains every `labels` entry.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn device_json(base: &str, id: &str) -> serde_json::Value {
    http()
        .get(format!("{base}/api/v1/devices/{id}"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn wait_points(
    url: &str,
    db: &str,
    units: &[UnitInfo],
    ids: &BTreeMap<u8, String>,
    skip: &[u8],
    min: usize,
) {
    wait_for("points of every live unit", Duration::from_secs(40), || {
        units
            .iter()
            .filter(|u| !skip.contains(&u.unit))
            .all(|u| influx_rows(url, db, u.kind.as_str(), &ids[&u.unit]).len() >= min)
            .then_some(())
    });
}

// ------------------------------------------------------------------ tests

/// 16 units on one 115200-baud bus; every value stored equals one the simulator served.
#[test]
fn rtu_bus_of_16_units_stores_exactly_what_the_simulator_served() {
    let _g = lock();
    let s = services();
    let bus = PtyPair::new();
    let rt = rt();
    let line = RtuLine {
        baud: 115_200,
        bits_per_char: 11,
        pace: true,
    };
    let sim: ModbusSimHandle = rt
        .block_on(gridwatch_sim::start_rtu(sim_config(2, 14), &bus.a, line))
        .unwrap();
    let units = sim.units();
    assert_eq!(units.len(), 16);
    let endpoint = format!(
        "transport = \"rtu\"\ndevice = \"{}\"\nbaud = 115200\ntimeout = \"150ms\"",
        bus.b.display()
    );
    let (setup, cfg) = daemon_config(&units, &endpoint, Duration::from_secs(1));
    let (daemon, http, db, ids) = start_daemon(setup, &cfg);
    wait_points(&s.influx1_url, &db, &units, &ids, &[], 3);
    let served = sim.served();
    let mut total = 0;
    for u in &units {
        total += assert_stored_equals_served(&s.influx1_url, &db, u, &ids[&u.unit], &served);
    }
    let m = metrics_text(&http);
    assert_eq!(
        metric(&m, "gridwatch_modbus_crc_errors_total", &[]),
        0.0,
        "{m}"
    );
    let dev = device_json(&http, &ids[&5]);
    assert_eq!(dev["status"], "online", "{dev}");
    assert!(dev["link"]["requests"].as_u64().unwrap() >= 3, "{dev}");
    eprintln!("16 units, {total} points compared exactly");
    drop(daemon);
    rt.block_on(sim.shutdown());
}

/// Two of 16 units dead: the other 14 keep their poll rate. The bus is sized to be about
/// half busy with the live units; the dead ones cost a timeout each until backed off.
#[test]
fn rtu_two_dead_units_do_not_slow_the_other_fourteen() {
    let _g = lock();
    let bus = PtyPair::new();
    let rt = rt();
    let baud: u64 = 115_200;
    let line = RtuLine {
        baud: baud as u32,
        bits_per_char: BITS_PER_CHAR as u32,
        pace: true,
    };
    let sim = rt
        .block_on(gridwatch_sim::start_rtu(
            ModbusSimConfig {
                record: false,
                ..sim_config(2, 14)
            },
            &bus.a,
            line,
        ))
        .unwrap();
    let units = sim.units();
    let dead = [4u8, 11];
    for u in dead {
        sim.set_fault(u, Fault::Dead);
    }
    // Bus time per poll: wire time of every request and answer, plus the 1.75 ms gap
    // before each request (above 19200 baud).
    let gap_us = 1750u64;
    let mut live_us = 0u64;
    let mut figures = Vec::new();
    for u in units.iter().filter(|u| !dead.contains(&u.unit)) {
        let (n, chars) = poll_chars(&u.profile);
        live_us += chars * BITS_PER_CHAR * 1_000_000 / baud + n as u64 * gap_us;
        figures.push((u.unit, n, chars));
    }
    let timeout = Duration::from_millis(60);
    // ~50 % busy with the live units alone.
    let interval_ms = (2 * live_us / 1000).div_ceil(100) * 100;
    let interval = Duration::from_millis(interval_ms);
    eprintln!(
        "baud {baud}, 11 bits/char; per unit (unit, requests, chars/poll): {figures:?}; \
         live bus time per round {live_us} us, interval {interval_ms} ms \
         (load {:.0} %), dead-unit timeout {timeout:?}",
        100.0 * live_us as f64 / (interval_ms as f64 * 1000.0)
    );
    let endpoint = format!(
        "transport = \"rtu\"\ndevice = \"{}\"\nbaud = {baud}\ntimeout = \"{}ms\"\nbackoff_after = 3\nbackoff_max = \"10s\"",
        bus.b.display(),
        timeout.as_millis()
    );
    let (setup, cfg) = daemon_config(&units, &endpoint, interval);
    let (daemon, http, _db, ids) = start_daemon(setup, &cfg);

    // Let the dead units reach backoff, then count served requests over a window.
    std::thread::sleep(interval * 4);
    let window = interval * 10;
    let before: Vec<u64> = units.iter().map(|u| sim.request_count(u.unit)).collect();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let after: Vec<u64> = units.iter().map(|u| sim.request_count(u.unit)).collect();
    let elapsed = t0.elapsed();
    let expected = elapsed.as_secs_f64() / interval.as_secs_f64();
    let mut report = Vec::new();
    for (i, u) in units.iter().enumerate() {
        let requests = after[i] - before[i];
        if dead.contains(&u.unit) {
            // Backed off: far fewer than one attempt per interval.
            assert!(
                (requests as f64) < expected / 2.0,
                "dead unit {} was tried {requests} times in {expected:.1} intervals",
                u.unit
            );
            report.push((u.unit, requests as f64, 0.0));
            continue;
        }
        let per_poll = plan(&u.profile).len() as u64;
        let polls = requests as f64 / per_poll as f64;
        report.push((u.unit, polls, expected));
        assert!(
            polls >= expected.floor() - 1.0 && polls <= expected.ceil() + 1.0,
            "unit {} got {polls} polls in a window of {expected:.1} intervals",
            u.unit
        );
    }
    eprintln!("(unit, polls measured, polls expected): {report:?}");
    let m = metrics_text(&http);
    assert_eq!(
        metric(
            &m,
            "gridwatch_modbus_units_backed_off",
            &["endpoint=\"bus\""]
        ),
        2.0,
        "{m}"
    );
    assert!(metric(&m, "gridwatch_modbus_timeouts_total", &["endpoint=\"bus\""]) >= 6.0);
    assert!(
        metric(
            &m,
            "gridwatch_modbus_unit_requests_total",
            &["unit=\"4\"", "result=\"timeout\""]
        ) >= 3.0,
        "{m}"
    );
    let dev = device_json(&http, &ids[&4]);
    assert_eq!(dev["status"], "offline", "{dev}");
    assert_eq!(dev["link"]["backed_off"], true, "{dev}");
    assert!(dev["link"]["timeouts"].as_u64().unwrap() >= 3, "{dev}");
    // A dead unit returns to its own interval once it answers.
    sim.clear_fault(4);
    wait_for("unit 4 back online", Duration::from_secs(25), || {
        let dev = device_json(&http, &ids[&4]);
        (dev["status"] == "online" && dev["link"]["backed_off"] == false).then_some(())
    });
    drop(daemon);
    rt.block_on(sim.shutdown());
}

/// Answers with a bad CRC are counted and retried, never stored.
#[test]
fn rtu_bad_crc_answers_are_counted_retried_and_never_stored() {
    let _g = lock();
    let s = services();
    let bus = PtyPair::new();
    let rt = rt();
    let line = RtuLine {
        baud: 115_200,
        bits_per_char: 11,
        pace: true,
    };
    let sim = rt
        .block_on(gridwatch_sim::start_rtu(sim_config(1, 3), &bus.a, line))
        .unwrap();
    let units = sim.units();
    // Unit 2: every 2nd answer corrupted (the retry gets a good one); unit 3: every answer.
    sim.set_fault(2, Fault::BadCrc(2));
    sim.set_fault(3, Fault::BadCrc(1));
    let endpoint = format!(
        "transport = \"rtu\"\ndevice = \"{}\"\nbaud = 115200\ntimeout = \"100ms\"\ncrc_retries = 1",
        bus.b.display()
    );
    let (setup, cfg) = daemon_config(&units, &endpoint, Duration::from_millis(500));
    let (daemon, http, db, ids) = start_daemon(setup, &cfg);
    wait_points(&s.influx1_url, &db, &units, &ids, &[3], 5);
    let c1: u64 = units.iter().map(|u| sim.corrupted_count(u.unit)).sum();
    let m = metrics_text(&http);
    let c2: u64 = units.iter().map(|u| sim.corrupted_count(u.unit)).sum();
    let crc = metric(
        &m,
        "gridwatch_modbus_crc_errors_total",
        &["endpoint=\"bus\""],
    ) as u64;
    eprintln!("corrupted answers sent {c1}..{c2}, counted by gridwatch {crc}");
    assert!(c1 > 0);
    assert!(
        crc + 1 >= c1 && crc <= c2,
        "counted {crc}, sent {c1}..{c2}: {m}"
    );
    assert!(
        metric(&m, "gridwatch_modbus_crc_retries_total", &[]) > 0.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "gridwatch_modbus_transport_errors_total", &[]),
        0.0,
        "{m}"
    );
    let served = sim.served();
    for u in &units {
        let n = assert_stored_equals_served(&s.influx1_url, &db, u, &ids[&u.unit], &served);
        if u.unit == 3 {
            assert_eq!(
                n, 0,
                "unit 3 only ever sent bad frames, yet {n} points were stored"
            );
        }
    }
    // Unit 2's polls are complete thanks to the retry.
    let dev2 = device_json(&http, &ids[&2]);
    assert_eq!(dev2["status"], "online", "{dev2}");
    assert!(dev2["link"]["crc_errors"].as_u64().unwrap() > 0, "{dev2}");
    let dev3 = device_json(&http, &ids[&3]);
    assert_eq!(dev3["status"], "offline", "{dev3}");
    assert!(
        dev3["last_error"].as_str().unwrap().contains("CRC"),
        "{dev3}"
    );
    // The alarm side of the same faults: only the unit that never gets a good answer
    // through raises an alarm, and it is communication loss (unit 2's retries succeed).
    let raised = wait_for("comm_loss on unit 3", Duration::from_secs(15), || {
        let list: Vec<serde_json::Value> = common::http()
            .get(format!("{http}/api/v1/alarms"))
            .send()
            .ok()?
            .json()
            .ok()?;
        let keys: Vec<(String, String)> = list
            .iter()
            .map(|a| {
                let f = |k: &str| a[k].as_str().unwrap_or("").to_string();
                (f("device"), f("rule"))
            })
            .collect();
        (!keys.is_empty()).then_some(keys)
    });
    assert_eq!(raised, [(ids[&3].clone(), "comm_loss".to_string())]);
    drop(daemon);
    rt.block_on(sim.shutdown());
}

/// The same over a TCP socket to a "converter" passing raw RTU frames, bad CRCs included.
#[test]
fn rtu_over_tcp_end_to_end() {
    let _g = lock();
    let s = services();
    let rt = rt();
    let line = RtuLine {
        baud: 38_400,
        bits_per_char: 11,
        pace: true,
    };
    let sim = rt
        .block_on(gridwatch_sim::start_rtu_over_tcp(sim_config(2, 6), line))
        .unwrap();
    let units = sim.units();
    sim.set_fault(3, Fault::BadCrc(3));
    sim.set_fault(7, Fault::Dead);
    let endpoint = format!(
        "transport = \"rtu-over-tcp\"\naddress = \"{}\"\nbaud = 38400\ntimeout = \"200ms\"",
        sim.local_addr()
    );
    let (setup, cfg) = daemon_config(&units, &endpoint, Duration::from_secs(1));
    let (daemon, http, db, ids) = start_daemon(setup, &cfg);
    wait_points(&s.influx1_url, &db, &units, &ids, &[7], 4);
    let served = sim.served();
    for u in &units {
        assert_stored_equals_served(&s.influx1_url, &db, u, &ids[&u.unit], &served);
    }
    let m = metrics_text(&http);
    assert!(
        metric(
            &m,
            "gridwatch_modbus_crc_errors_total",
            &["endpoint=\"bus\""]
        ) > 0.0,
        "{m}"
    );
    assert!(
        metric(&m, "gridwatch_modbus_timeouts_total", &["endpoint=\"bus\""]) > 0.0,
        "{m}"
    );
    // One TCP connection for the whole run: timeouts and CRC errors do not reconnect.
    assert_eq!(
        metric(&m, "gridwatch_modbus_connects_total", &["result=\"ok\""]),
        1.0,
        "{m}"
    );
    assert_eq!(device_json(&http, &ids[&3])["status"], "online");
    drop(daemon);
    rt.block_on(sim.shutdown());
}
