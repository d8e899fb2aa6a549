//! Content-addressed local blobstore: `blobs/<2 hex>/<sha256>`. A blob is written to a temp file
//! in the same filesystem, fsynced, then renamed into place (and the directory fsynced), so a
//! name in the database always points at a whole file, even across a crash.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("invalid blob id {0:?}")]
    InvalidId(String),
    #[error("blobstore I/O: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone)]
pub struct Blobstore {
    root: PathBuf,
    tmp: PathBuf,
}

/// A blob being written: hashes as it goes; `commit` makes it durable and visible.
pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the bytes are until `commit`, for reading them back (flush first).
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

impl Blobstore {
    pub fn open(data_dir: &Path) -> Result<Self, BlobError> {
        let root = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(Self { root, tmp })
    }

    /// Scratch space on the blobstore's filesystem, so a finished temp file can be renamed in.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        Ok(BlobWriter {
            file: tempfile::NamedTempFile::new_in(&self.tmp)?,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Makes the written bytes durable under their sha256 and returns (sha256, size).
    pub fn commit(&self, w: BlobWriter) -> Result<(String, u64), BlobError> {
        let BlobWriter {
            mut file,
            hasher,
            size,
        } = w;
        file.flush()?;
        file.as_file().sync_all()?;
        let sha = hex::encode(hasher.finalize());
        let dest = self.path_of(&sha)?;
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        file.persist(&dest).map_err(|e| BlobError::Io(e.error))?;
        if let Some(dir) = dest.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok((sha, size))
    }

    /// Like [`Blobstore::commit`] without the fsyncs: for the incremental-upload file cache,
    /// where thousands of small files would otherwise cost a sync each. Readers verify a cached
    /// file's digest before use, so a file torn by a crash is detected, never served.
    pub fn commit_unsynced(&self, w: BlobWriter) -> Result<(String, u64), BlobError> {
        self.commit_unsynced_new(w)
            .map(|(sha, size, _)| (sha, size))
    }

    /// [`Self::commit_unsynced`], also saying whether the blob is new (so a caller that fails
    /// later can remove exactly what it added).
    pub fn commit_unsynced_new(&self, w: BlobWriter) -> Result<(String, u64, bool), BlobError> {
        let BlobWriter {
            mut file,
            hasher,
            size,
        } = w;
        file.flush()?;
        let sha = hex::encode(hasher.finalize());
        let dest = self.path_of(&sha)?;
        if dest.exists() {
            return Ok((sha, size, false));
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        file.persist(&dest).map_err(|e| BlobError::Io(e.error))?;
        Ok((sha, size, true))
    }

    fn path_of(&self, sha: &str) -> Result<PathBuf, BlobError> {
        if sha.len() != 64
            || !sha
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(BlobError::InvalidId(sha.to_string()));
        }
        Ok(self.root.join(&sha[..2]).join(sha))
    }

    pub fn path(&self, sha: &str) -> Result<PathBuf, BlobError> {
        let p = self.path_of(sha)?;
        if !p.exists() {
            return Err(BlobError::NotFound(sha.to_string()));
        }
        Ok(p)
    }

    pub fn exists(&self, sha: &str) -> bool {
        self.path(sha).is_ok()
    }

    /// Every blob this store holds, with its last modification time: only files under
    /// `blobs/<2 hex>/` named by a sha256, so nothing else in the directory is ever touched.
    pub fn list(&self) -> Result<Vec<(String, std::time::SystemTime)>, BlobError> {
        let mut out = Vec::new();
        for shard in std::fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let meta = entry.metadata()?;
                if meta.is_file() && self.path_of(&name).is_ok_and(|p| p == entry.path()) {
                    out.push((name, meta.modified()?));
                }
            }
        }
        Ok(out)
    }

    pub fn delete(&self, sha: &str) -> Result<(), BlobError> {
        match std::fs::remove_file(self.path_of(sha)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_commit_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let bs = Blobstore::open(dir.path()).unwrap();
        let mut w = bs.writer().unwrap();
        w.write_all(b"hello").unwrap();
        let (sha, size) = bs.commit(w).unwrap();
        assert_eq!(size, 5);
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(std::fs::read(bs.path(&sha).unwrap()).unwrap(), b"hello");
        assert!(bs.path("../../etc/passwd").is_err());
        bs.delete(&sha).unwrap();
        assert!(!bs.exists(&sha));
        assert_eq!(
            std::fs::read_dir(bs.tmp_dir()).unwrap().count(),
            0,
            "no temp file left behind"
        );
    }
}
