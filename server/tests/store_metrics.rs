//! Issue 26's store parts, on both backends (see `store_support`): space quotas, the 1-minute metric rollups
//! (rolled up by `timeseries::rollup` from the 10 s rows the store reads back), node health rows.

use chrono::Utc;
use paas_common::api::{AppState, SpaceQuota};
use paas_server::store::{AppRecord, Event, MetricRow, NodeMetricRow, Store, StoreError};

mod store_support;

store_suite!(
    quotas_are_set_replaced_and_unset,
    rollups_are_read_back_replaced_and_trimmed,
    node_rows_keep_the_longest_lag_of_their_minute,
);

fn ev(kind: &str) -> Event {
    Event {
        app_name: None,
        app_id: None,
        actor: "test".into(),
        kind: kind.into(),
        message: kind.into(),
    }
}

async fn quotas_are_set_replaced_and_unset(store: &dyn Store) {
    let space = store.space("org", "dev", true).await.unwrap().unwrap();
    let other = store.space("org", "prod", true).await.unwrap().unwrap();
    assert_eq!(
        store.space_quota(&space.id).await.unwrap(),
        SpaceQuota::default()
    );
    let q = SpaceQuota {
        memory_mb: Some(2048),
        instances: Some(10),
        apps: None,
        routes: Some(3),
    };
    store
        .set_space_quota(&space.id, &q, &ev("space.quota"))
        .await
        .unwrap();
    assert_eq!(store.space_quota(&space.id).await.unwrap(), q);
    assert_eq!(
        store.space_quota(&other.id).await.unwrap(),
        SpaceQuota::default(),
        "a quota is one space's"
    );
    let q2 = SpaceQuota {
        apps: Some(1),
        ..Default::default()
    };
    store
        .set_space_quota(&space.id, &q2, &ev("space.quota"))
        .await
        .unwrap();
    assert_eq!(
        store.space_quota(&space.id).await.unwrap(),
        q2,
        "replaced whole"
    );
    match store
        .set_space_quota("no-such-space", &q, &ev("space.quota"))
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("a quota for no space: {other:?}"),
    }
}

fn row(app: &str, ts: i64, requests: u64, p99: f64) -> MetricRow {
    MetricRow {
        app_id: app.into(),
        ts,
        requests,
        errors: 1,
        p50_ms: Some(1.0),
        p99_ms: Some(p99),
        memory_bytes: requests * 1000,
        cpu_percent: 10.0,
        restarts: 0,
        instances: vec![(0, requests * 1000, 10.0)],
    }
}

async fn rollups_are_read_back_replaced_and_trimmed(store: &dyn Store) {
    let space = store.space("org", "dev", true).await.unwrap().unwrap();
    let now = Utc::now();
    let app = AppRecord {
        id: "app-kept".into(),
        name: "kept".into(),
        state: AppState::Started,
        desired_instances: 1,
        memory_mb: 128,
        disk_mb: 512,
        current_revision: None,
        created_at: now,
        updated_at: now,
        space_id: space.id.clone(),
        host: None,
    };
    store.create_app(&app, &ev("app.create")).await.unwrap();
    let base = 6_000_000; // a whole minute
    let mut rows = Vec::new();
    for i in 0..12 {
        rows.push(row("app-kept", base + i * 10, 10, 5.0 + i as f64));
        rows.push(row("app-gone", base + i * 10, 1, 1.0));
    }
    store.add_app_metrics(&rows).await.unwrap();
    let between = store.app_metrics_between(base, base + 60).await.unwrap();
    assert_eq!(
        between.len(),
        12,
        "the first minute of both apps: {between:?}"
    );
    let rolled = paas_server::timeseries::rollup(&between);
    assert_eq!(rolled.len(), 2);
    store.add_app_rollups(&rolled).await.unwrap();
    let all = store.app_metrics_between(base, base + 120).await.unwrap();
    store
        .add_app_rollups(&paas_server::timeseries::rollup(&all))
        .await
        .unwrap();
    let kept = store.app_rollups("app-kept", base).await.unwrap();
    assert_eq!(
        kept.iter().map(|r| (r.ts, r.requests)).collect::<Vec<_>>(),
        vec![(base, 60), (base + 60, 60)],
        "one row per minute, rolled up twice without doubling"
    );
    assert_eq!(kept[1].p99_ms, Some(16.0));
    assert_eq!(kept[0].instances, vec![(0, 10_000, 10.0)]);
    assert_eq!(
        store
            .app_rollups("app-kept", base + 60)
            .await
            .unwrap()
            .len(),
        1
    );
    // Trim: rows before the bound go, and every row of an app that is gone.
    let n = store.trim_app_rollups(base + 60).await.unwrap();
    assert_eq!(n, 3, "kept's first minute and both of the gone app's");
    assert_eq!(store.app_rollups("app-gone", 0).await.unwrap(), vec![]);
    assert_eq!(store.app_rollups("app-kept", 0).await.unwrap().len(), 1);
}

async fn node_rows_keep_the_longest_lag_of_their_minute(store: &dyn Store) {
    let sample = |ts: i64, lag: f64, reserved: u64, state: &str| NodeMetricRow {
        node_name: "n1".into(),
        ts,
        state: state.into(),
        lag_secs: lag,
        reserved_mb: reserved,
        capacity_mb: 4096,
        instances: reserved / 256,
    };
    store
        .record_node_metrics(&[sample(600, 2.0, 256, "ready")])
        .await
        .unwrap();
    store
        .record_node_metrics(&[sample(600, 9.5, 512, "ready")])
        .await
        .unwrap();
    store
        .record_node_metrics(&[sample(600, 1.0, 768, "lost")])
        .await
        .unwrap();
    store
        .record_node_metrics(&[sample(660, 0.5, 768, "ready")])
        .await
        .unwrap();
    let rows = store.node_metrics(0).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0],
        sample(600, 9.5, 768, "lost"),
        "the longest lag, the latest rest"
    );
    assert_eq!(rows[1], sample(660, 0.5, 768, "ready"));
    assert_eq!(store.trim_node_metrics(660).await.unwrap(), 1);
    assert_eq!(store.node_metrics(0).await.unwrap().len(), 1);
}
