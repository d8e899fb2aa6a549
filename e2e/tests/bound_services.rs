//! Apps bound to the platform's own PostgreSQL and Redis (issue 22), end to end through the CLI:
//! the marketplace's built-in broker provisions service containers, `bind-service` redeploys the
//! app with `VCAP_SERVICES` / `DATABASE_URL` / `REDIS_URL`, the app's container joins the
//! service's network and writes a row through its own binding; the row survives a restart of the
//! app and of the service container; two apps' bindings have different credentials and the
//! unbound one is refused by the database; a backup restores a dropped table.

use paas_e2e::pkgserver::{add_index, wheels_dir, PackageServer, Routes, StagingNet};
use paas_e2e::{psql_binding as psql, unique, wait_for, Platform};
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Writes and reads rows with pg8000 (pure Python, from the test's own index) and keys with a
/// few lines of RESP, each through the URL the platform gave the app.
const APP: &str = r#"import json, os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs
import pg8000.native

def pg():
    u = urlparse(os.environ["DATABASE_URL"])
    return pg8000.native.Connection(u.username, host=u.hostname, port=u.port or 5432,
                                    database=u.path.lstrip("/"), password=u.password, timeout=5)

def resp(*args):
    u = urlparse(os.environ["REDIS_URL"])
    s = socket.create_connection((u.hostname, u.port or 6379), timeout=5)
    def cmd(*a):
        s.sendall(("*%d\r\n" % len(a) + "".join("$%d\r\n%s\r\n" % (len(x.encode()), x) for x in a)).encode())
        f = s.makefile("rb")
        line = f.readline().decode().rstrip("\r\n")
        if line.startswith("$"):
            n = int(line[1:])
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        return line
    auth = cmd("AUTH", u.username, u.password)
    out = cmd(*args)
    s.close()
    return auth + " " + str(out)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        try:
            if u.path == "/pg/write":
                c = pg()
                c.run("CREATE TABLE IF NOT EXISTS items (v text)")
                c.run("INSERT INTO items VALUES (:v)", v=q["v"])
                c.close()
                body = "written"
            elif u.path == "/pg/read":
                c = pg()
                body = json.dumps([r[0] for r in c.run("SELECT v FROM items ORDER BY v")])
                c.close()
            elif u.path == "/redis/set":
                body = resp("SET", q["k"], q["v"])
            elif u.path == "/redis/get":
                body = resp("GET", q["k"])
            else:
                body = json.dumps({"vcap": os.environ.get("VCAP_SERVICES"),
                                   "database_url": os.environ.get("DATABASE_URL"),
                                   "redis_url": os.environ.get("REDIS_URL")})
            code = 200
        except Exception as e:
            body, code = "error: %r" % (e,), 500
        b = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

fn push_app(p: &Platform, app: &str, pg8000: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.py"), APP).unwrap();
    std::fs::write(
        dir.path().join("requirements.txt"),
        format!("pg8000=={pg8000}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("Procfile"), "web: python app.py\n").unwrap();
    let out = p.cli(&["push", app, "-p", dir.path().to_str().unwrap()]);
    assert!(out.ok(), "push: {out:?}{}", p.logs());
    dir
}

/// The body of `path` once it answers 200 and `ok` holds.
fn get_when(p: &Platform, app: &str, path: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    wait_for(Duration::from_secs(120), what, || {
        let (s, body) = p.get_app(app, path).ok()?;
        (s == 200 && ok(&body)).then_some(body)
    })
    .unwrap_or_else(|e| {
        let last = p.get_app(app, path).map(|(s, b)| format!("{s} {b}"));
        panic!("{e}: last {last:?}{}", p.logs())
    })
}

/// The credentials of the app's binding of `label` in its `VCAP_SERVICES`.
fn credentials(p: &Platform, app: &str, label: &str) -> Value {
    let body = get_when(p, app, "/", "VCAP_SERVICES", |b| b.contains(label));
    let v: Value = serde_json::from_str(&body).unwrap();
    let vcap: Value = serde_json::from_str(v["vcap"].as_str().unwrap()).unwrap();
    vcap[label][0]["credentials"].clone()
}

fn wait_created(p: &Platform, name: &str) {
    wait_for(
        Duration::from_secs(180),
        "the service to be created",
        || {
            let out = p.cli(&["service", name, "--json"]);
            let v: Value = serde_json::from_str(&out.stdout).ok()?;
            assert_ne!(v["state"], "failed", "{v}{}", p.logs());
            (v["state"] == "succeeded").then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}{}", p.logs()));
}

#[test]
fn apps_bound_to_builtin_postgres_and_redis_keep_their_data_and_their_own_credentials() {
    let routes: Routes = Arc::default();
    let versions = add_index(&routes, &wheels_dir());
    let server = PackageServer::start(routes.clone());
    let net = StagingNet::create();
    let index = format!("http://{}:{}/simple/", net.gateway, server.port);
    let mut p = Platform::start_server(Default::default()).unwrap();
    let node = unique("e2e-svc-node");
    p.start_agent_with(
        &node,
        "zone-a",
        &[
            ("PAAS_STAGING_NETWORK", net.name.as_str()),
            ("PAAS_PIP_INDEX_URL", index.as_str()),
        ],
    )
    .unwrap();
    p.login().unwrap();

    // The platform's own broker is in the marketplace without anyone registering it.
    let out = p.cli(&["marketplace"]);
    assert!(
        out.ok() && out.stdout.contains("postgresql") && out.stdout.contains("redis"),
        "{out:?}"
    );
    let db = unique("db");
    let cache = unique("cache");
    let out = p.cli(&["create-service", "postgresql", "small", &db]);
    assert!(out.ok(), "create-service: {out:?}{}", p.logs());
    let out = p.cli(&["create-service", "redis", "small", &cache]);
    assert!(out.ok(), "create-service: {out:?}{}", p.logs());
    wait_created(&p, &db);
    wait_created(&p, &cache);

    let a = unique("writer");
    let _dir_a = push_app(&p, &a, &versions["pg8000"]);
    for s in [&db, &cache] {
        let out = p.cli(&["bind-service", &a, s]);
        assert!(out.ok(), "bind-service: {out:?}{}", p.logs());
    }
    let creds_a = credentials(&p, &a, "postgresql");
    assert!(
        creds_a["uri"].as_str().unwrap().starts_with("postgres://"),
        "{creds_a}"
    );
    let body = get_when(&p, &a, "/", "both URLs", |b| {
        b.contains("postgres://") && b.contains("redis://")
    });
    assert!(body.contains("database_url"), "{body}");

    // The app writes through its binding, from inside its sandbox.
    get_when(&p, &a, "/pg/write?v=kept", "a row written", |b| {
        b == "written"
    });
    get_when(&p, &a, "/pg/read", "the row", |b| b.contains("kept"));
    let set = get_when(&p, &a, "/redis/set?k=greeting&v=hello", "SET", |b| {
        b.contains("OK")
    });
    assert!(set.starts_with("+OK"), "{set}");
    get_when(&p, &a, "/redis/get?k=greeting", "GET", |b| {
        b.ends_with("hello")
    });

    // The app restarts, then the service containers: the row is still there.
    let out = p.cli(&["restart", &a]);
    assert!(out.ok(), "restart: {out:?}{}", p.logs());
    let ids = Command::new("docker")
        .args(["ps", "-q", "--filter", "label=paas.service"])
        .args(["--filter", &format!("label=paas.node={node}")])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(ids.len(), 2, "one container per service: {ids:?}");
    let st = Command::new("docker")
        .arg("restart")
        .args(&ids)
        .status()
        .unwrap();
    assert!(st.success());
    get_when(&p, &a, "/pg/read", "the row after the restarts", |b| {
        b.contains("kept")
    });
    get_when(
        &p,
        &a,
        "/redis/get?k=greeting",
        "the key after the restarts",
        |b| b.ends_with("hello"),
    );

    // A second app's binding has credentials of its own; once unbound they are refused by the
    // database while the first app's still work.
    let b = unique("reader");
    let _dir_b = push_app(&p, &b, &versions["pg8000"]);
    let out = p.cli(&["bind-service", &b, &db]);
    assert!(out.ok(), "bind-service: {out:?}{}", p.logs());
    let creds_b = credentials(&p, &b, "postgresql");
    assert_ne!(creds_a["username"], creds_b["username"]);
    assert_ne!(creds_a["password"], creds_b["password"]);
    get_when(&p, &b, "/pg/read", "the other app reads the row", |body| {
        body.contains("kept")
    });
    assert_eq!(psql(&creds_b, "SELECT count(*) FROM items").unwrap(), "1");
    let out = p.cli(&["unbind-service", &b, &db]);
    assert!(out.ok(), "unbind-service: {out:?}{}", p.logs());
    let refused = psql(&creds_b, "SELECT 1").expect_err("an unbound login is refused");
    assert!(
        refused.contains("authentication failed") || refused.contains("does not exist"),
        "{refused}"
    );
    assert_eq!(psql(&creds_a, "SELECT count(*) FROM items").unwrap(), "1");

    // A bound service is not deleted; a backup brings back a dropped table.
    let out = p.cli(&["delete-service", &db]);
    assert!(!out.ok() && out.stderr.contains("service_bound"), "{out:?}");
    let out = p.cli(&["service-backup", &db]);
    assert!(out.ok(), "service-backup: {out:?}{}", p.logs());
    let backup = out
        .stdout
        .split_whitespace()
        .find(|w| w.len() > 20)
        .unwrap_or_default()
        .to_string();
    assert!(!backup.is_empty(), "a backup id: {out:?}");
    psql(&creds_a, "DROP TABLE items").unwrap();
    let out = p.cli(&["service-restore", &db, &backup]);
    assert!(out.ok(), "service-restore: {out:?}{}", p.logs());
    get_when(&p, &a, "/pg/read", "the restored row", |b| {
        b.contains("kept")
    });
}
