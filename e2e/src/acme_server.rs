//! A small RFC 8555 (ACME) server for the tests: real HTTPS with its own CA (the platform is
//! given the CA through `PAAS_ACME_CA_FILE`), nonces checked once each, JWS (ES256) verified
//! against the account's key (the JWK for `newAccount`, the `kid`'s stored key after), and
//! HTTP-01 validation that really fetches `http://HOST/.well-known/acme-challenge/TOKEN` from
//! the router (connecting to its address with that Host) and compares the key authorization.
//! Finalize signs the CSR with the CA (its names must be the order's); certificates live
//! `cert_lifetime`. Knobs: fail the next N validations; what was ordered and issued.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest;

/// A running test ACME server (stops with the test process).
pub struct AcmeServer {
    /// `https://127.0.0.1:PORT`.
    pub base: String,
    /// The CA that signs the server's TLS certificate and every issued certificate (PEM).
    pub ca_pem: String,
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
    state: Arc<Shared>,
}

struct Shared {
    base: String,
    /// Where HTTP-01 validations connect (the platform's plain HTTP listener), set once the
    /// platform (which needs this server's URL to start) is up.
    router: Mutex<Option<SocketAddr>>,
    lifetime: Duration,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    nonces: HashSet<String>,
    next: u64,
    /// Account URL -> its public key (x, y).
    accounts: HashMap<String, (String, String)>,
    orders: HashMap<String, Order>,
    authzs: HashMap<String, Authz>,
    certs: HashMap<String, String>,
    /// Validations still to fail on purpose.
    fail_next: u32,
    /// The identifiers of every new order, in order.
    ordered: Vec<Vec<String>>,
    /// Every validation: host and whether it passed.
    validations: Vec<(String, bool)>,
    /// Every certificate issued: its names and PEM.
    issued: Vec<(Vec<String>, String)>,
}

struct Order {
    account: String,
    identifiers: Vec<String>,
    authzs: Vec<String>,
    status: &'static str,
    error: Option<Value>,
    cert: Option<String>,
}

struct Authz {
    order: String,
    host: String,
    token: String,
    status: &'static str,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Jws {
    protected: String,
    payload: String,
    signature: String,
}

#[derive(Deserialize)]
struct Protected {
    alg: String,
    nonce: String,
    url: String,
    jwk: Option<Jwk>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: String,
    x: String,
    y: String,
}

fn problem(status: StatusCode, kind: &str, detail: &str) -> (StatusCode, Value) {
    (
        status,
        json!({"type": format!("urn:ietf:params:acme:error:{kind}"), "detail": detail, "status": status.as_u16()}),
    )
}

impl AcmeServer {
    /// Starts the server; certificates live `cert_lifetime`. Validations fail until
    /// [`Self::set_router`] says where to connect.
    pub fn start(cert_lifetime: Duration) -> anyhow::Result<Self> {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "paas test ACME CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let ca_pem = ca.pem();

        let mut tls_params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
        tls_params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("127.0.0.1".parse()?));
        let tls_key = rcgen::KeyPair::generate()?;
        let tls_cert = tls_params.signed_by(&tls_key, &ca, &ca_key)?;

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let base = format!("https://{}", listener.local_addr()?);
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("acme-ca.pem");
        std::fs::write(&ca_file, &ca_pem)?;

        let state = Arc::new(Shared {
            base: base.clone(),
            router: Mutex::new(None),
            lifetime: cert_lifetime,
            ca,
            ca_key,
            inner: Mutex::default(),
        });
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![tls_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(tls_key.serialize_der().into()),
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = acceptor.clone();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let svc = hyper::service::service_fn(move |req| {
                            let shared = shared.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(handle(&shared, req).await)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        Ok(Self {
            base,
            ca_pem,
            _dir: dir,
            ca_file,
            state,
        })
    }

    /// Where validations connect: the router's plain HTTP address.
    pub fn set_router(&self, addr: SocketAddr) {
        *self.state.router.lock().unwrap() = Some(addr);
    }

    pub fn directory_url(&self) -> String {
        format!("{}/directory", self.base)
    }

    /// The CA as a file, for `PAAS_ACME_CA_FILE`.
    pub fn ca_file(&self) -> &std::path::Path {
        &self.ca_file
    }

    /// The next `n` HTTP-01 validations fail (as if the answer were wrong).
    pub fn fail_validations(&self, n: u32) {
        self.state.inner.lock().unwrap().fail_next = n;
    }

    /// The identifiers of every order made so far.
    pub fn orders(&self) -> Vec<Vec<String>> {
        self.state.inner.lock().unwrap().ordered.clone()
    }

    /// Every validation so far: host, passed.
    pub fn validations(&self) -> Vec<(String, bool)> {
        self.state.inner.lock().unwrap().validations.clone()
    }

    /// Every certificate issued so far: names, PEM chain.
    pub fn issued(&self) -> Vec<(Vec<String>, String)> {
        self.state.inner.lock().unwrap().issued.clone()
    }
}

fn reply(
    s: &Shared,
    status: StatusCode,
    body: Value,
    location: Option<String>,
) -> Response<Full<Bytes>> {
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut b = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("replay-nonce", new_nonce(s))
        .header("cache-control", "no-store");
    if let Some(l) = location {
        b = b.header("location", l);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

fn new_nonce(s: &Shared) -> String {
    let n = B64.encode(rand::random::<[u8; 16]>());
    s.inner.lock().unwrap().nonces.insert(n.clone());
    n
}

fn id(inner: &mut Inner) -> String {
    inner.next += 1;
    inner.next.to_string()
}

async fn handle(s: &Shared, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if req.method() == hyper::Method::GET && path == "/directory" {
        let b = &s.base;
        let dir = json!({
            "newNonce": format!("{b}/new-nonce"),
            "newAccount": format!("{b}/new-account"),
            "newOrder": format!("{b}/new-order"),
        });
        return reply(s, StatusCode::OK, dir, None);
    }
    if path == "/new-nonce" {
        return Response::builder()
            .status(StatusCode::OK)
            .header("replay-nonce", new_nonce(s))
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    if req.method() != hyper::Method::POST {
        let (st, p) = problem(StatusCode::METHOD_NOT_ALLOWED, "malformed", "POST only");
        return reply(s, st, p, None);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let (st, p) = problem(StatusCode::BAD_REQUEST, "malformed", "body");
            return reply(s, st, p, None);
        }
    };
    match post(s, &path, &body).await {
        // The certificate download is the PEM chain itself.
        Ok((status, Value::String(pem), _)) if path.starts_with("/cert/") => Response::builder()
            .status(status)
            .header("content-type", "application/pem-certificate-chain")
            .header("replay-nonce", new_nonce(s))
            .body(Full::new(Bytes::from(pem)))
            .unwrap(),
        Ok((status, body, location)) => reply(s, status, body, location),
        Err((status, p)) => reply(s, status, p, None),
    }
}

type Answer = Result<(StatusCode, Value, Option<String>), (StatusCode, Value)>;

/// Verifies the JWS (nonce, url, ES256 signature by the account's key) and answers the request.
async fn post(s: &Shared, path: &str, body: &[u8]) -> Answer {
    let bad = |kind: &str, detail: &str| problem(StatusCode::BAD_REQUEST, kind, detail);
    let jws: Jws = serde_json::from_slice(body).map_err(|e| bad("malformed", &e.to_string()))?;
    let protected: Protected = B64
        .decode(&jws.protected)
        .ok()
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or_else(|| bad("malformed", "protected header"))?;
    if protected.alg != "ES256" {
        return Err(bad("badSignatureAlgorithm", "ES256 only"));
    }
    if !s.inner.lock().unwrap().nonces.remove(&protected.nonce) {
        return Err(bad("badNonce", "unknown or used nonce"));
    }
    let url = format!("{}{path}", s.base);
    if protected.url != url {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "url mismatch",
        ));
    }
    let (x, y, account) = if path == "/new-account" {
        let jwk = protected
            .jwk
            .ok_or_else(|| bad("malformed", "newAccount needs a jwk"))?;
        if jwk.kty != "EC" || jwk.crv != "P-256" {
            return Err(bad("badPublicKey", "P-256 only"));
        }
        (jwk.x, jwk.y, None)
    } else {
        let kid = protected
            .kid
            .ok_or_else(|| bad("malformed", "a kid is needed"))?;
        let key = s.inner.lock().unwrap().accounts.get(&kid).cloned();
        let (x, y) = key.ok_or_else(|| {
            problem(
                StatusCode::BAD_REQUEST,
                "accountDoesNotExist",
                "unknown account",
            )
        })?;
        (x, y, Some(kid))
    };
    let mut point = vec![4u8];
    point.extend(B64.decode(&x).map_err(|_| bad("badPublicKey", "x"))?);
    point.extend(B64.decode(&y).map_err(|_| bad("badPublicKey", "y"))?);
    let sig = B64
        .decode(&jws.signature)
        .map_err(|_| bad("malformed", "signature"))?;
    let signed = format!("{}.{}", jws.protected, jws.payload);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| {
            problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "bad JWS signature",
            )
        })?;
    let payload: Value = if jws.payload.is_empty() {
        Value::Null
    } else {
        B64.decode(&jws.payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| bad("malformed", "payload"))?
    };
    let thumbprint = {
        let jwk = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        B64.encode(sha2::Sha256::digest(jwk.as_bytes()))
    };
    let b = s.base.clone();
    let Some(account) = account else {
        // newAccount: the same key is the same account.
        let mut inner = s.inner.lock().unwrap();
        let existing = inner
            .accounts
            .iter()
            .find(|(_, k)| k.0 == x && k.1 == y)
            .map(|(u, _)| u.clone());
        let (status, acct) = match existing {
            Some(u) => (StatusCode::OK, u),
            None => {
                let u = format!("{b}/acct/{}", id(&mut inner));
                inner.accounts.insert(u.clone(), (x, y));
                (StatusCode::CREATED, u)
            }
        };
        return Ok((status, json!({"status": "valid"}), Some(acct)));
    };

    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["new-order"] => {
            let ids: Vec<String> = payload["identifiers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i["value"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if ids.is_empty() {
                return Err(bad("malformed", "no identifiers"));
            }
            let mut inner = s.inner.lock().unwrap();
            inner.ordered.push(ids.clone());
            let order_id = id(&mut inner);
            let mut authzs = Vec::new();
            for host in &ids {
                let a = id(&mut inner);
                let token = B64.encode(rand::random::<[u8; 16]>());
                inner.authzs.insert(
                    a.clone(),
                    Authz {
                        order: order_id.clone(),
                        host: host.clone(),
                        token,
                        status: "pending",
                        error: None,
                    },
                );
                authzs.push(a);
            }
            inner.orders.insert(
                order_id.clone(),
                Order {
                    account,
                    identifiers: ids,
                    authzs,
                    status: "pending",
                    error: None,
                    cert: None,
                },
            );
            let body = order_json(&b, &inner, &order_id);
            Ok((
                StatusCode::CREATED,
                body,
                Some(format!("{b}/order/{order_id}")),
            ))
        }
        ["order", o] => {
            let inner = s.inner.lock().unwrap();
            owned(&inner, o, &account)?;
            Ok((StatusCode::OK, order_json(&b, &inner, o), None))
        }
        ["authz", a] => {
            let inner = s.inner.lock().unwrap();
            let authz = inner
                .authzs
                .get(*a)
                .ok_or_else(|| problem(StatusCode::NOT_FOUND, "malformed", "no such authz"))?;
            owned(&inner, &authz.order, &account)?;
            Ok((StatusCode::OK, authz_json(&b, a, authz), None))
        }
        ["chall", a] => {
            let (host, token) = {
                let inner = s.inner.lock().unwrap();
                let authz = inner.authzs.get(*a).ok_or_else(|| {
                    problem(StatusCode::NOT_FOUND, "malformed", "no such challenge")
                })?;
                owned(&inner, &authz.order, &account)?;
                if authz.status != "pending" {
                    return Ok((StatusCode::OK, chall_json(&b, a, authz), None));
                }
                (authz.host.clone(), authz.token.clone())
            };
            let expected = format!("{token}.{thumbprint}");
            let outcome = validate(s, &host, &token, &expected).await;
            let mut inner = s.inner.lock().unwrap();
            let outcome = if inner.fail_next > 0 {
                inner.fail_next -= 1;
                Err("the test server was told to fail this validation".to_string())
            } else {
                outcome
            };
            inner.validations.push((host.clone(), outcome.is_ok()));
            let order_id = inner.authzs[*a].order.clone();
            match outcome {
                Ok(()) => {
                    inner.authzs.get_mut(*a).unwrap().status = "valid";
                    let all = inner.orders[&order_id]
                        .authzs
                        .iter()
                        .all(|x| inner.authzs[x].status == "valid");
                    if all {
                        inner.orders.get_mut(&order_id).unwrap().status = "ready";
                    }
                }
                Err(why) => {
                    let err = json!({"type": "urn:ietf:params:acme:error:unauthorized", "detail": format!("{host}: {why}"), "status": 403});
                    let authz = inner.authzs.get_mut(*a).unwrap();
                    authz.status = "invalid";
                    authz.error = Some(err.clone());
                    let order = inner.orders.get_mut(&order_id).unwrap();
                    order.status = "invalid";
                    order.error = Some(err);
                }
            }
            let authz = &inner.authzs[*a];
            Ok((StatusCode::OK, chall_json(&b, a, authz), None))
        }
        ["finalize", o] => {
            let csr_der = payload["csr"]
                .as_str()
                .and_then(|c| B64.decode(c).ok())
                .ok_or_else(|| bad("malformed", "csr"))?;
            let mut inner = s.inner.lock().unwrap();
            owned(&inner, o, &account)?;
            if inner.orders[*o].status != "ready" {
                return Err(problem(
                    StatusCode::FORBIDDEN,
                    "orderNotReady",
                    "order is not ready",
                ));
            }
            let csr = rcgen::CertificateSigningRequestParams::from_der(&csr_der.into())
                .map_err(|e| bad("badCSR", &e.to_string()))?;
            let mut names: Vec<String> = csr
                .params
                .subject_alt_names
                .iter()
                .filter_map(|n| match n {
                    rcgen::SanType::DnsName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect();
            names.sort();
            let mut want = inner.orders[*o].identifiers.clone();
            want.sort();
            if names != want {
                return Err(bad(
                    "badCSR",
                    &format!("CSR names {names:?} are not the order's {want:?}"),
                ));
            }
            let mut csr = csr;
            let now = time::OffsetDateTime::now_utc();
            csr.params.not_before = now - time::Duration::seconds(5);
            csr.params.not_after = now + s.lifetime;
            csr.params.serial_number = Some(rcgen::SerialNumber::from_slice(
                &rand::random::<[u8; 16]>()[..],
            ));
            let cert = csr
                .signed_by(&s.ca, &s.ca_key)
                .map_err(|e| bad("badCSR", &e.to_string()))?;
            let chain = format!("{}{}", cert.pem(), s.ca.pem());
            let cert_id = id(&mut inner);
            inner.certs.insert(cert_id.clone(), chain.clone());
            inner.issued.push((want, chain));
            let order = inner.orders.get_mut(*o).unwrap();
            order.status = "valid";
            order.cert = Some(cert_id);
            Ok((StatusCode::OK, order_json(&b, &inner, o), None))
        }
        ["cert", c] => {
            let inner = s.inner.lock().unwrap();
            let pem = inner
                .certs
                .get(*c)
                .cloned()
                .ok_or_else(|| problem(StatusCode::NOT_FOUND, "malformed", "no such cert"))?;
            Ok((StatusCode::OK, Value::String(pem), None))
        }
        _ => Err(problem(
            StatusCode::NOT_FOUND,
            "malformed",
            "no such resource",
        )),
    }
}

fn owned(inner: &Inner, order: &str, account: &str) -> Result<(), (StatusCode, Value)> {
    match inner.orders.get(order) {
        Some(o) if o.account == account => Ok(()),
        _ => Err(problem(
            StatusCode::NOT_FOUND,
            "unauthorized",
            "no such order for this account",
        )),
    }
}

fn order_json(b: &str, inner: &Inner, id: &str) -> Value {
    let o = &inner.orders[id];
    let mut v = json!({
        "status": o.status,
        "identifiers": o.identifiers.iter().map(|h| json!({"type": "dns", "value": h})).collect::<Vec<_>>(),
        "authorizations": o.authzs.iter().map(|a| format!("{b}/authz/{a}")).collect::<Vec<_>>(),
        "finalize": format!("{b}/finalize/{id}"),
    });
    if let Some(c) = &o.cert {
        v["certificate"] = json!(format!("{b}/cert/{c}"));
    }
    if let Some(e) = &o.error {
        v["error"] = e.clone();
    }
    v
}

fn chall_json(b: &str, id: &str, a: &Authz) -> Value {
    let mut v = json!({
        "type": "http-01",
        "url": format!("{b}/chall/{id}"),
        "token": a.token,
        "status": a.status,
    });
    if let Some(e) = &a.error {
        v["error"] = e.clone();
    }
    v
}

fn authz_json(b: &str, id: &str, a: &Authz) -> Value {
    json!({
        "identifier": {"type": "dns", "value": a.host},
        "status": a.status,
        "challenges": [chall_json(b, id, a)],
    })
}

/// HTTP-01: GET `http://HOST/.well-known/acme-challenge/TOKEN`, connecting to the router.
async fn validate(s: &Shared, host: &str, token: &str, expected: &str) -> Result<(), String> {
    let router = s
        .router
        .lock()
        .unwrap()
        .ok_or("the test server does not know the router yet")?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve(host, router)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!(
        "http://{host}:{}/.well-known/acme-challenge/{token}",
        router.port()
    );
    let rsp = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let status = rsp.status();
    let body = rsp.text().await.map_err(|e| e.to_string())?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("{url} answered {status}"));
    }
    if body.trim() != expected {
        return Err(format!(
            "{url} answered {body:?}, not the key authorization"
        ));
    }
    Ok(())
}
