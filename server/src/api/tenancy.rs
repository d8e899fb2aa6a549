//! Users, roles, spaces and API tokens. Who may call what is decided by `crate::authz`; these
//! handlers only act.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};
use paas_common::api::{
    CreateSpaceRequest, CreateUserRequest, OrgRole, SetRoleRequest, SpaceInfo, SpaceList,
    SpaceQuota, SpaceQuotaInfo, SpaceRole, TokenCreateRequest, TokenCreated, TokenInfo, TokenList,
    UserInfo, UserList,
};
use paas_common::domain::AppName;
use paas_common::ErrorCode;
use std::collections::HashMap;

use super::page::{self, Page};
use super::Ctx;
use crate::auth::{hash_password, sha256_hex};
use crate::authz::{Principal, Role, Scope};
use crate::error::{ApiResult, Error};
use crate::store::{AppRecord, Event, TokenRecord, User};

const MAX_TOKEN_DAYS: i64 = 365;

/// `30d`, `12h`, `90m`, `45s` or plain seconds.
pub fn parse_lifetime(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid lifetime {s:?}: use e.g. 30d, 12h or 90m"))?;
    let d = match unit {
        "d" => Duration::days(n),
        "h" => Duration::hours(n),
        "m" => Duration::minutes(n),
        "s" => Duration::seconds(n),
        _ => return Err(format!("invalid lifetime {s:?}: use e.g. 30d, 12h or 90m")),
    };
    if d <= Duration::zero() || d > Duration::days(MAX_TOKEN_DAYS) {
        return Err(format!(
            "lifetime {s:?} must be between 1s and {MAX_TOKEN_DAYS}d"
        ));
    }
    Ok(d)
}

fn token_info(t: &TokenRecord) -> TokenInfo {
    TokenInfo {
        id: t.id.clone(),
        name: t.name.clone(),
        scope: t.scope.clone(),
        app: t.app_name.clone(),
        created_at: t.created_at,
        expires_at: t.expires_at,
        last_used_at: t.last_used_at,
        revoked: t.revoked_at.is_some(),
    }
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", summary = "Create a CI token (shown once)", request_body = paas_common::api::TokenCreateRequest, responses((status = 201, body = paas_common::api::TokenCreated), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn create_token(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    body: web::Json<TokenCreateRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    if body.name.trim().is_empty() || body.name.len() > 100 {
        return Err(Error::api(
            ErrorCode::BadRequest,
            "a token needs a name of 1 to 100 characters",
        ));
    }
    Scope::parse(&body.scope).ok_or_else(|| {
        Error::api(
            ErrorCode::BadRequest,
            format!("invalid scope {:?}: use read, deploy or admin", body.scope),
        )
    })?;
    // A token for an app in reach is pinned to it (by id) and its creation goes into that app's
    // audit log. A token for an app that does not exist yet is how CI starts (its first push
    // creates the app); one for an app out of the caller's reach is made the same way, so the
    // answer tells nothing, and it reaches nothing: the token's app restriction only narrows
    // its owner's roles. Its event goes to the caller's own history, never to that app's.
    let mut pinned: Option<AppRecord> = None;
    if let Some(app) = &body.app {
        let name = AppName::parse(app).map_err(|m| Error::api(ErrorCode::InvalidName, m))?;
        pinned = crate::authz::reachable_app(&ctx, &req, &who, &name)
            .await?
            .map(|(rec, _)| rec);
    }
    let lifetime = match &body.expires_in {
        Some(s) => parse_lifetime(s).map_err(|m| Error::api(ErrorCode::BadRequest, m))?,
        None => Duration::days(30),
    };
    let now = Utc::now();
    let id = uuid::Uuid::new_v4().to_string();
    let expires_at = now + lifetime;
    let (token, kid) = ctx.keys.issue_ci(
        &who.username,
        &id,
        &body.scope,
        body.app.as_deref(),
        expires_at,
    )?;
    let rec = TokenRecord {
        id,
        user_id: who.user_id.clone(),
        name: body.name.trim().to_string(),
        scope: body.scope,
        app_name: body.app,
        app_id: pinned.as_ref().map(|a| a.id.clone()),
        token_hash: sha256_hex(&token),
        created_at: now,
        expires_at,
        last_used_at: None,
        revoked_at: None,
        kid: Some(kid),
    };
    ctx.store.insert_token(&rec).await?;
    ctx.store
        .add_event(&Event {
            app_name: pinned.as_ref().map(|a| a.name.clone()),
            app_id: pinned.as_ref().map(|a| a.id.clone()),
            actor: who.actor(),
            kind: "token.create".into(),
            message: match &rec.app_name {
                Some(app) => format!(
                    "created API token {:?} ({} scope, app {app})",
                    rec.name, rec.scope
                ),
                None => format!("created API token {:?} ({} scope)", rec.name, rec.scope),
            },
        })
        .await?;
    Ok(HttpResponse::Created().json(TokenCreated {
        token,
        info: token_info(&rec),
    }))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", summary = "The caller's tokens", params(crate::api::page::PageParams), responses((status = 200, body = paas_common::api::TokenList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list_tokens(ctx: Ctx, who: Principal, req: HttpRequest) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let mut all = ctx.store.list_tokens(&who.user_id).await?;
    let key = |t: &TokenRecord| {
        format!(
            "{}\0{}",
            page::num_key(t.created_at.timestamp_micros()),
            t.id
        )
    };
    all.sort_by_key(key);
    let total = all.len() as u64;
    let (all, next) = page.slice(all, key, false);
    let tokens = all.iter().map(token_info).collect();
    Ok(page::respond(
        &req,
        &TokenList { tokens },
        next,
        Some(total),
    ))
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", summary = "Revoke a token", params(("id" = String, Path, description = "Token id (jti)")), responses((status = 204, description = "Revoked"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn revoke_token(
    ctx: Ctx,
    who: Principal,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    if !ctx.store.revoke_token(&id, &who.user_id).await? {
        return Err(Error::api(
            ErrorCode::TokenNotFound,
            format!("no active token {id:?} of yours"),
        ));
    }
    ctx.store
        .add_event(&Event {
            app_name: None,
            app_id: None,
            actor: who.actor(),
            kind: "token.revoke".into(),
            message: format!("revoked API token {id}"),
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn space_names(ctx: &Ctx) -> ApiResult<HashMap<String, String>> {
    Ok(ctx
        .store
        .list_spaces()
        .await?
        .into_iter()
        .map(|s| (s.id, format!("{}/{}", s.org, s.name)))
        .collect())
}

async fn user_info(ctx: &Ctx, u: &User, spaces: &HashMap<String, String>) -> ApiResult<UserInfo> {
    let mut roles: Vec<SpaceRole> = ctx
        .store
        .user_roles(&u.id)
        .await?
        .into_iter()
        .filter_map(|(space, role)| {
            spaces.get(&space).map(|s| SpaceRole {
                space: s.clone(),
                role,
            })
        })
        .collect();
    roles.sort_by(|a, b| a.space.cmp(&b.space));
    let mut org_roles: Vec<OrgRole> = ctx
        .store
        .user_org_roles(&u.id)
        .await?
        .into_iter()
        .map(|(org, role)| OrgRole { org, role })
        .collect();
    org_roles.sort_by(|a, b| a.org.cmp(&b.org));
    Ok(UserInfo {
        username: u.username.clone(),
        operator: u.operator,
        roles,
        org_roles,
        created_at: u.created_at,
    })
}

#[utoipa::path(get, path = "/v1/users", tag = "users", summary = "Users and their roles (operator)", params(crate::api::page::PageParams), responses((status = 200, body = paas_common::api::UserList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list_users(ctx: Ctx, req: HttpRequest) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let spaces = space_names(&ctx).await?;
    let mut all = ctx.store.list_users().await?;
    all.sort_by(|a, b| a.username.cmp(&b.username));
    let total = all.len() as u64;
    let (all, next) = page.slice(all, |u| u.username.clone(), false);
    let mut users = Vec::new();
    for u in all {
        users.push(user_info(&ctx, &u, &spaces).await?);
    }
    Ok(page::respond(&req, &UserList { users }, next, Some(total)))
}

fn valid_username(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

#[utoipa::path(post, path = "/v1/users", tag = "users", summary = "Add a user (operator)", request_body = paas_common::api::CreateUserRequest, responses((status = 201, body = paas_common::api::UserInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn create_user(
    ctx: Ctx,
    who: Principal,
    body: web::Json<CreateUserRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    if !valid_username(&body.username) {
        return Err(Error::api(
            ErrorCode::InvalidName,
            format!("invalid username {:?}", body.username),
        ));
    }
    if body.password.chars().count() < 8 {
        return Err(Error::api(
            ErrorCode::BadRequest,
            "the password must have at least 8 characters",
        ));
    }
    let password = body.password.clone();
    let hash = web::block(move || hash_password(&password))
        .await
        .map_err(Error::internal)??;
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        username: body.username.clone(),
        password_hash: hash,
        created_at: Utc::now(),
        operator: body.operator,
    };
    if !ctx.store.create_user_if_missing(&user).await? {
        return Err(Error::api(
            ErrorCode::Conflict,
            format!("user {:?} already exists", body.username),
        ));
    }
    ctx.store
        .add_event(&Event {
            app_name: None,
            app_id: None,
            actor: who.actor(),
            kind: "user.create".into(),
            message: format!(
                "created user {}{}",
                user.username,
                if user.operator { " (operator)" } else { "" }
            ),
        })
        .await?;
    let spaces = space_names(&ctx).await?;
    Ok(HttpResponse::Created().json(user_info(&ctx, &user, &spaces).await?))
}

#[utoipa::path(put, path = "/v1/users/{name}/roles", tag = "users", summary = "Set a user's role in a space, or in an org with `org` (operators; org managers in their org)", params(("name" = String, Path, description = "Username")), request_body = paas_common::api::SetRoleRequest, responses((status = 200, body = paas_common::api::UserInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn set_role(
    ctx: Ctx,
    who: Principal,
    name: web::Path<String>,
    body: web::Json<SetRoleRequest>,
) -> ApiResult<web::Json<UserInfo>> {
    let user =
        ctx.store.user_by_name(&name).await?.ok_or_else(|| {
            Error::api(ErrorCode::UserNotFound, format!("user {name:?} not found"))
        })?;
    if let Some(org) = body.org.as_deref().filter(|_| body.space.is_empty()) {
        if !who.manages_org(org) {
            return Err(Error::api(
                ErrorCode::Forbidden,
                format!(
                    "not allowed: only an operator or a manager of org {org} gives roles in it"
                ),
            ));
        }
        let role = match body.role.as_deref() {
            None | Some("none") => None,
            Some(r @ (crate::authz::ORG_MANAGER | crate::authz::ORG_AUDITOR)) => Some(r),
            Some(r) => {
                return Err(Error::api(
                    ErrorCode::BadRequest,
                    format!("invalid org role {r:?}: use manager or auditor"),
                ))
            }
        };
        ctx.store
            .set_org_role(&user.id, org, role)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::NotFound(m) => Error::api(ErrorCode::NotFound, m),
                e => e.into(),
            })?;
        ctx.store
            .add_event(&Event {
                app_name: None,
                app_id: None,
                actor: who.actor(),
                kind: "user.role".into(),
                message: format!(
                    "{} is now {} of org {org}",
                    user.username,
                    role.unwrap_or("nothing")
                ),
            })
            .await?;
        let spaces = space_names(&ctx).await?;
        return Ok(web::Json(user_info(&ctx, &user, &spaces).await?));
    }
    let (org, space) = body.space.split_once('/').ok_or_else(|| {
        Error::api(
            ErrorCode::BadRequest,
            format!(
                "space {:?} must be ORG/SPACE (or give an org role with `org`)",
                body.space
            ),
        )
    })?;
    if !who.manages_org(org) {
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!("not allowed: only an operator or a manager of org {org} gives roles in it"),
        ));
    }
    let space = ctx.store.space(org, space, false).await?.ok_or_else(|| {
        Error::api(
            ErrorCode::SpaceNotFound,
            format!("space {} not found", body.space),
        )
    })?;
    let role = match body.role.as_deref() {
        None | Some("none") => None,
        Some(r) => Some(Role::parse(r).ok_or_else(|| {
            Error::api(
                ErrorCode::BadRequest,
                format!("invalid role {r:?}: use admin, developer or viewer"),
            )
        })?),
    };
    ctx.store
        .set_role(&user.id, &space.id, role.map(Role::as_str))
        .await?;
    ctx.store
        .add_event(&Event {
            app_name: None,
            app_id: None,
            actor: who.actor(),
            kind: "user.role".into(),
            message: format!(
                "{} is now {} in {}",
                user.username,
                role.map_or("nothing", Role::as_str),
                body.space
            ),
        })
        .await?;
    let spaces = space_names(&ctx).await?;
    Ok(web::Json(user_info(&ctx, &user, &spaces).await?))
}

#[utoipa::path(get, path = "/v1/spaces", tag = "spaces", summary = "The orgs and spaces the caller has a role in (operators: all)", params(crate::api::page::PageParams), responses((status = 200, body = paas_common::api::SpaceList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list_spaces(ctx: Ctx, who: Principal, req: HttpRequest) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    // The spaces the caller has a role in; operators see all.
    let mut spaces: Vec<SpaceInfo> = ctx
        .store
        .list_spaces()
        .await?
        .into_iter()
        .filter(|s| who.is_operator() || who.role_in(&s.id).is_some())
        .map(|s| SpaceInfo {
            org: s.org,
            name: s.name,
        })
        .collect();
    // Org and space names are DNS labels: `/` cannot occur in them.
    let key = |s: &SpaceInfo| format!("{}/{}", s.org, s.name);
    spaces.sort_by_key(key);
    let total = spaces.len() as u64;
    let (spaces, next) = page.slice(spaces, key, false);
    Ok(page::respond(
        &req,
        &SpaceList { spaces },
        next,
        Some(total),
    ))
}

#[utoipa::path(post, path = "/v1/spaces", tag = "spaces", summary = "Create a space (operators; org managers in their org)", request_body = paas_common::api::CreateSpaceRequest, responses((status = 201, body = paas_common::api::SpaceInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn create_space(
    ctx: Ctx,
    who: Principal,
    body: web::Json<CreateSpaceRequest>,
) -> ApiResult<HttpResponse> {
    if !who.manages_org(&body.org) {
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!(
                "not allowed: only an operator or a manager of org {} makes spaces in it",
                body.org
            ),
        ));
    }
    for n in [&body.org, &body.name] {
        AppName::parse(n).map_err(|_| {
            Error::api(
                ErrorCode::InvalidName,
                format!("invalid org or space name {n:?}"),
            )
        })?;
    }
    let space = ctx
        .store
        .space(&body.org, &body.name, true)
        .await?
        .ok_or_else(|| Error::internal("space creation returned nothing"))?;
    ctx.store
        .add_event(&Event {
            app_name: None,
            app_id: None,
            actor: who.actor(),
            kind: "space.create".into(),
            message: format!("created space {}/{}", space.org, space.name),
        })
        .await?;
    Ok(HttpResponse::Created().json(SpaceInfo {
        org: space.org,
        name: space.name,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("30d").unwrap(), Duration::days(30));
        assert_eq!(parse_lifetime("12h").unwrap(), Duration::hours(12));
        assert_eq!(parse_lifetime("90").unwrap(), Duration::seconds(90));
        assert!(parse_lifetime("0s").is_err());
        assert!(parse_lifetime("400d").is_err());
        assert!(parse_lifetime("soon").is_err());
        assert!(parse_lifetime("-5d").is_err());
    }
}

/// The space `{org}/{space}` names, when the caller may read it (anyone with a role there, its
/// org's managers, operators; not through a token made for one app, which reaches that app
/// only); one out of reach answers like a missing one.
pub(super) async fn readable_space(
    ctx: &Ctx,
    who: &Principal,
    org: &str,
    space: &str,
) -> ApiResult<crate::store::SpaceRecord> {
    ctx.store
        .space(org, space, false)
        .await?
        .filter(|s| {
            who.manages_org(org)
                || (who.token.as_ref().is_none_or(|t| t.app.is_none())
                    && who.role_in(&s.id).is_some())
        })
        .ok_or_else(|| {
            Error::api(
                ErrorCode::SpaceNotFound,
                format!("space {org}/{space} not found"),
            )
        })
}

async fn quota_info(ctx: &Ctx, space: &crate::store::SpaceRecord) -> ApiResult<SpaceQuotaInfo> {
    let quota = ctx.store.space_quota(&space.id).await?;
    let (usage, _) = crate::deploy::quota::usage(ctx, &space.id).await?;
    Ok(SpaceQuotaInfo {
        space: format!("{}/{}", space.org, space.name),
        quota,
        usage,
    })
}

#[utoipa::path(get, path = "/v1/spaces/{org}/{space}/quota", tag = "spaces", summary = "A space's quota and what it uses (anyone with a role in the space)", params(("org" = String, Path, description = "Organization"), ("space" = String, Path, description = "Space")), responses((status = 200, body = paas_common::api::SpaceQuotaInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn get_quota(
    ctx: Ctx,
    who: Principal,
    path: web::Path<(String, String)>,
) -> ApiResult<web::Json<SpaceQuotaInfo>> {
    let (org, space) = path.into_inner();
    let space = readable_space(&ctx, &who, &org, &space).await?;
    Ok(web::Json(quota_info(&ctx, &space).await?))
}

#[utoipa::path(put, path = "/v1/spaces/{org}/{space}/quota", tag = "spaces", summary = "Set a space's quota; an absent limit is unlimited (operators; org managers in their org)", params(("org" = String, Path, description = "Organization"), ("space" = String, Path, description = "Space")), request_body = paas_common::api::SpaceQuota, responses((status = 200, body = paas_common::api::SpaceQuotaInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn set_quota(
    ctx: Ctx,
    who: Principal,
    path: web::Path<(String, String)>,
    body: web::Json<SpaceQuota>,
) -> ApiResult<web::Json<SpaceQuotaInfo>> {
    let (org, name) = path.into_inner();
    if !who.manages_org(&org) {
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!("not allowed: only an operator or a manager of org {org} sets its quotas"),
        ));
    }
    let space = readable_space(&ctx, &who, &org, &name).await?;
    let quota = body.into_inner();
    let event = Event {
        app_name: None,
        app_id: None,
        actor: who.actor(),
        kind: "space.quota".into(),
        message: format!(
            "set the quota of {org}/{name}: {}",
            crate::deploy::quota::describe(&quota)
        ),
    };
    ctx.store.set_space_quota(&space.id, &quota, &event).await?;
    tracing::info!(space = %format!("{org}/{name}"), quota = %crate::deploy::quota::describe(&quota), "space quota set");
    Ok(web::Json(quota_info(&ctx, &space).await?))
}
