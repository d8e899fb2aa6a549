//! A hostile tenant on the real engine: what it must not be able to do, and the limits that stop
//! what it tries. Each row of issue 7's sandbox checklist is an assertion here.

use paas_e2e::{unique, wait_for, Options, Platform};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn probe_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/probe-app")
        .display()
        .to_string()
}

fn probe(p: &Platform, app: &str, path: &str) -> serde_json::Value {
    let (status, body) = p
        .get_app(app, path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["result"].clone()
}

fn docker_inspect(id: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tenants_are_sandboxed() {
    let mut p = Platform::start_server(Options {
        server_env: vec![("PAAS_INSTANCE_PIDS_LIMIT".into(), "128".into())],
        ..Options::default()
    })
    .expect("server");
    p.start_agent(&unique("e2e-sandbox"), "zone-a").unwrap();
    p.login().unwrap();
    let a = unique("probe-a");
    let b = unique("probe-b");
    for app in [&a, &b] {
        let out = p.cli(&["push", app, "-p", &probe_dir(), "-m", "128M"]);
        assert!(out.ok(), "push {app}: {out:?}");
    }

    // Not root, no capabilities, read-only root, writable app dir.
    assert_eq!(probe(&p, &a, "/id"), 2000);
    assert_eq!(probe(&p, &a, "/capeff"), "0000000000000000");
    let w = probe(&p, &a, "/write-root");
    assert!(w.as_str().unwrap().starts_with("denied"), "{w}");
    assert_eq!(probe(&p, &a, "/write-app"), "wrote");

    // The engine-level settings behind them.
    let ca = p.containers_of(&a)[0].clone();
    assert_eq!(
        docker_inspect(
            &ca,
            "{{.HostConfig.Privileged}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Init}}"
        ),
        "false true true"
    );
    assert_eq!(
        docker_inspect(&ca, "{{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}}"),
        "[ALL] [no-new-privileges]"
    );
    assert_eq!(
        docker_inspect(&ca, "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}"),
        format!("{0} {0}", 128 * 1024 * 1024)
    );
    assert_eq!(docker_inspect(&ca, "{{.HostConfig.PidsLimit}}"), "128");
    assert_eq!(
        docker_inspect(
            &ca,
            "{{.HostConfig.NetworkMode}} {{.HostConfig.PidMode}}{{.HostConfig.IpcMode}}"
        )
        .split(' ')
        .next(),
        Some("paas-sandbox")
    );
    // The app's volume, and one bind mount: the instance's own identity credentials folder,
    // read-only (issue 25). Nothing else of the host.
    let mut mounts: Vec<String> = docker_inspect(
        &ca,
        "{{range .Mounts}}{{.Type}}:{{.Destination}}:{{.RW}} {{end}}",
    )
    .split_whitespace()
    .map(str::to_string)
    .collect();
    mounts.sort();
    assert_eq!(
        mounts,
        [
            "bind:/etc/cf-instance-credentials:false",
            "volume:/app:true"
        ],
        "no other bind mounts"
    );

    // Another tenant's container is not reachable directly: not on the shared network (no
    // inter-container traffic), not through its published port via the host's bridge address.
    let cb = p.containers_of(&b)[0].clone();
    let ip_b = docker_inspect(
        &cb,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    assert!(!ip_b.is_empty());
    let r = probe(&p, &a, &format!("/connect?addr={ip_b}:8080"));
    assert!(
        r.as_str().unwrap().starts_with("failed"),
        "reached the neighbour directly: {r}"
    );
    let gateway = docker_inspect(
        &cb,
        "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
    );
    let host_port = docker_inspect(
        &cb,
        "{{(index (index .NetworkSettings.Ports \"8080/tcp\") 0).HostPort}}",
    );
    let r = probe(&p, &a, &format!("/connect?addr={gateway}:{host_port}"));
    assert!(
        r.as_str().unwrap().starts_with("failed"),
        "reached the neighbour via the host: {r}"
    );

    // A fork bomb hits the pids limit; the node and the neighbour stay responsive.
    let bomb = probe(&p, &a, "/forkbomb");
    let forked = bomb["forked"].as_u64().unwrap();
    assert!(forked < 128, "pids limit not enforced: {bomb}");
    assert!(!bomb["error"].is_null(), "{bomb}");
    assert_eq!(p.get_app(&b, "/").unwrap().0, 200);
    assert!(p.cli(&["apps"]).ok());

    // Allocating twice the memory limit gets the instance OOM-killed, reported as such and
    // restarted; the neighbour is untouched.
    let _ = p.get_app(&a, "/alloc?mb=256");
    let v = wait_for(
        Duration::from_secs(60),
        "the OOM kill to be reported",
        || {
            let v = p.app_json(&a).ok()?;
            let i = &v["instances"][0];
            (i["restarts"].as_u64()? >= 1 && i["last_exit"].as_str()?.contains("OOM")).then_some(v)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", p.app_json(&a)));
    assert!(v["instances"][0]["last_exit"]
        .as_str()
        .unwrap()
        .contains("OOM"));
    wait_for(
        Duration::from_secs(60),
        "the OOM-killed instance to run again",
        || (p.get_app(&a, "/id").ok()?.0 == 200).then_some(()),
    )
    .unwrap();
    let vb = p.app_json(&b).unwrap();
    assert_eq!(
        vb["instances"][0]["restarts"], 0,
        "neighbour was touched: {vb}"
    );
    assert_eq!(vb["instances"][0]["state"], "running");
    let logs = p.cli(&["logs", &a, "--recent", "--limit", "200"]).stdout;
    assert!(
        logs.contains("[CELL]") && logs.contains("OOM"),
        "the crash is in the app's log: {logs}"
    );
}
