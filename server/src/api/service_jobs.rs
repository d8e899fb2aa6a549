//! The node's side of built-in service backups and restores (issue 22): the dump a backup
//! uploads, the dump a restore downloads, and the result. Only for a pending job of a service
//! placed on the calling node.

use actix_web::{web, HttpResponse};
use futures_util::StreamExt;
use paas_common::agent::ServiceJobResult;
use paas_common::ErrorCode;
use std::io::Write;

use super::Ctx;
use crate::auth::AgentNode;
use crate::error::{ApiResult, Error};
use crate::services::builtin::backup::{self, BACKUP, DONE, FAILED, RESTORE};
use crate::store::BuiltinJobRecord;

async fn job(ctx: &Ctx, node: &AgentNode, id: &str) -> ApiResult<BuiltinJobRecord> {
    backup::job_on_node(ctx, id, &node.name)
        .await?
        .ok_or_else(|| {
            Error::api(
                ErrorCode::NotFound,
                format!("no pending service job {id} on this node"),
            )
        })
}

/// `PUT /v1/agent/service-jobs/{id}/dump`: a backup's `pg_dump -Fc`, into the blobstore.
pub async fn upload(
    ctx: Ctx,
    node: AgentNode,
    id: web::Path<String>,
    mut body: web::Payload,
) -> ApiResult<HttpResponse> {
    let j = job(&ctx, &node, &id).await?;
    if j.kind != BACKUP {
        return Err(Error::api(
            ErrorCode::BadRequest,
            "only a backup uploads a dump",
        ));
    }
    let mut w = ctx.blobs.writer()?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| Error::api(ErrorCode::BadRequest, format!("upload interrupted: {e}")))?;
        w.write_all(&chunk).map_err(Error::internal)?;
    }
    let blobs = ctx.blobs.clone();
    let (sha256, size) = web::block(move || blobs.commit(w))
        .await
        .map_err(Error::internal)??;
    if ctx
        .store
        .finish_builtin_job(&j.id, DONE, Some(&sha256), None)
        .await?
    {
        tracing::info!(service = %j.instance_id, job = %j.id, size, "service backup stored");
        ctx.bump_assignments();
    }
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /v1/agent/service-jobs/{id}/dump`: the dump a restore feeds to `pg_restore`.
pub async fn download(ctx: Ctx, node: AgentNode, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let j = job(&ctx, &node, &id).await?;
    let (RESTORE, Some(blob)) = (j.kind.as_str(), &j.blob) else {
        return Err(Error::api(
            ErrorCode::BadRequest,
            "only a restore downloads a dump",
        ));
    };
    let path =
        ctx.blobs.path_async(blob).await.map_err(|_| {
            Error::api(ErrorCode::NotFound, format!("backup blob {blob} not found"))
        })?;
    let bytes = tokio::fs::read(&path).await.map_err(Error::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}

/// `POST /v1/agent/service-jobs/{id}/result`: the job ended (a backup's success is its upload).
pub async fn result(
    ctx: Ctx,
    node: AgentNode,
    id: web::Path<String>,
    body: web::Json<ServiceJobResult>,
) -> ApiResult<HttpResponse> {
    let j = job(&ctx, &node, &id).await?;
    let (state, error) = match &body.error {
        Some(e) => (FAILED, Some(e.as_str())),
        None if j.kind == RESTORE => (DONE, None),
        None => (FAILED, Some("the backup ended without uploading its dump")),
    };
    if ctx
        .store
        .finish_builtin_job(&j.id, state, None, error)
        .await?
    {
        tracing::info!(service = %j.instance_id, job = %j.id, state, error, "service job ended");
        ctx.bump_assignments();
    }
    Ok(HttpResponse::NoContent().finish())
}
