#![no_main]
//! See `gridwatch::fuzzing::spool_journal`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gridwatch::fuzzing::spool_journal(data));
