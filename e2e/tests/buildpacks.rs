//! Staging on the node with the built-in buildpacks, end to end on the real engine: each
//! example is pushed with the real CLI, staged in a sandboxed container on the agent's node
//! (its `STG` lines shown during the push), and served through the router. A failed build shows
//! why and leaves the running revision serving.

use paas_e2e::{example, unique, wait_for, Platform};
use std::time::Duration;

fn get(p: &Platform, app: &str, path: &str) -> (u16, String, String) {
    let host = format!("{app}.localhost");
    let client = reqwest::blocking::Client::builder()
        .resolve(&host, p.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = client
        .get(format!("http://{host}:{}{path}", p.addr.port()))
        .send()
        .unwrap();
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, ctype, res.text().unwrap())
}

fn push(p: &Platform, app: &str, dir: &str, extra: &[&str]) -> paas_e2e::CliOutput {
    let path = example(dir);
    let mut args = vec!["push", app, "-p", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    p.cli(&args)
}

fn detected(p: &Platform, app: &str) -> String {
    p.app_json(app).unwrap()["revision"]["detected"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn each_builtin_buildpack_stages_its_example() {
    let p = Platform::start().expect("platform");

    let app = unique("static");
    let out = push(&p, &app, "static-site", &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout.contains("[STG]") && out.stdout.contains("-----> staticfile buildpack"),
        "STG lines during the push: {out:?}"
    );
    assert_eq!(detected(&p, &app), "staticfile");
    let (s, ct, body) = get(&p, &app, "/");
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(body.contains("A static site on paas"), "{body}");
    assert!(get(&p, &app, "/style.css").1.starts_with("text/css"));
    assert!(get(&p, &app, "/app.js")
        .1
        .starts_with("application/javascript"));
    assert_eq!(
        get(&p, &app, "/.paas/processes").0,
        404,
        "the platform's files are not served"
    );

    let app = unique("node");
    let out = push(&p, &app, "node-app", &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert_eq!(detected(&p, &app), "node");
    let (s, _, body) = get(&p, &app, "/");
    assert_eq!(s, 200);
    assert!(body.contains("Hello from node v"), "{body}");

    let app = unique("binary");
    let out = push(&p, &app, "binary-app", &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert_eq!(detected(&p, &app), "binary");
    let (s, _, body) = get(&p, &app, "/index.txt");
    assert_eq!(s, 200);
    assert!(body.contains("Served by the binary buildpack"), "{body}");

    let app = unique("wheels");
    let out = push(&p, &app, "python-wheels", &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout.contains("Successfully installed greetlib-1.0"),
        "{out:?}"
    );
    assert_eq!(detected(&p, &app), "python");
    let (s, _, body) = get(&p, &app, "/");
    assert_eq!(s, 200);
    assert!(
        body.contains("Greetings, paas, from a vendored wheel"),
        "{body}"
    );

    // Detection order puts staticfile first; `-b python` picks python for a folder both detect.
    let both = tempfile::tempdir().unwrap();
    std::fs::copy(
        example("python-app").join("app.py"),
        both.path().join("app.py"),
    )
    .unwrap();
    std::fs::write(both.path().join("index.html"), "<h1>static</h1>").unwrap();
    let app = unique("pick");
    let out = p.cli(&["push", &app, "-p", both.path().to_str().unwrap()]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert_eq!(detected(&p, &app), "staticfile");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        both.path().to_str().unwrap(),
        "-b",
        "python",
    ]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert_eq!(detected(&p, &app), "python");
    let body = wait_for(
        Duration::from_secs(30),
        "the python revision to serve",
        || {
            let (s, _, b) = get(&p, &app, "/");
            (s == 200 && b.contains("Hello from paas")).then_some(b)
        },
    );
    assert!(body.is_ok(), "{body:?}");
}

#[test]
fn failed_staging_shows_why_and_keeps_the_running_revision() {
    let p = Platform::start().expect("platform");
    let app = unique("stgfail");
    let out = push(&p, &app, "python-app", &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    let before = wait_for(Duration::from_secs(30), "v1 to serve", || {
        let (s, _, b) = get(&p, &app, "/");
        (s == 200).then_some(b)
    })
    .unwrap();

    // A node app whose dependency no registry this node may reach has: npm's own failure.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name":"x","scripts":{"start":"node s.js"},"dependencies":{"left-pad":"1.3.0"}}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("s.js"), "require('left-pad');\n").unwrap();
    let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.trim().lines().count(),
        1,
        "one error line: {out:?}"
    );
    assert!(out.stderr.contains("(staging_failed)"), "{out:?}");
    assert!(
        out.stderr.contains("left-pad"),
        "the error says why: {out:?}"
    );
    assert!(
        out.stdout.contains("[STG]") && out.stdout.contains("npm install failed"),
        "STG lines shown: {out:?}"
    );

    // Nothing changed: same revision, same content.
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["number"], 1, "{v}");
    assert_eq!(v["instances"][0]["state"], "running", "{v}");
    let (s, _, body) = get(&p, &app, "/");
    assert_eq!((s, body), (200, before));

    // A named buildpack that does not detect the app fails, even when -b skips the server's
    // pre-check.
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(docs.path().join("README.md"), "docs").unwrap();
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        docs.path().to_str().unwrap(),
        "-b",
        "python",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("No buildpack detected this app (tried: python)")
            && out.stderr.contains("(staging_failed)"),
        "{out:?}"
    );
    assert_eq!(p.app_json(&app).unwrap()["revision"]["number"], 1);
}
