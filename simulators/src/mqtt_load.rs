//! The MQTT load harness: K smart meters publishing at an aggregate rate over C broker
//! connections, cheaply enough that the publisher is never what a benchmark measures.
//!
//! `scripts/bench-mqtt.sh` runs it in rate steps against mosquitto and the daemon. Meters are
//! split round-robin over the connections (meter `n` on connection `n % C`, as head-end
//! systems spread meters over a few client connections); each connection publishes its
//! share of the rate in ticks (`tick`, default 1 ms: the messages due by then are written
//! with one `write`), round-robin over its meters. Rate 0 means as fast as the socket takes
//! them.
//!
//! The payload is the JSON of [`crate::mqtt`] (the shape the daemon's reference mapping
//! reads, 13 fields):
//! `{"ts":"…","v":{"a":..,"b":..,"c":..},"i":{..},"p_kw":..,"pf":..,"f":..,"e_imp_kwh":..,
//! "clock":..,"event":null}`. At start every meter gets [`FRAMES`] value sets from the meter
//! model ([`crate::model::UnitModel`]) a few minutes apart, pre-formatted; a message takes the
//! next frame and adds its own `ts`, a growing energy register and the meter clock, so each
//! message is a distinct reading with plausible, slightly varying values. `ts` is the wall
//! clock in milliseconds, moved on by 1 ms when a meter publishes twice within the same
//! millisecond, so the daemon never sees a repeated `(device, ts)` (it drops those as
//! duplicates); a meter can thus run ahead of the clock only if it publishes more than
//! 1,000 times per second.
//!
//! The client side of MQTT 3.1.1 is written here (CONNECT, PUBLISH, PUBACK, DISCONNECT;
//! OASIS MQTT 3.1.1, 2014) rather than taken from rumqttc: rumqttc 0.25 flushes the socket
//! after every request (`EventLoop::select`), i.e. one `write` system call per message, which
//! at 100,000 msg/s costs the publisher about a core of a 2-core benchmark machine. Here a
//! tick's messages go out in one `write`.
//!
//! [`daemon_config`] writes the matching gridwatch `[mqtt]` section and `[[devices]]`; the
//! text is produced here, not with gridwatch's config types: this crate must not depend on
//! the daemon.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::model::{FleetParams, UnitInfo, UnitKind, UnitModel};

/// Pre-formatted value sets per meter; a meter cycles through them.
pub const FRAMES: usize = 4;

/// Messages encoded into one buffer before it is written (bounds a catch-up burst).
const CHUNK: u64 = 1024;

/// How long the end of a QoS 1 run waits for the broker's last PUBACKs.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// Seconds between two value frames of a meter.
const FRAME_STEP_S: f64 = 300.0;

/// Errors of the load publisher.
#[derive(Debug, thiserror::Error)]
pub enum MqttLoadError {
    /// `broker` is not `host:port`.
    #[error("broker address {0:?} is not host:port")]
    Broker(String),
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// Connecting to the broker failed.
    #[error("connection {conn}: cannot connect to {broker}: {source}")]
    Connect {
        /// Connection index.
        conn: usize,
        /// The broker address.
        broker: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The broker refused the CONNECT (return code, MQTT 3.1.1 §3.2.2.3).
    #[error("connection {conn}: broker refused the connection with return code {code}")]
    Refused {
        /// Connection index.
        conn: usize,
        /// CONNACK return code.
        code: u8,
    },
    /// The broker sent something that is not MQTT 3.1.1 where we expected an answer.
    #[error("connection {conn}: protocol error: {what}")]
    Protocol {
        /// Connection index.
        conn: usize,
        /// What was wrong.
        what: String,
    },
    /// Reading or writing the socket failed after connecting.
    #[error("connection {conn}: {source}")]
    Io {
        /// Connection index.
        conn: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Quality of service of the published messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: fire and forget.
    AtMostOnce,
    /// QoS 1: the broker acknowledges every message (PUBACK).
    AtLeastOnce,
}

impl Qos {
    /// 0 or 1.
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

/// What the load publisher does.
#[derive(Debug, Clone)]
pub struct MqttLoadConfig {
    /// Broker `host:port`.
    pub broker: String,
    /// Client ids are `{client_id}-{c}`, c = 0..connections.
    pub client_id: String,
    /// Number of meters.
    pub meters: u32,
    /// Aggregate messages per second over all connections; 0 = as fast as possible.
    pub rate: u64,
    /// How long to publish (also stops at `messages`, or when cancelled).
    pub duration: Duration,
    /// Total messages to publish; 0 = no limit.
    pub messages: u64,
    /// Client connections the meters are split across.
    pub connections: usize,
    /// QoS of every message.
    pub qos: Qos,
    /// QoS 1: most unacknowledged messages per connection.
    pub inflight: u16,
    /// Pacing tick.
    pub tick: Duration,
    /// Topics are `{topic_prefix}/{device}/telemetry`.
    pub topic_prefix: String,
    /// Device ids are `{id_prefix}{n:05}`, n = 1..=meters.
    pub id_prefix: String,
    /// Seed of the per-meter variation.
    pub seed: u64,
    /// Nominal phase voltage (V).
    pub nominal_voltage: f64,
}

impl Default for MqttLoadConfig {
    fn default() -> Self {
        MqttLoadConfig {
            broker: "127.0.0.1:1883".into(),
            client_id: "gridwatch-mqtt-load".into(),
            meters: 10_000,
            rate: 10_000,
            duration: Duration::from_secs(10),
            messages: 0,
            connections: 4,
            qos: Qos::AtMostOnce,
            inflight: 1000,
            tick: Duration::from_millis(1),
            topic_prefix: "meters".into(),
            id_prefix: "ML-".into(),
            seed: 1,
            nominal_voltage: 230.0,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Messages written completely to the broker connections.
    pub published: u64,
    /// QoS 1: messages the broker acknowledged (None for QoS 0).
    pub acked: Option<u64>,
    /// Seconds from the first message to the last.
    pub seconds: f64,
    /// The rate asked for (0 = as fast as possible).
    pub target_rate: u64,
    /// CPU seconds of this process while publishing (user + system, all threads).
    pub cpu_s: Option<f64>,
    /// Meters.
    pub meters: u32,
    /// Connections.
    pub connections: usize,
    /// QoS level.
    pub qos: u8,
    /// Payload bytes published.
    pub payload_bytes: u64,
    /// Topic bytes published.
    pub topic_bytes: u64,
}

impl LoadReport {
    /// Achieved messages per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.published as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The one-line JSON summary printed by `gridwatch-sim mqtt-load`.
    pub fn to_json(&self) -> String {
        let per_msg = |total: u64| {
            if self.published > 0 {
                total as f64 / self.published as f64
            } else {
                0.0
            }
        };
        let r1 = |x: f64| (x * 10.0).round() / 10.0;
        let cpu_pct = self
            .cpu_s
            .filter(|_| self.seconds > 0.0)
            .map(|c| r1(100.0 * c / self.seconds));
        serde_json::json!({
            "published": self.published,
            "acked": self.acked,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "rate_msg_per_s": r1(self.rate()),
            "target_rate_msg_per_s": self.target_rate,
            "cpu_s": self.cpu_s.map(|c| (c * 1000.0).round() / 1000.0),
            "cpu_pct_of_core": cpu_pct,
            "meters": self.meters,
            "connections": self.connections,
            "qos": self.qos,
            "payload_bytes_avg": r1(per_msg(self.payload_bytes)),
            "topic_bytes_avg": r1(per_msg(self.topic_bytes)),
        })
        .to_string()
    }
}

/// Device id of meter `n` (1-based).
pub fn meter_id(id_prefix: &str, n: u32) -> String {
    format!("{id_prefix}{n:05}")
}

/// Rounds to `decimals` places, as a meter display shows the value.
fn res(x: f64, decimals: i32) -> f64 {
    let k = 10f64.powi(decimals);
    (x * k).round() / k
}

/// One meter's constant parts.
struct MeterTemplate {
    topic: Box<[u8]>,
    /// `"v":{..},"i":{..},"p_kw":..,"pf":..,"f":..,` per frame.
    frames: [Box<[u8]>; FRAMES],
    /// Energy register at start, Wh.
    energy_wh: u64,
}

/// One meter while publishing.
struct MeterState {
    template: Arc<MeterTemplate>,
    sent: u64,
    last_ts_ms: i64,
}

fn templates(cfg: &MqttLoadConfig, start: Duration) -> Vec<Arc<MeterTemplate>> {
    let fleet = FleetParams {
        transformers: 0,
        meters: 0,
        nominal_voltage: cfg.nominal_voltage,
        seed: cfg.seed,
        ..FleetParams::default()
    };
    (1..=cfg.meters)
        .map(|n| {
            let id = meter_id(&cfg.id_prefix, n);
            let info = UnitInfo {
                unit: 0,
                kind: UnitKind::Meter,
                profile: "mqtt-json".into(),
                device_id: id.clone(),
                parent_unit: None,
            };
            // Keys apart from the Modbus unit ids and from `gridwatch-sim mqtt`'s meters.
            let mut model = UnitModel::with_key(info, &fleet, 2_000_000 + u64::from(n));
            let mut energy_wh = 0;
            let frames = std::array::from_fn(|k| {
                let q = model.sample(start.as_secs_f64() + k as f64 * FRAME_STEP_S, None, None);
                let get = |name: &str| q.get(name).unwrap_or(0.0);
                if k == 0 {
                    energy_wh = (get("energy_import") * 1000.0).max(0.0).round() as u64;
                }
                let mut s = String::with_capacity(160);
                let _ = write!(
                    s,
                    "\"v\":{{\"a\":{:.1},\"b\":{:.1},\"c\":{:.1}}},\
                     \"i\":{{\"a\":{:.3},\"b\":{:.3},\"c\":{:.3}}},\
                     \"p_kw\":{:.3},\"pf\":{:.3},\"f\":{:.3},",
                    res(get("voltage_a"), 1),
                    res(get("voltage_b"), 1),
                    res(get("voltage_c"), 1),
                    res(get("current_a"), 3),
                    res(get("current_b"), 3),
                    res(get("current_c"), 3),
                    res(get("active_power"), 3),
                    res(get("power_factor"), 3),
                    res(get("frequency"), 3),
                );
                s.into_bytes().into_boxed_slice()
            });
            Arc::new(MeterTemplate {
                topic: format!("{}/{id}/telemetry", cfg.topic_prefix)
                    .into_bytes()
                    .into_boxed_slice(),
                frames,
                energy_wh,
            })
        })
        .collect()
}

/// The RFC 3339 text of a millisecond timestamp, formatted once per distinct value.
#[derive(Default)]
struct TsCache {
    ms: i64,
    text: Vec<u8>,
}

impl TsCache {
    fn get(&mut self, ms: i64) -> &[u8] {
        if self.text.is_empty() || self.ms != ms {
            self.ms = ms;
            self.text.clear();
            let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
            let _ = write!(self.text, "{}", humantime::format_rfc3339_millis(t));
        }
        &self.text
    }
}

/// Appends the next message of `m` (payload only) to `out`; `now_ms` is the wall clock.
fn payload(m: &mut MeterState, now_ms: i64, ts: &mut TsCache, out: &mut Vec<u8>) {
    let ts_ms = now_ms.max(m.last_ts_ms + 1);
    m.last_ts_ms = ts_ms;
    let t = &m.template;
    let frame = &t.frames[(m.sent % FRAMES as u64) as usize];
    // One watt-hour per message: the register only grows, as a real one does.
    let e = t.energy_wh + m.sent;
    m.sent += 1;
    out.extend_from_slice(b"{\"ts\":\"");
    out.extend_from_slice(ts.get(ts_ms));
    out.extend_from_slice(b"\",");
    out.extend_from_slice(frame);
    let _ = write!(
        out,
        "\"e_imp_kwh\":{}.{:03},\"clock\":{},\"event\":null}}",
        e / 1000,
        e % 1000,
        ts_ms.div_euclid(1000)
    );
}

// ------------------------------------------------------------------ MQTT 3.1.1 packets

/// Appends the Remaining Length of a packet (§2.2.3: 7 bits per byte, at most 4 bytes).
fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s[..usize::from(len)]);
}

/// CONNECT (§3.1): protocol level 4, clean session, no credentials.
fn connect_packet(client_id: &str, keep_alive_s: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + client_id.len());
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level: 3.1.1
    body.push(0x02); // connect flags: clean session
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    let mut out = vec![0x10];
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Appends a PUBLISH (§3.3); `pkid` is required for QoS 1 and ignored for QoS 0.
fn put_publish(out: &mut Vec<u8>, topic: &[u8], qos: Qos, pkid: u16, payload: &[u8]) {
    let id_len = if qos == Qos::AtLeastOnce { 2 } else { 0 };
    out.push(0x30 | (qos.level() << 1));
    put_remaining_length(out, 2 + topic.len() + id_len + payload.len());
    put_str(out, topic);
    if qos == Qos::AtLeastOnce {
        out.extend_from_slice(&pkid.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// DISCONNECT (§3.14).
const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// Reads one packet's first byte and body (the body into `body`).
async fn read_packet(r: &mut BufReader<OwnedReadHalf>, body: &mut Vec<u8>) -> std::io::Result<u8> {
    let first = r.read_u8().await?;
    let mut len = 0usize;
    for i in 0..4 {
        let b = r.read_u8().await?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            body.resize(len, 0);
            r.read_exact(body).await?;
            return Ok(first);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "remaining length longer than 4 bytes",
    ))
}

fn split_broker(broker: &str) -> Result<(String, u16), MqttLoadError> {
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or_else(|| MqttLoadError::Broker(broker.into()))?;
    let port = port
        .parse()
        .map_err(|_| MqttLoadError::Broker(broker.into()))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// CPU seconds (user + system, all threads) of this process, from `/proc/self/stat`.
pub fn process_cpu_s() -> Option<f64> {
    // USER_HZ: the unit of utime/stime in /proc, fixed at 100 in the Linux user ABI (times(2)).
    const USER_HZ: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 2 (comm) is in parentheses and may hold spaces: count from after it.
    let rest = stat.rsplit_once(") ")?.1;
    let mut fields = rest.split_ascii_whitespace();
    // After comm: state is field 3, so utime (14) and stime (15) are the 12th and 13th here.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

// ------------------------------------------------------------------ connections

/// Counters one connection shares with its ack reader.
#[derive(Default)]
struct Acks {
    acked: AtomicU64,
    notify: Notify,
}

/// What one connection did.
#[derive(Default)]
struct ConnTotals {
    published: u64,
    acked: u64,
    payload_bytes: u64,
    topic_bytes: u64,
}

struct Conn {
    index: usize,
    writer: OwnedWriteHalf,
    reader: tokio::task::JoinHandle<Result<(), MqttLoadError>>,
    acks: Arc<Acks>,
}

async fn open(index: usize, cfg: &MqttLoadConfig) -> Result<Conn, MqttLoadError> {
    let (host, port) = split_broker(&cfg.broker)?;
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|source| MqttLoadError::Connect {
            conn: index,
            broker: cfg.broker.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let (read, mut writer) = stream.into_split();
    let io = |source| MqttLoadError::Io {
        conn: index,
        source,
    };
    // Keep alive 0 turns the mechanism off (§3.1.2.10): a run lasts seconds, not minutes.
    writer
        .write_all(&connect_packet(&format!("{}-{index}", cfg.client_id), 0))
        .await
        .map_err(io)?;
    let mut reader = BufReader::new(read);
    let mut body = Vec::new();
    let first = read_packet(&mut reader, &mut body).await.map_err(io)?;
    if first != 0x20 || body.len() != 2 {
        return Err(MqttLoadError::Protocol {
            conn: index,
            what: format!("expected CONNACK, got packet type {:#04x}", first >> 4),
        });
    }
    if body[1] != 0 {
        return Err(MqttLoadError::Refused {
            conn: index,
            code: body[1],
        });
    }
    let acks = Arc::new(Acks::default());
    let reader = tokio::spawn(read_acks(index, reader, Arc::clone(&acks)));
    Ok(Conn {
        index,
        writer,
        reader,
        acks,
    })
}

/// Counts PUBACKs until the broker closes the connection.
async fn read_acks(
    conn: usize,
    mut r: BufReader<OwnedReadHalf>,
    acks: Arc<Acks>,
) -> Result<(), MqttLoadError> {
    let mut body = Vec::with_capacity(8);
    loop {
        match read_packet(&mut r, &mut body).await {
            Ok(first) if first >> 4 == 4 => {
                acks.acked.fetch_add(1, Ordering::Relaxed);
                acks.notify.notify_one();
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(source) => return Err(MqttLoadError::Io { conn, source }),
        }
    }
}

/// What one connection publishes.
struct Plan {
    meters: Vec<MeterState>,
    /// Messages per second of this connection (0 = as fast as possible).
    rate: u64,
    /// Most messages (u64::MAX = no limit).
    limit: u64,
    start: Instant,
    deadline: Instant,
}

async fn publish(
    mut conn: Conn,
    mut plan: Plan,
    cfg: Arc<MqttLoadConfig>,
    cancel: CancellationToken,
) -> Result<ConnTotals, MqttLoadError> {
    let index = conn.index;
    let io = |source| MqttLoadError::Io {
        conn: index,
        source,
    };
    let mut totals = ConnTotals::default();
    let mut tick = tokio::time::interval_at(plan.start, cfg.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut buf: Vec<u8> = Vec::with_capacity(300 * CHUNK as usize);
    let mut body: Vec<u8> = Vec::with_capacity(300);
    let mut ts = TsCache::default();
    let mut next_meter = 0usize;
    let mut pkid: u16 = 0;
    let window = u64::from(cfg.inflight.max(1));
    let mut sent: u64 = 0;
    let mut final_tick = false;
    'run: while sent < plan.limit && !plan.meters.is_empty() {
        let due = if plan.rate == 0 {
            if cancel.is_cancelled() || Instant::now() >= plan.deadline {
                break;
            }
            sent + CHUNK
        } else {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            // At the deadline the last ones due go out, so rate × duration messages in all.
            let elapsed = plan.start.elapsed().min(plan.deadline - plan.start);
            final_tick = plan.start + elapsed >= plan.deadline;
            u64::try_from(u128::from(plan.rate) * elapsed.as_nanos() / 1_000_000_000)
                .unwrap_or(u64::MAX)
        }
        .min(plan.limit);
        while sent < due {
            buf.clear();
            let n = (due - sent).min(CHUNK);
            let now = now_ms();
            for _ in 0..n {
                if cfg.qos == Qos::AtLeastOnce {
                    while sent - conn.acks.acked.load(Ordering::Relaxed) >= window {
                        // Window full: send what is encoded, then wait for PUBACKs.
                        if !buf.is_empty() {
                            conn.writer.write_all(&buf).await.map_err(io)?;
                            buf.clear();
                        }
                        tokio::select! {
                            _ = cancel.cancelled() => break 'run,
                            _ = conn.acks.notify.notified() => {}
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                    pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                }
                let count = plan.meters.len();
                let m = &mut plan.meters[next_meter];
                next_meter = (next_meter + 1) % count;
                body.clear();
                payload(m, now, &mut ts, &mut body);
                put_publish(&mut buf, &m.template.topic, cfg.qos, pkid, &body);
                totals.payload_bytes += body.len() as u64;
                totals.topic_bytes += m.template.topic.len() as u64;
                sent += 1;
            }
            conn.writer.write_all(&buf).await.map_err(io)?;
            // Counted once on the socket: a message is published when its bytes were written.
            totals.published = sent;
            if plan.rate == 0 {
                // Let the other connections and the ack readers run.
                tokio::task::yield_now().await;
            }
        }
        if final_tick {
            break;
        }
    }
    totals.published = sent;
    if cfg.qos == Qos::AtLeastOnce {
        let waited = tokio::time::timeout(ACK_WAIT, async {
            while conn.acks.acked.load(Ordering::Relaxed) < sent {
                tokio::select! {
                    _ = conn.acks.notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
        .await;
        if waited.is_err() {
            tracing::warn!(
                connection = index,
                sent,
                acked = conn.acks.acked.load(Ordering::Relaxed),
                "mqtt-load: not every message was acknowledged in time"
            );
        }
    }
    totals.acked = conn.acks.acked.load(Ordering::Relaxed);
    conn.writer.write_all(&DISCONNECT).await.map_err(io)?;
    let _ = conn.writer.shutdown().await;
    // The broker closes the connection after DISCONNECT; the reader then ends.
    match tokio::time::timeout(Duration::from_secs(2), &mut conn.reader).await {
        Ok(Ok(Err(e))) => tracing::debug!(error = %e, "mqtt-load: reader ended with an error"),
        Ok(_) => {}
        Err(_) => conn.reader.abort(),
    }
    Ok(totals)
}

/// Connects every connection, publishes until `duration`, `messages` or `cancel`, waits for
/// the broker's acknowledgements (QoS 1), disconnects, and reports. Must run inside a tokio
/// runtime.
pub async fn run(
    cfg: MqttLoadConfig,
    cancel: CancellationToken,
) -> Result<LoadReport, MqttLoadError> {
    if cfg.meters == 0 {
        return Err(MqttLoadError::Config("meters must be at least 1".into()));
    }
    if cfg.connections == 0 {
        return Err(MqttLoadError::Config(
            "connections must be at least 1".into(),
        ));
    }
    if cfg.tick.is_zero() {
        return Err(MqttLoadError::Config(
            "tick must be longer than zero".into(),
        ));
    }
    split_broker(&cfg.broker)?;
    let connections = cfg.connections.min(cfg.meters as usize);
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let all = templates(&cfg, wall);
    let mut shares: Vec<Vec<MeterState>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, t) in all.into_iter().enumerate() {
        shares[i % connections].push(MeterState {
            template: t,
            sent: 0,
            last_ts_ms: 0,
        });
    }
    let mut conns = Vec::with_capacity(connections);
    for c in 0..connections {
        conns.push(open(c, &cfg).await?);
    }
    let cfg = Arc::new(cfg);
    let split = |total: u64, c: usize| {
        let n = connections as u64;
        total / n + u64::from((c as u64) < total % n)
    };
    let cpu0 = process_cpu_s();
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = Vec::with_capacity(connections);
    for (c, (conn, meters)) in conns.into_iter().zip(shares).enumerate() {
        let plan = Plan {
            meters,
            rate: split(cfg.rate, c),
            limit: if cfg.messages == 0 {
                u64::MAX
            } else {
                split(cfg.messages, c)
            },
            start,
            deadline,
        };
        tasks.push(tokio::spawn(publish(
            conn,
            plan,
            Arc::clone(&cfg),
            cancel.clone(),
        )));
    }
    let mut report = LoadReport {
        published: 0,
        acked: (cfg.qos == Qos::AtLeastOnce).then_some(0),
        seconds: 0.0,
        target_rate: cfg.rate,
        cpu_s: None,
        meters: cfg.meters,
        connections,
        qos: cfg.qos.level(),
        payload_bytes: 0,
        topic_bytes: 0,
    };
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(t)) => {
                report.published += t.published;
                report.payload_bytes += t.payload_bytes;
                report.topic_bytes += t.topic_bytes;
                if let Some(a) = report.acked.as_mut() {
                    *a += t.acked;
                }
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(MqttLoadError::Protocol {
                    conn: usize::MAX,
                    what: format!("publisher task failed: {e}"),
                });
            }
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    report.cpu_s = match (cpu0, process_cpu_s()) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

// ------------------------------------------------------------------ daemon config

/// What [`daemon_config`] writes.
#[derive(Debug, Clone)]
pub struct DaemonLayout<'a> {
    /// Broker `host:port` the daemon subscribes at.
    pub broker: &'a str,
    /// The daemon's MQTT client id.
    pub client_id: &'a str,
    /// Topic prefix the meters publish under.
    pub topic_prefix: &'a str,
    /// Device id prefix of the meters.
    pub id_prefix: &'a str,
    /// Number of meters.
    pub meters: u32,
    /// Meters per transformer (`[[devices]]` kind transformer, the meters' parent); 0 = no
    /// transformers (the daemon then warns that meters have no transformer above them).
    pub meters_per_transformer: u32,
    /// `true`: no `[[devices]]`, the daemon registers meters on their first message.
    pub auto_register: bool,
}

/// The JSON field mapping of the payload (the reference `config/gridwatch.toml` mapping).
pub const METER_FIELDS: &str = r#"fields = [
  { path = "v.a", name = "voltage_a", unit = "V" },
  { path = "v.b", name = "voltage_b", unit = "V" },
  { path = "v.c", name = "voltage_c", unit = "V" },
  { path = "i.a", name = "current_a", unit = "A" },
  { path = "i.b", name = "current_b", unit = "A" },
  { path = "i.c", name = "current_c", unit = "A" },
  { path = "p_kw", name = "active_power", unit = "kW" },
  { path = "pf", name = "power_factor" },
  { path = "f", name = "frequency", unit = "Hz" },
  { path = "e_imp_kwh", name = "energy_import", unit = "kWh" },
  { path = "clock", name = "meter_time", unit = "s" },
  { path = "event", name = "last_gasp", equals = "last_gasp" },
  { path = "event", name = "power_restored", equals = "power_restored" },
]"#;

/// Id of transformer `t` (1-based) above the meters.
pub fn transformer_id(id_prefix: &str, t: u32) -> String {
    format!("{id_prefix}TX-{t:03}")
}

/// gridwatch configuration text for the harness: `[mqtt]` with one JSON subscription and,
/// unless `auto_register`, one `[[devices]]` per meter (and per transformer above them), to
/// append after the `[daemon]` and `[storage]` sections. The daemon subscribes with QoS 1
/// (it has no setting for it); QoS 0 publishers are therefore delivered at QoS 0.
pub fn daemon_config(layout: &DaemonLayout<'_>) -> String {
    let per_tx = layout.meters_per_transformer;
    let mut out = String::with_capacity(1500 + layout.meters as usize * 160);
    let _ = write!(
        out,
        "[mqtt]\nbroker = {broker:?}\nclient_id = {client_id:?}\nauto_register = {auto}\n\
         reconnect_min = \"100ms\"\nreconnect_max = \"1s\"\n\n\
         [[mqtt.subscriptions]]\npattern = \"{prefix}/{{device}}/telemetry\"\nformat = \"json\"\n\
         kind = \"meter\"\nsite = \"Bench\"\nfeeder = \"F01\"\nexpected_interval = \"1m\"\n\
         timestamp = {{ path = \"ts\", format = \"rfc3339\" }}\n{fields}\n\n",
        broker = layout.broker,
        client_id = layout.client_id,
        auto = layout.auto_register,
        prefix = layout.topic_prefix,
        fields = METER_FIELDS,
    );
    if layout.auto_register {
        return out;
    }
    let feeder = |t: u32| format!("F{:02}", (t - 1) % 10 + 1);
    if per_tx > 0 {
        for t in 1..=layout.meters.div_ceil(per_tx) {
            let _ = write!(
                out,
                "[[devices]]\nid = \"{}\"\nkind = \"transformer\"\nsite = \"Bench\"\nfeeder = \"{}\"\n\
                 source = \"mqtt\"\ninterval = \"1h\"\nrated_kva = 630.0\nnominal_voltage = 230.0\n\n",
                transformer_id(layout.id_prefix, t),
                feeder(t),
            );
        }
    }
    for n in 1..=layout.meters {
        let _ = write!(
            out,
            "[[devices]]\nid = \"{}\"\nkind = \"meter\"\nsite = \"Bench\"\n",
            meter_id(layout.id_prefix, n)
        );
        match (n - 1).checked_div(per_tx) {
            Some(k) => {
                let t = k + 1;
                let _ = write!(
                    out,
                    "feeder = \"{}\"\nparent = \"{}\"\n",
                    feeder(t),
                    transformer_id(layout.id_prefix, t)
                );
            }
            None => out.push_str("feeder = \"F01\"\n"),
        }
        // `interval` is only the offline detection here (3 × 1 min silent): longer than any
        // pause between the benchmark's rate steps.
        out.push_str("source = \"mqtt\"\ninterval = \"1m\"\nnominal_voltage = 230.0\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cfg(meters: u32) -> MqttLoadConfig {
        MqttLoadConfig {
            meters,
            ..MqttLoadConfig::default()
        }
    }

    const T0: Duration = Duration::from_secs(1_795_420_800);

    fn state(t: &Arc<MeterTemplate>) -> MeterState {
        MeterState {
            template: Arc::clone(t),
            sent: 0,
            last_ts_ms: 0,
        }
    }

    #[test]
    fn payload_is_the_meter_json_with_distinct_timestamps() {
        let t = templates(&cfg(3), T0);
        assert_eq!(&*t[1].topic, b"meters/ML-00002/telemetry");
        let mut m = state(&t[1]);
        let mut ts = TsCache::default();
        let now = 1_795_420_800_250;
        let docs: Vec<serde_json::Value> = (0..FRAMES + 1)
            .map(|_| {
                let mut out = Vec::new();
                payload(&mut m, now, &mut ts, &mut out);
                serde_json::from_slice(&out).unwrap()
            })
            .collect();
        let d = &docs[0];
        assert_eq!(d["ts"], "2026-11-23T08:00:00.250Z");
        assert_eq!(docs[1]["ts"], "2026-11-23T08:00:00.251Z");
        assert_eq!(d["clock"], 1_795_420_800);
        assert!(d["event"].is_null());
        let obj = d.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        for k in [
            "ts",
            "v",
            "i",
            "p_kw",
            "pf",
            "f",
            "e_imp_kwh",
            "clock",
            "event",
        ] {
            assert!(keys.contains(&k), "{k} missing in {d}");
        }
        for p in ["a", "b", "c"] {
            let v = d["v"][p].as_f64().unwrap();
            assert!((v - 230.0).abs() < 15.0, "{d}");
            assert!(d["i"][p].as_f64().unwrap() >= 0.0);
        }
        assert!((d["f"].as_f64().unwrap() - 50.0).abs() < 0.2);
        // The register grows by 1 Wh per message; frames cycle.
        let e: Vec<f64> = docs
            .iter()
            .map(|d| d["e_imp_kwh"].as_f64().unwrap())
            .collect();
        assert!((e[1] - e[0] - 0.001).abs() < 1e-6, "{e:?}");
        assert_eq!(docs[0]["v"], docs[FRAMES]["v"]);
        // A second meter differs.
        let mut other = state(&t[2]);
        let mut out = Vec::new();
        payload(&mut other, now, &mut ts, &mut out);
        let o: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_ne!(o["i"], d["i"]);
    }

    #[test]
    fn remaining_length_encoding_matches_the_standard_examples() {
        // MQTT 3.1.1 §2.2.3, table 2.4: the boundaries of 1..4 byte lengths.
        for (len, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xff, 0x7f]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_151, vec![0xff, 0xff, 0x7f]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_remaining_length(&mut out, len);
            assert_eq!(out, bytes, "{len}");
        }
    }

    #[test]
    fn packets_match_rumqttc_encoding() {
        // rumqttc's own encoder is the oracle (its BytesMut is inferred, not named).
        let mut ours = Vec::new();
        put_publish(
            &mut ours,
            b"meters/ML-00001/telemetry",
            Qos::AtMostOnce,
            0,
            b"{\"x\":1}",
        );
        let mut theirs = Default::default();
        rumqttc::Publish::new(
            "meters/ML-00001/telemetry",
            rumqttc::QoS::AtMostOnce,
            "{\"x\":1}",
        )
        .write(&mut theirs)
        .unwrap();
        assert_eq!(ours, theirs.to_vec());

        let body = vec![b'x'; 300];
        let mut ours = Vec::new();
        put_publish(&mut ours, b"a/b", Qos::AtLeastOnce, 7, &body);
        let mut p = rumqttc::Publish::new("a/b", rumqttc::QoS::AtLeastOnce, body);
        p.pkid = 7;
        let mut theirs = Default::default();
        p.write(&mut theirs).unwrap();
        assert_eq!(ours, theirs.to_vec());

        let ours = connect_packet("load-0", 0);
        let mut c = rumqttc::Connect::new("load-0");
        c.keep_alive = 0;
        c.clean_session = true;
        let mut theirs = Default::default();
        c.write(&mut theirs).unwrap();
        assert_eq!(ours, theirs.to_vec());
    }

    #[test]
    fn daemon_config_declares_meters_under_transformers() {
        let text = daemon_config(&DaemonLayout {
            broker: "127.0.0.1:1883",
            client_id: "gw",
            topic_prefix: "bench",
            id_prefix: "ML-",
            meters: 250,
            meters_per_transformer: 100,
            auto_register: false,
        });
        let doc: toml::Table = text.parse().unwrap();
        let mqtt = doc["mqtt"].as_table().unwrap();
        assert_eq!(mqtt["auto_register"].as_bool(), Some(false));
        let sub = &mqtt["subscriptions"].as_array().unwrap()[0];
        assert_eq!(sub["pattern"].as_str(), Some("bench/{device}/telemetry"));
        assert_eq!(sub["fields"].as_array().unwrap().len(), 13);
        let devices = doc["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 3 + 250);
        let last = &devices[252];
        assert_eq!(last["id"].as_str(), Some("ML-00250"));
        assert_eq!(last["parent"].as_str(), Some("ML-TX-003"));
        assert_eq!(last["source"].as_str(), Some("mqtt"));

        let auto = daemon_config(&DaemonLayout {
            broker: "127.0.0.1:1883",
            client_id: "gw",
            topic_prefix: "bench",
            id_prefix: "ML-",
            meters: 250,
            meters_per_transformer: 100,
            auto_register: true,
        });
        let doc: toml::Table = auto.parse().unwrap();
        assert!(!doc.contains_key("devices"));
        assert_eq!(doc["mqtt"]["auto_register"].as_bool(), Some(true));
    }

    #[test]
    fn cpu_time_of_this_process_is_readable() {
        let c = process_cpu_s().unwrap();
        assert!(c >= 0.0);
    }
}
