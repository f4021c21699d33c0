//! Configuration: typed structs, loading from TOML plus environment, and validation.

pub mod profile;
