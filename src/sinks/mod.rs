//! Outputs for telemetry: InfluxDB-compatible stores and line-protocol files.
//!
//! The sink is two tasks joined by a [`Buffer`]: the *batcher* encodes readings from the
//! pipeline into line-protocol batches (by size and by time) and pushes them onto the buffer;
//! the *writer* sends the oldest batch and removes it only after the store accepted it. The
//! buffer is the disk [`spool::Spool`] (default with a store: zero loss across outages and
//! restarts) or the in-memory [`queue::BatchQueue`]. The batcher never waits on the network,
//! so a slow or dead store never slows polling.

pub mod file;
pub mod influx;
pub mod lineproto;
pub mod queue;
pub mod spool;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, Registry};
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
    pub async fn write(&mut self, batch: &Arc<Batch>) -> Result<(), WriteError> {
        match self {
            Writer::Influx(w) => w.write(influx::body_of(batch)).await,
            Writer::File(w) => w.write(&batch.body).await,
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

/// The queue between batcher and writer.
#[derive(Clone)]
pub enum Buffer {
    /// Bounded memory; oldest dropped when full; lost on exit.
    Memory(Arc<BatchQueue>),
    /// Disk spool: see [`spool`].
    Spool(Arc<spool::Spool>),
}

/// A batch taken from the [`Buffer`] for sending.
pub struct Outgoing {
    /// The batch.
    pub batch: Arc<Batch>,
    id: Option<spool::RecordId>,
}

impl Buffer {
    /// Queues a batch. Durability: see [`spool::Spool::push`]; the memory queue promises
    /// nothing beyond the process.
    pub async fn push(&self, batch: Batch) {
        match self {
            Buffer::Memory(q) => q.push(batch),
            Buffer::Spool(s) => {
                let batch = Arc::new(batch);
                let mut delay = Duration::from_millis(100);
                while s.push(Arc::clone(&batch)).await.is_err() {
                    // A full or failing disk may recover (an operator frees space): hold the
                    // batch and try again; meanwhile the pipeline backs up.
                    tracing::warn!(
                        points = batch.points,
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot spool batch; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Records lines of the batch being filled so a killed process does not lose them
    /// (spool only: see [`spool::Spool::journal`]; the memory queue has nothing to keep).
    pub fn journal(&self, lines: &[u8], points: u32) {
        if let Buffer::Spool(s) = self {
            s.journal(lines, points);
        }
    }

    /// The oldest batch not yet accepted by the store.
    pub async fn front(&self) -> Option<Outgoing> {
        match self {
            Buffer::Memory(q) => q.front().map(|batch| Outgoing { batch, id: None }),
            Buffer::Spool(s) => s.front().await.map(|(batch, id)| Outgoing {
                batch,
                id: Some(id),
            }),
        }
    }

    /// Removes `out` once the store accepted (or definitively refused) it.
    pub async fn ack(&self, out: &Outgoing) {
        match (self, out.id) {
            (Buffer::Memory(q), _) => q.ack(),
            (Buffer::Spool(s), Some(id)) => s.ack(id).await,
            (Buffer::Spool(_), None) => {}
        }
    }

    /// Gives the body of a delivered batch back for reuse (spool only).
    pub fn recycle(&self, out: Outgoing) {
        if let Buffer::Spool(s) = self {
            s.recycle(out.batch);
        }
    }

    /// An empty buffer for the next batch: a delivered batch's body when the spool kept one.
    fn take_buffer(&self, len: usize) -> Vec<u8> {
        match self {
            Buffer::Spool(s) => s.take_buffer(len),
            Buffer::Memory(_) => Vec::with_capacity(batch_capacity(len)),
        }
    }

    /// Waits for a push or close.
    pub async fn wait(&self) {
        match self {
            Buffer::Memory(q) => q.wait().await,
            Buffer::Spool(s) => s.wait().await,
        }
    }

    /// No more pushes; the spool forces its last segment to disk.
    pub fn close(&self) {
        match self {
            Buffer::Memory(q) => q.close(),
            Buffer::Spool(s) => s.close(),
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        match self {
            Buffer::Memory(q) => q.is_closed(),
            Buffer::Spool(s) => s.is_closed(),
        }
    }

    /// Points waiting for the store.
    pub fn pending_points(&self) -> u64 {
        match self {
            Buffer::Memory(q) => q.pending_points() as u64,
            Buffer::Spool(s) => s.pending_points(),
        }
    }

    /// Whether unsent batches survive a restart.
    pub fn is_durable(&self) -> bool {
        matches!(self, Buffer::Spool(_))
    }
}

/// How the writer is doing, for `/readyz`.
pub struct SinkHealth {
    /// The buffer the writer drains.
    pub buffer: Buffer,
    store_ok: AtomicBool,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SinkHealth {
    /// Healthy until the first failed write.
    pub fn new(buffer: Buffer) -> Arc<Self> {
        Arc::new(SinkHealth {
            buffer,
            store_ok: AtomicBool::new(true),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    fn success(&self) {
        self.store_ok.store(true, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn failure(&self, err: &str) {
        self.store_ok.store(false, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string());
    }

    /// Whether the last write attempt succeeded (true before the first one).
    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Relaxed)
    }

    /// Failed attempts since the last success.
    pub fn consecutive_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The last write error while the store is failing.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// Points per batch.
    pub batch_size: usize,
    /// Bytes of line protocol per batch (a batch is sealed once it reaches this).
    pub max_bytes: usize,
    /// Longest wait before a partial batch is sent, from its first point.
    pub flush_interval: Duration,
}

/// Most readings the batcher encodes per wake-up (and journals in one record).
const BATCHER_CHUNK: usize = 1024;

/// How long the batcher lets readings gather after the first one: batches are flushed by
/// `flush_interval` (a second by default), so 10 ms costs nothing in delivery.
const BATCHER_LINGER: Duration = Duration::from_millis(10);

/// Encodes readings into batches until the pipeline closes `rx`, then flushes the last one.
pub async fn run_batcher(
    rx: crate::pipeline::ReadingRx,
    queue: Buffer,
    settings: BatchSettings,
    metrics: Arc<Registry>,
) {
    run_batcher_with_lines(rx, None, queue, settings, metrics).await
}

/// [`run_batcher`] that also accepts pre-encoded line-protocol lines (each newline-terminated)
/// on `lines`, batched with the readings: how alarm events reach the store as the `alarm`
/// measurement. Lines still queued when `rx` closes are flushed with the last batch.
pub async fn run_batcher_with_lines(
    mut rx: crate::pipeline::ReadingRx,
    mut lines: Option<mpsc::UnboundedReceiver<String>>,
    queue: Buffer,
    settings: BatchSettings,
    metrics: Arc<Registry>,
) {
    let encoded = metrics.counter(
        "gridwatch_points_encoded_total",
        "Points encoded into line-protocol batches.",
        &[],
    );
    let max_bytes = settings.max_bytes.max(1);
    let mut open = OpenBatch::new(max_bytes, queue, encoded);
    let full =
        |open: &OpenBatch| open.points >= settings.batch_size || open.body.len() >= max_bytes;
    // Armed while a batch is open: it is sealed `flush_interval` after its first point at the
    // latest. A free-running tick sealed whatever had gathered once a second, so at a high
    // rate every second brought one small batch (an extra request and spool record) and
    // a buffer sized for it, which the next full batch then regrew by doubling.
    let flush = tokio::time::sleep_until(Instant::now());
    tokio::pin!(flush);
    let mut chunk = crate::pipeline::Chunk::new();
    let mut encoder = lineproto::LineEncoder::new();
    loop {
        // A chunk never takes the batch past `batch_size`.
        let room = settings
            .batch_size
            .saturating_sub(open.points)
            .clamp(1, BATCHER_CHUNK);
        tokio::select! {
            n = rx.recv_chunk(&mut chunk, room, BATCHER_LINGER) => {
                if n == 0 {
                    break;
                }
                let mut start = open.body.len();
                let mut added = 0u32;
                for reading in chunk.iter() {
                    let before = open.body.len();
                    encoder.write_reading(&mut open.body, reading);
                    if open.body.len() > before {
                        added += 1;
                    }
                    if open.body.len() >= max_bytes {
                        // One journal record per sealed part: the batch it belongs to is
                        // sealed right after, so the journal never holds two batches.
                        open.journal_since(start, added);
                        open.seal().await;
                        start = 0;
                        added = 0;
                    }
                }
                chunk.clear();
                if added > 0 {
                    // One journal record (one `write`) per chunk: every encoded reading is
                    // journaled before the next chunk is taken.
                    open.journal_since(start, added);
                }
                if full(&open) {
                    open.seal().await;
                }
            }
            Some(text) = recv_lines(&mut lines) => {
                open.push_lines(&text);
                if full(&open) {
                    open.seal().await;
                }
            }
            _ = &mut flush, if open.armed => {
                open.seal().await;
            }
        }
        if open.points > 0 && !open.armed {
            flush
                .as_mut()
                .reset(Instant::now() + settings.flush_interval);
            open.armed = true;
        }
    }
    if let Some(lines) = lines.as_mut() {
        while let Ok(text) = lines.try_recv() {
            open.push_lines(&text);
            if full(&open) {
                open.seal().await;
            }
        }
    }
    open.seal().await;
    open.queue.close();
}

/// The batch the batcher is filling, and what it needs to seal it.
struct OpenBatch {
    body: Vec<u8>,
    points: usize,
    /// Bytes the next batch is expected to take: the largest recent batch, decaying by 1/8
    /// per seal, so the partial batch after a burst or before a quiet spell does not size
    /// the buffer of the next full one, and a rate that stays low lets it shrink.
    expect: usize,
    /// Whether the flush timer runs for this batch (set when it got its first point).
    armed: bool,
    queue: Buffer,
    encoded: Counter,
}

impl OpenBatch {
    fn new(max_bytes: usize, queue: Buffer, encoded: Counter) -> Self {
        OpenBatch {
            // Sealing at `max_bytes` overshoots by at most one line.
            body: Vec::with_capacity(batch_capacity(max_bytes)),
            points: 0,
            expect: 0,
            armed: false,
            queue,
            encoded,
        }
    }

    /// Journals the `added` lines encoded since byte `start` and counts them into the batch.
    fn journal_since(&mut self, start: usize, added: u32) {
        self.queue.journal(&self.body[start..], added);
        self.points += added as usize;
    }

    /// Adds pre-encoded lines (journaled first, like readings).
    fn push_lines(&mut self, text: &str) {
        let n = text.lines().count();
        self.queue
            .journal(text.as_bytes(), u32::try_from(n).unwrap_or(u32::MAX));
        self.body.extend_from_slice(text.as_bytes());
        self.points += n;
    }

    /// Hands the batch to the queue (nothing happens while it is empty).
    async fn seal(&mut self) {
        if self.points == 0 {
            return;
        }
        self.expect = self.body.len().max(self.expect - self.expect / 8);
        // A kept buffer with room for the expected batch, or a new one with 1/8 to spare,
        // so it rarely regrows (each doubling copies the whole batch into fresh pages). A
        // sealed batch with much spare capacity gives it back: batches can wait in the
        // queue for a long time while the store is slow or down, and doubling slack would
        // count against the daemon's memory. Shrinking copies the batch, so a batch that is
        // nearly full keeps its few spare bytes.
        let mut text = std::mem::replace(&mut self.body, self.queue.take_buffer(self.expect));
        if text.capacity() - text.len() > text.len() / 4 {
            text.shrink_to_fit();
        }
        self.encoded.add(self.points as u64);
        self.armed = false;
        let points = std::mem::take(&mut self.points);
        self.queue.push(Batch { body: text, points }).await;
    }
}

async fn recv_lines(lines: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Capacity of a new buffer for a batch expected to be `len` bytes: 1/8 to spare.
pub(crate) fn batch_capacity(len: usize) -> usize {
    len + len / 8
}

/// Sends queued batches oldest first until the queue is closed and empty, or until `hard_stop`
/// fires (shutdown deadline). A batch leaves the queue only after a 2xx (acknowledged), or
/// after a 4xx that can never succeed, in which case it is appended to `dead_letter` with the
/// store's reason. Network errors, timeouts and 5xx are retried with exponential backoff;
/// at shutdown, with a durable (spool) queue, the writer stops at the first failure instead,
/// leaving the rest on disk for the next start.
pub async fn run_writer(
    mut writer: Writer,
    health: Arc<SinkHealth>,
    dead_letter: PathBuf,
    metrics: Arc<Registry>,
    hard_stop: CancellationToken,
) {
    let queue = health.buffer.clone();
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
    let dead_lettered = metrics.counter(
        "gridwatch_points_dead_lettered_total",
        "Points the store refused with a 4xx, written to the dead-letter file.",
        &labels,
    );
    // A 10 s ceiling: after an outage replay starts within 10 s of the store coming back.
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let front = tokio::select! {
            f = queue.front() => f,
            _ = hard_stop.cancelled() => return,
        };
        let Some(out) = front else {
            if queue.is_closed() {
                return;
            }
            tokio::select! {
                _ = queue.wait() => continue,
                _ = hard_stop.cancelled() => return,
            }
        };
        let batch = Arc::clone(&out.batch);
        let started = Instant::now();
        let result = tokio::select! {
            r = writer.write(&batch) => r,
            _ = hard_stop.cancelled() => {
                tracing::warn!(sink = writer.name(), pending_points = queue.pending_points(), "shutdown deadline reached with unsent points");
                return;
            }
        };
        latency.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                written.add(batch.points as u64);
                drop(batch);
                queue.ack(&out).await;
                queue.recycle(out);
                health.success();
                backoff.reset();
            }
            Err(WriteError::Rejected { status, body }) => {
                rejected.add(batch.points as u64);
                tracing::error!(sink = writer.name(), status, points = batch.points, reason = %body, dead_letter = %dead_letter.display(), "store rejected batch; moved to the dead-letter file");
                match write_dead_letter(&dead_letter, status, &body, &batch.body).await {
                    Ok(()) => dead_lettered.add(batch.points as u64),
                    Err(e) => {
                        tracing::error!(file = %dead_letter.display(), error = %e, points = batch.points, "cannot write the dead-letter file; the rejected batch is dropped")
                    }
                }
                // The store answered, so it is up; the data was the problem.
                health.success();
                queue.ack(&out).await;
            }
            Err(e @ WriteError::Retryable(_)) => {
                write_errors.inc();
                health.failure(&e.to_string());
                if queue.is_closed() && queue.is_durable() {
                    tracing::warn!(sink = writer.name(), error = %e, pending_points = queue.pending_points(), "store unavailable at shutdown; unsent points stay in the spool for the next start");
                    return;
                }
                let wait = backoff.next_delay();
                tracing::warn!(sink = writer.name(), error = %e, retry_in_ms = wait.as_millis() as u64, pending_points = queue.pending_points(), "write failed");
                let closed_durable = async {
                    while !(queue.is_closed() && queue.is_durable()) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = closed_durable => {
                        tracing::warn!(sink = writer.name(), pending_points = queue.pending_points(), "store unavailable at shutdown; unsent points stay in the spool for the next start");
                        return;
                    }
                    _ = hard_stop.cancelled() => return,
                }
            }
        }
    }
}

/// Appends a refused batch to `path` after a `#` comment line with the time, status and
/// reason (line protocol treats `#` lines as comments, so the file can be re-imported after
/// fixing the data). Returns after the data reached the OS.
async fn write_dead_letter(
    path: &std::path::Path,
    status: u16,
    reason: &str,
    body: &[u8],
) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut text = format!(
        "# {} HTTP {status}: {reason}\n",
        chrono::Utc::now().to_rfc3339()
    )
    .into_bytes();
    text.extend_from_slice(body);
    if !body.ends_with(b"\n") {
        text.push(b'\n');
    }
    f.write_all(&text).await?;
    f.flush().await
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

#[cfg(test)]
mod tests;
