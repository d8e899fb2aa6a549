//! `paas push [NAME] [-p PATH] [-i N] [-m MEM] [-c CMD] [--timeout SECS]`.
//!
//! Zips the folder ([`crate::archive`]) and uploads it as multipart `POST /v1/apps/NAME/push`
//! asking for the push's event stream (`application/x-ndjson`): staging lines as they are
//! written, then each instance's progress (`web #0: starting on NODE` ... `running`), then the
//! URL and the time it took, or the result's reason as one `error:` line. A crash also prints
//! each instance's state and the last 20 log lines
//! (`GET /v1/apps/NAME/logs?recent=true&limit=20`). A server that answers with one JSON document
//! instead is followed by polling `GET /v1/apps/NAME` every 150 ms, as before the stream.

use crate::archive;
use crate::client::{Client, PushAnswer, PushLines};
use crate::output::{human_size, log_line};
use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use paas_common::api::{
    AppDetail, FileHash, HealthCheckSettings, InstanceInfo, InstanceState, PushPhases,
    PushProgress, PushResource, PushResult, PushSettings, PushStatus, ResourceMatch,
};
use paas_common::domain::{parse_memory_mb, AppName};
use paas_common::manifest::AppManifest;
use paas_common::ApiError;
use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const POLL_EVERY: Duration = Duration::from_millis(150);
const FAILURE_LOG_LINES: u32 = 20;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name, e.g. `GetStartedPython` or 'My App' (default: the folder's name as a route host,
    /// lowercased, other characters turned into '-'); with
    /// a manifest, pushes only that app of it
    #[arg(value_parser = parse_name)]
    pub name: Option<AppName>,
    /// Folder to push (default: the current folder, or each app's `path` from the manifest)
    #[arg(short = 'p', long)]
    pub path: Option<PathBuf>,
    /// Number of instances
    #[arg(short = 'i', long)]
    pub instances: Option<u32>,
    /// Memory per instance, e.g. 256M or 1G
    #[arg(short = 'm', long, value_parser = parse_memory_mb)]
    pub memory: Option<u64>,
    /// Start command (default: the one the buildpack detects)
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// Buildpack to use instead of detecting one (staticfile, python, node, binary, procfile)
    #[arg(short = 'b', long, value_parser = parse_buildpack)]
    pub buildpack: Option<String>,
    /// Manifest to read (default: paas.yml, manifest.yml or manifest.yaml in the folder)
    #[arg(short = 'f', long)]
    pub manifest: Option<PathBuf>,
    /// Ignore any manifest in the folder
    #[arg(long, conflicts_with = "manifest")]
    pub no_manifest: bool,
    /// Seconds to wait, once staged, for all instances to run
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Run only on nodes carrying this label (KEY=VALUE, repeatable; replaces the app's labels
    /// and the manifest's `placement-labels`)
    #[arg(long = "placement", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub placement: Vec<(String, String)>,
    /// Log bytes per second each instance may print, e.g. 1K or 16M; -1 for the platform
    /// default (replaces the manifest's `log-rate-limit-per-second`)
    #[arg(short = 'l', long, value_name = "BYTES", allow_hyphen_values = true)]
    pub log_rate_limit: Option<String>,
    /// Disk per instance, e.g. 512M or 1G (replaces the manifest's `disk_quota`)
    #[arg(short = 'k', long = "disk", value_name = "DISK", value_parser = parse_memory_mb)]
    pub disk: Option<u64>,
    /// Stage and record the new revision but leave the app stopped (`paas start` runs it)
    #[arg(long)]
    pub no_start: bool,
    /// How the new revision replaces the old one: rolling (default), canary or bluegreen
    #[arg(long, value_name = "STRATEGY")]
    pub strategy: Option<String>,
    /// Canary: the new revision's share of requests per step, e.g. 10,50,100
    #[arg(long, value_name = "PERCENTS")]
    pub steps: Option<String>,
    /// Canary: how long each step lasts, e.g. 60s; 0 or `pause` waits for `paas deployment continue`
    #[arg(long, value_name = "DURATION")]
    pub step_wait: Option<String>,
    /// Canary: roll back when the new revision's error rate is this many points above the old one's
    #[arg(long, value_name = "PERCENT")]
    pub max_error_rate: Option<String>,
    /// Canary: roll back when the new revision's p99 latency is this much above the old one's
    #[arg(long, value_name = "PERCENT")]
    pub max_p99_increase: Option<String>,
    /// Canary: requests the new revision must serve in a step before it is judged
    #[arg(long, value_name = "N")]
    pub min_requests: Option<String>,
    /// Blue-green: how long the old instances stay warm after the switch, e.g. 60s
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// Health check type: port, http or process (`none` is port, as in Cloud Foundry)
    #[arg(short = 'u', long = "health-check-type", value_name = "TYPE", value_parser = parse_check_type)]
    pub health_check_type: Option<String>,
    /// The path an http health check asks, e.g. /health
    #[arg(long = "endpoint", value_name = "PATH")]
    pub endpoint: Option<String>,
    /// Seconds an instance may take from start to its first passing health check (the
    /// manifest's `timeout`)
    #[arg(short = 't', long = "app-start-timeout", value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub app_start_timeout: Option<u64>,
    /// The default route's host label instead of the one derived from the app name
    #[arg(short = 'n', long, value_name = "HOST", conflicts_with_all = ["random_route", "no_route"])]
    pub hostname: Option<String>,
    /// A generated default route host (the manifest's `random-route: true`)
    #[arg(long, conflicts_with = "no_route")]
    pub random_route: bool,
    /// No route at all (the manifest's `no-route: true`)
    #[arg(long)]
    pub no_route: bool,
    /// Build from the folder's Dockerfile even when a buildpack detects the app
    #[arg(long, conflicts_with = "buildpack")]
    pub dockerfile: bool,
    /// A value for a `((NAME))` variable of the manifest (repeatable)
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// A YAML file of values for the manifest's `((NAME))` variables (repeatable; `--var` wins)
    #[arg(long = "vars-file", value_name = "FILE")]
    pub vars_files: Vec<PathBuf>,
    /// Stack to stage and run on: trixie (default) or bookworm (cflinuxfs4/cflinuxfs3 mean the
    /// same); replaces the manifest's `stack`
    #[arg(short = 's', long, value_parser = parse_stack)]
    pub stack: Option<String>,
    /// Stage without the dependency cache: every dependency is downloaded and built again
    #[arg(long)]
    pub no_cache: bool,
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, not {s:?}")),
    }
}

fn parse_check_type(s: &str) -> Result<String, String> {
    paas_common::manifest::health_check_type(s).map(str::to_string)
}

fn parse_stack(s: &str) -> Result<String, String> {
    paas_common::stack::resolve(s)
        .map(str::to_string)
        .map_err(|e| e.to_string())
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
            Ok((k.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(format!("expected KEY=VALUE, not {s:?}")),
    }
}

fn parse_buildpack(s: &str) -> Result<String, String> {
    paas_common::manifest::buildpack_name(s)
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "unknown buildpack {s:?}: known are {}",
                paas_common::manifest::BUILTIN_BUILDPACKS.join(", ")
            )
        })
}

fn parse_name(s: &str) -> Result<AppName, String> {
    AppName::parse(s)
}

/// Manifest names looked for in the folder, in this order.
const MANIFEST_NAMES: &[&str] = &["paas.yml", "manifest.yml", "manifest.yaml"];

/// One app to push: where from and with what settings.
struct Plan {
    name: AppName,
    path: PathBuf,
    settings: PushSettings,
    /// The manifest's `cron` entries (with the folder's `app.json` ones).
    cron: Vec<paas_common::manifest::CronManifest>,
    /// The manifest's `autoscale`, set as the app's policy after the push.
    autoscale: Option<paas_common::manifest::AutoscaleManifest>,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    for plan in plans(&args)? {
        push_one(client, plan, timeout)?;
    }
    Ok(())
}

/// The manifest to read, if any: `-f`, else the first of [`MANIFEST_NAMES`] in the folder.
fn find_manifest(args: &Args) -> Option<PathBuf> {
    if args.no_manifest {
        return None;
    }
    if let Some(f) = &args.manifest {
        return Some(f.clone());
    }
    let dir = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
    MANIFEST_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The health settings the flags state (`-u`, `--endpoint`, `-t`), on top of the manifest's.
fn health_flags(
    args: &Args,
    manifest: Option<HealthCheckSettings>,
) -> anyhow::Result<Option<HealthCheckSettings>> {
    if args.health_check_type.is_none()
        && args.endpoint.is_none()
        && args.app_start_timeout.is_none()
    {
        return Ok(manifest);
    }
    let mut h = manifest.unwrap_or_default();
    if let Some(t) = &args.health_check_type {
        h.check_type = Some(t.clone());
    }
    if let Some(e) = &args.endpoint {
        h.http_endpoint = Some(e.clone());
        // An endpoint alone means an http check, as `cf push --endpoint` does.
        if args.health_check_type.is_none() && h.check_type.is_none() {
            h.check_type = Some("http".into());
        }
    }
    if h.check_type.as_deref() == Some("http") && h.http_endpoint.is_none() {
        h.http_endpoint = Some("/".into());
    }
    if h.check_type.as_deref() != Some("http") && args.endpoint.is_some() {
        bail!("--endpoint needs the http health check type (-u http)");
    }
    if let Some(t) = args.app_start_timeout {
        h.start_timeout_secs = Some(t);
    }
    Ok(Some(h))
}

/// The `((NAME))` values: every `--vars-file` in order, then `--var`, later ones winning.
fn manifest_vars(args: &Args) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut vars = std::collections::BTreeMap::new();
    for f in &args.vars_files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the vars file {}", f.display()))?;
        vars.extend(
            paas_common::manifest::parse_vars(&text)
                .map_err(|e| anyhow!("{}: {e}", f.display()))?,
        );
    }
    vars.extend(args.vars.iter().cloned());
    Ok(vars)
}

/// What to push: the manifest's apps (or the one named), with command-line flags on top; or the
/// one folder without a manifest.
fn plans(args: &Args) -> anyhow::Result<Vec<Plan>> {
    // Checked here for a one-line error before the upload; the controller checks it again.
    if let Some(l) = &args.log_rate_limit {
        paas_common::domain::parse_log_rate_limit(l).map_err(anyhow::Error::msg)?;
    }
    let strategy_flags = paas_common::deployment::StrategyInput {
        strategy: args.strategy.clone(),
        steps: args.steps.clone(),
        step_wait: args.step_wait.clone(),
        max_error_rate: args.max_error_rate.clone(),
        max_p99_increase: args.max_p99_increase.clone(),
        min_requests: args.min_requests.clone(),
        grace: args.grace.clone(),
    };
    let flags = PushSettings {
        strategy: strategy_flags.parse().map_err(anyhow::Error::msg)?,
        log_rate_limit: args.log_rate_limit.clone(),
        instances: args.instances,
        memory_mb: args.memory,
        command: args.command.clone(),
        buildpacks: args.buildpack.iter().cloned().collect(),
        placement_labels: (!args.placement.is_empty())
            .then(|| args.placement.iter().cloned().collect()),
        disk_mb: args.disk,
        health: health_flags(args, None)?,
        hostname: args.hostname.clone(),
        random_route: args.random_route,
        no_route: args.no_route,
        dockerfile: args.dockerfile,
        no_start: args.no_start,
        stack: args.stack.clone(),
        no_cache: args.no_cache,
        ..Default::default()
    };
    let Some(file) = find_manifest(args) else {
        if !args.vars.is_empty() || !args.vars_files.is_empty() {
            bail!("--var and --vars-file fill a manifest's ((NAME)) variables, and there is no manifest");
        }
        let path = args.path.clone().unwrap_or_else(|| PathBuf::from("."));
        let name = match &args.name {
            Some(n) => n.clone(),
            None => derive_name(&path)?,
        };
        return Ok(vec![Plan {
            name,
            cron: app_json_cron(&path)?,
            autoscale: None,
            path,
            settings: flags,
        }]);
    };
    let raw = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the manifest {}", file.display()))?;
    let text = paas_common::manifest::interpolate(&raw, &manifest_vars(args)?)
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let manifest =
        paas_common::manifest::parse(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    for w in &manifest.warnings {
        eprintln!("warning: {}: {w}", file.display());
    }
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let apps: Vec<_> = match &args.name {
        // One app without a name in the manifest: NAME names it, as `cf push NAME` does.
        Some(_) if manifest.applications.len() == 1 && manifest.applications[0].name.is_none() => {
            manifest.applications.iter().collect()
        }
        Some(n) => {
            let found: Vec<_> = manifest
                .applications
                .iter()
                .filter(|a| a.name.as_ref() == Some(n))
                .collect();
            if found.is_empty() {
                bail!(
                    "{}: no application named {} (it lists {})",
                    file.display(),
                    n.as_str(),
                    names(&manifest)
                );
            }
            found
        }
        None => manifest.applications.iter().collect(),
    };
    let has_flags = flags.instances.is_some()
        || flags.memory_mb.is_some()
        || flags.command.is_some()
        || !flags.buildpacks.is_empty()
        || flags.placement_labels.is_some()
        || flags.log_rate_limit.is_some()
        || flags.disk_mb.is_some()
        || flags.health.is_some()
        || flags.hostname.is_some()
        || flags.random_route
        || flags.no_route
        || flags.dockerfile
        || args.path.is_some() && args.manifest.is_some();
    if apps.len() > 1 && has_flags {
        bail!(
            "{} lists {} apps: command-line flags apply to one app, give its NAME ({})",
            file.display(),
            apps.len(),
            names(&manifest)
        );
    }
    apps.into_iter()
        .map(|a| {
            let name = a.name_or(args.name.as_ref()).ok_or_else(|| {
                anyhow!(
                    "{}: the application has no `name`: give NAME (`paas push NAME`)",
                    file.display()
                )
            })?;
            let path = match (&args.path, &a.path) {
                (Some(p), _) if args.manifest.is_some() => p.clone(),
                (_, Some(rel)) => base.join(rel),
                (Some(p), None) => p.clone(),
                (None, None) => base.clone(),
            };
            let m = manifest_settings(a).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let buildpacks = if !flags.buildpacks.is_empty() {
                flags.buildpacks.clone()
            } else if flags.dockerfile {
                // `--dockerfile` on the command line replaces the manifest's buildpacks.
                Vec::new()
            } else {
                m.buildpacks
            };
            // A route flag replaces the manifest's route keys, as in `cf push`.
            let route_flag = flags.hostname.is_some() || flags.random_route || flags.no_route;
            let settings = PushSettings {
                instances: flags.instances.or(m.instances),
                memory_mb: flags.memory_mb.or(m.memory_mb),
                command: flags.command.clone().or(m.command),
                env: m.env,
                disk_mb: flags.disk_mb.or(m.disk_mb),
                buildpacks,
                routes: m.routes,
                services: m.services,
                health: health_flags(args, m.health)?,
                processes: m.processes,
                resources: Vec::new(),
                placement_labels: flags.placement_labels.clone().or(m.placement_labels),
                log_rate_limit: flags.log_rate_limit.clone().or(m.log_rate_limit),
                hostname: flags.hostname.clone(),
                random_route: if route_flag {
                    flags.random_route
                } else {
                    m.random_route
                },
                no_route: if route_flag {
                    flags.no_route
                } else {
                    m.no_route
                },
                dockerfile: flags.dockerfile,
                no_start: flags.no_start,
                stack: flags.stack.clone().or(m.stack),
                no_cache: flags.no_cache,
                // Flags win field by field over the manifest's strategy settings.
                strategy: strategy_flags
                    .clone()
                    .or(a.strategy_input())
                    .parse()
                    .map_err(|e| anyhow!("{}: {e}", file.display()))?,
                sidecars: a.sidecar_list(),
            };
            let mut cron = a.cron.clone();
            cron.extend(app_json_cron(&path)?);
            Ok(Plan {
                name,
                path,
                settings,
                cron,
                autoscale: a.autoscale.clone(),
            })
        })
        .collect()
}

/// The push settings one manifest entry states, with no command-line flag on top (`paas apply`
/// pushes a document's app with these; `paas push` lays its flags over them).
pub(crate) fn manifest_settings(a: &AppManifest) -> anyhow::Result<PushSettings> {
    Ok(PushSettings {
        instances: a.instances,
        memory_mb: a.memory,
        command: a.command.clone(),
        env: a.env.clone(),
        disk_mb: a.disk_quota,
        buildpacks: a.all_buildpacks(),
        routes: a.routes.iter().map(|r| r.route.clone()).collect(),
        services: a.services.iter().map(|s| s.name().to_string()).collect(),
        health: a.health().to_settings(),
        processes: a.processes.iter().map(|p| p.to_settings()).collect(),
        placement_labels: a.placement_labels.clone(),
        log_rate_limit: a.log_rate_limit_per_second.clone(),
        random_route: a.random_route,
        no_route: a.no_route,
        stack: a.stack.clone(),
        strategy: a.strategy_input().parse().map_err(anyhow::Error::msg)?,
        ..Default::default()
    })
}

/// Pushes one app of an apply document: its folder with its manifest settings, then its cron
/// entries and autoscaling, as `paas push` does for a manifest's app.
pub(crate) fn push_manifest_app(
    client: &Client,
    a: &AppManifest,
    name: AppName,
    path: PathBuf,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut cron = a.cron.clone();
    cron.extend(app_json_cron(&path)?);
    push_one(
        client,
        Plan {
            name,
            settings: manifest_settings(a)?,
            path,
            cron,
            autoscale: a.autoscale.clone(),
        },
        timeout,
    )
}

fn names(m: &paas_common::manifest::Manifest) -> String {
    m.applications
        .iter()
        .map(|a| a.name.as_ref().map_or("(no name)", |n| n.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `cron` entries of the folder's Dokku `app.json`, if it has one.
fn app_json_cron(dir: &Path) -> anyhow::Result<Vec<paas_common::manifest::CronManifest>> {
    match std::fs::read_to_string(dir.join("app.json")) {
        Ok(text) => paas_common::manifest::app_json_cron(&text).map_err(anyhow::Error::msg),
        Err(_) => Ok(Vec::new()),
    }
}

/// Adds the declared cron entries the app does not have yet (same schedule and command).
fn sync_cron(
    client: &Client,
    name: &AppName,
    declared: &[paas_common::manifest::CronManifest],
) -> anyhow::Result<()> {
    if declared.is_empty() {
        return Ok(());
    }
    let path = format!("/v1/apps/{}/cron", crate::client::seg(name.as_str()));
    let have: Vec<paas_common::api::CronEntry> = client.get_json(&path)?;
    for c in declared {
        if have
            .iter()
            .any(|h| h.schedule == c.schedule.trim() && h.command == c.command.trim())
        {
            continue;
        }
        let e: paas_common::api::CronEntry = client.post_json(
            &path,
            &paas_common::api::AddCronRequest {
                schedule: c.schedule.clone(),
                command: c.command.clone(),
            },
        )?;
        println!("Cron {}: {:?} at {:?}", e.id, e.command, e.schedule);
    }
    Ok(())
}

fn push_one(client: &Client, plan: Plan, timeout: Duration) -> anyhow::Result<()> {
    let Plan {
        name,
        path,
        settings,
        cron,
        autoscale,
    } = plan;
    push_folder(client, &name, path, settings, timeout)?;
    sync_cron(client, &name, &cron)?;
    if let Some(a) = autoscale {
        let path = format!("/v1/apps/{}/autoscale", crate::client::seg(name.as_str()));
        let s: paas_common::api::AutoscaleStatus = client.put_json(&path, &a.request())?;
        println!(
            "Autoscaling {name}: {} to {} web instances",
            s.min_instances, s.max_instances
        );
    }
    Ok(())
}

fn push_folder(
    client: &Client,
    name: &AppName,
    path: PathBuf,
    mut settings: PushSettings,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    archive::check_root(&path)?;
    // Incremental upload: send hashes first, then only the files the server lacks. A server
    // that cannot match (or fails to) just gets everything.
    let scanned = archive::scan(&path)?;
    let request = ResourceMatch {
        resources: scanned
            .iter()
            .map(|f| FileHash {
                sha256: f.sha256.clone(),
                size: f.size,
            })
            .collect(),
    };
    let known: HashSet<String> = match client.match_resources(&request) {
        Ok(r) => r.known.into_iter().collect(),
        // A server without incremental upload answers 404: nothing to say, upload everything.
        Err(crate::client::ClientError::Api { status, .. }) if status.as_u16() == 404 => {
            HashSet::new()
        }
        Err(e) => {
            tracing_free_warning(&e);
            HashSet::new()
        }
    };
    let held: Vec<&archive::ScannedFile> = scanned
        .iter()
        .filter(|f| known.contains(&f.sha256))
        .collect();
    let exclude: HashSet<String> = held.iter().map(|f| f.path.clone()).collect();
    settings.resources = held
        .iter()
        .map(|f| PushResource {
            path: f.path.clone(),
            sha256: f.sha256.clone(),
            size: f.size,
            executable: f.executable,
        })
        .collect();
    let archive = archive::build_excluding(&path, &exclude)?;
    for s in &archive.skipped {
        eprintln!("warning: skipping {}: {}", s.path, s.reason);
    }
    let held_bytes: u64 = held.iter().map(|f| f.size).sum();
    let already = if held.is_empty() {
        String::new()
    } else {
        format!(
            "; {} files, {}, already on the server",
            held.len(),
            human_size(held_bytes)
        )
    };
    if let Some(s) = &settings.strategy {
        println!(
            "Deploying {name} as {}: `paas deployment {name}` follows it",
            s.kind.as_str()
        );
    }
    println!(
        "Uploading {name} ({}, {} files{already})",
        human_size(archive.size),
        archive.files,
    );
    let bar = progress_bar(archive.size);
    let answer = client.push_streamed(
        name.as_str(),
        bar.wrap_read(archive.file),
        archive.size,
        &settings,
    );
    bar.finish_and_clear();
    let no_start = settings.no_start;
    let pushed = match answer? {
        PushAnswer::Stream(lines) => {
            return follow_stream(client, name, *lines, started, timeout, no_start)
        }
        PushAnswer::Plain(app) => *app,
    };
    if no_start {
        print_not_started(name, &pushed);
        return Ok(());
    }
    // Cell lines (crashes, health) of this push, live while we wait.
    let stop = super::logs::spawn_follow(client, name.as_str(), "CELL", chrono::Utc::now());
    let result = wait_until_running(client, name, pushed, started, timeout);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    result
}

/// Says once why the push falls back to a full upload.
fn tracing_free_warning(e: &crate::client::ClientError) {
    eprintln!("warning: cannot match files with the server ({e}); uploading everything");
}

/// What the stream told so far that a timeout message needs.
#[derive(Debug, Default)]
struct Seen {
    running: u32,
    desired: u32,
    /// Why an instance waits for a node, as the scheduler said last.
    unplaced: Option<String>,
}

type StopFlag = std::sync::Arc<std::sync::atomic::AtomicBool>;

fn stop_following(cell: &Option<StopFlag>) {
    if let Some(c) = cell {
        c.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Prints the push's events as they come until its `result`. The `timeout` counts while the push
/// waits: for a node to stage on, and from the new revision on; a running build has the
/// controller's own limit.
fn follow_stream(
    client: &Client,
    name: &AppName,
    lines: PushLines,
    started: Instant,
    timeout: Duration,
    no_start: bool,
) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    // The stream is read on its own thread so the wait for the next line can have a deadline.
    std::thread::spawn(move || {
        for item in lines {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    let mut deadline: Option<Instant> = None;
    let mut cell: Option<StopFlag> = None;
    let mut seen = Seen::default();
    let outcome = loop {
        let next = match deadline {
            None => rx.recv().ok(),
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(item) => Some(item),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    break Err(anyhow!(stream_timeout_message(name, &seen, timeout)));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        let progress = match next {
            Some(Ok(p)) => p,
            Some(Err(e)) => break Err(e.into()),
            None => break Err(anyhow!("the push stream ended without a result")),
        };
        match progress {
            PushProgress::Upload { .. } | PushProgress::Archive { .. } => {}
            PushProgress::Log { source, message } => {
                println!("[{source}] {}", message.trim_end_matches(['\n', '\r']));
            }
            // Waiting for a node counts against the timeout; a running build does not (the
            // controller bounds it). Its `STG` lines already say the same to the reader.
            PushProgress::Staging { node, waiting } => match (node, waiting) {
                (None, Some(why)) => {
                    deadline.get_or_insert_with(|| Instant::now() + timeout);
                    seen.unplaced = Some(format!("waiting for a node to stage on: {why}"));
                }
                _ => {
                    deadline = None;
                    seen.unplaced = None;
                }
            },
            // The `STG` line after it says the same with the start command.
            PushProgress::Droplet { .. } => {}
            PushProgress::Revision { number } => {
                println!("Revision {number} is current: starting its instances");
                deadline = Some(Instant::now() + timeout);
                // Cell lines (crashes, health) of this push, live while it starts.
                cell = Some(super::logs::spawn_follow(
                    client,
                    name.as_str(),
                    "CELL",
                    chrono::Utc::now(),
                ));
            }
            PushProgress::Instances {
                running, desired, ..
            } => {
                seen.running = running;
                seen.desired = desired;
            }
            PushProgress::Instance {
                process_type,
                index,
                state,
                node,
                reason,
            } => {
                if node.is_none() {
                    seen.unplaced.clone_from(&reason);
                }
                println!(
                    "{}",
                    instance_line(
                        &process_type,
                        index,
                        state,
                        node.as_deref(),
                        reason.as_deref()
                    )
                );
            }
            PushProgress::Release {
                task,
                state,
                exit_code,
                reason,
            } => {
                let end = match (exit_code, reason) {
                    (_, Some(why)) => format!(": {why}"),
                    (Some(code), None) => format!(" (exit code {code})"),
                    (None, None) => String::new(),
                };
                println!("Release phase (task {task}): {state}{end}");
            }
            PushProgress::Result(result) => break Ok(result),
        }
    };
    stop_following(&cell);
    finish(client, name, outcome?, started, no_start)
}

/// `web #0: starting on node-a`, `web #1: pending: no node is available ...`.
pub(crate) fn instance_line(
    process_type: &str,
    index: u32,
    state: InstanceState,
    node: Option<&str>,
    reason: Option<&str>,
) -> String {
    let mut line = format!("{process_type} #{index}: {}", state.as_str());
    if let Some(n) = node {
        line.push_str(&format!(" on {n}"));
    }
    if let Some(r) = reason {
        line.push_str(&format!(": {r}"));
    }
    line
}

fn stream_timeout_message(name: &AppName, seen: &Seen, timeout: Duration) -> String {
    let secs = timeout.as_secs();
    match &seen.unplaced {
        Some(why) => format!("{name} did not start within {secs} s: {why}"),
        None => format!(
            "{name} did not start within {secs} s: {}/{} instances running",
            seen.running, seen.desired
        ),
    }
}

/// The push's outcome: the URL and time, or its reason as the one error line (a crash also
/// shows the instances and the recent logs, as polling did).
fn finish(
    client: &Client,
    name: &AppName,
    result: PushResult,
    started: Instant,
    no_start: bool,
) -> anyhow::Result<()> {
    match (result.status, result.app) {
        (PushStatus::Succeeded, Some(detail)) if no_start => {
            print_not_started(name, &detail);
            Ok(())
        }
        (PushStatus::Succeeded, Some(detail)) => {
            print_running(name, &detail, started);
            if let Some(p) = &result.phases {
                println!("{}", phases_line(p));
            }
            Ok(())
        }
        (PushStatus::Succeeded, None) => {
            println!(
                "{name} is running ({:.1} s)",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        (PushStatus::Failed, app) => {
            let msg = ApiError {
                code: result.code.unwrap_or_else(|| "push_failed".into()),
                message: result
                    .message
                    .unwrap_or_else(|| "the push failed and the server gave no reason".into()),
            }
            .to_string();
            match app {
                Some(detail)
                    if detail
                        .instances
                        .iter()
                        .any(|i| i.state == InstanceState::Crashed || i.restarts > 0) =>
                {
                    fail(client, &detail, msg)
                }
                _ => bail!(msg),
            }
        }
    }
}

/// `Phases: upload 0.04 s, stage 0.21 s (droplet reused), start 0.35 s, health 0.12 s, route
/// 0.00 s`: where the push's time went, as the controller measured it (issue 24).
pub(crate) fn phases_line(p: &PushPhases) -> String {
    let s = |ms: u64| format!("{:.2} s", ms as f64 / 1000.0);
    let reused = match p.reused.as_str() {
        "droplet" => " (droplet reused)",
        "layers" => " (staged layers reused)",
        "dependencies" => " (dependencies reused)",
        _ => "",
    };
    format!(
        "Phases: upload {}, stage {}{reused}, start {}, health {}, route {}",
        s(p.upload_ms),
        s(p.stage_ms),
        s(p.start_ms),
        s(p.health_ms),
        s(p.route_ms)
    )
}

/// `--no-start`: staged and recorded, not running.
fn print_not_started(name: &AppName, detail: &AppDetail) {
    let revision = detail
        .revision
        .as_ref()
        .map(|r| format!(" as revision {}", r.number))
        .unwrap_or_default();
    println!(
        "{name} is staged{revision} and stopped (--no-start): `paas start {}` runs it",
        shell_word(name.as_str())
    );
}

/// A name as one shell word, quoted when it holds a space.
fn shell_word(s: &str) -> String {
    if s.contains(' ') {
        format!("'{s}'")
    } else {
        s.to_string()
    }
}

fn print_running(name: &AppName, detail: &AppDetail, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    match &detail.revision {
        Some(r) => println!(
            "{name} is running at {} (revision {}, {secs:.1} s)",
            detail.url, r.number
        ),
        None => println!("{name} is running at {} ({secs:.1} s)", detail.url),
    }
    let unready = detail
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running && !i.ready)
        .count();
    if unready > 0 {
        // Running, but its readiness check does not pass yet: it gets no traffic.
        println!("{unready} instance(s) not ready yet: out of the routes until their readiness check passes");
    }
}

/// The app name a folder gives: its name as a route host label ([`name_from_folder`]).
pub fn derive_name(path: &Path) -> anyhow::Result<AppName> {
    let abs =
        std::fs::canonicalize(path).with_context(|| format!("cannot read {}", path.display()))?;
    let folder = abs
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .ok_or_else(|| {
            anyhow!(
                "cannot derive an app name from {}: give NAME",
                abs.display()
            )
        })?;
    let candidate = name_from_folder(&folder);
    AppName::parse(&candidate)
        .map_err(|e| anyhow!("cannot use folder name {folder:?} as the app name: {e}; give NAME"))
}

/// The folder's name as a route host label would be (`My_App.v2` -> `my-app-v2`), so the app's
/// host is its name.
fn name_from_folder(folder: &str) -> String {
    paas_common::domain::host_label(folder)
}

/// A byte progress bar on stderr, or a hidden one when stderr is not a terminal.
fn progress_bar(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec}")
    {
        bar.set_style(style);
    }
    bar
}

/// Where a push stands, judged from one `AppDetail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every desired instance runs.
    Running,
    /// An instance of this push crashed; the message says which and why.
    Crashed(String),
    /// Not there yet; the status line to show.
    Waiting(String),
}

/// Judges `d`. Instances of another revision than the pushed one are from before this push:
/// they neither count as running nor as crashed. (Servers that do not report an instance's
/// revision: instances whose `since` is well before `fresh_after`, the revision's creation.)
pub fn assess(d: &AppDetail, fresh_after: Option<DateTime<Utc>>) -> Progress {
    let current = d.revision.as_ref().map(|r| r.number);
    let fresh = |i: &&InstanceInfo| match (i.revision, current, i.since, fresh_after) {
        (Some(rev), Some(cur), _, _) => rev == cur,
        (_, _, Some(since), Some(after)) => since >= after - chrono::Duration::seconds(2),
        _ => true,
    };
    if let Some(i) =
        d.instances.iter().filter(fresh).find(|i| {
            i.state == InstanceState::Crashed && (i.restarts >= 1 || i.last_exit.is_some())
        })
    {
        let why = i
            .last_exit
            .clone()
            .unwrap_or_else(|| format!("restarted {} times", i.restarts));
        return Progress::Crashed(format!(
            "{} failed to start: instance {} ({}) crashed ({why})",
            d.name, i.index, i.process_type
        ));
    }
    let desired = d.desired_instances;
    let running = d
        .instances
        .iter()
        .filter(fresh)
        // `desired_instances` counts web; other process types have their own counts.
        .filter(|i| i.state == InstanceState::Running && i.process_type == "web")
        .count() as u32;
    if running >= desired {
        return Progress::Running;
    }
    let mut others: Vec<String> = Vec::new();
    for st in [
        InstanceState::Starting,
        InstanceState::Pending,
        InstanceState::Crashed,
        InstanceState::Stopping,
    ] {
        let n = d.instances.iter().filter(|i| i.state == st).count();
        if n > 0 {
            others.push(format!("{n} {}", st.as_str()));
        }
    }
    let plural = if desired == 1 {
        "instance"
    } else {
        "instances"
    };
    let mut line = format!("Starting {desired} {plural} ... {running}/{desired} running");
    if !others.is_empty() {
        line.push_str(&format!(" ({})", others.join(", ")));
    }
    Progress::Waiting(line)
}

/// The one-line error after the timeout: the server's placement error if an instance could not be
/// placed (it says "no node is available" when no node is ready), else the running count.
pub fn timeout_message(d: &AppDetail, timeout: Duration) -> String {
    let secs = timeout.as_secs();
    let unplaced = d
        .instances
        .iter()
        .find(|i| i.state == InstanceState::Pending && i.placement_error.is_some());
    if let Some(msg) = unplaced.and_then(|i| i.placement_error.as_deref()) {
        return format!("{} did not start within {secs} s: {msg}", d.name);
    }
    let running = d
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count();
    format!(
        "{} did not start within {secs} s: {running}/{} instances running",
        d.name, d.desired_instances
    )
}

/// One line per instance: index, state, and why (last exit or placement error).
pub fn instance_report(d: &AppDetail) -> Vec<String> {
    if d.instances.is_empty() {
        return vec![format!(
            "  no instances reported (desired: {})",
            d.desired_instances
        )];
    }
    d.instances
        .iter()
        .map(|i| {
            let mut s = format!(
                "  instance {} ({}): {}",
                i.index,
                i.process_type,
                i.state.as_str()
            );
            if let Some(node) = &i.node {
                s.push_str(&format!(" on {node}"));
            }
            match i.restarts {
                0 => {}
                1 => s.push_str(", 1 restart"),
                n => s.push_str(&format!(", {n} restarts")),
            }
            if let Some(e) = i.last_exit.as_ref().or(i.placement_error.as_ref()) {
                s.push_str(&format!(": {e}"));
            }
            s
        })
        .collect()
}

pub(crate) fn wait_until_running(
    client: &Client,
    name: &AppName,
    pushed: AppDetail,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let fresh_after = pushed.revision.as_ref().map(|r| r.created_at);
    let mut detail = pushed;
    let mut last_line = String::new();
    loop {
        match assess(&detail, fresh_after) {
            Progress::Running => {
                print_running(name, &detail, started);
                return Ok(());
            }
            Progress::Crashed(msg) => return fail(client, &detail, msg),
            Progress::Waiting(line) => {
                if line != last_line {
                    println!("{line}");
                    last_line = line;
                }
            }
        }
        if Instant::now() >= deadline {
            let msg = timeout_message(&detail, timeout);
            return fail(client, &detail, msg);
        }
        std::thread::sleep(POLL_EVERY);
        detail = client.get_app(name.as_str())?;
    }
}

/// Prints why (to stdout, so stderr keeps its one `error:` line), then the recent logs.
pub(crate) fn fail(client: &Client, d: &AppDetail, msg: String) -> anyhow::Result<()> {
    println!("Instances of {}:", d.name);
    for line in instance_report(d) {
        println!("{line}");
    }
    match client.recent_logs(&d.name, FAILURE_LOG_LINES) {
        Ok(list) if list.lines.is_empty() => println!("No log lines yet."),
        Ok(list) => {
            println!("Last {} log lines:", list.lines.len());
            for l in &list.lines {
                println!("{}", log_line(l));
            }
        }
        Err(e) => println!("Cannot fetch the logs: {e}"),
    }
    bail!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use paas_common::api::{AppState, RevisionInfo};

    fn inst(index: u32, state: InstanceState) -> InstanceInfo {
        InstanceInfo {
            ready: true,
            retiring: false,
            process_type: "web".into(),
            index,
            revision: None,
            state,
            node: None,
            address: None,
            ip: None,
            restarts: 0,
            last_exit: None,
            placement_error: None,
            since: None,
            usage: None,
        }
    }

    fn app(desired: u32, instances: Vec<InstanceInfo>) -> AppDetail {
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        AppDetail {
            placement_labels: Default::default(),
            log_rate_limit_bytes: None,
            stack: "trixie".into(),
            services: vec![],
            processes: Vec::new(),
            name: "web".into(),
            state: AppState::Started,
            url: "http://web.localhost:8080".into(),
            desired_instances: desired,
            memory_mb: 256,
            revision: Some(RevisionInfo {
                number: 2,
                droplet: "d".into(),
                command: "c".into(),
                detected: "python".into(),
                created_at: t,
                sidecars: Vec::new(),
            }),
            instances,
            created_at: t,
            updated_at: t,
        }
    }

    #[test]
    fn phases_show_seconds_and_what_was_reused() {
        let p = PushPhases {
            upload_ms: 40,
            stage_ms: 8380,
            start_ms: 1170,
            health_ms: 520,
            route_ms: 0,
            reused: "dependencies".into(),
        };
        assert_eq!(
            phases_line(&p),
            "Phases: upload 0.04 s, stage 8.38 s (dependencies reused), start 1.17 s, \
             health 0.52 s, route 0.00 s"
        );
        let layers = PushPhases {
            reused: "layers".into(),
            ..p.clone()
        };
        assert!(phases_line(&layers).contains("stage 8.38 s (staged layers reused), start"));
        let none = PushPhases {
            reused: "none".into(),
            ..p
        };
        assert!(!phases_line(&none).contains("reused"));
    }

    #[test]
    fn names_from_folders() {
        assert_eq!(name_from_folder("My_App.v2"), "my-app-v2");
        assert_eq!(name_from_folder("web"), "web");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("Hello World");
        std::fs::create_dir(&p).unwrap();
        assert_eq!(derive_name(&p).unwrap().as_str(), "hello-world");
        let bad = d.path().join("___");
        std::fs::create_dir(&bad).unwrap();
        let msg = derive_name(&bad).unwrap_err().to_string();
        assert!(msg.contains("give NAME"), "{msg}");
    }

    #[test]
    fn waiting_then_running() {
        let d = app(
            2,
            vec![
                inst(0, InstanceState::Running),
                inst(1, InstanceState::Starting),
            ],
        );
        assert_eq!(
            assess(&d, None),
            Progress::Waiting("Starting 2 instances ... 1/2 running (1 starting)".into())
        );
        let d = app(
            2,
            vec![
                inst(0, InstanceState::Running),
                inst(1, InstanceState::Running),
            ],
        );
        assert_eq!(assess(&d, None), Progress::Running);
        let d = app(1, vec![]);
        assert_eq!(
            assess(&d, None),
            Progress::Waiting("Starting 1 instance ... 0/1 running".into())
        );
    }

    #[test]
    fn a_crash_after_a_restart_or_with_an_exit_fails() {
        let mut c = inst(1, InstanceState::Crashed);
        // Crashed without restarts or exit reason yet: keep waiting.
        let d = app(2, vec![inst(0, InstanceState::Running), c.clone()]);
        assert!(matches!(assess(&d, None), Progress::Waiting(_)));
        c.last_exit = Some("exited with code 1".into());
        let d = app(2, vec![inst(0, InstanceState::Running), c.clone()]);
        assert_eq!(
            assess(&d, None),
            Progress::Crashed(
                "web failed to start: instance 1 (web) crashed (exited with code 1)".into()
            )
        );
        c.last_exit = None;
        c.restarts = 1;
        assert!(matches!(
            assess(&app(2, vec![c]), None),
            Progress::Crashed(_)
        ));
    }

    #[test]
    fn instances_from_before_the_push_do_not_count() {
        let rev_at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let mut old = inst(0, InstanceState::Running);
        old.since = Some(rev_at - chrono::Duration::minutes(10));
        let d = app(1, vec![old.clone()]);
        assert!(matches!(assess(&d, Some(rev_at)), Progress::Waiting(_)));
        old.since = Some(rev_at + chrono::Duration::seconds(3));
        assert_eq!(assess(&app(1, vec![old]), Some(rev_at)), Progress::Running);
    }

    #[test]
    fn timeout_names_the_placement_error() {
        let mut p = inst(0, InstanceState::Pending);
        p.placement_error = Some("no node is available with 256 MB free".into());
        let d = app(1, vec![p]);
        assert_eq!(
            timeout_message(&d, Duration::from_secs(3)),
            "web did not start within 3 s: no node is available with 256 MB free"
        );
        assert_eq!(
            instance_report(&d),
            ["  instance 0 (web): pending: no node is available with 256 MB free"]
        );
        let d = app(
            2,
            vec![
                inst(0, InstanceState::Running),
                inst(1, InstanceState::Starting),
            ],
        );
        assert_eq!(
            timeout_message(&d, Duration::from_secs(180)),
            "web did not start within 180 s: 1/2 instances running"
        );
    }

    fn args(list: &[&str]) -> Args {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: Args,
        }
        T::try_parse_from(std::iter::once("push").chain(list.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn a_cf_manifest_as_written_with_vars_and_flags() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("manifest.yml"),
            "applications:\n- name: ((name))\n  random-route: true\n  instances: ((n))\n  buildpacks: [python_buildpack]\n  timeout: 30\n",
        )
        .unwrap();
        std::fs::write(d.path().join("vars.yml"), "name: GetStartedPython\nn: 1\n").unwrap();
        let dir = d.path().to_str().unwrap();
        let vars = d.path().join("vars.yml");
        let p = plans(&args(&[
            "-p",
            dir,
            "--vars-file",
            vars.to_str().unwrap(),
            "--var",
            "n=3",
            "-k",
            "2G",
            "--no-start",
        ]))
        .unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name.as_str(), "GetStartedPython");
        let s = &p[0].settings;
        assert_eq!(s.instances, Some(3), "--var wins over the vars file");
        assert!(s.random_route && !s.no_route && s.no_start);
        assert_eq!(s.disk_mb, Some(2048));
        assert_eq!(s.buildpacks, vec!["python".to_string()]);
        assert_eq!(s.health.as_ref().unwrap().start_timeout_secs, Some(30));
        // A route flag replaces the manifest's route keys; -t the manifest's timeout.
        let p = plans(&args(&[
            "-p",
            dir,
            "--vars-file",
            vars.to_str().unwrap(),
            "--no-route",
            "-t",
            "5",
        ]))
        .unwrap();
        assert!(p[0].settings.no_route && !p[0].settings.random_route);
        assert_eq!(
            p[0].settings.health.as_ref().unwrap().start_timeout_secs,
            Some(5)
        );
        let e = plans(&args(&["-p", dir])).err().unwrap().to_string();
        assert!(e.contains("((name))") && e.contains("--var"), "{e}");
    }

    #[test]
    fn a_manifest_without_a_name_takes_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("manifest.yml"),
            "applications:\n- memory: 64M\n",
        )
        .unwrap();
        let dir = d.path().to_str().unwrap();
        let p = plans(&args(&["My App", "-p", dir])).unwrap();
        assert_eq!(p[0].name.as_str(), "My App");
        assert_eq!(p[0].settings.memory_mb, Some(64));
        let e = plans(&args(&["-p", dir])).err().unwrap().to_string();
        assert!(e.contains("no `name`"), "{e}");
    }
}
