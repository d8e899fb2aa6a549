//! The store's part for node health over time (issue 26): one `node_metrics` row per node and
//! minute. A role trait, a supertrait of [`super::Store`]; plain SQL with `$n` placeholders that
//! reads the same on SQLite and PostgreSQL.

use async_trait::async_trait;
use sqlx::Row;

use super::sql::Dialect;
use super::{PgStore, SqliteStore, StoreError, StoreResult};

/// One node over one minute.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMetricRow {
    pub node_name: String,
    /// The minute's start, unix seconds.
    pub ts: i64,
    /// ready | draining | drained | lost, as last seen in the minute.
    pub state: String,
    /// The longest time seen since the node's last heartbeat during the minute.
    pub lag_secs: f64,
    pub reserved_mb: u64,
    pub capacity_mb: u64,
    pub instances: u64,
}

#[async_trait]
pub trait NodeMetricStore: Send + Sync + 'static {
    /// Records samples into their node's minute: the state, reservations and instances
    /// replace the row's, the lag keeps the longest.
    async fn record_node_metrics(&self, rows: &[NodeMetricRow]) -> StoreResult<()>;
    /// Every node's rows from `since` (unix seconds) on, by node then time.
    async fn node_metrics(&self, since: i64) -> StoreResult<Vec<NodeMetricRow>>;
    /// Deletes rows older than `before`; returns how many.
    async fn trim_node_metrics(&self, before: i64) -> StoreResult<u64>;
}
/// The implementation, expanded once per backend as the shared SQL is (`super::sql`): one text of
/// SQL and row mapping for SQLite and PostgreSQL.
macro_rules! node_metric_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            fn count(r: &$row, name: &str) -> StoreResult<u64> {
                let n: i64 = r.try_get(name)?;
                u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("node metric {name} {n}")))
            }

            fn column(n: u64) -> i64 {
                i64::try_from(n).unwrap_or(i64::MAX)
            }

            #[async_trait]
            impl NodeMetricStore for $store {
                async fn record_node_metrics(&self, rows: &[NodeMetricRow]) -> StoreResult<()> {
                    if rows.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.write_tx().await?;
                    for r in rows {
                        sqlx::query(
                            "INSERT INTO node_metrics
                                 (node_name, ts, state, lag_secs, reserved_mb, capacity_mb, instances)
                             VALUES ($1, $2, $3, $4, $5, $6, $7)
                             ON CONFLICT (node_name, ts) DO UPDATE SET state = excluded.state,
                                 lag_secs = CASE WHEN excluded.lag_secs > node_metrics.lag_secs
                                                 THEN excluded.lag_secs ELSE node_metrics.lag_secs END,
                                 reserved_mb = excluded.reserved_mb, capacity_mb = excluded.capacity_mb,
                                 instances = excluded.instances",
                        )
                        .bind(&r.node_name)
                        .bind(r.ts)
                        .bind(&r.state)
                        .bind(r.lag_secs)
                        .bind(column(r.reserved_mb))
                        .bind(column(r.capacity_mb))
                        .bind(column(r.instances))
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }

                async fn node_metrics(&self, since: i64) -> StoreResult<Vec<NodeMetricRow>> {
                    let rows = sqlx::query(
                        "SELECT node_name, ts, state, lag_secs, reserved_mb, capacity_mb, instances
                         FROM node_metrics WHERE ts >= $1 ORDER BY node_name, ts",
                    )
                    .bind(since)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            Ok(NodeMetricRow {
                                node_name: r.try_get("node_name")?,
                                ts: r.try_get("ts")?,
                                state: r.try_get("state")?,
                                lag_secs: r.try_get("lag_secs")?,
                                reserved_mb: count(r, "reserved_mb")?,
                                capacity_mb: count(r, "capacity_mb")?,
                                instances: count(r, "instances")?,
                            })
                        })
                        .collect()
                }

                async fn trim_node_metrics(&self, before: i64) -> StoreResult<u64> {
                    let r = sqlx::query("DELETE FROM node_metrics WHERE ts < $1")
                        .bind(before)
                        .execute(&self.pool)
                        .await?;
                    Ok(r.rows_affected())
                }
            }
        }
    };
}

node_metric_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
node_metric_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
