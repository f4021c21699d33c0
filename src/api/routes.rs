//! The route table: the one list the router is built from and the OpenAPI document is
//! generated from. Adding a route = adding a row (the alarm engine's routes included).

use axum::Json;
use axum::routing::{MethodRouter, get, patch, post};
use serde_json::{Value, json};

use super::auth::{Access, Role};
use super::{AppState, handlers as h};

/// A parameter of a route, for the OpenAPI document.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Name.
    pub name: &'static str,
    /// `path` or `query`.
    pub location: &'static str,
    /// What it means.
    pub doc: &'static str,
}

/// Everything about a route except its handler.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// `GET`, `POST`, `PATCH`.
    pub method: &'static str,
    /// axum path (`/api/v1/alarms/{id}/ack`), also the OpenAPI path.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// Parameters.
    pub params: &'static [Param],
    /// Name of the request body schema in `components.schemas`, if it takes one.
    pub body: Option<&'static str>,
    /// Whether it changes state (and so writes exactly one `change` audit record).
    pub changes_state: bool,
}

/// A route: its spec and its handler.
pub struct RouteRow {
    /// The spec.
    pub spec: RouteSpec,
    /// The handler for `spec.method`.
    pub handler: MethodRouter<AppState>,
}

const ID: Param = Param {
    name: "id",
    location: "path",
    doc: "Numeric id",
};
const DEV_ID: Param = Param {
    name: "id",
    location: "path",
    doc: "Device id",
};
const NAME: Param = Param {
    name: "name",
    location: "path",
    doc: "User name",
};
const LIMIT: Param = Param {
    name: "limit",
    location: "query",
    doc: "Page size, 1-1000 (default 100)",
};
const CURSOR: Param = Param {
    name: "cursor",
    location: "query",
    doc: "next_cursor of the previous page",
};
const DEVICE: Param = Param {
    name: "device",
    location: "query",
    doc: "Only this device",
};
const SINCE: Param = Param {
    name: "since",
    location: "query",
    doc: "RFC 3339 time, or a duration ago (\"7d\")",
};
const UNTIL: Param = Param {
    name: "until",
    location: "query",
    doc: "RFC 3339 time, or a duration ago",
};

fn spec(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
    params: &'static [Param],
    body: Option<&'static str>,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
        summary,
        params,
        body,
        changes_state: method != "GET",
    }
}

fn row(spec: RouteSpec, handler: MethodRouter<AppState>) -> RouteRow {
    RouteRow { spec, handler }
}

/// Every route of the API.
pub fn table() -> Vec<RouteRow> {
    use Access::{Open, Role as R};
    use Role::*;
    vec![
        row(
            spec("GET", "/healthz", Open, "Liveness", &[], None),
            get(super::healthz),
        ),
        row(
            spec(
                "GET",
                "/readyz",
                R(Viewer),
                "Readiness: sources, event store, spool depth",
                &[],
                None,
            ),
            get(h::readyz),
        ),
        row(
            spec(
                "GET",
                "/metrics",
                R(Viewer),
                "Prometheus metrics",
                &[],
                None,
            ),
            get(super::metrics),
        ),
        row(
            spec(
                "GET",
                "/api/v1/openapi.json",
                R(Viewer),
                "This document",
                &[],
                None,
            ),
            get(openapi_json),
        ),
        row(
            spec(
                "GET",
                "/api/v1/devices",
                R(Viewer),
                "Devices with status and latest values",
                &[],
                None,
            ),
            get(super::list_devices),
        ),
        row(
            spec(
                "GET",
                "/api/v1/devices/{id}",
                R(Viewer),
                "One device with latest values and open alarms",
                &[DEV_ID],
                None,
            ),
            get(super::get_device),
        ),
        row(
            spec(
                "GET",
                "/api/v1/whoami",
                R(Viewer),
                "The caller's name and role",
                &[],
                None,
            ),
            get(h::whoami),
        ),
        row(
            spec(
                "GET",
                "/api/v1/devices/{id}/history",
                R(Viewer),
                "The last hour of a device's key quantities, downsampled, for charts",
                &[DEV_ID],
                None,
            ),
            get(super::device_history),
        ),
        row(
            spec(
                "GET",
                "/api/v1/alarms",
                R(Viewer),
                "Open alarms (active=true, default) or history",
                &[
                    Param {
                        name: "active",
                        location: "query",
                        doc: "true (default): open alarms; false: all",
                    },
                    DEVICE,
                    SINCE,
                    UNTIL,
                    LIMIT,
                ],
                None,
            ),
            get(h::list_alarms),
        ),
        row(
            spec(
                "GET",
                "/api/v1/alarms/{id}",
                R(Viewer),
                "One alarm",
                &[ID],
                None,
            ),
            get(h::get_alarm),
        ),
        row(
            spec(
                "POST",
                "/api/v1/alarms/{id}/ack",
                R(Operator),
                "Acknowledge an alarm with a comment",
                &[ID],
                Some("AckRequest"),
            ),
            post(h::ack_alarm),
        ),
        row(
            spec(
                "POST",
                "/api/v1/alarms/{id}/shelve",
                R(Operator),
                "Shelve an alarm until a time, with a comment",
                &[ID],
                Some("ShelveRequest"),
            ),
            post(h::shelve_alarm),
        ),
        row(
            spec(
                "GET",
                "/api/v1/events",
                R(Viewer),
                "Events, newest first; format=csv needs engineer",
                &[
                    DEVICE,
                    Param {
                        name: "site",
                        location: "query",
                        doc: "Only devices of this site",
                    },
                    Param {
                        name: "feeder",
                        location: "query",
                        doc: "Only devices on this feeder",
                    },
                    Param {
                        name: "kind",
                        location: "query",
                        doc: "Comma-separated event kinds",
                    },
                    SINCE,
                    UNTIL,
                    CURSOR,
                    LIMIT,
                    Param {
                        name: "format",
                        location: "query",
                        doc: "json (default) or csv (engineer)",
                    },
                ],
                None,
            ),
            get(h::list_events),
        ),
        row(
            spec(
                "GET",
                "/api/v1/outages",
                R(Viewer),
                "Located outages (affected meters, customers, since) and recently restored ones",
                &[],
                None,
            ),
            get(h::outages),
        ),
        row(
            spec(
                "GET",
                "/api/v1/kpi",
                R(Viewer),
                "Voltage/frequency compliance, SAIFI/SAIDI/CAIDI/MAIFI/RS-1, transformer loading",
                &[
                    Param {
                        name: "scope",
                        location: "query",
                        doc: "device, transformer, feeder (id F07 or site/F07), site or network (default)",
                    },
                    Param {
                        name: "id",
                        location: "query",
                        doc: "Id of the device, transformer, feeder or site",
                    },
                    Param {
                        name: "from",
                        location: "query",
                        doc: "Period start: date (2026-11-01), RFC 3339 time or duration ago; default today 00:00 UTC",
                    },
                    Param {
                        name: "to",
                        location: "query",
                        doc: "Period end (exclusive), same forms; default now",
                    },
                ],
                None,
            ),
            get(h::kpi),
        ),
        row(
            spec(
                "GET",
                "/api/v1/maintenance",
                R(Viewer),
                "Maintenance records, newest first",
                &[DEVICE, CURSOR, LIMIT],
                None,
            ),
            get(h::list_maintenance),
        ),
        row(
            spec(
                "POST",
                "/api/v1/maintenance",
                R(Crew),
                "Create a maintenance record",
                &[],
                Some("NewMaintenance"),
            ),
            post(h::add_maintenance),
        ),
        row(
            spec(
                "GET",
                "/api/v1/maintenance/{id}",
                R(Viewer),
                "One maintenance record",
                &[ID],
                None,
            ),
            get(h::get_maintenance),
        ),
        row(
            spec(
                "PATCH",
                "/api/v1/maintenance/{id}",
                R(Crew),
                "Update a maintenance record (crew: their own)",
                &[ID],
                Some("MaintenanceUpdate"),
            ),
            patch(h::update_maintenance),
        ),
        row(
            spec(
                "POST",
                "/api/v1/maintenance/{id}/close",
                R(Crew),
                "Close a maintenance record (crew: their own)",
                &[ID],
                Some("MaintenanceUpdate"),
            ),
            post(h::close_maintenance),
        ),
        row(
            spec(
                "GET",
                "/api/v1/work-orders",
                R(Viewer),
                "Work orders, newest first",
                &[
                    DEVICE,
                    Param {
                        name: "assignee",
                        location: "query",
                        doc: "Only orders assigned to this user",
                    },
                    Param {
                        name: "open",
                        location: "query",
                        doc: "true: leave closed orders out",
                    },
                    LIMIT,
                ],
                None,
            ),
            get(h::list_work_orders),
        ),
        row(
            spec(
                "POST",
                "/api/v1/work-orders",
                R(Engineer),
                "Create a work order",
                &[],
                Some("NewWorkOrder"),
            ),
            post(h::add_work_order),
        ),
        row(
            spec(
                "GET",
                "/api/v1/work-orders/{id}",
                R(Viewer),
                "One work order",
                &[ID],
                None,
            ),
            get(h::get_work_order),
        ),
        row(
            spec(
                "PATCH",
                "/api/v1/work-orders/{id}",
                R(Crew),
                "Assign, start or edit a work order (crew: assigned to them)",
                &[ID],
                Some("WorkOrderUpdate"),
            ),
            patch(h::update_work_order),
        ),
        row(
            spec(
                "POST",
                "/api/v1/work-orders/{id}/close",
                R(Crew),
                "Close a work order (crew: assigned to them)",
                &[ID],
                Some("WorkOrderUpdate"),
            ),
            post(h::close_work_order),
        ),
        row(
            spec(
                "GET",
                "/api/v1/stream",
                R(Viewer),
                "Server-Sent Events: alarm and device status changes, readings of chosen devices",
                &[Param {
                    name: "readings",
                    location: "query",
                    doc: "Comma-separated device ids to stream readings of",
                }],
                None,
            ),
            get(h::stream),
        ),
        row(
            spec("GET", "/api/v1/users", R(Admin), "Users", &[], None),
            get(h::list_users),
        ),
        row(
            spec(
                "POST",
                "/api/v1/users",
                R(Admin),
                "Create a user; the answer holds its token, shown once",
                &[],
                Some("NewUser"),
            ),
            post(h::add_user),
        ),
        row(
            spec(
                "POST",
                "/api/v1/users/{name}/disable",
                R(Admin),
                "Disable a user",
                &[NAME],
                None,
            ),
            post(h::disable_user),
        ),
        row(
            spec(
                "GET",
                "/api/v1/audit",
                R(Admin),
                "Audit and security records, newest first (read-only)",
                &[
                    Param {
                        name: "category",
                        location: "query",
                        doc: "change or security",
                    },
                    LIMIT,
                ],
                None,
            ),
            get(h::list_audit),
        ),
    ]
}

/// Specs of every route, in table order.
pub fn specs() -> Vec<RouteSpec> {
    table().into_iter().map(|r| r.spec).collect()
}

async fn openapi_json() -> Json<Value> {
    Json(openapi())
}

fn schemas() -> Value {
    let s = |props: Value, required: &[&str]| json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false });
    let string = json!({ "type": "string" });
    json!({
        "AckRequest": s(json!({ "comment": string }), &[]),
        "ShelveRequest": s(json!({
            "comment": string,
            "until": { "type": "string", "format": "date-time" },
            "for": { "type": "string", "description": "duration, e.g. \"2h\"" }
        }), &[]),
        "NewMaintenance": s(json!({
            "device": string,
            "kind": { "type": "string", "enum": ["inspection", "repair", "replacement", "oil_sample", "test"] },
            "crew": string, "findings": string, "notes": string,
            "parts": { "type": "array", "items": string },
            "work_order_id": { "type": "integer" },
            "performed_at": { "type": "integer", "description": "ns since epoch" }
        }), &["device", "kind"]),
        "MaintenanceUpdate": s(json!({
            "crew": string, "findings": string, "notes": string,
            "parts": { "type": "array", "items": string }
        }), &[]),
        "NewWorkOrder": s(json!({
            "device": string, "title": string, "description": string,
            "alarm_id": { "type": "integer" }, "assignee": string
        }), &["device", "title"]),
        "WorkOrderUpdate": s(json!({
            "state": { "type": "string", "enum": ["assigned", "in_progress", "closed"] },
            "assignee": string, "description": string, "resolution": string
        }), &[]),
        "NewUser": s(json!({
            "name": string,
            "role": { "type": "string", "enum": ["viewer", "operator", "crew", "engineer", "admin"] }
        }), &["name", "role"]),
        "Error": s(json!({ "error": string }), &["error"]),
    })
}

/// The OpenAPI 3.1 document of [`table`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for spec in specs() {
        let mut responses = serde_json::Map::new();
        responses.insert("200".into(), json!({ "description": "OK" }));
        let err = json!({ "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
        let mut add = |code: &str, desc: &str| {
            let mut e = err.clone();
            e["description"] = json!(desc);
            responses.insert(code.into(), e);
        };
        add("400", "Bad request");
        if let Access::Role(_) = spec.access {
            add("401", "Missing or invalid credentials");
            add("403", "Role does not allow this");
            add("429", "Locked out after failed authentications");
        }
        if spec.changes_state {
            add("409", "Conflicts with the current state");
            add("503", "Audit trail unavailable: change refused");
        }
        if spec.path.contains('{') {
            add("404", "Not found");
        }
        let mut op = json!({
            "summary": spec.summary,
            "operationId": format!("{} {}", spec.method, spec.path),
            "parameters": spec.params.iter().map(|p| json!({
                "name": p.name, "in": p.location, "required": p.location == "path",
                "description": p.doc, "schema": { "type": "string" }
            })).collect::<Vec<_>>(),
            "responses": responses,
        });
        match spec.access {
            Access::Open => op["security"] = json!([]),
            Access::Role(r) => op["x-gridwatch-role"] = json!(r.as_str()),
        }
        if let Some(body) = spec.body {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{body}") } } }
            });
        }
        let entry = paths
            .entry(spec.path.to_string())
            .or_insert_with(|| json!({}));
        entry[spec.method.to_ascii_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "gridwatch API", "version": env!("CARGO_PKG_VERSION") },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "basic": { "type": "http", "scheme": "basic", "description": "user name and token" }
            },
            "schemas": schemas(),
        }
    })
}
