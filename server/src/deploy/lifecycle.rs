//! App and node lifecycle: scale and settings, rolling restart, stop, start, restart of one
//! instance, node drain, and the manifest's process settings. Each records intent (app settings,
//! rows marked for replacement, node state) with an event naming the actor and wakes the
//! convergence loop, which does the work, replacement first and removal after.

use paas_common::agent::{HealthCheck, HealthSettings, ReadinessSettings};
use paas_common::api::{
    AppState, AppUpdateRequest, HealthCheckSettings, HealthCheckUpdate, ProcessSettings,
};
use paas_common::domain::{format_log_rate_limit, parse_log_rate_limit};
use paas_common::ErrorCode;
use std::collections::BTreeMap;

use super::{event, log_platform, Actor, DeployError, DeployResult};
use crate::control::desired::DesiredState;
use crate::state::AppCtx;
use crate::store::{AppRecord, AppUpdate, Event, ProcessRecord, StoreError};

pub const MAX_INSTANCES: u32 = 100;
pub const MAX_IN_FLIGHT: u32 = 100;

fn bad(msg: impl Into<String>) -> DeployError {
    DeployError::bad(msg)
}

/// The check `check_type` names; `what` ("health" or "readiness") prefixes the errors.
fn check_of(what: &str, check_type: &str, endpoint: &Option<String>) -> DeployResult<HealthCheck> {
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
pub fn health_settings(h: &HealthCheckUpdate) -> DeployResult<HealthSettings> {
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
pub fn manifest_health(
    current: &HealthSettings,
    s: &HealthCheckSettings,
) -> DeployResult<HealthSettings> {
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
pub fn check_labels(labels: &BTreeMap<String, String>) -> DeployResult<()> {
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

/// Checks a requested log rate limit: bytes/s, `None` for the platform default.
pub fn log_rate_limit(value: &str) -> DeployResult<Option<u64>> {
    parse_log_rate_limit(value).map_err(|m| DeployError::invalid(ErrorCode::InvalidLogRateLimit, m))
}

/// How a log rate limit reads in events and lines: `1K/s` or `the platform default`.
pub fn describe_log_rate_limit(limit: Option<u64>) -> String {
    limit.map_or_else(
        || "the platform default".to_string(),
        |b| format!("{}/s", format_log_rate_limit(b)),
    )
}

/// The non-web process types of the app's current revision.
pub async fn current_processes(
    ctx: &AppCtx,
    app: &AppRecord,
) -> DeployResult<Vec<crate::control::desired::ProcessDesired>> {
    Ok(DesiredState::of_app(ctx.store.as_ref(), app)
        .await?
        .map(|d| {
            d.processes
                .into_iter()
                .filter(|p| p.process_type != "web")
                .collect()
        })
        .unwrap_or_default())
}

/// The instance count of `process` (after checking the app has it).
async fn instances_of(ctx: &AppCtx, app: &AppRecord, process: &str) -> DeployResult<u32> {
    if process == "web" {
        return Ok(app.desired_instances);
    }
    let specs = current_processes(ctx, app).await?;
    specs
        .iter()
        .find(|p| p.process_type == process)
        .map(|p| p.instances)
        .ok_or_else(|| DeployError::ProcessNotFound {
            app: app.name.clone(),
            process: process.to_string(),
            known: std::iter::once("web".to_string())
                .chain(specs.iter().map(|p| p.process_type.clone()))
                .collect(),
        })
}

async fn configured(
    ctx: &AppCtx,
    app: &AppRecord,
    process_type: &str,
) -> DeployResult<ProcessRecord> {
    Ok(ctx
        .store
        .app_processes()
        .await?
        .remove(&app.id)
        .and_then(|l| l.into_iter().find(|p| p.process_type == process_type))
        .unwrap_or_else(|| ProcessRecord::default_for(process_type)))
}

/// The instance count and memory a request asks for, within the platform's bounds.
fn check_size(req: &AppUpdateRequest) -> DeployResult<()> {
    if req.instances.is_some_and(|n| n > MAX_INSTANCES) {
        return Err(bad(format!("instances must be from 0 to {MAX_INSTANCES}")));
    }
    if req
        .memory_mb
        .is_some_and(|m| !(16..=64 * 1024).contains(&m))
    {
        return Err(bad("memory must be from 16 MB to 64 GB"));
    }
    Ok(())
}

/// Changes an app's settings (`PATCH /v1/apps/{name}`): instances, memory, rollout width, health
/// check, placement labels, log rate limit; with `process` other than `web`, that type's.
/// Returns whether the instances are being replaced (a rolling deploy).
pub async fn update(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    req: AppUpdateRequest,
) -> DeployResult<bool> {
    if let Some(p) = req.process.as_deref().filter(|p| *p != "web") {
        return scale_process(ctx, actor, app, p, &req).await;
    }
    check_size(&req)?;
    check_sidecar_room(ctx, app, "web", req.memory_mb).await?;
    if req
        .max_in_flight
        .is_some_and(|k| !(1..=MAX_IN_FLIGHT).contains(&k))
    {
        return Err(bad(format!(
            "max_in_flight must be from 1 to {MAX_IN_FLIGHT}"
        )));
    }
    let current = ctx
        .store
        .app_lifecycles()
        .await?
        .remove(&app.id)
        .unwrap_or_default();
    let mut health = req.health_check.as_ref().map(health_settings).transpose()?;
    if let Some(h) = health.as_mut() {
        // The API's health check is the liveness one: a readiness check set by a manifest stays.
        h.readiness = current.health.as_ref().and_then(|h| h.readiness.clone());
    }
    if let Some(l) = &req.placement_labels {
        check_labels(l)?;
    }
    let log_limit = req
        .log_rate_limit
        .as_ref()
        .map(|l| {
            l.bytes()
                .map_err(|m| DeployError::invalid(ErrorCode::InvalidLogRateLimit, m))
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
    let log_limit_change = log_limit.map(|new| {
        let change = format!(
            "log rate limit {} -> {}",
            describe_log_rate_limit(current.log_rate_limit_bytes),
            describe_log_rate_limit(new)
        );
        what.push(change.clone());
        change
    });
    if what.is_empty() {
        return Err(bad("nothing to change: give instances, memory_mb, max_in_flight, health_check, placement_labels or log_rate_limit"));
    }
    if req.instances.is_some() || req.memory_mb.is_some() {
        let mut after = app.clone();
        after.desired_instances = req.instances.unwrap_or(app.desired_instances);
        after.memory_mb = req.memory_mb.unwrap_or(app.memory_mb);
        super::quota::check_app(ctx, &after).await?;
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
        actor,
        app,
        "app.scale",
        format!("{} changed {}", actor.username, what.join(", ")),
    );
    let rolling = ctx.store.update_app(&app.id, &update, &ev).await?;
    tracing::info!(app = %app.name, change = %what.join(", "), rolling, "app settings changed");
    if let Some(change) = log_limit_change {
        // The instances keep running: only their nodes' collectors change, so the nodes must
        // look at their assignments now, whatever convergence decides.
        ctx.bump_assignments();
        log_platform(
            ctx,
            app,
            "API",
            format!("{} changed the {change}", actor.username),
        )
        .await;
    }
    ctx.converge.notify_one();
    Ok(rolling)
}

/// Refuses memory for `process_type` that would leave its process nothing beside the current
/// revision's sidecars.
async fn check_sidecar_room(
    ctx: &AppCtx,
    app: &AppRecord,
    process_type: &str,
    memory_mb: Option<u64>,
) -> DeployResult<()> {
    let Some(memory) = memory_mb else {
        return Ok(());
    };
    let Some(rev) = super::revisions::current(ctx, app).await? else {
        return Ok(());
    };
    let taken = paas_common::api::sidecar_memory_mb(&rev.sidecars, process_type);
    if taken > 0 && taken >= memory {
        return Err(DeployError::invalid(
            ErrorCode::InvalidSidecar,
            format!(
                "the sidecars of process type {process_type} take {taken} MB: give it more than that (asked {memory} MB)"
            ),
        ));
    }
    Ok(())
}

/// Scales one non-web process type: instances, memory and health check.
async fn scale_process(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    process_type: &str,
    req: &AppUpdateRequest,
) -> DeployResult<bool> {
    instances_of(ctx, app, process_type).await?;
    if req.max_in_flight.is_some() || req.placement_labels.is_some() || req.log_rate_limit.is_some()
    {
        return Err(bad(
            "max_in_flight, placement_labels and log_rate_limit apply to the whole app: leave out `process`",
        ));
    }
    check_size(req)?;
    check_sidecar_room(ctx, app, process_type, req.memory_mb).await?;
    let health = req.health_check.as_ref().map(health_settings).transpose()?;
    let mut rec = configured(ctx, app, process_type).await?;
    let mut what = Vec::new();
    if let Some(n) = req.instances {
        what.push(format!("{process_type} instances {} -> {n}", rec.instances));
        rec.instances = n;
    }
    if let Some(m) = req.memory_mb {
        what.push(format!("{process_type} memory {m} MB"));
        rec.memory_mb = Some(m);
    }
    if let Some(h) = health {
        what.push(format!("{process_type} health check {:?}", h.check));
        rec.health = Some(h);
    }
    if what.is_empty() {
        return Err(bad(
            "nothing to change: give instances, memory_mb or health_check",
        ));
    }
    let footprint =
        super::quota::footprint_with(ctx, app, Some((process_type, req.instances, req.memory_mb)))
            .await?;
    super::quota::check(
        ctx,
        &app.space_id,
        &super::quota::Change {
            app_id: Some(&app.id),
            footprint,
            ..Default::default()
        },
    )
    .await?;
    let ev = event(
        actor,
        app,
        "app.scale",
        format!("{} changed {}", actor.username, what.join(", ")),
    );
    let rolling = ctx.store.upsert_process(&app.id, &rec, &ev).await?;
    tracing::info!(app = %app.name, process = %process_type, change = %what.join(", "), rolling, "process settings changed");
    ctx.converge.notify_one();
    Ok(rolling)
}

/// Applies a manifest's `processes` (every type but `web`, whose settings are the app's own).
pub async fn apply_manifest_processes(
    ctx: &AppCtx,
    app: &AppRecord,
    actor: &Actor,
    list: &[ProcessSettings],
) -> DeployResult<()> {
    for p in list.iter().filter(|p| p.process_type != "web") {
        if p.instances.is_some_and(|n| n > MAX_INSTANCES) {
            return Err(bad(format!(
                "processes.{}.instances must be from 0 to {MAX_INSTANCES}",
                p.process_type
            )));
        }
        let mut rec = configured(ctx, app, &p.process_type).await?;
        rec.instances = p.instances.unwrap_or(rec.instances);
        rec.memory_mb = p.memory_mb.or(rec.memory_mb);
        rec.command = p.command.clone().or(rec.command);
        if let Some(h) = &p.health {
            rec.health = Some(manifest_health(&rec.health_or_default(), h)?);
        }
        let ev = event(
            actor,
            app,
            "app.scale",
            format!(
                "manifest set process {}: {} instance(s)",
                p.process_type, rec.instances
            ),
        );
        ctx.store.upsert_process(&app.id, &rec, &ev).await?;
    }
    Ok(())
}

/// A rolling restart of every instance, `max_in_flight` (when given) at a time. Returns whether
/// any instance is being replaced.
pub async fn restart(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    max_in_flight: Option<u32>,
) -> DeployResult<bool> {
    if app.state != AppState::Started {
        return Err(DeployError::AppStopped(app.name.clone()));
    }
    if let Some(k) = max_in_flight {
        if !(1..=MAX_IN_FLIGHT).contains(&k) {
            return Err(bad(format!(
                "max_in_flight must be from 1 to {MAX_IN_FLIGHT}"
            )));
        }
        let ev = event(
            actor,
            app,
            "app.scale",
            format!("{} set max in flight {k}", actor.username),
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
        actor,
        app,
        "app.restart",
        format!("{} asked for a rolling restart", actor.username),
    );
    let n = ctx.store.retire_instances(&app.id, None, &ev).await?;
    tracing::info!(app = %app.name, instances = n, "rolling restart");
    ctx.converge.notify_one();
    Ok(n > 0)
}

/// Stops every instance (routes first) or starts them again; the app and its settings stay.
pub async fn set_state(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    state: AppState,
) -> DeployResult<()> {
    let (kind, verb) = if state == AppState::Started {
        ("app.start", "started")
    } else {
        ("app.stop", "stopped")
    };
    if state == AppState::Started && app.state != AppState::Started {
        let mut after = app.clone();
        after.state = AppState::Started;
        super::quota::check_app(ctx, &after).await?;
    }
    let ev = event(
        actor,
        app,
        kind,
        format!("{} {verb} the app", actor.username),
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
    Ok(())
}

/// Replaces one instance of one process type, new one first.
pub async fn restart_instance(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    process: &str,
    index: u32,
) -> DeployResult<bool> {
    if app.state != AppState::Started {
        return Err(DeployError::AppStopped(app.name.clone()));
    }
    let instances = instances_of(ctx, app, process).await?;
    if index >= instances {
        return Err(DeployError::InstanceNotFound {
            app: app.name.clone(),
            process: process.to_string(),
            index,
            instances,
        });
    }
    let ev = event(
        actor,
        app,
        "instance.restart",
        format!(
            "{} asked to restart {process} instance {index}",
            actor.username
        ),
    );
    let n = ctx
        .store
        .retire_instances(&app.id, Some((process, index)), &ev)
        .await?;
    ctx.converge.notify_one();
    Ok(n > 0)
}

/// The node gets no new instances; each of its instances gets a replacement elsewhere and is
/// removed once that runs; then the node is `drained`.
pub async fn drain_node(ctx: &AppCtx, actor: &Actor, name: &str) -> DeployResult<()> {
    let ev = Event {
        app_name: None,
        app_id: None,
        actor: actor.actor.clone(),
        kind: "node.drain".into(),
        message: format!("{} is draining node {name}", actor.username),
    };
    match ctx.store.set_node_state(name, "draining", &ev).await {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(DeployError::NodeNotFound(name.to_string())),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(node = %name, "draining node");
    ctx.converge.notify_one();
    Ok(())
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
