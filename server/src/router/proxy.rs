//! The request path of the router, on the API's actix listener with a pooled awc client per worker
//! (HTTP/1.1 keep-alive both ways; bodies stream both ways, never buffered whole).
//!
//! For each request: find the app's routes; pick an instance (round-robin or least-connections,
//! or the one `X-Paas-App-Instance: NAME:INDEX` names); if none is ready, wait for the table to
//! change up to `router_wait_ms` (a deploy in progress) before answering 503. A failure before
//! any request byte was sent (refused or timed-out connect) is retried on another instance; so is
//! a failed send of a bodiless idempotent request (a pooled connection the instance had closed).
//! Every error the router itself answers is `{"code","message"}` with `X-Paas-Router-Error`.
//!
//! Errors know their side, as in pingora: [`Failure`] says whether the instance was never reached
//! (always retryable), failed after we sent (retryable only when replaying cannot change state),
//! or was too slow (504, not retried: the instance may still be working on it).

use actix_web::body::SizedStream;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::{ConnectError, SendRequestError};
use futures_util::Stream;
use paas_common::ErrorCode;
use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::access_log::{self, Entry};
use super::{request_host, Backend, Router};
use crate::config::Settings;
use crate::error::error_response;

/// Most instances one request tries (each only once per address).
const MAX_ATTEMPTS: usize = 4;

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The awc client the proxy uses (one per actix worker, each with its own connection pool).
pub fn client(settings: &Settings) -> awc::Client {
    let connector = awc::Connector::new()
        .timeout(Duration::from_millis(settings.router_connect_timeout_ms))
        // The default (100 per worker) would queue requests under load instead of opening
        // connections; instances are the limit, not the router.
        .limit(4096)
        .conn_keep_alive(Duration::from_secs(15));
    awc::Client::builder()
        .connector(connector)
        .disable_redirects()
        .no_default_headers()
        .timeout(Duration::from_secs(settings.router_response_timeout_secs))
        .finish()
}

/// What the router knows of a request, for headers, errors and the access log.
pub(super) struct Meta {
    pub(super) app: String,
    pub(super) host: String,
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) request_id: String,
    pub(super) peer: String,
    /// The client's scheme as this listener saw it (never taken from the client's headers).
    pub(super) proto: &'static str,
    pub(super) started: Instant,
}

/// One upstream failure, classified.
struct Failure {
    code: ErrorCode,
    reason: &'static str,
    message: String,
    retry: bool,
}

fn classify(e: &SendRequestError, replay_safe: bool) -> Failure {
    let (code, reason, retry) = match e {
        SendRequestError::Connect(ConnectError::Timeout) => {
            (ErrorCode::UpstreamTimeout, "connect_timeout", true)
        }
        SendRequestError::Connect(_) => (ErrorCode::UpstreamError, "connect_failed", true),
        SendRequestError::Timeout => (ErrorCode::UpstreamTimeout, "response_timeout", false),
        _ => (ErrorCode::UpstreamError, "upstream_failed", replay_safe),
    };
    Failure {
        code,
        reason,
        message: e.to_string(),
        retry,
    }
}

/// Proxies one request to an instance of the app its Host names.
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    ctx: web::Data<Router>,
    client: web::Data<awc::Client>,
) -> HttpResponse {
    let stats = &ctx.table.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let host = request_host(req.head()).unwrap_or_default().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map_or_else(new_request_id, str::to_string);
    let meta = Meta {
        app: ctx
            .table
            .resolve(&host, req.uri().path())
            .unwrap_or_default(),
        host,
        method: req.method().clone(),
        path,
        request_id,
        peer: req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        proto: if req.app_config().secure() {
            "https"
        } else {
            "http"
        },
        started: Instant::now(),
    };
    if meta.app.is_empty() || ctx.table.get(&meta.app).is_none() {
        let msg = format!(
            "no route for {}{} on this platform",
            meta.host,
            req.uri().path()
        );
        return fail(&ctx, &meta, ErrorCode::RouteNotFound, "unknown_route", msg);
    }

    // `X-Paas-App-Instance: NAME:INDEX` pins the request to one instance of this host's app.
    let target = match req
        .headers()
        .get("x-paas-app-instance")
        .map(|v| parse_target(v, &meta.app))
    {
        None => None,
        Some(Ok(i)) => Some(i),
        Some(Err(msg)) => {
            return fail(
                &ctx,
                &meta,
                ErrorCode::BadRequest,
                "bad_instance_header",
                msg,
            )
        }
    };

    let headers = upstream_headers(req.headers(), &meta);
    if super::ws::is_websocket(&req) {
        return super::ws::bridge(req, payload, ctx, client, meta, target, headers).await;
    }
    // The body's framing is re-made on the instance side: a known length stays a length
    // (awc writes Content-Length from the sized body), anything else is chunked.
    let length: Option<u64> = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let has_body = req.headers().contains_key("transfer-encoding") || length.is_some_and(|n| n > 0);
    let idempotent = matches!(
        meta.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let body = Lendable::new(payload.into_inner());
    let deadline = meta.started + ctx.wait;
    let mut tried: Vec<String> = Vec::new();
    let mut last: Option<Failure> = None;

    loop {
        let backend = match next_backend(&ctx, &meta.app, target, &tried, deadline, last.is_some())
            .await
        {
            Some(b) => b,
            None => {
                let f = last.unwrap_or_else(|| match target {
                    Some(i) => Failure {
                        code: ErrorCode::InstanceNotFound,
                        reason: "instance_not_found",
                        message: format!("app {:?} has no ready instance {i}", meta.app),
                        retry: false,
                    },
                    None => Failure {
                        code: ErrorCode::NoHealthyInstance,
                        reason: "no_healthy_instance",
                        message: format!("app {:?} has no healthy instance right now", meta.app),
                        retry: false,
                    },
                });
                return fail(&ctx, &meta, f.code, f.reason, f.message);
            }
        };
        let guard = InFlight::new(backend.clone());
        let url = format!("http://{}{}", backend.address, meta.path);
        let mut fwd = client.request(meta.method.clone(), url).no_decompress();
        for (name, value) in &headers {
            fwd = fwd.append_header((name.clone(), value.clone()));
        }
        let sent = match (has_body, length) {
            (false, _) => fwd.send().await,
            (true, Some(n)) => fwd.send_body(SizedStream::new(n, body.lend())).await,
            (true, None) => fwd.send_stream(body.lend()).await,
        };
        match sent {
            Ok(res) => return respond(&ctx, meta, backend, guard, res),
            Err(e) => {
                let f = classify(&e, idempotent && !body.touched());
                tracing::warn!(app = %meta.app, instance = backend.index, backend = %backend.address, error = %e, retry = f.retry, "upstream attempt failed");
                tried.push(backend.address.clone());
                if !f.retry || tried.len() >= MAX_ATTEMPTS {
                    return fail(
                        &ctx,
                        &meta,
                        f.code,
                        f.reason,
                        format!(
                            "instance {} of {:?}: {}",
                            backend.index, meta.app, f.message
                        ),
                    );
                }
                stats.retries.fetch_add(1, Ordering::Relaxed);
                last = Some(f);
            }
        }
    }
}

/// The instance to try next, waiting (until `deadline`) for the route table to offer one.
pub(super) async fn next_backend(
    ctx: &Router,
    app: &str,
    target: Option<u32>,
    tried: &[String],
    deadline: Instant,
    retrying: bool,
) -> Option<Arc<Backend>> {
    // Only a request that finds no instance subscribes to table changes (the common case, a
    // pick at once, skips the watch channel's bookkeeping).
    let mut rx: Option<tokio::sync::watch::Receiver<u64>> = None;
    loop {
        if let Some(rx) = rx.as_mut() {
            rx.borrow_and_update();
        }
        let routes = ctx.table.get(app)?;
        let pick = match target {
            Some(i) => routes.by_index(i, tried),
            None => routes.pick(ctx.balance, tried),
        };
        if pick.is_some() {
            return pick;
        }
        let Some(watch) = rx.as_mut() else {
            if !retrying {
                ctx.table
                    .stats
                    .waited_for_instance
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Subscribe, then look again before waiting: a change between the first look and
            // the subscription must not be missed.
            rx = Some(ctx.table.subscribe());
            continue;
        };
        let left = deadline.checked_duration_since(Instant::now())?;
        if tokio::time::timeout(left, watch.changed()).await.is_err() {
            return None;
        }
    }
}

/// A random (v4) UUID from the thread-local generator: `Uuid::new_v4` asks the OS for every one
/// (a `getrandom` syscall per request on the hot path).
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

fn parse_target(v: &HeaderValue, app: &str) -> Result<u32, String> {
    let s = v.to_str().unwrap_or_default().trim();
    let (name, index) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("X-Paas-App-Instance must be NAME:INDEX, got {s:?}"))?;
    if !name.eq_ignore_ascii_case(app) {
        return Err(format!(
            "X-Paas-App-Instance names app {name:?} but the host routes to {app:?}"
        ));
    }
    index
        .parse()
        .map_err(|_| format!("X-Paas-App-Instance index {index:?} is not a number"))
}

/// The request headers an instance sees: the client's, minus hop-by-hop ones (and those the
/// `Connection` header names), plus the forwarding headers.
fn upstream_headers(h: &HeaderMap, meta: &Meta) -> Vec<(HeaderName, HeaderValue)> {
    let named_by_connection: Vec<String> = h
        .get_all("connection")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    let mut out: Vec<(HeaderName, HeaderValue)> = h
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            !HOP_BY_HOP.contains(&n)
                && !named_by_connection.iter().any(|c| c == n)
                && !matches!(
                    n,
                    "content-length"
                        | "x-forwarded-for"
                        | "x-forwarded-proto"
                        | "x-forwarded-host"
                        | "x-request-id"
                        | "x-paas-app-instance"
                )
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let prev: Vec<&str> = h
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = if prev.is_empty() {
        meta.peer.clone()
    } else {
        format!("{}, {}", prev.join(", "), meta.peer)
    };
    let mut add = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            out.push((HeaderName::from_static(name), v));
        }
    };
    add("x-forwarded-for", &xff);
    add("x-forwarded-proto", meta.proto);
    add("x-forwarded-host", &meta.host);
    add("x-request-id", &meta.request_id);
    out
}

fn respond(
    ctx: &web::Data<Router>,
    meta: Meta,
    backend: Arc<Backend>,
    guard: InFlight,
    res: awc::ClientResponse<
        impl Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin + 'static,
    >,
) -> HttpResponse {
    let status = res.status();
    let mut out = HttpResponse::build(status);
    let mut length: Option<u64> = None;
    for (name, value) in res.headers() {
        if name.as_str() == "content-length" {
            length = value.to_str().ok().and_then(|v| v.parse().ok());
            continue;
        }
        if !HOP_BY_HOP.contains(&name.as_str()) {
            out.append_header((name.clone(), value.clone()));
        }
    }
    out.insert_header(("x-request-id", meta.request_id.as_str()));
    out.insert_header(("x-paas-app", meta.app.as_str()));
    out.insert_header(("x-paas-instance", backend.index.to_string()));
    ctx.table.stats.count_status(status.as_u16());
    let body = Tracked {
        inner: res,
        bytes: 0,
        done: Some(Done {
            ctx: ctx.clone(),
            meta,
            backend,
            status: status.as_u16(),
            _guard: guard,
        }),
    };
    let bodiless = status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status.is_informational();
    match length {
        Some(n) => out.body(SizedStream::new(n, body)),
        None if bodiless => out.body(SizedStream::new(0, body)),
        None => out.streaming(body),
    }
}

/// An answer from the router itself: JSON error, reason header, counted and access-logged.
pub(super) fn fail(
    ctx: &Router,
    meta: &Meta,
    code: ErrorCode,
    reason: &'static str,
    message: String,
) -> HttpResponse {
    let mut res = error_response(code, message);
    let h = res.headers_mut();
    h.insert(
        HeaderName::from_static("x-paas-router-error"),
        HeaderValue::from_static(reason),
    );
    if let Ok(v) = HeaderValue::from_str(&meta.request_id) {
        h.insert(HeaderName::from_static("x-request-id"), v);
    }
    let stats = &ctx.table.stats;
    stats.router_errors.fetch_add(1, Ordering::Relaxed);
    stats.count_status(res.status().as_u16());
    if !meta.app.is_empty() {
        access_log::record(
            &ctx.table,
            Entry {
                app: &meta.app,
                method: meta.method.as_str(),
                path: &meta.path,
                status: res.status().as_u16(),
                bytes: 0,
                duration: meta.started.elapsed(),
                instance: None,
                request_id: &meta.request_id,
                peer: &meta.peer,
            },
        );
    }
    res
}

/// Counts a request in flight to a backend until dropped (least-connections reads it).
pub(super) struct InFlight(Arc<Backend>);

impl InFlight {
    pub(super) fn new(b: Arc<Backend>) -> Self {
        b.inflight.fetch_add(1, Ordering::Relaxed);
        Self(b)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's request body, lent to one attempt at a time: an attempt that failed before
/// reading any of it leaves it whole for the next one, and `touched` says whether any was read.
struct Lendable {
    inner: Rc<RefCell<actix_web::dev::Payload>>,
    touched: Rc<Cell<bool>>,
}

impl Lendable {
    fn new(p: actix_web::dev::Payload) -> Self {
        Self {
            inner: Rc::new(RefCell::new(p)),
            touched: Rc::new(Cell::new(false)),
        }
    }
    fn lend(&self) -> Lent {
        Lent {
            inner: self.inner.clone(),
            touched: self.touched.clone(),
        }
    }
    fn touched(&self) -> bool {
        self.touched.get()
    }
}

struct Lent {
    inner: Rc<RefCell<actix_web::dev::Payload>>,
    touched: Rc<Cell<bool>>,
}

impl Stream for Lent {
    type Item = Result<Bytes, actix_web::error::PayloadError>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Ok(mut p) = self.inner.try_borrow_mut() else {
            return Poll::Ready(None);
        };
        let r = Pin::new(&mut *p).poll_next(cx);
        if matches!(r, Poll::Ready(Some(_))) {
            self.touched.set(true);
        }
        r
    }
}

/// Finishing a proxied response: access log and in-flight count, when the body ends or the
/// client goes away.
struct Done {
    ctx: web::Data<Router>,
    meta: Meta,
    backend: Arc<Backend>,
    status: u16,
    _guard: InFlight,
}

struct Tracked<S> {
    inner: S,
    bytes: u64,
    done: Option<Done>,
}

impl<S: Stream<Item = Result<Bytes, awc::error::PayloadError>> + Unpin> Stream for Tracked<S> {
    type Item = Result<Bytes, awc::error::PayloadError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let r = Pin::new(&mut self.inner).poll_next(cx);
        match &r {
            Poll::Ready(Some(Ok(b))) => self.bytes += b.len() as u64,
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "upstream response body failed");
            }
            _ => {}
        }
        r
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        if let Some(d) = self.done.take() {
            access_log::record(
                &d.ctx.table,
                Entry {
                    app: &d.meta.app,
                    method: d.meta.method.as_str(),
                    path: &d.meta.path,
                    status: d.status,
                    bytes: self.bytes,
                    duration: d.meta.started.elapsed(),
                    instance: Some((d.backend.index, &d.backend.address)),
                    request_id: &d.meta.request_id,
                    peer: &d.meta.peer,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            app: "a".into(),
            host: "a.localhost:8080".into(),
            method: Method::GET,
            path: "/".into(),
            request_id: "rid".into(),
            peer: "10.0.0.9".into(),
            proto: "http",
            started: Instant::now(),
        }
    }

    #[test]
    fn forwarding_headers_append_and_hop_by_hop_go() {
        let mut h = HeaderMap::new();
        h.append(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_static("1.2.3.4"),
        );
        h.append(
            HeaderName::from_static("connection"),
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.append(
            HeaderName::from_static("x-secret"),
            HeaderValue::from_static("s"),
        );
        h.append(
            HeaderName::from_static("x-keep"),
            HeaderValue::from_static("k"),
        );
        let out = upstream_headers(&h, &meta());
        let get = |n: &str| {
            out.iter()
                .find(|(k, _)| k.as_str() == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("x-forwarded-for").as_deref(), Some("1.2.3.4, 10.0.0.9"));
        assert_eq!(get("x-forwarded-host").as_deref(), Some("a.localhost:8080"));
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(get("x-request-id").as_deref(), Some("rid"));
        assert_eq!(get("x-keep").as_deref(), Some("k"));
        assert_eq!(get("x-secret"), None);
        assert_eq!(get("connection"), None);
    }

    #[test]
    fn instance_header_parses() {
        assert_eq!(parse_target(&HeaderValue::from_static("a:2"), "a"), Ok(2));
        assert!(parse_target(&HeaderValue::from_static("b:2"), "a").is_err());
        assert!(parse_target(&HeaderValue::from_static("a:x"), "a").is_err());
        assert!(parse_target(&HeaderValue::from_static("a"), "a").is_err());
    }
}
