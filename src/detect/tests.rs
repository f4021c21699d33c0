use super::*;

const S: i64 = 1_000_000_000;

fn device(id: &str, kind: &str, parent: Option<&str>) -> Arc<DeviceInfo> {
    Arc::new(
        DeviceInfo {
            site: "S7".into(),
            feeder: "F07".into(),
            parent: parent.map(str::to_string),
            rated_kva: Some(630.0),
            nominal_voltage: Some(230.0),
            ..DeviceInfo::for_test(id, kind)
        }
        .finish(),
    )
}

fn reading(d: &Arc<DeviceInfo>, ts_s: i64, values: &[(&str, f64)]) -> Arc<Reading> {
    Arc::new(Reading::from_pairs(Arc::clone(d), ts_s * S, values))
}

fn normal_tx(oil: f64, winding: f64) -> Vec<(&'static str, f64)> {
    vec![
        ("oil_temp", oil),
        ("winding_temp", winding),
        ("voltage_a", 231.0),
        ("voltage_b", 230.0),
        ("voltage_c", 229.5),
        ("current_a", 500.0),
        ("current_b", 480.0),
        ("current_c", 490.0),
        ("active_power", 330.0),
        ("reactive_power", 100.0),
        ("power_factor", 0.95),
        ("frequency", 50.01),
        ("thd_voltage", 3.0),
    ]
}

fn engine(devs: &[Arc<DeviceInfo>], user: &[RuleConfig]) -> Engine {
    let a = AlarmsConfig::default();
    let rules = RuleSet::build(&a, user).unwrap_or_default();
    Engine::new(rules, &a, devs, 0)
}

fn summary(d: &[Detection]) -> Vec<(String, &'static str, Change)> {
    d.iter()
        .map(|d| (d.rule.id.to_string(), d.severity.as_str(), d.change))
        .collect()
}

#[test]
fn library_parses_and_every_builtin_resolves() {
    let a = AlarmsConfig::default();
    let set = RuleSet::build(&a, &[]).unwrap_or_default();
    assert!(set.rules().len() >= 20, "{}", set.rules().len());
    for std in [VoltageStandard::En50160, VoltageStandard::AnsiC841] {
        let a = AlarmsConfig {
            standard: std,
            ..AlarmsConfig::default()
        };
        assert!(RuleSet::build(&a, &[]).is_ok());
    }
}

#[test]
fn over_temperature_raises_oil_critical_and_winding_warning_once() {
    let tx = device("TX-1", "transformer", None);
    let mut e = engine(&[Arc::clone(&tx)], &[]);
    let mut all = Vec::new();
    for t in 0..30 {
        all.extend(e.on_reading(&reading(&tx, t, &normal_tx(100.0, 115.0))));
    }
    let s = summary(&all);
    assert_eq!(
        s,
        [
            ("oil_temp_high".to_string(), "critical", Change::Raise),
            ("winding_temp_high".to_string(), "warning", Change::Raise),
        ],
        "{s:?}"
    );
    // The raise happened after the 10 s delay, on reading time.
    assert!(all.iter().all(|d| d.ts == 10 * S));
    let mut cleared = Vec::new();
    for t in 30..60 {
        cleared.extend(e.on_reading(&reading(&tx, t, &normal_tx(60.0, 75.0))));
    }
    assert_eq!(
        summary(&cleared)
            .iter()
            .map(|s| (s.0.as_str(), s.2))
            .collect::<Vec<_>>(),
        [
            ("oil_temp_high", Change::Clear),
            ("winding_temp_high", Change::Clear)
        ]
    );
}

#[test]
fn overload_suppresses_the_consequential_temperature_alarms() {
    let tx = device("TX-1", "transformer", None);
    let mut e = engine(&[Arc::clone(&tx)], &[]);
    let mut all = Vec::new();
    for t in 0..120 {
        let mut v = normal_tx(70.0, 100.0);
        v.retain(|(n, _)| *n != "active_power" && *n != "reactive_power");
        v.push(("active_power", 850.0));
        v.push(("reactive_power", 280.0));
        all.extend(e.on_reading(&reading(&tx, t, &v)));
    }
    assert_eq!(
        summary(&all),
        [("transformer_overload".to_string(), "warning", Change::Raise)]
    );
}

#[test]
fn transformer_phase_loss_is_one_alarm_not_one_per_meter() {
    let tx = device("TX-1", "transformer", None);
    let m1 = device("MT-1", "meter", Some("TX-1"));
    let m2 = device("MT-2", "meter", Some("TX-1"));
    let mut e = engine(&[tx.clone(), m1.clone(), m2.clone()], &[]);
    let lost = |d: &Arc<DeviceInfo>, t| {
        let mut v = normal_tx(60.0, 70.0);
        for x in v.iter_mut() {
            if x.0 == "voltage_b" {
                x.1 = 0.7;
            }
            if x.0 == "current_b" {
                x.1 = 0.0;
            }
        }
        if d.kind == "meter" {
            v.retain(|(n, _)| !n.contains("temp"));
        }
        reading(d, t, &v)
    };
    let mut all = Vec::new();
    for t in 0..30 {
        // A meter polled before its transformer sees the fault first.
        all.extend(e.on_reading(&lost(&m1, t)));
        all.extend(e.on_reading(&lost(&tx, t)));
        all.extend(e.on_reading(&lost(&m2, t)));
    }
    let s: Vec<_> = all
        .iter()
        .map(|d| (d.device.id.as_str(), &*d.rule.id, d.change))
        .collect();
    assert_eq!(s, [("TX-1", "phase_loss", Change::Raise)]);
}

#[test]
fn a_meter_phase_loss_with_a_healthy_parent_is_the_meters_alarm() {
    let tx = device("TX-1", "transformer", None);
    let m1 = device("MT-1", "meter", Some("TX-1"));
    let mut e = engine(&[tx.clone(), m1.clone()], &[]);
    let mut all = Vec::new();
    for t in 0..30 {
        all.extend(e.on_reading(&reading(&tx, t, &normal_tx(60.0, 70.0))));
        all.extend(e.on_reading(&reading(
            &m1,
            t,
            &[
                ("voltage_a", 231.0),
                ("voltage_b", 1.0),
                ("voltage_c", 230.0),
            ],
        )));
    }
    let s: Vec<_> = all
        .iter()
        .map(|d| (d.device.id.as_str(), &*d.rule.id, d.severity))
        .collect();
    assert_eq!(s, [("MT-1", "phase_loss", Severity::Critical)]);
}

#[test]
fn comm_loss_on_the_callers_clock_and_clear_on_the_next_reading() {
    let m = device("MT-1", "meter", None);
    let mut e = engine(std::slice::from_ref(&m), &[]);
    assert!(
        e.on_reading(&reading(&m, 0, &[("voltage_a", 230.0)]))
            .is_empty()
    );
    assert!(e.tick(4 * S).is_empty());
    let d = e.tick(5 * S);
    assert_eq!(
        summary(&d),
        [("comm_loss".to_string(), "warning", Change::Raise)]
    );
    assert!(e.tick(6 * S).is_empty(), "deduplicated");
    let d = e.on_reading(&reading(&m, 7, &[("voltage_a", 230.0)]));
    assert_eq!(
        summary(&d),
        [("comm_loss".to_string(), "warning", Change::Clear)]
    );
}

#[test]
fn comm_loss_timers_of_unseen_devices_start_when_the_sources_run() {
    let seen = device("MT-1", "meter", None);
    let unseen = device("MT-2", "meter", None);
    // Built at 0; the sources only started at 30 s (a slow start-up).
    let mut e = engine(&[Arc::clone(&seen), Arc::clone(&unseen)], &[]);
    assert!(
        e.on_reading(&reading(&seen, 0, &[("voltage_a", 230.0)]))
            .is_empty()
    );
    e.start_timers(30 * S);
    let d = e.tick(34 * S);
    // The device that did answer keeps its own clock; the other one gets its full threshold.
    assert_eq!(
        d.iter().map(|d| d.device.id.as_str()).collect::<Vec<_>>(),
        ["MT-1"]
    );
    let d = e.tick(35 * S);
    assert_eq!(
        d.iter()
            .map(|d| (d.device.id.as_str(), &*d.rule.id))
            .collect::<Vec<_>>(),
        [("MT-2", "comm_loss")]
    );
}

#[test]
fn rate_of_change_and_stuck_and_decreasing_counter() {
    let tx = device("TX-1", "transformer", None);
    let mut e = engine(std::slice::from_ref(&tx), &[]);
    let mut all = Vec::new();
    // 0.1 K per 10 s = 6 K in 10 min: below the 85 °C alarm, a fast rise.
    for i in 0..70 {
        let oil = 60.0 + 0.1 * i as f64;
        all.extend(e.on_reading(&reading(&tx, i * 10, &[("oil_temp", oil)])));
    }
    assert_eq!(
        summary(&all),
        [("oil_temp_rising".to_string(), "warning", Change::Raise)]
    );

    let m = device("MT-1", "meter", None);
    let mut e = engine(std::slice::from_ref(&m), &[]);
    let mut all = Vec::new();
    for i in 0..200 {
        let energy = if i == 100 { 900.0 } else { 1000.0 + i as f64 };
        all.extend(e.on_reading(&reading(
            &m,
            i * 5,
            &[("voltage_a", 231.5), ("energy_import", energy)],
        )));
    }
    let s = summary(&all);
    assert!(
        s.contains(&("energy_decreasing".to_string(), "warning", Change::Raise)),
        "{s:?}"
    );
    assert!(
        s.contains(&("stuck_reading".to_string(), "warning", Change::Raise)),
        "{s:?}"
    );
    // The first read that moves clears it (the library's delay_off is 0).
    let moved = e.on_reading(&reading(
        &m,
        200 * 5,
        &[("voltage_a", 231.6), ("energy_import", 1200.0)],
    ));
    assert_eq!(
        summary(&moved),
        [("stuck_reading".to_string(), "warning", Change::Clear)]
    );
}

#[test]
fn statistical_rule_flags_unusual_values_inside_fixed_limits() {
    let tx = device("TX-1", "transformer", None);
    // The rate rule would catch this jump first (and suppress the statistical one).
    let user = [
        RuleConfig {
            id: "oil_temp_unusual".into(),
            enabled: Some(true),
            warmup: Some(50),
            delay_on: Some(std::time::Duration::ZERO),
            ..RuleConfig::default()
        },
        RuleConfig {
            id: "oil_temp_rising".into(),
            enabled: Some(false),
            ..RuleConfig::default()
        },
    ];
    let mut e = engine(std::slice::from_ref(&tx), &user);
    let mut all = Vec::new();
    for i in 0..100 {
        let oil = 50.0 + if i % 2 == 0 { 0.5 } else { -0.5 };
        all.extend(e.on_reading(&reading(&tx, i * 60, &[("oil_temp", oil)])));
    }
    assert!(all.is_empty());
    // 70 °C: well inside the 85 °C limit, but 20 K off this unit's normal.
    all.extend(e.on_reading(&reading(&tx, 100 * 60, &[("oil_temp", 70.0)])));
    let s = summary(&all);
    assert!(
        s.contains(&("oil_temp_unusual".to_string(), "warning", Change::Raise)),
        "{s:?}"
    );
}

#[test]
fn overrides_disable_retune_and_target_single_devices() {
    let a = device("TX-A", "transformer", None);
    let b = device("TX-B", "transformer", None);
    let user = [
        RuleConfig {
            id: "winding_temp_high".into(),
            enabled: Some(false),
            ..RuleConfig::default()
        },
        RuleConfig {
            id: "oil_temp_high".into(),
            devices: Some(vec!["TX-B".into()]),
            levels: Some(vec![Level {
                severity: Severity::Warning,
                raise: 70.0,
                clear: Some(65.0),
                delay: None,
            }]),
            ..RuleConfig::default()
        },
    ];
    let mut e = engine(&[a.clone(), b.clone()], &user);
    let mut all = Vec::new();
    for t in 0..20 {
        all.extend(e.on_reading(&reading(&a, t, &normal_tx(75.0, 110.0))));
        all.extend(e.on_reading(&reading(&b, t, &normal_tx(75.0, 110.0))));
    }
    let s: Vec<_> = all
        .iter()
        .map(|d| (d.device.id.as_str(), &*d.rule.id))
        .collect();
    assert_eq!(s, [("TX-B", "oil_temp_high")]);
}

#[test]
fn invalid_rules_are_reported_with_their_index() {
    let a = AlarmsConfig::default();
    let bad = [RuleConfig {
        id: "my_rule".into(),
        rule_type: Some(RuleType::Threshold),
        field: Some("oil_temp".into()),
        levels: Some(vec![Level {
            severity: Severity::Warning,
            raise: 80.0,
            clear: Some(90.0),
            delay: None,
        }]),
        ..RuleConfig::default()
    }];
    match RuleSet::build(&a, &bad) {
        Err(RuleError::Invalid { index, .. }) => assert_eq!(index, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_restored_alarm_clears_through_hysteresis_after_a_restart() {
    let tx = device("TX-1", "transformer", None);
    let mut e = engine(std::slice::from_ref(&tx), &[]);
    e.restore("TX-1", "oil_temp_high", Severity::Critical);
    // Still hot after the restart: no second raise.
    let d = e.on_reading(&reading(&tx, 0, &normal_tx(96.0, 80.0)));
    assert!(d.is_empty(), "{:?}", summary(&d));
    let mut d = e.on_reading(&reading(&tx, 1, &normal_tx(60.0, 75.0)));
    d.extend(e.on_reading(&reading(&tx, 11, &normal_tx(60.0, 75.0))));
    assert_eq!(
        summary(&d),
        [("oil_temp_high".to_string(), "critical", Change::Clear)]
    );
}
