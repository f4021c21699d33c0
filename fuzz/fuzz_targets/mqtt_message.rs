#![no_main]
//! See `gridwatch::fuzzing::mqtt_message` (its outcome is checked inside; not needed here).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gridwatch::fuzzing::mqtt_message(data);
});
