//! Simulated transformers and smart meters for gridwatch's demo and tests.
//!
//! A [`model::Fleet`] computes what each unit measures as a function of time (daily load
//! curve, oil thermal lag, energy counters, injected faults); [`modbus`] serves those values
//! over Modbus TCP through the register maps in [`profile`], and [`rtu`] over Modbus RTU (a
//! serial line, or RTU frames over TCP); [`scenario`] applies timed faults; [`mqtt`]
//! publishes smart-meter telemetry as JSON to an MQTT broker; [`load`] is the load harness for
//! benchmarks (many gateways × unit ids, one cheap register map) and [`mqtt_load`] its MQTT
//! counterpart (many meters at a paced aggregate rate over a few connections). This crate
//! must not depend on the `gridwatch` daemon: its register encoder is an independent
//! implementation of the profile contract, so end-to-end tests comparing the two catch bugs
//! that a shared codec would hide.

pub mod load;
pub mod modbus;
pub mod model;
pub mod mqtt;
pub mod mqtt_load;
pub mod profile;
pub mod rtu;
pub mod scenario;

use std::net::SocketAddr;

pub use modbus::{ModbusSimConfig, ModbusSimHandle, Served, start_modbus};
pub use model::{Fault, FleetParams, Phase, UnitInfo, UnitKind, generate};
pub use mqtt::{MeterFault, MqttSimConfig, MqttSimError, MqttSimHandle, Record, start_mqtt};
pub use profile::{Profile, builtin_profiles};
pub use rtu::{RtuLine, start_rtu, start_rtu_over_tcp};

/// Errors from starting a simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A profile could not be parsed or a value not encoded.
    #[error(transparent)]
    Profile(#[from] profile::ProfileError),
    /// The fleet parameters are invalid.
    #[error(transparent)]
    Model(#[from] model::ModelError),
    /// A unit needs a profile that is not in the configured set.
    #[error("profile {0:?} is not loaded")]
    UnknownProfile(String),
    /// The serial port could not be opened.
    #[error("cannot open serial port {port}: {source}")]
    Serial {
        /// The device path.
        port: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The MQTT meter simulator could not start.
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttSimError),
    /// The listen socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
