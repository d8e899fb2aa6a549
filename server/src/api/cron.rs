//! Scheduled tasks (issue 21): `GET`/`POST /v1/apps/{name}/cron`, `DELETE .../cron/{id}`.

use actix_web::{web, HttpResponse};
use paas_common::api::{AddCronRequest, CronEntry};

use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, Viewer};
use crate::deploy::{cron as ops, Actor};
use crate::error::ApiResult;

/// `GET /v1/apps/{name}/cron`: the app's entries with their last and next runs.
#[utoipa::path(get, path = "/v1/apps/{name}/cron", tag = "tasks", summary = "The app's cron entries with their last and next runs", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = Vec<paas_common::api::CronEntry>), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
) -> ApiResult<web::Json<Vec<CronEntry>>> {
    Ok(web::Json(ops::list(&ctx, &app.into_app()).await?))
}

/// `POST /v1/apps/{name}/cron` with [`AddCronRequest`] (201).
#[utoipa::path(post, path = "/v1/apps/{name}/cron", tag = "tasks", summary = "Run a command as a task on a schedule", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::AddCronRequest, responses((status = 201, body = paas_common::api::CronEntry), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn add(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<AddCronRequest>,
) -> ApiResult<HttpResponse> {
    let entry = ops::add(&ctx, &Actor::from(&user), &app.into_app(), &body).await?;
    Ok(HttpResponse::Created().json(entry))
}

/// `DELETE /v1/apps/{name}/cron/{id}` (204).
#[utoipa::path(delete, path = "/v1/apps/{name}/cron/{id}", tag = "tasks", summary = "Remove a cron entry", params(("name" = String, Path, description = "The app's name"), ("id" = u64, Path, description = "The entry's id")), responses((status = 204, description = "Removed"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn remove(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    path: web::Path<(String, u64)>,
) -> ApiResult<HttpResponse> {
    let (_, id) = path.into_inner();
    ops::remove(&ctx, &Actor::from(&user), &app.into_app(), id).await?;
    Ok(HttpResponse::NoContent().finish())
}
