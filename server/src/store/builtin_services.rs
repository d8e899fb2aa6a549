//! The built-in service broker's own tables (issue 22): its service instances (where each
//! container runs), bindings (the role or ACL user each made) and backup/restore jobs. A role
//! trait of its own, a supertrait of [`super::Store`]; the SQL reads the same on both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use paas_common::agent::ServiceReport;
use sqlx::Row;

use super::sql::Dialect;
use super::{Fence, PgStore, SqliteStore, StoreError, StoreResult};

/// A built-in service instance as its broker keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinInstanceRecord {
    /// The platform's service instance id.
    pub id: String,
    /// `postgresql` or `redis`.
    pub service: String,
    pub plan: String,
    pub memory_mb: u64,
    pub disk_mb: u64,
    /// Sealed with the instance id as context.
    pub admin_password: String,
    /// `provisioning`, `ready`, `deprovisioning`.
    pub state: String,
    pub node_name: Option<String>,
    pub placement_error: Option<String>,
    pub host_port: Option<u16>,
    pub running: bool,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

/// One binding: the PostgreSQL role or Redis ACL user made for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinBindingRecord {
    pub id: String,
    pub instance_id: String,
    pub username: String,
    /// Sealed with the instance id as context.
    pub password: String,
}

/// A backup (`pg_dump -Fc` into a blob) or a restore of one, run on the service's node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinJobRecord {
    pub id: String,
    pub instance_id: String,
    /// `backup` or `restore`.
    pub kind: String,
    /// For a restore: the backup (job id) it restores.
    pub backup_id: Option<String>,
    /// The dump's blob (sha256): a backup's result, a restore's input.
    pub blob: Option<String>,
    /// `pending`, `done`, `failed`.
    pub state: String,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait BuiltinServiceStore: Send + Sync + 'static {
    /// False when the id exists already (provisioning is idempotent).
    async fn insert_builtin_instance(&self, rec: &BuiltinInstanceRecord) -> StoreResult<bool>;
    async fn builtin_instance(&self, id: &str) -> StoreResult<Option<BuiltinInstanceRecord>>;
    /// Every instance, deprovisioning ones too, oldest first.
    async fn builtin_instances(&self) -> StoreResult<Vec<BuiltinInstanceRecord>>;
    /// Places an unplaced instance on `node`, or records why it cannot be (`node` `None`);
    /// fenced when given. False when it was placed already or is going.
    async fn place_builtin_instance(
        &self,
        fence: Option<&Fence>,
        id: &str,
        node: Option<&str>,
        error: Option<&str>,
    ) -> StoreResult<bool>;
    async fn set_builtin_instance_state(&self, id: &str, state: &str) -> StoreResult<()>;
    /// Applies `node`'s report of a service container placed on it; true when it changed.
    async fn report_builtin_service(&self, node: &str, report: &ServiceReport)
        -> StoreResult<bool>;
    /// Removes the instance with its bindings and jobs.
    async fn delete_builtin_instance(&self, id: &str) -> StoreResult<()>;
    /// False when the id exists already.
    async fn insert_builtin_binding(&self, rec: &BuiltinBindingRecord) -> StoreResult<bool>;
    async fn builtin_binding(&self, id: &str) -> StoreResult<Option<BuiltinBindingRecord>>;
    async fn delete_builtin_binding(&self, id: &str) -> StoreResult<()>;
    async fn insert_builtin_job(&self, rec: &BuiltinJobRecord) -> StoreResult<()>;
    async fn builtin_job(&self, id: &str) -> StoreResult<Option<BuiltinJobRecord>>;
    /// An instance's jobs, oldest first.
    async fn builtin_jobs(&self, instance_id: &str) -> StoreResult<Vec<BuiltinJobRecord>>;
    /// Every pending job, oldest first.
    async fn pending_builtin_jobs(&self) -> StoreResult<Vec<BuiltinJobRecord>>;
    /// Ends a pending job; false when it had ended already.
    async fn finish_builtin_job(
        &self,
        id: &str,
        state: &str,
        blob: Option<&str>,
        error: Option<&str>,
    ) -> StoreResult<bool>;
}

macro_rules! builtin_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            const INSTANCE: &str = "id, service, plan, memory_mb, disk_mb, admin_password, state, \
                node_name, placement_error, host_port, running, restarts, last_exit";
            const JOB: &str =
                "id, instance_id, kind, backup_id, blob, state, error, created_at";

            fn unsigned(r: &$row, name: &str) -> StoreResult<u64> {
                let v: i64 = r.try_get(name)?;
                u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("service {name} {v}")))
            }

            fn signed(v: u64) -> i64 {
                i64::try_from(v).unwrap_or(i64::MAX)
            }

            fn instance(r: &$row) -> StoreResult<BuiltinInstanceRecord> {
                let port: Option<i64> = r.try_get("host_port")?;
                Ok(BuiltinInstanceRecord {
                    id: r.try_get("id")?,
                    service: r.try_get("service")?,
                    plan: r.try_get("plan")?,
                    memory_mb: unsigned(r, "memory_mb")?,
                    disk_mb: unsigned(r, "disk_mb")?,
                    admin_password: r.try_get("admin_password")?,
                    state: r.try_get("state")?,
                    node_name: r.try_get("node_name")?,
                    placement_error: r.try_get("placement_error")?,
                    host_port: port.and_then(|p| u16::try_from(p).ok()),
                    running: r.try_get("running")?,
                    restarts: u32::try_from(unsigned(r, "restarts")?).unwrap_or(u32::MAX),
                    last_exit: r.try_get("last_exit")?,
                })
            }

            fn job(r: &$row) -> StoreResult<BuiltinJobRecord> {
                Ok(BuiltinJobRecord {
                    id: r.try_get("id")?,
                    instance_id: r.try_get("instance_id")?,
                    kind: r.try_get("kind")?,
                    backup_id: r.try_get("backup_id")?,
                    blob: r.try_get("blob")?,
                    state: r.try_get("state")?,
                    error: r.try_get("error")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            #[async_trait]
            impl BuiltinServiceStore for $store {
                async fn insert_builtin_instance(
                    &self,
                    rec: &BuiltinInstanceRecord,
                ) -> StoreResult<bool> {
                    let now = Utc::now();
                    let res = sqlx::query(
                        "INSERT INTO builtin_service_instances (id, service, plan, memory_mb, \
                         disk_mb, admin_password, state, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&rec.id)
                    .bind(&rec.service)
                    .bind(&rec.plan)
                    .bind(signed(rec.memory_mb))
                    .bind(signed(rec.disk_mb))
                    .bind(&rec.admin_password)
                    .bind(&rec.state)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                    Ok(res.rows_affected() == 1)
                }

                async fn builtin_instance(
                    &self,
                    id: &str,
                ) -> StoreResult<Option<BuiltinInstanceRecord>> {
                    let sql = format!("SELECT {INSTANCE} FROM builtin_service_instances WHERE id = $1");
                    let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                    row.as_ref().map(instance).transpose()
                }

                async fn builtin_instances(&self) -> StoreResult<Vec<BuiltinInstanceRecord>> {
                    let sql = format!(
                        "SELECT {INSTANCE} FROM builtin_service_instances ORDER BY created_at, id"
                    );
                    let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                    rows.iter().map(instance).collect()
                }

                async fn place_builtin_instance(
                    &self,
                    fence: Option<&Fence>,
                    id: &str,
                    node: Option<&str>,
                    error: Option<&str>,
                ) -> StoreResult<bool> {
                    let mut tx = self.write_tx().await?;
                    if let Some(f) = fence {
                        crate::store::$backend::check_fence(&mut tx, f).await?;
                    }
                    let res = sqlx::query(
                        "UPDATE builtin_service_instances
                         SET node_name = $2, placement_error = $3, updated_at = $4
                         WHERE id = $1 AND node_name IS NULL AND state <> 'deprovisioning'",
                    )
                    .bind(id)
                    .bind(node)
                    .bind(error)
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(res.rows_affected() == 1 && node.is_some())
                }

                async fn set_builtin_instance_state(&self, id: &str, state: &str) -> StoreResult<()> {
                    sqlx::query(
                        "UPDATE builtin_service_instances SET state = $2, updated_at = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(state)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn report_builtin_service(
                    &self,
                    node: &str,
                    report: &ServiceReport,
                ) -> StoreResult<bool> {
                    let res = sqlx::query(
                        "UPDATE builtin_service_instances
                         SET host_port = $3, running = $4, restarts = $5, last_exit = $6, updated_at = $7
                         WHERE id = $1 AND node_name = $2
                           AND (host_port IS DISTINCT FROM $3 OR running <> $4 OR restarts <> $5
                                OR last_exit IS DISTINCT FROM $6)",
                    )
                    .bind(&report.service_id)
                    .bind(node)
                    .bind(report.host_port.map(i64::from))
                    .bind(report.running)
                    .bind(i64::from(report.restarts))
                    .bind(&report.last_exit)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?;
                    Ok(res.rows_affected() > 0)
                }

                async fn delete_builtin_instance(&self, id: &str) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    for table in ["builtin_service_jobs", "builtin_service_bindings"] {
                        sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = $1"))
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query("DELETE FROM builtin_service_instances WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn insert_builtin_binding(
                    &self,
                    rec: &BuiltinBindingRecord,
                ) -> StoreResult<bool> {
                    let res = sqlx::query(
                        "INSERT INTO builtin_service_bindings (id, instance_id, username, password, created_at)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&rec.id)
                    .bind(&rec.instance_id)
                    .bind(&rec.username)
                    .bind(&rec.password)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?;
                    Ok(res.rows_affected() == 1)
                }

                async fn builtin_binding(
                    &self,
                    id: &str,
                ) -> StoreResult<Option<BuiltinBindingRecord>> {
                    let row = sqlx::query(
                        "SELECT id, instance_id, username, password FROM builtin_service_bindings WHERE id = $1",
                    )
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|r| {
                        Ok(BuiltinBindingRecord {
                            id: r.try_get("id")?,
                            instance_id: r.try_get("instance_id")?,
                            username: r.try_get("username")?,
                            password: r.try_get("password")?,
                        })
                    })
                    .transpose()
                }

                async fn delete_builtin_binding(&self, id: &str) -> StoreResult<()> {
                    sqlx::query("DELETE FROM builtin_service_bindings WHERE id = $1")
                        .bind(id)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn insert_builtin_job(&self, rec: &BuiltinJobRecord) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO builtin_service_jobs (id, instance_id, kind, backup_id, blob, \
                         state, error, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                    )
                    .bind(&rec.id)
                    .bind(&rec.instance_id)
                    .bind(&rec.kind)
                    .bind(&rec.backup_id)
                    .bind(&rec.blob)
                    .bind(&rec.state)
                    .bind(&rec.error)
                    .bind(rec.created_at)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn builtin_job(&self, id: &str) -> StoreResult<Option<BuiltinJobRecord>> {
                    let sql = format!("SELECT {JOB} FROM builtin_service_jobs WHERE id = $1");
                    let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await?;
                    row.as_ref().map(job).transpose()
                }

                async fn builtin_jobs(&self, instance_id: &str) -> StoreResult<Vec<BuiltinJobRecord>> {
                    let sql = format!(
                        "SELECT {JOB} FROM builtin_service_jobs WHERE instance_id = $1 ORDER BY created_at, id"
                    );
                    let rows = sqlx::query(&sql).bind(instance_id).fetch_all(&self.pool).await?;
                    rows.iter().map(job).collect()
                }

                async fn pending_builtin_jobs(&self) -> StoreResult<Vec<BuiltinJobRecord>> {
                    let sql = format!(
                        "SELECT {JOB} FROM builtin_service_jobs WHERE state = 'pending' ORDER BY created_at, id"
                    );
                    let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                    rows.iter().map(job).collect()
                }

                async fn finish_builtin_job(
                    &self,
                    id: &str,
                    state: &str,
                    blob: Option<&str>,
                    error: Option<&str>,
                ) -> StoreResult<bool> {
                    let res = sqlx::query(
                        "UPDATE builtin_service_jobs
                         SET state = $2, blob = COALESCE($3, blob), error = $4, updated_at = $5
                         WHERE id = $1 AND state = 'pending'",
                    )
                    .bind(id)
                    .bind(state)
                    .bind(blob)
                    .bind(error)
                    .bind(Utc::now())
                    .execute(&self.pool)
                    .await?;
                    Ok(res.rows_affected() == 1)
                }
            }
        }
    };
}

builtin_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
builtin_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
