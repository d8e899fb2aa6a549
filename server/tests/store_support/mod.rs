//! One store test-suite, two backends: each test is an `async fn(&dyn Store)`, and
//! [`store_suite!`] runs it once on a SQLite file and once on a PostgreSQL database of its own.
//! PostgreSQL comes from `PAAS_TEST_DATABASE_URL` (`export PAAS_TEST_DATABASE_URL=$(scripts/postgres)`);
//! without it the PostgreSQL tests fail, never skip.

#![allow(dead_code)]

use paas_server::store::{PgStore, SqliteStore, Store};
use std::sync::Arc;

/// The URL of the server to make test databases in, or a failure that says how to get one.
pub fn admin_url() -> String {
    std::env::var("PAAS_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "PAAS_TEST_DATABASE_URL is not set: run `export PAAS_TEST_DATABASE_URL=$(scripts/postgres)` \
             to start the test PostgreSQL (the PostgreSQL half of the store suite never skips)"
        )
    })
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

/// A PostgreSQL database of one test's own, dropped (with its connections) when this goes,
/// even when the test panics.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
    admin: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let admin = admin_url();
        let name = format!("paas_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("connecting to {admin} (is scripts/postgres up?): {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        Self {
            url: with_database(&admin, &name),
            name,
            admin,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let name = self.name.clone();
        // A runtime of its own: Drop may run inside the test's runtime, which cannot block.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("dropping test database {}: {dropped:?}", self.name);
        }
    }
}

/// A store on one backend for one test, and what to clean up after it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    sqlite: Option<(tempfile::TempDir, SqliteStore)>,
    pg: Option<(PgDatabase, PgStore)>,
}

impl TestStore {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("paas.db"))
            .await
            .unwrap();
        Self {
            store: Arc::new(s.clone()),
            sqlite: Some((dir, s)),
            pg: None,
        }
    }

    pub async fn postgres() -> Self {
        let db = PgDatabase::create().await;
        let s = PgStore::open(&db.url).await.unwrap();
        Self {
            store: Arc::new(s.clone()),
            sqlite: None,
            pg: Some((db, s)),
        }
    }

    /// Closes the pools, so the database can go.
    pub async fn finish(self) {
        if let Some((_dir, s)) = &self.sqlite {
            s.close().await;
        }
        if let Some((_db, s)) = &self.pg {
            s.close().await;
        }
    }
}

/// Runs each `async fn NAME(store: &dyn Store)` of the calling file on both backends, as tests
/// `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = $crate::store_support::TestStore::sqlite().await;
                    super::$name(t.store.as_ref()).await;
                    t.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = $crate::store_support::TestStore::postgres().await;
                    super::$name(t.store.as_ref()).await;
                    t.finish().await;
                }
            )*
        }
    };
}
