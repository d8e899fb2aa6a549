//! The store's part for space quotas (issue 26): a role trait of its own, a supertrait of
//! [`super::Store`]. Plain SQL with `$n` placeholders that reads the same on SQLite and
//! PostgreSQL, so the shared implementation can take it over as it is.

use async_trait::async_trait;
use paas_common::api::SpaceQuota;
use sqlx::Row;

use super::sql::Dialect;
use super::{Event, PgStore, SqliteStore, StoreError, StoreResult};

#[async_trait]
pub trait QuotaStore: Send + Sync + 'static {
    /// The quota of a space (every limit `None` when it has none).
    async fn space_quota(&self, space_id: &str) -> StoreResult<SpaceQuota>;
    /// Replaces the quota of a space and records `event` in the same transaction.
    async fn set_space_quota(
        &self,
        space_id: &str,
        quota: &SpaceQuota,
        event: &Event,
    ) -> StoreResult<()>;
}
/// The implementation, expanded once per backend as the shared SQL is (`super::sql`): one text of
/// SQL and row mapping for SQLite and PostgreSQL.
macro_rules! quota_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            /// A limit as a `BIGINT` column (limits beyond `i64::MAX` are unlimited in all but name).
            fn column(v: Option<u64>) -> Option<i64> {
                v.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
            }

            fn limit(r: &$row, name: &str) -> StoreResult<Option<u64>> {
                let v: Option<i64> = r.try_get(name)?;
                v.map(|n| u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("space quota {name} {n}"))))
                    .transpose()
            }

            #[async_trait]
            impl QuotaStore for $store {
                async fn space_quota(&self, space_id: &str) -> StoreResult<SpaceQuota> {
                    let row = sqlx::query(
                        "SELECT memory_mb, instances, apps, routes FROM space_quotas WHERE space_id = $1",
                    )
                    .bind(space_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(r) = row else {
                        return Ok(SpaceQuota::default());
                    };
                    Ok(SpaceQuota {
                        memory_mb: limit(&r, "memory_mb")?,
                        instances: limit(&r, "instances")?,
                        apps: limit(&r, "apps")?,
                        routes: limit(&r, "routes")?,
                    })
                }

                async fn set_space_quota(
                    &self,
                    space_id: &str,
                    quota: &SpaceQuota,
                    event: &Event,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "INSERT INTO space_quotas (space_id, memory_mb, instances, apps, routes, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (space_id) DO UPDATE SET memory_mb = $2, instances = $3, apps = $4,
                             routes = $5, updated_at = $6",
                    )
                    .bind(space_id)
                    .bind(column(quota.memory_mb))
                    .bind(column(quota.instances))
                    .bind(column(quota.apps))
                    .bind(column(quota.routes))
                    .bind(chrono::Utc::now())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match e {
                        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                            StoreError::NotFound(format!("space {space_id}"))
                        }
                        e => e.into(),
                    })?;
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }
            }
        }
    };
}

quota_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
quota_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
