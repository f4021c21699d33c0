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
use sinks::{BatchSettings, Writer};

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
    /// The HTTP server failed while running.
    #[error("http server failed: {0}")]
    Http(std::io::Error),
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
    let history = history::History::with_config(cfg.history.clone());

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
    let queue = Arc::new(BatchQueue::new(
        max_pending,
        metrics.counter(
            "gridwatch_points_dropped_total",
            "Points dropped because the telemetry queue was full.",
            &[],
        ),
    ));

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

    let drain = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    drain.spawn(pipeline.run());
    drain.spawn(Arc::clone(&history).run(history_rx));
    drain.spawn(sinks::run_batcher(
        sink_rx,
        Arc::clone(&queue),
        settings,
        Arc::clone(&metrics),
    ));
    drain.spawn(sinks::run_writer(
        writer,
        Arc::clone(&queue),
        Arc::clone(&metrics),
        hard_stop.clone(),
    ));
    drain.close();

    let state = api::AppState {
        devices: Arc::new(device_list),
        status,
        history,
        metrics: Arc::clone(&metrics),
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
    if tokio::time::timeout_at(deadline, drain.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            pending_points = queue.pending_points(),
            "telemetry flush did not finish before the deadline"
        );
        hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_millis(200), drain.wait()).await;
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(300), http).await;
    tracing::info!("gridwatch stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
