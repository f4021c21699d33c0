//! `gridwatch demo`: simulated transformers and meters, the daemon and its API in one process.
//!
//! The fleet of `config/demo.toml` (compiled in) is served by the in-process Modbus simulator
//! on a free loopback port; a fault schedule makes something happen every few minutes so the
//! live view has changes to show.

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
    let loaded = demo_config(&opts, sim.local_addr())?;
    let scenario = gridwatch_sim::scenario::Scenario::parse(DEMO_FAULTS)
        .map_err(|e| DemoError::Scenario(e.to_string()))?;

    let base = format!("http://{}", opts.http);
    println!("gridwatch demo");
    println!(
        "  simulated fleet:  10 transformers, 40 meters on Modbus TCP {}",
        sim.local_addr()
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
    if let Ok(sim) = std::sync::Arc::try_unwrap(sim) {
        sim.shutdown().await;
    }
    Ok(result?)
}
