//! InfluxDB line protocol encoding: the text every TSDB sink sends.
//!
//! Data enters as a [`Reading`] (whose device carries a pre-escaped series key and whose
//! schema carries pre-escaped field keys) or as an explicit list of fields for other
//! measurements (alarms, KPIs). It leaves as lines appended to a caller-owned `String`
//! buffer, one `measurement,tags fields timestamp\n` per point, ready to be batched.
//!
//! Escaping follows the InfluxDB line protocol reference
//! (<https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/#special-characters>):
//!
//! | element                        | escaped                       |
//! |--------------------------------|-------------------------------|
//! | measurement                    | `,` and space                 |
//! | tag key, tag value, field key  | `,`, `=` and space            |
//! | string field value             | `"` and `\`                   |
//!
//! Names and strings are sanitised so that the output is always one valid line per point:
//! - Control characters (newline, carriage return, tab, NUL, ...) become a space. Line
//!   protocol has no escape for them: a newline ends the line, and parsers treat tab as a
//!   separator.
//! - In names, a backslash is doubled only where a parser would otherwise read it as an
//!   escape (before another backslash or a character that is escaped). InfluxDB 2.x reads
//!   `\\` as one backslash but InfluxDB 1.x keeps both, so a lone backslash (`PLC\A`) is
//!   written as is and reads the same in both.
//! - A name may not end in a backslash (the Go and Rust parsers reject it even when it is
//!   escaped): a trailing backslash becomes `_`.
//! - A measurement may not start with `#` (the line would be read as a comment): a leading
//!   `#` becomes `_`. An empty measurement becomes `_`.
//! - Empty tag keys or values are omitted (line protocol forbids them); fields with an
//!   empty key or a non-finite value are skipped, and a point without fields is not written.
//!
//! Floats are written in their shortest form that parses back to the same bits (`ryu`),
//! without the `i` suffix, so a store types them as floats.
//!
//! The per-point functions ([`LineEncoder::write_reading`], [`write_line`]) allocate nothing
//! beyond the growth of the output buffer (and the encoder's scratch line, once): the hot
//! path targets millions of points per second per core.

use crate::model::Reading;

/// A field value for [`write_line`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue<'a> {
    /// A float; non-finite values are skipped.
    F64(f64),
    /// A signed integer, written with the `i` suffix.
    I64(i64),
    /// An unsigned integer, written with the `u` suffix. InfluxDB 1.x rejects unsigned
    /// fields unless built with support for them; prefer [`FieldValue::I64`] there.
    U64(u64),
    /// A string, written quoted and escaped.
    Str(&'a str),
    /// A boolean, written as `true` / `false`.
    Bool(bool),
}

/// Characters escaped in a measurement.
const MEASUREMENT_SPECIAL: &[char] = &[',', ' '];
/// Characters escaped in tag keys, tag values and field keys.
const KEY_SPECIAL: &[char] = &[',', '=', ' '];

/// Escapes a measurement name (commas, spaces; see the module docs for sanitising).
pub fn escape_measurement(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    if s.is_empty() {
        out.push('_');
        return out;
    }
    let (first_hash, rest) = match s.strip_prefix('#') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if first_hash {
        out.push('_');
    }
    push_escaped_name(&mut out, rest, MEASUREMENT_SPECIAL);
    out
}

/// Escapes a tag key, tag value or field key (commas, `=`, spaces; see the module docs).
///
/// An empty input gives an empty output: callers omit such tags and fields.
pub fn escape_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_escaped_name(&mut out, s, KEY_SPECIAL);
    out
}

/// Appends `s` escaped for a name position whose special characters are `special`.
fn push_escaped_name(out: &mut String, s: &str, special: &[char]) {
    // Names may not end in a backslash, escaped or not: the last one becomes `_`. That is
    // decided first, so a backslash before it is judged against the `_` (found by the
    // `lineproto` fuzz target: `\\` used to come out as `\\_`, which reads back as `\_`).
    let (body, trailing) = match s.strip_suffix('\\') {
        Some(b) => (b, true),
        None => (s, false),
    };
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied().or(trailing.then_some('_'));
        match c {
            '\\' => match next {
                // A parser would otherwise drop this backslash as an escape character.
                Some(n) if n == '\\' || n.is_control() || special.contains(&n) => {
                    out.push_str("\\\\");
                }
                Some(_) => out.push('\\'),
                None => out.push('_'),
            },
            c if c.is_control() => out.push_str("\\ "),
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    if trailing {
        out.push('_');
    }
}

/// Appends a string field value, quoted, with `"` and `\` escaped and control characters
/// replaced by a space.
fn push_string_field(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A name as written, unescaped: control characters become spaces and a trailing
/// backslash `_` (see the module docs).
fn written(k: &str) -> impl Iterator<Item = char> + '_ {
    let (body, trailing) = match k.strip_suffix('\\') {
        Some(b) => (b, true),
        None => (k, false),
    };
    body.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .chain(trailing.then_some('_'))
}

/// Builds a series key `measurement,k1=v1,k2=v2` from unescaped parts.
///
/// Tags are sorted by key (byte order, as InfluxDB recommends: it saves the store a sort
/// per point). Tags with an empty key or value are omitted, since line protocol forbids
/// empty tag values; of repeated keys, the first non-empty one is kept.
pub fn series_key(measurement: &str, tags: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(&str, &str)> = tags
        .iter()
        .copied()
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect();
    // Stable, so the first of repeated keys stays first and wins the dedup. Sorted as
    // written (control characters become spaces), so that the line is sorted for the
    // store and reads back in the same order (found by the `lineproto` fuzz target).
    sorted.sort_by(|a, b| written(a.0).cmp(written(b.0)));
    sorted.dedup_by(|later, earlier| written(later.0).eq(written(earlier.0)));

    let mut out = escape_measurement(measurement);
    for (k, v) in sorted {
        out.push(',');
        push_escaped_name(&mut out, k, KEY_SPECIAL);
        out.push('=');
        push_escaped_name(&mut out, v, KEY_SPECIAL);
    }
    out
}

/// Room for any number [`format_f64`] writes: `ryu` needs at most 24 bytes, the fixed
/// forms at most 21 (a sign, 15 integer digits, the point and the 4-byte move of the
/// decimals).
const NUM_MAX: usize = 32;

/// Writes a float into `out` in its shortest round-trip form and returns its length; 0 for
/// a value that is not finite (line protocol has no NaN or infinity).
///
/// Whole numbers below 10^15 (counts, watts, status words: a large share of meter values)
/// take an integer fast path that prints exactly what `ryu` would (`3012.0`, `-0.0`) at a
/// third of the cost; `ryu` switches to exponent notation only from 10^16. Values with up
/// to three decimals take the fast path of [`thousandths`].
///
/// The checks use integer conversions, not `fract()` / `round()`: on the baseline x86-64
/// target those are library calls, and they were a fifth of the encoder's instructions.
/// The conversions are signed: one instruction each there, where unsigned ones are a
/// sequence of five or more (a seventh of the encoder's time). The number goes into a
/// fixed-size array, so that it is written in one piece: a `memcpy` call per part of the
/// number was a fifth of the encoder's time.
#[inline(always)]
fn format_f64(v: f64, out: &mut [u8; NUM_MAX]) -> usize {
    let a = v.abs();
    // False for NaN and the infinities too: they are sorted out on the slow path.
    if a < 1e15 {
        // Exact: a < 10^15 < 2^53, so a whole `a` survives the round trip through i64.
        let whole = a as i64;
        if whole as f64 == a {
            return format_fixed(out, v.is_sign_negative(), whole.unsigned_abs(), 0);
        }
        if let Some(m) = thousandths(a) {
            return format_fixed(out, v < 0.0, m / 1000, (m % 1000) as u32);
        }
    }
    if !v.is_finite() {
        return 0;
    }
    let mut b = ryu::Buffer::new();
    let text = b.format_finite(v).as_bytes();
    let n = text.len().min(NUM_MAX);
    out[..n].copy_from_slice(&text[..n]);
    n
}

/// `a` ≥ 0 in thousandths, when a decimal of one to three places is the shortest round trip
/// of `a` (decimal-scaled registers, the bulk of Modbus data: 230.1 V, 12.34 A, 0.987).
///
/// For 10^-3 ≤ a < 10^9 the spacing of doubles is far below 10^-3, so a decimal of at most
/// three places that reads back as `a` is the only one of its length: exactly what `ryu`'s
/// shortest round trip prints (checked against it exhaustively in the tests). One check
/// covers all three lengths: `m / 1000` and `(m / 10) / 100` are the same rational, and
/// IEEE division rounds both to the same double. `None` for any other value.
///
/// The division looks expensive in a profile but is not: exact checks in integers on the
/// bits of `a` (the decimal within half a unit in the last place) were no faster.
#[inline(always)]
fn thousandths(a: f64) -> Option<u64> {
    if !(1e-3..1e9).contains(&a) {
        return None;
    }
    // a × 1000 < 10^12: the nearest integer is exact as i64 and as f64.
    let m = (a * 1000.0 + 0.5) as i64;
    if m as f64 / 1000.0 != a {
        return None;
    }
    Some(m.unsigned_abs())
}

/// Field prefixes up to this length are copied in one fixed-size move
/// ([`crate::model::FieldDef::lp_padded`]); longer ones are rare (a 30-character field name).
pub const PADDED_PREFIX: usize = 32;

/// Two-digit pairs `00` to `99`, for writing integers two digits at a time.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `000` to `999`, four bytes each (the fourth unused), so that three decimals are written
/// in one 4-byte move.
const DIGIT_TRIPLES: [u8; 4000] = {
    let mut t = [0u8; 4000];
    let mut i = 0;
    while i < 1000 {
        t[i * 4] = b'0' + (i / 100) as u8;
        t[i * 4 + 1] = b'0' + (i / 10 % 10) as u8;
        t[i * 4 + 2] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// Writes `int.frac` (`frac` in thousandths, below 1000; `int` < 10^16) into `out` in plain
/// decimal notation, `-` first when `negative`, with one to three decimals (trailing zeros
/// dropped, at least one kept): `(230, 100)` → `230.1`, `(0, 5)` → `0.005`, `(3012, 0)` →
/// `3012.0`. Returns the length.
///
/// The three decimals are always written and the length keeps one to three of them: no
/// branch on how many there are.
#[inline(always)]
fn format_fixed(out: &mut [u8; NUM_MAX], negative: bool, mut int: u64, frac: u32) -> usize {
    let digits = decimal_digits(int);
    let point = usize::from(negative) + digits;
    out[0] = b'-';
    out[point] = b'.';
    let t = frac as usize * 4;
    out[point + 1..point + 5].copy_from_slice(&DIGIT_TRIPLES[t..t + 4]);
    let decimals =
        1 + usize::from(!frac.is_multiple_of(100)) + usize::from(!frac.is_multiple_of(10));
    let mut at = point;
    while int >= 100 {
        let pair = (int % 100) as usize * 2;
        int /= 100;
        at -= 2;
        out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if int >= 10 {
        let pair = int as usize * 2;
        at -= 2;
        out[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        out[at - 1] = b'0' + int as u8;
    }
    point + 1 + decimals
}

/// The number of decimal digits of `n` (1 for 0).
///
/// With the decimals written as a pair and a digit, this made 50-field lines 20 % faster
/// than `checked_ilog10` and a digit loop (1.85 against 1.53 M lines/s).
#[inline(always)]
fn decimal_digits(n: u64) -> usize {
    // Register values are mostly below 10^4: those take one to four compares.
    if n < 100 {
        1 + usize::from(n >= 10)
    } else if n < 10_000 {
        3 + usize::from(n >= 1000)
    } else {
        n.ilog10() as usize + 1
    }
}

/// Appends a finite float (see [`format_f64`]) to a `String`.
fn push_f64(out: &mut String, v: f64) {
    let mut num = [0; NUM_MAX];
    let n = format_f64(v, &mut num);
    // Only ASCII is ever written there.
    if let Ok(text) = std::str::from_utf8(&num[..n]) {
        out.push_str(text);
    }
}

/// Appends `" {ts}\n"`.
#[inline]
fn push_timestamp(out: &mut String, ts: i64) {
    let mut b = itoa::Buffer::new();
    out.push(' ');
    out.push_str(b.format(ts));
    out.push('\n');
}

/// Encodes readings into lines; owns the scratch space that makes that fast.
///
/// Lines are written as bytes into a byte buffer (a batch body): a `String` takes text only
/// as `&str`, and checking each line as UTF-8 on its way in was 7 % of a 50-field line's
/// cost. Every byte written is ASCII or comes from a `String`, so the output is UTF-8.
#[derive(Debug, Default)]
pub struct LineEncoder {
    line: Vec<u8>,
}

impl LineEncoder {
    /// An encoder with no scratch space yet (it grows to the widest line).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one line for `r`: `{series} {key}={value},... {ts}\n`.
    ///
    /// Uses the device's pre-escaped `lp_series` and the schema's pre-escaped `,key=`
    /// prefixes. Values that are not finite, or whose field id is outside the schema, are
    /// skipped; when no value remains nothing is written.
    pub fn write_reading(&mut self, buf: &mut Vec<u8>, r: &Reading) {
        // The scratch line is written through a cursor and never shrinks: its bytes past the
        // cursor are left from earlier lines and never read. No `Vec` length to keep per
        // copy, and the fixed-size copies may run past the text they carry.
        let line = &mut self.line;
        // Room for every field is made once per line: a field with a padded prefix takes at
        // most `PADDED_PREFIX + NUM_MAX` bytes, and a longer prefix adds its length first.
        let mut room = r.values.len() * (PADDED_PREFIX + NUM_MAX);
        if line.len() < room {
            line.resize(room, 0);
        }
        let mut pos = 0;
        for &(id, v) in &r.values {
            let Some(field) = r.schema.fields.get(usize::from(id)) else {
                continue;
            };
            let prefix = field.lp_prefix.as_bytes();
            if prefix.is_empty() {
                continue;
            }
            if prefix.len() <= PADDED_PREFIX {
                if let Some(room) = line.get_mut(pos..pos + PADDED_PREFIX) {
                    room.copy_from_slice(&field.lp_padded);
                }
            } else {
                room += prefix.len();
                if line.len() < room {
                    line.resize(room, 0);
                }
                if let Some(room) = line.get_mut(pos..pos + prefix.len()) {
                    room.copy_from_slice(prefix);
                }
            }
            // The number is formatted in place. Formatting it on the stack and copying it
            // over was slower: a wide load of bytes just stored one by one stalls.
            let at = pos + prefix.len();
            let n = match line
                .get_mut(at..at + NUM_MAX)
                .map(<&mut [u8; NUM_MAX]>::try_from)
            {
                Some(Ok(room)) => format_f64(v, room),
                _ => 0,
            };
            // A value that is not finite writes nothing: its prefix is left past the cursor.
            if n > 0 {
                pos = at + n;
            }
        }
        let fields = line.get(..pos).unwrap_or_default();
        // The first field follows the tags after a space, not a comma.
        let Some((_comma, rest)) = fields.split_first() else {
            // No field was written: a line without fields is invalid.
            return;
        };
        let mut ts = itoa::Buffer::new();
        buf.extend_from_slice(r.device.lp_series.as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(rest);
        buf.push(b' ');
        buf.extend_from_slice(ts.format(r.ts).as_bytes());
        buf.push(b'\n');
    }
}

/// Appends one line `{series_key} {fields} {ts}\n` for an arbitrary measurement.
///
/// `series_key` must come from [`series_key`] (it is written as is); field keys are
/// escaped here. Non-finite floats and empty keys are skipped; when no field remains
/// nothing is written.
pub fn write_line(buf: &mut String, series_key: &str, fields: &[(&str, FieldValue)], ts: i64) {
    let mark = buf.len();
    buf.push_str(series_key);
    let mut sep = ' ';
    for (key, value) in fields {
        if key.is_empty() {
            continue;
        }
        if let FieldValue::F64(v) = value
            && !v.is_finite()
        {
            continue;
        }
        buf.push(sep);
        sep = ',';
        push_escaped_name(buf, key, KEY_SPECIAL);
        buf.push('=');
        match *value {
            FieldValue::F64(v) => push_f64(buf, v),
            FieldValue::I64(v) => {
                buf.push_str(itoa::Buffer::new().format(v));
                buf.push('i');
            }
            FieldValue::U64(v) => {
                buf.push_str(itoa::Buffer::new().format(v));
                buf.push('u');
            }
            FieldValue::Str(s) => push_string_field(buf, s),
            FieldValue::Bool(b) => buf.push_str(if b { "true" } else { "false" }),
        }
    }
    if sep == ' ' {
        buf.truncate(mark);
        return;
    }
    push_timestamp(buf, ts);
}

#[cfg(test)]
mod tests;
