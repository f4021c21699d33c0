//! Smoke tests of the test infrastructure: the services `scripts/test.sh` starts are up,
//! and the helpers in `common` read back what plain HTTP / MQTT clients wrote.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use rumqttc::{Client, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS};

#[test]
fn victoria_metrics_v2_and_v1_writes_read_back() {
    let s = services();
    let device = unique("smoke_vm");
    let t1 = now_ns() - 1_000_000_000;
    let t2 = now_ns();
    // v2: bucket and org are accepted and dropped (no label).
    let body_v2 = format!(
        "smoke,device={device},api=v2 x=65.30000305175781,n=7i {t1}\n\
         smoke,device={device},api=v2 x=1.5,n=8i {t2}\n"
    );
    assert_eq!(
        http_post(
            &format!("{}/api/v2/write?org=gw&bucket={device}", s.vm_url),
            &body_v2
        ),
        204
    );
    // v1: db becomes a label.
    let body_v1 = format!(
        "smoke,device={device},api=v1 x=230.5 {t1}\nsmoke,device={device},api=v1 x=-0.25 {t2}\n"
    );
    assert_eq!(
        http_post(&format!("{}/write?db={device}", s.vm_url), &body_v1),
        204
    );

    vm_flush(&s.vm_url);
    let series = vm_export(&s.vm_url, &format!("{{device=\"{device}\"}}"));
    let names: Vec<_> = series
        .iter()
        .map(|s| (s.name.as_str(), s.labels.get("api").unwrap().as_str()))
        .collect();
    assert_eq!(
        names,
        [("smoke_n", "v2"), ("smoke_x", "v1"), ("smoke_x", "v2")],
        "{series:#?}"
    );

    let v2_x = &series[2];
    assert!(!v2_x.labels.contains_key("bucket"), "{v2_x:?}");
    assert!(!v2_x.labels.contains_key("org"), "{v2_x:?}");
    assert!(!v2_x.labels.contains_key("db"), "{v2_x:?}");
    assert_eq!(v2_x.timestamps_ms, [t1 / 1_000_000, t2 / 1_000_000]);
    assert!(approx_eq(v2_x.values[0], 65.30000305175781), "{v2_x:?}");
    // Documented in `vm_export`: not bit-exact.
    assert_eq!(v2_x.values[0], 65.3000030517);
    assert_eq!(v2_x.values[1], 1.5);
    assert_eq!(series[0].values, [7.0, 8.0]);

    let v1_x = &series[1];
    assert_eq!(v1_x.labels.get("db"), Some(&device));
    assert_eq!(v1_x.values, [230.5, -0.25]);
    assert_eq!(v1_x.timestamps_ms, [t1 / 1_000_000, t2 / 1_000_000]);
}

#[test]
fn victoria_metrics_export_wait_sees_a_point_stamped_now() {
    let s = services();
    let device = unique("smoke_vm_now");
    http_post(
        &format!("{}/write?db=smoke", s.vm_url),
        &format!("now,device={device} v=42 {}", now_ns()),
    );
    let series = vm_export_wait(
        &s.vm_url,
        &format!("now_v{{device=\"{device}\"}}"),
        1,
        Duration::from_secs(10),
    );
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].values, [42.0]);
}

#[test]
fn influxdb1_write_and_query() {
    let s = services();
    let db = unique("smoke_db");
    influx1_create_db(&s.influx1_url, &db);
    let t1 = now_ns() - 2_000_000_000;
    let t2 = t1 + 1_000_000_000;
    let body = format!(
        // One type per field: an integer (`-3i`) after a float is a 400 "field type conflict".
        "power,device=M-1 p=65.30000305175781 {t1}\npower,device=M-1 p=-3 {t2}\n\
         power,device=M-2 p=99 {t2}\n"
    );
    assert_eq!(
        http_post(&format!("{}/write?db={db}", s.influx1_url), &body),
        204
    );
    let points = influx1_points(&s.influx1_url, &db, "power", "p", "M-1");
    // InfluxDB 1.x keeps float64 exactly and nanosecond timestamps.
    assert_eq!(points, [(t1, 65.30000305175781), (t2, -3.0)]);
    assert!(influx1_points(&s.influx1_url, &db, "power", "p", "nope").is_empty());
    let v = influxql(&s.influx1_url, &db, "SHOW MEASUREMENTS");
    assert_eq!(v["results"][0]["series"][0]["values"][0][0], "power", "{v}");
}

fn mqtt_options(addr: &str, id: &str, creds: Option<(&str, &str)>) -> MqttOptions {
    let (host, port) = host_port(addr);
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    o
}

/// Subscribes, publishes one message from a second client and returns its payload.
fn mqtt_round_trip(addr: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
    let topic = format!("gridwatch/test/{}", unique("smoke"));
    let (sub, mut sub_conn) = Client::new(mqtt_options(addr, &unique("sub"), creds), 10);
    sub.subscribe(&topic, QoS::AtLeastOnce).unwrap();
    wait_event(&mut sub_conn, "SubAck", |p| matches!(p, Packet::SubAck(_)));

    let (publ, mut pub_conn) = Client::new(mqtt_options(addr, &unique("pub"), creds), 10);
    publ.publish(&topic, QoS::AtLeastOnce, false, b"230.1".to_vec())
        .unwrap();
    wait_event(&mut pub_conn, "PubAck", |p| matches!(p, Packet::PubAck(_)));

    let msg = wait_event(&mut sub_conn, "Publish", |p| {
        matches!(p, Packet::Publish(_))
    });
    let Packet::Publish(p) = msg else {
        unreachable!()
    };
    assert_eq!(p.topic, topic);
    p.payload.to_vec()
}

fn wait_event(
    conn: &mut rumqttc::Connection,
    what: &str,
    want: impl Fn(&Packet) -> bool,
) -> Packet {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Incoming(p))) if want(&p) => return p,
            Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => panic!("MQTT error while waiting for {what}: {e:?}"),
            Err(e) => panic!("MQTT connection gone while waiting for {what}: {e:?}"),
        }
    }
    panic!("no {what} within 10 s");
}

/// The error the broker answers a CONNECT with.
fn mqtt_connect_error(addr: &str, creds: Option<(&str, &str)>) -> ConnectionError {
    let (_client, mut conn) = Client::new(mqtt_options(addr, &unique("bad"), creds), 10);
    match conn.recv_timeout(Duration::from_secs(10)) {
        Ok(Err(e)) => e,
        other => panic!("expected the broker to refuse the connection, got {other:?}"),
    }
}

#[test]
fn mosquitto_anonymous_round_trip() {
    let s = services();
    assert_eq!(mqtt_round_trip(&s.mqtt, None), b"230.1");
}

#[test]
fn mosquitto_auth_accepts_right_password_and_refuses_others() {
    let s = services();
    let (user, pass) = mqtt_credentials();
    assert_eq!(
        mqtt_round_trip(&s.mqtt_auth, Some((&user, &pass))),
        b"230.1"
    );
    for creds in [Some((user.as_str(), "wrong")), None] {
        match mqtt_connect_error(&s.mqtt_auth, creds) {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
            ) => {}
            e => panic!("credentials {creds:?}: expected a refusal, got {e:?}"),
        }
    }
}

#[test]
fn helpers_are_sane() {
    assert_ne!(unique("a"), unique("a"));
    assert_ne!(free_port(), 0);
    assert!(approx_eq(65.30000305175781, 65.3000030517));
    assert!(!approx_eq(65.3, 65.31));
    assert_eq!(influxql_string("a'b"), "'a\\'b'");
    assert_eq!(influxql_ident("m\"x"), "\"m\\\"x\"");
    assert!(Daemon::bin().ends_with("gridwatch"));
    let s = services();
    wait_http_ok(&format!("{}/health", s.vm_url), Duration::from_secs(5));
}

#[test]
fn daemon_helper_captures_output_and_reaps() {
    // The placeholder binary exits at once; this checks the plumbing, not the daemon.
    let mut d = Daemon::spawn(&["--version"]);
    let status = d.terminate();
    assert!(d.try_wait().is_some(), "{status}");
    let _ = d.log();
}
