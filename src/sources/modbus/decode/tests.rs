use super::*;
use crate::config::profile::Table;
use crate::sources::modbus::planner::PlannedItem;

const ORDERS: [WordOrder; 4] = [
    WordOrder::ABCD,
    WordOrder::CDAB,
    WordOrder::BADC,
    WordOrder::DCBA,
];

fn raw(words: &[u16], t: DataType, order: WordOrder) -> f64 {
    match raw_from_words(words, t, order, None) {
        Ok(v) => v,
        Err(e) => panic!("{words:04x?} as {t:?}/{order:?}: {e}"),
    }
}

fn reg(name: &str, table: Table, address: u16, data_type: DataType) -> RegisterConfig {
    RegisterConfig {
        name: name.into(),
        table,
        address,
        data_type,
        order: WordOrder::ABCD,
        scale: 1.0,
        offset: 0.0,
        unit: None,
        bit: None,
        scale_factor: None,
    }
}

#[test]
fn f32_in_all_orders() {
    // 230.5 = 0x4366_8000: bytes A=43 B=66 C=80 D=00.
    let wire: [[u16; 2]; 4] = [
        [0x4366, 0x8000],
        [0x8000, 0x4366],
        [0x6643, 0x0080],
        [0x0080, 0x6643],
    ];
    for (order, words) in ORDERS.into_iter().zip(wire) {
        assert_eq!(raw(&words, DataType::F32, order), 230.5, "{order:?}");
    }
}

#[test]
fn f64_in_all_orders() {
    // π = 0x4009_21FB_5444_2D18.
    let wire: [[u16; 4]; 4] = [
        [0x4009, 0x21FB, 0x5444, 0x2D18],
        [0x2D18, 0x5444, 0x21FB, 0x4009],
        [0x0940, 0xFB21, 0x4454, 0x182D],
        [0x182D, 0x4454, 0xFB21, 0x0940],
    ];
    for (order, words) in ORDERS.into_iter().zip(wire) {
        assert_eq!(
            raw(&words, DataType::F64, order),
            std::f64::consts::PI,
            "{order:?}"
        );
    }
}

#[test]
fn u32_and_i32_in_all_orders() {
    let wire: [[u16; 2]; 4] = [
        [0x1234, 0x5678],
        [0x5678, 0x1234],
        [0x3412, 0x7856],
        [0x7856, 0x3412],
    ];
    for (order, words) in ORDERS.into_iter().zip(wire) {
        assert_eq!(
            raw(&words, DataType::U32, order),
            305_419_896.0,
            "{order:?}"
        );
    }
    // -2 = 0xFFFF_FFFE.
    assert_eq!(raw(&[0xFFFF, 0xFFFE], DataType::I32, WordOrder::ABCD), -2.0);
    assert_eq!(raw(&[0xFFFE, 0xFFFF], DataType::I32, WordOrder::CDAB), -2.0);
    assert_eq!(raw(&[0xFEFF, 0xFFFF], DataType::I32, WordOrder::DCBA), -2.0);
    assert_eq!(
        raw(&[0xFFFF, 0xFFFE], DataType::U32, WordOrder::ABCD),
        4_294_967_294.0
    );
    assert_eq!(
        raw(&[0x8000, 0x0000], DataType::I32, WordOrder::ABCD),
        -2_147_483_648.0
    );
}

#[test]
fn sixteen_bit_values() {
    assert_eq!(raw(&[0xFFFF], DataType::U16, WordOrder::ABCD), 65535.0);
    assert_eq!(raw(&[0xFFFF], DataType::I16, WordOrder::ABCD), -1.0);
    assert_eq!(raw(&[0x8000], DataType::I16, WordOrder::ABCD), -32768.0);
    assert_eq!(raw(&[0x7FFF], DataType::I16, WordOrder::ABCD), 32767.0);
    // One register is big-endian whatever the order says.
    for order in ORDERS {
        assert_eq!(raw(&[0x1234], DataType::U16, order), 4660.0);
    }
    // Extra words are ignored.
    assert_eq!(raw(&[0x0001, 0xFFFF], DataType::U16, WordOrder::ABCD), 1.0);
}

#[test]
fn u64_and_i64() {
    let wire: [[u16; 4]; 4] = [
        [0x0001, 0x0002, 0x0003, 0x0004],
        [0x0004, 0x0003, 0x0002, 0x0001],
        [0x0100, 0x0200, 0x0300, 0x0400],
        [0x0400, 0x0300, 0x0200, 0x0100],
    ];
    for (order, words) in ORDERS.into_iter().zip(wire) {
        assert_eq!(
            raw(&words, DataType::U64, order),
            281_483_566_841_860.0,
            "{order:?}"
        );
    }
    assert_eq!(raw(&[0xFFFF; 4], DataType::I64, WordOrder::ABCD), -1.0);
    // -256 = 0xFFFF_FFFF_FFFF_FF00.
    assert_eq!(
        raw(
            &[0xFFFF, 0xFFFF, 0xFFFF, 0xFF00],
            DataType::I64,
            WordOrder::ABCD
        ),
        -256.0
    );
    assert_eq!(
        raw(
            &[0x00FF, 0xFFFF, 0xFFFF, 0xFFFF],
            DataType::I64,
            WordOrder::DCBA
        ),
        -256.0
    );
    // Beyond 2^53 the lowest bits are lost: 2^53 + 1 reads as 2^53.
    assert_eq!(
        raw(
            &[0x0020, 0x0000, 0x0000, 0x0001],
            DataType::U64,
            WordOrder::ABCD
        ),
        9_007_199_254_740_992.0
    );
    assert_eq!(
        raw(&[0xFFFF; 4], DataType::U64, WordOrder::ABCD),
        u64::MAX as f64
    );
}

#[test]
fn bool_bits_of_a_register() {
    let w = [0xA005]; // 1010 0000 0000 0101
    let bit = |b| raw_from_words(&w, DataType::Bool, WordOrder::ABCD, Some(b));
    assert_eq!(bit(0), Ok(1.0));
    assert_eq!(bit(1), Ok(0.0));
    assert_eq!(bit(2), Ok(1.0));
    assert_eq!(bit(14), Ok(0.0));
    assert_eq!(bit(15), Ok(1.0));
    assert_eq!(bit(16), Err(DecodeError::BitOutOfRange { bit: 16 }));
    assert_eq!(
        raw_from_words(&w, DataType::Bool, WordOrder::ABCD, None),
        Err(DecodeError::BitMissing)
    );
}

#[test]
fn short_input_is_an_error() {
    assert_eq!(
        raw_from_words(&[0x4366], DataType::F32, WordOrder::ABCD, None),
        Err(DecodeError::Short { needed: 2, got: 1 })
    );
    assert_eq!(
        raw_from_words(&[], DataType::U16, WordOrder::ABCD, None),
        Err(DecodeError::Short { needed: 1, got: 0 })
    );
}

#[test]
fn nan_and_infinite_patterns_pass_through() {
    // Meters often report "no value" as a quiet NaN, 0x7FC0_0000.
    assert!(raw(&[0x7FC0, 0x0000], DataType::F32, WordOrder::ABCD).is_nan());
    assert!(raw(&[0xFFFF, 0xFFFF], DataType::F32, WordOrder::ABCD).is_nan());
    assert_eq!(
        raw(&[0x7F80, 0x0000], DataType::F32, WordOrder::ABCD),
        f64::INFINITY
    );
    assert!(raw(&[0x7FF8, 0, 0, 0], DataType::F64, WordOrder::ABCD).is_nan());
}

fn request(table: Table, start: u16, count: u16, items: &[(usize, u16)]) -> ReadRequest {
    ReadRequest {
        table,
        start,
        count,
        items: items
            .iter()
            .map(|&(register, offset)| PlannedItem { register, offset })
            .collect(),
    }
}

fn word_profile() -> Vec<RegisterConfig> {
    let mut alarm = reg("alarm_bit3", Table::Holding, 100, DataType::Bool);
    alarm.bit = Some(3);
    let mut power = reg("power", Table::Holding, 102, DataType::F32);
    power.order = WordOrder::CDAB;
    vec![
        reg("voltage", Table::Holding, 101, DataType::U16),
        alarm,
        power,
        reg("energy", Table::Holding, 104, DataType::U32),
    ]
}

#[test]
fn decode_words_fills_planned_slots() {
    let regs = word_profile();
    let req = request(Table::Holding, 100, 6, &[(1, 0), (0, 1), (2, 2), (3, 4)]);
    let words = [0x0008, 2305, 0x8000, 0x4366, 0x0001, 0x0000];
    let mut out = vec![None; regs.len()];
    assert_eq!(decode_words(&req, &words, &regs, &mut out), 4);
    assert_eq!(
        out,
        vec![Some(2305.0), Some(1.0), Some(230.5), Some(65536.0)]
    );
}

#[test]
fn short_response_leaves_missing_items_empty() {
    let regs = word_profile();
    let req = request(Table::Holding, 100, 6, &[(1, 0), (0, 1), (2, 2), (3, 4)]);
    // Four words: `power` is whole, `energy` is missing entirely.
    let mut out = vec![Some(-1.0); regs.len()];
    assert_eq!(
        decode_words(&req, &[0, 7, 0x8000, 0x4366], &regs, &mut out),
        3
    );
    assert_eq!(out, vec![Some(7.0), Some(0.0), Some(230.5), None]);
    // Five words: `energy` is cut in half.
    let mut out = vec![None; regs.len()];
    assert_eq!(
        decode_words(&req, &[0, 7, 0x8000, 0x4366, 1], &regs, &mut out),
        3
    );
    assert_eq!(out[3], None);
    // Nothing at all.
    assert_eq!(decode_words(&req, &[], &regs, &mut out), 0);
    assert_eq!(out, vec![None; 4]);
}

#[test]
fn out_of_range_indices_are_skipped() {
    let regs = word_profile();
    let req = request(Table::Holding, 100, 2, &[(0, 1), (9, 0)]);
    let mut out = vec![None; 1];
    assert_eq!(decode_words(&req, &[0, 5], &regs, &mut out), 1);
    assert_eq!(out, vec![Some(5.0)]);
}

#[test]
fn decode_bits_fills_planned_slots() {
    let regs = vec![
        reg("breaker_open", Table::Coil, 0, DataType::Bool),
        reg("door_open", Table::Coil, 2, DataType::Bool),
        reg("fan_on", Table::Coil, 9, DataType::Bool),
    ];
    let req = request(Table::Coil, 0, 10, &[(0, 0), (1, 2), (2, 9)]);
    let mut out = vec![None; 3];
    // Padded to a whole byte plus one, as a device may answer.
    let mut bits = vec![false; 16];
    bits[0] = true;
    bits[9] = true;
    assert_eq!(decode_bits(&req, &bits, &regs, &mut out), 3);
    assert_eq!(out, vec![Some(1.0), Some(0.0), Some(1.0)]);
    // Short: the last bit is missing.
    assert_eq!(decode_bits(&req, &bits[..8], &regs, &mut out), 2);
    assert_eq!(out, vec![Some(1.0), Some(0.0), None]);
}

#[test]
fn scale_and_offset() {
    let mut r = reg("x", Table::Holding, 0, DataType::U16);
    assert_eq!(scale(42.0, &r, None), 42.0);
    r.scale = 0.01;
    assert_eq!(scale(1234.0, &r, None), 12.34);
    r.scale = 0.1;
    r.offset = -40.0;
    assert_eq!(scale(650.0, &r, None), 25.0);
    r.scale = 2.5;
    r.offset = 1.0;
    assert_eq!(scale(4.0, &r, None), 11.0);
    r.scale = -1.0;
    r.offset = 0.0;
    assert_eq!(scale(3.0, &r, None), -3.0);
}

#[test]
fn sunspec_scale_factor() {
    let mut r = reg("ac_voltage", Table::Holding, 0, DataType::U16);
    assert_eq!(scale(2305.0, &r, Some(-1.0)), 230.5);
    assert_eq!(scale(1234.0, &r, Some(-2.0)), 12.34);
    assert_eq!(scale(15.0, &r, Some(3.0)), 15000.0);
    assert_eq!(scale(15.0, &r, Some(0.0)), 15.0);
    // Scale, scale factor and offset together: 2305 × 0.1 × 10^-1 + 1.
    r.scale = 0.1;
    r.offset = 1.0;
    assert_eq!(scale(2305.0, &r, Some(-1.0)), 24.05);
}
