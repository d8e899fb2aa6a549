//! App page render time with a day of metrics and a full log history (issue 26).
//!
//! Starts the built `paas-server` on a fresh data dir, pushes a small app (no node: its instance
//! stays pending, which the page shows all the same), fills the store the controller uses with
//! 8,640 metric rows (a day at 10 s, `Store::add_app_metrics`) and 10,000 log lines, logs in
//! through the dashboard's form, and times `GET /apps/NAME` (charts, instances, timeline, last
//! 100 log lines) over loopback.
//!
//!   cargo build -p paas-server && cargo run -p paas-server --example app_page_bench -- [ROUNDS]
//!
//! Uses target/release/paas-server when the example itself is a release build.

use chrono::Utc;
use paas_common::api::LogLine;
use paas_server::store::prelude::*;
use paas_server::store::{MetricRow, SqliteStore};
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench-password";

fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(15)
        .max(5);
    // target/<profile>/examples/app_page_bench -> target/<profile>/paas-server
    let exe = std::env::current_exe()?;
    let server_bin = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("paas-server");
    let work = tempfile::tempdir()?;
    let data = work.path().join("server");
    let mut server = Command::new(&server_bin)
        .env("PAAS_DATA_DIR", &data)
        .env("PAAS_LISTEN", "127.0.0.1:0")
        .env("PAAS_ADMIN_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.path().join("server.log"))?)
        .spawn()?;
    let result = run(&data, rounds, &server_bin);
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn run(data: &std::path::Path, rounds: usize, bin: &std::path::Path) -> anyhow::Result<()> {
    let addr_file = data.join("listen-addr");
    let start = Instant::now();
    while !addr_file.exists() {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(20),
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://{}", std::fs::read_to_string(&addr_file)?.trim());
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    // The app, pushed through the API.
    let token: serde_json::Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"username": "admin", "password": PASSWORD}))
        .send()?
        .error_for_status()?
        .json()?;
    let token = token["token"].as_str().unwrap_or_default().to_string();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("app.py", zip::write::SimpleFileOptions::default())?;
    zip.write_all(b"print('hi')\n")?;
    let zip = zip.finish()?.into_inner();
    let app = "bench-app";
    http.post(format!("{base}/v1/apps/{app}/push"))
        .bearer_auth(&token)
        .multipart(reqwest::blocking::multipart::Form::new().part(
            "archive",
            reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
        ))
        .send()?
        .error_for_status()?;

    // A day of metrics and 10,000 log lines, written to the controller's own database.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = SqliteStore::open(&data.join("paas.db")).await?;
        let rec = store
            .apps_named(app)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("the app was not stored"))?;
        let now = Utc::now().timestamp() / 10 * 10;
        let rows: Vec<MetricRow> = (0..8640i64)
            .map(|i| MetricRow {
                app_id: rec.id.clone(),
                ts: now - i * 10,
                requests: (50 + i % 37) as u64,
                errors: (i % 11 == 0) as u64,
                p50_ms: Some(3.0 + (i % 7) as f64),
                p99_ms: Some(40.0 + (i % 13) as f64),
                memory_bytes: (60 + i % 20) as u64 * (1 << 20),
                cpu_percent: (i % 30) as f64,
                restarts: 0,
                instances: vec![(0, (60 + i % 20) as u64 * (1 << 20), (i % 30) as f64)],
            })
            .collect();
        for chunk in rows.chunks(1000) {
            store.add_app_metrics(chunk).await?;
        }
        let first = store.max_log_id().await? + 1;
        let t0 = Utc::now() - chrono::Duration::hours(1);
        let lines: Vec<(String, Arc<LogLine>)> = (0..10_000i64)
            .map(|i| {
                let (source, message) = if i % 2 == 0 {
                    (
                        "RTR".to_string(),
                        format!("{app}.localhost - \"GET /item/{i} HTTP/1.1\" 200 512 3ms"),
                    )
                } else {
                    (
                        "APP/web/0".to_string(),
                        format!("handled request {i}: rendered the item page"),
                    )
                };
                let line = LogLine {
                    timestamp: t0 + chrono::Duration::milliseconds(i * 300),
                    source,
                    stream: "stdout".into(),
                    message,
                    id: first + i,
                };
                (rec.id.clone(), Arc::new(line))
            })
            .collect();
        store.append_logs(&lines).await?;
        anyhow::Ok(())
    })?;

    // A dashboard login through the form: the CSRF cookie and field, then the session cookie.
    let form = http.get(format!("{base}/login")).send()?;
    let cookie = |res: &reqwest::blocking::Response, name: &str| {
        res.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.split(';').next())
            .map(str::to_string)
    };
    let csrf = cookie(&form, "paas_login_csrf").ok_or_else(|| anyhow::anyhow!("no CSRF cookie"))?;
    let res = http
        .post(format!("{base}/login"))
        .header("cookie", format!("paas_login_csrf={csrf}"))
        .form(&[
            ("username", "admin"),
            ("password", PASSWORD),
            ("csrf", csrf.as_str()),
            ("next", "/"),
        ])
        .send()?;
    let session = cookie(&res, "paas_session")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow::anyhow!("the login set no session ({})", res.status()))?;

    let page = |window: &str| -> anyhow::Result<(Duration, usize)> {
        let t = Instant::now();
        let body = http
            .get(format!("{base}/apps/{app}?window={window}"))
            .header("cookie", format!("paas_session={session}"))
            .send()?
            .error_for_status()?
            .text()?;
        let took = t.elapsed();
        anyhow::ensure!(body.contains("id=\"charts\""), "not the app page");
        Ok((took, body.len()))
    };
    println!("binaries: {}", bin.display());
    println!(
        "store: 8640 metric rows (1 day at 10 s), 10000 log lines; {rounds} rounds after 2 warm-up"
    );
    for window in ["1h", "1d"] {
        page(window)?;
        page(window)?;
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..rounds {
            let (t, n) = page(window)?;
            times.push(t.as_secs_f64() * 1000.0);
            size = n;
        }
        times.sort_by(f64::total_cmp);
        println!(
            "GET /apps/{app}?window={window}: median {:.1} ms, min {:.1} ms, max {:.1} ms ({} KiB)",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1],
            size / 1024
        );
    }
    Ok(())
}
