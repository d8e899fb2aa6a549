//! Canary and blue-green deployments (issue 23), the user's side: a push that asks for one
//! records it ([`start`]); `deployment continue` and `cancel` move it by hand. The automatic
//! moves are the leader's (`control::deployments`).

use chrono::Utc;
use paas_common::deployment::{DeployStrategy, DeploymentInfo, DeploymentState, StrategyKind};
use paas_common::ErrorCode;

use super::{event, log_platform, Actor, DeployError, DeployResult};
use crate::control::deployments::{self as control, Decision};
use crate::state::AppCtx;
use crate::store::{AppRecord, DeploymentChange, DeploymentRecord};

/// Records a deployment of `new_revision` beside `before`'s current revision. A push of an app
/// with no running revision (new, or stopped) has nothing to compare with: it deploys at once.
pub async fn start(
    ctx: &AppCtx,
    before: &AppRecord,
    new_revision: i64,
    strategy: &DeployStrategy,
) -> DeployResult<Option<DeploymentRecord>> {
    let Some(old) = before.current_revision else {
        return Ok(None);
    };
    if strategy.kind == StrategyKind::Rolling || before.state != paas_common::api::AppState::Started
    {
        return Ok(None);
    }
    let now = Utc::now();
    let d = DeploymentRecord {
        id: uuid::Uuid::new_v4().to_string(),
        app_id: before.id.clone(),
        strategy: strategy.clone(),
        old_revision: old,
        new_revision,
        step: 0,
        step_started_at: None,
        state: DeploymentState::Active,
        reason: None,
        created_at: now,
        updated_at: now,
    };
    ctx.store.create_deployment(&d).await?;
    log_platform(
        ctx,
        before,
        "API",
        format!(
            "{} deployment of revision {new_revision} beside revision {old}: {}",
            strategy.kind.as_str(),
            describe(strategy)
        ),
    )
    .await;
    crate::router::refresh(ctx).await?;
    ctx.converge.notify_one();
    Ok(Some(d))
}

fn describe(s: &DeployStrategy) -> String {
    match s.kind {
        StrategyKind::Bluegreen => format!("switch when all are ready, grace {}s", s.grace_secs),
        _ => format!(
            "steps {} every {}, roll back above +{}% errors or +{}% p99 after {} requests",
            s.steps
                .iter()
                .map(|w| format!("{w}%"))
                .collect::<Vec<_>>()
                .join(","),
            s.step_wait_secs
                .map_or_else(|| "continue".to_string(), |w| format!("{w}s")),
            s.max_error_rate,
            s.max_p99_increase,
            s.min_requests
        ),
    }
}

fn not_found(app: &AppRecord) -> DeployError {
    DeployError::invalid(
        ErrorCode::DeploymentNotFound,
        format!("app {:?} has no canary or blue-green deployment", app.name),
    )
}

async fn running(ctx: &AppCtx, app: &AppRecord) -> DeployResult<DeploymentRecord> {
    ctx.store
        .app_deployment(&app.id)
        .await?
        .filter(|d| d.state.running())
        .ok_or_else(|| {
            DeployError::invalid(
                ErrorCode::DeploymentNotFound,
                format!("app {:?} has no running deployment", app.name),
            )
        })
}

/// The app's newest deployment, with the live comparison while it runs.
pub async fn show(ctx: &AppCtx, app: &AppRecord) -> DeployResult<DeploymentInfo> {
    let d = ctx
        .store
        .app_deployment(&app.id)
        .await?
        .ok_or_else(|| not_found(app))?;
    Ok(control::info(ctx, app, &d))
}

/// `deployment continue`: the next step now (a paused canary resumes with it; a blue-green
/// deployment ends its grace and promotes).
pub async fn resume(ctx: &AppCtx, actor: &Actor, app: &AppRecord) -> DeployResult<DeploymentInfo> {
    let d = running(ctx, app).await?;
    if d.step_started_at.is_none() {
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            format!(
                "the instances of revision {} are not all ready yet: nothing to continue",
                d.new_revision
            ),
        ));
    }
    let mut next = d.clone();
    next.state = DeploymentState::Active;
    next.reason = None;
    let msg = match control::next_step(&d) {
        Decision::Advance(step) => {
            next.step = step;
            next.step_started_at = Some(Utc::now());
            format!(
                "{} continued the deployment: revision {} now gets {}% of requests",
                actor.username,
                d.new_revision,
                control::weight(&next)
            )
        }
        _ => {
            next.state = DeploymentState::Promoted;
            next.reason = Some(format!("promoted by {}", actor.username));
            format!(
                "{} promoted revision {}; the instances of revision {} are retired",
                actor.username, d.new_revision, d.old_revision
            )
        }
    };
    write(ctx, actor, app, &next, None, "deployment.continue", msg).await?;
    show(ctx, app).await
}

/// `deployment cancel`: back to the old revision (its instances never stopped).
pub async fn cancel(ctx: &AppCtx, actor: &Actor, app: &AppRecord) -> DeployResult<DeploymentInfo> {
    let d = running(ctx, app).await?;
    let mut next = d.clone();
    next.state = DeploymentState::Cancelled;
    next.reason = Some(format!("cancelled by {}", actor.username));
    let msg = format!(
        "{} cancelled the deployment of revision {}: revision {} serves again",
        actor.username, d.new_revision, d.old_revision
    );
    write(
        ctx,
        actor,
        app,
        &next,
        Some(d.old_revision),
        "deployment.cancel",
        msg,
    )
    .await?;
    show(ctx, app).await
}

async fn write(
    ctx: &AppCtx,
    actor: &Actor,
    app: &AppRecord,
    next: &DeploymentRecord,
    current_revision: Option<i64>,
    kind: &str,
    msg: String,
) -> DeployResult<()> {
    let ev = event(actor, app, kind, msg.clone());
    let written = ctx
        .store
        .update_deployment(
            None,
            next,
            DeploymentChange {
                current_revision,
                event: Some(&ev),
            },
        )
        .await?;
    if !written {
        // The leader ended it in between.
        return Err(DeployError::invalid(
            ErrorCode::Conflict,
            "the deployment has just ended; see `paas deployment`",
        ));
    }
    log_platform(ctx, app, "API", msg).await;
    crate::router::refresh(ctx).await?;
    ctx.converge.notify_one();
    Ok(())
}
