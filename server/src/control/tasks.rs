//! One-off tasks in the control plane (issue 21): placement by the scheduler in the convergence
//! pass (leader only, fenced), what nodes are told (`Assignments::tasks`) and what they report.
//!
//! **At most once.** A task is placed once (the store places only a pending task without a node)
//! and never again: a task whose node is lost ends FAILED `node lost` instead of moving, and a
//! finished task leaves its node's list, which is what tells the node to remove its container.
//! The node itself never starts a task twice (see the agent's `tasks` module).

use chrono::Utc;
use paas_common::agent::{Assignment, TaskAssignment, TaskReport};
use paas_common::api::{LogLine, TaskState};
use std::collections::{BTreeMap, HashMap};

use crate::control::desired::DesiredState;
use crate::control::scheduler::{self, Ask, NodeView, Spread};
use crate::state::AppCtx;
use crate::store::{AppRecord, Fence, NodeRecord, StoreResult, TaskRecord};

/// The reason a task on a lost node ends with.
pub const NODE_LOST: &str = "node lost";
/// The reason a terminated task ends with.
pub const TERMINATED: &str = "terminated";

/// Counts every placed, unfinished task in its node's reservations, as an instance counts.
pub fn book(views: &mut [NodeView], tasks: &[TaskRecord]) {
    for t in tasks {
        let Some(node) = &t.node_name else { continue };
        if let Some(v) = views.iter_mut().find(|v| &v.name == node) {
            v.used_memory_mb += t.memory_mb;
            v.used_disk_mb += t.disk_mb;
            v.used_slots += 1;
        }
    }
}

/// The convergence pass's part for tasks: fail those on lost nodes, place the pending ones.
/// `views` are the nodes with every instance and placed task booked. Returns whether any
/// node's list changed.
pub async fn converge(
    ctx: &AppCtx,
    fence: Option<&Fence>,
    nodes: &[NodeRecord],
    desired: &DesiredState,
    tasks: &[TaskRecord],
    views: &mut [NodeView],
) -> StoreResult<bool> {
    let mut changed = false;
    let live: HashMap<&str, &NodeRecord> = nodes
        .iter()
        .filter(|n| n.state != "lost")
        .map(|n| (n.name.as_str(), n))
        .collect();
    let apps: HashMap<&str, &AppRecord> = desired
        .all_apps
        .iter()
        .map(|a| (a.id.as_str(), a))
        .collect();
    let no_labels = BTreeMap::new();
    for t in tasks {
        match &t.node_name {
            // Never moved: whatever it did there may have happened, so it is not run again.
            Some(node) if !live.contains_key(node.as_str()) => {
                if let Some(after) = ctx
                    .store
                    .fail_task(fence, &t.id, NODE_LOST, "platform")
                    .await?
                {
                    tracing::warn!(task = %t.id, node = %node, "task failed: its node is lost");
                    log(
                        ctx,
                        &after,
                        format!("Task {} failed: node {node} lost", after.sequence),
                    )
                    .await;
                    changed = true;
                }
            }
            Some(_) => {}
            None => {
                let labels = desired
                    .lifecycles()
                    .get(&t.app_id)
                    .map_or(&no_labels, |l| &l.placement_labels);
                let ask = Ask {
                    memory_mb: t.memory_mb,
                    disk_mb: t.disk_mb,
                    labels,
                };
                // A task does not spread: it runs once, anywhere it fits.
                let spread = Spread::new(views.len());
                match scheduler::place(views, &ask, &spread, scheduler::DEFAULT_MAX_STARTING) {
                    Ok(vi) => {
                        let node = views[vi].name.clone();
                        if ctx
                            .store
                            .place_task(fence, &t.id, Some(&node), None)
                            .await?
                        {
                            views[vi].book(&ask);
                            tracing::info!(task = %t.id, app = ?apps.get(t.app_id.as_str()).map(|a| &a.name), node = %node, "placed task");
                            changed = true;
                        }
                    }
                    Err(e) => {
                        let why = e.to_string();
                        if t.reason.as_deref() != Some(why.as_str()) {
                            ctx.store.place_task(fence, &t.id, None, Some(&why)).await?;
                        }
                    }
                }
            }
        }
    }
    Ok(changed)
}

/// Applies a node's reports of its tasks; a task that ended leaves the node's list (its
/// container is removed), so the nodes are told.
pub async fn heartbeat(ctx: &AppCtx, node: &str, reports: &[TaskReport]) -> StoreResult<()> {
    let mut ended = false;
    for r in reports {
        let Some(after) = ctx.store.report_task(node, r).await? else {
            continue;
        };
        let line = match after.state {
            TaskState::Running => format!("Task {} is running on {node}", after.sequence),
            TaskState::Succeeded => format!("Task {} succeeded", after.sequence),
            _ => format!(
                "Task {} failed: {}",
                after.sequence,
                after.reason.as_deref().unwrap_or("unknown")
            ),
        };
        log(ctx, &after, line).await;
        ended |= after.state.finished();
    }
    if ended {
        ctx.bump_assignments();
    }
    Ok(())
}

/// A platform line about a task in its app's logs, with the task's own source.
pub async fn log(ctx: &AppCtx, t: &TaskRecord, message: String) {
    ctx.logs
        .publish(
            &t.app_id,
            LogLine {
                timestamp: Utc::now(),
                source: format!("TASK/{}", t.sequence),
                stream: "out".into(),
                message,
                id: 0,
            },
        )
        .await;
}

/// The unfinished tasks placed on `node`, each with everything its agent needs to run it.
pub(super) async fn assignments_for(
    ctx: &AppCtx,
    node: &str,
    snap: &super::nodes::Snapshot,
) -> StoreResult<Vec<TaskAssignment>> {
    let (desired, contexts, builtin) = (&snap.desired, &snap.contexts, &snap.builtin);
    let mut out = Vec::new();
    for t in ctx.store.active_tasks().await? {
        if t.node_name.as_deref() != Some(node) {
            continue;
        }
        let Some(app) = snap.app(&t.app_id) else {
            continue;
        };
        let mut env = BTreeMap::new();
        for (k, v) in &t.env {
            match ctx.secrets.open(&app.id, v) {
                Ok(plain) => {
                    env.insert(k.clone(), plain);
                }
                Err(e) => {
                    tracing::error!(app = %app.name, key = %k, error = %e, "secret env value left out")
                }
            }
        }
        env.insert("PAAS_APP_REVISION".into(), t.revision.to_string());
        env.insert("PAAS_TASK_ID".into(), t.sequence.to_string());
        env.insert("PAAS_TASK_NAME".into(), t.name.clone());
        out.push(TaskAssignment {
            sequence: t.sequence,
            name: t.name.clone(),
            run: Assignment {
                instance_id: t.id.clone(),
                app: app.name.clone(),
                process_type: "task".into(),
                index: 0,
                droplet: t.droplet.clone(),
                command: t.command.clone(),
                env,
                memory_mb: t.memory_mb,
                disk_mb: t.disk_mb,
                cpu_shares: t.memory_mb.clamp(2, 1024 * 4),
                pids_limit: ctx.settings.instance_pids_limit,
                // A task has no health check: it runs until its command ends.
                health: paas_common::agent::HealthSettings {
                    check: paas_common::agent::HealthCheck::Process,
                    ..Default::default()
                },
                image: desired.image(&t.droplet).cloned(),
                log_rate_limit_bytes: desired.lifecycle(&app.id).log_rate_limit_bytes,
                context: Some(contexts.of(app, t.revision)),
                // A release phase or a migration task needs the app's databases.
                networks: super::nodes::service_networks(ctx, builtin, &app.id).await?,
                // A task runs its command alone, as Cloud Foundry's tasks do by default.
                sidecars: Vec::new(),
            },
        });
    }
    Ok(out)
}

/// The task as the API shows it.
pub fn info(t: &TaskRecord) -> paas_common::api::TaskInfo {
    paas_common::api::TaskInfo {
        id: t.sequence,
        name: t.name.clone(),
        command: t.command.clone(),
        state: t.state,
        revision: t.revision,
        memory_mb: t.memory_mb,
        disk_mb: t.disk_mb,
        node: t.node_name.clone(),
        exit_code: t.exit_code,
        reason: t.reason.clone(),
        kind: t.kind.clone(),
        created_by: t.created_by.clone(),
        created_at: t.created_at,
        updated_at: t.updated_at,
    }
}
