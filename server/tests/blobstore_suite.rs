//! One blobstore suite, run on both backends: the local folder and an S3 bucket on a real
//! S3-compatible server (moto's, started per test on a free port with its own bucket, so tests
//! share nothing). Each `suite!` case runs once per backend; S3-only behaviour (several
//! controllers on one bucket, integrity of downloads, the local cache) has its own tests below.

use paas_server::blobstore::{BlobError, Blobstore, BlobstoreConfig};
use paas_server::droplets;
use paas_server::store::prelude::*;
use paas_server::store::{Event, SqliteStore};
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto S3 server of this test's own, stopped when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (pip install 'moto[server]')");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Raw requests, unsigned (moto accepts them): bucket creation and tampering.
    fn request(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> reqwest::StatusCode {
        reqwest::blocking::Client::new()
            .request(method, format!("{}/{path}", self.url()))
            .body(body)
            .send()
            .unwrap()
            .status()
    }

    fn bucket(&self, name: &str) -> BlobstoreConfig {
        let status = self.request(reqwest::Method::PUT, name, Vec::new());
        assert!(status.is_success(), "creating bucket {name}: {status}");
        BlobstoreConfig {
            url: Some(format!(
                "s3://{name}/paas/blobs?endpoint={}&region=us-east-1",
                self.url()
            )),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            session_token: None,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backend under test: the store, where it keeps its files, and its S3 server if any.
struct Backend {
    blobs: Blobstore,
    dir: tempfile::TempDir,
    config: BlobstoreConfig,
    moto: Option<Moto>,
}

impl Backend {
    fn local() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = BlobstoreConfig::default();
        Backend {
            blobs: Blobstore::connect(dir.path(), &config).unwrap(),
            dir,
            config,
            moto: None,
        }
    }

    fn s3() -> Self {
        let moto = Moto::start();
        let config = moto.bucket("suite");
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobstore::connect(dir.path(), &config).unwrap();
        assert_eq!(blobs.kind(), "s3");
        Backend {
            blobs,
            dir,
            config,
            moto: Some(moto),
        }
    }

    /// Another controller on the same backend: with S3 on another machine (its own data
    /// folder, the same bucket); with the local folder on the same machine and folder.
    fn second_controller(&self) -> (Blobstore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let data = if self.moto.is_some() {
            dir.path()
        } else {
            self.dir.path()
        };
        (Blobstore::connect(data, &self.config).unwrap(), dir)
    }
}

fn put(blobs: &Blobstore, bytes: &[u8]) -> String {
    let mut w = blobs.writer().unwrap();
    w.write_all(bytes).unwrap();
    blobs.commit(w).unwrap().0
}

fn read(blobs: &Blobstore, sha: &str) -> Vec<u8> {
    std::fs::read(blobs.path(sha).unwrap()).unwrap()
}

fn tmp_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir.join("tmp")).unwrap().count() == 0
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $name() { super::$name(super::Backend::local()) })*
        }
        mod s3 {
            $(#[test] fn $name() { super::$name(super::Backend::s3()) })*
        }
    };
}

suite!(
    commit_read_back_and_delete,
    same_bytes_same_blob,
    big_blob_in_parts,
    uncommitted_writes_leave_nothing,
    list_names_only_blobs,
    collection_keeps_referenced_blobs,
    async_path_for_handlers,
);

fn commit_read_back_and_delete(b: Backend) {
    let mut w = b.blobs.writer().unwrap();
    w.write_all(b"hello").unwrap();
    let (sha, size) = b.blobs.commit(w).unwrap();
    assert_eq!(size, 5);
    assert_eq!(
        sha,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert!(b.blobs.exists(&sha));
    assert_eq!(read(&b.blobs, &sha), b"hello");
    assert!(matches!(
        b.blobs.path("../../etc/passwd"),
        Err(BlobError::InvalidId(_))
    ));
    assert!(!b.blobs.exists("../../etc/passwd"));
    b.blobs.delete(&sha).unwrap();
    assert!(!b.blobs.exists(&sha));
    assert!(matches!(b.blobs.path(&sha), Err(BlobError::NotFound(_))));
    // Deleting what is gone is not an error: two collections may race.
    b.blobs.delete(&sha).unwrap();
    assert!(tmp_is_empty(b.dir.path()), "no temp file left behind");
}

fn same_bytes_same_blob(b: Backend) {
    let write = |bytes: &[u8]| {
        let mut w = b.blobs.writer().unwrap();
        w.write_all(bytes).unwrap();
        b.blobs.commit_unsynced_new(w).unwrap()
    };
    let (sha, size, new) = write(b"app.py contents");
    assert_eq!((size, new), (15, true));
    let (again, _, new) = write(b"app.py contents");
    assert_eq!((again.as_str(), new), (sha.as_str(), false));
    assert_eq!(put(&b.blobs, b"app.py contents"), sha);
    assert_eq!(b.blobs.list().unwrap().len(), 1);
    assert!(tmp_is_empty(b.dir.path()));
}

fn big_blob_in_parts(b: Backend) {
    // Over one upload part (8 MiB): S3 gets a multipart upload, completed before commit returns.
    let bytes: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sha = put(&b.blobs, &bytes);
    assert_eq!(read(&b.blobs, &sha), bytes);
    let (other, _dir) = b.second_controller();
    assert_eq!(read(&other, &sha), bytes);
}

fn uncommitted_writes_leave_nothing(b: Backend) {
    let mut w = b.blobs.writer().unwrap();
    w.write_all(b"a push that failed half-way").unwrap();
    drop(w);
    assert!(b.blobs.list().unwrap().is_empty());
    assert!(tmp_is_empty(b.dir.path()));
}

fn list_names_only_blobs(b: Backend) {
    let a = put(&b.blobs, b"one");
    let c = put(&b.blobs, b"two");
    // Something else beside the blobs must never be listed (so never collected).
    match &b.moto {
        Some(m) => {
            for stray in ["suite/paas/blobs/README", "suite/paas/blobs/ab/not-a-sha"] {
                assert!(m
                    .request(reqwest::Method::PUT, stray, b"x".to_vec())
                    .is_success());
            }
        }
        None => std::fs::write(b.dir.path().join("blobs").join("README"), "x").unwrap(),
    }
    let mut listed: Vec<String> = b
        .blobs
        .list()
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    listed.sort();
    let mut want = vec![a, c];
    want.sort();
    assert_eq!(listed, want);
    for (_, modified) in b.blobs.list().unwrap() {
        let age = std::time::SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(600), "{age:?}");
    }
}

fn collection_keeps_referenced_blobs(b: Backend) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&b.dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let kept = put(&b.blobs, b"a buildpack");
        let unreferenced = put(&b.blobs, b"an old droplet");
        let ev = Event {
            app_name: None,
            app_id: None,
            actor: "admin".into(),
            kind: "k".into(),
            message: "m".into(),
        };
        store
            .add_buildpack("bp", &kept, "admin", &ev)
            .await
            .unwrap();
        // Within the grace period nothing goes: a push in flight has blobs not yet named.
        let r = droplets::collect(&store, &b.blobs, 1, Duration::from_secs(600))
            .await
            .unwrap();
        assert!(r.deleted.is_empty());
        let r = droplets::collect(&store, &b.blobs, 1, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r.deleted, vec![unreferenced.clone()]);
        assert!(b.blobs.exists(&kept));
        assert!(!b.blobs.exists(&unreferenced));
        let (other, _dir) = b.second_controller();
        assert!(other.exists(&kept) && !other.exists(&unreferenced));
    });
    drop(rt);
}

fn async_path_for_handlers(b: Backend) {
    let sha = put(&b.blobs, b"droplet");
    let (other, _dir) = b.second_controller();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = rt.block_on(other.path_async(&sha)).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"droplet");
    // The blocking interface works inside a runtime too (handlers call `exists`).
    assert!(rt.block_on(async { other.exists(&sha) }));
    // A controller that has cached nothing asks the bucket (the upload resource match).
    let (fresh, _fresh_dir) = b.second_controller();
    let missing = "0".repeat(64);
    let asked = vec![missing, sha.clone(), "../x".into(), sha.clone()];
    assert_eq!(
        rt.block_on(fresh.existing(asked)),
        vec![sha.clone(), sha.clone()]
    );
}

#[test]
fn s3_controllers_share_one_bucket() {
    let b = Backend::s3();
    let (other, other_dir) = b.second_controller();
    let sha = put(&b.blobs, b"pushed through controller A");
    // B has never seen it: fetched from the bucket into B's cache, then served from there.
    assert_eq!(read(&other, &sha), b"pushed through controller A");
    let cached = other_dir
        .path()
        .join("blob-cache")
        .join(&sha[..2])
        .join(&sha);
    assert!(cached.is_file());
    // A collects it; B's cached copy goes at B's next collection, not served as if still there.
    b.blobs.delete(&sha).unwrap();
    assert_eq!(b.blobs.list().unwrap(), vec![]);
    let evicted = other
        .evict_cache(&Default::default(), Duration::ZERO)
        .unwrap();
    assert_eq!(evicted, 1);
    assert!(!other.exists(&sha));
}

#[test]
fn s3_file_cache_commit_asks_the_bucket_not_the_cache() {
    let b = Backend::s3();
    let (other, _dir) = b.second_controller();
    let commit = |blobs: &Blobstore| {
        let mut w = blobs.writer().unwrap();
        w.write_all(b"static/app.css").unwrap();
        blobs.commit_unsynced_new(w).unwrap()
    };
    let (sha, _, new) = commit(&b.blobs);
    assert!(new);
    // Another controller collects it; this one still has it cached.
    other.delete(&sha).unwrap();
    assert!(b.blobs.path(&sha).is_ok());
    // Uploaded again (and said to be new), so the other controller can fetch it.
    let (_, _, new) = commit(&b.blobs);
    assert!(new);
    assert_eq!(read(&other, &sha), b"static/app.css");
}

#[test]
fn s3_download_is_checked_against_its_name() {
    use sha2::{Digest, Sha256};
    let b = Backend::s3();
    // An object whose bytes are not what its name says (a bad copy, a bit flip at rest).
    let sha = hex::encode(Sha256::digest(b"the real droplet"));
    let key = format!("suite/paas/blobs/{}/{sha}", &sha[..2]);
    let moto = b.moto.as_ref().unwrap();
    let status = moto.request(reqwest::Method::PUT, &key, b"tampered".to_vec());
    assert!(status.is_success(), "{status}");
    assert!(matches!(b.blobs.path(&sha), Err(BlobError::Corrupt(_))));
    assert!(tmp_is_empty(b.dir.path()));
    assert!(!b
        .dir
        .path()
        .join("blob-cache")
        .join(&sha[..2])
        .join(&sha)
        .exists());
}

#[test]
fn s3_unreachable_or_missing_bucket_fails_at_start() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = moto.bucket("exists");
    config.url = Some(format!(
        "s3://missing/x?endpoint={}&region=us-east-1",
        moto.url()
    ));
    assert!(Blobstore::connect(dir.path(), &config).is_err());
}
