use actix_web::{HttpRequest, HttpResponse};
use paas_common::api::{NodeInfo, NodeList};

use super::page::{self, Page};
use super::Ctx;
use crate::auth::AuthUser;
use crate::error::ApiResult;

#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", summary = "Nodes with capacity and state", params(crate::api::page::PageParams), responses((status = 200, body = paas_common::api::NodeList, headers(("Link" = String, description = "`<URL>; rel=\"next\"` when there is a next page"), ("X-Total-Count" = u64, description = "Items across all pages"))), (status = "4XX", description = "A client error; `code` says which", body = paas_common::ApiError), (status = "5XX", description = "A server error", body = paas_common::ApiError)))]
pub async fn list(ctx: Ctx, _user: AuthUser, req: HttpRequest) -> ApiResult<HttpResponse> {
    let page = Page::from_request(&req)?;
    let mut nodes = ctx.store.list_nodes().await?;
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let total = nodes.len() as u64;
    let (nodes, next) = page.slice(nodes, |n| n.name.clone(), false);
    let used = crate::control::convergence::node_reservations(ctx.store.as_ref()).await?;
    let services = ctx.store.builtin_instances().await?;
    let nodes = nodes
        .into_iter()
        .map(|n| {
            let (memory_used_mb, disk_used_mb, instances) =
                used.get(&n.name).map_or((0, 0, 0), |v| {
                    (v.used_memory_mb, v.used_disk_mb, v.used_slots)
                });
            let mine = services.iter().filter(|s| {
                s.state != crate::control::services::DEPROVISIONING
                    && s.node_name.as_deref() == Some(n.name.as_str())
            });
            let (services, services_memory_mb, services_disk_mb) = mine
                .fold((0, 0, 0), |(c, m, d), s| {
                    (c + 1, m + s.memory_mb, d + s.disk_mb)
                });
            NodeInfo {
                services,
                services_memory_mb,
                services_disk_mb,
                name: n.name,
                address: n.address,
                zone: n.zone,
                state: n.state,
                memory_mb: n.capacity.memory_mb,
                memory_used_mb,
                disk_mb: n.capacity.disk_mb,
                disk_used_mb,
                instance_slots: n.capacity.instance_slots,
                instances,
                last_heartbeat: n.last_heartbeat,
                labels: n.labels,
            }
        })
        .collect();
    Ok(page::respond(&req, &NodeList { nodes }, next, Some(total)))
}
