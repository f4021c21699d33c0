//! The latest reading of every device, for the API and the web page.
//!
//! Fed by the pipeline as a lossy consumer: if the API side ever lags, it misses a refresh,
//! never a stored point.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::model::Reading;

/// Latest readings by device id.
#[derive(Debug, Default)]
pub struct History {
    latest: RwLock<HashMap<String, Arc<Reading>>>,
}

impl History {
    /// An empty history.
    pub fn new() -> Arc<Self> {
        Arc::new(History::default())
    }

    /// Stores `reading` if it is newer than what is known for its device.
    pub fn record(&self, reading: Arc<Reading>) {
        let mut map = self.latest.write().unwrap_or_else(|e| e.into_inner());
        // Replace in place: cloning the id for `insert` would allocate on every reading.
        match map.get_mut(&reading.device.id) {
            Some(old) if old.ts > reading.ts => {}
            Some(old) => *old = reading,
            None => {
                map.insert(reading.device.id.clone(), reading);
            }
        }
    }

    /// The latest reading of `device`.
    pub fn latest(&self, device: &str) -> Option<Arc<Reading>> {
        let map = self.latest.read().unwrap_or_else(|e| e.into_inner());
        map.get(device).cloned()
    }

    /// Consumes readings from the pipeline until it closes.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Arc<Reading>>) {
        while let Some(r) = rx.recv().await {
            self.record(r);
        }
    }
}
