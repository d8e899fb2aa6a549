//! Staging a push on a node: the build is placed like an instance (ready node, the app's
//! placement labels, free memory and disk on the scheduler's own count plus builds in flight),
//! waits with a visible reason while nothing fits, and its result (droplet, process commands,
//! Dockerfile image) comes back through `api/builds`. An unchanged tree with the same buildpacks
//! reuses its earlier droplet.

use paas_common::api::PushProgress;
use paas_common::ErrorCode;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{DeployError, DeployResult};
use crate::state::AppCtx;
use crate::store::AppRecord;

/// Operator buildpacks, in detection order: part of what a build depends on.
async fn custom_buildpacks(ctx: &AppCtx) -> DeployResult<Vec<paas_common::agent::CustomBuildpack>> {
    Ok(ctx
        .store
        .list_buildpacks()
        .await?
        .into_iter()
        .map(|b| paas_common::agent::CustomBuildpack {
            name: b.name,
            sha256: b.blob,
        })
        .collect())
}

/// The base images an operator allowed for Dockerfile builds.
async fn allowed_base_images(ctx: &AppCtx) -> DeployResult<Vec<String>> {
    Ok(ctx
        .store
        .list_base_images()
        .await?
        .into_iter()
        .map(|b| b.name)
        .collect())
}

/// What a node's staging produced.
pub struct Built {
    pub droplet: String,
    pub size: u64,
    pub buildpack: String,
    pub processes: std::collections::BTreeMap<String, String>,
    /// Set when the droplet is an image built from a Dockerfile.
    pub image: Option<paas_common::agent::DropletImage>,
    /// What earlier work it reused: `droplet` (the build cache), `layers` (the node's staged
    /// layers, no container), `dependencies` (the node's dependency cache) or `none`; shown in
    /// the push's phases.
    pub reused: &'static str,
}

/// What a push asks of staging beyond its files (issue 19).
pub struct StageOptions<'a> {
    /// A name from [`paas_common::stack::KNOWN`], already checked.
    pub stack: &'a str,
    /// Neither the droplet of an unchanged tree nor the node's dependency cache is reused.
    pub no_cache: bool,
    /// Who shares dependency cache entries: the app's space.
    pub cache_scope: &'a str,
}

/// Stages `source` (a tar blob) for `app` on a node that fits the build (see
/// [`crate::builds::place_build`]) and waits for the result. `placement` is the push's own
/// placement labels, when it gives some (else the app's apply). `Ok(None)` when no node is
/// ready at all (the caller falls back to the source as droplet).
// The push's own settings, one argument each, so its single call site reads as the push does.
#[allow(clippy::too_many_arguments)]
pub async fn stage_on_node(
    ctx: &AppCtx,
    app: &AppRecord,
    source: &str,
    tree: &str,
    buildpacks: &[String],
    dockerfile: bool,
    placement: Option<&BTreeMap<String, String>>,
    options: StageOptions<'_>,
    progress: &super::push::Progress,
) -> DeployResult<Option<Built>> {
    // The same files with the same buildpacks stage to the same droplet: reuse it (an unchanged
    // re-push then costs no build and its node already has the droplet's image).
    // Added buildpacks take part in detection, so they are part of what a build depends on.
    let custom = custom_buildpacks(ctx).await?;
    let custom_key: Vec<String> = custom
        .iter()
        .map(|c| format!("{}={}", c.name, c.sha256))
        .collect();
    // A Dockerfile build depends on what it may build on: a droplet built before an image was
    // disallowed must not be reused after.
    let allowed_bases = if dockerfile {
        allowed_base_images(ctx).await?
    } else {
        Vec::new()
    };
    let key = format!(
        "{tree} {} {} {dockerfile} {} {}",
        buildpacks.join(","),
        custom_key.join(","),
        allowed_bases.join(","),
        options.stack
    );
    if let Some(hit) = ctx
        .builds
        .cached(&key)
        .filter(|_| !options.no_cache)
        .filter(|h| ctx.blobs.exists(&h.droplet))
    {
        super::log_platform(
            ctx,
            app,
            "STG",
            format!(
                "No files changed: reusing droplet {} (buildpack {})",
                &hit.droplet[..12],
                hit.buildpack
            ),
        )
        .await;
        let size = std::fs::metadata(ctx.blobs.path(&hit.droplet)?)
            .map(|m| m.len())
            .unwrap_or(0);
        return Ok(Some(Built {
            droplet: hit.droplet,
            size,
            buildpack: hit.buildpack,
            processes: hit.processes,
            image: hit.image,
            reused: "droplet",
        }));
    }
    let build_id = uuid::Uuid::new_v4().to_string();
    let timeout = ctx.settings.staging_timeout_secs;
    let assignment = paas_common::agent::BuildAssignment {
        build_id: build_id.clone(),
        app: app.name.clone(),
        buildpacks: buildpacks.to_vec(),
        memory_mb: ctx.settings.staging_memory_mb,
        disk_mb: ctx.settings.default_disk_mb * 4,
        timeout_secs: timeout,
        custom_buildpacks: custom,
        dockerfile,
        allowed_base_images: allowed_bases,
        stack: options.stack.to_string(),
        no_cache: options.no_cache,
        cache_scope: options.cache_scope.to_string(),
    };
    let Some(node) =
        start_when_a_node_fits(ctx, app, placement, source, &assignment, progress).await?
    else {
        return Ok(None);
    };
    progress.send(PushProgress::Staging {
        node: Some(node.clone()),
        waiting: None,
    });
    ctx.bump_assignments();
    super::log_platform(
        ctx,
        app,
        "STG",
        format!("Staging on node {node} (build {})", &build_id[..8]),
    )
    .await;
    // The node enforces the time limit; the margin covers fetching the source and uploading.
    let waited = ctx
        .builds
        .wait(
            ctx.store.as_ref(),
            &build_id,
            Duration::from_secs(timeout + 60),
        )
        .await?;
    let result = match waited {
        Some(r) => r,
        None => {
            ctx.bump_assignments();
            return Err(DeployError::invalid(
                ErrorCode::StagingFailed,
                format!("staging did not finish within {timeout} s"),
            ));
        }
    };
    if let Some(e) = result.error {
        super::log_platform(ctx, app, "STG", format!("Staging failed: {e}")).await;
        return Err(DeployError::invalid(
            ErrorCode::StagingFailed,
            format!("staging failed: {e}"),
        ));
    }
    let droplet = result.droplet.ok_or_else(|| {
        DeployError::invalid(ErrorCode::StagingFailed, "staging produced no droplet")
    })?;
    let size = std::fs::metadata(ctx.blobs.path(&droplet)?)
        .map(|m| m.len())
        .unwrap_or(0);
    let buildpack = result.buildpack.unwrap_or_else(|| "custom".into());
    ctx.builds.remember(
        key,
        crate::builds::CachedBuild {
            droplet: droplet.clone(),
            buildpack: buildpack.clone(),
            processes: result.processes.clone(),
            image: result.image.clone(),
        },
    );
    Ok(Some(Built {
        droplet,
        size,
        buildpack,
        processes: result.processes,
        image: result.image,
        reused: if result.layers_reused {
            "layers"
        } else if result.dependencies_restored {
            "dependencies"
        } else {
            "none"
        },
    }))
}

/// Starts `build` on a node that fits it: at once when one does, else after waiting (with an
/// `STG` line saying why, again whenever the reason changes) until one does, at most the push's
/// start timeout. `None` when no node is ready at all: there is nothing to wait for, and the
/// caller has a fallback.
async fn start_when_a_node_fits(
    ctx: &AppCtx,
    app: &AppRecord,
    placement: Option<&BTreeMap<String, String>>,
    source: &str,
    build: &paas_common::agent::BuildAssignment,
    progress: &super::push::Progress,
) -> DeployResult<Option<String>> {
    use crate::control::scheduler::PlacementError;
    let labels = match placement {
        Some(l) => l.clone(),
        None => app_labels(ctx, app).await?,
    };
    let limit = Duration::from_secs(ctx.settings.push_start_timeout_secs);
    let started = Instant::now();
    let mut changes = ctx.assignments.subscribe();
    let mut said: Option<String> = None;
    loop {
        let nodes = ctx.store.list_nodes().await?;
        let instances = instance_reservations(ctx).await?;
        let reason = match ctx
            .builds
            .place_and_start(
                ctx.store.as_ref(),
                &nodes,
                &instances,
                &app.id,
                source,
                build,
                &labels,
            )
            .await?
        {
            Ok(started) => {
                if said.is_some() {
                    let msg = format!("Node {started} fits now");
                    super::log_platform(ctx, app, "STG", msg).await;
                }
                return Ok(Some(started));
            }
            Err(PlacementError::NoNodes | PlacementError::NoReadyNodes) => return Ok(None),
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= limit {
            let message = format!(
                "no node could take the build within {} s: {reason}",
                limit.as_secs()
            );
            super::log_platform(ctx, app, "STG", format!("Staging failed: {message}")).await;
            return Err(DeployError::invalid(ErrorCode::NoNodeAvailable, message));
        }
        if said.as_deref() != Some(reason.as_str()) {
            progress.send(PushProgress::Staging {
                node: None,
                waiting: Some(reason.clone()),
            });
            super::log_platform(
                ctx,
                app,
                "STG",
                format!("Waiting for a node to stage on: {reason}"),
            )
            .await;
            said = Some(reason);
        }
        // A finished build or a removed instance bumps the assignments; a node that joins or
        // frees room otherwise is seen by the next look.
        let _ = tokio::time::timeout(Duration::from_secs(2), changes.changed()).await;
    }
}

/// The app's stored placement labels (none for an app without any, or not created yet).
async fn app_labels(ctx: &AppCtx, app: &AppRecord) -> DeployResult<BTreeMap<String, String>> {
    Ok(ctx
        .store
        .app_lifecycles()
        .await?
        .remove(&app.id)
        .map(|l| l.placement_labels)
        .unwrap_or_default())
}

/// What placed instances hold on their nodes: the scheduler's own reservations
/// (`convergence::node_reservations`), so staging and instances are placed on one count.
async fn instance_reservations(ctx: &AppCtx) -> DeployResult<Vec<crate::builds::Reservation>> {
    Ok(
        crate::control::convergence::node_reservations(ctx.store.as_ref())
            .await?
            .into_values()
            .map(|v| crate::builds::Reservation {
                node: v.name,
                memory_mb: v.used_memory_mb,
                disk_mb: v.used_disk_mb,
                slots: v.used_slots,
                build: false,
            })
            .collect(),
    )
}
