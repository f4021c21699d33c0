//! The alarm state machine: detections in, alarm events (for notification, the TSDB and the
//! API) out.
//!
//! Key = (device, rule): one alarm per key, however many samples keep the condition true
//! (deduplication). Lifecycle: `active` → `acknowledged` → gone when it clears, or
//! `cleared_unacked` (stays visible) → gone when acknowledged; a raise while
//! `cleared_unacked` re-activates the same alarm. Severity only escalates while active.
//! An alarm with `flapping_transitions` raises/clears within `flapping_window` becomes one
//! *flapping* alarm: it stays active, further raises/clears are not notified, and it clears
//! only after a quiet window. An operator may *shelve* an alarm until a time: while shelved
//! nothing about it is notified; when the shelf expires and it is still active, it is
//! notified again.
//!
//! Every call takes the current time as an argument (reading time for detections; the
//! caller's clock for ack/shelve/tick), so tests and replays are exact. State is saved to an
//! [`store::AlarmStore`] after every change.

pub mod service;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::detect::config::Severity;
use crate::detect::{Change, Detection};
use crate::model::Timestamp;
use store::{AlarmStore, StoreError};

/// Where an alarm is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Condition present, not acknowledged.
    Active,
    /// Condition present, acknowledged by an operator.
    Acknowledged,
    /// Condition gone, never acknowledged: stays visible until it is.
    ClearedUnacked,
}

/// One alarm as the API, the store and the notifications see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Stable id (for `/api/v1/alarms/{id}/ack`).
    pub id: u64,
    /// Device id.
    pub device: String,
    /// Device kind.
    pub kind: String,
    /// Site.
    pub site: String,
    /// Feeder.
    pub feeder: String,
    /// Location text for field crews.
    pub location: Option<String>,
    /// Rule id.
    pub rule: String,
    /// What is wrong.
    pub description: String,
    /// Suggested first action.
    pub action: String,
    /// Severity (the highest reached while active).
    pub severity: Severity,
    /// Lifecycle state.
    pub state: AlarmState,
    /// The value at the last change.
    pub value: f64,
    /// The limit it was compared with.
    pub limit: f64,
    /// Unit of value and limit.
    pub unit: String,
    /// When the condition started (reading time, ns).
    pub since: Timestamp,
    /// Reading time of the last change, ns.
    pub last_change: Timestamp,
    /// When the condition cleared, ns.
    pub cleared_at: Option<Timestamp>,
    /// When it was acknowledged, ns.
    pub acked_at: Option<Timestamp>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// Shelved until this time (ns), if shelved.
    pub shelved_until: Option<Timestamp>,
    /// Who shelved it.
    pub shelved_by: Option<String>,
    /// Chattering: raised and cleared too often; notified once.
    pub flapping: bool,
    /// Whether the condition is present now (differs from `state` while flapping).
    pub condition: bool,
    /// Recent raise/clear times, for flapping detection.
    #[serde(default)]
    pub transitions: VecDeque<Timestamp>,
}

impl Alarm {
    /// Whether notifications are held back (shelved).
    pub fn is_shelved(&self) -> bool {
        self.shelved_until.is_some()
    }
}

/// What changed, for notification and the TSDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new alarm (or a cleared-unacked one came back).
    Raised,
    /// Severity went up.
    Escalated,
    /// The condition is gone.
    Cleared,
    /// An operator acknowledged it.
    Acknowledged,
    /// It started flapping (one notification for the chatter).
    Flapping,
    /// An operator shelved it.
    Shelved,
    /// The shelf expired (or was lifted) while it is still active.
    Unshelved,
    /// It left the list (cleared and acknowledged).
    Removed,
}

impl EventKind {
    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Raised => "raised",
            EventKind::Escalated => "escalated",
            EventKind::Cleared => "cleared",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Flapping => "flapping",
            EventKind::Shelved => "shelved",
            EventKind::Unshelved => "unshelved",
            EventKind::Removed => "removed",
        }
    }
}

/// One alarm change.
#[derive(Debug, Clone, Serialize)]
pub struct AlarmEvent {
    /// What happened.
    pub kind: EventKind,
    /// The alarm after the change.
    pub alarm: Alarm,
    /// When (reading time for detections, caller's clock for operator actions), ns.
    pub at: Timestamp,
    /// Timestamp of the reading behind the change (benchmark hook), ns.
    pub reading_ts: Option<Timestamp>,
    /// Whether notifications should go out (false while shelved or flapping).
    pub notify: bool,
}

/// An operator action that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    /// No alarm with this id.
    #[error("no alarm with id {0}")]
    NotFound(u64),
    /// The shelving duration is zero or above `[alarms] max_shelve`.
    #[error("shelving must be longer than zero and at most {max_s} s")]
    BadShelve {
        /// The maximum, seconds.
        max_s: u64,
    },
    /// The state could not be saved.
    #[error("alarm state not saved: {0}")]
    Store(#[from] StoreError),
}

/// Settings of the state machine.
#[derive(Debug, Clone, Copy)]
pub struct AlarmSettings {
    /// Transitions within `flapping_window_ns` that make an alarm flapping.
    pub flapping_transitions: u32,
    /// Flapping window, ns.
    pub flapping_window_ns: i64,
    /// Longest shelving, ns.
    pub max_shelve_ns: i64,
}

impl AlarmSettings {
    /// From `[alarms]`.
    pub fn from_config(c: &crate::detect::config::AlarmsConfig) -> Self {
        let ns = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        AlarmSettings {
            flapping_transitions: c.flapping_transitions.max(2),
            flapping_window_ns: ns(c.flapping_window),
            max_shelve_ns: ns(c.max_shelve),
        }
    }
}

/// The current alarms and their lifecycle.
pub struct AlarmManager {
    settings: AlarmSettings,
    alarms: BTreeMap<(String, String), Alarm>,
    next_id: u64,
    store: Arc<dyn AlarmStore>,
    /// Keys of alarms changed since the last [`persist`](AlarmManager::persist): only these
    /// are written, so an alarm storm costs what changed, not the whole list per change.
    dirty: BTreeSet<(String, String)>,
    /// Ids of alarms that left the list since the last persist.
    removed: Vec<u64>,
}

impl AlarmManager {
    /// Loads the saved alarms from `store`.
    pub fn new(settings: AlarmSettings, store: Arc<dyn AlarmStore>) -> Result<Self, StoreError> {
        let saved = store.load()?;
        let next_id = saved.iter().map(|a| a.id).max().unwrap_or(0) + 1;
        let alarms = saved
            .into_iter()
            .map(|a| ((a.device.clone(), a.rule.clone()), a))
            .collect();
        Ok(AlarmManager {
            settings,
            alarms,
            next_id,
            store,
            dirty: BTreeSet::new(),
            removed: Vec::new(),
        })
    }

    /// Every current alarm (active, acknowledged, cleared-unacknowledged), oldest id first.
    pub fn list(&self) -> Vec<Alarm> {
        let mut v: Vec<Alarm> = self.alarms.values().cloned().collect();
        v.sort_by_key(|a| a.id);
        v
    }

    /// Alarms whose condition is present, for restoring the rule engine after a restart.
    pub fn active_conditions(&self) -> Vec<(String, String, Severity)> {
        self.alarms
            .values()
            .filter(|a| a.condition)
            .map(|a| (a.device.clone(), a.rule.clone(), a.severity))
            .collect()
    }

    /// Writes the alarms changed since the last call and forgets the removed ones; returns
    /// after the store made that durable. On failure the changes are kept for the next call.
    pub fn persist(&mut self) -> Result<(), StoreError> {
        if self.dirty.is_empty() && self.removed.is_empty() {
            return Ok(());
        }
        let changed: Vec<Alarm> = self
            .dirty
            .iter()
            .filter_map(|k| self.alarms.get(k))
            .cloned()
            .collect();
        self.store.save_changes(&changed, &self.removed)?;
        self.dirty.clear();
        self.removed.clear();
        Ok(())
    }

    fn save(&mut self) {
        if let Err(e) = self.persist() {
            tracing::error!(error = %e, "cannot save alarm state");
        }
    }

    fn remove(&mut self, key: &(String, String)) {
        if let Some(a) = self.alarms.remove(key) {
            self.removed.push(a.id);
        }
        self.dirty.remove(key);
    }

    fn note_transition(&mut self, key: &(String, String), at: Timestamp) -> bool {
        let window = self.settings.flapping_window_ns;
        let n = self.settings.flapping_transitions as usize;
        let Some(a) = self.alarms.get_mut(key) else {
            return false;
        };
        a.transitions.push_back(at);
        while a.transitions.front().is_some_and(|t| at - *t > window) {
            a.transitions.pop_front();
        }
        if !a.flapping && a.transitions.len() >= n {
            a.flapping = true;
            return true;
        }
        false
    }

    /// Applies one detection and saves the state; returns the resulting events.
    pub fn apply(&mut self, d: &Detection) -> Vec<AlarmEvent> {
        self.apply_all(std::slice::from_ref(d))
    }

    /// Applies detections in order and saves the state once (one store transaction for a
    /// burst of changes); returns the resulting events in order.
    pub fn apply_all(&mut self, detections: &[Detection]) -> Vec<AlarmEvent> {
        let events = detections.iter().flat_map(|d| self.apply_one(d)).collect();
        self.save();
        events
    }

    fn apply_one(&mut self, d: &Detection) -> Vec<AlarmEvent> {
        let key = (d.device.id.clone(), d.rule.id.to_string());
        let mut events = Vec::new();
        let ev = |kind, a: &Alarm, notify| AlarmEvent {
            kind,
            alarm: a.clone(),
            at: d.ts,
            reading_ts: Some(d.ts),
            notify: notify && !a.is_shelved(),
        };
        match d.change {
            Change::Raise | Change::Escalate => {
                let existing = self.alarms.contains_key(&key);
                if !existing {
                    let a = Alarm {
                        id: self.next_id,
                        device: d.device.id.clone(),
                        kind: d.device.kind.clone(),
                        site: d.device.site.clone(),
                        feeder: d.device.feeder.clone(),
                        location: d.device.location.clone(),
                        rule: d.rule.id.to_string(),
                        description: d.rule.description.clone(),
                        action: d.rule.action.clone(),
                        severity: d.severity,
                        state: AlarmState::Active,
                        value: d.value,
                        limit: d.limit,
                        unit: d.rule.unit.clone(),
                        since: d.ts,
                        last_change: d.ts,
                        cleared_at: None,
                        acked_at: None,
                        acked_by: None,
                        shelved_until: None,
                        shelved_by: None,
                        flapping: false,
                        condition: true,
                        transitions: VecDeque::new(),
                    };
                    self.next_id += 1;
                    self.alarms.insert(key.clone(), a);
                    self.note_transition(&key, d.ts);
                    if let Some(a) = self.alarms.get(&key) {
                        events.push(ev(EventKind::Raised, a, true));
                    }
                } else {
                    let started_flapping =
                        d.change == Change::Raise && self.note_transition(&key, d.ts);
                    let Some(a) = self.alarms.get_mut(&key) else {
                        return events;
                    };
                    let was_condition = a.condition;
                    a.condition = true;
                    a.value = d.value;
                    a.last_change = d.ts;
                    let escalated = d.severity > a.severity;
                    if escalated {
                        a.severity = d.severity;
                        a.limit = d.limit;
                    }
                    if a.state == AlarmState::ClearedUnacked {
                        a.state = AlarmState::Active;
                        a.cleared_at = None;
                        a.since = d.ts;
                        a.limit = d.limit;
                    }
                    if started_flapping {
                        events.push(ev(EventKind::Flapping, a, true));
                    } else if a.flapping {
                        // Chatter of a flapping alarm is not news.
                    } else if !was_condition {
                        events.push(ev(EventKind::Raised, a, true));
                    } else if escalated {
                        events.push(ev(EventKind::Escalated, a, true));
                    }
                }
            }
            Change::Clear => {
                if !self.alarms.contains_key(&key) {
                    return events;
                }
                self.note_transition(&key, d.ts);
                let Some(a) = self.alarms.get_mut(&key) else {
                    return events;
                };
                a.condition = false;
                a.value = d.value;
                a.last_change = d.ts;
                // A flapping alarm stays up until a quiet window passes (see `tick`).
                if !a.flapping {
                    let (evs, gone) = clear(a, d.ts, &mut |k, a| ev(k, a, true));
                    events.extend(evs);
                    if gone {
                        self.remove(&key);
                        return events;
                    }
                }
            }
        }
        if self.alarms.contains_key(&key) {
            self.dirty.insert(key);
        }
        events
    }

    /// Acknowledges alarm `id` at `now`.
    pub fn ack(
        &mut self,
        id: u64,
        by: Option<String>,
        now: Timestamp,
    ) -> Result<Vec<AlarmEvent>, AlarmError> {
        let key = self.key_of(id)?;
        let mut events = Vec::new();
        let Some(a) = self.alarms.get_mut(&key) else {
            return Err(AlarmError::NotFound(id));
        };
        a.acked_at = Some(now);
        a.acked_by = by;
        let op = |kind, a: &Alarm| AlarmEvent {
            kind,
            alarm: a.clone(),
            at: now,
            reading_ts: None,
            notify: true,
        };
        match a.state {
            AlarmState::ClearedUnacked => {
                events.push(op(EventKind::Acknowledged, a));
                events.push(op(EventKind::Removed, a));
                self.remove(&key);
            }
            AlarmState::Active | AlarmState::Acknowledged => {
                a.state = AlarmState::Acknowledged;
                events.push(op(EventKind::Acknowledged, a));
                self.dirty.insert(key);
            }
        }
        self.persist()?;
        Ok(events)
    }

    /// Shelves alarm `id` for `duration_ns` from `now`.
    pub fn shelve(
        &mut self,
        id: u64,
        duration_ns: i64,
        by: Option<String>,
        now: Timestamp,
    ) -> Result<Vec<AlarmEvent>, AlarmError> {
        if duration_ns <= 0 || duration_ns > self.settings.max_shelve_ns {
            return Err(AlarmError::BadShelve {
                max_s: (self.settings.max_shelve_ns / 1_000_000_000) as u64,
            });
        }
        let key = self.key_of(id)?;
        let Some(a) = self.alarms.get_mut(&key) else {
            return Err(AlarmError::NotFound(id));
        };
        a.shelved_until = Some(now.saturating_add(duration_ns));
        a.shelved_by = by;
        let e = AlarmEvent {
            kind: EventKind::Shelved,
            alarm: a.clone(),
            at: now,
            reading_ts: None,
            notify: true,
        };
        self.dirty.insert(key);
        self.persist()?;
        Ok(vec![e])
    }

    fn key_of(&self, id: u64) -> Result<(String, String), AlarmError> {
        self.alarms
            .iter()
            .find(|(_, a)| a.id == id)
            .map(|(k, _)| k.clone())
            .ok_or(AlarmError::NotFound(id))
    }

    /// Time-driven changes at `now`: shelves expire, flapping alarms settle.
    pub fn tick(&mut self, now: Timestamp) -> Vec<AlarmEvent> {
        let mut events = Vec::new();
        let window = self.settings.flapping_window_ns;
        let mut remove = Vec::new();
        let mut changed = Vec::new();
        for (key, a) in self.alarms.iter_mut() {
            let op = |kind, a: &Alarm, notify: bool| AlarmEvent {
                kind,
                alarm: a.clone(),
                at: now,
                reading_ts: None,
                notify,
            };
            if a.shelved_until.is_some_and(|t| now >= t) {
                changed.push(key.clone());
                a.shelved_until = None;
                a.shelved_by = None;
                if a.condition {
                    events.push(op(EventKind::Unshelved, a, true));
                }
            }
            if a.flapping && now - a.last_change >= window {
                changed.push(key.clone());
                a.flapping = false;
                a.transitions.clear();
                if !a.condition {
                    let (evs, gone) = clear(a, now, &mut |k, a| op(k, a, !a.is_shelved()));
                    events.extend(evs);
                    if gone {
                        remove.push(key.clone());
                    }
                }
            }
        }
        self.dirty.extend(changed);
        for k in &remove {
            self.remove(k);
        }
        self.save();
        events
    }
}

/// Clears `a`; returns the events and whether it leaves the list (it was acknowledged).
fn clear(
    a: &mut Alarm,
    at: Timestamp,
    ev: &mut dyn FnMut(EventKind, &Alarm) -> AlarmEvent,
) -> (Vec<AlarmEvent>, bool) {
    a.cleared_at = Some(at);
    if a.state == AlarmState::Acknowledged {
        (
            vec![ev(EventKind::Cleared, a), ev(EventKind::Removed, a)],
            true,
        )
    } else {
        a.state = AlarmState::ClearedUnacked;
        (vec![ev(EventKind::Cleared, a)], false)
    }
}

#[cfg(test)]
mod tests;
