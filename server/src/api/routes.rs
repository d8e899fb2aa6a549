//! Routes as data (`paas routes`, `map-route`, `unmap-route`) and the two endpoints standalone
//! routers use with the join token: the route table long-poll and RTR log lines.

use actix_web::{web, HttpRequest, HttpResponse};
use paas_common::route::{MapRoute, RouteInfo, RouteList, RouteSpec, RouterLogs, RouterTable};
use paas_common::ErrorCode;
use serde::Deserialize;
use std::time::Duration;

use super::page::{self, Page};
use super::Ctx;
use crate::auth::{secure_eq, AuthUser};
use crate::authz::{AppAccess, Developer, Principal, Viewer};
use crate::error::{ApiResult, Error};
use crate::store::Event;

const LONG_POLL: Duration = Duration::from_secs(25);

#[utoipa::path(get, path = "/v1/routes", tag = "routes", summary = "The routes of the apps the caller can see", params(crate::api::page::PageParams), responses((status = 200, body = paas_common::route::RouteList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(ctx: Ctx, who: Principal, req: HttpRequest) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    // Only the routes of apps the caller can see: another tenant's hosts are its business.
    let visible: std::collections::HashSet<String> = ctx
        .store
        .list_apps()
        .await?
        .into_iter()
        .filter(|a| who.can_see(a))
        .map(|a| a.id)
        .collect();
    let mut routes = crate::router::build(&ctx).await?.routes;
    routes.retain(|r| visible.contains(&r.app_id));
    routes.sort_by(|a, b| (&a.app, &a.host, &a.path).cmp(&(&b.app, &b.host, &b.path)));
    let total = routes.len() as u64;
    // NUL cannot occur in app names, hosts or paths, so the key orders like the tuple.
    let (routes, next) = page.slice(
        routes,
        |r| format!("{}\0{}\0{}", r.app, r.host, r.path),
        false,
    );
    Ok(page::respond(
        &req,
        &RouteList { routes },
        next,
        Some(total),
    ))
}

#[utoipa::path(get, path = "/v1/apps/{name}/routes", tag = "routes", summary = "The app's routes", params(crate::api::page::PageParams, ("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::route::RouteList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list_for_app(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let app = app.into_app();
    let mut routes: Vec<RouteInfo> = crate::router::build(&ctx)
        .await?
        .routes
        .into_iter()
        .filter(|r| r.app_id == app.id)
        .collect();
    routes.sort_by(|a, b| (!a.default, &a.host, &a.path).cmp(&(!b.default, &b.host, &b.path)));
    let total = routes.len() as u64;
    let (routes, next) = page.slice(
        routes,
        |r| format!("{}\0{}\0{}", u8::from(!r.default), r.host, r.path),
        false,
    );
    Ok(page::respond(
        &req,
        &RouteList { routes },
        next,
        Some(total),
    ))
}

fn parse(route: &str) -> ApiResult<RouteSpec> {
    RouteSpec::parse(route).map_err(|e| Error::api(ErrorCode::InvalidRoute, e.to_string()))
}

#[utoipa::path(post, path = "/v1/apps/{name}/routes", tag = "routes", summary = "Map a route to the app", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::route::MapRoute, responses((status = 201, body = paas_common::route::RouteInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn map(
    ctx: Ctx,
    user: AuthUser,
    req: HttpRequest,
    app: AppAccess<Developer>,
    body: web::Json<MapRoute>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    let spec = parse(&body.route)?;
    // The router sees a mapped host before the API does: a route on the controller's own host
    // would take the API and dashboard away from everyone.
    let api_host = req
        .headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h));
    let info = crate::deploy::domains::map_route(
        &ctx,
        &(&user).into(),
        &app,
        &spec,
        Some(crate::deploy::domains::RouteOptions {
            https_redirect: body.https_redirect,
            hsts: body.hsts,
        }),
        api_host,
    )
    .await?;
    Ok(HttpResponse::Created().json(info))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    pub route: String,
}

#[utoipa::path(delete, path = "/v1/apps/{name}/routes", tag = "routes", summary = "Unmap a route from the app", params(("name" = String, Path, description = "The app's name"), RouteQuery), responses((status = 204, description = "Unmapped"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn unmap(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    q: web::Query<RouteQuery>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    let spec = parse(&q.route)?;
    let event = Event {
        app_name: Some(app.name.clone()),
        app_id: Some(app.id.clone()),
        actor: user.actor,
        kind: "route.unmap".into(),
        message: format!("unmapped route {spec} from {}", app.name),
    };
    ctx.store
        .delete_route(&app.id, &spec.host, &spec.path, &event)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(m) => Error::api(ErrorCode::NotFound, m),
            e => e.into(),
        })?;
    crate::router::refresh(&ctx).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Standalone routers authenticate with the join token (they hold no user or node identity).
fn check_join_token(ctx: &Ctx, req: &HttpRequest) -> ApiResult<()> {
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !secure_eq(presented.trim(), &ctx.join_token) {
        return Err(Error::api(
            ErrorCode::Unauthorized,
            "invalid router credential (the join token)",
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct TableQuery {
    pub after: Option<u64>,
}

/// The whole table; with `?after=VERSION` equal to the current version, holds up to 25 s for a
/// change (a long-poll), so routers follow changes within a round trip.
pub async fn table(
    ctx: Ctx,
    req: HttpRequest,
    q: web::Query<TableQuery>,
) -> ApiResult<web::Json<RouterTable>> {
    check_join_token(&ctx, &req)?;
    let mut rx = ctx.routes.subscribe();
    if q.after == Some(*rx.borrow_and_update()) {
        tokio::select! {
            _ = tokio::time::timeout(LONG_POLL, rx.changed()) => {}
            _ = ctx.stopping.cancelled() => {}
        }
    }
    Ok(web::Json((*ctx.routes.snapshot()).clone()))
}

pub async fn logs(
    ctx: Ctx,
    req: HttpRequest,
    body: web::Json<RouterLogs>,
) -> ApiResult<HttpResponse> {
    check_join_token(&ctx, &req)?;
    let lines: Vec<_> = body
        .into_inner()
        .lines
        .into_iter()
        .map(|l| (l.app, l.line))
        .collect();
    ctx.logs.publish_batch(lines).await;
    Ok(HttpResponse::NoContent().finish())
}
