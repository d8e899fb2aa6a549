//! App and node lifecycle handlers: scale and settings (`PATCH /v1/apps/{name}`), rolling
//! restart, stop, start, restart of one instance, and node drain. Each parses, calls one function
//! of `deploy::lifecycle` and answers the app's settings.

use actix_web::web;
use paas_common::api::{
    AppSettings, AppState, AppUpdateRequest, NodeStateResponse, RestartRequest,
};

use super::apps::find_app;
use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer};
use crate::deploy::{self, lifecycle as ops, Actor};
use crate::error::ApiResult;
use crate::store::AppRecord;

pub(super) async fn settings(ctx: &Ctx, app: &AppRecord, rolling: bool) -> ApiResult<AppSettings> {
    let app = find_app(ctx, &app.id).await?;
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
        log_rate_limit_bytes: lc.log_rate_limit_bytes,
        rolling,
    })
}

/// `PATCH /v1/apps/{name}` with [`AppUpdateRequest`].
#[utoipa::path(patch, path = "/v1/apps/{name}", tag = "lifecycle", summary = "Scale, resize, change health check or placement", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::AppUpdateRequest, responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn update(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<AppUpdateRequest>,
) -> ApiResult<web::Json<AppSettings>> {
    let app = app.into_app();
    let rolling = ops::update(&ctx, &Actor::from(&user), &app, body.into_inner()).await?;
    Ok(web::Json(settings(&ctx, &app, rolling).await?))
}

/// `POST /v1/apps/{name}/restart` with an optional [`RestartRequest`]: a rolling restart.
#[utoipa::path(post, path = "/v1/apps/{name}/restart", tag = "lifecycle", summary = "Rolling restart", params(("name" = String, Path, description = "The app's name")), request_body = Option<paas_common::api::RestartRequest>, responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn restart(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: Option<web::Json<RestartRequest>>,
) -> ApiResult<web::Json<AppSettings>> {
    let app = app.into_app();
    let k = body.and_then(|b| b.into_inner().max_in_flight);
    let rolling = ops::restart(&ctx, &Actor::from(&user), &app, k).await?;
    Ok(web::Json(settings(&ctx, &app, rolling).await?))
}

async fn set_state(
    ctx: Ctx,
    user: AuthUser,
    app: AppRecord,
    state: AppState,
) -> ApiResult<web::Json<AppSettings>> {
    ops::set_state(&ctx, &Actor::from(&user), &app, state).await?;
    Ok(web::Json(settings(&ctx, &app, false).await?))
}

/// `POST /v1/apps/{name}/stop`: every instance stops (routes first); the app and its settings stay.
#[utoipa::path(post, path = "/v1/apps/{name}/stop", tag = "lifecycle", summary = "Stop every instance", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn stop(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
) -> ApiResult<web::Json<AppSettings>> {
    set_state(ctx, user, app.into_app(), AppState::Stopped).await
}

/// `POST /v1/apps/{name}/start`.
#[utoipa::path(post, path = "/v1/apps/{name}/start", tag = "lifecycle", summary = "Start a stopped app", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn start(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
) -> ApiResult<web::Json<AppSettings>> {
    set_state(ctx, user, app.into_app(), AppState::Started).await
}

/// Which process type's instance `POST /v1/apps/{name}/instances/{index}/restart` replaces.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RestartInstanceQuery {
    /// The process type (default `web`): indices are per type, so web 0 and worker 0 differ.
    pub process: Option<String>,
}

/// `POST /v1/apps/{name}/instances/{index}/restart`: replaces one instance of one process type,
/// new one first.
#[utoipa::path(post, path = "/v1/apps/{name}/instances/{index}/restart", tag = "lifecycle", summary = "Replace one instance of a process type, new one first", params(("name" = String, Path, description = "The app's name"), ("index" = u32, Path, description = "Instance index"), RestartInstanceQuery), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn restart_instance(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    path: web::Path<(String, u32)>,
    query: web::Query<RestartInstanceQuery>,
) -> ApiResult<web::Json<AppSettings>> {
    let (_, index) = path.into_inner();
    let process = query.into_inner().process.unwrap_or_else(|| "web".into());
    let app = app.into_app();
    let rolling = ops::restart_instance(&ctx, &Actor::from(&user), &app, &process, index).await?;
    Ok(web::Json(settings(&ctx, &app, rolling).await?))
}

/// `POST /v1/nodes/{name}/drain`: the node gets no new instances; each of its instances gets a
/// replacement elsewhere and is removed once that runs; then the node is `drained`.
#[utoipa::path(post, path = "/v1/nodes/{name}/drain", tag = "nodes", summary = "Drain a node (operator)", params(("name" = String, Path, description = "Node name")), responses((status = 200, body = paas_common::api::NodeStateResponse), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn drain(
    ctx: Ctx,
    user: AuthUser,
    name: web::Path<String>,
) -> ApiResult<web::Json<NodeStateResponse>> {
    deploy::lifecycle::drain_node(&ctx, &Actor::from(&user), &name).await?;
    Ok(web::Json(NodeStateResponse {
        name: name.into_inner(),
        state: "draining".into(),
    }))
}
