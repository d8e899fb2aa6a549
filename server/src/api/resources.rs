//! `POST /v1/resources/match` (issue 3): which files the caller need not upload again.

use actix_web::web;
use paas_common::api::{ResourceMatch, ResourceMatchResult};
use paas_common::ErrorCode;

use super::Ctx;
use crate::auth::AuthUser;
use crate::error::{ApiResult, Error};

#[utoipa::path(post, path = "/v1/resources/match", tag = "apps", summary = "Which of these file hashes the controller already holds", request_body = paas_common::api::ResourceMatch, responses((status = 200, body = paas_common::api::ResourceMatchResult), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn match_files(
    ctx: Ctx,
    user: AuthUser,
    body: web::Json<ResourceMatch>,
) -> ApiResult<web::Json<ResourceMatchResult>> {
    let files: Vec<(String, u64)> = body
        .resources
        .iter()
        .map(|f| (f.sha256.to_ascii_lowercase(), f.size))
        .collect();
    if files.len() > ctx.settings.max_archive_entries {
        return Err(Error::api(
            ErrorCode::BadRequest,
            format!(
                "at most {} files per match",
                ctx.settings.max_archive_entries
            ),
        ));
    }
    // Only what this user uploaded, and only while the blob is really there.
    let listed = ctx.store.known_files(&user.username, &files).await?;
    let known = ctx.blobs.existing(listed).await;
    Ok(web::Json(ResourceMatchResult { known }))
}
