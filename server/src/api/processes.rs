//! Process types of an app (issue 3): scaling one type (`PATCH /v1/apps/{name}` with `process`),
//! the manifest's `processes` applied at push, and the per-type view in the app detail. The
//! convergence loop does the work; these handlers only record settings with an event.

use actix_web::web;
use paas_common::api::{AppSettings, AppUpdateRequest, ProcessInfo, ProcessSettings};
use paas_common::ErrorCode;

use super::Ctx;
use crate::auth::AuthUser;
use crate::control::desired::{DesiredState, ProcessDesired};
use crate::error::{ApiResult, Error};
use crate::store::{AppRecord, Event, ProcessRecord};

const MAX_INSTANCES: u32 = 100;

fn bad(msg: impl Into<String>) -> Error {
    Error::api(ErrorCode::BadRequest, msg)
}

/// The non-web process specs of the app's current revision.
pub(super) async fn current_specs(ctx: &Ctx, app: &AppRecord) -> ApiResult<Vec<ProcessDesired>> {
    Ok(DesiredState::of_app(ctx.store.as_ref(), app)
        .await?
        .map(|d| {
            d.processes
                .into_iter()
                .filter(|p| p.process_type != "web")
                .collect()
        })
        .unwrap_or_default())
}

async fn configured(ctx: &Ctx, app: &AppRecord, process_type: &str) -> ApiResult<ProcessRecord> {
    Ok(ctx
        .store
        .app_processes()
        .await?
        .remove(&app.id)
        .and_then(|l| l.into_iter().find(|p| p.process_type == process_type))
        .unwrap_or_else(|| ProcessRecord::default_for(process_type)))
}

/// Scales one non-web process type: instances, memory and health check.
pub(super) async fn scale(
    ctx: &Ctx,
    user: &AuthUser,
    app: &AppRecord,
    process_type: &str,
    req: &AppUpdateRequest,
) -> ApiResult<web::Json<AppSettings>> {
    let specs = current_specs(ctx, app).await?;
    if !specs.iter().any(|p| p.process_type == process_type) {
        let known: Vec<&str> = std::iter::once("web")
            .chain(specs.iter().map(|p| p.process_type.as_str()))
            .collect();
        return Err(Error::api(
            ErrorCode::ProcessNotFound,
            format!(
                "app {:?} has no process {process_type:?} (it has: {})",
                app.name,
                known.join(", ")
            ),
        ));
    }
    if req.max_in_flight.is_some() || req.placement_labels.is_some() || req.log_rate_limit.is_some()
    {
        return Err(bad(
            "max_in_flight, placement_labels and log_rate_limit apply to the whole app: leave out `process`",
        ));
    }
    if req.instances.is_some_and(|n| n > MAX_INSTANCES) {
        return Err(bad(format!("instances must be from 0 to {MAX_INSTANCES}")));
    }
    if req
        .memory_mb
        .is_some_and(|m| !(16..=64 * 1024).contains(&m))
    {
        return Err(bad("memory must be from 16 MB to 64 GB"));
    }
    let health = req
        .health_check
        .as_ref()
        .map(super::lifecycle::health_settings)
        .transpose()?;
    let mut rec = configured(ctx, app, process_type).await?;
    let mut what = Vec::new();
    if let Some(n) = req.instances {
        what.push(format!("{process_type} instances {} -> {n}", rec.instances));
        rec.instances = n;
    }
    if let Some(m) = req.memory_mb {
        what.push(format!("{process_type} memory {m} MB"));
        rec.memory_mb = Some(m);
    }
    if let Some(h) = health {
        what.push(format!("{process_type} health check {:?}", h.check));
        rec.health = Some(h);
    }
    if what.is_empty() {
        return Err(bad(
            "nothing to change: give instances, memory_mb or health_check",
        ));
    }
    let ev = Event {
        app_name: Some(app.name.clone()),
        actor: user.actor.clone(),
        kind: "app.scale".into(),
        message: format!("{} changed {}", user.username, what.join(", ")),
    };
    let rolling = ctx.store.upsert_process(&app.id, &rec, &ev).await?;
    tracing::info!(app = %app.name, process = %process_type, change = %what.join(", "), rolling, "process settings changed");
    ctx.converge.notify_one();
    Ok(web::Json(
        super::lifecycle::settings(ctx, app, rolling).await?,
    ))
}

/// Applies a manifest's `processes` (every type but `web`, whose settings are the app's own).
pub(super) async fn apply_manifest(
    ctx: &Ctx,
    app: &AppRecord,
    actor: &str,
    list: &[ProcessSettings],
) -> ApiResult<()> {
    for p in list.iter().filter(|p| p.process_type != "web") {
        if p.instances.is_some_and(|n| n > MAX_INSTANCES) {
            return Err(bad(format!(
                "processes.{}.instances must be from 0 to {MAX_INSTANCES}",
                p.process_type
            )));
        }
        let mut rec = configured(ctx, app, &p.process_type).await?;
        rec.instances = p.instances.unwrap_or(rec.instances);
        rec.memory_mb = p.memory_mb.or(rec.memory_mb);
        rec.command = p.command.clone().or(rec.command);
        if let Some(h) = &p.health {
            rec.health = Some(super::lifecycle::manifest_health(
                &rec.health_or_default(),
                h,
            )?);
        }
        let ev = Event {
            app_name: Some(app.name.clone()),
            actor: actor.into(),
            kind: "app.scale".into(),
            message: format!(
                "manifest set process {}: {} instance(s)",
                p.process_type, rec.instances
            ),
        };
        ctx.store.upsert_process(&app.id, &rec, &ev).await?;
    }
    Ok(())
}

/// Every process type of the app's current revision, `web` first.
/// Empty before the first revision.
pub(super) async fn infos(ctx: &Ctx, app: &AppRecord) -> ApiResult<Vec<ProcessInfo>> {
    Ok(DesiredState::of_app(ctx.store.as_ref(), app)
        .await?
        .map(|d| d.infos())
        .unwrap_or_default())
}
