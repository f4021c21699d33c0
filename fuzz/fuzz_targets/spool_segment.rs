#![no_main]
//! See `gridwatch::fuzzing::spool_segment`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gridwatch::fuzzing::spool_segment(data));
