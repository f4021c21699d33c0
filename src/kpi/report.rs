//! `gridwatch report`: the period's KPIs per network, site and feeder as an engineer hands
//! them in (Markdown), or as CSV / JSON for other tools; and `gridwatch replay --kpi`, which
//! computes the KPIs of a line-protocol file into the same database.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::LoadedConfig;
use crate::eventlog::{EventLog, EventLogError};
use crate::model::Timestamp;
use crate::topology::Topology;

use super::{KpiEngine, KpiError, KpiReport, Live, Scope, day_name, query};

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown tables.
    Md,
    /// One CSV row per scope.
    Csv,
    /// A JSON array of the scope reports.
    Json,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The event database could not be opened or read.
    #[error(transparent)]
    Database(#[from] EventLogError),
    /// A KPI query failed.
    #[error(transparent)]
    Kpi(#[from] KpiError),
    /// The replayed file is not valid.
    #[error(transparent)]
    Replay(#[from] crate::replay::ReplayError),
    /// JSON output failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Opens the event database of `loaded`'s data_dir (as the daemon does).
pub fn open_log(loaded: &LoadedConfig) -> Result<Arc<EventLog>, EventLogError> {
    let cfg = &loaded.config;
    EventLog::open(
        &cfg.daemon.data_dir,
        &cfg.eventlog,
        &crate::build_devices(loaded),
        crate::hub::Hub::new(),
        &crate::metrics::Registry::new(),
    )
}

/// The network, each site and each feeder over `[from, to)`, in that order.
pub fn reports(
    loaded: &LoadedConfig,
    log: &EventLog,
    from: Timestamp,
    to: Timestamp,
) -> Result<Vec<KpiReport>, ReportError> {
    let cfg = &loaded.config;
    let topology = Topology::from_devices(&cfg.devices);
    let live = Live::default();
    let q = |scope, id: &str| {
        query(
            log,
            &topology,
            &live,
            cfg.kpi.momentary_limit,
            scope,
            id,
            from,
            to,
        )
    };
    let mut out = vec![q(Scope::Network, "")?];
    let feeders = topology.feeders();
    let mut sites: Vec<&str> = feeders.keys().map(|k| k.site.as_str()).collect();
    sites.dedup();
    for site in sites {
        out.push(q(Scope::Site, site)?);
    }
    for key in feeders.keys() {
        out.push(q(Scope::Feeder, &format!("{}/{}", key.site, key.feeder))?);
    }
    Ok(out)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.3}"))
}

fn hours(s: f64) -> String {
    format!("{:.2}", s / 3600.0)
}

fn time(ns: Timestamp) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

const COLUMNS: [&str; 13] = [
    "scope",
    "id",
    "customers",
    "voltage_compliance_pct",
    "voltage_over_h",
    "voltage_under_h",
    "frequency_compliance_pct",
    "saifi",
    "saidi_min",
    "caidi_min",
    "maifi",
    "rs1_pct",
    "interruptions",
];

fn row(r: &KpiReport) -> [String; 13] {
    let rel = &r.reliability;
    let scope = serde_json::to_value(r.scope)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    [
        scope,
        if r.id.is_empty() {
            "all".into()
        } else {
            r.id.clone()
        },
        rel.customers_served.to_string(),
        pct(r.voltage.compliance_pct),
        hours(r.voltage.t_over_s),
        hours(r.voltage.t_under_s),
        pct(r.frequency.compliance_pct),
        format!("{:.4}", rel.saifi),
        format!("{:.3}", rel.saidi_min),
        rel.caidi_min
            .map_or_else(|| "–".into(), |v| format!("{v:.3}")),
        format!("{:.4}", rel.maifi),
        format!("{:.4}", rel.rs1_pct),
        (rel.sustained_events + rel.momentary_events).to_string(),
    ]
}

/// Renders the reports.
pub fn render(
    loaded: &LoadedConfig,
    reports: &[KpiReport],
    from: Timestamp,
    to: Timestamp,
    format: Format,
) -> Result<String, ReportError> {
    let mut out = String::new();
    match format {
        Format::Json => out = serde_json::to_string_pretty(reports)?,
        Format::Csv => {
            out.push_str(&COLUMNS.join(","));
            out.push('\n');
            for r in reports {
                let cells: Vec<String> = row(r)
                    .iter()
                    .map(|c| {
                        if c.contains([',', '"', '\n']) {
                            format!("\"{}\"", c.replace('"', "\"\""))
                        } else {
                            c.clone()
                        }
                    })
                    .collect();
                out.push_str(&cells.join(","));
                out.push('\n');
            }
        }
        Format::Md => {
            let a = &loaded.config.alarms;
            let (lo, hi) = a.standard.band_pct();
            let _ = writeln!(
                out,
                "# gridwatch KPI report {} – {} (UTC)\n",
                day_name(super::day_of(from)),
                day_name(super::day_of(to - 1)),
            );
            let _ = writeln!(
                out,
                "Voltage band {lo:+} % / {hi:+} % of nominal ({:?}); frequency {} ± {} Hz; \
                 interruptions shorter than {} are momentary (IEEE 1366). Compliance counts \
                 time, per monitored device; SAIDI/CAIDI in customer minutes; RS-1 counts every \
                 interruption.\n",
                a.standard,
                a.nominal_frequency,
                a.frequency_band_hz,
                humantime::format_duration(loaded.config.kpi.momentary_limit),
            );
            let _ = writeln!(out, "## Compliance and reliability\n");
            let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(COLUMNS.len()));
            for r in reports {
                let _ = writeln!(out, "| {} |", row(r).join(" | "));
            }
            if let Some(net) = reports.first() {
                let _ = writeln!(out, "\n## Interruptions\n");
                if net.interruptions.is_empty() {
                    let _ = writeln!(out, "None.");
                } else {
                    let _ = writeln!(
                        out,
                        "| device | start | end | minutes | customers | cause |"
                    );
                    let _ = writeln!(out, "|---|---|---|---|---|---|");
                    for i in &net.interruptions {
                        let _ = writeln!(
                            out,
                            "| {} | {} | {} | {:.1} | {} | {} |",
                            i.device,
                            time(i.start),
                            time(i.end),
                            (i.end - i.start) as f64 / 60e9,
                            i.customers,
                            i.cause
                        );
                    }
                }
                let _ = writeln!(out, "\n## Transformer loading\n");
                let _ = writeln!(
                    out,
                    "| transformer | average % | peak % | hours > 100 % | loss of life h (IEEE) | ageing h (IEC) |"
                );
                let _ = writeln!(out, "|---|---|---|---|---|---|");
                for t in &net.loading {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {:.1} | {:.2} | {:.3} | {:.3} |",
                        t.transformer,
                        pct(t.average_pct),
                        t.peak_pct,
                        t.hours_over_100,
                        t.loss_of_life_h,
                        t.ageing_iec_h
                    );
                }
            }
        }
    }
    Ok(out)
}

/// What `replay --kpi` stored.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Readings fed to the KPI engine.
    pub readings: usize,
    /// Device-days saved.
    pub days: usize,
    /// Interruptions saved.
    pub interruptions: usize,
    /// Interruptions still open at the end of the file (not saved: no end).
    pub open_at_end: usize,
}

/// Computes the KPIs of a line-protocol file (reading timestamps) into the event database
/// of `loaded`'s data_dir, from where `gridwatch report` reads them.
pub fn replay_into_store(loaded: &LoadedConfig, input: &str) -> Result<ReplaySummary, ReportError> {
    let cfg = &loaded.config;
    let mut engine = KpiEngine::new(&cfg.kpi, &cfg.alarms, Topology::from_devices(&cfg.devices));
    let mut readings = 0usize;
    crate::replay::for_each_reading(loaded, input, |r| {
        engine.on_reading(r);
        readings += 1;
    })?;
    let open_at_end = engine.interrupted();
    let changes = engine.take_changes(i64::MAX);
    let log = open_log(loaded)?;
    log.save_kpi(&changes.days, &changes.interruptions)?;
    Ok(ReplaySummary {
        readings,
        days: changes.days.len(),
        interruptions: changes.interruptions.len(),
        open_at_end,
    })
}
