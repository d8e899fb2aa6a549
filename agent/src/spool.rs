//! The on-disk overflow of the log shipper: while the controller is unreachable and the memory
//! buffer is full, the oldest lines move here (JSON lines in `$PAAS_DATA_DIR/log-spool.jsonl`) and
//! are sent first once the controller answers again, so order is kept. The file is bounded; lines
//! beyond the bound are dropped and counted. A spool left by an agent that stopped is sent after
//! its restart.

use paas_common::agent::AgentLogLine;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("log spool {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    source: std::io::Error,
}

pub struct Spool {
    path: PathBuf,
    file: File,
    /// Bytes in the file.
    len: u64,
    /// Where the next unsent line starts.
    read_at: u64,
    max_bytes: u64,
}

impl Spool {
    pub fn open(path: PathBuf, max_bytes: u64) -> Result<Self, SpoolError> {
        let err = |source| SpoolError {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        Ok(Self {
            path,
            file,
            len,
            read_at: 0,
            max_bytes,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.read_at >= self.len
    }

    /// Appends lines; returns how many did not fit under the bound (dropped).
    pub fn append(
        &mut self,
        lines: impl IntoIterator<Item = AgentLogLine>,
    ) -> Result<u64, SpoolError> {
        let mut buf = Vec::new();
        let mut dropped = 0;
        for l in lines {
            let Ok(mut json) = serde_json::to_vec(&l) else {
                continue;
            };
            json.push(b'\n');
            if self.len + (buf.len() + json.len()) as u64 > self.max_bytes {
                dropped += 1;
                continue;
            }
            buf.extend_from_slice(&json);
        }
        self.file.write_all(&buf).map_err(|source| SpoolError {
            path: self.path.clone(),
            source,
        })?;
        self.len += buf.len() as u64;
        Ok(dropped)
    }

    /// Up to `max` of the oldest unsent lines, and where they end (for [`Spool::consume`]).
    pub fn peek(&mut self, max: usize) -> Result<(Vec<AgentLogLine>, u64), SpoolError> {
        let err = |source| SpoolError {
            path: self.path.clone(),
            source,
        };
        let mut reader = BufReader::new(&self.file);
        reader.seek(SeekFrom::Start(self.read_at)).map_err(err)?;
        let mut out = Vec::new();
        let mut at = self.read_at;
        let mut line = String::new();
        while out.len() < max && at < self.len {
            line.clear();
            let n = reader.read_line(&mut line).map_err(err)?;
            if n == 0 {
                break;
            }
            at += n as u64;
            // A torn last line (crash mid-write) is skipped rather than blocking the spool.
            if let Ok(l) = serde_json::from_str(line.trim_end()) {
                out.push(l);
            }
        }
        Ok((out, at))
    }

    /// Marks lines up to `end` as sent; an emptied spool is truncated.
    pub fn consume(&mut self, end: u64) -> Result<(), SpoolError> {
        self.read_at = end.min(self.len);
        if self.is_empty() {
            self.file.set_len(0).map_err(|source| SpoolError {
                path: self.path.clone(),
                source,
            })?;
            self.len = 0;
            self.read_at = 0;
        }
        Ok(())
    }
}
