//! `gridwatch-sim`: run the simulators from the command line.
//!
//! `gridwatch-sim modbus --listen 127.0.0.1:5020 --transformers 10 --meters 40` serves the
//! fleet over Modbus TCP until Ctrl-C / SIGTERM.
//! `gridwatch-sim mqtt --broker 127.0.0.1:1883 --meters 500 --interval 1s` publishes
//! smart-meter JSON telemetry.
//! `gridwatch-sim rtu --port /dev/pts/N --baud 9600 ...` serves the same fleet as RTU units
//! on a serial line (e.g. one end of `socat -d -d pty,raw,echo=0 pty,raw,echo=0`), and
//! `gridwatch-sim rtu-over-tcp --listen 127.0.0.1:5021 ...` as raw RTU frames over TCP.
//! `gridwatch-sim load --gateways 100 --units 100 --daemon-config gw.toml` is the load harness
//! of `scripts/bench.sh`: 10,000 devices on 100 ports, and the matching gridwatch endpoints
//! and devices written to `gw.toml`.
//! `gridwatch-sim mqtt-load --broker 127.0.0.1:1883 --meters 10000 --rate 100000 --duration 15s`
//! is the MQTT load harness of `scripts/bench-mqtt.sh`: paced JSON telemetry over a few
//! connections, a one-line JSON report at the end; `--daemon-config gw.toml --config-only`
//! writes the matching gridwatch `[mqtt]` section and `[[devices]]` and exits.

use std::{net::SocketAddr, path::PathBuf};

use gridwatch_sim::{ModbusSimHandle, RtuLine, start_rtu, start_rtu_over_tcp};

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
    /// Serve them as Modbus RTU units on a serial line (all units on one bus).
    Rtu(RtuArgs),
    /// Serve them as raw RTU frames over TCP, like a serial-to-Ethernet converter.
    RtuOverTcp(RtuOverTcpArgs),
    /// Publish smart-meter telemetry (JSON) to an MQTT broker.
    Mqtt(MqttArgs),
    /// Load harness: G gateways (ports) × U unit ids serving one register map cheaply.
    Load(LoadArgs),
    /// MQTT load harness: K meters publishing at an aggregate rate over C connections.
    MqttLoad(MqttLoadArgs),
}

#[derive(Debug, clap::Args)]
struct MqttLoadArgs {
    /// Broker host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Number of meters (device ids ID_PREFIX00001...).
    #[arg(long, default_value_t = 10_000)]
    meters: u32,
    /// Aggregate messages per second over all connections; 0 = as fast as possible.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// Stop after this many messages in total (0 = no limit).
    #[arg(long, default_value_t = 0)]
    messages: u64,
    /// MQTT connections the meters are split across.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    connections: u16,
    /// QoS of the published messages: 0 or 1.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// QoS 1: most unacknowledged messages per connection.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..))]
    inflight: u16,
    /// Pacing tick: the messages due are written once per tick.
    #[arg(long, default_value = "1ms", value_parser = humantime::parse_duration)]
    tick: std::time::Duration,
    /// Topics are PREFIX/{device}/telemetry.
    #[arg(long, default_value = "meters")]
    topic_prefix: String,
    /// Device ids are ID_PREFIX00001, ...
    #[arg(long, default_value = "ML-")]
    id_prefix: String,
    /// Client ids are CLIENT_ID-0, CLIENT_ID-1, ...
    #[arg(long, default_value = "gridwatch-mqtt-load")]
    client_id: String,
    /// Seed for per-meter variation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the matching gridwatch `[mqtt]` section and `[[devices]]` here.
    #[arg(long)]
    daemon_config: Option<PathBuf>,
    /// Only write --daemon-config, publish nothing.
    #[arg(long, requires = "daemon_config")]
    config_only: bool,
    /// Client id written into the daemon config.
    #[arg(long, default_value = "gridwatch-bench")]
    daemon_client_id: String,
    /// Daemon config: no [[devices]], the daemon registers meters on their first message.
    #[arg(long)]
    auto_register: bool,
    /// Daemon config: meters per parent transformer (0 = meters without a parent).
    #[arg(long, default_value_t = 100)]
    meters_per_transformer: u32,
}

async fn run_mqtt_load(args: MqttLoadArgs) -> anyhow::Result<()> {
    use gridwatch_sim::mqtt_load;
    if let Some(path) = &args.daemon_config {
        let text = mqtt_load::daemon_config(&mqtt_load::DaemonLayout {
            broker: &args.broker,
            client_id: &args.daemon_client_id,
            topic_prefix: &args.topic_prefix,
            id_prefix: &args.id_prefix,
            meters: args.meters,
            meters_per_transformer: args.meters_per_transformer,
            auto_register: args.auto_register,
        });
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        if args.config_only {
            return Ok(());
        }
    }
    let cfg = mqtt_load::MqttLoadConfig {
        broker: args.broker,
        client_id: args.client_id,
        meters: args.meters,
        rate: args.rate,
        duration: args.duration,
        messages: args.messages,
        connections: usize::from(args.connections),
        qos: if args.qos == 1 {
            mqtt_load::Qos::AtLeastOnce
        } else {
            mqtt_load::Qos::AtMostOnce
        },
        inflight: args.inflight,
        tick: args.tick,
        topic_prefix: args.topic_prefix,
        id_prefix: args.id_prefix,
        seed: args.seed,
        ..mqtt_load::MqttLoadConfig::default()
    };
    let cancel = CancellationToken::new();
    let run = mqtt_load::run(cfg, cancel.clone());
    tokio::pin!(run);
    // SIGTERM stops publishing; the report of what was published is still printed.
    let report = tokio::select! {
        r = &mut run => r?,
        s = shutdown_signal() => {
            s?;
            cancel.cancel();
            run.await?
        }
    };
    println!("{}", report.to_json());
    Ok(())
}

#[derive(Debug, clap::Args)]
struct MqttArgs {
    /// Broker host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Number of meters (device ids MQ-0001...).
    #[arg(long, default_value_t = 100)]
    meters: u32,
    /// Publish interval of every meter.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: std::time::Duration,
    /// Topics are PREFIX/{device}/telemetry.
    #[arg(long, default_value = "meters")]
    topic_prefix: String,
    /// Device ids are ID_PREFIX0001, ...
    #[arg(long, default_value = "MQ-")]
    id_prefix: String,
    /// MQTT client id.
    #[arg(long, default_value = "gridwatch-sim")]
    client_id: String,
    /// User name.
    #[arg(long, default_value = "")]
    username: String,
    /// Password.
    #[arg(long, default_value = "", env = "GRIDWATCH_SIM_MQTT_PASSWORD")]
    password: String,
    /// Seed for per-meter variation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fault from the start, DEVICE:KIND[:ARG], e.g. MQ-0003:outage, MQ-0004:phase_loss:b,
    /// MQ-0005:clock_skew:900 (kinds: outage, sag, swell, phase_loss, neutral_loss,
    /// energy_backwards, stuck, clock_skew).
    #[arg(long = "fault", value_parser = parse_meter_fault)]
    faults: Vec<(String, gridwatch_sim::MeterFault)>,
}

fn parse_meter_fault(s: &str) -> Result<(String, gridwatch_sim::MeterFault), String> {
    let (device, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("expected DEVICE:KIND[:ARG], got {s:?}"))?;
    Ok((device.to_string(), rest.parse()?))
}

async fn run_mqtt(args: MqttArgs) -> anyhow::Result<()> {
    let sim = gridwatch_sim::start_mqtt(gridwatch_sim::MqttSimConfig {
        broker: args.broker.clone(),
        client_id: args.client_id,
        username: args.username,
        password: args.password,
        meters: args.meters,
        interval: args.interval,
        topic_prefix: args.topic_prefix.clone(),
        id_prefix: args.id_prefix,
        seed: args.seed,
        ..gridwatch_sim::MqttSimConfig::default()
    })?;
    for (device, fault) in &args.faults {
        anyhow::ensure!(sim.set_fault(device, *fault), "unknown meter {device:?}");
    }
    println!(
        "gridwatch-sim mqtt: {} meters every {:?} to {} under {}/{{device}}/telemetry",
        args.meters, args.interval, args.broker, args.topic_prefix
    );
    shutdown_signal().await?;
    let total = sim.shutdown(std::time::Duration::from_secs(5)).await;
    println!("published {total} messages");
    Ok(())
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
    #[command(flatten)]
    fleet: FleetArgs,
}

#[derive(Debug, clap::Args)]
struct RtuArgs {
    /// Serial device, e.g. /dev/ttyUSB0 or a pty from socat.
    #[arg(long)]
    port: PathBuf,
    #[command(flatten)]
    line: LineArgs,
    #[command(flatten)]
    fleet: FleetArgs,
}

#[derive(Debug, clap::Args)]
struct RtuOverTcpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5021")]
    listen: SocketAddr,
    #[command(flatten)]
    line: LineArgs,
    #[command(flatten)]
    fleet: FleetArgs,
}

#[derive(Debug, clap::Args)]
struct LineArgs {
    /// Baud rate of the simulated bus.
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// Bits per character (11 for 8E1/8O1/8N2, 10 for 8N1).
    #[arg(long, default_value_t = 11)]
    bits_per_char: u32,
    /// Answer at once instead of after the wire time of request + answer at --baud.
    #[arg(long)]
    no_pace: bool,
}

impl LineArgs {
    fn line(&self) -> RtuLine {
        RtuLine {
            baud: self.baud,
            bits_per_char: self.bits_per_char,
            pace: !self.no_pace,
        }
    }
}

#[derive(Debug, clap::Args)]
struct FleetArgs {
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
    /// Fault from the start, UNIT:KIND[:ARG], e.g. 3:dead, 4:phase_loss:b, 5:exception:4,
    /// 6:bad_crc:3 (every 3rd RTU answer with a bad CRC).
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
        Command::Rtu(args) => run_rtu(args).await,
        Command::RtuOverTcp(args) => run_rtu_over_tcp(args).await,
        Command::Mqtt(args) => run_mqtt(args).await,
        Command::Load(args) => run_load(args).await,
        Command::MqttLoad(args) => run_mqtt_load(args).await,
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
    let fleet = args.fleet;
    let scenario = fleet.scenario()?;
    let sim = start_modbus(fleet.config(args.listen)?).await?;
    println!("gridwatch-sim modbus listening on {}", sim.local_addr());
    serve(sim, &fleet, scenario).await
}

async fn run_rtu(args: RtuArgs) -> anyhow::Result<()> {
    let fleet = args.fleet;
    let scenario = fleet.scenario()?;
    let line = args.line.line();
    let cfg = fleet.config(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let sim = start_rtu(cfg, &args.port, line).await?;
    println!(
        "gridwatch-sim rtu on {} at {} baud",
        args.port.display(),
        line.baud
    );
    serve(sim, &fleet, scenario).await
}

async fn run_rtu_over_tcp(args: RtuOverTcpArgs) -> anyhow::Result<()> {
    let fleet = args.fleet;
    let scenario = fleet.scenario()?;
    let line = args.line.line();
    let sim = start_rtu_over_tcp(fleet.config(args.listen)?, line).await?;
    println!(
        "gridwatch-sim rtu-over-tcp listening on {} (bus at {} baud)",
        sim.local_addr(),
        line.baud
    );
    serve(sim, &fleet, scenario).await
}

impl FleetArgs {
    fn scenario(&self) -> anyhow::Result<Scenario> {
        Ok(match &self.scenario {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading scenario {}", path.display()))?;
                Scenario::parse(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => Scenario::default(),
        })
    }

    fn config(&self, listen: SocketAddr) -> anyhow::Result<ModbusSimConfig> {
        Ok(ModbusSimConfig {
            listen,
            transformers: self.transformers,
            meters: self.meters,
            meter_profile: self.meter_profile.clone(),
            seed: self.seed,
            profiles: builtin_profiles().context("shipped profiles")?,
            record: false,
            nominal_voltage: self.nominal_voltage,
            rated_kva: self.rated_kva,
        })
    }
}

/// Injects the start-up faults, prints the unit table and serves until Ctrl-C / SIGTERM.
async fn serve(sim: ModbusSimHandle, fleet: &FleetArgs, scenario: Scenario) -> anyhow::Result<()> {
    for (unit, fault) in &fleet.faults {
        sim.set_fault(*unit, *fault);
    }
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
