//! Backing services (issue 22), Cloud Foundry's commands: `create-service-broker`,
//! `service-brokers`, `delete-service-broker` (operators), `marketplace`, `create-service
//! OFFERING PLAN NAME [-c JSON]`, `cups NAME -p JSON` (and `update-user-provided-service`),
//! `services`, `service NAME`, `delete-service NAME`, `bind-service APP NAME`, `unbind-service
//! APP NAME`. Instances are the target space's (`paas target`).

use anyhow::Context;
use paas_common::service::{
    BindingInfo, BrokerInfo, BrokerList, CreateBinding, CreateBroker, CreateService, Marketplace,
    ServiceInfo, ServiceList, UpdateService,
};
use serde_json::{Map, Value};

use crate::client::{seg, Client};
use crate::output::table;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the list as JSON, exactly as the API sent it
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    pub name: String,
    /// Print it as JSON, exactly as the API sent it
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CreateBrokerArgs {
    pub name: String,
    /// The broker's base URL
    pub url: String,
    #[arg(long)]
    pub username: String,
    #[arg(long)]
    pub password: String,
    /// Only the target space sees its offerings (default: every space)
    #[arg(long)]
    pub space_scoped: bool,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The offering, as `paas marketplace` lists it
    pub offering: String,
    pub plan: String,
    /// The service instance's name in the space
    pub name: String,
    /// Parameters for the broker, a JSON object
    #[arg(short = 'c', value_name = "JSON")]
    pub parameters: Option<String>,
    /// The broker, when several offer the offering
    #[arg(short = 'b', long)]
    pub broker: Option<String>,
    /// Tags, comma-separated
    #[arg(short = 't', long)]
    pub tags: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CupsArgs {
    pub name: String,
    /// Credentials, a JSON object
    #[arg(short = 'p', value_name = "JSON")]
    pub credentials: Option<String>,
    /// A syslog drain URL
    #[arg(short = 'l', value_name = "URL")]
    pub syslog_drain_url: Option<String>,
    /// Tags, comma-separated
    #[arg(short = 't', long)]
    pub tags: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct BindArgs {
    pub app: String,
    /// The service instance
    pub service: String,
}

fn tags(t: &Option<String>) -> Vec<String> {
    t.as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn object(what: &str, text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text).with_context(|| format!("{what} is not JSON"))? {
        Value::Object(m) => Ok(m),
        _ => anyhow::bail!("{what} must be a JSON object"),
    }
}

pub fn create_broker(args: CreateBrokerArgs, client: &Client) -> anyhow::Result<()> {
    let b: BrokerInfo = client.post_json(
        "/v1/service-brokers",
        &CreateBroker {
            name: args.name,
            url: args.url,
            username: args.username,
            password: args.password,
            space_scoped: args.space_scoped,
        },
    )?;
    println!(
        "Registered service broker {} ({}): {}",
        b.name,
        b.url,
        b.services.join(", ")
    );
    Ok(())
}

pub fn brokers(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    if args.json {
        let v: Value = client.get_json("/v1/service-brokers")?;
        println!("{}", serde_json::to_string_pretty(&v["brokers"])?);
        return Ok(());
    }
    let list: BrokerList = client.get_json("/v1/service-brokers")?;
    let rows: Vec<Vec<String>> = list
        .brokers
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                if b.builtin {
                    "built-in".into()
                } else {
                    b.url.clone()
                },
                b.space.clone().unwrap_or_else(|| "all".into()),
                b.services.join(", "),
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "URL", "SPACE", "OFFERINGS"], &rows));
    Ok(())
}

pub fn delete_broker(args: NameArgs, client: &Client) -> anyhow::Result<()> {
    client.delete_path(&format!("/v1/service-brokers/{}", seg(&args.name)))?;
    println!("Deleted service broker {}", args.name);
    Ok(())
}

pub fn marketplace(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    if args.json {
        let v: Value = client.get_json("/v1/marketplace")?;
        println!("{}", serde_json::to_string_pretty(&v["offerings"])?);
        return Ok(());
    }
    let m: Marketplace = client.get_json("/v1/marketplace")?;
    let rows: Vec<Vec<String>> = m
        .offerings
        .iter()
        .map(|o| {
            vec![
                o.name.clone(),
                o.plans
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                o.description.clone(),
                o.broker.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["OFFERING", "PLANS", "DESCRIPTION", "BROKER"], &rows)
    );
    Ok(())
}

pub fn create(args: CreateArgs, client: &Client) -> anyhow::Result<()> {
    let parameters = args
        .parameters
        .as_deref()
        .map(|p| object("-c", p).map(Value::Object))
        .transpose()?;
    let s: ServiceInfo = client.post_json(
        "/v1/services",
        &CreateService {
            name: args.name,
            offering: Some(args.offering),
            plan: Some(args.plan),
            broker: args.broker,
            parameters,
            tags: tags(&args.tags),
            ..Default::default()
        },
    )?;
    if s.state == "succeeded" {
        println!(
            "Created service instance {} ({} {})",
            s.name, s.offering, s.plan
        );
    } else {
        println!(
            "Creating service instance {} ({} {}): {}; see `paas service {}`",
            s.name, s.offering, s.plan, s.state, s.name
        );
    }
    Ok(())
}

pub fn cups(args: CupsArgs, update: bool, client: &Client) -> anyhow::Result<()> {
    let credentials = args
        .credentials
        .as_deref()
        .map(|p| object("-p", p))
        .transpose()?;
    if update {
        let s: ServiceInfo = client.patch_json(
            &format!("/v1/services/{}", seg(&args.name)),
            &UpdateService {
                credentials,
                syslog_drain_url: args.syslog_drain_url,
            },
        )?;
        println!("Updated user-provided service instance {}", s.name);
        return Ok(());
    }
    let s: ServiceInfo = client.post_json(
        "/v1/services",
        &CreateService {
            name: args.name,
            credentials: Some(credentials.unwrap_or_default()),
            syslog_drain_url: args.syslog_drain_url,
            tags: tags(&args.tags),
            ..Default::default()
        },
    )?;
    println!("Created user-provided service instance {}", s.name);
    Ok(())
}

pub fn list(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    if args.json {
        let v: Value = client.get_json("/v1/services")?;
        println!("{}", serde_json::to_string_pretty(&v["services"])?);
        return Ok(());
    }
    let list: ServiceList = client.get_json("/v1/services")?;
    let rows: Vec<Vec<String>> = list
        .services
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                s.offering.clone(),
                s.plan.clone(),
                s.bound_apps.join(", "),
                s.state.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(&["NAME", "OFFERING", "PLAN", "BOUND APPS", "STATE"], &rows)
    );
    Ok(())
}

pub fn show(args: ShowArgs, client: &Client) -> anyhow::Result<()> {
    let path = format!("/v1/services/{}", seg(&args.name));
    if args.json {
        let v: Value = client.get_json(&path)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let s: ServiceInfo = client.get_json(&path)?;
    println!("name:        {}", s.name);
    println!("space:       {}", s.space);
    println!("offering:    {}", s.offering);
    if !s.plan.is_empty() {
        println!("plan:        {}", s.plan);
    }
    if let Some(b) = &s.broker {
        println!("broker:      {b}");
    }
    if !s.tags.is_empty() {
        println!("tags:        {}", s.tags.join(", "));
    }
    println!("state:       {}", s.state);
    if let Some(d) = &s.description {
        println!("message:     {d}");
    }
    if let Some(u) = &s.dashboard_url {
        println!("dashboard:   {u}");
    }
    println!("bound apps:  {}", s.bound_apps.join(", "));
    Ok(())
}

pub fn delete(args: NameArgs, client: &Client) -> anyhow::Result<()> {
    let path = format!("/v1/services/{}", seg(&args.name));
    client.delete_path(&path)?;
    match client.get_json::<ServiceInfo>(&path) {
        Ok(s) => println!("Deleting service instance {}: {}", s.name, s.state),
        Err(_) => println!("Deleted service instance {}", args.name),
    }
    Ok(())
}

pub fn bind(args: BindArgs, client: &Client) -> anyhow::Result<()> {
    let b: BindingInfo = client.post_json(
        &format!("/v1/apps/{}/bindings", seg(&args.app)),
        &CreateBinding {
            service: args.service,
        },
    )?;
    match b.revision {
        Some(n) => println!(
            "Bound {} to {}: revision {n} rolls out with it",
            b.service, b.app
        ),
        None => println!("Bound {} to {}", b.service, b.app),
    }
    Ok(())
}

pub fn unbind(args: BindArgs, client: &Client) -> anyhow::Result<()> {
    client.delete_path(&format!(
        "/v1/apps/{}/bindings/{}",
        seg(&args.app),
        seg(&args.service)
    ))?;
    println!(
        "Unbound {} from {}: the app redeploys without it",
        args.service, args.app
    );
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// The built-in PostgreSQL service instance
    pub name: String,
    /// Return once the backup started instead of waiting for it to finish
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The built-in PostgreSQL service instance
    pub name: String,
    /// The backup's id (`paas service-backups NAME`)
    pub backup: String,
    /// Return once the restore started instead of waiting for it to finish
    #[arg(long)]
    pub no_wait: bool,
}

/// Waits until the job `id` of the service is `done` (or says why it failed), up to 10 minutes.
fn wait_job(client: &Client, name: &str, id: &str) -> anyhow::Result<()> {
    let path = format!("/v1/services/{}/backups", seg(name));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        let jobs: Vec<paas_common::api::ServiceBackup> = client.get_json(&path)?;
        match jobs.iter().find(|j| j.id == id) {
            Some(j) if j.state == "done" => return Ok(()),
            Some(j) if j.state == "failed" => anyhow::bail!(
                "{} {id} failed: {}",
                j.kind,
                j.error.as_deref().unwrap_or("no reason given")
            ),
            Some(_) => {}
            None => anyhow::bail!("{id} is no longer listed for service {name}"),
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{id} of service {name} has not finished after 10 minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

pub fn backup(args: BackupArgs, client: &Client) -> anyhow::Result<()> {
    let job: paas_common::api::ServiceBackup = client.post_json(
        &format!("/v1/services/{}/backups", seg(&args.name)),
        &serde_json::json!({}),
    )?;
    if !args.no_wait {
        wait_job(client, &args.name, &job.id)?;
    }
    let state = if args.no_wait { "started" } else { "done" };
    println!("Backup {} of {}: {state}", job.id, args.name);
    Ok(())
}

pub fn backups(args: ShowArgs, client: &Client) -> anyhow::Result<()> {
    let path = format!("/v1/services/{}/backups", seg(&args.name));
    let jobs: Vec<paas_common::api::ServiceBackup> = client.get_json(&path)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(());
    }
    println!("{:<38} {:<8} {:<8} CREATED", "ID", "KIND", "STATE");
    for j in jobs {
        println!(
            "{:<38} {:<8} {:<8} {}",
            j.id,
            j.kind,
            j.state,
            j.created_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(())
}

pub fn restore(args: RestoreArgs, client: &Client) -> anyhow::Result<()> {
    let job: paas_common::api::ServiceBackup = client.post_json(
        &format!("/v1/services/{}/restore", seg(&args.name)),
        &paas_common::api::RestoreRequest {
            backup: args.backup.clone(),
        },
    )?;
    if !args.no_wait {
        wait_job(client, &args.name, &job.id)?;
    }
    let state = if args.no_wait { "started" } else { "done" };
    println!(
        "Restore of backup {} into {}: {state}",
        args.backup, args.name
    );
    Ok(())
}
