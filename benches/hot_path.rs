//! Micro-benchmarks of the per-poll hot path: register decoding and line-protocol encoding.
//!
//! Run with `cargo bench --bench hot_path`; `scripts/bench.sh` runs them and turns
//! criterion's estimates into values/s and points/s per core (one benchmark thread = one
//! core). Inputs are the `bench-50` map the load harness serves: one 60-register response
//! holding 40 scaled 16-bit values and 10 f32 values.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gridwatch::config::ProfileConfig;
use gridwatch::model::{DeviceInfo, FieldDef, Quality, Reading, Schema};
use gridwatch::sinks::lineproto;
use gridwatch::sources::modbus::compiled::CompiledProfile;
use gridwatch::sources::modbus::decode;
use gridwatch::sources::modbus::planner::PlanLimits;

const BENCH_50: &str = include_str!("../config/profiles/bench-50.toml");

fn profile() -> CompiledProfile {
    let cfg: ProfileConfig = toml::from_str(BENCH_50).unwrap();
    CompiledProfile::compile("bench-50", &cfg, &PlanLimits::default()).unwrap()
}

/// A plausible response: 40 integers of a few thousand counts, then 10 f32 values.
fn response() -> Vec<u16> {
    let mut words: Vec<u16> = (0..40).map(|i| 2000 + i * 37).collect();
    for k in 0..10 {
        let bits = (1234.5f32 + k as f32 * 101.25).to_bits();
        words.push((bits >> 16) as u16);
        words.push(bits as u16);
    }
    words
}

fn device(i: usize) -> Arc<DeviceInfo> {
    Arc::new(
        DeviceInfo {
            id: format!("LD-{:03}-{:03}", i / 100, i % 100 + 1),
            kind: "meter".into(),
            site: format!("load-{:03}", i / 100),
            feeder: format!("F{:02}", i % 8),
            parent: None,
            location: None,
            rated_kva: None,
            nominal_voltage: None,
            customers: 1,
            interval_ns: 1_000_000_000,
            lp_series: String::new(),
            slot: gridwatch::model::Slot::NONE,
        }
        .finish(),
    )
}

fn decode_bench(c: &mut Criterion) {
    let p = profile();
    assert_eq!(p.plan.requests.len(), 1, "bench-50 is one read");
    let req = &p.plan.requests[0];
    let words = response();
    let mut raw = p.raw_buffer();
    let mut values = Vec::with_capacity(64);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(50));
    g.bench_function("bench50_poll", |b| {
        b.iter(|| {
            raw.fill(None);
            decode::decode_words(req, black_box(&words), &p.registers, &mut raw);
            values.clear();
            p.finish(&raw, &mut values);
            black_box(values.len())
        })
    });
    g.finish();
}

fn readings(p: &CompiledProfile, n: usize) -> Vec<Reading> {
    let req = &p.plan.requests[0];
    let words = response();
    (0..n)
        .map(|i| {
            let mut raw = p.raw_buffer();
            decode::decode_words(req, &words, &p.registers, &mut raw);
            let mut values = Vec::new();
            p.finish(&raw, &mut values);
            Reading {
                device: device(i),
                ts: 1_790_000_000_000_000_000 + i as i64 * 1_000_000,
                schema: Arc::clone(&p.schema),
                values,
                quality: Quality::Good,
            }
        })
        .collect()
}

fn encode_bench(c: &mut Criterion) {
    const N: usize = 1000;
    let p = profile();
    let wide = readings(&p, N);
    // A narrow point as in most line-protocol benchmarks: 5 fields.
    let schema5 = Arc::new(Schema::new(
        ["voltage", "current", "power", "energy", "temperature"]
            .iter()
            .map(|n| FieldDef::new(*n, None))
            .collect(),
    ));
    let narrow: Vec<Reading> = (0..N)
        .map(|i| Reading {
            device: device(i),
            ts: 1_790_000_000_000_000_000 + i as i64 * 1_000_000,
            schema: Arc::clone(&schema5),
            values: vec![
                (0, 231.7),
                (1, 40.25),
                (2, 9321.0),
                (3, 123456.789),
                (4, 48.5),
            ],
            quality: Quality::Good,
        })
        .collect();
    let mut buf: Vec<u8> = Vec::with_capacity(4 << 20);
    let mut encoder = lineproto::LineEncoder::new();
    let mut g = c.benchmark_group("lineproto");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("lines_50_fields", |b| {
        b.iter(|| {
            buf.clear();
            for r in &wide {
                encoder.write_reading(&mut buf, black_box(r));
            }
            black_box(buf.len())
        })
    });
    g.bench_function("lines_5_fields", |b| {
        b.iter(|| {
            buf.clear();
            for r in &narrow {
                encoder.write_reading(&mut buf, black_box(r));
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! { name = benches; config = config(); targets = decode_bench, encode_bench }
criterion_main!(benches);
