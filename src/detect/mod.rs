//! The rule engine: readings in, alarm conditions (raise / escalate / clear) out.
//!
//! Rules come from the built-in library (`library.toml`, compiled in) merged with the
//! user's `[[rules]]` ([`RuleSet::build`]); each device gets the most specific rule of every
//! id (an entry listing the device beats one for its kind). [`Engine::on_reading`] evaluates
//! a device's rules on one reading, [`Engine::tick`] checks communication loss. Both run on
//! the timestamps they are given: reading time for data rules, so a day of data replays
//! exactly; the caller's clock (wall clock in the daemon) for staleness.
//!
//! One fault should make one alarm ([`config::RuleConfig::suppressed_by`] for consequential
//! alarms on the same device; `upstream` rules stay quiet on a device whose parent shows the
//! same condition, e.g. a transformer phase loss seen by all its meters).

pub mod config;
pub mod derived;
pub mod locate;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;

use config::{AlarmsConfig, Direction, Level, RuleConfig, RuleType, Severity, VoltageStandard};
use derived::DeriveContext;
use state::{Ewma, LevelTracker, RateWindow, ResolvedLevel, StuckCounter, Transition};

use crate::model::{DeviceInfo, Known, Reading, Timestamp};

/// The built-in rule library (TOML, documented with its sources).
pub const LIBRARY: &str = include_str!("library.toml");

/// A rule set that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// The built-in library does not parse (a build defect).
    #[error("built-in rule library: {0}")]
    Library(String),
    /// A rule is incomplete or inconsistent.
    #[error("rules[{index}] ({id}): {reason}")]
    Invalid {
        /// Position in `[[rules]]` (or in the library for built-ins).
        index: usize,
        /// Rule id.
        id: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(serde::Deserialize)]
struct LibraryFile {
    rules: Vec<RuleConfig>,
}

/// The built-in rules as written in the library.
pub fn builtin_rules() -> Result<Vec<RuleConfig>, RuleError> {
    toml::from_str::<LibraryFile>(LIBRARY)
        .map(|f| f.rules)
        .map_err(|e| RuleError::Library(e.to_string()))
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Rule id.
    pub id: Arc<str>,
    /// What it computes.
    pub rule_type: RuleType,
    /// Quantity name (reading field or derived).
    pub field: String,
    /// `field` resolved, when it names a derived quantity.
    derived: Option<derived::Derived>,
    /// `field` resolved, when it is a [`Known`] field.
    known: Option<Known>,
    kinds: Option<Vec<String>>,
    devices: Option<Vec<String>>,
    enabled: bool,
    /// Alarm direction.
    pub direction: Direction,
    /// Levels, lowest severity first.
    pub levels: Vec<ResolvedLevel>,
    delay_off_ns: i64,
    window_ns: i64,
    alpha: f64,
    warmup: u32,
    min_deviation: f64,
    suppressed_by: Vec<String>,
    upstream: bool,
    /// What is wrong, for people.
    pub description: String,
    /// Suggested first action for the crew.
    pub action: String,
    /// Unit of value and limits.
    pub unit: String,
}

impl Rule {
    /// The rule's quantity for `r` (a derived one, or the field itself).
    fn quantity(&self, r: &Reading, ctx: &DeriveContext) -> Option<f64> {
        match self.derived {
            Some(d) => derived::derived(r, d, ctx),
            None => match self.known {
                Some(k) => r.known(k),
                None => r.get(&self.field),
            },
        }
    }

    fn applies_to(&self, d: &DeviceInfo) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(&d.kind))
    }
}

fn ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Level defaults that depend on `[alarms]` (voltage standard, frequency band, staleness).
fn default_levels(id: &str, a: &AlarmsConfig) -> Option<Vec<Level>> {
    let l = |severity, raise: f64, clear: f64| Level {
        severity,
        raise,
        clear: Some(clear),
        delay: None,
    };
    use Severity::{Critical, Warning};
    Some(match (id, a.standard) {
        ("voltage_high", VoltageStandard::Gb12325) => vec![l(Warning, 7.0, 6.0)],
        ("voltage_low", VoltageStandard::Gb12325) => vec![l(Warning, -10.0, -9.0)],
        ("voltage_high", VoltageStandard::En50160) => vec![l(Warning, 10.0, 9.0)],
        ("voltage_low", VoltageStandard::En50160) => {
            vec![l(Warning, -10.0, -9.0), l(Critical, -15.0, -14.0)]
        }
        ("voltage_high", VoltageStandard::AnsiC841) => {
            vec![l(Warning, 5.0, 4.5), l(Critical, 5.8, 5.3)]
        }
        ("voltage_low", VoltageStandard::AnsiC841) => {
            vec![l(Warning, -5.0, -4.5), l(Critical, -8.3, -7.8)]
        }
        ("frequency_deviation", _) => {
            vec![l(Warning, a.frequency_band_hz, a.frequency_band_hz * 0.75)]
        }
        ("comm_loss", _) => vec![l(Warning, f64::from(a.stale_intervals), 0.5)],
        _ => return None,
    })
}

/// Every rule after merging the library with the user's overrides.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
}

impl RuleSet {
    /// Merges the built-in library (if enabled) with `user` and resolves defaults.
    pub fn build(alarms: &AlarmsConfig, user: &[RuleConfig]) -> Result<RuleSet, RuleError> {
        let builtin = if alarms.builtin_rules {
            builtin_rules()?
        } else {
            Vec::new()
        };
        let mut entries: Vec<(usize, RuleConfig)> = builtin.iter().cloned().enumerate().collect();
        for (i, u) in user.iter().enumerate() {
            match builtin.iter().find(|b| b.id == u.id) {
                Some(b) => {
                    let merged = u.merged_onto(b);
                    if u.devices.is_none() {
                        entries.retain(|(_, e)| e.id != u.id || e.devices.is_some());
                    }
                    entries.push((i, merged));
                }
                None => entries.push((i, u.clone())),
            }
        }
        let mut rules = Vec::with_capacity(entries.len());
        for (index, e) in entries {
            rules.push(Arc::new(resolve(index, &e, alarms)?));
        }
        Ok(RuleSet { rules })
    }

    /// The rules of `device` in evaluation order (suppressors before the rules they
    /// suppress).
    pub fn for_device(&self, device: &DeviceInfo) -> Vec<Arc<Rule>> {
        let mut picked: Vec<Arc<Rule>> = Vec::new();
        let mut ids: Vec<&str> = Vec::new();
        for r in &self.rules {
            if !ids.contains(&&*r.id) {
                ids.push(&r.id);
            }
        }
        for id in ids {
            let same = || self.rules.iter().filter(|r| &*r.id == id);
            let specific = same().find(|r| {
                r.devices
                    .as_ref()
                    .is_some_and(|d| d.iter().any(|x| x == &device.id))
            });
            let general = || same().find(|r| r.devices.is_none() && r.applies_to(device));
            if let Some(r) = specific.or_else(general)
                && r.enabled
                && r.applies_to(device)
            {
                picked.push(Arc::clone(r));
            }
        }
        // Depth in the suppression graph; bounded so a cycle cannot loop forever.
        let mut depth: HashMap<Arc<str>, usize> = HashMap::new();
        for _ in 0..picked.len() {
            for r in &picked {
                let d = r
                    .suppressed_by
                    .iter()
                    .filter_map(|s| depth.get(s.as_str()).map(|d| d + 1))
                    .max()
                    .unwrap_or(0)
                    .min(picked.len());
                depth.insert(Arc::clone(&r.id), d);
            }
        }
        picked.sort_by_key(|r| depth.get(&r.id).copied().unwrap_or(0));
        picked
    }

    /// All resolved rules (every variant), for listings.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }
}

fn resolve(index: usize, e: &RuleConfig, a: &AlarmsConfig) -> Result<Rule, RuleError> {
    let invalid = |reason: String| RuleError::Invalid {
        index,
        id: e.id.clone(),
        reason,
    };
    if e.id.is_empty()
        || !e
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid("id must be non-empty [a-z0-9_]".into()));
    }
    let rule_type = e
        .rule_type
        .ok_or_else(|| invalid("`type` is required for a rule that is not built in".into()))?;
    let field = match (&e.field, rule_type) {
        (Some(f), _) => f.clone(),
        (None, RuleType::Stale) => String::new(),
        (None, _) => return Err(invalid("`field` is required".into())),
    };
    let levels = e
        .levels
        .clone()
        .or_else(|| default_levels(&e.id, a))
        .ok_or_else(|| invalid("`levels` is required".into()))?;
    if levels.is_empty() {
        return Err(invalid("`levels` must not be empty".into()));
    }
    let delay_on = e.delay_on.unwrap_or(a.delay_on);
    let direction = e.direction.unwrap_or_default();
    let mut resolved = Vec::with_capacity(levels.len());
    for (i, l) in levels.iter().enumerate() {
        let clear = l.clear.unwrap_or(l.raise);
        if !(l.raise.is_finite() && clear.is_finite()) {
            return Err(invalid(format!(
                "levels[{i}]: raise and clear must be finite"
            )));
        }
        let wrong_side = match direction {
            Direction::Above => clear > l.raise,
            Direction::Below => clear < l.raise,
        };
        if wrong_side {
            return Err(invalid(format!(
                "levels[{i}]: clear {clear} is on the alarm side of raise {}",
                l.raise
            )));
        }
        resolved.push(ResolvedLevel {
            severity: l.severity,
            raise: l.raise,
            clear,
            delay_ns: ns(l.delay.unwrap_or(delay_on)),
        });
    }
    let alpha = e.alpha.unwrap_or(0.01);
    if rule_type == RuleType::Statistical && !(alpha > 0.0 && alpha <= 1.0) {
        return Err(invalid(format!("alpha must be in (0, 1], got {alpha}")));
    }
    let window = e.window.unwrap_or(std::time::Duration::from_secs(600));
    if rule_type == RuleType::Rate && window.is_zero() {
        return Err(invalid("window must be longer than zero".into()));
    }
    Ok(Rule {
        id: Arc::from(e.id.as_str()),
        rule_type,
        derived: derived::Derived::from_name(&field),
        known: Known::from_name(&field),
        field,
        kinds: e.kinds.clone(),
        devices: e.devices.clone(),
        enabled: e.enabled.unwrap_or(true),
        direction,
        levels: resolved,
        delay_off_ns: ns(e.delay_off.unwrap_or(a.delay_off)),
        window_ns: ns(window),
        alpha,
        warmup: e.warmup.unwrap_or(300),
        min_deviation: e.min_deviation.unwrap_or(0.0),
        suppressed_by: e.suppressed_by.clone().unwrap_or_default(),
        upstream: e.upstream.unwrap_or(false),
        description: e.description.clone().unwrap_or_else(|| e.id.clone()),
        action: e.action.clone().unwrap_or_default(),
        unit: e.unit.clone().unwrap_or_default(),
    })
}

/// What happened to an alarm condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The condition started (after its delay).
    Raise,
    /// The condition reached a higher severity.
    Escalate,
    /// The condition is gone (after its delay).
    Clear,
}

/// One alarm condition change, for the alarm state machine.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The device.
    pub device: Arc<DeviceInfo>,
    /// The rule.
    pub rule: Arc<Rule>,
    /// Raise, escalate or clear.
    pub change: Change,
    /// Severity (for a clear: the severity the alarm had).
    pub severity: Severity,
    /// The value that triggered the change.
    pub value: f64,
    /// The limit it was compared with (raise value; for a clear, the clear value).
    pub limit: f64,
    /// Timestamp of the reading (or tick) that caused the change.
    pub ts: Timestamp,
}

#[derive(Debug, Default)]
enum Extra {
    #[default]
    None,
    Rate(RateWindow),
    Ewma(Ewma),
    Stuck(StuckCounter),
    Last(Option<f64>),
}

#[derive(Debug)]
struct RuleState {
    rule: Arc<Rule>,
    tracker: LevelTracker,
    extra: Extra,
}

#[derive(Debug)]
struct DeviceState {
    info: Arc<DeviceInfo>,
    rules: Vec<RuleState>,
    latest: Option<Arc<Reading>>,
    last_seen: Timestamp,
}

/// Evaluates rules per device, holding their state.
#[derive(Debug)]
pub struct Engine {
    rules: RuleSet,
    ctx: DeriveContext,
    correlate: bool,
    devices: crate::devmap::DeviceMap<DeviceState>,
}

impl Engine {
    /// An engine for `devices` (more are added when their first reading arrives); `start`
    /// is when communication-loss timers start counting.
    pub fn new(
        rules: RuleSet,
        alarms: &AlarmsConfig,
        devices: &[Arc<DeviceInfo>],
        start: Timestamp,
    ) -> Engine {
        let mut e = Engine {
            rules,
            ctx: DeriveContext {
                nominal_frequency: alarms.nominal_frequency,
                thermal: alarms.thermal,
            },
            correlate: alarms.correlate_upstream,
            devices: Default::default(),
        };
        for d in devices {
            e.device(d, start);
        }
        e
    }

    /// The state of `info`, made with its rules (communication-loss timers from `start`) if
    /// the engine has none yet.
    fn device(&mut self, info: &Arc<DeviceInfo>, start: Timestamp) -> &mut DeviceState {
        let rules = &self.rules;
        self.devices.get_or_insert_with(info, || DeviceState {
            rules: rules
                .for_device(info)
                .into_iter()
                .map(|rule| RuleState {
                    extra: match rule.rule_type {
                        RuleType::Rate => Extra::Rate(RateWindow::default()),
                        RuleType::Statistical => Extra::Ewma(Ewma::default()),
                        RuleType::Stuck => Extra::Stuck(StuckCounter::default()),
                        RuleType::Decreasing => Extra::Last(None),
                        RuleType::Threshold | RuleType::Stale | RuleType::Located => Extra::None,
                    },
                    rule,
                    tracker: LevelTracker::default(),
                })
                .collect(),
            info: Arc::clone(info),
            latest: None,
            last_seen: start,
        })
    }

    /// Marks an alarm restored from the store as active so it clears through the normal
    /// hysteresis once its condition is gone.
    pub fn restore(&mut self, device: &str, rule: &str, severity: Severity) {
        if let Some(d) = self.devices.get_by_id_mut(device)
            && let Some(s) = d.rules.iter_mut().find(|s| &*s.rule.id == rule)
        {
            let level = s
                .rule
                .levels
                .iter()
                .position(|l| l.severity == severity)
                .unwrap_or(0);
            s.tracker.restore(level);
        }
    }

    /// Evaluates the device's rules on `r`.
    pub fn on_reading(&mut self, r: &Arc<Reading>) -> Vec<Detection> {
        let parent = r
            .device
            .parent
            .as_ref()
            .and_then(|p| self.devices.get_by_id(p))
            .and_then(|p| p.latest.clone())
            .filter(|p| {
                // Only a recent parent reading says anything about now.
                let max_age = (3 * p.device.interval_ns).max(10_000_000_000);
                (r.ts - p.ts).abs() <= max_age
            });
        let ctx = self.ctx;
        let correlate = self.correlate;
        let dev = self.device(&r.device, r.ts);
        dev.last_seen = dev.last_seen.max(r.ts);
        dev.latest = Some(Arc::clone(r));
        let mut out = Vec::new();
        // Rules whose condition is present, for `suppressed_by` of the rules after them:
        // rarely more than one or two, so a list beats a set.
        let mut conditions: Vec<&str> = Vec::new();
        for s in &mut dev.rules {
            let rule = &s.rule;
            // Most readings raise no condition: then no rule's `suppressed_by` is read.
            let suppressed = !conditions.is_empty()
                && rule
                    .suppressed_by
                    .iter()
                    .any(|id| conditions.contains(&id.as_str()));
            let raw = if rule.rule_type == RuleType::Stale {
                Some(0.0)
            } else {
                rule.quantity(r, &ctx)
            };
            let x = match (&mut s.extra, raw) {
                (_, None) => None,
                (Extra::None, Some(v)) => Some(v),
                (Extra::Rate(w), Some(v)) => Some(w.update(r.ts, v, rule.window_ns)),
                (Extra::Ewma(e), Some(v)) => {
                    Some(e.update(v, rule.alpha, rule.warmup, rule.min_deviation))
                }
                (Extra::Stuck(c), Some(v)) => Some(c.update(v)),
                (Extra::Last(last), Some(v)) => {
                    let drop = last.map(|l| l - v).unwrap_or(0.0);
                    *last = Some(v);
                    Some(drop)
                }
            };
            let Some(x) = x else { continue };
            let upstream_has_it = correlate
                && rule.upstream
                && parent.as_ref().is_some_and(|p| {
                    rule.quantity(p, &ctx).is_some_and(|px| {
                        rule.levels.first().is_some_and(|l| match rule.direction {
                            Direction::Above => px >= l.raise,
                            Direction::Below => px <= l.raise,
                        })
                    })
                });
            let t = if suppressed || upstream_has_it {
                s.tracker.update_normal(r.ts, rule.delay_off_ns)
            } else {
                s.tracker
                    .update(r.ts, x, &rule.levels, rule.direction, rule.delay_off_ns)
            };
            if s.tracker.condition() {
                conditions.push(&rule.id);
            }
            if let Some(t) = t {
                out.push(detection(&dev.info, rule, t, x, r.ts));
            }
        }
        out
    }

    /// Starts the communication-loss timers of devices that never sent a reading at `now`:
    /// the daemon calls it once its sources run, so a start-up slower than the `comm_loss`
    /// threshold (10,000 devices, a loaded box) does not raise an alarm for every device
    /// that simply was not polled yet.
    pub fn start_timers(&mut self, now: Timestamp) {
        for dev in self.devices.values_mut() {
            if dev.latest.is_none() {
                dev.last_seen = dev.last_seen.max(now);
            }
        }
    }

    /// Checks communication loss at `now` (wall clock in the daemon, reading time in
    /// replay): a device with no reading for the `comm_loss` number of intervals.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Detection> {
        let mut out = Vec::new();
        for dev in self.devices.values_mut() {
            let interval = dev.info.interval_ns.max(1);
            let missed = ((now - dev.last_seen).max(0) / interval) as f64;
            for s in dev
                .rules
                .iter_mut()
                .filter(|s| s.rule.rule_type == RuleType::Stale)
            {
                let rule = Arc::clone(&s.rule);
                if let Some(t) =
                    s.tracker
                        .update(now, missed, &rule.levels, rule.direction, rule.delay_off_ns)
                {
                    out.push(detection(&dev.info, &rule, t, missed, now));
                }
            }
        }
        out
    }
}

fn detection(
    device: &Arc<DeviceInfo>,
    rule: &Arc<Rule>,
    t: Transition,
    x: f64,
    ts: Timestamp,
) -> Detection {
    let (change, level) = match t {
        Transition::Raise { level } => (Change::Raise, level),
        Transition::Escalate { level } => (Change::Escalate, level),
        Transition::Clear { level } => (Change::Clear, level),
    };
    let l = rule.levels.get(level).or(rule.levels.first());
    Detection {
        device: Arc::clone(device),
        rule: Arc::clone(rule),
        change,
        severity: l.map(|l| l.severity).unwrap_or_default(),
        value: x,
        limit: match change {
            Change::Clear => rule.levels.first().map(|l| l.clear).unwrap_or(f64::NAN),
            _ => l.map(|l| l.raise).unwrap_or(f64::NAN),
        },
        ts,
    }
}

#[cfg(test)]
mod tests;
