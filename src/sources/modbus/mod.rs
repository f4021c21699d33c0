//! Modbus polling: profiles are compiled into read plans, responses decoded into readings.

pub mod compiled;
pub mod decode;
pub mod planner;
