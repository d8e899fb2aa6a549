//! The store's networking part on both backends (issue 25): a policy is added once (the same one
//! again is a conflict), listed, removed once with its event, and goes with its app; the address
//! a node reports for an instance is kept with the rest of its report; a node's subnet is kept.

use chrono::Utc;
use paas_common::agent::{InstanceReport, NodeCapacity};
use paas_common::api::{AppState, InstanceState};
use paas_server::store::{
    AppRecord, Event, InstanceRecord, NodeRecord, PolicyRecord, Store, StoreError,
};

mod store_support;

store_suite!(policies_addresses_and_subnets);

fn ev(kind: &str) -> Event {
    Event {
        app_name: Some("b".into()),
        app_id: Some("app-b".into()),
        actor: "admin".into(),
        kind: kind.into(),
        message: "a -> b tcp 8080".into(),
    }
}

async fn app(store: &dyn Store, id: &str, space: &str) {
    let now = Utc::now();
    store
        .create_app(
            &AppRecord {
                id: id.into(),
                name: id.trim_start_matches("app-").into(),
                state: AppState::Started,
                desired_instances: 1,
                memory_mb: 128,
                disk_mb: 256,
                current_revision: None,
                created_at: now,
                updated_at: now,
                space_id: space.into(),
                host: None,
            },
            &ev("app.create"),
        )
        .await
        .unwrap();
}

async fn policies_addresses_and_subnets(store: &dyn Store) {
    let space = store
        .space("default", "default", true)
        .await
        .unwrap()
        .unwrap();
    app(store, "app-a", &space.id).await;
    app(store, "app-b", &space.id).await;
    let policy = PolicyRecord {
        id: "p1".into(),
        source_app_id: "app-a".into(),
        destination_app_id: "app-b".into(),
        protocol: "tcp".into(),
        start_port: 8080,
        end_port: 8090,
        created_by: "admin".into(),
        created_at: Utc::now(),
    };
    store
        .add_policy(&policy, &ev("network_policy.add"))
        .await
        .unwrap();
    let again = PolicyRecord {
        id: "p2".into(),
        ..policy.clone()
    };
    assert!(matches!(
        store.add_policy(&again, &ev("network_policy.add")).await,
        Err(StoreError::Conflict(_))
    ));
    let listed = store.list_policies().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].start_port, listed[0].end_port), (8080, 8090));
    assert!(!store
        .remove_policy(
            "app-a",
            "app-b",
            "tcp",
            (8080, 8080),
            &ev("network_policy.remove")
        )
        .await
        .unwrap());
    assert!(store
        .remove_policy(
            "app-a",
            "app-b",
            "tcp",
            (8080, 8090),
            &ev("network_policy.remove")
        )
        .await
        .unwrap());
    assert!(store.list_policies().await.unwrap().is_empty());
    store
        .add_policy(&policy, &ev("network_policy.add"))
        .await
        .unwrap();

    // The node's subnet, and an instance's address as its report says.
    let now = Utc::now();
    store
        .upsert_node(&NodeRecord {
            name: "n1".into(),
            address: "127.0.0.1".into(),
            zone: "z".into(),
            labels: Default::default(),
            capacity: NodeCapacity {
                memory_mb: 1024,
                disk_mb: 1024,
                instance_slots: 10,
            },
            token_hash: "h".into(),
            state: "ready".into(),
            last_heartbeat: now,
            registered_at: now,
        })
        .await
        .unwrap();
    store
        .set_node_subnet("n1", Some("172.30.0.0/16"))
        .await
        .unwrap();
    assert_eq!(
        store
            .node_subnets()
            .await
            .unwrap()
            .get("n1")
            .map(String::as_str),
        Some("172.30.0.0/16")
    );
    let mut row = InstanceRecord::pending("i1".into(), "app-b".into(), 1, "web".into(), 0);
    row.node_name = Some("n1".into());
    store.insert_instance(&row).await.unwrap();
    assert!(store.instance_ips().await.unwrap().is_empty());
    let report = InstanceReport {
        instance_id: "i1".into(),
        state: InstanceState::Running,
        container_id: Some("c1".into()),
        host_port: Some(40000),
        restarts: 0,
        last_exit: None,
        since: now,
        usage: None,
        ready: true,
        ip: Some("172.30.0.2".into()),
    };
    store.report_instance("n1", &report).await.unwrap();
    assert_eq!(
        store
            .instance_ips()
            .await
            .unwrap()
            .get("i1")
            .map(String::as_str),
        Some("172.30.0.2")
    );

    // A policy goes with either of its apps.
    store.delete_app("app-a", &ev("app.delete")).await.unwrap();
    assert!(store.list_policies().await.unwrap().is_empty());
}
