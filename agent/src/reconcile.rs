//! The reconciler: makes this node's containers match its assignment list, and owns each
//! instance's life (`Starting` -> `Running` -> `Crashed` -> `Starting` ..., or `Stopping`).
//!
//! Every pass starts from what the engine lists under this node's labels, not from memory, so a
//! restarted agent re-adopts its running containers (same id, no restart) and a container removed
//! behind its back is simply recreated. Crashed instances restart in place (`docker start` on the
//! same container, which keeps its id, its logs and its `/app` volume) with Cloud Foundry's backoff.
//!
//! Readiness is a second, independent check of a running instance (Cloud Foundry's readiness
//! health check): its result only says whether the instance is routed. A failing readiness check
//! never kills, restarts or counts a crash; it is reported as `ready: false` and the controller
//! takes the instance out of the route table until the check passes again.
//!
//! Sidecars (manifest `sidecars:`) run in containers of their own that join the instance
//! container's network namespace, so they start after it and are started again after each of its
//! restarts (the namespace is new each time). A sidecar that exits on its own restarts alone with
//! the same backoff as an instance, each crash a `CELL` line; it does not crash its instance,
//! whose own health check decides whether it serves (Cloud Foundry restarts the whole instance
//! instead; here the app keeps serving what it can while its helper comes back). A sidecar
//! container whose instance container is gone, or replaced, is removed.

use crate::backoff;
use crate::crashes::{CrashLedger, CrashRecord, Ledger};
use crate::health;
use crate::logs::{self, FollowFrom, LastSeen, LogSink};
use crate::runtime::{
    ContainerStatus, DropletSource, OwnedSidecar, Runtime, RuntimeError, APP_PORT,
};
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use paas_common::agent::{Assignment, HealthCheck, InstanceReport};
use paas_common::api::InstanceState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub const HEALTH_CHECK_FAILED: &str = "health check failed";
/// After this many consecutive crashes the instance stays crashed for good (Cloud Foundry's
/// limit); its `last_exit` says so. A restart of the app or instance replaces it.
pub const MAX_CRASHES: u32 = 200;
/// "Never" for a restart deadline: far enough, and small enough not to overflow an `Instant`.
const GIVE_UP_WAIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// How long a killed container may take to be reported stopped before we restart it anyway.
const KILL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
enum Phase {
    Starting {
        started: Instant,
        next_check: Instant,
    },
    Running {
        healthy_since: Instant,
        next_check: Instant,
    },
    Crashed {
        restart_at: Instant,
    },
}

impl Phase {
    fn state(&self) -> InstanceState {
        match self {
            Phase::Starting { .. } => InstanceState::Starting,
            Phase::Running { .. } => InstanceState::Running,
            Phase::Crashed { .. } => InstanceState::Crashed,
        }
    }

    fn next_due(&self) -> Instant {
        match *self {
            Phase::Starting { next_check, .. } | Phase::Running { next_check, .. } => next_check,
            Phase::Crashed { restart_at } => restart_at,
        }
    }
}

struct Instance {
    assignment: Assignment,
    container_id: String,
    host_port: Option<u16>,
    container_ip: Option<String>,
    restarts: u32,
    /// Consecutive crashes, for the backoff; forgiven after a healthy stretch.
    crash_count: u32,
    last_exit: Option<String>,
    since: DateTime<Utc>,
    phase: Phase,
    /// The last readiness result while running; without a readiness check, always true.
    ready: bool,
    /// When the readiness check is next due; `None`: at once (the instance just became healthy).
    next_ready_check: Option<Instant>,
    last_seen: LastSeen,
    follower: Option<JoinHandle<()>>,
    /// The engine's json-file log of the container, read directly by the collector.
    log_path: Option<std::path::PathBuf>,
    /// Its sidecars' containers, by sidecar name.
    sidecars: HashMap<String, SidecarRun>,
}

/// One sidecar container of an instance.
struct SidecarRun {
    container_id: String,
    /// Consecutive crashes, for the backoff; forgiven after a healthy stretch.
    crash_count: u32,
    /// When it last started (to forgive earlier crashes).
    started: Instant,
    /// Set while it waits out its backoff after a crash.
    restart_at: Option<Instant>,
    /// Stopped because its instance's container is down: started again, not counted as a
    /// crash, when the instance's container runs again.
    held: bool,
    last_seen: LastSeen,
    follower: Option<JoinHandle<()>>,
}

impl SidecarRun {
    fn new(container_id: String) -> Self {
        Self {
            container_id,
            crash_count: 0,
            started: Instant::now(),
            restart_at: None,
            held: false,
            last_seen: LastSeen::default(),
            follower: None,
        }
    }

    fn abort(&mut self) {
        if let Some(f) = self.follower.take() {
            f.abort();
        }
    }
}

struct Stopping {
    instance_id: String,
    container_id: String,
    since: DateTime<Utc>,
    task: JoinHandle<Result<(), RuntimeError>>,
}

/// Shared, read-only things a pass needs while it holds `&mut` to individual instances.
struct Ctx<'a> {
    runtime: &'a Runtime,
    http: &'a reqwest::Client,
    logs: &'a LogSink,
}

pub struct Reconciler {
    runtime: Arc<Runtime>,
    droplets: Arc<dyn DropletSource>,
    logs: LogSink,
    http: reqwest::Client,
    instances: HashMap<String, Instance>,
    stopping: HashMap<String, Stopping>,
    ledger: Option<CrashLedger>,
    positions: Option<Ledger<LogPosition>>,
    /// Recent passes' log positions, newest last: what is saved is the newest one at least
    /// [`SAVE_LAG`] old (see [`LogPosition`]).
    position_history: std::collections::VecDeque<(Instant, HashMap<String, LogPosition>)>,
    /// Removals of sidecar containers whose instance container is gone, by container id.
    sidecar_removals: HashMap<String, JoinHandle<Result<(), RuntimeError>>>,
    /// Instance identity credentials (issue 25); `None` in tests that run without a controller.
    identity: Option<Arc<crate::identity::Identity>>,
}

/// How old a log position must be before it is saved. A line is queued for upload when it is
/// read, and shipped within the batch window (200 ms) plus the upload; a position saved at the
/// moment of reading would skip, after a `kill -9`, the lines still queued in memory. Lines read
/// more than this long ago have been handed to the controller (or the disk spool) in all but an
/// outage; the price is up to this much output shipped twice after a restart.
const SAVE_LAG: Duration = Duration::from_millis(1500);

/// Where an instance's log had been handed on, saved on every pass (as it was [`SAVE_LAG`]
/// before), so an agent that restarts and adopts the container continues its log there: the
/// lines printed while no agent ran are shipped, not skipped. Lines handed on after the saved
/// position are shipped again (at least once).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    pub container_id: String,
    pub file: Option<crate::logfile::FilePosition>,
    pub last_seen: Option<DateTime<Utc>>,
}

impl Reconciler {
    /// Keeps restart counts in the ledger file at `path`, so they survive an agent restart.
    pub fn with_crash_ledger(mut self, path: &std::path::Path) -> Self {
        self.ledger = Some(CrashLedger::load(path));
        self
    }

    /// Gives each instance an identity certificate (issue 25) before its container is made.
    pub fn with_identity(mut self, identity: Arc<crate::identity::Identity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Keeps each instance's log position in the file at `path` (see [`LogPosition`]).
    pub fn with_log_positions(mut self, path: &std::path::Path) -> Self {
        self.positions = Some(Ledger::load(path).lazy());
        self
    }

    fn sync_positions(&mut self) {
        let Some(ledger) = self.positions.as_mut() else {
            return;
        };
        let now = Instant::now();
        let current: HashMap<String, LogPosition> = self
            .instances
            .iter()
            .map(|(id, i)| {
                let p = i.last_seen.lock().unwrap_or_else(|p| p.into_inner());
                (
                    id.clone(),
                    LogPosition {
                        container_id: i.container_id.clone(),
                        file: p.file,
                        last_seen: p.last_seen,
                    },
                )
            })
            .collect();
        let history = &mut self.position_history;
        history.push_back((now, current));
        // Keep the newest snapshot that is old enough, and the newer ones.
        while history
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) >= SAVE_LAG)
        {
            history.pop_front();
        }
        let old = history
            .front()
            .filter(|(t, _)| now.duration_since(*t) >= SAVE_LAG)
            .map(|(_, p)| p);
        // An instance younger than the lag has no old-enough position: it is saved as "from
        // its first line" (an adopting agent re-reads it all rather than skip any of it).
        let records = self
            .instances
            .iter()
            .map(|(id, i)| {
                let saved = old
                    .and_then(|o| o.get(id))
                    .filter(|p| p.container_id == i.container_id)
                    .cloned()
                    .unwrap_or_else(|| LogPosition {
                        container_id: i.container_id.clone(),
                        file: None,
                        last_seen: None,
                    });
                (id.clone(), saved)
            })
            .collect();
        if let Err(e) = ledger.sync(records) {
            tracing::warn!(error = %e, "cannot write the log positions");
        }
    }

    /// Writes the counts of the instances tracked now (forgetting the others) to the ledger.
    fn sync_ledger(&mut self) {
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        let records = self
            .instances
            .iter()
            .filter(|(_, i)| i.restarts > 0 || i.crash_count > 0 || i.last_exit.is_some())
            .map(|(id, i)| {
                (
                    id.clone(),
                    CrashRecord {
                        restarts: i.restarts,
                        crash_count: i.crash_count,
                        last_exit: i.last_exit.clone(),
                    },
                )
            })
            .collect();
        if let Err(e) = ledger.sync(records) {
            tracing::warn!(error = %e, "cannot write the crash ledger");
        }
    }

    pub fn new(runtime: Arc<Runtime>, droplets: Arc<dyn DropletSource>, logs: LogSink) -> Self {
        // Health checks go straight to the node address, never through a configured proxy.
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default();
        Self {
            runtime,
            droplets,
            logs,
            http,
            instances: HashMap::new(),
            stopping: HashMap::new(),
            ledger: None,
            positions: None,
            position_history: Default::default(),
            sidecar_removals: HashMap::new(),
            identity: None,
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// One pass: adopt, create, remove, check health, detect crashes and restart what is due.
    pub async fn reconcile(&mut self, desired: &[Assignment]) -> Result<(), RuntimeError> {
        self.reap_stopped();
        // The one setting applied in place: a new log rate limit reaches running instances.
        self.logs.set_app_limits(
            desired
                .iter()
                .map(|a| (a.instance_id.as_str(), a.log_rate_limit_bytes)),
        );
        let containers = self.runtime.list_owned().await?;
        let wanted: HashMap<&str, &Assignment> = desired
            .iter()
            .map(|a| (a.instance_id.as_str(), a))
            .collect();
        let mut listed = HashMap::new();

        for c in &containers {
            if self.stopping.contains_key(&c.instance_id) || self.stopping.contains_key(&c.id) {
                continue;
            }
            let tracked_id = self
                .instances
                .get(&c.instance_id)
                .map(|i| i.container_id.clone());
            match (wanted.get(c.instance_id.as_str()), tracked_id) {
                (Some(_), Some(id)) if id != c.id => self.stop(&c.instance_id, &c.id, "duplicate"),
                (Some(a), None) => match self.adopt(a, &c.id).await {
                    Ok(instance) => {
                        listed.insert(c.instance_id.clone(), c.running);
                        self.instances.insert(c.instance_id.clone(), instance);
                    }
                    Err(e) => {
                        tracing::warn!(container = %c.id, error = %e, "cannot adopt container")
                    }
                },
                (Some(_), Some(_)) => {
                    listed.insert(c.instance_id.clone(), c.running);
                }
                (None, _) => self.stop(&c.instance_id, &c.id, "no longer assigned"),
            }
        }

        // Assigned instances whose container vanished (removed by hand) are recreated below.
        let vanished: Vec<String> = self
            .instances
            .keys()
            .filter(|id| !listed.contains_key(*id))
            .cloned()
            .collect();
        for id in vanished {
            if let Some(instance) = self.instances.remove(&id) {
                if wanted.contains_key(id.as_str()) {
                    tracing::warn!(instance = %id, container = %instance.container_id, "container disappeared");
                }
                abort_follower(instance);
            }
        }

        let missing: Vec<&Assignment> = desired
            .iter()
            .filter(|a| !self.instances.contains_key(&a.instance_id))
            .filter(|a| !self.stopping.contains_key(&a.instance_id))
            .collect();
        let launched = join_all(missing.iter().map(|a| self.launch(a))).await;
        for (a, result) in missing.iter().zip(launched) {
            match result {
                Ok(instance) => {
                    listed.insert(a.instance_id.clone(), true);
                    self.instances.insert(a.instance_id.clone(), instance);
                }
                Err(e) => {
                    tracing::warn!(instance = %a.instance_id, app = %a.app, error = %e, "cannot start instance")
                }
            }
        }

        let ctx = Ctx {
            runtime: &self.runtime,
            http: &self.http,
            logs: &self.logs,
        };
        let now = Instant::now();
        join_all(self.instances.iter_mut().filter_map(|(id, instance)| {
            let running = listed.get(id).copied().unwrap_or(false);
            // Only touch instances with something to do: a due check, a restart, or an exit.
            let exited = !running && !matches!(instance.phase, Phase::Crashed { .. });
            (exited || instance.next_due() <= now).then(|| instance.step(&ctx, running))
        }))
        .await;
        self.tend_sidecars().await;
        self.sync_ledger();
        self.sync_positions();
        Ok(())
    }

    /// The earliest moment an instance needs attention (a check or a restart).
    pub fn next_due(&self) -> Option<Instant> {
        self.instances.values().map(Instance::next_due).min()
    }

    /// What the heartbeat reports: every instance this node owns.
    pub fn reports(&self) -> Vec<InstanceReport> {
        let mut reports: Vec<InstanceReport> = self
            .instances
            .iter()
            .map(|(id, i)| InstanceReport {
                instance_id: id.clone(),
                state: i.phase.state(),
                container_id: Some(i.container_id.clone()),
                host_port: i.host_port,
                restarts: i.restarts,
                last_exit: i.last_exit.clone(),
                since: i.since,
                usage: None,
                ready: i.routable(),
                ip: i.container_ip.clone(),
            })
            // A duplicate being stopped is not news to the controller: its instance is reported.
            .chain(
                self.stopping
                    .values()
                    .filter(|s| !self.instances.contains_key(&s.instance_id))
                    .map(|s| InstanceReport {
                        instance_id: s.instance_id.clone(),
                        state: InstanceState::Stopping,
                        container_id: Some(s.container_id.clone()),
                        host_port: None,
                        restarts: 0,
                        last_exit: None,
                        since: s.since,
                        usage: None,
                        ready: false,
                        ip: None,
                    }),
            )
            .collect();
        reports.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        reports
    }

    /// Runs every instance's sidecars beside its running container (started, restarted after a
    /// crash, held while the instance's container is down), and removes sidecar containers of
    /// no tracked instance container.
    async fn tend_sidecars(&mut self) {
        self.sidecar_removals.retain(|_, t| !t.is_finished());
        let any_wanted = self
            .instances
            .values()
            .any(|i| !i.assignment.sidecars.is_empty() || !i.sidecars.is_empty());
        let listed = match self.runtime.list_sidecars().await {
            Ok(l) => l,
            Err(e) => {
                if any_wanted {
                    tracing::warn!(error = %e, "cannot list sidecar containers");
                }
                return;
            }
        };
        let mut of: HashMap<&str, Vec<&OwnedSidecar>> = HashMap::new();
        for c in &listed {
            let owner = self
                .instances
                .get(&c.instance_id)
                .filter(|i| i.container_id == c.of)
                .filter(|i| i.assignment.sidecars.iter().any(|s| s.name == c.name));
            let being_stopped = self.stopping.values().any(|s| s.container_id == c.of);
            if owner.is_some() {
                of.entry(c.of.as_str()).or_default().push(c);
            } else if !being_stopped && !self.sidecar_removals.contains_key(&c.id) {
                tracing::info!(container = %c.id, instance = %c.instance_id, sidecar = %c.name, "removing a sidecar of no running instance");
                let runtime = self.runtime.clone();
                let id = c.id.clone();
                self.sidecar_removals.insert(
                    c.id.clone(),
                    tokio::spawn(async move { runtime.stop_and_remove(&id).await }),
                );
            }
        }
        let ctx = Ctx {
            runtime: &self.runtime,
            http: &self.http,
            logs: &self.logs,
        };
        let now = Instant::now();
        join_all(
            self.instances
                .values_mut()
                .filter(|i| !i.assignment.sidecars.is_empty())
                .map(|i| {
                    let mine = of.get(i.container_id.as_str()).cloned().unwrap_or_default();
                    i.tend_sidecars(&ctx, mine, now)
                }),
        )
        .await;
    }

    /// Waits for every stop in progress to finish (used by tests and tools).
    pub async fn wait_stopped(&mut self) {
        for (id, s) in self.stopping.drain() {
            match s.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(instance = %id, error = %e, "stop failed"),
                Err(e) => tracing::warn!(instance = %id, error = %e, "stop task failed"),
            }
        }
    }

    fn reap_stopped(&mut self) {
        let done: Vec<String> = self
            .stopping
            .iter()
            .filter(|(_, s)| s.task.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            if let Some(s) = self.stopping.remove(&id) {
                // A failed stop leaves the container listed, so the next pass tries again.
                if let Some(Ok(Err(e))) = futures_util::FutureExt::now_or_never(s.task) {
                    tracing::warn!(instance = %id, container = %s.container_id, error = %e, "stop failed");
                }
            }
        }
    }

    fn stop(&mut self, instance_id: &str, container_id: &str, why: &str) {
        tracing::info!(
            instance = instance_id,
            container = container_id,
            why,
            "stopping instance"
        );
        if let Some(instance) = self.instances.remove(instance_id) {
            if instance.container_id != container_id {
                self.instances.insert(instance_id.to_string(), instance);
            } else {
                self.logs.cell(
                    instance_id,
                    format!("Stopping instance {}", instance.assignment.index),
                );
                abort_follower(instance);
            }
        }
        let runtime = self.runtime.clone();
        let id = container_id.to_string();
        let task = tokio::spawn(async move { runtime.stop_and_remove_instance(&id).await });
        // A duplicate's stop is keyed by its container so it does not hide the real instance.
        let key = if self.instances.contains_key(instance_id) {
            container_id
        } else {
            instance_id
        };
        self.stopping.insert(
            key.to_string(),
            Stopping {
                instance_id: instance_id.to_string(),
                container_id: container_id.to_string(),
                since: Utc::now(),
                task,
            },
        );
    }

    async fn adopt(&self, a: &Assignment, container_id: &str) -> Result<Instance, RuntimeError> {
        let status = self.runtime.inspect(container_id).await?;
        tracing::info!(instance = %a.instance_id, container = container_id, running = status.running, "adopted container");
        let now = Instant::now();
        let mut instance = Instance::new(a.clone(), container_id.to_string(), &status, now);
        if let Some(rec) = self.ledger.as_ref().and_then(|l| l.get(&a.instance_id)) {
            instance.restarts = rec.restarts;
            instance.crash_count = rec.crash_count;
            instance.last_exit = rec.last_exit.clone();
        }
        instance.since = status
            .started_at
            .filter(|_| status.running)
            .unwrap_or_else(Utc::now);
        // Continue where the previous agent process had got to; without a saved place, lines
        // before now count as shipped by it.
        let saved = self
            .positions
            .as_ref()
            .and_then(|l| l.get(&a.instance_id))
            .filter(|p| p.container_id == container_id);
        let from = match saved {
            Some(p) => {
                let mut progress = instance.last_seen.lock().unwrap_or_else(|p| p.into_inner());
                progress.file = p.file;
                progress.last_seen = p.last_seen;
                FollowFrom::Continue
            }
            None => FollowFrom::Now,
        };
        // A stopped container is followed when it is started again (from its progress).
        if status.running {
            instance.follow(&self.runtime, &self.logs, from);
        }
        Ok(instance)
    }

    async fn launch(&self, a: &Assignment) -> Result<Instance, RuntimeError> {
        let id = create_container(
            &self.runtime,
            self.droplets.as_ref(),
            &self.logs,
            a,
            false,
            self.identity.as_deref(),
        )
        .await?;
        self.logs
            .cell(&a.instance_id, format!("Starting instance {}", a.index));
        let t0 = std::time::Instant::now();
        if let Err(e) = self.runtime.start(&id).await {
            // E.g. the host port the agent chose was taken meanwhile: the next pass creates a
            // new container, with another port, rather than retrying this one.
            let _ = self.runtime.stop_and_remove(&id).await;
            return Err(e);
        }
        let status = self.runtime.inspect(&id).await?;
        tracing::info!(instance = %a.instance_id, app = %a.app, index = a.index, container = %id, host_port = ?status.host_port, start_ms = t0.elapsed().as_millis(), "started instance");
        let mut instance = Instance::new(a.clone(), id, &status, Instant::now());
        instance.follow(&self.runtime, &self.logs, FollowFrom::Beginning);
        Ok(instance)
    }
}

/// Creates (does not start) the sandboxed container of an instance or, with `task`, of a
/// one-off task: from the droplet's image, or the stack's run image with the droplet unpacked
/// into `/app`. The one creation path of every app container. With `identity`, the instance's
/// identity credentials are made (or kept) first and mounted into it.
pub(crate) async fn create_container(
    runtime: &Runtime,
    droplets: &dyn DropletSource,
    logs: &LogSink,
    a: &Assignment,
    task: bool,
    identity: Option<&crate::identity::Identity>,
) -> Result<String, RuntimeError> {
    let credentials = |config: Option<&bollard::models::ImageConfig>| {
        let user = crate::runtime::instance_user(a, config);
        async move {
            let identity = identity?;
            let (dir, r) = identity.prepare(&a.instance_id, &user).await;
            if let Err(e) = r {
                // The instance starts all the same; the renewal loop keeps asking.
                tracing::warn!(instance = %a.instance_id, error = %e, "no identity certificate yet");
                logs.cell(
                    &a.instance_id,
                    format!("Instance identity certificate not issued yet: {e}"),
                );
            }
            Some(dir)
        }
    };
    let id = if let Some(image) = &a.image {
        let (config, loaded) = runtime.ensure_image(&a.droplet, image, droplets).await?;
        if let Some(bytes) = loaded {
            logs.cell(
                &a.instance_id,
                format!(
                    "Loaded image {} from droplet {} ({} MB): this engine did not have it",
                    image
                        .id
                        .trim_start_matches("sha256:")
                        .get(..12)
                        .unwrap_or(&image.id),
                    a.droplet.get(..12).unwrap_or(&a.droplet),
                    bytes >> 20
                ),
            );
        }
        let creds = credentials(Some(&config)).await;
        runtime
            .create(a, &image.id, Some(&config), task, creds.as_deref())
            .await?
    } else {
        // The droplet and the identity credentials side by side (each may wait on the
        // controller); per-step times in the log say where an instance's start went (issue 24).
        let t0 = std::time::Instant::now();
        let ((tar, fetch_ms), (creds, creds_ms)) = tokio::join!(
            timed(t0, runtime.droplet_tar(&a.droplet, droplets)),
            timed(t0, credentials(None))
        );
        let tar = tar?;
        // The run image of the stack the droplet was staged on: no build tools.
        let stack = paas_common::stack::run_image(crate::stack::droplet_stack(&tar));
        let t1 = std::time::Instant::now();
        let id = runtime
            .create(a, &stack, None, task, creds.as_deref())
            .await?;
        let create_ms = t1.elapsed().as_millis();
        let t2 = std::time::Instant::now();
        if let Err(e) = runtime.install_droplet(&id, tar).await {
            // A created container without its app must not linger: the next pass tries again.
            let _ = runtime.stop_and_remove(&id).await;
            return Err(e);
        }
        tracing::info!(
            instance = %a.instance_id,
            fetch_ms,
            creds_ms,
            create_ms,
            unpack_ms = t2.elapsed().as_millis(),
            "instance container made"
        );
        id
    };
    Ok(id)
}

/// `f`'s output and the milliseconds from `t0` until it was ready.
async fn timed<T>(t0: std::time::Instant, f: impl std::future::Future<Output = T>) -> (T, u128) {
    let r = f.await;
    (r, t0.elapsed().as_millis())
}

fn abort_follower(mut instance: Instance) {
    if let Some(f) = instance.follower {
        f.abort();
    }
    for run in instance.sidecars.values_mut() {
        run.abort();
    }
}

impl Instance {
    /// Whether the router should send this instance traffic: running and ready.
    fn routable(&self) -> bool {
        matches!(self.phase, Phase::Running { .. }) && self.ready
    }

    /// The earliest moment this instance needs attention: its phase's, a readiness check, or a
    /// sidecar's restart.
    fn next_due(&self) -> Instant {
        let due = self.phase.next_due();
        let due = self
            .sidecars
            .values()
            .filter_map(|r| r.restart_at)
            .fold(due, Instant::min);
        match (&self.phase, &self.assignment.health.readiness) {
            (Phase::Running { .. }, Some(_)) => {
                self.next_ready_check.map_or(Instant::now(), |r| r.min(due))
            }
            _ => due,
        }
    }

    fn new(
        assignment: Assignment,
        container_id: String,
        status: &ContainerStatus,
        now: Instant,
    ) -> Self {
        let ready = assignment.health.readiness.is_none();
        Self {
            assignment,
            container_id,
            host_port: status.host_port,
            container_ip: status.ip.clone(),
            restarts: 0,
            crash_count: 0,
            last_exit: None,
            since: Utc::now(),
            phase: Phase::Starting {
                started: now,
                next_check: now,
            },
            ready,
            next_ready_check: None,
            last_seen: LastSeen::default(),
            follower: None,
            log_path: status.log_path.clone(),
            sidecars: HashMap::new(),
        }
    }

    /// One pass over this instance's sidecars; `listed` are the containers of them the engine
    /// has for this instance's container.
    async fn tend_sidecars(&mut self, ctx: &Ctx<'_>, listed: Vec<&OwnedSidecar>, now: Instant) {
        // The process's container runs (or is being checked): its network namespace exists.
        let app_up = !matches!(self.phase, Phase::Crashed { .. });
        let index = self.assignment.index;
        let instance_id = self.assignment.instance_id.clone();
        for s in self.assignment.sidecars.clone() {
            let found = listed.iter().find(|c| c.name == s.name);
            let source = sidecar_source(&self.assignment, &s.name);
            let Some(c) = found else {
                // Never created, or removed behind our back: (re)created while the app runs.
                if let Some(mut old) = self.sidecars.remove(&s.name) {
                    old.abort();
                }
                if !app_up {
                    continue;
                }
                let started = async {
                    let id = ctx
                        .runtime
                        .create_sidecar(&self.assignment, &s, &self.container_id)
                        .await?;
                    if let Err(e) = ctx.runtime.start(&id).await {
                        let _ = ctx.runtime.stop_and_remove(&id).await;
                        return Err(e);
                    }
                    Ok::<_, RuntimeError>(id)
                }
                .await;
                match started {
                    Ok(id) => {
                        ctx.logs.cell(
                            &instance_id,
                            format!("Started sidecar {} of instance {index}", s.name),
                        );
                        let mut run = SidecarRun::new(id);
                        follow_sidecar(
                            ctx,
                            &mut run,
                            &instance_id,
                            &self.assignment,
                            source,
                            FollowFrom::Beginning,
                        )
                        .await;
                        self.sidecars.insert(s.name.clone(), run);
                    }
                    Err(e) => {
                        tracing::warn!(instance = %instance_id, sidecar = %s.name, error = %e, "cannot start sidecar");
                        ctx.logs.cell(
                            &instance_id,
                            format!("Cannot start sidecar {} of instance {index}: {e}", s.name),
                        );
                    }
                }
                continue;
            };
            let adopted = match self.sidecars.get(&s.name) {
                Some(run) => run.container_id != c.id,
                None => true,
            };
            if adopted {
                // A container of an earlier agent process: kept, its output followed from now.
                if let Some(mut old) = self.sidecars.remove(&s.name) {
                    old.abort();
                }
                let mut run = SidecarRun::new(c.id.clone());
                if c.running {
                    follow_sidecar(
                        ctx,
                        &mut run,
                        &instance_id,
                        &self.assignment,
                        source.clone(),
                        FollowFrom::Now,
                    )
                    .await;
                }
                self.sidecars.insert(s.name.clone(), run);
            }
            let Some(run) = self.sidecars.get_mut(&s.name) else {
                continue;
            };
            if !app_up {
                // Its network namespace went with the instance's container: it waits for the
                // instance to run again.
                if c.running {
                    if let Err(e) = ctx.runtime.kill(&run.container_id).await {
                        tracing::warn!(container = %run.container_id, error = %e, "cannot stop a sidecar");
                    }
                }
                run.held = true;
                run.restart_at = None;
                continue;
            }
            if c.running {
                if run.crash_count > 0 && now.duration_since(run.started) >= backoff::RESET_AFTER {
                    run.crash_count = 0;
                }
                continue;
            }
            let start_now = if run.held {
                true
            } else {
                match run.restart_at {
                    None => {
                        let reason = match ctx.runtime.inspect(&run.container_id).await {
                            Ok(status) => status.exit_reason(),
                            Err(e) => format!("unknown exit ({e})"),
                        };
                        run.crash_count = run.crash_count.saturating_add(1);
                        let delay = backoff::restart_delay(run.crash_count);
                        tracing::info!(instance = %instance_id, sidecar = %s.name, %reason, crashes = run.crash_count, delay_s = delay.as_secs(), "sidecar crashed");
                        ctx.logs.cell(
                            &instance_id,
                            format!(
                                "Sidecar {} of instance {index} crashed: {reason}{}",
                                s.name,
                                if delay.is_zero() {
                                    String::new()
                                } else {
                                    format!("; restarting it in {} s", delay.as_secs())
                                }
                            ),
                        );
                        run.restart_at = Some(now + delay);
                        delay.is_zero()
                    }
                    Some(at) => at <= now,
                }
            };
            if !start_now {
                continue;
            }
            match ctx.runtime.start(&run.container_id).await {
                Ok(()) => {
                    run.held = false;
                    run.restart_at = None;
                    run.started = now;
                    ctx.logs.cell(
                        &instance_id,
                        format!("Started sidecar {} of instance {index}", s.name),
                    );
                    follow_sidecar(
                        ctx,
                        run,
                        &instance_id,
                        &self.assignment,
                        source,
                        FollowFrom::Continue,
                    )
                    .await;
                }
                Err(e) => {
                    tracing::warn!(instance = %instance_id, sidecar = %s.name, error = %e, "cannot restart sidecar, retrying on the next pass");
                }
            }
        }
    }

    fn follow(&mut self, runtime: &Runtime, sink: &LogSink, from: FollowFrom) {
        // The previous follower stops where it is; its progress is where the next one begins.
        if let Some(old) = self.follower.take() {
            old.abort();
        }
        let a = &self.assignment;
        self.follower = Some(tokio::spawn(logs::follow(logs::Follow {
            docker: runtime.docker().clone(),
            container_id: self.container_id.clone(),
            log_path: self
                .log_path
                .clone()
                .filter(|_| runtime.settings().read_log_files),
            instance_id: a.instance_id.clone(),
            app: a.app.clone(),
            source: format!("APP/{}/{}", a.process_type, a.index),
            from,
            progress: self.last_seen.clone(),
            sink: sink.clone(),
        })));
    }

    fn set_phase(&mut self, phase: Phase) {
        if phase.state() != self.phase.state() {
            self.since = Utc::now();
        }
        self.phase = phase;
    }

    /// Advances the state machine by one step; `running` is what the engine listed this pass.
    async fn step(&mut self, ctx: &Ctx<'_>, running: bool) {
        let now = Instant::now();
        let health = self.assignment.health.clone();
        if !running && !matches!(self.phase, Phase::Crashed { .. }) {
            let reason = match ctx.runtime.inspect(&self.container_id).await {
                Ok(status) => status.exit_reason(),
                Err(e) => format!("unknown exit ({e})"),
            };
            self.crash(ctx, reason, now);
            return;
        }
        match self.phase {
            Phase::Starting { started, .. } => match self.check(ctx, running).await {
                Ok(()) => {
                    ctx.logs.cell(
                        &self.assignment.instance_id,
                        format!("Instance {} is healthy", self.assignment.index),
                    );
                    self.set_phase(Phase::Running {
                        healthy_since: now,
                        next_check: now + secs(health.interval_secs),
                    });
                    // Readiness is checked at once, so a ready instance is routed without delay.
                    self.next_ready_check = None;
                    self.check_readiness(ctx, running, now).await;
                }
                Err(e) if now.duration_since(started) >= secs(health.start_timeout_secs) => {
                    self.health_failed(ctx, &e, now).await;
                }
                Err(e) => {
                    tracing::debug!(instance = %self.assignment.instance_id, error = %e, "not healthy yet");
                    // Check eagerly right after start (most apps listen within a second),
                    // backing off to the configured start interval: push-to-serving time is
                    // mostly this wait. From 20 ms on (a refused connection costs next to
                    // nothing): with 100 ms a Python app listening after 110 ms waited until
                    // 200 ms, a tenth of a push's whole time (issue 24).
                    let eager = (now.duration_since(started) / 4).max(Duration::from_millis(20));
                    self.phase = Phase::Starting {
                        started,
                        next_check: now + eager.min(secs(health.start_interval_secs)),
                    };
                }
            },
            Phase::Running {
                healthy_since,
                next_check,
            } => {
                if self.crash_count > 0 && now.duration_since(healthy_since) >= backoff::RESET_AFTER
                {
                    self.crash_count = 0;
                }
                // Liveness and readiness run on their own schedules; a pass may be due for
                // either one only.
                if next_check <= now {
                    match self.check(ctx, running).await {
                        Ok(()) => {
                            self.phase = Phase::Running {
                                healthy_since,
                                next_check: now + secs(health.interval_secs),
                            };
                        }
                        Err(e) => {
                            self.health_failed(ctx, &e, now).await;
                            return;
                        }
                    }
                }
                self.check_readiness(ctx, running, now).await;
            }
            Phase::Crashed { restart_at } if restart_at <= now => self.restart(ctx).await,
            Phase::Crashed { .. } => {}
        }
    }

    /// The port the app listens on inside its container: 8080, or a Dockerfile image's own.
    fn app_port(&self) -> u16 {
        self.assignment.image.as_ref().map_or(APP_PORT, |i| i.port)
    }

    async fn check(&self, ctx: &Ctx<'_>, running: bool) -> Result<(), health::HealthError> {
        let h = &self.assignment.health;
        health::check(
            ctx.http,
            &h.check,
            health::Target {
                address: &ctx.runtime.settings().node_address,
                host_port: self.host_port,
                container: self.container_ip.as_deref().map(|ip| (ip, self.app_port())),
            },
            running,
            secs(h.invocation_timeout_secs),
        )
        .await
    }

    /// Runs the readiness check when one is configured and due, and records a change of result
    /// as a `CELL` line. Never kills or restarts: readiness only decides routing.
    async fn check_readiness(&mut self, ctx: &Ctx<'_>, running: bool, now: Instant) {
        let Some(r) = self.assignment.health.readiness.clone() else {
            return;
        };
        if self.next_ready_check.is_some_and(|due| due > now) {
            return;
        }
        let result = health::check(
            ctx.http,
            &r.check,
            health::Target {
                address: &ctx.runtime.settings().node_address,
                host_port: self.host_port,
                container: self.container_ip.as_deref().map(|ip| (ip, APP_PORT)),
            },
            running,
            secs(r.invocation_timeout_secs),
        )
        .await;
        self.next_ready_check = Some(now + secs(r.interval_secs.max(1)));
        let a = &self.assignment;
        match (self.ready, result) {
            (false, Ok(())) => {
                self.ready = true;
                tracing::info!(instance = %a.instance_id, "instance is ready");
                ctx.logs
                    .cell(&a.instance_id, format!("Instance {} is ready", a.index));
            }
            (true, Err(e)) => {
                self.ready = false;
                tracing::info!(instance = %a.instance_id, error = %e, "instance is not ready");
                ctx.logs.cell(
                    &a.instance_id,
                    format!(
                        "Instance {} is not ready: {e}; out of the routes until its readiness check passes",
                        a.index
                    ),
                );
            }
            (false, Err(e)) => {
                tracing::debug!(instance = %a.instance_id, error = %e, "not ready yet");
            }
            (true, Ok(())) => {}
        }
    }

    async fn health_failed(&mut self, ctx: &Ctx<'_>, error: &health::HealthError, now: Instant) {
        // What the instance's own network namespace shows, read before the kill: a reason the
        // user can act on ("listens on 127.0.0.1 only") rather than a refused connection.
        let port = self.app_port();
        let seen = match (&self.assignment.health.check, error) {
            (HealthCheck::Process, _) | (_, health::HealthError::NotRunning) => None,
            _ => ctx
                .runtime
                .listeners(&self.container_id)
                .await
                .and_then(|l| crate::runtime::diagnose_listeners(port, &l)),
        };
        let reason = match &seen {
            Some(why) => format!("{HEALTH_CHECK_FAILED}: {why}"),
            None => format!("{HEALTH_CHECK_FAILED}: {error}"),
        };
        let a = &self.assignment;
        tracing::info!(instance = %a.instance_id, error = %error, "health check failed");
        ctx.logs.cell(
            &a.instance_id,
            format!(
                "Instance {} failed its health check: {}",
                a.index,
                seen.as_deref().unwrap_or(&error.to_string())
            ),
        );
        if let Err(e) = ctx.runtime.kill(&self.container_id).await {
            tracing::warn!(container = %self.container_id, error = %e, "cannot kill unhealthy instance");
        }
        wait_not_running(ctx.runtime, &self.container_id).await;
        self.crash(ctx, reason, now);
    }

    fn crash(&mut self, ctx: &Ctx<'_>, reason: String, now: Instant) {
        let a = &self.assignment;
        self.crash_count = self.crash_count.saturating_add(1);
        if self.crash_count >= MAX_CRASHES {
            tracing::warn!(instance = %a.instance_id, app = %a.app, index = a.index, %reason, "instance crashed {MAX_CRASHES} times: giving up");
            ctx.logs.cell(
                &a.instance_id,
                format!(
                    "Instance {} crashed {MAX_CRASHES} times; not restarting it again: {reason}",
                    a.index
                ),
            );
            self.last_exit = Some(format!(
                "{}{MAX_CRASHES} crashes: {reason}",
                paas_common::agent::GAVE_UP_PREFIX
            ));
            self.set_phase(Phase::Crashed {
                restart_at: now + GIVE_UP_WAIT,
            });
            return;
        }
        let delay = backoff::restart_delay(self.crash_count);
        tracing::info!(instance = %a.instance_id, app = %a.app, index = a.index, %reason, crashes = self.crash_count, delay_s = delay.as_secs(), "instance crashed");
        ctx.logs.cell(
            &a.instance_id,
            format!("Instance {} crashed: {reason}", a.index),
        );
        self.last_exit = Some(reason);
        self.set_phase(Phase::Crashed {
            restart_at: now + delay,
        });
    }

    async fn restart(&mut self, ctx: &Ctx<'_>) {
        let a = &self.assignment;
        ctx.logs
            .cell(&a.instance_id, format!("Starting instance {}", a.index));
        let started = async {
            ctx.runtime.start(&self.container_id).await?;
            ctx.runtime.inspect(&self.container_id).await
        }
        .await;
        match started {
            Ok(status) => {
                self.restarts = self.restarts.saturating_add(1);
                // The engine may publish on a different random port after a restart.
                self.host_port = status.host_port;
                self.container_ip = status.ip;
                let now = Instant::now();
                self.set_phase(Phase::Starting {
                    started: now,
                    next_check: now,
                });
                // A restarted process must prove its readiness again.
                self.ready = self.assignment.health.readiness.is_none();
                self.follow(ctx.runtime, ctx.logs, FollowFrom::Continue);
            }
            Err(e) => {
                tracing::warn!(instance = %a.instance_id, error = %e, "restart failed, retrying on the next pass");
            }
        }
    }
}

/// A sidecar's log source: its instance's (`APP/web/0`) and `SIDECAR/<name>`, so filtering on
/// an instance shows its sidecars' lines too.
fn sidecar_source(a: &Assignment, name: &str) -> String {
    format!("APP/{}/{}/SIDECAR/{name}", a.process_type, a.index)
}

/// Follows a sidecar container's output (replacing an earlier follower of it).
async fn follow_sidecar(
    ctx: &Ctx<'_>,
    run: &mut SidecarRun,
    instance_id: &str,
    a: &Assignment,
    source: String,
    from: FollowFrom,
) {
    run.abort();
    let log_path = match ctx.runtime.inspect(&run.container_id).await {
        Ok(status) => status.log_path,
        Err(_) => None,
    };
    run.follower = Some(tokio::spawn(logs::follow(logs::Follow {
        docker: ctx.runtime.docker().clone(),
        container_id: run.container_id.clone(),
        log_path: log_path.filter(|_| ctx.runtime.settings().read_log_files),
        instance_id: instance_id.to_string(),
        app: a.app.clone(),
        source,
        from,
        progress: run.last_seen.clone(),
        sink: ctx.logs.clone(),
    })));
}

async fn wait_not_running(runtime: &Runtime, container_id: &str) {
    let deadline = Instant::now() + KILL_WAIT;
    while Instant::now() < deadline {
        match runtime.inspect(container_id).await {
            Ok(status) if status.running => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => return,
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
