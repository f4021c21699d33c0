//! The engineers' command line: `gridwatch events`, `alarms`, `maintenance`, talking to a
//! running daemon's API, and `gridwatch users`, which works on the database directly.
//!
//! Output: a readable table on a terminal; JSON (or CSV with `--csv`) when piped.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::api::auth::Role;
use crate::eventlog::{AuditContext, EventLog};

/// A client of one daemon.
pub struct Client {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client for `url` (no trailing slash needed) with an optional bearer token.
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Client> {
        Ok(Client {
            url: url.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            bail!("{status}: {msg}");
        }
        Ok(resp)
    }

    /// `GET path?query` as JSON.
    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let req = self.http.get(format!("{}{path}", self.url)).query(query);
        Ok(self.send(req).await?.json().await?)
    }

    /// `GET path?query` as text.
    pub async fn get_text(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<String> {
        let req = self.http.get(format!("{}{path}", self.url)).query(query);
        Ok(self.send(req).await?.text().await?)
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let req = self.http.post(format!("{}{path}", self.url)).json(body);
        Ok(self.send(req).await?.json().await?)
    }
}

/// How to print a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns (terminal).
    Table,
    /// JSON (piped).
    Json,
}

impl Output {
    /// Table on a terminal, JSON otherwise.
    pub fn detect() -> Output {
        if std::io::stdout().is_terminal() {
            Output::Table
        } else {
            Output::Json
        }
    }
}

/// Prints `rows` (JSON objects) as a table of `columns`, or as JSON.
pub fn print_rows(rows: &[Value], columns: &[&str], out: Output) {
    if out == Output::Json {
        println!("{}", Value::Array(rows.to_vec()));
        return;
    }
    let cell = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| cell(&r[*c]).replace('\n', " "))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count().min(60))
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        let parts: Vec<String> = vals
            .iter()
            .zip(&widths)
            .map(|(v, w)| {
                let v: String = v.chars().take(60).collect();
                format!("{v:<w$}")
            })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for r in cells {
        line(r);
    }
}

/// `gridwatch users add`: creates a user in the database of `data_dir` and returns the
/// token (printed once by the caller).
pub fn add_user(data_dir: &Path, name: &str, role: Role) -> anyhow::Result<String> {
    let log = open_db(data_dir)?;
    let who = local_actor();
    let created = log.add_user(&who, name, role)?;
    Ok(created.token)
}

/// `gridwatch users list`.
pub fn list_users(data_dir: &Path) -> anyhow::Result<Vec<Value>> {
    let log = open_db(data_dir)?;
    Ok(log
        .users()?
        .into_iter()
        .map(|u| serde_json::to_value(u).unwrap_or_default())
        .collect())
}

/// `gridwatch users disable`.
pub fn disable_user(data_dir: &Path, name: &str) -> anyhow::Result<()> {
    let log = open_db(data_dir)?;
    log.disable_user(&local_actor(), name)?;
    Ok(())
}

fn local_actor() -> AuditContext {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    AuditContext {
        actor: format!("cli:{user}"),
        address: "local".into(),
    }
}

fn open_db(data_dir: &Path) -> anyhow::Result<std::sync::Arc<EventLog>> {
    let metrics = crate::metrics::Registry::new();
    EventLog::open(
        data_dir,
        &crate::config::EventLogConfig::default(),
        &[],
        crate::hub::Hub::new(),
        &metrics,
    )
    .with_context(|| format!("cannot open the event database in {}", data_dir.display()))
}
