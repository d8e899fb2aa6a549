//! The router end to end, with real agents and containers: balancing, forwarding headers,
//! instance targeting, errors, request bodies, the RTR access log, WebSockets, and zero failed
//! requests while an instance is killed or the app is redeployed smaller under load.

use paas_e2e::{unique, wait_for, Options, Platform, StandaloneRouter};
use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

fn probe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("apps")
        .join("probe")
}

fn push(p: &Platform, app: &str, instances: u32) {
    let n = instances.to_string();
    let out = p.cli(&[
        "push",
        app,
        "-p",
        probe().to_str().unwrap(),
        "-i",
        &n,
        "-m",
        "64M",
    ]);
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
}

fn client(p: &Platform, app: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .resolve(&format!("{app}.localhost"), p.addr)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn url(p: &Platform, app: &str, path: &str) -> String {
    format!("http://{app}.localhost:{}{path}", p.addr.port())
}

fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn balancing_headers_targeting_errors_and_access_log() {
    let mut p = Platform::start_server_env(Options::default(), &[("PAAS_ROUTER_WAIT_MS", "1000")])
        .expect("server");
    p.start_agent(&unique("e2e-rtr"), "zone-a").unwrap();
    p.login().unwrap();
    let app = unique("rr");
    push(&p, &app, 3);
    let c = client(&p, &app);
    let u = url(&p, &app, "/");

    // Round-robin: every instance answers, and the header names the one that did.
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let r = c.get(&u).send().unwrap();
        assert_eq!(r.status(), 200);
        let inst = header(&r, "x-paas-instance");
        assert_eq!(header(&r, "x-paas-app"), app);
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(
            v["instance"],
            inst.as_str(),
            "X-Paas-Instance names the instance that answered"
        );
        seen.insert(inst);
    }
    assert_eq!(
        seen,
        BTreeSet::from(["0".to_string(), "1".into(), "2".into()])
    );

    // Forwarding headers as the instance sees them; a client's X-Request-Id is kept.
    let r = c
        .get(&u)
        .header("X-Forwarded-For", "203.0.113.7")
        .header("X-Request-Id", "req-abc-123")
        .send()
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "req-abc-123");
    let h = r.json::<serde_json::Value>().unwrap()["headers"].clone();
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["x-forwarded-host"],
        format!("{app}.localhost:{}", p.addr.port())
    );
    assert_eq!(h["x-request-id"], "req-abc-123");
    // Without one, the router makes one, the same for the instance and the client, new each time.
    let r1 = c.get(&u).send().unwrap();
    let id1 = header(&r1, "x-request-id");
    assert_eq!(
        r1.json::<serde_json::Value>().unwrap()["headers"]["x-request-id"],
        id1.as_str()
    );
    let id2 = header(&c.get(&u).send().unwrap(), "x-request-id");
    assert!(id1.len() >= 16 && id1 != id2, "{id1} {id2}");

    // Targeting one instance.
    for _ in 0..6 {
        let r = c
            .get(&u)
            .header("X-Paas-App-Instance", format!("{app}:2"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-paas-instance"), "2");
    }
    let r = c
        .get(&u)
        .header("X-Paas-App-Instance", "someone-else:1")
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(header(&r, "x-paas-router-error"), "bad_instance_header");
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["code"],
        "bad_request"
    );
    let r = c
        .get(&u)
        .header("X-Paas-App-Instance", format!("{app}:7"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "x-paas-router-error"), "instance_not_found");
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["code"],
        "instance_not_found"
    );

    // Unknown app: 404 with a reason.
    let other = unique("nope");
    let r = client(&p, &other).get(url(&p, &other, "/")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "x-paas-router-error"), "unknown_route");
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["code"],
        "route_not_found"
    );

    // A request body streams through and back unchanged (2 MiB, not one chunk).
    let body: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = c.post(&u).body(body.clone()).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), body.as_slice());

    // One RTR line per request in the app's log stream.
    wait_for(
        Duration::from_secs(15),
        "RTR lines in logs --recent",
        || {
            let out = p.cli(&["logs", &app, "--recent"]);
            (out.ok()
                && out.stdout.contains("[RTR]")
                && out.stdout.contains("\"GET /\" 200")
                && out.stdout.contains("request_id=req-abc-123")
                && out.stdout.contains("instance=2@")
                && out.stdout.contains("\"GET /\" 404"))
            .then_some(())
        },
    )
    .unwrap();
}

#[test]
fn websocket_echo_through_the_router() {
    let p = Platform::start().expect("platform");
    let app = unique("ws");
    push(&p, &app, 1);
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let req = format!("ws://{app}.localhost:{}/ws", p.addr.port())
        .into_client_request()
        .unwrap();
    let stream = TcpStream::connect(p.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, res) =
        tungstenite::client(req, stream).expect("WebSocket handshake through the router");
    assert_eq!(res.status(), 101);
    assert_eq!(res.headers().get("x-paas-app").unwrap(), app.as_str());
    ws.send(Message::Text("hello through the router".into()))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Text("hello through the router".into())
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    ws.send(Message::Binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Binary(big));
    ws.close(None).unwrap();
    // The close handshake completes (the instance answers the close through the router).
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean close: {e}"),
        }
    }
}

#[test]
fn any_upgrade_is_tunnelled_not_only_websocket() {
    use std::io::{BufRead, BufReader, Write};
    let p = Platform::start().expect("platform");
    let app = unique("upg");
    push(&p, &app, 1);
    let mut stream = TcpStream::connect(p.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /line HTTP/1.1\r\nHost: {app}.localhost\r\nConnection: Upgrade\r\nUpgrade: line-echo\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push(line.trim_end().to_ascii_lowercase());
    }
    assert!(head[0].starts_with("http/1.1 101"), "{head:?}");
    assert!(head.contains(&"upgrade: line-echo".to_string()), "{head:?}");
    assert!(head.contains(&format!("x-paas-app: {app}")), "{head:?}");
    // Bytes flow both ways, several times, over the one upgraded connection.
    for word in ["hello", "through the router", "again"] {
        writeln!(stream, "{word}").unwrap();
        let mut back = String::new();
        reader.read_line(&mut back).unwrap();
        assert_eq!(back, format!("{}\n", word.to_uppercase()));
    }
    writeln!(stream, "bye").unwrap();
    let mut rest = String::new();
    assert_eq!(reader.read_line(&mut rest).unwrap(), 0, "closed after bye");
    drop((reader, stream));
    // The tunnel's end is written as an RTR line with the 101.
    wait_for(Duration::from_secs(15), "the upgrade's RTR line", || {
        let out = p.cli(&["logs", &app, "--recent", "--source", "RTR"]);
        out.stdout.contains("\"GET /line\" 101").then_some(())
    })
    .unwrap();
}

/// Requests GET / in `threads` loops until stopped; records every non-2xx or error.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(p: &Platform, app: &str, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                let (c, u) = (client(p, app), url(p, app, "/"));
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match c.get(&u).send() {
                            Ok(r) if r.status().is_success() => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => {
                                let s = r.status();
                                let reason = header(&r, "x-paas-router-error");
                                failures
                                    .lock()
                                    .unwrap()
                                    .push(format!("{s} {reason} {}", r.text().unwrap_or_default()));
                            }
                            Err(e) => failures.lock().unwrap().push(format!("error: {e}")),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            handles,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        let f = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), f)
    }
}

#[test]
fn killed_instance_mid_load_fails_no_request() {
    let p = Platform::start().expect("platform");
    let app = unique("kill");
    push(&p, &app, 3);
    let load = Load::start(&p, &app, 4);
    wait_for(Duration::from_secs(20), "load to flow", || {
        (load.ok() >= 100).then_some(())
    })
    .unwrap();

    let victim = p.containers_of(&app)[0].clone();
    let out = std::process::Command::new("docker")
        .args(["kill", &victim])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_kill = load.ok();
    // Keep the load on until the platform noticed (a restart is counted) and traffic went on.
    wait_for(
        Duration::from_secs(60),
        "the killed instance to be restarted",
        || {
            let v = p.app_json(&app).ok()?;
            let restarts: u64 = v["instances"]
                .as_array()?
                .iter()
                .filter_map(|i| i["restarts"].as_u64())
                .sum();
            (restarts >= 1 && load.ok() >= at_kill + 300).then_some(())
        },
    )
    .unwrap();
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn redeploy_from_three_to_one_instance_under_load_fails_no_request() {
    let p = Platform::start().expect("platform");
    let app = unique("scale");
    push(&p, &app, 3);
    let load = Load::start(&p, &app, 4);
    wait_for(Duration::from_secs(20), "load to flow", || {
        (load.ok() >= 100).then_some(())
    })
    .unwrap();
    // `paas push -i 1` makes a new revision with one instance: the three old instances go, one
    // new one comes; requests in between wait for it rather than fail.
    push(&p, &app, 1);
    wait_for(
        Duration::from_secs(60),
        "old containers to be removed",
        || (p.containers_of(&app).len() == 1).then_some(()),
    )
    .unwrap();
    let now = load.ok();
    wait_for(
        Duration::from_secs(20),
        "traffic on the new instance",
        || (load.ok() >= now + 100).then_some(()),
    )
    .unwrap();
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn routes_map_unmap_and_longest_prefix_wins() {
    let p = Platform::start().expect("platform");
    let (web, api) = (unique("web"), unique("api"));
    push(&p, &web, 1);
    push(&p, &api, 1);
    let host = format!("{}.example.test", unique("shop"));
    let out = p.cli(&["map-route", &web, &host]);
    assert!(out.ok(), "{out:?}");
    let out = p.cli(&["map-route", &api, &format!("{host}/api/")]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout.contains(&format!("Mapped {host}/api to {api}")),
        "{out:?}"
    );

    let c = reqwest::blocking::Client::builder()
        .resolve(&host, p.addr)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let app_of = |path: &str| {
        let r = c
            .get(format!("http://{host}:{}{path}", p.addr.port()))
            .send()
            .unwrap();
        (r.status().as_u16(), header(&r, "x-paas-app"))
    };
    assert_eq!(app_of("/"), (200, web.clone()));
    assert_eq!(
        app_of("/apix"),
        (200, web.clone()),
        "prefixes match whole segments"
    );
    assert_eq!(app_of("/api"), (200, api.clone()));
    assert_eq!(app_of("/api/users?x=1"), (200, api.clone()));
    // The default route keeps working beside mapped ones.
    assert_eq!(p.get_app(&api, "/").unwrap().0, 200);

    let out = p.cli(&["routes", "--json"]);
    assert!(out.ok(), "{out:?}");
    let routes: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let has = |h: &str, path: &str, app: &str, default: bool| {
        routes.as_array().unwrap().iter().any(|r| {
            r["host"] == h && r["path"] == path && r["app"] == app && r["default"] == default
        })
    };
    assert!(
        has(&host, "", &web, false) && has(&host, "/api", &api, false),
        "{routes}"
    );
    assert!(has(&format!("{web}.localhost"), "", &web, true), "{routes}");
    let out = p.cli(&["routes"]);
    assert!(
        out.ok() && out.stdout.contains("HOST") && out.stdout.contains(&host),
        "{out:?}"
    );

    // Errors: one line each, with a stable code, exit 1.
    for (args, code) in [
        (
            vec!["map-route", web.as_str(), "not a host"],
            "(invalid_route)",
        ),
        (vec!["map-route", web.as_str(), host.as_str()], "(conflict)"),
        (
            vec!["map-route", web.as_str(), &format!("{api}.localhost")],
            "(conflict)",
        ),
        (
            vec!["unmap-route", web.as_str(), &format!("{host}/nothing")],
            "(not_found)",
        ),
        (
            vec!["map-route", "no-such-app", "x.example.test"],
            "(app_not_found)",
        ),
    ] {
        let out = p.cli(&args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(code) && out.stderr.trim().lines().count() == 1,
            "{args:?}: {out:?}"
        );
    }

    // The controller's own host cannot become an app's route.
    let ctl = format!("{}.example.test", unique("ctl"));
    let res = reqwest::blocking::Client::builder()
        .resolve(&ctl, p.addr)
        .build()
        .unwrap()
        .post(format!(
            "http://{ctl}:{}/v1/apps/{web}/routes",
            p.addr.port()
        ))
        .bearer_auth(p.admin_token().unwrap())
        .json(&serde_json::json!({ "route": ctl }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<serde_json::Value>().unwrap()["code"], "conflict");

    // Unmapped: /api falls back to the host's shorter route.
    let out = p.cli(&["unmap-route", &api, &format!("{host}/api")]);
    assert!(out.ok(), "{out:?}");
    assert_eq!(app_of("/api/users"), (200, web.clone()));
    let out = p.cli(&["unmap-route", &web, &host]);
    assert!(out.ok(), "{out:?}");
    // The host is no app's any more (it falls through to the controller's own pages).
    assert_eq!(app_of("/").1, "");
}

/// The app a standalone router's response came from: (status, `x-paas-app`).
fn via(router: &StandaloneRouter, host: &str) -> Option<(u16, String)> {
    router.get(host, "/").map(|(status, app, _)| (status, app))
}

#[test]
fn standalone_router_follows_the_controller_and_outlives_it() {
    let mut p = Platform::start().expect("platform");
    let app = unique("solo");
    push(&p, &app, 2);
    let router = StandaloneRouter::start(&p, &p.api_url());
    let default_host = format!("{app}.localhost");
    wait_for(
        Duration::from_secs(20),
        "the standalone router to serve the app",
        || (via(&router, &default_host)? == (200, app.clone())).then_some(()),
    )
    .unwrap();

    // A route mapped on the controller reaches the standalone router (long-poll, not a restart).
    let host = format!("{}.example.test", unique("solo"));
    let out = p.cli(&["map-route", &app, &host]);
    assert!(out.ok(), "{out:?}");
    wait_for(
        Duration::from_secs(5),
        "the mapped route on the standalone router",
        || (via(&router, &host)? == (200, app.clone())).then_some(()),
    )
    .unwrap();

    // Its RTR lines reach the app's log stream through the controller.
    wait_for(
        Duration::from_secs(15),
        "the standalone router's RTR lines",
        || {
            let out = p.cli(&["logs", &app, "--recent"]);
            (out.ok() && out.stdout.contains("[RTR]") && out.stdout.contains("\"GET /\" 200"))
                .then_some(())
        },
    )
    .unwrap();

    // The controller dies; the router keeps serving the last table it had.
    p.kill_server();
    assert!(
        reqwest::blocking::get(format!("{}/healthz", p.api_url())).is_err(),
        "the controller is down"
    );
    for _ in 0..40 {
        assert_eq!(via(&router, &default_host), Some((200, app.clone())));
        assert_eq!(via(&router, &host), Some((200, app.clone())));
    }
    let other = format!("{}.localhost", unique("nope"));
    assert_eq!(via(&router, &other).map(|r| r.0), Some(404));
}

/// A self-signed certificate for `names`: (cert PEM, key PEM, cert DER).
fn self_signed(names: &[String]) -> (String, String, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(names.to_vec()).unwrap();
    (
        c.cert.pem(),
        c.key_pair.serialize_pem(),
        c.cert.der().to_vec(),
    )
}

/// Writes a pair so the server never sees a new certificate beside an old key: both files are
/// written aside and renamed in, key first.
fn install_pair(dir: &std::path::Path, host: &str, cert: &str, key: &str) {
    for (ext, body) in [("key", key), ("crt", cert)] {
        let tmp = dir.join(format!(".{host}.{ext}.tmp"));
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{host}.{ext}"))).unwrap();
    }
}

#[test]
fn https_listener_speaks_http2_and_reloads_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let app = unique("tls");
    let host = format!("{app}.localhost");
    let (cert1, key1, der1) = self_signed(std::slice::from_ref(&host));
    install_pair(certs.path(), &host, &cert1, &key1);
    let mut p = Platform::start_server_env(
        Options::default(),
        &[
            ("PAAS_TLS_LISTEN", "127.0.0.1:0"),
            ("PAAS_TLS_CERT_DIR", certs.path().to_str().unwrap()),
        ],
    )
    .expect("server");
    p.start_agent(&unique("e2e-tls"), "zone-a").unwrap();
    p.login().unwrap();
    push(&p, &app, 1);
    let tls_addr: std::net::SocketAddr =
        std::fs::read_to_string(p.data_dir().join("tls-listen-addr"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    let (cert2, key2, der2) = self_signed(std::slice::from_ref(&host));
    // A fresh client (no pooled connection) per request, trusting both certificates, so each
    // request shows the certificate the server serves right now.
    let https = |h: &str| {
        reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(cert1.as_bytes()).unwrap())
            .add_root_certificate(reqwest::Certificate::from_pem(cert2.as_bytes()).unwrap())
            .tls_info(true)
            .resolve(h, tls_addr)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    };
    let url = format!("https://{host}:{}/", tls_addr.port());
    let served = |r: &reqwest::blocking::Response| {
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate())
            .map(<[u8]>::to_vec)
    };

    let r = https(&host).get(&url).send().expect("https request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN picks HTTP/2");
    assert_eq!(served(&r), Some(der1.clone()));
    assert_eq!(header(&r, "x-paas-app"), app);
    let h = r.json::<serde_json::Value>().unwrap()["headers"].clone();
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    // The plain listener still says http.
    let h = client(&p, &app)
        .get(url_for(&p, &app))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap()["headers"]
        .clone();
    assert_eq!(h["x-forwarded-proto"], "http");

    // A name the folder has no certificate for (and no `default`) fails the handshake.
    let other = format!("other-{app}.localhost");
    let e = https(&other)
        .get(format!("https://{other}:{}/", tls_addr.port()))
        .send();
    assert!(e.is_err(), "no certificate for {other}, yet: {e:?}");

    // Renewal: new files in the folder are served on later handshakes, no restart.
    install_pair(certs.path(), &host, &cert2, &key2);
    wait_for(Duration::from_secs(20), "the renewed certificate", || {
        let r = https(&host).get(&url).send().ok()?;
        (r.status() == 200 && served(&r).as_deref() == Some(der2.as_slice())).then_some(())
    })
    .unwrap();
    // A broken renewal keeps the working certificate.
    std::fs::write(certs.path().join(format!("{host}.crt")), "garbage").unwrap();
    // Once the server has seen (and refused) it, handshakes still get the last good one.
    wait_for(
        Duration::from_secs(20),
        "the broken renewal noticed",
        || {
            std::fs::read_to_string(p.dir.path().join("server.log"))
                .ok()?
                .contains("keeping the previous certificates")
                .then_some(())
        },
    )
    .unwrap();
    let r = https(&host).get(&url).send().expect("still served");
    assert_eq!(served(&r), Some(der2.clone()));
    drop(p);
}

fn url_for(p: &Platform, app: &str) -> String {
    url(p, app, "/")
}

fn router_requests(p: &Platform) -> u64 {
    let text = reqwest::blocking::get(format!("{}/metrics", p.api_url()))
        .and_then(|r| r.text())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("paas_router_requests_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Graceful drain: a request in flight to an instance that a rolling restart retires finishes
/// before the instance is stopped. The probe dies at once on SIGTERM, and the request is a POST
/// (never replayed on another instance), so only the drain can save it.
#[test]
fn retired_instance_finishes_its_in_flight_request() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    p.start_agent(&unique("e2e-drain"), "zone-a").unwrap();
    p.login().unwrap();
    let app = unique("drain");
    push(&p, &app, 1);
    // Longer than a replacement takes to start and pass its health check.
    let slow = slow_post(&p, &app, 8000);
    restart_until_replaced(&p, &app);
    let (status, body) = slow.join().unwrap().expect("slow request");
    assert_eq!((status, body.as_str()), (200, "slow body"), "{}", p.logs());
}

type SlowPost = thread::JoinHandle<reqwest::Result<(u16, String)>>;

/// A POST the probe answers after `delay_ms`, returned once the router has it in flight.
fn slow_post(p: &Platform, app: &str, delay_ms: u64) -> SlowPost {
    slow_post_with_id(p, app, delay_ms, &unique("slow"))
}

/// [`slow_post`] with this `X-Request-Id` (to find its RTR line).
fn slow_post_with_id(p: &Platform, app: &str, delay_ms: u64, request_id: &str) -> SlowPost {
    let c = client(p, app);
    let u = url(p, app, "/");
    let seen = router_requests(p);
    let request_id = request_id.to_string();
    let slow = thread::spawn(move || {
        c.post(&u)
            .header("X-Delay-Ms", delay_ms.to_string())
            .header("X-Request-Id", request_id)
            .timeout(Duration::from_millis(delay_ms) + Duration::from_secs(30))
            .body("slow body")
            .send()
            .map(|r| (r.status().as_u16(), r.text().unwrap_or_default()))
    });
    wait_for(
        Duration::from_secs(10),
        "the slow request at the router",
        || (router_requests(p) > seen).then_some(()),
    )
    .unwrap();
    slow
}

/// Restarts a one-instance app and waits until its only instance runs at a new address (the old
/// row is removed: retired, possibly still draining on its node).
fn restart_until_replaced(p: &Platform, app: &str) {
    let before = p.app_json(app).unwrap();
    let old_address = before["instances"][0]["address"].clone();
    assert!(old_address.is_string(), "{before}");
    let out = p.cli(&["restart", app]);
    assert!(out.ok(), "restart: {out:?}");
    wait_for(Duration::from_secs(30), "the replacement alone", || {
        let v = p.app_json(app).ok()?;
        let inst = v["instances"].as_array()?.clone();
        (inst.len() == 1 && inst[0]["state"] == "running" && inst[0]["address"] != old_address)
            .then_some(())
    })
    .unwrap();
}

/// Timeouts: an instance that sends no response header in time gets a 504 with the reason, and
/// one that goes silent mid-body has the response cut instead of holding the client forever.
#[test]
fn slow_instance_gets_504_and_a_stalled_body_is_cut() {
    let mut p = Platform::start_server_env(
        Options::default(),
        &[
            ("PAAS_ROUTER_RESPONSE_TIMEOUT_SECS", "1"),
            ("PAAS_ROUTER_IDLE_TIMEOUT_SECS", "1"),
        ],
    )
    .expect("server");
    p.start_agent(&unique("e2e-tmo"), "zone-a").unwrap();
    p.login().unwrap();
    let app = unique("tmo");
    push(&p, &app, 1);
    let c = client(&p, &app);

    let started = std::time::Instant::now();
    let r = c
        .post(url(&p, &app, "/"))
        .header("X-Delay-Ms", "6000")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 504);
    assert_eq!(header(&r, "x-paas-router-error"), "response_timeout");
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["code"], "upstream_timeout", "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A quick answer on the same route still works (the timeout is per request).
    let r = c.get(url(&p, &app, "/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let started = std::time::Instant::now();
    let r = c
        .get(url(&p, &app, "/stall"))
        .header("X-Delay-Ms", "8000")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.bytes();
    assert!(body.is_err(), "a stalled body should be cut, got {body:?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

/// The drain is per instance: while a retired instance of one app finishes a slow request,
/// another app's scale-up reaches its node at once, and the slow request still completes.
#[test]
fn a_drain_holds_back_only_its_own_instance() {
    let mut p = Platform::start_server_env(Options::default(), &[("PAAS_ROUTER_DRAIN_SECS", "60")])
        .expect("server");
    p.start_agent(&unique("e2e-drain2"), "zone-a").unwrap();
    p.login().unwrap();
    let slow_app = unique("drainslow");
    let other = unique("drainother");
    push(&p, &slow_app, 1);
    push(&p, &other, 1);
    let slow = slow_post(&p, &slow_app, 25000);
    restart_until_replaced(&p, &slow_app);
    let out = p.cli(&["scale", &other, "-i", "2"]);
    assert!(out.ok(), "scale: {out:?}");
    wait_for(
        Duration::from_secs(30),
        "the other app at 2 instances",
        || {
            let v = p.app_json(&other).ok()?;
            let running = v["instances"]
                .as_array()?
                .iter()
                .filter(|i| i["state"] == "running")
                .count();
            (running == 2).then_some(())
        },
    )
    .unwrap();
    assert!(
        !slow.is_finished(),
        "the other app's scale-up waited for the slow request's drain"
    );
    let (status, body) = slow.join().unwrap().expect("slow request");
    assert_eq!((status, body.as_str()), (200, "slow body"), "{}", p.logs());
}

/// A clean stop (SIGTERM) of the controller: the listener refuses new connections at once, a
/// request already in flight through the router still gets its answer, the process then exits
/// on its own with success, and that request's RTR line was stored on the way out (it is there
/// after a restart, not only in the stopped process's memory).
#[test]
fn sigterm_finishes_requests_in_flight_and_stores_their_access_lines() {
    let mut p = Platform::start_server(Options::default()).expect("server");
    p.start_agent(&unique("e2e-term"), "zone-a").unwrap();
    p.login().unwrap();
    let app = unique("term");
    push(&p, &app, 1);
    let request_id = unique("slow-at-stop");
    let slow = slow_post_with_id(&p, &app, 3000, &request_id);

    p.terminate_server();
    wait_for(Duration::from_secs(5), "new connections refused", || {
        TcpStream::connect_timeout(&p.addr, Duration::from_millis(500))
            .is_err()
            .then_some(())
    })
    .unwrap();
    assert!(
        !slow.is_finished(),
        "the slow request ended before the stop could be seen"
    );
    let (status, body) = slow
        .join()
        .unwrap()
        .expect("the request in flight at the stop");
    assert_eq!((status, body.as_str()), (200, "slow body"), "{}", p.logs());
    let exit = wait_for(Duration::from_secs(15), "the server to exit", || {
        p.server_exit()
    })
    .unwrap();
    assert!(exit.success(), "exit status {exit:?}: {}", p.logs());

    p.restart_server().unwrap();
    let out = p.cli(&["logs", &app, "--recent"]);
    assert!(
        out.ok()
            && out.stdout.lines().any(|l| l.contains("[RTR]")
                && l.contains("\"POST /\" 200")
                && l.contains(&format!("request_id={request_id}"))),
        "no stored RTR line for the request answered during the stop: {out:?}"
    );
}
