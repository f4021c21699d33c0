use super::*;

fn reg(data_type: DataType, order: WordOrder) -> Register {
    Register {
        name: "x".to_owned(),
        table: Table::Holding,
        address: 0,
        data_type,
        order,
        scale: 1.0,
        offset: 0.0,
        unit: None,
        bit: None,
        scale_factor: None,
    }
}

#[test]
fn f32_230_5_in_all_orders() {
    // 230.5 = 0x43668000 (sign 0, exponent 134, mantissa 0x668000).
    let cases = [
        (WordOrder::ABCD, [0x4366, 0x8000]),
        (WordOrder::CDAB, [0x8000, 0x4366]),
        (WordOrder::BADC, [0x6643, 0x0080]),
        (WordOrder::DCBA, [0x0080, 0x6643]),
    ];
    for (order, words) in cases {
        let e = encode(&reg(DataType::F32, order), 230.5, 0).unwrap();
        assert_eq!(e.words, words, "{order:?}");
        assert_eq!(e.value, 230.5);
        assert_eq!(e.raw, None);
    }
}

#[test]
fn f64_and_64_bit_orders() {
    // 1.0 = 0x3FF0_0000_0000_0000
    let e = encode(&reg(DataType::F64, WordOrder::ABCD), 1.0, 0).unwrap();
    assert_eq!(e.words, [0x3FF0, 0, 0, 0]);
    let e = encode(&reg(DataType::F64, WordOrder::DCBA), 1.0, 0).unwrap();
    assert_eq!(e.words, [0, 0, 0, 0xF03F]);
    // 0x0001_0002_0003_0004
    let v = 0x0001_0002_0003_0004u64 as f64;
    let e = encode(&reg(DataType::U64, WordOrder::ABCD), v, 0).unwrap();
    assert_eq!(e.words, [1, 2, 3, 4]);
    let e = encode(&reg(DataType::U64, WordOrder::CDAB), v, 0).unwrap();
    assert_eq!(e.words, [4, 3, 2, 1]);
    let e = encode(&reg(DataType::U64, WordOrder::BADC), v, 0).unwrap();
    assert_eq!(e.words, [0x0100, 0x0200, 0x0300, 0x0400]);
    let e = encode(&reg(DataType::I64, WordOrder::ABCD), -2.0, 0).unwrap();
    assert_eq!(e.words, [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]);
    assert_eq!(e.raw, Some(-2));
}

#[test]
fn negative_integers() {
    let e = encode(&reg(DataType::I16, WordOrder::ABCD), -2.0, 0).unwrap();
    assert_eq!(e.words, [0xFFFE]);
    assert_eq!(e.raw, Some(-2));
    // -100000 = 0xFFFE7960
    let e = encode(&reg(DataType::I32, WordOrder::ABCD), -100_000.0, 0).unwrap();
    assert_eq!(e.words, [0xFFFE, 0x7960]);
    let e = encode(&reg(DataType::I32, WordOrder::CDAB), -100_000.0, 0).unwrap();
    assert_eq!(e.words, [0x7960, 0xFFFE]);
    let e = encode(&reg(DataType::I32, WordOrder::BADC), -100_000.0, 0).unwrap();
    assert_eq!(e.words, [0xFEFF, 0x6079]);
    let e = encode(&reg(DataType::I32, WordOrder::DCBA), -100_000.0, 0).unwrap();
    assert_eq!(e.words, [0x6079, 0xFEFF]);
    // An unsigned register cannot go negative: it saturates at 0, like a real meter.
    let e = encode(&reg(DataType::U32, WordOrder::ABCD), -5.0, 0).unwrap();
    assert_eq!(e.words, [0, 0]);
    assert_eq!(e.value, 0.0);
    // 305419896 = 0x12345678
    let e = encode(&reg(DataType::U32, WordOrder::CDAB), 305_419_896.0, 0).unwrap();
    assert_eq!(e.words, [0x5678, 0x1234]);
    let e = encode(&reg(DataType::I16, WordOrder::ABCD), 40_000.0, 0).unwrap();
    assert_eq!(e.raw, Some(32767), "saturates");
}

#[test]
fn scale_and_offset() {
    let mut r = reg(DataType::U16, WordOrder::ABCD);
    r.scale = 0.1;
    let e = encode(&r, 230.5, 0).unwrap();
    assert_eq!(e.words, [2305]);
    assert_eq!(e.raw, Some(2305));
    assert!((e.value - 230.5).abs() < 1e-9);
    // Frequency as in the transformer map: (50.012 - 40) / 0.001 = 10012 = 0x271C.
    r.scale = 0.001;
    r.offset = 40.0;
    let e = encode(&r, 50.012, 0).unwrap();
    assert_eq!(e.words, [0x271C]);
    assert_eq!(e.value, 10012.0 * 0.001 + 40.0);
    // f32 with scale: 3.5 kW stored as 3500 W.
    let mut r = reg(DataType::F32, WordOrder::ABCD);
    r.scale = 0.001;
    let e = encode(&r, 3.5, 0).unwrap();
    assert_eq!(e.words, [0x455A, 0xC000]); // 3500.0f32
    assert_eq!(e.value, 3500.0 * 0.001);
}

#[test]
fn sunspec_scale_factor() {
    let mut r = reg(DataType::I16, WordOrder::ABCD);
    r.scale_factor = Some("v_sf".to_owned());
    // V_SF = -1: 230.4 V -> 2304.
    let e = encode(&r, 230.4, -1).unwrap();
    assert_eq!(e.words, [2304]);
    assert_eq!(e.value, 2304.0 * 1.0 * 0.1);
    // W_SF = 1 with kW scale: 3.27 kW = 3270 W -> 327 x 10^1.
    r.scale = 0.001;
    let e = encode(&r, 3.27, 1).unwrap();
    assert_eq!(e.words, [327]);
    // Negative power with W_SF = 1: -1.5 kW -> -150 = 0xFF6A.
    let e = encode(&r, -1.5, 1).unwrap();
    assert_eq!(e.words, [0xFF6A]);
    assert_eq!(e.raw, Some(-150));
}

#[test]
fn bools() {
    let mut r = reg(DataType::Bool, WordOrder::ABCD);
    r.bit = Some(4);
    assert_eq!(encode(&r, 1.0, 0).unwrap().words, [0x0010]);
    assert_eq!(encode(&r, 0.0, 0).unwrap().words, [0]);
    r.bit = None;
    r.table = Table::Coil;
    let e = encode(&r, 1.0, 0).unwrap();
    assert!(e.bit);
    assert!(e.words.is_empty());
    assert_eq!(e.raw, Some(1));
}

#[test]
fn nan_is_refused() {
    assert!(encode(&reg(DataType::U16, WordOrder::ABCD), f64::NAN, 0).is_err());
}

#[test]
fn builtin_profiles_parse_and_have_canonical_fields() {
    let profiles = builtin_profiles().unwrap();
    let names = |p: &str| -> Vec<String> {
        profiles
            .iter()
            .find(|x| x.name == p)
            .unwrap()
            .fields()
            .map(|r| r.name.clone())
            .collect()
    };
    let tx = names("transformer-monitor");
    for f in [
        "oil_temp",
        "winding_temp",
        "ambient_temp",
        "voltage_a",
        "voltage_b",
        "voltage_c",
        "current_a",
        "current_b",
        "current_c",
        "current_n",
        "active_power",
        "reactive_power",
        "power_factor",
        "frequency",
        "thd_voltage",
        "tap_position",
        "energy_import",
        "alarm_oil_level",
        "alarm_buchholz",
        "alarm_pressure_relief",
        "fan_running",
        "door_open",
    ] {
        assert!(tx.contains(&f.to_owned()), "transformer-monitor lacks {f}");
    }
    let sdm = names("sdm630");
    for f in [
        "voltage_a",
        "voltage_b",
        "voltage_c",
        "current_a",
        "current_b",
        "current_c",
        "power_a",
        "power_b",
        "power_c",
        "pf_a",
        "pf_b",
        "pf_c",
        "voltage_avg",
        "active_power",
        "power_factor",
        "frequency",
        "energy_import",
        "energy_export",
        "voltage_ab",
        "voltage_bc",
        "voltage_ca",
        "current_n",
        "energy_total",
    ] {
        assert!(sdm.contains(&f.to_owned()), "sdm630 lacks {f}");
    }
    let ss = names("sunspec203");
    for f in [
        "current_total",
        "current_a",
        "current_b",
        "current_c",
        "voltage_avg",
        "voltage_a",
        "voltage_b",
        "voltage_c",
        "voltage_ab",
        "voltage_bc",
        "voltage_ca",
        "frequency",
        "active_power",
        "power_a",
        "power_b",
        "power_c",
        "power_factor",
        "energy_export",
        "energy_import",
        "evt_power_failure",
        "evt_under_voltage",
        "evt_over_voltage",
    ] {
        assert!(ss.contains(&f.to_owned()), "sunspec203 lacks {f}");
    }
    assert!(
        !ss.contains(&"a_sf".to_owned()),
        "scale factors are not fields"
    );
    let sunspec = profiles.iter().find(|x| x.name == "sunspec203").unwrap();
    assert_eq!(
        sunspec.register("current_total").unwrap().address,
        40069 + 2
    );
    assert_eq!(
        sunspec.register("energy_import").unwrap().address,
        40069 + 46
    );
    let sdm = profiles.iter().find(|x| x.name == "sdm630").unwrap();
    assert_eq!(sdm.register("energy_total").unwrap().address, 0x156);
}

#[test]
fn validation() {
    let bad_sf = r#"
        [[registers]]
        name = "a"
        table = "holding"
        address = 0
        type = "i16"
        scale_factor = "nope"
    "#;
    assert!(Profile::parse("t", bad_sf).is_err());
    let overlap = r#"
        [[registers]]
        name = "a"
        table = "input"
        address = 0
        type = "f32"
        [[registers]]
        name = "b"
        table = "input"
        address = 1
        type = "u16"
    "#;
    assert!(Profile::parse("t", overlap).is_err());
    let coil_u16 = r#"
        [[registers]]
        name = "a"
        table = "coil"
        address = 0
        type = "u16"
    "#;
    assert!(Profile::parse("t", coil_u16).is_err());
    let unknown_key = r#"
        [[registers]]
        name = "a"
        table = "coil"
        address = 0
        type = "bool"
        colour = "red"
    "#;
    assert!(Profile::parse("t", unknown_key).is_err());
}
