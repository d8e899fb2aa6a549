//! The scheduler lease and fenced writes on both backends (issue 20): a lease is taken over only
//! once expired, each takeover raises the epoch, and a holder that lost it can write nothing.

use chrono::{TimeDelta, Utc};
use paas_common::agent::NodeCapacity;
use paas_common::api::AppState;
use paas_server::store::{AppRecord, Event, Fence, InstanceRecord, NodeRecord, Store, StoreError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

mod store_support;

store_suite!(
    a_lease_is_taken_over_only_after_expiry_and_each_takeover_raises_the_epoch,
    a_stale_holders_fenced_writes_are_refused_and_write_nothing,
);

const LONG: Duration = Duration::from_secs(60);

async fn a_lease_is_taken_over_only_after_expiry_and_each_takeover_raises_the_epoch(
    store: &dyn Store,
) {
    assert!(store.lease("scheduler").await.unwrap().is_none());
    let a = store
        .acquire_lease("scheduler", "a", LONG)
        .await
        .unwrap()
        .expect("a free lease is taken");
    assert_eq!((a.holder.as_str(), a.epoch), ("a", 1));
    assert!(
        store
            .acquire_lease("scheduler", "b", LONG)
            .await
            .unwrap()
            .is_none(),
        "b cannot take a lease a holds"
    );
    let renewed = store
        .acquire_lease("scheduler", "a", LONG)
        .await
        .unwrap()
        .expect("a renews its own lease");
    assert_eq!(renewed.epoch, 1, "a renewal keeps the epoch");
    assert!(renewed.expires_at_ms >= a.expires_at_ms);
    // Another lease name is independent.
    assert!(store
        .acquire_lease("other", "b", LONG)
        .await
        .unwrap()
        .is_some());

    // A short lease, not renewed: b gets it only once it has expired, by the database's clock.
    let ttl = Duration::from_millis(800);
    let started = Instant::now();
    store
        .acquire_lease("scheduler", "a", ttl)
        .await
        .unwrap()
        .expect("renewed with a short ttl");
    let b = loop {
        if let Some(b) = store.acquire_lease("scheduler", "b", LONG).await.unwrap() {
            break b;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "taken over after {:?}, before the ttl ran out",
        started.elapsed()
    );
    assert_eq!((b.holder.as_str(), b.epoch), ("b", 2));
    assert!(store
        .acquire_lease("scheduler", "a", LONG)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.lease("scheduler").await.unwrap(), Some(b.clone()));

    // Releasing: only the holder can, and the next taker moves the epoch on.
    assert!(!store.release_lease("scheduler", "a").await.unwrap());
    assert!(store.release_lease("scheduler", "b").await.unwrap());
    let a3 = store
        .acquire_lease("scheduler", "a", LONG)
        .await
        .unwrap()
        .expect("a released lease is free at once");
    assert_eq!(a3.epoch, 3);
}

fn ev(kind: &str) -> Event {
    Event {
        app_name: None,
        app_id: None,
        actor: "platform".into(),
        kind: kind.into(),
        message: kind.into(),
    }
}

fn instance(id: &str, index: u32) -> InstanceRecord {
    InstanceRecord::pending(id.into(), "app-l".into(), 1, "web".into(), index)
}

async fn a_stale_holders_fenced_writes_are_refused_and_write_nothing(store: &dyn Store) {
    let space = store.space("acme", "lease", true).await.unwrap().unwrap();
    let now = Utc::now();
    let app = AppRecord {
        id: "app-l".into(),
        name: "leased".into(),
        state: AppState::Started,
        desired_instances: 1,
        memory_mb: 64,
        disk_mb: 64,
        current_revision: Some(1),
        created_at: now,
        updated_at: now,
        space_id: space.id,
        host: None,
    };
    store.create_app(&app, &ev("app.create")).await.unwrap();
    for name in ["n1", "n2"] {
        store
            .upsert_node(&NodeRecord {
                name: name.into(),
                address: "127.0.0.1".into(),
                zone: "z".into(),
                labels: BTreeMap::new(),
                capacity: NodeCapacity {
                    memory_mb: 1024,
                    disk_mb: 1024,
                    instance_slots: 10,
                },
                token_hash: format!("hash-{name}"),
                state: "ready".into(),
                last_heartbeat: now - TimeDelta::seconds(3600),
                registered_at: now,
            })
            .await
            .unwrap();
    }

    let a = store
        .acquire_lease("scheduler", "a", LONG)
        .await
        .unwrap()
        .unwrap();
    let fa = Fence::from(&a);
    store
        .fenced_insert_instance(&fa, &instance("i0", 0))
        .await
        .unwrap();
    store
        .fenced_place_instance(&fa, "i0", Some("n1"), None)
        .await
        .unwrap();

    // a stalls: its lease runs out (a zero ttl: expired at once) and b takes over.
    store
        .acquire_lease("scheduler", "a", Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let expired = store.fenced_insert_instance(&fa, &instance("i-x", 1)).await;
    assert!(
        matches!(expired, Err(StoreError::Fenced(_))),
        "an expired lease fences even before anyone takes it: {expired:?}"
    );
    let b = store
        .acquire_lease("scheduler", "b", LONG)
        .await
        .unwrap()
        .expect("b takes the expired lease");
    assert_eq!(b.epoch, 2);
    let fb = Fence::from(&b);

    let before = store.list_instances().await.unwrap();
    let nodes_before = store.list_nodes().await.unwrap();
    let refused = [
        store.fenced_insert_instance(&fa, &instance("i1", 1)).await,
        store.fenced_delete_instance(&fa, "i0").await,
        store
            .fenced_place_instance(&fa, "i0", Some("n2"), None)
            .await,
        store
            .fenced_set_node_state(&fa, "n1", "drained", &ev("node.drained"))
            .await,
        store
            .fenced_mark_lost_nodes(&fa, Utc::now())
            .await
            .map(|_| ()),
    ];
    for r in &refused {
        assert!(matches!(r, Err(StoreError::Fenced(_))), "{r:?}");
    }
    // a with b's epoch, or b's holder with a's epoch, is no fence either.
    for forged in [
        Fence {
            epoch: b.epoch,
            ..fa.clone()
        },
        Fence {
            epoch: a.epoch,
            ..fb.clone()
        },
    ] {
        let r = store.fenced_delete_instance(&forged, "i0").await;
        assert!(matches!(r, Err(StoreError::Fenced(_))), "{r:?}");
    }
    let after = store.list_instances().await.unwrap();
    assert_eq!(
        after
            .iter()
            .map(|i| (i.id.clone(), i.node_name.clone()))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|i| (i.id.clone(), i.node_name.clone()))
            .collect::<Vec<_>>(),
        "nothing of the refused writes was written"
    );
    let states = |ns: &[NodeRecord]| ns.iter().map(|n| n.state.clone()).collect::<Vec<_>>();
    assert_eq!(
        states(&store.list_nodes().await.unwrap()),
        states(&nodes_before)
    );

    // The new holder's writes go through.
    store
        .fenced_place_instance(&fb, "i0", Some("n2"), None)
        .await
        .unwrap();
    store
        .fenced_insert_instance(&fb, &instance("i1", 1))
        .await
        .unwrap();
    let lost = store.fenced_mark_lost_nodes(&fb, Utc::now()).await.unwrap();
    assert_eq!(lost, ["n1", "n2"]);
    store
        .fenced_set_node_state(&fb, "n1", "drained", &ev("node.drained"))
        .await
        .unwrap();
    store.fenced_delete_instance(&fb, "i1").await.unwrap();
    let rows = store.list_instances().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].node_name.as_deref(), Some("n2"));
}
