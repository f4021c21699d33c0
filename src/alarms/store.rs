//! Where alarm state survives a restart, behind a small trait so the SQLite event log
//! (next issue) can take over from the JSON file.

use std::path::PathBuf;

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
}

/// Persistence of the current alarm set (not the history: that is the event log's job).
pub trait AlarmStore: Send + Sync {
    /// Every alarm saved last time (empty when there is none yet).
    fn load(&self) -> Result<Vec<Alarm>, StoreError>;
    /// Replaces the saved set; returns after it is durable.
    fn save(&self, alarms: &[Alarm]) -> Result<(), StoreError>;
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
}
