//! A push's deploy steps once its upload passed every check (`api/apps` reads and checks the
//! upload into a [`Prepared`]): the app found or created in its space, staging on a node (or the
//! server-side fallback when no node is ready), the droplet's process commands and image, the
//! manifest's settings, and the new revision. The plain push and the streamed push run the same
//! [`deploy`]; the streamed one hears each step through [`Progress`].

use paas_common::api::{AppState, PushProgress};
use paas_common::domain::AppName;
use paas_common::route::RouteSpec;
use paas_common::ErrorCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc;

use super::{Actor, DeployError, DeployResult};
use crate::state::AppCtx;
use crate::store::{AppRecord, NewRevision};

/// Where a push reports its steps; `none()` for the plain (one JSON answer) push.
#[derive(Clone)]
pub struct Progress {
    tx: Option<mpsc::UnboundedSender<PushProgress>>,
    marks: Arc<Mutex<Marks>>,
}

/// What the streamed push's phases (issue 24) need from the deploy steps.
#[derive(Debug, Default)]
struct Marks {
    /// When the new revision became current: the end of the `stage` phase.
    revision: Option<Instant>,
    reused: Option<&'static str>,
}

impl Progress {
    pub fn none() -> Self {
        Self {
            tx: None,
            marks: Arc::default(),
        }
    }

    /// Steps go to `tx` (the streamed push's answer).
    pub fn to(tx: mpsc::UnboundedSender<PushProgress>) -> Self {
        Self {
            tx: Some(tx),
            marks: Arc::default(),
        }
    }

    pub fn send(&self, p: PushProgress) {
        if let Some(tx) = &self.tx {
            if matches!(p, PushProgress::Revision { .. }) {
                self.marks().revision = Some(Instant::now());
            }
            // A client that went away no longer reads; the push goes on.
            let _ = tx.send(p);
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.marks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Staging reused earlier work (see [`super::staging::Built::reused`]).
    pub fn note_reused(&self, what: &'static str) {
        self.marks().reused = Some(what);
    }

    /// When the revision became current, if it did.
    pub fn revision_at(&self) -> Option<Instant> {
        self.marks().revision
    }

    /// `droplet`, `dependencies` or `none`.
    pub fn reused(&self) -> &'static str {
        self.marks().reused.unwrap_or("none")
    }
}

/// The settings stored on the app for later work (buildpacks, routes, health, processes).
pub fn stored_json(s: &paas_common::api::PushSettings) -> String {
    serde_json::json!({
        "buildpacks": s.buildpacks,
        "routes": s.routes,
        "health": s.health,
        "processes": s.processes,
        "stack": s.stack,
    })
    .to_string()
}

/// The stack stored with the app's push settings (see [`stored_json`]), if a push recorded one
/// that is still known.
pub fn stored_stack(push_settings: &str) -> Option<&'static str> {
    let v: serde_json::Value = serde_json::from_str(push_settings).ok()?;
    paas_common::stack::resolve(v.get("stack")?.as_str()?).ok()
}

/// The stack a push stages on: the one it names, else the app's own (Cloud Foundry keeps an
/// app's stack until a push names another), else the default for a new app.
async fn push_stack(ctx: &AppCtx, app: &AppRecord, named: Option<&str>) -> DeployResult<String> {
    if let Some(named) = named {
        return Ok(named.to_string());
    }
    let stored = ctx.store.app_push_settings(&app.id).await?;
    Ok(stored_stack(&stored)
        .unwrap_or(paas_common::stack::DEFAULT)
        .to_string())
}

/// Whether `spec` is the app's own default route (a manifest may list it; it is implicit).
pub(crate) fn is_default_of(ctx: &AppCtx, app: Option<&AppRecord>, spec: &RouteSpec) -> bool {
    spec.path.is_empty()
        && app.and_then(|a| a.host.as_deref()).is_some_and(|h| {
            spec.host
                .strip_suffix(ctx.settings.apps_domain.as_str())
                .and_then(|l| l.strip_suffix('.'))
                == Some(h)
        })
}

/// The manifest's `routes:`, parsed and checked for the space (its domain, its host), each
/// refusal naming the route.
pub async fn check_manifest_routes(
    ctx: &AppCtx,
    space_id: &str,
    name: &AppName,
    routes: &[String],
) -> DeployResult<Vec<RouteSpec>> {
    if routes.is_empty() {
        return Ok(Vec::new());
    }
    let app = ctx.store.app_in_space(space_id, name.as_str()).await?;
    let mut out = Vec::with_capacity(routes.len());
    for r in routes {
        let spec = RouteSpec::parse(r).map_err(|e| {
            DeployError::invalid(ErrorCode::InvalidRoute, format!("manifest routes: {e}"))
        })?;
        if !is_default_of(ctx, app.as_ref(), &spec) {
            super::domains::check_route(ctx, space_id, &spec, None).await?;
        }
        out.push(spec);
    }
    Ok(out)
}

/// Maps the manifest's routes to the app after its revision (a route it already has keeps its
/// options), and drops the default route of an existing app pushed with `no-route: true`.
async fn apply_routes(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    routes: &[RouteSpec],
    no_route: bool,
) -> DeployResult<()> {
    if no_route && app.host.is_some() {
        let ev = crate::store::Event {
            app_name: Some(app.name.clone()),
            app_id: Some(app.id.clone()),
            actor: actor.actor.clone(),
            kind: "route.unmap".into(),
            message: format!("removed the default route of {} (no-route)", app.name),
        };
        ctx.store.clear_app_host(&app.id, &ev).await?;
        crate::router::refresh(ctx).await?;
    }
    for spec in routes {
        if !no_route && is_default_of(ctx, Some(app), spec) {
            continue;
        }
        super::domains::map_route(ctx, actor, app, spec, None, None).await?;
    }
    Ok(())
}

/// A push whose upload and archive passed every check: what staging and deploying need.
pub struct Prepared {
    pub name: AppName,
    /// The space a new app is created in (checked by `PushTarget`).
    pub space_id: String,
    pub package_sha: String,
    pub package_size: u64,
    pub droplet_sha: String,
    pub droplet_size: u64,
    pub unpacked: crate::archive::Unpacked,
    pub tree: String,
    pub extra: paas_common::api::PushSettings,
    pub instances: Option<u32>,
    pub memory_mb: Option<u64>,
    pub command: Option<String>,
    pub staged: crate::staging::Staged,
    /// Build the app's Dockerfile on the node instead of running buildpacks.
    pub dockerfile: bool,
    /// How the app is built and why, for the push output (`staging::choose_build`).
    pub build_choice: String,
}

/// Stages (on a node, or the fallback) and deploys a checked push as a new revision; returns the
/// app. Progress goes to `progress` (a streamed push) as it happens.
pub async fn deploy(
    ctx: &AppCtx,
    actor: &Actor,
    prep: Prepared,
    progress: &Progress,
) -> DeployResult<AppRecord> {
    let Prepared {
        name,
        space_id,
        package_sha,
        package_size,
        droplet_sha,
        droplet_size,
        unpacked,
        tree,
        mut extra,
        instances,
        memory_mb,
        command,
        staged,
        dockerfile,
        build_choice,
    } = prep;
    // The manifest's routes are checked before anything changes, so a route under another
    // space's domain refuses the whole push.
    let routes = check_manifest_routes(ctx, &space_id, &name, &extra.routes).await?;
    // So are its services: an unknown one refuses the push, naming it.
    let services =
        super::services::check_manifest_services(ctx, &space_id, &extra.services).await?;
    check_quota(ctx, &name, &space_id, &extra, instances, memory_mb).await?;
    let sidecars = push_sidecars(
        ctx,
        &space_id,
        &name,
        &extra,
        memory_mb,
        unpacked.procfile.as_deref(),
    )
    .await?;
    let app = super::find_or_create_app(ctx, actor, &name, &space_id, &(&extra).into()).await?;
    super::log_platform(ctx, &app, "STG", build_choice).await;
    // Stored with the app's settings below, so the next push without a stack keeps it.
    let stack = push_stack(ctx, &app, extra.stack.as_deref()).await?;
    extra.stack = Some(stack.clone());
    // Issue 3: buildpacks run on a node (after the app exists, so its STG lines can be read
    // while staging runs); the checked app tar above is their source. With no
    // ready node, the tar itself is the droplet and the detected command runs it (the fallback).
    let mut image = None;
    let mut declared = unpacked
        .procfile
        .as_deref()
        .map(|p| crate::staging::parse_procfile(p).into_iter().collect())
        .unwrap_or_default();
    let (droplet_sha, droplet_size, staged) = match super::staging::stage_on_node(
        ctx,
        &app,
        &droplet_sha,
        &tree,
        &extra.buildpacks,
        dockerfile,
        extra.placement_labels.as_ref(),
        super::staging::StageOptions {
            stack: &stack,
            no_cache: extra.no_cache,
            cache_scope: &space_id,
        },
        progress,
    )
    .await?
    {
        Some(built) => {
            progress.note_reused(built.reused);
            declared = built.processes.clone();
            image = built.image.clone();
            let command = command
                .clone()
                .or_else(|| built.processes.get("web").cloned())
                .ok_or_else(|| {
                    DeployError::invalid(
                        ErrorCode::StagingFailed,
                        format!(
                            "staging found no `web` process (found: {})",
                            built
                                .processes
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
            (
                built.droplet,
                built.size,
                crate::staging::Staged {
                    detected: built.buildpack,
                    command,
                },
            )
        }
        None if dockerfile => {
            return Err(DeployError::invalid(
                ErrorCode::StagingFailed,
                "a Dockerfile is built on a node's engine and no node is ready: try again when one is",
            ));
        }
        // Only a node runs buildpacks: without one, an app that has no command before staging
        // (only added buildpacks detect it, or a buildpack must install it first) cannot run.
        None if staged.command.is_empty() => {
            return Err(DeployError::invalid(
                ErrorCode::NotAnApp,
                format!(
                    "this app needs staging on a node ({}) and no node is ready: try again when one is",
                    staged.detected
                ),
            ));
        }
        None => (droplet_sha, droplet_size, staged),
    };
    progress.send(PushProgress::Droplet {
        sha256: droplet_sha.clone(),
        bytes: droplet_size,
        buildpack: staged.detected.clone(),
    });
    // `paas apply` compares an app's folder with this digest to push only what changed.
    ctx.store.set_droplet_tree(&droplet_sha, &tree).await?;
    let desired = instances.unwrap_or(app.desired_instances);
    let memory = memory_mb.unwrap_or(app.memory_mb);
    super::log_platform(
        ctx,
        &app,
        "STG",
        format!(
            "Staged {} files ({} bytes) with {}: web: {} (droplet {} bytes)",
            unpacked.files, unpacked.bytes, staged.detected, staged.command, droplet_size
        ),
    )
    .await;
    // Env carries over from the current revision (like Heroku config vars); the push's own
    // `env` field is applied on top.
    let mut env = match app.current_revision {
        Some(n) => ctx
            .store
            .revision(&app.id, n)
            .await?
            .map(|r| r.env)
            .unwrap_or_default(),
        None => Default::default(),
    };
    env.extend(std::mem::take(&mut extra.env));
    // The manifest's services are bound now (the broker's bind; no revision of their own), and
    // this revision carries the env of every binding the app has.
    super::services::bind_manifest_services(ctx, &app, &services).await?;
    super::services::overlay_env(ctx, &app.id, &mut env).await?;
    let stored = stored_json(&extra);
    // The manifest's health (liveness and readiness) applies on top of the app's current check.
    let health = match &extra.health {
        Some(h) => {
            let current = ctx
                .store
                .app_lifecycles()
                .await?
                .remove(&app.id)
                .and_then(|l| l.health)
                .unwrap_or_default();
            Some(super::lifecycle::manifest_health(&current, h)?)
        }
        None => None,
    };
    let log_rate_limit = extra
        .log_rate_limit
        .as_deref()
        .map(super::lifecycle::log_rate_limit)
        .transpose()?;
    // Heroku's release phase: once, on the new droplet with the new env, before any instance
    // of it exists; if it fails nothing of this push becomes current.
    if let Some(release) = declared.get(crate::control::desired::RELEASE_PROCESS) {
        super::tasks::run_release(
            ctx,
            actor,
            &app,
            &super::tasks::Release {
                droplet: &droplet_sha,
                command: release,
                env: &env,
                revision: app.current_revision.unwrap_or(0) + 1,
            },
            progress,
            std::time::Duration::from_secs(ctx.settings.staging_timeout_secs.max(60)),
        )
        .await?;
    }
    // Process types: the droplet's commands first, so no revision runs without them.
    ctx.store
        .set_droplet_processes(&droplet_sha, &declared)
        .await?;
    if let Some(image) = &image {
        ctx.store.set_droplet_image(&droplet_sha, image).await?;
    }
    super::lifecycle::apply_manifest_processes(ctx, &app, actor, &extra.processes).await?;
    let number = super::revisions::deploy_revision(
        ctx,
        actor,
        &app,
        &NewRevision {
            package: package_sha.clone(),
            droplet: droplet_sha,
            command: staged.command.clone(),
            detected: staged.detected.clone(),
            desired_instances: desired,
            memory_mb: memory,
        },
        &crate::store::RevisionExtra {
            env,
            created_by: actor.username.clone(),
            description: "push".into(),
            disk_mb: extra.disk_mb,
            push_settings: Some(stored),
            health,
            placement_labels: extra.placement_labels.clone(),
            log_rate_limit,
            // `--no-start`: the revision is made with the app stopped; `paas start` runs it.
            no_start: extra.no_start,
            sidecars,
        },
        "app.push",
        format!(
            "pushed package {} ({package_size} bytes)",
            &package_sha[..12]
        ),
    )
    .await?;
    progress.send(PushProgress::Revision { number });
    // Issue 23: a canary or blue-green push keeps the old revision serving beside this one.
    if let Some(strategy) = &extra.strategy {
        if !extra.no_start {
            super::deployments::start(ctx, &app, number, strategy).await?;
        }
    }
    apply_routes(ctx, actor, &app, &routes, extra.no_route).await?;
    super::log_platform(
        ctx,
        &app,
        "API",
        format!(
            "{} pushed revision {number}: {desired} instance(s) of {memory} MB{}",
            actor.username,
            log_rate_limit.map_or_else(String::new, |l| format!(
                ", log rate limit {}",
                super::lifecycle::describe_log_rate_limit(l)
            ))
        ),
    )
    .await;
    ctx.converge.notify_one();
    super::reload(ctx, &app).await
}

/// The sidecars of the push's revision: the manifest's, else the current revision's. Checked
/// before anything changes against the process types the app will have (`web`, the uploaded
/// Procfile's, the manifest's `processes`) and the memory each will run with.
async fn push_sidecars(
    ctx: &AppCtx,
    space_id: &str,
    name: &AppName,
    extra: &paas_common::api::PushSettings,
    memory_mb: Option<u64>,
    procfile: Option<&str>,
) -> DeployResult<Vec<paas_common::api::Sidecar>> {
    let existing = ctx.store.app_in_space(space_id, name.as_str()).await?;
    let sidecars = match (&extra.sidecars, &existing) {
        (Some(s), _) => s.clone(),
        (None, Some(app)) => match app.current_revision {
            Some(n) => ctx
                .store
                .revision(&app.id, n)
                .await?
                .map(|r| r.sidecars)
                .unwrap_or_default(),
            None => Vec::new(),
        },
        (None, None) => Vec::new(),
    };
    if sidecars.is_empty() {
        return Ok(sidecars);
    }
    let procfile: Vec<String> = procfile
        .map(crate::staging::parse_procfile)
        .unwrap_or_default()
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let mut known: Vec<&str> = vec!["web"];
    known.extend(procfile.iter().map(String::as_str));
    known.extend(extra.processes.iter().map(|p| p.process_type.as_str()));
    let web = memory_mb
        .or(existing.as_ref().map(|a| a.memory_mb))
        .unwrap_or(ctx.settings.default_memory_mb);
    paas_common::api::check_sidecars_fit(&sidecars, &known, |t| {
        Some(
            extra
                .processes
                .iter()
                .find(|p| p.process_type == t)
                .and_then(|p| p.memory_mb)
                .unwrap_or(web),
        )
    })
    .map_err(|m| DeployError::invalid(ErrorCode::InvalidSidecar, m))?;
    Ok(sidecars)
}

/// Refuses a push that would take its space past its quota, before anything is staged: the app
/// it makes (and its default route), or the instances and memory it gives an existing one.
async fn check_quota(
    ctx: &AppCtx,
    name: &AppName,
    space_id: &str,
    extra: &paas_common::api::PushSettings,
    instances: Option<u32>,
    memory_mb: Option<u64>,
) -> DeployResult<()> {
    let existing = ctx.store.app_in_space(space_id, name.as_str()).await?;
    let mut after = existing.clone().unwrap_or_else(|| AppRecord {
        id: String::new(),
        name: name.to_string(),
        state: AppState::Started,
        desired_instances: 1,
        memory_mb: ctx.settings.default_memory_mb,
        disk_mb: ctx.settings.default_disk_mb,
        current_revision: None,
        created_at: chrono::Utc::now(),
        updated_at: chrono::Utc::now(),
        space_id: space_id.to_string(),
        host: None,
    });
    after.desired_instances = instances.unwrap_or(after.desired_instances);
    after.memory_mb = memory_mb.unwrap_or(after.memory_mb);
    after.state = if extra.no_start {
        AppState::Stopped
    } else {
        AppState::Started
    };
    let footprint = super::quota::footprint(ctx, &after).await?;
    let new = u64::from(existing.is_none());
    super::quota::check(
        ctx,
        space_id,
        &super::quota::Change {
            app_id: existing.as_ref().map(|a| a.id.as_str()),
            footprint,
            new_apps: new,
            new_routes: if extra.no_route { 0 } else { new },
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_stack_is_read_back_from_the_push_settings() {
        let settings = paas_common::api::PushSettings {
            stack: Some("bookworm".into()),
            ..Default::default()
        };
        assert_eq!(stored_stack(&stored_json(&settings)), Some("bookworm"));
        // Settings stored before stacks were kept, or by no push at all.
        assert_eq!(stored_stack(&stored_json(&Default::default())), None);
        assert_eq!(stored_stack("{}"), None);
        assert_eq!(stored_stack("not json"), None);
        // A stack no longer offered is not used again.
        assert_eq!(stored_stack(r#"{"stack":"windows2016"}"#), None);
        assert_eq!(stored_stack(r#"{"stack":"cflinuxfs3"}"#), Some("bookworm"));
    }
}
