//! Self-healing across several real agents on the one Docker engine: spread over zones, a dead
//! node's instances replaced elsewhere, agent and controller restarts that lose and duplicate
//! nothing, drain and rolling restarts with zero failed requests, crash backoff. Each agent only
//! touches containers labelled with its own node name, so the agents share the engine safely.

use paas_e2e::{example, unique, wait_for, Options, Platform, RequestLoop};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn push(p: &Platform, app: &str, args: &[&str]) {
    let dir = example("python-app");
    let mut all = vec!["push", app, "-p", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = p.cli(&all);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
}

fn instances(p: &Platform, app: &str) -> Vec<Value> {
    p.app_json(app)
        .map(|v| v["instances"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

/// Node name -> running instances of the app there, once exactly `n` instances exist and all run.
fn all_running(p: &Platform, app: &str, n: usize) -> Option<BTreeMap<String, usize>> {
    let list = instances(p, app);
    if list.len() != n || !list.iter().all(|i| i["state"] == "running") {
        return None;
    }
    let mut per_node = BTreeMap::new();
    for i in &list {
        *per_node.entry(i["node"].as_str()?.to_string()).or_insert(0) += 1;
    }
    Some(per_node)
}

fn containers(p: &Platform, app: &str) -> BTreeSet<String> {
    p.containers_of(app).into_iter().collect()
}

fn api_get(p: &Platform, path: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(format!("{}{path}", p.api_url()))
        .bearer_auth(p.admin_token().unwrap())
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn node_state(p: &Platform, name: &str) -> String {
    let v = api_get(p, "/v1/nodes");
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .map(|n| n["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn spread_over_zones_survives_agent_restart_and_node_loss() {
    let mut p = Platform::start_server(Options {
        node_grace_secs: 3,
        ..Options::default()
    })
    .expect("server");
    let a = unique("e2e-za");
    let b = unique("e2e-zb");
    let ia = p.start_agent(&a, "zone-a").unwrap();
    let ib = p.start_agent(&b, "zone-b").unwrap();
    p.login().unwrap();
    let app = unique("spread");
    push(&p, &app, &["-i", "4", "-m", "64M"]);

    let per_node = wait_for(Duration::from_secs(60), "4 running instances", || {
        all_running(&p, &app, 4)
    })
    .unwrap();
    assert_eq!(per_node.get(&a), Some(&2), "{per_node:?}");
    assert_eq!(per_node.get(&b), Some(&2), "{per_node:?}");

    // Agent restart: it re-adopts its containers (same ids), and the app keeps answering.
    let before = containers(&p, &app);
    assert_eq!(before.len(), 4);
    let requests = RequestLoop::start(p.addr, &app);
    p.restart_agent(ia).unwrap();
    // Wait until the new agent process has reported (a heartbeat after its registration).
    wait_for(
        Duration::from_secs(30),
        "the restarted agent to report its instances",
        || all_running(&p, &app, 4).filter(|m| m.get(&a) == Some(&2)),
    )
    .unwrap();
    let seen = requests.stop();
    assert!(
        seen.failed.is_empty(),
        "requests failed during the agent restart: {:?}",
        seen.failed
    );
    assert!(seen.ok > 0);
    assert_eq!(
        containers(&p, &app),
        before,
        "same containers, no duplicates, after the agent restart"
    );

    // Node loss: kill -9 the other agent and remove its containers, as when a machine dies.
    let requests = RequestLoop::start(p.addr, &app);
    p.kill_agent(ib);
    p.remove_node_containers(&b);
    let per_node = wait_for(
        Duration::from_secs(90),
        "4 instances running on the surviving node",
        || all_running(&p, &app, 4).filter(|m| m.get(&a) == Some(&4)),
    )
    .map_err(|e| format!("{e}: {:?}\n{}", instances(&p, &app), p.logs()))
    .unwrap();
    let seen = requests.stop();
    assert_eq!(per_node.len(), 1);
    assert_eq!(node_state(&p, &b), "lost");
    // The app answered throughout: at most the dead node's share of the round robin failed in a
    // row (2 of 4 backends, interleaved) until the node was declared lost.
    assert!(seen.ok > 0 && seen.longest_failed_run <= 2, "{seen:?}");
    assert_eq!(p.get_app(&app, "/").unwrap().0, 200);
    let events = api_get(&p, &format!("/v1/apps/{app}/events"));
    let text = events.to_string();
    assert!(
        text.contains("on lost node"),
        "the replacement is recorded with its reason: {text}"
    );
}

#[test]
fn controller_kill_and_restart_loses_and_duplicates_nothing() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    let node = unique("e2e-ctl");
    p.start_agent(&node, "zone-a").unwrap();
    p.login().unwrap();
    let app = unique("durable");
    push(&p, &app, &["-i", "2", "-m", "64M"]);
    wait_for(Duration::from_secs(60), "2 running instances", || {
        all_running(&p, &app, 2)
    })
    .unwrap();
    let before_containers = containers(&p, &app);
    let before_events = api_get(&p, &format!("/v1/apps/{app}/events"))["events"]
        .as_array()
        .unwrap()
        .clone();
    let before: Vec<(Value, Value, Value)> = instances(&p, &app)
        .iter()
        .map(|i| (i["index"].clone(), i["node"].clone(), i["address"].clone()))
        .collect();

    p.restart_server().unwrap();
    p.login().unwrap();
    let restarted_at = chrono::Utc::now();
    // The agent kept its instances running and reports them to the new controller.
    wait_for(
        Duration::from_secs(30),
        "the agent to heartbeat the new controller",
        || {
            let v = api_get(&p, "/v1/nodes");
            let hb: chrono::DateTime<chrono::Utc> =
                v["nodes"][0]["last_heartbeat"].as_str()?.parse().ok()?;
            (hb > restarted_at && v["nodes"][0]["state"] == "ready").then_some(())
        },
    )
    .unwrap();
    wait_for(Duration::from_secs(30), "2 running instances", || {
        all_running(&p, &app, 2)
    })
    .unwrap();
    let after: Vec<(Value, Value, Value)> = instances(&p, &app)
        .iter()
        .map(|i| (i["index"].clone(), i["node"].clone(), i["address"].clone()))
        .collect();
    assert_eq!(
        after, before,
        "the same instances, on the same node and port"
    );
    assert_eq!(
        containers(&p, &app),
        before_containers,
        "no container replaced or duplicated"
    );
    let (status, body) = p.get_app(&app, "/").unwrap();
    assert_eq!(status, 200, "the route survives: {body}");
    let after_events = api_get(&p, &format!("/v1/apps/{app}/events"))["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(after_events.len() >= before_events.len());
    assert_eq!(
        &after_events[..before_events.len()],
        &before_events[..],
        "no event lost"
    );
    let out = p.cli(&["apps"]);
    assert!(out.ok() && out.stdout.contains(&app), "{out:?}");
}

#[test]
fn drain_rolling_restart_scale_stop_start_without_failed_requests() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    let a = unique("e2e-da");
    let b = unique("e2e-db");
    p.start_agent(&a, "zone-a").unwrap();
    p.start_agent(&b, "zone-b").unwrap();
    p.login().unwrap();
    let app = unique("drain");
    push(&p, &app, &["-i", "2", "-m", "64M"]);
    let per_node = wait_for(Duration::from_secs(60), "2 running instances", || {
        all_running(&p, &app, 2)
    })
    .unwrap();
    assert_eq!(per_node.len(), 2, "one per zone: {per_node:?}");

    // Drain: every instance moves off the node, new one first; no request fails.
    let requests = RequestLoop::start(p.addr, &app);
    let out = p.cli(&["node", "drain", &a]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(90),
        "node drained with both instances on the other node",
        || {
            (node_state(&p, &a) == "drained").then_some(())?;
            all_running(&p, &app, 2).filter(|m| m.get(&b) == Some(&2))
        },
    )
    .unwrap();
    let seen = requests.stop();
    assert!(
        seen.failed.is_empty(),
        "failed requests during drain: {:?}",
        seen.failed
    );
    assert!(seen.ok > 0);
    let out = p.cli(&["nodes"]);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(&a) && l.contains("drained") && l.contains("zone-a")),
        "{out:?}"
    );

    // Rolling restart: every container replaced, one at a time, no request fails.
    let before = containers(&p, &app);
    let requests = RequestLoop::start(p.addr, &app);
    let out = p.cli(&["restart", &app, "--max-in-flight", "1"]);
    assert!(out.ok(), "{out:?}");
    wait_for(Duration::from_secs(90), "every instance replaced", || {
        let now = containers(&p, &app);
        (now.len() == 2 && now.is_disjoint(&before)).then_some(())?;
        all_running(&p, &app, 2)
    })
    .unwrap();
    let seen = requests.stop();
    assert!(
        seen.failed.is_empty(),
        "failed requests during the rolling restart: {:?}",
        seen.failed
    );

    // Scaling up starts one more and restarts nobody.
    let before = containers(&p, &app);
    let out = p.cli(&["scale", &app, "-i", "3"]);
    assert!(out.ok(), "{out:?}");
    wait_for(Duration::from_secs(60), "3 running instances", || {
        all_running(&p, &app, 3)
    })
    .unwrap();
    let now = containers(&p, &app);
    assert!(
        now.is_superset(&before) && now.len() == 3,
        "{before:?} -> {now:?}"
    );

    // Restarting one instance replaces only that one.
    let index1: Vec<Value> = instances(&p, &app);
    let out = p.cli(&["restart-instance", &app, "1"]);
    assert!(out.ok(), "{out:?}");
    wait_for(Duration::from_secs(60), "instance 1 replaced", || {
        let now = containers(&p, &app);
        (now.len() == 3 && now.difference(&before).count() == 2).then_some(())?;
        all_running(&p, &app, 3)
    })
    .map_err(|e| format!("{e}: {index1:?}"))
    .unwrap();
    let out = p.cli(&["restart-instance", &app, "7"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("instance_not_found") && out.stderr.trim().lines().count() == 1,
        "{out:?}"
    );

    // A memory and health check change is a rolling deploy: every container replaced, with the
    // new limit, and no request fails.
    let before = containers(&p, &app);
    let requests = RequestLoop::start(p.addr, &app);
    let out = p.cli(&[
        "scale",
        &app,
        "-m",
        "96M",
        "--health-check",
        "http",
        "--health-endpoint",
        "/env",
        "--json",
    ]);
    assert!(out.ok(), "{out:?}");
    let s: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (s["rolling"].clone(), s["memory_mb"].clone()),
        (Value::Bool(true), Value::from(96)),
        "{s}"
    );
    assert_eq!(
        s["health"]["check"],
        serde_json::json!({"type": "http", "endpoint": "/env"}),
        "{s}"
    );
    wait_for(
        Duration::from_secs(120),
        "every instance replaced with 96 MB",
        || {
            let now = containers(&p, &app);
            (now.len() == 3 && now.is_disjoint(&before)).then_some(())?;
            all_running(&p, &app, 3)
        },
    )
    .unwrap();
    let seen = requests.stop();
    assert!(
        seen.failed.is_empty(),
        "failed requests during the memory change: {:?}",
        seen.failed
    );
    for id in containers(&p, &app) {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", "{{.HostConfig.Memory}}", &id])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            (96u64 * 1024 * 1024).to_string()
        );
    }
    let out = p.cli(&["scale", &app, "--health-check", "http"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("bad_request") && out.stderr.trim().lines().count() == 1,
        "{out:?}"
    );

    // Stop: no instance, the route answers 503; start brings them back.
    let out = p.cli(&["stop", &app]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(60),
        "the containers to be removed",
        || p.containers_of(&app).is_empty().then_some(()),
    )
    .unwrap();
    let (status, body) = p.get_app(&app, "/").unwrap();
    assert_eq!(status, 503, "{body}");
    let out = p.cli(&["restart", &app]);
    assert!(out.stderr.contains("app_stopped"), "{out:?}");
    let out = p.cli(&["start", &app]);
    assert!(out.ok(), "{out:?}");
    wait_for(Duration::from_secs(60), "3 running instances again", || {
        all_running(&p, &app, 3)
    })
    .unwrap();
    assert_eq!(p.get_app(&app, "/").unwrap().0, 200);

    let events = api_get(&p, &format!("/v1/apps/{app}/events")).to_string();
    for kind in [
        "app.restart",
        "app.scale",
        "instance.restart",
        "app.stop",
        "app.start",
        "instance.remove",
        "instance.create",
    ] {
        assert!(events.contains(kind), "event {kind} missing: {events}");
    }
    assert!(events.contains("\"actor\":\"admin\""), "{events}");
}

#[test]
fn crashing_app_backs_off_and_its_counts_survive_an_agent_restart() {
    let mut p = Platform::start().expect("platform");
    let app = unique("crashy");
    let dir = example("python-app");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        dir.to_str().unwrap(),
        "-c",
        "echo boom; exit 3",
        "--timeout",
        "5",
    ]);
    assert_eq!(
        out.code, 1,
        "an app that never runs fails its push: {out:?}"
    );

    // Three immediate restarts, then the 30 s backoff: crashed with 3 restarts.
    let crashed = |p: &Platform| {
        let list = instances(p, &app);
        let i = list.first()?.clone();
        (i["state"] == "crashed" && i["restarts"] == 3 && i["last_exit"] == "exited with code 3")
            .then_some(i)
    };
    wait_for(Duration::from_secs(90), "3 restarts then backoff", || {
        crashed(&p)
    })
    .map_err(|e| format!("{e}: {:?}", instances(&p, &app)))
    .unwrap();
    // Every crash is one event with its exit reason and counts: 3 restarted, the 4th waiting.
    let crash_events = |p: &Platform| -> Vec<String> {
        api_get(p, &format!("/v1/apps/{app}/events"))["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "instance.crash")
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let crashes = wait_for(Duration::from_secs(10), "4 crash events", || {
        Some(crash_events(&p)).filter(|c| c.len() >= 4)
    })
    .map_err(|e| format!("{e}: {:?}", crash_events(&p)))
    .unwrap();
    assert_eq!(crashes.len(), 4, "one event per crash: {crashes:?}");
    for (n, m) in crashes.iter().enumerate() {
        assert!(
            m.starts_with("instance 0 crashed: exited with code 3")
                && m.contains(&format!("(crash {}, restarts: ", n + 1)),
            "{crashes:?}"
        );
    }
    assert!(
        crashes[3].ends_with("(crash 4, restarts: 3)"),
        "{crashes:?}"
    );
    let listed = p.cli(&["events", &app]).stdout;
    assert!(
        listed.contains("instance.crash") && listed.contains("node:"),
        "{listed}"
    );

    // The backoff is visible: it stays crashed with 3 restarts for a while (the next is 30 s away).
    for _ in 0..10 {
        assert!(crashed(&p).is_some(), "{:?}", instances(&p, &app));
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = p.cli(&["app", &app]).stdout;
    assert!(
        text.contains("crashed") && text.contains("exited with code 3"),
        "{text}"
    );

    // The agent restarts: it re-adopts the container and keeps counting from 3.
    let restarted_at = chrono::Utc::now();
    p.restart_agent(0).unwrap();
    let i = wait_for(
        Duration::from_secs(30),
        "the new agent to report the instance",
        || {
            let i = instances(&p, &app).first()?.clone();
            let since: chrono::DateTime<chrono::Utc> = i["since"].as_str()?.parse().ok()?;
            (since > restarted_at).then_some(i)
        },
    )
    .unwrap();
    assert!(
        i["restarts"].as_u64().unwrap() >= 3,
        "restart count kept: {i}"
    );
    assert_eq!(i["state"], "crashed", "still backing off: {i}");
    assert_eq!(p.containers_of(&app).len(), 1);
}
