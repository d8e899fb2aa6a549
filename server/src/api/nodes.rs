use actix_web::{HttpRequest, HttpResponse};
use paas_common::api::{NodeInfo, NodeList};
use std::collections::HashMap;

use super::page::{self, Page};
use super::Ctx;
use crate::auth::AuthUser;
use crate::error::ApiResult;
use crate::store::{Store, StoreResult};

/// Memory (MB, by each app's memory setting) and instance count placed on each node, by node
/// name; the API and the dashboard show the same figures.
pub(crate) async fn node_usage(store: &dyn Store) -> StoreResult<HashMap<String, (u64, u32)>> {
    let apps = store.list_apps().await?;
    let mem: HashMap<&str, u64> = apps.iter().map(|a| (a.id.as_str(), a.memory_mb)).collect();
    let mut used: HashMap<String, (u64, u32)> = HashMap::new();
    for i in store.list_instances().await? {
        if let Some(n) = i.node_name {
            let e = used.entry(n).or_default();
            e.0 += mem.get(i.app_id.as_str()).copied().unwrap_or(0);
            e.1 += 1;
        }
    }
    Ok(used)
}

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", summary = "Nodes with capacity and state", params(crate::api::page::PageParams), responses((status = 200, body = paas_common::api::NodeList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(ctx: Ctx, _user: AuthUser, req: HttpRequest) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let mut nodes = ctx.store.list_nodes().await?;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let total = nodes.len() as u64;
    let (nodes, next) = page.slice(nodes, |n| n.name.clone(), false);
    let used = node_usage(ctx.store.as_ref()).await?;
    let nodes = nodes
        .into_iter()
        .map(|n| {
            let (memory_used_mb, instances) = used.get(&n.name).copied().unwrap_or_default();
            NodeInfo {
                name: n.name,
                address: n.address,
                zone: n.zone,
                state: n.state,
                memory_mb: n.capacity.memory_mb,
                memory_used_mb,
                disk_mb: n.capacity.disk_mb,
                instance_slots: n.capacity.instance_slots,
                instances,
                last_heartbeat: n.last_heartbeat,
                labels: n.labels,
            }
        })
        .collect();
    Ok(page::respond(&req, &NodeList { nodes }, next, Some(total)))
}
