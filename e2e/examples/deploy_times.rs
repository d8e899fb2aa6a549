//! Deployment times (issue 17): from `paas restart` to every instance replaced (new rows, all
//! running, none of the old left), for 1, 3 and 10 instances of examples/python-app on one real
//! agent; and a burst of 11 changes fired without waiting (env, restart, push, scale, memory,
//! rollback) to the platform being quiet with exactly the last version running. Median of RUNS
//! rounds, with the spread.
//!
//! `cargo build --workspace --bins && cargo run -p paas-e2e --example deploy_times -- [RUNS]`

use anyhow::{bail, Context, Result};
use paas_e2e::{example, unique, wait_for, Platform};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let p = Platform::start()?;
    for n in [1u32, 3, 10] {
        let app = unique("restart-bench");
        let out = p.cli(&[
            "push",
            &app,
            "-p",
            example("python-app").to_str().context("path")?,
            "-i",
            &n.to_string(),
            "-m",
            "64M",
        ]);
        if !out.ok() {
            bail!("push: {out:?}");
        }
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(restart_once(&p, &app, n)?);
        }
        report(&format!("restart, {n} instance(s)"), &mut times);
        let _ = p.cli(&["delete", &app, "-f"]);
        p.check_invariants()?;
    }
    let mut times = Vec::new();
    for _ in 0..runs {
        times.push(burst_once(&p)?);
    }
    report("burst of 11 changes to quiet", &mut times);
    Ok(())
}

fn report(what: &str, times: &mut [f64]) {
    times.sort_by(f64::total_cmp);
    println!(
        "{what}: median {:.2} s (min {:.2}, max {:.2}, {} runs)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}

/// Instance identities: (process, index, since) of each running instance.
fn running(p: &Platform, app: &str) -> Result<(usize, HashSet<String>)> {
    let d = p.app_json(app)?;
    let list = d["instances"].as_array().context("instances")?;
    let ids = list
        .iter()
        .filter(|i| i["state"] == "running")
        .map(|i| format!("{}#{}@{}", i["process_type"], i["index"], i["since"]))
        .collect();
    Ok((list.len(), ids))
}

fn restart_once(p: &Platform, app: &str, n: u32) -> Result<f64> {
    let (_, before) = running(p, app)?;
    let t = Instant::now();
    let out = p.cli(&["restart", app, "--no-wait"]);
    if !out.ok() {
        bail!("restart: {out:?}");
    }
    wait_for(Duration::from_secs(300), "every instance replaced", || {
        let (total, now) = running(p, app).ok()?;
        (total == n as usize && now.len() == n as usize && now.is_disjoint(&before)).then_some(())
    })?;
    Ok(t.elapsed().as_secs_f64())
}

fn burst_once(p: &Platform) -> Result<f64> {
    let app = unique("burst-bench");
    let path = example("python-app");
    let path = path.to_str().context("path")?;
    let out = p.cli(&["push", &app, "-p", path, "-i", "2", "-m", "64M"]);
    if !out.ok() {
        bail!("push: {out:?}");
    }
    let t = Instant::now();
    for args in [
        vec!["set-env", &app, "A", "1"],
        vec!["restart", &app, "--no-wait"],
        vec!["set-env", &app, "B", "2"],
        vec!["restart", &app, "--no-wait"],
        vec!["scale", &app, "-i", "3"],
        vec!["scale", &app, "-m", "96M"],
        vec!["rollback", &app, "--no-wait"],
        vec!["set-env", &app, "C", "3"],
        vec!["restart", &app, "--no-wait"],
        vec!["scale", &app, "-i", "2"],
        vec!["set-env", &app, "D", "4"],
    ] {
        let out = p.cli(&args);
        if !out.ok() {
            bail!("{args:?}: {out:?}");
        }
    }
    p.check_invariants()?;
    let took = t.elapsed().as_secs_f64();
    let _ = p.cli(&["delete", &app, "-f"]);
    Ok(took)
}
