//! Bodies of the fuzz targets in `fuzz/`, as plain functions over bytes.
//!
//! Each function takes arbitrary input and either returns or panics; a panic is a bug
//! (a crash on hostile input, or a broken invariant checked here). `cargo fuzz` drives them
//! from `fuzz/fuzz_targets/*.rs`; the property tests in `tests/fuzz_props.rs` drive them
//! with `proptest` in the normal test suite, so the targets also run where no nightly
//! toolchain is installed.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{self, Table};
use crate::sinks::lineproto::{self, FieldValue};
use crate::sinks::spool;
use crate::sources::modbus::client::{ReadData, ReadOnlyClient};
use crate::sources::modbus::compiled::CompiledProfile;
use crate::sources::modbus::decode;
use crate::sources::modbus::planner::PlanLimits;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"))
    })
}

fn profiles() -> &'static Vec<Arc<CompiledProfile>> {
    static P: OnceLock<Vec<Arc<CompiledProfile>>> = OnceLock::new();
    P.get_or_init(|| {
        config::profile::BUILTIN_PROFILES
            .iter()
            .filter_map(|(name, text)| {
                let mut issues = Vec::new();
                let cfg = config::parse_profile_file(text, name, &mut issues)?;
                CompiledProfile::compile(name, &cfg, &PlanLimits::default())
                    .ok()
                    .map(Arc::new)
            })
            .collect()
    })
}

/// Target `modbus_response`: `data[0..2]` pick a built-in profile and one of its planned
/// reads; the rest is what a hostile Modbus TCP server answers to that read. The real
/// client (tokio-modbus behind [`ReadOnlyClient`]) parses it, and whatever it returns goes
/// through the same decoding as in the poller. Must never panic or hang.
pub fn modbus_response(data: &[u8]) {
    let profiles = profiles();
    let (Some(&p), Some(&r)) = (data.first(), data.get(1)) else {
        return;
    };
    let Some(profile) = profiles.get(usize::from(p) % profiles.len().max(1)) else {
        return;
    };
    let requests = &profile.plan.requests;
    let Some(req) = requests.get(usize::from(r) % requests.len().max(1)) else {
        return;
    };
    let answer = data[2..].to_vec();
    runtime().block_on(async {
        let (client_io, mut server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            // Read the request first, as a server would, then answer and hang up.
            let mut request = [0u8; 12];
            let _ = server_io.read_exact(&mut request).await;
            let _ = server_io.write_all(&answer).await;
            let _ = server_io.shutdown().await;
            let mut rest = Vec::new();
            let _ = server_io.read_to_end(&mut rest).await;
        });
        let ctx = tokio_modbus::client::tcp::attach_slave(client_io, tokio_modbus::Slave(1));
        let mut client = ReadOnlyClient::from_context(ctx);
        let result = tokio::time::timeout(Duration::from_secs(5), client.read(1, req)).await;
        drop(client);
        server.abort();
        let Ok(Ok(data)) = result else {
            return;
        };
        let mut raw = profile.raw_buffer();
        match (req.table, data) {
            (Table::Holding | Table::Input, ReadData::Words(w)) => {
                decode::decode_words(req, &w, &profile.registers, &mut raw);
            }
            (_, ReadData::Bits(b)) => {
                decode::decode_bits(req, &b, &profile.registers, &mut raw);
            }
            (_, ReadData::Words(w)) => {
                decode::decode_words(req, &w, &profile.registers, &mut raw);
            }
        }
        let mut values = Vec::new();
        profile.finish(&raw, &mut values);
    });
}

/// A field value owned by a [`LineCase`].
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedField {
    /// Float.
    F64(f64),
    /// Signed integer.
    I64(i64),
    /// Unsigned integer.
    U64(u64),
    /// String.
    Str(String),
    /// Boolean.
    Bool(bool),
}

impl OwnedField {
    /// As the encoder's borrowed value.
    pub fn borrow(&self) -> FieldValue<'_> {
        match self {
            OwnedField::F64(v) => FieldValue::F64(*v),
            OwnedField::I64(v) => FieldValue::I64(*v),
            OwnedField::U64(v) => FieldValue::U64(*v),
            OwnedField::Str(v) => FieldValue::Str(v),
            OwnedField::Bool(v) => FieldValue::Bool(*v),
        }
    }
}

/// One point built from fuzz bytes, for target `lineproto`.
#[derive(Debug, Clone, PartialEq)]
pub struct LineCase {
    /// Measurement (any text).
    pub measurement: String,
    /// Tags (any text).
    pub tags: Vec<(String, String)>,
    /// Fields (any keys, any values).
    pub fields: Vec<(String, OwnedField)>,
    /// Timestamp.
    pub ts: i64,
}

impl LineCase {
    /// Encodes the point with the production encoder.
    pub fn encode(&self) -> String {
        let tags: Vec<(&str, &str)> = self
            .tags
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let fields: Vec<(&str, FieldValue<'_>)> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.borrow()))
            .collect();
        let mut out = String::new();
        lineproto::write_line(
            &mut out,
            &lineproto::series_key(&self.measurement, &tags),
            &fields,
            self.ts,
        );
        out
    }
}

/// Splits fuzz bytes into a [`LineCase`]: `0xFF` separates texts (lossy UTF-8), the byte
/// before each field text picks its type.
pub fn line_case(data: &[u8]) -> LineCase {
    let mut parts = data.split(|&b| b == 0xFF);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let measurement = parts.next().map(text).unwrap_or_default();
    let ts_bytes: Vec<u8> = data.iter().rev().take(8).copied().collect();
    let mut ts = [0u8; 8];
    ts[..ts_bytes.len()].copy_from_slice(&ts_bytes);
    let mut tags = Vec::new();
    let mut fields = Vec::new();
    let mut rest: Vec<&[u8]> = parts.collect();
    let n_tags = rest.len() / 4;
    for chunk in rest.drain(..n_tags * 2).collect::<Vec<_>>().chunks(2) {
        if let [k, v] = chunk {
            tags.push((text(k), text(v)));
        }
    }
    for chunk in rest.chunks(2) {
        let key = chunk.first().map(|k| text(k)).unwrap_or_default();
        let v = chunk.get(1).copied().unwrap_or_default();
        let num = |b: &[u8]| {
            let mut a = [0u8; 8];
            for (i, x) in b.iter().take(8).enumerate() {
                a[i] = *x;
            }
            a
        };
        let value = match v.first().map(|b| b % 5) {
            Some(0) => OwnedField::F64(f64::from_le_bytes(num(&v[1..]))),
            Some(1) => OwnedField::I64(i64::from_le_bytes(num(&v[1..]))),
            Some(2) => OwnedField::U64(u64::from_le_bytes(num(&v[1..]))),
            Some(3) => OwnedField::Bool(v.len() % 2 == 0),
            _ => OwnedField::Str(text(v.get(1..).unwrap_or_default())),
        };
        fields.push((key, value));
    }
    LineCase {
        measurement,
        tags,
        fields,
        ts: i64::from_le_bytes(ts),
    }
}

/// Target `spool_segment`: any bytes as a segment file. The reader must not panic, must
/// stop at the first damaged record or an end mark, and the good prefix must re-encode to
/// the same bytes.
pub fn spool_segment(data: &[u8]) {
    let scan = spool::scan_segment(data);
    assert!(scan.valid_len as usize <= data.len());
    // Without damage the scan ends at the end of the file or at an end mark (zeros).
    let rest = &data[scan.valid_len as usize..];
    assert_eq!(
        scan.damage.is_none(),
        rest.iter().take(spool::RECORD_HEADER).all(|&b| b == 0),
        "a scan without damage must end at the end of the data or an end mark"
    );
    if scan.valid_len == 0 {
        assert!(scan.records.is_empty());
        return;
    }
    let mut rebuilt = spool::SEGMENT_MAGIC.to_vec();
    for r in &scan.records {
        let start = r.offset as usize + spool::RECORD_HEADER;
        let payload = &data[start..start + r.len as usize];
        assert_eq!(r.offset as usize, rebuilt.len(), "records are contiguous");
        spool::encode_record(&mut rebuilt, r.points, payload);
    }
    assert_eq!(&rebuilt[..], &data[..scan.valid_len as usize]);
}

/// Target `spool_journal`: any bytes as the open batch's journal. The reader must not
/// panic and can only return text the file holds; a journal written from what it returned
/// must read back as the same batch, undamaged.
pub fn spool_journal(data: &[u8]) {
    let (batch, _) = spool::journal_batch(data);
    assert!(batch.body.len() <= data.len());
    let mut rebuilt = spool::JOURNAL_MAGIC.to_vec();
    rebuilt.extend_from_slice(&7u64.to_le_bytes());
    let points = u32::try_from(batch.points).unwrap_or(u32::MAX);
    spool::encode_journal_record(&mut rebuilt, 7, points, &batch.body);
    let (again, damaged) = spool::journal_batch(&rebuilt);
    assert!(!damaged, "a journal just written reads back undamaged");
    assert_eq!(again.body, batch.body);
    assert_eq!(again.points, points as usize);
}

/// Target `config`: any text as a configuration file. Loading must return a config or a
/// list of errors that each name the file, never panic.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `profile_dirs` would read the file system; a fixed, missing base keeps it contained.
    match config::load_str(
        text,
        "<fuzz>",
        Path::new("/nonexistent-gridwatch-fuzz"),
        &config::profile::BUILTIN_PROFILES,
    ) {
        Ok(_) => {}
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(!e.file.is_empty());
            }
        }
    }
}

/// The MQTT ingest stage the `mqtt_message` target feeds: JSON, number-per-topic and
/// line-protocol subscriptions, auto-registration on (so any device id is admitted up to
/// the cap), one per thread because ingest keeps per-device state between messages.
fn mqtt_ingest() -> crate::sources::mqtt::Ingest {
    use crate::config::{
        FieldMapping, MqttConfig, PayloadFormat, SubscriptionConfig, TimestampFormat,
    };
    let field = |path: &str, name: &str, equals: Option<&str>| FieldMapping {
        equals: equals.map(Into::into),
        ..FieldMapping::new(path, name)
    };
    let sub = SubscriptionConfig::new;
    let cfg = MqttConfig {
        broker: "127.0.0.1:1883".into(),
        auto_register: true,
        max_auto_devices: 64,
        subscriptions: vec![
            sub(
                "m/{device}/telemetry",
                PayloadFormat::Json,
                vec![
                    field("v.a", "voltage_a", None),
                    field("/i/0", "current_a", None),
                    field("e_imp_kwh", "energy_import", None),
                    field("event", "last_gasp", Some("last_gasp")),
                ],
                TimestampFormat::Rfc3339,
            ),
            sub(
                "ami/{site}/{feeder}/{device}/{field}",
                PayloadFormat::Number,
                vec![],
                TimestampFormat::S,
            ),
            sub("lp/#", PayloadFormat::Line, vec![], TimestampFormat::Ns),
        ],
        ..MqttConfig::default()
    };
    crate::sources::mqtt::Ingest::new(
        &cfg,
        crate::registry::DeviceRegistry::new(&[]),
        crate::status::StatusBoard::new(&[], 0),
        crate::metrics::Registry::new(),
    )
    .unwrap_or_else(|e| panic!("fuzz ingest config: {e}"))
}

/// Target `mqtt_message`: `data[0]` picks a topic shape, the bytes up to the first NUL
/// are the topic's variable part, the rest is the payload (JSON, a number or line
/// protocol, whatever the subscription expects — and garbage). Ingest must never panic,
/// and a message either becomes readings (accepted) or adds none (every other outcome).
/// Returns the outcome (`None` for empty input).
pub fn mqtt_message(data: &[u8]) -> Option<crate::sources::mqtt::Outcome> {
    use crate::sources::mqtt::Outcome;
    thread_local! {
        static INGEST: std::cell::RefCell<Option<crate::sources::mqtt::Ingest>> =
            const { std::cell::RefCell::new(None) };
    }
    let (&shape, rest) = data.split_first()?;
    let (var, payload) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let var = String::from_utf8_lossy(var);
    let topic = match shape % 4 {
        0 => format!("m/{var}/telemetry"),
        1 => format!("ami/S1/F1/{var}/voltage_a"),
        2 => format!("lp/{var}"),
        _ => var.into_owned(),
    };
    // A fixed clock: timestamps in the payload are judged against it, reproducibly.
    let now = 1_795_420_800_000_000_000;
    INGEST.with(|cell| {
        let mut slot = cell.borrow_mut();
        let ingest = slot.get_or_insert_with(mqtt_ingest);
        let mut out = Vec::new();
        let outcome = ingest.handle(&topic, payload, now, &mut out);
        match outcome {
            Outcome::Accepted => assert!(!out.is_empty(), "accepted without a reading"),
            other => assert!(out.is_empty(), "{other:?} but {} readings", out.len()),
        }
        for r in &out {
            assert!(!r.device.id.is_empty(), "a reading without a device");
        }
        Some(outcome)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::mqtt::Outcome;

    /// The target reaches the accepting path of each subscription, so fuzzing explores
    /// past the first rejection.
    #[test]
    fn mqtt_target_accepts_well_formed_messages() {
        let msg = |shape: u8, var: &str, payload: &str| {
            let mut d = vec![shape];
            d.extend_from_slice(var.as_bytes());
            d.push(0);
            d.extend_from_slice(payload.as_bytes());
            mqtt_message(&d)
        };
        let json = r#"{"ts":"2026-11-23T07:59:00Z","v":{"a":230.1},"i":[1.5],"event":null}"#;
        assert_eq!(msg(0, "MQ-1", json), Some(Outcome::Accepted));
        assert_eq!(msg(1, "MQ-2", "231.5"), Some(Outcome::Accepted));
        assert_eq!(
            msg(2, "x", "meter,device=MQ-3 v=1 1795420800000000000"),
            Some(Outcome::Accepted)
        );
        assert_ne!(msg(0, "MQ-1", "{not json"), Some(Outcome::Accepted));
        assert_eq!(mqtt_message(&[]), None);
    }
}
