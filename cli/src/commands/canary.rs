//! `paas deployment NAME` (the app's canary or blue-green deployment with the live comparison
//! of the two revisions), `paas deployment continue NAME`, `paas deployment cancel NAME`
//! (issue 23).

use crate::client::{seg, Client};
use paas_common::deployment::{DeploymentInfo, RevisionTraffic, StrategyKind};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// App name
    pub name: Option<String>,
    /// Print the deployment as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Move a canary to its next step now (a paused one resumes), or end a blue-green grace.
    Continue(NameArgs),
    /// Stop the deployment: the old revision serves everything again.
    Cancel(NameArgs),
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// App name
    pub name: String,
    /// Print the deployment as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let (d, json): (DeploymentInfo, bool) = match args.action {
        Some(Action::Continue(a)) => (
            client.post_json(
                &format!("/v1/apps/{}/deployment/continue", seg(&a.name)),
                &serde_json::json!({}),
            )?,
            a.json,
        ),
        Some(Action::Cancel(a)) => (
            client.post_json(
                &format!("/v1/apps/{}/deployment/cancel", seg(&a.name)),
                &serde_json::json!({}),
            )?,
            a.json,
        ),
        None => {
            let name = args
                .name
                .ok_or_else(|| anyhow::anyhow!("give the app's name: paas deployment NAME"))?;
            (
                client.get_json(&format!("/v1/apps/{}/deployment", seg(&name)))?,
                args.json,
            )
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", describe(&d));
    }
    Ok(())
}

/// The human view: what runs, the weight, the comparison, and why it ended.
pub fn describe(d: &DeploymentInfo) -> String {
    let mut out = format!(
        "{} deployment of {}: revision {} beside revision {}, {}\n",
        d.strategy.kind.as_str(),
        d.app,
        d.new_revision,
        d.old_revision,
        d.state.as_str()
    );
    if d.state.running() {
        match (d.strategy.kind, d.step_started_at) {
            (_, None) => {
                out.push_str("waiting for every new instance to be ready (0% of requests)\n")
            }
            (StrategyKind::Canary, Some(t)) => out.push_str(&format!(
                "step {} of {} since {}: {}% of requests to revision {}\n",
                d.step + 1,
                d.strategy.steps.len(),
                t.format("%H:%M:%S"),
                d.weight,
                d.new_revision
            )),
            (_, Some(t)) => out.push_str(&format!(
                "switched at {}; the old instances stay warm for {}s\n",
                t.format("%H:%M:%S"),
                d.strategy.grace_secs
            )),
        }
    }
    let row = |label: &str, t: &RevisionTraffic| {
        format!(
            "  {label:<22} {:>8} {:>8} {:>8.1}% {:>10}\n",
            t.requests,
            t.errors,
            t.error_rate,
            t.p99_ms.map_or("-".into(), |p| format!("{p:.1} ms"))
        )
    };
    if let (Some(old), Some(new)) = (&d.old, &d.new) {
        out.push_str(&format!(
            "  {:<22} {:>8} {:>8} {:>9} {:>10}\n",
            "REVISION", "REQUESTS", "ERRORS", "RATE", "P99"
        ));
        out.push_str(&row(&format!("{} (old, baseline)", old.revision), old));
        out.push_str(&row(&format!("{} (new, this step)", new.revision), new));
        out.push_str(&format!(
            "  thresholds: +{}% errors, +{}% p99, after {} requests\n",
            d.strategy.max_error_rate, d.strategy.max_p99_increase, d.strategy.min_requests
        ));
    }
    if let Some(r) = &d.reason {
        out.push_str(&format!("reason: {r}\n"));
    }
    out
}
