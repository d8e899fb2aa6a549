//! A real `paas-server` process for the integration tests that need the whole controller (on
//! PostgreSQL: `postgres_server.rs`, `postgres_controllers.rs`): started on a random port with
//! its own data dir, polled until ready, killed on drop.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts the server on `data` with the store at `db_url`, and waits for `/readyz`.
    pub fn start(data: &Path, db_url: &str, password: &str) -> Self {
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

    /// Polls `f` every 100 ms until it answers, failing with the server's log when the server
    /// exits or `limit` passes.
    pub fn wait<T>(
        &mut self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&Self) -> Option<T>,
    ) -> T {
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

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A token for `username` from `POST /v1/auth/login`.
    pub fn login(&self, username: &str, password: &str) -> String {
        let res: Value = reqwest::blocking::Client::new()
            .post(self.url("/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap();
        res["token"].as_str().unwrap().to_string()
    }

    /// `GET path` with `token`, which must succeed.
    pub fn get(&self, token: &str, path: &str) -> Value {
        let res = reqwest::blocking::Client::new()
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert!(res.status().is_success(), "GET {path}: {}", res.status());
        res.json().unwrap()
    }

    /// `POST path` with `token` and a JSON body: the status and the body.
    pub fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let res = reqwest::blocking::Client::new()
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .unwrap();
        (res.status().as_u16(), res.json().unwrap_or_default())
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
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
