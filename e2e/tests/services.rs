//! Backing services (issue 22) with the real CLI, server, agent and engine, and an external
//! service broker of the test's own (`paas_e2e::test_broker`, real HTTP, asynchronous
//! provision): an operator registers it (nobody else may), the marketplace lists it, a service
//! is provisioned (polled to `succeeded`), bound to an app that sees `VCAP_SERVICES` in Cloud
//! Foundry's format with the broker's credentials and `DATABASE_URL`, cannot be deleted while
//! bound, is unbound (the broker hears it and the app loses it) and deleted (deprovisioned).
//! User-provided services bind under `user-provided`; a manifest's `services:` binds on push and
//! an unknown one refuses the push; another space neither sees nor binds a space's service.

use paas_e2e::test_broker::{TestBroker, OFFERING, PLAN};
use paas_e2e::{call, create_space, unique, user_with_role, wait_for, zip_of, Platform};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// Answers `/` with the service env as JSON.
const APP: &str = r#"import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({
            "vcap": os.environ.get("VCAP_SERVICES"),
            "database_url": os.environ.get("DATABASE_URL"),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// The app's `VCAP_SERVICES` (parsed; `Null` when unset) and `DATABASE_URL`, once `ok` holds.
fn app_env(
    p: &Platform,
    app: &str,
    what: &str,
    ok: impl Fn(&Value, &Value) -> bool,
) -> (Value, Value) {
    wait_for(Duration::from_secs(90), what, || {
        let (s, body) = p.get_app(app, "/").ok()?;
        if s != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let vcap = v["vcap"]
            .as_str()
            .map(|t| serde_json::from_str(t).unwrap())
            .unwrap_or(Value::Null);
        let db = v["database_url"].clone();
        ok(&vcap, &db).then_some((vcap, db))
    })
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()))
}

fn push_app(p: &Platform, app: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    let out = p.cli(&["push", app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    dir
}

fn service_json(p: &Platform, name: &str) -> Value {
    let out = p.cli(&["service", name, "--json"]);
    assert!(out.ok(), "service {name}: {out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn external_broker_provisions_binds_unbinds_and_deprovisions() {
    let p = Platform::start().expect("platform");
    let admin = p.admin_token().unwrap();
    let broker = TestBroker::start(2);
    let name = unique("brk");

    // Only operators register brokers.
    let (_, dev, _) = user_with_role(
        &p,
        &admin,
        "svc-dev",
        json!({"space": "default/default", "role": "developer"}),
    );
    let body = json!({"name": name, "url": broker.url(), "username": broker.username, "password": broker.password});
    let (s, b) = call(
        &p,
        &dev,
        Method::POST,
        "/v1/service-brokers",
        Some(body.clone()),
        None,
    );
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")), "{b}");
    // Wrong credentials: the catalog is refused, so nothing is registered.
    let mut wrong = body.clone();
    wrong["password"] = json!("wrong");
    let (s, b) = call(
        &p,
        &admin,
        Method::POST,
        "/v1/service-brokers",
        Some(wrong),
        None,
    );
    assert_eq!((s, b["code"].as_str()), (502, Some("broker_error")), "{b}");
    let out = p.cli(&[
        "create-service-broker",
        &name,
        &broker.url(),
        "--username",
        &broker.username,
        "--password",
        &broker.password,
    ]);
    assert!(out.ok(), "create-service-broker: {out:?}{}", p.logs());
    let out = p.cli(&["service-brokers", "--json"]);
    assert!(out.ok() && out.stdout.contains(&name), "{out:?}");
    // The password is stored sealed.
    let db = std::fs::read(p.data_dir().join("paas.db")).unwrap_or_default();
    let wal = std::fs::read(p.data_dir().join("paas.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes
                .windows(broker.password.len())
                .any(|w| w == broker.password.as_bytes()),
            "the broker password is stored in plain"
        );
    }

    // The marketplace lists its offering and plans.
    let out = p.cli(&["marketplace", "--json"]);
    assert!(out.ok(), "{out:?}");
    let offerings: Value = serde_json::from_str(&out.stdout).unwrap();
    let o = offerings
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == OFFERING && o["broker"] == name.as_str())
        .unwrap_or_else(|| panic!("{offerings}"));
    assert!(o["plans"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == PLAN));

    // Provisioned asynchronously, polled to succeeded.
    let svc = unique("db");
    let out = p.cli(&["create-service", OFFERING, PLAN, &svc]);
    assert!(out.ok(), "create-service: {out:?}{}", p.logs());
    wait_for(Duration::from_secs(30), "the service to be created", || {
        (service_json(&p, &svc)["state"] == "succeeded").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
    assert!(broker.saw("last_operation "), "{:?}", broker.calls());
    let instance_id = broker.instances().pop().expect("an instance at the broker");
    // A plan the broker refuses: its description comes back as broker_error, nothing is kept.
    let (s, b) = call(
        &p,
        &admin,
        Method::POST,
        "/v1/services",
        Some(json!({"name": unique("bad"), "offering": OFFERING, "plan": "broken"})),
        None,
    );
    assert_eq!((s, b["code"].as_str()), (502, Some("broker_error")), "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("always fails"),
        "{b}"
    );
    let (s, b) = call(
        &p,
        &admin,
        Method::POST,
        "/v1/services",
        Some(json!({"name": unique("bad"), "offering": OFFERING, "plan": "huge"})),
        None,
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("plan_not_found")),
        "{b}"
    );

    // Bound: the app sees the broker's credentials in VCAP_SERVICES and DATABASE_URL.
    let app = unique("svc-app");
    let _dir = push_app(&p, &app);
    // Unbound, the runtime contract's empty object.
    let (vcap, _) = app_env(&p, &app, "the app to serve", |_, _| true);
    assert_eq!(vcap, json!({}));
    let out = p.cli(&["bind-service", &app, &svc]);
    assert!(out.ok(), "bind-service: {out:?}{}", p.logs());
    let (vcap, db) = app_env(&p, &app, "the app to see its binding", |v, _| {
        v.get(OFFERING).is_some()
    });
    let (_, binding_id) = broker.bindings().pop().expect("a binding at the broker");
    let entry = &vcap[OFFERING][0];
    let uri = format!(
        "postgres://user-{binding_id}:pw-{binding_id}@db.test-broker.example:5432/{instance_id}"
    );
    assert_eq!(entry["name"], svc.as_str(), "{vcap}");
    assert_eq!(entry["instance_name"], svc.as_str(), "{vcap}");
    assert_eq!(entry["label"], OFFERING, "{vcap}");
    assert_eq!(entry["plan"], PLAN, "{vcap}");
    assert_eq!(entry["credentials"]["uri"], uri.as_str(), "{vcap}");
    assert!(entry["binding_name"].is_null() && entry["provider"].is_null());
    assert_eq!(entry["volume_mounts"], json!([]));
    assert!(entry["tags"]
        .as_array()
        .unwrap()
        .contains(&json!("postgresql")));
    assert_eq!(db, json!(uri));
    let detail = p.app_json(&app).unwrap();
    assert_eq!(detail["services"], json!([svc]), "{detail}");
    // The credentials are sealed in the revision env: the API shows them masked.
    let (_, env) = call(
        &p,
        &admin,
        Method::GET,
        &format!("/v1/apps/{app}/env"),
        None,
        None,
    );
    assert!(
        !env.to_string().contains(&format!("pw-{binding_id}")),
        "{env}"
    );

    // Refused while bound.
    let (s, b) = call(
        &p,
        &admin,
        Method::DELETE,
        &format!("/v1/services/{svc}"),
        None,
        None,
    );
    assert_eq!((s, b["code"].as_str()), (409, Some("service_bound")), "{b}");
    let out = p.cli(&["delete-service", &svc]);
    assert!(!out.ok() && out.stderr.contains("unbind"), "{out:?}");

    // A user-provided service binds under "user-provided".
    let ups = unique("ups");
    let out = p.cli(&["cups", &ups, "-p", r#"{"k":"v1"}"#]);
    assert!(out.ok(), "cups: {out:?}");
    let out = p.cli(&["bind-service", &app, &ups]);
    assert!(out.ok(), "bind-service: {out:?}");
    // The entry is read from the answer that showed it: a second request could reach an
    // instance the bind's rolling restart has not replaced yet.
    let entry = app_env(
        &p,
        &app,
        "the app to see the user-provided service",
        |v, _| v["user-provided"][0]["credentials"]["k"] == "v1" && v.get(OFFERING).is_some(),
    )
    .0["user-provided"][0]
        .clone();
    assert_eq!(entry["name"], ups.as_str());
    assert_eq!(entry["label"], "user-provided");
    // Updated credentials reach the bound app.
    let out = p.cli(&["update-user-provided-service", &ups, "-p", r#"{"k":"v2"}"#]);
    assert!(out.ok(), "uups: {out:?}");
    app_env(&p, &app, "the app to see the new credentials", |v, _| {
        v["user-provided"][0]["credentials"]["k"] == "v2"
    });

    // Unbound: the broker revokes, the app loses the credentials.
    let out = p.cli(&["unbind-service", &app, &svc]);
    assert!(out.ok(), "unbind-service: {out:?}{}", p.logs());
    assert!(
        broker.saw(&format!("unbind {instance_id} {binding_id}")),
        "{:?}",
        broker.calls()
    );
    assert!(broker.bindings().is_empty());
    let (vcap, db) = app_env(&p, &app, "the app to lose the binding", |v, _| {
        v.get(OFFERING).is_none()
    });
    assert!(vcap.get("user-provided").is_some(), "{vcap}");
    assert!(db.is_null(), "{db}");

    // Bound again, then the app is deleted: its binding goes with it, revoked at the broker.
    let out = p.cli(&["bind-service", &app, &svc]);
    assert!(out.ok(), "bind-service again: {out:?}{}", p.logs());
    let (_, again) = broker
        .bindings()
        .pop()
        .expect("the new binding at the broker");
    assert_ne!(
        again, binding_id,
        "each binding has its own id and credentials"
    );
    let out = p.cli(&["delete", &app, "-f"]);
    assert!(out.ok(), "delete: {out:?}{}", p.logs());
    assert!(
        broker.saw(&format!("unbind {instance_id} {again}")),
        "{:?}",
        broker.calls()
    );
    assert!(broker.bindings().is_empty());

    // Deleted now: deprovisioned at the broker.
    let out = p.cli(&["delete-service", &svc]);
    assert!(out.ok(), "delete-service: {out:?}{}", p.logs());
    assert!(
        broker.saw(&format!("deprovision {instance_id}")),
        "{:?}",
        broker.calls()
    );
    assert!(broker.instances().is_empty());
    let out = p.cli(&["services", "--json"]);
    assert!(out.ok() && !out.stdout.contains(&svc), "{out:?}");
    let (s, b) = call(
        &p,
        &admin,
        Method::GET,
        &format!("/v1/services/{svc}"),
        None,
        None,
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("service_not_found")),
        "{b}"
    );
    p.check_invariants().unwrap();
}

#[test]
fn manifest_services_bind_on_push_and_spaces_keep_their_services() {
    let p = Platform::start().expect("platform");
    let admin = p.admin_token().unwrap();
    let ups = unique("mf-db");
    let out = p.cli(&[
        "cups",
        &ups,
        "-p",
        r#"{"uri":"postgres://u:p@db.example/x"}"#,
        "-t",
        "postgresql",
    ]);
    assert!(out.ok(), "cups: {out:?}");

    // An unknown service refuses the push before it changes anything, naming the service.
    let app = unique("mf-app");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    let missing = unique("nope");
    std::fs::write(
        dir.path().join("manifest.yml"),
        format!("applications:\n- name: {app}\n  services:\n  - {ups}\n  - {missing}\n"),
    )
    .unwrap();
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(!out.ok() && out.stderr.contains(&missing), "{out:?}");
    let (s, _) = call(
        &p,
        &admin,
        Method::GET,
        &format!("/v1/apps/{app}"),
        None,
        None,
    );
    assert_eq!(s, 404, "the refused push made the app");

    // Known services are bound on push: the first revision carries them.
    std::fs::write(
        dir.path().join("manifest.yml"),
        format!("applications:\n- name: {app}\n  services:\n  - {ups}\n"),
    )
    .unwrap();
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    let (vcap, db) = app_env(&p, &app, "the app to see its manifest service", |v, _| {
        v.get("user-provided").is_some()
    });
    assert_eq!(vcap["user-provided"][0]["name"], ups.as_str(), "{vcap}");
    assert_eq!(db, json!("postgres://u:p@db.example/x"));
    // A second push keeps the binding (and does not bind twice).
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push again: {out:?}{}", p.logs());
    assert_eq!(p.app_json(&app).unwrap()["services"], json!([ups]));

    // Another space neither sees nor binds the service.
    let other = format!("{}/dev", unique("other"));
    create_space(&p, &admin, &other);
    let (_, stranger, _) = user_with_role(
        &p,
        &admin,
        "svc-other",
        json!({"space": other, "role": "developer"}),
    );
    let (s, b) = call(
        &p,
        &stranger,
        Method::GET,
        &format!("/v1/services/{ups}"),
        None,
        Some(&other),
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("service_not_found")),
        "{b}"
    );
    let (s, b) = call(
        &p,
        &stranger,
        Method::GET,
        "/v1/services",
        None,
        Some("default/default"),
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("space_not_found")),
        "{b}"
    );
    let (s, b) = call(
        &p,
        &stranger,
        Method::GET,
        "/v1/services",
        None,
        Some(&other),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["services"], json!([]), "{b}");
    // Their own app cannot bind it: the name is looked up in the app's space.
    let theirs = unique("other-app");
    let form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip_of(&[("app.py", APP.as_bytes(), 0o644)]))
            .file_name("app.zip"),
    );
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/apps/{theirs}/push", p.api_url()))
        .bearer_auth(&stranger)
        .header("X-Paas-Space", &other)
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 201, "{}", res.text().unwrap());
    let (s, b) = call(
        &p,
        &stranger,
        Method::POST,
        &format!("/v1/apps/{theirs}/bindings"),
        Some(json!({"service": ups})),
        Some(&other),
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("service_not_found")),
        "{b}"
    );
    // Nor unbind it from the app of the space that owns it.
    let (s, b) = call(
        &p,
        &stranger,
        Method::DELETE,
        &format!("/v1/apps/{app}/bindings/{ups}"),
        None,
        Some(&other),
    );
    assert_eq!((s, b["code"].as_str()), (404, Some("app_not_found")), "{b}");
    p.check_invariants().unwrap();
}
