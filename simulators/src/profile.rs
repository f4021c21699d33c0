//! Device profiles as the simulator sees them: parse the shared profile TOML and encode
//! engineering values into the Modbus words or bits a real device would serve.
//!
//! Profile text comes in through [`Profile::parse`] (or the three files shipped in
//! `config/profiles/`, embedded by [`builtin_profiles`]); values leave as [`Encoded`] words
//! via [`encode`]. This is deliberately a separate implementation from the daemon's
//! decoder so that an end-to-end test compares two independent readings of the same
//! contract and a symmetrical bug (the same wrong word order on both sides) shows up.

use serde::Deserialize;

/// Errors from parsing a profile or encoding a value.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The TOML text does not match the profile format.
    #[error("profile {name}: {source}")]
    Toml {
        /// Profile name (file stem).
        name: String,
        /// What the TOML parser said.
        #[source]
        source: toml::de::Error,
    },
    /// The profile parsed but is not consistent (bad reference, wrong type for a table, ...).
    #[error("profile {name}, register {register}: {reason}")]
    Invalid {
        /// Profile name (file stem).
        name: String,
        /// The offending register's name.
        register: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value cannot be encoded (e.g. NaN into an integer register).
    #[error("register {register}: cannot encode {value}: {reason}")]
    Encode {
        /// The register's name.
        register: String,
        /// The value that was offered.
        value: f64,
        /// Why it was refused.
        reason: &'static str,
    },
}

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
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
    /// True for the single-bit tables (coils and discrete inputs).
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }
}

/// How the raw words of a register are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit, one register.
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
    /// One bit: a coil / discrete input, or `bit` of a register.
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

    /// True for the integer types (whose raw value is reported exactly in `Served::raw`).
    pub fn is_integer(self) -> bool {
        !matches!(self, DataType::F32 | DataType::F64)
    }
}

/// Byte order of a multi-register value, named after the bytes of a 32-bit value `A B C D`
/// (A most significant) in the order they travel on the wire; 64-bit values follow the same
/// rule over four words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
pub enum WordOrder {
    /// Big-endian, high word first (the Modbus convention; Eastron, SunSpec).
    #[default]
    ABCD,
    /// Low word first, big-endian bytes inside each word ("word swap").
    CDAB,
    /// High word first, bytes swapped inside each word.
    BADC,
    /// Fully little-endian.
    DCBA,
}

/// One value in a device's register map, as written in the profile file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// Field name (snake_case).
    pub name: String,
    /// Which table holds it.
    pub table: Table,
    /// Zero-based protocol address.
    pub address: u16,
    /// Data type of the raw value.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Word/byte order of multi-register values.
    #[serde(default)]
    pub order: WordOrder,
    /// value = raw × scale × 10^sf + offset.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// Engineering unit, informational.
    #[serde(default)]
    pub unit: Option<String>,
    /// For `bool` in a holding/input register: which bit (0 = LSB).
    #[serde(default)]
    pub bit: Option<u8>,
    /// Name of the i16 register holding this value's SunSpec scale factor.
    #[serde(default)]
    pub scale_factor: Option<String>,
}

fn default_scale() -> f64 {
    1.0
}

fn default_max_gap() -> u16 {
    16
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    #[serde(default)]
    description: String,
    #[serde(default = "default_max_gap")]
    max_gap: u16,
    registers: Vec<Register>,
}

/// A parsed and checked register map.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Profile name (the file stem, e.g. `sdm630`).
    pub name: String,
    /// Human description.
    pub description: String,
    /// Largest gap a reader may merge over (carried for completeness; the simulator serves
    /// gaps as zeros whatever this says).
    pub max_gap: u16,
    /// Registers in file order.
    pub registers: Vec<Register>,
}

impl Profile {
    /// Parses profile TOML text; `name` is the profile name (file stem).
    ///
    /// Checks what the simulator relies on: bit tables hold only `bool`, `bit` is < 16 and
    /// only used on register tables, scale-factor references name an `i16` register of the
    /// same profile, register ranges fit the 16-bit address space and do not overlap
    /// (except `bool` bits sharing one word).
    pub fn parse(name: &str, text: &str) -> Result<Profile, ProfileError> {
        let file: ProfileFile = toml::from_str(text).map_err(|source| ProfileError::Toml {
            name: name.to_owned(),
            source,
        })?;
        let profile = Profile {
            name: name.to_owned(),
            description: file.description,
            max_gap: file.max_gap,
            registers: file.registers,
        };
        profile.validate()?;
        Ok(profile)
    }

    fn invalid(&self, reg: &Register, reason: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            name: self.name.clone(),
            register: reg.name.clone(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ProfileError> {
        for (i, reg) in self.registers.iter().enumerate() {
            if self.registers[..i].iter().any(|r| r.name == reg.name) {
                return Err(self.invalid(reg, "duplicate name"));
            }
            if reg.table.is_bits() {
                if reg.data_type != DataType::Bool {
                    return Err(self.invalid(reg, "coil/discrete tables hold only bool"));
                }
                if reg.bit.is_some() {
                    return Err(self.invalid(reg, "`bit` only applies to register tables"));
                }
            } else if let Some(bit) = reg.bit {
                if reg.data_type != DataType::Bool {
                    return Err(self.invalid(reg, "`bit` only applies to bool"));
                }
                if bit > 15 {
                    return Err(self.invalid(reg, "`bit` must be 0..=15"));
                }
            }
            let end = u32::from(reg.address) + u32::from(reg.data_type.words());
            if end > 0x1_0000 {
                return Err(self.invalid(reg, "extends past address 65535"));
            }
            if let Some(sf) = &reg.scale_factor {
                match self.register(sf) {
                    Some(r) if r.data_type == DataType::I16 && !r.table.is_bits() => {}
                    Some(_) => {
                        return Err(self.invalid(reg, format!("scale factor {sf} is not i16")));
                    }
                    None => return Err(self.invalid(reg, format!("unknown scale factor {sf}"))),
                }
            }
            if !reg.scale.is_finite() || reg.scale == 0.0 || !reg.offset.is_finite() {
                return Err(self.invalid(reg, "scale must be finite and non-zero"));
            }
            // Two bools may share a word through different bits; anything else that overlaps
            // would make the served image ambiguous.
            for other in &self.registers[..i] {
                if other.table != reg.table {
                    continue;
                }
                let (a0, a1) = (reg.address, reg.address + reg.data_type.words() - 1);
                let (b0, b1) = (other.address, other.address + other.data_type.words() - 1);
                if a0 > b1 || b0 > a1 {
                    continue;
                }
                let shared_bits = reg.bit.is_some() && other.bit.is_some() && reg.bit != other.bit;
                if !shared_bits {
                    return Err(self.invalid(reg, format!("overlaps register {}", other.name)));
                }
            }
        }
        Ok(())
    }

    /// The register with this name, if any.
    pub fn register(&self, name: &str) -> Option<&Register> {
        self.registers.iter().find(|r| r.name == name)
    }

    /// True if some register uses `name` as its scale factor (such registers are not fields).
    pub fn is_scale_factor(&self, name: &str) -> bool {
        self.registers
            .iter()
            .any(|r| r.scale_factor.as_deref() == Some(name))
    }

    /// The registers that become fields (everything but scale-factor registers).
    pub fn fields(&self) -> impl Iterator<Item = &Register> {
        self.registers
            .iter()
            .filter(|r| !self.is_scale_factor(&r.name))
    }
}

/// The three profiles shipped in `config/profiles/`, compiled in.
pub const BUILTIN_PROFILE_SOURCES: [(&str, &str); 3] = [
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

/// Parses the three shipped profiles (`transformer-monitor`, `sdm630`, `sunspec203`).
pub fn builtin_profiles() -> Result<Vec<Profile>, ProfileError> {
    BUILTIN_PROFILE_SOURCES
        .iter()
        .map(|(name, text)| Profile::parse(name, text))
        .collect()
}

/// A value ready to serve: its words (or single bit) and what a correct decoder reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Words in wire order (one word for 16-bit types and for `bool` with `bit`: only that
    /// bit set or clear, to be OR-ed into the shared word). Empty for coil/discrete bools.
    pub words: Vec<u16>,
    /// For coil/discrete `bool`: the bit value.
    pub bit: bool,
    /// The raw integer on the wire (integer and bool types only).
    pub raw: Option<i64>,
    /// The engineering value the served words decode to: raw × scale × 10^sf + offset,
    /// evaluated left to right in f64 (for f32 the raw value is the f32 widened to f64).
    pub value: f64,
}

/// Encodes `value` for `reg`, the inverse of decoding: raw = (value − offset) / (scale ×
/// 10^sf), rounded to the nearest integer for integer types and saturated at the type's
/// range (as real meters do rather than wrapping). `sf` is the scale factor register's value
/// (pass 0 when `reg` has none). Bools are true when `value` is non-zero.
pub fn encode(reg: &Register, value: f64, sf: i16) -> Result<Encoded, ProfileError> {
    let factor = reg.scale * 10f64.powi(i32::from(sf));
    let decoded = |raw: f64| raw * reg.scale * 10f64.powi(i32::from(sf)) + reg.offset;
    let refuse = |reason| ProfileError::Encode {
        register: reg.name.clone(),
        value,
        reason,
    };
    if value.is_nan() {
        return Err(refuse("NaN"));
    }
    let want = (value - reg.offset) / factor;
    let int = |min: f64, max: f64| -> f64 { want.round().clamp(min, max) };
    let (words, raw, value_out, bit) = match reg.data_type {
        DataType::Bool => {
            let on = value != 0.0;
            let words = match (reg.table.is_bits(), reg.bit) {
                (true, _) => Vec::new(),
                (false, Some(b)) => vec![u16::from(on) << b],
                (false, None) => vec![u16::from(on)],
            };
            (words, Some(i64::from(on)), f64::from(u8::from(on)), on)
        }
        DataType::U16 => {
            let r = int(0.0, f64::from(u16::MAX)) as u16;
            (vec![r], Some(i64::from(r)), decoded(f64::from(r)), false)
        }
        DataType::I16 => {
            let r = int(f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
            (
                vec![r as u16],
                Some(i64::from(r)),
                decoded(f64::from(r)),
                false,
            )
        }
        DataType::U32 => {
            let r = int(0.0, f64::from(u32::MAX)) as u32;
            let w = order_words(&split_be(u64::from(r), 2), reg.order);
            (w, Some(i64::from(r)), decoded(f64::from(r)), false)
        }
        DataType::I32 => {
            let r = int(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
            let w = order_words(&split_be(u64::from(r as u32), 2), reg.order);
            (w, Some(i64::from(r)), decoded(f64::from(r)), false)
        }
        DataType::U64 => {
            // i64 keeps `raw` one type; counters beyond 2^63 do not occur in practice.
            let r = int(0.0, i64::MAX as f64) as u64;
            let w = order_words(&split_be(r, 4), reg.order);
            (w, Some(r as i64), decoded(r as f64), false)
        }
        DataType::I64 => {
            let r = int(i64::MIN as f64, i64::MAX as f64) as i64;
            let w = order_words(&split_be(r as u64, 4), reg.order);
            (w, Some(r), decoded(r as f64), false)
        }
        DataType::F32 => {
            let r = want as f32;
            let w = order_words(&split_be(u64::from(r.to_bits()), 2), reg.order);
            (w, None, decoded(f64::from(r)), false)
        }
        DataType::F64 => {
            let w = order_words(&split_be(want.to_bits(), 4), reg.order);
            (w, None, decoded(want), false)
        }
    };
    Ok(Encoded {
        words,
        bit,
        raw,
        value: value_out,
    })
}

/// Splits the low `n` words of `v` big-endian (most significant word first).
fn split_be(v: u64, n: usize) -> Vec<u16> {
    (0..n)
        .rev()
        .map(|i| ((v >> (16 * i)) & 0xFFFF) as u16)
        .collect()
}

/// Rearranges big-endian words into the wire order `order` describes.
fn order_words(be: &[u16], order: WordOrder) -> Vec<u16> {
    match order {
        WordOrder::ABCD => be.to_vec(),
        WordOrder::CDAB => be.iter().rev().copied().collect(),
        WordOrder::BADC => be.iter().map(|w| w.swap_bytes()).collect(),
        WordOrder::DCBA => be.iter().rev().map(|w| w.swap_bytes()).collect(),
    }
}

#[cfg(test)]
mod tests;
