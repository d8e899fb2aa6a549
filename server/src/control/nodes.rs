//! What the controller tells nodes and hears from them: each node's assignment list (the desired
//! state of its instance rows, resolved once in [`crate::control::desired`]) and its heartbeats
//! (capacity and the actual state of every instance it owns). The HTTP handlers in `api/agent`
//! only authenticate the node and call these; the model test's in-process agent calls them too.

use chrono::Utc;
use paas_common::agent::{AppContext, Assignment, Heartbeat};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::control::desired::DesiredState;
use crate::state::AppCtx;
use crate::store::{AppRecord, RevisionRecord, StoreResult};

/// Records a node's heartbeat: its capacity and each instance's reported state (with the events
/// a change means); the route table follows at once when routing changed.
pub async fn heartbeat(ctx: &AppCtx, node: &str, hb: &Heartbeat) -> StoreResult<()> {
    ctx.store
        .heartbeat_node(node, &hb.capacity, Utc::now())
        .await?;
    let mut changed = false;
    for report in &hb.instances {
        if let Some(before) = ctx.store.report_instance(node, report).await? {
            changed |= before.routing_changed(report);
            crate::events::record(ctx, node, report, &before).await;
        }
        if let Some(usage) = &report.usage {
            ctx.store
                .record_usage(node, &report.instance_id, usage)
                .await?;
        }
    }
    if changed {
        crate::router::refresh(ctx).await?;
    }
    super::tasks::heartbeat(ctx, node, &hb.tasks).await?;
    super::services::heartbeat(ctx, node, &hb.services).await
}

/// The instances assigned to `node`, each with everything its agent needs to run it: what its
/// row's revision resolves to in the desired state, env with secrets opened.
pub async fn assignments_for(ctx: &AppCtx, node: &str) -> StoreResult<Vec<Assignment>> {
    // The same desired state convergence reads: a row runs what its revision resolves to.
    let desired = DesiredState::load(ctx.store.as_ref()).await?;
    let apps: HashMap<&str, &AppRecord> = desired
        .all_apps
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    let mut revisions: HashMap<(String, i64), Option<RevisionRecord>> = HashMap::new();
    let mut networks: HashMap<String, Vec<String>> = HashMap::new();
    let builtin = builtin_services(ctx).await?;
    let contexts = AppContexts::load(ctx).await?;
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
        let Some(app) = apps.get(inst.app_id.as_str()).copied() else {
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
            let nets = service_networks(ctx, &builtin, &app.id).await?;
            networks.insert(app.id.clone(), nets);
        }
        let memory_mb = process.memory_mb;
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
    let desired = DesiredState::load(ctx.store.as_ref()).await?;
    let contexts = AppContexts::load(ctx).await?;
    super::tasks::assignments_for(ctx, node, &desired, &contexts).await
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
