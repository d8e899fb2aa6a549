//! The dashboard in a real headless Chromium (Debian's chromium + chromium-driver), driven over
//! WebDriver: log in, deploy a zip (web + worker) through the upload form, watch it become
//! healthy with its process types listed, see a live log line, delete it, and get the
//! dashboard's own error page. Set PAAS_SCREENSHOTS_DIR to save screenshots of the main pages
//! (docs/screenshots is made that way).

use fantoccini::{Client, ClientBuilder, Locator};
use paas_e2e::{example, unique, zip_of, Options, Platform};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser() -> (Driver, Client) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (Debian package chromium-driver) must be installed");
    let driver = Driver(child);
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let start = Instant::now();
    loop {
        let conn = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match conn {
            Ok(c) => return (driver, c),
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("cannot start a browser session: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Polls the page until `css` matches an element whose text contains `needle`.
async fn wait_text(c: &Client, css: &str, needle: &str, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t.contains(needle) {
                    return t;
                }
                if start.elapsed() > timeout {
                    panic!("{css} never contained {needle:?}; last text: {t}");
                }
            }
        } else if start.elapsed() > timeout {
            panic!("{css} never appeared (waiting for {needle:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_path(c: &Client, path: &str) {
    let start = Instant::now();
    while c.current_url().await.unwrap().path() != path {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never reached {path}: at {}",
            c.current_url().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn shot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("PAAS_SCREENSHOTS_DIR") {
        let png = c.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_login_deploy_watch_delete() {
    let p = tokio::task::spawn_blocking(Platform::start)
        .await
        .unwrap()
        .expect("platform");
    let app = unique("dash");
    let zip_dir = tempfile::tempdir().unwrap();
    let zip_path = zip_dir.path().join("app.zip");
    let app_py = std::fs::read(example("python-app").join("app.py")).unwrap();
    // A worker beside web, so the app page has two process types to show.
    let procfile = b"web: python3 app.py\nworker: while true; do echo tick; sleep 5; done\n";
    std::fs::write(
        &zip_path,
        zip_of(&[("app.py", &app_py, 0o644), ("Procfile", procfile, 0o644)]),
    )
    .unwrap();
    let base = p.api_url();
    let (_driver, c) = browser().await;

    // Not logged in: the dashboard sends us to the login page.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_path(&c, "/login").await;
    shot(&c, "login").await;
    c.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys("admin")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys("wrong password")
        .await
        .unwrap();
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        &c,
        ".alert",
        "Wrong username or password",
        Duration::from_secs(10),
    )
    .await;
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(&p.admin_password)
        .await
        .unwrap();
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(&c, "/").await;
    wait_text(&c, "h1", "Apps", Duration::from_secs(10)).await;

    // Deploy through the upload form.
    c.find(Locator::Id("deploy-name"))
        .await
        .unwrap()
        .send_keys(&app)
        .await
        .unwrap();
    c.find(Locator::Id("deploy-file"))
        .await
        .unwrap()
        .send_keys(zip_path.to_str().unwrap())
        .await
        .unwrap();
    c.find(Locator::Css("#deploy button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(&c, &format!("/apps/{app}")).await;

    // It becomes healthy without a reload.
    wait_text(&c, "#app-instances", "1/1 running", Duration::from_secs(60)).await;
    wait_text(&c, "#instances tbody", "running", Duration::from_secs(10)).await;

    // The process types with their command, instances, memory and health check.
    let web = wait_text(
        &c,
        "#processes tr[data-process='web']",
        "1/1 running",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        web.contains("python3 app.py") && web.contains("port") && web.contains("M"),
        "{web}"
    );
    let worker = wait_text(
        &c,
        "#processes tr[data-process='worker']",
        "1/1 running",
        Duration::from_secs(60),
    )
    .await;
    assert!(
        worker.contains("while true") && worker.contains("process"),
        "{worker}"
    );

    // A request through the router shows up in the live log view.
    let marker = unique("live-check");
    let app2 = app.clone();
    let marker2 = marker.clone();
    let p = tokio::task::spawn_blocking(move || {
        let (status, _) = p.get_app(&app2, &format!("/{marker2}")).unwrap();
        assert_eq!(status, 200);
        p
    })
    .await
    .unwrap();
    wait_text(&c, "#logs", &marker, Duration::from_secs(15)).await;

    // Scale to two instances from the dashboard.
    let inst = c.find(Locator::Id("scale-instances")).await.unwrap();
    inst.clear().await.unwrap();
    inst.send_keys("2").await.unwrap();
    c.find(Locator::Css("#scale button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#app-instances", "2/2 running", Duration::from_secs(90)).await;
    wait_text(
        &c,
        "#processes tr[data-process='web']",
        "2/2 running",
        Duration::from_secs(10),
    )
    .await;
    wait_text(
        &c,
        "#processes tr[data-process='worker']",
        "1/1 running",
        Duration::from_secs(10),
    )
    .await;

    // A new revision through the env form, then one-click rollback to revision 1.
    wait_text(&c, "#revisions", "(current)", Duration::from_secs(10)).await;
    c.find(Locator::Id("env-key"))
        .await
        .unwrap()
        .send_keys("GREETING")
        .await
        .unwrap();
    c.find(Locator::Id("env-value"))
        .await
        .unwrap()
        .send_keys("Hola from the dashboard")
        .await
        .unwrap();
    c.find(Locator::Css("#env-set button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#revisions", "2 (current)", Duration::from_secs(30)).await;
    let app3 = app.clone();
    let p = tokio::task::spawn_blocking(move || {
        paas_e2e::wait_for(Duration::from_secs(90), "the new env to serve", || {
            p.get_app(&app3, "/")
                .ok()
                .filter(|(_, b)| b.contains("Hola from the dashboard"))
                .map(|_| ())
        })
        .unwrap();
        p
    })
    .await
    .unwrap();
    shot(&c, "app").await;
    // From the timeline: revision 1's entry rolls back to it.
    c.find(Locator::Css("#timeline button.rollback[data-revision='1']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#revisions", "3 (current)", Duration::from_secs(30)).await;
    let app4 = app.clone();
    let p = tokio::task::spawn_blocking(move || {
        paas_e2e::wait_for(
            Duration::from_secs(90),
            "revision 1's content to serve again",
            || {
                p.get_app(&app4, "/")
                    .ok()
                    .filter(|(_, b)| b.contains("Hello from paas"))
                    .map(|_| ())
            },
        )
        .unwrap();
        p
    })
    .await
    .unwrap();

    // The apps list shows it; other pages render.
    c.goto(&format!("{base}/")).await.unwrap();
    wait_text(&c, "#apps", &app, Duration::from_secs(10)).await;
    shot(&c, "apps").await;
    c.goto(&format!("{base}/nodes")).await.unwrap();
    wait_text(
        &c,
        "#nodes",
        p.node_names()[0].as_str(),
        Duration::from_secs(10),
    )
    .await;
    shot(&c, "nodes").await;
    c.goto(&format!("{base}/tokens")).await.unwrap();
    wait_text(&c, "h1", "API tokens", Duration::from_secs(10)).await;
    shot(&c, "tokens").await;

    // Delete with confirmation.
    c.goto(&format!("{base}/apps/{app}")).await.unwrap();
    c.find(Locator::Id("delete-confirm"))
        .await
        .unwrap()
        .send_keys(&app)
        .await
        .unwrap();
    c.find(Locator::Css("#delete button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(&c, "/").await;
    let list = c
        .find(Locator::Css("#apps"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains(&app), "{list}");

    // The dashboard's own error page, without internals.
    c.goto(&format!("{base}/apps/{app}")).await.unwrap();
    let body = wait_text(&c, "main", "App not found", Duration::from_secs(10)).await;
    assert!(body.contains("404"), "{body}");

    // Log out.
    c.goto(&format!("{base}/")).await.unwrap();
    c.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(&c, "/login").await;
    c.close().await.unwrap();
    tokio::task::spawn_blocking(move || drop(p)).await.unwrap();
}

/// The charts' `data-max` of one series on the page as it is now (live-refreshed by the page's
/// script, not reloaded here).
async fn series_max(c: &Client, series: &str) -> f64 {
    let Ok(e) = c
        .find(Locator::Css(&format!(
            "#charts polyline[data-series={series}]"
        )))
        .await
    else {
        return 0.0;
    };
    e.attr("data-max")
        .await
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_series(c: &Client, series: &str, what: &str) {
    let start = Instant::now();
    while series_max(c, series).await <= 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the {series} chart never drew {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Issue 26: traffic through the router becomes points on the app page's request chart, the
/// nodes' samples points on its memory chart, and 5xx answers make the error line rise while the
/// page is open; the same points come from `GET /v1/apps/{name}/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_draw_requests_memory_and_a_rising_error_line() {
    let p = tokio::task::spawn_blocking(Platform::start)
        .await
        .unwrap()
        .expect("platform");
    let app = unique("charts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.py"),
        r#"import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if self.path == "/boom" else 200
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#,
    )
    .unwrap();
    let p = tokio::task::spawn_blocking(move || {
        let out = p.cli(&["push", &app, "-p", dir.path().to_str().unwrap()]);
        assert!(out.ok(), "{out:?}");
        (p, app)
    })
    .await
    .unwrap();
    let (p, app) = p;
    let base = p.api_url();
    let (_driver, c) = browser().await;
    login(&c, &base, &p.admin_password).await;
    c.goto(&format!("{base}/apps/{app}?window=15m"))
        .await
        .unwrap();
    wait_text(&c, "#charts-h", "Metrics", Duration::from_secs(10)).await;

    // Traffic, then points: requests and memory.
    let p = std::sync::Arc::new(p);
    let traffic = |path: &'static str, n: usize| {
        let (p, app) = (p.clone(), app.clone());
        tokio::task::spawn_blocking(move || {
            for _ in 0..n {
                let _ = p.get_app(&app, path);
            }
        })
    };
    traffic("/", 40).await.unwrap();
    wait_series(&c, "requests", "the requests").await;
    wait_series(&c, "memory", "the instance's memory").await;
    assert_eq!(series_max(&c, "errors").await, 0.0, "no 5xx yet");
    shot(&c, "app-charts").await;

    // 5xx answers: the error line rises on the open page.
    traffic("/boom", 30).await.unwrap();
    wait_series(&c, "errors", "the 5xx answers").await;

    // A line found by searching the retained logs.
    c.find(Locator::Id("log-grep"))
        .await
        .unwrap()
        .send_keys("/boom")
        .await
        .unwrap();
    c.find(Locator::Css("#log-search button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(
        &c,
        "#log-search-status",
        "line(s) found",
        Duration::from_secs(10),
    )
    .await;
    let found = c
        .find(Locator::Id("logs"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(found.contains("\"GET /boom\" 500"), "{found}");
    assert!(!found.contains("\"GET / "), "only matching lines: {found}");

    // The API serves the same points, every request once its 10 s interval has closed (the
    // chart above may have drawn the first of them while the rest were still in an open one).
    let url = format!("{base}/v1/apps/{app}/metrics?window=15m");
    let pp = p.clone();
    let m: serde_json::Value = tokio::task::spawn_blocking(move || {
        let sum = |m: &serde_json::Value, k: &str| {
            m["points"].as_array().map_or(0, |pts| {
                pts.iter().map(|p| p[k].as_u64().unwrap_or(0)).sum::<u64>()
            })
        };
        let start = Instant::now();
        loop {
            let m: serde_json::Value = reqwest::blocking::Client::new()
                .get(&url)
                .bearer_auth(pp.admin_token().unwrap())
                .send()
                .unwrap()
                .json()
                .unwrap();
            if (sum(&m, "requests") >= 70 && sum(&m, "errors") >= 30)
                || start.elapsed() > Duration::from_secs(45)
            {
                break m;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
    .await
    .unwrap();
    c.close().await.unwrap();
    // The platform's teardown blocks (it stops processes and checks the engine).
    tokio::task::spawn_blocking(move || drop(p)).await.unwrap();
    let points = m["points"].as_array().unwrap();
    let sum = |k: &str| {
        points
            .iter()
            .map(|p| p[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert!(sum("requests") >= 70, "{m}");
    assert!(sum("errors") >= 30, "{m}");
    assert!(
        m["marks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kind"] == "deploy"),
        "the push is marked: {m}"
    );
}

/// Issue 26: the list page flags a crash-looping app, and the space switcher limits the list to
/// one space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_flags_a_crash_loop_and_the_space_switcher_limits_it() {
    let p = tokio::task::spawn_blocking(Platform::start)
        .await
        .unwrap()
        .expect("platform");
    let crashing = unique("crashy");
    let other = unique("elsewhere");
    let space = format!("{}/dev", unique("org"));
    let (p, crashing, other, space) = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Procfile"),
            "web: echo starting && exit 1\n",
        )
        .unwrap();
        let out = p.cli(&[
            "push",
            &crashing,
            "-p",
            dir.path().to_str().unwrap(),
            "-t",
            "5",
        ]);
        assert!(!out.ok(), "a crashing app's push fails: {out:?}");
        assert!(p.cli(&["create-space", &space]).ok());
        assert!(p.cli(&["target", &space]).ok());
        let ok = p.cli(&[
            "push",
            &other,
            "-p",
            example("python-app").to_str().unwrap(),
        ]);
        assert!(ok.ok(), "{ok:?}");
        (p, crashing, other, space)
    })
    .await
    .unwrap();
    let base = p.api_url();
    let (_driver, c) = browser().await;
    login(&c, &base, &p.admin_password).await;
    // The crash loop is flagged (the list is server-rendered: reload until it shows).
    let start = Instant::now();
    loop {
        c.goto(&format!("{base}/")).await.unwrap();
        let flagged = c
            .find(Locator::Css(&format!(
                "tr[data-app=\"{crashing}\"].row-bad .flag-bad"
            )))
            .await;
        if let Ok(f) = flagged {
            let t = f.text().await.unwrap();
            assert!(t.contains("crash"), "{t}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the crashing app was never flagged"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        c.find(Locator::Css(&format!("tr[data-app=\"{other}\"].row-bad")))
            .await
            .is_err(),
        "a healthy app is not flagged"
    );
    shot(&c, "apps-flagged").await;
    // Pages: one app per page (`limit` as the API's; 100 by default), sorted by name, a link to
    // the next page and from a later one back to the first.
    assert!(crashing < other, "{crashing} sorts before {other}");
    c.goto(&format!("{base}/?limit=1")).await.unwrap();
    let rows = c.find_all(Locator::Css("#apps tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "one app per page");
    assert!(rows[0].text().await.unwrap().contains(&crashing));
    let head = c.find(Locator::Css(".head .muted")).await.unwrap();
    assert_eq!(head.text().await.unwrap(), "2 app(s), 1–1 shown");
    assert!(c.find(Locator::Css("a[rel=\"first\"]")).await.is_err());
    c.find(Locator::Css("a[rel=\"next\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#apps tbody", &other, Duration::from_secs(10)).await;
    let rows = c.find_all(Locator::Css("#apps tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "the second page holds the other app only");
    let head = c.find(Locator::Css(".head .muted")).await.unwrap();
    assert_eq!(head.text().await.unwrap(), "2 app(s), 2–2 shown");
    assert!(
        c.find(Locator::Css("a[rel=\"next\"]")).await.is_err(),
        "the last page has no next"
    );
    c.find(Locator::Css("a[rel=\"first\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&c, "#apps tbody", &crashing, Duration::from_secs(10)).await;
    // The switcher: choosing the space reloads the list with that space's apps only.
    c.find(Locator::Id("space-select"))
        .await
        .unwrap()
        .select_by_value(&space)
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let url = c.current_url().await.unwrap();
        if url.query().is_some_and(|q| q.contains("space=")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the switcher did not reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_text(&c, "#apps tbody", &other, Duration::from_secs(10)).await;
    let body = c
        .find(Locator::Css("#apps tbody"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!body.contains(&crashing), "{body}");
    c.close().await.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut p = p;
        // The crashing app is crashing on purpose.
        p.expect_unconverged("an app that crashes by design");
        drop(p)
    })
    .await
    .unwrap();
}

async fn login(c: &Client, base: &str, password: &str) {
    login_as(c, base, "admin", password).await
}

async fn login_as(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    c.find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(c, "/").await;
}

/// The deployment panel's (old, new) instance counts as the page's script shows them now.
async fn deploy_counts(c: &Client) -> (u32, u32) {
    let count = |id: &'static str| async move {
        c.find(Locator::Id(id))
            .await
            .ok()?
            .attr("data-count")
            .await
            .ok()??
            .parse::<u32>()
            .ok()
    };
    (
        count("deploy-old").await.unwrap_or(0),
        count("deploy-new").await.unwrap_or(0),
    )
}

/// Issue 26: a rolling restart of a two-instance app shows its progress live on the app page:
/// old instances go as new ones come, step by step, until all are new; the timeline records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_shows_old_and_new_counts_until_all_are_new() {
    let p = tokio::task::spawn_blocking(Platform::start)
        .await
        .unwrap()
        .expect("platform");
    let app = unique("rolling");
    let (p, app) = tokio::task::spawn_blocking(move || {
        let out = p.cli(&[
            "push",
            &app,
            "-p",
            example("python-app").to_str().unwrap(),
            "-i",
            "2",
        ]);
        assert!(out.ok(), "{out:?}");
        (p, app)
    })
    .await
    .unwrap();
    let base = p.api_url();
    let (_driver, c) = browser().await;
    login(&c, &base, &p.admin_password).await;
    c.goto(&format!("{base}/apps/{app}")).await.unwrap();
    wait_text(
        &c,
        "#deploy-step",
        "Up to date: 2/2",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(deploy_counts(&c).await, (0, 2));

    c.find(Locator::Id("restart"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Every distinct (old, new) pair the page shows, until it is up to date again.
    let mut seen: Vec<(u32, u32)> = Vec::new();
    let mut steps: Vec<String> = Vec::new();
    let start = Instant::now();
    loop {
        let pair = deploy_counts(&c).await;
        if seen.last() != Some(&pair) {
            seen.push(pair);
        }
        let step = c
            .find(Locator::Id("deploy-step"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if step.starts_with("Deploying") && steps.last() != Some(&step) {
            if steps.is_empty() {
                // Clicking the button scrolled away from the panel the screenshot is about.
                c.execute(
                    "document.getElementById('deployment').scrollIntoView();",
                    vec![],
                )
                .await
                .unwrap();
                shot(&c, "app-rolling").await;
            }
            steps.push(step.clone());
        }
        if pair.0 == 0 && seen.iter().any(|(old, _)| *old > 0) && step.starts_with("Up to date") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the restart never finished on the page: counts {seen:?}, steps {steps:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(seen.last(), Some(&(0, 2)), "{seen:?}");
    // Old instances went while new ones came: the old count fell and the new one rose from
    // below two back to two.
    assert!(seen.iter().any(|(old, _)| *old >= 1), "{seen:?}");
    assert!(
        seen.iter().any(|(old, new)| *old >= 1 && *new >= 1),
        "old and new side by side: {seen:?}"
    );
    assert!(
        steps.iter().any(|s| s.contains("step 1 of 2"))
            || steps.iter().any(|s| s.contains("step 2 of 2")),
        "{steps:?}"
    );
    // The timeline has who asked for it; the page lists it after a reload.
    c.goto(&format!("{base}/apps/{app}")).await.unwrap();
    let t = wait_text(&c, "#timeline", "app.restart", Duration::from_secs(10)).await;
    assert!(t.contains("by admin"), "{t}");
    c.close().await.unwrap();
    tokio::task::spawn_blocking(move || drop(p)).await.unwrap();
}

/// Issue 26: the nodes page shows what each node runs (app, process, index, state) and flags a
/// node whose agent stopped reporting; the pages stay usable at phone width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_page_lists_instances_and_flags_a_silent_node() {
    let mut p = tokio::task::spawn_blocking(Platform::start)
        .await
        .unwrap()
        .expect("platform");
    let app = unique("placed");
    let silent = unique("silent-node");
    // The app is placed before the second node exists, so killing that node moves nothing.
    let (mut p, app, silent, idx) = tokio::task::spawn_blocking(move || {
        let out = p.cli(&["push", &app, "-p", example("python-app").to_str().unwrap()]);
        assert!(out.ok(), "{out:?}");
        let idx = p.start_agent(&silent, "z2").unwrap();
        (p, app, silent, idx)
    })
    .await
    .unwrap();
    let base = p.api_url();
    let first = p.node_names()[0].clone();
    let (_driver, c) = browser().await;
    login(&c, &base, &p.admin_password).await;
    c.goto(&format!("{base}/nodes")).await.unwrap();
    let placed = wait_text(
        &c,
        &format!("section[id=\"placed-{first}\"]"),
        &app,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        placed.contains("web") && placed.contains("running"),
        "{placed}"
    );
    let row = wait_text(
        &c,
        &format!("tr[data-node=\"{silent}\"]"),
        "ready",
        Duration::from_secs(10),
    )
    .await;
    assert!(!row.contains("stopped reporting"), "{row}");
    assert!(
        c.find(Locator::Css(&format!(
            "tr[data-node=\"{silent}\"] button.drain"
        )))
        .await
        .is_ok(),
        "an operator can drain a ready node"
    );

    p = tokio::task::spawn_blocking(move || {
        p.kill_agent(idx);
        p
    })
    .await
    .unwrap();
    // Server-rendered: reload until the flag shows (the grace in tests is 10 s).
    let start = Instant::now();
    loop {
        c.goto(&format!("{base}/nodes")).await.unwrap();
        if let Ok(f) = c
            .find(Locator::Css(&format!(
                "tr[data-node=\"{silent}\"].row-bad .flag-bad"
            )))
            .await
        {
            assert_eq!(f.text().await.unwrap(), "stopped reporting");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the killed node was never flagged"
        );
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert!(
        c.find(Locator::Css(&format!("tr[data-node=\"{first}\"].row-bad")))
            .await
            .is_err(),
        "the live node is not flagged"
    );
    // Operators see each node's health over time, a point per minute since it heartbeated.
    for (node, series) in [
        (&first, "lag"),
        (&first, "reserved"),
        (&silent, "instances"),
    ] {
        let css = format!(
            "#node-health section[data-node=\"{node}\"] polyline[data-series=\"{series}\"]"
        );
        let line = c.find(Locator::Css(&css)).await.expect(&css);
        let points: u32 = line
            .attr("data-points")
            .await
            .unwrap()
            .unwrap_or_default()
            .parse()
            .unwrap();
        assert!(points >= 1, "{css} has no point");
    }
    shot(&c, "nodes").await;

    // Phone width: the pages reflow (tables scroll inside their own box, not the page).
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/apps/{app}")).await.unwrap();
    wait_text(&c, "#deploy-step", "Up to date", Duration::from_secs(30)).await;
    let overflow: bool = c
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap()
        .as_bool()
        .unwrap();
    shot(&c, "app-phone").await;
    assert!(!overflow, "the app page scrolls sideways at 390px");
    c.goto(&format!("{base}/nodes")).await.unwrap();
    wait_text(&c, "#nodes", &first, Duration::from_secs(10)).await;
    shot(&c, "nodes-phone").await;
    // What sticks out of the page (tables scroll inside their own box, so they do not count).
    let wide = c
        .execute(
            "return [...document.querySelectorAll('body *')]
               .filter(e => !e.closest('.table-wrap') && e.getBoundingClientRect().right > window.innerWidth + 1)
               .map(e => e.tagName + '#' + e.id + '.' + e.className).join(' ')
               + (document.documentElement.scrollWidth > window.innerWidth + 1
                  ? ' page ' + document.documentElement.scrollWidth + ' > ' + window.innerWidth : '');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        wide.as_str(),
        Some(""),
        "the nodes page scrolls sideways at 390px"
    );
    c.close().await.unwrap();
    tokio::task::spawn_blocking(move || drop(p)).await.unwrap();
}

/// Issue 26: a space's admin sees who holds which role in it (and nothing of other spaces) and
/// its quota beside what it uses, as the list of its apps does; a developer sees no membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_admin_sees_the_members_of_their_space_only() {
    let p = tokio::task::spawn_blocking(|| Platform::start_server(Options::default()))
        .await
        .unwrap()
        .expect("server");
    let org = unique("org");
    let space = format!("{org}/dev");
    let boss = unique("boss");
    let dev = unique("dev");
    let outsider = unique("viewer");
    let p = {
        let (space, boss, dev, outsider) =
            (space.clone(), boss.clone(), dev.clone(), outsider.clone());
        tokio::task::spawn_blocking(move || {
            p.login().unwrap();
            assert!(p.cli(&["create-space", &space]).ok());
            for (user, role, sp) in [
                (&boss, "admin", space.as_str()),
                (&dev, "developer", space.as_str()),
                (&outsider, "viewer", "default/default"),
            ] {
                assert!(p.cli(&["add-user", user, "-p", "a-long-password"]).ok());
                let out = p.cli(&["set-role", user, role, "--space", sp]);
                assert!(out.ok(), "{out:?}");
            }
            let out = p.cli(&["space-quota", &space, "--memory", "1G", "--apps", "3"]);
            assert!(out.ok(), "{out:?}");
            // One app (1 x 256 MB, staged by the server with no node) uses part of it.
            let zip = zip_of(&[("app.py", b"print('hi')", 0o644)]);
            let form = reqwest::blocking::multipart::Form::new().part(
                "archive",
                reqwest::blocking::multipart::Part::bytes(zip).file_name("app.zip"),
            );
            let res = reqwest::blocking::Client::new()
                .post(format!(
                    "{}/v1/apps/{}/push",
                    p.api_url(),
                    unique("quota-app")
                ))
                .bearer_auth(p.admin_token().unwrap())
                .header("X-Paas-Space", &space)
                .multipart(form)
                .send()
                .unwrap();
            assert_eq!(res.status().as_u16(), 201);
            p
        })
        .await
        .unwrap()
    };
    let base = p.api_url();
    let (_driver, c) = browser().await;
    login_as(&c, &base, &boss, "a-long-password").await;
    c.find(Locator::Css("nav a[href='/spaces']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(&c, "/spaces").await;
    let section = wait_text(
        &c,
        &format!("section[data-space=\"{space}\"]"),
        &dev,
        Duration::from_secs(10),
    )
    .await;
    assert!(section.contains(&format!("{boss} admin")), "{section}");
    assert!(section.contains(&format!("{dev} developer")), "{section}");
    let memory = wait_text(
        &c,
        &format!("section[data-space=\"{space}\"] tr[data-resource=\"memory\"]"),
        "1024 MB",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        memory.contains("256 MB"),
        "in use beside the quota: {memory}"
    );
    let apps = wait_text(
        &c,
        &format!("section[data-space=\"{space}\"] tr[data-resource=\"apps\"]"),
        "3",
        Duration::from_secs(10),
    )
    .await;
    assert!(apps.starts_with("apps 1 3"), "{apps}");
    let routes = wait_text(
        &c,
        &format!("section[data-space=\"{space}\"] tr[data-resource=\"routes\"]"),
        "unlimited",
        Duration::from_secs(10),
    )
    .await;
    assert!(routes.starts_with("routes 1"), "{routes}");
    let main = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !main.contains("default/default"),
        "not the admin's space: {main}"
    );
    assert!(!main.contains(&outsider), "{main}");
    shot(&c, "spaces").await;
    // The list of the space's apps shows the same quota and usage.
    c.goto(&format!("{base}/?space={}", space.replace('/', "%2F")))
        .await
        .unwrap();
    wait_text(
        &c,
        "section[data-space] tr[data-resource=\"memory\"]",
        "256 MB",
        Duration::from_secs(10),
    )
    .await;
    shot(&c, "apps-space").await;
    c.find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_path(&c, "/login").await;

    login_as(&c, &base, &dev, "a-long-password").await;
    c.goto(&format!("{base}/spaces")).await.unwrap();
    wait_text(
        &c,
        "#no-spaces",
        "You administer no space",
        Duration::from_secs(10),
    )
    .await;
    let main = c
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!main.contains(&boss), "{main}");
    c.close().await.unwrap();
    tokio::task::spawn_blocking(move || drop(p)).await.unwrap();
}
