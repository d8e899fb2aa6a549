//! One-off tasks (issue 21, Cloud Foundry v3 tasks): run a command once on the app's current
//! droplet with its current revision's env, terminate one, and the release phase of a push (the
//! droplet's `release:` process run as a task before the new revision becomes current). Each
//! records intent with its event and wakes convergence, which places the task; the node runs it.

use paas_common::api::{PushProgress, RunTaskRequest, TaskState};
use paas_common::ErrorCode;
use std::collections::BTreeMap;
use std::time::Duration;

use super::push::Progress;
use super::{event, Actor, DeployError, DeployResult};
use crate::state::AppCtx;
use crate::store::{AppRecord, NewTask, TaskRecord, KIND_RELEASE, KIND_TASK};

/// Longest task name.
const MAX_NAME: usize = 100;
/// Longest command (Cloud Foundry allows 4 KiB).
const MAX_COMMAND: usize = 4096;

fn size(what: &str, v: Option<&str>, default: u64) -> DeployResult<u64> {
    match v {
        None => Ok(default),
        Some(s) => paas_common::domain::parse_memory_mb(s)
            .map_err(|e| DeployError::bad(format!("invalid {what} {s:?}: {e}"))),
    }
}

/// Starts a task on the app's current droplet and env; returns it pending.
pub async fn run_task(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    req: &RunTaskRequest,
) -> DeployResult<TaskRecord> {
    let command = req.command.trim();
    if command.is_empty() || req.command.len() > MAX_COMMAND {
        return Err(DeployError::bad(format!(
            "a task needs a command of 1 to {MAX_COMMAND} bytes"
        )));
    }
    let name = req.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > MAX_NAME || n.chars().any(char::is_control)) {
        return Err(DeployError::bad(format!(
            "a task name has at most {MAX_NAME} printable characters"
        )));
    }
    let memory_mb = size("memory", req.memory.as_deref(), app.memory_mb)?;
    let disk_mb = size("disk", req.disk.as_deref(), app.disk_mb)?;
    if memory_mb == 0 || disk_mb == 0 {
        return Err(DeployError::bad("memory and disk must be above 0"));
    }
    let Some(number) = app.current_revision else {
        return Err(DeployError::RevisionNotFound(format!(
            "app {:?} has no droplet yet: push it first",
            app.name
        )));
    };
    let rev = ctx
        .store
        .revision(&app.id, number)
        .await?
        .ok_or_else(|| DeployError::RevisionNotFound(format!("revision {number} not found")))?;
    let ev = event(
        actor,
        app,
        "task.create",
        format!("{} ran {command:?} ({memory_mb} MB)", actor.username),
    );
    let task = ctx
        .store
        .create_task(
            &NewTask {
                app_id: app.id.clone(),
                name: name.map(str::to_string),
                kind: KIND_TASK.into(),
                command: command.to_string(),
                droplet: rev.droplet.clone(),
                revision: rev.number,
                env: rev.env.clone(),
                memory_mb,
                disk_mb,
                created_by: actor.username.clone(),
            },
            &ev,
        )
        .await?;
    tracing::info!(app = %app.name, task = task.sequence, "task created");
    ctx.converge.notify_one();
    Ok(task)
}

/// The app's task `sequence`.
pub async fn find(ctx: &AppCtx, app: &AppRecord, sequence: u64) -> DeployResult<TaskRecord> {
    ctx.store.app_task(&app.id, sequence).await?.ok_or_else(|| {
        DeployError::invalid(
            ErrorCode::TaskNotFound,
            format!("app {:?} has no task {sequence}", app.name),
        )
    })
}

/// Ends a task that has not finished: FAILED `terminated`; its node stops and removes the
/// container once it no longer finds the task in its list.
pub async fn terminate(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    sequence: u64,
) -> DeployResult<TaskRecord> {
    let task = find(ctx, app, sequence).await?;
    if task.state.finished() {
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!("task {sequence} has already ended ({})", task.state),
        ));
    }
    let Some(after) = ctx
        .store
        .fail_task(
            None,
            &task.id,
            crate::control::tasks::TERMINATED,
            &actor.actor,
        )
        .await?
    else {
        // It ended between the read and the write.
        return find(ctx, app, sequence).await;
    };
    crate::control::tasks::log(
        ctx,
        &after,
        format!("Task {sequence} terminated by {}", actor.username),
    )
    .await;
    ctx.bump_assignments();
    Ok(after)
}

/// What the release phase runs: the droplet's `release:` command with the new revision's env.
pub struct Release<'a> {
    pub droplet: &'a str,
    pub command: &'a str,
    /// As the new revision will keep it (secrets sealed).
    pub env: &'a BTreeMap<String, String>,
    /// The number the new revision will get (shown by the task).
    pub revision: i64,
}

/// Runs the release phase once and waits for its end (Heroku's contract): `Ok` when it
/// succeeded; `release_failed` with its exit code or reason otherwise, and the caller makes no
/// new revision. Its states go to the push output as they change.
pub async fn run_release(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    r: &Release<'_>,
    progress: &Progress,
    timeout: Duration,
) -> DeployResult<()> {
    let ev = event(
        actor,
        app,
        "task.create",
        format!(
            "release phase of {}'s push: {:?}",
            actor.username, r.command
        ),
    );
    let task = ctx
        .store
        .create_task(
            &NewTask {
                app_id: app.id.clone(),
                name: Some("release".into()),
                kind: KIND_RELEASE.into(),
                command: r.command.to_string(),
                droplet: r.droplet.to_string(),
                revision: r.revision,
                env: r.env.clone(),
                memory_mb: app.memory_mb,
                disk_mb: app.disk_mb,
                created_by: actor.username.clone(),
            },
            &ev,
        )
        .await?;
    super::log_platform(
        ctx,
        app,
        "API",
        format!(
            "Running the release phase as task {}: {}",
            task.sequence, r.command
        ),
    )
    .await;
    ctx.converge.notify_one();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = None;
    loop {
        let now = find(ctx, app, task.sequence).await?;
        if seen != Some(now.state) {
            seen = Some(now.state);
            progress.send(PushProgress::Release {
                task: now.sequence,
                state: now.state,
                exit_code: now.exit_code,
                reason: now.reason.clone().filter(|_| now.state.finished()),
            });
        }
        match now.state {
            TaskState::Succeeded => return Ok(()),
            TaskState::Failed => {
                let why = match (now.exit_code, &now.reason) {
                    (Some(c), _) => format!("exited with code {c}"),
                    (None, Some(r)) => r.clone(),
                    (None, None) => "failed".into(),
                };
                return Err(release_failed(ctx, actor, app, &now, &why).await);
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            // Ended here so it cannot run later, after the push gave up on it.
            ctx.store
                .fail_task(None, &now.id, "timed out", "platform")
                .await?;
            ctx.bump_assignments();
            let why = format!("did not end within {} s", timeout.as_secs());
            return Err(release_failed(ctx, actor, app, &now, &why).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn release_failed(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    t: &TaskRecord,
    why: &str,
) -> DeployError {
    let message = format!(
        "the release phase (task {}) {why}: the deploy stopped, the previous revision keeps serving",
        t.sequence
    );
    let ev = event(actor, app, "app.release_failed", message.clone());
    if let Err(e) = ctx.store.add_event(&ev).await {
        tracing::warn!(error = %e, "cannot record the release failure");
    }
    super::log_platform(ctx, app, "API", message.clone()).await;
    DeployError::invalid(ErrorCode::ReleaseFailed, message)
}
