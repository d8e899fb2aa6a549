//! Builds in flight: a push whose staging runs on a node. The push handler registers a build and
//! waits for its result; the build is listed in its node's assignments until the node reports the
//! result (level-triggered like instances: an agent that restarts sees it again). Builds live in
//! memory only, because the push request that waits for one does not outlive the controller
//! either; a push that found no build result within its time limit cancels its build. Finished
//! builds are remembered by source tree and buildpacks, so pushing the same files again reuses
//! the droplet instead of staging it again.
//!
//! A build is placed like an instance ([`place_build`]): the scheduler's filter (ready node, the
//! app's placement labels, free memory, disk and a slot, counting placed instances and builds in
//! flight) and score (fewest builds in the zone, then on the node, then the least used node). A
//! build that fits nowhere waits for a node, saying why, instead of landing on a node that
//! cannot hold it.

use crate::control::scheduler::{self, Ask, NodeView, PlacementError, Spread};
use crate::store::NodeRecord;
use paas_common::agent::{BuildAssignment, BuildResult};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::oneshot;

struct Build {
    node: String,
    /// The app's id: its STG lines go to that app's log stream.
    app_id: String,
    source: String,
    assignment: BuildAssignment,
    done: oneshot::Sender<BuildResult>,
}

/// A finished build, kept to skip rebuilding the same files with the same buildpacks.
#[derive(Debug, Clone)]
pub struct CachedBuild {
    pub droplet: String,
    pub buildpack: String,
    pub processes: std::collections::BTreeMap<String, String>,
    pub image: Option<paas_common::agent::DropletImage>,
}

/// Most finished builds remembered; the oldest is forgotten first (a forgotten one is rebuilt).
const CACHE_ENTRIES: usize = 256;

#[derive(Default)]
pub struct Builds {
    inner: Mutex<HashMap<String, Build>>,
    done: Mutex<(
        HashMap<String, CachedBuild>,
        std::collections::VecDeque<String>,
    )>,
}

impl Builds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Build>> {
        // A panic while holding this lock cannot leave the map half-changed: every change is
        // one insert or remove.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn for_node(&self, node: &str) -> Vec<BuildAssignment> {
        let mut out: Vec<BuildAssignment> = self
            .lock()
            .values()
            .filter(|b| b.node == node)
            .map(|b| b.assignment.clone())
            .collect();
        out.sort_by(|a, b| a.build_id.cmp(&b.build_id));
        out
    }

    /// What the builds in flight hold on their nodes.
    pub fn reservations(&self) -> Vec<Reservation> {
        Self::held(&self.lock())
    }

    fn held(map: &HashMap<String, Build>) -> Vec<Reservation> {
        map.values()
            .map(|b| Reservation {
                node: b.node.clone(),
                memory_mb: b.assignment.memory_mb,
                disk_mb: b.assignment.disk_mb,
                slots: 1,
                build: true,
            })
            .collect()
    }

    /// Places `assignment` ([`place_build`], counting `instances` and the builds in flight) and
    /// registers it on the chosen node, in one step: pushes staged at the same moment each see
    /// the builds placed before them, so they spread instead of all taking the same node.
    pub fn place_and_start(
        &self,
        nodes: &[NodeRecord],
        instances: &[Reservation],
        app_id: &str,
        source: &str,
        assignment: &BuildAssignment,
        labels: &BTreeMap<String, String>,
    ) -> Result<(String, oneshot::Receiver<BuildResult>), PlacementError> {
        let mut map = self.lock();
        let mut reserved = Self::held(&map);
        reserved.extend_from_slice(instances);
        let ask = Ask {
            memory_mb: assignment.memory_mb,
            disk_mb: assignment.disk_mb,
            labels,
        };
        let node = place_build(nodes, &reserved, &ask)?;
        let (tx, rx) = oneshot::channel();
        map.insert(
            assignment.build_id.clone(),
            Build {
                node: node.clone(),
                app_id: app_id.to_string(),
                source: source.to_string(),
                assignment: assignment.clone(),
                done: tx,
            },
        );
        Ok((node, rx))
    }

    /// The source blob and app of build `id`, if it is assigned to `node`.
    pub fn source_of(&self, id: &str, node: &str) -> Option<(String, String)> {
        self.lock()
            .get(id)
            .filter(|b| b.node == node)
            .map(|b| (b.source.clone(), b.app_id.clone()))
    }

    /// Ends build `id` of `node` with `result`; false if there is no such build (any more).
    pub fn finish(&self, id: &str, node: &str, result: BuildResult) -> bool {
        let mut map = self.lock();
        if map.get(id).is_none_or(|b| b.node != node) {
            return false;
        }
        match map.remove(id) {
            Some(b) => {
                // The waiting push may have given up meanwhile; nothing else to tell.
                let _ = b.done.send(result);
                true
            }
            None => false,
        }
    }

    /// The finished build for `key` (source tree digest and buildpacks), if remembered.
    pub fn cached(&self, key: &str) -> Option<CachedBuild> {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(key)
            .cloned()
    }

    pub fn remember(&self, key: String, build: CachedBuild) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if done.0.insert(key.clone(), build).is_none() {
            done.1.push_back(key);
        }
        while done.1.len() > CACHE_ENTRIES {
            if let Some(old) = done.1.pop_front() {
                done.0.remove(&old);
            }
        }
    }

    /// Forgets build `id` (its push gave up).
    pub fn cancel(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// What holds memory, disk and a slot on a node: an instance placed there (counted as the
/// convergence loop counts it: its process type's memory and the app's disk) or a build in
/// flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub node: String,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Instance slots it takes (a build: 1; a node's instances: as many as they are).
    pub slots: u32,
    pub build: bool,
}

/// The node for a build needing `ask`, or the scheduler's reason why none fits now.
pub fn place_build(
    nodes: &[NodeRecord],
    reserved: &[Reservation],
    ask: &Ask<'_>,
) -> Result<String, PlacementError> {
    let mut views: Vec<NodeView> = nodes.iter().map(NodeView::from_record).collect();
    // Builds spread as an app's instances do: by zone, then by node.
    let mut spread = Spread::new(views.len());
    for r in reserved {
        let Some(i) = views.iter().position(|v| v.name == r.node) else {
            continue;
        };
        let v = &mut views[i];
        v.used_memory_mb += r.memory_mb;
        v.used_disk_mb += r.disk_mb;
        v.used_slots += r.slots;
        if r.build {
            spread.add(&views, i);
        }
    }
    scheduler::place(&views, ask, &spread, u32::MAX).map(|i| views[i].name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use paas_common::agent::NodeCapacity;
    use std::collections::BTreeMap;

    fn node(name: &str, zone: &str, memory_mb: u64) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            address: "127.0.0.1".into(),
            zone: zone.into(),
            labels: BTreeMap::new(),
            capacity: NodeCapacity {
                memory_mb,
                disk_mb: 20_000,
                instance_slots: 250,
            },
            token_hash: String::new(),
            state: "ready".into(),
            last_heartbeat: Utc::now(),
            registered_at: Utc::now(),
        }
    }

    fn held(node: &str, memory_mb: u64, build: bool) -> Reservation {
        Reservation {
            node: node.into(),
            memory_mb,
            disk_mb: 256,
            slots: 1,
            build,
        }
    }

    const NO_LABELS: &BTreeMap<String, String> = &BTreeMap::new();

    fn ask(memory_mb: u64) -> Ask<'static> {
        Ask {
            memory_mb,
            disk_mb: 4096,
            labels: NO_LABELS,
        }
    }

    #[test]
    fn instances_and_builds_hold_memory() {
        let nodes = [node("a", "z", 2048), node("b", "z", 2048)];
        // a: 1536 MB of instances; b: a build of 1024 MB and 512 MB of instances.
        let reserved = [
            held("a", 1024, false),
            held("a", 512, false),
            held("b", 1024, true),
            held("b", 512, false),
        ];
        let err = place_build(&nodes, &reserved, &ask(1024)).unwrap_err();
        assert!(
            err.to_string()
                .contains("needs 1024 MB of memory, the most free on a ready node is 512 MB"),
            "{err}"
        );
        assert_eq!(place_build(&nodes, &reserved, &ask(512)).unwrap(), "a");
    }

    #[test]
    fn spreads_builds_by_zone_then_node() {
        let nodes = [
            node("a1", "za", 8192),
            node("a2", "za", 8192),
            node("b1", "zb", 8192),
        ];
        // A build on a1: zone zb has none, so b1 wins over the empty a2.
        let reserved = [held("a1", 1024, true)];
        assert_eq!(place_build(&nodes, &reserved, &ask(1024)).unwrap(), "b1");
        // One in each zone: a2 has none on the node.
        let reserved = [held("a1", 1024, true), held("b1", 1024, true)];
        assert_eq!(place_build(&nodes, &reserved, &ask(1024)).unwrap(), "a2");
        // Instances do not count as builds, only as load: the less loaded node wins.
        let reserved = [held("a1", 4096, false), held("b1", 6000, false)];
        assert_eq!(place_build(&nodes, &reserved, &ask(1024)).unwrap(), "a2");
    }

    #[test]
    fn labels_and_node_state_come_first() {
        let mut gpu = node("gpu", "z", 4096);
        gpu.labels.insert("gpu".into(), "yes".into());
        let mut draining = node("big", "z", 65536);
        draining.state = "draining".into();
        let plain = node("plain", "z", 65536);
        let want: BTreeMap<String, String> = [("gpu".to_string(), "yes".to_string())].into();
        let on_gpu = Ask {
            memory_mb: 1024,
            disk_mb: 4096,
            labels: &want,
        };
        let nodes = [plain.clone(), draining.clone(), gpu];
        assert_eq!(place_build(&nodes, &[], &on_gpu).unwrap(), "gpu");
        let err = place_build(&[plain], &[], &on_gpu).unwrap_err();
        assert_eq!(err, PlacementError::NoMatchingLabels("gpu=yes".into()));
        assert_eq!(
            place_build(&[draining], &[], &ask(1)).unwrap_err(),
            PlacementError::NoReadyNodes
        );
        assert_eq!(
            place_build(&[], &[], &ask(1)).unwrap_err(),
            PlacementError::NoNodes
        );
    }

    #[test]
    fn builds_placed_one_after_another_spread() {
        let b = Builds::default();
        let nodes = [node("a", "z", 8192), node("b", "z", 8192)];
        let build = |id: &str| BuildAssignment {
            build_id: id.into(),
            app: "web".into(),
            buildpacks: vec![],
            memory_mb: 3000,
            disk_mb: 4096,
            timeout_secs: 60,
            custom_buildpacks: vec![],
            dockerfile: false,
            allowed_base_images: vec![],
            stack: String::new(),
            no_cache: false,
            cache_scope: String::new(),
        };
        let mut placed = Vec::new();
        let mut receivers = Vec::new();
        for i in 0..4 {
            let (node, rx) = b
                .place_and_start(
                    &nodes,
                    &[],
                    "app",
                    "src",
                    &build(&format!("b{i}")),
                    NO_LABELS,
                )
                .unwrap();
            placed.push(node);
            receivers.push(rx);
        }
        assert_eq!(placed, ["a", "b", "a", "b"]);
        // Two builds of 3000 MB fill each node: the fifth does not fit.
        let err = b
            .place_and_start(&nodes, &[], "app", "src", &build("b4"), NO_LABELS)
            .unwrap_err();
        assert!(err.to_string().contains("needs 3000 MB of memory"), "{err}");
        assert_eq!(b.for_node("a").len(), 2);
    }

    #[test]
    fn builds_in_flight_are_reserved() {
        let b = Builds::default();
        let assignment = BuildAssignment {
            build_id: "b1".into(),
            app: "web".into(),
            buildpacks: vec![],
            memory_mb: 1024,
            disk_mb: 4096,
            timeout_secs: 60,
            custom_buildpacks: vec![],
            dockerfile: false,
            allowed_base_images: vec![],
            stack: String::new(),
            no_cache: false,
            cache_scope: String::new(),
        };
        let (_, _rx) = b
            .place_and_start(
                &[node("n1", "z", 4096)],
                &[],
                "app",
                "src",
                &assignment,
                NO_LABELS,
            )
            .unwrap();
        assert_eq!(
            b.reservations(),
            [Reservation {
                node: "n1".into(),
                memory_mb: 1024,
                disk_mb: 4096,
                slots: 1,
                build: true
            }]
        );
        b.cancel("b1");
        assert!(b.reservations().is_empty());
    }
}
