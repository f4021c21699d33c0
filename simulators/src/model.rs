//! Device physics: what a simulated transformer or meter measures at a given moment.
//!
//! Time enters as seconds since the Unix epoch (f64, treated as local time of the grid so
//! the daily load curve peaks in the evening of UTC); named quantities leave as
//! [`Quantities`], keyed by the canonical field names the profiles use. Everything is
//! deterministic given the fleet seed and the sequence of sample times: noise is a smooth
//! hash-based function of time, not a random stream. Only three things carry state between
//! samples, all of which real devices also integrate over time: the top-oil temperature
//! (first-order lag on load), the energy counters and the cooling fan (hysteresis).

use std::f64::consts::PI;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// Errors from building a fleet.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// More units than Modbus unit ids 1..=247 can address.
    #[error("{0} units do not fit Modbus unit ids 1..=247")]
    TooManyUnits(u32),
    /// `meter_profile` is not `sdm630`, `sunspec203` or `mixed`.
    #[error("unknown meter profile {0:?} (expected sdm630, sunspec203 or mixed)")]
    UnknownMeterProfile(String),
    /// A rating that must be positive is not.
    #[error("{0} must be positive and finite")]
    BadRating(&'static str),
}

/// One of the three phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// L1.
    A,
    /// L2.
    B,
    /// L3.
    C,
}

impl Phase {
    fn index(self) -> usize {
        match self {
            Phase::A => 0,
            Phase::B => 1,
            Phase::C => 2,
        }
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "a" | "l1" => Ok(Phase::A),
            "b" | "l2" => Ok(Phase::B),
            "c" | "l3" => Ok(Phase::C),
            other => Err(format!("unknown phase {other:?} (expected a, b or c)")),
        }
    }
}

/// A fault injected into one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Top oil ~100 °C, winding ~115 °C.
    OverTemperature,
    /// Load ~1.4 pu of the unit's rating.
    Overload,
    /// Phase voltages ~195 V (−15 % of 230 V).
    UnderVoltage,
    /// Phase voltages ~255 V (+11 %).
    OverVoltage,
    /// One phase: voltage ~0 V and no current.
    PhaseLoss(Phase),
    /// Supply lost on every phase (an upstream breaker or fuse opened): ~0 V, no current.
    /// The device still answers — a battery-backed monitor, or a meter's power-down record.
    SupplyLost,
    /// The unit stops answering on the bus (no response at all).
    Dead,
    /// Every request is answered with this Modbus exception code.
    Exception(u8),
    /// RTU transports: every n-th answer of the unit (1 = every one) goes out with a
    /// corrupted byte, so its CRC does not match. No effect on Modbus TCP, which has no CRC.
    BadCrc(u8),
}

impl Fault {
    /// Faults that are a property of the LV network, so meters fed by a faulted transformer
    /// see them too (a transformer phase loss takes that phase away from its customers).
    pub fn propagates_downstream(self) -> bool {
        matches!(
            self,
            Fault::UnderVoltage | Fault::OverVoltage | Fault::PhaseLoss(_) | Fault::SupplyLost
        )
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    /// Parses `kind[:arg]`: `over_temperature`, `overload`, `under_voltage`, `over_voltage`,
    /// `phase_loss:b`, `supply_lost`, `dead`, `exception:4` (decimal or `0x0B`), `bad_crc[:n]`
    /// (RTU only).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let no_arg = |f: Fault| match arg {
            None => Ok(f),
            Some(a) => Err(format!("fault {kind} takes no argument (got {a:?})")),
        };
        match kind.to_ascii_lowercase().replace('-', "_").as_str() {
            "over_temperature" => no_arg(Fault::OverTemperature),
            "overload" => no_arg(Fault::Overload),
            "under_voltage" => no_arg(Fault::UnderVoltage),
            "over_voltage" => no_arg(Fault::OverVoltage),
            "dead" => no_arg(Fault::Dead),
            "supply_lost" => no_arg(Fault::SupplyLost),
            "phase_loss" => Ok(Fault::PhaseLoss(
                arg.ok_or("phase_loss needs a phase, e.g. phase_loss:b")?
                    .parse()?,
            )),
            "exception" => {
                let a = arg.ok_or("exception needs a code, e.g. exception:4")?;
                let code = match a.strip_prefix("0x").or_else(|| a.strip_prefix("0X")) {
                    Some(hex) => u8::from_str_radix(hex, 16),
                    None => a.parse(),
                }
                .map_err(|e| format!("bad exception code {a:?}: {e}"))?;
                Ok(Fault::Exception(code))
            }
            "bad_crc" => {
                let every = match arg {
                    None => 1,
                    Some(a) => a.parse::<u8>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("bad_crc takes 1..=255 (every n-th answer), got {a:?}")
                    })?,
                };
                Ok(Fault::BadCrc(every))
            }
            other => Err(format!("unknown fault kind {other:?}")),
        }
    }
}

/// What a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// A 10/0.4 kV distribution transformer with its monitor.
    Transformer,
    /// A three-phase LV smart meter.
    Meter,
}

impl UnitKind {
    /// `transformer` or `meter`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Transformer => "transformer",
            UnitKind::Meter => "meter",
        }
    }
}

/// One simulated device and where it sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitInfo {
    /// Modbus unit id: transformers 1..=T, meters T+1..=T+M.
    pub unit: u8,
    /// Transformer or meter.
    pub kind: UnitKind,
    /// Profile name the unit serves (`transformer-monitor`, `sdm630`, `sunspec203`).
    pub profile: String,
    /// Suggested device id: `TX-0001` for transformers, `MT-0011` for meters.
    pub device_id: String,
    /// For meters: the transformer unit feeding it (round-robin); `None` for transformers
    /// and when there are no transformers.
    pub parent_unit: Option<u8>,
}

/// Fleet-wide parameters; per-unit variation is drawn from `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetParams {
    /// Number of transformers (unit ids 1..=T).
    pub transformers: u16,
    /// Number of meters (unit ids T+1..=T+M).
    pub meters: u16,
    /// `sdm630`, `sunspec203` or `mixed` (odd meters SDM630, even meters SunSpec).
    pub meter_profile: String,
    /// Seed for per-unit parameters and noise.
    pub seed: u64,
    /// Nominal phase-to-neutral voltage (V).
    pub nominal_voltage: f64,
    /// Transformer rating (kVA); rated current is S / (√3 · 400 V).
    pub rated_kva: f64,
}

impl Default for FleetParams {
    fn default() -> Self {
        FleetParams {
            transformers: 1,
            meters: 2,
            meter_profile: "sdm630".to_owned(),
            seed: 1,
            nominal_voltage: 230.0,
            rated_kva: 630.0,
        }
    }
}

/// Rating of a meter's supply connection (kVA): a 63 A three-phase main fuse at 400 V, the
/// usual residential connection; meter `Overload` is 1.4 pu of this.
pub const METER_RATED_KVA: f64 = 43.6;

/// Line voltage the transformer rating refers to (V), for I_rated = S / (√3 · U).
const RATED_LINE_VOLTAGE: f64 = 400.0;

/// IEC 60076-7 ONAN distribution transformer thermal constants.
const OIL_RISE_RATED_K: f64 = 55.0; // Δθ_or, top-oil rise at rated load
const LOSS_RATIO: f64 = 6.0; // R, load losses / no-load losses
const OIL_EXPONENT: f64 = 0.8; // n
const OIL_TIME_CONSTANT_S: f64 = 180.0 * 60.0; // τ_o
const WINDING_GRADIENT_K: f64 = 22.0; // H·g_r, hot-spot to top-oil gradient at rated load
const WINDING_EXPONENT: f64 = 1.6; // y
/// Fan thresholds from utility practice (DOMAIN.md): on at 55 °C oil, off at 45 °C.
const FAN_ON_C: f64 = 55.0;
const FAN_OFF_C: f64 = 45.0;

/// Computes the unit layout: ids, kinds, profiles, device ids and parents.
pub fn layout(params: &FleetParams) -> Result<Vec<UnitInfo>, ModelError> {
    let total = u32::from(params.transformers) + u32::from(params.meters);
    if total > 247 {
        return Err(ModelError::TooManyUnits(total));
    }
    let t = params.transformers as u8; // fits: total <= 247
    let mut units = Vec::with_capacity(total as usize);
    for unit in 1..=t {
        units.push(UnitInfo {
            unit,
            kind: UnitKind::Transformer,
            profile: "transformer-monitor".to_owned(),
            device_id: format!("TX-{unit:04}"),
            parent_unit: None,
        });
    }
    for k in 1..=params.meters as u8 {
        let unit = t + k;
        let profile = match params.meter_profile.as_str() {
            "sdm630" => "sdm630",
            "sunspec203" => "sunspec203",
            "mixed" if k % 2 == 1 => "sdm630",
            "mixed" => "sunspec203",
            other => return Err(ModelError::UnknownMeterProfile(other.to_owned())),
        };
        units.push(UnitInfo {
            unit,
            kind: UnitKind::Meter,
            profile: profile.to_owned(),
            device_id: format!("MT-{unit:04}"),
            parent_unit: (t > 0).then(|| ((k - 1) % t) + 1),
        });
    }
    Ok(units)
}

/// Named physical quantities of one unit at one moment (canonical field names).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Quantities(pub Vec<(&'static str, f64)>);

impl Quantities {
    /// The value of `name`, if the unit has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    fn push(&mut self, name: &'static str, value: f64) {
        self.0.push((name, value));
    }
}

/// Per-unit constants drawn from the seed.
#[derive(Debug, Clone)]
struct UnitParams {
    /// Rated apparent power (kVA).
    rated_kva: f64,
    /// Daily peak as a fraction of rating (transformers) or of the meter's own peak.
    peak_pu: f64,
    /// Shift of the daily curve (hours), so units do not peak in lockstep.
    shift_h: f64,
    /// Per-phase current deviation from the mean (fraction), mean zero.
    current_unbalance: [f64; 3],
    /// Per-phase voltage offset (fraction).
    voltage_offset: [f64; 3],
    /// Base power factor.
    pf_base: f64,
    /// Daily mean ambient temperature (°C).
    ambient_mean: f64,
    /// Off-load tap position.
    tap: i64,
    /// Commissioning time (s since epoch), for operating hours.
    commissioned_s: f64,
    /// Energy counter at the first sample (kWh).
    energy_start_kwh: f64,
}

impl UnitParams {
    fn draw(seed: u64, key: u64, info: &UnitInfo, fleet: &FleetParams) -> UnitParams {
        let mut rng = StdRng::seed_from_u64(mix(seed, key, 0x5EED));
        let mut three = |spread: f64| {
            let a: f64 = rng.random_range(-spread..spread);
            let b: f64 = rng.random_range(-spread..spread);
            // Mean zero so unbalance does not shift the total.
            [a, b, -(a + b) / 2.0]
        };
        let current_unbalance = three(0.03);
        let voltage_offset = three(0.002);
        let transformer = info.kind == UnitKind::Transformer;
        UnitParams {
            rated_kva: if transformer {
                fleet.rated_kva
            } else {
                METER_RATED_KVA
            },
            // Transformers peak at 55–80 % of rating; meters at 4–12 kW of a 43.6 kVA fuse.
            peak_pu: if transformer {
                rng.random_range(0.55..0.80)
            } else {
                rng.random_range(4.0..12.0) / METER_RATED_KVA
            },
            shift_h: rng.random_range(-0.75..0.75),
            current_unbalance,
            voltage_offset,
            pf_base: rng.random_range(0.93..0.96),
            ambient_mean: rng.random_range(12.0..20.0),
            tap: rng.random_range(-2..=2),
            commissioned_s: rng.random_range(946_684_800.0..1_704_067_200.0),
            energy_start_kwh: if transformer {
                rng.random_range(200_000.0..3_000_000.0)
            } else {
                rng.random_range(1_000.0..15_000.0)
            },
        }
    }
}

/// State carried between samples.
#[derive(Debug, Clone, Default)]
struct UnitState {
    /// Time of the last sample that advanced the state.
    last_t: Option<f64>,
    /// Top-oil rise over ambient (K).
    oil_rise: f64,
    /// Active power at `last_t` (kW), for trapezoidal integration.
    last_p_kw: f64,
    /// Import energy (kWh).
    energy_import: f64,
    /// Fan contactor.
    fan: bool,
}

/// The physics of one unit.
#[derive(Debug, Clone)]
pub struct UnitModel {
    info: UnitInfo,
    params: UnitParams,
    state: UnitState,
    seed: u64,
    /// Per-unit variation key: the unit id, or any number for units without one (MQTT).
    key: u64,
    nominal_voltage: f64,
}

impl UnitModel {
    /// Builds the model of `info` with parameters drawn from the fleet seed.
    pub fn new(info: UnitInfo, fleet: &FleetParams) -> UnitModel {
        let key = u64::from(info.unit);
        UnitModel::with_key(info, fleet, key)
    }

    /// Like [`UnitModel::new`], with per-unit variation drawn from `key` instead of the unit
    /// id: MQTT meters are not limited to 247 Modbus unit ids.
    pub fn with_key(info: UnitInfo, fleet: &FleetParams, key: u64) -> UnitModel {
        let params = UnitParams::draw(fleet.seed, key, &info, fleet);
        UnitModel {
            key,
            state: UnitState {
                energy_import: params.energy_start_kwh,
                ..UnitState::default()
            },
            info,
            params,
            seed: fleet.seed,
            nominal_voltage: fleet.nominal_voltage,
        }
    }

    /// Where the unit sits.
    pub fn info(&self) -> &UnitInfo {
        &self.info
    }

    /// Load in per unit of the unit's rating at `t` under normal operation.
    fn load_pu(&self, t: f64) -> f64 {
        let key = mix(self.seed, self.key, 1);
        let h = (t.rem_euclid(86_400.0) / 3600.0 + self.params.shift_h).rem_euclid(24.0);
        let fluct = 1.0 + 0.05 * noise(key, t, 900.0) + 0.02 * noise(key ^ 7, t, 120.0);
        self.params.peak_pu * daily_curve(h) * fluct
    }

    /// Evaluates the unit at `t`. `fault` is the unit's own fault and `upstream` the
    /// parent transformer's (only its network faults apply). State advances only when `t`
    /// is later than the last sample, so counters never run backwards.
    pub fn sample(&mut self, t: f64, fault: Option<Fault>, upstream: Option<Fault>) -> Quantities {
        let unit_key = mix(self.seed, self.key, 2);
        let grid_key = mix(self.seed, 0, 3);
        let vn = self.nominal_voltage;
        let rated_current = self.params.rated_kva * 1000.0 / (3f64.sqrt() * RATED_LINE_VOLTAGE);

        let k_load = match fault {
            Some(Fault::Overload) => 1.4 * (1.0 + 0.02 * noise(unit_key ^ 11, t, 60.0)),
            _ => self.load_pu(t),
        };
        let net_fault = fault
            .filter(|f| f.propagates_downstream())
            .or(upstream.filter(|f| f.propagates_downstream()));

        // Voltages: common feeder wander, small per-phase noise, a drop with load; ±1.2 %.
        let common = 0.004 * noise(unit_key ^ 21, t, 600.0);
        let mut v = [0.0; 3];
        for (p, vp) in v.iter_mut().enumerate() {
            // Slow wander plus fast measurement-level jitter (±0.15 %, ~0.3 V): a real meter's
            // reading moves between consecutive reads, so a frozen value stands out. The
            // jitter's period is shorter than the fastest read interval (0.5 s) so every read
            // lands on fresh noise: with a longer period two reads near one knot of the
            // interpolation can round to the same 0.1 V, and 16 such in a row happened once.
            let own = 0.002 * noise(unit_key ^ (30 + p as u64), t, 300.0)
                + 0.0015 * noise(unit_key ^ (33 + p as u64), t, 0.4);
            *vp = match net_fault {
                Some(Fault::UnderVoltage) => vn * 0.85 * (1.0 + own),
                Some(Fault::OverVoltage) => vn * 1.11 * (1.0 + own),
                _ => {
                    vn * (1.0 + self.params.voltage_offset[p] + common + own
                        - 0.008 * (k_load - 0.5))
                }
            };
        }
        let lost = match net_fault {
            Some(Fault::PhaseLoss(ph)) => Some(ph.index()),
            _ => None,
        };
        let mut i = [0.0; 3];
        let mut pf = [0.0; 3];
        for p in 0..3 {
            let wobble = 0.01 * noise(unit_key ^ (40 + p as u64), t, 240.0);
            i[p] = k_load * rated_current * (1.0 + self.params.current_unbalance[p] + wobble);
            pf[p] = self.params.pf_base + 0.01 * noise(unit_key ^ (50 + p as u64), t, 1800.0);
        }
        if let Some(p) = lost {
            // A blown LV fuse or open conductor: a volt or so induced, no current.
            v[p] = noise(unit_key ^ 60, t, 30.0).abs();
            i[p] = 0.0;
        }
        if net_fault == Some(Fault::SupplyLost) {
            for p in 0..3 {
                v[p] = 0.0;
                i[p] = 0.0;
            }
        }
        let mut p_kw = [0.0; 3];
        let mut q_kvar = [0.0; 3];
        for p in 0..3 {
            let s = v[p] * i[p] / 1000.0;
            p_kw[p] = s * pf[p];
            q_kvar[p] = s * (1.0 - pf[p] * pf[p]).sqrt();
        }
        let p_tot: f64 = p_kw.iter().sum();
        let q_tot: f64 = q_kvar.iter().sum();
        let s_tot = p_tot.hypot(q_tot);
        let pf_tot = if s_tot > 0.0 { p_tot / s_tot } else { 1.0 };

        // Grid frequency is the same everywhere; each meter adds its own measurement noise.
        let freq = 50.0
            + 0.03 * noise(grid_key, t, 60.0)
            + 0.01 * noise(grid_key ^ 1, t, 7.0)
            + 0.002 * noise(unit_key ^ 70, t, 5.0);

        // Ambient: daily swing peaking mid-afternoon.
        let h = t.rem_euclid(86_400.0) / 3600.0;
        let ambient = self.params.ambient_mean
            + 6.0 * (2.0 * PI * (h - 15.0) / 24.0).cos()
            + noise(unit_key ^ 80, t, 3600.0);

        // Advance state: oil lag, energy integration, fan hysteresis.
        let target_rise = oil_rise_steady(k_load);
        match self.state.last_t {
            None => {
                // Start at steady state so values are sensible at once; the lag shows from here.
                self.state.oil_rise = target_rise;
                self.state.last_t = Some(t);
                self.state.last_p_kw = p_tot;
            }
            Some(last) if t > last => {
                let dt = t - last;
                let alpha = 1.0 - (-dt / OIL_TIME_CONSTANT_S).exp();
                self.state.oil_rise += (target_rise - self.state.oil_rise) * alpha;
                let avg_kw = (self.state.last_p_kw.max(0.0) + p_tot.max(0.0)) / 2.0;
                self.state.energy_import += avg_kw * dt / 3600.0;
                self.state.last_t = Some(t);
                self.state.last_p_kw = p_tot;
            }
            Some(_) => {}
        }
        let (oil, winding) = match fault {
            Some(Fault::OverTemperature) => (
                100.0 + noise(unit_key ^ 90, t, 120.0),
                115.0 + noise(unit_key ^ 91, t, 120.0),
            ),
            _ => {
                let oil = ambient + self.state.oil_rise;
                (
                    oil,
                    oil + WINDING_GRADIENT_K * k_load.powf(WINDING_EXPONENT),
                )
            }
        };
        if oil >= FAN_ON_C {
            self.state.fan = true;
        } else if oil <= FAN_OFF_C {
            self.state.fan = false;
        }

        let mut q = Quantities::default();
        for (name, value) in [
            ("voltage_a", v[0]),
            ("voltage_b", v[1]),
            ("voltage_c", v[2]),
        ] {
            q.push(name, value);
        }
        for (name, value) in [
            ("current_a", i[0]),
            ("current_b", i[1]),
            ("current_c", i[2]),
        ] {
            q.push(name, value);
        }
        q.push("current_n", neutral(i));
        q.push("current_total", i.iter().sum());
        q.push("voltage_avg", v.iter().sum::<f64>() / 3.0);
        q.push("voltage_ab", line_voltage(v[0], v[1]));
        q.push("voltage_bc", line_voltage(v[1], v[2]));
        q.push("voltage_ca", line_voltage(v[2], v[0]));
        for (name, value) in [
            ("power_a", p_kw[0]),
            ("power_b", p_kw[1]),
            ("power_c", p_kw[2]),
        ] {
            q.push(name, value);
        }
        for (name, p) in [("pf_a", 0), ("pf_b", 1), ("pf_c", 2)] {
            q.push(name, if i[p] > 0.0 { pf[p] } else { 1.0 });
        }
        q.push("active_power", p_tot);
        q.push("reactive_power", q_tot);
        q.push("power_factor", pf_tot);
        q.push("frequency", freq);
        // No export: simulated customers have no generation, so export counters stay at 0
        // (a constant non-zero counter would look like a stuck meter).
        q.push("energy_import", self.state.energy_import);
        q.push("energy_export", 0.0);
        q.push("energy_total", self.state.energy_import);
        let v_min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let v_max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        q.push("evt_power_failure", bool_f(v_min < 0.5 * vn));
        q.push(
            "evt_under_voltage",
            bool_f(v_min >= 0.5 * vn && v_min < 0.9 * vn),
        );
        q.push("evt_over_voltage", bool_f(v_max > 1.1 * vn));
        if self.info.kind == UnitKind::Transformer {
            q.push("oil_temp", oil);
            q.push("winding_temp", winding);
            q.push("ambient_temp", ambient);
            q.push("load_pu", k_load);
            q.push(
                "thd_voltage",
                2.3 + 0.3 * noise(unit_key ^ 100, t, 1800.0) + k_load,
            );
            q.push("tap_position", self.params.tap as f64);
            q.push("alarm_oil_level", 0.0);
            q.push("alarm_buchholz", 0.0);
            q.push("alarm_pressure_relief", 0.0);
            q.push("fan_running", bool_f(self.state.fan));
            q.push("door_open", 0.0);
            q.push(
                "operating_hours",
                ((t - self.params.commissioned_s) / 3600.0).max(0.0).floor(),
            );
        }
        q
    }
}

/// A set of units with their faults: what the servers sample and [`generate`] iterates.
#[derive(Debug, Clone)]
pub struct Fleet {
    params: FleetParams,
    units: Vec<UnitModel>,
    faults: Vec<Option<Fault>>,
}

impl Fleet {
    /// Lays out and seeds the units of `params`.
    pub fn new(params: FleetParams) -> Result<Fleet, ModelError> {
        if !(params.nominal_voltage.is_finite() && params.nominal_voltage > 0.0) {
            return Err(ModelError::BadRating("nominal_voltage"));
        }
        if !(params.rated_kva.is_finite() && params.rated_kva > 0.0) {
            return Err(ModelError::BadRating("rated_kva"));
        }
        let units: Vec<UnitModel> = layout(&params)?
            .into_iter()
            .map(|info| UnitModel::new(info, &params))
            .collect();
        let faults = vec![None; units.len()];
        Ok(Fleet {
            params,
            units,
            faults,
        })
    }

    /// The parameters the fleet was built from.
    pub fn params(&self) -> &FleetParams {
        &self.params
    }

    /// Layout of all units, in unit-id order.
    pub fn units(&self) -> Vec<UnitInfo> {
        self.units.iter().map(|u| u.info.clone()).collect()
    }

    /// The unit with this id.
    pub fn unit(&self, unit: u8) -> Option<&UnitInfo> {
        self.index(unit).map(|i| &self.units[i].info)
    }

    fn index(&self, unit: u8) -> Option<usize> {
        let i = usize::from(unit).checked_sub(1)?;
        (i < self.units.len()).then_some(i)
    }

    /// Sets (or with `None` clears) the fault of `unit`; unknown units are ignored.
    pub fn set_fault(&mut self, unit: u8, fault: Option<Fault>) {
        if let Some(i) = self.index(unit) {
            self.faults[i] = fault;
        }
    }

    /// The fault currently injected into `unit`.
    pub fn fault(&self, unit: u8) -> Option<Fault> {
        self.index(unit).and_then(|i| self.faults[i])
    }

    /// Evaluates `unit` at `t` (see [`UnitModel::sample`]); `None` for an unknown unit.
    pub fn sample(&mut self, unit: u8, t: f64) -> Option<Quantities> {
        let i = self.index(unit)?;
        let upstream = self.units[i].info.parent_unit.and_then(|p| self.fault(p));
        let fault = self.faults[i];
        Some(self.units[i].sample(t, fault, upstream))
    }
}

/// One evaluated unit at one simulated time, from [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unit id.
    pub unit: u8,
    /// Simulated time (s since epoch).
    pub t: f64,
    /// Quantities by canonical field name.
    pub values: Vec<(&'static str, f64)>,
}

/// Evaluates every unit of `fleet` at `start_s`, `start_s + step_s`, ... (`steps` times)
/// without a server, in time order then unit order. Faults set on the fleet before the call
/// apply throughout.
pub fn generate(
    fleet: Fleet,
    start_s: f64,
    step_s: f64,
    steps: usize,
) -> impl Iterator<Item = Sample> {
    let mut fleet = fleet;
    let ids: Vec<u8> = fleet.units.iter().map(|u| u.info.unit).collect();
    (0..steps).flat_map(move |n| {
        let t = start_s + step_s * n as f64;
        let batch: Vec<Sample> = ids
            .iter()
            .filter_map(|&unit| {
                fleet.sample(unit, t).map(|q| Sample {
                    unit,
                    t,
                    values: q.0,
                })
            })
            .collect();
        batch
    })
}

/// Steady-state top-oil rise over ambient at load `k` (pu), IEC 60076-7:
/// Δθ_o = Δθ_or · ((K²R + 1)/(R + 1))^n.
pub fn oil_rise_steady(k: f64) -> f64 {
    OIL_RISE_RATED_K * ((k * k * LOSS_RATIO + 1.0) / (LOSS_RATIO + 1.0)).powf(OIL_EXPONENT)
}

/// Residential daily load shape, 1.0 at the evening peak: night trough ~0.3, a morning peak
/// around 07:30 and the main peak around 19:00.
pub fn daily_curve(hour: f64) -> f64 {
    let bump = |centre: f64, width: f64| {
        // Distance on the 24 h circle so the evening peak wraps past midnight smoothly.
        let d = (hour - centre + 12.0).rem_euclid(24.0) - 12.0;
        (-(d * d) / (2.0 * width * width)).exp()
    };
    let raw = 0.30 + 0.30 * bump(7.5, 1.3) + 0.20 * bump(13.0, 3.0) + 0.70 * bump(19.0, 2.0);
    raw / 1.02
}

/// Neutral current magnitude of three phase currents 120° apart (A).
fn neutral(i: [f64; 3]) -> f64 {
    let (s, c) = (2.0 * PI / 3.0).sin_cos();
    let re = i[0] + c * (i[1] + i[2]);
    let im = s * (i[2] - i[1]);
    re.hypot(im)
}

/// Line-to-line voltage of two phase voltages 120° apart.
fn line_voltage(a: f64, b: f64) -> f64 {
    (a * a + b * b + a * b).sqrt()
}

fn bool_f(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// SplitMix64 finaliser: a cheap, well-mixed hash of one word.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mix(a: u64, b: u64, c: u64) -> u64 {
    splitmix(splitmix(a ^ splitmix(b)) ^ c)
}

/// Smooth value noise in [-1, 1]: hashed values at multiples of `period`, interpolated with
/// a smoothstep so derivatives stay bounded (no jumps a rate-of-change rule would flag).
pub fn noise(key: u64, t: f64, period: f64) -> f64 {
    let x = t / period;
    let i = x.floor();
    let f = x - i;
    let at = |n: f64| {
        let h = splitmix(key ^ splitmix(n as i64 as u64));
        (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let s = f * f * (3.0 - 2.0 * f);
    at(i) * (1.0 - s) + at(i + 1.0) * s
}

#[cfg(test)]
mod tests;
