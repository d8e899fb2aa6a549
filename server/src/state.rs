//! The shared state every handler and background loop sees.

use std::sync::Arc;
use tokio::sync::{watch, Notify};

use crate::auth::Keys;
use crate::blobstore::Blobstore;
use crate::config::Settings;
use crate::loghub::LogHub;
use crate::metrics::Metrics;
use crate::router::RouteTable;
use crate::store::Store;

pub struct AppCtx {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub blobs: Blobstore,
    pub keys: Keys,
    pub join_token: String,
    /// Shared with the router's handlers (`router::Router`).
    pub routes: Arc<RouteTable>,
    /// Version of the assignment lists; bumped on every placement change. Agents long-poll it.
    pub assignments: watch::Sender<u64>,
    /// Bumped whenever a heartbeat changed an instance's reported state: a streamed push
    /// follows its instances on it instead of polling the store.
    pub reported: watch::Sender<u64>,
    /// Wakes the convergence loop early (after a push, delete, scale or a node report).
    pub converge: Notify,
    /// Port shown in app URLs.
    pub public_port: u16,
    /// Failed logins per (client address, username), to slow password guessing.
    pub login_failures:
        std::sync::Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>,
    /// Every log line goes through here: `ctx.logs.publish(app, line)`.
    pub logs: Arc<LogHub>,
    /// Prometheus registry and the server's own counters.
    pub metrics: Arc<Metrics>,
    /// Staging runs in flight on nodes (issue 3).
    pub builds: crate::builds::Builds,
    /// Seals and opens secret env values (issue 7).
    pub secrets: crate::secrets::SecretBox,
    /// Removed instances still serving requests the router sent them before they left the
    /// table: their nodes keep running them (they stay in the assignments) until those requests
    /// end or the drain time is over. Per instance, so one app's slow request never holds back
    /// another app's changes.
    pub retired: std::sync::Mutex<Vec<Retired>>,
    /// Cancelled when a graceful stop begins: long-polls answer at once and log streams end, so
    /// the listener's wait for requests in flight is not a wait for idle clients.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Whether this controller runs the scheduler now (the lease, on a shared database).
    pub leadership: crate::control::lease::Leadership,
    /// `paas ssh` sessions waiting for their node to dial back.
    pub ssh: crate::ssh::SshHub,
    /// Wakes the leader's ACME loop (a domain opted in, a route was mapped under one).
    pub acme: Notify,
    /// Service brokers: built-in ones registered at startup, registered ones by their row
    /// (issue 22).
    pub services: crate::services::Registry,
    /// Set by a convergence pass that left rows unplaced because every node that fits was busy
    /// starting instances: a heartbeat reporting a start finished then wakes the next pass at
    /// once rather than at the next tick.
    pub start_slot_wanted: std::sync::atomic::AtomicBool,
    /// The desired state every node's assignment list is resolved against, one per version.
    pub snapshots: crate::control::nodes::Snapshots,
    /// The instances' last resource samples, written to the store once per interval.
    pub usage: crate::control::usage::UsageSamples,
    /// The internal DNS table and resolved network policies (issue 25), computed once per pass
    /// by [`crate::control::network::refresh`]; each node's assignment list reads its part.
    pub network: std::sync::RwLock<Arc<crate::control::network::NetTable>>,
    /// The platform CA of instance identity (issue 25).
    pub identity: Arc<crate::identity::PlatformCa>,
    /// Coalesces route table rebuilds ([`crate::router::refresh`]).
    pub refresher: crate::router::Refresher,
}

/// A removed instance row kept for its node while its in-flight requests finish.
pub struct Retired {
    pub record: crate::store::InstanceRecord,
    /// Where the router sent its requests (`NODE_ADDRESS:PORT`).
    pub address: String,
    pub until: std::time::Instant,
    /// Set once the route table no longer lists it: until then its requests are not counted as
    /// leaving, so it must not be judged idle.
    pub routed_out: bool,
}

impl AppCtx {
    pub fn bump_assignments(&self) {
        self.assignments.send_modify(|v| *v += 1);
    }

    /// Whether any removed instance is still waiting to be stopped.
    pub fn has_retired(&self) -> bool {
        self.retired.lock().map(|l| !l.is_empty()).unwrap_or(true)
    }

    /// Forgets retired instances that serve nothing any more (or whose drain time is over);
    /// whether any was forgotten, i.e. whether a node should now stop something. `refreshed`:
    /// the route table was just rebuilt without the instances retired so far.
    pub fn prune_retired(&self, refreshed: bool) -> bool {
        let Ok(mut list) = self.retired.lock() else {
            return false;
        };
        let before = list.len();
        let now = std::time::Instant::now();
        list.retain_mut(|r| {
            r.routed_out |= refreshed;
            if !r.routed_out {
                return true;
            }
            let busy = self.routes.busy(&r.address);
            if busy && now >= r.until {
                tracing::warn!(instance = %r.record.id, address = %r.address, "stopping an instance with requests still in flight: the drain time is over");
            }
            busy && now < r.until
        });
        list.len() != before
    }

    /// Retired instances on `node`, for its assignment list.
    pub fn retired_on(&self, node: &str) -> Vec<crate::store::InstanceRecord> {
        self.retired
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|r| r.record.node_name.as_deref() == Some(node))
                    .map(|r| r.record.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The URL of the app's default route; empty for an app without one (`--no-route`).
    pub fn app_url(&self, app: &crate::store::AppRecord) -> String {
        let Some(host) = &app.host else {
            return String::new();
        };
        if self.public_port == 80 {
            format!("http://{host}.{}", self.settings.apps_domain)
        } else {
            format!(
                "http://{host}.{}:{}",
                self.settings.apps_domain, self.public_port
            )
        }
    }
}
