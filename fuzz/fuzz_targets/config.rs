#![no_main]
//! See `gridwatch::fuzzing::config_text`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gridwatch::fuzzing::config_text(data));
