//! The store's part for private domains and their certificates (issue 22): a role trait of its
//! own, a supertrait of [`super::Store`], expanded for both backends like `quotas`. Which space
//! owns a host is decided here inside the write transaction (after the writer lock), so two
//! spaces cannot both claim a domain or cross each other's hosts.

use async_trait::async_trait;
use sqlx::Row;

use super::sql::Dialect;
use super::{Event, PgStore, SqliteStore, StoreError, StoreResult};

/// A private domain (`migrations/sqlite/0028_domains.sql`, ACME: `0034_acme.sql`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainRecord {
    pub name: String,
    pub space_id: String,
    /// `ORG/SPACE`, for display.
    pub space: String,
    /// The chain set through the API (PEM), if any.
    pub certificate: Option<String>,
    /// The key, sealed (`crate::secrets`, the domain as associated data).
    pub private_key: Option<String>,
    /// Which of `DOMAIN` and `*.DOMAIN` the certificate is valid for (manual), or the hosts it
    /// was issued for (ACME).
    pub cert_names: Vec<String>,
    /// `manual` or `acme` (`None` for a certificate set before ACME existed: manual).
    pub cert_source: Option<String>,
    /// The hosts mapped under this domain get certificates by ACME.
    pub acme: bool,
    /// The last ACME failure, until one succeeds.
    pub acme_error: Option<String>,
    /// Failures in a row (the backoff's exponent).
    pub acme_failures: i64,
    /// No ACME attempt before this time (backoff after a failure).
    pub acme_retry_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a stored certificate came from.
pub const CERT_MANUAL: &str = "manual";
pub const CERT_ACME: &str = "acme";

/// A certificate checked and ready to store.
#[derive(Debug, Clone)]
pub struct NewCertificate {
    pub chain_pem: String,
    pub sealed_key: String,
    pub names: Vec<String>,
    /// [`CERT_MANUAL`] (which also turns ACME off for the domain: the user's certificate wins)
    /// or [`CERT_ACME`] (which clears the ACME failure state).
    pub source: &'static str,
}

#[async_trait]
pub trait DomainStore: Send + Sync + 'static {
    /// Every private domain, by name.
    async fn list_domains(&self) -> StoreResult<Vec<DomainRecord>>;
    /// Creates a domain owned by `space_id`; `Conflict` when it exists, when another space owns
    /// a domain above or below it, or when another space's apps have routes under it.
    async fn create_domain(&self, name: &str, space_id: &str, event: &Event) -> StoreResult<()>;
    /// Deletes a domain; `NotFound` when there is none, `Conflict` while routes use it.
    async fn delete_domain(&self, name: &str, event: &Event) -> StoreResult<()>;
    /// Sets (replaces) the domain's certificate; `NotFound` when there is no such domain.
    async fn set_domain_certificate(
        &self,
        name: &str,
        cert: &NewCertificate,
        event: &Event,
    ) -> StoreResult<()>;
    /// Turns ACME on or off for a domain (either way the failure state is cleared, so turning
    /// it on again tries at once); `NotFound` when there is no such domain.
    async fn set_domain_acme(&self, name: &str, enabled: bool, event: &Event) -> StoreResult<()>;
    /// Records a failed ACME attempt: the error, the failures in a row and the next attempt.
    async fn record_acme_failure(
        &self,
        name: &str,
        error: &str,
        failures: i64,
        retry_at: chrono::DateTime<chrono::Utc>,
        event: &Event,
    ) -> StoreResult<()>;
    /// Publishes a pending HTTP-01 challenge (replacing one with the same token).
    async fn put_acme_challenge(
        &self,
        domain: &str,
        challenge: &paas_common::route::AcmeChallenge,
    ) -> StoreResult<()>;
    /// Drops a domain's pending challenges (its order ended, either way).
    async fn delete_acme_challenges(&self, domain: &str) -> StoreResult<()>;
    /// Every pending challenge, for the route table.
    async fn list_acme_challenges(&self) -> StoreResult<Vec<paas_common::route::AcmeChallenge>>;
    /// The stored ACME account of a directory (sealed credentials), if any.
    async fn acme_account(&self, directory: &str) -> StoreResult<Option<String>>;
    /// Stores the account of a directory; the first one stored wins (answered back), so two
    /// leaders in turn end up using one account.
    async fn put_acme_account(&self, directory: &str, sealed: &str) -> StoreResult<String>;
    /// Sets a mapped route's HTTPS redirect and HSTS flags; `NotFound` when the app has no such
    /// route.
    async fn set_route_options(
        &self,
        app_id: &str,
        host: &str,
        path: &str,
        https_redirect: bool,
        hsts: bool,
    ) -> StoreResult<()>;
    /// Drops an app's default route (`no-route: true` on a later push).
    async fn clear_app_host(&self, app_id: &str, event: &Event) -> StoreResult<()>;
}

macro_rules! domain_store {
    ($m:ident, $store:ty, $row:ty, $backend:ident) => {
        mod $m {
            use super::*;

            fn record(r: &$row) -> StoreResult<DomainRecord> {
                let names: Option<String> = r.try_get("cert_names")?;
                Ok(DomainRecord {
                    name: r.try_get("name")?,
                    space_id: r.try_get("space_id")?,
                    space: format!(
                        "{}/{}",
                        r.try_get::<String, _>("org_name")?,
                        r.try_get::<String, _>("space_name")?
                    ),
                    certificate: r.try_get("certificate")?,
                    private_key: r.try_get("private_key")?,
                    cert_source: r.try_get("cert_source")?,
                    acme: r.try_get("acme")?,
                    acme_error: r.try_get("acme_error")?,
                    acme_failures: r.try_get("acme_failures")?,
                    acme_retry_at: r.try_get("acme_retry_at")?,
                    cert_names: names
                        .map(|n| serde_json::from_str(&n))
                        .transpose()
                        .map_err(|e| StoreError::Corrupt(format!("domain cert_names: {e}")))?
                        .unwrap_or_default(),
                })
            }

            #[async_trait]
            impl DomainStore for $store {
                async fn list_domains(&self) -> StoreResult<Vec<DomainRecord>> {
                    let rows = sqlx::query(
                        "SELECT d.name, d.space_id, o.name AS org_name, s.name AS space_name,
                                d.certificate, d.private_key, d.cert_names, d.cert_source,
                                d.acme, d.acme_error, d.acme_failures, d.acme_retry_at
                         FROM domains d JOIN spaces s ON s.id = d.space_id JOIN orgs o ON o.id = s.org_id
                         ORDER BY d.name",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter().map(record).collect()
                }

                async fn create_domain(
                    &self,
                    name: &str,
                    space_id: &str,
                    event: &Event,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    // Another space's domain above or below this one would let one space decide
                    // hosts the other serves.
                    let nested: Vec<(String, String)> = sqlx::query_as(
                        "SELECT name, space_id FROM domains
                         WHERE (name = $1 OR $1 LIKE ('%.' || name) OR name LIKE ('%.' || $1))",
                    )
                    .bind(name)
                    .fetch_all(&mut *tx)
                    .await?;
                    for (d, owner) in nested {
                        if d == name {
                            return Err(StoreError::Conflict(format!("domain {name} already exists")));
                        }
                        if owner != space_id {
                            return Err(StoreError::Conflict(format!(
                                "domain {name} overlaps domain {d}, owned by another space"
                            )));
                        }
                    }
                    let foreign: Option<String> = sqlx::query_scalar(
                        "SELECT r.host FROM routes r JOIN apps a ON a.id = r.app_id
                         WHERE (r.host = $1 OR r.host LIKE ('%.' || $1)) AND a.space_id <> $2 LIMIT 1",
                    )
                    .bind(name)
                    .bind(space_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(h) = foreign {
                        return Err(StoreError::Conflict(format!(
                            "another space serves {h}, under domain {name}"
                        )));
                    }
                    sqlx::query("INSERT INTO domains (name, space_id, created_at) VALUES ($1, $2, $3)")
                        .bind(name)
                        .bind(space_id)
                        .bind(chrono::Utc::now())
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| match e {
                            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                                StoreError::NotFound(format!("space {space_id}"))
                            }
                            e => e.into(),
                        })?;
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn delete_domain(&self, name: &str, event: &Event) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    let used: Option<String> = sqlx::query_scalar(
                        "SELECT host || path FROM routes WHERE host = $1 OR host LIKE ('%.' || $1) LIMIT 1",
                    )
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(r) = used {
                        return Err(StoreError::Conflict(format!(
                            "domain {name} is in use by route {r}: unmap its routes first"
                        )));
                    }
                    let done = sqlx::query("DELETE FROM domains WHERE name = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!("domain {name} not found")));
                    }
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn set_domain_certificate(
                    &self,
                    name: &str,
                    cert: &NewCertificate,
                    event: &Event,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    let names = serde_json::to_string(&cert.names)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let manual = cert.source != CERT_ACME;
                    let done = sqlx::query(
                        "UPDATE domains SET certificate = $2, private_key = $3, cert_names = $4,
                                cert_source = $5, acme = (acme AND NOT $6), acme_error = NULL,
                                acme_failures = 0, acme_retry_at = NULL
                         WHERE name = $1",
                    )
                    .bind(name)
                    .bind(&cert.chain_pem)
                    .bind(&cert.sealed_key)
                    .bind(names)
                    .bind(cert.source)
                    .bind(manual)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!("domain {name} not found")));
                    }
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn set_domain_acme(
                    &self,
                    name: &str,
                    enabled: bool,
                    event: &Event,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    let done = sqlx::query(
                        "UPDATE domains SET acme = $2, acme_error = NULL, acme_failures = 0,
                                acme_retry_at = NULL
                         WHERE name = $1",
                    )
                    .bind(name)
                    .bind(enabled)
                    .execute(&mut *tx)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!("domain {name} not found")));
                    }
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn record_acme_failure(
                    &self,
                    name: &str,
                    error: &str,
                    failures: i64,
                    retry_at: chrono::DateTime<chrono::Utc>,
                    event: &Event,
                ) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "UPDATE domains SET acme_error = $2, acme_failures = $3, acme_retry_at = $4
                         WHERE name = $1",
                    )
                    .bind(name)
                    .bind(error)
                    .bind(failures)
                    .bind(retry_at)
                    .execute(&mut *tx)
                    .await?;
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }

                async fn put_acme_challenge(
                    &self,
                    domain: &str,
                    c: &paas_common::route::AcmeChallenge,
                ) -> StoreResult<()> {
                    sqlx::query(
                        "INSERT INTO acme_challenges (token, domain, host, key_authorization, created_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (token) DO UPDATE SET domain = $2, host = $3,
                             key_authorization = $4, created_at = $5",
                    )
                    .bind(&c.token)
                    .bind(domain)
                    .bind(&c.host)
                    .bind(&c.key_authorization)
                    .bind(chrono::Utc::now())
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                }

                async fn delete_acme_challenges(&self, domain: &str) -> StoreResult<()> {
                    sqlx::query("DELETE FROM acme_challenges WHERE domain = $1")
                        .bind(domain)
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }

                async fn list_acme_challenges(
                    &self,
                ) -> StoreResult<Vec<paas_common::route::AcmeChallenge>> {
                    let rows: Vec<(String, String, String)> = sqlx::query_as(
                        "SELECT host, token, key_authorization FROM acme_challenges ORDER BY token",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(host, token, key_authorization)| paas_common::route::AcmeChallenge {
                            host,
                            token,
                            key_authorization,
                        })
                        .collect())
                }

                async fn acme_account(&self, directory: &str) -> StoreResult<Option<String>> {
                    Ok(sqlx::query_scalar(
                        "SELECT credentials FROM acme_accounts WHERE directory = $1",
                    )
                    .bind(directory)
                    .fetch_optional(&self.pool)
                    .await?)
                }

                async fn put_acme_account(&self, directory: &str, sealed: &str) -> StoreResult<String> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query(
                        "INSERT INTO acme_accounts (directory, credentials, created_at)
                         VALUES ($1, $2, $3) ON CONFLICT (directory) DO NOTHING",
                    )
                    .bind(directory)
                    .bind(sealed)
                    .bind(chrono::Utc::now())
                    .execute(&mut *tx)
                    .await?;
                    let kept: String = sqlx::query_scalar(
                        "SELECT credentials FROM acme_accounts WHERE directory = $1",
                    )
                    .bind(directory)
                    .fetch_one(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(kept)
                }

                async fn set_route_options(
                    &self,
                    app_id: &str,
                    host: &str,
                    path: &str,
                    https_redirect: bool,
                    hsts: bool,
                ) -> StoreResult<()> {
                    let done = sqlx::query(
                        "UPDATE routes SET https_redirect = $4, hsts = $5
                         WHERE host = $1 AND path = $2 AND app_id = $3",
                    )
                    .bind(host)
                    .bind(path)
                    .bind(app_id)
                    .bind(https_redirect)
                    .bind(hsts)
                    .execute(&self.pool)
                    .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::NotFound(format!(
                            "route {host}{path} is not mapped to this app"
                        )));
                    }
                    Ok(())
                }

                async fn clear_app_host(&self, app_id: &str, event: &Event) -> StoreResult<()> {
                    let mut tx = self.write_tx().await?;
                    sqlx::query("UPDATE apps SET host = NULL WHERE id = $1")
                        .bind(app_id)
                        .execute(&mut *tx)
                        .await?;
                    crate::store::$backend::insert_event(&mut *tx, event).await?;
                    tx.commit().await?;
                    Ok(())
                }
            }
        }
    };
}

domain_store!(on_sqlite, SqliteStore, sqlx::sqlite::SqliteRow, sqlite);
domain_store!(on_postgres, PgStore, sqlx::postgres::PgRow, postgres);
