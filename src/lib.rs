//! gridwatch: a daemon that watches an electricity distribution network.
//!
//! Readings flow one way: `sources` (Modbus, MQTT) → `pipeline` → `sinks` (InfluxDB-compatible
//! stores), `history` (for the API) and, later, `detect` → `alarms` → `notify`.

pub mod config;
pub mod model;
pub mod sinks;
pub mod sources;
