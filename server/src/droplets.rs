//! Droplet and package retention: an app keeps the blobs of its newest `keep_droplets` revisions
//! and of its current one, so a rollback to any of those needs no rebuild; every other blob of
//! the blobstore older than a grace period is collected. The grace period protects a push in
//! flight, whose blobs are committed a moment before the revision that names them.
//!
//! Only the controller's own blobstore is walked (blobs named by their sha256 under
//! `<2 hex>/`, in `blobs/` or the S3 bucket's prefix); nothing outside it is ever removed here.
//! With S3, the local cache of each controller is trimmed the same way. Engine images are the nodes'
//! business: a Dockerfile droplet's image is listed to every node by [`collected_images`] once
//! its droplet blob is collected, and a node removes it only if it carries the platform's image
//! label and no container uses it.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use crate::blobstore::{BlobError, Blobstore};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// What one collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub kept: usize,
    pub deleted: Vec<String>,
}

/// The blobs to keep: droplet and package of each app's newest `keep` revisions and its current.
pub async fn kept_blobs(store: &dyn Store, keep: usize) -> Result<HashSet<String>, StoreError> {
    let current: std::collections::HashMap<String, Option<i64>> = store
        .list_apps()
        .await?
        .into_iter()
        .map(|a| (a.id, a.current_revision))
        .collect();
    let mut revisions = store.list_revisions().await?;
    // Newest first within each app.
    revisions.sort_by(|a, b| a.app_id.cmp(&b.app_id).then(b.number.cmp(&a.number)));
    // Files of the incremental-upload cache stay: a later push refers to them.
    let mut out: HashSet<String> = store.cached_file_blobs().await?.into_iter().collect();
    // Operator-added buildpacks live in the blobstore too.
    out.extend(store.list_buildpacks().await?.into_iter().map(|b| b.blob));
    let mut seen_in_app: Option<(String, usize)> = None;
    for r in revisions {
        let rank = match &mut seen_in_app {
            Some((app, n)) if *app == r.app_id => {
                *n += 1;
                *n
            }
            _ => {
                seen_in_app = Some((r.app_id.clone(), 0));
                0
            }
        };
        let is_current = current.get(&r.app_id).copied().flatten() == Some(r.number);
        if rank < keep || is_current {
            out.insert(r.droplet);
            out.insert(r.package);
        }
    }
    Ok(out)
}

/// Deletes every blob not kept and not modified within `grace`.
#[tracing::instrument(skip(store, blobs))]
pub async fn collect(
    store: &dyn Store,
    blobs: &Blobstore,
    keep: usize,
    grace: Duration,
) -> Result<GcReport, GcError> {
    let kept = kept_blobs(store, keep).await?;
    // The S3 backend blocks on its requests: keep them off the async threads.
    let blobs = blobs.clone();
    let report = tokio::task::spawn_blocking(move || sweep(&blobs, &kept, grace))
        .await
        .map_err(|_| BlobError::Stopped)??;
    if !report.deleted.is_empty() {
        tracing::info!(
            deleted = report.deleted.len(),
            kept = report.kept,
            "collected old droplets and packages"
        );
    }
    Ok(report)
}

fn sweep(
    blobs: &Blobstore,
    kept: &HashSet<String>,
    grace: Duration,
) -> Result<GcReport, BlobError> {
    let now = SystemTime::now();
    let mut report = GcReport {
        kept: kept.len(),
        deleted: Vec::new(),
    };
    for (sha, modified) in blobs.list()? {
        if kept.contains(&sha) {
            continue;
        }
        let age = now.duration_since(modified).unwrap_or_default();
        if age < grace {
            continue;
        }
        blobs.delete(&sha)?;
        report.deleted.push(sha);
    }
    blobs.evict_cache(kept, grace)?;
    Ok(report)
}

/// Images of Dockerfile droplets whose blob was collected. A `droplet_images` row is written only
/// after its blob is durable, and blobs go only by collection, so a row without its blob names an
/// image no kept revision can need. One image can back two droplets (the engine's build cache
/// gives the same files the same image): it is listed only when none of them is kept.
pub async fn collected_images(
    store: &dyn Store,
    blobs: &Blobstore,
) -> Result<Vec<String>, StoreError> {
    let images = store.droplet_images().await?;
    let kept: HashSet<&str> = images
        .iter()
        .filter(|(droplet, _)| blobs.exists(droplet))
        .map(|(_, i)| i.id.as_str())
        .collect();
    let mut out: Vec<String> = images
        .values()
        .filter(|i| !kept.contains(i.id.as_str()))
        .map(|i| i.id.clone())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// How long a blob is safe from collection after it was written.
pub const GRACE: Duration = Duration::from_secs(600);

/// Runs [`collect`] in the background after a new revision; a failure is logged, never fatal.
pub fn collect_soon(ctx: &crate::state::AppCtx) {
    let store = ctx.store.clone();
    let blobs = ctx.blobs.clone();
    let keep = ctx.settings.keep_droplets;
    tokio::spawn(async move {
        if let Err(e) = collect(store.as_ref(), &blobs, keep, GRACE).await {
            tracing::warn!(error = %e, "droplet collection failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::prelude::*;
    use crate::store::{AppRecord, Event, NewRevision, RevisionExtra, SqliteStore};
    use chrono::Utc;
    use paas_common::api::AppState;
    use std::io::Write;

    fn put(blobs: &Blobstore, bytes: &[u8]) -> String {
        let mut w = blobs.writer().unwrap();
        w.write_all(bytes).unwrap();
        blobs.commit(w).unwrap().0
    }

    #[tokio::test]
    async fn keeps_the_newest_n_and_the_current_and_collects_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        let blobs = Blobstore::open(dir.path()).unwrap();
        let now = Utc::now();
        let app = AppRecord {
            id: "a1".into(),
            name: "gc".into(),
            state: AppState::Started,
            desired_instances: 1,
            memory_mb: 64,
            disk_mb: 256,
            current_revision: None,
            created_at: now,
            updated_at: now,
            space_id: String::new(),
            host: None,
        };
        let ev = Event {
            app_name: Some("gc".into()),
            app_id: None,
            actor: "t".into(),
            kind: "k".into(),
            message: "m".into(),
        };
        let space = store
            .space("default", "default", true)
            .await
            .unwrap()
            .unwrap();
        store
            .create_app(
                &AppRecord {
                    space_id: space.id.clone(),
                    ..app.clone()
                },
                &ev,
            )
            .await
            .unwrap();
        // A file that is not a blob must survive any collection.
        std::fs::write(dir.path().join("blobs").join("README"), "not a blob").unwrap();
        let mut shas = Vec::new();
        for i in 0..4 {
            let package = put(&blobs, format!("package {i}").as_bytes());
            let droplet = put(&blobs, format!("droplet {i}").as_bytes());
            let rev = NewRevision {
                package: package.clone(),
                droplet: droplet.clone(),
                command: "run".into(),
                detected: "python".into(),
                desired_instances: 1,
                memory_mb: 64,
            };
            store
                .deploy_revision_with("a1", &rev, &RevisionExtra::default(), &ev)
                .await
                .unwrap();
            shas.push((package, droplet));
        }
        let unrelated = put(&blobs, b"an upload that never became a revision");

        // Within the grace period nothing goes, kept or not.
        let r = collect(&store, &blobs, 2, Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(r.deleted.is_empty());

        let r = collect(&store, &blobs, 2, Duration::ZERO).await.unwrap();
        assert_eq!(r.deleted.len(), 5, "{r:?}");
        for (i, (p, d)) in shas.iter().enumerate() {
            let kept = i >= 2;
            assert_eq!(blobs.exists(p), kept, "package {i}");
            assert_eq!(blobs.exists(d), kept, "droplet {i}");
        }
        assert!(!blobs.exists(&unrelated));
        assert!(dir.path().join("blobs").join("README").exists());

        // A rolled-back-to revision is current again: it stays even beyond the newest N.
        let (p0, d0) = (put(&blobs, b"package 0"), put(&blobs, b"droplet 0"));
        let rev = NewRevision {
            package: p0.clone(),
            droplet: d0.clone(),
            command: "run".into(),
            detected: "python".into(),
            desired_instances: 1,
            memory_mb: 64,
        };
        store
            .deploy_revision_with("a1", &rev, &RevisionExtra::default(), &ev)
            .await
            .unwrap();
        // Dockerfile droplets: revision 4's droplet is an image, and an image built again into
        // a droplet that is still kept (the same image id) must not be listed.
        let image = |id: &str| paas_common::agent::DropletImage {
            id: id.into(),
            port: 8080,
            user: "2000:2000".into(),
        };
        store
            .set_droplet_image(&shas[3].1, &image("sha256:four"))
            .await
            .unwrap();
        store
            .set_droplet_image(&shas[2].1, &image("sha256:three"))
            .await
            .unwrap();
        store
            .set_droplet_image(&d0, &image("sha256:four"))
            .await
            .unwrap();
        let r = collect(&store, &blobs, 1, Duration::ZERO).await.unwrap();
        assert!(blobs.exists(&p0) && blobs.exists(&d0), "{r:?}");
        assert_eq!(
            collected_images(&store, &blobs).await.unwrap(),
            ["sha256:three"],
            "revision 3's image goes; revision 4's image also backs the kept revision 5"
        );
        assert!(
            !blobs.exists(&shas[2].1),
            "revision 3 is neither newest nor current"
        );
    }
}
