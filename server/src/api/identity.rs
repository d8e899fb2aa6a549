//! Instance identity (issue 25): the platform CA for users (`GET
//! /v1/instance-identity/ca.pem`, to verify instance certificates) and the nodes' signing
//! endpoint (`POST /v1/agent/instances/{id}/identity`). The CA and what a certificate names are
//! `crate::identity`'s.

use actix_web::{web, HttpResponse};
use paas_common::agent::{IdentityRequest, IdentityResponse};
use paas_common::ErrorCode;

use super::Ctx;
use crate::auth::{AgentNode, AuthUser};
use crate::error::{ApiResult, Error};
use crate::identity::IdentityError;

/// The CA that signs every instance's identity certificate: what an app (or anyone) trusts to
/// verify an instance's certificate.
#[utoipa::path(get, path = "/v1/instance-identity/ca.pem", tag = "identity", summary = "The platform CA of instance identity certificates (PEM)", responses((status = 200, description = "The CA certificate, PEM", content_type = "application/x-pem-file", body = String), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn ca(ctx: Ctx, _user: AuthUser) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .body(ctx.identity.pem().to_string())
}

/// Signs an identity certificate for an instance assigned to the calling node, on the key of
/// the node's CSR.
pub async fn issue(
    ctx: Ctx,
    node: AgentNode,
    path: web::Path<String>,
    body: web::Json<IdentityRequest>,
) -> ApiResult<web::Json<IdentityResponse>> {
    let instance = path.into_inner();
    let Some(subject) =
        crate::control::nodes::identity_subject(&ctx, &instance, &node.name).await?
    else {
        tracing::warn!(node = %node.name, %instance, "a node asked for the identity of an instance not assigned to it");
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!("instance {instance} is not assigned to node {}", node.name),
        ));
    };
    let issued = ctx
        .identity
        .issue(&body.csr_pem, &subject, ctx.settings.instance_cert_ttl_secs)
        .map_err(|e| match e {
            IdentityError::BadCsr => Error::api(ErrorCode::InvalidCertificate, e.to_string()),
            other => Error::internal(other.to_string()),
        })?;
    tracing::debug!(node = %node.name, %instance, serial = %issued.serial, "instance identity certificate issued");
    Ok(web::Json(IdentityResponse {
        certificate_chain_pem: issued.chain_pem,
        ca_pem: ctx.identity.pem().to_string(),
        serial: issued.serial,
        not_before: issued.not_before,
        not_after: issued.not_after,
    }))
}
