//! `[notify.mqtt]`, `[[notify.webhooks]]` and `[[crews]]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::detect::config::Severity;

/// `[notify]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Alerts as retained MQTT messages.
    #[serde(default)]
    pub mqtt: Option<MqttNotifyConfig>,
    /// Alerts POSTed as signed JSON.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// `[notify.mqtt]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttNotifyConfig {
    /// Broker `host:port`.
    pub broker: String,
    /// Topic prefix; alerts go to `{prefix}/{site}/{device}/{rule}`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Customer outage notices go to `{outage_prefix}/{site}/{feeder}`.
    #[serde(default = "default_outage_prefix")]
    pub outage_prefix: String,
    /// MQTT client id.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name (empty = anonymous).
    #[serde(default)]
    pub username: String,
    /// Password (or `GRIDWATCH__NOTIFY__MQTT__PASSWORD`).
    #[serde(default)]
    pub password: String,
    /// Keep-alive interval.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
}

fn default_prefix() -> String {
    "gridwatch/alerts".into()
}
fn default_outage_prefix() -> String {
    "gridwatch/outages".into()
}
fn default_client_id() -> String {
    "gridwatch-alerts".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

/// Which alarms a crew or a webhook wants; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFilter {
    /// Sites (exact names).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Feeders.
    #[serde(default)]
    pub feeders: Vec<String>,
    /// Lowest severity (default: all).
    #[serde(default)]
    pub min_severity: Option<Severity>,
}

impl RouteFilter {
    /// Whether an alarm at (`site`, `feeder`, `severity`) passes.
    pub fn matches(&self, site: &str, feeder: &str, severity: Severity) -> bool {
        (self.sites.is_empty() || self.sites.iter().any(|s| s == site))
            && (self.feeders.is_empty() || self.feeders.iter().any(|f| f == feeder))
            && self.min_severity.is_none_or(|m| severity >= m)
    }
}

/// `[[crews]]`: a field crew and the alarms routed to it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrewConfig {
    /// Crew name, listed in each alert it receives.
    pub name: String,
    /// Contact text (phone, radio channel), included in alerts.
    #[serde(default)]
    pub contact: String,
    /// Sites (exact names); empty = all.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Feeders; empty = all.
    #[serde(default)]
    pub feeders: Vec<String>,
    /// Lowest severity (default: all).
    #[serde(default)]
    pub min_severity: Option<Severity>,
}

/// `[[notify.webhooks]]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name for logs and metrics.
    pub name: String,
    /// URL the JSON alert is POSTed to.
    pub url: String,
    /// HMAC-SHA256 key: the body's signature goes in `X-Gridwatch-Signature: sha256=HEX`
    /// (or `GRIDWATCH__NOTIFY__WEBHOOKS__N__SECRET`). Empty = unsigned.
    #[serde(default)]
    pub secret: String,
    /// Timeout of one POST.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after the first failure (exponential backoff with jitter).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First retry delay; doubles per attempt up to 60 s.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub backoff: Duration,
    /// Only alarms routed to one of these crews (empty = no crew filter).
    #[serde(default)]
    pub crews: Vec<String>,
    /// Sites (exact names); empty = all.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Feeders; empty = all.
    #[serde(default)]
    pub feeders: Vec<String>,
    /// Lowest severity (default: all).
    #[serde(default)]
    pub min_severity: Option<Severity>,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}

impl CrewConfig {
    /// The crew's filter.
    pub fn route(&self) -> RouteFilter {
        RouteFilter {
            sites: self.sites.clone(),
            feeders: self.feeders.clone(),
            min_severity: self.min_severity,
        }
    }
}

impl WebhookConfig {
    /// The webhook's site / feeder / severity filter.
    pub fn route(&self) -> RouteFilter {
        RouteFilter {
            sites: self.sites.clone(),
            feeders: self.feeders.clone(),
            min_severity: self.min_severity,
        }
    }
}
