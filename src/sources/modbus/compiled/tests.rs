use super::*;
use crate::config::profile::Table;
use crate::sources::modbus::decode::{decode_bits, decode_words};

fn profile(toml_text: &str) -> ProfileConfig {
    match toml::from_str(toml_text) {
        Ok(p) => p,
        Err(e) => panic!("bad test profile: {e}"),
    }
}

fn compile(toml_text: &str) -> Result<CompiledProfile, ProfileError> {
    CompiledProfile::compile("test", &profile(toml_text), &PlanLimits::default())
}

fn compile_err(toml_text: &str) -> ProfileError {
    match compile(toml_text) {
        Ok(p) => panic!("compiled: {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn empty_profile_is_an_error() {
    assert_eq!(compile_err("registers = []"), ProfileError::Empty);
}

#[test]
fn empty_name_is_an_error() {
    let e = compile_err(
        r#"registers = [
            { name = "a", table = "holding", address = 0, type = "u16" },
            { name = "", table = "holding", address = 1, type = "u16" },
        ]"#,
    );
    assert_eq!(e, ProfileError::EmptyName { index: 1 });
}

#[test]
fn duplicate_name_is_an_error() {
    let e = compile_err(
        r#"registers = [
            { name = "voltage", table = "holding", address = 0, type = "u16" },
            { name = "voltage", table = "input", address = 0, type = "u16" },
        ]"#,
    );
    assert_eq!(
        e,
        ProfileError::DuplicateName {
            register: "voltage".into()
        }
    );
    assert_eq!(e.to_string(), "register `voltage` is defined twice");
}

#[test]
fn bool_from_a_register_needs_a_valid_bit() {
    let e = compile_err(
        r#"registers = [{ name = "trip", table = "holding", address = 0, type = "bool" }]"#,
    );
    assert_eq!(
        e,
        ProfileError::BitMissing {
            register: "trip".into()
        }
    );

    let e = compile_err(
        r#"registers = [{ name = "trip", table = "input", address = 0, type = "bool", bit = 16 }]"#,
    );
    assert_eq!(
        e,
        ProfileError::BitOutOfRange {
            register: "trip".into(),
            bit: 16
        }
    );

    assert!(
        compile(r#"registers = [{ name = "trip", table = "input", address = 0, type = "bool", bit = 15 }]"#)
            .is_ok()
    );
}

#[test]
fn bit_on_other_types_is_an_error() {
    let e = compile_err(
        r#"registers = [{ name = "status", table = "holding", address = 0, type = "u16", bit = 3 }]"#,
    );
    assert_eq!(
        e,
        ProfileError::BitOnNonBool {
            register: "status".into(),
            data_type: DataType::U16
        }
    );
    let e = compile_err(
        r#"registers = [{ name = "door", table = "coil", address = 0, type = "bool", bit = 3 }]"#,
    );
    assert_eq!(
        e,
        ProfileError::BitOnBitTable {
            register: "door".into()
        }
    );
    let e = compile_err(
        r#"registers = [{ name = "door", table = "discrete", address = 0, type = "u16" }]"#,
    );
    assert_eq!(
        e,
        ProfileError::NonBoolOnBitTable {
            register: "door".into(),
            data_type: DataType::U16
        }
    );
}

#[test]
fn scale_factor_must_exist() {
    let e = compile_err(
        r#"registers = [
            { name = "w", table = "holding", address = 0, type = "i16", scale_factor = "w_sf" },
        ]"#,
    );
    assert_eq!(
        e,
        ProfileError::UnknownScaleFactor {
            register: "w".into(),
            scale_factor: "w_sf".into()
        }
    );
}

#[test]
fn scale_factor_must_be_i16() {
    let e = compile_err(
        r#"registers = [
            { name = "w", table = "holding", address = 0, type = "i16", scale_factor = "w_sf" },
            { name = "w_sf", table = "holding", address = 1, type = "u16" },
        ]"#,
    );
    assert_eq!(
        e,
        ProfileError::ScaleFactorNotI16 {
            register: "w".into(),
            scale_factor: "w_sf".into()
        }
    );
}

#[test]
fn scale_factor_cannot_be_scaled_itself() {
    let e = compile_err(
        r#"registers = [
            { name = "w", table = "holding", address = 0, type = "i16", scale_factor = "w" },
        ]"#,
    );
    assert_eq!(
        e,
        ProfileError::ScaleFactorChained {
            register: "w".into(),
            scale_factor: "w".into()
        }
    );
}

#[test]
fn non_finite_scale_is_an_error() {
    let mut p =
        profile(r#"registers = [{ name = "v", table = "holding", address = 0, type = "u16" }]"#);
    p.registers[0].scale = f64::NAN;
    let e = CompiledProfile::compile("test", &p, &PlanLimits::default()).err();
    assert_eq!(
        e,
        Some(ProfileError::NonFinite {
            register: "v".into()
        })
    );
    p.registers[0].scale = 1.0;
    p.registers[0].offset = f64::INFINITY;
    let e = CompiledProfile::compile("test", &p, &PlanLimits::default()).err();
    assert_eq!(
        e,
        Some(ProfileError::NonFinite {
            register: "v".into()
        })
    );
}

#[test]
fn planner_errors_name_the_register() {
    let e = compile_err(
        r#"registers = [{ name = "energy", table = "holding", address = 65534, type = "u64" }]"#,
    );
    assert_eq!(
        e,
        ProfileError::Plan(PlanError::PastEnd {
            register: "energy".into(),
            address: 65534,
            span: 4
        })
    );
    assert!(e.to_string().contains("`energy`"));
}

#[test]
fn smaller_max_gap_wins() {
    let text = r#"
        max_gap = 4
        registers = [
            { name = "a", table = "holding", address = 0, type = "u16" },
            { name = "b", table = "holding", address = 5, type = "u16" },
        ]"#;
    // Profile allows a gap of 4 (addresses 1..=4): one read.
    let p = compile(text).map_err(|e| e.to_string());
    assert_eq!(p.map(|p| p.plan.request_count()), Ok(1));
    // The endpoint forbids gaps: two reads.
    let limits = PlanLimits {
        max_gap: 0,
        ..PlanLimits::default()
    };
    let p = CompiledProfile::compile("test", &profile(text), &limits).map_err(|e| e.to_string());
    assert_eq!(p.map(|p| p.plan.request_count()), Ok(2));
}

/// A SunSpec-style three-phase meter (model 203 layout, trimmed): values with scale-factor
/// registers, a word-swapped float on the input table, alarm bits and a coil.
const SUNSPEC_METER: &str = r#"
    description = "SunSpec-style meter"
    registers = [
        { name = "current", table = "holding", address = 40071, type = "i16", unit = "A", scale_factor = "a_sf" },
        { name = "a_sf", table = "holding", address = 40075, type = "i16" },
        { name = "voltage", table = "holding", address = 40079, type = "u16", unit = "V", scale_factor = "v_sf" },
        { name = "v_sf", table = "holding", address = 40086, type = "i16" },
        { name = "frequency", table = "holding", address = 40087, type = "u16", unit = "Hz", scale_factor = "hz_sf" },
        { name = "hz_sf", table = "holding", address = 40088, type = "i16" },
        { name = "power", table = "holding", address = 40089, type = "i16", unit = "W", scale_factor = "w_sf" },
        { name = "reactive", table = "holding", address = 40090, type = "i16", unit = "var", scale_factor = "var_sf" },
        { name = "var_sf", table = "holding", address = 40091, type = "i16" },
        { name = "w_sf", table = "holding", address = 40093, type = "i16" },
        { name = "energy", table = "holding", address = 40109, type = "u32", unit = "Wh", scale_factor = "wh_sf" },
        { name = "wh_sf", table = "holding", address = 40125, type = "i16" },
        { name = "over_voltage", table = "holding", address = 40130, type = "bool", bit = 0 },
        { name = "phase_loss", table = "holding", address = 40130, type = "bool", bit = 2 },
        { name = "oil_temp", table = "input", address = 0, type = "f32", order = "CDAB", unit = "degC" },
        { name = "spare", table = "input", address = 2, type = "f32", order = "CDAB" },
        { name = "tank_temp", table = "input", address = 4, type = "i16", scale = 0.1, offset = -40.0, unit = "degC" },
        { name = "fan_on", table = "coil", address = 7, type = "bool" },
    ]
"#;

#[test]
fn sunspec_meter_compiles() {
    let p = match compile(SUNSPEC_METER) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let names: Vec<&str> = p.schema.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "current",
            "voltage",
            "frequency",
            "power",
            "reactive",
            "energy",
            "over_voltage",
            "phase_loss",
            "oil_temp",
            "spare",
            "tank_temp",
            "fan_on",
        ]
    );
    assert_eq!(p.schema.fields[1].unit.as_deref(), Some("V"));
    assert_eq!(p.field_of[0], Some(0));
    assert_eq!(p.field_of[1], None); // a_sf
    assert_eq!(p.field_of[2], Some(1));
    assert_eq!(p.sf_of[0], Some(1));
    assert_eq!(p.sf_of[6], Some(9)); // power → w_sf
    assert_eq!(p.sf_of[12], None);

    // 40071..=40130 with gaps of at most 15: one holding read, then input and coil.
    let shape: Vec<(Table, u16, u16)> = p
        .plan
        .requests
        .iter()
        .map(|r| (r.table, r.start, r.count))
        .collect();
    assert_eq!(
        shape,
        [
            (Table::Holding, 40071, 60),
            (Table::Input, 0, 5),
            (Table::Coil, 7, 1)
        ]
    );
}

#[test]
fn sunspec_meter_end_to_end() {
    let p = match compile(SUNSPEC_METER) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut holding = [0u16; 60];
    let mut put = |address: u16, words: &[u16]| {
        let at = usize::from(address - 40071);
        holding[at..at + words.len()].copy_from_slice(words);
    };
    put(40071, &[1234]); // current 12.34 A
    put(40075, &[(-2i16) as u16]);
    put(40079, &[2305]); // voltage 230.5 V
    put(40086, &[(-1i16) as u16]);
    put(40087, &[5001]); // 50.01 Hz
    put(40088, &[(-2i16) as u16]);
    put(40089, &[(-15i16) as u16]); // -1500 W
    put(40090, &[300]); // reactive: scale factor "not implemented"
    put(40091, &[0x8000]);
    put(40093, &[2]);
    put(40109, &[0x0001, 0xE240]); // 123456 × 10^3 Wh
    put(40125, &[3]);
    put(40130, &[0b0000_0000_0000_0001]); // over voltage, no phase loss
    // oil 65.25 = 0x4282_8000 word-swapped; spare is a NaN; tank 0x02A3 = 675 → 27.5 °C.
    let input = [0x8000, 0x4282, 0x0000, 0x7FC0, 675];
    let coils = [true, false, false, false, false, false, false, false];

    let mut raw = p.raw_buffer();
    assert_eq!(raw.len(), p.registers.len());
    let responses = [&holding[..], &input[..]];
    for (req, words) in p.plan.requests.iter().zip(responses) {
        assert_eq!(
            decode_words(req, words, &p.registers, &mut raw),
            req.items.len()
        );
    }
    assert_eq!(
        decode_bits(&p.plan.requests[2], &coils, &p.registers, &mut raw),
        1
    );

    let mut out = vec![];
    p.finish(&raw, &mut out);
    let named: Vec<(&str, f64)> = out.iter().map(|&(id, v)| (p.schema.name(id), v)).collect();
    assert_eq!(
        named,
        [
            ("current", 12.34),
            ("voltage", 230.5),
            ("frequency", 50.01),
            ("power", -1500.0),
            ("energy", 123_456_000.0),
            ("over_voltage", 1.0),
            ("phase_loss", 0.0),
            ("oil_temp", 65.25),
            ("tank_temp", 27.5),
            ("fan_on", 1.0),
        ]
    );
}

#[test]
fn finish_drops_values_without_their_scale_factor() {
    let p = match compile(SUNSPEC_METER) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut raw = p.raw_buffer();
    raw[0] = Some(1234.0); // current, a_sf missing
    raw[2] = Some(2305.0); // voltage
    raw[3] = Some(-1.0); // v_sf
    raw[16] = Some(f64::NAN); // tank_temp
    let mut out = vec![(99, 0.0)];
    p.finish(&raw, &mut out);
    assert_eq!(out, [(99, 0.0), (1, 230.5)]);

    // A short raw buffer does not panic.
    let mut out = vec![];
    p.finish(&raw[..1], &mut out);
    assert!(out.is_empty());
}
