//! The store's part for autoscaling (issue 23): one policy per app with the cooldowns' clocks, a
//! role trait of its own, expanded once per backend like [`super::cron`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::sql::Dialect;
use super::{Event, Fence, PgStore, SqliteStore, StoreError, StoreResult};

/// An app's autoscaling policy (`migrations/sqlite/0033_autoscale.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscaleRecord {
    pub app_id: String,
    pub min_instances: u32,
    pub max_instances: u32,
    pub cpu_percent: Option<u32>,
    pub rps_per_instance: Option<u32>,
    pub p99_ms: Option<u32>,
    pub scale_out_cooldown_secs: u32,
    pub scale_in_cooldown_secs: u32,
    pub last_scale_out_at: Option<DateTime<Utc>>,
    pub last_scale_in_at: Option<DateTime<Utc>>,
    pub last_decision: Option<String>,
    pub updated_by: String,
    pub updated_at: DateTime<Utc>,
}

/// Which way a decision scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDirection {
    Out,
    In,
}

#[async_trait]
pub trait AutoscaleStore: Send + Sync + 'static {
    /// Sets the app's policy with `event` in one transaction; the cooldowns' clocks of an
    /// existing policy are kept, so changing a policy does not let it flap.
    async fn set_autoscale(&self, policy: &AutoscaleRecord, event: &Event) -> StoreResult<()>;
    async fn autoscale(&self, app_id: &str) -> StoreResult<Option<AutoscaleRecord>>;
    /// Every app's policy.
    async fn autoscale_policies(&self) -> StoreResult<Vec<AutoscaleRecord>>;
    /// Removes the app's policy with `event`; false when it had none.
    async fn remove_autoscale(&self, app_id: &str, event: &Event) -> StoreResult<bool>;
    /// Records a decision (its time on the clock of `direction` when it scaled, its reason)
    /// with its `app.autoscale` event; fenced by the lease when given.
    async fn record_autoscale(
        &self,
        fence: Option<&Fence>,
        app_id: &str,
        direction: Option<ScaleDirection>,
        at: DateTime<Utc>,
        event: &Event,
    ) -> StoreResult<()>;
}

fn to_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("autoscale {what} {v}")))
}

macro_rules! autoscale_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            fn from_row(r: &$row) -> StoreResult<AutoscaleRecord> {
                let opt = |name: &str| -> StoreResult<Option<u32>> {
                    r.try_get::<Option<i64>, _>(name)?
                        .map(|v| to_u32(v, name))
                        .transpose()
                };
                Ok(AutoscaleRecord {
                    app_id: r.try_get("app_id")?,
                    min_instances: to_u32(r.try_get("min_instances")?, "min_instances")?,
                    max_instances: to_u32(r.try_get("max_instances")?, "max_instances")?,
                    cpu_percent: opt("cpu_percent")?,
                    rps_per_instance: opt("rps_per_instance")?,
                    p99_ms: opt("p99_ms")?,
                    scale_out_cooldown_secs: to_u32(
                        r.try_get("scale_out_cooldown_secs")?,
                        "scale_out_cooldown_secs",
                    )?,
                    scale_in_cooldown_secs: to_u32(
                        r.try_get("scale_in_cooldown_secs")?,
                        "scale_in_cooldown_secs",
                    )?,
                    last_scale_out_at: r.try_get("last_scale_out_at")?,
                    last_scale_in_at: r.try_get("last_scale_in_at")?,
                    last_decision: r.try_get("last_decision")?,
                    updated_by: r.try_get("updated_by")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }

            #[async_trait]
            impl AutoscaleStore for $store {
                async fn set_autoscale(&self, p: &AutoscaleRecord, event: &Event) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "INSERT INTO app_autoscale (app_id, min_instances, max_instances, cpu_percent, rps_per_instance, p99_ms,
                             scale_out_cooldown_secs, scale_in_cooldown_secs, updated_by, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                         ON CONFLICT (app_id) DO UPDATE SET min_instances = excluded.min_instances,
                             max_instances = excluded.max_instances, cpu_percent = excluded.cpu_percent,
                             rps_per_instance = excluded.rps_per_instance, p99_ms = excluded.p99_ms,
                             scale_out_cooldown_secs = excluded.scale_out_cooldown_secs,
                             scale_in_cooldown_secs = excluded.scale_in_cooldown_secs,
                             updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                    )
                    .bind(&p.app_id)
                    .bind(i64::from(p.min_instances))
                    .bind(i64::from(p.max_instances))
                    .bind(p.cpu_percent.map(i64::from))
                    .bind(p.rps_per_instance.map(i64::from))
                    .bind(p.p99_ms.map(i64::from))
                    .bind(i64::from(p.scale_out_cooldown_secs))
                    .bind(i64::from(p.scale_in_cooldown_secs))
                    .bind(&p.updated_by)
                    .bind(p.updated_at)
                    .execute(&mut *tx)
                    .await?;
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn autoscale(&self, app_id: &str) -> StoreResult<Option<AutoscaleRecord>> {
                    sqlx::query("SELECT * FROM app_autoscale WHERE app_id = $1")
                        .bind(app_id)
                        .fetch_optional(&self.pool)
                        .await?
                        .as_ref()
                        .map(from_row)
                        .transpose()
                }

                async fn autoscale_policies(&self) -> StoreResult<Vec<AutoscaleRecord>> {
                    let rows = sqlx::query("SELECT * FROM app_autoscale ORDER BY app_id")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(from_row).collect()
                }

                async fn remove_autoscale(&self, app_id: &str, event: &Event) -> StoreResult<bool> {
                    let mut tx = self.write_tx().await?;
                    let gone = sqlx::query("DELETE FROM app_autoscale WHERE app_id = $1")
                        .bind(app_id)
                        .execute(&mut *tx)
                        .await?;
                    if gone.rows_affected() == 0 {
                        return Ok(false);
                    }
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(true)
                }

                async fn record_autoscale(
                    &self,
                    fence: Option<&Fence>,
                    app_id: &str,
                    direction: Option<ScaleDirection>,
                    at: DateTime<Utc>,
                    event: &Event,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    if let Some(f) = fence {
                        crate::store::$backend::check_fence(&mut tx, f).await?;
                    }
                    let clock = match direction {
                        Some(ScaleDirection::Out) => ", last_scale_out_at = $3",
                        Some(ScaleDirection::In) => ", last_scale_in_at = $3",
                        None => "",
                    };
                    let sql = format!("UPDATE app_autoscale SET last_decision = $2{clock} WHERE app_id = $1");
                    let mut q = sqlx::query(&sql).bind(app_id).bind(&event.message);
                    if direction.is_some() {
                        q = q.bind(at);
                    }
                    q.execute(&mut *tx).await?;
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }
            }
        }
    };
}

autoscale_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
autoscale_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
