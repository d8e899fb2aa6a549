//! `paas env NAME`, `paas set-env NAME KEY VALUE`, `paas unset-env NAME KEY`. A change makes a
//! new revision with the same droplet (no rebuild); the command waits until it runs, like push.

use crate::client::Client;
use paas_common::api::EnvUpdate;
use paas_common::domain::AppName;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Print the env as JSON, exactly as the API sent it
    #[arg(long)]
    pub json: bool,
    /// Show secret values in plain rather than `***` (needs the developer role)
    #[arg(long)]
    pub reveal: bool,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// App name
    #[arg(value_parser = AppName::parse)]
    pub name: AppName,
    /// Variable name
    pub key: String,
    /// Value
    pub value: String,
    /// Store the value encrypted and show it as `***` in `paas env` and the API
    #[arg(long)]
    pub secret: bool,
    /// Seconds to wait for the new revision's instances to run
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct UnsetArgs {
    /// App name
    #[arg(value_parser = AppName::parse)]
    pub name: AppName,
    /// Variable name
    pub key: String,
    /// Seconds to wait for the new revision's instances to run
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let fetched = client.get_env_revealed(&args.name, args.reveal)?;
    if args.json {
        println!("{}", fetched.raw.trim_end());
        return Ok(());
    }
    let env = fetched.value;
    match env.revision {
        Some(n) => println!("Env of {} (revision {n}):", args.name),
        None => println!("{} has no revision yet.", args.name),
    }
    if env.env.is_empty() {
        println!("  (none)");
    }
    for (k, v) in &env.env {
        println!("{k}={v}");
    }
    Ok(())
}

pub fn run_set(args: SetArgs, client: &Client) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut update = EnvUpdate::default();
    update.set.insert(args.key.clone(), args.value);
    if args.secret {
        update.secret.push(args.key.clone());
    }
    let detail = client.update_env(args.name.as_str(), &update)?;
    println!(
        "Set {} on {}; redeploying without rebuilding",
        args.key,
        args.name.as_str()
    );
    super::push::wait_until_running(
        client,
        &args.name,
        detail,
        started,
        Duration::from_secs(args.timeout),
    )
}

pub fn run_unset(args: UnsetArgs, client: &Client) -> anyhow::Result<()> {
    let started = Instant::now();
    let update = EnvUpdate {
        unset: vec![args.key.clone()],
        ..Default::default()
    };
    let detail = client.update_env(args.name.as_str(), &update)?;
    println!(
        "Unset {} on {}; redeploying without rebuilding",
        args.key,
        args.name.as_str()
    );
    super::push::wait_until_running(
        client,
        &args.name,
        detail,
        started,
        Duration::from_secs(args.timeout),
    )
}
