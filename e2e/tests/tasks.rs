//! One-off tasks and the release phase end to end on the real engine (issue 21): a task that
//! succeeds and one that fails with their exit codes and `TASK/<id>` output in the logs, a
//! terminated one whose container goes, a task on a node lost mid-run that ends FAILED `node lost`
//! and never runs again, and a push whose `release:` process fails (the old revision keeps
//! serving, no request fails) or passes (it runs before the new instances start), a controller
//! restart mid-task, and cron entries (on schedule, never two runs of one entry at once).

use paas_e2e::{unique, wait_for, Options, Platform, RequestLoop};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A Python web app that serves `index.txt`, with `procfile_extra` lines after its `web:`.
fn write_app(dir: &Path, body: &str, procfile_extra: &str) {
    std::fs::write(dir.join("index.txt"), body).unwrap();
    std::fs::write(dir.join("index.html"), body).unwrap();
    std::fs::write(
        dir.join("Procfile"),
        format!("web: exec python3 -m http.server \"$PORT\"\n{procfile_extra}"),
    )
    .unwrap();
}

fn tasks(p: &Platform, app: &str) -> Vec<Value> {
    let out = p.cli(&["tasks", app, "--json"]);
    assert!(out.ok(), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

/// Waits until task `id` of `app` is in `state`; returns it.
fn wait_task(p: &Platform, app: &str, id: u64, state: &str, secs: u64) -> Value {
    wait_for(
        Duration::from_secs(secs),
        &format!("task {id} of {app} to be {state}"),
        || {
            tasks(p, app)
                .into_iter()
                .find(|t| t["id"] == id && t["state"] == state)
        },
    )
    .map_err(|e| format!("{e}: {:?}\n{}", tasks(p, app), p.logs()))
    .unwrap()
}

fn run_task(p: &Platform, app: &str, command: &str) -> u64 {
    let out = p.cli(&["run-task", app, command, "--json"]);
    assert!(out.ok(), "{out:?}");
    let t: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(t["state"], "PENDING");
    t["id"].as_u64().unwrap()
}

/// The app's recent log lines of `source` (`TASK/3`).
fn log_lines(p: &Platform, app: &str, source: &str) -> String {
    let out = p.cli(&[
        "logs", app, "--recent", "--source", source, "--limit", "1000",
    ]);
    assert!(out.ok(), "{out:?}");
    out.stdout
}

/// Task containers of `app` on the engine (any node, any state).
fn task_containers(app: &str) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=paas.app={app}"))
        .args(["--filter", "label=paas.task"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .count()
}

fn event_kinds(p: &Platform, app: &str) -> Vec<(String, String)> {
    let out = p.cli(&["events", app, "--json"]);
    assert!(out.ok(), "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn tasks_succeed_fail_and_terminate() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1\n", "");
    let app = unique("tasks");
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}");
    let out = p.cli(&["set-env", &app, "GREETING", "hello-from-env"]);
    assert!(out.ok(), "{out:?}");

    // Succeeds: exit 0, its output (with the app's env) in the logs as TASK/<id>.
    // Output that its command line (repeated by the start line) does not contain.
    let ok = run_task(&p, &app, "echo \"task says $GREETING\"; ls /app");
    let t = wait_task(&p, &app, ok, "SUCCEEDED", 120);
    assert_eq!(t["exit_code"], 0);
    let source = format!("TASK/{ok}");
    wait_for(
        Duration::from_secs(30),
        "the task's output in the logs",
        || {
            let lines = log_lines(&p, &app, &source);
            (lines.contains("task says hello-from-env") && lines.contains("index.txt"))
                .then_some(())
        },
    )
    .unwrap();

    // Fails: exit 3, FAILED with the code.
    let bad = run_task(&p, &app, "echo about to fail; exit 3");
    let t = wait_task(&p, &app, bad, "FAILED", 120);
    assert_eq!(t["exit_code"], 3, "{t}");
    assert_eq!(t["reason"], "exited with code 3", "{t}");

    // Terminated while running: FAILED "terminated", and its container goes.
    let long = run_task(&p, &app, "echo sleeping; sleep 300");
    wait_task(&p, &app, long, "RUNNING", 120);
    let out = p.cli(&["terminate-task", &app, &long.to_string()]);
    assert!(out.ok(), "{out:?}");
    let t = wait_task(&p, &app, long, "FAILED", 10);
    assert_eq!(t["reason"], "terminated", "{t}");
    let out = p.cli(&["terminate-task", &app, &long.to_string()]);
    assert!(!out.ok() && out.stderr.contains("already ended"), "{out:?}");
    wait_for(Duration::from_secs(60), "no task container left", || {
        (task_containers(&app) == 0).then_some(())
    })
    .unwrap();

    let out = p.cli(&["terminate-task", &app, "99"]);
    assert!(
        !out.ok() && out.stderr.contains("task_not_found"),
        "{out:?}"
    );

    // The app page lists them with their states and exits.
    let (status, html) = p.dashboard_get(&format!("/apps/{app}")).unwrap();
    assert_eq!(status, 200);
    let table = html
        .split("id=\"tasks\"")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .unwrap_or_else(|| panic!("no task table on the app page:\n{html}"));
    for want in [
        "SUCCEEDED",
        "FAILED",
        "3: exited with code 3",
        "terminated",
        "sleep 300",
    ] {
        assert!(
            table.contains(want),
            "{want:?} not in the task table:\n{table}"
        );
    }

    let kinds = event_kinds(&p, &app);
    let count = |k: &str| kinds.iter().filter(|(kind, _)| kind == k).count();
    assert_eq!(count("task.create"), 3, "{kinds:?}");
    assert_eq!(count("task.succeeded"), 1, "{kinds:?}");
    assert_eq!(count("task.failed"), 2, "{kinds:?}");
    assert!(
        kinds
            .iter()
            .any(|(k, m)| k == "task.failed" && m.contains("terminated")),
        "{kinds:?}"
    );
}

#[test]
fn a_task_on_a_lost_node_fails_and_never_runs_twice() {
    let mut p = Platform::start_server(Options {
        node_grace_secs: 4,
        ..Default::default()
    })
    .expect("platform");
    let first = unique("tasks-node-a");
    let ia = p.start_agent(&first, "zone-a").unwrap();
    p.login().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1\n", "");
    let app = unique("tasks-lost");
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}");

    // Its output ("42-ran") is not in its command line, which the start line repeats.
    let id = run_task(&p, &app, "echo \"$((40 + 2))-ran\"; sleep 300");
    let t = wait_task(&p, &app, id, "RUNNING", 120);
    assert_eq!(t["node"], first.as_str());

    // The machine dies: its agent and every container.
    p.kill_agent(ia);
    p.remove_node_containers(&first);
    let t = wait_task(&p, &app, id, "FAILED", 60);
    assert_eq!(t["reason"], "node lost", "{t}");

    // A new node joins and the old one comes back: neither runs it again.
    let second = unique("tasks-node-b");
    p.start_agent(&second, "zone-a").unwrap();
    p.restart_agent(ia).unwrap();
    // A later task runs to its end, so the nodes have had their lists since.
    let next = run_task(&p, &app, "echo after");
    wait_task(&p, &app, next, "SUCCEEDED", 120);
    // Lines the killed agent had not shipped yet are lost with it; a second run, on a live
    // agent, would have shipped its own.
    let lines = log_lines(&p, &app, &format!("TASK/{id}"));
    assert!(
        lines.matches("Starting task").count() <= 1,
        "task {id} started more than once:\n{lines}"
    );
    assert!(
        lines.matches("42-ran").count() <= 1,
        "task {id} ran more than once:\n{lines}"
    );
    assert!(
        lines.contains("lost"),
        "the task's end is in its log:\n{lines}"
    );
    assert_eq!(
        tasks(&p, &app)
            .iter()
            .find(|t| t["id"] == id)
            .map(|t| t["state"].clone()),
        Some("FAILED".into())
    );
    assert!(event_kinds(&p, &app)
        .iter()
        .any(|(k, m)| k == "task.failed" && m.contains("node lost")));
}

#[test]
fn a_controller_restart_mid_task_loses_nothing_and_runs_nothing_twice() {
    let mut p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1\n", "");
    let app = unique("tasks-restart");
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}");
    let id = run_task(&p, &app, "echo once-only; sleep 6; exit 5");
    wait_task(&p, &app, id, "RUNNING", 120);
    // The task's state is in the store and the node reports it again: it ends as it would have.
    p.restart_server().unwrap();
    let t = wait_task(&p, &app, id, "FAILED", 60);
    assert_eq!(t["exit_code"], 5, "{t}");
    let lines = log_lines(&p, &app, &format!("TASK/{id}"));
    assert_eq!(lines.matches("Starting task").count(), 1, "{lines}");
    wait_for(Duration::from_secs(60), "no task container left", || {
        (task_containers(&app) == 0).then_some(())
    })
    .unwrap();
}

#[test]
fn a_failing_release_phase_keeps_the_old_revision_serving() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1\n", "");
    let app = unique("release");
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}");
    let (status, body) = p.get_app(&app, "/index.txt").unwrap();
    assert_eq!((status, body.trim()), (200, "v1"));

    // A release phase that fails: the push fails with its code, nothing else changes.
    write_app(
        dir.path(),
        "v2\n",
        "release: echo migrating the database; exit 7\n",
    );
    let requests = RequestLoop::start(p.addr, &app);
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    let seen = requests.stop();
    assert!(!out.ok(), "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("release_failed") && all.contains("exited with code 7"),
        "{out:?}"
    );
    assert!(all.contains("Release phase (task 1): FAILED"), "{out:?}");
    assert!(all.contains("migrating the database"), "{out:?}");
    assert!(
        seen.failed.is_empty() && seen.ok > 0,
        "requests failed during the failed deploy: {seen:?}"
    );
    let d = p.app_json(&app).unwrap();
    assert_eq!(d["revision"]["number"], 1, "{d}");
    let (status, body) = p.get_app(&app, "/index.txt").unwrap();
    assert_eq!((status, body.trim()), (200, "v1"));
    assert!(event_kinds(&p, &app)
        .iter()
        .any(|(k, m)| k == "app.release_failed" && m.contains("exited with code 7")));
    assert_eq!(tasks(&p, &app)[0]["kind"], "release");

    // A release phase that passes runs once, with the new env, before any new instance.
    write_app(
        dir.path(),
        "v3\n",
        "release: echo \"released revision $PAAS_APP_REVISION\"\n",
    );
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains("Release phase (task 2): SUCCEEDED"),
        "{out:?}"
    );
    // The old instance leaves the routes once the new one serves.
    wait_for(Duration::from_secs(30), "v3 to serve", || {
        let (status, body) = p.get_app(&app, "/index.txt").ok()?;
        (status == 200 && body.trim() == "v3").then_some(())
    })
    .unwrap();
    let kinds = event_kinds(&p, &app);
    let released = kinds
        .iter()
        .position(|(k, m)| k == "task.succeeded" && m.contains("task 2"))
        .unwrap_or_else(|| panic!("{kinds:?}"));
    let pushed = kinds
        .iter()
        .rposition(|(k, _)| k == "app.push")
        .unwrap_or_else(|| panic!("{kinds:?}"));
    let started = kinds
        .iter()
        .position(|(k, m)| k == "instance.create" && m.contains("revision 2"))
        .unwrap_or_else(|| panic!("{kinds:?}"));
    assert!(
        released < pushed && pushed < started,
        "the release phase must end before the revision and its instances: {kinds:?}"
    );
    assert!(log_lines(&p, &app, "TASK/2").contains("released revision 2"));
    // The release process never runs as instances.
    let d = p.app_json(&app).unwrap();
    assert!(
        d["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["type"] != "release"),
        "{d}"
    );
}

#[test]
fn cron_runs_on_schedule_and_never_twice_at_once() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1\n", "");
    // Dokku's app.json `cron` entries are added by the push.
    std::fs::write(
        dir.path().join("app.json"),
        r#"{"name": "x", "cron": [{"command": "echo yearly", "schedule": "@yearly"}]}"#,
    )
    .unwrap();
    let app = unique("cron");
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}");
    let listed: Value = serde_json::from_str(&p.cli(&["cron", &app, "--json"]).stdout).unwrap();
    assert_eq!(
        (
            &listed[0]["id"],
            &listed[0]["schedule"],
            &listed[0]["command"]
        ),
        (&1.into(), &"@yearly".into(), &"echo yearly".into()),
        "{listed}"
    );

    let out = p.cli(&["cron", &app, "add", "*/2 * * * * *", "echo cron-tick"]);
    assert!(out.ok(), "{out:?}");
    let out = p.cli(&["cron", &app, "add", "every day", "echo never"]);
    assert!(
        !out.ok() && out.stderr.contains("invalid schedule"),
        "{out:?}"
    );
    let runs = |name: &str, state: Option<&str>| {
        tasks(&p, &app)
            .into_iter()
            .filter(|t| t["kind"] == "cron" && t["name"] == name)
            .filter(|t| state.is_none_or(|s| t["state"] == s))
            .count()
    };
    wait_for(Duration::from_secs(90), "two cron runs to succeed", || {
        (runs("cron-2", Some("SUCCEEDED")) >= 2).then_some(())
    })
    .map_err(|e| format!("{e}: {:?}\n{}", tasks(&p, &app), p.logs()))
    .unwrap();
    let listed: Value = serde_json::from_str(&p.cli(&["cron", &app, "--json"]).stdout).unwrap();
    assert_eq!(listed[1]["schedule"], "*/2 * * * * *", "{listed}");
    assert!(listed[1]["last_run_at"].is_string(), "{listed}");
    assert!(listed[1]["next_run_at"].is_string(), "{listed}");
    let out = p.cli(&["cron", &app, "remove", "2"]);
    assert!(out.ok(), "{out:?}");
    assert!(log_lines(&p, &app, "TASK").contains("cron-tick"));

    // Every second, each run taking 4: a run still going is never started again.
    let out = p.cli(&["cron", &app, "add", "* * * * * *", "sleep 4"]);
    assert!(out.ok(), "{out:?}");
    wait_for(Duration::from_secs(90), "a long cron run to finish", || {
        let going = runs("cron-3", None) - runs("cron-3", Some("SUCCEEDED"));
        assert!(going <= 1, "two runs at once: {:?}", tasks(&p, &app));
        (runs("cron-3", Some("SUCCEEDED")) >= 1).then_some(())
    })
    .unwrap();
    let out = p.cli(&["cron", &app, "remove", "3"]);
    assert!(out.ok(), "{out:?}");
    // Nothing runs at the end (the teardown checks every node's reservations).
    wait_for(Duration::from_secs(60), "every cron run to end", || {
        let all = tasks(&p, &app);
        (all.iter()
            .all(|t| t["state"] == "SUCCEEDED" || t["state"] == "FAILED")
            && task_containers(&app) == 0)
            .then_some(())
    })
    .unwrap();
}
