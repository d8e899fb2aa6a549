//! Autoscaling (issue 23): `GET`/`PUT`/`DELETE /v1/apps/{name}/autoscale`.

use actix_web::{web, HttpResponse};
use paas_common::api::{AutoscaleRequest, AutoscaleStatus};

use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, Viewer};
use crate::deploy::{autoscale as ops, Actor};
use crate::error::ApiResult;

/// `GET /v1/apps/{name}/autoscale`: the policy and what the autoscaler last did.
#[utoipa::path(get, path = "/v1/apps/{name}/autoscale", tag = "apps", summary = "The app's autoscaling policy and its last decision", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::AutoscaleStatus), (status = "4XX", description = "A client error; `code` says which (`not_found`: no policy)", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn get(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
) -> ApiResult<web::Json<AutoscaleStatus>> {
    Ok(web::Json(ops::get(&ctx, &app.into_app()).await?))
}

/// `PUT /v1/apps/{name}/autoscale` with [`AutoscaleRequest`]: sets (or replaces) the policy.
#[utoipa::path(put, path = "/v1/apps/{name}/autoscale", tag = "apps", summary = "Scale the app's web instances on load", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::AutoscaleRequest, responses((status = 200, body = paas_common::api::AutoscaleStatus), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn set(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<AutoscaleRequest>,
) -> ApiResult<web::Json<AutoscaleStatus>> {
    let app = app.into_app();
    Ok(web::Json(
        ops::set(&ctx, &Actor::from(&user), &app, &body).await?,
    ))
}

/// `DELETE /v1/apps/{name}/autoscale` (204): autoscaling off, the instance count stays.
#[utoipa::path(delete, path = "/v1/apps/{name}/autoscale", tag = "apps", summary = "Turn autoscaling off", params(("name" = String, Path, description = "The app's name")), responses((status = 204, description = "Off"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn remove(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
) -> ApiResult<HttpResponse> {
    ops::remove(&ctx, &Actor::from(&user), &app.into_app()).await?;
    Ok(HttpResponse::NoContent().finish())
}
