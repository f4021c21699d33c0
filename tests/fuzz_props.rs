//! The fuzz targets of `fuzz/` as property tests: the same bodies (`gridwatch::fuzzing`)
//! on random bytes, so they run in the normal test suite without a nightly toolchain.
//! `PROPTEST_CASES` raises the number of cases (scripts/fuzz-smoke.sh does).
#![allow(clippy::unwrap_used)]

#[path = "props/lineproto_check.rs"]
mod lineproto_check;

use proptest::prelude::*;

proptest! {
    #[test]
    fn lineproto_round_trips(data in prop::collection::vec(any::<u8>(), 0..200)) {
        lineproto_check::check(&data);
    }

    #[test]
    fn lineproto_round_trips_text(text in "\\PC{0,12}(\u{ff}[\\PC\\\\ ,=\"#\n\t]{0,8}){0,8}") {
        lineproto_check::check(&text.replace('\u{ff}', "\u{0}").into_bytes().iter().map(|&b| if b == 0 { 0xFF } else { b }).collect::<Vec<_>>());
    }

    #[test]
    fn spool_segment_reader(data in prop::collection::vec(any::<u8>(), 0..300)) {
        gridwatch::fuzzing::spool_segment(&data);
    }

    #[test]
    fn spool_journal_reader(data in prop::collection::vec(any::<u8>(), 0..300)) {
        gridwatch::fuzzing::spool_journal(&data);
    }

    #[test]
    fn modbus_response_decoder(data in prop::collection::vec(any::<u8>(), 0..300)) {
        gridwatch::fuzzing::modbus_response(&data);
    }

    #[test]
    fn modbus_response_decoder_near_valid(
        sel in any::<[u8; 2]>(),
        tid in 0u16..4,
        len in 0u16..300,
        unit in 0u8..3,
        fc in 0u8..6,
        tail in prop::collection::vec(any::<u8>(), 0..260),
    ) {
        // An MBAP header that is nearly right, so the PDU decoder is reached.
        let mut data = sel.to_vec();
        data.extend_from_slice(&tid.to_be_bytes());
        data.extend_from_slice(&[0, 0]);
        data.extend_from_slice(&len.to_be_bytes());
        data.push(unit);
        data.push(fc);
        data.extend_from_slice(&tail);
        gridwatch::fuzzing::modbus_response(&data);
    }

    #[test]
    fn config_loader(text in "(\\[[a-z.]{1,20}\\]\n|[a-z_]{1,12} = (\"[^\"\n]{0,12}\"|[0-9]{1,6}|true|\\[\\])\n|\\[\\[devices\\]\\]\n){0,12}") {
        gridwatch::fuzzing::config_text(text.as_bytes());
    }

    #[test]
    fn config_loader_bytes(data in prop::collection::vec(any::<u8>(), 0..200)) {
        gridwatch::fuzzing::config_text(&data);
    }

    #[test]
    fn mqtt_message_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        gridwatch::fuzzing::mqtt_message(&data);
    }

    /// Near-valid messages reach deeper than random bytes: a well-formed topic and a
    /// payload that is almost what the subscription expects.
    #[test]
    fn mqtt_message_near_valid(
        shape in 0u8..4,
        device in "[A-Z]{1,3}-[0-9]{1,4}",
        payload in prop_oneof![
            r#"\{"ts":"2026-11-23T0[0-7]:[0-5][0-9]:[0-5][0-9](\.[0-9]{1,3})?Z","v":\{"a":-?[0-9]{1,4}(\.[0-9]{1,3})?\},"i":\[[0-9.e+-]{1,8}\],"event":("last_gasp"|null|1)\}"#,
            "-?[0-9]{1,6}(\\.[0-9]{1,4})?(e-?[0-9]{1,3})?",
            "[a-z]{1,6}(,device=[A-Z0-9]{1,4})? [a-z]{1,4}=(-?[0-9.]{1,8}|[0-9]{1,4}i|\"[ -~]{0,8}\"|t)( 17954[0-9]{14})?",
        ],
    ) {
        let mut data = vec![shape];
        data.extend_from_slice(device.as_bytes());
        data.push(0);
        data.extend_from_slice(payload.as_bytes());
        gridwatch::fuzzing::mqtt_message(&data);
    }
}
