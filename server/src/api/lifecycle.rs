//! App and node lifecycle: scale and settings (`PATCH /v1/apps/{name}`), rolling restart, stop,
//! start, restart of one instance, and node drain. Handlers only record intent (app settings,
//! rows marked for replacement, node state) with an event naming the actor; the convergence loop
//! does the work, replacement first and removal after.

use actix_web::web;
use paas_common::agent::{HealthCheck, HealthSettings};
use paas_common::api::{
    AppSettings, AppState, AppUpdateRequest, HealthCheckUpdate, NodeStateResponse, RestartRequest,
};
use paas_common::ErrorCode;

use super::apps::find_app;
use super::Ctx;
use crate::auth::AuthUser;
use crate::error::{ApiResult, Error};
use crate::store::{AppRecord, AppUpdate, Event, StoreError};

const MAX_INSTANCES: u32 = 100;
const MAX_IN_FLIGHT: u32 = 100;

fn bad(msg: impl Into<String>) -> Error {
    Error::api(ErrorCode::BadRequest, msg)
}

/// Checks a health check request and fills the rest from Cloud Foundry's defaults.
pub(super) fn health_settings(h: &HealthCheckUpdate) -> ApiResult<HealthSettings> {
    let d = HealthSettings::default();
    let check = match (h.check_type.as_str(), &h.endpoint) {
        ("port", None) => HealthCheck::Port,
        ("process", None) => HealthCheck::Process,
        ("http", Some(e))
            if e.starts_with('/') && e.len() <= 1024 && !e.chars().any(char::is_whitespace) =>
        {
            HealthCheck::Http {
                endpoint: e.clone(),
            }
        }
        ("http", _) => {
            return Err(bad(
                "an http health check needs an endpoint path starting with /, e.g. /health",
            ))
        }
        ("port" | "process", Some(_)) => {
            return Err(bad("only an http health check takes an endpoint"))
        }
        (other, _) => {
            return Err(bad(format!(
                "health check type must be port, http or process, not {other:?}"
            )))
        }
    };
    let invocation_timeout_secs = h
        .invocation_timeout_secs
        .unwrap_or(d.invocation_timeout_secs);
    let start_timeout_secs = h.start_timeout_secs.unwrap_or(d.start_timeout_secs);
    if !(1..=60).contains(&invocation_timeout_secs) {
        return Err(bad("invocation_timeout_secs must be from 1 to 60"));
    }
    if !(1..=3600).contains(&start_timeout_secs) {
        return Err(bad("start_timeout_secs must be from 1 to 3600"));
    }
    Ok(HealthSettings {
        check,
        invocation_timeout_secs,
        start_timeout_secs,
        ..d
    })
}

pub(super) async fn settings(ctx: &Ctx, app: &AppRecord, rolling: bool) -> ApiResult<AppSettings> {
    let app = find_app(ctx, &app.name).await?;
    let lc = ctx
        .store
        .app_lifecycles()
        .await?
        .remove(&app.id)
        .unwrap_or_default();
    Ok(AppSettings {
        name: app.name,
        state: app.state,
        desired_instances: app.desired_instances,
        memory_mb: app.memory_mb,
        max_in_flight: lc.max_in_flight,
        health: lc.health.unwrap_or_default(),
        placement_labels: lc.placement_labels,
        rolling,
    })
}

fn event(user: &AuthUser, app: &AppRecord, kind: &str, message: String) -> Event {
    Event {
        app_name: Some(app.name.clone()),
        actor: user.actor.clone(),
        kind: kind.into(),
        message,
    }
}

/// `PATCH /v1/apps/{name}` with [`AppUpdateRequest`].
#[utoipa::path(patch, path = "/v1/apps/{name}", tag = "lifecycle", summary = "Scale, resize, change health check or placement", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::AppUpdateRequest, responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn update(
    ctx: Ctx,
    user: AuthUser,
    name: web::Path<String>,
    body: web::Json<AppUpdateRequest>,
) -> ApiResult<web::Json<AppSettings>> {
    let app = find_app(&ctx, &name).await?;
    let req = body.into_inner();
    if let Some(p) = req.process.as_deref().filter(|p| *p != "web") {
        return super::processes::scale(&ctx, &user, &app, p, &req).await;
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
    if req
        .max_in_flight
        .is_some_and(|k| !(1..=MAX_IN_FLIGHT).contains(&k))
    {
        return Err(bad(format!(
            "max_in_flight must be from 1 to {MAX_IN_FLIGHT}"
        )));
    }
    let health = req.health_check.as_ref().map(health_settings).transpose()?;
    let mut what = Vec::new();
    if let Some(n) = req.instances {
        what.push(format!("instances {} -> {n}", app.desired_instances));
    }
    if let Some(m) = req.memory_mb {
        what.push(format!("memory {} MB -> {m} MB", app.memory_mb));
    }
    if let Some(k) = req.max_in_flight {
        what.push(format!("max in flight {k}"));
    }
    if let Some(h) = &req.health_check {
        what.push(format!(
            "health check {}{}",
            h.check_type,
            h.endpoint.as_deref().unwrap_or_default()
        ));
    }
    if let Some(l) = &req.placement_labels {
        what.push(format!("placement labels {l:?}"));
    }
    if what.is_empty() {
        return Err(bad("nothing to change: give instances, memory_mb, max_in_flight, health_check or placement_labels"));
    }
    let update = AppUpdate {
        desired_instances: req.instances,
        memory_mb: req.memory_mb,
        state: None,
        max_in_flight: req.max_in_flight,
        health,
        placement_labels: req.placement_labels,
    };
    let ev = event(
        &user,
        &app,
        "app.scale",
        format!("{} changed {}", user.username, what.join(", ")),
    );
    let rolling = ctx.store.update_app(&app.id, &update, &ev).await?;
    tracing::info!(app = %app.name, change = %what.join(", "), rolling, "app settings changed");
    ctx.converge.notify_one();
    Ok(web::Json(settings(&ctx, &app, rolling).await?))
}

/// `POST /v1/apps/{name}/restart` with an optional [`RestartRequest`]: a rolling restart.
#[utoipa::path(post, path = "/v1/apps/{name}/restart", tag = "lifecycle", summary = "Rolling restart", params(("name" = String, Path, description = "The app's name")), request_body = Option<paas_common::api::RestartRequest>, responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn restart(
    ctx: Ctx,
    user: AuthUser,
    name: web::Path<String>,
    body: Option<web::Json<RestartRequest>>,
) -> ApiResult<web::Json<AppSettings>> {
    let app = find_app(&ctx, &name).await?;
    if app.state != AppState::Started {
        return Err(Error::api(
            ErrorCode::AppStopped,
            format!("app {:?} is stopped: start it instead", app.name),
        ));
    }
    let k = body.and_then(|b| b.into_inner().max_in_flight);
    if let Some(k) = k {
        if !(1..=MAX_IN_FLIGHT).contains(&k) {
            return Err(bad(format!(
                "max_in_flight must be from 1 to {MAX_IN_FLIGHT}"
            )));
        }
        let ev = event(
            &user,
            &app,
            "app.scale",
            format!("{} set max in flight {k}", user.username),
        );
        ctx.store
            .update_app(
                &app.id,
                &AppUpdate {
                    max_in_flight: Some(k),
                    ..Default::default()
                },
                &ev,
            )
            .await?;
    }
    let ev = event(
        &user,
        &app,
        "app.restart",
        format!("{} asked for a rolling restart", user.username),
    );
    let n = ctx.store.retire_instances(&app.id, None, &ev).await?;
    tracing::info!(app = %app.name, instances = n, "rolling restart");
    ctx.converge.notify_one();
    Ok(web::Json(settings(&ctx, &app, n > 0).await?))
}

async fn set_state(
    ctx: Ctx,
    user: AuthUser,
    name: &str,
    state: AppState,
) -> ApiResult<web::Json<AppSettings>> {
    let app = find_app(&ctx, name).await?;
    let kind = if state == AppState::Started {
        "app.start"
    } else {
        "app.stop"
    };
    let ev = event(
        &user,
        &app,
        kind,
        format!(
            "{} {} the app",
            user.username,
            if kind == "app.start" {
                "started"
            } else {
                "stopped"
            }
        ),
    );
    ctx.store
        .update_app(
            &app.id,
            &AppUpdate {
                state: Some(state),
                ..Default::default()
            },
            &ev,
        )
        .await?;
    ctx.converge.notify_one();
    Ok(web::Json(settings(&ctx, &app, false).await?))
}

/// `POST /v1/apps/{name}/stop`: every instance stops (routes first); the app and its settings stay.
#[utoipa::path(post, path = "/v1/apps/{name}/stop", tag = "lifecycle", summary = "Stop every instance", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn stop(
    ctx: Ctx,
    user: AuthUser,
    name: web::Path<String>,
) -> ApiResult<web::Json<AppSettings>> {
    set_state(ctx, user, &name, AppState::Stopped).await
}

/// `POST /v1/apps/{name}/start`.
#[utoipa::path(post, path = "/v1/apps/{name}/start", tag = "lifecycle", summary = "Start a stopped app", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn start(
    ctx: Ctx,
    user: AuthUser,
    name: web::Path<String>,
) -> ApiResult<web::Json<AppSettings>> {
    set_state(ctx, user, &name, AppState::Started).await
}

/// `POST /v1/apps/{name}/instances/{index}/restart`: replaces one instance, new one first.
#[utoipa::path(post, path = "/v1/apps/{name}/instances/{index}/restart", tag = "lifecycle", summary = "Replace one instance, new one first", params(("name" = String, Path, description = "The app's name"), ("index" = u32, Path, description = "Instance index")), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn restart_instance(
    ctx: Ctx,
    user: AuthUser,
    path: web::Path<(String, u32)>,
) -> ApiResult<web::Json<AppSettings>> {
    let (name, index) = path.into_inner();
    let app = find_app(&ctx, &name).await?;
    if app.state != AppState::Started {
        return Err(Error::api(
            ErrorCode::AppStopped,
            format!("app {:?} is stopped: start it instead", app.name),
        ));
    }
    if index >= app.desired_instances {
        return Err(Error::api(
            ErrorCode::InstanceNotFound,
            format!(
                "app {:?} has no instance {index} (it has {})",
                app.name, app.desired_instances
            ),
        ));
    }
    let ev = event(
        &user,
        &app,
        "instance.restart",
        format!("{} asked to restart instance {index}", user.username),
    );
    let n = ctx
        .store
        .retire_instances(&app.id, Some(index), &ev)
        .await?;
    ctx.converge.notify_one();
    Ok(web::Json(settings(&ctx, &app, n > 0).await?))
}

/// `POST /v1/nodes/{name}/drain`: the node gets no new instances; each of its instances gets a
/// replacement elsewhere and is removed once that runs; then the node is `drained`.
#[utoipa::path(post, path = "/v1/nodes/{name}/drain", tag = "nodes", summary = "Drain a node (operator)", params(("name" = String, Path, description = "Node name")), responses((status = 200, body = paas_common::api::NodeStateResponse), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn drain(
    ctx: Ctx,
    user: AuthUser,
    name: web::Path<String>,
) -> ApiResult<web::Json<NodeStateResponse>> {
    let ev = Event {
        app_name: None,
        actor: user.actor.clone(),
        kind: "node.drain".into(),
        message: format!("{} is draining node {name}", user.username),
    };
    match ctx.store.set_node_state(&name, "draining", &ev).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => {
            return Err(Error::api(
                ErrorCode::NodeNotFound,
                format!("node {:?} not found", name.as_str()),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(node = %name, "draining node");
    ctx.converge.notify_one();
    Ok(web::Json(NodeStateResponse {
        name: name.into_inner(),
        state: "draining".into(),
    }))
}
