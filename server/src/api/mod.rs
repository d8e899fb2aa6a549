//! REST API under `/v1`. Handlers are thin: parse, call the store, answer DTOs from
//! `paas_common::api`. Errors go through `crate::error::Error`, mapped to HTTP in one place.

mod agent;
mod apply;
mod apps;
pub(crate) mod auth;
mod autoscale;
pub(crate) mod base_images;
mod buildpacks;
mod builds;
mod cron;
mod deployments;
mod domains;
mod drains;
mod identity;
mod lifecycle;
mod logs;
mod metrics;
mod network;
pub(crate) mod nodes;
pub(crate) mod openapi;
pub(crate) mod page;
mod processes;
mod push_settings;
pub(crate) mod push_stream;
mod resources;
mod revisions;
mod routes;
mod service_jobs;
mod services;
mod ssh;
mod tasks;
mod tenancy;

use actix_web::web;

use crate::error::{ApiResult, Error};
use crate::state::AppCtx;
use paas_common::ErrorCode;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .wrap(actix_web::middleware::from_fn(crate::authz::middleware))
            .route("/auth/login", web::post().to(auth::login))
            .route("/auth/refresh", web::post().to(auth::refresh))
            .route("/auth/logout", web::post().to(auth::logout))
            .route("/admin/keys", web::get().to(auth::list_keys))
            .route("/admin/keys/rotate", web::post().to(auth::rotate_keys))
            .route("/apps", web::get().to(apps::list))
            .route("/apps/{name}", web::get().to(apps::get))
            .route("/apps/{name}", web::delete().to(apps::delete))
            .route("/apps/{name}/push", web::post().to(apps::push))
            .route("/apps/{name}/logs", web::get().to(logs::recent))
            .route("/apps/{name}/events", web::get().to(apps::events))
            .route("/apps/{name}/metrics", web::get().to(metrics::app_metrics))
            .route("/events", web::get().to(apps::all_events))
            .route("/nodes", web::get().to(nodes::list))
            .route("/nodes/metrics", web::get().to(metrics::node_metrics))
            .route("/agent/register", web::post().to(agent::register))
            .route("/agent/heartbeat", web::post().to(agent::heartbeat))
            .route("/agent/assignments", web::get().to(agent::assignments))
            .route("/agent/droplets/{sha}", web::get().to(agent::droplet))
            .service(
                web::resource("/agent/logs")
                    // Read whole before decoding: an agent batch is at most 2000 lines of at most
                    // 64 KiB each (usually far less), and must not be refused for its size.
                    .app_data(web::PayloadConfig::new(2000 * 65 * 1024))
                    .route(web::post().to(agent::logs)),
            )
            .route("/tokens", web::post().to(tenancy::create_token))
            .route("/tokens", web::get().to(tenancy::list_tokens))
            .route("/tokens/{id}", web::delete().to(tenancy::revoke_token))
            .route("/users", web::get().to(tenancy::list_users))
            .route("/users", web::post().to(tenancy::create_user))
            .route("/users/{name}/roles", web::put().to(tenancy::set_role))
            .route("/spaces", web::get().to(tenancy::list_spaces))
            .route("/spaces", web::post().to(tenancy::create_space))
            .route("/spaces/{org}/{space}/apply", web::post().to(apply::apply))
            .route(
                "/spaces/{org}/{space}/quota",
                web::get().to(tenancy::get_quota),
            )
            .route(
                "/spaces/{org}/{space}/quota",
                web::put().to(tenancy::set_quota),
            )
            .route("/apps/{name}", web::patch().to(lifecycle::update))
            .route("/apps/{name}/restart", web::post().to(lifecycle::restart))
            .route("/apps/{name}/stop", web::post().to(lifecycle::stop))
            .route("/apps/{name}/start", web::post().to(lifecycle::start))
            .route(
                "/apps/{name}/instances/{index}/restart",
                web::post().to(lifecycle::restart_instance),
            )
            .route("/nodes/{name}/drain", web::post().to(lifecycle::drain))
            .route("/routes", web::get().to(routes::list))
            .route("/domains", web::get().to(domains::list))
            .route("/domains", web::post().to(domains::create))
            .route("/domains/{domain}", web::delete().to(domains::delete))
            .route(
                "/domains/{domain}/certificate",
                web::put().to(domains::set_certificate),
            )
            .route("/domains/{domain}/acme", web::put().to(domains::set_acme))
            .route("/network-policies", web::get().to(network::list))
            .route("/network-policies", web::post().to(network::add))
            .route("/network-policies/{id}", web::delete().to(network::remove))
            .route("/apps/{name}/routes", web::get().to(routes::list_for_app))
            .route("/apps/{name}/routes", web::post().to(routes::map))
            .route("/apps/{name}/routes", web::delete().to(routes::unmap))
            .route("/router/table", web::get().to(routes::table))
            .route("/router/logs", web::post().to(routes::logs))
            .route("/apps/{name}/logs/stream", web::get().to(logs::stream))
            .route("/apps/{name}/log-drains", web::get().to(drains::list))
            .route("/apps/{name}/log-drains", web::post().to(drains::add))
            .route("/apps/{name}/log-drains", web::delete().to(drains::remove))
            .route("/apps/{name}/env", web::get().to(revisions::get_env))
            .route("/apps/{name}/env", web::patch().to(revisions::update_env))
            .route("/apps/{name}/revisions", web::get().to(revisions::list))
            .route("/apps/{name}/rollback", web::post().to(revisions::rollback))
            .route("/service-brokers", web::get().to(services::list_brokers))
            .route("/service-brokers", web::post().to(services::create_broker))
            .route(
                "/service-brokers/{broker}",
                web::delete().to(services::delete_broker),
            )
            .route("/marketplace", web::get().to(services::marketplace))
            .route("/services", web::get().to(services::list))
            .route("/services", web::post().to(services::create))
            .route("/services/{service}", web::get().to(services::get))
            .route("/services/{service}", web::patch().to(services::update))
            .route("/services/{service}", web::delete().to(services::delete))
            .route(
                "/services/{service}/backups",
                web::get().to(services::list_backups),
            )
            .route(
                "/services/{service}/backups",
                web::post().to(services::start_backup),
            )
            .route(
                "/services/{service}/restore",
                web::post().to(services::start_restore),
            )
            .route(
                "/apps/{name}/bindings",
                web::get().to(services::list_bindings),
            )
            .route("/apps/{name}/bindings", web::post().to(services::bind))
            .route(
                "/apps/{name}/bindings/{service}",
                web::delete().to(services::unbind),
            )
            .route("/apps/{name}/deployment", web::get().to(deployments::show))
            .route(
                "/apps/{name}/deployment/continue",
                web::post().to(deployments::resume),
            )
            .route(
                "/apps/{name}/deployment/cancel",
                web::post().to(deployments::cancel),
            )
            .route("/apps/{name}/cron", web::get().to(cron::list))
            .route("/apps/{name}/cron", web::post().to(cron::add))
            .route("/apps/{name}/cron/{id}", web::delete().to(cron::remove))
            .route("/apps/{name}/autoscale", web::get().to(autoscale::get))
            .route("/apps/{name}/autoscale", web::put().to(autoscale::set))
            .route(
                "/apps/{name}/autoscale",
                web::delete().to(autoscale::remove),
            )
            .route("/apps/{name}/tasks", web::post().to(tasks::run))
            .route("/apps/{name}/tasks", web::get().to(tasks::list))
            .route("/apps/{name}/tasks/{id}", web::get().to(tasks::get))
            .route(
                "/apps/{name}/tasks/{id}/cancel",
                web::post().to(tasks::cancel),
            )
            .route("/agent/builds/{id}/source", web::get().to(builds::source))
            .route("/agent/builds/{id}/logs", web::post().to(builds::logs))
            .route("/agent/builds/{id}/droplet", web::put().to(builds::droplet))
            .route("/agent/builds/{id}/result", web::post().to(builds::result))
            .route(
                "/agent/service-jobs/{id}/dump",
                web::put().to(service_jobs::upload),
            )
            .route(
                "/agent/service-jobs/{id}/dump",
                web::get().to(service_jobs::download),
            )
            .route(
                "/agent/service-jobs/{id}/result",
                web::post().to(service_jobs::result),
            )
            .route("/resources/match", web::post().to(resources::match_files))
            .route("/buildpacks", web::get().to(buildpacks::list))
            .route("/buildpacks", web::post().to(buildpacks::create))
            .route("/buildpacks/{name}", web::delete().to(buildpacks::delete))
            .route(
                "/agent/buildpacks/{sha}",
                web::get().to(buildpacks::agent_fetch),
            )
            .route("/base-images", web::get().to(base_images::list))
            .route("/base-images", web::post().to(base_images::allow))
            .route(
                "/base-images/{name}",
                web::delete().to(base_images::disallow),
            )
            .route("/apps/{name}/ssh", web::get().to(ssh::open))
            .route("/apps/{name}/ssh-enabled", web::get().to(ssh::get_app))
            .route("/apps/{name}/ssh-enabled", web::put().to(ssh::set_app))
            .route(
                "/spaces/{org}/{space}/ssh-allowed",
                web::get().to(ssh::get_space),
            )
            .route(
                "/spaces/{org}/{space}/ssh-allowed",
                web::put().to(ssh::set_space),
            )
            .route("/agent/sessions", web::get().to(ssh::agent_sessions))
            .route("/agent/ssh/{id}", web::get().to(ssh::agent_dial))
            .route("/instance-identity/ca.pem", web::get().to(identity::ca))
            .route(
                "/agent/instances/{id}/identity",
                web::post().to(identity::issue),
            )
            .route("/openapi.json", web::get().to(openapi::serve))
            .route("/info", web::get().to(info))
            .default_service(web::to(not_found)),
    )
    .app_data(
        web::JsonConfig::default()
            .limit(8 * 1024 * 1024)
            .error_handler(|err, _| {
                Error::api(ErrorCode::BadRequest, format!("invalid JSON body: {err}")).into()
            }),
    )
    .app_data(web::QueryConfig::default().error_handler(|err, _| {
        Error::api(ErrorCode::BadRequest, format!("invalid query: {err}")).into()
    }))
    .app_data(web::PathConfig::default().error_handler(|err, _| {
        Error::api(ErrorCode::BadRequest, format!("invalid path: {err}")).into()
    }));
}

/// Which controller answered and whether it leads: public, like `/healthz`, for load balancers
/// and operators choosing where to look.
#[utoipa::path(get, path = "/v1/info", tag = "controller", summary = "This controller's id and whether it runs the scheduler", security(()), responses((status = 200, body = paas_common::api::ControllerInfo)))]
pub(crate) async fn info(ctx: Ctx) -> web::Json<paas_common::api::ControllerInfo> {
    web::Json(paas_common::api::ControllerInfo {
        controller: ctx.leadership.holder.clone(),
        leader: ctx.leadership.is_leader(),
    })
}

async fn not_found() -> ApiResult<&'static str> {
    Err(Error::api(ErrorCode::NotFound, "no such API endpoint"))
}

pub type Ctx = web::Data<AppCtx>;
