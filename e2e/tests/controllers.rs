//! Several controllers (issue 20), end to end with the real binaries: two controllers on one
//! PostgreSQL database and one S3-compatible blobstore (moto's), two agents advertising different
//! loopback addresses (as two hosts would), each talking to a different controller first, and a
//! standalone router following both. A push through one controller stages on a node that talks
//! to the other (staging and its live lines cross controllers), both controllers' live log
//! streams carry the lines of both nodes, `paas ssh` through one controller reaches an instance
//! whose node talks to the other, and after `kill -9` of the leader the survivor takes
//! over: a scale through it is placed, reached and served, with every instance placed once.

use paas_e2e::{
    example, unique, wait_for, zip_dir, Controller, Options, PgDatabase, Platform, S3Server,
    StandaloneRouter,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn get(base: &str, token: &str, path: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_default()
}

fn login(base: &str, password: &str) -> String {
    let v: Value = reqwest::blocking::Client::new()
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["token"].as_str().unwrap().to_string()
}

fn leads(base: &str) -> bool {
    reqwest::blocking::get(format!("{base}/v1/info"))
        .and_then(|r| r.json::<Value>())
        .is_ok_and(|v| v["leader"] == true)
}

/// The sources of the app's live log lines seen on `base`'s stream, as they come.
fn follow_sources(base: &str, token: &str, app: &str) -> Arc<Mutex<BTreeSet<String>>> {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let resp = reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .unwrap()
        .get(format!("{base}/v1/apps/{app}/logs/stream?limit=0"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out = seen.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { return };
            if let Some(json) = line.strip_prefix("data: ") {
                if let Ok(v) = serde_json::from_str::<Value>(json) {
                    if let Some(s) = v["source"].as_str() {
                        out.lock().unwrap().insert(s.to_string());
                    }
                }
            }
        }
    });
    seen
}

/// Pushes `dir` through `base` as a streamed push; answers the NDJSON lines.
fn streamed_push(base: &str, token: &str, app: &str, zip: Vec<u8>) -> Vec<Value> {
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
        .post(format!("{base}/v1/apps/{app}/push"))
        .bearer_auth(token)
        .header("Accept", "application/x-ndjson")
        .multipart(
            reqwest::blocking::multipart::Form::new()
                .text("instances", "2")
                .text("memory_mb", "64")
                .part(
                    "archive",
                    reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
                ),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    BufReader::new(resp)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

/// (index, node, address) of the app's running instances as `base` shows them, once `n` run.
fn running(base: &str, token: &str, app: &str, n: usize) -> Option<Vec<(u64, String, String)>> {
    let v = get(base, token, &format!("/v1/apps/{app}"));
    let list = v["instances"].as_array()?;
    let running: Vec<_> = list
        .iter()
        .filter(|i| i["state"] == "running")
        .map(|i| {
            (
                i["index"].as_u64().unwrap_or(u64::MAX),
                i["node"].as_str().unwrap_or_default().to_string(),
                i["address"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    (list.len() == n && running.len() == n).then_some(running)
}

#[test]
fn two_controllers_share_push_logs_and_placement_and_the_survivor_takes_over_after_kill_9() {
    let db = PgDatabase::create().expect("a database of the test's own");
    let s3 = S3Server::start().expect("moto S3 server");
    let mut env = s3.server_env("paas/shared");
    env.push(("PAAS_DATABASE_URL".into(), db.url.clone()));
    let mut p = Platform::start_server(Options {
        server_env: env.clone(),
        ..Options::default()
    })
    .expect("controller A");
    let a = p.api_url();
    wait_for(Duration::from_secs(30), "A to lead", || {
        leads(&a).then_some(())
    })
    .unwrap();
    let ctl_b = Controller::start(&p, &env).expect("controller B");
    let b = ctl_b.api_url();
    assert!(!leads(&b), "one leader");

    // Node 1 talks to B first, node 2 to A first; each moves to the other when its own dies.
    // Names in that order: with equal room the scheduler breaks ties by name, so the build lands
    // on node 1, behind B, while the push waits on A.
    let n1 = unique("ctl-a");
    let n2 = unique("ctl-b");
    p.start_agent_with(
        &n1,
        "zone-a",
        &[
            ("PAAS_CONTROLLER", &format!("{b},{a}")),
            ("PAAS_ADVERTISE_ADDR", "127.0.0.2"),
        ],
    )
    .expect("agent 1");
    p.start_agent_with(
        &n2,
        "zone-b",
        &[
            ("PAAS_CONTROLLER", &format!("{a},{b}")),
            ("PAAS_ADVERTISE_ADDR", "127.0.0.3"),
        ],
    )
    .expect("agent 2");
    let router = StandaloneRouter::start(&p, &format!("{a},{b}"));
    let token_a = login(&a, &p.admin_password);

    // Push through A: the staging node reports through B, and A's push stream still shows
    // the node's staging lines live and ends succeeded.
    let app = unique("two");
    let lines = streamed_push(&a, &token_a, &app, zip_dir(&example("python-app")));
    let last = lines.last().expect("push lines");
    assert_eq!(last["status"], "succeeded", "{lines:#?}");
    let staging: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "staging" && l["node"].is_string())
        .collect();
    assert_eq!(staging[0]["node"], n1.as_str(), "{lines:#?}");
    // The buildpack's output ("-----> ...") is written by the node, so it came through B.
    let from_node: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "log" && l["source"] == "STG")
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.starts_with("-----> "))
        .collect();
    assert!(
        !from_node.is_empty(),
        "no staging line of the node: {lines:#?}"
    );

    // B shows the app as A deployed it, with one instance on each advertised address.
    let token_b = login(&b, &p.admin_password);
    let on_b = wait_for(
        Duration::from_secs(60),
        "2 instances running, seen on B",
        || running(&b, &token_b, &app, 2),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", get(&b, &token_b, &format!("/v1/apps/{app}"))));
    let addrs: BTreeSet<&str> = on_b
        .iter()
        .map(|(_, _, addr)| addr.rsplit_once(':').unwrap().0)
        .collect();
    assert_eq!(
        addrs,
        BTreeSet::from(["127.0.0.2", "127.0.0.3"]),
        "{on_b:?}"
    );

    // ssh through A into the instance on node 1, whose agent long-polls B: the offer goes
    // through the database, the node dials A back.
    p.login().unwrap();
    let on_n1 = on_b
        .iter()
        .find(|(_, node, _)| *node == n1)
        .expect("an instance on node 1");
    let index = on_n1.0.to_string();
    let out = p.cli(&[
        "ssh",
        &app,
        "-i",
        &index,
        "-c",
        "echo via-$PAAS_INSTANCE_INDEX; exit 4",
    ]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stdout.contains(&format!("via-{index}")), "{out:?}");

    // Both controllers' live streams carry the lines of both instances: each node ships its
    // lines to a different controller.
    let seen_a = follow_sources(&a, &token_a, &app);
    let seen_b = follow_sources(&b, &token_b, &app);
    let host = format!("{app}.localhost");
    let want: BTreeSet<String> = ["APP/web/0", "APP/web/1"].map(String::from).into();
    wait_for(
        Duration::from_secs(60),
        "both streams to show both instances",
        || {
            // The app logs each request; the router spreads them.
            for _ in 0..4 {
                let (status, served_by, _) = router.get(&host, "/")?;
                assert_eq!((status, served_by.as_str()), (200, app.as_str()));
            }
            let (sa, sb) = (
                seen_a.lock().unwrap().clone(),
                seen_b.lock().unwrap().clone(),
            );
            (want.is_subset(&sa) && want.is_subset(&sb)).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: A saw {:?}, B saw {:?}",
            seen_a.lock().unwrap(),
            seen_b.lock().unwrap()
        )
    });

    // kill -9 of the leader (A). B takes the lease within the TTL and a bit.
    p.kill_server();
    let killed = Instant::now();
    wait_for(Duration::from_secs(30), "B to take over", || {
        leads(&b).then_some(())
    })
    .unwrap();
    println!("B leads {:?} after A's kill -9", killed.elapsed());

    // Scale through the survivor: reached, served by the router (which moved to B), nothing
    // placed twice.
    let (status, body) = {
        let r = reqwest::blocking::Client::new()
            .patch(format!("{b}/v1/apps/{app}"))
            .bearer_auth(&token_b)
            .json(&serde_json::json!({"instances": 4}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap_or_default())
    };
    assert!(status < 300, "scale through B: {status} {body}");
    let four = wait_for(
        Duration::from_secs(90),
        "4 instances running, seen on B",
        || running(&b, &token_b, &app, 4),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", ctl_b.logs()));
    let indices: BTreeSet<u64> = four.iter().map(|i| i.0).collect();
    assert_eq!(indices, BTreeSet::from([0, 1, 2, 3]), "{four:?}");
    let nodes: BTreeSet<&str> = four.iter().map(|i| i.1.as_str()).collect();
    assert_eq!(
        nodes,
        BTreeSet::from([n1.as_str(), n2.as_str()]),
        "{four:?}"
    );
    wait_for(
        Duration::from_secs(30),
        "the engine to run 4 containers",
        || (p.containers_of(&app).len() == 4).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", p.containers_of(&app)));
    let mut reached = BTreeSet::new();
    wait_for(Duration::from_secs(30), "the router to reach all 4", || {
        let (status, _, index) = router.get(&host, "/")?;
        assert_eq!(status, 200);
        reached.insert(index);
        (reached.len() == 4).then_some(())
    })
    .unwrap();

    // Node 2 moved to B: it still heartbeats, well after A's death.
    wait_for(
        Duration::from_secs(30),
        "node 2 to heartbeat through B",
        || {
            let nodes = get(&b, &token_b, "/v1/nodes");
            let n = nodes["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["name"] == n2.as_str())?;
            let beat = chrono::DateTime::parse_from_rfc3339(n["last_heartbeat"].as_str()?).ok()?;
            let since_kill = chrono::Utc::now().signed_duration_since(beat);
            (n["state"] == "ready"
                && since_kill < chrono::Duration::from_std(killed.elapsed()).ok()?)
            .then_some(())
        },
    )
    .unwrap();

    // Nothing lost: the push's events and the app's stored lines are all there on B.
    let events = get(&b, &token_b, &format!("/v1/apps/{app}/events"));
    assert!(events.to_string().contains("push"), "{events}");
    let logs = get(&b, &token_b, &format!("/v1/apps/{app}/logs?source=STG"));
    assert!(
        logs.to_string().contains(from_node[0]),
        "the node's staging lines are stored: {logs}"
    );
    drop(router);
    drop(ctl_b);
}
