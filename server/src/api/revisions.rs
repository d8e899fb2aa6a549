//! Revisions, env and rollback (issue 3). Every env change and rollback makes a new revision that
//! reuses a stored droplet, so nothing is rebuilt; convergence then replaces the instances as for
//! a push. Env values are returned only by `GET .../env`; revision listings show keys only.

use actix_web::{web, HttpResponse};
use paas_common::api::{AppEnv, EnvUpdate, RevisionList, RevisionSummary, RollbackRequest};
use paas_common::ErrorCode;
use std::collections::BTreeMap;

use super::apps::{detail, find_app, log_platform};
use super::page::{self, Page};
use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, Viewer};
use crate::error::{ApiResult, Error};
use crate::store::{AppRecord, Event, NewRevision, RevisionExtra, RevisionRecord};

/// Env names the platform sets itself; a user value would be overwritten or break routing.
const RESERVED: &[&str] = &["PORT", "HOME", "PATH"];

/// Checks one env var: a POSIX-ish name that is not the platform's, and a value without NUL.
pub fn check_env(key: &str, value: Option<&str>) -> ApiResult<()> {
    let name_ok = !key.is_empty()
        && key.len() <= 256
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(Error::api(
            ErrorCode::InvalidEnv,
            format!("invalid env var name {key:?}: use letters, digits and '_', not starting with a digit"),
        ));
    }
    if RESERVED.contains(&key) || key.starts_with("PAAS_") || key.starts_with("CF_") {
        return Err(Error::api(
            ErrorCode::InvalidEnv,
            format!("env var {key} is set by the platform"),
        ));
    }
    if let Some(v) = value {
        if v.contains('\0') || v.len() > 32 * 1024 {
            return Err(Error::api(
                ErrorCode::InvalidEnv,
                format!("the value of {key} is too long or holds a NUL byte"),
            ));
        }
    }
    Ok(())
}

async fn current(ctx: &Ctx, app: &AppRecord) -> ApiResult<Option<RevisionRecord>> {
    Ok(match app.current_revision {
        Some(n) => ctx.store.revision(&app.id, n).await?,
        None => None,
    })
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
async fn redeploy(
    ctx: &Ctx,
    user: &AuthUser,
    app: &AppRecord,
    base: &RevisionRecord,
    env: BTreeMap<String, String>,
    kind: &str,
    description: String,
) -> ApiResult<i64> {
    let rev = NewRevision {
        package: base.package.clone(),
        droplet: base.droplet.clone(),
        command: base.command.clone(),
        detected: base.detected.clone(),
        desired_instances: app.desired_instances,
        memory_mb: app.memory_mb,
    };
    let extra = RevisionExtra {
        env,
        created_by: user.username.clone(),
        description: description.clone(),
        disk_mb: None,
        push_settings: None,
        ..Default::default()
    };
    let ev = Event {
        app_name: Some(app.name.clone()),
        actor: user.actor.clone(),
        kind: kind.into(),
        message: description.clone(),
    };
    let number = ctx
        .store
        .deploy_revision_with(&app.id, &rev, &extra, &ev)
        .await?;
    log_platform(
        ctx,
        &app.name,
        "API",
        format!("{} made revision {number}: {description}", user.username),
    )
    .await;
    ctx.converge.notify_one();
    crate::droplets::collect_soon(ctx);
    Ok(number)
}

/// `PATCH /v1/apps/{name}/env` with [`EnvUpdate`]: a new revision, same droplet, new env.
#[utoipa::path(patch, path = "/v1/apps/{name}/env", tag = "env", summary = "Set or unset env vars: a new revision", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::EnvUpdate, responses((status = 200, body = paas_common::api::AppDetail), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn update_env(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<EnvUpdate>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    let body = body.into_inner();
    if body.set.is_empty() && body.unset.is_empty() {
        return Err(Error::api(
            ErrorCode::BadRequest,
            "nothing to change: give `set` or `unset`",
        ));
    }
    let base = current(&ctx, &app).await?.ok_or_else(|| {
        Error::api(
            ErrorCode::RevisionNotFound,
            format!("{} has no revision yet: push it first", app.name),
        )
    })?;
    let mut env = base.env.clone();
    for k in &body.secret {
        if !body.set.contains_key(k) {
            return Err(Error::api(
                ErrorCode::InvalidEnv,
                format!("secret names {k}, which `set` does not"),
            ));
        }
    }
    for (k, v) in &body.set {
        check_env(k, Some(v))?;
        // A secret is sealed before it reaches the store; the event names only the key.
        let v = if body.secret.contains(k) {
            ctx.secrets.seal(&app.id, v)
        } else {
            v.clone()
        };
        env.insert(k.clone(), v);
    }
    for k in &body.unset {
        if env.remove(k).is_none() {
            return Err(Error::api(
                ErrorCode::InvalidEnv,
                format!("env var {k} is not set on {}", app.name),
            ));
        }
    }
    let mut what: Vec<String> = body.set.keys().map(|k| format!("set-env {k}")).collect();
    what.extend(body.unset.iter().map(|k| format!("unset-env {k}")));
    redeploy(&ctx, &user, &app, &base, env, "app.env", what.join(", ")).await?;
    let app = find_app(&ctx, &app.name).await?;
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
    let cur = app.current_revision.ok_or_else(|| {
        Error::api(
            ErrorCode::RevisionNotFound,
            format!("{} has no revision yet: push it first", app.name),
        )
    })?;
    let to = match body.to {
        Some(n) => n,
        None if cur > 1 => cur - 1,
        None => {
            return Err(Error::api(
                ErrorCode::RevisionNotFound,
                format!(
                    "{} has only revision {cur}: nothing to roll back to",
                    app.name
                ),
            ))
        }
    };
    if to == cur {
        return Err(Error::api(
            ErrorCode::Conflict,
            format!(
                "revision {to} is already the current revision of {}",
                app.name
            ),
        ));
    }
    let target = ctx.store.revision(&app.id, to).await?.ok_or_else(|| {
        Error::api(
            ErrorCode::RevisionNotFound,
            format!("{} has no revision {to}", app.name),
        )
    })?;
    if !ctx.blobs.exists(&target.droplet) {
        return Err(Error::api(
            ErrorCode::DropletNotFound,
            format!(
                "the droplet of revision {to} was collected (the newest {} are kept): push that code again",
                ctx.settings.keep_droplets
            ),
        ));
    }
    let env = target.env.clone();
    redeploy(
        &ctx,
        &user,
        &app,
        &target,
        env,
        "app.rollback",
        format!("rollback to {to}"),
    )
    .await?;
    let app = find_app(&ctx, &app.name).await?;
    Ok(HttpResponse::Ok().json(detail(&ctx, &app).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_checked() {
        assert!(check_env("GREETING", Some("hi")).is_ok());
        assert!(check_env("_X1", None).is_ok());
        for bad in [
            "",
            "1X",
            "A-B",
            "A B",
            "PORT",
            "PAAS_APP_REVISION",
            "CF_INSTANCE_INDEX",
        ] {
            assert!(check_env(bad, Some("v")).is_err(), "{bad:?} accepted");
        }
        assert!(check_env("K", Some("a\0b")).is_err());
    }
}
