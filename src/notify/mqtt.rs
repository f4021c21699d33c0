//! Alerts as retained MQTT messages on `{prefix}/{site}/{device}/{rule}` (QoS 1).
//!
//! The retained message is the alarm's current state, so a crew's app that connects later
//! sees every open alarm at once; a cleared alarm publishes an empty retained message, which
//! removes the topic from the broker. rumqttc reconnects by itself (its event loop is polled
//! here, with a short pause after an error).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AlertMessage;
use super::config::MqttNotifyConfig;
use crate::alarms::AlarmEvent;
use crate::metrics::{Counter, Registry};

/// Replaces the characters MQTT gives a meaning in topics (`/`, `+`, `#`) and NUL.
pub fn topic_segment(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| match c {
            '/' | '+' | '#' | '\0' => '_',
            c => c,
        })
        .collect();
    if s.is_empty() { "_".into() } else { s }
}

/// `{prefix}/{site}/{device}/{rule}`.
pub fn alert_topic(prefix: &str, site: &str, device: &str, rule: &str) -> String {
    format!(
        "{}/{}/{}/{}",
        prefix.trim_end_matches('/'),
        topic_segment(site),
        topic_segment(device),
        topic_segment(rule)
    )
}

/// A connected (or reconnecting) alert publisher.
pub struct AlertPublisher {
    client: AsyncClient,
    prefix: String,
    outage_prefix: String,
    task: JoinHandle<()>,
    sent: Arc<AtomicU64>,
    acked: Arc<AtomicU64>,
    errors: Counter,
    stop: CancellationToken,
}

impl AlertPublisher {
    /// Starts the client; publishing queues until the broker is reachable.
    pub fn start(cfg: &MqttNotifyConfig, metrics: &Registry, cancel: CancellationToken) -> Self {
        let (host, port) = match cfg.broker.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().unwrap_or(1883)),
            None => (cfg.broker.clone(), 1883),
        };
        let mut opts = MqttOptions::new(cfg.client_id.clone(), host, port);
        opts.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(5)));
        if !cfg.username.is_empty() {
            opts.set_credentials(cfg.username.clone(), cfg.password.clone());
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 1024);
        let sent = Arc::new(AtomicU64::new(0));
        let acked = Arc::new(AtomicU64::new(0));
        let errors = metrics.counter(
            "gridwatch_alert_mqtt_errors_total",
            "MQTT alert connection errors.",
            &[],
        );
        let stop = CancellationToken::new();
        let task = {
            let acked = Arc::clone(&acked);
            let errors = errors.clone();
            let stop = stop.clone();
            let broker = cfg.broker.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = cancel.cancelled() => break,
                        ev = eventloop.poll() => match ev {
                            Ok(Event::Incoming(Packet::PubAck(_))) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                                tracing::info!(broker = %broker, "alert publisher connected");
                            }
                            Ok(_) => {}
                            Err(e) => {
                                errors.inc();
                                tracing::warn!(broker = %broker, error = %e, "alert publisher connection error");
                                tokio::select! {
                                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                                    _ = cancel.cancelled() => break,
                                    _ = stop.cancelled() => break,
                                }
                            }
                        }
                    }
                }
            })
        };
        AlertPublisher {
            client,
            prefix: cfg.topic_prefix.clone(),
            outage_prefix: cfg.outage_prefix.clone(),
            task,
            sent,
            acked,
            errors,
            stop,
        }
    }

    /// Publishes the alarm's state (retained), or an empty retained message when it cleared.
    pub async fn publish(&self, ev: &AlarmEvent, msg: &AlertMessage) {
        let a = &ev.alarm;
        let topic = alert_topic(&self.prefix, &a.site, &a.device, &a.rule);
        let payload = if super::topic_holds_alarm(ev) {
            match serde_json::to_vec(msg) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode alert");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        match self
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.errors.inc();
                tracing::warn!(error = %e, "alert not queued for MQTT");
            }
        }
    }

    /// Publishes a customer outage notice on `{outage_prefix}/{site}/{feeder}` (default
    /// `gridwatch/outages/...`; QoS 1, not retained: each notice is an event a
    /// customer-service system acts on).
    pub async fn publish_outage(&self, n: &crate::detect::locate::OutageNotice) {
        let topic = format!(
            "{}/{}/{}",
            self.outage_prefix,
            topic_segment(&n.outage.site),
            topic_segment(&n.outage.feeder)
        );
        let payload = match serde_json::to_vec(n) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode outage notice");
                return;
            }
        };
        match self
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
        {
            Ok(()) => {
                self.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.errors.inc();
                tracing::warn!(error = %e, "outage notice not queued for MQTT");
            }
        }
    }

    /// Waits (up to 2 s) for outstanding acknowledgements, then disconnects.
    pub async fn finish(self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while self.acked.load(Ordering::Relaxed) < self.sent.load(Ordering::Relaxed)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.client.try_disconnect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.stop.cancel();
        let _ = self.task.await;
    }
}
