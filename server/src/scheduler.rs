//! Placement: a pure function from the cluster's state to a node for one instance. Filter first
//! (ready, enough free memory and instance slots), then score: fewest instances of the same app on
//! the node (spread), then the least loaded node, then the name, so the result is deterministic
//! for a given input.

#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub zone: String,
    pub ready: bool,
    pub memory_mb: u64,
    pub used_memory_mb: u64,
    pub slots: u32,
    pub used_slots: u32,
    /// Instances of the app being placed already on this node.
    pub same_app: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no node is available: no node has registered")]
    NoNodes,
    #[error("no node is available: every node is lost or draining")]
    NoReadyNodes,
    #[error("no node is available with {0} MB of free memory and a free instance slot")]
    NoCapacity(u64),
}

/// Picks the node for one instance needing `memory_mb`.
pub fn place(nodes: &[NodeView], memory_mb: u64) -> Result<&NodeView, PlacementError> {
    if nodes.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    let ready: Vec<&NodeView> = nodes.iter().filter(|n| n.ready).collect();
    if ready.is_empty() {
        return Err(PlacementError::NoReadyNodes);
    }
    ready
        .into_iter()
        .filter(|n| n.used_slots < n.slots && n.used_memory_mb + memory_mb <= n.memory_mb)
        .min_by(|a, b| {
            let load = |n: &NodeView| (n.used_memory_mb * 1000) / n.memory_mb.max(1);
            (a.same_app, load(a), &a.name).cmp(&(b.same_app, load(b), &b.name))
        })
        .ok_or(PlacementError::NoCapacity(memory_mb))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, used: u64, same: u32) -> NodeView {
        NodeView {
            name: name.into(),
            zone: "z".into(),
            ready: true,
            memory_mb: 1024,
            used_memory_mb: used,
            slots: 10,
            used_slots: 0,
            same_app: same,
        }
    }

    #[test]
    fn spreads_instances_of_one_app_first() {
        let nodes = [node("a", 0, 1), node("b", 512, 0)];
        assert_eq!(place(&nodes, 256).unwrap().name, "b");
    }

    #[test]
    fn balances_load_then_name() {
        assert_eq!(place(&[node("a", 512, 0), node("b", 0, 0)], 256).unwrap().name, "b");
        assert_eq!(place(&[node("b", 0, 0), node("a", 0, 0)], 256).unwrap().name, "a");
    }

    #[test]
    fn filters_unfit_and_unready_nodes() {
        let mut lost = node("a", 0, 0);
        lost.ready = false;
        assert_eq!(place(&[lost.clone()], 256).unwrap_err(), PlacementError::NoReadyNodes);
        assert_eq!(place(&[], 256).unwrap_err(), PlacementError::NoNodes);
        assert_eq!(place(&[node("a", 900, 0)], 256).unwrap_err(), PlacementError::NoCapacity(256));
        let mut full = node("c", 0, 0);
        full.used_slots = 10;
        assert_eq!(place(&[lost, full, node("d", 0, 0)], 256).unwrap().name, "d");
    }
}
