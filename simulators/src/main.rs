//! `gridwatch-sim`: run the simulators from the command line.
//!
//! `gridwatch-sim modbus --listen 127.0.0.1:5020 --transformers 10 --meters 40` serves the
//! fleet over Modbus TCP until Ctrl-C / SIGTERM. `gridwatch-sim load --gateways 100 --units
//! 100 --daemon-config gw.toml` is the load harness of `scripts/bench.sh`: 10,000 devices on
//! 100 ports, and the matching gridwatch endpoints and devices written to `gw.toml`. Further transports (`mqtt`, `rtu`,
//! `rtu-over-tcp`) become further subcommands.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use gridwatch_sim::{Fault, ModbusSimConfig, builtin_profiles, scenario::Scenario, start_modbus};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "gridwatch-sim",
    version,
    about = "Transformer and smart-meter simulators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve transformers and meters over Modbus TCP (one unit id per device).
    Modbus(ModbusArgs),
    /// Load harness: G gateways (ports) × U unit ids serving one register map cheaply.
    Load(LoadArgs),
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    ip: std::net::IpAddr,
    /// Number of gateways, one TCP port each.
    #[arg(long, default_value_t = 100)]
    gateways: u16,
    /// Unit ids behind each gateway (1..=247).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=247))]
    units: u8,
    /// First port (gateway g on base+g); 0 = any free ports.
    #[arg(long, default_value_t = 0)]
    base_port: u16,
    /// Register map file; default: the built-in bench-50 map.
    #[arg(long)]
    profile_file: Option<PathBuf>,
    /// Write the matching gridwatch `[[modbus.endpoints]]` and `[[devices]]` here.
    #[arg(long)]
    daemon_config: Option<PathBuf>,
    /// Write the gateway addresses here, one per line (for bare-poller).
    #[arg(long)]
    addrs_file: Option<PathBuf>,
    /// Poll interval written into the daemon config.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// Request timeout written into the daemon config.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

#[derive(Debug, clap::Args)]
struct ModbusArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5020")]
    listen: SocketAddr,
    /// Number of transformers (unit ids 1..=T).
    #[arg(long, default_value_t = 10)]
    transformers: u16,
    /// Number of meters (unit ids T+1..=T+M).
    #[arg(long, default_value_t = 40)]
    meters: u16,
    /// Meter register map: sdm630, sunspec203 or mixed (alternating).
    #[arg(long, default_value = "sdm630", value_parser = ["sdm630", "sunspec203", "mixed"])]
    meter_profile: String,
    /// Seed for per-unit variation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Nominal phase voltage (V).
    #[arg(long, default_value_t = 230.0)]
    nominal_voltage: f64,
    /// Transformer rating (kVA).
    #[arg(long, default_value_t = 630.0)]
    rated_kva: f64,
    /// Fault from the start, UNIT:KIND[:ARG], e.g. 3:dead, 4:phase_loss:b, 5:exception:4.
    #[arg(long = "fault", value_parser = parse_fault)]
    faults: Vec<(u8, Fault)>,
    /// TOML file of timed faults (`[[faults]] unit, kind, at, for, phase, code`).
    #[arg(long)]
    scenario: Option<PathBuf>,
}

fn parse_fault(s: &str) -> Result<(u8, Fault), String> {
    let (unit, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("expected UNIT:KIND[:ARG], got {s:?}"))?;
    let unit: u8 = unit
        .parse()
        .map_err(|e| format!("bad unit id {unit:?}: {e}"))?;
    Ok((unit, rest.parse()?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs on stderr so stdout carries only the address and unit table (scripts parse it).
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match Cli::parse().command {
        Command::Modbus(args) => run_modbus(args).await,
        Command::Load(args) => run_load(args).await,
    }
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    use gridwatch_sim::load;
    let (name, text) = match &args.profile_file {
        Some(path) => (
            path.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("profile")
                .to_owned(),
            std::fs::read_to_string(path)
                .with_context(|| format!("reading profile {}", path.display()))?,
        ),
        None => ("bench-50".to_owned(), load::BENCH_50.to_owned()),
    };
    let profile = gridwatch_sim::Profile::parse(&name, &text)?;
    let handle = load::start_load(load::LoadConfig {
        ip: args.ip,
        gateways: args.gateways,
        units: args.units,
        base_port: args.base_port,
        profile,
    })
    .await?;
    if let Some(path) = &args.daemon_config {
        let text = load::daemon_config(&load::DaemonLayout {
            addrs: handle.addrs(),
            units: args.units,
            profile: &name,
            interval: args.interval,
            timeout: args.timeout,
        });
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.addrs_file {
        let text: String = handle.addrs().iter().map(|a| format!("{a}\n")).collect();
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "gridwatch-sim load listening: {} gateways x {} units = {} devices",
        args.gateways,
        args.units,
        usize::from(args.gateways) * usize::from(args.units)
    );
    shutdown_signal().await?;
    let requests = handle.requests();
    handle.shutdown().await;
    println!("{{\"requests\":{requests}}}");
    Ok(())
}

async fn run_modbus(args: ModbusArgs) -> anyhow::Result<()> {
    let scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading scenario {}", path.display()))?;
            Scenario::parse(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Scenario::default(),
    };
    let sim = start_modbus(ModbusSimConfig {
        listen: args.listen,
        transformers: args.transformers,
        meters: args.meters,
        meter_profile: args.meter_profile,
        seed: args.seed,
        profiles: builtin_profiles().context("shipped profiles")?,
        record: false,
        nominal_voltage: args.nominal_voltage,
        rated_kva: args.rated_kva,
    })
    .await?;
    for (unit, fault) in &args.faults {
        sim.set_fault(*unit, *fault);
    }

    println!("gridwatch-sim modbus listening on {}", sim.local_addr());
    println!(
        "{:>4}  {:<11}  {:<19}  {:<9}  {:>6}",
        "unit", "kind", "profile", "device", "parent"
    );
    for u in sim.units() {
        let parent = u.parent_unit.map(|p| p.to_string()).unwrap_or_default();
        println!(
            "{:>4}  {:<11}  {:<19}  {:<9}  {:>6}",
            u.unit,
            u.kind.as_str(),
            u.profile,
            u.device_id,
            parent
        );
    }

    let cancel = CancellationToken::new();
    let scenario_run = scenario.run(&sim, cancel.clone());
    tokio::select! {
        () = scenario_run => {
            // All timed faults done: keep serving until asked to stop.
            shutdown_signal().await?;
        }
        r = shutdown_signal() => r?,
    }
    cancel.cancel();
    sim.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM from systemd / container runtimes.
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("stopping");
    Ok(())
}
