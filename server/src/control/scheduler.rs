//! Placement: a pure function from the cluster's state to a node for one instance. No I/O and no
//! clock, so it is deterministic for a given input and cheap enough to run for every instance of
//! every pass (see `benches/scheduler.rs`).
//!
//! Filter first: the node is ready (not draining, drained or lost), carries every placement label
//! the app asks for, has the memory, disk and an instance slot free, and is not already starting
//! `max_starting` containers (a node busy starting many containers starts each of them slower;
//! the instance waits for the next pass instead). Then score, lowest wins: fewest instances of the
//! same app in the node's zone (so a zone's loss leaves the app up), then on the node, then the
//! least used resource share, then the name.
//!
//! Instance 0 of every app before further instances is the caller's ordering (see
//! `convergence`), since it concerns the sequence of calls, not one call.

use std::collections::{BTreeMap, HashMap};

/// One node as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub name: String,
    pub zone: String,
    /// Accepts new instances (state `ready`).
    pub ready: bool,
    pub labels: BTreeMap<String, String>,
    pub memory_mb: u64,
    pub used_memory_mb: u64,
    pub disk_mb: u64,
    pub used_disk_mb: u64,
    pub slots: u32,
    pub used_slots: u32,
    /// Instances placed here that are not yet running (pending or starting).
    pub starting: u32,
}

impl NodeView {
    /// A node as its record offers it, with nothing reserved yet.
    pub fn from_record(n: &crate::store::NodeRecord) -> Self {
        NodeView {
            name: n.name.clone(),
            zone: n.zone.clone(),
            ready: n.state == "ready",
            labels: n.labels.clone(),
            memory_mb: n.capacity.memory_mb,
            used_memory_mb: 0,
            disk_mb: n.capacity.disk_mb,
            used_disk_mb: 0,
            slots: n.capacity.instance_slots,
            used_slots: 0,
            starting: 0,
        }
    }

    /// The node's most used resource, in thousandths.
    fn load(&self) -> u64 {
        let share = |used: u64, cap: u64| used.saturating_mul(1000) / cap.max(1);
        share(self.used_memory_mb, self.memory_mb)
            .max(share(self.used_disk_mb, self.disk_mb))
            .max(share(u64::from(self.used_slots), u64::from(self.slots)))
    }

    /// Books an instance on the node, so the next placement in the same pass sees it.
    pub fn book(&mut self, ask: &Ask<'_>) {
        self.used_memory_mb += ask.memory_mb;
        self.used_disk_mb += ask.disk_mb;
        self.used_slots += 1;
        self.starting += 1;
    }
}

/// What one instance needs.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Labels the node must carry with these values.
    pub labels: &'a BTreeMap<String, String>,
}

/// Where the app being placed already runs: instances per node (by index in the node slice)
/// and per zone. Sparse: a pass holds one per app, and a dense row per app was apps x nodes.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    pub per_node: HashMap<usize, u32>,
    pub per_zone: HashMap<String, u32>,
}

impl Spread {
    /// An empty spread over `node_count` nodes (only a node index below it is ever counted).
    pub fn new(_node_count: usize) -> Self {
        Self::default()
    }

    /// Counts an instance of the app on node `i`.
    pub fn add(&mut self, nodes: &[NodeView], i: usize) {
        if i < nodes.len() {
            *self.per_node.entry(i).or_insert(0) += 1;
        }
        if let Some(node) = nodes.get(i) {
            *self.per_zone.entry(node.zone.clone()).or_insert(0) += 1;
        }
    }
}

/// Starts in flight per node by default.
pub const DEFAULT_MAX_STARTING: u32 = 8;

/// How every `PlacementError` begins, so a reason stored on an instance reads the same
/// whichever filter refused it.
const NOT_AVAILABLE: &str = "no node is available";
/// How a refusal that resolves by itself begins (see [`is_transient`]).
const BUSY: &str = "no node is available right now";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("{NOT_AVAILABLE}: no node has registered")]
    NoNodes,
    #[error("{NOT_AVAILABLE}: every node is lost, draining or drained")]
    NoReadyNodes,
    #[error("{NOT_AVAILABLE} with the placement labels {0}")]
    NoMatchingLabels(String),
    #[error("{NOT_AVAILABLE}: {0}")]
    NoCapacity(Shortfall),
    #[error("{BUSY}: every node that fits is busy starting {0} instances")]
    Busy(u32),
}

/// Whether a stored placement error goes away without anyone acting (nodes busy starting
/// instances), as opposed to one that needs a change (a smaller ask, a node, a label).
pub fn is_transient(reason: &str) -> bool {
    reason.starts_with(BUSY)
}

/// What an instance asked for and the most any ready node with the labels had free, so the
/// error can say what would make it fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// The most free memory on one such node.
    pub free_memory_mb: u64,
    /// The most free disk on one such node.
    pub free_disk_mb: u64,
    /// Whether any such node has an instance slot free.
    pub free_slot: bool,
}

impl Shortfall {
    fn new(ask: &Ask<'_>) -> Self {
        Self {
            memory_mb: ask.memory_mb,
            disk_mb: ask.disk_mb,
            free_memory_mb: 0,
            free_disk_mb: 0,
            free_slot: false,
        }
    }

    fn count(&mut self, n: &NodeView) {
        self.free_memory_mb = self
            .free_memory_mb
            .max(n.memory_mb.saturating_sub(n.used_memory_mb));
        self.free_disk_mb = self
            .free_disk_mb
            .max(n.disk_mb.saturating_sub(n.used_disk_mb));
        self.free_slot |= n.used_slots < n.slots;
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let memory = self.memory_mb > self.free_memory_mb;
        let disk = self.disk_mb > self.free_disk_mb;
        let (m, d, fm, fd) = (
            self.memory_mb,
            self.disk_mb,
            self.free_memory_mb,
            self.free_disk_mb,
        );
        match (memory, disk) {
            (true, false) => write!(
                f,
                "needs {m} MB of memory, the most free on a ready node is {fm} MB: \
                 lower the memory (-m) or add a node"
            ),
            (false, true) => write!(
                f,
                "needs {d} MB of disk, the most free on a ready node is {fd} MB: \
                 lower the disk quota or add a node"
            ),
            (true, true) => write!(
                f,
                "needs {m} MB of memory and {d} MB of disk, the most free on a ready node is \
                 {fm} MB of memory and {fd} MB of disk: lower them or add a node"
            ),
            (false, false) if !self.free_slot => write!(
                f,
                "every ready node's instance slots are taken: add a node or raise \
                 PAAS_NODE_INSTANCE_SLOTS"
            ),
            (false, false) => write!(
                f,
                "no ready node has {m} MB of memory, {d} MB of disk and an instance slot free \
                 at once (the most free: {fm} MB of memory, {fd} MB of disk): add a node"
            ),
        }
    }
}

/// Picks the node (its index in `nodes`) for one instance.
pub fn place(
    nodes: &[NodeView],
    ask: &Ask<'_>,
    spread: &Spread,
    max_starting: u32,
) -> Result<usize, PlacementError> {
    if nodes.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    // One pass that remembers the furthest filter any node got through, for the error.
    let mut furthest = 0u8;
    let mut shortfall = Shortfall::new(ask);
    let mut best: Option<(usize, (u32, u32, u64))> = None;
    for (i, n) in nodes.iter().enumerate() {
        if !n.ready {
            continue;
        }
        furthest = furthest.max(1);
        if !ask.labels.iter().all(|(k, v)| n.labels.get(k) == Some(v)) {
            continue;
        }
        furthest = furthest.max(2);
        shortfall.count(n);
        let fits = n.used_slots < n.slots
            && n.used_memory_mb + ask.memory_mb <= n.memory_mb
            && n.used_disk_mb + ask.disk_mb <= n.disk_mb;
        if !fits {
            continue;
        }
        furthest = furthest.max(3);
        if n.starting >= max_starting {
            continue;
        }
        let zone = spread.per_zone.get(&n.zone).copied().unwrap_or(0);
        let score = (
            zone,
            spread.per_node.get(&i).copied().unwrap_or(0),
            n.load(),
        );
        let better = match &best {
            None => true,
            Some((j, s)) => (score, &n.name) < (*s, &nodes[*j].name),
        };
        if better {
            best = Some((i, score));
        }
    }
    match (best, furthest) {
        (Some((i, _)), _) => Ok(i),
        (None, 0) => Err(PlacementError::NoReadyNodes),
        (None, 1) => Err(PlacementError::NoMatchingLabels(
            ask.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        )),
        (None, 2) => Err(PlacementError::NoCapacity(shortfall)),
        (None, _) => Err(PlacementError::Busy(max_starting)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str) -> NodeView {
        NodeView {
            name: name.into(),
            zone: zone.into(),
            ready: true,
            labels: BTreeMap::new(),
            memory_mb: 1024,
            used_memory_mb: 0,
            disk_mb: 4096,
            used_disk_mb: 0,
            slots: 10,
            used_slots: 0,
            starting: 0,
        }
    }

    const NO_LABELS: &BTreeMap<String, String> = &BTreeMap::new();

    fn ask(memory_mb: u64) -> Ask<'static> {
        Ask {
            memory_mb,
            disk_mb: 512,
            labels: NO_LABELS,
        }
    }

    /// Places `count` instances of one app, booking each, and returns the chosen node names.
    fn place_many(nodes: &mut [NodeView], count: usize) -> Vec<String> {
        let mut spread = Spread::new(nodes.len());
        (0..count)
            .map(|_| {
                let i = place(nodes, &ask(128), &spread, DEFAULT_MAX_STARTING).unwrap();
                nodes[i].book(&ask(128));
                spread.add(nodes, i);
                nodes[i].name.clone()
            })
            .collect()
    }

    #[test]
    fn fit_filters_memory_disk_and_slots() {
        let mut low_mem = node("a", "z");
        low_mem.used_memory_mb = 900;
        let mut low_disk = node("b", "z");
        low_disk.used_disk_mb = 3800;
        let mut no_slot = node("c", "z");
        no_slot.used_slots = 10;
        let spread = Spread::new(4);
        let nodes = [low_mem.clone(), low_disk.clone(), no_slot.clone()];
        let err = place(&nodes, &ask(256), &spread, 8).unwrap_err();
        assert_eq!(
            err,
            PlacementError::NoCapacity(Shortfall {
                memory_mb: 256,
                disk_mb: 512,
                free_memory_mb: 1024,
                free_disk_mb: 4096,
                free_slot: true,
            })
        );
        // Each node lacks something else: no one node has it all.
        assert!(
            err.to_string().starts_with(
                "no node is available: no ready node has 256 MB of memory, 512 MB of disk and \
                 an instance slot free at once"
            ),
            "{err}"
        );
        let nodes = [low_mem, low_disk, no_slot, node("d", "z")];
        assert_eq!(place(&nodes, &ask(256), &spread, 8).unwrap(), 3);
        // Exactly full still fits.
        let mut exact = node("e", "z");
        exact.used_memory_mb = 768;
        assert_eq!(place(&[exact], &ask(256), &Spread::new(1), 8).unwrap(), 0);
    }

    #[test]
    fn capacity_errors_say_what_would_fit() {
        let mut a = node("a", "z");
        a.used_memory_mb = 924;
        let mut b = node("b", "z");
        b.used_memory_mb = 1000;
        let msg = |nodes: &[NodeView], ask: &Ask<'_>| {
            place(nodes, ask, &Spread::new(nodes.len()), 8)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            msg(&[a.clone(), b.clone()], &ask(256)),
            "no node is available: needs 256 MB of memory, the most free on a ready node is \
             100 MB: lower the memory (-m) or add a node"
        );
        let big_disk = Ask {
            memory_mb: 64,
            disk_mb: 5000,
            labels: NO_LABELS,
        };
        assert_eq!(
            msg(std::slice::from_ref(&a), &big_disk),
            "no node is available: needs 5000 MB of disk, the most free on a ready node is \
             4096 MB: lower the disk quota or add a node"
        );
        let both = Ask {
            memory_mb: 4096,
            disk_mb: 5000,
            labels: NO_LABELS,
        };
        assert!(msg(std::slice::from_ref(&a), &both)
            .contains("needs 4096 MB of memory and 5000 MB of disk"));
        let mut full = node("c", "z");
        full.used_slots = 10;
        assert_eq!(
            msg(&[full], &ask(64)),
            "no node is available: every ready node's instance slots are taken: add a node or \
             raise PAAS_NODE_INSTANCE_SLOTS"
        );
        // Unready nodes do not count as room.
        let mut roomy = node("d", "z");
        roomy.ready = false;
        assert!(msg(&[roomy, b], &ask(256)).contains("the most free on a ready node is 24 MB"));
    }

    #[test]
    fn only_busy_is_transient() {
        assert!(is_transient(&PlacementError::Busy(8).to_string()));
        for e in [
            PlacementError::NoNodes,
            PlacementError::NoReadyNodes,
            PlacementError::NoMatchingLabels("gpu=yes".into()),
            PlacementError::NoCapacity(Shortfall::new(&ask(1))),
        ] {
            assert!(!is_transient(&e.to_string()), "{e}");
            assert!(e.to_string().starts_with("no node is available"), "{e}");
        }
    }

    #[test]
    fn unready_and_empty_clusters_say_why() {
        assert_eq!(
            place(&[], &ask(1), &Spread::default(), 8).unwrap_err(),
            PlacementError::NoNodes
        );
        let mut draining = node("a", "z");
        draining.ready = false;
        let err = place(&[draining], &ask(1), &Spread::new(1), 8).unwrap_err();
        assert_eq!(err, PlacementError::NoReadyNodes);
        assert!(err.to_string().starts_with("no node is available"));
    }

    #[test]
    fn spreads_over_nodes_before_load() {
        let mut a = node("a", "z");
        a.used_memory_mb = 0;
        let mut b = node("b", "z");
        b.used_memory_mb = 512; // busier, but without an instance of this app
        let mut spread = Spread::new(2);
        spread.add(&[a.clone(), b.clone()], 0);
        assert_eq!(place(&[a, b], &ask(128), &spread, 8).unwrap(), 1);
    }

    #[test]
    fn spreads_over_zones_first() {
        // Two nodes in zone-a, one in zone-b: the zone with fewer instances wins even though its
        // node already has one and a zone-a node has none.
        let mut nodes = vec![
            node("a1", "zone-a"),
            node("a2", "zone-a"),
            node("b1", "zone-b"),
        ];
        let placed = place_many(&mut nodes, 4);
        let zone_b = placed.iter().filter(|n| *n == "b1").count();
        assert_eq!(zone_b, 2, "{placed:?}");
        assert_eq!(
            placed.iter().filter(|n| n.starts_with('a')).count(),
            2,
            "{placed:?}"
        );
        // 4 over 2 zones of 2 nodes each: 2/2 per zone and 1 per node.
        let mut nodes = vec![
            node("a1", "za"),
            node("a2", "za"),
            node("b1", "zb"),
            node("b2", "zb"),
        ];
        let mut placed = place_many(&mut nodes, 4);
        placed.sort();
        assert_eq!(placed, ["a1", "a2", "b1", "b2"]);
    }

    #[test]
    fn balances_load_then_name() {
        let mut a = node("a", "z");
        a.used_memory_mb = 512;
        let b = node("b", "z");
        assert_eq!(
            place(&[a, b.clone()], &ask(128), &Spread::new(2), 8).unwrap(),
            1
        );
        // The slot share counts too: a node with few free slots is busier.
        let mut c = node("c", "z");
        c.used_slots = 9;
        assert_eq!(
            place(&[c, b.clone()], &ask(128), &Spread::new(2), 8).unwrap(),
            1
        );
        // Ties go to the name, whatever the input order.
        assert_eq!(
            place(
                &[node("y", "z"), node("x", "z")],
                &ask(128),
                &Spread::new(2),
                8
            )
            .unwrap(),
            1
        );
    }

    #[test]
    fn labels_must_all_match() {
        let mut ssd = node("ssd", "z");
        ssd.labels.insert("disk".into(), "ssd".into());
        ssd.used_memory_mb = 800; // busier, but the only one with the label
        let plain = node("plain", "z");
        let want: BTreeMap<String, String> = [("disk".to_string(), "ssd".to_string())].into();
        let a = Ask {
            memory_mb: 128,
            disk_mb: 0,
            labels: &want,
        };
        assert_eq!(
            place(&[plain.clone(), ssd], &a, &Spread::new(2), 8).unwrap(),
            1
        );
        let err = place(&[plain], &a, &Spread::new(1), 8).unwrap_err();
        assert_eq!(err, PlacementError::NoMatchingLabels("disk=ssd".into()));
        let mut wrong = node("hdd", "z");
        wrong.labels.insert("disk".into(), "hdd".into());
        assert!(place(&[wrong], &a, &Spread::new(1), 8).is_err());
    }

    #[test]
    fn limits_starts_in_flight_per_node() {
        let mut a = node("a", "z");
        a.starting = 2;
        let mut b = node("b", "z");
        b.used_memory_mb = 900; // worse on every other score, but not busy starting
        b.starting = 0;
        assert_eq!(
            place(&[a.clone(), b], &ask(64), &Spread::new(2), 2).unwrap(),
            1
        );
        assert_eq!(
            place(&[a.clone()], &ask(64), &Spread::new(1), 2).unwrap_err(),
            PlacementError::Busy(2)
        );
        // Booking counts as a start.
        let mut nodes = vec![node("only", "z")];
        let spread = Spread::new(1);
        for _ in 0..3 {
            let i = place(&nodes, &ask(64), &spread, 3).unwrap();
            nodes[i].book(&ask(64));
        }
        assert_eq!(
            place(&nodes, &ask(64), &spread, 3).unwrap_err(),
            PlacementError::Busy(3)
        );
    }

    #[test]
    fn deterministic_for_the_same_input() {
        let build = || {
            (0..20)
                .map(|i| node(&format!("n{i:02}"), &format!("z{}", i % 3)))
                .collect::<Vec<_>>()
        };
        let mut x = build();
        let mut y = build();
        assert_eq!(place_many(&mut x, 50), place_many(&mut y, 50));
    }
}
