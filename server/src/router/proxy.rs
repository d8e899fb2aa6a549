//! The request path of the router, on the API's actix listener with a pooled hyper client per
//! worker (HTTP/1.1 keep-alive both ways; bodies stream both ways, never buffered whole).
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
use futures_util::{Stream, StreamExt};
use http_body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use paas_common::ErrorCode;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::access_log::{self, Entry};
use super::{request_host, Backend, Router};
use crate::config::Settings;
use crate::error::{error_chain, error_response};

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

/// The clients the proxy uses, one set per actix worker (each with its own connection pools, so
/// workers never contend for a pool lock): hyper for HTTP, awc for the WebSocket leg.
pub struct Clients {
    http: hyper_util::client::legacy::Client<HttpConnector, ReqBody>,
    pub(super) ws: awc::Client,
    response_timeout: Duration,
    idle_timeout: Duration,
}

impl Clients {
    pub fn new(settings: &Settings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(
            settings.router_connect_timeout_ms,
        )));
        // Small requests and answers: Nagle would hold a response's tail for the peer's ACK.
        connector.set_nodelay(true);
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(15))
            // A request that lost the race with an instance closing an idle pooled connection
            // (nothing of it was written) is sent again on a fresh one.
            .retry_canceled_requests(true)
            .build(connector);
        let ws_connector = awc::Connector::new()
            .timeout(Duration::from_millis(settings.router_connect_timeout_ms))
            .limit(4096)
            .conn_keep_alive(Duration::from_secs(15));
        let ws = awc::Client::builder()
            .connector(ws_connector)
            .disable_redirects()
            .no_default_headers()
            .timeout(Duration::from_secs(settings.router_response_timeout_secs))
            .finish();
        Self {
            http,
            ws,
            response_timeout: Duration::from_secs(settings.router_response_timeout_secs),
            idle_timeout: Duration::from_secs(settings.router_idle_timeout_secs),
        }
    }
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

fn classify(e: &hyper_util::client::legacy::Error, replay_safe: bool) -> Failure {
    let (code, reason, retry) = if e.is_connect() {
        if caused_by_timeout(e) {
            (ErrorCode::UpstreamTimeout, "connect_timeout", true)
        } else {
            (ErrorCode::UpstreamError, "connect_failed", true)
        }
    } else {
        (ErrorCode::UpstreamError, "upstream_failed", replay_safe)
    };
    Failure {
        code,
        reason,
        // hyper's own text is terse ("client error (Connect)"); the cause says what happened.
        message: error_chain(e),
        retry,
    }
}

fn caused_by_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Proxies one request to an instance of the app its Host names.
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    ctx: web::Data<Router>,
    clients: web::Data<Clients>,
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
        return super::ws::bridge(req, payload, ctx, clients, meta, target, headers).await;
    }
    // The body's framing is re-made on the instance side: a known length stays a length
    // (hyper writes Content-Length from the body's exact size), anything else is chunked.
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
        let req_body = if has_body {
            body.lend(length)
        } else {
            ReqBody::Empty
        };
        let sent = match upstream_request(&meta, &backend.address, &headers, req_body) {
            Ok(r) => tokio::time::timeout(clients.response_timeout, clients.http.request(r)).await,
            Err(msg) => {
                return fail(&ctx, &meta, ErrorCode::BadRequest, "bad_request", msg);
            }
        };
        let sent = match sent {
            Ok(r) => r,
            Err(_) => {
                return fail(
                    &ctx,
                    &meta,
                    ErrorCode::UpstreamTimeout,
                    "response_timeout",
                    format!(
                        "instance {} of {:?} sent no response headers within {} s",
                        backend.index,
                        meta.app,
                        clients.response_timeout.as_secs()
                    ),
                );
            }
        };
        match sent {
            Ok(res) => return respond(&ctx, meta, backend, guard, res, clients.idle_timeout),
            Err(e) => {
                let f = classify(&e, idempotent && !body.touched());
                tracing::warn!(app = %meta.app, instance = backend.index, backend = %backend.address, error = %f.message, retry = f.retry, "upstream attempt failed");
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

/// The request to the instance, in hyper's types (actix-web is on `http` 0.2, hyper on 1.x: names
/// and values are carried over as bytes).
fn upstream_request(
    meta: &Meta,
    address: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: ReqBody,
) -> Result<http::Request<ReqBody>, String> {
    let uri = format!("http://{address}{}", meta.path);
    let mut b = http::Request::builder()
        .method(
            http::Method::from_bytes(meta.method.as_str().as_bytes())
                .map_err(|e| format!("method {}: {e}", meta.method))?,
        )
        .uri(uri);
    let h = b.headers_mut().expect("a fresh builder has headers");
    h.reserve(headers.len());
    for (name, value) in headers {
        let n = http::HeaderName::from_bytes(name.as_str().as_bytes())
            .map_err(|e| format!("header {name}: {e}"))?;
        let v = http::HeaderValue::from_bytes(value.as_bytes())
            .map_err(|e| format!("header {name}: {e}"))?;
        h.append(n, v);
    }
    b.body(body).map_err(|e| format!("request: {e}"))
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
    res: http::Response<hyper::body::Incoming>,
    idle: Duration,
) -> HttpResponse {
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut out = HttpResponse::build(status);
    let mut length: Option<u64> = None;
    for (name, value) in res.headers() {
        let n = name.as_str();
        if n == "content-length" {
            length = value.to_str().ok().and_then(|v| v.parse().ok());
            continue;
        }
        if HOP_BY_HOP.contains(&n) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append_header((n, v));
        }
    }
    out.insert_header(("x-request-id", meta.request_id.as_str()));
    out.insert_header(("x-paas-app", meta.app.as_str()));
    out.insert_header(("x-paas-instance", backend.index.to_string()));
    ctx.table.stats.count_status(status.as_u16());
    let body = Tracked {
        inner: Incoming {
            body: res.into_body(),
            idle,
            timer: None,
        },
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

/// The instance's response body as a stream of data chunks (trailers are not passed on), cut
/// when the instance stays silent for `idle` mid-body. The timer is armed only while a chunk is
/// awaited, so a body that is already buffered (most small answers) never touches the timer
/// wheel.
struct Incoming {
    body: hyper::body::Incoming,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("{0}")]
    Upstream(#[from] hyper::Error),
    #[error("the instance sent nothing for {0:?} mid-body")]
    Idle(Duration),
}

impl Stream for Incoming {
    type Item = Result<Bytes, BodyError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.timer = None;
                    match frame.into_data() {
                        Ok(data) => return Poll::Ready(Some(Ok(data))),
                        Err(_) => continue,
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    let idle = self.idle;
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                    if timer.as_mut().poll(cx).is_ready() {
                        self.timer = None;
                        return Poll::Ready(Some(Err(BodyError::Idle(idle))));
                    }
                    return Poll::Pending;
                }
            }
        }
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
///
/// hyper sends the request from its connection task, which must be `Send`, and actix's payload is
/// not: an attempt gets a channel-fed body, and a local task pumps the payload into the channel
/// only once hyper first asks for a chunk (so a failed connect leaves the payload untouched).
struct Lendable {
    inner: Rc<RefCell<Option<actix_web::dev::Payload>>>,
    touched: Rc<Cell<bool>>,
}

impl Lendable {
    fn new(p: actix_web::dev::Payload) -> Self {
        Self {
            inner: Rc::new(RefCell::new(Some(p))),
            touched: Rc::new(Cell::new(false)),
        }
    }

    fn lend(&self, length: Option<u64>) -> ReqBody {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
        let inner = self.inner.clone();
        let touched = self.touched.clone();
        actix_web::rt::spawn(async move {
            // The attempt dropped its body unread: the payload stays for the next one.
            if start_rx.await.is_err() {
                return;
            }
            let Some(mut payload) = inner.borrow_mut().take() else {
                let _ = tx
                    .send(Err(std::io::Error::other(
                        "the request body was already sent",
                    )))
                    .await;
                return;
            };
            touched.set(true);
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
                let failed = chunk.is_err();
                if tx.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        ReqBody::Channel {
            rx,
            start: Some(start_tx),
            length,
        }
    }

    fn touched(&self) -> bool {
        self.touched.get()
    }
}

/// A request body for hyper: none, or the client's, chunk by chunk through a channel.
pub(super) enum ReqBody {
    Empty,
    Channel {
        rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
        start: Option<tokio::sync::oneshot::Sender<()>>,
        length: Option<u64>,
    },
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Channel { rx, start, .. } => {
                if let Some(s) = start.take() {
                    let _ = s.send(());
                }
                rx.poll_recv(cx).map(|c| c.map(|c| c.map(Frame::data)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ReqBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Channel {
                length: Some(n), ..
            } => SizeHint::with_exact(*n),
            ReqBody::Channel { .. } => SizeHint::default(),
        }
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

impl<S: Stream<Item = Result<Bytes, E>> + Unpin, E: std::fmt::Display> Stream for Tracked<S> {
    type Item = Result<Bytes, E>;
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
