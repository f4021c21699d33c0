//! Where alarm state survives a restart: the SQLite event log in the daemon
//! ([`EventLogStore`]), a JSON file for tools without a database, nothing in replays.

use std::path::PathBuf;
use std::sync::Arc;

use crate::eventlog::{EventLog, EventLogError};

use super::Alarm;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid alarm JSON.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The event database failed.
    #[error("event database: {0}")]
    Database(#[from] EventLogError),
}

/// Persistence of the current alarm set (not the history: that is the event log's job).
pub trait AlarmStore: Send + Sync {
    /// Every alarm saved last time (empty when there is none yet).
    fn load(&self) -> Result<Vec<Alarm>, StoreError>;
    /// Replaces the saved set; returns after it is durable.
    fn save(&self, alarms: &[Alarm]) -> Result<(), StoreError>;
    /// Writes `changed` (new or updated, by id) and deletes the alarms whose ids are in
    /// `removed`, in one durable step; returns after it is durable.
    fn save_changes(&self, changed: &[Alarm], removed: &[u64]) -> Result<(), StoreError>;
}

/// Keeps nothing (replay, tests).
#[derive(Debug, Default)]
pub struct MemoryStore;

impl AlarmStore for MemoryStore {
    fn load(&self) -> Result<Vec<Alarm>, StoreError> {
        Ok(Vec::new())
    }
    fn save(&self, _: &[Alarm]) -> Result<(), StoreError> {
        Ok(())
    }
    fn save_changes(&self, _: &[Alarm], _: &[u64]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A JSON file, replaced atomically (write to a temp file, fsync, rename).
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (its directory is created on first save).
    pub fn new(path: PathBuf) -> Self {
        FileStore { path }
    }
}

impl AlarmStore for FileStore {
    fn load(&self) -> Result<Vec<Alarm>, StoreError> {
        let path = self.path.display().to_string();
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StoreError::Format { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    fn save(&self, alarms: &[Alarm]) -> Result<(), StoreError> {
        use std::io::Write as _;
        let io = |source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(alarms).map_err(|source| StoreError::Format {
            path: self.path.display().to_string(),
            source,
        })?;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    /// A file is rewritten whole: merges the changes into what is saved.
    fn save_changes(&self, changed: &[Alarm], removed: &[u64]) -> Result<(), StoreError> {
        let mut all = self.load()?;
        all.retain(|a| !removed.contains(&a.id) && !changed.iter().any(|c| c.id == a.id));
        all.extend_from_slice(changed);
        all.sort_by_key(|a| a.id);
        self.save(&all)
    }
}

/// The event log's `alarm_state` table: saved in the same durable database as the alarm
/// history, so a restart finds both consistent.
#[derive(Clone)]
pub struct EventLogStore {
    log: Arc<EventLog>,
}

impl EventLogStore {
    /// A store in `log`'s database.
    pub fn new(log: Arc<EventLog>) -> Self {
        EventLogStore { log }
    }

    /// Moves the alarms of an older daemon's JSON state file into the database, once: only
    /// when the table is still empty; the file is renamed to `*.imported` afterwards.
    /// Returns how many alarms were imported.
    pub fn import_file(&self, file: &FileStore) -> Result<usize, StoreError> {
        if !file.path.exists() || !self.load()?.is_empty() {
            return Ok(0);
        }
        let alarms = file.load()?;
        self.save(&alarms)?;
        let done = file.path.with_extension("json.imported");
        std::fs::rename(&file.path, &done).map_err(|source| StoreError::Io {
            path: file.path.display().to_string(),
            source,
        })?;
        Ok(alarms.len())
    }
}

impl AlarmStore for EventLogStore {
    fn load(&self) -> Result<Vec<Alarm>, StoreError> {
        self.log
            .alarm_state()?
            .into_iter()
            .map(|(id, body)| {
                serde_json::from_str(&body).map_err(|source| StoreError::Format {
                    path: format!("alarm_state id {id}"),
                    source,
                })
            })
            .collect()
    }

    fn save(&self, alarms: &[Alarm]) -> Result<(), StoreError> {
        Ok(self.log.save_alarm_state(&rows(alarms)?)?)
    }

    fn save_changes(&self, changed: &[Alarm], removed: &[u64]) -> Result<(), StoreError> {
        let removed: Vec<i64> = removed.iter().map(|&id| row_id(id)).collect();
        Ok(self.log.update_alarm_state(&rows(changed)?, &removed)?)
    }
}

fn row_id(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// `(id, JSON)` rows of the `alarm_state` table.
fn rows(alarms: &[Alarm]) -> Result<Vec<(i64, String)>, StoreError> {
    alarms
        .iter()
        .map(|a| {
            let body = serde_json::to_string(a).map_err(|source| StoreError::Format {
                path: format!("alarm_state id {}", a.id),
                source,
            })?;
            Ok((row_id(a.id), body))
        })
        .collect()
}
