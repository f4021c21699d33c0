use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use super::*;
use crate::model::DeviceInfo;

fn reading(ts: i64) -> Reading {
    let device = Arc::new(DeviceInfo::for_test("M-1", "meter"));
    Reading::from_pairs(device, ts, &[("voltage_a", 230.0)])
}

fn drain(rx: &mut ReadingRx) -> Vec<i64> {
    let mut got = Vec::new();
    while let Some(r) = rx.try_recv() {
        got.push(r.ts);
    }
    got
}

/// A consumer fed by hand with batches of these timestamps, and the fan-out's end of it.
fn consumer(capacity: usize) -> (Consumer, ReadingRx) {
    let mut p = Pipeline::new(capacity, Registry::new());
    let rx = p.consumer("c", Delivery::Lossless);
    (p.consumers.remove(0), rx)
}

fn batch(ts: &[i64]) -> Batch {
    ts.iter().map(|t| Arc::new(reading(*t))).collect()
}

fn ts_of(buf: &Chunk) -> Vec<i64> {
    buf.iter().map(|r| r.ts).collect()
}

#[tokio::test(start_paused = true)]
async fn a_trickle_is_gathered_for_the_linger() {
    let (c, mut rx) = consumer(64);
    let mut buf = Chunk::new();
    fan_out(std::slice::from_ref(&c), batch(&[1])).await;
    let feeder = tokio::spawn(async move {
        for i in 2..=5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            fan_out(std::slice::from_ref(&c), batch(&[i])).await;
        }
        // Arrives after the linger: the next chunk's.
        tokio::time::sleep(Duration::from_millis(20)).await;
        fan_out(std::slice::from_ref(&c), batch(&[6])).await;
    });
    let linger = Duration::from_millis(10);
    assert_eq!(rx.recv_chunk(&mut buf, 100, linger).await, 5);
    assert_eq!(ts_of(&buf), vec![1, 2, 3, 4, 5]);
    buf.clear();
    assert_eq!(rx.recv_chunk(&mut buf, 100, linger).await, 1);
    assert_eq!(ts_of(&buf), vec![6]);
    buf.clear();
    feeder.await.unwrap();
    assert_eq!(rx.recv_chunk(&mut buf, 100, linger).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_busy_channel_is_taken_without_lingering_and_batches_are_split_at_max() {
    let (c, mut rx) = consumer(128);
    let c = std::slice::from_ref(&c);
    fan_out(c, batch(&(0..10).collect::<Vec<_>>())).await;
    fan_out(c, batch(&(10..30).collect::<Vec<_>>())).await;
    let mut buf = Chunk::new();
    let t0 = tokio::time::Instant::now();
    // 30 queued, a quarter of 100 is 25: no linger, and never more than `max`.
    assert_eq!(
        rx.recv_chunk(&mut buf, 100, Duration::from_secs(5)).await,
        30
    );
    assert_eq!(tokio::time::Instant::now(), t0);
    buf.clear();
    fan_out(c, batch(&(0..50).collect::<Vec<_>>())).await;
    assert_eq!(
        rx.recv_chunk(&mut buf, 20, Duration::from_secs(5)).await,
        20
    );
    assert_eq!(tokio::time::Instant::now(), t0);
    assert_eq!(ts_of(&buf), (0..20).collect::<Vec<_>>());
    buf.clear();
    // The rest of the split batch comes next, in order, then nothing is left.
    assert_eq!(rx.recv_chunk(&mut buf, 100, Duration::ZERO).await, 30);
    assert_eq!(ts_of(&buf), (20..50).collect::<Vec<_>>());
    assert!(rx.try_recv().is_none());
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
    let (c, mut telemetry) = consumer(2);
    let consumers = std::slice::from_ref(&c);
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(
        pin!(fan_out(consumers, batch(&[0, 1]))).poll(&mut cx),
        Poll::Ready(())
    );
    let mut second = pin!(fan_out(consumers, batch(&[2])));
    assert!(second.as_mut().poll(&mut cx).is_pending());
    // Taking one reading out makes room for the waiting one.
    assert_eq!(telemetry.try_recv().map(|r| r.ts), Some(0));
    assert_eq!(second.as_mut().poll(&mut cx), Poll::Ready(()));
    assert_eq!(drain(&mut telemetry), vec![1, 2]);
}

#[tokio::test]
async fn readings_queued_together_reach_every_consumer_as_one_batch_in_order() {
    let metrics = Registry::new();
    let mut p = Pipeline::new(1000, Arc::clone(&metrics));
    let mut a = p.consumer("a", Delivery::Lossless);
    let mut b = p.consumer("b", Delivery::Lossy);
    let tx = p.sender();
    // Queued before the fan-out runs: taken in one go.
    for ts in 0..300 {
        tx.send(reading(ts)).await.unwrap();
    }
    drop(tx);
    p.run().await;
    for rx in [&mut a, &mut b] {
        assert_eq!(drain(rx), (0..300).collect::<Vec<_>>());
        assert!(rx.recv().await.is_none());
    }
    assert_eq!(metrics.counter_total("gridwatch_readings_total"), 300);
    assert_eq!(metrics.counter_total("gridwatch_pipeline_dropped_total"), 0);
}

#[tokio::test]
async fn a_consumer_that_stopped_never_holds_the_fan_out_back() {
    let metrics = Registry::new();
    let mut p = Pipeline::new(2, Arc::clone(&metrics));
    let telemetry = p.consumer("telemetry", Delivery::Lossless);
    let stream = p.consumer("stream", Delivery::Lossy);
    let mut history = p.consumer("history", Delivery::Lossy);
    drop(telemetry);
    drop(stream);
    let tx = p.sender();
    let run = tokio::spawn(p.run());
    // Far more than the stopped consumers' room: the fan-out must not wait for them, nor
    // count readings as dropped for consumers that are gone.
    let mut got = Vec::new();
    for ts in 0..20 {
        tx.send(reading(ts)).await.unwrap();
        if let Some(r) = history.recv().await {
            got.push(r.ts);
        }
    }
    drop(tx);
    run.await.unwrap();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert_eq!(metrics.counter_total("gridwatch_pipeline_dropped_total"), 0);
}

#[tokio::test(start_paused = true)]
async fn readings_that_arrive_within_the_linger_go_out_as_one_batch() {
    let metrics = Registry::new();
    let mut p = Pipeline::new(1000, Arc::clone(&metrics));
    let mut a = p.consumer("a", Delivery::Lossless);
    let tx = p.sender();
    let run = tokio::spawn(p.run());
    tx.send(reading(0)).await.unwrap();
    // The fan-out takes the first reading and lingers; the next two arrive meanwhile
    // (the paused clock stands still until every task waits).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tx.send(reading(1)).await.unwrap();
    tx.send(reading(2)).await.unwrap();
    let mut buf = Chunk::new();
    assert_eq!(a.recv_chunk(&mut buf, 100, Duration::ZERO).await, 3);
    assert_eq!(ts_of(&buf), vec![0, 1, 2]);
    assert_eq!(metrics.counter_total("gridwatch_pipeline_batches_total"), 1);
    // A reading on its own still goes out, one linger later.
    tx.send(reading(3)).await.unwrap();
    buf.clear();
    assert_eq!(a.recv_chunk(&mut buf, 100, Duration::ZERO).await, 1);
    assert_eq!(metrics.counter_total("gridwatch_pipeline_batches_total"), 2);
    drop(tx);
    run.await.unwrap();
    assert_eq!(metrics.counter_total("gridwatch_readings_total"), 4);
}
