//! Backups and restores of built-in PostgreSQL service instances (issue 22): plain functions of
//! the instance id, for the `/v1/services/{name}/backups` API once service instances are
//! resolved by name (and for the broker's `/broker/v2` extension meanwhile).
//!
//! The dump runs where the database runs: a job row (`builtin_service_jobs`) is listed with the
//! service in its node's assignments, the agent runs `pg_dump -Fc` (or `pg_restore --clean
//! --if-exists`) inside the service container (the image's own PostgreSQL tools, so the client
//! always matches the server's version) and streams the dump to or from the blobstore through
//! the controller. Level-triggered like everything the agents do: a job stays listed until the
//! controller has its result.

use chrono::Utc;
use paas_common::api::ServiceBackup;

use super::{POSTGRESQL, READY};
use crate::state::AppCtx;
use crate::store::{BuiltinJobRecord, StoreError};

pub const BACKUP: &str = "backup";
pub const RESTORE: &str = "restore";
pub const PENDING: &str = "pending";
pub const DONE: &str = "done";
pub const FAILED: &str = "failed";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no built-in service instance {0}")]
    InstanceNotFound(String),
    #[error("no backup {0} of this service instance")]
    BackupNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn to_wire(j: &BuiltinJobRecord) -> ServiceBackup {
    ServiceBackup {
        id: j.id.clone(),
        kind: j.kind.clone(),
        state: j.state.clone(),
        backup: j.backup_id.clone(),
        error: j.error.clone(),
        created_at: j.created_at,
    }
}

async fn ready_postgres(ctx: &AppCtx, instance_id: &str) -> Result<(), BackupError> {
    let s = ctx
        .store
        .builtin_instance(instance_id)
        .await?
        .ok_or_else(|| BackupError::InstanceNotFound(instance_id.into()))?;
    if s.service != POSTGRESQL {
        return Err(BackupError::Invalid(format!(
            "only PostgreSQL instances have backups, not {}",
            s.service
        )));
    }
    if s.state != READY {
        return Err(BackupError::Invalid(format!(
            "the service instance is {}",
            s.state
        )));
    }
    Ok(())
}

async fn start(ctx: &AppCtx, job: BuiltinJobRecord) -> Result<BuiltinJobRecord, BackupError> {
    ctx.store.insert_builtin_job(&job).await?;
    tracing::info!(service = %job.instance_id, job = %job.id, kind = %job.kind, "service job started");
    ctx.bump_assignments();
    Ok(job)
}

/// Starts a backup of the instance's database; it is `done` once its dump is in the blobstore.
pub async fn backup(ctx: &AppCtx, instance_id: &str) -> Result<BuiltinJobRecord, BackupError> {
    ready_postgres(ctx, instance_id).await?;
    start(
        ctx,
        BuiltinJobRecord {
            id: uuid::Uuid::new_v4().to_string(),
            instance_id: instance_id.into(),
            kind: BACKUP.into(),
            backup_id: None,
            blob: None,
            state: PENDING.into(),
            error: None,
            created_at: Utc::now(),
        },
    )
    .await
}

/// Starts restoring a finished backup of the same instance over its database (objects in the
/// dump are dropped and recreated; others are left alone).
pub async fn restore(
    ctx: &AppCtx,
    instance_id: &str,
    backup_id: &str,
) -> Result<BuiltinJobRecord, BackupError> {
    ready_postgres(ctx, instance_id).await?;
    let b = ctx
        .store
        .builtin_job(backup_id)
        .await?
        .filter(|b| b.instance_id == instance_id && b.kind == BACKUP)
        .ok_or_else(|| BackupError::BackupNotFound(backup_id.into()))?;
    let (DONE, Some(blob)) = (b.state.as_str(), b.blob) else {
        return Err(BackupError::Invalid(format!(
            "backup {backup_id} is {}",
            b.state
        )));
    };
    start(
        ctx,
        BuiltinJobRecord {
            id: uuid::Uuid::new_v4().to_string(),
            instance_id: instance_id.into(),
            kind: RESTORE.into(),
            backup_id: Some(backup_id.into()),
            blob: Some(blob),
            state: PENDING.into(),
            error: None,
            created_at: Utc::now(),
        },
    )
    .await
}

/// The instance's backups and restores, oldest first.
pub async fn jobs(ctx: &AppCtx, instance_id: &str) -> Result<Vec<BuiltinJobRecord>, BackupError> {
    ctx.store
        .builtin_instance(instance_id)
        .await?
        .ok_or_else(|| BackupError::InstanceNotFound(instance_id.into()))?;
    Ok(ctx.store.builtin_jobs(instance_id).await?)
}

/// A pending job of a service placed on `node`, for that node's uploads and downloads.
pub async fn job_on_node(
    ctx: &AppCtx,
    job_id: &str,
    node: &str,
) -> Result<Option<BuiltinJobRecord>, StoreError> {
    let Some(job) = ctx.store.builtin_job(job_id).await? else {
        return Ok(None);
    };
    let on_node = ctx
        .store
        .builtin_instance(&job.instance_id)
        .await?
        .is_some_and(|s| s.node_name.as_deref() == Some(node));
    Ok((on_node && job.state == PENDING).then_some(job))
}
