use super::*;
use crate::config::FieldMapping;

fn field(path: &str, name: &str) -> FieldMapping {
    FieldMapping::new(path, name)
}

fn sub(format: PayloadFormat, fields: Vec<FieldMapping>, ts: TimestampFormat) -> Mapping {
    let cfg = SubscriptionConfig::new("m/{device}", format, fields, ts);
    Mapping::new(&cfg, 4096)
}

fn meter_json() -> Mapping {
    let mut e_imp = field("e_imp_wh", "energy_import");
    e_imp.scale = 0.001;
    e_imp.unit = Some("kWh".into());
    let mut gasp = field("event", "last_gasp");
    gasp.equals = Some("last_gasp".into());
    sub(
        PayloadFormat::Json,
        vec![
            field("v.a", "voltage_a"),
            field("/v/b", "voltage_b"),
            e_imp,
            gasp,
            field("relay", "relay_closed"),
        ],
        TimestampFormat::Rfc3339,
    )
}

fn one(m: &Mapping, payload: &str, field_level: Option<&str>) -> Result<Point, Reject> {
    let mut out = Vec::new();
    m.parse(payload.as_bytes(), field_level, &mut out)?;
    assert_eq!(out.len(), 1);
    Ok(out.remove(0))
}

#[test]
fn json_dotted_paths_pointers_scale_events_and_rfc3339() {
    let m = meter_json();
    let p = one(
        &m,
        r#"{"ts":"2026-11-23T10:00:00.250+01:00","v":{"a":230.1,"b":229.9},"e_imp_wh":1234567,"event":null,"relay":true}"#,
        None,
    )
    .unwrap();
    assert_eq!(p.ts, Some(1_795_424_400_250_000_000));
    assert_eq!(
        p.values,
        // `"event": null` is "no event now": the flag is 0, so an alarm on it can clear.
        Values::Mapped(vec![
            (0, 230.1),
            (1, 229.9),
            (2, 1234.567),
            (3, 0.0),
            (4, 1.0)
        ])
    );
    // Another event is "not this one": the flag is 0 (no longer a message without fields).
    let restored = one(&m, r#"{"event":"power_restored"}"#, None).unwrap();
    assert_eq!(restored.values, Values::Mapped(vec![(3, 0.0)]));
    assert_eq!(m.schema().fields[2].unit.as_deref(), Some("kWh"));

    let gasp = one(&m, r#"{"event":"last_gasp"}"#, None).unwrap();
    assert_eq!(gasp.ts, None, "no timestamp = arrival time");
    assert_eq!(gasp.values, Values::Mapped(vec![(3, 1.0)]));
}

#[test]
fn timestamp_units() {
    let ts = 1_795_420_800_i64; // 2026-11-23T08:00:00Z
    for (format, raw, want) in [
        (TimestampFormat::S, format!("{ts}"), ts * 1_000_000_000),
        (
            TimestampFormat::S,
            format!("{ts}.5"),
            ts * 1_000_000_000 + 500_000_000,
        ),
        (
            TimestampFormat::Ms,
            format!("{}", ts * 1000 + 7),
            ts * 1_000_000_000 + 7_000_000,
        ),
        (
            TimestampFormat::Us,
            format!("{}", ts * 1_000_000 + 7),
            ts * 1_000_000_000 + 7_000,
        ),
        (
            TimestampFormat::Ns,
            format!("{}", ts * 1_000_000_000 + 7),
            ts * 1_000_000_000 + 7,
        ),
    ] {
        let m = sub(PayloadFormat::Json, vec![field("x", "x")], format);
        let p = one(&m, &format!(r#"{{"ts":{raw},"x":1}}"#), None).unwrap();
        assert_eq!(p.ts, Some(want), "{format:?} {raw}");
    }
    let m = sub(
        PayloadFormat::Json,
        vec![field("x", "x")],
        TimestampFormat::S,
    );
    assert!(matches!(
        one(&m, r#"{"ts":1e300,"x":1}"#, None),
        Err(Reject::BadTimestamp(_))
    ));
    assert!(matches!(
        one(&m, r#"{"ts":"yesterday","x":1}"#, None),
        Err(Reject::WrongType { .. })
    ));
    let m = sub(
        PayloadFormat::Json,
        vec![field("x", "x")],
        TimestampFormat::Ms,
    );
    assert!(matches!(
        one(&m, &format!(r#"{{"ts":{},"x":1}}"#, i64::MAX), None),
        Err(Reject::BadTimestamp(_))
    ));
    let m = sub(
        PayloadFormat::Json,
        vec![field("x", "x")],
        TimestampFormat::Rfc3339,
    );
    assert!(matches!(
        one(&m, r#"{"ts":"2026-13-45T99:00:00Z","x":1}"#, None),
        Err(Reject::BadTimestamp(_))
    ));
    assert!(matches!(
        one(&m, r#"{"ts":12,"x":1}"#, None),
        Err(Reject::WrongType { .. })
    ));
}

#[test]
fn json_bad_input_is_rejected_with_a_reason() {
    let m = meter_json();
    let reason = |p: &str| one(&m, p, None).map(|_| ()).map_err(|e| e.reason());
    assert_eq!(reason("{\"v\":{\"a\":230"), Err("bad_json"));
    assert_eq!(reason("not json"), Err("bad_json"));
    assert_eq!(reason("[1,2]"), Err("not_an_object"));
    assert_eq!(reason("230.1"), Err("not_an_object"));
    assert_eq!(reason(r#"{"v":{"a":"230.1"}}"#), Err("wrong_type"));
    assert_eq!(reason(r#"{"v":{"a":[1]}}"#), Err("wrong_type"));
    assert_eq!(reason(r#"{"event":5}"#), Err("wrong_type"));
    // JSON has no NaN literal; a huge number overflows when scaled up.
    assert_eq!(reason(r#"{"v":{"a":NaN}}"#), Err("bad_json"));
    assert_eq!(reason(r#"{"v":{"a":1e400}}"#), Err("bad_json"));
    assert_eq!(reason(r#"{"other":1}"#), Err("no_fields"));
    let mut big = field("x", "x");
    big.scale = 1e300;
    let m2 = sub(PayloadFormat::Json, vec![big], TimestampFormat::S);
    assert_eq!(
        one(&m2, r#"{"x":1e300}"#, None),
        Err(Reject::NonFinite("x".into()))
    );
    let huge = format!(r#"{{"x":"{}"}}"#, "a".repeat(5000));
    assert_eq!(
        one(&m, &huge, None).map_err(|e| e.reason()),
        Err("too_large")
    );
}

#[test]
fn plain_number_per_topic() {
    let any = sub(PayloadFormat::Number, vec![], TimestampFormat::Rfc3339);
    let p = one(&any, " 230.1\n", Some("voltage_a")).unwrap();
    assert_eq!(p.values, Values::Named(vec![("voltage_a".into(), 230.1)]));
    assert_eq!(p.ts, None);
    assert_eq!(
        one(&any, "NaN", Some("voltage_a")),
        Err(Reject::NonFinite("voltage_a".into()))
    );
    assert_eq!(
        one(&any, "inf", Some("x")).map_err(|e| e.reason()),
        Err("non_finite")
    );
    assert_eq!(
        one(&any, "23O.1", Some("x")),
        Err(Reject::BadNumber("23O.1".into()))
    );
    assert_eq!(
        one(&any, "\u{ff}", Some("x")).map_err(|e| e.reason()),
        Err("bad_number")
    );
    assert_eq!(
        any.parse(&[0xff, 0xfe], Some("x"), &mut Vec::new()),
        Err(Reject::NotUtf8)
    );

    let mut wh = field("energy_wh", "energy_import");
    wh.scale = 0.001;
    let mapped = sub(
        PayloadFormat::Number,
        vec![field("va", "voltage_a"), wh],
        TimestampFormat::Rfc3339,
    );
    assert_eq!(
        one(&mapped, "1500", Some("energy_wh")).unwrap().values,
        Values::Mapped(vec![(1, 1.5)])
    );
    assert_eq!(
        one(&mapped, "1", Some("vb")),
        Err(Reject::UnmappedField("vb".into()))
    );
    let single = sub(
        PayloadFormat::Number,
        vec![field("", "frequency")],
        TimestampFormat::Rfc3339,
    );
    assert_eq!(
        one(&single, "50.01", None).unwrap().values,
        Values::Mapped(vec![(0, 50.01)])
    );
}

#[test]
fn line_protocol_lines_tags_types_and_precision() {
    let m = sub(PayloadFormat::Line, vec![], TimestampFormat::Ms);
    let mut out = Vec::new();
    m.parse(
        b"meter,device=MT\\ 1,site=S7 voltage_a=230.1,relay=t,count=7i,note=\"a, b=c\" 1795420800000\n\
          # comment\n\
          \n\
          meter,device=MT-2 voltage_a=229.5\n",
        None,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].device.as_deref(), Some("MT 1"));
    assert_eq!(out[0].ts, Some(1_795_420_800_000_000_000));
    assert_eq!(
        out[0].values,
        Values::Named(vec![
            ("voltage_a".into(), 230.1),
            ("relay".into(), 1.0),
            ("count".into(), 7.0)
        ])
    );
    assert_eq!(out[1].device.as_deref(), Some("MT-2"));
    assert_eq!(out[1].ts, None);

    let reason = |p: &str| {
        let mut out = Vec::new();
        m.parse(p.as_bytes(), None, &mut out)
            .map_err(|e| e.reason())
            .map(|_| out.len())
    };
    assert_eq!(reason("meter"), Err("bad_line"));
    assert_eq!(reason("meter x="), Err("bad_line"));
    assert_eq!(reason("meter x=abc"), Err("bad_line"));
    assert_eq!(reason("meter x=1 notatime"), Err("bad_line"));
    assert_eq!(reason("meter x=nan"), Err("non_finite"));
    assert_eq!(reason("meter s=\"text only\""), Err("no_fields"));
    assert_eq!(reason(""), Err("no_fields"));
    assert_eq!(
        reason("meter x=1 9223372036854775807"),
        Err("bad_timestamp")
    );
    // One bad line rejects the whole message: nothing half-applied.
    let mut out = Vec::new();
    assert!(m.parse(b"meter x=1\nmeter y=", None, &mut out).is_err());
    assert!(out.is_empty());

    let mapped = sub(
        PayloadFormat::Line,
        vec![field("v1", "voltage_a")],
        TimestampFormat::Ns,
    );
    let mut out = Vec::new();
    mapped
        .parse(b"m,device=a v1=230,other=1 5", None, &mut out)
        .unwrap();
    assert_eq!(out[0].values, Values::Mapped(vec![(0, 230.0)]));
    assert_eq!(out[0].ts, Some(5));
}

#[test]
fn timestamp_window() {
    let s = 1_000_000_000;
    let now = 1_800_000_000 * s;
    assert_eq!(check_window(now + 599 * s, now, 600 * s, 3600 * s), Ok(()));
    assert_eq!(
        check_window(now + 900 * s, now, 600 * s, 3600 * s),
        Err(Reject::FutureTimestamp(900))
    );
    assert_eq!(
        check_window(0, now, 600 * s, 3600 * s),
        Err(Reject::TooOld(1_800_000_000))
    );
}

#[test]
fn dotted_paths_become_pointers() {
    assert_eq!(json_pointer("v.a"), "/v/a");
    assert_eq!(json_pointer("/v/a"), "/v/a");
    assert_eq!(json_pointer("a/b.c~d"), "/a~1b/c~0d");
    assert_eq!(json_pointer("i.0"), "/i/0");
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for m in [
                meter_json(),
                sub(PayloadFormat::Number, vec![], TimestampFormat::S),
                sub(PayloadFormat::Line, vec![], TimestampFormat::Ns),
            ] {
                let mut out = Vec::new();
                match m.parse(&bytes, Some("f"), &mut out) {
                    Ok(()) => {
                        prop_assert!(!out.is_empty());
                        for p in &out {
                            let finite = match &p.values {
                                Values::Mapped(v) => v.iter().all(|(_, x)| x.is_finite()),
                                Values::Named(v) => v.iter().all(|(_, x)| x.is_finite()),
                            };
                            prop_assert!(finite);
                        }
                    }
                    Err(e) => prop_assert!(!e.reason().is_empty()),
                }
            }
        }

        #[test]
        fn json_like_text_never_panics(s in r#"\{("[a-z.]{1,4}":(-?[0-9.eE+]{1,8}|"[^"]{0,6}"|true|null|\{[^}]{0,10}\}),?){0,5}\}"#) {
            let mut out = Vec::new();
            let _ = meter_json().parse(s.as_bytes(), None, &mut out);
        }

        #[test]
        fn line_like_text_never_panics(s in r#"[a-z,=\\ "0-9.i\n]{0,60}"#) {
            let mut out = Vec::new();
            let _ = sub(PayloadFormat::Line, vec![], TimestampFormat::Ms).parse(s.as_bytes(), None, &mut out);
        }
    }
}

/// chrono's parser, the oracle for the fast path.
fn chrono_ns(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

#[test]
fn rfc3339_fast_path_agrees_with_chrono() {
    let fixed = [
        "2026-12-01T08:00:00Z",
        "2026-12-01T08:00:00.123Z",
        "2026-12-01t08:00:00.123456789z",
        "2026-12-01 08:00:00Z",
        "2024-02-29T23:59:59.999999999+01:00",
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "1969-12-31T23:59:59.5-05:30",
        "2000-03-01T00:00:00.1234567891234Z",
        "2016-12-31T23:59:60Z",
        "2026-12-01T24:00:00Z",
        "2026-12-01T08:00:00",
        "2026-12-01T08:00:00.Z",
        "2026-12-01T08:00:00+0100",
        "2026-12-01T08:00:00+24:00",
        "2026-12-01T08:00:00Zjunk",
        "2026-1-01T08:00:00Z",
        "+2026-12-01T08:00:00Z",
    ];
    for s in fixed {
        assert_eq!(rfc3339_ns(s).ok(), chrono_ns(s), "{s}");
    }
}

proptest::proptest! {
    #[test]
    fn rfc3339_fast_path_agrees_with_chrono_on_generated_times(
        y in 1700i64..2300, mo in 0i64..14, d in 0i64..33, h in 0i64..25, mi in 0i64..61,
        s in 0i64..61, frac in proptest::option::of(0u64..1_000_000_000_000),
        zone in proptest::option::of((proptest::bool::ANY, 0i64..25, 0i64..61)),
    ) {
        let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
        let zone = match zone {
            None => "Z".to_string(),
            Some((neg, zh, zm)) => format!("{}{zh:02}:{zm:02}", if neg { '-' } else { '+' }),
        };
        let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}");
        proptest::prop_assert_eq!(rfc3339_ns(&text).ok(), chrono_ns(&text), "{}", text);
    }
}
