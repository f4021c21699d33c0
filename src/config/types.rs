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
    /// `[mqtt]`: the MQTT broker and subscriptions (absent = no MQTT source).
    pub mqtt: Option<super::MqttConfig>,
    /// `[[devices]]`: every monitored device.
    pub devices: Vec<DeviceConfig>,
    /// `[alarms]`: rule engine and alarm state machine settings.
    pub alarms: crate::detect::config::AlarmsConfig,
    /// `[[rules]]`: rules and overrides of the built-in library.
    pub rules: Vec<crate::detect::config::RuleConfig>,
    /// `[notify]`: MQTT alerts and webhooks.
    pub notify: crate::notify::config::NotifyConfig,
    /// `[[crews]]`: field crews and the alarms routed to them.
    pub crews: Vec<crate::notify::config::CrewConfig>,
    /// `[api]`: authentication of the HTTP API.
    pub api: ApiConfig,
    /// `[eventlog]`: event log retention.
    pub eventlog: EventLogConfig,
    /// `[history]`: the in-memory chart window of the API and web page.
    pub history: crate::history::HistoryConfig,
    /// `[kpi]`: power-quality and reliability KPIs.
    pub kpi: crate::kpi::KpiConfig,
    /// `[locate]`: fault localisation (one alarm per faulted element).
    pub locate: crate::detect::locate::LocateConfig,
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
    /// Threads that run the daemon's async work (polling, the pipeline, the API); 0 means
    /// one per CPU core.
    #[serde(default)]
    pub worker_threads: usize,
    /// Threads of their own for the Modbus connections, each running its share of them;
    /// 0 runs them on the shared runtime with everything else.
    #[serde(default = "default_poll_threads")]
    pub poll_threads: usize,
}

fn default_poll_threads() -> usize {
    1
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
            worker_threads: 0,
            poll_threads: default_poll_threads(),
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
    /// `[storage.spool]`: the disk store-and-forward queue in front of the store.
    #[serde(default)]
    pub spool: SpoolConfig,
}

/// What the spool does when it reaches `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest segment (its points are counted in
    /// `gridwatch_spool_dropped_points_total` and logged): recent data wins.
    #[default]
    DropOldest,
    /// Stop taking new batches until the store catches up: the pipeline fills and polling
    /// waits. Old data wins; new readings are not taken while the spool is full.
    BlockSources,
}

/// When spooled batches are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    /// fsync after every batch: a batch survives a power cut once it is spooled.
    EveryBatch,
    /// fsync every `fsync_interval`: a killed process loses nothing, a power cut at most
    /// that interval.
    Interval,
}

/// `[storage.spool]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Spool telemetry to `data_dir/spool/` before sending it. Default: on when
    /// `[storage.influx]` is configured, off for line-protocol files.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Most bytes of spool files on disk; see `when_full`.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// `drop_oldest` (default) or `block_sources`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// `every_batch` (default) or `interval`; setting `fsync_interval` alone implies
    /// `interval`.
    #[serde(default)]
    pub fsync: Option<FsyncMode>,
    /// How often to fsync with `fsync = "interval"` (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub fsync_interval: Option<Duration>,
    /// A segment file is closed and a new one started beyond this many bytes; a segment is
    /// deleted once all its batches are acknowledged.
    #[serde(default = "default_spool_segment_bytes")]
    pub segment_bytes: u64,
}

fn default_spool_max_bytes() -> u64 {
    1 << 30
}

fn default_spool_segment_bytes() -> u64 {
    16 << 20
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            enabled: None,
            max_bytes: default_spool_max_bytes(),
            when_full: WhenFull::default(),
            fsync: None,
            fsync_interval: None,
            segment_bytes: default_spool_segment_bytes(),
        }
    }
}

impl SpoolConfig {
    /// The fsync period: `None` for every batch.
    pub fn fsync_period(&self) -> Option<Duration> {
        match (self.fsync, self.fsync_interval) {
            (Some(FsyncMode::EveryBatch), _) => None,
            (Some(FsyncMode::Interval), i) => Some(i.unwrap_or(Duration::from_secs(1))),
            (None, i) => i,
        }
    }
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
    /// Points per write request; a batch is sent when it is full, or `flush_interval` after
    /// its first point.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Largest request body: a batch is also sent once its line protocol reaches this many
    /// bytes, so wide devices (50 values a line) do not make multi-megabyte requests.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Longest time a point waits in a batch before it is sent (counted from the batch's
    /// first point).
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

fn default_batch_max_bytes() -> usize {
    2 << 20
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
    /// Modbus RTU on a serial line (RS-485 bus): `device`, `baud`, `parity`, ...
    Rtu,
    /// RTU frames (with CRC) over a TCP socket, as serial-to-Ethernet converters pass them.
    RtuOverTcp,
}

impl Transport {
    /// True for transports that reach a shared serial bus: strictly one request at a time,
    /// with the inter-frame silence and per-unit backoff of a bus.
    pub fn is_bus(self) -> bool {
        matches!(self, Transport::Rtu | Transport::RtuOverTcp)
    }

    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Rtu => "rtu",
            Transport::RtuOverTcp => "rtu-over-tcp",
        }
    }
}

/// Serial parity bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit (the spec then asks for 2 stop bits; many meters use 1 anyway).
    None,
    /// Even parity, the Modbus serial line default (Modbus over Serial Line V1.02 §2.5.1).
    #[default]
    Even,
    /// Odd parity.
    Odd,
}

/// `[[modbus.endpoints]]`: one Modbus TCP gateway or device, one RS-485 bus (`rtu`), or one
/// serial-to-Ethernet converter passing RTU frames (`rtu-over-tcp`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Name the devices refer to with `endpoint = "..."`.
    pub name: String,
    /// `host:port` of the gateway or device (`tcp`, `rtu-over-tcp`; not used by `rtu`).
    #[serde(default)]
    pub address: String,
    /// `tcp` (default), `rtu` or `rtu-over-tcp`.
    #[serde(default)]
    pub transport: Transport,
    /// `rtu`: serial device path, e.g. `/dev/ttyUSB0`.
    #[serde(default)]
    pub device: Option<PathBuf>,
    /// `rtu`: baud rate; `rtu-over-tcp`: the baud rate of the bus behind the converter, used
    /// for the inter-frame silence.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `rtu`: `none`, `even` (default, the Modbus serial default) or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// `rtu`: data bits, 7 or 8 (Modbus RTU uses 8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `rtu`: stop bits, 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Bus transports: silence between the end of one frame and the next request. Default:
    /// 3.5 character times at `baud`, and 1.75 ms above 19200 baud (Modbus over Serial Line
    /// V1.02 §2.5.1.1).
    #[serde(default, with = "humantime_serde")]
    pub inter_frame_delay: Option<Duration>,
    /// Consecutive failed polls after which a unit is backed off (polled less often so it
    /// stops eating bus time); 0 = never. Default: 3 on bus transports, 0 on `tcp`.
    #[serde(default)]
    pub backoff_after: Option<u32>,
    /// Longest poll interval of a backed-off unit; it doubles from the unit's interval up to
    /// this, and is back to normal after the first answer.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Bus transports: immediate retries of a request whose answer failed its CRC check
    /// (line noise); a timeout is never retried within a poll.
    #[serde(default = "default_crc_retries")]
    pub crc_retries: u32,
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

fn default_baud() -> u32 {
    9600
}

fn default_data_bits() -> u8 {
    8
}

fn default_stop_bits() -> u8 {
    1
}

fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}

fn default_crc_retries() -> u32 {
    1
}

impl EndpointConfig {
    /// Bits on the wire per character: start, data, parity, stop.
    pub fn bits_per_char(&self) -> u32 {
        let parity = u32::from(self.parity != Parity::None);
        1 + u32::from(self.data_bits) + parity + u32::from(self.stop_bits)
    }

    /// The silence kept between frames on a bus: `inter_frame_delay`, or 3.5 character
    /// times, at least 1.75 ms above 19200 baud (Modbus over Serial Line V1.02 §2.5.1.1).
    pub fn frame_gap(&self) -> Duration {
        if let Some(d) = self.inter_frame_delay {
            return d;
        }
        if self.baud > 19200 {
            return Duration::from_micros(1750);
        }
        let micros =
            (u64::from(self.bits_per_char()) * 3_500_000).div_ceil(u64::from(self.baud.max(1)));
        Duration::from_micros(micros)
    }

    /// Failed polls after which a unit is backed off (0 = never).
    pub fn backoff_after(&self) -> u32 {
        self.backoff_after
            .unwrap_or(if self.transport.is_bus() { 3 } else { 0 })
    }
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
    /// Reports over MQTT (see `[mqtt]`); `interval` is the expected reporting interval.
    Mqtt,
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
    /// Phase a single-phase meter is connected to (`a`, `b`, `c`); unset = three-phase.
    #[serde(default)]
    pub phase: Option<crate::topology::Phase>,
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

/// `auth = "on" | "off"` in `[api]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every route but `/healthz` needs a bearer token (default).
    #[default]
    On,
    /// No authentication; allowed only when `daemon.http_listen` is a loopback address.
    Off,
}

/// `[api]`: authentication of the HTTP API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `on` (default) or `off` (loopback only; every request acts as an anonymous admin).
    #[serde(default)]
    pub auth: AuthMode,
    /// `[[api.tokens]]`: tokens for automation, besides the users made with
    /// `gridwatch users add`.
    #[serde(default)]
    pub tokens: Vec<ApiTokenConfig>,
    /// Failed authentications from one address within `failure_window` that lock it out.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Window in which failures are counted.
    #[serde(default = "default_failure_window", with = "humantime_serde")]
    pub failure_window: Duration,
    /// How long a locked-out address gets 429 without its credentials being checked.
    #[serde(default = "default_lockout", with = "humantime_serde")]
    pub lockout: Duration,
}

fn default_max_failures() -> u32 {
    10
}

fn default_failure_window() -> Duration {
    Duration::from_secs(60)
}

fn default_lockout() -> Duration {
    Duration::from_secs(60)
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            auth: AuthMode::On,
            tokens: Vec::new(),
            max_failures: default_max_failures(),
            failure_window: default_failure_window(),
            lockout: default_lockout(),
        }
    }
}

/// `[[api.tokens]]`: one token for automation. Give exactly one of `token`, `token_env`,
/// `token_sha256`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Name shown as the actor in audit records.
    pub name: String,
    /// `viewer`, `operator`, `crew`, `engineer` or `admin`.
    pub role: crate::api::auth::Role,
    /// The token itself (at least 16 characters); prefer `token_env` or `token_sha256`.
    #[serde(default)]
    pub token: Option<String>,
    /// Name of an environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default)]
    pub token_sha256: Option<String>,
}

/// How long to keep something: a duration (`"90d"`) or `"forever"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Never purged.
    Forever,
    /// Purged when older than this.
    For(Duration),
}

impl Serialize for Retention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Retention::Forever => s.serialize_str("forever"),
            Retention::For(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "forever" {
            return Ok(Retention::Forever);
        }
        humantime::parse_duration(&s)
            .map(Retention::For)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "expected a duration like \"90d\" or \"forever\": {e}"
                ))
            })
    }
}

/// `[eventlog.retention]`: how long each class of event is kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Device online / offline / degraded events (default 90 days).
    #[serde(default = "default_device_status_retention")]
    pub device_status: Retention,
    /// Alarm events, and closed alarms (default 2 years).
    #[serde(default = "default_alarm_retention")]
    pub alarm: Retention,
    /// Maintenance records, work orders and their events (default forever).
    #[serde(default = "default_forever")]
    pub maintenance: Retention,
    /// Config loaded, daemon started / stopped (default 1 year).
    #[serde(default = "default_year")]
    pub system: Retention,
    /// Audit and security records (default 1 year; never less than 90 days, whatever is set).
    #[serde(default = "default_year")]
    pub audit: Retention,
}

fn default_device_status_retention() -> Retention {
    Retention::For(Duration::from_secs(90 * 86_400))
}

fn default_alarm_retention() -> Retention {
    Retention::For(Duration::from_secs(2 * 365 * 86_400))
}

fn default_forever() -> Retention {
    Retention::Forever
}

fn default_year() -> Retention {
    Retention::For(Duration::from_secs(365 * 86_400))
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            device_status: default_device_status_retention(),
            alarm: default_alarm_retention(),
            maintenance: default_forever(),
            system: default_year(),
            audit: default_year(),
        }
    }
}

impl RetentionConfig {
    /// The retention of an event class.
    pub fn get(&self, class: crate::eventlog::EventClass) -> Retention {
        use crate::eventlog::EventClass;
        match class {
            EventClass::DeviceStatus => self.device_status,
            EventClass::Alarm => self.alarm,
            EventClass::Maintenance => self.maintenance,
            EventClass::System => self.system,
        }
    }
}

/// `[eventlog]`: the SQLite event log in `data_dir/gridwatch.db`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventLogConfig {
    /// Retention per class.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// How often the purge runs (also once at start-up).
    #[serde(default = "default_purge_interval", with = "humantime_serde")]
    pub purge_interval: Duration,
}

fn default_purge_interval() -> Duration {
    Duration::from_secs(3600)
}

impl Default for EventLogConfig {
    fn default() -> Self {
        EventLogConfig {
            retention: RetentionConfig::default(),
            purge_interval: default_purge_interval(),
        }
    }
}
