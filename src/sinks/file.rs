//! Daily-rotated line-protocol files under `data_dir/telemetry/`, for sites without a store.
//! `influx write --file` (or VictoriaMetrics' `/write`) imports them later; timestamps are ns.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use super::WriteError;

/// Appends batches to `DIR/YYYY-MM-DD.lp` (UTC date of the write).
pub struct FileWriter {
    dir: PathBuf,
    current: Option<(String, tokio::fs::File)>,
}

impl FileWriter {
    /// Files go into `dir`, created on first write.
    pub fn new(dir: PathBuf) -> Self {
        FileWriter { dir, current: None }
    }

    /// Appends one batch; returns after it reached the OS (not fsynced).
    pub async fn write(&mut self, body: &[u8]) -> Result<(), WriteError> {
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let stale = self.current.as_ref().is_none_or(|(d, _)| *d != day);
        if stale {
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| io_error(&self.dir, e))?;
            let path = self.dir.join(format!("{day}.lp"));
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
                .map_err(|e| io_error(&path, e))?;
            self.current = Some((day, file));
        }
        if let Some((_, file)) = self.current.as_mut() {
            file.write_all(body)
                .await
                .map_err(|e| io_error(&self.dir, e))?;
            file.flush().await.map_err(|e| io_error(&self.dir, e))?;
        }
        Ok(())
    }
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> WriteError {
    // A full or read-only disk may recover (operator frees space): retry, don't drop.
    WriteError::Retryable(format!("{}: {e}", path.display()))
}
