//! The store's process and buildpack methods on a real SQLite file (issue 3): per-type settings
//! and which changes roll that type's instances only, droplet process commands, and operator
//! buildpacks in order, with their blobs kept by collection.

use chrono::Utc;
use paas_common::api::AppState;
use paas_server::blobstore::Blobstore;
use paas_server::store::{AppRecord, Event, InstanceRecord, ProcessRecord, Store, StoreError};
use std::collections::BTreeMap;
use std::io::Write;

mod store_support;

store_suite!(process_settings_roll_only_their_type_and_buildpacks_keep_order_and_blobs,);

fn ev() -> Event {
    Event {
        app_name: Some("web".into()),
        app_id: None,
        actor: "admin".into(),
        kind: "k".into(),
        message: "m".into(),
    }
}

fn row(id: &str, process_type: &str) -> InstanceRecord {
    let now = Utc::now();
    InstanceRecord {
        since: now,
        created_at: now,
        ready: true,
        ..InstanceRecord::pending(id.into(), "app-1".into(), 1, process_type.into(), 0)
    }
}

async fn process_settings_roll_only_their_type_and_buildpacks_keep_order_and_blobs(
    store: &dyn Store,
) {
    let now = Utc::now();
    let app = AppRecord {
        id: "app-1".into(),
        name: "web".into(),
        state: AppState::Started,
        desired_instances: 1,
        memory_mb: 128,
        disk_mb: 256,
        current_revision: None,
        created_at: now,
        updated_at: now,
        space_id: String::new(),
        host: None,
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
            &ev(),
        )
        .await
        .unwrap();
    store.insert_instance(&row("w", "web")).await.unwrap();
    store.insert_instance(&row("k", "worker")).await.unwrap();

    // Instances only: nothing rolls.
    let rec = ProcessRecord {
        instances: 3,
        ..ProcessRecord::default_for("worker")
    };
    assert!(!store.upsert_process("app-1", &rec, &ev()).await.unwrap());
    assert!(store.retiring_instances().await.unwrap().is_empty());
    // Memory: the worker's instances roll, web's do not.
    let rec = ProcessRecord {
        memory_mb: Some(64),
        ..rec
    };
    assert!(store.upsert_process("app-1", &rec, &ev()).await.unwrap());
    let retiring = store.retiring_instances().await.unwrap();
    assert!(
        retiring.contains("k") && !retiring.contains("w"),
        "{retiring:?}"
    );
    assert_eq!(store.app_processes().await.unwrap()["app-1"], [rec]);

    let cmds: BTreeMap<String, String> = [
        ("web".to_string(), "serve".to_string()),
        ("worker".into(), "work".into()),
    ]
    .into();
    store.set_droplet_processes("d1", &cmds).await.unwrap();
    assert_eq!(store.droplet_processes().await.unwrap()["d1"], cmds);

    // Buildpacks: in the order added; a name once; blobs kept by collection.
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobstore::open(dir.path()).unwrap();
    let mut w = blobs.writer().unwrap();
    w.write_all(b"a buildpack tar").unwrap();
    let (sha, _) = blobs.commit(w).unwrap();
    store
        .add_buildpack("zeta", &sha, "admin", &ev())
        .await
        .unwrap();
    store
        .add_buildpack("alpha", &sha, "admin", &ev())
        .await
        .unwrap();
    assert!(matches!(
        store.add_buildpack("zeta", &sha, "admin", &ev()).await,
        Err(StoreError::Conflict(_))
    ));
    let names: Vec<String> = store
        .list_buildpacks()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["zeta", "alpha"]);
    let r = paas_server::droplets::collect(store, &blobs, 1, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(blobs.exists(&sha), "{r:?}");
    store.delete_buildpack("zeta", &ev()).await.unwrap();
    assert!(matches!(
        store.delete_buildpack("zeta", &ev()).await,
        Err(StoreError::NotFound(_))
    ));
}
