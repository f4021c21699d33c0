//! The Modbus TCP server: many simulated units behind one listening socket, like a gateway.
//!
//! Requests enter through [`tokio_modbus::server::Service`]; for each read the unit's model
//! is sampled at the current wall-clock time, the profile's registers of the requested table
//! are encoded ([`crate::profile::encode`]) into an image and the requested slice goes back.
//! Faults are injected through [`ModbusSimHandle`]; with `record` on, every answered read is
//! kept as a [`Served`] record so tests can compare what the daemon stored with what was on
//! the wire.

use std::{
    collections::HashMap,
    future,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest, server::tcp::Server};
use tokio_util::sync::CancellationToken;

use crate::{
    SimError,
    model::{Fault, Fleet, FleetParams, Quantities, UnitInfo},
    profile::{Profile, Register, Table, builtin_profiles, encode},
};

/// Modbus limit on registers per read (function 03/04), Modbus Application Protocol v1.1b3 §6.3.
const MAX_READ_REGISTERS: u16 = 125;
/// Modbus limit on bits per read (function 01/02), §6.1.
const MAX_READ_BITS: u16 = 2000;

/// How to run the Modbus TCP simulator.
#[derive(Debug, Clone)]
pub struct ModbusSimConfig {
    /// Address to listen on; port 0 picks a free port (see [`ModbusSimHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Number of transformers (unit ids 1..=T).
    pub transformers: u16,
    /// Number of meters (unit ids T+1..=T+M).
    pub meters: u16,
    /// `sdm630`, `sunspec203` or `mixed` (odd meters SDM630, even meters SunSpec 203).
    pub meter_profile: String,
    /// Seed for per-unit variation and noise.
    pub seed: u64,
    /// Register maps to serve, looked up by name (`transformer-monitor`, `sdm630`,
    /// `sunspec203`); defaults to the shipped ones.
    pub profiles: Vec<Profile>,
    /// Keep a [`Served`] record of every answered read (memory grows with the request count).
    pub record: bool,
    /// Nominal phase-to-neutral voltage (V).
    pub nominal_voltage: f64,
    /// Transformer rating (kVA).
    pub rated_kva: f64,
}

impl Default for ModbusSimConfig {
    fn default() -> Self {
        ModbusSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            transformers: 1,
            meters: 2,
            meter_profile: "sdm630".to_owned(),
            seed: 1,
            // The shipped files are compiled in and covered by tests; if one were broken
            // `start_modbus` reports the missing profile by name.
            profiles: builtin_profiles().unwrap_or_default(),
            record: false,
            nominal_voltage: 230.0,
            rated_kva: 630.0,
        }
    }
}

/// One answered read, as recorded when `record` is on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// Unit id.
    pub unit: u8,
    /// When the values were sampled (ns since the Unix epoch).
    pub at_ns: i64,
    /// Function code (1, 2, 3 or 4).
    pub function: u8,
    /// First address requested.
    pub address: u16,
    /// Number of registers/bits requested.
    pub quantity: u16,
    /// Every profile field wholly inside the requested range, with the exact value the
    /// served words decode to (raw × scale × 10^sf + offset, evaluated in that order in f64;
    /// f32 raws widened to f64). Scale-factor registers are not fields.
    pub fields: Vec<(String, f64)>,
    /// Raw integers of the integer and bool registers wholly inside the range, including
    /// scale-factor registers, for exact comparison.
    pub raw: Vec<(String, i64)>,
}

/// Value served in a SunSpec scale-factor register. Chosen so each quantity keeps its
/// resolution and fits i16 at 1.4 pu overload: 0.1 A, 0.1 V, 0.01 Hz, 10 W, 0.1 % PF, 1 Wh.
pub fn scale_factor_value(name: &str) -> i16 {
    match name {
        "a_sf" | "v_sf" | "pf_sf" => -1,
        "hz_sf" => -2,
        "w_sf" => 1,
        _ => 0,
    }
}

/// Registers every SunSpec device serves besides its measurement block: the "SunS" marker,
/// the common model 1 header (ID 1, L 65) and identity strings, the model 203 header
/// (ID 203, L 105) and the end marker (0xFFFF, 0). Discovery-based readers need these.
fn sunspec_fixed(unit: &UnitInfo) -> Vec<(u16, Vec<u16>)> {
    let text = |s: &str, words: usize| -> Vec<u16> {
        let mut bytes = s.as_bytes().to_vec();
        bytes.resize(words * 2, 0);
        bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    };
    vec![
        (40000, vec![0x5375, 0x6E53]), // "SunS"
        (40002, vec![1, 65]),
        (40004, text("gridwatch", 16)),              // Mn
        (40020, text("SIM-203", 16)),                // Md
        (40036, text("", 8)),                        // Opt
        (40044, text(env!("CARGO_PKG_VERSION"), 8)), // Vr
        (40052, text(&unit.device_id, 16)),          // SN
        (40068, vec![u16::from(unit.unit)]),         // DA
        (40069, vec![203, 105]),
        (40176, vec![0xFFFF, 0]),
    ]
}

/// One table of a profile, precomputed for serving.
#[derive(Debug, Clone, Default)]
struct TableImage {
    /// Registers of this table: (index into the profile, is a scale factor, the sf value
    /// applied to it), worked out once so the request path does no name lookups.
    registers: Vec<(usize, bool, i16)>,
    /// Mapped address intervals `[start, end)`.
    spans: Vec<(u32, u32)>,
}

impl TableImage {
    /// A read is answered when it lies inside the table's overall span and touches at least
    /// one mapped address; holes inside it read as zero so gap-merging readers work.
    fn accepts(&self, start: u32, end: u32) -> bool {
        let lo = self.spans.iter().map(|s| s.0).min();
        let hi = self.spans.iter().map(|s| s.1).max();
        match (lo, hi) {
            (Some(lo), Some(hi)) => {
                start >= lo && end <= hi && self.spans.iter().any(|&(a, b)| start < b && a < end)
            }
            _ => false,
        }
    }
}

/// What one unit serves.
#[derive(Debug, Clone)]
struct UnitImage {
    profile: Arc<Profile>,
    tables: HashMap<Table, TableImage>,
    /// Constant holding registers outside the profile (SunSpec headers).
    fixed: Vec<(u16, Vec<u16>)>,
}

impl UnitImage {
    fn new(profile: Arc<Profile>, info: &UnitInfo) -> UnitImage {
        let fixed = if profile.name.starts_with("sunspec") {
            sunspec_fixed(info)
        } else {
            Vec::new()
        };
        let mut tables: HashMap<Table, TableImage> = HashMap::new();
        for (idx, reg) in profile.registers.iter().enumerate() {
            let sf = reg
                .scale_factor
                .as_deref()
                .map(scale_factor_value)
                .unwrap_or(0);
            let t = tables.entry(reg.table).or_default();
            t.registers
                .push((idx, profile.is_scale_factor(&reg.name), sf));
            let start = u32::from(reg.address);
            t.spans
                .push((start, start + u32::from(reg.data_type.words())));
        }
        for (addr, words) in &fixed {
            let start = u32::from(*addr);
            tables
                .entry(Table::Holding)
                .or_default()
                .spans
                .push((start, start + words.len() as u32));
        }
        UnitImage {
            profile,
            tables,
            fixed,
        }
    }
}

/// Reply to one read plus what it carried.
struct ReadResult {
    response: Response,
    fields: Vec<(String, f64)>,
    raw: Vec<(String, i64)>,
}

/// Builds the reply for a read of `qty` items of `table` at `addr`.
fn read(
    image: &UnitImage,
    table: Table,
    addr: u16,
    qty: u16,
    q: &Quantities,
) -> Result<ReadResult, ExceptionCode> {
    let limit = if table.is_bits() {
        MAX_READ_BITS
    } else {
        MAX_READ_REGISTERS
    };
    if qty == 0 || qty > limit {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = u32::from(addr);
    let end = start + u32::from(qty);
    let timg = image
        .tables
        .get(&table)
        .filter(|t| t.accepts(start, end))
        .ok_or(ExceptionCode::IllegalDataAddress)?;
    let profile = &image.profile;
    let mut words = vec![0u16; usize::from(qty)];
    let mut bits = vec![false; usize::from(qty)];
    let mut fields = Vec::new();
    let mut raw = Vec::new();
    if table == Table::Holding {
        for (a, ws) in &image.fixed {
            for (k, w) in ws.iter().enumerate() {
                let at = u32::from(*a) + k as u32;
                if (start..end).contains(&at) {
                    words[(at - start) as usize] = *w;
                }
            }
        }
    }
    for &(idx, is_sf, sf) in &timg.registers {
        let reg: &Register = &profile.registers[idx];
        let r0 = u32::from(reg.address);
        let r1 = r0 + u32::from(reg.data_type.words());
        if r1 <= start || r0 >= end {
            continue;
        }
        let value = if is_sf {
            f64::from(scale_factor_value(&reg.name))
        } else {
            // A field the model does not produce reads as 0, like an unpopulated input.
            q.get(&reg.name).unwrap_or(0.0)
        };
        let enc = encode(reg, value, sf).map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        if table.is_bits() {
            bits[(r0 - start) as usize] = enc.bit;
        } else {
            for (k, w) in enc.words.iter().enumerate() {
                let at = r0 + k as u32;
                if (start..end).contains(&at) {
                    // OR so several bool bits can share one word.
                    words[(at - start) as usize] |= *w;
                }
            }
        }
        if r0 >= start && r1 <= end {
            if let Some(r) = enc.raw {
                raw.push((reg.name.clone(), r));
            }
            if !is_sf {
                fields.push((reg.name.clone(), enc.value));
            }
        }
    }
    let response = match table {
        Table::Coil => Response::ReadCoils(bits),
        Table::Discrete => Response::ReadDiscreteInputs(bits),
        Table::Holding => Response::ReadHoldingRegisters(words),
        Table::Input => Response::ReadInputRegisters(words),
    };
    Ok(ReadResult {
        response,
        fields,
        raw,
    })
}

/// State shared by all connections and the handle.
#[derive(Debug)]
pub(crate) struct Shared {
    fleet: Mutex<Fleet>,
    images: Vec<UnitImage>,
    counts: Vec<AtomicU64>,
    /// RTU answers sent with a corrupted CRC, per unit id.
    pub(crate) corrupted: Vec<AtomicU64>,
    record: bool,
    served: Mutex<Vec<Served>>,
}

impl Shared {
    fn fleet(&self) -> MutexGuard<'_, Fleet> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when `unit` is simulated (on a bus, other unit ids get no answer at all).
    pub(crate) fn knows(&self, unit: u8) -> bool {
        self.fleet().unit(unit).is_some()
    }

    /// True when the next answer of `unit` must carry a bad CRC ([`Fault::BadCrc`]); counts
    /// it. Call before [`Shared::handle`] for that request.
    pub(crate) fn corrupt_next(&self, unit: u8) -> bool {
        let Some(Fault::BadCrc(every)) = self.fleet().fault(unit) else {
            return false;
        };
        let n = self.counts[usize::from(unit)].load(Ordering::Relaxed) + 1;
        let corrupt = n.is_multiple_of(u64::from(every.max(1)));
        if corrupt {
            self.corrupted[usize::from(unit)].fetch_add(1, Ordering::Relaxed);
        }
        corrupt
    }

    /// Answers one request; `record` false keeps it out of [`ModbusSimHandle::served`] (an
    /// answer that will be corrupted on the wire was never served).
    pub(crate) fn handle(
        &self,
        req: SlaveRequest<'static>,
        record: bool,
    ) -> Result<Option<Response>, ExceptionCode> {
        let unit = req.slave;
        self.counts[usize::from(unit)].fetch_add(1, Ordering::Relaxed);
        let mut fleet = self.fleet();
        if fleet.unit(unit).is_none() {
            // What a gateway answers for a unit id it has nothing behind.
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        match fleet.fault(unit) {
            Some(Fault::Dead) => return Ok(None),
            Some(Fault::Exception(code)) => return Err(ExceptionCode::new(code)),
            _ => {}
        }
        let (table, function, addr, qty) = match req.request {
            Request::ReadCoils(a, n) => (Table::Coil, 1, a, n),
            Request::ReadDiscreteInputs(a, n) => (Table::Discrete, 2, a, n),
            Request::ReadHoldingRegisters(a, n) => (Table::Holding, 3, a, n),
            Request::ReadInputRegisters(a, n) => (Table::Input, 4, a, n),
            // Read-only simulator: writes (and anything else) are refused.
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let q = fleet
            .sample(unit, now.as_secs_f64())
            .ok_or(ExceptionCode::GatewayTargetDevice)?;
        drop(fleet);
        let image = &self.images[usize::from(unit) - 1];
        let result = read(image, table, addr, qty, &q)?;
        if self.record && record {
            let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
            served.push(Served {
                unit,
                at_ns: i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
                function,
                address: addr,
                quantity: qty,
                fields: result.fields,
                raw: result.raw,
            });
        }
        Ok(Some(result.response))
    }
}

/// The per-connection service handed to tokio-modbus.
#[derive(Debug, Clone)]
struct SimService {
    shared: Arc<Shared>,
}

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        future::ready(self.shared.handle(req, true))
    }
}

/// A running Modbus simulator (TCP, RTU on a serial line, or RTU over TCP).
#[derive(Debug)]
pub struct ModbusSimHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) cancel: CancellationToken,
    pub(crate) task: JoinHandle<()>,
}

/// Builds the fleet and the register images of `cfg` (shared by every transport).
pub(crate) fn build_shared(cfg: ModbusSimConfig) -> Result<Arc<Shared>, SimError> {
    let fleet = Fleet::new(FleetParams {
        transformers: cfg.transformers,
        meters: cfg.meters,
        meter_profile: cfg.meter_profile.clone(),
        seed: cfg.seed,
        nominal_voltage: cfg.nominal_voltage,
        rated_kva: cfg.rated_kva,
    })?;
    let profiles: HashMap<String, Arc<Profile>> = cfg
        .profiles
        .into_iter()
        .map(|p| (p.name.clone(), Arc::new(p)))
        .collect();
    let images = fleet
        .units()
        .iter()
        .map(|info| {
            profiles
                .get(&info.profile)
                .map(|p| UnitImage::new(p.clone(), info))
                .ok_or_else(|| SimError::UnknownProfile(info.profile.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Shared {
        fleet: Mutex::new(fleet),
        images,
        counts: (0..256).map(|_| AtomicU64::new(0)).collect(),
        corrupted: (0..256).map(|_| AtomicU64::new(0)).collect(),
        record: cfg.record,
        served: Mutex::new(Vec::new()),
    }))
}

/// Binds `cfg.listen` and starts serving all units; returns once the socket is bound.
pub async fn start_modbus(cfg: ModbusSimConfig) -> Result<ModbusSimHandle, SimError> {
    let listen = cfg.listen;
    let shared = build_shared(cfg)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: listen,
        source,
    })?;
    let cancel = CancellationToken::new();
    let task = {
        let shared = shared.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = |stream, peer: SocketAddr| {
                let service = SimService {
                    shared: shared.clone(),
                };
                tracing::debug!(%peer, "modbus client connected");
                async move { Ok(Some((service, stream))) }
            };
            let on_process_error = |err: std::io::Error| {
                tracing::debug!(error = %err, "modbus connection ended with an error");
            };
            let abort = async move { cancel.cancelled().await };
            if let Err(err) = server
                .serve_until(&on_connected, on_process_error, abort)
                .await
            {
                tracing::error!(error = %err, "modbus simulator stopped accepting connections");
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

impl ModbusSimHandle {
    /// The bound address (the real port when `listen` used port 0); `0.0.0.0:0` for a
    /// simulator on a serial line.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// All simulated units in unit-id order.
    pub fn units(&self) -> Vec<UnitInfo> {
        self.shared.fleet().units()
    }

    /// Injects `fault` into `unit`, replacing any previous fault; unknown units are ignored.
    pub fn set_fault(&self, unit: u8, fault: Fault) {
        let mut fleet = self.shared.fleet();
        if fleet.unit(unit).is_none() {
            tracing::warn!(unit, ?fault, "fault for an unknown unit ignored");
            return;
        }
        tracing::info!(unit, ?fault, "fault injected");
        fleet.set_fault(unit, Some(fault));
    }

    /// Returns `unit` to normal operation.
    pub fn clear_fault(&self, unit: u8) {
        tracing::info!(unit, "fault cleared");
        self.shared.fleet().set_fault(unit, None);
    }

    /// The fault currently injected into `unit`.
    pub fn fault(&self, unit: u8) -> Option<Fault> {
        self.shared.fleet().fault(unit)
    }

    /// Every answered read so far, in order (empty unless `record` was set).
    pub fn served(&self) -> Vec<Served> {
        self.shared
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Requests received for `unit`, answered or not (any unit id, known or not).
    pub fn request_count(&self, unit: u8) -> u64 {
        self.shared.counts[usize::from(unit)].load(Ordering::Relaxed)
    }

    /// RTU answers of `unit` sent with a corrupted CRC ([`Fault::BadCrc`]).
    pub fn corrupted_count(&self, unit: u8) -> u64 {
        self.shared.corrupted[usize::from(unit)].load(Ordering::Relaxed)
    }

    /// Stops accepting connections, closes the open ones and waits for the server task.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            tracing::warn!(error = %err, "modbus simulator task failed");
        }
    }
}

#[cfg(test)]
mod tests;
