use super::*;

fn load_text(text: &str) -> Result<LoadedConfig, ConfigErrors> {
    load_str(text, "test.toml", Path::new("."), &[])
}

const PROFILE: &str = r#"
[profiles.tx]
registers = [
  { name = "oil_temp", table = "input", address = 0, type = "f32", unit = "degC" },
  { name = "current_a", table = "holding", address = 100, type = "u16", scale = 0.1 },
]
"#;

#[test]
fn minimal_config_loads_with_defaults() {
    let text = format!(
        r#"
[[modbus.endpoints]]
name = "gw"
address = "127.0.0.1:5020"

[[devices]]
id = "TX-1"
kind = "transformer"
endpoint = "gw"
unit_id = 1
profile = "tx"
interval = "250ms"
{PROFILE}"#
    );
    let loaded = load_text(&text).unwrap();
    let ep = &loaded.config.modbus.endpoints[0];
    assert_eq!(ep.timeout, std::time::Duration::from_millis(500));
    assert_eq!(ep.max_registers, 125);
    assert_eq!(
        loaded.config.devices[0].interval,
        std::time::Duration::from_millis(250)
    );
    assert_eq!(
        loaded.config.devices[0].source_kind(),
        Some(SourceKind::Modbus)
    );
    assert!(loaded.config.storage.influx.is_none());
}

#[test]
fn reports_every_error_with_its_key_path() {
    let text = format!(
        r#"
[[modbus.endpoints]]
name = "gw"
address = "127.0.0.1:5020"
timeout = "fast"

[[devices]]
id = "TX-1"
kind = "transformer"
endpoint = "gw"
unit_id = 1
profile = "tx-basic"

[[devices]]
id = "TX-2"
kind = "transformer"
endpoint = "nowhere"
unit_id = 2
profile = "tx"
colour = "red"

[[devices]]
id = "TX-3"
kind = "transformer"
endpoint = "gw"
unit_id = 300
profile = "tx"
{PROFILE}"#
    );
    let errors = load_text(&text).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"modbus.endpoints[0].timeout"), "{errors:?}");
    assert!(keys.contains(&"devices[1].colour"), "{errors:?}");
    assert!(keys.contains(&"devices[2].unit_id"), "{errors:?}");
    let profile = errors
        .iter()
        .find(|e| e.key == "devices[0].profile")
        .unwrap();
    assert_eq!(profile.message, "unknown profile \"tx-basic\"");
    assert!(errors.iter().all(|e| e.file == "test.toml"));
    let shown = errors[0].to_string();
    assert!(shown.starts_with("test.toml: "), "{shown}");
}

#[test]
fn semantic_checks_catch_duplicates_and_missing_keys() {
    let text = format!(
        r#"
[daemon]
worker_threads = 5000
poll_threads = 5000

[storage.influx]
url = "not a url"
api = "v1"

[[modbus.endpoints]]
name = "gw"
address = "no-port"

[[devices]]
id = "A"
kind = "meter"
endpoint = "gw"
unit_id = 1
profile = "tx"

[[devices]]
id = "A"
kind = "meter"
endpoint = "gw"
unit_id = 1
profile = "tx"
parent = "ghost"
{PROFILE}"#
    );
    let errors = load_text(&text).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    for expected in [
        "daemon.worker_threads",
        "daemon.poll_threads",
        "storage.influx.url",
        "storage.influx.db",
        "modbus.endpoints[0].address",
        "devices[1].id",
        "devices[1].unit_id",
        "devices[1].parent",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {errors:?}");
    }
}

#[test]
fn profile_file_errors_name_the_file_and_register() {
    let mut issues = Vec::new();
    let text = r#"
[[registers]]
name = "x"
table = "input"
address = 0
type = "f33"
"#;
    assert!(parse_profile_file(text, "profiles/bad.toml", &mut issues).is_none());
    assert_eq!(issues[0].file, "profiles/bad.toml");
    assert_eq!(issues[0].key, "registers[0].type");
}

#[test]
fn bus_endpoints_are_validated_per_transport() {
    let text = r#"
[[modbus.endpoints]]
name = "bus"
transport = "rtu"
address = "127.0.0.1:502"
max_in_flight = 2
stop_bits = 3

[[modbus.endpoints]]
name = "conv"
transport = "rtu-over-tcp"
baud = 10
"#;
    let errors = load_text(text).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    for expected in [
        "modbus.endpoints[0].device",
        "modbus.endpoints[0].address",
        "modbus.endpoints[0].max_in_flight",
        "modbus.endpoints[0].stop_bits",
        "modbus.endpoints[1].address",
        "modbus.endpoints[1].baud",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {errors:?}");
    }
}

#[test]
fn reference_and_demo_configs_load_with_their_mqtt_sections() {
    let loaded = load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/gridwatch.toml"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let mqtt = loaded.config.mqtt.as_ref().unwrap();
    assert_eq!(mqtt.subscriptions.len(), 2);
    assert_eq!(mqtt.subscriptions[0].fields.len(), 13);
    assert!(!mqtt.clean_session);
    assert!(
        loaded
            .config
            .devices
            .iter()
            .any(|d| d.source_kind() == Some(SourceKind::Mqtt))
    );
    let demo = load_str(
        include_str!("../../config/demo.toml"),
        "demo.toml",
        Path::new("."),
        &profile::BUILTIN_PROFILES,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mqtt_meters = demo
        .config
        .devices
        .iter()
        .filter(|d| d.source_kind() == Some(SourceKind::Mqtt) && d.parent.is_some())
        .count();
    assert_eq!(mqtt_meters, 100);
}

#[test]
fn mqtt_errors_name_their_key_paths() {
    let text = r#"
[mqtt]
broker = "nohost"
keep_alive = "soon"

[[mqtt.subscriptions]]
pattern = "meters/+/telemetry"
fields = [{ path = "v", name = "v" }]

[[mqtt.subscriptions]]
pattern = "m/{device}"
format = "json"

[[mqtt.subscriptions]]
pattern = "m/{device}/x"
format = "xml"

[[devices]]
id = "MQ-1"
kind = "meter"
source = "mqtt"
unit_id = 3
"#;
    let errors = load_text(text).unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|i| i.key.as_str()).collect();
    for want in [
        "mqtt.keep_alive",
        "mqtt.subscriptions[2].format",
        "mqtt.subscriptions[0].pattern",
        "mqtt.subscriptions[1].fields",
        "devices[0].unit_id",
    ] {
        assert!(keys.contains(&want), "{want} missing in {errors}");
    }
}
