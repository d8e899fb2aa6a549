//! A host-wide exclusive lock on a file under /tmp: serializes steps that several agents (and
//! test processes) on one Docker engine must not run at the same time. The OS releases it when
//! the file closes, even on a crash.

use fs4::fs_std::FileExt;
use std::path::{Path, PathBuf};

pub struct FileLock(std::fs::File);

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.0);
    }
}

/// Waits for the lock at `path` (created when missing); `waiting` is logged when someone else
/// holds it.
pub async fn exclusive(path: &Path, waiting: &'static str) -> std::io::Result<FileLock> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if !file.try_lock_exclusive()? {
            tracing::info!(path = %path.display(), "{waiting}");
            file.lock_exclusive()?;
        }
        Ok(FileLock(file))
    })
    .await
    .map_err(std::io::Error::other)?
}
