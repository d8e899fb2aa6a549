//! Space quotas (issue 26, Cloud Foundry's space quotas): limits on a space's memory and
//! instances (of started apps, every process type), apps and routes. Each change that can grow
//! what a space uses (push, scale, start, route map) asks [`check`] first with what the app
//! would use after it; a change that only shrinks usage always passes, so a space over a quota
//! lowered later can still scale down.
//!
//! The check reads and the change writes in two steps: two changes at the same instant may
//! both pass. Quotas bound what people ask for, not a hard reservation, as in Cloud Foundry.

use paas_common::api::{AppState, SpaceQuota, SpaceUsage};

use super::{DeployError, DeployResult};
use crate::control::desired::DesiredState;
use crate::state::AppCtx;
use crate::store::{AppRecord, StoreResult};

/// What one app counts against its space's memory and instance limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    pub memory_mb: u64,
    pub instances: u64,
}

/// What `app` (as given, which may be a proposed version of the stored one) uses: every
/// process type of its current revision when started, nothing when stopped.
pub async fn footprint(ctx: &AppCtx, app: &AppRecord) -> StoreResult<Footprint> {
    footprint_with(ctx, app, None).await
}

/// [`footprint`], with process type `.0` set to `.1` instances and `.2` MB (when given).
pub async fn footprint_with(
    ctx: &AppCtx,
    app: &AppRecord,
    process: Option<(&str, Option<u32>, Option<u64>)>,
) -> StoreResult<Footprint> {
    if app.state != AppState::Started {
        return Ok(Footprint::default());
    }
    let mut sizes: Vec<(String, u32, u64)> =
        match DesiredState::of_app(ctx.store.as_ref(), app).await? {
            Some(d) => d
                .processes
                .into_iter()
                .map(|p| (p.process_type, p.instances, p.memory_mb))
                .collect(),
            // Not staged yet: its web instances are what it will start.
            None => vec![("web".into(), app.desired_instances, app.memory_mb)],
        };
    if let Some((ty, n, m)) = process {
        if let Some(s) = sizes.iter_mut().find(|s| s.0 == ty) {
            s.1 = n.unwrap_or(s.1);
            s.2 = m.unwrap_or(s.2);
        }
    }
    Ok(sizes
        .iter()
        .fold(Footprint::default(), |f, (_, n, m)| Footprint {
            memory_mb: f.memory_mb + u64::from(*n) * m,
            instances: f.instances + u64::from(*n),
        }))
}

/// What the space uses now, and the footprint of each of its apps by id.
pub async fn usage(
    ctx: &AppCtx,
    space_id: &str,
) -> StoreResult<(SpaceUsage, Vec<(String, Footprint)>)> {
    let apps: Vec<AppRecord> = ctx
        .store
        .list_apps()
        .await?
        .into_iter()
        .filter(|a| a.space_id == space_id)
        .collect();
    let mapped = ctx
        .store
        .list_routes()
        .await?
        .into_iter()
        .filter(|r| apps.iter().any(|a| a.id == r.app_id))
        .count() as u64;
    let mut u = SpaceUsage {
        apps: apps.len() as u64,
        routes: mapped + apps.iter().filter(|a| a.host.is_some()).count() as u64,
        ..Default::default()
    };
    let mut each = Vec::with_capacity(apps.len());
    for a in &apps {
        let f = footprint(ctx, a).await?;
        u.memory_mb += f.memory_mb;
        u.instances += f.instances;
        each.push((a.id.clone(), f));
    }
    Ok((u, each))
}

/// A change to check: the app it replaces the footprint of (none for a new app), what that app
/// would use after it, and how many apps and routes it adds.
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    pub app_id: Option<&'a str>,
    pub footprint: Footprint,
    pub new_apps: u64,
    pub new_routes: u64,
}

/// Refuses an existing app's change to `after` (its instances, memory or state) when it would
/// take the app's space past its quota.
pub async fn check_app(ctx: &AppCtx, after: &AppRecord) -> DeployResult<()> {
    let footprint = footprint(ctx, after).await?;
    check(
        ctx,
        &after.space_id,
        &Change {
            app_id: Some(&after.id),
            footprint,
            ..Default::default()
        },
    )
    .await
}

/// Refuses `change` with [`DeployError::QuotaExceeded`] when it would take the space past a
/// limit of its quota.
pub async fn check(ctx: &AppCtx, space_id: &str, change: &Change<'_>) -> DeployResult<()> {
    let quota = ctx.store.space_quota(space_id).await?;
    if quota == SpaceQuota::default() {
        return Ok(());
    }
    let (used, each) = usage(ctx, space_id).await?;
    let before = change
        .app_id
        .and_then(|id| each.iter().find(|(a, _)| a == id))
        .map(|(_, f)| *f)
        .unwrap_or_default();
    let asks = [
        (
            "memory",
            " MB",
            quota.memory_mb,
            used.memory_mb,
            change.footprint.memory_mb.saturating_sub(before.memory_mb),
        ),
        (
            "instance",
            "",
            quota.instances,
            used.instances,
            change.footprint.instances.saturating_sub(before.instances),
        ),
        ("app", "", quota.apps, used.apps, change.new_apps),
        ("route", "", quota.routes, used.routes, change.new_routes),
    ];
    for (what, unit, limit, in_use, asked) in asks {
        if let Some(limit) = limit.filter(|l| asked > 0 && in_use + asked > *l) {
            let space = ctx
                .store
                .list_spaces()
                .await?
                .into_iter()
                .find(|s| s.id == space_id)
                .map_or_else(|| space_id.to_string(), |s| format!("{}/{}", s.org, s.name));
            return Err(DeployError::QuotaExceeded {
                space,
                what,
                unit,
                limit,
                in_use,
                asked,
            });
        }
    }
    Ok(())
}

/// A quota as people read it: `memory 2048 MB, instances 10, apps unlimited, routes 10`.
pub fn describe(q: &SpaceQuota) -> String {
    let one = |v: Option<u64>, unit: &str| {
        v.map_or_else(|| "unlimited".to_string(), |n| format!("{n}{unit}"))
    };
    format!(
        "memory {}, instances {}, apps {}, routes {}",
        one(q.memory_mb, " MB"),
        one(q.instances, ""),
        one(q.apps, ""),
        one(q.routes, "")
    )
}

/// The most `web` instances `app` may have under its space's quota, everything else in the
/// space as it is (`None`: no instance or memory limit), with the limit that binds as people
/// read it (`instance quota 2`). The autoscaler never asks for more.
pub async fn web_instances_allowed(
    ctx: &AppCtx,
    app: &AppRecord,
) -> StoreResult<Option<(u32, String)>> {
    let quota = ctx.store.space_quota(&app.space_id).await?;
    if quota.instances.is_none() && quota.memory_mb.is_none() {
        return Ok(None);
    }
    let (used, each) = usage(ctx, &app.space_id).await?;
    let mine = each
        .iter()
        .find(|(id, _)| *id == app.id)
        .map(|(_, f)| *f)
        .unwrap_or_default();
    let mut started = app.clone();
    started.state = AppState::Started;
    // What the app uses besides its web instances, then what the rest of the space uses.
    let without_web = footprint_with(ctx, &started, Some(("web", Some(0), None))).await?;
    let others_instances = used.instances.saturating_sub(mine.instances) + without_web.instances;
    let others_memory = used.memory_mb.saturating_sub(mine.memory_mb) + without_web.memory_mb;
    let mut best: Option<(u32, String)> = None;
    let mut consider = |n: u64, why: String| {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        if best.as_ref().is_none_or(|b| n < b.0) {
            best = Some((n, why));
        }
    };
    if let Some(limit) = quota.instances {
        consider(
            limit.saturating_sub(others_instances),
            format!("instance quota {limit}"),
        );
    }
    if let (Some(limit), true) = (quota.memory_mb, app.memory_mb > 0) {
        consider(
            limit.saturating_sub(others_memory) / app.memory_mb,
            format!("memory quota {limit} MB"),
        );
    }
    Ok(best)
}
