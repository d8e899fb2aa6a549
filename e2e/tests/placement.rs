//! Placement labels end to end: two real agents with different node labels
//! (`PAAS_NODE_LABELS`). An app pushed with `--placement disk=ssd` runs only on the ssd node; an
//! app whose manifest asks for a label no node has waits for such a node to stage on, and the
//! push says why; an instance asking for it stays pending with the reason, in the push's error
//! and in `paas app`; pushing again with a label a node has places it there.

use paas_e2e::{example, unique, wait_for, Options, Platform};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

fn instances(p: &Platform, app: &str) -> Vec<Value> {
    p.app_json(app)
        .map(|v| v["instances"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

/// The nodes of the app's instances, once exactly `n` instances exist and all run.
fn nodes_when_running(p: &Platform, app: &str, n: usize) -> Option<BTreeSet<String>> {
    let list = instances(p, app);
    (list.len() == n && list.iter().all(|i| i["state"] == "running")).then(|| {
        list.iter()
            .filter_map(|i| i["node"].as_str().map(str::to_string))
            .collect()
    })
}

#[test]
fn instances_land_only_on_nodes_with_the_app_s_labels() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    let ssd = unique("e2e-ssd");
    let hdd = unique("e2e-hdd");
    p.start_agent_with(&ssd, "zone-a", &[("PAAS_NODE_LABELS", "disk=ssd")])
        .unwrap();
    p.start_agent_with(&hdd, "zone-b", &[("PAAS_NODE_LABELS", "disk=hdd,tier=2")])
        .unwrap();
    p.login().unwrap();
    let nodes = p.cli(&["nodes"]);
    assert!(
        nodes.stdout.contains("disk=ssd") && nodes.stdout.contains("disk=hdd,tier=2"),
        "{nodes:?}"
    );

    // Three instances with --placement disk=ssd: all on the ssd node, though spread would put
    // some on the other node.
    let app = unique("placed");
    let dir = example("python-app");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        dir.to_str().unwrap(),
        "-i",
        "3",
        "--placement",
        "disk=ssd",
    ]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    let on = wait_for(Duration::from_secs(60), "3 running", || {
        nodes_when_running(&p, &app, 3)
    })
    .unwrap();
    assert_eq!(on, BTreeSet::from([ssd.clone()]), "only on the ssd node");
    assert_eq!(p.app_json(&app).unwrap()["placement_labels"]["disk"], "ssd");
    let text = p.cli(&["app", &app]).stdout;
    assert!(text.contains("placement:  disk=ssd"), "{text}");

    // A manifest asking for a label no node has: its build waits for such a node, saying why,
    // and the push gives up after its timeout with the reason.
    let lonely = unique("unplaced");
    let mdir = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("app.py"), mdir.path().join("app.py")).unwrap();
    std::fs::write(
        mdir.path().join("paas.yml"),
        format!("applications:\n- name: {lonely}\n  placement-labels:\n    gpu: \"yes\"\n"),
    )
    .unwrap();
    let out = p.cli_in(&["push", "--timeout", "8"], Some(mdir.path()));
    assert!(!out.ok(), "nothing can run it: {out:?}");
    let reason = "no node is available with the placement labels gpu=yes";
    assert!(
        out.stderr.contains(&format!(
            "did not start within 8 s: waiting for a node to stage on: {reason}"
        )),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("[STG] Waiting for a node to stage on: {reason}")),
        "{out:?}"
    );
    assert!(
        instances(&p, &lonely).is_empty(),
        "nothing staged, nothing placed"
    );

    // An app whose droplet exists (no build) asking for that label: its new instance cannot be
    // placed, and the push says so at once with the scheduler's reason; the old instances serve.
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        dir.to_str().unwrap(),
        "--placement",
        "gpu=yes",
    ]);
    assert!(!out.ok(), "{out:?}");
    assert!(
        out.stderr.contains(reason) && out.stderr.contains("(no_node_available)"),
        "{out:?}"
    );
    let list = instances(&p, &app);
    let pending: Vec<&Value> = list.iter().filter(|i| i["state"] == "pending").collect();
    assert!(
        pending.iter().any(|i| i["placement_error"]
            .as_str()
            .is_some_and(|e| e.contains(reason))),
        "{list:?}"
    );
    assert_eq!(
        list.iter().filter(|i| i["state"] == "running").count(),
        3,
        "the previous revision keeps serving: {list:?}"
    );
    let text = p.cli(&["app", &app]).stdout;
    assert!(text.contains(reason), "{text}");

    // The flag overrides the manifest: with a label the hdd node has, it runs there.
    let out = p.cli_in(
        &["push", "--placement", "tier=2", "--timeout", "60"],
        Some(mdir.path()),
    );
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    let on = wait_for(Duration::from_secs(60), "1 running", || {
        nodes_when_running(&p, &lonely, 1)
    })
    .unwrap();
    assert_eq!(on, BTreeSet::from([hdd.clone()]));

    for a in [&app, &lonely] {
        let out = p.cli(&["delete", a, "-f"]);
        assert!(out.ok(), "{out:?}");
    }
}
