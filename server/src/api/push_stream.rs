//! The streamed push: `POST /v1/apps/NAME/push` with `Accept: application/x-ndjson` answers 200
//! once the upload and archive passed their checks (until then errors are the usual 4xx JSON),
//! then one JSON line per step ([`PushProgress`]): upload, archive, live `STG` lines, droplet,
//! revision, instance counts and each instance's changes, and always last a `result` line whose
//! `status` is `succeeded` (every desired instance of the new revision runs) or `failed` with a
//! stable `code` (`staging_failed`, `start_failed`, `no_node_available` when the first instance
//! cannot be placed, ...). A CI job thus sees staging live and can still tell
//! success from failure, although the HTTP status was sent before the outcome was known.
//!
//! The deploy runs in its own task: a client that disconnects does not cancel a push that was
//! accepted.

use actix_web::{web, HttpRequest, HttpResponse};
use paas_common::api::{AppState, InstanceState, PushPhases, PushProgress, PushResult, PushStatus};
use paas_common::{ApiError, ErrorCode};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

use super::apps::{detail, find_app};
use super::Ctx;
use crate::auth::AuthUser;
use crate::deploy::push::{deploy, Prepared, Progress};
use crate::deploy::Actor;
use crate::error::Error;

pub const NDJSON: &str = "application/x-ndjson";

/// Whether the client asked for the stream.
pub fn wanted(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().starts_with(NDJSON)))
}

/// `received`: when the push request arrived (the upload phase's start).
pub fn respond(
    ctx: Ctx,
    user: AuthUser,
    prep: Prepared,
    app_id: String,
    received: Instant,
) -> HttpResponse {
    let clock = Clock {
        received,
        checked: Instant::now(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Progress::to(tx);
    progress.send(PushProgress::Upload {
        bytes: prep.package_size,
    });
    progress.send(PushProgress::Archive {
        files: prep.unpacked.files,
        bytes: prep.unpacked.bytes,
        detected: prep.staged.detected.clone(),
    });
    actix_web::rt::spawn(run(ctx, user, prep, app_id, progress, clock));
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let p = rx.recv().await?;
        let mut line = serde_json::to_vec(&p).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(line)), rx))
    });
    HttpResponse::Ok()
        .content_type(NDJSON)
        // Proxies must pass each line on as it comes.
        .insert_header(("X-Accel-Buffering", "no"))
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(lines)
}

/// Staging's lines, and a release phase's output (its task's lines) while the push waits for it.
fn stg_line(progress: &Progress, line: &paas_common::api::LogLine) {
    if line.source == "STG" || line.source.starts_with("TASK/") {
        progress.send(PushProgress::Log {
            source: line.source.clone(),
            message: line.message.clone(),
        });
    }
}

/// Forwards the app's `STG` lines until dropped.
async fn forward_staging(
    logs: &mut broadcast::Receiver<std::sync::Arc<paas_common::api::LogLine>>,
    progress: &Progress,
) {
    loop {
        match logs.recv().await {
            Ok(line) => stg_line(progress, &line),
            Err(broadcast::error::RecvError::Lagged(n)) => progress.send(PushProgress::Log {
                source: "API".into(),
                message: format!("{n} staging lines skipped (the stream fell behind)"),
            }),
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

fn failed(error: ApiError, app: Option<paas_common::api::AppDetail>) -> PushProgress {
    PushProgress::Result(PushResult {
        status: PushStatus::Failed,
        code: Some(error.code),
        message: Some(error.message),
        app: app.map(Box::new),
        phases: None,
    })
}

/// When the push arrived and when its upload had passed every check.
#[derive(Debug, Clone, Copy)]
struct Clock {
    received: Instant,
    checked: Instant,
}

/// The controller's view of a push's steps, each ending when it first saw the condition (a
/// heartbeat wakes the wait, so that is within a few milliseconds of the node's report).
#[derive(Debug, Default)]
struct Ends {
    started: Option<Instant>,
    healthy: Option<Instant>,
}

fn ms(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_millis() as u64
}

impl Clock {
    fn phases(&self, progress: &Progress, ends: &Ends, routed: Instant) -> PushPhases {
        let revision = progress.revision_at().unwrap_or(routed);
        let healthy = ends.healthy.unwrap_or(routed);
        let started = ends.started.unwrap_or(healthy);
        PushPhases {
            upload_ms: ms(self.received, self.checked),
            stage_ms: ms(self.checked, revision),
            start_ms: ms(revision, started),
            health_ms: ms(started, healthy),
            route_ms: ms(healthy, routed),
            reused: progress.reused().to_string(),
        }
    }
}

async fn run(
    ctx: Ctx,
    user: AuthUser,
    prep: Prepared,
    app_id: String,
    progress: Progress,
    clock: Clock,
) {
    let name = prep.name.to_string();
    let mut logs = ctx.logs.subscribe(&app_id).await;
    let actor = Actor::from(&user);
    let deployed = tokio::select! {
        r = deploy(&ctx, &actor, prep, &progress) => r.map_err(Error::from),
        () = forward_staging(&mut logs, &progress) => Err(Error::internal("the log feed ended")),
    };
    // Lines published just before staging ended.
    while let Ok(line) = logs.try_recv() {
        stg_line(&progress, &line);
    }
    drop(logs);
    let last = match deployed {
        Ok(_) => wait_until_running(&ctx, &app_id, &progress, clock).await,
        Err(e) => {
            if matches!(e, Error::Internal(_) | Error::Store(_) | Error::Blob(_)) {
                tracing::error!(error = %e, app = %name, "streamed push failed");
            }
            failed(e.wire(), None)
        }
    };
    progress.send(last);
}

/// Follows the new revision's instances until all desired web ones run (succeeded), one
/// crashes, the first cannot be placed, or the start timeout passes (failed). Each instance's
/// change of state is a line of its own.
async fn wait_until_running(
    ctx: &Ctx,
    app_id: &str,
    progress: &Progress,
    clock: Clock,
) -> PushProgress {
    let timeout = Duration::from_secs(ctx.settings.push_start_timeout_secs);
    let deadline = Instant::now() + timeout;
    let mut shown = None;
    let mut states: HashMap<(String, u32), InstanceLine> = HashMap::new();
    let mut ends = Ends::default();
    // Subscribed before each look, so a change between the look and the wait still wakes it.
    let mut reported = ctx.reported.subscribe();
    let mut placed_changes = ctx.assignments.subscribe();
    loop {
        reported.borrow_and_update();
        placed_changes.borrow_and_update();
        let step = async {
            let app = find_app(ctx, app_id).await?;
            let instances = ctx.store.app_instances(&app.id).await?;
            Ok::<_, Error>((app, instances))
        };
        let (app, instances) = match step.await {
            Ok(v) => v,
            Err(e) => return failed(e.wire(), None),
        };
        let mut current: Vec<_> = instances
            .iter()
            .filter(|i| Some(i.revision) == app.current_revision)
            .collect();
        current.sort_by(|a, b| (&a.process_type, a.index).cmp(&(&b.process_type, b.index)));
        for i in &current {
            let line = InstanceLine::of(i);
            let key = (i.process_type.clone(), i.index);
            if states.get(&key) != Some(&line) {
                progress.send(line.progress(i));
                states.insert(key, line);
            }
        }
        let fresh: Vec<_> = current.iter().filter(|i| i.process_type == "web").collect();
        let desired = if app.state == AppState::Stopped {
            0
        } else {
            app.desired_instances
        };
        let running = fresh
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count() as u32;
        let placed = fresh.iter().filter(|i| i.node_name.is_some()).count() as u32;
        let now = Instant::now();
        let began = fresh
            .iter()
            .filter(|i| matches!(i.state, InstanceState::Starting | InstanceState::Running))
            .count() as u32;
        if ends.started.is_none() && began >= desired {
            ends.started = Some(now);
        }
        if ends.healthy.is_none() && running >= desired {
            ends.healthy = Some(now);
        }
        if shown != Some((running, placed, desired)) {
            shown = Some((running, placed, desired));
            progress.send(PushProgress::Instances {
                running,
                desired,
                placed,
            });
        }
        let crashed = fresh
            .iter()
            .find(|i| i.state == InstanceState::Crashed || i.restarts > 0);
        // The first instance found no node for a reason that does not pass by itself (memory,
        // disk, labels, no ready node): waiting for the timeout would only delay saying so.
        let unplaceable = fresh
            .iter()
            .filter(|i| i.index == 0 && i.node_name.is_none())
            .find_map(|i| i.placement_error.as_deref())
            .filter(|e| !crate::control::scheduler::is_transient(e));
        let outcome = if let Some(c) = crashed {
            Some(Err(ApiError::new(
                ErrorCode::StartFailed,
                crash_message(ctx, &app.name, c).await,
            )))
        } else if running >= desired {
            Some(Ok(()))
        } else if let Some(reason) = unplaceable {
            Some(Err(ApiError::new(
                ErrorCode::NoNodeAvailable,
                format!(
                    "web #0 of revision {} cannot be placed: {reason} (it stays pending and \
                     starts once a node fits)",
                    app.current_revision.unwrap_or_default()
                ),
            )))
        } else if Instant::now() >= deadline {
            // Per instance not running, what the platform saw: where it waits, or why its last
            // run ended.
            let seen: Vec<String> = fresh
                .iter()
                .filter(|i| i.state != InstanceState::Running)
                .map(|i| {
                    let why = i
                        .placement_error
                        .as_deref()
                        .filter(|_| i.node_name.is_none())
                        .or(i.last_exit.as_deref());
                    format!(
                        "instance {} ({}): {}{}",
                        i.index,
                        i.process_type,
                        i.state.as_str(),
                        why.map(|w| format!(": {w}")).unwrap_or_default()
                    )
                })
                .collect();
            let why = if seen.is_empty() {
                String::new()
            } else {
                format!("; {}", seen.join("; "))
            };
            Some(Err(ApiError::new(
                ErrorCode::StartFailed,
                format!(
                    "{running} of {desired} instances running after {} s{why}",
                    timeout.as_secs()
                ),
            )))
        } else {
            None
        };
        if let Some(outcome) = outcome {
            let routed = match outcome {
                Ok(()) => {
                    let routable: Vec<&str> = fresh
                        .iter()
                        .filter(|i| i.state == InstanceState::Running && i.ready)
                        .map(|i| i.id.as_str())
                        .collect();
                    wait_routed(ctx, &app.id, &routable).await
                }
                Err(_) => Instant::now(),
            };
            let detail = detail(ctx, &app).await.ok();
            return match outcome {
                Ok(()) => PushProgress::Result(PushResult {
                    status: PushStatus::Succeeded,
                    code: None,
                    message: None,
                    app: detail.map(Box::new),
                    phases: Some(clock.phases(progress, &ends, routed)),
                }),
                Err(error) => failed(error, detail),
            };
        }
        // A heartbeat that changed an instance, or a placement, wakes the look at once; the
        // timer covers a heartbeat that went to another controller (they share the store).
        tokio::select! {
            _ = reported.changed() => {}
            _ = placed_changes.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// The longest a push waits for its running instances to show in the route table: the
/// heartbeat that reported them refreshes it at once, so this only bounds a controller whose
/// refresh failed.
const ROUTE_WAIT: Duration = Duration::from_secs(5);

/// Waits until every instance of `ids` is in this controller's route table (a push that
/// answers "running" is then reachable through the router), at most [`ROUTE_WAIT`]; returns
/// when it was.
async fn wait_routed(ctx: &Ctx, app_id: &str, ids: &[&str]) -> Instant {
    let until = Instant::now() + ROUTE_WAIT;
    let mut versions = ctx.routes.subscribe();
    loop {
        versions.borrow_and_update();
        let table = ctx.routes.snapshot();
        let routed = table.apps.get(app_id).is_some_and(|backends| {
            ids.iter()
                .all(|id| backends.iter().any(|b| b.id.as_str() == *id))
        });
        if routed {
            return Instant::now();
        }
        match tokio::time::timeout_at(until.into(), versions.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Instant::now(),
        }
    }
}

/// Lines of a crashed instance's last output shown with the reason.
const CRASH_LOG_LINES: i64 = 5;

/// `instance 0 (web) crashed: exited with code 3; last output: ...`: the exit the node reported
/// and the instance's own last lines, so the reason is in the push output itself.
async fn crash_message(ctx: &Ctx, app: &str, i: &crate::store::InstanceRecord) -> String {
    let exit = i.last_exit.as_deref().unwrap_or("no exit reason reported");
    let mut msg = format!("instance {} ({}) crashed: {exit}", i.index, i.process_type);
    let q = crate::store::LogQuery {
        sources: vec![format!("APP/{}", i.process_type)],
        instance: Some(i.index),
        ..Default::default()
    };
    // The node ships output and reports the crash separately: give the lines a moment.
    let until = Instant::now() + Duration::from_secs(3);
    let mut recent = ctx.logs.recent(app, &q, CRASH_LOG_LINES).await;
    while matches!(&recent, Ok(l) if l.is_empty()) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        recent = ctx.logs.recent(app, &q, CRASH_LOG_LINES).await;
    }
    match recent {
        Ok(lines) if !lines.is_empty() => {
            msg.push_str("; last output:");
            for l in lines {
                msg.push_str("\n  ");
                msg.push_str(l.message.trim_end());
            }
        }
        Ok(_) => msg.push_str("; it printed nothing"),
        Err(e) => tracing::warn!(error = %e, app, "cannot read a crashed instance's last lines"),
    }
    msg
}

/// What an `instance` line shows of one instance; a new line only when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InstanceLine {
    state: InstanceState,
    node: Option<String>,
    reason: Option<String>,
}

impl InstanceLine {
    fn of(i: &crate::store::InstanceRecord) -> Self {
        Self {
            state: i.state,
            node: i.node_name.clone(),
            reason: if i.node_name.is_none() {
                i.placement_error.clone()
            } else {
                i.last_exit
                    .clone()
                    .filter(|_| i.state == InstanceState::Crashed)
            },
        }
    }

    fn progress(&self, i: &crate::store::InstanceRecord) -> PushProgress {
        PushProgress::Instance {
            process_type: i.process_type.clone(),
            index: i.index,
            state: self.state,
            node: self.node.clone(),
            reason: self.reason.clone(),
        }
    }
}
