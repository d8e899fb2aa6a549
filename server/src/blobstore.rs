//! Content-addressed blobstore (packages, droplets, buildpacks, the upload file cache), one
//! interface over two backends chosen by `PAAS_BLOBSTORE_URL`:
//!
//! - **local** (default): `DATA_DIR/blobs/<2 hex>/<sha256>`. A blob is written to a temp file in
//!   the same filesystem, fsynced, then renamed into place (and the directory fsynced), so a name
//!   in the database always points at a whole file, even across a crash.
//! - **S3** (`s3://bucket/prefix?endpoint=...&region=...`): any S3-compatible server through the
//!   `object_store` crate, objects at `prefix/<2 hex>/<sha256>` (the local layout, so `aws s3
//!   sync DATA_DIR/blobs s3://bucket/prefix` moves a single-machine store over). A commit returns
//!   only after the PUT (or the multipart completion, for big blobs) succeeded: S3 makes an object
//!   visible whole or not at all, so an interrupted upload leaves nothing half-visible.
//!   `DATA_DIR/blob-cache/` is a read-through cache in the local layout, because the callers
//!   stream and re-read blobs as files; it is separate from `blobs/` so that local blobs never
//!   pass for uploaded ones.
//!
//! The interface is synchronous, like its callers (archive unpacking, droplet building in
//! `web::block`). The S3 backend runs its requests on a runtime of its own and waits for them, so
//! it is safe to call from any thread; async handlers that may move a whole blob use
//! [`Blobstore::path_async`], which waits on the blocking pool instead of a server thread.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("invalid blob id {0:?}")]
    InvalidId(String),
    #[error("blobstore I/O: {0}")]
    Io(#[from] io::Error),
    #[error("invalid blobstore URL {0:?}: {1}")]
    Config(String, String),
    #[error("S3 blobstore: {0}")]
    Remote(#[from] object_store::Error),
    #[error("blob {0} read back from S3 does not match its sha256")]
    Corrupt(String),
    #[error("the S3 blobstore's runtime stopped")]
    Stopped,
}

/// Where blobs live: `PAAS_BLOBSTORE_URL` and the S3 credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`), as read once by the settings.
#[derive(Debug, Clone, Default)]
pub struct BlobstoreConfig {
    /// `None`, empty or `file:`: the local folder.
    pub url: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Blobstore {
    /// The store itself (local) or the read-through cache (S3).
    root: PathBuf,
    tmp: PathBuf,
    remote: Option<Arc<Remote>>,
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
    /// The local folder backend in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, BlobError> {
        Self::open_in(data_dir, "blobs", None)
    }

    /// The backend `config` names; an S3 bucket is checked to answer before this returns, so a
    /// wrong URL or credential stops the controller at start rather than at the first push.
    pub fn connect(data_dir: &Path, config: &BlobstoreConfig) -> Result<Self, BlobError> {
        match config.url.as_deref().map(str::trim) {
            None | Some("") => Self::open(data_dir),
            Some(url) if url.starts_with("file:") => Self::open(data_dir),
            Some(url) => {
                let remote = Remote::connect(url, config)?;
                remote.run({
                    let store = remote.store.clone();
                    let prefix = remote.prefix.clone();
                    async move {
                        use futures_util::StreamExt;
                        // One listing page proves endpoint, bucket and credentials.
                        let mut list = store.list(Some(&prefix));
                        match list.next().await {
                            Some(Err(e)) => Err(e),
                            _ => Ok(()),
                        }
                    }
                })??;
                Self::open_in(data_dir, "blob-cache", Some(Arc::new(remote)))
            }
        }
    }

    fn open_in(
        data_dir: &Path,
        folder: &str,
        remote: Option<Arc<Remote>>,
    ) -> Result<Self, BlobError> {
        let root = data_dir.join(folder);
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(Self { root, tmp, remote })
    }

    /// `local` or `s3`, for logs and the status page.
    pub fn kind(&self) -> &'static str {
        if self.remote.is_some() {
            "s3"
        } else {
            "local"
        }
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
        let sha = hex::encode(hasher.finalize());
        let dest = self.path_of(&sha)?;
        if let Some(remote) = &self.remote {
            remote.upload(&sha, file.path())?;
        }
        file.as_file().sync_all()?;
        self.persist(file, &dest, true)?;
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
        let new = match &self.remote {
            None if dest.exists() => return Ok((sha, size, false)),
            None => true,
            // The bucket decides, not this controller's cache: another controller may have
            // collected the blob since it was cached here, and a file-cache row must never name
            // a blob the other controllers cannot fetch.
            Some(remote) if remote.exists(&sha)? => false,
            Some(remote) => {
                remote.upload(&sha, file.path())?;
                true
            }
        };
        if !dest.exists() {
            self.persist(file, &dest, false)?;
        }
        Ok((sha, size, new))
    }

    fn persist(
        &self,
        file: tempfile::NamedTempFile,
        dest: &Path,
        sync: bool,
    ) -> Result<(), BlobError> {
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        file.persist(dest).map_err(|e| BlobError::Io(e.error))?;
        if sync {
            if let Some(dir) = dest.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(())
    }

    fn path_of(&self, sha: &str) -> Result<PathBuf, BlobError> {
        check_id(sha)?;
        Ok(self.root.join(&sha[..2]).join(sha))
    }

    /// A local file holding the blob: the blob itself, or (S3) its cached copy, downloaded first
    /// if this controller has none yet. Blocks for the download: see [`Self::path_async`].
    pub fn path(&self, sha: &str) -> Result<PathBuf, BlobError> {
        let p = self.path_of(sha)?;
        if p.exists() {
            return Ok(p);
        }
        let Some(remote) = &self.remote else {
            return Err(BlobError::NotFound(sha.to_string()));
        };
        let tmp = tempfile::NamedTempFile::new_in(&self.tmp)?;
        remote.download(sha, tmp.path())?;
        let mut h = Sha256::new();
        io::copy(&mut File::open(tmp.path())?, &mut h)?;
        if hex::encode(h.finalize()) != sha {
            return Err(BlobError::Corrupt(sha.to_string()));
        }
        tmp.as_file().sync_all()?;
        self.persist(tmp, &p, true)?;
        Ok(p)
    }

    /// [`Self::path`] on the blocking pool, for async handlers: an S3 download of a droplet must
    /// not hold a server thread.
    pub async fn path_async(&self, sha: &str) -> Result<PathBuf, BlobError> {
        let (this, sha) = (self.clone(), sha.to_string());
        tokio::task::spawn_blocking(move || this.path(&sha))
            .await
            .map_err(|_| BlobError::Stopped)?
    }

    pub fn exists(&self, sha: &str) -> bool {
        let Ok(p) = self.path_of(sha) else {
            return false;
        };
        if p.exists() {
            return true;
        }
        match &self.remote {
            None => false,
            Some(remote) => remote.exists(sha).unwrap_or_else(|e| {
                tracing::warn!(error = %e, blob = sha, "checking a blob in S3 failed");
                false
            }),
        }
    }

    /// Which of `shas` this store holds, in their order, for async handlers (the upload
    /// resource match): off the server's threads, and with S3 the blobs not cached here are
    /// asked of the bucket 16 at a time. A blob the bucket cannot be asked about counts as
    /// missing: the client then uploads it again, which is always safe.
    pub async fn existing(&self, shas: Vec<String>) -> Vec<String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.existing_blocking(shas))
            .await
            .unwrap_or_default()
    }

    fn existing_blocking(&self, shas: Vec<String>) -> Vec<String> {
        let cached = |sha: &String| self.path_of(sha).is_ok_and(|p| p.exists());
        let Some(remote) = &self.remote else {
            return shas.into_iter().filter(cached).collect();
        };
        let ask: Vec<String> = shas
            .iter()
            .filter(|s| check_id(s).is_ok() && !cached(s))
            .cloned()
            .collect();
        let found = remote.existing(ask).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "checking blobs in S3 failed");
            HashSet::new()
        });
        shas.into_iter()
            .filter(|s| found.contains(s) || cached(s))
            .collect()
    }

    /// Every blob this store holds, with its last modification time: only blobs named by a
    /// sha256 at their place (`<2 hex>/<sha256>`), so nothing else is ever touched.
    pub fn list(&self) -> Result<Vec<(String, SystemTime)>, BlobError> {
        match &self.remote {
            Some(remote) => remote.list(),
            None => self.list_local(),
        }
    }

    fn list_local(&self) -> Result<Vec<(String, SystemTime)>, BlobError> {
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
        if let Some(remote) = &self.remote {
            remote.delete(sha)?;
        }
        match std::fs::remove_file(self.path_of(sha)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// S3 only: drops cached copies of blobs not in `kept` and older than `grace`, including
    /// those another controller collected from the bucket. The local backend has no cache.
    pub fn evict_cache(&self, kept: &HashSet<String>, grace: Duration) -> Result<usize, BlobError> {
        if self.remote.is_none() {
            return Ok(0);
        }
        let now = SystemTime::now();
        let mut n = 0;
        for (sha, modified) in self.list_local()? {
            if !kept.contains(&sha) && now.duration_since(modified).unwrap_or_default() >= grace {
                std::fs::remove_file(self.path_of(&sha)?)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

fn check_id(sha: &str) -> Result<(), BlobError> {
    if sha.len() != 64
        || !sha
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(BlobError::InvalidId(sha.to_string()));
    }
    Ok(())
}

/// The S3 backend: a client and the runtime its requests run on.
#[derive(Debug)]
struct Remote {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    runtime: RemoteRuntime,
}

/// Owns the runtime; shuts it down without waiting, so dropping the last handle from inside an
/// async context (a test's, a handler's) does not panic.
#[derive(Debug)]
struct RemoteRuntime(Option<tokio::runtime::Runtime>);

impl Drop for RemoteRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Parts of an upload are this big; a blob smaller than one part goes up in one PUT.
const PART_SIZE: usize = 8 * 1024 * 1024;

impl Remote {
    fn connect(url: &str, config: &BlobstoreConfig) -> Result<Self, BlobError> {
        let bad = |why: &str| BlobError::Config(url.to_string(), why.to_string());
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if parsed.scheme() != "s3" {
            return Err(bad(
                "the scheme must be s3:// (or file: for the local folder)",
            ));
        }
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("no bucket"))?;
        let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
        for (key, value) in parsed.query_pairs() {
            builder = match key.as_ref() {
                "endpoint" => builder
                    .with_allow_http(value.starts_with("http://"))
                    .with_endpoint(value.as_ref()),
                "region" => builder.with_region(value.as_ref()),
                "virtual_hosted_style" => {
                    builder.with_virtual_hosted_style_request(value == "true")
                }
                other => return Err(bad(&format!("unknown option {other:?}"))),
            };
        }
        if let Some(k) = &config.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(s) = &config.secret_access_key {
            builder = builder.with_secret_access_key(s);
        }
        if let Some(t) = &config.session_token {
            builder = builder.with_token(t);
        }
        let store: AmazonS3 = builder.build().map_err(|e| bad(&e.to_string()))?;
        let prefix = ObjectPath::from(parsed.path().trim_matches('/'));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("blobstore-s3")
            .enable_all()
            .build()?;
        Ok(Self {
            store: Arc::new(store),
            prefix,
            runtime: RemoteRuntime(Some(runtime)),
        })
    }

    /// Runs `f` on the backend's runtime and waits for it, from any thread (a plain
    /// `block_on` would panic inside another runtime).
    fn run<F>(&self, f: F) -> Result<F::Output, BlobError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.runtime.0.as_ref().ok_or(BlobError::Stopped)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().map_err(|_| BlobError::Stopped)
    }

    fn key(&self, sha: &str) -> ObjectPath {
        let mut parts: Vec<_> = self.prefix.parts().collect();
        parts.push(sha[..2].into());
        parts.push(sha.into());
        ObjectPath::from_iter(parts)
    }

    /// Returns once the object is durable: `shutdown` sends the one PUT, or completes the
    /// multipart upload, and a failure aborts it so no parts are left behind.
    fn upload(&self, sha: &str, file: &Path) -> Result<(), BlobError> {
        let (store, key, file) = (self.store.clone(), self.key(sha), file.to_path_buf());
        self.run(async move {
            use tokio::io::AsyncWriteExt;
            let mut src = tokio::fs::File::open(&file).await?;
            let mut w = object_store::buffered::BufWriter::with_capacity(store, key, PART_SIZE);
            let copied = tokio::io::copy(&mut src, &mut w).await;
            let done = match copied {
                Ok(_) => w.shutdown().await,
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                let _ = w.abort().await;
                return Err(BlobError::Io(e));
            }
            Ok(())
        })?
    }

    fn download(&self, sha: &str, to: &Path) -> Result<(), BlobError> {
        let (store, key, to, id) = (
            self.store.clone(),
            self.key(sha),
            to.to_path_buf(),
            sha.to_string(),
        );
        self.run(async move {
            use futures_util::StreamExt;
            use tokio::io::AsyncWriteExt;
            let got = match store.get(&key).await {
                Err(object_store::Error::NotFound { .. }) => return Err(BlobError::NotFound(id)),
                r => r?,
            };
            let mut out = tokio::fs::File::create(&to).await?;
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                out.write_all(&chunk?).await?;
            }
            out.flush().await?;
            Ok(())
        })?
    }

    fn exists(&self, sha: &str) -> Result<bool, BlobError> {
        let (store, key) = (self.store.clone(), self.key(sha));
        self.run(async move {
            match store.head(&key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })?
    }

    fn existing(&self, shas: Vec<String>) -> Result<HashSet<String>, BlobError> {
        let store = self.store.clone();
        let keys: Vec<(String, ObjectPath)> = shas
            .into_iter()
            .map(|s| {
                let key = self.key(&s);
                (s, key)
            })
            .collect();
        self.run(async move {
            use futures_util::StreamExt;
            futures_util::stream::iter(keys)
                .map(|(sha, key)| {
                    let store = store.clone();
                    async move { store.head(&key).await.is_ok().then_some(sha) }
                })
                .buffer_unordered(16)
                .filter_map(std::future::ready)
                .collect::<HashSet<String>>()
                .await
        })
    }

    fn list(&self) -> Result<Vec<(String, SystemTime)>, BlobError> {
        let (store, prefix) = (self.store.clone(), self.prefix.clone());
        let metas = self.run(async move {
            use futures_util::TryStreamExt;
            store.list(Some(&prefix)).try_collect::<Vec<_>>().await
        })??;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                (check_id(&name).is_ok() && m.location == self.key(&name))
                    .then(|| (name, SystemTime::from(m.last_modified)))
            })
            .collect())
    }

    fn delete(&self, sha: &str) -> Result<(), BlobError> {
        let (store, key) = (self.store.clone(), self.key(sha));
        self.run(async move {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })?
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

    #[test]
    fn urls_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["http://bucket/x", "s3:///nobucket", "s3://b/p?colour=red"] {
            let config = BlobstoreConfig {
                url: Some(url.into()),
                ..Default::default()
            };
            assert!(
                matches!(
                    Blobstore::connect(dir.path(), &config),
                    Err(BlobError::Config(..))
                ),
                "{url}"
            );
        }
        let local = BlobstoreConfig {
            url: Some("file:".into()),
            ..Default::default()
        };
        assert_eq!(
            Blobstore::connect(dir.path(), &local).unwrap().kind(),
            "local"
        );
    }
}
