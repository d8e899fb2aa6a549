//! The store's roles on both backends (issue 20): apps, revisions, instances, nodes, events,
//! logs and drains, routes, metrics, spaces and roles, users and tokens, build records. Each test
//! runs unchanged on SQLite and on PostgreSQL (see `store_support`).

use chrono::{SubsecRound, TimeDelta, Utc};
use paas_common::agent::{DropletImage, InstanceReport, NodeCapacity};
use paas_common::api::{AppState, InstanceState, InstanceUsage, LogLine};
use paas_server::store::{
    AppRecord, Event, EventFilter, InstanceRecord, LogQuery, MetricRow, NewRevision, NodeHeartbeat,
    NodeRecord, ReportedBefore, RevisionExtra, Store, StoreError, TokenRecord, User,
};
use std::collections::BTreeMap;
use std::sync::Arc;

mod store_support;

store_suite!(
    apps_are_found_by_space_name_host_and_id_and_deleted_with_their_data,
    revisions_number_up_per_app_and_carry_env_and_settings,
    concurrent_deploys_never_share_a_revision_number,
    instances_are_placed_reported_and_retired,
    a_heartbeat_writes_only_what_changed_in_one_transaction,
    nodes_register_heartbeat_get_lost_and_keep_drain_states,
    events_list_newest_last_and_count_by_filter,
    logs_filter_by_source_instance_time_and_text_and_drains_are_idempotent,
    routes_map_once_and_unmap_only_for_their_app,
    metrics_replace_per_interval_and_trim_by_age,
    spaces_and_roles_are_set_and_removed,
    users_and_tokens_round_trip,
    build_records_round_trip,
);

fn ev(app: Option<&AppRecord>, kind: &str) -> Event {
    Event {
        app_name: app.map(|a| a.name.clone()),
        app_id: app.map(|a| a.id.clone()),
        actor: "admin".into(),
        kind: kind.into(),
        message: format!("{kind} happened"),
    }
}

async fn app(store: &dyn Store, space: &str, name: &str) -> AppRecord {
    let sp = store.space("acme", space, true).await.unwrap().unwrap();
    // Whole seconds: PostgreSQL keeps microseconds, SQLite's text keeps nanoseconds.
    let now = Utc::now().trunc_subsecs(0);
    let a = AppRecord {
        id: format!("id-{space}-{name}"),
        name: name.into(),
        state: AppState::Stopped,
        desired_instances: 2,
        memory_mb: 256,
        disk_mb: 1024,
        current_revision: None,
        created_at: now,
        updated_at: now,
        space_id: sp.id,
        host: Some(format!("{name}-{space}")),
    };
    store
        .create_app(&a, &ev(Some(&a), "app.create"))
        .await
        .unwrap();
    a
}

fn rev(droplet: &str) -> NewRevision {
    NewRevision {
        package: format!("pkg-{droplet}"),
        droplet: droplet.into(),
        command: "serve".into(),
        detected: "python".into(),
        desired_instances: 3,
        memory_mb: 512,
    }
}

fn instance(app: &AppRecord, id: &str, index: u32) -> InstanceRecord {
    let now = Utc::now().trunc_subsecs(0);
    InstanceRecord {
        since: now,
        created_at: now,
        ready: true,
        ..InstanceRecord::pending(id.into(), app.id.clone(), 1, "web".into(), index)
    }
}

fn node(name: &str, token: &str) -> NodeRecord {
    let now = Utc::now().trunc_subsecs(0);
    NodeRecord {
        name: name.into(),
        address: "127.0.0.2".into(),
        zone: "z1".into(),
        labels: [("disk".to_string(), "ssd".to_string())].into(),
        capacity: NodeCapacity {
            memory_mb: 4096,
            disk_mb: 10_000,
            instance_slots: 20,
        },
        token_hash: token.into(),
        state: "ready".into(),
        last_heartbeat: now,
        registered_at: now,
    }
}

async fn apps_are_found_by_space_name_host_and_id_and_deleted_with_their_data(store: &dyn Store) {
    store.ping().await.unwrap();
    let a = app(store, "dev", "web").await;
    let b = app(store, "prod", "web").await;
    assert_eq!(store.apps_named("web").await.unwrap().len(), 2);
    let found = store
        .app_in_space(&a.space_id, "web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.created_at),
        (a.id.as_str(), a.created_at)
    );
    assert_eq!(found.state, AppState::Stopped);
    assert_eq!(
        store.app_by_host("web-prod").await.unwrap().unwrap().id,
        b.id
    );
    assert_eq!(
        store.app_space(&b.id).await.unwrap(),
        Some(b.space_id.clone())
    );
    assert_eq!(store.app_spaces().await.unwrap().len(), 2);
    // A name twice in one space, or a host twice anywhere, is a conflict.
    let mut dup = a.clone();
    dup.id = "other".into();
    dup.host = None;
    assert!(matches!(
        store.create_app(&dup, &ev(None, "app.create")).await,
        Err(StoreError::Conflict(_))
    ));
    let mut dup_host = b.clone();
    dup_host.id = "other2".into();
    dup_host.name = "api".into();
    assert!(matches!(
        store.create_app(&dup_host, &ev(None, "app.create")).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.app_push_settings(&a.id).await.unwrap(), "{}");

    store
        .append_logs(&[(a.id.clone(), line(1, "APP/web/0", "hello"))])
        .await
        .unwrap();
    store
        .add_log_drain(&a.id, "syslog://x:514", &ev(Some(&a), "drain"))
        .await
        .unwrap();
    store
        .delete_app(&a.id, &ev(Some(&a), "app.delete"))
        .await
        .unwrap();
    assert!(store.app_by_id(&a.id).await.unwrap().is_none());
    assert!(store.recent_logs(&a.id, 10).await.unwrap().is_empty());
    assert!(store.list_log_drains().await.unwrap().is_empty());
    assert!(matches!(
        store.delete_app(&a.id, &ev(None, "app.delete")).await,
        Err(StoreError::NotFound(_))
    ));
    let names: Vec<_> = store
        .list_apps()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(names, [b.id]);
}

async fn revisions_number_up_per_app_and_carry_env_and_settings(store: &dyn Store) {
    let a = app(store, "dev", "web").await;
    let b = app(store, "dev", "api").await;
    assert_eq!(
        store
            .deploy_revision(&a.id, &rev("d1"), &ev(Some(&a), "push"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .deploy_revision(&b.id, &rev("d1"), &ev(Some(&b), "push"))
            .await
            .unwrap(),
        1
    );
    let extra = RevisionExtra {
        env: [("K".to_string(), "v".to_string())].into(),
        created_by: "alice".into(),
        description: "set-env K".into(),
        disk_mb: Some(2048),
        push_settings: Some(r#"{"buildpacks":["python"]}"#.into()),
        log_rate_limit: Some(Some(4096)),
        no_start: true,
        sidecars: vec![paas_common::api::Sidecar {
            name: "helper".into(),
            process_types: vec!["web".into()],
            command: "./helper".into(),
            memory_mb: Some(64),
        }],
        ..Default::default()
    };
    let n = store
        .deploy_revision_with(&a.id, &rev("d2"), &extra, &ev(Some(&a), "env"))
        .await
        .unwrap();
    assert_eq!(n, 2);
    let r = store.revision(&a.id, 2).await.unwrap().unwrap();
    assert_eq!((r.droplet.as_str(), r.env["K"].as_str()), ("d2", "v"));
    // Sidecars are the revision's own: stored with it, none on the one before.
    assert_eq!(r.sidecars, extra.sidecars);
    let first = store.revision(&a.id, 1).await.unwrap().unwrap();
    assert!(first.sidecars.is_empty());
    assert_eq!(
        (r.created_by.as_str(), r.description.as_str()),
        ("alice", "set-env K")
    );
    let numbers: Vec<i64> = store
        .app_revisions(&a.id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.number)
        .collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(store.list_revisions().await.unwrap().len(), 3);
    let got = store.app_by_id(&a.id).await.unwrap().unwrap();
    assert_eq!(got.current_revision, Some(2));
    assert_eq!(
        (got.disk_mb, got.memory_mb, got.desired_instances),
        (2048, 512, 3)
    );
    assert_eq!(got.state, AppState::Stopped, "no_start leaves it stopped");
    assert_eq!(
        store.app_push_settings(&a.id).await.unwrap(),
        r#"{"buildpacks":["python"]}"#
    );
    let lc = store.app_lifecycles().await.unwrap().remove(&a.id).unwrap();
    assert_eq!(lc.log_rate_limit_bytes, Some(4096));
    assert!(store.revision(&a.id, 9).await.unwrap().is_none());
}

async fn concurrent_deploys_never_share_a_revision_number(store: &dyn Store) {
    let a = app(store, "dev", "web").await;
    let (r, e) = (rev("x"), ev(Some(&a), "push"));
    let (x, y, z, w) = tokio::join!(
        store.deploy_revision(&a.id, &r, &e),
        store.deploy_revision(&a.id, &r, &e),
        store.deploy_revision(&a.id, &r, &e),
        store.deploy_revision(&a.id, &r, &e),
    );
    let mut numbers = vec![x.unwrap(), y.unwrap(), z.unwrap(), w.unwrap()];
    numbers.sort();
    assert_eq!(numbers, [1, 2, 3, 4]);
}

async fn instances_are_placed_reported_and_retired(store: &dyn Store) {
    let a = app(store, "dev", "web").await;
    store.upsert_node(&node("n1", "tok1")).await.unwrap();
    store.insert_instance(&instance(&a, "i0", 0)).await.unwrap();
    store.insert_instance(&instance(&a, "i1", 1)).await.unwrap();
    store.place_instance("i0", Some("n1"), None).await.unwrap();
    store
        .place_instance("i1", None, Some("no node has room"))
        .await
        .unwrap();
    let rows = store.app_instances(&a.id).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].node_name.as_deref(), Some("n1"));
    assert_eq!(rows[1].placement_error.as_deref(), Some("no node has room"));

    let since = Utc::now().trunc_subsecs(0);
    let report = InstanceReport {
        instance_id: "i0".into(),
        state: InstanceState::Running,
        container_id: Some("c0".into()),
        host_port: Some(40001),
        restarts: 2,
        last_exit: Some("exited with code 1".into()),
        since,
        usage: None,
        ready: false,
        ip: None,
    };
    // Only the node it is assigned to may report it.
    assert!(store
        .report_instance("n2", &report)
        .await
        .unwrap()
        .is_none());
    let before = store.report_instance("n1", &report).await.unwrap().unwrap();
    assert_eq!(
        (before.state, before.ready, before.index),
        (InstanceState::Pending, true, 0)
    );
    assert!(before.routing_changed(&report));
    let i0 = store
        .list_instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == "i0")
        .unwrap();
    assert_eq!(
        (i0.state, i0.host_port, i0.restarts, i0.ready),
        (InstanceState::Running, Some(40001), 2, false)
    );
    assert_eq!(i0.since, since);
    assert_eq!(
        store.app_of_instance("i0", "n1").await.unwrap(),
        Some(a.id.clone())
    );
    assert_eq!(store.app_of_instance("i0", "n2").await.unwrap(), None);

    let usage = InstanceUsage {
        cpu_percent: 12.5,
        memory_bytes: 1 << 20,
        memory_limit_bytes: 1 << 28,
        disk_bytes: 10,
        uptime_secs: 3,
        sampled_at: None,
    };
    store.record_usage("n1", "i0", &usage).await.unwrap();
    store.record_usage("n2", "i1", &usage).await.unwrap();
    let u = store.app_usage(&a.id).await.unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u["i0"].memory_bytes, 1 << 20);

    assert_eq!(
        store
            .retire_instances(&a.id, Some(("web", 1)), &ev(Some(&a), "restart"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.retiring_instances().await.unwrap(),
        ["i1".to_string()].into()
    );
    assert_eq!(
        store
            .retire_instances(&a.id, None, &ev(Some(&a), "restart"))
            .await
            .unwrap(),
        2
    );
    store.delete_instance("i1").await.unwrap();
    assert_eq!(
        store.retiring_instances().await.unwrap(),
        ["i0".to_string()].into()
    );
}

async fn a_heartbeat_writes_only_what_changed_in_one_transaction(store: &dyn Store) {
    let a = app(store, "dev", "web").await;
    store.upsert_node(&node("n1", "tok1")).await.unwrap();
    store.upsert_node(&node("n2", "tok2")).await.unwrap();
    for (id, idx, n) in [("i0", 0, "n1"), ("i1", 1, "n1"), ("i2", 2, "n2")] {
        store.insert_instance(&instance(&a, id, idx)).await.unwrap();
        store.place_instance(id, Some(n), None).await.unwrap();
    }
    // Microseconds: what PostgreSQL keeps of a time (the comparison is to the microsecond).
    let since = Utc::now().trunc_subsecs(6);
    let usage = |cpu: f64| InstanceUsage {
        cpu_percent: cpu,
        memory_bytes: 1 << 20,
        memory_limit_bytes: 1 << 28,
        disk_bytes: 10,
        uptime_secs: 3,
        sampled_at: None,
    };
    let report = |id: &str, state: InstanceState, restarts: u32, cpu: f64| InstanceReport {
        instance_id: id.into(),
        state,
        container_id: Some(format!("c-{id}")),
        host_port: Some(40000),
        restarts,
        last_exit: None,
        since,
        usage: Some(usage(cpu)),
        ready: true,
        ip: None,
    };
    let cap = NodeCapacity {
        memory_mb: 1024,
        disk_mb: 1,
        instance_slots: 3,
    };
    // One event per changed row, so the test sees which rows the store compared as changed.
    let events = |r: &InstanceReport, b: &ReportedBefore| {
        vec![Event {
            app_name: Some(b.app_name.clone()),
            app_id: Some(b.app_id.clone()),
            actor: "node:n1".into(),
            kind: "test.report".into(),
            message: format!(
                "{} {} -> {}",
                r.instance_id,
                b.state.as_str(),
                r.state.as_str()
            ),
        }]
    };
    let reports = vec![
        report("i0", InstanceState::Running, 0, 1.0),
        report("i1", InstanceState::Starting, 0, 2.0),
        // Another node's row: ignored.
        report("i2", InstanceState::Crashed, 5, 3.0),
    ];
    let at = (Utc::now() + TimeDelta::seconds(5)).trunc_subsecs(0);
    let seen_every = TimeDelta::seconds(5);
    let hb = |reports, write_usage| NodeHeartbeat {
        capacity: &cap,
        at,
        reports,
        write_usage,
        seen_every,
    };
    let applied = store
        .apply_heartbeat("n1", &hb(&reports, true), &events)
        .await
        .unwrap();
    assert_eq!(
        applied.apps,
        [Some(a.id.clone()), Some(a.id.clone()), None],
        "a row of another node is not this node's to report"
    );
    let changed: Vec<usize> = applied.changed.iter().map(|(k, _)| *k).collect();
    assert_eq!(changed, [0, 1]);
    assert_eq!(applied.changed[0].1.state, InstanceState::Pending);
    // Two rows, their two events, two usage samples.
    assert_eq!(applied.rows_written, 6);
    let rows = store.app_instances(&a.id).await.unwrap();
    let by_id = |id: &str| rows.iter().find(|i| i.id == id).unwrap().clone();
    assert_eq!(
        (
            by_id("i0").state,
            by_id("i0").container_id,
            by_id("i0").since
        ),
        (InstanceState::Running, Some("c-i0".to_string()), since)
    );
    assert_eq!(by_id("i1").state, InstanceState::Starting);
    assert_eq!(
        by_id("i2").state,
        InstanceState::Pending,
        "n1 cannot report it"
    );
    let u = store.app_usage(&a.id).await.unwrap();
    assert_eq!((u.len(), u["i0"].cpu_percent), (2, 1.0));
    let n1 = store
        .list_nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == "n1")
        .unwrap();
    assert_eq!((n1.capacity.instance_slots, n1.last_heartbeat), (3, at));

    // The same states again, new usage not due, the node seen just now: nothing is written,
    // not even the node's row (no write transaction).
    let same = vec![
        report("i0", InstanceState::Running, 0, 7.0),
        report("i1", InstanceState::Starting, 0, 8.0),
    ];
    let applied = store
        .apply_heartbeat("n1", &hb(&same, false), &events)
        .await
        .unwrap();
    assert!(applied.changed.is_empty(), "{:?}", applied.changed);
    assert_eq!(applied.rows_written, 0);
    assert!(!applied.node_written);
    assert_eq!(applied.apps, [Some(a.id.clone()), Some(a.id.clone())]);
    assert_eq!(store.app_usage(&a.id).await.unwrap()["i0"].cpu_percent, 1.0);
    async fn last_seen(store: &dyn Store) -> (chrono::DateTime<Utc>, String) {
        let n = store.list_nodes().await.unwrap();
        let n1 = n.into_iter().find(|n| n.name == "n1").unwrap();
        (n1.last_heartbeat, n1.state)
    }
    let unchanged_at = |secs: i64| NodeHeartbeat {
        at: at + TimeDelta::seconds(secs),
        ..hb(&same, false)
    };
    let applied = store
        .apply_heartbeat("n1", &unchanged_at(4), &events)
        .await
        .unwrap();
    assert!(!applied.node_written, "seen 4 s ago: not due yet");
    assert_eq!(last_seen(store).await, (at, "ready".to_string()));
    // Once `seen_every` has passed, an unchanged heartbeat writes the node's last-seen time,
    // so a node at rest is never judged lost.
    let applied = store
        .apply_heartbeat("n1", &unchanged_at(5), &events)
        .await
        .unwrap();
    assert!(applied.node_written);
    assert_eq!(applied.rows_written, 0);
    let seen = at + TimeDelta::seconds(5);
    assert_eq!(last_seen(store).await, (seen, "ready".to_string()));
    let lost = store
        .mark_lost_nodes(seen - TimeDelta::seconds(1))
        .await
        .unwrap();
    assert!(!lost.contains(&"n1".to_string()), "{lost:?}");
    // A lost node's unchanged heartbeat writes at once (it brings the node back), as does one
    // with another capacity.
    let lost = store
        .mark_lost_nodes(seen + TimeDelta::seconds(1))
        .await
        .unwrap();
    assert!(lost.contains(&"n1".to_string()), "{lost:?}");
    let applied = store
        .apply_heartbeat("n1", &unchanged_at(6), &events)
        .await
        .unwrap();
    assert!(applied.node_written);
    assert_eq!(last_seen(store).await.1, "ready");
    let bigger = NodeCapacity {
        instance_slots: 4,
        ..cap.clone()
    };
    let applied = store
        .apply_heartbeat(
            "n1",
            &NodeHeartbeat {
                capacity: &bigger,
                ..unchanged_at(6)
            },
            &events,
        )
        .await
        .unwrap();
    assert!(applied.node_written);
    let applied = store
        .apply_heartbeat("n1", &unchanged_at(6), &events)
        .await
        .unwrap();
    assert!(applied.node_written, "back to the first capacity");

    // One row changes (i1 runs, restarted once): only it is written, with its event; usage
    // due: both samples in one statement.
    let next = vec![
        report("i0", InstanceState::Running, 0, 7.0),
        report("i1", InstanceState::Running, 1, 8.0),
    ];
    let applied = store
        .apply_heartbeat("n1", &hb(&next, true), &events)
        .await
        .unwrap();
    let changed: Vec<usize> = applied.changed.iter().map(|(k, _)| *k).collect();
    assert_eq!(changed, [1]);
    assert_eq!(
        (applied.changed[0].1.state, applied.changed[0].1.restarts),
        (InstanceState::Starting, 0)
    );
    assert_eq!(applied.rows_written, 1 + 1 + 2);
    let u = store.app_usage(&a.id).await.unwrap();
    assert_eq!((u["i0"].cpu_percent, u["i1"].cpu_percent), (7.0, 8.0));
    let all = store.all_usage().await.unwrap();
    assert_eq!(
        (all.len(), all["i0"].cpu_percent, all["i1"].cpu_percent),
        (2, 7.0, 8.0),
        "every sample in one read (i2 was never written)"
    );
    let running = store.running_counts().await.unwrap();
    assert_eq!(
        running.into_iter().collect::<Vec<_>>(),
        [(a.id.clone(), 2)],
        "i0 and i1 run, i2 is pending"
    );
    let reported: Vec<String> = store
        .list_events(&EventFilter::default(), None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event.kind == "test.report")
        .map(|e| e.event.message)
        .collect();
    assert_eq!(
        reported,
        [
            "i0 pending -> running",
            "i1 pending -> starting",
            "i1 starting -> running"
        ]
    );
}

async fn nodes_register_heartbeat_get_lost_and_keep_drain_states(store: &dyn Store) {
    store.upsert_node(&node("n1", "tok1")).await.unwrap();
    store.upsert_node(&node("n2", "tok2")).await.unwrap();
    let n1 = store.node_by_token_hash("tok1").await.unwrap().unwrap();
    assert_eq!(
        (n1.name.as_str(), n1.labels["disk"].as_str()),
        ("n1", "ssd")
    );
    assert!(store.node_by_token_hash("nope").await.unwrap().is_none());
    let cap = NodeCapacity {
        memory_mb: 8192,
        disk_mb: 1,
        instance_slots: 2,
    };
    let later = Utc::now() + TimeDelta::seconds(30);
    store.heartbeat_node("n1", &cap, later).await.unwrap();
    let lost = store
        .mark_lost_nodes(Utc::now() + TimeDelta::seconds(10))
        .await
        .unwrap();
    assert_eq!(lost, ["n2"]);
    // A heartbeat brings a lost node back.
    store.heartbeat_node("n2", &cap, later).await.unwrap();
    store
        .set_node_state("n1", "draining", &ev(None, "node.drain"))
        .await
        .unwrap();
    // Re-registering keeps a drain.
    store.upsert_node(&node("n1", "tok1b")).await.unwrap();
    let nodes = store.list_nodes().await.unwrap();
    let states: Vec<_> = nodes
        .iter()
        .map(|n| (n.name.as_str(), n.state.as_str()))
        .collect();
    assert_eq!(states, [("n1", "draining"), ("n2", "ready")]);
    assert_eq!(nodes[1].capacity.memory_mb, 8192);
    assert!(matches!(
        store
            .set_node_state("nx", "drained", &ev(None, "node.drain"))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn events_list_newest_last_and_count_by_filter(store: &dyn Store) {
    let a = app(store, "dev", "web").await;
    for k in ["one", "two", "three"] {
        store.add_event(&ev(Some(&a), k)).await.unwrap();
    }
    store
        .add_event(&Event {
            actor: "bob (token ci)".into(),
            ..ev(None, "token.use")
        })
        .await
        .unwrap();
    let recent = store.recent_events(&a.id, 2).await.unwrap();
    let kinds: Vec<_> = recent.iter().map(|(_, e)| e.kind.as_str()).collect();
    assert_eq!(kinds, ["two", "three"]);
    let filter = EventFilter {
        app_id: Some(a.id.clone()),
        ..Default::default()
    };
    assert_eq!(
        store.count_events(&filter).await.unwrap(),
        4,
        "app.create and three"
    );
    let page = store.list_events(&filter, None, 2).await.unwrap();
    let rest = store
        .list_events(&filter, Some(page[1].id), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[1].event.kind, "three");
    let created = store.app_created_event(&a.id).await.unwrap().unwrap();
    assert_eq!(created, page[0].id);
    let bob = EventFilter {
        actor: Some("bob".into()),
        ..Default::default()
    };
    assert_eq!(store.count_events(&bob).await.unwrap(), 1);
}

fn line(id: i64, source: &str, message: &str) -> Arc<LogLine> {
    Arc::new(LogLine {
        id,
        timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + id, 0).unwrap(),
        source: source.into(),
        stream: "stdout".into(),
        message: message.into(),
    })
}

async fn logs_filter_by_source_instance_time_and_text_and_drains_are_idempotent(store: &dyn Store) {
    let a = app(store, "dev", "web").await;
    let lines: Vec<_> = vec![
        (a.id.clone(), line(1, "APP/web/0", "started Needle")),
        (a.id.clone(), line(2, "APP/web/1", "hello")),
        (a.id.clone(), line(3, "RTR", "GET / 200")),
        (a.id.clone(), line(4, "RTR", "GET /needle 404")),
        (a.id.clone(), line(5, "STG", "staging")),
    ];
    store.append_logs(&lines).await.unwrap();
    assert_eq!(store.max_log_id().await.unwrap(), 5);
    let ids = |v: Vec<LogLine>| v.iter().map(|l| l.id).collect::<Vec<_>>();
    assert_eq!(ids(store.recent_logs(&a.id, 2).await.unwrap()), [4, 5]);
    let app_id = a.id.clone();
    let q = |f: LogQuery| {
        let app_id = app_id.clone();
        async move { ids(store.query_logs(&app_id, &f, 100).await.unwrap()) }
    };
    assert_eq!(
        q(LogQuery {
            sources: vec!["APP".into()],
            ..Default::default()
        })
        .await,
        [1, 2]
    );
    assert_eq!(
        q(LogQuery {
            instance: Some(1),
            ..Default::default()
        })
        .await,
        [2]
    );
    // Case-sensitive substring, on both backends.
    assert_eq!(
        q(LogQuery {
            grep: Some("needle".into()),
            ..Default::default()
        })
        .await,
        [4]
    );
    assert_eq!(
        q(LogQuery {
            since: Some(chrono::DateTime::from_timestamp(1_700_000_004, 0).unwrap()),
            ..Default::default()
        })
        .await,
        [4, 5]
    );
    // 3 and 4 are one packed row (consecutive router lines): kept whole.
    store.trim_logs(2).await.unwrap();
    assert_eq!(ids(store.recent_logs(&a.id, 10).await.unwrap()), [3, 4, 5]);
    store.trim_logs(1).await.unwrap();
    assert_eq!(ids(store.recent_logs(&a.id, 10).await.unwrap()), [5]);

    store
        .add_log_drain(&a.id, "https://sink/x", &ev(Some(&a), "drain"))
        .await
        .unwrap();
    store
        .add_log_drain(&a.id, "https://sink/x", &ev(Some(&a), "drain"))
        .await
        .unwrap();
    assert_eq!(
        store.list_log_drains().await.unwrap(),
        [(a.id.clone(), "https://sink/x".to_string())]
    );
    assert!(store
        .remove_log_drain(&a.id, "https://sink/x", &ev(Some(&a), "undrain"))
        .await
        .unwrap());
    assert!(!store
        .remove_log_drain(&a.id, "https://sink/x", &ev(Some(&a), "undrain"))
        .await
        .unwrap());
}

async fn routes_map_once_and_unmap_only_for_their_app(store: &dyn Store) {
    let a = app(store, "dev", "web").await;
    let b = app(store, "dev", "api").await;
    let c = app(store, "prod", "web").await;
    store
        .add_route(&a.id, "shop.example.com", "", &ev(Some(&a), "map"))
        .await
        .unwrap();
    store
        .add_route(&b.id, "shop.example.com", "/api", &ev(Some(&b), "map"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .add_route(&b.id, "shop.example.com", "", &ev(Some(&b), "map"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    // Another space may not add paths under a host this space holds.
    assert!(matches!(
        store
            .add_route(&c.id, "shop.example.com", "/x", &ev(Some(&c), "map"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    let routes: Vec<_> = store
        .list_routes()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.path, r.app_name))
        .collect();
    assert_eq!(
        routes,
        [
            ("".into(), "web".into()),
            ("/api".to_string(), "api".to_string())
        ]
    );
    assert!(matches!(
        store
            .delete_route(&a.id, "shop.example.com", "/api", &ev(Some(&a), "unmap"))
            .await,
        Err(StoreError::NotFound(_))
    ));
    store
        .delete_route(&b.id, "shop.example.com", "/api", &ev(Some(&b), "unmap"))
        .await
        .unwrap();
    assert_eq!(store.list_routes().await.unwrap().len(), 1);
}

fn metric(app: &str, ts: i64, requests: u64) -> MetricRow {
    MetricRow {
        app_id: app.into(),
        ts,
        requests,
        errors: 1,
        p50_ms: Some(1.5),
        p99_ms: None,
        memory_bytes: 1 << 30,
        cpu_percent: 3.25,
        restarts: 0,
        instances: vec![(0, 1 << 29, 1.5), (1, 1 << 29, 1.75)],
    }
}

async fn metrics_replace_per_interval_and_trim_by_age(store: &dyn Store) {
    store
        .add_app_metrics(&[
            metric("a", 100, 1),
            metric("a", 110, 2),
            metric("b", 100, 9),
        ])
        .await
        .unwrap();
    // The same interval again replaces its row.
    store.add_app_metrics(&[metric("a", 110, 7)]).await.unwrap();
    let rows = store.app_metrics("a", 0).await.unwrap();
    assert_eq!(rows, [metric("a", 100, 1), metric("a", 110, 7)]);
    assert_eq!(store.app_metrics("a", 105).await.unwrap().len(), 1);
    assert_eq!(store.trim_app_metrics(105).await.unwrap(), 2);
    assert_eq!(store.app_metrics("b", 0).await.unwrap(), []);
}

async fn spaces_and_roles_are_set_and_removed(store: &dyn Store) {
    assert!(store.space("acme", "dev", false).await.unwrap().is_none());
    let dev = store.space("acme", "dev", true).await.unwrap().unwrap();
    assert_eq!(
        store.space("acme", "dev", true).await.unwrap().unwrap(),
        dev
    );
    store.space("beta", "dev", true).await.unwrap().unwrap();
    let spaces: Vec<_> = store
        .list_spaces()
        .await
        .unwrap()
        .into_iter()
        .map(|s| format!("{}/{}", s.org, s.name))
        .collect();
    // Both schemas start with the default space.
    assert_eq!(spaces, ["acme/dev", "beta/dev", "default/default"]);
    let u = user(store, "dana").await;
    store
        .set_role(&u.id, &dev.id, Some("viewer"))
        .await
        .unwrap();
    store
        .set_role(&u.id, &dev.id, Some("developer"))
        .await
        .unwrap();
    assert_eq!(
        store.user_roles(&u.id).await.unwrap(),
        [(dev.id.clone(), "developer".to_string())]
    );
    store.set_role(&u.id, &dev.id, None).await.unwrap();
    assert!(store.user_roles(&u.id).await.unwrap().is_empty());
    store
        .set_org_role(&u.id, "acme", Some("auditor"))
        .await
        .unwrap();
    assert_eq!(
        store.user_org_roles(&u.id).await.unwrap(),
        [("acme".to_string(), "auditor".to_string())]
    );
    assert!(matches!(
        store.set_org_role(&u.id, "nope", Some("manager")).await,
        Err(StoreError::NotFound(_))
    ));
    store.set_org_role(&u.id, "acme", None).await.unwrap();
    assert!(store.user_org_roles(&u.id).await.unwrap().is_empty());
}

async fn user(store: &dyn Store, name: &str) -> User {
    let u = User {
        id: format!("u-{name}"),
        username: name.into(),
        password_hash: "hash".into(),
        created_at: Utc::now().trunc_subsecs(0),
        operator: false,
    };
    assert!(store.create_user_if_missing(&u).await.unwrap());
    u
}

async fn users_and_tokens_round_trip(store: &dyn Store) {
    let u = user(store, "erin").await;
    assert!(
        !store.create_user_if_missing(&u).await.unwrap(),
        "the name is taken"
    );
    store.set_operator(&u.id, true).await.unwrap();
    let got = store.user_by_name("erin").await.unwrap().unwrap();
    assert!(got.operator);
    assert_eq!(got.created_at, u.created_at);
    assert_eq!(
        store.user_by_id(&u.id).await.unwrap().unwrap().username,
        "erin"
    );
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    let now = Utc::now().trunc_subsecs(0);
    let t = TokenRecord {
        id: "jti".into(),
        user_id: u.id.clone(),
        name: "ci".into(),
        scope: "deploy".into(),
        app_name: Some("web".into()),
        app_id: Some("id-web".into()),
        token_hash: "th".into(),
        created_at: now,
        expires_at: now + TimeDelta::days(1),
        last_used_at: None,
        revoked_at: None,
        kid: None,
    };
    store.insert_token(&t).await.unwrap();
    store.touch_token("jti", now).await.unwrap();
    assert_eq!(
        store.token("jti").await.unwrap().unwrap().last_used_at,
        Some(now)
    );
    assert_eq!(store.backfill_token_kids("k1").await.unwrap(), 1);
    assert!(!store.revoke_token("jti", "someone-else").await.unwrap());
    assert!(store.revoke_token("jti", &u.id).await.unwrap());
    let tokens = store.list_tokens(&u.id).await.unwrap();
    assert_eq!(tokens[0].kid.as_deref(), Some("k1"));
    assert!(tokens[0].revoked_at.is_some());
}

async fn build_records_round_trip(store: &dyn Store) {
    store
        .remember_files("alice", &[("s1".into(), 10), ("s2".into(), 20)])
        .await
        .unwrap();
    store
        .remember_files("alice", &[("s1".into(), 10)])
        .await
        .unwrap();
    let known = store
        .known_files(
            "alice",
            &[("s1".into(), 10), ("s2".into(), 21), ("s3".into(), 1)],
        )
        .await
        .unwrap();
    assert_eq!(known, ["s1"]);
    assert!(store
        .known_files("bob", &[("s1".into(), 10)])
        .await
        .unwrap()
        .is_empty());
    let mut blobs = store.cached_file_blobs().await.unwrap();
    blobs.sort();
    assert_eq!(blobs, ["s1", "s2"]);
    let procs: BTreeMap<String, String> = [("web".to_string(), "serve".to_string())].into();
    store.set_droplet_processes("d1", &procs).await.unwrap();
    store.set_droplet_processes("d1", &procs).await.unwrap();
    assert_eq!(store.droplet_processes().await.unwrap()["d1"], procs);
    let image = DropletImage {
        id: "sha256:abc".into(),
        port: 8080,
        user: "1000:1000".into(),
    };
    store.set_droplet_image("d2", &image).await.unwrap();
    assert_eq!(store.droplet_images().await.unwrap()["d2"].port, 8080);
    store
        .add_base_image("python:3.12", "admin", &ev(None, "allow"))
        .await
        .unwrap();
    store
        .add_base_image("python:3.12", "admin", &ev(None, "allow"))
        .await
        .unwrap();
    assert_eq!(store.list_base_images().await.unwrap().len(), 1);
}

/// `PAAS_DATABASE_URL` names one of the two backends; anything else is refused at start with a
/// message saying what is accepted, and a `sqlite://` URL opens (and creates) that file.
#[tokio::test]
async fn the_url_picks_the_backend() {
    let err = paas_server::store::open("mysql://localhost/paas")
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("sqlite:// or postgres://"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chosen.db");
    let store = paas_server::store::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert!(path.exists());
}
