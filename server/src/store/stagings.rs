//! The store's part for builds in flight (issue 20): a role trait of its own, a supertrait of
//! [`super::Store`]. The push that placed a build waits on one controller; the node staging it
//! fetches the source, streams lines and reports the result through whichever controller it
//! talks to; the row is what they share. Plain SQL that reads the same on both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{PgStore, SqliteStore, StoreResult};

/// One build in flight.
#[derive(Debug, Clone, PartialEq)]
pub struct StagingRecord {
    pub build_id: String,
    pub node: String,
    pub app_id: String,
    /// The source tar's blob.
    pub source: String,
    /// The `BuildAssignment` sent to the node, as JSON.
    pub assignment: String,
    /// The node's `BuildResult`, as JSON, once it reported.
    pub result: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait StagingStore: Send + Sync + 'static {
    async fn insert_staging(&self, s: &StagingRecord) -> StoreResult<()>;
    /// Builds in flight (no result yet), oldest first; of one node when `node` is given.
    async fn stagings_in_flight(&self, node: Option<&str>) -> StoreResult<Vec<StagingRecord>>;
    async fn staging(&self, build_id: &str) -> StoreResult<Option<StagingRecord>>;
    /// Records the node's result once: false when the build is not (any more) in flight on
    /// `node`.
    async fn finish_staging(&self, build_id: &str, node: &str, result: &str) -> StoreResult<bool>;
    async fn delete_staging(&self, build_id: &str) -> StoreResult<()>;
    /// Deletes rows created before `before` (their push is long gone); returns how many.
    async fn sweep_stagings(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

macro_rules! staging_store {
    ($m:ident, $store:ty, $row:ty) => {
        mod $m {
            use super::*;

            const COLUMNS: &str =
                "build_id, node, app_id, source, assignment, result, created_at";

            fn record(r: &$row) -> StoreResult<StagingRecord> {
                Ok(StagingRecord {
                    build_id: r.try_get("build_id")?,
                    node: r.try_get("node")?,
                    app_id: r.try_get("app_id")?,
                    source: r.try_get("source")?,
                    assignment: r.try_get("assignment")?,
                    result: r.try_get("result")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            #[async_trait]
            impl StagingStore for $store {
                async fn insert_staging(&self, s: &StagingRecord) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO stagings (build_id, node, app_id, source, assignment, result, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(&s.build_id)
                    .bind(&s.node)
                    .bind(&s.app_id)
                    .bind(&s.source)
                    .bind(&s.assignment)
                    .bind(&s.result)
                    .bind(s.created_at)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn stagings_in_flight(
                    &self,
                    node: Option<&str>,
                ) -> StoreResult<Vec<StagingRecord>> {
                    let rows = sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM stagings
                         WHERE result IS NULL AND ($1 IS NULL OR node = $1)
                         ORDER BY created_at, build_id"
                    ))
                    .bind(node)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(record).collect()
                }

                async fn staging(&self, build_id: &str) -> StoreResult<Option<StagingRecord>> {
                    let row = sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM stagings WHERE build_id = $1"
                    ))
                    .bind(build_id)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.as_ref().map(record).transpose()
                }

                async fn finish_staging(
                    &self,
                    build_id: &str,
                    node: &str,
                    result: &str,
                ) -> StoreResult<bool> {
                    let done = sqlx::query(
                        "UPDATE stagings SET result = $3
                         WHERE build_id = $1 AND node = $2 AND result IS NULL",
                    )
                    .bind(build_id)
                    .bind(node)
                    .bind(result)
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                }

                async fn delete_staging(&self, build_id: &str) -> StoreResult<()> {
                    sqlx::query("DELETE FROM stagings WHERE build_id = $1")
                        .bind(build_id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn sweep_stagings(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                    let done = sqlx::query("DELETE FROM stagings WHERE created_at < $1")
                        .bind(before)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected())
                }
            }
        }
    };
}

staging_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow);
staging_store!(on_postgres, PgStore, sqlx::postgres::PgRow);
