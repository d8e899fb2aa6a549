//! Network policies (issue 25): `GET /v1/network-policies` (those whose source or destination
//! app the caller sees), `POST /v1/network-policies` ([`NetworkPolicySpec`]; a developer of both
//! apps' spaces, or an operator) and `DELETE /v1/network-policies/{id}` (the same). An app the
//! caller has no role for is answered as one that does not exist (`app_not_found`); a role below
//! developer in either space is `forbidden`.

use actix_web::{web, HttpRequest, HttpResponse};
use paas_common::domain::AppName;
use paas_common::network::{NetworkPolicy, NetworkPolicyList, NetworkPolicySpec};
use paas_common::ErrorCode;
use std::collections::HashMap;

use super::Ctx;
use crate::authz::{Principal, Role};
use crate::deploy::network::PolicyTarget;
use crate::deploy::Actor;
use crate::error::{ApiResult, Error};
use crate::store::{AppRecord, PolicyRecord};

fn actor(who: &Principal) -> Actor {
    Actor {
        username: who.username.clone(),
        actor: who.actor(),
    }
}

fn app_not_found(name: &str) -> Error {
    Error::api(ErrorCode::AppNotFound, format!("app {name:?} not found"))
}

/// The app `name` as the caller reaches it: in `space` (`ORG/SPACE`) when given, else as app
/// routes resolve names (the target space header, or the one app of that name in reach).
async fn reach(
    ctx: &Ctx,
    req: &HttpRequest,
    who: &Principal,
    name: &str,
    space: Option<&str>,
) -> ApiResult<(AppRecord, Role)> {
    let parsed = AppName::parse(name).map_err(|_| app_not_found(name))?;
    let Some(space) = space else {
        return crate::authz::reachable_app(ctx, req, who, &parsed)
            .await?
            .ok_or_else(|| app_not_found(name));
    };
    let (org, space_name) = space.split_once('/').ok_or_else(|| {
        Error::api(
            ErrorCode::BadRequest,
            format!("space {space:?} must be ORG/SPACE"),
        )
    })?;
    let Some(space) = ctx.store.space(org, space_name, false).await? else {
        return Err(app_not_found(name));
    };
    let app = ctx
        .store
        .app_in_space(&space.id, parsed.as_str())
        .await?
        .filter(|a| who.token.as_ref().is_none_or(|t| t.allows(a)))
        .ok_or_else(|| app_not_found(name))?;
    let role = who
        .role_in(&app.space_id)
        .ok_or_else(|| app_not_found(name))?;
    Ok((app, role))
}

/// A developer of both spaces (admins and operators included).
fn need_developer(src: &(AppRecord, Role), dst: &(AppRecord, Role)) -> ApiResult<()> {
    for (app, role) in [src, dst] {
        if *role < Role::Developer {
            return Err(Error::api(
                ErrorCode::Forbidden,
                format!(
                    "not allowed: a network policy needs a developer of both apps' spaces, and you are a {} of {}'s",
                    role.as_str(),
                    app.name
                ),
            ));
        }
    }
    Ok(())
}

/// `ORG/SPACE` of every space, by id.
async fn space_labels(ctx: &Ctx) -> ApiResult<HashMap<String, String>> {
    Ok(ctx
        .store
        .list_spaces()
        .await?
        .into_iter()
        .map(|s| (s.id, format!("{}/{}", s.org, s.name)))
        .collect())
}

fn show(
    p: &PolicyRecord,
    src: &AppRecord,
    dst: &AppRecord,
    spaces: &HashMap<String, String>,
) -> NetworkPolicy {
    NetworkPolicy {
        id: p.id.clone(),
        source: src.name.clone(),
        source_space: spaces.get(&src.space_id).cloned().unwrap_or_default(),
        destination: dst.name.clone(),
        destination_space: spaces.get(&dst.space_id).cloned().unwrap_or_default(),
        protocol: p.protocol.clone(),
        start_port: p.start_port,
        end_port: p.end_port,
    }
}

#[utoipa::path(get, path = "/v1/network-policies", tag = "network", summary = "The network policies whose source or destination app the caller sees (issue 25)", responses((status = 200, body = paas_common::network::NetworkPolicyList), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(ctx: Ctx, who: Principal) -> ApiResult<web::Json<NetworkPolicyList>> {
    let apps: HashMap<String, AppRecord> = ctx
        .store
        .list_apps()
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let spaces = space_labels(&ctx).await?;
    let policies = ctx
        .store
        .list_policies()
        .await?
        .iter()
        .filter_map(|p| {
            let src = apps.get(&p.source_app_id)?;
            let dst = apps.get(&p.destination_app_id)?;
            (who.can_see(src) || who.can_see(dst)).then(|| show(p, src, dst, &spaces))
        })
        .collect();
    Ok(web::Json(NetworkPolicyList { policies }))
}

#[utoipa::path(post, path = "/v1/network-policies", tag = "network", summary = "Allow the source app's instances to connect to the destination app's on a protocol and ports (developers of both spaces)", request_body = paas_common::network::NetworkPolicySpec, responses((status = 201, body = paas_common::network::NetworkPolicy), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn add(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    body: web::Json<NetworkPolicySpec>,
) -> ApiResult<HttpResponse> {
    let target = crate::deploy::network::parse(&body.protocol, &body.ports)?;
    let src = reach(&ctx, &req, &who, &body.source, None).await?;
    let dst = reach(
        &ctx,
        &req,
        &who,
        &body.destination,
        body.destination_space.as_deref(),
    )
    .await?;
    need_developer(&src, &dst)?;
    crate::deploy::network::add(&ctx, &actor(&who), &src.0, &dst.0, &target).await?;
    let spaces = space_labels(&ctx).await?;
    let PolicyTarget { protocol, ports } = target;
    let created = ctx
        .store
        .list_policies()
        .await?
        .into_iter()
        .find(|p| {
            p.source_app_id == src.0.id
                && p.destination_app_id == dst.0.id
                && p.protocol == protocol
                && (p.start_port, p.end_port) == ports
        })
        .ok_or_else(|| Error::internal("the policy just added is gone"))?;
    Ok(HttpResponse::Created().json(show(&created, &src.0, &dst.0, &spaces)))
}

#[utoipa::path(delete, path = "/v1/network-policies/{id}", tag = "network", summary = "Remove a network policy (developers of both spaces)", params(("id" = String, Path, description = "The policy's id")), responses((status = 204, description = "Removed"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn remove(ctx: Ctx, who: Principal, id: web::Path<String>) -> ApiResult<HttpResponse> {
    let not_found = || {
        Error::api(
            ErrorCode::NotFound,
            format!("network policy {:?} not found", id.as_str()),
        )
    };
    let policy = ctx
        .store
        .list_policies()
        .await?
        .into_iter()
        .find(|p| p.id == *id)
        .ok_or_else(not_found)?;
    let role_of = |app: Option<AppRecord>| {
        let app = app.filter(|a| who.can_see(a))?;
        let role = who.role_in(&app.space_id)?;
        Some((app, role))
    };
    // A policy between apps the caller sees neither of does not exist for them.
    let src = role_of(ctx.store.app_by_id(&policy.source_app_id).await?);
    let dst = role_of(ctx.store.app_by_id(&policy.destination_app_id).await?);
    let (Some(src), Some(dst)) = (src, dst) else {
        return Err(not_found());
    };
    need_developer(&src, &dst)?;
    let target = PolicyTarget {
        protocol: policy.protocol,
        ports: (policy.start_port, policy.end_port),
    };
    crate::deploy::network::remove(&ctx, &actor(&who), &src.0, &dst.0, &target).await?;
    Ok(HttpResponse::NoContent().finish())
}
