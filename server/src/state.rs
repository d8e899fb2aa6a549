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
}

impl AppCtx {
    pub fn bump_assignments(&self) {
        self.assignments.send_modify(|v| *v += 1);
    }

    pub fn app_url(&self, name: &str) -> String {
        if self.public_port == 80 {
            format!("http://{name}.{}", self.settings.apps_domain)
        } else {
            format!(
                "http://{name}.{}:{}",
                self.settings.apps_domain, self.public_port
            )
        }
    }
}
