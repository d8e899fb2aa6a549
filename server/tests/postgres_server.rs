//! The whole controller on PostgreSQL (issue 20): the real `paas-server` binary with
//! `PAAS_DATABASE_URL=postgres://...` serves a login and creates and lists users, spaces and
//! tokens over HTTP; after a `kill -9` and a restart on the same database the same admin logs in
//! and everything is still there, with no SQLite file in the data dir all along.
//! Needs `PAAS_TEST_DATABASE_URL` (`export PAAS_TEST_DATABASE_URL=$(scripts/postgres)`).

mod store_support;

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use store_support::PgDatabase;

/// A running `paas-server`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
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
        // Read on every try: after a restart the previous run's file is there until the new
        // server writes its own.
        let addr_file = data.join("listen-addr");
        s.addr = s.wait("the server to be ready", || {
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

    fn wait<T>(&mut self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "paas-server exited ({status}) before {what}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {what}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/v1{path}", self.addr)
    }

    fn login(&self, username: &str, password: &str) -> String {
        let res: Value = reqwest::blocking::Client::new()
            .post(self.url("/auth/login"))
            .json(&json!({"username": username, "password": password}))
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn names(list: &Value, field: &str, key: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_on_postgres_and_keeps_its_data_across_a_restart() {
    let db = PgDatabase::create().await;
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let server = Server::start(&dir.path().join("first"), &url, &password);
        let token = server.login("admin", &password);

        let (status, body) = server.post(&token, "/spaces", json!({"org": "acme", "name": "prod"}));
        assert!(status < 300, "create space: {status} {body}");
        let (status, body) = server.post(
            &token,
            "/users",
            json!({"username": "carol", "password": "carol-secret-1", "operator": false}),
        );
        assert!(status < 300, "create user: {status} {body}");
        // The same name again is refused with a stable code, as on SQLite.
        let (status, body) = server.post(
            &token,
            "/users",
            json!({"username": "carol", "password": "carol-secret-1", "operator": false}),
        );
        assert_eq!(status, 409, "{body}");
        assert!(body["code"].is_string(), "{body}");
        let (status, body) = server.post(&token, "/tokens", json!({"name": "ci", "scope": "read"}));
        assert!(status < 300, "create token: {status} {body}");

        let spaces = names(&server.get(&token, "/spaces"), "spaces", "name");
        assert!(spaces.contains(&"prod".to_string()), "{spaces:?}");
        let users = names(&server.get(&token, "/users"), "users", "username");
        assert_eq!(users, ["admin", "carol"]);
        // The login and the creations are events in the database.
        let events = server.get(&token, "/events");
        assert!(!events["events"].as_array().unwrap().is_empty(), "{events}");

        // kill -9, and a new server: what it finds, it finds in PostgreSQL.
        drop(server);
        let data = dir.path().join("first");
        assert!(!data.join("paas.db").exists(), "no SQLite file");
        let server = Server::start(&data, &url, "another-password");
        // The admin's password is the one in the database, not the new setting.
        let token = server.login("admin", &password);
        let users = names(&server.get(&token, "/users"), "users", "username");
        assert_eq!(users, ["admin", "carol"]);
        let spaces = names(&server.get(&token, "/spaces"), "spaces", "name");
        assert!(spaces.contains(&"prod".to_string()), "{spaces:?}");
        let tokens = names(&server.get(&token, "/tokens"), "tokens", "name");
        assert_eq!(tokens, ["ci"]);
        server.login("carol", "carol-secret-1");
        assert!(!data.join("paas.db").exists(), "no SQLite file");
    })
    .await
    .unwrap();
    drop(db);
}
