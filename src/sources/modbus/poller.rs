//! The polling loop of one endpoint connection.
//!
//! Each connection owns a set of devices and a min-heap of their next due times. A device's
//! next poll is its previous due time plus its interval (never "now + interval"), so
//! schedules do not drift; slots that passed while the connection was busy are skipped and
//! counted as missed. A request that times out costs only its own `timeout`: the device's
//! remaining requests are skipped and the connection is re-opened before the next poll,
//! because tokio-modbus would otherwise read the late answer as the reply to the next request.
//!
//! A bus endpoint (RTU on a serial line, RTU over TCP) is one connection = one bus: strictly
//! one request at a time, with the inter-frame silence kept before every request. The heap is
//! the bus's fair queue: the unit whose poll has been due longest goes first, ties in the
//! order they were queued, so no unit id is favoured. A timeout costs only that unit's
//! timeout: the link is kept (stray bytes are discarded before the next request), a CRC error
//! is retried at once (`crc_retries`), and a unit that fails `backoff_after` polls in a row is
//! polled at a doubling interval up to `backoff_max` until it answers again.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::config::{EndpointConfig, Transport};
use crate::metrics::{Counter, Histogram, Registry};
use crate::model::{DeviceInfo, Quality, Reading, now_ns};
use crate::pipeline::ReadingSender;
use crate::sinks::Backoff;
use crate::status::{DeviceStatus, LinkHealth, Liveness, StatusBoard};

use super::client::bus::LineFault;
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
    /// Set after the first exception of a run of them was logged at warn level.
    exception_logged: bool,
    /// Failed polls in a row.
    failures: u32,
    /// Per-unit request counters (bus endpoints only).
    unit_metrics: Option<UnitMetrics>,
    /// The status board's handle of this device.
    live: Arc<Liveness>,
}

/// Per-unit request outcomes on a bus, for `/metrics`.
struct UnitMetrics {
    ok: Counter,
    timeout: Counter,
    crc_error: Counter,
    exception: Counter,
    transport_error: Counter,
}

impl UnitMetrics {
    fn new(r: &Registry, endpoint: &str, unit: u8, device: &str) -> Self {
        let unit = unit.to_string();
        let c = |result: &str| {
            r.counter(
                "gridwatch_modbus_unit_requests_total",
                "Requests to one unit on a bus, by outcome (ok, timeout, crc_error, exception, transport_error).",
                &[
                    ("endpoint", endpoint),
                    ("unit", &unit),
                    ("device", device),
                    ("result", result),
                ],
            )
        };
        UnitMetrics {
            ok: c("ok"),
            timeout: c("timeout"),
            crc_error: c("crc_error"),
            exception: c("exception"),
            transport_error: c("transport_error"),
        }
    }
}

/// A request got no answer within the endpoint timeout.
#[derive(Debug, Clone, Copy)]
struct TimedOut;

/// How one request on the bus ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestResult {
    Ok,
    Timeout,
    Crc,
    Exception,
    Transport,
}

/// The next poll interval of a unit that failed `failures` polls in a row: its own interval
/// until `after` failures, then doubling per further failure up to `max` (never below the
/// unit's own interval). `after == 0` disables backoff.
pub fn backoff_interval(interval: Duration, failures: u32, after: u32, max: Duration) -> Duration {
    if after == 0 || failures < after {
        return interval;
    }
    let doublings = (failures - after + 1).min(20);
    let backed = interval.saturating_mul(1 << doublings);
    backed.min(max.max(interval))
}

/// The first poll of a device at or after `now`, when the wall clock read `wall` (since the
/// UNIX epoch) at `now`: the next instant at which the wall clock is a whole multiple of
/// `interval` plus `phase`.
///
/// Schedules are on the wall clock's grid, as a control room expects (a 1 s device at
/// hh:mm:ss + its phase, a 1 min one at the minute + its phase), so readings of the same
/// phase line up across gateways and restarts. It also lets every connection's timers fire on
/// the same ticks: at 10,000 devices, 100 connections started a few hundred microseconds apart
/// each woke the runtime on its own millisecond tick, where aligned ones share it.
pub fn first_due(now: Instant, wall: Duration, interval: Duration, phase: Duration) -> Instant {
    let iv = interval.as_nanos().max(1);
    let past_slot = (wall.as_nanos() + iv - phase.as_nanos() % iv) % iv;
    let wait = if past_slot == 0 { 0 } else { iv - past_slot };
    now + Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
}

impl PolledDevice {
    /// A device at `unit` read with `profile` every `interval`, reporting to `live`
    /// ([`StatusBoard::liveness`]).
    pub fn new(
        info: Arc<DeviceInfo>,
        unit: u8,
        profile: Arc<CompiledProfile>,
        interval: Duration,
        live: Arc<Liveness>,
    ) -> Self {
        PolledDevice {
            info,
            unit,
            profile,
            interval,
            exceptions: None,
            exception_logged: false,
            failures: 0,
            unit_metrics: None,
            live,
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
    crc_errors: Counter,
    crc_retries: Counter,
    backoffs: Counter,
    backed_off: crate::metrics::Gauge,
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
            crc_errors: r.counter(
                "gridwatch_modbus_crc_errors_total",
                "Bus answers rejected because their CRC was wrong (never decoded as data).",
                &l,
            ),
            crc_retries: r.counter(
                "gridwatch_modbus_crc_retries_total",
                "Requests sent again after an answer with a bad CRC.",
                &l,
            ),
            backoffs: r.counter(
                "gridwatch_modbus_unit_backoffs_total",
                "Times a unit was backed off after failing backoff_after polls in a row.",
                &l,
            ),
            backed_off: r.gauge(
                "gridwatch_modbus_units_backed_off",
                "Units currently polled at a backed-off interval.",
                &l,
            ),
        }
    }
}

/// The devices of a connection by next due time, ties in queue order (`seq`). Units share
/// an interval, so a device rescheduled goes behind all others: a push at the back, where a
/// binary heap would sift through its levels on every poll.
struct Schedule(VecDeque<(Instant, u64, usize)>);

impl Schedule {
    fn with_capacity(n: usize) -> Self {
        Schedule(VecDeque::with_capacity(n))
    }

    fn push(&mut self, due: Instant, seq: u64, idx: usize) {
        let item = (due, seq, idx);
        if self.0.back().is_none_or(|last| *last < item) {
            self.0.push_back(item);
        } else {
            let at = self.0.partition_point(|x| *x < item);
            self.0.insert(at, item);
        }
    }

    /// The device due first and when.
    fn pop(&mut self) -> Option<(Instant, usize)> {
        self.0.pop_front().map(|(due, _, idx)| (due, idx))
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
    /// Bus endpoints: when the line last went quiet (end of an answer or of a timeout).
    line_quiet_since: Option<Instant>,
    /// Raw register values of the poll in progress, reused from poll to poll.
    raw: Vec<Option<f64>>,
}

enum PollOutcome {
    Complete,
    Partial,
    /// No data; `answered` when the unit did answer (with exceptions only).
    Failed {
        error: String,
        answered: bool,
    },
    /// The endpoint itself could not be reached (not the unit's fault).
    Unreachable(String),
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
        let mut devices = devices;
        if cfg.transport.is_bus() {
            for d in &mut devices {
                d.unit_metrics = Some(UnitMetrics::new(registry, &cfg.name, d.unit, &d.info.id));
                let interval_ms = d.interval.as_millis() as u64;
                status.update_link(&d.info, |l| l.poll_interval_ms = interval_ms);
            }
        }
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
            line_quiet_since: None,
            raw: Vec::new(),
        }
    }

    /// Polls until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let start = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut queue = Schedule::with_capacity(self.devices.len());
        // Queue order among equal due times: first queued, first served (fair across units).
        let mut seq: u64 = 0;
        let n = self.devices.len().max(1) as u32;
        for (i, d) in self.devices.iter().enumerate() {
            // Spread a connection's polls over the interval so a gateway is not hit by a burst.
            let phase = d.interval / n * (i as u32 % n);
            queue.push(first_due(start, wall, d.interval, phase), seq, i);
            seq += 1;
        }
        tracing::info!(endpoint = %self.cfg.name, transport = self.cfg.transport.as_str(), lane = self.lane, devices = self.devices.len(), "modbus connection started");
        // One wait for cancellation for the whole loop, not one set up per poll.
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        // Two timers for the connection's life, re-armed rather than made per poll. The
        // request timer has not fired when it is moved to the next request's later deadline:
        // that is one atomic store, where a fresh `timeout` inserts a timer-wheel entry
        // (under the driver's lock) and removes it again when dropped. The pacing timer has
        // fired, so it is inserted again, but nothing is set up and torn down around it.
        let pace = tokio::time::sleep_until(start);
        tokio::pin!(pace);
        let request_timer = tokio::time::sleep_until(start);
        tokio::pin!(request_timer);
        while let Some((due, idx)) = queue.pop() {
            pace.as_mut().reset(due);
            tokio::select! {
                _ = &mut cancelled => break,
                _ = &mut pace => {}
            }
            // A poll in progress is finished, not dropped, at shutdown: its answers were
            // already taken from the device, and dropping it would lose the reading. It is
            // bounded by the request timeouts.
            self.poll(idx, request_timer.as_mut()).await;
            let d = &self.devices[idx];
            let after = self.cfg.backoff_after();
            let interval = backoff_interval(d.interval, d.failures, after, self.cfg.backoff_max);
            let now = Instant::now();
            let next = if interval > d.interval {
                // Backed off: the unit waits out its longer interval from now, not from its
                // old grid, and the polls it skips are not "missed".
                now + interval
            } else {
                let mut next = due + interval;
                while next <= now {
                    self.metrics.missed.inc();
                    next += interval;
                }
                next
            };
            queue.push(next, seq, idx);
            seq += 1;
        }
        tracing::info!(endpoint = %self.cfg.name, lane = self.lane, "modbus connection stopped");
    }

    async fn poll(&mut self, idx: usize, request_timer: Pin<&mut Sleep>) {
        let outcome = self.poll_device(idx, request_timer).await;
        match &outcome {
            PollOutcome::Failed {
                answered: false, ..
            } => self.track_backoff(idx, true),
            PollOutcome::Unreachable(_) => {}
            _ => self.track_backoff(idx, false),
        }
        let device = &self.devices[idx];
        let at = now_ns();
        let change = match &outcome {
            PollOutcome::Complete => {
                self.metrics.polls_ok.inc();
                self.status.success_at(&device.info, &device.live, at, true)
            }
            PollOutcome::Partial => {
                self.metrics.polls_partial.inc();
                self.status.success(&device.info, at, false)
            }
            PollOutcome::Failed { error: err, .. } | PollOutcome::Unreachable(err) => {
                self.metrics.polls_failed.inc();
                tracing::debug!(device = %device.info.id, endpoint = %self.cfg.name, error = %err, "poll failed");
                self.status
                    .failure(&device.info, at, err, self.cfg.offline_after)
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

    /// Counts consecutive failed polls and moves the unit in and out of backoff.
    fn track_backoff(&mut self, idx: usize, failed: bool) {
        let after = self.cfg.backoff_after();
        let max = self.cfg.backoff_max;
        let d = &mut self.devices[idx];
        let was = backoff_interval(d.interval, d.failures, after, max) > d.interval;
        d.failures = if failed {
            d.failures.saturating_add(1)
        } else {
            0
        };
        let interval = backoff_interval(d.interval, d.failures, after, max);
        let now = interval > d.interval;
        if now && !was {
            self.metrics.backoffs.inc();
            tracing::warn!(device = %d.info.id, endpoint = %self.cfg.name, unit = d.unit, failures = d.failures, "unit backed off: polled less often until it answers");
        } else if was && !now {
            tracing::info!(device = %d.info.id, endpoint = %self.cfg.name, unit = d.unit, "unit answers again: back to its own interval");
        }
        if now != was {
            let delta = if now { 1.0 } else { -1.0 };
            self.metrics
                .backed_off
                .set(self.metrics.backed_off.get() + delta);
        }
        if d.unit_metrics.is_some() {
            let interval_ms = interval.as_millis() as u64;
            self.status.update_link(&d.info, |l| {
                l.backed_off = now;
                l.poll_interval_ms = interval_ms;
            });
        }
    }

    async fn ensure_client(&mut self) -> Result<(), String> {
        if self.client.is_some() {
            return Ok(());
        }
        if Instant::now() < self.next_connect {
            return Err("endpoint not connected (waiting to reconnect)".into());
        }
        let transport = self.cfg.transport;
        let result = tokio::time::timeout(self.cfg.connect_timeout, async {
            match transport {
                Transport::Tcp => {
                    ReadOnlyClient::connect_tcp(resolve(&self.cfg.address).await?).await
                }
                Transport::RtuOverTcp => {
                    ReadOnlyClient::connect_rtu_over_tcp(resolve(&self.cfg.address).await?).await
                }
                Transport::Rtu => ReadOnlyClient::connect_rtu(&self.cfg),
            }
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

    /// Where the endpoint is: its address, or its serial device.
    fn link_name(&self) -> String {
        match (&self.cfg.transport, &self.cfg.device) {
            (Transport::Rtu, Some(dev)) => dev.display().to_string(),
            _ => self.cfg.address.clone(),
        }
    }

    fn connect_failed(&mut self, err: String) -> String {
        self.metrics.connects_failed.inc();
        let wait = self.backoff.next_delay();
        self.next_connect = Instant::now() + wait;
        tracing::warn!(endpoint = %self.cfg.name, address = %self.link_name(), error = %err, retry_in_ms = wait.as_millis() as u64, "modbus connect failed");
        format!("connect failed: {err}")
    }

    /// Reads every request of the unit's plan; `request_timer` bounds each request to the
    /// endpoint timeout.
    async fn poll_device(&mut self, idx: usize, mut request_timer: Pin<&mut Sleep>) -> PollOutcome {
        if let Err(e) = self.ensure_client().await {
            return PollOutcome::Unreachable(e);
        }
        // The profile is borrowed, not cloned: every device of a profile shares its `Arc`,
        // and a clone per poll made both workers write one reference count 10,000 times a
        // second. Exceptions are therefore counted after the last use of the profile.
        let unit = self.devices[idx].unit;
        let profile = &self.devices[idx].profile;
        let bus = self.cfg.transport.is_bus();
        // One buffer per connection, not a fresh zeroed one per poll.
        let mut raw = std::mem::take(&mut self.raw);
        profile.reset_raw(&mut raw);
        let mut exceptions = Vec::new();
        let mut arrived = None;
        let mut answered = false;
        let mut partial = false;
        let mut failure = None;
        'requests: for req in &profile.plan.requests {
            let mut attempt = 0;
            let result = loop {
                if bus {
                    self.wait_frame_gap().await;
                }
                let Some(client) = self.client.as_mut() else {
                    break 'requests;
                };
                let started = Instant::now();
                request_timer.as_mut().reset(started + self.cfg.timeout);
                let result = tokio::select! {
                    biased;
                    r = client.read(unit, req) => Ok(r),
                    _ = request_timer.as_mut() => Err(TimedOut),
                };
                self.metrics
                    .latency
                    .observe(started.elapsed().as_secs_f64());
                if !bus {
                    break result;
                }
                self.line_quiet_since = Some(Instant::now());
                // tokio-modbus resyncs past a bad frame byte by byte, which often ends in a
                // timeout: look at what actually came back.
                let result = match result {
                    Err(elapsed) => match client.line_fault(unit, req) {
                        LineFault::BadCrc => Ok(Err(ReadError::Crc)),
                        LineFault::Garbled => Ok(Err(ReadError::Transport(
                            "garbled answer (no valid frame before the timeout)".into(),
                        ))),
                        LineFault::Silent => Err(elapsed),
                    },
                    r => r,
                };
                if let Ok(Err(ReadError::Crc | ReadError::Transport(_))) = &result {
                    // The framer may be poisoned; the serial port or socket usually is not.
                    if client.link_alive() {
                        client.reframe();
                    } else {
                        self.client = None;
                    }
                }
                if matches!(result, Ok(Err(ReadError::Crc))) && attempt < self.cfg.crc_retries {
                    attempt += 1;
                    self.metrics.crc_errors.inc();
                    self.metrics.crc_retries.inc();
                    self.record(idx, RequestResult::Crc);
                    tracing::debug!(device = %self.devices[idx].info.id, endpoint = %self.cfg.name, unit, attempt, "bad CRC, retrying");
                    continue;
                }
                break result;
            };
            match result {
                Ok(Ok(data)) => {
                    answered = true;
                    self.record(idx, RequestResult::Ok);
                    arrived.get_or_insert_with(now_ns);
                    let regs = &profile.registers;
                    match data {
                        ReadData::Words(w) => decode::decode_words(req, &w, regs, &mut raw),
                        ReadData::Bits(b) => decode::decode_bits(req, &b, regs, &mut raw),
                    };
                }
                Ok(Err(ReadError::Exception(code))) => {
                    answered = true;
                    partial = true;
                    self.record(idx, RequestResult::Exception);
                    self.metrics.exceptions.inc();
                    exceptions.push(code);
                    failure = Some(format!(
                        "modbus exception {code:?} reading {:?} {}+{}",
                        req.table, req.start, req.count
                    ));
                }
                Ok(Err(ReadError::Crc)) => {
                    self.record(idx, RequestResult::Crc);
                    self.metrics.crc_errors.inc();
                    failure = Some(format!(
                        "bad CRC in the answer ({} attempt(s))",
                        attempt + 1
                    ));
                    break;
                }
                Ok(Err(ReadError::Transport(e))) => {
                    self.record(idx, RequestResult::Transport);
                    self.metrics.transport_errors.inc();
                    if !bus {
                        self.client = None;
                    }
                    failure = Some(format!("transport error: {e}"));
                    break;
                }
                Err(_) => {
                    self.record(idx, RequestResult::Timeout);
                    self.metrics.timeouts.inc();
                    if !bus {
                        // TCP: the late answer would be read as the next reply; on a bus
                        // the link discards it before the next request instead.
                        self.client = None;
                    }
                    failure = Some(format!("timeout after {:?}", self.cfg.timeout));
                    break;
                }
            }
        }
        let Some(ts) = arrived else {
            self.raw = raw;
            for code in exceptions {
                self.count_exception(idx, code);
            }
            return PollOutcome::Failed {
                error: failure.unwrap_or_else(|| "no data".into()),
                answered,
            };
        };
        let mut values = Vec::with_capacity(profile.schema.fields.len());
        profile.finish(&raw, &mut values);
        let complete = failure.is_none() && !partial;
        let reading = Reading {
            device: Arc::clone(&self.devices[idx].info),
            ts,
            schema: Arc::clone(&profile.schema),
            values,
            quality: if complete {
                Quality::Good
            } else {
                Quality::Partial
            },
        };
        self.raw = raw;
        for code in exceptions {
            self.count_exception(idx, code);
        }
        // The pipeline only closes at shutdown; a reading taken then has nowhere to go.
        // Nearly always there is room: then no wait is set up.
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(reading)) =
            self.sender.try_send(reading)
        {
            let _ = self.sender.send(reading).await;
        }
        if complete {
            self.devices[idx].exception_logged = false;
            PollOutcome::Complete
        } else {
            PollOutcome::Partial
        }
    }

    /// Keeps the inter-frame silence: the next request goes out no sooner than `frame_gap`
    /// after the line went quiet.
    fn wait_frame_gap(&self) -> impl Future<Output = ()> + Send + 'static {
        let until = self
            .line_quiet_since
            .map(|quiet| quiet + self.cfg.frame_gap());
        async move {
            if let Some(until) = until {
                tokio::time::sleep_until(until).await;
            }
        }
    }

    /// Counts one request outcome for the unit (bus endpoints).
    fn record(&self, idx: usize, result: RequestResult) {
        let d = &self.devices[idx];
        let Some(m) = &d.unit_metrics else {
            return;
        };
        match result {
            RequestResult::Ok => m.ok.inc(),
            RequestResult::Timeout => m.timeout.inc(),
            RequestResult::Crc => m.crc_error.inc(),
            RequestResult::Exception => m.exception.inc(),
            RequestResult::Transport => m.transport_error.inc(),
        }
        self.status.update_link(&d.info, |l: &mut LinkHealth| {
            l.requests += 1;
            match result {
                RequestResult::Ok => {}
                RequestResult::Timeout => l.timeouts += 1,
                RequestResult::Crc => l.crc_errors += 1,
                RequestResult::Exception => l.exceptions += 1,
                RequestResult::Transport => l.transport_errors += 1,
            }
        });
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
        // One warning per run of exceptions; the counter keeps the full count.
        if device.exception_logged {
            tracing::debug!(device = %device.info.id, endpoint = %self.cfg.name, exception = ?code, "modbus exception");
        } else {
            device.exception_logged = true;
            tracing::warn!(device = %device.info.id, endpoint = %self.cfg.name, unit = device.unit, exception = ?code, "modbus exception");
        }
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

#[cfg(test)]
mod tests;
