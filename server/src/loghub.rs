//! The log hub: every log line of every app goes through [`LogHub::publish`] (agent batches, API
//! and STG lines, and the router's RTR lines). The hub stamps each line with an increasing id,
//! keeps the newest lines of each app in memory, fans them out to live subscribers (one tokio
//! broadcast channel per app) and hands them to one writer task that stores them in batches.
//!
//! Why this shape: streaming must not wait for the database, and the database must not take one
//! transaction per line (that caps throughput at a few thousand lines per second). Publishers wait
//! only when the writer is behind by [`WRITE_QUEUE`] batches: that is the backpressure that reaches
//! the agent's HTTP request, and through it the agent's bounded buffer; a line the hub accepted is
//! never dropped on the way to the database.
//!
//! Ids continue from the largest stored id after a restart, so "lines after id N" stays meaningful
//! to clients across controller restarts.

use chrono::{Duration as ChronoDuration, Utc};
use paas_common::api::LogLine;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, Mutex};

use crate::store::{LogQuery, Store, StoreResult};

/// Batches waiting for the writer before publishers wait.
const WRITE_QUEUE: usize = 64;
/// Lines a slow live subscriber may fall behind before it is told it missed some. A 200,000-line
/// burst arrives faster than a client reads it; 16 Ki lines were not enough once the pipeline got
/// faster. The buffer (about 40 bytes a line, 2.5 MiB) exists only while an app has subscribers.
const SUBSCRIBER_BUFFER: usize = 64 * 1024;
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(30);

/// What the hub was told to keep; from the server's `Settings`.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Lines per app kept in memory for new subscribers.
    pub memory_lines: usize,
    /// Stored lines kept per app.
    pub retention_lines: i64,
    /// Stored lines older than this are deleted.
    pub retention_secs: u64,
}

/// Counters exported at `/metrics`.
#[derive(Debug, Default)]
pub struct HubCounters {
    pub lines_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub lines_stored: AtomicU64,
    /// Lines not written because, when the writer got them, they were already beyond their app's
    /// newest `retention_lines` (see [`drop_beyond_retention`]).
    pub lines_beyond_retention: AtomicU64,
    /// Lines a batch write failed to store (database errors), never silently.
    pub lines_store_failed: AtomicU64,
    /// Lines live subscribers missed because they read too slowly.
    pub lines_subscriber_lagged: AtomicU64,
    pub lines_expired: AtomicU64,
}

#[derive(Default)]
struct AppLog {
    ring: VecDeque<Arc<LogLine>>,
    /// The lines this controller received, for who must see each line once across controllers
    /// (drains). Only while someone listens: the channel's buffer is allocated whole.
    tx: Option<broadcast::Sender<Arc<LogLine>>>,
    /// Every line of the app, also those other controllers received (users' live views).
    all_tx: Option<broadcast::Sender<Arc<LogLine>>>,
}

fn live(
    tx: &mut Option<broadcast::Sender<Arc<LogLine>>>,
) -> Option<&broadcast::Sender<Arc<LogLine>>> {
    if tx.as_ref().is_some_and(|t| t.receiver_count() == 0) {
        *tx = None;
    }
    tx.as_ref()
}

struct HubState {
    next_id: i64,
    apps: HashMap<String, AppLog>,
}

/// What the writer task is handed: lines to store, or a flush mark (answered once everything
/// handed before it is stored).
enum ToWriter {
    Lines(Vec<(String, Arc<LogLine>)>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

pub struct LogHub {
    state: Mutex<HubState>,
    writer: mpsc::Sender<ToWriter>,
    store: Arc<dyn Store>,
    settings: HubSettings,
    pub counters: Arc<HubCounters>,
    /// Requests, errors and latency per app from the RTR lines that pass (issue 26's charts).
    pub series: crate::timeseries::Collector,
    /// Per-revision traffic of apps in a canary or blue-green deployment (issue 23).
    pub canary: crate::control::deployments::Traffic,
}

/// Splits `APP/<process>/<index>` into its process and index; other sources have neither.
pub fn split_app_source(source: &str) -> (Option<&str>, Option<u32>) {
    let mut parts = source.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        // A sidecar's lines (`APP/web/0/SIDECAR/NAME`) belong to their instance.
        (Some("APP"), Some(p), Some(i)) => {
            (Some(p), i.split('/').next().and_then(|i| i.parse().ok()))
        }
        (Some("APP"), Some(p), None) => (Some(p), None),
        _ => (None, None),
    }
}

impl LogHub {
    /// Starts the hub and its writer and retention tasks.
    pub async fn start(store: Arc<dyn Store>, settings: HubSettings) -> StoreResult<Arc<Self>> {
        let next_id = store.max_log_id().await? + 1;
        let (writer, rx) = mpsc::channel(WRITE_QUEUE);
        let counters = Arc::new(HubCounters::default());
        let hub = Arc::new(Self {
            state: Mutex::new(HubState {
                next_id,
                apps: HashMap::new(),
            }),
            writer,
            store: store.clone(),
            settings: settings.clone(),
            counters: counters.clone(),
            series: Default::default(),
            canary: Default::default(),
        });
        tokio::spawn(write_loop(
            rx,
            store.clone(),
            counters.clone(),
            settings.retention_lines,
        ));
        if let Some(runs) = store.follow_logs().await? {
            tokio::spawn(follow_peers(Arc::downgrade(&hub), runs));
        }
        tokio::spawn(retention_loop(store, settings, counters));
        Ok(hub)
    }

    /// Publishes one line of `app`.
    pub async fn publish(&self, app: &str, line: LogLine) {
        self.publish_batch(vec![(app.to_string(), line)]).await
    }

    /// Publishes lines (of any apps), in order. Waits only when the database writer is behind.
    pub async fn publish_batch(&self, lines: Vec<(String, LogLine)>) {
        if lines.is_empty() {
            return;
        }
        self.series.observe(&lines);
        self.canary.observe(&lines);
        // One lock for id assignment, fan-out and the hand-off to the writer keeps ids, stream
        // order and storage order the same.
        let mut st = self.state.lock().await;
        let st = &mut *st;
        // Several controllers share one id counter; alone, this one counts by itself (no call
        // on the hot path). A database that cannot be reached stores nothing either: count on
        // from the last id.
        if self.store.shared() {
            match self.store.reserve_log_ids(lines.len() as i64).await {
                Ok(Some(first)) => st.next_id = first,
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot reserve log ids"),
            }
        }
        let mut bytes = 0u64;
        let memory_lines = self.settings.memory_lines.max(1);
        // One allocation per line, shared by the ring, every subscriber and the writer.
        let mut shared_lines = Vec::with_capacity(lines.len());
        // Batches are mostly runs of one app's lines: look its entry up once per run.
        let mut current: Option<(String, &mut AppLog)> = None;
        for (app, mut line) in lines {
            line.id = st.next_id;
            st.next_id += 1;
            bytes += line.message.len() as u64;
            if current.as_ref().is_none_or(|(a, _)| *a != app) {
                let entry = st.apps.entry(app.clone()).or_default();
                live(&mut entry.tx);
                live(&mut entry.all_tx);
                current = Some((app.clone(), entry));
            }
            let Some((_, entry)) = current.as_mut() else {
                continue;
            };
            let shared = Arc::new(line);
            if entry.ring.len() >= memory_lines {
                entry.ring.pop_front();
            }
            entry.ring.push_back(shared.clone());
            // Err only when the last subscriber just left.
            if let Some(tx) = &entry.tx {
                let _ = tx.send(shared.clone());
            }
            if let Some(tx) = &entry.all_tx {
                let _ = tx.send(shared.clone());
            }
            shared_lines.push((app, shared));
        }
        let lines = shared_lines;
        self.counters
            .lines_received
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        self.counters
            .bytes_received
            .fetch_add(bytes, Ordering::Relaxed);
        if self.writer.send(ToWriter::Lines(lines)).await.is_err() {
            tracing::error!("the log writer has stopped; lines are streamed but not stored");
        }
    }

    /// Waits until every line published so far is stored (or its write has failed): a clean
    /// stop loses no line the hub accepted.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.writer.send(ToWriter::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// A live feed of `app`'s lines from now on, whichever controller received them (lines
    /// from other controllers come once stored, so a little later and possibly between newer
    /// ids of this one's).
    pub async fn subscribe(&self, app: &str) -> broadcast::Receiver<Arc<LogLine>> {
        let mut st = self.state.lock().await;
        st.apps
            .entry(app.to_string())
            .or_default()
            .all_tx
            .get_or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER).0)
            .subscribe()
    }

    /// A live feed of the lines of `app` this controller receives: each line reaches exactly
    /// one controller's local feed (drains forward from there, so once).
    pub async fn subscribe_local(&self, app: &str) -> broadcast::Receiver<Arc<LogLine>> {
        let mut st = self.state.lock().await;
        st.apps
            .entry(app.to_string())
            .or_default()
            .tx
            .get_or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER).0)
            .subscribe()
    }

    /// Hands the lines of a run another controller stored to this one's live viewers of the
    /// app, if it has any.
    async fn deliver_peer_run(&self, run: &crate::store::LogRun) {
        {
            let mut st = self.state.lock().await;
            let Some(entry) = st.apps.get_mut(&run.app_id) else {
                return;
            };
            if live(&mut entry.all_tx).is_none() {
                return;
            }
        }
        let lines = match self.store.logs_in_range(&run.app_id, run.lo, run.hi).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, app = %run.app_id, "cannot read another controller's lines");
                return;
            }
        };
        let mut st = self.state.lock().await;
        if let Some(tx) = st
            .apps
            .get_mut(&run.app_id)
            .and_then(|e| live(&mut e.all_tx))
        {
            for l in lines {
                let _ = tx.send(Arc::new(l));
            }
        }
    }

    /// The newest `limit` lines of `app` matching `q`, oldest first: stored lines, plus the ones
    /// still on their way to the database.
    pub async fn recent(&self, app: &str, q: &LogQuery, limit: i64) -> StoreResult<Vec<LogLine>> {
        let mut lines = self.store.query_logs(app, q, limit).await?;
        let last = lines.last().map_or(0, |l| l.id);
        {
            let st = self.state.lock().await;
            if let Some(a) = st.apps.get(app) {
                lines.extend(
                    a.ring
                        .iter()
                        .filter(|l| l.id > last && q.matches(l))
                        .map(|l| (**l).clone()),
                );
            }
        }
        let excess = lines.len().saturating_sub(limit.max(0) as usize);
        lines.drain(..excess);
        Ok(lines)
    }

    /// Forgets the in-memory lines of a deleted app (the store deletes the stored ones).
    pub async fn forget(&self, app: &str) {
        self.state.lock().await.apps.remove(app);
    }

    /// A subscriber fell behind by `n` lines.
    pub fn note_lagged(&self, n: u64) {
        self.counters
            .lines_subscriber_lagged
            .fetch_add(n, Ordering::Relaxed);
    }
}

/// Follows the runs other controllers announce, for as long as the hub lives.
async fn follow_peers(
    hub: std::sync::Weak<LogHub>,
    mut runs: mpsc::Receiver<crate::store::LogRun>,
) {
    while let Some(run) = runs.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        hub.deliver_peer_run(&run).await;
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<ToWriter>,
    store: Arc<dyn Store>,
    counters: Arc<HubCounters>,
    retention_lines: i64,
) {
    let mut batches = Vec::with_capacity(WRITE_QUEUE);
    while rx.recv_many(&mut batches, WRITE_QUEUE).await > 0 {
        let mut lines: Vec<(String, Arc<LogLine>)> = Vec::new();
        for b in batches.drain(..) {
            match b {
                ToWriter::Lines(l) => lines.extend(l),
                ToWriter::Flush(done) => {
                    store_lines(
                        std::mem::take(&mut lines),
                        &store,
                        &counters,
                        retention_lines,
                    )
                    .await;
                    let _ = done.send(());
                }
            }
        }
        store_lines(lines, &store, &counters, retention_lines).await;
    }
}

async fn store_lines(
    mut lines: Vec<(String, Arc<LogLine>)>,
    store: &Arc<dyn Store>,
    counters: &HubCounters,
    retention_lines: i64,
) {
    if lines.is_empty() {
        return;
    }
    let skipped = drop_beyond_retention(&mut lines, retention_lines);
    counters
        .lines_beyond_retention
        .fetch_add(skipped, Ordering::Relaxed);
    let n = lines.len() as u64;
    // A transient database error (busy) is retried a few times before the lines count as
    // failed; the stream already delivered them.
    let mut attempt = 0;
    loop {
        match store.append_logs(&lines).await {
            Ok(()) => {
                counters.lines_stored.fetch_add(n, Ordering::Relaxed);
                // Only other controllers listen: alone, the runs are not even worked out.
                if store.shared() {
                    let runs =
                        crate::store::LogRun::of(lines.iter().map(|(a, l)| (a.as_str(), l.id)));
                    if let Err(e) = store.announce_logs(&runs).await {
                        tracing::warn!(error = %e, "cannot announce stored log lines");
                    }
                }
                break;
            }
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "storing log lines failed, retrying");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => {
                counters.lines_store_failed.fetch_add(n, Ordering::Relaxed);
                tracing::error!(error = %e, lines = n, "could not store log lines");
                break;
            }
        }
    }
}

/// Removes the lines of each app beyond its newest `keep` in this write: the next size trim would
/// delete them, so writing them cost an insert and a delete each for nothing. This happens only
/// when the writer is behind by more than `keep` lines of one app, that is during a flood, which is
/// when the database is the bottleneck. Returns how many were removed.
fn drop_beyond_retention(lines: &mut Vec<(String, Arc<LogLine>)>, keep: i64) -> u64 {
    // 0 or less keeps nothing at the next trim, but a line should reach the database first.
    let Ok(keep) = usize::try_from(keep) else {
        return 0;
    };
    if keep == 0 || lines.len() <= keep {
        return 0;
    }
    let mut wanted = vec![true; lines.len()];
    let mut newer: HashMap<&str, usize> = HashMap::new();
    for (i, (app, _)) in lines.iter().enumerate().rev() {
        let n = newer.entry(app.as_str()).or_insert(0);
        *n += 1;
        wanted[i] = *n <= keep;
    }
    let before = lines.len();
    let mut wanted = wanted.into_iter();
    lines.retain(|_| wanted.next().unwrap_or(true));
    (before - lines.len()) as u64
}

async fn retention_loop(store: Arc<dyn Store>, settings: HubSettings, counters: Arc<HubCounters>) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    loop {
        tick.tick().await;
        let before = Utc::now()
            - ChronoDuration::seconds(settings.retention_secs.min(i64::MAX as u64) as i64);
        match store.trim_logs_before(before).await {
            Ok(n) => {
                counters.lines_expired.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "log retention by age failed"),
        }
        if let Err(e) = store.trim_logs(settings.retention_lines).await {
            tracing::warn!(error = %e, "log retention by size failed");
        }
    }
}

/// Parses `since`: an RFC 3339 time, or a duration back from now such as `90s`, `5m`, `2h`, `1d`.
pub fn parse_since(s: &str) -> Option<chrono::DateTime<Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(s).ok()?;
    Some(Utc::now() - ChronoDuration::from_std(d).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_keeps_each_apps_newest_lines_up_to_the_bound() {
        let mut lines: Vec<(String, Arc<LogLine>)> = (1..=10)
            .map(|i| {
                let app = if i % 3 == 0 { "b" } else { "a" };
                let mut l = line("APP/web/0", &i.to_string());
                l.id = i;
                (app.to_string(), Arc::new(l))
            })
            .collect();
        let ids = |v: &[(String, Arc<LogLine>)]| v.iter().map(|(_, l)| l.id).collect::<Vec<_>>();
        let mut all = lines.clone();
        assert_eq!(drop_beyond_retention(&mut all, 10), 0);
        assert_eq!(drop_beyond_retention(&mut all, 0), 0);
        assert_eq!(ids(&all), (1..=10).collect::<Vec<_>>());
        // a: 1 2 4 5 7 8 10, b: 3 6 9; keep 2 each, in order.
        assert_eq!(drop_beyond_retention(&mut lines, 2), 6);
        assert_eq!(ids(&lines), vec![6, 8, 9, 10]);
    }

    #[test]
    fn splits_app_sources() {
        assert_eq!(split_app_source("APP/web/3"), (Some("web"), Some(3)));
        assert_eq!(
            split_app_source("APP/web/3/SIDECAR/config-server"),
            (Some("web"), Some(3))
        );
        assert_eq!(split_app_source("APP/worker"), (Some("worker"), None));
        assert_eq!(split_app_source("STG"), (None, None));
        assert_eq!(split_app_source("RTR"), (None, None));
    }

    #[test]
    fn parses_since() {
        let t = parse_since("5m").unwrap();
        let ago = Utc::now() - t;
        assert!(
            ago.num_seconds() >= 299 && ago.num_seconds() <= 301,
            "{ago}"
        );
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z").unwrap().to_rfc3339(),
            "2026-01-02T03:04:05+00:00"
        );
        assert!(parse_since("yesterday-ish").is_none());
    }

    fn line(source: &str, msg: &str) -> LogLine {
        LogLine {
            timestamp: Utc::now(),
            source: source.into(),
            stream: "stdout".into(),
            message: msg.into(),
            id: 0,
        }
    }

    #[test]
    fn filters_match_by_source_prefix_instance_and_text() {
        let q = LogQuery {
            sources: vec!["APP".into()],
            ..Default::default()
        };
        assert!(q.matches(&line("APP/web/0", "x")));
        assert!(!q.matches(&line("APPX", "x")));
        assert!(!q.matches(&line("STG", "x")));
        let q = LogQuery {
            sources: vec!["APP/web/1".into(), "CELL".into()],
            ..Default::default()
        };
        assert!(q.matches(&line("APP/web/1", "x")));
        assert!(!q.matches(&line("APP/web/10", "x")));
        assert!(q.matches(&line("CELL", "x")));
        let q = LogQuery {
            instance: Some(2),
            grep: Some("boom".into()),
            ..Default::default()
        };
        assert!(q.matches(&line("APP/web/2", "a boom here")));
        assert!(!q.matches(&line("APP/web/2", "quiet")));
        assert!(!q.matches(&line("APP/web/1", "boom")));
    }
}
