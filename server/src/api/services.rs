//! Backing services (issue 22). Brokers: `GET|POST /v1/service-brokers`, `DELETE
//! /v1/service-brokers/{broker}` (operators; `authz`). The marketplace and service instances are
//! the target space's (`X-Paas-Space`, as for apps): `GET /v1/marketplace`, `GET|POST
//! /v1/services`, `GET|PATCH|DELETE /v1/services/{service}`; anyone with a role there reads, a
//! developer changes, and for anyone else the space does not exist. Bindings are the app's:
//! `GET|POST /v1/apps/{name}/bindings`, `DELETE /v1/apps/{name}/bindings/{service}`, the
//! instance looked up in the app's own space, so another space's instance is never found.

use actix_web::{web, HttpRequest, HttpResponse};
use paas_common::service::{
    BindingInfo, BindingList, BrokerInfo, BrokerList, CreateBinding, CreateBroker, CreateService,
    Marketplace, ServiceInfo, ServiceList, UpdateService,
};
use paas_common::ErrorCode;

use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer, Principal, Role, Viewer};
use crate::deploy::services as ops;
use crate::deploy::Actor;
use crate::error::{ApiResult, Error};
use crate::store::{ServiceInstanceRecord, SpaceRecord};

fn actor(who: &Principal) -> Actor {
    Actor {
        username: who.username.clone(),
        actor: who.actor(),
    }
}

/// The target space, if the caller has a role there not through a token made for one app (else
/// it does not exist for them); with `change`, a developer or better.
async fn space(
    ctx: &Ctx,
    who: &Principal,
    req: &HttpRequest,
    change: bool,
) -> ApiResult<SpaceRecord> {
    let space = crate::authz::target_space(ctx, req).await?;
    let label = format!("{}/{}", space.org, space.name);
    // A token made for one app reaches that app, not its space's services.
    let role = who
        .role_in(&space.id)
        .filter(|_| who.token.as_ref().is_none_or(|t| t.app.is_none()));
    let Some(role) = role else {
        return Err(Error::api(
            ErrorCode::SpaceNotFound,
            format!("space {label} not found"),
        ));
    };
    if change && role < Role::Developer {
        return Err(Error::api(
            ErrorCode::Forbidden,
            format!("not allowed: only a developer of {label} changes its services"),
        ));
    }
    Ok(space)
}

/// The names of the instances bound to an app (the app detail's `services`).
pub(crate) async fn bound_names(ctx: &Ctx, app_id: &str) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for b in ctx.store.bindings_of_app(app_id).await? {
        if let Some(i) = ctx.store.service_instance(&b.instance_id).await? {
            out.push(i.name);
        }
    }
    Ok(out)
}

async fn info(ctx: &Ctx, i: &ServiceInstanceRecord, space: &str) -> ApiResult<ServiceInfo> {
    let mut bound_apps = Vec::new();
    for b in ctx.store.bindings_of_instance(&i.id).await? {
        if let Some(a) = ctx.store.app_by_id(&b.app_id).await? {
            bound_apps.push(a.name);
        }
    }
    Ok(ServiceInfo {
        name: i.name.clone(),
        kind: i.kind.clone(),
        offering: i.label.clone(),
        plan: i.plan.clone(),
        broker: i.broker.clone(),
        tags: i.tags.clone(),
        state: i.state.clone(),
        description: i.description.clone(),
        dashboard_url: i.dashboard_url.clone(),
        space: space.to_string(),
        bound_apps,
        created_at: i.created_at,
    })
}

fn label(s: &SpaceRecord) -> String {
    format!("{}/{}", s.org, s.name)
}

#[utoipa::path(get, path = "/v1/service-brokers", tag = "services", summary = "Service brokers: built-in and registered ones (operators)", responses((status = 200, body = paas_common::service::BrokerList), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list_brokers(ctx: Ctx, _who: Principal) -> ApiResult<web::Json<BrokerList>> {
    let brokers = ops::catalogs(&ctx, None)
        .await?
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    Ok(web::Json(BrokerList { brokers }))
}

#[utoipa::path(post, path = "/v1/service-brokers", tag = "services", summary = "Register an Open Service Broker API v2.17 broker (operators); its catalog is fetched first", request_body = paas_common::service::CreateBroker, responses((status = 201, body = paas_common::service::BrokerInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn create_broker(
    ctx: Ctx,
    _who: Principal,
    req: HttpRequest,
    body: web::Json<CreateBroker>,
) -> ApiResult<HttpResponse> {
    let space = if body.space_scoped {
        Some(crate::authz::target_space(&ctx, &req).await?)
    } else {
        None
    };
    let catalog = ops::create_broker(&ctx, &body, space.as_ref().map(|s| s.id.clone())).await?;
    Ok(HttpResponse::Created().json(BrokerInfo {
        name: body.name.clone(),
        url: body.url.trim_end_matches('/').to_string(),
        space: space.as_ref().map(label),
        builtin: false,
        services: catalog.services.iter().map(|s| s.name.clone()).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/service-brokers/{broker}", tag = "services", summary = "Remove a registered broker (refused while instances of it exist)", params(("broker" = String, Path, description = "The broker's name")), responses((status = 204, description = "Removed"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn delete_broker(
    ctx: Ctx,
    _who: Principal,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    ops::delete_broker(&ctx, &path).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(get, path = "/v1/marketplace", tag = "services", summary = "The offerings and plans of every broker the target space sees", responses((status = 200, body = paas_common::service::Marketplace), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn marketplace(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
) -> ApiResult<web::Json<Marketplace>> {
    let space = space(&ctx, &who, &req, false).await?;
    let offerings = ops::marketplace(&ctx, Some(&space.id)).await?;
    Ok(web::Json(Marketplace { offerings }))
}

#[utoipa::path(get, path = "/v1/services", tag = "services", summary = "The service instances of the target space", responses((status = 200, body = paas_common::service::ServiceList), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(ctx: Ctx, who: Principal, req: HttpRequest) -> ApiResult<web::Json<ServiceList>> {
    let space = space(&ctx, &who, &req, false).await?;
    let mut services = Vec::new();
    for i in ctx.store.service_instances(Some(&space.id)).await? {
        services.push(info(&ctx, &i, &label(&space)).await?);
    }
    Ok(web::Json(ServiceList { services }))
}

#[utoipa::path(post, path = "/v1/services", tag = "services", summary = "Create a service instance in the target space: an offering's plan (provisioned by its broker, maybe asynchronously: `state` shows it), or user-provided credentials", request_body = paas_common::service::CreateService, responses((status = 201, body = paas_common::service::ServiceInfo), (status = 202, description = "Being created by its broker", body = paas_common::service::ServiceInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn create(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    body: web::Json<CreateService>,
) -> ApiResult<HttpResponse> {
    let space = space(&ctx, &who, &req, true).await?;
    let rec = ops::create_service(&ctx, &actor(&who), &space, &body).await?;
    let out = info(&ctx, &rec, &label(&space)).await?;
    Ok(if rec.state == crate::store::service_state::SUCCEEDED {
        HttpResponse::Created().json(out)
    } else {
        HttpResponse::Accepted().json(out)
    })
}

#[utoipa::path(get, path = "/v1/services/{service}", tag = "services", summary = "One service instance of the target space, with its state and bound apps", params(("service" = String, Path, description = "The service instance's name")), responses((status = 200, body = paas_common::service::ServiceInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn get(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<web::Json<ServiceInfo>> {
    let space = space(&ctx, &who, &req, false).await?;
    let i = ops::instance_named(&ctx, &space.id, &path).await?;
    Ok(web::Json(info(&ctx, &i, &label(&space)).await?))
}

#[utoipa::path(patch, path = "/v1/services/{service}", tag = "services", summary = "Update a user-provided service instance's credentials or syslog drain; bound apps redeploy", params(("service" = String, Path, description = "The service instance's name")), request_body = paas_common::service::UpdateService, responses((status = 200, body = paas_common::service::ServiceInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn update(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<UpdateService>,
) -> ApiResult<web::Json<ServiceInfo>> {
    let space = space(&ctx, &who, &req, true).await?;
    let i = ops::instance_named(&ctx, &space.id, &path).await?;
    let body = body.into_inner();
    ops::update_user_provided(
        &ctx,
        &actor(&who),
        &i,
        body.credentials,
        body.syslog_drain_url,
    )
    .await?;
    let i = ops::instance_named(&ctx, &space.id, &path).await?;
    Ok(web::Json(info(&ctx, &i, &label(&space)).await?))
}

/// A backup error as the API says it: an instance the built-in broker does not run (an external
/// broker's, user-provided) has no backups.
fn backup_error(name: &str, e: crate::services::builtin::backup::BackupError) -> Error {
    use crate::services::builtin::backup::BackupError as B;
    match e {
        B::InstanceNotFound(_) => Error::api(
            ErrorCode::BadRequest,
            format!("service {name} is not one of the platform's own PostgreSQL instances: it has no backups"),
        ),
        B::BackupNotFound(id) => Error::api(
            ErrorCode::NotFound,
            format!("no backup {id} of service {name}"),
        ),
        B::Invalid(m) => Error::api(ErrorCode::Conflict, m),
        B::Store(e) => e.into(),
    }
}

#[utoipa::path(post, path = "/v1/services/{service}/backups", tag = "services", summary = "Start a backup of a built-in PostgreSQL service instance (pg_dump format, stored in the blobstore); poll the list until it is `done`", params(("service" = String, Path, description = "The service instance's name")), responses((status = 202, body = paas_common::api::ServiceBackup), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn start_backup(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let space = space(&ctx, &who, &req, true).await?;
    let i = ops::instance_named(&ctx, &space.id, &path).await?;
    let job = crate::services::builtin::backup::backup(&ctx, &i.id)
        .await
        .map_err(|e| backup_error(&path, e))?;
    Ok(HttpResponse::Accepted().json(crate::services::builtin::backup::to_wire(&job)))
}

#[utoipa::path(get, path = "/v1/services/{service}/backups", tag = "services", summary = "The backups and restores of a built-in PostgreSQL service instance, oldest first", params(("service" = String, Path, description = "The service instance's name")), responses((status = 200, body = Vec<paas_common::api::ServiceBackup>), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list_backups(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<web::Json<Vec<paas_common::api::ServiceBackup>>> {
    let space = space(&ctx, &who, &req, false).await?;
    let i = ops::instance_named(&ctx, &space.id, &path).await?;
    let jobs = crate::services::builtin::backup::jobs(&ctx, &i.id)
        .await
        .map_err(|e| backup_error(&path, e))?;
    Ok(web::Json(
        jobs.iter()
            .map(crate::services::builtin::backup::to_wire)
            .collect(),
    ))
}

#[utoipa::path(post, path = "/v1/services/{service}/restore", tag = "services", summary = "Restore a finished backup over the instance's database (objects in the dump are dropped and recreated); poll the list until it is `done`", params(("service" = String, Path, description = "The service instance's name")), request_body = paas_common::api::RestoreRequest, responses((status = 202, body = paas_common::api::ServiceBackup), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn start_restore(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<paas_common::api::RestoreRequest>,
) -> ApiResult<HttpResponse> {
    let space = space(&ctx, &who, &req, true).await?;
    let i = ops::instance_named(&ctx, &space.id, &path).await?;
    let job = crate::services::builtin::backup::restore(&ctx, &i.id, &body.backup)
        .await
        .map_err(|e| backup_error(&path, e))?;
    Ok(HttpResponse::Accepted().json(crate::services::builtin::backup::to_wire(&job)))
}

#[utoipa::path(delete, path = "/v1/services/{service}", tag = "services", summary = "Delete a service instance (refused with `service_bound` while apps are bound); 202 while its broker deprovisions", params(("service" = String, Path, description = "The service instance's name")), responses((status = 204, description = "Deleted"), (status = 202, description = "Being deleted by its broker", body = paas_common::service::ServiceInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn delete(
    ctx: Ctx,
    who: Principal,
    req: HttpRequest,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let space = space(&ctx, &who, &req, true).await?;
    let i = ops::instance_named(&ctx, &space.id, &path).await?;
    if ops::delete_service(&ctx, &actor(&who), &i).await? {
        return Ok(HttpResponse::NoContent().finish());
    }
    let i = ops::instance_named(&ctx, &space.id, &path).await?;
    Ok(HttpResponse::Accepted().json(info(&ctx, &i, &label(&space)).await?))
}

async fn binding_infos(ctx: &Ctx, app: &crate::store::AppRecord) -> ApiResult<Vec<BindingInfo>> {
    let mut out = Vec::new();
    for b in ctx.store.bindings_of_app(&app.id).await? {
        if let Some(i) = ctx.store.service_instance(&b.instance_id).await? {
            out.push(BindingInfo {
                service: i.name,
                app: app.name.clone(),
                offering: i.label,
                plan: i.plan,
                created_at: b.created_at,
                revision: None,
            });
        }
    }
    Ok(out)
}

#[utoipa::path(get, path = "/v1/apps/{name}/bindings", tag = "services", summary = "The service instances bound to the app", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::service::BindingList), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list_bindings(
    ctx: Ctx,
    _user: AuthUser,
    app: AppAccess<Viewer>,
) -> ApiResult<web::Json<BindingList>> {
    let bindings = binding_infos(&ctx, &app.into_app()).await?;
    Ok(web::Json(BindingList { bindings }))
}

#[utoipa::path(post, path = "/v1/apps/{name}/bindings", tag = "services", summary = "Bind a service instance of the app's space to the app: VCAP_SERVICES (and DATABASE_URL / REDIS_URL) in a new revision, rolled out without downtime", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::service::CreateBinding, responses((status = 201, body = paas_common::service::BindingInfo), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn bind(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<CreateBinding>,
) -> ApiResult<HttpResponse> {
    let space_id = app.space_id.clone();
    let app = app.into_app();
    let i = ops::instance_named(&ctx, &space_id, &body.service).await?;
    let (b, revision) = ops::bind(&ctx, &Actor::from(&user), &app, &i).await?;
    Ok(HttpResponse::Created().json(BindingInfo {
        service: i.name,
        app: app.name,
        offering: i.label,
        plan: i.plan,
        created_at: b.created_at,
        revision,
    }))
}

#[utoipa::path(delete, path = "/v1/apps/{name}/bindings/{service}", tag = "services", summary = "Unbind a service instance: the broker revokes the credentials and the app redeploys without them", params(("name" = String, Path, description = "The app's name"), ("service" = String, Path, description = "The service instance's name")), responses((status = 204, description = "Unbound"), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn unbind(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (_, service) = path.into_inner();
    let space_id = app.space_id.clone();
    let app = app.into_app();
    let i = ops::instance_named(&ctx, &space_id, &service).await?;
    ops::unbind(&ctx, &Actor::from(&user), &app, &i).await?;
    Ok(HttpResponse::NoContent().finish())
}
