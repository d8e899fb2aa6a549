//! The HTTP router: a request goes to a ready instance of the app its route names (Host, then the
//! longest matching path prefix; every app has the default route `NAME.<apps domain>`). This
//! module owns the route table (routes, and app -> ready backends), rebuilt from the store
//! whenever routes or instance states change; only instances whose health check passed (state
//! `running`) are in it.
//!
//! - [`proxy`]: the request path (pick, retry, wait, headers, streaming, timeouts, errors).
//! - [`server`]: the listener (hyper, HTTP/1.1 and HTTP/2, TLS), app traffic vs the API.
//! - [`access_log`]: RTR lines, batched into the app's log stream off the hot path.
//! - [`stats`]: counters (atomics) for a later `/metrics`.
//! - [`standalone`]: `paas-server router`, the router alone, following the controller's table.
//! - [`tls`]: optional HTTPS (and HTTP/2) listener, certificates per host from a folder, hot-reloaded.
//!
//! Ordering invariant: callers that remove instances must [`refresh`] the table *before* telling
//! agents (`bump_assignments`), so an instance leaves the table before its container is stopped.

pub mod access_log;
pub mod proxy;
pub mod server;
pub mod standalone;
pub mod stats;
pub mod tls;

use paas_common::api::InstanceState;
use paas_common::route::{RouteInfo, RouteSpec, RouterBackend, RouterSplit, RouterTable};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

pub use proxy::proxy;
pub use stats::RouterStats;

use crate::state::AppCtx;
use crate::store::StoreResult;

/// What the proxy handlers see (as `web::Data`): the table and the few settings of the request
/// path. The same in the controller and in a standalone router.
pub struct Router {
    pub table: Arc<RouteTable>,
    /// How long a request waits for a ready instance.
    pub wait: std::time::Duration,
    pub balance: Balance,
    /// The HTTPS listener's port, for the redirect of a route that asks for HTTPS (`None`: no
    /// TLS listener, so no redirect).
    pub https_port: Option<u16>,
}

impl Router {
    pub fn new(table: Arc<RouteTable>, settings: &crate::config::Settings) -> Self {
        Self {
            table,
            wait: std::time::Duration::from_millis(settings.router_wait_ms),
            balance: settings.router_balance,
            https_port: None,
        }
    }

    pub fn with_https_port(mut self, port: Option<u16>) -> Self {
        self.https_port = port;
        self
    }
}

/// What a mapped route asks of the router beyond choosing the app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteFlags {
    /// Plain HTTP gets a 308 to HTTPS.
    pub https_redirect: bool,
    /// HTTPS answers carry `Strict-Transport-Security`.
    pub hsts: bool,
}

/// How the router spreads requests over an app's ready instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    /// Fewest requests in flight; ties go round-robin.
    LeastConnections,
}

#[derive(Debug)]
pub struct Backend {
    pub address: String,
    pub index: u32,
    /// The revision it runs (a canary split picks a revision first).
    pub revision: i64,
    /// The instance id, which the `__VCAP_ID__` sticky cookie names.
    pub id: String,
    /// Requests in flight to this instance (until their response body ends); kept across table
    /// rebuilds for the same address so least-connections sees the truth.
    pub inflight: Arc<stats::Gauge>,
    /// `address` parsed once, for the request URI of every attempt.
    authority: Option<http::uri::Authority>,
    /// `index` as the `X-Paas-Instance` header value, made once (a clone per response).
    pub(crate) index_header: http::HeaderValue,
}

impl Backend {
    pub fn new(address: String, index: u32, inflight: Arc<stats::Gauge>) -> Self {
        Self::of(address, index, 0, String::new(), inflight)
    }

    pub fn of(
        address: String,
        index: u32,
        revision: i64,
        id: String,
        inflight: Arc<stats::Gauge>,
    ) -> Self {
        Self {
            authority: address.parse().ok(),
            address,
            index,
            revision,
            id,
            inflight,
            index_header: http::HeaderValue::from(index),
        }
    }

    /// `http://ADDRESS` + the client's path and query.
    pub fn uri(&self, path: http::uri::PathAndQuery) -> http::Uri {
        let mut p = http::uri::Parts::default();
        p.scheme = Some(http::uri::Scheme::HTTP);
        p.authority = self.authority.clone();
        p.path_and_query = Some(path);
        http::Uri::from_parts(p).unwrap_or_default()
    }
}

/// One app's ready instances, as the request path finds them from a host.
#[derive(Debug)]
pub struct AppRoutes {
    /// The app's id: the table's key (names are unique per space only).
    pub key: Arc<str>,
    pub name: Arc<str>,
    /// `name` as the `X-Paas-App` header value, made once per table rebuild.
    pub(crate) name_header: Option<http::HeaderValue>,
    pub backends: Vec<Arc<Backend>>,
    next: stats::Turns,
    /// A canary or blue-green deployment's split: this share of requests goes to that revision.
    pub split: Option<RouterSplit>,
    /// Requests sent under the split (all, and to the split's revision), sticky and targeted
    /// ones included: the next request goes to whichever revision is behind its share, so the
    /// shares stay exact whatever pins some requests.
    sent: std::sync::atomic::AtomicU64,
    sent_new: std::sync::atomic::AtomicU64,
}

impl AppRoutes {
    pub fn new(key: &str, name: &str, backends: Vec<Arc<Backend>>) -> Self {
        Self::with_split(key, name, backends, None)
    }

    pub fn with_split(
        key: &str,
        name: &str,
        backends: Vec<Arc<Backend>>,
        split: Option<RouterSplit>,
    ) -> Self {
        Self {
            key: key.into(),
            name: name.into(),
            name_header: http::HeaderValue::from_str(name).ok(),
            backends,
            next: stats::Turns::default(),
            split,
            sent: Default::default(),
            sent_new: Default::default(),
        }
    }

    /// The next backend whose address is not in `skip` (instances that already refused this
    /// request), or `None`. Under a split the revision is chosen first (the one behind its
    /// share), then the usual balance within it; a revision with no instance left falls back to
    /// the other.
    pub fn pick(&self, balance: Balance, skip: &[String]) -> Option<Arc<Backend>> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.next();
        let usable = |b: &&Arc<Backend>| !skip.contains(&b.address);
        let choose = |want: Option<bool>| {
            let candidates = (0..n)
                .map(|k| &self.backends[(start + k) % n])
                .filter(usable)
                .filter(|b| want.is_none_or(|w| self.is_new(b) == w));
            match balance {
                Balance::RoundRobin => candidates.into_iter().next().cloned(),
                Balance::LeastConnections => candidates.min_by_key(|b| b.inflight.get()).cloned(),
            }
        };
        let Some(split) = self.split else {
            return choose(None);
        };
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.sent.load(Relaxed) + 1;
        let new = self.sent_new.load(Relaxed);
        let want_new = new * 100 < u64::from(split.percent) * total;
        let pick = choose(Some(want_new)).or_else(|| choose(None))?;
        self.count(&pick);
        Some(pick)
    }

    fn is_new(&self, b: &Backend) -> bool {
        self.split.is_some_and(|s| s.revision == b.revision)
    }

    /// Counts a request sent to `b` in the split's shares (a pinned request counts for its
    /// revision too).
    pub fn count(&self, b: &Backend) {
        if self.split.is_none() {
            return;
        }
        use std::sync::atomic::Ordering::Relaxed;
        self.sent.fetch_add(1, Relaxed);
        if self.is_new(b) {
            self.sent_new.fetch_add(1, Relaxed);
        }
    }

    /// The routed instance with this id (the `__VCAP_ID__` sticky cookie), if any.
    pub fn by_id(&self, id: &str, skip: &[String]) -> Option<Arc<Backend>> {
        let b = self
            .backends
            .iter()
            .find(|b| b.id == id && !skip.contains(&b.address))
            .cloned()?;
        self.count(&b);
        Some(b)
    }

    /// The backend with this instance index (`X-Paas-App-Instance`, `X-Cf-App-Instance`); during
    /// a deployment, the new revision's first when it serves, else the old one's.
    pub fn by_index(&self, index: u32, skip: &[String]) -> Option<Arc<Backend>> {
        let mut found = self
            .backends
            .iter()
            .filter(|b| b.index == index && !skip.contains(&b.address));
        let first = found.next()?;
        let b = match self.split {
            Some(s) if s.percent > 0 => std::iter::once(first)
                .chain(found)
                .find(|b| b.revision == s.revision)
                .unwrap_or(first),
            Some(s) => std::iter::once(first)
                .chain(found)
                .find(|b| b.revision != s.revision)
                .unwrap_or(first),
            None => first,
        }
        .clone();
        self.count(&b);
        Some(b)
    }
}

/// The router's shared state: the routes (host -> path prefixes -> app), each app's ready
/// backends, a version that changes on every rebuild (requests waiting for an instance, and
/// standalone routers long-polling the controller, watch it), the counters and the access-log
/// queue. Apps that exist but have no ready instance map to an empty list, so the router can tell
/// "unknown app" (404) from "no ready instance" (503).
pub struct RouteTable {
    inner: RwLock<Tables>,
    /// Backends that left the table with requests still in flight (graceful drain).
    draining: std::sync::Mutex<Vec<Arc<Backend>>>,
    version: watch::Sender<u64>,
    pub stats: RouterStats,
    pub access_log: access_log::AccessLog,
    /// The client certificates the TLS listener accepts (issue 25), from the table's CA.
    pub client_ca: Arc<tls::ClientCa>,
}

#[derive(Default)]
struct Tables {
    /// Host -> (path prefix, app, flags), longest prefix first.
    hosts: HashMap<String, Vec<(String, Arc<AppRoutes>, RouteFlags)>>,
    apps: HashMap<String, Arc<AppRoutes>>,
    /// The table's certificates, parsed once per change of them.
    certs: Arc<tls::TableCerts>,
    /// The same table in wire form, for `GET /v1/router/table`.
    wire: Arc<RouterTable>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            draining: Default::default(),
            // Versions start at the clock, so a restarted controller never hands a standalone
            // router a version it already holds for a different table.
            version: watch::channel(chrono::Utc::now().timestamp_millis().unsigned_abs()).0,
            stats: RouterStats::default(),
            access_log: access_log::AccessLog::new(),
            client_ca: Default::default(),
        }
    }
}

impl RouteTable {
    pub fn get(&self, app: &str) -> Option<Arc<AppRoutes>> {
        self.inner.read().ok()?.apps.get(app).cloned()
    }

    /// The app a request for `host` (a Host header, port allowed) and `path` goes to (the route
    /// on that host with the longest matching path prefix), with its ready instances as of now.
    pub fn resolve(&self, host: &str, path: &str) -> Option<Arc<AppRoutes>> {
        self.resolve_route(host, path).map(|(app, _)| app)
    }

    /// [`Self::resolve`], with the matched route's flags.
    pub fn resolve_route(&self, host: &str, path: &str) -> Option<(Arc<AppRoutes>, RouteFlags)> {
        let host = normalize_host(host);
        let inner = self.inner.read().ok()?;
        let routes = inner.hosts.get(host.as_ref())?;
        routes
            .iter()
            .find(|(prefix, _, _)| RouteSpec::matches_path(prefix, path))
            .map(|(_, app, flags)| (app.clone(), *flags))
    }

    /// The key authorization of a pending ACME HTTP-01 challenge for `host` (a Host header) and
    /// `token`, if the leader published one.
    pub fn acme_answer(&self, host: &str, token: &str) -> Option<String> {
        let host = normalize_host(host);
        let inner = self.inner.read().ok()?;
        inner
            .wire
            .acme_challenges
            .iter()
            .find(|c| c.token == token && c.host == host.as_ref())
            .map(|c| c.key_authorization.clone())
    }

    /// The certificate set through the API for a TLS server name, if any.
    pub fn certificate_for(&self, sni: &str) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.inner.read().ok()?.certs.lookup(sni)
    }

    /// The whole table in wire form, and its version.
    pub fn snapshot(&self) -> Arc<RouterTable> {
        self.inner
            .read()
            .map(|i| i.wire.clone())
            .unwrap_or_default()
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    /// Whether requests are still in flight to a backend at `address` that has left the table.
    pub fn busy(&self, address: &str) -> bool {
        let Ok(mut d) = self.draining.lock() else {
            return false;
        };
        d.retain(|b| b.inflight.get() > 0);
        d.iter().any(|b| b.address == address)
    }

    /// A receiver that sees every later rebuild.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Replaces the table. Unchanged apps keep their round-robin position; in-flight counts
    /// follow their address.
    pub fn replace(&self, mut table: RouterTable) {
        if let Some(ca) = &table.instance_ca {
            self.client_ca.set(ca);
        }
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        let old_inflight: HashMap<&str, &Arc<stats::Gauge>> = inner
            .apps
            .values()
            .flat_map(|r| r.backends.iter())
            .map(|b| (b.address.as_str(), &b.inflight))
            .collect();
        let names: HashMap<&str, &str> = table
            .routes
            .iter()
            .map(|r| (r.app_id.as_str(), r.app.as_str()))
            .collect();
        let mut apps = HashMap::with_capacity(table.apps.len());
        for (app, list) in &table.apps {
            let name = names.get(app.as_str()).copied().unwrap_or_default();
            let split = table.splits.get(app).copied();
            let same = inner.apps.get(app).filter(|old| {
                *old.name == *name
                    && old.split == split
                    && old.backends.len() == list.len()
                    && old.backends.iter().zip(list).all(|(a, b)| {
                        a.address == b.address
                            && a.index == b.index
                            && a.revision == b.revision
                            && a.id == b.id
                    })
            });
            let routes = match same {
                Some(old) => old.clone(),
                None => {
                    let backends = list
                        .iter()
                        .map(|b| {
                            let inflight = old_inflight
                                .get(b.address.as_str())
                                .map_or_else(Default::default, |c| (*c).clone());
                            Arc::new(Backend::of(
                                b.address.clone(),
                                b.index,
                                b.revision,
                                b.id.clone(),
                                inflight,
                            ))
                        })
                        .collect();
                    Arc::new(AppRoutes::with_split(app, name, backends, split))
                }
            };
            apps.insert(app.clone(), routes);
        }
        drop(old_inflight);
        // Backends that leave the table with requests in flight: `busy` says so, so the
        // controller can hold back the stop of an instance until what it is serving has finished.
        let kept: std::collections::HashSet<&str> = table
            .apps
            .values()
            .flatten()
            .map(|b| b.address.as_str())
            .collect();
        let leaving: Vec<Arc<Backend>> = inner
            .apps
            .values()
            .flat_map(|r| r.backends.iter())
            .filter(|b| !kept.contains(b.address.as_str()))
            .filter(|b| b.inflight.get() > 0)
            .cloned()
            .collect();
        drop(kept);
        if !leaving.is_empty() {
            if let Ok(mut d) = self.draining.lock() {
                d.extend(leaving);
            }
        }
        let mut hosts: HashMap<String, Vec<(String, Arc<AppRoutes>, RouteFlags)>> = HashMap::new();
        for r in &table.routes {
            // A route to an app the table does not list (a store mid-change) routes to no
            // instance: 503, as for an app with none ready.
            let app = apps
                .get(&r.app_id)
                .cloned()
                .unwrap_or_else(|| Arc::new(AppRoutes::new(&r.app_id, &r.app, Vec::new())));
            hosts.entry(r.host.clone()).or_default().push((
                r.path.clone(),
                app,
                RouteFlags {
                    https_redirect: r.https_redirect,
                    hsts: r.hsts,
                },
            ));
        }
        for list in hosts.values_mut() {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        }
        let certs = if table.certificates == inner.wire.certificates {
            inner.certs.clone()
        } else {
            Arc::new(tls::TableCerts::load(&table.certificates))
        };
        let version = *self.version.borrow() + 1;
        if table.version == 0 {
            table.version = version;
        }
        *inner = Tables {
            hosts,
            apps,
            certs,
            wire: Arc::new(table),
        };
        drop(inner);
        self.version.send_modify(|v| *v = version);
    }
}

/// The host without port or trailing dot, lower-case; borrowed when it already is (the common
/// case on the request path, which then allocates nothing here).
fn normalize_host(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
        .trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// The table as the store says it is now: every app's default route `NAME.<apps domain>` and
/// its mapped routes, and its running, ready instances at their node's address.
pub async fn build(ctx: &AppCtx) -> StoreResult<RouterTable> {
    build_from(ctx, &Rows::read(ctx).await?).await
}

async fn build_from(ctx: &AppCtx, rows: &Rows) -> StoreResult<RouterTable> {
    let apps = ctx.store.list_apps().await?;
    let (nodes, instances) = (&rows.nodes, &rows.instances);
    let mapped = rows.routes.iter().cloned();
    // A lost node's instances are not reported any more and probably gone: no traffic there.
    let node_addr: HashMap<&str, &str> = nodes
        .iter()
        .filter(|n| n.state != "lost")
        .map(|n| (n.name.as_str(), n.address.as_str()))
        .collect();
    let mut table = RouterTable {
        instance_ca: Some(ctx.identity.pem().to_string()),
        ..Default::default()
    };
    for a in &apps {
        table.apps.insert(a.id.clone(), Vec::new());
        if let Some(host) = &a.host {
            table.routes.push(RouteInfo {
                host: format!("{host}.{}", ctx.settings.apps_domain),
                path: String::new(),
                app: a.name.clone(),
                app_id: a.id.clone(),
                default: true,
                https_redirect: false,
                hsts: false,
            });
        }
    }
    // Internal routes (`NAME.apps.internal`) are resolved by the nodes' DNS only: the public
    // router never serves them.
    for r in mapped.filter(|r| !paas_common::network::is_internal(&r.host)) {
        table.routes.push(RouteInfo {
            host: r.host,
            path: r.path,
            app: r.app_name,
            app_id: r.app_id,
            default: false,
            https_redirect: r.https_redirect,
            hsts: r.hsts,
        });
    }
    // Certificates set through the API, keys opened here: routers hold them in memory only.
    for d in ctx.store.list_domains().await? {
        let (Some(chain), Some(sealed)) = (d.certificate, d.private_key) else {
            continue;
        };
        match ctx
            .secrets
            .open(&crate::deploy::domains::key_aad(&d.name), &sealed)
        {
            Ok(key) => table
                .certificates
                .push(paas_common::route::RouterCertificate {
                    domain: d.name,
                    certificate: chain,
                    private_key: key,
                }),
            Err(e) => {
                tracing::error!(domain = %d.name, error = %e, "a domain's certificate key does not open; not served")
            }
        }
    }
    // ACME HTTP-01 answers the leader published: every router answers them on plain HTTP.
    table.acme_challenges = ctx.store.list_acme_challenges().await?;
    // Only `web` instances serve HTTP; a worker is never routed. A running instance whose
    // readiness check fails keeps running but gets no traffic until it passes again.
    for i in instances
        .iter()
        .filter(|i| i.state == InstanceState::Running && i.ready && i.process_type == "web")
    {
        let (Some(node), Some(port)) = (&i.node_name, i.host_port) else {
            continue;
        };
        let Some(addr) = node_addr.get(node.as_str()) else {
            continue;
        };
        if let Some(list) = table.apps.get_mut(&i.app_id) {
            list.push(RouterBackend {
                address: backend_address(addr, port),
                index: i.index,
                revision: i.revision,
                id: i.id.clone(),
            });
        }
    }
    for list in table.apps.values_mut() {
        list.sort_by_key(|b| (b.index, b.revision));
    }
    // Canary and blue-green splits (issue 23): only while the deployment's revision is current.
    for d in ctx.store.running_deployments().await? {
        let current = apps
            .iter()
            .any(|a| a.id == d.app_id && a.current_revision == Some(d.new_revision));
        if current {
            table.splits.insert(
                d.app_id.clone(),
                paas_common::route::RouterSplit {
                    revision: d.new_revision,
                    percent: crate::control::deployments::weight(&d),
                },
            );
        }
    }
    Ok(table)
}

/// Where the router reaches an instance: its node's address and the instance's published port.
/// The drain matches removed instances to the table's backends by this string, so both use it.
pub fn backend_address(node_address: &str, port: u16) -> String {
    format!("{node_address}:{port}")
}

/// Coalesces route table rebuilds. Every heartbeat that changes routing, every pass and every
/// route change asks for one, and each reads every instance row: during a mass placement 100
/// nodes reporting their new instances ready asked for 100-200 whole rebuilds a second, one
/// after another behind the store. Now at most one rebuild runs; the requests that arrive while
/// it runs are all answered by the next one.
#[derive(Default)]
pub struct Refresher {
    /// Generation of the newest request.
    requested: std::sync::atomic::AtomicU64,
    /// Held while a rebuild runs (a fair lock: callers queue in order); the newest generation a
    /// completed rebuild covers.
    done: tokio::sync::Mutex<u64>,
    /// Rebuilds completed (the tests count them).
    pub rebuilds: std::sync::atomic::AtomicU64,
    /// When the last rebuild completed.
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Refresher {
    /// Whether a rebuild completed less than `d` ago.
    pub fn rebuilt_within(&self, d: std::time::Duration) -> bool {
        self.last
            .lock()
            .map(|l| l.is_some_and(|t| t.elapsed() < d))
            .unwrap_or(false)
    }
}

/// Rebuilds the route table (and the internal network table) from the store, or waits for a
/// rebuild that covers this call: when it returns, a rebuild that read the store after the call
/// began has completed. That is what the ordering invariant needs (a removed instance is out
/// of the table before its agent is told to stop it), and concurrent callers share rebuilds.
pub async fn refresh(ctx: &AppCtx) -> StoreResult<()> {
    use std::sync::atomic::Ordering::SeqCst;
    let r = &ctx.refresher;
    let want = r.requested.fetch_add(1, SeqCst) + 1;
    let mut done = r.done.lock().await;
    if *done >= want {
        // A rebuild that started after this call (it took the lock after `want` was counted)
        // has completed.
        return Ok(());
    }
    // Every request counted so far began before this rebuild reads the store: it covers them.
    let covers = r.requested.load(SeqCst);
    rebuild(ctx).await?;
    *done = covers;
    r.rebuilds.fetch_add(1, SeqCst);
    if let Ok(mut last) = r.last.lock() {
        *last = Some(std::time::Instant::now());
    }
    Ok(())
}

/// One rebuild of both tables from one read of the rows they share.
async fn rebuild(ctx: &AppCtx) -> StoreResult<()> {
    let rows = Rows::read(ctx).await?;
    let table = build_from(ctx, &rows).await?;
    ctx.routes.replace(table);
    // The internal network follows the same changes (instances came or went, routes moved).
    crate::control::network::refresh_from(ctx, &rows).await
}

/// What the route table and the internal network table are both built from, read once per
/// rebuild: each reading every instance row itself was two whole reads per refresh.
pub struct Rows {
    pub nodes: Vec<crate::store::NodeRecord>,
    pub instances: Vec<crate::store::InstanceRecord>,
    pub routes: Vec<crate::store::RouteRecord>,
}

impl Rows {
    pub async fn read(ctx: &AppCtx) -> StoreResult<Self> {
        Ok(Self {
            nodes: ctx.store.list_nodes().await?,
            instances: ctx.store.list_instances().await?,
            routes: ctx.store.list_routes().await?,
        })
    }
}

/// The app name a Host header addresses, if it is `NAME.<domain>` (any port).
pub fn app_for_host(host: &str, domain: &str) -> Option<String> {
    let host = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!name.is_empty() && !name.contains('.')).then(|| name.to_string())
}

/// The host a request names: its `Host` header, or (HTTP/2) the URI's authority.
pub fn request_host<B>(req: &http::Request<B>) -> Option<&str> {
    req.headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_to_apps() {
        assert_eq!(
            app_for_host("myapp.localhost:8080", "localhost").as_deref(),
            Some("myapp")
        );
        assert_eq!(
            app_for_host("MyApp.localhost", "localhost").as_deref(),
            Some("myapp")
        );
        assert_eq!(
            app_for_host("a.apps.example.com", "apps.example.com").as_deref(),
            Some("a")
        );
        assert_eq!(app_for_host("localhost:8080", "localhost"), None);
        assert_eq!(app_for_host("127.0.0.1:8080", "localhost"), None);
        assert_eq!(app_for_host("a.b.localhost", "localhost"), None);
        assert_eq!(app_for_host("evillocalhost", "localhost"), None);
    }

    fn wire(list: &[(&str, u32)]) -> RouterTable {
        RouterTable {
            version: 0,
            routes: vec![RouteInfo {
                host: "a.localhost".into(),
                path: String::new(),
                app: "a".into(),
                app_id: "a".into(),
                default: true,
                https_redirect: false,
                hsts: false,
            }],
            apps: [(
                "a".to_string(),
                list.iter()
                    .map(|(a, i)| RouterBackend {
                        address: a.to_string(),
                        index: *i,
                        revision: 0,
                        id: String::new(),
                    })
                    .collect(),
            )]
            .into(),
            certificates: Vec::new(),
            acme_challenges: Vec::new(),
            splits: Default::default(),
            instance_ca: None,
        }
    }

    fn table(list: &[(&str, u32)]) -> RouteTable {
        let t = RouteTable::default();
        t.replace(wire(list));
        t
    }

    #[test]
    fn longest_path_prefix_wins() {
        let t = RouteTable::default();
        let r = |host: &str, path: &str, app: &str| RouteInfo {
            host: host.into(),
            path: path.into(),
            app: app.into(),
            app_id: app.into(),
            default: false,
            https_redirect: false,
            hsts: false,
        };
        t.replace(RouterTable {
            version: 0,
            routes: vec![
                r("shop.example.com", "", "web"),
                r("shop.example.com", "/api", "api"),
                r("shop.example.com", "/api/v2", "api2"),
            ],
            apps: Default::default(),
            certificates: Vec::new(),
            acme_challenges: Vec::new(),
            splits: Default::default(),
            instance_ca: None,
        });
        assert_eq!(
            t.resolve("Shop.Example.com:8080", "/")
                .map(|r| r.name.to_string())
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            t.resolve("shop.example.com", "/apix")
                .map(|r| r.name.to_string())
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            t.resolve("shop.example.com", "/api/users?x=1")
                .map(|r| r.name.to_string())
                .as_deref(),
            Some("api")
        );
        assert_eq!(
            t.resolve("shop.example.com", "/api/v2/users")
                .map(|r| r.name.to_string())
                .as_deref(),
            Some("api2")
        );
        assert!(t.resolve("other.example.com", "/").is_none());
        assert!(
            t.resolve("shop.example.com:80", "/").is_some()
                && t.resolve("example.com", "/").is_none()
        );
    }

    #[test]
    fn acme_answers_only_for_their_host_and_token() {
        let t = RouteTable::default();
        let mut w = wire(&[]);
        w.acme_challenges = vec![paas_common::route::AcmeChallenge {
            host: "www.shop.test".into(),
            token: "tok".into(),
            key_authorization: "tok.thumb".into(),
        }];
        t.replace(w);
        assert_eq!(
            t.acme_answer("WWW.shop.test:80", "tok").as_deref(),
            Some("tok.thumb")
        );
        assert!(t.acme_answer("api.shop.test", "tok").is_none());
        assert!(t.acme_answer("www.shop.test", "other").is_none());
        // A standalone router gets them in the wire table it follows.
        assert_eq!(t.snapshot().acme_challenges.len(), 1);
    }

    #[test]
    fn round_robin_visits_every_backend_and_skips_refused_ones() {
        let t = table(&[("h:1", 0), ("h:2", 1), ("h:3", 2)]);
        let r = t.get("a").unwrap();
        let mut seen: Vec<u32> = (0..3)
            .map(|_| r.pick(Balance::RoundRobin, &[]).unwrap().index)
            .collect();
        seen.sort();
        assert_eq!(seen, [0, 1, 2]);
        let skip = vec!["h:1".to_string(), "h:3".to_string()];
        for _ in 0..5 {
            assert_eq!(r.pick(Balance::RoundRobin, &skip).unwrap().index, 1);
        }
        let all: Vec<String> = ["h:1", "h:2", "h:3"].map(String::from).into();
        assert!(r.pick(Balance::RoundRobin, &all).is_none());
    }

    #[test]
    fn least_connections_prefers_the_idle_instance_and_counts_survive_rebuilds() {
        let t = table(&[("h:1", 0), ("h:2", 1)]);
        let r = t.get("a").unwrap();
        for _ in 0..5 {
            r.backends[0].inflight.inc();
        }
        for _ in 0..4 {
            assert_eq!(r.pick(Balance::LeastConnections, &[]).unwrap().index, 1);
        }
        // A rebuild with one more instance keeps h:1's count.
        t.replace(wire(&[("h:1", 0), ("h:2", 1), ("h:3", 2)]));
        let r = t.get("a").unwrap();
        assert_eq!(r.backends[0].inflight.get(), 5);
        assert_ne!(r.pick(Balance::LeastConnections, &[]).unwrap().index, 0);
    }

    #[test]
    fn targeting_by_index() {
        let t = table(&[("h:1", 0), ("h:2", 1)]);
        let r = t.get("a").unwrap();
        assert_eq!(r.by_index(1, &[]).unwrap().address, "h:2");
        assert!(r.by_index(2, &[]).is_none());
        assert!(r.by_index(1, &["h:2".to_string()]).is_none());
    }

    #[test]
    fn a_split_sends_each_revision_its_share_and_pinned_requests_count() {
        let mut w = wire(&[("h:1", 0), ("h:2", 1), ("n:1", 0), ("n:2", 1)]);
        for b in w.apps.get_mut("a").unwrap() {
            b.revision = if b.address.starts_with('n') { 2 } else { 1 };
            b.id = b.address.clone();
        }
        w.splits.insert(
            "a".into(),
            RouterSplit {
                revision: 2,
                percent: 20,
            },
        );
        let t = RouteTable::default();
        t.replace(w.clone());
        let r = t.get("a").unwrap();
        let new = (0..100)
            .filter(|_| r.pick(Balance::RoundRobin, &[]).unwrap().revision == 2)
            .count();
        assert_eq!(new, 20);
        // Within a revision the usual balance: both new instances served.
        let mut seen: Vec<String> = (0..200)
            .map(|_| r.pick(Balance::RoundRobin, &[]).unwrap())
            .filter(|b| b.revision == 2)
            .map(|b| b.address.clone())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, ["n:1", "n:2"]);
        // Sticky requests to the new revision count for it: the others go to the old one until
        // the shares are right again.
        let t = RouteTable::default();
        t.replace(w.clone());
        let r = t.get("a").unwrap();
        for _ in 0..20 {
            assert_eq!(r.by_id("n:1", &[]).unwrap().revision, 2);
        }
        let new = (0..80)
            .filter(|_| r.pick(Balance::RoundRobin, &[]).unwrap().revision == 2)
            .count();
        assert_eq!(new, 0);
        // A revision without an instance left falls back to the other.
        let all_new: Vec<String> = ["n:1", "n:2"].map(String::from).into();
        assert_eq!(r.pick(Balance::RoundRobin, &all_new).unwrap().revision, 1);
        // Index targeting prefers the revision the split serves.
        assert_eq!(r.by_index(1, &[]).unwrap().address, "n:2");
        w.splits.insert(
            "a".into(),
            RouterSplit {
                revision: 2,
                percent: 0,
            },
        );
        t.replace(w);
        let r = t.get("a").unwrap();
        assert!((0..20).all(|_| r.pick(Balance::RoundRobin, &[]).unwrap().revision == 1));
        assert_eq!(r.by_index(1, &[]).unwrap().address, "h:2");
    }

    #[tokio::test]
    async fn waiters_see_rebuilds() {
        let t = table(&[]);
        let mut rx = t.subscribe();
        rx.borrow_and_update();
        t.replace(wire(&[("h:1", 0)]));
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(t.get("a").unwrap().backends.len(), 1);
    }
}
