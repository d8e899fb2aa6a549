//! Two controllers on one PostgreSQL (issue 20): two real `paas-server` processes with their own
//! ports and data dirs on the same `PAAS_DATABASE_URL` (and the same secret files, as
//! docs/DEPLOY.md says) both serve the API, exactly one of them leads (`GET /v1/info`,
//! `paas_leader`); after a `kill -9` of the leader the survivor takes the scheduler lease within
//! its TTL and keeps serving logins and app lists meanwhile.
//! Needs `PAAS_TEST_DATABASE_URL` (`export PAAS_TEST_DATABASE_URL=$(scripts/postgres)`).

mod store_support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use store_support::PgDatabase;

/// The lease's TTL plus a follower's retry period and slack for a loaded machine: a takeover
/// later than this is a bug (server/src/control/lease.rs).
const TAKEOVER_BOUND: Duration = Duration::from_secs(15 + 1 + 4);

/// A running `paas-server`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    fn start(data: &Path, db_url: &str, password: &str) -> Self {
        std::fs::create_dir_all(data).unwrap();
        let log = data.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_paas-server"))
            .env("PAAS_DATA_DIR", data)
            .env("PAAS_LISTEN", "127.0.0.1:0")
            .env("PAAS_ADMIN_PASSWORD", password)
            .env("PAAS_DATABASE_URL", db_url)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        let mut s = Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let addr_file = data.join("listen-addr");
        s.addr = s.wait("the server to be ready", Duration::from_secs(60), |_| {
            let addr: SocketAddr = std::fs::read_to_string(&addr_file)
                .ok()?
                .trim()
                .parse()
                .ok()?;
            reqwest::blocking::get(format!("http://{addr}/readyz"))
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| addr)
        });
        s
    }

    fn wait<T>(&mut self, what: &str, limit: Duration, mut f: impl FnMut(&Self) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "paas-server exited ({status}) before {what}:\n{}",
                    self.logs()
                );
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /v1/info`: (controller id, leader).
    fn info(&self) -> (String, bool) {
        let v: Value = reqwest::blocking::get(self.url("/v1/info"))
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
    fn leader_gauge(&self) -> String {
        let text = reqwest::blocking::get(self.url("/metrics"))
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("paas_leader "))
            .unwrap_or_else(|| panic!("no paas_leader in /metrics:\n{text}"))
            .to_string()
    }

    fn login(&self, password: &str) -> String {
        let res: Value = reqwest::blocking::Client::new()
            .post(self.url("/v1/auth/login"))
            .json(&json!({"username": "admin", "password": password}))
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap();
        res["token"].as_str().unwrap().to_string()
    }

    fn get(&self, token: &str, path: &str) -> Value {
        let res = reqwest::blocking::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().unwrap()
    }

    fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let res = reqwest::blocking::Client::new()
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        (res.status().as_u16(), res.json().unwrap_or_default())
    }

    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
            let (ia, la) = a.info();
            let (ib, lb) = b.info();
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
            let (la, lb) = (a.info().1, b.info().1);
            assert!(la ^ lb, "exactly one leader: a {la}, b {lb}");
            assert_eq!(la, a_leads);
            std::thread::sleep(Duration::from_millis(100));
        }
        let (mut leader, survivor) = if a_leads { (a, b) } else { (b, a) };
        assert_eq!(leader.leader_gauge(), "paas_leader 1");
        assert_eq!(survivor.leader_gauge(), "paas_leader 0");
        assert!(
            leader.logs().contains(&leader_id),
            "the controller id is logged"
        );

        // Both serve the API: a token from one is good at the other, and what one writes the
        // other reads.
        let token = leader.login(&password);
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
                let t = survivor.login(&password);
                let apps = survivor.get(&t, "/v1/apps");
                assert!(apps["apps"].is_array(), "{apps}");
                calls += 1;
                survivor.info().1.then_some(())
            },
        );
        let took = killed.elapsed();
        println!("takeover {took:?} after kill -9 of the leader ({calls} logins and app lists served meanwhile)");
        assert!(calls > 0);
        assert_eq!(survivor.leader_gauge(), "paas_leader 1");
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
