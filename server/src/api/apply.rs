//! `POST /v1/spaces/{org}/{space}/apply` (issue 25): the declarative document of `paas apply`
//! (YAML or JSON, [`paas_common::apply`]) in, the plan out; `deploy::apply` diffs and applies.
//! A developer of the space (or its org's manager) applies; anyone else with a role there is
//! refused, and for the rest the space does not exist.

use actix_web::web;
use paas_common::apply::ApplyPlan;
use paas_common::ErrorCode;

use super::Ctx;
use crate::authz::{Principal, Role};
use crate::deploy::Actor;
use crate::error::{ApiResult, Error};

/// How to apply.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApplyQuery {
    /// List the changes without making them.
    #[serde(default)]
    pub dry_run: bool,
    /// Also delete the space's apps the document does not name, and unmap routes its apps no
    /// longer list.
    #[serde(default)]
    pub prune: bool,
}

#[utoipa::path(post, path = "/v1/spaces/{org}/{space}/apply", tag = "spaces", summary = "Make a space match a document of apps, processes, env, routes, services and bindings; answers the plan (apps to push are left to the client)", params(("org" = String, Path, description = "Organization"), ("space" = String, Path, description = "Space"), ApplyQuery), request_body(content = String, description = "The document, YAML or JSON: `space`, `applications` (manifest entries), `services` (create-service bodies), `sources` (source digest per app)", content_type = "application/json"), responses((status = 200, body = ApplyPlan), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn apply(
    ctx: Ctx,
    who: Principal,
    path: web::Path<(String, String)>,
    query: web::Query<ApplyQuery>,
    body: web::Bytes,
) -> ApiResult<web::Json<ApplyPlan>> {
    let (org, name) = path.into_inner();
    let space = super::tenancy::readable_space(&ctx, &who, &org, &name).await?;
    let developer =
        who.manages_org(&org) || who.role_in(&space.id).is_some_and(|r| r >= Role::Developer);
    if !developer {
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!("not allowed: only a developer of {org}/{name} applies documents to it"),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| Error::api(ErrorCode::BadRequest, "the document is not UTF-8 text"))?;
    let parsed = paas_common::apply::parse(text)
        .map_err(|e| Error::api(ErrorCode::BadRequest, format!("document: {e}")))?;
    let actor = Actor {
        username: who.username.clone(),
        actor: who.actor(),
    };
    let q = query.into_inner();
    let plan = crate::deploy::apply::apply(
        &ctx,
        &actor,
        &space,
        &parsed.document,
        parsed.warnings,
        crate::deploy::apply::Options {
            dry_run: q.dry_run,
            prune: q.prune,
        },
    )
    .await?;
    Ok(web::Json(plan))
}
