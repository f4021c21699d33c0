#![no_main]
//! The line-protocol encoder on arbitrary names and values: what it writes, a parser reads
//! back, and writing what was read gives the same bytes. See `tests/props/lineproto_check.rs`.
#[path = "../../tests/props/lineproto_check.rs"]
mod lineproto_check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| lineproto_check::check(data));
