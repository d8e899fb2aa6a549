//! The running agent: startup (engine, stack image, network, registration) and the loops that
//! run side by side until shutdown: assignment long-poll, reconcile, heartbeat and log shipping.
//! They talk through watch channels that always hold the latest value, so a slow or absent
//! controller never blocks the reconciler: instances keep running on the last known list.

use crate::client::{ClientError, ControllerClient, RETRY_MAX, RETRY_MIN};
use crate::config::{ConfigError, Settings};
use crate::logs::{self, LogSink};
use crate::reconcile::Reconciler;
use crate::runtime::{self, Runtime, RuntimeError, RuntimeSettings};
use crate::stack::{self, StackError};
use futures_util::StreamExt;
use paas_common::agent::{
    Assignments, Heartbeat, InstanceReport, RegisterRequest, ServiceReport, TaskReport,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Periodic pass even without news, to catch exits and drift the events stream missed.
const RECONCILE_TICK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot reach the docker engine: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("stack image: {0}")]
    Stack(#[from] StackError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("{0} loop ended unexpectedly")]
    LoopEnded(&'static str),
    #[error("instance identity folder: {0}")]
    Identity(String),
}

/// Builds the stack images (only), for `paas-agent stack build` and CI: every stack, or the one
/// named.
pub async fn build_stacks(
    settings: &Settings,
    only: Option<&str>,
    force: bool,
) -> Result<Vec<(&'static str, stack::StackOutcome)>, AgentError> {
    let docker = runtime::connect_docker().await?;
    // Every stack at once: each has its own lock and temp tree, and the time goes to the mirror.
    let builds = stack::STACKS
        .iter()
        .filter(|s| only.is_none_or(|o| o == s.name))
        .map(|s| async {
            let outcome = stack::ensure_stack(&docker, s, &settings.debian_mirror, force).await?;
            Ok::<_, AgentError>((s.name, outcome))
        });
    let mut built = futures_util::future::try_join_all(builds).await?;
    // The service image starts from the trixie run image, so it comes after the stacks.
    if only.is_none() {
        let outcome = crate::service_image::ensure(&docker, force).await?;
        built.push(("service", outcome));
    }
    Ok(built)
}

/// Runs the agent until one of its loops fails; the caller races this against shutdown signals.
/// Containers are never stopped on exit: they keep serving and are re-adopted on restart.
pub async fn run(settings: Settings) -> Result<(), AgentError> {
    let join_token = settings.resolve_join_token()?;
    let docker = runtime::connect_docker().await?;
    futures_util::future::try_join_all(
        stack::STACKS
            .iter()
            .map(|s| stack::ensure_stack(&docker, s, &settings.debian_mirror, false)),
    )
    .await?;
    // Without the service image the node still runs apps; a service placed here reports why
    // its container does not start.
    if let Err(e) = crate::service_image::ensure(&docker, false).await {
        tracing::warn!(error = %e, "no service image: built-in service containers cannot start on this node");
    }
    let runtime = Arc::new(Runtime::new(
        docker,
        RuntimeSettings::from_settings(&settings),
    ));
    runtime.ensure_network().await?;
    let staging = Arc::new(crate::staging::StagingSettings::from_settings(&settings));
    let detected = crate::capacity::detect(
        &settings,
        &crate::capacity::engine_info(runtime.docker()).await,
    );
    let capacity = detected.capacity.clone();
    tracing::info!(
        memory_mb = capacity.memory_mb,
        memory_from = %detected.memory_from,
        disk_mb = capacity.disk_mb,
        disk_from = %detected.disk_from,
        instance_slots = capacity.instance_slots,
        "capacity offered to the scheduler"
    );

    let request = RegisterRequest {
        node_name: settings.node_name.clone(),
        address: settings.node_address.clone(),
        zone: settings.zone.clone(),
        labels: settings.labels.clone(),
        capacity: capacity.clone(),
        subnet: runtime.instance_net().map(|n| n.subnet.clone()),
    };
    let client = Arc::new(ControllerClient::new(
        &settings.controller,
        join_token,
        request,
    )?);
    let registered = client.register_until_ok().await;
    // Beat at least as often as the controller expects, or it may think the node is lost.
    let mut interval = Duration::from_millis(settings.heartbeat_interval_ms.max(100));
    if registered.heartbeat_interval_secs > 0 {
        interval = interval.min(Duration::from_secs(registered.heartbeat_interval_secs));
    }

    let (assignments_tx, assignments_rx) = watch::channel(None::<Assignments>);
    let (reports_tx, reports_rx) = watch::channel(Vec::<InstanceReport>::new());
    let refetch = Arc::new(Notify::new());
    let (sink, log_rx) = LogSink::with_limits(logs::RateLimit {
        lines_per_sec: settings.log_rate_limit_lines,
        bytes_per_sec: settings.log_rate_limit_bytes,
    });
    let sink = sink.with_app_ceiling(settings.log_rate_limit_max_bytes);
    let counters = sink.counters.clone();
    let task_runner = crate::tasks::TaskRunner::new(
        runtime.clone(),
        client.clone(),
        sink.clone(),
        &settings.data_dir.join("tasks-started.json"),
    );
    let (task_reports_tx, task_reports_rx) = watch::channel(Vec::<TaskReport>::new());
    let identity = Arc::new(
        crate::identity::Identity::new(settings.data_dir.join("identity"), client.clone())
            .map_err(|e| AgentError::Identity(e.to_string()))?,
    );
    let reconciler = Reconciler::new(runtime.clone(), client.clone(), sink)
        .with_identity(identity.clone())
        .with_crash_ledger(&settings.data_dir.join("crashes.json"))
        .with_log_positions(&settings.data_dir.join("log-positions.json"));
    let usage = crate::stats::UsageMap::default();
    tokio::spawn(crate::stats::run(
        runtime.docker().clone(),
        reports_rx.clone(),
        usage.clone(),
    ));
    if let Some(listen) = settings.metrics_listen.as_deref().filter(|l| !l.is_empty()) {
        crate::metrics::serve(listen, counters.clone()).await?;
    }
    let mut log_rx = log_rx;
    let spool = match crate::spool::Spool::open(
        settings.data_dir.join("log-spool.jsonl"),
        settings.log_spool_mb * 1024 * 1024,
    ) {
        Ok(s) => Some(s),
        Err(e) => {
            // Shipping still works; only an outage longer than the memory buffer loses lines.
            tracing::warn!(error = %e, "no disk log spool");
            None
        }
    };

    let (service_reports_tx, service_reports_rx) = watch::channel(Vec::<ServiceReport>::new());
    let services = crate::services::ServiceRunner::new(runtime.clone(), client.clone());
    let service_assignments = assignments_rx.clone();
    let build_assignments = assignments_rx.clone();
    let image_assignments = assignments_rx.clone();
    // App-to-app networking (issue 25): the resolver instances use, and the policy rules.
    if let Some(net) = runtime.instance_net().cloned() {
        tokio::spawn(crate::dns::serve(net.gateway, assignments_rx.clone()));
        tokio::spawn(crate::netpolicy::keep(
            settings.node_name.clone(),
            net.subnet,
            assignments_rx.clone(),
        ));
    }
    let identity_assignments = assignments_rx.clone();
    tokio::select! {
        () = poll_assignments(client.clone(), assignments_tx, refetch.clone()) => Err(AgentError::LoopEnded("assignments")),
        () = reconcile_loop(reconciler, task_runner, assignments_rx.clone(), reports_tx, task_reports_tx) => Err(AgentError::LoopEnded("reconcile")),
        () = heartbeat_loop(client.clone(), capacity, interval, (reports_rx, task_reports_rx, service_reports_rx), assignments_rx, refetch, usage) => Err(AgentError::LoopEnded("heartbeat")),
        () = logs::ship_counted(&mut log_rx, client.clone(), counters, spool) => Err(AgentError::LoopEnded("log shipping")),
        () = crate::staging::run_builds(runtime.clone(), client.clone(), staging, build_assignments) => Err(AgentError::LoopEnded("staging")),
        () = services_loop(services, service_assignments, service_reports_tx) => Err(AgentError::LoopEnded("services")),
        () = crate::identity::run(identity, identity_assignments) => Err(AgentError::LoopEnded("instance identity")),
        () = remove_collected_images(runtime.clone(), image_assignments) => Err(AgentError::LoopEnded("image collection")),
        () = crate::ssh::run(client.clone(), runtime.docker().clone(), settings.node_name.clone()) => Err(AgentError::LoopEnded("ssh sessions")),
    }
}

/// Removes the images of droplets the controller collected, as each assignment list names them.
async fn remove_collected_images(
    runtime: Arc<Runtime>,
    mut assignments: watch::Receiver<Option<Assignments>>,
) {
    let mut done = std::collections::HashSet::new();
    loop {
        let collected = assignments
            .borrow_and_update()
            .as_ref()
            .map(|a| a.collected_images.clone())
            .unwrap_or_default();
        // Forget what the controller no longer lists, so `done` stays as small as its list.
        done.retain(|id| collected.contains(id));
        crate::dockerfile::remove_collected(&runtime, &collected, &mut done).await;
        if assignments.changed().await.is_err() {
            return;
        }
    }
}

/// Keeps the node's built-in service containers as the assignment list says (issue 22): at
/// once on a new list, and every few seconds to restart one that exited.
async fn services_loop(
    mut runner: crate::services::ServiceRunner,
    mut assignments: watch::Receiver<Option<Assignments>>,
    reports: watch::Sender<Vec<ServiceReport>>,
) {
    loop {
        // Nothing before the first list: an empty guess would remove every service's data.
        let desired = assignments.borrow_and_update().clone();
        if let Some(desired) = desired {
            if let Err(e) = runner.reconcile(&desired.services).await {
                tracing::warn!(error = %e, "service pass failed");
            }
            let fresh = runner.reports();
            reports.send_if_modified(|current| {
                let changed = *current != fresh;
                *current = fresh;
                changed
            });
        }
        tokio::select! {
            changed = assignments.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RECONCILE_TICK) => {}
        }
    }
}

/// Publishes every new assignment list. On failure the last list stays published.
async fn poll_assignments(
    client: Arc<ControllerClient>,
    tx: watch::Sender<Option<Assignments>>,
    refetch: Arc<Notify>,
) {
    let mut delay = RETRY_MIN;
    loop {
        let after = tx.borrow().as_ref().map(|a| a.version);
        let result = tokio::select! {
            r = client.assignments(after) => r,
            // The heartbeat saw a newer version: drop the held poll and ask again at once.
            () = refetch.notified() => continue,
        };
        match result {
            Ok(list) => {
                delay = RETRY_MIN;
                tx.send_if_modified(|current| {
                    let changed = current.as_ref().map(|c| c.version) != Some(list.version);
                    if changed {
                        tracing::info!(
                            version = list.version,
                            instances = list.instances.len(),
                            "new assignments"
                        );
                    }
                    *current = Some(list);
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "cannot fetch assignments, keeping the last list");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = refetch.notified() => {}
                }
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

async fn reconcile_loop(
    mut reconciler: Reconciler,
    mut tasks: crate::tasks::TaskRunner,
    mut assignments: watch::Receiver<Option<Assignments>>,
    reports: watch::Sender<Vec<InstanceReport>>,
    task_reports: watch::Sender<Vec<TaskReport>>,
) {
    let mut exits = Box::pin(reconciler.runtime().exit_events());
    let mut events_alive = true;
    loop {
        // Until the first list arrives we know nothing: acting on "no assignments" would stop
        // every running instance after an agent restart.
        let desired = assignments.borrow_and_update().clone();
        if let Some(desired) = desired {
            if let Err(e) = reconciler.reconcile(&desired.instances).await {
                tracing::warn!(error = %e, "reconcile pass failed");
            }
            let fresh = reconciler.reports();
            reports.send_if_modified(|current| {
                let changed = !same_reports(current, &fresh);
                *current = fresh;
                changed
            });
            if let Err(e) = tasks.reconcile(&desired.tasks).await {
                tracing::warn!(error = %e, "task pass failed");
            }
            let fresh = tasks.reports();
            task_reports.send_if_modified(|current| {
                let changed = *current != fresh;
                *current = fresh;
                changed
            });
        }
        let wake = reconciler
            .next_due()
            .map_or(Instant::now() + RECONCILE_TICK, |due| {
                due.min(Instant::now() + RECONCILE_TICK)
            });
        tokio::select! {
            changed = assignments.changed() => if changed.is_err() { return },
            () = tokio::time::sleep_until(wake) => {}
            event = exits.next(), if events_alive => {
                if event.is_none() {
                    // The periodic pass still catches exits, just later.
                    tracing::warn!("docker event stream ended");
                    events_alive = false;
                }
            }
        }
    }
}

/// Equal as far as the controller cares; `since` changes only with the state.
fn same_reports(a: &[InstanceReport], b: &[InstanceReport]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.instance_id == y.instance_id
                && x.state == y.state
                && x.container_id == y.container_id
                && x.host_port == y.host_port
                && x.restarts == y.restarts
                && x.last_exit == y.last_exit
                && x.since == y.since
                && x.ready == y.ready
                && x.ip == y.ip
        })
}

/// What the heartbeat sends: instances, tasks and service containers, each as its loop last
/// saw them.
type ReportReceivers = (
    watch::Receiver<Vec<InstanceReport>>,
    watch::Receiver<Vec<TaskReport>>,
    watch::Receiver<Vec<ServiceReport>>,
);

async fn heartbeat_loop(
    client: Arc<ControllerClient>,
    capacity: paas_common::agent::NodeCapacity,
    interval: Duration,
    (mut reports, mut task_reports, mut service_reports): ReportReceivers,
    assignments: watch::Receiver<Option<Assignments>>,
    refetch: Arc<Notify>,
    usage: crate::stats::UsageMap,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = reports.changed() => if changed.is_err() { return },
            changed = task_reports.changed() => if changed.is_err() { return },
            changed = service_reports.changed() => if changed.is_err() { return },
        }
        let mut instances = reports.borrow_and_update().clone();
        let tasks = task_reports.borrow_and_update().clone();
        let services = service_reports.borrow_and_update().clone();
        {
            let usage = usage.lock().unwrap_or_else(|p| p.into_inner());
            for r in &mut instances {
                r.usage = usage.get(&r.instance_id).cloned();
            }
        }
        let heartbeat = Heartbeat {
            capacity: capacity.clone(),
            instances,
            tasks,
            services,
        };
        match client.heartbeat(&heartbeat).await {
            Ok(resp) => {
                if failing {
                    tracing::info!("heartbeat recovered");
                    failing = false;
                }
                let known = assignments.borrow().as_ref().map(|a| a.version);
                if known != Some(resp.assignments_version) {
                    refetch.notify_one();
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
                failing = true;
            }
        }
    }
}
