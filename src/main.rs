//! The `gridwatch` command line: run the daemon, check a config, run the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use gridwatch::config::{self, LoadedConfig};

/// mimalloc instead of the system allocator: see `Cargo.toml` for why.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Also compute the file's KPIs into the event database in the config's data_dir
        /// (then `gridwatch report` covers the replayed period).
        #[arg(long)]
        kpi: bool,
    },
    /// KPI report of a period (voltage/frequency compliance, SAIFI/SAIDI/CAIDI/MAIFI/RS-1,
    /// interruptions, transformer loading) from the event database in the config's data_dir.
    Report {
        /// Configuration file (for data_dir, devices and the voltage standard).
        #[arg(long, short, env = "GRIDWATCH_CONFIG")]
        config: PathBuf,
        /// First day (UTC), e.g. 2026-11-01.
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Day after the last one (UTC), e.g. 2026-12-01.
        #[arg(long)]
        to: chrono::NaiveDate,
        /// md (default), csv or json.
        #[arg(long, value_enum, default_value = "md")]
        format: gridwatch::kpi::report::Format,
    },
    /// Validate a configuration and print what it describes (exit 2 on errors).
    Check {
        /// Configuration file.
        #[arg(long, short, env = "GRIDWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Manage API users (works on the database in the config's data_dir).
    #[command(subcommand)]
    Users(UsersCmd),
    /// List events from a running daemon.
    Events(EventsArgs),
    /// List alarms from a running daemon.
    Alarms(AlarmsArgs),
    /// Maintenance records on a running daemon.
    #[command(subcommand)]
    Maintenance(MaintenanceCmd),
}

/// Where the daemon is and how to authenticate.
#[derive(clap::Args)]
struct ApiArgs {
    /// Base URL of the daemon's API.
    #[arg(long, env = "GRIDWATCH_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token.
    #[arg(long, env = "GRIDWATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Create a user and print its token (once: only a hash is stored).
    Add {
        /// User name.
        name: String,
        /// viewer, operator, crew, engineer or admin.
        #[arg(long)]
        role: String,
        /// Configuration file (for data_dir).
        #[arg(long, short, env = "GRIDWATCH_CONFIG")]
        config: PathBuf,
    },
    /// List users.
    List {
        /// Configuration file (for data_dir).
        #[arg(long, short, env = "GRIDWATCH_CONFIG")]
        config: PathBuf,
    },
    /// Disable a user; its token stops working.
    Disable {
        /// User name.
        name: String,
        /// Configuration file (for data_dir).
        #[arg(long, short, env = "GRIDWATCH_CONFIG")]
        config: PathBuf,
    },
}

#[derive(clap::Args)]
struct EventsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// Only devices of this site.
    #[arg(long)]
    site: Option<String>,
    /// Only devices on this feeder.
    #[arg(long)]
    feeder: Option<String>,
    /// Since a time (RFC 3339) or a duration ago ("7d").
    #[arg(long)]
    since: Option<String>,
    /// Until a time or a duration ago.
    #[arg(long)]
    until: Option<String>,
    /// Event kinds, comma-separated (alarm_raised, device_offline, maintenance, ...).
    #[arg(long)]
    kind: Option<String>,
    /// Most events.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// CSV export (needs the engineer role).
    #[arg(long)]
    csv: bool,
}

#[derive(clap::Args)]
struct AlarmsArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Only open alarms (default: history too).
    #[arg(long)]
    active: bool,
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
}

#[derive(Subcommand)]
enum MaintenanceCmd {
    /// Record maintenance work.
    Add {
        #[command(flatten)]
        api: ApiArgs,
        /// Device id.
        #[arg(long)]
        device: String,
        /// inspection, repair, replacement, oil_sample or test.
        #[arg(long)]
        kind: String,
        /// Free-text note.
        #[arg(long, default_value = "")]
        note: String,
        /// Crew.
        #[arg(long, default_value = "")]
        crew: String,
        /// Findings.
        #[arg(long, default_value = "")]
        findings: String,
        /// Part used (repeat for more).
        #[arg(long = "part")]
        parts: Vec<String>,
    },
    /// List maintenance records.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        /// Most records.
        #[arg(long, default_value_t = 100)]
        limit: usize,
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
        Command::Replay {
            config,
            file,
            json,
            kpi,
        } => match config::load(&config) {
            Ok(loaded) => exit(replay(&loaded, &file, json, kpi)),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Report {
            config,
            from,
            to,
            format,
        } => match config::load(&config) {
            Ok(loaded) => exit(report(&loaded, from, to, format)),
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(2)
            }
        },
        Command::Users(cmd) => exit(users(cmd)),
        Command::Events(args) => exit(client_runtime(events(args))),
        Command::Alarms(args) => exit(client_runtime(alarms(args))),
        Command::Maintenance(cmd) => exit(client_runtime(maintenance(cmd))),
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
        // The embedded demo broker (rumqttd) logs every connection at info; tokio-modbus
        // warns once per byte it drops from a corrupted RTU frame, which gridwatch already
        // counts (gridwatch_modbus_crc_errors_total) and logs per poll.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,rumqttd=warn,tokio_modbus=error")
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn run_daemon(loaded: LoadedConfig) -> anyhow::Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if loaded.config.daemon.worker_threads > 0 {
        builder.worker_threads(loaded.config.daemon.worker_threads);
    }
    let runtime = builder.build().context("cannot start the async runtime")?;
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

fn report(
    loaded: &LoadedConfig,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    format: gridwatch::kpi::report::Format,
) -> anyhow::Result<()> {
    use gridwatch::kpi::report;
    let ns = |d: chrono::NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_utc().timestamp_nanos_opt())
            .with_context(|| format!("{d} is out of range"))
    };
    let (from_ns, to_ns) = (ns(from)?, ns(to)?);
    anyhow::ensure!(to_ns > from_ns, "--to must be after --from");
    let log = report::open_log(loaded).context("opening the event database")?;
    let reports = report::reports(loaded, &log, from_ns, to_ns)?;
    print!(
        "{}",
        report::render(loaded, &reports, from_ns, to_ns, format)?
    );
    Ok(())
}

fn replay(
    loaded: &LoadedConfig,
    file: &std::path::Path,
    json: bool,
    kpi: bool,
) -> anyhow::Result<()> {
    use gridwatch::alarms::EventKind;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    if kpi {
        let s = gridwatch::kpi::report::replay_into_store(loaded, &text)
            .with_context(|| format!("computing the KPIs of {}", file.display()))?;
        eprintln!(
            "KPIs: {} readings, {} device-days and {} interruptions saved to {} ({} interruption(s) still open at the end, not saved)",
            s.readings,
            s.days,
            s.interruptions,
            loaded.config.daemon.data_dir.display(),
            s.open_at_end
        );
    }
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

fn data_dir_of(config: &std::path::Path) -> anyhow::Result<PathBuf> {
    match config::load(config) {
        Ok(loaded) => Ok(loaded.config.daemon.data_dir),
        Err(errors) => anyhow::bail!("{errors}"),
    }
}

fn users(cmd: UsersCmd) -> anyhow::Result<()> {
    use gridwatch::api::auth::Role;
    match cmd {
        UsersCmd::Add { name, role, config } => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role: expected viewer, operator, crew, engineer or admin, got {role:?}")
            })?;
            let token = gridwatch::cli::add_user(&data_dir_of(&config)?, &name, role)?;
            eprintln!(
                "user {name} ({}) created; its token (shown only now):",
                role.as_str()
            );
            println!("{token}");
        }
        UsersCmd::List { config } => {
            let rows = gridwatch::cli::list_users(&data_dir_of(&config)?)?;
            gridwatch::cli::print_rows(
                &rows,
                &["name", "role", "token_id", "disabled_at"],
                gridwatch::cli::Output::detect(),
            );
        }
        UsersCmd::Disable { name, config } => {
            gridwatch::cli::disable_user(&data_dir_of(&config)?, &name)?;
            eprintln!("user {name} disabled");
        }
    }
    Ok(())
}

fn client_runtime(
    fut: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}

async fn events(a: EventsArgs) -> anyhow::Result<()> {
    let client = gridwatch::cli::Client::new(&a.api.url, a.api.token)?;
    let mut q: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    for (k, v) in [
        ("device", a.device),
        ("site", a.site),
        ("feeder", a.feeder),
        ("since", a.since),
        ("until", a.until),
        ("kind", a.kind),
    ] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    if a.csv {
        q.push(("format", "csv".into()));
        print!("{}", client.get_text("/api/v1/events", &q).await?);
        return Ok(());
    }
    let page = client.get_json("/api/v1/events", &q).await?;
    let rows = page["items"].as_array().cloned().unwrap_or_default();
    gridwatch::cli::print_rows(
        &rows,
        &["id", "time", "kind", "device", "actor", "detail"],
        gridwatch::cli::Output::detect(),
    );
    Ok(())
}

async fn alarms(a: AlarmsArgs) -> anyhow::Result<()> {
    let client = gridwatch::cli::Client::new(&a.api.url, a.api.token)?;
    let mut q: Vec<(&str, String)> =
        vec![("active", a.active.to_string()), ("limit", "1000".into())];
    if let Some(d) = a.device {
        q.push(("device", d));
    }
    let list = client.get_json("/api/v1/alarms", &q).await?;
    let rows = list.as_array().cloned().unwrap_or_default();
    gridwatch::cli::print_rows(
        &rows,
        &[
            "id", "device", "rule", "severity", "state", "shelved", "acked_by", "message",
        ],
        gridwatch::cli::Output::detect(),
    );
    Ok(())
}

async fn maintenance(cmd: MaintenanceCmd) -> anyhow::Result<()> {
    match cmd {
        MaintenanceCmd::Add {
            api,
            device,
            kind,
            note,
            crew,
            findings,
            parts,
        } => {
            let client = gridwatch::cli::Client::new(&api.url, api.token)?;
            let body = serde_json::json!({
                "device": device, "kind": kind, "notes": note, "crew": crew,
                "findings": findings, "parts": parts,
            });
            let rec = client.post_json("/api/v1/maintenance", &body).await?;
            gridwatch::cli::print_rows(
                &[rec],
                &["id", "device", "kind", "status", "crew", "notes"],
                gridwatch::cli::Output::detect(),
            );
        }
        MaintenanceCmd::List { api, device, limit } => {
            let client = gridwatch::cli::Client::new(&api.url, api.token)?;
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            if let Some(d) = device {
                q.push(("device", d));
            }
            let page = client.get_json("/api/v1/maintenance", &q).await?;
            let rows = page["items"].as_array().cloned().unwrap_or_default();
            gridwatch::cli::print_rows(
                &rows,
                &[
                    "id",
                    "device",
                    "kind",
                    "status",
                    "crew",
                    "created_by",
                    "notes",
                ],
                gridwatch::cli::Output::detect(),
            );
        }
    }
    Ok(())
}
