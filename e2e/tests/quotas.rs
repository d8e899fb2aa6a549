//! Issue 26 against the real server and CLI: space quotas (set by operators and org managers,
//! read by the space's members, enforced on push, scale, start and route map with
//! `422 quota_exceeded` naming the limit and the usage, nothing changed), the week of 1-minute
//! metrics (`?window=7d`), and node health over time recorded while an agent heartbeats.

use paas_e2e::{call, unique, wait_for, zip_of, Options, Platform};
use serde_json::json;
use std::time::Duration;

/// A push into `space` with extra form fields (`instances`, `memory`, ...).
fn push(
    p: &Platform,
    token: &str,
    app: &str,
    space: &str,
    fields: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut form = reqwest::blocking::multipart::Form::new().part(
        "archive",
        reqwest::blocking::multipart::Part::bytes(zip_of(&[("app.py", b"print('hi')", 0o644)]))
            .file_name("app.zip"),
    );
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let res = reqwest::blocking::Client::new()
        .post(format!("{}/v1/apps/{app}/push", p.api_url()))
        .bearer_auth(token)
        .header("X-Paas-Space", space)
        .multipart(form)
        .send()
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or_default())
}

fn refused(r: &(u16, serde_json::Value), message: &str) {
    assert_eq!(r.0, 422, "{}", r.1);
    assert_eq!(r.1["code"], "quota_exceeded", "{}", r.1);
    assert_eq!(r.1["message"], message, "{}", r.1);
}

#[test]
fn space_quotas_bound_push_scale_start_and_routes() {
    let p = Platform::start_server(Options::default()).expect("server");
    p.login().unwrap();
    let admin = p.admin_token().unwrap();
    let org = unique("org");
    let space = format!("{org}/dev");
    assert!(p.cli(&["create-space", &space]).ok());
    let quota_path = format!("/v1/spaces/{space}/quota");
    let get = |token: &str| call(&p, token, reqwest::Method::GET, &quota_path, None, None);
    let put = |token: &str, q: serde_json::Value| {
        call(&p, token, reqwest::Method::PUT, &quota_path, Some(q), None)
    };

    // No quota: every limit unlimited, nothing used.
    let (s, b) = get(&admin);
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["space"], space.as_str());
    assert_eq!(
        b["quota"],
        json!({"memory_mb": null, "instances": null, "apps": null, "routes": null})
    );
    assert_eq!(
        b["usage"],
        json!({"memory_mb": 0, "instances": 0, "apps": 0, "routes": 0})
    );

    let (s, b) = put(
        &admin,
        json!({"memory_mb": 1024, "instances": 3, "apps": 2, "routes": 2}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["quota"]["memory_mb"], 1024);

    // A push within the quota: 2 x 256 MB, one app, its default route.
    let a = unique("qa");
    let r = push(
        &p,
        &admin,
        &a,
        &space,
        &[("instances", "2"), ("memory", "256M")],
    );
    assert_eq!(r.0, 201, "{}", r.1);
    let (_, b) = get(&admin);
    assert_eq!(
        b["usage"],
        json!({"memory_mb": 512, "instances": 2, "apps": 1, "routes": 1})
    );

    // Scaling past a limit is refused and changes nothing.
    let app_path = format!("/v1/apps/{a}");
    let patch = |body: serde_json::Value| {
        call(
            &p,
            &admin,
            reqwest::Method::PATCH,
            &app_path,
            Some(body),
            Some(&space),
        )
    };
    refused(
        &patch(json!({"instances": 4})),
        &format!("space {space}: instance quota 3, in use 2, asked 2"),
    );
    refused(
        &patch(json!({"memory_mb": 1024})),
        &format!("space {space}: memory quota 1024 MB, in use 512 MB, asked 1536 MB"),
    );
    let (_, app) = call(
        &p,
        &admin,
        reqwest::Method::GET,
        &app_path,
        None,
        Some(&space),
    );
    assert_eq!(
        (app["desired_instances"].as_u64(), app["memory_mb"].as_u64()),
        (Some(2), Some(256)),
        "{app}"
    );
    let events = call(
        &p,
        &admin,
        reqwest::Method::GET,
        &format!("{app_path}/events"),
        None,
        Some(&space),
    )
    .1;
    assert!(
        !events.to_string().contains("app.scale"),
        "a refused scale leaves no event: {events}"
    );
    // Down is always allowed, up to the limit too.
    assert_eq!(patch(json!({"instances": 1})).0, 200);
    assert_eq!(patch(json!({"instances": 3})).0, 200);
    assert_eq!(patch(json!({"instances": 1})).0, 200);

    // The second app fits; a third is one app too many and is not made.
    let b_app = unique("qb");
    let r = push(&p, &admin, &b_app, &space, &[]);
    assert_eq!(r.0, 201, "{}", r.1);
    let c_app = unique("qc");
    refused(
        &push(&p, &admin, &c_app, &space, &[]),
        &format!("space {space}: app quota 2, in use 2, asked 1"),
    );
    let (s, _) = call(
        &p,
        &admin,
        reqwest::Method::GET,
        &format!("/v1/apps/{c_app}"),
        None,
        Some(&space),
    );
    assert_eq!(s, 404, "the refused push made no app");

    // Both routes are taken by the default routes: a mapped one is refused.
    let route = format!("{}.example.test", unique("extra"));
    refused(
        &call(
            &p,
            &admin,
            reqwest::Method::POST,
            &format!("{app_path}/routes"),
            Some(json!({"route": route})),
            Some(&space),
        ),
        &format!("space {space}: route quota 2, in use 2, asked 1"),
    );

    // Starting a stopped app counts its memory again.
    let b_path = format!("/v1/apps/{b_app}");
    assert_eq!(
        call(
            &p,
            &admin,
            reqwest::Method::POST,
            &format!("{b_path}/stop"),
            None,
            Some(&space)
        )
        .0,
        200
    );
    let (s, b) = put(
        &admin,
        json!({"memory_mb": 256, "instances": 3, "apps": 2, "routes": 2}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["usage"]["memory_mb"], 256,
        "a stopped app uses no memory: {b}"
    );
    refused(
        &call(
            &p,
            &admin,
            reqwest::Method::POST,
            &format!("{b_path}/start"),
            None,
            Some(&space),
        ),
        &format!("space {space}: memory quota 256 MB, in use 256 MB, asked 256 MB"),
    );
    let (_, app) = call(
        &p,
        &admin,
        reqwest::Method::GET,
        &b_path,
        None,
        Some(&space),
    );
    assert_eq!(app["state"], "stopped", "{app}");

    // A developer of the space reads the quota and cannot set it; a stranger does not see it.
    let dev = unique("dev");
    assert!(p.cli(&["add-user", &dev, "-p", "a-long-password"]).ok());
    assert!(p
        .cli(&["set-role", &dev, "developer", "--space", &space])
        .ok());
    let b: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{}/v1/auth/login", p.api_url()))
        .json(&json!({"username": dev, "password": "a-long-password"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let dev_token = b["token"].as_str().expect("a token").to_string();
    assert_eq!(get(&dev_token).0, 200);
    let (s, b) = put(&dev_token, json!({}));
    assert_eq!((s, b["code"].as_str()), (403, Some("forbidden")), "{b}");
    let (s, b) = call(
        &p,
        &dev_token,
        reqwest::Method::GET,
        "/v1/spaces/default/default/quota",
        None,
        None,
    );
    assert_eq!(
        (s, b["code"].as_str()),
        (404, Some("space_not_found")),
        "{b}"
    );
}

#[test]
fn space_quota_command_sets_some_limits_and_shows_usage() {
    let p = Platform::start_server(Options::default()).expect("server");
    p.login().unwrap();
    let space = format!("{}/dev", unique("org"));
    assert!(p.cli(&["create-space", &space]).ok());
    let out = p.cli(&[
        "space-quota",
        &space,
        "--memory",
        "2G",
        "--instances",
        "10",
        "--apps",
        "5",
        "--routes",
        "10",
    ]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains(&format!("Set the quota of {space}")),
        "{out:?}"
    );
    assert!(out.stdout.contains("2048 MB"), "{out:?}");
    // One limit given: that one changes, the others stay.
    let out = p.cli(&["space-quota", &space, "--apps", "unlimited", "--json"]);
    assert!(out.ok(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        v["quota"],
        json!({"memory_mb": 2048, "instances": 10, "apps": null, "routes": 10})
    );
    let out = p.cli(&["space-quota", &space]);
    assert!(out.ok(), "{out:?}");
    let apps_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("apps"))
        .unwrap_or_default();
    assert!(apps_line.contains("unlimited"), "{out:?}");
    let out = p.cli(&["space-quota", &space, "--memory", "lots"]);
    assert!(!out.ok(), "{out:?}");
    assert!(out.stderr.contains("--memory"), "{out:?}");
    let out = p.cli(&["space-quota", "no-slash"]);
    assert!(!out.ok() && out.stderr.contains("ORG/SPACE"), "{out:?}");
}

#[test]
fn a_week_of_minutes_and_node_health_over_time() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    p.login().unwrap();
    let admin = p.admin_token().unwrap();
    // Pushed before any node is ready (the server-side fallback stages it) and left stopped, so
    // the test needs no stack image: its metric rows are stored all the same.
    let app = unique("week");
    let r = push(&p, &admin, &app, "default/default", &[("no_start", "true")]);
    assert_eq!(r.0, 201, "{}", r.1);
    let node = unique("health-node");
    p.start_agent(&node, "zone-a").expect("agent");

    // The nodes' health: a point per minute as soon as the controller has heard the agent.
    let health = wait_for(Duration::from_secs(60), "a node health point", || {
        let (s, b) = call(
            &p,
            &admin,
            reqwest::Method::GET,
            "/v1/nodes/metrics?window=1h",
            None,
            None,
        );
        assert_eq!(s, 200, "{b}");
        b["nodes"]
            .as_array()
            .and_then(|l| l.iter().find(|n| n["name"] == node.as_str()).cloned())
            .filter(|n| n["points"].as_array().is_some_and(|p| !p.is_empty()))
    })
    .unwrap();
    let point = &health["points"][0];
    assert_eq!(point["state"], "ready", "{health}");
    assert!(point["capacity_mb"].as_u64().unwrap() > 0, "{health}");
    assert!(point["lag_secs"].as_f64().unwrap() < 30.0, "{health}");
    let (s, b) = call(
        &p,
        &admin,
        reqwest::Method::GET,
        "/v1/nodes/metrics?window=7d",
        None,
        None,
    );
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")), "{b}");

    // The app's week: 1-minute points, once the first whole minute is rolled up.
    let path = format!("/v1/apps/{app}/metrics?window=7d");
    let week = wait_for(Duration::from_secs(150), "a rolled-up minute", || {
        let (s, b) = call(&p, &admin, reqwest::Method::GET, &path, None, None);
        assert_eq!(s, 200, "{b}");
        b["points"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
            .then_some(b)
    })
    .unwrap();
    assert_eq!(week["resolution_secs"], 60, "{week}");
    let t0 =
        chrono::DateTime::parse_from_rfc3339(week["points"][0]["time"].as_str().unwrap()).unwrap();
    assert_eq!(t0.timestamp() % 60, 0, "a point per whole minute: {week}");
    let (_, day) = call(
        &p,
        &admin,
        reqwest::Method::GET,
        &format!("/v1/apps/{app}/metrics?window=1d"),
        None,
        None,
    );
    assert_eq!(day["resolution_secs"], 10, "{day}");
    let (s, b) = call(
        &p,
        &admin,
        reqwest::Method::GET,
        &format!("/v1/apps/{app}/metrics?window=8d"),
        None,
        None,
    );
    assert_eq!((s, b["code"].as_str()), (400, Some("bad_request")), "{b}");
}
