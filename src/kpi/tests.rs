use super::*;

const S: i64 = 1_000_000_000;
/// 2026-11-02T00:00:00Z.
const DAY0: i64 = 20_759 * 86_400 * S;

fn device(id: &str, kind: &str, interval_s: i64) -> Arc<DeviceInfo> {
    Arc::new(
        DeviceInfo {
            site: "S7".into(),
            feeder: "F07".into(),
            rated_kva: Some(100.0),
            nominal_voltage: Some(230.0),
            customers: 3,
            interval_ns: interval_s * S,
            ..DeviceInfo::for_test(id, kind)
        }
        .finish(),
    )
}

fn reading(d: &Arc<DeviceInfo>, ts: i64, values: &[(&str, f64)]) -> Reading {
    Reading::from_pairs(Arc::clone(d), ts, values)
}

fn engine() -> KpiEngine {
    KpiEngine::new(
        &KpiConfig::default(),
        &AlarmsConfig::default(),
        Topology::default(),
    )
}

fn v(x: f64) -> Vec<(&'static str, f64)> {
    vec![
        ("voltage_a", x),
        ("voltage_b", x),
        ("voltage_c", x),
        ("frequency", 50.0),
    ]
}

#[test]
fn time_is_attributed_to_the_previous_reading_capped_and_split_at_midnight() {
    let m = device("M1", "meter", 60);
    let mut e = engine();
    // 23:58 normal, 23:59 over (+8 % > +7 % GB/T 12325), 00:01 normal, then a 1 h gap.
    let t0 = DAY0 - 120 * S;
    e.on_reading(&reading(&m, t0, &v(230.0)));
    e.on_reading(&reading(&m, t0 + 60 * S, &v(248.4)));
    e.on_reading(&reading(&m, t0 + 180 * S, &v(230.0)));
    e.on_reading(&reading(&m, t0 + 180 * S + 3600 * S, &v(200.0)));
    let changes = e.take_changes(i64::MIN);
    let day = |d: i64| {
        changes
            .days
            .iter()
            .find(|(x, _, _)| *x == d)
            .map(|(_, _, a)| a.voltage)
            .unwrap_or_default()
    };
    let d0 = day_of(DAY0);
    // Day before: 60 s within, 60 s over (23:59–24:00).
    assert_eq!(
        day(d0 - 1),
        Band {
            t_over: 60.0,
            t_under: 0.0,
            t_total: 120.0
        }
    );
    // New day: 60 s over (00:00–00:01), then 3 intervals (180 s) of the normal reading:
    // the hour without data is not counted.
    assert_eq!(
        day(d0),
        Band {
            t_over: 60.0,
            t_under: 0.0,
            t_total: 240.0
        }
    );
    assert_eq!(
        changes
            .days
            .iter()
            .map(|d| d.2.frequency.t_total)
            .sum::<f64>(),
        360.0
    );
}

#[test]
fn interruptions_from_voltage_and_last_gasp_and_their_voltage_time_excluded() {
    let m = device("M1", "meter", 60);
    let mut e = engine();
    let t = |min: i64| DAY0 + min * 60 * S;
    e.on_reading(&reading(&m, t(0), &v(230.0)));
    // Supply gone: 3 V < 5 % of 230 V.
    e.on_reading(&reading(&m, t(1), &v(3.0)));
    e.on_reading(&reading(&m, t(2), &v(0.0)));
    e.on_reading(&reading(&m, t(3), &v(229.0)));
    // A last gasp, silence, then power back 2 min later.
    e.on_reading(&reading(&m, t(4), &[("last_gasp", 1.0)]));
    e.on_reading(&reading(&m, t(6), &v(231.0)));
    assert_eq!(e.interrupted(), 0);
    let c = e.take_changes(i64::MIN);
    let got: Vec<(i64, i64, &str, u32)> = c
        .interruptions
        .iter()
        .map(|i| (i.start, i.end, i.cause.as_str(), i.customers))
        .collect();
    assert_eq!(
        got,
        [(t(1), t(3), "voltage", 3), (t(4), t(6), "last_gasp", 3)]
    );
    // Voltage time: 0–1 and 3–4 (normal) only; the interrupted minutes are not counted.
    let band = c.days[0].2.voltage;
    assert_eq!(band.t_total, 120.0);
    assert_eq!(band.t_under, 0.0);
}

#[test]
fn an_outage_that_is_still_going_on_counts_until_now() {
    let m = device("M1", "meter", 60);
    let mut e = engine();
    e.on_reading(&reading(&m, DAY0, &[("last_gasp", 1.0)]));
    let open = e.open_interruptions(DAY0 + 600 * S);
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].start, open[0].end), (DAY0, DAY0 + 600 * S));
}

#[test]
fn transformer_loading_uses_the_hot_spot_it_measures() {
    let tx = device("TX1", "transformer", 60);
    let mut e = engine();
    // 100 kVA rated: 120 kW, 0 kvar = 120 %; winding (hot-spot) 110 °C → F_AA = 1.
    let hot = [
        ("active_power", 120.0),
        ("reactive_power", 0.0),
        ("winding_temp", 110.0),
    ];
    e.on_reading(&reading(&tx, DAY0, &hot));
    e.on_reading(&reading(&tx, DAY0 + 120 * S, &hot));
    let c = e.take_changes(i64::MIN);
    let l = c.days[0].2.loading;
    assert_eq!(l.t, 120.0);
    assert!((l.peak_pct - 120.0).abs() < 1e-9);
    assert_eq!(l.t_over_100, 120.0);
    assert!((l.loss_of_life_h - 120.0 / 3600.0).abs() < 1e-12);
}

#[test]
fn scopes_resolve_through_the_topology() {
    let mut t = Topology::default();
    let node = |id: &str, kind: &str, feeder: &str, parent: Option<&str>| {
        Node::new(id, kind, "S7", feeder, parent)
    };
    t.insert(node("T1", TRANSFORMER, "F1", None));
    t.insert(node("M1", METER, "F1", Some("T1")));
    t.insert(node("M2", METER, "F2", None));
    let ids = |s, id| scope_devices(&t, s, id).unwrap_or_default();
    assert_eq!(ids(Scope::Transformer, "T1"), ["T1", "M1"]);
    assert_eq!(ids(Scope::Feeder, "F1"), ["T1", "M1"]);
    assert_eq!(ids(Scope::Feeder, "S7/F2"), ["M2"]);
    assert_eq!(ids(Scope::Site, "S7").len(), 3);
    assert!(matches!(
        scope_devices(&t, Scope::Feeder, "F9"),
        Err(KpiError::UnknownScope(Scope::Feeder, _))
    ));
}

#[test]
fn a_finished_day_is_written_once_as_period_day() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = crate::eventlog::EventLog::open(
        dir.path(),
        &crate::config::EventLogConfig::default(),
        &[],
        crate::hub::Hub::new(),
        &crate::metrics::Registry::new(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut t = Topology::default();
    t.insert(Node::new("M1", "meter", "S7", "F07", None));
    let e = KpiEngine::new(&KpiConfig::default(), &AlarmsConfig::default(), t);
    let s = KpiService::new(e, log, &KpiConfig::default(), DAY0 + 3600 * S)
        .unwrap_or_else(|e| panic!("{e}"));
    let m = device("M1", "meter", 60);
    s.on_reading(&reading(&m, DAY0 + 3600 * S, &v(230.0)));
    s.on_reading(&reading(&m, DAY0 + 3660 * S, &v(230.0)));
    let first = s.lines(DAY0 + 7200 * S);
    assert!(first.contains("period=today"), "{first}");
    assert!(!first.contains("period=day,"), "{first}");
    let next_day = DAY0 + NS_PER_DAY + 60 * S;
    let second = s.lines(next_day);
    let closing: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("period=day,"))
        .collect();
    // One final point per scope (feeder S7/F07 and site S7) at the day's last nanosecond.
    assert_eq!(closing.len(), 2, "{second}");
    assert!(
        closing
            .iter()
            .all(|l| l.ends_with(&format!(" {}", DAY0 + NS_PER_DAY - 1)))
    );
    assert!(
        closing[0].contains("voltage_t_total_s=60"),
        "{}",
        closing[0]
    );
    assert!(
        !s.lines(next_day + S).contains("period=day,"),
        "written once"
    );
}
