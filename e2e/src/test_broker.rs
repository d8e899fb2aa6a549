//! A service broker of the tests' own (issue 22): a small HTTP/1.1 server on this machine that
//! speaks the Open Service Broker API v2.17 as a real external broker would: basic auth, the
//! `X-Broker-API-Version` header required, a catalog, asynchronous provision (202 and an
//! operation that `last_operation` reports `in progress` a few times before `succeeded`),
//! bind with per-binding credentials, unbind and deprovision (410 for what it does not know).
//! Every call is recorded, so a test can assert what the platform asked.

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

pub const OFFERING: &str = "testdb";
pub const SERVICE_ID: &str = "svc-testdb";
pub const PLAN: &str = "small";

#[derive(Default)]
struct State {
    /// Provisioned instances, with the polls left before the create is done.
    instances: HashMap<String, u32>,
    bindings: HashSet<(String, String)>,
    calls: Vec<String>,
}

pub struct TestBroker {
    pub port: u16,
    pub username: String,
    pub password: String,
    state: Arc<Mutex<State>>,
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let (path, q) = target.split_once('?').unwrap_or((&target, ""));
    let query = q
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some(Request {
        method,
        path: path.to_string(),
        query,
        headers,
        body,
    })
}

fn respond(stream: &mut std::net::TcpStream, status: u16, body: &Value) {
    let text = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(text.as_bytes());
}

impl TestBroker {
    /// Starts it on a free port of 127.0.0.1; `polls` is how many `last_operation` calls answer
    /// `in progress` before a create succeeds.
    pub fn start(polls: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let username = crate::unique("broker-user");
        let password = crate::unique("broker-pass");
        let state = Arc::new(Mutex::new(State::default()));
        let (st, user, pass) = (state.clone(), username.clone(), password.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (st, user, pass) = (st.clone(), user.clone(), pass.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_request(&mut stream) else {
                        return;
                    };
                    let (status, body) = handle(&st, &user, &pass, polls, &req);
                    respond(&mut stream, status, &body);
                });
            }
        });
        Self {
            port,
            username,
            password,
            state,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every call so far, e.g. `bind INSTANCE BINDING`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn saw(&self, prefix: &str) -> bool {
        self.calls().iter().any(|c| c.starts_with(prefix))
    }

    /// The bindings it holds now (instance, binding).
    pub fn bindings(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .unwrap()
            .bindings
            .iter()
            .cloned()
            .collect()
    }

    pub fn instances(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .instances
            .keys()
            .cloned()
            .collect()
    }
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn handle(st: &Mutex<State>, user: &str, pass: &str, polls: u32, req: &Request) -> (u16, Value) {
    if req.headers.get("authorization") != Some(&basic(user, pass)) {
        return (401, json!({"description": "bad credentials"}));
    }
    if req.headers.get("x-broker-api-version").map(String::as_str) != Some("2.17") {
        return (
            412,
            json!({"description": "X-Broker-API-Version 2.17 required"}),
        );
    }
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let mut s = st.lock().unwrap();
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["v2", "catalog"]) => (200, catalog()),
        ("PUT", ["v2", "service_instances", id]) => {
            s.calls.push(format!("provision {id}"));
            if req.query.get("accepts_incomplete").map(String::as_str) != Some("true") {
                return (
                    422,
                    json!({"error": "AsyncRequired", "description": "this broker provisions asynchronously"}),
                );
            }
            if body["plan_id"] == "plan-fails" {
                return (
                    400,
                    json!({"error": "BadPlan", "description": "this plan always fails"}),
                );
            }
            s.instances.insert(id.to_string(), polls);
            (202, json!({"operation": format!("create-{id}")}))
        }
        ("GET", ["v2", "service_instances", id, "last_operation"]) => {
            s.calls.push(format!("last_operation {id}"));
            match s.instances.get_mut(*id) {
                None => (410, json!({})),
                Some(0) => (200, json!({"state": "succeeded"})),
                Some(n) => {
                    *n -= 1;
                    (
                        200,
                        json!({"state": "in progress", "description": "making the database"}),
                    )
                }
            }
        }
        ("DELETE", ["v2", "service_instances", id]) => {
            s.calls.push(format!("deprovision {id}"));
            if s.bindings.iter().any(|(i, _)| i == id) {
                return (
                    422,
                    json!({"description": "the instance still has bindings"}),
                );
            }
            match s.instances.remove(*id) {
                Some(_) => (200, json!({})),
                None => (410, json!({})),
            }
        }
        ("PUT", ["v2", "service_instances", id, "service_bindings", bid]) => {
            s.calls.push(format!("bind {id} {bid}"));
            if !s.instances.contains_key(*id) {
                return (404, json!({"description": "no such instance"}));
            }
            s.bindings.insert((id.to_string(), bid.to_string()));
            (
                201,
                json!({"credentials": {
                    "uri": format!("postgres://user-{bid}:pw-{bid}@db.test-broker.example:5432/{id}"),
                    "username": format!("user-{bid}"),
                    "password": format!("pw-{bid}"),
                }}),
            )
        }
        ("DELETE", ["v2", "service_instances", id, "service_bindings", bid]) => {
            s.calls.push(format!("unbind {id} {bid}"));
            if s.bindings.remove(&(id.to_string(), bid.to_string())) {
                (200, json!({}))
            } else {
                (410, json!({}))
            }
        }
        _ => (404, json!({"description": "no such endpoint"})),
    }
}

fn catalog() -> Value {
    json!({"services": [{
        "id": SERVICE_ID,
        "name": OFFERING,
        "description": "A database from the test broker",
        "bindable": true,
        "tags": ["postgresql", "relational"],
        "plans": [
            {"id": "plan-small", "name": PLAN, "description": "A small one", "free": true},
            {"id": "plan-fails", "name": "broken", "description": "Always refused", "free": true}
        ]
    }]})
}
