//! Log retention on a real SQLite file: the per-app trim keeps each app's newest lines and no
//! other app's, and instance filters still find their lines without an index of their own.

use chrono::Utc;
use paas_common::api::LogLine;
use paas_server::store::prelude::*;
use paas_server::store::{LogQuery, SqliteStore};
use std::sync::Arc;

mod store_support;

store_suite!(
    trim_keeps_each_apps_newest_lines,
    instance_filter_finds_its_lines,
    age_trim_deletes_the_expired_lines_in_arrival_order,
    the_largest_id_is_found_across_apps_and_filters_by_time,
    packed_runs_read_back_line_by_line,
);

fn line(id: i64, source: &str) -> Arc<LogLine> {
    Arc::new(LogLine {
        id,
        timestamp: Utc::now(),
        source: source.into(),
        stream: "out".into(),
        message: format!("line {id}"),
    })
}

async fn trim_keeps_each_apps_newest_lines(store: &dyn Store) {
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

async fn instance_filter_finds_its_lines(store: &dyn Store) {
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

async fn age_trim_deletes_the_expired_lines_in_arrival_order(store: &dyn Store) {
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

async fn the_largest_id_is_found_across_apps_and_filters_by_time(store: &dyn Store) {
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

/// Runs of lines (same app, source and stream, consecutive ids), as the router's RTR lines
/// arrive, are stored packed into one row each, and every read gives them back line by line:
/// ids, times to the nanosecond and texts, under each filter, limit and retention.
/// Router lines of two apps, interleaved, with runs that pack and lines that break them.
fn packed_sample() -> Vec<(String, Arc<LogLine>)> {
    let t0 = Utc::now();
    let mk = |id: i64, app: &str, source: &str, text: &str| {
        (
            app.to_string(),
            Arc::new(LogLine {
                id,
                timestamp: t0 + chrono::Duration::nanoseconds(id * 100_000_007),
                source: source.into(),
                stream: "out".into(),
                message: text.into(),
            }),
        )
    };
    let mut lines = Vec::new();
    for i in 1..=6 {
        lines.push(mk(i, "a", "RTR", &format!("\"GET /x{i}\" 200")));
    }
    lines.push(mk(7, "a", "APP/web/0", "app line"));
    lines.push(mk(8, "b", "RTR", "\"GET /b8\" 200"));
    lines.push(mk(9, "b", "RTR", "\"GET /b9\" 200"));
    for i in 10..=12 {
        lines.push(mk(i, "a", "RTR", &format!("\"GET /x{i}\" 200")));
    }
    // A line with a line break is never packed, and does not break its neighbours' reads.
    lines.push(mk(13, "a", "RTR", "two\nrows"));
    lines.push(mk(14, "a", "RTR", "\"GET /x14\" 200"));
    lines.push(mk(15, "a", "RTR", "\"GET /x15\" 200"));
    lines
}

async fn packed_runs_read_back_line_by_line(store: &dyn Store) {
    let lines = packed_sample();
    // Line N is N * 100_000_007 ns after t0.
    let t0 = lines[0].1.timestamp - chrono::Duration::nanoseconds(100_000_007);
    store.append_logs(&lines).await.unwrap();

    let of = |app: &str| -> Vec<LogLine> {
        lines
            .iter()
            .filter(|(a, _)| a == app)
            .map(|(_, l)| (**l).clone())
            .collect()
    };
    let key = |v: &[LogLine]| {
        v.iter()
            .map(|l| {
                (
                    l.id,
                    l.timestamp,
                    l.source.clone(),
                    l.stream.clone(),
                    l.message.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let a = of("a");
    assert_eq!(key(&store.recent_logs("a", 100).await.unwrap()), key(&a));
    assert_eq!(
        key(&store.recent_logs("b", 100).await.unwrap()),
        key(&of("b"))
    );
    // The newest 4 lines, though they sit in three rows of five lines.
    assert_eq!(
        key(&store.recent_logs("a", 4).await.unwrap()),
        key(&a[a.len() - 4..])
    );
    assert_eq!(store.max_log_id().await.unwrap(), 15);

    let query =
        |f: LogQuery, limit: i64| async move { store.query_logs("a", &f, limit).await.unwrap() };
    let want = |f: &LogQuery, limit: usize| {
        let v: Vec<LogLine> = a.iter().filter(|l| f.matches(l)).cloned().collect();
        v[v.len().saturating_sub(limit)..].to_vec()
    };
    let filters = [
        LogQuery {
            sources: vec!["RTR".into()],
            ..Default::default()
        },
        // Inside a packed row: only the lines from then on.
        LogQuery {
            since: Some(t0 + chrono::Duration::nanoseconds(4 * 100_000_007)),
            ..Default::default()
        },
        LogQuery {
            grep: Some("/x1".into()),
            ..Default::default()
        },
        // Matches only an old line: older pages are read until it is found.
        LogQuery {
            grep: Some("/x2\"".into()),
            ..Default::default()
        },
    ];
    for f in filters {
        for limit in [1, 2, 3, 100] {
            let got = query(f.clone(), limit as i64).await;
            assert_eq!(
                key(&got),
                key(&want(&f, limit)),
                "{limit} lines of {:?} / {:?} / {:?}",
                f.sources,
                f.since,
                f.grep
            );
        }
    }

    // Size retention keeps the newest 3 lines of a (a packed row is kept whole) and all of b.
    store.trim_logs(3).await.unwrap();
    let kept = store.recent_logs("a", 100).await.unwrap();
    assert_eq!(
        kept.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![13, 14, 15]
    );
    assert_eq!(store.recent_logs("b", 100).await.unwrap().len(), 2);
    store.trim_logs(1).await.unwrap();
    let kept = store.recent_logs("a", 100).await.unwrap();
    assert_eq!(kept.iter().map(|l| l.id).collect::<Vec<_>>(), vec![14, 15]);
}

/// On SQLite, where row counts are what packing is for: the run above is stored as 5 rows.
#[tokio::test]
async fn sqlite_stores_packed_runs_as_one_row_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("paas.db"))
        .await
        .unwrap();
    store.append_logs(&packed_sample()).await.unwrap();
    // a's 13 lines are 5 rows: 1-6, 7 (not the router's), 10-12, 13 (a line break), 14-15.
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("paas.db").display()
    ))
    .await
    .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_entries WHERE app_id = 'a'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(rows, 5);
    db.close().await;
    store.close().await;
}
