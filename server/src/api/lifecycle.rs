//! App and node lifecycle: scale and settings (`PATCH /v1/apps/{name}`), rolling restart, stop,
//! start, restart of one instance, and node drain. Handlers only record intent (app settings,
//! rows marked for replacement, node state) with an event naming the actor; the convergence loop
//! does the work, replacement first and removal after.

use actix_web::web;
use paas_common::agent::{HealthCheck, HealthSettings, ReadinessSettings};
use paas_common::api::{
    AppSettings, AppState, AppUpdateRequest, HealthCheckSettings, HealthCheckUpdate,
    NodeStateResponse, RestartRequest,
};
use paas_common::domain::{format_log_rate_limit, parse_log_rate_limit};
use paas_common::ErrorCode;
use std::collections::BTreeMap;

use super::apps::find_app;
use super::Ctx;
use crate::auth::AuthUser;
use crate::authz::{AppAccess, Developer};
use crate::error::{ApiResult, Error};
use crate::store::{AppRecord, AppUpdate, Event, StoreError};

const MAX_INSTANCES: u32 = 100;
const MAX_IN_FLIGHT: u32 = 100;

fn bad(msg: impl Into<String>) -> Error {
    Error::api(ErrorCode::BadRequest, msg)
}

/// The check `check_type` names; `what` ("health" or "readiness") prefixes the errors.
fn check_of(what: &str, check_type: &str, endpoint: &Option<String>) -> ApiResult<HealthCheck> {
    Ok(match (check_type, endpoint) {
        ("port", None) => HealthCheck::Port,
        ("process", None) => HealthCheck::Process,
        ("http", Some(e))
            if e.starts_with('/') && e.len() <= 1024 && !e.chars().any(char::is_whitespace) =>
        {
            HealthCheck::Http {
                endpoint: e.clone(),
            }
        }
        ("http", _) => {
            return Err(bad(format!(
                "an http {what} check needs an endpoint path starting with /, e.g. /health"
            )))
        }
        ("port" | "process", Some(_)) => {
            return Err(bad(format!("only an http {what} check takes an endpoint")))
        }
        (other, _) => {
            return Err(bad(format!(
                "{what} check type must be port, http or process, not {other:?}"
            )))
        }
    })
}

fn check_type_name(c: &HealthCheck) -> &'static str {
    match c {
        HealthCheck::Port => "port",
        HealthCheck::Http { .. } => "http",
        HealthCheck::Process => "process",
    }
}

/// Checks a health check request and fills the rest from Cloud Foundry's defaults.
pub(super) fn health_settings(h: &HealthCheckUpdate) -> ApiResult<HealthSettings> {
    let d = HealthSettings::default();
    let check = check_of("health", &h.check_type, &h.endpoint)?;
    let invocation_timeout_secs = h
        .invocation_timeout_secs
        .unwrap_or(d.invocation_timeout_secs);
    let start_timeout_secs = h.start_timeout_secs.unwrap_or(d.start_timeout_secs);
    if !(1..=60).contains(&invocation_timeout_secs) {
        return Err(bad("invocation_timeout_secs must be from 1 to 60"));
    }
    if !(1..=3600).contains(&start_timeout_secs) {
        return Err(bad("start_timeout_secs must be from 1 to 3600"));
    }
    Ok(HealthSettings {
        check,
        invocation_timeout_secs,
        start_timeout_secs,
        ..d
    })
}

/// A manifest's health fields applied on top of `current`: what the manifest leaves out stays.
/// A readiness endpoint without a type means an http readiness check; readiness fields without
/// either mean Cloud Foundry's default readiness type, `process`.
pub(crate) fn manifest_health(
    current: &HealthSettings,
    s: &HealthCheckSettings,
) -> ApiResult<HealthSettings> {
    let mut out = current.clone();
    let liveness_given = s.check_type.is_some()
        || s.http_endpoint.is_some()
        || s.invocation_timeout_secs.is_some()
        || s.start_timeout_secs.is_some();
    if liveness_given {
        let check_type = match (&s.check_type, &s.http_endpoint) {
            (Some(t), _) => t.clone(),
            (None, Some(_)) => "http".into(),
            (None, None) => check_type_name(&current.check).into(),
        };
        let endpoint = match (&s.http_endpoint, &current.check) {
            (Some(e), _) => Some(e.clone()),
            (None, HealthCheck::Http { endpoint }) if check_type == "http" => {
                Some(endpoint.clone())
            }
            (None, _) => None,
        };
        let live = health_settings(&HealthCheckUpdate {
            check_type,
            endpoint,
            invocation_timeout_secs: s
                .invocation_timeout_secs
                .or(Some(current.invocation_timeout_secs)),
            start_timeout_secs: s.start_timeout_secs.or(Some(current.start_timeout_secs)),
        })?;
        out = HealthSettings {
            readiness: current.readiness.clone(),
            ..live
        };
    }
    let readiness_given = s.readiness_type.is_some()
        || s.readiness_http_endpoint.is_some()
        || s.readiness_invocation_timeout_secs.is_some()
        || s.readiness_interval_secs.is_some();
    if readiness_given {
        let now = current.readiness.as_ref();
        let check_type = match (&s.readiness_type, &s.readiness_http_endpoint) {
            (Some(t), _) => t.clone(),
            (None, Some(_)) => "http".into(),
            (None, None) => now.map_or("process", |r| check_type_name(&r.check)).into(),
        };
        let endpoint = match (&s.readiness_http_endpoint, now.map(|r| &r.check)) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(HealthCheck::Http { endpoint })) if check_type == "http" => {
                Some(endpoint.clone())
            }
            (None, _) => None,
        };
        let check = check_of("readiness", &check_type, &endpoint)?;
        let invocation_timeout_secs = s
            .readiness_invocation_timeout_secs
            .or(now.map(|r| r.invocation_timeout_secs))
            .unwrap_or(1);
        let interval_secs = s
            .readiness_interval_secs
            .or(now.map(|r| r.interval_secs))
            .unwrap_or(ReadinessSettings::DEFAULT_INTERVAL_SECS);
        if !(1..=60).contains(&invocation_timeout_secs) {
            return Err(bad(
                "readiness-health-check-invocation-timeout must be from 1 to 60",
            ));
        }
        if !(1..=3600).contains(&interval_secs) {
            return Err(bad(
                "readiness-health-check-interval must be from 1 to 3600",
            ));
        }
        out.readiness = Some(ReadinessSettings {
            check,
            invocation_timeout_secs,
            interval_secs,
        });
    }
    Ok(out)
}

/// Most placement labels an app may ask for.
const MAX_LABELS: usize = 16;

/// Checks placement labels: a few short `KEY=VALUE` pairs of letters, digits and `._-/`.
pub(crate) fn check_labels(labels: &BTreeMap<String, String>) -> ApiResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(bad(format!(
            "at most {MAX_LABELS} placement labels, not {}",
            labels.len()
        )));
    }
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    };
    for (k, v) in labels {
        if !ok(k) || !ok(v) {
            return Err(bad(format!(
                "placement label {k:?}={v:?}: keys and values are 1 to 63 letters, digits or ._-/"
            )));
        }
    }
    Ok(())
}

pub(super) async fn settings(ctx: &Ctx, app: &AppRecord, rolling: bool) -> ApiResult<AppSettings> {
    let app = find_app(ctx, &app.name).await?;
    let lc = ctx
        .store
        .app_lifecycles()
        .await?
        .remove(&app.id)
        .unwrap_or_default();
    Ok(AppSettings {
        name: app.name,
        state: app.state,
        desired_instances: app.desired_instances,
        memory_mb: app.memory_mb,
        max_in_flight: lc.max_in_flight,
        health: lc.health.unwrap_or_default(),
        placement_labels: lc.placement_labels,
        log_rate_limit_bytes: lc.log_rate_limit_bytes,
        rolling,
    })
}

/// Checks a requested log rate limit: bytes/s, `None` for the platform default.
pub(crate) fn log_rate_limit(value: &str) -> ApiResult<Option<u64>> {
    parse_log_rate_limit(value).map_err(|m| Error::api(ErrorCode::InvalidLogRateLimit, m))
}

/// How a log rate limit reads in events and lines: `1K/s` or `the platform default`.
pub(crate) fn describe_log_rate_limit(limit: Option<u64>) -> String {
    limit.map_or_else(
        || "the platform default".to_string(),
        |b| format!("{}/s", format_log_rate_limit(b)),
    )
}

fn event(user: &AuthUser, app: &AppRecord, kind: &str, message: String) -> Event {
    Event {
        app_name: Some(app.name.clone()),
        actor: user.actor.clone(),
        kind: kind.into(),
        message,
    }
}

/// `PATCH /v1/apps/{name}` with [`AppUpdateRequest`].
#[utoipa::path(patch, path = "/v1/apps/{name}", tag = "lifecycle", summary = "Scale, resize, change health check or placement", params(("name" = String, Path, description = "The app's name")), request_body = paas_common::api::AppUpdateRequest, responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn update(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: web::Json<AppUpdateRequest>,
) -> ApiResult<web::Json<AppSettings>> {
    let app = app.into_app();
    let req = body.into_inner();
    if let Some(p) = req.process.as_deref().filter(|p| *p != "web") {
        return super::processes::scale(&ctx, &user, &app, p, &req).await;
    }
    if req.instances.is_some_and(|n| n > MAX_INSTANCES) {
        return Err(bad(format!("instances must be from 0 to {MAX_INSTANCES}")));
    }
    if req
        .memory_mb
        .is_some_and(|m| !(16..=64 * 1024).contains(&m))
    {
        return Err(bad("memory must be from 16 MB to 64 GB"));
    }
    if req
        .max_in_flight
        .is_some_and(|k| !(1..=MAX_IN_FLIGHT).contains(&k))
    {
        return Err(bad(format!(
            "max_in_flight must be from 1 to {MAX_IN_FLIGHT}"
        )));
    }
    let mut health = req.health_check.as_ref().map(health_settings).transpose()?;
    if let Some(h) = health.as_mut() {
        // The API's health check is the liveness one: a readiness check set by a manifest stays.
        h.readiness = ctx
            .store
            .app_lifecycles()
            .await?
            .remove(&app.id)
            .and_then(|l| l.health)
            .and_then(|h| h.readiness);
    }
    if let Some(l) = &req.placement_labels {
        check_labels(l)?;
    }
    let log_limit = req
        .log_rate_limit
        .as_ref()
        .map(|l| {
            l.bytes()
                .map_err(|m| Error::api(ErrorCode::InvalidLogRateLimit, m))
        })
        .transpose()?;
    let mut what = Vec::new();
    if let Some(n) = req.instances {
        what.push(format!("instances {} -> {n}", app.desired_instances));
    }
    if let Some(m) = req.memory_mb {
        what.push(format!("memory {} MB -> {m} MB", app.memory_mb));
    }
    if let Some(k) = req.max_in_flight {
        what.push(format!("max in flight {k}"));
    }
    if let Some(h) = &req.health_check {
        what.push(format!(
            "health check {}{}",
            h.check_type,
            h.endpoint.as_deref().unwrap_or_default()
        ));
    }
    if let Some(l) = &req.placement_labels {
        what.push(format!("placement labels {l:?}"));
    }
    let log_limit_change = match log_limit {
        Some(new) => {
            let current = ctx
                .store
                .app_lifecycles()
                .await?
                .remove(&app.id)
                .and_then(|l| l.log_rate_limit_bytes);
            let change = format!(
                "log rate limit {} -> {}",
                describe_log_rate_limit(current),
                describe_log_rate_limit(new)
            );
            what.push(change.clone());
            Some(change)
        }
        None => None,
    };
    if what.is_empty() {
        return Err(bad("nothing to change: give instances, memory_mb, max_in_flight, health_check, placement_labels or log_rate_limit"));
    }
    let update = AppUpdate {
        desired_instances: req.instances,
        memory_mb: req.memory_mb,
        state: None,
        max_in_flight: req.max_in_flight,
        health,
        placement_labels: req.placement_labels,
        log_rate_limit: log_limit,
    };
    let ev = event(
        &user,
        &app,
        "app.scale",
        format!("{} changed {}", user.username, what.join(", ")),
    );
    let rolling = ctx.store.update_app(&app.id, &update, &ev).await?;
    tracing::info!(app = %app.name, change = %what.join(", "), rolling, "app settings changed");
    if let Some(change) = log_limit_change {
        // The instances keep running: only their nodes' collectors change, so the nodes must
        // look at their assignments now, whatever convergence decides.
        ctx.bump_assignments();
        super::apps::log_platform(
            &ctx,
            &app.name,
            "API",
            format!("{} changed the {change}", user.username),
        )
        .await;
    }
    ctx.converge.notify_one();
    Ok(web::Json(settings(&ctx, &app, rolling).await?))
}

/// `POST /v1/apps/{name}/restart` with an optional [`RestartRequest`]: a rolling restart.
#[utoipa::path(post, path = "/v1/apps/{name}/restart", tag = "lifecycle", summary = "Rolling restart", params(("name" = String, Path, description = "The app's name")), request_body = Option<paas_common::api::RestartRequest>, responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn restart(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    body: Option<web::Json<RestartRequest>>,
) -> ApiResult<web::Json<AppSettings>> {
    let app = app.into_app();
    if app.state != AppState::Started {
        return Err(Error::api(
            ErrorCode::AppStopped,
            format!("app {:?} is stopped: start it instead", app.name),
        ));
    }
    let k = body.and_then(|b| b.into_inner().max_in_flight);
    if let Some(k) = k {
        if !(1..=MAX_IN_FLIGHT).contains(&k) {
            return Err(bad(format!(
                "max_in_flight must be from 1 to {MAX_IN_FLIGHT}"
            )));
        }
        let ev = event(
            &user,
            &app,
            "app.scale",
            format!("{} set max in flight {k}", user.username),
        );
        ctx.store
            .update_app(
                &app.id,
                &AppUpdate {
                    max_in_flight: Some(k),
                    ..Default::default()
                },
                &ev,
            )
            .await?;
    }
    let ev = event(
        &user,
        &app,
        "app.restart",
        format!("{} asked for a rolling restart", user.username),
    );
    let n = ctx.store.retire_instances(&app.id, None, &ev).await?;
    tracing::info!(app = %app.name, instances = n, "rolling restart");
    ctx.converge.notify_one();
    Ok(web::Json(settings(&ctx, &app, n > 0).await?))
}

async fn set_state(
    ctx: Ctx,
    user: AuthUser,
    app: AppRecord,
    state: AppState,
) -> ApiResult<web::Json<AppSettings>> {
    let kind = if state == AppState::Started {
        "app.start"
    } else {
        "app.stop"
    };
    let ev = event(
        &user,
        &app,
        kind,
        format!(
            "{} {} the app",
            user.username,
            if kind == "app.start" {
                "started"
            } else {
                "stopped"
            }
        ),
    );
    ctx.store
        .update_app(
            &app.id,
            &AppUpdate {
                state: Some(state),
                ..Default::default()
            },
            &ev,
        )
        .await?;
    ctx.converge.notify_one();
    Ok(web::Json(settings(&ctx, &app, false).await?))
}

/// `POST /v1/apps/{name}/stop`: every instance stops (routes first); the app and its settings stay.
#[utoipa::path(post, path = "/v1/apps/{name}/stop", tag = "lifecycle", summary = "Stop every instance", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn stop(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
) -> ApiResult<web::Json<AppSettings>> {
    set_state(ctx, user, app.into_app(), AppState::Stopped).await
}

/// `POST /v1/apps/{name}/start`.
#[utoipa::path(post, path = "/v1/apps/{name}/start", tag = "lifecycle", summary = "Start a stopped app", params(("name" = String, Path, description = "The app's name")), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn start(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
) -> ApiResult<web::Json<AppSettings>> {
    set_state(ctx, user, app.into_app(), AppState::Started).await
}

/// Which process type's instance `POST /v1/apps/{name}/instances/{index}/restart` replaces.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RestartInstanceQuery {
    /// The process type (default `web`): indices are per type, so web 0 and worker 0 differ.
    pub process: Option<String>,
}

/// `POST /v1/apps/{name}/instances/{index}/restart`: replaces one instance of one process type,
/// new one first.
#[utoipa::path(post, path = "/v1/apps/{name}/instances/{index}/restart", tag = "lifecycle", summary = "Replace one instance of a process type, new one first", params(("name" = String, Path, description = "The app's name"), ("index" = u32, Path, description = "Instance index"), RestartInstanceQuery), responses((status = 200, body = paas_common::api::AppSettings), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn restart_instance(
    ctx: Ctx,
    user: AuthUser,
    app: AppAccess<Developer>,
    path: web::Path<(String, u32)>,
    query: web::Query<RestartInstanceQuery>,
) -> ApiResult<web::Json<AppSettings>> {
    let (_, index) = path.into_inner();
    let process = query.into_inner().process.unwrap_or_else(|| "web".into());
    let app = app.into_app();
    if app.state != AppState::Started {
        return Err(Error::api(
            ErrorCode::AppStopped,
            format!("app {:?} is stopped: start it instead", app.name),
        ));
    }
    let instances = if process == "web" {
        app.desired_instances
    } else {
        let specs = super::processes::current_specs(&ctx, &app).await?;
        let Some(spec) = specs.iter().find(|p| p.process_type == process) else {
            let known: Vec<&str> = std::iter::once("web")
                .chain(specs.iter().map(|p| p.process_type.as_str()))
                .collect();
            return Err(Error::api(
                ErrorCode::ProcessNotFound,
                format!(
                    "app {:?} has no process {process:?} (it has: {})",
                    app.name,
                    known.join(", ")
                ),
            ));
        };
        spec.instances
    };
    if index >= instances {
        return Err(Error::api(
            ErrorCode::InstanceNotFound,
            format!(
                "app {:?} has no {process} instance {index} (it has {instances})",
                app.name
            ),
        ));
    }
    let ev = event(
        &user,
        &app,
        "instance.restart",
        format!(
            "{} asked to restart {process} instance {index}",
            user.username
        ),
    );
    let n = ctx
        .store
        .retire_instances(&app.id, Some((&process, index)), &ev)
        .await?;
    ctx.converge.notify_one();
    Ok(web::Json(settings(&ctx, &app, n > 0).await?))
}

/// `POST /v1/nodes/{name}/drain`: the node gets no new instances; each of its instances gets a
/// replacement elsewhere and is removed once that runs; then the node is `drained`.
#[utoipa::path(post, path = "/v1/nodes/{name}/drain", tag = "nodes", summary = "Drain a node (operator)", params(("name" = String, Path, description = "Node name")), responses((status = 200, body = paas_common::api::NodeStateResponse), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn drain(
    ctx: Ctx,
    user: AuthUser,
    name: web::Path<String>,
) -> ApiResult<web::Json<NodeStateResponse>> {
    let ev = Event {
        app_name: None,
        actor: user.actor.clone(),
        kind: "node.drain".into(),
        message: format!("{} is draining node {name}", user.username),
    };
    match ctx.store.set_node_state(&name, "draining", &ev).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => {
            return Err(Error::api(
                ErrorCode::NodeNotFound,
                format!("node {:?} not found", name.as_str()),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(node = %name, "draining node");
    ctx.converge.notify_one();
    Ok(web::Json(NodeStateResponse {
        name: name.into_inner(),
        state: "draining".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(f: impl FnOnce(&mut HealthCheckSettings)) -> HealthCheckSettings {
        let mut s = HealthCheckSettings::default();
        f(&mut s);
        s
    }

    #[test]
    fn manifest_readiness_sits_beside_liveness() {
        let d = HealthSettings::default();
        // An endpoint alone means an http readiness check, with the defaults for the rest.
        let h = manifest_health(
            &d,
            &settings(|s| s.readiness_http_endpoint = Some("/ready".into())),
        )
        .unwrap();
        assert_eq!(h.check, HealthCheck::Port, "liveness untouched");
        assert_eq!(
            h.readiness,
            Some(ReadinessSettings {
                check: HealthCheck::Http {
                    endpoint: "/ready".into()
                },
                invocation_timeout_secs: 1,
                interval_secs: ReadinessSettings::DEFAULT_INTERVAL_SECS,
            })
        );
        // A later liveness change keeps the readiness check; a later interval keeps the endpoint.
        let h = manifest_health(
            &h,
            &settings(|s| {
                s.check_type = Some("http".into());
                s.http_endpoint = Some("/health".into());
                s.readiness_interval_secs = Some(2);
            }),
        )
        .unwrap();
        assert_eq!(
            h.check,
            HealthCheck::Http {
                endpoint: "/health".into()
            }
        );
        let r = h.readiness.unwrap();
        assert_eq!(
            r.check,
            HealthCheck::Http {
                endpoint: "/ready".into()
            }
        );
        assert_eq!(r.interval_secs, 2);
        // Refused: a port check with an endpoint, a zero interval, an unknown type.
        for bad in [
            settings(|s| {
                s.readiness_type = Some("port".into());
                s.readiness_http_endpoint = Some("/r".into());
            }),
            settings(|s| s.readiness_interval_secs = Some(0)),
            settings(|s| s.readiness_type = Some("tcp".into())),
            settings(|s| s.check_type = Some("http".into())),
        ] {
            assert!(manifest_health(&d, &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn placement_labels_are_checked() {
        let ok: BTreeMap<String, String> = [("disk".into(), "ssd".into())].into();
        assert!(check_labels(&ok).is_ok());
        for (k, v) in [("", "x"), ("k", ""), ("a b", "x"), ("k", "v;rm")] {
            let l: BTreeMap<String, String> = [(k.into(), v.into())].into();
            assert!(check_labels(&l).is_err(), "{k:?}={v:?}");
        }
        let many: BTreeMap<String, String> =
            (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(check_labels(&many).is_err());
    }
}
