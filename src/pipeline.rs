//! Fan-out of readings from every source to every consumer over bounded channels.
//!
//! Sources send owned [`Reading`]s into one channel; the fan-out task wraps each in an `Arc`
//! and offers it to the consumers. The telemetry sink is *lossless*: the fan-out waits for it
//! (it only buffers to memory or disk, so it is never slow for long). Every other consumer
//! (history, rules) is *lossy*: when it lags, the reading is dropped for it alone and counted
//! in `gridwatch_pipeline_dropped_total{consumer=...}`, so a slow web client can never stall
//! polling.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::metrics::{Counter, Registry};
use crate::model::Reading;

/// The handle sources use to emit readings.
pub type ReadingSender = mpsc::Sender<Reading>;

/// How a consumer is fed when it falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Wait for the consumer; nothing is dropped.
    Lossless,
    /// Drop (and count) readings the consumer has no room for.
    Lossy,
}

struct Consumer {
    tx: mpsc::Sender<Arc<Reading>>,
    delivery: Delivery,
    dropped: Counter,
}

/// Collects consumers, then runs the fan-out.
pub struct Pipeline {
    capacity: usize,
    consumers: Vec<Consumer>,
    metrics: Arc<Registry>,
    input_tx: ReadingSender,
    input_rx: mpsc::Receiver<Reading>,
}

impl Pipeline {
    /// A pipeline whose channels each hold `capacity` readings.
    pub fn new(capacity: usize, metrics: Arc<Registry>) -> Self {
        let (input_tx, input_rx) = mpsc::channel(capacity);
        Pipeline {
            capacity,
            consumers: Vec::new(),
            metrics,
            input_tx,
            input_rx,
        }
    }

    /// A sender for a source; the pipeline ends when every sender is dropped.
    pub fn sender(&self) -> ReadingSender {
        self.input_tx.clone()
    }

    /// Adds a consumer named `name` and returns its receiving end.
    pub fn consumer(&mut self, name: &str, delivery: Delivery) -> mpsc::Receiver<Arc<Reading>> {
        let (tx, rx) = mpsc::channel(self.capacity);
        let dropped = self.metrics.counter(
            "gridwatch_pipeline_dropped_total",
            "Readings a lagging consumer had no room for.",
            &[("consumer", name)],
        );
        self.consumers.push(Consumer {
            tx,
            delivery,
            dropped,
        });
        rx
    }

    /// Runs the fan-out until every source sender is gone, then closes the consumers'
    /// channels so they drain and stop.
    pub async fn run(self) {
        let Pipeline {
            consumers,
            metrics,
            input_tx,
            mut input_rx,
            ..
        } = self;
        // Our own sender would keep the channel open forever.
        drop(input_tx);
        let readings = metrics.counter(
            "gridwatch_readings_total",
            "Readings that entered the pipeline.",
            &[],
        );
        while let Some(reading) = input_rx.recv().await {
            readings.inc();
            fan_out(&consumers, reading).await;
        }
    }
}

/// Offers one reading to every consumer: waits for the lossless one, drops for a full lossy one.
async fn fan_out(consumers: &[Consumer], reading: Reading) {
    let reading = Arc::new(reading);
    for c in consumers {
        match c.delivery {
            Delivery::Lossless => {
                // A closed consumer has stopped on purpose (shutdown); nothing to do.
                let _ = c.tx.send(Arc::clone(&reading)).await;
            }
            Delivery::Lossy => {
                if let Err(mpsc::error::TrySendError::Full(_)) = c.tx.try_send(Arc::clone(&reading))
                {
                    c.dropped.inc();
                }
            }
        }
    }
}

/// Receives readings in chunks: waits for the first, lets more gather for `linger` unless a
/// quarter of `max` was already queued, then takes what is queued, up to `max` in `buf` in
/// all. Returns how many `buf` holds; 0 only when the channel is closed and empty.
///
/// Waking a task for every reading costs more than handling it (at 10,000 readings/s, each
/// consumer would be woken 10,000 times a second, mostly across threads); a consumer that
/// can wait a few milliseconds is woken once per chunk instead. A busy channel already
/// pays for the wake-up: lingering there would only cap the consumer at `max` readings per
/// `linger` (1024 per 20 ms is 51,200/s, half of a 100,000 msg/s MQTT load). Cancel-safe:
/// readings already moved into `buf` stay there for the next call.
pub async fn recv_chunk<T>(
    rx: &mut mpsc::Receiver<T>,
    buf: &mut Vec<T>,
    max: usize,
    linger: Duration,
) -> usize {
    let max = max.max(1);
    if buf.is_empty() && rx.recv_many(buf, max).await == 0 {
        return 0;
    }
    if buf.len() < max.div_ceil(4) && !linger.is_zero() {
        tokio::time::sleep(linger).await;
        while buf.len() < max {
            match rx.try_recv() {
                Ok(item) => buf.push(item),
                Err(_) => break,
            }
        }
    }
    buf.len()
}

#[cfg(test)]
mod tests;
