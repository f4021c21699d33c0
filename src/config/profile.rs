//! Device profiles: the register map of one device model, shared by every device of that model.
//!
//! A profile is a list of registers; the Modbus planner turns it into reads and the decoder
//! turns the returned words into field values. Profiles come from `[profiles.NAME]` in the
//! main config or from one `NAME.toml` file per profile in `daemon.profile_dirs`.

use serde::{Deserialize, Serialize};

/// One register map, e.g. a transformer monitor or an Eastron SDM630 meter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// What the profile describes, for humans (`gridwatch check` prints it).
    #[serde(default)]
    pub description: String,
    /// Largest gap (in registers, or bits for coil/discrete) the planner may read over to
    /// merge two neighbouring registers into one request. Some devices answer an exception
    /// for unmapped addresses: set 0 for those.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// The registers to read; each becomes one field of the device's readings.
    pub registers: Vec<RegisterConfig>,
}

/// Default merge gap: reading 16 unused registers costs less than a second round trip.
pub fn default_max_gap() -> u16 {
    16
}

/// One value in the device's register map.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Field name written to the store (snake_case; rules and dashboards use these names).
    pub name: String,
    /// Which Modbus table holds the value.
    pub table: Table,
    /// Zero-based protocol address (register 40001 in "Modicon" numbering is address 0).
    pub address: u16,
    /// How the raw words are interpreted.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Word and byte order of multi-register values.
    #[serde(default)]
    pub order: WordOrder,
    /// Multiplier applied to the raw value: value = raw × scale × 10^sf + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit, for people and dashboards (`V`, `A`, `kW`, `degC`, `Hz`, ...).
    #[serde(default)]
    pub unit: Option<String>,
    /// For `bool` taken from a holding/input register: the bit number (0 = least significant).
    #[serde(default)]
    pub bit: Option<u8>,
    /// SunSpec-style scale factor: the name of another (i16) register in this profile whose
    /// value `sf` multiplies this one by 10^sf. Registers used as scale factors are read but
    /// not written as fields.
    #[serde(default)]
    pub scale_factor: Option<String>,
}

/// Default scale: the raw value is already in engineering units.
pub fn default_scale() -> f64 {
    1.0
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Read/write registers, function code 03.
    Holding,
    /// Read-only registers, function code 04.
    Input,
    /// Read/write bits, function code 01.
    Coil,
    /// Read-only bits, function code 02.
    Discrete,
}

impl Table {
    /// True for the bit tables (coils and discrete inputs).
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
}

/// How the raw words of a register are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit (two's complement), one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// Unsigned 64-bit, four registers.
    U64,
    /// Signed 64-bit, four registers.
    I64,
    /// IEEE-754 single precision, two registers.
    F32,
    /// IEEE-754 double precision, four registers.
    F64,
    /// One bit: a coil/discrete input, or `bit` of a register.
    Bool,
}

impl DataType {
    /// Number of 16-bit registers the type occupies (1 for `bool`).
    pub fn words(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

/// Byte order of a multi-register value, named after the bytes of a 32-bit value `A B C D`
/// (A most significant) in the order they travel on the wire. 64-bit values follow the same
/// rule over four words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum WordOrder {
    /// Big-endian words, high word first (the Modbus convention; Eastron, SunSpec).
    #[default]
    ABCD,
    /// Low word first, big-endian bytes in each word ("word swap"; many PLCs).
    CDAB,
    /// High word first, bytes swapped inside each word.
    BADC,
    /// Fully little-endian.
    DCBA,
}

/// Profiles shipped with gridwatch (`config/profiles/`), compiled into the binary so that a
/// config can name them without `profile_dirs`. A file or inline profile of the same name wins.
pub const BUILTIN_PROFILES: [(&str, &str); 3] = [
    (
        "transformer-monitor",
        include_str!("../../config/profiles/transformer-monitor.toml"),
    ),
    ("sdm630", include_str!("../../config/profiles/sdm630.toml")),
    (
        "sunspec203",
        include_str!("../../config/profiles/sunspec203.toml"),
    ),
];
