//! `GET|POST|DELETE /v1/apps/{name}/log-drains` with `{"url": ...}`: the app's log drains.

use actix_web::{web, HttpResponse};
use paas_common::ErrorCode;
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::auth::AuthUser;
use crate::drains::parse_drain;
use crate::error::{ApiResult, Error};
use crate::store::Event;

#[derive(Debug, Serialize, Deserialize)]
pub struct DrainBody {
    pub url: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DrainList {
    pub drains: Vec<String>,
}

pub async fn list(ctx: Ctx, _user: AuthUser, name: web::Path<String>) -> ApiResult<web::Json<DrainList>> {
    let app = super::apps::find_app(&ctx, &name).await?;
    let drains = ctx.store.list_log_drains().await?.into_iter().filter(|(a, _)| *a == app.name).map(|(_, u)| u).collect();
    Ok(web::Json(DrainList { drains }))
}

pub async fn add(ctx: Ctx, user: AuthUser, name: web::Path<String>, body: web::Json<DrainBody>) -> ApiResult<HttpResponse> {
    let app = super::apps::find_app(&ctx, &name).await?;
    parse_drain(&body.url).map_err(|m| Error::api(ErrorCode::BadRequest, m))?;
    let event = Event {
        app_name: Some(app.name.clone()),
        actor: user.username,
        kind: "app.log_drain.add".into(),
        message: format!("added log drain {}", body.url),
    };
    ctx.store.add_log_drain(&app.name, &body.url, &event).await?;
    Ok(HttpResponse::Created().json(DrainBody { url: body.url.clone() }))
}

pub async fn remove(ctx: Ctx, user: AuthUser, name: web::Path<String>, body: web::Json<DrainBody>) -> ApiResult<HttpResponse> {
    let app = super::apps::find_app(&ctx, &name).await?;
    let event = Event {
        app_name: Some(app.name.clone()),
        actor: user.username,
        kind: "app.log_drain.remove".into(),
        message: format!("removed log drain {}", body.url),
    };
    if !ctx.store.remove_log_drain(&app.name, &body.url, &event).await? {
        return Err(Error::api(ErrorCode::NotFound, format!("app {} has no drain {}", app.name, body.url)));
    }
    Ok(HttpResponse::NoContent().finish())
}
