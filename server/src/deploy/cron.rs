//! Scheduled tasks (issue 21): add, list and remove an app's cron entries. The leader starts
//! their runs (`control::cron`).

use paas_common::api::{AddCronRequest, CronEntry};
use paas_common::ErrorCode;

use super::{event, Actor, DeployError, DeployResult};
use crate::state::AppCtx;
use crate::store::AppRecord;

/// Most entries per app.
const MAX_ENTRIES: usize = 50;

pub async fn add(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    req: &AddCronRequest,
) -> DeployResult<CronEntry> {
    let command = req.command.trim();
    if command.is_empty() || command.len() > 4096 {
        return Err(DeployError::bad(
            "a cron entry needs a command of 1 to 4096 bytes",
        ));
    }
    let next = crate::control::cron::next_after(&req.schedule, chrono::Utc::now())
        .map_err(|e| DeployError::bad(format!("invalid schedule {:?}: {e}", req.schedule)))?;
    if ctx.store.app_crons(&app.id).await?.len() >= MAX_ENTRIES {
        return Err(DeployError::bad(format!(
            "an app has at most {MAX_ENTRIES} cron entries"
        )));
    }
    let ev = event(
        actor,
        app,
        "cron.add",
        format!(
            "{} scheduled {command:?} at {:?}",
            actor.username,
            req.schedule.trim()
        ),
    );
    let rec = ctx
        .store
        .add_cron(
            &app.id,
            req.schedule.trim(),
            command,
            next,
            &actor.username,
            &ev,
        )
        .await?;
    ctx.converge.notify_one();
    entry(ctx, rec).await
}

pub async fn list(ctx: &AppCtx, app: &AppRecord) -> DeployResult<Vec<CronEntry>> {
    let mut out = Vec::new();
    for rec in ctx.store.app_crons(&app.id).await? {
        out.push(entry(ctx, rec).await?);
    }
    Ok(out)
}

pub async fn remove(ctx: &AppCtx, actor: &Actor, app: &AppRecord, id: u64) -> DeployResult<()> {
    let ev = event(
        actor,
        app,
        "cron.remove",
        format!("{} removed cron {id}", actor.username),
    );
    if !ctx.store.remove_cron(&app.id, id, &ev).await? {
        return Err(DeployError::invalid(
            ErrorCode::NotFound,
            format!("app {:?} has no cron entry {id}", app.name),
        ));
    }
    Ok(())
}

async fn entry(ctx: &AppCtx, rec: crate::store::CronRecord) -> DeployResult<CronEntry> {
    let last = match &rec.last_task_id {
        Some(id) => ctx.store.task(id).await?,
        None => None,
    };
    Ok(CronEntry {
        id: rec.sequence,
        schedule: rec.schedule,
        command: rec.command,
        last_run_at: rec.last_run_at,
        last_task: last.as_ref().map(|t| t.sequence),
        last_state: last.as_ref().map(|t| t.state),
        next_run_at: rec.next_run_at,
        created_by: rec.created_by,
    })
}
