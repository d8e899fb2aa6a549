//! The store's part for one-off tasks (issue 21): a role trait of its own, a supertrait of
//! [`super::Store`], expanded once per backend like [`super::quotas`].
//!
//! At most once is kept here: a task is placed only while it is pending and has no node (one
//! `UPDATE ... WHERE node_name IS NULL`), and a finished task never changes again (every change
//! is guarded by its state), so neither a second placement nor a late report can revive it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use paas_common::agent::TaskReport;
use paas_common::api::TaskState;
use sqlx::Row;
use std::collections::BTreeMap;

use super::sql::Dialect;
use super::{Event, Fence, PgStore, SqliteStore, StoreError, StoreResult};

/// A task as stored (`migrations/sqlite/0031_tasks.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub id: String,
    pub app_id: String,
    /// The per-app id users see.
    pub sequence: u64,
    pub name: String,
    /// `task`, or `release` for a push's release phase.
    pub kind: String,
    pub command: String,
    pub droplet: String,
    pub revision: i64,
    /// As revisions keep it: secret values sealed.
    pub env: BTreeMap<String, String>,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub state: TaskState,
    pub node_name: Option<String>,
    pub exit_code: Option<i64>,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a new task runs; the store gives it its id and sequence number.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub app_id: String,
    /// `None`: its sequence number.
    pub name: Option<String>,
    pub kind: String,
    pub command: String,
    pub droplet: String,
    pub revision: i64,
    pub env: BTreeMap<String, String>,
    pub memory_mb: u64,
    pub disk_mb: u64,
    pub created_by: String,
}

pub const KIND_TASK: &str = "task";
pub const KIND_RELEASE: &str = "release";

#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Stores a pending task with the app's next sequence number, and `event` (its message
    /// prefixed with `task N: `) in the same transaction.
    async fn create_task(&self, task: &NewTask, event: &Event) -> StoreResult<TaskRecord>;
    /// The app's tasks, oldest first.
    async fn app_tasks(&self, app_id: &str) -> StoreResult<Vec<TaskRecord>>;
    async fn app_task(&self, app_id: &str, sequence: u64) -> StoreResult<Option<TaskRecord>>;
    async fn task(&self, id: &str) -> StoreResult<Option<TaskRecord>>;
    /// Every pending or running task (what the scheduler places and nodes are told of).
    async fn active_tasks(&self) -> StoreResult<Vec<TaskRecord>>;
    /// Places a pending, unplaced task on `node` (or records why it waits, `node` `None`);
    /// fenced by the lease when given. False when the task was placed or ended meanwhile.
    async fn place_task(
        &self,
        fence: Option<&Fence>,
        id: &str,
        node: Option<&str>,
        reason: Option<&str>,
    ) -> StoreResult<bool>;
    /// Applies `node`'s report of a task placed on it; the task after the change, with its
    /// event, when it changed.
    async fn report_task(&self, node: &str, report: &TaskReport)
        -> StoreResult<Option<TaskRecord>>;
    /// Ends an unfinished task as FAILED with `reason` (terminated, node lost), with a
    /// `task.failed` event by `actor`; fenced when given. `None` when it had ended already.
    async fn fail_task(
        &self,
        fence: Option<&Fence>,
        id: &str,
        reason: &str,
        actor: &str,
    ) -> StoreResult<Option<TaskRecord>>;
    /// The app (id) of a task placed on `node`, finished or not (its last lines arrive after
    /// its end).
    async fn app_of_task(&self, task_id: &str, node: &str) -> StoreResult<Option<String>>;
}

/// What a report means for a task: its new state, exit code and reason.
pub fn reported_state(report: &TaskReport) -> (TaskState, Option<i64>, Option<String>) {
    match (report.exit_code, &report.failure) {
        (None, None) => (TaskState::Running, None, None),
        (Some(0), None) => (TaskState::Succeeded, Some(0), None),
        (Some(code), None) => (
            TaskState::Failed,
            Some(code),
            Some(format!("exited with code {code}")),
        ),
        (code, Some(why)) => (TaskState::Failed, code, Some(why.clone())),
    }
}

fn describe(t: &TaskRecord) -> String {
    match (&t.reason, t.exit_code) {
        (Some(r), _) => r.clone(),
        (None, Some(c)) => format!("exited with code {c}"),
        (None, None) => t.state.as_str().to_lowercase(),
    }
}

macro_rules! task_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            const COLUMNS: &str = "t.id, t.app_id, t.sequence, t.name, t.kind, t.command, t.droplet, \
                t.revision, t.env, t.memory_mb, t.disk_mb, t.state, t.node_name, t.exit_code, \
                t.reason, t.created_by, t.created_at, t.updated_at, a.name AS app_name";

            fn unsigned(r: &$row, name: &str) -> StoreResult<u64> {
                let v: i64 = r.try_get(name)?;
                u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("task {name} {v}")))
            }

            fn signed(v: u64) -> i64 {
                i64::try_from(v).unwrap_or(i64::MAX)
            }

            fn from_row(r: &$row) -> StoreResult<(TaskRecord, String)> {
                let state: String = r.try_get("state")?;
                let env: String = r.try_get("env")?;
                Ok((
                    TaskRecord {
                        id: r.try_get("id")?,
                        app_id: r.try_get("app_id")?,
                        sequence: unsigned(r, "sequence")?,
                        name: r.try_get("name")?,
                        kind: r.try_get("kind")?,
                        command: r.try_get("command")?,
                        droplet: r.try_get("droplet")?,
                        revision: r.try_get("revision")?,
                        env: crate::store::sql::json_map(&env)?,
                        memory_mb: unsigned(r, "memory_mb")?,
                        disk_mb: unsigned(r, "disk_mb")?,
                        state: TaskState::parse(&state)
                            .ok_or_else(|| StoreError::Corrupt(format!("task state {state:?}")))?,
                        node_name: r.try_get("node_name")?,
                        exit_code: r.try_get("exit_code")?,
                        reason: r.try_get("reason")?,
                        created_by: r.try_get("created_by")?,
                        created_at: r.try_get("created_at")?,
                        updated_at: r.try_get("updated_at")?,
                    },
                    r.try_get("app_name")?,
                ))
            }

            async fn one<'c, E: sqlx::Executor<'c, Database = <$store as crate::store::sql::Dialect>::Db>>(
                ex: E,
                id: &str,
            ) -> StoreResult<Option<(TaskRecord, String)>> {
                let sql = format!("SELECT {COLUMNS} FROM tasks t JOIN apps a ON a.id = t.app_id WHERE t.id = $1");
                let row = sqlx::query(&sql).bind(id).fetch_optional(ex).await?;
                row.as_ref().map(from_row).transpose()
            }

            /// Writes the end (or start) of a task and its event in `tx`, unless it ended.
            async fn finish(
                tx: &mut sqlx::Transaction<'static, <$store as crate::store::sql::Dialect>::Db>,
                id: &str,
                state: TaskState,
                exit_code: Option<i64>,
                reason: Option<&str>,
                actor: &str,
            ) -> StoreResult<Option<TaskRecord>> {
                let Some((before, app_name)) = one(&mut **tx, id).await? else {
                    return Ok(None);
                };
                if before.state.finished() || before.state == state {
                    return Ok(None);
                }
                sqlx::query(
                    "UPDATE tasks SET state = $2, exit_code = $3, reason = $4, updated_at = $5
                     WHERE id = $1 AND state IN ('PENDING', 'RUNNING')",
                )
                .bind(id)
                .bind(state.as_str())
                .bind(exit_code)
                .bind(reason)
                .bind(Utc::now())
                .execute(&mut **tx)
                .await?;
                let after = TaskRecord {
                    state,
                    exit_code,
                    reason: reason.map(str::to_string),
                    updated_at: Utc::now(),
                    ..before
                };
                let (kind, message) = match state {
                    TaskState::Succeeded => ("task.succeeded", format!("task {} ({}) succeeded", after.sequence, after.name)),
                    TaskState::Failed => ("task.failed", format!("task {} ({}) failed: {}", after.sequence, after.name, describe(&after))),
                    // Running is no event: the start is in the logs.
                    _ => return Ok(Some(after)),
                };
                crate::store::$backend::insert_event(
                    &mut **tx,
                    &Event {
                        app_name: Some(app_name),
                        app_id: Some(after.app_id.clone()),
                        actor: actor.to_string(),
                        kind: kind.into(),
                        message,
                    },
                )
                .await?;
                Ok(Some(after))
            }

            #[async_trait]
            impl TaskStore for $store {
                async fn create_task(&self, t: &NewTask, event: &Event) -> StoreResult<TaskRecord> {
                    let mut tx = self.write_tx().await?;
                    // Under the writer lock: the next number cannot race another create.
                    let last: Option<i64> = sqlx::query_scalar("SELECT MAX(sequence) FROM tasks WHERE app_id = $1")
                        .bind(&t.app_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let sequence = u64::try_from(last.unwrap_or(0)).unwrap_or(0) + 1;
                    let now = Utc::now();
                    let rec = TaskRecord {
                        id: uuid::Uuid::new_v4().to_string(),
                        app_id: t.app_id.clone(),
                        sequence,
                        name: t.name.clone().unwrap_or_else(|| sequence.to_string()),
                        kind: t.kind.clone(),
                        command: t.command.clone(),
                        droplet: t.droplet.clone(),
                        revision: t.revision,
                        env: t.env.clone(),
                        memory_mb: t.memory_mb,
                        disk_mb: t.disk_mb,
                        state: TaskState::Pending,
                        node_name: None,
                        exit_code: None,
                        reason: None,
                        created_by: t.created_by.clone(),
                        created_at: now,
                        updated_at: now,
                    };
                    let env = serde_json::to_string(&rec.env)
                        .map_err(|e| StoreError::Corrupt(format!("task env: {e}")))?;
                    sqlx::query(
                        "INSERT INTO tasks (id, app_id, sequence, name, kind, command, droplet, revision, env,
                             memory_mb, disk_mb, state, created_by, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
                    )
                    .bind(&rec.id)
                    .bind(&rec.app_id)
                    .bind(signed(sequence))
                    .bind(&rec.name)
                    .bind(&rec.kind)
                    .bind(&rec.command)
                    .bind(&rec.droplet)
                    .bind(rec.revision)
                    .bind(env)
                    .bind(signed(rec.memory_mb))
                    .bind(signed(rec.disk_mb))
                    .bind(rec.state.as_str())
                    .bind(&rec.created_by)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| match e {
                        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                            StoreError::NotFound("app".into())
                        }
                        e => e.into(),
                    })?;
                    let event = Event {
                        message: format!("task {sequence}: {}", event.message),
                        ..event.clone()
                    };
                    crate::store::$backend::insert_event(&mut *tx, &event).await?;
                    tx.commit().await?;
                    Ok(rec)
                }

                async fn app_tasks(&self, app_id: &str) -> StoreResult<Vec<TaskRecord>> {
                    let sql = format!("SELECT {COLUMNS} FROM tasks t JOIN apps a ON a.id = t.app_id WHERE t.app_id = $1 ORDER BY t.sequence");
                    let rows = sqlx::query(&sql).bind(app_id).fetch_all(&self.pool).await?;
                    rows.iter().map(|r| from_row(r).map(|(t, _)| t)).collect()
                }

                async fn app_task(&self, app_id: &str, sequence: u64) -> StoreResult<Option<TaskRecord>> {
                    let sql = format!("SELECT {COLUMNS} FROM tasks t JOIN apps a ON a.id = t.app_id WHERE t.app_id = $1 AND t.sequence = $2");
                    let row = sqlx::query(&sql)
                        .bind(app_id)
                        .bind(signed(sequence))
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(row.as_ref().map(from_row).transpose()?.map(|(t, _)| t))
                }

                async fn task(&self, id: &str) -> StoreResult<Option<TaskRecord>> {
                    Ok(one(&self.pool, id).await?.map(|(t, _)| t))
                }

                async fn active_tasks(&self) -> StoreResult<Vec<TaskRecord>> {
                    let sql = format!("SELECT {COLUMNS} FROM tasks t JOIN apps a ON a.id = t.app_id WHERE t.state IN ('PENDING', 'RUNNING') ORDER BY t.created_at");
                    let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
                    rows.iter().map(|r| from_row(r).map(|(t, _)| t)).collect()
                }

                async fn place_task(
                    &self,
                    fence: Option<&Fence>,
                    id: &str,
                    node: Option<&str>,
                    reason: Option<&str>,
                ) -> StoreResult<bool> {
                    let mut tx = self.write_tx().await?;
                    if let Some(f) = fence {
                        crate::store::$backend::check_fence(&mut tx, f).await?;
                    }
                    let res = sqlx::query(
                        "UPDATE tasks SET node_name = $2, reason = $3, updated_at = $4
                         WHERE id = $1 AND node_name IS NULL AND state = 'PENDING'",
                    )
                    .bind(id)
                    .bind(node)
                    .bind(reason)
                    .bind(Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(res.rows_affected() > 0)
                }

                async fn report_task(
                    &self,
                    node: &str,
                    report: &TaskReport,
                ) -> StoreResult<Option<TaskRecord>> {
                    let (state, code, reason) = reported_state(report);
                    // Every heartbeat repeats the report: a plain read settles the usual case
                    // (nothing new) without the writer lock.
                    let current = one(&self.pool, &report.task_id).await?;
                    let Some((current, _)) = current else {
                        return Ok(None);
                    };
                    if current.node_name.as_deref() != Some(node)
                        || current.state.finished()
                        || current.state == state
                    {
                        return Ok(None);
                    }
                    let mut tx = self.write_tx().await?;
                    let after = finish(&mut tx, &report.task_id, state, code, reason.as_deref(), &format!("node:{node}")).await?;
                    tx.commit().await?;
                    Ok(after)
                }

                async fn fail_task(
                    &self,
                    fence: Option<&Fence>,
                    id: &str,
                    reason: &str,
                    actor: &str,
                ) -> StoreResult<Option<TaskRecord>> {
                    let mut tx = self.write_tx().await?;
                    if let Some(f) = fence {
                        crate::store::$backend::check_fence(&mut tx, f).await?;
                    }
                    let after = finish(&mut tx, id, TaskState::Failed, None, Some(reason), actor).await?;
                    tx.commit().await?;
                    Ok(after)
                }

                async fn app_of_task(&self, task_id: &str, node: &str) -> StoreResult<Option<String>> {
                    Ok(sqlx::query_scalar("SELECT app_id FROM tasks WHERE id = $1 AND node_name = $2")
                        .bind(task_id)
                        .bind(node)
                        .fetch_optional(&self.pool)
                        .await?)
                }
            }
        }
    };
}

task_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
task_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
