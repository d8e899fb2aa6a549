//! Real apps stage (issue 19), end to end on the real engine with package servers the test
//! starts itself, never the outside network: a PEP 503 index served from a folder of wheels
//! (fetched once at CI set-up by `scripts/e2e-wheels`) and a minimal npm registry serving
//! packuments and tarballs the test packs. The staging container reaches them over its own bridge
//! network, whose gateway is this machine; instances never do. Gems come from a folder too
//! (`scripts/e2e-gems` re-packs Debian's at CI set-up), vendored in the app's `vendor/cache` as
//! Cloud Foundry apps do, so staging needs no gem server at all.
//!
//! Apps: Django with `requirements.txt`, gunicorn and a Procfile; Flask with `pyproject.toml` +
//! `uv.lock`; an express-style node app with `package-lock.json` and a transitive dependency; a
//! node app with a Procfile and no `scripts.start`; a Go app with vendored modules; a classic
//! Sinatra app with `config.ru` run by rackup. Each serves. An app keeps the stack it was pushed
//! with until a push names another.
//! A missing package fails staging with pip's own message while the previous revision serves;
//! a re-push with the same lockfile sends the index no request and is faster; `--no-cache`
//! downloads again.

use paas_e2e::pkgserver::{add_index, django_app, wheels_dir, PackageServer, Routes, StagingNet};
use paas_e2e::{unique, wait_for, Options, Platform};
use sha2::Digest;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An npm package tarball (`package/...`) and its sha512 integrity.
fn npm_tarball(files: &[(&str, String)]) -> (Vec<u8>, String) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_mtime(1);
        b.append_data(&mut h, format!("package/{path}"), body.as_bytes())
            .unwrap();
    }
    let data = b.into_inner().unwrap().finish().unwrap();
    use base64::Engine;
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&data))
    );
    (data, integrity)
}

/// Publishes NAME@1.0.0 (depending on `deps`) to the registry at `/npm/`; returns
/// (tarball URL, integrity).
fn publish(
    routes: &Routes,
    base: &str,
    name: &str,
    index_js: &str,
    deps: &[&str],
) -> (String, String) {
    let dependencies: serde_json::Map<String, serde_json::Value> = deps
        .iter()
        .map(|d| (d.to_string(), serde_json::json!("^1.0.0")))
        .collect();
    let manifest = serde_json::json!({"name": name, "version": "1.0.0", "main": "index.js", "dependencies": dependencies});
    let (tgz, integrity) = npm_tarball(&[
        ("package.json", manifest.to_string()),
        ("index.js", index_js.to_string()),
    ]);
    let path = format!("/npm/{name}/-/{name}-1.0.0.tgz");
    let url = format!("{base}{path}");
    let packument = serde_json::json!({
        "name": name,
        "dist-tags": {"latest": "1.0.0"},
        "versions": {"1.0.0": {
            "name": name, "version": "1.0.0", "dependencies": dependencies,
            "dist": {"tarball": url, "integrity": integrity}
        }}
    });
    let mut r = routes.lock().unwrap();
    r.insert(path, ("application/octet-stream".into(), tgz));
    r.insert(
        format!("/npm/{name}"),
        (
            "application/json".into(),
            packument.to_string().into_bytes(),
        ),
    );
    (url, integrity)
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (p, body) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
}

fn push(p: &Platform, app: &str, dir: &Path, extra: &[&str]) -> (paas_e2e::CliOutput, Duration) {
    let started = Instant::now();
    let mut args = vec!["push", app, "-p", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = p.cli(&args);
    (out, started.elapsed())
}

fn serves(p: &Platform, app: &str, path: &str, want: &str) -> String {
    wait_for(
        Duration::from_secs(60),
        &format!("{app} to serve {want:?}"),
        || {
            let (s, b) = p.get_app(app, path).ok()?;
            (s == 200 && b.contains(want)).then_some(b)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()))
}

/// uv.lock as uv writes it, for the packages the index holds: the project is `virtual`, and
/// click's colorama is Windows-only (never served: a wrong marker evaluation fails the build).
fn flask_uv_lock(v: &HashMap<String, String>) -> String {
    let pkg = |name: &str, deps: &[&str]| {
        let deps: Vec<String> = deps.iter().map(|d| format!("    {d},\n")).collect();
        format!(
            "[[package]]\nname = \"{name}\"\nversion = \"{}\"\nsource = {{ registry = \"https://pypi.org/simple\" }}\ndependencies = [\n{}]\n\n",
            v.get(name).map(String::as_str).unwrap_or("0.4.6"),
            deps.concat()
        )
    };
    let mut lock = String::from("version = 1\nrevision = 2\nrequires-python = \">=3.12\"\n\n");
    lock += &pkg("blinker", &[]);
    lock += &pkg(
        "click",
        &["{ name = \"colorama\", marker = \"sys_platform == 'win32'\" }"],
    );
    lock += &pkg("colorama", &[]);
    lock += &pkg(
        "flask",
        &[
            "{ name = \"blinker\" }",
            "{ name = \"click\" }",
            "{ name = \"itsdangerous\" }",
            "{ name = \"jinja2\" }",
            "{ name = \"markupsafe\" }",
            "{ name = \"werkzeug\" }",
        ],
    );
    lock += &pkg("itsdangerous", &[]);
    lock += &pkg("jinja2", &["{ name = \"markupsafe\" }"]);
    lock += &pkg("markupsafe", &[]);
    lock += &pkg("werkzeug", &["{ name = \"markupsafe\" }"]);
    lock += "[[package]]\nname = \"hello-flask\"\nversion = \"0.1.0\"\nsource = { virtual = \".\" }\ndependencies = [\n    { name = \"flask\" },\n]\n";
    lock
}

#[test]
fn python_apps_install_their_dependencies_from_a_local_index_and_cache_them() {
    let routes: Routes = Arc::default();
    let versions = add_index(&routes, &wheels_dir());
    let server = PackageServer::start(routes.clone());
    let net = StagingNet::create();
    let index = format!("http://{}:{}/simple/", net.gateway, server.port);
    let mut p = Platform::start_server(Options::default()).unwrap();
    p.start_agent_with(
        &unique("e2e-node"),
        "zone-a",
        &[
            ("PAAS_STAGING_NETWORK", net.name.as_str()),
            ("PAAS_PIP_INDEX_URL", index.as_str()),
        ],
    )
    .unwrap();
    p.login().unwrap();

    // Django: requirements.txt with transitive dependencies (asgiref, sqlparse, packaging),
    // gunicorn on PATH from the Procfile, collectstatic at staging.
    let app = unique("django");
    let dir = tempfile::tempdir().unwrap();
    django_app(dir.path(), &versions, "Hello");
    let (out, first) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains("Installing dependencies from requirements.txt")
            && out.stdout.contains("Using Python 3.13"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("static file"),
        "collectstatic ran: {out:?}"
    );
    let body = serves(&p, &app, "/", "Hello from Django");
    assert!(
        body.contains(&format!("Django {}", &versions["django"][..3])),
        "{body}"
    );
    let fetched = server.count("/files/");
    assert!(
        fetched >= 5,
        "django, gunicorn and their dependencies: {fetched}"
    );

    // The droplet holds what collectstatic wrote, served by the app's own files.
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["detected"], "python", "{v}");

    // Same requirements, new code: the venv comes from the cache; the index sees nothing.
    let before = server.requests.lock().unwrap().len();
    django_app(dir.path(), &versions, "Changed");
    let (out, again) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains("Restored the dependencies of requirements.txt from the cache"),
        "{out:?}"
    );
    // collectstatic ran: the result depends on the app's files, so its layers are never
    // reused (issue 24), the code change is staged in full.
    assert!(!out.stdout.contains("reused the layers"), "{out:?}");
    serves(&p, &app, "/", "Changed from Django");
    assert_eq!(
        server.requests.lock().unwrap().len(),
        before,
        "a re-push with the same lockfile asks the index nothing"
    );
    eprintln!("django push: first {first:?}, re-push {again:?}");
    assert!(again < first, "re-push {again:?} is faster than {first:?}");

    // --no-cache downloads again.
    django_app(dir.path(), &versions, "Fresh");
    let (out, _) = push(&p, &app, dir.path(), &["--no-cache"]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        server.requests.lock().unwrap().len() > before,
        "--no-cache fetched"
    );
    serves(&p, &app, "/", "Fresh from Django");

    // A package the index lacks: staging fails with pip's own words; v3 keeps serving.
    std::fs::write(
        dir.path().join("requirements.txt"),
        format!("Django=={}\nno-such-package-e2e==1.0\n", versions["django"]),
    )
    .unwrap();
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("No matching distribution found for no-such-package-e2e==1.0")
            && out.stderr.contains("(staging_failed)"),
        "{out:?}"
    );
    assert_eq!(p.app_json(&app).unwrap()["revision"]["number"], 3);
    serves(&p, &app, "/", "Fresh from Django");

    // Flask from pyproject.toml + uv.lock, markers evaluated (no colorama on Linux).
    let app = unique("flask");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "pyproject.toml",
                "[project]\nname = \"hello-flask\"\nversion = \"0.1.0\"\nrequires-python = \">=3.12\"\ndependencies = [\"flask>=3\"]\n",
            ),
            ("uv.lock", &flask_uv_lock(&versions)),
            (
                "app.py",
                "import os\nfrom flask import Flask\napp = Flask(__name__)\n\n@app.get('/')\ndef hi():\n    return 'Hello from Flask'\n\nif __name__ == '__main__':\n    app.run(host='0.0.0.0', port=int(os.environ['PORT']))\n",
            ),
        ],
    );
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout.contains("Installing dependencies from uv.lock"),
        "{out:?}"
    );
    serves(&p, &app, "/", "Hello from Flask");

    // A Python the stack lacks: a clear message naming both.
    std::fs::write(dir.path().join(".python-version"), "3.9\n").unwrap();
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("asks for Python 3.9 but stack trixie has Python 3.13"),
        "{out:?}"
    );
}

#[test]
fn node_and_go_apps_stage_from_a_local_registry_and_vendored_modules() {
    let routes: Routes = Arc::default();
    let server = PackageServer::start(routes.clone());
    let net = StagingNet::create();
    let base = format!("http://{}:{}", net.gateway, server.port);
    let registry = format!("{base}/npm/");
    let (esc_url, esc_int) = publish(
        &routes,
        &base,
        "paas-escape",
        "module.exports = (s) => String(s).replace(/</g, '&lt;');\n",
        &[],
    );
    let (lite_url, lite_int) = publish(
        &routes,
        &base,
        "paas-router-lite",
        "const http = require('http');\nconst escape = require('paas-escape');\nmodule.exports = () => { const routes = {}; return { get: (p, h) => { routes[p] = h; }, listen: (port) => http.createServer((q, r) => { const h = routes[q.url]; if (!h) { r.statusCode = 404; return r.end(escape('<none>')); } h(q, r); }).listen(port) }; };\n",
        &["paas-escape"],
    );
    let mut p = Platform::start_server(Options::default()).unwrap();
    p.start_agent_with(
        &unique("e2e-node"),
        "zone-a",
        &[
            ("PAAS_STAGING_NETWORK", net.name.as_str()),
            ("PAAS_NPM_REGISTRY", registry.as_str()),
        ],
    )
    .unwrap();
    p.login().unwrap();

    // express-style: package-lock.json -> npm ci, the transitive dependency installed too.
    let app = unique("express");
    let dir = tempfile::tempdir().unwrap();
    let lock = serde_json::json!({
        "name": "shop", "version": "1.0.0", "lockfileVersion": 3, "requires": true,
        "packages": {
            "": {"name": "shop", "version": "1.0.0", "dependencies": {"paas-router-lite": "^1.0.0"}},
            "node_modules/paas-router-lite": {"version": "1.0.0", "resolved": lite_url, "integrity": lite_int, "dependencies": {"paas-escape": "^1.0.0"}},
            "node_modules/paas-escape": {"version": "1.0.0", "resolved": esc_url, "integrity": esc_int}
        }
    });
    write(
        dir.path(),
        &[
            (
                "package.json",
                r#"{"name":"shop","version":"1.0.0","engines":{"node":">=18"},"scripts":{"start":"node index.js"},"dependencies":{"paas-router-lite":"^1.0.0"}}"#,
            ),
            ("package-lock.json", &lock.to_string()),
            (
                "index.js",
                "const app = require('paas-router-lite')();\napp.get('/', (q, r) => r.end('Hello from the router ' + require('paas-escape')('<3')));\napp.listen(process.env.PORT);\n",
            ),
            // Cloud Foundry apps leave node_modules out; the platform installs it.
            (".cfignore", "node_modules\n"),
        ],
    );
    let (out, first) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(out.stdout.contains("npm ci --omit=dev"), "{out:?}");
    serves(&p, &app, "/", "Hello from the router &lt;3");
    assert!(
        server.count("/npm/paas-escape/-/") >= 1,
        "the transitive dependency was fetched"
    );

    // Same lock, new code and a new file (so staging runs again): node_modules from the
    // cache, no request to the registry.
    let before = server.requests.lock().unwrap().len();
    std::fs::write(
        dir.path().join("index.js"),
        "const app = require('paas-router-lite')();\napp.get('/', (q, r) => r.end('Changed'));\napp.listen(process.env.PORT);\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("NOTES.txt"), "a new file\n").unwrap();
    let (out, again) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout.contains("Restored node_modules from the cache"),
        "{out:?}"
    );
    serves(&p, &app, "/", "Changed");
    assert_eq!(server.requests.lock().unwrap().len(), before);
    eprintln!("node push: first {first:?}, re-push {again:?}");
    // Only the code changed: the layers that staging added are reused, no staging container.
    std::fs::write(
        dir.path().join("index.js"),
        "const app = require('paas-router-lite')();\napp.get('/', (q, r) => r.end('Changed again'));\napp.listen(process.env.PORT);\n",
    )
    .unwrap();
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains("reused the layers the node buildpack staged before"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("-----> node buildpack"), "{out:?}");
    serves(&p, &app, "/", "Changed again");
    assert_eq!(server.requests.lock().unwrap().len(), before);

    // A dependency the registry lacks: npm's own message, the running revision stays.
    std::fs::write(
        dir.path().join("package.json"),
        r#"{"name":"shop","version":"1.0.0","scripts":{"start":"node index.js"},"dependencies":{"paas-missing-e2e":"^1.0.0"}}"#,
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("package-lock.json")).unwrap();
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("npm install failed") && out.stderr.contains("404"),
        "{out:?}"
    );
    serves(&p, &app, "/", "Changed");

    // A Procfile and no scripts.start: the Procfile wins.
    let app = unique("procnode");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("package.json", r#"{"name":"plain","version":"1.0.0"}"#),
            ("Procfile", "web: node app.js\n"),
            (
                "app.js",
                "require('http').createServer((q, r) => r.end('Hello from a Procfile')).listen(process.env.PORT);\n",
            ),
        ],
    );
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    serves(&p, &app, "/", "Hello from a Procfile");

    // Go with vendored modules: built offline; the droplet holds the binary only.
    let app = unique("goapp");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            (
                "go.mod",
                "module example.com/hello\n\ngo 1.22\n\nrequire example.com/greet v1.0.0\n",
            ),
            (
                "main.go",
                "package main\n\nimport (\n\t\"net/http\"\n\t\"os\"\n\n\t\"example.com/greet\"\n)\n\nfunc main() {\n\thttp.HandleFunc(\"/\", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(greet.Hello(\"Go\"))) })\n\thttp.ListenAndServe(\":\"+os.Getenv(\"PORT\"), nil)\n}\n",
            ),
            (
                "vendor/example.com/greet/greet.go",
                "package greet\n\nfunc Hello(who string) string { return \"Hello from \" + who }\n",
            ),
            (
                "vendor/modules.txt",
                "# example.com/greet v1.0.0\n## explicit; go 1.22\nexample.com/greet\n",
            ),
        ],
    );
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(out.stdout.contains("-----> go buildpack"), "{out:?}");
    serves(&p, &app, "/", "Hello from Go");
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["detected"], "go", "{v}");
}

#[test]
fn an_unknown_stack_is_refused_and_an_app_keeps_the_stack_it_was_pushed_with() {
    let p = Platform::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The body names the push (mark.txt) and the stack's Python, so each check sees the new
    // revision rather than the previous one still serving.
    let mark = |m: &str| std::fs::write(dir.path().join("mark.txt"), m).unwrap();
    write(
        dir.path(),
        &[(
            "app.py",
            "import os, sys, http.server\nMARK = open('mark.txt').read()\nclass H(http.server.BaseHTTPRequestHandler):\n    def do_GET(self):\n        self.send_response(200); self.end_headers(); self.wfile.write((MARK + ' ' + sys.version).encode())\nhttp.server.HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n",
        )],
    );
    mark("v1");
    let app = unique("stacks");
    let (out, _) = push(&p, &app, dir.path(), &["-s", "windows2016"]);
    assert_eq!(
        out.code, 2,
        "clap refuses it before anything is sent: {out:?}"
    );
    assert!(
        out.stderr.contains("known stacks are trixie, bookworm"),
        "{out:?}"
    );

    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    serves(&p, &app, "/", "v1 3.13.");
    assert_eq!(p.app_json(&app).unwrap()["stack"], "trixie");
    mark("v2");
    let (out, _) = push(&p, &app, dir.path(), &["--stack", "bookworm"]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    serves(&p, &app, "/", "v2 3.11.");
    assert_eq!(p.app_json(&app).unwrap()["stack"], "bookworm");

    // The app keeps its stack: a push that names none stages on bookworm again.
    mark("v3");
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    serves(&p, &app, "/", "v3 3.11.");
    assert_eq!(p.app_json(&app).unwrap()["stack"], "bookworm");
    let shown = p.cli(&["app", &app]);
    assert!(shown.stdout.contains("stack:      bookworm\n"), "{shown:?}");

    // A manifest's `stack:` (Cloud Foundry's name for trixie) moves it, and that is kept too.
    mark("v4");
    std::fs::write(
        dir.path().join("manifest.yml"),
        format!("applications:\n- name: {app}\n  stack: cflinuxfs4\n"),
    )
    .unwrap();
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    serves(&p, &app, "/", "v4 3.13.");
    assert_eq!(p.app_json(&app).unwrap()["stack"], "trixie");
    std::fs::remove_file(dir.path().join("manifest.yml")).unwrap();

    mark("v5");
    let (out, _) = push(&p, &app, dir.path(), &["-s", "bookworm"]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    serves(&p, &app, "/", "v5 3.11.");

    // Instances run the run image: no compilers or package managers.
    let ids = p.containers_of(&app);
    let running: Vec<&String> = ids.iter().collect();
    assert!(!running.is_empty());
    let image = Command::new("docker")
        .args(["inspect", "-f", "{{.Config.Image}}"])
        .args(&running)
        .output()
        .unwrap();
    let images = String::from_utf8_lossy(&image.stdout).to_string();
    assert!(
        images.lines().all(|l| !l.contains("-build")),
        "instances never run a build image: {images}"
    );
}

/// A gem packed by `gem build` in the stack's build image (rubygems.org is not reachable): the
/// hand-made gem a `vendor/cache` holds.
fn build_gem(dir: &Path) -> Vec<u8> {
    write(
        dir,
        &[
            (
                "paas-greeter.gemspec",
                "Gem::Specification.new do |s|\n  s.name = 'paas-greeter'\n  s.version = '1.0.0'\n  s.summary = 'Greets'\n  s.authors = ['e2e']\n  s.license = 'MIT'\n  s.files = ['lib/paas_greeter.rb']\nend\n",
            ),
            (
                "lib/paas_greeter.rb",
                "module PaasGreeter\n  def self.hello(who) = \"Hello from #{who}, bundled\"\nend\n",
            ),
        ],
    );
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/w", dir.display()))
        .args([
            "-w",
            "/w",
            "-e",
            "HOME=/tmp",
            "paas-stack:trixie-build",
            "gem",
            "build",
            "paas-greeter.gemspec",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::read(dir.join("paas-greeter-1.0.0.gem")).unwrap()
}

#[test]
fn a_ruby_app_bundles_its_vendored_gems_and_serves() {
    let p = Platform::start().unwrap();
    let gem_dir = tempfile::tempdir().unwrap();
    let gem = build_gem(gem_dir.path());
    let app = unique("ruby");
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        &[
            ("Gemfile", "source 'https://rubygems.org'\ngem 'paas-greeter'\n"),
            (
                "Gemfile.lock",
                "GEM\n  remote: https://rubygems.org/\n  specs:\n    paas-greeter (1.0.0)\n\nPLATFORMS\n  ruby\n\nDEPENDENCIES\n  paas-greeter\n\nBUNDLED WITH\n   2.6.7\n",
            ),
            (
                "app.rb",
                "require 'socket'\nrequire 'paas_greeter'\nserver = TCPServer.new('0.0.0.0', Integer(ENV.fetch('PORT')))\nloop do\n  c = server.accept\n  while (l = c.gets) && l != \"\\r\\n\"; end\n  body = PaasGreeter.hello('Ruby')\n  c.write \"HTTP/1.1 200 OK\\r\\nContent-Length: #{body.bytesize}\\r\\nConnection: close\\r\\n\\r\\n#{body}\"\n  c.close\nend\n",
            ),
            ("Procfile", "web: bundle exec ruby app.rb\n"),
        ],
    );
    std::fs::create_dir_all(dir.path().join("vendor/cache")).unwrap();
    std::fs::write(dir.path().join("vendor/cache/paas-greeter-1.0.0.gem"), gem).unwrap();
    let (out, _) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(out.stdout.contains("-----> ruby buildpack"), "{out:?}");
    serves(&p, &app, "/", "Hello from Ruby, bundled");

    // A config.ru and no Gemfile: the stack has no rack gem, so staging says so rather than
    // the instance crashing on a missing rackup.
    let bare = tempfile::tempdir().unwrap();
    write(
        bare.path(),
        &[("config.ru", "run ->(env) { [200, {}, ['never served']] }\n")],
    );
    let (out, _) = push(&p, &unique("rackbare"), bare.path(), &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("a config.ru needs a Gemfile that lists rack and rackup"),
        "{out:?}"
    );
}

/// Resolves `dir`'s Gemfile against its `vendor/cache` as a developer's `bundle install` does
/// before `bundle cache` (`bundle lock --local` reads installed gems only), in the stack's build
/// image with no network and the gems installed outside `dir`; returns the Gemfile.lock.
fn bundle_lock(dir: &Path) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "-v"])
        .arg(format!("{}:/w", dir.display()))
        .args([
            "-w",
            "/w",
            "-e",
            "HOME=/tmp",
            "-e",
            "BUNDLE_PATH=/tmp/bundle",
            "-e",
            "BUNDLE_SILENCE_ROOT_WARNING=1",
            "paas-stack:trixie-build",
            "bundle",
            "install",
            "--local",
            // vendor/cache stays as the test packed it: logger, a default gem of the stack's Ruby,
            // has no .gem file to add (from rubygems.org, `bundle cache` would fetch one).
            "--no-cache",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(dir.join("Gemfile.lock")).unwrap()
}

#[test]
fn a_sinatra_app_bundles_its_vendor_cache_serves_with_rackup_and_reuses_its_gems() {
    let p = Platform::start().unwrap();
    let app = unique("sinatra");
    let dir = tempfile::tempdir().unwrap();
    // A classic Sinatra app as Cloud Foundry's samples write it: Gemfile, config.ru, no
    // Procfile, the gems in vendor/cache as `bundle package` leaves them.
    let app_rb = |greeting: &str| {
        format!(
            "require 'sinatra'\n\nget '/' do\n  \"{greeting} from Sinatra #{{Sinatra::VERSION}} in #{{settings.environment}}\"\nend\n\nget '/hi/:name' do\n  \"Hi, #{{params[:name]}}\"\nend\n"
        )
    };
    write(
        dir.path(),
        &[
            (
                "Gemfile",
                "source 'https://rubygems.org'\n\ngem 'sinatra'\ngem 'rackup'\n",
            ),
            ("config.ru", "require './app'\nrun Sinatra::Application\n"),
            ("app.rb", &app_rb("Hello")),
        ],
    );
    let cache = dir.path().join("vendor/cache");
    std::fs::create_dir_all(&cache).unwrap();
    for gem in paas_e2e::pkgserver::gem_files() {
        std::fs::copy(&gem, cache.join(gem.file_name().unwrap())).unwrap();
    }
    let lock = bundle_lock(dir.path());
    assert!(
        lock.contains("    sinatra (4.") && lock.contains("    rackup ("),
        "{lock}"
    );

    let (out, first) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout.contains("-----> ruby buildpack") && out.stdout.contains("Bundle complete"),
        "{out:?}"
    );
    // Production, as Cloud Foundry runs Rack apps: development would answer only localhost.
    serves(&p, &app, "/", "Hello from Sinatra 4.");
    serves(&p, &app, "/", "in production");
    serves(&p, &app, "/hi/paas", "Hi, paas");
    let v = p.app_json(&app).unwrap();
    assert_eq!(v["revision"]["detected"], "ruby", "{v}");
    let command = v["revision"]["command"].as_str().unwrap_or_default();
    assert!(
        command.contains("bundle exec rackup config.ru"),
        "config.ru means rackup: {v}"
    );

    // Same Gemfile.lock, new code: the installed gems come from the dependency cache.
    std::fs::write(dir.path().join("app.rb"), app_rb("Changed")).unwrap();
    let (out, again) = push(&p, &app, dir.path(), &[]);
    assert!(out.ok(), "{out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains("Restored the gems of Gemfile.lock from the cache")
            && !out.stdout.contains("Bundle complete"),
        "{out:?}"
    );
    serves(&p, &app, "/", "Changed from Sinatra 4.");
    eprintln!("sinatra push: first {first:?}, re-push {again:?}");
}
