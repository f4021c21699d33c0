//! The load harness: many Modbus TCP gateways, each a port with many unit ids behind it,
//! serving one register map as cheaply as possible so that the simulator is never what a
//! benchmark measures.
//!
//! `G` gateways × `U` unit ids give `G × U` devices (10,000 = 100 ports × 100 units, the
//! shape of a region polled through substation gateways). Unlike [`crate::modbus`], there is
//! no physical model and no fault injection on the request path: at start the profile is
//! encoded ([`crate::profile::encode`]) into [`FRAMES`] full register images with slightly
//! different values, and a read returns a slice of the image chosen by the current second,
//! the gateway and the unit, so values change every second and differ between devices. A
//! request costs a bounds check and a copy on top of tokio-modbus' own framing.
//!
//! [`daemon_config`] writes the matching gridwatch configuration (endpoints and devices), so
//! a benchmark gets the daemon and the harness from one description. The text is produced
//! here, not with gridwatch's config types: this crate must not depend on the daemon.

use std::{
    fmt::Write as _,
    future,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest, server::tcp::Server};
use tokio_util::sync::CancellationToken;

use crate::{
    SimError,
    profile::{Profile, Table, encode},
};

/// The synthetic 50-value map used by `scripts/bench.sh` (`config/profiles/bench-50.toml`).
pub const BENCH_50: &str = include_str!("../../config/profiles/bench-50.toml");

/// Number of precomputed register images; values repeat after this many seconds.
pub const FRAMES: usize = 64;

/// Modbus limits per read (Modbus Application Protocol v1.1b3 §6.1–6.4).
const MAX_READ_REGISTERS: u16 = 125;
const MAX_READ_BITS: u16 = 2000;

/// How to run the load harness.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Address to listen on.
    pub ip: IpAddr,
    /// Number of gateways (listening ports).
    pub gateways: u16,
    /// Unit ids per gateway (1..=units answer; 1..=247).
    pub units: u8,
    /// First port; gateway `g` listens on `base_port + g`. 0 = any free ports.
    pub base_port: u16,
    /// The register map every unit serves.
    pub profile: Profile,
}

/// Precomputed images of one table.
#[derive(Debug, Default)]
struct TableFrames {
    /// First mapped address.
    lo: u32,
    /// One past the last mapped address.
    hi: u32,
    /// `FRAMES` word images of `lo..hi` (register tables).
    words: Vec<Vec<u16>>,
    /// `FRAMES` bit images of `lo..hi` (coil/discrete tables).
    bits: Vec<Vec<bool>>,
}

/// Everything a request needs, shared by all gateways.
#[derive(Debug)]
struct Images {
    /// Indexed by [`table_index`].
    tables: [Option<TableFrames>; 4],
    units: u8,
    requests: AtomicU64,
}

fn table_index(t: Table) -> usize {
    match t {
        Table::Coil => 0,
        Table::Discrete => 1,
        Table::Holding => 2,
        Table::Input => 3,
    }
}

/// A plausible magnitude for a register, from its unit, so scaled integers stay in range.
fn nominal(reg: &crate::profile::Register) -> f64 {
    match reg.unit.as_deref() {
        // Line-to-line voltages of a 230/400 V network (`voltage_l1_l2` ...).
        Some("V") if is_line_to_line(&reg.name) => 400.0,
        Some("V") => 230.0,
        Some("A") => 40.0,
        Some("W" | "var" | "VA") => 3000.0,
        Some("Hz") => 50.0,
        Some("%") => 2.5,
        Some("deg") => 30.0,
        Some("degC") => 45.0,
        Some("kWh" | "Wh" | "kvarh") => 12345.0,
        _ => 100.0,
    }
}

/// `voltage_l1_l2`-style names: two phase conductors.
fn is_line_to_line(name: &str) -> bool {
    name.split('_')
        .filter(|p| matches!(*p, "l1" | "l2" | "l3"))
        .count()
        == 2
}

/// How far a register wanders (fraction of nominal): a healthy fleet, so that the load test
/// measures polling and not an alarm storm. Voltages ±2 % stay inside every standard's band;
/// frequency moves by hundredths of a hertz (±0.1 % = ±0.05 Hz, inside ±0.2 Hz).
fn wobble(reg: &crate::profile::Register) -> f64 {
    if reg.unit.as_deref() == Some("Hz") {
        0.001
    } else {
        0.02
    }
}

impl Images {
    fn build(profile: &Profile, units: u8) -> Result<Images, SimError> {
        let mut tables: [Option<TableFrames>; 4] = Default::default();
        for reg in &profile.registers {
            let start = u32::from(reg.address);
            let end = start
                + if reg.table.is_bits() {
                    1
                } else {
                    u32::from(reg.data_type.words())
                };
            let t = tables[table_index(reg.table)].get_or_insert_with(|| TableFrames {
                lo: start,
                hi: end,
                ..TableFrames::default()
            });
            t.lo = t.lo.min(start);
            t.hi = t.hi.max(end);
        }
        for (ti, slot) in tables.iter_mut().enumerate() {
            let Some(t) = slot else { continue };
            let len = (t.hi - t.lo) as usize;
            for frame in 0..FRAMES {
                let mut words = vec![0u16; len];
                let mut bits = vec![false; len];
                for (i, reg) in profile.registers.iter().enumerate() {
                    if table_index(reg.table) != ti {
                        continue;
                    }
                    // A slow wobble per register, different phase per register.
                    let phase = frame as f64 / FRAMES as f64 * std::f64::consts::TAU + i as f64;
                    let value = nominal(reg) * (1.0 + wobble(reg) * phase.sin());
                    let enc = encode(reg, value, 0)?;
                    let at = (u32::from(reg.address) - t.lo) as usize;
                    if reg.table.is_bits() {
                        bits[at] = enc.bit;
                    } else {
                        for (k, w) in enc.words.iter().enumerate() {
                            words[at + k] |= *w;
                        }
                    }
                }
                t.words.push(words);
                t.bits.push(bits);
            }
        }
        Ok(Images {
            tables,
            units,
            requests: AtomicU64::new(0),
        })
    }

    fn handle(&self, gateway: u16, req: SlaveRequest<'static>) -> Result<Response, ExceptionCode> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let unit = req.slave;
        if unit == 0 || unit > self.units {
            // What a gateway answers for a unit id it has nothing behind.
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        let (table, addr, qty) = match req.request {
            Request::ReadCoils(a, n) => (Table::Coil, a, n),
            Request::ReadDiscreteInputs(a, n) => (Table::Discrete, a, n),
            Request::ReadHoldingRegisters(a, n) => (Table::Holding, a, n),
            Request::ReadInputRegisters(a, n) => (Table::Input, a, n),
            // Read-only: writes and everything else are refused.
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        let limit = if table.is_bits() {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        };
        if qty == 0 || qty > limit {
            return Err(ExceptionCode::IllegalDataValue);
        }
        let t = self.tables[table_index(table)]
            .as_ref()
            .ok_or(ExceptionCode::IllegalDataAddress)?;
        let (start, end) = (u32::from(addr), u32::from(addr) + u32::from(qty));
        if start < t.lo || end > t.hi {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let frame = (secs as usize)
            .wrapping_add(usize::from(unit) * 7)
            .wrapping_add(usize::from(gateway) * 13)
            % FRAMES;
        let range = (start - t.lo) as usize..(end - t.lo) as usize;
        Ok(match table {
            Table::Coil => Response::ReadCoils(t.bits[frame][range].to_vec()),
            Table::Discrete => Response::ReadDiscreteInputs(t.bits[frame][range].to_vec()),
            Table::Holding => Response::ReadHoldingRegisters(t.words[frame][range].to_vec()),
            Table::Input => Response::ReadInputRegisters(t.words[frame][range].to_vec()),
        })
    }
}

/// The per-connection service handed to tokio-modbus.
#[derive(Debug, Clone)]
struct LoadService {
    images: Arc<Images>,
    gateway: u16,
}

impl tokio_modbus::server::Service for LoadService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        future::ready(self.images.handle(self.gateway, req))
    }
}

/// A running load harness.
#[derive(Debug)]
pub struct LoadHandle {
    addrs: Vec<SocketAddr>,
    images: Arc<Images>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds every gateway port and starts serving; returns once all sockets are bound.
pub async fn start_load(cfg: LoadConfig) -> Result<LoadHandle, SimError> {
    let images = Arc::new(Images::build(&cfg.profile, cfg.units.clamp(1, 247))?);
    let cancel = CancellationToken::new();
    let mut addrs = Vec::with_capacity(usize::from(cfg.gateways));
    let mut tasks = Vec::with_capacity(usize::from(cfg.gateways));
    for g in 0..cfg.gateways {
        let port = if cfg.base_port == 0 {
            0
        } else {
            cfg.base_port.saturating_add(g)
        };
        let addr = SocketAddr::new(cfg.ip, port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        addrs.push(
            listener
                .local_addr()
                .map_err(|source| SimError::Bind { addr, source })?,
        );
        let images = Arc::clone(&images);
        let cancel = cancel.clone();
        tasks.push(tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = |stream, _peer: SocketAddr| {
                let service = LoadService {
                    images: Arc::clone(&images),
                    gateway: g,
                };
                async move { Ok(Some((service, stream))) }
            };
            let on_process_error = |err: std::io::Error| {
                tracing::debug!(error = %err, "load connection ended with an error");
            };
            let abort = async move { cancel.cancelled().await };
            if let Err(err) = server
                .serve_until(&on_connected, on_process_error, abort)
                .await
            {
                tracing::error!(error = %err, gateway = g, "load gateway stopped accepting");
            }
        }));
    }
    Ok(LoadHandle {
        addrs,
        images,
        cancel,
        tasks,
    })
}

impl LoadHandle {
    /// The bound address of every gateway, in gateway order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Requests received so far, over all gateways.
    pub fn requests(&self) -> u64 {
        self.images.requests.load(Ordering::Relaxed)
    }

    /// Stops every gateway and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            if let Err(err) = t.await {
                tracing::warn!(error = %err, "load gateway task failed");
            }
        }
    }
}

/// What [`daemon_config`] writes.
#[derive(Debug, Clone)]
pub struct DaemonLayout<'a> {
    /// Gateway addresses (one endpoint each).
    pub addrs: &'a [SocketAddr],
    /// Unit ids per gateway.
    pub units: u8,
    /// Profile name the daemon knows the map by.
    pub profile: &'a str,
    /// Poll interval of every device.
    pub interval: Duration,
    /// Per-request timeout of every endpoint.
    pub timeout: Duration,
}

/// The device id of unit `unit` (1-based) behind gateway `gateway` (0-based).
pub fn device_id(gateway: usize, unit: u8) -> String {
    format!("LD-{gateway:03}-{unit:03}")
}

/// gridwatch configuration text for the harness: one `[[modbus.endpoints]]` per gateway and
/// one `[[devices]]` per unit, to append after the `[daemon]` and `[storage]` sections.
pub fn daemon_config(layout: &DaemonLayout<'_>) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut out = String::with_capacity(layout.addrs.len() * usize::from(layout.units) * 200);
    for (g, addr) in layout.addrs.iter().enumerate() {
        let _ = write!(
            out,
            "[[modbus.endpoints]]\nname = \"gw-{g:03}\"\naddress = \"{addr}\"\ntimeout = \"{}\"\n\n",
            ms(layout.timeout)
        );
    }
    for g in 0..layout.addrs.len() {
        for unit in 1..=layout.units {
            let _ = write!(
                out,
                "[[devices]]\nid = \"{}\"\nkind = \"meter\"\nsite = \"load-{g:03}\"\nfeeder = \"F{:02}\"\n\
                 endpoint = \"gw-{g:03}\"\nunit_id = {unit}\nprofile = \"{}\"\ninterval = \"{}\"\n\n",
                device_id(g, unit),
                unit % 8,
                layout.profile,
                ms(layout.interval),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bench_profile_is_one_read_of_60_words_with_50_values() {
        let p = Profile::parse("bench-50", BENCH_50).unwrap();
        assert_eq!(p.registers.len(), 50);
        let images = Images::build(&p, 3).unwrap();
        let t = images.tables[table_index(Table::Holding)].as_ref().unwrap();
        assert_eq!((t.lo, t.hi), (0, 60));
        assert_eq!(t.words.len(), FRAMES);
        // Frames differ, so values change over time.
        assert_ne!(t.words[0], t.words[FRAMES / 4]);
    }

    #[test]
    fn answers_mapped_reads_and_refuses_the_rest() {
        let p = Profile::parse("bench-50", BENCH_50).unwrap();
        let images = Images::build(&p, 3).unwrap();
        let req = |slave, request| SlaveRequest { slave, request };
        let ok = images
            .handle(0, req(2, Request::ReadHoldingRegisters(0, 60)))
            .unwrap();
        assert!(matches!(ok, Response::ReadHoldingRegisters(w) if w.len() == 60));
        assert_eq!(
            images
                .handle(0, req(4, Request::ReadHoldingRegisters(0, 60)))
                .unwrap_err(),
            ExceptionCode::GatewayTargetDevice
        );
        assert_eq!(
            images
                .handle(0, req(1, Request::ReadHoldingRegisters(50, 20)))
                .unwrap_err(),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(
            images
                .handle(0, req(1, Request::ReadInputRegisters(0, 2)))
                .unwrap_err(),
            ExceptionCode::IllegalDataAddress
        );
        assert_eq!(images.requests.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn config_has_one_endpoint_per_gateway_and_one_device_per_unit() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:1502".parse().unwrap(),
            "127.0.0.1:1503".parse().unwrap(),
        ];
        let text = daemon_config(&DaemonLayout {
            addrs: &addrs,
            units: 3,
            profile: "bench-50",
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
        });
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["modbus"]["endpoints"].as_array().unwrap().len(), 2);
        let devices = v["devices"].as_array().unwrap();
        assert_eq!(devices.len(), 6);
        assert_eq!(devices[5]["id"].as_str(), Some("LD-001-003"));
        assert_eq!(devices[5]["endpoint"].as_str(), Some("gw-001"));
    }
}
