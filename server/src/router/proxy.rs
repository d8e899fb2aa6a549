//! The request path of the router, on hyper both ways (the listener in [`super::server`], a pooled
//! HTTP/1.1 client per listener thread): keep-alive to clients and to instances, bodies streamed
//! both ways and never buffered whole, upgrades (WebSocket or any other protocol) tunnelled as
//! bytes once the instance answered 101.
//!
//! For each request: find the app its route names; pick an instance (round-robin or
//! least-connections, or the one `X-Paas-App-Instance: NAME:INDEX` names); if none is ready, wait
//! for the table to change up to `router_wait_ms` (a deploy in progress) before answering 503. A
//! failure before any request byte was sent (refused or timed-out connect) is retried on another
//! instance; so is a failed send of a bodiless idempotent request (a pooled connection the
//! instance had closed). Every error the router itself answers is `{"code","message"}` with
//! `X-Paas-Router-Error`.
//!
//! Errors know their side, as in pingora: [`Failure`] says whether the instance was never reached
//! (always retryable), failed after we sent (retryable only when replaying cannot change state),
//! or was too slow (504, not retried: the instance may still be working on it).

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use paas_common::{ApiError, ErrorCode};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::access_log::{self, Entry};
use super::{AppRoutes, Backend, RouteTable, Router};
use crate::config::Settings;
use crate::error::error_chain;

/// Most instances one request tries (each only once per address).
const MAX_ATTEMPTS: usize = 4;

const HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

// Header names made once: a lookup by `&str` parses the name every time.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
const X_PAAS_APP: HeaderName = HeaderName::from_static("x-paas-app");
const X_PAAS_INSTANCE: HeaderName = HeaderName::from_static("x-paas-instance");
const X_PAAS_APP_INSTANCE: HeaderName = HeaderName::from_static("x-paas-app-instance");
const X_CF_APP_INSTANCE: HeaderName = HeaderName::from_static("x-cf-app-instance");
const X_PAAS_ROUTER_ERROR: HeaderName = HeaderName::from_static("x-paas-router-error");

/// How the proxy reaches instances, one per listener thread: HTTP/1.1 connections kept alive in
/// a pool per instance address (each thread its own, so threads never contend for a pool
/// lock). hyper's low-level client, not its pooled `legacy::Client`: that one spawns a task per
/// request to put the connection back, and cannot hand back a request it never sent (a
/// pooled connection the instance had just closed), so every attempt needed a copy of the
/// headers. Here a connection goes back to the pool when its response body ended, and an
/// unsent request comes back for the next connection.
pub struct Clients {
    pool: Arc<Pool>,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle_timeout: Duration,
}

type Sender = hyper::client::conn::http1::SendRequest<ReqBody>;

/// Idle connections per instance address.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Sender>>>,
    checkouts: AtomicUsize,
}

/// Idle connections kept per instance; more are closed when their response ends.
const MAX_IDLE_PER_INSTANCE: usize = 256;
/// Every this many checkouts, connections the instances closed are dropped from the pool
/// (an instance that went away leaves only closed ones behind).
const SWEEP_EVERY: usize = 4096;

impl Pool {
    fn take(&self, address: &str) -> Option<Sender> {
        if self.checkouts.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep();
        }
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(address)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, address: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        match idle.get_mut(address) {
            Some(list) if list.len() >= MAX_IDLE_PER_INSTANCE => {}
            Some(list) => list.push(sender),
            None => {
                idle.insert(address.to_string(), vec![sender]);
            }
        }
    }

    fn sweep(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|_, list| {
                list.retain(|s| !s.is_closed());
                !list.is_empty()
            });
        }
    }
}

impl Clients {
    pub fn new(settings: &Settings) -> Self {
        Self {
            pool: Arc::default(),
            connect_timeout: Duration::from_millis(settings.router_connect_timeout_ms),
            response_timeout: Duration::from_secs(settings.router_response_timeout_secs),
            idle_timeout: Duration::from_secs(settings.router_idle_timeout_secs),
        }
    }

    /// A new connection to `address`, its connection task spawned on this thread.
    async fn connect(&self, address: &str) -> Result<Sender, Failure> {
        let refused =
            |reason, message| Failure::unreached(ErrorCode::UpstreamError, reason, message);
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Err(_) => {
                return Err(Failure::unreached(
                    ErrorCode::UpstreamTimeout,
                    "connect_timeout",
                    format!("connecting took over {:?}", self.connect_timeout),
                ))
            }
            Ok(Err(e)) => return Err(refused("connect_failed", format!("connecting: {e}"))),
            Ok(Ok(s)) => s,
        };
        // Small requests and answers: Nagle would hold a request's tail for the peer's ACK.
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| refused("connect_failed", error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "instance connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req` to `address` on a pooled connection (or a new one); a request that a pooled
    /// connection could not take (closed meanwhile) is sent again on the next one. A failure
    /// before the request was written gives it back, whole, for another instance.
    async fn send(
        &self,
        address: &str,
        mut req: Request<ReqBody>,
        replay_safe: impl Fn() -> bool,
    ) -> Result<(Response<Incoming>, Sender), (Failure, Option<Request<ReqBody>>)> {
        // Pooled connections still finishing an earlier exchange (a request body the instance
        // answered before reading it all): skipped, not waited for, and put back.
        let mut busy: Vec<Sender> = Vec::new();
        loop {
            let pooled = self.pool.take(address);
            let fresh = pooled.is_none();
            let mut sender = match pooled {
                Some(mut s) => match s.ready().now_or_never() {
                    Some(Ok(())) => s,
                    Some(Err(_)) => continue,
                    None => {
                        busy.push(s);
                        continue;
                    }
                },
                None => {
                    for s in busy.drain(..) {
                        self.pool.put(address, s);
                    }
                    match self.connect(address).await {
                        Ok(s) => s,
                        Err(f) => return Err((f, Some(req))),
                    }
                }
            };
            for s in busy.drain(..) {
                self.pool.put(address, s);
            }
            if fresh && sender.ready().await.is_err() {
                let f = Failure {
                    code: ErrorCode::UpstreamError,
                    reason: "connect_failed",
                    message: "the instance closed the connection at once".into(),
                    retry: true,
                };
                return Err((f, Some(req)));
            }
            match sender.try_send_request(req).await {
                Ok(res) => return Ok((res, sender)),
                Err(mut e) => {
                    let unsent = e.take_message();
                    let message = error_chain(e.error());
                    match unsent {
                        // Not written: that pooled connection was gone; try the next one.
                        Some(r) if !fresh => req = r,
                        Some(r) => {
                            let f = Failure::unreached(
                                ErrorCode::UpstreamError,
                                "connect_failed",
                                message,
                            );
                            return Err((f, Some(r)));
                        }
                        None => {
                            let f = Failure {
                                code: ErrorCode::UpstreamError,
                                reason: "upstream_failed",
                                message,
                                retry: replay_safe(),
                            };
                            return Err((f, None));
                        }
                    }
                }
            }
        }
    }
}

/// What the listener knows of the client's connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client's scheme as this listener saw it (never taken from the client's headers).
    pub proto: &'static str,
    /// The client's IP address, made once per connection (`X-Forwarded-For`, the RTR line).
    pub ip: HeaderValue,
    /// The client certificate the TLS handshake verified against the platform CA, as
    /// `X-Forwarded-Client-Cert` carries it (issue 25).
    pub client_cert: Option<HeaderValue>,
}

impl Peer {
    pub fn new(addr: SocketAddr, proto: &'static str) -> Self {
        Self {
            addr,
            proto,
            ip: HeaderValue::from_str(&addr.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("-")),
            client_cert: None,
        }
    }
}

/// What the router knows of a request, for headers, errors and the access log. Header values
/// are kept as such: each is cloned (a reference count) into the headers that carry it.
pub(super) struct Meta {
    /// The app's name; empty when no route names the host.
    pub(super) app: Arc<str>,
    /// The app's id, which its log stream is keyed by.
    pub(super) app_key: Arc<str>,
    /// `Host`, or an HTTP/2 request's authority.
    pub(super) host: HeaderValue,
    pub(super) method: Method,
    pub(super) path: PathAndQuery,
    pub(super) request_id: HeaderValue,
    pub(super) peer: HeaderValue,
    pub(super) proto: &'static str,
    /// `X-Forwarded-Client-Cert` of a verified client certificate (issue 25).
    pub(super) client_cert: Option<HeaderValue>,
    pub(super) started: Instant,
    /// The revision of the instance last tried: a router error after a failed attempt counts
    /// against it in a canary's comparison.
    pub(super) revision: Option<i64>,
}

/// A header value as text for a log line or message (ours are always visible ASCII).
fn text(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or("-")
}

/// One upstream failure, classified.
struct Failure {
    code: ErrorCode,
    reason: &'static str,
    message: String,
    retry: bool,
}

impl Failure {
    /// The instance never got the request: another one may always be tried.
    fn unreached(code: ErrorCode, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            retry: true,
        }
    }
}

/// Whether the client asks to switch protocols (HTTP/1.1 `Connection: upgrade` + `Upgrade`).
pub(super) fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(http::header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(h: &HeaderMap) -> impl Iterator<Item = &str> {
    h.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Proxies one request to an instance of `app` (the route the listener resolved; `None` when
/// no route names the host, which gets the router's 404).
pub async fn proxy(
    mut req: Request<Incoming>,
    app: Option<Arc<AppRoutes>>,
    ctx: &Router,
    clients: &Clients,
    peer: Peer,
) -> Response<RespBody> {
    let stats = &ctx.table.stats;
    stats.here().requests.fetch_add(1, Ordering::Relaxed);
    let request_id = req
        .headers()
        .get(X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200 && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(new_request_id);
    let host = match req.headers().get(http::header::HOST) {
        Some(h) => h.clone(),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("")),
    };
    let mut meta = Meta {
        app: app
            .as_ref()
            .map_or_else(|| Arc::from(""), |a| a.name.clone()),
        app_key: app
            .as_ref()
            .map_or_else(|| Arc::from(""), |a| a.key.clone()),
        host,
        method: req.method().clone(),
        path: req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        request_id,
        peer: peer.ip,
        proto: peer.proto,
        client_cert: peer.client_cert,
        started: Instant::now(),
        revision: None,
    };
    let Some(app) = app else {
        let msg = format!(
            "no route for {}{} on this platform",
            text(&meta.host),
            meta.path
        );
        return fail(
            &ctx.table,
            &meta,
            ErrorCode::RouteNotFound,
            "unknown_route",
            msg,
        );
    };

    // `X-Paas-App-Instance: NAME:INDEX` (or Cloud Foundry's `X-Cf-App-Instance: APP_GUID:INDEX`)
    // pins the request to one instance of this host's app.
    let target = match req
        .headers()
        .get(X_PAAS_APP_INSTANCE)
        .map(|v| parse_target(v, &meta.app))
        .or_else(|| {
            req.headers()
                .get(X_CF_APP_INSTANCE)
                .map(|v| parse_cf_target(v, &meta.app_key))
        }) {
        None => sticky_id(req.headers()).map(Target::Sticky),
        Some(Ok(i)) => Some(Target::Index(i)),
        Some(Err(msg)) => {
            return fail(
                &ctx.table,
                &meta,
                ErrorCode::BadRequest,
                "bad_instance_header",
                msg,
            )
        }
    };

    let upgrade = wants_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    prepare_headers(&mut headers, &meta, upgrade);
    let idempotent = matches!(
        meta.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    let body = (!body.is_end_stream()).then(|| Lendable::new(body));
    let deadline = meta.started + ctx.wait;
    let mut tried: Vec<String> = Vec::new();
    let mut last: Option<Failure> = None;

    loop {
        let backend =
            match next_backend(ctx, &app, target.clone(), &tried, deadline, last.is_some()).await {
                Some(b) => b,
                None => {
                    let f = last.unwrap_or_else(|| match &target {
                        Some(Target::Index(i)) => Failure {
                            code: ErrorCode::InstanceNotFound,
                            reason: "instance_not_found",
                            message: format!("app {:?} has no ready instance {i}", meta.app),
                            retry: false,
                        },
                        _ => Failure {
                            code: ErrorCode::NoHealthyInstance,
                            reason: "no_healthy_instance",
                            message: format!(
                                "app {:?} has no healthy instance right now",
                                meta.app
                            ),
                            retry: false,
                        },
                    });
                    return fail(&ctx.table, &meta, f.code, f.reason, f.message);
                }
            };
        meta.revision = Some(backend.revision);
        let guard = InFlight::new(backend.clone());
        let mut out = Request::new(body.as_ref().map_or(ReqBody::Empty, Lendable::lend));
        *out.method_mut() = meta.method.clone();
        *out.uri_mut() = meta.path.clone().into();
        // A request that reached no instance comes back with its headers; a copy is kept only
        // for one that may be replayed after it was written (and is not on its last attempt).
        *out.headers_mut() = if idempotent && tried.len() + 1 < MAX_ATTEMPTS {
            headers.clone()
        } else {
            std::mem::take(&mut headers)
        };
        let replay_safe = || idempotent && !body.as_ref().is_some_and(Lendable::touched);
        let sent = tokio::time::timeout(
            clients.response_timeout,
            clients.send(&backend.address, out, replay_safe),
        )
        .await;
        let sent = match sent {
            Ok(r) => r,
            Err(_) => {
                return fail(
                    &ctx.table,
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
            Ok((res, sender)) => {
                return respond(
                    &ctx.table,
                    &app,
                    meta,
                    guard,
                    res,
                    sender,
                    clients,
                    client_upgrade,
                )
            }
            Err((f, unsent)) => {
                if let Some(r) = unsent {
                    headers = r.into_parts().0.headers;
                }
                tracing::warn!(app = %meta.app, instance = backend.index, backend = %backend.address, error = %f.message, retry = f.retry, "upstream attempt failed");
                tried.push(backend.address.clone());
                if !f.retry || tried.len() >= MAX_ATTEMPTS {
                    return fail(
                        &ctx.table,
                        &meta,
                        f.code,
                        f.reason,
                        format!(
                            "instance {} of {:?}: {}",
                            backend.index, meta.app, f.message
                        ),
                    );
                }
                stats.here().retries.fetch_add(1, Ordering::Relaxed);
                last = Some(f);
            }
        }
    }
}

/// The instance to try next, waiting (until `deadline`) for the route table to offer one. The
/// first pick is from `app` as the listener found it; a retry or a wait asks the table again.
pub(super) async fn next_backend(
    ctx: &Router,
    app: &Arc<AppRoutes>,
    target: Option<Target>,
    tried: &[String],
    deadline: Instant,
    retrying: bool,
) -> Option<Arc<Backend>> {
    // Only a request that finds no instance subscribes to table changes (the common case, a
    // pick at once, skips the watch channel's bookkeeping).
    let mut rx: Option<tokio::sync::watch::Receiver<u64>> = None;
    let mut routes = if retrying {
        ctx.table.get(&app.key)?
    } else {
        app.clone()
    };
    loop {
        if let Some(rx) = rx.as_mut() {
            rx.borrow_and_update();
            routes = ctx.table.get(&app.key)?;
        }
        let pick = match &target {
            Some(Target::Index(i)) => routes.by_index(*i, tried),
            // A sticky session goes back to its instance while it is routed, else anywhere.
            Some(Target::Sticky(id)) => routes
                .by_id(id, tried)
                .or_else(|| routes.pick(ctx.balance, tried)),
            None => routes.pick(ctx.balance, tried),
        };
        if pick.is_some() {
            return pick;
        }
        let Some(watch) = rx.as_mut() else {
            if !retrying {
                ctx.table
                    .stats
                    .here()
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
fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Where a request must go, when it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `X-Paas-App-Instance` / `X-Cf-App-Instance`: that instance or an error.
    Index(u32),
    /// The `__VCAP_ID__` cookie: that instance while it is routed, else any.
    Sticky(String),
}

/// The sticky-session cookie Cloud Foundry's router sets beside an app's `JSESSIONID`.
const VCAP_ID: &str = "__VCAP_ID__";

/// The instance id a request's `__VCAP_ID__` cookie names.
fn sticky_id(h: &HeaderMap) -> Option<String> {
    h.get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == VCAP_ID)
        .map(|(_, v)| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// Whether a response sets a `JSESSIONID` cookie (then the router adds `__VCAP_ID__`).
fn sets_session(h: &HeaderMap) -> bool {
    h.get_all(http::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.trim_start().starts_with("JSESSIONID="))
}

/// `X-Cf-App-Instance: APP_GUID:INDEX` (the app's id).
fn parse_cf_target(v: &HeaderValue, app_id: &str) -> Result<u32, String> {
    let s = v.to_str().unwrap_or_default().trim();
    let (guid, index) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("X-Cf-App-Instance must be APP_GUID:INDEX, got {s:?}"))?;
    if !guid.eq_ignore_ascii_case(app_id) {
        return Err(format!(
            "X-Cf-App-Instance names app {guid:?}, which this host does not route to"
        ));
    }
    index
        .parse()
        .map_err(|_| format!("X-Cf-App-Instance index {index:?} is not a number"))
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

/// Removes hop-by-hop headers (and those the `Connection` header names) in place; an upgrade
/// keeps `Upgrade` and a plain `Connection: upgrade`, which the next hop must see.
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    // One pass over the (few) names finds those present; most messages carry none, or only
    // `Connection`, so removing all nine by name would mostly look up absent keys.
    let present: Vec<HeaderName> = h
        .keys()
        .filter(|k| HOP_BY_HOP.contains(k))
        .cloned()
        .collect();
    if h.contains_key(http::header::CONNECTION) {
        let named: Vec<HeaderName> = connection_tokens(h)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            if !(upgrade && n == http::header::UPGRADE) {
                h.remove(n);
            }
        }
    }
    for n in present {
        if !(upgrade && n == http::header::UPGRADE) {
            h.remove(n);
        }
    }
    if upgrade {
        h.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
}

/// Appends the peer to `X-Forwarded-For` (one header, earlier hops first).
pub(super) fn append_forwarded_for(h: &mut HeaderMap, peer: &HeaderValue) {
    let prev: Vec<&str> = h
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prev.is_empty() {
        Ok(peer.clone())
    } else {
        HeaderValue::from_str(&format!("{}, {}", prev.join(", "), text(peer)))
    };
    if let Ok(v) = value {
        h.insert(X_FORWARDED_FOR, v);
    }
}

/// The request headers an instance sees: the client's, minus hop-by-hop ones, plus the
/// forwarding headers (and `Host`, which an HTTP/2 client sends as the authority instead).
fn prepare_headers(h: &mut HeaderMap, meta: &Meta, upgrade: bool) {
    strip_hop_by_hop(h, upgrade);
    h.remove(X_PAAS_APP_INSTANCE);
    h.remove(X_CF_APP_INSTANCE);
    // Only the router says who the client is (gorouter's `sanitize_set`): a client's own
    // header is dropped, on plain HTTP too.
    h.remove(X_FORWARDED_CLIENT_CERT);
    if let Some(c) = &meta.client_cert {
        h.insert(X_FORWARDED_CLIENT_CERT, c.clone());
    }
    append_forwarded_for(h, &meta.peer);
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(meta.proto));
    if !meta.host.is_empty() {
        h.insert(X_FORWARDED_HOST, meta.host.clone());
        h.entry(http::header::HOST).or_insert(meta.host.clone());
    }
    h.insert(X_REQUEST_ID, meta.request_id.clone());
}

#[allow(clippy::too_many_arguments)]
fn respond(
    table: &Arc<RouteTable>,
    app: &AppRoutes,
    meta: Meta,
    guard: InFlight,
    mut res: Response<Incoming>,
    sender: Sender,
    clients: &Clients,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RespBody> {
    let backend = guard.0.clone();
    let status = res.status();
    let switching = status == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some();
    let upstream_upgrade = switching.then(|| hyper::upgrade::on(&mut res));
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching);
    let h = &mut parts.headers;
    h.insert(X_REQUEST_ID, meta.request_id.clone());
    if let Some(v) = &app.name_header {
        h.insert(X_PAAS_APP, v.clone());
    }
    h.insert(X_PAAS_INSTANCE, backend.index_header.clone());
    // Cloud Foundry's sticky sessions: an app that starts a Java-style session gets the
    // instance named beside it, so the client's next requests come back here.
    if !backend.id.is_empty() && sets_session(h) {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{VCAP_ID}={}; Path=/; HttpOnly; SameSite=Lax",
            backend.id
        )) {
            h.append(http::header::SET_COOKIE, v);
        }
    }
    table.stats.count_status(status.as_u16());
    let done = Done {
        table: table.clone(),
        meta,
        backend,
        status: status.as_u16(),
        _guard: guard,
    };
    if let (Some(client), Some(upstream)) = (client_upgrade, upstream_upgrade) {
        table
            .stats
            .here()
            .websockets
            .fetch_add(1, Ordering::Relaxed);
        tokio::spawn(tunnel(client, upstream, done));
        return Response::from_parts(parts, RespBody::Full(None));
    }
    let body = Tracked {
        body,
        idle: clients.idle_timeout,
        timer: None,
        bytes: 0,
        done: Some(done),
        connection: Some((clients.pool.clone(), sender)),
        ended: false,
    };
    Response::from_parts(parts, RespBody::Proxied(body))
}

/// Copies bytes both ways between an upgraded client connection and the instance's, until
/// either side closes; the RTR line is written when it ends (bytes = instance to client).
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    done: Done,
) {
    let _open = super::server::hold_open();
    let bytes = match splice(client, upstream).await {
        Ok(down) => down,
        Err(e @ SpliceError::Upgrade(_)) => {
            tracing::warn!(app = %done.meta.app, error = %e, "upgrade through the router failed");
            0
        }
        Err(e) => {
            tracing::debug!(app = %done.meta.app, error = %e, "upgraded connection ended with an error");
            0
        }
    };
    done.record(bytes);
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SpliceError {
    #[error("{0}")]
    Upgrade(#[from] hyper::Error),
    #[error("{0}")]
    Copy(#[from] std::io::Error),
}

/// Waits for both sides of an upgrade, then copies bytes both ways until either side closes.
/// Returns the bytes that went to the client.
pub(super) async fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) -> Result<u64, SpliceError> {
    let (client, upstream) = tokio::try_join!(client, upstream)?;
    let (_, down) =
        tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(upstream))
            .await?;
    Ok(down)
}

/// A response body from the router's listener: a proxied instance's (tracked), the API's
/// (passed through), or the router's own (an error). Not boxed: the proxied variant is the
/// common one, and a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum RespBody {
    Full(Option<Bytes>),
    Proxied(Tracked),
    Passed(Incoming),
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{0}")]
    Upstream(#[from] hyper::Error),
    #[error("the instance sent nothing for {0:?} mid-body")]
    Idle(Duration),
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Proxied(t) => t.poll_frame(cx),
            RespBody::Passed(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(BodyError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Proxied(t) => t.body.is_end_stream(),
            RespBody::Passed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Proxied(t) => t.body.size_hint(),
            RespBody::Passed(b) => b.size_hint(),
        }
    }
}

/// The instance's response body, counted, and cut when the instance stays silent for `idle`
/// mid-body. The timer is armed only while a frame is awaited, so a body that is already
/// buffered (most small answers) never touches the timer wheel. Dropping it (body done, or the
/// client gone) writes the RTR line and ends the in-flight count.
pub struct Tracked {
    body: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    bytes: u64,
    done: Option<Done>,
    /// The connection the response came on, back to the pool once the body has ended (a body
    /// cut short leaves the connection mid-response: it is dropped, and hyper closes it).
    connection: Option<(Arc<Pool>, Sender)>,
    /// The instance's body ended (a chunked one says so only by its last frame).
    ended: bool,
}

impl Tracked {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timer = None;
                if let Some(d) = frame.data_ref() {
                    self.bytes += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "upstream response body failed");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = self.idle;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    tracing::warn!(?idle, "instance went silent mid-body; cutting the response");
                    return Poll::Ready(Some(Err(BodyError::Idle(idle))));
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(d) = self.done.take() {
            if self.ended || self.body.is_end_stream() {
                if let Some((pool, sender)) = self.connection.take() {
                    pool.put(&d.backend.address, sender);
                }
            }
            d.record(self.bytes);
        }
    }
}

/// An answer from the router itself: JSON error, reason header, counted and access-logged.
pub(super) fn fail(
    table: &RouteTable,
    meta: &Meta,
    code: ErrorCode,
    reason: &'static str,
    message: String,
) -> Response<RespBody> {
    let mut res = json_error(code, message);
    let h = res.headers_mut();
    h.insert(X_PAAS_ROUTER_ERROR, HeaderValue::from_static(reason));
    h.insert(X_REQUEST_ID, meta.request_id.clone());
    let stats = &table.stats;
    stats.here().router_errors.fetch_add(1, Ordering::Relaxed);
    stats.count_status(res.status().as_u16());
    if !meta.app.is_empty() {
        access_log::record(
            table,
            Entry {
                app: &meta.app_key,
                method: meta.method.as_str(),
                path: meta.path.as_str(),
                status: res.status().as_u16(),
                bytes: 0,
                duration: meta.started.elapsed(),
                instance: None,
                request_id: text(&meta.request_id),
                peer: text(&meta.peer),
                revision: meta.revision,
            },
        );
    }
    res
}

/// The platform's JSON error body, `{"code","message"}`, with the code's status.
pub fn json_error(code: ErrorCode, message: String) -> Response<RespBody> {
    let body = serde_json::to_vec(&ApiError::new(code, message)).unwrap_or_default();
    let mut res = Response::new(RespBody::Full(Some(Bytes::from(body))));
    *res.status_mut() =
        StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Counts a request in flight to a backend until dropped (least-connections and the drain read it).
pub(super) struct InFlight(Arc<Backend>, usize);

impl InFlight {
    pub(super) fn new(b: Arc<Backend>) -> Self {
        let shard = b.inflight.inc();
        Self(b, shard)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.dec(self.1);
    }
}

/// The client's request body, lent to one attempt at a time: an attempt that failed before
/// reading any of it (a refused connect) leaves it whole for the next one, and `touched` says
/// whether any was read.
struct Lendable {
    slot: Arc<Mutex<Option<Incoming>>>,
    touched: Arc<AtomicBool>,
    hint: SizeHint,
}

impl Lendable {
    fn new(body: Incoming) -> Self {
        Self {
            hint: body.size_hint(),
            slot: Arc::new(Mutex::new(Some(body))),
            touched: Arc::default(),
        }
    }

    fn lend(&self) -> ReqBody {
        ReqBody::Lent {
            slot: self.slot.clone(),
            touched: self.touched.clone(),
            body: None,
            hint: self.hint,
        }
    }

    fn touched(&self) -> bool {
        self.touched.load(Ordering::Relaxed)
    }
}

/// A request body for hyper: none, or the client's, taken from its [`Lendable`] on first read.
pub enum ReqBody {
    Empty,
    Lent {
        slot: Arc<Mutex<Option<Incoming>>>,
        touched: Arc<AtomicBool>,
        body: Option<Incoming>,
        hint: SizeHint,
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
            ReqBody::Lent {
                slot,
                touched,
                body,
                ..
            } => {
                if body.is_none() {
                    touched.store(true, Ordering::Relaxed);
                    *body = slot.lock().ok().and_then(|mut s| s.take());
                    if body.is_none() {
                        return Poll::Ready(Some(Err(std::io::Error::other(
                            "the request body was already sent",
                        ))));
                    }
                }
                let b = body.as_mut().expect("taken above");
                Pin::new(b)
                    .poll_frame(cx)
                    .map(|f| f.map(|f| f.map_err(std::io::Error::other)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Lent { body: Some(b), .. } => b.is_end_stream(),
            ReqBody::Lent { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Lent { body: Some(b), .. } => b.size_hint(),
            ReqBody::Lent { hint, .. } => *hint,
        }
    }
}

/// Finishing a proxied response: access log and in-flight count, when the body ends or the
/// client goes away (or an upgraded connection closes).
struct Done {
    table: Arc<RouteTable>,
    meta: Meta,
    backend: Arc<Backend>,
    status: u16,
    _guard: InFlight,
}

impl Done {
    fn record(self, bytes: u64) {
        access_log::record(
            &self.table,
            Entry {
                app: &self.meta.app_key,
                method: self.meta.method.as_str(),
                path: self.meta.path.as_str(),
                status: self.status,
                bytes,
                duration: self.meta.started.elapsed(),
                instance: Some((self.backend.index, &self.backend.address)),
                request_id: text(&self.meta.request_id),
                peer: text(&self.meta.peer),
                revision: Some(self.backend.revision),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            app: "a".into(),
            app_key: "id-a".into(),
            host: HeaderValue::from_static("a.localhost:8080"),
            method: Method::GET,
            path: PathAndQuery::from_static("/"),
            request_id: HeaderValue::from_static("rid"),
            peer: HeaderValue::from_static("10.0.0.9"),
            proto: "http",
            client_cert: None,
            started: Instant::now(),
            revision: None,
        }
    }

    fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in list {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn forwarding_headers_append_and_hop_by_hop_go() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "s"),
            ("x-keep", "k"),
            ("x-paas-app-instance", "a:1"),
            ("x-forwarded-client-cert", "forged"),
        ]);
        prepare_headers(&mut h, &meta(), false);
        assert!(
            h.get("x-forwarded-client-cert").is_none(),
            "a client's own is dropped"
        );
        let mut m = meta();
        m.client_cert = Some(HeaderValue::from_static("MIIB"));
        let mut verified = headers(&[("x-forwarded-client-cert", "forged")]);
        prepare_headers(&mut verified, &m, false);
        assert_eq!(verified["x-forwarded-client-cert"], "MIIB");
        let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("x-forwarded-for").as_deref(), Some("1.2.3.4, 10.0.0.9"));
        assert_eq!(get("x-forwarded-host").as_deref(), Some("a.localhost:8080"));
        assert_eq!(get("host").as_deref(), Some("a.localhost:8080"));
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(get("x-request-id").as_deref(), Some("rid"));
        assert_eq!(get("x-keep").as_deref(), Some("k"));
        assert_eq!(get("x-secret"), None);
        assert_eq!(get("connection"), None);
        assert_eq!(get("x-paas-app-instance"), None);
    }

    #[test]
    fn an_upgrade_keeps_its_headers_and_several_forwarded_for_join() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
        ]);
        prepare_headers(&mut h, &meta(), true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.9");
    }

    #[test]
    fn instance_header_parses() {
        assert_eq!(parse_target(&HeaderValue::from_static("a:2"), "a"), Ok(2));
        assert!(parse_target(&HeaderValue::from_static("b:2"), "a").is_err());
        assert!(parse_target(&HeaderValue::from_static("a:x"), "a").is_err());
        assert!(parse_target(&HeaderValue::from_static("a"), "a").is_err());
    }
}
