//! The HTTP router: requests whose Host is `NAME.<apps domain>` go to a running instance of app
//! NAME, round-robin. The route table is rebuilt from the store whenever instance state changes;
//! only instances whose health check passed (state `running`) are in it.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use paas_common::api::InstanceState;
use paas_common::ErrorCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::error::error_response;
use crate::state::AppCtx;
use crate::store::StoreResult;

#[derive(Debug, Clone)]
pub struct Backend {
    pub address: String,
    pub index: u32,
}

#[derive(Debug, Default)]
pub struct AppRoutes {
    pub backends: Vec<Backend>,
    next: AtomicUsize,
}

impl AppRoutes {
    fn pick(&self) -> Option<&Backend> {
        if self.backends.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.backends.get(i % self.backends.len())
    }
}

/// App name -> its ready backends. Apps that exist but have none map to an empty list, so the
/// router can tell "unknown app" (404) from "no healthy instance" (503).
#[derive(Default)]
pub struct RouteTable {
    inner: RwLock<HashMap<String, Arc<AppRoutes>>>,
}

impl RouteTable {
    pub fn get(&self, app: &str) -> Option<Arc<AppRoutes>> {
        self.inner.read().ok()?.get(app).cloned()
    }

    fn replace(&self, table: HashMap<String, Vec<Backend>>) {
        let Ok(mut inner) = self.inner.write() else { return };
        let mut next = HashMap::with_capacity(table.len());
        for (app, backends) in table {
            // Keep the round-robin position when nothing changed for this app.
            let same = inner.get(&app).filter(|old| {
                old.backends.len() == backends.len()
                    && old.backends.iter().zip(&backends).all(|(a, b)| a.address == b.address)
            });
            let routes = match same {
                Some(old) => old.clone(),
                None => Arc::new(AppRoutes { backends, next: AtomicUsize::new(0) }),
            };
            next.insert(app, routes);
        }
        *inner = next;
    }
}

/// Rebuilds the route table from the store.
pub async fn refresh(ctx: &AppCtx) -> StoreResult<()> {
    let apps = ctx.store.list_apps().await?;
    let nodes = ctx.store.list_nodes().await?;
    let instances = ctx.store.list_instances().await?;
    // A lost node's instances are not reported any more and probably gone: no traffic there.
    let node_addr: HashMap<&str, &str> =
        nodes.iter().filter(|n| n.state != "lost").map(|n| (n.name.as_str(), n.address.as_str())).collect();
    let names: HashMap<&str, &str> = apps.iter().map(|a| (a.id.as_str(), a.name.as_str())).collect();
    let mut table: HashMap<String, Vec<Backend>> = apps.iter().map(|a| (a.name.clone(), Vec::new())).collect();
    for i in instances.iter().filter(|i| i.state == InstanceState::Running) {
        let (Some(node), Some(port), Some(app)) = (&i.node_name, i.host_port, names.get(i.app_id.as_str())) else {
            continue;
        };
        let Some(addr) = node_addr.get(node.as_str()) else { continue };
        if let Some(list) = table.get_mut(*app) {
            list.push(Backend { address: format!("{addr}:{port}"), index: i.index });
        }
    }
    for list in table.values_mut() {
        list.sort_by_key(|b| b.index);
    }
    ctx.routes.replace(table);
    Ok(())
}

/// The app name a Host header addresses, if it is `NAME.<domain>` (any port).
pub fn app_for_host(host: &str, domain: &str) -> Option<String> {
    let host = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!name.is_empty() && !name.contains('.')).then(|| name.to_string())
}

pub fn request_host(req: &actix_web::dev::RequestHead) -> Option<&str> {
    req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri.host())
}

const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];

fn router_error(code: ErrorCode, reason: &'static str, message: String) -> HttpResponse {
    let mut res = error_response(code, message);
    res.headers_mut().insert(HeaderName::from_static("x-paas-router-error"), HeaderValue::from_static(reason));
    res
}

/// Proxies one request to an instance of the app its Host names.
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    ctx: web::Data<AppCtx>,
    client: web::Data<awc::Client>,
) -> HttpResponse {
    let host = request_host(req.head()).unwrap_or_default().to_string();
    let Some(app) = app_for_host(&host, &ctx.settings.apps_domain) else {
        return router_error(ErrorCode::RouteNotFound, "unknown_route", format!("no route for host {host:?}"));
    };
    let Some(routes) = ctx.routes.get(&app) else {
        return router_error(ErrorCode::RouteNotFound, "unknown_route", format!("no app named {app:?} on this platform"));
    };
    let Some(backend) = routes.pick() else {
        return router_error(
            ErrorCode::NoHealthyInstance,
            "no_healthy_instance",
            format!("app {app:?} has no healthy instance right now"),
        );
    };

    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{}{}", backend.address, path);
    let mut fwd = client.request(req.method().clone(), url).no_decompress().timeout(Duration::from_secs(300));
    for (name, value) in req.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            fwd = fwd.insert_header((name.clone(), value.clone()));
        }
    }
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let xff = match req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {peer}"),
        None => peer,
    };
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    fwd = fwd
        .insert_header(("x-forwarded-for", xff))
        .insert_header(("x-forwarded-proto", "http"))
        .insert_header(("x-forwarded-host", host.clone()))
        .insert_header(("x-request-id", request_id.clone()));

    match fwd.send_stream(payload).await {
        Ok(res) => {
            let mut out = HttpResponse::build(res.status());
            for (name, value) in res.headers() {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    out.insert_header((name.clone(), value.clone()));
                }
            }
            out.insert_header(("x-request-id", request_id));
            out.insert_header(("x-paas-app", app));
            out.insert_header(("x-paas-instance", backend.index.to_string()));
            out.streaming(res)
        }
        Err(e) => {
            tracing::warn!(app = %app, backend = %backend.address, error = %e, "upstream request failed");
            router_error(ErrorCode::UpstreamError, "upstream_failed", format!("instance {} of {app:?} failed: {e}", backend.index))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_to_apps() {
        assert_eq!(app_for_host("myapp.localhost:8080", "localhost").as_deref(), Some("myapp"));
        assert_eq!(app_for_host("MyApp.localhost", "localhost").as_deref(), Some("myapp"));
        assert_eq!(app_for_host("a.apps.example.com", "apps.example.com").as_deref(), Some("a"));
        assert_eq!(app_for_host("localhost:8080", "localhost"), None);
        assert_eq!(app_for_host("127.0.0.1:8080", "localhost"), None);
        assert_eq!(app_for_host("a.b.localhost", "localhost"), None);
        assert_eq!(app_for_host("evillocalhost", "localhost"), None);
    }
}
