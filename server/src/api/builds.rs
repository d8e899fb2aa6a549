//! The node side of staging (issue 3): a node fetches a build's source tar, streams its `STG`
//! lines, uploads the droplet and reports the result. A node sees only builds assigned to it.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use futures_util::StreamExt;
use paas_common::agent::{BuildResult, DropletUploaded, LogBatch};
use paas_common::api::LogLine;
use paas_common::ErrorCode;
use std::io::Write;

use super::Ctx;
use crate::auth::AgentNode;
use crate::error::{ApiResult, Error};

fn not_found(id: &str) -> Error {
    Error::api(
        ErrorCode::NotFound,
        format!("no build {id} assigned to this node"),
    )
}

/// `GET /v1/agent/builds/{id}/source`: the checked source tar (app files owned by the app user).
pub async fn source(ctx: Ctx, node: AgentNode, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let (sha, _) = ctx
        .builds
        .source_of(ctx.store.as_ref(), &id, &node.name)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let path = ctx.blobs.path_async(&sha).await?;
    let bytes = tokio::fs::read(&path).await.map_err(Error::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-tar")
        .body(bytes))
}

/// `POST /v1/agent/builds/{id}/logs`: staging output, recorded as the app's `STG` lines.
pub async fn logs(
    ctx: Ctx,
    node: AgentNode,
    id: web::Path<String>,
    body: web::Json<LogBatch>,
) -> ApiResult<HttpResponse> {
    let (_, app) = ctx
        .builds
        .source_of(ctx.store.as_ref(), &id, &node.name)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let lines: Vec<(String, LogLine)> = body
        .lines
        .iter()
        .map(|l| {
            (
                app.clone(),
                LogLine {
                    id: 0,
                    timestamp: l.timestamp,
                    source: "STG".into(),
                    stream: l.stream.clone(),
                    message: l.message.clone(),
                },
            )
        })
        .collect();
    if !lines.is_empty() {
        // Through the hub, so `logs -f` and the push's live view see staging as it happens.
        ctx.logs.publish_batch(lines).await;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `PUT /v1/agent/builds/{id}/droplet`: the droplet tar, stored content-addressed.
pub async fn droplet(
    ctx: Ctx,
    node: AgentNode,
    id: web::Path<String>,
    mut body: web::Payload,
) -> ApiResult<web::Json<DropletUploaded>> {
    ctx.builds
        .source_of(ctx.store.as_ref(), &id, &node.name)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let max = ctx.settings.max_unpacked_mb * 1024 * 1024 * 2;
    let mut w = ctx.blobs.writer()?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| Error::api(ErrorCode::BadRequest, format!("upload interrupted: {e}")))?;
        if w.size() + chunk.len() as u64 > max {
            return Err(Error::api(
                ErrorCode::PayloadTooLarge,
                "the droplet is too large",
            ));
        }
        w.write_all(&chunk).map_err(Error::internal)?;
    }
    let blobs = ctx.blobs.clone();
    let (sha256, size) = web::block(move || blobs.commit(w))
        .await
        .map_err(Error::internal)??;
    Ok(web::Json(DropletUploaded { sha256, size }))
}

/// `POST /v1/agent/builds/{id}/result`: the build is over; the waiting push goes on.
pub async fn result(
    ctx: Ctx,
    node: AgentNode,
    id: web::Path<String>,
    body: web::Json<BuildResult>,
) -> ApiResult<HttpResponse> {
    let result = body.into_inner();
    if let Some(d) = &result.droplet {
        if !ctx.blobs.exists(d) {
            return Err(Error::api(
                ErrorCode::DropletNotFound,
                format!("droplet {d} was not uploaded"),
            ));
        }
    }
    if !ctx
        .builds
        .finish(ctx.store.as_ref(), &id, &node.name, &result)
        .await?
    {
        return Err(not_found(&id));
    }
    tracing::info!(build = %id, node = %node.name, at = %Utc::now(), "build finished");
    ctx.bump_assignments();
    Ok(HttpResponse::NoContent().finish())
}
