//! Outputs for telemetry: InfluxDB-compatible stores and line-protocol files.
//!
//! The sink is two tasks joined by a [`queue::BatchQueue`]: the *batcher* encodes readings from
//! the pipeline into line-protocol batches (by size and by time) and pushes them onto the
//! queue; the *writer* sends the oldest batch and removes it only after the store accepted it.
//! The batcher never waits on the network, so a slow or dead store never slows polling.

pub mod file;
pub mod influx;
pub mod lineproto;
pub mod queue;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, Registry};
use crate::model::Reading;
use queue::{Batch, BatchQueue};

/// Why a write failed, which decides whether it is retried.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Network trouble, a timeout or a 5xx/429: try again later.
    #[error("store unavailable: {0}")]
    Retryable(String),
    /// The store refused the data (4xx): retrying the same bytes can never succeed.
    #[error("store rejected the batch with HTTP {status}: {body}")]
    Rejected {
        /// HTTP status code.
        status: u16,
        /// What the store said.
        body: String,
    },
}

/// A destination for line-protocol batches.
pub enum Writer {
    /// An InfluxDB-compatible HTTP API.
    Influx(influx::InfluxWriter),
    /// Daily-rotated files.
    File(file::FileWriter),
}

impl Writer {
    /// Sends one batch; returns after the destination accepted it.
    pub async fn write(&mut self, body: &str) -> Result<(), WriteError> {
        match self {
            Writer::Influx(w) => w.write(body).await,
            Writer::File(w) => w.write(body).await,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Writer::Influx(_) => "influx",
            Writer::File(_) => "file",
        }
    }
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Points per batch.
    pub batch_size: usize,
    /// Longest wait before a partial batch is sent.
    pub flush_interval: Duration,
}

/// Encodes readings into batches until the pipeline closes `rx`, then flushes the last one.
pub async fn run_batcher(
    mut rx: mpsc::Receiver<Arc<Reading>>,
    queue: Arc<BatchQueue>,
    settings: BatchSettings,
    metrics: Arc<Registry>,
) {
    let encoded = metrics.counter(
        "gridwatch_points_encoded_total",
        "Points encoded into line-protocol batches.",
        &[],
    );
    let mut body = String::with_capacity(settings.batch_size.saturating_mul(128).min(8 << 20));
    let mut points = 0usize;
    let mut tick = tokio::time::interval(settings.flush_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            maybe = rx.recv() => {
                let Some(reading) = maybe else { break };
                let before = body.len();
                lineproto::write_reading(&mut body, &reading);
                if body.len() > before {
                    points += 1;
                }
                if points >= settings.batch_size {
                    seal(&mut body, &mut points, &queue, &encoded);
                }
            }
            _ = tick.tick() => {
                if points > 0 {
                    seal(&mut body, &mut points, &queue, &encoded);
                }
            }
        }
    }
    if points > 0 {
        seal(&mut body, &mut points, &queue, &encoded);
    }
    queue.close();
}

fn seal(body: &mut String, points: &mut usize, queue: &BatchQueue, encoded: &Counter) {
    // The next batch will be about as long as this one: room for it plus 1/8, so it rarely
    // regrows (each doubling copies the whole batch). The sealed batch gives back its spare
    // capacity: batches can wait in the queue for a long time while the store is slow or
    // down, and doubling slack (up to half of each) would count against the daemon's memory.
    let next = body.len() + body.len() / 8;
    let mut text = std::mem::replace(body, String::with_capacity(next));
    text.shrink_to_fit();
    encoded.add(*points as u64);
    queue.push(Batch {
        body: text,
        points: *points,
    });
    *points = 0;
}

/// Sends queued batches oldest first until the queue is closed and empty, or until `hard_stop`
/// fires (shutdown deadline). Failed writes are retried with exponential backoff.
pub async fn run_writer(
    mut writer: Writer,
    queue: Arc<BatchQueue>,
    metrics: Arc<Registry>,
    hard_stop: CancellationToken,
) {
    let labels = [("sink", writer.name())];
    let written = metrics.counter(
        "gridwatch_points_written_total",
        "Points the store accepted.",
        &labels,
    );
    let write_errors = metrics.counter(
        "gridwatch_write_errors_total",
        "Failed write attempts (retried).",
        &labels,
    );
    let rejected = metrics.counter(
        "gridwatch_points_rejected_total",
        "Points in batches the store refused with a 4xx (not retried).",
        &labels,
    );
    let latency = metrics.histogram(
        "gridwatch_write_duration_seconds",
        "Time for one batch write.",
        &labels,
    );
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let Some(batch) = queue.front() else {
            if queue.is_closed() {
                return;
            }
            tokio::select! {
                _ = queue.wait() => continue,
                _ = hard_stop.cancelled() => return,
            }
        };
        let started = Instant::now();
        let result = tokio::select! {
            r = writer.write(&batch.body) => r,
            _ = hard_stop.cancelled() => {
                tracing::warn!(sink = writer.name(), pending_points = queue.pending_points(), "shutdown deadline reached with unsent points");
                return;
            }
        };
        latency.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                written.add(batch.points as u64);
                queue.ack();
                backoff.reset();
            }
            Err(WriteError::Rejected { status, body }) => {
                rejected.add(batch.points as u64);
                tracing::error!(sink = writer.name(), status, points = batch.points, reason = %body, "store rejected batch");
                queue.ack();
            }
            Err(e @ WriteError::Retryable(_)) => {
                write_errors.inc();
                let wait = backoff.next_delay();
                tracing::warn!(sink = writer.name(), error = %e, retry_in_ms = wait.as_millis() as u64, pending_points = queue.pending_points(), "write failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = hard_stop.cancelled() => return,
                }
            }
        }
    }
}

/// Exponential backoff with full jitter, as used for reconnects and retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    /// The next delay: uniformly random in [current/2, current], then doubles `current`.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = base / 2;
        let spread = base.saturating_sub(half).as_millis() as u64;
        half + Duration::from_millis(rand::random_range(0..=spread))
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}
