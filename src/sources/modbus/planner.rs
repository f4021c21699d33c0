//! The request planner: turns a profile's register list into as few Modbus reads as possible.
//!
//! Data enters as the profile's `[RegisterConfig]` and the endpoint's [`PlanLimits`]; it
//! leaves as a [`Plan`], a list of [`ReadRequest`]s (table, start, count) each listing the
//! registers it carries and where their words (or bits) sit in the response. The plan is
//! computed once per profile at start-up; the poll loop sends its requests in order and
//! hands each response to the decoder.
//!
//! Neighbouring registers are merged into one request when the unread gap between them is
//! at most `max_gap` and the merged span stays within the protocol limit. Registers that
//! overlap (several `bool` bits of one alarm word, or one address read twice) share words.
//! The order is deterministic: Holding, Input, Coil, Discrete, then by address.

use thiserror::Error;

use crate::config::profile::{RegisterConfig, Table};

/// Most registers one read may ask for: 125 (0x7D) for function codes 03 and 04, Modbus
/// Application Protocol Specification v1.1b3, §6.3 and §6.4. tokio-modbus does not check:
/// a 126-register request is sent and the peer drops the connection.
pub const MAX_READ_REGISTERS: u16 = 125;

/// Most bits one read may ask for: 2000 (0x7D0) for function codes 01 and 02, Modbus
/// Application Protocol Specification v1.1b3, §6.1 and §6.2.
pub const MAX_READ_BITS: u16 = 2000;

/// Size limits for planned reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Most registers per holding/input read; values above 125 are treated as 125. Some
    /// devices accept fewer (often 64 or 100).
    pub max_registers: u16,
    /// Most bits per coil/discrete read; values above 2000 are treated as 2000.
    pub max_bits: u16,
    /// Largest number of unused registers (or bits) read over to merge two neighbours.
    pub max_gap: u16,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_registers: MAX_READ_REGISTERS,
            max_bits: MAX_READ_BITS,
            max_gap: crate::config::profile::default_max_gap(),
        }
    }
}

impl PlanLimits {
    /// The largest span one read of `table` may cover, capped at the protocol maximum.
    pub fn span_limit(&self, table: Table) -> u16 {
        if table.is_bits() {
            self.max_bits.min(MAX_READ_BITS)
        } else {
            self.max_registers.min(MAX_READ_REGISTERS)
        }
    }
}

/// One register carried by a [`ReadRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedItem {
    /// Index into the profile's register list.
    pub register: usize,
    /// Position of the register's first word (or its bit) counted from the request start.
    pub offset: u16,
}

/// One Modbus read: `count` registers (or bits) of `table` from address `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// The table to read (selects the function code).
    pub table: Table,
    /// First address read.
    pub start: u16,
    /// Number of registers (holding/input) or bits (coil/discrete) read; never above the
    /// protocol limits.
    pub count: u16,
    /// Registers decoded from the response, by address.
    pub items: Vec<PlannedItem>,
}

/// The reads that cover a profile, in the order they are sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Requests ordered by table (Holding, Input, Coil, Discrete), then address.
    pub requests: Vec<ReadRequest>,
}

impl Plan {
    /// Number of requests per poll.
    pub fn request_count(&self) -> usize {
        self.requests.len()
    }

    /// Registers read per poll from the holding and input tables, gaps included.
    pub fn register_count(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| !r.table.is_bits())
            .map(|r| usize::from(r.count))
            .sum()
    }

    /// Bits read per poll from the coil and discrete tables, gaps included.
    pub fn bit_count(&self) -> usize {
        self.requests
            .iter()
            .filter(|r| r.table.is_bits())
            .map(|r| usize::from(r.count))
            .sum()
    }
}

/// A register the planner cannot place in any valid read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// The register's words run past address 65535.
    #[error("register `{register}` at address {address} spans {span} and runs past address 65535")]
    PastEnd {
        /// Name of the register.
        register: String,
        /// Its start address.
        address: u16,
        /// Its length in registers (or bits).
        span: u16,
    },
    /// The register alone is longer than one read may be.
    #[error("register `{register}` spans {span} but one read may cover at most {limit}")]
    TooLong {
        /// Name of the register.
        register: String,
        /// Its length in registers (or bits).
        span: u16,
        /// The read size limit for its table.
        limit: u16,
    },
}

/// Length of a register in its table's unit: words for holding/input, one bit for
/// coil/discrete (a bit table holds nothing wider than a bit).
fn span_of(reg: &RegisterConfig) -> u16 {
    if reg.table.is_bits() {
        1
    } else {
        reg.data_type.words()
    }
}

/// Plans the reads that cover `registers` within `limits`.
///
/// Errors name the first register (in profile order) that cannot be read in one request.
pub fn plan(registers: &[RegisterConfig], limits: &PlanLimits) -> Result<Plan, PlanError> {
    for reg in registers {
        let span = span_of(reg);
        let limit = limits.span_limit(reg.table);
        if u32::from(reg.address) + u32::from(span) > 1 << 16 {
            return Err(PlanError::PastEnd {
                register: reg.name.clone(),
                address: reg.address,
                span,
            });
        }
        if span > limit {
            return Err(PlanError::TooLong {
                register: reg.name.clone(),
                span,
                limit,
            });
        }
    }

    let mut order: Vec<usize> = (0..registers.len()).collect();
    order.sort_by_key(|&i| (registers[i].table, registers[i].address, i));

    let mut requests: Vec<ReadRequest> = Vec::new();
    // Exclusive end of the open request, in u32 so `start + count` cannot overflow.
    let mut end: u32 = 0;
    for i in order {
        let reg = &registers[i];
        let start = u32::from(reg.address);
        let reg_end = start + u32::from(span_of(reg));
        let limit = u32::from(limits.span_limit(reg.table));

        if let Some(open) = requests.last_mut()
            && open.table == reg.table
        {
            let open_start = u32::from(open.start);
            let gap = start.saturating_sub(end);
            let merged_end = end.max(reg_end);
            if gap <= u32::from(limits.max_gap) && merged_end - open_start <= limit {
                end = merged_end;
                // Checked above: the span is ≤ the limit (≤ 2000), so both fit in u16.
                open.count = u16::try_from(end - open_start).unwrap_or(u16::MAX);
                open.items.push(PlannedItem {
                    register: i,
                    offset: u16::try_from(start - open_start).unwrap_or(u16::MAX),
                });
                continue;
            }
        }
        end = reg_end;
        requests.push(ReadRequest {
            table: reg.table,
            start: reg.address,
            count: span_of(reg),
            items: vec![PlannedItem {
                register: i,
                offset: 0,
            }],
        });
    }
    Ok(Plan { requests })
}

#[cfg(test)]
mod tests;
