//! Prometheus text at `GET /metrics` (prometheus-client): HTTP requests by method, route pattern
//! and status with their latencies (from a middleware on every request), instances by state and
//! placement, and the log hub's counters. Gauges of desired/actual state are read from the store at
//! scrape time, so they can never drift from what the API shows.
//!
//! Other parts register their own metrics in [`Metrics::registry`] at startup (e.g. the router's
//! counters) with `ctx.metrics.registry.lock()`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use paas_common::api::InstanceState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::loghub::HubCounters;
use crate::state::AppCtx;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route pattern (`/v1/apps/{name}`), never the raw path, so names do not explode the
    /// label space; `app` for requests the router proxies.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    /// The error code answered: `unauthorized`, `forbidden`, `app_not_found`, ...
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlacementLabels {
    /// `placed` or `unplaced`.
    pub placement: String,
}

pub struct Metrics {
    pub registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    instances: Family<StateLabels, Gauge>,
    placements: Family<PlacementLabels, Gauge>,
    nodes: Family<StateLabels, Gauge>,
    authz_denied: Family<DeniedLabels, Counter>,
    leader: Gauge,
    /// Duration of each convergence pass (converge or follow, route refresh, assignment bump): the
    /// control plane's cost per tick, which must stay near-linear in apps and instances.
    convergence_pass: Histogram,
    /// The last pass's duration, so a benchmark can sample single passes.
    convergence_last_pass: Gauge<f64, std::sync::atomic::AtomicU64>,
    hub: Arc<HubCounters>,
}

impl Metrics {
    pub fn new(hub: Arc<HubCounters>) -> Self {
        let mut registry = Registry::with_prefix("paas");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))) as fn() -> Histogram,
        );
        let instances = Family::<StateLabels, Gauge>::default();
        let placements = Family::<PlacementLabels, Gauge>::default();
        let nodes = Family::<StateLabels, Gauge>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            latency.clone(),
        );
        registry.register(
            "instances",
            "Desired instances by actual state",
            instances.clone(),
        );
        registry.register(
            "instance_placements",
            "Desired instances by placement",
            placements.clone(),
        );
        registry.register("nodes", "Nodes by state", nodes.clone());
        let authz_denied = Family::<DeniedLabels, Counter>::default();
        registry.register(
            "authz_denied",
            "Requests refused by authentication or authorization, by error code",
            authz_denied.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this controller holds the scheduler lease (runs the scheduler), else 0",
            leader.clone(),
        );
        let convergence_pass = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "convergence_pass_duration_seconds",
            "Time one convergence pass took (converge or follow, route refresh, assignment bump)",
            convergence_pass.clone(),
        );
        let convergence_last_pass = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "convergence_last_pass_seconds",
            "Time the last convergence pass took",
            convergence_last_pass.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            convergence_pass,
            convergence_last_pass,
            requests,
            latency,
            instances,
            placements,
            nodes,
            authz_denied,
            leader,
            hub,
        }
    }

    /// Counts a request refused by `authz` (a probe shows up here before anywhere else).
    pub fn authz_denied(&self, code: &str) {
        self.authz_denied
            .get_or_create(&DeniedLabels { code: code.into() })
            .inc();
    }

    /// Records one convergence pass's duration.
    pub fn convergence_pass(&self, secs: f64) {
        self.convergence_pass.observe(secs);
        self.convergence_last_pass.set(secs);
    }

    fn observe(&self, labels: RequestLabels, secs: f64) {
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(secs);
    }

    /// The text exposition, after refreshing the gauges from the store.
    async fn render(&self, ctx: &AppCtx) -> Result<String, crate::store::StoreError> {
        let instances = ctx.store.list_instances().await?;
        let nodes = ctx.store.list_nodes().await?;
        for s in [
            InstanceState::Pending,
            InstanceState::Starting,
            InstanceState::Running,
            InstanceState::Crashed,
            InstanceState::Stopping,
        ] {
            let n = instances.iter().filter(|i| i.state == s).count();
            self.instances
                .get_or_create(&StateLabels {
                    state: s.as_str().into(),
                })
                .set(n as i64);
        }
        let placed = instances.iter().filter(|i| i.node_name.is_some()).count();
        self.placements
            .get_or_create(&PlacementLabels {
                placement: "placed".into(),
            })
            .set(placed as i64);
        self.placements
            .get_or_create(&PlacementLabels {
                placement: "unplaced".into(),
            })
            .set((instances.len() - placed) as i64);
        for s in ["ready", "lost"] {
            let n = nodes.iter().filter(|n| n.state == s).count();
            self.nodes
                .get_or_create(&StateLabels { state: s.into() })
                .set(n as i64);
        }
        self.leader.set(i64::from(ctx.leadership.is_leader()));
        let mut out = String::new();
        {
            let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
                tracing::warn!(error = %e, "encoding metrics failed");
            }
        }
        // The hub's counters are plain atomics shared with the hub; a second small registry of
        // constant counters reads them at scrape time.
        let mut hub = Registry::with_prefix("paas_log");
        let h = &self.hub;
        let c = |a: &std::sync::atomic::AtomicU64| ConstCounter::new(a.load(Ordering::Relaxed));
        hub.register(
            "lines_received",
            "Log lines accepted by the hub",
            c(&h.lines_received),
        );
        hub.register(
            "bytes_received",
            "Log message bytes accepted by the hub",
            c(&h.bytes_received),
        );
        hub.register(
            "lines_stored",
            "Log lines written to the database",
            c(&h.lines_stored),
        );
        hub.register(
            "lines_beyond_retention",
            "Log lines not written: already beyond their app's retention bound when the writer got them",
            c(&h.lines_beyond_retention),
        );
        hub.register(
            "lines_store_failed",
            "Log lines the database refused",
            c(&h.lines_store_failed),
        );
        hub.register(
            "lines_subscriber_lagged",
            "Log lines slow stream clients missed",
            c(&h.lines_subscriber_lagged),
        );
        hub.register(
            "lines_expired",
            "Stored log lines deleted by age",
            c(&h.lines_expired),
        );
        // The router's counters, the same way: its requests skip the request middleware (hot
        // path), so these are its request metrics.
        let mut rtr = Registry::with_prefix("paas");
        for (name, value) in ctx.routes.stats.snapshot() {
            let name = name.strip_suffix("_total").unwrap_or(name);
            rtr.register(
                name,
                "Router counter (see router::stats)",
                ConstCounter::new(value),
            );
        }
        let mut tail = String::new();
        if prometheus_client::encoding::text::encode(&mut tail, &hub).is_ok() {
            let mut more = String::new();
            if prometheus_client::encoding::text::encode(&mut more, &rtr).is_ok() {
                if let Some(body) = tail.strip_suffix("# EOF\n") {
                    tail = format!("{body}{more}");
                }
            }
            // Both end in `# EOF`; keep only the last one.
            if let Some(body) = out.strip_suffix("# EOF\n") {
                out = format!("{body}{tail}");
            }
        }
        Ok(out)
    }
}

/// Middleware: counts every request and its latency by route pattern.
pub async fn track_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    let metrics = req
        .app_data::<web::Data<AppCtx>>()
        .map(|c| c.metrics.clone());
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "app".into());
        // Streams (logs) would count their whole lifetime as latency; they are counted when they
        // start.
        m.observe(
            RequestLabels {
                method,
                route,
                status: res.status().as_u16(),
            },
            start.elapsed().as_secs_f64(),
        );
    }
    Ok(res)
}

pub async fn serve(ctx: web::Data<AppCtx>) -> HttpResponse {
    match ctx.metrics.render(&ctx).await {
        Ok(text) => HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(text),
        Err(e) => {
            tracing::warn!(error = %e, "metrics unavailable");
            HttpResponse::ServiceUnavailable().body("database unavailable")
        }
    }
}
