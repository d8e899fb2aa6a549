use actix_web::web;
use paas_common::api::{LoginRequest, LoginResponse};
use paas_common::ErrorCode;

use super::Ctx;
use crate::auth::verify_password;
use crate::error::{ApiResult, Error};
use crate::state::AppCtx;
use crate::store::Event;

#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", summary = "Log in with a username and password; answers an access JWT", request_body = paas_common::api::LoginRequest, security(()), responses((status = 200, body = paas_common::api::LoginResponse), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn login(
    ctx: Ctx,
    req: actix_web::HttpRequest,
    body: web::Json<LoginRequest>,
) -> ApiResult<web::Json<LoginResponse>> {
    check_credentials(&ctx, &req, &body.username, &body.password).await?;
    let (token, expires_at) = ctx.keys.issue(&body.username)?;
    ctx.store
        .add_event(&Event {
            app_name: None,
            actor: body.username.clone(),
            kind: "login".into(),
            message: "logged in".into(),
        })
        .await?;
    Ok(web::Json(LoginResponse { token, expires_at }))
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
    let key = format!(
        "{}|{}",
        req.peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default(),
        username.to_lowercase()
    );
    if let Some(wait) = locked_out(ctx, &key) {
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
        record_failure(ctx, &key);
        return Err(Error::api(
            ErrorCode::InvalidCredentials,
            "wrong username or password",
        ));
    }
    if let Ok(mut f) = ctx.login_failures.lock() {
        f.remove(&key);
    }
    Ok(())
}

/// How long `key` must still wait, if it failed too often within the window.
fn locked_out(ctx: &AppCtx, key: &str) -> Option<std::time::Duration> {
    let mut failures = ctx.login_failures.lock().ok()?;
    let (count, since) = *failures.get(key)?;
    let elapsed = since.elapsed();
    if elapsed >= FAILURE_WINDOW {
        failures.remove(key);
        return None;
    }
    (count >= MAX_FAILURES).then(|| FAILURE_WINDOW - elapsed)
}

fn record_failure(ctx: &AppCtx, key: &str) {
    let Ok(mut failures) = ctx.login_failures.lock() else {
        return;
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
}
