//! Inputs: each source turns a protocol into [`crate::model::Reading`]s.

pub mod modbus;
