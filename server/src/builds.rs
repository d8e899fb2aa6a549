//! Builds in flight: a push whose staging runs on a node. The push handler registers a build and
//! waits for its result; the build is listed in its node's assignments until the node reports the
//! result (level-triggered like instances: an agent that restarts sees it again). Builds live in
//! memory only, because the push request that waits for one does not outlive the controller
//! either; a push that found no build result within its time limit cancels its build. Finished
//! builds are remembered by source tree and buildpacks, so pushing the same files again reuses
//! the droplet instead of staging it again.

use paas_common::agent::{BuildAssignment, BuildResult};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;

struct Build {
    node: String,
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

    /// Registers a build of the `source` tar blob on `node`; the receiver gets its result.
    pub fn start(
        &self,
        node: &str,
        source: &str,
        assignment: BuildAssignment,
    ) -> oneshot::Receiver<BuildResult> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            assignment.build_id.clone(),
            Build {
                node: node.to_string(),
                source: source.to_string(),
                assignment,
                done: tx,
            },
        );
        rx
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

    /// Builds per node, for choosing the least busy node.
    pub fn count_on(&self, node: &str) -> usize {
        self.lock().values().filter(|b| b.node == node).count()
    }

    /// The source blob and app of build `id`, if it is assigned to `node`.
    pub fn source_of(&self, id: &str, node: &str) -> Option<(String, String)> {
        self.lock()
            .get(id)
            .filter(|b| b.node == node)
            .map(|b| (b.source.clone(), b.assignment.app.clone()))
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
