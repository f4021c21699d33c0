//! The line-protocol round-trip property, shared by the fuzz target `lineproto` and the
//! proptest in `tests/fuzz_props.rs`.

use gridwatch::fuzzing::{LineCase, OwnedField, line_case};
use influxdb_line_protocol::{FieldValue, parse_lines};

/// Encodes the case built from `data`, parses it back and checks: one line (or nothing when
/// no field is writable), the parser accepts it, numbers and booleans are bit-identical,
/// and re-encoding what the parser read reproduces the same bytes.
pub fn check(data: &[u8]) {
    let case = line_case(data);
    let out = case.encode();
    let writable = case
        .fields
        .iter()
        .any(|(k, v)| !k.is_empty() && !matches!(v, OwnedField::F64(f) if !f.is_finite()));
    if !writable {
        assert!(out.is_empty(), "{case:?} -> {out:?}");
        return;
    }
    assert!(
        out.ends_with('\n') && out.matches('\n').count() == 1,
        "{out:?}"
    );
    let lines: Vec<_> = parse_lines(&out).collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    let line = match lines.into_iter().next() {
        Some(Ok(l)) => l,
        other => panic!("parser rejects {out:?} from {case:?}: {other:?}"),
    };
    assert_eq!(line.timestamp, Some(case.ts), "{out:?}");
    let fields: Vec<(String, OwnedField)> = line
        .field_set
        .iter()
        .map(|(k, v)| {
            let v = match v {
                FieldValue::F64(f) => OwnedField::F64(*f),
                FieldValue::I64(i) => OwnedField::I64(*i),
                FieldValue::U64(u) => OwnedField::U64(*u),
                FieldValue::String(s) => OwnedField::Str(s.to_string()),
                FieldValue::Boolean(b) => OwnedField::Bool(*b),
            };
            (k.to_string(), v)
        })
        .collect();
    let want: Vec<&OwnedField> = case
        .fields
        .iter()
        .filter(|(k, v)| !k.is_empty() && !matches!(v, OwnedField::F64(f) if !f.is_finite()))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(fields.len(), want.len(), "{out:?}");
    for ((_, got), want) in fields.iter().zip(&want) {
        match (got, want) {
            (OwnedField::F64(a), OwnedField::F64(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            (OwnedField::Str(_), OwnedField::Str(_)) => {}
            (a, b) => assert_eq!(a, *b, "{out:?}"),
        }
    }
    let reread = LineCase {
        measurement: line.series.measurement.to_string(),
        tags: line
            .series
            .tag_set
            .as_ref()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        fields,
        ts: case.ts,
    };
    assert_eq!(
        reread.encode(),
        out,
        "re-encoding what was read differs; case {case:?}"
    );
}
