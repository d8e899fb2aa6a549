//! The SQLite backend (the default): WAL mode, foreign keys on, migrations from
//! `migrations/sqlite` run at open, a single writer (`BEGIN IMMEDIATE`) and a connection of its
//! own for log lines. The SQL itself is shared with PostgreSQL in [`super::sql`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use paas_common::agent::{InstanceReport, NodeCapacity};
use paas_common::api::{AppState, InstanceState, InstanceUsage, LogLine};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::sql::*;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// One connection that writes (and trims) log lines, with a page cache big enough for the
    /// pages those writes touch. Through the shared pool each batch took whichever connection
    /// was free, with a cold 2 MiB cache, and read its pages back from disk every time.
    log_writer: SqlitePool,
}

impl Dialect for SqliteStore {
    type Db = sqlx::Sqlite;
    const CONTAINS: &'static str = "instr";
    const NOW_MS: &'static str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";
    const SHARED: bool = false;
    const JSON_ROWS: (&'static str, &'static str) = ("json_group_array", "json_array");

    fn log_pool(&self) -> &SqlitePool {
        &self.log_writer
    }

    /// Takes the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction that reads
    /// first fails with SQLITE_BUSY_SNAPSHOT, past any busy timeout, when another writer commits
    /// in between.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }

    async fn log_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.log_writer.begin_with("BEGIN IMMEDIATE").await
    }
}

impl SqliteStore {
    #[tracing::instrument]
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        rebuild_apps(opts.clone()).await?;
        let log_writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.pragma("cache_size", "-32768"))
            .await?;
        Ok(Self { pool, log_writer })
    }

    /// Closes both pools (their connections and threads); later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
        self.log_writer.close().await;
    }
}

/// Drops the platform-wide UNIQUE of `apps.name` (issue 18: names are unique per space, which
/// `apps_space_name` enforces) by rebuilding the table, once: SQLite cannot drop a column
/// constraint otherwise. It runs on a connection of its own with foreign keys off, which a
/// migration cannot do (sqlx wraps each in a transaction, where the pragma is ignored); with
/// them on, dropping the old table would delete every revision, instance and route with it.
async fn rebuild_apps(opts: SqliteConnectOptions) -> StoreResult<()> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect_with(&opts.foreign_keys(false)).await?;
    let old: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'apps' AND name LIKE 'sqlite_autoindex_apps_%'
         AND EXISTS (SELECT 1 FROM pragma_index_info(sqlite_master.name) WHERE name = 'name')",
    )
    .fetch_optional(&mut conn)
    .await?;
    if old.is_none() {
        conn.close().await?;
        return Ok(());
    }
    tracing::info!("rebuilding the apps table: app names become unique per space (issue 18)");
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    for sql in [
        "CREATE TABLE apps_new (
            id                TEXT PRIMARY KEY,
            name              TEXT NOT NULL,
            state             TEXT NOT NULL,
            desired_instances INTEGER NOT NULL,
            memory_mb         INTEGER NOT NULL,
            disk_mb           INTEGER NOT NULL,
            current_revision  INTEGER,
            created_at        TEXT NOT NULL,
            updated_at        TEXT NOT NULL,
            max_in_flight     INTEGER NOT NULL DEFAULT 1,
            health            TEXT,
            placement_labels  TEXT NOT NULL DEFAULT '{}',
            push_settings     TEXT NOT NULL DEFAULT '{}',
            space_id          TEXT NOT NULL REFERENCES spaces(id),
            log_rate_limit    INTEGER NOT NULL DEFAULT -1,
            host              TEXT
        )",
        "INSERT INTO apps_new (id, name, state, desired_instances, memory_mb, disk_mb,
            current_revision, created_at, updated_at, max_in_flight, health, placement_labels,
            push_settings, space_id, log_rate_limit, host)
         SELECT id, name, state, desired_instances, memory_mb, disk_mb, current_revision,
            created_at, updated_at, max_in_flight, health, placement_labels, push_settings,
            space_id, log_rate_limit, host FROM apps",
        "DROP TABLE apps",
        "ALTER TABLE apps_new RENAME TO apps",
        "CREATE UNIQUE INDEX apps_host ON apps (host) WHERE host IS NOT NULL",
        "CREATE UNIQUE INDEX apps_space_name ON apps (space_id, name)",
    ] {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    let broken: Vec<SqliteRow> = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *tx)
        .await?;
    if !broken.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "{} rows lost their app while rebuilding the apps table",
            broken.len()
        )));
    }
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

sql_store!(SqliteStore, sqlx::Sqlite, SqliteRow);
