//! Deployments converge exactly (issue 17), on the real engine: a burst of changes to one app
//! fired without waiting between them (env, restart, push, scale, memory, rollback) leaves exactly
//! the last version running and room for another app on the same node; and many apps pushed at
//! once on two agents all serve with exact counts. The invariants themselves are checked by the
//! harness (`Platform::check_invariants`), as at every test's teardown.

use paas_e2e::{unique, wait_for, zip_of, Platform};
use std::time::{Duration, Instant};

fn app_py(version: &str) -> String {
    format!(
        r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("{version} " + os.environ.get("GREETING", "-") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#
    )
}

struct Api {
    base: String,
    token: String,
    client: reqwest::blocking::Client,
}

impl Api {
    fn new(p: &Platform) -> Api {
        Api {
            base: p.api_url(),
            token: p.admin_token().expect("token"),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(300))
                .build()
                .expect("client"),
        }
    }

    /// Sends one change and insists it was accepted; returns nothing else: no waiting.
    fn send(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) {
        let mut req = self
            .client
            .request(method.clone(), format!("{}/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().expect("request");
        let status = res.status();
        let text = res.text().unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
    }

    /// The plain push: answers once the revision is made, without waiting for instances.
    fn push(&self, app: &str, version: &str) {
        let zip = zip_of(&[("app.py", app_py(version).as_bytes(), 0o644)]);
        let form = reqwest::blocking::multipart::Form::new().part(
            "archive",
            reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
        );
        let res = self
            .client
            .post(format!("{}/v1/apps/{app}/push", self.base))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .expect("push");
        let status = res.status();
        assert!(
            status.is_success(),
            "push {version}: {status} {}",
            res.text().unwrap_or_default()
        );
    }

    fn env(&self, app: &str, greeting: &str) {
        self.send(
            reqwest::Method::PATCH,
            &format!("/apps/{app}/env"),
            Some(serde_json::json!({"set": {"GREETING": greeting}})),
        );
    }

    fn patch(&self, app: &str, body: serde_json::Value) {
        self.send(reqwest::Method::PATCH, &format!("/apps/{app}"), Some(body));
    }

    fn post(&self, app: &str, what: &str, body: serde_json::Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/apps/{app}/{what}"),
            Some(body),
        );
    }
}

fn serves(p: &Platform, app: &str, want: &str) {
    wait_for(
        Duration::from_secs(120),
        &format!("{app} to serve {want:?}"),
        || {
            let (status, body) = p.get_app(app, "/").ok()?;
            (status == 200 && body.contains(want)).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
}

#[test]
fn a_burst_of_changes_converges_to_the_last_one() {
    let p = Platform::start().expect("platform");
    let api = Api::new(&p);
    let app = unique("burst");
    api.push(&app, "v1");
    api.patch(&app, serde_json::json!({"instances": 2}));
    serves(&p, &app, "v1 -");
    p.check_invariants().expect("before the burst");

    // Eleven changes, none waiting for the one before to roll out.
    let started = Instant::now();
    api.env(&app, "one");
    api.post(&app, "restart", serde_json::json!({}));
    api.push(&app, "v2");
    api.env(&app, "two");
    api.post(&app, "restart", serde_json::json!({}));
    api.patch(&app, serde_json::json!({"instances": 3}));
    api.patch(&app, serde_json::json!({"memory_mb": 192}));
    api.post(&app, "rollback", serde_json::json!({}));
    api.push(&app, "v3");
    api.env(&app, "three");
    api.post(&app, "restart", serde_json::json!({}));
    let fired = started.elapsed();

    p.check_invariants()
        .unwrap_or_else(|e| panic!("after the burst: {e}{}", p.logs()));
    let quiet = started.elapsed();
    serves(&p, &app, "v3 three");
    let detail = p.app_json(&app).expect("app");
    let running: Vec<&serde_json::Value> = detail["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "running")
        .collect();
    assert_eq!(running.len(), 3, "{detail:#}");
    assert_eq!(detail["memory_mb"], 192, "{detail:#}");
    eprintln!(
        "burst of 11 changes: fired in {:.1} s, quiet after {:.1} s",
        fired.as_secs_f64(),
        quiet.as_secs_f64()
    );

    // The node kept room: nothing of the burst is left holding a reservation.
    let other = unique("after-burst");
    api.push(&other, "other");
    serves(&p, &other, "other -");
}

/// Many apps × 2 instances pushed at once on two agents all serve, with exact counts.
#[test]
fn many_apps_pushed_at_once_on_two_agents_all_serve() {
    const APPS: usize = 12;
    let mut p = Platform::start().expect("platform");
    p.start_agent(&unique("e2e-node-b"), "zone-b")
        .expect("second agent");
    let api = std::sync::Arc::new(Api::new(&p));
    let names: Vec<String> = (0..APPS).map(|i| unique(&format!("many{i}"))).collect();
    let started = Instant::now();
    let pushes: Vec<_> = names
        .iter()
        .cloned()
        .map(|app| {
            let api = api.clone();
            std::thread::spawn(move || {
                api.push(&app, &app);
                api.patch(&app, serde_json::json!({"instances": 2}));
            })
        })
        .collect();
    for h in pushes {
        h.join().expect("push thread");
    }
    for app in &names {
        serves(&p, app, app);
    }
    p.check_invariants()
        .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    for app in &names {
        let d = p.app_json(app).expect("app");
        let running = d["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "running")
            .count();
        assert_eq!(running, 2, "{app}: {d:#}");
    }
    eprintln!(
        "{APPS} apps x 2 instances on two agents: all serving after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
