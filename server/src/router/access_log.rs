//! RTR access-log lines: one per proxied request, in the app's log stream. The request path
//! never waits: a worker thread of the listener gathers its lines in a buffer of its own and
//! hands them over in bunches (every [`LOCAL_BATCH`] lines, and at least every [`LOCAL_FLUSH`])
//! with a non-blocking `try_send` into a bounded queue, since a queue shared by every thread is
//! a few contended atomic operations per line; any other thread sends each line at once. One
//! background task drains the queue and writes batches to a [`Sink`] (the log hub in the
//! controller, the controller's API in a standalone router), so a slow database never slows a
//! request (a full queue drops the lines and counts them in `access_log_dropped`).

use chrono::Utc;
use paas_common::api::LogLine;
use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

use super::RouteTable;

/// Bunches of lines the queue holds (at least 1 Ki lines, about 64 Ki from busy workers).
const QUEUE: usize = 1_024;
const BATCH: usize = 1_000;
/// Lines a worker thread gathers before it hands them over.
pub const LOCAL_BATCH: usize = 64;
/// Longest a line waits in a worker thread's buffer.
pub const LOCAL_FLUSH: Duration = Duration::from_millis(50);
/// How long the writer gathers lines after the first one, so a busy app costs one transaction per
/// interval rather than one per request.
const LINGER: Duration = Duration::from_millis(200);

type Lines = Vec<(String, LogLine)>;

thread_local! {
    /// Set on the listener's worker threads: their lines are gathered in `PENDING`.
    static BUFFERED: Cell<bool> = const { Cell::new(false) };
    static PENDING: RefCell<Lines> = const { RefCell::new(Vec::new()) };
}

/// Makes this thread gather its lines (a worker thread, which calls [`flush_here`] every
/// [`LOCAL_FLUSH`] and before it ends).
pub fn buffer_here() {
    BUFFERED.with(|b| b.set(true));
}

/// Hands this thread's gathered lines to the writer.
pub fn flush_here(table: &RouteTable) {
    let lines = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if !lines.is_empty() {
        send(table, lines);
    }
}

fn send(table: &RouteTable, lines: Lines) {
    let n = lines.len() as u64;
    if table.access_log.tx.try_send(lines).is_err() {
        table
            .stats
            .here()
            .access_log_dropped
            .fetch_add(n, Ordering::Relaxed);
    }
}

pub struct AccessLog {
    tx: mpsc::Sender<Lines>,
    rx: Mutex<Option<mpsc::Receiver<Lines>>>,
    closing: tokio::sync::Notify,
}

impl AccessLog {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            closing: tokio::sync::Notify::new(),
        }
    }

    /// Tells the writer to write what is queued now, without lingering, and end ([`run`] then
    /// returns): the last step of a graceful stop, once no request is in flight.
    pub fn close(&self) {
        self.closing.notify_one();
    }
}

impl Default for AccessLog {
    fn default() -> Self {
        Self::new()
    }
}

/// What one RTR line says.
pub struct Entry<'a> {
    pub app: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    /// `index@address`, or `-` when no instance answered.
    pub instance: Option<(u32, &'a str)>,
    pub request_id: &'a str,
    pub peer: &'a str,
    /// The revision of the instance the request went to (or was meant for): canary analysis
    /// reads it back (`rev=N`, issue 23).
    pub revision: Option<i64>,
}

/// Queues one RTR line; never waits. Runs on the proxy's threads once per request, so the
/// message is written in one pass into one buffer (no float formatting, no temporary strings).
pub fn record(table: &RouteTable, e: Entry<'_>) {
    use std::fmt::Write;
    let mut message = String::with_capacity(160 + e.path.len());
    let us = e.duration.as_micros();
    let _ = write!(
        message,
        "\"{} {}\" {} bytes={} duration_ms={}.{:03} instance=",
        e.method,
        e.path,
        e.status,
        e.bytes,
        us / 1000,
        us % 1000
    );
    let _ = match e.instance {
        Some((i, a)) => write!(message, "{i}@{a}"),
        None => write!(message, "-"),
    };
    let _ = write!(message, " request_id={} peer={}", e.request_id, e.peer);
    if let Some(r) = e.revision.filter(|r| *r > 0) {
        let _ = write!(message, " rev={r}");
    }
    let line = LogLine {
        id: 0,
        timestamp: Utc::now(),
        source: "RTR".into(),
        stream: "out".into(),
        message,
    };
    let item = (e.app.to_string(), line);
    if !BUFFERED.with(Cell::get) {
        send(table, vec![item]);
        return;
    }
    let full = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.capacity() == 0 {
            p.reserve_exact(LOCAL_BATCH);
        }
        p.push(item);
        p.len() >= LOCAL_BATCH
    });
    if full {
        flush_here(table);
    }
}

/// Where batches of RTR lines go: the store (router in the controller) or the controller's API
/// (standalone router).
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    async fn write(&self, lines: Vec<(String, LogLine)>) -> Result<(), String>;
}

/// The controller's log hub: RTR lines are stored and reach live `logs -f` streams like any other.
pub struct HubSink(pub Arc<crate::loghub::LogHub>);

#[async_trait::async_trait]
impl Sink for HubSink {
    async fn write(&self, lines: Vec<(String, LogLine)>) -> Result<(), String> {
        self.0.publish_batch(lines).await;
        Ok(())
    }
}

/// The writer task; runs until [`AccessLog::close`], then writes what is queued and returns.
/// Started once (a second call returns at once).
pub async fn run(table: Arc<RouteTable>, sink: impl Sink) {
    let rx = table.access_log.rx.lock().ok().and_then(|mut r| r.take());
    let Some(mut rx) = rx else { return };
    let closing = &table.access_log.closing;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let mut closed = tokio::select! {
            first = rx.recv() => match first {
                Some(l) => {
                    batch.extend(l);
                    false
                }
                None => return,
            },
            _ = closing.notified() => true,
        };
        // Sleep through the linger, then take what queued up. Awaiting `recv` here instead would
        // have every request wake this task from the proxy's thread: a cross-thread wake-up (a
        // futex call and a context switch) per request, which cost more CPU than the line.
        if !closed {
            tokio::select! {
                _ = tokio::time::sleep(LINGER) => {}
                _ = closing.notified() => closed = true,
            }
        }
        loop {
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(l) => batch.extend(l),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let n = batch.len();
            // Each app's lines together (in their order): the store keeps a run of one app's
            // lines as one row.
            batch.sort_by(|a, b| a.0.cmp(&b.0));
            let lines = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if let Err(e) = sink.write(lines).await {
                tracing::warn!(error = %e, lines = n, "writing RTR access-log lines failed");
            }
            if n < BATCH {
                break;
            }
        }
        if closed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rtr_line_says_what_happened() {
        let table = RouteTable::default();
        let mut rx = table.access_log.rx.lock().unwrap().take().unwrap();
        let entry = || Entry {
            app: "shop",
            method: "POST",
            path: "/cart?x=1",
            status: 201,
            bytes: 512,
            duration: Duration::from_micros(12_345),
            instance: Some((2, "10.0.0.5:40001")),
            request_id: "rid-1",
            peer: "10.1.2.3",
            revision: None,
        };
        record(&table, entry());
        record(
            &table,
            Entry {
                status: 503,
                bytes: 0,
                duration: Duration::from_micros(7),
                instance: None,
                revision: Some(7),
                ..entry()
            },
        );
        let (app, line) = rx.try_recv().unwrap().remove(0);
        assert_eq!(app, "shop");
        assert_eq!(line.source, "RTR");
        assert_eq!(
            line.message,
            "\"POST /cart?x=1\" 201 bytes=512 duration_ms=12.345 instance=2@10.0.0.5:40001 request_id=rid-1 peer=10.1.2.3"
        );
        let (_, line) = rx.try_recv().unwrap().remove(0);
        assert_eq!(
            line.message,
            "\"POST /cart?x=1\" 503 bytes=0 duration_ms=0.007 instance=- request_id=rid-1 peer=10.1.2.3 rev=7"
        );
    }

    #[test]
    fn a_worker_thread_hands_its_lines_over_in_bunches() {
        let table = RouteTable::default();
        let mut rx = table.access_log.rx.lock().unwrap().take().unwrap();
        let entry = Entry {
            app: "shop",
            method: "GET",
            path: "/",
            status: 200,
            bytes: 1,
            duration: Duration::from_micros(1),
            instance: None,
            request_id: "r",
            peer: "p",
            revision: None,
        };
        std::thread::scope(|t| {
            t.spawn(|| {
                buffer_here();
                for _ in 0..3 {
                    record(&table, Entry { ..entry });
                }
                assert!(rx.try_recv().is_err(), "nothing handed over before a flush");
                flush_here(&table);
                assert_eq!(rx.try_recv().unwrap().len(), 3);
                for _ in 0..LOCAL_BATCH {
                    record(&table, Entry { ..entry });
                }
                assert_eq!(rx.try_recv().unwrap().len(), LOCAL_BATCH);
                flush_here(&table);
                assert!(rx.try_recv().is_err(), "an empty buffer sends nothing");
            });
        });
    }
}
