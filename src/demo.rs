//! `gridwatch demo`: simulated transformers and meters, the daemon and its API in one process.
//!
//! The fleet of `config/demo.toml` (compiled in) is served by the in-process Modbus simulator
//! on a free loopback port; a fault schedule makes something happen every few minutes so the
//! live view has changes to show. The config's MQTT meters publish through the in-process
//! meter simulator: to `--mqtt-broker` if given, otherwise to an embedded `rumqttd` broker
//! started on a free loopback port (the config has no broker of its own).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{self, InfluxConfig, LoadedConfig};

/// The demo's configuration, compiled into the binary so the demo runs from any directory.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

/// Faults the demo injects, repeating every `period`.
const DEMO_FAULTS: &str = r#"
[[faults]]
unit = 3
kind = "over_temperature"
at = "45s"
for = "2m"

[[faults]]
unit = 17
kind = "dead"
at = "1m30s"
for = "1m"

[[faults]]
unit = 7
kind = "phase_loss"
phase = "b"
at = "2m30s"
for = "1m"
"#;

/// How long one round of the fault schedule lasts before it starts again.
const FAULT_PERIOD: Duration = Duration::from_secs(300);

/// What the user chose on the command line.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Address of the API and web page.
    pub http: SocketAddr,
    /// Stop after this long (None = until Ctrl-C).
    pub duration: Option<Duration>,
    /// Send telemetry to this store instead of line-protocol files.
    pub influx: Option<InfluxConfig>,
    /// Where to keep the demo's data.
    pub data_dir: PathBuf,
    /// An external MQTT broker (`host:port`) instead of the embedded one.
    pub mqtt_broker: Option<String>,
}

/// MQTT meters the demo simulates (`MQ-0001`..), matching `config/demo.toml`.
const DEMO_MQTT_METERS: u32 = 100;

/// MQTT meter faults, repeating every [`FAULT_PERIOD`]: (device, fault, at, for).
const DEMO_MQTT_FAULTS: &[(&str, &str, u64, u64)] = &[
    ("MQ-0005", "outage", 60, 60),
    ("MQ-0012", "neutral_loss", 120, 60),
    ("MQ-0023", "energy_backwards", 180, 60),
    ("MQ-0031", "clock_skew:1200", 200, 40),
    ("MQ-0040", "stuck", 20, 240),
];

/// Starts `rumqttd` on a free loopback port in its own thread (its `start()` blocks and
/// it has no shutdown: the thread ends with the process) and waits until it accepts.
async fn start_embedded_broker() -> Result<SocketAddr, DemoError> {
    use std::collections::HashMap;
    // rumqttd cannot report a port bound to 0: take a free one and release it for it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| DemoError::Broker(format!("no free port: {e}")))?;
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 64 * 1024,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "demo-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 1000,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            ..rumqttd::RouterConfig::default()
        },
        v4: Some(HashMap::from([("demo".to_string(), server)])),
        ..rumqttd::Config::default()
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded mqtt broker stopped");
            }
        })
        .map_err(|e| DemoError::Broker(format!("cannot start its thread: {e}")))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() >= deadline {
            return Err(DemoError::Broker(format!(
                "not listening on {addr} after 10 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(addr)
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The embedded demo configuration is invalid (a build defect).
    #[error("demo configuration: {0}")]
    Config(#[from] config::ConfigErrors),
    /// The simulator could not start.
    #[error("simulator: {0}")]
    Sim(#[from] gridwatch_sim::SimError),
    /// The fault schedule does not parse (a build defect).
    #[error("demo fault schedule: {0}")]
    Scenario(String),
    /// The embedded MQTT broker could not start.
    #[error("embedded mqtt broker: {0}")]
    Broker(String),
    /// The daemon failed.
    #[error(transparent)]
    Daemon(#[from] crate::DaemonError),
}

/// Loads the embedded demo configuration with the user's overrides applied.
pub fn demo_config(opts: &DemoOptions, modbus_addr: SocketAddr) -> Result<LoadedConfig, DemoError> {
    let mut loaded = config::load_str(
        DEMO_CONFIG,
        "<demo>/demo.toml",
        std::path::Path::new("."),
        &config::profile::BUILTIN_PROFILES,
    )?;
    let c = &mut loaded.config;
    for ep in &mut c.modbus.endpoints {
        ep.address = modbus_addr.to_string();
    }
    c.daemon.http_listen = opts.http;
    if let (Some(mqtt), Some(broker)) = (&mut c.mqtt, &opts.mqtt_broker) {
        mqtt.broker = broker.clone();
    }
    // The demo runs without tokens, which the config only allows on loopback.
    c.api.auth = if opts.http.ip().is_loopback() {
        config::AuthMode::Off
    } else {
        config::AuthMode::On
    };
    c.daemon.data_dir = opts.data_dir.clone();
    c.storage.influx = opts.influx.clone();
    Ok(loaded)
}

/// Runs simulators and daemon until `shutdown` (Ctrl-C) or the chosen duration.
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    let sim = gridwatch_sim::start_modbus(gridwatch_sim::ModbusSimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        transformers: 10,
        meters: 40,
        meter_profile: "mixed".into(),
        ..gridwatch_sim::ModbusSimConfig::default()
    })
    .await?;
    let sim = std::sync::Arc::new(sim);
    let mut opts = opts;
    if opts.mqtt_broker.is_none() {
        opts.mqtt_broker = Some(start_embedded_broker().await?.to_string());
    }
    let broker = opts.mqtt_broker.clone().unwrap_or_default();
    let meters = gridwatch_sim::start_mqtt(gridwatch_sim::MqttSimConfig {
        broker: broker.clone(),
        client_id: "gridwatch-demo-meters".into(),
        meters: DEMO_MQTT_METERS,
        interval: Duration::from_secs(1),
        ..gridwatch_sim::MqttSimConfig::default()
    })
    .map_err(gridwatch_sim::SimError::from)?;
    let meters = std::sync::Arc::new(meters);
    let loaded = demo_config(&opts, sim.local_addr())?;
    let scenario = gridwatch_sim::scenario::Scenario::parse(DEMO_FAULTS)
        .map_err(|e| DemoError::Scenario(e.to_string()))?;

    let base = format!("http://{}", opts.http);
    println!("gridwatch demo");
    println!(
        "  simulated fleet:  10 transformers, 40 meters on Modbus TCP {}",
        sim.local_addr()
    );
    println!(
        "  smart meters:     {DEMO_MQTT_METERS} meters (MQ-0001..) publishing JSON over MQTT via {broker}"
    );
    println!("  devices (JSON):   {base}/api/v1/devices");
    println!("  metrics:          {base}/metrics");
    match &opts.influx {
        Some(i) => println!("  telemetry:        {} ({:?} API)", i.url, i.api),
        None => println!(
            "  telemetry:        {}",
            opts.data_dir.join("telemetry").display()
        ),
    }
    println!(
        "  faults:           TX-0003 over-temperature, MT-0017 stops answering, TX-0007 loses phase B (every 5 min)"
    );
    println!(
        "                    MQ-0005 outage (last gasp), MQ-0012 neutral loss, MQ-0023 energy register backwards, MQ-0031 clock 15 min ahead"
    );
    if loaded.config.api.auth == config::AuthMode::Off {
        println!(
            "  WARNING:          API authentication is off (loopback only); every request acts as admin"
        );
    } else {
        println!(
            "  auth:             on; create a token with `gridwatch users add NAME --role admin --config ...`"
        );
    }
    println!("  stop with Ctrl-C");

    let faults_cancel = shutdown.child_token();
    let faults = {
        let cancel = faults_cancel.clone();
        let sim = std::sync::Arc::clone(&sim);
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                let round = cancel.child_token();
                let timer = {
                    let round = round.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(FAULT_PERIOD).await;
                        round.cancel();
                    })
                };
                scenario.run(&sim, round.clone()).await;
                round.cancelled().await;
                timer.abort();
            }
        })
    };
    let meter_faults = {
        let cancel = faults_cancel.clone();
        let meters = std::sync::Arc::clone(&meters);
        tokio::spawn(async move {
            let mut schedule: Vec<(u64, &str, Option<gridwatch_sim::MeterFault>)> = Vec::new();
            for (device, fault, at, dur) in DEMO_MQTT_FAULTS {
                if let Ok(f) = fault.parse() {
                    schedule.push((*at, device, Some(f)));
                    schedule.push((at + dur, device, None));
                }
            }
            schedule.sort_by_key(|(at, _, _)| *at);
            loop {
                let start = tokio::time::Instant::now();
                for (at, device, fault) in &schedule {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep_until(start + Duration::from_secs(*at)) => {}
                    }
                    match fault {
                        Some(f) => meters.set_fault(device, *f),
                        None => meters.clear_fault(device),
                    };
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(start + FAULT_PERIOD) => {}
                }
            }
        })
    };
    if let Some(d) = opts.duration {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.cancel();
        });
    }
    let result = crate::run(loaded, shutdown).await;
    faults_cancel.cancel();
    let _ = faults.await;
    let _ = meter_faults.await;
    if let Ok(meters) = std::sync::Arc::try_unwrap(meters) {
        meters.shutdown(Duration::from_secs(2)).await;
    }
    if let Ok(sim) = std::sync::Arc::try_unwrap(sim) {
        sim.shutdown().await;
    }
    Ok(result?)
}
