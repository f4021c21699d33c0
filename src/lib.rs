//! gridwatch: a daemon that watches an electricity distribution network.
//!
//! Readings flow one way: `sources` (Modbus, MQTT) → `pipeline` → `sinks` (InfluxDB-compatible
//! stores) and `history` (for the API). [`run`] wires the tasks together and owns shutdown:
//! sources stop first, the pipeline drains, the sink flushes, HTTP stops last, all within
//! [`SHUTDOWN_DEADLINE`].

pub mod alarms;
pub mod api;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod detect;
pub mod devmap;
pub mod eventlog;
pub mod fuzzing;
pub mod history;
pub mod hub;
pub mod kpi;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pipeline;
pub mod registry;
pub mod replay;
pub mod sinks;
pub mod sources;
pub mod status;
pub mod topology;

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
    /// The MQTT source could not start.
    #[error(transparent)]
    Mqtt(#[from] sources::mqtt::MqttError),
    /// The alarm rules are invalid.
    #[error(transparent)]
    Rules(#[from] detect::RuleError),
    /// The saved alarm state cannot be read.
    #[error("alarm state: {0}")]
    AlarmStore(#[from] alarms::store::StoreError),
    /// The event log could not be opened.
    #[error(transparent)]
    EventLog(#[from] eventlog::EventLogError),
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
        .enumerate()
        .map(|(i, d)| {
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
                    // The registry's order, so it keeps these very `Arc`s.
                    slot: crate::model::Slot::new(i),
                }
                .finish(),
            )
        })
        .collect()
}

/// The alarm stage before it runs: rules consumer, engine, service and its channels.
struct AlarmStage {
    rules_rx: pipeline::ReadingRx,
    engine: detect::Engine,
    service: Arc<alarms::service::AlarmService>,
    events_rx: tokio::sync::mpsc::UnboundedReceiver<alarms::AlarmEvent>,
}

fn build_alarms(
    loaded: &LoadedConfig,
    lines_tx: tokio::sync::mpsc::UnboundedSender<String>,
    eventlog: &Arc<eventlog::EventLog>,
    devices: &[Arc<DeviceInfo>],
    metrics: &Arc<metrics::Registry>,
    pipeline: &mut Pipeline,
) -> Result<AlarmStage, DaemonError> {
    let cfg = &loaded.config;
    let rules = detect::RuleSet::build(&cfg.alarms, &cfg.rules)?;
    let path = if cfg.alarms.state_file.is_absolute() {
        cfg.alarms.state_file.clone()
    } else {
        cfg.daemon.data_dir.join(&cfg.alarms.state_file)
    };
    let store = Arc::new(alarms::store::EventLogStore::new(Arc::clone(eventlog)));
    let imported = store.import_file(&alarms::store::FileStore::new(path))?;
    if imported > 0 {
        tracing::info!(
            imported,
            "alarm state moved from the JSON state file into the event log"
        );
    }
    let manager =
        alarms::AlarmManager::new(alarms::AlarmSettings::from_config(&cfg.alarms), store)?;
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let service =
        alarms::service::AlarmService::new(manager, Some(events_tx), Some(lines_tx), metrics);
    let mut engine = detect::Engine::new(rules, &cfg.alarms, devices, model::now_ns());
    service.restore_into(&mut engine);
    Ok(AlarmStage {
        rules_rx: pipeline.consumer("rules", Delivery::Lossy),
        engine,
        service,
        events_rx,
    })
}

/// Runs the daemon until `shutdown` is cancelled, then stops it cleanly.
pub async fn run(loaded: LoadedConfig, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let cfg = &loaded.config;
    let metrics = metrics::Registry::new();
    metrics
        .gauge(
            "gridwatch_runtime_worker_threads",
            "Threads running the async work (daemon.worker_threads; 0 there = one per core).",
            &[],
        )
        .set(tokio::runtime::Handle::current().metrics().num_workers() as f64);
    let device_list = build_devices(&loaded);
    let devices: HashMap<String, Arc<DeviceInfo>> = device_list
        .iter()
        .map(|d| (d.id.clone(), Arc::clone(d)))
        .collect();
    let status = status::StatusBoard::new(&device_list, model::now_ns());
    let history = history::History::with_metrics(cfg.history.clone(), &metrics);
    let registry = registry::DeviceRegistry::new(&device_list);
    let source_health = Arc::new(sources::SourceHealth::default());

    let mut pipeline = Pipeline::new(cfg.daemon.channel_capacity, Arc::clone(&metrics));
    let sink_rx = pipeline.consumer("telemetry", Delivery::Lossless);
    let history_rx = pipeline.consumer("history", Delivery::Lossy);
    let stream_rx = pipeline.consumer("stream", Delivery::Lossy);
    let hub = hub::Hub::new();
    let eventlog = eventlog::EventLog::open(
        &cfg.daemon.data_dir,
        &cfg.eventlog,
        &device_list,
        hub.clone(),
        &metrics,
    )?;
    record_lifecycle(
        &eventlog,
        eventlog::EventKind::ConfigLoaded,
        serde_json::json!({ "origin": loaded.origin, "devices": device_list.len() }),
    )
    .await;
    let auth = Arc::new(api::auth::Auth::new(&cfg.api, &metrics));
    if auth.is_off() {
        tracing::warn!(http = %cfg.daemon.http_listen, "API authentication is OFF (loopback only): every request acts as admin");
    }
    // Pre-encoded lines (alarm events, KPI points) batched with the telemetry.
    let (lines_tx, lines_rx) = tokio::sync::mpsc::unbounded_channel();
    // One copy of the network for KPIs, fault localisation and the planner (10,000 devices
    // make it a few MB); the KPI engine copies it only if a device registers at run time.
    let network = Arc::new(topology::Topology::from_devices(&cfg.devices));
    let kpi_stage = if cfg.kpi.enabled {
        let engine = kpi::KpiEngine::new(&cfg.kpi, &cfg.alarms, Arc::clone(&network));
        let service =
            kpi::KpiService::new(engine, Arc::clone(&eventlog), &cfg.kpi, model::now_ns())?;
        Some((pipeline.consumer("kpi", Delivery::Lossy), service))
    } else {
        None
    };
    let kpi_service = kpi_stage.as_ref().map(|(_, s)| Arc::clone(s));
    let alarm_stage = if cfg.alarms.enabled {
        Some(build_alarms(
            &loaded,
            lines_tx.clone(),
            &eventlog,
            &device_list,
            &metrics,
            &mut pipeline,
        )?)
    } else {
        None
    };

    let (writer, settings, max_pending) = match &cfg.storage.influx {
        Some(influx) => (
            Writer::Influx(sinks::influx::InfluxWriter::new(influx)?),
            BatchSettings {
                batch_size: influx.batch_size,
                max_bytes: influx.batch_max_bytes,
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
                max_bytes: 2 << 20,
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
    let modbus = sources::modbus::spawn(
        &loaded,
        &devices,
        &pipeline.sender(),
        &status,
        &metrics,
        &sources_cancel,
        &sources,
    )?;
    metrics
        .gauge(
            "gridwatch_modbus_poll_threads",
            "Threads of their own running the Modbus connections (daemon.poll_threads, at most one per connection; 0 = on the shared runtime).",
            &[],
        )
        .set(modbus.threads as f64);
    let mqtt_running = sources::mqtt::spawn(
        cfg.mqtt.as_ref(),
        &registry,
        &pipeline.sender(),
        &status,
        &source_health,
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
            "live stream",
            tokio::spawn(forward_readings(stream_rx, hub.clone())),
        ),
    ];
    let tee_stop = CancellationToken::new();
    if let Some((rx, service)) = kpi_stage {
        drain.push((
            "kpi",
            tokio::spawn(kpi::run(
                rx,
                Arc::clone(&service),
                Some(lines_tx.clone()),
                hard_stop.clone(),
            )),
        ));
    }
    // Only the alarm service and the KPI task hold senders now: when both are done the
    // batcher stops waiting for lines.
    drop(lines_tx);
    let mut outage_board = None;
    let mut planner = None;
    let (alarm_service, notify_task, notify_stop, tee_task) = match alarm_stage {
        Some(stage) => {
            let (outage_tx, outage_rx) = tokio::sync::mpsc::unbounded_channel();
            let locate = cfg.locate.enabled.then(|| {
                let locator = detect::locate::Locator::new(&cfg.locate, Arc::clone(&network));
                outage_board = Some(locator.board());
                planner = Some((locator.board(), outage_tx.clone()));
                alarms::service::Localisation {
                    locator,
                    notices: Some(outage_tx),
                    kpi: kpi_service.clone(),
                }
            });
            drain.push((
                "alarm rules",
                tokio::spawn(alarms::service::run_rules(
                    stage.rules_rx,
                    stage.engine,
                    locate,
                    Arc::clone(&stage.service),
                    hard_stop.clone(),
                )),
            ));
            let notify_stop = CancellationToken::new();
            let (notify_tx, notify_rx) = tokio::sync::mpsc::unbounded_channel();
            let tee = tokio::spawn(log_alarm_events(
                stage.events_rx,
                Arc::clone(&eventlog),
                notify_tx,
                tee_stop.clone(),
            ));
            let task = tokio::spawn(notify::run(
                notify_rx,
                outage_rx,
                cfg.notify.clone(),
                Arc::new(cfg.crews.clone()),
                Arc::clone(&metrics),
                notify_stop.clone(),
            ));
            (Some(stage.service), Some(task), notify_stop, Some(tee))
        }
        None => (None, None, CancellationToken::new(), None),
    };
    drain.push((
        "telemetry batcher",
        tokio::spawn(sinks::run_batcher_with_lines(
            sink_rx,
            Some(lines_rx),
            queue.clone(),
            settings,
            Arc::clone(&metrics),
        )),
    ));
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

    let background_cancel = CancellationToken::new();
    let background = TaskTracker::new();
    background.spawn(log_status_changes(
        status.subscribe(),
        Arc::clone(&eventlog),
        hub.clone(),
        metrics.counter(
            "gridwatch_status_events_lost_total",
            "Device status changes the event log missed because it lagged.",
            &[],
        ),
        background_cancel.clone(),
    ));
    background.spawn(Arc::clone(&eventlog).run_purge(background_cancel.clone()));
    if let Some((board, notices)) = planner {
        background.spawn(detect::locate::run_planner(
            Arc::clone(&eventlog),
            Arc::clone(&network),
            cfg.locate.clone(),
            board,
            notices,
            background_cancel.clone(),
        ));
    }
    background.close();

    let state = api::AppState {
        devices: registry,
        sources: source_health,
        status,
        history,
        metrics: Arc::clone(&metrics),
        eventlog: Arc::clone(&eventlog),
        auth,
        hub,
        sink: Some(Arc::clone(&sink_health)),
        alarms: alarm_service.clone(),
        kpi: kpi_service,
        outages: outage_board,
    };
    let router = api::router(state);
    let http_stop = CancellationToken::new();
    let http = {
        let stop = http_stop.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
        })
    };
    tracing::info!(config = %loaded.origin, http = %http_addr, devices = devices.len(), modbus_connections = modbus.connections, modbus_threads = modbus.threads, mqtt = mqtt_running, "gridwatch running");
    record_lifecycle(
        &eventlog,
        eventlog::EventKind::DaemonStarted,
        serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "http": http_addr.to_string() }),
    )
    .await;

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
    // Alarm events still queued are recorded and handed to the notifier, then it stops.
    tee_stop.cancel();
    if let Some(tee) = tee_task
        && tokio::time::timeout_at(deadline, tee).await.is_err()
    {
        tracing::warn!("alarm event log did not finish before the deadline");
    }
    notify_stop.cancel();
    if let Some(task) = notify_task
        && tokio::time::timeout_at(deadline + Duration::from_millis(200), task)
            .await
            .is_err()
    {
        tracing::warn!("alert notifications did not finish before the deadline");
    }
    http_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(300), http).await;
    background_cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(500), background.wait()).await;
    record_lifecycle(
        &eventlog,
        eventlog::EventKind::DaemonStopped,
        serde_json::json!({ "clean": failure.is_none() }),
    )
    .await;
    tracing::info!("gridwatch stopped");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Records a config-loaded / started / stopped event; a failure is logged, not fatal.
async fn record_lifecycle(
    log: &Arc<eventlog::EventLog>,
    kind: eventlog::EventKind,
    detail: serde_json::Value,
) {
    let log = Arc::clone(log);
    let event = eventlog::Event::system(kind, None, detail);
    match tokio::task::spawn_blocking(move || log.record(event)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(kind = kind.as_str(), error = %e, "cannot record event"),
        Err(e) => tracing::warn!(kind = kind.as_str(), error = %e, "cannot record event"),
    }
}

/// Turns every device status transition into a device online / offline / degraded event
/// and a live-stream message.
async fn log_status_changes(
    mut rx: tokio::sync::broadcast::Receiver<status::StatusChange>,
    log: Arc<eventlog::EventLog>,
    hub: hub::Hub,
    lost: metrics::Counter,
    cancel: CancellationToken,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let lagged = |n: u64| {
        lost.add(n);
        tracing::warn!(lost = n, "event log lagged behind device status changes");
    };
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            r = rx.recv() => match r {
                Ok(c) => c,
                Err(RecvError::Lagged(n)) => {
                    lagged(n);
                    continue;
                }
                Err(RecvError::Closed) => break,
            },
        };
        // Changes come in bursts (a gateway with 100 units drops out, 10,000 devices come
        // online at start-up): whatever queued behind the first one goes in the same commit.
        let mut changes = vec![first];
        while changes.len() < STATUS_CHUNK {
            match rx.try_recv() {
                Ok(c) => changes.push(c),
                Err(TryRecvError::Lagged(n)) => lagged(n),
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(changes.len());
        for change in changes {
            let kind = match change.to {
                status::DeviceStatus::Online => eventlog::EventKind::DeviceOnline,
                status::DeviceStatus::Offline => eventlog::EventKind::DeviceOffline,
                status::DeviceStatus::Degraded => eventlog::EventKind::DeviceDegraded,
                status::DeviceStatus::Unknown => continue,
            };
            events.push(eventlog::Event {
                ts: change.at,
                kind,
                device: Some(change.device.clone()),
                actor: eventlog::SYSTEM.into(),
                detail: serde_json::json!({ "from": change.from, "to": change.to }),
            });
            hub.publish(hub::LiveEvent::DeviceStatus {
                device: change.device,
                from: change.from,
                to: change.to,
                at: change.at,
            });
        }
        let n = events.len();
        let log = Arc::clone(&log);
        match tokio::task::spawn_blocking(move || log.record_all(&events)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(events = n, error = %e, "cannot record device status events")
            }
            Err(e) => {
                tracing::warn!(events = n, error = %e, "cannot record device status events")
            }
        }
    }
}

/// Most device status changes recorded in one event-log transaction.
const STATUS_CHUNK: usize = 1024;

/// Records the alarm engine's raises, escalations and clears in the event log (which also
/// publishes them to the live stream), then hands every event on to the notifier.
/// Acknowledgements and shelving are not recorded here: they come in through the API, which
/// records them with the person who did it and an audit record.
async fn log_alarm_events(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<alarms::AlarmEvent>,
    log: Arc<eventlog::EventLog>,
    notify: tokio::sync::mpsc::UnboundedSender<alarms::AlarmEvent>,
    stop: CancellationToken,
) {
    use eventlog::AlarmStore as _;
    loop {
        let ev = tokio::select! {
            biased;
            ev = rx.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
            _ = stop.cancelled() => match rx.try_recv() {
                Ok(ev) => ev,
                Err(_) => break,
            },
        };
        let kind = ev.kind;
        let a = ev.alarm.clone();
        let log = Arc::clone(&log);
        let result = tokio::task::spawn_blocking(move || -> Result<(), eventlog::EventLogError> {
            let open = || -> Result<Option<i64>, eventlog::EventLogError> {
                Ok(log
                    .list_alarms(true, Some(&a.device), None, None, 1000)?
                    .into_iter()
                    .find(|r| r.rule == a.rule && r.cleared_at.is_none())
                    .map(|r| r.id))
            };
            match kind {
                alarms::EventKind::Raised | alarms::EventKind::Flapping => {
                    let detail = serde_json::json!({
                        "engine_id": a.id, "value": a.value, "limit": a.limit, "unit": a.unit,
                        "action": a.action, "site": a.site, "feeder": a.feeder,
                        "location": a.location, "since": a.since, "flapping": a.flapping,
                    });
                    log.raise_alarm(
                        &a.device,
                        &a.rule,
                        a.severity.as_str(),
                        &a.description,
                        detail,
                    )?;
                }
                alarms::EventKind::Escalated => {
                    if let Some(id) = open()? {
                        log.escalate_alarm(id, a.severity.as_str())?;
                    }
                }
                alarms::EventKind::Cleared => {
                    if let Some(id) = open()? {
                        log.clear_alarm(id)?;
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(device = %ev.alarm.device, rule = %ev.alarm.rule, error = %e, "cannot record alarm event")
            }
            Err(e) => tracing::error!(error = %e, "alarm event task failed"),
        }
        let _ = notify.send(ev);
    }
}

/// Publishes readings to the live stream while someone subscribes to them.
async fn forward_readings(mut rx: pipeline::ReadingRx, hub: hub::Hub) {
    // A browser redraws at most every frame (16 ms): 10 ms of gathering is invisible there.
    let linger = Duration::from_millis(10);
    let mut chunk = pipeline::Chunk::new();
    while rx.recv_chunk(&mut chunk, 1024, linger).await > 0 {
        if !hub.wants_readings() {
            chunk.clear();
            continue;
        }
        for r in chunk.iter() {
            forward_reading(r, &hub);
        }
        chunk.clear();
    }
}

fn forward_reading(r: &model::Reading, hub: &hub::Hub) {
    let values = r
        .values
        .iter()
        .map(|(id, v)| (r.schema.name(*id).to_string(), *v))
        .collect();
    hub.publish_reading(hub::LiveEvent::Reading {
        device: r.device.id.clone(),
        ts: r.ts,
        values,
    });
}
