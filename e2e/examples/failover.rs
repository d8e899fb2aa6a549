//! Failover time: from a node's last heartbeat to all of its instances serving on another node.
//! Two real agents in two zones, 4 instances of examples/python-app (2 per node); `kill -9` of
//! one agent and removal of its containers (a machine dying); then poll (every 200 ms, through the CLI) until the 4
//! instances run on the survivor and the router answers. Reported beside the node grace period
//! of the same run (the part that is detection, not replacement).
//!
//! `cargo build --workspace --bins && cargo run -p paas-e2e --example failover -- [RUNS] [GRACE_SECS]`

use anyhow::{Context, Result};
use paas_e2e::{example, unique, wait_for, Options, Platform};
use std::time::Duration;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let grace: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(3);
    let mut detect = Vec::new();
    let mut total = Vec::new();
    for run in 0..runs {
        let (d, t) = once(grace)?;
        println!(
            "run {}: heartbeat -> lost {:.2} s, heartbeat -> all serving elsewhere {:.2} s",
            run + 1,
            d,
            t
        );
        detect.push(d);
        total.push(t);
    }
    detect.sort_by(f64::total_cmp);
    total.sort_by(f64::total_cmp);
    let (d, t) = (detect[runs / 2], total[runs / 2]);
    println!("median of {runs}, grace {grace} s: lost after {d:.2} s, all 4 serving elsewhere after {t:.2} s; replacement after detection {:.2} s; total/grace {:.2}", t - d, t / grace as f64);
    Ok(())
}

fn nodes(p: &Platform, token: &str) -> Result<serde_json::Value> {
    Ok(reqwest::blocking::Client::new()
        .get(format!("{}/v1/nodes", p.api_url()))
        .bearer_auth(token)
        .send()?
        .json()?)
}

fn once(grace: u64) -> Result<(f64, f64)> {
    let mut p = Platform::start_server(Options {
        node_grace_secs: grace,
        ..Options::default()
    })?;
    let a = unique("fo-a");
    let b = unique("fo-b");
    p.start_agent(&a, "zone-a")?;
    let ib = p.start_agent(&b, "zone-b")?;
    p.login()?;
    let app = unique("failover");
    let out = p.cli(&[
        "push",
        &app,
        "-p",
        example("python-app").to_str().context("path")?,
        "-i",
        "4",
        "-m",
        "64M",
    ]);
    anyhow::ensure!(out.ok(), "push failed: {out:?}");
    let token = p.admin_token()?;
    p.kill_agent(ib);
    p.remove_node_containers(&b);
    let node_b = |v: &serde_json::Value| {
        v["nodes"]
            .as_array()
            .and_then(|l| l.iter().find(|n| n["name"] == b.as_str()).cloned())
    };
    let last_hb: chrono::DateTime<chrono::Utc> = node_b(&nodes(&p, &token)?).context("node b")?
        ["last_heartbeat"]
        .as_str()
        .context("heartbeat")?
        .parse()?;
    let mut lost_at = None;
    let done = wait_for(
        Duration::from_secs(120),
        "4 instances running on the survivor",
        || {
            let now = chrono::Utc::now();
            if lost_at.is_none()
                && nodes(&p, &token)
                    .ok()
                    .and_then(|v| node_b(&v))
                    .is_some_and(|n| n["state"] == "lost")
            {
                lost_at = Some(now);
            }
            let v = p.app_json(&app).ok()?;
            let list = v["instances"].as_array()?;
            let ok = list.len() == 4
                && list
                    .iter()
                    .all(|i| i["state"] == "running" && i["node"] == a.as_str());
            (ok && p.get_app(&app, "/").ok()?.0 == 200).then_some(now)
        },
    )?;
    let secs = |t: chrono::DateTime<chrono::Utc>| (t - last_hb).num_milliseconds() as f64 / 1000.0;
    Ok((secs(lost_at.unwrap_or(done)), secs(done)))
}
