//! Alerts POSTed as JSON to HTTP endpoints, signed with HMAC-SHA256.
//!
//! Each webhook has its own queue and task, so a slow endpoint delays only itself and its
//! alerts stay in order. A failed POST (network error, timeout, non-2xx) is retried
//! `retries` times with exponential backoff and jitter; then the alert is dropped, logged
//! and counted. The receiver checks `X-Gridwatch-Signature: sha256=HEX(HMAC(secret, body))`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AlertMessage;
use super::config::WebhookConfig;
use crate::metrics::{Counter, Registry};
use crate::sinks::Backoff;

/// Header carrying the body signature.
pub const SIGNATURE_HEADER: &str = "X-Gridwatch-Signature";

/// `sha256=` + lowercase hex of HMAC-SHA256(`secret`, `body`).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut out = String::from("sha256=");
    // HMAC accepts keys of any length; this cannot fail.
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) {
        mac.update(body);
        for b in mac.finalize().into_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

/// A running webhook.
pub struct WebhookSender {
    cfg: WebhookConfig,
    tx: mpsc::Sender<Vec<u8>>,
    task: JoinHandle<()>,
    dropped: Counter,
}

impl WebhookSender {
    /// Starts the webhook's task.
    pub fn start(cfg: WebhookConfig, metrics: &Registry, cancel: CancellationToken) -> Self {
        let labels = [("webhook", cfg.name.as_str())];
        let sent = metrics.counter(
            "gridwatch_webhook_sent_total",
            "Alerts delivered to a webhook.",
            &labels,
        );
        let dropped = metrics.counter(
            "gridwatch_webhook_dropped_total",
            "Alerts given up on after all retries (or a full queue).",
            &labels,
        );
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        let task = {
            let cfg = cfg.clone();
            let dropped = dropped.clone();
            tokio::spawn(async move {
                let client = match reqwest::Client::builder().timeout(cfg.timeout).build() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(webhook = %cfg.name, error = %e, "cannot build HTTP client");
                        return;
                    }
                };
                while let Some(body) = rx.recv().await {
                    if deliver(&client, &cfg, body, &cancel).await {
                        sent.inc();
                    } else {
                        dropped.inc();
                    }
                }
            })
        };
        WebhookSender {
            cfg,
            tx,
            task,
            dropped,
        }
    }

    /// Queues `msg` if the webhook's filters want it.
    pub fn offer(&self, msg: &AlertMessage) {
        let crew_ok =
            self.cfg.crews.is_empty() || msg.crews.iter().any(|c| self.cfg.crews.contains(c));
        if !(crew_ok
            && self
                .cfg
                .route()
                .matches(&msg.site, &msg.feeder, msg.severity))
        {
            return;
        }
        match serde_json::to_vec(msg) {
            Ok(body) => {
                if self.tx.try_send(body).is_err() {
                    self.dropped.inc();
                    tracing::error!(webhook = %self.cfg.name, "webhook queue full, alert dropped");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode alert"),
        }
    }

    /// Closes the queue and waits for the queued alerts (bounded by the daemon's cancel).
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn deliver(
    client: &reqwest::Client,
    cfg: &WebhookConfig,
    body: Vec<u8>,
    cancel: &CancellationToken,
) -> bool {
    let signature = sign(cfg.secret.as_bytes(), &body);
    let mut backoff = Backoff::new(cfg.backoff, Duration::from_secs(60));
    for attempt in 0..=cfg.retries {
        let mut req = client
            .post(&cfg.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if !cfg.secret.is_empty() {
            req = req.header(SIGNATURE_HEADER, &signature);
        }
        let error = match req.send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        tracing::warn!(webhook = %cfg.name, attempt, error = %error, "webhook delivery failed");
        if attempt == cfg.retries {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = cancel.cancelled() => return false,
        }
    }
    tracing::error!(webhook = %cfg.name, "alert dropped after all retries");
    false
}
