//! Scheduled tasks (issue 21, cron): the leader starts each due entry's run as a task on the
//! app's current droplet and env. A run still going is not started twice (that time is skipped),
//! and after downtime a past due time gives one run at once, the next from then on: at most one
//! missed run is made up, never a storm.

use chrono::{DateTime, Utc};
use std::collections::HashMap;

use crate::state::AppCtx;
use crate::store::{AppRecord, CronRecord, Event, Fence, NewTask, StoreResult};

/// Parses a schedule: five fields, or six with seconds first (`*/5 * * * * *`), or an alias
/// (`@hourly`).
pub fn parse(schedule: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(schedule.trim())
        .map_err(|e| e.to_string())
}

/// The first time after `after` the schedule names.
pub fn next_after(schedule: &str, after: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    parse(schedule)?
        .find_next_occurrence(&after, false)
        .map_err(|e| e.to_string())
}

/// The leader's tick: starts every due run. Returns whether a task was created.
pub async fn tick(ctx: &AppCtx, fence: Option<&Fence>, apps: &[AppRecord]) -> StoreResult<bool> {
    let now = Utc::now();
    let due = ctx.store.due_crons(now).await?;
    if due.is_empty() {
        return Ok(false);
    }
    let by_id: HashMap<&str, &AppRecord> = apps.iter().map(|a| (a.id.as_str(), a)).collect();
    let mut created = false;
    for c in due {
        // From now, not from the missed time: one run makes up for any number missed.
        let next = match next_after(&c.schedule, now) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(cron = %c.id, schedule = %c.schedule, error = %e, "unreadable cron schedule");
                now + chrono::Duration::days(365)
            }
        };
        let Some(app) = by_id.get(c.app_id.as_str()).copied() else {
            ctx.store
                .record_cron_run(fence, &c.id, None, now, next)
                .await?;
            continue;
        };
        if still_running(ctx, &c).await? || app.current_revision.is_none() {
            ctx.store
                .record_cron_run(fence, &c.id, None, now, next)
                .await?;
            continue;
        }
        let Some(rev) = ctx
            .store
            .revision(&app.id, app.current_revision.unwrap_or_default())
            .await?
        else {
            ctx.store
                .record_cron_run(fence, &c.id, None, now, next)
                .await?;
            continue;
        };
        let task = ctx
            .store
            .create_task(
                &NewTask {
                    app_id: app.id.clone(),
                    name: Some(format!("cron-{}", c.sequence)),
                    kind: "cron".into(),
                    command: c.command.clone(),
                    droplet: rev.droplet.clone(),
                    revision: rev.number,
                    env: rev.env.clone(),
                    memory_mb: app.memory_mb,
                    disk_mb: app.disk_mb,
                    created_by: "cron".into(),
                },
                &Event {
                    app_name: Some(app.name.clone()),
                    app_id: Some(app.id.clone()),
                    actor: "platform".into(),
                    kind: "task.create".into(),
                    message: format!("cron {} ({}): {:?}", c.sequence, c.schedule, c.command),
                },
            )
            .await?;
        ctx.store
            .record_cron_run(fence, &c.id, Some(&task.id), now, next)
            .await?;
        created = true;
    }
    Ok(created)
}

async fn still_running(ctx: &AppCtx, c: &CronRecord) -> StoreResult<bool> {
    let Some(last) = &c.last_task_id else {
        return Ok(false);
    };
    Ok(ctx
        .store
        .task(last)
        .await?
        .is_some_and(|t| !t.state.finished()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_with_and_without_seconds() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            next_after("*/5 * * * *", t).unwrap().to_rfc3339(),
            "2026-01-01T00:05:00+00:00"
        );
        assert_eq!(
            next_after("*/2 * * * * *", t).unwrap().to_rfc3339(),
            "2026-01-01T00:00:02+00:00"
        );
        assert!(parse("every day").is_err());
    }
}
