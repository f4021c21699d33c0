use super::*;
use std::collections::HashMap;

/// Monday 2026-11-23 00:00 UTC.
const T0: f64 = 1_795_392_000.0;

fn fleet(transformers: u16, meters: u16, profile: &str) -> Fleet {
    seeded(transformers, meters, profile, 42)
}

fn seeded(transformers: u16, meters: u16, profile: &str, seed: u64) -> Fleet {
    Fleet::new(FleetParams {
        transformers,
        meters,
        meter_profile: profile.to_owned(),
        seed,
        ..FleetParams::default()
    })
    .unwrap()
}

fn get(values: &[(&'static str, f64)], name: &str) -> f64 {
    values
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

#[test]
fn layout_ids_profiles_and_parents() {
    let units = layout(&FleetParams {
        transformers: 3,
        meters: 5,
        meter_profile: "mixed".to_owned(),
        ..FleetParams::default()
    })
    .unwrap();
    assert_eq!(units.len(), 8);
    assert_eq!(units[0].device_id, "TX-0001");
    assert_eq!(units[0].kind, UnitKind::Transformer);
    assert_eq!(units[3].unit, 4);
    assert_eq!(units[3].device_id, "MT-0004");
    assert_eq!(units[3].profile, "sdm630");
    assert_eq!(units[4].profile, "sunspec203");
    let parents: Vec<_> = units[3..].iter().map(|u| u.parent_unit).collect();
    assert_eq!(parents, [Some(1), Some(2), Some(3), Some(1), Some(2)]);
    assert!(
        layout(&FleetParams {
            transformers: 200,
            meters: 48,
            ..FleetParams::default()
        })
        .is_err()
    );
    assert!(
        layout(&FleetParams {
            meter_profile: "dlms".into(),
            ..FleetParams::default()
        })
        .is_err()
    );
}

#[test]
fn normal_week_stays_inside_limits() {
    for seed in [1, 42, 20261123] {
        normal_week(seed);
    }
}

fn normal_week(seed: u64) {
    let f = seeded(10, 20, "mixed", seed);
    let mut last_energy: HashMap<u8, f64> = HashMap::new();
    let mut n = 0;
    let mut max_oil: f64 = 0.0;
    let mut max_fan_seen = false;
    for s in generate(f, T0, 600.0, 7 * 144) {
        n += 1;
        let v = &s.values;
        let va = [
            get(v, "voltage_a"),
            get(v, "voltage_b"),
            get(v, "voltage_c"),
        ];
        for x in va {
            assert!((220.0..=240.0).contains(&x), "unit {} voltage {x}", s.unit);
        }
        let avg = va.iter().sum::<f64>() / 3.0;
        let dev = va.iter().map(|x| (x - avg).abs()).fold(0.0, f64::max) / avg;
        assert!(dev < 0.01, "voltage unbalance {dev}");
        let ia = [
            get(v, "current_a"),
            get(v, "current_b"),
            get(v, "current_c"),
        ];
        let imax = ia.iter().copied().fold(0.0, f64::max);
        let imin = ia.iter().copied().fold(f64::INFINITY, f64::min);
        assert!((imax - imin) / imax < 0.15, "current unbalance");
        let hz = get(v, "frequency");
        assert!((49.9..=50.1).contains(&hz), "frequency {hz}");
        let pf = get(v, "power_factor");
        assert!((0.9..=0.98).contains(&pf), "pf {pf}");
        for p in ["pf_a", "pf_b", "pf_c"] {
            assert!((0.9..=0.98).contains(&get(v, p)));
        }
        assert_eq!(get(v, "evt_power_failure"), 0.0);
        assert_eq!(get(v, "evt_under_voltage"), 0.0);
        assert_eq!(get(v, "evt_over_voltage"), 0.0);
        let e = get(v, "energy_import");
        if let Some(prev) = last_energy.insert(s.unit, e) {
            assert!(e > prev, "energy must grow: {prev} -> {e}");
        }
        if s.unit <= 10 {
            let oil = get(v, "oil_temp");
            let k = get(v, "load_pu");
            max_oil = max_oil.max(oil);
            assert!(oil < 80.0, "oil {oil}");
            assert!(get(v, "winding_temp") > oil);
            assert!(k < 1.0 && k > 0.1, "load {k}");
            let thd = get(v, "thd_voltage");
            assert!((2.0..=4.0).contains(&thd), "thd {thd}");
            max_fan_seen |= get(v, "fan_running") == 1.0;
            // Neutral current stays well below the 25 % of rated guideline.
            assert!(get(v, "current_n") < 0.25 * 909.3);
        } else {
            let p = get(v, "active_power");
            assert!(p > 0.5 && p < 15.0, "meter power {p}");
        }
    }
    assert_eq!(n, 7 * 144 * 30);
    assert!(max_oil > 45.0, "oil should respond to load (max {max_oil})");
    eprintln!("seed {seed}: max oil {max_oil:.1} degC, fan seen {max_fan_seen}");
}

#[test]
fn daily_curve_has_morning_and_evening_peaks() {
    let at = |h: f64| daily_curve(h);
    assert!(at(7.5) > at(4.0) + 0.2, "morning peak");
    assert!(at(19.0) > at(7.5), "evening peak is the main one");
    assert!(at(19.0) > 0.95 && at(19.0) < 1.05);
    assert!(at(3.0) < 0.35);
}

#[test]
fn oil_lags_load() {
    // Steady-state rise at rated load is Δθ_or.
    assert!((oil_rise_steady(1.0) - 55.0).abs() < 1e-9);
    let mut f = fleet(1, 0, "sdm630");
    let t = T0 + 3.0 * 3600.0; // night, low load
    let start = f.sample(1, t).unwrap().get("oil_temp").unwrap();
    f.set_fault(1, Some(Fault::Overload));
    let after_10min = f.sample(1, t + 600.0).unwrap();
    let after_6h = f.sample(1, t + 6.0 * 3600.0).unwrap();
    let ambient = after_6h.get("ambient_temp").unwrap();
    let (o10, o6h) = (
        after_10min.get("oil_temp").unwrap(),
        after_6h.get("oil_temp").unwrap(),
    );
    // τ = 180 min: ten minutes moves the oil only a few kelvin, six hours most of the way.
    assert!(o10 - start < 8.0, "{start} -> {o10}");
    let target = ambient + oil_rise_steady(1.4);
    assert!(
        o6h > start + 20.0 && o6h < target + 2.0,
        "{start} -> {o6h}, target {target}"
    );
}

#[test]
fn faults_move_values() {
    let t = T0 + 12.0 * 3600.0;
    let sample = |fault: Option<Fault>| {
        let mut f = fleet(1, 1, "sdm630");
        f.set_fault(1, fault);
        f.sample(1, t).unwrap()
    };
    let q = sample(Some(Fault::OverTemperature));
    assert!((q.get("oil_temp").unwrap() - 100.0).abs() < 2.0);
    assert!((q.get("winding_temp").unwrap() - 115.0).abs() < 2.0);

    let q = sample(Some(Fault::Overload));
    let rated = 630_000.0 / (3f64.sqrt() * 400.0);
    for p in ["current_a", "current_b", "current_c"] {
        let pu = q.get(p).unwrap() / rated;
        assert!((1.3..1.5).contains(&pu), "{p} {pu} pu");
    }

    let q = sample(Some(Fault::UnderVoltage));
    for p in ["voltage_a", "voltage_b", "voltage_c"] {
        assert!((q.get(p).unwrap() - 195.5).abs() < 2.0);
    }
    assert_eq!(q.get("evt_under_voltage"), Some(1.0));

    let q = sample(Some(Fault::OverVoltage));
    for p in ["voltage_a", "voltage_b", "voltage_c"] {
        assert!((q.get(p).unwrap() - 255.3).abs() < 2.0);
    }
    assert_eq!(q.get("evt_over_voltage"), Some(1.0));

    let q = sample(Some(Fault::PhaseLoss(Phase::B)));
    assert!(q.get("voltage_b").unwrap() < 2.0);
    assert_eq!(q.get("current_b"), Some(0.0));
    assert!(q.get("voltage_a").unwrap() > 220.0);
    assert!(q.get("current_a").unwrap() > 0.0);
    assert_eq!(q.get("evt_power_failure"), Some(1.0));

    // A transformer's network fault reaches the meters it feeds.
    let mut f = fleet(1, 1, "sdm630");
    f.set_fault(1, Some(Fault::PhaseLoss(Phase::C)));
    let meter = f.sample(2, t).unwrap();
    assert!(meter.get("voltage_c").unwrap() < 2.0);
    // ... but not its thermal ones.
    f.set_fault(1, Some(Fault::Overload));
    let meter = f.sample(2, t).unwrap();
    assert!(meter.get("current_a").unwrap() < 30.0);
}

#[test]
fn fan_hysteresis() {
    let mut f = fleet(1, 0, "sdm630");
    let t = T0;
    f.set_fault(1, Some(Fault::OverTemperature));
    assert_eq!(f.sample(1, t).unwrap().get("fan_running"), Some(1.0));
    f.set_fault(1, None);
    // Oil back at its normal value (between 45 and 55 or below): stays on until <= 45 °C.
    let q = f.sample(1, t + 60.0).unwrap();
    let oil = q.get("oil_temp").unwrap();
    let fan = q.get("fan_running").unwrap();
    if oil > 45.0 {
        assert_eq!(fan, 1.0, "oil {oil}");
    } else {
        assert_eq!(fan, 0.0, "oil {oil}");
    }
}

#[test]
fn deterministic_for_a_seed_and_time_going_back_does_not_rewind_counters() {
    let a: Vec<Sample> = generate(fleet(2, 2, "sunspec203"), T0, 60.0, 10).collect();
    let b: Vec<Sample> = generate(fleet(2, 2, "sunspec203"), T0, 60.0, 10).collect();
    assert_eq!(a, b);
    let mut f = fleet(1, 0, "sdm630");
    let e1 = f
        .sample(1, T0 + 100.0)
        .unwrap()
        .get("energy_import")
        .unwrap();
    let e0 = f.sample(1, T0).unwrap().get("energy_import").unwrap();
    assert_eq!(e0, e1);
}

#[test]
fn parses_fault_strings() {
    assert_eq!("dead".parse::<Fault>(), Ok(Fault::Dead));
    assert_eq!(
        "phase_loss:b".parse::<Fault>(),
        Ok(Fault::PhaseLoss(Phase::B))
    );
    assert_eq!("exception:0x0B".parse::<Fault>(), Ok(Fault::Exception(11)));
    assert_eq!("exception:4".parse::<Fault>(), Ok(Fault::Exception(4)));
    assert!("phase_loss".parse::<Fault>().is_err());
    assert!("dead:1".parse::<Fault>().is_err());
    // Serde form used in JSON/TOML configs.
    let json = serde_json::to_string(&Fault::PhaseLoss(Phase::A)).unwrap();
    assert_eq!(json, r#"{"phase_loss":"a"}"#);
    assert_eq!(
        serde_json::from_str::<Fault>(r#""over_voltage""#).unwrap(),
        Fault::OverVoltage
    );
}
