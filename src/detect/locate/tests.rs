use super::*;
use crate::detect::RuleSet;
use crate::detect::config::{AlarmsConfig, RuleConfig};
use crate::topology::{Node, TRANSFORMER};

const S: i64 = 1_000_000_000;

/// Feeder F1: T1 (M11..M14) and T2 (M21..M23, M23 with 5 customers); feeder F2: T3 (M31).
fn topology() -> Topology {
    let mut t = Topology::default();
    let node = |id: &str, kind: &str, feeder: &str, parent: Option<&str>, customers| Node {
        customers,
        location: Some(format!("{id} street")),
        ..Node::new(id, kind, "S1", feeder, parent)
    };
    for (tx, feeder, meters) in [
        ("T1", "F1", vec!["M11", "M12", "M13", "M14"]),
        ("T2", "F1", vec!["M21", "M22", "M23"]),
        ("T3", "F2", vec!["M31", "M32"]),
    ] {
        t.insert(node(tx, TRANSFORMER, feeder, None, 1));
        for m in meters {
            let c = if m == "M23" { 5 } else { 1 };
            t.insert(node(m, METER, feeder, Some(tx), c));
        }
    }
    t
}

fn rule(id: &str) -> Arc<Rule> {
    let set = RuleSet::build(&AlarmsConfig::default(), &[] as &[RuleConfig]).unwrap_or_default();
    set.rules()
        .iter()
        .find(|r| &*r.id == id)
        .map(Arc::clone)
        .unwrap_or_else(|| panic!("no rule {id}"))
}

fn det(t: &Topology, meter: &str, rule_id: &str, change: Change, ts: i64) -> Detection {
    let n = t.get(meter).unwrap_or_else(|| panic!("{meter}"));
    Detection {
        device: Arc::new(
            DeviceInfo {
                site: n.site.clone(),
                feeder: n.feeder.clone(),
                parent: n.parent.clone(),
                nominal_voltage: Some(230.0),
                customers: n.customers,
                ..DeviceInfo::for_test(meter, &n.kind)
            }
            .finish(),
        ),
        rule: rule(rule_id),
        change,
        severity: Severity::Warning,
        value: 5.0,
        limit: 5.0,
        ts,
    }
}

fn keys(d: &[Detection]) -> Vec<(String, String, Change)> {
    d.iter()
        .map(|d| (d.device.id.clone(), d.rule.id.to_string(), d.change))
        .collect()
}

fn locator() -> Locator {
    Locator::new(&LocateConfig::default(), topology())
}

fn dark(l: &mut Locator, meters: &[&str], rule: &str, ts: i64) -> Vec<Detection> {
    let t = topology();
    let d = meters
        .iter()
        .map(|m| det(&t, m, rule, Change::Raise, ts))
        .collect();
    l.process(d)
}

fn back(l: &mut Locator, meters: &[&str], rule: &str, ts: i64) -> Vec<Detection> {
    let t = topology();
    let d = meters
        .iter()
        .map(|m| det(&t, m, rule, Change::Clear, ts))
        .collect();
    l.process(d)
}

#[test]
fn a_transformer_outage_is_one_alarm_with_its_meters_as_children() {
    let mut l = locator();
    // All four meters of T1 go dark within a few seconds: nothing goes out while settling.
    assert!(dark(&mut l, &["M11", "M12"], "last_gasp", 0).is_empty());
    assert!(dark(&mut l, &["M13", "M14"], "comm_loss", 3 * S).is_empty());
    assert!(l.tick(10 * S).is_empty());
    let out = l.tick(20 * S);
    assert_eq!(
        keys(&out),
        [("T1".into(), "outage_transformer".into(), Change::Raise)]
    );
    assert_eq!((out[0].value, out[0].limit), (4.0, 4.0));
    assert_eq!(out[0].ts, 0, "the outage started with the first meter");
    let notices = l.take_notices();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].event, NoticeKind::Started);
    let o = &notices[0].outage;
    assert_eq!((o.meters.len(), o.customers), (4, 4));
    assert_eq!(o.meters[0].location.as_deref(), Some("M11 street"));
    // Later conditions of those meters stay children.
    assert!(dark(&mut l, &["M11"], "comm_loss", 25 * S).is_empty());
    assert!(l.tick(60 * S).is_empty());
    // Restoration: all back → the alarm clears, a restored notice, interruptions for KPIs.
    assert!(back(&mut l, &["M11", "M12"], "last_gasp", 100 * S).is_empty());
    assert!(back(&mut l, &["M11", "M13", "M14"], "comm_loss", 110 * S).is_empty());
    let out = l.tick(111 * S);
    assert_eq!(
        keys(&out),
        [("T1".into(), "outage_transformer".into(), Change::Clear)]
    );
    assert_eq!(l.take_notices()[0].event, NoticeKind::Restored);
    let mut i: Vec<(String, i64, i64)> = l
        .take_interruptions()
        .into_iter()
        .map(|i| (i.device, i.start, i.end))
        .collect();
    i.sort();
    assert_eq!(
        i,
        [
            ("M11".into(), 0, 110 * S),
            ("M12".into(), 0, 100 * S),
            ("M13".into(), 3 * S, 110 * S),
            ("M14".into(), 3 * S, 110 * S),
        ]
    );
    let (active, recent) = l.board().lock().map(|b| b.snapshot()).unwrap_or_default();
    assert!(active.is_empty());
    assert_eq!(recent.len(), 1);
}

#[test]
fn one_dark_meter_keeps_its_own_alarm() {
    let mut l = locator();
    assert!(dark(&mut l, &["M12"], "comm_loss", 0).is_empty());
    let out = l.tick(20 * S);
    assert_eq!(
        keys(&out),
        [("M12".into(), "comm_loss".into(), Change::Raise)]
    );
    // Its clear goes out too.
    let out = back(&mut l, &["M12"], "comm_loss", 30 * S);
    assert_eq!(
        keys(&out),
        [("M12".into(), "comm_loss".into(), Change::Clear)]
    );
    assert!(l.take_notices().is_empty());
}

#[test]
fn most_of_a_transformer_is_enough_but_half_is_not() {
    let mut l = locator();
    // T2: M21, M22 dark, M23 up: 2 of 3 < 90 % → the two meters' own alarms.
    dark(&mut l, &["M21", "M22"], "comm_loss", 0);
    let out = l.tick(20 * S);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|d| &*d.rule.id == "comm_loss"));
}

#[test]
fn a_feeder_outage_is_one_alarm_on_the_feeder_and_growth_moves_up() {
    // Whole feeder at once: one feeder alarm, no transformer alarms.
    let mut l = locator();
    dark(
        &mut l,
        &["M11", "M12", "M13", "M14", "M21", "M22", "M23"],
        "last_gasp",
        0,
    );
    let out = l.tick(20 * S);
    assert_eq!(
        keys(&out),
        [("S1/F1".into(), "outage_feeder".into(), Change::Raise)]
    );
    assert_eq!(out[0].device.kind, "feeder");
    let n = l.take_notices();
    assert_eq!((n[0].outage.meters.len(), n[0].outage.customers), (7, 11));

    // T1 first, then T2: the transformer alarm clears into the feeder alarm.
    let mut l = locator();
    dark(&mut l, &["M11", "M12", "M13", "M14"], "last_gasp", 0);
    let out = l.tick(20 * S);
    assert_eq!(
        keys(&out),
        [("T1".into(), "outage_transformer".into(), Change::Raise)]
    );
    dark(&mut l, &["M21", "M22", "M23"], "last_gasp", 30 * S);
    let out = l.tick(50 * S);
    assert_eq!(
        keys(&out),
        [
            ("T1".into(), "outage_transformer".into(), Change::Clear),
            ("S1/F1".into(), "outage_feeder".into(), Change::Raise),
        ]
    );
    assert_eq!(out[1].value, 7.0);
    let (active, _) = l.board().lock().map(|b| b.snapshot()).unwrap_or_default();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].element, "S1/F1");
}

#[test]
fn other_alarms_pass_untouched_and_localisation_can_be_off() {
    let t = topology();
    let mut l = locator();
    let d = det(&t, "M11", "voltage_low", Change::Raise, 0);
    assert_eq!(keys(&l.process(vec![d])).len(), 1);
    let mut off = Locator::new(
        &LocateConfig {
            enabled: false,
            ..LocateConfig::default()
        },
        topology(),
    );
    assert_eq!(
        dark(&mut off, &["M11", "M12", "M13", "M14"], "last_gasp", 0).len(),
        4
    );
}

#[test]
fn a_transformer_phase_loss_names_the_lost_phase() {
    use crate::model::Reading;
    let t = topology();
    let mut l = locator();
    let d = det(&t, "T1", "phase_loss", Change::Raise, 5 * S);
    let values = [
        ("voltage_a", 231.0),
        ("voltage_b", 0.8),
        ("voltage_c", 229.0),
    ];
    l.observe(&Reading::from_pairs(Arc::clone(&d.device), 5 * S, &values));
    let out = l.process(vec![d]);
    assert_eq!(
        keys(&out),
        [("T1".into(), "lv_phase_loss_b".into(), Change::Raise)]
    );
    assert!(
        out[0].rule.action.contains("phase B"),
        "{}",
        out[0].rule.action
    );
    let out = l.process(vec![det(&t, "T1", "phase_loss", Change::Clear, 9 * S)]);
    assert_eq!(
        keys(&out),
        [("T1".into(), "lv_phase_loss_b".into(), Change::Clear)]
    );
    // A meter's own phase loss is not renamed.
    let out = l.process(vec![det(&t, "M11", "phase_loss", Change::Raise, 9 * S)]);
    assert_eq!(
        keys(&out),
        [("M11".into(), "phase_loss".into(), Change::Raise)]
    );
}

#[test]
fn meters_that_lost_the_same_phase_locate_the_lv_fuse() {
    use crate::model::Reading;
    let t = topology();
    let mut l = locator();
    let observe = |l: &mut Locator, m: &str, b: f64| {
        let d = det(&t, m, "phase_loss", Change::Raise, 0);
        let values = [("voltage_a", 230.0), ("voltage_b", b), ("voltage_c", 231.0)];
        l.observe(&Reading::from_pairs(Arc::clone(&d.device), 0, &values));
    };
    // Two meters of T1 lose phase B; one meter of T2 loses it alone.
    for m in ["M11", "M12", "M21"] {
        observe(&mut l, m, 1.5);
        assert!(
            l.process(vec![det(&t, m, "phase_loss", Change::Raise, S)])
                .is_empty()
        );
    }
    let out = l.tick(30 * S);
    let mut k = keys(&out);
    k.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    assert_eq!(
        k,
        [
            ("M21".into(), "phase_loss".into(), Change::Raise),
            ("T1".into(), "lv_phase_loss_b".into(), Change::Raise),
        ]
    );
    let located = out.iter().find(|d| d.device.id == "T1").map(|d| d.value);
    assert_eq!(located, Some(2.0));
    // The phase comes back on both: the located alarm clears; M21's clear goes out as is.
    assert!(
        l.process(vec![det(&t, "M11", "phase_loss", Change::Clear, 40 * S)])
            .is_empty()
    );
    assert!(
        l.process(vec![det(&t, "M12", "phase_loss", Change::Clear, 40 * S)])
            .is_empty()
    );
    let out = l.process(vec![det(&t, "M21", "phase_loss", Change::Clear, 40 * S)]);
    assert_eq!(
        keys(&out),
        [("M21".into(), "phase_loss".into(), Change::Clear)]
    );
    let out = l.tick(41 * S);
    assert_eq!(
        keys(&out),
        [("T1".into(), "lv_phase_loss_b".into(), Change::Clear)]
    );
}

#[test]
fn single_phase_meters_dark_on_one_phase_locate_that_fuse() {
    let mut t = topology();
    t.insert(Node::new("T4", TRANSFORMER, "S1", "F3", None));
    for (m, p) in [
        ("P1", Phase::B),
        ("P2", Phase::B),
        ("P3", Phase::A),
        ("P4", Phase::C),
    ] {
        t.insert(Node {
            phase: Some(p),
            ..Node::new(m, METER, "S1", "F3", Some("T4"))
        });
    }
    let mut l = Locator::new(&LocateConfig::default(), t.clone());
    let d = ["P1", "P2"]
        .iter()
        .map(|m| det(&t, m, "last_gasp", Change::Raise, 0))
        .collect();
    assert!(l.process(d).is_empty());
    let out = l.tick(30 * S);
    assert_eq!(
        keys(&out),
        [("T4".into(), "lv_phase_loss_b".into(), Change::Raise)]
    );
    assert_eq!((out[0].value, out[0].limit), (2.0, 4.0));
    // Supply back on both: cleared, and both interruptions go to the KPIs.
    let d = ["P1", "P2"]
        .iter()
        .map(|m| det(&t, m, "last_gasp", Change::Clear, 60 * S))
        .collect();
    assert!(l.process(d).is_empty());
    let out = l.tick(61 * S);
    assert_eq!(
        keys(&out),
        [("T4".into(), "lv_phase_loss_b".into(), Change::Clear)]
    );
    assert_eq!(l.take_interruptions().len(), 2);
}
