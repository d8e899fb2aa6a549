//! Builds in flight: a push whose staging runs on a node. The push handler registers a build and
//! waits for its result; the build is listed in its node's assignments until the node reports the
//! result (level-triggered like instances: an agent that restarts sees it again). Builds live in
//! the store (`stagings`), so the node may talk to another controller than the one whose push
//! waits (issue 20); a push that found no build result within its time limit cancels its build,
//! and rows a dead controller's push left behind are swept after a day. Finished
//! builds are remembered by source tree and buildpacks, so pushing the same files again reuses
//! the droplet instead of staging it again.
//!
//! A build is placed like an instance ([`place_build`]): the scheduler's filter (ready node, the
//! app's placement labels, free memory, disk and a slot, counting placed instances and builds in
//! flight) and score (fewest builds in the zone, then on the node, then the least used node). A
//! build that fits nowhere waits for a node, saying why, instead of landing on a node that
//! cannot hold it.

use crate::control::scheduler::{self, Ask, NodeView, PlacementError, Spread};
use crate::store::{NodeRecord, StagingRecord, Store, StoreError, StoreResult};
use paas_common::agent::{BuildAssignment, BuildResult};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

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

/// How often a waiting push looks for a result another controller recorded (one that arrives
/// here wakes it at once).
const RESULT_POLL: Duration = Duration::from_millis(250);

#[derive(Default)]
pub struct Builds {
    /// Placement reads the builds in flight and adds one: one at a time on this controller, so
    /// pushes staged at the same moment each see the builds placed before them.
    placing: tokio::sync::Mutex<()>,
    /// Woken when a node reports a result through this controller.
    finished: tokio::sync::Notify,
    done: Mutex<(
        HashMap<String, CachedBuild>,
        std::collections::VecDeque<String>,
    )>,
}

fn assignment_of(s: &StagingRecord) -> StoreResult<BuildAssignment> {
    serde_json::from_str(&s.assignment)
        .map_err(|e| StoreError::Corrupt(format!("build {} assignment: {e}", s.build_id)))
}

/// What a build in flight holds on its node.
fn held(s: &StagingRecord) -> StoreResult<Reservation> {
    let a = assignment_of(s)?;
    Ok(Reservation {
        node: s.node.clone(),
        memory_mb: a.memory_mb,
        disk_mb: a.disk_mb,
        slots: 1,
        build: true,
    })
}

impl Builds {
    /// The builds a node should run: level-triggered like instances (a restarted agent sees
    /// them again).
    pub async fn for_node(
        &self,
        store: &dyn Store,
        node: &str,
    ) -> StoreResult<Vec<BuildAssignment>> {
        let mut out = store
            .stagings_in_flight(Some(node))
            .await?
            .iter()
            .map(assignment_of)
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| a.build_id.cmp(&b.build_id));
        Ok(out)
    }

    /// What the builds in flight hold on their nodes.
    pub async fn reservations(&self, store: &dyn Store) -> StoreResult<Vec<Reservation>> {
        store
            .stagings_in_flight(None)
            .await?
            .iter()
            .map(held)
            .collect()
    }

    /// Places `assignment` ([`place_build`], counting `instances` and the builds in flight) and
    /// records it on the chosen node, in one step on this controller. Two controllers placing
    /// at the same instant may both count without the other's build: the node's own limits
    /// still hold, and the next build sees both.
    // One argument per part of the build, as its single caller has them.
    #[allow(clippy::too_many_arguments)]
    pub async fn place_and_start(
        &self,
        store: &dyn Store,
        nodes: &[NodeRecord],
        instances: &[Reservation],
        app_id: &str,
        source: &str,
        assignment: &BuildAssignment,
        labels: &BTreeMap<String, String>,
    ) -> StoreResult<Result<String, PlacementError>> {
        let _one = self.placing.lock().await;
        // Builds whose push died with its controller would hold their node for ever.
        store
            .sweep_stagings(chrono::Utc::now() - chrono::Duration::days(1))
            .await?;
        let mut reserved = self.reservations(store).await?;
        reserved.extend_from_slice(instances);
        let ask = Ask {
            memory_mb: assignment.memory_mb,
            disk_mb: assignment.disk_mb,
            labels,
        };
        let node = match place_build(nodes, &reserved, &ask) {
            Ok(n) => n,
            Err(e) => return Ok(Err(e)),
        };
        store
            .insert_staging(&StagingRecord {
                build_id: assignment.build_id.clone(),
                node: node.clone(),
                app_id: app_id.to_string(),
                source: source.to_string(),
                assignment: serde_json::to_string(assignment)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                result: None,
                created_at: chrono::Utc::now(),
            })
            .await?;
        Ok(Ok(node))
    }

    /// The source blob and app of build `id`, if it is in flight on `node`.
    pub async fn source_of(
        &self,
        store: &dyn Store,
        id: &str,
        node: &str,
    ) -> StoreResult<Option<(String, String)>> {
        Ok(store
            .staging(id)
            .await?
            .filter(|s| s.node == node && s.result.is_none())
            .map(|s| (s.source, s.app_id)))
    }

    /// Ends build `id` of `node` with `result`; false if there is no such build (any more).
    pub async fn finish(
        &self,
        store: &dyn Store,
        id: &str,
        node: &str,
        result: &BuildResult,
    ) -> StoreResult<bool> {
        let json = serde_json::to_string(result).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let done = store.finish_staging(id, node, &json).await?;
        if done {
            self.finished.notify_waiters();
        }
        Ok(done)
    }

    /// Waits up to `limit` for build `id`'s result, whichever controller the node reported it
    /// to, then forgets the build. `None` when none came (the build is cancelled).
    pub async fn wait(
        &self,
        store: &dyn Store,
        id: &str,
        limit: Duration,
    ) -> StoreResult<Option<BuildResult>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the look, so a result recorded in between still wakes us.
            let woken = self.finished.notified();
            let Some(s) = store.staging(id).await? else {
                return Ok(None);
            };
            if let Some(r) = &s.result {
                store.delete_staging(id).await?;
                let r = serde_json::from_str(r)
                    .map_err(|e| StoreError::Corrupt(format!("build {id} result: {e}")))?;
                return Ok(Some(r));
            }
            if tokio::time::Instant::now() >= deadline {
                store.delete_staging(id).await?;
                return Ok(None);
            }
            let _ = tokio::time::timeout(RESULT_POLL, woken).await;
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
        // What `Builds::place_and_start` does under its lock: each build counts those before.
        let nodes = [node("a", "z", 8192), node("b", "z", 8192)];
        let mut reserved = Vec::new();
        let mut placed = Vec::new();
        for _ in 0..4 {
            let n = place_build(&nodes, &reserved, &ask(3000)).unwrap();
            reserved.push(Reservation {
                node: n.clone(),
                memory_mb: 3000,
                disk_mb: 4096,
                slots: 1,
                build: true,
            });
            placed.push(n);
        }
        assert_eq!(placed, ["a", "b", "a", "b"]);
        // Two builds of 3000 MB fill each node: the fifth does not fit.
        let err = place_build(&nodes, &reserved, &ask(3000)).unwrap_err();
        assert!(err.to_string().contains("needs 3000 MB of memory"), "{err}");
    }
}
