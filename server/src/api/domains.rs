//! Domains (issue 22): `GET /v1/domains` (the shared one and the private ones the caller's roles
//! reach), `POST /v1/domains` (in the target space, `X-Paas-Space`), `DELETE
//! /v1/domains/{domain}`, `PUT /v1/domains/{domain}/certificate` and `PUT
//! /v1/domains/{domain}/acme` (certificates by ACME for the hosts mapped under it). A private domain is
//! managed by a developer or better of its space (or an operator); for anyone else it does not
//! exist (404), so names of other tenants' domains do not leak through these routes.

use actix_web::{web, HttpRequest, HttpResponse};
use paas_common::route::{
    CertificateInfo, CreateDomain, DomainInfo, DomainList, SetAcme, SetCertificate,
};
use paas_common::ErrorCode;

use super::Ctx;
use crate::authz::{Principal, Role};
use crate::deploy::Actor;
use crate::error::{ApiResult, Error};
use crate::store::DomainRecord;

fn actor(who: &Principal) -> Actor {
    Actor {
        username: who.username.clone(),
        actor: who.actor(),
    }
}

/// A developer or better of `space_id`, with no app-scoped token (a domain is the space's).
fn manages(who: &Principal, space_id: &str) -> bool {
    who.token.as_ref().is_none_or(|t| t.app.is_none())
        && who.role_in(space_id).is_some_and(|r| r >= Role::Developer)
}

fn info(d: &DomainRecord) -> DomainInfo {
    DomainInfo {
        name: d.name.clone(),
        space: Some(d.space.clone()),
        shared: false,
        certificate: d.certificate.as_ref().map(|chain| {
            let meta = crate::deploy::domains::cert_meta(chain);
            CertificateInfo {
                covers: d.cert_names.clone(),
                source: d
                    .cert_source
                    .clone()
                    .unwrap_or_else(|| crate::store::CERT_MANUAL.into()),
                not_after: meta.as_ref().map(|m| m.not_after.to_rfc3339()),
                issuer: meta.map(|m| m.issuer),
            }
        }),
        acme: d.acme,
        acme_error: d.acme_error.clone(),
        acme_retry_at: d.acme_retry_at.map(|t| t.to_rfc3339()),
    }
}

/// The domain `{domain}` names, if the caller manages its space.
async fn managed(ctx: &Ctx, who: &Principal, name: &str) -> ApiResult<DomainRecord> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = ctx
        .store
        .list_domains()
        .await?
        .into_iter()
        .find(|d| d.name == name);
    match domain {
        Some(d) if manages(who, &d.space_id) => Ok(d),
        Some(d) if who.role_in(&d.space_id).is_some() => Err(Error::api(
            ErrorCode::Forbidden,
            format!(
                "not allowed: only a developer of {} manages domain {name}",
                d.space
            ),
        )),
        _ => Err(Error::api(
            ErrorCode::NotFound,
            format!("domain {name} not found"),
        )),
    }
}

#[utoipa::path(get, path = "/v1/domains", tag = "domains", summary = "The shared apps domain and the private domains of the spaces the caller has a role in", responses((status = 200, body = paas_common::route::DomainList), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(ctx: Ctx, who: Principal) -> ApiResult<web::Json<DomainList>> {
    let mut domains = vec![DomainInfo {
        name: ctx.settings.apps_domain.clone(),
        space: None,
        shared: true,
        certificate: None,
        acme: false,
        acme_error: None,
        acme_retry_at: None,
    }];
    // Issue 25: mapped with `map-route APP apps.internal --hostname NAME`, resolved by
    // instances only.
    domains.push(DomainInfo {
        name: paas_common::network::INTERNAL_DOMAIN.into(),
        space: None,
        shared: true,
        certificate: None,
        acme: false,
        acme_error: None,
        acme_retry_at: None,
    });
    domains.extend(
        ctx.store
            .list_domains()
            .await?
            .iter()
            .filter(|d| who.role_in(&d.space_id).is_some())
            .map(info),
    );
    Ok(web::Json(DomainList { domains }))
}

#[utoipa::path(post, path = "/v1/domains", tag = "domains", summary = "Create a private domain in the target space (X-Paas-Space; developers of that space, operators)", request_body = paas_common::route::CreateDomain, responses((status = 201, body = paas_common::route::DomainInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn create(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    body: web::Json<CreateDomain>,
) -> ApiResult<HttpResponse> {
    let space = crate::authz::target_space(&ctx, &req).await?;
    let label = format!("{}/{}", space.org, space.name);
    if who.role_in(&space.id).is_none() {
        return Err(Error::api(
            ErrorCode::SpaceNotFound,
            format!("space {label} not found"),
        ));
    }
    if !manages(&who, &space.id) {
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!("not allowed: only a developer of {label} creates its domains"),
        ));
    }
    let name = crate::deploy::domains::parse_domain(&body.name)?;
    if body.acme {
        crate::deploy::domains::acme_available(&ctx)?;
    }
    crate::deploy::domains::create(&ctx, &actor(&who), &space.id, &name).await?;
    tracing::info!(domain = %name, space = %label, "domain created");
    if body.acme {
        let created = managed(&ctx, &who, &name).await?;
        crate::deploy::domains::set_acme(&ctx, &actor(&who), &created, true).await?;
    }
    Ok(HttpResponse::Created().json(DomainInfo {
        name,
        space: Some(label),
        shared: false,
        certificate: None,
        acme: body.acme,
        acme_error: None,
        acme_retry_at: None,
    }))
}

#[utoipa::path(delete, path = "/v1/domains/{domain}", tag = "domains", summary = "Delete a private domain (refused while routes use it)", params(("domain" = String, Path, description = "The domain")), responses((status = 204, description = "Deleted"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn delete(ctx: Ctx, who: Principal, path: web::Path<String>) -> ApiResult<HttpResponse> {
    let domain = managed(&ctx, &who, &path).await?;
    crate::deploy::domains::delete(&ctx, &actor(&who), &domain).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(put, path = "/v1/domains/{domain}/certificate", tag = "domains", summary = "Set the domain's TLS certificate (PEM chain and key; the names must cover DOMAIN or *.DOMAIN); every router serves it by SNI", params(("domain" = String, Path, description = "The domain")), request_body = paas_common::route::SetCertificate, responses((status = 200, body = paas_common::route::DomainInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn set_certificate(
    ctx: Ctx,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<SetCertificate>,
) -> ApiResult<web::Json<DomainInfo>> {
    let domain = managed(&ctx, &who, &path).await?;
    let covers = crate::deploy::domains::set_certificate(
        &ctx,
        &actor(&who),
        &domain,
        &body.certificate,
        &body.private_key,
    )
    .await?;
    tracing::info!(domain = %domain.name, covers = %covers.join(","), "certificate set");
    let domain = managed(&ctx, &who, &domain.name).await?;
    tracing::info!(covers = %covers.join(","), "certificate stored");
    Ok(web::Json(info(&domain)))
}

#[utoipa::path(put, path = "/v1/domains/{domain}/acme", tag = "domains", summary = "Turn automatic certificates (ACME HTTP-01) on or off for the hosts mapped under the domain; a certificate set through the API turns it off", params(("domain" = String, Path, description = "The domain")), request_body = paas_common::route::SetAcme, responses((status = 200, body = paas_common::route::DomainInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn set_acme(
    ctx: Ctx,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<SetAcme>,
) -> ApiResult<web::Json<DomainInfo>> {
    let domain = managed(&ctx, &who, &path).await?;
    crate::deploy::domains::set_acme(&ctx, &actor(&who), &domain, body.enabled).await?;
    tracing::info!(domain = %domain.name, enabled = body.enabled, "ACME set");
    let domain = managed(&ctx, &who, &domain.name).await?;
    Ok(web::Json(info(&domain)))
}
