//! The `gridwatch` command line: run the daemon, check a config, run the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use gridwatch::config::{self, LoadedConfig};

#[derive(Parser)]
#[command(
    name = "gridwatch",
    version,
    about = "Watches an electricity distribution network: polls transformers and meters, stores telemetry, raises alarms"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; the size of the demo's options does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file.
        #[arg(long, short, env = "GRIDWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Run simulated transformers and meters with the daemon and its API (embedded defaults).
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Run the configured alarm rules over a line-protocol file and print the alarms they
    /// would have raised (tune thresholds before deploying them).
    Replay {
        /// Configuration file (devices, `[alarms]`, `[[rules]]`).
        #[arg(long, short, env = "GRIDWATCH_CONFIG")]
        config: PathBuf,
        /// Line-protocol file, as written by the file sink.
        file: PathBuf,
        /// Print one JSON object per alarm event instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration and print what it describes (exit 2 on errors).
    Check {
        /// Configuration file.
        #[arg(long, short, env = "GRIDWATCH_CONFIG")]
        config: PathBuf,
    },
}

#[cfg(feature = "demo")]
#[derive(clap::Args)]
struct DemoArgs {
    /// Address of the API and web page.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: std::net::SocketAddr,
    /// Stop after this long (e.g. "10m"); default: until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Send telemetry to this InfluxDB-compatible store instead of line-protocol files.
    #[arg(long)]
    influx_url: Option<String>,
    /// Write API of the store: v2 (org/bucket/token) or v1 (db).
    #[arg(long, default_value = "v2")]
    influx_api: String,
    /// v2 organisation.
    #[arg(long, default_value = "grid")]
    influx_org: String,
    /// v2 bucket.
    #[arg(long, default_value = "telemetry")]
    influx_bucket: String,
    /// v2 token.
    #[arg(long, env = "GRIDWATCH__STORAGE__INFLUX__TOKEN", default_value = "")]
    influx_token: String,
    /// v1 database.
    #[arg(long, default_value = "telemetry")]
    influx_db: String,
    /// Where the demo keeps its data.
    #[arg(long, default_value = "./data/demo")]
    data_dir: PathBuf,
    /// Use this MQTT broker (host:port) for the simulated smart meters instead of the
    /// embedded one.
    #[arg(long)]
    mqtt_broker: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Replay { config, file, json } => match config::load(&config) {
            Ok(loaded) => exit(replay(&loaded, &file, json)),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        #[cfg(feature = "demo")]
        Command::Demo(args) => {
            init_tracing();
            exit(run_demo(args))
        }
        Command::Run { config } => {
            init_tracing();
            match config::load(&config) {
                Ok(loaded) => exit(run_daemon(loaded)),
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The embedded demo broker (rumqttd) logs every connection at info.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn run_daemon(loaded: LoadedConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        gridwatch::run(loaded, shutdown).await?;
        Ok(())
    })
}

#[cfg(feature = "demo")]
fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let influx = match args.influx_url {
        None => None,
        Some(url) => {
            let text = format!(
                "url = {url:?}\napi = {:?}\norg = {:?}\nbucket = {:?}\ntoken = {:?}\ndb = {:?}\n",
                args.influx_api,
                args.influx_org,
                args.influx_bucket,
                args.influx_token,
                args.influx_db
            );
            let cfg: config::InfluxConfig =
                toml::from_str(&text).context("invalid --influx-* option")?;
            Some(cfg)
        }
    };
    let opts = gridwatch::demo::DemoOptions {
        http: args.http,
        duration: args.duration,
        influx,
        data_dir: args.data_dir,
        mqtt_broker: args.mqtt_broker,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(watch_signals(shutdown.clone()));
        gridwatch::demo::run(opts, shutdown).await?;
        Ok(())
    })
}

/// First SIGTERM/SIGINT starts a clean shutdown; a second one exits at once.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting immediately");
    std::process::exit(130);
}

fn replay(loaded: &LoadedConfig, file: &std::path::Path, json: bool) -> anyhow::Result<()> {
    use gridwatch::alarms::EventKind;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let report = gridwatch::replay::replay(loaded, &text)
        .with_context(|| format!("replaying {}", file.display()))?;
    let mut raised = 0usize;
    for ev in &report.events {
        if !matches!(
            ev.kind,
            EventKind::Raised | EventKind::Escalated | EventKind::Cleared | EventKind::Flapping
        ) {
            continue;
        }
        if ev.kind == EventKind::Raised {
            raised += 1;
        }
        if json {
            println!("{}", serde_json::to_string(ev)?);
        } else {
            println!("{}", gridwatch::replay::format_event(ev));
        }
    }
    eprintln!(
        "{} readings from {} devices: {} alarm(s) raised, {} still open at the end",
        report.readings, report.devices, raised, report.open_at_end
    );
    Ok(())
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            print_summary(&loaded);
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("error: {issue}");
            }
            eprintln!("{} error(s) in {}", errors.0.len(), path.display());
            ExitCode::from(2)
        }
    }
}

fn print_summary(loaded: &LoadedConfig) {
    let c = &loaded.config;
    println!("{}: configuration is valid", loaded.origin);
    let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
    for d in &c.devices {
        *kinds.entry(d.kind.as_str()).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("devices: {} ({})", c.devices.len(), kinds.join(", "));
    for ep in &c.modbus.endpoints {
        let n = c
            .devices
            .iter()
            .filter(|d| d.endpoint.as_deref() == Some(ep.name.as_str()))
            .count();
        match ep.transport {
            config::Transport::Tcp => println!(
                "modbus endpoint {}: tcp {} timeout {:?}, {} device(s)",
                ep.name, ep.address, ep.timeout, n
            ),
            transport => {
                let line = match transport {
                    config::Transport::Rtu => ep
                        .device
                        .as_ref()
                        .map(|d| d.display().to_string())
                        .unwrap_or_default(),
                    _ => ep.address.clone(),
                };
                let parity = match ep.parity {
                    config::Parity::None => 'N',
                    config::Parity::Even => 'E',
                    config::Parity::Odd => 'O',
                };
                println!(
                    "modbus endpoint {}: {} {line} {} baud {}{parity}{}, inter-frame gap {:?}, \
                     timeout {:?} per unit, backoff after {} failure(s) up to {:?}, {} device(s)",
                    ep.name,
                    transport.as_str(),
                    ep.baud,
                    ep.data_bits,
                    ep.stop_bits,
                    ep.frame_gap(),
                    ep.timeout,
                    ep.backoff_after(),
                    ep.backoff_max,
                    n
                );
            }
        }
    }
    for (name, p) in &loaded.profiles {
        println!(
            "profile {name}: {} register(s) {}",
            p.registers.len(),
            p.description
        );
    }
    match &c.storage.influx {
        Some(i) => println!(
            "telemetry: {:?} API at {} (batch {} / {:?})",
            i.api, i.url, i.batch_size, i.flush_interval
        ),
        None => println!(
            "telemetry: line-protocol files in {}",
            c.daemon.data_dir.join("telemetry").display()
        ),
    }
    println!("http: {}", c.daemon.http_listen);
    if c.alarms.enabled {
        let rules = gridwatch::detect::RuleSet::build(&c.alarms, &c.rules)
            .map(|r| r.rules().len())
            .unwrap_or(0);
        println!(
            "alarms: {rules} rule(s), voltage standard {:?}, {} crew(s), mqtt alerts {}, {} webhook(s)",
            c.alarms.standard,
            c.crews.len(),
            if c.notify.mqtt.is_some() { "on" } else { "off" },
            c.notify.webhooks.len()
        );
    }
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
}
