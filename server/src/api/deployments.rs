//! Canary and blue-green deployments (issue 23): `GET /v1/apps/{name}/deployment` and `POST
//! .../deployment/{continue,cancel}`.

use actix_web::web;
use paas_common::deployment::DeploymentInfo;

use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, Viewer};
use crate::deploy::{deployments as ops, Actor};
use crate::error::ApiResult;

/// `GET /v1/apps/{name}/deployment`: the newest canary or blue-green deployment and, while it
/// runs, the live comparison of the two revisions.
#[utoipa::path(get, path = "/v1/apps/{name}/deployment", tag = "apps", summary = "The app's canary or blue-green deployment with the live comparison", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::deployment::DeploymentInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn show(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
) -> ApiResult<web::Json<DeploymentInfo>> {
    Ok(web::Json(ops::show(&ctx, &app.into_app()).await?))
}

/// `POST /v1/apps/{name}/deployment/continue`: the next step now (or promote).
#[utoipa::path(post, path = "/v1/apps/{name}/deployment/continue", tag = "apps", summary = "Move a canary to its next step now, or end a blue-green grace", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::deployment::DeploymentInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn resume(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
) -> ApiResult<web::Json<DeploymentInfo>> {
    Ok(web::Json(
        ops::resume(&ctx, &Actor::from(&user), &app.into_app()).await?,
    ))
}

/// `POST /v1/apps/{name}/deployment/cancel`: back to the old revision.
#[utoipa::path(post, path = "/v1/apps/{name}/deployment/cancel", tag = "apps", summary = "Cancel a canary or blue-green deployment: the old revision serves again", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::deployment::DeploymentInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn cancel(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
) -> ApiResult<web::Json<DeploymentInfo>> {
    Ok(web::Json(
        ops::cancel(&ctx, &Actor::from(&user), &app.into_app()).await?,
    ))
}
