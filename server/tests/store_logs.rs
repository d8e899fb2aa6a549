//! Log retention on a real SQLite file: the per-app trim keeps each app's newest lines and no
//! other app's, and instance filters still find their lines without an index of their own.

use chrono::Utc;
use paas_common::api::LogLine;
use paas_server::store::{LogQuery, SqliteStore, Store};
use std::sync::Arc;

fn line(id: i64, source: &str) -> Arc<LogLine> {
    Arc::new(LogLine {
        id,
        timestamp: Utc::now(),
        source: source.into(),
        stream: "out".into(),
        message: format!("line {id}"),
    })
}

#[tokio::test]
async fn trim_keeps_each_apps_newest_lines() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("paas.db"))
        .await
        .unwrap();
    // Interleaved apps: a has 30 lines, b 5; ids rise across both, as the hub assigns them.
    let mut lines = Vec::new();
    for i in 1..=35 {
        let app = if i % 7 == 0 { "b" } else { "a" };
        lines.push((app.to_string(), line(i, &format!("APP/web/{}", i % 2))));
    }
    store.append_logs(&lines).await.unwrap();

    store.trim_logs(10).await.unwrap();
    let a = store.recent_logs("a", 100).await.unwrap();
    let all: Vec<i64> = (1..=35).filter(|i| i % 7 != 0).collect();
    let want = all[all.len() - 10..].to_vec();
    assert_eq!(a.iter().map(|l| l.id).collect::<Vec<_>>(), want);
    // b had fewer than the bound: untouched.
    let b = store.recent_logs("b", 100).await.unwrap();
    assert_eq!(
        b.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![7, 14, 21, 28, 35]
    );
    // Trimming again changes nothing; zero keeps nothing.
    store.trim_logs(10).await.unwrap();
    assert_eq!(store.recent_logs("a", 100).await.unwrap().len(), 10);
    store.trim_logs(0).await.unwrap();
    assert!(store.recent_logs("a", 100).await.unwrap().is_empty());
    assert!(store.recent_logs("b", 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn instance_filter_finds_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("paas.db"))
        .await
        .unwrap();
    let lines: Vec<(String, Arc<LogLine>)> = (1..=20)
        .map(|i| ("a".to_string(), line(i, &format!("APP/web/{}", i % 3))))
        .collect();
    store.append_logs(&lines).await.unwrap();
    let q = LogQuery {
        instance: Some(2),
        ..Default::default()
    };
    let got = store.query_logs("a", &q, 100).await.unwrap();
    assert_eq!(
        got.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![2, 5, 8, 11, 14, 17, 20]
    );
}

#[tokio::test]
async fn age_trim_deletes_the_expired_lines_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("paas.db"))
        .await
        .unwrap();
    let now = Utc::now();
    let at = |id: i64, mins_ago: i64, app: &str| {
        let mut l = (*line(id, "APP/web/0")).clone();
        l.timestamp = now - chrono::Duration::minutes(mins_ago);
        (app.to_string(), Arc::new(l))
    };
    // Two apps, oldest first; line 5 arrived late with an old time.
    let lines = vec![
        at(1, 50, "a"),
        at(2, 40, "b"),
        at(3, 30, "a"),
        at(4, 5, "a"),
        at(5, 45, "b"),
        at(6, 1, "b"),
    ];
    store.append_logs(&lines).await.unwrap();
    let cutoff = now - chrono::Duration::minutes(20);
    assert_eq!(store.trim_logs_before(cutoff).await.unwrap(), 3);
    let ids = |v: Vec<LogLine>| v.iter().map(|l| l.id).collect::<Vec<_>>();
    assert_eq!(ids(store.recent_logs("a", 10).await.unwrap()), vec![4]);
    // The late line waits behind line 4, which is inside the window.
    assert_eq!(ids(store.recent_logs("b", 10).await.unwrap()), vec![5, 6]);
    // Once everything is expired, everything goes; an empty table is fine.
    assert_eq!(store.trim_logs_before(now).await.unwrap(), 3);
    assert_eq!(store.trim_logs_before(now).await.unwrap(), 0);
    assert!(store.recent_logs("b", 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_largest_id_is_found_across_apps_and_filters_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("paas.db"))
        .await
        .unwrap();
    // An empty table: the hub starts at 1.
    assert_eq!(store.max_log_id().await.unwrap(), 0);
    let now = Utc::now();
    let at = |id: i64, secs_ago: i64, app: &str| {
        let mut l = (*line(id, "APP/web/0")).clone();
        l.timestamp = now - chrono::Duration::seconds(secs_ago);
        (app.to_string(), Arc::new(l))
    };
    // The largest id belongs to neither the first nor the last app by name.
    let lines = vec![at(3, 30, "a"), at(9, 20, "m"), at(4, 10, "z")];
    store.append_logs(&lines).await.unwrap();
    assert_eq!(store.max_log_id().await.unwrap(), 9);
    // Times survive the round trip to the nanosecond, and `since` compares them.
    let got = store.recent_logs("m", 10).await.unwrap();
    assert_eq!(got[0].timestamp, lines[1].1.timestamp);
    let q = LogQuery {
        since: Some(now - chrono::Duration::seconds(15)),
        ..Default::default()
    };
    assert!(store.query_logs("m", &q, 10).await.unwrap().is_empty());
    assert_eq!(store.query_logs("z", &q, 10).await.unwrap().len(), 1);
}
