//! Compiled profiles: a checked register map with its field schema and read plan.
//!
//! Data enters as a [`ProfileConfig`] from the config (once, at start-up) and leaves as a
//! [`CompiledProfile`] shared by every device of that model. At poll time the decoder fills
//! a raw buffer ([`CompiledProfile::raw_buffer`]) from the responses of `plan`, and
//! [`CompiledProfile::finish`] turns it into the `(FieldId, f64)` values of a reading.
//!
//! Everything that can be wrong with a register map is found here, so the poll loop never
//! meets a configuration error: every error names the offending register.

use std::collections::HashMap;
use std::sync::Arc;

use thiserror::Error;

use crate::config::profile::{DataType, ProfileConfig, RegisterConfig};
use crate::model::{FieldDef, FieldId, Schema};
use crate::sources::modbus::decode::Scaling;
use crate::sources::modbus::planner::{Plan, PlanError, PlanLimits, plan};

/// Valid SunSpec scale factors: "sunssf" values are in -10..=10 (SunSpec Information Model
/// Specification, "Scale Factors"). 0x8000 (-32768) means "not implemented"; either way a
/// value outside the range makes the scaled value meaningless, so it is dropped.
const SUNSPEC_SF_RANGE: std::ops::RangeInclusive<f64> = -10.0..=10.0;

/// A register map that cannot be used. The caller adds the profile name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProfileError {
    /// The profile lists no registers.
    #[error("the profile has no registers")]
    Empty,
    /// A register without a name.
    #[error("register #{index} has an empty name")]
    EmptyName {
        /// Position of the register in the profile (from 0).
        index: usize,
    },
    /// Two registers share a name.
    #[error("register `{register}` is defined twice")]
    DuplicateName {
        /// The repeated name.
        register: String,
    },
    /// A `bool` from a holding/input register without `bit`.
    #[error("register `{register}`: a bool from a register table needs `bit` (0..=15)")]
    BitMissing {
        /// Name of the register.
        register: String,
    },
    /// `bit` outside a 16-bit register.
    #[error("register `{register}`: bit {bit} is outside a 16-bit register (0..=15)")]
    BitOutOfRange {
        /// Name of the register.
        register: String,
        /// The configured bit.
        bit: u8,
    },
    /// `bit` on a type other than `bool`.
    #[error("register `{register}`: `bit` only applies to type bool, not {data_type:?}")]
    BitOnNonBool {
        /// Name of the register.
        register: String,
        /// Its type.
        data_type: DataType,
    },
    /// `bit` on a coil or discrete input, which is already a single bit.
    #[error("register `{register}`: `bit` does not apply to coil/discrete tables")]
    BitOnBitTable {
        /// Name of the register.
        register: String,
    },
    /// A coil or discrete input with a type other than `bool`.
    #[error("register `{register}`: coil/discrete tables hold bits, not {data_type:?}")]
    NonBoolOnBitTable {
        /// Name of the register.
        register: String,
        /// Its type.
        data_type: DataType,
    },
    /// `scale_factor` names no register of the profile.
    #[error(
        "register `{register}`: scale factor `{scale_factor}` is not a register of the profile"
    )]
    UnknownScaleFactor {
        /// Name of the register.
        register: String,
        /// The name it refers to.
        scale_factor: String,
    },
    /// `scale_factor` names a register that is not `i16` (SunSpec `sunssf` is i16).
    #[error("register `{register}`: scale factor `{scale_factor}` must be of type i16")]
    ScaleFactorNotI16 {
        /// Name of the register.
        register: String,
        /// The name it refers to.
        scale_factor: String,
    },
    /// A register used as a scale factor has a scale factor itself.
    #[error("register `{register}`: scale factor `{scale_factor}` has a scale factor itself")]
    ScaleFactorChained {
        /// Name of the register.
        register: String,
        /// The name it refers to.
        scale_factor: String,
    },
    /// `scale` or `offset` is NaN or infinite.
    #[error("register `{register}`: scale and offset must be finite numbers")]
    NonFinite {
        /// Name of the register.
        register: String,
    },
    /// More fields than a [`FieldId`] can number.
    #[error("the profile has {count} fields, more than {} allowed", FieldId::MAX)]
    TooManyFields {
        /// Number of fields.
        count: usize,
    },
    /// The planner cannot fit a register in a read.
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// A checked profile, ready to poll: registers, field schema and read plan.
#[derive(Debug, Clone)]
pub struct CompiledProfile {
    /// Profile name (the key in the config).
    pub name: String,
    /// Registers, in profile order; raw buffers are indexed like this list.
    pub registers: Vec<RegisterConfig>,
    /// Fields written for this profile: every register except scale factors.
    pub schema: Arc<Schema>,
    /// The field each register becomes (`None` for scale-factor registers).
    pub field_of: Vec<Option<FieldId>>,
    /// Index of each register's scale-factor register, if it has one.
    pub sf_of: Vec<Option<usize>>,
    /// Each register's scale and offset, prepared for [`CompiledProfile::finish`].
    scaling: Vec<Scaling>,
    /// The reads that cover every register.
    pub plan: Plan,
}

impl CompiledProfile {
    /// Checks `profile` and plans its reads.
    ///
    /// The merge gap is the smaller of the profile's `max_gap` and `limits.max_gap`, so
    /// either the device model or the endpoint can forbid reading over unmapped addresses.
    pub fn compile(
        name: &str,
        profile: &ProfileConfig,
        limits: &PlanLimits,
    ) -> Result<Self, ProfileError> {
        let registers = &profile.registers;
        if registers.is_empty() {
            return Err(ProfileError::Empty);
        }

        let mut index_of: HashMap<&str, usize> = HashMap::with_capacity(registers.len());
        for (i, reg) in registers.iter().enumerate() {
            if reg.name.is_empty() {
                return Err(ProfileError::EmptyName { index: i });
            }
            if index_of.insert(reg.name.as_str(), i).is_some() {
                return Err(ProfileError::DuplicateName {
                    register: reg.name.clone(),
                });
            }
            check_register(reg)?;
        }

        let mut sf_of = Vec::with_capacity(registers.len());
        let mut is_sf = vec![false; registers.len()];
        for reg in registers {
            let Some(sf_name) = &reg.scale_factor else {
                sf_of.push(None);
                continue;
            };
            let register = reg.name.clone();
            let scale_factor = sf_name.clone();
            let Some(&j) = index_of.get(sf_name.as_str()) else {
                return Err(ProfileError::UnknownScaleFactor {
                    register,
                    scale_factor,
                });
            };
            let sf_reg = &registers[j];
            if sf_reg.data_type != DataType::I16 {
                return Err(ProfileError::ScaleFactorNotI16 {
                    register,
                    scale_factor,
                });
            }
            if sf_reg.scale_factor.is_some() {
                return Err(ProfileError::ScaleFactorChained {
                    register,
                    scale_factor,
                });
            }
            is_sf[j] = true;
            sf_of.push(Some(j));
        }

        let mut fields = Vec::new();
        let mut field_of = Vec::with_capacity(registers.len());
        for (reg, &sf) in registers.iter().zip(&is_sf) {
            if sf {
                field_of.push(None);
                continue;
            }
            let id = FieldId::try_from(fields.len()).map_err(|_| ProfileError::TooManyFields {
                count: registers.len(),
            })?;
            fields.push(FieldDef::new(reg.name.clone(), reg.unit.clone()));
            field_of.push(Some(id));
        }

        let limits = PlanLimits {
            max_gap: limits.max_gap.min(profile.max_gap),
            ..*limits
        };
        let plan = plan(registers, &limits)?;

        Ok(CompiledProfile {
            name: name.to_string(),
            registers: registers.clone(),
            schema: Arc::new(Schema::new(fields)),
            field_of,
            sf_of,
            scaling: registers.iter().map(Scaling::of).collect(),
            plan,
        })
    }

    /// An empty raw buffer, one slot per register, for the decoder to fill.
    pub fn raw_buffer(&self) -> Vec<Option<f64>> {
        vec![None; self.registers.len()]
    }

    /// Empties `raw` into one slot per register, all absent (a reused [`Self::raw_buffer`]).
    pub fn reset_raw(&self, raw: &mut Vec<Option<f64>>) {
        raw.clear();
        raw.resize(self.registers.len(), None);
    }

    /// Appends the field values of one poll to `out` (which it does not clear).
    ///
    /// Applies scale, SunSpec scale factor and offset to every raw value present. A value is
    /// dropped when its scale-factor register is missing or outside -10..=10 (SunSpec's
    /// "not implemented" 0x8000 included), or when the result is not finite (NaN patterns
    /// meters send for "no value").
    pub fn finish(&self, raw: &[Option<f64>], out: &mut Vec<(FieldId, f64)>) {
        let per_register = self.scaling.iter().zip(&self.field_of).zip(&self.sf_of);
        for (i, ((scaling, field), sf_index)) in per_register.enumerate() {
            let Some(field) = *field else { continue };
            let Some(value) = raw.get(i).copied().flatten() else {
                continue;
            };
            let sf = match *sf_index {
                None => None,
                Some(j) => match raw.get(j).copied().flatten() {
                    Some(sf) if SUNSPEC_SF_RANGE.contains(&sf) => Some(sf),
                    _ => continue,
                },
            };
            let value = scaling.apply(value, sf);
            if value.is_finite() {
                out.push((field, value));
            }
        }
    }
}

/// Checks what can be checked on one register alone.
fn check_register(reg: &RegisterConfig) -> Result<(), ProfileError> {
    let register = || reg.name.clone();
    if !reg.scale.is_finite() || !reg.offset.is_finite() {
        return Err(ProfileError::NonFinite {
            register: register(),
        });
    }
    if reg.table.is_bits() {
        if reg.data_type != DataType::Bool {
            return Err(ProfileError::NonBoolOnBitTable {
                register: register(),
                data_type: reg.data_type,
            });
        }
        if reg.bit.is_some() {
            return Err(ProfileError::BitOnBitTable {
                register: register(),
            });
        }
        return Ok(());
    }
    match (reg.data_type, reg.bit) {
        (DataType::Bool, None) => Err(ProfileError::BitMissing {
            register: register(),
        }),
        (DataType::Bool, Some(bit)) if bit > 15 => Err(ProfileError::BitOutOfRange {
            register: register(),
            bit,
        }),
        (DataType::Bool, Some(_)) | (_, None) => Ok(()),
        (data_type, Some(_)) => Err(ProfileError::BitOnNonBool {
            register: register(),
            data_type,
        }),
    }
}

#[cfg(test)]
mod tests;
