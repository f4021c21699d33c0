//! Quantities computed from one reading and its device's ratings: pure functions over values.
//!
//! The rule engine asks for a quantity by name; a name in [`DERIVED`] is computed here, any
//! other name is looked up in the reading. Every function returns `None` when an input is
//! missing, so a rule on a quantity a device cannot provide simply never fires.

use crate::model::{Known, Reading};

/// The derived quantities by the name a rule's `field` gives them.
pub const DERIVED: &[(&str, Derived)] = &[
    ("load_pct", Derived::LoadPct),
    ("current_unbalance_pct", Derived::CurrentUnbalancePct),
    ("voltage_unbalance_pct", Derived::VoltageUnbalancePct),
    ("voltage_dev_max_pct", Derived::VoltageDevMaxPct),
    ("voltage_dev_min_pct", Derived::VoltageDevMinPct),
    ("phases_lost", Derived::PhasesLost),
    ("neutral_loss_pct", Derived::NeutralLossPct),
    ("frequency_dev_hz", Derived::FrequencyDevHz),
    ("hot_spot_est", Derived::HotSpotEst),
    ("ageing_factor", Derived::AgeingFactor),
    ("clock_drift_s", Derived::ClockDriftS),
];

/// A phase whose voltage is below this fraction of nominal is "lost" (open conductor or
/// blown fuse: only a volt or so is induced), and is left out of the band and unbalance
/// checks so one fault raises one alarm.
pub const LOST_PHASE_PU: f64 = 0.5;
/// A phase above this fraction of nominal counts as "present" for the phase-loss pattern.
pub const PRESENT_PHASE_PU: f64 = 0.8;

/// Transformer thermal constants used by the hot-spot estimate (IEC 60076-7 ONAN defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalParams {
    /// Hot-spot to top-oil gradient at rated current, K (IEC 60076-7 ONAN: H·g_r = 1.1 × 20 ≈ 22).
    #[serde(default = "default_gradient")]
    pub hot_spot_gradient_k: f64,
    /// Winding exponent y (IEC 60076-7 ONAN: 1.6).
    #[serde(default = "default_winding_exponent")]
    pub winding_exponent: f64,
    /// Hot-spot temperature of unit ageing, °C (IEC non-upgraded paper: 98).
    #[serde(default = "default_ref_hot_spot")]
    pub reference_hot_spot_c: f64,
}

fn default_gradient() -> f64 {
    22.0
}
fn default_winding_exponent() -> f64 {
    1.6
}
fn default_ref_hot_spot() -> f64 {
    98.0
}

impl Default for ThermalParams {
    fn default() -> Self {
        ThermalParams {
            hot_spot_gradient_k: default_gradient(),
            winding_exponent: default_winding_exponent(),
            reference_hot_spot_c: default_ref_hot_spot(),
        }
    }
}

/// Context for derived quantities that does not come from the reading.
#[derive(Debug, Clone, Copy)]
pub struct DeriveContext {
    /// Nominal frequency, Hz.
    pub nominal_frequency: f64,
    /// Thermal model constants.
    pub thermal: ThermalParams,
}

/// A quantity of [`DERIVED`], resolved from its name once (rules keep it, so that a reading
/// does not compare every rule's field name with every derived name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    /// `load_pct`.
    LoadPct,
    /// `current_unbalance_pct`.
    CurrentUnbalancePct,
    /// `voltage_unbalance_pct`.
    VoltageUnbalancePct,
    /// `voltage_dev_max_pct`.
    VoltageDevMaxPct,
    /// `voltage_dev_min_pct`.
    VoltageDevMinPct,
    /// `phases_lost`.
    PhasesLost,
    /// `neutral_loss_pct`.
    NeutralLossPct,
    /// `frequency_dev_hz`.
    FrequencyDevHz,
    /// `hot_spot_est`.
    HotSpotEst,
    /// `ageing_factor`.
    AgeingFactor,
    /// `clock_drift_s`.
    ClockDriftS,
}

impl Derived {
    /// The derived quantity called `name` ([`DERIVED`]), or `None` for a plain reading field.
    pub fn from_name(name: &str) -> Option<Derived> {
        DERIVED.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
    }
}

/// The value of the derived quantity `d` for `r`.
pub fn derived(r: &Reading, d: Derived, ctx: &DeriveContext) -> Option<f64> {
    let nominal = r.device.nominal_voltage;
    let phases = || phase_voltages(r);
    match d {
        Derived::LoadPct => load_pct(r),
        Derived::CurrentUnbalancePct => {
            // A lost phase carries no current: that is the phase-loss alarm, not unbalance.
            if let (Some(v), Some(n)) = (phases(), nominal)
                && v.iter().any(|x| *x < LOST_PHASE_PU * n)
            {
                return None;
            }
            current_unbalance_pct([
                r.known(Known::CurrentA)?,
                r.known(Known::CurrentB)?,
                r.known(Known::CurrentC)?,
            ])
        }
        Derived::VoltageUnbalancePct => {
            let v = phases()?;
            if let Some(n) = nominal
                && v.iter().any(|x| *x < LOST_PHASE_PU * n)
            {
                return None;
            }
            voltage_unbalance_nema(v)
        }
        Derived::VoltageDevMaxPct => voltage_deviations(r)?.map(|(hi, _)| hi),
        Derived::VoltageDevMinPct => voltage_deviations(r)?.map(|(_, lo)| lo),
        Derived::PhasesLost => Some(f64::from(phases_lost(phases()?, nominal?))),
        Derived::NeutralLossPct => neutral_loss_pct(phases()?, nominal?),
        Derived::FrequencyDevHz => Some((r.known(Known::Frequency)? - ctx.nominal_frequency).abs()),
        Derived::HotSpotEst => {
            // Only when the winding is not measured: a measured winding temperature wins.
            if r.known(Known::WindingTemp).is_some() {
                return None;
            }
            Some(hot_spot(
                r.known(Known::OilTemp)?,
                load_pct(r)? / 100.0,
                &ctx.thermal,
            ))
        }
        Derived::AgeingFactor => {
            let h = match r.known(Known::WindingTemp) {
                Some(w) => w,
                None => hot_spot(r.known(Known::OilTemp)?, load_pct(r)? / 100.0, &ctx.thermal),
            };
            Some(ageing_factor_iec(h, ctx.thermal.reference_hot_spot_c))
        }
        Derived::ClockDriftS => {
            let ts_s = r.ts as f64 / 1e9;
            match (r.known(Known::ClockOffset), r.known(Known::MeterTime)) {
                (Some(off), _) => Some(off.abs()),
                (None, Some(t)) => Some((t - ts_s).abs()),
                _ => None,
            }
        }
    }
}

fn phase_voltages(r: &Reading) -> Option<[f64; 3]> {
    Some([
        r.known(Known::VoltageA)?,
        r.known(Known::VoltageB)?,
        r.known(Known::VoltageC)?,
    ])
}

/// Apparent power as % of the device's rated kVA: from `active_power`/`reactive_power`
/// (kW/kvar) when present, else Σ V·I over the phases.
pub fn load_pct(r: &Reading) -> Option<f64> {
    let rated = r.device.rated_kva?;
    let s_kva = match (r.known(Known::ActivePower), r.known(Known::ReactivePower)) {
        (Some(p), Some(q)) => p.hypot(q),
        (Some(p), None) => p.abs(),
        _ => {
            let v = phase_voltages(r)?;
            let i = [
                r.known(Known::CurrentA)?,
                r.known(Known::CurrentB)?,
                r.known(Known::CurrentC)?,
            ];
            v.iter().zip(i).map(|(v, i)| v * i).sum::<f64>() / 1000.0
        }
    };
    Some(s_kva / rated * 100.0)
}

/// Three-phase current unbalance (I_max − I_min) / I_max × 100 (Chinese distribution
/// practice, DOMAIN.md); `None` when every phase is at zero.
pub fn current_unbalance_pct(i: [f64; 3]) -> Option<f64> {
    let max = i.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = i.iter().copied().fold(f64::INFINITY, f64::min);
    (max > 0.0).then(|| (max - min) / max * 100.0)
}

/// Voltage unbalance by the NEMA MG1 approximation: largest deviation from the average
/// over the average × 100 (203/210/212 V → 2.5 %).
pub fn voltage_unbalance_nema(v: [f64; 3]) -> Option<f64> {
    let avg = v.iter().sum::<f64>() / 3.0;
    if avg <= 0.0 {
        return None;
    }
    let dev = v.iter().map(|x| (x - avg).abs()).fold(0.0, f64::max);
    Some(dev / avg * 100.0)
}

/// Deviation of `v` from `nominal` in %.
pub fn voltage_deviation_pct(v: f64, nominal: f64) -> f64 {
    (v - nominal) / nominal * 100.0
}

/// (highest, lowest) phase deviation from nominal in %, over the phases that are not lost;
/// `Some(None)` when every phase is lost (supply failure, not a band violation).
fn voltage_deviations(r: &Reading) -> Option<Option<(f64, f64)>> {
    let n = r.device.nominal_voltage?;
    let v = phase_voltages(r)?;
    let devs: Vec<f64> = v
        .iter()
        .filter(|x| **x >= LOST_PHASE_PU * n)
        .map(|x| voltage_deviation_pct(*x, n))
        .collect();
    if devs.is_empty() {
        return Some(None);
    }
    let hi = devs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lo = devs.iter().copied().fold(f64::INFINITY, f64::min);
    Some(Some((hi, lo)))
}

/// Phases below [`LOST_PHASE_PU`] of nominal while at least one other is above
/// [`PRESENT_PHASE_PU`]; 0 when all are lost (that is a supply failure).
pub fn phases_lost(v: [f64; 3], nominal: f64) -> u8 {
    let lost = v.iter().filter(|x| **x < LOST_PHASE_PU * nominal).count() as u8;
    let present = v.iter().any(|x| *x > PRESENT_PHASE_PU * nominal);
    if present { lost } else { 0 }
}

/// Lost-neutral pattern: one phase rises while another sags, each by at least the returned
/// amount (% of nominal); 0 when the voltages move together. A shifted star point raises
/// some phases toward line voltage and sags the others (DOMAIN.md).
pub fn neutral_loss_pct(v: [f64; 3], nominal: f64) -> Option<f64> {
    if v.iter().any(|x| *x < LOST_PHASE_PU * nominal) {
        return Some(0.0);
    }
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let up = voltage_deviation_pct(hi, nominal);
    let down = -voltage_deviation_pct(lo, nominal);
    Some(up.min(down).max(0.0))
}

/// Hot-spot estimate from top oil and load (IEC 60076-7 steady state):
/// θ_H = θ_o + H·g_r · K^y.
pub fn hot_spot(top_oil: f64, k_pu: f64, p: &ThermalParams) -> f64 {
    top_oil + p.hot_spot_gradient_k * k_pu.max(0.0).powf(p.winding_exponent)
}

/// Relative ageing rate for non-upgraded paper (IEC 60076-7): V = 2^((θ_H − 98)/6).
pub fn ageing_factor_iec(hot_spot: f64, reference: f64) -> f64 {
    2f64.powf((hot_spot - reference) / 6.0)
}

/// Ageing acceleration factor for thermally upgraded paper (IEEE C57.91):
/// F_AA = exp(15000/383 − 15000/(θ_H + 273)).
pub fn ageing_factor_ieee(hot_spot: f64) -> f64 {
    (15000.0 / 383.0 - 15000.0 / (hot_spot + 273.0)).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nema_unbalance_matches_the_textbook_example() {
        let u = voltage_unbalance_nema([203.0, 210.0, 212.0]).unwrap_or_default();
        // avg 208.33, max deviation 5.33 → 2.56 %
        assert!((u - 2.56).abs() < 0.01, "{u}");
    }

    #[test]
    fn current_unbalance_is_max_minus_min_over_max() {
        assert_eq!(current_unbalance_pct([100.0, 85.0, 90.0]), Some(15.0));
        assert_eq!(current_unbalance_pct([0.0, 0.0, 0.0]), None);
    }

    #[test]
    fn ageing_is_one_at_the_reference_and_doubles_every_6_k() {
        assert!((ageing_factor_iec(98.0, 98.0) - 1.0).abs() < 1e-12);
        assert!((ageing_factor_iec(104.0, 98.0) - 2.0).abs() < 1e-12);
        assert!((ageing_factor_ieee(110.0) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn hot_spot_adds_the_gradient_at_rated_load() {
        let p = ThermalParams::default();
        assert!((hot_spot(70.0, 1.0, &p) - 92.0).abs() < 1e-12);
        assert!((hot_spot(70.0, 0.0, &p) - 70.0).abs() < 1e-12);
    }

    #[test]
    fn phase_and_neutral_patterns() {
        assert_eq!(phases_lost([230.0, 0.8, 231.0], 230.0), 1);
        assert_eq!(phases_lost([0.5, 0.8, 0.2], 230.0), 0);
        let n = neutral_loss_pct([290.0, 180.0, 225.0], 230.0).unwrap_or_default();
        assert!((n - 21.74).abs() < 0.01, "{n}");
        assert_eq!(neutral_loss_pct([250.0, 252.0, 249.0], 230.0), Some(0.0));
    }
}
