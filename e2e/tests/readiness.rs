//! Readiness separate from liveness, end to end on the real engine: an app with a `/ready`
//! endpoint whose answer the test flips by a request straight to one instance. Unready, that
//! instance leaves the routes (every request through the router goes to the other one) but keeps
//! running: same container, no restart, no crash. Ready again, it gets traffic again. Each flip
//! is a `CELL` line and an event.

use paas_e2e::{unique, wait_for, Platform};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

/// `/ready` answers 503 while the instance is flipped; `/flip?ready=0|1` flips it.
const APP: &str = r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READY = [True]
INDEX = os.environ.get("PAAS_INSTANCE_INDEX", "?")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200
        if self.path == "/ready":
            status = 200 if READY[0] else 503
            body = "ready" if READY[0] else "not ready"
        elif self.path.startswith("/flip?ready="):
            READY[0] = self.path.endswith("=1")
            body = f"ready={READY[0]}"
        else:
            body = f"instance {INDEX}"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

fn instances(p: &Platform, app: &str) -> Vec<Value> {
    p.app_json(app)
        .map(|v| v["instances"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn instance(p: &Platform, app: &str, index: u64) -> Option<Value> {
    instances(p, app)
        .into_iter()
        .find(|i| i["index"].as_u64() == Some(index))
}

/// GET straight to one instance at its published address, bypassing the router.
fn direct(address: &str, path: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://{address}{path}"))
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// The app's backends in the controller's route table (what every router sends traffic to).
fn backends(p: &Platform, app: &str) -> usize {
    let token = std::fs::read_to_string(p.data_dir().join("join-token")).expect("join token");
    let table: Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/router/table", p.api_url()))
        .bearer_auth(token.trim())
        .send()
        .and_then(|r| r.json())
        .expect("route table");
    // The table is keyed by app id (names are unique per space only); a route names both.
    let id = table["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["app"] == app))
        .and_then(|r| r["app_id"].as_str())
        .unwrap_or_default()
        .to_string();
    table["apps"][id.as_str()].as_array().map_or(0, Vec::len)
}

/// Which instances answered `n` requests through the router.
fn answered_by(p: &Platform, app: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let (status, body) = p.get_app(app, "/").unwrap();
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect()
}

fn events(p: &Platform, app: &str) -> String {
    let out = p.cli(&["events", app]);
    assert!(out.ok(), "{out:?}");
    out.stdout
}

#[test]
fn an_unready_instance_leaves_the_routes_without_restarting() {
    let p = Platform::start().expect("platform");
    let app = unique("ready");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    std::fs::write(
        dir.path().join("paas.yml"),
        format!(
            "applications:\n- name: {app}\n  instances: 2\n  command: exec python3 app.py\n  \
             readiness-health-check-type: http\n  readiness-health-check-http-endpoint: /ready\n  \
             readiness-health-check-interval: 1\n"
        ),
    )
    .unwrap();
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());

    // Both run and are ready: both get traffic.
    wait_for(Duration::from_secs(60), "2 running and ready", || {
        let list = instances(&p, &app);
        (list.len() == 2
            && list
                .iter()
                .all(|i| i["state"] == "running" && i["ready"] == true))
        .then_some(())
    })
    .map_err(|e| format!("{e}: {:?}", instances(&p, &app)))
    .unwrap();
    wait_for(Duration::from_secs(20), "both instances routed", || {
        (answered_by(&p, &app, 6).len() == 2).then_some(())
    })
    .unwrap();
    let containers: BTreeSet<String> = p.containers_of(&app).into_iter().collect();
    assert_eq!(containers.len(), 2);

    // Instance 1's readiness check starts failing.
    let one = instance(&p, &app, 1).unwrap();
    let address = one["address"].as_str().unwrap().to_string();
    assert_eq!(direct(&address, "/flip?ready=0").0, 200);
    let unready = wait_for(Duration::from_secs(20), "instance 1 unready", || {
        instance(&p, &app, 1).filter(|i| i["ready"] == false)
    })
    .unwrap();
    assert_eq!(unready["state"], "running", "still running: {unready}");
    assert_eq!(unready["restarts"], 0, "not restarted: {unready}");
    wait_for(Duration::from_secs(10), "one backend left", || {
        (backends(&p, &app) == 1).then_some(())
    })
    .unwrap();
    let seen = answered_by(&p, &app, 20);
    assert_eq!(
        seen,
        BTreeSet::from(["instance 0".to_string()]),
        "the router sends everything to the ready instance"
    );
    // It is alive and answering all along, just out of the routes; a few liveness checks
    // later it has still not been restarted nor replaced.
    assert_eq!(direct(&address, "/").1, "instance 1");
    std::thread::sleep(Duration::from_secs(3));
    let still = instance(&p, &app, 1).unwrap();
    assert_eq!(still["state"], "running", "{still}");
    assert_eq!(still["ready"], false, "{still}");
    assert_eq!(still["restarts"], 0, "{still}");
    assert_eq!(
        p.containers_of(&app).into_iter().collect::<BTreeSet<_>>(),
        containers,
        "same containers"
    );
    let text = p.cli(&["app", &app]).stdout;
    assert!(text.contains("1 not ready"), "{text}");
    let ev = events(&p, &app);
    assert!(
        ev.contains("instance.unready") && !ev.contains("instance.crash"),
        "{ev}"
    );

    // Ready again: back in the routes, still the same container.
    assert_eq!(direct(&address, "/flip?ready=1").0, 200);
    wait_for(Duration::from_secs(20), "instance 1 ready again", || {
        instance(&p, &app, 1).filter(|i| i["ready"] == true)
    })
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "instance 1 gets traffic again",
        || {
            answered_by(&p, &app, 6)
                .contains("instance 1")
                .then_some(())
        },
    )
    .unwrap();
    let back = instance(&p, &app, 1).unwrap();
    assert_eq!(back["restarts"], 0, "{back}");
    assert_eq!(
        p.containers_of(&app).into_iter().collect::<BTreeSet<_>>(),
        containers
    );
    assert!(events(&p, &app).contains("instance.ready"));
    let logs = p.cli(&["logs", &app, "--recent"]).stdout;
    assert!(
        logs.contains("Instance 1 is not ready") && logs.contains("Instance 1 is ready"),
        "{logs}"
    );

    let out = p.cli(&["delete", &app, "-f"]);
    assert!(out.ok(), "{out:?}");
}
