//! Each app's metrics over time (issue 26): requests, 5xx answers and latency from the router's
//! RTR lines, memory and CPU per instance from the nodes' samples, restarts, kept at 10 s
//! resolution for a day and served to the dashboard's charts and `GET /v1/apps/{name}/metrics`.
//!
//! The traffic side is read from the RTR lines as they reach the log hub, not counted in the
//! proxy: every router, in the controller or standalone, already sends them there, so charts
//! cover all of them and the request path pays nothing more. The [`Collector`] adds each line to
//! its app's open interval; [`run`] closes the interval every [`RESOLUTION_SECS`], adds what the
//! nodes last reported, and stores one row per deployed app.

use chrono::{DateTime, TimeZone, Utc};
use paas_common::api::{AppMetrics, InstanceMetric, LogLine, MetricMark, MetricPoint};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::state::AppCtx;
use crate::store::{EventFilter, MetricRow, StoreResult};

/// Seconds per stored point.
pub const RESOLUTION_SECS: i64 = 10;
/// How long points are kept.
pub const RETENTION_SECS: i64 = 24 * 3600;
/// Latency samples kept per app and interval (a uniform sample beyond this).
const SAMPLES: usize = 2048;

#[derive(Default)]
struct Bucket {
    requests: u64,
    errors: u64,
    latencies_ms: Vec<f64>,
}

/// The open interval of every app with traffic, by app id.
#[derive(Default)]
pub struct Collector {
    open: Mutex<HashMap<String, Bucket>>,
}

impl Collector {
    /// Counts the RTR lines among `lines` (app id, line), as the log hub publishes them.
    pub fn observe(&self, lines: &[(String, LogLine)]) {
        let mut rtr = lines
            .iter()
            .filter(|(_, l)| l.source == "RTR")
            .filter_map(|(app, l)| parse_rtr(&l.message).map(|p| (app, p)))
            .peekable();
        if rtr.peek().is_none() {
            return;
        }
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        for (app, (status, ms)) in rtr {
            let b = open.entry(app.clone()).or_default();
            b.requests += 1;
            if status >= 500 {
                b.errors += 1;
            }
            if b.latencies_ms.len() < SAMPLES {
                b.latencies_ms.push(ms);
            } else {
                // Reservoir sampling keeps a uniform sample of the interval's requests.
                let k = rand::random::<u64>() % b.requests;
                if let Some(slot) = b.latencies_ms.get_mut(k as usize) {
                    *slot = ms;
                }
            }
        }
    }

    fn take(&self) -> HashMap<String, Bucket> {
        self.open
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default()
    }
}

/// Status and duration of an RTR line (`"GET /" 200 bytes=5 duration_ms=1.234 ...`).
pub fn parse_rtr(message: &str) -> Option<(u16, f64)> {
    let rest = &message[message.rfind("\" ")? + 2..];
    let mut words = rest.split(' ');
    let status = words.next()?.parse().ok()?;
    let ms = words
        .find_map(|w| w.strip_prefix("duration_ms="))?
        .parse()
        .ok()?;
    Some((status, ms))
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied()
}

/// Closes the interval that started at `ts`: one row per deployed app.
pub async fn flush(ctx: &AppCtx, ts: i64) -> StoreResult<usize> {
    let mut open = ctx.logs.series.take();
    let apps = ctx.store.list_apps().await?;
    let instances = ctx.store.list_instances().await?;
    let mut rows = Vec::new();
    for app in apps.iter().filter(|a| a.current_revision.is_some()) {
        let bucket = open.remove(&app.id).unwrap_or_default();
        let mut lat = bucket.latencies_ms;
        lat.sort_by(f64::total_cmp);
        let usage = ctx.store.app_usage(&app.id).await?;
        let mut per_instance: Vec<(u32, u64, f64)> = Vec::new();
        let mut restarts = 0u64;
        for i in instances.iter().filter(|i| i.app_id == app.id) {
            restarts += u64::from(i.restarts);
            if let Some(u) = usage.get(&i.id) {
                per_instance.push((i.index, u.memory_bytes, u.cpu_percent));
            }
        }
        per_instance.sort_by_key(|p| p.0);
        rows.push(MetricRow {
            app_id: app.id.clone(),
            ts,
            requests: bucket.requests,
            errors: bucket.errors,
            p50_ms: quantile(&lat, 0.5),
            p99_ms: quantile(&lat, 0.99),
            memory_bytes: per_instance.iter().map(|p| p.1).sum(),
            cpu_percent: per_instance.iter().map(|p| p.2).sum(),
            restarts,
            instances: per_instance,
        });
    }
    ctx.store.add_app_metrics(&rows).await?;
    Ok(rows.len())
}

/// Closes an interval every [`RESOLUTION_SECS`] (on the wall clock's multiples, so every
/// controller's points line up) and drops points older than a day.
pub async fn run(ctx: std::sync::Arc<AppCtx>) {
    loop {
        let now = Utc::now().timestamp_millis();
        let step = RESOLUTION_SECS * 1000;
        let next = (now / step + 1) * step;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis((next - now) as u64)) => {}
            _ = ctx.stopping.cancelled() => return,
        }
        let ts = next / 1000 - RESOLUTION_SECS;
        if let Err(e) = flush(&ctx, ts).await {
            tracing::warn!(error = %e, "storing app metrics failed");
        }
        if ts % 600 == 0 {
            if let Err(e) = ctx.store.trim_app_metrics(ts - RETENTION_SECS).await {
                tracing::warn!(error = %e, "trimming app metrics failed");
            }
        }
    }
}

/// A window length like `15m`, `1h`, `6h`, `1d` (at most a day).
pub fn parse_window(s: &str) -> Option<i64> {
    // The unit is the last character (any text may arrive here: split on a char boundary).
    let unit_at = s.char_indices().last()?.0;
    let (n, unit) = s.split_at(unit_at);
    let n: i64 = n.parse().ok()?;
    let secs = match unit {
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    };
    (secs > 0 && secs <= RETENTION_SECS).then_some(secs)
}

/// Event kinds marked on the charts' time axis.
fn mark_kind(kind: &str) -> Option<&'static str> {
    match kind {
        "app.push" | "app.rollback" | "app.restart" | "app.env" | "app.scale" | "app.start" => {
            Some("deploy")
        }
        "instance.crash" => Some("crash"),
        _ => None,
    }
}

/// One app's points of the last `secs` seconds, with its deploys and crashes.
pub async fn window(ctx: &AppCtx, app_id: &str, secs: i64) -> StoreResult<AppMetrics> {
    let since = Utc::now().timestamp() - secs;
    let points = ctx
        .store
        .app_metrics(app_id, since)
        .await?
        .into_iter()
        .map(|r| MetricPoint {
            time: Utc.timestamp_opt(r.ts, 0).single().unwrap_or_default(),
            requests: r.requests,
            errors: r.errors,
            p50_ms: r.p50_ms,
            p99_ms: r.p99_ms,
            memory_bytes: r.memory_bytes,
            cpu_percent: r.cpu_percent,
            restarts: r.restarts,
            instances: r
                .instances
                .into_iter()
                .map(|(index, memory_bytes, cpu_percent)| InstanceMetric {
                    index,
                    memory_bytes,
                    cpu_percent,
                })
                .collect(),
        })
        .collect();
    let since_time: DateTime<Utc> = Utc.timestamp_opt(since, 0).single().unwrap_or_default();
    let filter = EventFilter {
        app_id: Some(app_id.to_string()),
        actor: None,
        since_id: None,
    };
    // Newest events are what a window shows: read from the end of the app's history.
    let total = ctx.store.count_events(&filter).await?;
    let skip = total.saturating_sub(500);
    let mut marks = Vec::new();
    let mut after = None;
    let mut seen = 0u64;
    loop {
        let rows = ctx.store.list_events(&filter, after, 500).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        for r in &rows {
            seen += 1;
            if seen <= skip || r.time < since_time {
                continue;
            }
            if let Some(kind) = mark_kind(&r.event.kind) {
                marks.push(MetricMark {
                    time: r.time,
                    kind: kind.into(),
                    message: r.event.message.clone(),
                });
            }
        }
        if rows.len() < 500 {
            break;
        }
    }
    Ok(AppMetrics {
        resolution_secs: RESOLUTION_SECS as u32,
        points,
        marks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtr_lines_give_status_and_duration() {
        assert_eq!(
            parse_rtr("\"GET /a b\" 503 bytes=0 duration_ms=12.345 instance=- request_id=x peer=y"),
            Some((503, 12.345))
        );
        assert_eq!(
            parse_rtr("\"GET /\" 200 bytes=5 duration_ms=0.120 instance=0@127.0.0.1:1 request_id=r peer=p"),
            Some((200, 0.12))
        );
        assert_eq!(parse_rtr("not an access line"), None);
    }

    #[test]
    fn collector_counts_errors_and_latency_per_app() {
        let c = Collector::default();
        let line = |status: u16, ms: &str| LogLine {
            id: 0,
            timestamp: Utc::now(),
            source: "RTR".into(),
            stream: "out".into(),
            message: format!(
                "\"GET /\" {status} bytes=1 duration_ms={ms} instance=- request_id=r peer=p"
            ),
        };
        let mut lines: Vec<(String, LogLine)> = (0..99)
            .map(|i| ("a".to_string(), line(200, &format!("{}.000", i + 1))))
            .collect();
        lines.push(("a".into(), line(500, "1000.000")));
        lines.push(("b".into(), line(200, "1.000")));
        let mut app = line(200, "1.000");
        app.source = "APP/web/0".into();
        lines.push(("b".into(), app));
        c.observe(&lines);
        let open = c.take();
        let a = &open["a"];
        assert_eq!((a.requests, a.errors), (100, 1));
        let mut lat = a.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        assert_eq!(quantile(&lat, 0.5), Some(51.0));
        assert_eq!(quantile(&lat, 0.99), Some(99.0));
        assert_eq!(open["b"].requests, 1, "only RTR lines count");
        assert!(c.take().is_empty(), "taking closes the interval");
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("15m"), Some(900));
        assert_eq!(parse_window("1d"), Some(86400));
        assert_eq!(parse_window("2d"), None);
        assert_eq!(parse_window("h"), None);
        assert_eq!(parse_window(""), None);
        assert_eq!(parse_window("1é"), None);
        assert_eq!(parse_window("é"), None);
        assert_eq!(parse_window("-5m"), None);
    }
}
