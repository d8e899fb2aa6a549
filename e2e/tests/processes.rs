//! Process types end to end on the real engine (issue 3): a Procfile app with a `web` process
//! serving HTTP and a `worker` process printing a line every second. Web answers through the
//! router, the worker's lines reach the app's logs as `APP/worker/0`, the worker is never routed,
//! scaling the worker with `paas scale -p worker -i 2` gives two worker containers, and
//! `paas restart-instance NAME 1 --process worker` replaces only that worker.

use paas_e2e::{unique, wait_for, Platform};
use std::process::Command;
use std::time::Duration;

/// Containers of `app` running process type `process` on the platform's nodes.
fn containers(p: &Platform, app: &str, process: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for node in p.node_names() {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter"])
            .arg(format!("label=paas.node={node}"))
            .arg("--filter")
            .arg(format!("label=paas.app={app}"))
            .arg("--filter")
            .arg(format!("label=paas.process={process}"))
            .output()
            .expect("docker ps");
        ids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string),
        );
    }
    ids
}

/// The app's backends in the controller's route table (what every router sends traffic to).
fn backends(p: &Platform, app: &str) -> usize {
    let token = std::fs::read_to_string(p.data_dir().join("join-token")).expect("join token");
    let table: serde_json::Value = reqwest::blocking::Client::new()
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

#[test]
fn web_and_worker_run_side_by_side_and_only_web_is_routed() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.txt"), "served by web\n").unwrap();
    std::fs::write(
        dir.path().join("Procfile"),
        "web: exec python3 -m http.server \"$PORT\"\nworker: while true; do echo \"tick from worker $CF_INSTANCE_INDEX\"; sleep 1; done\n",
    )
    .unwrap();
    let app = unique("procs");
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}");

    // Web answers through the router, every time: the worker is never a backend.
    for _ in 0..6 {
        let (status, body) = p.get_app(&app, "/index.txt").unwrap();
        assert_eq!((status, body.trim()), (200, "served by web"));
    }

    // The app view lists both process types, each with its own instances.
    let d = wait_for(Duration::from_secs(60), "a running worker instance", || {
        let d = p.app_json(&app).ok()?;
        let running_worker = d["instances"]
            .as_array()?
            .iter()
            .any(|i| i["process_type"] == "worker" && i["state"] == "running");
        running_worker.then_some(d)
    })
    .unwrap();
    let types: Vec<&str> = d["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["web", "worker"]);
    assert_eq!(
        d["processes"][1]["health_check"], "process",
        "a worker gets a process check by default"
    );
    assert_eq!(
        backends(&p, &app),
        1,
        "the running worker is not in the route table"
    );

    // The worker's lines reach the logs under its own source.
    wait_for(
        Duration::from_secs(30),
        "worker lines as APP/worker/0",
        || {
            let out = p.cli(&["logs", &app, "--recent", "--source", "APP/worker"]);
            (out.ok()
                && out.stdout.contains("APP/worker/0")
                && out.stdout.contains("tick from worker"))
            .then_some(())
        },
    )
    .unwrap();
    let human = p.cli(&["app", &app]);
    assert!(
        human.stdout.contains("web: 1/1 running") && human.stdout.contains("worker: 1/1 running"),
        "{human:?}"
    );

    // Scaling the worker leaves web alone and gives two worker containers.
    let web_before = containers(&p, &app, "web");
    let out = p.cli(&["scale", &app, "-p", "worker", "-i", "2"]);
    assert!(
        out.ok()
            && out
                .stdout
                .contains("process worker scaled to 2 instance(s)"),
        "{out:?}"
    );
    wait_for(Duration::from_secs(60), "two worker containers", || {
        (containers(&p, &app, "worker").len() == 2).then_some(())
    })
    .unwrap();
    assert_eq!(
        containers(&p, &app, "web"),
        web_before,
        "scaling the worker does not touch web"
    );
    assert_eq!(
        backends(&p, &app),
        1,
        "three running instances, one of them web: only web is routed"
    );
    wait_for(Duration::from_secs(30), "lines from worker 1", || {
        let out = p.cli(&["logs", &app, "--recent", "--source", "APP/worker/1"]);
        out.stdout.contains("tick from worker 1").then_some(())
    })
    .unwrap();

    // Restarting worker 1 replaces that one worker: the other worker and web keep theirs.
    let workers_before = containers(&p, &app, "worker");
    let out = p.cli(&["restart-instance", &app, "1", "--process", "worker"]);
    assert!(
        out.ok() && out.stdout.contains("Restarting worker instance 1"),
        "{out:?}"
    );
    wait_for(Duration::from_secs(90), "worker 1 replaced", || {
        let now = containers(&p, &app, "worker");
        let kept = now.iter().filter(|c| workers_before.contains(c)).count();
        (now.len() == 2 && kept == 1).then_some(())
    })
    .unwrap();
    assert_eq!(
        containers(&p, &app, "web"),
        web_before,
        "restarting a worker does not touch web"
    );
    let out = p.cli(&["restart-instance", &app, "2", "--process", "worker"]);
    assert!(
        !out.ok() && out.stderr.contains("no worker instance 2"),
        "{out:?}"
    );
    let out = p.cli(&["restart-instance", &app, "0", "--process", "clock"]);
    assert!(
        !out.ok() && out.stderr.contains("no process \"clock\""),
        "{out:?}"
    );

    // An unknown process type is a clear error.
    let out = p.cli(&["scale", &app, "-p", "clock", "-i", "1"]);
    assert!(
        !out.ok() && out.stderr.contains("no process \"clock\""),
        "{out:?}"
    );
}

#[test]
fn a_manifest_process_gets_its_own_command_instances_and_memory() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    let app = unique("mproc");
    std::fs::write(dir.path().join("index.txt"), "web\n").unwrap();
    std::fs::write(
        dir.path().join("Procfile"),
        "web: exec python3 -m http.server \"$PORT\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("manifest.yml"),
        format!(
            "applications:\n- name: {app}\n  processes:\n  - type: clock\n    command: while true; do echo clock-tick; sleep 1; done\n    instances: 2\n    memory: 64M\n"
        ),
    )
    .unwrap();
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "{out:?}");
    let ids = wait_for(Duration::from_secs(60), "two clock containers", || {
        let ids = containers(&p, &app, "clock");
        (ids.len() == 2).then_some(ids)
    })
    .unwrap();
    for id in ids {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.HostConfig.Memory}}", &id])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            (64u64 << 20).to_string(),
            "the manifest's memory for the process"
        );
    }
    assert_eq!(containers(&p, &app, "web").len(), 1);
    let d = p.app_json(&app).unwrap();
    let clock = d["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type"] == "clock")
        .cloned()
        .unwrap();
    assert_eq!(
        (clock["instances"].as_u64(), clock["memory_mb"].as_u64()),
        (Some(2), Some(64))
    );
    wait_for(Duration::from_secs(30), "clock lines", || {
        p.cli(&["logs", &app, "--recent", "--source", "APP/clock"])
            .stdout
            .contains("clock-tick")
            .then_some(())
    })
    .unwrap();
}
