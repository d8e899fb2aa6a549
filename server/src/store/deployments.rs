//! The store's part for canary and blue-green deployments (issue 23,
//! `migrations/sqlite/0037_deployments.sql`): a role trait of its own, expanded once per backend
//! like [`super::cron`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use paas_common::deployment::{DeployStrategy, DeploymentState};
use sqlx::Row;

use super::sql::Dialect;
use super::{Event, Fence, PgStore, SqliteStore, StoreError, StoreResult};

/// One deployment row.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    pub id: String,
    pub app_id: String,
    pub strategy: DeployStrategy,
    pub old_revision: i64,
    pub new_revision: i64,
    pub step: u32,
    pub step_started_at: Option<DateTime<Utc>>,
    pub state: DeploymentState,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a deployment's change writes besides its own row.
#[derive(Debug, Clone, Default)]
pub struct DeploymentChange<'a> {
    /// Set `apps.current_revision` to this (a rollback or cancel: the old revision).
    pub current_revision: Option<i64>,
    pub event: Option<&'a Event>,
}

#[async_trait]
pub trait DeploymentStore: Send + Sync + 'static {
    /// Stores a new deployment; a running one of the same app ends `cancelled` (superseded).
    async fn create_deployment(&self, d: &DeploymentRecord) -> StoreResult<()>;
    /// The app's newest deployment.
    async fn app_deployment(&self, app_id: &str) -> StoreResult<Option<DeploymentRecord>>;
    /// Every deployment that is active or paused.
    async fn running_deployments(&self) -> StoreResult<Vec<DeploymentRecord>>;
    /// Writes `d`'s step, state, reason and times, only while the stored row is still running
    /// (so a cancel and the controller's decision cannot both win); with `change`'s revision and
    /// event in the same transaction. Fenced by the lease when given. False when it had ended.
    async fn update_deployment(
        &self,
        fence: Option<&Fence>,
        d: &DeploymentRecord,
        change: DeploymentChange<'_>,
    ) -> StoreResult<bool>;
}

macro_rules! deployment_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            fn from_row(r: &$row) -> StoreResult<DeploymentRecord> {
                let strategy: String = r.try_get("strategy")?;
                let state: String = r.try_get("state")?;
                let step: i64 = r.try_get("step")?;
                Ok(DeploymentRecord {
                    id: r.try_get("id")?,
                    app_id: r.try_get("app_id")?,
                    strategy: serde_json::from_str(&strategy)
                        .map_err(|e| StoreError::Corrupt(format!("deployment strategy: {e}")))?,
                    old_revision: r.try_get("old_revision")?,
                    new_revision: r.try_get("new_revision")?,
                    step: u32::try_from(step).unwrap_or(0),
                    step_started_at: r.try_get("step_started_at")?,
                    state: DeploymentState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("deployment state {state}")))?,
                    reason: r.try_get("reason")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }

            #[async_trait]
            impl DeploymentStore for $store {
                async fn create_deployment(&self, d: &DeploymentRecord) -> StoreResult<()> {
                    let strategy = serde_json::to_string(&d.strategy)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "UPDATE deployments SET state = 'cancelled', reason = $2, updated_at = $3
                         WHERE app_id = $1 AND state IN ('active', 'paused')",
                    )
                    .bind(&d.app_id)
                    .bind(format!("superseded by revision {}", d.new_revision))
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO deployments (id, app_id, strategy, old_revision, new_revision, step, step_started_at, state, reason, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(&d.id)
                    .bind(&d.app_id)
                    .bind(strategy)
                    .bind(d.old_revision)
                    .bind(d.new_revision)
                    .bind(i64::from(d.step))
                    .bind(d.step_started_at)
                    .bind(d.state.as_str())
                    .bind(&d.reason)
                    .bind(d.created_at)
                    .bind(d.updated_at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn app_deployment(&self, app_id: &str) -> StoreResult<Option<DeploymentRecord>> {
                    let row = sqlx::query(
                        "SELECT * FROM deployments WHERE app_id = $1 ORDER BY created_at DESC, id LIMIT 1",
                    )
                    .bind(app_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(from_row).transpose()
                }

                async fn running_deployments(&self) -> StoreResult<Vec<DeploymentRecord>> {
                    let rows = sqlx::query(
                        "SELECT * FROM deployments WHERE state IN ('active', 'paused') ORDER BY created_at",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(from_row).collect()
                }

                async fn update_deployment(
                    &self,
                    fence: Option<&Fence>,
                    d: &DeploymentRecord,
                    change: DeploymentChange<'_>,
                ) -> StoreResult<bool> {
                    let mut tx = self.write_tx().await?;
                    if let Some(f) = fence {
                        crate::store::$backend::check_fence(&mut tx, f).await?;
                    }
                    let done = sqlx::query(
                        "UPDATE deployments SET step = $2, step_started_at = $3, state = $4, reason = $5, updated_at = $6
                         WHERE id = $1 AND state IN ('active', 'paused')",
                    )
                    .bind(&d.id)
                    .bind(i64::from(d.step))
                    .bind(d.step_started_at)
                    .bind(d.state.as_str())
                    .bind(&d.reason)
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Ok(false);
                    }
                    if let Some(rev) = change.current_revision {
                        sqlx::query(
                            "UPDATE apps SET current_revision = $2, updated_at = $3 WHERE id = $1",
                        )
                        .bind(&d.app_id)
                        .bind(rev)
                        .bind(Utc::now())
                        .execute(&mut *tx)
                        .await?;
                    }
                    if let Some(ev) = change.event {
                        crate::store::$backend::insert_event(&mut *tx, ev).await?;
                    }
                    tx.commit().await?;
                    Ok(true)
                }
            }
        }
    };
}

deployment_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
deployment_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
