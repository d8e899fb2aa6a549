//! The convergence loop: compares what should run (started apps x desired instances of their
//! current revision) with the instance rows, and creates, places and removes rows until they
//! match. Level-triggered: it looks at the whole state every pass, so a missed wake-up or a
//! controller restart is healed by the next pass. Agents make their engines follow the rows.
//!
//! **Replacement first, removal after.** A row is never changed in app, revision or node; a row
//! that should run somewhere else or differently is *stale*: an old revision, marked `retire`
//! (restart, restart-instance, memory change), or on a node that is not ready (draining, drained,
//! lost). For each index the loop keeps one *fresh* row; while the index has no fresh row it
//! creates one. A stale row that is routed keeps serving until the fresh one is routed; a stale
//! row that carries no traffic (superseded while starting, crashed, unplaced, not ready) is
//! removed at once, so a burst of changes never piles up rows and reservations; a row on a lost
//! node waits for its replacement. Replacing a still-serving row is a rolling step, at most
//! `max_in_flight` indices of an app at a time; replacing one that does not serve happens at once.
//!
//! **Routes before stops.** A removed row leaves the route table (`router::refresh`) before the
//! assignment version is bumped, which is what tells the row's agent to stop the container, so
//! the router never sends a request to an instance that is being stopped on purpose; and a removed
//! row that still has requests in flight stays in its node's assignments (`AppCtx::retired`)
//! until they have finished (at most `router_drain_secs`), so a stop never cuts a request short.
//! The wait is per instance: the loop goes on, and other apps' changes reach their nodes at once.
//!
//! **One leader.** With several controllers on one database only the holder of the scheduler
//! lease ([`super::lease`]) runs passes, and its writes carry the lease's fence. The others
//! follow: each tick they rebuild their route table from the store and, when the placements
//! changed (a hash of every row's id and node), bump their own assignment version, so agents
//! long-polling a follower learn of the leader's placements within a tick.

use chrono::{Duration, Utc};
use paas_common::api::{AppState, InstanceState};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration as StdDuration;

use crate::control::desired::DesiredState;
use crate::control::lease::Role;
use crate::control::scheduler::{self, Ask, NodeView, Spread};
use crate::state::AppCtx;
use crate::store::{
    AppLifecycle, AppRecord, Event, Fence, InstanceRecord, PassWrites, Store, StoreError,
    StoreResult,
};

const TICK: StdDuration = StdDuration::from_secs(1);
/// The longest a leader's route table goes without a rebuild from the store when its passes
/// change nothing (see [`pass`]).
pub const REBUILD_EVERY: StdDuration = StdDuration::from_secs(5);

/// Runs forever; each pass is also triggered early by `ctx.converge`.
pub async fn run(ctx: std::sync::Arc<AppCtx>) {
    loop {
        let started = std::time::Instant::now();
        let result = pass(&ctx).await;
        ctx.metrics
            .convergence_pass(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => {}
            Err(StoreError::Fenced(why)) => {
                tracing::warn!(%why, "a convergence write was fenced off: this controller no longer leads");
                ctx.leadership.lost();
            }
            Err(e) => tracing::error!(error = %e, "convergence pass failed"),
        }
        tokio::select! {
            _ = ctx.converge.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One whole pass: converge the rows, refresh the route table, tell the nodes. Returns whether
/// any placement changed. On a follower, only follows the leader's placements.
pub async fn pass(ctx: &AppCtx) -> StoreResult<bool> {
    let fence = match ctx.leadership.role() {
        Role::Sole => None,
        Role::Leader(f) => Some(f),
        Role::Follower => return follow(ctx).await,
    };
    // Canary and blue-green steps first: a rollback's revision change is converged this pass.
    let deploying = super::deployments::tick(ctx, fence.as_ref()).await?;
    let changed = converge_once(ctx, fence).await?;
    // Routes first: a removed instance must be out of the table before its agent learns
    // (through the version bump) that it should stop it. Graceful drain, per instance: a
    // removed instance still serving requests stays in its node's assignments (see
    // `AppCtx::retired`) until they end, bounded by `PAAS_ROUTER_DRAIN_SECS`; `drain_watch`
    // bumps again when it may stop.
    //
    // A pass that wrote nothing skips the rebuild (it read every instance row a second time:
    // half of a pass at rest at 10,000 rows). Every other writer of what the table shows
    // refreshes it itself (heartbeats, route and domain changes, pushes, deletes); a running
    // deployment moves its split with time; and a rebuild at least every `REBUILD_EVERY` keeps
    // the table level-triggered against a writer that forgot.
    let due =
        changed || deploying || ctx.has_retired() || !ctx.refresher.rebuilt_within(REBUILD_EVERY);
    let refreshed = due
        && match crate::router::refresh(ctx).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "route table refresh failed");
                false
            }
        };
    if refreshed || !due {
        // Rows routed out before stay routed out: their drain can end without a rebuild.
        ctx.prune_retired(refreshed);
    }
    let builds_changed = builds_seen_changed(ctx).await?;
    if changed || builds_changed {
        ctx.bump_assignments();
    }
    Ok(changed)
}

/// Whether the builds in flight changed since the last pass: another controller may have
/// placed one (or its push ended) for a node that long-polls this one.
async fn builds_seen_changed(ctx: &AppCtx) -> StoreResult<bool> {
    if !ctx.store.shared() {
        // One controller: every change to a build bumps where it happens.
        return Ok(false);
    }
    let builds = ctx.store.stagings_in_flight(None).await?;
    Ok(seen_changed(
        &ctx.leadership.builds_seen,
        builds.into_iter().map(|s| (s.build_id, s.node)),
    ))
}

/// Records a hash of `items` in `seen`; whether it differs from the one recorded before.
fn seen_changed<T: std::hash::Hash>(
    seen: &std::sync::atomic::AtomicU64,
    items: impl IntoIterator<Item = T>,
) -> bool {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for i in items {
        i.hash(&mut h);
    }
    let now = h.finish();
    seen.swap(now, std::sync::atomic::Ordering::Relaxed) != now
}

/// A follower's tick: the route table and the agents follow the placements the leader writes.
async fn follow(ctx: &AppCtx) -> StoreResult<bool> {
    if let Err(e) = crate::router::refresh(ctx).await {
        tracing::warn!(error = %e, "route table refresh failed");
    }
    let instances = ctx.store.list_instances().await?;
    // Tasks the leader placed or ended change nodes' lists too.
    let tasks = ctx.store.active_tasks().await?;
    let placed = seen_changed(
        &ctx.leadership.placements_seen,
        instances
            .into_iter()
            .map(|i| (i.id, i.node_name))
            .chain(tasks.into_iter().map(|t| (t.id, t.node_name))),
    );
    let builds_changed = builds_seen_changed(ctx).await?;
    if placed || builds_changed {
        ctx.bump_assignments();
    }
    Ok(placed)
}

/// The scheduler's writes: fenced by the lease when there is one (several controllers), plain
/// on the only controller.
struct Writes<'a> {
    store: &'a dyn Store,
    fence: Option<Fence>,
}

impl Writes<'_> {
    async fn mark_lost_nodes(&self, before: chrono::DateTime<Utc>) -> StoreResult<Vec<String>> {
        match &self.fence {
            Some(f) => self.store.fenced_mark_lost_nodes(f, before).await,
            None => self.store.mark_lost_nodes(before).await,
        }
    }

    async fn set_node_state(&self, name: &str, state: &str, ev: &Event) -> StoreResult<()> {
        match &self.fence {
            Some(f) => self.store.fenced_set_node_state(f, name, state, ev).await,
            None => self.store.set_node_state(name, state, ev).await,
        }
    }
}

/// Tells nodes to stop retired instances as soon as their in-flight requests have ended. Polled:
/// requests end on the proxy's threads, and a wake-up per request end would cost the hot path.
pub async fn drain_watch(ctx: std::sync::Arc<AppCtx>) {
    loop {
        tokio::time::sleep(StdDuration::from_millis(20)).await;
        let any = ctx.retired.lock().is_ok_and(|l| !l.is_empty());
        if any && ctx.prune_retired(false) {
            ctx.bump_assignments();
        }
    }
}

/// What one pass decided, before any of it is written. Pure output of [`plan`].
#[derive(Debug, Default)]
pub struct Plan {
    /// Rows to remove, with the reason recorded in the event.
    pub remove: Vec<(InstanceRecord, String)>,
    /// (app id, process type, index, reason) of fresh rows to create.
    pub create: Vec<(String, String, u32, String)>,
}

/// Desired instances of an app's non-web process types, by app id (web's are on the app).
pub type ProcessCounts = HashMap<String, Vec<(String, u32)>>;

/// A row is fresh when it runs the app's current revision, is not marked for replacement, and
/// is unplaced or on a node that is ready.
fn is_fresh(
    i: &InstanceRecord,
    rev: i64,
    retiring: &HashSet<String>,
    ready: &HashSet<&str>,
) -> bool {
    i.revision == rev
        && !retiring.contains(&i.id)
        && i.node_name.as_deref().is_none_or(|n| ready.contains(n))
}

/// The pseudo process type under which a running canary or blue-green deployment's old web
/// instances are planned (their own indices and replacements, beside the current revision's).
pub const OLD_WEB: &str = "web (old revision)";

/// Decides which rows to create and remove. Pure, so the rolling rules are unit-tested.
pub fn plan(
    apps: &[AppRecord],
    procs: &ProcessCounts,
    lifecycles: &HashMap<String, AppLifecycle>,
    instances: &[InstanceRecord],
    retiring: &HashSet<String>,
    ready: &HashSet<&str>,
    lost: &HashSet<&str>,
) -> Plan {
    plan_with(
        apps,
        procs,
        lifecycles,
        instances,
        retiring,
        ready,
        lost,
        &HashMap::new(),
    )
}

/// [`plan`], keeping for each app in `keep_old` (app id -> old revision: a canary or blue-green
/// deployment runs) a full set of that revision's web instances beside the current one's, as if
/// they were a process type of their own ([`OLD_WEB`]).
#[allow(clippy::too_many_arguments)]
pub fn plan_with(
    apps: &[AppRecord],
    procs: &ProcessCounts,
    lifecycles: &HashMap<String, AppLifecycle>,
    instances: &[InstanceRecord],
    retiring: &HashSet<String>,
    ready: &HashSet<&str>,
    lost: &HashSet<&str>,
    keep_old: &HashMap<String, i64>,
) -> Plan {
    let mut out = Plan::default();
    let app_by_id: HashMap<&str, &AppRecord> = apps.iter().map(|a| (a.id.as_str(), a)).collect();
    // Keyed by app and process type: each type has its own indices and its own rolling steps.
    let mut by_app: HashMap<(&str, &str), BTreeMap<u32, Vec<&InstanceRecord>>> = HashMap::new();
    for i in instances {
        let wanted = app_by_id
            .get(i.app_id.as_str())
            .and_then(|a| {
                (a.state == AppState::Started)
                    .then_some(a.current_revision)
                    .flatten()
            })
            .is_some();
        if wanted {
            let ptype = if i.process_type == "web" && keep_old.get(&i.app_id) == Some(&i.revision) {
                OLD_WEB
            } else {
                i.process_type.as_str()
            };
            by_app
                .entry((i.app_id.as_str(), ptype))
                .or_default()
                .entry(i.index)
                .or_default()
                .push(i);
        } else {
            out.remove
                .push((i.clone(), "app stopped or deleted".into()));
        }
    }
    // Each app's process types with rows, so the loop below visits only its own (scanning every
    // app's rows for each app was quadratic in apps).
    let mut types_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for (app_id, ptype) in by_app.keys() {
        types_of.entry(app_id).or_default().push(ptype);
    }
    for app in apps {
        let (AppState::Started, Some(rev)) = (app.state, app.current_revision) else {
            continue;
        };
        let max_in_flight = lifecycles
            .get(&app.id)
            .map_or(1, |l| l.max_in_flight.max(1)) as usize;
        let mut wanted: Vec<(&str, u32)> = vec![("web", app.desired_instances)];
        let old_rev = keep_old.get(&app.id).copied();
        if old_rev.is_some() {
            wanted.push((OLD_WEB, app.desired_instances));
        }
        wanted.extend(
            procs
                .get(&app.id)
                .into_iter()
                .flatten()
                .map(|(t, n)| (t.as_str(), *n)),
        );
        // Rows of a process type the current droplet no longer has.
        for ptype in types_of.get(app.id.as_str()).into_iter().flatten() {
            if !wanted.iter().any(|(t, _)| t == ptype) {
                for i in by_app[&(app.id.as_str(), *ptype)].values().flatten() {
                    out.remove
                        .push(((*i).clone(), format!("process type {ptype} is gone")));
                }
            }
        }
        for (ptype, desired) in wanted {
            plan_process(
                &mut out,
                app,
                ptype,
                desired,
                if ptype == OLD_WEB {
                    old_rev.unwrap_or(rev)
                } else {
                    rev
                },
                max_in_flight,
                by_app.get(&(app.id.as_str(), ptype)),
                retiring,
                ready,
                lost,
            );
        }
    }
    out
}

/// The rolling rules for one process type of one started app.
#[allow(clippy::too_many_arguments)]
fn plan_process(
    out: &mut Plan,
    app: &AppRecord,
    ptype: &str,
    desired: u32,
    rev: i64,
    max_in_flight: usize,
    rows: Option<&BTreeMap<u32, Vec<&InstanceRecord>>>,
    retiring: &HashSet<String>,
    ready: &HashSet<&str>,
    lost: &HashSet<&str>,
) {
    {
        let empty = BTreeMap::new();
        let rows = rows.unwrap_or(&empty);
        for (idx, list) in rows.range(desired..) {
            for i in list {
                out.remove
                    .push(((*i).clone(), format!("scaled down below index {idx}")));
            }
        }
        // Indices with a fresh row still starting next to a stale one: rolling steps in flight.
        let mut in_flight = 0usize;
        let mut need: Vec<(u32, bool, String)> = Vec::new();
        for idx in 0..desired {
            let list = rows.get(&idx).map(Vec::as_slice).unwrap_or(&[]);
            let (fresh, stale): (Vec<&InstanceRecord>, Vec<&InstanceRecord>) =
                list.iter().partition(|i| is_fresh(i, rev, retiring, ready));
            // More than one fresh row (a lost node came back beside its replacement): keep the
            // newest routed one, else the newest.
            let keep = fresh
                .iter()
                .rev()
                .find(|i| routed(i))
                .or_else(|| fresh.last())
                .copied();
            for f in &fresh {
                if keep.is_some_and(|k| k.id != f.id) {
                    out.remove
                        .push(((*f).clone(), format!("duplicate of instance {idx}")));
                }
            }
            match keep {
                // A replacement counts once it is routed: running and, with a readiness check,
                // ready; until then the stale row keeps serving.
                Some(k) if routed(k) => {
                    for s in &stale {
                        out.remove.push((
                            (*s).clone(),
                            format!("replaced by a running instance {idx}"),
                        ));
                    }
                }
                Some(_) => {
                    supersede(out, &stale, idx, lost);
                    if stale.iter().any(|s| serving(s, lost)) {
                        in_flight += 1;
                    }
                }
                None if stale.is_empty() => need.push((idx, true, "desired".into())),
                None => {
                    let why = stale_reason(stale[0], rev, retiring, lost);
                    let urgent = !stale.iter().any(|s| serving(s, lost));
                    // Not serving: its replacement is created in this same pass (urgent), so
                    // nothing of it is lost by removing the stale rows now.
                    supersede(out, &stale, idx, lost);
                    need.push((idx, urgent, why));
                }
            }
        }
        for (idx, urgent, why) in need {
            if urgent {
                out.create
                    .push((app.id.clone(), ptype.to_string(), idx, why));
            } else if in_flight < max_in_flight {
                in_flight += 1;
                out.create.push((
                    app.id.clone(),
                    ptype.to_string(),
                    idx,
                    format!("rolling: {why}"),
                ));
            }
        }
    }
}

/// Removes the stale rows of an index that carry no traffic. A stale row that is routed keeps
/// serving until its replacement is; one that is not (still starting for a deployment a newer
/// one superseded, crashed, unplaced, not ready) would only hold a reservation the replacement
/// may need, so a burst of changes cannot pile up rows of every revision on a node. Rows on a
/// lost node stay until the replacement runs (they may come back), as before.
fn supersede(out: &mut Plan, stale: &[&InstanceRecord], idx: u32, lost: &HashSet<&str>) {
    for s in stale {
        let on_lost = s.node_name.as_deref().is_some_and(|n| lost.contains(n));
        if !routed(s) && !on_lost {
            out.remove.push((
                (*s).clone(),
                format!(
                    "superseded: instance {idx} of revision {} was {}",
                    s.revision,
                    s.state.as_str()
                ),
            ));
        }
    }
}

/// A row the router sends traffic to: running and ready.
fn routed(i: &InstanceRecord) -> bool {
    i.state == InstanceState::Running && i.ready
}

/// A row that carries traffic: routed, and not on a lost node (the router skips those).
fn serving(i: &InstanceRecord, lost: &HashSet<&str>) -> bool {
    routed(i) && i.node_name.as_deref().is_none_or(|n| !lost.contains(n))
}

fn stale_reason(
    s: &InstanceRecord,
    rev: i64,
    retiring: &HashSet<String>,
    lost: &HashSet<&str>,
) -> String {
    let node = s.node_name.as_deref().unwrap_or("?");
    if lost.contains(node) {
        format!("replacing instance {} on lost node {node}", s.index)
    } else if s.revision != rev {
        format!(
            "replacing instance {} of revision {} with revision {rev}",
            s.index, s.revision
        )
    } else if retiring.contains(&s.id) {
        format!("replacing instance {} (restart)", s.index)
    } else {
        format!("moving instance {} off node {node} (draining)", s.index)
    }
}

/// One pass, its writes fenced by `fence` when given. Returns whether any placement changed
/// (agents must be told).
pub async fn converge_once(ctx: &AppCtx, fence: Option<Fence>) -> StoreResult<bool> {
    let store = &ctx.store;
    let writes = Writes {
        store: store.as_ref(),
        fence,
    };
    let grace = Duration::seconds(ctx.settings.node_grace_secs as i64);
    let newly_lost = writes.mark_lost_nodes(Utc::now() - grace).await?;
    // A lost node's instances leave the route table even where nothing can replace them.
    let mut changed = !newly_lost.is_empty();
    for lost in newly_lost {
        tracing::warn!(node = %lost, "node lost: no heartbeat within the grace period");
        store
            .add_event(&Event {
                app_name: None,
                app_id: None,
                actor: "platform".into(),
                kind: "node.lost".into(),
                message: format!(
                    "node {lost} missed its heartbeats for {}s",
                    grace.num_seconds()
                ),
            })
            .await?;
    }

    let nodes = store.list_nodes().await?;
    // One snapshot of what should run, the same the assignments and the API read.
    let desired = DesiredState::load(store.as_ref()).await?;
    let apps = &desired.all_apps;
    let lifecycles = desired.lifecycles();
    let retiring = store.retiring_instances().await?;
    let mut instances = store.list_instances().await?;
    let ready: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.state == "ready")
        .map(|n| n.name.as_str())
        .collect();
    let lost: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.state == "lost")
        .map(|n| n.name.as_str())
        .collect();
    let app_by_id: HashMap<&str, &AppRecord> = apps.iter().map(|a| (a.id.as_str(), a)).collect();
    let app_name = |id: &str| app_by_id.get(id).map(|a| a.name.clone());

    let counts: ProcessCounts = desired.process_counts();
    let running = store.running_deployments().await?;
    let keep_old = super::deployments::keep_old(&running, apps);
    let decided = plan_with(
        apps, &counts, lifecycles, &instances, &retiring, &ready, &lost, &keep_old,
    );
    let removed: HashSet<String> = decided.remove.iter().map(|(i, _)| i.id.clone()).collect();
    // Every removal, new row, placement and event of the pass is written at the end in one
    // transaction (`PassWrites`): a write each, behind the nodes' heartbeats on the one writer,
    // made placing 1,000 instances take seconds.
    let mut pass = PassWrites::default();
    for (inst, why) in &decided.remove {
        pass.delete.push(inst.id.clone());
        tracing::info!(instance = %inst.id, index = inst.index, node = ?inst.node_name, why = %why, "removed instance");
        pass.events.push(Event {
            app_name: app_name(&inst.app_id),
            app_id: Some(inst.app_id.clone()),
            actor: "platform".into(),
            kind: "instance.remove".into(),
            message: format!(
                "removed instance {} on {}: {why}",
                inst.index,
                inst.node_name.as_deref().unwrap_or("no node")
            ),
        });
        changed = true;
    }
    instances.retain(|i| !removed.contains(&i.id));
    let mut created: HashSet<String> = HashSet::new();
    for (app_id, ptype, idx, why) in &decided.create {
        let Some(app) = app_by_id.get(app_id.as_str()) else {
            continue;
        };
        let Some(mut rev) = app.current_revision else {
            continue;
        };
        let mut ptype = ptype.clone();
        if ptype == OLD_WEB {
            let Some(old) = keep_old.get(app_id) else {
                continue;
            };
            rev = *old;
            ptype = "web".into();
        }
        let row = InstanceRecord::pending(
            uuid::Uuid::new_v4().to_string(),
            app.id.clone(),
            rev,
            ptype.clone(),
            *idx,
        );
        pass.events.push(Event {
            app_name: Some(app.name.clone()),
            app_id: Some(app.id.clone()),
            actor: "platform".into(),
            kind: "instance.create".into(),
            message: format!("new {ptype} instance {idx} (revision {rev}): {why}"),
        });
        created.insert(row.id.clone());
        instances.push(row);
    }

    let (mut views, mut spreads) = reservations(&nodes, &desired, &instances, &retiring);
    // Cron runs become tasks first, so this pass places them.
    super::cron::tick(ctx, writes.fence.as_ref(), apps).await?;
    let tasks = store.active_tasks().await?;
    super::tasks::book(&mut views, &tasks);
    let services = store.builtin_instances().await?;
    super::services::book(&mut views, &services);

    // Place every unplaced row (new ones and ones that found no node before); instance 0 of
    // every app before further instances, so one app cannot starve another.
    let no_labels = BTreeMap::new();
    let mut busy = false;
    let mut unplaced: Vec<&mut InstanceRecord> = instances
        .iter_mut()
        .filter(|i| i.node_name.is_none())
        .collect();
    unplaced.sort_by_key(|i| (i.index, i.created_at));
    for inst in unplaced {
        let Some(app) = app_by_id.get(inst.app_id.as_str()) else {
            continue;
        };
        let labels = lifecycles
            .get(&app.id)
            .map_or(&no_labels, |l| &l.placement_labels);
        let ask = Ask {
            memory_mb: desired.memory_of(app, &inst.process_type),
            disk_mb: app.disk_mb,
            labels,
        };
        let spread = spreads
            .entry(app.id.clone())
            .or_insert_with(|| Spread::new(views.len()));
        let new = created.contains(&inst.id);
        match scheduler::place(&views, &ask, spread, scheduler::DEFAULT_MAX_STARTING) {
            Ok(vi) => {
                let node = views[vi].name.clone();
                if !new {
                    pass.place.push((inst.id.clone(), Some(node.clone()), None));
                }
                views[vi].book(&ask);
                spread.add(&views, vi);
                tracing::info!(app = %app.name, index = inst.index, node = %node, "placed instance");
                inst.node_name = Some(node);
                inst.placement_error = None;
                changed = true;
            }
            Err(e) => {
                busy |= matches!(e, scheduler::PlacementError::Busy(_));
                let msg = e.to_string();
                if inst.placement_error.as_deref() != Some(msg.as_str()) {
                    if !new {
                        pass.place.push((inst.id.clone(), None, Some(msg.clone())));
                    }
                    inst.placement_error = Some(msg);
                }
            }
        }
    }
    pass.insert = instances
        .iter()
        .filter(|i| created.contains(&i.id))
        .cloned()
        .collect();
    store.write_pass(writes.fence.as_ref(), &pass).await?;
    // A heartbeat that reports a start finished wakes the next pass while rows wait for one.
    ctx.start_slot_wanted
        .store(busy, std::sync::atomic::Ordering::Relaxed);
    let drain_until =
        std::time::Instant::now() + StdDuration::from_secs(ctx.settings.router_drain_secs);
    let node_by_name: HashMap<&str, &crate::store::NodeRecord> =
        nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for (inst, _) in &decided.remove {
        // A routed instance may have requests in flight: keep it for its node until they end
        // (the next route refresh decides; one that serves nothing is forgotten at once).
        if let (Some(node), Some(port), InstanceState::Running) =
            (&inst.node_name, inst.host_port, inst.state)
        {
            if let Some(n) = node_by_name.get(node.as_str()) {
                if let Ok(mut list) = ctx.retired.lock() {
                    list.push(crate::state::Retired {
                        record: inst.clone(),
                        address: crate::router::backend_address(&n.address, port),
                        until: drain_until,
                        routed_out: false,
                    });
                }
            }
        }
    }

    changed |= super::tasks::converge(
        ctx,
        writes.fence.as_ref(),
        &nodes,
        &desired,
        &tasks,
        &mut views,
    )
    .await?;
    changed |= super::services::converge(ctx, writes.fence.as_ref(), &services, &mut views).await?;

    // A draining node with nothing left on it is drained. The occupied nodes are gathered once
    // (a walk of every row per draining node was nodes x instances when many drain).
    let occupied: HashSet<&str> = instances
        .iter()
        .filter_map(|i| i.node_name.as_deref())
        .collect();
    for n in nodes.iter().filter(|n| n.state == "draining") {
        if !occupied.contains(n.name.as_str()) {
            let ev = Event {
                app_name: None,
                app_id: None,
                actor: "platform".into(),
                kind: "node.drained".into(),
                message: format!("node {} is drained: every instance runs elsewhere", n.name),
            };
            writes.set_node_state(&n.name, "drained", &ev).await?;
            tracing::info!(node = %n.name, "node drained");
        }
    }
    Ok(changed)
}

/// The scheduler's reservations per node, read from the store: what the API and the dashboard
/// show, so they never disagree with placement.
pub async fn node_reservations(
    store: &dyn crate::store::Store,
) -> StoreResult<HashMap<String, NodeView>> {
    let nodes = store.list_nodes().await?;
    let desired = DesiredState::load(store).await?;
    let instances = store.list_instances().await?;
    let retiring = store.retiring_instances().await?;
    let (mut views, _) = reservations(&nodes, &desired, &instances, &retiring);
    super::tasks::book(&mut views, &store.active_tasks().await?);
    super::services::book(&mut views, &store.builtin_instances().await?);
    Ok(views.into_iter().map(|v| (v.name.clone(), v)).collect())
}

/// Each node's reservations as the scheduler sees them: every row placed there counts (stale
/// ones too: they still run), except one its node gave up restarting, which runs nothing. Also
/// the spread of each app's fresh rows over the nodes. The model test checks these against what
/// its nodes really run.
pub fn reservations(
    nodes: &[crate::store::NodeRecord],
    desired: &DesiredState,
    instances: &[InstanceRecord],
    retiring: &HashSet<String>,
) -> (Vec<NodeView>, HashMap<String, Spread>) {
    let ready: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.state == "ready")
        .map(|n| n.name.as_str())
        .collect();
    let app_by_id: HashMap<&str, &AppRecord> = desired
        .all_apps
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    let mut views: Vec<NodeView> = nodes.iter().map(NodeView::from_record).collect();
    let node_idx: HashMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    // Spread counts only fresh rows: a replacement should not avoid the node its stale
    // predecessor is leaving.
    let mut spreads: HashMap<String, Spread> = HashMap::new();
    for inst in instances {
        let (Some(node), Some(app)) = (&inst.node_name, app_by_id.get(inst.app_id.as_str())) else {
            continue;
        };
        let Some(&vi) = node_idx.get(node) else {
            continue;
        };
        if paas_common::agent::gave_up(inst.state, inst.last_exit.as_deref()) {
            continue;
        }
        let v = &mut views[vi];
        v.used_memory_mb += desired.memory_of(app, &inst.process_type);
        v.used_disk_mb += app.disk_mb;
        v.used_slots += 1;
        if matches!(inst.state, InstanceState::Pending | InstanceState::Starting) {
            v.starting += 1;
        }
        if app
            .current_revision
            .is_some_and(|rev| is_fresh(inst, rev, retiring, &ready))
        {
            spreads
                .entry(inst.app_id.clone())
                .or_insert_with(|| Spread::new(views.len()))
                .add(&views, vi);
        }
    }

    (views, spreads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(desired: u32, rev: i64) -> AppRecord {
        let now = Utc::now();
        AppRecord {
            id: "app".into(),
            name: "web".into(),
            state: AppState::Started,
            desired_instances: desired,
            memory_mb: 128,
            disk_mb: 256,
            current_revision: Some(rev),
            created_at: now,
            updated_at: now,
            space_id: String::new(),
            host: None,
        }
    }

    fn row(id: &str, index: u32, rev: i64, node: &str, state: InstanceState) -> InstanceRecord {
        let now = Utc::now();
        InstanceRecord {
            id: id.into(),
            app_id: "app".into(),
            revision: rev,
            process_type: "web".into(),
            index,
            node_name: Some(node.into()),
            state,
            container_id: None,
            host_port: None,
            restarts: 0,
            last_exit: None,
            placement_error: None,
            since: now,
            created_at: now,
            ready: true,
        }
    }

    fn run_plan(
        a: &AppRecord,
        rows: &[InstanceRecord],
        retiring: &[&str],
        ready: &[&str],
        lost: &[&str],
    ) -> Plan {
        let retiring: HashSet<String> = retiring.iter().map(|s| s.to_string()).collect();
        let mut lc = HashMap::new();
        lc.insert(
            "app".to_string(),
            AppLifecycle {
                max_in_flight: 1,
                ..Default::default()
            },
        );
        plan(
            std::slice::from_ref(a),
            &HashMap::new(),
            &lc,
            rows,
            &retiring,
            &ready.iter().copied().collect(),
            &lost.iter().copied().collect(),
        )
    }

    fn removed(p: &Plan) -> Vec<&str> {
        let mut v: Vec<&str> = p.remove.iter().map(|(i, _)| i.id.as_str()).collect();
        v.sort();
        v
    }

    fn created(p: &Plan) -> Vec<u32> {
        p.create.iter().map(|(_, _, i, _)| *i).collect()
    }

    use InstanceState::*;

    #[test]
    fn a_canary_keeps_the_old_set_beside_a_whole_new_one() {
        let a = app(2, 2);
        let old = [
            row("o0", 0, 1, "n1", Running),
            row("o1", 1, 1, "n1", Running),
        ];
        let keep: HashMap<String, i64> = [("app".to_string(), 1)].into();
        let ready: HashSet<&str> = ["n1"].into();
        let lc = HashMap::new();
        let p = plan_with(
            std::slice::from_ref(&a),
            &HashMap::new(),
            &lc,
            &old,
            &HashSet::new(),
            &ready,
            &HashSet::new(),
            &keep,
        );
        // Every new index at once (nothing of the new revision serves yet), nothing old removed.
        let mut new: Vec<(&str, u32)> = p
            .create
            .iter()
            .map(|(_, t, i, _)| (t.as_str(), *i))
            .collect();
        new.sort();
        assert_eq!(new, [("web", 0), ("web", 1)]);
        assert!(p.remove.is_empty(), "{:?}", p.remove);
        // Both sets running (a crashed one is its node's to restart): nothing changes.
        let both = [
            row("o0", 0, 1, "n1", Running),
            row("o1", 1, 1, "n1", Crashed),
            row("n0", 0, 2, "n1", Running),
            row("n1", 1, 2, "n1", Running),
        ];
        let p = plan_with(
            std::slice::from_ref(&a),
            &HashMap::new(),
            &lc,
            &both,
            &HashSet::new(),
            &ready,
            &HashSet::new(),
            &keep,
        );
        assert!(p.remove.is_empty() && p.create.is_empty(), "{p:?}");
        // An old instance on a node that went away is replaced as an old one.
        let moved = [
            row("o0", 0, 1, "n1", Running),
            row("o1", 1, 1, "gone", Running),
            row("n0", 0, 2, "n1", Running),
            row("n1", 1, 2, "n1", Running),
        ];
        let p = plan_with(
            std::slice::from_ref(&a),
            &HashMap::new(),
            &lc,
            &moved,
            &HashSet::new(),
            &ready,
            &HashSet::new(),
            &keep,
        );
        assert_eq!(
            p.create
                .iter()
                .map(|(_, t, i, _)| (t.as_str(), *i))
                .collect::<Vec<_>>(),
            [(OLD_WEB, 1)]
        );
        // Once it ends (promoted: no old set kept), the old rows are replaced ones.
        let p = run_plan(&a, &both, &[], &["n1"], &[]);
        assert_eq!(removed(&p), ["o0", "o1"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn new_revision_rolls_one_index_at_a_time() {
        let a = app(3, 2);
        let old = [
            row("o0", 0, 1, "n1", Running),
            row("o1", 1, 1, "n1", Running),
            row("o2", 2, 1, "n1", Running),
        ];
        let p = run_plan(&a, &old, &[], &["n1"], &[]);
        assert_eq!(created(&p), [0], "one index in flight");
        assert!(
            p.remove.is_empty(),
            "nothing removed before its replacement runs"
        );

        // The replacement starts: still in flight, nothing else starts, nothing removed.
        let mut rows = old.to_vec();
        rows.push(row("n0", 0, 2, "n1", Starting));
        let p = run_plan(&a, &rows, &[], &["n1"], &[]);
        assert!(p.create.is_empty() && p.remove.is_empty(), "{p:?}");

        // It runs: the old one goes, and the next index starts.
        rows.last_mut().unwrap().state = Running;
        let p = run_plan(&a, &rows, &[], &["n1"], &[]);
        assert_eq!(removed(&p), ["o0"]);
        assert_eq!(created(&p), [1]);
    }

    #[test]
    fn superseded_rows_that_serve_nothing_go_at_once() {
        // A burst: revision 1 serves; 2 was starting and 3 not even placed when 4 arrived.
        let a = app(1, 4);
        let mut unplaced = row("r3", 0, 3, "n1", Pending);
        unplaced.node_name = None;
        let rows = [
            row("r1", 0, 1, "n1", Running),
            row("r2", 0, 2, "n1", Starting),
            unplaced,
        ];
        let p = run_plan(&a, &rows, &[], &["n1"], &[]);
        assert_eq!(removed(&p), ["r2", "r3"], "only the serving row stays");
        assert_eq!(created(&p), [0]);
        // Revision 4's row starts; a restart (retire) now supersedes it too.
        let rows = [
            row("r1", 0, 1, "n1", Running),
            row("r4", 0, 4, "n1", Starting),
        ];
        let p = run_plan(&a, &rows, &["r4"], &["n1"], &[]);
        assert_eq!(removed(&p), ["r4"]);
        assert_eq!(created(&p), [0]);
        // A crashed old row is not kept beside a starting new one.
        let rows = [
            row("r1", 0, 1, "n1", Crashed),
            row("r4", 0, 4, "n1", Starting),
        ];
        let p = run_plan(&a, &rows, &[], &["n1"], &[]);
        assert_eq!(removed(&p), ["r1"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn lost_node_is_replaced_at_once_and_removed_after() {
        let a = app(2, 1);
        let rows = [
            row("a", 0, 1, "dead", Running),
            row("b", 1, 1, "dead", Running),
        ];
        let p = run_plan(&a, &rows, &[], &["n2"], &["dead"]);
        assert_eq!(
            created(&p),
            [0, 1],
            "not limited by max_in_flight: the lost rows do not serve"
        );
        assert!(p.remove.is_empty());
        let mut rows = rows.to_vec();
        rows.push(row("a2", 0, 1, "n2", Running));
        rows.push(row("b2", 1, 1, "n2", Starting));
        let p = run_plan(&a, &rows, &[], &["n2"], &["dead"]);
        assert_eq!(removed(&p), ["a"]);
        assert!(p.create.is_empty());
    }

    #[test]
    fn restart_and_drain_roll_and_crashed_rows_are_replaced_at_once() {
        let a = app(2, 1);
        let rows = [row("a", 0, 1, "n1", Running), row("b", 1, 1, "n1", Running)];
        let p = run_plan(&a, &rows, &["a", "b"], &["n1"], &[]);
        assert_eq!(created(&p), [0]);
        // Draining: n1 is not ready.
        let p = run_plan(&a, &rows, &[], &["n2"], &[]);
        assert_eq!(created(&p), [0]);
        // A crashed row does not serve, so its replacement does not wait for a rolling slot.
        let rows = [row("a", 0, 1, "n1", Crashed), row("b", 1, 1, "n1", Running)];
        let p = run_plan(&a, &rows, &["a", "b"], &["n1"], &[]);
        assert_eq!(created(&p), [0, 1]);
    }

    #[test]
    fn scale_down_stop_and_duplicates() {
        let mut a = app(1, 1);
        let rows = [row("a", 0, 1, "n1", Running), row("b", 1, 1, "n1", Running)];
        let p = run_plan(&a, &rows, &[], &["n1"], &[]);
        assert_eq!(removed(&p), ["b"]);
        assert!(p.create.is_empty(), "scaling does not restart the others");
        a.state = AppState::Stopped;
        let p = run_plan(&a, &rows, &[], &["n1"], &[]);
        assert_eq!(removed(&p), ["a", "b"]);
        // A lost node came back beside its running replacement: one of them goes.
        let a = app(1, 1);
        let rows = [
            row("old", 0, 1, "n1", Running),
            row("new", 0, 1, "n2", Running),
        ];
        let p = run_plan(&a, &rows, &[], &["n1", "n2"], &[]);
        assert_eq!(removed(&p), ["old"]);
    }

    #[test]
    fn process_types_have_their_own_indices_and_a_gone_type_is_removed() {
        let a = app(1, 1);
        let mut worker = row("w0", 0, 1, "n1", Running);
        worker.process_type = "worker".into();
        let rows = [row("a", 0, 1, "n1", Running), worker];
        let procs: ProcessCounts = [("app".to_string(), vec![("worker".to_string(), 2)])]
            .into_iter()
            .collect();
        let lc = HashMap::new();
        let p = plan(
            std::slice::from_ref(&a),
            &procs,
            &lc,
            &rows,
            &HashSet::new(),
            &["n1"].into_iter().collect(),
            &HashSet::new(),
        );
        let made: Vec<(&str, u32)> = p
            .create
            .iter()
            .map(|(_, t, i, _)| (t.as_str(), *i))
            .collect();
        assert_eq!(
            made,
            [("worker", 1)],
            "web index 0 and worker index 0 both exist already"
        );
        assert!(p.remove.is_empty());
        // The droplet has no worker any more.
        let p = plan(
            std::slice::from_ref(&a),
            &HashMap::new(),
            &lc,
            &rows,
            &HashSet::new(),
            &["n1"].into_iter().collect(),
            &HashSet::new(),
        );
        assert_eq!(removed(&p), ["w0"]);
        assert!(p.create.is_empty());
    }
}
