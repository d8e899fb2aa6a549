//! Autoscaling (issue 23): the leader scales each app with a policy (`paas autoscale`) on the
//! metrics the platform already collects. Every `autoscale_interval_secs` it reads, per app, the
//! 10 s intervals of `timeseries` closed in the last `autoscale_window_secs` (requests from the
//! RTR lines of every router, the controller's and standalone ones; p99 latency) and the CPU its
//! running `web` instances last reported in their nodes' heartbeats, and [`decide`]s:
//!
//! - each rule given proposes a count: requests per second / `rps_per_instance` (rounded up);
//!   the instances' summed CPU / `cpu_percent` (rounded up, as Kubernetes' HPA, holding within
//!   10 % of the target); p99 above `p99_ms` one more, below half of it one fewer. The largest
//!   proposal wins, clamped to `[min, max]`, and a scale-out never beyond what the space's quota
//!   leaves (the event says so);
//! - a scale-out waits `scale_out_cooldown_secs` after the last one; a scale-in waits
//!   `scale_in_cooldown_secs` after any scaling and removes at most half the instances at a time,
//!   so load that comes and goes does not make it flap;
//! - the change goes through the deploy layer like a person's `paas scale` (actor
//!   `autoscaler`), so the quota is checked again and a scale-in removes instances the normal
//!   way: out of the routes first, stopped once their requests in flight have ended.
//!
//! Each change is an `app.autoscale` event with its reason (the rules' values against their
//! targets, from and to), written with the cooldown's clock in one fenced transaction.

use chrono::{DateTime, Utc};
use paas_common::api::{AppState, AppUpdateRequest, InstanceState};
use std::sync::Arc;
use std::time::Duration;

use super::lease::Role;
use crate::deploy::{self, Actor, DeployError};
use crate::state::AppCtx;
use crate::store::{AppRecord, AutoscaleRecord, Event, Fence, ScaleDirection, StoreError};
use crate::timeseries::RESOLUTION_SECS;

/// The actor of the autoscaler's changes and events.
pub const ACTOR: &str = "autoscaler";
/// Defaults of a policy that names none.
pub const DEFAULT_CPU_PERCENT: u32 = 70;
pub const DEFAULT_SCALE_OUT_COOLDOWN_SECS: u32 = 60;
pub const DEFAULT_SCALE_IN_COOLDOWN_SECS: u32 = 300;
/// The CPU rule holds the count while the mean is within this share of its target.
const CPU_TOLERANCE: f64 = 0.1;

#[derive(Debug, thiserror::Error)]
pub enum AutoscaleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// What the platform saw of an app over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub window_secs: i64,
    /// Mean requests per second over the intervals closed in the window (`None`: none yet).
    pub rps: Option<f64>,
    /// The highest p99 of those intervals (`None`: no request).
    pub p99_ms: Option<f64>,
    /// The running `web` instances' CPU summed (percent of one core) and how many reported it.
    pub cpu: Option<(f64, u32)>,
}

/// What the autoscaler does with an app now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The count is right (or nothing was measured yet).
    Keep,
    /// The count should change but a cooldown holds it.
    Wait(String),
    /// The rules want more instances than the space's quota leaves: the count stays (an event
    /// once, not every pass).
    Held { at: u32, reason: String },
    Scale {
        from: u32,
        to: u32,
        direction: ScaleDirection,
        /// The event's message: from, to, and which rules said what.
        reason: String,
    },
}

/// The pure decision for policy `p`, `current` desired `web` instances, what was `seen`, the
/// most instances the space's quota allows (with the limit's name), at `now`.
pub fn decide(
    p: &AutoscaleRecord,
    current: u32,
    seen: &Observed,
    quota: Option<&(u32, String)>,
    now: DateTime<Utc>,
) -> Decision {
    let mut rules: Vec<(u32, String)> = Vec::new();
    if let (Some(target), Some(rps)) = (p.rps_per_instance.filter(|t| *t > 0), seen.rps) {
        let want = ceil_u32(rps / f64::from(target));
        rules.push((
            want,
            format!(
                "requests {rps:.1}/s over {} s vs {target}/s per instance wants {want}",
                seen.window_secs
            ),
        ));
    }
    if let (Some(target), Some((sum, n))) = (p.cpu_percent.filter(|t| *t > 0), seen.cpu) {
        if n > 0 {
            let mean = sum / f64::from(n);
            let mut want = if (mean / f64::from(target) - 1.0).abs() <= CPU_TOLERANCE {
                current
            } else {
                ceil_u32(sum / f64::from(target))
            };
            // Instances still starting report nothing: they are not idle, so no scale-in on it.
            if n < current {
                want = want.max(current);
            }
            rules.push((
                want,
                format!("cpu {mean:.0}% per instance vs {target}% wants {want}"),
            ));
        }
    }
    if let (Some(target), Some(p99)) = (p.p99_ms.filter(|t| *t > 0), seen.p99_ms) {
        let target_f = f64::from(target);
        let want = if p99 > target_f {
            current.saturating_add(1)
        } else if p99 < target_f / 2.0 {
            current.saturating_sub(1)
        } else {
            current
        };
        rules.push((
            want,
            format!(
                "p99 {p99:.0} ms over {} s vs {target} ms wants {want}",
                seen.window_secs
            ),
        ));
    }
    let Some(want) = rules.iter().map(|r| r.0).max() else {
        // Nothing measured: only the bounds apply.
        return bounds_only(p, current);
    };
    let mut notes = vec![rules
        .iter()
        .map(|r| r.1.as_str())
        .collect::<Vec<_>>()
        .join("; ")];
    let mut to = want;
    if to > p.max_instances {
        to = p.max_instances;
        notes.push(format!("capped at max {}", p.max_instances));
    } else if to < p.min_instances {
        to = p.min_instances;
        notes.push(format!("held at min {}", p.min_instances));
    }
    if let Some((allowed, why)) = quota {
        let cap = (*allowed).max(current);
        if to > current && to > cap {
            if cap == current {
                return Decision::Held {
                    at: current,
                    reason: format!(
                        "held at {current} by the space's {why}: {}",
                        notes.join(", ")
                    ),
                };
            }
            to = cap;
            notes.push(format!("capped at {cap} by the space's {why}"));
        }
    }
    if to == current {
        return Decision::Keep;
    }
    let direction = if to > current {
        ScaleDirection::Out
    } else {
        ScaleDirection::In
    };
    match direction {
        // Below the policy's minimum, no cooldown holds it.
        ScaleDirection::Out if current >= p.min_instances => {
            if let Some(left) = cooling(p.last_scale_out_at, p.scale_out_cooldown_secs, now) {
                return Decision::Wait(format!("scale-out to {to} waits {left} s of its cooldown"));
            }
        }
        // Above the policy's maximum (a lowered maximum), no cooldown or step holds it.
        ScaleDirection::In if current <= p.max_instances => {
            let last = p.last_scale_out_at.max(p.last_scale_in_at);
            if let Some(left) = cooling(last, p.scale_in_cooldown_secs, now) {
                return Decision::Wait(format!("scale-in to {to} waits {left} s of its cooldown"));
            }
            let step = (current / 2).max(1);
            if current - to > step {
                to = current - step;
                notes.push(format!("at most {step} fewer at a time"));
            }
        }
        _ => {}
    }
    let verb = match direction {
        ScaleDirection::Out => "scaled out",
        ScaleDirection::In => "scaled in",
    };
    Decision::Scale {
        from: current,
        to,
        direction,
        reason: format!("{verb} {current} -> {to}: {}", notes.join(", ")),
    }
}

/// A decision with no metric: only `[min, max]` moves the count.
fn bounds_only(p: &AutoscaleRecord, current: u32) -> Decision {
    let (to, direction, why) = if current < p.min_instances {
        (p.min_instances, ScaleDirection::Out, "below min")
    } else if current > p.max_instances {
        (p.max_instances, ScaleDirection::In, "above max")
    } else {
        return Decision::Keep;
    };
    let verb = match direction {
        ScaleDirection::Out => "scaled out",
        ScaleDirection::In => "scaled in",
    };
    Decision::Scale {
        from: current,
        to,
        direction,
        reason: format!("{verb} {current} -> {to}: {why} {to}, no metric yet"),
    }
}

/// Seconds left of a cooldown of `secs` since `last`, if any.
fn cooling(last: Option<DateTime<Utc>>, secs: u32, now: DateTime<Utc>) -> Option<i64> {
    let left = last? + chrono::Duration::seconds(i64::from(secs)) - now;
    (left > chrono::Duration::zero()).then(|| (left.num_milliseconds() + 999) / 1000)
}

fn ceil_u32(v: f64) -> u32 {
    if v.is_finite() && v > 0.0 {
        v.ceil().min(f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// What the platform saw of `app` over the window ending at `now`.
pub async fn observe(
    ctx: &AppCtx,
    app: &AppRecord,
    now: DateTime<Utc>,
) -> Result<Observed, StoreError> {
    let window = i64::try_from(ctx.settings.autoscale_window_secs)
        .unwrap_or(i64::MAX)
        .max(RESOLUTION_SECS);
    // The end of the last interval that can be closed: an open one would undercount.
    let closed = now.timestamp().div_euclid(RESOLUTION_SECS) * RESOLUTION_SECS;
    let rows: Vec<_> = ctx
        .store
        .app_metrics(&app.id, closed - window)
        .await?
        .into_iter()
        .filter(|r| r.ts + RESOLUTION_SECS <= closed)
        .collect();
    let rps = (!rows.is_empty()).then(|| {
        rows.iter().map(|r| r.requests).sum::<u64>() as f64
            / (rows.len() as f64 * RESOLUTION_SECS as f64)
    });
    let p99_ms = rows.iter().filter_map(|r| r.p99_ms).reduce(f64::max);
    let usage = super::usage::app_usage(ctx, &app.id).await?;
    let (mut sum, mut n) = (0.0, 0u32);
    for i in ctx.store.app_instances(&app.id).await? {
        let current = app.current_revision == Some(i.revision);
        if current && i.process_type == "web" && i.state == InstanceState::Running {
            if let Some(u) = usage.get(&i.id) {
                sum += u.cpu_percent;
                n += 1;
            }
        }
    }
    Ok(Observed {
        window_secs: window,
        rps,
        p99_ms,
        cpu: (n > 0).then_some((sum, n)),
    })
}

/// One look at every app with a policy. Returns how many were scaled.
pub async fn pass(ctx: &AppCtx, fence: Option<&Fence>) -> Result<usize, AutoscaleError> {
    let policies = ctx.store.autoscale_policies().await?;
    let mut scaled = 0;
    for p in policies {
        let Some(app) = ctx.store.app_by_id(&p.app_id).await? else {
            continue;
        };
        if app.state != AppState::Started || app.current_revision.is_none() {
            continue;
        }
        let now = Utc::now();
        let seen = observe(ctx, &app, now).await?;
        let quota = deploy::quota::web_instances_allowed(ctx, &app).await?;
        match decide(&p, app.desired_instances, &seen, quota.as_ref(), now) {
            Decision::Keep => {}
            Decision::Wait(why) => tracing::debug!(app = %app.name, %why, "autoscaler waits"),
            Decision::Held { at, reason } => {
                // Said once while it lasts, not once a pass.
                let prefix = format!("held at {at} ");
                if p.last_decision
                    .as_deref()
                    .is_some_and(|d| d.starts_with(&prefix))
                {
                    continue;
                }
                ctx.store
                    .record_autoscale(fence, &app.id, None, now, &decision_event(&app, &reason))
                    .await?;
                tracing::info!(app = %app.name, %reason, "autoscaler held by the quota");
                deploy::log_platform(ctx, &app, "API", format!("autoscaler {reason}")).await;
            }
            Decision::Scale {
                to,
                direction,
                reason,
                ..
            } => {
                let actor = Actor {
                    username: ACTOR.into(),
                    actor: ACTOR.into(),
                };
                let req = AppUpdateRequest {
                    instances: Some(to),
                    ..Default::default()
                };
                if let Err(e) = deploy::lifecycle::update(ctx, &actor, &app, req).await {
                    // A quota lowered between the look and the change, or the app went: the
                    // next pass looks again.
                    tracing::warn!(app = %app.name, error = %e, %reason, "autoscaling failed");
                    continue;
                }
                ctx.store
                    .record_autoscale(
                        fence,
                        &app.id,
                        Some(direction),
                        now,
                        &decision_event(&app, &reason),
                    )
                    .await?;
                tracing::info!(app = %app.name, %reason, "autoscaled");
                deploy::log_platform(ctx, &app, "API", format!("autoscaler {reason}")).await;
                scaled += 1;
            }
        }
    }
    Ok(scaled)
}

fn decision_event(app: &AppRecord, reason: &str) -> Event {
    Event {
        app_name: Some(app.name.clone()),
        app_id: Some(app.id.clone()),
        actor: ACTOR.into(),
        kind: "app.autoscale".into(),
        message: reason.to_string(),
    }
}

/// Runs [`pass`] every `autoscale_interval_secs` while this controller leads.
pub async fn run(ctx: Arc<AppCtx>) {
    let every = Duration::from_secs(ctx.settings.autoscale_interval_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = ctx.stopping.cancelled() => return,
        }
        let fence = match ctx.leadership.role() {
            Role::Follower => continue,
            Role::Sole => None,
            Role::Leader(f) => Some(f),
        };
        match pass(&ctx, fence.as_ref()).await {
            Ok(_) => {}
            Err(AutoscaleError::Store(StoreError::Fenced(_))) => ctx.leadership.lost(),
            Err(e) => tracing::warn!(error = %e, "autoscaler pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AutoscaleRecord {
        AutoscaleRecord {
            app_id: "a".into(),
            min_instances: 1,
            max_instances: 10,
            cpu_percent: None,
            rps_per_instance: Some(100),
            p99_ms: None,
            scale_out_cooldown_secs: 60,
            scale_in_cooldown_secs: 300,
            last_scale_out_at: None,
            last_scale_in_at: None,
            last_decision: None,
            updated_by: "u".into(),
            updated_at: Utc::now(),
        }
    }

    fn rps(v: f64) -> Observed {
        Observed {
            window_secs: 30,
            rps: Some(v),
            ..Default::default()
        }
    }

    fn to(d: &Decision) -> Option<u32> {
        match d {
            Decision::Scale { to, .. } => Some(*to),
            _ => None,
        }
    }

    #[test]
    fn requests_per_instance_rounds_up_and_says_why() {
        let now = Utc::now();
        let d = decide(&policy(), 1, &rps(250.0), None, now);
        let Decision::Scale {
            from,
            to,
            direction,
            reason,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!((from, to, direction), (1, 3, ScaleDirection::Out));
        assert!(
            reason.contains("scaled out 1 -> 3") && reason.contains("requests 250.0/s"),
            "{reason}"
        );
        assert_eq!(decide(&policy(), 3, &rps(250.0), None, now), Decision::Keep);
    }

    #[test]
    fn clamps_to_min_and_max() {
        let now = Utc::now();
        let mut p = policy();
        p.max_instances = 4;
        let d = decide(&p, 1, &rps(10_000.0), None, now);
        assert_eq!(to(&d), Some(4));
        assert!(format!("{d:?}").contains("capped at max 4"));
        p.min_instances = 2;
        assert_eq!(decide(&p, 2, &rps(0.0), None, now), Decision::Keep);
        // Below min or above max with no metric at all: the bounds alone move it.
        assert_eq!(to(&decide(&p, 1, &Observed::default(), None, now)), Some(2));
        assert_eq!(to(&decide(&p, 7, &Observed::default(), None, now)), Some(4));
        assert_eq!(
            decide(&p, 3, &Observed::default(), None, now),
            Decision::Keep
        );
    }

    #[test]
    fn quota_caps_scale_out_and_says_so() {
        let now = Utc::now();
        let q = (2, "instance quota 2".to_string());
        let d = decide(&policy(), 1, &rps(1000.0), Some(&q), now);
        assert_eq!(to(&d), Some(2));
        assert!(
            format!("{d:?}").contains("capped at 2 by the space's instance quota 2"),
            "{d:?}"
        );
        // At the quota already: held there, saying why; a quota below the count never scales
        // in.
        let d = decide(&policy(), 2, &rps(1000.0), Some(&q), now);
        assert!(
            matches!(&d, Decision::Held { at: 2, reason } if reason.starts_with("held at 2 by the space's instance quota 2: requests 1000.0/s")),
            "{d:?}"
        );
        let q0 = (0, "instance quota 1".to_string());
        assert!(matches!(
            decide(&policy(), 2, &rps(1000.0), Some(&q0), now),
            Decision::Held { at: 2, .. }
        ));
        // Wanting no more than the quota allows: no word of it.
        assert_eq!(
            decide(&policy(), 2, &rps(150.0), Some(&q), now),
            Decision::Keep
        );
    }

    #[test]
    fn cooldowns_hold_each_direction() {
        let now = Utc::now();
        let mut p = policy();
        p.last_scale_out_at = Some(now - chrono::Duration::seconds(30));
        assert!(matches!(
            decide(&p, 2, &rps(500.0), None, now),
            Decision::Wait(w) if w.contains("scale-out to 5 waits 30 s")
        ));
        p.last_scale_out_at = Some(now - chrono::Duration::seconds(61));
        assert_eq!(to(&decide(&p, 2, &rps(500.0), None, now)), Some(5));
        // A scale-in waits its own cooldown after a scale-out too.
        assert!(matches!(
            decide(&p, 5, &rps(0.0), None, now),
            Decision::Wait(_)
        ));
        p.last_scale_out_at = Some(now - chrono::Duration::seconds(400));
        p.last_scale_in_at = Some(now - chrono::Duration::seconds(100));
        assert!(matches!(
            decide(&p, 5, &rps(0.0), None, now),
            Decision::Wait(_)
        ));
        p.last_scale_in_at = Some(now - chrono::Duration::seconds(301));
        // At most half at a time: 5 -> 3 -> 2 -> 1.
        let d = decide(&p, 5, &rps(0.0), None, now);
        assert_eq!(to(&d), Some(3));
        assert!(format!("{d:?}").contains("at most 2 fewer at a time"));
        assert_eq!(to(&decide(&p, 2, &rps(0.0), None, now)), Some(1));
        // Below min a scale-out ignores the cooldown.
        p.min_instances = 3;
        p.last_scale_out_at = Some(now);
        assert_eq!(to(&decide(&p, 1, &rps(0.0), None, now)), Some(3));
    }

    #[test]
    fn cpu_rule_is_proportional_with_a_tolerance() {
        let now = Utc::now();
        let mut p = policy();
        p.rps_per_instance = None;
        p.cpu_percent = Some(50);
        let cpu = |sum: f64, n: u32| Observed {
            window_secs: 30,
            cpu: Some((sum, n)),
            ..Default::default()
        };
        // Two instances at 90 % each against 50 %: 180 / 50 -> 4.
        assert_eq!(to(&decide(&p, 2, &cpu(180.0, 2), None, now)), Some(4));
        // Within 10 % of the target: hold.
        assert_eq!(decide(&p, 2, &cpu(108.0, 2), None, now), Decision::Keep);
        // One of three still starting: no scale-in on its missing sample.
        assert_eq!(decide(&p, 3, &cpu(10.0, 2), None, now), Decision::Keep);
        assert_eq!(to(&decide(&p, 4, &cpu(40.0, 4), None, now)), Some(2));
    }

    #[test]
    fn p99_rule_steps_and_the_largest_rule_wins() {
        let now = Utc::now();
        let mut p = policy();
        p.p99_ms = Some(300);
        let seen = |rps: f64, p99: f64| Observed {
            window_secs: 30,
            rps: Some(rps),
            p99_ms: Some(p99),
            cpu: None,
        };
        // Requests want 1, p99 above target wants current + 1.
        let d = decide(&p, 2, &seen(50.0, 450.0), None, now);
        assert_eq!(to(&d), Some(3));
        assert!(format!("{d:?}").contains("p99 450 ms over 30 s vs 300 ms wants 3"));
        // Between half and the target it holds the count even though requests want fewer.
        assert_eq!(decide(&p, 2, &seen(50.0, 200.0), None, now), Decision::Keep);
        // Well below it, it lets the count go down.
        p.last_scale_out_at = None;
        assert_eq!(to(&decide(&p, 2, &seen(50.0, 100.0), None, now)), Some(1));
        // Requests want more than p99: requests win.
        assert_eq!(to(&decide(&p, 2, &seen(550.0, 450.0), None, now)), Some(6));
    }
}
