//! The built-in service broker's tables on both backends (issue 22): an instance is inserted
//! once, placed once, takes its node's reports, and goes with its bindings and jobs; a job ends
//! once.

use chrono::Utc;
use paas_common::agent::ServiceReport;
use paas_server::store::{BuiltinBindingRecord, BuiltinInstanceRecord, BuiltinJobRecord, Store};

mod store_support;

store_suite!(instances_bindings_and_jobs,);

fn instance(id: &str) -> BuiltinInstanceRecord {
    BuiltinInstanceRecord {
        id: id.into(),
        service: "postgresql".into(),
        plan: "small".into(),
        memory_mb: 256,
        disk_mb: 1024,
        admin_password: "sealed".into(),
        state: "provisioning".into(),
        node_name: None,
        placement_error: None,
        host_port: None,
        running: false,
        restarts: 0,
        last_exit: None,
    }
}

async fn instances_bindings_and_jobs(store: &dyn Store) {
    assert!(store
        .insert_builtin_instance(&instance("s1"))
        .await
        .unwrap());
    assert!(!store
        .insert_builtin_instance(&instance("s1"))
        .await
        .unwrap());
    assert_eq!(
        store.builtin_instance("s1").await.unwrap(),
        Some(instance("s1"))
    );

    // No node: the reason is kept, and it is still unplaced.
    assert!(!store
        .place_builtin_instance(None, "s1", None, Some("no node is available"))
        .await
        .unwrap());
    assert!(store
        .place_builtin_instance(None, "s1", Some("n1"), None)
        .await
        .unwrap());
    // Placed once: never moved.
    assert!(!store
        .place_builtin_instance(None, "s1", Some("n2"), None)
        .await
        .unwrap());

    let report = ServiceReport {
        service_id: "s1".into(),
        running: true,
        host_port: Some(40000),
        restarts: 1,
        last_exit: Some("exited with code 137".into()),
    };
    // Only from its own node, and only a change counts.
    assert!(!store.report_builtin_service("n2", &report).await.unwrap());
    assert!(store.report_builtin_service("n1", &report).await.unwrap());
    assert!(!store.report_builtin_service("n1", &report).await.unwrap());
    let s = store.builtin_instance("s1").await.unwrap().unwrap();
    assert_eq!(
        (s.node_name.as_deref(), s.host_port, s.running, s.restarts),
        (Some("n1"), Some(40000), true, 1)
    );
    store
        .set_builtin_instance_state("s1", "ready")
        .await
        .unwrap();

    let binding = BuiltinBindingRecord {
        id: "b1".into(),
        instance_id: "s1".into(),
        username: "b_b1".into(),
        password: "sealed".into(),
    };
    assert!(store.insert_builtin_binding(&binding).await.unwrap());
    assert!(!store.insert_builtin_binding(&binding).await.unwrap());
    assert_eq!(store.builtin_binding("b1").await.unwrap(), Some(binding));

    let job = BuiltinJobRecord {
        id: "j1".into(),
        instance_id: "s1".into(),
        kind: "backup".into(),
        backup_id: None,
        blob: None,
        state: "pending".into(),
        error: None,
        created_at: Utc::now(),
    };
    store.insert_builtin_job(&job).await.unwrap();
    assert_eq!(store.pending_builtin_jobs().await.unwrap().len(), 1);
    assert!(store
        .finish_builtin_job("j1", "done", Some("sha"), None)
        .await
        .unwrap());
    // Ended once.
    assert!(!store
        .finish_builtin_job("j1", "failed", None, Some("late"))
        .await
        .unwrap());
    let done = store.builtin_job("j1").await.unwrap().unwrap();
    assert_eq!(
        (done.state.as_str(), done.blob.as_deref()),
        ("done", Some("sha"))
    );
    assert!(store.pending_builtin_jobs().await.unwrap().is_empty());
    assert_eq!(store.builtin_jobs("s1").await.unwrap().len(), 1);

    store.delete_builtin_instance("s1").await.unwrap();
    assert!(store.builtin_instance("s1").await.unwrap().is_none());
    assert!(store.builtin_binding("b1").await.unwrap().is_none());
    assert!(store.builtin_jobs("s1").await.unwrap().is_empty());
}
