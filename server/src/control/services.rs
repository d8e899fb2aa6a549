//! Built-in service containers in the control plane (issue 22): the built-in broker's instances
//! (`builtin_service_instances`) are placed by the scheduler like instances, with their plan's
//! memory and disk, booked in their node's reservations (a slot each too), listed to their node
//! in `Assignments::services`, and reported back in heartbeats. A service is never moved: its
//! data lives on its node's volume, so a lost node's service waits for that node to return.

use paas_common::agent::{ServiceAssignment, ServiceJob, ServiceReport};
use std::collections::BTreeMap;

use crate::control::scheduler::{self, Ask, NodeView, Spread};
use crate::state::AppCtx;
use crate::store::{BuiltinInstanceRecord, Fence, StoreResult};

/// The state of an instance being removed: no longer assigned nor booked; its row goes once its
/// node stops reporting the container.
pub const DEPROVISIONING: &str = "deprovisioning";

fn booked(s: &BuiltinInstanceRecord) -> bool {
    s.state != DEPROVISIONING
}

/// Counts every placed service container in its node's reservations, as an instance counts.
pub fn book(views: &mut [NodeView], services: &[BuiltinInstanceRecord]) {
    for s in services.iter().filter(|s| booked(s)) {
        let Some(node) = &s.node_name else { continue };
        if let Some(v) = views.iter_mut().find(|v| &v.name == node) {
            v.used_memory_mb += s.memory_mb;
            v.used_disk_mb += s.disk_mb;
            v.used_slots += 1;
        }
    }
}

/// Places the unplaced service instances (leader only, fenced). `views` have every instance,
/// task and placed service booked. Returns whether any node's list changed.
pub async fn converge(
    ctx: &AppCtx,
    fence: Option<&Fence>,
    services: &[BuiltinInstanceRecord],
    views: &mut [NodeView],
) -> StoreResult<bool> {
    let mut changed = false;
    let no_labels = BTreeMap::new();
    for s in services
        .iter()
        .filter(|s| booked(s) && s.node_name.is_none())
    {
        let ask = Ask {
            memory_mb: s.memory_mb,
            disk_mb: s.disk_mb,
            labels: &no_labels,
        };
        let spread = Spread::new(views.len());
        match scheduler::place(views, &ask, &spread, scheduler::DEFAULT_MAX_STARTING) {
            Ok(vi) => {
                let node = views[vi].name.clone();
                if ctx
                    .store
                    .place_builtin_instance(fence, &s.id, Some(&node), None)
                    .await?
                {
                    views[vi].book(&ask);
                    tracing::info!(service = %s.id, kind = %s.service, node = %node, "placed service container");
                    changed = true;
                }
            }
            Err(e) => {
                let why = e.to_string();
                if s.placement_error.as_deref() != Some(why.as_str()) {
                    ctx.store
                        .place_builtin_instance(fence, &s.id, None, Some(&why))
                        .await?;
                }
            }
        }
    }
    Ok(changed)
}

/// The service containers `node` should run.
pub async fn assignments_for(ctx: &AppCtx, node: &str) -> StoreResult<Vec<ServiceAssignment>> {
    let mut out = Vec::new();
    let jobs = ctx.store.pending_builtin_jobs().await?;
    for s in ctx.store.builtin_instances().await? {
        if !booked(&s) || s.node_name.as_deref() != Some(node) {
            continue;
        }
        let admin_password = match ctx.secrets.open(&s.id, &s.admin_password) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(service = %s.id, error = %e, "cannot open the service's admin password");
                continue;
            }
        };
        let jobs = jobs
            .iter()
            .filter(|j| j.instance_id == s.id)
            .map(|j| ServiceJob {
                id: j.id.clone(),
                kind: j.kind.clone(),
            })
            .collect();
        out.push(ServiceAssignment {
            service_id: s.id,
            kind: s.service,
            memory_mb: s.memory_mb,
            disk_mb: s.disk_mb,
            admin_password,
            jobs,
        });
    }
    Ok(out)
}

/// Applies a node's reports of its service containers; a deprovisioned service the node no
/// longer reports is gone (container and volume removed), and so is its row.
pub async fn heartbeat(ctx: &AppCtx, node: &str, reports: &[ServiceReport]) -> StoreResult<()> {
    for r in reports {
        ctx.store.report_builtin_service(node, r).await?;
    }
    for s in ctx.store.builtin_instances().await? {
        if s.state == DEPROVISIONING
            && s.node_name.as_deref() == Some(node)
            && !reports.iter().any(|r| r.service_id == s.id)
        {
            tracing::info!(service = %s.id, node, "service container and data removed");
            ctx.store.delete_builtin_instance(&s.id).await?;
        }
    }
    Ok(())
}
