//! Ledgers kept across agent restarts. The crash ledger: each instance's restart count, consecutive crashes and last exit reason,
//! kept in `$PAAS_DATA_DIR/crashes.json` so an agent that restarts and re-adopts its containers
//! keeps counting (and keeps its backoff) instead of starting from zero. Written with temp file,
//! fsync and rename, so a crash of the agent mid-write leaves the previous ledger.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashRecord {
    pub restarts: u32,
    pub crash_count: u32,
    pub last_exit: Option<String>,
}

/// Restart counts by instance id.
pub type CrashLedger = Ledger<CrashRecord>;

/// A small map by instance id kept in a JSON file across agent restarts (the crash ledger, the
/// log positions).
#[derive(Debug)]
pub struct Ledger<T> {
    path: PathBuf,
    records: BTreeMap<String, T>,
    /// fsync before the rename: for records worth a disk flush per change. Without it a crash
    /// of the agent (not of the machine) still leaves a whole file, old or new.
    durable: bool,
}

impl<T: Serialize + DeserializeOwned + PartialEq> Ledger<T> {
    /// Loads the ledger at `path`; a missing or unreadable file is an empty ledger (what it
    /// holds is a convenience, never a reason not to run).
    pub fn load(path: &Path) -> Self {
        let records = std::fs::read(path)
            .ok()
            .and_then(|b| match serde_json::from_slice(&b) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable ledger file");
                    None
                }
            })
            .unwrap_or_default();
        Self {
            path: path.to_path_buf(),
            records,
            durable: true,
        }
    }

    /// Writes without fsync (records that change every few seconds).
    pub fn lazy(mut self) -> Self {
        self.durable = false;
        self
    }

    pub fn records(&self) -> &BTreeMap<String, T> {
        &self.records
    }

    pub fn get(&self, instance_id: &str) -> Option<&T> {
        self.records.get(instance_id)
    }

    /// Replaces the whole ledger with `records`, writing the file only when something changed.
    pub fn sync(&mut self, records: BTreeMap<String, T>) -> std::io::Result<()> {
        if records == self.records {
            return Ok(());
        }
        self.records = records;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&serde_json::to_vec(&self.records)?)?;
        if self.durable {
            tmp.as_file().sync_all()?;
        }
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crashes.json");
        let mut l = CrashLedger::load(&path);
        assert!(l.get("i1").is_none());
        let rec = CrashRecord {
            restarts: 4,
            crash_count: 5,
            last_exit: Some("exited with code 3".into()),
        };
        l.sync([("i1".to_string(), rec.clone())].into()).unwrap();
        assert_eq!(CrashLedger::load(&path).get("i1"), Some(&rec));
        std::fs::write(&path, b"not json").unwrap();
        assert!(CrashLedger::load(&path).get("i1").is_none());
    }
}
