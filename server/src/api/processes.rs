//! The per-type view of an app (issue 3) for its detail: every process type of the current
//! revision as the desired state resolves it. Scaling a type is `deploy::lifecycle::update`.

use paas_common::api::ProcessInfo;

use super::Ctx;
use crate::control::desired::DesiredState;
use crate::error::ApiResult;
use crate::store::AppRecord;

/// Every process type of the app's current revision, `web` first; empty before the first
/// revision.
pub(super) async fn infos(ctx: &Ctx, app: &AppRecord) -> ApiResult<Vec<ProcessInfo>> {
    Ok(DesiredState::of_app(ctx.store.as_ref(), app)
        .await?
        .map(|d| d.infos())
        .unwrap_or_default())
}
