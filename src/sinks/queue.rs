//! The queue between the batcher and the writer: batches wait here until the store accepts
//! them. This version keeps them in memory, bounded by `max_pending_batches`, dropping (and
//! counting) the oldest when full; the disk spool takes its place for zero-loss operation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::metrics::Counter;

/// A line-protocol batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Newline-terminated lines, as the bytes that are sent (line protocol is UTF-8; the
    /// encoder writes bytes, so that no line needs a UTF-8 check on its way to the store).
    pub body: Vec<u8>,
    /// Number of points (lines) in `body`.
    pub points: usize,
}

/// Batches waiting for the store, oldest first.
#[derive(Debug)]
pub struct BatchQueue {
    batches: Mutex<VecDeque<Arc<Batch>>>,
    max_batches: usize,
    closed: AtomicBool,
    notify: Notify,
    dropped_points: Counter,
}

impl BatchQueue {
    /// A queue holding at most `max_batches` batches.
    pub fn new(max_batches: usize, dropped_points: Counter) -> Self {
        BatchQueue {
            batches: Mutex::new(VecDeque::new()),
            max_batches: max_batches.max(1),
            closed: AtomicBool::new(false),
            notify: Notify::new(),
            dropped_points,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Batch>>> {
        self.batches.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a batch, dropping the oldest if the queue is full.
    pub fn push(&self, batch: Batch) {
        {
            let mut q = self.lock();
            while q.len() >= self.max_batches {
                if let Some(old) = q.pop_front() {
                    self.dropped_points.add(old.points as u64);
                    tracing::error!(
                        points = old.points,
                        "telemetry queue full, dropped the oldest batch"
                    );
                }
            }
            q.push_back(Arc::new(batch));
        }
        self.notify.notify_one();
    }

    /// The oldest batch, if any.
    pub fn front(&self) -> Option<Arc<Batch>> {
        self.lock().front().cloned()
    }

    /// Removes the oldest batch once the store accepted it.
    pub fn ack(&self) {
        self.lock().pop_front();
    }

    /// Waits until something is pushed or the queue is closed.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// No more batches will be pushed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Points waiting to be written.
    pub fn pending_points(&self) -> usize {
        self.lock().iter().map(|b| b.points).sum()
    }
}
