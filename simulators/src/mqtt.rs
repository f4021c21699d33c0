//! Smart meters publishing JSON telemetry over MQTT, with injectable faults.
//!
//! [`start_mqtt`] connects one client to a broker and, every `interval`, publishes one QoS 1
//! message per meter to `{topic_prefix}/{device}/telemetry`. Values come from the same
//! meter physics as the Modbus simulator ([`crate::model::UnitModel`]), rounded to the
//! resolution a real meter reports. The payload:
//!
//! ```json
//! {"ts":"2026-11-23T10:00:00.250Z",
//!  "v":{"a":230.1,"b":229.8,"c":231.0},      // phase voltages, V
//!  "i":{"a":12.345,"b":11.2,"c":13.001},     // phase currents, A
//!  "p_kw":8.123, "pf":0.951, "f":50.012,     // active power kW, power factor, Hz
//!  "e_imp_kwh":12345.678,                     // import energy register, kWh (only grows)
//!  "clock":1795420800,                        // the meter's own clock, Unix seconds
//!  "event":null}                              // or "last_gasp" / "power_restored"
//! ```
//!
//! A last-gasp message carries only `ts` and `event`. Faults ([`MeterFault`]) change what a
//! meter sends; the [`MqttSimHandle`] sets and clears them, counts messages per meter,
//! optionally records every published value, and shuts down after the broker has
//! acknowledged everything that was published.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, QoS};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::model::{FleetParams, Phase, Quantities, UnitInfo, UnitKind, UnitModel};

/// Errors from the MQTT meter simulator.
#[derive(Debug, thiserror::Error)]
pub enum MqttSimError {
    /// `broker` is not `host:port`.
    #[error("broker address {0:?} is not host:port")]
    Broker(String),
    /// The interval is zero.
    #[error("interval must be longer than zero")]
    Interval,
    /// Bad fault text.
    #[error("{0}")]
    Fault(String),
}

/// A fault of one MQTT meter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MeterFault {
    /// Supply lost: one `last_gasp` message, then silence; clearing it sends
    /// `power_restored` with full values.
    Outage,
    /// Voltage sag: all phases ~0.85 pu.
    Sag,
    /// Voltage swell: all phases ~1.11 pu.
    Swell,
    /// One phase gone: ~0 V, no current.
    PhaseLoss(Phase),
    /// Broken neutral: phase voltages drift apart (one high, one low), a classic danger sign.
    NeutralLoss,
    /// The energy register runs backwards (a meter defect or tampering).
    EnergyBackwards,
    /// Every value frozen at what it was when the fault started (only `ts` moves).
    Stuck,
    /// The meter's clock is off by this many seconds (positive = ahead).
    ClockSkew(i64),
}

impl std::str::FromStr for MeterFault {
    type Err = String;
    /// `outage` (or `last_gasp`), `sag`, `swell`, `phase_loss:b`, `neutral_loss`,
    /// `energy_backwards`, `stuck`, `clock_skew:900` (seconds, may be negative).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let f = match kind.to_ascii_lowercase().replace('-', "_").as_str() {
            "outage" | "last_gasp" => MeterFault::Outage,
            "sag" => MeterFault::Sag,
            "swell" => MeterFault::Swell,
            "phase_loss" => MeterFault::PhaseLoss(
                arg.ok_or("phase_loss needs a phase, e.g. phase_loss:b")?
                    .parse()?,
            ),
            "neutral_loss" => MeterFault::NeutralLoss,
            "energy_backwards" => MeterFault::EnergyBackwards,
            "stuck" => MeterFault::Stuck,
            "clock_skew" => MeterFault::ClockSkew(
                arg.ok_or("clock_skew needs seconds, e.g. clock_skew:900")?
                    .parse()
                    .map_err(|e| format!("clock_skew seconds: {e}"))?,
            ),
            other => {
                return Err(format!(
                    "unknown meter fault {other:?} (expected outage, sag, swell, phase_loss:X, \
                     neutral_loss, energy_backwards, stuck, clock_skew:SECONDS)"
                ));
            }
        };
        Ok(f)
    }
}

/// What the simulator does.
#[derive(Debug, Clone)]
pub struct MqttSimConfig {
    /// Broker `host:port`.
    pub broker: String,
    /// MQTT client id of the simulator's one connection.
    pub client_id: String,
    /// User name (empty = anonymous).
    pub username: String,
    /// Password.
    pub password: String,
    /// Number of meters.
    pub meters: u32,
    /// Publish interval of every meter.
    pub interval: Duration,
    /// Topics are `{topic_prefix}/{device}/telemetry`.
    pub topic_prefix: String,
    /// Device ids are `{id_prefix}{n:04}`, n = 1..=meters.
    pub id_prefix: String,
    /// Seed for per-meter variation.
    pub seed: u64,
    /// Nominal phase voltage (V).
    pub nominal_voltage: f64,
    /// Keep every published value for [`MqttSimHandle::records`] (tests).
    pub record: bool,
}

impl Default for MqttSimConfig {
    fn default() -> Self {
        MqttSimConfig {
            broker: "127.0.0.1:1883".into(),
            client_id: "gridwatch-sim".into(),
            username: String::new(),
            password: String::new(),
            meters: 10,
            interval: Duration::from_secs(1),
            topic_prefix: "meters".into(),
            id_prefix: "MQ-".into(),
            seed: 1,
            nominal_voltage: 230.0,
            record: false,
        }
    }
}

/// One published message as gridwatch should store it (canonical field names).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Device id.
    pub device: String,
    /// The payload's timestamp, ns since the epoch (millisecond resolution).
    pub ts_ns: i64,
    /// Values by canonical field name (`voltage_a`, ..., `last_gasp` = 1.0 ...).
    pub values: Vec<(&'static str, f64)>,
}

struct Meter {
    id: String,
    topic: String,
    model: UnitModel,
    fault: Option<MeterFault>,
    /// Outage: `last_gasp` already sent.
    dark: bool,
    /// Outage cleared: send `power_restored` next.
    restored: bool,
    frozen: Option<Quantities>,
    backwards_kwh: f64,
    published: Arc<AtomicU64>,
}

struct Shared {
    meters: Mutex<Vec<Meter>>,
    index: HashMap<String, usize>,
    records: Mutex<Vec<Record>>,
    record: bool,
    connected: AtomicBool,
    requested: AtomicU64,
}

/// A running MQTT meter simulator.
pub struct MqttSimHandle {
    shared: Arc<Shared>,
    counts: Vec<(String, Arc<AtomicU64>)>,
    stop_publishing: CancellationToken,
    publisher: JoinHandle<()>,
    eventloop: JoinHandle<()>,
    drained: CancellationToken,
}

/// Rounds to `decimals` places so the JSON shows what a meter display would.
fn res(x: f64, decimals: i32) -> f64 {
    let k = 10f64.powi(decimals);
    (x * k).round() / k
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Meter {
    /// The payload and the canonical record of this meter at `now`; `None` = silent.
    fn sample(&mut self, now: Duration) -> Option<(String, Record)> {
        let skew = match self.fault {
            Some(MeterFault::ClockSkew(s)) => s,
            _ => 0,
        };
        // `ts` is the head-end's time of the reading; `clock` is the meter's own real-time
        // clock (whole seconds, as DLMS clocks report), which is what a skew fault moves.
        let ts_ms = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
        let clock = i64::try_from(now.as_secs()).unwrap_or(i64::MAX) + skew;
        let ts_time = UNIX_EPOCH + Duration::from_millis(u64::try_from(ts_ms).unwrap_or(0));
        let ts = humantime::format_rfc3339_millis(ts_time).to_string();
        let ts_ns = ts_ms.saturating_mul(1_000_000);
        if self.fault == Some(MeterFault::Outage) {
            if self.dark {
                return None;
            }
            self.dark = true;
            let payload = json!({ "ts": ts, "event": "last_gasp" }).to_string();
            let rec = Record {
                device: self.id.clone(),
                ts_ns,
                values: vec![("last_gasp", 1.0)],
            };
            return Some((payload, rec));
        }
        let model_fault = match self.fault {
            Some(MeterFault::Sag) => Some(crate::model::Fault::UnderVoltage),
            Some(MeterFault::Swell) => Some(crate::model::Fault::OverVoltage),
            Some(MeterFault::PhaseLoss(p)) => Some(crate::model::Fault::PhaseLoss(p)),
            _ => None,
        };
        let mut q = self.model.sample(now.as_secs_f64(), model_fault, None);
        match self.fault {
            Some(MeterFault::Stuck) => match &self.frozen {
                Some(f) => q = f.clone(),
                None => self.frozen = Some(q.clone()),
            },
            _ => self.frozen = None,
        }
        let get = |n: &str| q.get(n).unwrap_or(0.0);
        let mut v = [get("voltage_a"), get("voltage_b"), get("voltage_c")];
        let mut i = [get("current_a"), get("current_b"), get("current_c")];
        if self.fault == Some(MeterFault::NeutralLoss) {
            // Floating star point: the lightly loaded phase rises toward line voltage, the
            // heavily loaded one sags; currents follow their voltages through the loads.
            let scale = [1.32, 0.71, 0.97];
            for p in 0..3 {
                v[p] *= scale[p];
                i[p] *= scale[p];
            }
        }
        let mut energy = get("energy_import");
        if self.fault == Some(MeterFault::EnergyBackwards) {
            self.backwards_kwh += 0.5;
        }
        energy -= self.backwards_kwh;
        let event = if self.restored {
            self.restored = false;
            Some("power_restored")
        } else {
            None
        };
        let v = v.map(|x| res(x, 1));
        let i = i.map(|x| res(x, 3));
        let p_kw = res(get("active_power"), 3);
        let pf = res(get("power_factor"), 3);
        let f = res(get("frequency"), 3);
        let e = res(energy, 3);
        let payload = json!({
            "ts": ts,
            "v": { "a": v[0], "b": v[1], "c": v[2] },
            "i": { "a": i[0], "b": i[1], "c": i[2] },
            "p_kw": p_kw,
            "pf": pf,
            "f": f,
            "e_imp_kwh": e,
            "clock": clock,
            "event": event,
        })
        .to_string();
        let mut values = vec![
            ("voltage_a", v[0]),
            ("voltage_b", v[1]),
            ("voltage_c", v[2]),
            ("current_a", i[0]),
            ("current_b", i[1]),
            ("current_c", i[2]),
            ("active_power", p_kw),
            ("power_factor", pf),
            ("frequency", f),
            ("energy_import", e),
            ("meter_time", clock as f64),
        ];
        if event.is_some() {
            values.push(("power_restored", 1.0));
        }
        let rec = Record {
            device: self.id.clone(),
            ts_ns,
            values,
        };
        Some((payload, rec))
    }
}

fn split_broker(broker: &str) -> Result<(String, u16), MqttSimError> {
    let (host, port) = broker
        .rsplit_once(':')
        .ok_or_else(|| MqttSimError::Broker(broker.into()))?;
    let port = port
        .parse()
        .map_err(|_| MqttSimError::Broker(broker.into()))?;
    Ok((host.to_string(), port))
}

/// Device id of meter `n` (1-based) under `cfg`.
pub fn meter_id(cfg: &MqttSimConfig, n: u32) -> String {
    format!("{}{n:04}", cfg.id_prefix)
}

/// Connects to the broker and starts publishing (must run inside a tokio runtime). The
/// connection is made in the background and retried; see [`MqttSimHandle::wait_connected`].
pub fn start_mqtt(cfg: MqttSimConfig) -> Result<MqttSimHandle, MqttSimError> {
    if cfg.interval.is_zero() {
        return Err(MqttSimError::Interval);
    }
    let (host, port) = split_broker(&cfg.broker)?;
    let fleet = FleetParams {
        transformers: 0,
        meters: 0,
        nominal_voltage: cfg.nominal_voltage,
        seed: cfg.seed,
        ..FleetParams::default()
    };
    let mut meters = Vec::with_capacity(cfg.meters as usize);
    let mut index = HashMap::new();
    let mut counts = Vec::new();
    for n in 1..=cfg.meters {
        let id = meter_id(&cfg, n);
        let info = UnitInfo {
            unit: 0,
            kind: UnitKind::Meter,
            profile: "mqtt-json".into(),
            device_id: id.clone(),
            parent_unit: None,
        };
        let published = Arc::new(AtomicU64::new(0));
        counts.push((id.clone(), Arc::clone(&published)));
        index.insert(id.clone(), meters.len());
        meters.push(Meter {
            topic: format!("{}/{id}/telemetry", cfg.topic_prefix),
            id,
            // Keys far from Modbus unit ids so MQTT meters differ from the Modbus fleet.
            model: UnitModel::with_key(info, &fleet, 1_000_000 + u64::from(n)),
            fault: None,
            dark: false,
            restored: false,
            frozen: None,
            backwards_kwh: 0.0,
            published,
        });
    }
    let shared = Arc::new(Shared {
        meters: Mutex::new(meters),
        index,
        records: Mutex::new(Vec::new()),
        record: cfg.record,
        connected: AtomicBool::new(false),
        requested: AtomicU64::new(0),
    });

    let mut opts = MqttOptions::new(cfg.client_id.clone(), host, port);
    opts.set_keep_alive(Duration::from_secs(15))
        .set_inflight(200)
        .set_request_channel_capacity(1000);
    if !cfg.username.is_empty() {
        opts.set_credentials(cfg.username.clone(), cfg.password.clone());
    }
    let (client, eventloop) = AsyncClient::new(opts, 1000);
    let stop_publishing = CancellationToken::new();
    let drained = CancellationToken::new();
    let eventloop = tokio::spawn(drive(
        eventloop,
        client.clone(),
        Arc::clone(&shared),
        stop_publishing.clone(),
        drained.clone(),
    ));
    let publisher = tokio::spawn(publish_loop(
        client,
        Arc::clone(&shared),
        cfg.interval,
        stop_publishing.clone(),
    ));
    Ok(MqttSimHandle {
        shared,
        counts,
        stop_publishing,
        publisher,
        eventloop,
        drained,
    })
}

async fn publish_loop(
    client: AsyncClient,
    shared: Arc<Shared>,
    interval: Duration,
    stop: CancellationToken,
) {
    // Wait for the first connection so the first samples are not queued behind a connect.
    while !shared.connected.load(Ordering::Relaxed) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = unix_now();
        let batch: Vec<(String, String, Record, Arc<AtomicU64>)> = {
            let mut meters = shared.meters.lock().unwrap_or_else(|e| e.into_inner());
            meters
                .iter_mut()
                .filter_map(|m| {
                    m.sample(now)
                        .map(|(p, r)| (m.topic.clone(), p, r, Arc::clone(&m.published)))
                })
                .collect()
        };
        for (topic, payload, record, count) in batch {
            // A tick is published whole even when stop arrives meanwhile, so that every
            // counted message is one the broker got.
            if client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
            shared.requested.fetch_add(1, Ordering::Relaxed);
            count.fetch_add(1, Ordering::Relaxed);
            if shared.record {
                shared
                    .records
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(record);
            }
        }
    }
}

/// Polls the event loop (reconnecting after errors) until publishing stopped and every
/// requested message went out and was acknowledged; then disconnects.
async fn drive(
    mut el: EventLoop,
    client: AsyncClient,
    shared: Arc<Shared>,
    stopped: CancellationToken,
    drained: CancellationToken,
) {
    let mut sent: u64 = 0;
    let mut disconnecting = false;
    loop {
        if stopped.is_cancelled()
            && !disconnecting
            && sent >= shared.requested.load(Ordering::Relaxed)
            && el.state.inflight() == 0
        {
            disconnecting = client.try_disconnect().is_ok();
            if !disconnecting {
                break;
            }
        }
        let ev = if stopped.is_cancelled() {
            tokio::select! {
                ev = el.poll() => ev,
                // Draining: re-check the exit condition now and then while idle.
                _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
            }
        } else {
            tokio::select! {
                ev = el.poll() => ev,
                _ = stopped.cancelled() => continue,
            }
        };
        match ev {
            Ok(Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                shared.connected.store(true, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => sent += 1,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => {
                shared.connected.store(false, Ordering::Relaxed);
                if disconnecting {
                    break;
                }
                tracing::warn!(error = %e, "mqtt simulator: broker connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    drained.cancel();
}

impl MqttSimHandle {
    /// Device ids of the meters, in order.
    pub fn device_ids(&self) -> Vec<String> {
        self.counts.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Waits until the simulator is connected to the broker (false after `timeout`).
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.shared.connected.load(Ordering::Relaxed) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Sets the fault of `device`; false for an unknown device.
    pub fn set_fault(&self, device: &str, fault: MeterFault) -> bool {
        self.with_meter(device, |m| {
            if m.fault != Some(fault) {
                m.fault = Some(fault);
                m.dark = false;
                m.frozen = None;
            }
        })
    }

    /// Clears the fault of `device` (after an outage the next message is `power_restored`);
    /// false for an unknown device.
    pub fn clear_fault(&self, device: &str) -> bool {
        self.with_meter(device, |m| {
            if m.fault == Some(MeterFault::Outage) {
                m.restored = true;
            }
            m.fault = None;
            m.dark = false;
            m.frozen = None;
        })
    }

    /// The current fault of `device`.
    pub fn fault(&self, device: &str) -> Option<MeterFault> {
        let i = *self.shared.index.get(device)?;
        let meters = self.shared.meters.lock().unwrap_or_else(|e| e.into_inner());
        meters.get(i).and_then(|m| m.fault)
    }

    fn with_meter(&self, device: &str, f: impl FnOnce(&mut Meter)) -> bool {
        let Some(&i) = self.shared.index.get(device) else {
            return false;
        };
        let mut meters = self.shared.meters.lock().unwrap_or_else(|e| e.into_inner());
        match meters.get_mut(i) {
            Some(m) => {
                f(m);
                true
            }
            None => false,
        }
    }

    /// Messages published by `device` so far (0 for an unknown device).
    pub fn published(&self, device: &str) -> u64 {
        self.counts
            .iter()
            .find(|(id, _)| id == device)
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Messages published by every meter so far.
    pub fn published_total(&self) -> u64 {
        self.counts
            .iter()
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Every published message so far (empty unless `record` was set).
    pub fn records(&self) -> Vec<Record> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops publishing, waits (up to `timeout`) until the broker acknowledged every
    /// published message, disconnects, and returns the total published.
    pub async fn shutdown(self, timeout: Duration) -> u64 {
        self.stop_publishing.cancel();
        let _ = self.publisher.await;
        if tokio::time::timeout(timeout, self.drained.cancelled())
            .await
            .is_err()
        {
            tracing::warn!("mqtt simulator: not every message was acknowledged before the timeout");
            self.eventloop.abort();
        }
        let _ = self.eventloop.await;
        self.counts
            .iter()
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter() -> Meter {
        let cfg = MqttSimConfig::default();
        let info = UnitInfo {
            unit: 0,
            kind: UnitKind::Meter,
            profile: "mqtt-json".into(),
            device_id: "MQ-0001".into(),
            parent_unit: None,
        };
        let fleet = FleetParams::default();
        Meter {
            id: meter_id(&cfg, 1),
            topic: "meters/MQ-0001/telemetry".into(),
            model: UnitModel::with_key(info, &fleet, 1_000_001),
            fault: None,
            dark: false,
            restored: false,
            frozen: None,
            backwards_kwh: 0.0,
            published: Arc::new(AtomicU64::new(0)),
        }
    }

    const T0: Duration = Duration::from_secs(1_795_420_800);

    fn values(rec: &Record) -> HashMap<&'static str, f64> {
        rec.values.iter().copied().collect()
    }

    #[test]
    fn payload_shape_and_record_agree() {
        let mut m = meter();
        let (payload, rec) = m.sample(T0).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&payload).unwrap();
        let v = values(&rec);
        assert_eq!(doc["ts"], "2026-11-23T08:00:00.000Z");
        assert_eq!(rec.ts_ns, 1_795_420_800_000_000_000);
        assert_eq!(doc["v"]["a"].as_f64(), Some(v["voltage_a"]));
        assert_eq!(doc["i"]["c"].as_f64(), Some(v["current_c"]));
        assert_eq!(doc["e_imp_kwh"].as_f64(), Some(v["energy_import"]));
        assert!(doc["event"].is_null());
        assert!((v["voltage_a"] - 230.0).abs() < 10.0, "{v:?}");
        assert!((v["frequency"] - 50.0).abs() < 0.2);
        assert!(v["power_factor"] > 0.8 && v["power_factor"] <= 1.0);
        assert!(v["active_power"] > 0.0);
    }

    #[test]
    fn energy_grows_unless_the_register_runs_backwards() {
        let mut m = meter();
        let e = |m: &mut Meter, t: u64| values(&m.sample(T0 + Duration::from_secs(t)).unwrap().1)["energy_import"];
        let e0 = e(&mut m, 0);
        let e1 = e(&mut m, 600);
        assert!(e1 > e0, "{e0} {e1}");
        m.fault = Some(MeterFault::EnergyBackwards);
        let e2 = e(&mut m, 601);
        let e3 = e(&mut m, 602);
        assert!(e3 < e2, "{e2} {e3}");
    }

    #[test]
    fn outage_is_last_gasp_silence_then_power_restored() {
        let mut m = meter();
        m.fault = Some(MeterFault::Outage);
        let (payload, rec) = m.sample(T0).unwrap();
        assert!(payload.contains("\"event\":\"last_gasp\""), "{payload}");
        assert!(!payload.contains("\"v\""));
        assert_eq!(rec.values, vec![("last_gasp", 1.0)]);
        assert!(m.sample(T0 + Duration::from_secs(1)).is_none());
        m.fault = None;
        m.restored = true;
        let (payload, rec) = m.sample(T0 + Duration::from_secs(2)).unwrap();
        assert!(
            payload.contains("\"event\":\"power_restored\""),
            "{payload}"
        );
        assert_eq!(values(&rec)["power_restored"], 1.0);
        let (payload, _) = m.sample(T0 + Duration::from_secs(3)).unwrap();
        assert!(payload.contains("\"event\":null"));
    }

    #[test]
    fn voltage_faults_stuck_values_and_clock_skew() {
        let mut m = meter();
        let at = |m: &mut Meter, t: u64| m.sample(T0 + Duration::from_secs(t)).unwrap().1;
        m.fault = Some(MeterFault::Sag);
        assert!(values(&at(&mut m, 0))["voltage_a"] < 200.0);
        m.fault = Some(MeterFault::Swell);
        assert!(values(&at(&mut m, 1))["voltage_b"] > 250.0);
        m.fault = Some(MeterFault::PhaseLoss(Phase::C));
        let v = values(&at(&mut m, 2));
        assert!(v["voltage_c"] < 2.0 && v["current_c"] == 0.0, "{v:?}");
        m.fault = Some(MeterFault::NeutralLoss);
        let v = values(&at(&mut m, 3));
        assert!(v["voltage_a"] > 280.0 && v["voltage_b"] < 180.0, "{v:?}");
        m.fault = Some(MeterFault::Stuck);
        let measured = |r: &Record| {
            let mut v = values(r);
            v.remove("meter_time");
            format!(
                "{:?}",
                v.into_iter().collect::<std::collections::BTreeMap<_, _>>()
            )
        };
        let a = at(&mut m, 4);
        let b = at(&mut m, 900);
        assert_eq!(measured(&a), measured(&b));
        assert_ne!(a.ts_ns, b.ts_ns);
        // The meter's clock still runs while its measurements are frozen.
        assert_eq!(values(&b)["meter_time"] - values(&a)["meter_time"], 896.0);
        m.fault = Some(MeterFault::ClockSkew(900));
        let r = at(&mut m, 5);
        assert_eq!(r.ts_ns, (T0.as_secs() as i64 + 5) * 1_000_000_000);
        assert_eq!(values(&r)["meter_time"], (T0.as_secs() + 905) as f64);
    }

    #[test]
    fn faults_parse() {
        assert_eq!("outage".parse(), Ok(MeterFault::Outage));
        assert_eq!("last-gasp".parse(), Ok(MeterFault::Outage));
        assert_eq!("phase_loss:b".parse(), Ok(MeterFault::PhaseLoss(Phase::B)));
        assert_eq!("clock_skew:-30".parse(), Ok(MeterFault::ClockSkew(-30)));
        assert!("clock_skew".parse::<MeterFault>().is_err());
        assert!("melt".parse::<MeterFault>().is_err());
    }
}
