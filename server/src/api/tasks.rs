//! One-off tasks (issue 21): run one, list them, show one, terminate one. Each parses, calls
//! `deploy::tasks` and answers the task as `paas_common::api::TaskInfo`.

use actix_web::{web, HttpResponse};
use paas_common::api::{RunTaskRequest, TaskInfo};

use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, Viewer};
use crate::control::tasks::info;
use crate::deploy::{tasks as ops, Actor};
use crate::error::ApiResult;

/// `POST /v1/apps/{name}/tasks` with [`RunTaskRequest`]: the task, pending (202).
#[utoipa::path(post, path = "/v1/apps/{name}/tasks", tag = "tasks", summary = "Run a one-off task on the app's current droplet and env", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::RunTaskRequest, responses((status = 202, body = paas_common::api::TaskInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn run(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<RunTaskRequest>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    let task = ops::run_task(&ctx, &Actor::from(&user), &app, &body).await?;
    Ok(HttpResponse::Accepted().json(info(&task)))
}

/// `GET /v1/apps/{name}/tasks`: every task of the app, oldest first.
#[utoipa::path(get, path = "/v1/apps/{name}/tasks", tag = "tasks", summary = "The app's tasks, oldest first", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = Vec<paas_common::api::TaskInfo>), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
) -> ApiResult<web::Json<Vec<TaskInfo>>> {
    let app = app.into_app();
    let tasks = ctx.store.app_tasks(&app.id).await?;
    Ok(web::Json(tasks.iter().map(info).collect()))
}

/// `GET /v1/apps/{name}/tasks/{id}`.
#[utoipa::path(get, path = "/v1/apps/{name}/tasks/{id}", tag = "tasks", summary = "One task", params(("name" = String, Path, description = "The app's name"), ("id" = u64, Path, description = "The task's id (its sequence number in the app)")), responses((status = 200, body = paas_common::api::TaskInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn get(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
    path: web::Path<(String, u64)>,
) -> ApiResult<web::Json<TaskInfo>> {
    let (_, id) = path.into_inner();
    let app = app.into_app();
    Ok(web::Json(info(&ops::find(&ctx, &app, id).await?)))
}

/// `POST /v1/apps/{name}/tasks/{id}/cancel`: FAILED `terminated`; its node stops it.
#[utoipa::path(post, path = "/v1/apps/{name}/tasks/{id}/cancel", tag = "tasks", summary = "Terminate a task", params(("name" = String, Path, description = "The app's name"), ("id" = u64, Path, description = "The task's id (its sequence number in the app)")), responses((status = 200, body = paas_common::api::TaskInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn cancel(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    path: web::Path<(String, u64)>,
) -> ApiResult<web::Json<TaskInfo>> {
    let (_, id) = path.into_inner();
    let app = app.into_app();
    let task = ops::terminate(&ctx, &Actor::from(&user), &app, id).await?;
    Ok(web::Json(info(&task)))
}
