//! The store's part for scheduled tasks (issue 21, cron): a role trait of its own, expanded once
//! per backend like [`super::tasks`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use super::sql::Dialect;
use super::{Event, Fence, PgStore, SqliteStore, StoreError, StoreResult};

/// One cron entry of an app (`migrations/sqlite/0032_cron.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronRecord {
    pub id: String,
    pub app_id: String,
    /// The per-app id users see.
    pub sequence: u64,
    pub schedule: String,
    pub command: String,
    pub last_run_at: Option<DateTime<Utc>>,
    /// The task of the newest run.
    pub last_task_id: Option<String>,
    pub next_run_at: DateTime<Utc>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait CronStore: Send + Sync + 'static {
    /// Stores an entry with the app's next sequence number and `event` in one transaction.
    async fn add_cron(
        &self,
        app_id: &str,
        schedule: &str,
        command: &str,
        next_run_at: DateTime<Utc>,
        created_by: &str,
        event: &Event,
    ) -> StoreResult<CronRecord>;
    /// The app's entries, oldest first.
    async fn app_crons(&self, app_id: &str) -> StoreResult<Vec<CronRecord>>;
    /// Removes entry `sequence` of the app with `event` (its number is not given again); false
    /// when there is none.
    async fn remove_cron(&self, app_id: &str, sequence: u64, event: &Event) -> StoreResult<bool>;
    /// Entries whose next run is at or before `now`.
    async fn due_crons(&self, now: DateTime<Utc>) -> StoreResult<Vec<CronRecord>>;
    /// Records a run (its task, or `None` when skipped because the last one still runs) and
    /// the next time; fenced by the lease when given.
    async fn record_cron_run(
        &self,
        fence: Option<&Fence>,
        id: &str,
        task_id: Option<&str>,
        ran_at: DateTime<Utc>,
        next_run_at: DateTime<Utc>,
    ) -> StoreResult<()>;
}

macro_rules! cron_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            fn from_row(r: &$row) -> StoreResult<CronRecord> {
                let seq: i64 = r.try_get("sequence")?;
                Ok(CronRecord {
                    id: r.try_get("id")?,
                    app_id: r.try_get("app_id")?,
                    sequence: u64::try_from(seq)
                        .map_err(|_| StoreError::Corrupt(format!("cron sequence {seq}")))?,
                    schedule: r.try_get("schedule")?,
                    command: r.try_get("command")?,
                    last_run_at: r.try_get("last_run_at")?,
                    last_task_id: r.try_get("last_task_id")?,
                    next_run_at: r.try_get("next_run_at")?,
                    created_by: r.try_get("created_by")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            #[async_trait]
            impl CronStore for $store {
                async fn add_cron(
                    &self,
                    app_id: &str,
                    schedule: &str,
                    command: &str,
                    next_run_at: DateTime<Utc>,
                    created_by: &str,
                    event: &Event,
                ) -> StoreResult<CronRecord> {
                    let mut tx = self.write_tx().await?;
                    let last: Option<i64> =
                        sqlx::query_scalar("SELECT MAX(sequence) FROM cron_jobs WHERE app_id = $1")
                            .bind(app_id)
                            .fetch_one(&mut *tx)
                            .await?;
                    let sequence = last.unwrap_or(0) + 1;
                    let rec = CronRecord {
                        id: uuid::Uuid::new_v4().to_string(),
                        app_id: app_id.to_string(),
                        sequence: u64::try_from(sequence).unwrap_or(1),
                        schedule: schedule.to_string(),
                        command: command.to_string(),
                        last_run_at: None,
                        last_task_id: None,
                        next_run_at,
                        created_by: created_by.to_string(),
                        created_at: Utc::now(),
                    };
                    sqlx::query(
                        "INSERT INTO cron_jobs (id, app_id, sequence, schedule, command, next_run_at, created_by, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(&rec.id)
                    .bind(app_id)
                    .bind(sequence)
                    .bind(schedule)
                    .bind(command)
                    .bind(next_run_at)
                    .bind(created_by)
                    .bind(rec.created_at)
                    .execute(&mut *tx)
                    .await?;
                    let event = Event {
                        message: format!("cron {sequence}: {}", event.message),
                        ..event.clone()
                    };
                    crate::store::$backend::insert_event(&mut *tx, &event).await?;
                    tx.commit().await?;
                    Ok(rec)
                }

                async fn app_crons(&self, app_id: &str) -> StoreResult<Vec<CronRecord>> {
                    let rows = sqlx::query("SELECT * FROM cron_jobs WHERE app_id = $1 AND removed_at IS NULL ORDER BY sequence")
                        .bind(app_id)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(from_row).collect()
                }

                async fn remove_cron(&self, app_id: &str, sequence: u64, event: &Event) -> StoreResult<bool> {
                    let mut tx = self.write_tx().await?;
                    let gone = sqlx::query(
                        "UPDATE cron_jobs SET removed_at = $3 WHERE app_id = $1 AND sequence = $2 AND removed_at IS NULL",
                    )
                        .bind(app_id)
                        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
                        .bind(Utc::now())
                        .execute(&mut *tx)
                        .await?;
                    if gone.rows_affected() == 0 {
                        return Ok(false);
                    }
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(true)
                }

                async fn due_crons(&self, now: DateTime<Utc>) -> StoreResult<Vec<CronRecord>> {
                    let rows = sqlx::query("SELECT * FROM cron_jobs WHERE next_run_at <= $1 AND removed_at IS NULL ORDER BY next_run_at")
                        .bind(now)
                        .fetch_all(&self.pool)
                        .await?;
                    rows.iter().map(from_row).collect()
                }

                async fn record_cron_run(
                    &self,
                    fence: Option<&Fence>,
                    id: &str,
                    task_id: Option<&str>,
                    ran_at: DateTime<Utc>,
                    next_run_at: DateTime<Utc>,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    if let Some(f) = fence {
                        crate::store::$backend::check_fence(&mut tx, f).await?;
                    }
                    match task_id {
                        Some(task) => {
                            sqlx::query(
                                "UPDATE cron_jobs SET last_task_id = $2, last_run_at = $3, next_run_at = $4 WHERE id = $1",
                            )
                            .bind(id)
                            .bind(task)
                            .bind(ran_at)
                            .bind(next_run_at)
                            .execute(&mut *tx)
                            .await?;
                        }
                        None => {
                            sqlx::query("UPDATE cron_jobs SET next_run_at = $2 WHERE id = $1")
                                .bind(id)
                                .bind(next_run_at)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    Ok(())
                }
            }
        }
    };
}

cron_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
cron_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
