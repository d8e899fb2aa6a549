//! `paas revisions NAME` and `paas rollback NAME [--to N]`. A rollback makes a new revision with
//! an earlier revision's droplet, command and env (nothing is rebuilt) and follows its deployment
//! until every instance runs it and none from before is left (unless `--no-wait`).

use crate::client::Client;
use crate::output::{age, table};
use chrono::Utc;
use paas_common::api::RollbackRequest;
use paas_common::domain::AppName;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Print the revisions as JSON, exactly as the API sent them
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// App name
    #[arg(value_parser = AppName::parse)]
    pub name: AppName,
    /// Revision to go back to (default: the one before the current)
    #[arg(long)]
    pub to: Option<i64>,
    /// Seconds to wait for the new revision's instances to run
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Return once the new revision is made instead of following its deployment
    #[arg(long)]
    pub no_wait: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let fetched = client.list_revisions(&args.name)?;
    if args.json {
        println!("{}", fetched.raw.trim_end());
        return Ok(());
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = fetched
        .value
        .revisions
        .iter()
        .map(|r| {
            let mut number = r.number.to_string();
            if r.current {
                number.push('*');
            }
            let mut droplet = r.droplet.chars().take(12).collect::<String>();
            if !r.droplet_available {
                droplet.push_str(" (collected)");
            }
            vec![
                number,
                droplet,
                if r.env_keys.is_empty() {
                    "-".into()
                } else {
                    r.env_keys.join(",")
                },
                r.command.clone(),
                format!("{} ago", age(r.created_at, now)),
                if r.created_by.is_empty() {
                    "-".into()
                } else {
                    r.created_by.clone()
                },
                r.description.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["REVISION", "DROPLET", "ENV", "COMMAND", "CREATED", "BY", "WHAT"],
            &rows
        )
    );
    Ok(())
}

pub fn run_rollback(args: RollbackArgs, client: &Client) -> anyhow::Result<()> {
    let started = Instant::now();
    let before = (!args.no_wait)
        .then(|| client.get_app(args.name.as_str()))
        .transpose()?;
    let detail = client.rollback(args.name.as_str(), &RollbackRequest { to: args.to })?;
    if let Some(r) = &detail.revision {
        println!(
            "Rolled {} back: revision {} runs the earlier droplet and env",
            args.name.as_str(),
            r.number
        );
    }
    let Some(before) = before else {
        return Ok(());
    };
    super::deployment::follow(
        client,
        args.name.as_str(),
        super::deployment::Deployment::before(&before),
        started,
        Duration::from_secs(args.timeout),
    )
}
