//! Incremental upload: the CLI asks which of its files the controller already holds for the
//! caller ([`Store::known_files`], per owner, never across tenants), uploads a zip of the others
//! and lists the rest as [`PushResource`]s. Here both become one droplet source tar: the zip's
//! files (each also kept in the blobstore for next time) and the listed files read back from the
//! blobstore, with the same path checks and limits as any archive entry.

use paas_common::api::PushResource;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::archive::{self, ArchiveError, Limits, Unpacked};
use crate::blobstore::Blobstore;

/// What [`build_source_tar`] produced besides the tar.
pub struct Source {
    pub unpacked: Unpacked,
    /// (sha256, size) of every file the zip brought, now in the file cache.
    pub cached: Vec<(String, u64)>,
    /// Digest of the sorted (path, content, executable) list: equal for equal app folders however
    /// the files arrived (zipped or from the cache), so an identical build can be reused.
    pub tree: String,
}

/// Writes the source tar of the uploaded zip plus `resources` to `out`. A refused upload leaves
/// nothing behind: file blobs this call added are removed again on error.
pub fn build_source_tar<W: Write>(
    zip_path: &Path,
    resources: &[PushResource],
    limits: &Limits,
    blobs: &Blobstore,
    out: W,
) -> Result<Source, ArchiveError> {
    let mut added = Vec::new();
    let result = build_source_tar_inner(zip_path, resources, limits, blobs, out, &mut added);
    if result.is_err() {
        for sha in added {
            let _ = blobs.delete(&sha);
        }
    }
    result
}

fn build_source_tar_inner<W: Write>(
    zip_path: &Path,
    resources: &[PushResource],
    limits: &Limits,
    blobs: &Blobstore,
    out: W,
    added: &mut Vec<String>,
) -> Result<Source, ArchiveError> {
    let mut tar = tar::Builder::new(out);
    let mut dirs = HashSet::new();
    let mut found = Unpacked::default();
    let mut cached = Vec::new();
    let mut paths: HashSet<String> = HashSet::new();
    let mut tree: Vec<(String, String, bool)> = Vec::new();
    archive::append_zip(
        zip_path,
        limits,
        &mut tar,
        &mut dirs,
        &mut found,
        &mut |name, scratch, size, exec| {
            paths.insert(name.to_string());
            let mut w = blobs.writer().map_err(io::Error::other)?;
            io::copy(&mut scratch.take(size), &mut w)?;
            let (sha, n, new) = blobs.commit_unsynced_new(w).map_err(io::Error::other)?;
            if new {
                added.push(sha.clone());
            }
            tree.push((name.to_string(), sha.clone(), exec));
            cached.push((sha, n));
            Ok(())
        },
    )?;
    if found.files + resources.len() as u64 > limits.max_entries as u64 {
        return Err(ArchiveError::TooManyEntries(
            found.files + resources.len() as u64,
            limits.max_entries,
        ));
    }
    for r in resources {
        let name = archive::checked_path(&r.path)?;
        if !paths.insert(name.clone()) {
            return Err(ArchiveError::UnsafePath(format!("{name} (listed twice)")));
        }
        if found.bytes + r.size > limits.max_unpacked_bytes {
            return Err(ArchiveError::TooLarge(limits.max_unpacked_bytes));
        }
        let path = blobs.path(&r.sha256).map_err(|_| missing(&name))?;
        let mut f = File::open(path)?;
        // The cache is written without fsync: check the content before it goes into a droplet.
        let mut h = Sha256::new();
        let n = io::copy(&mut f, &mut h)?;
        if n != r.size || hex::encode(h.finalize()) != r.sha256 {
            return Err(missing(&name));
        }
        f.seek(SeekFrom::Start(0))?;
        archive::add_parents(&mut tar, &mut dirs, &name, false)?;
        archive::append_file(&mut tar, &name, r.executable, n, f.take(n))?;
        tree.push((name.clone(), r.sha256.clone(), r.executable));
        found.bytes += n;
        found.files += 1;
        if !name.contains('/') {
            found.top_level.push(name.clone());
        }
        if name == "Procfile" && n <= 64 * 1024 {
            found.procfile =
                std::fs::read_to_string(blobs.path(&r.sha256).map_err(|_| missing(&name))?).ok();
        }
    }
    if found.files == 0 {
        return Err(ArchiveError::Empty);
    }
    tar.into_inner()?.flush()?;
    let tree = paas_common::apply::source_digest(
        tree.iter()
            .map(|(name, sha, exec)| (name.as_str(), sha.as_str(), *exec)),
    );
    Ok(Source {
        unpacked: found,
        cached,
        tree,
    })
}

fn missing(name: &str) -> ArchiveError {
    ArchiveError::NotZip(format!(
        "{name} was not uploaded and the server does not hold it: push again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_with(files: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(f.reopen().unwrap());
        for (n, b) in files {
            w.start_file(*n, SimpleFileOptions::default()).unwrap();
            w.write_all(b).unwrap();
        }
        w.finish().unwrap();
        f
    }

    fn names(tar: &[u8]) -> Vec<String> {
        tar::Archive::new(tar)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn cached_files_join_the_uploaded_ones() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobstore::open(dir.path()).unwrap();
        let limits = Limits {
            max_entries: 100,
            max_unpacked_bytes: 1 << 20,
        };
        let first = zip_with(&[("app.py", b"print(1)"), ("lib/util.py", b"X = 1")]);
        let mut tar = Vec::new();
        let src = build_source_tar(first.path(), &[], &limits, &blobs, &mut tar).unwrap();
        let (u, cached) = (src.unpacked, src.cached);
        assert_eq!((u.files, cached.len()), (2, 2));
        let util = cached.iter().find(|(_, n)| *n == 5).unwrap().0.clone();

        // Second push: only app.py changed; lib/util.py comes from the cache.
        let second = zip_with(&[("app.py", b"print(2)")]);
        let res = [PushResource {
            path: "lib/util.py".into(),
            sha256: util.clone(),
            size: 5,
            executable: false,
        }];
        let mut tar = Vec::new();
        let src2 = build_source_tar(second.path(), &res, &limits, &blobs, &mut tar).unwrap();
        assert_eq!(src2.unpacked.files, 2);
        assert_ne!(src.tree, src2.tree, "app.py changed");
        // The same folder sent whole again has the same tree digest as sent from the cache.
        let whole = zip_with(&[("lib/util.py", b"X = 1"), ("app.py", b"print(2)")]);
        let src3 = build_source_tar(whole.path(), &[], &limits, &blobs, Vec::new()).unwrap();
        assert_eq!(src2.tree, src3.tree);
        let n = names(&tar);
        assert!(
            n.contains(&"lib/util.py".to_string()) && n.contains(&"lib/".to_string()),
            "{n:?}"
        );

        // A path out of the tree, an unknown file and a tampered cache entry are refused.
        let bad = [PushResource {
            path: "../etc/passwd".into(),
            sha256: util.clone(),
            size: 5,
            executable: false,
        }];
        assert!(matches!(
            build_source_tar(second.path(), &bad, &limits, &blobs, Vec::new()),
            Err(ArchiveError::UnsafePath(_))
        ));
        let unknown = [PushResource {
            path: "x".into(),
            sha256: "a".repeat(64),
            size: 5,
            executable: false,
        }];
        assert!(build_source_tar(second.path(), &unknown, &limits, &blobs, Vec::new()).is_err());
        std::fs::write(blobs.path(&util).unwrap(), b"Y = 2").unwrap();
        assert!(build_source_tar(second.path(), &res, &limits, &blobs, Vec::new()).is_err());
    }

    #[tokio::test]
    async fn file_matches_never_cross_owners() {
        use crate::store::prelude::*;
        use crate::store::SqliteStore;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let f = ("a".repeat(64), 10u64);
        store
            .remember_files("alice", std::slice::from_ref(&f))
            .await
            .unwrap();
        store
            .remember_files("alice", std::slice::from_ref(&f))
            .await
            .unwrap();
        assert_eq!(
            store
                .known_files("alice", std::slice::from_ref(&f))
                .await
                .unwrap(),
            vec![f.0.clone()]
        );
        assert!(
            store
                .known_files("bob", std::slice::from_ref(&f))
                .await
                .unwrap()
                .is_empty(),
            "bob never uploaded it"
        );
        assert!(
            store
                .known_files("alice", &[(f.0.clone(), 11)])
                .await
                .unwrap()
                .is_empty(),
            "size must match"
        );
        let many: Vec<(String, u64)> = (0..1200).map(|i| (format!("{i:064x}"), 1)).collect();
        store.remember_files("alice", &many).await.unwrap();
        assert_eq!(
            store.known_files("alice", &many).await.unwrap().len(),
            1200,
            "chunked past SQLite's parameter limit"
        );
    }
}
