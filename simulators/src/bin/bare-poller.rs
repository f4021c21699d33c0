//! `bare-poller`: the baseline of `scripts/bench.sh`. It runs gridwatch's poll loop with
//! nothing else: one tokio-modbus TCP connection per gateway, each unit read on its own
//! interval with the same phase spreading as the daemon, and the response dropped — no
//! decoding, no pipeline, no store. Reads only (function 03/04), like gridwatch.
//!
//! After `--warmup` it measures its own CPU time (`/proc/self/stat` utime + stime) and the
//! polls completed over `--duration`, and prints one JSON object on stdout, so that
//! gridwatch's CPU per poll can be divided by this program's: the overhead ratio.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Parser;
use tokio::time::Instant;
use tokio_modbus::prelude::*;

#[derive(Debug, Parser)]
#[command(
    name = "bare-poller",
    about = "Bare tokio-modbus poll loop (benchmark baseline)"
)]
struct Args {
    /// File with one gateway address per line (`gridwatch-sim load --addrs-file`).
    #[arg(long)]
    addrs_file: PathBuf,
    /// Unit ids 1..=N per gateway.
    #[arg(long, default_value_t = 100)]
    units: u8,
    /// Poll interval per device.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Time before measuring starts (connections, first polls).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measured time.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// First register of the read.
    #[arg(long, default_value_t = 0)]
    start: u16,
    /// Registers per read.
    #[arg(long, default_value_t = 60)]
    count: u16,
    /// Read input registers (04) instead of holding registers (03).
    #[arg(long)]
    input: bool,
}

/// Latency buckets: 10 µs wide up to 10 ms, then one overflow bucket.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 1001;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    hist: Vec<AtomicU64>,
}

/// utime + stime of this process in seconds (all threads).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3. Linux
    // reports them in USER_HZ, which is 100 on every mainstream architecture.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn gateway(addr: SocketAddr, args: Arc<Args>, counts: Arc<Counts>, stop: Instant) {
    let mut ctx = loop {
        match tcp::connect_slave(addr, Slave(1)).await {
            Ok(ctx) => break ctx,
            Err(e) => {
                eprintln!("connect {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if Instant::now() >= stop {
                    return;
                }
            }
        }
    };
    let n = u32::from(args.units.max(1));
    // The daemon's grid: unit i at a whole multiple of the interval on the wall clock plus
    // i/n of the interval (gridwatch's `poller::first_due`), so both fire on the same ticks;
    // rounds start at the next whole interval (the warm-up covers the wait).
    let now = Instant::now();
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let iv = args.interval.as_nanos().max(1);
    let start = now + Duration::from_nanos((iv - wall % iv) as u64);
    let mut round = 0u32;
    'outer: loop {
        for i in 0..n {
            let due = start + args.interval * round + args.interval / n * i;
            if due >= stop {
                break 'outer;
            }
            // Like the daemon: a slot that passed while the connection was busy is skipped.
            if Instant::now() > due + args.interval {
                continue;
            }
            tokio::time::sleep_until(due).await;
            ctx.set_slave(Slave((i + 1) as u8));
            let t0 = Instant::now();
            let res = if args.input {
                ctx.read_input_registers(args.start, args.count).await
            } else {
                ctx.read_holding_registers(args.start, args.count).await
            };
            let us = t0.elapsed().as_micros() as u64;
            match res {
                Ok(Ok(_)) => {
                    counts.ok.fetch_add(1, Ordering::Relaxed);
                    let b = ((us / BUCKET_US) as usize).min(BUCKETS - 1);
                    counts.hist[b].fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        round += 1;
    }
}

fn quantile(hist: &[u64], q: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return f64::NAN;
    }
    let want = (q * total as f64).ceil() as u64;
    let mut seen = 0;
    for (i, &c) in hist.iter().enumerate() {
        seen += c;
        if seen >= want {
            // Upper edge of the bucket, in milliseconds.
            return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
        }
    }
    f64::NAN
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let text = std::fs::read_to_string(&args.addrs_file)
        .with_context(|| format!("reading {}", args.addrs_file.display()))?;
    let addrs: Vec<SocketAddr> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse()
                .with_context(|| format!("bad address {l:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let counts = Arc::new(Counts {
        hist: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        ..Counts::default()
    });
    let begin = Instant::now();
    let stop = begin + args.warmup + args.duration;
    let tasks: Vec<_> = addrs
        .iter()
        .map(|&a| tokio::spawn(gateway(a, Arc::clone(&args), Arc::clone(&counts), stop)))
        .collect();

    tokio::time::sleep_until(begin + args.warmup).await;
    let cpu0 = cpu_seconds();
    let ok0 = counts.ok.load(Ordering::Relaxed);
    let failed0 = counts.failed.load(Ordering::Relaxed);
    let hist0: Vec<u64> = counts
        .hist
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    let t0 = Instant::now();
    tokio::time::sleep_until(stop).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let ok = counts.ok.load(Ordering::Relaxed) - ok0;
    let failed = counts.failed.load(Ordering::Relaxed) - failed0;
    let hist: Vec<u64> = counts
        .hist
        .iter()
        .zip(&hist0)
        .map(|(b, h0)| b.load(Ordering::Relaxed) - h0)
        .collect();
    for t in tasks {
        t.abort();
    }
    let devices = addrs.len() as f64 * f64::from(args.units);
    let scheduled = devices * elapsed / args.interval.as_secs_f64();
    let json = serde_json::json!({
        "devices": devices,
        "seconds": elapsed,
        "scheduled_polls": scheduled.round(),
        "completed_polls": ok,
        "failed_polls": failed,
        "completeness_pct": 100.0 * ok as f64 / scheduled,
        "latency_p50_ms": quantile(&hist, 0.50),
        "latency_p99_ms": quantile(&hist, 0.99),
        "cpu_seconds": cpu,
        "cpu_pct_of_core": 100.0 * cpu / elapsed,
        "cpu_us_per_poll": if ok > 0 { cpu * 1e6 / ok as f64 } else { f64::NAN },
        "peak_rss_mb": peak_rss_kb() as f64 / 1024.0,
    });
    println!("{json}");
    Ok(())
}
