//! Revisions, env and rollback (issue 3). Every env change and rollback makes a new revision that
//! reuses a stored droplet, so nothing is rebuilt; convergence then replaces the instances as for
//! a push. Env values are returned only by `GET .../env`; revision listings show keys only.

use actix_web::{web, HttpResponse};
use paas_common::api::{AppEnv, EnvUpdate, RevisionList, RevisionSummary, RollbackRequest};
use paas_common::ErrorCode;

use super::apps::{detail, find_app};
use super::page::{self, Page};
use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, Viewer};
use crate::deploy::{revisions as ops, Actor};
use crate::error::{ApiResult, Error};
use crate::store::{AppRecord, RevisionRecord};

async fn current(ctx: &Ctx, app: &AppRecord) -> ApiResult<Option<RevisionRecord>> {
    Ok(ops::current(ctx, app).await?)
}

fn summary(ctx: &Ctx, app: &AppRecord, r: RevisionRecord) -> RevisionSummary {
    RevisionSummary {
        current: app.current_revision == Some(r.number),
        droplet_available: ctx.blobs.exists(&r.droplet),
        number: r.number,
        env_keys: r.env.keys().cloned().collect(),
        droplet: r.droplet,
        package: r.package,
        command: r.command,
        detected: r.detected,
        created_at: r.created_at,
        created_by: r.created_by,
        description: r.description,
        sidecars: r.sidecars,
    }
}

/// `GET /v1/apps/{name}/env`.
#[utoipa::path(get, path = "/v1/apps/{name}/env", tag = "env", summary = "The app's environment; secret values as `***` unless `reveal=true` (developer)", params(("name" = String, Path, description = "The app's name"), EnvQuery), responses((status = 200, body = paas_common::api::AppEnv), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn get_env(
    ctx: Ctx,
    app: AppAccess<Viewer>,
    q: web::Query<EnvQuery>,
) -> ApiResult<web::Json<AppEnv>> {
    let role = app.role;
    let app = app.into_app();
    let rev = current(&ctx, &app).await?;
    let mut env = rev.as_ref().map(|r| r.env.clone()).unwrap_or_default();
    let reveal = q.reveal.unwrap_or(false);
    if reveal {
        // Secrets are for those who may change the app: a viewer (or a read token) sees `***`.
        if role < crate::authz::Role::Developer {
            return Err(Error::api(
                ErrorCode::Forbidden,
                "revealing secret env values needs the developer role",
            ));
        }
    }
    for v in env.values_mut() {
        if crate::secrets::is_sealed(v) {
            *v = if reveal {
                ctx.secrets
                    .open(&app.id, v)
                    .map_err(|e| Error::Internal(e.to_string()))?
            } else {
                crate::secrets::MASK.to_string()
            };
        }
    }
    Ok(web::Json(AppEnv {
        revision: rev.as_ref().map(|r| r.number),
        env,
    }))
}

/// `GET /v1/apps/{name}/env?reveal=true`: secret values in plain (developer role or better).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EnvQuery {
    pub reveal: Option<bool>,
}

/// Makes a new revision from `base` with `env`, keeping the app's process settings.
/// `PATCH /v1/apps/{name}/env` with [`EnvUpdate`]: a new revision, same droplet, new env.
#[utoipa::path(patch, path = "/v1/apps/{name}/env", tag = "env", summary = "Set or unset env vars: a new revision", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::EnvUpdate, responses((status = 200, body = paas_common::api::AppDetail), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn update_env(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<EnvUpdate>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    ops::update_env(&ctx, &Actor::from(&user), &app, &body.into_inner()).await?;
    let app = find_app(&ctx, &app.id).await?;
    Ok(HttpResponse::Ok().json(detail(&ctx, &app).await?))
}

/// `GET /v1/apps/{name}/revisions`, newest first.
#[utoipa::path(get, path = "/v1/apps/{name}/revisions", tag = "revisions", summary = "Revisions, newest first", params(crate::api::page::PageParams, ("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::RevisionList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
    req: actix_web::HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let app = app.into_app();
    let mut all = ctx.store.app_revisions(&app.id).await?;
    all.sort_by_key(|r| std::cmp::Reverse(r.number));
    let total = all.len() as u64;
    let (all, next) = page.slice(all, |r| page::num_key(r.number), true);
    let revisions = all.into_iter().map(|r| summary(&ctx, &app, r)).collect();
    Ok(page::respond(
        &req,
        &RevisionList { revisions },
        next,
        Some(total),
    ))
}

/// `POST /v1/apps/{name}/rollback` with [`RollbackRequest`]: a new revision with the droplet,
/// command and env of revision `to` (default: the one before the current).
#[utoipa::path(post, path = "/v1/apps/{name}/rollback", tag = "revisions", summary = "Roll back to an earlier revision", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::RollbackRequest, responses((status = 200, body = paas_common::api::AppDetail), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn rollback(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<RollbackRequest>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    ops::rollback(&ctx, &Actor::from(&user), &app, body.to).await?;
    let app = find_app(&ctx, &app.id).await?;
    Ok(HttpResponse::Ok().json(detail(&ctx, &app).await?))
}
