//! App and node lifecycle: `paas scale`, `restart`, `stop`, `start`, `restart-instance` and
//! `node drain`. Each records intent with the controller, which replaces instances (new one
//! running first, old one removed after); `restart` then follows the replacement until it is
//! done (unless `--no-wait`), the others return at once (follow with `paas app NAME`).

use crate::client::Client;
use crate::output::memory;
use paas_common::api::{
    AppSettings, AppUpdateRequest, HealthCheckUpdate, LogRateLimit, RestartRequest,
};
use paas_common::domain::{format_log_rate_limit, parse_log_rate_limit, parse_memory_mb};

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// App name
    pub name: String,
    /// Number of instances (the others keep running)
    #[arg(short = 'i', long)]
    pub instances: Option<u32>,
    /// Memory per instance, e.g. 256M or 1G (replaces every instance, one at a time)
    #[arg(short = 'm', long, value_parser = parse_memory_mb)]
    pub memory: Option<u64>,
    /// Instances replaced at once by rolling deploys and restarts
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Health check type: port, http or process (replaces every instance, one at a time)
    #[arg(long = "health-check", value_parser = ["port", "http", "process"])]
    pub health_check: Option<String>,
    /// Path an http health check requests, e.g. /health
    #[arg(long)]
    pub health_endpoint: Option<String>,
    /// Seconds per health check attempt
    #[arg(long)]
    pub health_timeout: Option<u64>,
    /// Seconds an instance may take to pass its first health check
    #[arg(long)]
    pub start_timeout: Option<u64>,
    /// Print the resulting settings as JSON
    #[arg(long)]
    pub json: bool,
    /// Process type to scale (web, worker, ...); default web
    #[arg(short = 'p', long)]
    pub process: Option<String>,
    /// Log bytes per second each instance may print, e.g. 1K or 16M; -1 for the platform
    /// default. The excess is dropped and counted; applies to running instances without a restart
    #[arg(short = 'l', long, value_name = "BYTES", allow_hyphen_values = true)]
    pub log_rate_limit: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// App name
    pub name: String,
    /// Instances replaced at once (kept as the app's setting)
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Return once the restart is recorded instead of following it
    #[arg(long)]
    pub no_wait: bool,
    /// Seconds to wait for every instance to be replaced
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    /// App name
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct RestartInstanceArgs {
    /// App name
    pub name: String,
    /// Instance index
    pub index: u32,
    /// Process type whose instance restarts (indices are per type)
    #[arg(long = "process", short = 'p', default_value = "web")]
    pub process: String,
}

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Move every instance off a node (each replacement runs before its old instance stops),
    /// then mark the node drained. It gets no new instances.
    Drain {
        /// Node name
        name: String,
    },
}

fn summary(s: &AppSettings) -> String {
    format!(
        "{}: {}, {} instance(s) of {}, max in flight {}, health check {}, log rate limit {}",
        s.name,
        s.state.as_str(),
        s.desired_instances,
        memory(s.memory_mb),
        s.max_in_flight,
        match &s.health.check {
            paas_common::agent::HealthCheck::Port => "port".to_string(),
            paas_common::agent::HealthCheck::Process => "process".to_string(),
            paas_common::agent::HealthCheck::Http { endpoint } => format!("http {endpoint}"),
        },
        s.log_rate_limit_bytes.map_or_else(
            || "platform default".to_string(),
            |b| format!("{}/s", format_log_rate_limit(b))
        )
    )
}

pub fn scale(args: ScaleArgs, client: &Client) -> anyhow::Result<()> {
    let health_given = args.health_endpoint.is_some()
        || args.health_timeout.is_some()
        || args.start_timeout.is_some();
    let health_check = match args.health_check {
        Some(t) => Some(HealthCheckUpdate {
            check_type: t,
            endpoint: args.health_endpoint,
            invocation_timeout_secs: args.health_timeout,
            start_timeout_secs: args.start_timeout,
        }),
        None if health_given => {
            anyhow::bail!("give --health-check port|http|process with the other health options")
        }
        None => None,
    };
    // Checked here for a one-line error before any request; the controller checks it again.
    if let Some(l) = &args.log_rate_limit {
        parse_log_rate_limit(l).map_err(anyhow::Error::msg)?;
    }
    let req = AppUpdateRequest {
        instances: args.instances,
        memory_mb: args.memory,
        max_in_flight: args.max_in_flight,
        health_check,
        placement_labels: None,
        process: args.process.clone(),
        log_rate_limit: args.log_rate_limit.clone().map(LogRateLimit::Text),
    };
    let s = client.update_app(&args.name, &req)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else if let Some(p) = args.process.as_deref().filter(|p| *p != "web") {
        // The answer's instances and memory are web's; say what changed for the process.
        let mut what = Vec::new();
        if let Some(n) = args.instances {
            what.push(format!("{n} instance(s)"));
        }
        if let Some(m) = args.memory {
            what.push(format!("{} each", memory(m)));
        }
        println!("{}: process {p} scaled to {}", s.name, what.join(", "));
        if s.rolling {
            println!(
                "Replacing {p} instances {} at a time; follow with `paas app {}`",
                s.max_in_flight, s.name
            );
        }
    } else {
        println!("{}", summary(&s));
        if s.rolling {
            println!(
                "Replacing instances {} at a time; follow with `paas app {}`",
                s.max_in_flight, s.name
            );
        }
    }
    Ok(())
}

pub fn restart(args: RestartArgs, client: &Client) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let before = (!args.no_wait)
        .then(|| client.get_app(&args.name))
        .transpose()?;
    let s = client.app_action(
        &args.name,
        "restart",
        &RestartRequest {
            max_in_flight: args.max_in_flight,
        },
    )?;
    let Some(before) = before else {
        println!(
            "Restarting {} ({} at a time); follow with `paas app {}`",
            s.name, s.max_in_flight, s.name
        );
        return Ok(());
    };
    println!("Restarting {} ({} at a time)", s.name, s.max_in_flight);
    super::deployment::follow(
        client,
        &s.name,
        super::deployment::Deployment::before(&before),
        started,
        std::time::Duration::from_secs(args.timeout),
    )
}

pub fn stop(args: NameArgs, client: &Client) -> anyhow::Result<()> {
    let s = client.app_action(&args.name, "stop", &serde_json::json!({}))?;
    println!("Stopped {}", s.name);
    Ok(())
}

pub fn start(args: NameArgs, client: &Client) -> anyhow::Result<()> {
    let s = client.app_action(&args.name, "start", &serde_json::json!({}))?;
    println!("Started {}: {} instance(s)", s.name, s.desired_instances);
    Ok(())
}

pub fn restart_instance(args: RestartInstanceArgs, client: &Client) -> anyhow::Result<()> {
    let s = client.app_action(
        &args.name,
        &format!(
            "instances/{}/restart?process={}",
            args.index,
            crate::client::seg(&args.process)
        ),
        &serde_json::json!({}),
    )?;
    println!(
        "Restarting {} instance {} of {}",
        args.process, args.index, s.name
    );
    Ok(())
}

pub fn node(args: NodeArgs, client: &Client) -> anyhow::Result<()> {
    match args.command {
        NodeCommand::Drain { name } => {
            let r = client.drain_node(&name)?;
            println!(
                "Node {} is {}; its instances move to other nodes",
                r.name, r.state
            );
        }
    }
    Ok(())
}
