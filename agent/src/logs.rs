//! Log shipping: followers turn each instance container's stdout/stderr into [`AgentLogLine`]s,
//! the reconciler adds `CELL` lines for starts, health and crashes, and one shipper batches them
//! all to the controller. While the controller is unreachable lines wait in a bounded buffer; the
//! oldest are dropped (and counted) rather than letting memory grow without limit.
//!
//! Backpressure: a follower waits for room in the shipper's channel instead of dropping, so a
//! slow controller slows the reading of `docker logs` (the engine keeps the lines meanwhile), and
//! nothing below the rate limit is lost. The per-instance rate limit ([`RateLimit`]: the app's
//! `log-rate-limit-per-second` from its assignment, else the node's default) is the only place
//! app lines are dropped on purpose, and each second's drops are reported in one `CELL` line.

use crate::spool::Spool;
use async_trait::async_trait;
use bollard::container::{LogOutput, LogsOptions};
use bollard::Docker;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use paas_common::agent::AgentLogLine;
use paas_common::domain::format_log_rate_limit;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const MAX_BATCH: usize = 2000;
pub const BATCH_WINDOW: Duration = Duration::from_millis(200);
pub const MAX_BUFFERED: usize = 10_000;
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Where batches go: the controller in production, a vector in tests.
#[async_trait]
pub trait LogUploader: Send + Sync {
    /// Sends one batch (in order); borrowed, so the buffer is not copied for each attempt.
    async fn upload(&self, lines: &[AgentLogLine]) -> Result<(), String>;
}

/// Limits of one instance's output; 0 means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub lines_per_sec: u64,
    pub bytes_per_sec: u64,
}

impl RateLimit {
    fn unlimited(self) -> bool {
        self.lines_per_sec == 0 && self.bytes_per_sec == 0
    }
}

/// Where an instance's limit comes from, for the dropped-count line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LimitSource {
    /// The node's `PAAS_LOG_RATE_LIMIT_*`.
    Node,
    /// The app's `log-rate-limit-per-second`: what it asked for (bytes/s), maybe cut to the
    /// node's ceiling.
    App { asked: u64 },
}

/// The limit in force for one instance and where it comes from.
#[derive(Debug, Clone, Copy)]
struct Applied {
    limit: RateLimit,
    source: LimitSource,
}

/// One instance's fixed one-second window.
struct Window {
    start: Instant,
    lines: u64,
    bytes: u64,
    dropped: u64,
    dropped_bytes: u64,
    applied: Applied,
}

impl Window {
    fn new(now: Instant, applied: Applied) -> Self {
        Self {
            start: now,
            lines: 0,
            bytes: 0,
            dropped: 0,
            dropped_bytes: 0,
            applied,
        }
    }

    /// Takes the drops counted so far as a report.
    fn take(&mut self) -> Option<Dropped> {
        let d = (self.dropped > 0).then_some(Dropped {
            lines: self.dropped,
            bytes: self.dropped_bytes,
            applied: self.applied,
        });
        self.dropped = 0;
        self.dropped_bytes = 0;
        d
    }
}

/// What one window dropped, reported in one `CELL` line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dropped {
    lines: u64,
    bytes: u64,
    applied: Applied,
}

/// The windows and the developers' limits, under one lock: a line takes one lookup.
#[derive(Default)]
struct LimitState {
    windows: HashMap<String, Window>,
    /// Instance id -> the app's limit in bytes/s, from the assignments.
    app_limits: HashMap<String, u64>,
}

/// Counters of what happened to app lines on this node (exported as metrics).
#[derive(Debug, Default)]
pub struct ShipCounters {
    pub lines_read: AtomicU64,
    pub lines_rate_limited: AtomicU64,
    pub lines_shipped: AtomicU64,
    pub lines_buffer_dropped: AtomicU64,
}

/// A cheap handle every producer of log lines holds.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<AgentLogLine>,
    /// The node's default limit per instance.
    limit: RateLimit,
    /// The most bytes/s an app may set for itself on this node; 0: no ceiling.
    app_ceiling: u64,
    state: Arc<Mutex<LimitState>>,
    /// Whether any instance has an app limit: without one, and without a node limit, lines
    /// skip the lock (the unlimited path is the throughput benchmark's).
    any_app_limit: Arc<AtomicBool>,
    pub counters: Arc<ShipCounters>,
}

impl LogSink {
    /// A sink without a rate limit.
    pub fn channel() -> (Self, mpsc::Receiver<AgentLogLine>) {
        Self::with_limits(RateLimit::default())
    }

    /// A sink whose instances get `limit` unless their app sets its own.
    pub fn with_limits(limit: RateLimit) -> (Self, mpsc::Receiver<AgentLogLine>) {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        (Self::new(tx, limit), rx)
    }

    fn new(tx: mpsc::Sender<AgentLogLine>, limit: RateLimit) -> Self {
        Self {
            tx,
            limit,
            app_ceiling: 0,
            state: Arc::default(),
            any_app_limit: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// Caps the limit an app may set for itself (bytes/s, 0: no cap).
    pub fn with_app_ceiling(mut self, bytes_per_sec: u64) -> Self {
        self.app_ceiling = bytes_per_sec;
        self
    }

    /// A sink without a rate limit over a given channel (tests size it to exercise backpressure).
    pub fn from_sender(tx: mpsc::Sender<AgentLogLine>) -> Self {
        Self::new(tx, RateLimit::default())
    }

    /// The limit of an instance whose app sets `app` bytes/s (or nothing). The app's limit
    /// replaces the node's whole default, lines and bytes alike: it is the developer's answer to
    /// "how much may this print", as in Cloud Foundry, where the limit is in bytes only. The node's
    /// ceiling, when set, still caps it.
    fn applied(&self, app: Option<u64>) -> Applied {
        match app {
            None => Applied {
                limit: self.limit,
                source: LimitSource::Node,
            },
            Some(asked) => Applied {
                limit: RateLimit {
                    lines_per_sec: 0,
                    bytes_per_sec: match self.app_ceiling {
                        0 => asked,
                        c => asked.min(c),
                    },
                },
                source: LimitSource::App { asked },
            },
        }
    }

    /// Sets the app limits of the instances assigned now (`None`: the node's default). Called on
    /// every pass of the reconciler; a change applies from the instance's next line, without a
    /// restart. Windows of instances no longer assigned are forgotten once they hold nothing to
    /// report.
    pub fn set_app_limits<'a>(&self, limits: impl IntoIterator<Item = (&'a str, Option<u64>)>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut assigned = std::collections::HashSet::new();
        state.app_limits.clear();
        for (instance, limit) in limits {
            assigned.insert(instance.to_string());
            if let Some(b) = limit {
                state.app_limits.insert(instance.to_string(), b);
            }
        }
        self.any_app_limit
            .store(!state.app_limits.is_empty(), Ordering::Relaxed);
        let LimitState {
            windows,
            app_limits,
        } = &mut *state;
        windows.retain(|id, w| {
            assigned.contains(id) || w.dropped > 0 || w.start.elapsed() < Duration::from_secs(1)
        });
        for (id, w) in windows.iter_mut() {
            w.applied = self.applied(app_limits.get(id).copied());
        }
    }

    /// Counts a line of `instance` against its limit: whether to keep it, and the drops of a
    /// finished window to report.
    fn admit(&self, instance: &str, bytes: u64) -> (bool, Option<Dropped>) {
        if self.limit.unlimited() && !self.any_app_limit.load(Ordering::Relaxed) {
            return (true, None);
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Look up before inserting: `entry` would allocate the key for every line.
        if !state.windows.contains_key(instance) {
            let applied = self.applied(state.app_limits.get(instance).copied());
            state
                .windows
                .insert(instance.to_string(), Window::new(now, applied));
        }
        let Some(w) = state.windows.get_mut(instance) else {
            return (true, None);
        };
        let mut report = None;
        if now.duration_since(w.start) >= Duration::from_secs(1) {
            report = w.take();
            *w = Window::new(now, w.applied);
        }
        let limit = w.applied.limit;
        let over = (limit.lines_per_sec > 0 && w.lines + 1 > limit.lines_per_sec)
            || (limit.bytes_per_sec > 0 && w.bytes + bytes > limit.bytes_per_sec);
        if over {
            w.dropped += 1;
            w.dropped_bytes += bytes;
            return (false, report);
        }
        w.lines += 1;
        w.bytes += bytes;
        (true, report)
    }

    /// Drops of a window that ended while the instance was quiet.
    pub(crate) fn take_finished_drops(&self, instance: &str) -> Option<Dropped> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let w = state.windows.get_mut(instance)?;
        if w.start.elapsed() < Duration::from_secs(1) {
            return None;
        }
        w.take()
    }

    /// Reports a window's drops. Waits for room like an app line: when the channel is full the
    /// report must not be the line that is lost.
    pub(crate) async fn dropped_line(&self, instance_id: &str, d: Dropped) {
        let line = self.drop_report(instance_id, d);
        // Err only when the shipper is gone (shutdown).
        let _ = self.tx.send(line).await;
    }

    /// The `CELL` line reporting a window's drops, counted.
    fn drop_report(&self, instance_id: &str, d: Dropped) -> AgentLogLine {
        self.counters
            .lines_rate_limited
            .fetch_add(d.lines, Ordering::Relaxed);
        let limit = d.applied.limit;
        let what = match d.applied.source {
            LimitSource::Node => format!(
                "{} lines/s, {} bytes/s (the node's default)",
                limit.lines_per_sec, limit.bytes_per_sec
            ),
            LimitSource::App { asked } if asked == limit.bytes_per_sec => format!(
                "{} bytes/s per instance (the app's log-rate-limit-per-second, {})",
                limit.bytes_per_sec,
                format_log_rate_limit(asked)
            ),
            LimitSource::App { asked } => format!(
                "{} bytes/s per instance (the app asked for {}, the node allows at most {})",
                limit.bytes_per_sec,
                format_log_rate_limit(asked),
                format_log_rate_limit(limit.bytes_per_sec)
            ),
        };
        cell_line(
            instance_id,
            format!(
                "dropped {} log lines ({} bytes): the app exceeded its log rate limit of {what}",
                d.lines, d.bytes
            ),
        )
    }

    /// An app line: rate limited per instance, then waits for room (backpressure).
    pub async fn send_app(&self, line: AgentLogLine) {
        self.counters.lines_read.fetch_add(1, Ordering::Relaxed);
        let (keep, report) = self.admit(&line.instance_id, line.message.len() as u64);
        if let Some(d) = report {
            self.dropped_line(&line.instance_id, d).await;
        }
        if keep {
            // Err only when the shipper is gone (shutdown).
            let _ = self.tx.send(line).await;
        }
    }

    /// App lines of one instance read together: each rate limited as by [`LogSink::send_app`],
    /// then handed on in order with one wait for room instead of one per line. A window's
    /// dropped-count report follows the batch: so the batch, reports included, goes whole or not
    /// at all, and a follower stopped while it waits keeps an exact place.
    pub async fn send_app_batch(&self, instance_id: &str, lines: Vec<AgentLogLine>) {
        self.counters
            .lines_read
            .fetch_add(lines.len() as u64, Ordering::Relaxed);
        let mut out = Vec::with_capacity(lines.len());
        let mut reports = Vec::new();
        for line in lines {
            let (admitted, report) = self.admit(instance_id, line.message.len() as u64);
            if let Some(d) = report {
                reports.push(self.drop_report(&line.instance_id, d));
            }
            if admitted {
                out.push(line);
            }
        }
        out.extend(reports);
        let mut lines = out.into_iter();
        while lines.len() > 0 {
            // One reservation for a whole batch (the channel holds MAX_BATCH * 4).
            let n = lines.len().min(self.tx.max_capacity());
            // Err only when the shipper is gone (shutdown).
            let Ok(permits) = self.tx.reserve_many(n).await else {
                return;
            };
            for (permit, line) in permits.zip(&mut lines) {
                permit.send(line);
            }
        }
    }

    /// Sends without waiting: a slow controller must never stall the reconciler or a follower's
    /// container; the shipper's buffer is the only place lines wait.
    pub fn send(&self, line: AgentLogLine) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(line) {
            tracing::debug!("log channel full, dropping a line");
        }
    }

    /// A platform line about one instance or task under its own source (`TASK/<id>`).
    pub fn platform(&self, instance_id: &str, source: &str, message: impl Into<String>) {
        let mut line = cell_line(instance_id, message.into());
        line.source = source.to_string();
        self.send(line);
    }

    /// A platform line about one instance.
    pub fn cell(&self, instance_id: &str, message: impl Into<String>) {
        self.send(cell_line(instance_id, message.into()));
    }

    /// A platform line about one instance that waits for room in the channel.
    pub async fn cell_wait(&self, instance_id: &str, message: impl Into<String>) {
        // Err only when the shipper is gone (shutdown).
        let _ = self.tx.send(cell_line(instance_id, message.into())).await;
    }
}

fn cell_line(instance_id: &str, message: String) -> AgentLogLine {
    AgentLogLine {
        instance_id: instance_id.to_string(),
        timestamp: Utc::now(),
        source: "CELL".into(),
        stream: "out".into(),
        message,
    }
}

/// How far an instance's output has been handed on, shared across its successive followers so a
/// restart of the same container neither ships the previous run's lines again nor skips any.
#[derive(Debug, Default)]
pub struct Progress {
    /// The newest line's time (what the engine's API follower resumes from).
    pub last_seen: Option<DateTime<Utc>>,
    /// The place in the json-file log (what the file collector resumes from).
    pub file: Option<crate::logfile::FilePosition>,
}

pub type LastSeen = Arc<Mutex<Progress>>;

/// Where a new follower of an instance starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowFrom {
    /// A new container: everything it printed.
    Beginning,
    /// An adopted container the previous agent process left no position for: what it prints
    /// from now on.
    Now,
    /// The same container started again: after the last line handed on.
    Continue,
}

/// One instance's follower: what to read and where its lines go.
pub struct Follow {
    pub docker: Docker,
    pub container_id: String,
    /// The container's json-file log, when the collector may read it directly.
    pub log_path: Option<std::path::PathBuf>,
    pub instance_id: String,
    pub app: String,
    pub source: String,
    pub from: FollowFrom,
    pub progress: LastSeen,
    pub sink: LogSink,
}

/// Follows one container's output until the container stops and its output is read: from the
/// json-file log directly when readable (see [`crate::logfile`]), else through the engine's API.
pub async fn follow(f: Follow) {
    if let Some(path) = f.log_path.clone().filter(|p| !p.as_os_str().is_empty()) {
        let start = match f.from {
            FollowFrom::Beginning => crate::logfile::Start::Beginning,
            FollowFrom::Now => crate::logfile::Start::End,
            FollowFrom::Continue => {
                let p = f.progress.lock().unwrap_or_else(|p| p.into_inner());
                crate::logfile::Start::Continue(p.file, p.last_seen)
            }
        };
        let tail = crate::logfile::Tail {
            path: path.clone(),
            instance_id: f.instance_id.clone(),
            app: f.app.clone(),
            source: f.source.clone(),
            progress: f.progress.clone(),
            sink: f.sink.clone(),
            max_held_bytes: crate::logfile::MAX_HELD_BYTES,
        };
        let stopped = wait_stopped(f.docker.clone(), f.container_id.clone());
        match crate::logfile::tail(tail, start, stopped).await {
            Ok(()) => return,
            Err(e) => {
                // Before anything was read (the file is not readable by this process) or on a
                // read error: the engine's API still has the lines; continue from what was
                // handed on.
                tracing::info!(container = %f.container_id, path = %path.display(), error = %e, "cannot read the log file, following through the engine's API");
            }
        }
    }
    let since = {
        let mut p = f.progress.lock().unwrap_or_else(|p| p.into_inner());
        match f.from {
            FollowFrom::Beginning if p.last_seen.is_none() => 0,
            FollowFrom::Now if p.last_seen.is_none() => {
                let now = Utc::now();
                p.last_seen = Some(now);
                now.timestamp()
            }
            _ => p.last_seen.map_or(0, |t| t.timestamp()),
        }
    };
    follow_api(
        f.docker,
        f.container_id,
        f.instance_id,
        f.source,
        since,
        f.progress,
        f.sink,
    )
    .await
}

/// Resolves once the container is not running (its output is then complete in the log).
async fn wait_stopped(docker: Docker, container_id: String) {
    loop {
        let options = bollard::container::WaitContainerOptions {
            condition: "not-running",
        };
        // Any answer, an exit code or an error, means "look again".
        let _ = docker
            .wait_container(&container_id, Some(options))
            .next()
            .await;
        match docker.inspect_container(&container_id, None).await {
            Ok(info) if info.state.as_ref().and_then(|s| s.running).unwrap_or(false) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            _ => return,
        }
    }
}

/// Follows one container's output through the engine's API until the container stops.
#[allow(clippy::too_many_arguments)]
async fn follow_api(
    docker: Docker,
    container_id: String,
    instance_id: String,
    source: String,
    since: i64,
    last_seen: LastSeen,
    sink: LogSink,
) {
    let options = LogsOptions {
        follow: true,
        stdout: true,
        stderr: true,
        since,
        timestamps: true,
        tail: "all".to_string(),
        ..Default::default()
    };
    let mut stream = docker.logs(&container_id, Some(options));
    loop {
        // Wake up at least every second so a flood that just stopped still gets its drop count.
        let item = match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(_) => {
                if let Some(d) = sink.take_finished_drops(&instance_id) {
                    sink.dropped_line(&instance_id, d).await;
                }
                continue;
            }
        };
        let (stream_name, message) = match item {
            Ok(LogOutput::StdOut { message }) => ("stdout", message),
            Ok(LogOutput::StdErr { message }) => ("stderr", message),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(container = %container_id, error = %e, "log stream ended");
                break;
            }
        };
        for raw in String::from_utf8_lossy(&message).lines() {
            let Some((timestamp, text)) = parse_line(raw) else {
                continue;
            };
            {
                let mut p = last_seen.lock().unwrap_or_else(|p| p.into_inner());
                if p.last_seen.is_some_and(|l| timestamp <= l) {
                    continue;
                }
                p.last_seen = Some(timestamp);
            }
            sink.send_app(AgentLogLine {
                instance_id: instance_id.clone(),
                timestamp,
                source: source.clone(),
                stream: stream_name.into(),
                message: text.to_string(),
            })
            .await;
        }
    }
    if let Some(d) = sink.take_finished_drops(&instance_id) {
        sink.dropped_line(&instance_id, d).await;
    }
}

/// Splits docker's `<RFC 3339 timestamp> <text>`.
fn parse_line(raw: &str) -> Option<(DateTime<Utc>, &str)> {
    let (ts, text) = raw.split_once(' ').unwrap_or((raw, ""));
    let ts = paas_common::logwire::parse_rfc3339(ts)?;
    Some((ts, text.trim_end_matches('\r')))
}

/// Batches lines (up to [`MAX_BATCH`] or [`BATCH_WINDOW`]) and uploads them, retrying with
/// backoff. Returns when every sink is dropped and the buffer is empty.
pub async fn ship(mut rx: mpsc::Receiver<AgentLogLine>, uploader: Arc<dyn LogUploader>) {
    ship_counted(&mut rx, uploader, Arc::default(), None).await
}

/// [`ship`], counting shipped and dropped lines in `counters`, and moving the overflow of the
/// memory buffer to `spool` (when given) while the controller is unreachable.
pub async fn ship_counted(
    rx: &mut mpsc::Receiver<AgentLogLine>,
    uploader: Arc<dyn LogUploader>,
    counters: Arc<ShipCounters>,
    mut spool: Option<Spool>,
) {
    let mut buffer = Buffer {
        counters: counters.clone(),
        ..Buffer::default()
    };
    let mut retry = RETRY_MIN;
    let mut failing = false;
    let mut closed = false;
    let mut next_send: Option<Instant> = None;
    let mut incoming = Vec::with_capacity(MAX_BATCH);
    loop {
        let spooled = spool.as_ref().is_some_and(|s| !s.is_empty());
        if buffer.lines.is_empty() && !spooled {
            if closed {
                return;
            }
            match rx.recv().await {
                Some(line) => buffer.push(line, &mut spool),
                None => return,
            }
        }
        let deadline = *next_send.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
        while !closed && (buffer.lines.len() < MAX_BATCH || failing) {
            // Everything waiting at once: a wake-up per line cost more than the line.
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut incoming, MAX_BATCH)).await {
                Ok(0) => closed = true,
                Ok(_) => {
                    for line in incoming.drain(..) {
                        buffer.push(line, &mut spool);
                    }
                }
                Err(_) => break,
            }
        }
        if closed && failing {
            // Nobody will produce more; a dead controller must not keep the process alive. What
            // is in the spool is sent after the next start.
            tracing::warn!(
                lines = buffer.lines.len(),
                "dropping unsent log lines at shutdown"
            );
            return;
        }
        // The spool holds the oldest lines: send them first.
        let mut from_spool = None;
        if let Some(s) = spool.as_mut().filter(|s| !s.is_empty()) {
            match s.peek(MAX_BATCH) {
                Ok((lines, end)) => from_spool = Some((lines, end)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the log spool; discarding it");
                    spool = None;
                }
            }
        }
        let batch: &[AgentLogLine] = match &from_spool {
            Some((lines, _)) => lines,
            None => {
                let all = buffer.lines.make_contiguous();
                &all[..all.len().min(MAX_BATCH)]
            }
        };
        let sent = batch.len();
        match uploader.upload(batch).await {
            Ok(()) => {
                match from_spool {
                    Some((_, end)) => {
                        if let Some(Err(e)) = spool.as_mut().map(|s| s.consume(end)) {
                            tracing::warn!(error = %e, "cannot truncate the log spool; discarding it");
                            spool = None;
                        }
                    }
                    None => {
                        buffer.lines.drain(..sent);
                    }
                }
                counters
                    .lines_shipped
                    .fetch_add(sent as u64, Ordering::Relaxed);
                if failing {
                    tracing::info!(dropped = buffer.dropped, "log upload recovered");
                    buffer.dropped = 0;
                }
                failing = false;
                retry = RETRY_MIN;
                next_send = None;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "log upload failed, buffering");
                }
                failing = true;
                next_send = Some(Instant::now() + retry);
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

#[derive(Default)]
struct Buffer {
    lines: VecDeque<AgentLogLine>,
    dropped: u64,
    counters: Arc<ShipCounters>,
}

impl Buffer {
    fn push(&mut self, line: AgentLogLine, spool: &mut Option<Spool>) {
        if self.lines.len() >= MAX_BUFFERED {
            if let Some(s) = spool.as_mut() {
                // Move the older half to disk in one write; order is kept because the spool is
                // always sent before memory.
                let half = self.lines.len() / 2;
                match s.append(self.lines.drain(..half)) {
                    Ok(dropped) => {
                        self.note_dropped(dropped);
                        self.lines.push_back(line);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write the log spool; keeping lines in memory only");
                        *spool = None;
                    }
                }
            }
        }
        if self.lines.len() >= MAX_BUFFERED {
            self.lines.pop_front();
            self.note_dropped(1);
        }
        self.lines.push_back(line);
    }

    fn note_dropped(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let before = self.dropped;
        self.dropped += n;
        self.counters
            .lines_buffer_dropped
            .fetch_add(n, Ordering::Relaxed);
        // Log at powers of two so a long outage does not flood the agent's own log.
        if before.leading_zeros() != self.dropped.leading_zeros() {
            tracing::warn!(
                dropped = self.dropped,
                "log buffer full, dropping oldest lines"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn parses_docker_timestamps() {
        let (ts, text) = parse_line("2024-05-01T10:00:00.123456789Z hello world\r").unwrap();
        assert_eq!(text, "hello world");
        assert_eq!(ts.timestamp(), 1714557600);
        assert!(parse_line("garbage").is_none());
    }

    struct Flaky {
        fail_first: AtomicUsize,
        got: Mutex<Vec<AgentLogLine>>,
    }

    #[async_trait]
    impl LogUploader for Flaky {
        async fn upload(&self, batch: &[AgentLogLine]) -> Result<(), String> {
            if self.fail_first.load(Ordering::SeqCst) > 0 {
                self.fail_first.fetch_sub(1, Ordering::SeqCst);
                return Err("controller down".into());
            }
            assert!(batch.len() <= MAX_BATCH);
            self.got.lock().unwrap().extend(batch.iter().cloned());
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn batches_and_retries_without_loss() {
        let uploader = Arc::new(Flaky {
            fail_first: AtomicUsize::new(2),
            got: Mutex::default(),
        });
        let (sink, rx) = LogSink::channel();
        let shipper = tokio::spawn(ship(rx, uploader.clone()));
        for i in 0..1200 {
            sink.cell("i1", format!("line {i}"));
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Keep the sink until everything has been sent, then close.
        while uploader.got.lock().unwrap().len() < 1200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(sink);
        shipper.await.unwrap();
        let got = uploader.got.lock().unwrap();
        let messages: Vec<_> = got.iter().map(|l| l.message.clone()).collect();
        let expected: Vec<_> = (0..1200).map(|i| format!("line {i}")).collect();
        assert_eq!(messages, expected);
    }

    fn app_line(i: usize) -> AgentLogLine {
        AgentLogLine {
            instance_id: "i1".into(),
            timestamp: Utc::now(),
            source: "APP/web/0".into(),
            stream: "stdout".into(),
            message: format!("line {i}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_longer_than_memory_spills_to_disk_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path().join("spool.jsonl"), 64 * 1024 * 1024).unwrap();
        let uploader = Arc::new(Flaky {
            fail_first: AtomicUsize::new(4),
            got: Mutex::default(),
        });
        let (sink, mut rx) = LogSink::channel();
        let counters = sink.counters.clone();
        let up = uploader.clone();
        let shipper =
            tokio::spawn(async move { ship_counted(&mut rx, up, counters, Some(spool)).await });
        let total = MAX_BUFFERED * 3;
        for i in 0..total {
            sink.send_app(app_line(i)).await;
        }
        while uploader.got.lock().unwrap().len() < total {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let counters = sink.counters.clone();
        drop(sink);
        shipper.await.unwrap();
        let got = uploader.got.lock().unwrap();
        let messages: Vec<_> = got.iter().map(|l| l.message.clone()).collect();
        let expected: Vec<_> = (0..total).map(|i| format!("line {i}")).collect();
        assert!(messages == expected, "lines lost or out of order");
        assert_eq!(counters.lines_buffer_dropped.load(Ordering::SeqCst), 0);
        assert_eq!(counters.lines_shipped.load(Ordering::SeqCst), total as u64);
        // The spool was emptied once sent.
        assert_eq!(
            std::fs::metadata(dir.path().join("spool.jsonl"))
                .unwrap()
                .len(),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_spool_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        // Room for a few thousand lines only.
        let spool = Spool::open(dir.path().join("spool.jsonl"), 300 * 1024).unwrap();
        let uploader = Arc::new(Flaky {
            fail_first: AtomicUsize::new(5),
            got: Mutex::default(),
        });
        let (sink, mut rx) = LogSink::channel();
        let counters = sink.counters.clone();
        let up = uploader.clone();
        let shipper =
            tokio::spawn(async move { ship_counted(&mut rx, up, counters, Some(spool)).await });
        let total = MAX_BUFFERED * 4;
        for i in 0..total {
            sink.send_app(app_line(i)).await;
        }
        let counters = sink.counters.clone();
        loop {
            let got = uploader.got.lock().unwrap().len() as u64;
            if got + counters.lines_buffer_dropped.load(Ordering::SeqCst) >= total as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(sink);
        shipper.await.unwrap();
        let dropped = counters.lines_buffer_dropped.load(Ordering::SeqCst);
        let got = uploader.got.lock().unwrap();
        assert!(dropped > 0);
        assert_eq!(got.len() as u64 + dropped, total as u64);
        // What arrived is still in order.
        let ns: Vec<usize> = got
            .iter()
            .map(|l| l.message[5..].parse().unwrap())
            .collect();
        assert!(ns.windows(2).all(|w| w[0] < w[1]));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_keeps_the_limit_and_reports_the_rest() {
        let (sink, mut rx) = LogSink::with_limits(RateLimit {
            lines_per_sec: 100,
            bytes_per_sec: 0,
        });
        for i in 0..1000 {
            sink.send_app(app_line(i)).await;
        }
        tokio::time::sleep(Duration::from_millis(1001)).await;
        assert_eq!(sink.take_finished_drops("i1").map(|d| d.lines), Some(900));
        assert!(sink.take_finished_drops("i1").is_none());
        let mut kept = 0;
        while let Ok(l) = rx.try_recv() {
            assert_eq!(l.message, format!("line {kept}"));
            kept += 1;
        }
        assert_eq!(kept, 100);
        // Another instance has its own budget; a new window admits again.
        sink.send_app(AgentLogLine {
            instance_id: "i2".into(),
            ..app_line(0)
        })
        .await;
        sink.send_app(app_line(1000)).await;
        assert_eq!(rx.try_recv().unwrap().message, "line 0");
        assert_eq!(rx.try_recv().unwrap().message, "line 1000");
    }

    #[tokio::test(start_paused = true)]
    async fn the_byte_limit_counts_too() {
        let (sink, mut rx) = LogSink::with_limits(RateLimit {
            lines_per_sec: 0,
            bytes_per_sec: 66,
        });
        for i in 0..20 {
            sink.send_app(app_line(i)).await;
        }
        // "line 0".."line 9" are 6 bytes each, then 7: 66 bytes hold ten lines and no more.
        let mut kept = 0;
        while rx.try_recv().is_ok() {
            kept += 1;
        }
        assert_eq!(kept, 10);
        tokio::time::sleep(Duration::from_millis(1001)).await;
        sink.send_app(app_line(99)).await;
        // The next admitted line first reports the previous window's drops as a CELL line.
        let report = rx.try_recv().unwrap();
        assert_eq!(report.source, "CELL");
        assert!(
            report.message.starts_with("dropped 10 log lines (")
                && report
                    .message
                    .ends_with("0 lines/s, 66 bytes/s (the node's default)"),
            "{}",
            report.message
        );
        assert_eq!(rx.try_recv().unwrap().message, "line 99");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_limited_like_single_lines_and_reports_after_its_lines() {
        let (sink, mut rx) = LogSink::with_limits(RateLimit {
            lines_per_sec: 100,
            bytes_per_sec: 0,
        });
        sink.send_app_batch("i1", (0..250).map(app_line).collect())
            .await;
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|l| l.message)
            .collect();
        assert_eq!(
            got,
            (0..100).map(|i| format!("line {i}")).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(1001)).await;
        sink.send_app_batch("i1", (250..253).map(app_line).collect())
            .await;
        let got: Vec<AgentLogLine> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].message, "line 250");
        assert_eq!(got[2].message, "line 252");
        assert_eq!(got[3].source, "CELL");
        assert!(
            got[3].message.starts_with("dropped 150 log lines"),
            "{}",
            got[3].message
        );
        assert_eq!(
            sink.counters.lines_rate_limited.load(Ordering::Relaxed),
            150
        );
        assert_eq!(sink.counters.lines_read.load(Ordering::Relaxed), 253);
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_limit_replaces_the_node_default_while_the_instance_runs() {
        let (sink, mut rx) = LogSink::with_limits(RateLimit {
            lines_per_sec: 1000,
            bytes_per_sec: 0,
        });
        // "line 0".."line 9" are 6 bytes each: 30 bytes/s admit five lines a second.
        sink.set_app_limits([("i1", Some(30)), ("i2", None)]);
        for i in 0..10 {
            sink.send_app(app_line(i)).await;
        }
        let kept = std::iter::from_fn(|| rx.try_recv().ok()).count();
        assert_eq!(kept, 5);
        tokio::time::sleep(Duration::from_millis(1001)).await;
        let d = sink.take_finished_drops("i1").unwrap();
        let report = sink.drop_report("i1", d);
        assert_eq!(
            report.message,
            "dropped 5 log lines (30 bytes): the app exceeded its log rate limit of 30 bytes/s \
             per instance (the app's log-rate-limit-per-second, 30B)"
        );
        // Raised while running: the same instance keeps everything from its next line on.
        sink.set_app_limits([("i1", Some(1 << 20))]);
        for i in 0..10 {
            sink.send_app(app_line(i)).await;
        }
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 10);
        // Back to the node's default (1000 lines/s, no byte limit), from a fresh window.
        sink.set_app_limits([("i1", None)]);
        tokio::time::sleep(Duration::from_millis(1001)).await;
        for i in 0..1001 {
            sink.send_app(app_line(i)).await;
        }
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_node_ceiling_caps_an_app_limit_and_says_so() {
        let (sink, mut rx) = LogSink::with_limits(RateLimit::default());
        let sink = sink.with_app_ceiling(12);
        sink.set_app_limits([("i1", Some(1024))]);
        for i in 0..5 {
            sink.send_app(app_line(i)).await;
        }
        assert_eq!(std::iter::from_fn(|| rx.try_recv().ok()).count(), 2);
        tokio::time::sleep(Duration::from_millis(1001)).await;
        let d = sink.take_finished_drops("i1").unwrap();
        let message = sink.drop_report("i1", d).message;
        assert!(
            message.ends_with(
                "of 12 bytes/s per instance (the app asked for 1K, the node allows at most 12B)"
            ),
            "{message}"
        );
    }
}
