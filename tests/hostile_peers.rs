//! Hostile peers: a Modbus server that answers garbage, wrong transaction or unit ids,
//! truncated frames, oversized length fields or hangs up mid-frame; a store that is slow,
//! answers 500, loops redirects or refuses the data. Each must end in a counted error and a
//! reconnect — never a panic, never a growing number of connections or tasks.
//!
//! The daemon runs in-process (`gridwatch::run`) so its task count can be watched.
//! The MQTT case (a broker that disconnects repeatedly) is not here: the MQTT source is
//! being written on another branch.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Conns {
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
}

impl Conns {
    fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_open.fetch_max(now, Ordering::SeqCst);
    }
    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ModbusMode {
    Garbage,
    WrongTransactionId,
    WrongUnitId,
    Truncated,
    OversizedLength,
    CloseMidFrame,
}

/// A valid read response to `req` (a 12-byte read request), with the given tid and unit.
fn response(req: &[u8; 12], tid: u16, unit: u8) -> Vec<u8> {
    let fc = req[7];
    let qty = u16::from_be_bytes([req[10], req[11]]);
    let data_len = if fc <= 2 { qty.div_ceil(8) } else { qty * 2 } as usize;
    let mut out = Vec::new();
    out.extend_from_slice(&tid.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&((3 + data_len) as u16).to_be_bytes());
    out.push(unit);
    out.push(fc);
    out.push(data_len as u8);
    out.extend(std::iter::repeat_n(0x42, data_len));
    out
}

async fn hostile_modbus(mode: ModbusMode) -> (SocketAddr, Arc<Conns>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Conns::default());
    let c = Arc::clone(&conns);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            c.opened();
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let mut req = [0u8; 12];
                while sock.read_exact(&mut req).await.is_ok() {
                    let tid = u16::from_be_bytes([req[0], req[1]]);
                    let unit = req[6];
                    let good = response(&req, tid, unit);
                    let reply = match mode {
                        ModbusMode::Garbage => {
                            (0..40u8).map(|i| i.wrapping_mul(37) ^ 0xA5).collect()
                        }
                        ModbusMode::WrongTransactionId => response(&req, tid.wrapping_add(1), unit),
                        ModbusMode::WrongUnitId => response(&req, tid, unit.wrapping_add(1)),
                        ModbusMode::Truncated => good[..good.len() / 2].to_vec(),
                        ModbusMode::OversizedLength => {
                            let mut r = good.clone();
                            r[4] = 0xFF;
                            r[5] = 0xFF;
                            r
                        }
                        ModbusMode::CloseMidFrame => good[..5].to_vec(),
                    };
                    if sock.write_all(&reply).await.is_err() {
                        break;
                    }
                    if matches!(mode, ModbusMode::CloseMidFrame) {
                        break;
                    }
                }
                c.closed();
            });
        }
    });
    (addr, conns)
}

fn config(modbus: SocketAddr, store: Option<SocketAddr>, data: &Path, http: SocketAddr) -> String {
    let mut cfg = format!(
        r#"
[api]
auth = "off"

[daemon]
data_dir = "{data}"
http_listen = "{http}"

[[modbus.endpoints]]
name = "ep"
address = "{modbus}"
timeout = "300ms"
connect_timeout = "1s"
reconnect_min = "50ms"
reconnect_max = "300ms"

[[devices]]
id = "HOSTILE-1"
kind = "transformer"
endpoint = "ep"
unit_id = 1
profile = "transformer-monitor"
interval = "100ms"
"#,
        data = data.display()
    );
    if let Some(store) = store {
        cfg.push_str(&format!(
            "\n[storage.influx]\nurl = \"http://{store}\"\napi = \"v1\"\ndb = \"hostile\"\nflush_interval = \"200ms\"\ntimeout = \"1s\"\n"
        ));
    }
    cfg
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Running {
    http: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), gridwatch::DaemonError>>,
    _data: tempfile::TempDir,
    data_path: std::path::PathBuf,
}

fn start(modbus: SocketAddr, store: Option<SocketAddr>) -> Running {
    let data = tempfile::tempdir().unwrap();
    let http = free_addr();
    let text = config(modbus, store, data.path(), http);
    let loaded = gridwatch::config::load_str(
        &text,
        "<test>",
        Path::new("."),
        &gridwatch::config::profile::BUILTIN_PROFILES,
    )
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(gridwatch::run(loaded, stop.clone()));
    Running {
        http,
        stop,
        task,
        data_path: data.path().to_path_buf(),
        _data: data,
    }
}

async fn get(url: String) -> (u16, String) {
    let r = reqwest::Client::new().get(&url).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn stop(r: Running) {
    r.stop.cancel();
    let res = tokio::time::timeout(Duration::from_secs(10), r.task)
        .await
        .expect("daemon stops within 10 s")
        .expect("daemon task did not panic");
    res.unwrap();
}

async fn modbus_case(mode: ModbusMode) {
    let (addr, conns) = hostile_modbus(mode).await;
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let r = start(addr, None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, m) = get(format!("http://{}/metrics", r.http)).await;
    let errors = metric(&m, "gridwatch_modbus_transport_errors_total")
        + metric(&m, "gridwatch_modbus_timeouts_total");
    let ok = metric(
        &m,
        "gridwatch_modbus_polls_total{endpoint=\"ep\",result=\"ok\"}",
    );
    let tasks_mid = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tasks_late = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(errors >= 3.0, "{mode:?}: errors {errors}\n{m}");
    assert_eq!(
        ok, 0.0,
        "{mode:?}: a hostile answer was taken as a good poll"
    );
    let max_open = conns.max_open.load(Ordering::SeqCst);
    assert!(
        max_open <= 2,
        "{mode:?}: {max_open} connections open at once"
    );
    // Tasks do not grow with the number of failures (the hostile server's own per-connection
    // tasks come and go; allow a few).
    assert!(
        tasks_late <= tasks_mid + 3,
        "{mode:?}: tasks grew {tasks_before} -> {tasks_mid} -> {tasks_late}"
    );
    let (code, body) = get(format!("http://{}/readyz", r.http)).await;
    stop(r).await;
    eprintln!(
        "{mode:?}: {errors} counted errors, {} connections (max {max_open} open), tasks {tasks_mid} -> {tasks_late}, readyz {code} {body}",
        conns.accepted.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_server_answering_garbage() {
    modbus_case(ModbusMode::Garbage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_server_with_wrong_transaction_id() {
    modbus_case(ModbusMode::WrongTransactionId).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_server_with_wrong_unit_id() {
    modbus_case(ModbusMode::WrongUnitId).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_server_sending_truncated_frames() {
    modbus_case(ModbusMode::Truncated).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_server_with_oversized_length_field() {
    modbus_case(ModbusMode::OversizedLength).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_server_closing_mid_frame() {
    modbus_case(ModbusMode::CloseMidFrame).await;
}

// ------------------------------------------------------------------ hostile store

const STORE_OK: u8 = 0;
const STORE_SLOW: u8 = 1;
const STORE_500: u8 = 2;
const STORE_REDIRECT_LOOP: u8 = 3;
const STORE_REJECT: u8 = 4;

async fn hostile_store(mode: Arc<AtomicU8>) -> (SocketAddr, Arc<Conns>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Conns::default());
    let accepted_points = Arc::new(AtomicUsize::new(0));
    let (c, pts) = (Arc::clone(&conns), Arc::clone(&accepted_points));
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            c.opened();
            let (c, mode, pts) = (Arc::clone(&c), Arc::clone(&mode), Arc::clone(&pts));
            tokio::spawn(async move {
                let mut buf = Vec::new();
                'conn: loop {
                    // Read one request: headers, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'conn,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 65536];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => break 'conn,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
                    buf.drain(..head_end + len);
                    let reply: String = match mode.load(Ordering::SeqCst) {
                        STORE_OK => {
                            pts.fetch_add(body.lines().count(), Ordering::SeqCst);
                            "HTTP/1.1 204 No Content\r\n\r\n".into()
                        }
                        STORE_SLOW => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            "HTTP/1.1 204 No Content\r\n\r\n".into()
                        }
                        STORE_500 => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops".into(),
                        STORE_REDIRECT_LOOP => "HTTP/1.1 307 Temporary Redirect\r\nlocation: /write?db=hostile\r\ncontent-length: 0\r\n\r\n".into(),
                        _ => "HTTP/1.1 400 Bad Request\r\ncontent-length: 26\r\n\r\nfield type conflict: bad!!".into(),
                    };
                    if sock.write_all(reply.as_bytes()).await.is_err() {
                        break;
                    }
                }
                c.closed();
            });
        }
    });
    (addr, conns, accepted_points)
}

async fn store_case(bad: u8, name: &str) {
    let sim = gridwatch_sim::start_modbus(gridwatch_sim::ModbusSimConfig {
        transformers: 1,
        meters: 0,
        ..Default::default()
    })
    .await
    .unwrap();
    let mode = Arc::new(AtomicU8::new(bad));
    let (store, conns, accepted) = hostile_store(Arc::clone(&mode)).await;
    let r = start(sim.local_addr(), Some(store));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, m) = get(format!("http://{}/metrics", r.http)).await;
    let (code, body) = get(format!("http://{}/readyz", r.http)).await;
    let tasks_mid = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let write_errors = metric(&m, "gridwatch_write_errors_total");
    let dead = metric(&m, "gridwatch_points_dead_lettered_total");
    if bad == STORE_REJECT {
        assert!(dead > 0.0, "{name}: nothing dead-lettered\n{m}");
        let dl = std::fs::read_to_string(r.data_path.join("spool/dead-letter.lp")).unwrap();
        assert!(
            dl.starts_with("# ") && dl.contains("HTTP 400: field type conflict"),
            "{dl}"
        );
        assert_eq!(write_errors, 0.0, "{name}: a 4xx must not be retried");
    } else {
        assert!(write_errors >= 1.0, "{name}: {m}");
        assert_eq!(code, 503, "{name}: {body}");
        assert!(body.contains("store failing"), "{body}");
    }
    // Bounded, not growing: the slow store holds each request 5 s while the writer gives up
    // after its 1 s timeout and retries with backoff, so at most 5 s / 1 s + 1 requests can
    // still be held by the server at once; a leak would grow with the run.
    let max_open = conns.max_open.load(Ordering::SeqCst);
    assert!(max_open <= 6, "{name}: {max_open} connections open at once");
    // The store recovers: what was spooled arrives and /readyz turns 200.
    mode.store(STORE_OK, Ordering::SeqCst);
    let mut ready = (0, String::new());
    for _ in 0..200 {
        ready = get(format!("http://{}/readyz", r.http)).await;
        if ready.0 == 200 && ready.1.contains("\"pending_points\":0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready.0, 200, "{name}: {}", ready.1);
    // Short-lived tasks (HTTP connections, event-log writes, alarm timers) come and go; a
    // leak does not go away. Give the transient ones a moment to finish, then compare.
    let mut tasks_late = usize::MAX;
    for _ in 0..50 {
        tasks_late = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if tasks_late <= tasks_mid + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tasks_late <= tasks_mid + 3,
        "{name}: tasks {tasks_mid} -> {tasks_late}"
    );
    stop(r).await;
    sim.shutdown().await;
    eprintln!(
        "{name}: {write_errors} write errors, {dead} dead-lettered points, readyz {code} while bad, {} points accepted after recovery, {} connections (max {max_open} open), tasks {tasks_mid} -> {tasks_late}",
        accepted.load(Ordering::SeqCst),
        conns.accepted.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_answering_slowly() {
    store_case(STORE_SLOW, "slow store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_answering_500() {
    store_case(STORE_500, "store answering 500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_in_a_redirect_loop() {
    store_case(STORE_REDIRECT_LOOP, "redirect loop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_rejecting_the_data_dead_letters_it() {
    store_case(STORE_REJECT, "store rejecting data").await;
}
