//! Sidecars (issue 25) with the real CLI, platform and Docker: a manifest's sidecar runs beside
//! the web process in its own sandboxed container sharing the instance's network namespace (the
//! web process answers through the router with what it fetched from the sidecar on
//! `127.0.0.1`), its lines carry their own source, its memory is carved out of the instance's,
//! it restarts on its own after a crash and with its instance on `paas restart`, and it goes
//! with the app on stop and delete. Manifests whose sidecars do not fit are refused before
//! anything changes.

use paas_e2e::{docker_inspect, unique, wait_for, Platform};
use std::path::Path;
use std::time::Duration;

/// The web process: answers `/` with what the sidecar says on `127.0.0.1:SIDECAR_PORT`.
const WEB: &str = r#"
import os, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:9099/", timeout=5) as r:
                body = b"via sidecar: " + r.read()
            code = 200
        except Exception as e:
            body, code = ("no sidecar: %s" % e).encode(), 502
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

print("web listening", flush=True)
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// The sidecar: listens on loopback only, so only its instance's own processes reach it.
const SIDECAR: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from %s" % os.environ.get("CF_SIDECAR_NAME")).encode()
        print("sidecar served a request", flush=True)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

print("sidecar listening on 127.0.0.1:9099", flush=True)
HTTPServer(("127.0.0.1", 9099), H).serve_forever()
"#;

fn write_app(dir: &Path, manifest: &str) {
    std::fs::write(dir.join("app.py"), WEB).unwrap();
    std::fs::write(dir.join("sidecar.py"), SIDECAR).unwrap();
    std::fs::write(dir.join("manifest.yml"), manifest).unwrap();
}

fn manifest(app: &str, memory: &str, sidecar_memory: &str, types: &str) -> String {
    format!(
        "applications:
- name: {app}
  memory: {memory}
  command: python3 app.py
  sidecars:
  - name: helper
    process_types: [{types}]
    command: python3 sidecar.py
    memory: {sidecar_memory}
"
    )
}

fn serves_via_sidecar(p: &Platform, app: &str) -> String {
    wait_for(
        Duration::from_secs(60),
        "the app to answer through its sidecar",
        || {
            let (s, b) = p.get_app(app, "/").ok()?;
            (s == 200).then_some(b)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()))
}

/// The one running sidecar container of the app, once it runs.
fn running_sidecar(p: &Platform, app: &str) -> String {
    wait_for(Duration::from_secs(60), "one running sidecar", || {
        let ids = p.app_containers(app, true);
        match ids.as_slice() {
            [id] if docker_inspect(id, "{{.State.Running}}") == "true" => Some(id.clone()),
            _ => None,
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()))
}

fn recent_logs(p: &Platform, app: &str) -> String {
    let out = p.cli(&["logs", app, "--recent"]);
    assert!(out.ok(), "{out:?}");
    out.stdout
}

#[test]
fn a_sidecar_shares_localhost_logs_as_itself_and_counts_in_memory() {
    let mut p = Platform::start().expect("platform");
    let app = unique("sidecar");
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), &manifest(&app, "192M", "64M", "web"));
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push: {out:?}{}", p.logs());

    // Shared localhost: the web process reaches the loopback-only sidecar.
    let body = serves_via_sidecar(&p, &app);
    assert_eq!(body, "via sidecar: hello from helper");

    // The revision carries the sidecar; `paas app` shows it.
    let v = p.app_json(&app).unwrap();
    let sc = &v["revision"]["sidecars"][0];
    assert_eq!(sc["name"], "helper", "{v}");
    assert_eq!(sc["process_types"][0], "web", "{v}");
    assert_eq!(sc["memory_mb"], 64, "{v}");
    let text = p.cli(&["app", &app]);
    assert!(
        text.stdout
            .contains("sidecar:    helper (web, 64M): python3 sidecar.py"),
        "{text:?}"
    );

    // Memory: the instance's 192 MB is split, 128 for the process and 64 for the sidecar; the
    // sidecar has the instance's sandbox and its network namespace.
    let web = p.app_containers(&app, false);
    assert_eq!(web.len(), 1, "{web:?}");
    let sidecar = running_sidecar(&p, &app);
    assert_eq!(
        docker_inspect(&web[0], "{{.HostConfig.Memory}}"),
        (128u64 << 20).to_string()
    );
    assert_eq!(
        docker_inspect(&sidecar, "{{.HostConfig.Memory}}"),
        (64u64 << 20).to_string()
    );
    let web_id = docker_inspect(&web[0], "{{.Id}}");
    assert_eq!(
        docker_inspect(&sidecar, "{{.HostConfig.NetworkMode}}"),
        format!("container:{web_id}")
    );
    assert_eq!(docker_inspect(&sidecar, "{{.Config.User}}"), "2000:2000");
    assert_eq!(docker_inspect(&sidecar, "{{.HostConfig.CapDrop}}"), "[ALL]");
    assert_eq!(
        docker_inspect(&sidecar, "{{.HostConfig.ReadonlyRootfs}}"),
        "true"
    );
    assert!(docker_inspect(&sidecar, "{{.HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    assert_ne!(docker_inspect(&sidecar, "{{.HostConfig.PidsLimit}}"), "0");
    assert!(docker_inspect(&sidecar, "{{.Config.Env}}").contains("MEMORY_LIMIT=64m"));
    assert!(docker_inspect(&web[0], "{{.Config.Env}}").contains("MEMORY_LIMIT=128m"));

    // Its lines carry its own source; the app's keep theirs.
    let logs = wait_for(Duration::from_secs(30), "the sidecar's lines", || {
        let l = recent_logs(&p, &app);
        (l.contains("[APP/web/0/SIDECAR/helper] OUT sidecar served a request")
            && l.contains("[APP/web/0] OUT web listening"))
        .then_some(l)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", recent_logs(&p, &app)));
    assert!(!logs.contains("[APP/web/0] OUT sidecar"), "{logs}");

    // A crashed sidecar restarts on its own (same container), said in a CELL line; the
    // instance is not restarted.
    let restarts = v["instances"][0]["restarts"].clone();
    let out = std::process::Command::new("docker")
        .args(["kill", &sidecar])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for(
        Duration::from_secs(30),
        "the sidecar's crash and restart",
        || {
            let l = recent_logs(&p, &app);
            (l.contains("Sidecar helper of instance 0 crashed")
                && docker_inspect(&sidecar, "{{.State.Running}}") == "true")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}", recent_logs(&p, &app)));
    assert_eq!(
        serves_via_sidecar(&p, &app),
        "via sidecar: hello from helper"
    );
    assert_eq!(
        p.app_json(&app).unwrap()["instances"][0]["restarts"],
        restarts
    );

    // The instance's container crashes: restarted in place with a new network namespace, and
    // the sidecar with it, in the new one.
    let out = std::process::Command::new("docker")
        .args(["kill", &web[0]])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for(Duration::from_secs(60), "the instance's restart", || {
        let v = p.app_json(&app).ok()?;
        (v["instances"][0]["restarts"].as_u64()? > restarts.as_u64()?
            && v["instances"][0]["state"] == "running")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    assert_eq!(
        serves_via_sidecar(&p, &app),
        "via sidecar: hello from helper"
    );
    assert_eq!(
        running_sidecar(&p, &app),
        sidecar,
        "the same sidecar container"
    );

    // A restarted agent adopts the running sidecar rather than start a second one.
    p.restart_agent(0).unwrap();
    assert_eq!(
        serves_via_sidecar(&p, &app),
        "via sidecar: hello from helper"
    );
    assert_eq!(running_sidecar(&p, &app), sidecar, "adopted");

    // `paas restart`: a new instance, with a new sidecar in its namespace; the old one goes.
    let out = p.cli(&["restart", &app]);
    assert!(out.ok(), "{out:?}");
    let new = wait_for(Duration::from_secs(60), "a new sidecar", || {
        let ids = p.app_containers(&app, true);
        match ids.as_slice() {
            [id] if *id != sidecar && docker_inspect(id, "{{.State.Running}}") == "true" => {
                Some(id.clone())
            }
            _ => None,
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    let web = p.app_containers(&app, false);
    assert_eq!(web.len(), 1, "{web:?}");
    assert_eq!(
        docker_inspect(&new, "{{.HostConfig.NetworkMode}}"),
        format!("container:{}", docker_inspect(&web[0], "{{.Id}}"))
    );
    assert_eq!(
        serves_via_sidecar(&p, &app),
        "via sidecar: hello from helper"
    );

    // Stopped: no container of the app is left, sidecar or not.
    let out = p.cli(&["stop", &app]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(60),
        "the app's containers to go",
        || p.containers_of(&app).is_empty().then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", p.containers_of(&app)));
    let out = p.cli(&["start", &app]);
    assert!(out.ok(), "{out:?}");
    running_sidecar(&p, &app);
    let out = p.cli(&["delete", &app, "-f"]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(60),
        "the deleted app's containers to go",
        || p.containers_of(&app).is_empty().then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", p.containers_of(&app)));
}

#[test]
fn sidecars_that_do_not_fit_are_refused_before_anything_changes() {
    let p = Platform::start().expect("platform");
    let app = unique("sidecar-bad");
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), &manifest(&app, "192M", "32M", "web"));
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    assert_eq!(p.app_json(&app).unwrap()["revision"]["number"], 1);

    // As much memory as the process: refused by the CLI with the manifest's line.
    write_app(dir.path(), &manifest(&app, "192M", "192M", "web"));
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");
    assert!(
        out.stderr.contains("line 6") && out.stderr.contains("take 192 MB of its 192 MB"),
        "{out:?}"
    );
    // A process type the app does not have: refused by the controller before staging.
    write_app(dir.path(), &manifest(&app, "192M", "32M", "worker"));
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out:?}");
    assert!(
        out.stderr.contains("unknown process type \"worker\""),
        "{out:?}"
    );
    // Nothing changed: still revision 1, with its sidecar.
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["number"], 1, "{v}");
    assert_eq!(v["revision"]["sidecars"][0]["memory_mb"], 32, "{v}");
    // Scaling the process below its sidecars is refused too.
    let out = p.cli(&["scale", &app, "-m", "32M"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("sidecars"), "{out:?}");
    // A rollback brings back the sidecars of the revision it returns to.
    write_app(
        dir.path(),
        "applications:\n- name: APP\n  memory: 192M\n  command: python3 app.py\n  sidecars: []\n"
            .replace("APP", &app)
            .as_str(),
    );
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push: {out:?}");
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["number"], 2, "{v}");
    assert!(v["revision"].get("sidecars").is_none(), "{v}");
    let out = p.cli(&["rollback", &app]);
    assert!(out.ok(), "{out:?}");
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["sidecars"][0]["name"], "helper", "{v}");
    running_sidecar(&p, &app);
}
