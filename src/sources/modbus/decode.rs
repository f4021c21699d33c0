//! Register decoding: the words and bits of a Modbus response become raw numbers, then
//! engineering values.
//!
//! Data enters as one response (`&[u16]` for holding/input reads, `&[bool]` for coil and
//! discrete reads) together with the [`ReadRequest`] that asked for it; each planned
//! register's raw value is written to a caller-owned `[Option<f64>]` slot indexed like the
//! profile's registers. [`scale`] then applies `scale`, the SunSpec scale factor and
//! `offset`. Everything here is pure and allocation-free, including the error path: a bad
//! response from a device is an ordinary event on the poll hot path.
//!
//! Integers become `f64`: exact up to 2^53, so `u64`/`i64` counters beyond
//! 9,007,199,254,740,992 lose their lowest bits (an energy counter in Wh reaches that after
//! about a million years at 1 GW, so in practice this does not bite).

use thiserror::Error;

use crate::config::profile::{DataType, RegisterConfig, WordOrder};
use crate::sources::modbus::planner::ReadRequest;

/// Why a value could not be taken from a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer words than the data type needs (a device answered a short response).
    #[error("value needs {needed} registers but only {got} are left in the response")]
    Short {
        /// Words the data type occupies.
        needed: u16,
        /// Words available.
        got: usize,
    },
    /// A `bool` read from a register without a bit number.
    #[error("bool from a register needs a bit number")]
    BitMissing,
    /// A bit number outside a 16-bit register.
    #[error("bit {bit} is outside a 16-bit register (0..=15)")]
    BitOutOfRange {
        /// The configured bit number.
        bit: u8,
    },
}

/// Joins `words` (1 to 4) into one integer according to `order`, most significant first.
///
/// `order` names bytes as they travel on the wire: CDAB and DCBA send the low word first,
/// BADC and DCBA swap the two bytes of each word. The same rule covers 32 and 64 bits.
fn join_words(words: &[u16], order: WordOrder) -> u64 {
    let swap_bytes = matches!(order, WordOrder::BADC | WordOrder::DCBA);
    let low_first = matches!(order, WordOrder::CDAB | WordOrder::DCBA);
    let push = |acc: u64, &w: &u16| {
        let w = if swap_bytes { w.swap_bytes() } else { w };
        (acc << 16) | u64::from(w)
    };
    if low_first {
        words.iter().rev().fold(0, push)
    } else {
        words.iter().fold(0, push)
    }
}

/// Decodes one value from the start of `words` (extra words are ignored).
///
/// `order` applies to multi-register types only: a single register is big-endian by the
/// Modbus specification (§4.2), whatever the device does with wider values. `bool` needs
/// `bit` (0 = least significant) and gives 0.0 or 1.0. A NaN or infinite float pattern is
/// returned as is; the caller drops non-finite values.
pub fn raw_from_words(
    words: &[u16],
    data_type: DataType,
    order: WordOrder,
    bit: Option<u8>,
) -> Result<f64, DecodeError> {
    let needed = data_type.words();
    let Some(w) = words.get(..usize::from(needed)) else {
        return Err(DecodeError::Short {
            needed,
            got: words.len(),
        });
    };
    // `w` has exactly `needed` words, so the narrowing casts below only drop zero bits
    // (`as` between integers of one width reinterprets two's complement, as intended).
    let value = match data_type {
        DataType::U16 => f64::from(w[0]),
        DataType::I16 => f64::from(w[0] as i16),
        DataType::Bool => {
            let bit = bit.ok_or(DecodeError::BitMissing)?;
            if bit > 15 {
                return Err(DecodeError::BitOutOfRange { bit });
            }
            f64::from((w[0] >> bit) & 1)
        }
        DataType::U32 => f64::from(join_words(w, order) as u32),
        DataType::I32 => f64::from(join_words(w, order) as u32 as i32),
        DataType::F32 => f64::from(f32::from_bits(join_words(w, order) as u32)),
        DataType::U64 => join_words(w, order) as f64,
        DataType::I64 => join_words(w, order) as i64 as f64,
        DataType::F64 => f64::from_bits(join_words(w, order)),
    };
    Ok(value)
}

/// Decodes the registers a holding/input `req` carries from its response `words`.
///
/// Writes `raw[item.register]` for each planned item: the value, or `None` when the
/// response is too short for it (devices do answer short) or it cannot be decoded. Items
/// whose index is outside `registers` or `raw` are skipped. Slots of other registers are
/// not touched: clear the buffer at the start of each poll. Returns the number of values
/// written; fewer than `req.items.len()` means a short or bad response.
pub fn decode_words(
    req: &ReadRequest,
    words: &[u16],
    registers: &[RegisterConfig],
    raw: &mut [Option<f64>],
) -> usize {
    let mut decoded = 0;
    for item in &req.items {
        let (Some(reg), Some(slot)) = (registers.get(item.register), raw.get_mut(item.register))
        else {
            continue;
        };
        let value = words
            .get(usize::from(item.offset)..)
            .and_then(|w| raw_from_words(w, reg.data_type, reg.order, reg.bit).ok());
        *slot = value;
        decoded += usize::from(value.is_some());
    }
    decoded
}

/// Decodes the bits a coil/discrete `req` carries from its response `bits` (0.0 or 1.0).
///
/// Same contract as [`decode_words`]. Extra bits are ignored: a bit response is padded to
/// whole bytes on the wire.
pub fn decode_bits(
    req: &ReadRequest,
    bits: &[bool],
    registers: &[RegisterConfig],
    raw: &mut [Option<f64>],
) -> usize {
    let mut decoded = 0;
    for item in &req.items {
        if item.register >= registers.len() {
            continue;
        }
        let Some(slot) = raw.get_mut(item.register) else {
            continue;
        };
        let value = bits
            .get(usize::from(item.offset))
            .map(|&b| f64::from(u8::from(b)));
        *slot = value;
        decoded += usize::from(value.is_some());
    }
    decoded
}

/// `Some(n)` when `scale` is the double nearest to 1/n for an integer n ≥ 2 (0.1, 0.01,
/// 0.5, ...): dividing by n is then exact-rounded where multiplying by the inexact 0.1 is
/// not (1234 × 0.01 = 12.340000000000002, 1234 / 100 = 12.34).
fn reciprocal_integer(scale: f64) -> Option<f64> {
    let n = (1.0 / scale).round();
    // 2^53: beyond it not every integer is a double.
    ((2.0..=9_007_199_254_740_992.0).contains(&n) && 1.0 / n == scale).then_some(n)
}

/// A register's scale and offset, prepared once per profile: finding the exact divisor of a
/// decimal scale costs two divisions, per value and poll when done in [`scale`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    mul: f64,
    div: f64,
    offset: f64,
}

impl Scaling {
    /// The scaling of `reg`.
    pub fn of(reg: &RegisterConfig) -> Scaling {
        let (mul, div) = match reciprocal_integer(reg.scale) {
            Some(n) => (1.0, n),
            None => (reg.scale, 1.0),
        };
        Scaling {
            mul,
            div,
            offset: reg.offset,
        }
    }

    /// The engineering value of `raw` with SunSpec scale factor `sf`; see [`scale`].
    #[inline]
    pub fn apply(&self, raw: f64, sf: Option<f64>) -> f64 {
        let (mut mul, mut div) = (self.mul, self.div);
        if let Some(sf) = sf {
            // Powers of ten up to 10^22 are exact doubles.
            let p = 10f64.powi(sf.abs() as i32);
            if sf < 0.0 {
                div *= p;
            } else {
                mul *= p;
            }
        }
        let mut v = raw;
        if mul != 1.0 {
            v *= mul;
        }
        if div != 1.0 {
            v /= div;
        }
        v + self.offset
    }
}

/// The engineering value: `raw × scale × 10^sf + offset`.
///
/// `sf` is a SunSpec scale factor (an integer, normally -10..=10). Decimal scales are
/// applied as exact divisions where possible, so raw 2305 with sf -1 (or scale 0.1) gives
/// exactly 230.5, the value a person reading the register would write down.
pub fn scale(raw: f64, reg: &RegisterConfig, sf: Option<f64>) -> f64 {
    Scaling::of(reg).apply(raw, sf)
}

#[cfg(test)]
mod tests;
