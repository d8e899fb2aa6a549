//! One-off tasks on this node (issue 21): each assigned task runs once in a container made by
//! the same sandboxed creation code as instances ([`crate::reconcile::create_container`]),
//! labelled as a task, never restarted. Its output goes to the app's logs as `TASK/<id>`; its end
//! (exit code) is reported in the heartbeat until the controller stops listing it, and then its
//! container is removed.
//!
//! **At most once, from the node's side.** Before a task's container is started its id is
//! written to a ledger on disk (fsynced). A pass that finds a labelled container adopts and
//! reports it; one that finds the task in the ledger and no container reports it `lost`, never
//! starts it again. So an agent restart, a lost assignment reply or a container removed behind
//! the agent's back never runs a task twice.

use crate::crashes::Ledger;
use crate::logs::{self, FollowFrom, LastSeen, LogSink};
use crate::runtime::{DropletSource, OwnedContainer, Runtime, RuntimeError};
use paas_common::agent::{TaskAssignment, TaskReport};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// What a task that was started before but whose container is gone is reported as.
pub const LOST: &str = "lost";
/// How long a pass waits for an ended task's last output before reporting its end.
const OUTPUT_WAIT: Duration = Duration::from_secs(3);

struct Running {
    container_id: String,
    follower: Option<JoinHandle<()>>,
    /// Set once the container ended: what is reported from then on.
    ended: Option<TaskReport>,
}

pub struct TaskRunner {
    runtime: Arc<Runtime>,
    droplets: Arc<dyn DropletSource>,
    logs: LogSink,
    /// Ids of every assigned task this node started (the value is its container's name-free
    /// marker, `true`), kept on disk.
    started: Ledger<bool>,
    running: HashMap<String, Running>,
    /// Removals of containers no longer assigned, in flight.
    removing: HashMap<String, JoinHandle<Result<(), RuntimeError>>>,
}

impl TaskRunner {
    pub fn new(
        runtime: Arc<Runtime>,
        droplets: Arc<dyn DropletSource>,
        logs: LogSink,
        ledger: &std::path::Path,
    ) -> Self {
        Self {
            runtime,
            droplets,
            logs,
            started: Ledger::load(ledger),
            running: HashMap::new(),
            removing: HashMap::new(),
        }
    }

    fn remember(&mut self, ids: impl Iterator<Item = String>) -> std::io::Result<()> {
        let mut records = self.started.records().clone();
        records.extend(ids.map(|id| (id, true)));
        self.started.sync(records)
    }

    /// One pass: remove what is no longer assigned, adopt or start what is, note what ended.
    pub async fn reconcile(&mut self, assigned: &[TaskAssignment]) -> Result<(), RuntimeError> {
        self.removing.retain(|_, h| !h.is_finished());
        let wanted: HashMap<&str, &TaskAssignment> = assigned
            .iter()
            .map(|t| (t.run.instance_id.as_str(), t))
            .collect();
        let containers = self.runtime.list_tasks().await?;
        let mut listed: HashMap<&str, &OwnedContainer> = HashMap::new();
        for c in &containers {
            if wanted.contains_key(c.instance_id.as_str()) {
                listed.insert(c.instance_id.as_str(), c);
            } else if !self.removing.contains_key(&c.id) {
                // Ended and recorded, terminated, or its app deleted: the container goes.
                tracing::info!(task = %c.instance_id, container = %c.id, "removing task container");
                if let Some(r) = self.running.remove(&c.instance_id) {
                    if let Some(f) = r.follower {
                        f.abort();
                    }
                }
                let runtime = self.runtime.clone();
                let id = c.id.clone();
                self.removing.insert(
                    c.id.clone(),
                    tokio::spawn(async move { runtime.stop_and_remove(&id).await }),
                );
            }
        }
        self.running
            .retain(|id, _| wanted.contains_key(id.as_str()));
        // The ledger forgets a task once the controller no longer lists it: it has its end.
        let keep: BTreeMap<String, bool> = self
            .started
            .records()
            .iter()
            .filter(|(id, _)| wanted.contains_key(id.as_str()))
            .map(|(id, v)| (id.clone(), *v))
            .collect();
        if let Err(e) = self.started.sync(keep) {
            tracing::warn!(error = %e, "cannot write the task ledger");
        }

        for t in assigned {
            let id = t.run.instance_id.as_str();
            match listed.get(id) {
                Some(c) => self.observe(t, c).await,
                None if self.started.get(id).is_some() => {
                    // Started once, container gone: it is not run again.
                    if self.running.get(id).is_none_or(|r| r.ended.is_none()) {
                        tracing::warn!(task = %id, "task container is gone");
                        self.running.insert(
                            id.to_string(),
                            Running {
                                container_id: String::new(),
                                follower: None,
                                ended: Some(TaskReport {
                                    task_id: id.to_string(),
                                    exit_code: None,
                                    failure: Some(LOST.into()),
                                }),
                            },
                        );
                    }
                }
                None => {
                    if let Err(e) = self.start(t).await {
                        tracing::warn!(task = %id, app = %t.run.app, error = %e, "cannot start task");
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates the container, records the task as started, then starts it.
    async fn start(&mut self, t: &TaskAssignment) -> Result<(), RuntimeError> {
        let a = &t.run;
        let id = crate::reconcile::create_container(
            &self.runtime,
            self.droplets.as_ref(),
            &self.logs,
            a,
            true,
            None,
        )
        .await?;
        // On disk before the start: whatever happens next, this node never starts it again.
        if let Err(e) = self.remember(std::iter::once(a.instance_id.clone())) {
            tracing::warn!(task = %a.instance_id, error = %e, "cannot record the task as started; not starting it");
            let _ = self.runtime.stop_and_remove(&id).await;
            return Ok(());
        }
        self.logs.platform(
            &a.instance_id,
            &source(t),
            format!("Starting task {} ({}): {}", t.sequence, t.name, a.command),
        );
        self.runtime.start(&id).await?;
        tracing::info!(task = %a.instance_id, app = %a.app, container = %id, "started task");
        let follower = self.follow(t, &id, FollowFrom::Beginning).await;
        self.running.insert(
            a.instance_id.clone(),
            Running {
                container_id: id,
                follower,
                ended: None,
            },
        );
        Ok(())
    }

    async fn follow(
        &self,
        t: &TaskAssignment,
        container_id: &str,
        from: FollowFrom,
    ) -> Option<JoinHandle<()>> {
        let log_path = match self.runtime.inspect(container_id).await {
            Ok(s) => s.log_path,
            Err(_) => None,
        };
        Some(tokio::spawn(logs::follow(logs::Follow {
            docker: self.runtime.docker().clone(),
            container_id: container_id.to_string(),
            log_path: log_path.filter(|_| self.runtime.settings().read_log_files),
            instance_id: t.run.instance_id.clone(),
            app: t.run.app.clone(),
            source: source(t),
            from,
            progress: LastSeen::default(),
            sink: self.logs.clone(),
        })))
    }

    /// A listed container of an assigned task: adopt it (after an agent restart), start it if
    /// it was created but never started, or note its end.
    async fn observe(&mut self, t: &TaskAssignment, c: &OwnedContainer) {
        let id = t.run.instance_id.clone();
        if self.running.get(&id).is_some_and(|r| r.ended.is_some()) {
            return;
        }
        let status = match self.runtime.inspect(&c.id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "cannot inspect task container");
                return;
            }
        };
        // The engine's zero time: created, never started (the agent stopped in between).
        let never_started = !status.running && status.started_at.is_none_or(|t| t.timestamp() < 0);
        if !self.running.contains_key(&id) {
            // Never started means it never ran, whatever the ledger says (it is written just
            // before the start): starting it now is its one run.
            let (from, start) = if never_started {
                (FollowFrom::Beginning, true)
            } else if status.running {
                // Adopted: what it printed while no agent ran was shipped by the previous
                // process up to its last position, or is lost; never twice.
                (FollowFrom::Now, false)
            } else {
                (FollowFrom::Beginning, false)
            };
            if start {
                if self.remember(std::iter::once(id.clone())).is_err() {
                    return;
                }
                if let Err(e) = self.runtime.start(&c.id).await {
                    tracing::warn!(task = %id, error = %e, "cannot start task");
                    return;
                }
            } else if let Err(e) = self.remember(std::iter::once(id.clone())) {
                tracing::warn!(error = %e, "cannot write the task ledger");
            }
            let follower = if status.running || start {
                self.follow(t, &c.id, from).await
            } else {
                None
            };
            self.running.insert(
                id.clone(),
                Running {
                    container_id: c.id.clone(),
                    follower,
                    ended: None,
                },
            );
            if status.running || start {
                return;
            }
        }
        if status.running {
            return;
        }
        let Some(r) = self.running.get_mut(&id) else {
            return;
        };
        // Its last lines first, so they are in the logs before its end is.
        if let Some(f) = r.follower.take() {
            let _ = tokio::time::timeout(OUTPUT_WAIT, f).await;
        }
        let failure = status.oom_killed.then(|| "OOM-killed".to_string());
        tracing::info!(task = %id, container = %r.container_id, exit_code = status.exit_code, "task ended");
        self.logs.platform(
            &id,
            &source(t),
            format!("Task {} exited with code {}", t.sequence, status.exit_code),
        );
        r.ended = Some(TaskReport {
            task_id: id.clone(),
            exit_code: Some(status.exit_code),
            failure,
        });
    }

    /// What the heartbeat reports: every assigned task this node started, running or ended.
    pub fn reports(&self) -> Vec<TaskReport> {
        let mut out: Vec<TaskReport> = self
            .running
            .iter()
            .map(|(id, r)| {
                r.ended.clone().unwrap_or_else(|| TaskReport {
                    task_id: id.clone(),
                    exit_code: None,
                    failure: None,
                })
            })
            .collect();
        out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        out
    }
}

fn source(t: &TaskAssignment) -> String {
    format!("TASK/{}", t.sequence)
}
