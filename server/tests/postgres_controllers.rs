//! Two controllers on one PostgreSQL (issue 20): two real `paas-server` processes with their own
//! ports and data dirs on the same `PAAS_DATABASE_URL` (and the same secret files, as
//! docs/DEPLOY.md says) both serve the API, exactly one of them leads (`GET /v1/info`,
//! `paas_leader`); after a `kill -9` of the leader the survivor takes the scheduler lease within
//! its TTL and keeps serving logins and app lists meanwhile.
//! Needs `PAAS_TEST_DATABASE_URL` (`export PAAS_TEST_DATABASE_URL=$(scripts/postgres)`).

mod server_support;
mod store_support;

use serde_json::{json, Value};
use server_support::Server;
use std::time::{Duration, Instant};
use store_support::PgDatabase;

/// The lease's TTL plus a follower's retry period and slack for a loaded machine: a takeover
/// later than this is a bug (server/src/control/lease.rs).
const TAKEOVER_BOUND: Duration = Duration::from_millis(14_500 + 4_000);

/// `GET /v1/info`: (controller id, leader).
fn info(s: &Server) -> (String, bool) {
    let v: Value = reqwest::blocking::get(s.url("/v1/info"))
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .unwrap();
    (
        v["controller"].as_str().unwrap().to_string(),
        v["leader"].as_bool().unwrap(),
    )
}

/// The `paas_leader` gauge of `/metrics`.
fn leader_gauge(s: &Server) -> String {
    let text = reqwest::blocking::get(s.url("/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("paas_leader "))
        .unwrap_or_else(|| panic!("no paas_leader in /metrics:\n{text}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_elect_one_leader_and_the_survivor_takes_over_after_kill_9() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let a_dir = dir.path().join("a");
        let mut a = Server::start(&a_dir, &url, &password);
        // The second controller shares the first one's secrets (docs/DEPLOY.md): the key that
        // seals the signing keys in the database, the legacy JWT secret and the join token.
        let b_dir = dir.path().join("b");
        std::fs::create_dir_all(&b_dir).unwrap();
        for f in ["secret-key", "jwt-secret", "join-token"] {
            std::fs::copy(a_dir.join(f), b_dir.join(f)).unwrap();
        }
        let b = Server::start(&b_dir, &url, &password);

        // Exactly one leads, and it stays that way.
        let started = Instant::now();
        let (leader_id, a_leads) = a.wait("a leader", Duration::from_secs(30), |a| {
            let (ia, la) = info(a);
            let (ib, lb) = info(&b);
            assert!(!(la && lb), "both controllers lead");
            assert_ne!(ia, ib, "controller ids are per process");
            match (la, lb) {
                (true, false) => Some((ia, true)),
                (false, true) => Some((ib, false)),
                _ => None,
            }
        });
        println!("leader elected after {:?}", started.elapsed());
        for _ in 0..10 {
            let (la, lb) = (info(&a).1, info(&b).1);
            assert!(la ^ lb, "exactly one leader: a {la}, b {lb}");
            assert_eq!(la, a_leads);
            std::thread::sleep(Duration::from_millis(100));
        }
        let (mut leader, survivor) = if a_leads { (a, b) } else { (b, a) };
        assert_eq!(leader_gauge(&leader), "paas_leader 1");
        assert_eq!(leader_gauge(&survivor), "paas_leader 0");
        assert!(
            leader.logs().contains(&leader_id),
            "the controller id is logged"
        );

        // Both serve the API: a token from one is good at the other, and what one writes the
        // other reads.
        let token = leader.login("admin", &password);
        let (status, body) = survivor.post(&token, "/v1/spaces", json!({"org": "acme", "name": "two"}));
        assert!(status < 300, "create space on the follower: {status} {body}");
        let spaces = leader.get(&token, "/v1/spaces");
        assert!(spaces.to_string().contains("\"two\""), "{spaces}");
        assert!(leader.get(&token, "/v1/apps")["apps"].is_array());

        leader.kill();
        let killed = Instant::now();
        let mut calls = 0;
        let mut survivor = survivor;
        survivor.wait(
            "the survivor to take the lease",
            TAKEOVER_BOUND,
            |survivor| {
                // The API keeps answering on the survivor during the takeover.
                let t = survivor.login("admin", &password);
                let apps = survivor.get(&t, "/v1/apps");
                assert!(apps["apps"].is_array(), "{apps}");
                calls += 1;
                info(survivor).1.then_some(())
            },
        );
        let took = killed.elapsed();
        println!("takeover {took:?} after kill -9 of the leader ({calls} logins and app lists served meanwhile)");
        assert!(calls > 0);
        assert_eq!(leader_gauge(&survivor), "paas_leader 1");
        assert!(
            survivor.logs().contains("took the scheduler lease"),
            "{}",
            survivor.logs()
        );
        let spaces = survivor.get(&token, "/v1/spaces");
        assert!(spaces.to_string().contains("\"two\""), "{spaces}");
    })
    .await
    .unwrap();
    drop(db);
}
