//! `GET|POST|DELETE /v1/apps/{name}/log-drains` with `{"url": ...}`: the app's log drains.

use actix_web::{web, HttpRequest, HttpResponse};
use paas_common::ErrorCode;
use serde::{Deserialize, Serialize};

use super::page::{self, Page};
use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, Viewer};
use crate::drains::parse_drain;
use crate::error::{ApiResult, Error};
use crate::store::Event;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainBody {
    pub url: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainList {
    pub drains: Vec<String>,
}

#[utoipa::path(get, path = "/v1/apps/{name}/log-drains", tag = "drains", summary = "The app's log drains", params(crate::api::page::PageParams, ("name" = String, Path, description = "The app's name")), responses((status = 200, body = DrainList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let app = app.into_app();
    let mut drains: Vec<String> = ctx
        .store
        .list_log_drains()
        .await?
        .into_iter()
        .filter(|(a, _)| *a == app.id)
        .map(|(_, u)| u)
        .collect();
    drains.sort();
    drains.dedup();
    let total = drains.len() as u64;
    let (drains, next) = page.slice(drains, String::clone, false);
    Ok(page::respond(
        &req,
        &DrainList { drains },
        next,
        Some(total),
    ))
}

#[utoipa::path(post, path = "/v1/apps/{name}/log-drains", tag = "drains", summary = "Add a log drain", params(("name" = String, Path, description = "The app's name")), request_body = DrainBody, responses((status = 201, body = DrainBody), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn add(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<DrainBody>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    parse_drain(&body.url).map_err(|m| Error::api(ErrorCode::BadRequest, m))?;
    let event = Event {
        app_name: Some(app.name.clone()),
        app_id: Some(app.id.clone()),
        actor: user.actor,
        kind: "app.log_drain.add".into(),
        message: format!("added log drain {}", body.url),
    };
    ctx.store.add_log_drain(&app.id, &body.url, &event).await?;
    Ok(HttpResponse::Created().json(DrainBody {
        url: body.url.clone(),
    }))
}

#[utoipa::path(delete, path = "/v1/apps/{name}/log-drains", tag = "drains", summary = "Remove a log drain", params(("name" = String, Path, description = "The app's name")), request_body = DrainBody, responses((status = 204, description = "Removed"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn remove(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<DrainBody>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    let event = Event {
        app_name: Some(app.name.clone()),
        app_id: Some(app.id.clone()),
        actor: user.actor,
        kind: "app.log_drain.remove".into(),
        message: format!("removed log drain {}", body.url),
    };
    if !ctx
        .store
        .remove_log_drain(&app.id, &body.url, &event)
        .await?
    {
        return Err(Error::api(
            ErrorCode::NotFound,
            format!("app {} has no drain {}", app.name, body.url),
        ));
    }
    Ok(HttpResponse::NoContent().finish())
}
