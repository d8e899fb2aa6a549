//! The store's part for instance identity (issue 25): the platform CA, created once and shared
//! by every controller on the database. A role trait of its own, a supertrait of
//! [`super::Store`]; the SQL reads the same on both backends.

use async_trait::async_trait;
use sqlx::Row;

use super::{PgStore, SqliteStore, StoreResult};

/// A CA as stored: its certificate (PEM) and its private key sealed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaRecord {
    pub name: String,
    pub certificate: String,
    pub sealed_key: String,
}

#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    async fn platform_ca(&self, name: &str) -> StoreResult<Option<CaRecord>>;
    /// Stores `ca` unless a CA of that name exists; answers the one stored either way, so two
    /// controllers starting together end up with the same CA.
    async fn add_platform_ca(&self, ca: &CaRecord) -> StoreResult<CaRecord>;
}

macro_rules! identity_store {
    ($m:ident, $store:ty) => {
        mod $m {
            use super::*;

            #[async_trait]
            impl IdentityStore for $store {
                async fn platform_ca(&self, name: &str) -> StoreResult<Option<CaRecord>> {
                    let row = sqlx::query(
                        "SELECT name, certificate, private_key FROM platform_cas WHERE name = $1",
                    )
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                    row.map(|r| {
                        Ok(CaRecord {
                            name: r.try_get("name")?,
                            certificate: r.try_get("certificate")?,
                            sealed_key: r.try_get("private_key")?,
                        })
                    })
                    .transpose()
                }

                async fn add_platform_ca(&self, ca: &CaRecord) -> StoreResult<CaRecord> {
                    sqlx::query(
                        "INSERT INTO platform_cas (name, certificate, private_key, created_at)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                    )
                    .bind(&ca.name)
                    .bind(&ca.certificate)
                    .bind(&ca.sealed_key)
                    .bind(chrono::Utc::now())
                    .execute(&self.pool)
                    .await?;
                    Ok(self
                        .platform_ca(&ca.name)
                        .await?
                        .unwrap_or_else(|| ca.clone()))
                }
            }
        }
    };
}

identity_store!(on_sqlite, SqliteStore);
identity_store!(on_postgres, PgStore);
