//! Autoscaling policies (issue 23): set, show and remove an app's. The leader's autoscaler
//! (`control::autoscale`) acts on them.

use paas_common::api::{AutoscaleRequest, AutoscaleStatus};
use paas_common::ErrorCode;

use super::lifecycle::MAX_INSTANCES;
use super::{event, Actor, DeployError, DeployResult};
use crate::control::autoscale as control;
use crate::state::AppCtx;
use crate::store::{AppRecord, AutoscaleRecord};

/// Longest cooldown (a day).
const MAX_COOLDOWN_SECS: u32 = 24 * 3600;

/// Checks and stores `req` as the app's policy (replacing one it had, keeping its cooldowns'
/// clocks), and wakes nothing: the autoscaler's next pass reads it.
pub async fn set(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    req: &AutoscaleRequest,
) -> DeployResult<AutoscaleStatus> {
    let bad = |m: String| Err(DeployError::invalid(ErrorCode::BadRequest, m));
    if req.min_instances < 1 || req.min_instances > req.max_instances {
        return bad(format!(
            "min ({}) must be at least 1 and at most max ({})",
            req.min_instances, req.max_instances
        ));
    }
    if req.max_instances > MAX_INSTANCES {
        return bad(format!("max must be at most {MAX_INSTANCES}"));
    }
    for (name, v, top) in [
        ("cpu", req.cpu_percent, 10_000),
        ("rps-per-instance", req.rps_per_instance, 1_000_000),
        ("p99", req.p99_ms, 3_600_000),
    ] {
        if v.is_some_and(|v| v == 0 || v > top) {
            return bad(format!("{name} must be from 1 to {top}"));
        }
    }
    let out = req
        .scale_out_cooldown_secs
        .unwrap_or(control::DEFAULT_SCALE_OUT_COOLDOWN_SECS);
    let inn = req
        .scale_in_cooldown_secs
        .unwrap_or(control::DEFAULT_SCALE_IN_COOLDOWN_SECS);
    if out > MAX_COOLDOWN_SECS || inn > MAX_COOLDOWN_SECS {
        return bad(format!("a cooldown is at most {MAX_COOLDOWN_SECS} s"));
    }
    let no_rule =
        req.cpu_percent.is_none() && req.rps_per_instance.is_none() && req.p99_ms.is_none();
    let rec = AutoscaleRecord {
        app_id: app.id.clone(),
        min_instances: req.min_instances,
        max_instances: req.max_instances,
        cpu_percent: if no_rule {
            Some(control::DEFAULT_CPU_PERCENT)
        } else {
            req.cpu_percent
        },
        rps_per_instance: req.rps_per_instance,
        p99_ms: req.p99_ms,
        scale_out_cooldown_secs: out,
        scale_in_cooldown_secs: inn,
        last_scale_out_at: None,
        last_scale_in_at: None,
        last_decision: None,
        updated_by: actor.username.clone(),
        updated_at: chrono::Utc::now(),
    };
    let ev = event(
        actor,
        app,
        "app.autoscale.set",
        format!("{} set autoscaling {}", actor.username, describe(&rec)),
    );
    ctx.store.set_autoscale(&rec, &ev).await?;
    get(ctx, app).await
}

/// The app's policy with what the autoscaler last did (`not_found` when it has none).
pub async fn get(ctx: &AppCtx, app: &AppRecord) -> DeployResult<AutoscaleStatus> {
    let Some(r) = ctx.store.autoscale(&app.id).await? else {
        return Err(DeployError::invalid(
            ErrorCode::NotFound,
            format!("app {:?} has no autoscaling policy", app.name),
        ));
    };
    Ok(AutoscaleStatus {
        min_instances: r.min_instances,
        max_instances: r.max_instances,
        cpu_percent: r.cpu_percent,
        rps_per_instance: r.rps_per_instance,
        p99_ms: r.p99_ms,
        scale_out_cooldown_secs: r.scale_out_cooldown_secs,
        scale_in_cooldown_secs: r.scale_in_cooldown_secs,
        instances: app.desired_instances,
        last_scale_out_at: r.last_scale_out_at,
        last_scale_in_at: r.last_scale_in_at,
        last_decision: r.last_decision,
        updated_by: r.updated_by,
        updated_at: r.updated_at,
    })
}

/// Turns autoscaling off; the app keeps its current instance count.
pub async fn remove(ctx: &AppCtx, actor: &Actor, app: &AppRecord) -> DeployResult<()> {
    let ev = event(
        actor,
        app,
        "app.autoscale.off",
        format!(
            "{} turned autoscaling off at {} instances",
            actor.username, app.desired_instances
        ),
    );
    if !ctx.store.remove_autoscale(&app.id, &ev).await? {
        return Err(DeployError::invalid(
            ErrorCode::NotFound,
            format!("app {:?} has no autoscaling policy", app.name),
        ));
    }
    Ok(())
}

/// A policy as people read it: `min 1, max 3, rps-per-instance 5, cooldowns out 60 s in 300 s`.
pub fn describe(r: &AutoscaleRecord) -> String {
    let mut parts = vec![
        format!("min {}", r.min_instances),
        format!("max {}", r.max_instances),
    ];
    if let Some(c) = r.cpu_percent {
        parts.push(format!("cpu {c}%"));
    }
    if let Some(v) = r.rps_per_instance {
        parts.push(format!("rps-per-instance {v}"));
    }
    if let Some(v) = r.p99_ms {
        parts.push(format!("p99 {v} ms"));
    }
    parts.push(format!(
        "cooldowns out {} s in {} s",
        r.scale_out_cooldown_secs, r.scale_in_cooldown_secs
    ));
    parts.join(", ")
}
