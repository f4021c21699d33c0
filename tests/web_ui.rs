//! The control-room page in a real headless Chromium (Debian `chromium` + `chromedriver`),
//! against the real daemon polling the in-process simulator, with authentication on.
//! Screenshots are kept under `target/tmp/screenshots/` as artifacts.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::sim::{Sim, fleet_config};
use common::webdriver::Browser;
use common::*;
use serde_json::json;

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// `gridwatch users add NAME --role ROLE`: the token it prints once.
fn add_user(config: &std::path::Path, name: &str, role: &str) -> String {
    let out = Command::new(Daemon::bin())
        .args(["users", "add", name, "--role", role, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .find(|w| w.starts_with("gw_"))
        .map(String::from)
        .unwrap_or_else(|| text.lines().last().unwrap_or_default().trim().to_string())
}

fn login(b: &Browser, base: &str, token: &str) {
    b.goto(&format!("{base}/"));
    let input = b.wait_for("#token", Duration::from_secs(10));
    b.type_text(&input, token);
    b.click_css("#login-btn");
    b.wait_count(".tile", Duration::from_secs(20), |n| n == 3);
}

#[test]
fn operators_see_the_fleet_and_alarms_live_and_viewers_cannot_acknowledge() {
    let sim = Sim::start(1, 2);
    let tag = unique("ui");
    let data = tempfile::tempdir().unwrap();
    let config = fleet_config(&sim, &tag, "500ms", "", data.path().to_str().unwrap())
        .replace("auth = \"off\"", "auth = \"on\"")
        .replace(
            "interval = \"500ms\"\n",
            "interval = \"500ms\"\nnominal_voltage = 230.0\n",
        )
        + "\n[history]\nresolution = \"500ms\"\n";
    let port = http_port_of(&config);
    let base = format!("http://127.0.0.1:{port}");
    let dir = Daemon::temp_dir();
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, &config).unwrap();
    let operator = add_user(&path, "olga", "operator");
    let viewer = add_user(&path, "victor", "viewer");
    let mut daemon = Daemon::spawn_in(dir, &["run", "--config", path.to_str().unwrap()], &[]);
    daemon.wait_for_log("gridwatch running", Duration::from_secs(20));

    // Without a token the page asks for one and shows nothing.
    let b = Browser::start((1920, 1080));
    b.goto(&format!("{base}/"));
    b.wait_for("#banner:not([hidden])", Duration::from_secs(10));
    assert_eq!(b.find_all(".tile").len(), 0);

    // The operator logs in: the whole fleet, grouped, all online.
    login(&b, &base, &operator);
    b.wait_count(".tile[data-status=online]", Duration::from_secs(20), |n| {
        n == 3
    });
    assert!(b.text_of("#count-total").unwrap().starts_with('3'));
    assert_eq!(b.text_of(".site h2").unwrap(), "Substation 7");
    assert!(b.text_of("#who").unwrap().contains("operator"));
    let token_in_url = b.script("return location.href", json!([]));
    assert!(
        !token_in_url.as_str().unwrap().contains(&operator),
        "token never in the URL"
    );
    b.screenshot(&screenshot_dir().join("overview.png"));

    // The feeder's KPI panel shows today's figures, the same as the API's.
    let feeder_id = "Substation 7/F07, north";
    let shown = wait_for("the feeder KPI panel", Duration::from_secs(25), || {
        let t = b.text_of(".kpi[data-scope=feeder] [data-k=customers] b")?;
        (t != "0").then_some(t)
    });
    let api: serde_json::Value = http()
        .get(format!("{base}/api/v1/kpi"))
        .bearer_auth(&operator)
        .query(&[("scope", "feeder"), ("id", feeder_id)])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        shown,
        api["reliability"]["customers_served"].to_string(),
        "{api}"
    );
    let voltage = b
        .text_of(".kpi[data-scope=feeder] [data-k=voltage] b")
        .unwrap();
    // Normal operation: every monitored second inside the band.
    assert_eq!(api["voltage"]["compliance_pct"], 100.0, "{api}");
    assert_eq!(voltage, "100.00 %");
    assert!(b.text_of(".kpi[data-scope=site] [data-k=rs1] b").is_some());

    // Values on the overview follow the field without a reload (the meter's voltage moves
    // from one read to the next; the overview refreshes its summary every 10 s). 45 s is
    // four refreshes: one CI run saw none change the tile within 25 s (two refreshes).
    let meter_tile = format!(".tile.meter[data-device='{tag}-MT-0002'] .sub");
    let first = b.text_of(&meter_tile).unwrap();
    assert!(first.ends_with(" V"), "{first}");
    let later = wait_for("the meter tile to change", Duration::from_secs(45), || {
        b.text_of(&meter_tile).filter(|t| t != &first)
    });
    assert!(later.ends_with(" V"), "{later}");

    // A fault in the field: the alarm appears without a reload.
    let tx = format!("{tag}-TX-0001");
    sim.h().set_fault(1, gridwatch_sim::Fault::OverTemperature);
    let alarm_css = format!(".alarm[data-device='{tx}'][data-rule=oil_temp_high]");
    b.wait_for(&alarm_css, Duration::from_secs(60));
    let tile = format!(".tile[data-device='{tx}'].in-alarm");
    b.wait_for(&tile, Duration::from_secs(5));
    let text = b.text_of(&alarm_css).unwrap();
    assert!(text.contains("First action"), "{text}");
    b.screenshot(&screenshot_dir().join("overview-alarm.png"));

    // The operator acknowledges it; its state changes in place.
    assert!(b.click_css(&format!("{alarm_css} .ack")));
    b.answer_prompt("oil level checked, fans running");
    b.wait_for(
        &format!("{alarm_css}[data-state=acknowledged]"),
        Duration::from_secs(10),
    );
    let alarm_id = b
        .script(
            &format!("return document.querySelector(\"{alarm_css}\").dataset.alarm"),
            json!([]),
        )
        .as_str()
        .unwrap()
        .to_string();

    // Device page: values, charts, the alarm and its history.
    b.goto(&format!("{base}/#/device/{tx}"));
    b.wait_for("#device-title", Duration::from_secs(10));
    b.wait_count(".chart", Duration::from_secs(15), |n| n >= 4);
    // Live readings reach the open device page: the over-temperature shows up.
    let oil = wait_for(
        "hot oil on the device page",
        Duration::from_secs(15),
        || {
            let t = b.text_of("[data-field=oil_temp] .v")?;
            let v: f64 = t.split_whitespace().next()?.parse().ok()?;
            (v > 90.0).then_some(t)
        },
    );
    assert!(oil.ends_with("°C"), "{oil}");
    b.wait_for("#events", Duration::from_secs(10));
    b.screenshot(&screenshot_dir().join("device.png"));

    // A viewer sees the alarm but no acknowledge button, and a forged request is refused.
    let v = Browser::start((1920, 1080));
    login(&v, &base, &viewer);
    v.wait_for(&alarm_css, Duration::from_secs(10));
    assert_eq!(
        v.find_all(".alarm .ack").len(),
        0,
        "viewer gets no acknowledge button"
    );
    assert_eq!(v.find_all(".alarm .shelve").len(), 0);
    let status = v.script_async(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/alarms/' + arguments[0] + '/ack', { method: 'POST',
           headers: { 'Authorization': 'Bearer ' + sessionStorage.getItem('gw_token'),
                      'Content-Type': 'application/json' },
           body: JSON.stringify({ comment: 'forged' }) }).then(r => done(r.status));",
        json!([alarm_id]),
    );
    assert_eq!(
        status,
        json!(403),
        "a viewer's forged acknowledgement is refused"
    );

    // Phone width: readable, nothing wider than the screen.
    let phone = Browser::start((390, 844));
    login(&phone, &base, &viewer);
    let fits = phone.script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1",
        json!([]),
    );
    assert_eq!(fits, json!(true), "page overflows a phone screen");
    phone.screenshot(&screenshot_dir().join("overview-phone.png"));
    assert!(daemon.terminate().success());
}
