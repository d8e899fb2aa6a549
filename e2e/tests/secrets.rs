//! Secret env values (issue 7) with the real CLI, server, agent and engine: a value set with
//! `--secret` reaches the app in plain, is `***` in `paas env` and the API, is revealed only to a
//! developer or better who asks, and appears nowhere in the SQLite files, the events or the logs.

use paas_e2e::{unique, wait_for, Platform};
use std::time::Duration;

const APP: &str = r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("key is " + os.environ.get("API_KEY", "unset") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Every file of the SQLite database (main file, WAL, shared memory) as bytes.
fn database_bytes(p: &Platform) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(p.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("paas.db") {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!all.is_empty(), "no database files in {:?}", p.data_dir());
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn secret_env_is_sealed_at_rest_masked_in_the_api_and_plain_in_the_app() {
    let p = Platform::start().expect("platform");
    let app = unique("secret");
    // Random, so a match anywhere can only be this value.
    let secret = format!("s3cr3t-{}", unique("v"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    let out = p.cli(&["set-env", &app, "API_KEY", &secret, "--secret"]);
    assert!(out.ok(), "set-env --secret: {out:?}{}", p.logs());
    assert!(
        !out.stdout.contains(&secret) && !out.stderr.contains(&secret),
        "{out:?}"
    );

    // The agent got it in plain: the app serves it.
    wait_for(Duration::from_secs(60), "the app to see the secret", || {
        let (status, body) = p.get_app(&app, "/").ok()?;
        (status == 200 && body.contains(&secret)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));

    // Masked in `paas env` and the API; revealed to the admin who asks.
    let out = p.cli(&["env", &app]);
    assert!(
        out.ok() && out.stdout.contains("API_KEY=***") && !out.stdout.contains(&secret),
        "{out:?}"
    );
    let out = p.cli(&["env", &app, "--reveal"]);
    assert!(
        out.ok() && out.stdout.contains(&format!("API_KEY={secret}")),
        "{out:?}"
    );
    let admin = p.admin_token().unwrap();
    let http = reqwest::blocking::Client::new();
    let env: serde_json::Value = http
        .get(format!("{}/v1/apps/{app}/env", p.api_url()))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(env["env"]["API_KEY"], "***", "{env}");

    // A viewer sees `***` and may not reveal.
    let viewer = unique("viewer");
    assert!(p.cli(&["add-user", &viewer, "-p", "viewer-password"]).ok());
    assert!(p.cli(&["set-role", &viewer, "viewer"]).ok());
    let home = tempfile::tempdir().unwrap();
    assert!(p
        .cli_as(
            home.path(),
            &[],
            &[
                "login",
                &p.api_url(),
                "-u",
                &viewer,
                "-p",
                "viewer-password"
            ]
        )
        .ok());
    let out = p.cli_as(home.path(), &[], &["env", &app]);
    assert!(out.ok() && out.stdout.contains("API_KEY=***"), "{out:?}");
    let out = p.cli_as(home.path(), &[], &["env", &app, "--reveal"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("(forbidden)") && !out.stdout.contains(&secret),
        "{out:?}"
    );

    // Nowhere in the responses that describe the change, nor at rest.
    for path in ["events", "revisions", "logs?limit=1000"] {
        let body = http
            .get(format!("{}/v1/apps/{app}/{path}", p.api_url()))
            .bearer_auth(&admin)
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(!body.contains(&secret), "{path} shows the secret: {body}");
    }
    let db = database_bytes(&p);
    assert!(
        contains(&db, "API_KEY"),
        "the env key is stored (the check reads the right files)"
    );
    assert!(
        !contains(&db, &secret),
        "the secret is in the database in plain"
    );
    let key = p.data_dir().join("secret-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
