//! Fault localisation: many meters going dark together become one alarm on the element
//! that explains them.
//!
//! Sits between the rules engine and the alarm state machine. Supply-loss conditions of
//! meters (`last_gasp`, `comm_loss`) are held for `[locate] settle` (meters do not all fall
//! silent in the same second), then grouped by the transformer that supplies them
//! ([`Topology`]):
//! - at least two meters and at least `share` of a transformer's meters dark → one
//!   `outage_transformer` alarm on that transformer (its HV fuse, LV breaker or the
//!   transformer itself);
//! - every transformer of a feeder (at least two) out → one `outage_feeder` alarm on the
//!   feeder (device id `site/feeder`, kind `feeder`) instead of one per transformer; an
//!   outage that grows moves up (the transformer alarms clear, the feeder alarm is raised);
//! - otherwise the meters' own alarms go out as they are (one meter: its service drop or
//!   the meter itself).
//!
//! A transformer monitor's `phase_loss` becomes `lv_phase_loss_a`/`_b`/`_c`: the phase
//! that is gone (from its last reading), so the crew knows which LV fuse to check.
//!
//! The meters' conditions are kept as the outage's children ([`OutageBoard`], served at
//! `/api/v1/outages`) and never reach the alarm state machine, so crews get one alert,
//! not a storm. When every meter is back the located alarm clears, a `restored` notice
//! goes out, and each meter's interruption is handed to the KPI engine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::Severity;
use super::{Change, Detection, Direction, ResolvedLevel, Rule, RuleType};
use crate::kpi::indices::Interruption;
use crate::model::{DeviceInfo, Timestamp};
use crate::topology::{FeederKey, METER, Phase, TRANSFORMER, Topology};

/// `[locate]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocateConfig {
    /// Set false to pass every meter's alarm through unchanged.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How long a meter's supply-loss condition waits for its neighbours.
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// Share of a transformer's meters that must be dark to blame the transformer (a meter
    /// that was already broken should not hide a transformer outage).
    #[serde(default = "default_share")]
    pub share: f64,
    /// Planned work (a work order with a scheduled window): how long before the window the
    /// customer notice is published.
    #[serde(default = "default_ahead", with = "humantime_serde")]
    pub planned_notice_ahead: Duration,
    /// How often work orders are checked for due notices.
    #[serde(default = "default_check", with = "humantime_serde")]
    pub planned_check: Duration,
}

fn default_ahead() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_check() -> Duration {
    Duration::from_secs(30)
}

fn default_true() -> bool {
    true
}
fn default_settle() -> Duration {
    Duration::from_secs(20)
}
fn default_share() -> f64 {
    0.9
}

impl Default for LocateConfig {
    fn default() -> Self {
        LocateConfig {
            enabled: true,
            settle: default_settle(),
            share: default_share(),
            planned_notice_ahead: default_ahead(),
            planned_check: default_check(),
        }
    }
}

/// Rules whose raise on a meter means "this meter lost supply (or went dark)".
const SUPPLY_RULES: [&str; 2] = ["last_gasp", "comm_loss"];

/// One affected meter of an outage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AffectedMeter {
    /// Meter id.
    pub device: String,
    /// Customers behind it.
    pub customers: u32,
    /// Location text.
    pub location: Option<String>,
    /// Its own conditions (the alarm's children), e.g. `["comm_loss", "last_gasp"]`.
    pub conditions: Vec<String>,
    /// Dark since, ns.
    pub since: Timestamp,
}

/// A located outage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// Stable id within this run.
    pub id: u64,
    /// `transformer` or `feeder`.
    pub element_kind: String,
    /// Transformer id or `site/feeder`.
    pub element: String,
    /// Site.
    pub site: String,
    /// Feeder.
    pub feeder: String,
    /// Location text of the element, if configured.
    pub location: Option<String>,
    /// Affected meters (children), by id.
    pub meters: Vec<AffectedMeter>,
    /// Customers affected.
    pub customers: u64,
    /// Start (earliest meter), ns.
    pub since: Timestamp,
    /// Restored at, ns (None while active).
    pub restored_at: Option<Timestamp>,
    /// Suggested first action.
    pub action: String,
    /// The work order whose scheduled window this outage falls in (planned, not a fault).
    pub planned_work_order: Option<i64>,
    /// End of the planned window, ns.
    pub planned_until: Option<Timestamp>,
}

/// What an outage notice says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A new outage.
    Started,
    /// More meters (or it moved up to the feeder).
    Updated,
    /// Every meter is back.
    Restored,
    /// Planned work ahead: these customers will be without supply in the window.
    Planned,
}

/// A customer outage notice (MQTT `gridwatch/outages/{site}/{feeder}`).
#[derive(Debug, Clone, Serialize)]
pub struct OutageNotice {
    /// What happened.
    pub event: NoticeKind,
    /// The outage as it is now.
    pub outage: Outage,
}

/// Active and recent outages, shared with the API.
#[derive(Debug, Default)]
pub struct OutageBoard {
    active: BTreeMap<u64, Outage>,
    recent: VecDeque<Outage>,
    planned: Vec<Outage>,
    /// Windows of open planned work: (work order, device, start, end).
    windows: Vec<(i64, String, Timestamp, Timestamp)>,
}

impl OutageBoard {
    /// Active outages, then up to 100 restored ones (newest first).
    pub fn snapshot(&self) -> (Vec<Outage>, Vec<Outage>) {
        (
            self.active.values().cloned().collect(),
            self.recent.iter().cloned().collect(),
        )
    }

    /// Planned outages whose notice went out and whose window has not ended.
    pub fn planned(&self) -> Vec<Outage> {
        self.planned.clone()
    }
}

#[derive(Debug)]
struct Dark {
    /// For `phase_dark`: the phase the meter lost.
    phase: Option<Phase>,
    since: Timestamp,
    rules: BTreeSet<String>,
    held: Vec<Detection>,
    released: bool,
    /// Key of the outage it belongs to.
    outage: Option<u64>,
}

#[derive(Debug)]
struct Located {
    outage: Outage,
    device: Arc<DeviceInfo>,
    rule: Arc<Rule>,
    meters: BTreeSet<String>,
    total: usize,
}

/// The localisation stage.
pub struct Locator {
    cfg: LocateConfig,
    topology: Arc<Topology>,
    transformer_rule: Arc<Rule>,
    feeder_rule: Arc<Rule>,
    phase_rules: [Arc<Rule>; 3],
    /// Last phase voltages and nominal of each device.
    voltages: crate::devmap::DeviceMap<([Option<f64>; 3], f64)>,
    /// Phase rules a transformer's `phase_loss` was turned into.
    phase_raised: foldhash::HashMap<String, Vec<Arc<Rule>>>,
    dark: BTreeMap<String, Dark>,
    /// Meters that lost one phase (three-phase meters reporting `phase_loss`).
    phase_dark: BTreeMap<String, Dark>,
    located: BTreeMap<u64, Located>,
    next_id: u64,
    board: Arc<Mutex<OutageBoard>>,
    notices: Vec<OutageNotice>,
    interruptions: Vec<Interruption>,
}

fn located_rule(id: &str, description: &str, action: &str) -> Arc<Rule> {
    Arc::new(Rule {
        id: Arc::from(id),
        rule_type: RuleType::Located,
        field: String::new(),
        derived: None,
        known: None,
        kinds: None,
        devices: None,
        enabled: true,
        direction: Direction::Above,
        levels: vec![ResolvedLevel {
            severity: Severity::Critical,
            raise: 2.0,
            clear: 0.5,
            delay_ns: 0,
        }],
        delay_off_ns: 0,
        window_ns: 0,
        alpha: 0.0,
        warmup: 0,
        min_deviation: 0.0,
        suppressed_by: Vec::new(),
        upstream: false,
        description: description.into(),
        action: action.into(),
        unit: "meters".into(),
    })
}

impl Locator {
    /// A locator over `topology`; its board is shared with the API.
    pub fn new(cfg: &LocateConfig, topology: impl Into<Arc<Topology>>) -> Self {
        Locator {
            cfg: cfg.clone(),
            topology: topology.into(),
            transformer_rule: located_rule(
                "outage_transformer",
                "Supply lost on a whole transformer (located from its meters)",
                "check the transformer's HV fuses / LV main breaker and the transformer itself",
            ),
            feeder_rule: located_rule(
                "outage_feeder",
                "Supply lost on a whole feeder (located from its transformers' meters)",
                "check the feeder breaker and protection at the substation",
            ),
            phase_rules: Phase::ALL.map(|p| {
                let up = p.letter().to_uppercase();
                located_rule(
                    &format!("lv_phase_loss_{}", p.letter()),
                    &format!("Phase {up} lost on the transformer's LV side"),
                    &format!(
                        "check LV fuse phase {up} at the transformer and the phase-{up} conductor"
                    ),
                )
            }),
            voltages: Default::default(),
            phase_raised: Default::default(),
            dark: BTreeMap::new(),
            phase_dark: BTreeMap::new(),
            located: BTreeMap::new(),
            next_id: 1,
            board: Arc::new(Mutex::new(OutageBoard::default())),
            notices: Vec::new(),
            interruptions: Vec::new(),
        }
    }

    /// Active and recent outages, for the API.
    pub fn board(&self) -> Arc<Mutex<OutageBoard>> {
        Arc::clone(&self.board)
    }

    /// Notices produced since the last call (for MQTT).
    pub fn take_notices(&mut self) -> Vec<OutageNotice> {
        std::mem::take(&mut self.notices)
    }

    /// Interruptions of restored outages since the last call (for the KPIs).
    pub fn take_interruptions(&mut self) -> Vec<Interruption> {
        std::mem::take(&mut self.interruptions)
    }

    fn is_supply(&self, d: &Detection) -> Option<String> {
        let id = &d.device.id;
        (d.device.kind == METER
            && SUPPLY_RULES.contains(&&*d.rule.id)
            && self.topology.transformer_of(id).is_some())
        .then(|| id.clone())
    }

    /// Remembers a device's phase voltages (call before [`process`](Self::process) with
    /// the detections of the same reading).
    pub fn observe(&mut self, r: &crate::model::Reading) {
        let Some(nominal) = r.device.nominal_voltage else {
            return;
        };
        let v = crate::model::Known::VOLTAGES.map(|k| r.known(k));
        *self.voltages.get_or_insert_with(&r.device, || (v, nominal)) = (v, nominal);
    }

    fn lost_phases(&self, id: &str) -> Vec<Phase> {
        match self.voltages.get_by_id(id) {
            Some((v, n)) => Phase::ALL
                .iter()
                .zip(v)
                .filter(|(_, x)| x.is_some_and(|x| x < super::derived::LOST_PHASE_PU * n))
                .map(|(p, _)| *p)
                .collect(),
            None => Vec::new(),
        }
    }

    /// A meter's `phase_loss`: held to be grouped with its neighbours on the same phase.
    fn meter_phase(&mut self, meter: String, d: Detection) -> Option<Detection> {
        match d.change {
            Change::Raise => {
                let Some(&phase) = self.lost_phases(&meter).first() else {
                    return Some(d);
                };
                self.phase_dark.insert(
                    meter,
                    Dark {
                        phase: Some(phase),
                        since: d.ts,
                        rules: BTreeSet::from([d.rule.id.to_string()]),
                        held: vec![d],
                        released: false,
                        outage: None,
                    },
                );
                None
            }
            Change::Escalate => match self.phase_dark.get(&meter) {
                Some(e) if !e.released => None,
                _ => Some(d),
            },
            Change::Clear => match self.phase_dark.remove(&meter) {
                Some(e) if !e.released => None,
                _ => Some(d),
            },
        }
    }

    /// A transformer's `phase_loss` as the lost phase's own alarm(s).
    fn by_phase(&mut self, d: Detection) -> Vec<Detection> {
        let id = d.device.id.clone();
        let rules = match d.change {
            Change::Raise => {
                let lost: Vec<Arc<Rule>> = match self.voltages.get_by_id(&id) {
                    Some((v, n)) => Phase::ALL
                        .iter()
                        .zip(v)
                        .filter(|(_, x)| x.is_some_and(|x| x < super::derived::LOST_PHASE_PU * n))
                        .map(|(p, _)| Arc::clone(&self.phase_rules[*p as usize]))
                        .collect(),
                    None => Vec::new(),
                };
                if lost.is_empty() {
                    return vec![d];
                }
                self.phase_raised.insert(id, lost.clone());
                lost
            }
            Change::Escalate => match self.phase_raised.get(&id) {
                Some(r) => r.clone(),
                None => return vec![d],
            },
            Change::Clear => match self.phase_raised.remove(&id) {
                Some(r) => r,
                None => return vec![d],
            },
        };
        rules
            .into_iter()
            .map(|rule| Detection { rule, ..d.clone() })
            .collect()
    }

    /// Passes or holds the engine's detections.
    pub fn process(&mut self, dets: Vec<Detection>) -> Vec<Detection> {
        if !self.cfg.enabled {
            return dets;
        }
        let mut out = Vec::new();
        for d in dets {
            if &*d.rule.id == "phase_loss" {
                if d.device.kind == TRANSFORMER {
                    out.extend(self.by_phase(d));
                    continue;
                }
                if d.device.kind == METER && self.topology.transformer_of(&d.device.id).is_some() {
                    let meter = d.device.id.clone();
                    out.extend(self.meter_phase(meter, d));
                    continue;
                }
            }
            let Some(meter) = self.is_supply(&d) else {
                out.push(d);
                continue;
            };
            match d.change {
                Change::Raise | Change::Escalate => {
                    let e = self.dark.entry(meter.clone()).or_insert_with(|| Dark {
                        phase: None,
                        since: d.ts,
                        rules: BTreeSet::new(),
                        held: Vec::new(),
                        released: false,
                        outage: None,
                    });
                    e.since = e.since.min(d.ts);
                    e.rules.insert(d.rule.id.to_string());
                    if e.released {
                        out.push(d);
                    } else if e.outage.is_none() {
                        e.held.push(d);
                    }
                    // Inside an outage: a child, kept on the board only.
                }
                Change::Clear => {
                    let (ts, rule) = (d.ts, Arc::clone(&d.rule.id));
                    let Some(e) = self.dark.get_mut(&meter) else {
                        out.push(d);
                        continue;
                    };
                    e.rules.remove(&*rule);
                    if e.released {
                        out.push(d);
                    } else {
                        e.held.retain(|h| h.rule.id != rule);
                    }
                    if e.rules.is_empty() {
                        let since = e.since;
                        let outage = e.outage;
                        self.dark.remove(&meter);
                        if let Some(o) = outage
                            && let Some(l) = self.located.get(&o)
                        {
                            let customers = self.topology.get(&meter).map_or(1, |n| n.customers);
                            self.interruptions.push(Interruption {
                                device: meter.clone(),
                                start: since,
                                end: ts,
                                customers,
                                cause: format!("located:{}", l.outage.element),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    fn meter(&self, id: &str) -> AffectedMeter {
        let n = self.topology.get(id);
        let d = self.dark.get(id).or_else(|| self.phase_dark.get(id));
        AffectedMeter {
            device: id.to_string(),
            customers: n.map_or(1, |n| n.customers),
            location: n.and_then(|n| n.location.clone()),
            conditions: d
                .map(|d| d.rules.iter().cloned().collect())
                .unwrap_or_default(),
            since: d.map_or(0, |d| d.since),
        }
    }

    fn element_device(&self, kind: &str, id: &str, fk: &FeederKey) -> Arc<DeviceInfo> {
        let n = self.topology.get(id);
        Arc::new(
            DeviceInfo {
                id: id.to_string(),
                kind: kind.to_string(),
                site: fk.site.clone(),
                feeder: fk.feeder.clone(),
                parent: None,
                location: n.and_then(|n| n.location.clone()),
                rated_kva: None,
                nominal_voltage: None,
                customers: 0,
                interval_ns: 1,
                lp_series: String::new(),
                slot: crate::model::Slot::NONE,
            }
            .finish(),
        )
    }

    fn detection(l: &Located, change: Change, ts: Timestamp) -> Detection {
        Detection {
            device: Arc::clone(&l.device),
            rule: Arc::clone(&l.rule),
            change,
            severity: Severity::Critical,
            value: l.meters.len() as f64,
            limit: l.total as f64,
            ts,
        }
    }

    fn publish(&mut self, id: u64, event: NoticeKind) {
        let Some(l) = self.located.get(&id) else {
            return;
        };
        let mut outage = l.outage.clone();
        outage.meters = l.meters.iter().map(|m| self.meter(m)).collect();
        outage.customers = outage.meters.iter().map(|m| u64::from(m.customers)).sum();
        if let Some(l) = self.located.get_mut(&id) {
            l.outage = outage.clone();
        }
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        if event == NoticeKind::Restored {
            board.active.remove(&id);
            board.recent.push_front(outage.clone());
            board.recent.truncate(100);
        } else {
            board.active.insert(id, outage.clone());
        }
        drop(board);
        self.notices.push(OutageNotice { event, outage });
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        rule: Option<Arc<Rule>>,
        kind: &str,
        element: &str,
        fk: &FeederKey,
        meters: BTreeSet<String>,
        total: usize,
        now: Timestamp,
    ) -> (u64, Detection) {
        let id = self.next_id;
        self.next_id += 1;
        let since = meters
            .iter()
            .filter_map(|m| {
                self.dark
                    .get(m)
                    .or_else(|| self.phase_dark.get(m))
                    .map(|d| d.since)
            })
            .min()
            .unwrap_or(now);
        let rule = rule.unwrap_or_else(|| {
            if kind == "feeder" {
                Arc::clone(&self.feeder_rule)
            } else {
                Arc::clone(&self.transformer_rule)
            }
        });
        let device = self.element_device(kind, element, fk);
        // Inside the window of planned work on this element (or above its meters)?
        let planned = {
            let board = self.board.lock().unwrap_or_else(|e| e.into_inner());
            board
                .windows
                .iter()
                .find(|(_, dev, start, end)| {
                    (*start..*end).contains(&now)
                        && (dev == element
                            || self
                                .topology
                                .meters_under(dev)
                                .iter()
                                .any(|m| meters.contains(&m.id)))
                })
                .map(|(wo, _, _, end)| (*wo, *end))
        };
        let l = Located {
            outage: Outage {
                id,
                element_kind: kind.into(),
                element: element.into(),
                site: fk.site.clone(),
                feeder: fk.feeder.clone(),
                location: device.location.clone(),
                meters: Vec::new(),
                customers: 0,
                since,
                restored_at: None,
                action: rule.action.clone(),
                planned_work_order: planned.map(|p| p.0),
                planned_until: planned.map(|p| p.1),
            },
            device,
            rule,
            meters,
            total,
        };
        let d = Self::detection(&l, Change::Raise, since);
        self.located.insert(id, l);
        self.absorb(id);
        self.publish(id, NoticeKind::Started);
        (id, d)
    }

    /// Makes the outage's meters its children: their held alarms are dropped.
    fn absorb(&mut self, id: u64) {
        let Some(l) = self.located.get(&id) else {
            return;
        };
        let phase = l.rule.id.starts_with("lv_phase_loss");
        for m in &l.meters {
            let d = if phase {
                self.phase_dark.get_mut(m)
            } else {
                self.dark.get_mut(m)
            };
            if let Some(d) = d {
                d.held.clear();
                d.outage = Some(id);
            }
        }
    }

    /// Decides held conditions whose settle time is over; clears restored outages.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Detection> {
        if !self.cfg.enabled {
            return Vec::new();
        }
        let settle = i64::try_from(self.cfg.settle.as_nanos()).unwrap_or(i64::MAX);
        let mut out = Vec::new();

        // Restoration first: an outage whose meters are all back clears.
        let restored: Vec<u64> = self
            .located
            .iter()
            .filter(|(id, _)| {
                !self
                    .dark
                    .values()
                    .chain(self.phase_dark.values())
                    .any(|d| d.outage == Some(**id))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in restored {
            if let Some(l) = self.located.get_mut(&id) {
                l.outage.restored_at = Some(now);
            }
            self.publish(id, NoticeKind::Restored);
            if let Some(l) = self.located.remove(&id) {
                out.push(Self::detection(&l, Change::Clear, now));
            }
        }

        // Meters under an active outage's element that went dark later join it.
        let joins: Vec<(String, u64)> = self
            .dark
            .iter()
            .filter(|(_, d)| d.outage.is_none() && !d.released)
            .filter_map(|(m, _)| {
                let tx = self.topology.transformer_of(m)?;
                let fk = self.topology.feeder_of(tx)?;
                self.located
                    .iter()
                    .find(|(_, l)| {
                        l.outage.element == tx
                            || (l.outage.element_kind == "feeder"
                                && l.outage.site == fk.site
                                && l.outage.feeder == fk.feeder)
                    })
                    .map(|(id, _)| (m.clone(), *id))
            })
            .collect();
        let mut grown = BTreeSet::new();
        for (m, id) in joins {
            if let Some(l) = self.located.get_mut(&id) {
                l.meters.insert(m);
                grown.insert(id);
            }
        }
        for id in &grown {
            self.absorb(*id);
            self.publish(*id, NoticeKind::Updated);
        }

        // Group the settled, undecided dark meters by transformer.
        let mut by_tx: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut due: BTreeSet<String> = BTreeSet::new();
        for (m, d) in &self.dark {
            if d.released || d.outage.is_some() {
                continue;
            }
            if let Some(tx) = self.topology.transformer_of(m) {
                by_tx.entry(tx.to_string()).or_default().insert(m.clone());
                if now - d.since >= settle {
                    due.insert(tx.to_string());
                }
            }
        }
        let mut out_tx: BTreeMap<String, (BTreeSet<String>, usize)> = BTreeMap::new();
        for tx in &due {
            let dark = by_tx.get(tx).cloned().unwrap_or_default();
            let total = self.topology.meters_under(tx).len();
            let needed = ((self.cfg.share * total as f64).ceil() as usize).max(2);
            // Single-phase meters (`phase` in the config) all on one phase, and most of
            // that phase's meters: the transformer's LV fuse of that phase.
            let phases: BTreeSet<Option<Phase>> = dark
                .iter()
                .map(|m| self.topology.get(m).and_then(|n| n.phase))
                .collect();
            let one_phase = match phases.iter().next() {
                Some(Some(p)) if phases.len() == 1 => Some(*p),
                _ => None,
            };
            let on_phase = one_phase.map_or(0, |p| {
                self.topology
                    .meters_under(tx)
                    .iter()
                    .filter(|n| n.phase == Some(p))
                    .count()
            });
            let phase_needed = ((self.cfg.share * on_phase as f64).ceil() as usize).max(2);
            if dark.len() >= needed {
                out_tx.insert(tx.clone(), (dark, total));
            } else if let Some(p) = one_phase
                && dark.len() >= phase_needed
            {
                let Some(fk) = self.topology.feeder_of(tx) else {
                    continue;
                };
                let rule = Arc::clone(&self.phase_rules[p as usize]);
                let (id, d) = self.open(Some(rule), "transformer", tx, &fk, dark, total, now);
                // These meters are dark (no supply), not phase-dark: absorb them here.
                if let Some(l) = self.located.get(&id) {
                    for m in l.meters.clone() {
                        if let Some(e) = self.dark.get_mut(&m) {
                            e.held.clear();
                            e.outage = Some(id);
                        }
                    }
                }
                out.push(d);
            } else {
                // Not a transformer outage: the meters' own alarms go out.
                for m in &dark {
                    if let Some(d) = self.dark.get_mut(m)
                        && now - d.since >= settle
                    {
                        d.released = true;
                        out.append(&mut d.held);
                    }
                }
            }
        }

        // Roll transformers up to their feeder when every transformer of it is out.
        let mut feeders: BTreeMap<FeederKey, Vec<String>> = BTreeMap::new();
        for tx in out_tx.keys() {
            if let Some(fk) = self.topology.feeder_of(tx) {
                feeders.entry(fk).or_default().push(tx.clone());
            }
        }
        for (fk, txs) in feeders {
            let all: Vec<String> = self
                .topology
                .transformers_on(&fk)
                .iter()
                .map(|n| n.id.clone())
                .collect();
            let located_tx: Vec<u64> = self
                .located
                .iter()
                .filter(|(_, l)| {
                    l.outage.element_kind == "transformer" && all.contains(&l.outage.element)
                })
                .map(|(id, _)| *id)
                .collect();
            let covered = all
                .iter()
                .all(|t| txs.contains(t) || self.located.values().any(|l| &l.outage.element == t));
            if all.len() >= 2 && covered {
                let mut meters: BTreeSet<String> = BTreeSet::new();
                let mut total = 0;
                for t in &all {
                    total += self.topology.meters_under(t).len();
                    if let Some((m, _)) = out_tx.remove(t) {
                        meters.extend(m);
                    }
                }
                // The outage moved up: the transformer alarms clear into the feeder's.
                for id in located_tx {
                    if let Some(l) = self.located.remove(&id) {
                        meters.extend(l.meters.iter().cloned());
                        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
                        board.active.remove(&id);
                        drop(board);
                        out.push(Self::detection(&l, Change::Clear, now));
                    }
                }
                let element = format!("{}/{}", fk.site, fk.feeder);
                let (_, d) = self.open(None, "feeder", &element, &fk, meters, total, now);
                out.push(d);
            }
        }
        for (tx, (meters, total)) in out_tx {
            let Some(fk) = self.topology.feeder_of(&tx) else {
                continue;
            };
            let (_, d) = self.open(None, "transformer", &tx, &fk, meters, total, now);
            out.push(d);
        }
        out.extend(self.tick_phases(now, settle));
        out
    }

    /// Meters of one transformer that lost the same phase: at least two → one
    /// `lv_phase_loss_x` alarm on the transformer (its LV fuse of that phase, or an LV
    /// way's); one → the meter's own alarm.
    fn tick_phases(&mut self, now: Timestamp, settle: i64) -> Vec<Detection> {
        let mut out = Vec::new();
        let mut groups: BTreeMap<(String, Phase), BTreeSet<String>> = BTreeMap::new();
        let mut due: BTreeSet<(String, Phase)> = BTreeSet::new();
        for (m, d) in &self.phase_dark {
            let (Some(phase), Some(tx)) = (d.phase, self.topology.transformer_of(m)) else {
                continue;
            };
            if d.released || d.outage.is_some() {
                continue;
            }
            let key = (tx.to_string(), phase);
            groups.entry(key.clone()).or_default().insert(m.clone());
            if now - d.since >= settle {
                due.insert(key);
            }
        }
        for key in due {
            let meters = groups.remove(&key).unwrap_or_default();
            let (tx, phase) = key;
            // Already located on this phase: the newcomers join it.
            let existing = self
                .located
                .iter()
                .find(|(_, l)| {
                    l.outage.element == tx && *l.rule.id == *self.phase_rules[phase as usize].id
                })
                .map(|(id, _)| *id);
            if let Some(id) = existing {
                if let Some(l) = self.located.get_mut(&id) {
                    l.meters.extend(meters);
                }
                self.absorb(id);
                self.publish(id, NoticeKind::Updated);
                continue;
            }
            if meters.len() >= 2 {
                let Some(fk) = self.topology.feeder_of(&tx) else {
                    continue;
                };
                let total = self.topology.meters_under(&tx).len();
                let rule = Arc::clone(&self.phase_rules[phase as usize]);
                let (_, d) = self.open(Some(rule), "transformer", &tx, &fk, meters, total, now);
                out.push(d);
            } else {
                for m in meters {
                    if let Some(d) = self.phase_dark.get_mut(&m) {
                        d.released = true;
                        out.append(&mut d.held);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;

/// The customer notice for planned work `wo`: every meter below its device.
pub fn planned_notice(
    topology: &Topology,
    wo: &crate::eventlog::records::WorkOrder,
) -> Option<OutageNotice> {
    let (start, end) = (wo.scheduled_start?, wo.scheduled_end?);
    let node = topology.get(&wo.device)?;
    let meters: Vec<AffectedMeter> = topology
        .meters_under(&wo.device)
        .into_iter()
        .map(|m| AffectedMeter {
            device: m.id.clone(),
            customers: m.customers,
            location: m.location.clone(),
            conditions: Vec::new(),
            since: start,
        })
        .collect();
    Some(OutageNotice {
        event: NoticeKind::Planned,
        outage: Outage {
            id: 0,
            element_kind: node.kind.clone(),
            element: node.id.clone(),
            site: node.site.clone(),
            feeder: node.feeder.clone(),
            location: node.location.clone(),
            customers: meters.iter().map(|m| u64::from(m.customers)).sum(),
            meters,
            since: start,
            restored_at: None,
            action: wo.title.clone(),
            planned_work_order: Some(wo.id),
            planned_until: Some(end),
        },
    })
}

/// Publishes planned-work notices when they are due (`planned_notice_ahead` before the
/// window, at once for work scheduled sooner) and keeps the locator's list of open windows
/// current, every `planned_check`.
pub async fn run_planner(
    log: Arc<crate::eventlog::EventLog>,
    topology: Arc<Topology>,
    cfg: LocateConfig,
    board: Arc<Mutex<OutageBoard>>,
    notices: tokio::sync::mpsc::UnboundedSender<OutageNotice>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let ahead = i64::try_from(cfg.planned_notice_ahead.as_nanos()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(cfg.planned_check);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => break,
        }
        let now = crate::model::now_ns();
        let l = Arc::clone(&log);
        let found = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::eventlog::EventLogError>((
                l.planned_notices_due(now, ahead)?,
                l.planned_windows(now)?,
            ))
        })
        .await;
        let (due, open) = match found {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read planned work orders");
                continue;
            }
            Err(_) => continue,
        };
        {
            let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
            b.windows = open
                .iter()
                .filter_map(|w| {
                    Some((w.id, w.device.clone(), w.scheduled_start?, w.scheduled_end?))
                })
                .collect();
            b.planned
                .retain(|o| o.planned_until.is_some_and(|end| end > now));
        }
        for wo in due {
            let Some(n) = planned_notice(&topology, &wo) else {
                tracing::warn!(work_order = wo.id, device = %wo.device, "planned work on a device not in the topology; no notice");
                let _ = log.mark_notice_sent(wo.id, now);
                continue;
            };
            tracing::info!(work_order = wo.id, element = %n.outage.element, customers = n.outage.customers, "planned outage notice");
            board
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .planned
                .push(n.outage.clone());
            let _ = notices.send(n);
            if let Err(e) = log.mark_notice_sent(wo.id, now) {
                tracing::warn!(error = %e, work_order = wo.id, "cannot record the planned notice");
            }
        }
    }
}
