//! Runs the real `paas` binary against a tiny canned HTTP server on 127.0.0.1:0, to pin what
//! users and scripts see: one `error:` line with exit code 1, `--json` output, the push flow.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

type Handler = dyn Fn(&Request) -> (u16, String) + Send + Sync;

/// A one-request-per-connection HTTP/1.1 server answering with `handler`, recording requests.
struct Server {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(handler: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (handler, recorded) = (handler.clone(), recorded.clone());
                std::thread::spawn(move || serve(stream, &*handler, &recorded));
            }
        });
        Server { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: &Handler, recorded: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        reader.read_exact(&mut body).unwrap();
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let req = Request {
        method,
        path,
        headers,
        body,
    };
    let (status, resp_body) = handler(&req);
    recorded.lock().unwrap().push(req);
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        404 => "Not Found",
        502 => "Bad Gateway",
        _ => "Whatever",
    };
    let mut out = stream;
    // A handler answers a streamed push by starting its body with this marker.
    let (ndjson, resp_body) = match resp_body.strip_prefix("NDJSON\n") {
        Some(rest) => (true, rest.to_string()),
        None => (false, resp_body),
    };
    let ctype = if ndjson {
        "application/x-ndjson"
    } else if resp_body.starts_with('{') {
        "application/json"
    } else {
        "text/html"
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{resp_body}",
        resp_body.len()
    );
}

/// Runs `paas args...` with PAAS_API/PAAS_TOKEN set to `api` (when given) and a fresh PAAS_HOME.
fn paas(api: Option<&str>, home: &Path, args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paas"));
    cmd.args(args)
        .env_remove("PAAS_API")
        .env_remove("PAAS_TOKEN")
        .env("PAAS_HOME", home)
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(api) = api {
        cmd.env("PAAS_API", api).env("PAAS_TOKEN", "test-token");
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const APP_NOT_FOUND: &str = r#"{"code":"app_not_found","message":"app \"missing\" not found"}"#;

fn app_json(state: &str, instances: &str) -> String {
    format!(
        r#"{{"name":"web","state":"started","url":"http://web.localhost:8080","desired_instances":1,"memory_mb":256,
"revision":{{"number":1,"droplet":"abc","command":"python app.py","detected":"python","created_at":"2026-01-01T00:00:00Z"}},
"instances":[{{"index":0,"state":"{state}","node":"node-1","address":null,"restarts":0,"last_exit":null,"placement_error":null,"since":null}}{instances}],
"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}}"#
    )
}

#[test]
fn api_error_is_one_line_with_code_and_exit_1() {
    let server = Server::start(|_| (404, APP_NOT_FOUND.to_string()));
    let home = tempfile::tempdir().unwrap();
    let out = paas(Some(&server.url), home.path(), &["app", "missing"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: app \"missing\" not found (app_not_found)\n"
    );
    assert_eq!(text(&out.stdout), "");
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, "/v1/apps/missing");
    assert_eq!(reqs[0].headers["authorization"], "Bearer test-token");
}

#[test]
fn app_json_prints_the_detail_as_received() {
    let body = app_json("running", "");
    let served = body.clone();
    let server = Server::start(move |_| (200, served.clone()));
    let home = tempfile::tempdir().unwrap();
    let out = paas(
        Some(&server.url),
        home.path(),
        &["app", "web", "--json"],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.trim_end(), body.trim_end());
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["name"], "web");
    assert_eq!(v["state"], "started");
    assert_eq!(v["instances"][0]["index"], 0);
    assert_eq!(v["instances"][0]["state"], "running");
    assert_eq!(v["instances"][0]["node"], "node-1");
}

#[test]
fn non_json_error_shows_status_and_excerpt() {
    let server = Server::start(|_| (502, "<html>\n<h1>Bad gateway</h1>\n</html>".to_string()));
    let home = tempfile::tempdir().unwrap();
    let out = paas(Some(&server.url), home.path(), &["apps"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("error: the paas API at {} answered 502 Bad Gateway: <html> <h1>Bad gateway</h1> </html>\n", server.url)
    );
}

#[test]
fn not_logged_in_and_unreachable() {
    let home = tempfile::tempdir().unwrap();
    let out = paas(None, home.path(), &["apps"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: not logged in: run `paas login URL` or set PAAS_API and PAAS_TOKEN\n"
    );

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let out = paas(Some(&api), home.path(), &["nodes"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("error: cannot reach the paas API at {api}: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn login_reads_password_from_stdin_and_saves_config() {
    let server = Server::start(|req| {
        if req.path == "/v1/auth/login" {
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            if v["username"] == "admin" && v["password"] == "s3cret" {
                return (
                    200,
                    r#"{"token":"jwt-123","expires_at":"2030-01-01T00:00:00Z"}"#.into(),
                );
            }
            return (
                401,
                r#"{"code":"invalid_credentials","message":"wrong user name or password"}"#.into(),
            );
        }
        (200, r#"{"apps":[]}"#.into())
    });
    let home = tempfile::tempdir().unwrap();
    let out = paas(
        None,
        home.path(),
        &["login", &format!("{}/", server.url), "-u", "admin"],
        "s3cret\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Logged in to {} as admin\n", server.url)
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["api"], server.url.as_str());
    assert_eq!(cfg["token"], "jwt-123");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The saved login is used.
    let out = paas(None, home.path(), &["apps", "--json"], "");
    assert_eq!(text(&out.stdout), "[]\n");
    assert_eq!(
        server.requests().last().unwrap().headers["authorization"],
        "Bearer jwt-123"
    );

    let out = paas(
        None,
        home.path(),
        &["login", &server.url, "-u", "admin", "-p", "nope"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: wrong user name or password (invalid_credentials)\n"
    );
}

#[test]
fn delete_needs_f_without_a_terminal() {
    let server = Server::start(|_| (204, String::new()));
    let home = tempfile::tempdir().unwrap();
    let out = paas(Some(&server.url), home.path(), &["delete", "web"], "y\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("use -f"));
    assert!(server.requests().is_empty());
    let out = paas(Some(&server.url), home.path(), &["delete", "web", "-f"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reqs = server.requests();
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("DELETE", "/v1/apps/web")
    );
}

#[test]
fn logs_are_formatted() {
    let server = Server::start(|_| {
        (200, r#"{"lines":[
            {"timestamp":"2026-11-26T10:00:00.123Z","source":"APP/web/0","stream":"stdout","message":"hello"},
            {"timestamp":"2026-11-26T10:00:01Z","source":"STG","stream":"out","message":"Detected python"}]}"#.into())
    });
    let home = tempfile::tempdir().unwrap();
    let out = paas(
        Some(&server.url),
        home.path(),
        &["logs", "web", "--recent", "--limit", "5"],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "2026-11-26T10:00:00.123Z [APP/web/0] OUT hello\n2026-11-26T10:00:01.000Z [STG] Detected python\n"
    );
    assert_eq!(
        server.requests()[0].path,
        "/v1/apps/web/logs?recent=true&limit=5"
    );
}

fn app_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("app.py"), "print('hi')\n").unwrap();
    std::fs::create_dir(d.path().join("static")).unwrap();
    std::fs::write(d.path().join("static/index.html"), "<p>hi</p>\n").unwrap();
    d
}

const LOGS: &str = r#"{"lines":[{"timestamp":"2026-11-26T10:00:00.123Z","source":"APP/web/0","stream":"stderr","message":"Traceback: boom"}]}"#;

#[test]
fn push_uploads_then_waits_until_running() {
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let server = Server::start(move |req| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/apps/web/push") => (201, app_json("pending", "")),
        ("GET", "/v1/apps/web") => {
            let n = p.fetch_add(1, Ordering::SeqCst);
            (
                200,
                app_json(if n < 1 { "starting" } else { "running" }, ""),
            )
        }
        _ => (404, APP_NOT_FOUND.into()),
    });
    let home = tempfile::tempdir().unwrap();
    let dir = app_dir();
    let path = dir.path().to_str().unwrap();
    let out = paas(
        Some(&server.url),
        home.path(),
        &["push", "web", "-p", path, "-i", "2", "-m", "256M"],
        "",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    assert!(stdout.starts_with("Uploading web ("), "{stdout}");
    assert!(stdout.contains(" B, 2 files)\n"), "{stdout}");
    assert!(
        stdout.contains("Starting 1 instance ... 0/1 running (1 pending)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Starting 1 instance ... 0/1 running (1 starting)\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("web is running at http://web.localhost:8080 (revision 1, "),
        "{stdout}"
    );
    assert_eq!(text(&out.stderr), "");

    let reqs = server.requests();
    // The file match (incremental upload) and staging-log polls go beside the push itself.
    let push = reqs
        .iter()
        .find(|r| r.path.ends_with("/push"))
        .expect("a push request");
    assert_eq!(push.headers["authorization"], "Bearer test-token");
    assert!(push.headers["content-type"].starts_with("multipart/form-data; boundary="));
    let body = String::from_utf8_lossy(&push.body);
    assert!(
        body.contains(r#"Content-Disposition: form-data; name="archive"; filename="app.zip""#),
        "{body}"
    );
    assert!(body.contains("Content-Type: application/zip"));
    assert!(body.contains("name=\"instances\"\r\n\r\n2\r\n"));
    assert!(body.contains("name=\"memory_mb\"\r\n\r\n256\r\n"));
    assert!(!body.contains("name=\"command\""));
}

#[test]
fn push_reports_a_crash_with_logs() {
    let server = Server::start(|req| {
        match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/apps/web/push") => (201, app_json("starting", "")),
        ("GET", "/v1/apps/web") => (
            200,
            app_json("starting", "").replace(
                r#""state":"starting","node":"node-1","address":null,"restarts":0,"last_exit":null"#,
                r#""state":"crashed","node":"node-1","address":null,"restarts":1,"last_exit":"exited with code 1""#,
            ),
        ),
        ("GET", "/v1/apps/web/logs?recent=true&limit=20") => (200, LOGS.into()),
        _ => (404, APP_NOT_FOUND.into()),
    }
    });
    let home = tempfile::tempdir().unwrap();
    let dir = app_dir();
    let out = paas(
        Some(&server.url),
        home.path(),
        &["push", "web", "-p", dir.path().to_str().unwrap()],
        "",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        text(&out.stderr),
        "error: web failed to start: instance 0 (web) crashed (exited with code 1)\n"
    );
    assert!(
        stdout.contains("  instance 0 (web): crashed on node-1, 1 restart: exited with code 1\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2026-11-26T10:00:00.123Z [APP/web/0] ERR Traceback: boom\n"),
        "{stdout}"
    );
}

#[test]
fn push_times_out_saying_no_node_is_available() {
    let pending = app_json("pending", "").replace(
        r#""placement_error":null"#,
        r#""placement_error":"no node is available (0 ready nodes)""#,
    );
    let server = Server::start(move |req| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/apps/web/push") | ("GET", "/v1/apps/web") => (200, pending.clone()),
        ("GET", "/v1/apps/web/logs?recent=true&limit=20") => (200, r#"{"lines":[]}"#.into()),
        _ => (404, APP_NOT_FOUND.into()),
    });
    let home = tempfile::tempdir().unwrap();
    let dir = app_dir();
    let out = paas(
        Some(&server.url),
        home.path(),
        &[
            "push",
            "web",
            "-p",
            dir.path().to_str().unwrap(),
            "--timeout",
            "1",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: web did not start within 1 s: no node is available (0 ready nodes)\n"
    );
    assert!(
        text(&out.stdout).contains("  instance 0 (web): pending on node-1: no node is available")
    );
}

#[test]
fn push_refuses_a_file_or_an_empty_folder_at_once() {
    let server = Server::start(|_| (500, String::new()));
    let home = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = paas(
        Some(&server.url),
        home.path(),
        &["push", "web", "-p", empty.path().to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is empty"));
    let file = empty.path().join("f.txt");
    std::fs::write(&file, "x").unwrap();
    let out = paas(
        Some(&server.url),
        home.path(),
        &["push", "web", "-p", file.to_str().unwrap()],
        "",
    );
    assert!(text(&out.stderr).contains("is not a directory"));
    assert!(server.requests().is_empty());
}

/// The lines a streamed push answers, with the marker the canned server turns into the
/// `application/x-ndjson` content type.
fn stream(lines: &[String]) -> String {
    let mut body = String::from("NDJSON\n");
    for l in lines {
        body.push_str(l);
        body.push('\n');
    }
    body
}

#[test]
fn push_follows_the_event_stream() {
    let app = app_json("running", "").replace('\n', "");
    let lines = vec![
        r#"{"type":"upload","bytes":10}"#.to_string(),
        r#"{"type":"staging","waiting":"no node is available with the placement labels gpu=yes"}"#.to_string(),
        r#"{"type":"log","source":"STG","message":"Waiting for a node to stage on: no node is available with the placement labels gpu=yes"}"#.to_string(),
        r#"{"type":"staging","node":"node-1"}"#.to_string(),
        r#"{"type":"log","source":"STG","message":"-----> python buildpack"}"#.to_string(),
        r#"{"type":"droplet","sha256":"abc","bytes":2048,"buildpack":"python"}"#.to_string(),
        r#"{"type":"revision","number":1}"#.to_string(),
        r#"{"type":"instance","process_type":"web","index":0,"state":"starting","node":"node-1"}"#.to_string(),
        r#"{"type":"some_future_line","x":1}"#.to_string(),
        r#"{"type":"instance","process_type":"web","index":0,"state":"running","node":"node-1"}"#.to_string(),
        format!(r#"{{"type":"result","status":"succeeded","app":{app}}}"#),
    ];
    let body = stream(&lines);
    let server = Server::start(move |req| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/apps/web/push") => (200, body.clone()),
        _ => (404, APP_NOT_FOUND.into()),
    });
    let home = tempfile::tempdir().unwrap();
    let dir = app_dir();
    let out = paas(
        Some(&server.url),
        home.path(),
        &["push", "web", "-p", dir.path().to_str().unwrap()],
        "",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}{stdout}", text(&out.stderr));
    let push = server
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/push"))
        .unwrap();
    assert_eq!(push.headers["accept"], "application/x-ndjson");
    let shown: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(
        shown[..5],
        [
            "[STG] Waiting for a node to stage on: no node is available with the placement labels gpu=yes",
            "[STG] -----> python buildpack",
            "Revision 1 is current: starting its instances",
            "web #0: starting on node-1",
            "web #0: running on node-1",
        ],
        "{stdout}"
    );
    assert!(
        shown[5].starts_with("web is running at http://web.localhost:8080 (revision 1, "),
        "{stdout}"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_streamed_push_that_fails_prints_the_reason_on_one_line() {
    let body = stream(&[
        r#"{"type":"revision","number":2}"#.to_string(),
        r#"{"type":"instance","process_type":"web","index":0,"state":"pending","reason":"no node is available: needs 9000 MB of memory, the most free on a ready node is 900 MB: lower the memory (-m) or add a node"}"#.to_string(),
        r#"{"type":"result","status":"failed","code":"no_node_available","message":"web #0 of revision 2 cannot be placed: no node is available: needs 9000 MB of memory"}"#.to_string(),
    ]);
    let server = Server::start(move |req| match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/apps/web/push") => (200, body.clone()),
        _ => (404, APP_NOT_FOUND.into()),
    });
    let home = tempfile::tempdir().unwrap();
    let dir = app_dir();
    let out = paas(
        Some(&server.url),
        home.path(),
        &["push", "web", "-p", dir.path().to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: web #0 of revision 2 cannot be placed: no node is available: needs 9000 MB of memory (no_node_available)\n"
    );
    assert!(
        text(&out.stdout).contains("web #0: pending: no node is available: needs 9000 MB"),
        "{}",
        text(&out.stdout)
    );

    // A stream cut before its result is an error too, not a success.
    let cut = stream(&[r#"{"type":"revision","number":2}"#.to_string()]);
    let server = Server::start(move |_| (200, cut.clone()));
    let out = paas(
        Some(&server.url),
        home.path(),
        &["push", "web", "-p", dir.path().to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("the push stream ended without a result"),
        "{}",
        text(&out.stderr)
    );
}
