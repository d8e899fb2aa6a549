//! The dependency cache (issue 19), as buildpacks' cache layers: what a buildpack leaves in
//! `/cache` after a successful staging (a Python venv, `node_modules`, the bundle, Go's module
//! and build caches) is kept as one tar per (space, stack, dependency files) and unpacked into
//! the next staging with the same key before it starts, so a re-push with an unchanged lockfile
//! downloads and builds nothing.
//!
//! It lives on the node, not in the controller's blobstore: a hit then costs no transfer, the
//! entries (hundreds of MB for a venv) never fill the controller's disk, and losing one only
//! costs a slower build. A push staged on another node misses once. The bound is per node
//! (`PAAS_STAGING_CACHE_MB`) with least-recently-used eviction by file mtime, which a hit
//! refreshes. The staged layers of `layers` share the folder and the bound (keys `layers-...`).

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The files at the app's top that decide what its dependencies are: the key hashes their
/// contents, so editing the app's code keeps the key and editing a lockfile changes it.
const DEPENDENCY_FILES: &[&str] = &[
    "requirements.txt",
    "Pipfile.lock",
    "pyproject.toml",
    "uv.lock",
    ".python-version",
    "runtime.txt",
    "package.json",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "Gemfile",
    "Gemfile.lock",
    "go.mod",
    "go.sum",
];

/// Whether `path` (relative to the app's top) is one of [`DEPENDENCY_FILES`].
pub fn is_dependency_file(path: &str) -> bool {
    DEPENDENCY_FILES.contains(&path)
}

#[derive(Debug, Clone)]
pub struct DepCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl DepCache {
    pub fn new(dir: PathBuf, max_mb: u64) -> Self {
        Self {
            dir,
            max_bytes: max_mb.saturating_mul(1024 * 1024),
        }
    }

    /// The key of a staging of `source` (the app's tar) on `stack` with `buildpacks` (the tar
    /// of the buildpacks it runs, so a changed buildpack never reuses an old result); `None`
    /// when the app declares no dependencies.
    pub fn key(stack: &str, buildpacks: &[u8], source: &[u8]) -> Option<String> {
        let mut found: Vec<(String, Vec<u8>)> = Vec::new();
        let mut archive = tar::Archive::new(source);
        for entry in archive.entries().ok()? {
            let Ok(mut entry) = entry else { break };
            let Ok(path) = entry.path().map(|p| p.into_owned()) else {
                continue;
            };
            let path = path.strip_prefix(".").unwrap_or(&path).to_path_buf();
            let Some(name) = path.to_str().filter(|n| is_dependency_file(n)) else {
                continue;
            };
            let mut data = Vec::new();
            if std::io::Read::read_to_end(&mut entry, &mut data).is_ok() {
                found.push((name.to_string(), data));
            }
        }
        if found.is_empty() {
            return None;
        }
        found.sort();
        let mut h = Sha256::new();
        h.update(stack.as_bytes());
        h.update([0]);
        h.update(Sha256::digest(buildpacks));
        for (name, data) in &found {
            h.update(name.as_bytes());
            h.update([0]);
            h.update((data.len() as u64).to_le_bytes());
            h.update(data);
        }
        Some(hex::encode(h.finalize()))
    }

    fn path(&self, scope: &str, key: &str) -> PathBuf {
        // The scope is hashed so no space id can name a path outside the cache.
        let scope = hex::encode(Sha256::digest(scope.as_bytes()));
        self.dir.join(&scope[..32]).join(format!("{key}.tar"))
    }

    /// The entry for `key` in `scope`, marked as just used.
    pub fn get(&self, scope: &str, key: &str) -> Option<Vec<u8>> {
        let path = self.path(scope, key);
        let data = std::fs::read(&path).ok()?;
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Some(data)
    }

    /// Stores an entry (written aside and renamed, so a reader never sees half of one), then
    /// evicts the least recently used entries beyond the bound.
    pub fn put(&self, scope: &str, key: &str, data: &[u8]) -> std::io::Result<()> {
        if data.len() as u64 > self.max_bytes {
            return Ok(());
        }
        let path = self.path(scope, key);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, &path)?;
        self.evict()
    }

    fn evict(&self) -> std::io::Result<()> {
        let mut entries = Vec::new();
        for scope in std::fs::read_dir(&self.dir)?.flatten() {
            let Ok(files) = std::fs::read_dir(scope.path()) else {
                continue;
            };
            for f in files.flatten() {
                let Ok(meta) = f.metadata() else { continue };
                if meta.is_file() && f.path().extension().is_some_and(|e| e == "tar") {
                    let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                    entries.push((used, meta.len(), f.path()));
                }
            }
        }
        entries.sort();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            tracing::info!(entry = %path.display(), bytes = len, "evicting a dependency cache entry");
            std::fs::remove_file(&path)?;
            total -= len;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tar as tar_of;

    #[test]
    fn the_key_follows_the_lockfile_and_stack_not_the_code() {
        let a = tar_of(&[("app.py", "1"), ("requirements.txt", "flask==3.0\n")]);
        let b = tar_of(&[("app.py", "2"), ("./requirements.txt", "flask==3.0\n")]);
        let c = tar_of(&[("app.py", "1"), ("requirements.txt", "flask==3.1\n")]);
        let k = |s, src| DepCache::key(s, b"bp", src).unwrap();
        assert_eq!(k("trixie", &a), k("trixie", &b));
        assert_ne!(k("trixie", &a), k("trixie", &c));
        assert_ne!(k("trixie", &a), k("bookworm", &a));
        assert_ne!(
            k("trixie", &a),
            DepCache::key("trixie", b"bp2", &a).unwrap()
        );
        assert_eq!(
            DepCache::key("trixie", b"bp", &tar_of(&[("app.py", "1")])),
            None
        );
    }

    #[test]
    fn entries_are_per_scope_and_the_least_recently_used_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DepCache::new(dir.path().to_path_buf(), 1);
        let mb = vec![7u8; 400 * 1024];
        cache.put("space-a", "k1", &mb).unwrap();
        assert!(
            cache.get("space-b", "k1").is_none(),
            "other spaces never see it"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put("space-a", "k2", &mb).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        // k1 used again: k2 is now the least recently used.
        assert_eq!(cache.get("space-a", "k1").unwrap(), mb);
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put("space-a", "k3", &mb).unwrap();
        assert!(cache.get("space-a", "k2").is_none());
        assert!(cache.get("space-a", "k1").is_some() && cache.get("space-a", "k3").is_some());
    }
}
