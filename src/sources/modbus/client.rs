//! A read-only Modbus client: the only way gridwatch talks to field devices.
//!
//! Safety promise: gridwatch never issues a Modbus write. This wrapper owns the tokio-modbus
//! context and exposes nothing but the four read function codes (01–04), so no code path in
//! the daemon can send a write even by mistake.
//!
//! On the bus transports (RTU on a serial line, RTU over TCP) the byte stream is wrapped in a
//! [`bus::BusLink`] that tokio-modbus reads through: it discards stray bytes (a late answer
//! after a timeout) before each request is written, and keeps the bytes of each answer so a
//! failed read can be told apart as silence, a bad CRC or garbage. tokio-modbus itself does
//! not report CRC errors: its RTU decoder drops bytes one by one to resync, which ends in a
//! timeout or an `InvalidData` error.

pub mod bus;

use std::net::SocketAddr;

use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_modbus::{Request, Response};

use crate::config::{EndpointConfig, Table};

use super::planner::ReadRequest;
use bus::{BusIo, BusLink, LineFault};

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
    /// A bus answer arrived whole but failed its CRC check; it was not decoded.
    #[error("bad CRC in the answer")]
    Crc,
}

/// A connection that can only read.
pub struct ReadOnlyClient {
    ctx: Context,
    bus: Option<BusLink>,
}

impl ReadOnlyClient {
    /// Opens a Modbus TCP connection.
    pub async fn connect_tcp(addr: SocketAddr) -> std::io::Result<Self> {
        let ctx = tokio_modbus::client::tcp::connect_slave(addr, Slave(1)).await?;
        Ok(ReadOnlyClient { ctx, bus: None })
    }

    /// Wraps an already attached TCP-framed context (tests and fuzzing over in-memory pipes).
    pub fn from_context(ctx: Context) -> Self {
        ReadOnlyClient { ctx, bus: None }
    }

    /// Opens the serial port of an `rtu` endpoint (`device`, `baud`, `parity`, `data_bits`,
    /// `stop_bits`) and discards whatever was waiting in its buffers.
    pub fn connect_rtu(cfg: &EndpointConfig) -> std::io::Result<Self> {
        use tokio_serial::{SerialPort as _, SerialPortBuilderExt as _};
        let path = cfg
            .device
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parity = match cfg.parity {
            crate::config::Parity::None => tokio_serial::Parity::None,
            crate::config::Parity::Even => tokio_serial::Parity::Even,
            crate::config::Parity::Odd => tokio_serial::Parity::Odd,
        };
        let data_bits = if cfg.data_bits == 7 {
            tokio_serial::DataBits::Seven
        } else {
            tokio_serial::DataBits::Eight
        };
        let stop_bits = if cfg.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        };
        let port = tokio_serial::new(path, cfg.baud)
            .parity(parity)
            .data_bits(data_bits)
            .stop_bits(stop_bits)
            .flow_control(tokio_serial::FlowControl::None)
            .open_native_async()
            .map_err(std::io::Error::from)?;
        // Bytes from before we opened the port belong to nobody's request.
        let _ = port.clear(tokio_serial::ClearBuffer::All);
        Ok(Self::over_bus(BusLink::new(BusIo::Serial(port))))
    }

    /// Opens a TCP connection to a converter that passes raw RTU frames (with CRC).
    pub async fn connect_rtu_over_tcp(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        // Frames are small and latency matters more than packet count.
        stream.set_nodelay(true)?;
        Ok(Self::over_bus(BusLink::new(BusIo::Tcp(stream))))
    }

    fn over_bus(link: BusLink) -> Self {
        let ctx = tokio_modbus::client::rtu::attach_slave(link.clone(), Slave(1));
        ReadOnlyClient {
            ctx,
            bus: Some(link),
        }
    }

    /// True for an RTU or RTU-over-TCP client.
    pub fn is_bus(&self) -> bool {
        self.bus.is_some()
    }

    /// After a failed read on a bus: can the same serial port / socket carry on (after the
    /// framing is reset with [`ReadOnlyClient::reframe`]), or did the byte stream itself fail?
    pub fn link_alive(&self) -> bool {
        self.bus.as_ref().is_some_and(|b| !b.io_failed())
    }

    /// Starts a fresh RTU framer over the same bus link. tokio-modbus answers the first read
    /// after a decoder error with "broken pipe", so a decoder error needs a new framer, but
    /// not a new serial port (reopening a port can upset a converter or a pty).
    pub fn reframe(&mut self) {
        if let Some(link) = &self.bus {
            self.ctx = tokio_modbus::client::rtu::attach_slave(link.clone(), Slave(1));
        }
    }

    /// After a read to `unit` failed without a decoded answer: what came back on the bus.
    pub fn line_fault(&self, unit: u8, req: &ReadRequest) -> LineFault {
        match &self.bus {
            Some(link) => link.classify(unit, function_code(req.table), expected_len(req)),
            None => LineFault::Silent,
        }
    }

    /// Performs one planned read against `unit`.
    pub async fn read(&mut self, unit: u8, req: &ReadRequest) -> Result<ReadData, ReadError> {
        if let Some(link) = &self.bus {
            link.begin_request();
        }
        self.ctx.set_slave(Slave(unit));
        let (start, count) = (req.start, req.count);
        // Only read requests are ever built here (the read-only promise). The typed
        // `Reader` helpers of tokio-modbus would `debug_assert` the answer's length, so a
        // hostile device could panic a debug build; the length is checked here instead and a
        // mismatch is a transport error (the connection is dropped).
        let request = match req.table {
            Table::Holding => Request::ReadHoldingRegisters(start, count),
            Table::Input => Request::ReadInputRegisters(start, count),
            Table::Coil => Request::ReadCoils(start, count),
            Table::Discrete => Request::ReadDiscreteInputs(start, count),
        };
        let want = usize::from(count);
        let result = Client::call(&mut self.ctx, request).await.map(|r| {
            r.map(|response| match response {
                Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w) => {
                    if w.len() == want {
                        Ok(ReadData::Words(w))
                    } else {
                        Err(format!(
                            "answer has {} registers, asked for {want}",
                            w.len()
                        ))
                    }
                }
                Response::ReadCoils(mut b) | Response::ReadDiscreteInputs(mut b) => {
                    if b.len() >= want {
                        // Bits come in whole bytes; the padding is not data.
                        b.truncate(want);
                        Ok(ReadData::Bits(b))
                    } else {
                        Err(format!("answer has {} bits, asked for {want}", b.len()))
                    }
                }
                other => Err(format!("answer of another function: {other:?}")),
            })
        });
        let result = match result {
            Ok(Ok(Err(mismatch))) => return Err(ReadError::Transport(mismatch)),
            Ok(Ok(Ok(data))) => Ok(Ok(data)),
            Ok(Err(code)) => Ok(Err(code)),
            Err(e) => Err(e),
        };
        match result {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(code)) => Err(ReadError::Exception(code)),
            Err(e) => match self.line_fault(unit, req) {
                LineFault::BadCrc => Err(ReadError::Crc),
                _ => Err(ReadError::Transport(e.to_string())),
            },
        }
    }
}

/// Modbus function code of a read from `table`.
fn function_code(table: Table) -> u8 {
    match table {
        Table::Coil => 1,
        Table::Discrete => 2,
        Table::Holding => 3,
        Table::Input => 4,
    }
}

/// Length of the RTU answer to `req`: address, function, byte count, data, CRC.
pub fn expected_len(req: &ReadRequest) -> usize {
    let data = match req.table {
        Table::Coil | Table::Discrete => usize::from(req.count).div_ceil(8),
        Table::Holding | Table::Input => 2 * usize::from(req.count),
    };
    5 + data
}
