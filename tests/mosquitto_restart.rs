//! The shared anonymous broker can be stopped and started again on the same port
//! (`scripts/services.sh stop-mosquitto` / `start-mosquitto`). In its own test binary
//! because every other test on that broker would see the outage.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpStream;

use common::*;

#[test]
fn mosquitto_stops_and_comes_back_on_the_same_port() {
    let s = services();
    assert!(
        TcpStream::connect(&s.mqtt).is_ok(),
        "broker not up at start"
    );
    mosquitto_stop();
    assert!(
        TcpStream::connect(&s.mqtt).is_err(),
        "broker still accepts connections after stop-mosquitto"
    );
    mosquitto_start();
    assert!(TcpStream::connect(&s.mqtt).is_ok(), "broker not back");
    mosquitto_restart();
    assert!(
        TcpStream::connect(&s.mqtt).is_ok(),
        "broker not back after restart"
    );
}
