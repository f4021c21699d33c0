//! The control-room page in a real headless Chromium (Debian `chromium` + `chromedriver`),
//! against the real daemon polling the in-process simulator. Screenshots are kept under
//! `target/tmp/screenshots/` as artifacts.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::sim::{Sim, fleet_config};
use common::webdriver::Browser;
use common::*;

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

struct Setup {
    sim: Sim,
    _daemon: Daemon,
    base: String,
    tag: String,
    _data: tempfile::TempDir,
}

fn start(extra: &str) -> Setup {
    let sim = Sim::start(2, 4);
    let tag = unique("ui");
    let data = tempfile::tempdir().unwrap();
    let config = fleet_config(&sim, &tag, "500ms", "", data.path().to_str().unwrap())
        + "\n[history]\nresolution = \"500ms\"\n"
        + extra;
    let port: u16 = config
        .lines()
        .find(|l| l.starts_with("http_listen"))
        .and_then(|l| l.rsplit(':').next())
        .map(|p| p.trim_end_matches('"').parse().unwrap())
        .unwrap();
    let dir = Daemon::temp_dir();
    let path = dir.path().join("gridwatch.toml");
    std::fs::write(&path, &config).unwrap();
    let mut daemon = Daemon::spawn_in(dir, &["run", "--config", path.to_str().unwrap()], &[]);
    daemon.wait_for_log("gridwatch running", Duration::from_secs(20));
    Setup {
        sim,
        _daemon: daemon,
        base: format!("http://127.0.0.1:{port}"),
        tag,
        _data: data,
    }
}

#[test]
fn page_shows_the_fleet_and_a_device_with_live_charts() {
    let s = start("");
    let b = Browser::start((1920, 1080));
    b.goto(&format!("{}/", s.base));
    b.wait_count(".tile", Duration::from_secs(20), |n| n == 6);
    b.wait_count(".tile[data-status=online]", Duration::from_secs(20), |n| {
        n == 6
    });
    let total = b.wait_for("#count-total", Duration::from_secs(5));
    assert!(b.text(&total).starts_with("6"), "{}", b.text(&total));
    let sites = b.find_all(".site h2");
    assert_eq!(b.text(&sites[0]), "Substation 7");
    // Meters are drawn beside their transformer: TX-0001 has units 3 and 5 under it.
    let tx_row = b.script(
        "return [...document.querySelectorAll('.tx')].map(r => [...r.querySelectorAll('.tile')].map(t => t.dataset.device))",
        serde_json::json!([]),
    );
    let rows: Vec<Vec<String>> = serde_json::from_value(tx_row).unwrap();
    let tx1 = rows.iter().find(|r| r[0].ends_with("TX-0001")).unwrap();
    assert_eq!(tx1.len(), 3, "{rows:?}");
    b.screenshot(&screenshot_dir().join("overview.png"));

    // Search narrows the view.
    let search = b.wait_for("#search", Duration::from_secs(2));
    b.type_text(&search, "MT-0004");
    b.wait_count(".tile", Duration::from_secs(5), |n| n == 2);

    // A device page: latest values with units, charts of the last hour.
    let tx = format!("{}-TX-0001", s.tag);
    b.goto(&format!("{}/#/device/{tx}", s.base));
    let title = b.wait_for("#device-title", Duration::from_secs(10));
    assert!(b.text(&title).contains(&tx));
    let oil = b.wait_for("[data-field=oil_temp] .v", Duration::from_secs(10));
    assert!(b.text(&oil).ends_with("°C"), "{}", b.text(&oil));
    std::thread::sleep(Duration::from_secs(3));
    b.goto(&format!("{}/#/device/{tx}", s.base));
    b.wait_count(".chart", Duration::from_secs(10), |n| n >= 4);
    b.screenshot(&screenshot_dir().join("device.png"));

    // Phone width: nothing wider than the screen.
    let phone = Browser::start((390, 844));
    phone.goto(&format!("{}/", s.base));
    phone.wait_count(".tile", Duration::from_secs(20), |n| n == 6);
    let fits = phone.script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1",
        serde_json::json!([]),
    );
    assert_eq!(
        fits,
        serde_json::json!(true),
        "page overflows a phone screen"
    );
    phone.screenshot(&screenshot_dir().join("overview-phone.png"));
    drop(s.sim);
}
