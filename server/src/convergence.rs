//! The convergence loop: compares what should run (started apps x desired instances of their
//! current revision) with the instance rows, and creates, places, replaces and removes rows until
//! they match. Level-triggered: it looks at the whole state every pass, so a missed wake-up or a
//! controller restart is healed by the next pass. Agents make their engines follow the rows.

use chrono::{Duration, Utc};
use paas_common::api::{AppState, InstanceState};
use std::collections::{HashMap, HashSet};
use std::time::Duration as StdDuration;

use crate::scheduler::{self, NodeView};
use crate::state::AppCtx;
use crate::store::{Event, InstanceRecord, StoreResult};

const TICK: StdDuration = StdDuration::from_secs(1);

/// Runs forever; each pass is also triggered early by `ctx.converge`.
pub async fn run(ctx: std::sync::Arc<AppCtx>) {
    let mut passes: u64 = 0;
    loop {
        match converge_once(&ctx).await {
            Ok(changed) => {
                // Routes first: a removed instance must leave the route table before agents hear
                // of it and stop its container, or requests would be sent to a stopping instance.
                if let Err(e) = crate::router::refresh(&ctx).await {
                    tracing::warn!(error = %e, "route table refresh failed");
                }
                if changed {
                    ctx.bump_assignments();
                }
            }
            Err(e) => tracing::error!(error = %e, "convergence pass failed"),
        }
        passes += 1;
        if passes.is_multiple_of(60) {
            if let Err(e) = ctx.store.trim_logs(ctx.settings.log_retention_lines).await {
                tracing::warn!(error = %e, "log trim failed");
            }
        }
        tokio::select! {
            _ = ctx.converge.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One pass. Returns whether any placement changed (agents must be told).
pub async fn converge_once(ctx: &AppCtx) -> StoreResult<bool> {
    let store = &ctx.store;
    let grace = Duration::seconds(ctx.settings.node_grace_secs as i64);
    for lost in store.mark_lost_nodes(Utc::now() - grace).await? {
        tracing::warn!(node = %lost, "node lost: no heartbeat within the grace period");
        store
            .add_event(&Event {
                app_name: None,
                actor: "platform".into(),
                kind: "node.lost".into(),
                message: format!("node {lost} missed its heartbeats for {}s", grace.num_seconds()),
            })
            .await?;
    }

    let nodes = store.list_nodes().await?;
    let apps = store.list_apps().await?;
    let mut instances = store.list_instances().await?;
    let ready: HashSet<&str> = nodes.iter().filter(|n| n.state == "ready").map(|n| n.name.as_str()).collect();
    let app_by_id: HashMap<&str, _> = apps.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut changed = false;

    // Remove rows that should not exist: app stopped or gone, old revision, index beyond the
    // desired count, or on a lost node (a replacement row is created below).
    let mut keep = Vec::with_capacity(instances.len());
    for inst in instances.drain(..) {
        let wanted = app_by_id.get(inst.app_id.as_str()).is_some_and(|a| {
            a.state == AppState::Started && a.current_revision == Some(inst.revision) && inst.index < a.desired_instances
        });
        let on_lost_node = inst.node_name.as_deref().is_some_and(|n| !ready.contains(n));
        if wanted && !on_lost_node {
            keep.push(inst);
            continue;
        }
        if on_lost_node && wanted {
            let app = app_by_id.get(inst.app_id.as_str()).map(|a| a.name.clone());
            store
                .add_event(&Event {
                    app_name: app,
                    actor: "platform".into(),
                    kind: "instance.reschedule".into(),
                    message: format!(
                        "instance {} was on lost node {}; placing a replacement",
                        inst.index,
                        inst.node_name.as_deref().unwrap_or("?")
                    ),
                })
                .await?;
        }
        store.delete_instance(&inst.id).await?;
        changed = true;
    }
    let mut instances = keep;

    // Memory and slots in use per node, for placement.
    let mut views: Vec<NodeView> = nodes
        .iter()
        .map(|n| NodeView {
            name: n.name.clone(),
            zone: n.zone.clone(),
            ready: n.state == "ready",
            memory_mb: n.capacity.memory_mb,
            used_memory_mb: 0,
            slots: n.capacity.instance_slots,
            used_slots: 0,
            same_app: 0,
        })
        .collect();
    for inst in &instances {
        if let (Some(node), Some(app)) = (&inst.node_name, app_by_id.get(inst.app_id.as_str())) {
            if let Some(v) = views.iter_mut().find(|v| &v.name == node) {
                v.used_memory_mb += app.memory_mb;
                v.used_slots += 1;
            }
        }
    }

    for app in &apps {
        let Some(rev) = app.current_revision else { continue };
        if app.state != AppState::Started {
            continue;
        }
        let present: HashSet<u32> = instances.iter().filter(|i| i.app_id == app.id).map(|i| i.index).collect();
        for idx in 0..app.desired_instances {
            if !present.contains(&idx) {
                let now = Utc::now();
                let row = InstanceRecord {
                    id: uuid::Uuid::new_v4().to_string(),
                    app_id: app.id.clone(),
                    revision: rev,
                    process_type: "web".into(),
                    index: idx,
                    node_name: None,
                    state: InstanceState::Pending,
                    container_id: None,
                    host_port: None,
                    restarts: 0,
                    last_exit: None,
                    placement_error: None,
                    since: now,
                    created_at: now,
                };
                store.insert_instance(&row).await?;
                instances.push(row);
            }
        }
    }
    // Place every unplaced row (new ones and ones that found no node before); instance 0 of
    // every app before further instances, so one app cannot starve another.
    let mut unplaced: Vec<&mut InstanceRecord> = instances.iter_mut().filter(|i| i.node_name.is_none()).collect();
    unplaced.sort_by_key(|i| (i.index, i.created_at));
    for inst in unplaced {
        let Some(app) = app_by_id.get(inst.app_id.as_str()) else { continue };
        let result = {
            let counts = same_app_counts(ctx, &inst.app_id).await?;
            for v in views.iter_mut() {
                v.same_app = counts.get(&v.name).copied().unwrap_or(0);
            }
            scheduler::place(&views, app.memory_mb).map(|n| n.name.clone())
        };
        match result {
            Ok(node) => {
                store.place_instance(&inst.id, Some(&node), None).await?;
                if let Some(v) = views.iter_mut().find(|v| v.name == node) {
                    v.used_memory_mb += app.memory_mb;
                    v.used_slots += 1;
                }
                tracing::info!(app = %app.name, index = inst.index, node = %node, "placed instance");
                inst.node_name = Some(node);
                changed = true;
            }
            Err(e) => {
                let msg = e.to_string();
                if inst.placement_error.as_deref() != Some(msg.as_str()) {
                    store.place_instance(&inst.id, None, Some(&msg)).await?;
                    inst.placement_error = Some(msg);
                }
            }
        }
    }
    Ok(changed)
}

async fn same_app_counts(ctx: &AppCtx, app_id: &str) -> StoreResult<HashMap<String, u32>> {
    let mut counts = HashMap::new();
    for i in ctx.store.app_instances(app_id).await? {
        if let Some(n) = i.node_name {
            *counts.entry(n).or_insert(0) += 1;
        }
    }
    Ok(counts)
}
