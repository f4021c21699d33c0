//! Helpers for integration tests against the real services that `scripts/test.sh` (or
//! `eval "$(scripts/services.sh up)"`) started on loopback ports.
//!
//! Every service comes in through an environment variable. A test that needs one and does
//! not find it panics with the variable's name: tests never skip silently.
//!
//! Use from a test file with `mod common;`. Each file in `tests/` is its own crate and uses
//! only some helpers, hence the `dead_code` allowance.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

pub mod sim;
pub mod webdriver;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Timeout of every HTTP request made by these helpers.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ environment

/// The value of `name`, or a panic that says how to get it.
pub fn env_or_fail(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "environment variable {name} is not set: this test needs the services started by \
             ./scripts/test.sh (or `eval \"$(scripts/services.sh up)\"` for a local cargo test)"
        ),
    }
}

/// Addresses of the shared test services.
#[derive(Debug, Clone)]
pub struct Services {
    /// `host:port` of the anonymous mosquitto (`GRIDWATCH_TEST_MQTT`).
    pub mqtt: String,
    /// `host:port` of the mosquitto that requires user `gridwatch` / password `s3cret`
    /// (`GRIDWATCH_TEST_MQTT_AUTH`, credentials in `GRIDWATCH_TEST_MQTT_USER` / `_PASS`).
    pub mqtt_auth: String,
    /// Base URL of VictoriaMetrics (`GRIDWATCH_TEST_VM_URL`), no trailing slash.
    pub vm_url: String,
    /// Base URL of InfluxDB 1.x (`GRIDWATCH_TEST_INFLUX1_URL`), no trailing slash.
    pub influx1_url: String,
}

/// All service addresses; panics naming the first missing variable.
pub fn services() -> Services {
    Services {
        mqtt: env_or_fail("GRIDWATCH_TEST_MQTT"),
        mqtt_auth: env_or_fail("GRIDWATCH_TEST_MQTT_AUTH"),
        vm_url: env_or_fail("GRIDWATCH_TEST_VM_URL"),
        influx1_url: env_or_fail("GRIDWATCH_TEST_INFLUX1_URL"),
    }
}

/// `(user, password)` accepted by the auth broker.
pub fn mqtt_credentials() -> (String, String) {
    (
        env_or_fail("GRIDWATCH_TEST_MQTT_USER"),
        env_or_fail("GRIDWATCH_TEST_MQTT_PASS"),
    )
}

/// Splits `host:port`.
pub fn host_port(addr: &str) -> (String, u16) {
    let (host, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{addr:?} is not host:port"));
    let port = port
        .parse()
        .unwrap_or_else(|_| panic!("{addr:?}: port is not a number"));
    (host.to_string(), port)
}

// ------------------------------------------------------------------ small tools

/// A port that was free a moment ago on 127.0.0.1 (bound to 0, then released). Another
/// process can take it before the caller binds it; good enough for tests.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A name unique to this test run and call: `{prefix}_{pid}_{time}_{counter}`. Use it for
/// databases, device ids, topics, so tests sharing one VictoriaMetrics / InfluxDB / broker
/// (also across runs against long-lived `services.sh up` services) never see each other's
/// data. Only `[A-Za-z0-9_]` are added, so the result is a valid InfluxQL identifier when
/// the prefix is.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 100_000_000;
    format!("{prefix}_{}_{t}_{n}", std::process::id())
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

/// Relative comparison for values that went through a store: VictoriaMetrics keeps about
/// 12 significant digits (see [`vm_export`]); 1e-9 relative is far above that loss and
/// far below any real difference in a reading.
pub fn approx_eq(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

/// Blocking HTTP client with [`HTTP_TIMEOUT`].
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .unwrap()
}

/// Polls `url` until it answers 2xx; panics after `timeout` with the last error or status.
pub fn wait_http_ok(url: &str, timeout: Duration) {
    let client = http();
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(url).send() {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("status {}", r.status()),
            Err(e) => format!("error {e}"),
        };
        if Instant::now() >= deadline {
            panic!("{url} not ready after {timeout:?}: {last}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// POSTs `body` to `url` and panics (with the answer) unless the status is 2xx. Returns
/// the status code. Handy to write line protocol by hand in tests.
pub fn http_post(url: &str, body: &str) -> u16 {
    let resp = http()
        .post(url)
        .body(body.to_string())
        .send()
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().unwrap_or_default();
        panic!("POST {url}: status {status}: {text}");
    }
    status.as_u16()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------------------ VictoriaMetrics

/// One series from `/api/v1/export`.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSeries {
    /// `__name__`: `{measurement}_{field}` for line protocol writes.
    pub name: String,
    /// Every other label: line-protocol tags, plus `db` for v1 writes.
    pub labels: BTreeMap<String, String>,
    /// Values, oldest first (same order as `timestamps_ms`).
    pub values: Vec<f64>,
    /// Milliseconds since the epoch.
    pub timestamps_ms: Vec<i64>,
}

/// Makes every point written so far searchable (`GET /internal/force_flush`).
///
/// This alone is not enough to see a point stamped "now": see [`vm_export`].
pub fn vm_flush(vm_url: &str) {
    let url = format!("{vm_url}/internal/force_flush");
    let resp = http()
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
}

/// All series matching `selector` (e.g. `{device="TX-0701"}` or `transformer_oil_temp`),
/// via `GET /api/v1/export?match[]=SELECTOR&end=now+1d`, sorted by name then labels.
/// Call [`vm_flush`] first, or use [`vm_export_wait`].
///
/// What VictoriaMetrics (Debian 1.79.5) does with InfluxDB line protocol, checked against
/// the instance `scripts/services.sh` starts:
/// - metric name = `{measurement}_{field}`; tags become labels; a v1 write
///   (`POST /write?db=X`) adds the label `db="X"`; a v2 write
///   (`POST /api/v2/write?org=O&bucket=B`) adds **no** label: `bucket` and `org` are
///   dropped, so a test cannot tell buckets apart — select on a [`unique`] tag instead.
/// - integer fields (`1i`) and booleans (`true` → 1) become floats; string fields are
///   stored as 0 (no error).
/// - timestamps are truncated to milliseconds (`-influxTrimTimestamp=1ms`).
/// - values are **not** kept bit-exact: they are stored as a decimal with ~12 significant
///   digits, `65.30000305175781` reads back as `65.3000030517`, `230.12345678901` as
///   `230.123456789`, `9007199254740993` as `9007199254740992`. Compare with
///   [`approx_eq`], never `==`, for values with many digits.
/// - the export's default `end` is *now truncated to the second*, so a point stamped in the
///   current second stays invisible for up to 1 s even after a flush; hence the explicit
///   `end` one day ahead. Without `/internal/force_flush`, new points take 1–10 s to show.
pub fn vm_export(vm_url: &str, selector: &str) -> Vec<VmSeries> {
    let url = format!("{vm_url}/api/v1/export");
    let end_s = now_ns() / 1_000_000_000 + 86_400;
    let end = end_s.to_string();
    let resp = http()
        .get(&url)
        .query(&[("match[]", selector), ("end", end.as_str())])
        .send()
        .unwrap_or_else(|e| panic!("GET {url} match[]={selector}: {e}"));
    let status = resp.status();
    let body = resp.text().unwrap();
    assert!(
        status.is_success(),
        "GET {url} match[]={selector}: {status}: {body}"
    );
    let mut out: Vec<VmSeries> = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| parse_vm_export_line(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    out.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    out
}

fn parse_vm_export_line(line: &str) -> Result<VmSeries, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("bad export JSON ({e})"))?;
    let metric = v["metric"].as_object().ok_or("no metric object")?;
    let mut labels = BTreeMap::new();
    let mut name = String::new();
    for (k, val) in metric {
        let val = val
            .as_str()
            .ok_or("label value is not a string")?
            .to_string();
        if k == "__name__" {
            name = val;
        } else {
            labels.insert(k.clone(), val);
        }
    }
    let values = v["values"]
        .as_array()
        .ok_or("no values")?
        .iter()
        // VictoriaMetrics writes NaN/Inf as JSON strings? Not for line protocol input,
        // which cannot carry them; a non-number here is a bug worth seeing.
        .map(|x| x.as_f64().ok_or("value is not a number"))
        .collect::<Result<Vec<_>, _>>()?;
    let timestamps_ms = v["timestamps"]
        .as_array()
        .ok_or("no timestamps")?
        .iter()
        .map(|x| x.as_i64().ok_or("timestamp is not an integer"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(VmSeries {
        name,
        labels,
        values,
        timestamps_ms,
    })
}

/// Flushes and exports until the series matching `selector` hold at least `min_points`
/// points in total (the daemon writes asynchronously); panics after `timeout` showing what
/// was there.
pub fn vm_export_wait(
    vm_url: &str,
    selector: &str,
    min_points: usize,
    timeout: Duration,
) -> Vec<VmSeries> {
    let deadline = Instant::now() + timeout;
    loop {
        vm_flush(vm_url);
        let series = vm_export(vm_url, selector);
        let n: usize = series.iter().map(|s| s.values.len()).sum();
        if n >= min_points {
            return series;
        }
        if Instant::now() >= deadline {
            panic!(
                "VictoriaMetrics: {selector} has {n} points after {timeout:?}, wanted \
                 {min_points}: {series:#?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------ InfluxDB 1.x

/// `CREATE DATABASE "db"` (idempotent in InfluxDB 1.x). Writes to a missing database
/// fail with 404 `database not found`.
pub fn influx1_create_db(url: &str, db: &str) {
    let q = format!("CREATE DATABASE {}", influxql_ident(db));
    let endpoint = format!("{url}/query");
    let resp = http()
        .post(&endpoint)
        .form(&[("q", q.as_str())])
        .send()
        .unwrap_or_else(|e| panic!("POST {endpoint} {q}: {e}"));
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    assert!(status.is_success(), "{q}: {status}: {body}");
    assert!(!body.contains("\"error\""), "{q}: {body}");
}

/// Runs an InfluxQL read query: `GET /query?db=DB&q=QUERY&epoch=ns`, so times come back as
/// integer nanoseconds. Panics on an HTTP error or a statement error in the answer.
pub fn influxql(url: &str, db: &str, query: &str) -> serde_json::Value {
    let endpoint = format!("{url}/query");
    let resp = http()
        .get(&endpoint)
        .query(&[("db", db), ("q", query), ("epoch", "ns")])
        .send()
        .unwrap_or_else(|e| panic!("GET {endpoint} {query}: {e}"));
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    assert!(status.is_success(), "{query}: {status}: {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{query}: bad JSON {e}: {body}"));
    if let Some(results) = v["results"].as_array() {
        for r in results {
            if let Some(err) = r.get("error") {
                panic!("{query}: {err}");
            }
        }
    }
    v
}

/// `(time ns, value)` of `SELECT "field" FROM "measurement" WHERE "device"='device'`,
/// oldest first; empty when nothing matches. Integer fields come back as `f64` too.
pub fn influx1_points(
    url: &str,
    db: &str,
    measurement: &str,
    field: &str,
    device: &str,
) -> Vec<(i64, f64)> {
    let q = format!(
        "SELECT {} FROM {} WHERE \"device\"={} ORDER BY time ASC",
        influxql_ident(field),
        influxql_ident(measurement),
        influxql_string(device)
    );
    let v = influxql(url, db, &q);
    let Some(values) = v["results"][0]["series"][0]["values"].as_array() else {
        return Vec::new();
    };
    values
        .iter()
        .map(|row| {
            let ts = row[0]
                .as_i64()
                .unwrap_or_else(|| panic!("{q}: bad time {row}"));
            let val = row[1]
                .as_f64()
                .unwrap_or_else(|| panic!("{q}: not a number {row}"));
            (ts, val)
        })
        .collect()
}

/// `"name"` with `"` and `\` escaped, for InfluxQL identifiers.
pub fn influxql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `'value'` with `'` and `\` escaped, for InfluxQL string literals.
pub fn influxql_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

// ------------------------------------------------------------------ mosquitto restarts

/// `scripts/services.sh` of this checkout.
pub fn services_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh")
}

fn run_services_script(cmd: &str) {
    let conf = env_or_fail("GRIDWATCH_TEST_MOSQUITTO_CONF");
    let out = Command::new("bash")
        .arg(services_script())
        .arg(cmd)
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running services.sh {cmd}: {e}"));
    assert!(
        out.status.success(),
        "services.sh {cmd} {conf} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the shared anonymous broker (`GRIDWATCH_TEST_MQTT`); returns once it is gone.
///
/// Every test using that broker in the same test binary sees the outage: put broker-restart
/// tests in their own file under `tests/` (cargo runs test binaries one after another).
pub fn mosquitto_stop() {
    run_services_script("stop-mosquitto");
}

/// Starts the shared anonymous broker again on the same port; returns once it accepts
/// connections. Its retained messages and sessions are gone (persistence is off).
pub fn mosquitto_start() {
    run_services_script("start-mosquitto");
}

/// [`mosquitto_stop`] then [`mosquitto_start`].
pub fn mosquitto_restart() {
    run_services_script("restart-mosquitto");
}

// ------------------------------------------------------------------ the daemon

/// The real `gridwatch` binary running as a child process, stdout and stderr going to
/// `daemon.log` in its own temp dir (also a place for its config and spool).
///
/// The binary path comes from `env!("CARGO_BIN_EXE_gridwatch")`, which cargo defines only
/// when compiling integration tests (`tests/*.rs`) of the package that owns the `gridwatch`
/// bin target — not in unit tests, not in the `simulators` crate. Cargo builds the binary
/// before running the tests.
///
/// Dropping it SIGKILLs the process; if the test is panicking, the log is printed first.
pub struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Path of the binary under test.
    pub fn bin() -> &'static str {
        env!("CARGO_BIN_EXE_gridwatch")
    }

    /// A new temp dir for files the daemon needs before it starts; pass it to
    /// [`Daemon::spawn_in`].
    pub fn temp_dir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("gridwatch-test-")
            .tempdir()
            .unwrap()
    }

    /// Starts `gridwatch ARGS` in a fresh temp dir, inheriting the test's environment.
    pub fn spawn(args: &[&str]) -> Daemon {
        Self::spawn_in(Self::temp_dir(), args, &[])
    }

    /// Starts `gridwatch ARGS` with extra environment variables, owning `dir` (removed when
    /// the `Daemon` is dropped). The working directory stays the package root, like the
    /// test's, so relative paths such as `config/profiles/...` resolve.
    pub fn spawn_in(dir: tempfile::TempDir, args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let log_path = dir.path().join("daemon.log");
        let log = File::create(&log_path).unwrap();
        let child = Command::new(Self::bin())
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {} {args:?}: {e}", Self::bin()));
        Daemon {
            child,
            dir,
            log_path,
            status: None,
        }
    }

    /// The daemon's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout` or if
    /// the daemon exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.try_wait() {
                panic!(
                    "daemon exited ({status}) before logging {needle:?}; log:\n{}",
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "daemon did not log {needle:?} within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// SIGKILL and reap. No-op if it already exited.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.status = Some(self.child.wait().unwrap());
        }
    }

    /// SIGTERM (what systemd sends), then waits up to 15 s for the exit (the daemon
    /// promises to shut down within 10 s). Panics with the log if it does not exit in time
    /// (after SIGKILLing it).
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        // `kill` via sh: a builtin there, so no procps and no `unsafe` libc call needed.
        let pid = self.pid().to_string();
        let sent = Command::new("sh")
            .args(["-c", "kill -TERM \"$1\"", "sh", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid} failed: {sent}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        panic!(
            "daemon ignored SIGTERM for 15 s (killed); log:\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- gridwatch daemon log ({}) -----\n{}\n----- end of daemon log -----",
                self.log_path.display(),
                self.log()
            );
        }
        self.kill();
    }
}

/// The daemon running inside the test process on `rt` (for tests that need its config
/// built in code); stop it with [`InProcess::stop`].
pub struct InProcess {
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), gridwatch::DaemonError>>,
}

impl InProcess {
    /// Loads `text` as a config (panicking with the errors and the text) and runs it.
    pub fn start(rt: &tokio::runtime::Runtime, text: &str) -> InProcess {
        let loaded = gridwatch::config::load_str(
            text,
            "<test>",
            Path::new("."),
            &gridwatch::config::profile::BUILTIN_PROFILES,
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = rt.spawn(gridwatch::run(loaded, shutdown.clone()));
        InProcess { shutdown, task }
    }

    /// Shuts it down (as on SIGTERM) and checks it stopped cleanly.
    pub fn stop(self, rt: &tokio::runtime::Runtime) {
        self.shutdown.cancel();
        rt.block_on(self.task).unwrap().unwrap();
    }
}

/// The port of `http_listen = "127.0.0.1:PORT"` in a daemon config text.
pub fn http_port_of(config: &str) -> u16 {
    config
        .lines()
        .find(|l| l.starts_with("http_listen"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim_end_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no http_listen in\n{config}"))
}
