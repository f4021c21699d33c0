//! Zero-loss acceptance tests of the telemetry spool: 50 simulated devices polled every
//! second by the real daemon, writing to VictoriaMetrics through a TCP proxy the test
//! switches between forwarding and refusing (the shared store itself is never stopped).
//! Polls are counted from the simulator's record of answered reads; points from the store.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A TCP proxy in front of the store that can refuse connections (accept and close).
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (up2, conns2) = (Arc::clone(&up), Arc::clone(&conns));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                {
                    let mut c = conns2.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, up, conns }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

struct Setup {
    rt: tokio::runtime::Runtime,
    sim: gridwatch_sim::ModbusSimHandle,
    proxy: Proxy,
    vm_url: String,
    prefix: String,
    data: tempfile::TempDir,
    http: SocketAddr,
    config: std::path::PathBuf,
}

const TRANSFORMERS: u16 = 10;
const METERS: u16 = 40;

/// 50 devices polled every `interval`, batches sealed every `flush` (batch_size is large).
fn setup(interval: &str, flush: &str) -> Setup {
    let s = services();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sim = rt
        .block_on(gridwatch_sim::start_modbus(
            gridwatch_sim::ModbusSimConfig {
                transformers: TRANSFORMERS,
                meters: METERS,
                meter_profile: "sdm630".into(),
                record: true,
                ..Default::default()
            },
        ))
        .unwrap();
    let target: SocketAddr = s.vm_url.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(target);
    let prefix = unique("spool");
    let data = Daemon::temp_dir();
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cfg = format!(
        r#"
[api]
auth = "off"

[daemon]
data_dir = "{data}"
http_listen = "{http}"

[storage.influx]
url = "http://{proxy}"
api = "v1"
db = "{prefix}"
flush_interval = "{flush}"
timeout = "2s"

[storage.spool]
fsync = "every_batch"

[[modbus.endpoints]]
name = "sim"
address = "{sim}"
max_in_flight = 4
timeout = "500ms"
reconnect_min = "100ms"
reconnect_max = "1s"
"#,
        data = data.path().display(),
        proxy = proxy.addr,
        sim = sim.local_addr(),
    );
    for unit in 1..=(TRANSFORMERS + METERS) {
        let (kind, profile) = if unit <= TRANSFORMERS {
            ("transformer", "transformer-monitor")
        } else {
            ("meter", "sdm630")
        };
        cfg.push_str(&format!(
            "\n[[devices]]\nid = \"{prefix}_{unit}\"\nkind = \"{kind}\"\nendpoint = \"sim\"\nunit_id = {unit}\nprofile = \"{profile}\"\ninterval = \"{interval}\"\n"
        ));
    }
    let config = data.path().join("gridwatch.toml");
    std::fs::write(&config, cfg).unwrap();
    Setup {
        rt,
        sim,
        proxy,
        vm_url: s.vm_url,
        prefix,
        data,
        http,
        config,
    }
}

impl Setup {
    fn start(&self) -> Daemon {
        let mut d = Daemon::spawn(&["run", "--config", self.config.to_str().unwrap()]);
        d.wait_for_log("gridwatch running", Duration::from_secs(20));
        d
    }

    fn readyz(&self) -> serde_json::Value {
        let resp = http()
            .get(format!("http://{}/readyz", self.http))
            .send()
            .unwrap();
        resp.json().unwrap()
    }

    /// Waits until the daemon's spool is empty and the store answers.
    fn wait_drained(&self, timeout: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(r) = http()
                .get(format!("http://{}/readyz", self.http))
                .send()
                .and_then(|r| r.json::<serde_json::Value>())
            {
                if r["spool"]["pending_points"] == 0 && r["store"]["ok"] == true {
                    return r;
                }
                last = r;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("spool not drained after {timeout:?}: {last}");
    }

    /// Polls per device id: every poll sends the device's planned reads in the same order,
    /// so the polls of a unit are its answered reads of the first planned address.
    fn polls(&self) -> BTreeMap<String, usize> {
        self.polls_with_times(&self.sim.served())
            .into_iter()
            .map(|(unit, times)| (format!("{}_{unit}", self.prefix), times.len()))
            .collect()
    }

    /// Distinct timestamps per device in the store (all its fields), checking that no
    /// timestamp appears twice in a series.
    fn stored(&self, want_total: usize) -> BTreeMap<String, usize> {
        let series = vm_export_wait(
            &self.vm_url,
            &format!("{{db=\"{}\"}}", self.prefix),
            0,
            Duration::from_secs(1),
        );
        let _ = want_total;
        let mut per_device: BTreeMap<String, std::collections::BTreeSet<i64>> = BTreeMap::new();
        for s in &series {
            // Delivery is at least once: when the link drops after the store ingested a
            // batch but before its 2xx arrived, the batch is sent again. InfluxDB overwrites
            // the identical point; VictoriaMetrics keeps both copies. A repeat must be the
            // same point (timestamp and value); two values at one timestamp would be a bug.
            for (w, v) in s.timestamps_ms.windows(2).zip(s.values.windows(2)) {
                assert!(w[0] <= w[1], "out of order in {}", s.name);
                if w[0] == w[1] {
                    assert_eq!(
                        v[0].to_bits(),
                        v[1].to_bits(),
                        "two values at one timestamp in {}",
                        s.name
                    );
                }
            }
            let dev = s.labels.get("device").cloned().unwrap_or_default();
            per_device.entry(dev).or_default().extend(&s.timestamps_ms);
        }
        per_device
            .into_iter()
            .map(|(d, ts)| (d, ts.len()))
            .collect()
    }

    /// Polls per device id answered in `[from_ns, to_ns]` (simulator clock = wall clock).
    fn polls_between(&self, from_ns: i64, to_ns: i64) -> BTreeMap<String, usize> {
        let all = self.sim.served();
        let mut out = BTreeMap::new();
        for (unit, polls) in self.polls_with_times(&all) {
            let n = polls
                .iter()
                .filter(|&&t| (from_ns..=to_ns).contains(&t))
                .count();
            out.insert(format!("{}_{unit}", self.prefix), n);
        }
        out
    }

    /// Answer times of every poll, per unit.
    fn polls_with_times(&self, served: &[gridwatch_sim::Served]) -> BTreeMap<u8, Vec<i64>> {
        let mut by_unit: BTreeMap<u8, Vec<(i64, u8, u16)>> = BTreeMap::new();
        for s in served {
            by_unit
                .entry(s.unit)
                .or_default()
                .push((s.at_ns, s.function, s.address));
        }
        by_unit
            .into_iter()
            .map(|(unit, mut reads)| {
                reads.sort_unstable();
                let first = (reads[0].1, reads[0].2);
                let times = reads
                    .iter()
                    .filter(|r| (r.1, r.2) == first)
                    .map(|r| r.0)
                    .collect();
                (unit, times)
            })
            .collect()
    }

    /// Waits until the store holds as many points as polls were made, per device.
    fn assert_exact(&self) -> (usize, usize) {
        let polls = self.polls();
        let total_polls: usize = polls.values().sum();
        assert_eq!(polls.len(), usize::from(TRANSFORMERS + METERS));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stored = self.stored(total_polls);
            let total: usize = stored.values().sum();
            if stored == polls {
                return (total_polls, total);
            }
            if Instant::now() > deadline {
                let diff: Vec<_> = polls
                    .iter()
                    .filter(|(d, n)| stored.get(*d) != Some(n))
                    .map(|(d, n)| (d.clone(), *n, stored.get(d).copied()))
                    .collect();
                panic!(
                    "store has {total} points for {total_polls} polls; (device, polls, stored): {diff:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Setup {
    /// Per device: every poll is stored, except possibly those in `in_flight` (answered
    /// just before a kill -9); never more points than polls.
    fn assert_at_most_in_flight_lost(&self, in_flight: &BTreeMap<String, usize>) -> (usize, usize) {
        let polls = self.polls();
        let total_polls: usize = polls.values().sum();
        assert_eq!(polls.len(), usize::from(TRANSFORMERS + METERS));
        let ok = |stored: &BTreeMap<String, usize>| {
            polls.iter().all(|(d, &n)| {
                let got = stored.get(d).copied().unwrap_or(0);
                let may_miss = in_flight.get(d).copied().unwrap_or(0);
                got <= n && got + may_miss >= n
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stored = self.stored(total_polls);
            let total: usize = stored.values().sum();
            if ok(&stored) {
                return (total_polls, total);
            }
            if Instant::now() > deadline {
                let diff: Vec<_> = polls
                    .iter()
                    .filter(|(d, n)| stored.get(*d) != Some(n))
                    .map(|(d, n)| (d.clone(), *n, stored.get(d).copied(), in_flight.get(d)))
                    .collect();
                panic!(
                    "store has {total} points for {total_polls} polls; (device, polls, stored, in flight at the kill): {diff:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

fn outage_secs() -> u64 {
    std::env::var("GRIDWATCH_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

#[test]
fn store_outage_loses_nothing() {
    let s = setup("1s", "1s");
    let mut d = s.start();
    std::thread::sleep(Duration::from_secs(3));
    s.proxy.set_up(false);
    let outage = outage_secs();
    std::thread::sleep(Duration::from_secs(outage));
    let during = s.readyz();
    assert_eq!(during["ready"], false, "{during}");
    assert!(
        during["spool"]["pending_points"].as_u64().unwrap() > 0,
        "{during}"
    );
    s.proxy.set_up(true);
    let t = Instant::now();
    s.wait_drained(Duration::from_secs(60));
    let drain = t.elapsed();
    let status = d.terminate();
    assert!(status.success(), "{status}: {}", d.log());
    let (polls, stored) = s.assert_exact();
    eprintln!(
        "store_outage_loses_nothing: 50 devices at 1 s, outage {outage} s, spool peak {} points, drained in {drain:?}; polls {polls} = points {stored}",
        during["spool"]["pending_points"]
    );
    drop(s.rt);
}

#[test]
fn kill_9_during_outage_loses_nothing() {
    // A long flush interval: the batch being filled at the kill holds up to 200 readings,
    // which only the journal saves.
    let s = setup("1s", "4s");
    let mut d = s.start();
    std::thread::sleep(Duration::from_secs(3));
    s.proxy.set_up(false);
    let outage = outage_secs();
    std::thread::sleep(Duration::from_secs(outage / 2));
    // Killed under full load, mid-batch: every reading is journaled as it is encoded, so
    // only a poll whose answer was still on its way through the daemon when the signal
    // hit may be missing — one answered within IN_FLIGHT before the kill.
    const IN_FLIGHT_NS: i64 = 250_000_000;
    let before = s.readyz();
    let killed_at = now_ns();
    d.kill();
    let in_flight = s.polls_between(killed_at - IN_FLIGHT_NS, killed_at);
    let mut d = s.start();
    let spool_dir = s.data.path().join("spool");
    assert!(
        d.log().contains("spool recovered unsent telemetry"),
        "{}",
        d.log()
    );
    std::thread::sleep(Duration::from_secs(outage - outage / 2));
    s.proxy.set_up(true);
    s.wait_drained(Duration::from_secs(60));
    let status = d.terminate();
    assert!(status.success(), "{status}");
    let (polls, stored) = s.assert_at_most_in_flight_lost(&in_flight);
    eprintln!(
        "kill_9_during_outage_loses_nothing: 50 devices at 1 s, outage {outage} s, killed under load with {} points spooled; polls {polls}, points {stored}, answered in the last 250 ms before the kill {}; spool dir {}",
        before["spool"]["pending_points"],
        in_flight.values().sum::<usize>(),
        spool_dir.display()
    );
    let mut log = String::new();
    let _ = std::fs::File::open(spool_dir.join("dead-letter.lp"))
        .map(|mut f| f.read_to_string(&mut log));
    assert!(log.is_empty(), "nothing may be dead-lettered: {log}");
}

#[test]
fn sigterm_under_load_exits_in_time_and_loses_nothing() {
    // 50 devices every 100 ms: 500 readings/s.
    let s = setup("100ms", "1s");
    let mut d = s.start();
    std::thread::sleep(Duration::from_secs(4));
    let t = Instant::now();
    let status = d.terminate();
    let first = t.elapsed();
    assert!(status.success(), "{status}");
    assert!(first < Duration::from_secs(10), "{first:?}");
    // Again, with the store down at the signal: the spool keeps what was not sent.
    let mut d = s.start();
    std::thread::sleep(Duration::from_secs(2));
    s.proxy.set_up(false);
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let status = d.terminate();
    let second = t.elapsed();
    assert!(status.success(), "{status}");
    assert!(second < Duration::from_secs(10), "{second:?}");
    assert!(
        d.log().contains("unsent points stay in the spool"),
        "{}",
        d.log()
    );
    s.proxy.set_up(true);
    let mut d = s.start();
    s.wait_drained(Duration::from_secs(60));
    let status = d.terminate();
    assert!(status.success());
    let (polls, stored) = s.assert_exact();
    eprintln!(
        "sigterm_under_load: 500 readings/s; exit {first:?} (store up), {second:?} (store down); polls {polls} = points {stored}"
    );
}
