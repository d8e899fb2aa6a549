//! Events the platform records by itself, from what nodes report: a crash is an instance whose
//! restart count went up or that is newly crashed with a new exit reason. Written as `instance.crash`
//! events with the exit reason (exit code, OOM-killed, health check), actor `node:NAME`.

use paas_common::agent::InstanceReport;
use paas_common::api::InstanceState;

use crate::state::AppCtx;
use crate::store::Event;

/// Records a crash event when `report` shows one since `before` (restarts, last exit, index).
pub async fn record_crash(
    ctx: &AppCtx,
    node: &str,
    report: &InstanceReport,
    before: Option<&(u32, Option<String>, u32)>,
) {
    let Some((restarts, last_exit, index)) = before else {
        return;
    };
    let restarted = report.restarts > *restarts;
    let newly_crashed = report.state == InstanceState::Crashed && report.last_exit != *last_exit;
    if !restarted && !newly_crashed {
        return;
    }
    let app = match ctx
        .store
        .app_name_of_instance(&report.instance_id, node)
        .await
    {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = %e, "could not record a crash event");
            return;
        }
    };
    let reason = report.last_exit.as_deref().unwrap_or("unknown reason");
    let event = Event {
        app_name: Some(app),
        actor: format!("node:{node}"),
        kind: "instance.crash".into(),
        message: format!(
            "instance {index} crashed: {reason} (restarts: {})",
            report.restarts
        ),
    };
    if let Err(e) = ctx.store.add_event(&event).await {
        tracing::warn!(error = %e, "could not record a crash event");
    }
}
