//! The instances' last resource samples (CPU, memory, disk, uptime), as nodes report them in
//! every heartbeat. They change with every report, so writing them each time made every
//! heartbeat a write per instance; they are kept here instead, in memory, and written to the
//! store (one statement in the heartbeat's transaction) once per [`FLUSH`] per node. Readers
//! ([`app_usage`]) take the store's samples with this controller's fresher ones over them: on one
//! controller they see every heartbeat's sample, and another controller (several on one
//! PostgreSQL) or this one after a restart sees samples at most [`FLUSH`] old.

use paas_common::agent::InstanceReport;
use paas_common::api::InstanceUsage;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::state::AppCtx;
use crate::store::StoreResult;

/// How often a node's samples are written to the store.
pub const FLUSH: Duration = Duration::from_secs(10);

/// A sample older than this (its node went quiet, or now reports to another controller) gives
/// way to the store's.
const FRESH: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct UsageSamples {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// App id -> instance id -> sample: readers ask per app.
    by_app: HashMap<String, HashMap<String, (InstanceUsage, Instant)>>,
    nodes: HashMap<String, NodeSamples>,
}

struct NodeSamples {
    flushed: Option<Instant>,
    /// (app id, instance id) of the samples last recorded for the node, to replace them.
    instances: Vec<(String, String)>,
}

impl UsageSamples {
    /// Whether this heartbeat of `node` should write its samples to the store.
    pub fn flush_due(&self, node: &str) -> bool {
        let Ok(inner) = self.inner.lock() else {
            return true;
        };
        inner
            .nodes
            .get(node)
            .and_then(|n| n.flushed)
            .is_none_or(|t| t.elapsed() >= FLUSH)
    }

    /// Replaces `node`'s samples with a heartbeat's: `apps` holds, per report, the app of its row
    /// when the row is assigned to the node (others are ignored, as the store ignores them).
    /// `flushed`: the heartbeat wrote them to the store.
    pub fn record(
        &self,
        node: &str,
        reports: &[InstanceReport],
        apps: &[Option<String>],
        flushed: bool,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let inner = &mut *inner;
        let now = Instant::now();
        let seen = inner
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeSamples {
                flushed: None,
                instances: Vec::new(),
            });
        for (app, id) in seen.instances.drain(..) {
            if let Some(samples) = inner.by_app.get_mut(&app) {
                samples.remove(&id);
                if samples.is_empty() {
                    inner.by_app.remove(&app);
                }
            }
        }
        for (r, app) in reports.iter().zip(apps) {
            let (Some(usage), Some(app)) = (&r.usage, app) else {
                continue;
            };
            inner
                .by_app
                .entry(app.clone())
                .or_default()
                .insert(r.instance_id.clone(), (usage.clone(), now));
            seen.instances.push((app.clone(), r.instance_id.clone()));
        }
        if flushed {
            seen.flushed = Some(now);
        }
    }

    /// Puts this controller's fresh samples of every app over `stored` (the store's).
    pub fn overlay_all(&self, stored: &mut HashMap<String, InstanceUsage>) {
        let Ok(inner) = self.inner.lock() else {
            return;
        };
        for (id, (usage, at)) in inner.by_app.values().flatten() {
            if at.elapsed() < FRESH {
                stored.insert(id.clone(), usage.clone());
            }
        }
    }

    /// Puts this controller's fresh samples of the app over `stored` (the store's).
    pub fn overlay(&self, app_id: &str, stored: &mut HashMap<String, InstanceUsage>) {
        let Ok(inner) = self.inner.lock() else {
            return;
        };
        for (id, (usage, at)) in inner.by_app.get(app_id).into_iter().flatten() {
            if at.elapsed() < FRESH {
                stored.insert(id.clone(), usage.clone());
            }
        }
    }
}

/// The last resource samples of an app's instances, by instance id.
pub async fn app_usage(ctx: &AppCtx, app_id: &str) -> StoreResult<HashMap<String, InstanceUsage>> {
    let mut usage = ctx.store.app_usage(app_id).await?;
    ctx.usage.overlay(app_id, &mut usage);
    Ok(usage)
}

/// The last resource samples of every instance, by instance id (one read of the store).
pub async fn all_usage(ctx: &AppCtx) -> StoreResult<HashMap<String, InstanceUsage>> {
    let mut usage = ctx.store.all_usage().await?;
    ctx.usage.overlay_all(&mut usage);
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use paas_common::api::InstanceState;

    fn report(id: &str, cpu: f64) -> InstanceReport {
        InstanceReport {
            instance_id: id.into(),
            state: InstanceState::Running,
            container_id: None,
            host_port: None,
            restarts: 0,
            last_exit: None,
            since: Utc::now(),
            ip: None,
            usage: Some(InstanceUsage {
                cpu_percent: cpu,
                memory_bytes: 1,
                memory_limit_bytes: 2,
                disk_bytes: 3,
                uptime_secs: 4,
                sampled_at: None,
            }),
            ready: true,
        }
    }

    #[test]
    fn a_heartbeat_replaces_its_nodes_samples_and_flushes_once_per_interval() {
        let u = UsageSamples::default();
        assert!(u.flush_due("n1"), "a node never written is due at once");
        let apps = [Some("a".to_string()), None];
        u.record("n1", &[report("i1", 1.0), report("x", 9.0)], &apps, true);
        assert!(!u.flush_due("n1"));
        let mut m = HashMap::new();
        u.overlay("a", &mut m);
        assert_eq!(m["i1"].cpu_percent, 1.0);
        assert_eq!(m.len(), 1, "a report of a row not on the node is ignored");
        let mut all = HashMap::new();
        u.overlay_all(&mut all);
        assert_eq!(all.keys().collect::<Vec<_>>(), ["i1"]);
        // The next heartbeat no longer lists i1: its sample goes; the store's stays under it.
        u.record("n1", &[report("i2", 2.0)], &[Some("a".into())], false);
        let mut m: HashMap<String, InstanceUsage> =
            [("i1".to_string(), report("i1", 5.0).usage.unwrap())].into();
        u.overlay("a", &mut m);
        assert_eq!((m["i1"].cpu_percent, m["i2"].cpu_percent), (5.0, 2.0));
        assert!(
            !u.flush_due("n1"),
            "not flushed, but the interval has not passed"
        );
    }
}
