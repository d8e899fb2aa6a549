//! Logs, metrics and events end to end, with the real engine: an app that prints numbered lines
//! reaches `logs -f` (the SSE stream) within a second, in order per instance, tagged; staging
//! lines show during `paas push`; crashes (exit code and OOM) show as CELL lines and events; lines
//! survive a `kill -9` of the controller; a flooding app is cut at its rate limit with a
//! dropped-count line while the API stays responsive; a developer's own limit
//! (`log-rate-limit-per-second`, `paas scale -l`) is kept, reported, and raised without a push or a
//! restart; a syslog drain receives RFC 5424 frames;
//! no line is lost or repeated across many log file rotations and a container restart, nor lost
//! while the agent is down (`kill -9`, then restarted); an
//! `https://` drain trusting a private CA receives JSON lines.

use paas_e2e::{bin, unique, wait_for, Platform};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One small app, its behaviours chosen by its first argument.
const APP_PY: &str = r#"
import os, socket, sys, threading, time
mode = sys.argv[1] if len(sys.argv) > 1 else "ticker"
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(os.environ["PORT"])))
s.listen(16)
go = threading.Event()
def serve():
    while True:
        c, _ = s.accept()
        try:
            if b"GET /go" in c.recv(4096):
                go.set()
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            c.close()
threading.Thread(target=serve, daemon=True).start()
print("app started in mode " + mode, flush=True)
if mode == "ticker":
    n = 0
    while True:
        n += 1
        print("tick %d %d" % (n, int(time.time() * 1000)), flush=True)
        time.sleep(0.05)
elif mode == "crash":
    time.sleep(1)
    print("about to exit with code 3", flush=True)
    sys.exit(3)
elif mode == "oom":
    time.sleep(1)
    hog = []
    while True:
        hog.append(bytearray(16 * 1024 * 1024))
elif mode == "rotate":
    # Run 1 waits for GET /go, prints 20,000 numbered lines at about 10,000 lines/s (dozens of
    # small log files' worth) and crashes; run 2 (the restarted container) prints them again.
    # The run number lives in the app dir, which a restart keeps.
    try:
        run = int(open("/app/run").read()) + 1
    except OSError:
        run = 1
    open("/app/run", "w").write(str(run))
    if run == 1:
        go.wait()
    w = sys.stdout.write
    for i in range(1, 20001):
        w("rot %d %d\n" % (run, i))
        if i % 100 == 0:
            time.sleep(0.01)
    if run == 1:
        sys.exit(3)
    while True:
        time.sleep(1)
elif mode == "steady":
    # 20 lines/s of about 100 bytes: 2 KB/s, over a 1K limit and far under a 16K one.
    n = 0
    while True:
        n += 1
        print("steady %d %s" % (n, "y" * 90), flush=True)
        time.sleep(0.05)
elif mode == "flood":
    time.sleep(1)
    n = 0
    out = sys.stdout
    while True:
        n += 1
        out.write("flood %d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n" % n)
        if n % 100 == 0:
            out.flush()
            # About 5000 lines/s: ten times the test's limit, gentle on the shared engine.
            time.sleep(0.02)
"#;

fn app_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("logapp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), APP_PY).unwrap();
    std::fs::write(dir.join("Procfile"), "web: python3 -u app.py ticker\n").unwrap();
    dir
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads the SSE stream on a thread: (time received in ms, the line's JSON) per `data:` frame.
fn open_stream(p: &Platform, app: &str, query: &str) -> mpsc::Receiver<(i64, Value)> {
    let url = format!("{}/v1/apps/{app}/logs/stream?{query}", p.api_url());
    let token = token(p);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap();
        let Ok(resp) = client.get(&url).bearer_auth(token).send() else {
            return;
        };
        assert!(
            resp.status().is_success(),
            "stream answered {}",
            resp.status()
        );
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(data).unwrap();
                if tx.send((now_ms(), v)).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Logins cost an argon2 hash; one token per platform (and server restart) is enough.
fn token(p: &Platform) -> String {
    use std::sync::Mutex;
    static TOKENS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let key = format!("{}{}", p.api_url(), p.data_dir().display());
    if let Some((_, t)) = TOKENS.lock().unwrap().iter().find(|(k, _)| *k == key) {
        return t.clone();
    }
    let t = p.admin_token().unwrap();
    TOKENS.lock().unwrap().push((key, t.clone()));
    t
}

fn recent(p: &Platform, app: &str, query: &str) -> Vec<Value> {
    let url = format!("{}/v1/apps/{app}/logs?{query}", p.api_url());
    let v: Value = reqwest::blocking::Client::new()
        .get(url)
        .bearer_auth(token(p))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["lines"].as_array().cloned().unwrap_or_default()
}

/// `tick N T` -> (N, T).
fn tick(msg: &str) -> Option<(u64, i64)> {
    let mut it = msg.strip_prefix("tick ")?.split(' ');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

#[test]
fn follow_is_fast_ordered_tagged_and_survives_a_controller_restart() {
    let mut p = Platform::start().expect("platform");
    let app = unique("ticker");
    let dir = app_dir(p.dir.path());

    // Staging output streams while the CLI waits.
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        dir.to_str().unwrap(),
        "-i",
        "2",
        "-m",
        "128M",
    ]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    assert!(
        out.stdout.contains("[STG] "),
        "no staging line during push: {out:?}"
    );

    // Live lines: within a second of being printed, consecutive per instance, tagged.
    let rx = open_stream(&p, &app, "source=APP&limit=0");
    let mut seen: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 2 || seen.values().any(|v| v.len() < 40) {
        assert!(
            Instant::now() < deadline,
            "not enough lines from both instances: {seen:?}{}",
            p.logs()
        );
        let Ok((at, v)) = rx.recv_timeout(Duration::from_secs(30)) else {
            panic!("stream stalled{}", p.logs())
        };
        let source = v["source"].as_str().unwrap().to_string();
        assert!(source == "APP/web/0" || source == "APP/web/1", "{v}");
        let Some((n, printed)) = tick(v["message"].as_str().unwrap()) else {
            continue;
        };
        assert_eq!(v["stream"], "stdout", "{v}");
        let latency = at - printed;
        assert!(latency < 1000, "line {v} took {latency} ms to arrive");
        seen.entry(source).or_default().push(n);
    }
    for (source, ns) in &seen {
        assert!(
            ns.windows(2).all(|w| w[1] == w[0] + 1),
            "{source} out of order or with gaps: {ns:?}"
        );
    }
    drop(rx);

    // The CLI follows too: recent lines first, then live ones.
    let mut child = Command::new(bin("paas"))
        .args(["logs", &app, "--source", "APP/web/1"])
        .env("PAAS_HOME", p.dir.path().join("cli-home"))
        .env_remove("PAAS_API")
        .env_remove("PAAS_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = 0;
    while got < 120 {
        let l = lines.next().expect("paas logs ended").unwrap();
        assert!(l.contains("[APP/web/1] OUT "), "{l}");
        got += 1;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Filters on the snapshot.
    let stg = recent(&p, &app, "source=STG");
    assert!(
        !stg.is_empty() && stg.iter().all(|l| l["source"] == "STG"),
        "{stg:?}"
    );
    let cell = recent(&p, &app, "source=CELL&grep=healthy");
    assert!(
        cell.iter()
            .any(|l| l["message"].as_str().unwrap().contains("is healthy")),
        "{cell:?}"
    );
    let inst1 = recent(&p, &app, "instance=1&limit=50");
    assert!(
        inst1.len() == 50 && inst1.iter().all(|l| l["source"] == "APP/web/1"),
        "{inst1:?}"
    );
    assert!(recent(&p, &app, "since=2m").len() > 10);
    let bad = reqwest::blocking::Client::new()
        .get(format!("{}/v1/apps/{app}/logs?since=lately", p.api_url()))
        .bearer_auth(p.admin_token().unwrap())
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().unwrap()["code"], "bad_request");

    // Metrics: resource samples in `paas app`, Prometheus text at /metrics.
    let v = wait_for(Duration::from_secs(30), "resource samples", || {
        let v = p.app_json(&app).ok()?;
        v["instances"]
            .as_array()?
            .iter()
            .all(|i| i["usage"]["memory_bytes"].as_u64().unwrap_or(0) > 0)
            .then_some(v)
    })
    .unwrap();
    let u = &v["instances"][0]["usage"];
    assert_eq!(u["memory_limit_bytes"], 128 * 1024 * 1024, "{u}");
    let shown = p.cli(&["app", &app]).stdout;
    assert!(shown.contains("/128M"), "{shown}");
    let metrics = reqwest::blocking::get(format!("{}/metrics", p.api_url()))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("paas_instances{state=\"running\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "paas_http_requests_total{method=\"GET\",route=\"/v1/apps/{name}\",status=\"200\"}"
        ),
        "{metrics}"
    );
    let received: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("paas_log_lines_received_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(received > 100, "{metrics}");

    // kill -9 of the controller: the stored history stays, and new lines keep coming.
    let before = recent(&p, &app, "source=APP&limit=20");
    let last_id = before.last().unwrap()["id"].as_i64().unwrap();
    wait_for(Duration::from_secs(5), "lines to be stored", || {
        // The hub writes in batches; the metric says when the database has caught up.
        let m = reqwest::blocking::get(format!("{}/metrics", p.api_url()))
            .ok()?
            .text()
            .ok()?;
        let get = |k: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|n| n.trim().parse::<u64>().ok())
        };
        // A line beyond the app's retention bound when the writer got it is done with, unwritten.
        let done =
            get("paas_log_lines_stored_total ")? + get("paas_log_lines_beyond_retention_total ")?;
        (done >= get("paas_log_lines_received_total ")?).then_some(())
    })
    .unwrap();
    let stored = recent(&p, &app, "source=APP&limit=1000");
    p.restart_server().expect("restart");
    let after = recent(&p, &app, "source=APP&limit=1000");
    let after_ids: std::collections::HashSet<i64> =
        after.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    let lost: Vec<_> = stored
        .iter()
        .filter(|l| !after_ids.contains(&l["id"].as_i64().unwrap()))
        .collect();
    // The oldest of the 1000 may have been pushed out by lines that arrived meanwhile.
    assert!(
        lost.iter()
            .all(|l| l["id"].as_i64().unwrap() < after[0]["id"].as_i64().unwrap()),
        "lost: {lost:?}"
    );
    assert!(
        after_ids.contains(&last_id),
        "line {last_id} is gone after the restart"
    );
    wait_for(
        Duration::from_secs(30),
        "new lines after the restart",
        || {
            let l = recent(&p, &app, "source=APP&limit=1");
            (l.first()?["id"].as_i64()? > last_id + 200).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}{}", p.logs()))
    .unwrap();

    assert!(p.cli(&["delete", &app, "-f"]).ok());
}

#[test]
fn crashes_and_oom_kills_show_as_cell_lines_and_events() {
    let p = Platform::start().expect("platform");
    let dir = app_dir(p.dir.path());
    let crash = unique("crash");
    // The push itself reports the crash and fails; that is fine here.
    let pushed = p.cli(&[
        "push",
        &crash,
        "-p",
        dir.to_str().unwrap(),
        "-c",
        "python3 -u app.py crash",
        "--timeout",
        "20",
    ]);
    let oom = unique("oom");
    let _ = p.cli(&[
        "push",
        &oom,
        "-p",
        dir.to_str().unwrap(),
        "-m",
        "64M",
        "-c",
        "python3 -u app.py oom",
        "--timeout",
        "20",
    ]);

    wait_for(
        Duration::from_secs(60),
        "a CELL line with the exit code",
        || {
            recent(&p, &crash, "source=CELL&grep=crashed")
                .iter()
                .any(|l| {
                    l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("exited with code 3"))
                })
                .then_some(())
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}\npush: {pushed:?}\nlogs: {:?}{}",
            recent(&p, &crash, ""),
            p.logs()
        )
    })
    .unwrap();
    let app_lines = recent(&p, &crash, "source=APP");
    assert!(
        app_lines
            .iter()
            .any(|l| l["message"] == "about to exit with code 3"),
        "{app_lines:?}"
    );
    wait_for(
        Duration::from_secs(60),
        "a CELL line saying OOM-killed",
        || {
            recent(&p, &oom, "source=CELL")
                .iter()
                .any(|l| {
                    l["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("OOM-killed"))
                })
                .then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}{:?}{}", recent(&p, &oom, ""), p.logs()))
    .unwrap();

    // The audit trail has who pushed and what the platform saw.
    let events = wait_for(Duration::from_secs(30), "a crash event", || {
        let out = p.cli(&["events", &crash]);
        (out.ok() && out.stdout.contains("instance.crash")).then_some(out.stdout)
    })
    .unwrap();
    assert!(
        events.contains("admin") && events.contains("app.push"),
        "{events}"
    );
    assert!(events.contains("exited with code 3"), "{events}");
    let json: Value = serde_json::from_str(&p.cli(&["events", &oom, "--json"]).stdout).unwrap();
    let kinds: Vec<&str> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"app.create") && kinds.contains(&"app.push"),
        "{json}"
    );
    wait_for(Duration::from_secs(30), "an OOM crash event", || {
        p.cli(&["events", &oom])
            .stdout
            .contains("OOM-killed")
            .then_some(())
    })
    .unwrap();
    let out = p.cli(&["events", "no-such-app"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("app_not_found"), "{out:?}");

    assert!(p.cli(&["delete", &crash, "-f"]).ok());
    assert!(p.cli(&["delete", &oom, "-f"]).ok());
}

#[test]
fn a_flood_is_cut_at_the_rate_limit_and_the_api_stays_responsive() {
    let mut p = Platform::start_server(Default::default()).expect("server");
    p.start_agent_with(
        &unique("e2e-node"),
        "zone-a",
        &[("PAAS_LOG_RATE_LIMIT_LINES", "500")],
    )
    .unwrap();
    p.login().unwrap();
    let dir = app_dir(p.dir.path());
    let app = unique("flood");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        dir.to_str().unwrap(),
        "-c",
        "python3 -u app.py flood",
    ]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());

    let line = wait_for(Duration::from_secs(30), "a dropped-count line", || {
        recent(&p, &app, "source=CELL&grep=dropped")
            .into_iter()
            .find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("log rate limit of 500 lines/s"))
            })
    })
    .map_err(|e| anyhow::anyhow!("{e}{}", p.logs()))
    .unwrap();
    let dropped: u64 = line["message"]
        .as_str()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped > 0, "{line}");

    // While the flood goes on the API answers quickly.
    let token = p.admin_token().unwrap();
    let client = reqwest::blocking::Client::new();
    for _ in 0..10 {
        let t = Instant::now();
        let r = client
            .get(format!("{}/v1/apps/{app}", p.api_url()))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert!(r.status().is_success());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "the API took {:?} during the flood",
            t.elapsed()
        );
    }
    // What got through is at most the limit per second (plus one window of slack).
    let rx = open_stream(&p, &app, "source=APP&limit=0");
    let start = now_ms();
    let mut n = 0;
    while now_ms() - start < 3000 {
        if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
            n += 1;
        }
    }
    assert!(n <= 500 * 4, "{n} app lines in 3 s with a limit of 500/s");
    assert!(n > 0, "nothing got through");
    assert!(p.cli(&["delete", &app, "-f"]).ok());
}

#[test]
fn a_syslog_drain_receives_rfc5424_frames() {
    let p = Platform::start().expect("platform");
    let dir = app_dir(p.dir.path());
    let app = unique("drained");
    let out = p.cli(&["push", &app, "-p", dir.to_str().unwrap()]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("syslog://{}", listener.local_addr().unwrap());
    let out = p.cli(&["log-drain", &app, &url]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(p.cli(&["log-drain", &app]).stdout.trim(), url);
    let bad = p.cli(&["log-drain", &app, "ftp://nowhere"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("bad_request"), "{bad:?}");

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut acc = Vec::new();
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                return;
            }
            acc.extend_from_slice(&buf[..n]);
            if tx.send(String::from_utf8_lossy(&acc).to_string()).is_err() {
                return;
            }
        }
    });
    let text = wait_for(Duration::from_secs(30), "a tick line at the drain", || {
        let t = rx.recv_timeout(Duration::from_secs(1)).ok()?;
        t.contains(" tick ").then_some(t)
    })
    .map_err(|e| anyhow::anyhow!("{e}{}", p.logs()))
    .unwrap();
    // Octet-counted RFC 5424: `LEN <14>1 TIMESTAMP paas APP [APP/web/0] - - tick ...`.
    let (len, rest) = text.split_once(' ').unwrap();
    let len: usize = len.parse().unwrap();
    let frame = &rest[..len];
    assert!(frame.starts_with("<14>1 "), "{frame}");
    assert!(frame.contains(&format!(" paas {app} [")), "{frame}");
    let tick_frame = text
        .split(" <14>1 ")
        .chain(std::iter::once(text.as_str()))
        .find(|f| f.contains(" tick "))
        .unwrap();
    assert!(tick_frame.contains("[APP/web/0] - - tick "), "{tick_frame}");

    assert!(p.cli(&["log-drain", &app, &url, "--delete"]).ok());
    assert!(p.cli(&["log-drain", &app]).stdout.trim().is_empty());
    assert!(p.cli(&["delete", &app, "-f"]).ok());
}

#[test]
fn no_line_is_lost_or_repeated_across_log_rotations_and_a_restart() {
    let mut p = Platform::start_server(Default::default()).expect("server");
    // 64 KiB files, two kept by the engine: each run below writes about 25 files' worth.
    p.start_agent_with(
        &unique("e2e-node"),
        "zone-a",
        &[
            ("PAAS_LOG_FILE_MAX_SIZE", "64k"),
            ("PAAS_LOG_FILE_MAX_FILES", "2"),
        ],
    )
    .unwrap();
    p.login().unwrap();
    let dir = app_dir(p.dir.path());
    let app = unique("rotate");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        dir.to_str().unwrap(),
        "-c",
        "python3 -u app.py rotate",
    ]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());

    // The recent lines include the start line: once it arrives, the stream is live.
    let rx = open_stream(&p, &app, "source=APP&limit=100");
    wait_for(Duration::from_secs(30), "the stream", || {
        rx.recv_timeout(Duration::from_millis(500))
            .ok()
            .filter(|(_, v)| v["message"] == "app started in mode rotate")
    })
    .unwrap();
    let (status, _) = p.get_app(&app, "/go").unwrap();
    assert_eq!(status, 200);

    let mut runs: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
    let deadline = Instant::now() + Duration::from_secs(90);
    while runs[0].len() + runs[1].len() < 40_000 && Instant::now() < deadline {
        let Ok((_, v)) = rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let msg = v["message"].as_str().unwrap_or_default();
        let mut it = msg.strip_prefix("rot ").unwrap_or_default().split(' ');
        let (Some(run), Some(n)) = (it.next(), it.next()) else {
            continue;
        };
        let run: usize = run.parse().unwrap();
        assert!(run == 1 || run == 2, "{msg}");
        if run == 1 {
            assert!(runs[1].is_empty(), "a line of run 1 after run 2 began");
        }
        runs[run - 1].push(n.parse().unwrap());
    }
    let expected: Vec<u32> = (1..=20_000).collect();
    for (i, got) in runs.iter().enumerate() {
        if *got != expected {
            let seen: std::collections::HashSet<u32> = got.iter().copied().collect();
            panic!(
                "run {}: {} lines, {} distinct, {} missing, in order: {}{}",
                i + 1,
                got.len(),
                seen.len(),
                expected.iter().filter(|n| !seen.contains(n)).count(),
                got.windows(2).all(|w| w[0] < w[1]),
                p.logs()
            );
        }
    }
    // The engine did rotate (else this test proves nothing), and nothing was reported lost.
    let cid = p.containers_of(&app).pop().expect("the container");
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.LogPath}}", &cid])
        .output()
        .unwrap();
    let log_path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        Path::new(&format!("{log_path}.1")).exists(),
        "no rotated log file next to {log_path}"
    );
    assert!(recent(&p, &app, "source=CELL&grep=lost").is_empty());
    assert!(p.cli(&["delete", &app, "-f"]).ok());
}

/// A TLS sink: appends every POST body to a file; prints its port.
const HTTPS_SINK_PY: &str = r#"
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(sys.argv[3], "ab") as f:
            f.write(body)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

/// Kills the sink however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_https_drain_trusting_a_private_ca_receives_json_lines() {
    // A private CA and a localhost certificate it signed; the CA is trusted only through
    // PAAS_DRAIN_CA_FILE.
    let tls = tempfile::tempdir().unwrap();
    let at = |name: &str| tls.path().join(name);
    let (ca, cert, key) = (at("ca.pem"), at("cert.pem"), at("key.pem"));
    std::fs::write(at("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=paas-test-ca -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out leaf.csr",
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out cert.pem",
    ] {
        let made = Command::new("openssl")
            .args(args.split(' '))
            .current_dir(tls.path())
            .output()
            .unwrap();
        assert!(made.status.success(), "openssl {args}: {made:?}");
    }
    let received = tls.path().join("received.ndjson");
    std::fs::write(tls.path().join("sink.py"), HTTPS_SINK_PY).unwrap();
    let mut sink = KillOnDrop(
        Command::new("python3")
            .arg(tls.path().join("sink.py"))
            .args([&cert, &key, &received])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    BufReader::new(sink.0.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let url = format!("https://localhost:{}/in", port.trim());

    let mut p = Platform::start_server_env(
        Default::default(),
        &[("PAAS_DRAIN_CA_FILE", ca.to_str().unwrap())],
    )
    .expect("server");
    p.start_agent(&unique("e2e-node"), "zone-a").unwrap();
    p.login().unwrap();
    let dir = app_dir(p.dir.path());
    let app = unique("tlsdrain");
    let out = p.cli(&["push", &app, "-p", dir.to_str().unwrap()]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    let out = p.cli(&["log-drain", &app, &url]);
    assert!(out.ok(), "{out:?}");

    let line = wait_for(
        Duration::from_secs(30),
        "a tick line at the https sink",
        || {
            std::fs::read_to_string(&received)
                .ok()?
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| {
                    v["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("tick "))
                })
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}{}", p.logs()))
    .unwrap();
    assert_eq!(line["app"], app.as_str());
    assert_eq!(line["source"], "APP/web/0");
    assert!(p.cli(&["delete", &app, "-f"]).ok());
}

/// The newest `tick N` the engine itself has for a container (what the app has printed).
fn engine_tick(cid: &str) -> Option<u64> {
    let out = Command::new("docker")
        .args(["logs", "--tail", "1", cid])
        .output()
        .ok()?;
    tick(String::from_utf8_lossy(&out.stdout).trim()).map(|(n, _)| n)
}

/// An agent that dies (`kill -9`) and comes back continues each adopted container's log where
/// it had got to: what the app printed while no agent ran arrives too, nothing is skipped.
#[test]
fn lines_printed_while_the_agent_is_down_are_not_lost() {
    let mut p = Platform::start().expect("platform");
    let dir = app_dir(p.dir.path());
    let app = unique("agentgap");
    let out = p.cli(&["push", &app, "-p", dir.to_str().unwrap()]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    let ticks = |p: &Platform| -> Vec<u64> {
        recent(p, &app, "source=APP&limit=10000")
            .iter()
            .filter_map(|l| tick(l["message"].as_str()?).map(|(n, _)| n))
            .collect()
    };
    wait_for(Duration::from_secs(30), "a few ticks", || {
        (ticks(&p).iter().max() >= Some(&10)).then_some(())
    })
    .unwrap();
    let cid = p.containers_of(&app).pop().expect("the container");
    p.kill_agent(0);
    let at_kill = engine_tick(&cid).expect("a tick in the engine's log");
    // Two seconds' worth of lines printed with no agent running.
    wait_for(
        Duration::from_secs(30),
        "ticks while the agent is down",
        || (engine_tick(&cid)? >= at_kill + 40).then_some(()),
    )
    .unwrap();
    let printed_while_down = engine_tick(&cid).unwrap();
    p.restart_agent(0).unwrap();
    wait_for(Duration::from_secs(30), "ticks after the restart", || {
        (ticks(&p).iter().max()? > &(printed_while_down + 20)).then_some(())
    })
    .unwrap();
    let got = ticks(&p);
    let max = *got.iter().max().unwrap();
    let seen: std::collections::BTreeSet<u64> = got.iter().copied().collect();
    let missing: Vec<u64> = (1..=max).filter(|n| !seen.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} ticks missing (killed at {at_kill}, {printed_while_down} printed before the restart): {:?}{}",
        missing.len(),
        &missing[..missing.len().min(20)],
        p.logs()
    );
    // At least once: what was handed on after the last saved position comes again, no more.
    let repeated = got.len() - seen.len();
    assert!(repeated < 100, "{repeated} ticks repeated");
    assert!(p.cli(&["delete", &app, "-f"]).ok());
}

/// `steady N ...` -> N.
fn steady(line: &Value) -> Option<u64> {
    line["message"]
        .as_str()?
        .strip_prefix("steady ")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_developer_log_rate_limit_drops_the_excess_and_is_raised_without_a_push() {
    let p = Platform::start().expect("platform");
    let app = unique("ratelimited");
    let dir = app_dir(p.dir.path());
    let manifest = dir.join("paas.yml");
    std::fs::write(
        &manifest,
        format!(
            "applications:\n- name: {app}\n  command: python3 -u app.py steady\n  log-rate-limit-per-second: 1K\n"
        ),
    )
    .unwrap();
    let manifest = manifest.to_str().unwrap();

    // A bad value is one line and a non-zero exit, before any upload.
    let bad = p.cli(&["push", "-f", manifest, "-l", "lots"]);
    assert_ne!(bad.code, 0, "{bad:?}");
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{bad:?}");
    assert!(
        bad.stderr.contains("invalid log rate limit \"lots\""),
        "{bad:?}"
    );

    let out = p.cli(&["push", "-f", manifest]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    let detail = p.app_json(&app).unwrap();
    assert_eq!(detail["log_rate_limit_bytes"], 1024, "{detail}");
    let shown = p.cli(&["app", &app]);
    assert!(
        shown.stdout.contains("log rate:   1K/s per instance"),
        "{shown:?}"
    );

    // 2 KB/s against 1 KB/s: about half is dropped, and each second's drops are one CELL line.
    let line = wait_for(Duration::from_secs(60), "a dropped-count line", || {
        recent(&p, &app, "source=CELL&grep=dropped")
            .into_iter()
            .find(|l| {
                l["message"].as_str().is_some_and(|m| {
                    m.contains("log rate limit of 1024 bytes/s per instance")
                        && m.contains("log-rate-limit-per-second, 1K")
                })
            })
    })
    .map_err(|e| anyhow::anyhow!("{e}{}", p.logs()))
    .unwrap();
    let message = line["message"].as_str().unwrap();
    let dropped: u64 = message.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(dropped > 0, "{message}");
    assert!(message.contains(" bytes): "), "{message}");

    // The API refuses a bad value with a stable code; the CLI in one line.
    let token = token(&p);
    let client = reqwest::blocking::Client::new();
    let r = client
        .patch(format!("{}/v1/apps/{app}", p.api_url()))
        .bearer_auth(&token)
        .json(&serde_json::json!({"log_rate_limit": "12Q"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "invalid_log_rate_limit", "{body}");
    assert!(body["message"].as_str().unwrap().contains("12Q"), "{body}");
    let bad = p.cli(&["scale", &app, "-l", "0"]);
    assert_ne!(bad.code, 0, "{bad:?}");
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{bad:?}");

    // Raised with `paas scale`: the same instance, never restarted, now ships every line.
    let before = &detail["instances"][0];
    let out = p.cli(&["scale", &app, "-l", "16K"]);
    assert!(out.ok(), "{out:?}");
    assert!(out.stdout.contains("log rate limit 16K/s"), "{out:?}");
    let run = wait_for(
        Duration::from_secs(60),
        "60 lines in a row after the raise",
        || {
            let ns: Vec<u64> = recent(&p, &app, "source=APP&limit=200")
                .iter()
                .filter_map(steady)
                .collect();
            // The newest run of consecutive numbers; under 1K/s it never passes about 10.
            let tail = ns.windows(2).rev().take_while(|w| w[1] == w[0] + 1).count() + 1;
            (tail >= 60).then_some(tail)
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}{}", p.logs()))
    .unwrap();
    assert!(run >= 60);
    let after = p.app_json(&app).unwrap();
    assert_eq!(after["log_rate_limit_bytes"], 16384, "{after}");
    let instances = after["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{after}");
    assert_eq!(
        instances[0]["since"], before["since"],
        "the instance was replaced: {after}"
    );
    assert_eq!(instances[0]["restarts"], 0, "{after}");
    assert_eq!(after["revision"]["number"], detail["revision"]["number"]);

    // The change is an event and an API line, naming who did it.
    let api = recent(&p, &app, "source=API&grep=log%20rate%20limit");
    assert!(
        api.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("changed the log rate limit 1K/s -> 16K/s"))),
        "{api:?}"
    );
    let events = p.cli(&["events", &app]);
    assert!(
        events.stdout.contains("log rate limit 1K/s -> 16K/s"),
        "{events:?}"
    );

    // -1 goes back to the platform default.
    let out = p.cli(&["scale", &app, "-l", "-1"]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(
        p.app_json(&app).unwrap()["log_rate_limit_bytes"],
        Value::Null
    );
    assert!(p.cli(&["delete", &app, "-f"]).ok());
}
