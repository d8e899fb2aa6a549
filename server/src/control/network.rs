//! App-to-app networking (issue 25): what nodes are told so that instances find each other and
//! reach each other only where a policy allows it.
//!
//! One [`NetTable`] is computed per pass (after every route table refresh: a heartbeat that
//! changed an instance's state, a convergence pass, a route or policy change), never per node or
//! per app: the internal DNS table (`NAME.apps.internal` and `INDEX.NAME.apps.internal` -> the IPs
//! of the app's running instances), every policy resolved to instance IPs, and the nodes'
//! instance subnets. When it differs from the last one, the assignment version is bumped so the
//! nodes' long-polls answer; each node's list then carries [`NetTable::for_node`].

use paas_common::api::InstanceState;
use paas_common::network::{DnsTable, NodeNetwork, NodeSubnet, PolicyRule, INTERNAL_DOMAIN};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::state::AppCtx;
use crate::store::StoreResult;

/// One resolved policy: its rule and the nodes its source and destination instances run on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    rule: PolicyRule,
    nodes: BTreeSet<String>,
}

/// The whole network state nodes are told, computed once per pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetTable {
    dns: DnsTable,
    policies: Vec<Resolved>,
    subnets: Vec<NodeSubnet>,
}

impl NetTable {
    /// What `node` needs: the whole DNS table, the policies with an end on it, the other nodes'
    /// subnets.
    pub fn for_node(&self, node: &str) -> NodeNetwork {
        NodeNetwork {
            dns: self.dns.clone(),
            policies: self
                .policies
                .iter()
                .filter(|p| p.nodes.contains(node))
                .map(|p| p.rule.clone())
                .collect(),
            subnets: self
                .subnets
                .iter()
                .filter(|s| s.node != node)
                .cloned()
                .collect(),
        }
    }

    /// The internal DNS table (for the tests and the app detail).
    pub fn dns(&self) -> &DnsTable {
        &self.dns
    }
}

/// Recomputes the table; bumps the assignment version when it changed.
pub async fn refresh(ctx: &AppCtx) -> StoreResult<()> {
    refresh_from(ctx, &crate::router::Rows::read(ctx).await?).await
}

/// [`refresh`] from rows the route table's rebuild read already.
pub async fn refresh_from(ctx: &AppCtx, rows: &crate::router::Rows) -> StoreResult<()> {
    let table = build(ctx, rows).await?;
    let changed = {
        let mut current = ctx.network.write().unwrap_or_else(|p| p.into_inner());
        if **current == table {
            false
        } else {
            *current = std::sync::Arc::new(table);
            true
        }
    };
    if changed {
        tracing::debug!("internal network table changed");
        ctx.bump_assignments();
    }
    Ok(())
}

/// The host label under the internal domain a route names (`b` of `b.apps.internal`).
fn internal_name(host: &str) -> Option<&str> {
    let name = host.strip_suffix(INTERNAL_DOMAIN)?.strip_suffix('.')?;
    (!name.is_empty() && !name.contains('.')).then_some(name)
}

async fn build(ctx: &AppCtx, rows: &crate::router::Rows) -> StoreResult<NetTable> {
    let (instances, nodes) = (&rows.instances, &rows.nodes);
    let ips = ctx.store.instance_ips().await?;
    let live: HashMap<&str, &str> = nodes
        .iter()
        .filter(|n| n.state != "lost")
        .map(|n| (n.name.as_str(), n.address.as_str()))
        .collect();
    // app id -> (index, ip, node) of its running instances on live nodes. Every process type:
    // a worker may listen on the internal network too (Cloud Foundry routes internal routes to
    // the process the route is mapped to; here an app's internal name covers all of them).
    let mut running: HashMap<&str, Vec<(u32, &str, &str)>> = HashMap::new();
    for i in instances {
        if i.state != InstanceState::Running {
            continue;
        }
        let (Some(node), Some(ip)) = (i.node_name.as_deref(), ips.get(&i.id)) else {
            continue;
        };
        if !live.contains_key(node) {
            continue;
        }
        running
            .entry(i.app_id.as_str())
            .or_default()
            .push((i.index, ip.as_str(), node));
    }
    for list in running.values_mut() {
        list.sort();
    }
    let mut dns: DnsTable = BTreeMap::new();
    for r in &rows.routes {
        let Some(name) = internal_name(&r.host) else {
            continue;
        };
        let Some(list) = running.get(r.app_id.as_str()) else {
            continue;
        };
        let all = dns.entry(format!("{name}.{INTERNAL_DOMAIN}")).or_default();
        all.extend(list.iter().map(|(_, ip, _)| ip.to_string()));
        all.sort();
        all.dedup();
        // During a rolling restart two instances may share an index: both answer.
        for (index, ip, _) in list {
            let one = dns
                .entry(format!("{index}.{name}.{INTERNAL_DOMAIN}"))
                .or_default();
            one.push(ip.to_string());
            one.sort();
            one.dedup();
        }
    }
    let mut policies = Vec::new();
    for p in ctx.store.list_policies().await? {
        let (Some(src), Some(dst)) = (
            running.get(p.source_app_id.as_str()),
            running.get(p.destination_app_id.as_str()),
        ) else {
            continue;
        };
        let nodes = src
            .iter()
            .chain(dst)
            .map(|(_, _, n)| n.to_string())
            .collect();
        policies.push(Resolved {
            rule: PolicyRule {
                sources: src.iter().map(|(_, ip, _)| ip.to_string()).collect(),
                destinations: dst.iter().map(|(_, ip, _)| ip.to_string()).collect(),
                protocol: p.protocol,
                start_port: p.start_port,
                end_port: p.end_port,
            },
            nodes,
        });
    }
    let mut subnets: Vec<NodeSubnet> = ctx
        .store
        .node_subnets()
        .await?
        .into_iter()
        .filter_map(|(node, subnet)| {
            let address = live.get(node.as_str())?.to_string();
            Some(NodeSubnet {
                node,
                subnet,
                address,
            })
        })
        .collect();
    subnets.sort();
    Ok(NetTable {
        dns,
        policies,
        subnets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_names() {
        assert_eq!(internal_name("b.apps.internal"), Some("b"));
        assert_eq!(internal_name("apps.internal"), None);
        assert_eq!(internal_name("0.b.apps.internal"), None);
        assert_eq!(internal_name("b.localhost"), None);
    }
}
