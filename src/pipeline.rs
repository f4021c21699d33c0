//! Fan-out of readings from every source to every consumer over bounded channels.
//!
//! Sources send owned [`Reading`]s into one channel; the fan-out task wraps each in an `Arc`
//! and offers what it took at once, as one batch, to the consumers ([`ReadingRx`]). The
//! telemetry sink is *lossless*: the fan-out waits for it (it only buffers to memory or disk,
//! so it is never slow for long). Every other consumer
//! (history, rules) is *lossy*: when it lags, the reading is dropped for it alone and counted
//! in `gridwatch_pipeline_dropped_total{consumer=...}`, so a slow web client can never stall
//! polling.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, TryAcquireError, mpsc};

use crate::metrics::{Counter, Registry};
use crate::model::Reading;

/// The handle sources use to emit readings.
pub type ReadingSender = mpsc::Sender<Reading>;

/// Most readings the fan-out takes from its input at once (one batch to every consumer).
const FAN_OUT_MAX: usize = 256;
/// How long the fan-out lets readings gather after the first one of a batch, unless a
/// quarter of `FAN_OUT_MAX` is already queued. Polls of many connections fall on the same
/// timer tick (schedules share the wall clock's grid), and their readings arrive over a
/// millisecond or so: one batch for all of them is one wake-up of the fan-out and one send
/// per consumer, where taking each as it came was a few dozen. 1 ms is small next to the
/// rules consumer's own 5 ms gathering and the 50 ms alarm-latency budget.
const FAN_OUT_LINGER: Duration = Duration::from_millis(1);

/// Readings handed to every consumer as one message.
type Batch = Arc<[Arc<Reading>]>;

/// Readings taken by [`ReadingRx::recv_chunk`]: parts of the batches the fan-out shared
/// between all consumers, not a copy of each reading's handle. Five consumers cloning and
/// dropping every reading's `Arc` were ten atomic operations per reading on a counter the
/// other core had just touched; a consumer that keeps a reading clones that one.
#[derive(Default)]
pub struct Chunk {
    parts: Vec<(Batch, std::ops::Range<usize>)>,
    len: usize,
}

impl Chunk {
    /// An empty chunk.
    pub fn new() -> Chunk {
        Chunk::default()
    }

    /// Readings held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no reading is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The readings in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Reading>> {
        self.parts
            .iter()
            .flat_map(|(b, r)| b.get(r.clone()).unwrap_or_default())
    }

    /// Lets go of every reading (the last consumer to do so frees them).
    pub fn clear(&mut self) {
        self.parts.clear();
        self.len = 0;
    }

    fn push(&mut self, batch: Batch, range: std::ops::Range<usize>) {
        self.len += range.len();
        self.parts.push((batch, range));
    }
}

/// How a consumer is fed when it falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Wait for the consumer; nothing is dropped.
    Lossless,
    /// Drop (and count) readings the consumer has no room for.
    Lossy,
}

struct Consumer {
    tx: mpsc::UnboundedSender<Batch>,
    /// Room in the consumer's queue, in readings: the queue is bounded by readings, not
    /// batches, whatever size the batches have.
    room: Arc<Semaphore>,
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
        let (input_tx, input_rx) = mpsc::channel(capacity.max(1));
        Pipeline {
            capacity: capacity.clamp(1, Semaphore::MAX_PERMITS),
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
    pub fn consumer(&mut self, name: &str, delivery: Delivery) -> ReadingRx {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(self.capacity));
        let dropped = self.metrics.counter(
            "gridwatch_pipeline_dropped_total",
            "Readings a lagging consumer had no room for.",
            &[("consumer", name)],
        );
        self.consumers.push(Consumer {
            tx,
            room: Arc::clone(&room),
            delivery,
            dropped,
        });
        ReadingRx {
            rx,
            room,
            rest: None,
        }
    }

    /// Runs the fan-out until every source sender is gone, then closes the consumers'
    /// channels so they drain and stop.
    pub async fn run(self) {
        let Pipeline {
            capacity,
            consumers,
            metrics,
            input_tx,
            mut input_rx,
        } = self;
        // Our own sender would keep the channel open forever.
        drop(input_tx);
        let readings = metrics.counter(
            "gridwatch_readings_total",
            "Readings that entered the pipeline.",
            &[],
        );
        let batches = metrics.counter(
            "gridwatch_pipeline_batches_total",
            "Batches the fan-out handed to the consumers (readings_total / this = readings per batch).",
            &[],
        );
        // A lossless consumer must have room for a whole batch.
        let max = FAN_OUT_MAX.min(capacity);
        let mut taken = Vec::with_capacity(max);
        while input_rx.recv_many(&mut taken, max).await > 0 {
            if worth_lingering(taken.len(), max, FAN_OUT_LINGER) {
                tokio::time::sleep(FAN_OUT_LINGER).await;
                while taken.len() < max
                    && let Ok(r) = input_rx.try_recv()
                {
                    taken.push(r);
                }
            }
            readings.add(taken.len() as u64);
            batches.inc();
            let batch: Batch = taken.drain(..).map(Arc::new).collect();
            fan_out(&consumers, batch).await;
        }
    }
}

/// Whether `len` readings taken (of at most `max`) are worth waiting `linger` for more: a
/// channel that already had a quarter of `max` queued is busy and pays for its wake-ups.
fn worth_lingering(len: usize, max: usize, linger: Duration) -> bool {
    len < max.div_ceil(4) && !linger.is_zero()
}

/// Offers a batch to every consumer: waits for room in the lossless one, drops the batch for
/// a lossy one without room for all of it.
///
/// Whatever gathered goes out as one batch: one channel operation per consumer for the batch
/// instead of one per reading.
async fn fan_out(consumers: &[Consumer], batch: Batch) {
    let n = u32::try_from(batch.len()).unwrap_or(u32::MAX);
    for c in consumers {
        let permits = match c.delivery {
            // Closed: the consumer has stopped (its end was dropped); nothing to wait for.
            Delivery::Lossless => c.room.acquire_many(n).await.ok(),
            Delivery::Lossy => match c.room.try_acquire_many(n) {
                Ok(p) => Some(p),
                Err(TryAcquireError::NoPermits) => {
                    c.dropped.add(u64::from(n));
                    None
                }
                Err(TryAcquireError::Closed) => None,
            },
        };
        if let Some(p) = permits {
            // The consumer gives the room back as it takes the readings out.
            p.forget();
            // A closed consumer has stopped on purpose (shutdown); nothing to do.
            let _ = c.tx.send(Arc::clone(&batch));
        }
    }
}

/// A consumer's end of the pipeline.
pub struct ReadingRx {
    rx: mpsc::UnboundedReceiver<Batch>,
    room: Arc<Semaphore>,
    /// A batch partly taken out (a chunk asked for fewer) and where the rest starts.
    rest: Option<(Batch, usize)>,
}

impl Drop for ReadingRx {
    fn drop(&mut self) {
        // A consumer that stopped (shutdown, or a task that failed) frees no more room: the
        // fan-out must not wait for it.
        self.room.close();
    }
}

impl ReadingRx {
    /// Receives readings in chunks: waits for the first, lets more gather for `linger`
    /// unless a quarter of `max` was already queued, then takes what is queued, up to `max`
    /// in `buf` in all. Returns how many `buf` holds; 0 only when the pipeline has closed and
    /// everything was taken.
    ///
    /// Waking a task for every reading costs more than handling it (at 10,000 readings/s,
    /// each consumer would be woken 10,000 times a second, mostly across threads); a consumer
    /// that can wait a few milliseconds is woken once per chunk instead. A busy channel
    /// already pays for the wake-up: lingering there would only cap the consumer at `max`
    /// readings per `linger` (1024 per 20 ms is 51,200/s, half of a 100,000 msg/s MQTT load).
    /// Cancel-safe: readings already taken into `buf` stay there for the next call.
    pub async fn recv_chunk(&mut self, buf: &mut Chunk, max: usize, linger: Duration) -> usize {
        let max = max.max(1);
        self.take_queued(buf, max);
        if buf.is_empty() {
            match self.rx.recv().await {
                Some(b) => self.rest = Some((b, 0)),
                None => return 0,
            }
            self.take_queued(buf, max);
        }
        if worth_lingering(buf.len(), max, linger) {
            tokio::time::sleep(linger).await;
            self.take_queued(buf, max);
        }
        buf.len()
    }

    /// The next reading, waiting for it; `None` once the pipeline has closed and is empty.
    #[cfg(test)]
    pub(crate) async fn recv(&mut self) -> Option<Arc<Reading>> {
        let mut one = Chunk::new();
        (self.recv_chunk(&mut one, 1, Duration::ZERO).await > 0)
            .then(|| one.iter().next().cloned())
            .flatten()
    }

    /// The next reading if one is queued.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Arc<Reading>> {
        let mut one = Chunk::new();
        self.take_queued(&mut one, 1);
        one.iter().next().cloned()
    }

    /// A closed consumer end holding `readings` (tests that drive one consumer alone).
    #[cfg(test)]
    pub(crate) fn preloaded(readings: Vec<Arc<Reading>>) -> ReadingRx {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(readings.into());
        ReadingRx {
            rx,
            room: Arc::new(Semaphore::new(0)),
            rest: None,
        }
    }

    /// Takes queued readings into `buf` until it holds `max`, without waiting.
    fn take_queued(&mut self, buf: &mut Chunk, max: usize) {
        while buf.len() < max {
            let (batch, at) = match self.rest.take() {
                Some(r) => r,
                None => match self.rx.try_recv() {
                    Ok(b) => (b, 0),
                    Err(_) => break,
                },
            };
            let len = batch.len();
            let end = len.min(at + (max - buf.len()));
            self.room.add_permits(end.saturating_sub(at));
            if end < len {
                self.rest = Some((Arc::clone(&batch), end));
            }
            buf.push(batch, at..end);
        }
    }
}

#[cfg(test)]
mod tests;
