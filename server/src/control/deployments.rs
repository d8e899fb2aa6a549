//! Canary and blue-green deployments (issue 23).
//!
//! A push with `strategy` canary or bluegreen makes its revision current as any push does, and
//! records a deployment (`deployments` table) naming the old revision. While the deployment
//! runs (active or paused), convergence keeps the old revision's web instances beside the new
//! ones (`convergence::plan_with`'s `keep_old`: the full set of both, so every step's weight
//! is served without starting anything) and the route table carries the app's split
//! (`RouterTable.splits`): the new revision's share of requests, the current step's weight (0
//! until every new instance is routed). The router honours it per request ([`crate::router`]).
//!
//! The leader's convergence pass calls [`tick`]: it compares the two revisions on the same
//! live traffic, read from the RTR lines as the log hub publishes them ([`Traffic`], which also
//! sees standalone routers' lines, arriving through `POST /v1/router/logs`), and [`decide`]
//! (pure, unit-tested) says what to do: start the first step once the new set is routed,
//! advance after the step wait (and the minimum requests), pause for `deployment continue`,
//! promote at 100 %, or roll back when the new revision is worse beyond a threshold. A rollback
//! (or a cancel) sets the app's current revision back to the old one in the same write, so
//! convergence retires the new instances through the normal path; a promotion ends the split,
//! and the old instances are then stale rows the normal path retires.

use chrono::{DateTime, Utc};
use paas_common::api::{InstanceState, LogLine};
use paas_common::deployment::{DeploymentInfo, DeploymentState, RevisionTraffic, StrategyKind};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use crate::state::AppCtx;
use crate::store::{
    AppRecord, DeploymentChange, DeploymentRecord, Event, Fence, InstanceRecord, StoreResult,
};

/// Latency samples kept per revision and second (the p99 of a busy second is estimated from
/// these, evenly thinned).
const SAMPLES_PER_SECOND: usize = 200;
/// How far back the traffic is kept (a step's window, the baseline since the deployment began).
const KEEP_SECS: i64 = 3_600;
/// A p99 increase smaller than this (ms) is noise, whatever the ratio.
const P99_FLOOR_MS: f64 = 5.0;
/// Requests of the new revision in a step before its p99 is compared (below 100 it is the
/// slowest request, and a first request to a fresh process is often that).
const P99_MIN_REQUESTS: u64 = 100;

#[derive(Default)]
struct Second {
    at: i64,
    requests: u64,
    errors: u64,
    latencies: Vec<f32>,
}

/// Per-revision traffic of the apps in a running deployment, per second, from RTR lines.
#[derive(Default)]
pub struct Traffic {
    watched: std::sync::RwLock<HashSet<String>>,
    seconds: Mutex<HashMap<(String, i64), VecDeque<Second>>>,
}

impl Traffic {
    /// The apps whose lines are counted (those in a running deployment); others cost one read
    /// lock per batch.
    pub fn watch(&self, apps: HashSet<String>) {
        if let Ok(mut w) = self.watched.write() {
            *w = apps;
        }
        if let (Ok(w), Ok(mut s)) = (self.watched.read(), self.seconds.lock()) {
            s.retain(|(app, _), _| w.contains(app));
        }
    }

    /// Counts the RTR lines of watched apps among `lines` (app id, line).
    pub fn observe(&self, lines: &[(String, LogLine)]) {
        let Ok(watched) = self.watched.read() else {
            return;
        };
        if watched.is_empty() {
            return;
        }
        let Ok(mut seconds) = self.seconds.lock() else {
            return;
        };
        for (app, l) in lines {
            if l.source != "RTR" || !watched.contains(app) {
                continue;
            }
            let (Some((status, ms)), Some(rev)) = (
                crate::timeseries::parse_rtr(&l.message),
                rtr_revision(&l.message),
            ) else {
                continue;
            };
            let at = l.timestamp.timestamp();
            let q = seconds.entry((app.clone(), rev)).or_default();
            if q.back().is_none_or(|s| s.at < at) {
                q.push_back(Second {
                    at,
                    ..Default::default()
                });
                while q.front().is_some_and(|s| s.at < at - KEEP_SECS) {
                    q.pop_front();
                }
            }
            // Lines arrive nearly in order; a late one counts in the newest second at or
            // before its time.
            let Some(s) = q.iter_mut().rev().find(|s| s.at <= at) else {
                continue;
            };
            s.requests += 1;
            if status >= 500 {
                s.errors += 1;
            }
            if s.latencies.len() < SAMPLES_PER_SECOND {
                s.latencies.push(ms as f32);
            } else {
                // Reservoir-like thinning without a random source: replace by request count.
                let i = (s.requests as usize) % SAMPLES_PER_SECOND;
                s.latencies[i] = ms as f32;
            }
        }
    }

    /// One revision's traffic since `since`.
    pub fn window(&self, app: &str, revision: i64, since: DateTime<Utc>) -> RevisionTraffic {
        let mut t = RevisionTraffic {
            revision,
            ..Default::default()
        };
        let Ok(seconds) = self.seconds.lock() else {
            return t;
        };
        let from = since.timestamp();
        let mut lat: Vec<f64> = Vec::new();
        for s in seconds
            .get(&(app.to_string(), revision))
            .into_iter()
            .flatten()
            .filter(|s| s.at >= from)
        {
            t.requests += s.requests;
            t.errors += s.errors;
            lat.extend(s.latencies.iter().map(|l| f64::from(*l)));
        }
        t.error_rate = if t.requests == 0 {
            0.0
        } else {
            t.errors as f64 * 100.0 / t.requests as f64
        };
        lat.sort_by(f64::total_cmp);
        t.p99_ms = quantile(&lat, 0.99);
        t
    }
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).ceil() as usize;
    sorted.get(i.min(sorted.len() - 1)).copied()
}

/// The revision an RTR line names (`rev=N`, written when the request reached an instance or was
/// meant for one).
pub fn rtr_revision(message: &str) -> Option<i64> {
    let at = message.rfind(" rev=")?;
    message[at + 5..].split(' ').next()?.parse().ok()
}

/// What [`decide`] sees of a deployment's instances and traffic.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// New-revision web instances that are routed (running and ready).
    pub routed_new: u32,
    /// Web instances the app wants.
    pub desired: u32,
    /// A new-revision instance that crashed (its liveness check failed or it exited).
    pub health_failure: Option<String>,
    /// The old revision since the deployment began (the baseline).
    pub old: RevisionTraffic,
    /// The new revision in the current step.
    pub new: RevisionTraffic,
}

/// What to do with a running deployment now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Wait,
    /// Every new instance is routed: the first step begins.
    Start,
    /// The next (canary) step, by index.
    Advance(u32),
    /// Wait for `deployment continue` (a step wait of `pause`).
    Pause(String),
    Promote,
    RollBack(String),
}

/// The new revision's share of requests, in percent, for a deployment in this state.
pub fn weight(d: &DeploymentRecord) -> u32 {
    if !d.state.running() || d.step_started_at.is_none() {
        return 0;
    }
    match d.strategy.kind {
        StrategyKind::Canary => d
            .strategy
            .steps
            .get(d.step as usize)
            .copied()
            .unwrap_or(100),
        _ => 100,
    }
}

/// Decides a running deployment's next move. Pure.
pub fn decide(d: &DeploymentRecord, o: &Observed, now: DateTime<Utc>) -> Decision {
    let s = &d.strategy;
    if let Some(why) = &o.health_failure {
        return Decision::RollBack(format!("health: {why}"));
    }
    let Some(started) = d.step_started_at else {
        return if o.routed_new >= o.desired.max(1) {
            Decision::Start
        } else {
            Decision::Wait
        };
    };
    let elapsed = (now - started).num_milliseconds().max(0) as u64;
    if s.kind == StrategyKind::Bluegreen {
        return if d.state == DeploymentState::Active && elapsed >= s.grace_secs * 1000 {
            Decision::Promote
        } else {
            Decision::Wait
        };
    }
    // Canary: judged once the step has seen enough of the new revision.
    let enough = o.new.requests >= s.min_requests.max(1);
    if enough {
        if o.new.error_rate > o.old.error_rate + s.max_error_rate {
            return Decision::RollBack(format!(
                "error rate {:.1}% of revision {} ({} of {} requests) exceeds revision {}'s {:.1}% by more than max-error-rate {}%",
                o.new.error_rate,
                d.new_revision,
                o.new.errors,
                o.new.requests,
                d.old_revision,
                o.old.error_rate,
                s.max_error_rate
            ));
        }
        // A p99 of fewer than 100 requests is their maximum: one cold request would decide.
        let p99_meaningful = o.new.requests >= P99_MIN_REQUESTS;
        if let (true, Some(new), Some(old)) = (p99_meaningful, o.new.p99_ms, o.old.p99_ms) {
            if new > old * (1.0 + s.max_p99_increase / 100.0) && new - old > P99_FLOOR_MS {
                return Decision::RollBack(format!(
                    "p99 latency {new:.1} ms of revision {} exceeds revision {}'s {old:.1} ms by more than max-p99-increase {}%",
                    d.new_revision, d.old_revision, s.max_p99_increase
                ));
            }
        }
    }
    if d.state == DeploymentState::Paused {
        return Decision::Wait;
    }
    let Some(wait) = s.step_wait_secs else {
        return Decision::Pause(format!(
            "step {} ({}%): waiting for `deployment continue`",
            d.step + 1,
            weight(d)
        ));
    };
    if elapsed < wait * 1000 || !enough {
        return Decision::Wait;
    }
    next_step(d)
}

/// The move after the current step: the next one, or promotion when it would be 100 %.
pub fn next_step(d: &DeploymentRecord) -> Decision {
    let next = d.step + 1;
    match d.strategy.steps.get(next as usize) {
        Some(w) if *w < 100 && d.strategy.kind == StrategyKind::Canary => Decision::Advance(next),
        _ => Decision::Promote,
    }
}

/// What convergence keeps besides the current revision: app id -> the old revision whose web
/// instances run beside the new ones while the deployment runs.
pub fn keep_old(running: &[DeploymentRecord], apps: &[AppRecord]) -> HashMap<String, i64> {
    running
        .iter()
        .filter(|d| {
            apps.iter()
                .any(|a| a.id == d.app_id && a.current_revision == Some(d.new_revision))
        })
        .map(|d| (d.app_id.clone(), d.old_revision))
        .collect()
}

/// One look at every running deployment (leader only): decides and writes each one's move.
/// Returns whether any was running: its traffic split may have moved, so the route table is
/// rebuilt this pass.
pub async fn tick(ctx: &AppCtx, fence: Option<&Fence>) -> StoreResult<bool> {
    let running = ctx.store.running_deployments().await?;
    ctx.logs
        .canary
        .watch(running.iter().map(|d| d.app_id.clone()).collect());
    if running.is_empty() {
        return Ok(false);
    }
    let apps = ctx.store.list_apps().await?;
    let instances = ctx.store.list_instances().await?;
    let now = Utc::now();
    for d in running {
        let Some(app) = apps.iter().find(|a| a.id == d.app_id) else {
            continue;
        };
        if app.current_revision != Some(d.new_revision) {
            // A newer push, env change or rollback made another revision current: it replaces
            // both sets through the normal path.
            let mut ended = d.clone();
            ended.state = DeploymentState::Cancelled;
            ended.reason = Some(format!(
                "superseded: revision {} is current",
                app.current_revision.unwrap_or(0)
            ));
            let ev = event(
                app,
                "deployment.cancel",
                ended.reason.clone().unwrap_or_default(),
            );
            ctx.store
                .update_deployment(
                    fence,
                    &ended,
                    DeploymentChange {
                        current_revision: None,
                        event: Some(&ev),
                    },
                )
                .await?;
            continue;
        }
        let o = observe(ctx, &d, app, &instances);
        let decision = decide(&d, &o, now);
        apply(ctx, fence, d, app, decision, &o).await?;
    }
    Ok(true)
}

fn observe(
    ctx: &AppCtx,
    d: &DeploymentRecord,
    app: &AppRecord,
    instances: &[InstanceRecord],
) -> Observed {
    let new: Vec<&InstanceRecord> = instances
        .iter()
        .filter(|i| i.app_id == d.app_id && i.revision == d.new_revision && i.process_type == "web")
        .collect();
    let health_failure = new
        .iter()
        .find(|i| i.state == InstanceState::Crashed || i.restarts > 0)
        .map(|i| {
            format!(
                "instance {} of revision {} crashed{}",
                i.index,
                d.new_revision,
                i.last_exit
                    .as_deref()
                    .map_or_else(String::new, |e| format!(" ({e})"))
            )
        });
    Observed {
        routed_new: new
            .iter()
            .filter(|i| i.state == InstanceState::Running && i.ready)
            .count() as u32,
        desired: app.desired_instances,
        health_failure,
        old: ctx
            .logs
            .canary
            .window(&d.app_id, d.old_revision, d.created_at),
        new: ctx.logs.canary.window(
            &d.app_id,
            d.new_revision,
            d.step_started_at.unwrap_or(now_far()),
        ),
    }
}

/// A time after every line: the new revision's window before its first step is empty.
fn now_far() -> DateTime<Utc> {
    Utc::now() + chrono::Duration::days(1)
}

fn event(app: &AppRecord, kind: &str, message: String) -> Event {
    Event {
        app_name: Some(app.name.clone()),
        app_id: Some(app.id.clone()),
        actor: "platform".into(),
        kind: kind.into(),
        message,
    }
}

async fn apply(
    ctx: &AppCtx,
    fence: Option<&Fence>,
    d: DeploymentRecord,
    app: &AppRecord,
    decision: Decision,
    o: &Observed,
) -> StoreResult<()> {
    let mut next = d.clone();
    let now = Utc::now();
    let kind = d.strategy.kind.as_str();
    let (ev, current, line) = match decision {
        Decision::Wait => return Ok(()),
        Decision::Start => {
            next.step = 0;
            next.step_started_at = Some(now);
            let msg = format!(
                "{kind}: all {} instance(s) of revision {} are ready; revision {} now gets {}% of requests",
                o.routed_new,
                d.new_revision,
                d.new_revision,
                weight(&next)
            );
            (event(app, "deployment.step", msg.clone()), None, msg)
        }
        Decision::Advance(step) => {
            next.step = step;
            next.step_started_at = Some(now);
            let msg = format!(
                "{kind}: step {} passed ({} requests, {:.1}% errors, p99 {}); revision {} now gets {}% of requests",
                d.step + 1,
                o.new.requests,
                o.new.error_rate,
                o.new.p99_ms.map_or("-".into(), |p| format!("{p:.1} ms")),
                d.new_revision,
                weight(&next)
            );
            (event(app, "deployment.step", msg.clone()), None, msg)
        }
        Decision::Pause(why) => {
            next.state = DeploymentState::Paused;
            next.reason = Some(why.clone());
            let msg = format!("{kind}: paused at {why}");
            (event(app, "deployment.pause", msg.clone()), None, msg)
        }
        Decision::Promote => {
            next.state = DeploymentState::Promoted;
            next.reason = Some(format!("revision {} serves all requests", d.new_revision));
            let msg = format!(
                "{kind}: promoted revision {}; the instances of revision {} are retired",
                d.new_revision, d.old_revision
            );
            (event(app, "deployment.promote", msg.clone()), None, msg)
        }
        Decision::RollBack(why) => {
            next.state = DeploymentState::RolledBack;
            next.reason = Some(why.clone());
            let msg = format!("{kind}: rolled back to revision {}: {why}", d.old_revision);
            tracing::warn!(app = %app.name, deployment = %d.id, reason = %why, "deployment rolled back");
            (
                event(app, "deployment.rollback", msg.clone()),
                Some(d.old_revision),
                msg,
            )
        }
    };
    let written = ctx
        .store
        .update_deployment(
            fence,
            &next,
            DeploymentChange {
                current_revision: current,
                event: Some(&ev),
            },
        )
        .await?;
    if written {
        tracing::info!(app = %app.name, deployment = %d.id, "{line}");
        crate::deploy::log_platform(ctx, app, "API", line).await;
        ctx.converge.notify_one();
    }
    Ok(())
}

/// The deployment as the API shows it, with the live comparison while it runs.
pub fn info(ctx: &AppCtx, app: &AppRecord, d: &DeploymentRecord) -> DeploymentInfo {
    let live = d.state.running();
    DeploymentInfo {
        id: d.id.clone(),
        app: app.name.clone(),
        strategy: d.strategy.clone(),
        state: d.state,
        old_revision: d.old_revision,
        new_revision: d.new_revision,
        step: d.step,
        weight: weight(d),
        step_started_at: d.step_started_at,
        reason: d.reason.clone(),
        created_at: d.created_at,
        updated_at: d.updated_at,
        old: live.then(|| {
            ctx.logs
                .canary
                .window(&d.app_id, d.old_revision, d.created_at)
        }),
        new: live.then(|| {
            ctx.logs.canary.window(
                &d.app_id,
                d.new_revision,
                d.step_started_at.unwrap_or(now_far()),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paas_common::deployment::DeployStrategy;

    fn dep(kind: StrategyKind) -> DeploymentRecord {
        DeploymentRecord {
            id: "d".into(),
            app_id: "a".into(),
            strategy: DeployStrategy {
                kind,
                steps: vec![10, 50, 100],
                step_wait_secs: Some(10),
                min_requests: 20,
                grace_secs: 30,
                ..Default::default()
            },
            old_revision: 1,
            new_revision: 2,
            step: 0,
            step_started_at: None,
            state: DeploymentState::Active,
            reason: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn traffic(rev: i64, requests: u64, errors: u64, p99: f64) -> RevisionTraffic {
        RevisionTraffic {
            revision: rev,
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 * 100.0 / requests as f64
            },
            p99_ms: (requests > 0).then_some(p99),
        }
    }

    fn seen(new: RevisionTraffic) -> Observed {
        Observed {
            routed_new: 2,
            desired: 2,
            health_failure: None,
            old: traffic(1, 1000, 2, 20.0),
            new,
        }
    }

    #[test]
    fn the_first_step_waits_for_every_new_instance() {
        let d = dep(StrategyKind::Canary);
        let mut o = seen(traffic(2, 0, 0, 0.0));
        o.routed_new = 1;
        assert_eq!(decide(&d, &o, Utc::now()), Decision::Wait);
        assert_eq!(weight(&d), 0);
        o.routed_new = 2;
        assert_eq!(decide(&d, &o, Utc::now()), Decision::Start);
    }

    #[test]
    fn a_worse_error_rate_rolls_back_naming_the_threshold() {
        let mut d = dep(StrategyKind::Canary);
        let now = Utc::now();
        d.step_started_at = Some(now);
        // Below the minimum requests nothing is judged.
        assert_eq!(
            decide(&d, &seen(traffic(2, 19, 19, 20.0)), now),
            Decision::Wait
        );
        match decide(&d, &seen(traffic(2, 40, 8, 20.0)), now) {
            Decision::RollBack(why) => {
                assert!(why.contains("error rate 20.0%"), "{why}");
                assert!(why.contains("max-error-rate 5%"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // Within the allowance (0.2% + 5 points) it is not.
        assert_eq!(
            decide(&d, &seen(traffic(2, 40, 2, 20.0)), now),
            Decision::Wait
        );
    }

    #[test]
    fn a_slower_p99_rolls_back_but_noise_does_not() {
        let mut d = dep(StrategyKind::Canary);
        let now = Utc::now();
        d.step_started_at = Some(now);
        match decide(&d, &seen(traffic(2, 100, 0, 45.0)), now) {
            Decision::RollBack(why) => assert!(why.contains("max-p99-increase 50%"), "{why}"),
            other => panic!("{other:?}"),
        }
        // Fewer than 100 requests: the p99 would be the slowest one, not judged.
        assert_eq!(
            decide(&d, &seen(traffic(2, 99, 0, 45.0)), now),
            Decision::Wait
        );
        // 50% above a 2 ms baseline is under the noise floor.
        let mut o = seen(traffic(2, 100, 0, 4.0));
        o.old.p99_ms = Some(2.0);
        assert_eq!(decide(&d, &o, now), Decision::Wait);
    }

    #[test]
    fn steps_advance_after_the_wait_and_end_promoted() {
        let mut d = dep(StrategyKind::Canary);
        let t0 = Utc::now();
        d.step_started_at = Some(t0);
        let ok = seen(traffic(2, 50, 0, 20.0));
        assert_eq!(
            decide(&d, &ok, t0 + chrono::Duration::seconds(9)),
            Decision::Wait
        );
        assert_eq!(
            decide(&d, &ok, t0 + chrono::Duration::seconds(10)),
            Decision::Advance(1)
        );
        // Without enough requests the step waits even after its time.
        assert_eq!(
            decide(
                &d,
                &seen(traffic(2, 3, 0, 20.0)),
                t0 + chrono::Duration::seconds(60)
            ),
            Decision::Wait
        );
        d.step = 1;
        assert_eq!(weight(&d), 50);
        assert_eq!(
            decide(&d, &ok, t0 + chrono::Duration::seconds(10)),
            Decision::Promote
        );
    }

    #[test]
    fn a_pause_step_waits_for_continue_but_still_rolls_back() {
        let mut d = dep(StrategyKind::Canary);
        d.strategy.step_wait_secs = None;
        let now = Utc::now();
        d.step_started_at = Some(now);
        assert!(matches!(
            decide(&d, &seen(traffic(2, 50, 0, 20.0)), now),
            Decision::Pause(_)
        ));
        d.state = DeploymentState::Paused;
        assert_eq!(
            decide(&d, &seen(traffic(2, 50, 0, 20.0)), now),
            Decision::Wait
        );
        assert!(matches!(
            decide(&d, &seen(traffic(2, 50, 25, 20.0)), now),
            Decision::RollBack(_)
        ));
        assert_eq!(next_step(&d), Decision::Advance(1));
    }

    #[test]
    fn a_crashed_new_instance_rolls_back() {
        let d = dep(StrategyKind::Bluegreen);
        let mut o = seen(traffic(2, 0, 0, 0.0));
        o.health_failure = Some("instance 0 of revision 2 crashed".into());
        assert!(
            matches!(decide(&d, &o, Utc::now()), Decision::RollBack(w) if w.starts_with("health"))
        );
    }

    #[test]
    fn bluegreen_switches_at_once_and_promotes_after_the_grace() {
        let mut d = dep(StrategyKind::Bluegreen);
        let t0 = Utc::now();
        d.step_started_at = Some(t0);
        assert_eq!(weight(&d), 100);
        let o = seen(traffic(2, 0, 0, 0.0));
        assert_eq!(
            decide(&d, &o, t0 + chrono::Duration::seconds(29)),
            Decision::Wait
        );
        assert_eq!(
            decide(&d, &o, t0 + chrono::Duration::seconds(30)),
            Decision::Promote
        );
    }

    #[test]
    fn traffic_is_counted_per_revision_from_rtr_lines() {
        let t = Traffic::default();
        t.watch(["a".to_string()].into());
        let line = |status: u16, ms: &str, rev: i64| {
            (
                "a".to_string(),
                LogLine {
                    id: 0,
                    timestamp: Utc::now(),
                    source: "RTR".into(),
                    stream: "out".into(),
                    message: format!(
                        "\"GET /\" {status} bytes=5 duration_ms={ms} instance=0@h:1 request_id=r peer=p rev={rev}"
                    ),
                },
            )
        };
        let mut lines: Vec<_> = (0..99).map(|_| line(200, "1.000", 2)).collect();
        lines.push(line(503, "90.000", 2));
        lines.push(line(200, "1.000", 1));
        lines.push(("b".into(), line(500, "1.0", 2).1));
        t.observe(&lines);
        let since = Utc::now() - chrono::Duration::seconds(5);
        let w = t.window("a", 2, since);
        assert_eq!((w.requests, w.errors), (100, 1));
        assert_eq!(w.error_rate, 1.0);
        assert_eq!(w.p99_ms, Some(90.0));
        assert_eq!(t.window("a", 1, since).requests, 1);
        assert_eq!(
            t.window("b", 2, since).requests,
            0,
            "unwatched apps are not counted"
        );
        assert_eq!(rtr_revision("x rev=12"), Some(12));
        assert_eq!(rtr_revision("x peer=p"), None);
    }
}
