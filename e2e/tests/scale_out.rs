//! Beyond one machine (issue 20), end to end with the real binaries: the controller keeps its
//! blobs in a real S3-compatible server (moto's), two agents advertise different loopback
//! addresses (as two hosts would), the built-in and a standalone router reach instances on both,
//! and the standalone router, following a list of controllers of which the first never answers,
//! keeps serving once the controller is gone.

use paas_e2e::{unique, wait_for, Options, Platform, S3Server, StandaloneRouter};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps")
        .join("probe")
}

/// Instance index -> the IP it is published on, once `n` instances run.
fn running_addresses(p: &Platform, app: &str, n: usize) -> Option<BTreeMap<String, String>> {
    let v = p.app_json(app).ok()?;
    let list = v["instances"].as_array()?;
    if list.len() != n || !list.iter().all(|i| i["state"] == "running") {
        return None;
    }
    list.iter()
        .map(|i| {
            let addr = i["address"].as_str()?;
            let ip = addr.rsplit_once(':')?.0.to_string();
            Some((i["index"].to_string(), ip))
        })
        .collect()
}

#[test]
fn s3_blobstore_remote_agents_and_a_router_that_outlives_the_controller() {
    let s3 = S3Server::start().expect("moto S3 server");
    let mut p = Platform::start_server(Options {
        server_env: s3.server_env("paas/blobs"),
        ..Options::default()
    })
    .expect("controller on the S3 blobstore");
    for (zone, ip) in [("zone-a", "127.0.0.2"), ("zone-b", "127.0.0.3")] {
        p.start_agent_with(&unique("far"), zone, &[("PAAS_ADVERTISE_ADDR", ip)])
            .expect("agent");
    }
    p.login().unwrap();

    let app = unique("far");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        probe().to_str().unwrap(),
        "-i",
        "4",
        "-m",
        "64M",
    ]);
    assert!(out.ok(), "push failed: {out:?}");

    // Package, droplet and the upload's file cache went to the bucket; nothing to the local
    // folder the single-machine store would use.
    let keys = s3.keys().unwrap();
    assert!(
        keys.len() >= 3 && keys.iter().all(|k| k.starts_with("paas/blobs/")),
        "{keys:?}"
    );
    assert!(!p.data_dir().join("blobs").exists());

    // Spread over both zones, each instance published on its own node's advertised address.
    let by_index = wait_for(Duration::from_secs(60), "4 running instances", || {
        running_addresses(&p, &app, 4)
    })
    .unwrap();
    let ips: BTreeSet<&str> = by_index.values().map(String::as_str).collect();
    assert_eq!(
        ips,
        BTreeSet::from(["127.0.0.2", "127.0.0.3"]),
        "{by_index:?}"
    );

    // The controller's own router reaches instances on both addresses.
    let client = reqwest::blocking::Client::builder()
        .resolve(&format!("{app}.localhost"), p.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut reached = BTreeSet::new();
    for _ in 0..16 {
        let r = client
            .get(format!("http://{app}.localhost:{}/", p.addr.port()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let index = r.headers()["x-paas-instance"].to_str().unwrap().to_string();
        reached.insert(by_index[&index].clone());
    }
    assert_eq!(reached.len(), 2, "{reached:?}");

    // A standalone router given two controllers, the first of which never answers, follows the
    // second and reaches both addresses too.
    let router = StandaloneRouter::start(&p, &format!("http://127.0.0.1:1,{}", p.api_url()));
    let host = format!("{app}.localhost");
    wait_for(
        Duration::from_secs(20),
        "the standalone router to serve the app",
        || (router.get(&host, "/")?.0 == 200).then_some(()),
    )
    .unwrap();
    let mut reached = BTreeSet::new();
    for _ in 0..16 {
        let (status, served_by, index) = router.get(&host, "/").unwrap();
        assert_eq!((status, served_by.as_str()), (200, app.as_str()));
        reached.insert(by_index[&index].clone());
    }
    assert_eq!(reached.len(), 2, "{reached:?}");

    // No controller answers any more: the last known table still serves every request.
    p.kill_server();
    for _ in 0..20 {
        let (status, served_by, _) = router.get(&host, "/").unwrap();
        assert_eq!((status, served_by.as_str()), (200, app.as_str()));
    }
}
