//! The store's part for app-to-app networking (issue 25, `migrations/sqlite/0038_network.sql`):
//! network policies, the instance addresses nodes report (written with the rest of each report,
//! `InstanceStore::report_instance`) and the nodes' instance subnets. A role
//! trait of its own, expanded once per backend like [`super::cron`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::collections::HashMap;

use super::sql::Dialect;
use super::{Event, PgStore, SqliteStore, StoreError, StoreResult};

/// One network policy row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRecord {
    pub id: String,
    pub source_app_id: String,
    pub destination_app_id: String,
    pub protocol: String,
    pub start_port: u16,
    pub end_port: u16,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait NetworkStore: Send + Sync + 'static {
    /// Stores a policy with `event` in one transaction; `Conflict` when the same one exists.
    async fn add_policy(&self, policy: &PolicyRecord, event: &Event) -> StoreResult<()>;
    /// Removes the policy of these apps, protocol and ports with `event`; false when none.
    async fn remove_policy(
        &self,
        source_app_id: &str,
        destination_app_id: &str,
        protocol: &str,
        ports: (u16, u16),
        event: &Event,
    ) -> StoreResult<bool>;
    /// Every policy, oldest first.
    async fn list_policies(&self) -> StoreResult<Vec<PolicyRecord>>;
    /// Instance id -> the address its node reported on its instance network.
    async fn instance_ips(&self) -> StoreResult<HashMap<String, String>>;
    /// Records a node's instance subnet (CIDR) as it registered.
    async fn set_node_subnet(&self, node: &str, subnet: Option<&str>) -> StoreResult<()>;
    /// Node name -> its instance subnet, for nodes that reported one.
    async fn node_subnets(&self) -> StoreResult<HashMap<String, String>>;
}

macro_rules! network_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            fn from_row(r: &$row) -> StoreResult<PolicyRecord> {
                let port = |col: &str| -> StoreResult<u16> {
                    let p: i64 = r.try_get(col)?;
                    u16::try_from(p).map_err(|_| StoreError::Corrupt(format!("policy port {p}")))
                };
                Ok(PolicyRecord {
                    id: r.try_get("id")?,
                    source_app_id: r.try_get("source_app_id")?,
                    destination_app_id: r.try_get("destination_app_id")?,
                    protocol: r.try_get("protocol")?,
                    start_port: port("start_port")?,
                    end_port: port("end_port")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            #[async_trait]
            impl NetworkStore for $store {
                async fn add_policy(&self, p: &PolicyRecord, event: &Event) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    let done = sqlx::query(
                        "INSERT INTO network_policies (id, source_app_id, destination_app_id, protocol, start_port, end_port, created_by, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    )
                    .bind(&p.id)
                    .bind(&p.source_app_id)
                    .bind(&p.destination_app_id)
                    .bind(&p.protocol)
                    .bind(i64::from(p.start_port))
                    .bind(i64::from(p.end_port))
                    .bind(&p.created_by)
                    .bind(p.created_at)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::Conflict("the policy exists already".into()));
                    }
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn remove_policy(
                    &self,
                    source_app_id: &str,
                    destination_app_id: &str,
                    protocol: &str,
                    ports: (u16, u16),
                    event: &Event,
                ) -> StoreResult<bool> {
                    let mut tx = self.write_tx().await?;
                    let gone = sqlx::query(
                        "DELETE FROM network_policies WHERE source_app_id = $1 AND destination_app_id = $2 \
                         AND protocol = $3 AND start_port = $4 AND end_port = $5",
                    )
                    .bind(source_app_id)
                    .bind(destination_app_id)
                    .bind(protocol)
                    .bind(i64::from(ports.0))
                    .bind(i64::from(ports.1))
                    .execute(&mut *tx)
                    .await?;
                    if gone.rows_affected() == 0 {
                        return Ok(false);
                    }
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(true)
                }

                async fn list_policies(&self) -> StoreResult<Vec<PolicyRecord>> {
                    let rows = sqlx::query("SELECT * FROM network_policies ORDER BY created_at, id")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(from_row).collect()
                }

                async fn instance_ips(&self) -> StoreResult<HashMap<String, String>> {
                    let rows = sqlx::query("SELECT id, ip FROM instances WHERE ip IS NOT NULL")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|r| Ok((r.try_get("id")?, r.try_get("ip")?)))
                        .collect()
                }

                async fn set_node_subnet(&self, node: &str, subnet: Option<&str>) -> StoreResult<()> {
                    sqlx::query("UPDATE nodes SET subnet = $1 WHERE name = $2")
                        .bind(subnet)
                        .bind(node)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn node_subnets(&self) -> StoreResult<HashMap<String, String>> {
                    let rows = sqlx::query("SELECT name, subnet FROM nodes WHERE subnet IS NOT NULL")
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter()
                        .map(|r| Ok((r.try_get("name")?, r.try_get("subnet")?)))
                        .collect()
                }
            }
        }
    };
}

network_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
network_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
