//! Revisions, env and rollback with the real CLI, server, agent and engine: push v1, set its env,
//! push v2 with other code and env, roll back, and the app serves v1's code with v1's env,
//! without a rebuild (the rolled-back revision runs the very droplet of v1).

use paas_e2e::{example, unique, wait_for, Platform};
use std::time::Duration;

const V2_APP: &str = r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("v2 says " + os.environ.get("GREETING", "nothing") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Waits until the app answers 200 with a body containing `want` (the router follows the new
/// revision's instances within a convergence pass).
fn serves(p: &Platform, app: &str, want: &str) -> String {
    wait_for(
        Duration::from_secs(30),
        &format!("{app} to serve {want:?}"),
        || {
            let (status, body) = p.get_app(app, "/").ok()?;
            (status == 200 && body.contains(want)).then_some(body)
        },
    )
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()))
}

fn revisions(p: &Platform, app: &str) -> Vec<serde_json::Value> {
    let out = p.cli(&["revisions", app, "--json"]);
    assert!(out.ok(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    v["revisions"].as_array().unwrap().clone()
}

#[test]
fn env_changes_and_rollback_restore_code_and_env() {
    let p = Platform::start().expect("platform");
    let app = unique("rollback");

    // v1 and its env.
    let out = p.cli(&["push", &app, "-p", example("python-app").to_str().unwrap()]);
    assert!(out.ok(), "push v1: {out:?}{}", p.logs());
    serves(&p, &app, "Hello from paas!");
    let out = p.cli(&["set-env", &app, "GREETING", "Bonjour from v1"]);
    assert!(out.ok(), "set-env: {out:?}{}", p.logs());
    assert!(out.stdout.contains("revision 2"), "{out:?}");
    serves(&p, &app, "Bonjour from v1!");
    let out = p.cli(&["env", &app]);
    assert!(
        out.ok() && out.stdout.contains("GREETING=Bonjour from v1"),
        "{out:?}"
    );

    // v2: other code; the env carries over until changed.
    let v2 = tempfile::tempdir().unwrap();
    std::fs::write(v2.path().join("app.py"), V2_APP).unwrap();
    let out = p.cli(&["push", &app, "-p", v2.path().to_str().unwrap()]);
    assert!(out.ok(), "push v2: {out:?}{}", p.logs());
    serves(&p, &app, "v2 says Bonjour from v1");
    let out = p.cli(&["set-env", &app, "GREETING", "Hola from v2"]);
    assert!(out.ok(), "{out:?}");
    serves(&p, &app, "v2 says Hola from v2");

    let revs = revisions(&p, &app);
    assert_eq!(revs.len(), 4, "{revs:?}");
    assert_eq!(revs[0]["number"], 4);
    assert_eq!(revs[0]["current"], true);
    assert_eq!(revs[0]["description"], "set-env GREETING");
    assert_eq!(revs[0]["created_by"], "admin");
    assert_eq!(revs[1]["description"], "push");
    assert_eq!(revs[3]["env_keys"], serde_json::json!([]));
    assert_eq!(revs[2]["env_keys"], serde_json::json!(["GREETING"]));
    assert_eq!(
        revs[2]["droplet"], revs[3]["droplet"],
        "an env change reuses the droplet"
    );
    assert_ne!(
        revs[1]["droplet"], revs[2]["droplet"],
        "v2 is another droplet"
    );
    let table = p.cli(&["revisions", &app]);
    assert!(
        table.ok() && table.stdout.contains("REVISION") && table.stdout.contains("4*"),
        "{table:?}"
    );

    // Roll back to revision 2: v1's code with v1's env, as revision 5, nothing rebuilt.
    let out = p.cli(&["rollback", &app, "--to", "2"]);
    assert!(out.ok(), "rollback: {out:?}{}", p.logs());
    assert!(out.stdout.contains("revision 5"), "{out:?}");
    let body = serves(&p, &app, "Bonjour from v1!");
    assert!(!body.contains("v2"), "{body}");
    let revs = revisions(&p, &app);
    assert_eq!(revs[0]["number"], 5);
    assert_eq!(revs[0]["description"], "rollback to 2");
    assert_eq!(
        revs[0]["droplet"], revs[3]["droplet"],
        "the rollback runs v1's droplet"
    );
    // Replacement first, removal after: the older revisions' instances go once revision 5 runs.
    wait_for(
        Duration::from_secs(30),
        "only revision 5's instances",
        || {
            let v = p.app_json(&app).ok()?;
            v["instances"]
                .as_array()?
                .iter()
                .all(|i| i["revision"] == 5)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", p.app_json(&app)));

    // Without --to: the revision before the current one (4: v2 with v2's env).
    let out = p.cli(&["rollback", &app]);
    assert!(out.ok(), "{out:?}");
    serves(&p, &app, "v2 says Hola from v2");

    // Unset takes the value away in a new revision.
    let out = p.cli(&["unset-env", &app, "GREETING"]);
    assert!(out.ok(), "{out:?}");
    serves(&p, &app, "v2 says nothing");

    // Refusals: one line, a stable code, exit 1, nothing changed.
    let out = p.cli(&["rollback", &app, "--to", "99"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("(revision_not_found)"), "{out:?}");
    let out = p.cli(&["set-env", &app, "PORT", "1"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("(invalid_env)"), "{out:?}");
    let out = p.cli(&["unset-env", &app, "NEVER_SET"]);
    assert!(out.stderr.contains("(invalid_env)"), "{out:?}");
    let out = p.cli(&["rollback", &app, "--to", "7"]);
    assert!(out.stderr.contains("(conflict)"), "{out:?}");
    assert_eq!(revisions(&p, &app).len(), 7);
}
