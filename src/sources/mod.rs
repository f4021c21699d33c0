//! Inputs: each source turns a protocol into [`crate::model::Reading`]s.
//!
//! Sources with a connection of their own (MQTT) report it in [`SourceHealth`], which
//! `/healthz` and `/readyz` show.

pub mod modbus;
pub mod mqtt;

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::Serialize;

use crate::model::Timestamp;

/// Connection state of one source, as `/healthz` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceState {
    /// Whether the source is connected and receiving.
    pub connected: bool,
    /// Why it is not, while it is not.
    pub error: Option<String>,
    /// When `connected` last changed (ns since epoch).
    pub since: Timestamp,
}

/// Connection state of every source with a connection, by source name (`mqtt`).
#[derive(Debug, Default)]
pub struct SourceHealth {
    sources: RwLock<BTreeMap<String, SourceState>>,
}

impl SourceHealth {
    /// Records the state of `source` (`since` moves only when `connected` changes).
    pub fn set(&self, source: &str, connected: bool, error: Option<String>, now: Timestamp) {
        let mut map = self.sources.write().unwrap_or_else(|e| e.into_inner());
        let since = match map.get(source) {
            Some(s) if s.connected == connected => s.since,
            _ => now,
        };
        map.insert(
            source.to_string(),
            SourceState {
                connected,
                error,
                since,
            },
        );
    }

    /// A copy of every source's state.
    pub fn snapshot(&self) -> BTreeMap<String, SourceState> {
        self.sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether every registered source is connected.
    pub fn all_connected(&self) -> bool {
        let map = self.sources.read().unwrap_or_else(|e| e.into_inner());
        map.values().all(|s| s.connected)
    }
}
