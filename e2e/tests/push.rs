//! The spine: push an example with the real CLI to a real server and agent on the real Docker
//! engine, reach it through the router, read its logs, delete it. Plus the bad inputs of that path.

use paas_e2e::{example, unique, wait_for, zip_of, Options, Platform};
use std::time::Duration;

#[test]
fn push_serve_logs_delete() {
    let p = Platform::start().expect("platform");
    let app = unique("hello");

    let out = p.cli(&["push", &app, "-p", example("python-app").to_str().unwrap()]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    let url = format!("http://{app}.localhost:{}", p.addr.port());
    assert!(
        out.stdout.contains(&format!("{app} is running at {url}")),
        "{out:?}"
    );

    let (status, body) = p.get_app(&app, "/").expect("GET through the router");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Hello from paas"), "{body}");

    let v = p.app_json(&app).unwrap();
    assert_eq!(v["name"], app.as_str());
    assert_eq!(v["state"], "started");
    let inst = &v["instances"][0];
    assert_eq!(inst["index"], 0);
    assert_eq!(inst["state"], "running");
    assert_eq!(inst["node"], p.node_names()[0].as_str());

    // What the app printed reaches `logs --recent` (its startup line and the request above).
    wait_for(
        Duration::from_secs(15),
        "the app's output in logs --recent",
        || {
            let out = p.cli(&["logs", &app, "--recent"]);
            (out.ok()
                && out.stdout.contains("hello-app listening on port 8080")
                && out.stdout.contains("\"GET / HTTP/1.1\" 200"))
            .then_some(())
        },
    )
    .unwrap();
    let logs = p.cli(&["logs", &app, "--recent"]).stdout;
    assert!(logs.contains("[APP/web/0]"), "{logs}");
    assert!(logs.contains("[STG]"), "{logs}");

    let containers = p.containers_of(&app);
    assert_eq!(containers.len(), 1, "one container for one instance");

    let out = p.cli(&["delete", &app, "-f"]);
    assert!(out.ok(), "{out:?}");
    let (status, body) = p.get_app(&app, "/").unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("route_not_found"), "{body}");
    wait_for(
        Duration::from_secs(30),
        "the app's container to be removed",
        || p.containers_of(&app).is_empty().then_some(()),
    )
    .unwrap();
    let out = p.cli(&["app", &app]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("app_not_found"), "{out:?}");
}

#[test]
fn procfile_app_with_two_instances() {
    let p = Platform::start().expect("platform");
    let app = unique("procfile");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        example("procfile-app").to_str().unwrap(),
        "-i",
        "2",
        "-m",
        "128M",
    ]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["instances"].as_array().unwrap().len(), 2);
    assert_eq!(v["memory_mb"], 128);
    for _ in 0..4 {
        let (status, body) = p.get_app(&app, "/").unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("Served by a Procfile app"), "{body}");
    }
    assert_eq!(p.containers_of(&app).len(), 2);
}

#[test]
fn bad_input_gets_clear_errors() {
    let p = Platform::start().expect("platform");

    // A folder that is not an app.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "just docs").unwrap();
    let out = p.cli(&[
        "push",
        &unique("notapp"),
        "-p",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");
    assert!(
        out.stderr.contains("not an app") && out.stderr.contains("(not_an_app)"),
        "{out:?}"
    );

    // Wrong password.
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(paas_e2e::bin("paas"))
        .args(["login", &p.api_url(), "-u", "admin", "-p", "wrong-password"])
        .env("PAAS_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("wrong username or password") && err.contains("invalid_credentials"),
        "{err}"
    );

    // Unknown app.
    let out = p.cli(&["app", "no-such-app"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("(app_not_found)"), "{out:?}");

    // Hostile archives straight at the API: each refused with 400 and a stable code, nothing stored.
    let token = p.admin_token().unwrap();
    let client = reqwest::blocking::Client::new();
    let push = |app: &str, zip: Vec<u8>| {
        let form = reqwest::blocking::multipart::Form::new().part(
            "archive",
            reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
        );
        let res = client
            .post(format!("{}/v1/apps/{app}/push", p.api_url()))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json::<serde_json::Value>().unwrap())
    };
    let (status, body) = push(
        "slip",
        zip_of(&[
            ("app.py", b"print(1)", 0o644),
            ("../../evil.py", b"x", 0o644),
        ]),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_archive");
    let (status, body) = push("abs", zip_of(&[("/etc/cron.d/evil", b"x", 0o644)]));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_archive");
    let (status, body) = push("garbage", b"not a zip".to_vec());
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_archive");
    for app in ["slip", "abs", "garbage"] {
        let out = p.cli(&["app", app]);
        assert!(
            out.stderr.contains("app_not_found"),
            "a refused push must not create {app}: {out:?}"
        );
    }
    // Without a token, the API refuses.
    let res = client
        .get(format!("{}/v1/apps", p.api_url()))
        .send()
        .unwrap();
    assert_eq!(res.status().as_u16(), 401);
    assert_eq!(
        res.json::<serde_json::Value>().unwrap()["code"],
        "unauthorized"
    );
}

#[test]
fn dead_agent_at_push_time_means_no_node_available() {
    let mut p = Platform::start_server(Options {
        node_grace_secs: 2,
        ..Options::default()
    })
    .expect("server");
    let idx = p.start_agent(&unique("e2e-dead"), "zone-a").unwrap();
    p.login().unwrap();
    p.kill_agent(idx);
    let token = p.admin_token().unwrap();
    wait_for(
        Duration::from_secs(20),
        "the killed node to be marked lost",
        || {
            let v: serde_json::Value = reqwest::blocking::Client::new()
                .get(format!("{}/v1/nodes", p.api_url()))
                .bearer_auth(&token)
                .send()
                .ok()?
                .json()
                .ok()?;
            (v["nodes"][0]["state"] == "lost").then_some(())
        },
    )
    .unwrap();
    let app = unique("nonode");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        example("python-app").to_str().unwrap(),
        "--timeout",
        "3",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("no node is available"), "{out:?}");
    // The push itself was kept: the app and its revision exist and wait for a node.
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["number"], 1);
    assert_eq!(v["instances"][0]["state"], "pending");
}
