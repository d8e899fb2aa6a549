//! The store's lifecycle methods on a real SQLite file: settings updates and which of them roll,
//! rows marked for replacement, and node states that heartbeats and re-registration must keep.

use chrono::Utc;
use paas_common::agent::{HealthCheck, HealthSettings, NodeCapacity};
use paas_common::api::{AppState, InstanceState};
use paas_server::store::{
    AppRecord, AppUpdate, Event, InstanceRecord, NodeRecord, Store, StoreError,
};
use std::collections::BTreeMap;

mod store_support;

store_suite!(
    scaling_keeps_instances_and_memory_or_health_changes_roll,
    restart_marks_rows_and_draining_survives_heartbeats,
    new_placement_labels_roll_and_reports_keep_readiness,
);

fn ev(kind: &str) -> Event {
    Event {
        app_name: Some("web".into()),
        app_id: Some("app-1".into()),
        actor: "admin".into(),
        kind: kind.into(),
        message: kind.into(),
    }
}

async fn setup(store: &dyn Store) -> AppRecord {
    let now = Utc::now();
    let app = AppRecord {
        id: "app-1".into(),
        name: "web".into(),
        state: AppState::Started,
        desired_instances: 2,
        memory_mb: 128,
        disk_mb: 512,
        current_revision: Some(1),
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
            &ev("app.create"),
        )
        .await
        .unwrap();
    for i in 0..2u32 {
        store
            .insert_instance(&InstanceRecord {
                id: format!("i{i}"),
                app_id: app.id.clone(),
                revision: 1,
                process_type: "web".into(),
                index: i,
                node_name: Some("n1".into()),
                state: InstanceState::Running,
                container_id: None,
                host_port: None,
                restarts: 0,
                last_exit: None,
                placement_error: None,
                since: now,
                created_at: now,
                ready: true,
            })
            .await
            .unwrap();
    }
    app
}

async fn scaling_keeps_instances_and_memory_or_health_changes_roll(store: &dyn Store) {
    let app = setup(store).await;
    let lc = store
        .app_lifecycles()
        .await
        .unwrap()
        .remove(&app.id)
        .unwrap();
    assert_eq!((lc.max_in_flight, lc.health.clone()), (1, None));

    let rolled = store
        .update_app(
            &app.id,
            &AppUpdate {
                desired_instances: Some(5),
                ..Default::default()
            },
            &ev("app.scale"),
        )
        .await
        .unwrap();
    assert!(!rolled, "scaling instances replaces nothing");
    assert!(store.retiring_instances().await.unwrap().is_empty());
    assert_eq!(
        store
            .app_by_id(&app.id)
            .await
            .unwrap()
            .unwrap()
            .desired_instances,
        5
    );

    // Same memory: no roll. New memory: every row marked.
    let same = AppUpdate {
        memory_mb: Some(128),
        ..Default::default()
    };
    assert!(!store
        .update_app(&app.id, &same, &ev("app.scale"))
        .await
        .unwrap());
    let more = AppUpdate {
        memory_mb: Some(256),
        max_in_flight: Some(2),
        ..Default::default()
    };
    assert!(store
        .update_app(&app.id, &more, &ev("app.scale"))
        .await
        .unwrap());
    assert_eq!(store.retiring_instances().await.unwrap().len(), 2);

    let health = HealthSettings {
        check: HealthCheck::Http {
            endpoint: "/h".into(),
        },
        ..Default::default()
    };
    let labels: BTreeMap<String, String> = [("disk".to_string(), "ssd".to_string())].into();
    let u = AppUpdate {
        health: Some(health.clone()),
        placement_labels: Some(labels.clone()),
        ..Default::default()
    };
    assert!(
        store
            .update_app(&app.id, &u, &ev("app.scale"))
            .await
            .unwrap(),
        "a new health check rolls"
    );
    assert!(
        !store
            .update_app(&app.id, &u, &ev("app.scale"))
            .await
            .unwrap(),
        "the same one does not"
    );
    let lc = store
        .app_lifecycles()
        .await
        .unwrap()
        .remove(&app.id)
        .unwrap();
    assert_eq!(
        (lc.max_in_flight, lc.health, lc.placement_labels),
        (2, Some(health), labels)
    );
    let events = store.recent_events("app-1", 100).await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|(_, e)| e.kind == "app.scale" && e.actor == "admin")
            .count(),
        5
    );

    let missing = store
        .update_app("nope", &AppUpdate::default(), &ev("x"))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

async fn restart_marks_rows_and_draining_survives_heartbeats(store: &dyn Store) {
    let app = setup(store).await;
    // A worker with the same index as a web row: restarting web 1 must leave it alone.
    let now = Utc::now();
    store
        .insert_instance(&InstanceRecord {
            id: "w1".into(),
            app_id: app.id.clone(),
            revision: 1,
            process_type: "worker".into(),
            index: 1,
            node_name: Some("n1".into()),
            state: InstanceState::Running,
            container_id: None,
            host_port: None,
            restarts: 0,
            last_exit: None,
            placement_error: None,
            ready: true,
            since: now,
            created_at: now,
        })
        .await
        .unwrap();
    let retiring = || async move {
        let mut ids: Vec<String> = store
            .retiring_instances()
            .await
            .unwrap()
            .into_iter()
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        store
            .retire_instances(&app.id, Some(("web", 1)), &ev("instance.restart"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(retiring().await, ["i1"]);
    assert_eq!(
        store
            .retire_instances(&app.id, Some(("worker", 1)), &ev("instance.restart"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(retiring().await, ["i1", "w1"]);
    assert_eq!(
        store
            .retire_instances(&app.id, Some(("clock", 0)), &ev("instance.restart"))
            .await
            .unwrap(),
        0,
        "no row of another type"
    );
    assert_eq!(
        store
            .retire_instances(&app.id, None, &ev("app.restart"))
            .await
            .unwrap(),
        3
    );

    let cap = NodeCapacity {
        memory_mb: 1024,
        disk_mb: 1024,
        instance_slots: 8,
    };
    let node = NodeRecord {
        name: "n1".into(),
        address: "127.0.0.1".into(),
        zone: "z".into(),
        labels: BTreeMap::new(),
        capacity: cap.clone(),
        token_hash: "h".into(),
        state: "ready".into(),
        last_heartbeat: Utc::now(),
        registered_at: Utc::now(),
    };
    store.upsert_node(&node).await.unwrap();
    store
        .set_node_state("n1", "draining", &ev("node.drain"))
        .await
        .unwrap();
    store.heartbeat_node("n1", &cap, Utc::now()).await.unwrap();
    assert_eq!(
        store.list_nodes().await.unwrap()[0].state,
        "draining",
        "a heartbeat does not undo a drain"
    );
    store.upsert_node(&node).await.unwrap();
    assert_eq!(
        store.list_nodes().await.unwrap()[0].state,
        "draining",
        "nor does re-registration"
    );
    store
        .set_node_state("n1", "lost", &ev("node.lost"))
        .await
        .unwrap();
    store.heartbeat_node("n1", &cap, Utc::now()).await.unwrap();
    assert_eq!(
        store.list_nodes().await.unwrap()[0].state,
        "ready",
        "a lost node that beats again is ready"
    );
    assert!(matches!(
        store.set_node_state("nope", "draining", &ev("x")).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn new_placement_labels_roll_and_reports_keep_readiness(store: &dyn Store) {
    let app = setup(store).await;
    let labels = |v: &str| -> BTreeMap<String, String> { [("disk".to_string(), v.into())].into() };
    let u = |v: &str| AppUpdate {
        placement_labels: Some(labels(v)),
        ..Default::default()
    };
    assert!(
        store
            .update_app(&app.id, &u("ssd"), &ev("app.scale"))
            .await
            .unwrap(),
        "new labels move the instances"
    );
    assert_eq!(store.retiring_instances().await.unwrap().len(), 2);
    assert!(!store
        .update_app(&app.id, &u("ssd"), &ev("app.scale"))
        .await
        .unwrap());

    // A report replaces the row's state and readiness, and answers what it replaced.
    let report = paas_common::agent::InstanceReport {
        instance_id: "i0".into(),
        state: InstanceState::Running,
        container_id: Some("c0".into()),
        host_port: Some(61000),
        restarts: 0,
        last_exit: None,
        since: Utc::now(),
        usage: None,
        ready: false,
        ip: None,
    };
    let before = store.report_instance("n1", &report).await.unwrap().unwrap();
    assert_eq!(
        (before.app_name.as_str(), before.index, before.ready),
        ("web", 0, true)
    );
    assert!(before.routing_changed(&report));
    let row = store
        .app_instances(&app.id)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == "i0")
        .unwrap();
    assert!(!row.ready);
    let again = store.report_instance("n1", &report).await.unwrap().unwrap();
    assert!(!again.routing_changed(&report), "nothing new");
    assert!(
        store
            .report_instance("n2", &report)
            .await
            .unwrap()
            .is_none(),
        "another node's report of the row is ignored"
    );
}
