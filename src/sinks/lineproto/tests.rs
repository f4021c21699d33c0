use std::collections::BTreeMap;
use std::sync::Arc;

use influxdb_line_protocol::{FieldValue as Parsed, ParsedLine, parse_lines};
use proptest::prelude::*;

use super::*;
use crate::model::{DeviceInfo, FieldDef, FieldId, Quality, Schema};

fn device(id: &str, kind: &str, site: &str, feeder: &str) -> DeviceInfo {
    DeviceInfo {
        site: site.into(),
        feeder: feeder.into(),
        ..DeviceInfo::for_test(id, kind)
    }
    .finish()
}

fn reading(dev: DeviceInfo, names: &[&str], values: Vec<(FieldId, f64)>, ts: i64) -> Reading {
    Reading {
        device: Arc::new(dev),
        ts,
        schema: Arc::new(Schema::new(
            names.iter().map(|n| FieldDef::new(*n, None)).collect(),
        )),
        values,
        quality: Quality::Good,
    }
}

/// Parses `buf`, asserting it holds exactly one valid line.
fn parse_one(buf: &str) -> ParsedLine<'_> {
    assert!(buf.ends_with('\n'), "no line terminator: {buf:?}");
    assert_eq!(buf.matches('\n').count(), 1, "more than one line: {buf:?}");
    let mut lines: Vec<_> = parse_lines(buf).collect();
    assert_eq!(lines.len(), 1, "{buf:?}");
    match lines.remove(0) {
        Ok(l) => l,
        Err(e) => panic!("{buf:?} does not parse: {e}"),
    }
}

fn tags_of(l: &ParsedLine<'_>) -> Vec<(String, String)> {
    l.series
        .tag_set
        .iter()
        .flatten()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn measurement_escaping() {
    assert_eq!(escape_measurement("transformer"), "transformer");
    assert_eq!(escape_measurement("my measurement"), r"my\ measurement");
    // `=` is not special in a measurement.
    assert_eq!(escape_measurement("a,b=c"), r"a\,b=c");
    assert_eq!(escape_measurement("#hash"), "_hash");
    assert_eq!(escape_measurement("a#b"), "a#b");
    assert_eq!(escape_measurement(""), "_");
    assert_eq!(escape_measurement("a\nb\tc"), r"a\ b\ c");
}

#[test]
fn key_escaping() {
    assert_eq!(escape_key("voltage_l1"), "voltage_l1");
    assert_eq!(escape_key("a b,c=d"), r"a\ b\,c\=d");
    assert_eq!(escape_key(r#"say "hi""#), r#"say\ "hi""#);
    assert_eq!(escape_key("Öltemp °C"), r"Öltemp\ °C");
    assert_eq!(escape_key("line\r\nbreak"), r"line\ \ break");
    assert_eq!(escape_key(""), "");
}

#[test]
fn backslashes_in_names() {
    // A lone backslash is literal to every parser: written as is.
    assert_eq!(escape_key(r"PLC\A"), r"PLC\A");
    // Before a special character or another backslash it must be doubled.
    assert_eq!(escape_key(r"a\,b"), r"a\\\,b");
    assert_eq!(escape_key(r"a\\b"), r"a\\\b");
    assert_eq!(escape_key(r"a\ b"), r"a\\\ b");
    assert_eq!(escape_measurement(r"a\=b"), r"a\=b");
    // Trailing backslashes are rejected by parsers, even escaped.
    assert_eq!(escape_key(r"tail\"), "tail_");
    assert_eq!(escape_measurement(r"\"), "_");

    for name in [r"PLC\A", r"a\,b", r"a\\b", r"a\ b", r"x\=y"] {
        let mut buf = String::new();
        write_line(
            &mut buf,
            &series_key(name, &[(name, name)]),
            &[(name, FieldValue::I64(1))],
            0,
        );
        let l = parse_one(&buf);
        assert_eq!(l.series.measurement.as_str(), name);
        assert_eq!(tags_of(&l), vec![(name.to_string(), name.to_string())]);
        assert_eq!(l.field_value(name), Some(&Parsed::I64(1)));
    }
}

#[test]
fn series_key_sorts_and_omits_empty_tags() {
    let key = series_key(
        "meter",
        &[
            ("site", "North Yard"),
            ("feeder", ""),
            ("device", "M,1"),
            ("", "x"),
        ],
    );
    assert_eq!(key, r"meter,device=M\,1,site=North\ Yard");
    assert_eq!(series_key("m", &[]), "m");
    // The first of repeated keys wins.
    assert_eq!(
        series_key("m", &[("b", "1"), ("a", "2"), ("b", "3")]),
        "m,a=2,b=1"
    );
}

#[test]
fn device_series_key() {
    let dev = device("TX 07=01", "transformer", "Süd,Werk", "F-3");
    assert_eq!(
        dev.lp_series,
        r"transformer,device=TX\ 07\=01,feeder=F-3,kind=transformer,site=Süd\,Werk"
    );
}

/// Appends the line for `r` to the text in `buf` (the encoder writes bytes; they must be
/// UTF-8).
fn encode(encoder: &mut LineEncoder, buf: &mut String, r: &Reading) {
    let mut bytes = std::mem::take(buf).into_bytes();
    encoder.write_reading(&mut bytes, r);
    *buf = String::from_utf8(bytes).expect("the encoder writes UTF-8");
}

#[test]
fn write_reading_hand_written() {
    let r = reading(
        device("TX-0701", "transformer", "north", "F1"),
        &["voltage l1", "oil,temp", "tap=pos", "unused"],
        vec![
            (0, 230.5),
            (1, f64::NAN),
            (2, 3.0),
            (9, 1.0),
            (1, f64::INFINITY),
            (1, -0.125),
        ],
        1_700_000_000_000_000_000,
    );
    let mut buf = String::from("previous\n");
    let mut encoder = LineEncoder::new();
    encode(&mut encoder, &mut buf, &r);
    let line = "transformer,device=TX-0701,feeder=F1,kind=transformer,site=north \
         voltage\\ l1=230.5,tap\\=pos=3.0,oil\\,temp=-0.125 1700000000000000000\n";
    assert_eq!(buf, format!("previous\n{line}"));
    // The scratch space of the first line leaves nothing in the second.
    let short = reading((*r.device).clone(), &["a"], vec![(0, -7.0)], 5);
    encode(&mut encoder, &mut buf, &short);
    assert_eq!(
        buf,
        format!(
            "previous\n{line}transformer,device=TX-0701,feeder=F1,kind=transformer,site=north a=-7.0 5\n"
        )
    );
}

#[test]
fn write_reading_with_prefixes_longer_than_the_padded_copy() {
    // 31 and 32 bytes of prefix take the fixed-size copy, 33 and more the plain one.
    let names = [
        "a".repeat(29),
        "b".repeat(30),
        "c".repeat(31),
        "d".repeat(45),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let r = reading(
        device("M1", "meter", "s", "f"),
        &names,
        vec![(0, -0.005), (1, 12.34), (2, -65535.0), (3, 1e21)],
        7,
    );
    let mut buf = String::new();
    encode(&mut LineEncoder::new(), &mut buf, &r);
    assert_eq!(
        buf,
        format!(
            "meter,device=M1,feeder=f,kind=meter,site=s {}=-0.005,{}=12.34,{}=-65535.0,{}=1e21 7\n",
            names[0], names[1], names[2], names[3]
        )
    );
}

#[test]
fn write_reading_with_many_long_prefixes_keeps_every_field() {
    // Room is made once per line for padded prefixes; each long one must add its own, or
    // the short fields after a run of long ones would find no room and be lost.
    let names: Vec<String> = (0..20)
        .map(|i| format!("{}{i:02}", "long_field_name_".repeat(6)))
        .chain((0..4).map(|i| format!("s{i}")))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let values: Vec<(FieldId, f64)> = (0..names.len())
        .map(|i| (i as FieldId, -123_456.789 - i as f64))
        .collect();
    let r = reading(device("M1", "meter", "s", "f"), &refs, values.clone(), 9);
    let mut buf = String::new();
    let mut encoder = LineEncoder::new();
    encode(&mut encoder, &mut buf, &r);
    // A second time, with the scratch line already grown.
    encode(&mut encoder, &mut buf, &r);
    let fields: Vec<String> = values
        .iter()
        .map(|(i, v)| {
            format!(
                "{}={}",
                names[usize::from(*i)],
                ryu::Buffer::new().format(*v)
            )
        })
        .collect();
    let line = format!(
        "meter,device=M1,feeder=f,kind=meter,site=s {} 9\n",
        fields.join(",")
    );
    assert_eq!(buf, format!("{line}{line}"));
}

#[test]
fn write_reading_without_finite_values_writes_nothing() {
    let dev = device("M1", "meter", "s", "f");
    let mut buf = String::from("keep\n");
    let mut encoder = LineEncoder::new();
    encode(
        &mut encoder,
        &mut buf,
        &reading(dev.clone(), &["a"], vec![], 1),
    );
    encode(
        &mut encoder,
        &mut buf,
        &reading(
            dev,
            &["a"],
            vec![(0, f64::NAN), (0, f64::NEG_INFINITY), (5, 1.0)],
            1,
        ),
    );
    assert_eq!(buf, "keep\n");
}

#[test]
fn write_line_all_types() {
    let key = series_key("alarm", &[("device", "TX-0701"), ("rule", "oil temp high")]);
    let mut buf = String::new();
    write_line(
        &mut buf,
        &key,
        &[
            ("value", FieldValue::F64(98.25)),
            ("skipped", FieldValue::F64(f64::NAN)),
            ("count", FieldValue::I64(-3)),
            ("seq", FieldValue::U64(u64::MAX)),
            ("active", FieldValue::Bool(true)),
            ("ack", FieldValue::Bool(false)),
            ("", FieldValue::I64(1)),
            (
                "message",
                FieldValue::Str("oil \"hot\" at C:\\temp,\nnow=1"),
            ),
        ],
        -5,
    );
    assert_eq!(
        buf,
        "alarm,device=TX-0701,rule=oil\\ temp\\ high value=98.25,count=-3i,\
         seq=18446744073709551615u,active=true,ack=false,\
         message=\"oil \\\"hot\\\" at C:\\\\temp, now=1\" -5\n"
    );
    let l = parse_one(&buf);
    match l.field_value("message") {
        Some(Parsed::String(s)) => assert_eq!(s.as_str(), "oil \"hot\" at C:\\temp, now=1"),
        other => panic!("{other:?}"),
    }
    assert_eq!(l.timestamp, Some(-5));
}

#[test]
fn write_line_without_fields_writes_nothing() {
    let mut buf = String::new();
    write_line(&mut buf, "m", &[], 0);
    write_line(&mut buf, "m", &[("x", FieldValue::F64(f64::INFINITY))], 0);
    assert!(buf.is_empty());
}

#[test]
fn float_formatting_round_trips() {
    let cases: [(f64, &str); 8] = [
        (230.5, "230.5"),
        (1.0, "1.0"),
        (-0.0, "-0.0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e300, "1e300"),
        (1.5e-7, "1.5e-7"),
        (f64::MIN_POSITIVE / 4.0, "5.562684646268003e-309"),
        (f64::MAX, "1.7976931348623157e308"),
    ];
    for (v, text) in cases {
        let mut buf = String::new();
        write_line(&mut buf, "m", &[("v", FieldValue::F64(v))], 0);
        assert_eq!(buf, format!("m v={text} 0\n"));
        match parse_one(&buf).field_value("v") {
            Some(Parsed::F64(p)) => assert_eq!(p.to_bits(), v.to_bits(), "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

/// Names that survive encoding unchanged: hostile characters (escapes, quotes, unicode) but
/// none of the sanitised cases (control characters, trailing backslash, leading `#`).
fn clean_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,=\"'\\\\#é水°_.-]{0,8}[a-zA-Z0-9 ,=\"'#é水°_.-]"
}

fn clean_measurement() -> impl Strategy<Value = String> {
    clean_name().prop_filter("leading # is a comment", |s| !s.starts_with('#'))
}

fn value() -> impl Strategy<Value = OwnedValue> {
    prop_oneof![
        any::<f64>().prop_map(OwnedValue::F64),
        any::<i64>().prop_map(OwnedValue::I64),
        any::<u64>().prop_map(OwnedValue::U64),
        "[a-z \"\\\\,=é水]{0,10}".prop_map(OwnedValue::Str),
        any::<bool>().prop_map(OwnedValue::Bool),
    ]
}

#[derive(Debug, Clone)]
enum OwnedValue {
    F64(f64),
    I64(i64),
    U64(u64),
    Str(String),
    Bool(bool),
}

impl OwnedValue {
    fn borrow(&self) -> FieldValue<'_> {
        match self {
            OwnedValue::F64(v) => FieldValue::F64(*v),
            OwnedValue::I64(v) => FieldValue::I64(*v),
            OwnedValue::U64(v) => FieldValue::U64(*v),
            OwnedValue::Str(v) => FieldValue::Str(v),
            OwnedValue::Bool(v) => FieldValue::Bool(*v),
        }
    }

    fn matches(&self, parsed: &Parsed<'_>) -> bool {
        match (self, parsed) {
            (OwnedValue::F64(a), Parsed::F64(b)) => a.to_bits() == b.to_bits(),
            (OwnedValue::I64(a), Parsed::I64(b)) => a == b,
            (OwnedValue::U64(a), Parsed::U64(b)) => a == b,
            (OwnedValue::Str(a), Parsed::String(b)) => a == b.as_str(),
            (OwnedValue::Bool(a), Parsed::Boolean(b)) => a == b,
            _ => false,
        }
    }
}

proptest! {
    #[test]
    fn write_line_round_trips(
        measurement in clean_measurement(),
        tags in prop::collection::btree_map(clean_name(), "[a-z ,=\\\\\"é]{0,6}[a-z,=\"é]", 0..5),
        fields in prop::collection::btree_map(clean_name(), value(), 1..6),
        ts in any::<i64>(),
    ) {
        let tag_refs: Vec<(&str, &str)> =
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let field_refs: Vec<(&str, FieldValue<'_>)> =
            fields.iter().map(|(k, v)| (k.as_str(), v.borrow())).collect();
        let mut buf = String::new();
        write_line(&mut buf, &series_key(&measurement, &tag_refs), &field_refs, ts);

        let expected: BTreeMap<&String, &OwnedValue> = fields
            .iter()
            .filter(|(_, v)| !matches!(v, OwnedValue::F64(f) if !f.is_finite()))
            .collect();
        if expected.is_empty() {
            prop_assert!(buf.is_empty());
            return Ok(());
        }
        let line = parse_one(&buf);
        prop_assert_eq!(line.series.measurement.as_str(), measurement.as_str());
        let want_tags: Vec<(String, String)> =
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        prop_assert_eq!(tags_of(&line), want_tags);
        prop_assert_eq!(line.field_set.len(), expected.len());
        for (key, val) in &line.field_set {
            let want = expected.get(&key.to_string());
            prop_assert!(want.is_some_and(|w| w.matches(val)), "{key}={val:?} vs {want:?}");
        }
        prop_assert_eq!(line.timestamp, Some(ts));
    }

    #[test]
    fn write_reading_round_trips(
        id in clean_name(),
        kind in clean_measurement(),
        site in clean_name(),
        feeder in "[a-z ,=]{0,4}",
        names in prop::collection::btree_set(clean_name(), 1..6),
        raw in prop::collection::vec(any::<f64>(), 6),
        ts in any::<i64>(),
    ) {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let values: Vec<(FieldId, f64)> =
            (0..names.len()).map(|i| (i as FieldId, raw[i])).collect();
        let r = reading(device(&id, &kind, &site, &feeder), &names, values.clone(), ts);
        let mut buf = String::new();
        encode(&mut LineEncoder::new(), &mut buf, &r);

        let finite: Vec<(&str, f64)> = values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| (names[usize::from(*i)], *v))
            .collect();
        if finite.is_empty() {
            prop_assert!(buf.is_empty());
            return Ok(());
        }
        let line = parse_one(&buf);
        prop_assert_eq!(line.series.measurement.as_str(), kind.as_str());
        let mut want_tags = vec![
            ("device".to_string(), id.clone()),
            ("kind".to_string(), kind.clone()),
            ("site".to_string(), site.clone()),
        ];
        if !feeder.is_empty() {
            want_tags.push(("feeder".to_string(), feeder.clone()));
        }
        want_tags.sort();
        prop_assert_eq!(tags_of(&line), want_tags);
        let got: Vec<(String, u64)> = line
            .field_set
            .iter()
            .map(|(k, v)| match v {
                Parsed::F64(f) => Ok((k.to_string(), f.to_bits())),
                other => Err(format!("{other:?}")),
            })
            .collect::<Result<_, _>>()
            .map_err(TestCaseError::fail)?;
        let want: Vec<(String, u64)> =
            finite.iter().map(|(k, v)| (k.to_string(), v.to_bits())).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(line.timestamp, Some(ts));
    }

    /// Whatever the names and strings hold, the output is exactly one parseable line.
    #[test]
    fn any_input_gives_one_valid_line(
        measurement in any::<String>(),
        tag_key in any::<String>(),
        tag_value in any::<String>(),
        // Ends in a letter: cannot collide with the `n0` field below.
        field_key in "\\PC*[a-z]",
        text in any::<String>(),
        ts in any::<i64>(),
    ) {
        let mut buf = String::new();
        write_line(
            &mut buf,
            &series_key(&measurement, &[(&tag_key, &tag_value)]),
            &[(&field_key, FieldValue::Str(&text)), ("n0", FieldValue::I64(1))],
            ts,
        );
        let line = parse_one(&buf);
        prop_assert_eq!(line.field_value("n0"), Some(&Parsed::I64(1)));
        prop_assert_eq!(line.timestamp, Some(ts));
    }
}

/// Found by the `lineproto` fuzz target: a doubled backslash at the end of a name.
#[test]
fn backslash_before_a_trailing_backslash_round_trips() {
    assert_eq!(escape_key("\\\\"), "\\_");
    assert_eq!(escape_key("a\\\\"), "a\\_");
    assert_eq!(escape_key("a\\"), "a_");
    assert_eq!(escape_measurement("m\\\\"), "m\\_");
}

#[test]
fn tags_sort_as_written() {
    // "\\" is written "_", which sorts after "\\z".
    assert_eq!(series_key("", &[("\\", "\\"), ("\\z", "x")]), "_,\\z=x,_=_");
}

#[test]
fn integer_fast_path_prints_what_ryu_prints() {
    let mut cases = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        3012.0,
        65535.0,
        -32768.0,
        1e15 - 1.0,
        1e15,
    ];
    cases.extend([
        1e15 + 2.0,
        1e16,
        -1e16,
        9_007_199_254_740_992.0,
        0.5,
        230.1,
        -1e-7,
    ]);
    let mut k: f64 = 1.0;
    while k < 1e17 {
        cases.extend([k, -k, k + 1.0, k - 1.0, (k * 7.0).floor()]);
        k *= 3.0;
    }
    for v in cases {
        let mut out = String::new();
        super::push_f64(&mut out, v);
        assert_eq!(out, ryu::Buffer::new().format_finite(v), "{v:e}");
    }
}

#[test]
fn decimal_fast_path_prints_what_ryu_prints() {
    // Every 16-bit register (signed and unsigned) at the decimal scales profiles use, as the
    // decoder produces them (an exact division), plus larger counters and values around the
    // fast path's limits.
    let mut cases = Vec::new();
    for p in [10.0, 100.0, 1000.0] {
        for raw in -70_000..=70_000 {
            cases.push(f64::from(raw) / p);
        }
        let mut raw: i64 = 70_001;
        while raw < 2_000_000_000_000 {
            cases.push(raw as f64 / p);
            raw = raw * 3 + 7;
        }
    }
    cases.extend([
        0.001,
        0.0011,
        0.0009,
        999_999_999.9,
        1e9 + 0.5,
        -0.015,
        0.1 + 0.2,
    ]);
    let mut fast = 0;
    for v in cases {
        let mut out = String::new();
        super::push_f64(&mut out, v);
        assert_eq!(out, ryu::Buffer::new().format_finite(v), "{v:e}");
        fast += usize::from(v.fract() != 0.0 && super::thousandths(v.abs()).is_some());
    }
    // The fast path is taken for the decimal register values, not only the fallback.
    assert!(fast > 300_000, "fast path taken {fast} times");
}
