//! Logins, refresh tokens, logout and the signing keys' admin endpoints.

use actix_web::{web, HttpResponse};
use chrono::{Duration, Utc};
use paas_common::api::{
    LoginRequest, LoginResponse, RefreshRequest, SigningKeyInfo, SigningKeyList,
};
use paas_common::ErrorCode;

use super::Ctx;
use crate::auth::{random_token, sha256_hex, verify_password};
use crate::authz::Principal;
use crate::error::{ApiResult, Error};
use crate::state::AppCtx;
use crate::store::{Event, RefreshRecord, User};

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", summary = "Log in with a username and password; answers a short-lived access JWT and a refresh token", request_body = paas_common::api::LoginRequest, security(()), responses((status = 200, body = paas_common::api::LoginResponse), (status = "4XX", description = "A client error; `code` says which (`too_many_requests` after 5 failures within a minute)", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn login(
    ctx: Ctx,
    req: actix_web::HttpRequest,
    body: web::Json<LoginRequest>,
) -> ApiResult<web::Json<LoginResponse>> {
    check_credentials(&ctx, &req, &body.username, &body.password).await?;
    let user = ctx
        .store
        .user_by_name(&body.username)
        .await?
        .ok_or_else(|| Error::api(ErrorCode::InvalidCredentials, "wrong username or password"))?;
    let family = uuid::Uuid::new_v4().to_string();
    let resp = issue_pair(&ctx, &user, &family).await?;
    ctx.store
        .add_event(&Event {
            app_name: None,
            app_id: None,
            actor: body.username.clone(),
            kind: "login".into(),
            message: "logged in".into(),
        })
        .await?;
    Ok(web::Json(resp))
}

/// An access token and a new refresh token of `family`.
async fn issue_pair(ctx: &AppCtx, user: &User, family: &str) -> ApiResult<LoginResponse> {
    let (token, expires_at) = ctx.keys.issue_access(&user.username)?;
    let refresh = format!("paasr_{}", random_token(48));
    let now = Utc::now();
    let refresh_expires_at = now + Duration::seconds(ctx.settings.refresh_token_ttl_secs as i64);
    ctx.store
        .insert_refresh_token(&RefreshRecord {
            id: uuid::Uuid::new_v4().to_string(),
            family: family.to_string(),
            user_id: user.id.clone(),
            token_hash: sha256_hex(&refresh),
            created_at: now,
            expires_at: refresh_expires_at,
            used_at: None,
            revoked_at: None,
        })
        .await?;
    Ok(LoginResponse {
        token,
        expires_at,
        refresh_token: Some(refresh),
        refresh_expires_at: Some(refresh_expires_at),
    })
}

fn refresh_refused(why: &str) -> Error {
    Error::api(ErrorCode::Unauthorized, format!("{why}; log in again"))
}

/// `POST /v1/auth/refresh`: a used, revoked, expired or unknown refresh token gets 401. A used
/// one presented again means two parties hold it (one of them stole it), so its whole family is
/// revoked and both must log in again.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", summary = "Trade a refresh token (single use) for a new access token and refresh token", request_body = paas_common::api::RefreshRequest, security(()), responses((status = 200, body = paas_common::api::LoginResponse), (status = "4XX", description = "A client error; `code` says which (`unauthorized` for a used, revoked or expired refresh token)", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn refresh(
    ctx: Ctx,
    body: web::Json<RefreshRequest>,
) -> ApiResult<web::Json<LoginResponse>> {
    let now = Utc::now();
    let rec = ctx
        .store
        .refresh_token_by_hash(&sha256_hex(body.refresh_token.trim()))
        .await?
        .ok_or_else(|| refresh_refused("unknown refresh token"))?;
    if rec.revoked_at.is_some() {
        return Err(refresh_refused("this refresh token was revoked"));
    }
    if rec.expires_at < now && rec.used_at.is_none() {
        return Err(refresh_refused("this refresh token expired"));
    }
    if rec.used_at.is_some() || !ctx.store.use_refresh_token(&rec.id, now).await? {
        ctx.store.revoke_refresh_family(&rec.family, now).await?;
        let user = ctx.store.user_by_id(&rec.user_id).await?;
        ctx.store
            .add_event(&Event {
                app_name: None,
                app_id: None,
                actor: user
                    .map(|u| u.username)
                    .unwrap_or_else(|| rec.user_id.clone()),
                kind: "auth.refresh_reuse".into(),
                message: "a used refresh token was presented again; revoked its login".into(),
            })
            .await?;
        return Err(refresh_refused("this refresh token was already used"));
    }
    let user = ctx
        .store
        .user_by_id(&rec.user_id)
        .await?
        .ok_or_else(|| refresh_refused("the user no longer exists"))?;
    Ok(web::Json(issue_pair(&ctx, &user, &rec.family).await?))
}

/// `POST /v1/auth/logout`: revokes the refresh token and every token refreshed from the same
/// login. Access tokens already issued run out by themselves (minutes).
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", summary = "Revoke a refresh token (and its successors)", request_body = paas_common::api::RefreshRequest, security(()), responses((status = 204, description = "Revoked"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn logout(ctx: Ctx, body: web::Json<RefreshRequest>) -> ApiResult<HttpResponse> {
    let rec = ctx
        .store
        .refresh_token_by_hash(&sha256_hex(body.refresh_token.trim()))
        .await?
        .ok_or_else(|| refresh_refused("unknown refresh token"))?;
    ctx.store
        .revoke_refresh_family(&rec.family, Utc::now())
        .await?;
    if let Some(user) = ctx.store.user_by_id(&rec.user_id).await? {
        ctx.store
            .add_event(&Event {
                app_name: None,
                app_id: None,
                actor: user.username,
                kind: "logout".into(),
                message: "logged out (refresh token revoked)".into(),
            })
            .await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/admin/keys", tag = "auth", summary = "The JWT signing keys (operator)", responses((status = 200, body = paas_common::api::SigningKeyList), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list_keys(ctx: Ctx) -> ApiResult<web::Json<SigningKeyList>> {
    let active = ctx.keys.active_kid();
    let keys = ctx
        .store
        .signing_keys()
        .await?
        .into_iter()
        .map(|k| SigningKeyInfo {
            active: k.kid == active,
            kid: k.kid,
            created_at: k.created_at,
            retired_at: k.retired_at,
        })
        .collect();
    Ok(web::Json(SigningKeyList { keys }))
}

/// `POST /v1/admin/keys/rotate`: a new active key; the old one verifies the tokens it signed for
/// one token lifetime (CI tokens: while they live), then is dropped.
#[utoipa::path(post, path = "/v1/admin/keys/rotate", tag = "auth", summary = "Make a new active signing key (operator)", responses((status = 201, body = paas_common::api::SigningKeyList), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn rotate_keys(ctx: Ctx, who: Principal) -> ApiResult<HttpResponse> {
    crate::auth::rotate_keys(&ctx, &who.actor()).await?;
    let list = list_keys(ctx).await?.into_inner();
    Ok(HttpResponse::Created().json(list))
}

const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Checks a username and password for the API and the dashboard alike: rate-limited per client
/// address and username, argon2 off the async workers, the same time spent on unknown users.
pub async fn check_credentials(
    ctx: &AppCtx,
    req: &actix_web::HttpRequest,
    username: &str,
    password: &str,
) -> ApiResult<()> {
    let ip = crate::router::server::client_ip(req);
    let user_key = username.to_lowercase();
    // One source guessing one account, one account guessed from many sources, and one source
    // spraying many accounts: each is held back on its own.
    let keys = [
        (format!("pair|{ip}|{user_key}"), MAX_FAILURES),
        (
            format!("user|{user_key}"),
            ctx.settings.login_failures_per_key,
        ),
        (format!("ip|{ip}"), ctx.settings.login_failures_per_key),
    ];
    if let Some(wait) = keys
        .iter()
        .filter_map(|(k, max)| locked_out(ctx, k, *max))
        .max()
    {
        return Err(Error::api(
            ErrorCode::TooManyRequests,
            format!(
                "too many failed logins; try again in {} s",
                wait.as_secs().max(1)
            ),
        ));
    }
    let user = ctx.store.user_by_name(username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = password.to_string();
    let ok = web::block(move || match hash {
        Some(h) => verify_password(&password, &h),
        None => {
            let _ = verify_password(&password, crate::auth::dummy_hash());
            false
        }
    })
    .await
    .map_err(Error::internal)?;
    if !ok {
        let mut locked = false;
        for (k, max) in &keys {
            locked |= record_failure(ctx, k) == *max;
        }
        if locked {
            ctx.store
                .add_event(&Event {
                    app_name: None,
                    app_id: None,
                    actor: username.to_string(),
                    kind: "login.locked".into(),
                    message: format!(
                        "too many failed logins (from {ip}): held back for {} s",
                        FAILURE_WINDOW.as_secs()
                    ),
                })
                .await?;
        }
        return Err(Error::api(
            ErrorCode::InvalidCredentials,
            "wrong username or password",
        ));
    }
    if let Ok(mut f) = ctx.login_failures.lock() {
        f.remove(&keys[0].0);
    }
    Ok(())
}

/// How long `key` must still wait, if it failed too often within the window.
fn locked_out(ctx: &AppCtx, key: &str, max: u32) -> Option<std::time::Duration> {
    let mut failures = ctx.login_failures.lock().ok()?;
    let (count, since) = *failures.get(key)?;
    let elapsed = since.elapsed();
    if elapsed >= FAILURE_WINDOW {
        failures.remove(key);
        return None;
    }
    (count >= max).then(|| FAILURE_WINDOW - elapsed)
}

/// Counts a failure of `key`; returns the count within the window (0 if it could not count).
fn record_failure(ctx: &AppCtx, key: &str) -> u32 {
    let Ok(mut failures) = ctx.login_failures.lock() else {
        return 0;
    };
    // Bound the map: a flood of distinct keys only costs memory up to this size.
    if failures.len() > 100_000 {
        failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
    }
    let entry = failures
        .entry(key.to_string())
        .or_insert((0, std::time::Instant::now()));
    if entry.1.elapsed() >= FAILURE_WINDOW {
        *entry = (0, std::time::Instant::now());
    }
    entry.0 += 1;
    entry.0
}
