//! The store's part for the 1-minute metric rollups (issue 26): the 10 s rows of a span read
//! back for every app, and the `app_metrics_1m` rows the timeseries loop makes of them. A role
//! trait, a supertrait of [`super::Store`]; plain SQL with `$n` placeholders that reads the same
//! on SQLite and PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;

use super::sql::Dialect;
use super::{MetricRow, PgStore, SqliteStore, StoreError, StoreResult};

#[async_trait]
pub trait RollupStore: Send + Sync + 'static {
    /// Every app's 10 s rows with `from <= ts < to`.
    async fn app_metrics_between(&self, from: i64, to: i64) -> StoreResult<Vec<MetricRow>>;
    /// Stores 1-minute rows (one already stored for that app and minute is replaced).
    async fn add_app_rollups(&self, rows: &[MetricRow]) -> StoreResult<()>;
    /// One app's 1-minute rows from `since` (unix seconds) on, oldest first.
    async fn app_rollups(&self, app_id: &str, since: i64) -> StoreResult<Vec<MetricRow>>;
    /// Deletes 1-minute rows older than `before`, and those of apps that are gone; returns how
    /// many.
    async fn trim_app_rollups(&self, before: i64) -> StoreResult<u64>;
}

const COLUMNS: &str =
    "app_id, ts, requests, errors, p50_ms, p99_ms, memory_bytes, cpu_percent, restarts, instances";
/// The implementation, expanded once per backend as the shared SQL is (`super::sql`): one text of
/// SQL and row mapping for SQLite and PostgreSQL.
macro_rules! rollup_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            fn count(r: &$row, name: &str) -> StoreResult<u64> {
                let n: i64 = r.try_get(name)?;
                u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("metric {name} {n}")))
            }

            fn metric_from_row(r: &$row) -> StoreResult<MetricRow> {
                let instances: String = r.try_get("instances")?;
                Ok(MetricRow {
                    app_id: r.try_get("app_id")?,
                    ts: r.try_get("ts")?,
                    requests: count(r, "requests")?,
                    errors: count(r, "errors")?,
                    p50_ms: r.try_get("p50_ms")?,
                    p99_ms: r.try_get("p99_ms")?,
                    memory_bytes: count(r, "memory_bytes")?,
                    cpu_percent: r.try_get("cpu_percent")?,
                    restarts: count(r, "restarts")?,
                    instances: serde_json::from_str(&instances)
                        .map_err(|e| StoreError::Corrupt(format!("metric instances: {e}")))?,
                })
            }

            fn column(n: u64) -> i64 {
                i64::try_from(n).unwrap_or(i64::MAX)
            }

            #[async_trait]
            impl RollupStore for $store {
                async fn app_metrics_between(&self, from: i64, to: i64) -> StoreResult<Vec<MetricRow>> {
                    let rows = sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM app_metrics WHERE ts >= $1 AND ts < $2 ORDER BY app_id, ts"
                    ))
                    .bind(from)
                    .bind(to)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(metric_from_row).collect()
                }

                async fn add_app_rollups(&self, rows: &[MetricRow]) -> StoreResult<()> {
                    if rows.is_empty() {
                        return Ok(());
                    }
                    let sql = format!(
                        "INSERT INTO app_metrics_1m ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                         ON CONFLICT (app_id, ts) DO UPDATE SET requests = excluded.requests,
                             errors = excluded.errors, p50_ms = excluded.p50_ms, p99_ms = excluded.p99_ms,
                             memory_bytes = excluded.memory_bytes, cpu_percent = excluded.cpu_percent,
                             restarts = excluded.restarts, instances = excluded.instances"
                    );
                    let mut tx = self.write_tx().await?;
                    for r in rows {
                        let instances = serde_json::to_string(&r.instances)
                            .map_err(|e| StoreError::Corrupt(format!("metric instances: {e}")))?;
                        sqlx::query(&sql)
                            .bind(&r.app_id)
                            .bind(r.ts)
                            .bind(column(r.requests))
                            .bind(column(r.errors))
                            .bind(r.p50_ms)
                            .bind(r.p99_ms)
                            .bind(column(r.memory_bytes))
                            .bind(r.cpu_percent)
                            .bind(column(r.restarts))
                            .bind(instances)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn app_rollups(&self, app_id: &str, since: i64) -> StoreResult<Vec<MetricRow>> {
                    let rows = sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM app_metrics_1m WHERE app_id = $1 AND ts >= $2 ORDER BY ts"
                    ))
                    .bind(app_id)
                    .bind(since)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(metric_from_row).collect()
                }

                async fn trim_app_rollups(&self, before: i64) -> StoreResult<u64> {
                    let r = sqlx::query(
                        "DELETE FROM app_metrics_1m
                         WHERE ts < $1 OR NOT EXISTS (SELECT 1 FROM apps WHERE apps.id = app_metrics_1m.app_id)",
                    )
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                    Ok(r.rows_affected())
                }
            }
        }
    };
}

rollup_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
rollup_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
