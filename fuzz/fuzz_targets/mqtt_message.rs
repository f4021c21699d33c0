#![no_main]
//! See `gridwatch::fuzzing::mqtt_message`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gridwatch::fuzzing::mqtt_message(data));
