//! Each app's metrics over time (issue 26): requests, 5xx answers and latency from the router's
//! RTR lines, memory and CPU per instance from the nodes' samples, restarts, kept at 10 s
//! resolution for a day, rolled up to 1-minute rows kept for a week, and served to the
//! dashboard's charts and `GET /v1/apps/{name}/metrics` (a window longer than a day reads the
//! 1-minute rows). The same loop records each node's health once per pass into its minute row
//! (`node_metrics`): how long since its last heartbeat, its state, reservations and instances.
//!
//! The traffic side is read from the RTR lines as they reach the log hub, not counted in the
//! proxy: every router, in the controller or standalone, already sends them there, so charts
//! cover all of them and the request path pays nothing more. The [`Collector`] adds each line to
//! its app's open interval; [`run`] closes the interval every [`RESOLUTION_SECS`], adds what the
//! nodes last reported, and stores one row per deployed app.

use chrono::{DateTime, TimeZone, Utc};
use paas_common::api::{
    AppMetrics, InstanceMetric, LogLine, MetricMark, MetricPoint, NodeMetricPoint, NodeMetrics,
    NodeSeries,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::state::AppCtx;
use crate::store::{EventFilter, MetricRow, NodeMetricRow, StoreResult};

/// Seconds per stored point.
pub const RESOLUTION_SECS: i64 = 10;
/// How long points are kept.
pub const RETENTION_SECS: i64 = 24 * 3600;
/// Seconds per rolled-up point.
pub const ROLLUP_SECS: i64 = 60;
/// How long rolled-up points (and the longest window) are kept.
pub const ROLLUP_RETENTION_SECS: i64 = 7 * 24 * 3600;
/// How long node health rows are kept.
pub const NODE_RETENTION_SECS: i64 = 24 * 3600;
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
    // Grouped once: filtering every row for each app was apps x instances per flush.
    let mut instances: std::collections::HashMap<String, Vec<crate::store::InstanceRecord>> =
        Default::default();
    for i in ctx.store.list_instances().await? {
        instances.entry(i.app_id.clone()).or_default().push(i);
    }
    // One read: a query per app was 1,000 queries per flush at 1,000 apps.
    let usage = crate::control::usage::all_usage(ctx).await?;
    let mut rows = Vec::new();
    for app in apps.iter().filter(|a| a.current_revision.is_some()) {
        let bucket = open.remove(&app.id).unwrap_or_default();
        let mut lat = bucket.latencies_ms;
        lat.sort_by(f64::total_cmp);
        let mut per_instance: Vec<(u32, u64, f64)> = Vec::new();
        let mut restarts = 0u64;
        for i in instances.get(&app.id).into_iter().flatten() {
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

/// The 1-minute rows of `rows` (10 s rows, any apps, any order): counts summed (requests,
/// errors), the highest p99, memory and restart total, the request-weighted mean p50 (the plain
/// mean when no request came), the mean CPU, and the per-instance figures of the minute's last
/// row.
pub fn rollup(rows: &[MetricRow]) -> Vec<MetricRow> {
    let mut groups: std::collections::BTreeMap<(&str, i64), Vec<&MetricRow>> = Default::default();
    for r in rows {
        groups
            .entry((
                r.app_id.as_str(),
                r.ts.div_euclid(ROLLUP_SECS) * ROLLUP_SECS,
            ))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((app_id, ts), mut g)| {
            g.sort_by_key(|r| r.ts);
            let p50s: Vec<(f64, u64)> = g
                .iter()
                .filter_map(|r| r.p50_ms.map(|p| (p, r.requests)))
                .collect();
            let weight: u64 = p50s.iter().map(|p| p.1).sum();
            let p50_ms = (!p50s.is_empty()).then(|| {
                if weight == 0 {
                    p50s.iter().map(|p| p.0).sum::<f64>() / p50s.len() as f64
                } else {
                    p50s.iter().map(|p| p.0 * p.1 as f64).sum::<f64>() / weight as f64
                }
            });
            MetricRow {
                app_id: app_id.to_string(),
                ts,
                requests: g.iter().map(|r| r.requests).sum(),
                errors: g.iter().map(|r| r.errors).sum(),
                p50_ms,
                p99_ms: g.iter().filter_map(|r| r.p99_ms).reduce(f64::max),
                memory_bytes: g.iter().map(|r| r.memory_bytes).max().unwrap_or(0),
                cpu_percent: g.iter().map(|r| r.cpu_percent).sum::<f64>() / g.len() as f64,
                restarts: g.iter().map(|r| r.restarts).max().unwrap_or(0),
                instances: g.last().map(|r| r.instances.clone()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Rolls up the whole minutes in `[from, to)` (both multiples of [`ROLLUP_SECS`]).
pub async fn roll_up(ctx: &AppCtx, from: i64, to: i64) -> StoreResult<usize> {
    let rows = rollup(&ctx.store.app_metrics_between(from, to).await?);
    ctx.store.add_app_rollups(&rows).await?;
    Ok(rows.len())
}

/// Records each node's health at `now` into its minute row.
pub async fn record_nodes(ctx: &AppCtx, now: DateTime<Utc>) -> StoreResult<usize> {
    let nodes = ctx.store.list_nodes().await?;
    if nodes.is_empty() {
        return Ok(0);
    }
    let used = crate::control::convergence::node_reservations(ctx.store.as_ref()).await?;
    let ts = now.timestamp().div_euclid(ROLLUP_SECS) * ROLLUP_SECS;
    let rows: Vec<NodeMetricRow> = nodes
        .into_iter()
        .map(|n| {
            let v = used.get(&n.name);
            NodeMetricRow {
                ts,
                lag_secs: ((now - n.last_heartbeat).num_milliseconds().max(0) as f64) / 1000.0,
                state: n.state,
                reserved_mb: v.map_or(0, |v| v.used_memory_mb),
                capacity_mb: n.capacity.memory_mb,
                instances: v.map_or(0, |v| u64::from(v.used_slots)),
                node_name: n.name,
            }
        })
        .collect();
    ctx.store.record_node_metrics(&rows).await?;
    Ok(rows.len())
}

/// Closes an interval every [`RESOLUTION_SECS`] (on the wall clock's multiples, so every
/// controller's points line up), rolls each whole minute up once it closes, records the nodes'
/// health, and drops points past their retention.
pub async fn run(ctx: std::sync::Arc<AppCtx>) {
    // The minutes not rolled up yet: at start, the whole day of 10 s rows (a controller that
    // was down rolls up what it missed; replacing a minute twice is harmless).
    let mut rolled_to: Option<i64> = None;
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
        let minute = (next / 1000).div_euclid(ROLLUP_SECS) * ROLLUP_SECS;
        let from = rolled_to.unwrap_or(minute - RETENTION_SECS);
        if from < minute {
            match roll_up(&ctx, from, minute).await {
                Ok(_) => rolled_to = Some(minute),
                Err(e) => tracing::warn!(error = %e, "rolling up app metrics failed"),
            }
        }
        if let Err(e) = record_nodes(&ctx, Utc::now()).await {
            tracing::warn!(error = %e, "recording node health failed");
        }
        if ts % 600 == 0 {
            if let Err(e) = ctx.store.trim_app_metrics(ts - RETENTION_SECS).await {
                tracing::warn!(error = %e, "trimming app metrics failed");
            }
            if let Err(e) = ctx.store.trim_app_rollups(ts - ROLLUP_RETENTION_SECS).await {
                tracing::warn!(error = %e, "trimming app metric rollups failed");
            }
            if let Err(e) = ctx.store.trim_node_metrics(ts - NODE_RETENTION_SECS).await {
                tracing::warn!(error = %e, "trimming node health failed");
            }
        }
    }
}

/// A window length like `15m`, `1h`, `6h`, `1d`, `7d` (at most a week).
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
    (secs > 0 && secs <= ROLLUP_RETENTION_SECS).then_some(secs)
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

/// The resolution a window is read at: 10 s rows up to a day, 1-minute rows beyond.
pub fn resolution_for(secs: i64) -> i64 {
    if secs > RETENTION_SECS {
        ROLLUP_SECS
    } else {
        RESOLUTION_SECS
    }
}

/// One app's points of the last `secs` seconds, with its deploys and crashes.
pub async fn window(ctx: &AppCtx, app_id: &str, secs: i64) -> StoreResult<AppMetrics> {
    let since = Utc::now().timestamp() - secs;
    let resolution = resolution_for(secs);
    let rows = if resolution == ROLLUP_SECS {
        ctx.store.app_rollups(app_id, since).await?
    } else {
        ctx.store.app_metrics(app_id, since).await?
    };
    let points = rows
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
        resolution_secs: resolution as u32,
        points,
        marks,
    })
}

/// Every node's health points of the last `secs` seconds (at most [`NODE_RETENTION_SECS`]).
pub async fn node_window(ctx: &AppCtx, secs: i64) -> StoreResult<NodeMetrics> {
    let since = Utc::now().timestamp() - secs.min(NODE_RETENTION_SECS);
    let mut nodes: Vec<NodeSeries> = Vec::new();
    for r in ctx.store.node_metrics(since).await? {
        if nodes.last().is_none_or(|n| n.name != r.node_name) {
            nodes.push(NodeSeries {
                name: r.node_name.clone(),
                points: Vec::new(),
            });
        }
        if let Some(n) = nodes.last_mut() {
            n.points.push(NodeMetricPoint {
                time: Utc.timestamp_opt(r.ts, 0).single().unwrap_or_default(),
                state: r.state,
                lag_secs: r.lag_secs,
                reserved_mb: r.reserved_mb,
                capacity_mb: r.capacity_mb,
                instances: r.instances,
            });
        }
    }
    Ok(NodeMetrics {
        resolution_secs: ROLLUP_SECS as u32,
        nodes,
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

    fn row(app: &str, ts: i64, requests: u64, p50: Option<f64>, p99: Option<f64>) -> MetricRow {
        MetricRow {
            app_id: app.into(),
            ts,
            requests,
            errors: requests / 10,
            p50_ms: p50,
            p99_ms: p99,
            memory_bytes: 1000 + ts as u64,
            cpu_percent: ts as f64 % 60.0,
            restarts: ts as u64 / 10,
            instances: vec![(0, ts as u64, 1.0)],
        }
    }

    #[test]
    fn rollups_sum_counts_and_keep_peaks() {
        // Two whole minutes of app a (600..660, 660..720) and one row of b, given out of order.
        let mut rows: Vec<MetricRow> = (0..12)
            .map(|i| {
                let ts = 600 + i * 10;
                let (p50, p99) = if i == 1 {
                    (None, None)
                } else {
                    (Some(i as f64), Some(100.0 + i as f64))
                };
                row("a", ts, 10 * (i as u64 + 1), p50, p99)
            })
            .collect();
        rows.reverse();
        rows.push(row("b", 610, 0, Some(4.0), None));
        rows.push(row("b", 620, 0, Some(8.0), None));
        let out = rollup(&rows);
        assert_eq!(out.len(), 3, "{out:?}");
        let a0 = &out[0];
        assert_eq!((a0.app_id.as_str(), a0.ts), ("a", 600));
        // Requests 10+20+...+60, errors the sum of each row's tenth.
        assert_eq!(a0.requests, 210);
        assert_eq!(a0.errors, 1 + 2 + 3 + 4 + 5 + 6);
        assert_eq!(a0.p99_ms, Some(105.0), "the highest p99");
        // p50 weighted by requests over rows that had one (row 1 had none).
        let want = (0.0 * 10.0 + 2.0 * 30.0 + 3.0 * 40.0 + 4.0 * 50.0 + 5.0 * 60.0) / 190.0;
        assert!((a0.p50_ms.unwrap() - want).abs() < 1e-9, "{:?}", a0.p50_ms);
        assert_eq!(a0.memory_bytes, 1000 + 650, "the peak memory");
        assert!((a0.cpu_percent - (0.0 + 10.0 + 20.0 + 30.0 + 40.0 + 50.0) / 6.0).abs() < 1e-9);
        assert_eq!(a0.restarts, 65, "the restart total at the minute's end");
        assert_eq!(
            a0.instances,
            vec![(0, 650, 1.0)],
            "the minute's last instances"
        );
        let a1 = &out[1];
        assert_eq!((a1.ts, a1.requests), (660, 70 + 80 + 90 + 100 + 110 + 120));
        let b = &out[2];
        assert_eq!((b.app_id.as_str(), b.ts, b.requests), ("b", 600, 0));
        assert_eq!(b.p50_ms, Some(6.0), "no requests: the plain mean");
        assert_eq!(b.p99_ms, None);
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("15m"), Some(900));
        assert_eq!(parse_window("1d"), Some(86400));
        assert_eq!(parse_window("7d"), Some(7 * 86400));
        assert_eq!(parse_window("8d"), None);
        assert_eq!(resolution_for(86400), RESOLUTION_SECS);
        assert_eq!(resolution_for(7 * 86400), ROLLUP_SECS);
        assert_eq!(parse_window("h"), None);
        assert_eq!(parse_window(""), None);
        assert_eq!(parse_window("1é"), None);
        assert_eq!(parse_window("é"), None);
        assert_eq!(parse_window("-5m"), None);
    }
}
