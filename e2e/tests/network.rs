//! App-to-app networking end to end (issue 25), on the real engine with two agents, each with an
//! instance network (subnet) of its own, as nodes on two hosts have: app A (a caller that
//! resolves and connects on request) runs on one node, app B (two instances, another space) on
//! the other. B mapped at `NAME.apps.internal` resolves, inside A, to exactly B's instance
//! addresses (`0.NAME.apps.internal` to instance 0's); A cannot connect to B before a policy,
//! can after `add-network-policy A B --port 8080`, cannot again after its removal; the same for
//! C beside B on one node. A developer of only one of the spaces is refused; the public router
//! never serves the internal name.

use paas_e2e::{call, create_space, example, unique, user_with_role, wait_for, Options, Platform};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// The caller: `/resolve?host=H` answers the IPv4 addresses H resolves to inside the instance,
/// `/connect?host=H&port=P` whether a TCP connection opens within 2 s.
const CALLER: &str = r#"import json, os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        host = q.get("host", [""])[0]
        try:
            if u.path == "/resolve":
                infos = socket.getaddrinfo(host, 8080, socket.AF_INET, socket.SOCK_STREAM)
                out = {"ok": True, "ips": sorted({i[4][0] for i in infos})}
            else:
                s = socket.create_connection((host, int(q.get("port", ["8080"])[0])), timeout=2)
                s.close()
                out = {"ok": True}
        except Exception as e:
            out = {"ok": False, "error": repr(e)}
        body = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), H).serve_forever()
"#;

/// What the caller answered for `path`, once it answers at all.
fn ask(p: &Platform, app: &str, path: &str) -> Option<Value> {
    let (status, body) = p.get_app(app, path).ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn can_connect(p: &Platform, app: &str, host: &str) -> Option<bool> {
    ask(p, app, &format!("/connect?host={host}&port=8080")).map(|v| v["ok"] == true)
}

fn resolved(p: &Platform, app: &str, host: &str) -> Option<BTreeSet<String>> {
    let v = ask(p, app, &format!("/resolve?host={host}"))?;
    (v["ok"] == true).then(|| {
        v["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect()
    })
}

#[test]
fn apps_reach_each_other_by_internal_name_only_where_a_policy_allows() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    let (node_a, node_b) = p.start_two_sides("e2e-net").unwrap();
    p.login().unwrap();
    let admin = p.admin_token().unwrap();

    // A in the default space, on node a.
    let a = unique("caller");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), CALLER).unwrap();
    let out = p.cli(&[
        "push",
        &a,
        "-p",
        dir.path().to_str().unwrap(),
        "--placement",
        "side=a",
    ]);
    assert!(out.ok(), "push A: {out:?}{}", p.logs());

    // B in a space of its own, two instances on node b, named b-….apps.internal.
    let space_b = format!("default/{}", unique("net"));
    create_space(&p, &admin, &space_b);
    assert!(p.cli(&["target", &space_b]).ok());
    let b = unique("callee");
    let out = p.cli(&[
        "push",
        &b,
        "-p",
        example("python-app").to_str().unwrap(),
        "-i",
        "2",
        "--placement",
        "side=b",
    ]);
    assert!(out.ok(), "push B: {out:?}{}", p.logs());
    let name = unique("b");
    let out = p.cli(&["map-route", &b, "apps.internal", "--hostname", &name]);
    assert!(out.ok(), "map-route: {out:?}");
    assert!(
        out.stdout.contains(&format!("{name}.apps.internal")),
        "{out:?}"
    );
    assert!(p.cli(&["target", "default/default"]).ok());
    let host = format!("{name}.apps.internal");

    let b_instances = wait_for(
        Duration::from_secs(90),
        "B's 2 instances with addresses",
        || p.running_instances(Some(&space_b), &b, 2),
    )
    .unwrap();
    assert!(
        b_instances.iter().all(|(_, node, _)| *node == node_b),
        "B runs on node b only: {b_instances:?}"
    );
    let a_instances = wait_for(Duration::from_secs(90), "A running", || {
        p.running_instances(Some("default/default"), &a, 1)
    })
    .unwrap();
    assert_eq!(a_instances[0].1, node_a, "A on the other node");
    let b_ips: BTreeSet<String> = b_instances.iter().map(|(_, _, ip)| ip.clone()).collect();
    assert_eq!(b_ips.len(), 2, "two addresses: {b_instances:?}");
    assert_ne!(
        subnet_of(&format!("paas-net-{node_a}")),
        subnet_of(&format!("paas-net-{node_b}")),
        "each node has its own instance subnet"
    );

    // Discovery: all of B's instances, and instance 0 alone.
    wait_for(
        Duration::from_secs(30),
        "the name to resolve to B's instances",
        || resolved(&p, &a, &host).filter(|ips| *ips == b_ips),
    )
    .unwrap();
    let zero = b_instances
        .iter()
        .find(|(i, _, _)| *i == 0)
        .unwrap()
        .2
        .clone();
    assert_eq!(
        resolved(&p, &a, &format!("0.{host}")),
        Some(BTreeSet::from([zero]))
    );
    let missing = ask(
        &p,
        &a,
        &format!("/resolve?host=nobody-{name}.apps.internal"),
    )
    .unwrap();
    assert_eq!(missing["ok"], false, "an unknown internal name: {missing}");
    // The public router never serves an internal route.
    // The public router never serves an internal route: the host gets what any host no route
    // names gets (the controller's own pages), never B.
    let (status, body) = p.get_host(&host, "/").unwrap();
    let (unknown_status, _) = p
        .get_host(&format!("{}.example", unique("none")), "/")
        .unwrap();
    assert_eq!(status, unknown_status, "{host}: {body}");
    assert!(
        !body.contains("Hello from paas"),
        "B answered {host}: {body}"
    );
    let (status, body) = p.get_app(&b, "/").unwrap();
    assert!(
        status == 200 && body.contains("Hello from paas"),
        "B's public route: {body}"
    );

    // Deny by default: A cannot connect to B (another node, another subnet).
    assert_eq!(can_connect(&p, &a, &host), Some(false), "no policy yet");

    // Authorization: a developer of A's space who only views B's is refused; one with no role
    // in B's space does not learn B exists.
    let (viewer_name, viewer_dev, _) = user_with_role(
        &p,
        &admin,
        "netdev",
        json!({"space": "default/default", "role": "developer"}),
    );
    let (_, other_dev, _) = user_with_role(
        &p,
        &admin,
        "netdev2",
        json!({"space": "default/default", "role": "developer"}),
    );
    let (s, _) = call(
        &p,
        &admin,
        reqwest::Method::PUT,
        &format!("/v1/users/{viewer_name}/roles"),
        Some(json!({"space": space_b, "role": "viewer"})),
        None,
    );
    assert_eq!(s, 200);
    let body = json!({"source": a, "destination": b, "ports": "8080"});
    let (s, err) = call(
        &p,
        &viewer_dev,
        reqwest::Method::POST,
        "/v1/network-policies",
        Some(body.clone()),
        None,
    );
    assert_eq!((s, err["code"].as_str()), (403, Some("forbidden")), "{err}");
    let (s, err) = call(
        &p,
        &other_dev,
        reqwest::Method::POST,
        "/v1/network-policies",
        Some(body.clone()),
        None,
    );
    assert_eq!(
        (s, err["code"].as_str()),
        (404, Some("app_not_found")),
        "{err}"
    );
    let (s, err) = call(
        &p,
        &admin,
        reqwest::Method::POST,
        "/v1/network-policies",
        Some(json!({"source": a, "destination": b, "ports": "9-8"})),
        None,
    );
    assert_eq!(
        (s, err["code"].as_str()),
        (400, Some("invalid_network_policy")),
        "{err}"
    );

    // A policy opens exactly that: A -> B on 8080.
    let out = p.cli(&[
        "add-network-policy",
        &a,
        &b,
        "--port",
        "8080",
        "--destination-space",
        &space_b,
    ]);
    assert!(out.ok(), "add-network-policy: {out:?}");
    let list = p.cli(&["network-policies", "--json"]);
    let v: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v["policies"][0]["source"], a.as_str(), "{v}");
    assert_eq!(
        v["policies"][0]["destination_space"],
        space_b.as_str(),
        "{v}"
    );
    wait_for(
        Duration::from_secs(30),
        "A to reach B after the policy",
        || can_connect(&p, &a, &host).filter(|ok| *ok),
    )
    .unwrap();
    // Each instance of B, by its own name.
    for (index, _, _) in &b_instances {
        assert_eq!(
            can_connect(&p, &a, &format!("{index}.{host}")),
            Some(true),
            "instance {index}"
        );
    }
    // Only that direction and port: B's instances' other ports stay closed.
    let other_port = ask(&p, &a, &format!("/connect?host={host}&port=8081")).unwrap();
    assert_eq!(other_port["ok"], false, "{other_port}");
    let again = p.cli(&[
        "add-network-policy",
        &a,
        &b,
        "--port",
        "8080",
        "--destination-space",
        &space_b,
    ]);
    assert!(
        !again.ok() && again.stderr.contains("conflict"),
        "{again:?}"
    );

    // Removed: refused again.
    let out = p.cli(&["remove-network-policy", &a, &b, "--port", "8080"]);
    assert!(out.ok(), "remove-network-policy: {out:?}");
    wait_for(
        Duration::from_secs(30),
        "A refused after the removal",
        || can_connect(&p, &a, &host).filter(|ok| !*ok),
    )
    .unwrap();
    let empty = p.cli(&["network-policies"]);
    assert!(empty.stdout.contains("No network policies"), "{empty:?}");
    let (_, events) = call(
        &p,
        &admin,
        reqwest::Method::GET,
        &format!("/v1/apps/{b}/events"),
        None,
        Some(&space_b),
    );
    let text = events.to_string();
    assert!(
        text.contains("network_policy.add") && text.contains("network_policy.remove"),
        "{text}"
    );

    // The same on one node: C beside B on node b's bridge is refused until a policy names it,
    // and A's stays refused by C's policy.
    let c = unique("neighbour");
    let out = p.cli(&[
        "push",
        &c,
        "-p",
        dir.path().to_str().unwrap(),
        "--placement",
        "side=b",
    ]);
    assert!(out.ok(), "push C: {out:?}{}", p.logs());
    let c_instances = wait_for(Duration::from_secs(90), "C running", || {
        p.running_instances(Some("default/default"), &c, 1)
    })
    .unwrap();
    assert_eq!(c_instances[0].1, node_b, "C on B's node");
    assert_eq!(can_connect(&p, &c, &host), Some(false), "no policy for C");
    let out = p.cli(&[
        "add-network-policy",
        &c,
        &b,
        "--port",
        "8080",
        "--destination-space",
        &space_b,
    ]);
    assert!(out.ok(), "add-network-policy C: {out:?}");
    wait_for(
        Duration::from_secs(30),
        "C to reach B on the same bridge",
        || can_connect(&p, &c, &host).filter(|ok| *ok),
    )
    .unwrap();
    assert_eq!(can_connect(&p, &a, &host), Some(false), "A still has none");

    // Unmapped: the name no longer resolves.
    assert!(p.cli(&["target", &space_b]).ok());
    let out = p.cli(&["unmap-route", &b, "apps.internal", "--hostname", &name]);
    assert!(out.ok(), "unmap-route: {out:?}");
    assert!(p.cli(&["target", "default/default"]).ok());
    wait_for(Duration::from_secs(30), "the name to be gone", || {
        ask(&p, &a, &format!("/resolve?host={host}")).filter(|v| v["ok"] == false)
    })
    .unwrap();
}

/// The subnet of a Docker network, as the engine's IPAM gave it.
fn subnet_of(network: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "-f",
            "{{(index .IPAM.Config 0).Subnet}}",
            network,
        ])
        .output()
        .expect("docker network inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
