//! `paas apply -f platform.yml` (issue 25) with the real CLI, server, agent and Docker: a file of
//! two apps (one with two instances and an extra route, one bound to a user-provided service it
//! creates) makes both, serving; applying it again changes nothing (no revision, no container
//! replaced); an edit shows as exactly that change in `--dry-run` (which changes nothing) and
//! then makes one scale and one revision; `--prune` asks first and then deletes the app the file
//! no longer names; a changed folder is pushed again, an unchanged one never; a bad document
//! changes nothing; a viewer of the space cannot apply.

use paas_e2e::{call, example, unique, user_with_role, wait_for, Platform};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn copy_example(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(example("python-app").join("app.py"), to.join("app.py")).unwrap();
}

struct Names {
    web: String,
    api: String,
    creds: String,
}

/// The file: `web` with `web_instances`, and `api` (when `api` gives its greeting and memory).
fn document(n: &Names, web_instances: u32, api: Option<(&str, u32)>) -> String {
    let mut doc = format!(
        "space: default/default
applications:
- name: {web}
  path: web
  instances: {web_instances}
  memory: 96M
  routes:
  - route: {web}-alt.localhost
",
        web = n.web
    );
    if let Some((greeting, memory)) = api {
        doc.push_str(&format!(
            "- name: {api}
  path: api
  memory: {memory}M
  env:
    GREETING: {greeting}
  services: [{creds}]
",
            api = n.api,
            creds = n.creds
        ));
    }
    doc.push_str(&format!(
        "services:
- name: {creds}
  credentials: {{user: apply-user}}
",
        creds = n.creds
    ));
    if api.is_some() {
        doc.push_str(&format!(
            "network_policies:
- {{source: {web}, destination: {api}, ports: 8080}}
",
            web = n.web,
            api = n.api
        ));
    }
    doc
}

/// The running instances of `app` (index, revision, since), once there are `n`.
fn running(p: &Platform, app: &str, n: usize) -> Vec<(u64, i64, String)> {
    wait_for(Duration::from_secs(120), "the instances to run", || {
        let v = p.app_json(app).ok()?;
        let list: Vec<(u64, i64, String)> = v["instances"]
            .as_array()?
            .iter()
            .filter(|i| i["state"] == "running" && i["ready"] != false)
            .map(|i| {
                (
                    i["index"].as_u64().unwrap_or_default(),
                    i["revision"].as_i64().unwrap_or_default(),
                    i["since"].to_string(),
                )
            })
            .collect();
        let all = v["instances"].as_array()?.len();
        (list.len() == n && all == n).then_some(list)
    })
    .unwrap_or_else(|e| panic!("{app}: {e}: {}", p.logs()))
}

fn revision(p: &Platform, app: &str) -> i64 {
    p.app_json(app).unwrap()["revision"]["number"]
        .as_i64()
        .unwrap()
}

fn serves(p: &Platform, host: &str, want: &str) {
    wait_for(Duration::from_secs(60), "the app to serve", || {
        let (s, b) = p.get_app(host, "/").ok()?;
        (s == 200 && b.contains(want)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{host}: {e}: {}", p.logs()));
}

fn plan_json(out: &paas_e2e::CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn apply_twice_makes_one_deployment_then_dry_run_then_prune() {
    let p = Platform::start().expect("platform");
    let n = Names {
        web: unique("ap-web"),
        api: unique("ap-api"),
        creds: unique("ap-creds"),
    };
    let dir = tempfile::tempdir().unwrap();
    copy_example(&dir.path().join("web"));
    copy_example(&dir.path().join("api"));
    let file = dir.path().join("platform.yml");
    let file_arg = file.to_str().unwrap();
    std::fs::write(&file, document(&n, 2, Some(("Hi from api", 96)))).unwrap();

    // First apply: the service, then both apps pushed with every setting of the file.
    let out = p.cli(&["apply", "-f", file_arg]);
    assert!(out.ok(), "apply: {out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains(&format!("+ create service {}", n.creds)),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!("+ create app {}", n.web)),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!("+ create app {}", n.api)),
        "{out:?}"
    );
    let web_before = running(&p, &n.web, 2);
    let api_before = running(&p, &n.api, 1);
    serves(&p, &n.web, "Hello from paas");
    serves(&p, &format!("{}-alt", n.web), "Hello from paas");
    serves(&p, &n.api, "Hi from api");
    // The policy between two apps this apply created waits for their pushes, then the CLI's
    // second apply adds it.
    let policy = format!("{} -> {} tcp 8080", n.web, n.api);
    assert!(
        out.stdout
            .contains(&format!("+ add network policy {policy}")),
        "{out:?}"
    );
    let list = p.cli(&["network-policies", "--json"]);
    let v: Value = serde_json::from_str(&list.stdout).unwrap();
    assert!(
        v["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["source"] == n.web.as_str() && x["destination"] == n.api.as_str()),
        "{v}"
    );
    let api = p.app_json(&n.api).unwrap();
    assert_eq!(api["services"], serde_json::json!([n.creds]), "{api}");
    assert_eq!(api["memory_mb"], 96);
    let (web_rev, api_rev) = (revision(&p, &n.web), revision(&p, &n.api));
    let web_containers = p.containers_of(&n.web);

    // Second apply of the same file: an empty plan, nothing new anywhere.
    let out = p.cli(&["apply", "-f", file_arg, "--json"]);
    assert!(out.ok(), "{out:?}");
    let plan = plan_json(&out);
    assert_eq!(plan["changes"], serde_json::json!([]), "{plan}");
    assert_eq!(plan["push"], serde_json::json!([]), "{plan}");
    let out = p.cli(&["apply", "-f", file_arg]);
    assert!(out.stdout.contains("no changes"), "{out:?}");
    assert_eq!(revision(&p, &n.web), web_rev);
    assert_eq!(revision(&p, &n.api), api_rev);
    assert_eq!(running(&p, &n.web, 2), web_before);
    assert_eq!(running(&p, &n.api, 1), api_before);
    assert_eq!(p.containers_of(&n.web), web_containers);

    // An edit: web 2 -> 3 instances, a new greeting and more memory for api. The dry run lists
    // exactly that and changes nothing.
    std::fs::write(&file, document(&n, 3, Some(("Hello again", 112)))).unwrap();
    let out = p.cli(&["apply", "-f", file_arg, "--dry-run", "--json"]);
    assert!(out.ok(), "{out:?}");
    let plan = plan_json(&out);
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3, "{plan}");
    assert_eq!(changes[0]["kind"], "scale");
    assert_eq!(changes[0]["app"], n.web.as_str());
    assert_eq!(
        (changes[0]["before"].clone(), changes[0]["after"].clone()),
        ("2".into(), "3".into())
    );
    assert_eq!(changes[1]["kind"], "set_memory");
    assert_eq!(changes[1]["app"], n.api.as_str());
    assert_eq!(changes[1]["after"], "112 MB");
    assert_eq!(changes[2]["kind"], "set_env");
    assert_eq!(changes[2]["target"], "GREETING");
    assert_eq!(changes[2]["after"], "Hello again");
    assert!(changes.iter().all(|c| c["applied"] == false), "{plan}");
    let out = p.cli(&["apply", "-f", file_arg, "--dry-run"]);
    assert!(
        out.stdout
            .contains(&format!("~ scale {} web: 2 -> 3", n.web)),
        "{out:?}"
    );
    assert_eq!(p.app_json(&n.web).unwrap()["desired_instances"], 2);
    assert_eq!(revision(&p, &n.api), api_rev);
    assert_eq!(p.app_json(&n.api).unwrap()["memory_mb"], 96);

    // Applied: one scale (no new revision of web), one new revision of api for both fields.
    let out = p.cli(&["apply", "-f", file_arg, "--json"]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    let plan = plan_json(&out);
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["applied"] == true),
        "{plan}"
    );
    running(&p, &n.web, 3);
    assert_eq!(revision(&p, &n.web), web_rev);
    assert_eq!(revision(&p, &n.api), api_rev + 1);
    serves(&p, &n.api, "Hello again");
    assert_eq!(p.app_json(&n.api).unwrap()["memory_mb"], 112);
    running(&p, &n.api, 1);
    // And the edited file applied again is no change either.
    let out = p.cli(&["apply", "-f", file_arg, "--json"]);
    assert_eq!(plan_json(&out)["changes"], serde_json::json!([]), "{out:?}");
    assert_eq!(revision(&p, &n.api), api_rev + 1);

    // The file no longer names api: `--prune` refuses without a terminal or --yes, then
    // deletes it, listing it in the plan.
    std::fs::write(&file, document(&n, 3, None)).unwrap();
    let out = p.cli(&["apply", "-f", file_arg, "--prune"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--yes"), "{out:?}");
    assert!(
        out.stdout.contains(&format!("- delete app {}", n.api)),
        "{out:?}"
    );
    assert!(
        p.app_json(&n.api).is_ok(),
        "not deleted without confirmation"
    );
    let out = p.cli(&["apply", "-f", file_arg, "--prune", "--yes"]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("- remove network policy {policy}")),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!("- delete app {}", n.api)),
        "{out:?}"
    );
    assert!(p.app_json(&n.api).is_err(), "{} is deleted", n.api);
    assert_eq!(revision(&p, &n.web), web_rev);
    let out = p.cli(&["apply", "-f", file_arg, "--prune", "--json"]);
    assert_eq!(plan_json(&out)["changes"], serde_json::json!([]), "{out:?}");

    // A changed folder is pushed again (and only then): one new revision of web.
    let app_py = dir.path().join("web").join("app.py");
    let mut code = std::fs::read_to_string(&app_py).unwrap();
    code.push_str("\n# changed by the apply test\n");
    std::fs::write(&app_py, code).unwrap();
    let out = p.cli(&["apply", "-f", file_arg, "--dry-run", "--json"]);
    let plan = plan_json(&out);
    assert_eq!(plan["push"], serde_json::json!([n.web]), "{plan}");
    assert_eq!(plan["changes"].as_array().unwrap().len(), 1, "{plan}");
    assert_eq!(plan["changes"][0]["kind"], "push", "{plan}");
    assert_eq!(revision(&p, &n.web), web_rev);
    let out = p.cli(&["apply", "-f", file_arg]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout.contains(&format!("~ push {} source", n.web)),
        "{out:?}"
    );
    assert_eq!(revision(&p, &n.web), web_rev + 1);
    running(&p, &n.web, 3);
    let out = p.cli(&["apply", "-f", file_arg, "--json"]);
    assert_eq!(plan_json(&out)["changes"], serde_json::json!([]), "{out:?}");

    // A bad document is refused with the field and the line, and changes nothing.
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        document(&n, 1, None).replace("memory: 96M", "memory: 12XB"),
    )
    .unwrap();
    let out = p.cli(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("memory"), "{out:?}");
    assert!(out.stderr.contains("line 6"), "{out:?}");
    // The REST API checks the same document itself: a process field of the wrong type.
    let admin = p.admin_token().unwrap();
    let body = serde_json::json!({
        "applications": [{"name": n.web, "processes": [{"type": "web", "instances": "many"}]}]
    });
    let (s, b) = call(
        &p,
        &admin,
        reqwest::Method::POST,
        "/v1/spaces/default/default/apply",
        Some(body.clone()),
        None,
    );
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "bad_request", "{b}");
    assert!(b["message"].as_str().unwrap().contains("instances"), "{b}");
    assert_eq!(p.app_json(&n.web).unwrap()["desired_instances"], 3);
    assert_eq!(revision(&p, &n.web), web_rev + 1);

    // A viewer of the space reads it but cannot apply to it.
    let (_, viewer, _) = user_with_role(
        &p,
        &admin,
        "ap-viewer",
        serde_json::json!({"space": "default/default", "role": "viewer"}),
    );
    let body = serde_json::json!({"applications": [{"name": n.web, "instances": 1}]});
    let (s, b) = call(
        &p,
        &viewer,
        reqwest::Method::POST,
        "/v1/spaces/default/default/apply?dry_run=true",
        Some(body),
        None,
    );
    assert_eq!(s, 403, "{b}");
    assert_eq!(b["code"], "forbidden", "{b}");
    assert_eq!(p.app_json(&n.web).unwrap()["desired_instances"], 3);
}
