//! Modbus RTU servers: the same fleet as [`crate::modbus`], on a serial line (an RS-485 bus
//! with every unit on it) or as raw RTU frames over TCP (a serial-to-Ethernet converter).
//!
//! Frames are read and written here rather than by tokio-modbus's RTU server, so that the
//! simulator can misbehave like a real bus: units that are dead or absent stay silent (no
//! gateway exception), [`crate::Fault::BadCrc`] sends answers with a corrupted byte, and with
//! [`RtuLine::pace`] each answer is held back for the time the request and the answer take
//! on a wire at [`RtuLine::baud`], so a pty or a socket has the capacity of a real bus.
//! Requests are delimited as on a serial line: a gap longer than the inter-frame silence
//! discards a partial frame, and a frame with a bad CRC is dropped byte by byte to resync.

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::CancellationToken;

use crate::{
    ModbusSimConfig, ModbusSimHandle, SimError,
    modbus::{Shared, build_shared},
};

/// The serial line the simulated units sit on.
#[derive(Debug, Clone, Copy)]
pub struct RtuLine {
    /// Baud rate (also sets the port speed of a real serial port).
    pub baud: u32,
    /// Bits per character on the wire: start + 8 data + parity + stop = 11 for 8E1.
    pub bits_per_char: u32,
    /// Hold each answer back for the wire time of request + answer at `baud`.
    pub pace: bool,
}

impl Default for RtuLine {
    fn default() -> Self {
        RtuLine {
            baud: 9600,
            bits_per_char: 11,
            pace: true,
        }
    }
}

impl RtuLine {
    /// Time `chars` characters take on the wire.
    pub fn wire_time(&self, chars: usize) -> Duration {
        let bits = chars as u64 * u64::from(self.bits_per_char);
        Duration::from_micros(bits * 1_000_000 / u64::from(self.baud.max(1)))
    }

    /// The inter-frame silence: 3.5 characters, 1.75 ms above 19200 baud.
    pub fn frame_gap(&self) -> Duration {
        if self.baud > 19200 {
            Duration::from_micros(1750)
        } else {
            Duration::from_micros(
                u64::from(self.bits_per_char) * 3_500_000 / u64::from(self.baud.max(1)),
            )
        }
    }
}

/// Serves the fleet of `cfg` on the serial device `port` (e.g. one end of a `socat` pty
/// pair); `cfg.listen` is not used. Returns once the port is open.
pub async fn start_rtu(
    cfg: ModbusSimConfig,
    port: &Path,
    line: RtuLine,
) -> Result<ModbusSimHandle, SimError> {
    use tokio_serial::SerialPortBuilderExt as _;
    let shared = build_shared(cfg)?;
    let serial = tokio_serial::new(port.to_string_lossy(), line.baud)
        .parity(if line.bits_per_char == 11 {
            tokio_serial::Parity::Even
        } else {
            tokio_serial::Parity::None
        })
        .open_native_async()
        .map_err(|e| SimError::Serial {
            port: port.display().to_string(),
            source: e.into(),
        })?;
    let cancel = CancellationToken::new();
    let task = {
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if let Err(err) = serve(serial, shared, line, cancel).await {
                tracing::error!(error = %err, "rtu simulator stopped");
            }
        })
    };
    Ok(ModbusSimHandle {
        shared,
        local_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        cancel,
        task,
    })
}

/// Serves the fleet of `cfg` as raw RTU frames to every TCP client of `cfg.listen`, like a
/// transparent serial-to-Ethernet converter. Returns once the socket is bound.
pub async fn start_rtu_over_tcp(
    cfg: ModbusSimConfig,
    line: RtuLine,
) -> Result<ModbusSimHandle, SimError> {
    let listen = cfg.listen;
    let shared = build_shared(cfg)?;
    let bind_err = |source| SimError::Bind {
        addr: listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let cancel = CancellationToken::new();
    let task = {
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = cancel.cancelled() => break,
                    a = listener.accept() => a,
                };
                match accepted {
                    Ok((stream, peer)) => {
                        tracing::debug!(%peer, "rtu-over-tcp client connected");
                        let _ = stream.set_nodelay(true);
                        let (shared, cancel) = (shared.clone(), cancel.clone());
                        tokio::spawn(async move {
                            if let Err(err) = serve(stream, shared, line, cancel).await {
                                tracing::debug!(%peer, error = %err, "rtu-over-tcp connection ended");
                            }
                        });
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "rtu-over-tcp accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    Ok(ModbusSimHandle {
        shared,
        local_addr,
        cancel,
        task,
    })
}

/// One request frame taken off the line.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// Function 01–04.
    Read {
        unit: u8,
        function: u8,
        address: u16,
        quantity: u16,
    },
    /// Any other valid frame (writes): refused by this read-only simulator.
    Other { unit: u8, function: u8 },
}

/// Takes the next complete, CRC-valid request off the front of `buf`; bytes that cannot
/// start one are dropped. `None` when more bytes are needed.
fn next_frame(buf: &mut Vec<u8>) -> Option<(Frame, usize)> {
    loop {
        if buf.len() < 2 {
            return None;
        }
        let function = buf[1];
        let len = match function {
            1..=6 => 8,
            15 | 16 => 9 + usize::from(*buf.get(6)?),
            _ => {
                // Not a request this simulator can frame: resync on the next byte.
                buf.remove(0);
                continue;
            }
        };
        if buf.len() < len {
            return None;
        }
        let crc = u16::from_le_bytes([buf[len - 2], buf[len - 1]]);
        if crc16(&buf[..len - 2]) != crc {
            buf.remove(0);
            continue;
        }
        let unit = buf[0];
        let frame = if function <= 4 {
            Frame::Read {
                unit,
                function,
                address: u16::from_be_bytes([buf[2], buf[3]]),
                quantity: u16::from_be_bytes([buf[4], buf[5]]),
            }
        } else {
            Frame::Other { unit, function }
        };
        buf.drain(..len);
        return Some((frame, len));
    }
}

/// CRC-16/MODBUS, low byte first on the wire (Modbus over Serial Line V1.02 §6.2.2).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The RTU bytes of an answer from `unit`, CRC included.
fn encode(unit: u8, function: u8, answer: &Result<Response, ExceptionCode>) -> Vec<u8> {
    let mut out = vec![unit];
    match answer {
        Ok(Response::ReadCoils(bits)) | Ok(Response::ReadDiscreteInputs(bits)) => {
            out.push(function);
            let mut bytes = vec![0u8; bits.len().div_ceil(8)];
            for (i, _) in bits.iter().enumerate().filter(|(_, b)| **b) {
                bytes[i / 8] |= 1 << (i % 8);
            }
            out.push(bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        Ok(Response::ReadHoldingRegisters(words)) | Ok(Response::ReadInputRegisters(words)) => {
            out.push(function);
            out.push((words.len() * 2) as u8);
            for w in words {
                out.extend_from_slice(&w.to_be_bytes());
            }
        }
        Ok(_) => {
            out.push(function | 0x80);
            out.push(u8::from(ExceptionCode::ServerDeviceFailure));
        }
        Err(code) => {
            out.push(function | 0x80);
            out.push(u8::from(*code));
        }
    }
    let crc = crc16(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Serves one byte stream until it ends or `cancel` fires.
async fn serve<T>(
    mut io: T,
    shared: Arc<Shared>,
    line: RtuLine,
    cancel: CancellationToken,
) -> std::io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let mut last_rx = Instant::now();
    // A pty or socket delivers a frame in one piece; allow scheduling jitter on top of the
    // spec's 3.5 characters before a partial frame is declared dead.
    let stale_after = line.frame_gap().max(Duration::from_millis(20));
    loop {
        while let Some((frame, request_len)) = next_frame(&mut buf) {
            let Some(answer) = answer(&shared, &frame) else {
                continue;
            };
            if line.pace {
                let wire = line.wire_time(request_len + answer.len());
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wire) => {}
                }
            }
            io.write_all(&answer).await?;
            io.flush().await?;
        }
        let n = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            r = io.read(&mut chunk) => r?,
        };
        if n == 0 {
            return Ok(());
        }
        if !buf.is_empty() && last_rx.elapsed() > stale_after {
            tracing::debug!(bytes = buf.len(), "partial frame discarded after silence");
            buf.clear();
        }
        last_rx = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The bytes to send for `frame`, or `None` when the bus stays silent (broadcast, unknown
/// or dead unit).
fn answer(shared: &Shared, frame: &Frame) -> Option<Vec<u8>> {
    let (unit, function) = match frame {
        Frame::Read { unit, function, .. } | Frame::Other { unit, function } => (*unit, *function),
    };
    if unit == 0 || !shared.knows(unit) {
        return None;
    }
    let Frame::Read {
        address, quantity, ..
    } = *frame
    else {
        // Read-only simulator.
        return Some(encode(unit, function, &Err(ExceptionCode::IllegalFunction)));
    };
    let request = match function {
        1 => Request::ReadCoils(address, quantity),
        2 => Request::ReadDiscreteInputs(address, quantity),
        3 => Request::ReadHoldingRegisters(address, quantity),
        _ => Request::ReadInputRegisters(address, quantity),
    };
    let corrupt = shared.corrupt_next(unit);
    let result = shared.handle(
        SlaveRequest {
            slave: unit,
            request,
        },
        !corrupt,
    );
    let mut bytes = match result {
        Ok(None) => return None,
        Ok(Some(response)) => encode(unit, function, &Ok(response)),
        Err(code) => encode(unit, function, &Err(code)),
    };
    if corrupt {
        // One flipped bit in the first data byte (the CRC's low byte of an exception): the
        // frame keeps its length and address, only its CRC no longer matches.
        bytes[3] ^= 0x10;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_crc(body: &[u8]) -> Vec<u8> {
        let mut f = body.to_vec();
        f.extend_from_slice(&crc16(body).to_le_bytes());
        f
    }

    #[test]
    fn frames_requests_and_resyncs_past_noise() {
        let req = with_crc(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]);
        assert_eq!(&req[6..], &[0x76, 0x87]);
        let mut buf = vec![0xFF, 0x00];
        buf.extend_from_slice(&req);
        let mut bad = req.clone();
        bad[5] ^= 1;
        buf.extend_from_slice(&bad);
        buf.extend_from_slice(&req[..4]);
        let (frame, len) = next_frame(&mut buf).expect("a frame");
        assert_eq!(len, 8);
        assert_eq!(
            frame,
            Frame::Read {
                unit: 0x11,
                function: 3,
                address: 0x6B,
                quantity: 3
            }
        );
        // The bad-CRC copy is skipped byte by byte; the trailing half frame waits.
        assert!(next_frame(&mut buf).is_none());
        assert_eq!(buf, &req[..4]);
    }

    #[test]
    fn encodes_registers_bits_and_exceptions() {
        let words = encode(
            7,
            4,
            &Ok(Response::ReadInputRegisters(vec![0x4366, 0x0001])),
        );
        assert_eq!(&words[..7], &[7, 4, 4, 0x43, 0x66, 0x00, 0x01]);
        assert_eq!(crc16(&words[..7]).to_le_bytes(), [words[7], words[8]]);
        let bits = encode(
            7,
            1,
            &Ok(Response::ReadCoils(vec![
                true, false, true, true, false, false, false, false, true,
            ])),
        );
        assert_eq!(&bits[..5], &[7, 1, 2, 0b0000_1101, 0b0000_0001]);
        let exc = encode(7, 3, &Err(ExceptionCode::IllegalDataAddress));
        assert_eq!(&exc[..3], &[7, 0x83, 2]);
        assert_eq!(exc.len(), 5);
    }

    #[test]
    fn wire_time_and_gap_follow_the_baud_rate() {
        let line = RtuLine {
            baud: 9600,
            bits_per_char: 11,
            pace: true,
        };
        // 8 request + 9 answer characters of 11 bits at 9600 baud.
        assert_eq!(
            line.wire_time(17),
            Duration::from_micros(17 * 11 * 1_000_000 / 9600)
        );
        assert_eq!(line.frame_gap(), Duration::from_micros(4010));
        let fast = RtuLine {
            baud: 115_200,
            ..line
        };
        assert_eq!(fast.frame_gap(), Duration::from_micros(1750));
    }
}
