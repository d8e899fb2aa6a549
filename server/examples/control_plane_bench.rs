//! The control plane at scale (issue 24): a real `paas-server` (SQLite, the default) in front of
//! simulated nodes that speak the real agent protocol over HTTP.
//!
//! Each fake node registers with the join token, long-polls `GET /v1/agent/assignments?after=V`,
//! and heartbeats every instance assigned to it as running and ready with plausible usage stats
//! (at once when its list changed, else every `heartbeat_interval_secs`). They all run in this one
//! process, on one tokio runtime, so 100 of them cost little next to the controller.
//!
//! Apps are seeded straight into the controller's database (`SqliteStore::create_app` and
//! `deploy_revision_with`, the store calls a push ends in, each with its own revision of one
//! shared droplet): creating 1,000 apps through pushes would measure pushes. This is a dev-only
//! path; everything after it goes through the controller: convergence creates and places every
//! instance, the fake nodes learn them through their long-polls and report them through
//! heartbeats. Per size (NODES nodes, APPS apps of 10 instances) it prints the median and
//! spread over ROUNDS rounds of:
//!
//! - one convergence pass at rest (`paas_convergence_last_pass_seconds` from `/metrics`),
//! - placement of APPS new instances (APPS/10 apps scaled from 10 to 20 through
//!   `PATCH /v1/apps/{name}`: time from the first call to every instance placed),
//! - `GET /v1/apps` p99 (default page) and the dashboard list page `/` p99,
//! - heartbeat handling: every node heartbeating back to back for 3 s (heartbeats/s, and the
//!   instance reports in them),
//! - the controller's RSS (VmRSS, and its peak VmHWM) at the end.
//!
//!   cargo build --release -p paas-server --bins --example control_plane_bench
//!   target/release/examples/control_plane_bench [ROUNDS] [NODES:APPS ...]
//!
//! Default: 5 rounds at 10:100 and 100:1000 (1,000 and 10,000 instances). Uses the
//! `paas-server` next to the example's own profile directory. `bench/control_plane.sh` runs it.

use anyhow::{bail, Context, Result};
use chrono::Utc;
use paas_common::agent::{
    Assignments, Heartbeat, InstanceReport, NodeCapacity, RegisterRequest, RegisterResponse,
};
use paas_common::api::{AppState, InstanceState, InstanceUsage};
use paas_server::store::prelude::*;
use paas_server::store::{AppRecord, Event, NewRevision, RevisionExtra, SqliteStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench-password";
const PER_APP: u32 = 10;
const APP_MEMORY_MB: u64 = 64;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);
    let mut sizes: Vec<(usize, usize)> = args
        .map(|s| {
            let (n, a) = s.split_once(':').context("a size is NODES:APPS")?;
            Ok((n.parse()?, a.parse()?))
        })
        .collect::<Result<_>>()?;
    if sizes.is_empty() {
        sizes = vec![(10, 100), (100, 1000)];
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .context("target dir")?
        .join("paas-server");
    println!("binary: {}", bin.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for (nodes, apps) in sizes {
        let r = rt.block_on(run_size(&bin, nodes, apps, rounds))?;
        r.print();
        results.push(r);
    }
    if results.len() >= 2 {
        let (a, b) = (&results[0], &results[results.len() - 1]);
        println!(
            "\ngrowth {}→{} instances ({}x): figure, small, large, ratio",
            a.instances,
            b.instances,
            b.instances / a.instances.max(1)
        );
        for ((name, x), (_, y)) in a.figures().iter().zip(b.figures()) {
            println!(
                "  {name:<34} {:>10.3} {:>10.3} {:>7.2}x",
                x,
                y,
                y / x.max(1e-9)
            );
        }
    }
    Ok(())
}

struct SizeResult {
    nodes: usize,
    apps: usize,
    instances: usize,
    seed_secs: f64,
    pass_ms: Vec<f64>,
    place_ms: Vec<f64>,
    apps_p99_ms: Vec<f64>,
    dash_p99_ms: Vec<f64>,
    heartbeats_per_s: Vec<f64>,
    rss_mb: f64,
    peak_rss_mb: f64,
}

/// Median and (min–max) of a sample.
fn stat(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

impl SizeResult {
    fn figures(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("convergence pass (ms)", stat(&self.pass_ms).0),
            ("placement of new instances (ms)", stat(&self.place_ms).0),
            ("GET /v1/apps p99 (ms)", stat(&self.apps_p99_ms).0),
            ("dashboard / p99 (ms)", stat(&self.dash_p99_ms).0),
            ("controller RSS (MB)", self.rss_mb),
            ("heartbeats/s", stat(&self.heartbeats_per_s).0),
        ]
    }

    fn print(&self) {
        println!(
            "\n{} nodes, {} apps, {} instances (seeded and converged in {:.1} s)",
            self.nodes, self.apps, self.instances, self.seed_secs
        );
        let line = |name: &str, v: &[f64], unit: &str| {
            let (m, lo, hi) = stat(v);
            println!(
                "  {name:<44} median {m:>9.2} {unit}  spread {lo:.2}–{hi:.2}  (n={})",
                v.len()
            );
        };
        line("one convergence pass at rest", &self.pass_ms, "ms");
        line(
            &format!("placement of {} new instances", self.apps),
            &self.place_ms,
            "ms",
        );
        line("GET /v1/apps p99", &self.apps_p99_ms, "ms");
        line("dashboard list page p99", &self.dash_p99_ms, "ms");
        line("heartbeats handled", &self.heartbeats_per_s, "/s");
        let (hb, _, _) = stat(&self.heartbeats_per_s);
        println!(
            "  {:<44} median {:>9.0} /s  ({} per heartbeat)",
            "instance reports handled",
            hb * self.instances as f64 / self.nodes as f64,
            self.instances / self.nodes
        );
        println!(
            "  {:<44} {:>16.1} MB  (peak {:.1} MB)",
            "controller RSS", self.rss_mb, self.peak_rss_mb
        );
    }
}

struct Server {
    child: Child,
    base: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(bin: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("paas-cp-bench-")
            .tempdir()?;
        let data = dir.path().join("server");
        std::fs::create_dir_all(&data)?;
        let child = Command::new(bin)
            .env("PAAS_DATA_DIR", &data)
            .env("PAAS_LISTEN", "127.0.0.1:0")
            .env("PAAS_ADMIN_PASSWORD", PASSWORD)
            // Info lines per placed instance would measure the terminal.
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log"))?)
            .spawn()?;
        let start = Instant::now();
        let base = loop {
            if let Ok(a) = std::fs::read_to_string(data.join("listen-addr")) {
                let base = format!("http://{}", a.trim());
                if reqwest::get(format!("{base}/readyz"))
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    break base;
                }
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("paas-server did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(Self {
            child,
            base,
            data,
            _dir: dir,
        })
    }

    fn rss_mb(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
    }
}

/// What the fake nodes share with the benchmark.
#[derive(Default)]
struct Fleet {
    /// Heartbeats answered 2xx.
    heartbeats: AtomicU64,
    /// Failed calls (any endpoint).
    errors: AtomicU64,
    /// While set, every node heartbeats back to back.
    flood: AtomicBool,
    stop: AtomicBool,
}

fn capacity() -> NodeCapacity {
    NodeCapacity {
        memory_mb: 1 << 20,
        disk_mb: 1 << 22,
        instance_slots: 1000,
    }
}

/// An instance a fake node runs: its id, when it started, its port.
type Assigned = (String, chrono::DateTime<Utc>, u16);

/// One simulated node: registers, then long-polls its assignments and heartbeats them all as
/// running and ready.
async fn fake_node(
    http: reqwest::Client,
    base: String,
    join: String,
    name: String,
    fleet: Arc<Fleet>,
) {
    let reg: RegisterResponse = loop {
        let r = http
            .post(format!("{base}/v1/agent/register"))
            .bearer_auth(&join)
            .json(&RegisterRequest {
                node_name: name.clone(),
                address: "127.0.0.1".into(),
                zone: format!("z{}", name.len() % 3),
                labels: BTreeMap::new(),
                capacity: capacity(),
                subnet: None,
            })
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(v) => break v,
                Err(_) => fleet.errors.fetch_add(1, Ordering::Relaxed),
            },
            _ => fleet.errors.fetch_add(1, Ordering::Relaxed),
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let token = reg.node_token;
    let interval = Duration::from_secs(reg.heartbeat_interval_secs.max(1));
    // (instance id, when it started, its port): reports keep their `since` and port, as a real
    // node's do (a changed port would change routing and refresh the route table).
    let assigned: Arc<Mutex<Vec<Assigned>>> = Arc::default();
    let changed = Arc::new(tokio::sync::Notify::new());
    {
        let (http, base, token, fleet) = (http.clone(), base.clone(), token.clone(), fleet.clone());
        let (assigned, changed) = (assigned.clone(), changed.clone());
        tokio::spawn(async move {
            let mut version: Option<u64> = None;
            let mut next_port: u16 = 20000;
            while !fleet.stop.load(Ordering::Relaxed) {
                let url = match version {
                    Some(v) => format!("{base}/v1/agent/assignments?after={v}"),
                    None => format!("{base}/v1/agent/assignments"),
                };
                let got: Option<Assignments> = match http.get(url).bearer_auth(&token).send().await
                {
                    Ok(r) if r.status().is_success() => r.json().await.ok(),
                    _ => None,
                };
                let Some(got) = got else {
                    fleet.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                version = Some(got.version);
                let now = Utc::now();
                {
                    let mut list = assigned.lock().unwrap();
                    let before: BTreeMap<String, (chrono::DateTime<Utc>, u16)> = list
                        .drain(..)
                        .map(|(id, since, port)| (id, (since, port)))
                        .collect();
                    list.extend(got.instances.iter().map(|a| {
                        let (since, port) =
                            before.get(&a.instance_id).copied().unwrap_or_else(|| {
                                next_port = next_port.checked_add(1).unwrap_or(20000);
                                (now, next_port)
                            });
                        (a.instance_id.clone(), since, port)
                    }));
                }
                changed.notify_one();
            }
        });
    }
    let mut n: u64 = 0;
    while !fleet.stop.load(Ordering::Relaxed) {
        let now = Utc::now();
        let instances: Vec<InstanceReport> = assigned
            .lock()
            .unwrap()
            .iter()
            .map(|(id, since, port)| {
                n = n.wrapping_add(1);
                InstanceReport {
                    instance_id: id.clone(),
                    state: InstanceState::Running,
                    container_id: Some(format!("fake-{}", &id[..8.min(id.len())])),
                    host_port: Some(*port),
                    restarts: 0,
                    last_exit: None,
                    since: *since,
                    usage: Some(InstanceUsage {
                        cpu_percent: (n % 7) as f64 * 1.5,
                        memory_bytes: (40 + n % 16) << 20,
                        memory_limit_bytes: APP_MEMORY_MB << 20,
                        disk_bytes: 12 << 20,
                        uptime_secs: (now - *since).num_seconds().max(0) as u64,
                        sampled_at: Some(now),
                    }),
                    ready: true,
                    ip: None,
                }
            })
            .collect();
        let hb = Heartbeat {
            capacity: capacity(),
            instances,
            tasks: Vec::new(),
            services: Vec::new(),
        };
        match http
            .post(format!("{base}/v1/agent/heartbeat"))
            .bearer_auth(&token)
            .json(&hb)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                fleet.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                fleet.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        if fleet.flood.load(Ordering::Relaxed) {
            continue;
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// The dev-only seeding path: APPS started apps of PER_APP instances, each with a revision of
/// one shared droplet, written with the store calls a push ends in.
async fn seed(data: &Path, apps: usize) -> Result<()> {
    let store = SqliteStore::open(&data.join("paas.db")).await?;
    let space = store
        .space("default", "default", true)
        .await?
        .context("the default space")?;
    let droplet = format!("{:064x}", 24);
    for i in 0..apps {
        let now = Utc::now();
        let name = format!("scale-{i:05}");
        let rec = AppRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.clone(),
            state: AppState::Started,
            desired_instances: PER_APP,
            memory_mb: APP_MEMORY_MB,
            disk_mb: 256,
            current_revision: None,
            created_at: now,
            updated_at: now,
            space_id: space.id.clone(),
            host: Some(name.clone()),
        };
        let ev = |kind: &str| Event {
            app_name: Some(name.clone()),
            app_id: Some(rec.id.clone()),
            actor: "admin".into(),
            kind: kind.into(),
            message: "seeded by control_plane_bench".into(),
        };
        store.create_app(&rec, &ev("app.create")).await?;
        let rev = NewRevision {
            package: droplet.clone(),
            droplet: droplet.clone(),
            command: "true".into(),
            detected: "bench".into(),
            desired_instances: PER_APP,
            memory_mb: APP_MEMORY_MB,
        };
        let extra = RevisionExtra {
            created_by: "admin".into(),
            description: "seeded".into(),
            ..Default::default()
        };
        store
            .deploy_revision_with(&rec.id, &rev, &extra, &ev("app.push"))
            .await?;
    }
    store.close().await;
    Ok(())
}

/// A value of `/metrics` by its full series name (with labels).
async fn metric(http: &reqwest::Client, base: &str, series: &str) -> Result<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("{series} not in /metrics"))
}

/// Placed rows and running rows, from `/metrics`.
async fn placed_running(http: &reqwest::Client, base: &str) -> Result<(f64, f64)> {
    Ok((
        metric(http, base, "paas_instance_placements{placement=\"placed\"}").await?,
        metric(http, base, "paas_instances{state=\"running\"}").await?,
    ))
}

async fn wait_for(
    http: &reqwest::Client,
    base: &str,
    limit: Duration,
    mut ok: impl FnMut(f64, f64) -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let (placed, running) = placed_running(http, base).await?;
        if ok(placed, running) {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!("timed out: {placed} placed, {running} running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn p99(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)]
}

async fn run_size(bin: &Path, nodes: usize, apps: usize, rounds: usize) -> Result<SizeResult> {
    let server = Server::start(bin).await?;
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(1024)
        .build()?;
    let join = std::fs::read_to_string(server.data.join("join-token"))?
        .trim()
        .to_string();
    let fleet = Arc::new(Fleet::default());
    let run = format!("{:x}", std::process::id());
    for i in 0..nodes {
        tokio::spawn(fake_node(
            http.clone(),
            base.clone(),
            join.clone(),
            format!("fake-{run}-{i:03}"),
            fleet.clone(),
        ));
    }
    let t = Instant::now();
    seed(&server.data, apps).await?;
    let instances = apps * PER_APP as usize;
    let want = instances as f64;
    wait_for(&http, &base, Duration::from_secs(600), |p, r| {
        p == want && r == want
    })
    .await
    .context("seeding")?;
    let seed_secs = t.elapsed().as_secs_f64();

    let token: serde_json::Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = token["token"].as_str().unwrap_or_default().to_string();
    let session = dashboard_login(&http, &base).await?;

    let mut r = SizeResult {
        nodes,
        apps,
        instances,
        seed_secs,
        pass_ms: vec![],
        place_ms: vec![],
        apps_p99_ms: vec![],
        dash_p99_ms: vec![],
        heartbeats_per_s: vec![],
        rss_mb: 0.0,
        peak_rss_mb: 0.0,
    };
    let scaled = (apps / PER_APP as usize).max(1);
    for round in 0..rounds {
        // One pass at rest: the loop ticks every second; sample distinct passes.
        let mut seen = Vec::new();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            seen.push(metric(&http, &base, "paas_convergence_last_pass_seconds").await? * 1000.0);
        }
        r.pass_ms.push(stat(&seen).0);

        // Placement: APPS new instances, APPS/10 apps from 10 to 20.
        let t = Instant::now();
        let calls: Vec<_> = (0..scaled)
            .map(|i| {
                let (http, base, token) = (http.clone(), base.clone(), token.clone());
                let app = format!("scale-{:05}", (i * PER_APP as usize + round) % apps);
                tokio::spawn(async move {
                    http.patch(format!("{base}/v1/apps/{app}"))
                        .bearer_auth(&token)
                        .json(&serde_json::json!({"instances": PER_APP * 2}))
                        .send()
                        .await?
                        .error_for_status()
                })
            })
            .collect();
        for c in calls {
            c.await??;
        }
        let target = want + (scaled * PER_APP as usize) as f64;
        wait_for(&http, &base, Duration::from_secs(120), |p, _| p >= target).await?;
        r.place_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        wait_for(&http, &base, Duration::from_secs(120), |_, run| {
            run >= target
        })
        .await?;
        // Back to 10 each, and quiet again.
        for i in 0..scaled {
            let app = format!("scale-{:05}", (i * PER_APP as usize + round) % apps);
            http.patch(format!("{base}/v1/apps/{app}"))
                .bearer_auth(&token)
                .json(&serde_json::json!({"instances": PER_APP}))
                .send()
                .await?
                .error_for_status()?;
        }
        wait_for(&http, &base, Duration::from_secs(120), |p, run| {
            p == want && run == want
        })
        .await?;

        // GET /v1/apps (default page) and the dashboard's list page.
        let mut times = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            http.get(format!("{base}/v1/apps"))
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        r.apps_p99_ms.push(p99(times));
        let mut times = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let body = http
                .get(format!("{base}/"))
                .header("cookie", format!("paas_session={session}"))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(body.contains("scale-00000"), "not the apps page");
        }
        r.dash_p99_ms.push(p99(times));

        // Heartbeats back to back from every node.
        let before = fleet.heartbeats.load(Ordering::Relaxed);
        let t = Instant::now();
        fleet.flood.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(3)).await;
        fleet.flood.store(false, Ordering::Relaxed);
        let n = fleet.heartbeats.load(Ordering::Relaxed) - before;
        r.heartbeats_per_s
            .push(n as f64 / t.elapsed().as_secs_f64());
        eprintln!(
            "  round {round}: pass {:.1} ms, place {:.0} ms, apps p99 {:.1} ms, dash p99 {:.1} ms, {:.0} hb/s",
            r.pass_ms[round], r.place_ms[round], r.apps_p99_ms[round], r.dash_p99_ms[round], r.heartbeats_per_s[round]
        );
    }
    (r.rss_mb, r.peak_rss_mb) = server.rss_mb();
    let errors = fleet.errors.load(Ordering::Relaxed);
    if errors > 0 {
        eprintln!("  fake nodes: {errors} failed calls");
    }
    fleet.stop.store(true, Ordering::Relaxed);
    Ok(r)
}

/// A dashboard session through the login form (its CSRF cookie and field).
async fn dashboard_login(http: &reqwest::Client, base: &str) -> Result<String> {
    fn cookie(res: &reqwest::Response, name: &str) -> Option<String> {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
    }
    let form = http.get(format!("{base}/login")).send().await?;
    let csrf = cookie(&form, "paas_login_csrf").context("no CSRF cookie")?;
    let res = http
        .post(format!("{base}/login"))
        .header("cookie", format!("paas_login_csrf={csrf}"))
        .form(&[
            ("username", "admin"),
            ("password", PASSWORD),
            ("csrf", csrf.as_str()),
            ("next", "/"),
        ])
        .send()
        .await?;
    cookie(&res, "paas_session")
        .filter(|v| !v.is_empty())
        .context("the login set no session")
}
