use actix_web::web;
use paas_common::api::{LoginRequest, LoginResponse};
use paas_common::ErrorCode;

use super::Ctx;
use crate::auth::verify_password;
use crate::error::{ApiResult, Error};
use crate::store::Event;

pub async fn login(ctx: Ctx, body: web::Json<LoginRequest>) -> ApiResult<web::Json<LoginResponse>> {
    let user = ctx.store.user_by_name(&body.username).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let password = body.password.clone();
    // argon2 is deliberately slow: keep it off the async workers. Unknown users are checked
    // against a dummy hash so timing does not tell which usernames exist.
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
        return Err(Error::api(ErrorCode::InvalidCredentials, "wrong username or password"));
    }
    let (token, expires_at) = ctx.keys.issue(&body.username)?;
    ctx.store
        .add_event(&Event { app_name: None, actor: body.username.clone(), kind: "login".into(), message: "logged in".into() })
        .await?;
    Ok(web::Json(LoginResponse { token, expires_at }))
}
