//! MQTT source: smart meters (and anything else) publishing to a broker.
//!
//! One task holds one broker connection ([`client::Conn`], MQTT 3.1.1 or 5, optional TLS)
//! with a persistent session: a stable client id, clean session off, QoS 1 subscriptions,
//! so the broker queues messages while gridwatch is away. On every CONNACK the task
//! subscribes again (a broker that restarted without persistence forgot the session).
//! Each message goes through [`ingest::Ingest`] (topic → device, payload → values, checks,
//! dedup) into the same pipeline as polled readings, and is acknowledged only after that.
//! Connection state is in `/healthz` (`sources.mqtt`) and the metrics
//! `gridwatch_mqtt_connected`, `gridwatch_mqtt_connection_lost_total`,
//! `gridwatch_mqtt_connects_total{result}`, `gridwatch_mqtt_disconnected_seconds`.

pub mod client;
pub mod ingest;
pub mod payload;
pub mod topic;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MqttConfig;
use crate::metrics::{Counter, Gauge, Registry};
use crate::model::{Reading, now_ns};
use crate::pipeline::ReadingSender;
use crate::registry::DeviceRegistry;
use crate::sinks::Backoff;
use crate::status::StatusBoard;

use super::SourceHealth;
use client::{Conn, Event};
pub use ingest::{Ingest, Outcome};

/// Name of this source in `/healthz`.
pub const SOURCE_NAME: &str = "mqtt";

/// How often silent devices are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The MQTT source could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The client could not be configured (address, TLS files).
    #[error(transparent)]
    Client(#[from] client::ClientError),
    /// A subscription pattern is invalid.
    #[error(transparent)]
    Subscription(#[from] ingest::SubscriptionError),
}

struct ConnMetrics {
    connected: Gauge,
    connects_ok: Counter,
    connects_failed: Counter,
    lost: Counter,
    gap: Gauge,
    ack_failed: Counter,
}

impl ConnMetrics {
    fn new(r: &Registry) -> Self {
        let connects = |result: &str| {
            r.counter(
                "gridwatch_mqtt_connects_total",
                "Connection attempts to the MQTT broker by outcome.",
                &[("result", result)],
            )
        };
        ConnMetrics {
            connected: r.gauge(
                "gridwatch_mqtt_connected",
                "1 while connected and subscribed to the MQTT broker.",
                &[],
            ),
            connects_ok: connects("ok"),
            connects_failed: connects("failed"),
            lost: r.counter(
                "gridwatch_mqtt_connection_lost_total",
                "Established MQTT connections that broke (each is a gap in live data).",
                &[],
            ),
            gap: r.gauge(
                "gridwatch_mqtt_disconnected_seconds",
                "Length of the last gap between losing and regaining the broker.",
                &[],
            ),
            ack_failed: r.counter(
                "gridwatch_mqtt_ack_failed_total",
                "Handled messages whose ack could not be queued (the broker redelivers them).",
                &[],
            ),
        }
    }
}

/// Starts the MQTT source if `[mqtt]` names a broker; returns whether it did.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    cfg: Option<&MqttConfig>,
    registry: &Arc<DeviceRegistry>,
    sender: &ReadingSender,
    status: &Arc<StatusBoard>,
    health: &Arc<SourceHealth>,
    metrics: &Arc<Registry>,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<bool, MqttError> {
    let Some(cfg) = cfg.filter(|c| !c.broker.is_empty()) else {
        return Ok(false);
    };
    let ingest = Ingest::new(
        cfg,
        Arc::clone(registry),
        Arc::clone(status),
        Arc::clone(metrics),
    )?;
    let conn = Conn::new(cfg)?;
    health.set(
        SOURCE_NAME,
        false,
        Some("connecting".into()),
        crate::model::now_ns(),
    );
    let source = Source {
        cfg: cfg.clone(),
        conn,
        ingest,
        sender: sender.clone(),
        health: Arc::clone(health),
        metrics: ConnMetrics::new(metrics),
    };
    tracker.spawn(source.run(cancel.clone()));
    Ok(true)
}

struct Source {
    cfg: MqttConfig,
    conn: Conn,
    ingest: Ingest,
    sender: ReadingSender,
    health: Arc<SourceHealth>,
    metrics: ConnMetrics,
}

impl Source {
    async fn run(mut self, cancel: CancellationToken) {
        let filters: Vec<String> = self
            .ingest
            .subscriptions()
            .iter()
            .map(|s| s.filter.clone())
            .collect();
        let mut backoff = Backoff::new(self.cfg.reconnect_min, self.cfg.reconnect_max);
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut readings: Vec<Reading> = Vec::new();
        // When the last established connection broke (None while connected or never was).
        let mut lost_at: Option<Instant> = None;
        let mut ever_connected = false;
        let mut last_error: Option<String> = None;
        tracing::info!(broker = %self.cfg.broker, client_id = %self.cfg.client_id, filters = ?filters, "mqtt source starting");
        loop {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = sweep.tick() => {
                    self.ingest.sweep(now_ns());
                    continue;
                }
                ev = self.conn.poll() => ev,
            };
            match event {
                Ok(Event::Connected { session_present }) => {
                    self.metrics.connects_ok.inc();
                    backoff.reset();
                    tracing::info!(broker = %self.cfg.broker, session_present, "mqtt connected");
                    // Always subscribe: harmless with a kept session, essential without.
                    if let Err(e) = self.conn.subscribe(&filters) {
                        tracing::error!(error = %e, "mqtt subscribe could not be queued");
                    }
                }
                Ok(Event::Subscribed { failed }) => {
                    let now = now_ns();
                    if failed {
                        let msg = "broker refused a subscription (check the topic filters and ACL)";
                        tracing::error!(filters = ?filters, "{msg}");
                        self.health
                            .set(SOURCE_NAME, false, Some(msg.to_string()), now);
                        continue;
                    }
                    self.metrics.connected.set(1.0);
                    self.health.set(SOURCE_NAME, true, None, now);
                    last_error = None;
                    if let Some(at) = lost_at.take() {
                        let gap = at.elapsed().as_secs_f64();
                        self.metrics.gap.set(gap);
                        tracing::info!(gap_s = gap, "mqtt reconnected and resubscribed");
                    } else if !ever_connected {
                        tracing::info!(filters = ?filters, "mqtt subscribed");
                    }
                    ever_connected = true;
                }
                Ok(Event::Message {
                    topic,
                    payload,
                    ack,
                }) => {
                    readings.clear();
                    self.ingest
                        .handle(&topic, &payload, now_ns(), &mut readings);
                    for r in readings.drain(..) {
                        // Nearly always there is room: no wait to set up.
                        let r = match self.sender.try_send(r) {
                            Ok(()) => continue,
                            Err(mpsc::error::TrySendError::Closed(_)) => return,
                            Err(mpsc::error::TrySendError::Full(r)) => r,
                        };
                        tokio::select! {
                            res = self.sender.send(r) => {
                                if res.is_err() {
                                    // The pipeline is gone: shutdown is under way.
                                    return;
                                }
                            }
                            _ = cancel.cancelled() => {
                                // Not acked: the broker redelivers it next time.
                                self.conn.disconnect(Duration::from_millis(500)).await;
                                return;
                            }
                        }
                    }
                    if self.conn.ack(&ack).is_err() {
                        self.metrics.ack_failed.inc();
                    }
                }
                Ok(Event::Other) => {}
                Err(error) => {
                    let now = now_ns();
                    if self.metrics.connected.get() > 0.0 {
                        self.metrics.lost.inc();
                        lost_at = Some(Instant::now());
                    } else {
                        self.metrics.connects_failed.inc();
                    }
                    self.metrics.connected.set(0.0);
                    self.health
                        .set(SOURCE_NAME, false, Some(error.clone()), now);
                    let delay = backoff.next_delay();
                    // Log each new kind of failure; repeats of the same one are counted only.
                    if last_error.as_deref() != Some(error.as_str()) {
                        if ever_connected {
                            tracing::warn!(broker = %self.cfg.broker, error = %error, retry_in_ms = delay.as_millis() as u64, "mqtt connection lost");
                        } else {
                            tracing::error!(broker = %self.cfg.broker, error = %error, retry_in_ms = delay.as_millis() as u64, "mqtt cannot connect");
                        }
                        last_error = Some(error);
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.conn.disconnect(Duration::from_millis(500)).await;
        self.metrics.connected.set(0.0);
        tracing::info!("mqtt source stopped");
    }
}
