//! Timed fault scenarios: a TOML list of faults that start and end at offsets from the start
//! of the run, applied to a running simulator.
//!
//! ```toml
//! [[faults]]
//! unit = 3
//! kind = "dead"
//! at = "10s"
//! for = "20s"      # optional: without it the fault stays
//!
//! [[faults]]
//! unit = 5
//! kind = "phase_loss"
//! phase = "b"
//! at = "1m"
//! ```

use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    ModbusSimHandle,
    model::{Fault, Phase},
};

/// Errors from reading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not valid scenario TOML.
    #[error("scenario: {0}")]
    Toml(#[from] toml::de::Error),
    /// An entry is inconsistent.
    #[error("scenario fault #{index} (unit {unit}): {reason}")]
    Invalid {
        /// Position in the file, from 1.
        index: usize,
        /// The entry's unit.
        unit: u8,
        /// What is wrong.
        reason: String,
    },
}

/// Fault kinds as written in scenario files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// [`Fault::OverTemperature`].
    OverTemperature,
    /// [`Fault::Overload`].
    Overload,
    /// [`Fault::UnderVoltage`].
    UnderVoltage,
    /// [`Fault::OverVoltage`].
    OverVoltage,
    /// [`Fault::PhaseLoss`], needs `phase`.
    PhaseLoss,
    /// [`Fault::Dead`].
    Dead,
    /// [`Fault::Exception`], needs `code`.
    Exception,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultEntry {
    unit: u8,
    kind: FaultKind,
    #[serde(with = "humantime_serde_compat")]
    at: Duration,
    #[serde(rename = "for", default, with = "humantime_serde_compat::option")]
    duration: Option<Duration>,
    #[serde(default)]
    phase: Option<Phase>,
    #[serde(default)]
    code: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    #[serde(default)]
    faults: Vec<FaultEntry>,
}

/// One timed fault.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedFault {
    /// Unit id.
    pub unit: u8,
    /// The fault.
    pub fault: Fault,
    /// When it starts, from the start of the run.
    pub at: Duration,
    /// How long it lasts; `None` = until the end.
    pub duration: Option<Duration>,
}

/// A list of timed faults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scenario {
    /// Faults in file order.
    pub faults: Vec<TimedFault>,
}

impl Scenario {
    /// Parses scenario TOML.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let file: ScenarioFile = toml::from_str(text)?;
        let mut faults = Vec::with_capacity(file.faults.len());
        for (i, e) in file.faults.into_iter().enumerate() {
            let invalid = |reason: &str| ScenarioError::Invalid {
                index: i + 1,
                unit: e.unit,
                reason: reason.to_owned(),
            };
            if e.phase.is_some() && e.kind != FaultKind::PhaseLoss {
                return Err(invalid("`phase` only applies to phase_loss"));
            }
            if e.code.is_some() && e.kind != FaultKind::Exception {
                return Err(invalid("`code` only applies to exception"));
            }
            let fault = match e.kind {
                FaultKind::OverTemperature => Fault::OverTemperature,
                FaultKind::Overload => Fault::Overload,
                FaultKind::UnderVoltage => Fault::UnderVoltage,
                FaultKind::OverVoltage => Fault::OverVoltage,
                FaultKind::Dead => Fault::Dead,
                FaultKind::PhaseLoss => {
                    Fault::PhaseLoss(e.phase.ok_or_else(|| invalid("phase_loss needs `phase`"))?)
                }
                FaultKind::Exception => {
                    Fault::Exception(e.code.ok_or_else(|| invalid("exception needs `code`"))?)
                }
            };
            faults.push(TimedFault {
                unit: e.unit,
                fault,
                at: e.at,
                duration: e.duration,
            });
        }
        Ok(Scenario { faults })
    }

    /// Applies the faults to `sim` at their times, counted from now, until all have ended
    /// or `cancel` fires. Overlapping faults on one unit: the later start wins, and a clear
    /// only removes the fault it set.
    pub async fn run(&self, sim: &ModbusSimHandle, cancel: CancellationToken) {
        // (offset, index, set?) events in time order; a clear sorts before a set at the same
        // instant so back-to-back faults hand over cleanly.
        let mut events: Vec<(Duration, bool, usize)> = Vec::new();
        for (i, f) in self.faults.iter().enumerate() {
            events.push((f.at, true, i));
            if let Some(d) = f.duration {
                events.push((f.at + d, false, i));
            }
        }
        events.sort_by_key(|&(t, set, i)| (t, set, i));
        let start = tokio::time::Instant::now();
        for (t, set, i) in events {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep_until(start + t) => {}
            }
            let f = &self.faults[i];
            if set {
                sim.set_fault(f.unit, f.fault);
            } else if sim.fault(f.unit) == Some(f.fault) {
                sim.clear_fault(f.unit);
            }
        }
    }
}

/// Serde adapters for humantime strings ("10s", "1m 30s").
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_example() {
        let s = Scenario::parse(
            r#"
            [[faults]]
            unit = 3
            kind = "dead"
            at = "10s"
            for = "20s"

            [[faults]]
            unit = 5
            kind = "phase_loss"
            phase = "b"
            at = "1m"

            [[faults]]
            unit = 6
            kind = "exception"
            code = 11
            at = "0s"
            "#,
        )
        .unwrap();
        assert_eq!(s.faults.len(), 3);
        assert_eq!(s.faults[0].fault, Fault::Dead);
        assert_eq!(s.faults[0].at, Duration::from_secs(10));
        assert_eq!(s.faults[0].duration, Some(Duration::from_secs(20)));
        assert_eq!(s.faults[1].fault, Fault::PhaseLoss(Phase::B));
        assert_eq!(s.faults[1].duration, None);
        assert_eq!(s.faults[2].fault, Fault::Exception(0x0B));
    }

    #[test]
    fn rejects_missing_phase_and_unknown_keys() {
        let e = Scenario::parse("[[faults]]\nunit = 1\nkind = \"phase_loss\"\nat = \"1s\"\n");
        assert!(e.is_err());
        let e = Scenario::parse("[[faults]]\nunit = 1\nkind = \"dead\"\nat = \"1s\"\nbogus = 1\n");
        assert!(e.is_err());
    }
}
