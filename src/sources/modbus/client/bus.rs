//! The byte stream under an RTU client: a serial port or a TCP socket to a converter.
//!
//! tokio-modbus owns the framing; a [`BusLink`] sits below it and does what its RTU client
//! does not: before each request is written, bytes already waiting on the line are discarded
//! (a unit answering after its timeout must not be read as the answer to the next request),
//! and the bytes of each answer are kept so a read that failed can be classified
//! ([`LineFault`]): no answer at all, an answer of the right length whose CRC is wrong, or
//! something else. The link is shared (`Arc<Mutex<..>>`) between the client that reads
//! through it and the poller that asks what happened; only one request is ever in flight, so
//! the lock is never contended.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes of one answer kept for classification (an RTU frame is at most 256 bytes).
const CAPTURE_LIMIT: usize = 512;

/// The physical stream of a bus endpoint.
#[derive(Debug)]
pub enum BusIo {
    /// A serial port (RS-485 adapter).
    Serial(tokio_serial::SerialStream),
    /// A TCP socket to a serial-to-Ethernet converter in transparent (raw RTU) mode.
    Tcp(tokio::net::TcpStream),
}

/// What came back on the bus for a read that produced no decoded answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFault {
    /// Nothing at all: the unit is dead, absent or slower than the timeout.
    Silent,
    /// A frame from the right unit and function with the expected length, failing its CRC.
    BadCrc,
    /// Bytes that do not form the expected answer (noise, a collision, a truncated frame).
    Garbled,
}

#[derive(Debug)]
struct State {
    io: BusIo,
    /// Bytes received since the current request was written.
    rx: Vec<u8>,
    /// Discard what is waiting on the line before the next write.
    drain_before_write: bool,
    /// Stray bytes discarded so far.
    stray: u64,
    /// The stream itself failed (I/O error or end of stream): reopen, do not reuse.
    io_failed: bool,
}

/// A shared handle on the bus stream; tokio-modbus reads and writes through a clone.
#[derive(Debug, Clone)]
pub struct BusLink(Arc<Mutex<State>>);

impl BusLink {
    /// Wraps a freshly opened stream.
    pub fn new(io: BusIo) -> Self {
        BusLink(Arc::new(Mutex::new(State {
            io,
            rx: Vec::new(),
            drain_before_write: false,
            stray: 0,
            io_failed: false,
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the start of a request: the capture restarts and stray input is discarded
    /// before the request goes out.
    pub fn begin_request(&self) {
        let mut s = self.state();
        s.rx.clear();
        s.drain_before_write = true;
    }

    /// True once a read or write on the stream failed or the peer closed it.
    pub fn io_failed(&self) -> bool {
        self.state().io_failed
    }

    /// Stray bytes discarded before requests since the link was opened.
    pub fn stray_bytes(&self) -> u64 {
        self.state().stray
    }

    /// Classifies what arrived for a request to `unit` with function `function` whose
    /// answer should be `expected_len` bytes long.
    pub fn classify(&self, unit: u8, function: u8, expected_len: usize) -> LineFault {
        classify(&self.state().rx, unit, function, expected_len)
    }
}

/// See [`BusLink::classify`]. An exception answer (function | 0x80) is 5 bytes long.
pub fn classify(rx: &[u8], unit: u8, function: u8, expected_len: usize) -> LineFault {
    if rx.is_empty() {
        return LineFault::Silent;
    }
    let len = if rx.get(1) == Some(&(function | 0x80)) {
        5
    } else {
        expected_len
    };
    if rx.len() >= len && rx[0] == unit && rx[1] & 0x7F == function {
        let crc = u16::from_le_bytes([rx[len - 2], rx[len - 1]]);
        if crc16(&rx[..len - 2]) != crc {
            return LineFault::BadCrc;
        }
    }
    LineFault::Garbled
}

/// CRC-16/MODBUS (polynomial 0xA001 reflected, initial 0xFFFF), Modbus over Serial Line
/// V1.02 §6.2.2; sent low byte first.
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

impl State {
    fn poll_read_io(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            BusIo::Serial(s) => Pin::new(s).poll_read(cx, buf),
            BusIo::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }

    /// Reads and throws away whatever is already waiting, without waiting for more.
    fn drain(&mut self, cx: &mut Context<'_>) {
        let mut scratch = [0u8; 256];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match self.poll_read_io(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    self.stray += buf.filled().len() as u64;
                }
                Poll::Ready(Ok(())) => {
                    self.io_failed = true;
                    break;
                }
                Poll::Ready(Err(_)) => {
                    self.io_failed = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
    }
}

impl AsyncRead for BusLink {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = self.state();
        let before = buf.filled().len();
        let result = s.poll_read_io(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() && buf.remaining() > 0 {
                    s.io_failed = true;
                }
                let room = CAPTURE_LIMIT.saturating_sub(s.rx.len());
                let keep = &new[..new.len().min(room)];
                s.rx.extend_from_slice(keep);
            }
            Poll::Ready(Err(_)) => s.io_failed = true,
            Poll::Pending => {}
        }
        result
    }
}

impl AsyncWrite for BusLink {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = self.state();
        if s.drain_before_write {
            s.drain_before_write = false;
            s.drain(cx);
            s.rx.clear();
        }
        let result = match &mut s.io {
            BusIo::Serial(io) => Pin::new(io).poll_write(cx, buf),
            BusIo::Tcp(io) => Pin::new(io).poll_write(cx, buf),
        };
        if let Poll::Ready(Err(_)) = &result {
            s.io_failed = true;
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.state();
        match &mut s.io {
            BusIo::Serial(io) => Pin::new(io).poll_flush(cx),
            BusIo::Tcp(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.state();
        match &mut s.io {
            BusIo::Serial(io) => Pin::new(io).poll_shutdown(cx),
            BusIo::Tcp(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = body.to_vec();
        f.extend_from_slice(&crc16(body).to_le_bytes());
        f
    }

    #[test]
    fn crc_matches_the_spec_example() {
        // Modbus over Serial Line V1.02 §6.2.2 / tokio-modbus' own test vector.
        assert_eq!(crc16(&[0x01, 0x03, 0x08, 0x2B, 0x00, 0x02]), 0x63B6);
        // Read holding registers 0x006B+3 from unit 0x11: the classic "11 03 00 6B 00 03 76 87".
        assert_eq!(
            crc16(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]).to_le_bytes(),
            [0x76, 0x87]
        );
    }

    #[test]
    fn classifies_silence_bad_crc_and_garbage() {
        let good = frame(&[7, 4, 4, 0x43, 0x66, 0, 0]);
        assert_eq!(classify(&[], 7, 4, 9), LineFault::Silent);
        let mut bad = good.clone();
        bad[3] ^= 0x01;
        assert_eq!(classify(&bad, 7, 4, 9), LineFault::BadCrc);
        // A bad exception answer is recognised by its length of 5.
        let mut exc = frame(&[7, 0x84, 2]);
        exc[2] = 3;
        assert_eq!(classify(&exc, 7, 4, 9), LineFault::BadCrc);
        // Wrong unit, truncated frame, noise: garbage, not a CRC error.
        let mut other = good.clone();
        other[0] = 8;
        assert_eq!(classify(&other, 7, 4, 9), LineFault::Garbled);
        assert_eq!(classify(&bad[..6], 7, 4, 9), LineFault::Garbled);
        assert_eq!(classify(&[0xFF, 0x00], 7, 4, 9), LineFault::Garbled);
    }
}
