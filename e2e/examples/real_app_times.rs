//! Push to first 200 for a Django app (issue 19): `paas push` of the Django + gunicorn app of
//! the real-apps test (requirements.txt from a local PEP 503 index this program serves) on the
//! trixie stack, first push (`--no-cache`: every dependency downloaded and installed) and re-push
//! (code changed, same requirements: the dependency cache), against `docker build` + `docker run`
//! of an equivalent two-stage Dockerfile on the same stack images (build in
//! `paas-stack:trixie-build`, run in `paas-stack:trixie`), from scratch (`--no-cache`) and after
//! the same code change (the dependency layer cached). Rounds alternate the four; each is timed
//! from the command's start to the first 200 with the new text. Median of RUNS with the spread.
//!
//! `scripts/e2e-wheels && cargo build --workspace --bins && cargo run -p paas-e2e --example real_app_times -- [RUNS]`

use anyhow::{bail, Context, Result};
use paas_e2e::pkgserver::{add_index, django_app, wheels_dir, PackageServer, Routes, StagingNet};
use paas_e2e::{unique, wait_for, Options, Platform};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DOCKERFILE: &str = r#"FROM paas-stack:trixie-build AS build
ARG INDEX
WORKDIR /app
COPY requirements.txt .
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install --disable-pip-version-check --no-cache-dir --index-url "$INDEX" --trusted-host 127.0.0.1 -r requirements.txt
COPY . .
RUN /app/.venv/bin/python manage.py collectstatic --noinput
FROM paas-stack:trixie
COPY --from=build /app /app
WORKDIR /app
USER 2000
CMD ["/app/.venv/bin/gunicorn", "mysite.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2"]
"#;

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let routes: Routes = Default::default();
    let versions = add_index(&routes, &wheels_dir());
    let server = PackageServer::start(routes);
    let net = StagingNet::create();
    let index = format!("http://{}:{}/simple/", net.gateway, server.port);
    let mut p = Platform::start_server(Options::default())?;
    p.start_agent_with(
        &unique("bench-node"),
        "zone-a",
        &[
            ("PAAS_STAGING_NETWORK", net.name.as_str()),
            ("PAAS_PIP_INDEX_URL", index.as_str()),
        ],
    )?;
    p.login()?;
    let docker_index = format!("http://127.0.0.1:{}/simple/", server.port);
    let image = unique("paas-bench-django");

    let (mut first, mut again, mut d_first, mut d_again) = (vec![], vec![], vec![], vec![]);
    for round in 0..runs {
        let app = unique("bench-django");
        let dir = tempfile::tempdir()?;
        django_app(dir.path(), &versions, &format!("First{round}"));
        first.push(paas_push(
            &p,
            &app,
            dir.path(),
            &["--no-cache"],
            &format!("First{round}"),
        )?);
        django_app(dir.path(), &versions, &format!("Again{round}"));
        again.push(paas_push(
            &p,
            &app,
            dir.path(),
            &[],
            &format!("Again{round}"),
        )?);

        let dir = tempfile::tempdir()?;
        django_app(dir.path(), &versions, &format!("DFirst{round}"));
        std::fs::write(dir.path().join("Dockerfile"), DOCKERFILE)?;
        let fresh = ["--no-cache"];
        d_first.push(docker(
            dir.path(),
            &image,
            &docker_index,
            &fresh,
            &format!("DFirst{round}"),
        )?);
        django_app(dir.path(), &versions, &format!("DAgain{round}"));
        d_again.push(docker(
            dir.path(),
            &image,
            &docker_index,
            &[],
            &format!("DAgain{round}"),
        )?);
        eprintln!(
            "round {round}: paas first {:.1} s, re-push {:.1} s; docker first {:.1} s, rebuild {:.1} s",
            first[round], again[round], d_first[round], d_again[round]
        );
    }
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    println!("| what | median (s) | min-max (s) |\n| --- | --- | --- |");
    report("paas push, first (--no-cache)", &mut first);
    report(
        "paas push, re-push (code changed, same requirements)",
        &mut again,
    );
    report("docker build --no-cache + docker run", &mut d_first);
    report("docker build (code changed) + docker run", &mut d_again);
    Ok(())
}

fn paas_push(p: &Platform, app: &str, dir: &Path, extra: &[&str], want: &str) -> Result<f64> {
    let started = Instant::now();
    let mut args = vec!["push", app, "-p", dir.to_str().context("path")?];
    args.extend_from_slice(extra);
    let out = p.cli(&args);
    if !out.ok() {
        bail!("push: {out:?}");
    }
    wait_for(Duration::from_secs(120), "the app to serve", || {
        let (s, b) = p.get_app(app, "/").ok()?;
        (s == 200 && b.contains(want)).then_some(())
    })?;
    Ok(started.elapsed().as_secs_f64())
}

fn docker(dir: &Path, image: &str, index: &str, extra: &[&str], want: &str) -> Result<f64> {
    let started = Instant::now();
    let out = Command::new("docker")
        .args(["build", "-q", "--network", "host", "--build-arg"])
        .arg(format!("INDEX={index}"))
        .args(["-t", image])
        .args(extra)
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!("docker build: {}", String::from_utf8_lossy(&out.stderr));
    }
    let name = unique("paas-bench-run");
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--rm",
            "--name",
            &name,
            "-p",
            "127.0.0.1::8000",
            image,
        ])
        .output()?;
    if !out.status.success() {
        bail!("docker run: {}", String::from_utf8_lossy(&out.stderr));
    }
    let port = Command::new("docker")
        .args(["port", &name, "8000/tcp"])
        .output()?;
    let addr = String::from_utf8_lossy(&port.stdout)
        .lines()
        .next()
        .context("no published port")?
        .trim()
        .to_string();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let served = wait_for(Duration::from_secs(120), "the container to serve", || {
        let r = client.get(format!("http://{addr}/")).send().ok()?;
        (r.status().as_u16() == 200 && r.text().ok()?.contains(want)).then_some(())
    });
    let elapsed = started.elapsed().as_secs_f64();
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    served?;
    Ok(elapsed)
}

fn report(what: &str, times: &mut [f64]) {
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    println!(
        "| {what} | {median:.1} | {:.1}-{:.1} |",
        times[0],
        times[times.len() - 1]
    );
}
