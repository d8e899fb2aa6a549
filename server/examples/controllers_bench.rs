//! The controller on SQLite and on PostgreSQL, with one and with two controllers (issue 20).
//!
//! Starts the built `paas-server` three ways: one controller on SQLite (the default), one on
//! PostgreSQL, and two on one PostgreSQL database (requests alternate between them, as behind a
//! load balancer). In each round, one after the other, every setup gets the same work over
//! loopback from one client: `GET /v1/apps` (a read) and `POST /v1/spaces` (a write with its
//! event) REQUESTS times each, then pushes of a small app for PUSH_SECS seconds (upload, package
//! blob, app and revision rows; no node, so nothing is staged or started). Then, for the two
//! controllers, `kill -9` of the leader and the time until the survivor reports itself leader
//! (`GET /v1/info`), after which the killed one is started again for the next round. Prints the
//! median and spread over the rounds of each setup's p50/p99 latencies and pushes per minute.
//!
//!   export PAAS_TEST_DATABASE_URL=$(scripts/postgres)
//!   cargo build -p paas-server && cargo run -p paas-server --example controllers_bench -- [ROUNDS] [REQUESTS] [PUSH_SECS]

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench-password";

struct Server {
    child: Child,
    base: String,
    data: PathBuf,
}

impl Server {
    fn start(bin: &Path, data: &Path, db_url: Option<&str>) -> Result<Self> {
        std::fs::create_dir_all(data)?;
        let _ = std::fs::remove_file(data.join("listen-addr"));
        let mut cmd = Command::new(bin);
        cmd.env("PAAS_DATA_DIR", data)
            .env("PAAS_LISTEN", "127.0.0.1:0")
            .env("PAAS_ADMIN_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.join("server.log"))?);
        if let Some(url) = db_url {
            cmd.env("PAAS_DATABASE_URL", url);
        }
        let child = cmd.spawn()?;
        let addr_file = data.join("listen-addr");
        let start = Instant::now();
        let base = loop {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                let base = format!("http://{}", a.trim());
                if reqwest::blocking::get(format!("{base}/readyz"))
                    .is_ok_and(|r| r.status().is_success())
                {
                    break base;
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("paas-server on {} did not start", data.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Self {
            child,
            base,
            data: data.to_path_buf(),
        })
    }

    fn leads(&self, http: &reqwest::blocking::Client) -> bool {
        http.get(format!("{}/v1/info", self.base))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .is_ok_and(|v| v["leader"] == true)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh PostgreSQL database on the test cluster.
fn create_database(admin: &str, name: &str) -> Result<String> {
    let out = Command::new("psql")
        .arg(admin)
        .args(["-q", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .context("psql")?;
    if !out.status.success() {
        bail!("CREATE DATABASE: {}", String::from_utf8_lossy(&out.stderr));
    }
    let (base, _) = admin.rsplit_once('/').context("database URL")?;
    Ok(format!("{base}/{name}"))
}

fn drop_database(admin: &str, name: &str) {
    let _ = Command::new("psql")
        .arg(admin)
        .args([
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        ])
        .output();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// (read p50, read p99, write p50, write p99) in ms, and pushes per minute.
struct RoundResult {
    read: (f64, f64),
    write: (f64, f64),
    pushes_per_min: f64,
}

fn login(http: &reqwest::blocking::Client, base: &str) -> Result<String> {
    let v: serde_json::Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
        .send()?
        .error_for_status()?
        .json()?;
    Ok(v["token"].as_str().context("token")?.to_string())
}

fn app_zip(n: usize) -> Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("app.py", zip::write::SimpleFileOptions::default())?;
    writeln!(zip, "print('push {n}')")?;
    Ok(zip.finish()?.into_inner())
}

fn work(
    http: &reqwest::blocking::Client,
    bases: &[&str],
    token: &str,
    requests: usize,
    push_secs: u64,
    tag: &str,
) -> Result<RoundResult> {
    let timed = |i: usize, f: &dyn Fn(&str) -> Result<()>| -> Result<f64> {
        let base = bases[i % bases.len()];
        let t = Instant::now();
        f(base)?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let mut reads = Vec::with_capacity(requests);
    let mut writes = Vec::with_capacity(requests);
    for i in 0..requests {
        reads.push(timed(i, &|b| {
            http.get(format!("{b}/v1/apps"))
                .bearer_auth(token)
                .send()?
                .error_for_status()?;
            Ok(())
        })?);
        writes.push(timed(i, &|b| {
            http.post(format!("{b}/v1/spaces"))
                .bearer_auth(token)
                .json(&serde_json::json!({"org": "bench", "name": format!("{tag}-{i}")}))
                .send()?
                .error_for_status()?;
            Ok(())
        })?);
    }
    reads.sort_by(f64::total_cmp);
    writes.sort_by(f64::total_cmp);
    let start = Instant::now();
    let mut pushes = 0usize;
    while start.elapsed() < Duration::from_secs(push_secs) {
        let base = bases[pushes % bases.len()];
        let app = format!("{tag}-app-{}", pushes % 10);
        http.post(format!("{base}/v1/apps/{app}/push"))
            .bearer_auth(token)
            .multipart(reqwest::blocking::multipart::Form::new().part(
                "archive",
                reqwest::blocking::multipart::Part::bytes(app_zip(pushes)?).file_name("app.zip"),
            ))
            .send()?
            .error_for_status()
            .with_context(|| format!("push {app}"))?;
        pushes += 1;
    }
    Ok(RoundResult {
        read: (percentile(&reads, 0.5), percentile(&reads, 0.99)),
        write: (percentile(&writes, 0.5), percentile(&writes, 0.99)),
        pushes_per_min: pushes as f64 * 60.0 / start.elapsed().as_secs_f64(),
    })
}

fn median_spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.2} ({:.2}-{:.2})", v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let requests: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(300);
    let push_secs: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let admin = std::env::var("PAAS_TEST_DATABASE_URL")
        .context("PAAS_TEST_DATABASE_URL (export PAAS_TEST_DATABASE_URL=$(scripts/postgres))")?;
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .context("target dir")?
        .join("paas-server");
    let work_dir = tempfile::tempdir()?;
    let id = std::process::id();
    let (db1, db2) = (format!("bench_one_{id}"), format!("bench_two_{id}"));
    let result = (|| -> Result<()> {
        let url1 = create_database(&admin, &db1)?;
        let url2 = create_database(&admin, &db2)?;
        let sqlite = Server::start(&bin, &work_dir.path().join("sqlite"), None)?;
        let pg = Server::start(&bin, &work_dir.path().join("pg"), Some(&url1))?;
        let a_dir = work_dir.path().join("pg-a");
        let b_dir = work_dir.path().join("pg-b");
        let a = Server::start(&bin, &a_dir, Some(&url2))?;
        // The second controller shares the first one's secrets (docs/DEPLOY.md).
        std::fs::create_dir_all(&b_dir)?;
        for f in ["secret-key", "jwt-secret", "join-token"] {
            std::fs::copy(a_dir.join(f), b_dir.join(f))?;
        }
        let b = Server::start(&bin, &b_dir, Some(&url2))?;
        let mut pair = [a, b];
        let http = reqwest::blocking::Client::new();
        let mut results: Vec<(&str, Vec<RoundResult>)> = vec![
            ("sqlite, 1", vec![]),
            ("postgres, 1", vec![]),
            ("postgres, 2", vec![]),
        ];
        let mut takeovers = Vec::new();
        for round in 0..rounds {
            for (k, (_, out)) in results.iter_mut().enumerate() {
                let bases: Vec<&str> = match k {
                    0 => vec![sqlite.base.as_str()],
                    1 => vec![pg.base.as_str()],
                    _ => pair.iter().map(|s| s.base.as_str()).collect(),
                };
                let token = login(&http, bases[0])?;
                out.push(work(
                    &http,
                    &bases,
                    &token,
                    requests,
                    push_secs,
                    &format!("r{round}k{k}"),
                )?);
            }
            // Kill the leader of the pair; time the survivor's takeover; restart the dead one.
            let start = Instant::now();
            let leader = loop {
                if let Some(i) = (0..2).find(|&i| pair[i].leads(&http)) {
                    break i;
                }
                if start.elapsed() > Duration::from_secs(30) {
                    bail!("no leader among the two controllers");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            pair[leader].kill();
            let killed = Instant::now();
            let survivor = 1 - leader;
            while !pair[survivor].leads(&http) {
                if killed.elapsed() > Duration::from_secs(40) {
                    bail!("no takeover within 40 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            takeovers.push(killed.elapsed().as_secs_f64());
            let data = pair[leader].data.clone();
            pair[leader] = Server::start(&bin, &data, Some(&url2))?;
            eprintln!(
                "round {} done (takeover {:.1} s)",
                round + 1,
                takeovers[round]
            );
        }
        println!("{rounds} rounds, {requests} reads + {requests} writes, pushes for {push_secs} s");
        println!("| store, controllers | GET /v1/apps p50 / p99 ms | POST /v1/spaces p50 / p99 ms | pushes per minute |");
        println!("| --- | --- | --- | --- |");
        for (name, rs) in &results {
            let col = |f: &dyn Fn(&RoundResult) -> f64| median_spread(rs.iter().map(f).collect());
            println!(
                "| {name} | {} / {} | {} / {} | {} |",
                col(&|r| r.read.0),
                col(&|r| r.read.1),
                col(&|r| r.write.0),
                col(&|r| r.write.1),
                col(&|r| r.pushes_per_min)
            );
        }
        println!(
            "leader takeover after kill -9: {} s",
            median_spread(takeovers)
        );
        Ok(())
    })();
    drop_database(&admin, &db1);
    drop_database(&admin, &db2);
    result
}
