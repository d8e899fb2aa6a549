//! What the controller tells nodes and hears from them: each node's assignment list (the desired
//! state of its instance rows, resolved once in [`crate::control::desired`]) and its heartbeats
//! (capacity and the actual state of every instance it owns). The HTTP handlers in `api/agent`
//! only authenticate the node and call these; the model test's in-process agent calls them too.

use chrono::Utc;
use paas_common::agent::{AppContext, Assignment, Heartbeat, InstanceReport};
use paas_common::api::InstanceState;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::control::desired::DesiredState;
use crate::events;
use crate::state::AppCtx;
use crate::store::{AppRecord, NodeHeartbeat, ReportedBefore, RevisionRecord, StoreResult};

/// Records a node's heartbeat: its capacity and each instance's reported state (with the events
/// a change means), in one write transaction that writes only the rows a report changes, or in
/// none when nothing changed and the node's last-seen time is recent enough; the usage samples
/// go to memory ([`super::usage`]). The route table follows at once when routing changed.
pub async fn heartbeat(ctx: &AppCtx, node: &str, hb: &Heartbeat) -> StoreResult<()> {
    let flush = ctx.usage.flush_due(node);
    let events = |r: &InstanceReport, before: &ReportedBefore| events::events_for(node, r, before);
    let applied = ctx
        .store
        .apply_heartbeat(
            node,
            &NodeHeartbeat {
                capacity: &hb.capacity,
                at: Utc::now(),
                reports: &hb.instances,
                write_usage: flush,
                // Half the grace: a node heartbeating on time is never near being judged lost.
                seen_every: chrono::TimeDelta::milliseconds(
                    (ctx.settings.node_grace_secs * 500) as i64,
                ),
            },
            &events,
        )
        .await?;
    ctx.usage.record(node, &hb.instances, &applied.apps, flush);
    if !applied.changed.is_empty() {
        ctx.reported.send_modify(|v| *v = v.wrapping_add(1));
    }
    let changed = applied
        .changed
        .iter()
        .any(|(k, before)| before.routing_changed(&hb.instances[*k]));
    if changed {
        crate::router::refresh(ctx).await?;
    }
    let starting = |s| matches!(s, InstanceState::Pending | InstanceState::Starting);
    let start_ended = applied
        .changed
        .iter()
        .any(|(k, before)| starting(before.state) && !starting(hb.instances[*k].state));
    if start_ended && ctx.start_slot_wanted.load(Ordering::Relaxed) {
        ctx.converge.notify_one();
    }
    super::tasks::heartbeat(ctx, node, &hb.tasks).await?;
    super::services::heartbeat(ctx, node, &hb.services).await
}

/// What every node's assignment list is resolved against: the desired state, the apps'
/// contexts, the built-in services, the images to collect. Every node long-polls its whole list
/// after each change, so each one loading these was nodes x apps per change; one is loaded per
/// assignment version and shared ([`snapshot`]).
pub struct Snapshot {
    pub(super) desired: DesiredState,
    pub(super) contexts: AppContexts,
    pub(super) builtin: HashSet<String>,
    /// Images of Dockerfile droplets retention collected, for nodes to remove.
    pub collected_images: Vec<String>,
    /// Index of each app in `desired.all_apps`, by id.
    apps: HashMap<String, usize>,
}

impl Snapshot {
    async fn load(ctx: &AppCtx) -> StoreResult<Self> {
        let desired = DesiredState::load(ctx.store.as_ref()).await?;
        let apps = desired
            .all_apps
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        Ok(Self {
            contexts: AppContexts::load(ctx).await?,
            builtin: builtin_services(ctx).await?,
            collected_images: crate::droplets::collected_images(ctx.store.as_ref(), &ctx.blobs)
                .await?,
            desired,
            apps,
        })
    }

    pub fn app(&self, id: &str) -> Option<&AppRecord> {
        self.apps.get(id).map(|&i| &self.desired.all_apps[i])
    }
}

/// How long a snapshot serves its assignment version: the long-polls that answer together
/// after a bump share one. A change that bumps no version (a route mapped, a log rate limit)
/// reaches the nodes' next lists as before, at most this much later.
const SNAPSHOT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The snapshot of the current assignment version (see [`Snapshot`]).
#[derive(Default)]
pub struct Snapshots {
    /// Held while one loads, so the long-polls woken together wait for it rather than each
    /// loading its own.
    slot: tokio::sync::Mutex<Option<(u64, std::time::Instant, Arc<Snapshot>)>>,
}

/// The snapshot for the current assignment version: loaded once, shared by every node's
/// assignment list until the version moves (or [`SNAPSHOT_TTL`] passes). The version is read
/// before loading, so a snapshot is never older than the change that made its version.
pub async fn snapshot(ctx: &AppCtx) -> StoreResult<Arc<Snapshot>> {
    let version = *ctx.assignments.borrow();
    let mut slot = ctx.snapshots.slot.lock().await;
    if let Some((v, at, snap)) = slot.as_ref() {
        if *v == version && at.elapsed() < SNAPSHOT_TTL {
            return Ok(snap.clone());
        }
    }
    let snap = Arc::new(Snapshot::load(ctx).await?);
    *slot = Some((version, std::time::Instant::now(), snap.clone()));
    Ok(snap)
}

/// The instances assigned to `node`, each with everything its agent needs to run it: what its
/// row's revision resolves to in the desired state, env with secrets opened.
pub async fn assignments_for(ctx: &AppCtx, node: &str) -> StoreResult<Vec<Assignment>> {
    // The same desired state convergence reads: a row runs what its revision resolves to.
    let snap = snapshot(ctx).await?;
    let desired = &snap.desired;
    let contexts = &snap.contexts;
    let builtin = &snap.builtin;
    let mut revisions: HashMap<(String, i64), Option<RevisionRecord>> = HashMap::new();
    let mut networks: HashMap<String, Vec<String>> = HashMap::new();
    let mut out = Vec::new();
    // Retired instances still finishing requests stay on their node until they are done.
    let retired = ctx.retired_on(node);
    // Only this node's rows: every node long-polls after each change, so reading every row for
    // each one was nodes x instances per change.
    let rows = ctx.store.node_instances(node).await?;
    for inst in rows.into_iter().chain(retired) {
        if inst.node_name.as_deref() != Some(node) {
            continue;
        }
        let Some(app) = snap.app(&inst.app_id) else {
            continue;
        };
        // The current revision is in the desired state already; an older one is read once.
        let current = desired
            .app(&app.id)
            .map(|d| &d.revision)
            .filter(|r| r.number == inst.revision);
        let rev = match current {
            Some(r) => r,
            None => {
                let key = (app.id.clone(), inst.revision);
                if !revisions.contains_key(&key) {
                    let rev = ctx.store.revision(&app.id, inst.revision).await?;
                    revisions.insert(key.clone(), rev);
                }
                match revisions.get(&key) {
                    Some(Some(r)) => r,
                    _ => continue,
                }
            }
        };
        let Some(process) = desired.process_for(app, rev, &inst.process_type) else {
            continue;
        };
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &rev.env {
            // Secret values are sealed in the store; the node needs them plain.
            match ctx.secrets.open(&app.id, v) {
                Ok(plain) => {
                    env.insert(k.clone(), plain);
                }
                Err(e) => {
                    tracing::error!(app = %app.name, key = %k, error = %e, "secret env value left out")
                }
            }
        }
        env.insert("PAAS_APP_REVISION".into(), rev.number.to_string());
        if !networks.contains_key(&app.id) {
            let nets = service_networks(ctx, builtin, &app.id).await?;
            networks.insert(app.id.clone(), nets);
        }
        let memory_mb = process.memory_mb;
        let sidecars = rev
            .sidecars
            .iter()
            .filter(|s| s.runs_with(&inst.process_type))
            .cloned()
            .collect();
        out.push(Assignment {
            instance_id: inst.id,
            app: app.name.clone(),
            process_type: inst.process_type,
            index: inst.index,
            droplet: rev.droplet.clone(),
            command: process.command,
            env,
            memory_mb,
            disk_mb: process.disk_mb,
            cpu_shares: (memory_mb * 1024 / 1024).clamp(2, 1024 * 4),
            pids_limit: ctx.settings.instance_pids_limit,
            health: process.health,
            image: desired.image(&rev.droplet).cloned(),
            log_rate_limit_bytes: desired.lifecycle(&app.id).log_rate_limit_bytes,
            context: Some(contexts.of(app, rev.number)),
            networks: networks.get(&app.id).cloned().unwrap_or_default(),
            sidecars,
        });
    }
    Ok(out)
}

/// The ids of the built-in service instances: read once per assignment list, so a platform
/// without any spends no query per app on the nodes' long-polls.
pub(super) async fn builtin_services(ctx: &AppCtx) -> StoreResult<HashSet<String>> {
    Ok(ctx
        .store
        .builtin_instances()
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect())
}

/// The networks of the built-in service instances an app is bound to (issue 22), from the
/// bindings in the store, never from the app's env (a user-provided service's credentials are
/// the user's words and must not choose a network to join).
pub(super) async fn service_networks(
    ctx: &AppCtx,
    builtin: &HashSet<String>,
    app_id: &str,
) -> StoreResult<Vec<String>> {
    if builtin.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<String> = ctx
        .store
        .bindings_of_app(app_id)
        .await?
        .into_iter()
        .filter(|b| builtin.contains(&b.instance_id))
        .map(|b| paas_common::agent::service_network(&b.instance_id))
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The unfinished tasks placed on `node`, resolved like its instances.
pub async fn task_assignments_for(
    ctx: &AppCtx,
    node: &str,
) -> StoreResult<Vec<paas_common::agent::TaskAssignment>> {
    let snap = snapshot(ctx).await?;
    super::tasks::assignments_for(ctx, node, &snap).await
}

/// What `VCAP_APPLICATION` says about each app: its space and org, its routes.
pub(super) struct AppContexts {
    spaces: HashMap<String, crate::store::SpaceRecord>,
    app_space: HashMap<String, String>,
    routes: HashMap<String, Vec<String>>,
    domain: String,
}

impl AppContexts {
    pub(super) async fn load(ctx: &AppCtx) -> StoreResult<Self> {
        let spaces = ctx
            .store
            .list_spaces()
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let mut routes: HashMap<String, Vec<String>> = HashMap::new();
        for r in ctx.store.list_routes().await? {
            routes
                .entry(r.app_id)
                .or_default()
                .push(format!("{}{}", r.host, r.path));
        }
        Ok(Self {
            spaces,
            app_space: ctx.store.app_spaces().await?,
            routes,
            domain: ctx.settings.apps_domain.clone(),
        })
    }

    pub(super) fn of(&self, app: &AppRecord, revision: i64) -> AppContext {
        let space = self
            .app_space
            .get(&app.id)
            .and_then(|id| self.spaces.get(id));
        let org_name = space.map(|s| s.org.clone()).unwrap_or_default();
        // The default route (none for `--no-route`), then the mapped ones.
        let mut uris: Vec<String> = app
            .host
            .iter()
            .map(|h| format!("{h}.{}", self.domain))
            .collect();
        uris.extend(self.routes.get(&app.id).into_iter().flatten().cloned());
        AppContext {
            app_id: app.id.clone(),
            space_id: space.map(|s| s.id.clone()).unwrap_or_default(),
            space_name: space.map(|s| s.name.clone()).unwrap_or_default(),
            org_id: org_id(&org_name),
            org_name,
            uris,
            revision,
        }
    }
}

/// Who an instance assigned to `node` is, as its identity certificate names it (issue 25);
/// `None` when the instance is not assigned to `node`, so a node never gets another node's.
pub async fn identity_subject(
    ctx: &AppCtx,
    instance_id: &str,
    node: &str,
) -> StoreResult<Option<crate::identity::InstanceSubject>> {
    let Some(app_id) = ctx.store.app_of_instance(instance_id, node).await? else {
        return Ok(None);
    };
    let space_id = ctx.store.app_space(&app_id).await?.unwrap_or_default();
    let org = ctx
        .store
        .list_spaces()
        .await?
        .into_iter()
        .find(|s| s.id == space_id)
        .map(|s| s.org)
        .unwrap_or_default();
    Ok(Some(crate::identity::InstanceSubject {
        instance_id: instance_id.to_string(),
        app_id,
        space_id,
        org_id: org_id(&org),
    }))
}

/// A stable, GUID-shaped id for an org, which the store knows by name only.
fn org_id(org: &str) -> String {
    let h = hex::encode(Sha256::digest(format!("paas-org:{org}").as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
