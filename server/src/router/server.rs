//! The platform's public listener, on hyper: HTTP/1.1 (and HTTP/2 by prior knowledge or, with
//! TLS, by ALPN), served by one worker thread per core (`PAAS_ROUTER_THREADS`), each with its own
//! single-threaded runtime and its own client pools, each accepting from the shared listening
//! socket itself; a worker that finds itself ahead of the least busy one by more than one
//! connection hands what it accepted over to it. That is nginx's shape (a worker per core,
//! nothing shared on the request path but the route table).
//!
//! A request whose Host (and path) a route names is proxied ([`super::proxy`]). In the
//! controller every other request is the API's or the dashboard's: it is passed, streaming and
//! with upgrades, to the actix-web server on a private Unix socket, with `X-Forwarded-*` set by
//! this listener (the client's own are replaced, so the API can trust them) and `X-Paas-Peer` =
//! the client's address. A standalone router has no API behind it: every host is app traffic.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use paas_common::ErrorCode;
use std::convert::Infallible;
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::access_log;
use super::proxy::{self, Clients, Peer, RespBody};
use super::tls::CertStore;
use super::Router;
use crate::config::Settings;

/// The header that carries the client's address (`IP:PORT`) to the API behind the listener.
pub const PEER_HEADER: &str = "x-paas-peer";

/// What the listener serves.
pub struct Front {
    pub router: Arc<Router>,
    /// The API behind this listener (controller); `None` in a standalone router.
    pub api: Option<Api>,
    pub settings: Settings,
}

/// The controller's actix-web server, on a Unix socket only this process's user can open.
pub struct Api {
    pub socket: PathBuf,
    /// `NAME.<domain>` is an app's host even when no such app exists (404, not the API).
    pub domain: String,
}

/// One listener thread's state.
struct Worker {
    front: Arc<Front>,
    clients: Clients,
    api: Option<hyper_util::client::legacy::Client<Uds, Incoming>>,
    http: auto::Builder<TokioExecutor>,
}

/// The running listener threads.
pub struct Listener {
    died: tokio::sync::mpsc::UnboundedReceiver<String>,
    stop: tokio::sync::watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Listener {
    /// Resolves if a thread stops on its own (it should not), with why.
    pub async fn died(&mut self) -> Option<String> {
        self.died.recv().await
    }

    /// A graceful stop: the workers close the listening sockets at once (new connections are
    /// refused); each worker tells its clients' connections to close once their request in
    /// flight is answered (keep-alive connections at rest close now), and ends when they have,
    /// or after `grace`, whichever comes first. Tunnels (upgraded connections) are not waited
    /// for.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        // Each thread bounds its own wait by `grace`; this is a backstop.
        let _ = tokio::time::timeout(grace + Duration::from_secs(1), joined).await;
    }
}

/// A connection one worker accepted and hands to another.
struct Accepted {
    stream: std::net::TcpStream,
    addr: std::net::SocketAddr,
    tls: bool,
}

/// The way to one worker thread, and how many client connections it has open.
struct Lane {
    tx: tokio::sync::mpsc::UnboundedSender<Accepted>,
    open: Arc<AtomicUsize>,
}

/// Starts the listener on `plain` (and `tls`, with its certificates): the worker threads (one
/// per core by default), each accepting from the listening sockets and serving its connections
/// on its own single-threaded runtime. A new connection is served where it was accepted unless
/// that worker has more than one connection more than the least busy one, which then gets it:
/// workers that only accepted ended up uneven (a woken thread drains the accept queue: 45 of 64
/// keep-alive connections on one thread was typical), and a separate acceptor thread that handed
/// every connection over cost a thread wake-up and two more system calls per connection.
pub fn start(
    front: Arc<Front>,
    plain: TcpListener,
    tls: Option<(TcpListener, Arc<CertStore>)>,
) -> anyhow::Result<Listener> {
    let threads = match front.settings.router_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    plain.set_nonblocking(true)?;
    let tls = match tls {
        Some((l, certs)) => {
            l.set_nonblocking(true)?;
            let client_ca = (front.settings.router_client_cert
                == crate::config::ClientCertMode::Request)
                .then(|| front.router.table.client_ca.clone());
            let mut config = certs.server_config(client_ca);
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Some((l, TlsAcceptor::from(Arc::new(config))))
        }
        None => None,
    };
    let (died_tx, died) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut receivers = Vec::with_capacity(threads);
    let mut lanes = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        receivers.push(rx);
        lanes.push(Lane {
            tx,
            open: Arc::new(AtomicUsize::new(0)),
        });
    }
    let lanes: Arc<[Lane]> = lanes.into();
    let mut handles = Vec::with_capacity(threads);
    for (i, rx) in receivers.into_iter().enumerate() {
        let front = front.clone();
        let sockets = Sockets {
            plain: plain.try_clone()?,
            tls: tls.as_ref().map(|(l, _)| l.try_clone()).transpose()?,
        };
        let acceptor = tls.as_ref().map(|(_, a)| a.clone());
        let lanes = lanes.clone();
        let died = died_tx.clone();
        let stopping = stopping.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("paas-router-{i}"))
                .spawn(move || {
                    super::stats::use_shard(i + 1);
                    if let Err(e) = work(front, i, lanes, rx, sockets, acceptor, stopping) {
                        let _ = died.send(format!("router thread {i}: {e:#}"));
                    }
                })?,
        );
    }
    // The workers hold their own descriptors of the listening sockets; the last to stop closes
    // them.
    drop(plain);
    drop(tls);
    Ok(Listener {
        died,
        stop,
        threads: handles,
    })
}

/// One worker's descriptors of the shared listening sockets.
struct Sockets {
    plain: TcpListener,
    tls: Option<TcpListener>,
}

/// Where a connection this worker (`me`) just accepted is served: here, unless this worker has
/// more than one connection more than the least busy one.
fn lane_for(lanes: &[Lane], me: usize) -> usize {
    let mine = lanes[me].open.load(Ordering::Relaxed);
    let (least, fewest) = lanes
        .iter()
        .enumerate()
        .map(|(i, l)| (i, l.open.load(Ordering::Relaxed)))
        .min_by_key(|&(_, n)| n)
        .unwrap_or((me, mine));
    if mine > fewest + 1 {
        least
    } else {
        me
    }
}

/// A connection this worker accepted: kept (and counted) here, or handed to the least busy
/// worker (`None`).
fn hand_over(
    lanes: &[Lane],
    me: usize,
    stream: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    tls: bool,
) -> Option<tokio::net::TcpStream> {
    let _ = stream.set_nodelay(true);
    let to = lane_for(lanes, me);
    if to == me {
        lanes[me].open.fetch_add(1, Ordering::Relaxed);
        return Some(stream);
    }
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "handing over an accepted connection failed");
            return None;
        }
    };
    lanes[to].open.fetch_add(1, Ordering::Relaxed);
    if lanes[to].tx.send(Accepted { stream, addr, tls }).is_err() {
        // That worker has stopped (the listener is stopping): the connection is closed.
        lanes[to].open.fetch_sub(1, Ordering::Relaxed);
    }
    None
}

async fn accept_on(
    l: &Option<tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Counts a worker's open connection until dropped.
pub(super) struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker thread (`me`): accepts and serves connections (and those another worker hands
/// it) until `stopping` turns true, then lets them finish (up to the drain time).
fn work(
    front: Arc<Front>,
    me: usize,
    lanes: Arc<[Lane]>,
    mut conns: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    sockets: Sockets,
    acceptor: Option<TlsAcceptor>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let open = lanes[me].open.clone();
    let grace = Duration::from_secs(front.settings.router_drain_secs);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let table = front.router.table.clone();
    HOLDS_OPEN.with(|h| *h.borrow_mut() = Some(open.clone()));
    let r = rt.block_on(async move {
        let plain = tokio::net::TcpListener::from_std(sockets.plain)?;
        let tls = sockets
            .tls
            .map(tokio::net::TcpListener::from_std)
            .transpose()?;
        let mut http = auto::Builder::new(TokioExecutor::new());
        // The timer bounds how long a client may take to send a request's headers (slowloris).
        http.http1().timer(TokioTimer::new());
        http.http2().timer(TokioTimer::new());
        let api = front.api.as_ref().map(|a| {
            hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .set_host(false)
                .build(Uds(Arc::new(a.socket.clone())))
        });
        let worker = Arc::new(Worker {
            clients: Clients::new(&front.settings),
            front,
            api,
            http,
        });
        // This thread's RTR lines are handed over in bunches; these are the "at least every".
        access_log::buffer_here();
        let flusher = {
            let table = worker.front.router.table.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(access_log::LOCAL_FLUSH);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    access_log::flush_here(&table);
                }
            })
        };
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, addr, is_tls) = tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                c = conns.recv() => match c {
                    Some(c) => match tokio::net::TcpStream::from_std(c.stream) {
                        Ok(s) => {
                            // Counted by the worker that handed it over.
                            (s, c.addr, c.tls)
                        }
                        Err(e) => {
                            open.fetch_sub(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "taking over an accepted connection failed");
                            continue;
                        }
                    },
                    None => break,
                },
                r = plain.accept() => match r {
                    Ok((s, a)) => match hand_over(&lanes, me, s, a, false) {
                        Some(s) => (s, a, false),
                        None => continue,
                    },
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
                r = accept_on(&tls) => match r {
                    Ok((s, a)) => match hand_over(&lanes, me, s, a, true) {
                        Some(s) => (s, a, true),
                        None => continue,
                    },
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
            };
            let guard = Open(open.clone());
            let watcher = graceful.watcher();
            let worker = worker.clone();
            match (is_tls, &acceptor) {
                (false, _) => {
                    tokio::spawn(async move {
                        serve(worker, stream, Peer::new(addr, "http"), watcher).await;
                        drop(guard);
                    });
                }
                (true, Some(acceptor)) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        // A client that never finishes its handshake must not hold a task.
                        let hs =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                                .await;
                        match hs {
                            Ok(Ok(tls)) => {
                                let mut peer = Peer::new(addr, "https");
                                // Verified against the platform CA in the handshake.
                                peer.client_cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| super::tls::forwarded_client_cert(c));
                                serve(worker, tls, peer, watcher).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%addr, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                        }
                        drop(guard);
                    });
                }
                (true, None) => {}
            }
        }
        // New connections are refused from here on (once every worker has closed its
        // descriptors of the listening sockets).
        drop(plain);
        drop(tls);
        let busy = graceful.count();
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                connections = busy,
                ?grace,
                "cut connections still busy at the end of the grace period"
            );
        }
        flusher.abort();
        Ok::<_, anyhow::Error>(())
    });
    // Dropping the runtime drops what the grace period cut (connections, tunnels); their RTR
    // lines are recorded as they go, so this thread's last lines are handed over after it.
    drop(rt);
    access_log::flush_here(&table);
    r
}

thread_local! {
    /// A worker thread's count of open client connections (see [`hold_open`]).
    static HOLDS_OPEN: std::cell::RefCell<Option<Arc<AtomicUsize>>> =
        const { std::cell::RefCell::new(None) };
}

/// Counts one more open connection on this worker thread until dropped: an upgraded
/// connection's tunnel outlives the HTTP connection it came from, and a worker busy with long
/// WebSockets must not look empty to the other workers when they balance. `None` off the
/// worker threads.
pub(super) fn hold_open() -> Option<Open> {
    HOLDS_OPEN.with(|h| {
        h.borrow().as_ref().map(|c| {
            c.fetch_add(1, Ordering::Relaxed);
            Open(c.clone())
        })
    })
}

/// Out of file descriptors and the like: say so and back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn serve<I>(
    worker: Arc<Worker>,
    io: I,
    peer: Peer,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let w = worker.clone();
    let addr = peer.addr;
    let svc = hyper::service::service_fn(move |req| {
        let w = w.clone();
        let peer = peer.clone();
        // Boxed: hyper's HTTP/1 connection keeps room for one request's future for as long as
        // the connection is open, so an unboxed one (the whole proxy path, retries and connect
        // included) would be held by every idle keep-alive connection; a box is one allocation
        // per request instead.
        let fut: Pin<Box<dyn Future<Output = Result<Response<RespBody>, Infallible>> + Send>> =
            Box::pin(async move { Ok(handle(req, &w, peer).await) });
        fut
    });
    let conn = worker
        .http
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(peer = %addr, error = %e, "client connection ended with an error");
    }
}

async fn handle(req: Request<Incoming>, w: &Worker, peer: Peer) -> Response<RespBody> {
    let router = &w.front.router;
    let host = super::request_host(&req).unwrap_or_default();
    // ACME HTTP-01 (RFC 8555 8.3): answered before routing, so it works for a host whose app is
    // down or that redirects to HTTPS; only for a challenge the leader published for this host.
    if peer.proto == "http" && req.method() == http::Method::GET {
        if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX) {
            if let Some(answer) = router.table.acme_answer(host, token) {
                let mut res = Response::new(RespBody::Full(Some(answer.into())));
                res.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return res;
            }
        }
    }
    match router.table.resolve_route(host, req.uri().path()) {
        Some((_, flags)) if flags.https_redirect && peer.proto == "http" => {
            redirect_to_https(&req, host, router.https_port)
        }
        Some((app, flags)) => {
            let https = peer.proto == "https";
            let mut res = proxy::proxy(req, Some(app), router, &w.clients, peer).await;
            if flags.hsts && https {
                res.headers_mut().insert(
                    http::header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static("max-age=31536000"),
                );
            }
            res
        }
        None => match (&w.front.api, &w.api) {
            (Some(api), Some(client)) if super::app_for_host(host, &api.domain).is_none() => {
                forward(req, client, peer).await
            }
            // An app host with no such app (or any host, standalone): the router's 404.
            _ => proxy::proxy(req, None, router, &w.clients, peer).await,
        },
    }
}

/// Where HTTP-01 challenges are fetched (RFC 8555 8.3).
const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// A route that asks for HTTPS answers plain HTTP with a 308 to the same URL on the HTTPS
/// listener (308 keeps the method and body, unlike 301); with no HTTPS listener there is no
/// redirect target, so the request is refused rather than looped.
fn redirect_to_https<B>(
    req: &Request<B>,
    host: &str,
    https_port: Option<u16>,
) -> Response<RespBody> {
    let Some(port) = https_port else {
        return proxy::json_error(
            ErrorCode::NotFound,
            "this route is served over HTTPS only, and this router has no HTTPS listener".into(),
        );
    };
    let name = host
        .rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h);
    let port = if port == 443 {
        String::new()
    } else {
        format!(":{port}")
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut res = Response::new(RespBody::Full(None));
    *res.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&format!("https://{name}{port}{path}")) {
        res.headers_mut().insert(http::header::LOCATION, v);
    }
    res
}

/// Passes a request to the API's server and its answer back, streaming both ways.
async fn forward(
    mut req: Request<Incoming>,
    client: &hyper_util::client::legacy::Client<Uds, Incoming>,
    peer: Peer,
) -> Response<RespBody> {
    let upgrade = proxy::wants_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let host = super::request_host(&req).map(str::to_string);
    let (mut parts, body) = req.into_parts();
    let h = &mut parts.headers;
    proxy::strip_hop_by_hop(h, upgrade);
    proxy::append_forwarded_for(h, &peer.ip);
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(peer.proto),
    );
    h.remove("x-forwarded-host");
    h.remove("forwarded");
    if let Some(v) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        h.entry(http::header::HOST).or_insert(v);
    }
    if let Ok(v) = HeaderValue::from_str(&peer.addr.to_string()) {
        h.insert(HeaderName::from_static(PEER_HEADER), v);
    }
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = Some(http::uri::Authority::from_static("paas-api"));
    uri.path_and_query = parts.uri.path_and_query().cloned();
    parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
    parts.version = http::Version::HTTP_11;
    let mut res = match client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %crate::error::error_chain(&e), "the API server behind the listener is not answering");
            return proxy::json_error(
                ErrorCode::UpstreamError,
                "the controller's API is not answering; try again".into(),
            );
        }
    };
    let switching = res.status() == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some();
    if let (true, Some(client)) = (switching, client_upgrade) {
        let upstream = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            let _open = hold_open();
            if let Err(e) = proxy::splice(client, upstream).await {
                tracing::debug!(error = %e, "upgraded API connection failed or ended with an error");
            }
        });
    }
    let (mut parts, body) = res.into_parts();
    proxy::strip_hop_by_hop(&mut parts.headers, switching);
    let body = if switching {
        RespBody::Full(None::<Bytes>)
    } else {
        RespBody::Passed(body)
    };
    Response::from_parts(parts, body)
}

/// hyper's connector for the API's Unix socket.
#[derive(Clone)]
struct Uds(Arc<PathBuf>);

impl tower_service::Service<http::Uri> for Uds {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            Ok(TokioIo::new(
                tokio::net::UnixStream::connect(path.as_path()).await?,
            ))
        })
    }
}

/// Binds the API's private socket: `DATA_DIR/api.sock`, or a fresh private folder when that path
/// is too long for a socket address. Only the owner may connect (the API trusts `X-Paas-Peer`).
pub fn bind_api_socket(
    data_dir: &std::path::Path,
) -> anyhow::Result<(
    std::os::unix::net::UnixListener,
    PathBuf,
    Option<tempfile::TempDir>,
)> {
    use anyhow::Context as _;
    use std::os::unix::fs::PermissionsExt;
    let mut path = data_dir.join("api.sock");
    let mut dir = None;
    // sun_path is 108 bytes with its terminating NUL.
    if path.as_os_str().len() > 100 {
        let d = tempfile::Builder::new().prefix("paas-api-").tempdir()?;
        path = d.path().join("api.sock");
        dir = Some(d);
    }
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((l, path, dir))
}

/// The client's IP address as the public listener saw it, for the API's handlers (the API's own
/// peer is the listener, on a Unix socket only it can reach).
pub fn client_ip(req: &actix_web::HttpRequest) -> String {
    req.headers()
        .get(PEER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<std::net::SocketAddr>().ok())
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}
