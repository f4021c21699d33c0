use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::model::DeviceInfo;

fn reading(ts: i64) -> Reading {
    let device = Arc::new(DeviceInfo::for_test("M-1", "meter"));
    Reading::from_pairs(device, ts, &[("voltage_a", 230.0)])
}

fn drain(rx: &mut mpsc::Receiver<Arc<Reading>>) -> Vec<i64> {
    let mut got = Vec::new();
    while let Ok(r) = rx.try_recv() {
        got.push(r.ts);
    }
    got
}

#[tokio::test(start_paused = true)]
async fn a_trickle_is_gathered_for_the_linger() {
    let (tx, mut rx) = mpsc::channel(64);
    let mut buf = Vec::new();
    tx.send(1).await.unwrap();
    let feeder = tokio::spawn(async move {
        for i in 2..=5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.send(i).await.unwrap();
        }
        // Arrives after the linger: the next chunk's.
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(6).await.unwrap();
    });
    let linger = Duration::from_millis(10);
    assert_eq!(recv_chunk(&mut rx, &mut buf, 100, linger).await, 5);
    assert_eq!(buf, vec![1, 2, 3, 4, 5]);
    buf.clear();
    assert_eq!(recv_chunk(&mut rx, &mut buf, 100, linger).await, 1);
    assert_eq!(buf, vec![6]);
    buf.clear();
    feeder.await.unwrap();
    assert_eq!(recv_chunk(&mut rx, &mut buf, 100, linger).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_busy_channel_is_taken_without_lingering() {
    let (tx, mut rx) = mpsc::channel(64);
    for i in 0..30 {
        tx.send(i).await.unwrap();
    }
    let mut buf = Vec::new();
    let t0 = tokio::time::Instant::now();
    // 30 queued, a quarter of 100 is 25: no linger, and never more than `max`.
    assert_eq!(
        recv_chunk(&mut rx, &mut buf, 100, Duration::from_secs(5)).await,
        30
    );
    assert_eq!(tokio::time::Instant::now(), t0);
    buf.clear();
    for i in 0..50 {
        tx.send(i).await.unwrap();
    }
    assert_eq!(
        recv_chunk(&mut rx, &mut buf, 20, Duration::from_secs(5)).await,
        20
    );
    assert_eq!(tokio::time::Instant::now(), t0);
    assert_eq!(buf, (0..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn the_fan_out_delivers_every_reading_and_drops_only_for_a_full_lossy_consumer() {
    let metrics = Registry::new();
    let mut p = Pipeline::new(4, Arc::clone(&metrics));
    let mut telemetry = p.consumer("telemetry", Delivery::Lossless);
    let mut slow = p.consumer("slow", Delivery::Lossy);
    let tx = p.sender();
    let run = tokio::spawn(p.run());
    let mut got = Vec::new();
    for ts in 0..10 {
        tx.send(reading(ts)).await.unwrap();
        // Telemetry is read as it comes; `slow` never until the end.
        while got.len() < ts as usize + 1 {
            match telemetry.recv().await {
                Some(r) => got.push(r.ts),
                None => break,
            }
        }
    }
    drop(tx);
    run.await.unwrap();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(drain(&mut slow), vec![0, 1, 2, 3]);
    assert_eq!(metrics.counter_total("gridwatch_pipeline_dropped_total"), 6);
    assert_eq!(metrics.counter_total("gridwatch_readings_total"), 10);
    assert!(telemetry.recv().await.is_none() && slow.recv().await.is_none());
}

#[test]
fn a_full_lossless_consumer_holds_the_fan_out_back() {
    let metrics = Registry::new();
    let mut p = Pipeline::new(1, metrics);
    let mut telemetry = p.consumer("telemetry", Delivery::Lossless);
    let consumers = std::mem::take(&mut p.consumers);
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(
        pin!(fan_out(&consumers, reading(0))).poll(&mut cx),
        Poll::Ready(())
    );
    let mut second = pin!(fan_out(&consumers, reading(1)));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    assert_eq!(drain(&mut telemetry), vec![0]);
    assert_eq!(second.as_mut().poll(&mut cx), Poll::Ready(()));
    assert_eq!(drain(&mut telemetry), vec![1]);
}
