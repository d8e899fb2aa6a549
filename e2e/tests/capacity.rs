//! Issue 17: nodes offer what they have, and a push that no node can hold says so at once.
//! An agent without capacity settings advertises the machine's memory (less a reserve) and the
//! free disk of the engine's data root; a push asking more memory than any node has ends with
//! `no_node_available` and a reason naming memory, without waiting for its start timeout; a build
//! no node can take waits, saying why, and starts when a node that fits joins.

use paas_e2e::{bin, example, unique, wait_for, Options, Platform};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn node(p: &Platform, name: &str) -> Value {
    let out = p.cli(&["nodes", "--json"]);
    assert!(out.ok(), "{out:?}");
    let nodes: Vec<Value> = serde_json::from_str(&out.stdout).expect("nodes JSON");
    nodes
        .into_iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("node {name} listed: {}", out.stdout))
}

/// `df`'s available megabytes of the file system holding `path`.
fn df_available_mb(path: &Path) -> u64 {
    let out = Command::new("df")
        .arg("-Pm")
        .arg(path)
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("df output: {text}"))
}

/// The engine's data root, as the agent reads it.
fn docker_root() -> Option<PathBuf> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.DockerRootDir}}"])
        .output()
        .ok()?;
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    root.is_dir().then_some(root)
}

#[test]
fn a_node_without_settings_offers_the_machine_s_memory_and_the_engine_s_free_disk() {
    let p = Platform::start().expect("platform");
    let name = p.node_names()[0].clone();
    let n = node(&p, &name);
    let memory = n["memory_mb"].as_u64().expect("memory_mb");
    assert!(memory > 1024, "memory offered: {n}");
    let disk = n["disk_mb"].as_u64().expect("disk_mb");
    // The engine's root when this machine sees it, else the agent's data dir (as the agent does).
    let at = docker_root().unwrap_or_else(|| p.dir.path().to_path_buf());
    let free = df_available_mb(&at);
    // Other work on the machine writes meanwhile: close, not equal.
    let tolerance = (free / 20).max(2048);
    assert!(
        disk.abs_diff(free) <= tolerance,
        "disk offered {disk} MB, df of {} says {free} MB available",
        at.display()
    );
    assert_eq!(n["instance_slots"], 250, "{n}");
}

#[test]
fn a_push_larger_than_any_node_fails_at_once_naming_memory() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    let small = unique("e2e-small");
    p.start_agent_with(&small, "zone-a", &[("PAAS_NODE_MEMORY_MB", "1536")])
        .unwrap();
    p.login().unwrap();
    assert_eq!(
        node(&p, &small)["memory_mb"],
        1536,
        "explicit capacity wins"
    );
    let app = unique("toobig");
    let dir = example("python-app");
    let push = || {
        p.cli(&[
            "push",
            &app,
            "-p",
            dir.to_str().unwrap(),
            "-m",
            "2G",
            "--timeout",
            "120",
        ])
    };
    let out = push();
    assert_eq!(out.code, 1, "{out:?}{}", p.logs());
    assert_eq!(out.stderr.lines().count(), 1, "one error line: {out:?}");
    assert!(
        out.stderr.contains("(no_node_available)")
            && out.stderr.contains("needs 2048 MB of memory")
            && out.stderr.contains("1536 MB"),
        "the reason names memory and what would fit: {out:?}"
    );
    assert!(
        out.stdout.contains("Revision 1 is current")
            && out.stdout.contains("web #0: pending: no node is available"),
        "{out:?}"
    );
    let v = p.app_json(&app).unwrap();
    let reason = v["instances"][0]["placement_error"].as_str().unwrap_or("");
    assert!(reason.contains("memory"), "{v}");

    // Again with the same files: no staging, so the whole push is the placement's answer.
    let started = Instant::now();
    let out = push();
    let took = started.elapsed();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("needs 2048 MB of memory"), "{out:?}");
    assert!(
        took < Duration::from_secs(15),
        "failed after {took:?}, not at once: {out:?}"
    );

    let out = p.cli(&["delete", &app, "-f"]);
    assert!(out.ok(), "{out:?}");
}

#[test]
fn a_build_waits_for_a_node_that_fits_and_starts_when_one_joins() {
    let mut p = Platform::start().expect("platform");
    let app = unique("gpuapp");
    let dir = example("python-app");
    // The push runs beside the test, as a user's would while an operator adds the node.
    let home = tempfile::tempdir().unwrap();
    let push = Command::new(bin("paas"))
        .args(["push", &app, "-p", dir.to_str().unwrap()])
        .args(["--placement", "gpu=yes", "--timeout", "120"])
        .env("PAAS_HOME", home.path())
        .env("PAAS_API", p.api_url())
        .env("PAAS_TOKEN", p.admin_token().unwrap())
        .env_remove("PAAS_SPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run paas push");
    let waiting =
        "Waiting for a node to stage on: no node is available with the placement labels gpu=yes";
    wait_for(
        Duration::from_secs(60),
        "the build to wait for a gpu node",
        || {
            let out = p.cli(&["logs", &app, "--recent", "--source", "STG"]);
            out.stdout.contains(waiting).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));

    let gpu = unique("e2e-gpu");
    p.start_agent_with(&gpu, "zone-b", &[("PAAS_NODE_LABELS", "gpu=yes")])
        .unwrap();
    let out = push.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}{}", p.logs());
    assert!(stdout.contains(&format!("[STG] {waiting}")), "{stdout}");
    assert!(
        stdout.contains(&format!("[STG] Node {gpu} fits now"))
            && stdout.contains(&format!("[STG] Staging on node {gpu}"))
            && stdout.contains(&format!("web #0: running on {gpu}"))
            && stdout.contains(&format!("{app} is running at")),
        "{stdout}"
    );
    let out = p.cli(&["delete", &app, "-f"]);
    assert!(out.ok(), "{out:?}");
}
