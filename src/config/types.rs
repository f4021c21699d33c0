//! The configuration structs, one per section; every field documents what it means to a user.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// `[daemon]`: process-wide settings.
    pub daemon: DaemonConfig,
    /// `[storage]`: where telemetry goes.
    pub storage: StorageConfig,
    /// `[modbus]`: Modbus endpoints (gateways and devices).
    pub modbus: ModbusConfig,
    /// `[[devices]]`: every monitored device.
    pub devices: Vec<DeviceConfig>,
    /// `[history]`: the in-memory chart window of the API and web page.
    pub history: crate::history::HistoryConfig,
}

/// `[daemon]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory for the event database, the spool and line-protocol files.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API and web page.
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Directories with one `NAME.toml` file per device profile, relative to the config file.
    #[serde(default)]
    pub profile_dirs: Vec<PathBuf>,
    /// Capacity of each pipeline channel, in readings.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_channel_capacity() -> usize {
    8192
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            data_dir: default_data_dir(),
            http_listen: default_http_listen(),
            profile_dirs: Vec::new(),
            channel_capacity: default_channel_capacity(),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// An InfluxDB-compatible store; without it telemetry goes to daily `.lp` files in
    /// `data_dir/telemetry/`.
    #[serde(default)]
    pub influx: Option<InfluxConfig>,
}

/// Which InfluxDB write API to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InfluxApi {
    /// `/api/v2/write` with org, bucket and token (InfluxDB 2.x/3.x, VictoriaMetrics).
    #[default]
    V2,
    /// `/write?db=&rp=` with optional basic auth (InfluxDB 1.x, VictoriaMetrics).
    V1,
}

/// `[storage.influx]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL of the store, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// Write API: `v2` (default) or `v1`.
    #[serde(default)]
    pub api: InfluxApi,
    /// v2: organisation.
    #[serde(default)]
    pub org: String,
    /// v2: bucket.
    #[serde(default)]
    pub bucket: String,
    /// v2: API token (or `GRIDWATCH__STORAGE__INFLUX__TOKEN`).
    #[serde(default)]
    pub token: String,
    /// v1: database.
    #[serde(default)]
    pub db: String,
    /// v1: retention policy (empty = the database default).
    #[serde(default)]
    pub rp: String,
    /// v1: user name for basic auth (empty = none).
    #[serde(default)]
    pub username: String,
    /// v1: password for basic auth.
    #[serde(default)]
    pub password: String,
    /// Points per write request; a batch is sent when it is full or `flush_interval` passed.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest time a point waits in a batch before it is sent.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// HTTP request timeout for one write.
    #[serde(default = "default_write_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Batches kept in memory while the store is unreachable; the oldest is dropped (and
    /// counted) beyond this.
    #[serde(default = "default_max_pending_batches")]
    pub max_pending_batches: usize,
}

fn default_batch_size() -> usize {
    5000
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_pending_batches() -> usize {
    1000
}

/// `[modbus]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusConfig {
    /// `[[modbus.endpoints]]`: gateways or devices reached over the network.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

/// How an endpoint is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Modbus TCP (MBAP framing).
    #[default]
    Tcp,
}

/// `[[modbus.endpoints]]`: one Modbus TCP gateway or device.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Name the devices refer to with `endpoint = "..."`.
    pub name: String,
    /// `host:port` of the gateway or device.
    pub address: String,
    /// `tcp` (default).
    #[serde(default)]
    pub transport: Transport,
    /// How long to wait for one response.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How long to wait for the TCP connection to open.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Parallel connections (= requests in flight) to this endpoint. Most gateways serve one
    /// request at a time; raise it only for endpoints that document more.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// First wait before reconnecting after a failed connect; doubles up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Most registers in one read (the Modbus limit is 125; some devices need less).
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    /// Most bits in one coil/discrete read (the Modbus limit is 2000).
    #[serde(default = "default_max_bits")]
    pub max_bits: u16,
    /// Consecutive failed polls after which a device is `offline` (after one it is `degraded`).
    #[serde(default = "default_offline_after")]
    pub offline_after: u32,
}

fn default_timeout() -> Duration {
    Duration::from_millis(500)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_max_in_flight() -> usize {
    1
}

fn default_reconnect_min() -> Duration {
    Duration::from_millis(500)
}

fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

fn default_max_registers() -> u16 {
    125
}

fn default_max_bits() -> u16 {
    2000
}

fn default_offline_after() -> u32 {
    2
}

/// Where a device's readings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Polled over Modbus (needs `endpoint`, `unit_id`, `profile`).
    Modbus,
}

/// `[[devices]]`: one transformer, meter or other monitored device.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unique id, used as the `device` tag (e.g. `TX-0701`).
    pub id: String,
    /// `transformer`, `meter`, ...; the line-protocol measurement name.
    pub kind: String,
    /// Site (substation) the device belongs to.
    #[serde(default)]
    pub site: String,
    /// Feeder the device hangs on.
    #[serde(default)]
    pub feeder: String,
    /// Where readings come from; inferred as `modbus` when `endpoint` is set.
    #[serde(default)]
    pub source: Option<SourceKind>,
    /// Modbus endpoint name (see `[[modbus.endpoints]]`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Modbus unit id (slave address) behind the endpoint, 1–255.
    #[serde(default)]
    pub unit_id: Option<u8>,
    /// Register map name (a `[profiles.NAME]` or a file in `profile_dirs`).
    #[serde(default)]
    pub profile: Option<String>,
    /// Poll interval.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Rated apparent power, kVA (transformers; load % is computed from it).
    #[serde(default)]
    pub rated_kva: Option<f64>,
    /// Nominal phase-to-neutral voltage, V.
    #[serde(default)]
    pub nominal_voltage: Option<f64>,
    /// Parent device id (a meter's transformer).
    #[serde(default)]
    pub parent: Option<String>,
    /// Free-text location for field crews (street, pole, GPS).
    #[serde(default)]
    pub location: Option<String>,
    /// Customers supplied through this device.
    #[serde(default = "default_customers")]
    pub customers: u32,
    /// Set false to keep a device in the config without polling it.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_customers() -> u32 {
    1
}

fn default_enabled() -> bool {
    true
}

impl DeviceConfig {
    /// The source this device uses, inferring Modbus from an `endpoint`.
    pub fn source_kind(&self) -> Option<SourceKind> {
        self.source
            .or_else(|| self.endpoint.as_ref().map(|_| SourceKind::Modbus))
    }
}
