//! Builds in flight on both backends (issue 20): a build placed by one controller is what its
//! node is told and what later placements count, whichever controller asks; its result, recorded
//! through any controller, reaches the push waiting on another, once.

use chrono::Utc;
use paas_common::agent::{BuildAssignment, BuildResult, NodeCapacity};
use paas_server::builds::{Builds, Reservation};
use paas_server::store::{NodeRecord, Store};
use std::collections::BTreeMap;
use std::time::Duration;

mod store_support;

store_suite!(
    a_build_placed_by_one_controller_is_seen_and_finished_through_another,
    builds_in_flight_hold_their_node_until_they_end,
);

fn node(name: &str, memory_mb: u64) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        address: "127.0.0.1".into(),
        zone: "z".into(),
        labels: BTreeMap::new(),
        capacity: NodeCapacity {
            memory_mb,
            disk_mb: 40_000,
            instance_slots: 250,
        },
        token_hash: String::new(),
        state: "ready".into(),
        last_heartbeat: Utc::now(),
        registered_at: Utc::now(),
    }
}

fn build(id: &str, memory_mb: u64) -> BuildAssignment {
    BuildAssignment {
        build_id: id.into(),
        app: "web".into(),
        buildpacks: vec!["python".into()],
        memory_mb,
        disk_mb: 4096,
        timeout_secs: 60,
        custom_buildpacks: vec![],
        dockerfile: false,
        allowed_base_images: vec![],
        stack: "trixie".into(),
        no_cache: false,
        cache_scope: "space".into(),
    }
}

const NO_LABELS: &BTreeMap<String, String> = &BTreeMap::new();

async fn a_build_placed_by_one_controller_is_seen_and_finished_through_another(store: &dyn Store) {
    // Two controllers: each has its own `Builds`, both on one store.
    let (a, b) = (Builds::default(), Builds::default());
    let nodes = [node("n1", 8192)];
    let placed = a
        .place_and_start(
            store,
            &nodes,
            &[],
            "app-1",
            "src-sha",
            &build("b1", 1024),
            NO_LABELS,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(placed, "n1");
    let told = b.for_node(store, "n1").await.unwrap();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].build_id, "b1");
    assert_eq!(told[0].buildpacks, ["python"]);
    assert!(b.for_node(store, "n2").await.unwrap().is_empty());
    assert_eq!(
        b.source_of(store, "b1", "n1").await.unwrap(),
        Some(("src-sha".to_string(), "app-1".to_string()))
    );
    assert_eq!(
        b.source_of(store, "b1", "n2").await.unwrap(),
        None,
        "another node's build"
    );

    let result = BuildResult {
        buildpack: Some("python".into()),
        droplet: Some("droplet-sha".into()),
        ..Default::default()
    };
    assert!(
        !b.finish(store, "b1", "n2", &result).await.unwrap(),
        "not n2's build"
    );
    let waiting = async { a.wait(store, "b1", Duration::from_secs(30)).await.unwrap() };
    let finishing = async {
        // Through the other controller: the waiting push polls the store.
        assert!(b.finish(store, "b1", "n1", &result).await.unwrap());
        assert!(!b.finish(store, "b1", "n1", &result).await.unwrap(), "once");
    };
    let (got, ()) = tokio::join!(waiting, finishing);
    assert_eq!(got, Some(result));
    assert!(
        b.for_node(store, "n1").await.unwrap().is_empty(),
        "done builds are not told"
    );
    assert_eq!(
        store.staging("b1").await.unwrap(),
        None,
        "the push read it: gone"
    );
}

async fn builds_in_flight_hold_their_node_until_they_end(store: &dyn Store) {
    let (a, b) = (Builds::default(), Builds::default());
    let nodes = [node("n1", 4096), node("n2", 4096)];
    // Placed alternately by two controllers: each counts the other's builds.
    let mut placed = Vec::new();
    for (i, ctl) in [&a, &b, &a, &b].into_iter().enumerate() {
        let n = ctl
            .place_and_start(
                store,
                &nodes,
                &[],
                "app",
                "src",
                &build(&format!("b{i}"), 2000),
                NO_LABELS,
            )
            .await
            .unwrap()
            .unwrap();
        placed.push(n);
    }
    assert_eq!(placed, ["n1", "n2", "n1", "n2"]);
    let full = a
        .place_and_start(
            store,
            &nodes,
            &[],
            "app",
            "src",
            &build("b4", 2000),
            NO_LABELS,
        )
        .await
        .unwrap();
    assert!(full.unwrap_err().to_string().contains("needs 2000 MB"));
    // Instances count too.
    let held = b.reservations(store).await.unwrap();
    assert_eq!(held.len(), 4);
    assert!(held
        .iter()
        .all(|r| r.build && r.memory_mb == 2000 && r.slots == 1));

    // A push that gives up cancels its build: the room is free again.
    assert_eq!(
        b.wait(store, "b0", Duration::ZERO).await.unwrap(),
        None,
        "no result within the limit"
    );
    let instances = [Reservation {
        node: "n2".into(),
        memory_mb: 100,
        disk_mb: 0,
        slots: 1,
        build: false,
    }];
    let n = a
        .place_and_start(
            store,
            &nodes,
            &instances,
            "app",
            "src",
            &build("b5", 2000),
            NO_LABELS,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, "n1");

    // Rows a dead controller's push left behind are swept.
    let swept = store
        .sweep_stagings(Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(swept, 4);
    assert!(a.reservations(store).await.unwrap().is_empty());
}
