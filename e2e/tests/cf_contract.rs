//! Cloud Foundry apps as written (issue 19): the runtime contract every instance gets
//! (`VCAP_APPLICATION` and the rest, `.profile.d` and `.profile` sourced, a writable `HOME` and
//! `TMPDIR`), a CF manifest with a display name, `((vars))` and `random-route`, the build chosen
//! the way Cloud Foundry chooses it (buildpacks over a Dockerfile unless asked), and a push that
//! says why an app is not up (bound to 127.0.0.1, crashed with its exit code and last lines, a
//! language nothing here stages).

use paas_e2e::{wait_for, Platform};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(p, text).unwrap();
}

/// Prints what the instance was given as one `CONTRACT {json}` line, then serves.
const CONTRACT_APP: &str = r#"import json, os, tempfile
from http.server import BaseHTTPRequestHandler, HTTPServer

def writable(d):
    try:
        with tempfile.NamedTemporaryFile(dir=d):
            return True
    except OSError:
        return False

keys = ["PORT", "VCAP_APP_HOST", "VCAP_APP_PORT", "VCAP_SERVICES", "MEMORY_LIMIT", "HOME",
        "TMPDIR", "CF_INSTANCE_INDEX", "CF_INSTANCE_GUID", "CF_INSTANCE_IP", "CF_INSTANCE_PORT",
        "CF_INSTANCE_ADDR", "FROM_PROFILE_D", "FROM_PROFILE", "GREETING"]
seen = {k: os.environ.get(k) for k in keys}
seen["VCAP_APPLICATION"] = json.loads(os.environ.get("VCAP_APPLICATION", "null"))
seen["home_writable"] = writable(os.environ.get("HOME", "/nonexistent"))
seen["tmpdir_writable"] = writable(os.environ.get("TMPDIR", "/nonexistent"))
print("CONTRACT " + json.dumps(seen), flush=True)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

HTTPServer((os.environ["VCAP_APP_HOST"], int(os.environ["PORT"])), H).serve_forever()
"#;

fn sqlite(p: &Platform, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .arg(p.data_dir().join("paas.db"))
        .arg(sql)
        .output()
        .expect("sqlite3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<usize> = s.split('-').map(str::len).collect();
    parts == [8, 4, 4, 4, 12] && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// A Cloud Foundry manifest as written (a capitalised display name from `((vars))`,
/// `random-route`, the older `buildpack:`, `services:`) pushes, and its instance sees the whole
/// runtime contract.
#[test]
fn a_cf_manifest_as_written_and_the_runtime_contract() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "app.py", CONTRACT_APP);
    write(
        d,
        ".profile.d/00-first.sh",
        "export FROM_PROFILE_D=sourced\n",
    );
    // `.profile` runs after the buildpacks' scripts and sees what they set.
    write(
        d,
        ".profile",
        "export FROM_PROFILE=\"after-$FROM_PROFILE_D\"\n",
    );
    write(
        d,
        "manifest.yml",
        "---\napplications:\n- name: ((app_name))\n  memory: 128M\n  random-route: true\n  buildpack: python_buildpack\n  services:\n  - a-database\n  env:\n    GREETING: ((greeting))\n",
    );
    write(d, "vars.yml", "app_name: GetStartedPython\n");
    // The manifest's `services:` are bound on push (issue 22): here a user-provided one.
    let ups = p.cli(&[
        "cups",
        "a-database",
        "-p",
        r#"{"uri":"postgres://u:p@db.example:5432/app"}"#,
    ]);
    assert!(ups.ok(), "cups: {ups:?}");
    let out = p.cli_in(
        &[
            "push",
            "--vars-file",
            "vars.yml",
            "--var",
            "greeting=hello vars",
            "-t",
            "30",
        ],
        Some(d),
    );
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    assert!(!out.stderr.contains("services ignored"), "{out:?}");
    assert!(
        out.stdout
            .contains("staging with buildpack python (named by the push)"),
        "the push says how it builds: {out:?}"
    );
    let name = "GetStartedPython";
    let v = p.app_json(name).unwrap();
    assert_eq!(v["name"], name);
    assert_eq!(v["instances"][0]["state"], "running", "{v}");

    let line = wait_for(
        Duration::from_secs(20),
        "the app's CONTRACT line in its logs",
        || {
            let out = p.cli(&["logs", name, "--recent"]);
            out.stdout
                .lines()
                .find_map(|l| l.split_once("CONTRACT ").map(|(_, j)| j.to_string()))
        },
    )
    .unwrap();
    let seen: serde_json::Value = serde_json::from_str(&line).expect("the app's JSON");
    let containers = p.containers_of(name);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let label = |key: &str| {
        let out = Command::new("docker")
            .args(["inspect", "-f"])
            .arg(format!("{{{{index .Config.Labels \"{key}\"}}}}"))
            .arg(&containers[0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let instance_id = label("paas.instance");
    let app_id = sqlite(&p, &format!("SELECT id FROM apps WHERE name = '{name}'"));
    let space_id = sqlite(
        &p,
        &format!("SELECT space_id FROM apps WHERE id = '{app_id}'"),
    );
    let (space_org, space_name) = {
        let row = sqlite(
            &p,
            &format!(
                "SELECT o.name || '|' || s.name FROM spaces s JOIN orgs o ON o.id = s.org_id WHERE s.id = '{space_id}'"
            ),
        );
        let (o, n) = row.split_once('|').expect("the app's space");
        (o.to_string(), n.to_string())
    };
    assert!(!app_id.is_empty() && !instance_id.is_empty());

    let vcap = &seen["VCAP_APPLICATION"];
    assert_eq!(vcap["application_id"], app_id.as_str(), "{vcap}");
    assert_eq!(vcap["application_name"], name);
    assert_eq!(vcap["name"], name);
    // `random-route: true`: a generated host under the label derived from the display name.
    let host = sqlite(&p, &format!("SELECT host FROM apps WHERE id = '{app_id}'"));
    assert!(host.starts_with("getstartedpython-"), "{host}");
    let uris = serde_json::json!([format!("{host}.localhost")]);
    assert_eq!(vcap["application_uris"], uris, "the app's own route");
    assert_eq!(vcap["uris"], uris);
    assert_eq!(vcap["space_id"], space_id.as_str());
    assert_eq!(vcap["space_name"], space_name.as_str());
    assert_eq!(vcap["organization_name"], space_org.as_str());
    // The store names orgs only by name to the rest of the server: a stable id derived from it.
    assert!(
        is_guid(vcap["organization_id"].as_str().unwrap_or_default()),
        "{vcap}"
    );
    assert_eq!(vcap["instance_id"], instance_id.as_str());
    assert_eq!(vcap["instance_index"], 0);
    assert_eq!(vcap["process_type"], "web");
    assert_eq!(vcap["process_id"], app_id.as_str());
    assert_eq!(vcap["application_version"], "1");
    assert_eq!(vcap["version"], "1");
    assert_eq!(vcap["host"], "0.0.0.0");
    assert_eq!(vcap["port"], 8080);
    assert_eq!(vcap["limits"]["mem"], 128);
    assert!(vcap["limits"]["disk"].as_u64().unwrap_or(0) > 0, "{vcap}");
    assert_eq!(vcap["limits"]["fds"], 16384);

    assert_eq!(seen["PORT"], "8080");
    assert_eq!(seen["VCAP_APP_PORT"], "8080");
    assert_eq!(seen["VCAP_APP_HOST"], "0.0.0.0");
    let services: serde_json::Value =
        serde_json::from_str(seen["VCAP_SERVICES"].as_str().unwrap_or_default())
            .expect("VCAP_SERVICES is JSON");
    assert_eq!(
        services["user-provided"][0]["name"], "a-database",
        "{services}"
    );
    assert_eq!(
        services["user-provided"][0]["credentials"]["uri"],
        "postgres://u:p@db.example:5432/app"
    );
    assert_eq!(seen["MEMORY_LIMIT"], "128m");
    assert_eq!(seen["CF_INSTANCE_INDEX"], "0");
    assert_eq!(seen["CF_INSTANCE_GUID"], instance_id.as_str());
    assert_eq!(seen["CF_INSTANCE_IP"], "127.0.0.1");
    // The port the instance is published on, as the platform reports it.
    let host_port = v["instances"][0]["address"]
        .as_str()
        .and_then(|a| a.rsplit_once(':'))
        .map(|(_, port)| port.to_string())
        .expect("the instance's address");
    assert_eq!(seen["CF_INSTANCE_PORT"], host_port.as_str(), "{v}");
    assert_eq!(
        seen["CF_INSTANCE_ADDR"],
        format!("127.0.0.1:{host_port}").as_str()
    );
    assert_eq!(seen["HOME"], "/app");
    assert_eq!(seen["TMPDIR"], "/tmp");
    assert_eq!(seen["home_writable"], true, "{seen}");
    assert_eq!(seen["tmpdir_writable"], true, "{seen}");
    assert_eq!(seen["FROM_PROFILE_D"], "sourced", "{seen}");
    assert_eq!(seen["FROM_PROFILE"], "after-sourced", "{seen}");
    assert_eq!(seen["GREETING"], "hello vars", "((vars)) filled in: {seen}");
}

fn combined(out: &paas_e2e::CliOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

/// An app the platform cannot reach, one that exits, and one nothing here builds: each push
/// says what the platform saw, naming the process type and instance.
#[test]
fn a_push_says_why_an_app_is_not_up() {
    let p = Platform::start().expect("platform");

    // Bound to loopback: the health check cannot reach it; the push says so.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "app.py",
        "import os\nfrom http.server import HTTPServer, SimpleHTTPRequestHandler\nprint('listening on loopback', flush=True)\nHTTPServer(('127.0.0.1', int(os.environ['PORT'])), SimpleHTTPRequestHandler).serve_forever()\n",
    );
    let out = p.cli(&[
        "push",
        "loopback",
        "-p",
        dir.path().to_str().unwrap(),
        "-t",
        "4",
    ]);
    assert!(!out.ok(), "{out:?}");
    let text = combined(&out);
    assert!(
        text.contains(
            "instance 0 (web) crashed: health check failed: the app listens on 127.0.0.1:8080 only"
        ),
        "the reason is in the push output: {out:?}{}",
        p.logs()
    );
    assert!(text.contains("0.0.0.0"), "{out:?}");

    // Exits: the code and its last lines, in the push output itself. Its display name has a
    // space, which goes through the client's and the server's path encoding.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Procfile",
        "web: echo 'config missing: DATABASE_URL' && echo 'giving up' >&2 && exit 3\n",
    );
    let out = p.cli(&["push", "Exits Badly", "-p", dir.path().to_str().unwrap()]);
    assert!(!out.ok(), "{out:?}");
    let text = combined(&out);
    assert!(
        text.contains("instance 0 (web) crashed: exited with code 3"),
        "{out:?}{}",
        p.logs()
    );
    assert!(
        text.contains("config missing: DATABASE_URL") && text.contains("giving up"),
        "the last lines: {out:?}"
    );
    // The closing report names the process type; the instance may be crashed or already being
    // restarted by its node when it is read, but its last exit stays.
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("instance 0 (web): ")
                && l.contains("exited with code 3")),
        "{out:?}"
    );

    // A language no buildpack of this stack stages: named, with what is supported.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "pom.xml", "<project/>\n");
    write(dir.path(), "src/Main.java", "class Main {}\n");
    let out = p.cli(&["push", "java-app", "-p", dir.path().to_str().unwrap()]);
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr.contains("pom.xml")
            && out.stderr.contains("not supported on this stack")
            && out.stderr.contains("python")
            && out.stderr.contains("(not_an_app)"),
        "{out:?}"
    );
    p.cli(&["delete", "loopback", "-f"]);
    assert_eq!(p.app_json("Exits Badly").unwrap()["name"], "Exits Badly");
    let out = p.cli(&["delete", "Exits Badly", "-f"]);
    assert!(out.ok(), "{out:?}");
}

const NODE_SERVER: &str = r#"const http = require("http");
http.createServer((req, res) => {
  res.end(`built by ${process.env.BUILT_BY || "buildpack"}\n`);
}).listen(process.env.PORT || 8080, "0.0.0.0");
"#;

/// A folder with both a Dockerfile and a `package.json` stages with the node buildpack, and
/// says the Dockerfile was ignored; `--dockerfile` builds the Dockerfile. `--no-start` stages
/// and leaves the app stopped.
#[test]
fn buildpacks_win_over_a_dockerfile_unless_asked() {
    let p = Platform::start().expect("platform");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "server.js", NODE_SERVER);
    write(
        d,
        "package.json",
        "{\"name\": \"both\", \"scripts\": {\"start\": \"node server.js\"}}\n",
    );
    write(
        d,
        "Dockerfile",
        "FROM paas-stack:bookworm\nENV BUILT_BY=dockerfile\nCOPY server.js /srv/server.js\nCMD [\"node\", \"/srv/server.js\"]\n",
    );
    let path = d.to_str().unwrap();

    let out = p.cli(&["push", "both", "-p", path, "--no-start"]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains("both is staged as revision 1 and stopped"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(
            "staging with buildpack node (package.json found); Dockerfile ignored: use --dockerfile"
        ),
        "{out:?}"
    );
    let v = p.app_json("both").unwrap();
    assert_eq!(v["state"], "stopped", "{v}");
    wait_for(
        Duration::from_secs(20),
        "no instance of a --no-start push",
        || p.containers_of("both").is_empty().then_some(()),
    )
    .unwrap();

    let out = p.cli(&["start", "both"]);
    assert!(out.ok(), "{out:?}");
    let body = wait_for(
        Duration::from_secs(60),
        "the buildpack build to serve",
        || p.get_app("both", "/").ok().filter(|(s, _)| *s == 200),
    )
    .unwrap()
    .1;
    assert_eq!(body.trim(), "built by buildpack");

    let out = p.cli(&["push", "both", "-p", path, "--dockerfile"]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains("building the Dockerfile (asked for with --dockerfile)"),
        "{out:?}"
    );
    let body = wait_for(
        Duration::from_secs(60),
        "the Dockerfile build to serve",
        || {
            p.get_app("both", "/")
                .ok()
                .filter(|(s, b)| *s == 200 && b.contains("dockerfile"))
        },
    )
    .unwrap()
    .1;
    assert_eq!(body.trim(), "built by dockerfile");
    p.cli(&["delete", "both", "-f"]);
}
