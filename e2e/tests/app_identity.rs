//! Two apps verify each other by their instance certificates (issue 25): A and B run the identity
//! probe (`e2e/apps/identity`) on two nodes with instance networks of their own; B is mapped at
//! `NAME.apps.internal` and a policy lets A reach B's mTLS port. A's instance then makes a mutual
//! TLS handshake with B by that name: A checks B's certificate against the platform CA and B's
//! instance guid, B requires and checks A's; each side reports the other's app in its SAN URI.
//! Before the policy the same handshake cannot even connect.

use paas_e2e::{unique, wait_for, Options, Platform};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

fn identity_app() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps")
        .join("identity")
}

fn get_json(p: &Platform, app: &str, path: &str) -> Option<Value> {
    let (status, body) = p.get_app(app, path).ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn sans(side: &Value) -> Vec<String> {
    side["san"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[test]
fn two_apps_on_two_nodes_verify_each_other_by_instance_certificates() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    let (node_a, node_b) = p.start_two_sides("e2e-mtls").unwrap();
    p.login().unwrap();

    let a = unique("mtls-a");
    let b = unique("mtls-b");
    for (app, side) in [(&a, "side=a"), (&b, "side=b")] {
        let out = p.cli(&[
            "push",
            app,
            "-p",
            identity_app().to_str().unwrap(),
            "-m",
            "64M",
            "--placement",
            side,
        ]);
        assert!(out.ok(), "push {app}: {out:?}{}", p.logs());
    }
    let name = unique("mtls");
    let out = p.cli(&["map-route", &b, "apps.internal", "--hostname", &name]);
    assert!(out.ok(), "map-route: {out:?}");

    let node_of = |app: &str| p.running_instances(None, app, 1).map(|i| i[0].1.clone());
    let a_node = wait_for(Duration::from_secs(90), "A running", || node_of(&a)).unwrap();
    let b_node = wait_for(Duration::from_secs(90), "B running", || node_of(&b)).unwrap();
    assert_eq!((a_node, b_node), (node_a, node_b), "one app per node");
    // Both have their credentials before anything is asked of them; each names its app (the
    // id `VCAP_APPLICATION` gives) and instance.
    let ids: Vec<(String, String)> = [&a, &b]
        .iter()
        .map(|app| {
            let j = wait_for(Duration::from_secs(60), "the instance's identity", || {
                get_json(&p, app, "/identity").filter(|j| j["cert"].is_string())
            })
            .unwrap();
            (
                j["vcap"]["application_id"].as_str().unwrap().to_string(),
                j["instance_guid"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (a_id, b_id, b_guid) = (ids[0].0.clone(), ids[1].0.clone(), ids[1].1.clone());

    let mtls = format!("/mtls?addr={name}.apps.internal:8443&name={b_guid}&timeout=3");
    // Deny by default: without a policy A does not reach B's mTLS port at all.
    // (Once the name resolves on A's node: the connect itself times out, dropped.)
    wait_for(
        Duration::from_secs(30),
        "A's handshake to time out without a policy",
        || {
            get_json(&p, &a, &mtls).filter(|v| {
                v["ok"] == false && v["error"].as_str().is_some_and(|e| e.contains("timed out"))
            })
        },
    )
    .unwrap();

    let out = p.cli(&["add-network-policy", &a, &b, "--port", "8443"]);
    assert!(out.ok(), "add-network-policy: {out:?}");
    let seen = wait_for(
        Duration::from_secs(30),
        "A's mutual TLS handshake with B",
        || get_json(&p, &a, &mtls).filter(|v| v["ok"] == true),
    )
    .unwrap();
    // A saw B's certificate (checked against the platform CA and B's instance guid by Python's
    // ssl), naming B's app; B required A's and saw it name A's app.
    let client_saw = sans(&seen["client_saw"]);
    let server_saw = sans(&seen["server_saw"]);
    assert!(
        client_saw
            .iter()
            .any(|s| s.contains(&format!("/app/{b_id}"))),
        "A saw B: {seen}"
    );
    assert!(
        server_saw
            .iter()
            .any(|s| s.contains(&format!("/app/{a_id}"))),
        "B saw A: {seen}"
    );
    assert!(
        client_saw.iter().any(|s| s.contains(&b_guid)),
        "B's certificate names its instance: {seen}"
    );

    // Removing the policy closes the path again.
    let out = p.cli(&["remove-network-policy", &a, &b, "--port", "8443"]);
    assert!(out.ok(), "remove-network-policy: {out:?}");
    wait_for(Duration::from_secs(30), "A refused again", || {
        get_json(&p, &a, &mtls).filter(|v| {
            v["ok"] == false && v["error"].as_str().is_some_and(|e| e.contains("timed out"))
        })
    })
    .unwrap();
}
