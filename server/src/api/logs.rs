//! Log endpoints, both served from the hub with the same filters:
//! - `GET /v1/apps/{name}/logs` -> [`LogList`], the newest lines (`limit`, default 100);
//! - `GET /v1/apps/{name}/logs/stream` (or `/logs?follow=true`) -> Server-Sent Events: the recent
//!   lines, then live ones. Each line is `id: N` + `data: <LogLine JSON>`; when this client fell
//!   behind, an `event: dropped` with `data: {"dropped": N}` says how many it missed; a comment
//!   every 15 s keeps proxies from closing an idle stream.
//!
//! Filters: `source` (comma separated prefixes: `APP`, `APP/web/0`, `STG`, `RTR`, `API`, `CELL`),
//! `instance` (index), `since` (RFC 3339 or a duration back from now: `5m`), `grep` (substring).

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use paas_common::api::{LogLine, LogList};
use paas_common::ErrorCode;
use serde::Deserialize;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Viewer};
use crate::error::{ApiResult, Error};
use crate::loghub::parse_since;
use crate::store::LogQuery;

const KEEPALIVE: Duration = Duration::from_secs(15);
/// Frames coalesced into one chunk when lines arrive faster than the client reads.
const MAX_COALESCE: usize = 512;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    pub recent: Option<bool>,
    pub follow: Option<bool>,
    pub limit: Option<i64>,
    pub source: Option<String>,
    pub instance: Option<u32>,
    pub since: Option<String>,
    pub grep: Option<String>,
}

impl LogParams {
    fn query(&self) -> ApiResult<LogQuery> {
        let since = match self.since.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(parse_since(s).ok_or_else(|| {
                Error::api(
                    ErrorCode::BadRequest,
                    format!("since must be a time (RFC 3339) or a duration like 5m, not {s:?}"),
                )
            })?),
            None => None,
        };
        let sources = self
            .source
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        Ok(LogQuery {
            sources,
            instance: self.instance,
            since,
            grep: self.grep.clone().filter(|g| !g.is_empty()),
        })
    }
}

#[utoipa::path(get, path = "/v1/apps/{name}/logs", tag = "logs", summary = "The newest log lines", params(("name" = String, Path, description = "The app's name"), LogParams), responses((status = 200, body = paas_common::api::LogList, description = "JSON; with `follow=true` a text/event-stream as for /logs/stream"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn recent(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Viewer>,
    q: web::Query<LogParams>,
) -> ApiResult<HttpResponse> {
    if q.follow == Some(true) {
        return stream(ctx, user, app, q).await;
    }
    let app = app.into_app();
    let _ = q.recent;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let lines = ctx.logs.recent(&app.id, &q.query()?, limit).await?;
    Ok(HttpResponse::Ok().json(LogList { lines }))
}

#[utoipa::path(get, path = "/v1/apps/{name}/logs/stream", tag = "logs", summary = "Server-Sent Events: recent lines, then live ones; each `data:` is a LogLine", params(("name" = String, Path, description = "The app's name"), LogParams), responses((status = 200, content_type = "text/event-stream", body = String, description = "`id: N` + `data: <LogLine JSON>` frames"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn stream(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
    q: web::Query<LogParams>,
) -> ApiResult<HttpResponse> {
    let app = app.into_app();
    let filter = q.query()?;
    let limit = q.limit.unwrap_or(100).clamp(0, 10_000);
    // Subscribe before reading the recent lines, so nothing falls between the two; `pump`
    // drops the overlap.
    let live = ctx.logs.subscribe(&app.id).await;
    let recent = if limit > 0 {
        ctx.logs.recent(&app.id, &filter, limit).await?
    } else {
        Vec::new()
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(pump(ctx.clone(), recent, live, filter, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Tells nginx-style proxies not to buffer the stream.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

/// Appends one SSE frame, serialising straight into the chunk (no per-line allocation).
fn frame(out: &mut Vec<u8>, l: &LogLine) {
    let start = out.len();
    let _ = write!(out, "id: {}\ndata: ", l.id);
    match serde_json::to_writer(&mut *out, l) {
        Ok(()) => out.extend_from_slice(b"\n\n"),
        Err(e) => {
            out.truncate(start);
            tracing::warn!(error = %e, "unencodable log line");
        }
    }
}

/// Feeds one SSE client until it goes away (its channel closes).
async fn pump(
    ctx: Ctx,
    recent: Vec<LogLine>,
    mut live: broadcast::Receiver<Arc<LogLine>>,
    filter: LogQuery,
    tx: mpsc::Sender<Bytes>,
) {
    // The live feed began before `recent` was read, so it may repeat lines of it, and hold
    // lines older than the newest `limit` that `recent` left out on purpose: one controller
    // drops every live line up to the last one sent. With several, a line another controller
    // received comes once stored, after newer ids of this one's, so only the lines `recent`
    // sent are dropped.
    let shared = ctx.store.shared();
    let last = recent.last().map_or(0, |l| l.id);
    let mut sent: std::collections::HashSet<i64> = if shared {
        recent.iter().map(|l| l.id).collect()
    } else {
        Default::default()
    };
    let mut out = b": paas log stream\n\n".to_vec();
    for l in &recent {
        frame(&mut out, l);
    }
    if tx.send(Bytes::from(out)).await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let mut out = Vec::new();
        tokio::select! {
            r = live.recv() => {
                let mut next = Some(r);
                let mut n = 0;
                while let Some(r) = next.take() {
                    match r {
                        Ok(l) => {
                            let repeat = if shared { sent.remove(&l.id) } else { l.id <= last };
                            if !repeat && filter.matches(&l) {
                                frame(&mut out, &l);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(k)) => {
                            ctx.logs.note_lagged(k);
                            let _ = write!(out, "event: dropped\ndata: {{\"dropped\":{k}}}\n\n");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    n += 1;
                    if n < MAX_COALESCE {
                        next = match live.try_recv() {
                            Ok(l) => Some(Ok(l)),
                            Err(broadcast::error::TryRecvError::Lagged(k)) => Some(Err(broadcast::error::RecvError::Lagged(k))),
                            Err(_) => None,
                        };
                    }
                }
            }
            _ = keepalive.tick() => out.extend_from_slice(b": keepalive\n\n"),
            // A graceful stop: end the stream (clients reconnect to the next controller).
            _ = ctx.stopping.cancelled() => return,
        }
        if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
            return;
        }
    }
}
