//! The polling loop of one endpoint connection.
//!
//! Each connection owns a set of devices and a min-heap of their next due times. A device's
//! next poll is its previous due time plus its interval (never "now + interval"), so
//! schedules do not drift; slots that passed while the connection was busy are skipped and
//! counted as missed. A request that times out costs only its own `timeout`: the device's
//! remaining requests are skipped and the connection is re-opened before the next poll,
//! because tokio-modbus would otherwise read the late answer as the reply to the next request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::EndpointConfig;
use crate::metrics::{Counter, Histogram, Registry};
use crate::model::{DeviceInfo, Quality, Reading, now_ns};
use crate::pipeline::ReadingSender;
use crate::sinks::Backoff;
use crate::status::{DeviceStatus, StatusBoard};

use super::client::{ReadData, ReadError, ReadOnlyClient};
use super::compiled::CompiledProfile;
use super::decode;

/// A device polled by a connection.
pub struct PolledDevice {
    info: Arc<DeviceInfo>,
    unit: u8,
    profile: Arc<CompiledProfile>,
    interval: Duration,
    exceptions: Option<Counter>,
}

impl PolledDevice {
    /// A device at `unit` read with `profile` every `interval`.
    pub fn new(
        info: Arc<DeviceInfo>,
        unit: u8,
        profile: Arc<CompiledProfile>,
        interval: Duration,
    ) -> Self {
        PolledDevice {
            info,
            unit,
            profile,
            interval,
            exceptions: None,
        }
    }
}

struct Metrics {
    polls_ok: Counter,
    polls_partial: Counter,
    polls_failed: Counter,
    timeouts: Counter,
    transport_errors: Counter,
    exceptions: Counter,
    missed: Counter,
    connects_ok: Counter,
    connects_failed: Counter,
    latency: Histogram,
}

impl Metrics {
    fn new(r: &Registry, endpoint: &str) -> Self {
        let l = [("endpoint", endpoint)];
        let polls = |result: &str| {
            r.counter(
                "gridwatch_modbus_polls_total",
                "Device polls by outcome.",
                &[("endpoint", endpoint), ("result", result)],
            )
        };
        let connects = |result: &str| {
            r.counter(
                "gridwatch_modbus_connects_total",
                "Connection attempts by outcome.",
                &[("endpoint", endpoint), ("result", result)],
            )
        };
        Metrics {
            polls_ok: polls("ok"),
            polls_partial: polls("partial"),
            polls_failed: polls("failed"),
            timeouts: r.counter(
                "gridwatch_modbus_timeouts_total",
                "Requests that got no answer within the endpoint timeout.",
                &l,
            ),
            transport_errors: r.counter(
                "gridwatch_modbus_transport_errors_total",
                "Requests that failed on the connection (closed, malformed or mismatched frames).",
                &l,
            ),
            exceptions: r.counter(
                "gridwatch_modbus_exceptions_total",
                "Modbus exception responses.",
                &l,
            ),
            missed: r.counter(
                "gridwatch_modbus_missed_polls_total",
                "Scheduled polls skipped because the connection was still busy.",
                &l,
            ),
            connects_ok: connects("ok"),
            connects_failed: connects("failed"),
            latency: r.histogram(
                "gridwatch_modbus_request_duration_seconds",
                "Round trip of one Modbus read.",
                &l,
            ),
        }
    }
}

/// One connection to an endpoint and the devices polled through it.
pub struct Connection {
    cfg: EndpointConfig,
    lane: usize,
    devices: Vec<PolledDevice>,
    sender: ReadingSender,
    status: Arc<StatusBoard>,
    registry: Arc<Registry>,
    metrics: Metrics,
    client: Option<ReadOnlyClient>,
    next_connect: Instant,
    backoff: Backoff,
}

enum PollOutcome {
    Complete,
    Partial,
    Failed(String),
}

impl Connection {
    /// A connection task for `devices` on endpoint `cfg` (lane = connection number).
    pub fn new(
        cfg: EndpointConfig,
        lane: usize,
        devices: Vec<PolledDevice>,
        sender: ReadingSender,
        status: Arc<StatusBoard>,
        registry: &Arc<Registry>,
    ) -> Self {
        let metrics = Metrics::new(registry, &cfg.name);
        let backoff = Backoff::new(cfg.reconnect_min, cfg.reconnect_max);
        Connection {
            cfg,
            lane,
            devices,
            sender,
            status,
            registry: Arc::clone(registry),
            metrics,
            client: None,
            next_connect: Instant::now(),
            backoff,
        }
    }

    /// Polls until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let start = Instant::now();
        let mut heap = BinaryHeap::with_capacity(self.devices.len());
        let n = self.devices.len().max(1) as u32;
        for (i, d) in self.devices.iter().enumerate() {
            // Spread first polls over the interval so a gateway is not hit by a burst.
            let phase = d.interval / n * (i as u32 % n);
            heap.push(Reverse((start + phase, i)));
        }
        tracing::info!(endpoint = %self.cfg.name, lane = self.lane, devices = self.devices.len(), "modbus connection started");
        while let Some(Reverse((due, idx))) = heap.pop() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
            // A poll in progress is finished, not dropped, at shutdown: its answers were
            // already taken from the device, and dropping it would lose the reading. It is
            // bounded by the request timeouts.
            self.poll(idx).await;
            let interval = self.devices[idx].interval;
            let mut next = due + interval;
            let now = Instant::now();
            while next <= now {
                self.metrics.missed.inc();
                next += interval;
            }
            heap.push(Reverse((next, idx)));
        }
        tracing::info!(endpoint = %self.cfg.name, lane = self.lane, "modbus connection stopped");
    }

    async fn poll(&mut self, idx: usize) {
        let outcome = self.poll_device(idx).await;
        let device = &self.devices[idx];
        let at = now_ns();
        let change = match &outcome {
            PollOutcome::Complete => {
                self.metrics.polls_ok.inc();
                self.status.success(&device.info.id, at, true)
            }
            PollOutcome::Partial => {
                self.metrics.polls_partial.inc();
                self.status.success(&device.info.id, at, false)
            }
            PollOutcome::Failed(err) => {
                self.metrics.polls_failed.inc();
                tracing::debug!(device = %device.info.id, endpoint = %self.cfg.name, error = %err, "poll failed");
                self.status
                    .failure(&device.info.id, at, err, self.cfg.offline_after)
            }
        };
        if let Some(change) = change {
            let error = self
                .status
                .get(&device.info.id)
                .and_then(|s| s.last_error)
                .unwrap_or_default();
            if change.to == DeviceStatus::Online {
                tracing::info!(device = %change.device, endpoint = %self.cfg.name, from = ?change.from, "device online");
            } else {
                tracing::warn!(device = %change.device, endpoint = %self.cfg.name, from = ?change.from, to = ?change.to, error = %error, "device status changed");
            }
        }
    }

    async fn ensure_client(&mut self) -> Result<(), String> {
        if self.client.is_some() {
            return Ok(());
        }
        if Instant::now() < self.next_connect {
            return Err("endpoint not connected (waiting to reconnect)".into());
        }
        let result = tokio::time::timeout(self.cfg.connect_timeout, async {
            let addr = resolve(&self.cfg.address).await?;
            ReadOnlyClient::connect_tcp(addr).await
        })
        .await;
        match result {
            Ok(Ok(client)) => {
                self.metrics.connects_ok.inc();
                self.backoff.reset();
                self.client = Some(client);
                tracing::debug!(endpoint = %self.cfg.name, lane = self.lane, "connected");
                Ok(())
            }
            Ok(Err(e)) => Err(self.connect_failed(e.to_string())),
            Err(_) => Err(self.connect_failed("connect timed out".into())),
        }
    }

    fn connect_failed(&mut self, err: String) -> String {
        self.metrics.connects_failed.inc();
        let wait = self.backoff.next_delay();
        self.next_connect = Instant::now() + wait;
        tracing::warn!(endpoint = %self.cfg.name, address = %self.cfg.address, error = %err, retry_in_ms = wait.as_millis() as u64, "modbus connect failed");
        format!("connect failed: {err}")
    }

    async fn poll_device(&mut self, idx: usize) -> PollOutcome {
        if let Err(e) = self.ensure_client().await {
            return PollOutcome::Failed(e);
        }
        let (unit, profile) = {
            let d = &self.devices[idx];
            (d.unit, Arc::clone(&d.profile))
        };
        let mut raw = profile.raw_buffer();
        let mut arrived = None;
        let mut partial = false;
        let mut failure = None;
        for req in &profile.plan.requests {
            let Some(client) = self.client.as_mut() else {
                break;
            };
            let started = Instant::now();
            let result = tokio::time::timeout(self.cfg.timeout, client.read(unit, req)).await;
            self.metrics
                .latency
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(Ok(data)) => {
                    arrived.get_or_insert_with(now_ns);
                    let regs = &profile.registers;
                    match data {
                        ReadData::Words(w) => decode::decode_words(req, &w, regs, &mut raw),
                        ReadData::Bits(b) => decode::decode_bits(req, &b, regs, &mut raw),
                    };
                }
                Ok(Err(ReadError::Exception(code))) => {
                    partial = true;
                    self.metrics.exceptions.inc();
                    self.count_exception(idx, code);
                    failure = Some(format!(
                        "modbus exception {code:?} reading {:?} {}+{}",
                        req.table, req.start, req.count
                    ));
                }
                Ok(Err(ReadError::Transport(e))) => {
                    self.metrics.transport_errors.inc();
                    self.client = None;
                    failure = Some(format!("transport error: {e}"));
                    break;
                }
                Err(_) => {
                    self.metrics.timeouts.inc();
                    self.client = None;
                    failure = Some(format!("timeout after {:?}", self.cfg.timeout));
                    break;
                }
            }
        }
        let Some(ts) = arrived else {
            return PollOutcome::Failed(failure.unwrap_or_else(|| "no data".into()));
        };
        let mut values = Vec::with_capacity(profile.schema.fields.len());
        profile.finish(&raw, &mut values);
        let complete = failure.is_none() && !partial;
        let device = &self.devices[idx];
        let reading = Reading {
            device: Arc::clone(&device.info),
            ts,
            schema: Arc::clone(&profile.schema),
            values,
            quality: if complete {
                Quality::Good
            } else {
                Quality::Partial
            },
        };
        // The pipeline only closes at shutdown; a reading taken then has nowhere to go.
        let _ = self.sender.send(reading).await;
        if complete {
            PollOutcome::Complete
        } else {
            PollOutcome::Partial
        }
    }

    fn count_exception(&mut self, idx: usize, code: tokio_modbus::ExceptionCode) {
        let device = &mut self.devices[idx];
        let counter = device.exceptions.get_or_insert_with(|| {
            self.registry.counter(
                "gridwatch_modbus_device_exceptions_total",
                "Modbus exception responses per device.",
                &[("device", &device.info.id)],
            )
        });
        counter.inc();
        tracing::debug!(device = %device.info.id, endpoint = %self.cfg.name, exception = ?code, "modbus exception");
    }
}

async fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing")
        })
}
