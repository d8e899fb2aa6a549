//! Base images a Dockerfile may build on (issue 18): besides the node's stack image, only images
//! an operator allowed, by name (`paas allow-base-image NAME`). Every build assignment carries
//! the list and the node refuses any other `FROM` / `COPY --from` before the build, with one
//! message whether or not such an image is on the node: without the list, `FROM b6` built on
//! whichever local image's id starts with `b6`, another tenant's droplet included. Operator-only
//! (`authz::classify`).

use actix_web::{web, HttpResponse};
use paas_common::api::{AllowBaseImage, BaseImageInfo, BaseImageList};
use paas_common::domain::ImageName;
use paas_common::ErrorCode;

use super::page::{self, Page};
use super::Ctx;
use crate::auth::AuthUser;
use crate::error::{ApiResult, Error};
use crate::store::Event;

fn parse(name: &str) -> ApiResult<ImageName> {
    ImageName::parse(name).map_err(|m| Error::api(ErrorCode::InvalidName, m))
}

#[utoipa::path(get, path = "/v1/base-images", tag = "base-images", summary = "Base images Dockerfile builds may use besides the stack image (operator)", params(crate::api::page::PageParams), responses((status = 200, body = paas_common::api::BaseImageList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(ctx: Ctx, req: actix_web::HttpRequest) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let all: Vec<BaseImageInfo> = ctx
        .store
        .list_base_images()
        .await?
        .into_iter()
        .map(|b| BaseImageInfo {
            name: b.name,
            created_by: b.created_by,
            created_at: b.created_at,
        })
        .collect();
    let total = all.len() as u64;
    let (base_images, next) = page.slice(all, |b| b.name.clone(), false);
    Ok(page::respond(
        &req,
        &BaseImageList { base_images },
        next,
        Some(total),
    ))
}

#[utoipa::path(post, path = "/v1/base-images", tag = "base-images", summary = "Allow a base image by name (operator)", request_body = paas_common::api::AllowBaseImage, responses((status = 201, body = paas_common::api::BaseImageInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn allow(
    ctx: Ctx,
    user: AuthUser,
    body: web::Json<AllowBaseImage>,
) -> ApiResult<HttpResponse> {
    let name = parse(&body.name)?;
    let ev = Event {
        app_name: None,
        app_id: None,
        actor: user.actor.clone(),
        kind: "base_image.allow".into(),
        message: format!("{} allowed base image {name}", user.username),
    };
    ctx.store
        .add_base_image(name.as_str(), &user.username, &ev)
        .await?;
    let added = ctx
        .store
        .list_base_images()
        .await?
        .into_iter()
        .find(|b| b.name == name.as_str())
        .ok_or_else(|| Error::internal("allowed base image not found"))?;
    Ok(HttpResponse::Created().json(BaseImageInfo {
        name: added.name,
        created_by: added.created_by,
        created_at: added.created_at,
    }))
}

#[utoipa::path(delete, path = "/v1/base-images/{name}", tag = "base-images", summary = "Disallow a base image (operator)", params(("name" = String, Path, description = "The image name, URL-encoded (`alpine%3A3.20`)")), responses((status = 204, description = "Disallowed"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn disallow(
    ctx: Ctx,
    user: AuthUser,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let name = parse(&name)?;
    let ev = Event {
        app_name: None,
        app_id: None,
        actor: user.actor.clone(),
        kind: "base_image.disallow".into(),
        message: format!("{} disallowed base image {name}", user.username),
    };
    ctx.store
        .delete_base_image(name.as_str(), &ev)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(m) => Error::api(ErrorCode::NotFound, m),
            e => e.into(),
        })?;
    Ok(HttpResponse::NoContent().finish())
}
