//! `paas autoscale NAME --min 1 --max 10 [--cpu 70] [--rps-per-instance 200] [--p99 300ms]
//! [--scale-out-cooldown 60s] [--scale-in-cooldown 300s]` sets an app's policy, `paas autoscale
//! NAME --off` removes it, `paas autoscale NAME` shows it (issue 23).

use crate::client::{seg, Client};
use chrono::SecondsFormat;
use paas_common::api::{AutoscaleRequest, AutoscaleStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Fewest web instances (set with --max)
    #[arg(long, requires = "max", conflicts_with = "off")]
    pub min: Option<u32>,
    /// Most web instances (set with --min)
    #[arg(long, requires = "min", conflicts_with = "off")]
    pub max: Option<u32>,
    /// Target mean CPU per instance, percent of one core (the default rule when none is given: 70)
    #[arg(long, requires = "min")]
    pub cpu: Option<u32>,
    /// Target requests per second per instance
    #[arg(long, requires = "min")]
    pub rps_per_instance: Option<u32>,
    /// Target p99 latency (`300ms`, `1s`): above it, one more instance
    #[arg(long, value_parser = parse_ms, requires = "min")]
    pub p99: Option<u32>,
    /// Least time between two scale-outs (`60s`, `2m`; default 60s)
    #[arg(long, value_parser = parse_secs, requires = "min")]
    pub scale_out_cooldown: Option<u32>,
    /// Least time after any scaling before a scale-in (default 300s)
    #[arg(long, value_parser = parse_secs, requires = "min")]
    pub scale_in_cooldown: Option<u32>,
    /// Turn autoscaling off (the instance count stays as it is)
    #[arg(long)]
    pub off: bool,
    /// Print the policy as JSON
    #[arg(long)]
    pub json: bool,
}

fn parse_ms(s: &str) -> Result<u32, String> {
    paas_common::domain::parse_millis(s)
}

fn parse_secs(s: &str) -> Result<u32, String> {
    paas_common::domain::parse_secs(s)
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/autoscale", seg(&args.name));
    if args.off {
        client.delete_path(&path)?;
        println!("Autoscaling of {} is off", args.name);
        return Ok(());
    }
    let status: AutoscaleStatus = match (args.min, args.max) {
        (Some(min), Some(max)) => client.put_json(
            &path,
            &AutoscaleRequest {
                min_instances: min,
                max_instances: max,
                cpu_percent: args.cpu,
                rps_per_instance: args.rps_per_instance,
                p99_ms: args.p99,
                scale_out_cooldown_secs: args.scale_out_cooldown,
                scale_in_cooldown_secs: args.scale_in_cooldown,
            },
        )?,
        _ => client.get_json(&path)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    print!("{}", describe(&args.name, &status));
    Ok(())
}

fn describe(name: &str, s: &AutoscaleStatus) -> String {
    let mut rules = Vec::new();
    if let Some(c) = s.cpu_percent {
        rules.push(format!("cpu {c}%"));
    }
    if let Some(r) = s.rps_per_instance {
        rules.push(format!("{r} requests/s per instance"));
    }
    if let Some(p) = s.p99_ms {
        rules.push(format!("p99 {p}ms"));
    }
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("never".to_string(), |t| {
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        })
    };
    format!(
        "Autoscaling {name}: {} to {} web instances on {} (now {})\n\
         cooldowns: scale-out {}s, scale-in {}s\n\
         last scale-out: {}, last scale-in: {}\n\
         last decision: {}\n",
        s.min_instances,
        s.max_instances,
        rules.join(", "),
        s.instances,
        s.scale_out_cooldown_secs,
        s.scale_in_cooldown_secs,
        time(s.last_scale_out_at),
        time(s.last_scale_in_at),
        s.last_decision.as_deref().unwrap_or("none yet"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_ms("300ms"), Ok(300));
        assert_eq!(parse_ms("1.5s"), Ok(1500));
        assert_eq!(parse_ms("250"), Ok(250));
        assert_eq!(parse_secs("60s"), Ok(60));
        assert_eq!(parse_secs("5m"), Ok(300));
        assert_eq!(parse_secs("90"), Ok(90));
        assert_eq!(parse_secs("500ms"), Ok(1));
        assert!(parse_secs("5 fortnights").is_err());
        assert!(parse_ms("fast").is_err());
    }
}
