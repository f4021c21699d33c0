//! gridwatch: a daemon that watches an electricity distribution network.
//!
//! Readings flow one way: `sources` (Modbus, MQTT) → `pipeline` → `sinks` (InfluxDB-compatible
//! stores) and `history` (for the API). [`run`] wires the tasks together and owns shutdown:
//! sources stop first, the pipeline drains, the sink flushes, HTTP stops last, all within
//! [`SHUTDOWN_DEADLINE`].

pub mod api;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod fuzzing;
pub mod history;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod sinks;
pub mod sources;
pub mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use config::LoadedConfig;
use model::DeviceInfo;
use pipeline::{Delivery, Pipeline};
use sinks::queue::BatchQueue;
use sinks::{BatchSettings, Buffer, Writer};

/// Longest time from a shutdown signal to exit.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The telemetry writer could not be built.
    #[error(transparent)]
    Sink(#[from] sinks::influx::BuildError),
    /// The Modbus source could not start.
    #[error(transparent)]
    Modbus(#[from] sources::modbus::ModbusError),
    /// The telemetry spool could not be opened.
    #[error(transparent)]
    Spool(#[from] sinks::spool::SpoolError),
    /// The HTTP server failed while running.
    #[error("http server failed: {0}")]
    Http(std::io::Error),
}

/// Waits for every task until `deadline`; logs each one still pending then (and aborts it).
/// Returns whether all finished.
async fn wait_named(
    tasks: &mut Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    deadline: tokio::time::Instant,
) -> bool {
    for (name, handle) in tasks.iter_mut() {
        match tokio::time::timeout_at(deadline, &mut *handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(component = *name, error = %e, "component failed"),
            Err(_) => {}
        }
    }
    let mut all = true;
    for (name, handle) in tasks.iter() {
        if !handle.is_finished() {
            all = false;
            tracing::warn!(
                component = *name,
                "component still pending at the shutdown deadline"
            );
        }
    }
    if all {
        tasks.clear();
    }
    all
}

/// Builds the shared device descriptions from the configuration.
pub fn build_devices(loaded: &LoadedConfig) -> Vec<Arc<DeviceInfo>> {
    loaded
        .config
        .devices
        .iter()
        .filter(|d| d.enabled)
        .map(|d| {
            Arc::new(
                DeviceInfo {
                    id: d.id.clone(),
                    kind: d.kind.clone(),
                    site: d.site.clone(),
                    feeder: d.feeder.clone(),
                    parent: d.parent.clone(),
                    location: d.location.clone(),
                    rated_kva: d.rated_kva,
                    nominal_voltage: d.nominal_voltage,
                    customers: d.customers,
                    interval_ns: i64::try_from(d.interval.as_nanos()).unwrap_or(i64::MAX),
                    lp_series: String::new(),
                }
                .finish(),
            )
        })
        .collect()
}

/// Runs the daemon until `shutdown` is cancelled, then stops it cleanly.
pub async fn run(loaded: LoadedConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let cfg = &loaded.config;
    let metrics = metrics::Registry::new();
    let device_list = build_devices(&loaded);
    let devices: HashMap<String, Arc<DeviceInfo>> = device_list
        .iter()
        .map(|d| (d.id.clone(), Arc::clone(d)))
        .collect();
    let status = status::StatusBoard::new(&device_list, model::now_ns());
    let history = history::History::new();

    let mut pipeline = Pipeline::new(cfg.daemon.channel_capacity, Arc::clone(&metrics));
    let sink_rx = pipeline.consumer("telemetry", Delivery::Lossless);
    let history_rx = pipeline.consumer("history", Delivery::Lossy);

    let (writer, settings, max_pending) = match &cfg.storage.influx {
        Some(influx) => (
            Writer::Influx(sinks::influx::InfluxWriter::new(influx)?),
            BatchSettings {
                batch_size: influx.batch_size,
                flush_interval: influx.flush_interval,
            },
            influx.max_pending_batches,
        ),
        None => (
            Writer::File(sinks::file::FileWriter::new(
                cfg.daemon.data_dir.join("telemetry"),
            )),
            BatchSettings {
                batch_size: 5000,
                flush_interval: Duration::from_secs(1),
            },
            1000,
        ),
    };
    let spool_cfg = &cfg.storage.spool;
    let queue = if spool_cfg.enabled.unwrap_or(cfg.storage.influx.is_some()) {
        let (spool, _recovered) = sinks::spool::Spool::open(
            sinks::spool::SpoolSettings {
                dir: cfg.daemon.data_dir.join("spool"),
                max_bytes: spool_cfg.max_bytes,
                segment_bytes: spool_cfg.segment_bytes,
                when_full: spool_cfg.when_full,
                fsync: match spool_cfg.fsync_period() {
                    None => sinks::spool::Fsync::EveryBatch,
                    Some(p) => sinks::spool::Fsync::Interval(p),
                },
            },
            &metrics,
        )?;
        Buffer::Spool(spool)
    } else {
        Buffer::Memory(Arc::new(BatchQueue::new(
            max_pending,
            metrics.counter(
                "gridwatch_points_dropped_total",
                "Points dropped because the telemetry queue was full.",
                &[],
            ),
        )))
    };
    let sink_health = sinks::SinkHealth::new(queue.clone());
    let dead_letter = cfg.daemon.data_dir.join("spool").join("dead-letter.lp");

    let listener = tokio::net::TcpListener::bind(cfg.daemon.http_listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: cfg.daemon.http_listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(DaemonError::Http)?;

    let sources_cancel = CancellationToken::new();
    let sources = TaskTracker::new();
    let modbus_tasks = sources::modbus::spawn(
        &loaded,
        &devices,
        &pipeline.sender(),
        &status,
        &metrics,
        &sources_cancel,
        &sources,
    )?;
    sources.close();

    // Drain-phase components, by name, so shutdown can say which one is still pending.
    let hard_stop = CancellationToken::new();
    let syncer_stop = CancellationToken::new();
    let mut drain: Vec<(&'static str, tokio::task::JoinHandle<()>)> = vec![
        ("pipeline", tokio::spawn(pipeline.run())),
        (
            "history",
            tokio::spawn(Arc::clone(&history).run(history_rx)),
        ),
        (
            "telemetry batcher",
            tokio::spawn(sinks::run_batcher(
                sink_rx,
                queue.clone(),
                settings,
                Arc::clone(&metrics),
            )),
        ),
    ];
    let writer_task = tokio::spawn(sinks::run_writer(
        writer,
        Arc::clone(&sink_health),
        dead_letter,
        Arc::clone(&metrics),
        hard_stop.clone(),
    ));
    if let Buffer::Spool(spool) = &queue
        && let sinks::spool::Fsync::Interval(period) = spool.fsync()
    {
        drain.push((
            "spool syncer",
            tokio::spawn(sinks::spool::run_syncer(
                Arc::clone(spool),
                period,
                syncer_stop.clone(),
            )),
        ));
    }

    let state = api::AppState {
        devices: Arc::new(device_list),
        status,
        history,
        metrics: Arc::clone(&metrics),
        sink: Some(Arc::clone(&sink_health)),
    };
    let http_stop = CancellationToken::new();
    let http = {
        let stop = http_stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, api::router(state))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    tracing::info!(config = %loaded.origin, http = %http_addr, devices = devices.len(), modbus_connections = modbus_tasks, "gridwatch running");

    let mut http = http;
    let mut failure = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        res = &mut http => {
            let err = match res {
                Ok(Ok(())) => std::io::Error::other("http server stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => std::io::Error::other(e.to_string()),
            };
            tracing::error!(error = %err, "http server died; shutting down");
            failure = Some(DaemonError::Http(err));
        }
    }

    let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE - Duration::from_millis(500);
    tracing::info!("shutting down: stopping sources");
    sources_cancel.cancel();
    if tokio::time::timeout_at(deadline, sources.wait())
        .await
        .is_err()
    {
        tracing::warn!(pending = sources.len(), "sources did not stop in time");
    }
    tracing::info!(
        pending_points = queue.pending_points(),
        "draining pipeline and flushing telemetry"
    );
    // The syncer stops once the batcher has spooled its last batch.
    let syncer = drain
        .iter()
        .position(|(name, _)| *name == "spool syncer")
        .map(|i| drain.remove(i));
    wait_named(&mut drain, deadline).await;
    syncer_stop.cancel();
    if let Some((name, handle)) = syncer {
        let mut rest = vec![(name, handle)];
        wait_named(&mut rest, deadline).await;
    }
    let mut writer = vec![("telemetry writer", writer_task)];
    if !wait_named(&mut writer, deadline).await {
        tracing::warn!(
            pending_points = queue.pending_points(),
            durable = queue.is_durable(),
            "telemetry flush did not finish before the deadline"
        );
        hard_stop.cancel();
        wait_named(
            &mut writer,
            tokio::time::Instant::now() + Duration::from_millis(200),
        )
        .await;
    }
    if let Buffer::Spool(spool) = &queue {
        // The writer updated the index after each acknowledgement; make the last one and
        // the open segment durable before exit.
        spool.close();
        tracing::info!(
            pending_points = spool.pending_points(),
            pending_batches = spool.pending_batches(),
            "spool flushed"
        );
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(300), http).await;
    tracing::info!("gridwatch stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
