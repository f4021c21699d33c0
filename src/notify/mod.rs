//! Alerts to field crews: alarm events in, MQTT messages and signed webhooks out.
//!
//! [`run`] receives [`AlarmEvent`]s from the alarm service, builds one [`AlertMessage`] per
//! event (what a crew needs: device, site, feeder, location, rule, value and limit, since
//! when, severity, suggested first action, routed crews) and hands it to the MQTT publisher
//! ([`mqtt`]) and to every matching webhook ([`webhook`]). Shelved and flapping chatter is
//! filtered before this point (`AlarmEvent::notify`). The message carries the reading
//! timestamp and the publish time, so the sample-in → alert-out latency can be measured.

pub mod config;
pub mod mqtt;
pub mod webhook;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alarms::{AlarmEvent, AlarmState, EventKind};
use crate::detect::config::Severity;
use crate::metrics::Registry;
use crate::model::Timestamp;
use config::{CrewConfig, NotifyConfig};

/// The alert as crews (and their tools) receive it, as JSON.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct AlertMessage {
    /// Alarm id (for acknowledging through the API).
    pub id: u64,
    /// `raised`, `escalated`, `cleared`, `acknowledged`, `flapping`, `shelved`, `unshelved`.
    pub event: String,
    /// `active`, `acknowledged`, `cleared_unacked`.
    pub state: String,
    /// `warning` or `critical`.
    pub severity: Severity,
    /// Device id.
    pub device: String,
    /// Device kind.
    pub kind: String,
    /// Site.
    pub site: String,
    /// Feeder.
    pub feeder: String,
    /// Location text from the config.
    pub location: Option<String>,
    /// Rule id.
    pub rule: String,
    /// What is wrong.
    pub description: String,
    /// Value at the last change.
    pub value: f64,
    /// Limit it was compared with.
    pub limit: f64,
    /// Unit of value and limit.
    pub unit: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// Since when, ns.
    pub since_ns: Timestamp,
    /// Suggested first action.
    pub action: String,
    /// Whether the alarm is flapping.
    pub flapping: bool,
    /// Shelved until (RFC 3339), if shelved.
    pub shelved_until: Option<String>,
    /// Crews the alarm is routed to.
    pub crews: Vec<String>,
    /// Benchmark hook: timestamp of the reading behind the change, ns.
    pub reading_ts_ns: Option<Timestamp>,
    /// Benchmark hook: when the message was built for publishing (wall clock), ns.
    pub published_ts_ns: Timestamp,
}

fn rfc3339(ns: Timestamp) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339()
}

/// Crews whose route matches the alarm.
pub fn route(crews: &[CrewConfig], site: &str, feeder: &str, severity: Severity) -> Vec<String> {
    crews
        .iter()
        .filter(|c| c.route().matches(site, feeder, severity))
        .map(|c| c.name.clone())
        .collect()
}

/// Builds the message for `ev` at wall-clock time `now`.
pub fn message(ev: &AlarmEvent, crews: &[CrewConfig], now: Timestamp) -> AlertMessage {
    let a = &ev.alarm;
    AlertMessage {
        id: a.id,
        event: ev.kind.as_str().to_string(),
        state: match a.state {
            AlarmState::Active => "active",
            AlarmState::Acknowledged => "acknowledged",
            AlarmState::ClearedUnacked => "cleared_unacked",
        }
        .to_string(),
        severity: a.severity,
        device: a.device.clone(),
        kind: a.kind.clone(),
        site: a.site.clone(),
        feeder: a.feeder.clone(),
        location: a.location.clone(),
        rule: a.rule.clone(),
        description: a.description.clone(),
        value: a.value,
        limit: a.limit,
        unit: a.unit.clone(),
        since: rfc3339(a.since),
        since_ns: a.since,
        action: a.action.clone(),
        flapping: a.flapping,
        shelved_until: a.shelved_until.map(rfc3339),
        crews: route(crews, &a.site, &a.feeder, a.severity),
        reading_ts_ns: ev.reading_ts,
        published_ts_ns: now,
    }
}

/// Whether the alert topic should carry the alarm after `ev` (else it is emptied).
pub fn topic_holds_alarm(ev: &AlarmEvent) -> bool {
    !matches!(ev.kind, EventKind::Cleared | EventKind::Removed)
        && ev.alarm.state != AlarmState::ClearedUnacked
}

/// Whether `ev` is sent to webhooks (state changes crews act on).
pub fn webhook_worthy(ev: &AlarmEvent) -> bool {
    matches!(
        ev.kind,
        EventKind::Raised
            | EventKind::Escalated
            | EventKind::Cleared
            | EventKind::Flapping
            | EventKind::Unshelved
    )
}

/// Delivers alarm events until `rx` closes or `cancel` fires; on `cancel` the events
/// already queued are still delivered (the caller bounds the wait).
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<AlarmEvent>,
    mut outages: mpsc::UnboundedReceiver<crate::detect::locate::OutageNotice>,
    cfg: NotifyConfig,
    crews: Arc<Vec<CrewConfig>>,
    metrics: Arc<Registry>,
    cancel: CancellationToken,
) {
    let stop = CancellationToken::new();
    let mqtt = cfg
        .mqtt
        .as_ref()
        .map(|m| mqtt::AlertPublisher::start(m, &metrics, stop.clone()));
    let hooks: Vec<webhook::WebhookSender> = cfg
        .webhooks
        .iter()
        .map(|w| webhook::WebhookSender::start(w.clone(), &metrics, stop.clone()))
        .collect();
    let mut outages_open = true;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => match ev { Some(ev) => ev, None => break },
            n = outages.recv(), if outages_open => {
                match n {
                    Some(n) => {
                        if let Some(m) = &mqtt {
                            m.publish_outage(&n).await;
                        }
                    }
                    None => outages_open = false,
                }
                continue;
            }
            _ = cancel.cancelled() => match rx.try_recv() { Ok(ev) => ev, Err(_) => break },
        };
        if !ev.notify {
            continue;
        }
        let msg = message(&ev, &crews, crate::model::now_ns());
        if let Some(m) = &mqtt {
            m.publish(&ev, &msg).await;
        }
        if webhook_worthy(&ev) {
            for h in &hooks {
                h.offer(&msg);
            }
        }
    }
    if let Some(m) = mqtt {
        m.finish().await;
    }
    // Retries stop at shutdown; a POST in flight finishes (bounded by its timeout).
    stop.cancel();
    for h in hooks {
        h.finish().await;
    }
}

#[cfg(test)]
mod tests;
