//! Canary and blue-green deployments, instance targeting and sticky sessions end to end on the
//! real engine (issue 23): a canary answering 500 on half its requests is rolled back by itself
//! while a client keeps sending requests, with no failure among those the old revision served
//! and the event naming the threshold; a healthy canary reaches 100 %; a blue-green switch fails
//! no request; the `__VCAP_ID__` cookie and `X-Cf-App-Instance` pick the instance.

use paas_e2e::{example, unique, wait_for, Platform, RequestLoop};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The python example app in a folder of its own, with a manifest giving its greeting and the
/// share of requests it fails.
fn write_app(dir: &Path, name: &str, greeting: &str, fail_percent: u32, instances: u32) {
    std::fs::copy(example("python-app").join("app.py"), dir.join("app.py")).unwrap();
    std::fs::write(
        dir.join("manifest.yml"),
        format!(
            "applications:\n- name: {name}\n  instances: {instances}\n  memory: 64M\n  env:\n    GREETING: {greeting}\n    FAIL_PERCENT: \"{fail_percent}\"\n"
        ),
    )
    .unwrap();
}

fn push(p: &Platform, dir: &Path, extra: &[&str]) {
    let mut args = vec!["push", "-p", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = p.cli_in(&args, Some(dir));
    assert!(out.ok(), "{out:?}");
}

fn deployment(p: &Platform, app: &str) -> Value {
    let out = p.cli(&["deployment", app, "--json"]);
    assert!(out.ok(), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

fn wait_state(p: &Platform, app: &str, state: &str, secs: u64) -> Value {
    wait_for(
        Duration::from_secs(secs),
        &format!("the deployment of {app} to be {state}"),
        || {
            let d = deployment(p, app);
            let ended = ["promoted", "rolled_back", "cancelled"].contains(&d["state"].as_str()?);
            assert!(d["state"] == state || !ended, "ended otherwise: {d}");
            (d["state"] == state).then_some(d)
        },
    )
    .unwrap()
}

/// Waits until every instance of the app runs `revision` and the app answers `greeting`.
fn wait_serving(p: &Platform, app: &str, revision: i64, greeting: &str) {
    wait_for(
        Duration::from_secs(60),
        &format!("{app} to run only revision {revision}"),
        || {
            let a = p.app_json(app).ok()?;
            let all = a["instances"]
                .as_array()?
                .iter()
                .all(|i| i["revision"] == revision && i["state"] == "running");
            (all && a["revision"]["number"] == revision).then_some(())
        },
    )
    .unwrap();
    let (status, body) = p.get_app(app, "/").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(greeting), "{body}");
}

fn events(p: &Platform, app: &str) -> Vec<(String, String)> {
    let out = p.cli(&["events", app, "--json"]);
    assert!(out.ok(), "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v.as_array()
        .or_else(|| v["events"].as_array())
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_failing_canary_is_rolled_back_by_itself_while_the_old_revision_serves() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    let app = unique("canary-bad");
    write_app(dir.path(), &app, "v1", 0, 1);
    push(&p, dir.path(), &[]);
    let requests = RequestLoop::start(p.addr, &app);

    write_app(dir.path(), &app, "v2", 50, 1);
    push(
        &p,
        dir.path(),
        &[
            "--strategy",
            "canary",
            "--steps",
            "25,100",
            "--step-wait",
            "5m",
            "--min-requests",
            "20",
            "--max-error-rate",
            "5%",
        ],
    );
    let d = wait_state(&p, &app, "rolled_back", 120);
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("error rate") && reason.contains("max-error-rate 5%"),
        "{d}"
    );
    wait_serving(&p, &app, 1, "v1");
    let seen = requests.stop();
    assert!(seen.ok > 50, "{seen:?}");
    // Only the canary failed requests: every failure is revision 2's own 500.
    let not_canary: Vec<&String> = seen
        .failed
        .iter()
        .filter(|f| !f.contains("v2: failing on purpose"))
        .collect();
    assert!(not_canary.is_empty(), "{not_canary:?}");
    assert!(
        !seen.failed.is_empty(),
        "the canary served some requests before it was judged"
    );
    assert!(
        events(&p, &app)
            .iter()
            .any(|(k, m)| k == "deployment.rollback" && m.contains("max-error-rate 5%")),
        "{:?}",
        events(&p, &app)
    );
    // The log says which number crossed which threshold.
    let out = p.cli(&["logs", &app, "--recent", "--source", "API"]);
    assert!(out.stdout.contains("rolled back to revision 1"), "{out:?}");
}

#[test]
fn a_healthy_canary_reaches_all_requests_and_a_bluegreen_switch_fails_none() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    let app = unique("canary-ok");
    write_app(dir.path(), &app, "v1", 0, 2);
    push(&p, dir.path(), &[]);
    let requests = RequestLoop::start(p.addr, &app);

    write_app(dir.path(), &app, "v2", 0, 2);
    push(
        &p,
        dir.path(),
        &[
            "--strategy",
            "canary",
            "--steps",
            "20,50,100",
            "--step-wait",
            "2s",
            "--min-requests",
            "5",
        ],
    );
    // While it runs, the comparison is live.
    let live = wait_for(Duration::from_secs(60), "a step with traffic", || {
        let d = deployment(&p, &app);
        (d["state"] == "promoted" || d["new"]["requests"].as_u64().unwrap_or(0) > 0).then_some(d)
    })
    .unwrap();
    assert!(
        live["state"] == "promoted" || live["weight"].as_u64().unwrap_or(0) > 0,
        "{live}"
    );
    let d = wait_state(&p, &app, "promoted", 120);
    assert_eq!(d["new_revision"], 2, "{d}");
    wait_serving(&p, &app, 2, "v2");
    let human = p.cli(&["deployment", &app]);
    assert!(human.stdout.contains("promoted"), "{human:?}");

    // Blue-green: the whole new set, then every request at once; the old set stays warm.
    write_app(dir.path(), &app, "v3", 0, 2);
    push(
        &p,
        dir.path(),
        &["--strategy", "bluegreen", "--grace", "3s"],
    );
    let d = wait_state(&p, &app, "promoted", 120);
    assert_eq!(d["strategy"]["kind"], "bluegreen", "{d}");
    wait_serving(&p, &app, 3, "v3");

    // A step wait of `pause` waits for `deployment continue` (the next step is 100: promoted).
    write_app(dir.path(), &app, "v4", 0, 2);
    push(
        &p,
        dir.path(),
        &[
            "--strategy",
            "canary",
            "--steps",
            "50,100",
            "--step-wait",
            "pause",
        ],
    );
    let d = wait_state(&p, &app, "paused", 60);
    assert_eq!(d["weight"], 50, "{d}");
    let out = p.cli(&["deployment", "continue", &app, "--json"]);
    assert!(out.ok(), "{out:?}");
    let d: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(d["state"], "promoted", "{d}");
    wait_serving(&p, &app, 4, "v4");

    // Cancel within a blue-green grace switches back to the old set, which never stopped.
    write_app(dir.path(), &app, "v5", 0, 2);
    push(
        &p,
        dir.path(),
        &["--strategy", "bluegreen", "--grace", "10m"],
    );
    wait_for(Duration::from_secs(60), "the switch to revision 5", || {
        (deployment(&p, &app)["weight"] == 100).then_some(())
    })
    .unwrap();
    let (_, body) = p.get_app(&app, "/").unwrap();
    assert!(body.contains("v5"), "{body}");
    let out = p.cli(&["deployment", "cancel", &app]);
    assert!(out.ok() && out.stdout.contains("cancelled"), "{out:?}");
    wait_serving(&p, &app, 4, "v4");
    // Nothing left to continue.
    let out = p.cli(&["deployment", "continue", &app]);
    assert!(
        !out.ok() && out.stderr.contains("deployment_not_found"),
        "{out:?}"
    );

    let seen = requests.stop();
    assert!(seen.ok > 50, "{seen:?}");
    assert!(seen.failed.is_empty(), "{seen:?}");
    assert!(events(&p, &app)
        .iter()
        .any(|(k, _)| k == "deployment.promote"));
}

#[test]
fn sticky_sessions_and_x_cf_app_instance_pick_the_instance() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    let app = unique("sticky");
    write_app(dir.path(), &app, "v1", 0, 2);
    push(&p, dir.path(), &[]);
    let host = format!("{app}.localhost");
    let client = reqwest::blocking::Client::builder()
        .resolve(&host, p.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = |path: &str| format!("http://{host}:{}{path}", p.addr.port());
    let env = |h: Option<(&str, String)>| -> (u16, Value, String) {
        let mut rb = client.get(url("/env"));
        if let Some((k, v)) = h {
            rb = rb.header(k, v);
        }
        let res = rb.send().unwrap();
        let status = res.status().as_u16();
        let instance = res
            .headers()
            .get("x-paas-instance")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = res.text().unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
            instance,
        )
    };
    // Both instances answer, round-robin.
    let (_, first, _) = env(None);
    let app_id = first["app_id"].as_str().unwrap().to_string();

    // X-Cf-App-Instance: APP_GUID:INDEX pins the instance; another app's guid is refused.
    for index in [0, 1, 1, 0] {
        let (status, body, header) = env(Some(("X-Cf-App-Instance", format!("{app_id}:{index}"))));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["instance"], index.to_string(), "{body}");
        assert_eq!(header, index.to_string());
    }
    let (status, body, _) = env(Some(("X-Cf-App-Instance", "not-this-app:0".into())));
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = env(Some(("X-Cf-App-Instance", format!("{app_id}:7"))));
    assert_eq!(status, 404);

    // A response starting a session gets the instance's __VCAP_ID__ cookie beside it.
    let res = client.get(url("/session")).send().unwrap();
    let cookies: Vec<String> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    let index = res.headers()["x-paas-instance"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        cookies.iter().any(|c| c.starts_with("JSESSIONID=")),
        "{cookies:?}"
    );
    let vcap = cookies
        .iter()
        .find_map(|c| c.strip_prefix("__VCAP_ID__="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no __VCAP_ID__ in {cookies:?}"))
        .to_string();
    // Requests carrying it all go to that instance (the app sees its own instance guid).
    for _ in 0..6 {
        let (status, body, header) = env(Some((
            "Cookie",
            format!("JSESSIONID=s-{index}; __VCAP_ID__={vcap}"),
        )));
        assert_eq!(status, 200);
        assert_eq!(header, index, "{body}");
        assert_eq!(body["instance_guid"], vcap.as_str(), "{body}");
    }
    // A cookie naming an instance that is not routed falls back to any instance.
    let (status, _, _) = env(Some(("Cookie", "__VCAP_ID__=gone".into())));
    assert_eq!(status, 200);
}
