//! `GET /v1/apps/{name}/metrics`: an app's requests, errors, latency, memory, CPU and restarts
//! over a window, with deploys and crashes to mark on a time axis (issue 26; the dashboard's
//! charts draw the same data).

use actix_web::{web, HttpRequest};
use paas_common::api::{AppMetrics, NodeMetrics};
use paas_common::ErrorCode;

use super::Ctx;
use crate::authz::{AppAccess, Viewer};
use crate::error::{ApiResult, Error};

/// The `window` query parameter in seconds (default an hour).
pub(crate) fn window_of(req: &HttpRequest) -> ApiResult<i64> {
    let asked = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "window")
        .map(|(_, v)| v.into_owned());
    match asked {
        None => Ok(3600),
        Some(w) => crate::timeseries::parse_window(&w).ok_or_else(|| {
            Error::api(
                ErrorCode::BadRequest,
                format!(
                    "window {w:?}: use minutes, hours or days up to a week, like 15m, 1h, 1d, 7d"
                ),
            )
        }),
    }
}

#[utoipa::path(get, path = "/v1/apps/{name}/metrics", tag = "apps", summary = "The app's metrics over a window: requests, 5xx, p50/p99 latency, memory and CPU per instance, restarts, with deploys and crashes", params(("name" = String, Path, description = "The app's name"), ("window" = Option<String>, Query, description = "How far back: 15m, 1h (default), 6h, 1d (10 s points), up to 7d (1-minute points)")), responses((status = 200, body = paas_common::api::AppMetrics), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn app_metrics(
    ctx: Ctx,
    app: AppAccess<Viewer>,
    req: HttpRequest,
) -> ApiResult<web::Json<AppMetrics>> {
    let secs = window_of(&req)?;
    let app = app.into_app();
    Ok(web::Json(
        crate::timeseries::window(&ctx, &app.id, secs).await?,
    ))
}

#[utoipa::path(get, path = "/v1/nodes/metrics", tag = "nodes", summary = "Each node's health over a window, a point per minute: time since its last heartbeat, state, reserved memory against capacity, instances (operators)", params(("window" = Option<String>, Query, description = "How far back: 15m, 1h (default), 6h, up to 1d")), responses((status = 200, body = paas_common::api::NodeMetrics), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn node_metrics(ctx: Ctx, req: HttpRequest) -> ApiResult<web::Json<NodeMetrics>> {
    let secs = window_of(&req)?;
    if secs > crate::timeseries::NODE_RETENTION_SECS {
        return Err(Error::api(
            ErrorCode::BadRequest,
            "node health is kept for a day: use a window up to 1d",
        ));
    }
    Ok(web::Json(crate::timeseries::node_window(&ctx, secs).await?))
}
