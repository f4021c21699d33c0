//! Outputs for telemetry: InfluxDB-compatible stores and line-protocol files.

pub mod lineproto;
