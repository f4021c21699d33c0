//! Payload decoding: JSON with a field mapping, a plain number, or InfluxDB line protocol.
//!
//! Bytes of one MQTT message enter [`Mapping::parse`]; zero or more [`Point`]s (a timestamp,
//! maybe a device id from a line-protocol tag, and field values) leave it, or a [`Reject`]
//! that names what was wrong. Everything here is a pure function of the payload, so it is
//! unit-tested and fuzzed without a broker. Values are finite after scaling, or the message
//! is rejected: a reading never carries NaN or infinity.

mod extract;

use std::sync::Arc;

use serde_json::Value;

use crate::config::{PayloadFormat, SubscriptionConfig, TimestampFormat};
use crate::model::{FieldDef, FieldId, Schema, Timestamp};

/// Why a message was rejected. `reason()` is the metric label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    /// Longer than `max_payload`.
    #[error("payload of {0} bytes is larger than max_payload")]
    TooLarge(usize),
    /// Not UTF-8 (number and line formats).
    #[error("payload is not UTF-8")]
    NotUtf8,
    /// Not valid JSON.
    #[error("malformed JSON: {0}")]
    BadJson(String),
    /// Valid JSON, but not an object.
    #[error("JSON payload is not an object")]
    NotAnObject,
    /// A mapped value has the wrong JSON type.
    #[error("{path}: expected {expected}, got {got}")]
    WrongType {
        /// The configured path.
        path: String,
        /// What the mapping needs.
        expected: &'static str,
        /// What the payload had.
        got: &'static str,
    },
    /// A value (after scaling) is NaN or infinite.
    #[error("{0}: value is not finite")]
    NonFinite(String),
    /// The timestamp does not parse or does not fit.
    #[error("bad timestamp: {0}")]
    BadTimestamp(String),
    /// The timestamp is further in the future than `max_future_skew`.
    #[error("timestamp {0} s in the future (device clock ahead?)")]
    FutureTimestamp(i64),
    /// The timestamp is older than `max_age`.
    #[error("timestamp {0} s in the past (device clock reset?)")]
    TooOld(i64),
    /// None of the mapped fields is in the message.
    #[error("no mapped field in the message")]
    NoFields,
    /// A plain-number payload does not parse.
    #[error("not a number: {0:?}")]
    BadNumber(String),
    /// A line-protocol line does not parse.
    #[error("line {line}: {message}")]
    BadLine {
        /// 1-based line number in the payload.
        line: usize,
        /// What is wrong.
        message: &'static str,
    },
    /// A `{field}` topic level or line-protocol field that the mapping does not list.
    #[error("field {0:?} is not in the subscription's fields")]
    UnmappedField(String),
    /// The topic gives no device id (and no line-protocol `device` tag).
    #[error("no device id in the topic or payload")]
    NoDevice,
    /// The device id is empty or too long.
    #[error("invalid device id")]
    BadDevice,
}

impl Reject {
    /// Short label for metrics (`gridwatch_mqtt_rejected_total{reason=...}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Reject::TooLarge(_) => "too_large",
            Reject::NotUtf8 => "not_utf8",
            Reject::BadJson(_) => "bad_json",
            Reject::NotAnObject => "not_an_object",
            Reject::WrongType { .. } => "wrong_type",
            Reject::NonFinite(_) => "non_finite",
            Reject::BadTimestamp(_) => "bad_timestamp",
            Reject::FutureTimestamp(_) => "future_timestamp",
            Reject::TooOld(_) => "too_old",
            Reject::NoFields => "no_fields",
            Reject::BadNumber(_) => "bad_number",
            Reject::BadLine { .. } => "bad_line",
            Reject::UnmappedField(_) => "unmapped_field",
            Reject::NoDevice => "no_device",
            Reject::BadDevice => "bad_device",
        }
    }
}

/// Field values of one point: by id in the subscription's fixed schema, or by name when the
/// subscription takes whatever fields arrive (number / line without `fields`).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Ids into [`Mapping::schema`].
    Mapped(Vec<(FieldId, f64)>),
    /// Field names as they arrived.
    Named(Vec<(String, f64)>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Mapped(v) => v.len(),
            Values::Named(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One decoded point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Device id from the payload (line protocol `device` tag), if any.
    pub device: Option<String>,
    /// Timestamp from the payload (ns); `None` = stamp with the arrival time.
    pub ts: Option<Timestamp>,
    /// The values.
    pub values: Values,
}

#[derive(Debug, Clone)]
struct FieldSpec {
    /// The configured path (for messages).
    path: String,
    /// JSON pointer form of `path`.
    pointer: String,
    scale: f64,
    equals: Option<String>,
}

/// A subscription's payload decoder, compiled once from its config.
#[derive(Debug, Clone)]
pub struct Mapping {
    format: PayloadFormat,
    fields: Vec<FieldSpec>,
    schema: Arc<Schema>,
    ts_format: TimestampFormat,
    max_payload: usize,
    /// The fields' pointers (slot = field index), then the timestamp's.
    paths: extract::Paths,
}

/// `v.a` → `/v/a`; a path starting with `/` is already a JSON pointer.
pub fn json_pointer(path: &str) -> String {
    if path.starts_with('/') || path.is_empty() {
        return path.to_string();
    }
    let mut out = String::with_capacity(path.len() + 4);
    for seg in path.split('.') {
        out.push('/');
        out.push_str(&seg.replace('~', "~0").replace('/', "~1"));
    }
    out
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Mapping {
    /// Compiles `cfg`; `max_payload` bounds the accepted message size.
    pub fn new(cfg: &SubscriptionConfig, max_payload: usize) -> Mapping {
        let fields: Vec<FieldSpec> = cfg
            .fields
            .iter()
            .map(|f| FieldSpec {
                path: f.path.clone(),
                pointer: json_pointer(&f.path),
                scale: f.scale,
                equals: f.equals.clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new(
            cfg.fields
                .iter()
                .map(|f| FieldDef::new(f.name.clone(), f.unit.clone()))
                .collect(),
        ));
        let ts_pointer = json_pointer(&cfg.timestamp.path);
        let paths = extract::Paths::new(
            fields
                .iter()
                .map(|f: &FieldSpec| f.pointer.as_str())
                .chain([ts_pointer.as_str()]),
        );
        Mapping {
            format: cfg.format,
            fields,
            schema,
            ts_format: cfg.timestamp.format,
            max_payload,
            paths,
        }
    }

    /// The fixed schema of mapped values (empty when values arrive by name).
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// Decodes `payload`, appending its points to `out`. `field_level` is the `{field}`
    /// topic level, if the pattern has one. On error `out` is left as it was.
    pub fn parse(
        &self,
        payload: &[u8],
        field_level: Option<&str>,
        out: &mut Vec<Point>,
    ) -> Result<(), Reject> {
        if payload.len() > self.max_payload {
            return Err(Reject::TooLarge(payload.len()));
        }
        match self.format {
            PayloadFormat::Json => out.push(self.parse_json(payload)?),
            PayloadFormat::Number => out.push(self.parse_number(payload, field_level)?),
            PayloadFormat::Line => {
                let start = out.len();
                if let Err(e) = self.parse_lines(payload, out) {
                    out.truncate(start);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn parse_json(&self, payload: &[u8]) -> Result<Point, Reject> {
        let doc =
            extract::extract(payload, &self.paths).map_err(|e| Reject::BadJson(e.to_string()))?;
        if !doc.is_object {
            return Err(Reject::NotAnObject);
        }
        let mut values = Vec::with_capacity(self.fields.len());
        for (i, f) in self.fields.iter().enumerate() {
            let Some(v) = doc.values.get(i).and_then(Option::as_ref) else {
                continue;
            };
            let value = match (&f.equals, v) {
                // An event flag is a per-message boolean: `null` or another event means "not
                // now" (0), so a rule raised on the flag sees the condition end.
                (Some(_), Value::Null) => 0.0,
                (_, Value::Null) => continue,
                (Some(want), Value::String(s)) => f64::from(u8::from(s == want)),
                (Some(_), other) => {
                    return Err(Reject::WrongType {
                        path: f.path.clone(),
                        expected: "a string",
                        got: type_name(other),
                    });
                }
                (None, Value::Number(n)) => n.as_f64().ok_or_else(|| Reject::WrongType {
                    path: f.path.clone(),
                    expected: "a number",
                    got: "an out-of-range number",
                })?,
                (None, Value::Bool(b)) => f64::from(u8::from(*b)),
                (None, other) => {
                    return Err(Reject::WrongType {
                        path: f.path.clone(),
                        expected: "a number",
                        got: type_name(other),
                    });
                }
            };
            let scaled = value * f.scale;
            if !scaled.is_finite() {
                return Err(Reject::NonFinite(f.path.clone()));
            }
            // Fits: validation limits `fields` to FieldId::MAX entries.
            values.push((i as FieldId, scaled));
        }
        if values.is_empty() {
            return Err(Reject::NoFields);
        }
        let ts = match doc.values.get(self.fields.len()).and_then(Option::as_ref) {
            None | Some(Value::Null) => None,
            Some(v) => Some(json_timestamp(v, self.ts_format)?),
        };
        Ok(Point {
            device: None,
            ts,
            values: Values::Mapped(values),
        })
    }

    fn parse_number(&self, payload: &[u8], field_level: Option<&str>) -> Result<Point, Reject> {
        let text = std::str::from_utf8(payload).map_err(|_| Reject::NotUtf8)?;
        let raw = text.trim();
        let value: f64 = raw
            .parse()
            .map_err(|_| Reject::BadNumber(raw.chars().take(40).collect()))?;
        let values = match (field_level, self.fields.as_slice()) {
            // Validation guarantees a `{field}` level or exactly one mapped field.
            (None, [only]) => Values::Mapped(vec![(0, scaled(value, only.scale, &only.path)?)]),
            (None, _) => return Err(Reject::UnmappedField(String::new())),
            (Some(name), []) => Values::Named(vec![(name.to_string(), finite(value, name)?)]),
            (Some(name), fields) => match fields.iter().position(|f| f.path == name) {
                Some(i) => {
                    Values::Mapped(vec![(i as FieldId, scaled(value, fields[i].scale, name)?)])
                }
                None => return Err(Reject::UnmappedField(name.to_string())),
            },
        };
        Ok(Point {
            device: None,
            ts: None,
            values,
        })
    }

    fn parse_lines(&self, payload: &[u8], out: &mut Vec<Point>) -> Result<(), Reject> {
        let text = std::str::from_utf8(payload).map_err(|_| Reject::NotUtf8)?;
        let mut any = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message| Reject::BadLine {
                line: n + 1,
                message,
            };
            let parsed = parse_line(line).map_err(bad)?;
            let ts = match parsed.ts {
                None => None,
                Some(raw) => Some(epoch_int(raw, self.ts_format).ok_or_else(|| {
                    Reject::BadTimestamp(format!("{raw} does not fit in nanoseconds"))
                })?),
            };
            let values = if self.fields.is_empty() {
                let mut v = Vec::with_capacity(parsed.fields.len());
                for (k, x) in parsed.fields {
                    let x = finite(x, &k)?;
                    v.push((k, x));
                }
                Values::Named(v)
            } else {
                let mut v = Vec::with_capacity(self.fields.len());
                for (k, x) in &parsed.fields {
                    if let Some(i) = self.fields.iter().position(|f| &f.path == k) {
                        v.push((i as FieldId, scaled(*x, self.fields[i].scale, k)?));
                    }
                }
                Values::Mapped(v)
            };
            if values.is_empty() {
                return Err(Reject::NoFields);
            }
            out.push(Point {
                device: parsed.device,
                ts,
                values,
            });
            any = true;
        }
        if any { Ok(()) } else { Err(Reject::NoFields) }
    }
}

fn finite(v: f64, what: &str) -> Result<f64, Reject> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(Reject::NonFinite(what.to_string()))
    }
}

fn scaled(v: f64, scale: f64, what: &str) -> Result<f64, Reject> {
    finite(v * scale, what)
}

/// An integer epoch timestamp in `format` units → ns (`rfc3339` means ns here, the
/// line-protocol default precision). `None` on overflow.
fn epoch_int(raw: i64, format: TimestampFormat) -> Option<Timestamp> {
    let mult: i64 = match format {
        TimestampFormat::S => 1_000_000_000,
        TimestampFormat::Ms => 1_000_000,
        TimestampFormat::Us => 1_000,
        TimestampFormat::Ns | TimestampFormat::Rfc3339 => 1,
    };
    raw.checked_mul(mult)
}

/// An RFC 3339 timestamp → ns since the epoch.
pub fn rfc3339_ns(s: &str) -> Result<Timestamp, Reject> {
    if let Some(ts) = rfc3339_common(s.as_bytes()) {
        return Ok(ts);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| Reject::BadTimestamp(format!("{s:?} is not RFC 3339")))
}

/// The form meters send, `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, without chrono's
/// general parser (a fifth of the cost of a message). `None` for anything else, leap
/// seconds included, which then goes to chrono.
fn rfc3339_common(b: &[u8]) -> Option<Timestamp> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut v = 0i64;
        for &c in b.get(r)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let sep = |i: usize, c: u8| b.get(i).is_some_and(|x| x.eq_ignore_ascii_case(&c));
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max_day = *month_days.get(usize::try_from(month).ok()?.checked_sub(1)?)?;
    if day < 1 || day > max_day || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..9 {
            nanos *= 10;
        }
    }
    let offset_s = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (the proleptic Gregorian "days from civil").
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// A JSON timestamp value → ns since the epoch.
pub fn json_timestamp(v: &Value, format: TimestampFormat) -> Result<Timestamp, Reject> {
    match (format, v) {
        (TimestampFormat::Rfc3339, Value::String(s)) => rfc3339_ns(s),
        (TimestampFormat::Rfc3339, other) => Err(Reject::WrongType {
            path: "timestamp".into(),
            expected: "an RFC 3339 string",
            got: type_name(other),
        }),
        (unit, Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return epoch_int(i, unit)
                    .ok_or_else(|| Reject::BadTimestamp(format!("{i} does not fit")));
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            let mult = match unit {
                TimestampFormat::S => 1e9,
                TimestampFormat::Ms => 1e6,
                TimestampFormat::Us => 1e3,
                TimestampFormat::Ns | TimestampFormat::Rfc3339 => 1.0,
            };
            let ns = (f * mult).round();
            // i64 spans ±9.2e18 ns (years 1677–2262).
            if ns.is_finite() && ns.abs() < 9.2e18 {
                Ok(ns as i64)
            } else {
                Err(Reject::BadTimestamp(format!("{f} does not fit")))
            }
        }
        (_, other) => Err(Reject::WrongType {
            path: "timestamp".into(),
            expected: "a number",
            got: type_name(other),
        }),
    }
}

/// Rejects timestamps outside `[now - max_age, now + max_future]` (all ns).
pub fn check_window(
    ts: Timestamp,
    now: Timestamp,
    max_future: i64,
    max_age: i64,
) -> Result<(), Reject> {
    if ts > now.saturating_add(max_future) {
        return Err(Reject::FutureTimestamp((ts - now) / 1_000_000_000));
    }
    if ts < now.saturating_sub(max_age) {
        return Err(Reject::TooOld(now.saturating_sub(ts) / 1_000_000_000));
    }
    Ok(())
}

/// One parsed line-protocol line.
#[derive(Debug, Default, PartialEq)]
struct Line {
    device: Option<String>,
    fields: Vec<(String, f64)>,
    ts: Option<i64>,
}

/// Splits at the first unescaped `sep` outside double quotes.
fn split_unescaped(s: &str, sep: u8) -> (&str, Option<&str>) {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut quoted = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'"' => quoted = !quoted,
            c if c == sep && !quoted => return (&s[..i], Some(&s[i + 1..])),
            _ => {}
        }
        i += 1;
    }
    (s, None)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (',' | ' ' | '=' | '"' | '\\')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses `measurement[,tag=v...] field=v[,field=v...] [timestamp]`. String fields are
/// skipped; integers (`1i`, `1u`) and booleans become floats. The measurement is ignored:
/// the device's kind is the measurement gridwatch writes.
fn parse_line(line: &str) -> Result<Line, &'static str> {
    let (series, rest) = split_unescaped(line, b' ');
    let rest = rest.ok_or("no fields")?;
    let (fields_part, ts_part) = split_unescaped(rest.trim_start(), b' ');
    let mut out = Line::default();
    let (measurement, mut tags) = split_unescaped(series, b',');
    if measurement.is_empty() {
        return Err("empty measurement");
    }
    while let Some(t) = tags {
        let (tag, next) = split_unescaped(t, b',');
        let (k, v) = split_unescaped(tag, b'=');
        let v = v.ok_or("tag without `=`")?;
        if k.is_empty() || v.is_empty() {
            return Err("empty tag key or value");
        }
        if k == "device" {
            out.device = Some(unescape(v));
        }
        tags = next;
    }
    let mut fields = Some(fields_part);
    while let Some(f) = fields {
        let (field, next) = split_unescaped(f, b',');
        let (k, v) = split_unescaped(field, b'=');
        let v = v.ok_or("field without `=`")?;
        if k.is_empty() || v.is_empty() {
            return Err("empty field key or value");
        }
        let value = if v.starts_with('"') {
            if v.len() < 2 || !v.ends_with('"') {
                return Err("unterminated string field");
            }
            None
        } else if let Some(int) = v.strip_suffix('i').or_else(|| v.strip_suffix('u')) {
            Some(int.parse::<i64>().map_err(|_| "bad integer field")? as f64)
        } else {
            match v {
                "t" | "T" | "true" | "True" | "TRUE" => Some(1.0),
                "f" | "F" | "false" | "False" | "FALSE" => Some(0.0),
                _ => Some(v.parse::<f64>().map_err(|_| "bad float field")?),
            }
        };
        if let Some(x) = value {
            out.fields.push((unescape(k), x));
        }
        fields = next;
    }
    if let Some(ts) = ts_part.map(str::trim).filter(|t| !t.is_empty()) {
        out.ts = Some(ts.parse().map_err(|_| "bad timestamp")?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
