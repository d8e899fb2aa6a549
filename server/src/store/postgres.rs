//! The PostgreSQL backend (`PAAS_DATABASE_URL=postgres://...`): migrations from
//! `migrations/postgres` run at open (sqlx serialises concurrent runs with an advisory lock). The
//! SQL is shared with SQLite in [`super::sql`]; what differs is here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use paas_common::agent::{InstanceReport, NodeCapacity};
use paas_common::api::{AppState, InstanceState, InstanceUsage, LogLine};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

use super::sql::*;
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The advisory lock every write transaction takes first (any constant; "paas" in ASCII).
const WRITE_LOCK: i64 = 0x7061_6173;

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    /// This store's own id among the controllers (log announcements skip their own).
    pub(super) origin: String,
}

impl Dialect for PgStore {
    type Db = sqlx::Postgres;
    const CONTAINS: &'static str = "strpos";
    const NOW_MS: &'static str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";
    const SHARED: bool = true;
    const JSON_ROWS: (&'static str, &'static str) = ("json_agg", "json_build_array");

    fn log_pool(&self) -> &PgPool {
        &self.pool
    }

    /// The shared SQL relies on SQLite's single writer for its read-modify-writes (the next
    /// revision number, a free host, a free route): a transaction-scoped advisory lock gives the
    /// same guarantee, released at commit or rollback.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Log batches only insert rows of their own ids: no lock needed.
    async fn log_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }
}

impl PgStore {
    #[tracing::instrument(skip(url))]
    pub async fn open(url: &str) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            origin: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// Closes the pool; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

sql_store!(PgStore, sqlx::Postgres, PgRow);
