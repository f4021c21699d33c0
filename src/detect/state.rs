//! Per-(device, rule) state: hysteresis with per-level delays, rate windows, EWMA, stuck
//! counters. Everything runs on the timestamps it is given (reading time, or the wall clock
//! for staleness), never on a clock of its own, so replays and tests are exact.

use std::collections::VecDeque;

use super::config::{Direction, Severity};
use crate::model::Timestamp;

/// One resolved severity level.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedLevel {
    /// Severity when this level is reached.
    pub severity: Severity,
    /// Value at which the level is reached.
    pub raise: f64,
    /// Value at which the alarm clears (only the lowest level's matters).
    pub clear: f64,
    /// How long `raise` must hold, ns.
    pub delay_ns: i64,
}

/// What a tracker reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// The alarm starts at this level.
    Raise {
        /// Index into the levels.
        level: usize,
    },
    /// An active alarm reached a higher severity.
    Escalate {
        /// Index into the levels.
        level: usize,
    },
    /// The alarm condition is gone.
    Clear {
        /// The level the alarm had.
        level: usize,
    },
}

/// Hysteresis and delay-on/off over a list of levels.
///
/// Each level's raise condition must hold for its own delay; the highest qualified level
/// is the severity. Severity only goes up while active (ISA-18.2 practice: an alarm does
/// not quietly downgrade). The alarm clears when the value is past the lowest level's
/// `clear` value for `delay_off`.
#[derive(Debug, Clone, Default)]
pub struct LevelTracker {
    held_since: Vec<Option<Timestamp>>,
    active: Option<usize>,
    clear_since: Option<Timestamp>,
}

impl LevelTracker {
    /// The active level, if the alarm is raised.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// Whether any level's raise condition currently holds (pending or active).
    pub fn condition(&self) -> bool {
        self.active.is_some() || self.held_since.iter().any(Option::is_some)
    }

    /// Marks the alarm active (restored after a restart) so it clears through hysteresis.
    pub fn restore(&mut self, level: usize) {
        self.active = Some(level);
    }

    /// Feeds one value at `ts`.
    pub fn update(
        &mut self,
        ts: Timestamp,
        x: f64,
        levels: &[ResolvedLevel],
        dir: Direction,
        delay_off_ns: i64,
    ) -> Option<Transition> {
        let beyond = |v: f64, limit: f64| match dir {
            Direction::Above => v >= limit,
            Direction::Below => v <= limit,
        };
        self.held_since.resize(levels.len(), None);
        for (held, level) in self.held_since.iter_mut().zip(levels) {
            if beyond(x, level.raise) {
                held.get_or_insert(ts);
            } else {
                *held = None;
            }
        }
        let qualified = self
            .held_since
            .iter()
            .zip(levels)
            .enumerate()
            .filter(|(_, (held, l))| held.is_some_and(|t| ts - t >= l.delay_ns))
            .map(|(i, _)| i)
            .max_by_key(|i| (levels[*i].severity, *i));
        match self.active {
            None => {
                let level = qualified?;
                self.active = Some(level);
                self.clear_since = None;
                Some(Transition::Raise { level })
            }
            Some(a) => {
                let clear_at = levels.first().map(|l| l.clear).unwrap_or(f64::NAN);
                // Past the clear value means "not beyond" it in the alarm direction.
                let gone = match dir {
                    Direction::Above => x < clear_at,
                    Direction::Below => x > clear_at,
                };
                if gone {
                    let since = *self.clear_since.get_or_insert(ts);
                    if ts - since >= delay_off_ns {
                        self.active = None;
                        self.clear_since = None;
                        return Some(Transition::Clear { level: a });
                    }
                    return None;
                }
                self.clear_since = None;
                match qualified {
                    Some(q) if levels[q].severity > levels.get(a).map(|l| l.severity)? => {
                        self.active = Some(q);
                        Some(Transition::Escalate { level: q })
                    }
                    _ => None,
                }
            }
        }
    }

    /// The condition is known not to hold (suppressed, or the quantity is normal by
    /// definition): pending delays reset and an active alarm clears after `delay_off`.
    pub fn update_normal(&mut self, ts: Timestamp, delay_off_ns: i64) -> Option<Transition> {
        self.held_since.iter_mut().for_each(|h| *h = None);
        let level = self.active?;
        let since = *self.clear_since.get_or_insert(ts);
        if ts - since >= delay_off_ns {
            self.active = None;
            self.clear_since = None;
            return Some(Transition::Clear { level });
        }
        None
    }
}

/// Rise of a value over a sliding time window.
///
/// Keeps only the samples that can still be the window's minimum (each later sample is
/// higher than the one before it): a flat or noisy series holds a handful, where keeping
/// every sample held the whole window (600 samples a device for 10 min at 1 s). A steady
/// rise, the case the rule is for, still keeps one sample per poll.
#[derive(Debug, Clone, Default)]
pub struct RateWindow {
    minima: VecDeque<(Timestamp, f64)>,
}

impl RateWindow {
    /// Adds a sample and returns the rise over the window: the value now minus the lowest
    /// value within the window (so a rise is seen even if it started mid-window).
    pub fn update(&mut self, ts: Timestamp, v: f64, window_ns: i64) -> f64 {
        // A sample at or above the new one can never be the minimum again: the new one is
        // lower and stays in the window longer.
        while self.minima.back().is_some_and(|(_, b)| *b >= v) {
            self.minima.pop_back();
        }
        self.minima.push_back((ts, v));
        while self
            .minima
            .front()
            .is_some_and(|(t, _)| ts - *t > window_ns)
        {
            self.minima.pop_front();
        }
        let min = self.minima.front().map_or(v, |(_, m)| *m);
        v - min
    }
}

/// Exponentially weighted mean and variance of one series, with a warm-up count.
#[derive(Debug, Clone, Default)]
pub struct Ewma {
    mean: f64,
    var: f64,
    n: u32,
}

impl Ewma {
    /// Scores `v` against the statistics so far, then folds it in. Returns |z| once
    /// `warmup` samples were seen and |v − mean| ≥ `min_dev`, else 0.
    pub fn update(&mut self, v: f64, alpha: f64, warmup: u32, min_dev: f64) -> f64 {
        let score = if self.n >= warmup && self.n > 1 {
            let dev = (v - self.mean).abs();
            let sd = self.var.sqrt();
            if dev < min_dev {
                0.0
            } else if sd > 0.0 {
                dev / sd
            } else {
                f64::INFINITY
            }
        } else {
            0.0
        };
        if self.n == 0 {
            self.mean = v;
            self.var = 0.0;
        } else {
            // West's incremental EWMA variance.
            let diff = v - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.n = self.n.saturating_add(1);
        score
    }
}

/// Count of consecutive identical non-zero values.
#[derive(Debug, Clone, Default)]
pub struct StuckCounter {
    last: Option<f64>,
    count: u32,
}

impl StuckCounter {
    /// Feeds a value and returns how many consecutive reads had this same non-zero value.
    pub fn update(&mut self, v: f64) -> f64 {
        if v != 0.0 && self.last == Some(v) {
            self.count = self.count.saturating_add(1);
        } else {
            self.count = u32::from(v != 0.0);
        }
        self.last = Some(v);
        f64::from(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn levels() -> Vec<ResolvedLevel> {
        vec![
            ResolvedLevel {
                severity: Severity::Warning,
                raise: 85.0,
                clear: 80.0,
                delay_ns: 10 * S,
            },
            ResolvedLevel {
                severity: Severity::Critical,
                raise: 95.0,
                clear: 90.0,
                delay_ns: 10 * S,
            },
        ]
    }

    #[test]
    fn hysteresis_raises_at_x_and_clears_only_below_y() {
        let l = levels();
        let mut t = LevelTracker::default();
        let up =
            |t: &mut LevelTracker, ts: i64, x: f64| t.update(ts * S, x, &l, Direction::Above, 0);
        assert_eq!(up(&mut t, 0, 86.0), None); // delay-on starts
        assert_eq!(up(&mut t, 10, 86.0), Some(Transition::Raise { level: 0 }));
        // Between clear (80) and raise (85): stays active.
        assert_eq!(up(&mut t, 11, 82.0), None);
        assert_eq!(t.active(), Some(0));
        assert_eq!(up(&mut t, 12, 79.9), Some(Transition::Clear { level: 0 }));
        // Below raise again: nothing.
        assert_eq!(up(&mut t, 13, 84.9), None);
        assert_eq!(t.active(), None);
    }

    #[test]
    fn delay_on_needs_the_condition_to_hold_without_a_gap() {
        let l = levels();
        let mut t = LevelTracker::default();
        let mut up = |ts: i64, x: f64| t.update(ts * S, x, &l, Direction::Above, 0);
        assert_eq!(up(0, 90.0), None);
        assert_eq!(up(9, 90.0), None);
        assert_eq!(up(10, 84.0), None); // gap resets the timer
        assert_eq!(up(11, 90.0), None);
        assert_eq!(up(20, 90.0), None);
        assert_eq!(up(21, 90.0), Some(Transition::Raise { level: 0 }));
    }

    #[test]
    fn delay_off_and_escalation() {
        let l = levels();
        let mut t = LevelTracker::default();
        let mut up = |ts: i64, x: f64| t.update(ts * S, x, &l, Direction::Above, 30 * S);
        assert_eq!(up(0, 100.0), None);
        // Both levels qualify at once: raised straight at critical.
        assert_eq!(up(10, 100.0), Some(Transition::Raise { level: 1 }));
        assert_eq!(up(20, 70.0), None); // delay-off starts
        assert_eq!(up(40, 86.0), None); // condition back: delay-off resets
        assert_eq!(up(41, 70.0), None);
        assert_eq!(up(70, 70.0), None);
        assert_eq!(up(71, 70.0), Some(Transition::Clear { level: 1 }));

        let mut t = LevelTracker::default();
        let mut up = |ts: i64, x: f64| t.update(ts * S, x, &l, Direction::Above, 0);
        up(0, 88.0);
        assert_eq!(up(10, 88.0), Some(Transition::Raise { level: 0 }));
        assert_eq!(up(11, 96.0), None);
        assert_eq!(up(21, 96.0), Some(Transition::Escalate { level: 1 }));
        // Severity does not drop while active.
        assert_eq!(up(30, 86.0), None);
    }

    #[test]
    fn below_direction() {
        let l = vec![ResolvedLevel {
            severity: Severity::Warning,
            raise: -10.0,
            clear: -8.0,
            delay_ns: 0,
        }];
        let mut t = LevelTracker::default();
        assert_eq!(
            t.update(0, -15.0, &l, Direction::Below, 0),
            Some(Transition::Raise { level: 0 })
        );
        assert_eq!(t.update(S, -9.0, &l, Direction::Below, 0), None);
        assert_eq!(
            t.update(2 * S, -7.0, &l, Direction::Below, 0),
            Some(Transition::Clear { level: 0 })
        );
    }

    proptest::proptest! {
        /// Same rise as keeping every sample of the window and taking their minimum.
        #[test]
        fn rate_window_matches_the_full_window(
            steps in proptest::collection::vec((1i64..120, -50i32..50), 1..400),
            window_s in 1i64..900,
        ) {
            let mut fast = RateWindow::default();
            let mut all: Vec<(Timestamp, f64)> = Vec::new();
            let (mut ts, window) = (0i64, window_s * S);
            for (dt, dv) in steps {
                ts += dt * S;
                let v = 60.0 + f64::from(dv) / 10.0;
                all.push((ts, v));
                let min = all
                    .iter()
                    .filter(|(t, _)| ts - *t <= window)
                    .map(|(_, x)| *x)
                    .fold(f64::INFINITY, f64::min);
                proptest::prop_assert_eq!(fast.update(ts, v, window), v - min);
            }
        }
    }

    #[test]
    fn rate_window_and_stuck_and_ewma() {
        let mut r = RateWindow::default();
        assert_eq!(r.update(0, 50.0, 600 * S), 0.0);
        assert_eq!(r.update(300 * S, 53.0, 600 * S), 3.0);
        assert_eq!(r.update(600 * S, 56.0, 600 * S), 6.0);
        // The 50 °C sample is now older than the window.
        assert_eq!(r.update(601 * S, 56.0, 600 * S), 3.0);

        let mut s = StuckCounter::default();
        assert_eq!(s.update(5.0), 1.0);
        assert_eq!(s.update(5.0), 2.0);
        assert_eq!(s.update(5.0), 3.0);
        assert_eq!(s.update(0.0), 0.0);
        assert_eq!(s.update(0.0), 0.0);

        let mut e = Ewma::default();
        for i in 0..200 {
            let v = 60.0 + if i % 2 == 0 { 1.0 } else { -1.0 };
            // Warm-up, then within the noise: never flagged.
            assert_eq!(e.update(v, 0.05, 100, 5.0), 0.0);
        }
        // Inside the fixed limits but far from this series' normal: flagged.
        assert!(e.update(70.0, 0.05, 100, 5.0) > 4.0);
        // Below the minimum absolute deviation: never flagged.
        assert_eq!(e.update(63.0, 0.05, 100, 5.0), 0.0);
    }
}
