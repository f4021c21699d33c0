//! The HTTP API in process: the role matrix over every route, one audit record per change
//! and one security event per authentication attempt, hostile filters, and the OpenAPI
//! document against the router.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use gridwatch::api::auth::{Access, Auth, Role};
use gridwatch::api::{AppState, router, routes};
use gridwatch::config::{ApiConfig, EventLogConfig};
use gridwatch::eventlog::{AlarmStore, AuditContext, EventLog, NewMaintenance, NewWorkOrder};
use gridwatch::model::DeviceInfo;
use serde_json::{Value, json};

struct Api {
    base: String,
    log: Arc<EventLog>,
    tokens: Vec<(Role, String)>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn device(id: &str) -> Arc<DeviceInfo> {
    Arc::new(
        DeviceInfo {
            id: id.into(),
            kind: "transformer".into(),
            site: "Substation 7".into(),
            feeder: "F07".into(),
            parent: None,
            location: None,
            rated_kva: Some(630.0),
            nominal_voltage: None,
            customers: 1,
            interval_ns: 1_000_000_000,
            lp_series: String::new(),
            slot: gridwatch::model::Slot::NONE,
        }
        .finish(),
    )
}

async fn start(api: ApiConfig) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let devices = vec![device("TX-0701"), device("TX-0702")];
    let metrics = gridwatch::metrics::Registry::new();
    let hub = gridwatch::hub::Hub::new();
    let log = EventLog::open(
        dir.path(),
        &EventLogConfig::default(),
        &devices,
        hub.clone(),
        &metrics,
    )
    .unwrap();
    let boot = AuditContext {
        actor: "setup".into(),
        address: "local".into(),
    };
    let tokens = Role::ALL
        .iter()
        .map(|r| (*r, log.add_user(&boot, r.as_str(), *r).unwrap().token))
        .collect();
    // One device answers, so /readyz is ready.
    let status = gridwatch::status::StatusBoard::new(&devices, 0);
    status.success(&devices[0], 1, true);
    let state = AppState {
        status,
        devices: gridwatch::registry::DeviceRegistry::new(&devices),
        sources: Arc::new(gridwatch::sources::SourceHealth::default()),
        alarms: None,
        history: gridwatch::history::History::new(),
        auth: Arc::new(Auth::new(&api, &metrics)),
        metrics,
        eventlog: Arc::clone(&log),
        hub,
        sink: None,
        kpi: Some(
            gridwatch::kpi::KpiService::new(
                gridwatch::kpi::KpiEngine::new(
                    &Default::default(),
                    &Default::default(),
                    gridwatch::topology::Topology::default(),
                ),
                Arc::clone(&log),
                &Default::default(),
                0,
            )
            .unwrap(),
        ),
        outages: Some(Default::default()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Api {
        base: format!("http://{addr}"),
        log,
        tokens,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

fn lenient() -> ApiConfig {
    ApiConfig {
        max_failures: 1_000_000,
        ..ApiConfig::default()
    }
}

/// The expected least role of every route, written independently of the route table.
const EXPECTED: &[(&str, &str, Option<Role>)] = &[
    ("GET", "/healthz", None),
    ("GET", "/readyz", Some(Role::Viewer)),
    ("GET", "/metrics", Some(Role::Viewer)),
    ("GET", "/api/v1/openapi.json", Some(Role::Viewer)),
    ("GET", "/api/v1/devices", Some(Role::Viewer)),
    ("GET", "/api/v1/whoami", Some(Role::Viewer)),
    ("GET", "/api/v1/devices/{id}", Some(Role::Viewer)),
    ("GET", "/api/v1/devices/{id}/history", Some(Role::Viewer)),
    ("GET", "/api/v1/alarms", Some(Role::Viewer)),
    ("GET", "/api/v1/alarms/{id}", Some(Role::Viewer)),
    ("POST", "/api/v1/alarms/{id}/ack", Some(Role::Operator)),
    ("POST", "/api/v1/alarms/{id}/shelve", Some(Role::Operator)),
    ("GET", "/api/v1/events", Some(Role::Viewer)),
    ("GET", "/api/v1/outages", Some(Role::Viewer)),
    ("GET", "/api/v1/kpi", Some(Role::Viewer)),
    ("GET", "/api/v1/maintenance", Some(Role::Viewer)),
    ("POST", "/api/v1/maintenance", Some(Role::Crew)),
    ("GET", "/api/v1/maintenance/{id}", Some(Role::Viewer)),
    ("PATCH", "/api/v1/maintenance/{id}", Some(Role::Crew)),
    ("POST", "/api/v1/maintenance/{id}/close", Some(Role::Crew)),
    ("GET", "/api/v1/work-orders", Some(Role::Viewer)),
    ("POST", "/api/v1/work-orders", Some(Role::Engineer)),
    ("GET", "/api/v1/work-orders/{id}", Some(Role::Viewer)),
    ("PATCH", "/api/v1/work-orders/{id}", Some(Role::Crew)),
    ("POST", "/api/v1/work-orders/{id}/close", Some(Role::Crew)),
    ("GET", "/api/v1/stream", Some(Role::Viewer)),
    ("GET", "/api/v1/users", Some(Role::Admin)),
    ("POST", "/api/v1/users", Some(Role::Admin)),
    ("POST", "/api/v1/users/{name}/disable", Some(Role::Admin)),
    ("GET", "/api/v1/audit", Some(Role::Admin)),
];

#[test]
fn route_table_matches_the_expected_roles() {
    let table: BTreeSet<(String, String, Option<Role>)> = routes::specs()
        .iter()
        .map(|s| {
            let role = match s.access {
                Access::Open => None,
                Access::Role(r) => Some(r),
            };
            (s.method.to_string(), s.path.to_string(), role)
        })
        .collect();
    let expected: BTreeSet<(String, String, Option<Role>)> = EXPECTED
        .iter()
        .map(|(m, p, r)| (m.to_string(), p.to_string(), *r))
        .collect();
    assert_eq!(table, expected);
}

/// A concrete request for a route, with fresh fixtures so every allowed call can succeed.
fn request(api: &Api, method: &str, path: &str) -> (String, String, Option<Value>) {
    let boot = AuditContext {
        actor: "engineer".into(),
        address: "local".into(),
    };
    let unique = format!("{}", gridwatch::model::now_ns());
    let mut p = path.to_string();
    let mut body = None;
    if p.contains("/alarms/{id}") {
        let a = api
            .log
            .raise_alarm(
                "TX-0701",
                &format!("rule-{unique}"),
                "major",
                "m",
                json!({}),
            )
            .unwrap();
        p = p.replace("{id}", &a.id.to_string());
        body = Some(if p.ends_with("/shelve") {
            json!({ "comment": "c", "for": "1h" })
        } else {
            json!({ "comment": "c" })
        });
    } else if p.contains("/maintenance/{id}") {
        let crew = AuditContext {
            actor: "crew".into(),
            address: "local".into(),
        };
        let m = api
            .log
            .add_maintenance(
                &crew,
                &serde_json::from_value::<NewMaintenance>(
                    json!({ "device": "TX-0701", "kind": "inspection" }),
                )
                .unwrap(),
            )
            .unwrap();
        p = p.replace("{id}", &m.id.to_string());
        body = Some(json!({ "notes": "n" }));
    } else if p.contains("/work-orders/{id}") {
        let w = api
            .log
            .add_work_order(
                &boot,
                &serde_json::from_value::<NewWorkOrder>(
                    json!({ "device": "TX-0701", "title": "t", "assignee": "crew" }),
                )
                .unwrap(),
            )
            .unwrap();
        p = p.replace("{id}", &w.id.to_string());
        body = Some(if method == "PATCH" {
            json!({ "state": "in_progress" })
        } else {
            json!({ "resolution": "done" })
        });
    } else if p.contains("{name}") {
        let name = format!("u{unique}");
        api.log.add_user(&boot, &name, Role::Viewer).unwrap();
        p = p.replace("{name}", &name);
    } else if p.contains("/devices/{id}") {
        p = p.replace("{id}", "TX-0701");
    } else if method == "POST" && p == "/api/v1/maintenance" {
        body = Some(json!({ "device": "TX-0701", "kind": "oil_sample", "notes": "ok" }));
    } else if method == "POST" && p == "/api/v1/work-orders" {
        body = Some(json!({ "device": "TX-0702", "title": "replace bushing" }));
    } else if method == "POST" && p == "/api/v1/users" {
        body = Some(json!({ "name": format!("n{unique}"), "role": "viewer" }));
    }
    (method.to_string(), p, body)
}

async fn call(
    api: &Api,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> u16 {
    let url = format!("{}{path}", api.base);
    let mut req = match method {
        "GET" => api.http.get(&url),
        "POST" => api.http.post(&url),
        "PATCH" => api.http.patch(&url),
        m => panic!("method {m}"),
    };
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

fn counts(log: &EventLog) -> (usize, usize) {
    let all = log.audit_records(None, 1_000_000).unwrap();
    let change = all.iter().filter(|r| r.category == "change").count();
    (change, all.len() - change)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_every_route_every_role_with_audit() {
    let api = start(lenient()).await;
    let mut cases: Vec<(&str, String, Option<Role>, bool)> = EXPECTED
        .iter()
        .map(|(m, p, r)| (*m, p.to_string(), *r, *m != "GET"))
        .collect();
    cases.push((
        "GET",
        "/api/v1/events?format=csv".into(),
        Some(Role::Engineer),
        false,
    ));
    let mut failures = Vec::new();
    for (method, path, need, changes) in &cases {
        let mut callers: Vec<(String, Option<String>, Option<Role>)> = vec![
            ("no token".into(), None, None),
            (
                "bad token".into(),
                Some("gw_0123456789ab_nope".into()),
                None,
            ),
        ];
        for (r, t) in &api.tokens {
            callers.push((r.as_str().into(), Some(t.clone()), Some(*r)));
        }
        for (who, token, role) in callers {
            let (m, p, body) = request(&api, method, path);
            let before = counts(&api.log);
            let got = call(&api, &m, &p, body.as_ref(), token.as_deref()).await;
            let after = counts(&api.log);
            let expected = match (need, role) {
                (None, _) => 200,
                (Some(_), None) => 401,
                (Some(n), Some(r)) if r < *n => 403,
                _ => {
                    if *changes
                        && (m == "POST")
                        && (p.ends_with("/maintenance")
                            || p.ends_with("/work-orders")
                            || p.ends_with("/users"))
                    {
                        201
                    } else {
                        200
                    }
                }
            };
            if got != expected {
                failures.push(format!("{m} {p} as {who}: got {got}, expected {expected}"));
                continue;
            }
            // One security event per authentication attempt (none for the open route).
            let sec = if need.is_some() { 1 } else { 0 };
            if after.1 - before.1 != sec {
                failures.push(format!(
                    "{m} {p} as {who}: {} security events",
                    after.1 - before.1
                ));
            }
            // One change record per successful state-changing request, none otherwise.
            let chg = usize::from(*changes && (200..300).contains(&got));
            if after.0 - before.0 != chg {
                failures.push(format!(
                    "{m} {p} as {who}: {} change records",
                    after.0 - before.0
                ));
            }
            if chg == 1 {
                let rec = &api.log.audit_records(Some("change"), 1).unwrap()[0];
                if rec.actor != who {
                    failures.push(format!("{m} {p}: audit actor {} for {who}", rec.actor));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_audit_record_has_actor_address_and_diff() {
    let api = start(lenient()).await;
    let a = api
        .log
        .raise_alarm("TX-0701", "oil", "major", "hot", json!({}))
        .unwrap();
    let op = &api.tokens[1].1;
    let got = call(
        &api,
        "POST",
        &format!("/api/v1/alarms/{}/ack", a.id),
        Some(&json!({ "comment": "on it" })),
        Some(op),
    )
    .await;
    assert_eq!(got, 200);
    let rec = &api.log.audit_records(Some("change"), 1).unwrap()[0];
    assert_eq!(
        (rec.actor.as_str(), rec.action.as_str()),
        ("operator", "alarm.ack")
    );
    assert!(rec.address.starts_with("127.0.0.1:"), "{}", rec.address);
    assert_eq!(rec.before.as_ref().unwrap()["state"], "active");
    assert_eq!(rec.after.as_ref().unwrap()["state"], "acknowledged");
    assert_eq!(rec.after.as_ref().unwrap()["ack_comment"], "on it");
    let sec = api.log.audit_records(Some("security"), 1).unwrap();
    assert_eq!(
        (sec[0].actor.as_str(), sec[0].outcome.as_str()),
        ("operator", "ok")
    );
    // A bad token is recorded with the presented token id.
    call(
        &api,
        "GET",
        "/api/v1/alarms",
        None,
        Some("gw_abcdefabcdef_wrong"),
    )
    .await;
    let sec = api.log.audit_records(Some("security"), 1).unwrap();
    assert_eq!(
        (sec[0].actor.as_str(), sec[0].outcome.as_str()),
        ("token:abcdefabcdef", "invalid_credentials")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_the_address_out() {
    let api = start(ApiConfig {
        max_failures: 3,
        ..ApiConfig::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            call(&api, "GET", "/api/v1/alarms", None, Some("wrong")).await,
            401
        );
    }
    // Even the right token is refused during the lockout.
    let viewer = api.tokens[0].1.clone();
    assert_eq!(
        call(&api, "GET", "/api/v1/alarms", None, Some(&viewer)).await,
        429
    );
    let sec = api.log.audit_records(Some("security"), 1).unwrap();
    assert_eq!(sec[0].outcome, "locked_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_filters_get_400_or_correct_results_never_500() {
    let api = start(lenient()).await;
    let admin = api.tokens[4].1.clone();
    let boot = AuditContext {
        actor: "x".into(),
        address: "local".into(),
    };
    api.log
        .add_maintenance(
            &boot,
            &serde_json::from_value(json!({ "device": "TX-0701", "kind": "test" })).unwrap(),
        )
        .unwrap();
    let hostile = [
        "device=TX-0701'%20OR%201=1%20--",
        "device=%25",
        "device=%22%3B%20DROP%20TABLE%20events%3B%20--",
        "site=' OR ''='",
        "feeder=%00",
        "kind=maintenance'%20OR%20'1'='1",
        "kind=,,,",
        "limit=99999999999999999999999",
        "limit=0",
        "limit=-1",
        "limit=1e9",
        "since=yesterday",
        "since=2024-13-45T00:00:00Z",
        "since=99999999999d",
        "until=9999-12-31T23:59:59Z",
        "cursor=abc",
        "cursor=-5",
        "format=xml",
        "unknown=1",
        "device=",
    ];
    for q in hostile {
        for path in [
            "/api/v1/events",
            "/api/v1/alarms",
            "/api/v1/maintenance",
            "/api/v1/work-orders",
        ] {
            let url = format!("{}{path}?{q}", api.base);
            let resp = api.http.get(&url).bearer_auth(&admin).send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert!(
                status == 200 || status == 400,
                "{path}?{q}: {status} {text}"
            );
            if status == 400 {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert!(
                    v["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{path}?{q}: {text}"
                );
            }
            if status == 200 && q.starts_with("device=TX-0701'") {
                let v: Value = serde_json::from_str(&text).unwrap();
                let n = v
                    .get("items")
                    .and_then(Value::as_array)
                    .or(v.as_array())
                    .map(Vec::len);
                assert_eq!(n, Some(0), "{path}?{q}: injection returned rows: {text}");
            }
        }
    }
    // The tables are all still there.
    assert_eq!(
        call(
            &api,
            "GET",
            "/api/v1/events?device=TX-0701",
            None,
            Some(&admin)
        )
        .await,
        200
    );
    assert_eq!(
        api.log
            .list_maintenance(None, None, 10)
            .unwrap()
            .items
            .len(),
        1
    );
    // Bad bodies and ids are 400, not 500.
    for (m, p, b) in [
        ("POST", "/api/v1/alarms/abc/ack", json!({})),
        (
            "POST",
            "/api/v1/alarms/1/shelve",
            json!({ "for": "forever" }),
        ),
        (
            "POST",
            "/api/v1/maintenance",
            json!({ "device": "TX-0701", "kind": "dance" }),
        ),
        (
            "POST",
            "/api/v1/maintenance",
            json!({ "device": "NOPE", "kind": "test" }),
        ),
        (
            "PATCH",
            "/api/v1/work-orders/1",
            json!({ "state": "'; DROP" }),
        ),
        (
            "POST",
            "/api/v1/users",
            json!({ "name": "a b'", "role": "viewer" }),
        ),
    ] {
        let got = call(&api, m, p, Some(&b), Some(&admin)).await;
        assert_eq!(got, 400, "{m} {p} {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_router() {
    let api = start(lenient()).await;
    let admin = api.tokens[4].1.clone();
    let resp = api
        .http
        .get(format!("{}/api/v1/openapi.json", api.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let doc: Value = resp.json().await.unwrap();
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let expected: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, expected,
        "OpenAPI paths differ from the expected routes"
    );
    // Every documented operation is served (not 404/405), and undocumented methods are not.
    for (m, p) in &documented {
        let (m2, concrete, body) = request(&api, m, p);
        let got = call(&api, &m2, &concrete, body.as_ref(), Some(&admin)).await;
        assert!(got != 404 && got != 405, "{m} {p}: {got}");
        if m == "GET" {
            let other = call(&api, "PATCH", &concrete, Some(&json!({})), Some(&admin)).await;
            let documented_patch = documented.contains(&("PATCH".to_string(), p.clone()));
            if !documented_patch {
                assert_eq!(other, 405, "PATCH {p} is served but not documented");
            }
        }
    }
    assert_eq!(
        call(&api, "GET", "/api/v1/nothing", None, Some(&admin)).await,
        404
    );
}
