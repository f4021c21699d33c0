use proptest::prelude::*;

use super::*;
use crate::config::profile::{DataType, WordOrder};

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

fn hr(name: &str, address: u16, data_type: DataType) -> RegisterConfig {
    reg(name, Table::Holding, address, data_type)
}

fn limits(max_gap: u16) -> PlanLimits {
    PlanLimits {
        max_gap,
        ..PlanLimits::default()
    }
}

/// (table, start, count, [(register, offset)]) of one request, for compact assertions.
type Shape = (Table, u16, u16, Vec<(usize, u16)>);

fn shape(p: &Plan) -> Vec<Shape> {
    p.requests
        .iter()
        .map(|r| {
            let items = r.items.iter().map(|i| (i.register, i.offset)).collect();
            (r.table, r.start, r.count, items)
        })
        .collect()
}

fn planned(regs: &[RegisterConfig], l: &PlanLimits) -> Plan {
    match plan(regs, l) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn defaults_are_the_protocol_limits() {
    let d = PlanLimits::default();
    assert_eq!((d.max_registers, d.max_bits, d.max_gap), (125, 2000, 16));
}

#[test]
fn empty_profile_gives_empty_plan() {
    let p = planned(&[], &PlanLimits::default());
    assert_eq!(p.request_count(), 0);
}

#[test]
fn merges_contiguous_registers() {
    let regs = [
        hr("f", 3, DataType::F32),
        hr("a", 0, DataType::U16),
        hr("b", 1, DataType::I32),
    ];
    let p = planned(&regs, &limits(0));
    assert_eq!(
        shape(&p),
        vec![(Table::Holding, 0, 5, vec![(1, 0), (2, 1), (0, 3)])]
    );
    assert_eq!(
        (p.request_count(), p.register_count(), p.bit_count()),
        (1, 5, 0)
    );
}

#[test]
fn gap_equal_to_max_gap_merges() {
    // Addresses 1 and 2 are unread: a gap of 2.
    let regs = [hr("a", 0, DataType::U16), hr("b", 3, DataType::U16)];
    let p = planned(&regs, &limits(2));
    assert_eq!(
        shape(&p),
        vec![(Table::Holding, 0, 4, vec![(0, 0), (1, 3)])]
    );
}

#[test]
fn gap_one_above_max_gap_splits() {
    let regs = [hr("a", 0, DataType::U16), hr("b", 4, DataType::U16)];
    let p = planned(&regs, &limits(2));
    assert_eq!(
        shape(&p),
        vec![
            (Table::Holding, 0, 1, vec![(0, 0)]),
            (Table::Holding, 4, 1, vec![(1, 0)]),
        ]
    );
}

#[test]
fn zero_gap_merges_only_adjacent() {
    let regs = [
        hr("a", 0, DataType::U32),
        hr("b", 2, DataType::U16),
        hr("c", 4, DataType::U16),
    ];
    let p = planned(&regs, &limits(0));
    assert_eq!(
        shape(&p),
        vec![
            (Table::Holding, 0, 3, vec![(0, 0), (1, 2)]),
            (Table::Holding, 4, 1, vec![(2, 0)]),
        ]
    );
}

#[test]
fn exactly_125_registers_is_one_read() {
    let regs = [
        hr("first", 0, DataType::U16),
        hr("last", 124, DataType::U16),
    ];
    let p = planned(&regs, &limits(200));
    assert_eq!(
        shape(&p),
        vec![(Table::Holding, 0, 125, vec![(0, 0), (1, 124)])]
    );
}

#[test]
fn register_126_starts_a_new_read() {
    let regs = [
        hr("first", 0, DataType::U16),
        hr("next", 125, DataType::U16),
    ];
    let p = planned(&regs, &limits(200));
    assert_eq!(
        shape(&p),
        vec![
            (Table::Holding, 0, 1, vec![(0, 0)]),
            (Table::Holding, 125, 1, vec![(1, 0)]),
        ]
    );
}

#[test]
fn contiguous_block_of_126_splits_at_125() {
    let regs: Vec<_> = (0..126)
        .map(|a| hr(&format!("r{a}"), a, DataType::U16))
        .collect();
    let p = planned(&regs, &limits(0));
    assert_eq!(p.request_count(), 2);
    assert_eq!((p.requests[0].start, p.requests[0].count), (0, 125));
    assert_eq!((p.requests[1].start, p.requests[1].count), (125, 1));
    assert_eq!(p.register_count(), 126);
}

#[test]
fn wide_type_ending_at_the_limit_fits() {
    // u64 at 121 covers 121..=124: 125 registers from 0.
    let regs = [hr("a", 0, DataType::U16), hr("wide", 121, DataType::U64)];
    let p = planned(&regs, &limits(200));
    assert_eq!(
        shape(&p),
        vec![(Table::Holding, 0, 125, vec![(0, 0), (1, 121)])]
    );
}

#[test]
fn wide_type_crossing_the_limit_moves_to_the_next_read() {
    // f64 at 122 would need 0..=125, 126 registers: it is never cut in two.
    let regs = [hr("a", 0, DataType::U16), hr("wide", 122, DataType::F64)];
    let p = planned(&regs, &limits(200));
    assert_eq!(
        shape(&p),
        vec![
            (Table::Holding, 0, 1, vec![(0, 0)]),
            (Table::Holding, 122, 4, vec![(1, 0)]),
        ]
    );
}

#[test]
fn limits_above_the_protocol_are_capped() {
    let l = PlanLimits {
        max_registers: 1000,
        max_bits: 60000,
        max_gap: 1000,
    };
    let regs = [
        hr("a", 0, DataType::U16),
        hr("b", 125, DataType::U16),
        reg("c0", Table::Coil, 0, DataType::Bool),
        reg("c1", Table::Coil, 2000, DataType::Bool),
    ];
    let p = planned(&regs, &l);
    assert_eq!(p.request_count(), 4);
    assert!(p.requests.iter().all(|r| r.count == 1));
}

#[test]
fn smaller_device_limit_is_respected() {
    let l = PlanLimits {
        max_registers: 10,
        ..limits(16)
    };
    let regs = [
        hr("a", 0, DataType::U16),
        hr("b", 9, DataType::U16),
        hr("c", 10, DataType::U16),
    ];
    let p = planned(&regs, &l);
    assert_eq!(
        shape(&p),
        vec![
            (Table::Holding, 0, 10, vec![(0, 0), (1, 9)]),
            (Table::Holding, 10, 1, vec![(2, 0)]),
        ]
    );
}

#[test]
fn tables_are_planned_separately_in_fixed_order() {
    let regs = [
        reg("d", Table::Discrete, 0, DataType::Bool),
        reg("c", Table::Coil, 0, DataType::Bool),
        reg("i", Table::Input, 0, DataType::U16),
        hr("h", 1, DataType::U16),
        reg("c2", Table::Coil, 1, DataType::Bool),
    ];
    let p = planned(&regs, &limits(16));
    assert_eq!(
        shape(&p),
        vec![
            (Table::Holding, 1, 1, vec![(3, 0)]),
            (Table::Input, 0, 1, vec![(2, 0)]),
            (Table::Coil, 0, 2, vec![(1, 0), (4, 1)]),
            (Table::Discrete, 0, 1, vec![(0, 0)]),
        ]
    );
    assert_eq!((p.register_count(), p.bit_count()), (2, 3));
}

#[test]
fn bits_of_one_register_share_its_word() {
    let mut regs: Vec<_> = (0..4u8)
        .map(|b| {
            let mut r = hr(&format!("alarm_{b}"), 10, DataType::Bool);
            r.bit = Some(b);
            r
        })
        .collect();
    regs.push(hr("alarm_word", 10, DataType::U16));
    regs.push(hr("after", 11, DataType::U16));
    let p = planned(&regs, &limits(0));
    assert_eq!(
        shape(&p),
        vec![(
            Table::Holding,
            10,
            2,
            vec![(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 1)]
        )]
    );
}

#[test]
fn overlapping_wide_registers_share_words() {
    // A u64 and the two u32 halves of it, and the same address twice.
    let regs = [
        hr("lo", 2, DataType::U32),
        hr("energy", 0, DataType::U64),
        hr("hi", 0, DataType::U32),
        hr("hi_again", 0, DataType::U32),
    ];
    let p = planned(&regs, &limits(0));
    assert_eq!(
        shape(&p),
        vec![(Table::Holding, 0, 4, vec![(1, 0), (2, 0), (3, 0), (0, 2)])]
    );
}

#[test]
fn coils_merge_up_to_2000_bits() {
    let regs = [
        reg("first", Table::Coil, 0, DataType::Bool),
        reg("last", Table::Coil, 1999, DataType::Bool),
        reg("over", Table::Discrete, 0, DataType::Bool),
        reg("over2", Table::Discrete, 2000, DataType::Bool),
    ];
    let p = planned(&regs, &limits(u16::MAX));
    assert_eq!(
        shape(&p),
        vec![
            (Table::Coil, 0, 2000, vec![(0, 0), (1, 1999)]),
            (Table::Discrete, 0, 1, vec![(2, 0)]),
            (Table::Discrete, 2000, 1, vec![(3, 0)]),
        ]
    );
}

#[test]
fn top_of_address_space() {
    let regs = [
        hr("last_word", 65535, DataType::U16),
        hr("last_pair", 65534, DataType::U32),
        reg("last_coil", Table::Coil, 65535, DataType::Bool),
    ];
    let p = planned(&regs, &limits(0));
    assert_eq!(
        shape(&p),
        vec![
            (Table::Holding, 65534, 2, vec![(1, 0), (0, 1)]),
            (Table::Coil, 65535, 1, vec![(2, 0)]),
        ]
    );
}

#[test]
fn register_past_65535_is_an_error() {
    let regs = [
        hr("ok", 0, DataType::U16),
        hr("energy_total", 65533, DataType::U64),
    ];
    let err = plan(&regs, &limits(16)).err();
    assert_eq!(
        err,
        Some(PlanError::PastEnd {
            register: "energy_total".into(),
            address: 65533,
            span: 4,
        })
    );
    assert!(err.is_some_and(|e| e.to_string().contains("`energy_total`")));
}

#[test]
fn register_longer_than_the_limit_is_an_error() {
    let l = PlanLimits {
        max_registers: 2,
        ..limits(16)
    };
    let regs = [
        hr("power", 0, DataType::F32),
        hr("energy", 2, DataType::F64),
    ];
    assert_eq!(
        plan(&regs, &l),
        Err(PlanError::TooLong {
            register: "energy".into(),
            span: 4,
            limit: 2,
        })
    );
}

fn data_type() -> impl Strategy<Value = DataType> {
    prop_oneof![
        Just(DataType::U16),
        Just(DataType::I16),
        Just(DataType::U32),
        Just(DataType::F32),
        Just(DataType::U64),
        Just(DataType::F64),
        Just(DataType::Bool),
    ]
}

fn table() -> impl Strategy<Value = Table> {
    prop_oneof![
        Just(Table::Holding),
        Just(Table::Input),
        Just(Table::Coil),
        Just(Table::Discrete),
    ]
}

proptest! {
    /// Many scattered registers: every register is planned exactly once, inside a request
    /// of its table that respects the limits, and requests come out in the fixed order.
    #[test]
    fn scattered_registers_respect_the_limits(
        specs in prop::collection::vec((table(), 0u16..=65532, data_type()), 0..300),
        max_registers in 4u16..=200,
        max_bits in 1u16..=3000,
        max_gap in 0u16..=40,
    ) {
        let regs: Vec<_> = specs
            .iter()
            .enumerate()
            .map(|(i, (t, a, ty))| reg(&format!("r{i}"), *t, *a, *ty))
            .collect();
        let l = PlanLimits { max_registers, max_bits, max_gap };
        let p = plan(&regs, &l).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let mut seen = vec![0u32; regs.len()];
        let mut last_key = None;
        for r in &p.requests {
            prop_assert!(r.count >= 1 && r.count <= l.span_limit(r.table));
            let protocol_max = if r.table.is_bits() { 2000 } else { 125 };
            prop_assert!(r.count <= protocol_max);
            prop_assert!(u32::from(r.start) + u32::from(r.count) <= 65536);
            let key = (r.table, r.start);
            prop_assert!(last_key.is_none_or(|k| k < key), "out of order: {last_key:?} then {key:?}");
            last_key = Some(key);

            // Which positions of the request some register needs, to measure the gaps.
            let mut used = vec![false; usize::from(r.count)];
            for item in &r.items {
                let reg = &regs[item.register];
                seen[item.register] += 1;
                prop_assert_eq!(reg.table, r.table);
                prop_assert_eq!(u32::from(reg.address), u32::from(r.start) + u32::from(item.offset));
                let span = usize::from(span_of(reg));
                let off = usize::from(item.offset);
                prop_assert!(off + span <= usize::from(r.count));
                used[off..off + span].iter_mut().for_each(|u| *u = true);
            }
            prop_assert!(used[0] && used[used.len() - 1], "request reads unused edges");
            let mut run = 0u16;
            for u in used {
                run = if u { 0 } else { run + 1 };
                prop_assert!(run <= max_gap, "gap {run} > {max_gap}");
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }
}
