//! Package servers of the tests' own (issue 19): a tiny HTTP file server that counts requests,
//! a PEP 503 index over a folder of wheels, and a bridge network whose gateway is this machine
//! as a staging container sees it. Tests never reach the outside network.

use crate::unique;
use sha2::Digest;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A tiny HTTP/1.1 file server: fixed responses by path, every request counted by prefix.
pub struct PackageServer {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<String>>>,
}

pub type Routes = Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>;

impl PackageServer {
    pub fn start(routes: Routes) -> Self {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (routes, seen) = (routes.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let path = path.split('?').next().unwrap_or("/").to_string();
                    seen.lock().unwrap().push(path.clone());
                    let found = routes.lock().unwrap().get(&path).cloned();
                    let (status, ctype, body) = match found {
                        Some((c, b)) => ("200 OK", c, b),
                        None => ("404 Not Found", "text/plain".into(), b"not found".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                });
            }
        });
        Self { port, requests }
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }
}

/// A bridge network of this test's own for staging; its gateway address is this machine as the
/// staging container sees it.
pub struct StagingNet {
    pub name: String,
    pub gateway: String,
}

impl StagingNet {
    pub fn create() -> Self {
        let name = unique("paas-e2e-stg");
        let ok = Command::new("docker")
            .args(["network", "create", &name])
            .output()
            .unwrap();
        assert!(ok.status.success(), "{ok:?}");
        let out = Command::new("docker")
            .args([
                "network",
                "inspect",
                "-f",
                "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
                &name,
            ])
            .output()
            .unwrap();
        let gateway = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!gateway.is_empty(), "{out:?}");
        Self { name, gateway }
    }
}

impl Drop for StagingNet {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// `$VAR`, else `NAME` in the target dir: where a set-up script left what a test serves.
fn fixture_dir(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join(name)
    })
}

pub fn wheels_dir() -> PathBuf {
    fixture_dir("PAAS_E2E_WHEELS", "e2e-wheels")
}

/// The `.gem` files `scripts/e2e-gems` packed from Debian's packages (Sinatra, rackup and their
/// dependencies), which a test app vendors in `vendor/cache`.
pub fn gem_files() -> Vec<PathBuf> {
    let dir = fixture_dir("PAAS_E2E_GEMS", "e2e-gems");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/e2e-gems first (CI does)",
            dir.display()
        )
    });
    let gems: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gem"))
        .collect();
    assert!(
        gems.iter().any(|g| g
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("sinatra-"))),
        "{}: no sinatra gem: run scripts/e2e-gems first",
        dir.display()
    );
    gems
}

/// PEP 503: `/simple/NAME/` lists each wheel of NAME (normalized) with its sha256.
pub fn add_index(routes: &Routes, wheels: &Path) -> HashMap<String, String> {
    let mut versions = HashMap::new();
    let mut by_name: HashMap<String, Vec<String>> = HashMap::new();
    let entries = std::fs::read_dir(wheels).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/e2e-wheels first (CI does)",
            wheels.display()
        )
    });
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".whl") {
            continue;
        }
        let mut parts = file.split('-');
        let name = parts
            .next()
            .unwrap()
            .to_lowercase()
            .replace(['_', '.'], "-");
        versions.insert(name.clone(), parts.next().unwrap().to_string());
        let data = std::fs::read(e.path()).unwrap();
        let sha = hex::encode(sha2::Sha256::digest(&data));
        by_name.entry(name).or_default().push(format!(
            "<a href=\"/files/{file}#sha256={sha}\">{file}</a><br>"
        ));
        routes.lock().unwrap().insert(
            format!("/files/{file}"),
            ("application/octet-stream".into(), data),
        );
    }
    assert!(
        versions.contains_key("django") && versions.contains_key("flask"),
        "{}: run scripts/e2e-wheels first",
        wheels.display()
    );
    for (name, links) in by_name {
        let html = format!(
            "<!DOCTYPE html><html><body>{}</body></html>",
            links.join("")
        );
        routes.lock().unwrap().insert(
            format!("/simple/{name}/"),
            ("text/html".into(), html.into_bytes()),
        );
    }
    versions
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (p, body) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

const DJANGO_SETTINGS: &str = r#"
from pathlib import Path
BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "e2e-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["django.contrib.staticfiles"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "assets"]
DATABASES = {}
"#;

const DJANGO_URLS: &str = r#"
import django
from django.http import HttpResponse
from django.urls import path

def home(request):
    return HttpResponse(f"GREETING from Django {django.get_version()}")

urlpatterns = [path("", home)]
"#;

const DJANGO_WSGI: &str = r#"
import os
from django.core.wsgi import get_wsgi_application
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()
"#;

const DJANGO_MANAGE: &str = r#"
import os, sys
if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)
"#;

/// A Django project (settings with STATIC_ROOT, one view saying `GREETING from Django X.Y`),
/// `requirements.txt` pinned to the wheels at hand, and a Procfile running gunicorn.
pub fn django_app(dir: &Path, v: &HashMap<String, String>, greeting: &str) {
    let requirements = format!("Django=={}\ngunicorn=={}\n", v["django"], v["gunicorn"]);
    write(
        dir,
        &[
            ("manage.py", DJANGO_MANAGE),
            ("mysite/__init__.py", ""),
            ("mysite/settings.py", DJANGO_SETTINGS),
            ("mysite/urls.py", &DJANGO_URLS.replace("GREETING", greeting)),
            ("mysite/wsgi.py", DJANGO_WSGI),
            ("assets/site.css", "body { color: teal }\n"),
            ("requirements.txt", &requirements),
            (
                "Procfile",
                "web: gunicorn mysite.wsgi --bind 0.0.0.0:$PORT --workers 2\n",
            ),
        ],
    );
}
