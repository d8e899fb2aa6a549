//! The store's half of issue 18 on a real SQLite file: an app is created with its space in one
//! transaction and cannot exist without one, a host belongs to one space, and the base image
//! allow-list.

use chrono::Utc;
use paas_common::api::AppState;
use paas_server::store::prelude::*;
use paas_server::store::{AppRecord, Event, SqliteStore, StoreError};

mod store_support;

store_suite!(
    an_app_is_created_in_its_space_or_not_at_all,
    a_host_belongs_to_the_space_that_maps_it_first,
    base_images_are_allowed_and_disallowed_by_name,
    a_recreated_name_inherits_no_drains_and_no_events,
    a_private_domain_keeps_other_spaces_out,
);

fn ev(kind: &str) -> Event {
    Event {
        app_name: None,
        app_id: None,
        actor: "t".into(),
        kind: kind.into(),
        message: kind.into(),
    }
}

fn app(id: &str, name: &str) -> AppRecord {
    let now = Utc::now();
    AppRecord {
        id: id.into(),
        name: name.into(),
        state: AppState::Started,
        desired_instances: 1,
        memory_mb: 64,
        disk_mb: 256,
        current_revision: None,
        created_at: now,
        updated_at: now,
        space_id: String::new(),
        host: Some(name.into()),
    }
}

async fn an_app_is_created_in_its_space_or_not_at_all(store: &dyn Store) {
    // The migration made the default space, so every app from before has one to go to.
    let default = store.space("default", "default", false).await.unwrap();
    let space = store.space("acme", "prod", true).await.unwrap().unwrap();
    store
        .create_app(
            &AppRecord {
                space_id: space.id.clone(),
                ..app("a1", "shop").clone()
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
    assert_eq!(
        store.app_space("a1").await.unwrap().as_deref(),
        Some(space.id.as_str())
    );
    assert!(default.is_some());
    // A space that does not exist is refused, and no app row is left behind.
    let err = store
        .create_app(
            &AppRecord {
                space_id: "no-such-space".to_string(),
                ..app("a2", "cart").clone()
            },
            &ev("app.create"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
    assert!(store.apps_named("cart").await.unwrap().is_empty());
    // A name is unique within its space ...
    let err = store
        .create_app(
            &AppRecord {
                space_id: space.id.clone(),
                host: None,
                ..app("a3", "shop")
            },
            &ev("app.create"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // ... and another space may have its own app of that name, with another default host.
    let other = store.space("acme", "dev", true).await.unwrap().unwrap();
    let err = store
        .create_app(
            &AppRecord {
                space_id: other.id.clone(),
                host: Some("shop".into()),
                ..app("a4", "shop")
            },
            &ev("app.create"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(_)),
        "a default host is taken once: {err:?}"
    );
    store
        .create_app(
            &AppRecord {
                space_id: other.id.clone(),
                host: Some("shop-dev".into()),
                ..app("a4", "shop")
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
    assert_eq!(store.apps_named("shop").await.unwrap().len(), 2);
    assert_eq!(
        store
            .app_in_space(&other.id, "shop")
            .await
            .unwrap()
            .map(|a| a.id)
            .as_deref(),
        Some("a4")
    );
    assert_eq!(
        store
            .app_by_host("shop")
            .await
            .unwrap()
            .map(|a| a.id)
            .as_deref(),
        Some("a1")
    );
}

async fn a_host_belongs_to_the_space_that_maps_it_first(store: &dyn Store) {
    let a = store.space("acme", "a", true).await.unwrap().unwrap();
    let b = store.space("acme", "b", true).await.unwrap().unwrap();
    store
        .create_app(
            &AppRecord {
                space_id: a.id.clone(),
                ..app("a1", "shop").clone()
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
    store
        .create_app(
            &AppRecord {
                space_id: a.id.clone(),
                ..app("a2", "shop2").clone()
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
    store
        .create_app(
            &AppRecord {
                space_id: b.id.clone(),
                ..app("b1", "evil").clone()
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
    store
        .add_route("a1", "shop.example.com", "", &ev("route.map"))
        .await
        .unwrap();
    // Another app of the same space may map a path under it ...
    store
        .add_route("a2", "shop.example.com", "/api", &ev("route.map"))
        .await
        .unwrap();
    // ... another space may not, whole or in part.
    for path in ["", "/checkout"] {
        let err = store
            .add_route("b1", "shop.example.com", path, &ev("route.map"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{path}: {err:?}");
    }
    // Once the host is free again, anyone may take it.
    store
        .delete_route("a1", "shop.example.com", "", &ev("route.unmap"))
        .await
        .unwrap();
    store
        .delete_route("a2", "shop.example.com", "/api", &ev("route.unmap"))
        .await
        .unwrap();
    store
        .add_route("b1", "shop.example.com", "/checkout", &ev("route.map"))
        .await
        .unwrap();
}

async fn a_private_domain_keeps_other_spaces_out(store: &dyn Store) {
    let a = store.space("acme", "prod", true).await.unwrap().unwrap();
    let b = store.space("evil", "dev", true).await.unwrap().unwrap();
    for (id, name, space) in [("a1", "shop", &a), ("b1", "evil", &b)] {
        store
            .create_app(
                &AppRecord {
                    space_id: space.id.clone(),
                    ..app(id, name)
                },
                &ev("app.create"),
            )
            .await
            .unwrap();
    }
    store
        .create_domain("example.com", &a.id, &ev("domain.create"))
        .await
        .unwrap();
    // The same domain, one above or below it: not for another space; below it for its own.
    for name in ["example.com", "api.example.com", "com.example.com"] {
        let err = store
            .create_domain(name, &b.id, &ev("domain.create"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{name}: {err:?}");
    }
    store
        .create_domain("eu.example.com", &a.id, &ev("domain.create"))
        .await
        .unwrap();
    // Only the owner's apps map hosts under it (the host itself too); a name that merely ends
    // the same way is another domain.
    for host in ["example.com", "www.example.com", "x.eu.example.com"] {
        let err = store
            .add_route("b1", host, "/x", &ev("route.map"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{host}: {err:?}");
    }
    store
        .add_route("b1", "badexample.com", "", &ev("route.map"))
        .await
        .unwrap();
    store
        .add_route("a1", "www.example.com", "", &ev("route.map"))
        .await
        .unwrap();
    store
        .set_route_options("a1", "www.example.com", "", true, true)
        .await
        .unwrap();
    let r = store
        .list_routes()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.host == "www.example.com")
        .unwrap();
    assert!(r.https_redirect && r.hsts);
    // In use: not deleted.
    let err = store
        .delete_domain("example.com", &ev("domain.delete"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // A certificate is kept with its domain.
    store
        .set_domain_certificate(
            "example.com",
            &paas_server::store::NewCertificate {
                chain_pem: "PEM".into(),
                sealed_key: "sealed".into(),
                names: vec!["*.example.com".into()],
                source: paas_server::store::CERT_MANUAL,
            },
            &ev("domain.certificate"),
        )
        .await
        .unwrap();
    let d = store.list_domains().await.unwrap();
    assert_eq!(
        d.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["eu.example.com", "example.com"]
    );
    assert_eq!(d[1].space, "acme/prod");
    assert_eq!(d[1].certificate.as_deref(), Some("PEM"));
    assert_eq!(d[1].private_key.as_deref(), Some("sealed"));
    assert_eq!(d[1].cert_names, ["*.example.com"]);
    // Another space already serving a host under a name: that name cannot become a domain.
    let err = store
        .create_domain("badexample.com", &a.id, &ev("domain.create"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    store
        .delete_route("a1", "www.example.com", "", &ev("route.unmap"))
        .await
        .unwrap();
    store
        .delete_domain("example.com", &ev("domain.delete"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .delete_domain("example.com", &ev("domain.delete"))
            .await
            .unwrap_err(),
        StoreError::NotFound(_)
    ));
}

async fn base_images_are_allowed_and_disallowed_by_name(store: &dyn Store) {
    store
        .add_base_image("alpine:3.20", "admin", &ev("base_image.allow"))
        .await
        .unwrap();
    // Allowing twice is harmless.
    store
        .add_base_image("alpine:3.20", "admin", &ev("base_image.allow"))
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_base_images()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(names, ["alpine:3.20"]);
    store
        .delete_base_image("alpine:3.20", &ev("base_image.disallow"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .delete_base_image("alpine:3.20", &ev("base_image.disallow"))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

/// Migration 0019 on a database from before it: an app without a space (a failed or streamed
/// first push) goes to `default/default` with an event, and no row without a space can be
/// written any more.
#[tokio::test]
async fn the_migration_places_spaceless_apps_and_then_refuses_them() {
    use sqlx::sqlite::SqliteConnectOptions;
    use std::str::FromStr;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("paas.db");
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let mut before = sqlx::migrate::Migrator::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite"),
    )
    .await
    .unwrap();
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 19)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&pool).await.unwrap();
    for sql in [
        "INSERT INTO apps (id, name, state, desired_instances, memory_mb, disk_mb, created_at, updated_at)
         VALUES ('orphan-1', 'orphan', 'started', 1, 64, 256, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
        // What hangs off the app must survive the rebuild of the apps table (migration 0020).
        "INSERT INTO revisions (app_id, number, package, droplet, command, detected, created_at)
         VALUES ('orphan-1', 1, 'p', 'd', 'c', 'x', '2026-01-01T00:00:00Z')",
        "INSERT INTO log_entries (app_name, id, ts, source, stream, message)
         VALUES ('orphan', 1, 1, 'APP/web/0', 'out', 'hello'), ('gone', 2, 1, 'APP', 'out', 'x')",
        "INSERT INTO log_drains (app_name, url, created_at)
         VALUES ('orphan', 'syslog://sink:514', '2026-01-01T00:00:00Z')",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let default = store
        .space("default", "default", false)
        .await
        .unwrap()
        .expect("the migration made the default space");
    assert_eq!(
        store.app_space("orphan-1").await.unwrap().as_deref(),
        Some(default.id.as_str())
    );
    let events = store.recent_events("orphan-1", 10).await.unwrap();
    assert!(
        events
            .iter()
            .any(|(_, e)| e.kind == "app.space" && e.message.contains("default/default")),
        "{events:?}"
    );
    // Migration 0020: the table was rebuilt without losing what hangs off it; lines and drains
    // follow the app's id; its default host is its name.
    assert!(store.revision("orphan-1", 1).await.unwrap().is_some());
    let app = store.app_by_id("orphan-1").await.unwrap().unwrap();
    assert_eq!(app.host.as_deref(), Some("orphan"));
    assert_eq!(app.space_id, default.id);
    let lines = store.recent_logs("orphan-1", 10).await.unwrap();
    assert_eq!(
        lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>(),
        ["hello"]
    );
    assert_eq!(
        store.list_log_drains().await.unwrap(),
        [("orphan-1".to_string(), "syslog://sink:514".to_string())]
    );
    store.close().await;
    // Opening again finds nothing left to rebuild.
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(store.revision("orphan-1", 1).await.unwrap().is_some());
    store.close().await;

    // Nothing writes a row without a space from now on.
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap();
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let err = sqlx::query(
        "INSERT INTO apps (id, name, state, desired_instances, memory_mb, disk_mb, created_at, updated_at)
         VALUES ('orphan-2', 'orphan2', 'started', 1, 64, 256, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
    )
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("NOT NULL"), "{err}");
    let err = sqlx::query("UPDATE apps SET space_id = NULL WHERE id = 'orphan-1'")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NOT NULL"), "{err}");
}

/// A name another space used before starts a new history: its drains went with the old app
/// (they would forward the new app's logs to the old owner's sink), and its event list starts at
/// the new `app.create`.
async fn a_recreated_name_inherits_no_drains_and_no_events(store: &dyn Store) {
    use paas_server::store::EventFilter;
    let a = store.space("acme", "a", true).await.unwrap().unwrap();
    let b = store.space("acme", "b", true).await.unwrap().unwrap();
    let app_ev = |id: &str, kind: &str| Event {
        app_name: Some("shop".into()),
        app_id: Some(id.into()),
        ..ev(kind)
    };
    store
        .create_app(
            &AppRecord {
                space_id: a.id.clone(),
                ..app("a1", "shop").clone()
            },
            &app_ev("a1", "app.create"),
        )
        .await
        .unwrap();
    store
        .add_log_drain(
            "a1",
            "syslog://sink.a:514",
            &app_ev("a1", "app.log_drain.add"),
        )
        .await
        .unwrap();
    store
        .delete_app("a1", &app_ev("a1", "app.delete"))
        .await
        .unwrap();
    assert!(store.list_log_drains().await.unwrap().is_empty());
    store
        .create_app(
            &AppRecord {
                space_id: b.id.clone(),
                ..app("b1", "shop").clone()
            },
            &app_ev("b1", "app.create"),
        )
        .await
        .unwrap();
    let filter = EventFilter {
        app_id: Some("b1".into()),
        actor: None,
        since_id: store.app_created_event("b1").await.unwrap(),
    };
    let kinds: Vec<String> = store
        .list_events(&filter, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.kind)
        .collect();
    assert_eq!(kinds, ["app.create"]);
    assert_eq!(store.count_events(&filter).await.unwrap(), 1);
}
