//! A read-only Modbus client: the only way gridwatch talks to field devices.
//!
//! Safety promise: gridwatch never issues a Modbus write. This wrapper owns the tokio-modbus
//! context and exposes nothing but the four read function codes (01–04), so no code path in
//! the daemon can send a write even by mistake.

use std::net::SocketAddr;

use tokio_modbus::client::{Context, Reader};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use crate::config::Table;

use super::planner::ReadRequest;

/// Data returned by one read.
#[derive(Debug)]
pub enum ReadData {
    /// Holding or input registers.
    Words(Vec<u16>),
    /// Coils or discrete inputs.
    Bits(Vec<bool>),
}

/// How one read went.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The device answered with a Modbus exception (the connection is fine).
    #[error("modbus exception {0:?}")]
    Exception(ExceptionCode),
    /// The transport failed or the response did not match the request; the connection must be
    /// dropped because a late or foreign frame may still be in flight.
    #[error("transport: {0}")]
    Transport(String),
}

/// A connection that can only read.
pub struct ReadOnlyClient {
    ctx: Context,
}

impl ReadOnlyClient {
    /// Opens a Modbus TCP connection.
    pub async fn connect_tcp(addr: SocketAddr) -> std::io::Result<Self> {
        let ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1)).await?;
        Ok(ReadOnlyClient { ctx })
    }

    /// Wraps an existing context (RTU buses, RTU over TCP).
    pub fn from_context(ctx: Context) -> Self {
        ReadOnlyClient { ctx }
    }

    /// Performs one planned read against `unit`.
    pub async fn read(&mut self, unit: u8, req: &ReadRequest) -> Result<ReadData, ReadError> {
        self.ctx.set_slave(Slave(unit));
        let (start, count) = (req.start, req.count);
        let result = match req.table {
            Table::Holding => self
                .ctx
                .read_holding_registers(start, count)
                .await
                .map(|r| r.map(ReadData::Words)),
            Table::Input => self
                .ctx
                .read_input_registers(start, count)
                .await
                .map(|r| r.map(ReadData::Words)),
            Table::Coil => self
                .ctx
                .read_coils(start, count)
                .await
                .map(|r| r.map(ReadData::Bits)),
            Table::Discrete => self
                .ctx
                .read_discrete_inputs(start, count)
                .await
                .map(|r| r.map(ReadData::Bits)),
        };
        match result {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(code)) => Err(ReadError::Exception(code)),
            Err(e) => Err(ReadError::Transport(e.to_string())),
        }
    }
}
