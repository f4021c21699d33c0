//! The arithmetic of the KPIs, free of state and I/O so the unit tests can check it against
//! hand-computed references: time-based compliance, IEEE 1366 reliability indices and RS-1,
//! transformer loading and loss of life.

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

const NS_PER_S: f64 = 1e9;

/// Where a sample sits against a band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Inside the band.
    Within,
    /// Above it.
    Over,
    /// Below it.
    Under,
}

/// Monitored time against a band, seconds (kept separately, as monitors do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Band {
    /// Time above the band.
    pub t_over: f64,
    /// Time below the band.
    pub t_under: f64,
    /// Monitored time.
    pub t_total: f64,
}

impl Band {
    /// Adds `secs` of time in `class`.
    pub fn record(&mut self, class: Class, secs: f64) {
        self.t_total += secs;
        match class {
            Class::Over => self.t_over += secs,
            Class::Under => self.t_under += secs,
            Class::Within => {}
        }
    }

    /// Sums another period into this one.
    pub fn add(&mut self, o: &Band) {
        self.t_over += o.t_over;
        self.t_under += o.t_under;
        self.t_total += o.t_total;
    }

    /// Compliance rate in % = (1 − (T_over + T_under) / T_total) × 100; `None` without
    /// monitored time.
    pub fn rate_pct(&self) -> Option<f64> {
        (self.t_total > 0.0).then(|| (1.0 - (self.t_over + self.t_under) / self.t_total) * 100.0)
    }
}

/// A voltage sample against a band given in % of nominal (`low` negative). With phases on
/// both sides, the larger deviation decides.
pub fn classify_voltage(phases: &[f64], nominal: f64, (low, high): (f64, f64)) -> Class {
    let dev = |v: f64| (v - nominal) / nominal * 100.0;
    let max = phases
        .iter()
        .copied()
        .map(dev)
        .fold(f64::NEG_INFINITY, f64::max);
    let min = phases
        .iter()
        .copied()
        .map(dev)
        .fold(f64::INFINITY, f64::min);
    match (max > high, min < low) {
        (true, true) if max - high >= low - min => Class::Over,
        (true, true) => Class::Under,
        (true, false) => Class::Over,
        (false, true) => Class::Under,
        (false, false) => Class::Within,
    }
}

/// A frequency sample against `nominal ± band`.
pub fn classify_frequency(f: f64, nominal: f64, band: f64) -> Class {
    if f > nominal + band {
        Class::Over
    } else if f < nominal - band {
        Class::Under
    } else {
        Class::Within
    }
}

/// Transformer loading over a period (time-weighted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Loading {
    /// Time with a load figure, s.
    pub t: f64,
    /// ∫ load % dt, %·s (average = this / `t`).
    pub load_pct_s: f64,
    /// Highest load %.
    pub peak_pct: f64,
    /// Time above 100 % of rating, s.
    pub t_over_100: f64,
    /// Σ F_AA·Δt (IEEE C57.91), hours of normal life consumed.
    pub loss_of_life_h: f64,
    /// Σ V·Δt (IEC 60076-7 relative ageing), hours.
    pub ageing_iec_h: f64,
}

impl Loading {
    /// Adds `secs` at `load_pct` and (when known) hot-spot `theta_h` °C; `iec_reference` is
    /// the hot-spot of relative ageing 1 (98 °C for non-upgraded paper).
    pub fn record(&mut self, load_pct: f64, theta_h: Option<f64>, iec_reference: f64, secs: f64) {
        self.t += secs;
        self.load_pct_s += load_pct * secs;
        self.peak_pct = self.peak_pct.max(load_pct);
        if load_pct > 100.0 {
            self.t_over_100 += secs;
        }
        if let Some(h) = theta_h {
            self.loss_of_life_h += crate::detect::derived::ageing_factor_ieee(h) * secs / 3600.0;
            self.ageing_iec_h +=
                crate::detect::derived::ageing_factor_iec(h, iec_reference) * secs / 3600.0;
        }
    }

    /// Sums another period into this one.
    pub fn add(&mut self, o: &Loading) {
        self.t += o.t;
        self.load_pct_s += o.load_pct_s;
        self.peak_pct = self.peak_pct.max(o.peak_pct);
        self.t_over_100 += o.t_over_100;
        self.loss_of_life_h += o.loss_of_life_h;
        self.ageing_iec_h += o.ageing_iec_h;
    }

    /// Time-weighted average load %.
    pub fn average_pct(&self) -> Option<f64> {
        (self.t > 0.0).then(|| self.load_pct_s / self.t)
    }
}

/// One supply interruption of one meter (or transformer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interruption {
    /// Device id.
    pub device: String,
    /// Start, ns.
    pub start: Timestamp,
    /// End (restoration), ns.
    pub end: Timestamp,
    /// Customers supplied through the device.
    pub customers: u32,
    /// Why it was recorded (`voltage`, `last_gasp`, `located`, ...).
    pub cause: String,
}

/// IEEE 1366 indices and RS-1 over a period for a set of customers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Reliability {
    /// Customers served (the denominator).
    pub customers_served: u64,
    /// Σ customers interrupted by sustained interruptions.
    pub customer_interruptions: u64,
    /// Σ customer minutes of sustained interruptions.
    pub customer_minutes: f64,
    /// Σ customers interrupted by momentary interruptions.
    pub momentary_customer_interruptions: u64,
    /// Sustained interruption events (after merging overlaps per device).
    pub sustained_events: u64,
    /// Momentary interruption events.
    pub momentary_events: u64,
    /// System average interruption frequency index.
    pub saifi: f64,
    /// System average interruption duration index, minutes.
    pub saidi_min: f64,
    /// Customer average interruption duration index, minutes (`None` without interruptions).
    pub caidi_min: Option<f64>,
    /// Momentary average interruption frequency index.
    pub maifi: f64,
    /// Supply reliability RS-1 (DL/T 836), %: every interruption counts, momentary too.
    pub rs1_pct: f64,
    /// Hours in the period.
    pub period_h: f64,
}

/// The indices for `customers_served` customers over `[from, to)` from the interruptions of
/// the devices in scope. Interruptions are clipped to the period, and overlapping records of
/// one device (e.g. one from its own readings and one from fault localisation) are merged,
/// so nothing counts twice. Sustained means at least `momentary_limit_ns` long.
pub fn reliability(
    interruptions: &[Interruption],
    customers_served: u64,
    from: Timestamp,
    to: Timestamp,
    momentary_limit_ns: i64,
) -> Reliability {
    let period_h = (to - from).max(0) as f64 / NS_PER_S / 3600.0;
    let mut r = Reliability {
        customers_served,
        period_h,
        rs1_pct: 100.0,
        ..Reliability::default()
    };
    let mut by_device: std::collections::BTreeMap<&str, Vec<(Timestamp, Timestamp, u32)>> =
        std::collections::BTreeMap::new();
    for i in interruptions {
        let (s, e) = (i.start.max(from), i.end.min(to));
        if e > s {
            by_device
                .entry(i.device.as_str())
                .or_default()
                .push((s, e, i.customers));
        }
    }
    let mut all_customer_h = 0.0;
    for list in by_device.values_mut() {
        list.sort_unstable();
        let mut merged: Vec<(Timestamp, Timestamp, u32)> = Vec::new();
        for &(s, e, c) in list.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1 => {
                    last.1 = last.1.max(e);
                    last.2 = last.2.max(c);
                }
                _ => merged.push((s, e, c)),
            }
        }
        for (s, e, c) in merged {
            let c64 = u64::from(c);
            let dur_ns = e - s;
            all_customer_h += c as f64 * dur_ns as f64 / NS_PER_S / 3600.0;
            if dur_ns >= momentary_limit_ns {
                r.sustained_events += 1;
                r.customer_interruptions += c64;
                r.customer_minutes += c as f64 * dur_ns as f64 / NS_PER_S / 60.0;
            } else {
                r.momentary_events += 1;
                r.momentary_customer_interruptions += c64;
            }
        }
    }
    if customers_served > 0 {
        let n = customers_served as f64;
        r.saifi = r.customer_interruptions as f64 / n;
        r.saidi_min = r.customer_minutes / n;
        r.caidi_min = (r.saifi > 0.0).then(|| r.saidi_min / r.saifi);
        r.maifi = r.momentary_customer_interruptions as f64 / n;
        if period_h > 0.0 {
            r.rs1_pct = (1.0 - all_customer_h / n / period_h) * 100.0;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    const MIN: i64 = 60 * S;

    #[test]
    fn a_day_with_known_over_and_under_time_gives_the_exact_rate() {
        // 24 h monitored: 30 min over, 1 h 30 min under → 1 − 2/24 = 91.666…%.
        let mut b = Band::default();
        b.record(Class::Over, 1800.0);
        b.record(Class::Under, 5400.0);
        b.record(Class::Within, 86_400.0 - 7200.0);
        assert_eq!(b.t_total, 86_400.0);
        let rate = b.rate_pct().unwrap_or(f64::NAN);
        assert!(
            (rate - (1.0 - 7200.0 / 86_400.0) * 100.0).abs() < 1e-12,
            "{rate}"
        );
        assert_eq!(Band::default().rate_pct(), None);
    }

    #[test]
    fn voltage_and_frequency_classes() {
        let gb = (-10.0, 7.0);
        assert_eq!(
            classify_voltage(&[230.0, 231.0, 229.0], 230.0, gb),
            Class::Within
        );
        // 246.2 V = +7.04 %.
        assert_eq!(
            classify_voltage(&[246.2, 230.0, 230.0], 230.0, gb),
            Class::Over
        );
        assert_eq!(
            classify_voltage(&[230.0, 206.0, 230.0], 230.0, gb),
            Class::Under
        );
        // +8 % and −20 %: the larger deviation past its limit (3 % vs 10 %) decides.
        assert_eq!(
            classify_voltage(&[248.4, 184.0, 230.0], 230.0, gb),
            Class::Under
        );
        assert_eq!(classify_frequency(50.25, 50.0, 0.2), Class::Over);
        assert_eq!(classify_frequency(49.85, 50.0, 0.2), Class::Within);
    }

    #[test]
    fn interruptions_give_the_exact_ieee_1366_indices_and_rs1() {
        // 100 customers served over 30 days (720 h):
        // - A (10 customers): 90 min sustained;
        // - B (5 customers): 2 min momentary;
        // - C (20 customers): 30 min sustained, recorded twice with an overlap (from its
        //   readings 0–20 min and from localisation 10–30 min) → one 30-min event;
        // - D (1 customer): 10 min, half of it before the period → 5 min, sustained.
        let from = 0;
        let to = 720 * 60 * MIN;
        let i = |d: &str, s: i64, e: i64, c: u32| Interruption {
            device: d.into(),
            start: s,
            end: e,
            customers: c,
            cause: "test".into(),
        };
        let list = [
            i("A", 100 * MIN, 190 * MIN, 10),
            i("B", 200 * MIN, 202 * MIN, 5),
            i("C", 300 * MIN, 320 * MIN, 20),
            i("C", 310 * MIN, 330 * MIN, 20),
            i("D", -5 * MIN, 5 * MIN, 1),
        ];
        let r = reliability(&list, 100, from, to, 5 * MIN);
        // Sustained: A 10 cust × 90 min, C 20 × 30, D 1 × 5 → 31 customers, 1505 min.
        assert_eq!(r.sustained_events, 3);
        assert_eq!(r.customer_interruptions, 31);
        assert!((r.customer_minutes - 1505.0).abs() < 1e-9);
        assert!((r.saifi - 0.31).abs() < 1e-12);
        assert!((r.saidi_min - 15.05).abs() < 1e-12);
        assert!((r.caidi_min.unwrap_or(0.0) - 15.05 / 0.31).abs() < 1e-9);
        // Momentary: B, 5 customers.
        assert_eq!(r.momentary_events, 1);
        assert!((r.maifi - 0.05).abs() < 1e-12);
        // RS-1: all customer hours (1505 + 5 × 2 min = 1515 min = 25.25 h) / 100 / 720 h.
        let rs1 = (1.0 - 25.25 / 100.0 / 720.0) * 100.0;
        assert!((r.rs1_pct - rs1).abs() < 1e-9, "{} vs {rs1}", r.rs1_pct);
    }

    #[test]
    fn a_load_profile_gives_the_loss_of_life_of_the_formula() {
        // 2 h at 80 % load with hot-spot 98 °C, then 1 h at 130 % with hot-spot 120 °C.
        let mut l = Loading::default();
        l.record(80.0, Some(98.0), 98.0, 7200.0);
        l.record(130.0, Some(120.0), 98.0, 3600.0);
        // IEEE C57.91: F_AA = exp(15000/383 − 15000/(θH + 273)).
        let faa = |h: f64| (15000.0 / 383.0 - 15000.0 / (h + 273.0)).exp();
        let expect = faa(98.0) * 2.0 + faa(120.0) * 1.0;
        assert!(
            (l.loss_of_life_h - expect).abs() < 1e-9,
            "{}",
            l.loss_of_life_h
        );
        // F_AA(110 °C) = 1 by definition; F_AA(120 °C) ≈ 2.7.
        assert!((faa(110.0) - 1.0).abs() < 1e-12);
        // IEC: V = 2^((θH − 98)/6): 2 h × 1 + 1 h × 2^(22/6).
        let iec = 2.0 + 2f64.powf(22.0 / 6.0);
        assert!((l.ageing_iec_h - iec).abs() < 1e-9);
        assert_eq!(l.peak_pct, 130.0);
        assert_eq!(l.t_over_100, 3600.0);
        assert!((l.average_pct().unwrap_or(0.0) - (80.0 * 2.0 + 130.0) / 3.0).abs() < 1e-12);
    }
}
