use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::model::{DeviceInfo, Reading};

fn device(id: &str) -> Arc<DeviceInfo> {
    Arc::new(DeviceInfo::for_test(id, "meter"))
}

fn reading(i: usize) -> Reading {
    Reading::from_pairs(
        device(&format!("M-{i:05}")),
        1_700_000_000_000_000_000 + i as i64,
        &[
            ("voltage_a", 230.1),
            ("voltage_b", 229.7),
            ("voltage_c", 231.4),
        ],
    )
}

/// Runs the batcher over `n` readings and returns the batches it sealed, oldest first.
async fn batches_of(n: usize, settings: BatchSettings) -> Vec<Arc<Batch>> {
    let registry = Registry::new();
    let queue = Arc::new(BatchQueue::new(10_000, registry.counter("d", "d", &[])));
    let readings = (0..n).map(|i| Arc::new(reading(i))).collect();
    let rx = crate::pipeline::ReadingRx::preloaded(readings);
    run_batcher(rx, Buffer::Memory(Arc::clone(&queue)), settings, registry).await;
    drain(&queue)
}

/// The lines of a batch (its body must be UTF-8).
fn lines(b: &Batch) -> std::str::Lines<'_> {
    std::str::from_utf8(&b.body)
        .expect("batches are UTF-8")
        .lines()
}

fn drain(queue: &BatchQueue) -> Vec<Arc<Batch>> {
    let mut out = Vec::new();
    while let Some(b) = queue.front() {
        queue.ack();
        out.push(b);
    }
    out
}

#[tokio::test]
async fn batches_are_sealed_at_max_bytes_without_losing_a_line() {
    let max_bytes = 4096;
    let batches = batches_of(
        500,
        BatchSettings {
            batch_size: 5000,
            max_bytes,
            flush_interval: Duration::from_secs(3600),
        },
    )
    .await;
    let longest_line = batches
        .iter()
        .flat_map(|b| lines(b))
        .map(|l| l.len() + 1)
        .max()
        .expect("lines were written");
    assert!(batches.len() > 5, "only {} batches", batches.len());
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.points, lines(b).count(), "batch {i}");
        assert!(
            b.body.len() < max_bytes + longest_line,
            "batch {i}: {}",
            b.body.len()
        );
        if i + 1 < batches.len() {
            assert!(
                b.body.len() >= max_bytes,
                "batch {i} sealed early: {}",
                b.body.len()
            );
        }
    }
    let lines: Vec<&str> = batches.iter().flat_map(|b| lines(b)).collect();
    assert_eq!(lines.len(), 500);
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.contains(&format!("device=M-{i:05},")),
            "line {i} out of order: {l}"
        );
    }
}

#[tokio::test]
async fn batch_size_still_caps_points() {
    let batches = batches_of(
        250,
        BatchSettings {
            batch_size: 100,
            max_bytes: 1 << 20,
            flush_interval: Duration::from_secs(3600),
        },
    )
    .await;
    let points: Vec<usize> = batches.iter().map(|b| b.points).collect();
    assert_eq!(points, vec![100, 100, 50]);
}

#[tokio::test]
async fn pre_encoded_lines_alone_are_sealed_at_the_caps() {
    // Alarm and KPI lines arrive on their own channel; a burst of them (an alarm storm) must
    // not grow one batch past the caps while no reading comes to seal it.
    let registry = Registry::new();
    let queue = Arc::new(BatchQueue::new(10_000, registry.counter("d", "d", &[])));
    let rx = crate::pipeline::ReadingRx::preloaded(Vec::new());
    let (lines_tx, lines_rx) = mpsc::unbounded_channel();
    for i in 0..300 {
        let line = format!(
            "alarm,device=TX-{i:04},rule=oil_temp_high state=\"raised\" 1700000000{i:09}\n"
        );
        lines_tx.send(line).expect("batcher is listening");
    }
    drop(lines_tx);
    let max_bytes = 4096;
    let settings = BatchSettings {
        batch_size: 120,
        max_bytes,
        flush_interval: Duration::from_secs(3600),
    };
    run_batcher_with_lines(
        rx,
        Some(lines_rx),
        Buffer::Memory(Arc::clone(&queue)),
        settings,
        registry,
    )
    .await;
    let batches = drain(&queue);
    assert!(batches.len() > 2, "only {} batches", batches.len());
    let longest = 100;
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b.points, lines(b).count(), "batch {i}");
        assert!(b.points <= 120, "batch {i}: {} points", b.points);
        assert!(
            b.body.len() < max_bytes + longest,
            "batch {i}: {} bytes",
            b.body.len()
        );
    }
    let lines: Vec<&str> = batches.iter().flat_map(|b| lines(b)).collect();
    assert_eq!(lines.len(), 300);
    for (i, l) in lines.iter().enumerate() {
        assert!(l.contains(&format!("device=TX-{i:04},")), "line {i}: {l}");
    }
}

/// A batcher fed by a real pipeline; returns the sender, the queue and the batcher's task.
fn streaming_batcher(
    settings: BatchSettings,
) -> (
    crate::pipeline::ReadingSender,
    Arc<BatchQueue>,
    tokio::task::JoinHandle<()>,
) {
    let registry = Registry::new();
    let queue = Arc::new(BatchQueue::new(10_000, registry.counter("d", "d", &[])));
    let mut pipeline = crate::pipeline::Pipeline::new(1024, Arc::clone(&registry));
    let rx = pipeline.consumer("telemetry", crate::pipeline::Delivery::Lossless);
    let tx = pipeline.sender();
    tokio::spawn(pipeline.run());
    let batcher = tokio::spawn(run_batcher(
        rx,
        Buffer::Memory(Arc::clone(&queue)),
        settings,
        registry,
    ));
    (tx, queue, batcher)
}

#[tokio::test(start_paused = true)]
async fn a_steady_stream_is_sent_in_full_batches_not_cut_by_the_clock() {
    // 100 readings/s, 70 per batch: a batch fills in 0.7 s, within the 1 s flush
    // interval. A flush on a free-running one-second clock cut a part-filled batch every
    // second (an extra request and spool record each time).
    let (tx, queue, batcher) = streaming_batcher(BatchSettings {
        batch_size: 70,
        max_bytes: 1 << 20,
        flush_interval: Duration::from_secs(1),
    });
    for i in 0..490 {
        tx.send(reading(i)).await.expect("pipeline is running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(tx);
    batcher.await.expect("batcher ran");
    let points: Vec<usize> = drain(&queue).iter().map(|b| b.points).collect();
    assert_eq!(points, vec![70; 7]);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_waits_flush_interval_from_its_first_point() {
    let (tx, queue, batcher) = streaming_batcher(BatchSettings {
        batch_size: 5000,
        max_bytes: 1 << 20,
        flush_interval: Duration::from_secs(1),
    });
    // Off the second's grid on purpose: a clock tick would seal it 300 ms after it came.
    tokio::time::sleep(Duration::from_millis(700)).await;
    tx.send(reading(0)).await.expect("pipeline is running");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(queue.front().is_none(), "sealed before flush_interval");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sealed = drain(&queue);
    assert_eq!(sealed.iter().map(|b| b.points).collect::<Vec<_>>(), vec![1]);
    // The next reading opens a new batch with its own deadline.
    tx.send(reading(1)).await.expect("pipeline is running");
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(queue.front().is_none(), "second batch sealed early");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(drain(&queue).len(), 1);
    drop(tx);
    batcher.await.expect("batcher ran");
}

#[tokio::test]
async fn a_small_batch_does_not_size_the_buffer_of_the_next_full_one() {
    let registry = Registry::new();
    let queue = Arc::new(BatchQueue::new(100, registry.counter("d", "d", &[])));
    let mut open = OpenBatch::new(
        1 << 16,
        Buffer::Memory(Arc::clone(&queue)),
        registry.counter("e", "e", &[]),
    );
    let full = "x".repeat(60_000);
    open.push_lines(&format!("{full}\n"));
    open.seal().await;
    open.push_lines("small 1\n");
    open.seal().await;
    // Decays by 1/8 per seal from the largest recent batch; regrowing from a buffer made
    // for the small one copied the batch at every doubling.
    assert!(
        open.body.capacity() >= 60_001 - 60_001 / 8,
        "capacity {} after a small batch",
        open.body.capacity()
    );
    // A rate that stays low lets it shrink.
    for _ in 0..40 {
        open.push_lines("small 1\n");
        open.seal().await;
    }
    assert!(
        open.body.capacity() < 1000,
        "capacity {}",
        open.body.capacity()
    );
    assert_eq!(drain(&queue).len(), 42);
}
