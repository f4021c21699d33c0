#![no_main]
//! See `gridwatch::fuzzing::modbus_response`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gridwatch::fuzzing::modbus_response(data));
